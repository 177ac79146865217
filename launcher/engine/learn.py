"""`launcher engines learn`: build the schema of an installed vLLM with that vLLM's own Python.

introspect.py (the same code tools/gen_engine_schema.py runs for the shipped schemas) runs as a
script in the vLLM's environment, the only place launcher imports vLLM (about 20 s). The result
goes to the user's cache, where `load_engine` finds it from then on; a shipped schema of the same
version still wins.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.engine.schemas import SAFE_VERSION, forget_learned, learned_dir, schema_file_name, schema_from_json
from launcher.errors import EngineStartError

INTROSPECT = Path(__file__).resolve().with_name("introspect.py")
TIMEOUT_S = 900  # importing vLLM takes 10-60 s; a busy machine or a cold disk more
# Run the script by path without putting its folder first on sys.path (its module names could shadow).
_RUN = "import runpy, sys; p = sys.argv[1]; sys.argv = [p, *sys.argv[2:]]; runpy.run_path(p, run_name='__main__')"
_GENERATOR = "VLLM_TARGET_DEVICE=cpu $VENV/bin/python tools/gen_engine_schema.py --out launcher/engines/"


@dataclass(frozen=True)
class Learned:
    version: str  # the schema's version (the release, without a local label)
    distribution: str
    path: Path
    options: int
    seconds: float


def learn_schema(python: str, version_hint: str, out_dir: Path | None = None, timeout: float = TIMEOUT_S) -> Learned:
    """Run the introspection with `python` (a vLLM environment's) and store vllm-<version>.json in out_dir.

    `version_hint` (from the package metadata) names the output file as the generator would; the
    version the introspection reports is what counts. Raises EngineStartError when vLLM cannot
    be imported or the introspection fails.
    """
    target = Path(out_dir) if out_dir is not None else learned_dir()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="launcher-learn-") as tmp:
        out = Path(tmp) / schema_file_name(_safe_release(version_hint, "the package metadata"))
        env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
        try:
            proc = subprocess.run([python, "-c", _RUN, str(INTROSPECT), "--out", str(out)], capture_output=True,
                                  text=True, env=env, cwd=tmp, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineStartError(f"learning from {python} failed: {exc}") from None
        if proc.returncode != 0 or not out.exists():
            last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "no output")
            raise EngineStartError(f"learning from {python} failed (exit {proc.returncode}): {last.strip()}")
        text = out.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        reported = data["meta"]["vllm_version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise EngineStartError(f"learning from {python}: the introspection wrote no readable schema") from None
    version = _safe_release(str(reported), f"vLLM at {python}")
    if out.name != schema_file_name(version):  # the metadata named another version than vLLM itself
        data["meta"]["generator"] = _GENERATOR + schema_file_name(version)
        text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    schema = schema_from_json(data, version)  # refuse what launcher could not load
    target.mkdir(parents=True, exist_ok=True)
    dest = target / schema_file_name(version)
    # A temporary file of this learn's own (two learns at once never share one), renamed into place.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=target)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    forget_learned()
    return Learned(version, str(data["meta"].get("distribution")), dest, len(schema.options), time.monotonic() - started)


def _release(version: str) -> str:
    return version.strip().removeprefix("v").split("+", 1)[0]


def _safe_release(version: str, who: str) -> str:
    """The release part of a version string an installed vLLM reports, if it is one (`0.34.0`, `0.34.0rc1`,
    `0.33.1.dev5`); anything else (`0.34.0/../../..`, a newline) would name a file elsewhere: refused."""
    release = _release(version)
    if not SAFE_VERSION.fullmatch(release):
        raise EngineStartError(f"{who} reports the version {version[:60]!r}, which is not a vLLM release number; nothing was written")
    return release
