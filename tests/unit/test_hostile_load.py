"""Hostile profile files and overrides (issue 19): refused with one bounded line and exit 2, quickly.

Items 6 (extends reads any file), 7 (alias bombs, size, key count, quadratic merge), 8 (deep
nesting), 10 (base profiles, missing --profiles-dir, NaN/Infinity, absurd integers, symlink loops,
several errors on several lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.profile.load import Layer, merge, resolve

GOOD = """
hardware: {gpu_count: 2, min_memory_gib: 23.5}
model: {name: havenoammo/Qwen3.6-27B-INT8-MTP}
parallel: {tensor_parallel_size: 2}
"""
REPO = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, name: str = "p", **kwargs):  # type: ignore[no-untyped-def]
    return resolve(name, profiles_dirs=[tmp_path / "profiles"], environ=kwargs.pop("environ", {}), **kwargs)


def _err(tmp_path: Path, name: str = "p", **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ProfileError) as info:
        _load(tmp_path, name, **kwargs)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message, f"more than one line: {message!r}"
    assert len(message) <= 400, f"unbounded message ({len(message)} characters)"
    return message


# ------------------------------------------------------------------ item 6: extends


def test_extends_refuses_a_file_that_is_not_a_profile(tmp_path, write_profile) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SECRETHASH$abcdef:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    write_profile("p", f"extends: {secret}\n" + GOOD)
    message = _err(tmp_path)
    assert "SECRETHASH" not in message and "daemon" not in message
    assert "extends" in message and ".yaml" in message


def test_extends_refuses_a_yaml_file_outside_the_search_path(tmp_path, write_profile) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "base.yaml").write_text(GOOD)
    write_profile("p", f"extends: {elsewhere / 'base.yaml'}\ndescription: x\n")
    message = _err(tmp_path)
    assert "extends" in message


def test_extends_next_to_the_file_and_in_the_search_path_still_work(tmp_path, write_profile) -> None:
    write_profile("_b", GOOD)
    write_profile("p", "extends: _b.yaml\ndescription: next to it\n")
    write_profile("q", "extends: _b\ndescription: by name\n")
    assert _load(tmp_path, "p").profile.description == "next to it"
    assert _load(tmp_path, "q").profile.description == "by name"


def test_unknown_key_messages_quote_the_key_and_are_capped(tmp_path, write_profile) -> None:
    long_key = "root:$6$" + "h" * 5000
    write_profile("p", GOOD + f"? '{long_key}'\n: 1\n")
    message = _err(tmp_path)
    assert "h" * 400 not in message


# ------------------------------------------------------------------ item 7: denial of service


def _bomb(levels: int, width: int = 9) -> str:
    """Billion laughs with mappings, so that every walk over mappings (line maps, merging) meets it."""
    lines = ["a0: &a0 {k: lol}"]
    for i in range(1, levels + 1):
        refs = ", ".join(f"k{j}: *a{i - 1}" for j in range(width))
        lines.append(f"a{i}: &a{i} {{{refs}}}")
    return "\n".join(lines) + "\n"


def _run_bounded(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run `code` in a child limited to 1 GiB of memory and `timeout` seconds (the old code blows both)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER")}
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["env", "engine.compilation_config", "unknown_key"])
def test_alias_bomb_is_refused_fast(tmp_path, write_profile, where: str) -> None:
    bomb = _bomb(8)
    if where == "env":
        text = GOOD + "env:\n" + "".join(f"  {line}\n" for line in bomb.splitlines())
    elif where == "unknown_key":
        text = GOOD + "x_bomb:\n" + "".join(f"  {line}\n" for line in bomb.splitlines())
    else:
        text = GOOD + "engine:\n  compilation_config:\n" + "".join(f"    {line}\n" for line in bomb.splitlines())
    path = write_profile("p", text)
    code = (
        "import sys, time\nfrom launcher.profile.load import resolve\nfrom launcher.errors import ProfileError\n"
        f"t = time.monotonic()\ntry:\n    resolve({str(path)!r}, environ={{}})\nexcept ProfileError as e:\n"
        f"    print('REFUSED', time.monotonic() - t, str(e).replace({str(path)!r}, 'P')[:300])\n"
    )
    done = _run_bounded(code)
    assert done.stdout.startswith("REFUSED"), done.stdout[-500:] + done.stderr[-2000:]
    assert float(done.stdout.split()[1]) < 5
    assert "alias" in done.stdout


@pytest.mark.slow
def test_alias_bomb_in_a_set_value_is_refused(tmp_path, write_profile) -> None:
    path = write_profile("p", GOOD)
    value = "{" + ", ".join(line for line in _bomb(8).splitlines()) + "}"
    code = (
        "from launcher.profile.load import resolve\nfrom launcher.errors import ProfileError\n"
        f"try:\n    resolve({str(path)!r}, environ={{}}, sets=['engine.compilation_config=' + {value!r}])\n"
        "except ProfileError as e:\n    print('REFUSED', str(e)[:300])\n"
    )
    done = _run_bounded(code)
    assert done.stdout.startswith("REFUSED"), done.stdout[-500:] + done.stderr[-2000:]


def test_a_huge_profile_file_is_refused_without_parsing_it(tmp_path, write_profile) -> None:
    path = write_profile("p", GOOD + "description: '" + "x" * (3 << 20) + "'\n")
    assert path.stat().st_size > 3 << 20
    t = time.monotonic()
    message = _err(tmp_path)
    assert time.monotonic() - t < 2
    assert "too large" in message


def test_too_many_keys_are_refused(tmp_path, write_profile) -> None:
    write_profile("p", GOOD + "env:\n" + "".join(f"  V{i}: x\n" for i in range(20_000)))
    t = time.monotonic()
    message = _err(tmp_path)
    assert time.monotonic() - t < 10
    assert "keys" in message


def test_merge_is_linear_in_the_number_of_keys() -> None:
    n = 20_000
    layers = [Layer("profile", "a", {"env": {f"V{i}": "a" for i in range(n)}}),
              Layer("--set", "b", {"env": {f"V{i}": "b" for i in range(n)}}),
              Layer("args", "c", {"env": {f"W{i}": {"x": 1} for i in range(n)}}),
              Layer("check", "d", {"env": {f"W{i}": "flat" for i in range(n)}})]
    t = time.monotonic()
    merged = merge(layers)
    elapsed = time.monotonic() - t
    assert merged.data["env"]["V7"] == "b" and merged.data["env"]["W7"] == "flat"
    assert merged.provenance["env.W7"].name == "check" and "env.W7.x" not in merged.provenance
    assert elapsed < 5, f"merge of {n} keys took {elapsed:.1f} s"


# ------------------------------------------------------------------ item 8: nesting


def test_flow_mapping_nested_deep_is_exit_2(tmp_path, write_profile) -> None:
    write_profile("p", GOOD + "engine:\n  compilation_config: " + "{a: " * 330 + "1" + "}" * 330 + "\n")
    message = _err(tmp_path)
    assert "deep" in message


def test_set_value_nested_deep_is_exit_2(tmp_path, write_profile) -> None:
    write_profile("p", GOOD)
    message = _err(tmp_path, sets=["engine.compilation_config=" + "[" * 1000 + "]" * 1000])
    assert "deep" in message


# ------------------------------------------------------------------ item 10


def test_base_profiles_are_refused_by_name_and_by_path(tmp_path, write_profile) -> None:
    path = write_profile("_b", GOOD)
    assert "base" in _err(tmp_path, "_b")
    assert "base" in _err(tmp_path, str(path))
    assert "base" in _err(tmp_path, "_qwen36-27b-int8-mtp")


def test_a_missing_profiles_dir_is_an_error(tmp_path) -> None:
    with pytest.raises(ProfileError) as info:
        resolve("tp4", profiles_dirs=[tmp_path / "nothere"], environ={})
    assert "nothere" in str(info.value) and info.value.exit_code == 2


@pytest.mark.parametrize(
    "override",
    [
        "hardware.min_memory_gib=.inf",
        "hardware.min_memory_gib=.nan",
        "engine.gpu_memory_utilization=.nan",
        "engine.compilation_config={level: .nan}",
        "chat.override_generation_config={temperature: .inf}",
        "engine.max_model_len=1000000000000000000000000000000",
        "engine.seed=100000000000000000000000000000",
        "kv_cache.memory_bytes=100000000000000000000000000000",
        "speculative.extra={x: 100000000000000000000000000000}",
    ],
)
def test_nan_infinity_and_absurd_numbers_are_refused(tmp_path, write_profile, override: str) -> None:
    write_profile("p", GOOD)
    message = _err(tmp_path, sets=[override])
    assert override.split("=")[0].split(".")[0] in message


def test_show_json_is_valid_json_for_what_loads() -> None:
    from click.testing import CliRunner

    from launcher.cli import cli

    result = CliRunner().invoke(cli, ["show", "--profile", "tp4", "--json", "--set", "engine.gpu_memory_utilization=0.9"])
    assert result.exit_code == 0

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    json.loads(result.stdout, parse_constant=refuse)


def test_a_symlink_loop_is_named_as_such(tmp_path) -> None:
    root = tmp_path / "profiles"
    root.mkdir()
    (root / "loop1.yaml").symlink_to(root / "loop2.yaml")
    (root / "loop2.yaml").symlink_to(root / "loop1.yaml")
    message = _err(tmp_path, "loop1")
    assert "did you mean 'loop1'" not in message
    assert "loop1" in message and ("symlink" in message or "cannot read" in message)


def test_several_errors_make_one_bounded_line(tmp_path, write_profile) -> None:
    bad = GOOD + "".join(f"engine_typo_{i}: 1\n" for i in range(50)) + "engine: {max_model_len: lots, max_num_seqs: 0}\n"
    write_profile("p", bad)
    message = _err(tmp_path)
    assert "more" in message


def test_a_nul_character_is_refused(tmp_path, write_profile) -> None:
    write_profile("p", GOOD)
    message = _err(tmp_path, sets=['model.revision="a\\0b"'])
    assert "model.revision" in message
