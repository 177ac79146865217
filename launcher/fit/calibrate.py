"""Read vLLM's own start-up lines from a log and set them against a FitResult (no I/O here).

Wording checked against the installed vLLM 0.33.0: `v1/worker/gpu/model_runner.py` ("Model
loading took", "Graph capturing finished"), `v1/worker/gpu_worker.py` ("Available KV cache
memory", the `--kv-cache-memory=` summary, the kv_cache_memory_bytes line),
`v1/core/kv_cache_utils.py` ("GPU KV cache size: N tokens, Maximum concurrency for L tokens per
request: Xx", one line), `platforms/interface.py` ("Setting attention block size", "Padding mamba
page size"), `v1/core/kv_cache_planning.py` and `v1/worker/utils.py` (the start-up errors). Older
spellings (separate size and concurrency lines, "Model loading took X GiB and") are accepted too.
Lines may carry the "(Worker_TP0 pid=N) INFO 11-28 20:24:05 [file.py:123]" prefix and colours.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from launcher.fit.estimate import GIB, FitResult

# Every pattern is bounded (no unbounded quantifier next to an overlapping one) and every number has at
# most 18 digits: a hostile log line (100k spaces, a 5000-digit number) is skipped in microseconds.
MAX_LINE = 16_384  # characters of one line looked at; vLLM's longest (the engine config) is about 4k
_ANSI = re.compile(r"\x1b\[[0-9;]{0,32}m")
_PREFIX = re.compile(
    r"^(?:\((?P<proc>[^()]{0,120}?)\s{1,8}pid=(?P<pid>\d{1,10})\)\s{1,8})?"
    r"(?:(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s{1,8}\d\d-\d\d\s{1,8}[\d:.]{1,20}\s{1,8}\[(?P<src>[^\]]{1,200})\]\s{1,8})?"
)
_NUM = r"-?\d{1,18}(?:\.\d{1,18})?"
_INT = r"\d{1,18}"
_GROUPED = r"\d{1,3}(?:,\d{3}){0,5}|\d{1,18}"  # 1,234,567 or 1234567

_MODEL_LOADING = re.compile(rf"Model loading took ({_NUM}) GiB(?: memory)? and ({_NUM}) seconds")
_AVAILABLE_KV = re.compile(
    rf"Available KV cache memory: ({_NUM}) GiB"
    rf"|reserved ({_NUM}) GiB memory for KV Cache as specified by kv_cache_memory_bytes"
)
_KV_SIZE = re.compile(rf"(?:^|\s|\])((?:GPU|CPU|XPU|TPU)(?: \+ host)?) KV cache size: ({_GROUPED}) tokens")
_CONCURRENCY = re.compile(rf"Maximum concurrency for ({_GROUPED}) tokens per request: ({_NUM})x")
_BLOCK_SIZE = re.compile(rf"Setting attention block size to ({_INT}) tokens")
_PADDING = re.compile(rf"Padding mamba page size by ({_NUM})%")
_GRAPH = re.compile(rf"Graph capturing finished in ({_NUM}) secs?, took ({_NUM}) GiB")
_GRAPH_POOL = re.compile(rf"CUDA graph pool memory: ({_NUM}) GiB \(actual\), ({_NUM}) GiB \(estimated\)")
_SUMMARY_FREE = re.compile(
    rf"Free memory on device \(({_NUM})/({_NUM}) GiB\) on startup\. "
    rf"Desired GPU memory utilization is \(({_NUM}), ({_NUM}) GiB\)"
)
_SUMMARY_USAGE = re.compile(
    rf"Actual usage is ({_NUM}) GiB for consumed memory \(weights \+ non-torch\), "
    rf"({_NUM}) GiB for peak activation, and ({_NUM}) GiB for CUDAGraph memory"
)
_SUGGESTED = re.compile(r"--kv-cache-memory=(-?\d{1,18})(?!\d)")
_IN_USE = re.compile(rf"Current kv cache memory in use is ({_NUM}) GiB")
_FREE_ERROR = re.compile(
    rf"Free memory on device (\S{{1,64}}) \(({_NUM})/({_NUM}) GiB\) on startup is less than desired "
    rf"GPU memory utilization \(({_NUM}), ({_NUM}) GiB\)"
)
_TOO_SMALL = re.compile(
    rf"To serve at least one request with the model's max seq len \(({_INT})\), \(({_NUM}) GiB KV "
    rf"cache is needed, which is larger than the available KV cache memory \(({_NUM}) GiB\)\."
    rf"(?: Based on the available memory, the estimated maximum model length is ({_INT})\.)?"
)
# 0.25.1 DEBUG: v1/worker/gpu_worker.py::Worker.determine_available_memory and
# v1/worker/gpu_model_runner.py::GPUModelRunner.profile_cudagraph_memory (the V1 runner's estimate, per mode).
_PROFILE_RUN = re.compile(
    rf"Memory profiling takes ({_NUM}) seconds\. Total non KV cache memory: ({_NUM}) ?GiB; "
    rf"torch peak memory increase: ({_NUM}) ?GiB; non-torch forward increase memory: ({_NUM}) ?GiB; "
    rf"weights memory: ({_NUM}) ?GiB"
)
_GRAPH_MODE = re.compile(
    rf"Estimated (PIECEWISE|FULL) CUDA graph memory: ({_NUM}) MiB first-capture \+ \(({_INT})-1\) \S{{1,3}} ({_NUM}) MiB per-graph"
)
_GRAPH_LARGEST = re.compile(r"(PIECEWISE|FULL)=(\d{1,9}) \(largest=(\d{1,9})\)")
_GRAPH_TOTAL = re.compile(rf"Estimated CUDA graph memory: ({_NUM}) GiB total")
_NO_MEMORY = "No available memory for the cache blocks"
_VERSION = re.compile(r"Initializing a V1 LLM engine \(v([^)]{1,40})\)")
_MODEL = re.compile(r"Initializing a V1 LLM engine \(v[^)]{1,40}\) with config: model='([^']{1,1000})'")


@dataclass(frozen=True)
class Seen:
    """One number read from the log, with the line it came from and the process that wrote it."""

    value: float
    line: int
    process: str | None = None


@dataclass(frozen=True)
class MemorySummary:
    """The worker's post-start line that suggests `--kv-cache-memory=<bytes>` (docs/memory-model.md#the-start-up-sequence)."""

    free_gib: float
    total_gib: float
    utilization: float
    requested_gib: float
    consumed_gib: float | None
    activation_gib: float | None
    cudagraph_gib: float | None
    kv_bytes_to_requested_limit: int | None
    kv_bytes_to_gpu_limit: int | None
    kv_in_use_gib: float | None
    line: int
    process: str | None


