"""`launcher gpus`, `launcher check` and `launcher profiles --inventory` as operators and scripts meet them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.commands.gpus import Runtime
from launcher.errors import HardwareError, LauncherError
from launcher.hardware.inventory import load_inventory
from launcher.output.compile_cache import CACHE_ENV

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"
IDLE = str(FIXTURES / "rtx3090x2-idle.json")
DESKTOP = str(FIXTURES / "rtx3090x2-desktop.json")


@pytest.fixture()
def busy_desktop(tmp_path: Path) -> str:
    """The desktop pair with 0.5 GiB more held on GPU 0: vLLM's start-up check surely fails there."""
    data = json.loads(Path(DESKTOP).read_text())
    data["gpus"][0]["memory_free_bytes"] -= 1 << 29
    path = tmp_path / "busy-desktop.json"
    path.write_text(json.dumps(data))
    return str(path)


class Ran:
    """A CliRunner result with the exit code `launcher.cli.main` would give (LauncherError -> its code)."""

    def __init__(self, result) -> None:
        self.output = result.output
        self.exception = result.exception
        self.exit_code = result.exception.exit_code if isinstance(result.exception, LauncherError) else result.exit_code


def run(*args: str, obj=None) -> Ran:
    return Ran(CliRunner().invoke(cli, list(args), obj=obj))


def launcher(*args: str, env=None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, env=full_env)


def test_check_runnable_profile_exits_0_and_shows_every_verdict() -> None:
    # 131072 tokens: the card's 262144 do not fit a 24 GB budget (measured: docs/memory-model.md)
    result = run("check", "--profile", "dual-3090", "--inventory", IDLE, "--set", "engine.max_model_len=131072")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("profile dual-3090 (") and "on 2 x NVIDIA GeForce RTX 3090, driver 580.95.05 (inventory " in lines[0]
    for check_id in ("visible-devices", "gpu-count", "gpu-readable", "mig", "compute-capability", "driver", "memory-total",
                     "memory-free", "attention-kv", "tp-homogeneous", "p2p", "kv-fit"):
        assert any(line.split()[1:2] == [check_id] for line in lines if line[:4] in ("PASS", "WARN", "FAIL", "SKIP")), check_id
    assert "WARN  p2p" in result.output
    assert "adjusted by the check: env.NCCL_P2P_DISABLE=1, parallel.disable_custom_all_reduce=true" in result.output
    assert lines[-1].startswith("result: runnable with ")


@pytest.mark.slow
def test_check_failure_exits_3_with_fix_lines(busy_desktop: str) -> None:
    p = launcher("check", "--profile", "dual-3090", "--inventory", busy_desktop)
    assert p.returncode == 3
    assert "FAIL  memory-free" in p.stdout and "Fix: stop pid 1342 Xorg (0.40 GiB), pid 2087 gnome-shell (0.13 GiB) on GPU 0" in p.stdout
    assert p.stdout.splitlines()[-1] == "result: NOT RUNNABLE: 2 checks failed (memory-free, kv-fit)"
    # the reasons are in the report above; the error line names the failed checks once (issue 30: not twice)
    assert p.stderr.startswith("launcher: error: profile dual-3090 cannot run here: memory-free, kv-fit failed")
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_check_json_carries_verdicts_adjustments_and_the_command() -> None:
    result = run("check", "--profile", "dual-3090", "--inventory", IDLE, "--json", "--set", "engine.max_model_len=131072")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["profile"] == "dual-3090" and data["runnable"] is True and data["status"] == "warn"
    by_id = {r["id"]: r for r in data["results"]}
    assert by_id["p2p"]["status"] == "warn" and by_id["p2p"]["fix"]
    assert by_id["gpu-count"] == {"id": "gpu-count", "status": "pass", "gpus": [0, 1],
                                  "message": "needs 2 GPUs (tensor 2 x pipeline 1 x data 1); 2 visible (GPU 0, GPU 1)"}
    assert data["adjustments"] == [{"reason": "no GPU peer-to-peer between GPU 0-1 (chipset not supported)",
                                    "set": {"env": {"NCCL_P2P_DISABLE": "1"}, "parallel": {"disable_custom_all_reduce": True}}}]
    env = data["command"]["env"]
    assert set(CACHE_ENV) <= set(env)  # the compile cache root
    assert {k: v for k, v in env.items() if k not in CACHE_ENV} == {"CUDA_VISIBLE_DEVICES": "0,1", "NCCL_P2P_DISABLE": "1"}
    assert "--disable-custom-all-reduce" in data["command"]["argv"]
    assert data["devices"] == [{"cuda_index": 0, "gpu_index": 0}, {"cuda_index": 1, "gpu_index": 1}]


@pytest.mark.slow
def test_check_json_on_failure_still_prints_json_then_exits_3() -> None:
    p = launcher("check", "--profile", "tp4", "--inventory", IDLE, "--json")
    assert p.returncode == 3
    data = json.loads(p.stdout)
    assert data["runnable"] is False and [r["id"] for r in data["results"] if r["status"] == "fail"] == ["gpu-count"]


def test_check_set_override_applies() -> None:
    result = run("check", "--profile", "dual-3090", "--inventory", IDLE, "--set", "engine.attention_backend=TRITON_ATTN")
    assert result.exit_code == 3
    assert ("FAIL  attention-kv       TRITON_ATTN cannot serve the fp8_e4m3 KV cache on compute capability 8.6: "
            "TRITON_ATTN raises on fp8 below 8.9: native FP8 (fp8e4nv) requires SM89+ (vllm#26431)") in result.output
    assert "Fix all at once (re-checked): --set engine.attention_backend=FLASHINFER" in result.output


