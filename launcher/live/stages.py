"""Time to ready by stage, from vLLM's own start-up log. Pure: lines in, durations out.

A start is cut at the first line of each milestone (times are the supervisor's arrival times when
fed live, else the log's own `MM-DD HH:MM:SS` stamps, vLLM's logger.py::_DATE_FORMAT):

| stage | from | to |
|---|---|---|
| setup | the process start (the first line) | `Starting to load model` (V1), `Loading model from scratch` (V2) |
| weights | there | `Model loading took X GiB memory and Y seconds` (a) |
| torch.compile, profiling | there | `Available KV cache memory` (b), or `KV cache size` (c) |
| KV cache | there | the first `Capturing CUDA graphs` bar, else the engine line |
| graphs | there | `init engine (profile, create kv cache, warmup model) took X s` (d); without a bar in the log, vLLM's `Graph capturing finished in X secs` |
| API server | there | uvicorn's `Application startup complete`, or when /v1/models listed the model |
| warm-up, first request | launcher's own measurement (launcher.live.warmup) | |

(a) v1/worker/gpu_model_runner.py::load_model; the CPU build prints none, so its first compile line ends it.
(b) v1/worker/gpu_worker.py::determine_available_memory. (c) v1/core/kv_cache_utils.py, the CPU build's
first line. (d) v1/engine/core.py::_initialize_kv_caches.

torch.compile is carved out of the window it shares with memory profiling by vLLM's own number:
the engine line's `(compilation: X s)` where it prints one, else the sum of
compilation/monitor.py's `torch.compile took X s in total` and decorators.py's `torch.compile and
initial profiling/warmup run together took X s in total`, else (the CPU build logs neither) the
span from the first compile line to the last `saved AOT compiled function` / `Initial
profiling/warmup run took` line, less those warm-up runs. The rest of the window is profiling.

What the compile cache did is read from the same log (compilation/backends.py, decorators.py):
`Using cache directory: D for vLLM's torch.compile`, `Compiling a graph for compile range`
(compiled) versus `Directly load the compiled graph(s) for compile range ... from the cache`
(loaded), and on the AOT path `Compiling model again due to a load failure from P` (compiled,
then `saved AOT compiled function to P`) versus `Directly load AOT compilation from path P`
(loaded). vLLM's jit monitor names kernels still compiled while serving: `Triton kernel JIT
compilation during inference: NAME. This causes a latency spike` (utils/jit_monitor.py::_handle_jit_event).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STAGES = ("setup", "weights", "torch.compile", "profiling", "KV cache", "graphs", "API server", "warm-up", "first request")

_STAMP = re.compile(r"\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\b")
_LOAD_START = re.compile(r"Starting to load model|Loading model from scratch")
_LOADED = re.compile(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds")
_COMPILE_START = re.compile(
    r"Starting torch\.compile|Dynamo bytecode transform time|for vLLM's torch\.compile|Compiling model again due to a load failure|"
    r"Directly load AOT compilation|Compiling a graph for compile range|Directly load the compiled graph|"
    r"Warming up model for the compilation"
)
_COMPILE_END = re.compile(r"saved AOT compiled function to|Initial profiling/warmup run took|torch\.compile took|together took")
_COMPILE_TOOK = re.compile(r"torch\.compile took ([\d.]+) s in total|warmup run together took ([\d.]+) s in total")
_WARMUP_RUN = re.compile(r"Initial profiling/warmup run took ([\d.]+) s")
_KV = re.compile(r"Available KV cache memory|KV cache size: [\d,]+ tokens")
_GRAPHS = re.compile(r"Capturing CUDA graphs")
_GRAPHS_DONE = re.compile(r"Graph capturing finished in (\d+) secs?, took ([\d.]+) GiB")
_ENGINE = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s(?: \(compilation: ([\d.]+) s)?")
_API = re.compile(r"Application startup complete")
# config/scheduler.py::SchedulerConfig.__post_init__ (GPU builds; the CPU build prints none): the budget the warm-up fills.
_BATCHED = re.compile(r"Chunked prefill is enabled with max_num_batched_tokens=(\d+)")

_CACHE_DIR = re.compile(r"Using cache directory: (\S+) for vLLM's torch\.compile")
_CACHE_DISABLED = re.compile(r"vLLM's torch\.compile cache is disabled")
_RANGE_COMPILED = re.compile(r"Compiling a graph for compile range")
_RANGE_LOADED = re.compile(r"Directly load the compiled graph\(s\) for compile range")
_AOT_LOADED = re.compile(r"Directly load AOT compilation from path (\S+)")
_AOT_COMPILED = re.compile(r"Compiling model again due to a load failure from (\S+?),? reason")
_AOT_SAVED = re.compile(r"saved AOT compiled function to (\S+)")
# utils/jit_monitor.py::_handle_jit_event: "%s %s during inference: %s%s. This causes a latency spike; ..." (backend, event such
# as "Triton kernel" "JIT compilation", the function, a detail); 0.25.1 writes the same for Triton.
_JIT = re.compile(r"during inference: (\w+(?:\.\w+)*)\W.*This causes a latency spike")


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    source: str  # "log" (vLLM's lines), "vllm" (a number vLLM printed), "launcher" (measured by launcher)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 2), "source": self.source}


@dataclass
class CompileCache:
    """What vLLM's torch.compile cache did during one start, from its log."""

    dirs: list[str] = field(default_factory=list)
    disabled: bool = False
    compiled: int = 0  # graphs / AOT functions compiled in this start
    loaded: int = 0  # graphs / AOT functions loaded from the cache
    saved: int = 0  # AOT functions written for the next start

    @property
    def verdict(self) -> str:
        """`loaded` (everything from the cache), `compiled` (nothing), `partly loaded`, `disabled`, or `unknown`."""
        built = self.compiled or self.saved  # a first AOT compile logs only its save
        if self.disabled:
            return "disabled"
        if self.loaded and not built:
            return "loaded"
        if self.loaded:
            return "partly loaded"
        if built:
            return "compiled"
        return "unknown"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "dirs": list(self.dirs), "compiled": self.compiled, "loaded": self.loaded, "saved": self.saved}


