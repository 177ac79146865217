"""Scale-out advice: when the profile's TP replicates KV heads (TP8 on this model), the same GPUs as
more engines of a smaller TP, with both options' fit. A preflight fact (the `scale-out` check)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Protocol

from launcher.profile.schema import Profile
from launcher.profile.topology import topology


class FitLike(Protocol):
    """What the advice reads from a fit estimate (launcher.fit.estimate.FitResult has these)."""

    @property
    def concurrency_at_max_len(self) -> float: ...

    @property
    def kv_cache_tokens(self) -> int: ...

    @property
    def verdict(self) -> str: ...


@dataclass(frozen=True)
class Option:
    """One way to use the GPUs: `engines` copies of a TP x PP engine, with its fit."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    engines: int  # data parallel ranks (independent for this dense model)
    concurrency_per_engine: float  # full-length requests one engine holds
    kv_tokens_per_engine: int
    verdict: str

    @property
    def gpus_per_engine(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def gpus(self) -> int:
        return self.gpus_per_engine * self.engines

    @property
    def concurrency(self) -> float:
        return self.concurrency_per_engine * self.engines

    @property
    def label(self) -> str:
        engine = f"TP{self.tensor_parallel_size}" + (f" x PP{self.pipeline_parallel_size}" if self.pipeline_parallel_size > 1 else "")
        return f"{self.engines} x {engine}" if self.engines > 1 else engine

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "engines": self.engines,
            "gpus": self.gpus,
            "concurrency_per_engine": round(self.concurrency_per_engine, 2),
            "concurrency": round(self.concurrency, 2),
            "kv_tokens_per_engine": self.kv_tokens_per_engine,
            "kv_tokens": self.kv_tokens_per_engine * self.engines,
            "verdict": self.verdict,
        }


# (tensor parallel, data parallel) -> the shipped profile that is exactly that layout of this model.
SHIPPED_ALTERNATIVES = {(4, 2): "tp4x2"}


@dataclass(frozen=True)
class Advice:
    """TP above the KV-head count replicates KV heads; the same GPUs as smaller-TP engines hold more."""

    kv_heads: int
    kv_head_copies: int  # how many times each KV head is stored at the current TP
    max_model_len: int
    current: Option
    alternative: Option  # same GPUs, TP = KV heads, more engines
    profile: Optional[str]  # shipped profile with the alternative's layout
    overrides: tuple[str, ...]  # --set values that turn the current profile into the alternative

    @property
    def gain(self) -> float:
        return self.alternative.concurrency / self.current.concurrency if self.current.concurrency > 0 else float("inf")

    @property
    def message(self) -> str:
        c, a = self.current, self.alternative
        one = replace(a, engines=1)
        use = f"profile {self.profile}, or " if self.profile else ""
        sets = " ".join(f"--set {o}" for o in self.overrides)
        return (
            f"TP{c.tensor_parallel_size} stores each of this model's {self.kv_heads} KV heads {self._times()} "
            f"(KV heads are replicated above TP{self.kv_heads}), so a GPU holds no more KV per token than at TP{a.tensor_parallel_size}: "
            f"{c.label} on {c.gpus} GPUs holds about {c.concurrency:.1f} full-length ({self.max_model_len}-token) requests, "
            f"{one.label} holds about {one.concurrency:.1f} on {one.gpus} GPUs. "
            f"On the same {c.gpus} GPUs, {a.label} (data parallel; {use}{sets}) holds about {a.concurrency:.1f} "
            f"({self.gain:.1f}x)."
        )

    def _times(self) -> str:
        return {2: "twice", 3: "three times"}.get(self.kv_head_copies, f"{self.kv_head_copies} times")

    def to_json(self) -> dict[str, Any]:
        return {
            "kv_heads": self.kv_heads,
            "kv_head_copies": self.kv_head_copies,
            "max_model_len": self.max_model_len,
            "current": self.current.to_json(),
            "alternative": self.alternative.to_json(),
            "profile": self.profile,
            "overrides": list(self.overrides),
            "gain": round(self.gain, 3),
            "message": self.message,
        }


def engine_variant(profile: Profile, tensor_parallel_size: int, data_parallel_size: int = 1) -> Profile:
    """The profile with another TP/DP on one machine (validated again; deployment dropped)."""
    data = profile.model_dump(mode="python")
    pp = profile.parallel.pp
    data["parallel"] = {
        **data["parallel"],
        "tensor_parallel_size": tensor_parallel_size,
        "data_parallel_size": data_parallel_size if data_parallel_size > 1 else None,
    }
    data["hardware"] = {**data["hardware"], "gpu_count": tensor_parallel_size * pp * data_parallel_size}
    data["deployment"] = None
    return Profile.model_validate(data)


def _option(profile: Profile, tp: int, engines: int, fit_fn: Callable[[Profile], FitLike]) -> Option:
    result = fit_fn(engine_variant(profile, tp))
    return Option(
        tensor_parallel_size=tp,
        pipeline_parallel_size=profile.parallel.pp,
        engines=engines,
        concurrency_per_engine=float(result.concurrency_at_max_len),
        kv_tokens_per_engine=int(result.kv_cache_tokens),
        verdict=str(result.verdict),
    )


def scale_out_advice(profile: Profile, fit_fn: Callable[[Profile], FitLike]) -> Optional[Advice]:
    """Advice when the profile's TP replicates KV heads (TP8 on this model), else None.

    `fit_fn` estimates ONE engine of the profile it is given on the GPUs being checked (e.g.
    `lambda p: fit.estimate(fit_input_for(p, gpu))`); it is called for the current TP and for the
    alternative (TP = the KV-head count), each with data parallel 1. None as well when the profile
    spans nodes (data parallel across nodes is not rendered) or when the alternative would not start
    on these GPUs (then the large TP is what makes the model fit).
    """
    from launcher.model.facts import facts_for

    facts = facts_for(profile.facts_key)
    topo = topology(profile)
    tp = topo.tensor_parallel_size
    kv_heads = facts.num_key_value_heads
    if tp <= kv_heads or topo.multi_node:
        return None
    candidates = [t for t in facts.valid_tensor_parallel_sizes if t <= kv_heads and tp % t == 0]
    if not candidates:
        return None
    alt_tp = max(candidates)
    factor = tp // alt_tp
    dp = topo.data_parallel_size
    current = _option(profile, tp, dp, fit_fn)
    alternative = _option(profile, alt_tp, dp * factor, fit_fn)
    if alternative.verdict == "does-not-fit":
        return None
    overrides = (f"parallel.tensor_parallel_size={alt_tp}", f"parallel.data_parallel_size={dp * factor}")
    return Advice(
        kv_heads=kv_heads,
        kv_head_copies=tp // kv_heads,
        max_model_len=_max_len(profile, facts.max_position_embeddings),
        current=current,
        alternative=alternative,
        profile=SHIPPED_ALTERNATIVES.get((alt_tp, dp * factor)),
        overrides=overrides,
    )


def _max_len(profile: Profile, limit: int) -> int:
    value = profile.engine.max_model_len
    return value if isinstance(value, int) else limit
