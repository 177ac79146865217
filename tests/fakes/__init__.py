"""What the tests stand in for, because it cannot run here (no GPU, no Docker, no real vLLM
in the unit stage), each fed with facts captured from the real thing:

- `vllm_server.FakeVllm`: the one fake vLLM OpenAI server (recorded answers, /metrics, /v1/models,
  readiness, API key); also a child process for the supervisor tests (`VLLM_SERVER`);
- `bin/vllm`: a recording `vllm` program for PATH (`FAKE_BIN`, `read_record`);
- `nvml.fake_nvml`: a pynvml module object; `pythonpath/pynvml.py` the same as an importable
  `pynvml` for subprocesses (`nvml_env`);
- `docker`: what `docker run` does with this repository's image, read from the Dockerfile.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.fakes.vllm_server import MODEL, FakeVllm

FAKES = Path(__file__).resolve().parent
FAKE_BIN = FAKES / "bin"
VLLM_SERVER = FAKES / "vllm_server.py"
PYNVML_DIR = FAKES / "pythonpath"

__all__ = ["FAKE_BIN", "FAKES", "MODEL", "PYNVML_DIR", "VLLM_SERVER", "FakeVllm", "child_env", "launcher_bin", "nvml_env", "read_record"]


def read_record(record: Path) -> dict[str, Any]:
    """What bin/vllm wrote: argv, env, pid, and the signal that stopped it (or None)."""
    return json.loads(record.read_text(encoding="utf-8"))


def nvml_env(inventory: Path) -> dict[str, str]:
    """Environment under which a subprocess's `import pynvml` reads the GPUs of an inventory file."""
    return {"PYTHONPATH": str(PYNVML_DIR), "LAUNCHER_TEST_NVML_INVENTORY": str(inventory)}


def launcher_bin() -> Path:
    """The directory holding this venv's `launcher` console script (what the image has on PATH)."""
    return Path(sys.executable).parent


def child_env(extra: dict[str, str] | None = None, path_first: list[Path] | None = None) -> dict[str, str]:
    """A minimal environment for running launcher as a separate process: no LAUNCHER_* leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER") and k not in ("HF_TOKEN", "VLLM_API_KEY")}
    dirs = [str(p) for p in (path_first or [])] + [str(launcher_bin()), env.get("PATH", "/usr/bin:/bin")]
    env["PATH"] = os.pathsep.join(dirs)
    env.update(extra or {})
    return env
