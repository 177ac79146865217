#!/usr/bin/env python3
"""Prepare, here, what the 2 x H200 end-to-end run carries to the GPU machine (no internet there).

    python3 tools/gpu_e2e/build_parts.py [--tiny-generator FILE] [--out .gpu-e2e]

1. The wheel set of vLLM 0.25.1 for CPython 3.12 (the machine's torch 2.11.0 stays;
   tools/gpu_e2e/wheels.txt lists the rest, 102 wheels, ~501 MiB): downloaded into OUT/wheels with
   `pip download` where missing, then every file checked against tools/gpu_e2e/SHA256SUMS (a
   mismatch stops here). Both lists were taken from the 2026-11-28 recipe run that installed them.
2. Each wheel re-zipped with its entries stored, not deflated (same names and bytes, so pip's
   RECORD hashes stay valid), all of them in one tar, xz-compressed (~348 MiB), cut into parts
   OUT/p1 ... OUT/pN of at most PART_BYTES each, so that one part plus the checkout fits the
   device tool's 64 MiB per call. Each folder holds `core.tar.xz.partNN` and its `.sha256`.
3. OUT/kit: SHA256SUMS.stored of the stored wheels (what the remote install verifies), PARTS (the
   number of parts) and, when --tiny-generator names it, the recipe's tiny-model generator
   (make_tiny_qwen35_mtp.py, not committed here), which the h200x2-tiny run needs; the full-shape
   runs (tools/gpu_e2e/run_fullshape.sh) do not.

`--reslice` re-cuts existing parts at --part-bytes (no download, no xz) when the checkout has
grown past what one part leaves room for.

OUT must be ignored by git (.gpu-e2e/ is in .gitignore). Takes ~8 min on 2 cores (xz -T0).
tools/gpu_e2e/run_remote.sh is the other side.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

PART_BYTES = 54 * 2**20 - 64 * 1024  # leaves ~10 MiB for the checkout (4.5 MiB on 2026-11-29)
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                 "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_31_x86_64",
                 "manylinux_2_34_x86_64", "manylinux_2_35_x86_64", "manylinux_2_5_x86_64",
                 "manylinux1_x86_64", "any")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sums(path: str) -> list[tuple[str, str]]:
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                digest, name = line.split()
                out.append((digest, name.lstrip("*")))
    return out


def ensure_wheels(wheel_list: str, wheels: str, sums: list[tuple[str, str]]) -> None:
    os.makedirs(wheels, exist_ok=True)
    missing = [n for _, n in sums if not os.path.exists(os.path.join(wheels, n))]
    if missing:
        print(f"build_parts: downloading {len(missing)} wheels into {wheels}", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp",
               "--abi", "cp312", "--abi", "abi3", "--abi", "none"]
        for p in PIP_PLATFORMS:
            cmd += ["--platform", p]
        cmd += ["-r", wheel_list, "-d", wheels]
        subprocess.run(cmd, check=True)
    bad = []
    for digest, name in sums:
        path = os.path.join(wheels, name)
        if not os.path.exists(path) or sha256_file(path) != digest:
            bad.append(name)
    if bad:
        raise SystemExit(f"build_parts: {len(bad)} wheels missing or not matching SHA256SUMS: {', '.join(bad[:5])}")
    print(f"build_parts: {len(sums)} wheels match SHA256SUMS", file=sys.stderr)


def restore_stored(src: str, dst: str) -> None:
    """Same entries, same bytes, ZIP_STORED: xz then sees the raw files and compresses far better."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            ni = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            ni.external_attr = info.external_attr
            zo.writestr(ni, zi.read(info))


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", default=os.path.join(here, "wheels.txt"), help="pinned wheel list")
    ap.add_argument("--sums", default=os.path.join(here, "SHA256SUMS"), help="the wheels' sha256 sums")
    ap.add_argument("--tiny-generator", help="the recipe's make_tiny_qwen35_mtp.py (for the h200x2-tiny run)")
    ap.add_argument("--out", default=os.path.join(root, ".gpu-e2e"))
    ap.add_argument("--part-bytes", type=int, default=PART_BYTES)
    ap.add_argument("--reslice", action="store_true", help="re-cut the existing parts of OUT at --part-bytes")
    args = ap.parse_args()

    # A trailing slash: git matches the ".gpu-e2e/" pattern against a folder that does not exist yet.
    check = subprocess.run(["git", "-C", root, "check-ignore", "-q", args.out.rstrip("/") + "/"])
    if check.returncode != 0:
        raise SystemExit(f"build_parts: {args.out} is not ignored by git; refusing to write wheels there")
    if args.reslice:
        return reslice(args.out, args.part_bytes)
    sums = read_sums(args.sums)
    names = [n for _, n in sums]
    wheels = os.path.join(args.out, "wheels")
    ensure_wheels(args.wheels, wheels, sums)

    kit = os.path.join(args.out, "kit")
    os.makedirs(kit, exist_ok=True)
    if args.tiny_generator:
        shutil.copy(args.tiny_generator, kit)

    tmp = tempfile.mkdtemp(prefix="gpu_e2e_stored_", dir=args.out)
    try:
        with open(os.path.join(kit, "SHA256SUMS.stored"), "w") as f:
            for n in names:
                restore_stored(os.path.join(wheels, n), os.path.join(tmp, n))
                f.write(f"{sha256_file(os.path.join(tmp, n))}  {n}\n")
        xz = os.path.join(args.out, "core.tar.xz")
        subprocess.run(f"tar cf - {' '.join(names)} | xz -T0 -6 > {xz}", shell=True, check=True, cwd=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    k = cut(xz, args.out, args.part_bytes)
    os.remove(xz)
    with open(os.path.join(kit, "PARTS"), "w") as f:
        f.write(f"{k}\n")
    print(f"build_parts: {k} parts; kit in {kit}", file=sys.stderr)
    return 0


def part_dirs(out: str) -> list[str]:
    return sorted((e for e in os.listdir(out) if e.startswith("p") and e[1:].isdigit()), key=lambda e: int(e[1:]))


def cut(xz: str, out_dir: str, part_bytes: int) -> int:
    """Cut xz into out_dir/p1 ... pN (the old parts removed first); returns N."""
    for entry in part_dirs(out_dir):
        shutil.rmtree(os.path.join(out_dir, entry))
    k = 0
    with open(xz, "rb") as f:
        while True:
            data = f.read(part_bytes)
            if not data:
                break
            k += 1
            d = os.path.join(out_dir, f"p{k}")
            os.makedirs(d)
            name = f"core.tar.xz.part{k - 1:02d}"
            with open(os.path.join(d, name), "wb") as out:
                out.write(data)
            with open(os.path.join(d, name + ".sha256"), "w") as out:
                out.write(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
            print(f"build_parts: {d}: {len(data)} bytes", file=sys.stderr)
    return k


def reslice(out: str, part_bytes: int) -> int:
    """Join OUT's parts (each checked against its .sha256 first) and cut them again."""
    xz = os.path.join(out, "core.tar.xz")
    with open(xz, "wb") as joined:
        for entry in part_dirs(out):
            d = os.path.join(out, entry)
            (name,) = [n for n in os.listdir(d) if not n.endswith(".sha256")]
            with open(os.path.join(d, name + ".sha256")) as f:
                want = f.read().split()[0]
            if sha256_file(os.path.join(d, name)) != want:
                os.remove(xz)
                raise SystemExit(f"build_parts: {d}/{name} does not match its .sha256; rebuild the parts")
            with open(os.path.join(d, name), "rb") as f:
                shutil.copyfileobj(f, joined)
    k = cut(xz, out, part_bytes)
    os.remove(xz)
    with open(os.path.join(out, "kit", "PARTS"), "w") as f:
        f.write(f"{k}\n")
    print(f"build_parts: re-cut into {k} parts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
