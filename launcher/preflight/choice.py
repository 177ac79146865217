"""`--profile auto`: every profile checked and the best chosen (`run_preflight` here takes `auto` too),
and explained: why the chosen profile beat each other runnable one, and, when none runs, the closest
profile and the overrides that make it run (re-checked, never guessed).

The ranking is `Candidate.rank` (fewest warnings, most GPUs put to use, longest context,
fewest GPUs, name); this module only says which of those decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from launcher.errors import HardwareError, ProfileError
from launcher.hardware.inventory import Inventory
from launcher.preflight.checks import KvFit, Report
from launcher.preflight.run import (
    AUTO,
    InventorySource,
    Probe,
    check_resolved,
    combined_fix,
    get_inventory,
    kv_fit_hook,
    preflight_named,
    with_adjustments,
)
from launcher.profile.load import Resolved, list_profiles, resolve, search_dirs


def run_preflight(
    profile_name: str,
    profiles_dirs: Sequence[str] = (),
    sets: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    inventory_source: InventorySource = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    probe: Optional[Probe] = None,
    kv_fit: Optional[KvFit] = None,
) -> tuple[Resolved, Report]:
    """Resolve a profile (or `auto`), check it against the inventory, and re-resolve with the check's adjustments.

    The returned Resolved carries the adjustments as a top layer, so rendering it gives the command
    that will run and `launcher explain` can say they came from the check.
    Raises ProfileError (2) for a bad profile or inventory file, HardwareError (3) when NVML
    cannot be read or, for `auto`, when no profile can run.
    """
    inventory = get_inventory(inventory_source, probe)
    kv_fit = kv_fit if kv_fit is not None else kv_fit_hook()
    if profile_name != AUTO:
        return preflight_named(profile_name, inventory, profiles_dirs, sets, extra_args, environ, kv_fit)
    choice = choose_auto(inventory, profiles_dirs, sets, extra_args, environ=environ, kv_fit=kv_fit)
    return with_adjustments(choice.resolved, choice.report, inventory, profiles_dirs, sets, extra_args, environ)


def _warned(c: Candidate) -> str:
    assert c.report is not None
    ids = [r.id for r in c.report.warnings]
    if not ids:
        return "no warnings"
    return f"{len(ids)} warning{'s' * (len(ids) != 1)} ({', '.join(ids)})"


def why_chosen(best: Candidate, other: Candidate) -> str:
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


def choice_lines(auto: AutoChoice) -> list[str]:
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


def _not_runnable_why(c: Candidate) -> str:
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


def shrink_sets(c: Candidate, inventory: Inventory) -> tuple[str, ...]:
    """For a one-node profile that needs more GPUs than the machine has: the same on the largest valid TP that fits."""
    if c.resolved is None or c.report is None or c.report.result("gpu-count") is None:
        return ()
    if c.report.result("gpu-count").status != "fail" or c.nodes != 1:  # type: ignore[union-attr]
        return ()
    from launcher.model.facts import facts_for

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
    found: Sequence[Candidate],
    inventory: Inventory,
    profiles_dirs: Sequence[str] = (),
    sets: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    *,
    environ: Optional[Mapping[str, str]] = None,
    kv_fit: Optional[KvFit] = None,
) -> Optional[NearMiss]:
    """The one-node profile that runs here with the fewest overrides (each found and re-checked by
    `preflight.combined_fix`), else the one with the fewest failed checks."""
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
            resolved, report = preflight_named(path, inventory, profiles_dirs, [*sets, *miss.sets], extra_args, environ, kv_fit)
            # As `auto` would rank it once fixed (name left out), then the fewest overrides.
            key: tuple[Any, ...] = (1, Candidate(c.name, c.path, resolved, report).rank()[:-1], -len(miss.sets))
        else:
            left = [part for part in fix.why.split("; ") if part]
            miss = NearMiss(c.name, (), False, failed, fix.why)
            key = (0, (-len(left), -len(failed), context if isinstance(context, int) else 0), 0)
        if best is None or key > best[0]:
            best = (key, miss)
    return best[1] if best else None


# ------------------------------------------------------------------------ every profile


@dataclass(frozen=True)
class Candidate:
    """One profile checked against the inventory, for `auto` and the grouping."""

    name: str
    path: Optional[Path]
    resolved: Optional[Resolved]
    report: Optional[Report]
    error: Optional[str] = None  # the profile itself does not load

    @property
    def group(self) -> str:
        """runnable | smaller-context | not-runnable (NVIDIA NIM's grouping)."""
        if self.report is None:
            return "not-runnable"
        if self.report.ok:
            return "runnable"
        if self.smaller_context is not None:
            return "smaller-context"
        return "not-runnable"

    @property
    def nodes(self) -> int:
        d = getattr(self.resolved.profile, "deployment", None) if self.resolved is not None else None
        return d.nodes if d is not None else 1

    @property
    def smaller_context(self) -> Optional[int]:
        """The max_model_len that would fit, when memory fit is the only failure and one exists."""
        if self.report is None:
            return None
        failures = self.report.failures
        if len(failures) != 1 or failures[0].id != "kv-fit":
            return None
        for key in ("max_model_len_safe", "max_model_len_fit"):
            fit = failures[0].data.get(key)
            if isinstance(fit, int) and fit > 0:
                return fit
        return None

    @property
    def why_not(self) -> str:
        if self.error:
            return self.error
        if self.report is None:
            return ""
        return "; ".join(f"{r.id}: {r.message}" for r in self.report.failures)

    def rank(self) -> tuple[Any, ...]:
        """Bigger is better: fewest warnings, most GPUs (tensor parallel above 4 counted as 4), longest context."""
        assert self.resolved is not None and self.report is not None
        p = self.resolved.profile
        tp = p.parallel.tp
        # Above TP 4 this model's 4 KV heads are replicated: TP 8 holds about what TP 4 holds on
        # twice the GPUs (docs/memory-model.md#tensor-and-pipeline-parallel), so it is no better a use of the machine.
        effective = p.parallel.world_size // tp * min(tp, 4)  # one node: multi-node profiles never reach the ranking
        context = p.engine.max_model_len if isinstance(p.engine.max_model_len, int) else 0
        return (-len(self.report.warnings), effective, context, -p.parallel.world_size, _neg_name(self.name))


def _neg_name(name: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in name)


def candidates(
    inventory: Inventory,
    profiles_dirs: Sequence[str] = (),
    sets: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    *,
    environ: Optional[Mapping[str, str]] = None,
    kv_fit: Optional[KvFit] = None,
) -> list[Candidate]:
    """Every servable profile (user directories first, then shipped) checked against the inventory."""
    out: list[Candidate] = []
    for name, path in list_profiles(search_dirs(profiles_dirs, environ)).items():
        try:
            resolved = resolve(str(path), profiles_dirs=profiles_dirs, sets=sets, extra_args=extra_args, environ=environ)
        except ProfileError as exc:
            out.append(Candidate(name, path, None, None, error=str(exc).splitlines()[0]))
            continue
        if resolved.profile.hardware.device != "cuda":
            continue  # a CPU profile is never what `auto` should start on a GPU host
        report = check_resolved(resolved, inventory, environ, kv_fit)
        out.append(Candidate(name, path, resolved, report))
    return out


class NoProfileRuns(HardwareError):
    """`--profile auto` found nothing runnable: the closest profile first, then one line per profile with why."""

    def __init__(self, summary: str, found: tuple[Candidate, ...], closest: Any = None) -> None:
        self.found = found
        self.closest = closest  # launcher.preflight.choice.NearMiss or None
        head = f"--profile auto: no profile can run on {summary}"
        if closest is not None:
            head += f": {closest.line()}"
        reasons = [f"  {c.name}: {c.why_not.split('; ')[0]}" for c in found] or ["  no profiles found"]
        super().__init__("\n".join([head, *reasons]))


@dataclass(frozen=True)
class AutoChoice:
    resolved: Resolved
    report: Report
    considered: tuple[Candidate, ...]


def choose_auto(
    inventory: Inventory,
    profiles_dirs: Sequence[str] = (),
    sets: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    *,
    environ: Optional[Mapping[str, str]] = None,
    kv_fit: Optional[KvFit] = None,
) -> AutoChoice:
    """The best runnable profile for this inventory, or HardwareError saying why none runs."""
    found = candidates(inventory, profiles_dirs, sets, extra_args, environ=environ, kv_fit=kv_fit)
    # A multi-node engine needs its other machines and their addresses: never an automatic choice for one machine.
    runnable = [c for c in found if c.group == "runnable" and c.nodes == 1]
    if not runnable:
        closest = near_miss(found, inventory, profiles_dirs, sets, extra_args, environ=environ, kv_fit=kv_fit)
        raise NoProfileRuns(inventory.summary(), tuple(found), closest)
    best = max(runnable, key=lambda c: c.rank())
    assert best.resolved is not None and best.report is not None
    return AutoChoice(best.resolved, best.report, tuple(found))


def grouping(found: Sequence[Candidate]) -> dict[str, list[dict[str, Any]]]:
    """NIM-style: runnable, runnable with a smaller context (which), not runnable (why)."""
    groups: dict[str, list[dict[str, Any]]] = {"runnable": [], "smaller-context": [], "not-runnable": []}
    for c in found:
        row: dict[str, Any] = {"name": c.name, "path": str(c.path) if c.path else None}
        if c.nodes > 1:
            row["nodes"] = c.nodes  # checked as one of its nodes
        if c.report is not None:
            row["status"] = c.report.status
            row["warnings"] = [r.id for r in c.report.warnings]
        if c.group == "smaller-context":
            row["max_model_len"] = c.smaller_context
            row["how"] = f"--set engine.max_model_len={c.smaller_context}"
        if c.group == "not-runnable":
            row["why"] = c.why_not
            row["failed"] = [r.id for r in c.report.failures] if c.report is not None else ["profile"]
        groups[c.group].append(row)
    return groups
