#!/usr/bin/env python3
"""Soak a running local vLLM server: a bounded run of chat requests, then requests/s, errors, latency and RSS over time.

Usage:
  python tools/soak.py --url http://127.0.0.1:8000 --minutes 10 [--streaming 8] [--plain 8] [--pid PID] [--json out.json]

`--streaming`/`--plain` requests are kept in flight (the mix), each with its own `--request-timeout`; no
request starts after `--minutes`, and none after `--max-requests`. `--pid` (vLLM's API server; the
process `launcher serve` exec'd, or the pid `serve --wait` prints) adds the resident memory of it and
every process below it, sampled every `--rss-every` seconds. Loopback addresses only.
Exit 0 when no request failed or hung, 1 otherwise, 2 on bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.errors import LauncherError  # noqa: E402
from launcher.live.load import DEFAULT_MAX_TOKENS, Load, RssSampler, summary  # noqa: E402
from launcher.live.readiness import http_get  # noqa: E402


def served_model(url: str) -> str:
    status, body = http_get(f"{url}/v1/models", 10)
    if status != 200:
        raise LauncherError(f"{url}/v1/models answered {status}")
    return str(json.loads(body)["data"][0]["id"])


def soak(url: str, minutes: float, streaming: int, plain: int, *, model: str | None = None, pid: int | None = None,
         request_timeout: float = 120.0, max_tokens: int = DEFAULT_MAX_TOKENS, max_requests: int = 1_000_000,
         rss_every: float = 5.0, report_every: float = 60.0, echo: Any = None) -> dict[str, Any]:
    """Run the soak; the report (see the module docstring)."""
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    model = model or served_model(url)
    duration = minutes * 60
    sampler = RssSampler(pid, rss_every).start() if pid else None
    load = Load(url, model, streaming=streaming, plain=plain, timeout=request_timeout, max_tokens=max_tokens,
                duration=duration, max_requests=max_requests).start()
    t0 = load.started_at
    windows: list[dict[str, Any]] = []
    try:
        while load.alive() and time.monotonic() - t0 < duration + request_timeout + 30:
            time.sleep(min(report_every, max(0.5, duration + request_timeout + 30 - (time.monotonic() - t0))))
            now = time.monotonic()
            window = summary(load.results, since=now - report_every, until=now)
            window["t_s"] = round(now - t0)
            if sampler and sampler.samples:
                window["rss_mib"] = round(sampler.samples[-1][1] / 2**20)
            windows.append(window)
            say(f"soak: {window['t_s']:5d} s: {window['completed']} ok, {window['errors']} errors, {window['hung']} hung, "
                f"{window['requests_per_s']} req/s, p50 {window['latency_s']['p50']} s"
                + (f", RSS {window['rss_mib']} MiB" if "rss_mib" in window else ""))
    finally:
        results = load.stop()
        samples = sampler.stop() if sampler else []
    # The mix kept in flight under its own key: summary()'s "streaming" counts the streaming requests that ran.
    report: dict[str, Any] = {"url": url, "model": model, "minutes": minutes,
                              "in_flight": {"streaming": streaming, "plain": plain},
                              "max_tokens": max_tokens, "request_timeout_s": request_timeout, **summary(results),
                              "windows": windows}
    if samples:
        mib = [round(b / 2**20) for _, b in samples]
        report["rss_mib"] = {"first": mib[0], "last": mib[-1], "min": min(mib), "max": max(mib),
                             "growth": mib[-1] - mib[0],
                             "series": [[t, m] for (t, _), m in zip(samples, mib, strict=True)]}
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--streaming", type=int, default=8, help="streaming chat requests kept in flight")
    ap.add_argument("--plain", type=int, default=8, help="non-streaming chat requests kept in flight")
    ap.add_argument("--model", default=None, help="served model name (default: the first /v1/models lists)")
    ap.add_argument("--pid", type=int, default=None, help="vLLM's API server pid, for RSS over time")
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    ap.add_argument("--rss-every", type=float, default=5.0)
    ap.add_argument("--report-every", type=float, default=60.0)
    ap.add_argument("--json", dest="json_out", default=None, help="write the report here")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.request_timeout <= 0 or args.max_requests < 1:
        ap.error("--minutes, --request-timeout and --max-requests must be positive")
    try:
        report = soak(args.url, args.minutes, args.streaming, args.plain, model=args.model, pid=args.pid,
                      request_timeout=args.request_timeout, max_tokens=args.max_tokens, max_requests=args.max_requests,
                      rss_every=args.rss_every, report_every=args.report_every)
    except LauncherError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"soak: {args.url}: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=1)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    short = {k: v for k, v in report.items() if k != "windows"}
    if "rss_mib" in short:
        short["rss_mib"] = {k: v for k, v in short["rss_mib"].items() if k != "series"}
    print(json.dumps(short, indent=1))
    return 0 if report["errors"] == 0 and report["hung"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
