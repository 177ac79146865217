"""The decode path as data (launcher/engine/decode_path.py, the "decode_path" tables of launcher/engines/behaviour-*.json).

Expected values are worked by hand from each version's source (functions named in the tables); the committed GPU
starts' logs are checked in tests/unit/test_decode_path_logs.py.
"""

from __future__ import annotations

import json

import pytest

from launcher.engine.behaviour import known_versions
from launcher.engine.decode_path import backend_support, capture_sizes, decode_path, full_graph_backends
from launcher.fit.fit_profile import decode_path_for
from launcher.profile.load import resolve

H100 = (9, 0)
RTX3090 = (8, 6)


def test_every_version_has_a_sourced_table() -> None:
    for v in known_versions():
        from launcher.engine.behaviour import behaviour

        t = behaviour(v).data["decode_path"]
        for name, spec in t["backends"].items():
            assert "::" in spec["source"] and spec["rules"], (v, name)
            assert spec["rules"][-1].keys().isdisjoint({"cc", "cc_major", "cc_below"}), "the last rule is the fallback"
        for key in ("model_runner", "linear_attention", "resolve", "capture_sizes", "graphs"):
            assert "::" in t[key]["source"], (v, key)


def test_flashinfer_on_hopper_downgrades_mtp_in_0_25_1() -> None:
    """0.25.1: FlashInferMetadataBuilder.get_cudagraph_support returns UNIFORM_SINGLE_TOKEN_DECODE on SM90, so
    resolve_cudagraph_mode_and_sizes drops FULL decode graphs with spec decode, with vLLM's own message."""
    p = decode_path("0.25.1", H100, "FLASHINFER", "fp8_e4m3", 2, 16, 4096)
    assert (p.mode, p.downgraded, p.full_graphs) == ("PIECEWISE", True, 0)
    assert p.reason == ("CUDAGraphMode.FULL_AND_PIECEWISE is not supported with spec-decode for attention backend "
                        "FlashInferBackend (support: AttentionCGSupport.UNIFORM_SINGLE_TOKEN_DECODE); setting cudagraph_mode=PIECEWISE")
    assert p.capture_sizes == (1, 2, 4, *range(8, 97, 8))  # max = min(16 x 3 x 2, 512) = 96, no rounding in PIECEWISE
    off = decode_path("0.25.1", H100, "FLASHINFER", "fp8_e4m3", 0, 16, 4096)
    assert (off.mode, off.downgraded) == ("FULL_AND_PIECEWISE", False)


def test_fa3_keeps_full_graphs_with_mtp_and_rounds_sizes_on_v1() -> None:
    p = decode_path("0.25.1", H100, "FLASH_ATTN", "fp8_e4m3", 2, 16, 4096)
    assert (p.mode, p.downgraded, p.support) == ("FULL_AND_PIECEWISE", False, "UNIFORM_BATCH")  # GDN bounds ALWAYS
    # adjust_cudagraph_sizes_for_spec_decode: multiples of 3 up to 96; FULL for 3 <= x <= 48
    assert p.capture_sizes == (3, 6, 9, 18, 24, 33, 42, 48, 57, 66, 72, 81, 90, 96)
    assert (p.piecewise_graphs, p.full_graphs) == (14, 8)
    assert p.line() == "decode path: FLASH_ATTN, FULL_AND_PIECEWISE, 22 graphs (largest 96)"


def test_0_33_v2_sizes_add_uniform_decode_sizes() -> None:
    p = decode_path("0.33.0", H100, "FLASH_ATTN", "fp8_e4m3", 2, 16, 4096)
    assert p.runner == "V2"
    assert p.capture_sizes == (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96)
    assert (p.piecewise_graphs, p.full_graphs) == (18, 9)
    assert p.line() == "decode path: FLASH_ATTN, FULL_AND_PIECEWISE, 27 graphs (largest 96)"


