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


def full_shape_weights():  # type: ignore[no-untyped-def]
    """What `launcher fit` reads from tools/make_full_shape_model.py's index (no model directory needed)."""
    import importlib.util
    import sys

    from launcher.fit import WeightSizes

    name = "make_full_shape_model"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "make_full_shape_model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    _, parts = module.index()
    return WeightSizes(main_bytes=parts["language"] + parts["vision"], vision_bytes=parts["vision"],
                       mtp_bytes=parts["mtp"], source="tools/make_full_shape_model.py index", from_local_index=True)
