"""The memory estimate against every measured start, each predicted with constants fitted on the others
(tools/memory_loo.py; docs/memory-model.md#leave-one-out)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from launcher.fit.calibrate import parse_log
from launcher.fit.estimate import GIB, V1_CALIBRATION, estimate, fit_calibration
from tests.helpers import FIXTURES, REPO, load_tool

loo = load_tool("memory_loo.py")


@pytest.fixture(scope="module")
def starts() -> list:
    return loo.load_starts()


@pytest.fixture(scope="module")
def rows(starts: list) -> list:
    return loo.leave_one_out(starts)


def test_every_committed_start_is_loaded(starts: list) -> None:
    names = {s.name for s in starts}
    runs = {p.name for p in (FIXTURES / "gpu-fullshape" / "runs").iterdir() if (p / "serve.log").is_file()}
    assert runs <= names, runs - names
    assert {"h100-k3", "h100-nomtp"} <= names
    h100 = next(s for s in starts if s.name == "h100-k3")
    assert not h100.committed_log and h100.source == "issue 25, one H100 80GB HBM3, vLLM 0.25.1"


ALL = ["a", "b", "c", "d", "e", "h100-k3", "h100-nomtp", "gpu-tune/m1", "gpu-tune/m3", "gpu-tune/run/flashinfer-k2-s16-b4096",
       "gpu-tune/warm/flashinfer-k2-s16-b4096"]
# The one start whose KV tokens the model misses by more than 3 % when it is held out: the warm restart of
# tests/fixtures/gpu-tune (its profile run peaked 1.9 GiB below the cold start of the same command; no other warm
# start exists to fit a cache-state term on). docs/memory-model.md#leave-one-out says so; issue 25 stays open for it.
KNOWN_MISSES = {"gpu-tune/warm/flashinfer-k2-s16-b4096"}


def test_every_start_of_this_session_is_loaded(starts: list) -> None:
    assert set(ALL) <= {s.name for s in starts}


@pytest.mark.parametrize("name", ALL)
def test_held_out_start_within_its_stated_error(rows: list, name: str) -> None:
    row = next(r for r in rows if r.name == name)
    assert row.within, (row.predicted_gib, row.stated_gib, row.logged_gib)


@pytest.mark.parametrize("name", [n for n in ALL if n != "a" and n not in KNOWN_MISSES])
def test_held_out_kv_tokens_within_three_percent(rows: list, name: str) -> None:
    row = next(r for r in rows if r.name == name)
    assert abs(row.tokens_error_pct) <= 3.0, row.tokens_error_pct


def test_the_known_misses_are_exactly_the_documented_ones(rows: list) -> None:
    """A start that newly misses 3 %, or a known miss the model comes to predict, changes this list and the docs."""
    misses = {r.name for r in rows if r.tokens_error_pct is not None and abs(r.tokens_error_pct) > 3.0}
    assert misses == KNOWN_MISSES


def test_the_committed_table_is_the_tools_output() -> None:
    doc = (REPO / "docs" / "memory-model.md").read_text(encoding="utf-8")
    table = doc.split(loo.BEGIN, 1)[1].split(loo.END, 1)[0].strip()
    assert table == loo.render().strip()
    assert loo.main(["--check"]) == 0


def test_shipped_constants_are_the_fit_on_every_start(starts: list) -> None:
    fitted = fit_calibration([s.observed for s in starts])
    assert fitted == V1_CALIBRATION


def test_a_start_outside_its_stated_error_fails_the_check(starts: list) -> None:
    """The within-error verdict can fail: a start whose vLLM logged 2.5 GiB more KV than it did is outside."""
    s = next(x for x in starts if x.name == "h100-k3")
    moved = dataclasses.replace(s, available_kv_gib=s.available_kv_gib + 2.5)
    row = next(r for r in loo.leave_one_out([moved if x is s else x for x in starts]) if r.name == "h100-k3")
    assert not row.within


def test_the_graph_term_reproduces_vllms_logged_estimate(starts: list) -> None:
    """G from the decode path's graph counts and the fitted per-mode constants equals vLLM's own estimate ("Estimated
    CUDA graph memory: X GiB total") within the term's stated error."""
    logged = {"a": 0.76, "b": 1.11, "c": 0.76, "d": 2.24, "e": 1.11, "h100-k3": 0.19, "h100-nomtp": 0.60, "gpu-tune/m1": 0.12,
              "gpu-tune/m3": 1.06, "gpu-tune/run/flashinfer-k2-s16-b4096": 0.25, "gpu-tune/warm/flashinfer-k2-s16-b4096": 0.25}
    assert set(logged) == {s.name for s in starts}
    # Known: FLASH_ATTN's FULL first capture grows with the largest capture size (m1: 6 MiB at 8; m3: 258 MiB at 256),
    # which the term does not model yet; on m3 it is 0.13 GiB short (docs/memory-model.md#leave-one-out).
    short = {"gpu-tune/m3": 0.13}
    for s in starts:
        r = estimate(s.observed.inputs)
        if s.name in short:
            assert logged[s.name] - r.cudagraph.bytes / GIB == pytest.approx(short[s.name], abs=0.01), s.name
            continue
        assert r.cudagraph.bytes / GIB == pytest.approx(logged[s.name], abs=max(0.04, r.cudagraph.uncertainty_bytes / GIB)), s.name


def test_v2_versions_keep_the_terms_of_before(starts: list) -> None:
    """No start of vLLM 0.33 (V2 runner) was measured: its terms are the constants of before, and say so."""
    s = next(x for x in starts if x.name == "b")
    r = estimate(dataclasses.replace(s.observed.inputs, vllm_version="0.33.0"))
    assert "V2 runner" in r.cudagraph.source and "V2 runner" in r.activation.source
    assert r.cudagraph.bytes == int(1.11 * GIB)


def test_a_tune_run_directory_is_a_start(tmp_path: Path) -> None:
    """`launcher tune`'s DIR/<candidate>/serve.log + result.json with an inventory is picked up, profile and --set
    from its argv."""
    root = tmp_path / "gpu-tune"
    cand = root / "run" / "flashinfer-k2-s16-b4096"
    cand.mkdir(parents=True)
    (cand / "serve.log").write_text((FIXTURES / "gpu-fullshape" / "runs" / "b" / "serve.log").read_text(encoding="utf-8"))
    argv = ["-m", "launcher", "serve", "--profile", "fullshape-48gb-tp1", "--wait", "--set", "engine.max_num_seqs=256"]
    (cand / "result.json").write_text(json.dumps({"argv": argv, "status": "ok"}))
    (root / "inventory-h200x2.json").write_text((FIXTURES / "gpu-fullshape" / "inventory-h200x2.json").read_text())
    found = loo.load_starts((root,))
    assert [s.name for s in found] == ["gpu-tune/run/flashinfer-k2-s16-b4096"]
    assert found[0].observed.torch_peak_gib == 2.47 and found[0].kv_tokens == 418_827


def test_the_log_parser_reads_the_profile_split_and_graph_modes() -> None:
    log = parse_log((FIXTURES / "gpu-fullshape" / "runs" / "d" / "serve.log").read_text(encoding="utf-8"))
    assert log.torch_peak_gib is not None and log.torch_peak_gib.value == 3.57
    assert [(g.mode, g.first_capture_mib, g.graphs, g.per_graph_mib, g.largest) for g in log.graph_samples] == [
        ("PIECEWISE", 176.0, 51, 12.0, 512), ("FULL", 396.0, 51, 26.0, 512)]
