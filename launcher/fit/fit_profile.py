"""Profile + GPUs -> the memory estimate: maps a validated Profile onto `launcher.fit.estimate.FitInput`.

Reads the checkpoint's index (launcher.model.weights) when the model is local or in the HF cache;
everything else is pure. GPUs come from an inventory (NVML readings) or from the GPU table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from launcher.engine.behaviour import Startup, behaviour
from launcher.errors import HardwareError, ProfileError
from launcher.fit.estimate import GIB, FitInput, FitResult, WeightSizes, estimate, resolve_batch, startup_of, suggest
from launcher.hardware.catalog import GpuModel, lookup
from launcher.model.facts import ModelFacts, facts_for
from launcher.profile.schema import node_gpu_counts

if TYPE_CHECKING:
    from launcher.engine.decode_path import DecodePath
    from launcher.hardware.inventory import Gpu, Inventory
    from launcher.profile.schema import Profile
    from launcher.verdict import CheckResult


@dataclass(frozen=True)
class GpuSpec:
    """What the estimator needs of one GPU."""

    label: str
    name: str
    cuda_total_bytes: int
    cuda_total_uncertainty_bytes: int
    nvml_total_bytes: int
    free_bytes: int | None  # None: unknown (a GPU from the table), an idle GPU is assumed
    compute_capability: tuple[int, int]
    memory_source: str
    index: int | None = dataclasses.field(default=None, compare=False)  # NVML index of an inventory GPU

    @classmethod
    def from_model(cls, model: GpuModel, label: str | None = None) -> "GpuSpec":
        return cls(
            label=label or model.key,
            name=model.nvml_name,
            cuda_total_bytes=model.cuda_total_bytes,
            cuda_total_uncertainty_bytes=model.cuda_total_uncertainty_bytes,
            nvml_total_bytes=model.memory_total_bytes,
            free_bytes=None,
            compute_capability=model.compute_capability,
            memory_source=f"GPU table ({model.key}: {model.source})",
        )

    @classmethod
    def from_gpu(cls, gpu: "Gpu") -> "GpuSpec":
        total, sigma, how = gpu.cuda_total()
        if gpu.memory_reserved_bytes is not None:
            sigma = int(0.05 * GIB)
        return cls(
            label=gpu.label(),
            name=gpu.name,
            cuda_total_bytes=total,
            cuda_total_uncertainty_bytes=sigma,
            nvml_total_bytes=gpu.memory_total_bytes,
            free_bytes=gpu.memory_free_bytes,
            compute_capability=tuple(gpu.compute_capability),  # type: ignore[arg-type]
            memory_source=how,
            index=gpu.index,
        )


Target = Union["Inventory", Sequence["Gpu"], Sequence[GpuSpec], GpuModel, GpuSpec, str]


def _tp_pp(profile: "Profile") -> tuple[int, int]:
    return profile.parallel.tp, profile.parallel.pp


def gpu_specs(profile: "Profile", target: Target, environ: Mapping[str, str] | None = None) -> list[GpuSpec]:
    """The GPUs one replica of the profile runs on (tensor x pipeline of them)."""
    tp, pp = _tp_pp(profile)
    need = tp * pp
    if isinstance(target, str):
        target = lookup(target)
    if isinstance(target, GpuModel):
        return [GpuSpec.from_model(target)] * need
    if isinstance(target, GpuSpec):
        return [target] * need
    from launcher.hardware.inventory import VISIBILITY_VARIABLES, Gpu, Inventory, resolve_visible

    if isinstance(target, Inventory):
        environ = os.environ if environ is None else environ
        env: dict[str, str] = {}
        for key in VISIBILITY_VARIABLES:
            value = profile.env.get(key, environ.get(key))
            if value is not None:
                env[key] = value
        visible = resolve_visible(target, env)
        by_index = {g.index: g for g in target.gpus}
        chosen = [by_index[d.gpu_index] for d in visible.devices if isinstance(by_index.get(d.gpu_index), Gpu)]
        if len(chosen) < need:
            raise HardwareError(
                f"the profile needs {need} readable GPUs (tensor {tp} x pipeline {pp}); {len(chosen)} are visible"
                f" in {getattr(target, 'source', None) or 'the inventory'}"
            )
        return [GpuSpec.from_gpu(g) for g in chosen[:need]]
    specs = [t if isinstance(t, GpuSpec) else GpuSpec.from_gpu(t) for t in target]
    if not specs:
        raise HardwareError("no GPU to fit the profile on")
    return specs[:need] if len(specs) >= need else specs


def speculative_tokens(profile: "Profile") -> int:
    """k for the estimator: MTP tokens when MTP is on, else 0."""
    spec = profile.speculative
    if spec is None or not spec.enabled or spec.method != "mtp":
        return 0
    return spec.num_speculative_tokens


def interconnect_for(profile: "Profile", inventory: "Inventory | None", indices: Sequence[int]) -> str | None:
    """The link NCCL uses between the engine's GPUs: the profile's NCCL_P2P_DISABLE=1 wins, else the inventory's links."""
    if profile.env.get("NCCL_P2P_DISABLE") == "1":
        return "p2p-disabled"
    return inventory.interconnect(indices) if inventory is not None else None


