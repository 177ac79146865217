"""The checks `vllm serve` makes after parsing and before it needs the model (the serve rules).

Each rule reads the parsed namespace (dest -> value) and the schema's late-validated values
(registries and enums vLLM checks after argparse: attention backends, KV cache dtypes, parsers,
speculative methods), and names the vLLM function it ports. Plus launcher's own warnings about how
an argv is written: deprecated or dead flags, abbreviations, options given twice, and options
that mean something else in another known vLLM version.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from launcher.engine.findings import Occurrence, Result
from launcher.engine.schemas import EngineSchema, Option, load_engine, supported_versions
from launcher.engine.values import BadValue, did_you_mean, values

Namespace = dict[str, Any]


def namespace(res: Result) -> Namespace:
    ns: Namespace = {}
    for occ in res.occurrences:
        if occ.value is BadValue:
            continue
        if occ.opt.action == "append":
            ns.setdefault(occ.opt.dest, []).append(occ.value)
        else:
            ns[occ.opt.dest] = occ.value
    return ns


def _value(schema: EngineSchema, ns: Namespace, dest: str) -> Any:
    """The parsed value, or vLLM's default when the option was not given."""
    if dest in ns:
        return ns[dest]
    opt = schema.by_dest.get(dest)
    return opt.default if opt is not None else None


# --------------------------------------------------------------------------- late-validated values


