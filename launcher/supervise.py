"""`serve --wait --smoke`: run vLLM as a child, wait for it, smoke-test it, then stay in front.

Without those flags `serve` execs vLLM (no Python in between). With them a supervisor is
needed, and it must behave like that exec'd process to whoever started it:
- vLLM runs in its own process group (a terminal's Ctrl-C reaches only us); SIGTERM, SIGINT
  and SIGHUP are forwarded to vLLM's pid, as if it had received them itself.
- Our exit code is vLLM's (128+N when a signal N killed it).
- If we are killed outright, vLLM gets SIGTERM (Linux parent-death signal), so no orphaned
  server keeps the GPUs.
- vLLM's output passes through unchanged; the last lines are kept for the error message.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, Mapping, Sequence

from launcher.errors import EngineStartError, LauncherError, NotReadyError
from launcher.readiness import Progress, wait_ready

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DEFAULT_STOP_TIMEOUT_S = 30.0
DEFAULT_TAIL_LINES = 40
_ERROR_LINE = re.compile(r"(Error|Exception|error:|Traceback|FATAL|Killed)")


def local_url(host: str | None, port: int | None) -> str:
    """The URL to reach a server listening on host:port from this machine."""
    if not host or host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port or 8000}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except Exception:  # not Linux, or no prctl: the supervisor still stops vLLM on every path it controls
        pass


def exit_code(returncode: int) -> int:
    """subprocess's -N (killed by signal N) -> the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class _Stopped(Exception):
    """A forwarded signal ended the start phase (the user asked vLLM to stop)."""


