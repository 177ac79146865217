"""`launcher gpus`: the GPU inventory read through NVML, as a table or as the interchange JSON."""

from __future__ import annotations

import json
from typing import Optional

import click

from launcher.errors import HardwareError
from launcher.hardware.inventory import GIB, Inventory, Storage, dump_inventory, inventory_json_schema, load_inventory, resolve_visible
from launcher.live.runtime import Runtime, runtime_of  # noqa: F401  (re-exported for tests)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON (the format `launcher check --inventory` reads).")
@click.option("--inventory", "inventory_file", type=click.Path(dir_okay=False), help="Show an inventory file instead of reading NVML.")
@click.option("--schema", "schema", is_flag=True, help="Print the JSON Schema of the inventory format, and stop.")
@click.pass_context
def gpus(ctx: click.Context, as_json: bool, inventory_file: Optional[str], schema: bool) -> None:
    """Read the GPUs through NVML: driver, CUDA, memory, compute capability, MIG, processes, P2P/NVLink,
    and the model cache (Hugging Face cache, its free disk, HF_HUB_OFFLINE).

    \b
    Capture a GPU host for checks elsewhere:
      launcher gpus --json > host.json        (on the GPU host)
      launcher check --profile dual-3090 --inventory host.json   (anywhere)
    Exit code 3 when NVML cannot be read or sees no GPU.
    """
    if schema:
        click.echo(json.dumps(inventory_json_schema(), indent=2))
        return
    if inventory_file:
        inventory = load_inventory(inventory_file)
    else:
        import dataclasses
        import os

        from launcher.preflight.model_files import capture

        # The model cache and its disk travel with the GPUs, so `check --inventory` elsewhere can judge them.
        inventory = dataclasses.replace(runtime_of(ctx).probe(), storage=capture(os.environ))
    if as_json:
        click.echo(dump_inventory(inventory), nl=False)
    else:
        click.echo(format_inventory(inventory))
    if inventory.count == 0:
        raise HardwareError("NVML sees no GPU on this machine (driver loaded, but no device; in a container, pass --gpus)")


def format_inventory(inv: Inventory) -> str:
    where = f"{inv.hostname}, " if inv.hostname else ""
    lines = [
        f"{inv.summary()} ({where}driver {inv.driver_version}, CUDA {inv.cuda_text}"
        + (f", NVML {inv.nvml_version}" if inv.nvml_version else "")
        + (f", captured {inv.captured_at}" if inv.captured_at else "")
        + ")"
    ]
    header = ["IDX", "NAME", "FREE/TOTAL GiB", "CC", "MIG", "UUID", "PCI"]
    rows = []
    for e in inv.entries():
        g = inv.gpu(e.index)
        if g is None:
            rows.append([str(e.index), f"ERROR: {getattr(e, 'error', '')}", "", "", "", e.uuid or "", e.pci_bus_id or ""])
            continue
        mig = "on" if g.mig_mode else "off" if g.mig_mode is False else "-"
        rows.append(
            [
                str(g.index),
                g.name,
                f"{g.memory_free_bytes / GIB:.2f} / {g.memory_total_bytes / GIB:.2f}",
                g.cc_text,
                mig,
                g.uuid,
                g.pci_bus_id or "",
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for g in inv.gpus:
        if g.processes is None:
            lines.append(f"GPU {g.index} processes: not readable through NVML")
        elif g.processes:
            lines.append(f"GPU {g.index} processes: " + ", ".join(p.describe() for p in g.processes))
        for m in g.mig_devices:
            lines.append(f"GPU {g.index} MIG instance {m.uuid}" + (f" ({m.memory_total_bytes / GIB:.2f} GiB)" if m.memory_total_bytes else ""))
    if not any(g.processes for g in inv.gpus if g.processes is not None):
        lines.append("processes holding GPU memory: none")
    if inv.links:
        lines.append("GPU pairs: P2P read/write, NVLink, PCIe topology")
        for link in inv.links:
            a, b = link.gpus
            state = {True: "P2P ok", False: f"no P2P ({link.why_not()})", None: "P2P unknown"}[link.p2p]
            lines.append(
                f"  {a}-{b}: {state}; read {link.p2p_read or '?'}, write {link.p2p_write or '?'}, "
                f"nvlink {link.nvlink or '?'}, topology {link.topology or '?'}"
            )
    if inv.storage is not None:
        lines.append(format_storage(inv.storage))
    vis = resolve_visible(inv, inv.environment)
    if inv.environment:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in inv.environment.items()))
    lines += [f"note: {n}" for n in vis.notes] + [f"warning: {p}" for p in vis.problems]
    return "\n".join(lines)


def format_storage(storage: Storage) -> str:
    """One line: the model cache, its disk, offline mode, what it holds."""
    gb = 10**9
    free = f", {storage.disk_free_bytes / gb:.1f} GB free" if storage.disk_free_bytes is not None else ""
    offline = ", HF_HUB_OFFLINE set" if storage.hf_hub_offline else ""
    held = ", ".join(f"{m.name} ({m.state})" for m in storage.models) or "no models"
    return f"model cache: {storage.hf_hub_cache}{free}{offline}; {held}"
