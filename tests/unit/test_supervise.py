"""serve_supervised with a real child process: tests/fakes/vllm_server.py, an HTTP server on 127.0.0.1
that behaves like vLLM where the supervisor can see it (readiness, output, signals, exit codes)."""

from __future__ import annotations

import io
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.errors import EngineStartError, NotReadyError, ProfileError
from launcher.live.supervise import _group_members, exit_code, local_url, serve_supervised
from tests.fakes import VLLM_SERVER as FAKE
from tests.helpers import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, str(FAKE), "--port", str(port), *extra]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


class Lines:
    """Collect echo lines in-process."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)

    def child_pid(self) -> int:
        for line in self.lines:
            if "started vLLM (pid " in line:
                return int(line.split("(pid ")[1].split(")")[0])
        raise AssertionError(self.text())


# --------------------------------------------------------------------------- in-process


def test_local_url() -> None:
    assert local_url(None, None) == "http://127.0.0.1:8000"
    assert local_url("0.0.0.0", 9000) == "http://127.0.0.1:9000"
    assert local_url("127.0.0.1", 8001) == "http://127.0.0.1:8001"
    assert local_url("::1", 8000) == "http://[::1]:8000"


def test_exit_code_of_signalled_child() -> None:
    assert exit_code(0) == 0 and exit_code(3) == 3
    assert exit_code(-signal.SIGTERM) == 143 and exit_code(-signal.SIGKILL) == 137


@pytest.mark.slow
def test_child_dies_during_start_is_engine_start_error() -> None:
    echo, out = Lines(), io.BytesIO()
    port = free_port()
    with pytest.raises(EngineStartError) as err:
        serve_supervised(fake_argv(port, "--die-after", "0.3", "--exit-code", "3"), None, local_url(None, port), 30,
                         smoke=False, echo=echo, output=out, poll_interval=0.05)
    message = str(err.value)
    assert err.value.exit_code == 4
    assert "vLLM exited with code 3 during start" in message
    assert message.endswith("RuntimeError: Unsupported CPU attention configuration: head_dim=16")
    assert "\n" not in message
    # The tail is shown to the operator, and the child's output passed through unchanged.
    assert "  | fake-vllm: RuntimeError: Unsupported CPU attention configuration: head_dim=16" in echo.lines
    assert b"fake-vllm: pid " in out.getvalue()


@pytest.mark.slow
def test_program_missing_is_engine_start_error() -> None:
    with pytest.raises(EngineStartError, match="cannot start /nonexistent/vllm: No such file or directory"):
        serve_supervised(["/nonexistent/vllm", "serve"], None, "http://127.0.0.1:9", 5, smoke=False, echo=Lines())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


@pytest.mark.slow
def test_not_ready_in_time_stops_child_exit_5() -> None:
    echo, port = Lines(), free_port()
    with pytest.raises(NotReadyError) as err:
        serve_supervised(fake_argv(port, "--ready-after", "60"), None, local_url(None, port), 1.0,
                         smoke=False, echo=echo, output=io.BytesIO(), poll_interval=0.1)
    assert err.value.exit_code == 5
    assert "last seen: /health answered 503" in str(err.value) and str(err.value).endswith("; vLLM was stopped")
    assert wait_gone(echo.child_pid(), 1)


@pytest.mark.slow
def test_smoke_failure_stops_child_exit_5(tmp_path: Path) -> None:
    echo, port, log = Lines(), free_port(), tmp_path / "signals"
    reports = []
    with pytest.raises(NotReadyError) as err:
        serve_supervised(
            fake_argv(port, "--scenario", "no_reasoning_parser", "--signal-log", str(log)), None, local_url(None, port), 20,
            smoke=True, echo=echo, output=io.BytesIO(), poll_interval=0.1, on_report=reports.append,
        )
    assert str(err.value) == "smoke failed: reasoning; vLLM was stopped"
    assert err.value.exit_code == 5
    assert reports and reports[0].failed() == ["reasoning"]
    assert log.read_text().split() == ["SIGTERM"]
    assert wait_gone(echo.child_pid(), 1)


@pytest.mark.slow
def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    echo, port, log = Lines(), free_port(), tmp_path / "signals"
    started = time.monotonic()
    with pytest.raises(NotReadyError):
        serve_supervised(
            fake_argv(port, "--scenario", "no_reasoning_parser", "--ignore-term", "--signal-log", str(log)), None,
            local_url(None, port), 20, smoke=True, echo=echo, output=io.BytesIO(), poll_interval=0.1, stop_timeout=1.0,
            on_report=lambda r: None,
        )
    assert log.read_text().split() == ["SIGTERM"]
    assert any("killing its process group" in line for line in echo.lines)
    assert wait_gone(echo.child_pid(), 1)
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_smoke_options_reach_run_smoke() -> None:
    echo, port = Lines(), free_port()
    reports = []
    proc_result: list[int] = []

    def stop_soon() -> None:
        # Once serving, stop it the way an orchestrator would: SIGTERM to us (main thread handler).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("serving in the foreground" in line for line in echo.lines):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_soon, daemon=True).start()
    rc = serve_supervised(
        fake_argv(port, "--term-exit-code", "0"), None, local_url(None, port), 20, smoke=True,
        smoke_options={"checks": ["chat", "spec_decode"], "expect_spec_decode": True}, on_report=reports.append,
        echo=echo, output=io.BytesIO(), poll_interval=0.1,
    )
    proc_result.append(rc)
    assert rc == 0
    assert [c.name for c in reports[0].checks] == ["chat", "spec_decode"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.slow
def test_after_ready_failure_stops_child_and_is_raised(tmp_path: Path) -> None:
    """serve --bench: the hook runs once ready (after the smoke); its LauncherError stops vLLM."""
    echo, port, log = Lines(), free_port(), tmp_path / "signals"
    seen = []

    def hook(info) -> None:
        seen.append(info.model)
        raise ProfileError("bench: no `vllm` on PATH")

    with pytest.raises(ProfileError, match="no `vllm` on PATH"):
        serve_supervised(fake_argv(port, "--signal-log", str(log)), None, local_url(None, port), 20, smoke=True,
                         smoke_options={"checks": ["chat"]}, on_report=lambda r: echo("smoke done"), after_ready=hook,
                         echo=echo, output=io.BytesIO(), poll_interval=0.1)
    assert seen == ["tiny"]
    assert echo.lines.index("smoke done") < len(echo.lines)  # the smoke ran before the hook
    assert log.read_text().split() == ["SIGTERM"]
    assert wait_gone(echo.child_pid(), 1)
    assert not any("serving in the foreground" in line for line in echo.lines)


@pytest.mark.slow
def test_after_ready_success_keeps_serving() -> None:
    echo, port = Lines(), free_port()
    seen = []

    def stop_soon() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("serving in the foreground" in line for line in echo.lines):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_soon, daemon=True).start()
    rc = serve_supervised(fake_argv(port, "--term-exit-code", "0"), None, local_url(None, port), 20, smoke=False,
                          after_ready=lambda info: seen.append(info.url), echo=echo, output=io.BytesIO(), poll_interval=0.1)
    assert rc == 0 and seen == [local_url(None, port)]


# ---------------------------------------------------------------- as a real process tree


SUPERVISOR = """
import sys
from launcher.errors import LauncherError
from launcher.live.supervise import serve_supervised
argv, url, smoke = sys.argv[1:-2], sys.argv[-2], sys.argv[-1] == "smoke"
try:
    sys.exit(serve_supervised(argv, None, url, 30, smoke=smoke, poll_interval=0.1, stop_timeout=5))
