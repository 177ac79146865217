"""What each supported vLLM's `vllm serve` accepts: checks and translations in milliseconds, no vLLM import.

The knowledge lives in `launcher/engines/vllm-<version>.json`, generated from a real install by
`tools/gen_engine_schema.py`. `check_argv` replays what `vllm serve` does with an argv: the
`FlexibleArgumentParser.parse_args` preprocessing (`--model` moved to the positional slot,
`_`/`-` in flag names, `-O3`, dotted JSON keys), Python 3.11 argparse (prefix abbreviations,
`--flag=value`, nargs, type conversion, choices), then the checks vLLM makes before it loads a
model (attention backend, KV cache dtype, parsers, speculative method, the serve-time rules).
tests/engine/ proves that the verdicts agree with the real parser of every supported version.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.errors import ProfileError

DEFAULT_VERSION = "0.33.0"
_PACKAGE = "launcher.engines"
_FILE_RE = re.compile(r"^vllm-(\d+\.\d+\.\d+[^/]*)\.json$")

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One verdict about an argv: an `error` makes vLLM refuse it, a `warning` does not."""

    severity: str
    option: str
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        text = f"{self.severity}: {self.option}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "option": self.option, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True)
class Option:
    """One `vllm serve` option with every spelling argparse accepts for it."""

    name: str
    flags: tuple[str, ...]
    dest: str
    action: str
    type: str
    optional: bool
    nargs: Any
    const: Any
    choices: tuple[Any, ...] | None
    negative: frozenset[str]
    default: Any
    help: str
    deprecated: str | None
    no_effect: bool
    dataclass: str | None

    @classmethod
    def from_json(cls, name: str, d: Mapping[str, Any]) -> Option:
        is_flag = d.get("type") == "bool-flag"
        return cls(
            name=name,
            flags=tuple(d["flags"]),
            dest=d["dest"],
            action=d.get("action", "store"),
            type=d.get("type", "str"),
            optional=bool(d.get("optional", False)),
            nargs=d.get("nargs", 0 if is_flag else None),
            const=d.get("const"),
            choices=tuple(d["choices"]) if d.get("choices") is not None else None,
            negative=frozenset(d.get("negative", ())),
            default=d.get("default"),
            help=d.get("help", ""),
            deprecated=d.get("deprecated"),
            no_effect=bool(d.get("no_effect", False)),
            dataclass=d.get("dataclass"),
        )

    @property
    def is_flag(self) -> bool:
        return self.nargs == 0

    def spelling_for(self, negative: bool) -> str | None:
        """The plain spelling that sets this flag to True (or False when `negative`)."""
        if not self.is_flag:
            return self.name
        pool = sorted(f for f in self.flags if (f in self.negative) == negative and f.startswith("--"))
        if not pool:
            return None
        if negative and f"--no-{self.name[2:]}" in pool:
            return f"--no-{self.name[2:]}"
        if not negative and self.name in pool:
            return self.name
        return pool[0]


@dataclass(frozen=True)
class EngineSchema:
    """Everything launcher knows about one vLLM version's `vllm serve`."""

    version: str
    meta: Mapping[str, Any]
    options: Mapping[str, Option]
    spellings: Mapping[str, Option]
    by_dest: Mapping[str, Option]
    positionals: tuple[Mapping[str, Any], ...]
    dataclasses: Mapping[str, Mapping[str, Any]]
    late: Mapping[str, Mapping[str, Any]]
    long_spellings: tuple[str, ...] = field(default=())

    def late_values(self, key: str) -> tuple[str, ...]:
        return tuple(self.late.get(key, {}).get("values", ()))

    def lookup(self, spelling: str) -> Option | None:
        """The option an exact spelling (underscores allowed) names, or None."""
        return self.spellings.get(_dash_key(spelling))


# --------------------------------------------------------------------------- loading


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _engines_dir() -> Any:
    """The packaged schema folder: a plain directory in every normal install; importlib.resources
    (slower to import) only when launcher runs from a zip."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engines")
    if os.path.isdir(here):
        from pathlib import Path

        return Path(here)
    from importlib import resources

    return resources.files(_PACKAGE)


@functools.lru_cache(maxsize=1)
def _available() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in _engines_dir().iterdir():
        m = _FILE_RE.match(entry.name)
        if m:
            found[m.group(1)] = entry.name
    return found


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[str, ...]:
    return tuple(sorted(_available(), key=_version_key))


def supported_versions() -> list[str]:
    """vLLM versions launcher has a schema for, oldest first."""
    return list(_versions())


def resolve_version(version: str) -> str:
    """Normalise `v0.33.0`, `0.33` (when unique) to a supported version, or raise ProfileError."""
    known = _versions()
    v = str(version).strip().removeprefix("v")
    if v in known:
        return v
    matches = [k for k in known if k.startswith(v + ".")]
    if len(matches) == 1:
        return matches[0]
    import difflib

    close = difflib.get_close_matches(v, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ProfileError(
        f"engine.version: vLLM {version!r} is not supported (supported: {', '.join(known)}){hint}"
    )


def load_engine(version: str = DEFAULT_VERSION) -> EngineSchema:
    """The schema of a supported vLLM version (cached; reads one packaged JSON file)."""
    return _load(resolve_version(version))


@functools.lru_cache(maxsize=None)
def _load(v: str) -> EngineSchema:
    text = _engines_dir().joinpath(_available()[v]).read_text(encoding="utf-8")
    data = json.loads(text)
    options = {name: Option.from_json(name, d) for name, d in data["options"].items()}
    spellings = {s: o for o in options.values() for s in o.flags}
    return EngineSchema(
        version=v,
        meta=data.get("meta", {}),
        options=options,
        spellings=spellings,
        by_dest={o.dest: o for o in options.values()},
        positionals=tuple(data.get("positionals", ())),
        dataclasses=data.get("dataclasses", {}),
        late=data.get("late", {}),
        long_spellings=tuple(sorted(s for s in spellings if s.startswith("--"))),
    )


# --------------------------------------------------------------------------- value types (ports of vLLM)

_HUMAN_INT_RE = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _human_int(value: str) -> int:
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


def _human_int_or_auto(value: str) -> int:
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return _human_int(value)


def _expand_json_numbers(val: str) -> str:
    """vllm.engine.arg_utils._expand_json_human_readable_numbers."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', val)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b",
                          lambda m: str(_human_int(m.group())), parts[i])
    return "".join(parts)


