"""Hostile input at the real entry point (issue 19, items 8 and 10): exit 2 (or 4, 5), one line, never 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.errors import LauncherError
from launcher.hardware.inventory import load_inventory
from launcher.live.runtime import Runtime
from tests.helpers import FIXTURES

GOOD = "hardware: {gpu_count: 2, min_memory_gib: 23.5}\nmodel: {name: havenoammo/Qwen3.6-27B-INT8-MTP}\nparallel: {tensor_parallel_size: 2}\n"


def launcher(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, env=full_env, timeout=120, cwd=cwd)


def one_line_error(p: subprocess.CompletedProcess, code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("launcher: error:") or line.startswith("Error:")]
    assert len(errors) == 1 and len(p.stderr.strip().splitlines()[-1]) <= 500, p.stderr
    return p.stderr


@pytest.mark.slow
def test_deeply_nested_profile_is_exit_2(tmp_path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(GOOD + "engine:\n  compilation_config: " + "{a: " * 330 + "1" + "}" * 330 + "\n")
    one_line_error(launcher("render", "--profile", str(path)), 2)
    one_line_error(launcher("render", "--profile", "tp4", "--set", "engine.compilation_config=" + "[" * 2000 + "]" * 2000), 2)


@pytest.mark.slow
def test_serve_cpu_profile_without_vllm_is_exit_4(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)  # this venv's python: no vLLM in it
    p = launcher("serve", "--profile", "cpu-tiny", env={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"})
    assert p.returncode == 4, (p.returncode, p.stderr[-2000:])
    assert "vllm" in p.stderr.splitlines()[-1]


@pytest.mark.slow
def test_missing_profiles_dir_is_exit_2(tmp_path) -> None:
    err = one_line_error(launcher("render", "--profile", "tp4", "--profiles-dir", str(tmp_path / "nothere")), 2)
    assert "nothere" in err


@pytest.mark.slow
@pytest.mark.parametrize("command", [["render"], ["serve", "--dry-run", "--skip-checks"], ["show"]])
def test_base_profiles_are_refused(command: list[str]) -> None:
    err = one_line_error(launcher(*command, "--profile", "_qwen36-27b-int8-mtp"), 2)
    assert "base" in err


@pytest.mark.slow
def test_inventory_with_reserved_above_total_is_refused(tmp_path) -> None:
    data = json.loads((FIXTURES / "inventories" / "h200x2.json").read_text())
    data["gpus"][0]["memory_reserved_bytes"] = data["gpus"][0]["memory_total_bytes"] + 1
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(data))
    err = one_line_error(launcher("check", "--profile", "dual-3090", "--inventory", str(path)), 2)
    assert "memory_reserved_bytes" in err


@pytest.mark.slow
@pytest.mark.parametrize("override", ["hardware.min_memory_gib=.inf", "engine.max_model_len=1000000000000000000000000000000"])
def test_show_json_refuses_what_json_cannot_carry(override: str) -> None:
    one_line_error(launcher("show", "--profile", "tp4", "--json", "--set", override), 2)


def _serve(args: list[str], calls: list) -> tuple[int, str]:
    inventory = load_inventory(FIXTURES / "inventories" / "a100-80gbx4.json")
    result = CliRunner().invoke(cli, ["serve", *args], obj=Runtime(probe=lambda: inventory, exec_fn=calls.append))
    if isinstance(result.exception, LauncherError):
        return result.exception.exit_code, result.output + str(result.exception)
    return result.exit_code, result.output


@pytest.mark.parametrize("extra", [["--", "--not-a-flag"], ["--", "--max-logprobs", "lots"]])
def test_serve_node_rank_runs_the_same_checks(extra: list[str]) -> None:
    for rank in ([], ["--node-rank", "0"], ["--node-rank", "1"]):
        calls: list = []
        code, output = _serve(["--profile", "tp4-pp2-2node", *rank, *extra], calls)
        assert code == 2 and not calls, (rank, code, output)
        assert "would reject the command" in output


def test_serve_node_rank_translates_for_the_engine_as_without_it() -> None:
    """A node's command is the checked one plus its own flags (serve --node-rank and render --node-rank build it alike)."""
    from launcher.output import deploy
    from launcher.output.validate import render_checked
    from launcher.profile.load import resolve

    plain: list = []
    assert _serve(["--profile", "tp4-pp2-2node", "--set", "engine.mamba_cache_mode=all"], plain)[0] == 0
    resolved = resolve("tp4-pp2-2node", sets=["engine.mamba_cache_mode=all"], environ={})
    node = deploy.node_command(resolved.profile, 1, str(resolved.path)).rendered
    assert node is not None
    assert "--mamba-cache-mode" not in plain[0].argv and "--mamba-cache-mode" not in node.argv
    assert any("dropped `--mamba-cache-mode all`" in n for n in node.notes)
    assert node.argv[:-9] == plain[0].argv == render_checked(resolved).argv
    assert node.argv[-9:] == ("--headless", "--nnodes", "2", "--node-rank", "1", "--master-addr", "192.0.2.10", "--master-port", "29501")
