"""launcher.hardware.gpu.probe against a fake pynvml module object (tests/fakes/nvml.py), fed with values
captured on real GPUs.

The fake follows nvidia-ml-py's signatures, including its traps: NVML_P2P_CAPS_INDEX_READ is the
tuple `(0,)` there, and passing it on fails inside ctypes, as the raw 2 x H200 capture shows
("argument 3: TypeError: Don't know how to convert parameter 3").
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from launcher.errors import HardwareError
from launcher.hardware.gpu import load_pynvml, probe
from launcher.hardware.inventory import dump_inventory, load_inventory
from tests.fakes.nvml import LIBRARY_NOT_FOUND, NOT_SUPPORTED, fake_nvml
from tests.helpers import FIXTURES as ALL_FIXTURES

# Raw NVML readings from a 2 x H200 machine, in the capture script's own keys (tests/fixtures/README.md).
RAW_H200X2 = ALL_FIXTURES / "nvml" / "h200x2-raw.json"
FIXTURES = ALL_FIXTURES / "inventories"

def raw_capture() -> dict[str, Any]:
    """The raw 2 x H200 NVML capture, in inventory shape (its own keys renamed)."""
    raw = json.loads(RAW_H200X2.read_text())
    gpus = []
    for g in raw["gpus"]:
        gpus.append({
            "index": g["index"], "uuid": g["uuid"], "name": g["name"], "pci_bus_id": g["pci_bus_id"],
            "memory_total_bytes": g["memory_total"], "memory_free_bytes": g["memory_free"], "memory_used_bytes": g["memory_used"],
            "compute_capability": g["cc"], "mig_mode": bool(g["mig_mode"][0]), "processes": g["processes"], "brand": "nvidia",
            "nvlink_active_links": 18 if g["nvlink_state_0"] == 1 else 0,
        })
    # The capture read NVLink P2P (0 = NVML_P2P_STATUS_OK) and the topology (30 = host bridge); its read query failed.
    links = [{"gpus": [0, 1], "nvlink": "ok", "topology": "hostbridge"}]
    return {"driver_version": raw["driver"], "cuda_driver_version": raw["cuda_driver_version"], "nvml_version": raw["nvml_version"],
            "gpus": gpus, "links": links}


# ------------------------------------------------------------------ the raw 2 x H200 capture


def test_probe_reads_the_raw_h200_capture() -> None:
    nvml = fake_nvml(raw_capture())
    inv = probe(nvml, environ={"NVIDIA_VISIBLE_DEVICES": "0,1", "HOME": "/root"}, now="2026-11-28T20:00:00Z")
    assert inv.driver_version == "580.159.04" and inv.cuda_driver_version == 13000 and inv.nvml_version == "13.580.159.04"
    assert [g.uuid for g in inv.gpus] == ["GPU-acaf2962-c5d9-e608-4083-a0d099e9f9ab", "GPU-ac2a6325-361f-b791-58a6-08ac6eef00e1"]
    g0 = inv.gpus[0]
    assert (g0.name, g0.compute_capability, g0.pci_bus_id) == ("NVIDIA H200", (9, 0), "00000000:00:06.0")
    assert (g0.memory_total_bytes, g0.memory_free_bytes, g0.memory_used_bytes) == (150754820096, 150109880320, 644939776)
    assert g0.mig_mode is False and g0.processes == () and g0.nvlink_active_links == 18
    assert inv.environment == {"NVIDIA_VISIBLE_DEVICES": "0,1"}  # only the visibility variables are kept
    (link,) = inv.links
    assert link.gpus == (0, 1) and link.nvlink == "ok" and link.topology == "hostbridge"
    # The read/write queries are not answered here; NVLink P2P OK is enough to know P2P works.
    assert link.p2p_read == "error: Not Supported" and link.p2p is True
    assert nvml.calls[0] == "nvmlInit" and nvml.calls[-1] == "nvmlShutdown"


def test_p2p_index_constant_is_unwrapped_from_pynvml_tuple() -> None:
    data = raw_capture()
    data["links"][0].update(p2p_read="ok", p2p_write="ok")
    inv = probe(fake_nvml(data), environ={})
    assert inv.links[0].p2p_read == "ok" and inv.links[0].p2p_write == "ok"


def test_nvml_is_shut_down_when_a_read_fails_midway() -> None:
    nvml = fake_nvml(raw_capture(), broken={"nvmlDeviceGetCount": 999})
    with pytest.raises(HardwareError, match="NVML failed while reading the GPUs"):
        probe(nvml, environ={})
    assert nvml.calls[-1] == "nvmlShutdown"


def test_a_gpu_that_errors_becomes_an_entry() -> None:
    data = raw_capture()
    data["gpus"].append({"index": 2, "error": "lost"})
    inv = probe(fake_nvml(data), environ={})
    assert [g.index for g in inv.gpus] == [0, 1]
    (err,) = inv.gpu_errors
    assert err.index == 2 and err.error == "GPU is lost"
    assert [tuple(link.gpus) for link in inv.links] == [(0, 1)]  # no pair queries on an unreadable GPU
    assert json.loads(dump_inventory(inv))["gpus"][2] == {"index": 2, "error": "GPU is lost"}


def test_optional_reads_degrade_instead_of_failing_the_gpu() -> None:
    nvml = fake_nvml(raw_capture(), broken={
        "nvmlDeviceGetComputeRunningProcesses": NOT_SUPPORTED, "nvmlDeviceGetGraphicsRunningProcesses": NOT_SUPPORTED,
        "nvmlDeviceGetMPSComputeRunningProcesses": NOT_SUPPORTED, "nvmlDeviceGetMigMode": NOT_SUPPORTED,
        "nvmlDeviceGetTopologyCommonAncestor": NOT_SUPPORTED, "nvmlDeviceGetBrand": NOT_SUPPORTED,
    })
    inv = probe(nvml, environ={})
    assert len(inv.gpus) == 2
    assert inv.gpus[0].processes is None  # unknown, not "none"
    assert inv.gpus[0].mig_mode is None and inv.gpus[0].brand is None and inv.links[0].topology is None


def test_processes_are_named_where_nvml_can() -> None:
    data = raw_capture()
    data["gpus"][0]["processes"] = [
        {"pid": 4242, "used_memory_bytes": 1 << 30, "name": "python3", "type": "compute"},
        {"pid": 7, "used_memory_bytes": 512 << 20, "name": None, "type": "graphics"},
    ]
    inv = probe(fake_nvml(data), environ={})
    procs = {p.pid: p for p in inv.gpus[0].processes}
    assert procs[4242].name == "python3" and procs[4242].type == "compute" and procs[4242].used_memory_bytes == 1 << 30
    assert procs[7].name is None and procs[7].type == "graphics"
    assert procs[4242].describe() == "pid 4242 python3 (1.00 GiB)"


def test_mig_instances_are_listed() -> None:
    data = json.loads((FIXTURES / "mig-enabled.json").read_text())
    inv = probe(fake_nvml(data), environ={})
    assert inv.gpus[0].mig_mode is True and [m.uuid for m in inv.gpus[0].mig_devices] == [m["uuid"] for m in data["gpus"][0]["mig_devices"]]
    assert inv.gpus[1].mig_mode is False and inv.gpus[1].mig_devices == ()


def test_nvml_init_failure_is_exit_3_pointing_to_inventory() -> None:
    with pytest.raises(HardwareError) as exc:
        probe(fake_nvml(raw_capture(), init_error=LIBRARY_NOT_FOUND), environ={})
    assert exc.value.exit_code == 3
    text = str(exc.value)
    assert text.startswith("cannot read the GPUs through NVML: NVML Shared Library Not Found")
    assert "launcher check --inventory" in text and "\n" not in text


def test_missing_binding_is_exit_3_pointing_to_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(HardwareError, match=r"pip install nvidia-ml-py.*launcher check --inventory"):
        load_pynvml()


def test_real_pynvml_defines_the_tuple_constant_the_probe_unwraps() -> None:
    pynvml = pytest.importorskip("pynvml")
    from launcher.hardware.gpu import _caps_index

    assert _caps_index(pynvml, "NVML_P2P_CAPS_INDEX_READ", 0) == 0
    assert _caps_index(pynvml, "NVML_P2P_CAPS_INDEX_NVLINK", 2) == 2


# ------------------------------------------------------------------ captures from the device


@pytest.mark.parametrize("name", ["h200x2", "h200x1"])
def test_probe_replays_a_device_capture_exactly(name: str) -> None:
    path = FIXTURES / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path.name} not captured yet")
    captured = load_inventory(path)
    data = json.loads(path.read_text())
    replay = probe(fake_nvml(data), environ=data.get("environment", {}), now=captured.captured_at)
    assert replay.gpus == captured.gpus
    assert replay.gpu_errors == captured.gpu_errors
    assert replay.links == captured.links
    assert (replay.driver_version, replay.cuda_driver_version, replay.nvml_version) == (
        captured.driver_version, captured.cuda_driver_version, captured.nvml_version)