class _BadValue(Exception):
    pass


def _convert(schema: EngineSchema, opt: Option, raw: str) -> Any:
    """Convert one value string the way the option's argparse `type=` does; raise _BadValue."""
    if opt.optional and raw in ("", "None"):
        return None
    t = opt.type
    try:
        if t in ("str", "custom") or t.startswith("custom"):
            return raw
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t == "json":
            return json.loads(raw)
        if t == "json-or-str":
            if not re.match(r"(?s)^\s*{.*}\s*$", raw):
                return raw
            return json.loads(raw)
        if t == "human-int":
            return _human_int(raw)
        if t == "human-int-or-auto":
            return _human_int_or_auto(raw)
        if t == "reasoning-parser":
            return "" if raw.lower() == "none" else raw
        if t == "lower-snake":
            return raw.lower().replace("-", "_")
        if t == "device-list":
            return [int(p) if p.isdigit() else p for p in (x.strip() for x in raw.split(","))]
        if t == "port":
            port = int(raw)
            if not 1024 <= port <= 65535:
                raise _BadValue("Port must be between 1024 and 65535")
            return port
        if t == "dataclass-json":
            return _convert_dataclass(schema, opt, raw)
    except json.JSONDecodeError as exc:
        raise _BadValue(f"invalid JSON {raw!r}: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:
        kind = {"human-int": "integer (e.g. 4096, 4k, 1M)",
                "human-int-or-auto": "integer, 'auto' or -1"}.get(t, t)
        detail = f" ({exc})" if "Decimals" in str(exc) else ""
        raise _BadValue(f"invalid {kind} value: {raw!r}{detail}") from None
    return raw


def _convert_dataclass(schema: EngineSchema, opt: Option, raw: str) -> Any:
    data = json.loads(_expand_json_numbers(raw))
    if not isinstance(data, dict):
        raise _BadValue(f"{opt.dataclass} needs a JSON object, got {type(data).__name__}")
    info = schema.dataclasses.get(opt.dataclass or "", {})
    if info.get("extra") == "forbid":
        fields = info.get("fields", [])
        unknown = [k for k in data if k not in fields]
        if unknown:
            hint = _did_you_mean(unknown[0], fields)
            raise _BadValue(f"unknown key {unknown[0]!r} for {opt.dataclass}{hint}")
    return data


# --------------------------------------------------------------------------- helpers


def _did_you_mean(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def _dash_key(token: str) -> str:
    """FlexibleArgumentParser: `_` -> `-` between the leading `--` and the first `.`."""
    if not token.startswith("--"):
        return token
    head, dot, rest = token[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + rest


_MODEL_RE = re.compile(r"^--model(=.+|$)")
_CONFIG_RE = re.compile(r"^--config(=.+|$)")
_SERVED_RE = re.compile(r"^--served[-_]model[-_]name(=.+|$)")
_NEG_NUM_RE = re.compile(r"^-\d+$|^-\d*\.\d+$")


@dataclass
class _Tok:
    text: str
    origin: str
    dotted: tuple[str, ...] = ()


@dataclass
class _Occ:
    opt: Option
    token: str  # as the user wrote it
    spelling: str
    raw: list[str]
    value: Any
    abbreviated: bool
    dotted: tuple[str, ...] = ()


@dataclass
class _Result:
    findings: list[Finding] = field(default_factory=list)
    occurrences: list[_Occ] = field(default_factory=list)
    model: str | None = None
    config_file: bool = False

    def error(self, option: str, message: str, fix: str | None = None) -> None:
        self.findings.append(Finding(ERROR, option, message, fix))

    def warn(self, option: str, message: str, fix: str | None = None) -> None:
        self.findings.append(Finding(WARNING, option, message, fix))


# --------------------------------------------------------------------------- FlexibleArgumentParser preprocessing


def _preprocess(argv: Sequence[str], res: _Result) -> list[_Tok]:
    """Port of FlexibleArgumentParser.parse_args before argparse runs (argv after `vllm serve`)."""
    args = ["serve", *argv]
    idx = next((i for i, a in enumerate(args) if _MODEL_RE.match(a)), None)
    if idx is not None:
        res.warn("--model", "vllm serve moves --model into the positional model slot and warns "
                 "that --model will be removed", "put the model first: vllm serve MODEL ...")
        if args[idx] == "--model":
            if idx + 1 >= len(args):
                res.error("--model", "expected one argument (vLLM crashes on a trailing --model)")
                args = args[:idx]
            else:
                args = ["serve", args[idx + 1], *args[1:idx], *args[idx + 2:]]
        else:
            args = ["serve", args[idx].removeprefix("--model="), *args[1:idx], *args[idx + 1:]]
    if (
        len(args) > 1
        and args[1].startswith("-")
        and not any(_CONFIG_RE.match(a) for a in args)
        and any(_SERVED_RE.match(a) for a in args)
    ):
        res.error("--served-model-name", "vLLM requires the model as the first positional "
                  "argument when --served-model-name is given", "put the model first")
    if "--config" in args:
        res.config_file = True
        if args.count("--config") > 1:
            res.error("--config", "vLLM allows only one --config file")
        i = args.index("--config")
        if i == len(args) - 1:
            res.error("--config", "no config file given after --config")
            args = args[:i]
        else:
            path = args[i + 1]
            if path.split(".")[-1] not in ("yaml", "yml"):
                res.error("--config", f"vLLM reads only .yaml/.yml config files, not {path!r}")
            else:
                res.warn("--config", f"the options inside {path} are not checked by launcher",
                         "put the options in the profile instead, where they are checked")
            args = args[:i] + args[i + 2:]
    elif any(a.startswith("--config=") for a in args):
        res.warn("--config", "vLLM silently ignores --config=FILE (it only reads a separate "
                 "'--config FILE')", "write --config FILE")

    toks: list[_Tok] = []
    for i, arg in enumerate(args):
        if arg.startswith("--help="):
            toks.append(_Tok("--help", arg))
        elif arg.startswith("--"):
            if "=" in arg:
                key, value = arg.split("=", 1)
                toks.append(_Tok(f"{_dash_key(key)}={value}", arg))
            else:
                toks.append(_Tok(_dash_key(arg), arg))
        elif arg.startswith("-O") and arg != "-O":
            level = arg[3:] if arg[2] == "=" else arg[2:]
            toks += [_Tok("--optimization-level", arg), _Tok(level, arg)]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            toks.append(_Tok("--optimization-level", arg))
        else:
            toks.append(_Tok(arg, arg))

    # Dotted JSON keys: --x.a.b v  ->  --x '{"a": {"b": v}}' appended at the end (last wins).
    delete: set[int] = set()
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, list[str]] = {}
    for i, tok in enumerate(toks):
        if i in delete:
            continue
        arg = tok.text
        if arg.startswith("--") and "." not in arg:
            continue
        if not (arg.startswith("-") and "." in arg):
            continue
        if "=" in arg:
            arg, value_str = arg.split("=", 1)
            if "." not in arg:
                continue
        else:
            if i + 1 >= len(toks):
                res.error(tok.origin, "expected a value after a dotted JSON key "
                          "(vLLM crashes with IndexError)")
                delete.add(i)
                continue
            value_str = toks[i + 1].text
            delete.add(i + 1)
        if arg.endswith("+"):
            arg = arg[:-1]
            value_str = json.dumps(list(value_str.split(",")))
        key, *keys = arg.split(".")
        try:
            value: Any = json.loads(value_str)
        except json.JSONDecodeError:
            try:
                value = _human_int(value_str)
            except ValueError:
                value = value_str
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        dups = _merge(merged.setdefault(key, {}), nested)
        for d in sorted(dups):
            res.warn(key, f"key {key}.{d} is given twice; the last value wins")
        origins.setdefault(key, []).append(tok.origin)
        delete.add(i)
    toks = [t for i, t in enumerate(toks) if i not in delete]
    for key, value in merged.items():
        src = tuple(origins[key])
        toks += [_Tok(key, src[0], src), _Tok(json.dumps(value), src[0], src)]
    return toks[1:]  # drop "serve"


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


# --------------------------------------------------------------------------- argparse (Python 3.11) emulation


class _Ambiguous(Exception):
    pass


def _option_tuples(schema: EngineSchema, arg: str) -> list[tuple[Option, str, str | None]]:
    out: list[tuple[Option, str, str | None]] = []
    if arg[1] == "-":
        if not schema.meta.get("allow_abbrev", True):
            return out
        prefix, _, explicit = arg.partition("=")
        exp = explicit if "=" in arg else None
        for s in schema.long_spellings:
            if s.startswith(prefix):
                out.append((schema.spellings[s], s, exp))
    else:
        short, short_exp = arg[:2], arg[2:]
        for s, opt in schema.spellings.items():
            if s == short:
                out.append((opt, s, short_exp))
            elif s.startswith(arg):
                out.append((opt, s, None))
    return out


def _classify(schema: EngineSchema, arg: str) -> tuple[Option | None, str, str | None, bool] | None:
    """argparse._parse_optional: None for a positional, else (option, spelling, explicit, abbrev)."""
    if not arg or arg[0] != "-":
        return None
    if arg in schema.spellings:
        return schema.spellings[arg], arg, None, False
    if len(arg) == 1:
        return None
    if "=" in arg:
        s, explicit = arg.split("=", 1)
        if s in schema.spellings:
            return schema.spellings[s], s, explicit, False
    tuples = _option_tuples(schema, arg)
    if len(tuples) > 1:
        raise _Ambiguous(", ".join(s for _, s, _ in tuples))
    if len(tuples) == 1:
        opt, s, explicit = tuples[0]
        abbrev = not (arg[1] != "-" and s == arg[:2])
        return opt, s, explicit, abbrev
    if _NEG_NUM_RE.match(arg):
        return None
    if " " in arg:
        return None
    return None, arg, None, False


def _nargs_pattern(nargs: Any, optional: bool) -> str:
    if nargs is None:
        p = "(-*A-*)"
    elif nargs == "?":
        p = "(-*A?-*)"
    elif nargs == "*":
        p = "(-*[A-]*)"
    elif nargs == "+":
        p = "(-*A[A-]*)"
    elif nargs == 0:
        p = "(-*-*)"
    else:
        p = "(-*%s-*)" % "-*".join("A" * int(nargs))
    if optional:
        p = p.replace("-*", "").replace("-", "")
    return p


def _match_count(nargs: Any, pattern: str) -> int | str:
    m = re.match(_nargs_pattern(nargs, True), pattern)
    if m is None:
        return {None: "expected one argument", "?": "expected at most one argument",
                "+": "expected at least one argument"}.get(
            nargs, f"expected {nargs} argument{'s' if nargs != 1 else ''}")
    return len(m.group(1))


def _parse(schema: EngineSchema, toks: list[_Tok], res: _Result) -> None:
    strings = [t.text for t in toks]
    pattern_parts: list[str] = []
    opt_at: dict[int, tuple[Option | None, str, str | None, bool]] = {}
    ambiguous: set[int] = set()
    after_dd = False
    for i, s in enumerate(strings):
        if after_dd:
            pattern_parts.append("A")
            continue
        if s == "--":
            pattern_parts.append("-")
            after_dd = True
            continue
        try:
            c = _classify(schema, s)
        except _Ambiguous as exc:
            res.error(toks[i].origin.split("=")[0], f"ambiguous abbreviation: could match {exc}",
                      "spell the option out in full")
            ambiguous.add(i)
            pattern_parts.append("O")
            opt_at[i] = (None, s, None, False)
            continue
        if c is None:
            pattern_parts.append("A")
        else:
            opt_at[i] = c
            pattern_parts.append("O")
    pattern = "".join(pattern_parts)
    positionals = [dict(p) for p in schema.positionals]
    extras: list[tuple[int, str]] = []
    last_opt_before: dict[int, _Occ] = {}

    def take(opt: Option, raw: list[str], spelling: str, tok: _Tok, abbrev: bool) -> _Occ | None:
        shown = tok.origin.split("=", 1)[0] if not tok.dotted else tok.dotted[0].split("=", 1)[0]
        if opt.action in ("help", "version"):
            res.error(opt.name, f"{shown} prints {opt.action} text and exits; vLLM would not serve",
                      f"remove {shown}")
            return None
        try:
            value = _values(schema, opt, raw)
        except _BadValue as exc:
            given = "" if shown == opt.name else f" (given as {shown})"
            res.error(opt.name, f"{exc}{given}", _fix_for_value(schema, opt))
            value = _BadValue
        if opt.is_flag:
            value = spelling not in opt.negative
        occ = _Occ(opt, shown, spelling, raw, value, abbrev, tok.dotted)
        res.occurrences.append(occ)
        return occ

    def consume_optional(start: int) -> int:
        opt, spelling, explicit, abbrev = opt_at[start]
        tok = toks[start]
        if opt is None:
            extras.append((start, strings[start]))
            return start + 1
        if explicit is not None:
            count = _match_count(opt.nargs, "A")
            if count == 0 and spelling[1] != "-" and explicit != "":
                # -xyz style: argparse tries to read more single-dash flags from the tail
                take(opt, [], spelling, tok, abbrev)
                nxt = "-" + explicit[0]
                if nxt in schema.spellings:
                    opt_at[start] = (schema.spellings[nxt], nxt, explicit[1:] or None, False)
                    return consume_optional(start)
                res.error(opt.name, f"{spelling} takes no value; ignored explicit argument "
                          f"{explicit!r}", f"write {spelling} alone")
                return start + 1
            if count == 1:
                take(opt, [explicit], spelling, tok, abbrev)
                return start + 1
            if isinstance(count, str):  # e.g. nargs=2 cannot take its values from `=`
                res.error(opt.name, f"{count} (`{tok.origin}` gives only one)",
                          f"write {opt.name} VALUE VALUE")
                return start + 1
            res.error(opt.name, f"{tok.origin.split('=')[0]} takes no value; ignored explicit "
                      f"argument {explicit!r}", _flag_fix(opt))
            return start + 1
        count = _match_count(opt.nargs, pattern[start + 1:])
        if isinstance(count, str):
            shown = tok.origin.split("=")[0]
            given = "" if shown == opt.name else f" (given as {shown})"
            res.error(opt.name, f"{count}{given}", f"give a value: {opt.name} VALUE")
            return start + 1
        stop = start + 1 + count
        occ = take(opt, strings[start + 1:stop], spelling, tok, abbrev)
        if occ is not None:
            last_opt_before[stop] = occ
        return stop

    def consume_positionals(start: int) -> int:
        sel = pattern[start:]
        counts: list[int] = []
        for n in range(len(positionals), 0, -1):
            pat = "".join(_nargs_pattern(p.get("nargs"), False) for p in positionals[:n])
            m = re.match(pat, sel)
            if m is not None:
                counts = [len(g) for g in m.groups()]
                break
        for p, c in zip(positionals, counts):
            got = strings[start:start + c]
            got = [g for g in got if g != "--"] if p.get("nargs") not in ("...", "A...") else got
            if p.get("dest") == "model_tag" and got:
                res.model = got[0]
            start += c
        del positionals[: len(counts)]
        return start

    start = 0
    max_opt = max(opt_at) if opt_at else -1
    while start <= max_opt:
        nxt = min(i for i in opt_at if i >= start)
        if start != nxt:
            end = consume_positionals(start)
            if end > start:
                start = end
                continue
            start = end
        if start not in opt_at:
            extras.extend((i, strings[i]) for i in range(start, nxt))
            start = nxt
        start = consume_optional(start)
    stop = consume_positionals(start)
    extras.extend((i, strings[i]) for i in range(stop, len(strings)))

    owner = -2  # index of the last unknown option: the values right after it are its own
    for i, s in extras:
        tok = toks[i]
        if i in opt_at or _option_like(s):
            if i not in ambiguous:
                _unknown_option(schema, tok.origin, res)
            owner = i
            continue
        if i == owner + 1:
            owner = i
            continue
        prev = last_opt_before.get(i)
        if prev is not None and prev.opt.is_flag:
            res.error(prev.opt.name, f"{prev.token} takes no value; {s!r} is left over",
                      _flag_fix(prev.opt))
        else:
            res.error(s, f"unexpected extra argument {s!r} (vLLM: unrecognized arguments)",
                      "remove it, or give it to the option it belongs to")


def _values(schema: EngineSchema, opt: Option, raw: list[str]) -> Any:
    """argparse._get_values: convert, then check choices."""
    raw = list(raw)
    if "--" in raw:
        raw.remove("--")
    if opt.is_flag:
        return None
    if not raw and opt.nargs == "?":
        value = opt.const
        if isinstance(value, str):
            value = _convert(schema, opt, value)
            _check_choice(opt, value)
        return value
    if len(raw) == 1 and opt.nargs in (None, "?"):
        value = _convert(schema, opt, raw[0])
        _check_choice(opt, value)
        return value
    values = [_convert(schema, opt, r) for r in raw]
    for v in values:
        _check_choice(opt, v)
    if opt.action == "lora-modules":
        _check_lora(values)
    return values


def _check_choice(opt: Option, value: Any) -> None:
    if opt.choices is not None and value not in opt.choices:
        shown = [c for c in opt.choices if c is not None]
        hint = _did_you_mean(str(value), [str(c) for c in shown]) if isinstance(value, str) else ""
        raise _BadValue(f"invalid choice {value!r} (choose from {', '.join(map(str, shown))}){hint}")


def _check_lora(values: list[Any]) -> None:
    for item in values:
        if item in (None, ""):
            continue
        if "=" in item and "," not in item:
            continue
        try:
            data = json.loads(item)
        except json.JSONDecodeError:
            raise _BadValue(f"invalid JSON format for --lora-modules: {item}") from None
        if not isinstance(data, dict) or not {"name", "path"} <= set(data):
            raise _BadValue(f"invalid fields for --lora-modules: {item}")


def _flag_fix(opt: Option) -> str:
    pos, neg = opt.spelling_for(False), opt.spelling_for(True)
    return f"write {pos} alone" + (f" (or {neg} to turn it off)" if neg else "")


def _fix_for_value(schema: EngineSchema, opt: Option) -> str | None:
    if opt.type in ("json", "dataclass-json", "json-or-str"):
        return f"quote a valid JSON object, e.g. {opt.name} '{{\"key\": 1}}'"
    if opt.choices:
        return "use one of: " + ", ".join(str(c) for c in opt.choices if c is not None)
    if opt.type in ("int", "human-int", "human-int-or-auto", "float", "port"):
        return f"give {opt.name} a number"
    return None


def _unknown_option(schema: EngineSchema, token: str, res: _Result) -> None:
    base = _dash_key(token.split("=", 1)[0]).split(".", 1)[0]
    name = base
    elsewhere = [v for v in supported_versions() if v != schema.version
                 and load_engine(v).lookup(base) is not None]
    if elsewhere:
        other = load_engine(elsewhere[-1]).lookup(base)
        assert other is not None
        counterpart = schema.by_dest.get(other.dest)
        fix = None
        if counterpart is not None:
            spelling = counterpart.spelling_for(base in other.negative) if other.is_flag else counterpart.name
            fix = f"vLLM {schema.version} spells it {spelling}"
        res.error(name, f"{base} is not a vLLM {schema.version} option (it exists in vLLM "
                  f"{', '.join(elsewhere)})", fix or f"remove {base} for vLLM {schema.version}")
        return
    import difflib

    close = difflib.get_close_matches(base, schema.long_spellings, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    res.error(name, f"unknown option {base} for vLLM {schema.version}{hint}",
              f"use {close[0]}" if close else "see `vllm serve --help=all` for the options")


# --------------------------------------------------------------------------- checks after parsing


def _namespace(res: _Result) -> dict[str, Any]:
    ns: dict[str, Any] = {}
    for occ in res.occurrences:
        if occ.value is _BadValue:
            continue
        if occ.opt.action == "append":
            ns.setdefault(occ.opt.dest, []).append(occ.value)
        else:
            ns[occ.opt.dest] = occ.value
    return ns


def _late_checks(schema: EngineSchema, res: _Result, ns: dict[str, Any]) -> None:
    v = schema.version
    backend = ns.get("attention_backend")
    if isinstance(backend, str) and backend.lower() != "auto":
        names = schema.late_values("attention_backends")
        if backend.upper() not in names:
            res.error("--attention-backend", f"unknown attention backend {backend!r} for vLLM {v}"
                      f"{_did_you_mean(backend.upper(), names)}",
                      "use auto or one of: " + ", ".join(names[:12]) + ", ...")
    kv = ns.get("kv_cache_dtype")
    if isinstance(kv, str) and schema.late_values("kv_cache_dtypes"):
        kvs = schema.late_values("kv_cache_dtypes")
        if kv not in kvs:
            res.error("--kv-cache-dtype", f"invalid KV cache dtype {kv!r} for vLLM {v}"
                      f"{_did_you_mean(kv, kvs)}", "use one of: " + ", ".join(kvs))
    rp = ns.get("reasoning_parser")
    if isinstance(rp, str) and rp:
        names = schema.late_values("reasoning_parsers")
        if rp not in names:
            extra = ""
            if rp.lower() == "none":
                extra = f" ('none' does not turn it off in vLLM {v}; leave the flag out)"
            res.error("--reasoning-parser", f"reasoning parser {rp!r} is not registered in vLLM "
                      f"{v}{extra}{_did_you_mean(rp, names)}",
                      "leave --reasoning-parser out" if extra else "use one of: " + ", ".join(names))
    tp = ns.get("tool_call_parser")
    auto = bool(ns.get("enable_auto_tool_choice"))
    if isinstance(tp, str) and tp:
        names = schema.late_values("tool_call_parsers")
        if tp not in names:
            msg = f"tool-call parser {tp!r} is not registered in vLLM {v}{_did_you_mean(tp, names)}"
            if auto:
                res.error("--tool-call-parser", msg, "use one of: " + ", ".join(names))
            else:
                res.warn("--tool-call-parser", msg + " (vLLM checks it only with "
                         "--enable-auto-tool-choice)", "fix the name or drop the flag")
    if "speculative_config" in ns:
        _check_speculative(schema, res, ns)
    # validate_parsed_serve_args (the checks that need no model), where the flags exist.
    rules = (
        ("enable_auto_tool_choice", "tool_call_parser", "--enable-auto-tool-choice requires --tool-call-parser"),
        ("enable_log_outputs", "enable_log_requests", "--enable-log-outputs requires --enable-log-requests"),
    )
    for flag, needs, msg in rules:
        if flag in schema.by_dest and ns.get(flag) and not ns.get(needs):
            res.error(schema.by_dest[flag].name, msg, f"add {schema.by_dest[needs].name}"
                      if needs in schema.by_dest else None)
    sse = ns.get("sse_keep_alive_interval")
    if isinstance(sse, (int, float)) and sse < 0:
        res.error("--sse-keep-alive-interval", "must be a non-negative integer (0 disables it)")
    if ns.get("enable_per_request_metrics") and ns.get("disable_log_stats"):
        res.error("--enable-per-request-metrics", "needs engine statistics logging",
                  "remove --disable-log-stats")
    efforts = schema.late_values("reasoning_efforts")
    rem = ns.get("reasoning_effort_map")
    if efforts and rem is not None:
        if not isinstance(rem, dict) or not all(isinstance(x, str) for x in rem.values()):
            res.error("--reasoning-effort-map", "must be a JSON object mapping reasoning efforts "
                      "to strings")
        elif sorted(set(rem) - set(efforts)):
            res.error("--reasoning-effort-map", f"unknown efforts {sorted(set(rem) - set(efforts))}; "
                      f"keys must be one of {list(efforts)}")
    tmpl = ns.get("chat_template")
    if isinstance(tmpl, str) and not any(c in tmpl for c in "{}\n"):
        if tmpl not in schema.late_values("builtin_chat_templates"):
            res.warn("--chat-template", f"{tmpl!r} is read as a file path: vLLM refuses to start "
                     "unless it exists on the machine that runs vLLM",
                     "give an absolute path that exists there, or the template text itself")


def _value(schema: EngineSchema, ns: dict[str, Any], dest: str) -> Any:
    """The parsed value, or vLLM's default when the option was not given."""
    if dest in ns:
        return ns[dest]
    opt = schema.by_dest.get(dest)
    return opt.default if opt is not None else None


def _grpc_rules(schema: EngineSchema, res: _Result, ns: dict[str, Any],
                env: Mapping[str, str] | None) -> None:
    """vLLM's validate_grpc_port_arg (serve): the Rust frontend's gRPC listener."""
    port = ns.get("grpc_port")
    if port is None or "grpc_port" not in schema.by_dest:
        return
    if ns.get("grpc"):
        res.error("--grpc-port", "--grpc and --grpc-port are mutually exclusive")
    rust = (env or {}).get("VLLM_USE_RUST_FRONTEND", "0")
    if env is None:
        res.warn("--grpc-port", "vLLM accepts --grpc-port only with VLLM_USE_RUST_FRONTEND=1 in "
                 "its environment", "set VLLM_USE_RUST_FRONTEND=1")
    elif not (rust.strip().isdigit() and int(rust) != 0):
        res.error("--grpc-port", "--grpc-port requires VLLM_USE_RUST_FRONTEND=1",
                  "set VLLM_USE_RUST_FRONTEND=1 in the environment")
    count = ns.get("api_server_count")
    if ns.get("headless") or (count is not None and count <= 0):
        res.error("--grpc-port", "--grpc-port needs an API server: remove --headless and "
                  "non-positive --api-server-count")
    if ns.get("data_parallel_multi_port_external_lb"):
        res.error("--grpc-port", "--grpc-port is incompatible with "
                  "--data-parallel-multi-port-external-lb")
    if isinstance(port, int) and not 0 <= port <= 65535:
        res.error("--grpc-port", "--grpc-port must be between 0 and 65535")
    elif port != 0 and port == _value(schema, ns, "port") and not ns.get("uds"):
        res.error("--grpc-port", "--grpc-port must differ from --port when HTTP uses TCP")


def _multi_port_rules(schema: EngineSchema, res: _Result, ns: dict[str, Any]) -> None:
    """vLLM's validate_multi_port_external_lb_args."""
    if not ns.get("data_parallel_multi_port_external_lb"):
        return
    name = "--data-parallel-multi-port-external-lb"
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
    for bad, why in problems:
        if bad:
            res.error(name, why)
            return
    if local > size:
        res.error(name, "--data-parallel-size-local cannot exceed --data-parallel-size")
    elif size % local:
        res.error(name, "--data-parallel-size must be divisible by --data-parallel-size-local")
    else:
        start = get("data_parallel_start_rank")
        if start is None:
            start = (get("node_rank") or 0) * local
        port, sup = get("port"), get("data_parallel_supervisor_port")
        if start + local > size:
            res.error(name, "multi-port supervised ranks would exceed --data-parallel-size")
        elif isinstance(port, int) and isinstance(sup, int) and port <= sup <= port + local - 1:
            res.error(name, f"--data-parallel-supervisor-port {sup} overlaps with the child rank "
                      f"ports {port}-{port + local - 1}")


def _check_speculative(schema: EngineSchema, res: _Result, ns: dict[str, Any]) -> None:
    spec = ns.get("speculative_config")
    if spec is None:
        return
    if not isinstance(spec, dict):
        res.error("--speculative-config", f"must be a JSON object, got {type(spec).__name__}",
                  "--speculative-config '{\"method\": \"mtp\", \"num_speculative_tokens\": 1}'")
        return
    keys = schema.late_values("speculative_config_keys")
    if keys:
        for k in spec:
            if str(k).replace("-", "_") not in keys:
                res.error("--speculative-config", f"unknown key {k!r} in --speculative-config"
                          f"{_did_you_mean(str(k), keys)}", "use the SpeculativeConfig field names")
    for flag, key in (("spec_method", "method"), ("spec_model", "model"),
                      ("spec_tokens", "num_speculative_tokens")):
        if ns.get(flag) is not None and key in spec:
            res.error(schema.by_dest[flag].name, f"{schema.by_dest[flag].name} and "
                      f"--speculative-config['{key}'] are mutually exclusive", "give it only once")
    method = spec.get("method")
    if method is None:
        return
    methods = schema.late_values("speculative_methods")
    if not isinstance(method, str) or method not in methods:
        elsewhere = [v for v in supported_versions() if v != schema.version
                     and method in load_engine(v).late_values("speculative_methods")]
        note = f" (it exists in vLLM {', '.join(elsewhere)})" if elsewhere else ""
        res.error("--speculative-config", f"speculative method {method!r} is not supported by "
                  f"vLLM {schema.version}{note}{_did_you_mean(str(method), methods)}",
                  "use one of: " + ", ".join(methods))
    elif method in schema.late.get("speculative_methods", {}).get("mtp_aliases", ()):
        res.warn("--speculative-config", f"method {method!r} is deprecated; vLLM rewrites it to "
                 "'mtp'", "write \"method\": \"mtp\"")


def _deprecation_fix(opt: Option) -> str:
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


def _usage_checks(schema: EngineSchema, res: _Result) -> None:
    by_dest: dict[str, list[_Occ]] = {}
    for occ in res.occurrences:
        by_dest.setdefault(occ.opt.dest, []).append(occ)
        if occ.abbreviated:
            res.warn(occ.opt.name, f"{occ.token} is an abbreviation of {occ.spelling}; vLLM accepts "
                     "it only while no newer option shares the prefix", f"write {occ.spelling}")
    for dest, occs in by_dest.items():
        opt = occs[0].opt
        if opt.deprecated:
            kind = "has no effect" if opt.no_effect else "is deprecated"
            res.warn(opt.name, f"{opt.name} {kind} in vLLM {schema.version} (its help: "
                     f"\"{opt.deprecated}\")", _deprecation_fix(opt))
        if len(occs) > 1 and opt.action != "append":
            dotted = [o for o in occs if o.dotted]
            if dotted and len(dotted) < len(occs):
                res.warn(opt.name, f"{', '.join(dotted[0].dotted)} replaces the whole {opt.name} "
                         "value given earlier (vLLM does not merge them)",
                         f"put every key into one {opt.name} JSON")
            else:
                res.warn(opt.name, f"{opt.name} is given {len(occs)} times; vLLM keeps the last "
                         f"({' '.join([occs[-1].token, *occs[-1].raw])})", "give it once")


def _meaning_checks(schema: EngineSchema, res: _Result) -> None:
    seen: set[str] = set()
    for occ in res.occurrences:
        if occ.opt.dest in seen:
            continue
        seen.add(occ.opt.dest)
        for other_v in _versions():
            if other_v == schema.version:
                continue
            other_schema = _load(other_v)
            other = other_schema.lookup(occ.spelling)
            if other is None:
                continue
            why = _meaning_change(schema, occ, other_schema, other)
            if why:
                res.warn(occ.opt.name, f"{occ.token} means something else in vLLM {other_v}: {why}",
                         f"check the value is meant for vLLM {schema.version}")


def _meaning_change(schema: EngineSchema, occ: _Occ, other_schema: EngineSchema,
                    other: Option) -> str | None:
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
        try:
            here = _values(schema, opt, occ.raw)
        except _BadValue:
            here = _BadValue
        try:
            there = _values(other_schema, other, occ.raw)
        except _BadValue:
            there = _BadValue
        if here != there and here is not _BadValue and there is not _BadValue:
            return f"the value {' '.join(occ.raw)!r} is read as {there!r} there, {here!r} here"
    return None


# --------------------------------------------------------------------------- public API


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
    res = _Result()
    if any(not isinstance(a, str) for a in argv):
        raise TypeError("check_argv: every argv element must be a str")
    toks = _preprocess(argv, res)
    _parse(schema, toks, res)
    ns = _namespace(res)
    _usage_checks(schema, res)
    _late_checks(schema, res, ns)
    _grpc_rules(schema, res, ns, env)
    _multi_port_rules(schema, res, ns)
    _meaning_checks(schema, res)
    if res.model is None and not res.config_file:
        default = schema.by_dest.get("model")
        res.warn("model", "no model given; vLLM would serve its default"
                 + (f" ({default.default})" if default and default.default else ""),
                 "put the model first: vllm serve MODEL ...")
    return res.findings


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


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


def _option_like(tok: str) -> bool:
    return tok.startswith("-") and tok != "-" and not _NEG_NUM_RE.match(tok) and " " not in tok


def _resolve(schema: EngineSchema, name: str) -> tuple[Option | None, str | None]:
    """Exact or unique-prefix match of a (dash-normalised) option name."""
    if name in schema.spellings:
        return schema.spellings[name], name
    if name.startswith("--"):
        hits = [s for s in schema.long_spellings if s.startswith(name)]
        if len({schema.spellings[h].dest for h in hits}) == 1 and len(hits) == 1:
            return schema.spellings[hits[0]], hits[0]
    return None, None


def _count_values(opt: Option, argv: Sequence[str], i: int, explicit: bool) -> int:
    if explicit or opt.is_flag:
        return 0
    rest = argv[i + 1:]
    if opt.nargs is None:
        return 1 if rest and not _option_like(rest[0]) else 0
    if opt.nargs == "?":
        return 1 if rest and not _option_like(rest[0]) else 0
    if opt.nargs in ("+", "*"):
        n = 0
        while n < len(rest) and not _option_like(rest[n]):
            n += 1
        return n
    return min(int(opt.nargs), len(rest))


def translate_argv(argv: Sequence[str], version: str = DEFAULT_VERSION) -> tuple[list[str], list[str]]:
    """Rewrite an argv so that the given vLLM accepts it; return (new argv, notes on what changed).

    Translates what has an exact counterpart: an option spelled differently in this version (same
    setting, same polarity), a flag this version ignores (dropped), an abbreviation (spelled out),
    a deprecated MTP method alias this version no longer knows (-> "mtp"). Raises ProfileError
    for what cannot be translated (an option this version lacks with no counterpart, or anything
    the version still rejects afterwards).
    """
    schema = load_engine(version)
    v = schema.version
    others = [load_engine(o) for o in supported_versions() if o != v]
    out: list[str] = []
    notes: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not _option_like(tok) or tok.startswith("-O"):
            out.append(tok)
            i += 1
            continue
        name, eq, _ = tok.partition("=")
        norm = _dash_key(name)
        base, dot, subkey = norm.partition(".")
        opt, spelling = _resolve(schema, base)
        if opt is not None:
            n = 0 if dot else _count_values(opt, argv, i, bool(eq))
            if dot and not eq:
                n = 1
            chunk = list(argv[i:i + 1 + n])
            if opt.no_effect:
                notes.append(f"dropped `{' '.join(chunk)}`: vLLM {v} ignores {opt.name} "
                             f"({opt.deprecated})" + _choice_note(opt, chunk[1:] or [tok.partition('=')[2]]))
                i += 1 + n
                continue
            if spelling != base and spelling is not None:
                new_name = spelling + (dot + subkey if dot else "")
                chunk[0] = new_name + (tok[len(name):] if eq else "")
                notes.append(f"spelled out {name} as {new_name}")
            if opt.dest == "speculative_config" and not dot and len(chunk) > 1:
                chunk[1] = _translate_method(schema, chunk[1], notes)
            out.extend(chunk)
            i += 1 + n
            continue
        other_opt = None
        other_schema = None
        for o in reversed(others):
            cand, _sp = _resolve(o, base)
            if cand is not None:
                other_opt, other_schema = cand, o
                break
        if other_opt is None or other_schema is None:
            out.append(tok)  # unknown everywhere: check_argv reports it below
            i += 1
            continue
        n = 0 if dot else _count_values(other_opt, argv, i, bool(eq))
        if dot and not eq:
            n = 1
        chunk = list(argv[i:i + 1 + n])
        counterpart = schema.by_dest.get(other_opt.dest)
        if counterpart is not None:
            negative = base in other_opt.negative or _resolve(other_schema, base)[1] in other_opt.negative
            new = counterpart.spelling_for(negative) if other_opt.is_flag else counterpart.name
            if new is None:
                raise ProfileError(f"{base} (vLLM {other_schema.version}) has no spelling in vLLM {v}")
            chunk[0] = new + (dot + subkey if dot else "") + (tok[len(name):] if eq else "")
            notes.append(f"{base} is spelled {new} in vLLM {v}")
            out.extend(chunk)
        elif other_opt.no_effect:
            notes.append(f"dropped `{' '.join(chunk)}`: it had no effect in vLLM "
                         f"{other_schema.version} and vLLM {v} does not know it")
        else:
            raise ProfileError(f"{base} is a vLLM {other_schema.version} option with no counterpart "
                               f"in vLLM {v}; remove it or target vLLM {other_schema.version}")
        i += 1 + n
    ensure_valid(out, v)
    return out, notes


def _choice_note(opt: Option, values: list[str]) -> str:
    if opt.choices and values and values[0] not in [str(c) for c in opt.choices if c is not None]:
        return (f"; {values[0]!r} is not even an accepted value there (choose from "
                f"{', '.join(str(c) for c in opt.choices if c is not None)})")
    return ""


def _translate_method(schema: EngineSchema, raw: str, notes: list[str]) -> str:
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if not isinstance(spec, dict) or not isinstance(spec.get("method"), str):
        return raw
    method = spec["method"]
    methods = schema.late_values("speculative_methods")
    if method in methods or "mtp" not in methods:
        return raw
    aliases = {a for v in supported_versions()
               for a in load_engine(v).late.get("speculative_methods", {}).get("mtp_aliases", ())}
    if method not in aliases:
        return raw
    spec["method"] = "mtp"
    notes.append(f"speculative method {method!r} is not known to vLLM {schema.version}; "
                 "it was an alias of 'mtp', so 'mtp' is used")
    return json.dumps(spec, separators=(",", ":"))


@dataclass(frozen=True)
class EngineDiff:
    """What differs between two vLLM versions' `vllm serve` (a -> b)."""

    a: str
    b: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    spellings_added: Mapping[str, tuple[str, ...]]
    spellings_removed: Mapping[str, tuple[str, ...]]
    changed: Mapping[str, Mapping[str, tuple[Any, Any]]]
    deprecated: Mapping[str, str]
    late: Mapping[str, Mapping[str, tuple[str, ...]]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.a,
            "to": self.b,
            "added": list(self.added),
            "removed": list(self.removed),
            "spellings_added": {k: list(v) for k, v in self.spellings_added.items()},
            "spellings_removed": {k: list(v) for k, v in self.spellings_removed.items()},
            "changed": {k: {f: [o, n] for f, (o, n) in d.items()} for k, d in self.changed.items()},
            "deprecated": dict(self.deprecated),
            "late": {k: {f: list(x) for f, x in d.items()} for k, d in self.late.items()},
        }


_DIFF_FIELDS = ("type", "optional", "nargs", "choices", "default", "dest", "no_effect", "deprecated")


def diff_versions(a: str, b: str) -> EngineDiff:
    """Flags added/removed, spellings added/removed, per-flag changes and late-validated values."""
    sa, sb = load_engine(a), load_engine(b)
    added = tuple(sorted(set(sb.options) - set(sa.options)))
    removed = tuple(sorted(set(sa.options) - set(sb.options)))
    sp_add: dict[str, tuple[str, ...]] = {}
    sp_rm: dict[str, tuple[str, ...]] = {}
    changed: dict[str, dict[str, tuple[Any, Any]]] = {}
    deprecated: dict[str, str] = {}
    for name in sorted(set(sa.options) & set(sb.options)):
        oa, ob = sa.options[name], sb.options[name]
        plus = tuple(sorted(set(ob.flags) - set(oa.flags)))
        minus = tuple(sorted(set(oa.flags) - set(ob.flags)))
        if plus:
            sp_add[name] = plus
        if minus:
            sp_rm[name] = minus
        d: dict[str, tuple[Any, Any]] = {}
        for f in _DIFF_FIELDS:
            x, y = getattr(oa, f), getattr(ob, f)
            if f == "choices":
                x = list(x) if x is not None else None
                y = list(y) if y is not None else None
            if x != y:
                d[f] = (x, y)
        if d:
            changed[name] = d
        if ob.deprecated and not oa.deprecated:
            deprecated[name] = ob.deprecated
    late: dict[str, dict[str, tuple[str, ...]]] = {}
    for key in sorted(set(sa.late) | set(sb.late)):
        va, vb = set(sa.late_values(key)), set(sb.late_values(key))
        if va != vb:
            late[key] = {"added": tuple(sorted(vb - va)), "removed": tuple(sorted(va - vb))}
    return EngineDiff(sa.version, sb.version, added, removed, sp_add, sp_rm, changed, deprecated, late)
