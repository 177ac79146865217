"""`launcher bench` through the CLI: replay, bad input (one line, exit 2 or 5), the live path with a
stand-in for `vllm bench serve` that writes a recorded result, and `serve --bench`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.errors import ProfileError
from launcher.live import bench as analysis
from launcher.live.runtime import Runtime
from tests.fakes import FakeVllm
from tests.helpers import FIXTURES

BENCH = FIXTURES / "bench"


def run(*args: str, obj=None, env=None):
    return CliRunner().invoke(cli, list(args), obj=obj, env=env)


def launcher(*args: str, env=None) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process (its error boundary turns errors into exit codes)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, env=full_env,
                          cwd=FIXTURES.parents[1], timeout=120)


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """The error line: the last line, the only one that says `error` (progress lines may precede it)."""
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr and lines, p.stdout + p.stderr
    assert lines[-1].startswith("launcher: error: ") and all("error" not in ln for ln in lines[:-1]), lines
    return lines[-1]


def test_replay_prints_the_table() -> None:
    result = run("bench", "--replay", str(BENCH / "cpu-tiny-mtp"))
    assert result.exit_code == 0, result.output
    assert "bench cpu-tiny MTP k=2" in result.output and "roofline: n/a: a CPU profile" in result.output


def test_replay_json_to_stdout_and_two_runs(tmp_path: Path) -> None:
    result = run("bench", "--replay", str(BENCH / "cpu-tiny-mtp"), "--replay", str(BENCH / "cpu-tiny-nomtp"), "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["format"] == analysis.FORMAT and [r["meta"]["mtp_k"] for r in doc["runs"]] == [2, 0]


def test_replay_with_profile_gpu_and_charts(tmp_path: Path) -> None:
    out, svg = tmp_path / "r.json", tmp_path / "c.svg"
    result = run("bench", "--replay", str(BENCH / "cpu-tiny-nomtp"), "--profile", "dual-3090", "--gpu", "RTX 3090",
                 "--json", str(out), "--chart", str(svg), "--chart-term")
    assert result.exit_code == 0, result.output
    roof = json.loads(out.read_text())["runs"][0]["roofline"]
    assert roof["gpu_model"] == "RTX 3090" and roof["fraction"] > 0
    assert svg.read_text().startswith("<svg") and "output tokens/s per concurrency level" in result.output


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), [
    (["--num-prompts", "0"], "--num-prompts"),
    (["-n", "-3"], "-n"),
    (["--concurrency", "0"], "each level must be 1 or more"),
    (["--concurrency", "1,x"], "comma-separated whole numbers"),
    (["--chart", "c.gif"], ".svg (built in) or .png"),
    (["--output-len", "0"], "--output-len"),
])
def test_bad_options_exit_2_with_one_line(args: list[str], needle: str) -> None:
    p = launcher("bench", *args)
    assert p.returncode == 2
    assert needle in p.stderr and "Traceback" not in p.stderr and p.stdout == ""


@pytest.mark.slow
def test_without_vllm_exit_2_says_what_to_install(tmp_path: Path) -> None:
    p = launcher("bench", "--url", "http://127.0.0.1:9", env={"PATH": str(tmp_path)})
    assert p.returncode == 2
    line = one_line_error(p)
    assert "no `vllm` on PATH" in line and "pip install 'vllm[bench]'" in line
    p = launcher("bench", "--vllm", "/nonexistent/vllm")
    assert p.returncode == 2 and "--vllm /nonexistent/vllm: not found" in one_line_error(p)


@pytest.mark.slow
def test_python_without_vllm_is_exit_2() -> None:
    p = launcher("bench", "--vllm", sys.executable)  # launcher's own python has no vllm
    assert p.returncode == 2 and "has no vllm module" in one_line_error(p)


@pytest.mark.slow
def test_unreachable_url_exit_5() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = launcher("bench", "--url", f"http://127.0.0.1:{port}", "--vllm", "/bin/true")
    assert p.returncode == 5
    assert "is not ready to benchmark: connection refused" in one_line_error(p)


@pytest.mark.slow
def test_server_without_metrics_exit_5() -> None:
    with FakeVllm(metrics_status=404) as fake:
        p = launcher("bench", "--url", fake.url, "--vllm", "/bin/true")
    assert p.returncode == 5
    assert "/metrics answered 404" in one_line_error(p)


STAND_IN = """#!{python}
# Stands in for `vllm bench serve`: records its argv, writes the recorded real result of that level.
import json, shutil, sys
argv = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(argv) + "\\n")
assert argv[:2] == ["bench", "serve"], argv
def opt(name):
    return argv[argv.index(name) + 1]
