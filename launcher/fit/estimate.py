"""Pure memory-fit estimator for vLLM 0.33 serving the hybrid Gated-DeltaNet + attention model.

Follows docs/memory-model.md (vLLM's accounting and the formula) term by term; every term
carries its source (an anchor of that document) and its uncertainty. No I/O: weight sizes come in as `WeightSizes`
(read by `launcher.model.weights`), GPU memory as numbers (from an inventory or `launcher.hardware.catalog`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from launcher.defaults import GIB, MIB  # noqa: E402,F401
from launcher.engine import behaviour
from launcher.engine.behaviour import DEFAULT_VERSION, Startup
from launcher.engine.decode_path import DecodePath, decode_path
from launcher.errors import ProfileError
from launcher.model.facts import DEFAULT_MODEL_ID, MODEL_FACTS, ModelFacts
from launcher.model.weights import WeightSizes  # noqa: F401 (re-exported)

# --- constants of docs/memory-model.md (all [inferred] there unless noted) -----------------------
# Calibrated on the real 27B shape (tests/fixtures/gpu-fullshape, vLLM 0.25.1 on H200: four starts, see
# docs/memory-model.md#measured-on-h200-full-27b-shape). "Model loading took" exceeded checkpoint bytes / TP by
# 0.21 GiB at TP1 without MTP, 0.35 GiB at TP2 without MTP and 0.42 GiB at TP2 with MTP.
WEIGHT_OVERHEAD = int(0.21 * GIB)  # W: per GPU beyond the checkpoint bytes (TP1, no MTP)
WEIGHT_REPLICATED = int(0.28 * GIB)  # W: tensors every TP rank holds whole: R x (1 - 1/t) more (0.14 GiB at TP2)
WEIGHT_OVERHEAD_MTP = int(0.07 * GIB)  # W: the MTP drafter beyond its bytes / TP (TP2 with vs without MTP)
PERSISTENT_BASE = int(0.25 * GIB)  # P: buffers and workspaces independent of max_num_seqs
PERSISTENT_PER_SEQ_PER_VOCAB = 4.125  # P: penalty tables int32 [N, V] plus ~1/32 extra, bytes
# A = forward peak + sampler peak of the profile run (vllm/v1/worker/gpu_model_runner.py::profile_run):
# the forward of M batched tokens, then _dummy_sampler_run on min(N, M) rows of fp32 logits [., V]; with a
# speculative config that run also builds randn(2 x rows, V) target logits (+ their softmax) for the rejection
# sampler, which is the measured difference of 4.0 [rows, V] fp32 copies between starts (c) and (d).
ACTIVATION_PER_1K_TOKENS = 0.20 * GIB  # A: forward, per 1024 batched tokens, divided by TP (TP >= 2: a, c, d)
ACTIVATION_PER_1K_TOKENS_TP1 = 0.80 * GIB  # A: the same at TP1, one point (b), which also had prefix caching on
SAMPLER_BYTES = 4  # A: fp32 logits [min(N, M), V]
SAMPLER_COPIES = 1.63  # A: peak of the plain sampler run, in copies of those logits (d; b agrees within 1 %)
SAMPLER_COPIES_SPEC = 4.0  # A: more with a speculative config (c - d; a within 5 %)
# P also carries what grows outside torch during the profile run (NCCL all-reduce buffers, cuBLAS workspaces,
# before 0.33 the cuBLAS handles): measured 0.25 GiB at TP1 and 0.68 GiB at TP2 (vLLM 0.25.1).
NONTORCH_BASE = int(0.25 * GIB)
NONTORCH_DISTRIBUTED = int(0.43 * GIB)
ENCODER_PROFILE = int(1.5 * GIB)  # A: vision encoder profiling without --language-model-only (1-2 GiB, [UNVERIFIED])
GRAPH_SMALL = int(0.20 * GIB)  # G: N*(1+k)*2 <= 32 capture sizes (0.15-0.3 GiB) [not measured]
GRAPH_SMALL_LIMIT = 32
# G is vLLM's own estimate, subtracted from the budget: measured 0.76 GiB with MTP (PIECEWISE graphs only,
# N 256 and 1024 alike); without MTP it adds FULL decode graphs, one per capture size up to min(N, 512):
# 1.11 GiB at N 256 (b: FULL 34 x 4 MiB) and 2.24 GiB at N 1024 (d: FULL 51 x 26 MiB).
GRAPH_MTP = int(0.76 * GIB)
GRAPH_NO_MTP = int(1.11 * GIB)  # N <= 256
GRAPH_NO_MTP_LARGE = int(2.24 * GIB)  # N > 256 (measured at 1024; between 256 and 512 this over-reserves)
GRAPH_NO_MTP_LARGE_ABOVE = 256

# --- vLLM's V1 model runner (0.25.1 for this hybrid model): the mechanism, constants fitted on the starts ---------
# docs/memory-model.md#the-v1-runner-0251-mechanism-and-fitted-constants. `Calibration` holds the constants that the
# source does not give; `tools/memory_loo.py` fits them on every committed start (and leaves each out in turn), and
# tests/unit/test_memory_loo.py checks that V1_CALIBRATION below is what that fit gives on all of them.
FLASHINFER_WORKSPACE_MIB = 394  # envs.VLLM_FLASHINFER_WORKSPACE_BUFFER_SIZE default (0.25.1 envs.py)
SAMPLER_COPIES_V1 = 1.63  # plain sampler peak in [min(N, M), V] fp32 copies: measured (d), (b) within 1 %
SAMPLER_COPIES_V1_SPEC = 5.63  # with a speculative config: the rejection-sampler dummy's peak, (c) - (d) = 4.0 more


@dataclass(frozen=True)
class Calibration:
    """The constants of the V1 profile-run and CUDA-graph terms that vLLM's source leaves to measurement.

    Lines are (value at 0, slope): the forward part of the profile-run peak in GiB against batched tokens / 1024
    (per rank; at TP > 2 the slope is scaled by 2 / TP), the PIECEWISE first capture in MiB against the largest
    capture size. Per-graph figures in MiB. `full_per_graph_tp` is None where no start at TP >= 2 backs it."""

    forward_tp1: tuple[float, float]
    forward_tp: tuple[float, float]
    piecewise_first: tuple[float, float]
    piecewise_per_graph: float
    full_first_flashinfer: float
    full_per_graph_tp1: float
    full_per_graph_tp: float | None
    fitted_on: tuple[str, ...] = ()


# Fitted on the eleven starts of docs/memory-model.md#leave-one-out (python tools/memory_loo.py --constants).
V1_CALIBRATION = Calibration(
    forward_tp1=(2.269, 0.0),
    forward_tp=(0.147, 0.235),
    piecewise_first=(60.9, 0.25),
    piecewise_per_graph=12.0,
    full_first_flashinfer=396.0,
    full_per_graph_tp1=6.0,
    full_per_graph_tp=26.0,
    fitted_on=("a", "b", "c", "d", "e", "gpu-tune/m1", "gpu-tune/m3", "gpu-tune/run/flashinfer-k2-s16-b4096",
               "gpu-tune/warm/flashinfer-k2-s16-b4096", "h100-k3", "h100-nomtp"),
)
# Stated errors of the V1 terms (docs/memory-model.md#leave-one-out: chosen to cover every held-out start's miss).
# The TP1 constant: the five older starts missed it by up to 0.42 GiB; the one-H100 starts of tests/fixtures/gpu-tune
# by up to 1.84 GiB: the same command restarted with warm compile and kernel caches peaked 1.9 GiB lower in vLLM's
# profile run than its cold first start (no Triton JIT or autotuning inside the run), and 16,384 batched tokens with
# 64 sequences and MTP k=3 (m3) 1.0 GiB higher. The error covers both until a term models the cache state.
SIGMA_FORWARD_V1_TP1 = int(1.9 * GIB)
SIGMA_FORWARD_V1 = int(0.25 * GIB)  # the TP >= 2 line: held-out starts missed it by up to 0.11 GiB
SIGMA_FORWARD_V1_FRACTION = 0.10  # of the sampler part
SIGMA_GRAPH_FIRST_MIB = 40.0
SIGMA_GRAPH_PER_GRAPH_MIB = 2.0  # measured per-graph figures of one mode and TP group agree within 2 MiB
SIGMA_GRAPH_PER_GRAPH_UNMEASURED_MIB = 25.0  # FULL per graph was 4 to 26 MiB: where no start of this TP backs it
SIGMA_GRAPH_UNMEASURED_FIRST_MIB = 200.0  # the FULL first capture of a backend without FlashInfer's workspace
# The peak while loading the weights: NVML saw 1.1-1.3 GiB above fit's figure on one H100 (issue 25's two starts).
LOAD_PEAK_UNCERTAINTY = int(1.3 * GIB)

# --- uncertainties: docs/memory-model.md#uncertainty-and-verdicts ----------------------------------
SIGMA_T = int(0.05 * GIB)
SIGMA_W_LOCAL = int(0.10 * GIB)
SIGMA_W_FACTS_TIMES_TP = int(1.0 * GIB)  # ±0.5 GiB per GPU at TP2 from shipped facts
SIGMA_P = int(0.1 * GIB)
SIGMA_A_FRACTION = 0.15  # measured residuals 1-6 % on vLLM 0.25.1; 0.33 unmeasured
SIGMA_G = int(0.15 * GIB)
SIGMA_G_UNMEASURED = int(0.3 * GIB)

KV_DTYPE_BYTES = {
    "auto": 2,
    "bfloat16": 2,
    "float16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}
MAMBA_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
VERDICTS = ("fits", "marginal", "does-not-fit")


def kv_bytes_per_element(kv_cache_dtype: str) -> int:
    """KV bytes per element for a `--kv-cache-dtype` value (docs/memory-model.md#attention-bytes-per-token)."""
    try:
        return KV_DTYPE_BYTES[kv_cache_dtype.lower()]
    except KeyError:
        modeled = ", ".join(KV_DTYPE_BYTES)
        raise ProfileError(
            f"kv_cache_dtype {kv_cache_dtype!r} is not modeled by the memory estimator (modeled: {modeled})"
        ) from None



_DEFAULT_FACTS = MODEL_FACTS[DEFAULT_MODEL_ID]
_DEFAULT_WEIGHTS = WeightSizes.from_facts(_DEFAULT_FACTS)


@dataclass(frozen=True)
class FitInput:
    """Everything the estimate depends on, for the smallest GPU of the replica."""

    total_memory_bytes: int  # T: cudaMemGetInfo total of the smallest GPU
    compute_capability: tuple[int, int]
    gpu_memory_utilization: float = 0.92  # vLLM 0.33 default (docs/memory-model.md#budget-r)
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    num_speculative_tokens: int = 0  # k; 0 = no MTP
    max_model_len: int = 262144
    max_num_seqs: int | None = None  # None = vLLM's default for this GPU (docs/memory-model.md#batch-defaults)
    max_num_batched_tokens: int | None = None  # None = vLLM's default for this GPU (docs/memory-model.md#batch-defaults)
    enable_prefix_caching: bool = True  # vLLM's default for hybrid models (docs/memory-model.md#state-blocks-s)
    language_model_only: bool = False
    skip_mm_profiling: bool = False  # --skip-mm-profiling: no encoder pass, the tower still loads
    gpu_name: str = ""  # NVML name; "A100" keeps vLLM's small batch defaults
    nvml_total_memory_bytes: int | None = None  # what vLLM's batch defaults compare; None = T
    performance_mode: str = "balanced"
    weights: WeightSizes = _DEFAULT_WEIGHTS
    free_memory_bytes: int | None = None  # F before launch; None = assume an idle GPU (F = T)
    flashinfer_attention: bool | None = None  # None = vLLM's choice for the CC, KV dtype and backend (launcher.engine.behaviour)
    attention_backend: str | None = None
    gdn_prefill_backend: str | None = None  # None = vLLM's choice (FlashInfer on SM90/100/120)
    mamba_cache_dtype: str = "auto"
    mamba_ssm_cache_dtype: str = "auto"
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = None  # --kv-cache-memory-bytes: K given, profiling skipped
    total_memory_uncertainty_bytes: int = SIGMA_T
    model: ModelFacts = _DEFAULT_FACTS
    vllm_version: str = DEFAULT_VERSION  # whose rules (launcher.engine.behaviour) apply
    interconnect: str | None = None  # "nvlink", "pcie", "p2p-disabled"; None = unknown (widest allowance)
    local_world_size: int | None = None  # GPUs of the engine on this machine; None = TP x PP
    # the decode path's settings (launcher.engine.decode_path): the CUDA graphs vLLM captures follow from them
    cudagraph_mode: str | None = None  # compilation_config.cudagraph_mode; None = vLLM's default
    trtllm_cubins: bool | None = None  # FlashInfer's TRT-LLM/XQA cubins reachable; None = the tables' assumption
    max_capture_size: int | None = None  # max_cudagraph_capture_size when set
    capture_sizes: tuple[int, ...] | None = None  # compilation_config.cudagraph_capture_sizes when set
    calibration: "Calibration | None" = None  # None = V1_CALIBRATION (tools/memory_loo.py passes its own fits)

    @property
    def world_size(self) -> int:
        return self.local_world_size if self.local_world_size is not None else self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def kv_bytes(self) -> int:
        return kv_bytes_per_element(self.kv_cache_dtype)

    @property
    def mtp(self) -> bool:
        return self.num_speculative_tokens > 0


@dataclass(frozen=True)
class Term:
    """One memory term in bytes, its ± uncertainty and where the formula comes from."""

    name: str
    bytes: int
    uncertainty_bytes: int
    source: str

    @property
    def gib(self) -> float:
        return self.bytes / GIB

    def to_json(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "gib": round(self.gib, 3),
            "uncertainty_bytes": self.uncertainty_bytes,
            "uncertainty_gib": round(self.uncertainty_bytes / GIB, 3),
            "source": self.source,
        }


@dataclass(frozen=True)
class StartupCheck:
    """vLLM's free-memory check at start (launcher.engine.behaviour.startup, the rule `check` uses too) plus the load peak."""

    rule: Startup  # requested, the before-snapshot allowance, the FlashInfer workspace, pass/warn/fail
    free_memory_assumed: bool  # True when no reading was given (an idle GPU was assumed)
    verdict: str  # fits / marginal / does-not-fit (pass / warn / fail of the rule, or the load peak)
    load_peak_bytes: int  # weights plus the MTP drafter's transient embed/lm_head copies
    load_margin_bytes: int
    profiling_peak_bytes: int = 0  # weights, buffers, graphs and the throw-away KV cache of the CUDA-graph measurement
    profiling_kv_blocks: int = 0
    load_peak_uncertainty_bytes: int = LOAD_PEAK_UNCERTAINTY  # measured 1.1-1.3 GiB above the figure (issue 25, H100)

    @property
    def free_memory_bytes(self) -> int:
        return self.rule.free_bytes

    @property
    def requested_bytes(self) -> int:
        return self.rule.requested_bytes

    @property
    def flashinfer_workspace_bytes(self) -> int:
        return self.rule.workspace_bytes

    @property
    def margin_bytes(self) -> int:
        """Free at vLLM's snapshot minus the budget, with the largest plausible allowance."""
        return self.rule.headroom_low_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            **self.rule.to_json(),
            "free_memory_bytes": self.free_memory_bytes,
            "free_memory_assumed": self.free_memory_assumed,
            "verdict": self.verdict,
            "load_peak_bytes": self.load_peak_bytes,
            "load_peak_uncertainty_bytes": self.load_peak_uncertainty_bytes,
            "load_margin_bytes": self.load_margin_bytes,
            "profiling_peak_bytes": self.profiling_peak_bytes,
            "profiling_kv_blocks": self.profiling_kv_blocks,
        }


