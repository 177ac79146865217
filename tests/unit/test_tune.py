"""`launcher tune`'s pure parts (live/tune.py) and what MTP is worth (fit/mtp.py).

The break-even acceptances are checked against issue 24's one-H100 measurements (vLLM 0.25.1, full
27B shape, dummy weights, ITL p50 at C=1): FlashInfer + MTP k=2 25.1 ms, FA3 + MTP k=2 18.7 ms, MTP off
14.8 ms gave 0.47 and 0.21; 2 x H200 TP2 FlashInfer (33.6 vs 10.0 ms) gave never."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from launcher.engine.mtp import MtpWorth, acceptance_from_mean_accepted, break_even, tokens_per_step
from launcher.errors import ProfileError
from launcher.live import bench as analysis
from launcher.live import tune
from tests.helpers import FIXTURES


def test_tokens_per_step() -> None:
    assert tokens_per_step(0.0, 2) == 1.0
    assert tokens_per_step(1.0, 3) == 4.0
    assert tokens_per_step(0.5, 2) == pytest.approx(1.75)
    assert tokens_per_step(0.7, 0) == 1.0
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError):
            tokens_per_step(bad, 2)


@pytest.mark.parametrize(("mtp_ms", "off_ms", "k", "want"), [(25.1, 14.8, 2, 0.47), (18.7, 14.8, 2, 0.21), (33.6, 10.0, 2, None)])
def test_break_even_matches_the_measured_h100_and_h200_paths(mtp_ms: float, off_ms: float, k: int, want: float | None) -> None:
    got = break_even(mtp_ms / off_ms, k)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, abs=0.01)  # the issue computed from unrounded ITLs
        assert tokens_per_step(got, k) == pytest.approx(mtp_ms / off_ms, rel=1e-6)


def test_break_even_edges() -> None:
    assert break_even(0.9, 2) == 0.0  # a cheaper step always pays
    assert break_even(3.0, 2) == pytest.approx(1.0, abs=1e-6)  # exactly k + 1: only at full acceptance
    assert break_even(3.01, 2) is None
    with pytest.raises(ValueError):
        break_even(1.5, 0)


def test_acceptance_from_the_mean_accepted_drafts() -> None:
    for a in (0.0, 0.3, 0.8):
        for k in (1, 2, 3):
            assert acceptance_from_mean_accepted(tokens_per_step(a, k) - 1.0, k) == pytest.approx(a, abs=1e-6)
    assert acceptance_from_mean_accepted(5.0, 3) == 1.0


def test_mtp_worth_line_and_json() -> None:
    w = MtpWorth(2, 25.1, 14.8, 0.5, "planning value")
    assert w.pays_off and w.expected_tpot_ms == pytest.approx(25.1 / 1.75)  # 0.5 is above its break-even 0.47
    assert "pays off on this path above a = 0.47" in w.line() and "(planning value)" in w.line()
    assert w.to_json()["break_even_acceptance"] == pytest.approx(0.4726, abs=1e-3)
    never = MtpWorth(2, 33.6, 10.0, 0.9, "--acceptance")
    assert "never" in never.line() and never.to_json()["break_even_acceptance"] is None


def test_bench_replay_of_the_h200_evidence_says_mtp_never_pays() -> None:
    """The committed 2 x H200 runs: MTP k=2 on FlashInfer's PIECEWISE path against MTP off."""
    from launcher.commands.bench import report_run

    k2 = report_run(FIXTURES / "gpu-bench" / "mtp-k2", None, None)
    off = report_run(FIXTURES / "gpu-bench" / "mtp-off", None, None)
    assert analysis.measured_acceptance(k2) == 0.0  # dummy weights accept nothing
    worth = analysis.mtp_worth(k2, off)
    assert worth.break_even is None and worth.acceptance_source.startswith("planning value")
    assert worth.ratio == pytest.approx(3.37, abs=0.02)
    [line] = analysis.mtp_worth_lines([k2, off], acceptance=0.8)
    assert "never" in line and "a = 0.80 (--acceptance)" in line


