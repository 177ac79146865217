"""A check's verdict: the one result type that the memory fit, the preflight checks and the model-file
checks all return. It sits below every stage so that none of them imports another for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

Status = Literal["pass", "warn", "fail", "skip"]
STATUS_ORDER = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict; every non-pass carries a `fix` the operator can act on."""

    id: str
    status: Status
    message: str
    fix: Optional[str] = None
    gpus: tuple[int, ...] = ()  # NVML indices concerned
    data: Mapping[str, Any] = field(default_factory=dict)  # machine-readable extras (e.g. max_model_len_fit)
    sets: tuple[str, ...] = ()  # the fix as `--set key=value` items, when the profile can express it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status, "message": self.message}
        if self.fix:
            out["fix"] = self.fix
        if self.sets:
            out["sets"] = list(self.sets)
        if self.gpus:
            out["gpus"] = list(self.gpus)
        if self.data:
            out["data"] = dict(self.data)
        return out
