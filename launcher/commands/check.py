"""`launcher check`: preflight a profile (or `auto`) against the live GPUs or an inventory file."""

from __future__ import annotations

import json
from typing import Any, Optional

import click

from launcher import style
from launcher.commands._common import described_gpu, described_inventory_of, gpu_options, load_profile, passthrough, profile_options
from launcher.commands.gpus import runtime_of
from launcher.hardware.inventory import Inventory
from launcher.preflight.checks import Report
from launcher.profile.load import Resolved


@click.command(context_settings={"ignore_unknown_options": True})
@profile_options()
@click.option(
    "--inventory",
    "inventory_file",
    type=click.Path(dir_okay=False),
    help="Check against an inventory file (from `launcher gpus --json`) instead of this machine's GPUs.",
)
@gpu_options("How many --gpu cards (default: the profile's hardware.gpu_count; needed with --profile auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts, adjustments and resulting command as JSON.")
@passthrough
@click.pass_context
def check(
    ctx: click.Context,
    profile_name: str,
    profiles_dirs: tuple[str, ...],
    sets: tuple[str, ...],
    inventory_file: Optional[str],
    gpu: Optional[str],
    count: Optional[int],
    gpu_memory: Optional[float],
    compute_capability: Optional[str],
    as_json: bool,
    extra_args: tuple[str, ...],
) -> None:
    """Preflight a profile: GPU count, memory, compute capability, attention/KV, driver, MIG, P2P, model files, disk.

    --profile auto picks the best profile this machine (or inventory) can run.
    With --inventory, the CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES recorded in the file apply,
    not this shell's; the profile's own `env` applies in both cases, as it does for `serve`.
    Live, the vLLM installed here (the one `vllm` on PATH belongs to) is checked too: WARN when it is
    another version than vllm.version, FAIL when it rejects the command. Model files
    and disk are this machine's, or with --inventory what `launcher gpus --json` recorded (else skipped).
    With --gpu MODEL --count N (as `launcher fit` takes them), idle cards from the GPU table are checked:
    "will this pass on 2 x RTX 3090?" without an inventory file (the driver is unknown then, its check skips).
    Exit code 0 when it can run (warnings included), 3 when a check fails or NVML cannot be read.
    """
    from launcher.preflight.choice import run_preflight
    from launcher.preflight.run import combined_fix, get_inventory, require_runnable

    runtime = runtime_of(ctx)
    model = described_gpu(gpu, gpu_memory, compute_capability, inventory_file, count)
    if model is not None:
        if count is None and profile_name == "auto":
            raise click.UsageError("--profile auto with --gpu needs --count N (how many cards)")
        if count is None:
            count = load_profile(profile_name, profiles_dirs, sets, extra_args).profile.hardware.gpu_count
        inventory = described_inventory_of(model, count)
    else:
        inventory = get_inventory(inventory_file, runtime.probe)
    auto = None
    if profile_name == "auto":
        auto = _choose(inventory, profiles_dirs, sets, extra_args, as_json, _where(inventory_file, inventory))
    name = profile_name if auto is None else str(auto.resolved.path)
    resolved, report = run_preflight(name, profiles_dirs, sets, extra_args, inventory)
    live = inventory_file is None and model is None
    if live:
        report = _with_installed_engine(resolved, report)
    from launcher.preflight.model_files import with_model_checks  # the weights and their disk: here, or as the inventory recorded them

    report = with_model_checks(report, resolved.profile, None if live else inventory)
    where = _where(inventory_file, inventory)
    fix = None
    if report.status != "pass":
        fix = combined_fix(name, profiles_dirs, sets, extra_args, inventory)
    lengths = _lengths(resolved, report, inventory)
    cache = None if inventory_file else _compile_cache(resolved)  # this machine's disk only
    _print(resolved, report, inventory, where, auto, fix, lengths, cache, as_json)
    require_runnable(report, resolved.name, shown=True)  # the report (text or JSON) carries each reason


def _print(resolved: Resolved, report: Report, inventory: Inventory, where: str, auto: Any, fix: Any, lengths: list[Any],
           cache: Any, as_json: bool) -> None:
    """The report as JSON, or as text with the combined fix and the compile-cache line before the verdict."""
    if as_json:
        out = report_json(resolved, report, inventory, where, auto)
        if fix is not None:
            out["combined_fix"] = fix.to_json()
        if lengths:
            out["concurrency_by_length"] = [row.to_json() for row in lengths]
        if cache is not None:
            out["compile_cache"] = cache.to_json()
        click.echo(json.dumps(out, indent=2))
        return
    if auto is not None:
        from launcher.preflight.choice import choice_lines

        click.echo("\n".join(choice_lines(auto)))
    lines = format_report(resolved, report, inventory, where, lengths).splitlines()
    if fix is not None and fix.line():
        lines.insert(len(lines) - 1, fix.line())  # the result stays the last line
    if cache is not None:
        lines.insert(len(lines) - 1, cache.line())
    style.echo("\n".join(lines))  # coloured on a terminal, plain when piped or NO_COLOR is set


