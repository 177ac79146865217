"""Rendering rules and the four output formats, each checked by reading it back."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
import yaml

from launcher.output.render import format_env, format_json, format_shell, format_yaml
from launcher.output.validate import command as render
from launcher.profile.load import resolve
from launcher.profile.schema import Profile

BASE = {
    "hardware": {"gpu_count": 1, "min_memory_gib": 20},
    "model": {"name": "org/m"},
}


def _argv(**sections) -> list[str]:
    data = {**BASE, **sections}
    return list(render(Profile.model_validate(data)).argv)


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({}, ["vllm", "serve", "org/m"]),
        ({"engine": {"enforce_eager": True}}, ["vllm", "serve", "org/m", "--enforce-eager"]),
        ({"engine": {"enable_prefix_caching": False}}, ["vllm", "serve", "org/m", "--no-enable-prefix-caching"]),
        ({"engine": {"max_model_len": "auto"}}, ["vllm", "serve", "org/m", "--max-model-len", "auto"]),
        ({"kv_cache": {"dtype": "fp8"}}, ["vllm", "serve", "org/m", "--kv-cache-dtype", "fp8"]),
        ({"speculative": {"method": "mtp", "num_speculative_tokens": 3}},
         ["vllm", "serve", "org/m", "--speculative-config", '{"method":"mtp","num_speculative_tokens":3}']),
        ({"speculative": {"method": "mtp", "enabled": False}}, ["vllm", "serve", "org/m"]),
        ({"chat": {"default_chat_template_kwargs": '{"enable_thinking": false}'}},
         ["vllm", "serve", "org/m", "--default-chat-template-kwargs", '{"enable_thinking":false}']),
        ({"vllm": {"command": ["python", "-m", "vllm.entrypoints.openai.api_server"], "model_arg": "flag"}},
         ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "org/m"]),
        ({"extra_args": ["--seed", "3"]}, ["vllm", "serve", "org/m", "--seed", "3"]),
    ],
)
def test_render_rules(sections, expected) -> None:
    assert _argv(**sections) == expected


def test_api_key_never_in_argv() -> None:
    r = render(Profile.model_validate({**BASE, "server": {"api_key_env": "MY_KEY"}}))
    assert not any("MY_KEY" in a or "api-key" in a for a in r.argv)
    assert r.env_from == {"VLLM_API_KEY": "MY_KEY"}
    assert 'VLLM_API_KEY="${MY_KEY}"' in format_shell(r)


@pytest.mark.parametrize("name", ["dual-3090", "dual-3090-full", "tp4", "tp8"])
@pytest.mark.slow
def test_shell_format_round_trips_through_a_real_shell(name) -> None:
    r = render(resolve(name, environ={}).profile)
    text = format_shell(r)
    # bash itself reads it back: print each word of the command on its own line, and the env.
    script = "print_args() { printf '%s\\n' \"$@\"; }\n" + text.replace("vllm serve", "print_args vllm serve", 1)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == list(r.argv)
    assert text.startswith(f"{next(iter(r.env))}=")  # the environment first


@pytest.mark.parametrize("name", ["dual-3090", "dual-3090-full", "tp4"])
def test_json_format_is_the_contract(name) -> None:
    r = render(resolve(name, environ={}).profile)
    data = json.loads(format_json(r))
    assert data["argv"][:3] == ["vllm", "serve", "havenoammo/Qwen3.6-27B-INT8-MTP"]
    assert data["argv"] == list(r.argv) and data["env"] == r.env


def _config_to_argv(mapping: dict) -> list[str]:
    """What vLLM 0.33's --config loader does with a YAML mapping (docs/troubleshooting.md#config-file-false-dropped)."""
    args = []
    for key, value in mapping.items():
        if key == "model":
            continue
        if value is True:
            args.append(f"--{key}")
        elif value is False:
            continue  # vLLM drops false silently
        else:
            args += [f"--{key}", str(value)]
    return args


@pytest.mark.parametrize("name", ["dual-3090", "dual-3090-full", "tp8"])
def test_yaml_format_means_the_same_as_argv(name) -> None:
    r = render(resolve(name, environ={}).profile)
    mapping = yaml.safe_load(format_yaml(r))
    assert mapping["model"] == r.model
    from tests.helpers import option_map

    assert option_map(_config_to_argv(mapping)) == option_map(list(r.argv[r.head:]))


def test_yaml_format_keeps_negative_booleans() -> None:
    r = render(Profile.model_validate({**BASE, "engine": {"enable_prefix_caching": False}}))
    mapping = yaml.safe_load(format_yaml(r))
    assert mapping["no-enable-prefix-caching"] is True
    assert "--no-enable-prefix-caching" in _config_to_argv(mapping)


@pytest.mark.slow
def test_env_format_is_sourceable() -> None:
    r = render(Profile.model_validate({**BASE, "env": {"A": "x y", "B": 1}, "server": {"api_key_env": "SECRET"}}))
    script = format_env(r) + 'printf "%s|%s|%s" "$A" "$B" "$VLLM_API_KEY"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env={"SECRET": "s3"}).stdout
    assert out == "x y|1|s3"


def test_render_is_deterministic() -> None:
    a = format_json(render(resolve("dual-3090-full", environ={}).profile))
    b = format_json(render(resolve("dual-3090-full", environ={}).profile))
    assert a == b
    words = shlex.split(format_shell(render(resolve("tp4", environ={}).profile)).replace("\\\n", " "))
    assert next(w for w in words if "=" not in w) == "vllm"  # after the environment
