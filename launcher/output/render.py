"""Rendering: a validated Profile in, the exact vLLM argv and environment out. Pure: no I/O."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from launcher.output.compile_cache import with_cache_env
from launcher.profile.schema import FLAG_SECTIONS, Profile, flag_for, looks_secret

SECRET_TARGET = "VLLM_API_KEY"  # vLLM reads its API key from here when --api-key is absent


@dataclass(frozen=True)
class Arg:
    """One vLLM option: `value` None means a bare flag (`--language-model-only`)."""

    flag: str
    value: Any = None
    key: str = ""  # the profile's dotted key it came from ("" for extra args)

    def tokens(self) -> list[str]:
        if self.value is None:
            return [self.flag]
        text = _text(self.value)
        # A value that starts with `-` would be read by argparse as an option: write --flag=-value.
        if text.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(text):
            return [f"{self.flag}={text}"]
        return [self.flag, text]


_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")  # what argparse takes as a value although it starts with `-`


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
    # The profile's own values of the variables in env_from (secret-looking env entries): used by
    # `serve` when the environment does not set them; never printed in any format.
    secret_values: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

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
            flag = flag_for(name, extra)
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
    `launcher.output.validate.command` (which calls this, then translates and checks for the target vLLM);
    call this directly only to look at what the profile itself says.
    """
    opts = options(profile)
    command = list(profile.vllm.command)
    model_tokens = [profile.model.name] if profile.vllm.model_arg == "positional" else ["--model", profile.model.name]
    argv = [*command, *model_tokens]
    for arg in opts:
        argv.extend(arg.tokens())
    argv.extend(profile.extra_args)
    env, env_from, secrets = split_secrets(profile.env)
    env = with_cache_env(env, profile.vllm.cache_dir)  # one root for every compile cache (launcher.output.compile_cache)
    if profile.server.api_key_env:
        env_from[SECRET_TARGET] = profile.server.api_key_env
    notes = tuple(f"differs from the model card: {d.card} -> {d.rendered}: {d.why}" for d in profile.deviations)
    notes += tuple(
        f'env.{name} looks like a secret: every format shows it as "${{{name}}}" (set it where the command runs); serve passes on '
        "the environment's value, else the profile's" for name in secrets
    )
    return Rendered(tuple(argv), env, env_from, tuple(opts), profile.model.name, len(command) + len(model_tokens),
                    notes + tuple(extra_notes), secrets)


def split_secrets(environment: dict[str, str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(plain variables, {secret: variable it is read from}, the secrets' own values), each sorted by name.

    A variable whose name looks secret (*TOKEN*, *KEY*, *SECRET*, *PASS*, *AUTH*, *_PAT*, ...) or whose value carries
    credentials (URL user information, a known token shape) is rendered by reference,
    `NAME="${NAME}"`, in every format, and its value is never printed.
    """
    plain = {k: v for k, v in sorted(environment.items()) if not looks_secret(k, v)}
    secrets = {k: v for k, v in sorted(environment.items()) if looks_secret(k, v)}
    return plain, {k: k for k in secrets}, secrets


# Characters that end or hide a comment line in a shell, YAML or a terminal: C0/C1 controls, DEL, the
# Unicode line and paragraph separators, bidirectional and zero-width format characters, noncharacters.
_COMMENT_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\uffff]")


def comment_safe(text: str) -> str:
    """`text` for one comment line: unsafe characters (and `\\`) written as backslash escapes, so nothing breaks out."""

    def escape(m: re.Match[str]) -> str:
        c = m.group(0)
        if c == "\\":
            return "\\\\"
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c)
        if named:
            return named
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return _COMMENT_UNSAFE.sub(escape, text)


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
        if not flag.startswith("--"):  # vLLM makes every key `--key`: `-O3` would become `--O3`
            from launcher.errors import ProfileError

            what = "a short option" if flag.startswith("-") and flag != "-" else "not an option"
            raise ProfileError(f"--format yaml: {flag[:40]!r} is {what}, which a `vllm serve --config` file cannot carry "
                               "(its keys become --KEY); give the long option in extra args, or use another format")
        key = flag[2:]
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
    header = [
        "# vllm serve --config file rendered by launcher; use: vllm serve --config THIS_FILE",
    ]
    if r.env or r.env_from:
        header.append("# Environment needed too (not expressible here): " + comment_safe(" ".join(
            [f"{k}={shlex.quote(v)}" for k, v in r.env.items()] + [f'{k}="${{{s}}}"' for k, s in r.env_from.items()]
        )))
    body = yaml_dump(config_mapping(r))
    return "\n".join(header) + "\n" + body


def yaml_dump(data: Any) -> str:
    """YAML that loads back to exactly `data`: safe_dump, but text with a line break PyYAML would fold
    (NEL, U+2028, U+2029) or any other non-printable character is written double-quoted, with escapes."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # written out where used, never &id001/*id001
            return True

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = '"' if any(c != "\n" and not c.isprintable() for c in value) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _text)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000, default_flow_style=False)


FORMATS = {"shell": format_shell, "json": format_json, "yaml": format_yaml, "env": format_env}
