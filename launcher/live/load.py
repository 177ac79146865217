"""A bounded load client: N streaming and M non-streaming chat requests kept in flight against a local server.

Used by `tools/soak.py` and by the fault tests (tests/engine/test_faults_cpu.py) to answer, per fault:
how many requests completed, how many ended with a clean error, and how many hung past their timeout.
Every request has its own deadline (the socket's timeout is the time left, so a server that stops
answering mid-stream cannot hold a request longer); every worker loop is bounded in count and time;
only loopback addresses (127.0.0.0/8, ::1, localhost) are accepted.

Outcomes:
- `ok`: HTTP 200 and a complete answer (a non-streaming body with choices; a stream that reached `data: [DONE]`).
- `error`: the request ended before its deadline without an answer: refused or reset connection, a
  non-200 status, an error chunk in the stream, a stream cut before `[DONE]`. Clean: the client knows.
- `hung`: its deadline passed with no end (no answer, or a stream that stopped moving).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import math
import os
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from launcher.errors import ProfileError

OK, ERROR, HUNG = "ok", "error", "hung"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_TOKENS = 32
RETRY_PAUSE_S = 0.25  # after a failed request, before the worker's next one (a refused port is answered at once)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
PROMPTS = (
    "Count from one to twenty in words.",
    "Name the planets of the solar system, one per line.",
    "Write a haiku about a server that never sleeps.",
    "Explain in two sentences what a load test is.",
)


@dataclass(frozen=True)
class Result:
    """One request: what it was, when it ran (monotonic seconds), how it ended."""

    worker: int
    stream: bool
    started: float
    ended: float
    outcome: str  # OK, ERROR or HUNG
    status: int | None = None  # the HTTP status, when one came
    detail: str = ""  # why it was not ok, in a few words
    tokens: int = 0  # completion tokens (usage), or stream chunks with content

    @property
    def latency(self) -> float:
        return self.ended - self.started


def check_loopback(url: str) -> tuple[str, int]:
    """(host, port) of `url`; ProfileError unless it is http:// on a loopback address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ProfileError(f"--url: {url!r}: expected http://HOST:PORT on loopback")
    host = parts.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ProfileError(f"--url: {host} is not a loopback address: the load client only talks to this machine")
    return host, parts.port or 80


def one_request(host: str, port: int, model: str, *, stream: bool, timeout: float, max_tokens: int, prompt: str,
                worker: int = 0, api_key: str | None = None, clock: Callable[[], float] = time.monotonic) -> Result:
    """One chat completion, ended by its answer, a clean error or its deadline (`timeout` seconds from now)."""
    started = clock()
    deadline = started + timeout
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": max_tokens, "temperature": 0.7}
    if stream:
        body["stream"] = True
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def done(outcome: str, status: int | None = None, detail: str = "", tokens: int = 0) -> Result:
        return Result(worker, stream, started, clock(), outcome, status, detail, tokens)

    def left() -> float:
        return deadline - clock()

    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
        assert conn.sock is not None
        conn.sock.settimeout(max(0.05, left()))
        response = conn.getresponse()
        if response.status != 200:
            text = response.read(4096).decode(errors="replace")
            return done(ERROR, response.status, f"HTTP {response.status}: {' '.join(text.split())[:160]}")
        if not stream:
            data = json.loads(response.read(1 << 22) or b"{}")
            if not data.get("choices"):
                return done(ERROR, 200, "no choices in the answer")
            return done(OK, 200, tokens=int((data.get("usage") or {}).get("completion_tokens") or 0))
        outcome, detail, chunks = _read_stream(conn, response, left, timeout)
        return done(outcome, 200, detail, chunks)
    except (socket.timeout, TimeoutError):
        return done(HUNG, None, f"no answer within {timeout:g} s")
    except ConnectionRefusedError:
        return done(ERROR, None, "connection refused")
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead) as exc:
        return done(ERROR, None, f"connection closed ({type(exc).__name__})")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return done(ERROR, None, f"{type(exc).__name__}: {exc}"[:160])
    finally:
        conn.close()


def _read_stream(conn: http.client.HTTPConnection, response: http.client.HTTPResponse, left: Callable[[], float],
                 timeout: float) -> tuple[str, str, int]:
    """An SSE answer to its end: (outcome, why not ok, chunks with content). Timeouts propagate as socket.timeout."""
    chunks = 0
    while True:
        if left() <= 0:
            return HUNG, f"stream not finished after {timeout:g} s ({chunks} chunks)", chunks
        assert conn.sock is not None
        conn.sock.settimeout(max(0.05, left()))
        raw = response.readline(1 << 16)
        if not raw:
            return ERROR, f"stream cut before [DONE] after {chunks} chunks", chunks
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return OK, "", chunks
        try:
            event = json.loads(payload)
        except ValueError:
            return ERROR, f"unreadable stream chunk {payload[:80]!r}", chunks
        if "error" in event:
            err = event["error"]
            return ERROR, f"error chunk: {str(err.get('message', err) if isinstance(err, dict) else err)[:160]}", chunks
        chunks += 1


