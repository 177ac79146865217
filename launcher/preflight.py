"""Preflight glue: inventory (live NVML or a file) + profile -> checks, adjustments, `auto` choice, NIM-style grouping."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from launcher.checks import CheckResult, KvFit, Report, evaluate
from launcher.errors import HardwareError, LauncherError, ProfileError
from launcher.inventory import Gpu, Inventory, load_inventory
from launcher.load import Layer, Resolved, list_profiles, resolve, search_dirs

AUTO = "auto"
InventorySource = Union[None, str, "os.PathLike[str]", Inventory]
Probe = Callable[[], Inventory]


def default_probe() -> Inventory:
    from launcher.gpu import probe  # lazy: NVML only for live checks

    return probe()


def get_inventory(source: InventorySource, probe: Optional[Probe] = None) -> Inventory:
    """An Inventory object as is, a path read as an inventory file, None read live through NVML."""
    if isinstance(source, Inventory):
        return source
    if source is not None:
        return load_inventory(Path(source))
    return (probe or default_probe)()


def check_environment(inventory: Inventory, environ: Optional[Mapping[str, str]] = None) -> Mapping[str, str]:
    """The environment vLLM would start in, as far as GPU visibility goes.

    Live (source "nvml"): this process's environment. From a file: the variables recorded where
    it was captured, since this machine's CUDA_VISIBLE_DEVICES says nothing about that one.
    """
    if inventory.source == "nvml":
        return os.environ if environ is None else environ
    return inventory.environment


# ------------------------------------------------------------------------ the KV fit hook


def kv_fit_hook() -> Optional[KvFit]:
    """The KV-cache fit check of issue 4 (`launcher.fit_profile.kv_fit_check`), when it is installed.

    Contract: `(profile, gpus) -> launcher.checks.CheckResult` with id "kv-fit": fail when one
    request at max_model_len cannot fit, warn inside the estimate's error, and
    `data["max_model_len_safe"]` / `data["max_model_len_fit"]` (the largest length that fits,
    with and without margin) for the "runnable with a smaller context" group.
    """
    try:
        from launcher.fit_profile import kv_fit_check
    except ImportError:
        return None
    return kv_fit_check


# ------------------------------------------------------------------------ one profile


def adjustment_layers(report: Report) -> list[Layer]:
    """The check's adjustments as resolve() layers (shown by `launcher explain` as `check: <reason>`)."""
    return [Layer("check", a.reason, _plain(a.data)) for a in report.adjustments]


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def check_resolved(
    resolved: Resolved,
    inventory: Inventory,
    environ: Optional[Mapping[str, str]] = None,
    kv_fit: Optional[KvFit] = None,
) -> Report:
    report = evaluate(resolved.profile, inventory, check_environment(inventory, environ), kv_fit=kv_fit)
    advice = scale_out_result(resolved, report, inventory)
    return dataclasses.replace(report, results=report.results + (advice,)) if advice else report


def scale_out_result(resolved: Resolved, report: Report, inventory: Inventory) -> Optional[CheckResult]:
    """TP above this model's KV-head count (tp8) replicates KV heads: warn, with the alternative's fit numbers."""
    if not report.ok:
        return None
    gpus = gpus_used(report, inventory)
    if not gpus:
        return None
    from launcher import deploy
    from launcher.fit_profile import fit_profile

    advice = deploy.scale_out_advice(resolved.profile, lambda p: fit_profile(p, gpus))
    if advice is None:
        return None
    fix = f"use profile {advice.profile}" if advice.profile else "use " + " ".join(f"--set {o}" for o in advice.overrides)
    return CheckResult("scale-out", "warn", advice.message, fix=fix, data=advice.to_json())


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
    if profile_name == AUTO:
        choice = choose_auto(inventory, profiles_dirs, sets, extra_args, environ=environ, kv_fit=kv_fit)
        resolved, report = choice.resolved, choice.report
    else:
        resolved = resolve(profile_name, profiles_dirs=profiles_dirs, sets=sets, extra_args=extra_args, environ=environ)
        report = check_resolved(resolved, inventory, environ, kv_fit)
    layers = adjustment_layers(report) + auto_context_layers(resolved, report, inventory)
    if layers:
        resolved = resolve(
            str(resolved.path), profiles_dirs=profiles_dirs, sets=sets, extra_args=extra_args, environ=environ, extra_layers=layers
        )
    return resolved, report


