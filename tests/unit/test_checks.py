"""Preflight verdicts: one named scenario per inventory (real device captures and machines users have)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pytest

from launcher.errors import HardwareError
from launcher.hardware.inventory import Gpu, GpuError, Inventory, load_inventory
from launcher.output.validate import command as render  # the checked command, as every output gets it
from launcher.preflight.checks import CheckResult, Report, attention_route, evaluate
from launcher.preflight.choice import candidates, choose_auto, grouping, run_preflight
from launcher.preflight.run import require_runnable
from launcher.profile.explain import explain_rows
from launcher.profile.load import resolve

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"
SHIPPED = ("dual-3090", "dual-3090-full", "tp4", "tp8")
NO_P2P_LAYER = {"env": {"NCCL_P2P_DISABLE": "1"}, "parallel": {"disable_custom_all_reduce": True}}


def inventory(name: str) -> Inventory:
    path = FIXTURES / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path.name} not captured yet (device run)")
    return load_inventory(path)


def check(inv: Inventory, profile: str = "dual-3090", sets: Sequence[str] = (), env: Optional[Mapping[str, str]] = None, kv_fit=None) -> Report:
    resolved = resolve(profile, sets=sets, environ={})
    return evaluate(resolved.profile, inv, inv.environment if env is None else env, kv_fit=kv_fit)


def statuses(report: Report) -> dict[str, str]:
    return {r.id: r.status for r in report.results}


def only_non_pass(report: Report) -> dict[str, str]:
    return {r.id: r.status for r in report.results if r.status != "pass"}


# ------------------------------------------------------------------ named scenarios


def test_rtx3090x2_idle_runs_the_card_command_with_p2p_flags_added() -> None:
    report = check(inventory("rtx3090x2-idle"))
    # vLLM 0.33.0's own rule (v1/worker/utils.py::request_memory): ceil(0.95 x CUDA total 23.69 GiB) = 22.50 GiB
    # against 23.69 GiB free minus at most 1.15 GiB before the snapshot: the card's command is not refused.
    assert only_non_pass(report) == {"p2p": "warn", "kv-fit": "skip"}
    assert report.ok and report.status == "warn"
    mem = report.result("memory-free")
    assert mem.status == "pass" and "0.03 GiB above the budget with the largest before-snapshot allowance" in mem.message
    p2p = report.result("p2p")
    assert p2p.message.startswith("no GPU peer-to-peer between GPU 0-1 (chipset not supported): NCCL can hang")
    assert p2p.fix and p2p.gpus == (0, 1)
    (adj,) = report.adjustments
    assert adj.reason == "no GPU peer-to-peer between GPU 0-1 (chipset not supported)"
    assert adj.data == NO_P2P_LAYER
    assert report.result("attention-kv").message == "FLASHINFER serves the fp8_e4m3 KV cache on compute capability 8.6"
    assert report.result("visible-devices").message == "CUDA_VISIBLE_DEVICES=0,1 (from the profile); cuda:0 = GPU 0, cuda:1 = GPU 1"


def test_no_p2p_adjustment_reaches_the_rendered_command_and_explain() -> None:
    resolved, report = run_preflight("dual-3090", inventory_source=FIXTURES / "rtx3090x2-idle.json", environ={}, kv_fit=no_fit)
    rendered = render(resolved.profile)
    assert rendered.env["NCCL_P2P_DISABLE"] == "1" and rendered.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "--disable-custom-all-reduce" in rendered.argv
    rows = {r.key: r for r in explain_rows(resolved)}
    reason = "check: no GPU peer-to-peer between GPU 0-1 (chipset not supported)"
    assert rows["parallel.disable_custom_all_reduce"].source == reason
    assert rows["env.NCCL_P2P_DISABLE"].source == reason
    assert rows["parallel.tensor_parallel_size"].source.startswith("profile ")  # untouched keys keep their origin


def test_p2p_capable_gpus_get_no_adjustment() -> None:
    resolved, report = run_preflight("tp4", inventory_source=FIXTURES / "a100-80gbx4.json", environ={}, kv_fit=no_fit)
    assert report.adjustments == ()
    assert "--disable-custom-all-reduce" not in render(resolved.profile).argv
    assert report.result("p2p").message == "peer-to-peer works: GPU 0-1 NVLink, GPU 0-2 NVLink, GPU 0-3 NVLink, GPU 1-2 NVLink, GPU 1-3 NVLink, GPU 2-3 NVLink"


def test_rtx3090x2_desktop_fails_free_memory_naming_the_processes() -> None:
    report = check(inventory("rtx3090x2-desktop"))
    # 23.15 GiB free: with 0.35 GiB before the snapshot vLLM starts, with 1.15 GiB it raises: a warning, naming the holders
    assert only_non_pass(report) == {"memory-free": "warn", "p2p": "warn", "kv-fit": "skip"}
    mem = report.result("memory-free")
    assert "GPU 0: free 23.15 GiB" in mem.message and "-0.50 to 0.30 GiB to spare" in mem.message
    assert mem.message.endswith("held by pid 1342 Xorg (0.40 GiB), pid 2087 gnome-shell (0.13 GiB)")
    assert mem.fix == (
        "stop pid 1342 Xorg (0.40 GiB), pid 2087 gnome-shell (0.13 GiB) on GPU 0; or lower engine.gpu_memory_utilization to 0.92 "
        "(--set engine.gpu_memory_utilization=0.92)"
    )
    assert mem.gpus == (0,) and mem.data["max_gpu_memory_utilization"] == 0.92 and mem.sets == ("engine.gpu_memory_utilization=0.92",)
    # a little more held memory and even the smallest allowance leaves too little: vLLM surely raises
    desktop = inventory("rtx3090x2-desktop")
    g0 = desktop.gpus[0]
    busy = dataclasses.replace(desktop, gpus=(g0.model_copy(update={"memory_free_bytes": g0.memory_free_bytes - (1 << 29)}), *desktop.gpus[1:]))
    failing = check(busy)
    assert failing.result("memory-free").status == "fail"
    with pytest.raises(HardwareError, match=r"^profile dual-3090 cannot run here: memory-free: vLLM refuses") as exc:
        require_runnable(failing, "dual-3090")
    assert exc.value.exit_code == 3


def test_the_suggested_utilization_really_passes() -> None:
    report = check(inventory("rtx3090x2-desktop"), sets=["engine.gpu_memory_utilization=0.92"])
    assert report.result("memory-free").status == "pass"


def test_rtx4090_with_rtx3090_is_a_warning_not_a_refusal() -> None:
    """Ampere with Ada runs in one TP group (vllm#14452): the slower card sets the pace."""
    report = check(inventory("rtx4090-rtx3090-mixed"))
    assert only_non_pass(report) == {"visible-devices": "warn", "tp-homogeneous": "warn", "p2p": "warn", "kv-fit": "skip"}
    mixed = report.result("tp-homogeneous")
    assert mixed.message.startswith(
        "tensor-parallel group mixes GPU models: GPU 0 NVIDIA GeForce RTX 3090 (24.00 GiB, 8.6), GPU 1 NVIDIA GeForce RTX 4090 (23.99 GiB, 8.9)"
    )
    assert "Ampere and Ada GPUs run in one tensor-parallel group (vllm#14452)" in mixed.message
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in mixed.fix
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in report.result("visible-devices").message


def test_t4_pair_is_refused_for_compute_capability() -> None:
    report = check(inventory("t4x2"))
    cc = report.result("compute-capability")
    assert cc.status == "fail"
    assert cc.message == ("needs compute capability 8.0 or newer (bf16 activations, FlashInfer, vLLM 0.33.0's CUDA 13.0 build); "
                          "GPU 0 (Tesla T4) is 7.5, GPU 1 (Tesla T4) is 7.5")
    assert report.result("attention-kv").message == (
        "FLASHINFER cannot serve the fp8_e4m3 KV cache on compute capability 7.5: needs compute capability 8.0-12.1, not 7.5")
    assert report.result("memory-total").message == "needs 23.5 GiB per GPU; GPU 0 (Tesla T4) has 14.75 GiB, GPU 1 (Tesla T4) has 14.75 GiB"
    assert report.result("p2p").status == "pass"


def test_a100x4_runs_tp4_with_everything_passing() -> None:
    report = check(inventory("a100-80gbx4"), "tp4")
    assert only_non_pass(report) == {"kv-fit": "skip"}
    assert report.result("attention-kv").message == (
        "vLLM 0.33.0 picks FLASHINFER for the fp8_e4m3 KV cache on compute capability 8.0 "
        "(FLASH_ATTN: FLASH_ATTN stores fp8 only with FA3 on 9.0 or FA4 on 10.x, never e5m2)")
    assert "FlashInfer workspace" not in report.result("memory-free").message  # only shown for failing/tight GPUs
    assert report.result("tp-homogeneous").message == "tensor-parallel group of identical GPUs: 4 x NVIDIA A100-SXM4-80GB"


def test_h100x8_runs_tp8_and_tp4_uses_the_first_four() -> None:
    assert only_non_pass(check(inventory("h100x8"), "tp8")) == {"kv-fit": "skip"}
    report = check(inventory("h100x8"), "tp4")
    assert report.result("gpu-count").message == (
        "needs 4 GPUs (tensor 4 x pipeline 1 x data 1); 8 visible (GPU 0, GPU 1, GPU 2, GPU 3, GPU 4, GPU 5, GPU 6, GPU 7); vLLM uses the first 4")
    assert [d.gpu_index for d in report.devices] == [0, 1, 2, 3]
    assert report.result("attention-kv").message == "vLLM 0.33.0 picks FLASH_ATTN for the fp8_e4m3 KV cache on compute capability 9.0"


def test_driver_too_old_is_refused_with_the_version_needed() -> None:
    report = check(inventory("driver-too-old"))
    drv = report.result("driver")
    assert drv.status == "fail"
    assert drv.message == ("driver 570.172.08 is older than 580; the driver supports CUDA 12.8, not 13.0; "
                           "vLLM 0.33.0's CUDA 13.0 build needs driver 580 or newer")
    assert drv.fix.startswith("install NVIDIA driver 580 or newer")


def test_mig_enabled_is_refused_with_an_explanation() -> None:
    report = check(inventory("mig-enabled"))
    mig = report.result("mig")
    assert mig.status == "fail" and mig.gpus == (0,)
    assert mig.message.startswith("MIG is enabled on GPU 0: a CUDA process gets one MIG slice, not the whole GPU")
    assert "nvidia-smi -i <index> -mig 0" in mig.fix


def test_mig_instance_selected_by_uuid_is_refused() -> None:
    inv = inventory("mig-enabled")
    mig_uuid = inv.gpus[0].mig_devices[0].uuid
    report = check(inv, sets=[f"env.CUDA_VISIBLE_DEVICES={mig_uuid},{inv.gpus[1].uuid}"])
    assert report.result("mig").status == "fail"
    assert [(d.gpu_index, d.mig_uuid) for d in report.devices] == [(0, mig_uuid), (1, None)]


def test_gpu_hidden_by_cuda_visible_devices_fails_the_count() -> None:
    inv = inventory("a100-80gbx4-one-hidden")
    report = check(inv, "tp4")
    count = report.result("gpu-count")
    assert count.status == "fail"
    assert count.message == ("needs 4 GPUs (tensor 4 x pipeline 1 x data 1) but only 3 visible (GPU 0, GPU 1, GPU 3); "
                             "CUDA_VISIBLE_DEVICES=0,1,3 (from the environment) hides the rest")
    assert count.fix == "let vLLM see 4 GPUs: e.g. --set env.CUDA_VISIBLE_DEVICES=0,1,2,3 (the machine has 4)"
    assert "CUDA_VISIBLE_DEVICES=0,1,3 hides GPU 2" in report.result("visible-devices").message
    # The profile's own env wins over the environment, as when `serve` execs vLLM.
    assert check(inv, "tp4", sets=["env.CUDA_VISIBLE_DEVICES=0,1,2,3"]).ok


def test_h200x2_device_capture() -> None:
    inv = inventory("h200x2")
    for name in ("dual-3090", "dual-3090-full"):
        report = check(inv, name, env={})
        assert report.ok, [r for r in report.results if r.status == "fail"]
        assert report.result("p2p").status == "pass" and report.adjustments == ()
        assert report.result("attention-kv").message == "FLASHINFER serves the fp8_e4m3 KV cache on compute capability 9.0"
    for name, need in (("tp4", 4), ("tp8", 8)):
        count = check(inv, name, env={}).result("gpu-count")
        assert count.status == "fail" and count.message.startswith(f"needs {need} GPUs") and "the machine has 2" in count.message


def test_h200x1_device_capture() -> None:
    inv = inventory("h200x1")
    report = check(inv, "dual-3090", env={})
    # The profile's CUDA_VISIBLE_DEVICES=0,1 names a GPU this machine lacks: CUDA stops at it.
    assert report.result("visible-devices").status == "warn"
    assert "'1' is past the last GPU (only 1 visible)" in report.result("visible-devices").message
    assert report.result("gpu-count").status == "fail"
    assert report.result("gpu-count").message.startswith("needs 2 GPUs (tensor 2 x pipeline 1 x data 1); the machine has 1, 1 visible (GPU 0)")
    assert report.result("p2p").message == "only one GPU of the tensor-parallel group of 2 is visible; nothing to compare"
    assert report.result("memory-free").status == "pass" and report.result("attention-kv").status == "pass"
    for name in SHIPPED:
        assert not check(inv, name, env={}).ok


# ------------------------------------------------------------------ single rules


@pytest.mark.parametrize(
    ("cc", "backend", "kv", "ok", "chosen"),
    [
        ((8, 6), None, "fp8_e4m3", True, "FLASHINFER"),
        ((8, 6), "FLASH_ATTN", "fp8_e4m3", False, "FLASH_ATTN"),
        ((8, 6), "TRITON_ATTN", "fp8_e4m3", False, "TRITON_ATTN"),
        ((8, 0), "FLASH_ATTN", "fp8", False, "FLASH_ATTN"),
        ((8, 9), "TRITON_ATTN", "fp8_e4m3", True, "TRITON_ATTN"),
        ((8, 9), "FLASH_ATTN", "fp8_e4m3", False, "FLASH_ATTN"),
        ((9, 0), None, "fp8_e4m3", True, "FLASH_ATTN"),
        ((9, 0), None, "fp8_e5m2", True, "FLASHINFER"),
        ((9, 0), "FLASH_ATTN", "fp8_e5m2", False, "FLASH_ATTN"),
        ((10, 0), None, "fp8_e4m3", True, "FLASHINFER"),
        ((12, 0), "FLASH_ATTN", "fp8_e4m3", False, "FLASH_ATTN"),
        ((8, 6), None, None, True, "FLASH_ATTN"),
        ((8, 6), "FLASH_ATTN", "auto", True, "FLASH_ATTN"),
        ((7, 5), "FLASHINFER", "fp8_e4m3", False, "FLASHINFER"),
    ],
)
def test_attention_backend_and_kv_dtype_table(cc, backend, kv, ok, chosen) -> None:
    route = attention_route(cc, backend, kv)
    assert (route.ok, route.backend) == (ok, chosen)
    assert route.ok or route.fix


def test_forced_flash_attn_with_fp8_on_ampere_fails_with_the_flashinfer_fix() -> None:
    report = check(inventory("rtx3090x2-idle"), sets=["engine.attention_backend=FLASH_ATTN"])
    att = report.result("attention-kv")
    assert att.status == "fail"
    assert att.message == ("FLASH_ATTN cannot serve the fp8_e4m3 KV cache on compute capability 8.6: "
                           "FLASH_ATTN stores fp8 only with FA3 on 9.0 or FA4 on 10.x, never e5m2")
    assert att.fix.startswith("--set engine.attention_backend=FLASHINFER")
    assert att.sets == ("engine.attention_backend=FLASHINFER",)
    triton = check(inventory("rtx3090x2-idle"), sets=["engine.attention_backend=TRITON_ATTN"]).result("attention-kv")
    assert triton.status == "fail" and "native FP8 (fp8e4nv) requires SM89+" in triton.message


def test_flashinfer_workspace_is_runtime_headroom_only_when_flashinfer_serves() -> None:
    inv = inventory("h100x8")
    bare = check(inv, "tp4").result("memory-free")
    forced = check(inv, "tp4", sets=["engine.attention_backend=FLASHINFER"]).result("memory-free")
    assert bare.status == forced.status == "pass"  # the workspace never decides the start-up verdict
    # a GPU almost full above the budget: the start-up check passes (with the smallest allowance) only as a warning
    tight = check(inv, "tp4", sets=["engine.gpu_memory_utilization=0.985", "engine.attention_backend=FLASHINFER"]).result("memory-free")
    assert tight.status == "warn" and "FlashInfer workspace" in tight.message


def test_unset_utilization_uses_vllms_default() -> None:
    inv = inventory("rtx3090x2-idle")
    report = check(inv, sets=["engine.gpu_memory_utilization=none"])
    assert report.result("memory-free").message.startswith("gpu_memory_utilization 0.92 (vLLM's default)")


def test_fixed_kv_cache_bytes_skip_the_utilization_check() -> None:
    report = check(inventory("rtx3090x2-desktop"), sets=["kv_cache.memory_bytes=4000000000"])
    assert report.result("memory-free").status == "skip"


def test_unknown_p2p_warns_without_adjusting() -> None:
    inv = inventory("rtx3090x2-idle")
    report = check(Inventory(inv.driver_version, inv.cuda_driver_version, inv.gpus), env={})
    p2p = report.result("p2p")
    assert p2p.status == "warn" and p2p.message == "GPU peer-to-peer unknown for GPU 0-1 (no link entry in the inventory)"
    assert report.adjustments == ()


def test_profile_that_already_disables_p2p_needs_no_adjustment() -> None:
    report = check(inventory("rtx3090x2-idle"), sets=["env.NCCL_P2P_DISABLE=1", "parallel.disable_custom_all_reduce=true"])
    assert report.result("p2p").status == "pass" and report.adjustments == ()


def test_unreadable_gpu_in_use_fails() -> None:
    inv = inventory("rtx3090x2-idle")
    broken = Inventory(inv.driver_version, inv.cuda_driver_version, inv.gpus[:1], gpu_errors=(GpuError(index=1, error="GPU is lost"),))
    report = check(broken, env={})
    assert report.result("gpu-readable").status == "fail"
    assert report.result("gpu-readable").message == "NVML could not read a GPU vLLM would use: GPU 1 (unreadable): GPU is lost"


def test_no_visible_gpu_skips_the_per_gpu_checks() -> None:
    report = check(inventory("rtx3090x2-idle"), sets=["env.CUDA_VISIBLE_DEVICES="])
    assert report.result("gpu-count").status == "fail"
    assert {report.result(i).status for i in ("memory-free", "compute-capability", "attention-kv", "p2p")} == {"skip"}


def test_every_non_pass_result_says_how_to_fix_it() -> None:
    for path in sorted(FIXTURES.glob("*.json")):
        inv = load_inventory(path)
        for name in SHIPPED:
            for r in check(inv, name).results:
                if r.status in ("warn", "fail"):
                    assert r.fix, (path.stem, name, r)


# ------------------------------------------------------------------ the KV fit hook, auto and grouping


def fake_fit(max_len_fit: int):
    """A stand-in for launcher.fit.estimate's check: fails when max_model_len exceeds `max_len_fit`."""

    def kv_fit(profile, gpus: Sequence[Gpu]) -> CheckResult:
        assert gpus and all(isinstance(g, Gpu) for g in gpus)
        want = profile.engine.max_model_len
        if isinstance(want, int) and want > max_len_fit:
            return CheckResult("kv-fit", "fail", f"{want} tokens do not fit", fix=f"--set engine.max_model_len={max_len_fit}",
                               data={"max_model_len_fit": max_len_fit})
        return CheckResult("kv-fit", "pass", "fits")

    return kv_fit


def test_kv_fit_hook_result_is_part_of_the_report() -> None:
    report = check(inventory("a100-80gbx4"), "tp4", kv_fit=fake_fit(100_000))
    assert report.result("kv-fit").status == "fail" and not report.ok


def test_grouping_puts_context_only_failures_in_smaller_context() -> None:
    found = [c for c in candidates(inventory("rtx3090x2-idle"), environ={}, kv_fit=fake_fit(210_000)) if c.name in SHIPPED]
    groups = grouping(found)
    assert [r["name"] for r in groups["runnable"]] == ["dual-3090-full"]  # 200000 fits
    assert groups["smaller-context"] == [
        {"name": "dual-3090", "path": str(found[0].path), "status": "fail", "warnings": ["p2p"],
         "max_model_len": 210000, "how": "--set engine.max_model_len=210000"}
    ]
    assert {r["name"]: r["failed"] for r in groups["not-runnable"]} == {"tp4": ["gpu-count", "kv-fit"], "tp8": ["gpu-count", "kv-fit"]}
    assert groups["not-runnable"][0]["why"].startswith("gpu-count: needs 4 GPUs")


def test_multi_node_profile_is_checked_as_one_node_but_never_auto_chosen(write_profile) -> None:
    inv = inventory("a100-80gbx4")
    report = check(inv, "tp4-pp2-2node")
    assert report.result("gpu-count").message.startswith("needs 4 GPUs (tensor 4 x pipeline 2 x data 1 over 2 nodes: this node's share)")
    assert report.ok
    found = {c.name: c for c in candidates(inv, environ={})}
    assert found["tp4-pp2-2node"].group == "runnable" and found["tp4-pp2-2node"].nodes == 2
    assert choose_auto(inv, environ={}).resolved.name != "tp4-pp2-2node"


@pytest.mark.parametrize(
    ("fixture", "chosen"),
    # 8 x H100: data parallel 2 x TP4 beats tp8 (TP above 4 replicates the KV heads) and tp4 (half the GPUs).
    [("h100x8", "tp4x2"), ("a100-80gbx4", "tp4"), ("rtx3090x2-idle", "dual-3090"), ("a100-80gbx4-one-hidden", "dual-3090")],
)
def test_auto_picks_the_best_runnable_profile(fixture: str, chosen: str) -> None:
    choice = choose_auto(inventory(fixture), environ={})
    assert choice.resolved.name == chosen and choice.report.ok


def test_auto_with_nothing_runnable_says_why_for_each() -> None:
    with pytest.raises(HardwareError) as exc:
        choose_auto(inventory("t4x2"), environ={})
    text = str(exc.value)
    assert text.startswith("--profile auto: no profile can run on 2 x Tesla T4: no override makes any profile run")
    assert "\n  dual-3090: compute-capability: needs compute capability 8.0" in text
    assert "tp8: gpu-count: needs 8 GPUs" in text and exc.value.exit_code == 3


def no_fit(profile, gpus):
    return None


def test_run_preflight_auto_returns_the_adjusted_choice() -> None:
    resolved, report = run_preflight("auto", inventory_source=load_inventory(FIXTURES / "rtx3090x2-idle.json"), environ={}, kv_fit=no_fit)
    assert resolved.name == "dual-3090" and resolved.profile.parallel.disable_custom_all_reduce is True
    assert report.result("kv-fit").status == "skip"


def test_run_preflight_uses_the_memory_fit_when_installed() -> None:
    pytest.importorskip("launcher.fit.fit_profile")
    _, report = run_preflight("dual-3090", inventory_source=FIXTURES / "rtx3090x2-idle.json", environ={})
    fit = report.result("kv-fit")
    # Calibrated on the real 27B shape (docs/memory-model.md#measured-on-h200-full-27b-shape): 2 x 3090, TP2, u .95,
    # L 262144, MTP k=2 does not fit (measured on a 24 GB budget: 4.41 GiB of KV against 4.49 needed).
    assert fit.status == "fail" and fit.data["max_model_len"] == 262144
    assert fit.fix and "--set engine.max_model_len=" in fit.fix
