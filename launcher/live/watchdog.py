"""Supervised serving after readiness: notice a dead engine core and a hung engine, and exit so the service restarts.

`serve --wait` keeps vLLM as a child; once it serves, `serve_watched` stays in the foreground and:
- names what died: vLLM's child processes are listed every `interval` seconds (from /proc), so when vLLM
  exits on its own (no signal of ours), the engine core that went first is named in the error, which
  exits 4 (`EngineDiedError`);
- with `health_timeout` S: probes the server every few seconds and, when no probe has succeeded for S
  seconds, stops vLLM (SIGTERM, then SIGKILL of its group) and exits 5 (`HealthTimeoutError`).

Why a generation probe and not `/health` alone: in vLLM 0.32, `/health` answers from the API server's
own state (vllm/entrypoints/serve/instrumentator/health.py::health -> AsyncLLM.check_health, which only
raises once `errored` is set by a dead engine), so a stopped or deadlocked engine core keeps `/health` at
200 (measured: docs/runbook.md#what-happens-when). A one-token completion goes through the engine core,
so it is the probe; `/health` first, since a 503 there is the quicker answer for a dead engine.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

from launcher.errors import EngineStartError, NotReadyError
from launcher.live.readiness import auth_headers, http_get

WATCH_INTERVAL_S = 1.0  # between looks at vLLM's children (and at its exit)
PROBE_MAX_INTERVAL_S = 5.0  # between health probes, at most (S/4 when S is small)
PROBE_MAX_TIMEOUT_S = 30.0  # one probe's limit, at most (S when S is smaller)


class EngineDiedError(EngineStartError):
    """vLLM exited on its own while serving (exit 4, like a start that failed): the engine is gone."""


class HealthTimeoutError(NotReadyError):
    """The health watchdog saw no healthy answer for --health-timeout seconds and stopped vLLM (exit 5)."""


@dataclass(frozen=True)
class Child:
    pid: int
    name: str


def proc_table() -> list[tuple[int, str, list[str]]]:
    """Every process as /proc/PID/stat gives it: (pid, comm, the fields after comm: state ppid pgrp ...); empty where
    there is no /proc. comm may hold spaces and parentheses, so the fields start after its last ')'."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        out.append((int(entry), stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :].split()))
    return out


def children(pid: int) -> dict[int, Child]:
    """vLLM's direct child processes, from /proc (empty where there is none)."""
    found: dict[int, Child] = {}
    for child, comm, fields in proc_table():
        if len(fields) > 1 and fields[1] == str(pid):
            found[child] = Child(child, comm)
    return found


def probe(url: str, model: str, api_key: str | None, timeout: float) -> str | None:
    """None when the server is healthy: /health answers 200 and a one-token completion comes back in `timeout`.
    Otherwise what failed, in a few words."""
    started = time.monotonic()
    try:
        status, _ = http_get(f"{url}/health", min(timeout, 5.0), headers=auth_headers(api_key))
    except OSError as exc:
        return f"/health: {exc.strerror or type(exc).__name__}"
    if status != 200:
        return f"/health answered {status}"
    left = max(0.5, timeout - (time.monotonic() - started))
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1, "temperature": 0})
    headers = {"Content-Type": "application/json", **auth_headers(api_key)}
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=left)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        response.read(1 << 20)
        status = response.status
    except (socket.timeout, TimeoutError):
        return f"a one-token completion got no answer within {timeout:g} s (the engine is not generating)"
    except (OSError, http.client.HTTPException) as exc:
        return f"a one-token completion failed: {getattr(exc, 'strerror', None) or type(exc).__name__}"
    finally:
        conn.close()
    if status != 200:
        return f"a one-token completion answered {status}"
    return None


def serve_watched(
    sup: Any,  # launcher.live.supervise.Supervisor (which imports this module)
    url: str,
    model: str,
    *,
    api_key: str | None = None,
    health_timeout: float | None = None,
    echo: Callable[[str], None],
    interval: float = WATCH_INTERVAL_S,
    probe_fn: Callable[[str, str, str | None, float], str | None] = probe,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Serve in the foreground until vLLM exits. Returns vLLM's exit code when a signal we forwarded stopped it.

    Raises EngineDiedError (exit 4) when vLLM exited by itself, HealthTimeoutError (exit 5) when the watchdog stopped it.
    """
    assert sup.proc is not None
    pid = sup.proc.pid
    probe_every = max(1.0, min(PROBE_MAX_INTERVAL_S, (health_timeout or 0) / 4))
    probe_timeout = min(PROBE_MAX_TIMEOUT_S, health_timeout or 0)
    serving_since = clock()
    last_ok = serving_since
    next_probe = serving_since + probe_every
    known = children(pid)
    gone: list[tuple[Child, float]] = []
    while not sup.exited_within(interval):
        if sup.signals:
            return sup.wait()
        now_children = children(pid)
        now = clock()
        for child_pid, child in known.items():
            if child_pid not in now_children and all(c.pid != child_pid for c, _ in gone):
                gone.append((child, now))
                echo(f"launcher: vLLM's child {child.name} (pid {child_pid}) exited after {now - serving_since:.0f} s serving")
        known.update(now_children)
        if health_timeout is None or now < next_probe:
            continue
        why = probe_fn(url, model, api_key, probe_timeout)
        now = clock()
        next_probe = now + probe_every
        if why is None:
            last_ok = now
            continue
        if sup.signals or sup.proc.poll() is not None:
            continue
        failing = now - last_ok
        if failing < health_timeout:
            echo(f"launcher: health watchdog: unhealthy for {failing:.0f} s of {health_timeout:g}: {why}")
            continue
        echo(f"launcher: health watchdog: no healthy answer for {failing:.0f} s ({why}); stopping vLLM (pid {pid})")
        rc = sup.stop()
        raise HealthTimeoutError(
            f"health watchdog: the server at {url} was unhealthy for {failing:.0f} s (--health-timeout {health_timeout:g}): "
            f"{why}; vLLM was stopped (exit code {rc})"
        )
    rc = sup.wait()
    if sup.signals:
        return rc
    served = clock() - serving_since
    sup.show_tail(f"vLLM exited with code {rc} while serving")
    raise EngineDiedError(f"vLLM exited by itself with code {rc} after {served:.0f} s serving{_what_went_first(sup, gone, clock)}: "
                          f"{sup.last_error_line()}")


def _what_went_first(sup: Any, gone: list[tuple[Child, float]], clock: Callable[[], float]) -> str:
    """'; its child X (pid N) had exited S s before it', from our looks at vLLM's children; when vLLM went before
    our next look, vLLM's own word that its engine core had died; else nothing."""
    if gone:
        child, when = gone[0]
        return f"; its child {child.name} (pid {child.pid}) had exited {clock() - when:.0f} s before it"
    if sup.engine_dead is not None:
        return f"; its engine core had died first (vLLM: {sup.engine_dead})"
    return ""
