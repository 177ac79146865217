"""`launcher profiles`: the table of profiles."""

from __future__ import annotations

import json
import re
from typing import Any

import click

from launcher.commands._common import described_gpu, described_inventory_of, gpu_options
from launcher.errors import ProfileError
from launcher.profile.load import list_profiles, resolve, search_dirs
from launcher.text import printable


def profile_rows(profiles_dirs: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """One row per servable profile; a broken user profile becomes a row with its error."""
    rows: list[dict[str, object]] = []
    for name, path in list_profiles(search_dirs(profiles_dirs)).items():
        try:
            p = resolve(str(path), profiles_dirs=profiles_dirs, environ={}).profile
        except ProfileError as exc:
            rows.append({"name": printable(name), "path": printable(path), "error": printable(str(exc).splitlines()[0])})
            continue
        rows.append(
            {
                "name": printable(name),  # a file name, the description: text from files, shown on terminals
                "path": printable(path),
                "gpus": p.hardware.gpu_count if p.hardware.device == "cuda" else "cpu",
                "tp": p.parallel.tp,
                "min_memory_gib": p.hardware.min_memory_gib,
                "context": p.engine.max_model_len,
                "mtp": p.speculative.num_speculative_tokens if p.mtp_enabled and p.speculative else 0,
                "vllm": p.vllm.version,
                "description": printable(" ".join(p.description.split())),
                "summary": printable(summary(p.description)),
            }
        )
    return rows


def summary(description: str, width: int = 76) -> str:
    """The description's first sentence (a profile's one-line summary), cut at a word to `width` characters."""
    text = " ".join(description.split())
    m = re.match(r"(.+?[.!?])(?:\s|$)", text)
    first = (m.group(1) if m else text).rstrip(".")
    if len(first) > width:
        first = first[: width - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return first


@click.command()
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False), help="Directory of your own profiles.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@click.option(
    "--inventory",
    "inventory_file",
    type=click.Path(dir_okay=False),
    help="Group the profiles by whether this inventory (from `launcher gpus --json`) can run them.",
)
@click.option("--live", is_flag=True, help="Group the profiles by whether this machine's GPUs (NVML) can run them.")
@gpu_options("How many --gpu cards (required with --gpu).")
@click.pass_context
def profiles(ctx: click.Context, profiles_dirs: tuple[str, ...], fmt: str, inventory_file: str | None, live: bool,
             gpu: str | None, count: int | None, gpu_memory: float | None, compute_capability: str | None) -> None:
    """List profiles: name, GPUs, TP, minimum memory per GPU, context, MTP draft tokens, what each is for.

    With --inventory FILE, --live, or --gpu MODEL --count N (idle cards from the GPU table, as
    `launcher fit` takes them), group them as NVIDIA NIM does: runnable, runnable with a smaller
    context (which), not runnable (why).
    """
    model = described_gpu(gpu, gpu_memory, compute_capability, inventory_file, count)
    if model is not None:
        if live:
            raise click.UsageError("give either --gpu or --live, not both")
        if count is None:
            raise click.UsageError("--gpu needs --count N (how many cards)")
        _grouped(ctx, profiles_dirs, fmt, None, described_inventory_of(model, count))
        return
    if inventory_file or live:
        _grouped(ctx, profiles_dirs, fmt, inventory_file)
        return
    rows = profile_rows(profiles_dirs)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["name", "gpus", "tp", "min_memory_gib", "context", "mtp", "vllm", "summary"]
    cells: list[list[str]] = [[str(r.get(h, "")) if "error" not in r else str(r["name"] if h == "name" else "") for h in headers] for r in rows]
    headers[-1] = "description"
    errors = {r["name"]: r["error"] for r in rows if "error" in r}
    if fmt == "markdown":
        click.echo("| " + " | ".join(headers) + " |")
        click.echo("|" + "---|" * len(headers))
        for c in cells:
            click.echo("| " + " | ".join(c) + " |")
        return
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for c in cells:
        line = "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip()
        if c[0] in errors:
            line += f"  INVALID: {errors[c[0]]}"
        click.echo(line)


def _grouped(ctx: click.Context, profiles_dirs: tuple[str, ...], fmt: str, inventory_file: str | None, described: Any = None) -> None:
    from launcher.commands.gpus import runtime_of
    from launcher.preflight.choice import candidates, grouping
    from launcher.preflight.run import get_inventory, kv_fit_hook

    inventory = described if described is not None else get_inventory(inventory_file, runtime_of(ctx).probe)
    groups = grouping(candidates(inventory, profiles_dirs, kv_fit=kv_fit_hook()))
    where = (f"--gpu: {inventory.described}, idle" if inventory.described
             else f"inventory {inventory_file}" if inventory_file else "live NVML")
    if fmt == "json":
        click.echo(json.dumps({"inventory": {"source": where, "summary": inventory.summary()}, **groups}, indent=2))
        return
    titles = {
        "runnable": "RUNNABLE",
        "smaller-context": "RUNNABLE WITH A SMALLER CONTEXT",
        "not-runnable": "NOT RUNNABLE",
    }
    if fmt == "markdown":
        click.echo(f"Profiles on {inventory.summary()} ({where})\n")
        click.echo("| profile | verdict | detail |")
        click.echo("|---|---|---|")
        for key, rows in groups.items():
            for r in rows:
                click.echo(printable(f"| {r['name']} | {titles[key].lower()} | {_detail(key, r)} |"))
        return
    click.echo(f"profiles on {inventory.summary()} ({where})")
    for key, rows in groups.items():
        click.echo(f"{titles[key]}:")
        if not rows:
            click.echo("  (none)")
        for r in rows:
            click.echo(printable(f"  {r['name']}  {_detail(key, r)}".rstrip()))


def _detail(group: str, row: dict[str, Any]) -> str:
    nodes = f"(as one of {row['nodes']} nodes) " if row.get("nodes") else ""
    if group == "runnable":
        warnings: list[str] = row.get("warnings") or []
        return nodes + (f"warnings: {', '.join(warnings)}" if warnings else "")
    if group == "smaller-context":
        return f"{nodes}max_model_len {row['max_model_len']} fits: {row['how']}"
    failed: list[str] = row.get("failed") or []
    first = str(row.get("why", "")).split("; ")[0]
    if failed and first.startswith(f"{failed[0]}: "):
        first = first[len(failed[0]) + 2 :]
    return (nodes + (f"{', '.join(failed)}: {first}" if failed else first)).strip()
