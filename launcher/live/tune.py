"""`launcher tune`: the candidates, the objective, the ranking and the run directory. No processes here.

A candidate is the profile plus a few `--set` overrides: MTP off or k = 1..3, an attention backend
that serves the profile's KV dtype on the GPU (engine.behaviour's table), max_num_seqs and
max_num_batched_tokens. Only candidates that the preflight (memory fit included) passes are started;
the others are listed with the reason. Each started candidate is measured by `launcher bench` (vLLM's
own load generator, warm-up excluded) at the objective's concurrency levels, and the results live in
a directory, one sub-directory per candidate, so an interrupted tune resumes where it stopped.

Objectives (chosen by the user):
  latency              single-stream: the lowest TPOT p50 at concurrency 1
  throughput           the most output tokens/s at concurrency N (--at N)
  throughput + limits  the same among candidates whose TPOT p50 (--max-tpot) and/or TTFT p50
                       (--max-ttft) at N stay within the limits (vLLM's benchmarks/auto_tune idea)
MTP candidates measured with dummy weights accept nothing: their TPOT is then the cost of drafting.
They are ranked by their *expected* TPOT and throughput at an acceptance a (fit.mtp): the measured
one when above 0, else --acceptance, else the documented planning value; the report says which.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from launcher.errors import ProfileError

PLAN = "plan.json"
RESULT = "result.json"
FORMAT = "launcher-tune/1"


@dataclass(frozen=True)
class Objective:
    kind: str  # latency | throughput
    at: int = 8  # the concurrency of a throughput objective
    max_tpot_ms: Optional[float] = None
    max_ttft_ms: Optional[float] = None

    def __post_init__(self) -> None:
        if self.kind not in ("latency", "throughput"):
            raise ProfileError(f"--objective {self.kind!r}: choose latency or throughput")
        for name, value in (("--max-tpot", self.max_tpot_ms), ("--max-ttft", self.max_ttft_ms)):
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ProfileError(f"{name} {value!r}: a positive number of milliseconds")
        if self.kind == "latency" and (self.max_tpot_ms or self.max_ttft_ms):
            raise ProfileError("--max-tpot/--max-ttft limit a throughput objective; with --objective latency they mean nothing")

    @property
    def levels(self) -> tuple[int, ...]:
        """Concurrency levels to measure: always 1 (the decode step, for MTP's worth), plus N."""
        return (1,) if self.kind == "latency" else tuple(sorted({1, self.at}))

    def describe(self) -> str:
        if self.kind == "latency":
            return "single-stream latency: lowest TPOT p50 at concurrency 1"
        limits = ([f"TPOT p50 <= {self.max_tpot_ms:g} ms"] if self.max_tpot_ms else []) + \
                 ([f"TTFT p50 <= {self.max_ttft_ms:g} ms"] if self.max_ttft_ms else [])
        return f"throughput: most output tokens/s at concurrency {self.at}" + (f" with {' and '.join(limits)}" if limits else "")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": self.at, "max_tpot_ms": self.max_tpot_ms, "max_ttft_ms": self.max_ttft_ms,
                "description": self.describe()}


@dataclass(frozen=True)
class Candidate:
    """One configuration: the profile plus `sets`."""

    backend: Optional[str]  # None: vLLM's own choice
    mtp_k: int  # 0: MTP off
    max_num_seqs: Optional[int]
    max_num_batched_tokens: Optional[int]
    excluded: Optional[str] = None  # why it is not started (the preflight's first failure, or the tables)
    decode_path: Optional[str] = None  # the tables' prediction, one line
    predicted: Mapping[str, Any] = field(default_factory=dict)  # fit: KV tokens, concurrency at full length

    @property
    def id(self) -> str:
        backend = (self.backend or "auto").lower()
        mtp = f"k{self.mtp_k}" if self.mtp_k else "nomtp"
        return f"{backend}-{mtp}-s{self.max_num_seqs or 'd'}-b{self.max_num_batched_tokens or 'd'}"

    @property
    def sets(self) -> tuple[str, ...]:
        out = []
        if self.backend:
            out.append(f"engine.attention_backend={self.backend}")
        if self.mtp_k:
            out += ["speculative.enabled=true", f"speculative.num_speculative_tokens={self.mtp_k}"]
        else:
            out.append("speculative.enabled=false")
        if self.max_num_seqs:
            out.append(f"engine.max_num_seqs={self.max_num_seqs}")
        if self.max_num_batched_tokens:
            out.append(f"engine.max_num_batched_tokens={self.max_num_batched_tokens}")
        return tuple(out)

    def describe(self) -> str:
        mtp = f"MTP k={self.mtp_k}" if self.mtp_k else "MTP off"
        return (f"{self.backend or 'auto backend'}, {mtp}, max_num_seqs {self.max_num_seqs or 'default'}, "
                f"max_num_batched_tokens {self.max_num_batched_tokens or 'default'}")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "backend": self.backend, "mtp_k": self.mtp_k, "max_num_seqs": self.max_num_seqs,
                "max_num_batched_tokens": self.max_num_batched_tokens, "sets": list(self.sets), "excluded": self.excluded,
                "decode_path": self.decode_path, "predicted": dict(self.predicted), "description": self.describe()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Candidate":
        return cls(data.get("backend"), int(data["mtp_k"]), data.get("max_num_seqs"), data.get("max_num_batched_tokens"),
                   data.get("excluded"), data.get("decode_path"), dict(data.get("predicted") or {}))


