"""Preflight of one named profile: inventory (live NVML or a file) + profile -> checks, adjustments, the combined fix."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from launcher.errors import HardwareError, LauncherError
from launcher.hardware.inventory import Gpu, Inventory, load_inventory
from launcher.preflight.checks import CheckResult, KvFit, Report, evaluate
from launcher.profile.load import Layer, Resolved, resolve

AUTO = "auto"
InventorySource = Union[None, str, "os.PathLike[str]", Inventory]
Probe = Callable[[], Inventory]


def default_probe() -> Inventory:
    from launcher.hardware.gpu import probe  # lazy: NVML only for live checks

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
    """The KV-cache fit check of issue 4 (`launcher.fit.fit_profile.kv_fit_check`), when it is installed.

    Contract: `(profile, gpus) -> launcher.preflight.checks.CheckResult` with id "kv-fit": fail when one
    request at max_model_len cannot fit, warn inside the estimate's error, and
    `data["max_model_len_safe"]` / `data["max_model_len_fit"]` (the largest length that fits,
    with and without margin) for the "runnable with a smaller context" group.
    """
    try:
        from launcher.fit.fit_profile import kv_fit_check
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
    from launcher.fit.fit_profile import fit_profile
    from launcher.preflight.scale_out import scale_out_advice

    advice = scale_out_advice(resolved.profile, lambda p: fit_profile(p, gpus))
    if advice is None:
        return None
    fix = f"use profile {advice.profile}" if advice.profile else "use " + " ".join(f"--set {o}" for o in advice.overrides)
    return CheckResult("scale-out", "warn", advice.message, fix=fix, data=advice.to_json())


def preflight_named(
    profile_name: str,
    inventory: Inventory,
    profiles_dirs: Sequence[str],
    sets: Sequence[str],
    extra_args: Sequence[str],
    environ: Optional[Mapping[str, str]],
    kv_fit: Optional[KvFit],
) -> tuple[Resolved, Report]:
    """Resolve a named profile, check it against the inventory, and re-resolve with the check's adjustments
    (`choice.run_preflight` is the entry point, and also takes `auto`).

    The returned Resolved carries the adjustments as a top layer, so rendering it gives the command
    that will run and `launcher explain` can say they came from the check.
    """
    kv_fit = kv_fit if kv_fit is not None else kv_fit_hook()
    resolved = resolve(profile_name, profiles_dirs=profiles_dirs, sets=sets, extra_args=extra_args, environ=environ)
    report = check_resolved(resolved, inventory, environ, kv_fit)
    return with_adjustments(resolved, report, inventory, profiles_dirs, sets, extra_args, environ)


def with_adjustments(
    resolved: Resolved,
    report: Report,
    inventory: Inventory,
    profiles_dirs: Sequence[str],
    sets: Sequence[str],
    extra_args: Sequence[str],
    environ: Optional[Mapping[str, str]],
) -> tuple[Resolved, Report]:
    """Re-resolve with the check's adjustments (and `max_model_len: auto`) as a top layer."""
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
    remaining: tuple[str, ...]  # checks left at warn (or failing, when `passes` is False): facts no profile value changes
    why: str = ""

    def line(self) -> str:
        flags = " ".join(f"--set {s}" for s in self.sets)
        rest = f"; still warns: {', '.join(self.remaining)} (no profile value changes it)" if self.remaining else ""
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
            _, report = preflight_named(profile_name, inventory, profiles_dirs, items, extra_args, environ, kv_fit)
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
    from launcher.fit.fit_profile import auto_max_model_len

    gpus = gpus_used(report, inventory)
    if not gpus:
        return []
    value = auto_max_model_len(resolved.profile, gpus)
    reason = f"max_model_len auto: the largest context that fits {gpus[0].name} with the estimate's error as margin"
    return [Layer("check", reason, {"engine": {"max_model_len": value}})]


# Checks whose failure can pass on a later try with nothing changed: memory another process holds, a GPU NVML could
# not read (e.g. a driver still loading at boot), weights or disk space another process is providing. Every other
# failure (the profile does not fit, too few, too small or too old GPUs, driver, MIG, the installed vLLM) repeats
# on every retry until a person changes the profile or the machine.
HEALING_CHECKS = ("memory-free", "gpu-readable", "model-files", "disk")


def lasting(report: Report) -> bool:
    """True when a failed check is one no retry heals (see HEALING_CHECKS)."""
    return any(r.id not in HEALING_CHECKS for r in report.failures)


def require_runnable(report: Report, profile: str, *, shown: bool = False, lasting_exit: Optional[int] = None) -> None:
    """Raise HardwareError (exit 3) naming the failed checks, for `serve` and `check`.

    `shown`: the report with each failure's reason was printed just above, so the error names the checks only
    (the reason once, not twice). `lasting_exit`: the exit code instead of 3 when a failure cannot heal by
    retrying (`serve --lasting-failure-exit`, which the systemd unit sets so that systemd does not restart it).
    """
    if not report.failures:
        return
    if shown:
        ids = ", ".join(r.id for r in report.failures)
        error = HardwareError(f"profile {profile} cannot run here: {ids} failed (the reason is in the report above)")
    else:
        first = report.failures[0]
        more = f" (and {len(report.failures) - 1} more failed check{'s' * (len(report.failures) > 2)})" if len(report.failures) > 1 else ""
        error = HardwareError(f"profile {profile} cannot run here: {first.id}: {first.message}{more}")
    if lasting_exit is not None and lasting(report):
        error.exit_code = lasting_exit
    raise error


def gpus_used(report: Report, inventory: Inventory) -> list[Gpu]:
    """The readable GPUs vLLM would use, in CUDA order."""
    out = []
    for d in report.devices:
        g = inventory.gpu(d.gpu_index)
        if g is not None:
            out.append(g)
    return out
