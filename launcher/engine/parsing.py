"""Python 3.11 argparse, as `vllm serve`'s parser runs it, over the preprocessed tokens.

A port of argparse's `_parse_known_args` for one subparser whose actions come from the engine
schema: prefix abbreviations (`allow_abbrev`), `--flag=value`, single-dash clusters, nargs
patterns, positionals (the model), type conversion and choices. Unlike argparse it does not stop at
the first problem: every problem becomes a Finding.
"""

from __future__ import annotations

import re
from typing import Any

from launcher.engine.findings import Occurrence, Result, Token
from launcher.engine.schemas import EngineSchema, Option, dash_key, load_engine, supported_versions
from launcher.engine.values import BadValue, values

NEG_NUM_RE = re.compile(r"^-\d+$|^-\d*\.\d+$")

# (option or None for an unknown one, the spelling matched, the explicit `=value`, abbreviated?)
Classified = tuple[Option | None, str, str | None, bool]


class Ambiguous(Exception):
    pass


def option_like(tok: str) -> bool:
    return tok.startswith("-") and tok != "-" and not NEG_NUM_RE.match(tok) and " " not in tok


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


def classify(schema: EngineSchema, arg: str) -> Classified | None:
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
        raise Ambiguous(", ".join(s for _, s, _ in tuples))
    if len(tuples) == 1:
        opt, spelling, value = tuples[0]
        return opt, spelling, value, not (arg[1] != "-" and spelling == arg[:2])
    if NEG_NUM_RE.match(arg) or " " in arg:
        return None
    return None, arg, None, False


def nargs_pattern(nargs: Any, optional: bool) -> str:
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


def match_count(nargs: Any, pattern: str) -> int | str:
    """How many of the following strings an option takes, or argparse's error text."""
    m = re.match(nargs_pattern(nargs, True), pattern)
    if m is None:
        return {None: "expected one argument", "?": "expected at most one argument",
                "+": "expected at least one argument"}.get(
            nargs, f"expected {nargs} argument{'s' if nargs != 1 else ''}")
    return len(m.group(1))


def flag_fix(opt: Option) -> str:
    pos, neg = opt.spelling_for(False), opt.spelling_for(True)
    return f"write {pos} alone" + (f" (or {neg} to turn it off)" if neg else "")


def fix_for_value(opt: Option) -> str | None:
    if opt.type in ("json", "dataclass-json", "json-or-str"):
        return f"quote a valid JSON object, e.g. {opt.name} '{{\"key\": 1}}'"
    if opt.choices:
        return "use one of: " + ", ".join(str(c) for c in opt.choices if c is not None)
    if opt.type in ("int", "human-int", "human-int-or-auto", "float", "port"):
        return f"give {opt.name} a number"
    return None


