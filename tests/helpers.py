"""Paths and small helpers the test modules share (import as `tests.helpers`)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