@dataclass(frozen=True)
class FitResult:
    """The estimate for one GPU (the smallest decides), every term with its uncertainty."""

    inputs: FitInput
    max_num_seqs: int  # resolved N
    max_num_batched_tokens: int  # resolved M
    budget: Term  # R
    weights: Term  # W
    persistent: Term  # P
    activation: Term  # A
    cudagraph: Term  # G
    kv_available: Term  # K
    attn_bytes_per_token_per_layer: int  # a
    gdn_state_bytes_per_slot: int  # m (one GDN layer, one state slot, this rank)
    flashinfer_gdn_prefill: bool  # c = 1
    kernel_block_alignment: int  # q
    block_size_tokens: int  # B
    page_bytes: int  # B * a, the GDN page padded to it
    mamba_padding_pct: float  # what vLLM logs as "Padding mamba page size by x%"
    group_size: int  # g
    bytes_per_block: int  # g * page
    state_blocks_per_gdn_group: int  # S
    gdn_groups: int
    blocks_per_request: int  # r(L)
    bytes_per_request: int  # r(L) * bytes_per_block
    bytes_needed_to_start: int  # (r(L) + 1) * bytes_per_block: one request plus the null block
    num_blocks: int
    kv_cache_tokens: int  # "GPU KV cache size: N tokens" as vLLM logs it
    concurrency_at_max_len: float  # "Maximum concurrency for L tokens per request: Xx"
    max_model_len_fit: int  # largest L that starts, whole KV blocks, capped at the model's limit
    max_model_len_safe: int  # the same with the combined uncertainty kept as margin
    max_model_len_limit: int  # the model's max_position_embeddings
    margin_bytes: int  # K - bytes_needed_to_start
    uncertainty_bytes: int  # combined (root-sum-square) uncertainty of K
    kv_verdict: str
    startup: StartupCheck
    notes: tuple[str, ...] = field(default=())

    @property
    def verdict(self) -> str:
        """Worst of the KV verdict and the start-up free-memory verdict."""
        return max(self.kv_verdict, self.startup.verdict, key=VERDICTS.index)

    @property
    def terms(self) -> tuple[Term, ...]:
        return (self.budget, self.weights, self.persistent, self.activation, self.cudagraph, self.kv_available)

    def to_json(self) -> dict[str, Any]:
        i = self.inputs
        return {
            "verdict": self.verdict,
            "kv_verdict": self.kv_verdict,
            "inputs": {
                "gpu_name": i.gpu_name,
                "total_memory_bytes": i.total_memory_bytes,
                "compute_capability": list(i.compute_capability),
                "gpu_memory_utilization": i.gpu_memory_utilization,
                "tensor_parallel_size": i.tensor_parallel_size,
                "pipeline_parallel_size": i.pipeline_parallel_size,
                "kv_cache_dtype": i.kv_cache_dtype,
                "kv_bytes_per_element": i.kv_bytes,
                "num_speculative_tokens": i.num_speculative_tokens,
                "max_model_len": i.max_model_len,
                "max_num_seqs": self.max_num_seqs,
                "max_num_batched_tokens": self.max_num_batched_tokens,
                "enable_prefix_caching": i.enable_prefix_caching,
                "language_model_only": i.language_model_only,
                "weights_source": i.weights.source,
            },
            "terms": {t.name: t.to_json() for t in self.terms},
            "kv_cache": {
                "block_size_tokens": self.block_size_tokens,
                "bytes_per_block": self.bytes_per_block,
                "bytes_per_request": self.bytes_per_request,
                "bytes_needed_to_start": self.bytes_needed_to_start,
                "available_bytes": self.kv_available.bytes,
                "available_uncertainty_bytes": self.kv_available.uncertainty_bytes,
                "page_bytes": self.page_bytes,
                "group_size": self.group_size,
                "gdn_groups": self.gdn_groups,
                "state_blocks_per_gdn_group": self.state_blocks_per_gdn_group,
                "blocks_per_request": self.blocks_per_request,
                "num_blocks": self.num_blocks,
                "tokens": self.kv_cache_tokens,
                # the KV tokens' error: the combined uncertainty of K in whole blocks, as requests of max_model_len
                "tokens_uncertainty": int(self.uncertainty_bytes / self.bytes_per_block / self.blocks_per_request * i.max_model_len)
                if self.bytes_per_block and self.blocks_per_request else 0,
                "attn_bytes_per_token_per_layer": self.attn_bytes_per_token_per_layer,
                "gdn_state_bytes_per_slot": self.gdn_state_bytes_per_slot,
                "kernel_block_alignment": self.kernel_block_alignment,
                "flashinfer_gdn_prefill": self.flashinfer_gdn_prefill,
                "mamba_padding_pct": round(self.mamba_padding_pct, 2),
            },
            "max_model_len": i.max_model_len,
            "max_model_len_fit": self.max_model_len_fit,
            "max_model_len_safe": self.max_model_len_safe,
            "max_model_len_limit": self.max_model_len_limit,
            "concurrency_at_max_len": round(self.concurrency_at_max_len, 4),
            "margin_bytes": self.margin_bytes,
            "uncertainty_bytes": self.uncertainty_bytes,
            "startup": self.startup.to_json(),
            "notes": list(self.notes),
        }


