"""Value types of `vllm serve` options: ports of the `type=` callables vLLM gives argparse, and choices."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from launcher.engine.schemas import EngineSchema, Option

_HUMAN_INT_RE = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_JSON_OBJECT_RE = re.compile(r"(?s)^\s*{.*}\s*$")


class BadValue(Exception):
    """A value argparse (or vLLM's type callable) would refuse; the message says why."""


def did_you_mean(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def human_int(value: str) -> int:
    """vllm.utils.argparse_utils.human_readable_int."""
    value = value.strip()
    m = _HUMAN_INT_RE.fullmatch(value)
    if m:
        number, suffix = m.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        try:
            return int(number) * _BINARY[suffix]
        except ValueError:
            raise ValueError(
                f"Decimals are not allowed with binary suffixes like {suffix}. "
                f"Did you mean to use {number}{suffix.lower()} instead?"
            ) from None
    return int(value)


def human_int_or_auto(value: str) -> int:
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return human_int(value)


def expand_json_numbers(val: str) -> str:
    """vllm.engine.arg_utils._expand_json_human_readable_numbers."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', val)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b",
                          lambda m: str(human_int(m.group())), parts[i])
    return "".join(parts)


def _json_or_str(raw: str) -> Any:
    return json.loads(raw) if _JSON_OBJECT_RE.match(raw) else raw


def _device_list(raw: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in (x.strip() for x in raw.split(","))]


def _port(raw: str) -> int:
    port = int(raw)
    if not 1024 <= port <= 65535:
        raise BadValue("Port must be between 1024 and 65535")
    return port


def _same(raw: str) -> str:
    return raw


# The schema's type names (tools/gen_engine_schema.py classify_type) -> the conversion vLLM does.
CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": _same,
    "int": int,
    "float": float,
    "json": json.loads,
    "json-or-str": _json_or_str,
    "human-int": human_int,
    "human-int-or-auto": human_int_or_auto,
    "reasoning-parser": lambda raw: "" if raw.lower() == "none" else raw,
    "lower-snake": lambda raw: raw.lower().replace("-", "_"),
    "device-list": _device_list,
    "port": _port,
}
_KIND_NAMES = {"human-int": "integer (e.g. 4096, 4k, 1M)", "human-int-or-auto": "integer, 'auto' or -1"}


def convert(schema: EngineSchema, opt: Option, raw: str) -> Any:
    """Convert one value string the way the option's argparse `type=` does; raise BadValue."""
    if opt.optional and raw in ("", "None"):
        return None
    t = opt.type
    if t.startswith("custom"):
        return raw  # a callable launcher could not name: any value passes (see the real-parser tests)
    try:
        if t == "dataclass-json":
            return convert_dataclass(schema, opt, raw)
        fn = CONVERTERS.get(t)
        return raw if fn is None else fn(raw)
    except json.JSONDecodeError as exc:
        raise BadValue(f"invalid JSON {raw!r}: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:
        detail = f" ({exc})" if "Decimals" in str(exc) else ""
        raise BadValue(f"invalid {_KIND_NAMES.get(t, t)} value: {raw!r}{detail}") from None


def convert_dataclass(schema: EngineSchema, opt: Option, raw: str) -> Any:
    data = json.loads(expand_json_numbers(raw))
    if not isinstance(data, dict):
        raise BadValue(f"{opt.dataclass} needs a JSON object, got {type(data).__name__}")
    info = schema.dataclasses.get(opt.dataclass or "", {})
    if info.get("extra") == "forbid":
        fields = info.get("fields", [])
        unknown = [k for k in data if k not in fields]
        if unknown:
            hint = did_you_mean(unknown[0], fields)
            raise BadValue(f"unknown key {unknown[0]!r} for {opt.dataclass}{hint}")
    return data


def values(schema: EngineSchema, opt: Option, raw: list[str]) -> Any:
    """argparse._get_values: convert, then check choices."""
    raw = list(raw)
    if "--" in raw:
        raw.remove("--")
    if opt.is_flag:
        return None
    if not raw and opt.nargs == "?":
        value = opt.const
        if isinstance(value, str):
            value = convert(schema, opt, value)
            check_choice(opt, value)
        return value
    if len(raw) == 1 and opt.nargs in (None, "?"):
        value = convert(schema, opt, raw[0])
        check_choice(opt, value)
        return value
    converted = [convert(schema, opt, r) for r in raw]
    for v in converted:
        check_choice(opt, v)
    if opt.action == "lora-modules":
        check_lora(converted)
    return converted


def check_choice(opt: Option, value: Any) -> None:
    if opt.choices is not None and value not in opt.choices:
        shown = [c for c in opt.choices if c is not None]
        hint = did_you_mean(str(value), [str(c) for c in shown]) if isinstance(value, str) else ""
        raise BadValue(f"invalid choice {value!r} (choose from {', '.join(map(str, shown))}){hint}")


def check_lora(items: list[Any]) -> None:
    for item in items:
        if item in (None, ""):
            continue
        if "=" in item and "," not in item:
            continue
        try:
            data = json.loads(item)
        except json.JSONDecodeError:
            raise BadValue(f"invalid JSON format for --lora-modules: {item}") from None
        if not isinstance(data, dict) or not {"name", "path"} <= set(data):
            raise BadValue(f"invalid fields for --lora-modules: {item}")
