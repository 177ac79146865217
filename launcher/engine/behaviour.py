"""What vLLM does, per version, as data: the one place checks, fit, auto and the messages ask.

`launcher/engines/behaviour-<version>.json` holds, for each vLLM version launcher knows, the rules read
from that version's own source (each with the file::function it came from): defaults, the attention
backend chosen for a compute capability and KV dtype, the Gated DeltaNet prefill backend, the start-up
memory rule and what exists before vLLM's memory snapshot, the FlashInfer workspace, the CUDA build and
driver floor, and which GPU architectures can share one tensor-parallel group. A version without its
own file is judged by the nearest known version, and every verdict built on that says so.
Pure: reads package data only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Optional, Sequence

from launcher.defaults import DEFAULT_VLLM_VERSION as DEFAULT_VERSION  # noqa: E402
from launcher.defaults import GIB  # noqa: E402,F401


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


@lru_cache(maxsize=None)
def known_versions() -> tuple[str, ...]:
    """Versions with a behaviour file, oldest first."""
    names = [p.name for p in resources.files("launcher.engines").iterdir() if p.name.startswith("behaviour-") and p.name.endswith(".json")]
    from launcher.engine.schemas import version_key

    return tuple(sorted((n[len("behaviour-") : -len(".json")] for n in names), key=version_key))


def nearest_version(version: str) -> str:
    """The known version closest to `version`, by the engine schemas' one rule (launcher.engine.nearest_in)."""
    from launcher.engine.schemas import nearest_in

    return nearest_in(version, list(known_versions())).version


@dataclass(frozen=True)
class Behaviour:
    """One vLLM version's rules. `fallback_note` is set when they are another version's."""

    version: str  # the version asked for
    rules_of: str  # the version whose rules these are
    data: dict[str, Any]

    @property
    def fallback_note(self) -> str:
        if self.version == self.rules_of:
            return ""
        return f"vLLM {self.version} is not in launcher's tables: judged by the rules of vLLM {self.rules_of}, the nearest known version"

    def tag(self, text: str) -> str:
        """`text`, with the fallback said when the rules are another version's."""
        return f"{text} [{self.fallback_note}]" if self.fallback_note else text

    @property
    def default_gpu_memory_utilization(self) -> float:
        return float(self.data["defaults"]["gpu_memory_utilization"])

    @property
    def hybrid_prefix_caching(self) -> bool:
        """Whether vLLM turns prefix caching on by default for a hybrid (GDN + attention) model."""
        return bool(self.data["defaults"]["hybrid_prefix_caching"])

    def profiling_kv_blocks(self, max_num_seqs: int, num_speculative_tokens: int, compute_capability: Sequence[int]) -> int:
        """Blocks of the throw-away KV cache vLLM allocates to measure its CUDA graphs.

        capture size = min(max_num_seqs x (1 + k) x 2, 512; 1024 on data-centre Blackwell) (config/vllm.py);
        0.25.1 takes that many blocks, 0.32 and later min(max_num_seqs, it).
        """
        cap = min(max_num_seqs * (1 + num_speculative_tokens) * 2, 1024 if int(compute_capability[0]) == 10 else 512)
        rule = self.data["cudagraph_profiling"]["blocks"]
        return cap if rule == "capture_size" else min(max_num_seqs, cap)

    @property
    def profiling_measured(self) -> bool:
        return bool(self.data["cudagraph_profiling"]["measured"])

    @property
    def cuda_version(self) -> str:
        return str(self.data["cuda"]["version"])

    @property
    def min_driver(self) -> str:
        return str(self.data["cuda"]["min_driver"])

    @property
    def build_text(self) -> str:
        return f"vLLM {self.version}'s CUDA {self.cuda_version} build"