@dataclass(frozen=True)
class GraphSample:
    """vLLM V1's estimate of one cudagraph mode: first capture, graphs, per-graph (MiB) and the largest size."""

    mode: str
    first_capture_mib: float
    graphs: int
    per_graph_mib: float
    largest: int | None
    line: int


@dataclass(frozen=True)
class StartLog:
    """Everything memory-related a vLLM start log said."""

    version: str | None = None
    model: str | None = None  # the model the engine was started with (its config line)
    model_loading_gib: tuple[Seen, ...] = ()
    available_kv_gib: tuple[Seen, ...] = ()
    kv_cache_tokens: Seen | None = None
    kv_pool: str | None = None
    max_concurrency: Seen | None = None
    concurrency_max_len: int | None = None
    block_size_tokens: Seen | None = None
    mamba_padding_pct: Seen | None = None
    graph_capture_gib: tuple[Seen, ...] = ()
    graph_pool_estimated_gib: tuple[Seen, ...] = ()
    summaries: tuple[MemorySummary, ...] = ()
    free_memory_error: tuple[float, float, float, float] | None = None  # free, total, util, requested GiB
    kv_too_small: tuple[int, float, float, int | None] | None = None  # L, needed GiB, available GiB, vLLM's max len
    no_kv_memory: bool = False
    torch_peak_gib: Seen | None = None  # the profile run's "torch peak memory increase" (0.25.1 DEBUG)
    non_torch_gib: Seen | None = None  # its "non-torch forward increase memory"
    graph_samples: tuple[GraphSample, ...] = ()  # "Estimated PIECEWISE CUDA graph memory: ..." per mode (V1 DEBUG)
    graph_estimate_gib: Seen | None = None  # "Estimated CUDA graph memory: X GiB total"
    lines_read: int = 0

    @property
    def empty(self) -> bool:
        return not (
            self.model_loading_gib or self.available_kv_gib or self.kv_cache_tokens or self.block_size_tokens
            or self.summaries or self.free_memory_error or self.kv_too_small or self.no_kv_memory
        )


