"""One behaviour model per vLLM version: checks and fit ask it and agree; fixes combine and are re-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.engine import behaviour
from launcher.fit.fit_profile import fit_profile, kv_fit_check
from launcher.hardware.inventory import load_inventory
from launcher.preflight.checks import evaluate
from launcher.preflight.choice import run_preflight
from launcher.preflight.run import combined_fix
from launcher.profile.load import resolve

GIB = 1 << 30
INVENTORIES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"
FIXTURES = sorted(p.stem for p in INVENTORIES.glob("*.json"))
STATUS_OF_VERDICT = {"fits": "pass", "marginal": "warn", "does-not-fit": "fail"}  # fit verdict -> check status


def _profile_for(inv_name: str) -> str:
    count = load_inventory(INVENTORIES / f"{inv_name}.json").count
    return {1: "dual-3090", 2: "dual-3090", 4: "tp4", 8: "tp8"}.get(count, "dual-3090")


@pytest.mark.parametrize("inv_name", FIXTURES)
def test_check_and_fit_agree_on_start_up_and_attention(inv_name: str) -> None:
    inv = load_inventory(INVENTORIES / f"{inv_name}.json")
    resolved = resolve(_profile_for(inv_name), environ={})
    report = evaluate(resolved.profile, inv, inv.environment)
    mem = report.result("memory-free")
    assert mem is not None
    if mem.status == "skip" or report.result("gpu-count").status == "fail":
        return
    gpus = [inv.gpu(d.gpu_index) for d in report.devices]
    result = fit_profile(resolved.profile, inv, environ=inv.environment)
    # the start-up verdict: the worst GPU of check's memory-free equals fit's (fit keeps the tightest GPU's)
    # (fit's own verdict adds the load peak on top: weights that cannot even load)
    rule = result.startup.rule
    worst = "fail" if rule.status == "fail" else ("warn" if rule.status == "warn" or rule.runtime_warn else "pass")
    assert worst == mem.status, (mem.message, rule.to_json())
    assert STATUS_OF_VERDICT[result.startup.verdict] in (mem.status, "fail", "warn")
    # the attention backend: the one fit budgets for is the one check reports
    att = report.result("attention-kv")
    cc = gpus[0].compute_capability
    route = behaviour.attention_route(cc, resolved.profile.engine.attention_backend, resolved.profile.kv_cache.dtype)
    assert (result.startup.flashinfer_workspace_bytes > 0) == (route.backend == "FLASHINFER")
    assert route.reason.split(" [")[0] in att.message or not route.ok


@pytest.mark.parametrize("reserved", [True, False])
def test_idle_3090_pair_passes_memory_free_with_and_without_reserved(reserved: bool, tmp_path: Path) -> None:
    """Two idle 24 GB RTX 3090s run the card's command (vLLM 0.33.0 starts there); only the KV fit is marginal."""
    data = json.loads((INVENTORIES / "rtx3090x2-idle.json").read_text())
    for g in data["gpus"]:
        g["memory_total_bytes"] = 24 * GIB
        g["memory_free_bytes"] = int(23.68 * GIB)
        if not reserved:
            g.pop("memory_reserved_bytes", None)
        else:
            g["memory_reserved_bytes"] = 24 * GIB - int(23.69 * GIB)
    path = tmp_path / "idle.json"
    path.write_text(json.dumps(data))
    inv = load_inventory(path)
    resolved = resolve("dual-3090", environ={})
    report = evaluate(resolved.profile, inv, {}, kv_fit=kv_fit_check)
    assert report.result("memory-free").status == "pass", report.result("memory-free").message
    # the KV fit is another matter: measured on the full shape, 262144 tokens do not fit a 24 GB budget
    assert report.result("kv-fit").status == "fail" and report.result("kv-fit").sets
    # never the raw NVML total: requested is ceil(0.95 x the CUDA total)
    mem = report.result("memory-free")
    assert "CUDA total 24.00" not in mem.message


@pytest.mark.parametrize("inv_name", FIXTURES)
def test_every_fixture_gets_one_combined_fix_that_the_checks_confirm(inv_name: str) -> None:
    inv = load_inventory(INVENTORIES / f"{inv_name}.json")
    name = _profile_for(inv_name)
    _, report = run_preflight(name, (), (), (), inv, environ={})
    fix = combined_fix(name, (), (), (), inv, environ={})
    if report.status == "pass":
        assert fix.passes and not fix.sets
        return
    line = fix.line()
    assert line.startswith("Fix all at once (re-checked): --set ") or line.startswith("No set of overrides") or (fix.passes and not fix.sets)
    if fix.passes:
        # re-check independently: with the sets, only hardware facts no profile value changes remain
        _, again = run_preflight(name, (), fix.sets, (), inv, environ={})
        assert {r.id for r in again.results if r.status in ("warn", "fail")} == set(fix.remaining)
        assert all(r.status != "fail" for r in again.results)
    else:
        assert fix.why


