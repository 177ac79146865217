"""The memory estimator against docs/memory-model.md's worked numbers, its GPU table and common sense."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from launcher.errors import ProfileError
from launcher.fit.estimate import (
    GIB,
    MIB,
    FitInput,
    WeightSizes,
    batch_defaults,
    estimate,
    format_breakdown,
    kv_bytes_per_element,
    resolve_batch,
    suggest,
    uses_flashinfer_attention,
)
from launcher.hardware.catalog import lookup
from launcher.model.facts import MODEL_FACTS, ModelFacts

# docs/memory-model.md#worked-numbers: fp8 KV, S_main = 33.0 GB, RTX 3090 T = 23.69 GiB (SM86),
# A100 T = 79.25, H100 T = 79.19.
DUAL_3090 = dict(
    total_memory_bytes=round(23.69 * GIB),
    compute_capability=(8, 6),
    gpu_name="NVIDIA GeForce RTX 3090",
    gpu_memory_utilization=0.95,
    tensor_parallel_size=2,
    kv_cache_dtype="fp8",
    max_model_len=262144,
    max_num_seqs=256,
    language_model_only=True,
)
A100 = dict(DUAL_3090, total_memory_bytes=round(79.25 * GIB), compute_capability=(8, 0),
            gpu_name="NVIDIA A100-SXM4-80GB", max_num_seqs=None, num_speculative_tokens=2)
H100 = dict(A100, total_memory_bytes=round(79.19 * GIB), compute_capability=(9, 0),
            gpu_name="NVIDIA H100 80GB HBM3")


def _row(name, inputs, R, W, P, A, G, K, B, mib, S, r, need, fits, conc, tokens, conc_tol=0.005,
         k_tol=0.03, tokens_tol=None):
    return pytest.param(inputs, dict(R=R, W=W, P=P, A=A, G=G, K=K, B=B, mib=mib, S=S, r=r, need=need, fits=fits,
                                     conc=conc, tokens=tokens, conc_tol=conc_tol, k_tol=k_tol,
                                     tokens_tol=tokens_tol), id=name)


# K given with one decimal gets ±0.08 (its rounding plus the rounding of the five terms it is
# computed from in the table); "~" concurrencies are the table's approximations, ±1.
# Logged tokens "~331k" get ±0.5k, "~7.5M" ±0.05M.
WORKED = [
    _row("3090-tp2-262k-n256-lmo", dict(DUAL_3090), 22.51, 14.97, 0.49, 1.16, 0.60, 5.28, 1568, 24.50, 2, 174,
         4.19, "fits", 1.26, 331e3, tokens_tol=0.5e3),
    _row("3090-tp2-mtp2", dict(DUAL_3090, num_speculative_tokens=2), 22.51, 15.36, 0.49, 1.16, 0.60, 4.89, 1600,
         26.56, 4, 176, 4.59, "marginal", 1.07, 280e3, tokens_tol=0.5e3),
    _row("3090-tp2-mtp2-no-lmo", dict(DUAL_3090, num_speculative_tokens=2, language_model_only=False), 22.51, 15.79,
         0.49, 2.66, 0.60, 2.96, 1600, 26.56, 4, 176, 4.59, "does-not-fit", 0.65, None),
    _row("3090-tp2-mtp2-n4", dict(DUAL_3090, num_speculative_tokens=2, max_num_seqs=4), 22.51, 15.36, 0.25, 0.46,
         0.20, 6.23, 1600, 26.56, 4, 176, 4.59, "fits", 1.36, 357e3, tokens_tol=0.5e3),
    _row("3090-tp2-200k-n2", dict(DUAL_3090, max_model_len=200000, max_num_seqs=2), 22.51, 14.97, 0.25, 0.46, 0.20,
         6.63, 1568, 24.50, 2, 134, 3.23, "fits", 2.07, 413e3, tokens_tol=0.5e3),
    _row("3090-tp2-200k-n2-mtp2", dict(DUAL_3090, max_model_len=200000, max_num_seqs=2, num_speculative_tokens=2),
         22.51, 15.36, 0.25, 0.46, 0.20, 6.23, 1600, 26.56, 4, 137, 3.58, "fits", 1.75, 350e3, tokens_tol=0.5e3),
    _row("3090-tp2-bf16-n4-mtp2", dict(DUAL_3090, kv_cache_dtype="auto", max_num_seqs=4, num_speculative_tokens=2),
         22.51, 15.36, 0.25, 0.46, 0.20, 6.23, 800, 26.56, 4, 340, 8.85, "does-not-fit", 0.71, None),
    _row("a100x4-tp4-mtp2", dict(A100, tensor_parallel_size=4), 75.29, 7.70, 0.49, 1.01, 0.8, 65.3, 1600, 13.28, 4,
         176, 2.30, "fits", 28, 7.5e6, conc_tol=1.0, k_tol=0.08, tokens_tol=0.05e6),
    _row("h100x4-tp4-mtp2", dict(H100, tensor_parallel_size=4), 75.23, 7.70, 1.23, 3.59, 1.0, 61.7, 1600, 13.28, 5,
         179, 2.33, "fits", 27, 7.0e6, conc_tol=1.0, k_tol=0.08, tokens_tol=0.05e6),
    _row("a100x8-tp8-mtp2", dict(A100, tensor_parallel_size=8), 75.29, 3.86, 0.49, 0.94, 0.8, 69.2, 800, 6.64, 4,
         340, 2.21, "fits", 31, 8.2e6, conc_tol=1.0, k_tol=0.08, tokens_tol=0.05e6),
    _row("h100x8-tp8-mtp2", dict(H100, tensor_parallel_size=8), 75.23, 3.86, 1.23, 3.29, 1.0, 65.9, 832, 6.91, 5,
         331, 2.24, "fits", 29.5, 7.7e6, conc_tol=0.05, k_tol=0.08, tokens_tol=0.05e6),
]


@pytest.mark.parametrize("inputs, want", WORKED)
def test_worked_geometry_of_the_memory_model(inputs, want):
    """The budget and the KV geometry of docs/memory-model.md#worked-numbers are exact (vLLM's own arithmetic).

    The memory terms (W, P, A, G and so K) of that table were the uncalibrated model; they are now
    pinned by the measured full-shape starts (tests/unit/test_fullshape_calibration.py).
    """
    r = estimate(FitInput(**inputs))
    assert r.budget.bytes / GIB == pytest.approx(want["R"], abs=0.005)
    assert r.block_size_tokens == want["B"]
    assert round(r.bytes_per_block / MIB, 2) == pytest.approx(want["mib"], abs=0.005)
    assert r.state_blocks_per_gdn_group == want["S"]
    assert r.blocks_per_request == want["r"]
    assert r.bytes_needed_to_start / GIB == pytest.approx(want["need"], abs=0.005)


def test_gdn_state_per_slot_anchor():
    # docs/memory-model.md#gdn-state-per-slot: TP2, k=0 -> 30,720 + 1,572,864 = 1,603,584 B; TP4 0.77 MiB; TP8 0.38 MiB (the doc
    # halves the rounded 1.53 MiB, hence ±0.01).
    base = dict(DUAL_3090)
    assert estimate(FitInput(**base)).gdn_state_bytes_per_slot == 1_603_584
    assert estimate(FitInput(**dict(base, tensor_parallel_size=4))).gdn_state_bytes_per_slot / MIB == pytest.approx(
        0.77, abs=0.01)
    assert estimate(FitInput(**dict(base, tensor_parallel_size=8))).gdn_state_bytes_per_slot / MIB == pytest.approx(
        0.38, abs=0.01)


def test_tp8_replicates_kv_heads():
    tp4 = estimate(FitInput(**dict(A100, tensor_parallel_size=4)))
    tp8 = estimate(FitInput(**dict(A100, tensor_parallel_size=8)))
    assert tp4.attn_bytes_per_token_per_layer == tp8.attn_bytes_per_token_per_layer == 2 * 1 * 256 * 1


# docs/memory-model.md#gpu-table-concurrency: full-length 262k requests per replica at vLLM defaults (util 0.92, fp8 KV, LMO,
# MTP k=2, prefix caching on), GPU memory from the package's table. The table's "~" figures are
# approximations: ±6 % or ±0.15, whichever is larger.
GPU_TABLE = [
    ("RTX 3090", 2, 0.9), ("RTX 3090", 4, 5), ("RTX 3090", 8, 7),
    ("RTX 4090", 4, 5), ("RTX 4090", 8, 7),
    ("RTX 5090", 2, 2.4), ("RTX 5090", 4, 8), ("RTX 5090", 8, 10),
    ("A10", 4, 4.6), ("A10", 8, 6.5), ("L4", 4, 4.6), ("L4", 8, 6.5),
    ("A40", 2, 5), ("A40", 4, 13.5), ("A40", 8, 16),
    ("L40S", 2, 5), ("L40S", 4, 13.6), ("L40S", 8, 16),
    ("A100-40GB", 2, 4), ("A100-40GB", 4, 11.6), ("A100-40GB", 8, 13.8),
    ("A100-80GB", 2, 12), ("A100-80GB", 4, 27.6), ("A100-80GB", 8, 30),
    ("H100", 2, 11), ("H100", 4, 25.7), ("H100", 8, 28.6),
    ("H200", 2, 23), ("H200", 4, 50), ("H200", 8, 54),
    ("B200", 2, 30), ("B200", 4, 65), ("B200", 8, 69),
    ("RTX 6000 Ada", 2, 5.7), ("RTX 6000 Ada", 4, 14.8), ("RTX 6000 Ada", 8, 17),
    ("RTX PRO 6000", 2, 14), ("RTX PRO 6000", 4, 32), ("RTX PRO 6000", 8, 35),
]


def _catalog_input(name: str, tp: int, **extra) -> FitInput:
    gpu = lookup(name)
    return FitInput(
        total_memory_bytes=gpu.cuda_total_bytes,
        compute_capability=gpu.compute_capability,
        gpu_name=gpu.nvml_name,
        nvml_total_memory_bytes=gpu.memory_total_bytes,
        tensor_parallel_size=tp,
        kv_cache_dtype="fp8",
        language_model_only=True,
        num_speculative_tokens=2,
        **extra,
    )


def test_tiny_model_block_size_matches_the_real_h200_log():
    # tests/fixtures/logs/vllm-0.25.1-h200x2-tiny-start.log: vLLM 0.25.1 on H200, tiny Qwen3.5 (4 KV heads x 256, GDN 4 key / 8 value
    # heads of 128, bf16 state), TP2, fp8_e4m3, MTP k=2, prefix caching off, Triton GDN prefill,
    # logged "Setting attention block size to 144 tokens".
    base = MODEL_FACTS["havenoammo/Qwen3.6-27B-INT8-MTP"]
    tiny = dataclasses.replace(base, num_hidden_layers=4, full_attention_layers=1, linear_attention_layers=3,
                               linear_num_key_heads=4, linear_num_value_heads=8, ssm_state_dtype_bytes=2,
                               vocab_size=4096, hidden_size=256)
    r = estimate(FitInput(total_memory_bytes=150_109_880_320, compute_capability=(9, 0), gpu_name="NVIDIA H200",
                          gpu_memory_utilization=0.5, tensor_parallel_size=2, kv_cache_dtype="fp8_e4m3",
                          num_speculative_tokens=2, max_model_len=4096, enable_prefix_caching=False,
                          gdn_prefill_backend="triton", language_model_only=True, model=tiny))
    assert r.block_size_tokens == 144


# --- inputs, defaults and switches ----------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, size",
    [("auto", 2), ("bfloat16", 2), ("float16", 2), ("fp8", 1), ("fp8_e4m3", 1), ("fp8_e5m2", 1), ("FP8", 1)],
)
def test_kv_bytes_per_element(dtype, size):
    assert kv_bytes_per_element(dtype) == size


def test_unmodeled_kv_dtype_is_a_profile_error():
    with pytest.raises(ProfileError, match="not modeled"):
        kv_bytes_per_element("nvfp4")


@pytest.mark.parametrize(
    "name, total_gib, nvml_gib, want",
    [
        ("NVIDIA GeForce RTX 3090", 23.69, 24.0, (2048, 256)),
        ("NVIDIA A100-SXM4-80GB", 79.25, 80.0, (2048, 256)),  # A100 keeps the small defaults
        ("NVIDIA H100 80GB HBM3", 79.19, 79.65, (8192, 1024)),
        ("NVIDIA H200", 139.8, 140.4, (8192, 1024)),
        ("NVIDIA B200", 178.0, 179.06, (16384, 1024)),
    ],
)
def test_batch_defaults_follow_vllm(name, total_gib, nvml_gib, want):
    inp = FitInput(total_memory_bytes=round(total_gib * GIB), compute_capability=(9, 0), gpu_name=name,
                   nvml_total_memory_bytes=round(nvml_gib * GIB))
    assert batch_defaults(inp) == want


def test_gb10_keeps_the_small_defaults():
    gb10 = FitInput(total_memory_bytes=119 * GIB, compute_capability=(12, 1), gpu_name="NVIDIA GB10")
    assert batch_defaults(gb10) == (2048, 256)
    assert batch_defaults(dataclasses.replace(gb10, compute_capability=(12, 0))) == (8192, 1024)


def test_throughput_mode_doubles_only_defaults_and_m_is_capped():
    base = FitInput(total_memory_bytes=round(79.19 * GIB), compute_capability=(9, 0), gpu_name="NVIDIA H100 80GB HBM3")
    assert resolve_batch(dataclasses.replace(base, performance_mode="throughput")) == (16384, 2048)
    assert resolve_batch(dataclasses.replace(base, performance_mode="throughput", max_num_seqs=8)) == (16384, 8)
    assert resolve_batch(dataclasses.replace(base, max_num_seqs=2, max_model_len=1000)) == (2000, 2)
    assert resolve_batch(dataclasses.replace(base, max_num_batched_tokens=4096)) == (4096, 1024)


def test_default_batch_cliff_at_70_gib_is_vllms():
    # vLLM's defaults jump at 70 GiB (not A100), so a slightly bigger GPU can hold less KV at
    # defaults; with explicit values (the property tests) capacity is monotone.
    small = estimate(FitInput(total_memory_bytes=round(69.9 * GIB), compute_capability=(9, 0), tensor_parallel_size=4))
    big = estimate(FitInput(total_memory_bytes=round(70.1 * GIB), compute_capability=(9, 0), tensor_parallel_size=4))
    assert (small.max_num_seqs, big.max_num_seqs) == (256, 1024)
    assert big.kv_available.bytes < small.kv_available.bytes


def test_flashinfer_gdn_prefill_sets_alignment_and_extra_state_block():
    h100 = dict(H100, tensor_parallel_size=4)
    on = estimate(FitInput(**h100))
    triton = estimate(FitInput(**dict(h100, gdn_prefill_backend="triton")))
    no_pc = estimate(FitInput(**dict(h100, enable_prefix_caching=False)))
    assert (on.flashinfer_gdn_prefill, on.kernel_block_alignment, on.state_blocks_per_gdn_group) == (True, 64, 5)
    assert (triton.flashinfer_gdn_prefill, triton.kernel_block_alignment, triton.state_blocks_per_gdn_group) == (
        False, 16, 4)
    # "none" mode: S = 1 + k, q = 16.
    assert (no_pc.kernel_block_alignment, no_pc.state_blocks_per_gdn_group) == (16, 3)


def test_mtp_adds_the_draft_attention_layer_to_the_pool():
    assert estimate(FitInput(**DUAL_3090)).group_size == 16
    assert estimate(FitInput(**dict(DUAL_3090, num_speculative_tokens=1))).group_size == 17


def test_mamba_ssm_cache_bf16_halves_the_recurrent_state():
    fp32 = estimate(FitInput(**DUAL_3090))
    bf16 = estimate(FitInput(**dict(DUAL_3090, mamba_ssm_cache_dtype="bfloat16")))
    assert fp32.gdn_state_bytes_per_slot - bf16.gdn_state_bytes_per_slot == 24 * 128 * 128 * 2


@pytest.mark.parametrize(
    "cc, kv, backend, want",
    [((8, 6), "fp8", None, True), ((8, 6), "auto", None, False), ((9, 0), "fp8", None, False),
     ((10, 0), "auto", None, True), ((12, 0), "fp8", None, True), ((9, 0), "auto", "FLASHINFER", True)],
)
def test_flashinfer_attention_inference(cc, kv, backend, want):
    inp = FitInput(total_memory_bytes=24 * GIB, compute_capability=cc, kv_cache_dtype=kv, attention_backend=backend)
    assert uses_flashinfer_attention(inp) is want


def test_startup_check_counts_context_and_flashinfer_workspace():
    # docs/memory-model.md#flashinfer-workspace: at u 0.95 on a 3090 "the memory left over above the budget is about 0.4-0.6 GiB, which
    # barely covers the 394 MiB FlashInfer workspace"; a desktop on the GPU breaks it.
    idle = estimate(FitInput(**DUAL_3090))
    assert idle.startup.flashinfer_workspace_bytes == 394 * MIB
    assert idle.startup.rule.status == "warn"  # 0.35-1.65 GiB before the snapshot (interconnect unknown)
    # vLLM surely raises once even the smallest before-snapshot allowance leaves less than ceil(u x total)
    desktop = estimate(FitInput(**dict(DUAL_3090, free_memory_bytes=idle.startup.requested_bytes + 300 * MIB)))
    assert desktop.startup.rule.status == "fail"
    assert desktop.startup.verdict == "does-not-fit" and desktop.verdict == "does-not-fit"


def test_cuda_graph_measurement_peak_per_version():
    """The throw-away KV cache of the CUDA-graph measurement: capture-size blocks in 0.25.1 (measured on H200:
    the NVML peak of the full-shape start), min(max_num_seqs, capture size) from 0.32 on (from the source)."""
    inp = dict(DUAL_3090, num_speculative_tokens=2)
    old = estimate(FitInput(**inp, vllm_version="0.25.1"))
    new = estimate(FitInput(**inp, vllm_version="0.33.0"))
    assert old.startup.profiling_kv_blocks == 512 and new.startup.profiling_kv_blocks == 256
    assert old.startup.profiling_peak_bytes > 23.69 * GIB and old.startup.verdict == "does-not-fit"
    assert new.startup.profiling_peak_bytes < old.startup.profiling_peak_bytes


def test_skip_mm_profiling_drops_the_encoder_pass_but_not_the_tower():
    no_lmo = dict(DUAL_3090, language_model_only=False)
    full = estimate(FitInput(**no_lmo))
    skipped = estimate(FitInput(**dict(no_lmo, skip_mm_profiling=True)))
    lmo = estimate(FitInput(**DUAL_3090))
    assert skipped.activation.bytes == lmo.activation.bytes < full.activation.bytes
    assert skipped.weights.bytes == full.weights.bytes > lmo.weights.bytes


def test_enforce_eager_drops_graph_memory():
    r = estimate(FitInput(**dict(DUAL_3090, enforce_eager=True)))
    assert r.cudagraph.bytes == 0 and r.cudagraph.uncertainty_bytes == 0


def test_kv_cache_memory_bytes_skips_profiling():
    r = estimate(FitInput(**dict(DUAL_3090, kv_cache_memory_bytes=5 * GIB)))
    assert r.kv_available.bytes == 5 * GIB and r.uncertainty_bytes == 0
    assert r.num_blocks == 5 * GIB // r.bytes_per_block


def test_local_index_narrows_weight_uncertainty():
    local = WeightSizes(main_bytes=30_800_000_000, vision_bytes=920_000_000, mtp_bytes=850_000_000,
                        source="local index", from_local_index=True)
    facts = estimate(FitInput(**DUAL_3090))
    read = estimate(FitInput(**dict(DUAL_3090, weights=local)))
    assert facts.weights.uncertainty_bytes / GIB == pytest.approx(0.5, abs=0.01)
    assert read.weights.uncertainty_bytes / GIB == pytest.approx(0.10, abs=0.001)
    # a smaller checkpoint frees exactly its bytes per GPU for the KV cache
    mtp_facts = estimate(FitInput(**dict(DUAL_3090, num_speculative_tokens=2)))
    mtp_local = estimate(FitInput(**dict(DUAL_3090, weights=local, num_speculative_tokens=2)))
    saved = (33.0e9 - 30.8e9) / 2
    assert (mtp_local.kv_available.bytes - mtp_facts.kv_available.bytes) == pytest.approx(saved, rel=0.1)


@pytest.mark.parametrize("tp", [3, 5, 6, 16])
def test_invalid_tp_is_a_profile_error(tp):
    with pytest.raises(ProfileError, match="tensor_parallel_size"):
        estimate(FitInput(**dict(DUAL_3090, tensor_parallel_size=tp)))


def test_model_limit_caps_max_model_len_fit():
    r = estimate(FitInput(**dict(A100, tensor_parallel_size=4, max_model_len=8192)))
    assert r.max_model_len_fit == r.max_model_len_limit == 262144


def test_to_json_has_the_issue_keys():
    j = estimate(FitInput(**dict(DUAL_3090, num_speculative_tokens=2))).to_json()
    kv = j["kv_cache"]
    assert kv["block_size_tokens"] == 1600
    assert kv["bytes_per_block"] == 17 * 1600 * 1024
    assert kv["bytes_per_request"] == 176 * kv["bytes_per_block"]
    assert kv["available_bytes"] == j["terms"]["kv_available"]["bytes"]
    assert j["max_model_len_fit"] % 1600 == 0 and j["max_model_len_fit"] < 262144  # measured: 262144 does not fit 24 GB
    assert j["concurrency_at_max_len"] < 1
    assert j["verdict"] in ("fits", "marginal", "does-not-fit")
    for name in ("budget", "weights", "persistent", "activation", "cudagraph", "kv_available"):
        assert j["terms"][name]["source"].startswith(("docs/memory-model.md#", "--kv"))
        assert j["terms"][name]["uncertainty_bytes"] >= 0


def test_breakdown_mentions_every_term():
    text = format_breakdown(estimate(FitInput(**DUAL_3090)))
    for word in ("budget", "weights", "persistent", "activation", "cudagraph", "kv_available", "verdict"):
        assert word in text


def test_suggestions_fit_with_margin():
    inp = FitInput(**dict(DUAL_3090, num_speculative_tokens=2, language_model_only=False))
    s = suggest(inp)
    assert estimate(dataclasses.replace(inp, max_model_len=s.max_model_len)).kv_verdict == "fits"
    assert s.max_model_len <= s.max_model_len_nominal
    # Fewer sequences cannot rescue this one (the encoder profile and weights dominate) ...
    assert s.max_num_seqs is None
    # ... but with --language-model-only and a shorter context the sequence count can.
    lmo = FitInput(**dict(DUAL_3090, num_speculative_tokens=2, gpu_memory_utilization=0.92, max_model_len=131072))
    s2 = suggest(lmo)
    assert s2.max_num_seqs is not None
    assert estimate(dataclasses.replace(lmo, max_num_seqs=s2.max_num_seqs)).kv_verdict == "fits"
    assert estimate(dataclasses.replace(lmo, max_num_seqs=s2.max_num_seqs + 1)).kv_verdict != "fits"


def test_utilization_suggestion_is_the_smallest_that_fits():
    inp = FitInput(**dict(A100, tensor_parallel_size=4, gpu_memory_utilization=0.2))
    s = suggest(inp)
    assert s.gpu_memory_utilization is not None
    assert estimate(dataclasses.replace(inp, gpu_memory_utilization=s.gpu_memory_utilization)).kv_verdict == "fits"
    lower = round(s.gpu_memory_utilization - 0.01, 2)
    assert estimate(dataclasses.replace(inp, gpu_memory_utilization=lower)).kv_verdict != "fits"


# --- properties -----------------------------------------------------------------------------------

CCS = [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)]

configs = st.fixed_dictionaries(
    {
        "total_memory_bytes": st.integers(16 * GIB, 200 * GIB),
        "compute_capability": st.sampled_from(CCS),
        "gpu_memory_utilization": st.floats(0.5, 0.98),
        "tensor_parallel_size": st.sampled_from([1, 2, 4, 8]),
        "kv_cache_dtype": st.sampled_from(["auto", "fp8"]),
        "num_speculative_tokens": st.integers(0, 4),
        "max_model_len": st.integers(1024, 262144),
        "max_num_seqs": st.integers(1, 1024),
        "max_num_batched_tokens": st.integers(256, 16384),
        "enable_prefix_caching": st.booleans(),
        "language_model_only": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(cfg=configs, extra=st.integers(0, 100 * GIB))
def test_more_memory_never_lowers_capacity(cfg, extra):
    small = estimate(FitInput(**cfg))
    big = estimate(FitInput(**dict(cfg, total_memory_bytes=cfg["total_memory_bytes"] + extra)))
    assert big.kv_available.bytes >= small.kv_available.bytes
    assert big.num_blocks >= small.num_blocks
    assert big.kv_cache_tokens >= small.kv_cache_tokens
    assert big.concurrency_at_max_len >= small.concurrency_at_max_len
    assert big.max_model_len_fit >= small.max_model_len_fit


@settings(max_examples=300, deadline=None)
@given(cfg=configs, longer=st.integers(1, 200_000), defaults=st.booleans())
def test_longer_max_model_len_never_raises_concurrency(cfg, longer, defaults):
    if defaults:  # vLLM caps the default max_num_batched_tokens at max_num_seqs x max_model_len
        cfg = dict(cfg, max_num_batched_tokens=None)
    short = estimate(FitInput(**cfg))
    long = estimate(FitInput(**dict(cfg, max_model_len=cfg["max_model_len"] + longer)))
    assert long.concurrency_at_max_len <= short.concurrency_at_max_len


@settings(max_examples=300, deadline=None)
@given(cfg=configs)
def test_fp8_kv_never_holds_fewer_tokens_than_bf16(cfg):
    fp8 = estimate(FitInput(**dict(cfg, kv_cache_dtype="fp8")))
    bf16 = estimate(FitInput(**dict(cfg, kv_cache_dtype="auto")))
    assert fp8.kv_cache_tokens >= bf16.kv_cache_tokens
    assert fp8.num_blocks * fp8.block_size_tokens >= bf16.num_blocks * bf16.block_size_tokens
    assert fp8.concurrency_at_max_len >= bf16.concurrency_at_max_len
    assert fp8.max_model_len_fit >= bf16.max_model_len_fit


@settings(max_examples=200, deadline=None)
@given(cfg=configs, local=st.booleans(), main=st.integers(5 * 10**9, 60 * 10**9))
def test_larger_tp_never_needs_more_weight_memory_per_gpu(cfg, local, main):
    weights = WeightSizes(main_bytes=main, vision_bytes=920_000_000, mtp_bytes=850_000_000, source="test",
                          from_local_index=local)
    per_gpu = [estimate(FitInput(**dict(cfg, tensor_parallel_size=t, weights=weights))).weights.bytes
               for t in (1, 2, 4, 8)]
    assert per_gpu == sorted(per_gpu, reverse=True)


@settings(max_examples=300, deadline=None)
@given(cfg=configs)
def test_max_model_len_fit_fits_and_one_more_block_does_not(cfg):
    r = estimate(FitInput(**cfg))
    fit = r.max_model_len_fit
    assert fit % r.block_size_tokens == 0 or fit == r.max_model_len_limit
    if fit > 0:
        at = estimate(FitInput(**dict(cfg, max_model_len=fit)))
        assert at.margin_bytes >= 0 and at.kv_verdict != "does-not-fit"
        assert at.kv_available.bytes == r.kv_available.bytes  # explicit batch: K does not depend on L
    if fit < r.max_model_len_limit:
        beyond = estimate(FitInput(**dict(cfg, max_model_len=fit + r.block_size_tokens)))
        assert beyond.margin_bytes < 0 and beyond.kv_verdict == "does-not-fit"


@settings(max_examples=200, deadline=None)
@given(cfg=configs)
def test_verdict_agrees_with_margin(cfg):
    r = estimate(FitInput(**cfg))
    assert (r.kv_verdict == "does-not-fit") == (r.margin_bytes < 0)
    assert (r.kv_verdict == "fits") == (r.margin_bytes >= r.uncertainty_bytes)
    assert math.isclose(r.concurrency_at_max_len, r.num_blocks / r.blocks_per_request)
    assume(r.num_blocks > 0)
    assert r.bytes_per_block * r.num_blocks <= r.kv_available.bytes < r.bytes_per_block * (r.num_blocks + 1)


def test_model_facts_expose_valid_tp():
    facts: ModelFacts = MODEL_FACTS["havenoammo/Qwen3.6-27B-INT8-MTP"]
    assert facts.valid_tensor_parallel_sizes == (1, 2, 4, 8)
    assert facts.conv_channels == 10240
