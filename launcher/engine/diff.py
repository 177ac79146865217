"""diff_versions: what differs between two vLLM versions' `vllm serve` (from their schemas)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from launcher.engine.schemas import EngineSchema, Option, load_engine


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


def _field_changes(oa: Option, ob: Option) -> dict[str, tuple[Any, Any]]:
    d: dict[str, tuple[Any, Any]] = {}
    for f in _DIFF_FIELDS:
        x, y = getattr(oa, f), getattr(ob, f)
        if f == "choices":
            x = list(x) if x is not None else None
            y = list(y) if y is not None else None
        if x != y:
            d[f] = (x, y)
    return d


def _late_changes(sa: EngineSchema, sb: EngineSchema) -> dict[str, dict[str, tuple[str, ...]]]:
    late: dict[str, dict[str, tuple[str, ...]]] = {}
    for key in sorted(set(sa.late) | set(sb.late)):
        va, vb = set(sa.late_values(key)), set(sb.late_values(key))
        if va != vb:
            late[key] = {"added": tuple(sorted(vb - va)), "removed": tuple(sorted(va - vb))}
    return late


def diff_versions(a: str, b: str) -> EngineDiff:
    """Flags added/removed, spellings added/removed, per-flag changes and late-validated values."""
    sa, sb = load_engine(a), load_engine(b)
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
        d = _field_changes(oa, ob)
        if d:
            changed[name] = d
        if ob.deprecated and not oa.deprecated:
            deprecated[name] = ob.deprecated
    return EngineDiff(
        sa.version, sb.version,
        added=tuple(sorted(set(sb.options) - set(sa.options))),
        removed=tuple(sorted(set(sa.options) - set(sb.options))),
        spellings_added=sp_add, spellings_removed=sp_rm, changed=changed, deprecated=deprecated,
        late=_late_changes(sa, sb),
    )
