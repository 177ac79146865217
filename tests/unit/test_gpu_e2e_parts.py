"""tools/gpu_e2e/build_parts.py: re-cutting the parts keeps the byte stream and checks each part first."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.helpers import load_tool

PARTS = load_tool("gpu_e2e/build_parts.py")


def _write_parts(out: Path, data: bytes, size: int) -> None:
    (out / "kit").mkdir(parents=True)
    for k, start in enumerate(range(0, len(data), size), 1):
        d = out / f"p{k}"
        d.mkdir()
        name = f"core.tar.xz.part{k - 1:02d}"
        chunk = data[start:start + size]
        (d / name).write_bytes(chunk)
        (d / f"{name}.sha256").write_text(f"{hashlib.sha256(chunk).hexdigest()}  {name}\n")


def _joined(out: Path) -> bytes:
    dirs = sorted((p for p in out.iterdir() if p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    return b"".join((d / f"core.tar.xz.part{int(d.name[1:]) - 1:02d}").read_bytes() for d in dirs)


def test_reslice_keeps_the_stream_and_counts_the_parts(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes in parts of 3,000: 4 parts
    _write_parts(tmp_path, data, 3000)
    assert PARTS.reslice(str(tmp_path), 1024) == 0
    assert _joined(tmp_path) == data
    assert (tmp_path / "kit" / "PARTS").read_text() == "10\n"
    assert not (tmp_path / "p11").exists() and not (tmp_path / "core.tar.xz").exists()
    for k in range(1, 11):  # every new part carries its own checksum
        name = f"core.tar.xz.part{k - 1:02d}"
        digest = (tmp_path / f"p{k}" / f"{name}.sha256").read_text().split()[0]
        assert digest == hashlib.sha256((tmp_path / f"p{k}" / name).read_bytes()).hexdigest()


def test_reslice_refuses_a_damaged_part(tmp_path: Path) -> None:
    _write_parts(tmp_path, b"x" * 5000, 2000)
    (tmp_path / "p2" / "core.tar.xz.part01").write_bytes(b"y" * 2000)
    with pytest.raises(SystemExit, match="p2/core.tar.xz.part01 does not match"):
        PARTS.reslice(str(tmp_path), 1000)
    assert (tmp_path / "p3").is_dir() and not (tmp_path / "core.tar.xz").exists()  # nothing re-cut
