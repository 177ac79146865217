#!/usr/bin/env python3
"""Ask a real vLLM whether it accepts each of a batch of `vllm serve` argvs (one import, many parses).

Run it with the Python of a vLLM virtual environment (importing vLLM takes ~10-20 s, so every
argv of a test session goes through one process):

    VLLM_TARGET_DEVICE=cpu $VENV/bin/python tools/vllm_parse_batch.py --in cases.json \
        --out verdicts.json [--schema-out /tmp/x/vllm-0.33.0.json]

`cases.json` is a JSON list of argvs, each what follows `vllm serve` (model first). For each
argv, `verdicts.json` gets {"ok": bool, "stage": ..., "error": ...}, in order. The stages are the
ones `vllm serve` goes through before it needs the model:

1. `parse`: the real top-level `vllm` parser with the real `serve` subparser
   (`FlexibleArgumentParser.parse_args(["serve", *argv])`: preprocessing plus argparse).
2. `validate`: `ServeSubcommand.validate` (= `validate_parsed_serve_args`).
3. `late`: the late validators that need no model, each vLLM's own code or registry:
   `CacheConfig(cache_dtype=...)`, `AttentionConfig(backend=...)`, the reasoning- and
   tool-parser registries (the conditions of `validate_api_server_args`), and for
   `--speculative-config` the first step of `EngineArgs.create_speculative_config` (flag/key
   conflicts), its keys against `SpeculativeConfig`'s fields and `method` against its Literal.

With `--schema-out` it also writes the engine schema (tools/gen_engine_schema.py) from the same
process and the same parser, for the drift check.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import typing
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gen_engine_schema as gen  # noqa: E402  (same folder)


def parse_cli() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="inp", required=True, help="JSON list of argvs (after `vllm serve`)")
    p.add_argument("--out", required=True, help="where to write the JSON list of verdicts")
    p.add_argument("--schema-out", default=None, help="also write the engine schema here")
    p.add_argument("--device-type", default=None, help="as in gen_engine_schema.py")
    return p.parse_args()


class Late:
    """The late validators, bound once to the installed vLLM."""

    def __init__(self) -> None:
        from vllm.config import AttentionConfig, CacheConfig
        from vllm.config import speculative as spec_mod
        from vllm.reasoning import ReasoningParserManager

        try:
            from vllm.tool_parsers import ToolParserManager
        except ImportError:  # older layout
            from vllm.entrypoints.openai.tool_parsers import ToolParserManager  # type: ignore
        from pydantic import TypeAdapter

        self.AttentionConfig = AttentionConfig
        self.CacheConfig = CacheConfig
        self.reasoning = set(ReasoningParserManager.list_registered())
        self.tools = set(ToolParserManager.list_registered())
        spec_cls = spec_mod.SpeculativeConfig
        self.spec_fields = {f.name for f in dataclasses.fields(spec_cls) if f.init}
        hints = typing.get_type_hints(spec_cls, include_extras=True)
        self.method_adapter = TypeAdapter(hints["method"])

    def check(self, args: argparse.Namespace) -> None:
        self.CacheConfig(cache_dtype=args.kv_cache_dtype)
        if args.attention_backend is not None:
            self.AttentionConfig(backend=args.attention_backend)
        # validate_api_server_args (needs args.structured_outputs_config, built later from
        # args.reasoning_parser): same conditions, on the parsed values.
        if args.enable_auto_tool_choice and args.tool_call_parser not in self.tools:
            raise KeyError(f"invalid tool call parser: {args.tool_call_parser}")
        rp = getattr(args, "reasoning_parser", "")
        if rp and rp not in self.reasoning:
            raise KeyError(f"invalid reasoning parser: {rp}")
        self.check_speculative(args)

    def check_speculative(self, args: argparse.Namespace) -> None:
        spec = args.speculative_config
        # EngineArgs.create_speculative_config, first step (copied: the rest needs the model).
        for flag, key, value in (
            ("--spec-method", "method", getattr(args, "spec_method", None)),
            ("--spec-model", "model", getattr(args, "spec_model", None)),
            ("--spec-tokens", "num_speculative_tokens", getattr(args, "spec_tokens", None)),
        ):
            if value is None:
                continue
            if spec is None:
                spec = {}
            if key in spec:
                raise ValueError(f"{flag} and --speculative-config['{key}'] are mutually exclusive")
            spec[key] = value
        if spec is None:
            return
        if not isinstance(spec, dict):
            raise TypeError(f"SpeculativeConfig(**{type(spec).__name__}) is not possible")
        spec = {k.replace("-", "_"): v for k, v in spec.items()}
        unknown = set(spec) - self.spec_fields
        if unknown:
            raise TypeError(f"SpeculativeConfig got unexpected keys {sorted(unknown)}")
        if spec.get("method") is not None:
            self.method_adapter.validate_python(spec["method"])


def verdict(top: argparse.ArgumentParser, late: Late, argv: list[str]) -> dict[str, Any]:
    from vllm.entrypoints.cli.serve import ServeSubcommand

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = top.parse_args(["serve", *argv])
    except SystemExit as exc:
        lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
        first = next((i for i, ln in enumerate(lines) if " error: " in ln), None)
        message = " ".join(lines[first:first + 4]) if first is not None else " ".join(lines[-1:])
        stage = "parse" if exc.code else "exit0"
        return {"ok": False, "stage": stage, "error": message[:500] or f"exit {exc.code}"}
    except Exception as exc:  # preprocessing raises ValueError/IndexError/AssertionError
        return {"ok": False, "stage": "parse", "error": f"{type(exc).__name__}: {exc}"}
    try:
        ServeSubcommand().validate(args)
    except Exception as exc:
        return {"ok": False, "stage": "validate", "error": f"{type(exc).__name__}: {exc}"}
    try:
        late.check(args)
    except Exception as exc:
        return {"ok": False, "stage": "late", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"}
    return {"ok": True, "stage": None, "error": None}


def main() -> int:
    cli = parse_cli()
    with open(cli.inp, encoding="utf-8") as fh:
        cases = json.load(fh)
    gen._prepare_import()
    # vLLM's logger writes to stdout; keep our own stdout clean for callers that read it.
    with contextlib.redirect_stdout(sys.stderr):
        top, serve = gen.build_parsers(gen.resolve_device_type(cli.device_type))
        late = Late()
        results = [verdict(top, late, list(argv)) for argv in cases]
        schema_text = None
        if cli.schema_out:
            schema_text = gen.dumps(gen.generate(cli.schema_out, cli.device_type, parser=serve))
    with open(cli.out, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1)
    if schema_text is not None:
        with open(cli.schema_out, "w", encoding="utf-8") as fh:
            fh.write(schema_text)
    print(f"vllm_parse_batch: {len(results)} argvs, {sum(r['ok'] for r in results)} accepted",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
