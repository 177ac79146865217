"""Hostile input, round 2 (issue 30, "Secrets and foreign files" and "Never hang, never exit 1"), at the real entry
point where a process is needed: exit 2 (or 5) with one line, never 1, never a hang, nothing secret shown, nothing
the user wrote overwritten. Each test names the class it covers; the inputs are a few of each class.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FIXTURES

pytestmark = pytest.mark.slow  # every test runs launcher as a process (the real entry point, with a deadline)
BENCH_RUN = FIXTURES / "bench" / "cpu-tiny-mtp"
ESC = "\x1b"


def launcher(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd)


def refused(p: subprocess.CompletedProcess, code: int = 2) -> str:
    """Exit `code`, no traceback, and the reason on one line (launcher's, or click's usage error)."""
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(("launcher: error:", "Error:"))]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr[-2000:]
    return p.stderr


def fake_vllm(tmp_path: Path) -> str:
    """A `vllm` on which launcher bench would run `vllm bench serve` (never reached in these tests)."""
    path = tmp_path / "bin" / "vllm"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\nexit 3\n")
    path.chmod(0o755)
    return str(path)


# ------------------------------------------------------------------ float options: finite or exit 2


@pytest.mark.parametrize("args", [
    ["wait", "--timeout", "nan"], ["wait", "--timeout", "inf"], ["wait", "--interval", "nan"], ["wait", "--timeout", "1e300"],
    ["smoke", "--request-timeout", "nan"], ["smoke", "--request-timeout", "inf"],
    ["serve", "--profile", "dual-3090", "--head-timeout", "nan"], ["serve", "--profile", "dual-3090", "--wait-timeout", "inf"],
    ["fit", "--gpu", "RTX 3090", "--gpu-memory", "nan"], ["fit", "--gpu", "RTX 3090", "--gpu-memory", "inf"],
    ["fit", "--gpu", "RTX 3090", "--gpu-memory", "1e300"], ["fit", "--gpu", "RTX 3090", "--gpu-memory", "-nan"],
    ["bench", "--timeout", "nan"],
])
def test_a_float_option_that_is_not_finite_is_exit_2(args: list[str]) -> None:
    err = refused(launcher(*args, timeout=30))
    assert "finite" in err or "maximum" in err or "not a number" in err


# ------------------------------------------------------------------ files: bounded, plain, well-formed


def _special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "dir.json").mkdir()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    digits = tmp_path / "digits.json"
    digits.write_text('{"driver_version": ' + "9" * 4400 + "}")
    huge = tmp_path / "huge.json"
    huge.write_text('{"driver_version": 1e400, "cuda_driver_version": "12.8", "gpus": []}')
    return {"/dev/zero": Path("/dev/zero"), "fifo": fifo, "dir": tmp_path / "dir.json", "deep": deep, "digits": digits, "1e400": huge}


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "dir", "deep", "digits", "1e400"])
def test_an_inventory_that_is_not_a_plain_bounded_json_file_is_exit_2(tmp_path: Path, kind: str) -> None:
    path = _special_files(tmp_path)[kind]
    refused(launcher("check", "--profile", "dual-3090", "--inventory", str(path), timeout=60))
    refused(launcher("gpus", "--inventory", str(path), timeout=60))


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_log_that_is_not_a_plain_file_is_exit_2(tmp_path: Path, kind: str) -> None:
    path = _special_files(tmp_path)[kind]
    err = refused(launcher("calibrate", str(path), "--profile", "dual-3090", "--gpu", "RTX 3090", timeout=60))
    assert "not a regular file" in err


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_replayed_run_file_that_is_not_a_plain_file_is_exit_2(tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(BENCH_RUN, run)
    target = run / "c1.metrics-after.txt"
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    refused(launcher("bench", "--replay", str(run), timeout=60))


def test_a_yaml_complex_key_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("extends: dual-3090\n? [a, b]\n: 1\n")
    refused(launcher("render", "--profile", str(tmp_path / "p.yaml")))
    refused(launcher("render", "--profile", "dual-3090", "--set", "engine={[1]: 2}"))


# ------------------------------------------------------------------ bench replay: someone else's directory


def _run(tmp_path: Path, **meta: object) -> Path:
    run = tmp_path / "run"
    shutil.copytree(BENCH_RUN, run)
    data = json.loads((run / "meta.json").read_text())
    data.update(meta)
    (run / "meta.json").write_text(json.dumps(data))
    return run


@pytest.mark.parametrize("profile", ["/etc/passwd", "../../etc/hostname", str(FIXTURES / "inventories" / "rtx3090x2-idle.json"), "x.yaml"])
def test_a_replayed_meta_json_cannot_make_launcher_read_a_file(tmp_path: Path, profile: str) -> None:
    p = launcher("bench", "--replay", str(_run(tmp_path, profile=profile)))
    assert p.returncode == 0, p.stderr
    assert "root:" not in p.stdout + p.stderr and "not a profile name" in p.stdout + p.stderr


@pytest.mark.parametrize("meta", [{"mtp_k": "2"}, {"mtp_k": True}, {"input_len": [1]}, {"label": {"a": 1}}, {"model": 5},
                                  {"gpu": ["RTX 3090"]}, {"tensor_parallel_size": 1.5}, {"url": 7}])
def test_wrong_json_types_in_meta_json_are_exit_2(tmp_path: Path, meta: dict) -> None:
    key = next(iter(meta))
    err = refused(launcher("bench", "--replay", str(_run(tmp_path, **meta))))
    assert f"meta.json: {key}:" in err


def test_non_finite_metrics_counters_are_not_an_internal_error(tmp_path: Path) -> None:
    run = _run(tmp_path)
    after = run / "c1.metrics-after.txt"
    text = after.read_text()
    text = text.replace("vllm:spec_decode_num_drafts_total{", "vllm:spec_decode_num_drafts_total{x=\"1\",", 1)
    after.write_text(text + 'vllm:spec_decode_num_drafts_total{model_name="x"} NaN\n'
                     'vllm:spec_decode_num_accepted_tokens_total{model_name="x"} +Inf\n'
                     'vllm:spec_decode_num_draft_tokens_total{model_name="x"} 1e999\n')
    p = launcher("bench", "--replay", str(run))
    assert p.returncode in (0, 5) and "Traceback" not in p.stderr, p.stderr[-2000:]


@pytest.mark.parametrize("target", ["c1.json", "meta.json", "c1.metrics-before.txt"])
def test_json_and_chart_never_overwrite_a_runs_own_files(tmp_path: Path, target: str) -> None:
    run = _run(tmp_path)
    before = (run / target).read_bytes()
    for option, name in (("--json", target), ("--chart", target.rsplit(".", 1)[0] + ".svg")):
        existing = run / name
        if not existing.exists():
            existing.write_bytes(before)
        keep = existing.read_bytes()
        refused(launcher("bench", "--replay", str(run), option, str(existing)))
        assert existing.read_bytes() == keep
    assert (run / target).read_bytes() == before


def test_json_and_chart_replace_only_what_launcher_wrote(tmp_path: Path) -> None:
    run = _run(tmp_path)
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "data"}')
    refused(launcher("bench", "--replay", str(run), "--json", str(mine)))
    assert mine.read_text() == '{"my": "data"}'
    report, chart = tmp_path / "report.json", tmp_path / "chart.svg"
    for _ in range(2):  # written, then replaced by the next run
        p = launcher("bench", "--replay", str(run), "--json", str(report), "--chart", str(chart))
        assert p.returncode == 0, p.stderr
    assert json.loads(report.read_text())["format"] == "launcher-bench/1" and chart.read_text().startswith("<svg ")


def test_two_benches_cannot_keep_into_one_directory(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / ".launcher-bench").write_text("pid 1\n")  # another bench claimed it (and is still writing: no meta.json yet)
    err = refused(launcher("bench", "--keep", str(keep), "--url", "http://127.0.0.1:9", "--vllm", fake_vllm(tmp_path)))
    assert "another launcher bench" in err


# ------------------------------------------------------------------ credentials in URLs, secrets in names


SECRET_URLS = ["http://alice:s3cr3tpw@127.0.0.1:9", "http://127.0.0.1:9/?token=s3cr3tpw", "http://127.0.0.1:9/?a=1&key=s3cr3tpw#s3cr3tpw",
               "http://s3cr3tpw@127.0.0.1:9/v1"]


@pytest.mark.parametrize("url", SECRET_URLS)
@pytest.mark.parametrize("command", [["wait", "--timeout", "1"], ["smoke", "--request-timeout", "1"], ["smoke", "--json"], ["bench"]])
def test_credentials_in_a_url_are_never_printed(tmp_path: Path, url: str, command: list[str]) -> None:
    if command[0] == "bench":
        command = [*command, "--vllm", fake_vllm(tmp_path)]
    p = launcher(*command, "--url", url, timeout=60)
    assert p.returncode in (2, 5), p.stderr[-2000:]
    assert "s3cr3tpw" not in p.stdout + p.stderr and "***" in p.stdout + p.stderr


def test_credentials_in_a_replayed_url_are_not_shown_or_saved(tmp_path: Path) -> None:
    run = _run(tmp_path, url="http://bob:s3cr3tpw@gpu-box:8000/?token=s3cr3tpw")
    out = tmp_path / "r.json"
    p = launcher("bench", "--replay", str(run), "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "s3cr3tpw" not in p.stdout + p.stderr + out.read_text()


@pytest.mark.parametrize("name, value", [("DB_PASS", "pw-1234567"), ("MY_AUTH", "Basic abcdef"), ("GITHUB_PAT", "abcd1234"),
                                         ("PAT_FOR_CI", "abcd1234"), ("UPSTREAM", "https://u:pw-1234567@example.com/x"),
                                         ("SOMETHING", "hf_abcdefghijklmnopqrstuvwx")])
@pytest.mark.parametrize("fmt", ["shell", "env", "json", "yaml", "compose", "k8s", "systemd"])
def test_secret_names_and_values_beyond_the_old_heuristic_render_by_reference(name: str, value: str, fmt: str) -> None:
    p = launcher("render", "--profile", "dual-3090", "--format", fmt, "--set", f"env.{name}={value}")
    assert p.returncode == 0, p.stderr
    assert value not in p.stdout + p.stderr


# ------------------------------------------------------------------ terminal escapes from outside


def test_gpu_and_process_names_from_an_inventory_reach_the_terminal_escaped(tmp_path: Path) -> None:
    inv = json.loads((FIXTURES / "inventories" / "rtx3090x2-idle.json").read_text())
    inv["gpus"][0]["name"] = f"{ESC}]0;pwned{ESC}\\NVIDIA GeForce RTX 3090{ESC}[2J"
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(inv))
    for args in (["gpus", "--inventory", str(path)], ["check", "--profile", "dual-3090", "--inventory", str(path)],
                 ["profiles", "--inventory", str(path)]):
        p = launcher(*args)
        assert ESC not in p.stdout + p.stderr, args


def test_a_profile_description_and_name_reach_the_terminal_escaped(tmp_path: Path) -> None:
    d = tmp_path / "profiles"
    d.mkdir()
    (d / f"box{ESC}[31m.yaml").write_text('extends: dual-3090\ndescription: "Evil \\e]0;x\\a box. More \\u009b2J"\n')
    for args in (["profiles", "--profiles-dir", str(d)], ["explain", "--profile", f"box{ESC}[31m", "--profiles-dir", str(d)],
                 ["show", "--profile", f"box{ESC}[31m", "--profiles-dir", str(d)]):
        p = launcher(*args)
        assert p.returncode == 0, p.stderr
        assert ESC not in p.stdout + p.stderr and "\x9b" not in p.stdout + p.stderr, args


def test_a_bench_label_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    p = launcher("bench", "--replay", str(_run(tmp_path, label=f"run {ESC}[2J{ESC}]0;x{chr(7)}")), "--chart-term")
    assert p.returncode == 0, p.stderr
    assert ESC not in p.stdout + p.stderr


# ------------------------------------------------------------------ silently ignored, misnamed


@pytest.mark.parametrize("how", [("--set", "extends=tp4"), ("LAUNCHER__EXTENDS", "tp4"), ("LAUNCHER_SET", "extends=tp4")])
def test_extends_cannot_be_overridden_silently(how: tuple[str, str]) -> None:
    args, env = (list(how), {}) if how[0] == "--set" else ([], {how[0]: how[1]})
    err = refused(launcher("render", "--profile", "dual-3090", *args, env=env))
    assert "extends" in err


def test_a_missing_launcher_profiles_dir_is_exit_2(tmp_path: Path) -> None:
    err = refused(launcher("render", "--profile", "dual-3090", env={"LAUNCHER_PROFILES_DIR": str(tmp_path / "nope")}))
    assert "LAUNCHER_PROFILES_DIR" in err


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_a_fifo_or_directory_as_a_profile_is_named_as_such(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "profiles"
    d.mkdir()
    target = d / "odd.yaml"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    for args in (["--profile", str(target)], ["--profile", "odd", "--profiles-dir", str(d)]):
        err = refused(launcher("render", *args, timeout=30))
        assert "does not exist" not in err and ("FIFO" in err or "directory" in err), err


def test_a_short_option_has_no_yaml_config_form() -> None:
    err = refused(launcher("render", "--profile", "dual-3090", "--format", "yaml", "--", "-O3"))
    assert "-O3" in err and "short option" in err
