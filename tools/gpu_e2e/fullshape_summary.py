#!/usr/bin/env python3
"""Every number of the full-shape starts, read from what tools/gpu_e2e/run_fullshape.sh brought back.

    python3 tools/gpu_e2e/fullshape_summary.py RESULTS_DIR [--bench DIR] [--out summary.json]

RESULTS_DIR holds the unpacked tarballs: runs/NAME/{serve.log, nvml-before.csv, nvml-ready.csv,
nvml-timeline.csv, state.json}, context-overhead.json, budget-*.json, inventory.json. Per start
it reads vLLM 0.25.1's own lines (INFO and the DEBUG ones the profiles switch on), per worker:

  worker init memory snapshot      free / total / used (context + NCCL + cuBLAS) at the snapshot
  worker requested memory          ceil(total x gpu_memory_utilization)
  Model loading took               weights
  Memory profiling takes ...       torch peak increase (activation), non-torch increase, non-KV total
  Available KV cache memory        what the KV cache gets
  CUDA graph pool memory / Graph capturing finished   graph memory, estimated and captured
  Free memory on device ... Actual usage is ...      the post-start summary (DEBUG in 0.25.1)
and the engine's `GPU KV cache size: N tokens`, `Maximum concurrency`, block size and padding;
plus NVML before the start, at readiness and the peak of the 0.5 s timeline. Values are GiB as
vLLM prints them (two decimals) unless the key ends in _bytes or _mib.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

NUM = r"-?\d+(?:\.\d+)?"
PREFIX = re.compile(r"^\((?P<proc>[^()]*?)\s+pid=(?P<pid>\d+)\)\s+")
LEVEL = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d\s+[\d:.]+\s+\[[^\]]+\]\s+")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

PER_RANK: list[tuple[str, re.Pattern[str], tuple[str, ...]]] = [
    ("init_snapshot", re.compile(
        rf"worker init memory snapshot: torch_peak=({NUM})GiB, free_memory=({NUM})GiB, total_memory=({NUM})GiB, "
        rf"cuda_memory=({NUM})GiB, torch_memory=({NUM})GiB, non_torch_memory=({NUM})GiB"),
     ("torch_peak_gib", "free_gib", "total_gib", "used_gib", "torch_gib", "non_torch_gib")),
    ("requested", re.compile(rf"worker requested memory: ({NUM})GiB"), ("requested_gib",)),
    ("model_loading", re.compile(rf"Model loading took ({NUM}) GiB(?: memory)? and ({NUM}) seconds"), ("weights_gib", "seconds")),
    ("profile", re.compile(
        rf"Memory profiling takes ({NUM}) seconds\. Total non KV cache memory: ({NUM})GiB; torch peak memory increase: "
        rf"({NUM})GiB; non-torch forward increase memory: ({NUM})GiB; weights memory: ({NUM})GiB"),
     ("seconds", "non_kv_total_gib", "torch_peak_increase_gib", "non_torch_increase_gib", "weights_gib")),
    ("free_after_profiling", re.compile(rf"Free memory after profiling: ({NUM}) GiB \(total\), ({NUM}) GiB \(within requested\)"),
     ("total_gib", "within_requested_gib")),
    ("available_kv", re.compile(rf"Available KV cache memory: ({NUM}) GiB"), ("gib",)),
    ("cudagraph_estimate", re.compile(rf"Estimated (\w+) CUDA graph memory: ({NUM}) MiB first-capture \+ \((\d+)-1\) × ({NUM}) MiB per-graph"),
     ("mode", "first_capture_mib", "graphs", "per_graph_mib")),
    ("cudagraph_pool", re.compile(rf"CUDA graph pool memory: ({NUM}) GiB \(actual\), ({NUM}) GiB \(estimated\)"),
     ("actual_gib", "estimated_gib")),
    ("graph_capture", re.compile(rf"Graph capturing finished in ({NUM}) secs?, took ({NUM}) GiB"), ("seconds", "gib")),
    ("summary", re.compile(
        rf"Free memory on device \(({NUM})/({NUM}) GiB\) on startup\. Desired GPU memory utilization is \(({NUM}), ({NUM}) GiB\)\. "
        rf"Actual usage is ({NUM}) GiB for weight, ({NUM}) GiB for peak activation, ({NUM}) GiB for non-torch memory, "
        rf"and ({NUM}) GiB for CUDAGraph memory\. Replace gpu_memory_utilization config with `--kv-cache-memory=(-?\d+)`.*?"
        rf"`--kv-cache-memory=(-?\d+)`.*?Current kv cache memory in use is ({NUM}) GiB"),
     ("free_gib", "total_gib", "utilization", "requested_gib", "weights_gib", "peak_activation_gib", "non_torch_gib",
      "cudagraph_gib", "kv_cache_memory_to_requested_bytes", "kv_cache_memory_to_gpu_bytes", "kv_in_use_gib")),
    ("profiling_run", re.compile(rf"Initial profiling/warmup run took ({NUM}) s"), ("seconds",)),
]
ENGINE: list[tuple[str, re.Pattern[str], tuple[str, ...]]] = [
    ("kv_cache_tokens", re.compile(r"GPU KV cache size: ([\d,]+) tokens"), ("tokens",)),
    ("max_concurrency", re.compile(rf"Maximum concurrency for ([\d,]+) tokens per request: ({NUM})x"), ("max_model_len", "x")),
    ("block_size", re.compile(r"Setting attention block size to (\d+) tokens"), ("tokens",)),
    ("mamba_padding", re.compile(rf"Padding mamba page size by ({NUM})%"), ("pct",)),
    ("init_engine", re.compile(rf"init engine \(profile, create kv cache, warmup model\) took ({NUM}) s(?: \(compilation: ({NUM}) s\))?"),
     ("seconds", "compilation_seconds")),
    ("cudagraph_mode", re.compile(r"setting cudagraph_mode=(\w+)"), ("mode",)),
    ("version", re.compile(r"Initializing a V1 LLM engine \(v([^)]+)\)"), ("version",)),
    ("ready", re.compile(rf"^launcher: ready after ({NUM}) s"), ("seconds",)),
    ("smoke", re.compile(r"^result: (\w+): (.*)$"), ("result", "detail")),
]
ERRORS = re.compile(r"(ValueError|RuntimeError|OutOfMemoryError|torch\.OutOfMemoryError|CUDA out of memory|No available memory)[^\n]*")


def _value(text: str) -> Any:
    if re.fullmatch(r"-?\d+", text.replace(",", "")):
        return int(text.replace(",", ""))
    try:
        return float(text)
    except ValueError:
        return text


def parse_log(text: str) -> dict[str, Any]:
    by_pid: dict[str, dict[str, Any]] = {}
    proc_names: dict[str, str] = {}  # pid -> its last name ("Worker" becomes "Worker_TP0" once ranked)
    engine: dict[str, Any] = {}
    errors: list[str] = []
    command = None
    for raw in text.splitlines():
        line = ANSI.sub("", raw)
        m = PREFIX.match(line)
        proc = m.group("proc") if m else ""
        pid = m.group("pid") if m else "0"
        if proc:
            proc_names[pid] = proc
        msg = LEVEL.sub("", line[m.end():] if m else line)
        if msg.startswith("launcher: start: "):
            command = msg[len("launcher: start: "):]
        for key, pattern, names in PER_RANK:
            if hit := pattern.search(msg):
                entry = by_pid.setdefault(pid, {})
                values = dict(zip(names, (_value(g) if g is not None else None for g in hit.groups()), strict=True))
                if key in entry and key == "cudagraph_estimate":
                    entry[key] = entry[key] if isinstance(entry[key], list) else [entry[key]]
                    entry[key].append(values)
                else:
                    entry[key] = values
        for key, pattern, names in ENGINE:
            if hit := pattern.search(msg):
                engine[key] = dict(zip(names, (_value(g) if g is not None else None for g in hit.groups()), strict=True))
        if (hit := ERRORS.search(msg)) and (" ERROR " in line or "Error" in msg):
            if hit.group(0) not in errors:
                errors.append(hit.group(0)[:400])
    ranks = {proc_names.get(pid, "main"): entry for pid, entry in by_pid.items()}
    return {"command": command, "ranks": dict(sorted(ranks.items())), "engine": engine, "errors": errors[:10]}


def read_nvsmi(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = list(csv.reader(path.read_text().splitlines()))
    head = [h.strip().split(" [")[0].replace("memory.", "") for h in rows[0]]
    out = []
    for row in rows[1:]:
        rec = dict(zip(head, (c.strip() for c in row), strict=False))
        out.append({"index": int(rec["index"]), "name": rec.get("name"),
                    **{f"{k}_mib": int(rec[k]) for k in ("total", "reserved", "used", "free") if k in rec}})
    return out


def timeline_peak(path: Path) -> dict[str, Any]:
    peaks: dict[int, int] = {}
    samples = 0
    if path.is_file():
        for row in csv.reader(path.read_text().splitlines()):
            if len(row) != 3:
                continue
            try:
                index, used = int(row[1]), int(row[2])
            except ValueError:
                continue
            samples += 1
            peaks[index] = max(peaks.get(index, 0), used)
    return {"samples": samples, "peak_used_mib": {str(k): v for k, v in sorted(peaks.items())}}


BENCH_KEYS = ("completed", "num_prompts", "max_concurrency", "duration", "total_input_tokens", "total_output_tokens",
              "request_throughput", "output_throughput", "total_token_throughput", "mean_ttft_ms", "median_ttft_ms",
              "p90_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p90_tpot_ms", "p99_tpot_ms", "median_itl_ms",
              "p90_itl_ms", "p99_itl_ms", "median_e2el_ms", "p90_e2el_ms", "p99_e2el_ms")
COUNTERS = ("vllm:spec_decode_num_drafts_total", "vllm:spec_decode_num_draft_tokens_total",
            "vllm:spec_decode_num_accepted_tokens_total", "vllm:generation_tokens_total", "vllm:prompt_tokens_total")


def counters(path: Path) -> dict[str, float]:
    text = path.read_text() if path.is_file() else ""
    out = {}
    for name in COUNTERS:
        values = re.findall(r"^" + re.escape(name) + r"(?:\{[^}]*\})? ([0-9.eE+-]+)$", text, re.M)
        out[name.split(":", 1)[1]] = sum(float(v) for v in values)
    return out


def bench(label_dir: Path) -> dict[str, Any]:
    """One bench label: meta.json and, per level, vllm bench serve's numbers and the /metrics deltas."""
    out: dict[str, Any] = {"meta": json.loads((label_dir / "meta.json").read_text()), "levels": {}}
    for result in sorted(label_dir.glob("c*.json"), key=lambda p: int(p.stem[1:])):
        data = json.loads(result.read_text())
        before, after = counters(label_dir / f"{result.stem}.metrics-before.txt"), counters(label_dir / f"{result.stem}.metrics-after.txt")
        delta = {k: after[k] - before[k] for k in after}
        drafts, accepted = delta["spec_decode_num_drafts_total"], delta["spec_decode_num_accepted_tokens_total"]
        out["levels"][result.stem] = {
            **{k: data.get(k) for k in BENCH_KEYS},
            "metrics_delta": delta,
            "draft_acceptance_rate": accepted / delta["spec_decode_num_draft_tokens_total"] if drafts else None,
            "mean_acceptance_length": 1 + accepted / drafts if drafts else None,
        }
    return out