class StartTimeline:
    """Follows vLLM's output and times its start by stage (see the module docstring)."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.numbers: dict[str, float] = {}
        self.compile_took = 0.0
        self.warmup_runs = 0.0
        self.compile_first: float | None = None
        self.compile_last: float | None = None
        self.cache = CompileCache()
        self.jit_kernels: list[tuple[float, str]] = []
        self._now = 0.0
        self._origin: datetime | None = None

    # -- time

    def _time(self, text: str, at: float | None) -> float:
        if at is not None:
            self._now = max(self._now, at)
            return self._now
        m = _STAMP.search(text)
        if m:
            month, day, hour, minute, second = (int(g) for g in m.groups())
            try:
                stamp = datetime(2000, month, day, hour, minute, second)  # a leap year: 02-29 parses
            except ValueError:
                return self._now
            if self._origin is None:
                self._origin = stamp
            self._now = max(self._now, (stamp - self._origin).total_seconds())
        return self._now

    def _mark(self, name: str, t: float) -> None:
        self.marks.setdefault(name, t)

    # -- input

    def feed(self, text: str, at: float | None = None, complete: bool = True) -> None:
        """One line of vLLM's output, or (`complete` False) a progress bar's partial segment.

        `at`: seconds since the process started (live); None reads the line's own timestamp.
        Partial segments only set milestones (first occurrence), so a line fed twice counts once.
        """
        t = self._time(text, at)
        if _LOAD_START.search(text):
            self._mark("load", t)
        if _COMPILE_START.search(text):
            self._mark("compile", t)
            if complete:
                self.compile_first = t if self.compile_first is None else self.compile_first
        if _KV.search(text):
            self._mark("kv", t)
        if _GRAPHS.search(text):
            self._mark("graphs", t)
        if _API.search(text):
            self._mark("api", t)
        if not complete:
            return
        self._numbers_line(text, t)
        self._cache_line(text)
        m = _JIT.search(text)
        if m:
            self.jit_kernels.append((t, m.group(1)))

    def _numbers_line(self, text: str, t: float) -> None:
        m = _BATCHED.search(text)
        if m:
            self.numbers.setdefault("max_num_batched_tokens", float(m.group(1)))
        m = _LOADED.search(text)
        if m and "loaded" not in self.marks:
            self._mark("loaded", t)
            self.numbers["weights"] = float(m.group(2))
        m = _COMPILE_TOOK.search(text)
        if m:
            self.compile_took += float(m.group(1) or m.group(2))
        m = _WARMUP_RUN.search(text)
        if m:
            self.warmup_runs += float(m.group(1))
        if _COMPILE_END.search(text):
            self.compile_last = t
        m = _GRAPHS_DONE.search(text)
        if m and "graphs" not in self.numbers:
            self.numbers["graphs"] = float(m.group(1))
        m = _ENGINE.search(text)
        if m and "engine" not in self.marks:
            self._mark("engine", t)
            self.numbers["engine"] = float(m.group(1))
            if m.group(2):
                self.numbers["compilation"] = float(m.group(2))

    def _cache_line(self, text: str) -> None:
        c = self.cache
        m = _CACHE_DIR.search(text)
        if m and m.group(1) not in c.dirs:
            c.dirs.append(m.group(1))
        if _CACHE_DISABLED.search(text):
            c.disabled = True
        if _RANGE_COMPILED.search(text):
            c.compiled += 1
        if _RANGE_LOADED.search(text):
            c.loaded += 1
        for pattern, attr in ((_AOT_LOADED, "loaded"), (_AOT_COMPILED, "compiled"), (_AOT_SAVED, "saved")):
            m = pattern.search(text)
            if m:
                setattr(c, attr, getattr(c, attr) + 1)
                path = m.group(1).rstrip(",")
                if path not in c.dirs:
                    c.dirs.append(path)

    # -- output

    def compile_seconds(self) -> tuple[float | None, str]:
        """vLLM's compile time for this start and where it came from."""
        if "compilation" in self.numbers:
            return self.numbers["compilation"], "vllm"
        if self.compile_took:
            return self.compile_took, "vllm"
        if self.compile_first is not None and self.compile_last is not None and self.compile_last >= self.compile_first:
            return max(0.0, self.compile_last - self.compile_first - self.warmup_runs), "log"
        return None, "log"

    def stages(self, ready_at: float | None = None) -> list[Stage]:
        """The start's stages that the log shows, in order; `ready_at` (seconds since start) ends the API server stage."""
        marks = dict(self.marks)
        if "loaded" not in marks and "compile" in marks:  # the CPU build prints no "Model loading took"
            marks["loaded"] = marks["compile"]
        if ready_at is not None:
            marks["ready"] = max(ready_at, marks.get("api", ready_at))
        elif "api" in marks:
            marks["ready"] = marks["api"]
        out: list[Stage] = []

        def span(name: str, start: str, ends: tuple[str, ...]) -> None:
            end = next((marks[e] for e in ends if e in marks), None)
            if start in marks and end is not None and end >= marks[start]:
                out.append(Stage(name, end - marks[start], "log"))

        if "load" in marks:
            out.append(Stage("setup", marks["load"], "log"))
        span("weights", "load", ("loaded",))
        if "loaded" in marks and "kv" in marks and marks["kv"] >= marks["loaded"]:
            window = marks["kv"] - marks["loaded"]
            compile_s, source = self.compile_seconds()
            if compile_s is not None:
                compile_s = min(compile_s, window)
                out.append(Stage("torch.compile", compile_s, source))
                out.append(Stage("profiling", window - compile_s, "log"))
            else:
                out.append(Stage("profiling", window, "log"))
        if "graphs" not in marks and "graphs" in self.numbers and "kv" in marks and marks.get("engine", -1.0) >= marks["kv"]:
            # No capture bar in the log (an excerpt): vLLM's "Graph capturing finished in X secs" splits the window.
            window = marks["engine"] - marks["kv"]
            graphs_s = min(self.numbers["graphs"], window)
            out += [Stage("KV cache", window - graphs_s, "log"), Stage("graphs", graphs_s, "vllm")]
        else:
            span("KV cache", "kv", ("graphs", "engine"))
            span("graphs", "graphs", ("engine",))
        span("API server", "engine", ("ready",))
        return out

    def jit_after(self, t: float) -> list[str]:
        """Kernels vLLM's jit monitor saw compiled while serving, at or after `t` seconds."""
        return [name for at, name in self.jit_kernels if at >= t]


