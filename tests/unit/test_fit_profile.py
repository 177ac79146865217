"""Profile + GPUs -> estimate, the kv-fit check hook, and the `fit` / `calibrate` commands."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.commands.gpus import Runtime
from launcher.errors import HardwareError
from launcher.fit.estimate import GIB, FitInput, estimate
from launcher.fit.fit_profile import GpuSpec, auto_max_model_len, fit_profile, kv_fit_check
from launcher.hardware.catalog import lookup
from launcher.hardware.inventory import load_inventory, parse_inventory
from launcher.preflight.checks import evaluate
from launcher.profile.load import resolve

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"
# Raw NVML readings of a 2 x H200 machine (tests/fixtures/README.md).
H200_CAPTURE = Path(__file__).resolve().parent.parent / "fixtures" / "nvml" / "h200x2-raw.json"

BASE = """
hardware: {gpu_count: 2, min_memory_gib: 23.5}
model: {name: havenoammo/Qwen3.6-27B-INT8-MTP, language_model_only: true}
parallel: {tensor_parallel_size: 2}
engine: {gpu_memory_utilization: 0.95, max_model_len: 262144, max_num_seqs: 256}
kv_cache: {dtype: fp8}
speculative: {method: mtp, num_speculative_tokens: 2}
"""


@pytest.fixture
def profile_file(write_profile):
    return write_profile("fit-test", BASE)


@pytest.fixture(autouse=True)
def _no_hf_cache(monkeypatch, tmp_path):
    # The shipped facts, not whatever the developer's HF cache holds.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))


def _profile(path: Path, *sets: str):
    return resolve(str(path), sets=sets).profile


# docs/memory-model.md#worked-numbers row 2 (2 x 3090, TP2, u .95, fp8, LMO, k=2, N=256).
ROW2 = FitInput(total_memory_bytes=lookup("RTX 3090").cuda_total_bytes, compute_capability=(8, 6),
                gpu_name="NVIDIA GeForce RTX 3090", nvml_total_memory_bytes=lookup("RTX 3090").memory_total_bytes,
                gpu_memory_utilization=0.95, tensor_parallel_size=2, kv_cache_dtype="fp8", max_model_len=262144,
                max_num_seqs=256, language_model_only=True, num_speculative_tokens=2,
                total_memory_uncertainty_bytes=lookup("RTX 3090").cuda_total_uncertainty_bytes)


def test_profile_maps_onto_the_estimator(profile_file):
    result = fit_profile(_profile(profile_file), "RTX 3090")
    direct = estimate(ROW2)
    assert result.inputs == direct.inputs
    assert result.to_json() == direct.to_json()
    assert (result.block_size_tokens, result.blocks_per_request, result.kv_verdict) == (1600, 176, "does-not-fit")


def test_speculation_off_means_no_mtp(profile_file):
    off = fit_profile(_profile(profile_file, "speculative.enabled=false"), "RTX 3090")
    assert off.inputs.num_speculative_tokens == 0 and off.group_size == 16


def test_inventory_with_reserved_memory(profile_file):
    inv = load_inventory(FIXTURES / "rtx3090x2-desktop.json")
    result = fit_profile(_profile(profile_file), inv, environ={})
    gpu0 = inv.gpus[0]
    # CUDA's total is NVML's minus the driver reservation; the desktop GPU's free memory decides start-up.
    assert result.inputs.total_memory_bytes == gpu0.memory_total_bytes - gpu0.memory_reserved_bytes
    assert result.startup.free_memory_bytes == gpu0.memory_free_bytes
    assert result.startup.verdict == "marginal"  # Xorg + gnome-shell: vLLM starts only if little exists before its snapshot


def test_mixed_gpus_the_smallest_decides(profile_file):
    inv = load_inventory(FIXTURES / "rtx4090-rtx3090-mixed.json")
    result = fit_profile(_profile(profile_file), inv, environ={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert result.inputs.gpu_name == "NVIDIA GeForce RTX 4090"


def test_visibility_picks_the_gpu(write_profile):
    path = write_profile("one", BASE.replace("tensor_parallel_size: 2", "tensor_parallel_size: 1").replace(
        "gpu_count: 2", "gpu_count: 1") + "env: {CUDA_VISIBLE_DEVICES: '1', CUDA_DEVICE_ORDER: PCI_BUS_ID}\n")
    inv = load_inventory(FIXTURES / "rtx4090-rtx3090-mixed.json")
    assert fit_profile(_profile(path), inv, environ={}).inputs.gpu_name == inv.gpus[1].name


def test_too_few_visible_gpus(profile_file):
    inv = load_inventory(FIXTURES / "rtx3090x2-idle.json")
    with pytest.raises(HardwareError, match="needs 2 readable GPUs"):
        fit_profile(_profile(profile_file), inv, environ={"CUDA_VISIBLE_DEVICES": "0"})


def test_real_h200_capture(profile_file):
    capture = json.loads(H200_CAPTURE.read_text())
    inv = parse_inventory({
        "driver_version": capture["driver"],
        "cuda_driver_version": capture["cuda_driver_version"],
        "gpus": [{"index": g["index"], "uuid": g["uuid"], "name": g["name"], "memory_total_bytes": g["memory_total"],
                  "memory_free_bytes": g["memory_free"], "compute_capability": g["cc"]} for g in capture["gpus"]],
    })
    result = fit_profile(_profile(profile_file), inv, environ={})
    assert result.inputs.total_memory_bytes == capture["gpus"][0]["memory_free"]  # 139.8 GiB, the table's
    assert result.flashinfer_gdn_prefill and result.kernel_block_alignment == 64  # SM90
    assert result.kv_verdict == "fits"


def test_auto_max_model_len(write_profile):
    path = write_profile("auto", BASE.replace("max_model_len: 262144", "max_model_len: auto").replace(
        "language_model_only: true", "language_model_only: false"))
    profile = _profile(path)
    result = fit_profile(profile, "RTX 3090")
    nominal = auto_max_model_len(profile, "RTX 3090", safe=False)
    safe = auto_max_model_len(profile, "RTX 3090")
    assert result.inputs.max_model_len == nominal and result.kv_verdict != "does-not-fit"
    assert safe < nominal < 262144
    assert safe % result.block_size_tokens == 0 and nominal % result.block_size_tokens == 0


def test_auto_with_no_room_is_a_hardware_error(write_profile):
    path = write_profile("tiny", BASE.replace("gpu_memory_utilization: 0.95", "gpu_memory_utilization: 0.7"))
    with pytest.raises(HardwareError, match="no context length fits"):
        auto_max_model_len(_profile(path), "RTX 3090")


def test_local_checkpoint_weights(write_profile, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"vision_config": {}, "text_config": {"mtp_num_hidden_layers": 1}}))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 31_650_000_000}, "weight_map": {"mtp.fc.weight": "b.safetensors",
                                                                     "model.visual.x": "a.safetensors"}}))
    path = write_profile("local", BASE.replace(
        "{name: havenoammo/Qwen3.6-27B-INT8-MTP,", f"{{name: '{ckpt}', facts: havenoammo/Qwen3.6-27B-INT8-MTP,"))
    result = fit_profile(_profile(path), "RTX 3090")
    assert result.inputs.weights.from_local_index
    assert result.weights.uncertainty_bytes == int(0.10 * GIB)


@pytest.mark.parametrize(
    "sets, status",
    [(("engine.max_model_len=131072",), "pass"), (("engine.max_model_len=163200",), "warn"), ((), "fail")],
)
def test_kv_fit_check(profile_file, sets, status):
    inv = load_inventory(FIXTURES / "rtx3090x2-idle.json")
    result = kv_fit_check(_profile(profile_file, *sets), inv.gpus)
    assert result.id == "kv-fit" and result.status == status
    assert result.data["block_size_tokens"] in (800, 1600)
    assert "max_model_len_fit" in result.data
    if status != "pass":
        assert "--set engine.max_model_len=" in result.fix


def test_kv_fit_check_plugs_into_evaluate(profile_file):
    inv = load_inventory(FIXTURES / "rtx3090x2-idle.json")
    report = evaluate(_profile(profile_file, "kv_cache.dtype=auto"), inv, {}, kv_fit=kv_fit_check)
    kv = report.result("kv-fit")
    assert kv is not None and kv.status == "fail"


# --- commands -------------------------------------------------------------------------------------


def run(*args, obj=None):
    return CliRunner().invoke(cli, list(args), obj=obj)


def test_fit_command_json(profile_file):
    out = run("fit", "--profile", str(profile_file), "--gpu", "RTX 3090", "--json")
    assert out.exit_code == 3, out.output  # the card's 262144 tokens do not fit a 24 GB budget (measured)
    data = json.loads(out.stdout)
    for key in ("block_size_tokens", "bytes_per_block", "bytes_per_request", "available_bytes"):
        assert key in data["kv_cache"]
    assert data["max_model_len_fit"] < 262144 and data["concurrency_at_max_len"] < 1
    assert data["suggestions"]["max_model_len"] < data["max_model_len_fit"]


def test_fit_command_table_and_exit_code(profile_file):
    ok = run("fit", "--profile", str(profile_file), "--gpu", "3090", "--set", "engine.max_model_len=131072")
    assert ok.exit_code == 0 and "kv_available" in ok.output
    bad = run("fit", "--profile", str(profile_file), "--gpu", "RTX 3090", "--set", "kv_cache.dtype=auto")
    assert bad.exit_code == 3 and "would fit with margin: --set engine.max_model_len=" in bad.output


def test_fit_command_inventory_and_probe(profile_file):
    out = run("fit", "--profile", str(profile_file), "--inventory", str(FIXTURES / "a100-80gbx4.json"))
    assert out.exit_code == 0 and "A100" in out.output
    inv = load_inventory(FIXTURES / "rtx3090x2-idle.json")
    probed = run("fit", "--profile", str(profile_file), "--set", "engine.max_model_len=131072", obj=Runtime(probe=lambda: inv))
    assert probed.exit_code == 0 and "RTX 3090" in probed.output


def test_fit_command_usage_errors(profile_file):
    assert run("fit", "--profile", str(profile_file), "--gpu", "RTX 3090", "--count", "1").exit_code != 0
    assert run("fit", "--profile", str(profile_file), "--count", "2").exit_code == 2
    unknown = run("fit", "--profile", str(profile_file), "--gpu", "RTX 3080")
    assert unknown.exit_code != 0 and "did you mean" in str(unknown.exception)


def test_calibrate_command(profile_file, tmp_path):
    log = Path(__file__).resolve().parent.parent / "fixtures" / "logs" / "vllm-0.33-dual-3090-mtp-handwritten.log"
    out = run("calibrate", str(log), "--profile", str(profile_file), "--gpu", "RTX 3090")
    assert out.exit_code == 0, out.output
    assert "attention block size" in out.output and "--kv-cache-memory=5035784192" in out.output
    js = run("calibrate", str(log), "--profile", str(profile_file), "--gpu", "RTX 3090", "--json")
    rows = {r["quantity"]: r for r in json.loads(js.stdout)["rows"]}
    assert rows["attention block size"]["ok"] is True
    assert rows["CUDA total"]["actual"] == 23.69


def test_calibrate_rejects_a_log_without_memory_lines(profile_file, tmp_path):
    log = tmp_path / "empty.log"
    log.write_text("nothing here\n")
    out = run("calibrate", str(log), "--profile", str(profile_file), "--gpu", "RTX 3090")
    assert out.exit_code != 0 and "no vLLM memory lines" in str(out.exception)


def test_gpu_spec_from_table_assumes_idle():
    spec = GpuSpec.from_model(lookup("H200"))
    assert spec.free_bytes is None and spec.cuda_total_bytes == 150_109_880_320
    assert dataclasses.replace(spec, free_bytes=1).free_bytes == 1
