"""Warm-up: the requests that make a started vLLM fast for the first user, before it is called ready.

vLLM's start compiles the shapes it profiles and captures, but kernels that are only compiled on
first use (Triton JIT of the GDN/conv kernels, FlashInfer JIT, torch.compile ranges the start did
not touch) are built by the first real request: measured on one H100 with the full 27B shape, the
first 1024-token prompt after "ready" took 73 s to its first token (vLLM logs "Triton kernel JIT
compilation during inference: ... This causes a latency spike"). The warm-up sends, in order:

1. `prefill`: one prompt of about `max_num_batched_tokens` tokens (bounded by the model's
   max_model_len), the largest batch the scheduler builds; a few tokens out.
2. `decode`: min(max_num_seqs, 8) streams at once, each a short prompt and `DECODE_TOKENS` tokens
   out (EOS ignored), so the decode batch sizes a few users make are compiled; with MTP the
   drafter runs on these same requests (vLLM drafts for every decode step), and the
   speculative-decoding counters on /metrics say whether it did.
3. `first request`: one `PROBE_TOKENS`-token prompt, as a user's first request would be, streamed:
   its time to first token, then the same once more (`steady`), to show the first request after
   ready is not paying a compile.

Prompts are token ids (`/v1/completions` takes a list of ids: vLLM's
entrypoints/openai/completion serving turns it into a TokensPrompt), drawn at random from
`TOKEN_ID_RANGE` (ordinary tokens in any vocabulary this launcher serves, the tiny test model's
2048 included; vLLM refuses ids outside the vocabulary:
renderers/base.py::BaseRenderer.validate_token_ids), so their length is exact without a tokenizer and no two requests share a prefix
(prefix caching would skip the prefill being warmed). Requests go through the `openai` client
with launcher.live.smoke's bounded HTTP client: no redirect followed, each answer bounded in time
and size, the whole warm-up within `timeout_s`.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from launcher.errors import NotReadyError
from launcher.live.readiness import base_url, printable, probe
from launcher.live.smoke import (
    MAX_ANSWER_BYTES,
    _bounded_client,
    _cause,
    _http_module,
    _PastDeadline,
    _plain,
    scrape_metrics,
    spec_decode_counters,
)

MAX_DECODE_STREAMS = 8
DECODE_PROMPT_TOKENS = 32
DECODE_TOKENS = 64  # per stream: enough steps for the drafter to run at every decode batch size on the way down
PREFILL_OUT_TOKENS = 4
PROBE_TOKENS = 1024  # the "first request": the length the measurements use (bench's default input too)
PROBE_OUT_TOKENS = 8
TOKEN_ID_RANGE = (100, 1000)  # ordinary tokens in Qwen's 248k vocabulary and in the tiny test model's 2048
# When neither the profile nor vLLM's log says max_num_batched_tokens: vLLM's smallest default
# (engine/arg_utils.py::get_batch_defaults, GPUs under 70 GiB and the CPU build).
DEFAULT_BATCHED_TOKENS = 2048
DEFAULT_MAX_NUM_SEQS = 8
DEFAULT_TIMEOUT_S = 900.0  # a cold Triton/FlashInfer JIT of the full model's kernels takes minutes

# Readiness error: the server is up but could not be warmed (exit 5, like a failed smoke).
ReadinessError = NotReadyError


@dataclass
class WarmupStep:
    """One step of the warm-up: what was sent, how long it took, and the first token's delay."""

    name: str  # "prefill", "decode", "first request"
    duration_s: float
    requests: int
    prompt_tokens: int  # per request
    max_tokens: int  # per request
    ttft_s: float | None = None  # the (first) request's time to first token
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "max_tokens": self.max_tokens,
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 3),
            **self.detail,
        }

    def summary(self) -> str:
        if self.name == "prefill":
            return f"prefill {self.prompt_tokens} tokens {self.duration_s:.1f} s"
        if self.name == "decode":
            drafted = self.detail.get("spec_decode_drafts")
            mtp = f", MTP drafted {drafted} times" if drafted is not None else ""
            return f"decode {self.requests} streams x {self.max_tokens} tokens {self.duration_s:.1f} s{mtp}"
        steady = self.detail.get("steady_ttft_s")
        tail = f" (then {steady:.2f} s)" if steady is not None else ""
        return f"first request ({self.prompt_tokens} tokens) TTFT {self.ttft_s or 0.0:.2f} s{tail}"


