"""Colour where a person reads: PASS/WARN/FAIL and the fit bar coloured on a terminal, plain text otherwise.

Text is always built with the colour codes (click.style); `echo` hands it to click.echo, which strips them
when the stream is not a terminal (a pipe, a file, CliRunner), and is told to strip them when NO_COLOR is
set to anything but the empty string (no-color.org).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import click

STATUS_COLOURS = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "bright_black"}
ROLE_COLOURS = {  # the fit bar and verdicts
    "weights": "blue",
    "activations": "magenta",
    "graphs": "cyan",
    "kv": "green",
    "free": "bright_black",
    "fits": "green",
    "marginal": "yellow",
    "does-not-fit": "red",
}


def colour() -> Optional[bool]:
    """click.echo's `color`: False when NO_COLOR is set (not empty), else None (a terminal gets colour, anything else not)."""
    return False if os.environ.get("NO_COLOR", "") != "" else None


def status(word: str, width: int = 5) -> str:
    """`PASS ` in green, `WARN ` yellow, `FAIL ` bold red, `SKIP ` grey (padding outside the colour)."""
    text = word.upper()
    return click.style(text, fg=STATUS_COLOURS.get(word), bold=True if word == "fail" else None) + " " * max(0, width - len(text))


def paint(text: str, role: str) -> str:
    """`text` in the colour of a fit role (weights, kv, fits, ...); unknown roles stay plain."""
    fg = ROLE_COLOURS.get(role)
    return click.style(text, fg=fg, bold=True if role == "does-not-fit" else None) if fg else text


def echo(message: Any = "", err: bool = False, nl: bool = True) -> None:
    click.echo(message, err=err, nl=nl, color=colour())
