"""One validator for every number a user types as a float option: finite and within its range.

`click.FloatRange(min=1)` lets `nan` through (every comparison with NaN is false), `inf` and `1e300` too: a
`nan` deadline never ends, an infinite GPU size reaches arithmetic that raises. `Finite` refuses them as a
usage error (exit 2) naming the option.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import click

# Longest deadline an option takes: 30 days in seconds (a timer beyond that is a typo, and past ~1e9 s the
# platform's timers overflow).
MAX_SECONDS = 30 * 24 * 3600.0
# Largest GPU memory a card may be described with, in GiB (the largest cards hold under 300).
MAX_GPU_GIB = 4096.0


def finite(value: Any, name: str, minimum: Optional[float] = None, maximum: Optional[float] = None) -> float:
    """`value` as a finite float within [minimum, maximum]; ValueError with a one-line reason otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}: {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{name}: {str(value)[:40]!r} is not a finite number")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name}: {number:g} is below the minimum {minimum:g}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}: {number:g} is above the maximum {maximum:g}")
    return number


class Finite(click.ParamType):
    """A float option that is finite and within [min, max] (NaN, Infinity and absurd values refused, exit 2)."""

    name = "float"

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None) -> None:  # noqa: A002 (click's spelling)
        self.min = min
        self.max = max

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        if isinstance(value, float) and math.isfinite(value) and (self.min is None or value >= self.min) and (
                self.max is None or value <= self.max):
            return value
        try:
            return finite(value, "value", self.min, self.max)
        except ValueError as exc:
            self.fail(str(exc).removeprefix("value: "), param, ctx)

    def __repr__(self) -> str:
        return f"Finite({self.min}, {self.max})"
