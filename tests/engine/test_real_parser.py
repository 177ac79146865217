"""launcher's engine knowledge against the real vLLM of every supported version.

1. Every shipped profile's rendered argv and every argv of the unit table (tests/argv_cases.py)
   go through vLLM's own `vllm serve` parser plus the checks it makes before loading a model
   (tools/vllm_parse_batch.py); vLLM's accept/reject must equal launcher's `check_argv` verdict.
2. The schema regenerated from the real install must equal the committed file (drift).
"""

from __future__ import annotations

import difflib
import os

import pytest

from launcher import engine
from tests.engine.real_engines import CASES, FILE_DEPENDENT, REPO, SHIPPED, RealEngines, option_sweep

pytestmark = pytest.mark.engine
VERSIONS = engine.shipped_versions()  # learned schemas have no venv to compare with


def _launcher_accepts(argv: tuple[str, ...], version: str) -> tuple[bool, list[engine.Finding]]:
    found = engine.check_argv(list(argv), version)
    return not engine.errors(found), found


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_table_verdict_agrees_with_vllm(real_engines: RealEngines, case, version: str) -> None:
    real = real_engines.get(version).verdicts[case.argv]
    ours, found = _launcher_accepts(case.argv, version)
    assert real["ok"] == ours, (
        f"vLLM {version} {'accepts' if real['ok'] else 'rejects'} {case.id} "
        f"({real['stage']}: {real['error']}); launcher says: {[str(f) for f in found]}"
    )


def _shipped_params() -> list:
    if isinstance(SHIPPED, str):
        return [pytest.param(None, v, id=f"no-profiles-{v}") for v in VERSIONS]
    return [pytest.param(s, v, id=f"{s.name}-{v}") for s in SHIPPED for v in VERSIONS]


@pytest.mark.parametrize(("profile", "version"), _shipped_params())
def test_shipped_profile_verdict_agrees_with_vllm(real_engines: RealEngines, profile, version: str) -> None:
    if profile is None:
        pytest.fail(f"no shipped profiles to check: {SHIPPED}")
    assert profile.argv is not None, f"{profile.name}: {profile.problem}"
    real = real_engines.get(version).verdicts[profile.argv]
    ours, found = _launcher_accepts(profile.argv, version)
    assert real["ok"] == ours, (
        f"{profile.name} on vLLM {version}: vLLM {'accepts' if real['ok'] else 'rejects'} "
        f"({real['stage']}: {real['error']}); launcher says: {[str(f) for f in found]}"
    )
    if version == profile.version:
        assert real["ok"], f"{profile.name} targets vLLM {version}, which rejects it: {real['error']}"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_option_agrees_with_vllm(real_engines: RealEngines, version: str) -> None:
    """Each option and spelling with a good value, a bad value, no value, `=value` and `None`
    (all but the file-dependent ones: %s)."""
    verdicts = real_engines.get(version).verdicts
    env = dict(os.environ)  # what the batch process ran with (VLLM_USE_RUST_FRONTEND for --grpc-port)
    sweep = option_sweep(version)
    wrong = []
    for argv in sweep:
        real = verdicts[argv]
        ours, found = _launcher_accepts_env(argv, version, env)
        if real["ok"] != ours:
            wrong.append(f"{' '.join(argv[1:])}: vLLM {'accepts' if real['ok'] else 'rejects'} "
                         f"({real['error']}); launcher: {[str(f) for f in engine.errors(found)]}")
    assert not wrong, f"{len(wrong)} of {len(sweep)} verdicts differ:\n" + "\n".join(wrong[:25])


test_every_option_agrees_with_vllm.__doc__ = (test_every_option_agrees_with_vllm.__doc__ or "") % (
    ", ".join(sorted(FILE_DEPENDENT)))


def _launcher_accepts_env(argv, version, env):
    found = engine.check_argv(list(argv), version, env=env)
    return not engine.errors(found), found


@pytest.mark.parametrize("version", VERSIONS)
def test_schema_has_not_drifted(real_engines: RealEngines, version: str) -> None:
    committed = (REPO / "launcher" / "engines" / f"vllm-{version}.json").read_text()
    fresh = real_engines.get(version).schema_text
    if fresh != committed:
        diff = "".join(list(difflib.unified_diff(
            committed.splitlines(True), fresh.splitlines(True),
            f"committed vllm-{version}.json", "regenerated", n=1))[:80])
        meta = engine.load_engine(version).meta
        pytest.fail(f"launcher/engines/vllm-{version}.json differs from the installed vLLM; "
                    f"regenerate it with: {meta['generator']}\n{diff}")
