"""Architecture and size facts for the served model, as in docs/memory-model.md#the-model (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL_ID = "havenoammo/Qwen3.6-27B-INT8-MTP"


@dataclass(frozen=True)
class ModelFacts:
    """What the memory estimator and the schema rules need to know about one checkpoint.

    Sizes are bytes on disk (decimal GB in docs/memory-model.md). `weights_main_bytes` is everything but the
    MTP layer, vision tower included; `weights_vision_bytes` is the part `--language-model-only`
    drops; `weights_mtp_bytes` is loaded only when speculating.
    """

    hf_id: str
    architecture: str
    num_hidden_layers: int
    full_attention_layers: int
    linear_attention_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int
    # Bytes per element of the GDN recurrent state: mamba_ssm_dtype float32 is copied into
    # mamba_ssm_cache_dtype (docs/memory-model.md#gdn-state-per-slot).
    ssm_state_dtype_bytes: int
    # Bytes per element of the conv state: mamba_cache_dtype auto means the model dtype, bf16.
    conv_state_dtype_bytes: int
    vocab_size: int
    max_position_embeddings: int
    mtp_num_hidden_layers: int
    valid_tensor_parallel_sizes: tuple[int, ...]
    weights_main_bytes: int
    weights_vision_bytes: int
    weights_mtp_bytes: int
    weights_source: str
    has_vision: bool = True

    @property
    def conv_channels(self) -> int:
        """Channels of the GDN causal conv: q and k (key heads x key dim each) plus v."""
        return (
            2 * self.linear_num_key_heads * self.linear_key_head_dim
            + self.linear_num_value_heads * self.linear_value_head_dim
        )


# docs/memory-model.md#the-model (architecture shared by Qwen3.5/3.6-27B; TP must divide 24 query
# heads, 16 GDN key heads and 48 GDN value heads). Sizes: model card, 33 GB main (vision tower of
# ~0.92 GB included) plus 0.85 GB BF16 MTP layer; a local model.safetensors.index.json wins.
_QWEN36_27B_INT8_MTP = ModelFacts(
    hf_id=DEFAULT_MODEL_ID,
    architecture="Qwen3_5ForConditionalGeneration",
    num_hidden_layers=64,
    full_attention_layers=16,
    linear_attention_layers=48,
    hidden_size=5120,
    num_attention_heads=24,
    num_key_value_heads=4,
    head_dim=256,
    linear_num_key_heads=16,
    linear_num_value_heads=48,
    linear_key_head_dim=128,
    linear_value_head_dim=128,
    linear_conv_kernel_dim=4,
    ssm_state_dtype_bytes=4,
    conv_state_dtype_bytes=2,
    vocab_size=248320,
    max_position_embeddings=262144,
    mtp_num_hidden_layers=1,
    valid_tensor_parallel_sizes=(1, 2, 4, 8),
    weights_main_bytes=33_000_000_000,
    weights_vision_bytes=920_000_000,
    weights_mtp_bytes=850_000_000,
    weights_source="shipped facts (model card: ~33 GB main incl. ~0.92 GB vision, ~0.85 GB MTP)",
)

MODEL_FACTS: dict[str, ModelFacts] = {_QWEN36_27B_INT8_MTP.hf_id: _QWEN36_27B_INT8_MTP}

def is_known(model: str | None) -> bool:
    """Whether launcher holds facts for this model id (a local copy names it in `model.facts`)."""
    return model is not None and model.strip().lower() in {k.lower() for k in MODEL_FACTS}


def facts_for(model: str | None) -> ModelFacts:
    """Facts for an HF id (case-insensitive), else the default model's.

    Every checkpoint this launcher serves shares the Qwen3.6-27B architecture; a local path or a
    re-upload gets the default's architecture, and its weight bytes should come from its own
    index (`launcher.model.weights.read_weight_bytes`).
    """
    if model:
        wanted = model.strip().lower()
        for key, facts in MODEL_FACTS.items():
            if key.lower() == wanted:
                return facts
    return MODEL_FACTS[DEFAULT_MODEL_ID]