def timeline_of(text: str) -> StartTimeline:
    """A whole log (as committed or captured) through the timeline, by its own timestamps."""
    timeline = StartTimeline()
    for line in text.splitlines():
        timeline.feed(line)
    return timeline


@dataclass
class ReadyReport:
    """Time to ready of one `serve --wait`: vLLM's stages, launcher's warm-up and first request, the compile cache."""

    ready_s: float  # from the process start to ready (after the warm-up, when one ran)
    stages: list[Stage]
    cache: CompileCache
    warmup: dict[str, Any] | None = None
    jit_during_warmup: list[str] = field(default_factory=list)
    cache_root: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ready_s": round(self.ready_s, 2),
            "stages": [s.to_json() for s in self.stages],
            "compile_cache": self.cache.to_json(),
            "cache_root": self.cache_root,
            "warmup": self.warmup,
            "jit_during_warmup": list(self.jit_during_warmup),
        }

    def summary(self) -> str:
        """`weights 4 s, torch.compile 83 s, ...`: every stage, rounded."""
        parts = []
        for s in self.stages:
            value = f"{s.seconds:.2f} s" if s.name == "first request" else f"{s.seconds:.0f} s"
            parts.append(f"{s.name} {value}")
        return ", ".join(parts)


def _kernels(names: list[str], limit: int = 6) -> str:
    unique = list(dict.fromkeys(names))
    return ", ".join(unique[:limit]) + (f" and {len(unique) - limit} more" if len(unique) > limit else "")


def ready_line(report: ReadyReport) -> str:
    """`time to ready by stage: ...; compile cache: compiled[; kernels compiled on first use during the warm-up: ...]`."""
    line = f"time to ready by stage: {report.summary()}; compile cache: {report.cache.verdict}"
    if report.jit_during_warmup:
        line += f"; kernels compiled on first use during the warm-up (vLLM's jit monitor): {_kernels(report.jit_during_warmup)}"
    return line


def ready_report(timeline: StartTimeline, api_ready_s: float, warmup: Any | None = None,
                 cache_root: str | None = None) -> ReadyReport:
    """Stages up to the API (from the log), then the warm-up and the first request (a WarmupResult, when one ran)."""
    stages = timeline.stages(api_ready_s)
    ready_s = api_ready_s
    jit: list[str] = []
    warm_json = None
    if warmup is not None:
        stages.append(Stage("warm-up", warmup.total_s, "launcher"))
        ttft = warmup.first_request_ttft_s
        if ttft is not None:
            stages.append(Stage("first request", ttft, "launcher"))
        ready_s += warmup.total_s
        jit = timeline.jit_after(api_ready_s)
        warm_json = warmup.to_json()
    return ReadyReport(ready_s, stages, timeline.cache, warm_json, jit, cache_root)
