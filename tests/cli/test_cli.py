"""The CLI as users and scripts meet it: exit codes, one-line errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.errors import EngineStartError, HardwareError, ProfileError
from launcher.hardware.inventory import load_inventory
from launcher.live.runtime import Runtime
from launcher.output.compile_cache import CACHE_ENV
from tests.helpers import FIXTURES, without_cache_env


def machine(name: str, calls: list):
    """A Runtime whose GPUs are a captured inventory and whose exec records the command."""
    inventory = load_inventory(FIXTURES / "inventories" / f"{name}.json")
    return Runtime(probe=lambda: inventory, exec_fn=calls.append)


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
    env = json.loads(result.stdout)["env"]
    assert set(CACHE_ENV) <= set(env)  # the compile cache root (launcher/output/compile_cache.py)
    assert {k: v for k, v in env.items() if k not in CACHE_ENV} == {"CUDA_VISIBLE_DEVICES": "0,1"}


@pytest.mark.slow
def test_render_full_profile_says_what_it_changed_from_the_card() -> None:
    p = launcher("render", "--profile", "dual-3090-full")
    assert p.returncode == 0
    assert "launcher: note: for vLLM 0.33.0: dropped `--mamba-cache-mode all`" in p.stderr
    assert "--mamba-cache-mode" not in p.stdout


def test_serve_execs_the_rendered_command_with_extra_args() -> None:
    calls = []
    result = run("serve", "--profile", "tp4", "--set", "engine.max_num_seqs=4", "--", "--enforce-eager", "--max-logprobs", "3",
                 obj=machine("a100-80gbx4", calls))
    assert result.exit_code == 0, result.output
    (rendered,) = calls
    assert rendered.argv[-2:] == ("--max-logprobs", "3")  # no profile key: verbatim, last
    assert rendered.argv.count("--enforce-eager") == 1  # a profile key (engine.enforce_eager): rendered once (issue 19)
    assert "--max-num-seqs" in rendered.argv


def test_serve_profile_from_environment() -> None:
    calls = []
    result = run("serve", obj=machine("h100x8", calls), env={"LAUNCHER_PROFILE": "tp8"})
    assert result.exit_code == 0 and calls[0].argv[calls[0].argv.index("--tensor-parallel-size") + 1] == "8"


def test_serve_dry_run_prints_and_does_not_exec() -> None:
    calls = []
    result = run("serve", "--profile", "dual-3090", "--dry-run", obj=machine("h200x2", calls))
    assert result.exit_code == 0 and not calls
    assert without_cache_env(result.stdout).startswith("CUDA_VISIBLE_DEVICES=0,1 vllm serve havenoammo/Qwen3.6-27B-INT8-MTP --tensor-parallel-size 2")


@pytest.mark.slow
def test_render_refuses_what_the_target_vllm_rejects() -> None:
    p = launcher("render", "--profile", "dual-3090", "--", "--max-model-len", "lots", "--not-a-flag")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "vLLM 0.33.0 would reject the command: --max-model-len: invalid integer" in p.stderr


@pytest.mark.slow
def test_render_for_032_translates_spellings() -> None:
    p = launcher("render", "--profile", "dual-3090", "--set", "vllm.version=0.32.0", "--format", "json")
    assert p.returncode == 0, p.stderr


def test_serve_preflight_failure_is_exit_3_and_does_not_exec() -> None:
    calls = []
    result = run("serve", "--profile", "tp4", obj=machine("h200x2", calls))
    assert isinstance(result.exception, HardwareError) and result.exception.exit_code == 3 and not calls
    assert "profile tp4 cannot run here: gpu-count" in str(result.exception)
    assert "FAIL  gpu-count" in result.stderr


def test_serve_skip_checks_goes_on_loudly() -> None:
    calls = []
    result = run("serve", "--profile", "tp4", "--skip-checks", obj=machine("h200x2", calls))
    assert result.exit_code == 0 and len(calls) == 1
    assert "WARNING: --skip-checks: starting although checks failed (gpu-count" in result.stderr


def test_serve_auto_picks_from_the_gpus() -> None:
    calls = []
    result = run("serve", "--profile", "auto", obj=machine("h200x2", calls))
    assert result.exit_code == 0, result.output
    assert calls[0].argv[calls[0].argv.index("--tensor-parallel-size") + 1] == "2"


def test_serve_without_p2p_carries_the_checks_adjustments() -> None:
    calls = []
    result = run("serve", "--profile", "dual-3090", "--set", "engine.max_model_len=131072", obj=machine("rtx3090x2-idle", calls))
    assert result.exit_code == 0, result.output
    assert "--disable-custom-all-reduce" in calls[0].argv and calls[0].env["NCCL_P2P_DISABLE"] == "1"


@pytest.mark.slow
def test_serve_without_nvml_is_exit_3_unless_skipped() -> None:
    p = launcher("serve", "--profile", "dual-3090", env={"PATH": "/nonexistent"})  # never a real vllm, even where NVML works
    assert p.returncode == 3 and "NVML" in p.stderr and "--skip-checks" in p.stderr and "Traceback" not in p.stderr
    p = launcher("serve", "--profile", "dual-3090", "--dry-run")  # print only: the command, and why it is unchecked
    assert p.returncode == 0 and "the GPU preflight could not run" in p.stderr and without_cache_env(p.stdout).startswith("CUDA_VISIBLE_DEVICES=0,1 vllm serve")
    p = launcher("serve", "--profile", "dual-3090", "--dry-run", "--skip-checks")
    assert p.returncode == 0 and "WARNING: --skip-checks: GPUs not checked" in p.stderr


@pytest.mark.slow
def test_serve_without_vllm_is_exit_4_one_line() -> None:
    p = launcher("serve", "--profile", "dual-3090", "--skip-checks", env={"PATH": "/nonexistent"})
    assert p.returncode == 4
    assert p.stderr.strip().splitlines()[-1:] == [
        "launcher: error: 'vllm' not found on PATH; install vLLM (pip install 'qwen36-vllm-launcher[vllm]', "
        "or pip install -e '.[vllm]' in a launcher checkout) or run the launcher container"]


@pytest.mark.slow
def test_serve_really_execs(tmp_path) -> None:
    """A real exec: a fake `vllm` on PATH replaces the launcher process and owns the exit code."""
    fake = tmp_path / "vllm"
    fake.write_text('#!/bin/sh\necho "argv: $*"\necho "cvd: $CUDA_VISIBLE_DEVICES key: $VLLM_API_KEY"\nexit 7\n')
    fake.chmod(0o755)
    import os

    p = launcher("serve", "--profile", "dual-3090", "--skip-checks", "--set", "server.api_key_env=MY_SECRET",
                 env={"PATH": f"{tmp_path}:{os.environ['PATH']}", "MY_SECRET": "hunter2"})
    assert p.returncode == 7  # vLLM's exit code, not ours
    assert "argv: serve havenoammo/Qwen3.6-27B-INT8-MTP --tensor-parallel-size 2" in p.stdout
    assert "cvd: 0,1 key: hunter2" in p.stdout
    assert "hunter2" not in p.stderr and 'VLLM_API_KEY="${MY_SECRET}"' in p.stderr


@pytest.mark.slow
def test_serve_missing_secret_is_a_profile_error() -> None:
    p = launcher("serve", "--profile", "dual-3090", "--skip-checks", "--set", "server.api_key_env=NOT_SET_ANYWHERE")
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
@pytest.mark.slow
def test_errors_are_one_line_with_exit_codes(args, code, message) -> None:
    p = launcher(*args)
    assert p.returncode == code
    assert message in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_debug_switch_shows_traceback() -> None:
    p = launcher("render", "--profile", "nope", env={"LAUNCHER_DEBUG": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_schema_is_json_schema_with_descriptions() -> None:
    result = run("schema")
    schema = json.loads(result.output)
    assert schema["title"] == "launcher profile" and "hardware" in schema["properties"]
    assert schema["$defs"]["Hardware"]["properties"]["gpu_count"]["description"]
    assert "required" not in schema  # one file of a layered profile: `extends` supplies the rest


def test_explain_names_layers(tmp_path) -> None:
    result = run("explain", "--profile", "dual-3090", "--set", "engine.max_num_seqs=4", "--json")
    rows = {r["key"]: r["source"] for r in json.loads(result.output)}
    assert rows["engine.max_num_seqs"] == "--set"
    assert rows["parallel.tensor_parallel_size"].endswith("dual-3090.yaml:13")
    assert rows["kv_cache.dtype"].startswith("base ") and "_qwen36-27b-int8-mtp.yaml" in rows["kv_cache.dtype"]
    assert rows["vllm.command"] == "default"


def test_diff() -> None:
    result = run("diff", "dual-3090", "dual-3090-full")
    assert result.exit_code == 0
    assert "- --max-model-len 262144" in result.output and "+ --max-model-len 200000" in result.output


@pytest.mark.slow
def test_user_profiles_dir_from_environment(tmp_path) -> None:
    (tmp_path / "mine.yaml").write_text("extends: dual-3090\nengine: {max_model_len: 32768}\n")
    p = launcher("render", "--profile", "mine", "--format", "json", env={"LAUNCHER_PROFILES_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    argv = json.loads(p.stdout)["argv"]
    assert argv[argv.index("--max-model-len") + 1] == "32768"


INV = str(FIXTURES / "inventories" / "rtx3090x2-idle.json")


def test_explain_with_inventory_names_the_check() -> None:
    result = run("explain", "--profile", "dual-3090", "--inventory", INV, "--json")
    rows = {r["key"]: r for r in json.loads(result.output)}
    assert rows["env.NCCL_P2P_DISABLE"]["value"] == "1"
    assert rows["env.NCCL_P2P_DISABLE"]["source"].startswith("check: no GPU peer-to-peer between GPU 0-1")
    assert rows["parallel.disable_custom_all_reduce"]["source"].startswith("check: ")


def test_max_model_len_auto_renders_the_largest_that_fits_the_inventory() -> None:
    from launcher.fit.fit_profile import auto_max_model_len
    from launcher.profile.load import resolve

    result = run("render", "--profile", "dual-3090", "--set", "engine.max_model_len=auto", "--inventory", INV, "--format", "json")
    argv = json.loads(result.stdout)["argv"]
    value = int(argv[argv.index("--max-model-len") + 1])
    inventory = load_inventory(INV)
    expected = auto_max_model_len(resolve("dual-3090", sets=["engine.max_model_len=auto"], environ={}).profile, list(inventory.gpus))
    assert value == expected and value % 1600 == 0 and 100_000 < value < 262_144  # whole blocks of 1600 tokens on 2 x 3090 (with margin)
    # Without an inventory vLLM's own auto-fit gets the word.
    plain = json.loads(run("render", "--profile", "dual-3090", "--set", "engine.max_model_len=auto", "--format", "json").stdout)["argv"]
    assert plain[plain.index("--max-model-len") + 1] == "auto"


def test_serve_renders_auto_context_for_the_live_gpus() -> None:
    calls = []
    result = run("serve", "--profile", "dual-3090", "--set", "engine.max_model_len=auto", obj=machine("rtx3090x2-idle", calls))
    assert result.exit_code == 0, result.output
    argv = calls[0].argv
    assert int(argv[argv.index("--max-model-len") + 1]) % 1600 == 0
    assert "adjusted by the check: engine.max_model_len=" in result.stderr


LOOPBACK_HOSTS = "deployment.hosts=[{ip: 127.0.0.1}, {ip: 127.0.0.2}]"  # any 127.x is this machine's


def test_serve_node_rank_runs_a_worker_that_waits_for_its_head() -> None:
    calls, ranks = [], []

    def rank_fn(argv, env, endpoint, rank, **kw):
        ranks.append((argv, env, endpoint, rank, kw))
        return 0

    inventory = load_inventory(FIXTURES / "inventories" / "a100-80gbx4.json")
    rt = Runtime(probe=lambda: inventory, exec_fn=calls.append, rank_fn=rank_fn)
    result = run("serve", "--profile", "tp4-pp2-2node", "--node-rank", "1", "--set", LOOPBACK_HOSTS, "--head-timeout", "30", obj=rt)
    assert result.exit_code == 0, result.output
    assert not calls  # a worker is supervised (it must stop with its head), never exec'd
    argv, env, endpoint, rank, kw = ranks[0]
    assert "--headless" in argv and argv[argv.index("--node-rank") + 1] == "1"
    assert env["VLLM_HOST_IP"] == "127.0.0.2" and (endpoint.host, endpoint.port, rank) == ("127.0.0.1", 29501, 1)
    assert kw == {"head_timeout": 30.0}
    assert "launcher: start: GLOO_SOCKET_IFNAME=eth0 NCCL_SOCKET_IFNAME=eth0 VLLM_HOST_IP=127.0.0.2 vllm serve" in result.stderr


def test_serve_node_rank_head_execs_its_own_command() -> None:
    calls = []
    result = run("serve", "--profile", "tp4-pp2-2node", "--node-rank", "0", "--set", LOOPBACK_HOSTS, obj=machine("a100-80gbx4", calls))
    assert result.exit_code == 0, result.output
    argv, env = calls[0].argv, calls[0].env
    assert "--headless" not in argv and argv[argv.index("--node-rank") + 1] == "0"
    assert env["VLLM_HOST_IP"] == "127.0.0.1"


def test_serve_node_rank_refuses_an_address_that_is_not_this_machines() -> None:
    calls = []
    result = run("serve", "--profile", "tp4-pp2-2node", "--node-rank", "1", obj=machine("a100-80gbx4", calls))
    assert isinstance(result.exception, ProfileError) and not calls  # exit 2
    assert "deployment.hosts.1.ip: 192.0.2.11 is not an address of this machine" in str(result.exception)
    dry = run("serve", "--profile", "tp4-pp2-2node", "--node-rank", "1", "--dry-run", obj=machine("a100-80gbx4", calls))
    assert dry.exit_code == 0 and "VLLM_HOST_IP=192.0.2.11" in dry.stdout  # --dry-run only prints: no per-rank checks


def test_serve_node_rank_skip_checks_starts_anyway_loudly() -> None:
    ranks = []
    inventory = load_inventory(FIXTURES / "inventories" / "a100-80gbx4.json")
    rt = Runtime(probe=lambda: inventory, exec_fn=[].append, rank_fn=lambda *a, **kw: ranks.append(a) or 0)
    result = run("serve", "--profile", "tp4-pp2-2node", "--node-rank", "1", "--skip-checks", obj=rt)
    assert result.exit_code == 0, result.output
    assert "WARNING: --skip-checks: deployment.hosts.1.ip: 192.0.2.11 is not an address of this machine" in result.stderr
    assert ranks[0][2].host == "192.0.2.10"  # it still waits for its head


def test_serve_node_rank_head_refuses_a_taken_master_port() -> None:
    import socket

    calls = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--profile", "tp4-pp2-2node", "--node-rank", "0", "--set", LOOPBACK_HOSTS,
                     "--set", f"deployment.master_port={port}", obj=machine("a100-80gbx4", calls))
    assert isinstance(result.exception, EngineStartError) and not calls  # exit 4
    assert f"deployment.master_port: port {port} is taken on this machine" in str(result.exception)


def test_serve_worker_wait_is_refused() -> None:
    result = run("serve", "--profile", "tp4-pp2-2node", "--node-rank", "1", "--set", LOOPBACK_HOSTS, "--wait",
                 obj=machine("a100-80gbx4", []))
    assert isinstance(result.exception, ProfileError) and "node 1 is headless (node 0 alone serves HTTP)" in str(result.exception)


@pytest.mark.slow  # the real launcher in a subprocess
def test_serve_worker_without_its_head_exits_4_in_bounded_time() -> None:
    """The real path (no fakes): node 1 of a loopback profile whose head never starts; nothing listens on the port."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    t0 = time.monotonic()
    proc = launcher("serve", "--profile", "cpu-tiny-2node", "--node-rank", "1", "--set", f"deployment.master_port={port}",
                    "--head-timeout", "2")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 4, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"launcher: error: node 1 cannot reach its head at 127.0.0.1:{port} after 2 s (connection refused: "
                    "nothing listens there); start node 0 (launcher serve --node-rank 0), or check "
                    "deployment.master_addr/master_port and the firewall between the nodes")
    assert "Traceback" not in proc.stderr and elapsed < 30


def test_serve_wait_smoke_supervises_instead_of_exec() -> None:
    calls, supervised = [], []

    def supervise(argv, env, url, timeout, smoke, **kw):
        supervised.append((argv, env, url, timeout, smoke, kw))
        return 7

    inventory = load_inventory(FIXTURES / "inventories" / "h200x2.json")
    rt = Runtime(probe=lambda: inventory, exec_fn=calls.append, supervise_fn=supervise)
    result = run("serve", "--profile", "dual-3090", "--smoke", "--wait-timeout", "60", "--set", "server.port=9001", obj=rt)
    assert result.exit_code == 7 and not calls  # vLLM's exit code comes back; nothing was exec'd
    argv, env, url, timeout, smoke, kw = supervised[0]
    assert argv[:3] == ["vllm", "serve", "havenoammo/Qwen3.6-27B-INT8-MTP"] and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert url == "http://127.0.0.1:9001" and timeout == 60 and smoke is True
    assert kw["model"] == "havenoammo/Qwen3.6-27B-INT8-MTP" and kw["smoke_options"] == {"expect_spec_decode": True}
