"""The smoke battery, run with the real `openai` client against a local HTTP server that replays
chat bodies (JSON and SSE) recorded from a real vLLM (tests/fixtures/smoke/record.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import NotReadyError
from launcher.live.smoke import (
    CHECKS,
    FAIL,
    NA,
    PASS,
    RANDOM_WEIGHTS_MARKER,
    WARN,
    accumulate_stream,
    detect_random_weights,
    evaluate_reasoning,
    evaluate_spec_decode,
    evaluate_tool_call,
    parse_metrics,
    run_smoke,
    spec_decode_counters,
)
from tests.fakes.vllm_server import FIXTURES, FakeVllm

REPO = Path(__file__).resolve().parents[2]


def statuses(report: Any) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def check(report: Any, name: str) -> Any:
    return next(c for c in report.checks if c.name == name)


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def sse_chunks(name: str) -> list[dict[str, Any]]:
    chunks = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[len("data: "):]))
    return chunks


@pytest.fixture
def marked_model_dir(tmp_path: Path) -> Path:
    (tmp_path / RANDOM_WEIGHTS_MARKER).write_text(json.dumps({"random_weights": True}))
    return tmp_path


# ------------------------------------------------------------------------- whole battery


@pytest.mark.slow
def test_good_server_passes_everything() -> None:
    with FakeVllm("good") as fake:
        report = run_smoke(fake.url, "tiny")
    assert statuses(report) == {name: PASS for name in CHECKS}, report.format_text(verbose=True)
    assert report.ok and not report.random_weights and report.random_weights_source == "none"
    assert check(report, "tool_call").summary.startswith('get_weather({"city": "Paris"})')
    assert "acceptance 70.0%" in check(report, "spec_decode").summary
    # What went over the wire, as a user's openai client sends it.
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for kind, body in zip(fake.kinds, fake.requests, strict=True):
        by_kind.setdefault(kind, []).append(body)
    assert sorted(by_kind) == ["chat", "prose", "reasoning", "tool", "tool_required", "tool_stream"]
    assert len(by_kind["prose"]) == 2
    assert fake.max_in_flight >= 1
    assert by_kind["reasoning"][0]["chat_template_kwargs"] == {"enable_thinking": True}
    assert by_kind["chat"][0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert by_kind["tool"][0]["tool_choice"] == "auto" and by_kind["tool"][0]["tools"][0]["function"]["name"] == "get_weather"
    assert by_kind["tool_stream"][0]["stream"] is True
    assert by_kind["tool_required"][0]["tool_choice"] == "required"
    assert all("ignore_eos" not in b for b in fake.requests)
    # A real model samples with its own defaults, except the one-word chat answer (greedy).
    assert [b.get("temperature") for b in fake.requests if "temperature" in b] == [0]


@pytest.mark.slow
def test_concurrent_requests_really_overlap() -> None:
    with FakeVllm("good", response_delay=0.3) as fake:
        report = run_smoke(fake.url, checks=["concurrency"])
    assert statuses(report) == {"concurrency": PASS}
    assert fake.max_in_flight == 2


@pytest.mark.slow
def test_random_weights_detected_from_marker(marked_model_dir: Path) -> None:
    with FakeVllm("good", root=str(marked_model_dir), spec_decode="no_accept") as fake:
        report = run_smoke(fake.url)
    assert report.random_weights and report.random_weights_source == "marker"
    assert statuses(report) == {
        "chat": PASS, "reasoning": NA, "tool_call": NA, "tool_call_stream": NA, "tool_call_required": NA,
        "concurrency": PASS, "spec_decode": PASS,
    }, report.format_text(verbose=True)
    assert report.ok
    assert "acceptance 0.0%" in check(report, "spec_decode").summary
    assert "not judged: random weights" in check(report, "spec_decode").summary
    # The n/a requests were still sent (a crash in the parser path would fail them), cheaply.
    assert {"reasoning", "tool", "tool_stream", "tool_required"} <= set(fake.kinds)
    assert all(b.get("ignore_eos") is True and b.get("temperature") == 0 for b in fake.requests)
    assert all(b["max_tokens"] <= 32 for b in fake.requests)


@pytest.mark.slow
def test_random_weights_flag_without_marker() -> None:
    with FakeVllm("good") as fake:
        report = run_smoke(fake.url, random_weights=True)
    assert report.random_weights_source == "flag"
    assert check(report, "reasoning").status == NA


@pytest.mark.slow
def test_real_weights_flag_overrides_marker(marked_model_dir: Path) -> None:
    with FakeVllm("good", root=str(marked_model_dir)) as fake:
        report = run_smoke(fake.url, random_weights=False, checks=["reasoning"])
    assert not report.random_weights and check(report, "reasoning").status == PASS


@pytest.mark.slow
def test_random_weights_request_that_crashes_still_fails(marked_model_dir: Path) -> None:
    with FakeVllm("engine_dead", root=str(marked_model_dir)) as fake:
        report = run_smoke(fake.url)
    assert check(report, "chat").status == FAIL
    assert check(report, "reasoning").status == FAIL  # 500 is a failure even where output is not judged
    concurrency = check(report, "concurrency")
    assert concurrency.status == FAIL and concurrency.evidence["health_after"] == 503
    assert "EngineCore encountered an issue" in check(report, "chat").evidence["message"]
    assert not report.ok and report.failed()[0] == "chat"


# ---------------------------------------------------------------- recorded failure shapes


@pytest.mark.slow
def test_no_reasoning_parser_fails_reasoning() -> None:
    with FakeVllm("no_reasoning_parser") as fake:
        report = run_smoke(fake.url, checks=["reasoning"])
    result = check(report, "reasoning")
    assert result.status == FAIL
    assert "reasoning left inside content (</think> in content)" in result.summary
    assert "eighty-four.</think>" in result.evidence["content"]


@pytest.mark.slow
def test_unfinished_reasoning_warns() -> None:
    with FakeVllm("reasoning_unfinished") as fake:
        report = run_smoke(fake.url, checks=["reasoning"])
    assert check(report, "reasoning").status == WARN
    assert "max_tokens ran out" in check(report, "reasoning").summary


@pytest.mark.slow
def test_unparseable_tool_call_fails_streaming_and_not() -> None:
    with FakeVllm("tool_json") as fake:
        report = run_smoke(fake.url, checks=["tool_call", "tool_call_stream"])
    assert statuses(report) == {"tool_call": FAIL, "tool_call_stream": FAIL}
    assert "no tool call" in check(report, "tool_call").summary
    assert check(report, "tool_call_stream").evidence["stream_chunks"] > 3


@pytest.mark.slow
def test_call_inside_think_recovered_by_vllm_032_passes() -> None:
    # vLLM 0.32's qwen3_xml parser finds a call emitted inside an unclosed <think> (recorded).
    with FakeVllm("tool_in_reasoning") as fake:
        report = run_smoke(fake.url, checks=["tool_call", "tool_call_stream"])
    assert statuses(report) == {"tool_call": PASS, "tool_call_stream": PASS}


@pytest.mark.slow
def test_server_without_tool_parser_is_not_applicable() -> None:
    with FakeVllm("no_tool_parser") as fake:
        report = run_smoke(fake.url, checks=["tool_call", "tool_call_stream", "tool_call_required"])
    assert statuses(report) == {"tool_call": NA, "tool_call_stream": NA, "tool_call_required": NA}
    assert check(report, "tool_call").evidence["http_status"] == 400
    assert "--tool-call-parser" in check(report, "tool_call_required").evidence["message"]


@pytest.mark.parametrize(
    ("mode", "expect", "status", "text"),
    [
        ("on", None, PASS, "acceptance 70.0%"),
        ("low", None, WARN, "low acceptance"),
        ("no_accept", None, FAIL, "never accepted"),
        ("stuck", None, FAIL, "drafted nothing during the smoke"),
        ("off", None, NA, "does not run speculative decoding"),
        ("off", True, FAIL, "no vllm:spec_decode_* counters"),
        ("on", False, WARN, "although the profile turns it off"),
    ],
)
@pytest.mark.slow
def test_spec_decode_verdicts(mode: str, expect: bool | None, status: str, text: str) -> None:
    with FakeVllm("good", spec_decode=mode) as fake:
        report = run_smoke(fake.url, expect_spec_decode=expect)
    result = check(report, "spec_decode")
    assert result.status == status, result
    assert text in result.summary


@pytest.mark.slow
def test_spec_decode_counts_only_the_smokes_own_drafts() -> None:
    with FakeVllm("good") as fake:
        fake.drafts, fake.draft_tokens, fake.accepted = 1000.0, 2000.0, 0.0  # an earlier collapse
        report = run_smoke(fake.url, checks=["chat", "spec_decode"])
    evidence = check(report, "spec_decode").evidence
    assert evidence["since_start"]["drafts"] > 1000
    assert evidence["during_smoke"]["drafts"] == evidence["since_start"]["drafts"] - 1000
    assert evidence["acceptance_rate"] == pytest.approx(0.7, abs=0.05)


@pytest.mark.slow
def test_metrics_unreadable() -> None:
    with FakeVllm("good", metrics_status=404) as fake:
        unknown = run_smoke(fake.url, checks=["spec_decode"])
        expected = run_smoke(fake.url, checks=["spec_decode"], expect_spec_decode=True)
    assert check(unknown, "spec_decode").status == WARN
    assert check(expected, "spec_decode").status == FAIL
    assert "/metrics answered 404" in check(expected, "spec_decode").summary


@pytest.mark.slow
def test_api_key_is_sent() -> None:
    with FakeVllm("good", api_key="k3y") as fake:
        with pytest.raises(NotReadyError, match="wants an API key"):
            run_smoke(fake.url, checks=["chat"])
        report = run_smoke(fake.url, api_key="k3y", checks=["chat", "tool_call_stream"])
    assert report.ok


@pytest.mark.slow
def test_not_ready_raises_before_any_check() -> None:
    with FakeVllm("good", ready_after=60) as fake, pytest.raises(NotReadyError, match="not ready for the smoke test"):
        run_smoke(fake.url)
    assert fake.requests == []


def test_unknown_check_refused() -> None:
    with pytest.raises(ValueError, match="unknown smoke checks: nope"):
        run_smoke("http://127.0.0.1:9", checks=["nope"])


@pytest.mark.slow
def test_report_json_form() -> None:
    with FakeVllm("no_reasoning_parser") as fake:
        report = run_smoke(fake.url, checks=["chat", "reasoning"])
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is False
    assert data["counts"] == {"pass": 1, "warn": 0, "fail": 1, "n/a": 0}
    assert [c["name"] for c in data["checks"]] == ["chat", "reasoning"]
    assert {"name", "status", "summary", "duration_s", "evidence"} <= set(data["checks"][1])
    text = report.format_text()
    assert "FAIL  reasoning" in text and "content: Twelve times seven" in text
    assert text.splitlines()[-1].startswith("result: FAILED: 1 pass, 0 warn, 1 fail, 0 n/a")


# --------------------------------------------------------------- pure parts, recorded data


def test_stream_folds_to_the_non_streaming_answer() -> None:
    streamed = accumulate_stream(sse_chunks("parsers/tool_stream.200.sse"))
    plain = recorded("parsers/tool.200.json")
    s_msg, p_msg = streamed["choices"][0]["message"], plain["choices"][0]["message"]
    assert s_msg["reasoning"] == p_msg["reasoning"]
    assert [c["function"] for c in s_msg["tool_calls"]] == [c["function"] for c in p_msg["tool_calls"]]
    assert s_msg["tool_calls"][0]["id"].startswith("chatcmpl-tool-")
    assert streamed["choices"][0]["finish_reason"] == "tool_calls"
    assert streamed["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]


def test_stream_with_reasoning_content_deltas() -> None:
    # Older vLLM versions stream `reasoning_content`; both spellings count.
    chunks = [
        {"choices": [{"delta": {"reasoning_content": "thinking "}}]},
        {"choices": [{"delta": {"reasoning_content": "more"}}]},
        {"choices": [{"delta": {"content": "84"}, "finish_reason": "stop"}]},
    ]
    message = accumulate_stream(chunks)["choices"][0]["message"]
    assert message["reasoning"] == "thinking more" and message["content"] == "84"
    assert evaluate_reasoning(message, "stop")[0] == PASS


def test_tool_markup_in_content_fails() -> None:
    # The text the model generated for the recorded call, left unparsed in content.
    message = dict(recorded("parsers/tool.200.json")["choices"][0]["message"])
    message["content"] = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
    message["tool_calls"] = []
    status, summary = evaluate_tool_call(message, "stop")
    assert status == FAIL and "inside content" in summary
    message["content"], message["reasoning"] = None, "I will call it <tool_call>\n<function=get_weather>"
    status, summary = evaluate_tool_call(message, "stop")
    assert status == FAIL and "inside the reasoning" in summary


def test_required_call_cut_by_max_tokens_warns() -> None:
    body = recorded("parsers/tool_required_cut.200.json")
    message = body["choices"][0]["message"]
    status, summary = evaluate_tool_call(message, body["choices"][0]["finish_reason"], required=True)
    assert status == WARN and summary.endswith("city is not Paris, cut by max_tokens")


@pytest.mark.slow
def test_required_call_cut_through_the_client() -> None:
    with FakeVllm("tool_required_cut") as fake:
        report = run_smoke(fake.url, checks=["tool_call_required"])
    assert check(report, "tool_call_required").status == WARN
    assert check(report, "tool_call_required").evidence["tool_calls"] == [{"name": "get_weather", "arguments": "{}"}]


def test_required_without_any_call_fails() -> None:
    status, summary = evaluate_tool_call({"content": "", "tool_calls": []}, "length", required=True)
    assert status == FAIL and 'tool_choice "required" returned no tool_calls' in summary


@pytest.mark.parametrize(
    ("arguments", "status", "text"),
    [
        ('{"city": "Paris"}', PASS, "get_weather"),
        ('{"city": "Par', FAIL, "not JSON"),
        ('["Paris"]', FAIL, "not a JSON object"),
    ],
)
def test_tool_arguments(arguments: str, status: str, text: str) -> None:
    message = {"content": None, "tool_calls": [{"function": {"name": "get_weather", "arguments": arguments}}]}
    result = evaluate_tool_call(message, "tool_calls")
    assert result[0] == status and text in result[1]


def test_wrong_tool_name_fails() -> None:
    message = {"tool_calls": [{"function": {"name": "get_time", "arguments": "{}"}}]}
    assert evaluate_tool_call(message, "tool_calls")[0] == FAIL


def test_recorded_metrics_parse() -> None:
    metrics = parse_metrics((FIXTURES / "parsers" / "metrics.txt").read_text())
    counters = spec_decode_counters(metrics, "tiny")
    assert counters == {"drafts": 31.0, "draft_tokens": 62.0, "accepted_tokens": 0.0, "accepted_per_position": {"0": 0.0, "1": 0.0}}
    assert len([n for n in metrics if n.startswith("vllm:")]) > 50
    assert spec_decode_counters(metrics, "another-model")["drafts"] == 31.0  # unlabelled match falls back to all


def test_metrics_without_spec_decode() -> None:
    text = (FIXTURES / "parsers" / "metrics.txt").read_text()
    metrics = parse_metrics("\n".join(line for line in text.splitlines() if "spec_decode" not in line))
    assert spec_decode_counters(metrics, "tiny") is None


def test_spec_decode_acceptance_per_position() -> None:
    before = {"drafts": 10.0, "draft_tokens": 20.0, "accepted_tokens": 5.0, "accepted_per_position": {"0": 4.0, "1": 1.0}}
    after = {"drafts": 110.0, "draft_tokens": 220.0, "accepted_tokens": 145.0, "accepted_per_position": {"0": 84.0, "1": 61.0}}
    status, summary, evidence = evaluate_spec_decode(before, after, True, True)
    assert status == PASS
    assert evidence["acceptance_rate"] == 0.7
    assert evidence["mean_acceptance_length"] == 2.4
    assert evidence["acceptance_per_position"] == {"0": 0.8, "1": 0.6}
    assert "100 drafts, 200 draft tokens, 140 accepted" in summary


def test_spec_decode_too_few_draft_tokens_to_judge() -> None:
    after = {"drafts": 3.0, "draft_tokens": 6.0, "accepted_tokens": 0.0, "accepted_per_position": {}}
    status, summary, _ = evaluate_spec_decode(None, after, True, True)
    assert status == WARN and "too few draft tokens" in summary


def test_marker_detection(tmp_path: Path, marked_model_dir: Path) -> None:
    assert detect_random_weights(str(marked_model_dir))
    assert not detect_random_weights(str(tmp_path / "missing"))
    assert not detect_random_weights("havenoammo/Qwen3.6-27B-INT8-MTP")
    assert not detect_random_weights(None)
    (tmp_path / RANDOM_WEIGHTS_MARKER).write_text(json.dumps({"random_weights": False}))
    assert not detect_random_weights(str(tmp_path))


def test_marker_name_matches_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("make_tiny_model", REPO / "tools" / "make_tiny_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports no third-party package at module level
    assert module.MANIFEST == RANDOM_WEIGHTS_MARKER


def test_smoke_module_does_not_import_openai_at_top() -> None:
    source = (REPO / "launcher" / "live" / "smoke.py").read_text()
    top_level = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not any("openai" in line or "httpx" in line for line in top_level)


# ------------------------------------------------------------------------------ the command


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from launcher.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.slow
def test_smoke_command_json_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeVllm("good") as fake:
        code, out, err = run_cli(["smoke", "--url", fake.url, "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] is True and data["counts"]["pass"] == len(CHECKS)

    with FakeVllm("no_reasoning_parser") as fake:
        code, out, err = run_cli(["smoke", "--url", fake.url + "/v1", "--json", "--check", "reasoning"], capsys)
    assert code == 5
    assert json.loads(out)["checks"][0]["status"] == FAIL
    assert err.strip().splitlines()[-1] == "launcher: error: smoke failed: reasoning"


@pytest.mark.slow
def test_smoke_command_text(capsys: pytest.CaptureFixture[str], marked_model_dir: Path) -> None:
    with FakeVllm("good", root=str(marked_model_dir), spec_decode="no_accept") as fake:
        code, out, err = run_cli(["smoke", "--url", fake.url], capsys)
    assert code == 0, err
    assert "random weights, marker" in out.splitlines()[0]
    assert "N/A   reasoning" in out
    assert out.strip().splitlines()[-1].startswith("result: ok: 3 pass, 0 warn, 0 fail, 4 n/a")
    assert "launcher: smoke: spec_decode: pass" in err  # progress, as checks finish


def test_smoke_command_unknown_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["smoke", "--url", "http://127.0.0.1:9", "--check", "nope"], capsys)
    assert code == 2 and "unknown check 'nope'" in err
