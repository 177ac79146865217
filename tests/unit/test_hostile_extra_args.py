"""Extra vLLM args (issue 19, items 4 and 9): no secret in argv, no way around the profile's rules.

Extra args that name a profile key are merged into the profile as their own layer and validated like
any other; secret-bearing flags are refused with a pointer to where the secret belongs. The same for
every way in: after `--`, LAUNCHER_EXTRA_ARGS, `--set extra_args=[...]` and a profile's extra_args.
"""

from __future__ import annotations

import pytest

from launcher.errors import ProfileError
from launcher.output.validate import command as render  # the checked command
from launcher.output.validate import render_checked
from launcher.profile.explain import explain_rows
from launcher.profile.load import resolve

GOOD = """
hardware: {gpu_count: 4, min_memory_gib: 23.5}
model: {name: havenoammo/Qwen3.6-27B-INT8-MTP}
parallel: {tensor_parallel_size: 4}
speculative: {num_speculative_tokens: 2}
chat: {reasoning_parser: qwen3, tool_call_parser: qwen3_xml}
"""


def _ways(args: list[str]) -> list[dict]:
    """The four ways extra args reach a profile, as resolve() keyword arguments (+ a profile text)."""
    import shlex

    listed = "[" + ", ".join("'" + a.replace("'", "''") + "'" for a in args) + "]"
    return [
        {"extra_args": args},
        {"environ": {"LAUNCHER_EXTRA_ARGS": shlex.join(args)}},
        {"sets": ["extra_args=" + listed]},
        {"profile_extra": "extra_args: " + listed + "\n"},
    ]


def _resolve(tmp_path, write_profile, way: dict):  # type: ignore[no-untyped-def]
    way = dict(way)
    write_profile("p", GOOD + way.pop("profile_extra", ""))
    environ = way.pop("environ", {})
    return resolve("p", profiles_dirs=[tmp_path / "profiles"], environ=environ, **way)


def _refused(tmp_path, write_profile, args: list[str]) -> list[str]:
    messages = []
    for way in _ways(args):
        with pytest.raises(ProfileError) as info:
            resolved = _resolve(tmp_path, write_profile, way)
            render_checked(resolved)
        assert info.value.exit_code == 2 and "\n" not in str(info.value)
        messages.append(str(info.value))
    return messages


# ------------------------------------------------------------------------------- item 4


@pytest.mark.parametrize("args", [["--api-key", "sk-VERYSECRET"], ["--api-key=sk-VERYSECRET"], ["--api_key", "sk-VERYSECRET"], ["--api-k", "sk-VERYSECRET"]])
def test_api_key_flag_is_refused_with_a_pointer(tmp_path, write_profile, args: list[str]) -> None:
    for message in _refused(tmp_path, write_profile, args):
        assert "server.api_key_env" in message and "sk-VERYSECRET" not in message


def test_hf_token_flag_is_refused_with_a_pointer(tmp_path, write_profile) -> None:
    for message in _refused(tmp_path, write_profile, ["--hf-token", "hf_VERYSECRET"]):
        assert "HF_TOKEN" in message and "hf_VERYSECRET" not in message


@pytest.mark.parametrize("key", ["model.tokenizer", "model.name", "chat.chat_template"])
@pytest.mark.parametrize("value", ["/models/$HF_TOKEN/x", "~/${HF_TOKEN}", "$HF_TOKEN"])
def test_secret_variables_are_not_expanded_into_argv(tmp_path, write_profile, key: str, value: str) -> None:
    import yaml

    data = yaml.safe_load(GOOD)
    section, field = key.split(".")
    data[section][field] = value
    write_profile("p", yaml.safe_dump(data))
    with pytest.raises(ProfileError) as info:
        resolve("p", profiles_dirs=[tmp_path / "profiles"], environ={"HF_TOKEN": "hf_VERYSECRET", "HOME": "/home/x"})
    assert "hf_VERYSECRET" not in str(info.value) and "HF_TOKEN" in str(info.value) and key in str(info.value)


