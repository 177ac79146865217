"""Weight bytes of a local checkpoint (a path or the Hugging Face cache), else the shipped facts.

docs/memory-model.md#weights-w: weight bytes come from model.safetensors.index.json ->
metadata.total_size, not from a constant. The split into vision tower and MTP layer comes from
the shard headers when the shards are present (8-byte length plus a JSON header, no tensor data is
read), else from the tensor names in the index and the shipped sizes.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import ProfileError
from launcher.model.facts import ModelFacts, facts_for


@dataclass(frozen=True)
class WeightSizes:
    """Checkpoint bytes on disk: main (everything but MTP, vision included), vision, MTP."""

    main_bytes: int
    vision_bytes: int
    mtp_bytes: int
    source: str
    from_local_index: bool = False

    @classmethod
    def from_facts(cls, facts: ModelFacts) -> "WeightSizes":
        return cls(
            main_bytes=facts.weights_main_bytes,
            vision_bytes=facts.weights_vision_bytes if facts.has_vision else 0,
            mtp_bytes=facts.weights_mtp_bytes,
            source=facts.weights_source,
            from_local_index=False,
        )

INDEX_NAME = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointInfo:
    """What the estimator and the checks read from a checkpoint's files."""

    path: str | None  # the directory read, None when nothing local was found
    weights: WeightSizes
    has_vision: bool | None
    mtp_num_hidden_layers: int | None
    quantization_config: dict[str, Any] | None
    architectures: tuple[str, ...] = ()


def hf_hub_cache(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The hub cache directory, resolved the way huggingface_hub does."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return (home or Path.home()) / ".cache" / "huggingface" / "hub"


def find_checkpoint(model: str, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path | None:
    """A local directory holding the model: the path itself, or its HF cache snapshot."""
    as_path = Path(model).expanduser()
    if as_path.is_dir():
        return as_path
    if model.count("/") != 1 or model.startswith(("/", ".", "~")):
        return None
    org, name = model.split("/")
    repo = hf_hub_cache(env, home) / f"models--{org}--{name}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8").strip()
        candidate = snapshots / revision
        if (candidate / "config.json").is_file():
            return candidate
    usable = [d for d in snapshots.iterdir() if (d / "config.json").is_file()]
    if not usable:
        return None
    return max(usable, key=lambda d: d.stat().st_mtime)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProfileError(f"{path}: cannot read checkpoint metadata ({str(exc)[:200]})") from None


def _is_vision(name: str) -> bool:
    parts = name.split(".")
    return "visual" in parts or "vision_tower" in parts


def _is_mtp(name: str) -> bool:
    return name.startswith("mtp.") or ".mtp." in name


def _shard_tensor_bytes(path: Path) -> dict[str, int] | None:
    """Tensor name -> bytes from a safetensors header; None when the shard is absent or unreadable."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                return None
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                return None
            header = json.loads(fh.read(length))
    except (OSError, ValueError):
        return None
    sizes: dict[str, int] = {}
    for name, meta in header.items():
        if name == "__metadata__" or not isinstance(meta, dict):
            continue
        try:
            start, end = meta.get("data_offsets", (0, 0))
            sizes[name] = int(end) - int(start)
        except (TypeError, ValueError, OverflowError):  # a damaged header (1e400 is Infinity): not a size
            return None
    return sizes


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else {}


def read_checkpoint(
    model: str,
    facts: ModelFacts | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> CheckpointInfo:
    """Read weight bytes and the memory-relevant config of `model` (HF id or local path).

    Falls back to the shipped facts when nothing local is found. A local checkpoint whose
    metadata is unreadable raises ProfileError naming the file.
    """
    facts = facts or facts_for(model)
    directory = find_checkpoint(model, env, home)
    if directory is None:
        return CheckpointInfo(None, WeightSizes.from_facts(facts), None, None, None)

    config_path = directory / "config.json"
    config = _load_json(config_path) if config_path.is_file() else {}
    text = _text_config(config)
    has_vision = "vision_config" in config if config else None
    mtp_layers = text.get("mtp_num_hidden_layers", config.get("mtp_num_hidden_layers"))
    quant = config.get("quantization_config") or text.get("quantization_config")
    architectures = tuple(config.get("architectures") or ())

    index_path = directory / INDEX_NAME
    tensor_files: dict[str, str] = {}
    total: int | None = None
    if index_path.is_file():
        index = _load_json(index_path)
        try:
            total = int(index["metadata"]["total_size"])
        except (KeyError, TypeError, ValueError, OverflowError):  # 1e400 reads as Infinity
            raise ProfileError(f"{index_path}: no metadata.total_size") from None
        tensor_files = dict(index.get("weight_map") or {})
    elif (directory / SINGLE_FILE).is_file():
        sizes = _shard_tensor_bytes(directory / SINGLE_FILE)
        if sizes is not None:
            total = sum(sizes.values())
            tensor_files = {name: SINGLE_FILE for name in sizes}
    if total is None:
        return CheckpointInfo(str(directory), WeightSizes.from_facts(facts), has_vision,
                              mtp_layers, quant, architectures)

    # Exact split from the shard headers when every shard is present.
    per_tensor: dict[str, int] = {}
    for shard in sorted(set(tensor_files.values())):
        sizes = _shard_tensor_bytes(directory / shard)
        if sizes is None:
            per_tensor = {}
            break
        per_tensor.update(sizes)
    if per_tensor:
        vision = sum(size for name, size in per_tensor.items() if _is_vision(name))
        mtp = sum(size for name, size in per_tensor.items() if _is_mtp(name))
        how = "shard headers"
    else:
        names = list(tensor_files)
        vision = facts.weights_vision_bytes if any(_is_vision(n) for n in names) else 0
        mtp = facts.weights_mtp_bytes if any(_is_mtp(n) for n in names) else 0
        how = "tensor names, shipped vision/MTP sizes"
    if has_vision is None:
        has_vision = vision > 0
    weights = WeightSizes(
        main_bytes=total - mtp,
        vision_bytes=vision,
        mtp_bytes=mtp,
        source=f"local index {index_path if index_path.is_file() else directory / SINGLE_FILE} ({how})",
        from_local_index=True,
    )
    return CheckpointInfo(str(directory), weights, has_vision, mtp_layers, quant, architectures)


def read_weight_bytes(model: str, facts: ModelFacts | None = None, env: Mapping[str, str] | None = None,
                      home: Path | None = None) -> WeightSizes:
    """Weight bytes for `model`: local index when found, else the shipped facts."""
    return read_checkpoint(model, facts, env, home).weights
