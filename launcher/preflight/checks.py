"""Preflight checks: a profile against a GPU inventory -> pass/warn/fail/skip results. Pure: no I/O, no environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from launcher.engine.behaviour import FP8_BACKEND_FIX, Route, attention_route, behaviour, is_fp8, tp_mix  # noqa: F401 (re-exported)
from launcher.hardware.inventory import (
    GIB,
    VISIBILITY_VARIABLES,
    Gpu,
    GpuError,
    Inventory,
    Visibility,
    VisibleDevice,
    cuda_version_text,
    resolve_visible,
    version_tuple,
)
from launcher.verdict import STATUS_ORDER, CheckResult, Status  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from launcher.profile.schema import Profile


# This model's floor: bf16 activations, FlashInfer, the CUDA 13 wheels (docs/memory-model.md#compute-capability-floor).
MODEL_MIN_COMPUTE_CAPABILITY = (8, 0)

MIG_FIX = (
    "disable MIG on the GPUs vLLM should use (`sudo nvidia-smi -i <index> -mig 0`, then reset the GPU or reboot), "
    "or point CUDA_VISIBLE_DEVICES at GPUs without MIG"
)


@dataclass(frozen=True)
class Adjustment:
    """Values the check adds on top of the profile, passed to `load.resolve` as Layer("check", reason, data)."""

    reason: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Report:
    """All check results for one profile against one inventory."""

    results: tuple[CheckResult, ...]
    adjustments: tuple[Adjustment, ...] = ()
    devices: tuple[VisibleDevice, ...] = ()  # the devices vLLM will use, in CUDA order
    visibility: Optional[Visibility] = None

    @property
    def status(self) -> Status:
        worst = max((STATUS_ORDER[r.status] for r in self.results), default=0)
        return "fail" if worst == 2 else "warn" if worst == 1 else "pass"

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "fail")

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "warn")

    @property
    def ok(self) -> bool:
        return not self.failures

    def result(self, check_id: str) -> Optional[CheckResult]:
        return next((r for r in self.results if r.id == check_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "results": [r.to_json() for r in self.results],
            "adjustments": [{"reason": a.reason, "set": dict(a.data)} for a in self.adjustments],
            "devices": [
                {"cuda_index": d.cuda_index, "gpu_index": d.gpu_index, **({"mig_uuid": d.mig_uuid} if d.mig_uuid else {})}
                for d in self.devices
            ],
            "visibility": {
                "notes": list(self.visibility.notes) if self.visibility else [],
                "problems": list(self.visibility.problems) if self.visibility else [],
            },
        }


# The hook for the KV-cache fit (issue 4, launcher.fit.estimate): (profile, the GPUs vLLM will use) -> a result.
KvFit = Callable[["Profile", Sequence[Gpu]], Optional[CheckResult]]


# ------------------------------------------------------------------------ helpers


def gib(n: Union[int, float]) -> str:
    return f"{n / GIB:.2f} GiB"


def _gpu_list(indices: Sequence[int]) -> str:
    return ", ".join(str(i) for i in indices)


def _cc_text(cc: Sequence[int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def node_gpus(profile: "Profile") -> int:
    """GPUs one machine gives the engine (deployment.gpus_per_node for a multi-node engine)."""
    from launcher.profile.topology import local_gpus

    return local_gpus(profile)


# ------------------------------------------------------------------------ evaluate


@dataclass(frozen=True)
class _Ctx:
    profile: "Profile"
    inventory: Inventory
    env: Mapping[str, str]
    env_source: Mapping[str, str]  # variable -> "the profile" | "the environment"
    visibility: Visibility
    selected: tuple[VisibleDevice, ...]
    gpus: tuple[Gpu, ...]  # readable selected GPUs in CUDA order
    unreadable: tuple[GpuError, ...]

    @property
    def world(self) -> int:
        """GPUs this machine must give: the whole engine, or one node's share of a multi-node engine."""
        return node_gpus(self.profile)

    @property
    def nodes(self) -> int:
        d = getattr(self.profile, "deployment", None)
        return d.nodes if d is not None else 1

    @property
    def tp(self) -> int:
        return self.profile.parallel.tp


