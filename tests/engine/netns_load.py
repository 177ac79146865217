"""launcher.live.load.Load as its own process, for a server that only a network namespace can reach.

    nsenter --target PID --net -- python tests/engine/netns_load.py URL MODEL OUT.json [--streaming 8] [--plain 8]
        [--timeout 120] [--duration 900]

Prints "completed N" once a second on stdout; on SIGTERM (or at --duration) it stops the load (each request
in flight ends by its answer, an error or its own deadline) and writes every Result to OUT.json. Times are
time.monotonic(), one clock for every process of the machine, so the caller can split them at its fault time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launcher.live.load import Load, Result  # noqa: E402


def read_results(path: Path) -> list[Result]:
    return [Result(**row) for row in json.loads(path.read_text())]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--streaming", type=int, default=8)
    ap.add_argument("--plain", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--duration", type=float, default=900.0)
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    load = Load(args.url, args.model, streaming=args.streaming, plain=args.plain, timeout=args.timeout,
                duration=args.duration).start()
    while not stop.is_set() and load.alive():
        print(f"completed {load.completed()}", flush=True)
        stop.wait(1.0)
    results = load.stop()
    Path(args.out).write_text(json.dumps([dataclasses.asdict(r) for r in results]))
    print(f"done {len(results)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