@dataclass
class WarmupResult:
    """All steps of one warm-up; `total_s` is the wall time from the first request to the last answer."""

    url: str
    model: str
    steps: list[WarmupStep] = field(default_factory=list)
    total_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def step(self, name: str) -> WarmupStep | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def first_request_ttft_s(self) -> float | None:
        probe_step = self.step("first request")
        return probe_step.ttft_s if probe_step is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "total_s": round(self.total_s, 3),
            "steps": [s.to_json() for s in self.steps],
            "first_request_ttft_s": None if self.first_request_ttft_s is None else round(self.first_request_ttft_s, 3),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """`warm-up 38.2 s: prefill 8188 tokens 30.1 s; decode 8 streams x 64 tokens 5.2 s; first request ...`"""
        parts = "; ".join(s.summary() for s in self.steps)
        notes = "".join(f"; note: {n}" for n in self.notes)
        return f"warm-up {self.total_s:.1f} s: {parts}{notes}"


def prefill_length(max_num_batched_tokens: int, max_model_len: int | None, out_tokens: int = PREFILL_OUT_TOKENS) -> int:
    """The prefill prompt's length: max_num_batched_tokens, less what the context cannot hold with the answer.

    vLLM refuses a prompt longer than the context less the answer's max_tokens
    (renderers/params.py::TokenizeParams._token_len_check), so the prompt leaves room for `out_tokens`.
    """
    length = max_num_batched_tokens
    if max_model_len is not None:
        length = min(length, max_model_len - out_tokens)
    return max(1, length)


def _prompt(rng: random.Random, length: int) -> list[int]:
    low, high = TOKEN_ID_RANGE
    return [rng.randrange(low, high) for _ in range(length)]


class _Warmer:
    """The openai client against one server, with the warm-up's deadline."""

    def __init__(self, base: str, model: str, api_key: str | None, deadline: float) -> None:
        import openai  # lazy: never on the `render`/`check` paths

        self.openai = openai
        self.http = _http_module(openai)
        self.base = base
        self.model = model
        self.api_key = api_key
        self.deadline = deadline
        self.rng = random.Random(time.time_ns())
        self.failures: tuple[type[BaseException], ...] = (
            openai.OpenAIError, self.http.HTTPError, self.http.StreamError, ValueError, TypeError, AttributeError, KeyError, IndexError,
        )

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _client(self) -> Any:
        timeout = max(1.0, self.remaining())
        return self.openai.OpenAI(
            base_url=self.base + "/v1", api_key=self.api_key or "EMPTY", max_retries=0, timeout=timeout,
            http_client=_bounded_client(self.http, timeout, MAX_ANSWER_BYTES),
        )

    def stream(self, prompt: list[int], max_tokens: int, temperature: float = 0.0) -> tuple[float | None, int, float]:
        """One streamed completion: (time to first token, chunks with a choice, seconds in all).

        The first token's time is that of the first chunk carrying a choice: vLLM sends one per engine step
        with output, its text possibly empty (a token that ends inside a UTF-8 character).
        """
        client = self._client()
        started = time.monotonic()
        ttft: float | None = None
        pieces = 0
        try:
            create: Any = client.completions.create
            stream = create(
                model=self.model, prompt=prompt, max_tokens=max_tokens, temperature=temperature, stream=True,
                extra_body={"ignore_eos": True},  # vLLM sampling parameter: exactly max_tokens out, so the decode runs
            )
            for chunk in stream:
                body = _plain(chunk)
                for choice in body.get("choices") or []:
                    if isinstance(choice, dict):
                        pieces += 1
                        if ttft is None:
                            ttft = time.monotonic() - started
        finally:
            client.close()
        return ttft, pieces, time.monotonic() - started

    def why(self, exc: BaseException) -> str:
        if _cause(exc, _PastDeadline) is not None or isinstance(exc, self.openai.APITimeoutError):
            return "no complete answer before the warm-up's deadline"
        status = getattr(exc, "status_code", None)
        text = printable(str(exc), 200)
        return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"