def fit_input(
    profile: "Profile",
    gpu: GpuSpec,
    weights: WeightSizes,
    facts: ModelFacts,
    max_model_len: int | None = None,
    interconnect: str | None = None,
) -> FitInput:
    """The estimator's input for one GPU; `max_model_len` replaces the profile's (used for auto)."""
    e = profile.engine
    tp, pp = _tp_pp(profile)
    length = max_model_len
    if length is None:
        length = e.max_model_len if isinstance(e.max_model_len, int) else facts.max_position_embeddings
    return FitInput(
        total_memory_bytes=gpu.cuda_total_bytes,
        compute_capability=gpu.compute_capability,
        gpu_memory_utilization=e.gpu_memory_utilization or behaviour(profile.vllm.version).default_gpu_memory_utilization,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        kv_cache_dtype=profile.kv_cache.dtype or "auto",
        num_speculative_tokens=speculative_tokens(profile),
        max_model_len=length,
        max_num_seqs=e.max_num_seqs,
        max_num_batched_tokens=e.max_num_batched_tokens,
        enable_prefix_caching=(behaviour(profile.vllm.version).hybrid_prefix_caching if e.enable_prefix_caching is None
                               else e.enable_prefix_caching),
        language_model_only=bool(profile.model.language_model_only),
        skip_mm_profiling=bool(e.skip_mm_profiling),
        gpu_name=gpu.name,
        nvml_total_memory_bytes=gpu.nvml_total_bytes,
        performance_mode=e.performance_mode or "balanced",
        weights=weights,
        free_memory_bytes=gpu.free_bytes,
        attention_backend=e.attention_backend,
        gdn_prefill_backend=e.gdn_prefill_backend,
        mamba_ssm_cache_dtype=e.mamba_ssm_cache_dtype or "auto",
        enforce_eager=bool(e.enforce_eager),
        kv_cache_memory_bytes=profile.kv_cache.memory_bytes,
        total_memory_uncertainty_bytes=gpu.cuda_total_uncertainty_bytes,
        model=facts,
        vllm_version=profile.vllm.version,
        interconnect=interconnect,
        local_world_size=node_gpu_counts(profile)[0] if profile.deployment is not None and profile.deployment.nodes > 1 else None,
        **_decode_settings(profile),
    )


def _decode_settings(profile: "Profile") -> dict[str, Any]:
    """The profile's compilation config and environment as the decode path's settings (FitInput fields)."""
    e = profile.engine
    cc_json = e.compilation_config or {}
    mode = cc_json.get("cudagraph_mode")
    sizes = cc_json.get("cudagraph_capture_sizes")
    max_cg = e.max_cudagraph_capture_size or cc_json.get("max_cudagraph_capture_size")
    repo = str((profile.env or {}).get("FLASHINFER_CUBINS_REPOSITORY", ""))
    # utils/flashinfer.py::has_nvidia_artifactory: a loopback repository means no TRT-LLM/XQA cubins to fetch.
    cubins = False if repo.startswith(("http://127.", "http://localhost")) else None
    return dict(cudagraph_mode=str(mode).upper() if isinstance(mode, str) else None, trtllm_cubins=cubins,
                max_capture_size=int(max_cg) if isinstance(max_cg, int) else None,
                capture_sizes=tuple(int(x) for x in sizes) if isinstance(sizes, list) else None)


def profile_weights(profile: "Profile", environ: Mapping[str, str] | None = None) -> WeightSizes:
    """Weight bytes for the profile's model: its local index when found, else the shipped facts."""
    from launcher.model.weights import read_weight_bytes

    return read_weight_bytes(profile.model.name, facts_for(profile.facts_key), env=environ)


