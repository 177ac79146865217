"""A stand-in for the `pynvml` module (nvidia-ml-py), answering from an inventory-shaped dict.

`fake_nvml(data)` returns a module object with pynvml's names and signatures, including its traps:
NVML_P2P_CAPS_INDEX_READ is the tuple `(0,)` there, and passing it on fails inside ctypes
("argument 3: TypeError: Don't know how to convert parameter 3"), as a real 2 x H200 machine showed.
`data` is what `launcher gpus --json` writes (tests/fixtures/inventories/), so a capture taken on a
GPU host replays here exactly. Standard library only: tests/fakes/pythonpath/pynvml.py loads this
file by path in subprocesses that have no `tests` package on their path.
"""

from __future__ import annotations

import ctypes
import types
from typing import Any, Callable, Optional

P2P_CODES = {"ok": 0, "chipset_not_supported": 1, "gpu_not_supported": 2, "ioh_topology_not_supported": 3,
             "disabled_by_regkey": 4, "not_supported": 5, "unknown": 6}
TOPOLOGY_CODES = {"internal": 0, "single": 10, "multiple": 20, "hostbridge": 30, "node": 40, "system": 50}
BRAND_CODES = {"geforce": 5, "nvidia": 14, "tesla": 2, "nvidia_rtx": 13}
NOT_SUPPORTED, INVALID_ARGUMENT, GPU_IS_LOST, LIBRARY_NOT_FOUND = 3, 2, 15, 12
ERROR_TEXT = {NOT_SUPPORTED: "Not Supported", INVALID_ARGUMENT: "Invalid Argument", GPU_IS_LOST: "GPU is lost",
              LIBRARY_NOT_FOUND: "NVML Shared Library Not Found"}


class NVMLError(Exception):
    def __init__(self, value: int, text: Optional[str] = None) -> None:
        super().__init__(value)
        self.value = value
        self.text = text

    def __str__(self) -> str:
        return self.text or ERROR_TEXT.get(self.value, f"NVML Error with code {self.value}")


