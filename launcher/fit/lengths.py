"""The estimate at other context lengths: how many requests fit at 32k, 64k, 128k (`fit`, `check`), and the note
`render` prints where a profile's own context does not fit the smallest GPUs it admits.

Both ask `fit_profile.fit_profile` once per length (the profile with max_model_len set to that length), so the
numbers are the ones `launcher fit --set engine.max_model_len=L` prints; nothing here models memory itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from launcher.defaults import GIB
from launcher.errors import LauncherError
from launcher.fit.fit_profile import Target, fit_profile, profile_weights

if TYPE_CHECKING:
    from launcher.fit.estimate import FitResult
    from launcher.hardware.catalog import GpuModel
    from launcher.profile.schema import Profile

LENGTHS = (32768, 65536, 131072)  # what users ask about ("how many requests at 32k, 64k, 128k?")


@dataclass(frozen=True)
class LengthRow:
    """One context length: the KV pool's room for requests of that length (vLLM's "Maximum concurrency" had
    max_model_len been set to it), what runs at once (capped by max_num_seqs), and the fit verdict there."""

    max_model_len: int
    concurrency: float  # pool blocks / blocks one request of this length holds
    at_once: int  # whole requests at once: min(floor(concurrency), max_num_seqs)
    max_num_seqs: int
    verdict: str  # the KV verdict at this length: fits / marginal / does-not-fit

    def to_json(self) -> dict[str, Any]:
        return {"max_model_len": self.max_model_len, "concurrency": round(self.concurrency, 4), "requests_at_once": self.at_once,
                "max_num_seqs": self.max_num_seqs, "verdict": self.verdict}


def lengths_for(profile: "Profile", limit: int) -> tuple[int, ...]:
    """32k, 64k, 128k and the profile's own max_model_len, within the model's limit, shortest first."""
    own = profile.engine.max_model_len if isinstance(profile.engine.max_model_len, int) else None
    return tuple(sorted({length for length in (*LENGTHS, *((own,) if own else ())) if length <= limit}))


def concurrency_by_length(profile: "Profile", target: Target, lengths: Sequence[int] | None = None) -> list[LengthRow]:
    """Requests at once for each context length (default `lengths_for`) on `target`, one engine's KV pool."""
    weights = profile_weights(profile)
    first = fit_profile(profile, target, weights=weights)
    rows = []
    for length in lengths if lengths is not None else lengths_for(profile, first.max_model_len_limit):
        r = first if length == first.inputs.max_model_len else fit_profile(profile, target, weights=weights, max_model_len=length)
        at_once = min(math.floor(r.concurrency_at_max_len + 1e-9), r.max_num_seqs) if r.kv_verdict != "does-not-fit" else 0
        rows.append(LengthRow(length, r.concurrency_at_max_len, at_once, r.max_num_seqs, r.kv_verdict))
    return rows


def format_lengths(rows: Sequence[LengthRow], engines: int = 1) -> list[str]:
    """The table `fit` prints (and `check`, under kv-fit): one row per length."""
    if not rows:
        return []
    per = " per engine" if engines > 1 else ""
    lines = [f"  requests at once by context length{per} (max_model_len set to it; at most max_num_seqs {rows[0].max_num_seqs}):",
             f"  {'context':>9}  {'room for':>8}  {'at once':>7}  verdict"]
    for r in rows:
        lines.append(f"  {r.max_model_len:>9,}  {r.concurrency:>8.2f}  {r.at_once:>7}  {r.verdict}")
    return lines


# ---------------------------------------------------------------------- the note where a command is printed


def smallest_admitted(profile: "Profile") -> list["GpuModel"]:
    """The GPU-table cards with the least memory that the profile's `hardware` block admits (min_memory_gib as CUDA
    reports it, min_compute_capability): within 1 GiB of the smallest, e.g. RTX 3090, 3090 Ti and 4090 for 23.5 GiB."""
    from launcher.hardware.catalog import all_models

    need = profile.hardware.min_memory_gib
    admitted = [m for m in all_models()
                if m.cuda_total_bytes / GIB + 1e-9 >= need and m.compute_capability >= profile.hardware.min_compute_capability]
    if not admitted:
        return []
    least = min(m.cuda_total_bytes for m in admitted)
    return [m for m in admitted if m.cuda_total_bytes < least + GIB]


def context_note(profile: "Profile", target: Target | None = None, where: str = "") -> str | None:
    """A note when the profile's max_model_len does not fit (or fits only within the estimate's error): on `target`
    (`where` names it), else on the smallest cards its `hardware` block admits; None when it fits, or launcher cannot
    say (a CPU profile, a model without facts, `auto`, an estimate that raises)."""
    from launcher.model.facts import is_known

    if profile.hardware.device != "cuda" or not is_known(profile.facts_key) or not isinstance(profile.engine.max_model_len, int):
        return None
    try:
        if target is not None:
            results = [(where or "these GPUs", fit_profile(profile, target))]
        else:
            n = profile.parallel.tp * profile.parallel.pp
            weights = profile_weights(profile)
            results = [(f"{n} x {m.key} ({m.cuda_total_gib:.2f} GiB each)", fit_profile(profile, m, weights=weights))
                       for m in smallest_admitted(profile)]
    except LauncherError:
        return None
    if not results:
        return None
    where_text, worst = min(results, key=lambda pair: (pair[1].max_model_len_fit, pair[1].margin_bytes))
    if worst.kv_verdict == "fits":
        return None
    return _note_text(profile, worst, where_text, target is None)


def _note_text(profile: "Profile", r: "FitResult", where: str, admitted: bool) -> str:
    length = r.inputs.max_model_len
    head = "does not fit" if r.kv_verdict == "does-not-fit" else "fits only within the estimate's error on"
    scope = f"{where}, the smallest GPUs this profile admits" if admitted else where
    safe = r.max_model_len_safe
    fix = f"--set engine.max_model_len={safe}" if safe else "more or larger GPUs"
    return (f"max_model_len {length:,} {head} {scope}: the largest context that starts there is {r.max_model_len_fit:,} "
            f"({safe:,} with the estimate's error as margin; `launcher fit` shows how); {fix}, or check the real GPUs "
            "with `launcher check`")
