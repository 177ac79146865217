"""What a newcomer meets on the command line (issue 17): each row of the issue's table, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.cli import cli, main
from launcher.errors import LauncherError
from tests.helpers import without_cache_env


class Ran:
    """A CliRunner result as `launcher.cli.main` ends it: a LauncherError is its one line on stderr and its exit code."""

    def __init__(self, result) -> None:  # type: ignore[no-untyped-def]
        self.result = result
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exit_code = result.exit_code
        if isinstance(result.exception, LauncherError):
            self.stderr += f"launcher: error: {result.exception}\n"
            self.exit_code = result.exception.exit_code
        elif result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        self.output = self.stdout + self.stderr


def run(*args: str, obj=None, env=None) -> Ran:  # type: ignore[no-untyped-def]
    return Ran(CliRunner().invoke(cli, list(args), obj=obj, env=env))


def launcher_process(*args: str, stdout: int | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "launcher", *args], stdout=stdout, stderr=subprocess.PIPE, env=full_env)


# ------------------------------------------------------------------ a closed pipe ends quietly


@pytest.mark.slow
@pytest.mark.parametrize("args", [("profiles",), ("fit", "--profile", "dual-3090", "--gpu", "RTX 3090")])
@pytest.mark.parametrize("debug", ["", "1"])
def test_closed_stdout_ends_quietly_with_0(args: tuple[str, ...], debug: str) -> None:
    """`launcher profiles | head -1`: the reader is gone before launcher writes; no error, exit 0."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write gets EPIPE, deterministically
    try:
        proc = launcher_process(*args, stdout=write_end, env={"LAUNCHER_DEBUG": debug})
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert err == b""


