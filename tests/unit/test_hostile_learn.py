"""`engines learn` with a hostile installed vLLM (issue 30, "Secrets and foreign files"): the version string it
reports cannot write outside the cache, two learns never share a temporary file, and a shipped schema wins
over a learned one of the same release whatever local label the learned file carries.

The "vLLM" here is a stand-in Python that writes the shipped 0.33.0 schema (the real introspection's output)
with the version under test, as the real introspection would when its vLLM reports that version.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from launcher import engine
from launcher.engine.learn import learn_schema
from launcher.engine.schemas import forget_learned
from launcher.errors import EngineStartError
from tests.helpers import REPO

SHIPPED = REPO / "launcher" / "engines" / "vllm-0.33.0.json"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    forget_learned()
    yield root / "launcher" / "engines"  # type: ignore[misc]
    forget_learned()


def fake_vllm(tmp_path: Path, reported: str) -> str:
    """A `python` whose introspection writes the shipped schema with `reported` as vLLM's version."""
    data = json.loads(SHIPPED.read_text())
    data["meta"]["vllm_version"] = reported
    (tmp_path / "schema.json").write_text(json.dumps(data))
    script = tmp_path / "python"
    script.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        f"shutil.copy({str(tmp_path / 'schema.json')!r}, out)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.slow
@pytest.mark.parametrize("reported", ["0.34.0/../../../escaped", "../../0.34.0", "0.34.0\nx", "0.34.0/x", "not-a-version", ""])
def test_a_reported_version_cannot_name_a_file_elsewhere(tmp_path: Path, reported: str) -> None:
    out = tmp_path / "deep" / "er" / "cache"
    with pytest.raises(EngineStartError, match="not a vLLM release number"):
        learn_schema(fake_vllm(tmp_path, reported), "0.34.0", out_dir=out)
    written = [p for p in tmp_path.rglob("*.json") if p.name != "schema.json"]
    assert written == []


@pytest.mark.slow
@pytest.mark.parametrize("hint", ["0.34.0/../../x", "0.34.0\x1b[2J"])
def test_the_package_metadata_version_cannot_either(tmp_path: Path, hint: str) -> None:
    with pytest.raises(EngineStartError, match="not a vLLM release number"):
        learn_schema(fake_vllm(tmp_path, "0.34.0"), hint, out_dir=tmp_path / "cache")


@pytest.mark.slow
def test_another_learn_in_progress_does_not_break_this_one(tmp_path: Path) -> None:
    """The earlier code wrote every learn through one `vllm-X.json.tmp`; another learn's (here: a directory
    in its place) broke this one with an internal error."""
    out = tmp_path / "cache"
    (out / "vllm-0.34.0.json.tmp").mkdir(parents=True)
    learned = learn_schema(fake_vllm(tmp_path, "0.34.0"), "0.34.0", out_dir=out)
    assert learned.path == out / "vllm-0.34.0.json" and learned.version == "0.34.0"
    assert sorted(p.name for p in out.iterdir()) == ["vllm-0.34.0.json", "vllm-0.34.0.json.tmp"]  # no temporary left behind


@pytest.mark.slow
def test_a_local_label_learns_the_release(tmp_path: Path, cache: Path) -> None:
    learned = learn_schema(fake_vllm(tmp_path, "0.35.1+cu130"), "0.35.1+cu130", out_dir=cache)
    assert learned.path.name == "vllm-0.35.1.json"


@pytest.mark.parametrize("label", ["0.33.0+cu130", "0.33.0+local.build.7"])
def test_a_shipped_schema_wins_over_a_learned_local_label(cache: Path, label: str) -> None:
    data = json.loads(SHIPPED.read_text())
    data["meta"]["vllm_version"] = label
    data["options"] = dict(list(data["options"].items())[:3])  # a learned file that differs: it must not be what launcher uses
    cache.mkdir(parents=True)
    (cache / f"vllm-{label}.json").write_text(json.dumps(data))
    forget_learned()
    assert label not in engine.supported_versions() and engine.learned_versions() == []
    for asked in (label, "0.33.0"):
        schema = engine.load_engine(engine.resolve_version(asked))
        assert schema.origin == "shipped" and schema.version == "0.33.0"
        assert len(schema.options) > 3


@pytest.mark.parametrize("name", ["vllm-0.34.0\nx.json", "vllm-0.34.0 x.json", "vllm-0.34.0\x1b.json"])
def test_a_cache_file_with_an_odd_name_is_not_a_version(cache: Path, name: str) -> None:
    data = json.loads(SHIPPED.read_text())
    cache.mkdir(parents=True)
    (cache / name).write_text(json.dumps(data))
    forget_learned()
    assert engine.learned_versions() == []