def test_only_local_paths_are_expanded(tmp_path, write_profile) -> None:
    import yaml

    data = yaml.safe_load(GOOD)
    data["model"] = {"name": "org/$WHO-model", "tokenizer": "$MODELS/tok"}
    data["chat"]["chat_template"] = '{{ "$WHO" }}'
    write_profile("p", yaml.safe_dump(data))
    r = resolve("p", profiles_dirs=[tmp_path / "profiles"], environ={"WHO": "me", "MODELS": "/srv/models"})
    assert r.profile.model.name == "org/$WHO-model"  # a Hugging Face id, not a path
    assert r.profile.model.tokenizer == "/srv/models/tok"
    assert r.profile.chat.chat_template == '{{ "$WHO" }}'  # an inline template


# ------------------------------------------------------------------------------- item 9


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--tensor-parallel-size", "3"], "parallel.tensor_parallel_size"),
        (["-tp", "3"], "parallel.tensor_parallel_size"),
        (["--tensor_parallel_size=3"], "parallel.tensor_parallel_size"),
        (["--speculative-config", '{"method":"mtp","num_speculative_tokens":10}'], "speculative"),
        (["--speculative-config.num_speculative_tokens", "10"], "speculative"),
        (["--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"], "parallel.pipeline_parallel_size"),
        (["--reasoning-parser", "deepseek_r1"], "chat.reasoning_parser"),
        (["--tool-call-parser", "qwen3_coder", "--reasoning-parser", "deepseek_r1"], "chat.reasoning_parser"),
        (["--max-model-len", "1000000000000000000000000"], "engine.max_model_len"),
        (["--model", "other/model"], "model.name"),
    ],
)
def test_extra_args_cannot_bypass_the_rules(tmp_path, write_profile, args: list[str], key: str) -> None:
    for message in _refused(tmp_path, write_profile, args):
        assert key in message, message


def test_extra_args_naming_a_key_become_that_key(tmp_path, write_profile) -> None:
    for way in _ways(["--max-num-seqs", "8", "--enforce-eager", "--no-enable-prefix-caching", "--max-model-len=32K", "--seed", "3"]):
        resolved = _resolve(tmp_path, write_profile, way)
        p = resolved.profile
        e = p.engine
        assert (e.max_num_seqs, e.enforce_eager, e.enable_prefix_caching, e.max_model_len, e.seed) == (8, True, False, 32768, 3)
        assert p.extra_args == ()
        argv = list(render_checked(resolved).argv)
        assert argv.count("--max-num-seqs") == 1 and argv[argv.index("--max-num-seqs") + 1] == "8"
        if "extra_args" in way or "environ" in way:
            rows = {r.key: r.source for r in explain_rows(resolved)}
            assert rows["engine.max_num_seqs"] == "extra vLLM args"


def test_extra_args_that_are_not_profile_keys_stay_verbatim_and_last_wins(tmp_path, write_profile) -> None:
    write_profile("p", GOOD + "extra_args: [--seed, '1', --max-logprobs, '2']\n")
    r = resolve("p", profiles_dirs=[tmp_path / "profiles"], environ={"LAUNCHER_EXTRA_ARGS": "--max-logprobs 3"},
                extra_args=["--seed", "2", "--disable-log-stats"])
    assert r.profile.engine.seed == 2
    assert r.profile.extra_args == ("--max-logprobs", "2", "--max-logprobs", "3", "--disable-log-stats")
    argv = list(render(r.profile).argv)
    assert argv.count("--seed") == 1


def test_a_bad_value_for_a_key_is_still_refused_by_the_engine_check(tmp_path, write_profile) -> None:
    write_profile("p", GOOD)
    r = resolve("p", profiles_dirs=[tmp_path / "profiles"], environ={}, extra_args=["--max-model-len", "lots"])
    with pytest.raises(ProfileError, match="--max-model-len: invalid integer"):
        render_checked(r)
