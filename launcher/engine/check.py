"""check_argv: one vLLM version's verdict on what follows `vllm serve`, in milliseconds, no vLLM import."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from launcher.engine import rules
from launcher.engine.findings import WARNING, Finding, Result, errors
from launcher.engine.parsing import parse
from launcher.engine.preprocess import preprocess
from launcher.engine.schemas import DEFAULT_VERSION, load_engine
from launcher.errors import ProfileError


def check_argv(argv: Sequence[str], version: str = DEFAULT_VERSION,
               env: Mapping[str, str] | None = None) -> list[Finding]:
    """Check what follows `vllm serve` (model first, then options) against one vLLM version.

    Returns every finding; any `error` means that vLLM would refuse the command (at parse time or
    in the checks it makes before loading the model). Warnings name what still runs but is
    deprecated, without effect, abbreviated, duplicated or meant differently in another version.
    `env` is the environment vLLM will get (only VLLM_USE_RUST_FRONTEND matters, for
    --grpc-port); None means unknown, which turns that check into a warning.
    """
    schema = load_engine(version)
    res = Result()
    if any(not isinstance(a, str) for a in argv):
        raise TypeError("check_argv: every argv element must be a str")
    parse(schema, preprocess(argv, res), res)
    ns = rules.namespace(res)
    rules.usage_checks(schema, res)
    rules.late_checks(schema, res, ns)
    rules.grpc_rules(schema, res, ns, env)
    rules.multi_port_rules(schema, res, ns)
    rules.meaning_checks(schema, res)
    if res.model is None and not res.config_file:
        default = schema.by_dest.get("model")
        res.warn("model", "no model given; vLLM would serve its default"
                 + (f" ({default.default})" if default and default.default else ""),
                 "put the model first: vllm serve MODEL ...")
    return res.findings


def ensure_valid(argv: Sequence[str], version: str = DEFAULT_VERSION,
                 source: str | None = None, env: Mapping[str, str] | None = None) -> list[Finding]:
    """check_argv, raising ProfileError on the first error; returns the warnings."""
    findings = check_argv(argv, version, env)
    errs = errors(findings)
    if errs:
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        where = f"{source}: " if source else ""
        first = errs[0]
        fix = f"; fix: {first.fix}" if first.fix else ""
        raise ProfileError(f"{where}vLLM {load_engine(version).version} would reject the command: "
                           f"{first.option}: {first.message}{fix}{more}")
    return [f for f in findings if f.severity == WARNING]