@pytest.mark.slow
def test_head_reads_the_first_line_and_launcher_exits_0() -> None:
    """The shell pipeline itself, as the issue ran it."""
    p = subprocess.run(["bash", "-c", f"{sys.executable} -m launcher profiles | head -1; echo rc=${{PIPESTATUS[0]}}"],
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.splitlines() == [p.stdout.splitlines()[0], "rc=0"] and p.stdout.startswith("NAME")
    assert "error" not in p.stderr


def test_in_process_closed_pipe_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    out = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(SystemExit) as exc:
        main(["profiles"])
    assert exc.value.code == 0
    out.close()


def test_a_broken_pipe_that_is_not_stdout_stays_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a closed stdout is quiet: EPIPE from anywhere else (a socket) is still reported, exit 1."""
    import launcher.commands.profiles as profiles_cmd

    def broken(*args: object, **kwargs: object) -> list[dict[str, object]]:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(profiles_cmd, "profile_rows", broken)
    read_end, write_end = os.pipe()  # stdout is a healthy pipe: its reader is still there
    out = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", out)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["profiles"])
        assert exc.value.code == 1
    finally:
        out.close()
        os.close(read_end)


# ------------------------------------------------------------------ --help matches the commands


def test_help_lists_every_render_format() -> None:
    from launcher.commands.render import render

    formats = next(p for p in render.params if p.name == "fmt").type.choices  # type: ignore[attr-defined]
    text = run("--help").output
    line = " ".join(text.split("render", 1)[1].split("diff", 1)[0].split())
    for fmt in formats:
        assert fmt in line, f"`launcher --help` does not name render format {fmt}: {line}"


# ------------------------------------------------------------------ no GPU here


def no_nvml():  # type: ignore[no-untyped-def]
    """The real probe on a machine whose NVML library cannot be loaded (what a laptop or CI runner gives)."""
    from launcher.hardware.gpu import probe

    class Nvml:
        class NVMLError(Exception):
            pass

        def nvmlInit(self) -> None:
            raise self.NVMLError("NVML Shared Library Not Found")

    return probe(nvml=Nvml())


def no_gpu_runtime():  # type: ignore[no-untyped-def]
    from launcher.live.runtime import Runtime

    calls: list[object] = []
    return Runtime(probe=no_nvml, exec_fn=calls.append), calls


def test_serve_dry_run_without_gpus_prints_the_command_with_a_warning() -> None:
    runtime, calls = no_gpu_runtime()
    result = run("serve", "--profile", "dual-3090", "--dry-run", obj=runtime)
    assert result.exit_code == 0, result.output
    assert without_cache_env(result.stdout).startswith("CUDA_VISIBLE_DEVICES=0,1 vllm serve havenoammo/Qwen3.6-27B-INT8-MTP ")
    assert "WARNING: --dry-run: the GPU preflight could not run" in result.stderr
    assert not calls


def test_serve_without_gpus_still_refuses_to_start() -> None:
    runtime, calls = no_gpu_runtime()
    result = run("serve", "--profile", "dual-3090", obj=runtime)
    assert result.exit_code == 3 and not calls
    assert "--skip-checks" in result.stderr


def test_serve_dry_run_auto_without_gpus_cannot_choose() -> None:
    runtime, _ = no_gpu_runtime()
    assert run("serve", "--profile", "auto", "--dry-run", obj=runtime).exit_code == 3


@pytest.mark.parametrize("args", [("fit", "--profile", "dual-3090"), ("gpus",), ("profiles", "--live"), ("check", "--profile", "tp4")])
def test_no_gpu_hint_names_both_ways_to_an_answer(args: tuple[str, ...]) -> None:
    runtime, _ = no_gpu_runtime()
    result = run(*args, obj=runtime)
    assert result.exit_code == 3
    assert "launcher fit --profile P --gpu" in result.stderr and "--gpu-memory GIB --compute-capability X.Y" in result.stderr
    assert "launcher check --inventory inventory.json" in result.stderr


# ------------------------------------------------------------------ profiles say what each is for


def test_profiles_table_has_a_short_description_per_profile() -> None:
    result = run("profiles")
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split()[-1] == "DESCRIPTION"
    start = header.index("DESCRIPTION")
    described = {line.split()[0]: line[start:] for line in rows}
    assert "two TP 4 engines" in described["tp4x2"]
    assert "2 x H200" in described["h200x2-tiny"]
    for name, text in described.items():
        assert text.strip(), f"{name} has no description"
        assert len(text) <= 76


def test_profiles_markdown_and_json_carry_the_summary() -> None:
    md = run("profiles", "--format", "markdown").stdout
    assert md.splitlines()[0].endswith("| description |")
    rows = {r["name"]: r for r in __import__("json").loads(run("profiles", "--format", "json").stdout)}
    assert rows["tp4x2"]["summary"].startswith("8 GPUs as two TP 4 engines")
    assert rows["tp4x2"]["description"].startswith(rows["tp4x2"]["summary"])


@pytest.mark.parametrize("text,expected", [
    ("One line. Then more.", "One line"),
    ("vLLM 0.25.1 on 2 x H200. More", "vLLM 0.25.1 on 2 x H200"),
    ("", ""),
    ("word " * 40, ("word " * 14).strip() + "..."),
])
def test_summary_is_the_first_sentence_cut_at_a_word(text: str, expected: str) -> None:
    from launcher.commands.profiles import summary

    assert summary(text) == expected


# ------------------------------------------------------------------ an API key variable that is not set


def h200x2_runtime():  # type: ignore[no-untyped-def]
    from launcher.hardware.inventory import load_inventory
    from launcher.live.exec import child_environment
    from launcher.live.runtime import Runtime
    from tests.helpers import FIXTURES

    inventory = load_inventory(FIXTURES / "inventories" / "h200x2.json")
    # exec stops short of os.execvpe: the environment vLLM would get is built, as the real exec builds it
    return Runtime(probe=lambda: inventory, exec_fn=lambda r: child_environment(r, os.environ))


@pytest.mark.parametrize("args", [
    ("render", "--profile", "dual-3090"),
    ("render", "--profile", "dual-3090", "--format", "compose"),
    ("explain", "--profile", "dual-3090"),
    ("serve", "--profile", "dual-3090", "--dry-run"),
])
def test_unset_api_key_variable_is_warned_where_the_command_is_shown(args: tuple[str, ...]) -> None:
    key = ("--set", "server.api_key_env=NEWCOMER_KEY")
    missing = run(*args, *key, obj=h200x2_runtime(), env={"NEWCOMER_KEY": None})
    assert missing.exit_code == 0, missing.output
    assert "launcher: warning: server.api_key_env: NEWCOMER_KEY is not set in this environment" in missing.stderr
    present = run(*args, *key, obj=h200x2_runtime(), env={"NEWCOMER_KEY": "sk-secret-value"})
    assert present.exit_code == 0 and "NEWCOMER_KEY is not set" not in present.stderr
    assert "sk-secret-value" not in present.output


def test_k8s_takes_the_key_from_a_secret_so_no_warning() -> None:
    result = run("render", "--profile", "dual-3090", "--format", "k8s", "--set", "server.api_key_env=NEWCOMER_KEY", env={"NEWCOMER_KEY": None})
    assert result.exit_code == 0 and "is not set" not in result.stderr


def test_serve_without_the_key_still_refuses() -> None:
    result = run("serve", "--profile", "dual-3090", "--set", "server.api_key_env=NEWCOMER_KEY", obj=h200x2_runtime(), env={"NEWCOMER_KEY": None})
    assert result.exit_code == 2 and "NEWCOMER_KEY is not set" in result.stderr


# ------------------------------------------------------------------ colour where a person reads


def on_a_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """`launcher ARGS` with stdout and stderr on a pseudo-terminal (as in an interactive shell); what it wrote."""
    import pty

    master, slave = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER") and k != "NO_COLOR"}
    full_env.update({"TERM": "xterm", **(env or {})})
    proc = subprocess.Popen([sys.executable, "-m", "launcher", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=full_env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


DESKTOP = ("--inventory", "tests/fixtures/inventories/rtx3090x2-desktop.json")


@pytest.mark.slow
def test_check_is_coloured_on_a_terminal() -> None:
    from tests.helpers import REPO

    text = on_a_terminal("check", "--profile", "dual-3090", "--inventory", str(REPO / DESKTOP[1]), "--set", "engine.max_model_len=131072")
    assert "\x1b[32mPASS\x1b[0m  visible-devices" in text
    assert "\x1b[33mWARN\x1b[0m  memory-free" in text
    assert "result: \x1b[33mrunnable with 2 warnings\x1b[0m" in text


@pytest.mark.slow
def test_fit_bar_and_verdict_are_coloured_on_a_terminal() -> None:
    text = on_a_terminal("fit", "--profile", "dual-3090", "--gpu", "RTX 3090", "--set", "engine.max_model_len=131072")
    assert "[\x1b[34mWWW" in text and "\x1b[32mKKK" in text
    assert "verdict: \x1b[33mmarginal\x1b[0m" in text or "verdict: \x1b[32mfits\x1b[0m" in text


@pytest.mark.slow
def test_no_color_turns_it_off_on_a_terminal() -> None:
    from tests.helpers import REPO

    text = on_a_terminal("check", "--profile", "dual-3090", "--inventory", str(REPO / DESKTOP[1]), env={"NO_COLOR": "1"})
    assert "PASS  visible-devices" in text and "\x1b[" not in text
    assert "\x1b[" not in on_a_terminal("fit", "--profile", "dual-3090", "--gpu", "RTX 3090", env={"NO_COLOR": "1"})


@pytest.mark.slow
def test_piped_output_is_plain() -> None:
    from tests.helpers import REPO

    for args in (("check", "--profile", "dual-3090", "--inventory", str(REPO / DESKTOP[1])), ("fit", "--profile", "dual-3090", "--gpu", "RTX 3090")):
        result = run(*args)
        assert "\x1b[" not in result.output and ("PASS  " in result.output or "verdict: " in result.output)
    p = subprocess.run([sys.executable, "-m", "launcher", "check", "--profile", "dual-3090", "--inventory", str(REPO / DESKTOP[1])],
                       capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "NO_COLOR"})
    assert "\x1b[" not in p.stdout and "WARN  memory-free" in p.stdout


# ------------------------------------------------------------------ engines: what matters first


def test_engines_lists_what_changed_for_the_profiles_first() -> None:
    text = run("engines").stdout
    for block in text.split("\nvLLM ")[1:]:
        head, _, rest = block.partition("  for this model's profiles (flags and values they use):\n")
        assert rest, block[:200]
        mattering, _, others = rest.partition("  every other difference:\n")
        assert others, "the rest follows what matters"
        for line in mattering.splitlines():
            flag = line.split()[0].rstrip(":")
            if flag.startswith("--"):
                assert f"    {flag}:" not in others and f"newly deprecated: {flag}:" not in others  # said once
    assert "--mamba-cache-mode: no longer accepts 'all' (used by dual-3090-full)" in text  # 0.25.1 -> 0.32.0


def test_engines_relevance_follows_the_profiles_values() -> None:
    from launcher.commands.engines import relevant_lines

    diff = {"removed": ["--gone"], "deprecated": {"--old": "use --new"}, "added": [], "spellings_added": {}, "spellings_removed": {},
            "changed": {"--kv-cache-dtype": {"choices": [["fp8_e4m3", "auto"], ["auto"]]}, "--unused": {"choices": [["a"], ["b"]]}},
            "late": {"tool_call_parsers": {"added": [], "removed": ["qwen3_xml"]}}}
    used = {"--gone": {"p1": None}, "--kv-cache-dtype": {"p1": "fp8_e4m3", "p2": "auto"}, "--tool-call-parser": {"p2": "qwen3_xml"}}
    lines, covered = relevant_lines(diff, used)
    assert lines == ["--gone: removed (used by p1)", "--kv-cache-dtype: no longer accepts 'fp8_e4m3' (used by p1)",
                     "tool call parsers: 'qwen3_xml' is gone (used by p2)"]
    assert covered == {"--gone", "--kv-cache-dtype"}