# ------------------------------------------------------------------------------ tune


def test_parse_list_keeps_the_order_and_refuses_junk() -> None:
    assert tune.parse_list("2,off,1,2", "--mtp", allow_off=True) == [2, 0, 1]
    for bad in ("", "1,,2", "-1", "1.5", "off"):
        with pytest.raises(ProfileError):
            tune.parse_list(bad, "--max-num-seqs")


def test_candidate_sets_and_ids() -> None:
    c = tune.Candidate("FLASH_ATTN", 2, 16, 4096)
    assert c.id == "flash_attn-k2-s16-b4096"
    assert c.sets == ("engine.attention_backend=FLASH_ATTN", "speculative.enabled=true", "speculative.num_speculative_tokens=2",
                      "engine.max_num_seqs=16", "engine.max_num_batched_tokens=4096")
    off = tune.Candidate(None, 0, None, None)
    assert off.id == "auto-nomtp-sd-bd" and off.sets == ("speculative.enabled=false",)
    assert tune.Candidate.from_json(c.to_json()) == c
    assert len(tune.grid(["A", "B"], [0, 2], [8, 16], [None])) == 8


def test_objective_validation() -> None:
    assert tune.Objective("latency").levels == (1,)
    assert tune.Objective("throughput", at=8).levels == (1, 8)
    with pytest.raises(ProfileError):
        tune.Objective("fastest")
    with pytest.raises(ProfileError):
        tune.Objective("latency", max_tpot_ms=20)
    with pytest.raises(ProfileError):
        tune.Objective("throughput", max_ttft_ms=float("nan"))


def _result(mtp_k: int, tpot: float, tps: float, ttft: float = 100.0, acceptance: float | None = 0.0, at: int = 8) -> dict:
    level = {"output_tokens_per_s": tps, "tpot_p50_ms": tpot, "itl_p50_ms": tpot, "ttft_p50_ms": ttft, "failed": 0, "completed": 8}
    return {"status": "ok", "summary": {"mtp_k": mtp_k, "levels": {"1": level, str(at): level}}, "acceptance": acceptance}


def test_ranking_latency_uses_expected_tpot_at_the_stand_in_acceptance() -> None:
    obj = tune.Objective("latency")
    off = tune.score(tune.Candidate("FLASH_ATTN", 0, 16, None), _result(0, 14.8, 60), obj, None)
    fa = tune.score(tune.Candidate("FLASH_ATTN", 2, 16, None), _result(2, 18.7, 50), obj, None)
    fi = tune.score(tune.Candidate("FLASHINFER", 2, 16, None), _result(2, 25.1, 35), obj, None)
    # At the planning value a = 0.5 a step yields 1.75 tokens: FA3 k=2 10.7 ms < FlashInfer k=2 14.3 ms < off 14.8 ms
    assert fa.value == pytest.approx(18.7 / 1.75) and fi.value == pytest.approx(25.1 / 1.75) and off.value == 14.8
    assert fa.acceptance_source == "planning value" and off.acceptance is None
    ranked = tune.rank([off, fi, fa], obj)
    assert [s.candidate.backend for s in ranked] == ["FLASH_ATTN", "FLASHINFER", "FLASH_ATTN"]
    at0 = tune.rank([tune.score(s.candidate, _result(s.candidate.mtp_k, *v), obj, 0.0)
                     for s, v in ((off, (14.8, 60)), (fa, (18.7, 50)), (fi, (25.1, 35)))], obj)
    assert at0[0].candidate.mtp_k == 0  # at acceptance 0 MTP never wins