class _Nvml:
    """pynvml's functions (nvml* methods) over an inventory-shaped dict; see fake_nvml."""

    def __init__(self, data: dict[str, Any], init_error: Optional[int], brands: dict[str, int]) -> None:
        self.data = data
        self.init_error = init_error
        self.entries = {g["index"]: g for g in data["gpus"]}
        self.links = {tuple(link["gpus"]): link for link in data.get("links", [])}
        self.names = {p["pid"]: p.get("name") for g in data["gpus"] for p in (g.get("processes") or [])}
        self.brands = brands

    def gpu(self, handle: tuple[Any, ...]) -> dict[str, Any]:
        return self.entries[handle[1]]

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.data["driver_version"]

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.data["cuda_driver_version"]

    def nvmlSystemGetNVMLVersion(self) -> str:
        return self.data.get("nvml_version", "13.0")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.entries)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[Any, ...]:
        if "error" in self.entries[index]:
            raise NVMLError(GPU_IS_LOST)
        return ("handle", index)

    def nvmlDeviceGetUUID(self, handle: tuple[Any, ...]) -> str:
        if handle[0] == "mig":
            return handle[2]
        return self.gpu(handle)["uuid"]

    def nvmlDeviceGetName(self, handle: tuple[Any, ...]) -> str:
        return self.gpu(handle)["name"]

    def nvmlDeviceGetPciInfo(self, handle: tuple[Any, ...]) -> Any:
        return types.SimpleNamespace(busId=self.gpu(handle).get("pci_bus_id", ""))

    def nvmlDeviceGetMemoryInfo(self, handle: tuple[Any, ...], version: Optional[int] = None) -> Any:
        if handle[0] == "mig":
            return types.SimpleNamespace(total=handle[3], free=handle[3], used=0)
        g = self.gpu(handle)
        total, free = g["memory_total_bytes"], g["memory_free_bytes"]
        if version is None:
            return types.SimpleNamespace(total=total, free=free, used=g.get("memory_used_bytes", total - free))
        assert version == MEMORY_V2
        if g.get("memory_reserved_bytes") is None:
            raise NVMLError(NOT_SUPPORTED)
        reserved = g["memory_reserved_bytes"]
        return types.SimpleNamespace(total=total, free=free, reserved=reserved, used=total - free - reserved)

    def nvmlDeviceGetCudaComputeCapability(self, handle: tuple[Any, ...]) -> tuple[int, int]:
        major, minor = self.gpu(handle)["compute_capability"]
        return major, minor

    def nvmlDeviceGetBrand(self, handle: tuple[Any, ...]) -> int:
        brand = self.gpu(handle).get("brand")
        if brand is None:
            raise NVMLError(NOT_SUPPORTED)
        return self.brands[brand]

    def nvmlDeviceGetMigMode(self, handle: tuple[Any, ...]) -> list[int]:
        if self.gpu(handle).get("mig_mode") is None:
            raise NVMLError(NOT_SUPPORTED)
        on = int(bool(self.gpu(handle)["mig_mode"]))
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: tuple[Any, ...]) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: tuple[Any, ...], i: int) -> tuple[Any, ...]:
        migs = self.gpu(handle).get("mig_devices", [])
        if i >= len(migs):
            raise NVMLError(NOT_SUPPORTED)
        return ("mig", handle[1], migs[i]["uuid"], migs[i].get("memory_total_bytes"))

    def nvmlDeviceGetNvLinkState(self, handle: tuple[Any, ...], link: int) -> int:
        n = self.gpu(handle).get("nvlink_active_links")
        if n is None:
            raise NVMLError(NOT_SUPPORTED)
        if link >= max(n, 18):
            raise NVMLError(INVALID_ARGUMENT)
        return 1 if link < n else 0

    def _processes(self, handle: tuple[Any, ...], kind: str) -> list[Any]:
        listed = self.gpu(handle).get("processes")
        if listed is None:
            raise NVMLError(NOT_SUPPORTED)
        return [types.SimpleNamespace(pid=p["pid"], usedGpuMemory=p.get("used_memory_bytes"))
                for p in listed if p.get("type", "compute") == kind]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: tuple[Any, ...]) -> list[Any]:
        return self._processes(handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: tuple[Any, ...]) -> list[Any]:
        return self._processes(handle, "graphics")

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: tuple[Any, ...]) -> list[Any]:
        return self._processes(handle, "mps")

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        if self.names.get(pid) is None:
            raise NVMLError(NOT_SUPPORTED)
        return self.names[pid]

    def nvmlDeviceGetP2PStatus(self, h1: tuple[Any, ...], h2: tuple[Any, ...], p2p_index: Any) -> int:
        if not isinstance(p2p_index, int):  # what ctypes does with pynvml's tuple constant
            raise ctypes.ArgumentError("argument 3: TypeError: Don't know how to convert parameter 3")
        link = self.links.get((h1[1], h2[1]))
        key = ("p2p_read", "p2p_write", "nvlink")[p2p_index]
        status = link.get(key) if link else None
        if status is None:
            raise NVMLError(NOT_SUPPORTED)
        if status.startswith("error: "):
            raise NVMLError(NOT_SUPPORTED, status[len("error: "):])
        return P2P_CODES[status]

    def nvmlDeviceGetTopologyCommonAncestor(self, h1: tuple[Any, ...], h2: tuple[Any, ...]) -> int:
        link = self.links.get((h1[1], h2[1]))
        if not link or "topology" not in link:
            raise NVMLError(NOT_SUPPORTED)
        topo = link["topology"]
        return int(topo) if topo.isdigit() else TOPOLOGY_CODES[topo]


MEMORY_V2 = 0x02000028


def fake_nvml(data: dict[str, Any], *, init_error: Optional[int] = None, broken: Optional[dict[str, int]] = None) -> types.ModuleType:
    """A module object with pynvml's names, answering from an inventory-shaped dict.

    `broken` maps a function name to an NVML error code it raises (for every device). The
    module's `calls` lists the functions called, in order.
    """
    m = types.ModuleType("pynvml_fake")
    calls: list[str] = []
    m.calls = calls  # type: ignore[attr-defined]
    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    # As in nvidia-ml-py: READ carries a trailing comma and is a tuple.
    m.NVML_P2P_CAPS_INDEX_READ = (0,)  # type: ignore[attr-defined]
    m.NVML_P2P_CAPS_INDEX_WRITE = 1  # type: ignore[attr-defined]
    m.NVML_P2P_CAPS_INDEX_NVLINK = 2  # type: ignore[attr-defined]
    m.NVML_NVLINK_MAX_LINKS = 36  # type: ignore[attr-defined]
    m.nvmlMemory_v2 = MEMORY_V2  # type: ignore[attr-defined]
    brands = dict(BRAND_CODES)
    for n, g in enumerate(data["gpus"]):
        brand = g.get("brand")
        if brand and brand not in brands:  # a brand the probe names through pynvml's NVML_BRAND_* constants
            brands[brand] = 100 + n
            setattr(m, f"NVML_BRAND_{brand.upper()}", 100 + n)
    nvml = _Nvml(data, init_error, brands)
    failing = broken or {}

    def recorded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls.append(name)
            if name in failing:
                raise NVMLError(failing[name])
            return fn(*args)

        wrapper.__name__ = name
        return wrapper

    for name in dir(nvml):
        if name.startswith("nvml"):
            setattr(m, name, recorded(name, getattr(nvml, name)))
    return m
