"""`launcher show`, `launcher explain` and `launcher schema`: look at profiles without starting anything."""

from __future__ import annotations

import json
from typing import Any

import click

from launcher.commands._common import echo_notes, echo_warnings, inventory_option, load_for, load_profile, profile_options, unset_secrets


@click.command()
@profile_options()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
def show(profile_name: str, profiles_dirs: tuple[str, ...], sets: tuple[str, ...], as_json: bool) -> None:
    """Print a profile after `extends`, environment and --set layering, validated."""
    from launcher.profile.schema import looks_secret

    resolved = load_profile(profile_name, profiles_dirs, sets)
    data = resolved.profile.model_dump(mode="json", exclude_none=True)
    data.pop("extends", None)
    # secret-looking variables by reference, as every rendered format shows them
    data["env"] = {k: (f"${{{k}}}" if looks_secret(k, v) else v) for k, v in data.get("env", {}).items()}
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        import yaml

        from launcher.text import printable

        click.echo(printable(f"# profile {resolved.name} ({resolved.path})"))
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), nl=False)


@click.command()
@profile_options()
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows {key, value, source}.")
@inventory_option
def explain(profile_name: str, profiles_dirs: tuple[str, ...], sets: tuple[str, ...], as_json: bool, inventory_file: str | None) -> None:
    """Show every resolved value and the layer that set it (file:line, environment, --set, check, default).

    With --inventory, values the preflight sets for those GPUs (no P2P, max_model_len auto) show as `check: why`.
    """
    from launcher.output.validate import render_checked
    from launcher.profile.explain import Row, explain_rows
    from launcher.profile.schema import looks_secret

    resolved = load_for(profile_name, profiles_dirs, sets, (), inventory_file)
    rows = [r._replace(value=f"${{{r.key[4:]}}}") if r.key.startswith("env.") and looks_secret(r.key[4:], r.value) else r
            for r in explain_rows(resolved)]
    rendered = render_checked(resolved)
    echo_notes(rendered.notes)  # what the command differs from these values by (translation, warnings)
    from launcher.fit.fit_profile import decode_path_notes

    source = f"launcher.engine.decode_path: vLLM {resolved.profile.vllm.version}'s tables"
    rows += [Row("decode_path", note, source) for note in decode_path_notes(resolved.profile)]
    echo_warnings(unset_secrets(rendered.env_from))
    if as_json:
        click.echo(json.dumps([r._asdict() for r in rows], indent=2))
        return
    from launcher.text import printable

    click.echo(printable(f"profile {resolved.name}: {' '.join(resolved.profile.description.split())}".rstrip()))
    width = max(len(r.key) for r in rows)
    for r in rows:
        click.echo(printable(f"  {r.key.ljust(width)}  {_short(r.value)}  [{r.source}]"))


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 70 else text[:67] + "..."


@click.command()
def schema() -> None:
    """Print the JSON Schema of a profile file (for editors: yaml-language-server)."""
    from launcher.profile.schema import profile_json_schema

    click.echo(json.dumps(profile_json_schema(), indent=2))