class Supervisor:
    """One vLLM child: started, its output pumped through, signals forwarded, stopped on failure."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        *,
        output: IO[bytes] | None = None,
        tail_lines: int = DEFAULT_TAIL_LINES,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        echo: Callable[[str], None] = _stderr,
    ) -> None:
        self.argv = list(argv)
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")  # a pipe makes Python block-buffer its logs
        self.env = child_env
        self.output = output if output is not None else sys.stdout.buffer
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.stop_timeout = stop_timeout
        self.echo = echo
        self.proc: subprocess.Popen[bytes] | None = None
        self.signals: list[int] = []
        self._previous: dict[int, Any] = {}
        self._pump: threading.Thread | None = None
        self.started_at = 0.0

    # -- lifecycle

    def start(self) -> None:
        self._install_handlers()
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - argv comes from a validated profile
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        except OSError as exc:
            self._restore_handlers()
            raise EngineStartError(f"cannot start {self.argv[0]}: {exc.strerror or exc}") from None
        self.started_at = time.monotonic()
        for sig in self.signals:  # arrived between installing the handlers and the fork
            self._send(sig)
        self._pump = threading.Thread(target=self._pump_output, name="vllm-output", daemon=True)
        self._pump.start()

    def _pump_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.tail.append(raw.decode("utf-8", "replace").rstrip("\n"))
            try:
                self.output.write(raw)
                self.output.flush()
            except (OSError, ValueError):  # our stdout went away; keep draining the pipe
                pass
        self.proc.stdout.close()

    def alive_or_raise(self) -> None:
        """For wait_ready: stop waiting on a forwarded signal or a dead child."""
        if self.signals:
            raise _Stopped()
        assert self.proc is not None
        rc = self.proc.poll()
        if rc is not None:
            self._drain()
            elapsed = time.monotonic() - self.started_at
            raise EngineStartError(
                f"vLLM exited with code {exit_code(rc)} during start, after {elapsed:.0f} s: {self.last_error_line()}"
            )

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.tail if line.strip()]
        for line in reversed(lines):
            if _ERROR_LINE.search(line):
                return line[:300]
        return lines[-1][:300] if lines else "(no output)"

    def show_tail(self, title: str) -> None:
        self.echo(f"launcher: {title}; last {len(self.tail)} lines of vLLM's output:")
        for line in self.tail:
            self.echo(f"  | {line}")

    def wait(self) -> int:
        """Block until vLLM exits (signals keep being forwarded meanwhile); its exit code."""
        assert self.proc is not None
        rc = self.proc.wait()
        self._drain()
        self._reap_group()
        return exit_code(rc)

    def stop(self) -> int:
        """SIGTERM vLLM, wait `stop_timeout`, then SIGKILL its whole process group."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self._send(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.echo(f"launcher: vLLM did not stop within {self.stop_timeout:g} s; killing its process group")
                self._killpg(signal.SIGKILL)
                self.proc.wait()
        self._drain()
        self._reap_group()
        return exit_code(self.proc.returncode)

    def close(self) -> None:
        self._restore_handlers()

    # -- internals

    def _drain(self, timeout: float = 5.0) -> None:
        if self._pump is not None:
            self._pump.join(timeout)

    def _reap_group(self) -> None:
        # Anything still in vLLM's group after vLLM itself exited is an orphan (an engine core).
        # Only when /proc shows members: an empty group's id may be reused by another process.
        assert self.proc is not None
        if _group_members(self.proc.pid):
            self._killpg(signal.SIGKILL)

    def _killpg(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _send(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _forward(self, signum: int, frame: Any) -> None:
        del frame  # unused
        self.signals.append(signum)
        if self.proc is not None:
            self._send(signum)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in FORWARDED_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._forward)

    def _restore_handlers(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def serve_supervised(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    url: str,
    wait_timeout: float,
    smoke: bool,
    *,
    model: str | None = None,
    api_key: str | None = None,
    smoke_options: Mapping[str, Any] | None = None,
    on_report: Callable[[Any], None] | None = None,
    after_ready: Callable[[Any], None] | None = None,
    echo: Callable[[str], None] = _stderr,
    output: IO[bytes] | None = None,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
    poll_interval: float = 1.0,
) -> int:
    """Start vLLM, wait until it serves, optionally smoke-test it, then stay in the foreground.

    Args:
        argv: the full command (program first), as `render` produces it.
        env: the complete environment for vLLM (None: ours).
        url: where the server will answer, e.g. `local_url(host, port)`.
        wait_timeout: seconds to wait for readiness.
        smoke: run the smoke battery once ready.
        model: served model name to wait for (None: any).
        api_key: the server's API key, for `/v1/models` and the smoke requests.
        smoke_options: more keyword arguments for `run_smoke` (random_weights,
            expect_spec_decode, checks, request_timeout, max_tokens).
        on_report: receives the SmokeReport (default: its text on stderr).
        after_ready: called with the ReadyInfo once ready (after the smoke), e.g. `serve --bench`;
            a LauncherError from it stops vLLM and is raised.
        echo: where launcher's own lines go (default stderr).
        output: where vLLM's output goes (default our stdout).
        stop_timeout: seconds between SIGTERM and SIGKILL when we stop vLLM.
        poll_interval: seconds between readiness looks.

    Returns:
        vLLM's exit code (128+N if signal N killed it).

    Raises:
        EngineStartError: vLLM could not be started or exited before it was ready (exit 4).
        NotReadyError: not ready within `wait_timeout`, or the smoke failed; vLLM is stopped (exit 5).
    """
    sup = Supervisor(argv, env, output=output, stop_timeout=stop_timeout, echo=echo)
    sup.start()
    assert sup.proc is not None
    try:
        echo(f"launcher: started vLLM (pid {sup.proc.pid}); waiting up to {wait_timeout:g} s for {url}")

        def progress(p: Progress) -> None:
            if p.stage != "ready":
                echo(f"launcher: waiting ({p.elapsed_s:.0f} s): {p.detail}")

        try:
            info = wait_ready(url, wait_timeout, model=model, progress=progress, api_key=api_key,
                              interval=poll_interval, alive=sup.alive_or_raise)
        except _Stopped:
            echo(f"launcher: signal {_signame(sup.signals[0])} forwarded to vLLM during start; waiting for it to exit")
            return sup.wait()
        except EngineStartError:
            sup.show_tail("vLLM exited during start")
            sup.stop()
            raise
        except NotReadyError as exc:
            sup.show_tail("vLLM did not become ready")
            sup.stop()
            raise NotReadyError(f"{exc}; vLLM was stopped") from None
        echo(f"launcher: ready after {info.elapsed_s:.1f} s: '{info.model}' at {info.url}")

        stopped = _smoke(sup, url, info, api_key, smoke_options, on_report, echo) if smoke else None
        if stopped is None and after_ready is not None:
            stopped = _after_ready(sup, after_ready, info)
        if stopped is not None:
            return stopped

        echo(f"launcher: serving in the foreground; SIGTERM/SIGINT/SIGHUP go to vLLM (pid {sup.proc.pid})")
        return sup.wait()
    except BaseException:
        if sup.proc.poll() is None:
            sup.stop()
        raise
    finally:
        sup.close()


def _smoke(sup: Supervisor, url: str, info: Any, api_key: str | None, smoke_options: Mapping[str, Any] | None,
           on_report: Callable[[Any], None] | None, echo: Callable[[str], None]) -> int | None:
    """The smoke battery against the ready child; vLLM's exit code when a signal stopped it meanwhile."""
    from launcher.smoke import run_smoke

    assert sup.proc is not None
    try:
        report = run_smoke(url, info.model, api_key, **dict(smoke_options or {}))
    except NotReadyError as exc:
        if sup.signals:
            return sup.wait()
        sup.stop()
        raise NotReadyError(f"{exc}; vLLM was stopped") from None
    if sup.signals:  # stopped while the smoke ran: not a smoke failure
        return sup.wait()
    (on_report or (lambda r: echo(r.format_text())))(report)
    if not report.ok:
        code = sup.proc.poll()
        sup.stop()
        why = f"vLLM had exited with code {exit_code(code)}" if code is not None else "vLLM was stopped"
        raise NotReadyError(f"smoke failed: {', '.join(report.failed())}; {why}")
    return None


def _after_ready(sup: Supervisor, hook: Callable[[Any], None], info: Any) -> int | None:
    """Run the hook (serve --bench); a LauncherError stops vLLM and is raised, unless a signal stopped it first."""
    try:
        hook(info)
    except LauncherError:
        if sup.signals:  # stopped while it ran: vLLM's exit, not the hook's failure
            return sup.wait()
        sup.stop()
        raise
    return None


def _group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid`, read from /proc (empty where there is no /proc)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
