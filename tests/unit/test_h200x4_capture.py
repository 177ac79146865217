"""The real 4 x H200 capture (launcher gpus --json on the device, driver 580.159.04): verdicts and CUDA ordering."""

from __future__ import annotations

import json
import re

import pytest

from launcher.commands.gpus import format_inventory
from launcher.hardware.inventory import load_inventory, resolve_visible
from launcher.preflight.choice import choose_auto, run_preflight
from tests.helpers import FIXTURES

INVENTORY = load_inventory(FIXTURES / "inventories" / "h200x4.json")
EVIDENCE = json.loads((FIXTURES / "device" / "device-h200x4.json").read_text())


def test_gpus_table_of_the_capture_is_what_the_device_printed() -> None:
    """Today's `launcher gpus` table of the captured file is the table printed live on the device
    (a separate call, taken a second later: only the capture time differs)."""
    live = EVIDENCE["gpus_table"].splitlines()
    today = format_inventory(INVENTORY).splitlines()
    when = re.compile(r"captured \S+\)$")
    assert when.search(live[0]) and when.search(today[0])
    assert [when.sub("", live[0])] + live[1:] == [when.sub("", today[0])] + today[1:]
    assert len(INVENTORY.gpus) == 4 and len(INVENTORY.links) == 6 and all(link.p2p for link in INVENTORY.links)


@pytest.mark.parametrize("name, runnable", [("dual-3090", True), ("dual-3090-full", True), ("tp4", True), ("tp8", False), ("tp4x2", False)])
def test_verdicts_match_what_ran_on_the_device(name: str, runnable: bool) -> None:
    _, report = run_preflight(name, inventory_source=INVENTORY, environ={})
    assert report.ok is runnable
    assert (EVIDENCE["profiles"][name]["rc"] == 0) is runnable  # the live run on the device agreed
    if not runnable:
        assert [r.id for r in report.failures] == ["gpu-count"]


def test_auto_chooses_tp4() -> None:
    assert choose_auto(INVENTORY, environ={}).resolved.name == "tp4"


def test_cuda_visible_devices_mapping_agrees_with_cuda_on_the_device() -> None:
    """Each value was given to cuInit on the device; launcher must map it to the same GPUs, in order."""
    by_uuid = {g.uuid: g.index for g in INVENTORY.gpus}
    for case in EVIDENCE["cuda_visible_devices"]:
        expected = [by_uuid[u] for u in case["cuda"]["uuids"]]
        seen = [d.gpu_index for d in resolve_visible(INVENTORY, {"CUDA_VISIBLE_DEVICES": case["value"]}).devices]
        assert seen == expected, case["value"]