except LauncherError as exc:  # as the CLI does: one line, the error's exit code
    print(f"launcher: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


class Supervisor:
    """`python -c SUPERVISOR tests/fakes/vllm_server.py ...`: a real launcher-like process with real signals."""

    def __init__(self, port: int, *fake_args: str, smoke: bool = True) -> None:
        cmd = [sys.executable, "-c", SUPERVISOR, *fake_argv(port, *fake_args), local_url(None, port), "smoke" if smoke else "nosmoke"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        self.out_lines: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True).start()
        threading.Thread(target=self._collect_stdout, daemon=True).start()

    @staticmethod
    def _read(stream: object, q: queue.Queue[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))

    def _collect_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out_lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, seconds: float = 30.0) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.err.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.err_lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"never saw {text!r}; stderr so far:\n" + "\n".join(self.err_lines))

    def child_pid(self) -> int:
        line = next(line for line in self.err_lines if "started vLLM (pid " in line)
        return int(line.split("(pid ")[1].split(")")[0])

    def finish(self, seconds: float = 20.0) -> int:
        rc = self.proc.wait(seconds)
        while not self.err.empty():
            self.err_lines.append(self.err.get())
        return rc


@pytest.mark.parametrize(("sig", "term_code"), [(signal.SIGTERM, "0"), (signal.SIGINT, "3"), (signal.SIGHUP, "7")])
@pytest.mark.slow
def test_signal_forwarded_and_exit_code_propagated(tmp_path: Path, sig: signal.Signals, term_code: str) -> None:
    log = tmp_path / "signals"
    sup = Supervisor(free_port(), "--term-exit-code", term_code, "--signal-log", str(log))
    sup.wait_for("serving in the foreground")
    assert any(line.startswith("result: ok:") for line in sup.err_lines), sup.err_lines  # the smoke ran and passed
    child = sup.child_pid()
    assert os.getpgid(child) == child != os.getpgid(sup.proc.pid)  # vLLM has its own process group
    sup.proc.send_signal(sig)
    assert sup.finish() == int(term_code)
    assert log.read_text().split() == [sig.name]
    assert not alive(child)
    assert any("fake-vllm: INFO Starting vLLM server" in line for line in sup.out_lines)  # output passed through


