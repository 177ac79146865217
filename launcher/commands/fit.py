"""`launcher fit` (the memory estimate) and `launcher calibrate` (the estimate against a real start log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from launcher.commands._common import described_gpu, echo_notes, gpu_options, load_profile, profile_options
from launcher.errors import HardwareError, ProfileError

EXIT_DOES_NOT_FIT = 3


def _target(ctx: click.Context, profile: Any, inventory_file: Optional[str], gpu: Optional[str], count: Optional[int],
            memory: Optional[float] = None, cc: Optional[str] = None) -> Any:
    """The GPUs to fit on: --gpu from the table (or --gpu-memory/--compute-capability), an --inventory file, or NVML."""
    model = described_gpu(gpu, memory, cc, inventory_file, count)
    need = profile.parallel.tp * profile.parallel.pp
    if model is not None:
        have = count if count is not None else profile.parallel.world_size
        if have < need:
            raise HardwareError(f"the profile needs {need} GPUs for one replica (tensor x pipeline); --count is {have}")
        return model
    if inventory_file:
        from launcher.hardware.inventory import load_inventory

        return load_inventory(inventory_file)
    from launcher.commands.gpus import runtime_of

    return runtime_of(ctx).probe()


def _gpu_json(result: Any) -> dict[str, Any]:
    i = result.inputs
    return {"name": i.gpu_name, "cuda_total_bytes": i.total_memory_bytes, "compute_capability": list(i.compute_capability)}


@click.command()
@profile_options()
@click.option("--inventory", "inventory_file", type=click.Path(dir_okay=False), help="Fit on the GPUs of an inventory file (`launcher gpus --json`).")
@gpu_options("How many --gpu cards (default: the profile's gpu count).")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
@click.pass_context
def fit(ctx: click.Context, profile_name: str, profiles_dirs: tuple[str, ...], sets: tuple[str, ...],
        inventory_file: Optional[str], gpu: Optional[str], count: Optional[int], gpu_memory: Optional[float],
        compute_capability: Optional[str], as_json: bool) -> None:
    """Estimate GPU memory and KV cache for a profile, as vLLM 0.33 will account it.

    \b
    Per GPU (the smallest decides): budget, weights, persistent buffers, activation peak, CUDA
    graphs and the KV cache left, each with its uncertainty; the KV block geometry; how many
    full-length requests fit; the largest max_model_len that fits; how many requests fit at once at
    32k, 64k, 128k and the profile's own context. Without --gpu/--inventory the
    GPUs of this machine are read through NVML.
    Exit code 0 when it fits (a warning is printed when only within the error), 3 when not.
    How each term is computed, and what it was checked against: docs/memory-model.md.
    """
    from launcher.fit.estimate import format_breakdown, suggest
    from launcher.fit.fit_profile import engines_of, fit_profile, fix_hint

    resolved = load_profile(profile_name, profiles_dirs, sets)
    profile = resolved.profile
    target = _target(ctx, profile, inventory_file, gpu, count, gpu_memory, compute_capability)
    from launcher.fit.lengths import concurrency_by_length, format_lengths

    result = fit_profile(profile, target)
    suggestion = suggest(result.inputs, result)
    lengths = concurrency_by_length(profile, target)
    engines, layout = engines_of(profile)
    from launcher.engine.decode_path import decode_path

    i = result.inputs  # the decode path on the deciding GPU, with the batch limits as vLLM resolves them
    path = decode_path(i.vllm_version, i.compute_capability, i.attention_backend, i.kv_cache_dtype, i.num_speculative_tokens,
                       result.max_num_seqs, result.max_num_batched_tokens, enforce_eager=i.enforce_eager,
                       performance_mode=i.performance_mode)
    if as_json:
        out = {"profile": resolved.name, "gpu": _gpu_json(result), **result.to_json(), "suggestions": suggestion.to_json(),
               "concurrency_by_length": [row.to_json() for row in lengths],
               "deployment": {"engines": engines, "layout": layout or "one engine", "kv_cache_tokens": result.kv_cache_tokens * engines,
                              "concurrency_at_max_len": round(result.concurrency_at_max_len * engines, 4)},
               "decode_path": path.to_json()}
        click.echo(json.dumps(out, indent=2))
    else:
        from launcher import style

        click.echo(f"profile {resolved.name}: {profile.model.name}")
        text = format_breakdown(result, engines, layout, paint=style.paint).splitlines()
        at = next((n for n, line in enumerate(text) if line.startswith("  largest max_model_len")), len(text))
        style.echo("\n".join(text[: at + 1] + format_lengths(lengths, engines) + text[at + 1 :]))  # coloured on a terminal only
        click.echo(path.line())
        if result.kv_verdict != "fits":
            click.echo("would fit with margin: " + fix_hint(profile, result))
    if result.verdict == "marginal":
        echo_notes(["the margin is inside the estimate's error: the start may still fail (see `launcher calibrate` after a real start)"])
    if result.verdict == "does-not-fit":
        ctx.exit(EXIT_DOES_NOT_FIT)


@click.command()
@click.argument("logfile", type=click.Path(dir_okay=False))
@profile_options()
@click.option("--inventory", "inventory_file", type=click.Path(dir_okay=False), help="The GPUs the log was written on, as an inventory file.")
@click.option("--gpu", "gpu", metavar="MODEL", help='The GPU model the log was written on, e.g. "RTX 3090".')
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_context
def calibrate(ctx: click.Context, logfile: str, profile_name: str, profiles_dirs: tuple[str, ...], sets: tuple[str, ...],
              inventory_file: Optional[str], gpu: Optional[str], as_json: bool) -> None:
    """Compare the estimate with a real vLLM start log (predicted against actual).

    \b
    Reads vLLM's own lines: "Model loading took", "Available KV cache memory", "GPU KV cache
    size", "Maximum concurrency", "Setting attention block size", "Padding mamba page size",
    "Graph capturing finished", the "--kv-cache-memory=" summary and the start-up errors.
    When the log states the GPU's total and free memory, those replace the table's.
    """
    import dataclasses

    from launcher.files import MAX_TEXT_BYTES, read_text
    from launcher.fit.calibrate import compare, format_rows, other_model, parse_log
    from launcher.fit.estimate import GIB
    from launcher.fit.fit_profile import fit_profile

    path = Path(logfile)
    text = read_text(path, MAX_TEXT_BYTES, "vLLM log", errors="replace")  # a plain file, bounded: not /dev/zero
    log = parse_log(text)
    if log.empty:
        raise ProfileError(f"{path}: no vLLM memory lines found (is this a vLLM start log?)")
    resolved = load_profile(profile_name, profiles_dirs, sets)
    why = other_model(log, (resolved.profile.model.name, resolved.profile.facts_key))
    if why:
        raise ProfileError(f"{path}: {why}")
    result = fit_profile(resolved.profile, _target(ctx, resolved.profile, inventory_file, gpu, None))
    notes = []
    measured = log.summaries[0] if log.summaries else None
    if measured is not None or log.free_memory_error is not None:
        free_gib, total_gib = (measured.free_gib, measured.total_gib) if measured else log.free_memory_error[:2]  # type: ignore[index]
        inp = dataclasses.replace(
            result.inputs,
            total_memory_bytes=round(total_gib * GIB),
            free_memory_bytes=round(free_gib * GIB),
            total_memory_uncertainty_bytes=round(0.005 * GIB),
        )
        from launcher.fit.estimate import estimate

        result = estimate(inp)
        notes.append(f"GPU memory from the log: {free_gib} GiB free of {total_gib} GiB")
    rows = compare(result, log)
    if as_json:
        click.echo(json.dumps({
            "profile": resolved.name,
            "log": str(path),
            "vllm_version": log.version,
            "rows": [{"quantity": r.quantity, "unit": r.unit, "predicted": r.predicted, "actual": r.actual,
                      "delta": r.delta, "tolerance": r.tolerance, "ok": r.ok, "source": r.source} for r in rows],
            "suggested_kv_cache_memory_bytes": measured.kv_bytes_to_requested_limit if measured else None,
        }, indent=2))
    else:
        click.echo(f"profile {resolved.name} against {path}" + (f" (vLLM {log.version})" if log.version else ""))
        click.echo(format_rows(rows))
        if measured is not None and measured.kv_bytes_to_requested_limit:
            click.echo(f"vLLM suggests --kv-cache-memory={measured.kv_bytes_to_requested_limit} for this machine "
                       "(kv_cache.memory_bytes in a profile)")
    target = resolved.profile.vllm.version
    if log.version and log.version != target:
        notes.append(f"the log is from vLLM {log.version}; the estimate follows the profile's vLLM {target} "
                     f"(--set vllm.version={log.version} to estimate for the log's)")
    echo_notes(notes)