def evaluate(
    profile: "Profile",
    inventory: Inventory,
    environ_visible_devices: Optional[Mapping[str, str]] = None,
    *,
    kv_fit: Optional[KvFit] = None,
) -> Report:
    """Check a validated profile against an inventory.

    `environ_visible_devices` is the environment vLLM would start in (only CUDA_VISIBLE_DEVICES,
    NVIDIA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER are read); the profile's own `env` overrides it,
    as it does when `launcher serve` execs vLLM. `kv_fit` is the KV-cache fit hook (launcher.fit.estimate).
    """
    if profile.hardware.device == "cpu":
        return Report((CheckResult("device", "skip", "CPU profile (hardware.device: cpu): the GPU checks do not apply"),))
    environ = dict(environ_visible_devices or {})
    env: dict[str, str] = {}
    source: dict[str, str] = {}
    for key in VISIBILITY_VARIABLES:
        if key in profile.env:
            env[key], source[key] = profile.env[key], "the profile"
        elif key in environ:
            env[key], source[key] = environ[key], "the environment"
    visibility = resolve_visible(inventory, env)
    selected = visibility.devices[: node_gpus(profile)]
    gpus: list[Gpu] = []
    unreadable: list[GpuError] = []
    by_index = {e.index: e for e in inventory.entries()}
    for d in selected:
        entry = by_index.get(d.gpu_index)
        if isinstance(entry, Gpu):
            gpus.append(entry)
        elif isinstance(entry, GpuError):
            unreadable.append(entry)
    ctx = _Ctx(profile, inventory, env, source, visibility, tuple(selected), tuple(gpus), tuple(unreadable))

    results = [
        _check_visible(ctx),
        _check_count(ctx),
        _check_readable(ctx),
        _check_mig(ctx),
        _check_cc(ctx),
        _check_driver(ctx),
        _check_memory_total(ctx),
        _check_memory_free(ctx),
        _check_attention(ctx),
        _check_decode_path(ctx),
        _check_homogeneous(ctx),
    ]
    p2p, adjustments = _check_p2p(ctx)
    results.append(p2p)
    results.append(_check_kv_fit(ctx, kv_fit))
    return Report(tuple(results), tuple(adjustments), ctx.selected, visibility)


def _no_gpu(check_id: str) -> CheckResult:
    return CheckResult(check_id, "skip", "no readable GPU is visible to check")


def _lone_gpu(check_id: str, ctx: "_Ctx") -> CheckResult:
    if not ctx.gpus:
        return _no_gpu(check_id)
    return CheckResult(check_id, "skip", f"only one GPU of the tensor-parallel group of {ctx.tp} is visible; nothing to compare")