c = opt("--max-concurrency")
shutil.copy({fixtures!r} + "/c" + c + ".json", opt("--result-dir") + "/" + opt("--result-filename"))
"""


def stand_in(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "argv.log"
    script = tmp_path / "bin" / "vllm"
    script.parent.mkdir()
    script.write_text(STAND_IN.format(python=sys.executable, log=str(log), fixtures=str(BENCH / "cpu-tiny-mtp")))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


@pytest.mark.slow
def test_live_run_writes_the_layout_and_reports(tmp_path: Path) -> None:
    vllm, log = stand_in(tmp_path)
    keep, out = tmp_path / "run", tmp_path / "r.json"
    env = {"PATH": f"{vllm.parent}{os.pathsep}{os.environ['PATH']}"}
    with FakeVllm(model="tiny-qwen3-next-mtp", root="/models/tiny") as fake:
        result = run("bench", "--url", fake.url + "/v1", "--concurrency", "1,2", "-n", "4", "--input-len", "32", "--output-len", "16",
                     "--keep", str(keep), "--json", str(out), "--label", "stand-in", env=env)
    assert result.exit_code == 0, result.output
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    for c, argv in zip((1, 2), calls, strict=True):
        assert argv == ["bench", "serve", *analysis.bench_serve_args(
            url=fake.url, model="/models/tiny", served_model_name="tiny-qwen3-next-mtp", tokenizer="/models/tiny",
            input_len=32, output_len=16, num_prompts=4, concurrency=c, result_dir=str(keep))]
    meta = json.loads((keep / "meta.json").read_text())
    assert list(meta) == list(analysis.META_KEYS)
    assert meta["url"] == fake.url and meta["model"] == "tiny-qwen3-next-mtp" and meta["label"] == "stand-in"
    assert meta["input_len"] == 32 and meta["profile"] is None
    for c in (1, 2):
        assert (keep / f"c{c}.json").is_file()
        assert "vllm:spec_decode_num_drafts_total" in (keep / f"c{c}.metrics-before.txt").read_text()
        assert (keep / f"c{c}.metrics-after.txt").is_file()
    doc = json.loads(out.read_text())
    assert [lv["concurrency"] for lv in doc["runs"][0]["levels"]] == [1, 2]
    # the stand-in sent no request: the fake server's counters did not move
    assert doc["runs"][0]["levels"][0]["spec_decode"]["drafts"] == 0
    # the same directory replays to the same report
    again = run("bench", "--replay", str(keep), "--json", "-")
    assert json.loads(again.output)["runs"][0]["levels"] == doc["runs"][0]["levels"]
    assert "launcher: bench: concurrency 1, 4 prompts: " in result.output
    # a kept run is not overwritten or mixed with a new one
    again = run("bench", "--url", fake.url, "--keep", str(keep), env=env)
    assert isinstance(again.exception, ProfileError) and "already holds a run (c1.json)" in str(again.exception)


@pytest.mark.slow
def test_live_run_failure_of_the_load_generator_is_exit_5(tmp_path: Path) -> None:
    script = tmp_path / "vllm"
    script.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named pandas' >&2\nexit 1\n")
    script.chmod(0o755)
    with FakeVllm() as fake:
        p = launcher("bench", "--url", fake.url, "--vllm", str(script), "-c", "1")
    assert p.returncode == 5
    line = one_line_error(p)
    assert "vllm bench serve failed at concurrency 1 (exit 1): ModuleNotFoundError: No module named pandas" in line
    assert "pip install 'vllm[bench]'" in line


def test_serve_bench_hands_a_hook_to_the_supervisor(tmp_path: Path) -> None:
    from launcher.hardware.inventory import load_inventory

    vllm, _ = stand_in(tmp_path)
    supervised = []

    def supervise(argv, env, url, timeout, smoke, **kw):
        supervised.append(kw)
        return 0

    inventory = load_inventory(FIXTURES / "inventories" / "h200x2.json")
    rt = Runtime(probe=lambda: inventory, exec_fn=lambda r: None, supervise_fn=supervise)
    env = {"PATH": f"{vllm.parent}{os.pathsep}{os.environ['PATH']}"}
    result = run("serve", "--profile", "dual-3090", "--skip-checks", "--bench-args", "-c 1 --json x.json", obj=rt, env=env)
    assert result.exit_code == 0, result.output
    assert callable(supervised[0]["after_ready"])
    result = run("serve", "--profile", "dual-3090", "--wait", obj=rt, env=env)
    assert "after_ready" not in supervised[1]


@pytest.mark.slow
@pytest.mark.parametrize(("bench_args", "needle"), [
    ("--replay .", "--replay does not apply"),
    ("--concurrency 0", "each level must be 1 or more"),
    ("--json -", "would mix with vLLM's output"),
    ("--no-such-option", "No such option"),
    ('"unbalanced', "--bench-args: No closing quotation"),
])
def test_serve_bench_args_are_checked_before_the_start(bench_args: str, needle: str, tmp_path: Path) -> None:
    started = []
    rt = Runtime(probe=lambda: None, exec_fn=started.append, supervise_fn=lambda *a, **k: started.append(a) or 0)
    result = run("serve", "--profile", "cpu-tiny", "--bench-args", bench_args, obj=rt)
    code = getattr(result.exception, "exit_code", result.exit_code)
    assert code == 2, result.output
    assert needle in result.output + str(result.exception) and not started


def test_serve_bench_without_vllm_is_exit_2_before_the_start(tmp_path: Path) -> None:
    started = []
    rt = Runtime(probe=lambda: None, exec_fn=started.append, supervise_fn=lambda *a, **k: started.append(a) or 0)
    result = run("serve", "--profile", "cpu-tiny", "--bench", obj=rt, env={"PATH": str(tmp_path)})
    assert getattr(result.exception, "exit_code", None) == 2 and not started
    assert "starts vLLM with `python`, which is not on PATH" in str(result.exception)