def warm_up(
    url: str,
    model: str | None,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    mtp: bool,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    api_key: str | None = None,
    max_model_len: int | None = None,
    on_step: Callable[[WarmupStep], None] | None = None,
) -> WarmupResult:
    """Warm a ready server up: a long prefill, a decode at concurrency, then a user-sized first request.

    Args:
        url: server base URL.
        model: served model name (None: the first `/v1/models` lists).
        max_num_batched_tokens: the server's scheduler budget (the prefill prompt's length).
        max_num_seqs: the server's most concurrent requests (the decode uses min(it, 8) streams).
        mtp: the profile turns MTP on: the drafter's counters are read around the decode step.
        timeout_s: seconds for the whole warm-up.
        api_key: the server's API key.
        max_model_len: the context length, when known; else what `/v1/models` reports.
        on_step: called with each step as soon as it is done (progress output).

    Returns:
        The steps, their durations and the total.

    Raises:
        NotReadyError (exit 5): the server is not ready, a request failed, or the warm-up ran past `timeout_s`;
            the message is one line naming the step.
    """
    if max_num_batched_tokens < 1 or max_num_seqs < 1:
        raise ValueError("max_num_batched_tokens and max_num_seqs must be at least 1")
    started = time.monotonic()
    deadline = started + timeout_s
    base = base_url(url)
    seen = probe(base, model, api_key, request_timeout=min(30.0, max(1.0, timeout_s)))
    if seen.info is None:
        raise NotReadyError(f"warm-up: server at {base} is not ready: {seen.detail}")
    info = seen.info
    context = max_model_len or info.max_model_len
    warmer = _Warmer(base, info.model, api_key, deadline)
    result = WarmupResult(base, info.model)

    def run(name: str, fn: Callable[[], WarmupStep]) -> None:
        if warmer.remaining() <= 0:
            raise NotReadyError(f"warm-up did not finish within {timeout_s:g} s (before {name})")
        try:
            step = fn()
        except warmer.failures as exc:
            raise NotReadyError(f"warm-up {name} failed after {time.monotonic() - started:.0f} s: {warmer.why(exc)}") from None
        result.steps.append(step)
        if on_step is not None:
            on_step(step)

    run("prefill", lambda: _prefill(warmer, prefill_length(max_num_batched_tokens, context)))
    run("decode", lambda: _decode(warmer, min(max_num_seqs, MAX_DECODE_STREAMS), context, mtp, result.notes))
    run("first request", lambda: _probe(warmer, context))
    result.total_s = time.monotonic() - started
    return result


def _prefill(warmer: _Warmer, length: int) -> WarmupStep:
    t0 = time.monotonic()
    ttft, _, _ = warmer.stream(_prompt(warmer.rng, length), PREFILL_OUT_TOKENS)
    return WarmupStep("prefill", time.monotonic() - t0, 1, length, PREFILL_OUT_TOKENS, ttft)


def _decode(warmer: _Warmer, streams: int, context: int | None, mtp: bool, notes: list[str]) -> WarmupStep:
    prompt_len = DECODE_PROMPT_TOKENS
    out = DECODE_TOKENS
    if context is not None:  # a tiny context (tests): keep prompt + answer inside it
        prompt_len = max(1, min(prompt_len, context // 4))
        out = max(1, min(out, context - prompt_len))
    prompts = [_prompt(warmer.rng, prompt_len) for _ in range(streams)]
    before = _drafts(warmer) if mtp else None
    barrier = threading.Barrier(streams)

    def one(i: int) -> tuple[float | None, int, float]:
        barrier.wait(timeout=max(1.0, warmer.remaining()))
        # Half greedy, half sampled: both of vLLM's sampling paths (and, with MTP, both rejection-sampler paths) are built.
        return warmer.stream(prompts[i], out, temperature=0.0 if i % 2 == 0 else 0.7)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=streams) as pool:
        answers = list(pool.map(one, range(streams)))
    duration = time.monotonic() - t0
    detail: dict[str, Any] = {"streamed_chunks": sum(a[1] for a in answers)}
    if mtp:
        after = _drafts(warmer)
        if before is not None and after is not None:
            detail["spec_decode_drafts"] = int(after - before)
            if after - before <= 0:
                notes.append("MTP is on but /metrics shows no drafts during the decode step")
        else:
            notes.append("MTP is on but /metrics has no speculative-decoding counters")
    ttfts = [a[0] for a in answers if a[0] is not None]
    return WarmupStep("decode", duration, streams, prompt_len, out, min(ttfts) if ttfts else None, detail)


def _drafts(warmer: _Warmer) -> float | None:
    metrics, _ = scrape_metrics(warmer.base, timeout=min(10.0, max(1.0, warmer.remaining())))
    counters = spec_decode_counters(metrics, warmer.model) if metrics is not None else None
    return counters["drafts"] if counters is not None else None


def _probe(warmer: _Warmer, context: int | None) -> WarmupStep:
    length = prefill_length(PROBE_TOKENS, context, PROBE_OUT_TOKENS)
    t0 = time.monotonic()
    first, _, _ = warmer.stream(_prompt(warmer.rng, length), PROBE_OUT_TOKENS)
    steady, _, _ = warmer.stream(_prompt(warmer.rng, length), PROBE_OUT_TOKENS)
    detail = {"steady_ttft_s": None if steady is None else round(steady, 3)}
    return WarmupStep("first request", time.monotonic() - t0, 2, length, PROBE_OUT_TOKENS, first, detail)
