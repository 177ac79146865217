"""launcher.live.cluster with real sockets on 127.0.0.1 and a real child process standing in for a headless rank.

The child is a Python sleeper (no HTTP: a headless rank serves none); the "head" is a listening socket
this test opens and closes, as node 0's torch.distributed store opens and closes --master-port.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import threading
import time

import pytest

from launcher.errors import EngineStartError, ProfileError
from launcher.live.cluster import Endpoint, check_own_address, check_port_free, reach, run_rank, wait_for_head

SLEEPER = [sys.executable, "-c", "import time\nprint('rank up', flush=True)\ntime.sleep(120)"]


class Head:
    """A listening socket on 127.0.0.1 that accepts and drops connections, like a store nobody writes to."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_formats_ipv6_in_brackets() -> None:
    assert str(Endpoint("10.0.0.1", 29501)) == "10.0.0.1:29501"
    assert str(Endpoint("fd00::1", 29501)) == "[fd00::1]:29501"


def test_reach_tells_an_open_port_from_a_closed_one() -> None:
    head = Head()
    try:
        assert reach(Endpoint("127.0.0.1", head.port)) is None
    finally:
        head.close()
    assert reach(Endpoint("127.0.0.1", closed_port())) == "connection refused: nothing listens there"
    assert reach(Endpoint("no-such-host.invalid", 1)).startswith("cannot resolve no-such-host.invalid")


def test_own_address_must_be_this_machines() -> None:
    check_own_address("127.0.0.2", 1)  # the loopback range is this machine's
    with pytest.raises(ProfileError, match=r"deployment.hosts.1.ip: 192.0.2.11 is not an address of this machine"):
        check_own_address("192.0.2.11", 1)  # TEST-NET-1: never assigned here; bind() fails, nothing is sent


def test_port_free_refuses_a_listening_port() -> None:
    head = Head()
    try:
        with pytest.raises(EngineStartError, match=rf"deployment.master_port: port {head.port} is taken on this machine"):
            check_port_free(head.port, "deployment.master_port")
    finally:
        head.close()
    check_port_free(head.port, "deployment.master_port")  # closed again (TIME_WAIT does not count)


def test_wait_for_head_gives_up_with_one_line_after_the_timeout() -> None:
    lines: list[str] = []
    port = closed_port()
    t0 = time.monotonic()
    with pytest.raises(EngineStartError) as err:
        wait_for_head(Endpoint("127.0.0.1", port), 1, 1.0, interval=0.1, echo=lines.append, report_every=0.3)
    assert time.monotonic() - t0 < 5
    assert str(err.value) == (
        f"node 1 cannot reach its head at 127.0.0.1:{port} after 1 s (connection refused: nothing listens there); "
        "start node 0 (launcher serve --node-rank 0), or check deployment.master_addr/master_port and the firewall "
        "between the nodes"
    )
    assert err.value.exit_code == 4 and "\n" not in str(err.value)
    assert lines and all(line.startswith(f"launcher: node 1: waiting for the head at 127.0.0.1:{port} (") for line in lines)


def test_wait_for_head_returns_once_the_head_opens_its_port() -> None:
    port = closed_port()
    heads: list[Head] = []
    timer = threading.Timer(0.6, lambda: heads.append(Head(port)))
    timer.start()
    try:
        waited = wait_for_head(Endpoint("127.0.0.1", port), 1, 10.0, interval=0.1, echo=lambda _: None)
    finally:
        timer.join()
        for h in heads:
            h.close()
    assert 0.4 <= waited < 5


def group_gone(pgid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # starts a child process
def test_run_rank_stops_the_rank_when_the_head_goes_away() -> None:
    head = Head()
    lines: list[str] = []
    out = io.BytesIO()
    threading.Timer(1.5, head.close).start()  # the head stops while the rank runs
    t0 = time.monotonic()
    rc = run_rank(SLEEPER, None, Endpoint("127.0.0.1", head.port), 1, head_timeout=5, interval=0.2, misses=3,
                  echo=lines.append, output=out, stop_timeout=5)
    elapsed = time.monotonic() - t0
    assert rc == 128 + signal.SIGTERM  # the sleeper dies of the SIGTERM (vLLM exits 0 on it: tests/engine)
    assert 1.5 <= elapsed < 10
    assert b"rank up" in out.getvalue()
    assert any(line.startswith(f"launcher: node 1: the head at 127.0.0.1:{head.port} stopped answering (connection refused")
               for line in lines), lines
    pid = int(next(line for line in lines if "started vLLM (pid " in line).split("(pid ")[1].split(")")[0])
    assert group_gone(pid)
    assert head.accepted >= 2  # it looked before starting and while running


@pytest.mark.slow  # starts a child process
def test_run_rank_returns_the_ranks_own_exit_code() -> None:
    head = Head()
    lines: list[str] = []
    try:
        rc = run_rank([sys.executable, "-c", "import sys; sys.exit(3)"], None, Endpoint("127.0.0.1", head.port), 2,
                      head_timeout=5, interval=0.2, echo=lines.append, output=io.BytesIO())
    finally:
        head.close()
    assert rc == 3 and "launcher: node 2: vLLM exited with code 3" in lines


@pytest.mark.slow  # starts a child process
def test_run_rank_never_starts_vllm_without_its_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "started"
    with pytest.raises(EngineStartError, match="node 1 cannot reach its head"):
        run_rank([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], None, Endpoint("127.0.0.1", closed_port()), 1,
                 head_timeout=0.5, echo=lambda _: None, output=io.BytesIO())
    assert not marker.exists()
