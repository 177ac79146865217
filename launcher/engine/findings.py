"""What a check of an argv produces (Finding), and the state one check carries between its stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.engine.schemas import Option

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One verdict about an argv: an `error` makes vLLM refuse it, a `warning` does not."""

    severity: str
    option: str
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        text = f"{self.severity}: {self.option}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "option": self.option, "message": self.message,
                "fix": self.fix}


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


@dataclass
class Token:
    """One argv string after FlexibleArgumentParser's preprocessing, with what the user wrote."""

    text: str
    origin: str
    dotted: tuple[str, ...] = ()


@dataclass
class Occurrence:
    """One option as argparse consumed it."""

    opt: Option
    token: str  # as the user wrote it
    spelling: str
    raw: list[str]
    value: Any
    abbreviated: bool
    dotted: tuple[str, ...] = ()


@dataclass
class Result:
    findings: list[Finding] = field(default_factory=list)
    occurrences: list[Occurrence] = field(default_factory=list)
    model: str | None = None
    config_file: bool = False

    def error(self, option: str, message: str, fix: str | None = None) -> None:
        self.findings.append(Finding(ERROR, option, message, fix))

    def warn(self, option: str, message: str, fix: str | None = None) -> None:
        self.findings.append(Finding(WARNING, option, message, fix))
