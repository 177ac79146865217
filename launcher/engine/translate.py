"""translate_argv: rewrite an argv written for one vLLM version so that another accepts it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from launcher.engine.check import ensure_valid
from launcher.engine.parsing import option_like
from launcher.engine.schemas import DEFAULT_VERSION, EngineSchema, Option, dash_key, load_engine, supported_versions
from launcher.errors import ProfileError


def translate_argv(argv: Sequence[str], version: str = DEFAULT_VERSION) -> tuple[list[str], list[str]]:
    """Rewrite an argv so that the given vLLM accepts it; return (new argv, notes on what changed).

    Translates what has an exact counterpart: an option spelled differently in this version (same
    setting, same polarity), a flag this version ignores (dropped), an abbreviation (spelled out),
    a deprecated MTP method alias this version no longer knows (-> "mtp"). Raises ProfileError
    for what cannot be translated (an option this version lacks with no counterpart, or anything
    the version still rejects afterwards).
    """
    t = _Translation(load_engine(version), list(argv))
    i = 0
    while i < len(argv):
        i = t.step(i)
    ensure_valid(t.out, t.schema.version)
    return t.out, t.notes


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
    if opt.nargs in (None, "?"):
        return 1 if rest and not option_like(rest[0]) else 0
    if opt.nargs in ("+", "*"):
        n = 0
        while n < len(rest) and not option_like(rest[n]):
            n += 1
        return n
    return min(int(opt.nargs), len(rest))


class _Token:
    """One option token of the argv: `--name.sub=value` split up."""

    __slots__ = ("tok", "name", "eq", "base", "dot", "subkey")

    def __init__(self, tok: str) -> None:
        self.tok = tok
        self.name, eq, _ = tok.partition("=")  # name: before `=`
        self.eq = bool(eq)
        self.base, self.dot, self.subkey = dash_key(self.name).partition(".")  # base: dash-normalised, before `.`

    def renamed(self, new: str) -> str:
        """The token with its option name replaced, keeping `.sub` and `=value`."""
        return new + (self.dot + self.subkey if self.dot else "") + (self.tok[len(self.name):] if self.eq else "")


class _Translation:
    """The argv being rewritten for one schema: what came out so far and the notes."""

    def __init__(self, schema: EngineSchema, argv: list[str]) -> None:
        self.schema = schema
        self.argv = argv
        self.out: list[str] = []
        self.notes: list[str] = []
        self.others = [load_engine(o) for o in supported_versions() if o != schema.version]

    def _chunk(self, opt: Option, i: int, t: _Token) -> list[str]:
        """The option token and the values that belong to it."""
        n = 1 if t.dot and not t.eq else 0 if t.dot else _count_values(opt, self.argv, i, t.eq)
        return list(self.argv[i:i + 1 + n])

    def step(self, i: int) -> int:
        """Translate the argv from index i; returns the index after what was consumed."""
        tok = self.argv[i]
        if not option_like(tok) or tok.startswith("-O"):
            self.out.append(tok)
            return i + 1
        t = _Token(tok)
        opt, spelling = _resolve(self.schema, t.base)
        if opt is not None:
            chunk = self._chunk(opt, i, t)
            self._known(opt, spelling, t, chunk)
            return i + len(chunk)
        for other_schema in reversed(self.others):
            other, _sp = _resolve(other_schema, t.base)
            if other is not None:
                chunk = self._chunk(other, i, t)
                self._foreign(other_schema, other, t, chunk)
                return i + len(chunk)
        self.out.append(tok)  # unknown everywhere: check_argv reports it afterwards
        return i + 1

    def _known(self, opt: Option, spelling: str | None, t: _Token, chunk: list[str]) -> None:
        """An option this version has: drop it if it has no effect, spell it out, fix MTP aliases."""
        v = self.schema.version
        if opt.no_effect:
            self.notes.append(f"dropped `{' '.join(chunk)}`: vLLM {v} ignores {opt.name} "
                              f"({opt.deprecated})" + _choice_note(opt, chunk[1:] or [t.tok.partition('=')[2]]))
            return
        if spelling != t.base and spelling is not None:
            chunk[0] = t.renamed(spelling)
            self.notes.append(f"spelled out {t.name} as {spelling + (t.dot + t.subkey if t.dot else '')}")
        if opt.dest == "speculative_config" and not t.dot and len(chunk) > 1:
            chunk[1] = _translate_method(self.schema, chunk[1], self.notes)
        self.out.extend(chunk)

    def _foreign(self, other_schema: EngineSchema, other: Option, t: _Token, chunk: list[str]) -> None:
        """An option of another version: its counterpart here, dropped when it did nothing, or refused."""
        v = self.schema.version
        counterpart = self.schema.by_dest.get(other.dest)
        if counterpart is not None:
            negative = t.base in other.negative or _resolve(other_schema, t.base)[1] in other.negative
            new = counterpart.spelling_for(negative) if other.is_flag else counterpart.name
            if new is None:
                raise ProfileError(f"{t.base} (vLLM {other_schema.version}) has no spelling in vLLM {v}")
            chunk[0] = t.renamed(new)
            self.notes.append(f"{t.base} is spelled {new} in vLLM {v}")
            self.out.extend(chunk)
        elif other.no_effect:
            self.notes.append(f"dropped `{' '.join(chunk)}`: it had no effect in vLLM "
                              f"{other_schema.version} and vLLM {v} does not know it")
        else:
            raise ProfileError(f"{t.base} is a vLLM {other_schema.version} option with no counterpart "
                               f"in vLLM {v}; remove it or target vLLM {other_schema.version}")


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
