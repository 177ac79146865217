"""tools/make_full_shape_model.py: the weightless directory has this model's real shape."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from launcher.hardware.catalog import lookup
from launcher.model.facts import MODEL_FACTS
from launcher.profile.load import resolve
from tests.helpers import FIXTURES, load_tool

REPO = Path(__file__).resolve().parents[2]
FACTS = MODEL_FACTS["havenoammo/Qwen3.6-27B-INT8-MTP"]
PROFILES = FIXTURES / "gpu-fullshape" / "profiles"


GEN = load_tool("make_full_shape_model.py")
BUDGET = load_tool("gpu_e2e/fullshape_budget.py")
IDS = {"<|im_end|>": 7, "<|image_pad|>": 11, "<|video_pad|>": 12, "<|vision_start|>": 9, "<|vision_end|>": 10}


def test_config_has_the_facts_of_the_model() -> None:
    cfg = GEN.model_config(IDS)
    text = cfg["text_config"]
    assert cfg["architectures"] == [FACTS.architecture]
    assert text["num_hidden_layers"] == FACTS.num_hidden_layers == 64
    assert text["layer_types"].count("full_attention") == FACTS.full_attention_layers == 16
    assert text["layer_types"].count("linear_attention") == FACTS.linear_attention_layers == 48
    assert [i for i, t in enumerate(text["layer_types"]) if t == "full_attention"] == list(range(3, 64, 4))
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "linear_num_key_heads",
                "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim",
                "vocab_size", "max_position_embeddings", "mtp_num_hidden_layers"):
        assert text[key] == getattr(FACTS, key), key
    assert text["mamba_ssm_dtype"] == "float32" and FACTS.ssm_state_dtype_bytes == 4
    assert text["eos_token_id"] == IDS["<|im_end|>"] and cfg["image_token_id"] == IDS["<|image_pad|>"]


def test_quantization_config_is_the_cards_w8a16_pack_quantized_with_mtp_ignored() -> None:
    q = GEN.model_config(IDS)["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "pack-quantized"
    weights = q["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["type"]) == (8, "int")
    assert q["config_groups"]["group_0"]["input_activations"] is None  # W8A16: activations stay BF16
    assert "re:.*mtp.*" in q["ignore"]


def test_index_bytes_follow_the_layout() -> None:
    idx, parts = GEN.index()
    assert idx["metadata"]["total_size"] == sum(parts.values())
    # the MTP layer is ~0.85 GB BF16 (model card, model facts), the vision tower ~0.92 GB
    assert parts["mtp"] == pytest.approx(FACTS.weights_mtp_bytes, rel=0.01)
    assert parts["vision"] == pytest.approx(FACTS.weights_vision_bytes, rel=0.01)
    # one quantized Linear: int8 weights packed in int32, BF16 group-128 scales, an int64 [2] shape
    packed = [n for n in idx["weight_map"] if n.endswith(".weight_packed")]
    assert len(packed) == 64 * 3 + 48 * 3 + 16 * 4
    assert idx["weight_map"]["mtp.fc.weight"] == "model-00002-of-00002.safetensors"
    assert not any(n.startswith("mtp.") and n.endswith("weight_packed") for n in idx["weight_map"])
    q_bytes = GEN.stored_tensors("x", [17408, 5120], "q")
    assert [b for _, b in q_bytes] == [17408 * 5120, 2 * 17408 * 40, 16]


@pytest.mark.parametrize("card, profile", [("RTX 3090", "fullshape-24gb-tp2-mtp"), ("RTX A6000", "fullshape-48gb-tp1")])
def test_profile_utilization_gives_the_cards_budget_on_an_h200(card: str, profile: str) -> None:
    h200 = lookup("H200").cuda_total_bytes
    target = math.ceil(0.95 * lookup(card).cuda_total_bytes)
    u = resolve(str(PROFILES / f"{profile}.yaml")).profile.engine.gpu_memory_utilization
    assert u is not None and math.ceil(u * h200) == target
    assert BUDGET.utilization_for(h200, target) == u
    # any total works: the helper steps to the float whose ceil lands on the target
    for total in (h200 - 12345, h200 + 2**20, 143_156 * 2**20):
        assert math.ceil(total * BUDGET.utilization_for(total, target)) == target