def test_desktop_fixes_combine_memory_and_kv() -> None:
    """Lowering gpu_memory_utilization for memory-free shrinks the KV cache: the combined fix covers both."""
    inv = load_inventory(INVENTORIES / "rtx3090x2-desktop.json")
    fix = combined_fix("dual-3090", (), (), (), inv, environ={})
    assert fix.passes and "engine.gpu_memory_utilization=0.92" in fix.sets
    assert any(s.startswith("engine.max_num_seqs=") or s.startswith("engine.max_model_len=") for s in fix.sets)
    assert fix.remaining == ("p2p",)


def test_a_fix_that_cannot_help_is_not_offered() -> None:
    inv = load_inventory(INVENTORIES / "t4x2.json")
    fix = combined_fix("dual-3090", (), (), (), inv, environ={})
    assert not fix.passes and "compute-capability" in fix.why
    assert "--set" not in fix.line().split(":")[0]


# ------------------------------------------------------------------ per version, from each version's source


def test_versions_differ_where_their_source_differs() -> None:
    # FLASH_ATTN takes fp8 on 10.x only from 0.32 on (FA4); 0.25.1: FA3 on 9.0 only
    assert behaviour.attention_route((10, 0), "FLASH_ATTN", "fp8_e4m3", "0.33.0").ok
    assert not behaviour.attention_route((10, 0), "FLASH_ATTN", "fp8_e4m3", "0.25.1").ok
    # cuBLAS handles exist before the snapshot in 0.33.0 only
    assert behaviour.allowance(1, None, "0.33.0").low_bytes > behaviour.allowance(1, None, "0.25.1").low_bytes
    # the FlashInfer workspace scales with the batch from 0.32 on
    assert behaviour.flashinfer_workspace_bytes(8192, 24, 256, "0.33.0") == 8192 * 24 * 256 * 16
    assert behaviour.flashinfer_workspace_bytes(8192, 24, 256, "0.25.1") == 394 * (1 << 20)
    # FlashInfer GDN prefill on SM120 from 0.32 on
    assert behaviour.flashinfer_gdn_prefill((12, 0), "0.33.0") and not behaviour.flashinfer_gdn_prefill((12, 0), "0.25.1")
    assert behaviour.flashinfer_gdn_prefill((9, 0), "0.25.1")


def test_an_unknown_version_uses_the_nearest_and_says_so() -> None:
    b = behaviour.behaviour("0.34.1")
    assert b.rules_of == "0.33.0" and "nearest known version" in b.fallback_note
    assert behaviour.behaviour("0.26.0").rules_of == "0.25.1"
    assert behaviour.behaviour("0.20.0").rules_of == "0.25.1"
    route = behaviour.attention_route((8, 6), None, "fp8_e4m3", "0.34.1")
    assert route.backend == "FLASHINFER" and "judged by the rules of vLLM 0.33.0" in route.reason


def test_h200x2_tiny_is_judged_by_0251_rules() -> None:
    inv = load_inventory(INVENTORIES / "h200x2.json")
    resolved = resolve("h200x2-tiny", environ={})
    report = evaluate(resolved.profile, inv, inv.environment)
    assert "vLLM 0.25.1" in report.result("driver").message
    assert "0.33" not in report.result("driver").message


def test_attention_agrees_between_check_and_fit_on_the_disputed_cases() -> None:
    """CC 9.0 + fp8_e5m2 and CC 7.5 + fp8 once got opposite answers from two models."""
    from launcher.fit.estimate import FitInput, uses_flashinfer_attention

    assert behaviour.attention_route((9, 0), None, "fp8_e5m2").backend == "FLASHINFER"
    assert uses_flashinfer_attention(FitInput(total_memory_bytes=80 * GIB, compute_capability=(9, 0), kv_cache_dtype="fp8_e5m2"))
    assert behaviour.attention_route((7, 5), None, "fp8_e4m3").backend is None
    assert not uses_flashinfer_attention(FitInput(total_memory_bytes=15 * GIB, compute_capability=(7, 5), kv_cache_dtype="fp8_e4m3"))


@pytest.mark.parametrize(
    "ccs, status",
    [([(8, 6), (8, 9)], "warn"), ([(8, 0), (8, 6)], "warn"), ([(12, 0), (8, 9)], "fail"), ([(9, 0), (8, 6)], "warn"), ([(8, 6)], "pass")],
)
def test_tensor_parallel_mixing(ccs: list[tuple[int, int]], status: str) -> None:
    assert behaviour.tp_mix(ccs)[0] == status
