"""The real 2 x H200 run of h200x2-tiny (vLLM 0.25.1, tests/fixtures/gpu-e2e): the evidence and today's code agree."""

from __future__ import annotations

import json

from launcher.exec import printable
from launcher.inventory import load_inventory
from launcher.load import resolve
from launcher.preflight import run_preflight
from launcher.smoke import CHECKS, FAIL
from launcher.validate import render_checked
from tests.helpers import FIXTURES

EVIDENCE = FIXTURES / "gpu-e2e"
INVENTORY = load_inventory(EVIDENCE / "inventory-h200x2-live.json")
SMOKE = json.loads((EVIDENCE / "smoke-report.json").read_text(encoding="utf-8"))
CHECK = json.loads((EVIDENCE / "check-live.json").read_text(encoding="utf-8"))


def test_live_capture_is_two_h200_with_nvlink() -> None:
    assert [g.name for g in INVENTORY.gpus] == ["NVIDIA H200", "NVIDIA H200"]
    assert INVENTORY.driver_version == "580.159.04" and INVENTORY.cuda_driver_version == 13000


def test_profile_is_runnable_on_the_captured_machine_as_it_was_live() -> None:
    _, report = run_preflight("h200x2-tiny", inventory_source=INVENTORY, environ={})
    assert report.ok and CHECK["runnable"] is True
    live = {r["id"]: r["status"] for r in CHECK["results"]}
    # Since the run, kv-fit is skipped for a model launcher has no facts for (it printed the 27B's numbers).
    assert live.pop("kv-fit") == "pass" and report.result("kv-fit").status == "skip"
    assert {r.id: r.status for r in report.results if r.id != "kv-fit"} == live


def test_the_command_that_ran_is_what_the_profile_renders_today() -> None:
    rendered = render_checked(resolve("h200x2-tiny"))
    ran = json.loads((EVIDENCE / "rendered.json").read_text(encoding="utf-8"))
    assert list(rendered.argv) == ran["argv"] and dict(rendered.env) == ran["env"]
    assert printable(rendered) == (EVIDENCE / "command.txt").read_text(encoding="utf-8").strip()
    # what vLLM 0.25.1 needs on a machine without NVLink multicast came from the profile
    argv = list(rendered.argv)
    assert argv[argv.index("--compilation-config") + 1] == '{"pass_config":{"fuse_allreduce_rms":false}}'
    assert argv[argv.index("--gdn-prefill-backend") + 1] == "triton"
    assert {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}.items() <= rendered.env.items()


def test_smoke_passed_with_reasoning_separated_and_mtp_drafting() -> None:
    assert SMOKE["ok"] is True and SMOKE["random_weights_source"] == "marker"
    checks = {c["name"]: c for c in SMOKE["checks"]}
    assert list(checks) == list(CHECKS) and not any(c["status"] == FAIL for c in checks.values())
    thinking = checks["reasoning"]["evidence"]
    assert thinking["reasoning"] and not thinking["content"]  # qwen3 parser split it off
    assert checks["chat"]["evidence"]["content"] and not checks["chat"]["evidence"]["reasoning"]  # thinking off
    spec = checks["spec_decode"]["evidence"]
    assert spec["during_smoke"]["drafts"] > 0 and spec["during_smoke"]["draft_tokens"] > 0
