#!/usr/bin/env python3
"""Median wall time of launcher commands from a clean process (not a test: numbers for the notes).

Usage: python tools/bench_render.py [--runs N] [-- COMMAND ARGS...]
Default: `launcher render --profile dual-3090 --format json`. Also reports which heavy modules the
render path imported (it must import none of pynvml, vllm, torch, openai, httpx).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("pynvml", "vllm", "torch", "openai", "httpx", "requests")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("command", nargs="*", default=["render", "--profile", "dual-3090", "--format", "json"])
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "launcher", *args.command]
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    probe = (
        "import sys, runpy; sys.argv=['launcher', *%r]\n"
        "try:\n    runpy.run_module('launcher', run_name='__main__')\nexcept SystemExit: pass\n"
        "print('\\nHEAVY=' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (args.command, HEAVY)
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    heavy = out.rsplit("HEAVY=", 1)[-1].strip()
    baseline = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - start)
    print(json.dumps({
        "command": "launcher " + " ".join(args.command),
        "runs": args.runs,
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "python_startup_median_s": round(statistics.median(baseline), 4),
        "heavy_modules_imported": heavy.split(",") if heavy else [],
    }, indent=2))


if __name__ == "__main__":
    main()