def _lengths(resolved: Resolved, report: Report, inventory: Inventory) -> list[Any]:
    """kv-fit's detail: requests at once at 32k, 64k, 128k and the profile's context, on the GPUs the check used."""
    kv = report.result("kv-fit")
    if kv is None or kv.status == "skip":
        return []
    from launcher.errors import LauncherError
    from launcher.fit.lengths import concurrency_by_length
    from launcher.preflight.run import gpus_used

    gpus = gpus_used(report, inventory)
    try:
        return concurrency_by_length(resolved.profile, gpus) if gpus else []
    except LauncherError:
        return []


def _where(inventory_file: Optional[str], inventory: Inventory) -> str:
    if inventory.described:
        return f"--gpu: {inventory.described}, idle"
    return f"inventory {inventory_file}" if inventory_file else "live NVML"


def _compile_cache(resolved: Resolved) -> Any:
    """Where the compile cache is and whether it is warm for this exact command (launcher.live.cache_state)."""
    from launcher.errors import LauncherError
    from launcher.live.cache_state import cache_state
    from launcher.output.validate import render_checked

    try:
        rendered = render_checked(resolved)
    except LauncherError:
        return None  # the command itself is refused: the report says why
    return cache_state(resolved.profile.vllm.cache_dir, resolved.profile.vllm.version, rendered.argv)


def _with_installed_engine(resolved: Resolved, report: Report) -> Report:
    """Live: the vLLM that `serve` would start here against the profile's target (package metadata, no import)."""
    import dataclasses

    from launcher.live.installed import engine_check

    found = engine_check(resolved)
    return report if found is None else dataclasses.replace(report, results=report.results + (found,))


def _choose(inventory: Inventory, dirs: tuple[str, ...], sets: tuple[str, ...], extra: tuple[str, ...], as_json: bool,
            where: str) -> Any:
    """choose_auto; with --json, a failure still prints JSON (every profile's failures, the closest) before exit 3."""
    from launcher.preflight.choice import NoProfileRuns, choose_auto
    from launcher.preflight.run import kv_fit_hook

    try:
        return choose_auto(inventory, dirs, sets, extra, kv_fit=kv_fit_hook())
    except NoProfileRuns as exc:
        if as_json:
            click.echo(json.dumps({
                "profile": None,
                "inventory": {"source": where, "summary": inventory.summary()},
                "runnable": False,
                "auto": {"chosen": None, "closest": exc.closest.to_json() if exc.closest else None,
                         "considered": [{"name": c.name, "group": c.group, "why": c.why_not} for c in exc.found]},
            }, indent=2))
        raise


def format_report(resolved: Resolved, report: Report, inventory: Inventory, where: str, lengths: Any = ()) -> str:
    lines = [
        f"profile {resolved.name} ({resolved.path}) on {inventory.summary()}"
        + (f", driver {inventory.driver_version}" if not inventory.described else "")
        + f" ({where})"
    ]
    for r in report.results:
        lines.append(f"{style.status(r.status)} {r.id:<18} {r.message}")
        if r.fix and r.status != "pass":
            lines.append(f"{'':<24} Fix: {r.fix}")
        if r.id == "kv-fit" and lengths:
            from launcher.fit.fit_profile import engines_of
            from launcher.fit.lengths import format_lengths

            lines += [f"{'':<23}{line}" for line in format_lengths(lengths, engines_of(resolved.profile)[0])]
    for layer in resolved.layers:
        if layer.name == "check":
            lines.append(f"adjusted by the check: {_flat(layer.data)} ({layer.source})")
    n_warn = len(report.warnings)
    if report.ok:
        verdict = "runnable" + (f" with {n_warn} warning{'s' * (n_warn > 1)}" if n_warn else "")
        lines.append("result: " + style.paint(verdict, "marginal" if n_warn else "fits"))
    else:
        n = len(report.failures)
        failed = f"NOT RUNNABLE: {n} check{'s' * (n > 1)} failed ({', '.join(r.id for r in report.failures)})"
        lines.append("result: " + style.paint(failed, "does-not-fit"))
    return "\n".join(lines)


def _flat(data: Any, prefix: str = "") -> str:
    parts: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            parts.append(_flat(value, dotted))
        else:
            parts.append(f"{dotted}={json.dumps(value) if not isinstance(value, str) else value}")
    return ", ".join(parts)


def report_json(resolved: Resolved, report: Report, inventory: Inventory, where: str, auto: Any = None) -> dict[str, Any]:
    from launcher.output.validate import render_checked

    rendered = render_checked(resolved)
    out: dict[str, Any] = {
        "profile": resolved.name,
        "path": str(resolved.path),
        "inventory": {
            "source": where,
            "summary": inventory.summary(),
            "driver_version": inventory.driver_version,
            "cuda_driver_version": inventory.cuda_driver_version,
        },
        "runnable": report.ok,
        **report.to_json(),
        "command": rendered.to_json(),
    }
    if auto is not None:
        out["auto"] = {
            "chosen": resolved.name,
            "considered": [{"name": c.name, "group": c.group, **({"why": c.why_not} if c.group != "runnable" else {})} for c in auto.considered],
        }
    return out
