"""The seams commands touch the world through (NVML, exec); tests pass fakes via click's ctx.obj."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import click

    from launcher.hardware.inventory import Inventory
    from launcher.output.render import Rendered


def _probe() -> "Inventory":
    from launcher.hardware.gpu import probe  # NVML only where GPUs are read

    return probe()


def _exec(rendered: "Rendered") -> Any:
    from launcher.live.exec import exec_vllm

    return exec_vllm(rendered)


def _supervise(*args: Any, **kwargs: Any) -> int:
    from launcher.live.supervise import serve_supervised

    return serve_supervised(*args, **kwargs)


def _run_rank(*args: Any, **kwargs: Any) -> int:
    from launcher.live.cluster import run_rank

    return run_rank(*args, **kwargs)


@dataclass(frozen=True)
class Runtime:
    """probe reads the GPUs; exec_fn replaces the process with vLLM; supervise_fn runs it as a child;
    rank_fn runs a multi-node worker (waits for its head, stops with it)."""

    probe: Callable[[], "Inventory"] = _probe
    exec_fn: Callable[["Rendered"], Any] = _exec
    supervise_fn: Callable[..., int] = _supervise
    rank_fn: Callable[..., int] = _run_rank


def runtime_of(ctx: "click.Context") -> Runtime:
    obj = ctx.find_object(Runtime)
    return obj if obj is not None else Runtime()
