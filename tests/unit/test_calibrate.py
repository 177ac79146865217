"""Reading vLLM's start-up memory lines and setting them against the estimate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from launcher.fit.calibrate import compare, format_rows, parse_log
from launcher.fit.estimate import GIB, FitInput, estimate
from launcher.model.facts import MODEL_FACTS

# vLLM 0.25.1 starting on 2 x H200 (tests/fixtures/README.md).
REAL_EXCERPT = Path(__file__).resolve().parent.parent / "fixtures" / "logs" / "vllm-0.25.1-h200x2-tiny-start.log"

# 2 x RTX 3090, TP2, u 0.95, fp8 KV, --language-model-only, MTP k=2, 262144 (docs/memory-model.md#worked-numbers row 2).
PROFILE = FitInput(
    total_memory_bytes=round(23.69 * GIB), compute_capability=(8, 6), gpu_name="NVIDIA GeForce RTX 3090",
    gpu_memory_utilization=0.95, tensor_parallel_size=2, kv_cache_dtype="fp8", max_model_len=262144,
    max_num_seqs=256, language_model_only=True, num_speculative_tokens=2,
)

# Lines in vLLM 0.32/0.33 wording and prefix format (written by hand, not captured: no GPU start
# of the real model was available). 4.69 GiB of KV with 26.5625 MiB blocks is 180 blocks; a
# 262144-token request takes 176: 180/176 x 262144 = 268,101 tokens, 1.02x.
START_LOG = (Path(__file__).resolve().parent.parent / "fixtures" / "logs" / "vllm-0.33-dual-3090-mtp-handwritten.log").read_text()


def _by_name(rows):
    return {row.quantity: row for row in rows}


def test_parse_reads_every_memory_line():
    log = parse_log(START_LOG)
    assert log.version == "0.33.0"
    # Single-valued lines: the last one wins (ranks repeat them; a log may hold a restart).
    assert log.block_size_tokens.value == 1600 and log.block_size_tokens.line == 5
    assert log.block_size_tokens.process == "Worker_TP1 pid=4115"
    assert log.mamba_padding_pct.value == 0.88
    assert [s.value for s in log.model_loading_gib] == [15.41, 15.40]
    assert sorted(s.value for s in log.available_kv_gib) == [4.69, 4.71]
    assert log.kv_pool == "GPU"
    assert log.kv_cache_tokens.value == 268_101
    assert log.concurrency_max_len == 262_144
    assert log.max_concurrency.value == 1.02
    assert log.graph_capture_gib[0].value == 0.55
    (summary,) = log.summaries
    assert (summary.free_gib, summary.total_gib, summary.utilization, summary.requested_gib) == (23.1, 23.69, 0.95, 22.51)
    assert (summary.consumed_gib, summary.activation_gib, summary.cudagraph_gib) == (15.9, 1.79, 0.55)
    assert summary.kv_bytes_to_requested_limit == 5035784192
    assert summary.kv_bytes_to_gpu_limit == 5669896396
    assert summary.kv_in_use_gib == 4.69
    assert not log.empty


def test_compare_against_the_estimate():
    rows = _by_name(compare(estimate(PROFILE), parse_log(START_LOG)))
    assert rows["attention block size"].ok and rows["attention block size"].tolerance == 0
    assert rows["mamba page padding"].ok
    # The smallest rank decides the KV pool.
    # This log is hand-written in vLLM 0.33's format (its numbers are the uncalibrated model's): the geometry and
    # the budget are checked here; the memory terms are pinned by the real starts (test_fullshape_calibration).
    assert rows["available KV cache"].actual == 4.69
    assert rows["KV tokens from actual K (geometry)"].ok
    assert rows["weights (Model loading took)"].actual == 15.41
    assert rows["CUDA total"].ok and rows["budget R"].ok
    text = format_rows(list(rows.values()))
    assert "attention block size" in text and "268,101" in text


def test_wrong_geometry_is_flagged():
    # A start without MTP (block 1568, 16-layer groups) compared with the MTP profile.
    log = START_LOG.replace("block size to 1600", "block size to 1568").replace("268,101", "331,446")
    rows = _by_name(compare(estimate(PROFILE), parse_log(log)))
    assert rows["attention block size"].ok is False
    assert rows["KV tokens from actual K (geometry)"].ok is False


def test_other_max_model_len_is_flagged():
    rows = _by_name(compare(estimate(dataclasses.replace(PROFILE, max_model_len=131072)), parse_log(START_LOG)))
    assert rows["max_model_len of the log"].ok is False


def test_older_separate_lines_and_colours():
    log = parse_log(
        "\x1b[1;36m(EngineCore_DP0 pid=77)\x1b[0;0m INFO 11-28 20:26:12 [kv_cache_utils.py:1087] "
        "GPU KV cache size: 331,446 tokens\n"
        "(EngineCore_DP0 pid=77) INFO 11-28 20:26:12 [kv_cache_utils.py:1091] "
        "Maximum concurrency for 262,144 tokens per request: 1.26x\n"
        "INFO 11-28 20:24:46 [gpu_model_runner.py:1595] Model loading took 14.9712 GiB and 38.123 seconds\n"
    )
    assert log.kv_cache_tokens.value == 331_446
    assert log.kv_cache_tokens.process == "EngineCore_DP0 pid=77"
    assert log.max_concurrency.value == 1.26
    assert log.model_loading_gib[0].value == 14.9712


def test_not_enough_kv_error():
    text = (
        "(EngineCore pid=3932) ERROR 11-28 20:30:00 [core.py:1100] ValueError: To serve at least one request "
        "with the model's max seq len (262144), (4.57 GiB KV cache is needed, which is larger than the available "
        "KV cache memory (2.91 GiB). Based on the available memory, the estimated maximum model length is 161600. "
        "Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing "
        "`max_model_len` when initializing the engine. See "
        "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.\n"
    )
    log = parse_log(text)
    assert log.kv_too_small == (262144, 4.57, 2.91, 161600)
    no_lmo = dataclasses.replace(PROFILE, language_model_only=False)
    rows = _by_name(compare(estimate(no_lmo), log))
    assert rows["KV for one request (vLLM error)"].ok
    assert rows["usable KV (vLLM error)"].actual == 2.91  # a hand-written line: the parse and the geometry are what counts


def test_free_memory_error_and_no_memory():
    log = parse_log(
        "(Worker_TP1 pid=4115) ERROR 11-28 20:23:50 [worker_base.py:1] ValueError: Free memory on device cuda:1 "
        "(21.9/23.69 GiB) on startup is less than desired GPU memory utilization (0.95, 22.51 GiB). Decrease GPU "
        "memory utilization or reduce GPU memory used by other processes.\n"
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
        "initializing the engine.\n"
    )
    assert log.free_memory_error == (21.9, 23.69, 0.95, 22.51)
    assert log.no_kv_memory


def test_kv_cache_memory_bytes_line():
    log = parse_log(
        "(Worker_TP0 pid=4114) INFO 11-28 20:26:11 [gpu_worker.py:670] Initial free memory 23.1 GiB, reserved "
        "5.0 GiB memory for KV Cache as specified by kv_cache_memory_bytes config and skipped memory profiling. "
        "This does not respect the gpu_memory_utilization config.\n"
    )
    assert [s.value for s in log.available_kv_gib] == [5.0]


def test_empty_log():
    log = parse_log("hello\nworld\n")
    assert log.empty and log.lines_read == 2
    assert format_rows(compare(estimate(PROFILE), log)) == "no memory lines found in the log"


def test_real_h200_excerpt():
    # vLLM 0.25.1 on 2 x H200 with a tiny random-weight Qwen3.5 + MTP (bf16 GDN state).
    log = parse_log(REAL_EXCERPT.read_text())
    assert log.version == "0.25.1"
    assert log.block_size_tokens.value == 144
    assert log.model_loading_gib[0].value == 0.06
    assert log.available_kv_gib[0].value == 68.82
    assert log.graph_capture_gib[0].value == 0.12
    base = MODEL_FACTS["havenoammo/Qwen3.6-27B-INT8-MTP"]
    tiny = dataclasses.replace(base, full_attention_layers=1, linear_attention_layers=3, linear_num_key_heads=4,
                               linear_num_value_heads=8, ssm_state_dtype_bytes=2, vocab_size=4096, hidden_size=256)
    fit = estimate(FitInput(total_memory_bytes=150_109_880_320, compute_capability=(9, 0), gpu_name="NVIDIA H200",
                            gpu_memory_utilization=0.5, tensor_parallel_size=2, kv_cache_dtype="fp8_e4m3",
                            num_speculative_tokens=2, max_model_len=4096, enable_prefix_caching=False,
                            gdn_prefill_backend="triton", language_model_only=True, model=tiny))
    rows = _by_name(compare(fit, log))
    assert rows["attention block size"].ok


@pytest.mark.parametrize("line", ["Available KV cache memory: 4.69 GiB", "GPU KV cache size: 268,101 tokens"])
def test_lines_without_prefix(line):
    assert not parse_log(line).empty
