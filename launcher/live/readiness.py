"""Readiness: poll a vLLM server until `/health` answers and `/v1/models` lists the model."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any, Callable

from launcher.errors import NotReadyError, ProfileError
from launcher.text import printable, redact_url

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_INTERVAL_S = 2.0
# Progress is reported when what the server says changes, and at least this often otherwise.
PROGRESS_HEARTBEAT_S = 15.0
# Most bytes read from one answer: a model list or /health is a few KiB, /metrics a few hundred.
MAX_BODY_BYTES = 8 << 20


@dataclass(frozen=True)
class ReadyInfo:
    """What a ready server said about itself."""

    url: str  # base URL, without `/v1` (to send requests to: print or save `shown_url`)
    model: str  # the model the caller asked for, or the first one listed
    models: tuple[str, ...]  # every model id `/v1/models` lists
    max_model_len: int | None  # as `/v1/models` reports it for `model` (vLLM adds it)
    root: str | None  # the checkpoint path or id behind `model` (vLLM's `root` field)
    elapsed_s: float

    @property
    def shown_url(self) -> str:
        """The URL as printed and saved: credentials redacted."""
        return redact_url(self.url)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.shown_url,
            "model": self.model,
            "models": list(self.models),
            "max_model_len": self.max_model_len,
            "root": self.root,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class Progress:
    """One progress report: what the server said last, and how long we have waited."""

    stage: str  # "connect", "health", "models" or "auth"
    detail: str  # one line, e.g. "connection refused" or "/health answered 503"
    elapsed_s: float


@dataclass
class _Observation:
    stage: str
    detail: str
    info: ReadyInfo | None = None
    fatal: bool = False


def base_url(url: str) -> str:
    """`http://h:8000/v1/` -> `http://h:8000`: accept what users paste, keep one form inside.

    Only http:// and https:// (ProfileError, exit 2, for file://, ftp://, control characters, no host).
    """
    url = url.strip()
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ProfileError(f"--url {redact_url(url)[:80]!r}: a URL has no spaces or control characters")
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise ProfileError(f"--url {redact_url(url)[:80]}: {printable(exc, 120)}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ProfileError(f"--url {redact_url(url)[:80]}: only http:// and https:// URLs (a vLLM server), not {printable(parts.scheme, 20)}://")
    if not host:
        raise ProfileError(f"--url {redact_url(url)[:80]}: no host in the URL")
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


class AnswerTooLarge(OSError):
    """The body went past the size cap (an endless or absurd answer)."""


class NoAnswerInTime(TimeoutError):
    """The whole exchange did not finish within its deadline (a trickling or stalled body)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    location: str | None = None  # a redirect's target; launcher never follows one


