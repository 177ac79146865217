"""8 x H200, composed from the real 4 x H200 capture (tools/compose_inventory.py) while no 8-GPU machine is lent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from launcher.hardware.inventory import load_inventory
from launcher.preflight.choice import choose_auto, run_preflight
from tests.helpers import FIXTURES, REPO

PATH = FIXTURES / "inventories" / "h200x8-composed.json"


@pytest.mark.slow
def test_fixture_is_what_the_tool_builds_from_the_capture() -> None:
    cap = str(FIXTURES / "inventories" / "h200x4.json")
    out = subprocess.run([sys.executable, str(REPO / "tools" / "compose_inventory.py"), cap, cap, "--link-from", cap],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    built, committed = json.loads(out), json.loads(PATH.read_text())
    built["source"] = committed["source"]  # the paths given differ only in spelling
    assert built == committed


def test_tp8_runs_and_is_told_about_tp4x2() -> None:
    inventory = load_inventory(PATH)
    _, tp8 = run_preflight("tp8", inventory_source=inventory, environ={})
    assert tp8.ok and tp8.result("scale-out").fix == "use profile tp4x2"
    data = tp8.result("scale-out").data
    assert data["alternative"]["concurrency"] > 1.8 * data["current"]["concurrency"]
    for name in ("tp4", "tp4x2"):
        _, report = run_preflight(name, inventory_source=inventory, environ={})
        assert report.ok and report.result("scale-out") is None, name
    assert choose_auto(inventory, environ={}).resolved.name == "tp4x2"
