"""Engine schemas: the `launcher/engines/vllm-<version>.json` files, shipped or learned, as typed objects.

A schema is shipped in the package (`launcher/engines/`) or learned from an installed vLLM by
`launcher engines learn` into the user's cache (`$XDG_CACHE_HOME/launcher/engines/`, default
`~/.cache/launcher/engines/`). Both hold the same format; for a version that has both, the
shipped file wins.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from launcher.errors import ProfileError

DEFAULT_VERSION = "0.33.0"
VERSION_KEY = "vllm.version"  # the profile key every version message names
SHIPPED = "shipped"
LEARNED = "learned"
_PACKAGE = "launcher.engines"
# A version launcher keeps a schema for: X.Y.Z and a PEP 440 pre/post/dev suffix, nothing that names another path.
SAFE_VERSION = re.compile(r"\d{1,4}\.\d{1,4}\.\d{1,4}(?:[.-]?[A-Za-z0-9]{1,20}){0,4}")
_FILE_RE = re.compile(r"^vllm-(" + SAFE_VERSION.pattern + r"(?:\+[A-Za-z0-9.]{1,40})?)\.json$")
_RELEASE_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


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
    origin: str = SHIPPED  # "shipped" (in the package) or "learned" (the user's cache)
    path: str = ""

    def late_values(self, key: str) -> tuple[str, ...]:
        return tuple(self.late.get(key, {}).get("values", ()))

    def lookup(self, spelling: str) -> Option | None:
        """The option an exact spelling (underscores allowed) names, or None."""
        return self.spellings.get(dash_key(spelling))


def dash_key(token: str) -> str:
    """FlexibleArgumentParser: `_` -> `-` between the leading `--` and the first `.`."""
    if not token.startswith("--"):
        return token
    head, dot, rest = token[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + rest


def schema_from_json(data: Mapping[str, Any], version: str, origin: str = SHIPPED, path: str = "") -> EngineSchema:
    options = {name: Option.from_json(name, d) for name, d in data["options"].items()}
    spellings = {s: o for o in options.values() for s in o.flags}
    return EngineSchema(
        version=version,
        meta=data.get("meta", {}),
        options=options,
        spellings=spellings,
        by_dest={o.dest: o for o in options.values()},
        positionals=tuple(data.get("positionals", ())),
        dataclasses=data.get("dataclasses", {}),
        late=data.get("late", {}),
        long_spellings=tuple(sorted(s for s in spellings if s.startswith("--"))),
        origin=origin,
        path=path,
    )


# --------------------------------------------------------------------------- where the files are


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def schema_file_name(version: str) -> str:
    return f"vllm-{version}.json"


def learned_dir() -> Path:
    """Where `launcher engines learn` keeps schemas: $XDG_CACHE_HOME/launcher/engines (~/.cache/...)."""
    return Path(_learned_folder())


def _learned_folder() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "launcher", "engines")


def _shipped_dir() -> Any:
    """The packaged schema folder: a plain directory in every normal install; importlib.resources
    (slower to import) only when launcher runs from a zip."""
    here = Path(__file__).resolve().parent.parent / "engines"
    if here.is_dir():
        return here
    from importlib import resources

    return resources.files(_PACKAGE)


def _scan(folder: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    try:
        entries = list(folder.iterdir())
    except OSError:  # no cache folder yet, or unreadable
        return found
    for entry in entries:
        m = _FILE_RE.match(entry.name)
        if m:
            found[m.group(1)] = entry
    return found


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    return _scan(_shipped_dir())


class _Known:
    """What launcher knows for one state of the learned folder (a plain class: cheaper to import than a dataclass)."""

    __slots__ = ("files", "versions", "learned")

    def __init__(self, files: Mapping[str, tuple[str, Any]], versions: tuple[str, ...], learned: tuple[str, ...]) -> None:
        self.files = files  # version -> (origin, file); shipped wins
        self.versions = versions  # oldest first
        self.learned = learned  # learned versions no shipped schema covers


@functools.lru_cache(maxsize=4)
def _known_in(folder: str, stamp: int | None) -> _Known:
    shipped = _shipped()
    # A shipped schema wins for its release, whatever local label a learned file carries (0.33.0+cu130).
    learned = {v: p for v, p in _scan(Path(folder)).items() if v not in shipped and v.split("+", 1)[0] not in shipped}
    files = {**{v: (LEARNED, p) for v, p in learned.items()}, **{v: (SHIPPED, p) for v, p in shipped.items()}}
    return _Known(files, tuple(sorted(files, key=version_key)), tuple(sorted(learned, key=version_key)))


def _known() -> _Known:
    """Listed again whenever the learned folder changes (a file added or replaced: its mtime moves)."""
    folder = _learned_folder()
    try:
        stamp: int | None = os.stat(folder).st_mtime_ns
    except OSError:
        stamp = None
    return _known_in(folder, stamp)


def forget_learned() -> None:
    """Drop the cached listings of learned folders."""
    _known_in.cache_clear()


def shipped_versions() -> list[str]:
    """vLLM versions whose schema ships with launcher, oldest first."""
    return sorted(_shipped(), key=version_key)


def learned_versions() -> list[str]:
    """Versions learned from an installed vLLM that no shipped schema covers, oldest first."""
    return list(_known().learned)


def supported_versions() -> list[str]:
    """Every vLLM version launcher has a schema for (shipped or learned), oldest first."""
    return list(_known().versions)


def origin_of(version: str) -> str | None:
    """"shipped", "learned", or None when launcher has no schema for that exact version."""
    hit = _known().files.get(version)
    return hit[0] if hit else None


# --------------------------------------------------------------------------- versions


def _exact(version: str, known: list[str]) -> str | None:
    """The known version a string names: exact, `v` prefix, a local label (`+cu130`), or a unique X.Y."""
    v = str(version).strip().removeprefix("v")
    if v in known:
        return v
    base = v.split("+", 1)[0]
    if base in known:
        return base
    matches = [k for k in known if k.startswith(base + ".")]
    return matches[0] if len(matches) == 1 else None


def resolve_version(version: str) -> str:
    """Normalise `v0.33.0`, `0.33.0+cu130`, `0.33` (when unique) to a known version, or raise ProfileError."""
    known = list(_known().versions)
    hit = _exact(version, known)
    if hit is not None:
        return hit
    import difflib

    v = str(version).strip().removeprefix("v")
    close = difflib.get_close_matches(v, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ProfileError(
        f"{VERSION_KEY}: vLLM {version!r} is not supported (launcher knows {', '.join(known)}; "
        f"`launcher engines learn` adds the vLLM installed here){hint}"
    )


class NearestVersion(NamedTuple):
    """The known version closest to a requested one; `exact` when launcher knows that very version."""

    version: str
    exact: bool


def nearest_version(version: str) -> NearestVersion:
    """For any version string, the nearest known version (shipped or learned) and whether it is exact.

    Exact covers what resolve_version accepts (`v0.33.0`, `0.33.0+cu130`, a unique `0.33`).
    Otherwise the closer of the two known versions around it, by (major, minor, patch) distance,
    the older one on a tie: 0.34.0 and 1.0.0 -> the newest known, 0.31.0 -> 0.32.0, 0.20.0 -> the
    oldest known. A pre-release or dev build (`0.34.0rc1`, `0.33.1.dev5`) is never exact. A string
    without X.Y gives DEFAULT_VERSION (or the newest known), not exact.
    """
    return nearest_in(version, supported_versions())


def nearest_in(version: str, known: list[str]) -> NearestVersion:
    """nearest_version over `known` (oldest first): the one rule for every table keyed by vLLM version."""
    hit = _exact(version, known)
    if hit is not None:
        return NearestVersion(hit, True)
    m = _RELEASE_RE.match(str(version).strip())
    if m is None or not known:
        return NearestVersion(DEFAULT_VERSION if DEFAULT_VERSION in known or not known else known[-1], False)
    want = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def release(k: str) -> tuple[int, int, int]:
        key = version_key(k) + (0, 0, 0)
        return key[0], key[1], key[2]

    below = [k for k in known if release(k) <= want]
    above = [k for k in known if release(k) > want]
    neighbours = ([below[-1]] if below else []) + ([above[0]] if above else [])
    # the closer neighbour by (major, minor, patch) distance; min keeps the older one on a tie
    return NearestVersion(min(neighbours, key=lambda k: tuple(abs(a - b) for a, b in zip(release(k), want, strict=True))), False)


# --------------------------------------------------------------------------- loading


def load_engine(version: str = DEFAULT_VERSION) -> EngineSchema:
    """The schema of a known vLLM version (cached; reads one JSON file, no vLLM import)."""
    known = _known()
    hit = known.files.get(version)  # the common case: an exact, known version string
    v = version if hit is not None else resolve_version(version)
    origin, entry = hit or known.files[v]
    return _load(v, origin, entry, entry.stat().st_mtime_ns if origin == LEARNED else None)


@functools.lru_cache(maxsize=None)
def _load(v: str, origin: str, entry: Any, stamp: int | None) -> EngineSchema:
    """One schema file, read once (a learned file again when it was rewritten: `stamp` is its mtime)."""
    try:
        return schema_from_json(json.loads(entry.read_text(encoding="utf-8")), v, origin, str(entry))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        again = "; delete it or run `launcher engines learn` again" if origin == LEARNED else ""
        raise ProfileError(f"{entry}: not a readable engine schema ({type(exc).__name__}: {exc}){again}") from None
