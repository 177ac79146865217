"""The estimator against every measured start of the real 27B shape (vLLM 0.25.1 on H200, dummy weights).

Each start stood in for a card by its budget (tests/fixtures/gpu-fullshape/README.md): (a) the card's minimum
command on a 24 GB RTX 3090 budget, (b) TP1 on a 48 GB budget, (c) TP2 on the whole H200, (d) (c) without MTP,
(e) (b) without prefix caching, predicted before it ran (predictions-e-f.txt) and fitted to nothing. The prediction for
each must fall within its own stated error of what vLLM logged, the KV tokens within 3 %, and the outcome
(starts or not) must be right. vLLM's numbers come from the committed logs (summary.json is read from them).
"""

from __future__ import annotations

import json

import pytest

from launcher.fit.estimate import GIB, WeightSizes
from launcher.fit.fit_profile import fit_profile
from launcher.hardware.inventory import load_inventory
from launcher.profile.load import resolve
from tests.helpers import FIXTURES, full_shape_weights

EVIDENCE = FIXTURES / "gpu-fullshape"
SUMMARY = json.loads((EVIDENCE / "summary.json").read_text(encoding="utf-8"))
INVENTORY = load_inventory(EVIDENCE / "inventory-h200x2.json")
PROFILES = {"a": "fullshape-24gb-tp2-mtp", "b": "fullshape-48gb-tp1", "c": "fullshape-h200-tp2-mtp",
            "d": "fullshape-h200-tp2-nomtp", "e": "fullshape-48gb-tp1-nopc"}


def _weights() -> WeightSizes:
    return full_shape_weights()


def _rank(name: str) -> dict:
    return next(iter(SUMMARY["starts"][name]["ranks"].values()))


def _predict(name: str):
    profile = resolve(str(EVIDENCE / "profiles" / f"{PROFILES[name]}.yaml"), environ={}).profile
    return fit_profile(profile, INVENTORY, weights=_weights(), environ={})


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_available_kv_within_its_stated_error(name: str) -> None:
    r = _predict(name)
    measured = _rank(name)["available_kv"]["gib"] * GIB
    assert abs(r.kv_available.bytes - measured) <= r.uncertainty_bytes, (r.kv_available.gib, measured / GIB, r.uncertainty_bytes / GIB)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_term_within_its_stated_error(name: str) -> None:
    r = _predict(name)
    rank = _rank(name)
    prof = rank.get("profile") or rank["summary"]
    weights = prof["weights_gib"] * GIB
    # vLLM's non-KV split: weights, the torch peak of the profile run, non-torch growth, its graph estimate.
    # launcher's P + A cover the torch peak and the non-torch growth (docs/memory-model.md#persistent-buffers-p).
    act_nontorch = (prof["torch_peak_increase_gib"] + prof["non_torch_increase_gib"]) * GIB
    estimates = rank["cudagraph_estimate"] if isinstance(rank["cudagraph_estimate"], list) else [rank["cudagraph_estimate"]]
    graphs = rank.get("cudagraph_pool", {}).get("estimated_gib")
    assert abs(r.weights.bytes - weights) <= r.weights.uncertainty_bytes
    pa = r.persistent.bytes + r.activation.bytes
    pa_sigma = (r.persistent.uncertainty_bytes ** 2 + r.activation.uncertainty_bytes ** 2) ** 0.5
    assert abs(pa - act_nontorch) <= pa_sigma, (pa / GIB, act_nontorch / GIB)
    if graphs is not None:
        assert abs(r.cudagraph.bytes - graphs * GIB) <= r.cudagraph.uncertainty_bytes
    assert estimates  # the log said how vLLM sized its graphs


@pytest.mark.parametrize("name", ["b", "c", "d", "e"])
def test_kv_tokens_within_three_percent(name: str) -> None:
    r = _predict(name)
    logged = SUMMARY["starts"][name]["engine"]["kv_cache_tokens"]["tokens"]
    assert r.kv_cache_tokens == pytest.approx(logged, rel=0.03)


def test_outcomes_are_right() -> None:
    """(a) did not start (vLLM: 4.49 GiB needed, 4.41 available); (b) to (e) started."""
    assert SUMMARY["starts"]["a"]["state"]["started"] == 0
    assert _predict("a").kv_verdict == "does-not-fit"
    for name in ("b", "c", "d", "e"):
        assert SUMMARY["starts"][name]["state"]["started"] == 1
        assert _predict(name).kv_verdict == "fits"


def test_largest_context_of_the_24_gb_start_is_vllms_within_a_block_group() -> None:
    """vLLM said 256,000 tokens fit the measured 4.41 GiB; launcher's nominal figure is within 3 %."""
    assert _predict("a").max_model_len_fit == pytest.approx(256_000, rel=0.03)


def test_measured_before_snapshot_memory_is_inside_the_start_up_range() -> None:
    """What existed before vLLM's snapshot (context + NCCL, no cuBLAS in 0.25.1) lies in launcher's range."""
    for name in ("a", "b", "c"):
        used = _rank(name)["init_snapshot"]["used_gib"] * GIB
        rule = _predict(name).startup.rule
        assert rule.allowance.low_bytes <= used <= rule.allowance.high_bytes, (name, used / GIB, rule.allowance.text)


def test_the_out_of_sample_start_matches_its_written_prediction() -> None:
    """(e) was predicted before it ran (13.32 GiB, 426,175 tokens) and vLLM logged just that; its profile-run
    peak equals (b)'s, so the TP1 forward term is not a prefix-caching cost."""
    prediction = (EVIDENCE / "predictions-e-f.txt").read_text(encoding="utf-8")
    assert "available KV 13.32 ± 0.36 GiB; 426,175 tokens" in prediction
    # The model has changed since (issue 25: the V1 runner's mechanism, constants fitted on every start); what it
    # predicts for (e) now, with (e) left out of the fit, is in docs/memory-model.md's leave-one-out table.
    r = _predict("e")
    assert abs(r.kv_available.bytes - 13.33 * GIB) <= r.uncertainty_bytes
    assert SUMMARY["starts"]["e"]["engine"]["kv_cache_tokens"]["tokens"] == 426_175
    assert _rank("e")["profile"]["torch_peak_increase_gib"] == _rank("b")["profile"]["torch_peak_increase_gib"]