def _split(line: str) -> tuple[str | None, str]:
    line = _ANSI.sub("", line[:MAX_LINE].rstrip("\n"))
    match = _PREFIX.match(line)
    process = None
    if match and match.group("proc"):
        process = f"{match.group('proc')} pid={match.group('pid')}"
    return process, line[match.end():] if match else line


def parse_log(text: str) -> StartLog:
    """Collect vLLM's memory lines from a start log (any order, any prefix, several ranks).

    Per-rank lines (model loading, available KV, graph capture) are all kept; for single-valued
    lines the last occurrence wins.
    """
    collected = _Collected()
    lines = text.splitlines()
    for number, raw in enumerate(lines, start=1):
        process, msg = _split(raw)
        collected.identity(msg)
        collected.per_rank(msg, number, process)
        collected.single(msg, number, process)
        collected.errors(msg)
        collected.profile(msg, number, process)
        if m := _SUMMARY_FREE.search(msg):
            collected.summaries.append(_summary(m, msg, number, process))
    return collected.log(len(lines))


class _Collected:
    """What parse_log has found so far."""

    def __init__(self) -> None:
        self.found: dict[str, object] = {}
        self.loading: list[Seen] = []
        self.available: list[Seen] = []
        self.graphs: list[Seen] = []
        self.pools: list[Seen] = []
        self.summaries: list[MemorySummary] = []
        self.samples: list[GraphSample] = []
        self.largest: dict[str, int] = {}

    def identity(self, msg: str) -> None:
        if m := _VERSION.search(msg):
            self.found.setdefault("version", m.group(1))
        if m := _MODEL.search(msg):
            self.found.setdefault("model", m.group(1))

    def per_rank(self, msg: str, number: int, process: str | None) -> None:
        if m := _MODEL_LOADING.search(msg):
            self.loading.append(Seen(float(m.group(1)), number, process))
        if m := _AVAILABLE_KV.search(msg):
            self.available.append(Seen(float(m.group(1) or m.group(2)), number, process))
        if m := _GRAPH.search(msg):
            self.graphs.append(Seen(float(m.group(2)), number, process))
        if m := _GRAPH_POOL.search(msg):
            self.pools.append(Seen(float(m.group(2)), number, process))

    def single(self, msg: str, number: int, process: str | None) -> None:
        if m := _KV_SIZE.search(" " + msg):
            self.found["kv_pool"] = m.group(1)
            self.found["kv_cache_tokens"] = Seen(int(m.group(2).replace(",", "")), number, process)
        if m := _CONCURRENCY.search(msg):
            self.found["concurrency_max_len"] = int(m.group(1).replace(",", ""))
            self.found["max_concurrency"] = Seen(float(m.group(2)), number, process)
        if m := _BLOCK_SIZE.search(msg):
            self.found["block_size_tokens"] = Seen(int(m.group(1)), number, process)
        if m := _PADDING.search(msg):
            self.found["mamba_padding_pct"] = Seen(float(m.group(1)), number, process)

    def profile(self, msg: str, number: int, process: str | None) -> None:
        """The profile run's split and the V1 runner's CUDA-graph estimate; the first rank's lines win."""
        if (m := _PROFILE_RUN.search(msg)) and "torch_peak_gib" not in self.found:
            self.found["torch_peak_gib"] = Seen(float(m.group(3)), number, process)
            self.found["non_torch_gib"] = Seen(float(m.group(4)), number, process)
        for mode, _count, largest in _GRAPH_LARGEST.findall(msg if "Profiling CUDA graph memory" in msg else ""):
            self.largest.setdefault(mode, int(largest))
        if (m := _GRAPH_MODE.search(msg)) and m.group(1) not in {g.mode for g in self.samples}:
            self.samples.append(GraphSample(m.group(1), float(m.group(2)), int(m.group(3)), float(m.group(4)),
                                            None, number))
        if (m := _GRAPH_TOTAL.search(msg)) and "graph_estimate_gib" not in self.found:
            self.found["graph_estimate_gib"] = Seen(float(m.group(1)), number, process)

    def errors(self, msg: str) -> None:
        if m := _FREE_ERROR.search(msg):
            self.found["free_memory_error"] = tuple(float(m.group(i)) for i in range(2, 6))
        if m := _TOO_SMALL.search(msg):
            self.found["kv_too_small"] = (
                int(m.group(1)), float(m.group(2)), float(m.group(3)), int(m.group(4)) if m.group(4) else None,
            )
        if _NO_MEMORY in msg:
            self.found["no_kv_memory"] = True

    def log(self, lines: int) -> StartLog:
        return StartLog(
            model_loading_gib=tuple(self.loading),
            available_kv_gib=tuple(self.available),
            graph_capture_gib=tuple(self.graphs),
            graph_pool_estimated_gib=tuple(self.pools),
            summaries=tuple(self.summaries),
            graph_samples=tuple(replace(g, largest=self.largest.get(g.mode)) for g in self.samples),
            lines_read=lines,
            **self.found,  # type: ignore[arg-type]
        )


