"""The real 2 x H200 run of h200x2-tiny (vLLM 0.25.1, tests/fixtures/gpu-e2e): today's code, fed
the evidence, decides and prints what the live run decided and printed."""

from __future__ import annotations

import json
import re

from launcher.hardware.inventory import dump_inventory, load_inventory, parse_inventory
from launcher.live.exec import printable
from launcher.live.smoke import CHECKS, FAIL, PASS, evaluate_chat, evaluate_reasoning, evaluate_spec_decode, parse_metrics, spec_decode_counters
from launcher.output.validate import render_checked
from launcher.preflight.choice import run_preflight
from launcher.profile.load import resolve
from tests.helpers import FIXTURES, as_it_ran

EVIDENCE = FIXTURES / "gpu-e2e"
INVENTORY = load_inventory(EVIDENCE / "inventory-h200x2-live.json")
SMOKE = json.loads((EVIDENCE / "smoke-report.json").read_text(encoding="utf-8"))
CHECK = json.loads((EVIDENCE / "check-live.json").read_text(encoding="utf-8"))
SMOKE_CHECKS = {c["name"]: c for c in SMOKE["checks"]}


def test_live_capture_loads_and_round_trips() -> None:
    """The live `launcher gpus --json` still loads through today's inventory model, losslessly."""
    assert [g.name for g in INVENTORY.gpus] == ["NVIDIA H200", "NVIDIA H200"]
    again = parse_inventory(json.loads(dump_inventory(INVENTORY)))
    assert again.gpus == INVENTORY.gpus and again.links == INVENTORY.links and again.environment == INVENTORY.environment


def test_preflight_gives_the_verdicts_the_live_serve_printed() -> None:
    """Every check of the serve log (but kv-fit, see below) gets today the status it got live; the messages
    changed where the rules were since taken from vLLM's source (memory-free, driver name the version)."""
    logged = {}
    for line in (EVIDENCE / "serve-log-excerpt.txt").read_text(encoding="utf-8").splitlines():
        line = re.sub(r"^\d+:", "", line)
        if re.match(r"(PASS|WARN|FAIL|SKIP)\s", line):
            status, check_id, _ = line.split(None, 2)
            logged[check_id] = status
    _, report = run_preflight("h200x2-tiny", inventory_source=INVENTORY, environ=dict(INVENTORY.environment))
    today = {r.id: r.status.upper() for r in report.results}
    assert logged.pop("kv-fit") == "PASS" and today.pop("kv-fit") == "SKIP"
    # Since the run, the decode path is checked: FlashInfer with MTP on SM90 runs PIECEWISE graphs (the run's log says so).
    assert "decode-path" not in logged and today.pop("decode-path") == "WARN"
    assert today == logged
    assert "vLLM 0.25.1" in report.result("driver").message  # judged by the rules of the version it ran


def test_profile_is_runnable_on_the_captured_machine_as_it_was_live() -> None:
    _, report = run_preflight("h200x2-tiny", inventory_source=INVENTORY, environ={})
    assert report.ok and CHECK["runnable"] is True
    live = {r["id"]: r["status"] for r in CHECK["results"]}
    # Since the run, kv-fit is skipped for a model launcher has no facts for (it printed the 27B's numbers).
    assert live.pop("kv-fit") == "pass" and report.result("kv-fit").status == "skip"
    assert report.result("decode-path").status == "warn"  # checked since the run (a warning: it runs)
    assert {r.id: r.status for r in report.results if r.id not in ("kv-fit", "decode-path")} == live


def test_the_command_that_ran_is_what_the_profile_renders_today() -> None:
    rendered = as_it_ran(render_checked(resolve("h200x2-tiny")))
    ran = json.loads((EVIDENCE / "rendered.json").read_text(encoding="utf-8"))
    assert list(rendered.argv) == ran["argv"] and dict(rendered.env) == ran["env"]
    assert printable(rendered) == (EVIDENCE / "command.txt").read_text(encoding="utf-8").strip()
    # what vLLM 0.25.1 needs on a machine without NVLink multicast came from the profile
    argv = list(rendered.argv)
    assert argv[argv.index("--compilation-config") + 1] == '{"pass_config":{"fuse_allreduce_rms":false}}'
    assert argv[argv.index("--gdn-prefill-backend") + 1] == "triton"
    assert {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}.items() <= rendered.env.items()


def test_smoke_report_has_todays_checks_and_passed() -> None:
    assert list(SMOKE_CHECKS) == list(CHECKS)
    assert SMOKE["ok"] is True and not any(c["status"] == FAIL for c in SMOKE_CHECKS.values())


def test_todays_judges_give_the_recorded_verdicts_on_the_recorded_answers() -> None:
    chat = SMOKE_CHECKS["chat"]
    e = chat["evidence"]
    assert evaluate_chat(e, e["finish_reason"], e["completion_tokens"], judge=False) == (chat["status"], chat["summary"])
    # Thinking on: the qwen3 parser split the text off into `reasoning`, so today's judge does not fail it
    # (a random model never closes </think>: "still thinking", a warning, reported as n/a for random weights).
    thinking = SMOKE_CHECKS["reasoning"]["evidence"]
    status, summary = evaluate_reasoning(thinking, thinking["finish_reason"])
    assert status != FAIL and "still thinking" in summary, summary


def test_metrics_at_the_end_give_the_recorded_mtp_verdict() -> None:
    """/metrics as captured before SIGTERM, read by today's parser, holds the report's counters;
    judging them again gives the recorded spec_decode line."""
    recorded = SMOKE_CHECKS["spec_decode"]
    after = spec_decode_counters(parse_metrics((EVIDENCE / "metrics-spec-decode.txt").read_text(encoding="utf-8")), SMOKE["model"])
    assert after is not None
    since, during = recorded["evidence"]["since_start"], recorded["evidence"]["during_smoke"]
    assert {k: after[k] for k in since} == since and during["drafts"] > 0
    before = {k: since[k] - during[k] for k in since} | {"accepted_per_position": {p: 0.0 for p in after["accepted_per_position"]}}
    status, summary, evidence = evaluate_spec_decode(before, after, expect=True, judge_acceptance=False)
    assert (status, summary) == (PASS, recorded["summary"]) and recorded["status"] == PASS
    assert evidence == recorded["evidence"]
