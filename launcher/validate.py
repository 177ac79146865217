"""Render and check against the target vLLM's own flags: the command every CLI path prints or execs."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from launcher.load import Resolved
from launcher.render import Rendered, render


def render_checked(resolved: Resolved, environ: Mapping[str, str] | None = None) -> Rendered:
    """render(), then translate for the profile's vLLM version and refuse what it would reject.

    Translation (e.g. dropping `--mamba-cache-mode all`, which vLLM 0.33 rejects and ignores) and
    the engine's warnings (deprecated flags, abbreviations) become the Rendered's notes. A flag the
    version rejects raises ProfileError (exit 2) naming the profile file. Extra args are included.
    """
    from launcher import engine  # the engine schemas: JSON data, no vLLM import

    profile = resolved.profile
    rendered = render(profile)
    version = profile.vllm.version
    # The engine checks what follows `vllm serve`: the model first, then the options.
    opts = [profile.model.name, *rendered.argv[rendered.head :]]
    translated, changes = engine.translate_argv(opts, version)
    env = {**(environ or {}), **rendered.env}
    warnings = engine.ensure_valid(translated, version, source=str(resolved.path), env=env)
    notes = [f"for vLLM {version}: {c}" for c in changes]
    notes += [f"vLLM {version}: {w.option}: {w.message}" + (f" ({w.fix})" if w.fix else "") for w in warnings]
    argv = (*rendered.argv[: rendered.head], *translated[1:])
    return dataclasses.replace(rendered, argv=argv, notes=rendered.notes + tuple(notes))