def _attention_backend(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """AttentionConfig.validate_backend_before: AttentionBackendEnum[value.upper()], or auto."""
    backend = ns.get("attention_backend")
    if not isinstance(backend, str) or backend.lower() == "auto":
        return
    names = schema.late_values("attention_backends")
    if backend.upper() not in names:
        res.error("--attention-backend", f"unknown attention backend {backend!r} for vLLM {schema.version}"
                  f"{did_you_mean(backend.upper(), names)}", "use auto or one of: " + ", ".join(names[:12]) + ", ...")


def _kv_cache_dtype(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """CacheConfig(cache_dtype=...), where argparse has no choices for it."""
    kv = ns.get("kv_cache_dtype")
    kvs = schema.late_values("kv_cache_dtypes")
    if isinstance(kv, str) and kvs and kv not in kvs:
        res.error("--kv-cache-dtype", f"invalid KV cache dtype {kv!r} for vLLM {schema.version}"
                  f"{did_you_mean(kv, kvs)}", "use one of: " + ", ".join(kvs))


def _reasoning_parser(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """ReasoningParserManager.list_registered(), checked before the engine starts."""
    rp = ns.get("reasoning_parser")
    if not isinstance(rp, str) or not rp:
        return
    names = schema.late_values("reasoning_parsers")
    if rp in names:
        return
    extra = f" ('none' does not turn it off in vLLM {schema.version}; leave the flag out)" if rp.lower() == "none" else ""
    res.error("--reasoning-parser", f"reasoning parser {rp!r} is not registered in vLLM "
              f"{schema.version}{extra}{did_you_mean(rp, names)}",
              "leave --reasoning-parser out" if extra else "use one of: " + ", ".join(names))


def _tool_call_parser(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """validate_api_server_args: the tool parser registry, only with --enable-auto-tool-choice."""
    tp = ns.get("tool_call_parser")
    if not isinstance(tp, str) or not tp:
        return
    names = schema.late_values("tool_call_parsers")
    if tp in names:
        return
    msg = f"tool-call parser {tp!r} is not registered in vLLM {schema.version}{did_you_mean(tp, names)}"
    if ns.get("enable_auto_tool_choice"):
        res.error("--tool-call-parser", msg, "use one of: " + ", ".join(names))
    else:
        res.warn("--tool-call-parser", msg + " (vLLM checks it only with --enable-auto-tool-choice)",
                 "fix the name or drop the flag")


def _speculative(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """EngineArgs.create_speculative_config (first step) and SpeculativeConfig's fields and method."""
    spec = ns.get("speculative_config")
    if spec is None:
        return
    if not isinstance(spec, dict):
        res.error("--speculative-config", f"must be a JSON object, got {type(spec).__name__}",
                  "--speculative-config '{\"method\": \"mtp\", \"num_speculative_tokens\": 1}'")
        return
    keys = schema.late_values("speculative_config_keys")
    for k in spec if keys else ():
        if str(k).replace("-", "_") not in keys:
            res.error("--speculative-config", f"unknown key {k!r} in --speculative-config"
                      f"{did_you_mean(str(k), keys)}", "use the SpeculativeConfig field names")
    for flag, key in (("spec_method", "method"), ("spec_model", "model"), ("spec_tokens", "num_speculative_tokens")):
        if ns.get(flag) is not None and key in spec:
            name = schema.by_dest[flag].name
            res.error(name, f"{name} and --speculative-config['{key}'] are mutually exclusive", "give it only once")
    if spec.get("method") is not None:
        _speculative_method(schema, res, spec["method"])


def _speculative_method(schema: EngineSchema, res: Result, method: Any) -> None:
    methods = schema.late_values("speculative_methods")
    if not isinstance(method, str) or method not in methods:
        elsewhere = [v for v in supported_versions() if v != schema.version
                     and method in load_engine(v).late_values("speculative_methods")]
        note = f" (it exists in vLLM {', '.join(elsewhere)})" if elsewhere else ""
        res.error("--speculative-config", f"speculative method {method!r} is not supported by "
                  f"vLLM {schema.version}{note}{did_you_mean(str(method), methods)}",
                  "use one of: " + ", ".join(methods))
    elif method in schema.late.get("speculative_methods", {}).get("mtp_aliases", ()):
        res.warn("--speculative-config", f"method {method!r} is deprecated; vLLM rewrites it to "
                 "'mtp'", "write \"method\": \"mtp\"")


# --------------------------------------------------------------------------- validate_parsed_serve_args


_REQUIRES = (
    ("enable_auto_tool_choice", "tool_call_parser", "--enable-auto-tool-choice requires --tool-call-parser"),
    ("enable_log_outputs", "enable_log_requests", "--enable-log-outputs requires --enable-log-requests"),
)


def _serve_args(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """validate_parsed_serve_args: the checks that need no model, where the flags exist."""
    for flag, needs, msg in _REQUIRES:
        if flag in schema.by_dest and ns.get(flag) and not ns.get(needs):
            res.error(schema.by_dest[flag].name, msg, f"add {schema.by_dest[needs].name}" if needs in schema.by_dest else None)
    sse = ns.get("sse_keep_alive_interval")
    if isinstance(sse, (int, float)) and sse < 0:
        res.error("--sse-keep-alive-interval", "must be a non-negative integer (0 disables it)")
    if ns.get("enable_per_request_metrics") and ns.get("disable_log_stats"):
        res.error("--enable-per-request-metrics", "needs engine statistics logging", "remove --disable-log-stats")


def _reasoning_effort_map(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """validate_reasoning_effort_map (keys of --reasoning-effort-map)."""
    efforts = schema.late_values("reasoning_efforts")
    rem = ns.get("reasoning_effort_map")
    if not efforts or rem is None:
        return
    if not isinstance(rem, dict) or not all(isinstance(x, str) for x in rem.values()):
        res.error("--reasoning-effort-map", "must be a JSON object mapping reasoning efforts to strings")
    elif sorted(set(rem) - set(efforts)):
        res.error("--reasoning-effort-map", f"unknown efforts {sorted(set(rem) - set(efforts))}; "
                  f"keys must be one of {list(efforts)}")


def _chat_template(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """validate_chat_template: a path-like value must exist where vLLM runs (or be a built-in one)."""
    tmpl = ns.get("chat_template")
    if isinstance(tmpl, str) and not any(c in tmpl for c in "{}\n"):
        if tmpl not in schema.late_values("builtin_chat_templates"):
            res.warn("--chat-template", f"{tmpl!r} is read as a file path: vLLM refuses to start "
                     "unless it exists on the machine that runs vLLM",
                     "give an absolute path that exists there, or the template text itself")


LATE_RULES: tuple[Callable[[EngineSchema, Result, Namespace], None], ...] = (
    _attention_backend, _kv_cache_dtype, _reasoning_parser, _tool_call_parser, _speculative,
    _serve_args, _reasoning_effort_map, _chat_template,
)


def late_checks(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    for rule in LATE_RULES:
        rule(schema, res, ns)


# --------------------------------------------------------------------------- the serve-time port rules


def grpc_rules(schema: EngineSchema, res: Result, ns: Namespace, env: Mapping[str, str] | None) -> None:
    """vLLM's validate_grpc_port_arg (serve): the Rust frontend's gRPC listener."""
    port = ns.get("grpc_port")
    if port is None or "grpc_port" not in schema.by_dest:
        return
    if ns.get("grpc"):
        res.error("--grpc-port", "--grpc and --grpc-port are mutually exclusive")
    _rust_frontend(res, env)
    count = ns.get("api_server_count")
    if ns.get("headless") or (count is not None and count <= 0):
        res.error("--grpc-port", "--grpc-port needs an API server: remove --headless and "
                  "non-positive --api-server-count")
    if ns.get("data_parallel_multi_port_external_lb"):
        res.error("--grpc-port", "--grpc-port is incompatible with --data-parallel-multi-port-external-lb")
    if isinstance(port, int) and not 0 <= port <= 65535:
        res.error("--grpc-port", "--grpc-port must be between 0 and 65535")
    elif port != 0 and port == _value(schema, ns, "port") and not ns.get("uds"):
        res.error("--grpc-port", "--grpc-port must differ from --port when HTTP uses TCP")


def _rust_frontend(res: Result, env: Mapping[str, str] | None) -> None:
    rust = (env or {}).get("VLLM_USE_RUST_FRONTEND", "0")
    if env is None:
        res.warn("--grpc-port", "vLLM accepts --grpc-port only with VLLM_USE_RUST_FRONTEND=1 in "
                 "its environment", "set VLLM_USE_RUST_FRONTEND=1")
    elif not (rust.strip().isdigit() and int(rust) != 0):
        res.error("--grpc-port", "--grpc-port requires VLLM_USE_RUST_FRONTEND=1",
                  "set VLLM_USE_RUST_FRONTEND=1 in the environment")


_MULTI_PORT = "--data-parallel-multi-port-external-lb"


def multi_port_rules(schema: EngineSchema, res: Result, ns: Namespace) -> None:
    """vLLM's validate_multi_port_external_lb_args."""
    if not ns.get("data_parallel_multi_port_external_lb"):
        return
    get = functools.partial(_value, schema, ns)
    size, local = get("data_parallel_size") or 1, get("data_parallel_size_local")
    problems = [
        (bool(get("grpc")), "does not support --grpc"),
        (get("uds") is not None, "does not support --uds"),
        (bool(get("ssl_keyfile")) != bool(get("ssl_certfile")),
         "needs --ssl-keyfile and --ssl-certfile together"),
        (get("api_server_count") not in (None, 1), "requires --api-server-count=1"),
        (get("data_parallel_rank") is not None, "manages --data-parallel-rank itself"),
        (bool(get("data_parallel_external_lb") or get("data_parallel_hybrid_lb")),
         "cannot be combined with --data-parallel-external-lb or --data-parallel-hybrid-lb"),
        (size < 2, "requires --data-parallel-size > 1"),
        (local is None or local < 2, "requires --data-parallel-size-local >= 2"),
    ]
    why = next((why for bad, why in problems if bad), None)
    if why is not None:
        res.error(_MULTI_PORT, why)
    elif local > size:
        res.error(_MULTI_PORT, "--data-parallel-size-local cannot exceed --data-parallel-size")
    elif size % local:
        res.error(_MULTI_PORT, "--data-parallel-size must be divisible by --data-parallel-size-local")
    else:
        _multi_port_ranks(res, get, size, local)


def _multi_port_ranks(res: Result, get: Callable[[str], Any], size: int, local: int) -> None:
    start = get("data_parallel_start_rank")
    if start is None:
        start = (get("node_rank") or 0) * local
    port, sup = get("port"), get("data_parallel_supervisor_port")
    if start + local > size:
        res.error(_MULTI_PORT, "multi-port supervised ranks would exceed --data-parallel-size")
    elif isinstance(port, int) and isinstance(sup, int) and port <= sup <= port + local - 1:
        res.error(_MULTI_PORT, f"--data-parallel-supervisor-port {sup} overlaps with the child rank "
                  f"ports {port}-{port + local - 1}")


# --------------------------------------------------------------------------- how the argv is written


def deprecation_fix(opt: Option) -> str:
    msg = opt.deprecated or ""
    m = re.search(r"\bUse (--[\w.-]+)", msg)
    if m:
        return f"use {m.group(1).rstrip('.')} instead"
    m = re.search(r"replaced by ([\w.-]+)", msg)
    if m:
        return f"use --{m.group(1).replace('_', '-').rstrip('.')} instead"
    if opt.no_effect:
        m = re.search(r"no effect: (.+?)(\.|$)", msg)
        reason = f" ({m.group(1)})" if m else ""
        return f"remove it{reason}"
    return "plan to remove it"


def usage_checks(schema: EngineSchema, res: Result) -> None:
    by_dest: dict[str, list[Occurrence]] = {}
    for occ in res.occurrences:
        by_dest.setdefault(occ.opt.dest, []).append(occ)
        if occ.abbreviated:
            res.warn(occ.opt.name, f"{occ.token} is an abbreviation of {occ.spelling}; vLLM accepts "
                     "it only while no newer option shares the prefix", f"write {occ.spelling}")
    for occs in by_dest.values():
        opt = occs[0].opt
        if opt.deprecated:
            kind = "has no effect" if opt.no_effect else "is deprecated"
            res.warn(opt.name, f"{opt.name} {kind} in vLLM {schema.version} (its help: "
                     f"\"{opt.deprecated}\")", deprecation_fix(opt))
        if len(occs) > 1 and opt.action != "append":
            _given_twice(res, opt, occs)


def _given_twice(res: Result, opt: Option, occs: list[Occurrence]) -> None:
    dotted = [o for o in occs if o.dotted]
    if dotted and len(dotted) < len(occs):
        res.warn(opt.name, f"{', '.join(dotted[0].dotted)} replaces the whole {opt.name} "
                 "value given earlier (vLLM does not merge them)", f"put every key into one {opt.name} JSON")
    else:
        res.warn(opt.name, f"{opt.name} is given {len(occs)} times; vLLM keeps the last "
                 f"({' '.join([occs[-1].token, *occs[-1].raw])})", "give it once")


def meaning_checks(schema: EngineSchema, res: Result) -> None:
    """Warn where an option, as written, means something else in another known vLLM version."""
    others = [load_engine(v) for v in supported_versions() if v != schema.version]
    seen: set[str] = set()
    for occ in res.occurrences:
        if occ.opt.dest in seen:
            continue
        seen.add(occ.opt.dest)
        for other_schema in others:
            other = other_schema.lookup(occ.spelling)
            if other is None:
                continue
            why = _meaning_change(schema, occ, other_schema, other)
            if why:
                res.warn(occ.opt.name, f"{occ.token} means something else in vLLM {other_schema.version}: {why}",
                         f"check the value is meant for vLLM {schema.version}")


def _values_or_bad(schema: EngineSchema, opt: Option, raw: list[str]) -> Any:
    try:
        return values(schema, opt, raw)
    except BadValue:
        return BadValue


def _meaning_change(schema: EngineSchema, occ: Occurrence, other_schema: EngineSchema, other: Option) -> str | None:
    opt = occ.opt
    if other.dest != opt.dest:
        return f"it sets {other.dest} there, {opt.dest} here"
    if opt.is_flag and (occ.spelling in opt.negative) != (occ.spelling in other.negative):
        return "it turns the setting the other way"
    if opt.no_effect != other.no_effect:
        if opt.no_effect:
            return f"there it takes effect ({other.help})"
        return f"there it has no effect ({other.deprecated})"
    if not opt.is_flag and occ.raw and (opt.type != other.type or opt.optional != other.optional):
        here = _values_or_bad(schema, opt, occ.raw)
        there = _values_or_bad(other_schema, other, occ.raw)
        if here != there and here is not BadValue and there is not BadValue:
            return f"the value {' '.join(occ.raw)!r} is read as {there!r} there, {here!r} here"
    return None