def _check_visible(ctx: _Ctx) -> CheckResult:
    v = ctx.visibility
    origin = "; ".join(f"{k}={ctx.env[k]} (from {ctx.env_source[k]})" for k in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES") if k in ctx.env)
    mapping = ", ".join(f"cuda:{d.cuda_index} = GPU {d.gpu_index}" + (f" ({d.mig_uuid})" if d.mig_uuid else "") for d in v.devices)
    if v.fatal:
        return CheckResult(
            "visible-devices", "fail", v.fatal, fix="set NVIDIA_VISIBLE_DEVICES to indices or UUIDs that `launcher gpus` lists (or `all`)"
        )
    head = origin or "CUDA_VISIBLE_DEVICES unset: CUDA sees every GPU"
    message = f"{head}; {mapping or 'no device visible'}"
    if v.notes:
        message += "; " + "; ".join(v.notes)
    if v.problems:
        order = any("CUDA_DEVICE_ORDER" in p for p in v.problems) and ctx.env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID"
        return CheckResult(
            "visible-devices",
            "warn",
            message + "; " + "; ".join(v.problems),
            sets=("env.CUDA_DEVICE_ORDER=PCI_BUS_ID",) if order and len(v.problems) == 1 else (),
            fix="write CUDA_VISIBLE_DEVICES as comma-separated indices or GPU- UUIDs that `launcher gpus` lists, each once "
            "(and set CUDA_DEVICE_ORDER=PCI_BUS_ID when GPU models are mixed)",
            gpus=v.gpu_indices,
        )
    return CheckResult("visible-devices", "pass", message, gpus=v.gpu_indices)


def _check_count(ctx: _Ctx) -> CheckResult:
    p = ctx.profile.parallel
    need = ctx.world
    have = len(ctx.visibility.devices)
    shape = f"tensor {p.tp} x pipeline {p.pp} x data {p.dp}"
    if ctx.nodes > 1:
        shape += f" over {ctx.nodes} nodes: this node's share"
    listed = ", ".join(f"GPU {d.gpu_index}" for d in ctx.visibility.devices) or "none"
    if have >= need:
        extra = f"; vLLM uses the first {need}" if have > need else ""
        return CheckResult("gpu-count", "pass", f"needs {need} GPU{'s' * (need > 1)} ({shape}); {have} visible ({listed}){extra}",
                           gpus=tuple(d.gpu_index for d in ctx.selected))
    machine = ctx.inventory.count
    if machine >= need:
        cvd = ctx.env.get("CUDA_VISIBLE_DEVICES")
        who = f"CUDA_VISIBLE_DEVICES={cvd} (from {ctx.env_source.get('CUDA_VISIBLE_DEVICES')})" if cvd is not None else "the visibility variables"
        ids = ",".join(str(i) for i in range(need))
        fix = f"let vLLM see {need} GPUs: e.g. --set env.CUDA_VISIBLE_DEVICES={ids} (the machine has {machine})"
        return CheckResult("gpu-count", "fail", f"needs {need} GPUs ({shape}) but only {have} visible ({listed}); {who} hides the rest", fix=fix,
                           sets=(f"env.CUDA_VISIBLE_DEVICES={ids}",))
    return CheckResult(
        "gpu-count",
        "fail",
        f"needs {need} GPUs ({shape}); the machine has {machine}, {have} visible ({listed})",
        fix=f"pick a profile for {machine} GPU{'s' * (machine != 1)} (`launcher check --profile auto` chooses one) "
        "or a machine with more GPUs",
    )


def _check_readable(ctx: _Ctx) -> CheckResult:
    if ctx.unreadable:
        bad = "; ".join(f"{e.label()}: {e.error}" for e in ctx.unreadable)
        return CheckResult(
            "gpu-readable",
            "fail",
            f"NVML could not read a GPU vLLM would use: {bad}",
            fix="check `nvidia-smi` and the kernel log (dmesg) for this GPU; reset it (`sudo nvidia-smi -r -i <index>`) "
            "or hide it with CUDA_VISIBLE_DEVICES",
            gpus=tuple(e.index for e in ctx.unreadable),
        )
    if not ctx.selected:
        return _no_gpu("gpu-readable")
    return CheckResult("gpu-readable", "pass", f"NVML read all {len(ctx.gpus)} GPU{'s' * (len(ctx.gpus) > 1)} vLLM would use")


def _check_mig(ctx: _Ctx) -> CheckResult:
    if not ctx.selected:
        return _no_gpu("mig")
    mig_instances = [d for d in ctx.selected if d.mig_uuid]
    mig_gpus = [g for g in ctx.gpus if g.mig_mode]
    if mig_instances or mig_gpus:
        names = sorted({d.gpu_index for d in mig_instances} | {g.index for g in mig_gpus})
        return CheckResult(
            "mig",
            "fail",
            f"MIG is enabled on GPU {_gpu_list(names)}: a CUDA process gets one MIG slice, not the whole GPU, and "
            "NCCL cannot run tensor parallel across MIG instances; this model needs whole GPUs",
            fix=MIG_FIX,
            gpus=tuple(names),
        )
    return CheckResult("mig", "pass", "MIG is off on every GPU vLLM would use")


def _check_cc(ctx: _Ctx) -> CheckResult:
    if not ctx.gpus:
        return _no_gpu("compute-capability")
    need = max(tuple(ctx.profile.hardware.min_compute_capability), MODEL_MIN_COMPUTE_CAPABILITY)
    low = [g for g in ctx.gpus if g.compute_capability < need]
    if low:
        detail = ", ".join(f"{g.label()} is {g.cc_text}" for g in low)
        return CheckResult(
            "compute-capability",
            "fail",
            f"needs compute capability {_cc_text(need)} or newer (bf16 activations, FlashInfer, {behaviour(ctx.profile.vllm.version).build_text}); {detail}",
            fix="use Ampere or newer GPUs (A100, A10, RTX 30xx/40xx/50xx, L4, L40S, H100, H200, B200)",
            gpus=tuple(g.index for g in low),
        )
    ccs = sorted({g.cc_text for g in ctx.gpus})
    return CheckResult("compute-capability", "pass", f"compute capability {', '.join(ccs)} >= {_cc_text(need)}")


def _check_driver(ctx: _Ctx) -> CheckResult:
    inv = ctx.inventory
    if inv.described:
        return CheckResult("driver", "skip", f"driver unknown: {inv.described} describes cards, not a machine "
                           "(`launcher check` on the GPU host reads it)")
    b = behaviour(ctx.profile.vllm.version)
    floor = max(version_tuple(ctx.profile.hardware.min_driver), version_tuple(b.min_driver))
    floor_text = ".".join(map(str, floor))
    cuda_need = int(float(b.cuda_version) * 1000)
    target = b.build_text
    have = inv.driver_tuple
    problems = []
    if have < floor:
        problems.append(f"driver {inv.driver_version} is older than {floor_text}")
    if inv.cuda_driver_version < cuda_need:
        problems.append(f"the driver supports CUDA {inv.cuda_text}, not {cuda_version_text(cuda_need)}")
    if problems:
        return CheckResult(
            "driver",
            "fail",
            b.tag(f"{'; '.join(problems)}; {target} needs driver {floor_text} or newer"),
            fix=f"install NVIDIA driver {floor_text} or newer (CUDA forward compatibility does not work on GeForce), "
            "then reboot; or run a vLLM build for the older CUDA and lower hardware.min_driver",
        )
    return CheckResult("driver", "pass", b.tag(f"driver {inv.driver_version} (CUDA {inv.cuda_text}) >= {floor_text} for {target}"))


def _check_memory_total(ctx: _Ctx) -> CheckResult:
    if not ctx.gpus:
        return _no_gpu("memory-total")
    need = ctx.profile.hardware.min_memory_gib
    small = [g for g in ctx.gpus if g.cuda_total_bytes / GIB + 1e-9 < need]
    if small:
        detail = ", ".join(f"{g.label()} has {gib(g.cuda_total_bytes)}" for g in small)
        return CheckResult(
            "memory-total",
            "fail",
            f"needs {need:g} GiB per GPU; {detail}",
            fix="pick a profile with more GPUs (more tensor parallel, less memory each) or GPUs with more memory",
            gpus=tuple(g.index for g in small),
        )
    least = min(g.cuda_total_bytes for g in ctx.gpus)
    return CheckResult("memory-total", "pass", f"{gib(least)} per GPU >= {need:g} GiB")


def _holders(gpu: Gpu) -> str:
    if gpu.processes is None:
        return "NVML could not list the processes"
    if gpu.processes:
        return "held by " + ", ".join(p.describe() for p in gpu.processes)
    held = (gpu.memory_total_bytes - gpu.memory_free_bytes) - (gpu.memory_reserved_bytes or 0)
    if held > 256 * (1 << 20):
        return f"{gib(held)} held by processes NVML cannot see (another container or PID namespace)"
    return "no process holds memory"


def interconnect(ctx: "_Ctx") -> Optional[str]:
    """How NCCL connects the GPUs vLLM will use (the profile's NCCL_P2P_DISABLE=1 wins)."""
    from launcher.fit.fit_profile import interconnect_for

    return interconnect_for(ctx.profile, ctx.inventory, [g.index for g in ctx.gpus])


def _check_memory_free(ctx: _Ctx) -> CheckResult:
    """vLLM's start-up check per GPU: one computation with `fit`'s start-up line (fit_profile.startup_for)."""
    from launcher.fit.estimate import startup_line
    from launcher.fit.fit_profile import startup_for

    if not ctx.gpus:
        return _no_gpu("memory-free")
    if ctx.profile.kv_cache.memory_bytes is not None:
        return CheckResult(
            "memory-free",
            "skip",
            "kv_cache.memory_bytes is set: vLLM ignores gpu_memory_utilization and skips its free-memory check; the KV fit covers memory",
        )
    link = interconnect(ctx)
    rules = [(g, startup_for(ctx.profile, g, link)) for g in ctx.gpus]
    u = rules[0][1].gpu_memory_utilization
    u_text = f"{u:g}" + ("" if ctx.profile.engine.gpu_memory_utilization else " (vLLM's default)")
    worst = min(r.headroom_low_bytes for _, r in rules)
    data: dict[str, Any] = {"gpu_memory_utilization": u, "min_headroom_bytes": int(worst)}
    note = next((r.note for _, r in rules if r.note), "")
    failing = [(g, r) for g, r in rules if r.status == "fail"]
    risky = [(g, r) for g, r in rules if r.status == "warn"]
    tight = [(g, r) for g, r in rules if r.status == "pass" and r.runtime_warn]
    best = min(r.max_utilization() for _, r in rules)
    if failing or risky:
        data["max_gpu_memory_utilization"] = best
        lines = "; ".join(f"GPU {g.index}: {startup_line(r)}; {_holders(g)}" for g, r in failing or risky)
        stop = [f"stop {', '.join(p.describe() for p in g.processes)} on GPU {g.index}" for g, _ in failing or risky if g.processes]
        lower = (f"lower engine.gpu_memory_utilization to {best:.2f} (--set engine.gpu_memory_utilization={best:.2f})"
                 if 0 < best < u else "free the GPU: lowering gpu_memory_utilization cannot make room")
        head = (f"vLLM refuses to start when the free memory at its snapshot is below ceil(gpu_memory_utilization {u_text} x CUDA total): "
                if failing else f"gpu_memory_utilization {u_text}: vLLM's start-up check passes only if what exists before its snapshot is small: ")
        return CheckResult("memory-free", "fail" if failing else "warn", head + lines + (f" [{note}]" if note else ""),
                           fix="; or ".join(stop + [lower]), gpus=tuple(g.index for g, _ in failing or risky), data=data,
                           sets=(f"engine.gpu_memory_utilization={best:.2f}",) if 0 < best < u else ())
    if tight:
        lines = "; ".join(f"GPU {g.index}: {startup_line(r)}" for g, r in tight)
        return CheckResult(
            "memory-free", "warn",
            f"gpu_memory_utilization {u_text}: starts, but the FlashInfer workspace may not fit above the budget "
            f"(it is allocated while the KV cache is initialised): {lines}" + (f" [{note}]" if note else ""),
            fix="keep the GPUs otherwise idle (no desktop), or lower engine.gpu_memory_utilization a little",
            gpus=tuple(g.index for g, _ in tight), data=data,
        )
    least = min(g.memory_free_bytes for g in ctx.gpus)
    return CheckResult(
        "memory-free", "pass",
        f"gpu_memory_utilization {u_text}: every GPU has room (least free {gib(least)}; "
        f"{gib(worst)} above the budget with the largest before-snapshot allowance, {rules[0][1].allowance.text})" + (f" [{note}]" if note else ""),
        data=data,
    )


def _check_attention(ctx: _Ctx) -> CheckResult:
    if not ctx.gpus:
        return _no_gpu("attention-kv")
    backend = ctx.profile.engine.attention_backend
    kv = ctx.profile.kv_cache.dtype
    version = ctx.profile.vllm.version
    routes = {g.compute_capability: attention_route(g.compute_capability, backend, kv, version) for g in ctx.gpus}
    bad = [r for r in routes.values() if not r.ok]
    if bad:
        fix = "; or ".join(dict.fromkeys(r.fix for r in bad if r.fix))
        sets: tuple[str, ...] = ()
        if is_fp8(kv) and all(attention_route(c, "FLASHINFER", kv, version).ok for c in routes):
            sets = ("engine.attention_backend=FLASHINFER",)
        elif all(attention_route(c, None, "auto", version).ok for c in routes):
            sets = ("engine.attention_backend=none", "kv_cache.dtype=auto")
        return CheckResult("attention-kv", "fail", "; ".join(r.reason for r in bad), fix=fix or None, sets=sets)
    unknown = [r for r in routes.values() if not r.known]
    if unknown:
        return CheckResult(
            "attention-kv", "warn", "; ".join(r.reason for r in unknown),
            fix="use FLASHINFER, FLASH_ATTN or TRITON_ATTN, whose limits launcher knows, or unset engine.attention_backend",
        )
    return CheckResult("attention-kv", "pass", "; ".join(dict.fromkeys(r.reason for r in routes.values())))


def _check_decode_path(ctx: _Ctx) -> CheckResult:
    """The decode path vLLM will run (launcher.engine.decode_path): WARN when MTP would decode on a downgraded path
    (no FULL decode graphs), with the measured cost, and a fix that keeps full graphs (another backend, or MTP off)."""
    from launcher.engine.decode_path import full_graph_backends, measured_cost
    from launcher.errors import LauncherError
    from launcher.fit.fit_profile import decode_path_for, speculative_tokens

    if not ctx.gpus:
        return _no_gpu("decode-path")
    profile = ctx.profile
    if not all(attention_route(g.compute_capability, profile.engine.attention_backend, profile.kv_cache.dtype,
                               profile.vllm.version).ok for g in ctx.gpus):
        return CheckResult("decode-path", "skip", "no decode path: the attention backend cannot serve this KV cache (attention-kv)")
    try:
        paths = {g.compute_capability: decode_path_for(profile, g) for g in ctx.gpus}
    except (LauncherError, ValueError) as exc:
        return CheckResult("decode-path", "skip", f"decode path not evaluated: {exc}")
    lines = "; ".join(dict.fromkeys(p.line() for p in paths.values()))
    data = {"decode_path": [p.to_json() for p in dict.fromkeys(paths.values())]}
    down = [p for p in paths.values() if p.downgraded and p.num_speculative_tokens > 0]
    if not down:
        return CheckResult("decode-path", "pass", lines, data=data)
    k = speculative_tokens(profile)
    kv = profile.kv_cache.dtype or "auto"
    keep = [set(full_graph_backends(profile.vllm.version, cc, kv, k)) for cc in paths]
    order = full_graph_backends(profile.vllm.version, down[0].compute_capability, kv, k)
    common = [b for b in order if all(b in s for s in keep)]
    cost = measured_cost(down[0].compute_capability)
    message = (f"MTP k={k} would decode without full CUDA graphs: {lines}; vLLM logs: \"{down[0].reason}\""
               + (f"; {cost.text()}" if cost else ""))
    gpus_cc = ", ".join(sorted({_cc_text(cc) for cc in paths}))
    if common:
        fix = (f"--set engine.attention_backend={common[0]} (serves the {kv} KV cache on compute capability {gpus_cc} "
               f"and keeps full decode graphs with MTP k={k})")
        sets: tuple[str, ...] = (f"engine.attention_backend={common[0]}",)
    else:
        fix = (f"--set speculative.enabled=false (no attention backend serves the {kv} KV cache on compute capability "
               f"{gpus_cc} with full decode graphs and MTP)")
        sets = ("speculative.enabled=false",)
    return CheckResult("decode-path", "warn", message, fix=fix, data=data, sets=sets)


def _tp_groups(ctx: _Ctx) -> list[list[Gpu]]:
    by_index = {g.index: g for g in ctx.gpus}
    devices = [by_index.get(d.gpu_index) for d in ctx.selected]
    groups = []
    for start in range(0, len(devices), ctx.tp):
        group = [g for g in devices[start : start + ctx.tp] if g is not None]
        if len(group) > 1:
            groups.append(group)
    return groups


def _check_homogeneous(ctx: _Ctx) -> CheckResult:
    if ctx.tp == 1:
        return CheckResult("tp-homogeneous", "skip", "tensor parallel 1: one GPU per model copy")
    groups = _tp_groups(ctx)
    if not groups:
        return _lone_gpu("tp-homogeneous", ctx)
    verdicts = []
    for group in groups:
        if len({g.model_key for g in group}) > 1:
            status, why = tp_mix([g.compute_capability for g in group], ctx.profile.vllm.version)
            verdicts.append((group, "warn" if status == "pass" else status, why))
    if not verdicts:
        desc = ", ".join(f"{len(g)} x {g[0].name}" for g in groups)
        return CheckResult("tp-homogeneous", "pass", f"tensor-parallel group{'s' * (len(groups) > 1)} of identical GPUs: {desc}")
    group, status, why = max(verdicts, key=lambda v: STATUS_ORDER[v[1]])
    desc = ", ".join(f"GPU {g.index} {g.name} ({gib(g.memory_total_bytes)}, {g.cc_text})" for g in group)
    same: dict[Any, list[int]] = {}
    for e in ctx.inventory.gpus:
        same.setdefault(e.model_key, []).append(e.index)
    enough = [ids for ids in same.values() if len(ids) >= ctx.world]
    sets: tuple[str, ...] = ()
    if enough:
        ids = ",".join(str(i) for i in enough[0][: ctx.world])
        identical = f"use identical GPUs only: --set env.CUDA_DEVICE_ORDER=PCI_BUS_ID --set env.CUDA_VISIBLE_DEVICES={ids}"
        sets = ("env.CUDA_DEVICE_ORDER=PCI_BUS_ID", f"env.CUDA_VISIBLE_DEVICES={ids}")
    else:
        identical = "use one model of GPU (a profile with fewer GPUs), or replace the odd one"
    if status == "fail":
        return CheckResult("tp-homogeneous", "fail", f"tensor-parallel group mixes GPU models vLLM cannot run together: {desc}; {why}",
                           fix=identical, gpus=tuple(g.index for g in group), sets=sets)
    order = "" if ctx.env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" else "; set CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA and NVML number the GPUs alike"
    return CheckResult(
        "tp-homogeneous", "warn",
        f"tensor-parallel group mixes GPU models: {desc}; shards are equal, so the smaller and slower GPU sets the pace and the memory ({why})",
        fix=("nothing to do for a working start" + order + "; for full speed, " + identical),
        gpus=tuple(g.index for g in group),
    )


def _check_p2p(ctx: _Ctx) -> tuple[CheckResult, list[Adjustment]]:
    if ctx.tp == 1:
        return CheckResult("p2p", "skip", "tensor parallel 1: no all-reduce between GPUs"), []
    groups = _tp_groups(ctx)
    if not groups:
        return _lone_gpu("p2p", ctx), []
    missing: list[str] = []
    unknown: list[str] = []
    linked: list[str] = []
    involved: set[int] = set()
    for group in groups:
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                link = ctx.inventory.link(a.index, b.index)
                pair = f"GPU {a.index}-{b.index}"
                state = link.p2p if link is not None else None
                if state is None:
                    why = "no link entry in the inventory" if link is None else f"NVML said {link.p2p_read or link.nvlink}"
                    unknown.append(f"{pair} ({why})")
                elif state:
                    linked.append(f"{pair} {'NVLink' if link is not None and link.nvlinked else 'PCIe'}")
                else:
                    assert link is not None
                    missing.append(f"{pair} ({link.why_not()})")
                    involved.update((a.index, b.index))
    already = ctx.profile.parallel.disable_custom_all_reduce is True and ctx.profile.env.get("NCCL_P2P_DISABLE") == "1"
    if missing:
        reason = f"no GPU peer-to-peer between {', '.join(missing)}"
        if already:
            return CheckResult("p2p", "pass", f"{reason}; the profile already sets NCCL_P2P_DISABLE=1 and --disable-custom-all-reduce"), []
        adjustment = Adjustment(
            reason, {"env": {"NCCL_P2P_DISABLE": "1"}, "parallel": {"disable_custom_all_reduce": True}}
        )
        return (
            CheckResult(
                "p2p",
                "warn",
                f"{reason}: NCCL can hang and custom all-reduce fails without it (vllm#14449), so launcher adds "
                "NCCL_P2P_DISABLE=1 and --disable-custom-all-reduce (shown as `check:` in `launcher explain`)",
                fix="nothing to do for a working start (all-reduce goes through host memory, slower); "
                "an NVLink bridge or a P2P-capable platform restores the fast path",
                gpus=tuple(sorted(involved)),
                data={"adjusted": True},
            ),
            [adjustment],
        )
    if unknown:
        return (
            CheckResult(
                "p2p",
                "warn",
                f"GPU peer-to-peer unknown for {', '.join(unknown)}",
                fix="capture the inventory with `launcher gpus --json` on the GPU host (it reads P2P through NVML); "
                "if the GPUs are GeForce cards without NVLink, --set env.NCCL_P2P_DISABLE=1 --set parallel.disable_custom_all_reduce=true",
            ),
            [],
        )
    return CheckResult("p2p", "pass", f"peer-to-peer works: {', '.join(linked)}"), []


def _check_kv_fit(ctx: _Ctx, kv_fit: Optional[KvFit]) -> CheckResult:
    if kv_fit is None:
        return CheckResult("kv-fit", "skip", "KV-cache fit not evaluated (the estimator, launcher.fit.estimate, is not available)")
    if not ctx.gpus:
        return _no_gpu("kv-fit")
    result = kv_fit(ctx.profile, ctx.gpus)
    if result is None:
        return CheckResult("kv-fit", "skip", "KV-cache fit: the estimator has no answer for this profile")
    return result
