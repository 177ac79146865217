"""Every shipped profile's rendered argv is pinned; dual-3090 is the model card's minimum command."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.output.compile_cache import CACHE_ENV, cache_env
from launcher.output.render import assemble
from launcher.output.validate import render_checked
from launcher.profile.load import list_profiles, resolve, shipped_profiles_dir
from tests.helpers import card_command, option_map

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SHIPPED = sorted(list_profiles([shipped_profiles_dir()]))


def _golden_text(name: str) -> str:
    # A fixed HOME: local model paths (`~/...`) are expanded when profiles load.
    r = render_checked(resolve(name, environ={"HOME": "/home/operator"}))
    lines = [f"{k}={v}" for k, v in r.env.items()] + ["--"] + list(r.argv)
    return "\n".join(lines) + "\n"


def test_core_profiles_are_shipped() -> None:
    assert {"dual-3090", "dual-3090-full", "tp4", "tp8"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_rendered_argv_matches_golden(name: str, request: pytest.FixtureRequest) -> None:
    path = GOLDEN / f"{name}.argv"
    text = _golden_text(name)
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert path.exists(), f"no golden file for {name}; run pytest --update-golden and review the diff"
    assert text == path.read_text(), f"render of {name} changed; review and run pytest --update-golden"


def test_dual_3090_is_the_card_minimum_command_flag_for_flag() -> None:
    card_env, card_argv = card_command("minimum")
    resolved = resolve("dual-3090", environ={})
    r = render_checked(resolved)
    assert {k: v for k, v in r.env.items() if k not in CACHE_ENV} == card_env  # the card's, plus the compile cache root
    assert {k: r.env[k] for k in CACHE_ENV} == cache_env(resolved.profile.vllm.cache_dir or "")
    assert list(r.argv[:3]) == card_argv[:3]  # vllm serve MODEL
    assert option_map(list(r.argv[3:])) == option_map(card_argv[3:])


def test_dual_3090_full_is_the_card_full_command_minus_what_vllm_033_rejects() -> None:
    card_env, card_argv = card_command("full")
    r = render_checked(resolve("dual-3090-full", environ={}))
    card = option_map(card_argv[3:])
    assert card.pop("--mamba-cache-mode") == "all"
    assert {k: v for k, v in r.env.items() if k not in CACHE_ENV} == card_env
    assert option_map(list(r.argv[3:])) == card
    assert any("dropped `--mamba-cache-mode all`" in n and "has no effect" in n and "not even an accepted value" in n for n in r.notes)
    assert "--mamba-cache-mode" in assemble(resolve("dual-3090-full", environ={}).profile).argv  # the profile keeps the card's value
