"""The full-shape starts on 2 x H200 (vLLM 0.25.1, tests/fixtures/gpu-fullshape): the evidence and today's code agree.

These pin what was measured and what the estimator already gets exactly (the KV geometry, the
budget, the commands that ran). The estimator's uncertain terms (weights overhead, activation,
CUDA graphs, context) are compared in `runs/*/calibrate.txt`; summary.json holds every number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from launcher.fit.calibrate import compare, parse_log
from launcher.fit.estimate import GIB, WeightSizes
from launcher.fit.fit_profile import fit_profile
from launcher.hardware.catalog import lookup
from launcher.hardware.inventory import load_inventory
from launcher.live.exec import printable
from launcher.output.validate import render_checked
from launcher.profile.load import resolve
from tests.helpers import FIXTURES, as_it_ran, full_shape_weights, load_tool

REPO = Path(__file__).resolve().parents[2]
EVIDENCE = FIXTURES / "gpu-fullshape"
BENCH = FIXTURES / "gpu-bench"
SUMMARY = json.loads((EVIDENCE / "summary.json").read_text(encoding="utf-8"))
INVENTORY = load_inventory(EVIDENCE / "inventory-h200x2.json")
PROFILES = {"a": "fullshape-24gb-tp2-mtp", "b": "fullshape-48gb-tp1", "c": "fullshape-h200-tp2-mtp",
            "d": "fullshape-h200-tp2-nomtp", "e": "fullshape-48gb-tp1-nopc"}


SUMMARIZE = load_tool("gpu_e2e/fullshape_summary.py")
GEN = load_tool("make_full_shape_model.py")


def _weights() -> WeightSizes:
    """What `launcher fit` reads from the generated directory's index (no directory needed here)."""
    return full_shape_weights()


def _resolved(name: str):
    return resolve(str(EVIDENCE / "profiles" / f"{PROFILES[name]}.yaml"))


def test_summary_is_what_the_logs_say() -> None:
    assert SUMMARIZE.summarize(EVIDENCE, BENCH) == SUMMARY


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_command_that_ran_is_what_the_profile_renders_today(name: str) -> None:
    ran = SUMMARY["starts"][name]["command"]
    assert ran == printable(as_it_ran(render_checked(_resolved(name))))
    assert "--load-format dummy" in ran and "VLLM_LOGGING_LEVEL=DEBUG" in ran and "NCCL_NVLS_ENABLE=0" in ran


@pytest.mark.parametrize("name, card", [("a", "RTX 3090"), ("b", "RTX A6000")])
def test_the_budget_was_the_cards(name: str, card: str) -> None:
    budget = json.loads((EVIDENCE / f"budget-{card.replace(' ', '-')}.json").read_text())
    assert budget["target_bytes"] == math.ceil(0.95 * lookup(card).cuda_total_bytes)
    assert budget["total"] == INVENTORY.gpus[0].memory_free_bytes  # CUDA total = NVML total - reserved
    for rank in SUMMARY["starts"][name]["ranks"].values():
        assert rank["requested"]["requested_gib"] == round(budget["target_bytes"] / GIB, 2)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_vllms_accounting_adds_up(name: str) -> None:
    # available KV = requested - (weights + peak activation + non-torch) - the CUDA-graph estimate
    for rank in SUMMARY["starts"][name]["ranks"].values():
        if "profile" not in rank:
            continue
        p = rank["profile"]
        assert p["non_kv_total_gib"] == pytest.approx(p["weights_gib"] + p["torch_peak_increase_gib"] + p["non_torch_increase_gib"], abs=0.02)
        if "cudagraph_pool" in rank:  # vLLM's combined estimate, logged once the graphs are captured
            graphs = rank["cudagraph_pool"]["estimated_gib"]
        else:  # (a) stopped before: one mode, first capture + (n - 1) x per graph
            e = rank["cudagraph_estimate"]
            graphs = (e["first_capture_mib"] + (e["graphs"] - 1) * e["per_graph_mib"]) / 1024
        if "available_kv" in rank:
            assert rank["available_kv"]["gib"] == pytest.approx(rank["requested"]["requested_gib"] - p["non_kv_total_gib"] - graphs, abs=0.02)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_estimator_geometry_reproduces_every_logged_start(name: str) -> None:
    result = fit_profile(_resolved(name).profile, INVENTORY, weights=_weights())
    log = parse_log((EVIDENCE / "runs" / name / "serve.log").read_text(encoding="utf-8"))
    rows = {r.quantity: r for r in compare(result, log)}
    exact = ["attention block size", "mamba page padding"]
    exact += ["KV for one request (vLLM error)"] if name == "a" else ["KV tokens from actual K (geometry)"]
    for quantity in exact:
        assert rows[quantity].ok, rows[quantity]