def parse_list(text: str, option: str, *, allow_off: bool = False) -> list[int]:
    """`4,1,2` -> [4, 1, 2] (the order given is the order of the starts; repeats dropped); `off` -> 0 where allowed."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if allow_off and part.lower() in ("off", "0", "none"):
            out.append(0)
            continue
        if not re.fullmatch(r"[1-9][0-9]{0,6}", part):
            raise ProfileError(f"{option} {text!r}: expected comma-separated positive integers{' or off' if allow_off else ''}")
        out.append(int(part))
    return list(dict.fromkeys(out))


def grid(backends: Sequence[Optional[str]], mtp_ks: Sequence[int], seqs: Sequence[Optional[int]],
         batched: Sequence[Optional[int]]) -> list[Candidate]:
    """Every combination, before the preflight judges them; MTP settings outermost, in the order given (so
    `--mtp 2,off` measures every backend with MTP first, and a budget cuts MTP-off variants last)."""
    return [Candidate(b, k, s, m) for k in mtp_ks for b in backends for s in seqs for m in batched]


# ------------------------------------------------------------------------------ results


def result_summary(report: Mapping[str, Any], mtp_k: int) -> dict[str, Any]:
    """The numbers the ranking reads from one candidate's bench report, per level."""
    levels = {}
    for lv in report["levels"]:
        levels[str(lv["concurrency"])] = {
            "output_tokens_per_s": lv["output_tokens_per_s"],
            "tpot_p50_ms": lv["tpot_ms"]["p50"],
            "itl_p50_ms": lv["itl_ms"]["p50"],
            "ttft_p50_ms": lv["ttft_ms"]["p50"],
            "failed": lv["failed"],
            "completed": lv["completed"],
        }
    return {"mtp_k": mtp_k, "levels": levels}


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    status: str  # ok | failed | excluded | pending
    value: Optional[float]  # the objective's number (lower TPOT / higher tok/s), expected at the acceptance used
    feasible: bool
    detail: str  # one line: measured and expected numbers, or why not
    acceptance: Optional[float] = None
    acceptance_source: str = ""


def expected(level: Mapping[str, Any], mtp_k: int, acceptance: float) -> tuple[float | None, float | None]:
    """(expected TPOT ms, expected output tokens/s) at acceptance a, from a level measured at acceptance 0.

    With nothing accepted one decode step yields one token; at a it yields 1 + a + ... + a^k at the same
    step time (fit.mtp). MTP off (k = 0) is returned as measured.
    """
    from launcher.engine.mtp import tokens_per_step

    tpot, tps = level.get("tpot_p50_ms"), level.get("output_tokens_per_s")
    gain = tokens_per_step(acceptance, mtp_k) if mtp_k else 1.0
    return (tpot / gain if tpot else None, tps * gain if tps else None)