@dataclass(frozen=True)
class CombinedFix:
    """One set of `--set` overrides under which the checks pass, found by re-running them, or why none exists."""

    sets: tuple[str, ...]
    passes: bool  # every check passes with `sets`, except `remaining` (which no --set can change)
    remaining: tuple[str, ...]  # checks still not passing: hardware facts no profile value changes
    why: str = ""

    def line(self) -> str:
        flags = " ".join(f"--set {s}" for s in self.sets)
        rest = f"; still not passing: {', '.join(self.remaining)} (no profile value changes them)" if self.remaining else ""
        if self.passes and self.sets:
            return f"Fix all at once (re-checked): {flags}" + rest
        if self.passes:
            return ""
        return f"No set of overrides makes every check pass: {self.why}"

    def to_json(self) -> dict[str, Any]:
        return {"sets": list(self.sets), "passes": self.passes, "remaining": list(self.remaining), "why": self.why}


def combined_fix(
    profile_name: str,
    profiles_dirs: Sequence[str],
    sets: Sequence[str],
    extra_args: Sequence[str],
    inventory: Inventory,
    *,
    environ: Optional[Mapping[str, str]] = None,
    kv_fit: Optional[KvFit] = None,
    rounds: int = 4,
) -> CombinedFix:
    """Apply every failing or warning check's own `sets`, re-run all checks, repeat until nothing changes.

    A check's fix is computed on the profile with the fixes found so far (so lowering
    gpu_memory_utilization for memory-free is followed by the kv-fit fix for the smaller budget); a key
    once chosen is never changed back. The result is verified: `passes` only when the re-run agrees.
    """
    chosen: dict[str, str] = {}
    report: Optional[Report] = None
    for _ in range(rounds):
        items = [*sets, *(f"{k}={v}" for k, v in chosen.items())]
        try:
            _, report = run_preflight(profile_name, profiles_dirs, items, extra_args, inventory, environ=environ, kv_fit=kv_fit)
        except LauncherError as exc:
            return CombinedFix(tuple(f"{k}={v}" for k, v in chosen.items()), False, (), f"the overrides do not load: {exc}")
        open_ = [r for r in report.results if r.status in ("warn", "fail")]
        new = {}
        for r in open_:
            for item in r.sets:
                key, _, value = item.partition("=")
                if key not in chosen or _tighter(value, chosen[key]):
                    new[key] = value
        if not new:
            break
        chosen.update(new)
    assert report is not None
    found = tuple(f"{k}={v}" for k, v in chosen.items())
    unfixable = [r for r in report.results if r.status in ("warn", "fail") and not r.sets]
    fixable_left = [r for r in report.results if r.status in ("warn", "fail") and r.sets]
    if fixable_left or any(r.status == "fail" for r in unfixable):
        left = fixable_left + [r for r in unfixable if r.status == "fail"]
        why = "; ".join(f"{r.id}: {r.fix or r.message}" for r in left)
        return CombinedFix(found, False, tuple(r.id for r in unfixable), why)
    return CombinedFix(found, True, tuple(r.id for r in unfixable))


def _tighter(new: str, old: str) -> bool:
    """A numeric fix may only move further the same way (a smaller budget, fewer sequences, a shorter context)."""
    try:
        return float(new) < float(old)
    except ValueError:
        return False


def auto_context_layers(resolved: Resolved, report: Report, inventory: Inventory) -> list[Layer]:
    """`engine.max_model_len: auto` becomes the largest context that fits these GPUs (whole KV blocks)."""
    if resolved.profile.engine.max_model_len != "auto" or not report.ok:
        return []
    from launcher.fit_profile import auto_max_model_len

    gpus = gpus_used(report, inventory)
    if not gpus:
        return []
    value = auto_max_model_len(resolved.profile, gpus)
    reason = f"max_model_len auto: the largest context that fits {gpus[0].name} with the estimate's error as margin"
    return [Layer("check", reason, {"engine": {"max_model_len": value}})]


def require_runnable(report: Report, profile: str) -> None:
    """Raise HardwareError (exit 3) naming the failed checks, for `serve` and `check`."""
    if report.failures:
        first = report.failures[0]
        more = f" (and {len(report.failures) - 1} more failed check{'s' * (len(report.failures) > 2)})" if len(report.failures) > 1 else ""
        raise HardwareError(f"profile {profile} cannot run here: {first.id}: {first.message}{more}")


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
        self.closest = closest  # launcher.choice.NearMiss or None
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
        from launcher.choice import near_miss

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


def gpus_used(report: Report, inventory: Inventory) -> list[Gpu]:
    """The readable GPUs vLLM would use, in CUDA order."""
    out = []
    for d in report.devices:
        g = inventory.gpu(d.gpu_index)
        if g is not None:
            out.append(g)
    return out
