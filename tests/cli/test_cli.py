"""The CLI as users and scripts meet it: exit codes, one-line errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.commands.serve import Runtime


def run(*args: str, obj=None, env=None):
    return CliRunner().invoke(cli, list(args), obj=obj, env=env)


def launcher(*args: str, env=None) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process, as a user runs it."""
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, env=full_env)


def test_profiles_table_lists_shipped_profiles() -> None:
    result = run("profiles", "--format", "json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["dual-3090"]["gpus"] == 2 and rows["dual-3090"]["context"] == 262144 and rows["dual-3090"]["mtp"] == 2
    assert rows["tp8"]["tp"] == 8
    assert not any(name.startswith("_") for name in rows)


def test_render_json() -> None:
    result = run("render", "--profile", "dual-3090", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["env"] == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_render_full_profile_says_what_it_changed_from_the_card() -> None:
    p = launcher("render", "--profile", "dual-3090-full")
    assert p.returncode == 0
    assert "launcher: note: differs from the model card: --mamba-cache-mode all -> (dropped)" in p.stderr
    assert "--mamba-cache-mode" not in p.stdout


def test_serve_execs_the_rendered_command_with_extra_args() -> None:
    calls = []
    result = run("serve", "--profile", "tp4", "--set", "engine.max_num_seqs=4", "--", "--enforce-eager", obj=Runtime(exec_fn=calls.append))
    assert result.exit_code == 0, result.output
    (rendered,) = calls
    assert rendered.argv[-1] == "--enforce-eager"
    assert "--max-num-seqs" in rendered.argv


def test_serve_profile_from_environment() -> None:
    calls = []
    result = run("serve", obj=Runtime(exec_fn=calls.append), env={"LAUNCHER_PROFILE": "tp8"})
    assert result.exit_code == 0 and calls[0].argv[calls[0].argv.index("--tensor-parallel-size") + 1] == "8"


def test_serve_dry_run_prints_and_does_not_exec() -> None:
    calls = []
    result = run("serve", "--profile", "dual-3090", "--dry-run", obj=Runtime(exec_fn=calls.append))
    assert result.exit_code == 0 and not calls
    assert result.output.startswith("CUDA_VISIBLE_DEVICES=0,1 vllm serve havenoammo/Qwen3.6-27B-INT8-MTP --tensor-parallel-size 2")


def test_serve_without_vllm_is_exit_4_one_line() -> None:
    p = launcher("serve", "--profile", "dual-3090", env={"PATH": "/nonexistent"})
    assert p.returncode == 4
    assert p.stderr.strip().splitlines() == ["launcher: error: 'vllm' not found on PATH; install vLLM (pip install 'launcher[vllm]') or run the launcher container"]


def test_serve_really_execs(tmp_path) -> None:
    """A real exec: a fake `vllm` on PATH replaces the launcher process and owns the exit code."""
    fake = tmp_path / "vllm"
    fake.write_text('#!/bin/sh\necho "argv: $*"\necho "cvd: $CUDA_VISIBLE_DEVICES key: $VLLM_API_KEY"\nexit 7\n')
    fake.chmod(0o755)
    import os

    p = launcher("serve", "--profile", "dual-3090", "--set", "server.api_key_env=MY_SECRET",
                 env={"PATH": f"{tmp_path}:{os.environ['PATH']}", "MY_SECRET": "hunter2"})
    assert p.returncode == 7  # vLLM's exit code, not ours
    assert "argv: serve havenoammo/Qwen3.6-27B-INT8-MTP --tensor-parallel-size 2" in p.stdout
    assert "cvd: 0,1 key: hunter2" in p.stdout
    assert "hunter2" not in p.stderr and 'VLLM_API_KEY="${MY_SECRET}"' in p.stderr


def test_serve_missing_secret_is_a_profile_error() -> None:
    p = launcher("serve", "--profile", "dual-3090", "--set", "server.api_key_env=NOT_SET_ANYWHERE")
    assert p.returncode == 2 and "server.api_key_env: environment variable NOT_SET_ANYWHERE is not set" in p.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["render", "--profile", "nope"], 2, "launcher: error: no profile named 'nope'"),
        (["render", "--profile", "dual-3090", "--set", "engine.max_model_len=x"], 2, "engine.max_model_len: expected a positive whole number"),
        (["render", "--profile", "dual-3090", "--format", "xml"], 2, "Invalid value for '--format'"),
        (["rendr"], 2, "Did you mean 'render'?"),
        (["serve"], 2, "Missing option '--profile'"),
    ],
)
def test_errors_are_one_line_with_exit_codes(args, code, message) -> None:
    p = launcher(*args)
    assert p.returncode == code
    assert message in p.stderr
    assert "Traceback" not in p.stderr


def test_debug_switch_shows_traceback() -> None:
    p = launcher("render", "--profile", "nope", env={"LAUNCHER_DEBUG": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_schema_is_json_schema_with_descriptions() -> None:
    result = run("schema")
    schema = json.loads(result.output)
    assert schema["title"] == "launcher profile" and "hardware" in schema["required"]


def test_explain_names_layers(tmp_path) -> None:
    result = run("explain", "--profile", "dual-3090", "--set", "engine.max_num_seqs=4", "--json")
    rows = {r["key"]: r["source"] for r in json.loads(result.output)}
    assert rows["engine.max_num_seqs"] == "--set"
    assert rows["parallel.tensor_parallel_size"].endswith("dual-3090.yaml:11")
    assert rows["kv_cache.dtype"].startswith("base ") and "_qwen36-27b-int8-mtp.yaml" in rows["kv_cache.dtype"]
    assert rows["vllm.command"] == "default"


def test_diff() -> None:
    result = run("diff", "dual-3090", "dual-3090-full")
    assert result.exit_code == 0
    assert "- --max-model-len 262144" in result.output and "+ --max-model-len 200000" in result.output


def test_user_profiles_dir_from_environment(tmp_path) -> None:
    (tmp_path / "mine.yaml").write_text("extends: dual-3090\nengine: {max_model_len: 32768}\n")
    p = launcher("render", "--profile", "mine", "--format", "json", env={"LAUNCHER_PROFILES_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    argv = json.loads(p.stdout)["argv"]
    assert argv[argv.index("--max-model-len") + 1] == "32768"
