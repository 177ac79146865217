"""Exec: replace this process with vLLM, so signals and the exit code belong to vLLM."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import Mapping, NoReturn

from launcher.errors import EngineStartError, ProfileError
from launcher.render import Rendered


def child_environment(rendered: Rendered, environ: Mapping[str, str]) -> dict[str, str]:
    """The process environment, plus the profile's variables, plus secrets copied by reference."""
    env = dict(environ)
    env.update(rendered.env)
    for target, source in rendered.env_from.items():
        if source in environ:
            env[target] = environ[source]
        elif target in rendered.secret_values:
            env[target] = rendered.secret_values[target]  # a secret the profile itself holds (printed by reference only)
        else:
            raise ProfileError(f"server.api_key_env: environment variable {source} is not set (it holds the API key for vLLM)")
    return env


def printable(rendered: Rendered) -> str:
    """The command as a person would type it; secrets appear as references, never values."""
    parts = [f"{k}={shlex.quote(v)}" for k, v in rendered.env.items()]
    parts += [f'{k}="${{{s}}}"' for k, s in rendered.env_from.items()]
    return " ".join(parts + [shlex.join(rendered.argv)])


def exec_vllm(rendered: Rendered, environ: Mapping[str, str] | None = None) -> NoReturn:
    """Print the exact command to stderr, then os.execvpe it. Never returns."""
    environ = os.environ if environ is None else environ
    env = child_environment(rendered, environ)
    program = rendered.argv[0]
    if shutil.which(program, path=env.get("PATH")) is None:
        raise EngineStartError(
            f"'{program}' not found on PATH; install vLLM (pip install 'launcher[vllm]') or run the launcher container"
        )
    print(f"launcher: exec: {printable(rendered)}", file=sys.stderr, flush=True)
    try:
        os.execvpe(program, list(rendered.argv), env)
    except OSError as exc:
        raise EngineStartError(f"could not start {program}: {exc.strerror or exc}") from None
