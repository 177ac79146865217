"""Port of what vLLM's FlexibleArgumentParser.parse_args does to an argv before argparse sees it.

`--model X` moves to the positional slot, `--config FILE` is read (here: named, not read), `_` in
long flag names becomes `-`, `-O3` becomes `--optimization-level 3`, and dotted JSON keys
(`--x.a.b v`) are merged into one `--x '{"a": {"b": v}}'` appended at the end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from launcher.engine.findings import Result, Token
from launcher.engine.schemas import dash_key
from launcher.engine.values import human_int

_MODEL_RE = re.compile(r"^--model(=.+|$)")
MODEL_RE = _MODEL_RE  # `--model` / `--model=X` (extra args name the model only through model.name)
_CONFIG_RE = re.compile(r"^--config(=.+|$)")
_SERVED_RE = re.compile(r"^--served[-_]model[-_]name(=.+|$)")


def preprocess(argv: Sequence[str], res: Result) -> list[Token]:
    """The tokens argparse gets for `vllm serve ARGV` (without "serve"); findings go to `res`."""
    args = _move_model_flag(["serve", *argv], res)
    _served_name_needs_model(args, res)
    args = _config_file(args, res)
    toks = _dotted_keys(_tokens(args), res)
    return toks[1:]  # drop "serve"


def _move_model_flag(args: list[str], res: Result) -> list[str]:
    idx = next((i for i, a in enumerate(args) if _MODEL_RE.match(a)), None)
    if idx is None:
        return args
    res.warn("--model", "vllm serve moves --model into the positional model slot and warns "
             "that --model will be removed", "put the model first: vllm serve MODEL ...")
    if args[idx] != "--model":
        return ["serve", args[idx].removeprefix("--model="), *args[1:idx], *args[idx + 1:]]
    if idx + 1 >= len(args):
        res.error("--model", "expected one argument (vLLM crashes on a trailing --model)")
        return args[:idx]
    return ["serve", args[idx + 1], *args[1:idx], *args[idx + 2:]]


def _served_name_needs_model(args: list[str], res: Result) -> None:
    if (
        len(args) > 1
        and args[1].startswith("-")
        and not any(_CONFIG_RE.match(a) for a in args)
        and any(_SERVED_RE.match(a) for a in args)
    ):
        res.error("--served-model-name", "vLLM requires the model as the first positional "
                  "argument when --served-model-name is given", "put the model first")


def _config_file(args: list[str], res: Result) -> list[str]:
    if "--config" not in args:
        if any(a.startswith("--config=") for a in args):
            res.warn("--config", "vLLM silently ignores --config=FILE (it only reads a separate "
                     "'--config FILE')", "write --config FILE")
        return args
    res.config_file = True
    if args.count("--config") > 1:
        res.error("--config", "vLLM allows only one --config file")
    i = args.index("--config")
    if i == len(args) - 1:
        res.error("--config", "no config file given after --config")
        return args[:i]
    path = args[i + 1]
    if path.split(".")[-1] not in ("yaml", "yml"):
        res.error("--config", f"vLLM reads only .yaml/.yml config files, not {path!r}")
    else:
        res.warn("--config", f"the options inside {path} are not checked by launcher",
                 "put the options in the profile instead, where they are checked")
    return args[:i] + args[i + 2:]


def _tokens(args: list[str]) -> list[Token]:
    """`--help=x`, `--a_b=v` -> `--a-b=v`, `-O3` -> `--optimization-level 3`."""
    toks: list[Token] = []
    for i, arg in enumerate(args):
        if arg.startswith("--help="):
            toks.append(Token("--help", arg))
        elif arg.startswith("--"):
            key, eq, value = arg.partition("=")
            toks.append(Token(f"{dash_key(key)}={value}" if eq else dash_key(arg), arg))
        elif arg.startswith("-O") and arg != "-O":
            level = arg[3:] if arg[2] == "=" else arg[2:]
            toks += [Token("--optimization-level", arg), Token(level, arg)]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            toks.append(Token("--optimization-level", arg))
        else:
            toks.append(Token(arg, arg))
    return toks


def _dotted_value(value_str: str) -> Any:
    try:
        return json.loads(value_str)
    except json.JSONDecodeError:
        try:
            return human_int(value_str)
        except ValueError:
            return value_str


def _dotted_keys(toks: list[Token], res: Result) -> list[Token]:
    """Dotted JSON keys: --x.a.b v  ->  --x '{"a": {"b": v}}' appended at the end (last wins)."""
    delete: set[int] = set()
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, list[str]] = {}
    for i, tok in enumerate(toks):
        if i in delete:
            continue
        split = _split_dotted(toks, i, res, delete)
        if split is None:
            continue
        arg, value_str = split
        if arg.endswith("+"):
            arg = arg[:-1]
            value_str = json.dumps(list(value_str.split(",")))
        key, *keys = arg.split(".")
        nested: Any = _dotted_value(value_str)
        for k in reversed(keys):
            nested = {k: nested}
        for d in sorted(_merge(merged.setdefault(key, {}), nested)):
            res.warn(key, f"key {key}.{d} is given twice; the last value wins")
        origins.setdefault(key, []).append(tok.origin)
        delete.add(i)
    kept = [t for i, t in enumerate(toks) if i not in delete]
    for key, value in merged.items():
        src = tuple(origins[key])
        kept += [Token(key, src[0], src), Token(json.dumps(value), src[0], src)]
    return kept


def _split_dotted(toks: list[Token], i: int, res: Result, delete: set[int]) -> tuple[str, str] | None:
    """(dotted key, value string) when token i is a dotted key; its value token joins `delete`."""
    arg = toks[i].text
    if (arg.startswith("--") and "." not in arg) or not (arg.startswith("-") and "." in arg):
        return None
    if "=" in arg:
        key, value_str = arg.split("=", 1)
        return (key, value_str) if "." in key else None
    if i + 1 >= len(toks):
        res.error(toks[i].origin, "expected a value after a dotted JSON key (vLLM crashes with IndexError)")
        delete.add(i)
        return None
    delete.add(i + 1)
    return arg, toks[i + 1].text


def _merge(original: dict[str, Any], update: dict[str, Any]) -> set[str]:
    dups: set[str] = set()
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(original.get(k), dict):
            dups |= {f"{k}.{d}" for d in _merge(original[k], v)}
        elif isinstance(v, list) and isinstance(original.get(k), list):
            original[k] += v
        else:
            if k in original:
                dups.add(k)
            original[k] = v
    return dups
