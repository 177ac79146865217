"""The one-H100 evidence of tests/fixtures/gpu-tune: what tune, the warm-up and the decode-path tables claim,
re-derived from the committed files (logs, vLLM's own bench results), so the README's numbers cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from launcher.commands.bench import report_run
from launcher.fit.fit_profile import decode_path_for
from launcher.hardware.inventory import load_inventory
from launcher.live import bench as analysis
from launcher.profile.load import resolve
from tests.helpers import FIXTURES

E = FIXTURES / "gpu-tune"
CAND = "flashinfer-k2-s16-b4096"
STARTS = {"cold": E / "run" / CAND, "warm": E / "warm" / CAND}


def log(d: Path) -> str:
    return (d / "serve.log").read_text(encoding="utf-8", errors="replace")


def ready_s(text: str) -> float:
    return float(re.search(r"^launcher: ready after ([0-9.]+) s", text, re.M).group(1))  # type: ignore[union-attr]


def first_request(text: str) -> tuple[float, float]:
    m = re.search(r"^launcher: warm-up: first request \(1024 tokens\) TTFT ([0-9.]+) s \(then ([0-9.]+) s\)", text, re.M)
    assert m, "no first-request line"
    return float(m.group(1)), float(m.group(2))


def profile_of(d: Path):  # type: ignore[no-untyped-def]
    start = json.loads((d / "start.json").read_text())
    return resolve(str(Path(__file__).resolve().parents[2] / start["profile"]), sets=start["set"], environ={}).profile


def test_the_warm_restart_is_at_most_half_the_cold_start() -> None:
    cold, warm = ready_s(log(STARTS["cold"])), ready_s(log(STARTS["warm"]))
    assert (round(cold, 1), round(warm, 1)) == (366.8, 63.8)
    assert warm <= cold / 2
    assert "compile cache: compiled" in log(STARTS["cold"]) and "compile cache: loaded" in log(STARTS["warm"])


@pytest.mark.parametrize("start", sorted(STARTS))
def test_the_first_request_after_ready_is_within_twice_the_steady_ttft(start: str) -> None:
    d = STARTS[start]
    first, then = first_request(log(d))
    steady_ms = json.loads((d / "bench" / "c1.json").read_text())["median_ttft_ms"]
    assert first * 1000 <= 2 * steady_ms and then * 1000 <= 2 * steady_ms, (first, then, steady_ms)


def test_the_cold_warm_up_absorbed_the_first_use_compile() -> None:
    """The 4,096-token prefill of the cold warm-up took the tens of seconds a first user used to wait."""
    cold = float(re.search(r"warm-up: prefill 4096 tokens ([0-9.]+) s", log(STARTS["cold"])).group(1))  # type: ignore[union-attr]
    warm = float(re.search(r"warm-up: prefill 4096 tokens ([0-9.]+) s", log(STARTS["warm"])).group(1))  # type: ignore[union-attr]
    assert cold > 30 and warm < 5


@pytest.mark.parametrize("start", sorted(STARTS))
def test_result_json_is_what_the_bench_files_say(start: str) -> None:
    d = STARTS[start]
    result = json.loads((d / "result.json").read_text())
    report = report_run(d / "bench", None, None)
    assert analysis.step_ms(report) == pytest.approx(result["step_ms"])
    assert analysis.measured_acceptance(report) == result["acceptance"] == 0.0  # dummy weights accept nothing
    level = report["levels"][0]
    assert level["completed"] == 6 and level["failed"] == 0
    assert result["summary"]["levels"]["1"]["tpot_p50_ms"] == pytest.approx(level["tpot_ms"]["p50"])


@pytest.mark.parametrize("d", [STARTS["cold"], STARTS["warm"], E / "runs" / "m1", E / "runs" / "m3"], ids=["cold", "warm", "m1", "m3"])
def test_the_tables_predicted_the_decode_path_vllm_ran(d: Path) -> None:
    gpu = load_inventory(E / "inventory-h100.json").gpus[0]
    path = decode_path_for(profile_of(d), gpu)
    text = log(d)
    graphs = {m.group(1): int(m.group(2)) for m in re.finditer(r"Estimated (PIECEWISE|FULL) CUDA graph memory: [0-9.]+ MiB first-capture \+ \((\d+)-1\)", text)}
    assert path.downgraded == ("setting cudagraph_mode=PIECEWISE" in text or "setting cudagraph_mo" in text)
    assert graphs.get("PIECEWISE", 0) == path.piecewise_graphs and graphs.get("FULL", 0) == path.full_graphs, (graphs, path.line())


def test_tune_report_and_winner_are_what_ran() -> None:
    report = json.loads((E / "report.json").read_text())
    ranking = {r["id"]: r for r in report["ranking"]}
    assert ranking[CAND]["status"] == "ok" and ranking[CAND]["acceptance_source"] == "planning value"
    assert {r["status"] for i, r in ranking.items() if i != CAND} == {"pending"}  # the budget stopped the rest
    winner = yaml.safe_load((E / "winner.yaml").read_text())
    assert winner["extends"] == "fullshape-1gpu-tp1-card" and winner["engine"]["attention_backend"] == "FLASHINFER"
    assert "budget of 12.5 min reached after 7.2 min" in (E / "tune.err").read_text()