@pytest.mark.parametrize("name", ["b", "c", "d"])
def test_graphs_are_judged_against_vllms_own_estimate(name: str) -> None:
    """G is what vLLM subtracts (its estimate); the real capture comes out of the memory above the budget."""
    result = fit_profile(_resolved(name).profile, INVENTORY, weights=_weights())
    rows = {r.quantity: r for r in compare(result, parse_log((EVIDENCE / "runs" / name / "serve.log").read_text(encoding="utf-8")))}
    assert rows["CUDA graphs (vLLM's estimate)"].ok, rows["CUDA graphs (vLLM's estimate)"]
    assert rows["CUDA graphs (capture took)"].ok is None  # shown, no verdict: (d) captured 0.45 GiB less than estimated


def test_the_cards_minimum_command_does_not_start_on_a_24_gb_budget() -> None:
    a = SUMMARY["starts"]["a"]
    assert a["state"]["started"] == 0 and a["state"]["launcher_exit"] == 4
    assert any("4.49 GiB KV cache is needed" in e and "(4.41 GiB)" in e and "is 256000" in e for e in a["errors"])
    # 256,000 = whole 1600-token blocks of the measured 4.41 GiB, less the null block and 3 GDN groups x (1 + k) slots
    result = fit_profile(_resolved("a").profile, INVENTORY, weights=_weights())
    blocks = math.floor(4.41 * GIB / result.bytes_per_block)
    assert (blocks - 1 - result.gdn_groups * result.state_blocks_per_gdn_group) * result.block_size_tokens == 256_000


def test_graph_profiling_transient_exceeds_the_small_cards() -> None:
    # NVML peak per GPU during the start against the CUDA total of the card each start stands in for
    for name, card in (("a", "RTX 3090"), ("b", "RTX A6000")):
        peak_mib = max(SUMMARY["starts"][name]["nvml_timeline"]["peak_used_mib"].values())
        assert peak_mib * 2**20 > lookup(card).cuda_total_bytes


@pytest.mark.parametrize("label, k, start", [("mtp-k2", 2, "c"), ("mtp-off", 0, "d")])
def test_bench_evidence_follows_the_contract(label: str, k: int, start: str) -> None:
    got_label = SUMMARY["bench"][label]
    meta = got_label["meta"]
    assert set(meta) == {"url", "model", "profile", "gpu", "tensor_parallel_size", "mtp_k", "input_len", "output_len",
                         "num_prompts", "vllm_version", "label"}
    assert (meta["tensor_parallel_size"], meta["mtp_k"], meta["profile"]) == (2, k, PROFILES[start])
    assert sorted(got_label["levels"]) == ["c1", "c16", "c4"]
    for level, n in (("c1", 8), ("c4", 16), ("c16", 64)):
        got = got_label["levels"][level]
        assert got["completed"] == got["num_prompts"] == n and got["output_throughput"] > 0
        assert got["metrics_delta"]["generation_tokens_total"] == n * 256
        if k:  # random weights: drafts are proposed, none accepted
            assert got["metrics_delta"]["spec_decode_num_drafts_total"] > 0 and got["draft_acceptance_rate"] == 0.0
        else:  # no drafter: no draft counter moved
            assert not got["metrics_delta"].get("spec_decode_num_drafts_total")


def test_mtp_that_accepts_nothing_costs_throughput_at_every_level() -> None:
    """The pair measures drafting that never pays (random weights): MTP off is faster at C = 1, 4 and 16."""
    on, off = SUMMARY["bench"]["mtp-k2"]["levels"], SUMMARY["bench"]["mtp-off"]["levels"]
    for level in ("c1", "c4", "c16"):
        assert off[level]["output_throughput"] > on[level]["output_throughput"]
        assert off[level]["median_tpot_ms"] < on[level]["median_tpot_ms"]
