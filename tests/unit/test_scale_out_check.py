"""The tp8 finding: `launcher check` says TP8 replicates KV heads and offers the same GPUs as 2 x TP4."""

from __future__ import annotations

from launcher.hardware.inventory import load_inventory
from launcher.preflight.choice import run_preflight
from tests.helpers import FIXTURES


def test_tp8_on_8_h100_warns_and_offers_tp4x2_with_numbers() -> None:
    inventory = load_inventory(FIXTURES / "inventories" / "h100x8.json")
    _, report = run_preflight("tp8", inventory_source=inventory, environ={})
    advice = report.result("scale-out")
    assert report.ok and advice is not None and advice.status == "warn"
    assert "stores each of this model's 4 KV heads twice" in advice.message
    assert advice.fix == "use profile tp4x2"
    current, alternative = advice.data["current"], advice.data["alternative"]
    # docs/memory-model.md#worked-numbers: TP8 on 8 x H100 holds ~29.5 full-length requests; two TP4 engines about twice TP4's ~27.
    assert 26 < current["concurrency"] < 31 and alternative["concurrency"] > 1.7 * current["concurrency"]
    _, tp4x2 = run_preflight("tp4x2", inventory_source=inventory, environ={})
    assert tp4x2.ok and tp4x2.result("scale-out") is None


def test_tp4_gets_no_scale_out_advice() -> None:
    inventory = load_inventory(FIXTURES / "inventories" / "a100-80gbx4.json")
    _, report = run_preflight("tp4", inventory_source=inventory, environ={})
    assert report.result("scale-out") is None
