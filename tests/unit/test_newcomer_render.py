"""`render` outputs a newcomer applies as they are (issue 17): plain Kubernetes manifests with a model cache, a systemd unit."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli
from launcher.output.k8s import manifests, to_yaml
from launcher.profile.load import list_profiles, resolve, shipped_profiles_dir
from tests.fakes import PYNVML_DIR
from tests.helpers import FIXTURES

SHIPPED = sorted(list_profiles([shipped_profiles_dir()]))


@pytest.mark.parametrize("name", SHIPPED)
def test_k8s_yaml_has_no_anchors_and_reads_back_as_the_manifests(name: str) -> None:
    resolved = resolve(name, environ={})
    m = manifests(resolved.profile, resolved.name)
    text = to_yaml(m)
    assert "&id" not in text and "*id" not in text
    assert [d for d in yaml.safe_load_all(text) if d] == list(m.docs)


def test_k8s_labels_are_written_out_where_they_are_used() -> None:
    text = to_yaml(manifests(resolve("dual-3090", environ={}).profile, "dual-3090"))
    assert text.count("app.kubernetes.io/instance: dual-3090") >= 4  # Deployment, selector, pod template, Service


def _pod(name: str, *sets: str) -> dict:  # type: ignore[type-arg]
    docs = manifests(resolve(name, sets=sets, environ={}).profile, name).docs
    dep = docs[0]
    spec = dep["spec"]["template"]["spec"] if dep["kind"] == "Deployment" else dep["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    return spec  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["dual-3090", "tp4-pp2-2node"])
def test_model_cache_by_default_is_a_host_directory_per_node(name: str) -> None:
    spec = _pod(name)
    assert {"name": "hf-cache", "hostPath": {"path": "/var/cache/huggingface", "type": "DirectoryOrCreate"}} in spec["volumes"]
    assert {"name": "hf-cache", "mountPath": "/root/.cache/huggingface"} in spec["containers"][0]["volumeMounts"]


def test_a_pvc_replaces_the_host_directory_and_false_turns_the_cache_off_loudly() -> None:
    spec = _pod("dual-3090", "deployment.kubernetes.model_cache_pvc=models")
    caches = [v for v in spec["volumes"] if v["name"] == "hf-cache"]
    assert caches == [{"name": "hf-cache", "persistentVolumeClaim": {"claimName": "models"}}]
    off = _pod("dual-3090", "deployment.kubernetes.model_cache_host_path=false")
    assert not [v for v in off["volumes"] if v["name"] == "hf-cache"]
    result = CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--format", "k8s",
                                      "--set", "deployment.kubernetes.model_cache_host_path=false"])
    assert result.exit_code == 0 and "WARNING: no model cache" in result.stderr and "~34 GB" in result.stderr
    default = CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--format", "k8s"])
    assert "k8s: model cache: hostPath /var/cache/huggingface" in default.stderr


def test_a_relative_host_path_is_refused() -> None:
    from launcher.errors import ProfileError

    with pytest.raises(ProfileError):
        resolve("dual-3090", sets=("deployment.kubernetes.model_cache_host_path=cache",), environ={})


# ------------------------------------------------------------------ systemd


ALLOWED_ON_OLD_SYSTEMD = ("Unknown key 'RestartSteps'", "Unknown key 'RestartMaxDelaySec'")


def systemd_unit(*args: str, env: dict[str, str | None] | None = None) -> tuple[str, str]:
    result = CliRunner().invoke(cli, ["render", "--format", "systemd", *args], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout, result.stderr


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_systemd_unit_runs_launcher_serve_with_restart_backoff_env_file_and_driver_order() -> None:
    from launcher.output.systemd import this_launcher

    text, notes = systemd_unit("--profile", "dual-3090")
    d = directives(text)
    assert shlex.split(d["ExecStart"][0]) == [*this_launcher(), "serve", "--profile", "dual-3090"]
    assert d["Restart"] == ["always"] and d["RestartSec"] == ["30s"] and d["RestartSteps"] == ["5"]
    assert d["StartLimitBurst"] == ["5"] and d["RestartPreventExitStatus"] == ["2 6"]
    assert "nvidia-persistenced.service" in d["After"][0].split()
    assert d["EnvironmentFile"] == ["-/etc/launcher/launcher-dual-3090.env"]
    assert d["KillSignal"] == ["SIGTERM"] and d["KillMode"] == ["mixed"] and d["TimeoutStopSec"] == ["60s"]
    assert d["WantedBy"] == ["multi-user.target"]
    assert "HF_TOKEN=..." in notes


def test_stop_timeout_is_longer_than_vllms_drain() -> None:
    text, _ = systemd_unit("--profile", "dual-3090", "--", "--shutdown-timeout", "120")
    d = directives(text)
    assert d["TimeoutStopSec"] == ["180s"]
    assert shlex.split(d["ExecStart"][0])[-3:] == ["--", "--shutdown-timeout", "120"]


def test_secrets_come_from_the_environment_file_never_the_unit() -> None:
    env = {"HF_TOKEN": "hf_NEVER_IN_THE_UNIT", "MY_KEY": "sk-NEVER_IN_THE_UNIT"}
    text, notes = systemd_unit("--profile", "dual-3090", "--set", "server.api_key_env=MY_KEY", env=env)  # type: ignore[arg-type]
    assert "NEVER_IN_THE_UNIT" not in text + notes
    d = directives(text)
    assert d["EnvironmentFile"] == ["/etc/launcher/launcher-dual-3090.env"]  # required: serve refuses without the key
    assert "MY_KEY=..." in notes and "is not set" not in notes  # this shell's environment is not the service's


def test_a_user_profile_and_overrides_survive_the_quoting(tmp_path: Path, write_profile) -> None:  # type: ignore[no-untyped-def]
    write_profile("my box", "extends: dual-3090\nengine: {max_num_seqs: 3}\n")
    odd = 'chat.default_chat_template_kwargs={"enable_thinking": false, "note": "50% $HOME"}'
    text, _ = systemd_unit("--profile", "my box", "--profiles-dir", str(tmp_path / "profiles"), "--set", odd)
    line = directives(text)["ExecStart"][0]
    assert "%%" in line and "$$HOME" in line  # systemd specifiers and variables escaped
    argv = shlex.split(line.replace("%%", "%").replace("$$", "$"))
    assert argv[argv.index("--profile") + 1] == str((tmp_path / "profiles" / "my box.yaml").resolve())
    assert argv[argv.index("--profiles-dir") + 1] == str((tmp_path / "profiles").resolve())
    assert argv[argv.index("--set") + 1] == odd


def test_a_multi_node_profile_needs_a_node_rank() -> None:
    result = CliRunner().invoke(cli, ["render", "--profile", "tp4-pp2-2node", "--format", "systemd"])
    assert getattr(result.exception, "exit_code", result.exit_code) == 2 and "--node-rank" in str(result.exception)
    text, _ = systemd_unit("--profile", "tp4-pp2-2node", "--node-rank", "1")
    assert shlex.split(directives(text)["ExecStart"][0])[-2:] == ["--node-rank", "1"]


def verify(unit_dir: Path, name: str) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`): the unit is not verified here")
    p = subprocess.run([tool, "verify", "--man=no", name], cwd=unit_dir, capture_output=True, text=True, timeout=60)
    version = int(re.search(r"systemd (\d+)", subprocess.run([tool, "--version"], capture_output=True, text=True).stdout).group(1))  # type: ignore[union-attr]
    allowed = ALLOWED_ON_OLD_SYSTEMD if version < 254 else ()
    complaints = [line for line in (p.stdout + p.stderr).splitlines() if line.strip() and not any(a in line for a in allowed)]
    assert p.returncode == 0 and not complaints, "\n".join(complaints)


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ("--profile", "dual-3090"),
    ("--profile", "dual-3090", "--set", "server.api_key_env=MY_KEY", "--", "--shutdown-timeout", "30"),
    ("--profile", "tp4-pp2-2node", "--node-rank", "0"),
    ("--profile", "dual-3090", "--set", 'chat.default_chat_template_kwargs={"enable_thinking": false, "x": "5% \\\\ $y"}'),
])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, args: tuple[str, ...]) -> None:
    text, _ = systemd_unit(*args)
    name = directives(text)["SyslogIdentifier"][0] + ".service"
    (tmp_path / name).write_text(text)
    verify(tmp_path, name)


def test_the_verifier_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    text, _ = systemd_unit("--profile", "dual-3090")
    broken = text.replace("ExecStart=", 'ExecStart=/nonexistent/launcher "unbalanced ', 1)
    (tmp_path / "broken.service").write_text(broken)
    with pytest.raises(AssertionError):
        verify(tmp_path, "broken.service")


@pytest.mark.slow
def test_the_units_command_serves_the_same_profile(tmp_path: Path) -> None:
    """ExecStart, parsed back and run with --dry-run from another directory (stand-in NVML: a 2 x RTX 3090 capture),
    prints the command `render` prints."""
    text, _ = systemd_unit("--profile", "dual-3090", "--set", "engine.max_model_len=131072")
    argv = shlex.split(directives(text)["ExecStart"][0].replace("%%", "%").replace("$$", "$"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    env.update({"PYTHONPATH": str(PYNVML_DIR),
                "LAUNCHER_TEST_NVML_INVENTORY": str(FIXTURES / "inventories" / "rtx3090x2-idle.json"), "HF_HUB_CACHE": str(tmp_path)})
    p = subprocess.run([*argv, "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rendered = subprocess.run([sys.executable, "-m", "launcher", "render", "--profile", "dual-3090", "--set", "engine.max_model_len=131072",
                               "--inventory", str(FIXTURES / "inventories" / "rtx3090x2-idle.json"), "--format", "json"],
                              env=env, capture_output=True, text=True, timeout=120)
    data = json.loads(rendered.stdout)
    assert shlex.split(p.stdout) == [f"{k}={v}" for k, v in data["env"].items()] + data["argv"]
