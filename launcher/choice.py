"""`--profile auto` explained: why the chosen profile beat each other runnable one, and, when none runs,
the closest profile and the overrides that make it run (re-checked, never guessed).

The ranking is `preflight.Candidate.rank` (fewest warnings, most GPUs put to use, longest context,
fewest GPUs, name); this module only says which of those decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from launcher.checks import KvFit
    from launcher.inventory import Inventory
    from launcher.preflight import AutoChoice, Candidate


def _warned(c: "Candidate") -> str:
    assert c.report is not None
    ids = [r.id for r in c.report.warnings]
    if not ids:
        return "no warnings"
    return f"{len(ids)} warning{'s' * (len(ids) != 1)} ({', '.join(ids)})"


def why_chosen(best: "Candidate", other: "Candidate") -> str:
    """The first rank component where `best` beats `other`, in words with both values."""
    assert best.resolved is not None and other.resolved is not None
    a, b = best.rank(), other.rank()
    if a[0] != b[0]:
        return f"fewer warnings: {best.name} has {_warned(best)}, {other.name} {_warned(other)}"
    if a[1] != b[1]:
        wide = [c for c in (best, other) if c.resolved is not None and c.resolved.profile.parallel.tp > 4]
        note = (f" ({', '.join(c.name for c in wide)}: tensor parallel above 4 counts as 4, this model's 4 KV heads are "
                "replicated beyond it)") if wide else ""
        return f"more of the GPUs put to use: {a[1]} vs {b[1]}{note}"
    if a[2] != b[2]:
        return f"a longer context: max_model_len {a[2]} vs {b[2]}"
    if a[3] != b[3]:
        return f"the same on fewer GPUs: {-a[3]} vs {-b[3]}"
    return "a tie on every measure; the first by name"


def choice_lines(auto: "AutoChoice") -> list[str]:
    """`auto: chose X (...)`, one line per other runnable profile with the reason, one line for the rest."""
    best = next(c for c in auto.considered if c.resolved is not None and c.resolved.path == auto.resolved.path)
    lines = [f"auto: chose {best.name} (runnable, {_warned(best)})"]
    for c in auto.considered:
        if c is best:
            continue
        if c.group == "runnable" and c.nodes == 1:
            lines.append(f"  over {c.name}: {why_chosen(best, c)}")
    others = [c for c in auto.considered if c is not best and not (c.group == "runnable" and c.nodes == 1)]
    if others:
        lines.append("  not chosen: " + ", ".join(f"{c.name} ({_not_runnable_why(c)})" for c in others))
    return lines


def _not_runnable_why(c: "Candidate") -> str:
    if c.group == "runnable":
        return f"spans {c.nodes} nodes"
    if c.group == "smaller-context":
        return f"runs with max_model_len {c.smaller_context}"
    if c.report is None:
        return "does not load"
    return ", ".join(r.id for r in c.report.failures)


# ------------------------------------------------------------------------ nothing runs


@dataclass(frozen=True)
class NearMiss:
    """The profile closest to running here: with `sets` it passes (`runs`), or what still fails."""

    name: str
    sets: tuple[str, ...]
    runs: bool
    failed: tuple[str, ...]  # the checks that fail as shipped
    still: str = ""  # when not `runs`: why, per remaining check

    def line(self) -> str:
        flags = " ".join(f"--set {s}" for s in self.sets)
        if self.runs:
            return f"closest: {self.name} runs here with {flags} (re-checked)"
        return f"no override makes any profile run; the closest, {self.name}, still needs: {self.still}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sets": list(self.sets), "runs": self.runs, "failed": list(self.failed), "still": self.still}


def shrink_sets(c: "Candidate", inventory: "Inventory") -> tuple[str, ...]:
    """For a one-node profile that needs more GPUs than the machine has: the same on the largest valid TP that fits."""
    if c.resolved is None or c.report is None or c.report.result("gpu-count") is None:
        return ()
    if c.report.result("gpu-count").status != "fail" or c.nodes != 1:  # type: ignore[union-attr]
        return ()
    from launcher.model_facts import facts_for

    p = c.resolved.profile
    have = inventory.count
    valid = [t for t in facts_for(p.model.facts or p.model.name).valid_tensor_parallel_sizes if t <= have]
    if not valid or p.parallel.pp > 1:
        return ()
    tp = max(valid)
    sets = [f"hardware.gpu_count={tp}", f"parallel.tensor_parallel_size={tp}"]
    if p.parallel.dp > 1:
        sets.append("parallel.data_parallel_size=1")
    if "CUDA_VISIBLE_DEVICES" in p.env:
        sets.append("env.CUDA_VISIBLE_DEVICES=" + ",".join(str(i) for i in range(tp)))
    return tuple(sets)


def near_miss(
    found: Sequence["Candidate"],
    inventory: "Inventory",
    profiles_dirs: Sequence[str] = (),
    sets: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    *,
    environ: Optional[Mapping[str, str]] = None,
    kv_fit: Optional["KvFit"] = None,
) -> Optional[NearMiss]:
    """The one-node profile that runs here with the fewest overrides (each found and re-checked by
    `preflight.combined_fix`), else the one with the fewest failed checks."""
    from launcher.preflight import Candidate, combined_fix, run_preflight

    best: Optional[tuple[tuple[Any, ...], NearMiss]] = None
    for c in found:
        if c.resolved is None or c.report is None or c.nodes != 1 or c.report.ok:
            continue
        path = str(c.resolved.path)
        base = shrink_sets(c, inventory)
        fix = combined_fix(path, profiles_dirs, [*sets, *base], extra_args, inventory, environ=environ, kv_fit=kv_fit)
        failed = tuple(r.id for r in c.report.failures)
        context = c.resolved.profile.engine.max_model_len
        if fix.passes:
            miss = NearMiss(c.name, base + fix.sets, True, failed)
            resolved, report = run_preflight(path, profiles_dirs, [*sets, *miss.sets], extra_args, inventory,
                                             environ=environ, kv_fit=kv_fit)
            # As `auto` would rank it once fixed (name left out), then the fewest overrides.
            key: tuple[Any, ...] = (1, Candidate(c.name, c.path, resolved, report).rank()[:-1], -len(miss.sets))
        else:
            left = [part for part in fix.why.split("; ") if part]
            miss = NearMiss(c.name, (), False, failed, fix.why)
            key = (0, (-len(left), -len(failed), context if isinstance(context, int) else 0), 0)
        if best is None or key > best[0]:
            best = (key, miss)
    return best[1] if best else None
