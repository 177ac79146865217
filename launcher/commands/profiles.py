"""`launcher profiles`: the table of profiles."""

from __future__ import annotations

import json

import click

from launcher.errors import ProfileError
from launcher.load import list_profiles, resolve, search_dirs


def profile_rows(profiles_dirs: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """One row per servable profile; a broken user profile becomes a row with its error."""
    rows: list[dict[str, object]] = []
    for name, path in list_profiles(search_dirs(profiles_dirs)).items():
        try:
            p = resolve(str(path), profiles_dirs=profiles_dirs, environ={}).profile
        except ProfileError as exc:
            rows.append({"name": name, "path": str(path), "error": str(exc).splitlines()[0]})
            continue
        rows.append(
            {
                "name": name,
                "path": str(path),
                "gpus": p.hardware.gpu_count,
                "tp": p.parallel.tensor_parallel_size or 1,
                "min_memory_gib": p.hardware.min_memory_gib,
                "context": p.engine.max_model_len,
                "mtp": p.speculative.num_speculative_tokens if p.mtp_enabled and p.speculative else 0,
                "vllm": p.vllm.version,
                "description": " ".join(p.description.split()),
            }
        )
    return rows


@click.command()
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False), help="Directory of your own profiles.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
def profiles(profiles_dirs: tuple[str, ...], fmt: str) -> None:
    """List profiles: name, GPUs, TP, minimum memory per GPU, context, MTP draft tokens."""
    rows = profile_rows(profiles_dirs)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["name", "gpus", "tp", "min_memory_gib", "context", "mtp", "vllm"]
    cells = [[str(r.get(h, "")) if "error" not in r else (r["name"] if h == "name" else "") for h in headers] for r in rows]
    errors = {r["name"]: r["error"] for r in rows if "error" in r}
    if fmt == "markdown":
        click.echo("| " + " | ".join(headers) + " |")
        click.echo("|" + "---|" * len(headers))
        for c in cells:
            click.echo("| " + " | ".join(c) + " |")
        return
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for c in cells:
        line = "  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip()
        if c[0] in errors:
            line += f"  INVALID: {errors[c[0]]}"
        click.echo(line)
