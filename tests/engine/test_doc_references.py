"""docs/memory-model.md names vLLM functions as `file::name`: each exists in the installed vLLM 0.33.0.

The memory model is written against the vLLM 0.33.0 wheel. This reads that wheel's source (text
only, nothing is imported) from the venv tools/prepare_engines.sh builds, and checks that every
`path.py::Name` or `path.py::Class.method` of the document still names a definition there, so
a reference cannot silently go stale when the pinned engine changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from launcher import engine

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "memory-model.md"
VERSION = "0.33.0"
# `file.py::Name`, `file.py::Class.method`; the following ", `name`" items of a table cell name
# more functions of the same file.
REFERENCE = re.compile(r"`(?P<file>[\w/]+\.py)::(?P<name>[\w.]+)`(?P<more>(?:, `\w+`)*)")


def vllm_source() -> Path:
    meta = engine.load_engine(VERSION).meta
    cache = Path(os.environ.get("LAUNCHER_ENGINE_CACHE") or "~/.cache/launcher-engines").expanduser()
    venv = cache / f"{meta['distribution']}-{meta['vllm_version']}"
    if not (venv / ".ready").exists():
        msg = f"vLLM {VERSION} venv not ready: {venv}/.ready missing (run tools/prepare_engines.sh)"
        if os.environ.get("LAUNCHER_REQUIRE_ENGINES", "") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    found = sorted(venv.glob("lib/python3*/site-packages/vllm"))
    assert found, f"no vllm package in {venv}"
    return found[0]


def references() -> list[tuple[str, str]]:
    """(file, dotted name) of every vLLM reference in the memory model (launcher's own files excluded)."""
    out = []
    for m in REFERENCE.finditer(DOC.read_text(encoding="utf-8")):
        path = m.group("file")
        if (REPO / "launcher" / path).exists() or path.startswith(("launcher/", "tests/", "tools/")):
            continue  # launcher's own modules (fit.py::estimate, ...)
        out.append((path, m.group("name")))
        cls = m.group("name").rpartition(".")[0]
        for extra in re.findall(r"`(\w+)`", m.group("more")):
            out.append((path, f"{cls}.{extra}" if cls else extra))
    return list(dict.fromkeys(out))


def test_the_document_has_vllm_references() -> None:
    refs = references()
    assert len(refs) > 30
    assert ("v1/worker/gpu_worker.py", "Worker.determine_available_memory") in refs


def _defined(source: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*[:=]", source, re.M) is not None


@pytest.mark.parametrize("path, name", references(), ids=[f"{p}::{n}" for p, n in references()])
def test_reference_exists_in_vllm(path: str, name: str) -> None:
    source_file = vllm_source() / path
    assert source_file.exists(), f"vllm/{path} is not in vLLM {VERSION}"
    source = source_file.read_text(encoding="utf-8")
    parts = name.split(".")
    if len(parts) == 2:  # Class.member: the member must be defined after the class line
        cls, member = parts
        start = re.search(rf"^class\s+{re.escape(cls)}\b", source, re.M)
        assert start, f"class {cls} not in vllm/{path}"
        assert _defined(source[start.start():], member), f"{cls}.{member} not in vllm/{path}"
    else:
        assert _defined(source, parts[-1]), f"{name} not in vllm/{path}"
