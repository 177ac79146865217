"""Is the compile cache warm for this command? The marker `serve --wait` writes after a warm-up, and what it names.

"Warm for this profile" means, concretely, both of:
1. a marker `ROOT/launcher-warm/KEY.json`, KEY the first 16 hex digits of sha256 over the vLLM version
   and the rendered argv (NUL-separated): written by `serve --wait` once the warm-up succeeded, so a
   changed flag, model or vLLM version has no marker;
2. the torch.compile entries vLLM logged for that start (its `Using cache directory` / AOT paths under
   ROOT/torch_compile_cache, kept in the marker) are still there and not empty; a marker for a start
   that compiled nothing (`enforce_eager`) needs none.
Triton, FlashInfer and CUDA keep their own files under ROOT (launcher.output.compile_cache); they are
not itemised: the marker says the warm-up ran with them in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

MARKER_DIR = "launcher-warm"
FORMAT = "launcher-warm/1"
MAX_MARKER_BYTES = 1 << 20


def marker_key(vllm_version: str, argv: Sequence[str]) -> str:
    digest = hashlib.sha256("\0".join([vllm_version, *argv]).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def marker_path(root: str, vllm_version: str, argv: Sequence[str]) -> Path:
    return Path(root) / MARKER_DIR / f"{marker_key(vllm_version, argv)}.json"


@dataclass
class CacheState:
    """Where the compile cache is and whether it is warm for one command."""

    root: str
    warm: bool
    why: str  # one line
    marker: dict[str, Any] | None = None
    entries: list[str] = field(default_factory=list)  # the torch.compile entries found

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "warm": self.warm, "why": self.why, "marker": self.marker, "torch_compile_entries": self.entries}

    def line(self) -> str:
        return f"compile cache {self.root}: {'warm' if self.warm else 'cold'}: {self.why}"


def _not_empty(path: Path) -> bool:
    try:
        if path.is_file():
            return path.stat().st_size > 0
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


def cache_state(root: str | None, vllm_version: str, argv: Sequence[str]) -> CacheState:
    """The state of `root` for the command `argv` on vLLM `vllm_version` (see the module docstring)."""
    if root is None:
        return CacheState("(vLLM's default)", False, "no vllm.cache_dir in the profile")
    base = Path(root)
    if not base.is_dir():
        return CacheState(root, False, "the directory does not exist yet (the first start creates it and compiles)")
    path = marker_path(root, vllm_version, argv)
    try:
        text = path.read_bytes()[:MAX_MARKER_BYTES].decode("utf-8", "replace")
        marker = json.loads(text)
    except FileNotFoundError:
        return CacheState(root, False, "no warm-up recorded for this command on this vLLM (never warmed up with "
                          "`launcher serve --wait`, or the command or vLLM version changed)")
    except (OSError, ValueError) as exc:
        return CacheState(root, False, f"the marker {path} is unreadable ({type(exc).__name__})")
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        return CacheState(root, False, f"the marker {path} is not launcher's")
    dirs = [d for d in marker.get("torch_compile_dirs") or [] if isinstance(d, str)]
    present = [d for d in dirs if _not_empty(Path(d))]
    missing = [d for d in dirs if d not in present]
    when = marker.get("written") or "?"
    if missing:
        return CacheState(root, False, f"warmed up {when}, but {len(missing)} of {len(dirs)} torch.compile entries are gone "
                          f"(e.g. {missing[0]})", marker, present)
    what = f"{len(present)} torch.compile entries" if dirs else "no torch.compile entries (nothing compiled)"
    return CacheState(root, True, f"warmed up {when} on vLLM {marker.get('vllm_version')} for this command; {what}", marker, present)


def write_marker(root: str, vllm_version: str, argv: Sequence[str], report: dict[str, Any]) -> Path:
    """Record a successful warm-up for this command (atomically: a reader never sees half a file)."""
    path = marker_path(root, vllm_version, argv)
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = report.get("compile_cache") or {}
    doc = {
        "format": FORMAT,
        "vllm_version": vllm_version,
        "argv_sha256": hashlib.sha256("\0".join(argv).encode("utf-8", "surrogatepass")).hexdigest(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "ready_s": report.get("ready_s"),
        "warmup_s": (report.get("warmup") or {}).get("total_s"),
        "compile_cache": cache.get("verdict"),
        "torch_compile_dirs": [d for d in cache.get("dirs") or [] if isinstance(d, str) and d.startswith(str(Path(root)))],
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
