"""Exec: replace this process with vLLM, so signals and the exit code belong to vLLM."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import Mapping, NoReturn

from launcher.errors import EngineStartError, ProfileError
from launcher.output.render import Rendered


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


def _require_module(program: str, argv: tuple[str, ...], env: Mapping[str, str]) -> None:
    """`python -m vllm...`: that Python must have the module, else the exec'd interpreter would exit 1 (not 4)."""
    if len(argv) < 3 or argv[1] != "-m" or not os.path.basename(program).startswith("python"):
        return
    top = argv[2].split(".")[0]
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({top!r}) else 3)"
    try:
        probe = subprocess.run([program, "-c", code], env=dict(env), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return  # let the exec itself report it
    if probe.returncode == 3:
        raise EngineStartError(f"{program} has no module '{top}': install vLLM into that Python, or put the vLLM environment's bin first on PATH")


def exec_vllm(rendered: Rendered, environ: Mapping[str, str] | None = None) -> NoReturn:
    """Print the exact command to stderr, then os.execvpe it. Never returns."""
    environ = os.environ if environ is None else environ
    env = child_environment(rendered, environ)
    program = rendered.argv[0]
    found = shutil.which(program, path=env.get("PATH"))
    if found is None:
        raise EngineStartError(
            f"'{program}' not found on PATH; install vLLM (pip install 'qwen36-vllm-launcher[vllm]', or pip install -e '.[vllm]' "
            "in a launcher checkout) or run the launcher container"
        )
    _require_module(found, rendered.argv, env)
    print(f"launcher: exec: {printable(rendered)}", file=sys.stderr, flush=True)
    try:
        os.execvpe(program, list(rendered.argv), env)
    except OSError as exc:
        raise EngineStartError(f"could not start {program}: {exc.strerror or exc}") from None
