#!/usr/bin/env python3
"""GPU machine, in the background: unpack the carried parts as they arrive, verify, pip install.

    setsid python3 stream_install.py WH SITE NPARTS SUMS_STORED &

Part k is `WH/core.tar.xz.partNN` (NN = k-1); run_remote.sh writes `...partNN.ok` once the part's
checksum has passed, and only then is it read. The parts are one xz stream of one tar of the
stored wheels (tools/gpu_e2e/build_parts.py), so unpacking runs while later parts are still being
carried. At the end every wheel is checked against SUMS_STORED and installed with
`pip install --no-index --no-deps --target SITE` (a fresh SITE). Progress and the outcome
("installed ..." or "FAILED: ...") go to WH/install.status, one line each.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time

PART_WAIT_S = 1800


def _verified(wheels_dir: str, sums_path: str) -> list[str]:
    """The wheels listed in SHA256SUMS, each checked against its digest."""
    names = []
    with open(sums_path) as f:
        for line in f:
            digest, name = line.split()
            path = os.path.join(wheels_dir, name)
            h = hashlib.sha256()
            with open(path, "rb") as w:
                for block in iter(lambda: w.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != digest:
                raise RuntimeError(f"checksum mismatch: {name}")
            names.append(path)
    return names


def main() -> int:
    wh, site, nparts, sums_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    status_path = os.path.join(wh, "install.status")
    t0 = time.monotonic()

    def status(msg: str) -> None:
        with open(status_path, "a") as f:
            f.write(f"{time.monotonic() - t0:7.1f}s {msg}\n")

    class Parts(io.RawIOBase):
        def __init__(self) -> None:
            self.k = 0
            self.f: io.BufferedReader | None = None

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            while True:
                if self.f is None:
                    if self.k >= nparts:
                        return 0
                    name = os.path.join(wh, f"core.tar.xz.part{self.k:02d}")
                    deadline = time.monotonic() + PART_WAIT_S
                    while not os.path.exists(name + ".ok"):
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"part {self.k} never arrived")
                        time.sleep(0.5)
                    self.f = open(name, "rb")
                    status(f"unpacking part {self.k + 1}/{nparts}")
                n = self.f.readinto(b)
                if n:
                    return n
                self.f.close()
                self.f = None
                self.k += 1

    try:
        wheels_dir = os.path.join(wh, "wheels")
        os.makedirs(wheels_dir, exist_ok=True)
        with lzma.open(io.BufferedReader(Parts(), 1 << 20)) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
            tar.extractall(wheels_dir, filter="data")
        status("unpacked; verifying")
        names = _verified(wheels_dir, sums_path)
        status(f"{len(names)} wheels verified; installing into {site}")
        shutil.rmtree(site, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--target", site, *names], check=True)
        status(f"installed {len(names)} wheels")
        return 0
    except BaseException as exc:  # the status file is all the caller sees
        status(f"FAILED: {type(exc).__name__}: {str(exc)[:300]}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
