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


def load_tool(relative: str) -> Any:
    """A script of tools/ as a module (they are scripts, not a package), loaded once."""
    import importlib.util
    import sys

    path = REPO / "tools" / relative
    name = path.stem
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def full_shape_weights():  # type: ignore[no-untyped-def]
    """What `launcher fit` reads from tools/make_full_shape_model.py's index (no model directory needed)."""
    from launcher.fit.estimate import WeightSizes

    _, parts = load_tool("make_full_shape_model.py").index()
    return WeightSizes(main_bytes=parts["language"] + parts["vision"], vision_bytes=parts["vision"],
                       mtp_bytes=parts["mtp"], source="tools/make_full_shape_model.py index", from_local_index=True)


def seed_model_cache(hub: Path) -> None:  # noqa: D401
    """A container's mounted Hugging Face cache that holds the model (`launcher serve` checks it; offline it must be
    there): a stand-in snapshot in huggingface_hub's layout, the index naming its shards, the model card's sizes."""
    snap = hub / "models--havenoammo--Qwen3.6-27B-INT8-MTP" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (hub / "models--havenoammo--Qwen3.6-27B-INT8-MTP" / "refs").mkdir()
    (hub / "models--havenoammo--Qwen3.6-27B-INT8-MTP" / "refs" / "main").write_text("0" * 40)
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {"model.language_model.layers.0.mlp.down_proj.weight": shards[0],
                  "model.visual.blocks.0.attn.qkv.weight": shards[0], "mtp.layers.0.mlp.down_proj.weight": shards[1]}
    index = {"metadata": {"total_size": 33_850_000_000}, "weight_map": weight_map}
    (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    (snap / "config.json").write_text("{}")
    for shard in shards:
        (snap / shard).write_bytes(b"")


def invoke_cli(args: list[str]) -> tuple[int, str]:
    """The CLI in-process: (exit code as `launcher` would exit, stdout + stderr)."""
    from click.testing import CliRunner

    from launcher.cli import cli
    from launcher.errors import LauncherError

    result = CliRunner().invoke(cli, args)
    if isinstance(result.exception, LauncherError):
        return result.exception.exit_code, result.output + str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return 1, result.output + repr(result.exception)
    return result.exit_code, result.output


def as_it_ran(rendered: Any) -> Any:
    """A command rendered today, less what launcher added to every command after the committed GPU runs: the
    compile-cache root's environment (launcher/output/compile_cache.py, CACHE_ENV). Everything else must match."""
    import dataclasses

    from launcher.output.compile_cache import CACHE_ENV

    return dataclasses.replace(rendered, env={k: v for k, v in rendered.env.items() if k not in CACHE_ENV})


def without_cache_env(command: str) -> str:
    """A printed one-line command less the compile cache root's `NAME=value ` prefixes (CACHE_ENV)."""
    import re

    from launcher.output.compile_cache import CACHE_ENV

    return re.sub(r"(?:^|(?<= ))(?:%s)=\S+ " % "|".join(CACHE_ENV), "", command)
