"""Options shared by the commands that take a profile."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import click

from launcher.numbers import MAX_GPU_GIB, Finite
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


def gpu_options(count_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--gpu MODEL, --count N, --gpu-memory GIB, --compute-capability X.Y: cards from the GPU table instead of this
    machine's (`fit`, `check`, `profiles`; one code path: `described_gpu`)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option("--compute-capability", "compute_capability", metavar="X.Y",
                          help="With --gpu-memory: the card's compute capability, e.g. 8.9.")(fn)
        fn = click.option("--gpu-memory", "gpu_memory", type=Finite(min=1, max=MAX_GPU_GIB), metavar="GIB",
                          help="Describe the card: its memory in GiB as nvidia-smi shows it (MiB / 1024); with --gpu, a memory "
                          'variant of that card (e.g. --gpu "RTX 4090" --gpu-memory 96), else with --compute-capability.')(fn)
        fn = click.option("--count", type=click.IntRange(min=1), help=count_help)(fn)
        fn = click.option("--gpu", "gpu", metavar="MODEL",
                          help='A GPU model from the table, e.g. "RTX 3090", "RTX 4090 48GB", "A100-80GB", "H100", "L40S".')(fn)
        return fn

    return decorate


def described_gpu(gpu: Optional[str], memory: Optional[float], cc: Optional[str], inventory_file: Optional[str],
                  count: Optional[int]) -> Any:
    """The GpuModel that --gpu/--gpu-memory/--compute-capability describe, or None when they are not given."""
    described = gpu or memory is not None or cc
    if described and inventory_file:
        raise click.UsageError("give either --gpu/--gpu-memory or --inventory, not both")
    if count is not None and not described:
        raise click.UsageError("--count goes with --gpu or --gpu-memory")
    if not described:
        return None
    from launcher.hardware.catalog import custom_model, lookup

    model = lookup(gpu) if gpu else None
    if memory is not None or cc:
        model = custom_model(memory, _cc(cc), model)
    return model


def _cc(text: Optional[str]) -> Optional[tuple[int, int]]:
    if not text:
        return None
    from launcher.profile.schema import parse_compute_capability

    try:
        value = parse_compute_capability(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--compute-capability") from None
    return value


def described_inventory_of(model: Any, count: int) -> Any:
    """`count` cards of a described model as an inventory (`check`, `profiles`)."""
    from launcher.hardware.inventory import described_inventory

    return described_inventory(model, count)


def context_notes(profile: Any, inventory_file: Optional[str] = None) -> list[str]:
    """The note for where a command is printed (render, serve --dry-run): the profile's max_model_len does not fit the
    smallest GPUs its `hardware` block admits (or the --inventory's), with the largest context that does (launcher.fit.lengths)."""
    from launcher.fit.lengths import context_note

    target, where = None, ""
    if inventory_file:
        from launcher.errors import LauncherError
        from launcher.hardware.inventory import load_inventory

        try:
            target, where = load_inventory(inventory_file), f"the GPUs of {inventory_file}"
        except LauncherError:
            return []
    note = context_note(profile, target, where)
    return [note] if note else []


def comment_lines(notes: Sequence[str]) -> str:
    """Notes as `#` comment lines at the top of a file format that has them (compose, k8s, systemd): one line each."""
    import re

    return "".join("# launcher: note: " + re.sub(r"[\x00-\x1f\x7f]", "?", n) + "\n" for n in notes)
