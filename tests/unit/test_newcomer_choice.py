"""`--profile auto` says why it chose, and when nothing runs, the closest profile and what makes it run (issue 17)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.hardware.inventory import load_inventory
from launcher.preflight.choice import NoProfileRuns, choose_auto, run_preflight
from launcher.preflight.run import kv_fit_hook
from tests.helpers import FIXTURES

INVENTORIES = FIXTURES / "inventories"


def inventory(name: str):  # type: ignore[no-untyped-def]
    return load_inventory(INVENTORIES / f"{name}.json")


def test_choice_between_two_runnable_profiles_names_the_deciding_warning() -> None:
    """2 x RTX 3090: dual-3090 (262144 tokens) does not fit the KV cache (measured), dual-3090-full (200000, 2 sequences) does."""
    from launcher.preflight.choice import choice_lines

    auto = choose_auto(inventory("rtx3090x2-idle"), environ={}, kv_fit=kv_fit_hook())
    lines = choice_lines(auto)
    assert lines[0].startswith("auto: chose dual-3090-full (runnable")
    assert "dual-3090 (runs with max_model_len 150400)" in lines[-1], lines
    assert lines[-1].startswith("  not chosen: ") and "tp8 (gpu-count)" in lines[-1]


@pytest.mark.parametrize(("fixture", "other", "reason"), [
    ("h200x2", "dual-3090-full", "a longer context: max_model_len 262144 vs 200000"),
    ("a100-80gbx4", "dual-3090", "more of the GPUs put to use: 4 vs 2"),
    ("h100x8", "tp8", "fewer warnings: tp4x2 has no warnings, tp8 1 warning (scale-out)"),
])
def test_each_reason_is_the_first_measure_that_differs(fixture: str, other: str, reason: str) -> None:
    from launcher.preflight.choice import choice_lines

    lines = choice_lines(choose_auto(inventory(fixture), environ={}, kv_fit=kv_fit_hook()))
    assert f"  over {other}: {reason}" in lines


def test_nothing_runs_on_one_gpu_the_closest_runs_with_overrides_that_were_rechecked() -> None:
    inv = inventory("h200x1")
    with pytest.raises(NoProfileRuns) as exc:
        choose_auto(inv, environ={}, kv_fit=kv_fit_hook())
    closest = exc.value.closest
    assert closest is not None and closest.runs
    assert "hardware.gpu_count=1" in closest.sets and "parallel.tensor_parallel_size=1" in closest.sets
    # The overrides really make it runnable: checked again here, independently.
    _, report = run_preflight(closest.name, (), closest.sets, (), inv, environ={}, kv_fit=kv_fit_hook())
    assert report.ok
    first, *rest = str(exc.value).splitlines()
    assert "closest: " in first and "(re-checked)" in first
    assert len(rest) == len(exc.value.found) and all(line.startswith("  ") for line in rest)
    assert exc.value.exit_code == 3


def test_nothing_runs_and_no_override_helps_says_what_the_hardware_lacks() -> None:
    with pytest.raises(NoProfileRuns) as exc:
        choose_auto(inventory("t4x2"), environ={}, kv_fit=kv_fit_hook())
    assert exc.value.closest is not None and not exc.value.closest.runs
    first = str(exc.value).splitlines()[0]
    assert "no override makes any profile run" in first and "compute-capability: use Ampere or newer GPUs" in first


def test_driver_too_old_is_named_as_what_still_fails() -> None:
    with pytest.raises(NoProfileRuns) as exc:
        choose_auto(inventory("driver-too-old"), environ={}, kv_fit=kv_fit_hook())
    assert exc.value.closest is not None and exc.value.closest.name in ("dual-3090", "dual-3090-full")
    assert "driver: install NVIDIA driver 580" in exc.value.closest.still


def test_check_auto_json_on_failure_prints_the_closest_then_exits_3() -> None:
    result = CliRunner().invoke(cli, ["check", "--profile", "auto", "--inventory", str(INVENTORIES / "h200x1.json"), "--json"])
    assert isinstance(result.exception, NoProfileRuns)
    data = json.loads(result.stdout)
    assert data["runnable"] is False and data["auto"]["chosen"] is None
    assert data["auto"]["closest"]["runs"] is True and data["auto"]["closest"]["sets"]
    assert {c["name"] for c in data["auto"]["considered"]} >= {"dual-3090", "tp8"}


def test_shrink_keeps_the_profile_and_picks_the_largest_valid_tp() -> None:
    from launcher.preflight.choice import candidates, shrink_sets

    found = {c.name: c for c in candidates(inventory("h200x1"), environ={})}
    assert shrink_sets(found["dual-3090"], inventory("h200x1")) == (
        "hardware.gpu_count=1", "parallel.tensor_parallel_size=1", "env.CUDA_VISIBLE_DEVICES=0")
    assert "parallel.data_parallel_size=1" in shrink_sets(found["tp4x2"], inventory("h200x1"))
    assert shrink_sets(found["tp4-pp2-2node"], inventory("h200x1")) == ()  # an engine over nodes is not shrunk