def _summary(m: re.Match[str], msg: str, number: int, process: str | None) -> MemorySummary:
    usage = _SUMMARY_USAGE.search(msg)
    suggested = _SUGGESTED.findall(msg)
    in_use = _IN_USE.search(msg)
    return MemorySummary(
        free_gib=float(m.group(1)),
        total_gib=float(m.group(2)),
        utilization=float(m.group(3)),
        requested_gib=float(m.group(4)),
        consumed_gib=float(usage.group(1)) if usage else None,
        activation_gib=float(usage.group(2)) if usage else None,
        cudagraph_gib=float(usage.group(3)) if usage else None,
        kv_bytes_to_requested_limit=int(suggested[0]) if suggested else None,
        kv_bytes_to_gpu_limit=int(suggested[1]) if len(suggested) > 1 else None,
        kv_in_use_gib=float(in_use.group(1)) if in_use else None,
        line=number,
        process=process,
    )


def other_model(log: StartLog, names: tuple[str, ...]) -> str | None:
    """Why the log is not from the profile's model (None when it is, or when the log does not say).

    `names` are the profile's model name and its facts key; a local copy counts when its last path part
    is the same checkpoint's (/models/Qwen3.6-27B-INT8-MTP for havenoammo/Qwen3.6-27B-INT8-MTP).
    """
    if log.model is None:
        return None
    tail = log.model.rstrip("/").rsplit("/", 1)[-1]
    if any(log.model == n or tail == n.rstrip("/").rsplit("/", 1)[-1] for n in names if n):
        return None
    shown = log.model if len(log.model) <= 120 and log.model.isprintable() else repr(log.model[:117]) + "..."
    return f"the log is from model {shown}, but the profile serves {names[0]}: calibrate a log against the profile that started it"


@dataclass(frozen=True)
class Row:
    """One predicted-against-actual line; `ok` is None where no tolerance applies."""

    quantity: str
    unit: str
    predicted: float
    actual: float
    tolerance: float
    source: str  # the log line number(s)
    ok: bool | None = field(default=None)

    @property
    def delta(self) -> float:
        return self.actual - self.predicted


