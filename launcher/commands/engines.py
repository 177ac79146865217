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
    diffs = [engine.diff_versions(a, b).to_dict() for a, b in zip(versions, versions[1:], strict=False)]
    return {"versions": rows, "diffs": diffs}


def _clip(items: list[str]) -> str:
    more = f", ... (+{len(items) - _SHOW})" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


# Flags whose values vLLM validates after parsing (the schemas' "late" lists), and which list each is checked against.
LATE_OF_FLAG = {
    "--attention-backend": "attention_backends",
    "--kv-cache-dtype": "kv_cache_dtypes",
    "--reasoning-parser": "reasoning_parsers",
    "--tool-call-parser": "tool_call_parsers",
}


def profile_usage() -> dict[str, dict[str, Any]]:
    """flag -> {shipped profile: the value it gives (None for a bare flag)}, as each profile says it (not translated)."""
    from launcher.errors import ProfileError
    from launcher.load import list_profiles, resolve, shipped_profiles_dir
    from launcher.render import assemble

    used: dict[str, dict[str, Any]] = {}
    for name, path in list_profiles([shipped_profiles_dir()]).items():
        try:
            profile = resolve(str(path), environ={}).profile
        except ProfileError:
            continue
        rendered = assemble(profile)
        opts = list(rendered.argv[rendered.head :])
        for i, token in enumerate(opts):
            if not token.startswith("--"):
                continue
            flag, eq, inline = token.partition("=")
            value = inline if eq else (opts[i + 1] if i + 1 < len(opts) and not opts[i + 1].startswith("--") else None)
            used.setdefault(flag, {})[name] = value
        spec = profile.speculative.config() if profile.mtp_enabled and profile.speculative else None
        if spec:
            used.setdefault("speculative_methods", {})[name] = spec.get("method")
            for key in spec:
                used.setdefault("speculative_config_keys", {}).setdefault(name, key)
    return used


def _who(users: dict[str, Any]) -> str:
    return ", ".join(sorted(users))


def relevant_lines(d: dict[str, Any], used: dict[str, dict[str, Any]]) -> tuple[list[str], set[str]]:
    """What changed for flags and values the shipped profiles use (lines), and the options those lines cover."""
    lines: list[str] = []
    covered: set[str] = set()
    for name in d["removed"]:
        if name in used:
            lines.append(f"{name}: removed (used by {_who(used[name])})")
            covered.add(name)
    for name, why in d["deprecated"].items():
        if name in used:
            lines.append(f"{name}: deprecated: {why} (used by {_who(used[name])})")
            covered.add(name)
    for name, fields in d["changed"].items():
        if name in used:
            mine = _changed_for(name, fields, used[name])
            lines += mine
            if mine:
                covered.add(name)
    for flag, key in [*LATE_OF_FLAG.items(), ("speculative_methods", "speculative_methods"), ("speculative_config_keys", "speculative_config_keys")]:
        removed = set(d["late"].get(key, {}).get("removed") or ())
        lines += [f"{key.replace('_', ' ')}: {value!r} is gone (used by {profile})"
                  for profile, value in used.get(flag, {}).items() if value in removed]
    return lines, covered


def _changed_for(name: str, fields: dict[str, Any], users: dict[str, Any]) -> list[str]:
    """A changed option the profiles use: a value of theirs no longer accepted, or a change in what it does."""
    lines = []
    for field, (old, new) in fields.items():
        if field in ("deprecated", "default"):  # deprecation is listed apart; they set their own value
            continue
        if field != "choices":
            lines.append(f"{name}: {field} {_short(old)} -> {_short(new)} (used by {_who(users)})")
            continue
        accepted = [str(c) for c in new] if isinstance(new, list) else None
        lines += [f"{name}: no longer accepts {v!r} (used by {p})" for p, v in users.items()
                  if accepted is not None and v is not None and v not in accepted]
        if old is not None and new is None:
            lines.append(f"{name}: no argparse choices any more, checked after parsing (used by {_who(users)})")
    return lines


def _diff_lines(d: dict[str, Any], exclude: set[str]) -> list[str]:
    """Every difference of one version pair, but the options in `exclude` (already shown as mattering)."""
    lines = []
    if d["added"]:
        lines.append(f"  options added ({len(d['added'])}): {_clip(d['added'])}")
    rest = [n for n in d["removed"] if n not in exclude]
    if rest:
        lines.append(f"  options removed ({len(rest)}): {_clip(rest)}")
    for key, title in (("spellings_added", "spellings added"), ("spellings_removed", "spellings removed")):
        if d[key]:
            spell = [s for v in d[key].values() for s in v]
            lines.append(f"  {title} ({len(spell)}): {_clip(spell)}")
    for name, why in d["deprecated"].items():
        if name not in exclude:
            lines.append(f"  newly deprecated: {name}: {why}")
    for name, fields in d["changed"].items():
        if name not in exclude:
            lines += [f"  {line}" for line in _changed_lines(name, fields)]
    for key, ch in d["late"].items():
        parts = [f"+{_clip(ch['added'])}" if ch["added"] else "", f"-{_clip(ch['removed'])}" if ch["removed"] else ""]
        lines.append(f"  {key.replace('_', ' ')}: {' '.join(p for p in parts if p)}")
    return lines


def _changed_lines(name: str, fields: dict[str, Any]) -> list[str]:
    lines = []
    for f, (old, new) in fields.items():
        if f == "deprecated":
            continue
        if f == "choices" and isinstance(old, list) and new is None:
            lines.append(f"{name}: no argparse choices any more (validated after parsing)")
        elif f == "choices" and old is None and isinstance(new, list):
            lines.append(f"{name}: now restricted to argparse choices {_clip([str(c) for c in new])}")
        elif f == "choices" and isinstance(old, list) and isinstance(new, list):
            plus = [str(c) for c in new if c not in old]
            minus = [str(c) for c in old if c not in new]
            what = " ".join(filter(None, [f"+{_clip(plus)}" if plus else "", f"-{_clip(minus)}" if minus else ""]))
            lines.append(f"{name}: choices {what}")
        else:
            lines.append(f"{name}: {f} {_short(old)} -> {_short(new)}")
    return lines


def _human(report: dict[str, Any], used: dict[str, dict[str, Any]] | None = None) -> str:
    """Versions, then per version pair: first what changed for the flags and values this model's profiles use, then the rest."""
    used = profile_usage() if used is None else used
    lines = ["Supported vLLM versions:"]
    for r in report["versions"]:
        mark = " (default)" if r["default"] else ""
        lines.append(f"  {r['version']}{mark}: {r['options']} options, {r['spellings']} spellings; "
                     f"from {r['distribution']}")
        if r["source"] and r["distribution"] != "vllm":
            lines.append(f"    {r['source']}")
    for d in report["diffs"]:
        mattering, covered = relevant_lines(d, used)
        lines.append("")
        lines.append(f"vLLM {d['from']} -> {d['to']}:")
        lines.append("  for this model's profiles (flags and values they use):")
        lines += [f"    {line}" for line in mattering] or ["    nothing they use changed"]
        lines.append("  every other difference:")
        lines += [f"  {line}" for line in _diff_lines(d, covered)]
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