def test_rtx3090_flashinfer_per_version() -> None:
    """SM86: 0.25.1 and 0.32.0 have no TRT-LLM decode there (single-token only: MTP downgrades); 0.33.0 decodes with
    FlashInfer's FA2-native path (_use_fa2_native_decode), UNIFORM_BATCH, and keeps full graphs."""
    assert decode_path("0.25.1", RTX3090, "FLASHINFER", "fp8_e4m3", 2, 256, 2048).downgraded
    assert decode_path("0.32.0", RTX3090, "FLASHINFER", "fp8_e4m3", 2, 256, 2048).downgraded
    assert not decode_path("0.33.0", RTX3090, "FLASHINFER", "fp8_e4m3", 2, 256, 2048).downgraded
    assert full_graph_backends("0.25.1", RTX3090, "fp8_e4m3", 2) == []  # no fp8 KV route keeps full graphs: MTP off
    assert full_graph_backends("0.25.1", RTX3090, "fp8_e4m3", 0) == ["FLASHINFER"]
    assert full_graph_backends("0.33.0", RTX3090, "fp8_e4m3", 2) == ["FLASHINFER"]


def test_full_graph_backends_on_hopper() -> None:
    for v in known_versions():
        assert full_graph_backends(v, H100, "fp8_e4m3", 2)[0] == "FLASH_ATTN"
        assert "FLASHINFER" not in full_graph_backends(v, H100, "fp8_e4m3", 2)
    # with FlashInfer's XQA cubins, 0.32 and 0.33 take uniform spec-decode batches on SM90
    assert backend_support("0.33.0", H100, "FLASHINFER", trtllm_cubins=True)[0] == "UNIFORM_BATCH"
    assert backend_support("0.25.1", H100, "FLASHINFER", trtllm_cubins=True)[0] == "UNIFORM_SINGLE_TOKEN_DECODE"


def test_modes_eager_and_user_choice() -> None:
    eager = decode_path("0.33.0", H100, None, "fp8_e4m3", 2, 16, 4096, enforce_eager=True)
    assert (eager.mode, eager.graphs, eager.capture_sizes) == ("NONE", 0, ())
    assert "NONE" in eager.line()
    pw = decode_path("0.33.0", H100, "FLASH_ATTN", "fp8_e4m3", 2, 16, 4096, cudagraph_mode="PIECEWISE")
    assert (pw.mode, pw.downgraded, pw.full_graphs) == ("PIECEWISE", False, 0)
    full = decode_path("0.25.1", H100, "FLASHINFER", "fp8_e4m3", 0, 16, 4096, cudagraph_mode="FULL")
    assert full.mode == "FULL_AND_PIECEWISE" and "setting cudagraph_mode=FULL_AND_PIECEWISE" in full.reason
    with pytest.raises(ValueError):
        decode_path("0.33.0", H100, None, "auto", 0, 16, 4096, cudagraph_mode="SOMETIMES")


def test_capture_sizes_cap_at_batched_tokens_and_user_max() -> None:
    assert capture_sizes("0.25.1", H100, 0, 256, 100) == [1, 2, 4, *range(8, 97, 8), 100]
    assert capture_sizes("0.25.1", H100, 0, 256, 8192, max_capture_size=32) == [1, 2, 4, 8, 16, 24, 32]
    assert capture_sizes("0.33.0", (10, 0), 0, 1024, 16384)[-1] == 1024  # 1024 ceiling on data-centre Blackwell


def test_decode_path_json_round_trips() -> None:
    p = decode_path("0.25.1", H100, "FLASHINFER", "fp8_e4m3", 3, 8, 4096)
    data = json.loads(json.dumps(p.to_json()))
    assert data["mode"] == "PIECEWISE" and data["piecewise_graphs"] == 11 and data["line"] == p.line()


def test_profile_helper_reads_the_profile() -> None:
    prof = resolve("dual-3090", profiles_dirs=["profiles"], sets=["vllm.version=0.25.1"]).profile
    assert decode_path_for(prof, "RTX 3090").downgraded
    prof = resolve("dual-3090", profiles_dirs=["profiles"], sets=["engine.attention_backend=FLASH_ATTN"]).profile
    assert decode_path_for(prof, "H100 80GB HBM3").line().startswith("decode path: FLASH_ATTN, FULL_AND_PIECEWISE")