@lru_cache(maxsize=None)
def _load(version: str) -> dict[str, Any]:
    text = resources.files("launcher.engines").joinpath(f"behaviour-{version}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def behaviour(version: Optional[str] = None) -> Behaviour:
    """The rules for `version` (default: launcher's default vLLM), or the nearest known version's."""
    asked = version or DEFAULT_VERSION
    rules_of = nearest_version(asked)
    return Behaviour(asked, rules_of, _load(rules_of))


# ------------------------------------------------------------------------ attention backend


def is_fp8(kv_dtype: Optional[str]) -> bool:
    return bool(kv_dtype) and str(kv_dtype).lower().startswith("fp8")


def _cc_text(cc: Sequence[int]) -> str:
    return f"{cc[0]}.{cc[1]}"


@dataclass(frozen=True)
class Route:
    """Which attention backend serves the KV cache, and whether that works on this compute capability."""

    backend: Optional[str]
    ok: bool
    reason: str
    known: bool = True
    fix: str = ""


FP8_BACKEND_FIX = (
    "--set engine.attention_backend=FLASHINFER (the only fp8-KV route below compute capability 8.9), "
    "or --set engine.attention_backend=none to let vLLM choose"
)


def _supports(rule: dict[str, Any], cc: tuple[int, int], kv_dtype: Optional[str]) -> tuple[bool, str]:
    """Whether one backend (its rule from the behaviour file) serves this CC and KV dtype, and why not."""
    lo = _cc(rule.get("cc_min", "0.0"))
    hi = _cc(rule["cc_max"]) if "cc_max" in rule else None
    if cc < lo or (hi is not None and cc > hi):
        span = f"{_cc_text(lo)}-{_cc_text(hi)}" if hi else f"{_cc_text(lo)} or newer"
        return False, f"needs compute capability {span}, not {_cc_text(cc)}"
    if is_fp8(kv_dtype):
        if "e5m2" in str(kv_dtype).lower() and not rule.get("fp8_e5m2", True):
            return False, rule.get("why_fp8", "no fp8_e5m2")
        majors = rule.get("fp8_cc_majors")
        if majors is not None and cc[0] not in majors:
            return False, rule.get("why_fp8", f"no fp8 KV cache on {_cc_text(cc)}")
        fp8_min = rule.get("fp8_cc_min")
        if fp8_min is not None and cc < _cc(fp8_min):
            return False, rule.get("why_fp8", f"fp8 KV cache needs compute capability {fp8_min}")
    return True, ""


def attention_route(cc: Sequence[int], backend: Optional[str], kv_dtype: Optional[str], version: Optional[str] = None) -> Route:
    """vLLM's attention backend for a compute capability and KV dtype: the forced one, or the first in
    `platforms/cuda.py::_get_backend_priorities` order that supports both (as vLLM picks)."""
    b = behaviour(version)
    att = b.data["attention"]
    rules: dict[str, dict[str, Any]] = att["backends"]
    cap = (int(cc[0]), int(cc[1]))
    kv = f"{kv_dtype} KV cache" if is_fp8(kv_dtype) else "bf16 KV cache"
    where = f"compute capability {_cc_text(cap)}"
    forced = backend.upper() if backend else None
    if forced is None:
        order = next(p["order"] for p in att["priority"] if p["cc_major"] in (None, cap[0]))
        for name in order:
            if name in rules and _supports(rules[name], cap, kv_dtype)[0]:
                others = [n for n in order[: order.index(name)] if n in rules]
                why = f" ({', '.join(others)}: {'; '.join(_supports(rules[n], cap, kv_dtype)[1] for n in others)})" if others else ""
                return Route(name, True, b.tag(f"vLLM {b.version} picks {name} for the {kv} on {where}{why}"))
        return Route(
            None, False, b.tag(f"no attention backend of vLLM {b.version} serves an {kv} on {where}"),
            fix="--set kv_cache.dtype=auto (bf16 KV, twice the memory per token), or GPUs of compute capability 8.0-12.1",
        )
    rule = rules.get(forced)
    if rule is None:
        return Route(forced, True, b.tag(f"attention backend {forced} with the {kv} is not in launcher's table; not checked"), known=False)
    ok, why = _supports(rule, cap, kv_dtype)
    if ok:
        return Route(forced, True, b.tag(f"{forced} serves the {kv} on {where}"))
    fp8_problem = is_fp8(kv_dtype) and _supports(rule, cap, None)[0]
    fix = FP8_BACKEND_FIX if fp8_problem else "use GPUs of compute capability 8.0 or newer (this model needs 8.0 anyway)"
    return Route(forced, False, b.tag(f"{forced} cannot serve the {kv} on {where}: {why}"), fix=fix)


def flashinfer_gdn_prefill(cc: Sequence[int], version: Optional[str] = None) -> bool:
    """Whether vLLM runs the Gated DeltaNet prefill on FlashInfer here (qwen_gdn_linear_attn.py::_resolve_gdn_prefill_backend)."""
    g = behaviour(version).data["gdn_prefill"]
    cap = (int(cc[0]), int(cc[1]))
    return _cc_text(cap) in g["flashinfer_cc"] or cap[0] in g["flashinfer_cc_majors"]


def flashinfer_workspace_bytes(max_num_batched_tokens: int, q_heads_per_gpu: int, head_dim: int, version: Optional[str] = None) -> int:
    """FlashInfer's workspace buffer (flashinfer.py::_get_workspace_buffer): the default, or the batch's head footprint."""
    w = behaviour(version).data["flashinfer_workspace"]
    return max(int(w["min_bytes"]), max_num_batched_tokens * q_heads_per_gpu * head_dim * int(w["bytes_per_batched_token_per_q_head_dim"]))


# ------------------------------------------------------------------------ start-up memory

@dataclass(frozen=True)
class Allowance:
    """What exists on a GPU before vLLM's memory snapshot (CUDA context, NCCL, cuBLAS): the plausible range."""

    low_bytes: int
    high_bytes: int
    parts: str  # how it was composed, for messages

    @property
    def text(self) -> str:
        return f"{self.low_bytes / GIB:.2f}-{self.high_bytes / GIB:.2f} GiB {self.parts}"


def allowance(world_size: int, interconnect: Optional[str], version: Optional[str] = None) -> Allowance:
    """The before-snapshot range for one GPU of an engine of `world_size` GPUs on this machine.

    `interconnect`: "nvlink", "pcie", "p2p-disabled" (NCCL_P2P_DISABLE=1), or None when unknown (widest range).
    One GPU: no NCCL communicator holds memory (world size 1).
    """
    pre = behaviour(version).data["startup_memory"]["before_snapshot"]
    lo = pre["context_gib"][0] + pre["cublas_gib"][0]
    hi = pre["context_gib"][1] + pre["cublas_gib"][1]
    parts = ["CUDA context"] + (["cuBLAS"] if pre["cublas_gib"][1] else [])
    if world_size > 1:
        ranges = pre["nccl_gib"]
        if interconnect in ranges:
            n_lo, n_hi = ranges[interconnect]
            parts.append(f"NCCL over {interconnect}")
        else:
            n_lo = min(r[0] for r in ranges.values())
            n_hi = max(r[1] for r in ranges.values())
            parts.append("NCCL (interconnect unknown)")
        lo += n_lo
        hi += n_hi
    return Allowance(int(lo * GIB), int(hi * GIB), "(" + " + ".join(parts) + ")")


@dataclass(frozen=True)
class Startup:
    """vLLM's start-up free-memory check for one GPU, as vLLM does it, with launcher's plausible range."""

    cuda_total_bytes: int
    free_bytes: int  # NVML free before the start
    gpu_memory_utilization: float
    requested_bytes: int  # ceil(u x CUDA total)
    allowance: Allowance
    workspace_bytes: int  # FlashInfer's workspace, 0 when FlashInfer does not serve attention
    status: str  # "pass", "warn" (could raise), "fail" (surely raises)
    runtime_warn: bool  # the workspace may not fit above the budget
    note: str = ""  # the version fallback, when there is one

    @property
    def headroom_low_bytes(self) -> int:
        """Free at the snapshot minus the budget, with the largest plausible allowance."""
        return self.free_bytes - self.allowance.high_bytes - self.requested_bytes

    @property
    def headroom_high_bytes(self) -> int:
        return self.free_bytes - self.allowance.low_bytes - self.requested_bytes

    def max_utilization(self) -> float:
        """The largest gpu_memory_utilization (hundredths) that passes with the largest allowance."""
        room = self.free_bytes - self.allowance.high_bytes
        return max(0.0, math.floor(room / self.cuda_total_bytes * 100) / 100) if self.cuda_total_bytes > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "cuda_total_bytes": self.cuda_total_bytes,
            "free_bytes": self.free_bytes,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "requested_bytes": self.requested_bytes,
            "allowance_low_bytes": self.allowance.low_bytes,
            "allowance_high_bytes": self.allowance.high_bytes,
            "flashinfer_workspace_bytes": self.workspace_bytes,
            "headroom_low_bytes": self.headroom_low_bytes,
            "headroom_high_bytes": self.headroom_high_bytes,
            "status": self.status,
            "runtime_warn": self.runtime_warn,
        }


