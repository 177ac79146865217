"""Readiness: poll a vLLM server until `/health` answers and `/v1/models` lists the model."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Any, Callable

from launcher.errors import NotReadyError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_INTERVAL_S = 2.0
# Progress is reported when what the server says changes, and at least this often otherwise.
PROGRESS_HEARTBEAT_S = 15.0


@dataclass(frozen=True)
class ReadyInfo:
    """What a ready server said about itself."""

    url: str  # base URL, without `/v1`
    model: str  # the model the caller asked for, or the first one listed
    models: tuple[str, ...]  # every model id `/v1/models` lists
    max_model_len: int | None  # as `/v1/models` reports it for `model` (vLLM adds it)
    root: str | None  # the checkpoint path or id behind `model` (vLLM's `root` field)
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
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
    """`http://h:8000/v1/` -> `http://h:8000`: accept what users paste, keep one form inside."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def http_get(url: str, timeout: float, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the standard library; HTTP errors come back as (status, body), not exceptions.

    Connection problems raise `OSError` (URLError is one).
    """
    request = urllib.request.Request(url, headers=headers or {}, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, see base_url
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read() or b""


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _describe_oserror(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer (timed out)"
    text = getattr(reason, "strerror", None) or str(reason)
    return f"cannot connect: {text}"


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probe(url: str, model: str | None = None, api_key: str | None = None, request_timeout: float = 5.0) -> _Observation:
    """Look once: `/health`, then `/v1/models`. Never raises for what the server says."""
    base = base_url(url)
    try:
        status, body = http_get(base + "/health", request_timeout)
    except OSError as exc:
        return _Observation("connect", _describe_oserror(exc))
    if status != 200:
        return _Observation("health", f"/health answered {status} {_snippet(body, 60)}".rstrip())
    try:
        status, body = http_get(base + "/v1/models", request_timeout, auth_headers(api_key))
    except OSError as exc:
        return _Observation("models", f"/health answered 200, /v1/models: {_describe_oserror(exc)}")
    if status in (401, 403):
        hint = "wrong API key" if api_key else "the server wants an API key (--api-key-env)"
        return _Observation("auth", f"/v1/models answered {status}: {hint}", fatal=True)
    if status != 200:
        return _Observation("models", f"/health answered 200, /v1/models answered {status} {_snippet(body, 60)}".rstrip())
    try:
        payload = json.loads(body)
        entries = [e for e in payload.get("data", []) if isinstance(e, dict) and e.get("id")]
    except (ValueError, AttributeError):
        return _Observation("models", f"/v1/models answered 200 but not a model list: {_snippet(body, 60)}")
    ids = tuple(str(e["id"]) for e in entries)
    if not ids:
        return _Observation("models", "/health answered 200, /v1/models lists no model yet")
    wanted = model if model is not None else ids[0]
    if wanted not in ids:
        return _Observation("models", f"/v1/models lists {', '.join(ids)} but not '{wanted}'")
    entry = entries[ids.index(wanted)]
    max_len = entry.get("max_model_len")
    info = ReadyInfo(
        url=base,
        model=wanted,
        models=ids,
        max_model_len=int(max_len) if isinstance(max_len, int) else None,
        root=str(entry["root"]) if entry.get("root") else None,
        elapsed_s=0.0,
    )
    return _Observation("ready", f"'{wanted}' listed", info=info)


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
        seen = probe(base, model, api_key, request_timeout=min(10.0, max(1.0, timeout)))
        elapsed = clock() - start
        if seen.info is not None:
            info = replace(seen.info, elapsed_s=elapsed)
            if progress is not None:
                progress(Progress("ready", seen.detail, elapsed))
            return info
        if seen.fatal:
            raise NotReadyError(f"server at {base} is not usable: {seen.detail}")
        if progress is not None and (seen.detail != last_detail or clock() - last_report >= PROGRESS_HEARTBEAT_S):
            progress(Progress(seen.stage, seen.detail, elapsed))
            last_report = clock()
        last_detail = seen.detail
        if elapsed >= timeout:
            what = f"model '{model}'" if model else "a model"
            raise NotReadyError(
                f"server at {base} did not list {what} within {timeout:g} s; last seen: {seen.detail}"
            )
        sleep(max(0.0, min(interval, timeout - elapsed)))