@pytest.mark.slow
def test_forwarded_sigterm_escalates_after_stop_timeout(tmp_path: Path) -> None:
    """A user's SIGTERM that vLLM does not act on (vLLM 0.32 can wait for open connections past a minute):
    the supervisor kills vLLM's group stop_timeout (here 5 s) after the signal, says so, and exits."""
    log = tmp_path / "signals"
    sup = Supervisor(free_port(), "--ignore-term", "--signal-log", str(log), smoke=False)
    sup.wait_for("serving in the foreground")
    child = sup.child_pid()
    t0 = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.finish(30) == 137  # vLLM's own end: killed
    took = time.monotonic() - t0
    assert 5 <= took < 15, took
    assert log.read_text().split() == ["SIGTERM"]
    assert any("vLLM did not stop within 5 s of SIGTERM; killing its process group" in line for line in sup.err_lines), sup.err_lines
    assert not alive(child)


@pytest.mark.slow
def test_child_killed_outright_while_serving_exits_4() -> None:
    sup = Supervisor(free_port(), smoke=False)
    sup.wait_for("serving in the foreground")
    os.kill(sup.child_pid(), signal.SIGKILL)  # not a signal of ours: vLLM died by itself
    assert sup.finish() == 4
    assert any("vLLM exited by itself with code 137" in line for line in sup.err_lines), sup.err_lines


@pytest.mark.slow
def test_signal_during_start_stops_waiting(tmp_path: Path) -> None:
    log = tmp_path / "signals"
    sup = Supervisor(free_port(), "--ready-after", "60", "--term-exit-code", "0", "--signal-log", str(log))
    sup.wait_for("/health answered 503")  # the child is up, its handlers installed, not ready
    started = time.monotonic()
    sup.proc.send_signal(signal.SIGINT)
    assert sup.finish() == 0
    assert time.monotonic() - started < 10
    assert log.read_text().split() == ["SIGINT"]
    assert any("signal SIGINT forwarded to vLLM during start" in line for line in sup.err_lines)


@pytest.mark.slow
def test_orphaned_grandchild_is_reaped(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    sup = Supervisor(free_port(), "--grandchild-pidfile", str(pidfile), smoke=False)
    sup.wait_for("serving in the foreground")
    grandchild = int(pidfile.read_text())
    assert alive(grandchild)
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.finish() == 0
    assert wait_gone(grandchild, 5)


@pytest.mark.slow
def test_supervisor_killed_outright_takes_vllm_down(tmp_path: Path) -> None:
    log = tmp_path / "signals"
    sup = Supervisor(free_port(), "--signal-log", str(log), smoke=False)
    sup.wait_for("serving in the foreground")
    child = sup.child_pid()
    sup.proc.kill()  # SIGKILL: no handler runs; the parent-death signal must stop vLLM
    sup.finish()
    assert wait_gone(child, 10)
    # Linux sends the parent-death signal at each reparenting: first to a surviving thread of the
    # dying supervisor (the output pump), then to init; so once or twice, and only SIGTERM.
    assert set(log.read_text().split()) == {"SIGTERM"}


def test_group_members_reads_proc() -> None:
    assert os.getpid() in _group_members(os.getpgid(0))
    assert _group_members(2**22 + 12345) == []
