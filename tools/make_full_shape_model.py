#!/usr/bin/env python3
"""Write a weightless model directory with the real shape of havenoammo/Qwen3.6-27B-INT8-MTP.

    python tools/make_full_shape_model.py [--out DIR] [--check]

vLLM does not need the 33 GB of weights to allocate exactly what they take: `--load-format dummy`
builds every layer from config.json with its real shapes and quantized parameter types (INT8 packed
into int32, BF16 scales, the BF16 MTP layer) and fills them with random values. This directory holds
what vLLM reads besides the weights:

- config.json: the Qwen3.6-27B architecture (64 layers, 48 Gated DeltaNet + 16 full attention,
  hidden 5120, 24 q / 4 KV heads of 256, one MTP layer, vocab 248320, 262144 positions) and the
  W8A16 compressed-tensors `pack-quantized` quantization_config of the INT8-MTP checkpoint. Every
  value carries a comment: where it comes from, and [inferred] where no published file states it.
- model.safetensors.index.json: metadata.total_size = the bytes the real checkpoint would hold
  with this config (packed INT8 + BF16 group scales + int64 shape records + BF16 tensors), and
  the tensor names in the checkpoint's two-file layout (the shards themselves are absent), so
  `launcher fit` reads local weight bytes as it would for a downloaded copy.
- tokenizer.json / tokenizer_config.json / generation_config.json: the tiny offline byte-level BPE
  of tools/make_tiny_model.py (same corpus and Qwen-style chat template), plus the Qwen3.5
  vision special tokens that vLLM's Qwen3.5 processor looks up. Token ids in config.json that
  point into the real 248k tokenizer (eos, image/video/vision markers) point into this one.
- preprocessor_config.json / video_preprocessor_config.json: the Qwen3-VL processor settings
  vLLM's multimodal registry reads at start even with --language-model-only.
- launcher-tiny-model.json: launcher's random-weights marker (`launcher smoke` reports output
  checks as n/a), with the byte counts of each part.

Serve it with `vllm serve DIR --load-format dummy --language-model-only ...` (vLLM 0.25.1 and
later). Deterministic: the same arguments write byte-identical files. Needs `tokenizers`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GENERATOR_VERSION = 1
DEFAULT_OUT = Path("/tmp/qwen3.6-27b-int8-mtp-shape")
MANIFEST = "launcher-tiny-model.json"  # launcher.live.smoke.RANDOM_WEIGHTS_MARKER
SEED = 20261128  # the tiny tokenizer's corpus seed (tools/make_tiny_model.py)

# ----------------------------------------------------------------------------------- shape
# Sources: [facts] launcher/model/facts.py (Qwen3.6-27B config.json as published; the same numbers
# as THUDM/slime's qwen3.5-27B script); [card] the havenoammo/Qwen3.6-27B-INT8-MTP model card;
# [vllm] vLLM 0.25.1's own Qwen3.5 config class (vllm/transformers_utils/configs/qwen3_5.py) and
# model code; [inferred] my own choice where no published file states the value.
HIDDEN = 5120  # [facts] hidden_size
INTERMEDIATE = 17408  # [facts] intermediate_size: dense SwiGLU MLP in all 64 layers
LAYERS = 64  # [facts] num_hidden_layers
FULL_ATTENTION_INTERVAL = 4  # [facts] layers 3, 7, ..., 63 are full attention: 16 + 48 GDN
HEADS = 24  # [facts] num_attention_heads
KV_HEADS = 4  # [facts] num_key_value_heads
HEAD_DIM = 256  # [facts] head_dim
LIN_K_HEADS = 16  # [facts] linear_num_key_heads
LIN_V_HEADS = 48  # [facts] linear_num_value_heads
LIN_K_DIM = 128  # [facts] linear_key_head_dim
LIN_V_DIM = 128  # [facts] linear_value_head_dim
CONV_KERNEL = 4  # [facts] linear_conv_kernel_dim
VOCAB = 248320  # [facts] vocab_size; embed_tokens and lm_head untied
MAX_POSITIONS = 262144  # [facts] max_position_embeddings
MTP_LAYERS = 1  # [facts] mtp_num_hidden_layers (mtp_use_dedicated_embeddings false)
# Vision tower (built only without --language-model-only): [facts] 27 blocks, hidden 1152,
# out_hidden 5120, patch 16; intermediate 4304, 16 heads, 2304 position embeddings and merge 2 are
# vLLM's Qwen3.5 vision defaults [vllm], which give the ~0.46 B parameters [facts] quotes.
VISION = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
          "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "out_hidden_size": HIDDEN,
          "num_position_embeddings": 2304}

# W8A16 compressed-tensors. [card] "INT8 weights, FP16/BF16 activations via compressed-tensors
# (pack-quantized format)", tensor types I64 / I32 / BF16 (int64 weight_shape records, int32 packed
# weights, BF16 scales and unquantized tensors), `re:.*mtp.*` in the ignore list. No published
# file states group size or symmetry: group 128 symmetric is [inferred] from the sibling W8A16
# checkpoints of this model (group 128, symmetric), and symmetric INT8 is what Marlin (Ampere) and
# Machete (Hopper) serve. lm_head is [inferred] (llm-compressor recipes always ignore it; vLLM never
# quantizes a ParallelLMHead through compressed-tensors anyway). The vision tower is [inferred]
# (every published INT8 quant of this model keeps it BF16). in_proj_a / in_proj_b are [inferred]:
# 48 output rows (24 per GPU at TP2) are below the INT8 kernels' 64-column tile, so a checkpoint
# that loads at TP2 must keep them BF16, as every published quant of this model does.
GROUP_SIZE = 128
QUANT_IGNORE = ["lm_head", "re:.*visual.*", "re:.*linear_attn.in_proj_a$", "re:.*linear_attn.in_proj_b$", "re:.*mtp.*"]


def quantization_config() -> dict[str, Any]:
    return {
        "config_groups": {
            "group_0": {
                "format": "pack-quantized",  # [card]
                "input_activations": None,  # W8A16: activations stay BF16 [card]
                "output_activations": None,
                "targets": ["Linear"],  # llm-compressor's default target [inferred]
                "weights": {
                    "actorder": None,
                    "block_structure": None,
                    "dynamic": False,
                    "group_size": GROUP_SIZE,  # [inferred], see above
                    "num_bits": 8,  # [card] INT8
                    "observer": "minmax",
                    "observer_kwargs": {},
                    "strategy": "group",  # [inferred]
                    "symmetric": True,  # [inferred]
                    "type": "int",  # [card]
                },
            }
        },
        "format": "pack-quantized",  # [card]
        "global_compression_ratio": None,
        "ignore": QUANT_IGNORE,  # `re:.*mtp.*` [card]; the rest [inferred]
        "kv_cache_scheme": None,  # no KV scales in the checkpoint [facts]: fp8 KV uses scale 1.0
        "quant_method": "compressed-tensors",  # [card]
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
    }


def layer_types() -> list[str]:
    return ["full_attention" if (i + 1) % FULL_ATTENTION_INTERVAL == 0 else "linear_attention" for i in range(LAYERS)]


def model_config(ids: dict[str, int]) -> dict[str, Any]:
    text = {
        "model_type": "qwen3_5_text",  # [facts]
        "architectures": None,
        "attention_bias": False,  # [facts] no q/k/v bias
        "attention_dropout": 0.0,
        "attn_output_gate": True,  # [facts] q_proj is 5120 -> 12288 (query plus gate)
        "bos_token_id": None,
        "dtype": "bfloat16",  # [facts] text_config dtype; also stops vLLM looking for safetensors
        "eos_token_id": ids["<|im_end|>"],  # the real one points into the 248k tokenizer; ours into the tiny one
        "pad_token_id": None,
        "full_attention_interval": FULL_ATTENTION_INTERVAL,  # [facts]
        "head_dim": HEAD_DIM,  # [facts]
        "hidden_act": "silu",  # [facts] SwiGLU
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_types": layer_types(),  # [facts] full attention at (i+1) % 4 == 0
        "linear_conv_kernel_dim": CONV_KERNEL,
        "linear_key_head_dim": LIN_K_DIM,
        "linear_num_key_heads": LIN_K_HEADS,
        "linear_num_value_heads": LIN_V_HEADS,
        "linear_value_head_dim": LIN_V_DIM,
        "mamba_ssm_dtype": "float32",  # [facts] recurrent state kept in fp32 (vLLM copies it to the cache dtype)
        "max_position_embeddings": MAX_POSITIONS,
        "mlp_only_layers": [],
        "mtp_num_hidden_layers": MTP_LAYERS,  # [facts] [card] one MTP layer
        "mtp_use_dedicated_embeddings": False,  # [facts] the drafter shares embed_tokens / lm_head
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "partial_rotary_factor": 0.25,  # [facts] rotary dim 64 of 256
        "rms_norm_eps": 1e-06,  # [inferred] Qwen's usual value (no effect on memory)
        "rope_parameters": {  # [facts] rope_type default, theta 1e7, mrope [11, 11, 10] interleaved
            "mrope_interleaved": True,
            "mrope_section": [11, 11, 10],
            "partial_rotary_factor": 0.25,
            "rope_theta": 10000000,
            "rope_type": "default",
        },
        "tie_word_embeddings": False,  # [facts] embed_tokens and lm_head are separate [248320, 5120]
        "use_cache": True,
        "vocab_size": VOCAB,
    }
    text = {k: v for k, v in text.items() if v is not None}
    vision = {
        "model_type": "qwen3_5",  # [facts]
        "deepstack_visual_indexes": [],  # [vllm] Qwen3.5 has no deepstack (the tiny GPU model's value)
        "dtype": "bfloat16",
        "hidden_act": "gelu_pytorch_tanh",  # [vllm] default
        "initializer_range": 0.02,
        **VISION,
    }
    return {
        "architectures": ["Qwen3_5ForConditionalGeneration"],  # [facts] vLLM registry key
        "model_type": "qwen3_5",  # [facts]
        "dtype": "bfloat16",
        # [vllm] defaults are 248056/248057/248053/248054 in the real tokenizer; ours are the tiny one's
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
        "text_config": text,
        "vision_config": vision,
        "quantization_config": quantization_config(),
    }


# --------------------------------------------------------------------- checkpoint inventory
# (name, shape, kind) in the Hugging Face layout; kind "q" = a quantized Linear (int32 packed
# weight, BF16 scales, int64 weight_shape), "bf16" = stored as BF16, "f32" = float32.


def _full_attention(p: str) -> list[tuple[str, list[int], str]]:
    return [
        (f"{p}.self_attn.q_proj", [2 * HEADS * HEAD_DIM, HIDDEN], "q"),
        (f"{p}.self_attn.k_proj", [KV_HEADS * HEAD_DIM, HIDDEN], "q"),
        (f"{p}.self_attn.v_proj", [KV_HEADS * HEAD_DIM, HIDDEN], "q"),
        (f"{p}.self_attn.o_proj", [HIDDEN, HEADS * HEAD_DIM], "q"),
        (f"{p}.self_attn.q_norm.weight", [HEAD_DIM], "bf16"),
        (f"{p}.self_attn.k_norm.weight", [HEAD_DIM], "bf16"),
    ]


def _linear_attention(p: str) -> list[tuple[str, list[int], str]]:
    key_dim, value_dim = LIN_K_HEADS * LIN_K_DIM, LIN_V_HEADS * LIN_V_DIM
    a = f"{p}.linear_attn"
    return [
        (f"{a}.in_proj_qkv", [2 * key_dim + value_dim, HIDDEN], "q"),
        (f"{a}.in_proj_z", [value_dim, HIDDEN], "q"),
        (f"{a}.in_proj_b.weight", [LIN_V_HEADS, HIDDEN], "bf16"),
        (f"{a}.in_proj_a.weight", [LIN_V_HEADS, HIDDEN], "bf16"),
        (f"{a}.conv1d.weight", [2 * key_dim + value_dim, 1, CONV_KERNEL], "bf16"),
        (f"{a}.dt_bias", [LIN_V_HEADS], "bf16"),
        (f"{a}.A_log", [LIN_V_HEADS], "f32"),
        (f"{a}.norm.weight", [LIN_V_DIM], "f32"),
        (f"{a}.out_proj", [HIDDEN, value_dim], "q"),
    ]


def _mlp(p: str, kind: str) -> list[tuple[str, list[int], str]]:
    return [
        (f"{p}.mlp.gate_proj" + ("" if kind == "q" else ".weight"), [INTERMEDIATE, HIDDEN], kind),
        (f"{p}.mlp.up_proj" + ("" if kind == "q" else ".weight"), [INTERMEDIATE, HIDDEN], kind),
        (f"{p}.mlp.down_proj" + ("" if kind == "q" else ".weight"), [HIDDEN, INTERMEDIATE], kind),
        (f"{p}.input_layernorm.weight", [HIDDEN], "bf16"),
        (f"{p}.post_attention_layernorm.weight", [HIDDEN], "bf16"),
    ]


def _vision() -> list[tuple[str, list[int], str]]:
    v = VISION
    h, i, o = v["hidden_size"], v["intermediate_size"], v["out_hidden_size"]
    merged = h * v["spatial_merge_size"] ** 2
    rows: list[tuple[str, list[int], str]] = [
        ("model.visual.patch_embed.proj.weight", [h, v["in_channels"], v["temporal_patch_size"], v["patch_size"], v["patch_size"]], "bf16"),
        ("model.visual.patch_embed.proj.bias", [h], "bf16"),
        ("model.visual.pos_embed.weight", [v["num_position_embeddings"], h], "bf16"),
        ("model.visual.merger.norm.weight", [h], "bf16"),
        ("model.visual.merger.norm.bias", [h], "bf16"),
        ("model.visual.merger.linear_fc1.weight", [merged, merged], "bf16"),
        ("model.visual.merger.linear_fc1.bias", [merged], "bf16"),
        ("model.visual.merger.linear_fc2.weight", [o, merged], "bf16"),
        ("model.visual.merger.linear_fc2.bias", [o], "bf16"),
    ]
    for b in range(v["depth"]):
        p = f"model.visual.blocks.{b}"
        rows += [
            (f"{p}.norm1.weight", [h], "bf16"), (f"{p}.norm1.bias", [h], "bf16"),
            (f"{p}.norm2.weight", [h], "bf16"), (f"{p}.norm2.bias", [h], "bf16"),
            (f"{p}.attn.qkv.weight", [3 * h, h], "bf16"), (f"{p}.attn.qkv.bias", [3 * h], "bf16"),
            (f"{p}.attn.proj.weight", [h, h], "bf16"), (f"{p}.attn.proj.bias", [h], "bf16"),
            (f"{p}.mlp.linear_fc1.weight", [i, h], "bf16"), (f"{p}.mlp.linear_fc1.bias", [i], "bf16"),
            (f"{p}.mlp.linear_fc2.weight", [h, i], "bf16"), (f"{p}.mlp.linear_fc2.bias", [h], "bf16"),
        ]
    return rows


def checkpoint_tensors() -> list[tuple[str, list[int], str]]:
    """Every tensor of the checkpoint (quantized Linears as one row each), main file first."""
    rows: list[tuple[str, list[int], str]] = [
        ("model.language_model.embed_tokens.weight", [VOCAB, HIDDEN], "bf16"),
        ("model.language_model.norm.weight", [HIDDEN], "bf16"),
        ("lm_head.weight", [VOCAB, HIDDEN], "bf16"),
    ]
    for i, kind in enumerate(layer_types()):
        p = f"model.language_model.layers.{i}"
        rows += (_full_attention(p) if kind == "full_attention" else _linear_attention(p)) + _mlp(p, "q")
    rows += _vision()
    # [card] the MTP layer, BF16, in the second file: fc [5120, 10240], three norms, one decoder layer
    mtp: list[tuple[str, list[int], str]] = [
        ("mtp.fc.weight", [HIDDEN, 2 * HIDDEN], "bf16"),
        ("mtp.norm.weight", [HIDDEN], "bf16"),
        ("mtp.pre_fc_norm_hidden.weight", [HIDDEN], "bf16"),
        ("mtp.pre_fc_norm_embedding.weight", [HIDDEN], "bf16"),
    ]
    for name, shape, kind in _full_attention("mtp.layers.0") + _mlp("mtp.layers.0", "bf16"):
        mtp.append((name if kind != "q" else name + ".weight", shape, "bf16"))
    return rows + mtp


def stored_tensors(name: str, shape: list[int], kind: str) -> list[tuple[str, int]]:
    """(stored tensor name, bytes) as compressed-tensors pack-quantized writes them."""
    count = 1
    for dim in shape:
        count *= dim
    if kind == "bf16":
        return [(name, 2 * count)]
    if kind == "f32":
        return [(name, 4 * count)]
    out_features, in_features = shape
    return [
        (f"{name}.weight_packed", out_features * in_features),  # int32 holding four int8 each
        (f"{name}.weight_scale", 2 * out_features * (in_features // GROUP_SIZE)),  # BF16 per group
        (f"{name}.weight_shape", 2 * 8),  # int64 [2]
    ]


def index() -> tuple[dict[str, Any], dict[str, int]]:
    """model.safetensors.index.json and the bytes of each part (language, vision, MTP)."""
    weight_map: dict[str, str] = {}
    parts = {"language": 0, "vision": 0, "mtp": 0}
    for name, shape, kind in checkpoint_tensors():
        part = "mtp" if name.startswith("mtp.") else "vision" if ".visual." in name else "language"
        shard = "model-00002-of-00002.safetensors" if part == "mtp" else "model-00001-of-00002.safetensors"
        for stored, size in stored_tensors(name, shape, kind):
            weight_map[stored] = shard
            parts[part] += size
    total = sum(parts.values())
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, parts


# ------------------------------------------------------------------------------- tokenizer


def _tiny() -> Any:
    spec = importlib.util.spec_from_file_location("make_tiny_model", HERE / "make_tiny_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VISION_TOKENS = [  # Qwen3.5's vision markers: its processor resolves them by name at start
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
]


def build_tokenizer(seed: int) -> tuple[str, dict[str, Any], dict[str, int]]:
    """tools/make_tiny_model.py's tokenizer plus the vision markers: (tokenizer.json, config, ids)."""
    tiny = _tiny()
    try:
        from tokenizers import AddedToken, Tokenizer
    except ImportError:
        raise SystemExit("make_full_shape_model: needs the `tokenizers` package (any vLLM venv has it)") from None
    text, ids = tiny.build_tokenizer(seed)
    tok = Tokenizer.from_str(text)
    for content, special in VISION_TOKENS:
        tok.add_special_tokens([AddedToken(content, special=special, normalized=False)])
        ids[content] = tok.token_to_id(content)
    text = json.dumps(json.loads(tok.to_str()), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    config = tiny.tokenizer_config(ids)
    for content, special in VISION_TOKENS:
        config["added_tokens_decoder"][str(ids[content])] = {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
    config["model_max_length"] = MAX_POSITIONS
    return text, config, ids


def processor_configs() -> dict[str, dict[str, Any]]:
    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
              "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor"}
    return {
        "preprocessor_config.json": dict(common, size={"longest_edge": 16777216, "shortest_edge": 65536},
                                         image_processor_type="Qwen2VLImageProcessor"),
        "video_preprocessor_config.json": dict(common, size={"longest_edge": 25165824, "shortest_edge": 4096},
                                               video_processor_type="Qwen3VLVideoProcessor"),
    }


# ------------------------------------------------------------------------------------ write


def as_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def build_files(seed: int) -> tuple[dict[str, bytes], dict[str, Any]]:
    tokenizer_json, tokenizer_cfg, ids = build_tokenizer(seed)
    idx, parts = index()
    tiny = _tiny()
    files = {
        "config.json": as_json(model_config(ids)),
        "generation_config.json": as_json(tiny.generation_config(ids)),
        "tokenizer.json": tokenizer_json.encode(),
        "tokenizer_config.json": as_json(tokenizer_cfg),
        "model.safetensors.index.json": as_json(idx),
        **{name: as_json(cfg) for name, cfg in processor_configs().items()},
    }
    info = {
        "checkpoint_bytes": {**parts, "total": idx["metadata"]["total_size"]},
        "quantization": {"group_size": GROUP_SIZE, "symmetric": True, "ignore": QUANT_IGNORE},
        "special_token_ids": ids,
    }
    return files, info


def generate(out: Path, seed: int) -> dict[str, Any]:
    files, info = build_files(seed)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    manifest = {
        "about": "weightless full-shape Qwen3.6-27B-INT8-MTP (serve with --load-format dummy), "
                 "generated by launcher's tools/make_full_shape_model.py",
        "random_weights": True,
        "weightless": True,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "files": digests,
        **info,
    }
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    (staging / MANIFEST).write_bytes(as_json(manifest))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return manifest


def check(out: Path) -> None:
    """Parse the directory as vLLM does (its own Qwen3.5 config class when vLLM is importable)."""
    from transformers import AutoTokenizer

    cfg = json.loads((out / "config.json").read_text())
    try:
        from vllm.transformers_utils.configs.qwen3_5 import Qwen3_5Config
    except ImportError:
        from transformers import AutoConfig

        parsed = AutoConfig.from_pretrained(out)
    else:
        parsed = Qwen3_5Config(**{k: v for k, v in cfg.items() if k != "model_type"})
    text = parsed.text_config
    assert text.layer_types.count("full_attention") == 16 and text.num_hidden_layers == 64
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (HIDDEN, HEADS, KV_HEADS, HEAD_DIM)
    tok = AutoTokenizer.from_pretrained(out)
    markers = {"<|image_pad|>": "image_token_id", "<|video_pad|>": "video_token_id",
               "<|vision_start|>": "vision_start_token_id", "<|vision_end|>": "vision_end_token_id"}
    for token, key in markers.items():
        assert tok.convert_tokens_to_ids(token) == cfg[key], token
    prompt = tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True)
    print(f"make_full_shape_model: check ok: {type(parsed).__name__}, {len(tok)} tokens, prompt {prompt!r}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="tokenizer corpus seed (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="parse config and tokenizer with vLLM/transformers")
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    manifest = generate(out, args.seed)
    sizes = manifest["checkpoint_bytes"]
    print(f"make_full_shape_model: wrote {out}: checkpoint {sizes['total'] / 1e9:.2f} GB "
          f"(language {sizes['language'] / 1e9:.2f}, vision {sizes['vision'] / 1e9:.2f}, MTP {sizes['mtp'] / 1e9:.2f})",
          file=sys.stderr)
    if args.check:
        check(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
