"""Provenance: every resolved value of a profile with the layer that set it."""

from __future__ import annotations

from typing import Any, NamedTuple

from launcher.profile.load import Layer, Resolved

LABELS = {"env": "environment", "--set": "--set", "args": "extra vLLM args"}


class Row(NamedTuple):
    key: str
    value: Any
    source: str


def _leaves(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict) and data:
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out += _leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, data)]


def describe(layer: Layer | None, key: str) -> str:
    if layer is None:
        return "default"
    if layer.name in ("profile", "base"):
        return f"{layer.name} {layer.describe(key)}"
    if layer.name == "check":
        return f"check: {layer.source}"
    return LABELS.get(layer.name, layer.name)


def explain_rows(resolved: Resolved) -> list[Row]:
    """One row per resolved leaf; keys left unset (None) are omitted: vLLM's own default applies."""
    data = resolved.profile.model_dump(mode="json", exclude_none=True)
    data.pop("extends", None)
    # Exact keys only: a value no layer wrote is the schema's default, even under a key a layer touched.
    return [Row(key, value, describe(resolved.provenance.get(key), key)) for key, value in _leaves(data)]