def test_ranking_measured_acceptance_is_not_applied_twice() -> None:
    obj = tune.Objective("latency")
    s = tune.score(tune.Candidate("FLASH_ATTN", 2, 16, None), _result(2, 12.0, 80, acceptance=0.7), obj, 0.2)
    assert s.value == 12.0 and s.acceptance == 0.7 and s.acceptance_source == "measured"


def test_ranking_throughput_with_limits() -> None:
    obj = tune.Objective("throughput", at=8, max_tpot_ms=20.0, max_ttft_ms=500.0)
    fast_slow_tokens = tune.score(tune.Candidate("A", 0, 64, None), _result(0, 25.0, 400), obj, None)
    ok = tune.score(tune.Candidate("B", 0, 16, None), _result(0, 15.0, 300), obj, None)
    late = tune.score(tune.Candidate("C", 0, 16, None), _result(0, 15.0, 350, ttft=900), obj, None)
    assert not fast_slow_tokens.feasible and "TPOT 25.00 ms > 20" in fast_slow_tokens.detail
    assert not late.feasible and "TTFT 900 ms > 500" in late.detail
    assert tune.rank([fast_slow_tokens, late, ok], obj)[0] is ok


def test_failed_pending_and_excluded_rank_last() -> None:
    obj = tune.Objective("latency")
    ok = tune.score(tune.Candidate("A", 0, 1, None), _result(0, 20, 40), obj, None)
    failed = tune.score(tune.Candidate("B", 0, 1, None), {"status": "failed", "stage": "engine start", "error": "OOM"}, obj, None)
    pending = tune.score(tune.Candidate("C", 0, 1, None), None, obj, None)
    excluded = tune.score(tune.Candidate("D", 0, 1, None, excluded="kv-fit: does not fit"), None, obj, None)
    assert [s.status for s in tune.rank([excluded, pending, failed, ok], obj)] == ["ok", "failed", "pending", "excluded"]
    assert "failed at engine start: OOM" in failed.detail


def test_run_directory_resume_rules(tmp_path: Path) -> None:
    c = tune.Candidate("A", 2, 16, None)
    assert tune.read_plan(tmp_path) is None and tune.read_result(tmp_path, c) is None
    (tmp_path / c.id).mkdir()
    (tmp_path / c.id / tune.RESULT).write_text('{"status": "ok"')  # half written: run it again
    assert tune.read_result(tmp_path, c) is None
    tune.write_json(tmp_path / c.id / tune.RESULT, {"status": "failed", "stage": "engine start"})
    assert tune.read_result(tmp_path, c) == {"status": "failed", "stage": "engine start"}
    (tmp_path / tune.PLAN).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ProfileError, match="not a tune plan"):
        tune.read_plan(tmp_path)
    plan = {"profile": "p.yaml", "sets": [], "objective": {"kind": "latency"}}
    assert tune.same_plan(plan, dict(plan)) is None
    assert "objective differs" in (tune.same_plan(plan, {**plan, "objective": {"kind": "throughput"}}) or "")


def test_winner_profile_extends_the_tuned_one_and_loads(tmp_path: Path) -> None:
    from launcher.profile.load import resolve

    best = tune.score(tune.Candidate("FLASH_ATTN", 0, 8, 2048), _result(0, 14.8, 60), tune.Objective("latency"), None)
    text = tune.winner_yaml("dual-3090", best, tune.Objective("latency"), "NVIDIA GeForce RTX 3090", "2026-12-06 12:00 UTC")
    data = yaml.safe_load(text)
    assert data["extends"] == "dual-3090" and data["speculative"] == {"enabled": False}
    assert data["engine"] == {"attention_backend": "FLASH_ATTN", "max_num_seqs": 8, "max_num_batched_tokens": 2048}
    assert "TPOT p50 14.80 ms" in data["description"]
    path = tmp_path / "winner.yaml"
    path.write_text(text)
    p = resolve(str(path), environ={}).profile
    assert not p.mtp_enabled and p.engine.max_num_seqs == 8 and p.engine.attention_backend == "FLASH_ATTN"
