"""`launcher engines`: the supported vLLM versions and what differs between them."""

from __future__ import annotations

import json
from typing import Any

import click

from launcher import engine

_SHOW = 12  # items per list in the human view; --json has everything


def engines_report() -> dict[str, Any]:
    """Versions (with where their schema came from) and the diff of each consecutive pair."""
    versions = engine.supported_versions()
    rows = []
    for v in versions:
        s = engine.load_engine(v)
        rows.append({
            "version": v,
            "default": v == engine.DEFAULT_VERSION,
            "options": len(s.options),
            "spellings": len(s.spellings),
            "distribution": s.meta.get("distribution"),
            "source": s.meta.get("note") or s.meta.get("source"),
            "generator": s.meta.get("generator"),
            "late_validated": {k: len(s.late_values(k)) for k in sorted(s.late)},
        })
    diffs = [engine.diff_versions(a, b).to_dict() for a, b in zip(versions, versions[1:])]
    return {"versions": rows, "diffs": diffs}


def _clip(items: list[str]) -> str:
    more = f", ... (+{len(items) - _SHOW})" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _human(report: dict[str, Any]) -> str:
    lines = ["Supported vLLM versions:"]
    for r in report["versions"]:
        mark = " (default)" if r["default"] else ""
        lines.append(f"  {r['version']}{mark}: {r['options']} options, {r['spellings']} spellings; "
                     f"from {r['distribution']}")
        if r["source"] and r["distribution"] != "vllm":
            lines.append(f"    {r['source']}")
    for d in report["diffs"]:
        lines.append("")
        lines.append(f"vLLM {d['from']} -> {d['to']}:")
        if d["added"]:
            lines.append(f"  options added ({len(d['added'])}): {_clip(d['added'])}")
        if d["removed"]:
            lines.append(f"  options removed ({len(d['removed'])}): {_clip(d['removed'])}")
        if d["spellings_added"]:
            spell = [s for v in d["spellings_added"].values() for s in v]
            lines.append(f"  spellings added ({len(spell)}): {_clip(spell)}")
        if d["spellings_removed"]:
            spell = [s for v in d["spellings_removed"].values() for s in v]
            lines.append(f"  spellings removed ({len(spell)}): {_clip(spell)}")
        for name, why in d["deprecated"].items():
            lines.append(f"  newly deprecated: {name}: {why}")
        for name, fields in d["changed"].items():
            for f, (old, new) in fields.items():
                if f == "deprecated":
                    continue
                if f == "choices" and isinstance(old, list) and new is None:
                    lines.append(f"  {name}: no argparse choices any more (validated after parsing)")
                elif f == "choices" and old is None and isinstance(new, list):
                    lines.append(f"  {name}: now restricted to argparse choices {_clip([str(c) for c in new])}")
                elif f == "choices" and isinstance(old, list) and isinstance(new, list):
                    plus = [str(c) for c in new if c not in old]
                    minus = [str(c) for c in old if c not in new]
                    what = " ".join(filter(None, [f"+{_clip(plus)}" if plus else "",
                                                  f"-{_clip(minus)}" if minus else ""]))
                    lines.append(f"  {name}: choices {what}")
                else:
                    lines.append(f"  {name}: {f} {_short(old)} -> {_short(new)}")
        for key, ch in d["late"].items():
            parts = []
            if ch["added"]:
                parts.append(f"+{_clip(ch['added'])}")
            if ch["removed"]:
                parts.append(f"-{_clip(ch['removed'])}")
            lines.append(f"  {key.replace('_', ' ')}: {' '.join(parts)}")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the versions and every difference as JSON.")
def engines(as_json: bool) -> None:
    """List the supported vLLM versions and what differs between them.

    Every rendered command is checked against the schema of the profile's `vllm.version`
    (launcher/engines/vllm-<version>.json, generated from a real install by
    tools/gen_engine_schema.py).
    """
    report = engines_report()
    click.echo(json.dumps(report, indent=2) if as_json else _human(report))
