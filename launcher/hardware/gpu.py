"""NVML probe: the only module that touches pynvml (nvidia-ml-py), imported lazily, returning a frozen Inventory."""

from __future__ import annotations

import datetime as _dt
import os
import socket
from typing import Any, Callable, Literal, Mapping, Optional

from launcher.errors import HardwareError
from launcher.hardware.inventory import (
    VISIBILITY_VARIABLES,
    Gpu,
    GpuError,
    GpuProcess,
    Inventory,
    Link,
    MigDevice,
)

INVENTORY_HINT = (
    "without GPUs here, either estimate for a GPU model: `launcher fit --profile P --gpu \"RTX 3090\" --count 2` "
    "(any card: --gpu-memory GIB --compute-capability X.Y), or capture the GPU host with "
    "`launcher gpus --json > inventory.json` there and run `launcher check --inventory inventory.json --profile P`"
)

# NVML's P2P status codes (nvmlGpuP2PStatus_t) -> the inventory's names.
_P2P_NAMES = {
    0: "ok",
    1: "chipset_not_supported",
    2: "gpu_not_supported",
    3: "ioh_topology_not_supported",
    4: "disabled_by_regkey",
    5: "not_supported",
    6: "unknown",
}
# nvmlGpuTopologyLevel_t -> names nvidia-smi topo users know.
_TOPOLOGY_NAMES = {0: "internal", 10: "single", 20: "multiple", 30: "hostbridge", 40: "node", 50: "system"}
# nvmlBrandType_t values that matter for P2P advice; others fall back to NVML's own constant name.
_BRANDS = {5: "geforce", 13: "nvidia_rtx", 14: "nvidia", 2: "tesla", 3: "nvs", 4: "grid", 1: "quadro", 6: "titan"}


def load_pynvml() -> Any:
    """Import the NVML binding, or say exactly what to install."""
    try:
        import pynvml  # noqa: PLC0415 - lazy on purpose: render/check --inventory never pay for it
    except ImportError:
        raise HardwareError(
            "cannot read the GPUs: the NVML Python binding is missing (pip install nvidia-ml-py); " + INVENTORY_HINT
        ) from None
    return pynvml


def _text(value: Any) -> str:
    # nvidia-ml-py returns str in new releases and bytes in old ones (gpustat's _decode). What NVML says
    # (GPU and process names, errors) is shown on terminals: control characters become escapes.
    from launcher.text import printable

    return printable(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value), 500)


def _caps_index(nvml: Any, name: str, default: int) -> int:
    # pynvml defines `NVML_P2P_CAPS_INDEX_READ = 0,` (a tuple, trailing comma); passing it as is
    # fails with ctypes "argument 3: TypeError: Don't know how to convert parameter 3".
    value = getattr(nvml, name, default)
    if isinstance(value, (tuple, list)):
        value = value[0]
    return int(value)