def summarize(root: Path, bench_root: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"about": (__doc__ or "").split("\n\n")[0], "starts": {}}
    ctx = root / "context-overhead.json"
    if ctx.is_file():
        out["context_overhead"] = json.loads(ctx.read_text())
    out["budgets"] = {p.stem: json.loads(p.read_text()) for p in sorted(root.glob("budget-*.json"))}
    for run in sorted((root / "runs").glob("*")):
        if not run.is_dir():
            continue
        entry: dict[str, Any] = {}
        state = run / "state.json"
        if state.is_file():
            entry["state"] = json.loads(state.read_text())
        log = run / "serve.log"
        if log.is_file():
            entry.update(parse_log(log.read_text(errors="replace")))
        entry["nvml_before"] = read_nvsmi(run / "nvml-before.csv")
        entry["nvml_ready"] = read_nvsmi(run / "nvml-ready.csv")
        entry["nvml_timeline"] = timeline_peak(run / "nvml-timeline.csv")
        out["starts"][run.name] = entry
    bench_root = bench_root or root / "bench"
    out["bench"] = {d.name: bench(d) for d in sorted(bench_root.glob("*")) if (d / "meta.json").is_file()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--bench", type=Path, help="folder of bench labels (default: ROOT/bench)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    text = json.dumps(summarize(args.root, args.bench), indent=1, sort_keys=True) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
