"""What MTP is worth: expected tokens per decode step, expected TPOT and the break-even acceptance.

Pure arithmetic over measured step times. With k draft tokens and a per-position acceptance a (each
draft token is accepted with probability a given that the ones before it were), one decode step of the
target model yields 1 + a + a^2 + ... + a^k tokens on average (the verified token plus the accepted
prefix of the drafts). MTP beats MTP off when that exceeds the step-time ratio
(step with MTP k) / (step without MTP); above k + 1 it never does.

The acceptance comes from a real run's /metrics (`vllm:spec_decode_num_accepted_tokens_total` over
`vllm:spec_decode_num_drafts_total` is the mean number of accepted drafts per step, a + ... + a^k,
solved here for a), or from the user. With dummy weights nothing is accepted (a = 0), so a measured
MTP step time is the pure cost of drafting and verifying: the break-even then says what acceptance
real weights must reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

# Used only to *rank* MTP candidates measured with dummy weights (acceptance 0) when neither a measured
# acceptance nor --acceptance is given: a planning value, not a measurement (docs/tuning.md says so and
# how to measure yours with `launcher bench` on the real weights). Every report names the value it used.
PLANNING_ACCEPTANCE = 0.5


def choose_acceptance(measured: Optional[float], given: Optional[float], *, given_first: bool = False) -> tuple[float, str]:
    """The acceptance to judge MTP at, and where it came from: a measured one above 0 ("measured"), the user's
    ("--acceptance"), else PLANNING_ACCEPTANCE ("planning value"). `given_first`: the user's wins over a
    measurement (bench's what-if); tune ranks by what was measured when there is something measured."""
    if given is not None and (given_first or not measured):
        return given, "--acceptance"
    if measured:
        return measured, "measured"
    return PLANNING_ACCEPTANCE, "planning value"


def tokens_per_step(acceptance: float, k: int) -> float:
    """Expected tokens one decode step yields: 1 + a + ... + a^k (k = 0: MTP off, exactly 1)."""
    if not 0.0 <= acceptance <= 1.0 or not math.isfinite(acceptance):
        raise ValueError(f"acceptance must be within 0..1, not {acceptance!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    return float(sum(acceptance**i for i in range(k + 1)))


def acceptance_from_mean_accepted(mean_accepted: float, k: int) -> float:
    """The per-position acceptance a with a + a^2 + ... + a^k = mean accepted drafts per step (bisection)."""
    if k < 1:
        raise ValueError("MTP off has no acceptance")
    if not math.isfinite(mean_accepted) or mean_accepted <= 0:
        return 0.0
    if mean_accepted >= k:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if tokens_per_step(mid, k) - 1.0 < mean_accepted:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def break_even(step_ratio: float, k: int) -> Optional[float]:
    """The smallest acceptance at which MTP k yields as many tokens per second as MTP off; None: never.

    `step_ratio` = (step time with MTP k) / (step time without MTP), both measured the same way.
    """
    if k < 1 or not math.isfinite(step_ratio) or step_ratio <= 0:
        raise ValueError(f"break_even needs k >= 1 and a positive ratio (k={k}, ratio={step_ratio!r})")
    if step_ratio <= 1.0:
        return 0.0
    if step_ratio > k + 1:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if tokens_per_step(mid, k) < step_ratio:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class MtpWorth:
    """MTP k on one decode path against MTP off, from two measured step times (ms)."""

    k: int
    step_ms: float  # one decode step with MTP k (ITL p50 at C=1: one streamed chunk per step)
    step_off_ms: float  # the same without MTP
    acceptance: float
    acceptance_source: str  # choose_acceptance: "measured", "--acceptance" or "planning value"

    @property
    def ratio(self) -> float:
        return self.step_ms / self.step_off_ms

    @property
    def tokens_per_step(self) -> float:
        return tokens_per_step(self.acceptance, self.k)

    @property
    def expected_tpot_ms(self) -> float:
        return self.step_ms / self.tokens_per_step

    @property
    def break_even(self) -> Optional[float]:
        return break_even(self.ratio, self.k)

    @property
    def pays_off(self) -> bool:
        return self.expected_tpot_ms < self.step_off_ms

    def line(self) -> str:
        be = self.break_even
        when = "never (the step costs more than k + 1 plain steps)" if be is None else f"above a = {be:.2f}"
        return (f"MTP k={self.k}: step {self.step_ms:.1f} ms vs {self.step_off_ms:.1f} ms off ({self.ratio:.2f}x); "
                f"pays off on this path {when}; at a = {self.acceptance:.2f} ({self.acceptance_source}) "
                f"{self.tokens_per_step:.2f} tokens/step, expected TPOT {self.expected_tpot_ms:.1f} ms")

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k, "step_ms": round(self.step_ms, 3), "step_off_ms": round(self.step_off_ms, 3),
            "step_ratio": round(self.ratio, 4), "break_even_acceptance": None if self.break_even is None else round(self.break_even, 4),
            "acceptance": round(self.acceptance, 4), "acceptance_source": self.acceptance_source,
            "tokens_per_step": round(self.tokens_per_step, 4), "expected_tpot_ms": round(self.expected_tpot_ms, 3),
            "pays_off": self.pays_off,
        }