class _Probe:
    """One NVML session's reads; every optional read degrades to None instead of failing the GPU."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.error_cls = getattr(nvml, "NVMLError", Exception)

    def optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.error_cls:
            return None

    def gpu(self, index: int) -> tuple[Optional[Gpu | GpuError], Any]:
        nvml = self.nvml
        uuid = name = bus = None
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            name = _text(nvml.nvmlDeviceGetName(handle))
            pci = self.optional(nvml.nvmlDeviceGetPciInfo, handle)
            bus = _text(getattr(pci, "busId", "")) if pci is not None else None
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            cc = tuple(int(v) for v in nvml.nvmlDeviceGetCudaComputeCapability(handle))
        except self.error_cls as exc:
            return GpuError(index=index, error=_text(exc) or type(exc).__name__, uuid=uuid, name=name, pci_bus_id=bus), None
        reserved = None
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None:
            mem2 = self.optional(nvml.nvmlDeviceGetMemoryInfo, handle, version)
            reserved = int(mem2.reserved) if mem2 is not None and getattr(mem2, "reserved", None) is not None else None
        mig_mode, mig_devices = self._mig(handle)
        gpu = Gpu(
            index=index,
            uuid=uuid,
            name=name,
            memory_total_bytes=int(mem.total),
            memory_free_bytes=int(mem.free),
            memory_used_bytes=int(mem.used),
            memory_reserved_bytes=reserved,
            compute_capability=(cc[0], cc[1]),
            pci_bus_id=bus or None,
            brand=self._brand(handle),
            mig_mode=mig_mode,
            mig_devices=mig_devices,
            nvlink_active_links=self._nvlinks(handle),
            processes=self._processes(handle),
        )
        return gpu, handle

    def _brand(self, handle: Any) -> Optional[str]:
        value = self.optional(self.nvml.nvmlDeviceGetBrand, handle)
        if value is None:
            return None
        if value in _BRANDS:
            return _BRANDS[value]
        for attr in dir(self.nvml):
            if attr.startswith("NVML_BRAND_") and getattr(self.nvml, attr) == value:
                return attr[len("NVML_BRAND_") :].lower()
        return str(value)

    def _mig(self, handle: Any) -> tuple[Optional[bool], tuple[MigDevice, ...]]:
        nvml = self.nvml
        modes = self.optional(nvml.nvmlDeviceGetMigMode, handle)
        if modes is None:
            return None, ()  # not supported on this GPU: no MIG
        current = bool(modes[0])
        if not current:
            return False, ()
        devices = []
        count = self.optional(nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        for i in range(count):
            mig = self.optional(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
            if mig is None:
                continue
            uuid = self.optional(nvml.nvmlDeviceGetUUID, mig)
            mem = self.optional(nvml.nvmlDeviceGetMemoryInfo, mig)
            if uuid:
                devices.append(MigDevice(uuid=_text(uuid), memory_total_bytes=int(mem.total) if mem is not None else None))
        return True, tuple(devices)

    def _nvlinks(self, handle: Any) -> Optional[int]:
        nvml = self.nvml
        active = 0
        readable = False
        for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
            try:
                state = nvml.nvmlDeviceGetNvLinkState(handle, link)
            except self.error_cls:
                break  # past the last link, or NVLink not supported
            readable = True
            active += 1 if state else 0
        return active if readable else None

    def _processes(self, handle: Any) -> Optional[tuple[GpuProcess, ...]]:
        nvml = self.nvml
        found: dict[int, GpuProcess] = {}
        readable = False
        kinds: tuple[tuple[Literal["compute", "graphics", "mps"], str], ...] = (
            ("compute", "nvmlDeviceGetComputeRunningProcesses"),
            ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
            ("mps", "nvmlDeviceGetMPSComputeRunningProcesses"),
        )
        for kind, fn_name in kinds:
            fn = getattr(nvml, fn_name, None)
            if fn is None:
                continue
            procs = self.optional(fn, handle)
            if procs is None:
                continue
            readable = True
            for p in procs:
                pid = int(p.pid)
                used = getattr(p, "usedGpuMemory", None)
                if pid in found:
                    continue  # a process both computing and drawing is listed twice with the same memory
                found[pid] = GpuProcess(
                    pid=pid, used_memory_bytes=int(used) if used is not None else None, name=self._process_name(pid), type=kind
                )
        return tuple(found[pid] for pid in sorted(found)) if readable else None

    def _process_name(self, pid: int) -> Optional[str]:
        # NVML names processes it can see; from another PID namespace (a container) it cannot,
        # and /proc here would name the wrong process, so the name stays unknown then.
        name = self.optional(self.nvml.nvmlSystemGetProcessName, pid)
        return _text(name) if name else None

    def link(self, a: int, ha: Any, b: int, hb: Any) -> Link:
        nvml = self.nvml

        def status(index_name: str, default: int) -> str:
            try:
                code = nvml.nvmlDeviceGetP2PStatus(ha, hb, _caps_index(nvml, index_name, default))
            except self.error_cls as exc:
                return f"error: {_text(exc)}"
            return _P2P_NAMES.get(int(code), "unknown")

        topo = self.optional(nvml.nvmlDeviceGetTopologyCommonAncestor, ha, hb)
        return Link(
            gpus=(a, b),
            p2p_read=status("NVML_P2P_CAPS_INDEX_READ", 0),
            p2p_write=status("NVML_P2P_CAPS_INDEX_WRITE", 1),
            nvlink=status("NVML_P2P_CAPS_INDEX_NVLINK", 2),
            topology=_TOPOLOGY_NAMES.get(int(topo), str(topo)) if topo is not None else None,
        )


def probe(nvml: Any = None, environ: Optional[Mapping[str, str]] = None, now: Optional[str] = None) -> Inventory:
    """Read every GPU through NVML into a frozen Inventory.

    `nvml` is the pynvml module (a seam: tests pass a fake module object). NVML is always shut
    down again; a GPU whose read fails becomes a GpuError entry instead of aborting the probe.
    Raises HardwareError (exit 3) when NVML itself cannot be loaded or initialised.
    """
    nvml = load_pynvml() if nvml is None else nvml
    environ = os.environ if environ is None else environ
    error_cls = getattr(nvml, "NVMLError", Exception)
    try:
        nvml.nvmlInit()
    except error_cls as exc:
        raise HardwareError(f"cannot read the GPUs through NVML: {_text(exc)} (no NVIDIA driver or GPU here?); {INVENTORY_HINT}") from None
    except OSError as exc:  # a broken libnvidia-ml can fail while loading
        raise HardwareError(f"cannot load NVML: {exc}; {INVENTORY_HINT}") from None
    try:
        p = _Probe(nvml)
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
        nvml_version = p.optional(nvml.nvmlSystemGetNVMLVersion)
        count = int(nvml.nvmlDeviceGetCount())
        gpus: list[Gpu] = []
        errors: list[GpuError] = []
        handles: dict[int, Any] = {}
        for index in range(count):
            entry, handle = p.gpu(index)
            if isinstance(entry, Gpu):
                gpus.append(entry)
                handles[index] = handle
            elif entry is not None:
                errors.append(entry)
        links = []
        readable = sorted(handles)
        for i, a in enumerate(readable):
            for b in readable[i + 1 :]:
                links.append(p.link(a, handles[a], b, handles[b]))
    except error_cls as exc:
        raise HardwareError(f"NVML failed while reading the GPUs: {_text(exc)}; {INVENTORY_HINT}") from None
    finally:
        try:
            nvml.nvmlShutdown()
        except error_cls:
            pass
    return Inventory(
        driver_version=driver,
        cuda_driver_version=cuda,
        gpus=tuple(gpus),
        gpu_errors=tuple(errors),
        links=tuple(links),
        environment={k: environ[k] for k in VISIBILITY_VARIABLES if k in environ},
        nvml_version=_text(nvml_version) if nvml_version is not None else None,
        captured_at=now or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        hostname=socket.gethostname(),
        source="nvml",
    )