# --- helpers --------------------------------------------------------------------------------------


def batch_defaults(inp: FitInput) -> tuple[int, int]:
    """vLLM's `vllm serve` defaults (max_num_batched_tokens, max_num_seqs) before user values (docs/memory-model.md#batch-defaults).

    engine/arg_utils.py::get_batch_defaults compares NVML's total memory, the device name ("a100")
    and the compute capability (12.1 is GB10, kept on the small tier).
    """
    device_memory = inp.nvml_total_memory_bytes or inp.total_memory_bytes
    is_gb10 = tuple(inp.compute_capability) == (12, 1)
    if device_memory >= 160 * GIB:
        return 16384, 1024
    if device_memory >= 70 * GIB and "a100" not in inp.gpu_name.lower() and not is_gb10:
        return 8192, 1024
    return 2048, 256


def resolve_batch(inp: FitInput) -> tuple[int, int]:
    """(M, N) as vLLM ends up with them: defaults, throughput doubling, M capped at N*L (docs/memory-model.md#batch-defaults)."""
    default_m, default_n = batch_defaults(inp)
    n = inp.max_num_seqs if inp.max_num_seqs is not None else default_n
    m = inp.max_num_batched_tokens if inp.max_num_batched_tokens is not None else default_m
    if inp.performance_mode == "throughput":
        if inp.max_num_seqs is None:
            n *= 2
        if inp.max_num_batched_tokens is None:
            m *= 2
    if inp.max_num_batched_tokens is None:
        m = min(n * inp.max_model_len, m)
    return m, n


def flashinfer_gdn_prefill(inp: FitInput) -> bool:
    """c: the FlashInfer GDN prefill (checkpoint blocks), where the target vLLM runs it (launcher.engine.behaviour)."""
    backend = (inp.gdn_prefill_backend or "").lower()
    if backend:
        return backend == "flashinfer"
    return behaviour.flashinfer_gdn_prefill(inp.compute_capability, inp.vllm_version)


def uses_flashinfer_attention(inp: FitInput) -> bool:
    """Whether the attention backend is FlashInfer: the forced one, or vLLM's own choice (launcher.engine.behaviour)."""
    if inp.flashinfer_attention is not None:
        return inp.flashinfer_attention
    route = behaviour.attention_route(inp.compute_capability, inp.attention_backend, inp.kv_cache_dtype, inp.vllm_version)
    return (route.backend or "").upper().startswith("FLASHINFER")


def decode_path_of(inp: FitInput, max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None) -> DecodePath:
    """The decode path vLLM runs for this input (launcher.engine.decode_path): mode, capture sizes, graph counts."""
    m, n = resolve_batch(inp)
    return decode_path(inp.vllm_version, inp.compute_capability, inp.attention_backend, inp.kv_cache_dtype,
                       inp.num_speculative_tokens, max_num_seqs or n, max_num_batched_tokens or m,
                       enforce_eager=inp.enforce_eager, cudagraph_mode=inp.cudagraph_mode, trtllm_cubins=inp.trtllm_cubins,
                       performance_mode=inp.performance_mode, max_capture_size=inp.max_capture_size,
                       sizes_given=list(inp.capture_sizes) if inp.capture_sizes else None)


