"""Hostile input, round 2 (issue 30): the in-process half. Override values under env verbatim, speculative.extra
cannot replace a validated key, URLs redacted by one function, spec-decode counters read in one pass, compose
and k8s names; the process-level half is tests/cli/test_hostile_round2.py."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.live.smoke import parse_metrics, spec_decode_counters
from launcher.output.compose import compose_service
from launcher.output.k8s import manifests
from launcher.output.validate import render_checked
from launcher.profile.load import resolve
from tests.unit.test_hostile_http import bounded

# Values YAML would change (time, bool, octal, comment, null) or refuse (an indicator first), one of them a secret.
VERBATIM = ["12:30:00", "yes", "off", "0o17", "1e3", "pw #x", "null", "~", "*hf_secret", "&anchor", "!tag", "@at", "%pct", "[1",
            "{a", "|pipe", ">fold", "'single", '"double', "`tick", "  spaced  ", ""]


@pytest.mark.parametrize("value", VERBATIM)
def test_env_override_values_are_taken_verbatim(value: str) -> None:
    for how in ({"environ": {"LAUNCHER__ENV__MY_VAR": value}}, {"sets": [f"env.MY_VAR={value}"]},
                {"environ": {"LAUNCHER_SET": shlex.join([f"env.MY_VAR={value}"])}}):
        profile = resolve("dual-3090", **{"environ": {}, **how}).profile  # type: ignore[arg-type]
        assert profile.env["MY_VAR"] == value, how


def test_a_secret_env_value_is_never_echoed_in_an_error() -> None:
    with pytest.raises(ProfileError) as err:
        resolve("dual-3090", sets=['env={"HF_TOKEN": *hf_s3cr3tvalue}'], environ={})
    assert "s3cr3t" not in str(err.value)


@pytest.mark.parametrize("extra", ['{"num_speculative_tokens": 12}', '{"method": "ngram"}', '{"Num-Speculative-Tokens": 9}',
                                   '{"enabled": false}', '{"NUM_SPECULATIVE_TOKENS": 5, "x": 1}'])
def test_speculative_extra_cannot_replace_a_validated_key(extra: str) -> None:
    with pytest.raises(ProfileError, match=r"speculative\.extra: .* is validated by this block"):
        resolve("dual-3090", sets=[f"speculative.extra={extra}"], environ={})


def test_speculative_extra_still_adds_other_keys() -> None:
    profile = resolve("dual-3090", sets=['speculative.extra={"disable_padded_drafter_batch": true}'], environ={}).profile
    assert profile.speculative is not None
    assert profile.speculative.config() == {"method": "mtp", "num_speculative_tokens": 2, "disable_padded_drafter_batch": True}


@pytest.mark.parametrize("url, shown", [
    ("http://alice:pw@h:8000", "http://***@h:8000"),
    ("https://tok@h/v1", "https://***@h/v1"),
    ("http://h:8000/?token=abc&x=1", "http://h:8000/?token=***&x=***"),
    ("http://h/#frag", "http://h/#***"),
    ("http://h:8000", "http://h:8000"),
    ("no scheme user:pw@h?k=v", "no scheme user:pw@h?***"),
    ("//u:p@h", "//***@h"),
])
def test_one_function_redacts_every_url(url: str, shown: str) -> None:
    from launcher.text import redact_url

    assert redact_url(url) == shown


def test_spec_decode_counters_are_linear_in_the_position_labels() -> None:
    """Thousands of per-position labels (a hostile /metrics) are read in one pass, well inside any request timeout."""
    n = 40_000
    lines = ["vllm:spec_decode_num_drafts_total 10", "vllm:spec_decode_num_draft_tokens_total 20",
             "vllm:spec_decode_num_accepted_tokens_total 5"]
    lines += [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{position="{i}"}} 1' for i in range(n)]
    metrics = parse_metrics("\n".join(lines))
    counters, error, _ = bounded(lambda: spec_decode_counters(metrics, None), 20.0)
    assert error is None and len(counters["accepted_per_position"]) == n


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "1e999"])
def test_non_finite_samples_are_left_out(value: str) -> None:
    metrics = parse_metrics(f"vllm:spec_decode_num_drafts_total {value}\nvllm:spec_decode_num_drafts_total{{a=\"b\"}} 3\n")
    counters = spec_decode_counters(metrics, None)
    assert counters is not None and counters["drafts"] == 3.0


@pytest.mark.parametrize("model", ["/models/a:b", "/models/x,y", "/m/C:/weights"])
def test_a_compose_bind_mount_with_a_colon_uses_the_long_syntax(model: str) -> None:
    resolved = resolve("dual-3090", sets=[f"model.name={model}"], environ={})
    service = compose_service(render_checked(resolved), resolved.profile)
    mounts = [v for v in service["volumes"] if isinstance(v, dict)]
    assert mounts == [{"type": "bind", "source": model, "target": model, "read_only": True}]
    assert all(isinstance(v, dict) or re.sub(r"\$\{[^}]*\}", "", v).count(":") == 1 for v in service["volumes"])


@pytest.mark.parametrize("key, value", [("namespace", "Bad NS!"), ("namespace", "a" * 64), ("namespace", "-lead"),
                                        ("hf_token_secret", "My_Secret"), ("api_key_secret", "x;rm -rf /"),
                                        ("model_cache_pvc", "UPPER"), ("hf_token_key", "a key"), ("api_key_key", "k$(id)")])
def test_k8s_names_are_validated(key: str, value: str) -> None:
    resolved = resolve("dual-3090", sets=[f"deployment.kubernetes.{key}={json.dumps(value)}"], environ={})
    with pytest.raises(ProfileError, match=rf"deployment\.kubernetes\.{key}: .* is not a Kubernetes name"):
        manifests(resolved.profile, resolved.name)


def test_the_kubectl_line_is_a_quoted_command() -> None:
    resolved = resolve("dual-3090", sets=["deployment.kubernetes.namespace=prod-1"], environ={})
    note = next(n for n in manifests(resolved.profile, resolved.name).notes if "kubectl create secret" in n)
    words = shlex.split(note.split("if it exists: ", 1)[1])
    assert words[:4] == ["kubectl", "create", "secret", "generic"] and words[4:6] == ["--namespace", "prod-1"]


def test_a_model_index_with_an_absurd_size_is_not_an_internal_error(tmp_path: Path) -> None:
    from launcher.preflight.model_files import _weight_files

    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {"total_size": 1e400}, "weight_map": {"a": "x.safetensors"}}')
    files, total = _weight_files(tmp_path)
    assert files == {"x.safetensors"} and total is None
