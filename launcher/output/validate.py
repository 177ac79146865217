"""The command: render, translate for the target vLLM and check against its own flags.

This is the only way launcher obtains a command to print, write or exec: shell/json/yaml/env,
compose, k8s, every node of a multi-node plan, `check --json`, `explain` and `serve` all come
through `command()` (or `render_checked()` for a loaded profile), so each output carries the same
argv for the same profile and version.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping, Sequence

from launcher.output.render import Arg, Rendered, assemble, with_args

if TYPE_CHECKING:
    from launcher.profile.load import Resolved
    from launcher.profile.schema import Profile


def command(
    profile: "Profile",
    source: str = "the profile",
    *,
    environ: Mapping[str, str] | None = None,
    more: Sequence[Arg] = (),
    env: Mapping[str, str] | None = None,
) -> Rendered:
    """assemble(), plus `more` options (per-node flags) and `env`, translated and checked for the profile's vLLM.

    Translation (e.g. dropping `--mamba-cache-mode all`, which vLLM 0.33 rejects and ignores) and
    the engine's warnings (deprecated flags, abbreviations) become the Rendered's notes. A flag the
    version rejects raises ProfileError (exit 2) naming `source` (the profile file). Extra args are included.
    """
    from launcher import engine  # the engine schemas: JSON data, no vLLM import

    rendered = assemble(profile)
    if more or env is not None:
        rendered = with_args(rendered, more, env)
    version = profile.vllm.version
    # The engine checks what follows `vllm serve`: the model first, then the options.
    opts = [profile.model.name, *rendered.argv[rendered.head :]]
    translated, changes = engine.translate_argv(opts, version)
    check_env = {**(environ or {}), **rendered.env}
    warnings = engine.ensure_valid(translated, version, source=source, env=check_env)
    notes = [f"for vLLM {version}: {c}" for c in changes]
    notes += [f"vLLM {version}: {w.option}: {w.message}" + (f" ({w.fix})" if w.fix else "") for w in warnings]
    argv = (*rendered.argv[: rendered.head], *translated[1:])
    return dataclasses.replace(rendered, argv=argv, notes=rendered.notes + tuple(notes))


def render_checked(resolved: "Resolved", environ: Mapping[str, str] | None = None) -> Rendered:
    """command() for a loaded profile, errors naming its file."""
    return command(resolved.profile, str(resolved.path), environ=environ)
