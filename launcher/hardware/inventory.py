"""GPU inventory: the frozen snapshot of a machine's GPUs, its JSON interchange format, and GPU visibility.

`launcher gpus --json` writes this format and `launcher check --inventory FILE` reads it, so a GPU
host's inventory can be captured there and checked anywhere (a laptop, CI, a ticket). No I/O here
except `load_inventory` / `dump_inventory`; nothing imports pynvml (that is `launcher.hardware.gpu`).

The JSON format, version `launcher-inventory/1` (`launcher gpus --schema` prints its JSON Schema)::

    {
      "format": "launcher-inventory/1",           # optional; when present must be this value
      "driver_version": "580.159.04",             # REQUIRED string, as nvmlSystemGetDriverVersion
      "cuda_driver_version": 13000,               # REQUIRED int, NVML's form (13000 = CUDA 13.0)
      "nvml_version": "13.580.159.04",            # optional
      "captured_at": "2026-11-28T21:00:00Z",      # optional
      "hostname": "gpu-host-1",                   # optional
      "source": "nvml",                           # optional: "nvml" for a probe, free text otherwise
      "environment": {"CUDA_VISIBLE_DEVICES": "0,1"},  # optional: visibility variables at capture
      "gpus": [                                   # REQUIRED, NVML order (PCI bus order)
        {
          "index": 0,                             # REQUIRED int, NVML index
          "uuid": "GPU-acaf2962-...",             # REQUIRED
          "name": "NVIDIA H200",                  # REQUIRED
          "memory_total_bytes": 150754820096,     # REQUIRED int (NVML total)
          "memory_free_bytes": 150109880320,      # REQUIRED int (NVML free)
          "compute_capability": [9, 0],           # REQUIRED [major, minor] (or "9.0")
          "memory_used_bytes": 644939776,         # optional
          "memory_reserved_bytes": 644939776,     # optional (NVML v2: driver-reserved; CUDA's total is total - reserved)
          "pci_bus_id": "00000000:00:06.0",       # optional
          "brand": "nvidia",                      # optional: geforce, nvidia_rtx, tesla, nvidia, ...
          "mig_mode": false,                      # optional: current MIG mode (true = enabled)
          "mig_devices": [{"uuid": "MIG-...", "memory_total_bytes": 42949672960}],  # optional
          "nvlink_active_links": 18,              # optional
          "processes": [                          # optional; absent = unknown, [] = none
            {"pid": 1342, "used_memory_bytes": 432013312, "name": "/usr/lib/xorg/Xorg", "type": "graphics"}
          ]
        },
        {"index": 2, "error": "GPU is lost"}       # a GPU NVML could not read: `index` and `error`
      ],
      "links": [                                  # optional; one entry per GPU pair (a < b)
        {"gpus": [0, 1], "p2p_read": "ok", "p2p_write": "ok", "nvlink": "ok", "topology": "hostbridge"}
      ],
      "storage": {                                # optional: the model cache at capture (older files: model checks skip)
        "hf_hub_cache": "/root/.cache/huggingface/hub",
        "disk_free_bytes": 512000000000, "disk_total_bytes": 1000000000000, "hf_hub_offline": false,
        "models": [{"name": "havenoammo/Qwen3.6-27B-INT8-MTP", "state": "complete", "present_bytes": 34100000000}]
      }
    }

P2P statuses are NVML's (`ok`, `chipset_not_supported`, `gpu_not_supported`,
`ioh_topology_not_supported`, `disabled_by_regkey`, `not_supported`, `unknown`) or `error: <text>`.
Unknown keys are refused (a typo must not silently drop a value); a file written by hand may leave
every optional key out.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping, Optional, Sequence, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError, WithJsonSchema, field_validator

from launcher.errors import ProfileError
from launcher.profile.schema import parse_compute_capability

if TYPE_CHECKING:
    from launcher.hardware.catalog import GpuModel

FORMAT: Literal["launcher-inventory/1"] = "launcher-inventory/1"
from launcher.defaults import GIB  # noqa: E402,F401

VISIBILITY_VARIABLES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
P2P_STATUSES = (
    "ok",
    "chipset_not_supported",
    "gpu_not_supported",
    "ioh_topology_not_supported",
    "disabled_by_regkey",
    "not_supported",
    "unknown",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


ComputeCapability = Annotated[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]], BeforeValidator(parse_compute_capability)]
Bytes = Annotated[int, Field(ge=0)]


class GpuProcess(_Frozen):
    """A process holding memory on a GPU."""

    pid: Annotated[int, Field(ge=0, description="Process id (as seen from where the inventory was taken).")]
    used_memory_bytes: Annotated[Optional[Bytes], Field(description="Memory it holds; absent when NVML cannot tell.")] = None
    name: Annotated[Optional[str], Field(description="Process name or path, when readable.")] = None
    type: Annotated[Optional[Literal["compute", "graphics", "mps"]], Field(description="How NVML listed it.")] = None

    def describe(self) -> str:
        what = f"pid {self.pid}"
        if self.name:
            what += f" {Path(self.name).name}"
        if self.used_memory_bytes is not None:
            what += f" ({self.used_memory_bytes / GIB:.2f} GiB)"
        return what


class MigDevice(_Frozen):
    """A MIG instance of a GPU in MIG mode."""

    uuid: Annotated[str, Field(pattern=r"^MIG-", description="MIG device UUID, as CUDA_VISIBLE_DEVICES takes it.")]
    memory_total_bytes: Annotated[Optional[Bytes], Field(description="Memory of the instance.")] = None


class Gpu(_Frozen):
    """One GPU that NVML could read."""

    index: Annotated[int, Field(ge=0, description="NVML index (PCI bus order).")]
    uuid: Annotated[str, Field(min_length=1, description='GPU UUID, "GPU-..."')]
    name: Annotated[str, Field(min_length=1, description='Product name, e.g. "NVIDIA GeForce RTX 3090".')]
    memory_total_bytes: Annotated[Bytes, Field(description="Total memory as NVML reports it.")]
    memory_free_bytes: Annotated[Bytes, Field(description="Free memory at capture.")]
    compute_capability: Annotated[ComputeCapability, Field(description="CUDA compute capability [major, minor].")]
    memory_used_bytes: Annotated[Optional[Bytes], Field(description="Used memory (NVML v1: includes driver-reserved).")] = None
    memory_reserved_bytes: Annotated[
        Optional[Bytes], Field(description="Driver-reserved memory (NVML v2); CUDA's cudaMemGetInfo total is total minus this.")
    ] = None
    pci_bus_id: Annotated[Optional[str], Field(description="PCI bus id.")] = None
    brand: Annotated[Optional[str], Field(description="NVML brand in lower case: geforce, nvidia_rtx, tesla, nvidia, ...")] = None
    mig_mode: Annotated[Optional[bool], Field(description="Current MIG mode; true = MIG enabled.")] = None
    mig_devices: Annotated[tuple[MigDevice, ...], BeforeValidator(_tuple), Field(description="MIG instances.")] = ()
    nvlink_active_links: Annotated[Optional[int], Field(ge=0, description="NVLinks in the active state.")] = None
    processes: Annotated[
        Optional[tuple[GpuProcess, ...]], BeforeValidator(_tuple), Field(description="Processes holding memory; absent = unknown.")
    ] = None

    @field_validator("memory_free_bytes", "memory_reserved_bytes", "memory_used_bytes")
    @classmethod
    def _free_le_total(cls, value: Optional[int], info: Any) -> Optional[int]:
        total = info.data.get("memory_total_bytes")
        if total is not None and value is not None and value > total:
            raise ValueError(f"is larger than memory_total_bytes ({total})")
        return value

    @property
    def cuda_total_bytes(self) -> int:
        """What cudaMemGetInfo reports as total (vLLM's budget base), never NVML's raw total.

        NVML total minus driver-reserved when the inventory has it (measured equal to the MiB on H200);
        otherwise the GPU table's CUDA total for this model (gpu_catalog.cuda_total_from_nvml).
        """
        return self.cuda_total()[0]

    def cuda_total(self) -> tuple[int, int, str]:
        """(CUDA total bytes, its uncertainty, how it was derived)."""
        if self.memory_reserved_bytes is not None:
            return self.memory_total_bytes - self.memory_reserved_bytes, 0, "NVML total minus driver-reserved"
        from launcher.hardware.catalog import cuda_total_from_nvml

        return cuda_total_from_nvml(self.name, self.memory_total_bytes)

    @property
    def model_key(self) -> tuple[str, int, tuple[int, int]]:
        """GPUs are the same model when name, memory and compute capability agree."""
        return (self.name, self.memory_total_bytes, self.compute_capability)

    @property
    def cc_text(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def label(self) -> str:
        return f"GPU {self.index} ({self.name})"


class GpuError(_Frozen):
    """A GPU NVML lists but could not read; it stays in the inventory so indices keep their meaning."""

    index: Annotated[int, Field(ge=0, description="NVML index.")]
    error: Annotated[str, Field(min_length=1, description="What NVML said.")]
    uuid: Annotated[Optional[str], Field(description="UUID, when it could be read.")] = None
    name: Annotated[Optional[str], Field(description="Name, when it could be read.")] = None
    pci_bus_id: Annotated[Optional[str], Field(description="PCI bus id, when it could be read.")] = None

    def label(self) -> str:
        return f"GPU {self.index} ({self.name or 'unreadable'})"


def _p2p_status(value: Any) -> Any:
    if isinstance(value, str) and value not in P2P_STATUSES and not value.startswith("error: "):
        raise ValueError(f"must be one of {', '.join(P2P_STATUSES)} or 'error: <text>'")
    return value


P2pStatus = Annotated[
    str,
    BeforeValidator(_p2p_status),
    WithJsonSchema({"type": "string", "anyOf": [{"enum": list(P2P_STATUSES)}, {"pattern": "^error: "}],
                    "description": "NVML's P2P status: " + ", ".join(P2P_STATUSES) + ", or 'error: <text>'"}),
]


class Link(_Frozen):
    """How two GPUs reach each other."""

    gpus: Annotated[tuple[int, int], BeforeValidator(_tuple), Field(description="The two NVML indices, smaller first.")]
    p2p_read: Annotated[Optional[P2pStatus], Field(description="NVML P2P status for reads.")] = None
    p2p_write: Annotated[Optional[P2pStatus], Field(description="NVML P2P status for writes.")] = None
    nvlink: Annotated[Optional[P2pStatus], Field(description="NVML P2P status over NVLink (ok = linked by NVLink).")] = None
    topology: Annotated[Optional[str], Field(description="NVML common ancestor: internal, single, multiple, hostbridge, node, system.")] = None

    @property
    def nvlinked(self) -> Optional[bool]:
        if self.nvlink is None or self.nvlink.startswith("error"):
            return None
        return self.nvlink == "ok"

    @property
    def p2p(self) -> Optional[bool]:
        """True when GPU peer-to-peer works (NVLink, or PCIe reads and writes); None when unknown."""
        if self.nvlink == "ok":
            return True
        states = [s for s in (self.p2p_read, self.p2p_write) if s is not None]
        if not states or any(s.startswith("error") or s == "unknown" for s in states):
            return None
        return all(s == "ok" for s in states)

    def why_not(self) -> str:
        """The NVML status that explains a missing P2P, for messages."""
        for status in (self.p2p_read, self.p2p_write):
            if status and status != "ok":
                return status.replace("_", " ")
        return "no P2P"


class CachedModel(_Frozen):
    """One checkpoint as the model cache (or a local path) holds it."""

    name: Annotated[str, Field(min_length=1, description="Hugging Face id (org/name) or a local path, as a profile's model.name says it.")]
    kind: Annotated[Literal["hub", "local"], Field(description="hub: in the Hugging Face cache; local: a directory.")] = "hub"
    state: Annotated[
        Literal["complete", "partial", "absent"],
        Field(description="complete: every safetensors file the index names is there; partial: some; absent: none (or no snapshot)."),
    ]
    location: Annotated[Optional[str], Field(description="The snapshot directory (hub) or the path (local).")] = None
    present_bytes: Annotated[Bytes, Field(description="Bytes already on disk (weight files and unfinished downloads).")] = 0
    expected_bytes: Annotated[Optional[Bytes], Field(description="Weight bytes the index names (metadata.total_size), when known.")] = None
    missing: Annotated[tuple[str, ...], BeforeValidator(_tuple), Field(description="Weight files the index names that are not there.")] = ()
    unfinished_downloads: Annotated[int, Field(ge=0, description="Files a download left unfinished (*.incomplete).")] = 0


class Storage(_Frozen):
    """Where vLLM finds or downloads the weights on the GPU host: the Hugging Face cache, its disk, offline mode."""

    hf_hub_cache: Annotated[str, Field(min_length=1, description="The hub cache directory (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).")]
    disk_free_bytes: Annotated[Optional[Bytes], Field(description="Free bytes on the cache's file system.")] = None
    disk_total_bytes: Annotated[Optional[Bytes], Field(description="Size of the cache's file system.")] = None
    hf_hub_offline: Annotated[bool, Field(description="HF_HUB_OFFLINE was set (vLLM may not download).")] = False
    models: Annotated[
        tuple[CachedModel, ...], BeforeValidator(_tuple),
        Field(description="Checkpoints in the cache (an inventory lists every one it holds; a model not listed is absent)."),
    ] = ()

    def model(self, name: str) -> Optional[CachedModel]:
        return next((m for m in self.models if m.name == name), None)


def _gpu_entry(value: Any) -> str:
    if isinstance(value, GpuError) or (isinstance(value, dict) and "error" in value):
        return "error"
    return "gpu"


class InventoryModel(_Frozen):
    """The inventory file as read and written (GPUs that errored sit in `gpus` with an `error`)."""

    format: Annotated[Optional[Literal["launcher-inventory/1"]], Field(description="Format version.")] = None
    driver_version: Annotated[str, Field(pattern=r"^\d+(\.\d+)*$", description='NVIDIA driver version, e.g. "580.159.04".')]
    cuda_driver_version: Annotated[int, Field(ge=0, description="CUDA version the driver supports, NVML's form (13000 = 13.0).")]
    nvml_version: Annotated[Optional[str], Field(description="NVML library version.")] = None
    captured_at: Annotated[Optional[str], Field(description="When it was captured (ISO 8601).")] = None
    hostname: Annotated[Optional[str], Field(description="Where it was captured.")] = None
    source: Annotated[Optional[str], Field(description='"nvml" for a probe; free text for a hand-written file.')] = None
    environment: Annotated[
        dict[str, str], Field(description="CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER at capture.")
    ] = Field(default_factory=dict)
    gpus: Annotated[
        tuple[Annotated[Union[Annotated[Gpu, Tag("gpu")], Annotated[GpuError, Tag("error")]], Discriminator(_gpu_entry)], ...],
        BeforeValidator(_tuple),
        Field(description="Every GPU NVML lists, in NVML order; an entry with `error` is a GPU NVML could not read."),
    ]
    links: Annotated[tuple[Link, ...], BeforeValidator(_tuple), Field(description="P2P/NVLink per GPU pair.")] = ()
    storage: Annotated[
        Optional[Storage],
        Field(description="The model cache and its disk at capture (`launcher gpus --json`); absent in older files: model checks then skip."),
    ] = None

    @field_validator("environment")
    @classmethod
    def _known_variables(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(VISIBILITY_VARIABLES))
        if unknown:
            raise ValueError(f"only {', '.join(VISIBILITY_VARIABLES)} are recorded; unknown: {', '.join(unknown)}")
        return value


@dataclass(frozen=True)
class Inventory:
    """A frozen snapshot of a machine's GPUs, as `launcher.hardware.gpu.probe` or an inventory file gives it."""

    driver_version: str
    cuda_driver_version: int
    gpus: tuple[Gpu, ...]  # readable GPUs, NVML order
    gpu_errors: tuple[GpuError, ...] = ()  # GPUs NVML lists but could not read
    links: tuple[Link, ...] = ()
    environment: Mapping[str, str] = None  # type: ignore[assignment]  # visibility variables at capture
    nvml_version: Optional[str] = None
    captured_at: Optional[str] = None
    hostname: Optional[str] = None
    source: Optional[str] = None  # "nvml" (live probe) or a file path
    storage: Optional[Storage] = None  # the model cache at capture (an inventory file of `launcher gpus --json`)
    described: Optional[str] = None  # GPUs from the GPU table (`--gpu MODEL --count N`), not a machine: driver unknown

    def __post_init__(self) -> None:
        if self.environment is None:
            object.__setattr__(self, "environment", {})

    # -------------------------------------------------------------- lookups

    @property
    def count(self) -> int:
        """GPUs NVML lists, readable or not."""
        return len(self.gpus) + len(self.gpu_errors)

    def entries(self) -> list[Union[Gpu, GpuError]]:
        """Every GPU entry in NVML index order."""
        return sorted([*self.gpus, *self.gpu_errors], key=lambda g: g.index)

    def gpu(self, index: int) -> Optional[Gpu]:
        return next((g for g in self.gpus if g.index == index), None)

    def link(self, a: int, b: int) -> Optional[Link]:
        key = (min(a, b), max(a, b))
        return next((link for link in self.links if tuple(link.gpus) == key), None)

    def interconnect(self, indices: Sequence[int]) -> Optional[str]:
        """How NCCL would connect these GPUs: "nvlink" (every pair), "pcie" (P2P), "p2p-disabled" (a pair
        without P2P: launcher then sets NCCL_P2P_DISABLE=1), or None when a pair is unknown."""
        states = []
        for i, a in enumerate(indices):
            for b in indices[i + 1 :]:
                link = self.link(a, b)
                if link is None or link.p2p is None:
                    return None
                states.append("nvlink" if link.nvlinked else ("pcie" if link.p2p else "p2p-disabled"))
        if not states:
            return None
        if "p2p-disabled" in states:
            return "p2p-disabled"
        return "nvlink" if all(s == "nvlink" for s in states) else "pcie"

    @property
    def driver_tuple(self) -> tuple[int, ...]:
        return version_tuple(self.driver_version)

    @property
    def cuda_text(self) -> str:
        return cuda_version_text(self.cuda_driver_version)

    def summary(self) -> str:
        """`2 x NVIDIA H200` or `1 x NVIDIA GeForce RTX 4090 + 1 x NVIDIA GeForce RTX 3090`."""
        counts: dict[str, int] = {}
        for g in self.gpus:
            counts[g.name] = counts.get(g.name, 0) + 1
        parts = [f"{n} x {name}" for name, n in counts.items()]
        if self.gpu_errors:
            parts.append(f"{len(self.gpu_errors)} unreadable")
        return " + ".join(parts) if parts else "no GPUs"

    # -------------------------------------------------------------- (de)serialisation

    def to_model(self) -> InventoryModel:
        return InventoryModel(
            format=FORMAT,
            driver_version=self.driver_version,
            cuda_driver_version=self.cuda_driver_version,
            nvml_version=self.nvml_version,
            captured_at=self.captured_at,
            hostname=self.hostname,
            source=self.source,
            environment=dict(self.environment),
            gpus=tuple(self.entries()),
            links=self.links,
            storage=self.storage,
        )

    def to_json(self) -> dict[str, Any]:
        return self.to_model().model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_model(cls, model: InventoryModel, source: Optional[str] = None) -> "Inventory":
        return cls(
            driver_version=model.driver_version,
            cuda_driver_version=model.cuda_driver_version,
            gpus=tuple(g for g in model.gpus if isinstance(g, Gpu)),
            gpu_errors=tuple(g for g in model.gpus if isinstance(g, GpuError)),
            links=model.links,
            environment=dict(model.environment),
            nvml_version=model.nvml_version,
            captured_at=model.captured_at,
            hostname=model.hostname,
            source=source or model.source,
            storage=model.storage,
        )


def described_inventory(model: "GpuModel", count: int) -> Inventory:
    """`count` idle cards of a GPU-table model (`--gpu MODEL --count N`, or `--gpu-memory`): what `check` and `profiles`
    judge when no machine is at hand. Free memory is the CUDA total (an idle card, as `fit --gpu` assumes); P2P is the
    table's (GeForce: none with the stock driver), NVLink only on SXM baseboards; the driver is unknown (its check skips)."""
    gpus = tuple(
        Gpu(index=i, uuid=f"GPU-described-{i}", name=model.nvml_name, memory_total_bytes=model.memory_total_bytes,
            memory_free_bytes=min(model.cuda_total_bytes, model.memory_total_bytes), compute_capability=model.compute_capability,
            processes=())
        for i in range(count)
    )
    p2p = "ok" if model.p2p_expected else "not_supported"
    nvlink = "ok" if model.nvlink == "sxm" else "not_supported"
    links = tuple(Link(gpus=(a, b), p2p_read=p2p, p2p_write=p2p, nvlink=nvlink) for a in range(count) for b in range(a + 1, count))
    return Inventory(driver_version="0", cuda_driver_version=0, gpus=gpus, links=links, source=f"GPU table: {count} x {model.key}",
                     described=f"{count} x {model.key} from the GPU table")


def version_tuple(text: str) -> tuple[int, ...]:
    """"580.159.04" -> (580, 159, 4)."""
    return tuple(int(p) for p in re.findall(r"\d+", text))


def cuda_version_text(value: int) -> str:
    """13000 -> "13.0" (NVML's form is 1000 * major + 10 * minor)."""
    return f"{value // 1000}.{(value % 1000) // 10}"


# ---------------------------------------------------------------------- reading files


def _printable_strings(data: Any, depth: int = 0) -> Any:
    """Every text of an inventory (GPU and process names, errors) as it may reach a terminal: control characters escaped."""
    from launcher.text import printable

    if depth > 64:
        raise ProfileError("inventory: nested too deep")
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        return {k: _printable_strings(v, depth + 1) for k, v in data.items()}
    if isinstance(data, list):
        return [_printable_strings(v, depth + 1) for v in data]
    return data


def parse_inventory(data: Any, source: str = "inventory") -> Inventory:
    """Validate already-decoded JSON; errors become one ProfileError line naming source and key."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: an inventory must be a JSON object with driver_version, cuda_driver_version and gpus")
    try:
        model = InventoryModel.model_validate(_printable_strings(data))
    except ValidationError as exc:
        raise ProfileError(_first_error(exc, data, source)) from None
    indices = [g.index for g in model.gpus]
    if len(set(indices)) != len(indices):
        dup = next(i for i in indices if indices.count(i) > 1)
        raise ProfileError(f"{source}: gpus: index {dup} appears twice")
    for n, link in enumerate(model.links):
        a, b = link.gpus
        if a == b or a not in indices or b not in indices:
            raise ProfileError(f"{source}: links[{n}].gpus: {[a, b]} must name two different GPUs of `gpus`")
    return Inventory.from_model(model, source=source)


def load_inventory(path: Union[str, Path]) -> Inventory:
    """Read an inventory file written by `launcher gpus --json` (or by hand)."""
    from launcher.files import MAX_JSON_BYTES, read_json

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ProfileError(f"{p}: inventory file does not exist (write one with `launcher gpus --json > {p.name}` on the GPU host)")
    data = read_json(p, MAX_JSON_BYTES, "inventory file")
    return parse_inventory(data, source=str(p))


def dump_inventory(inventory: Inventory) -> str:
    return json.dumps(inventory.to_json(), indent=2) + "\n"


def inventory_json_schema() -> dict[str, Any]:
    schema = InventoryModel.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "launcher GPU inventory (launcher-inventory/1)"
    return schema


def _first_error(exc: ValidationError, data: Mapping[str, Any], source: str) -> str:
    errors = exc.errors()
    err = errors[0]
    parts = _clean_loc(err.get("loc", ()))
    loc = _loc_text(parts)
    kind = err.get("type", "")
    if kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        message = "unknown key" + _did_you_mean(parts)
    else:
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        value = err.get("input")
        if not isinstance(value, (dict, list)) and repr(value) not in message:
            message += f" (got {value!r})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{source}: {loc}: {message}{more}" if loc else f"{source}: {message}{more}"


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "gpus" and isinstance(parts[1], int):
        del parts[2]  # the union tag ("gpu"/"error") pydantic puts in the path is noise to a person
    return parts


def _loc_text(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_MODELS: dict[str, tuple[type[BaseModel], ...]] = {
    "gpus": (Gpu, GpuError),
    "links": (Link,),
    "processes": (GpuProcess,),
    "mig_devices": (MigDevice,),
}


def _did_you_mean(loc: Sequence[Any]) -> str:
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return ""
    key = names[-1]
    parent = names[-2] if len(names) > 1 else None
    models = _MODELS.get(parent, ()) if parent else (InventoryModel,)
    allowed = sorted({f for m in models for f in m.model_fields})
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; expected one of: {', '.join(allowed)}" if allowed else ""


# ---------------------------------------------------------------------- visibility


@dataclass(frozen=True)
class VisibleDevice:
    """One device the CUDA program will see, in CUDA order (cuda:0, cuda:1, ...)."""

    cuda_index: int
    gpu_index: int  # NVML index of the physical GPU
    mig_uuid: Optional[str] = None  # set when the device is a MIG instance


@dataclass(frozen=True)
class Visibility:
    """Which physical GPUs a CUDA program started with these variables gets, and what to tell the operator."""

    devices: tuple[VisibleDevice, ...]
    notes: tuple[str, ...] = ()  # informational: how the list was derived
    problems: tuple[str, ...] = ()  # entries CUDA ignores (truncation), ambiguous order
    fatal: Optional[str] = None  # the container runtime would refuse to start (bad NVIDIA_VISIBLE_DEVICES)

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return tuple(d.gpu_index for d in self.devices)


def _strtoul(token: str) -> Optional[int]:
    # CUDA reads an index like strtoul: leading digits count ("1gpu" is 1); none means invalid.
    match = re.match(r"\d+", token)
    return int(match.group(0)) if match else None


def _match_uuid(token: str, entries: Sequence[Union[Gpu, GpuError]]) -> tuple[Optional[int], str]:
    """A `GPU-` UUID or unique UUID prefix -> NVML index; ("", reason) when none or ambiguous."""
    hits = [e.index for e in entries if e.uuid and e.uuid.lower().startswith(token.lower())]
    if len(hits) == 1:
        return hits[0], ""
    return None, ("ambiguous" if hits else "unknown")


def _match_mig(token: str, entries: Sequence[Union[Gpu, GpuError]]) -> Optional[tuple[int, str]]:
    for e in entries:
        if isinstance(e, Gpu):
            for m in e.mig_devices:
                if m.uuid.lower().startswith(token.lower()):
                    return e.index, m.uuid
    return None


def _apply_nvidia_visible(value: str, entries: list[Union[Gpu, GpuError]]) -> tuple[list[Union[Gpu, GpuError]], list[str], Optional[str]]:
    """NVIDIA_VISIBLE_DEVICES as the NVIDIA container runtime reads it (host indices or UUIDs)."""
    text = value.strip()
    if text.lower() == "all":
        return entries, ["NVIDIA_VISIBLE_DEVICES=all: every GPU is passed into the container"], None
    if text == "" or text.lower() in ("none", "void"):
        return [], [f"NVIDIA_VISIBLE_DEVICES={value!r}: the container runtime passes no GPU"], None
    chosen: list[Union[Gpu, GpuError]] = []
    for raw in text.split(","):
        token = raw.strip()
        match: Optional[Union[Gpu, GpuError]] = None
        if token.isdigit():
            match = next((e for e in entries if e.index == int(token)), None)
        elif token.upper().startswith(("GPU-", "MIG-")):
            idx, _ = _match_uuid(token, entries)
            if idx is None and token.upper().startswith("MIG-"):
                mig = _match_mig(token, entries)
                idx = mig[0] if mig else None
            match = next((e for e in entries if e.index == idx), None) if idx is not None else None
        if match is None:
            return [], [], f"NVIDIA_VISIBLE_DEVICES={value}: '{token}' is no GPU of this machine; the container runtime refuses to start the container"
        if match not in chosen:
            chosen.append(match)
    return chosen, [f"NVIDIA_VISIBLE_DEVICES={value}: the container gets GPU {', '.join(str(e.index) for e in chosen)}"], None


def _match_token(token: str, before: Sequence[str], entries: Sequence[Union[Gpu, GpuError]]) -> tuple[Optional[int], Optional[str], str]:
    """One CUDA_VISIBLE_DEVICES entry -> (NVML index or None, MIG UUID, why it matches nothing / "ambiguous")."""
    upper = token.upper()
    if upper == "GPU-":
        return None, None, "names no UUID"  # CUDA takes no empty prefix: measured on an H200, cuInit finds no device
    if upper.startswith("GPU-"):
        gpu_index, reason = _match_uuid(token, entries)
        return gpu_index, None, "ambiguous" if reason == "ambiguous" else "matches no GPU"
    if upper.startswith("MIG-"):
        found = _match_mig(token, entries)
        return (found[0], found[1], "") if found else (None, None, "matches no MIG instance")
    if any(t.strip().upper().startswith(("GPU-", "MIG-")) for t in before):
        # Measured on 4 x H200: CUDA_VISIBLE_DEVICES=GPU-<prefix>,0 gives only the UUID's GPU.
        return None, None, "is an index after a UUID (CUDA takes no index once UUIDs are used)"
    number = _strtoul(token)
    if number is not None and number < len(entries):
        return entries[number].index, None, ""
    if number is not None:
        return None, None, f"is past the last GPU (only {len(entries)} visible)"
    return None, None, "matches no GPU"


def resolve_visible(inventory: Inventory, environ: Mapping[str, str]) -> Visibility:
    """Map CUDA_VISIBLE_DEVICES (and NVIDIA_VISIBLE_DEVICES) to the physical GPUs, in CUDA's order.

    NVML ignores CUDA_VISIBLE_DEVICES; CUDA (and so vLLM) does not. Rules, as CUDA applies them
    (also mirrored by torch.cuda._parse_visible_devices):
    - unset: every GPU; empty: no GPU;
    - comma-separated entries: an index, a `GPU-` UUID or unique UUID prefix, or a `MIG-` UUID;
    - the first entry that matches no device ends the list (later entries are ignored);
    - an index or UUID given twice, or an ambiguous UUID prefix, hides every GPU;
    - `GPU-` alone names no GPU.
    Checked against CUDA itself (cuInit/cuDeviceGetUuid) on an H200 for "", "0", "0,5", "5,0",
    "-1,0", "0,0", "1gpu", UUID prefixes, full UUIDs, "GPU-", "GPU-ffff,0" and " 0 ".
    NVIDIA_VISIBLE_DEVICES is the container runtime's selection (host indices or UUIDs). It is applied
    first, and only when the inventory was captured outside that container (its `environment` has
    no NVIDIA_VISIBLE_DEVICES); inside the container NVML already shows only the passed GPUs.
    Indices follow CUDA_DEVICE_ORDER; with its default FASTEST_FIRST, mixed GPU models may be
    numbered differently from NVML's PCI order, which is reported as a problem.
    """
    entries = inventory.entries()
    notes: list[str] = []
    problems: list[str] = []

    nvidia = environ.get("NVIDIA_VISIBLE_DEVICES")
    if nvidia is not None:
        if "NVIDIA_VISIBLE_DEVICES" in inventory.environment:
            notes.append(
                f"NVIDIA_VISIBLE_DEVICES={inventory.environment['NVIDIA_VISIBLE_DEVICES']} was applied by the container runtime "
                "before NVML was read (NVML shows only the GPUs passed in)"
            )
        else:
            entries, more, fatal = _apply_nvidia_visible(nvidia, entries)
            notes += more
            if fatal:
                return Visibility((), tuple(notes), tuple(problems), fatal)

    order = environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    gpus_only = [e for e in entries if isinstance(e, Gpu)]
    if order != "PCI_BUS_ID" and len({g.model_key for g in gpus_only}) > 1:
        problems.append(
            "mixed GPU models with CUDA_DEVICE_ORDER unset: CUDA numbers them fastest first, not in NVML's PCI order; "
            "set CUDA_DEVICE_ORDER=PCI_BUS_ID so indices mean what nvidia-smi shows"
        )

    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is None:
        devices = tuple(VisibleDevice(n, e.index) for n, e in enumerate(entries))
        return Visibility(devices, tuple(notes), tuple(problems))
    if cvd.strip() == "":
        notes.append("CUDA_VISIBLE_DEVICES is empty: CUDA sees no GPU")
        return Visibility((), tuple(notes), tuple(problems))

    picked: list[VisibleDevice] = []
    seen: set[tuple[int, Optional[str]]] = set()
    tokens = cvd.split(",")
    for pos, raw in enumerate(tokens):
        token = raw.strip()
        gpu_index, mig, why = _match_token(token, tokens[:pos], entries)
        if why == "ambiguous":
            problems.append(f"CUDA_VISIBLE_DEVICES={cvd}: '{token}' matches more than one GPU UUID, so CUDA hides every GPU")
            return Visibility((), tuple(notes), tuple(problems))
        if gpu_index is None:
            rest = tokens[pos:]
            problems.append(
                f"CUDA_VISIBLE_DEVICES={cvd}: '{token}' {why}; CUDA ignores it and everything after it "
                f"({','.join(t.strip() for t in rest)})"
            )
            break
        key = (gpu_index, mig)
        if key in seen:
            problems.append(f"CUDA_VISIBLE_DEVICES={cvd}: '{token}' names a GPU twice, so CUDA sees no GPU (cuInit fails: invalid device)")
            return Visibility((), tuple(notes), tuple(problems))
        seen.add(key)
        picked.append(VisibleDevice(len(picked), gpu_index, mig))
    hidden = [e.index for e in entries if e.index not in {d.gpu_index for d in picked}]
    if hidden:
        notes.append(f"CUDA_VISIBLE_DEVICES={cvd} hides GPU {', '.join(str(i) for i in hidden)}")
    return Visibility(tuple(picked), tuple(notes), tuple(problems))