def score(candidate: Candidate, result: Optional[Mapping[str, Any]], objective: Objective,
          acceptance: Optional[float]) -> Scored:
    """One candidate's value for the objective (see the module docstring for the acceptance rule)."""
    from launcher.engine.mtp import choose_acceptance

    if candidate.excluded:
        return Scored(candidate, "excluded", None, False, candidate.excluded)
    if result is None:
        return Scored(candidate, "pending", None, False, "not run (budget, or interrupted)")
    if result.get("status") != "ok":
        return Scored(candidate, "failed", None, False, f"failed at {result.get('stage', '?')}: {result.get('error', '')}")
    summary = result["summary"]
    k = int(summary["mtp_k"])
    a, source = choose_acceptance(result.get("acceptance"), acceptance) if k else (0.0, "")
    # A measured acceptance is already inside the measured TPOT: only a stand-in acceptance is applied.
    apply = a if k and source != "measured" else 0.0
    at = "1" if objective.kind == "latency" else str(objective.at)
    level = summary["levels"].get(at)
    if level is None or not level.get("completed") or level.get("failed"):
        return Scored(candidate, "failed", None, False, f"no clean level at concurrency {at}")
    tpot, tps = expected(level, k, apply)
    note = f" (expected at a = {a:.2f}, {source}; measured {level['tpot_p50_ms']:.2f} ms, {level['output_tokens_per_s']:.1f} tok/s)" \
        if k and source != "measured" else ""
    if objective.kind == "latency":
        return Scored(candidate, "ok", tpot, tpot is not None, f"TPOT p50 {tpot:.2f} ms at C=1{note}", a if k else None, source)
    feasible = tps is not None
    why = []
    if objective.max_tpot_ms and (tpot is None or tpot > objective.max_tpot_ms):
        feasible = False
        why.append(f"TPOT {tpot:.2f} ms > {objective.max_tpot_ms:g}")
    ttft = level.get("ttft_p50_ms")
    if objective.max_ttft_ms and (ttft is None or ttft > objective.max_ttft_ms):
        feasible = False
        why.append(f"TTFT {ttft:.0f} ms > {objective.max_ttft_ms:g}")
    text = f"{tps:.1f} output tok/s at C={at}, TPOT p50 {tpot:.2f} ms, TTFT p50 {ttft:.0f} ms{note}"
    return Scored(candidate, "ok", tps, feasible, text + (f"; outside the limits: {', '.join(why)}" if why else ""),
                  a if k else None, source)


def rank(scored: Sequence[Scored], objective: Objective) -> list[Scored]:
    """Best first: feasible measured candidates by the objective, then the rest (failed, pending, excluded)."""
    good = [s for s in scored if s.status == "ok" and s.feasible and s.value is not None]
    good.sort(key=lambda s: s.value if objective.kind == "latency" else -(s.value or 0.0))  # type: ignore[arg-type, return-value]
    order = {"ok": 0, "failed": 1, "pending": 2, "excluded": 3}
    rest = sorted((s for s in scored if s not in good), key=lambda s: order[s.status])
    return good + rest


# ------------------------------------------------------------------------------ the run directory


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_plan(directory: Path) -> Optional[dict[str, Any]]:
    path = directory / PLAN
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: not a tune plan ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ProfileError(f"{path}: not a tune plan of this launcher (format {data.get('format') if isinstance(data, dict) else None!r})")
    return data


def read_result(directory: Path, candidate: Candidate) -> Optional[dict[str, Any]]:
    path = directory / candidate.id / RESULT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a half-written result: run the candidate again
    return data if isinstance(data, dict) and data.get("status") in ("ok", "failed") else None


def same_plan(old: Mapping[str, Any], new: Mapping[str, Any]) -> Optional[str]:
    """Why an existing plan cannot be resumed with these options, or None."""
    for key in ("profile", "sets", "objective"):
        if old.get(key) != new.get(key):
            return f"{key} differs ({old.get(key)!r} there, {new.get(key)!r} now)"
    return None


def _nested(sets: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in sets:
        key, _, raw = item.partition("=")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        value: Any = raw
        if raw in ("true", "false"):
            value = raw == "true"
        elif re.fullmatch(r"[0-9]+", raw):
            value = int(raw)
        node[parts[-1]] = value
    return out


def winner_yaml(base: str, best: Scored, objective: Objective, gpu: str, when: str) -> str:
    """A profile that `extends:` the tuned one with the winner's values, the numbers in its description."""
    import yaml

    c = best.candidate
    data: dict[str, Any] = {"extends": base}
    desc = (f"launcher tune winner for {base} on {gpu} ({when}): {c.describe()}. Objective: {objective.describe()}. "
            f"Measured: {best.detail}.")
    data["description"] = desc
    data.update(_nested(c.sets))
    if not c.mtp_k:
        data["speculative"] = {"enabled": False}
    head = f"# Written by `launcher tune --profile {base}` ({when}); the numbers are in the description.\n"
    return head + yaml.safe_dump(data, sort_keys=False, width=100)
