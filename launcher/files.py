"""One bounded reader for the files a user hands launcher (inventories, bench runs, vLLM logs, checkpoint metadata).

A named file may be anything: `/dev/zero` (reads until killed), a FIFO (blocks forever), a directory, a
multi-gigabyte log, JSON nested 100,000 deep or holding a 5,000-digit number. Every such read goes through
`read_bytes`/`read_text`/`read_json`: regular files only (checked on the opened descriptor, so a swap after
the check is caught too), at most `limit` bytes, and every failure a ProfileError (exit 2) naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Union

from launcher.errors import ProfileError

PathLike = Union[str, "os.PathLike[str]"]

MAX_JSON_BYTES = 64 << 20  # an inventory, a bench result or a model index is KiB to a few MiB
MAX_TEXT_BYTES = 256 << 20  # a vLLM start log or a /metrics snapshot: MiB
MAX_JSON_DEPTH = 64  # real files nest 3 to 6 deep


class _NotRegular(Exception):
    pass


def read_bytes(path: PathLike, limit: int, what: str = "file") -> bytes:
    """At most `limit` bytes of a regular file; ProfileError for a missing, special, unreadable or larger file."""
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)  # a FIFO must not block the open
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise ProfileError(f"{p}: missing (no such {what})") from None
    except IsADirectoryError:
        raise ProfileError(f"{p}: is a directory, not a {what}") from None
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ProfileError(f"{p}: is a directory, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise ProfileError(f"{p}: not a regular file ({_kind(info.st_mode)}); a {what} is read from a plain file")
        if info.st_size > limit:
            raise ProfileError(f"{p}: too large for a {what} ({info.st_size} bytes, over {_size(limit)})")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while being read
                raise ProfileError(f"{p}: too large for a {what} (over {_size(limit)})")
        return b"".join(chunks)
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path: PathLike, limit: int = MAX_TEXT_BYTES, what: str = "file", errors: str = "strict") -> str:
    """A bounded regular file as UTF-8 text (`errors="replace"` for logs, strict elsewhere)."""
    raw = read_bytes(path, limit, what)
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError:
        raise ProfileError(f"{Path(path)}: not UTF-8 text") from None


def parse_json(text: str, source: str, allow_nan: bool = False) -> Any:
    """JSON as launcher accepts it from a file: bounded nesting and digits; no NaN/Infinity (nor numbers that
    overflow to it) unless `allow_nan` (then the caller checks every number it uses).

    ProfileError (exit 2) naming `source` for anything else, never RecursionError or ValueError.
    """
    _check_depth(text, source)
    try:
        if allow_nan:
            return json.loads(text)
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except _BadNumber as exc:
        raise ProfileError(f"{source}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise ProfileError(f"{source}: not JSON launcher can read: {str(exc)[:120]}") from None


def read_json(path: PathLike, limit: int = MAX_JSON_BYTES, what: str = "JSON file", allow_nan: bool = False) -> Any:
    """A bounded regular file, parsed by `parse_json`."""
    return parse_json(read_text(path, limit, what), str(Path(path)), allow_nan)


class _BadNumber(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a number launcher accepts")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"the number {text[:40]}{'...' if len(text) > 40 else ''} is too large")
    return value


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH before the parser recurses into it (brackets inside strings skipped)."""
    depth = 0
    for m in _JSON_TOKENS.finditer(text):
        ch = m.group(0)
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ProfileError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"
