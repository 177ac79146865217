"""Rendering: a validated Profile in, the exact vLLM argv and environment out. Pure: no I/O."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from launcher.schema import Profile

# The blocks whose fields become vLLM flags, in render order.
FLAG_SECTIONS = ("parallel", "engine", "kv_cache", "model", "chat", "server")
SECRET_TARGET = "VLLM_API_KEY"  # vLLM reads its API key from here when --api-key is absent


@dataclass(frozen=True)
class Arg:
    """One vLLM option: `value` None means a bare flag (`--language-model-only`)."""

    flag: str
    value: Any = None
    key: str = ""  # the profile's dotted key it came from ("" for extra args)

    def tokens(self) -> list[str]:
        return [self.flag] if self.value is None else [self.flag, _text(self.value)]


@dataclass(frozen=True)
class Rendered:
    """What `vllm serve` gets: argv (program first), literal environment, and secrets by reference."""

    argv: tuple[str, ...]
    env: dict[str, str]
    env_from: dict[str, str]  # target variable -> the variable that holds the secret
    args: tuple[Arg, ...]  # the options, structured (for --config YAML and diffs)
    model: str
    head: int  # argv[:head] is program, subcommand and model; options follow
    notes: tuple[str, ...]  # what the renderer changed or wants the operator to know

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"argv": list(self.argv), "env": dict(self.env)}
        if self.env_from:
            out["env_from"] = dict(self.env_from)
        return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _flag_for(field_name: str, extra: Any) -> str:
    if isinstance(extra, dict) and "flag" in extra:
        return str(extra["flag"])
    return "--" + field_name.replace("_", "-")


def _negated(flag: str) -> str:
    return "--no-" + flag[2:]


def options(profile: Profile) -> list[Arg]:
    """The profile's vLLM options in stable order: section order, then field order."""
    args: list[Arg] = []
    for section in FLAG_SECTIONS:
        block = getattr(profile, section)
        for name, info in type(block).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("render") is False:
                continue
            value = getattr(block, name)
            if value is None:
                continue
            flag = _flag_for(name, extra)
            key = f"{section}.{name}"
            if isinstance(value, bool):
                args.append(Arg(flag if value else _negated(flag), None, key))
            else:
                args.append(Arg(flag, value, key))
        if section == "kv_cache" and profile.mtp_enabled:
            # Speculation sits after the KV cache, as on the model card.
            assert profile.speculative is not None
            args.append(Arg("--speculative-config", profile.speculative.config(), "speculative"))
    return args


def assemble(profile: Profile, extra_notes: tuple[str, ...] = ()) -> Rendered:
    """Validated profile -> argv + environment, as the profile says it, NOT yet checked or translated.

    Deterministic, so renders can be diffed. Every command launcher prints, writes or execs comes from
    `launcher.validate.command` (which calls this, then translates and checks for the target vLLM);
    call this directly only to look at what the profile itself says.
    """
    opts = options(profile)
    command = list(profile.vllm.command)
    model_tokens = [profile.model.name] if profile.vllm.model_arg == "positional" else ["--model", profile.model.name]
    argv = [*command, *model_tokens]
    for arg in opts:
        argv.extend(arg.tokens())
    argv.extend(profile.extra_args)
    env = dict(sorted(profile.env.items()))
    env_from = {SECRET_TARGET: profile.server.api_key_env} if profile.server.api_key_env else {}
    notes = tuple(f"differs from the model card: {d.card} -> {d.rendered}: {d.why}" for d in profile.deviations)
    return Rendered(tuple(argv), env, env_from, tuple(opts), profile.model.name, len(command) + len(model_tokens), notes + tuple(extra_notes))


def with_args(rendered: Rendered, args: Sequence[Arg], env: Mapping[str, str] | None = None) -> Rendered:
    """`rendered` with more options appended and, when given, the environment replaced (sorted, as assemble() sorts)."""
    argv = list(rendered.argv)
    for arg in args:
        argv.extend(arg.tokens())
    new_env = dict(sorted(env.items())) if env is not None else rendered.env
    return replace(rendered, argv=tuple(argv), args=rendered.args + tuple(args), env=new_env)


# ------------------------------------------------------------------------ formats


def format_shell(r: Rendered) -> str:
    """Copy-paste-ready: environment first, then one flag per line, quoted for POSIX shells."""
    lines = [f"{k}={shlex.quote(v)}" for k, v in r.env.items()]
    lines += [f'{k}="${{{src}}}"' for k, src in r.env_from.items()]
    command_words = list(r.argv[: r.head])
    lines.append(shlex.join(command_words))
    tokens = option_tokens(r)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if i + 1 < len(tokens) and not _is_flag(tokens[i + 1]):
            lines.append("  " + shlex.join([tok, tokens[i + 1]]))
            i += 2
        else:
            lines.append("  " + shlex.quote(tok))
            i += 1
    return " \\\n".join(lines) + "\n"


def option_tokens(r: Rendered) -> list[str]:
    """Everything after the program, its subcommand and the model."""
    return list(r.argv[r.head:])


def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _is_number(token)


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def format_json(r: Rendered) -> str:
    return json.dumps(r.to_json(), indent=2) + "\n"


def format_env(r: Rendered) -> str:
    """A sourceable file with the environment part."""
    lines = ["# Environment for vllm serve, rendered by launcher. Source it: . ./vllm.env"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in r.env.items()]
    lines += [f'export {k}="${{{src}}}"' for k, src in r.env_from.items()]
    return "\n".join(lines) + "\n"


def config_mapping(r: Rendered) -> dict[str, Any]:
    """The mapping for `vllm serve --config FILE.yaml` meaning exactly what the argv means.

    vLLM turns each key into `--key`, drops `false` values and turns mappings into JSON, so:
    negative booleans are written as `no-x: true`, dicts as JSON strings, bare flags as true.
    """
    out: dict[str, Any] = {"model": r.model}
    for flag, value in option_pairs(option_tokens(r)):
        key = flag[2:] if flag.startswith("--") else flag.lstrip("-")
        if value is None:
            out[key] = True
        else:
            out[key] = _native(flag, value, r)
    return out


def _native(flag: str, text: str, r: Rendered) -> Any:
    for arg in r.args:
        if arg.flag == flag and arg.value is not None and _text(arg.value) == text:
            return _text(arg.value) if isinstance(arg.value, (dict, list, tuple)) else arg.value
    return text


def option_pairs(tokens: list[str]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if "=" in tok and tok.startswith("--"):
            flag, _, value = tok.partition("=")
            out.append((flag, value))
            i += 1
        elif i + 1 < len(tokens) and not _is_flag(tokens[i + 1]):
            out.append((tok, tokens[i + 1]))
            i += 2
        else:
            out.append((tok, None))
            i += 1
    return out


def format_yaml(r: Rendered) -> str:
    import yaml

    header = [
        "# vllm serve --config file rendered by launcher; use: vllm serve --config THIS_FILE",
    ]
    if r.env or r.env_from:
        header.append("# Environment needed too (not expressible here): " + " ".join(
            [f"{k}={shlex.quote(v)}" for k, v in r.env.items()] + [f'{k}="${{{s}}}"' for k, s in r.env_from.items()]
        ))
    body = yaml.safe_dump(config_mapping(r), sort_keys=False, allow_unicode=True, width=10_000)
    return "\n".join(header) + "\n" + body


FORMATS = {"shell": format_shell, "json": format_json, "yaml": format_yaml, "env": format_env}