def startup(
    cuda_total_bytes: int,
    free_bytes: int,
    gpu_memory_utilization: float,
    *,
    world_size: int,
    interconnect: Optional[str],
    workspace_bytes: int = 0,
    version: Optional[str] = None,
) -> Startup:
    """vLLM's start-up check (v1/worker/utils.py::request_memory after gpu_worker.py::Worker.init_device).

    requested = ceil(u x CUDA total), where CUDA total is cudaMemGetInfo's total (NVML total minus the
    driver's reserved memory, measured equal to the MiB on H200), never NVML's total. vLLM raises when
    the free memory at its snapshot, i.e. NVML free minus what the CUDA context, NCCL and (0.33) cuBLAS
    already took, is below that. FAIL where even the smallest plausible allowance leaves too little,
    WARN where the largest would. The FlashInfer workspace is allocated later, inside KV-cache
    initialisation, from what is left above the budget: a runtime-headroom warning, never a start-up failure.
    """
    b = behaviour(version)
    requested = math.ceil(cuda_total_bytes * gpu_memory_utilization)
    allow = allowance(world_size, interconnect, b.version)
    if free_bytes - allow.low_bytes < requested:
        status = "fail"
    elif free_bytes - allow.high_bytes < requested:
        status = "warn"
    else:
        status = "pass"
    runtime_warn = workspace_bytes > 0 and free_bytes - allow.low_bytes - requested < workspace_bytes
    return Startup(cuda_total_bytes, free_bytes, gpu_memory_utilization, requested, allow, workspace_bytes, status, runtime_warn, b.fallback_note)


# ------------------------------------------------------------------------ tensor-parallel mixing


def tp_mix(ccs: Sequence[Sequence[int]], version: Optional[str] = None) -> tuple[str, str]:
    """("pass"|"warn"|"fail", why) for GPUs of these compute capabilities in one tensor-parallel group."""
    rules = behaviour(version).data["tp_mixing"]
    caps = sorted({(int(c[0]), int(c[1])) for c in ccs})
    if len(caps) <= 1:
        return "pass", "one architecture"
    for major, why in rules["incompatible"].items():
        if any(c[0] == int(major) for c in caps):
            return "fail", why
    for family in rules["compatible"]:
        if set(caps) <= {_cc(f) for f in family["ccs"]}:
            return "warn", str(family["note"])
    return "warn", f"compute capabilities {', '.join(_cc_text(c) for c in caps)} together are not in launcher's table; untested"
