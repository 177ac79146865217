"""`launcher render` and `launcher diff`."""

from __future__ import annotations

import click

from launcher.commands._common import echo_notes, load_profile, passthrough, profile_options
from launcher.render import FORMATS, render as render_profile


@click.command(context_settings={"ignore_unknown_options": True})
@profile_options()
@click.option("--format", "-f", "fmt", type=click.Choice(sorted(FORMATS)), default="shell", show_default=True,
              help="shell: copy-paste command; json: {argv, env}; yaml: a `vllm serve --config` file; env: sourceable environment.")
@passthrough
def render(profile_name: str, profiles_dirs: tuple[str, ...], sets: tuple[str, ...], fmt: str, extra_args: tuple[str, ...]) -> None:
    """Render the exact vllm serve command for a profile. Starts nothing.

    Extra vLLM arguments after `--` are appended (and checked) as they would be by `serve`.
    """
    resolved = load_profile(profile_name, profiles_dirs, sets, extra_args)
    rendered = render_profile(resolved.profile)
    echo_notes(rendered.notes)
    click.echo(FORMATS[fmt](rendered), nl=False)


@click.command()
@click.argument("profile_a")
@click.argument("profile_b")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False), help="Directory of your own profiles.")
def diff(profile_a: str, profile_b: str, profiles_dirs: tuple[str, ...]) -> None:
    """Show what differs between the rendered commands of two profiles.

    Exit code 0 whether or not they differ; lines start with `-` (only in A), `+` (only in B).
    """
    from launcher.diff import diff_rendered

    a = render_profile(load_profile(profile_a, profiles_dirs, ()).profile)
    b = render_profile(load_profile(profile_b, profiles_dirs, ()).profile)
    lines = diff_rendered(a, b)
    click.echo(f"--- {profile_a}\n+++ {profile_b}")
    click.echo("\n".join(lines) if lines else "  (no difference)")
