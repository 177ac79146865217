"""GPU models users type ("RTX 3090", "H100"), with memory as NVML and CUDA report it (no I/O)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from launcher.defaults import GIB, MIB  # noqa: E402,F401
from launcher.errors import ProfileError

# How far a "~" value of docs/memory-model.md#gpu-memory-table may be off; a value seen in a real
# log or capture gets ±0.05 GiB (docs/memory-model.md#budget-r).
_SEEN_UNCERTAINTY = int(0.05 * GIB)
_APPROX_UNCERTAINTY = int(0.25 * GIB)


@dataclass(frozen=True)
class GpuModel:
    """One GPU model.

    `memory_total_bytes` is NVML's total (`nvidia-smi` "MiB" column times 2**20), what an
    inventory holds. `cuda_total_bytes` is `cudaMemGetInfo` total, what vLLM budgets from
    (docs/memory-model.md#gpu-memory-table); the difference is memory the driver keeps back.
    """

    key: str
    nvml_name: str
    memory_total_bytes: int
    cuda_total_bytes: int
    cuda_total_uncertainty_bytes: int
    compute_capability: tuple[int, int]
    nvlink: str  # "none", "bridge" (optional 2-card bridge) or "sxm" (NVLink/NVSwitch baseboard)
    p2p_expected: bool  # PCIe/NVLink peer-to-peer with the stock driver; GeForce: no
    geforce: bool
    ecc: bool
    source: str
    aliases: tuple[str, ...] = ()
    nvml_names: tuple[str, ...] = ()  # other NVML spellings of the same model (SXM/PCIe)
    # Peak memory bandwidth in GB/s (10**9 bytes/s), NVIDIA's datasheet figure for `nvml_name`;
    # `bandwidth_variants` gives it for other NVML spellings that differ (the PCIe boards).
    memory_bandwidth_gbs: float | None = None
    bandwidth_variants: tuple[tuple[str, float], ...] = ()

    @property
    def cuda_total_gib(self) -> float:
        return self.cuda_total_bytes / GIB

    @property
    def driver_reserved_bytes(self) -> int:
        return self.memory_total_bytes - self.cuda_total_bytes


def _gib(value: float) -> int:
    return int(round(value * GIB))


def _m(
    key: str,
    nvml_name: str,
    nvml_mib: int,
    cuda_gib: float,
    cc: tuple[int, int],
    *,
    nvlink: str,
    p2p: bool,
    geforce: bool = False,
    ecc: bool = True,
    seen: bool = False,
    source: str = "docs/memory-model.md#gpu-memory-table",
    aliases: tuple[str, ...] = (),
    nvml_names: tuple[str, ...] = (),
    cuda_bytes: int | None = None,
    bandwidth: float | None = None,
    bandwidth_variants: tuple[tuple[str, float], ...] = (),
) -> GpuModel:
    return GpuModel(
        key=key,
        nvml_name=nvml_name,
        memory_total_bytes=nvml_mib * MIB,
        cuda_total_bytes=cuda_bytes if cuda_bytes is not None else _gib(cuda_gib),
        cuda_total_uncertainty_bytes=_SEEN_UNCERTAINTY if seen else _APPROX_UNCERTAINTY,
        compute_capability=cc,
        nvlink=nvlink,
        p2p_expected=p2p,
        geforce=geforce,
        ecc=ecc,
        source=source,
        aliases=aliases,
        nvml_names=nvml_names,
        memory_bandwidth_gbs=bandwidth,
        bandwidth_variants=bandwidth_variants,
    )


# NVML totals are the usual nvidia-smi figures for each board; CUDA totals are those of
# docs/memory-model.md#gpu-memory-table ("seen" where real OOM logs show them, "~" otherwise).
# H200: both from a real NVML capture of 2 x H200 (a copy is in tests/fixtures: total 150754820096 B;
# free with no process 150109880320 B, which is the 139.8 GiB CUDA sees).
# Bandwidth: the peak memory bandwidth of NVIDIA's product datasheet / spec page for each board
# (GB/s, decimal): SXM and PCIe boards differ for A100 80GB (2039 / 1935) and H100 (3350 / 2000).
# `launcher bench` divides it by the bytes one decode step reads per GPU (its roofline).
_MODELS: tuple[GpuModel, ...] = (
    _m("RTX 3090", "NVIDIA GeForce RTX 3090", 24576, 23.69, (8, 6), nvlink="bridge", p2p=False,
       geforce=True, ecc=False, seen=True, aliases=("3090",),
       bandwidth=936),
    _m("RTX 3090 Ti", "NVIDIA GeForce RTX 3090 Ti", 24564, 23.7, (8, 6), nvlink="bridge", p2p=False,
       geforce=True, ecc=False, aliases=("3090 Ti",),
       bandwidth=1008),
    _m("RTX 4090", "NVIDIA GeForce RTX 4090", 24564, 23.64, (8, 9), nvlink="none", p2p=False,
       geforce=True, ecc=False, seen=True, aliases=("4090",),
       bandwidth=1008),
    # Memory variant: 4090 boards rebuilt with 48 GB (sold for models like this one). NVML keeps the 4090's name;
    # the total is told apart by memory (match_nvml). [UNVERIFIED] no capture here: nvidia-smi total taken as the
    # 48 GB boards' usual 49140 MiB and the CUDA total as the RTX A6000's (same memory, same driver reservation).
    _m("RTX 4090 48GB", "NVIDIA GeForce RTX 4090", 49140, 47.54, (8, 9), nvlink="none", p2p=False,
       geforce=True, ecc=False, aliases=("4090 48GB", "RTX 4090 48G", "RTX 4090D 48GB", "4090D 48GB"),
       source="modded 48 GB RTX 4090 [UNVERIFIED]: NVML total as 48 GB boards report it, CUDA total as the RTX A6000's",
       bandwidth=1008),
    _m("RTX 5090", "NVIDIA GeForce RTX 5090", 32607, 31.4, (12, 0), nvlink="none", p2p=False,
       geforce=True, ecc=False, aliases=("5090",),
       bandwidth=1792),
    _m("A10", "NVIDIA A10", 23028, 22.1, (8, 6), nvlink="none", p2p=True,
       bandwidth=600),
    _m("A40", "NVIDIA A40", 46068, 44.3, (8, 6), nvlink="bridge", p2p=True,
       bandwidth=696),
    _m("L4", "NVIDIA L4", 23034, 22.1, (8, 9), nvlink="none", p2p=True,
       bandwidth=300),
    _m("L40S", "NVIDIA L40S", 46068, 44.4, (8, 9), nvlink="none", p2p=True,
       bandwidth=864),
    _m("RTX A6000", "NVIDIA RTX A6000", 49140, 47.54, (8, 6), nvlink="bridge", p2p=True,
       source="docs/memory-model.md#gpu-memory-table [UNVERIFIED]: nvidia-smi total, CUDA total from PyTorch OOM messages",
       aliases=("A6000",),
        bandwidth=768),
    _m("A100-40GB", "NVIDIA A100-SXM4-40GB", 40960, 39.4, (8, 0), nvlink="sxm", p2p=True,
       aliases=("A100 40GB", "A100-40G", "A100 40"), nvml_names=("NVIDIA A100-PCIE-40GB",),
       bandwidth=1555),
    _m("A100-80GB", "NVIDIA A100-SXM4-80GB", 81920, 79.25, (8, 0), nvlink="sxm", p2p=True, seen=True,
       aliases=("A100", "A100 80GB", "A100-80G", "A100 80"), nvml_names=("NVIDIA A100 80GB PCIe",),
       bandwidth=2039, bandwidth_variants=(("NVIDIA A100 80GB PCIe", 1935),)),
    _m("H100-80GB", "NVIDIA H100 80GB HBM3", 81559, 79.19, (9, 0), nvlink="sxm", p2p=True, seen=True,
       aliases=("H100", "H100 80GB", "H100 SXM", "H100-SXM"), nvml_names=("NVIDIA H100 PCIe",),
       bandwidth=3350, bandwidth_variants=(("NVIDIA H100 PCIe", 2000),)),
    _m("H200", "NVIDIA H200", 143771, 139.8, (9, 0), nvlink="sxm", p2p=True, seen=True,
       cuda_bytes=150_109_880_320, source="real NVML capture of 2 x H200; docs/memory-model.md#gpu-memory-table",
       aliases=("H200 141GB", "H200 SXM"),
        bandwidth=4800),
    _m("B200", "NVIDIA B200", 183359, 178.0, (10, 0), nvlink="sxm", p2p=True,
        bandwidth=8000),
    _m("RTX 6000 Ada", "NVIDIA RTX 6000 Ada Generation", 49140, 47.4, (8, 9), nvlink="none", p2p=False,
       aliases=("RTX 6000 Ada Generation", "6000 Ada"),
       bandwidth=960),
    _m("RTX PRO 6000", "NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887, 95.0, (12, 0),
       nvlink="none", p2p=False,
       aliases=("RTX PRO 6000 Blackwell", "RTX Pro 6000 Server", "PRO 6000"),
       nvml_names=("NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                   "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"),
       bandwidth=1792),
    _m("T4", "Tesla T4", 15360, 14.75, (7, 5), nvlink="none", p2p=True,
       source="docs/memory-model.md#gpu-memory-table: nvidia-smi total, CUDA total from PyTorch OOM messages; "
              "CC 7.5 is below this model's floor of 8.0 (docs/memory-model.md#compute-capability-floor)",
       aliases=("Tesla T4", "NVIDIA T4"),
        bandwidth=320),
)

_NOISE = re.compile(r"\b(nvidia|geforce|tesla)\b")


def normalize(name: str) -> str:
    """Fold case, drop vendor words and every space, dash, underscore and dot."""
    folded = _NOISE.sub(" ", name.lower())
    folded = re.sub(r"(\d)\s*gi?b\b", r"\1g", folded)  # 48GB, 48 GiB and 48G are one size
    return re.sub(r"[\s\-_.]+", "", folded)


def _index() -> tuple[dict[str, GpuModel], dict[str, list[GpuModel]]]:
    """Names a person types (key, aliases) -> one model; NVML names -> every memory variant, the first the base."""
    table: dict[str, GpuModel] = {}
    by_nvml: dict[str, list[GpuModel]] = {}
    for model in _MODELS:
        for spelling in (model.key, *model.aliases):
            key = normalize(spelling)
            if key in table and table[key] is not model:
                raise AssertionError(f"GPU alias {spelling!r} is ambiguous")
            table[key] = model
        for spelling in (model.nvml_name, *model.nvml_names):
            by_nvml.setdefault(normalize(spelling), []).append(model)
    for key, models in by_nvml.items():
        if key in table and table[key] is not models[0]:
            raise AssertionError(f"GPU alias {key!r} names another model than NVML's {models[0].key!r}")
        table.setdefault(key, models[0])
    return table, by_nvml


_BY_NAME, _BY_NVML = _index()


def all_models() -> tuple[GpuModel, ...]:
    """Every GPU model in the table, in display order."""
    return _MODELS


def lookup(name: str) -> GpuModel:
    """The GPU model for a name as a person types it or as NVML reports it.

    Raises:
        ProfileError: unknown name; the message lists the closest known names.
    """
    found = _BY_NAME.get(normalize(name))
    if found is not None:
        return found
    close = difflib.get_close_matches(normalize(name), list(_BY_NAME), n=3, cutoff=0.5)
    suggestions = []
    for key in close:
        display = _BY_NAME[key].key
        if display not in suggestions:
            suggestions.append(display)
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    base, size = _base_and_size(name)
    if base is not None and size:
        hint += f"; a memory variant of a known card: --gpu {base.key!r} --gpu-memory {size:g}"
    known = ", ".join(m.key for m in _MODELS)
    raise ProfileError(f"unknown GPU model {name!r}{hint}; any card: --gpu-memory GIB --compute-capability X.Y (known: {known})")


BANDWIDTH_SOURCE = "NVIDIA datasheet peak memory bandwidth"


def memory_bandwidth(name: str) -> tuple[GpuModel, float] | None:
    """(table entry, peak GB/s) for a GPU name as NVML reports it or a person types it; None if unknown."""
    model = _BY_NAME.get(normalize(name))
    if model is None or model.memory_bandwidth_gbs is None:
        return None
    for variant, gbs in model.bandwidth_variants:
        if normalize(variant) == normalize(name):
            return model, gbs
    return model, model.memory_bandwidth_gbs


def _base_and_size(name: str) -> tuple[GpuModel | None, float | None]:
    """"RTX 4090 96GB" -> (RTX 4090, 96.0): a known card named with a memory size the table does not hold."""
    m = re.fullmatch(r"(.*?)[\s\-_]*(\d+(?:\.\d+)?)\s*gi?b?", name.strip(), re.I)
    if not m:
        return None, None
    return _BY_NAME.get(normalize(m.group(1))), float(m.group(2))


def match_nvml(name: str, total_bytes: int | None = None) -> GpuModel | None:
    """The table entry for an NVML device name, or None (no error: inventories hold any GPU).

    With `total_bytes` (NVML's total), the memory variant of that name closest in memory (a 48 GB RTX 4090
    reports the 24 GB card's name).
    """
    variants = _BY_NVML.get(normalize(name))
    if not variants:
        return _BY_NAME.get(normalize(name))
    if total_bytes is None:
        return variants[0]
    return min(variants, key=lambda m: abs(m.memory_total_bytes - total_bytes))


def custom_model(memory_gib: float | None, compute_capability: tuple[int, int] | None, base: GpuModel | None = None) -> GpuModel:
    """A card described by its memory (GiB as nvidia-smi shows it: MiB / 1024) and compute capability.

    With `base`, a memory variant of that known card (its compute capability, P2P and NVLink facts);
    without, a generic card: no P2P assumed, CUDA total = NVML total minus a typical driver reservation.
    """
    if memory_gib is None and base is None:
        raise ProfileError("--compute-capability describes a card together with --gpu-memory GIB (or --gpu MODEL)")
    if base is None and compute_capability is None:
        raise ProfileError("--gpu-memory needs --compute-capability X.Y (or --gpu MODEL to take it from)")
    assert memory_gib is not None or base is not None
    total = int(round(memory_gib * GIB)) if memory_gib is not None else base.memory_total_bytes  # type: ignore[union-attr]
    cc = compute_capability or base.compute_capability  # type: ignore[union-attr]
    label = f"{base.key if base else 'custom GPU'} ({total / GIB:g} GiB, CC {cc[0]}.{cc[1]})"
    how = (f"--gpu-memory {total / GIB:g}: NVML total as given; CUDA total = that minus a typical "
           f"{DEFAULT_DRIVER_RESERVED_BYTES / GIB:.2f} GiB driver reservation")
    return GpuModel(
        key=label,
        nvml_name=base.nvml_name if base else label,
        memory_total_bytes=total,
        cuda_total_bytes=total - DEFAULT_DRIVER_RESERVED_BYTES,
        cuda_total_uncertainty_bytes=DEFAULT_DRIVER_RESERVED_UNCERTAINTY,
        compute_capability=cc,
        nvlink=base.nvlink if base else "none",
        p2p_expected=base.p2p_expected if base else False,
        geforce=base.geforce if base else False,
        ecc=base.ecc if base else False,
        source=how + (f"; otherwise as {base.key}" if base else ""),
    )


# When NVML's total is all we have, CUDA sees this much less (driver-reserved memory): 0.31 GiB on
# a 3090 up to 0.6 GiB on an H200 in the table above.
DEFAULT_DRIVER_RESERVED_BYTES = int(0.45 * GIB)
DEFAULT_DRIVER_RESERVED_UNCERTAINTY = int(0.25 * GIB)


def cuda_total_from_nvml(name: str, nvml_total_bytes: int) -> tuple[int, int, str]:
    """Estimate `cudaMemGetInfo` total from an NVML reading.

    Returns (bytes, uncertainty bytes, how it was derived). A known model whose NVML total
    matches the table (within 1 %) gets the table's CUDA total; anything else is NVML's total
    minus a typical driver reservation.
    """
    model = match_nvml(name, nvml_total_bytes)
    if model is not None and abs(model.memory_total_bytes - nvml_total_bytes) <= 0.01 * nvml_total_bytes:
        return model.cuda_total_bytes, model.cuda_total_uncertainty_bytes, f"GPU table ({model.key})"
    return (
        nvml_total_bytes - DEFAULT_DRIVER_RESERVED_BYTES,
        DEFAULT_DRIVER_RESERVED_UNCERTAINTY,
        "NVML total minus a typical 0.45 GiB driver reservation",
    )