def _worse_startup(results: Sequence[FitResult]) -> FitResult:
    """The result whose KV pool is smallest, carrying the start-up check of the tightest GPU."""
    deciding = min(results, key=lambda r: (r.kv_available.bytes, r.num_blocks))
    tightest = min(results, key=lambda r: r.startup.margin_bytes)
    if tightest is deciding:
        return deciding
    note = f"start-up check from the GPU with the least free memory ({tightest.inputs.gpu_name})"
    return dataclasses.replace(deciding, startup=tightest.startup, notes=deciding.notes + (note,))


def fit_profile(
    profile: "Profile",
    target: Target,
    *,
    weights: WeightSizes | None = None,
    environ: Mapping[str, str] | None = None,
    max_model_len: int | None = None,
) -> FitResult:
    """Estimate the profile on its GPUs; the smallest GPU decides the KV pool (vLLM takes the minimum).

    `target`: an Inventory (visibility variables of the profile and `environ` applied), a list of
    inventory GPUs or GpuSpecs, a GpuModel, or a GPU name from the table ("RTX 3090").
    `max_model_len="auto"` in the profile is estimated at the model's limit and then at the
    largest length that fits, as vLLM's own auto-fit does.
    """
    facts = facts_for(profile.facts_key)
    weights = weights or profile_weights(profile, environ)
    specs = gpu_specs(profile, target, environ)
    link = _interconnect_of_target(profile, target, specs)
    results = [estimate(fit_input(profile, spec, weights, facts, max_model_len, link)) for spec in _unique(specs)]
    result = _worse_startup(results)
    if max_model_len is None and profile.engine.max_model_len == "auto":
        fitted = result.max_model_len_fit
        if fitted <= 0:
            return dataclasses.replace(result, notes=result.notes + ("max_model_len auto: not even one KV block fits",))
        results = [estimate(fit_input(profile, spec, weights, facts, fitted, link)) for spec in _unique(specs)]
        result = _worse_startup(results)
        result = dataclasses.replace(result, notes=result.notes + (f"max_model_len auto -> {fitted}",))
    return result


def _interconnect_of_target(profile: "Profile", target: Target, specs: Sequence[GpuSpec]) -> str | None:
    from launcher.hardware.inventory import Inventory

    inventory = target if isinstance(target, Inventory) else None
    indices = [s.index for s in specs if s.index is not None]
    return interconnect_for(profile, inventory, indices)


def startup_for(profile: "Profile", gpu: "Gpu", interconnect: str | None) -> Startup:
    """vLLM's start-up check for one inventory GPU: `check`'s memory-free and `fit`'s start-up line both come from here."""
    from launcher.model.facts import is_known

    spec = GpuSpec.from_gpu(gpu)
    if is_known(profile.facts_key):
        facts = facts_for(profile.facts_key)
        inp = fit_input(profile, spec, WeightSizes.from_facts(facts), facts, interconnect=interconnect)
        m, _ = resolve_batch(inp)
        return startup_of(inp, m)
    # A model launcher has no facts for: vLLM's rule still holds; the FlashInfer workspace is its default size.
    from launcher.engine import behaviour

    version = profile.vllm.version
    route = behaviour.attention_route(gpu.compute_capability, profile.engine.attention_backend, profile.kv_cache.dtype, version)
    workspace = behaviour.flashinfer_workspace_bytes(0, 0, 0, version) if route.backend == "FLASHINFER" else 0
    return behaviour.startup(spec.cuda_total_bytes, gpu.memory_free_bytes, profile.engine.gpu_memory_utilization
                             or behaviour.behaviour(version).default_gpu_memory_utilization,
                             world_size=node_gpu_counts(profile)[0], interconnect=interconnect, workspace_bytes=workspace, version=version)


def _unique(specs: Sequence[GpuSpec]) -> list[GpuSpec]:
    out: list[GpuSpec] = []
    for spec in specs:
        if spec not in out:
            out.append(spec)
    return out