def v1_runner(inp: FitInput) -> bool:
    """Whether the target vLLM runs this model on its V1 model runner (0.25.1), whose profile run and CUDA-graph
    estimate the measured mechanism describes (docs/memory-model.md#the-v1-runner-0251-mechanism-and-fitted-constants)."""
    return str(behaviour.behaviour(inp.vllm_version).data["decode_path"]["model_runner"]["runner"]) == "V1"


@dataclass(frozen=True)
class GraphTerm:
    """vLLM V1's CUDA-graph estimate as launcher computes it: per mode the first capture and the per-graph figure."""

    bytes: int
    uncertainty_bytes: int
    text: str


def _line(c: tuple[float, float], x: float) -> float:
    return c[0] + c[1] * x


def v1_graphs(inp: FitInput, path: DecodePath, cal: Calibration) -> GraphTerm:
    """V1's estimate (v1/worker/gpu_model_runner.py::GPUModelRunner.profile_cudagraph_memory): per mode it captures
    the two largest graphs, takes the first capture whole and the second as the per-graph cost of the rest, and sums
    max(first captures) + sum((graphs - 1) x per-graph) (FULL and PIECEWISE share one pool). The FULL first capture
    with FlashInfer allocates its workspace (FlashInferMetadataBuilder._get_workspace_buffer, 394 MiB by default)."""
    if path.mode == "NONE" or not path.graphs:
        return GraphTerm(0, 0, "no CUDA graphs")
    t = inp.tensor_parallel_size
    q = 1 + inp.num_speculative_tokens
    _, n = resolve_batch(inp)
    firsts: list[tuple[float, float]] = []  # (MiB, sigma MiB)
    per: list[tuple[float, float]] = []  # ((n - 1) x per-graph MiB, sigma MiB)
    parts = []
    if path.piecewise_graphs:
        first = _line(cal.piecewise_first, path.largest)
        firsts.append((first, SIGMA_GRAPH_FIRST_MIB))
        per.append(((path.piecewise_graphs - 1) * cal.piecewise_per_graph, (path.piecewise_graphs - 1) * SIGMA_GRAPH_PER_GRAPH_MIB))
        parts.append(f"PIECEWISE {first:.0f} MiB + ({path.piecewise_graphs}-1) x {cal.piecewise_per_graph:.0f} MiB")
    if path.full_graphs:
        full_sizes = [x for x in path.capture_sizes if q <= x <= q * n] or list(path.capture_sizes)
        if (path.backend or "").upper().startswith("FLASHINFER"):
            first, sigma_first = cal.full_first_flashinfer, SIGMA_GRAPH_FIRST_MIB
        else:  # no start with another backend's FULL graphs yet: its activations as a PIECEWISE capture, no workspace
            first, sigma_first = _line(cal.piecewise_first, max(full_sizes)), SIGMA_GRAPH_UNMEASURED_FIRST_MIB
        per_graph = cal.full_per_graph_tp1 if t == 1 else cal.full_per_graph_tp
        sigma_per = SIGMA_GRAPH_PER_GRAPH_MIB
        if per_graph is None:
            per_graph, sigma_per = cal.full_per_graph_tp1, SIGMA_GRAPH_PER_GRAPH_UNMEASURED_MIB
        firsts.append((first, sigma_first))
        per.append(((path.full_graphs - 1) * per_graph, (path.full_graphs - 1) * sigma_per))
        parts.append(f"FULL {first:.0f} MiB + ({path.full_graphs}-1) x {per_graph:.0f} MiB")
    top = max(firsts)
    mib = top[0] + sum(p for p, _ in per)
    sigma = math.sqrt(top[1] ** 2 + sum(sp * sp for _, sp in per))
    return GraphTerm(int(mib * MIB), int(sigma * MIB), "max(first) + per graph: " + "; ".join(parts))


def v1_activation(inp: FitInput, cal: Calibration, M: int, N: int) -> tuple[int, int, str]:
    """The V1 profile run's torch peak beyond the persistent buffers (GPUModelRunner.profile_run): the forward of M
    batched tokens (`_dummy_run(max_num_tokens, is_profile=True)`, eager, no attention kernels), then
    `_dummy_sampler_run` on min(N, M) rows whose every tensor is [rows, V] (fp32 logits, probabilities, noise) and,
    with a speculative config, the rejection sampler's dummy on randn(2 x rows, V) logits and their fp32 copies.
    The forward part is a fitted line per TP group: vLLM's torch peak barely moves with M at TP1."""
    t = inp.tensor_parallel_size
    V = inp.model.vocab_size
    if t == 1:
        forward = _line(cal.forward_tp1, M / 1024) * GIB
    else:
        forward = (cal.forward_tp[0] + cal.forward_tp[1] * (M / 1024) * 2 / t) * GIB
    copies = SAMPLER_COPIES_V1_SPEC if inp.num_speculative_tokens > 0 else SAMPLER_COPIES_V1
    sampler = copies * min(N, M) * V * SAMPLER_BYTES
    sigma = math.hypot(SIGMA_FORWARD_V1_TP1 if t == 1 else SIGMA_FORWARD_V1, SIGMA_FORWARD_V1_FRACTION * max(sampler, 0))
    text = (f"forward {forward / GIB:.2f} GiB at {M} batched tokens (TP{t}, fitted) + sampler {copies:g} x [{min(N, M)}, {V}] fp32"
            + (" (rejection-sampler dummy)" if inp.num_speculative_tokens > 0 else ""))
    return int(forward + sampler), int(sigma), text


