"""Every mistake a person makes: one line naming file, line and key, and exit code 2."""

from __future__ import annotations

import pytest

from launcher.errors import ProfileError
from launcher.profile.load import resolve

GOOD = """
hardware: {gpu_count: 2, min_memory_gib: 23.5}
model: {name: havenoammo/Qwen3.6-27B-INT8-MTP}
parallel: {tensor_parallel_size: 2}
"""


def _err(tmp_path, write_profile, text: str, name: str = "p", **kwargs) -> str:
    write_profile(name, text)
    with pytest.raises(ProfileError) as info:
        resolve(name, profiles_dirs=[tmp_path / "profiles"], environ=kwargs.pop("environ", {}), **kwargs)
    assert info.value.exit_code == 2
    return str(info.value)


def test_good_profile_loads(tmp_path, write_profile) -> None:
    write_profile("p", GOOD)
    assert resolve("p", profiles_dirs=[tmp_path / "profiles"], environ={}).profile.parallel.tensor_parallel_size == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hardware: {gpu_count: 2\n", r"p\.yaml:\d+: YAML syntax error"),
        ("hardware:\n  gpu_count: 2\n  gpu_count: 4\n", r"p\.yaml:3: duplicate key 'gpu_count' \(first set on line 2\)"),
        ("", r"p\.yaml: the file is empty"),
        ("- a\n- b\n", r"p\.yaml:1: a profile must be a mapping"),
        (GOOD + "engine:\n  max_model_lenn: 4096\n", r"p\.yaml:5: engine\.max_model_lenn: unknown key; did you mean 'max_model_len'\?"),
        (GOOD + "engin:\n  max_model_len: 4096\n", r"p\.yaml:4: engin: unknown key; did you mean 'engine'\?"),
        (GOOD + "engine:\n  max_model_len: lots\n", r"p\.yaml:5: engine\.max_model_len: expected a positive whole number of tokens or 'auto' \(got 'lots'\)"),
        (GOOD + "engine:\n  gpu_memory_utilization: 1.5\n", r"p\.yaml:5: engine\.gpu_memory_utilization: Input should be less than or equal to 1 \(got 1\.5\)"),
        (GOOD + "engine:\n  enforce_eager: 1\n", r"p\.yaml:5: engine\.enforce_eager: Input should be a valid boolean"),
        (GOOD + "speculative:\n  num_speculative_tokens: 7\n", r"p\.yaml:5: speculative\.num_speculative_tokens: Input should be less than or equal to 4"),
        (GOOD + "chat:\n  default_chat_template_kwargs: '{\"enable_thinking\": tru}'\n", r"p\.yaml:5: chat\.default_chat_template_kwargs: invalid JSON: Expecting value at column 21"),
        ("model: {name: x}\n", r"p\.yaml: hardware: is required"),
        (GOOD.replace("tensor_parallel_size: 2", "tensor_parallel_size: 3").replace("gpu_count: 2", "gpu_count: 3"),
         r"p\.yaml:3: parallel\.tensor_parallel_size: 3 does not divide this model's heads .* valid: 1, 2, 4, 8"),
        (GOOD.replace("gpu_count: 2", "gpu_count: 4"), r"p\.yaml:1: hardware\.gpu_count: is 4 but tensor_parallel_size x pipeline_parallel_size x data_parallel_size = 2"),
        (GOOD + "chat: {enable_auto_tool_choice: true}\n", r"chat\.enable_auto_tool_choice: needs chat\.tool_call_parser"),
        (GOOD + "chat: {tool_call_parser: qwen3_xml}\n", r"chat\.reasoning_parser: must be qwen3 when chat\.tool_call_parser is qwen3_xml .*#51679"),
        (GOOD + "engine: {mamba_block_size: 8}\n", r"engine\.mamba_block_size: needs engine\.enable_prefix_caching: true"),
        (GOOD + "env: {'BAD NAME': 1}\n", r"env: .*not a valid environment variable name"),
        ("extends: nothere\n" + GOOD, r"p\.yaml:1: extends: base profile: no profile named 'nothere'"),
    ],
)
def test_bad_profile_messages(tmp_path, write_profile, text: str, expected: str) -> None:
    message = _err(tmp_path, write_profile, text)
    assert "Traceback" not in message
    import re

    assert re.search(expected, message), message


def test_mtp_with_pipeline_parallel_is_refused(tmp_path, write_profile) -> None:
    text = GOOD.replace("gpu_count: 2", "gpu_count: 4").replace("{tensor_parallel_size: 2}", "{tensor_parallel_size: 2, pipeline_parallel_size: 2}")
    message = _err(tmp_path, write_profile, text + "speculative: {method: mtp}\n")
    assert "parallel.pipeline_parallel_size: MTP speculative decoding does not work with pipeline parallel > 1" in message
    write_profile("q", text + "speculative: {method: mtp, enabled: false}\n")
    assert resolve("q", profiles_dirs=[tmp_path / "profiles"], environ={}).profile.parallel.world_size == 4


def test_extends_cycle(tmp_path, write_profile) -> None:
    write_profile("a", "extends: b\n" + GOOD)
    message = _err(tmp_path, write_profile, "extends: a\n", name="b")
    assert "`extends` cycle: b.yaml -> a.yaml -> b.yaml" in message


def test_missing_profile_did_you_mean() -> None:
    with pytest.raises(ProfileError, match=r"no profile named 'dual-3009'; did you mean 'dual-3090'\?"):
        resolve("dual-3009", environ={})


def test_missing_profile_path() -> None:
    with pytest.raises(ProfileError, match=r"profile file /nope/x.yaml does not exist"):
        resolve("/nope/x.yaml", environ={})


@pytest.mark.parametrize(
    "item, expected",
    [
        ("engine.max_model_len", r"--set: 'engine.max_model_len' must look like dotted.key=value"),
        ("engine..x=1", r"--set: 'engine..x=1': the key must be dotted words"),
        ("engine.max_model_len=[1,", r"--set: engine.max_model_len: cannot parse value '\[1,'"),
        ("engine.max_model_len=abc", r"--set: engine.max_model_len: expected a positive whole number of tokens or 'auto' \(got 'abc'\)"),
        ("engine.max_model_lenn=1", r"--set: engine.max_model_lenn: unknown key; did you mean 'max_model_len'\?"),
        ("nosuch.key=1", r"--set: nosuch: unknown key"),
    ],
)
def test_bad_set(item: str, expected: str) -> None:
    import re

    with pytest.raises(ProfileError) as info:
        resolve("dual-3090", sets=[item], environ={})
    assert re.search(expected, str(info.value)), str(info.value)


def test_bad_env_override() -> None:
    with pytest.raises(ProfileError, match=r"environment \(LAUNCHER__\*/LAUNCHER_SET\): engine\.max_num_seqs: Input should be greater than or equal to 1"):
        resolve("dual-3090", environ={"LAUNCHER__ENGINE__MAX_NUM_SEQS": "0"})


def test_unreadable_bytes(tmp_path) -> None:
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProfileError, match=r"bin\.yaml: not UTF-8 text"):
        resolve("bin", profiles_dirs=[d], environ={})