def _row(quantity: str, unit: str, predicted: float, actual: float, tolerance: float, source: str) -> Row:
    return Row(quantity, unit, predicted, actual, tolerance, source, abs(actual - predicted) <= tolerance + 1e-9)


# format_gib rounds to 0.01 GiB: half of that is the log's own resolution.
_LOG_GIB = 0.005


def compare(result: FitResult, log: StartLog) -> list[Row]:
    """Predicted against actual for every quantity the log states.

    Tolerances: the estimate's own ± for memory terms (plus the log's 0.01 GiB rounding);
    zero for the KV geometry, which is exact (docs/memory-model.md#kv-geometry).
    """
    return _layout_rows(result, log) + _kv_rows(result, log) + _summary_rows(result, log) + _error_rows(result, log)


def _layout_rows(r: FitResult, log: StartLog) -> list[Row]:
    rows: list[Row] = []
    if log.block_size_tokens is not None:
        rows.append(_row("attention block size", "tokens", r.block_size_tokens, log.block_size_tokens.value, 0,
                         f"line {log.block_size_tokens.line}"))
    if log.mamba_padding_pct is not None:
        rows.append(_row("mamba page padding", "%", round(r.mamba_padding_pct, 2), log.mamba_padding_pct.value,
                         0.01, f"line {log.mamba_padding_pct.line}"))
    if log.model_loading_gib:
        worst = max(log.model_loading_gib, key=lambda s: s.value)
        rows.append(_row("weights (Model loading took)", "GiB", r.weights.bytes / GIB, worst.value,
                         r.weights.uncertainty_bytes / GIB + _LOG_GIB, f"line {worst.line}"))
    return rows


def _kv_rows(r: FitResult, log: StartLog) -> list[Row]:
    rows: list[Row] = []
    L = r.inputs.max_model_len
    g = GIB
    if log.available_kv_gib:
        least = min(log.available_kv_gib, key=lambda s: s.value)
        rows.append(_row("available KV cache", "GiB", r.kv_available.bytes / g, least.value,
                         r.uncertainty_bytes / g + _LOG_GIB, f"line {least.line}"))
        # Geometry check: the pool vLLM would build from its own K with our block layout.
        k_actual = least.value * g
        blocks = math.floor(k_actual / r.bytes_per_block)
        slack_blocks = _LOG_GIB * g / r.bytes_per_block + 1
        if log.kv_cache_tokens is not None:
            rows.append(_row("KV tokens from actual K (geometry)", "tokens", int(blocks / r.blocks_per_request * L),
                             log.kv_cache_tokens.value, slack_blocks / r.blocks_per_request * L,
                             f"lines {least.line}, {log.kv_cache_tokens.line}"))
    blocks_sigma = r.uncertainty_bytes / r.bytes_per_block + 1
    if log.kv_cache_tokens is not None:
        rows.append(_row("GPU KV cache size", "tokens", r.kv_cache_tokens, log.kv_cache_tokens.value,
                         blocks_sigma / r.blocks_per_request * L, f"line {log.kv_cache_tokens.line}"))
    if log.max_concurrency is not None:
        if log.concurrency_max_len not in (None, L):
            rows.append(Row("max_model_len of the log", "tokens", L, float(log.concurrency_max_len or 0), 0,
                            f"line {log.max_concurrency.line}", False))
        rows.append(_row(f"concurrency at {L:,}", "x", round(r.concurrency_at_max_len, 2), log.max_concurrency.value,
                         blocks_sigma / r.blocks_per_request + 0.005, f"line {log.max_concurrency.line}"))
    return rows