def http_request(url: str, timeout: float, headers: dict[str, str] | None = None, max_bytes: int = MAX_BODY_BYTES) -> Answer:
    """GET `url`, the whole exchange within `timeout` seconds and `max_bytes` of body; redirects are not followed.

    A watchdog shuts the socket down at the deadline, so a body that trickles (or stops) cannot hold
    the caller longer. Connection problems raise OSError (NoAnswerInTime, AnswerTooLarge are OSErrors too).
    """
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=max(0.05, timeout))
    watchdog = threading.Timer(max(0.0, timeout), _shut, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = conn.getresponse()
        body = _read_body(response, deadline, max_bytes, timeout)
        return Answer(response.status, body, response.getheader("Location"))
    except (http.client.HTTPException, ValueError) as exc:
        if time.monotonic() >= deadline:
            raise NoAnswerInTime(f"no complete answer within {timeout:g} s") from None
        raise OSError(f"not an HTTP answer ({type(exc).__name__})") from None
    except OSError:
        if time.monotonic() >= deadline:
            raise NoAnswerInTime(f"no complete answer within {timeout:g} s") from None
        raise
    finally:
        watchdog.cancel()
        conn.close()


def _shut(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _read_body(response: http.client.HTTPResponse, deadline: float, max_bytes: int, timeout: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = response.read1(64 << 10)
        if time.monotonic() >= deadline:
            raise NoAnswerInTime(f"no complete answer within {timeout:g} s")
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise AnswerTooLarge(f"the answer is too large (over {max_bytes >> 20} MiB)")
        chunks.append(chunk)


def http_get(url: str, timeout: float, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with a total deadline and a size cap; any HTTP status comes back as (status, body), redirects unfollowed.

    Connection problems raise `OSError`.
    """
    answer = http_request(url, timeout, headers)
    return answer.status, answer.body


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _describe_oserror(exc: BaseException) -> str:
    if isinstance(exc, (NoAnswerInTime, AnswerTooLarge)):
        return str(exc)
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer (timed out)"
    text = getattr(reason, "strerror", None) or str(reason)
    return f"cannot connect: {printable(text, 120)}"


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[: limit * 4].decode("utf-8", "replace").strip().replace("\n", " ")
    return printable(text, limit)


def _redirect(path: str, answer: Answer) -> _Observation:
    where = redact_url(answer.location or "?")[:100]
    return _Observation(
        "redirect",
        f"{path} answered {answer.status}, a redirect to {where}: not followed (launcher sends requests, and the API key, "
        "only to --url); point --url at the server itself",
        fatal=True,
    )


def probe(url: str, model: str | None = None, api_key: str | None = None, request_timeout: float = 5.0) -> _Observation:
    """Look once: `/health`, then `/v1/models`, both within `request_timeout` in all. Never raises for what the server says."""
    base = base_url(url)
    deadline = time.monotonic() + request_timeout
    try:
        health = http_request(base + "/health", request_timeout)
    except OSError as exc:
        return _Observation("connect", _describe_oserror(exc))
    if 300 <= health.status < 400:
        return _redirect("/health", health)
    if health.status != 200:
        return _Observation("health", f"/health answered {health.status} {_snippet(health.body, 60)}".rstrip())
    try:
        models = http_request(base + "/v1/models", max(0.05, deadline - time.monotonic()), auth_headers(api_key))
    except OSError as exc:
        return _Observation("models", f"/health answered 200, /v1/models: {_describe_oserror(exc)}")
    if 300 <= models.status < 400:
        return _redirect("/v1/models", models)
    status, body = models.status, models.body
    if status in (401, 403):
        hint = "wrong API key" if api_key else "the server wants an API key (--api-key-env)"
        return _Observation("auth", f"/v1/models answered {status}: {hint}", fatal=True)
    if status != 200:
        return _Observation("models", f"/health answered 200, /v1/models answered {status} {_snippet(body, 60)}".rstrip())
    try:
        payload = json.loads(body)
        entries = [e for e in payload.get("data", []) if isinstance(e, dict) and isinstance(e.get("id"), (str, int)) and e.get("id")]
    except (ValueError, AttributeError, TypeError, RecursionError):
        return _Observation("models", f"/v1/models answered 200 but not a model list: {_snippet(body, 60)}")
    ids = tuple(str(e["id"]) for e in entries)
    if not ids:
        return _Observation("models", "/health answered 200, /v1/models lists no model yet")
    wanted = model if model is not None else ids[0]
    if wanted not in ids:
        listed = printable(", ".join(ids), 200)
        return _Observation("models", f"/v1/models lists {listed} but not '{printable(wanted, 100)}'")
    entry = entries[ids.index(wanted)]
    max_len = entry.get("max_model_len")
    info = ReadyInfo(
        url=base,
        model=wanted,
        models=ids,
        max_model_len=max_len if isinstance(max_len, int) and not isinstance(max_len, bool) and 0 < max_len < 2**53 else None,
        root=str(entry["root"]) if isinstance(entry.get("root"), str) and entry.get("root") else None,
        elapsed_s=0.0,
    )
    return _Observation("ready", f"'{printable(wanted, 100)}' listed", info=info)


def wait_ready(
    url: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    model: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    *,
    api_key: str | None = None,
    interval: float = DEFAULT_INTERVAL_S,
    alive: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadyInfo:
    """Wait until the server answers `/health` with 200 and `/v1/models` lists `model`.

    `/health` alone is not enough: it can answer before the model is served. Without `model`,
    the first listed model counts.

    Args:
        url: server base URL (`http://host:port`, a trailing `/v1` is accepted).
        timeout: seconds to wait in all.
        model: model id that must be listed, or None for any.
        progress: called with a `Progress` when what the server says changes, and every
            `PROGRESS_HEARTBEAT_S` seconds otherwise.
        api_key: bearer token for `/v1/models` when the server was started with one.
        interval: seconds between looks.
        alive: called before each look; raises to stop waiting (the supervisor uses it to
            notice a dead child).
        clock, sleep: injectable for tests.

    Returns:
        ReadyInfo for the model.

    Raises:
        NotReadyError: on timeout (naming what was seen last) or a refused API key.
    """
    base = base_url(url)
    start = clock()
    last_detail: str | None = None
    last_report = start
    while True:
        if alive is not None:
            alive()
        remaining = timeout - (clock() - start)
        seen = probe(base, model, api_key, request_timeout=max(0.1, min(10.0, remaining)))
        elapsed = clock() - start
        if seen.info is not None:
            info = replace(seen.info, elapsed_s=elapsed)
            if progress is not None:
                progress(Progress("ready", seen.detail, elapsed))
            return info
        if seen.fatal:
            raise NotReadyError(f"server at {redact_url(base)} is not usable: {seen.detail}")
        if progress is not None and (seen.detail != last_detail or clock() - last_report >= PROGRESS_HEARTBEAT_S):
            progress(Progress(seen.stage, seen.detail, elapsed))
            last_report = clock()
        last_detail = seen.detail
        if elapsed >= timeout:
            what = f"model '{printable(model, 100)}'" if model else "a model"
            raise NotReadyError(
                f"server at {redact_url(base)} did not list {what} within {timeout:g} s; last seen: {seen.detail}"
            )
        sleep(max(0.0, min(interval, timeout - elapsed)))