@dataclass
class Load:
    """Workers that keep `streaming` + `plain` requests in flight until stopped, `duration` passes or `max_requests` ran.

    `start()` returns at once; `stop()` lets each request in flight end (by answer, error or its own
    deadline) and joins the workers, so it returns within `timeout` plus a little.
    """

    url: str
    model: str
    streaming: int = 8
    plain: int = 8
    timeout: float = DEFAULT_TIMEOUT_S
    max_tokens: int = DEFAULT_MAX_TOKENS
    duration: float = 600.0  # no new request starts after this many seconds
    max_requests: int = 100_000  # nor after this many, over all workers
    api_key: str | None = None
    prompts: tuple[str, ...] = PROMPTS
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.host, self.port = check_loopback(self.url)
        if self.streaming < 0 or self.plain < 0 or self.streaming + self.plain < 1:
            raise ProfileError("--streaming/--plain: at least one request in flight")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._issued = 0
        self._threads: list[threading.Thread] = []
        self._in_flight: dict[int, float] = {}  # worker -> when its current request started
        self.started_at = 0.0

    def start(self) -> "Load":
        self.started_at = time.monotonic()
        kinds = [True] * self.streaming + [False] * self.plain
        for worker, stream in enumerate(kinds):
            t = threading.Thread(target=self._work, args=(worker, stream), name=f"load-{worker}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def _take(self, worker: int) -> bool:
        with self._lock:
            if self._stop.is_set() or self._issued >= self.max_requests or time.monotonic() - self.started_at >= self.duration:
                return False
            self._issued += 1
            self._in_flight[worker] = time.monotonic()
            return True

    def _work(self, worker: int, stream: bool) -> None:
        n = 0
        while self._take(worker):
            prompt = self.prompts[(worker + n) % len(self.prompts)]
            n += 1
            result = one_request(self.host, self.port, self.model, stream=stream, timeout=self.timeout,
                                 max_tokens=self.max_tokens, prompt=prompt, worker=worker, api_key=self.api_key)
            with self._lock:
                self.results.append(result)
                self._in_flight.pop(worker, None)
            if result.outcome != OK:
                self._stop.wait(RETRY_PAUSE_S)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def completed(self) -> int:
        with self._lock:
            return sum(1 for r in self.results if r.outcome == OK)

    def wait_for(self, ok: int, limit: float) -> bool:
        """Block until `ok` requests completed (True) or `limit` seconds passed (False)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.completed() >= ok:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> list[Result]:
        """No new requests; wait for those in flight (each ends by its own deadline); every result."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 10)
        with self._lock:
            return list(self.results)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> "Load":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0-100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(results: Iterable[Result], since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """Counts by outcome, requests/s, latency percentiles (ok requests) and the errors' reasons, for the requests
    that started in [since, until) (all when not given)."""
    rows = [r for r in results if (since is None or r.started >= since) and (until is None or r.started < until)]
    ok = [r for r in rows if r.outcome == OK]
    span = (max(r.ended for r in rows) - min(r.started for r in rows)) if rows else 0.0
    reasons: dict[str, int] = {}
    for r in rows:
        if r.outcome != OK:
            key = r.detail.split(":")[0] if r.detail.startswith("HTTP") else r.detail.split(" after ")[0].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
    lat = [r.latency for r in ok]
    return {
        "requests": len(rows),
        "completed": len(ok),
        "errors": sum(1 for r in rows if r.outcome == ERROR),
        "hung": sum(1 for r in rows if r.outcome == HUNG),
        "streaming": sum(1 for r in rows if r.stream),
        "requests_per_s": round(len(ok) / span, 2) if span > 0 else None,
        "latency_s": {f"p{p}": (round(v, 3) if (v := percentile(lat, p)) is not None else None) for p in (50, 90, 99)},
        "latency_max_s": round(max(lat), 3) if lat else None,
        "error_reasons": reasons,
    }


def split_at(results: Iterable[Result], t: float) -> dict[str, Any]:
    """For a fault at monotonic time `t`: the requests in flight at `t` and those started after it, each summarised."""
    rows = list(results)
    in_flight = [r for r in rows if r.started < t <= r.ended]
    after = [r for r in rows if r.started >= t]
    return {"in_flight": summary(in_flight), "after": summary(after), "before": summary(r for r in rows if r.ended < t)}


def process_tree_rss(pid: int) -> int:
    """Resident memory (bytes) of `pid` and every process below it, from /proc (0 where there is none)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
            fields = stat[stat.rfind(")") + 2 :].split()  # state ppid ... ; field 22 of stat (index 21 here) is rss pages
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(p, 0) for p in tree)


class RssSampler:
    """Samples `process_tree_rss(pid)` every `every` seconds in a thread: [(seconds since start, bytes)]."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.samples.append((round(time.monotonic() - self._t0, 1), process_tree_rss(self.pid)))
            if self._stop.wait(self.every):
                return

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(self.every + 5)
        return list(self.samples)
