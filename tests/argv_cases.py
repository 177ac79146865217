"""The table of good and broken `vllm serve` argvs (after `vllm serve`), with the findings
launcher must report per vLLM version. tests/unit/test_engine.py checks launcher against it;
tests/engine/test_real_parser.py feeds the same argvs to the real vLLM parsers, which must accept
exactly those with no expected error.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from tests.helpers import card_command

M = "havenoammo/Qwen3.6-27B-INT8-MTP"
V32, V33 = "0.32.0", "0.33.0"
BOTH = (V32, V33)

# The two commands of the model card (tests/fixtures/model-card-commands.txt), after `vllm serve`.
CARD_MIN = card_command("minimum")[1][2:]
CARD_FULL = card_command("full")[1][2:]
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
