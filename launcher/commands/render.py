"""`launcher render` and `launcher diff`."""

from __future__ import annotations

import click

from launcher.commands._common import (
    comment_lines,
    context_notes,
    echo_notes,
    echo_warnings,
    inventory_option,
    load_for,
    load_profile,
    passthrough,
    profile_options,
    unset_secrets,
)
from launcher.output.render import FORMATS
from launcher.output.validate import render_checked


def _check_options(fmt: str, node_rank: int | None, watchdog: float | None) -> None:
    if fmt in ("k8s", "compose") and node_rank is not None:
        raise click.UsageError(f"--node-rank does not apply to --format {fmt} (it covers every node)")
    if watchdog is not None and fmt != "systemd":
        raise click.UsageError("--watchdog applies to --format systemd only")


@click.command(context_settings={"ignore_unknown_options": True})
@profile_options()
@click.option("--format", "-f", "fmt", type=click.Choice(sorted(FORMATS) + ["compose", "k8s", "systemd"]), default="shell", show_default=True,
              help="shell: copy-paste command; json: {argv, env}; yaml: a `vllm serve --config` file; env: sourceable "
              "environment; compose: a Docker Compose service; k8s: Kubernetes manifests (Deployment + Service, or a LeaderWorkerSet "
              "for a multi-node engine); systemd: a service unit running `launcher serve` (docs/runbook.md).")
@click.option("--node-rank", "node_rank", type=click.IntRange(min=0), default=None, metavar="R",
              help="For a multi-node profile (deployment.nodes > 1): node R's own command and environment. "
              "Without it every node's command is printed, one block each.")
@click.option("--watchdog", type=click.FloatRange(min=1), default=None, metavar="S",
              help="--format systemd: run `launcher serve --wait --health-timeout S` (a hung engine is stopped and the unit "
              "restarts; vLLM does not notify systemd itself) instead of exec'ing vLLM.")
@inventory_option
@passthrough
def render(profile_name: str, profiles_dirs: tuple[str, ...], sets: tuple[str, ...], fmt: str, node_rank: int | None,
           watchdog: float | None, inventory_file: str | None, extra_args: tuple[str, ...]) -> None:
    """Render the exact vllm serve command for a profile. Starts nothing.

    Extra vLLM arguments after `--` are appended (and checked) as they would be by `serve`.
    A profile with a `deployment` block spanning nodes gets one command per node (--node-rank R picks one).
    """
    resolved = load_for(profile_name, profiles_dirs, sets, extra_args, inventory_file)
    profile = resolved.profile
    source = str(resolved.path)
    rendered = render_checked(resolved)  # every format below carries this argv (per node: plus the node's flags)
    fit_notes = context_notes(profile, inventory_file)  # e.g. 262,144 tokens on 2 x 24 GB: the largest context that fits
    if fit_notes:
        import dataclasses

        rendered = dataclasses.replace(rendered, notes=(*rendered.notes, *fit_notes))
    if fmt == "shell":  # the decode path vLLM will run on the GPUs this profile is for (machine formats stay bare)
        import dataclasses

        from launcher.fit.fit_profile import decode_path_notes

        rendered = dataclasses.replace(rendered, notes=(*rendered.notes, *decode_path_notes(profile)))  # shown with the others
    _check_options(fmt, node_rank, watchdog)
    if fmt not in ("k8s", "systemd"):  # k8s reads the key from a Secret, systemd from its EnvironmentFile
        echo_warnings(unset_secrets(rendered.env_from))
    if fmt == "systemd":
        from launcher.output.systemd import serve_args, this_launcher, unit

        u = unit(profile, rendered, resolved.name, serve_args(resolved, profiles_dirs, sets, extra_args, node_rank), this_launcher(),
                 watchdog=watchdog)
        echo_notes(rendered.notes + u.notes)
        click.echo(comment_lines(fit_notes) + u.text, nl=False)
        return
    if fmt == "k8s":
        from launcher.output.k8s import manifests, to_yaml

        docs = manifests(profile, resolved.name, source)
        echo_notes(rendered.notes + docs.notes)
        click.echo(comment_lines(fit_notes) + to_yaml(docs), nl=False)
        return
    if fmt == "compose":
        from launcher.output.compose import format_compose

        echo_notes(rendered.notes)
        click.echo(comment_lines(fit_notes) + format_compose(rendered, profile), nl=False)
        return
    if profile.deployment is None and node_rank is None:
        echo_notes(rendered.notes)
        click.echo(FORMATS[fmt](rendered), nl=False)
        return
    from launcher.output import deploy

    if not deploy.topology(profile).multi_node:
        if node_rank:
            deploy.node_command(profile, node_rank, source)  # refuses with the reason
        notes = deploy.plan(profile, source).notes if deploy.is_distributed(profile) else ()
        echo_notes(rendered.notes + notes)
        click.echo(FORMATS[fmt](rendered), nl=False)
        return
    the_plan = deploy.plan(profile, source)
    if node_rank is None:
        text = deploy.format_plan(the_plan, fmt)
    else:
        text = deploy.format_node(deploy.node_command(profile, node_rank, source), fmt)
    echo_notes(rendered.notes + the_plan.notes)
    click.echo(text, nl=False)


@click.command()
@click.argument("profile_a")
@click.argument("profile_b")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False), help="Directory of your own profiles.")
def diff(profile_a: str, profile_b: str, profiles_dirs: tuple[str, ...]) -> None:
    """Show what differs between the rendered commands of two profiles.

    Exit code 0 whether or not they differ; lines start with `-` (only in A), `+` (only in B).
    """
    from launcher.output.diff import diff_rendered

    a = render_checked(load_profile(profile_a, profiles_dirs, ()))
    b = render_checked(load_profile(profile_b, profiles_dirs, ()))
    lines = diff_rendered(a, b)
    click.echo(f"--- {profile_a}\n+++ {profile_b}")
    click.echo("\n".join(lines) if lines else "  (no difference)")