def test_check_auto_names_its_choice() -> None:
    result = run("check", "--profile", "auto", "--inventory", str(FIXTURES / "a100-80gbx4.json"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("auto: chose tp4 (runnable, no warnings)\n  over dual-3090: ")
    data = json.loads(run("check", "--profile", "auto", "--inventory", str(FIXTURES / "a100-80gbx4.json"), "--json").output)
    assert data["auto"]["chosen"] == "tp4" and {"name": "dual-3090", "group": "runnable"} in data["auto"]["considered"]


@pytest.mark.slow
def test_check_auto_with_nothing_runnable_exits_3() -> None:
    p = launcher("check", "--profile", "auto", "--inventory", str(FIXTURES / "t4x2.json"))
    assert p.returncode == 3 and p.stderr.startswith("launcher: error: --profile auto: no profile can run on 2 x Tesla T4: ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"driver_version": "580", "gpus": []}', ": cuda_driver_version: is required"),
        ("{nope", ":1:2: not valid JSON: Expecting property name enclosed in double quotes"),
        ('{"driver_version": "580", "cuda_driver_version": 13000, "gpus": [{"index": 0}]}', ": gpus[0].uuid: is required (and 4 more problems)"),
    ],
)
@pytest.mark.slow
def test_bad_inventory_file_is_exit_2_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "inv.json"
    path.write_text(content)
    p = launcher("check", "--profile", "dual-3090", "--inventory", str(path))
    assert p.returncode == 2
    assert p.stderr == f"launcher: error: {path}{message}\n"


def test_gpus_json_from_the_probe_seam_is_what_check_reads(tmp_path: Path) -> None:
    inv = load_inventory(FIXTURES / "h100x8.json")
    result = run("gpus", "--json", obj=Runtime(probe=lambda: inv))
    assert result.exit_code == 0
    path = tmp_path / "captured.json"
    path.write_text(result.output)
    again = load_inventory(path)
    assert again.gpus == inv.gpus and again.links == inv.links
    assert run("check", "--profile", "tp8", "--inventory", str(path)).exit_code == 0


def test_check_live_goes_through_the_probe_seam(busy_desktop: str) -> None:
    inv = load_inventory(busy_desktop)
    result = run("check", "--profile", "dual-3090", obj=Runtime(probe=lambda: inv))
    assert result.exit_code == 3 and "(live NVML)" in result.output.splitlines()[0]


def test_gpus_table() -> None:
    result = run("gpus", "--inventory", DESKTOP)
    assert result.exit_code == 0
    out = result.output.splitlines()
    assert out[0] == "2 x NVIDIA GeForce RTX 3090 (driver 580.95.05, CUDA 13.0)"
    assert out[1].split() == ["IDX", "NAME", "FREE/TOTAL", "GiB", "CC", "MIG", "UUID", "PCI"]
    assert "GPU 0 processes: pid 1342 Xorg (0.40 GiB), pid 2087 gnome-shell (0.13 GiB)" in out
    assert "  0-1: no P2P (chipset not supported); read chipset_not_supported, write chipset_not_supported, nvlink not_supported, topology hostbridge" in out


def test_gpus_with_no_gpu_is_exit_3() -> None:
    from launcher.hardware.inventory import Inventory

    result = run("gpus", obj=Runtime(probe=lambda: Inventory("580.95.05", 13000, ())))
    assert result.exit_code == 3


def test_probe_failure_is_exit_3_one_line() -> None:
    def broken():
        raise HardwareError("cannot read the GPUs through NVML: Driver Not Loaded; see --inventory")

    result = run("check", "--profile", "dual-3090", obj=Runtime(probe=broken))
    assert result.exit_code == 3


@pytest.mark.slow
def test_without_nvml_the_real_command_points_to_inventory() -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("NVML works on this machine")
    except Exception:
        pass
    for args in (("gpus",), ("check", "--profile", "dual-3090")):
        p = launcher(*args)
        assert p.returncode == 3
        assert p.stderr.startswith("launcher: error: cannot read the GPUs")
        assert "launcher check --inventory" in p.stderr and len(p.stderr.splitlines()) == 1


def test_gpus_schema_is_json_schema() -> None:
    result = run("gpus", "--schema")
    assert result.exit_code == 0 and json.loads(result.output)["title"].startswith("launcher GPU inventory")


def test_profiles_grouped_by_inventory(busy_desktop: str) -> None:
    result = run("profiles", "--inventory", busy_desktop, "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["runnable"] == []
    why = {r["name"]: r for r in data["not-runnable"]}
    assert why["dual-3090"]["failed"] == ["memory-free", "kv-fit"] and "Xorg" in why["dual-3090"]["why"]
    assert why["tp4"]["failed"][0] == "gpu-count"
    table = run("profiles", "--inventory", IDLE).output
    assert table.splitlines()[0].startswith("profiles on 2 x NVIDIA GeForce RTX 3090 (inventory ")
    assert "RUNNABLE:" in table and "RUNNABLE WITH A SMALLER CONTEXT:" in table and "NOT RUNNABLE:" in table


def test_profiles_without_inventory_is_unchanged() -> None:
    rows = json.loads(run("profiles", "--format", "json").output)
    assert isinstance(rows, list) and {"dual-3090", "tp4"} <= {r["name"] for r in rows}


@pytest.mark.slow
def test_check_with_inventory_never_imports_nvml() -> None:
    code = (
        "import sys\n"
        "from launcher.cli import main\n"
        "try:\n"
        f"    main(['check', '--profile', 'dual-3090', '--inventory', {IDLE!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('NVML=%s' % ('pynvml' in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stderr.endswith("NVML=False"), p.stderr
