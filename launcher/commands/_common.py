"""Options shared by the commands that take a profile."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import click

from launcher.profile.load import Resolved, resolve
from launcher.text import printable

PROFILE_HELP = "Profile name (shipped or from --profiles-dir / LAUNCHER_PROFILES_DIR) or a path to a YAML file."


def profile_options(required: bool = True, env_default: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--profile, --profiles-dir and --set, in one decorator."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override one value, e.g. --set engine.max_model_len=32768 (repeatable; `none` resets a key).",
        )(fn)
        fn = click.option(
            "--profiles-dir",
            "profiles_dirs",
            multiple=True,
            type=click.Path(file_okay=False),
            help="Directory of your own profiles, searched before the shipped ones (repeatable).",
        )(fn)
        fn = click.option(
            "--profile",
            "-p",
            "profile_name",
            required=required and not env_default,
            envvar="LAUNCHER_PROFILE" if env_default else None,
            show_envvar=env_default,
            help=PROFILE_HELP,
        )(fn)
        return fn

    return decorate


def load_profile(profile_name: str | None, profiles_dirs: Sequence[str], sets: Sequence[str], extra_args: Sequence[str] = ()) -> Resolved:
    if not profile_name:
        raise click.UsageError("Missing option '--profile' (or set LAUNCHER_PROFILE).")
    return resolve(profile_name, profiles_dirs=profiles_dirs, sets=sets, extra_args=extra_args)


def inventory_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--inventory",
        "inventory_file",
        type=click.Path(dir_okay=False),
        help="Resolve for the GPUs in this inventory file (from `launcher gpus --json`): the preflight's "
        "adjustments (no P2P) and `max_model_len: auto` apply. Nothing is refused: `launcher check` does that.",
    )(fn)


def load_for(profile_name: str | None, profiles_dirs: Sequence[str], sets: Sequence[str], extra_args: Sequence[str],
             inventory_file: str | None) -> Resolved:
    """load_profile, or, with an inventory, the preflight's resolution of it (adjustments included)."""
    if inventory_file is None:
        return load_profile(profile_name, profiles_dirs, sets, extra_args)
    from launcher.preflight.choice import run_preflight

    resolved, _ = run_preflight(profile_name or "", profiles_dirs, sets, extra_args, inventory_source=inventory_file)
    return resolved


def echo_notes(notes: Sequence[str]) -> None:
    for note in notes:
        click.echo(f"launcher: note: {printable(note)}", err=True)


def unset_secrets(env_from: Mapping[str, str], environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """A warning per secret the command takes from a variable that is not set here (server.api_key_env)."""
    import os

    environ = os.environ if environ is None else environ
    return [
        f"server.api_key_env: {source} is not set in this environment; `launcher serve` refuses to start until it is "
        f"(export {source}=...; vLLM gets it as {target})"
        for target, source in env_from.items() if source not in environ
    ]


def echo_warnings(warnings: Sequence[str]) -> None:
    for warning in warnings:
        click.echo(f"launcher: warning: {printable(warning)}", err=True)


def passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Collect everything after `--` as extra vLLM arguments."""

    @click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper
