"""`docker run` of this repository's image, without Docker: the image's ENTRYPOINT, CMD, ENV,
ARG and HEALTHCHECK read from the Dockerfile itself (parsed as Docker reads it, never restated).
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped, as Docker reads them."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not buf and not stripped):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a line continuation"
    return out


def only(name: str) -> str:
    found = [rest for word, rest in instructions() if word == name]
    assert len(found) == 1, f"expected exactly one {name}, found {len(found)}"
    return found[0]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec (JSON) form: {text}"
    return value


def entry_command() -> list[str]:
    return exec_form(only("ENTRYPOINT")) + exec_form(only("CMD"))


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            for token in shlex.split(rest):
                key, eq, value = token.partition("=")
                assert eq, f"ENV {rest!r}: use the KEY=value form"
                env[key] = value
    # The Dockerfile makes LAUNCHER_PROFILES_DIR (`mkdir -p`), empty; on this host the tests stand in an empty
    # directory of their own for it (launcher refuses a LAUNCHER_PROFILES_DIR that does not exist).
    if "LAUNCHER_PROFILES_DIR" in env and not Path(env["LAUNCHER_PROFILES_DIR"]).is_dir():
        env["LAUNCHER_PROFILES_DIR"] = _empty_image_dir()
    return env


@functools.lru_cache(maxsize=1)
def _empty_image_dir() -> str:
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="launcher-image-profiles-")
    atexit.register(shutil.rmtree, path, True)
    return path


def build_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ARG":
            key, _, value = rest.partition("=")
            args.setdefault(key, value)
    return args


def healthcheck() -> tuple[dict[str, str], list[str]]:
    options, sep, command = only("HEALTHCHECK").partition("CMD ")
    assert sep, "HEALTHCHECK must run a command"
    opts = dict(o.lstrip("-").split("=", 1) for o in options.split())
    return opts, exec_form(command)