def startup_of(inp: FitInput, max_num_batched_tokens: int, requested_bytes: int | None = None) -> Startup:
    """vLLM's start-up free-memory check for this input (launcher.engine.behaviour.startup)."""
    facts = inp.model
    workspace = 0
    if uses_flashinfer_attention(inp):
        q_heads = max(1, facts.num_attention_heads // inp.tensor_parallel_size)
        workspace = behaviour.flashinfer_workspace_bytes(max_num_batched_tokens, q_heads, facts.head_dim, inp.vllm_version)
    free = inp.total_memory_bytes if inp.free_memory_bytes is None else int(inp.free_memory_bytes)
    rule = behaviour.startup(inp.total_memory_bytes, free, inp.gpu_memory_utilization, world_size=inp.world_size,
                             interconnect=inp.interconnect, workspace_bytes=workspace, version=inp.vllm_version)
    if requested_bytes is not None and requested_bytes != rule.requested_bytes:
        # --kv-cache-memory-bytes: vLLM takes what the terms need instead of u x total
        status = "fail" if free - rule.allowance.low_bytes < requested_bytes else (
            "warn" if free - rule.allowance.high_bytes < requested_bytes else "pass")
        rule = replace(rule, requested_bytes=requested_bytes, status=status)
    return rule


def _mamba_bytes(value: str, auto: int, key: str) -> int:
    if value.lower() == "auto":
        return auto
    try:
        return MAMBA_DTYPE_BYTES[value.lower()]
    except KeyError:
        raise ProfileError(f"{key} {value!r} is not one of auto, {', '.join(MAMBA_DTYPE_BYTES)}") from None


def _nontorch(inp: FitInput) -> int:
    """Non-torch growth during the profile run: NCCL buffers with 2+ GPUs; the cuBLAS handles where the
    target vLLM creates them after its snapshot (launcher.engine.behaviour: all versions before 0.33.0)."""
    pre = behaviour.behaviour(inp.vllm_version).data["startup_memory"]["before_snapshot"]["cublas_gib"]
    moved = int((pre[0] + pre[1]) / 2 * GIB)  # cuBLAS counted before the snapshot instead
    return NONTORCH_BASE + (NONTORCH_DISTRIBUTED if inp.world_size > 1 else 0) - moved


def persistent_bytes(inp: FitInput, max_num_seqs: int) -> int:
    """P: 0.25 GiB + N x V x 4.125 B + the non-torch growth (docs/memory-model.md#persistent-buffers-p). On the V1
    runner only the non-torch growth: V1 keeps no [N, V] penalty state (v1/sample/ops/penalties.py builds its bin
    counts per step), and buffers allocated before the profile run are in none of vLLM's three terms
    (utils/mem_utils.py::memory_profiling); the fitted forward line carries any constant."""
    if v1_runner(inp):
        return _nontorch(inp)
    return int(PERSISTENT_BASE + max_num_seqs * inp.model.vocab_size * PERSISTENT_PER_SEQ_PER_VOCAB) + _nontorch(inp)


def _validate(inp: FitInput) -> None:
    facts = inp.model
    if inp.tensor_parallel_size not in facts.valid_tensor_parallel_sizes:
        valid = ", ".join(map(str, facts.valid_tensor_parallel_sizes))
        raise ProfileError(f"tensor_parallel_size {inp.tensor_parallel_size} is not valid for this model (valid: {valid})")
    if inp.pipeline_parallel_size < 1:
        raise ProfileError("pipeline_parallel_size must be at least 1")
    if not 0 < inp.gpu_memory_utilization <= 1:
        raise ProfileError(f"gpu_memory_utilization {inp.gpu_memory_utilization} must be in (0, 1]")
    if inp.num_speculative_tokens < 0:
        raise ProfileError("num_speculative_tokens must be 0 (no MTP) or more")
    if inp.max_model_len < 1:
        raise ProfileError("max_model_len must be at least 1")
    if inp.max_num_seqs is not None and inp.max_num_seqs < 1:
        raise ProfileError("max_num_seqs must be at least 1")
    if inp.max_num_batched_tokens is not None and inp.max_num_batched_tokens < 1:
        raise ProfileError("max_num_batched_tokens must be at least 1")
    if inp.total_memory_bytes <= 0:
        raise ProfileError("GPU total memory must be positive")


def _verdict(margin: float, uncertainty: float) -> str:
    if margin < 0:
        return "does-not-fit"
    if margin < uncertainty:
        return "marginal"
    return "fits"


def _rss(*values: float) -> int:
    return int(round(math.sqrt(sum(v * v for v in values))))


# --- the estimate ---------------------------------------------------------------------------------


def estimate(inp: FitInput) -> FitResult:
    """Run the estimate of docs/memory-model.md for one GPU and return every term.

    Raises:
        ProfileError: an input the estimator cannot model (invalid TP, unknown KV dtype, ...).
    """
    _validate(inp)
    facts = inp.model
    t = inp.tensor_parallel_size
    pp = inp.pipeline_parallel_size
    k = inp.num_speculative_tokens
    L = inp.max_model_len
    T = inp.total_memory_bytes
    u = inp.gpu_memory_utilization
    V = facts.vocab_size
    b = inp.kv_bytes
    M, N = resolve_batch(inp)

    # R = ceil(T*u): utils.request_memory (docs/memory-model.md#budget-r).
    budget = Term("budget", math.ceil(T * u), int(round(u * inp.total_memory_uncertainty_bytes)),
                  "docs/memory-model.md#budget-r: ceil(total x gpu_memory_utilization)")

    # W = (S_main - lmo*S_vis + [k>0]*S_mtp)/t + overhead (docs/memory-model.md#weights-w). With PP, language layers
    # split over stages; the vision tower (stage 0) and MTP (last stage) are charged whole [inferred].
    w = inp.weights
    vision = w.vision_bytes if not inp.language_model_only else 0
    language = w.main_bytes - w.vision_bytes
    mtp = w.mtp_bytes if k > 0 else 0
    weight_bytes = (int(language / (t * pp) + vision / t + mtp / t) + WEIGHT_OVERHEAD + int(WEIGHT_REPLICATED * (1 - 1 / t) / pp)
                    + (WEIGHT_OVERHEAD_MTP if k > 0 else 0))
    sigma_w = SIGMA_W_LOCAL if w.from_local_index else SIGMA_W_FACTS_TIMES_TP // (t * pp)
    weights = Term("weights", weight_bytes, sigma_w, f"docs/memory-model.md#weights-w; bytes from {w.source}")

    # P = 0.25 GiB + N*V*4.125 B (penalty tables [N, V] int32 and other persistent buffers) + what grows outside
    # torch during the profile run (docs/memory-model.md#persistent-buffers-p).
    v1 = v1_runner(inp)
    persistent = Term("persistent", persistent_bytes(inp, N), SIGMA_P,
                      "docs/memory-model.md#persistent-buffers-p: " + ("non-torch growth of the profile run (V1 runner)" if v1 else
                                                                        "0.25 GiB + max_num_seqs x vocab x 4.125 B + non-torch"))
    cal = inp.calibration or V1_CALIBRATION

    # A = forward (0.20 GiB x M/1024 / t; 0.80 GiB x M/1024 at TP1) + (1.63 [+ 4.0 with MTP]) x min(N,M)*V*4 B
    # (+1-2 GiB without lmo) (docs/memory-model.md#activation-peak-a).
    encoder = ENCODER_PROFILE if not inp.language_model_only and not inp.skip_mm_profiling and w.vision_bytes > 0 else 0
    if v1:
        act_v1, sigma_a, why = v1_activation(inp, cal, M, N)
        activation = Term("activation", act_v1 + encoder, _rss(sigma_a, encoder // 2),
                          f"docs/memory-model.md#the-v1-runner-0251-mechanism-and-fitted-constants: {why}")
    else:  # no start of this version measured its profile run: the slopes fitted before (docs/memory-model.md#activation-peak-a)
        forward = ACTIVATION_PER_1K_TOKENS_TP1 * (M / 1024) if t == 1 else ACTIVATION_PER_1K_TOKENS * (M / 1024) / t
        copies = SAMPLER_COPIES + (SAMPLER_COPIES_SPEC if k > 0 else 0)
        act_bytes = int(forward + copies * min(N, M) * V * SAMPLER_BYTES + encoder)
        activation = Term("activation", act_bytes, int(SIGMA_A_FRACTION * act_bytes),
                          "docs/memory-model.md#activation-peak-a: profile-run peak (batched tokens, sampler, encoder), ±15 % "
                          f"(vLLM {inp.vllm_version}'s V2 runner: no start measured it, the 0.25.1 fit of before is kept)")

    # G: vLLM's estimate of the CUDA graphs (docs/memory-model.md#cuda-graphs-g), measured with and without MTP.
    graph_source = "docs/memory-model.md#cuda-graphs-g: vLLM's estimate of the captured graphs"
    if inp.enforce_eager:
        graph_bytes, sigma_g = 0, 0
    elif v1:
        g_v1 = v1_graphs(inp, decode_path_of(inp, N, M), cal)
        graph_bytes, sigma_g = g_v1.bytes, g_v1.uncertainty_bytes
        graph_source = f"docs/memory-model.md#the-v1-runner-0251-mechanism-and-fitted-constants: {g_v1.text}"
    elif N * (1 + k) * 2 <= GRAPH_SMALL_LIMIT:
        graph_bytes, sigma_g = GRAPH_SMALL, SIGMA_G_UNMEASURED
    elif k > 0:
        graph_bytes, sigma_g = GRAPH_MTP, SIGMA_G
    else:
        graph_bytes, sigma_g = (GRAPH_NO_MTP_LARGE if N > GRAPH_NO_MTP_LARGE_ABOVE else GRAPH_NO_MTP), SIGMA_G
    if not v1 and not inp.enforce_eager:
        graph_source += (f" (vLLM {inp.vllm_version}'s V2 runner estimates differently and no start measured it: "
                         "the constants of before are kept)")
    cudagraph = Term("cudagraph", graph_bytes, sigma_g, graph_source)

    # K = R - W - P - A - G (docs/memory-model.md#kv-cache-k), or the --kv-cache-memory-bytes value.
    if inp.kv_cache_memory_bytes is not None:
        kv = Term("kv_available", inp.kv_cache_memory_bytes, 0, "--kv-cache-memory-bytes (profiling skipped, docs/memory-model.md#kv-cache-k)")
    else:
        kv_bytes = budget.bytes - weights.bytes - persistent.bytes - activation.bytes - cudagraph.bytes
        sigma_k = _rss(budget.uncertainty_bytes, weights.uncertainty_bytes, persistent.uncertainty_bytes,
                       activation.uncertainty_bytes, cudagraph.uncertainty_bytes)
        kv = Term("kv_available", kv_bytes, sigma_k, "docs/memory-model.md#kv-cache-k: K = R - W - P - A - G")

    # KV geometry (docs/memory-model.md#kv-geometry, exact). a: attention bytes per token per layer, KV heads replicated past TP4.
    heads = max(1, facts.num_key_value_heads // t)
    a = 2 * heads * facts.head_dim * b
    # m: GDN state per layer per slot: conv (3+k rows, conv dtype) + recurrent (fp32 by default).
    conv_bytes = _mamba_bytes(inp.mamba_cache_dtype, facts.conv_state_dtype_bytes, "mamba_cache_dtype")
    ssm_bytes = _mamba_bytes(inp.mamba_ssm_cache_dtype, facts.ssm_state_dtype_bytes, "mamba_ssm_cache_dtype")
    m = (facts.conv_channels // t) * (facts.linear_conv_kernel_dim - 1 + k) * conv_bytes + (
        facts.linear_num_value_heads // t
    ) * facts.linear_key_head_dim * facts.linear_value_head_dim * ssm_bytes
    pc = inp.enable_prefix_caching
    c = 1 if flashinfer_gdn_prefill(inp) else 0
    q = 64 if (pc and c) else 16  # lcm(16, FLASHINFER_GDN_CHECKPOINT_ALIGNMENT=64) in align mode
    B = q * math.ceil(m / (q * a))  # platforms/interface.py::_align_hybrid_block_size
    page = B * a
    padding_pct = 100.0 * (page - m) / m
    # g: attention layers per stage (16; 17 with the MTP draft's layer); GDN groups padded to g.
    g = math.ceil(facts.full_attention_layers / pp) + (facts.mtp_num_hidden_layers if k > 0 else 0)
    bpb = g * page
    gdn_groups = facts.linear_attention_layers // facts.full_attention_layers
    S = (2 + k + c) if pc else (1 + k)  # MambaSpec.max_memory_usage_bytes: align vs none
    r = math.ceil(L / B) + gdn_groups * S
    need = bpb * (r + 1)  # one request at L plus the null block (docs/memory-model.md#blocks-per-request-and-the-null-block)

    num_blocks = max(0, kv.bytes // bpb)
    concurrency = num_blocks / r
    tokens = int(concurrency * L)  # kv_cache_utils.get_kv_cache_capacity
    margin = kv.bytes - need
    kv_verdict = _verdict(margin, kv.uncertainty_bytes)

    limit = facts.max_position_embeddings
    fit_blocks = num_blocks - 1 - gdn_groups * S
    max_len_fit = min(max(0, fit_blocks) * B, limit)
    safe_blocks = max(0, (kv.bytes - kv.uncertainty_bytes)) // bpb - 1 - gdn_groups * S
    max_len_safe = min(max(0, safe_blocks) * B, limit)

    startup = _startup_check(inp, M, budget, weights, (persistent, activation, cudagraph, kv), N, bpb)
    notes = _notes(inp, weights, kv, limit)

    return FitResult(
        inputs=inp,
        max_num_seqs=N,
        max_num_batched_tokens=M,
        budget=budget,
        weights=weights,
        persistent=persistent,
        activation=activation,
        cudagraph=cudagraph,
        kv_available=kv,
        attn_bytes_per_token_per_layer=a,
        gdn_state_bytes_per_slot=m,
        flashinfer_gdn_prefill=bool(c),
        kernel_block_alignment=q,
        block_size_tokens=B,
        page_bytes=page,
        mamba_padding_pct=padding_pct,
        group_size=g,
        bytes_per_block=bpb,
        state_blocks_per_gdn_group=S,
        gdn_groups=gdn_groups,
        blocks_per_request=r,
        bytes_per_request=bpb * r,
        bytes_needed_to_start=need,
        num_blocks=num_blocks,
        kv_cache_tokens=tokens,
        concurrency_at_max_len=concurrency,
        max_model_len_fit=max_len_fit,
        max_model_len_safe=max_len_safe,
        max_model_len_limit=limit,
        margin_bytes=margin,
        uncertainty_bytes=kv.uncertainty_bytes,
        kv_verdict=kv_verdict,
        startup=startup,
        notes=tuple(notes),
    )


def _startup_check(inp: FitInput, M: int, budget: Term, weights: Term, others: tuple[Term, ...],
                   N: int = 0, bytes_per_block: int = 0) -> StartupCheck:
    """vLLM's own start-up check (launcher.engine.behaviour.startup, the same computation as `check`'s
    memory-free), then the load peak and the CUDA-graph measurement's peak must fit in what is free."""
    facts = inp.model
    k, t = inp.num_speculative_tokens, inp.tensor_parallel_size
    requested = None
    if inp.kv_cache_memory_bytes is not None:
        requested = max(budget.bytes, weights.bytes + sum(term.bytes for term in others))
    rule = startup_of(inp, M, requested)
    embed_copy = facts.vocab_size * facts.hidden_size * 2  # BF16 embed_tokens or lm_head, 2.37 GiB
    load_peak = weights.bytes + (2 * embed_copy // t if k > 0 else 0)  # transient at load (docs/memory-model.md#load-peak)
    load_margin = rule.free_bytes - rule.allowance.high_bytes - load_peak
    verdict = {"pass": "fits", "warn": "marginal", "fail": "does-not-fit"}[rule.status]
    if rule.free_bytes - rule.allowance.low_bytes - load_peak < 0:
        verdict = "does-not-fit"
    elif load_margin < LOAD_PEAK_UNCERTAINTY and verdict == "fits":
        verdict = "marginal"  # inside the load peak's measured error (docs/memory-model.md#load-peak)
    # While vLLM measures its CUDA graphs it holds the weights, the persistent buffers, a throw-away KV cache and
    # the graphs (docs/memory-model.md#cuda-graphs-g); nothing checks that against the budget: too much is an OOM.
    b = behaviour.behaviour(inp.vllm_version)
    blocks = 0 if inp.enforce_eager or not bytes_per_block else b.profiling_kv_blocks(N, k, inp.compute_capability)
    persistent, cudagraph = others[0].bytes, others[2].bytes
    profiling_peak = weights.bytes + persistent + blocks * bytes_per_block + cudagraph if blocks else 0
    if profiling_peak:
        if rule.free_bytes - rule.allowance.low_bytes < profiling_peak:
            # measured on 0.25.1 (the NVML peak of the full-shape starts); from the source only for later versions
            verdict = "does-not-fit" if b.profiling_measured else _worse(verdict, "marginal")
        elif rule.free_bytes - rule.allowance.high_bytes < profiling_peak:
            verdict = _worse(verdict, "marginal")
    return StartupCheck(rule=rule, free_memory_assumed=inp.free_memory_bytes is None, verdict=verdict,
                        load_peak_bytes=load_peak, load_margin_bytes=load_margin,
                        profiling_peak_bytes=profiling_peak, profiling_kv_blocks=blocks)


def profiling_verdict(result: "FitResult") -> str:
    """The verdict of the CUDA-graph measurement alone (the line of `format_breakdown`), by `_startup_check`'s rule:
    fits below the least free memory, marginal between the least and the most, above the most does-not-fit where
    vLLM's out-of-memory at this stage was measured (else marginal: the peak comes from vLLM's source only)."""
    s = result.startup
    peak = s.profiling_peak_bytes
    if not peak or s.rule.free_bytes - s.rule.allowance.high_bytes >= peak:
        return "fits"
    if s.rule.free_bytes - s.rule.allowance.low_bytes >= peak:
        return "marginal"
    return "does-not-fit" if behaviour.behaviour(result.inputs.vllm_version).profiling_measured else "marginal"


def _worse(a: str, b: str) -> str:
    return max(a, b, key=VERDICTS.index)


def _notes(inp: FitInput, weights: Term, kv: Term, limit: int) -> list[str]:
    notes: list[str] = []
    k, pp, L = inp.num_speculative_tokens, inp.pipeline_parallel_size, inp.max_model_len
    if not inp.weights.from_local_index:
        notes.append(
            f"weights from shipped facts (±{weights.uncertainty_bytes / GIB:.2f} GiB per GPU); "
            "a local checkpoint's model.safetensors.index.json narrows this to ±0.10 GiB"
        )
    if inp.compute_capability < (8, 0):
        notes.append(f"compute capability {inp.compute_capability[0]}.{inp.compute_capability[1]} is below this model's floor of 8.0 "
                     "(docs/memory-model.md#compute-capability-floor)")
    if k > 0 and pp > 1:
        notes.append("MTP does not work with pipeline parallel > 1 (docs/troubleshooting.md#mtp-with-pipeline-parallel)")
    if pp > 1:
        notes.append("pipeline parallel: per-stage split of layers and weights is approximate [inferred]")
    if L > limit:
        notes.append(f"max_model_len {L} exceeds the model's {limit} (vLLM refuses without VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)")
    if inp.free_memory_bytes is None:
        notes.append("no free-memory reading: start-up check assumes an idle GPU (free = total)")
    if inp.kv_cache_memory_bytes is None and kv.bytes <= 0:
        notes.append("no memory left for the KV cache: vLLM stops with 'No available memory for the cache blocks'")
    return notes


# --- suggestions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """Values that would make the KV check pass with the combined uncertainty as margin.

    Each is found with the other inputs unchanged; None where no value of that knob is enough.
    """

    max_model_len: int | None
    max_num_seqs: int | None
    gpu_memory_utilization: float | None
    max_model_len_nominal: int  # largest L that starts at the nominal estimate (no margin)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len_nominal": self.max_model_len_nominal,
        }


def _kv_ok(result: FitResult) -> bool:
    return result.kv_verdict == "fits"


def suggest(inp: FitInput, result: FitResult | None = None) -> Suggestion:
    """The max_model_len, max_num_seqs or gpu_memory_utilization that would fit with margin."""
    result = result or estimate(inp)
    max_len = result.max_model_len_safe or None

    # max_num_seqs: K only grows as N shrinks, so bisect on N in [1, current N].
    best_n: int | None = None
    if _kv_ok(estimate(replace(inp, max_num_seqs=1))):
        lo, hi = 1, result.max_num_seqs
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _kv_ok(estimate(replace(inp, max_num_seqs=mid))):
                lo = mid
            else:
                hi = mid - 1
        best_n = lo

    # gpu_memory_utilization: the smallest hundredth that fits, no more than the free memory allows.
    best_u: float | None = None
    if inp.kv_cache_memory_bytes is None:
        ceiling = min(1.0, result.startup.rule.max_utilization())
        for hundredths in range(1, 101):
            u = hundredths / 100
            if u > ceiling + 1e-9:
                break
            if _kv_ok(estimate(replace(inp, gpu_memory_utilization=u))):
                best_u = u
                break
    return Suggestion(
        max_model_len=max_len,
        max_num_seqs=best_n,
        gpu_memory_utilization=best_u,
        max_model_len_nominal=result.max_model_len_fit,
    )


def startup_line(rule: Startup, assumed: bool = False) -> str:
    """One line of the start-up check, worded the same in `fit` and `check`."""
    gib = lambda n: f"{n / GIB:.2f}"  # noqa: E731
    text = (
        f"free {gib(rule.free_bytes)} GiB" + (" (assumed idle)" if assumed else "")
        + f" - before vLLM's snapshot {rule.allowance.text} vs requested {gib(rule.requested_bytes)} GiB "
        f"(ceil({rule.gpu_memory_utilization:g} x CUDA total {gib(rule.cuda_total_bytes)} GiB)): "
        f"{gib(rule.headroom_low_bytes)} to {gib(rule.headroom_high_bytes)} GiB to spare"
    )
    if rule.workspace_bytes:
        text += f"; FlashInfer workspace {gib(rule.workspace_bytes)} GiB comes out of that spare at KV-cache initialisation"
    return text


def pool_lines(result: FitResult, engines: int = 1, layout: str = "") -> list[str]:
    """The KV pool, labelled: per engine (what vLLM logs as "Maximum concurrency"), and for the whole deployment
    when it runs `engines` copies (data parallel ranks x replicas, `layout` says which), each with its own pool."""
    L = result.inputs.max_model_len
    per = "per engine" if engines > 1 else "one engine"
    lines = [
        f"  pool ({per}): {result.num_blocks} blocks, {result.kv_cache_tokens:,} tokens, "
        f"{result.concurrency_at_max_len:.2f} requests at {L} at once (vLLM's \"Maximum concurrency\")",
    ]
    if engines > 1:
        lines.append(
            f"  pool (whole deployment, {engines} engines{': ' + layout if layout else ''}): {result.num_blocks * engines} blocks, "
            f"{result.kv_cache_tokens * engines:,} tokens, {result.concurrency_at_max_len * engines:.2f} requests at {L} at once"
        )
    return lines


BAR_WIDTH = 60
BAR_PARTS = (  # role, letter, legend: what one GPU's memory holds, left to right
    ("weights", "W", "weights"),
    ("activations", "A", "activations + buffers"),
    ("graphs", "G", "CUDA graphs"),
    ("kv", "K", "KV cache"),
    ("free", ".", "outside the budget"),
)


def _plain(text: str, role: str) -> str:
    return text


def bar_parts(result: FitResult) -> list[tuple[str, int]]:
    """(role, bytes) of one GPU's memory (CUDA total): weights, activations + persistent buffers, CUDA graphs,
    the KV cache, and what gpu_memory_utilization leaves outside vLLM's budget. Negative parts count as 0."""
    total = result.inputs.total_memory_bytes
    parts = [
        ("weights", result.weights.bytes),
        ("activations", result.persistent.bytes + result.activation.bytes),
        ("graphs", result.cudagraph.bytes),
        ("kv", result.kv_available.bytes),
    ]
    parts = [(role, max(0, n)) for role, n in parts]
    parts.append(("free", max(0, total - sum(n for _, n in parts))))
    return parts


def memory_bar(result: FitResult, width: int = BAR_WIDTH, paint: Any = _plain) -> list[str]:
    """One GPU's memory as a bar (a letter per part: W weights, A activations, G graphs, K KV, . outside the budget),
    `width` characters for the CUDA total, largest remainders rounding; then its legend with the GiB of each part."""
    parts = bar_parts(result)
    whole = sum(n for _, n in parts) or 1
    exact = [n * width / whole for _, n in parts]
    cells = [int(x) for x in exact]
    for k in sorted(range(len(parts)), key=lambda k: exact[k] - cells[k], reverse=True)[: width - sum(cells)]:
        cells[k] += 1
    letters = {role: letter for role, letter, _ in BAR_PARTS}
    legend = {role: text for role, _, text in BAR_PARTS}
    bar = "".join(paint(letters[role] * c, role) for (role, _), c in zip(parts, cells, strict=True) if c)
    keys = "  ".join(paint(letters[role], role) + f" {legend[role]} {n / GIB:.2f}" for role, n in parts if n)
    return [f"  memory per GPU [{bar}] {result.inputs.total_memory_bytes / GIB:.2f} GiB", f"  {' ' * 15} {keys}"]


def format_breakdown(result: FitResult, engines: int = 1, layout: str = "", paint: Any = _plain) -> str:
    """A human table of the terms and the KV geometry (GiB, ± uncertainty); `engines` as in `pool_lines`;
    `paint(text, role)` colours the bar and the verdict (launcher.style.paint on a terminal)."""
    i = result.inputs
    lines = [
        f"GPU {i.gpu_name or '?'}: {i.total_memory_bytes / GIB:.2f} GiB (CUDA total), CC "
        f"{i.compute_capability[0]}.{i.compute_capability[1]}, TP {i.tensor_parallel_size}"
        + (f" x PP {i.pipeline_parallel_size}" if i.pipeline_parallel_size > 1 else "")
        + f", util {i.gpu_memory_utilization}, kv {i.kv_cache_dtype}, MTP k={i.num_speculative_tokens}, "
        f"max_model_len {i.max_model_len}, max_num_seqs {result.max_num_seqs}, "
        f"max_num_batched_tokens {result.max_num_batched_tokens}",
        "",
        *memory_bar(result, paint=paint),
        "",
        f"  {'term':<14}{'GiB':>9}{'± GiB':>9}  source",
    ]
    for term in result.terms:
        lines.append(f"  {term.name:<14}{term.gib:>9.2f}{term.uncertainty_bytes / GIB:>9.2f}  {term.source}")
    lines += [
        "",
        f"  block size {result.block_size_tokens} tokens, {result.bytes_per_block / MIB:.2f} MiB per block "
        f"({result.group_size} layers x {result.page_bytes / MIB:.3f} MiB page), "
        f"S={result.state_blocks_per_gdn_group} state blocks x {result.gdn_groups} GDN groups",
        f"  one request at {i.max_model_len}: {result.blocks_per_request} blocks = "
        f"{result.bytes_per_request / GIB:.2f} GiB (+1 null block = {result.bytes_needed_to_start / GIB:.2f} GiB)",
        *pool_lines(result, engines, layout),
        f"  margin {result.margin_bytes / GIB:+.2f} GiB vs ±{result.uncertainty_bytes / GIB:.2f} GiB: {result.kv_verdict}",
        f"  largest max_model_len that starts: {result.max_model_len_fit} (with margin: {result.max_model_len_safe})",
        "  start-up: " + startup_line(result.startup.rule, assumed=result.startup.free_memory_assumed) + f": {result.startup.verdict}",
        f"  while the weights load: peak {result.startup.load_peak_bytes / GIB:.2f} ± {result.startup.load_peak_uncertainty_bytes / GIB:.2f} GiB "
        f"(measured up to 1.3 GiB above this figure, docs/memory-model.md#load-peak); "
        f"{result.startup.load_margin_bytes / GIB:+.2f} GiB left with the largest before-snapshot allowance",
        f"  while vLLM measures its CUDA graphs: weights + buffers + {result.startup.profiling_kv_blocks} throw-away KV blocks + graphs = "
        f"{result.startup.profiling_peak_bytes / GIB:.2f} GiB of {(result.startup.rule.free_bytes - result.startup.rule.allowance.high_bytes) / GIB:.2f}"
        f"-{(result.startup.rule.free_bytes - result.startup.rule.allowance.low_bytes) / GIB:.2f} GiB free: {_graph_text(result)}",
        f"verdict: {paint(result.verdict, result.verdict)}",
    ]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def _graph_text(result: FitResult) -> str:
    """The CUDA-graph line's verdict, and why when the peak is over what is free (vLLM checks nothing there)."""
    verdict = profiling_verdict(result)
    if verdict == "fits":
        return verdict
    s = result.startup
    fix = "lower engine.max_num_seqs: fewer throw-away blocks"
    if s.profiling_peak_bytes <= s.rule.free_bytes - s.rule.allowance.low_bytes:
        return f"{verdict}: more than is free with the largest before-snapshot allowance ({fix})"
    if verdict == "does-not-fit":
        return f"{verdict}: more than is free, vLLM runs out of memory while it measures the graphs ({fix})"
    return (f"{verdict}: more than is free; vLLM 0.25.1 ran out of memory here (measured), for {result.inputs.vllm_version} "
            f"the peak follows from its source ({fix})")


# --- fitting the V1 constants on measured starts (tools/memory_loo.py) ------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What one start measured, next to the input that describes it: the profile run's torch peak and non-torch
    growth (GiB, None where the log did not say) and vLLM's CUDA-graph estimate per mode
    (mode, first capture MiB, graphs, per-graph MiB, largest capture size)."""

    name: str
    inputs: FitInput
    torch_peak_gib: float | None
    non_torch_gib: float | None
    graphs: tuple[tuple[str, float | None, int, float, int], ...] = ()


def _fit_line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares (intercept, slope); through the origin when every x is the same; None without points."""
    if not points:
        return None
    xs = {x for x, _ in points}
    if len(xs) == 1:
        x = points[0][0]
        return (0.0, sum(y for _, y in points) / len(points) / x) if x else (sum(y for _, y in points) / len(points), 0.0)
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return (my - slope * mx, slope)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def forward_residual_gib(o: Observed) -> float | None:
    """The forward part of the profile-run peak a start measured: torch peak + non-torch - P - the sampler's part."""
    if o.torch_peak_gib is None or o.non_torch_gib is None:
        return None
    inp = o.inputs
    M, N = resolve_batch(inp)
    copies = SAMPLER_COPIES_V1_SPEC if inp.num_speculative_tokens > 0 else SAMPLER_COPIES_V1
    sampler = copies * min(N, M) * inp.model.vocab_size * SAMPLER_BYTES
    return o.torch_peak_gib + o.non_torch_gib - (persistent_bytes(inp, N) + sampler) / GIB


def fit_calibration(observed: "list[Observed] | tuple[Observed, ...]", base: Calibration = V1_CALIBRATION) -> Calibration:
    """The V1 constants fitted on these starts (vLLM 0.25.1's V1 runner only); a constant no start backs keeps
    `base`'s value, except the FULL per-graph figure at TP >= 2, which becomes unmeasured (None)."""
    fw1: list[tuple[float, float]] = []
    fwt: list[tuple[float, float]] = []
    pw_first: list[tuple[float, float]] = []
    pw_per: list[float] = []
    full_first: list[float] = []
    full_tp1: list[float] = []
    full_tp: list[float] = []
    used = []
    for o in observed:
        inp = o.inputs
        if not v1_runner(inp):
            continue
        used.append(o.name)
        M, _ = resolve_batch(inp)
        t = inp.tensor_parallel_size
        res = forward_residual_gib(o)
        if res is not None:
            (fw1 if t == 1 else fwt).append((M / 1024 * (1 if t == 1 else 2 / t), res))
        flashinfer = uses_flashinfer_attention(inp)
        for mode, first, graphs, per_graph, largest in o.graphs:
            if mode == "PIECEWISE":
                if first is not None:
                    pw_first.append((float(largest), first))
                if graphs > 1:
                    pw_per.append(per_graph)
            elif mode == "FULL":
                if flashinfer and first is not None:
                    full_first.append(first)
                if graphs > 1:
                    (full_tp1 if t == 1 else full_tp).append(per_graph)
    # TP1: vLLM's peak does not follow the batched tokens there (2.08 GiB at 2048, 2.64 at 4096, 2.50 at 8192): a
    # line through those points extrapolates the scatter, so TP1 gets their mean and an error that covers it.
    line1 = (sum(y for _, y in fw1) / len(fw1), 0.0) if fw1 else None
    linet = _fit_line(fwt)
    pw = _fit_line(pw_first)
    r = lambda x, n: round(x, n)  # noqa: E731
    return Calibration(
        forward_tp1=(r(line1[0], 3), r(line1[1], 3)) if line1 else base.forward_tp1,
        forward_tp=(r(linet[0], 3), r(linet[1], 3)) if linet else base.forward_tp,
        piecewise_first=(r(pw[0], 1), r(pw[1], 3)) if pw else base.piecewise_first,
        piecewise_per_graph=r(_mean(pw_per) or base.piecewise_per_graph, 1),
        full_first_flashinfer=r(_mean(full_first) or base.full_first_flashinfer, 1),
        full_per_graph_tp1=r(_mean(full_tp1) or base.full_per_graph_tp1, 1),
        full_per_graph_tp=r(m, 1) if (m := _mean(full_tp)) is not None else None,
        fitted_on=tuple(used),
    )
