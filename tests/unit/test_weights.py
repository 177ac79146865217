"""Weight bytes from a local checkpoint (path or Hugging Face cache), else the shipped facts."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.fit.estimate import FitInput, estimate
from launcher.model.facts import MODEL_FACTS
from launcher.model.weights import find_checkpoint, hf_hub_cache, read_checkpoint, read_weight_bytes

MODEL = "havenoammo/Qwen3.6-27B-INT8-MTP"
FACTS = MODEL_FACTS[MODEL]

# Tensor name -> bytes, in two shards like the real checkpoint (MTP in the second, model card).
SHARDS = {
    "model-00001-of-00002.safetensors": {
        "model.language_model.layers.0.mlp.down_proj.weight_packed": 9000,
        "model.language_model.embed_tokens.weight": 5000,
        "lm_head.weight": 5000,
        "model.visual.blocks.0.attn.qkv.weight": 700,
        "model.visual.merger.linear_fc1.weight": 300,
    },
    "model-00002-of-00002.safetensors": {
        "mtp.fc.weight": 800,
        "mtp.layers.0.self_attn.q_proj.weight": 200,
    },
}
TOTAL = sum(sum(s.values()) for s in SHARDS.values())
CONFIG = {
    "architectures": ["Qwen3_5ForConditionalGeneration"],
    "text_config": {"mtp_num_hidden_layers": 1},
    "vision_config": {"depth": 27},
    "quantization_config": {"format": "pack-quantized", "ignore": ["re:.*mtp.*"]},
}


def _write_shard(path: Path, tensors: dict[str, int]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, size in tensors.items():
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def _checkpoint(directory: Path, shards: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(CONFIG))
    weight_map = {name: shard for shard, tensors in SHARDS.items() for name in tensors}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": TOTAL}, "weight_map": weight_map})
    )
    if shards:
        for shard, tensors in SHARDS.items():
            _write_shard(directory / shard, tensors)
    return directory


def test_local_path_with_shards_gives_the_exact_split(tmp_path):
    info = read_checkpoint(str(_checkpoint(tmp_path / "ckpt")))
    w = info.weights
    assert w.from_local_index and "shard headers" in w.source
    assert (w.main_bytes, w.vision_bytes, w.mtp_bytes) == (TOTAL - 1000, 1000, 1000)
    assert info.has_vision is True and info.mtp_num_hidden_layers == 1
    assert info.quantization_config["format"] == "pack-quantized"
    assert info.architectures == ("Qwen3_5ForConditionalGeneration",)


def test_index_without_shards_uses_names_and_shipped_sizes(tmp_path):
    w = read_weight_bytes(str(_checkpoint(tmp_path / "ckpt", shards=False)))
    assert w.from_local_index and "tensor names" in w.source
    assert w.mtp_bytes == FACTS.weights_mtp_bytes
    assert w.vision_bytes == FACTS.weights_vision_bytes
    assert w.main_bytes == TOTAL - FACTS.weights_mtp_bytes


def test_hf_cache_layout_follows_refs_main(tmp_path):
    repo = tmp_path / "hub" / "models--havenoammo--Qwen3.6-27B-INT8-MTP"
    _checkpoint(repo / "snapshots" / "aaaa")
    (repo / "snapshots" / "bbbb").mkdir(parents=True)  # an incomplete snapshot is skipped
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaaa\n")
    env = {"HF_HOME": str(tmp_path)}
    assert hf_hub_cache(env) == tmp_path / "hub"
    assert find_checkpoint(MODEL, env) == repo / "snapshots" / "aaaa"
    assert read_weight_bytes(MODEL, env=env).main_bytes == TOTAL - 1000


def test_hub_cache_env_precedence(tmp_path):
    assert hf_hub_cache({"HF_HUB_CACHE": "/x", "HF_HOME": "/y"}) == Path("/x")
    assert hf_hub_cache({"XDG_CACHE_HOME": "/z"}) == Path("/z/huggingface/hub")
    assert hf_hub_cache({}, home=tmp_path) == tmp_path / ".cache" / "huggingface" / "hub"


def test_nothing_local_falls_back_to_shipped_facts(tmp_path):
    info = read_checkpoint(MODEL, env={"HF_HUB_CACHE": str(tmp_path)})
    assert info.path is None and not info.weights.from_local_index
    assert info.weights.main_bytes == 33_000_000_000 and info.weights.mtp_bytes == 850_000_000


def test_broken_index_is_a_profile_error(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")
    (ckpt / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ProfileError, match="model.safetensors.index.json"):
        read_checkpoint(str(ckpt))


def test_local_bytes_feed_the_estimate(tmp_path):
    w = read_weight_bytes(str(_checkpoint(tmp_path / "ckpt")))
    r = estimate(FitInput(total_memory_bytes=24 << 30, compute_capability=(8, 6), tensor_parallel_size=2, weights=w))
    assert r.weights.uncertainty_bytes == int(0.10 * (1 << 30))
    assert "local index" in r.weights.source