def _summary_rows(r: FitResult, log: StartLog) -> list[Row]:
    rows: list[Row] = []
    g = GIB
    # G models vLLM's own estimate, the amount it subtracts before sizing the KV cache
    # (v1/worker/gpu_worker.py::Worker.determine_available_memory); where the log states that estimate
    # ("CUDA graph pool memory: X GiB (actual), Y GiB (estimated)") G is checked against it and the real
    # capture, which comes out of the memory above the budget, is shown without a verdict.
    estimate = max(log.graph_pool_estimated_gib, key=lambda s: s.value) if log.graph_pool_estimated_gib else None
    if estimate is not None:
        rows.append(_row("CUDA graphs (vLLM's estimate)", "GiB", r.cudagraph.bytes / g, estimate.value,
                         r.cudagraph.uncertainty_bytes / g + _LOG_GIB, f"line {estimate.line}"))
    if log.graph_capture_gib:
        worst = max(log.graph_capture_gib, key=lambda s: s.value)
        capture = _row("CUDA graphs (capture took)", "GiB", r.cudagraph.bytes / g, worst.value,
                       r.cudagraph.uncertainty_bytes / g + _LOG_GIB, f"line {worst.line}")
        rows.append(capture if estimate is None else replace(capture, tolerance=0.0, ok=None))
    for s in log.summaries[:1]:
        src = f"line {s.line}"
        rows.append(_row("CUDA total", "GiB", r.inputs.total_memory_bytes / g, s.total_gib,
                         r.inputs.total_memory_uncertainty_bytes / g + _LOG_GIB, src))
        rows.append(_row("budget R", "GiB", r.budget.bytes / g, s.requested_gib,
                         r.budget.uncertainty_bytes / g + _LOG_GIB, src))
        if s.consumed_gib is not None:
            sigma = math.hypot(r.weights.uncertainty_bytes, r.persistent.uncertainty_bytes) / g
            rows.append(_row("consumed W + P", "GiB", (r.weights.bytes + r.persistent.bytes) / g, s.consumed_gib,
                             sigma + _LOG_GIB, src))
        if s.activation_gib is not None:
            # vLLM's "peak activation" is the profile-run peak plus the CUDA-graph estimate.
            sigma = math.hypot(r.activation.uncertainty_bytes, r.cudagraph.uncertainty_bytes) / g
            rows.append(_row("peak activation A + G", "GiB", (r.activation.bytes + r.cudagraph.bytes) / g,
                             s.activation_gib, sigma + _LOG_GIB, src))
    return rows


def _error_rows(r: FitResult, log: StartLog) -> list[Row]:
    rows: list[Row] = []
    g = GIB
    if log.kv_too_small is not None:
        length, needed, avail, vllm_max = log.kv_too_small
        rows.append(_row("KV for one request (vLLM error)", "GiB", r.bytes_per_request / g, needed, _LOG_GIB, "error"))
        rows.append(_row("usable KV (vLLM error)", "GiB", (r.kv_available.bytes - r.bytes_per_block) / g, avail,
                         r.uncertainty_bytes / g + _LOG_GIB, "error"))
        if vllm_max is not None:
            rows.append(_row("largest max_model_len (vLLM)", "tokens", r.max_model_len_fit, vllm_max,
                             (r.uncertainty_bytes / r.bytes_per_block + 1) * r.block_size_tokens, "error"))
    return rows


def _fmt(x: float, tokens: bool) -> str:
    return f"{x:,.0f}" if tokens else f"{x:.2f}"


def format_rows(rows: list[Row]) -> str:
    """A plain table: quantity, predicted, actual, delta, tolerance, verdict."""
    if not rows:
        return "no memory lines found in the log"
    head = f"{'quantity':<36}{'unit':>7}{'predicted':>14}{'actual':>14}{'delta':>12}{'±tol':>12}  "
    out = [head + "ok", "-" * (len(head) + 4)]
    for row in rows:
        verdict = {True: "yes", False: "NO", None: "-"}[row.ok]
        tokens = row.unit == "tokens"
        out.append(
            f"{row.quantity:<36}{row.unit:>7}{_fmt(row.predicted, tokens):>14}{_fmt(row.actual, tokens):>14}"
            f"{_fmt(row.delta, tokens):>12}{_fmt(row.tolerance, tokens):>12}  {verdict}"
        )
    return "\n".join(out)
