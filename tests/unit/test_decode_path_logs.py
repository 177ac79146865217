"""The decode-path tables predict what vLLM logged in every committed GPU start (issue 24).

Each start's log is read as it is: the `launcher: start:` command (attention backend, KV dtype, MTP, batch limits,
eager), vLLM's version line, the GPU's compute capability from the inventory captured with it, and what vLLM said
about its CUDA graphs: the spec-decode downgrade warning, `Profiling CUDA graph memory: PIECEWISE=n (largest=m),
FULL=n (largest=m)` (the graphs of each mode, V1 runner) and the engine config's `cudagraph_capture_sizes`.
A new start is picked up by dropping its directory (serve.log + an inventory) under tests/fixtures/gpu-*/.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from launcher.engine.decode_path import capture_sizes, decode_path
from launcher.fit.estimate import FitInput, batch_defaults
from tests.helpers import FIXTURES

START_LOGS = sorted(
    [*FIXTURES.glob("gpu-fullshape/runs/*/serve.log"), *FIXTURES.glob("gpu-*/runs/*/serve.log"),
     *FIXTURES.glob("gpu-e2e/serve-log-excerpt.txt")]
)
START_LOGS = sorted(set(START_LOGS))
BENCH_LOGS = sorted(FIXTURES.glob("gpu-bench/**/logs/*.log"))

_DOWNGRADE = re.compile(r"CUDAGraphMode\.(\w+) is not supported with spec-decode for attention backend (\w+) "
                        r"\(support: AttentionCGSupport\.(\w+)\); setting cudagraph_mode=(\w+)")
_PROFILING = re.compile(r"Profiling CUDA graph memory: (PIECEWISE|FULL)=(\d+) \(largest=(\d+)\)(?:, (PIECEWISE|FULL)=(\d+) \(largest=(\d+)\))?")
_VERSION = re.compile(r"Initializing a V1 LLM engine \(v([^)]+)\)")
_SIZES = re.compile(r"'cudagraph_capture_sizes': \[([0-9, ]*)\]")


def _inventory_cc(log: Path) -> tuple[tuple[int, int], dict]:
    for folder in (log.parent, *log.parents):
        found = sorted(folder.glob("inventory*.json"))
        if found:
            gpu = json.loads(found[0].read_text(encoding="utf-8"))["gpus"][0]
            return (int(gpu["compute_capability"][0]), int(gpu["compute_capability"][1])), gpu
        if folder == FIXTURES:
            break
    raise AssertionError(f"{log}: no inventory*.json beside the start to say which GPU it ran on")


def _command(text: str, log: Path) -> dict[str, str]:
    """The `vllm serve` arguments: `command.txt` beside the log when there is one (an excerpt's start line may be cut),
    else the log's `launcher: start:` line."""
    beside = log.parent / "command.txt"
    if beside.is_file():
        line = beside.read_text(encoding="utf-8").strip()
    else:
        line = next(ln for ln in text.splitlines() if "launcher: start:" in ln).split("launcher: start:", 1)[1]
    argv = shlex.split(line)
    args: dict[str, str] = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            args[a] = "" if nxt.startswith("--") else nxt
    return args


def _predicted(log: Path):
    text = log.read_text(encoding="utf-8", errors="replace")
    args = _command(text, log)
    version = _VERSION.search(text).group(1)  # type: ignore[union-attr]
    cc, gpu = _inventory_cc(log)
    spec = json.loads(args.get("--speculative-config", "{}") or "{}")
    k = int(spec.get("num_speculative_tokens", 0)) if spec.get("method") == "mtp" else 0
    nvml_total = int(gpu.get("memory_total_bytes") or 0)
    default_m, default_n = batch_defaults(FitInput(total_memory_bytes=nvml_total, compute_capability=cc, gpu_name=gpu["name"],
                                                   nvml_total_memory_bytes=nvml_total))
    n = int(args.get("--max-num-seqs") or default_n)
    m = int(args.get("--max-num-batched-tokens") or default_m)
    length = int(args.get("--max-model-len") or 1 << 30)
    if "--max-num-batched-tokens" not in args:
        m = min(n * length, m)
    path = decode_path(version, cc, args.get("--attention-backend"), args.get("--kv-cache-dtype", "auto"), k, n, m,
                       enforce_eager="--enforce-eager" in args)
    return text, path, (version, cc, k, n, m)


def test_there_are_starts_to_check() -> None:
    assert len(START_LOGS) >= 6, START_LOGS


@pytest.mark.parametrize("log", START_LOGS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_tables_predict_the_logged_cudagraph_mode_and_graphs(log: Path) -> None:
    text, path, (version, cc, k, n, m) = _predicted(log)
    downgrades = {g.groups() for g in _DOWNGRADE.finditer(text)}
    profiling = [g.groups() for g in _PROFILING.finditer(text)]
    assert downgrades or profiling, f"{log}: vLLM said nothing about its CUDA-graph mode"
    if downgrades:
        (asked, backend, support, resolved), = downgrades
        assert (path.downgraded, path.mode, path.support_backend, path.support) == (True, resolved, backend, support)
        assert path.reason in text
    else:
        assert not path.downgraded
    for groups in profiling:
        logged = {groups[0]: (int(groups[1]), int(groups[2]))}
        if groups[3]:
            logged[groups[3]] = (int(groups[4]), int(groups[5]))
        mode = "FULL_AND_PIECEWISE" if set(logged) == {"PIECEWISE", "FULL"} else next(iter(logged))
        assert path.mode == mode
        assert logged["PIECEWISE"] == (path.piecewise_graphs, path.largest)
        if "FULL" in logged:
            assert logged["FULL"][0] == path.full_graphs
    sizes = _SIZES.search(text)
    if sizes:  # the engine config's list, before any spec-decode rounding
        logged_sizes = [int(s) for s in sizes.group(1).split(",") if s.strip()]
        assert logged_sizes == capture_sizes(version, cc, k, n, m)


def test_bench_logs_hold_no_start_of_their_own() -> None:
    """The bench logs are the client's output; the servers they measured are the starts above (meta.json names the
    profile): a bench log that ever carries a start must be added to START_LOGS."""
    assert BENCH_LOGS
    for log in BENCH_LOGS:
        text = log.read_text(encoding="utf-8", errors="replace")
        assert not _VERSION.search(text) and "Profiling CUDA graph memory" not in text, log
    profiles = {json.loads(p.read_text())["profile"] for p in FIXTURES.glob("gpu-bench/*/meta.json")}
    started = {p.stem for p in FIXTURES.glob("gpu-fullshape/profiles/*.yaml")}
    assert profiles <= started