def auto_max_model_len(profile: "Profile", target: Target, *, safe: bool = True,
                       weights: WeightSizes | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The max_model_len to render for `auto`: whole KV blocks, capped at the model's limit.

    `safe` keeps the estimate's combined uncertainty as margin (the length starts even when the
    estimate is off by its stated error); `safe=False` is the nominal value vLLM's own auto-fit
    would reach if the estimate were exact.

    Raises:
        HardwareError: not even one KV block is left for a request on these GPUs.
    """
    facts = facts_for(profile.facts_key)
    result = fit_profile(profile, target, weights=weights, environ=environ,
                         max_model_len=facts.max_position_embeddings)
    value = result.max_model_len_safe if safe else result.max_model_len_fit
    if value <= 0:
        raise HardwareError(
            f"max_model_len auto: no context length fits on {result.inputs.gpu_name or 'these GPUs'} "
            f"({result.kv_available.bytes / GIB:.2f} GiB of KV cache estimated); see `launcher fit`"
        )
    return value


def fix_hint(profile: "Profile", result: FitResult) -> str:
    s = suggest(result.inputs, result)
    options = []
    if s.max_model_len:
        options.append(f"--set engine.max_model_len={s.max_model_len}")
    if s.max_num_seqs and s.max_num_seqs < result.max_num_seqs:
        options.append(_fewer_sequences_text(result, s.max_num_seqs))
    if s.gpu_memory_utilization and s.gpu_memory_utilization > result.inputs.gpu_memory_utilization:
        options.append(f"--set engine.gpu_memory_utilization={s.gpu_memory_utilization:.2f}")
    if not result.inputs.language_model_only and result.inputs.weights.vision_bytes:
        options.append("--set model.language_model_only=true")
    if result.inputs.kv_bytes == 2:
        options.append("--set kv_cache.dtype=fp8_e4m3 (half the attention KV; FlashInfer on CC < 8.9)")
    return "; or ".join(options) or "use more or larger GPUs (a higher tensor_parallel_size)"


def _fewer_sequences_text(result: FitResult, n: int) -> str:
    """Fewer sequences keep the context but are no equal alternative to a shorter one: say what they cost."""
    at = estimate(dataclasses.replace(result.inputs, max_num_seqs=n))
    return (f"to keep {result.inputs.max_model_len:,} tokens, --set engine.max_num_seqs={n} (at most {n} requests at once instead "
            f"of {result.max_num_seqs}; room for {at.concurrency_at_max_len:.2f} at full length)")


def kv_fit_check(profile: "Profile", gpus: Sequence["Gpu"]) -> "CheckResult":
    """The `kv-fit` result for `launcher.preflight.checks.evaluate(kv_fit=...)`.

    fail: one request at max_model_len cannot fit (vLLM would stop at start-up);
    warn: it fits, but the margin is inside the estimate's combined uncertainty;
    pass: it fits with margin. The fix names the max_model_len / max_num_seqs /
    gpu_memory_utilization that would fit with margin.
    """
    from launcher.model.facts import is_known
    from launcher.verdict import CheckResult, Status

    if not is_known(profile.facts_key):
        return CheckResult(
            "kv-fit", "skip",
            f"KV-cache fit not evaluated: launcher has no facts for {profile.facts_key} "
            "(for a local copy of a known model, set model.facts to its id)",
        )
    try:
        result = fit_profile(profile, list(gpus))
    except ProfileError as exc:
        return CheckResult("kv-fit", "skip", f"KV-cache fit not evaluated: {exc}")
    gib = lambda n: f"{n / GIB:.2f} GiB"  # noqa: E731
    L = result.inputs.max_model_len
    message = (
        f"KV cache {gib(result.kv_available.bytes)} ± {gib(result.uncertainty_bytes)} on {result.inputs.gpu_name}; "
        f"one {L:,}-token request needs {gib(result.bytes_needed_to_start)} ({result.blocks_per_request} blocks of "
        f"{result.block_size_tokens} tokens, {result.bytes_per_block / (1 << 20):.2f} MiB, plus the null block); "
        f"margin {result.margin_bytes / GIB:+.2f} GiB; pool {result.kv_cache_tokens:,} tokens, "
        f"{result.concurrency_at_max_len:.2f} requests at full length{_deployment_text(profile, result)}; largest max_model_len that fits: "
        f"{result.max_model_len_fit:,} ({result.max_model_len_safe:,} with margin)"
    )
    data: dict[str, Any] = {
        "max_model_len": L,
        "max_model_len_fit": result.max_model_len_fit,
        "max_model_len_safe": result.max_model_len_safe,
        "concurrency_at_max_len": round(result.concurrency_at_max_len, 4),
        "kv_cache_tokens": result.kv_cache_tokens,
        "kv_available_bytes": result.kv_available.bytes,
        "uncertainty_bytes": result.uncertainty_bytes,
        "margin_bytes": result.margin_bytes,
        "block_size_tokens": result.block_size_tokens,
        "bytes_per_block": result.bytes_per_block,
        "verdict": result.kv_verdict,
    }
    indices = tuple(g.index for g in gpus)
    if result.kv_verdict == "fits":
        return CheckResult("kv-fit", "pass", message, gpus=indices, data=data)
    status: Status = "warn" if result.kv_verdict == "marginal" else "fail"
    head = "fits only within the estimate's error: " if status == "warn" else "does not fit: "
    return CheckResult("kv-fit", status, head + message, fix=fix_hint(profile, result), gpus=indices, data=data,
                       sets=_kv_sets(result))


def engines_of(profile: "Profile") -> tuple[int, str]:
    """How many engines (each with its own KV pool) the profile runs in all, and how: data parallel x replicas."""
    from launcher.profile.topology import topology

    t = topology(profile)
    parts = [f"data parallel {t.data_parallel_size}"] if t.data_parallel_size > 1 else []
    if t.replicas > 1:
        parts.append(f"{t.replicas} replicas")
    return t.data_parallel_size * t.replicas, " x ".join(parts)


def _deployment_text(profile: "Profile", result: FitResult) -> str:
    engines, layout = engines_of(profile)
    if engines == 1:
        return ""
    return f" per engine ({result.concurrency_at_max_len * engines:.2f} for the {engines} engines of {layout})"


def _kv_sets(result: FitResult) -> tuple[str, ...]:
    """The kv-fit fix as overrides for a combined fix: fewer sequences keep the context, else a shorter context."""
    s = suggest(result.inputs, result)
    if s.max_num_seqs and s.max_num_seqs < result.max_num_seqs:
        return (f"engine.max_num_seqs={s.max_num_seqs}",)
    if s.max_model_len:
        return (f"engine.max_model_len={s.max_model_len}",)
    return ()


def decode_path_for(profile: "Profile", gpu: "Union[Gpu, GpuSpec, GpuModel, str]") -> "DecodePath":
    """The decode path vLLM will run for this profile on this GPU (launcher.engine.decode_path): the profile's
    attention backend (or vLLM's choice), KV dtype, MTP setting, batch limits as vLLM resolves them, eager mode and
    compilation config (cudagraph_mode, capture sizes). The memory estimate's CUDA-graph term asks the same function."""
    from launcher.fit.estimate import decode_path_of
    from launcher.hardware.inventory import Gpu

    spec = GpuSpec.from_gpu(gpu) if isinstance(gpu, Gpu) else gpu_specs(profile, gpu)[0]
    facts = facts_for(profile.facts_key)
    return decode_path_of(fit_input(profile, spec, WeightSizes.from_facts(facts), facts))


def decode_path_notes(profile: "Profile", gpus: "Sequence[Gpu] | None" = None) -> list[str]:
    """The decode-path line(s) for render's, explain's and fit's notes: for these GPUs, or, without GPUs, for the GPU
    models of launcher's table the profile is for (memory and compute-capability floor), one note per distinct path."""
    from launcher.hardware.catalog import all_models
    from launcher.model.facts import is_known

    if profile.hardware.device == "cpu" or not is_known(profile.facts_key):
        return []
    targets: list[tuple[str, Any]] = []
    if gpus:
        targets = [(f"{g.name} (compute capability {g.compute_capability[0]}.{g.compute_capability[1]})", g) for g in gpus]
    else:
        floor = profile.hardware.min_memory_gib or 0
        cc_floor = tuple(profile.hardware.min_compute_capability or (0, 0))
        targets = [(m.key, m) for m in all_models()
                   if m.memory_total_bytes / GIB >= floor and tuple(m.compute_capability) >= cc_floor]
    lines: dict[str, list[str]] = {}
    for label, target in targets:
        try:
            line = decode_path_for(profile, target).line()
        except (HardwareError, ProfileError, ValueError):
            continue
        lines.setdefault(line, [])
        if label not in lines[line]:
            lines[line].append(label)
    return [f"{line} on {', '.join(labels[:6])}{' and others' if len(labels) > 6 else ''}" for line, labels in lines.items()]
