"""`check`'s decode-path verdict (issue 24): WARN when MTP would decode on a downgraded path, with the measured cost,
and a fix re-checked like every other (another backend that keeps full graphs for the KV dtype on that GPU, or MTP off)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from launcher.engine.decode_path import measured_cost
from launcher.engine.mtp import break_even as break_even_acceptance
from launcher.hardware.inventory import load_inventory
from launcher.preflight.checks import evaluate
from launcher.preflight.run import combined_fix
from launcher.profile.load import resolve
from tests.helpers import FIXTURES

INVENTORIES = FIXTURES / "inventories"
SUMMARY = json.loads((FIXTURES / "gpu-fullshape" / "summary.json").read_text(encoding="utf-8"))


def _decode(profile: str, inventory: str, sets: list[str]):
    prof = resolve(profile, profiles_dirs=["profiles"], sets=sets, environ={}).profile
    report = evaluate(prof, load_inventory(INVENTORIES / inventory), {}, kv_fit=None)
    return report.result("decode-path")


@pytest.mark.parametrize("version, status, sets", [
    ("0.25.1", "warn", ("speculative.enabled=false",)),  # SM86 FlashInfer: single-token decode only, no fp8 KV alternative
    ("0.32.0", "warn", ("speculative.enabled=false",)),
    ("0.33.0", "pass", ()),  # FA2-native decode on SM86 takes uniform spec batches (flashinfer.py::_use_fa2_native_decode)
])
def test_shipped_3090_profile_per_version(version: str, status: str, sets: tuple[str, ...]) -> None:
    r = _decode("dual-3090", "rtx3090x2-idle.json", [f"vllm.version={version}"])
    assert (r.status, r.sets) == (status, sets)
    assert "decode path: FLASHINFER" in r.message


def test_hopper_warns_with_the_measured_cost_and_offers_fa3() -> None:
    r = _decode("dual-3090", "h100x8.json", ["env.CUDA_VISIBLE_DEVICES=0,1"])
    assert r.status == "warn" and r.sets == ("engine.attention_backend=FLASH_ATTN",)
    assert "25.1 ms" in r.message and "18.7 ms" in r.message and "14.8 ms" in r.message and "0.47" in r.message
    assert "setting cudagraph_mode=PIECEWISE" in r.message
    fixed = _decode("dual-3090", "h100x8.json", ["env.CUDA_VISIBLE_DEVICES=0,1", *r.sets])
    assert fixed.status == "pass" and "FLASH_ATTN, FULL_AND_PIECEWISE" in fixed.message
    off = _decode("dual-3090", "h100x8.json", ["env.CUDA_VISIBLE_DEVICES=0,1", "speculative.enabled=false"])
    assert off.status == "pass"


def test_combined_fix_rechecks_the_backend() -> None:
    fix = combined_fix("dual-3090", ["profiles"], ["env.CUDA_VISIBLE_DEVICES=0,1"], [], load_inventory(INVENTORIES / "h100x8.json"),
                       environ={})
    assert "engine.attention_backend=FLASH_ATTN" in fix.sets


def test_measured_cost_is_data_with_its_source() -> None:
    cost = measured_cost((9, 0))
    assert cost is not None and cost.source.startswith("issue 24, one H100 80GB HBM3, vLLM 0.25.1")
    assert (cost.downgraded_ms, cost.full_ms, cost.off_ms) == (25.1, 18.7, 14.8)
    assert round(break_even_acceptance(25.1 / 14.8, 2) or 0, 2) == 0.47  # issue 24's table
    assert break_even_acceptance(3.4, 2) is None  # a step over k + 1 times as long never pays off
    # the 2 x H200 figures are the committed bench runs' (tests/fixtures/gpu-bench via summary.json)
    data = json.loads(resources.files("launcher.engines").joinpath("measured-decode.json").read_text())
    h200 = next(r for r in data["runs"] if r["gpu"] == "NVIDIA H200")
    logged = {"mtp-k2": 2, "mtp-off": 0}
    for label, k in logged.items():
        path = next(p for p in h200["paths"] if p["num_speculative_tokens"] == k)
        for c, ms in path["itl_p50_ms"].items():
            assert ms == pytest.approx(SUMMARY["bench"][label]["levels"][f"c{c}"]["median_itl_ms"], abs=0.005)


def test_render_and_explain_state_the_decode_path() -> None:
    from click.testing import CliRunner

    from launcher.cli import cli

    out = CliRunner().invoke(cli, ["render", "--profile", "tp4"])
    assert out.exit_code == 0 and "launcher: note: decode path: FLASH_ATTN, FULL_AND_PIECEWISE" in out.output
    out = CliRunner().invoke(cli, ["explain", "--profile", "dual-3090", "--json"])
    rows = json.loads(out.output[out.output.index("["):])
    lines = [r["value"] for r in rows if r["key"] == "decode_path"]
    assert any(v.startswith("decode path: FLASHINFER, FULL_AND_PIECEWISE") and "RTX 3090" in v for v in lines)
    assert any("PIECEWISE (downgraded)" in v and "H100-80GB" in v for v in lines)


def test_fit_json_states_the_decode_path_and_the_kv_prediction_with_its_error() -> None:
    from click.testing import CliRunner

    from launcher.cli import cli

    out = CliRunner().invoke(cli, ["fit", "--profile", "tp4", "--gpu", "H100 80GB HBM3", "--count", "4", "--json"])
    data = json.loads(out.output[out.output.index("{"):])
    assert data["decode_path"]["line"].startswith("decode path: FLASH_ATTN, FULL_AND_PIECEWISE")
    kv = data["kv_cache"]
    assert kv["tokens"] > 0 and 0 < kv["tokens_uncertainty"] < kv["tokens"]
    assert data["terms"]["kv_available"]["uncertainty_gib"] > 0
