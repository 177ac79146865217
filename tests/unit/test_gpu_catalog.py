"""The GPU table: forgiving lookup, memory as NVML and CUDA report it, did-you-mean errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.hardware.catalog import (
    DEFAULT_DRIVER_RESERVED_BYTES,
    GIB,
    all_models,
    cuda_total_from_nvml,
    lookup,
    match_nvml,
    normalize,
)

# Raw NVML readings of a 2 x H200 machine (tests/fixtures/README.md).
H200_CAPTURE = Path(__file__).resolve().parent.parent / "fixtures" / "nvml" / "h200x2-raw.json"


@pytest.mark.parametrize(
    "typed, key",
    [
        ("RTX 3090", "RTX 3090"),
        ("3090", "RTX 3090"),
        ("rtx3090", "RTX 3090"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("geforce rtx-3090", "RTX 3090"),
        ("RTX 3090 Ti", "RTX 3090 Ti"),
        ("rtx_3090_ti", "RTX 3090 Ti"),
        ("RTX 4090", "RTX 4090"),
        ("RTX 5090", "RTX 5090"),
        ("A10", "A10"),
        ("a40", "A40"),
        ("L4", "L4"),
        ("l40s", "L40S"),
        ("A100-40GB", "A100-40GB"),
        ("A100", "A100-80GB"),
        ("a100-80gb", "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("H100", "H100-80GB"),
        ("H100-80GB", "H100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("h200", "H200"),
        ("NVIDIA H200", "H200"),
        ("B200", "B200"),
        ("RTX 6000 Ada", "RTX 6000 Ada"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
        ("RTX PRO 6000", "RTX PRO 6000"),
        ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "RTX PRO 6000"),
        ("T4", "T4"),
        ("Tesla T4", "T4"),
    ],
)
def test_lookup_is_forgiving(typed, key):
    assert lookup(typed).key == key


@pytest.mark.parametrize("typed, hint", [("RTX 3080", "RTX 3090"), ("H20", "H200"), ("L40", "L40S")])
def test_unknown_name_suggests_the_closest(typed, hint):
    with pytest.raises(ProfileError, match=f"did you mean .*{hint}"):
        lookup(typed)


def test_unknown_name_without_close_match_lists_known_models():
    with pytest.raises(ProfileError, match="known: RTX 3090"):
        lookup("Voodoo5 6000")


def test_h200_matches_the_real_nvml_capture():
    capture = json.loads(H200_CAPTURE.read_text())
    gpu = capture["gpus"][0]
    model = match_nvml(gpu["name"])
    assert model is not None and model.key == "H200"
    assert model.memory_total_bytes == gpu["memory_total"]
    # With no process on it, NVML's free is what cudaMemGetInfo reports as total (139.8 GiB, docs/memory-model.md#gpu-memory-table).
    assert model.cuda_total_bytes == gpu["memory_free"]
    assert model.cuda_total_gib == pytest.approx(139.8, abs=0.05)
    assert tuple(gpu["cc"]) == model.compute_capability
    assert cuda_total_from_nvml(gpu["name"], gpu["memory_total"])[0] == model.cuda_total_bytes


@pytest.mark.parametrize(
    "name, cuda_gib, cc",
    [
        ("RTX 3090", 23.69, (8, 6)),
        ("RTX 4090", 23.64, (8, 9)),
        ("RTX 5090", 31.4, (12, 0)),
        ("A10", 22.1, (8, 6)),
        ("A40", 44.3, (8, 6)),
        ("L4", 22.1, (8, 9)),
        ("L40S", 44.4, (8, 9)),
        ("A100-40GB", 39.4, (8, 0)),
        ("A100-80GB", 79.25, (8, 0)),
        ("H100", 79.19, (9, 0)),
        ("H200", 139.8, (9, 0)),
        ("B200", 178.0, (10, 0)),
        ("RTX 6000 Ada", 47.4, (8, 9)),
        ("RTX PRO 6000", 95.0, (12, 0)),
        ("T4", 14.75, (7, 5)),
    ],
)
def test_memory_and_cc_follow_model_facts_section_5(name, cuda_gib, cc):
    model = lookup(name)
    assert model.cuda_total_bytes / GIB == pytest.approx(cuda_gib, abs=0.01)
    assert model.compute_capability == cc


def test_every_model_is_consistent():
    keys = [m.key for m in all_models()]
    assert len(keys) == len(set(keys))
    for model in all_models():
        assert lookup(model.key) is model
        assert match_nvml(model.nvml_name, model.memory_total_bytes) is model  # a memory variant shares its NVML name
        assert 0 < model.driver_reserved_bytes < 1.5 * GIB, model.key  # CUDA sees a bit less than NVML
        assert model.memory_total_bytes % (1 << 20) == 0
        if model.geforce:
            assert not model.p2p_expected, model.key  # docs/memory-model.md#peer-to-peer-and-all-reduce: GeForce has no P2P on the stock driver
        assert model.nvlink in ("none", "bridge", "sxm")


def test_models_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        lookup("H200").cuda_total_bytes = 1  # type: ignore[misc]


def test_unknown_nvml_name_falls_back_to_a_typical_reservation():
    total = 100 * GIB
    cuda, sigma, how = cuda_total_from_nvml("NVIDIA Future GPU", total)
    assert cuda == total - DEFAULT_DRIVER_RESERVED_BYTES and sigma > 0 and "NVML" in how
    assert match_nvml("NVIDIA Future GPU") is None


def test_known_name_with_other_memory_is_not_trusted():
    # A 3090 name with twice the memory (a modded card) is not the table's 3090.
    cuda, _, how = cuda_total_from_nvml("NVIDIA GeForce RTX 3090", 48 * GIB)
    assert cuda == 48 * GIB - DEFAULT_DRIVER_RESERVED_BYTES and "table" not in how


def test_normalize():
    assert normalize("NVIDIA GeForce RTX-3090 Ti") == "rtx3090ti"
