"""`launcher serve`: resolve, check, print, and exec vLLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import click

from launcher.commands._common import echo_notes, load_profile, passthrough, profile_options
from launcher.exec import exec_vllm, printable
from launcher.render import Rendered, render


@dataclass(frozen=True)
class Runtime:
    """The seams `serve` touches the world through; tests pass recorders instead."""

    exec_fn: Callable[[Rendered], Any] = exec_vllm


@click.command(context_settings={"ignore_unknown_options": True})
@profile_options(env_default=True)
@click.option("--dry-run", is_flag=True, help="Print the command that would run, and stop.")
@passthrough
@click.pass_context
def serve(
    ctx: click.Context,
    profile_name: str | None,
    profiles_dirs: tuple[str, ...],
    sets: tuple[str, ...],
    dry_run: bool,
    extra_args: tuple[str, ...],
) -> None:
    """Start vLLM for a profile: validate, print the exact command, then exec it.

    launcher replaces itself with `vllm serve`, so signals and the exit code are vLLM's.
    Arguments after `--` go to vLLM (after the profile's own).
    """
    runtime = ctx.obj if isinstance(ctx.obj, Runtime) else Runtime()
    resolved = load_profile(profile_name, profiles_dirs, sets, extra_args)
    rendered = render(resolved.profile)
    echo_notes(rendered.notes)
    if dry_run:
        click.echo(printable(rendered))
        return
    runtime.exec_fn(rendered)
