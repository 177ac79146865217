"""The inventory format (what `launcher gpus --json` writes and `check --inventory` reads) and GPU visibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.hardware.catalog import lookup
from launcher.hardware.inventory import (
    GIB,
    Gpu,
    GpuError,
    Inventory,
    Link,
    MigDevice,
    dump_inventory,
    inventory_json_schema,
    load_inventory,
    parse_inventory,
    resolve_visible,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"
ALL_FIXTURES = sorted(FIXTURES.glob("*.json"))

MINIMAL = {
    "driver_version": "580.95.05",
    "cuda_driver_version": 13000,
    "gpus": [
        {
            "index": 0,
            "uuid": "GPU-11111111-aaaa-bbbb-cccc-000000000000",
            "name": "NVIDIA GeForce RTX 3090",
            "memory_total_bytes": 25769803776,
            "memory_free_bytes": 25434259456,
            "compute_capability": [8, 6],
        }
    ],
}


def edited(change) -> dict:
    data = json.loads(json.dumps(MINIMAL))
    change(data)
    return data


# ------------------------------------------------------------------ the format


def test_minimal_hand_written_file_needs_only_the_required_keys() -> None:
    inv = parse_inventory(MINIMAL, "hand.json")
    (gpu,) = inv.gpus
    assert inv.driver_version == "580.95.05" and inv.cuda_driver_version == 13000 and inv.cuda_text == "13.0"
    assert gpu.compute_capability == (8, 6)
    assert gpu.processes is None  # absent = unknown, not "none"
    # without a reserved field, CUDA's total comes from the GPU table (never NVML's raw total)
    assert gpu.memory_reserved_bytes is None and gpu.cuda_total_bytes == lookup("RTX 3090").cuda_total_bytes < gpu.memory_total_bytes
    assert inv.links == () and inv.environment == {}


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.stem)
def test_every_fixture_loads_and_round_trips(path: Path) -> None:
    inv = load_inventory(path)
    assert inv.count >= 1
    again = parse_inventory(json.loads(dump_inventory(inv)), str(path))
    assert again.gpus == inv.gpus and again.gpu_errors == inv.gpu_errors and again.links == inv.links
    assert again.driver_version == inv.driver_version and dict(again.environment) == dict(inv.environment)


def test_dump_writes_the_documented_keys() -> None:
    inv = Inventory(
        driver_version="580.159.04",
        cuda_driver_version=13000,
        gpus=(
            Gpu(index=0, uuid="GPU-a", name="NVIDIA H200", memory_total_bytes=150754820096, memory_free_bytes=150109880320,
                compute_capability=(9, 0), processes=()),
        ),
        gpu_errors=(GpuError(index=1, error="GPU is lost"),),
        links=(Link(gpus=(0, 1), p2p_read="error: GPU is lost"),),
        source="nvml",
    )
    data = json.loads(dump_inventory(inv))
    assert data["format"] == "launcher-inventory/1"
    assert data["gpus"][0]["compute_capability"] == [9, 0] and data["gpus"][0]["processes"] == []
    assert data["gpus"][1] == {"index": 1, "error": "GPU is lost"}
    assert data["links"] == [{"gpus": [0, 1], "p2p_read": "error: GPU is lost"}]
    assert parse_inventory(data).gpu_errors == inv.gpu_errors


def test_compute_capability_may_be_written_as_text() -> None:
    inv = parse_inventory(edited(lambda d: d["gpus"][0].update(compute_capability="8.9")))
    assert inv.gpus[0].compute_capability == (8, 9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["gpus"][0].pop("memory_free_bytes"), "hand.json: gpus[0].memory_free_bytes: is required"),
        (lambda d: d.pop("cuda_driver_version"), "hand.json: cuda_driver_version: is required"),
        (lambda d: d["gpus"][0].update(memory_fre=1), "hand.json: gpus[0].memory_fre: unknown key; did you mean 'memory_free_bytes'?"),
        (lambda d: d.update(driver=1), "hand.json: driver: unknown key; did you mean 'driver_version'?"),
        (lambda d: d.update(driver_version=580), "hand.json: driver_version: Input should be a valid string (got 580)"),
        (lambda d: d["gpus"][0].update(compute_capability="sm86"), 'hand.json: gpus[0].compute_capability: expected a compute capability like "8.6" or [8, 6]'),
        (lambda d: d["gpus"][0].update(memory_free_bytes=10**14), "hand.json: gpus[0].memory_free_bytes: is larger than memory_total_bytes"),
        (lambda d: d["gpus"].append(dict(d["gpus"][0])), "hand.json: gpus: index 0 appears twice"),
        (lambda d: d.update(links=[{"gpus": [0, 3]}]), "hand.json: links[0].gpus: [0, 3] must name two different GPUs"),
        (lambda d: d.update(links=[{"gpus": [0, 0]}]), "hand.json: links[0].gpus: [0, 0] must name two different GPUs"),
        (lambda d: d.update(format="launcher-inventory/9"), "hand.json: format: Input should be 'launcher-inventory/1'"),
        (lambda d: d.update(environment={"PATH": "/bin"}), "hand.json: environment: only CUDA_VISIBLE_DEVICES"),
        (lambda d: d["gpus"][0].update(processes=[{"pid": 1, "nam": "x"}]), "hand.json: gpus[0].processes[0].nam: unknown key; did you mean 'name'?"),
    ],
)
def test_bad_inventory_is_one_line_naming_file_and_key(change, message: str) -> None:
    with pytest.raises(ProfileError) as exc:
        parse_inventory(edited(change), "hand.json")
    text = str(exc.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_bad_p2p_status_lists_the_valid_ones() -> None:
    with pytest.raises(ProfileError, match=r"links\[0\]\.p2p_read: must be one of ok, chipset_not_supported"):
        parse_inventory(edited(lambda d: d.update(links=[{"gpus": [0, 1], "p2p_read": "yes"}]) or d["gpus"].append(
            {**d["gpus"][0], "index": 1, "uuid": "GPU-2"})), "hand.json")


def test_several_problems_are_counted_not_listed() -> None:
    with pytest.raises(ProfileError, match=r"\(and 1 more problem\)$"):
        parse_inventory(edited(lambda d: (d.pop("driver_version"), d.pop("cuda_driver_version"))), "hand.json")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"missing\.json: inventory file does not exist \(write one with `launcher gpus --json"):
        load_inventory(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"driver_version": "580",\n  "gpus": [,]}')
    with pytest.raises(ProfileError, match=r"broken\.json:2:12: not valid JSON: Expecting value"):
        load_inventory(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ProfileError, match=r"list\.json: an inventory must be a JSON object"):
        load_inventory(listed)


def test_schema_documents_required_keys() -> None:
    schema = inventory_json_schema()
    assert set(schema["required"]) == {"driver_version", "cuda_driver_version", "gpus"}
    gpu = schema["$defs"]["Gpu"]
    assert set(gpu["required"]) == {"index", "uuid", "name", "memory_total_bytes", "memory_free_bytes", "compute_capability"}
    assert all(p.get("description") for p in gpu["properties"].values())


def test_cuda_total_is_nvml_total_minus_reserved() -> None:
    # RTX 3090: NVML 24576 MiB total, CUDA reports 23.69 GiB (docs/memory-model.md#gpu-memory-table).
    inv = load_inventory(FIXTURES / "rtx3090x2-idle.json")
    assert inv.gpus[0].memory_total_bytes == 24576 << 20
    assert inv.gpus[0].cuda_total_bytes / GIB == pytest.approx(23.69, abs=0.01)


# ------------------------------------------------------------------ visibility


def four_gpus(**env) -> Inventory:
    gpus = tuple(
        Gpu(index=i, uuid=f"GPU-{i}{i}{i}{i}-{i}", name="NVIDIA A100-SXM4-80GB", memory_total_bytes=80 * GIB,
            memory_free_bytes=79 * GIB, compute_capability=(8, 0))
        for i in range(4)
    )
    return Inventory("580.95.05", 13000, gpus, environment=env)


@pytest.mark.parametrize(
    ("value", "expected", "problem"),
    [
        (None, (0, 1, 2, 3), None),
        ("", (), None),
        ("2,0", (2, 0), None),
        (" 1 , 3 ", (1, 3), None),
        ("1gpu", (1,), None),  # CUDA reads indices like strtoul
        ("0,5,1", (0,), "'5' is past the last GPU (only 4 visible); CUDA ignores it and everything after it (5,1)"),
        ("1,-1,2", (1,), "'-1' matches no GPU"),
        ("0,0", (), "names a GPU twice, so CUDA sees no GPU (cuInit fails: invalid device)"),
        ("GPU-3333,GPU-1111-1", (3, 1), None),
        ("GPU-2222-2,1", (2,), "is an index after a UUID"),  # measured on 4 x H200 (tests/fixtures/device)
        ("GPU-", (), "'GPU-' names no UUID"),
        ("GPU-1111,GPU-", (1,), "'GPU-' names no UUID"),
        ("GPU-9999,0", (), "'GPU-9999' matches no GPU"),
        ("MIG-abc", (), "'MIG-abc' matches no MIG instance"),
    ],
)
def test_cuda_visible_devices_maps_to_physical_gpus_in_cuda_order(value, expected, problem) -> None:
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    vis = resolve_visible(four_gpus(), env)
    assert vis.gpu_indices == expected
    assert [d.cuda_index for d in vis.devices] == list(range(len(expected)))
    if problem:
        assert any(problem in p for p in vis.problems), vis.problems
    else:
        assert vis.problems == ()


def test_ambiguous_uuid_prefix_hides_every_gpu() -> None:
    gpus = tuple(
        Gpu(index=i, uuid=f"GPU-ab{i}", name="NVIDIA H200", memory_total_bytes=140 * GIB, memory_free_bytes=139 * GIB,
            compute_capability=(9, 0))
        for i in range(2)
    )
    vis = resolve_visible(Inventory("580.159.04", 13000, gpus), {"CUDA_VISIBLE_DEVICES": "GPU-ab,1"})
    assert vis.devices == ()
    assert vis.problems == ("CUDA_VISIBLE_DEVICES=GPU-ab,1: 'GPU-ab' matches more than one GPU UUID, so CUDA hides every GPU",)
    assert resolve_visible(Inventory("580.159.04", 13000, gpus), {"CUDA_VISIBLE_DEVICES": "GPU-ab1"}).gpu_indices == (1,)


def test_mig_uuid_selects_the_instance() -> None:
    inv = four_gpus()
    mig = Gpu(**{**inv.gpus[1].model_dump(), "mig_mode": True, "mig_devices": (MigDevice(uuid="MIG-abcd-1234"),)})
    inv = Inventory("580.95.05", 13000, (inv.gpus[0], mig, *inv.gpus[2:]))
    vis = resolve_visible(inv, {"CUDA_VISIBLE_DEVICES": "MIG-abcd-1234"})
    assert [(d.gpu_index, d.mig_uuid) for d in vis.devices] == [(1, "MIG-abcd-1234")]


def test_unreadable_gpu_keeps_its_index() -> None:
    inv = four_gpus()
    inv = Inventory("580.95.05", 13000, inv.gpus[:2] + inv.gpus[3:], gpu_errors=(GpuError(index=2, error="GPU is lost"),))
    assert resolve_visible(inv, {"CUDA_VISIBLE_DEVICES": "2,3"}).gpu_indices == (2, 3)


@pytest.mark.parametrize(
    ("nvidia", "cuda", "expected"),
    [
        ("all", None, (0, 1, 2, 3)),
        ("void", None, ()),
        ("none", None, ()),
        ("", None, ()),
        ("2,3", None, (2, 3)),
        ("2,3", "1", (3,)),  # CUDA indices count inside the container
        ("GPU-1111,GPU-0000", None, (1, 0)),
    ],
)
def test_nvidia_visible_devices_from_a_host_inventory(nvidia, cuda, expected) -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": nvidia, **({"CUDA_VISIBLE_DEVICES": cuda} if cuda is not None else {})}
    assert resolve_visible(four_gpus(), env).gpu_indices == expected


def test_nvidia_visible_devices_naming_no_gpu_stops_the_container() -> None:
    vis = resolve_visible(four_gpus(), {"NVIDIA_VISIBLE_DEVICES": "0,7"})
    assert vis.devices == () and "'7' is no GPU of this machine; the container runtime refuses" in (vis.fatal or "")


def test_nvidia_visible_devices_already_applied_inside_the_container() -> None:
    # Captured inside a container started with NVIDIA_VISIBLE_DEVICES=2,3: NVML shows those two as 0 and 1.
    inv = Inventory("580.95.05", 13000, four_gpus().gpus[:2], environment={"NVIDIA_VISIBLE_DEVICES": "2,3"})
    vis = resolve_visible(inv, {"NVIDIA_VISIBLE_DEVICES": "2,3"})
    assert vis.gpu_indices == (0, 1)
    assert any("was applied by the container runtime before NVML was read" in n for n in vis.notes)


def test_mixed_models_without_pci_order_are_flagged() -> None:
    inv = load_inventory(FIXTURES / "rtx4090-rtx3090-mixed.json")
    assert any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in p for p in resolve_visible(inv, {}).problems)
    assert resolve_visible(inv, {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}).problems == ()


# What CUDA itself reported (cuInit + cuDeviceGetUuid in a fresh process per value) on the
# one-H200 device machine, 2026-11-28, next to the capture tests/fixtures/inventories/h200x1.json.
H200X1_CUDA = {
    "": [],
    "0": ["GPU-06dbf78c-cb4d-6cfc-5f2e-9f6d21b87ada"],
    "0,5": ["GPU-06dbf78c-cb4d-6cfc-5f2e-9f6d21b87ada"],
    "5,0": [],
    "-1,0": [],
    "0,0": [],
    "1gpu": [],
    "GPU-06dbf78c": ["GPU-06dbf78c-cb4d-6cfc-5f2e-9f6d21b87ada"],
    "GPU-06dbf78c-cb4d-6cfc-5f2e-9f6d21b87ada": ["GPU-06dbf78c-cb4d-6cfc-5f2e-9f6d21b87ada"],
    "GPU-": [],
    "GPU-ffff,0": [],
    " 0 ": ["GPU-06dbf78c-cb4d-6cfc-5f2e-9f6d21b87ada"],
}


@pytest.mark.parametrize("value", sorted(H200X1_CUDA))
def test_mapping_agrees_with_cuda_on_a_real_h200(value: str) -> None:
    inv = load_inventory(FIXTURES / "h200x1.json")
    got = [inv.gpu(i).uuid for i in resolve_visible(inv, {"CUDA_VISIBLE_DEVICES": value}).gpu_indices]
    assert got == H200X1_CUDA[value]
