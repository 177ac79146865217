"""One test per precedence edge: base < profile < environment < --set < extra args."""

from __future__ import annotations

from launcher.output.validate import command as render  # the checked command, as every output gets it
from launcher.profile.explain import explain_rows
from launcher.profile.load import resolve

BASE = """
hardware: {gpu_count: 2, min_memory_gib: 23.5}
model: {name: havenoammo/Qwen3.6-27B-INT8-MTP}
parallel: {tensor_parallel_size: 2}
engine: {max_model_len: 1000, max_num_seqs: 8}
env: {A: base}
"""


def _resolve(tmp_path, write_profile, environ=None, sets=(), extra=(), child="extends: _b\nengine: {max_model_len: 2000}\n"):
    write_profile("_b", BASE)
    write_profile("c", child)
    return resolve("c", profiles_dirs=[tmp_path / "profiles"], environ=environ or {}, sets=sets, extra_args=extra)


def _source(resolved, key):
    return {r.key: r.source for r in explain_rows(resolved)}[key]


def test_precedence_profile_over_base(tmp_path, write_profile) -> None:
    r = _resolve(tmp_path, write_profile)
    assert r.profile.engine.max_model_len == 2000
    assert r.profile.engine.max_num_seqs == 8  # untouched base value survives the merge
    assert _source(r, "engine.max_model_len").endswith("c.yaml:2")
    assert _source(r, "engine.max_num_seqs").startswith("base ") and _source(r, "engine.max_num_seqs").endswith("_b.yaml:4")


def test_precedence_env_over_profile(tmp_path, write_profile) -> None:
    r = _resolve(tmp_path, write_profile, environ={"LAUNCHER__ENGINE__MAX_MODEL_LEN": "3000", "LAUNCHER__ENV__Mixed_Case": "x"})
    assert r.profile.engine.max_model_len == 3000
    assert r.profile.env["Mixed_Case"] == "x"
    assert _source(r, "engine.max_model_len") == "environment"


def test_precedence_launcher_set_env(tmp_path, write_profile) -> None:
    r = _resolve(tmp_path, write_profile, environ={"LAUNCHER_SET": "engine.max_model_len=3500 'env.B=two words'"})
    assert r.profile.engine.max_model_len == 3500 and r.profile.env["B"] == "two words"


def test_precedence_set_over_env(tmp_path, write_profile) -> None:
    r = _resolve(tmp_path, write_profile, environ={"LAUNCHER__ENGINE__MAX_MODEL_LEN": "3000"}, sets=["engine.max_model_len=4000"])
    assert r.profile.engine.max_model_len == 4000
    assert _source(r, "engine.max_model_len") == "--set"


def test_precedence_set_none_resets_to_default(tmp_path, write_profile) -> None:
    r = _resolve(tmp_path, write_profile, sets=["engine.max_num_seqs=none"])
    assert r.profile.engine.max_num_seqs is None
    assert "--max-num-seqs" not in render(r.profile).argv


def test_precedence_extra_args_after_profile_extra_args(tmp_path, write_profile) -> None:
    child = "extends: _b\nextra_args: [--seed, '1', --max-logprobs, '5']\n"
    r = _resolve(tmp_path, write_profile, child=child, environ={"LAUNCHER_EXTRA_ARGS": "--enforce-eager --max-logprobs 6"}, extra=["--seed", "2"])
    # Extra args that name a profile key become that key at their own precedence (issue 19): the command line's wins.
    assert r.profile.engine.seed == 2 and r.profile.engine.enforce_eager is True
    assert _source(r, "engine.seed") == "extra vLLM args"
    argv = list(render(r.profile).argv)
    assert argv.count("--seed") == 1
    # The others stay verbatim: profile escape hatch first, then the environment's (argparse keeps the last).
    assert argv[-4:] == ["--max-logprobs", "5", "--max-logprobs", "6"]
    assert _source(r, "extra_args") == "extra vLLM args"


def test_precedence_dicts_merge_scalars_replace(tmp_path, write_profile) -> None:
    child = "extends: _b\nenv: {B: child}\n"
    r = _resolve(tmp_path, write_profile, child=child, sets=["env.A=set"])
    assert r.profile.env == {"A": "set", "B": "child"}


def test_local_model_paths_expand_home_and_variables(tmp_path, write_profile) -> None:
    write_profile("_b", BASE.replace("name: havenoammo/Qwen3.6-27B-INT8-MTP", "name: ~/models/$MODEL_DIR/x"))
    write_profile("c", "extends: _b\n")
    r = resolve("c", profiles_dirs=[tmp_path / "profiles"], environ={"HOME": "/home/op", "MODEL_DIR": "q36"})
    assert r.profile.model.name == "/home/op/models/q36/x"
