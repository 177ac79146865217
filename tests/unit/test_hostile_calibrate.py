"""Hostile start logs for `launcher calibrate` (issue 19, items 7, 8 and 10)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.fit.calibrate import parse_log
from tests.helpers import invoke_cli as _invoke

LOG = Path(__file__).resolve().parents[1] / "fixtures" / "logs" / "vllm-0.33-dual-3090-mtp-handwritten.log"
PREFIX = "(EngineCore pid=3932) INFO 11-28 20:23:34 [core.py:114] "




@pytest.mark.parametrize("line", ["(" + " " * 100_000, "(" + " " * 100_000 + "pid=", "(" + "a " * 50_000 + ")", " " * 100_000 + "GPU KV cache size:",
                                  "Model loading took " + "1" * 100_000])
def test_no_catastrophic_backtracking(line: str) -> None:
    t = time.monotonic()
    parse_log(line + "\n" + line)
    assert time.monotonic() - t < 2


@pytest.mark.parametrize(
    "message",
    [
        "GPU KV cache size: {n} tokens",
        "Maximum concurrency for {n} tokens per request: 1.5x",
        "Setting attention block size to {n} tokens",
        "Model loading took {n} GiB and 1.0 seconds",
        "Available KV cache memory: {n}.5 GiB",
        "Graph capturing finished in 5 secs, took {n} GiB",
        "To serve at least one request with the model's max seq len ({n}), (1.0 GiB KV cache is needed, which is larger than the available "
        "KV cache memory (0.5 GiB). Based on the available memory, the estimated maximum model length is {n}.",
        "Free memory on device (1.0/{n} GiB) on startup. Desired GPU memory utilization is (0.9, 1.0 GiB). --kv-cache-memory={n}",
    ],
)
def test_huge_numbers_are_ignored_not_fatal(message: str) -> None:
    log = parse_log(PREFIX + message.format(n="9" * 5000) + "\n")
    for value in vars(log).values():
        for item in value if isinstance(value, tuple) else (value,):
            number = getattr(item, "value", item)
            assert not (isinstance(number, float) and math.isinf(number))


def test_cli_on_a_log_with_a_huge_number_is_not_an_internal_error(tmp_path) -> None:
    log = tmp_path / "huge.log"
    log.write_text(LOG.read_text() + PREFIX + "GPU KV cache size: " + "9" * 5000 + " tokens\n")
    result = CliRunner().invoke(cli, ["calibrate", str(log), "--profile", "dual-3090", "--gpu", "RTX 3090", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    json.loads(result.stdout, parse_constant=refuse)


def test_another_models_log_is_refused(tmp_path) -> None:
    log = tmp_path / "other.log"
    log.write_text(LOG.read_text().replace("havenoammo/Qwen3.6-27B-INT8-MTP", "meta-llama/Llama-3.1-8B-Instruct"))
    assert parse_log(log.read_text()).model == "meta-llama/Llama-3.1-8B-Instruct"
    code, output = _invoke(["calibrate", str(log), "--profile", "dual-3090", "--gpu", "RTX 3090"])
    assert code == 2 and "meta-llama/Llama-3.1-8B-Instruct" in output and "havenoammo/Qwen3.6-27B-INT8-MTP" in output
    same, _ = _invoke(["calibrate", str(LOG), "--profile", "dual-3090", "--gpu", "RTX 3090"])
    assert same == 0