def unknown_option(schema: EngineSchema, token: str, res: Result) -> None:
    base = dash_key(token.split("=", 1)[0]).split(".", 1)[0]
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
        res.error(base, f"{base} is not a vLLM {schema.version} option (it exists in vLLM "
                  f"{', '.join(elsewhere)})", fix or f"remove {base} for vLLM {schema.version}")
        return
    import difflib

    close = difflib.get_close_matches(base, schema.long_spellings, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    res.error(base, f"unknown option {base} for vLLM {schema.version}{hint}",
              f"use {close[0]}" if close else "see `vllm serve --help=all` for the options")


def parse(schema: EngineSchema, toks: list[Token], res: Result) -> None:
    """Run the argparse port over the tokens; occurrences and findings go to `res`."""
    _Parser(schema, toks, res).run()


class _Parser:
    """argparse._parse_known_args for one parser, its state as attributes."""

    def __init__(self, schema: EngineSchema, toks: list[Token], res: Result) -> None:
        self.schema = schema
        self.toks = toks
        self.res = res
        self.strings = [t.text for t in toks]
        self.opt_at: dict[int, Classified] = {}
        self.ambiguous: set[int] = set()
        self.positionals = [dict(p) for p in schema.positionals]
        self.extras: list[tuple[int, str]] = []
        self.last_opt_before: dict[int, Occurrence] = {}
        self.pattern = self._classify_all()

    def _classify_all(self) -> str:
        """The `O`/`A`/`-` pattern string argparse matches nargs against."""
        parts: list[str] = []
        after_dd = False
        for i, s in enumerate(self.strings):
            if after_dd:
                parts.append("A")
                continue
            if s == "--":
                parts.append("-")
                after_dd = True
                continue
            try:
                c = classify(self.schema, s)
            except Ambiguous as exc:
                self.res.error(self.toks[i].origin.split("=")[0], f"ambiguous abbreviation: could match {exc}",
                               "spell the option out in full")
                self.ambiguous.add(i)
                c = (None, s, None, False)
            if c is None:
                parts.append("A")
            else:
                self.opt_at[i] = c
                parts.append("O")
        return "".join(parts)

    def run(self) -> None:
        start = 0
        max_opt = max(self.opt_at) if self.opt_at else -1
        while start <= max_opt:
            nxt = min(i for i in self.opt_at if i >= start)
            if start != nxt:
                end = self._consume_positionals(start)
                if end > start:
                    start = end
                    continue
            if start not in self.opt_at:
                self.extras.extend((i, self.strings[i]) for i in range(start, nxt))
                start = nxt
            start = self._consume_optional(start)
        stop = self._consume_positionals(start)
        self.extras.extend((i, self.strings[i]) for i in range(stop, len(self.strings)))
        self._report_extras()

    def _take(self, opt: Option, raw: list[str], spelling: str, tok: Token, abbrev: bool) -> Occurrence | None:
        shown = tok.origin.split("=", 1)[0] if not tok.dotted else tok.dotted[0].split("=", 1)[0]
        if opt.action in ("help", "version"):
            self.res.error(opt.name, f"{shown} prints {opt.action} text and exits; vLLM would not serve",
                           f"remove {shown}")
            return None
        try:
            value = values(self.schema, opt, raw)
        except BadValue as exc:
            given = "" if shown == opt.name else f" (given as {shown})"
            self.res.error(opt.name, f"{exc}{given}", fix_for_value(opt))
            value = BadValue
        if opt.is_flag:
            value = spelling not in opt.negative
        occ = Occurrence(opt, shown, spelling, raw, value, abbrev, tok.dotted)
        self.res.occurrences.append(occ)
        return occ

    def _consume_optional(self, start: int) -> int:
        opt, spelling, explicit, abbrev = self.opt_at[start]
        tok = self.toks[start]
        if opt is None:
            self.extras.append((start, self.strings[start]))
            return start + 1
        if explicit is not None:
            return self._consume_explicit(start, opt, spelling, explicit, abbrev)
        count = match_count(opt.nargs, self.pattern[start + 1:])
        if isinstance(count, str):
            shown = tok.origin.split("=")[0]
            given = "" if shown == opt.name else f" (given as {shown})"
            self.res.error(opt.name, f"{count}{given}", f"give a value: {opt.name} VALUE")
            return start + 1
        stop = start + 1 + count
        occ = self._take(opt, self.strings[start + 1:stop], spelling, tok, abbrev)
        if occ is not None:
            self.last_opt_before[stop] = occ
        return stop

    def _consume_explicit(self, start: int, opt: Option, spelling: str, explicit: str, abbrev: bool) -> int:
        """An option with its value in the same string: `--x=v`, or `-xv` / `-xyz` single-dash forms."""
        tok = self.toks[start]
        count = match_count(opt.nargs, "A")
        if count == 0 and spelling[1] != "-" and explicit != "":
            # -xyz style: argparse tries to read more single-dash flags from the tail
            self._take(opt, [], spelling, tok, abbrev)
            nxt = "-" + explicit[0]
            if nxt in self.schema.spellings:
                self.opt_at[start] = (self.schema.spellings[nxt], nxt, explicit[1:] or None, False)
                return self._consume_optional(start)
            self.res.error(opt.name, f"{spelling} takes no value; ignored explicit argument "
                           f"{explicit!r}", f"write {spelling} alone")
            return start + 1
        if count == 1:
            self._take(opt, [explicit], spelling, tok, abbrev)
        elif isinstance(count, str):  # e.g. nargs=2 cannot take its values from `=`
            self.res.error(opt.name, f"{count} (`{tok.origin}` gives only one)", f"write {opt.name} VALUE VALUE")
        else:
            self.res.error(opt.name, f"{tok.origin.split('=')[0]} takes no value; ignored explicit "
                           f"argument {explicit!r}", flag_fix(opt))
        return start + 1

    def _consume_positionals(self, start: int) -> int:
        sel = self.pattern[start:]
        counts: list[int] = []
        for n in range(len(self.positionals), 0, -1):
            pat = "".join(nargs_pattern(p.get("nargs"), False) for p in self.positionals[:n])
            m = re.match(pat, sel)
            if m is not None:
                counts = [len(g) for g in m.groups()]
                break
        for p, c in zip(self.positionals, counts):  # noqa: B905 (argparse zips the shorter)
            got = self.strings[start:start + c]
            got = [g for g in got if g != "--"] if p.get("nargs") not in ("...", "A...") else got
            if p.get("dest") == "model_tag" and got:
                self.res.model = got[0]
            start += c
        del self.positionals[: len(counts)]
        return start

    def _report_extras(self) -> None:
        owner = -2  # index of the last unknown option: the values right after it are its own
        for i, s in self.extras:
            tok = self.toks[i]
            if i in self.opt_at or option_like(s):
                if i not in self.ambiguous:
                    unknown_option(self.schema, tok.origin, self.res)
                owner = i
                continue
            if i == owner + 1:
                owner = i
                continue
            prev = self.last_opt_before.get(i)
            if prev is not None and prev.opt.is_flag:
                self.res.error(prev.opt.name, f"{prev.token} takes no value; {s!r} is left over", flag_fix(prev.opt))
            else:
                self.res.error(s, f"unexpected extra argument {s!r} (vLLM: unrecognized arguments)",
                               "remove it, or give it to the option it belongs to")
