"""Hostile values in every output format (issue 19, items 1-4): nothing breaks out, nothing secret shows.

Every format is parsed back the way its consumer reads it (bash runs the shell and env formats with a
stand-in `vllm` function, PyYAML reads the YAML ones, Kubernetes' `$(VAR)` and Compose's `$VAR`
expansion are replayed) and compared with the json argv and environment.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from launcher.errors import ProfileError
from launcher.output import deploy
from launcher.output.compose import compose_file, format_compose
from launcher.output.k8s import manifests, to_yaml
from launcher.output.render import FORMATS, config_mapping, format_env, format_json, format_shell, format_yaml, option_pairs, option_tokens
from launcher.output.render import assemble as render  # the formats are pure functions of what is rendered
from launcher.profile.load import resolve
from launcher.profile.schema import Profile

BASH = shutil.which("bash")
BASE: dict[str, Any] = {
    "hardware": {"gpu_count": 4, "min_memory_gib": 23.5},
    "model": {"name": "havenoammo/Qwen3.6-27B-INT8-MTP"},
    "parallel": {"tensor_parallel_size": 4},
    "speculative": {"num_speculative_tokens": 2},
    "chat": {"reasoning_parser": "qwen3", "tool_call_parser": "qwen3_xml"},
}
TWO_NODES: dict[str, Any] = {
    "hardware": {"gpu_count": 8, "min_memory_gib": 23.5},
    "model": {"name": "havenoammo/Qwen3.6-27B-INT8-MTP"},
    "parallel": {"tensor_parallel_size": 4, "pipeline_parallel_size": 2},
    "deployment": {"nodes": 2, "gpus_per_node": 4, "hosts": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11"}]},
}
SECRET = "hf_Sup3rS3cretValue"
# Runs the rendered text with `vllm` replaced by a function that prints its argv and environment.
HARNESS = (
    'vllm() { printf "%s\\0" __ARGV__ vllm "$@" __ENV__; env -0; printf "__END__\\0"; }\n'
    'ray() { printf "%s\\0" __ARGV__ ray "$@" __ENV__; env -0; printf "__END__\\0"; }\n'
)


def _profile(data: dict[str, Any]) -> Profile:
    return Profile.model_validate(data)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _bash(text: str, environ: dict[str, str] | None = None) -> list[tuple[list[str], dict[str, str]]]:
    """Run `text` in bash; every call of `vllm` -> (argv, environment)."""
    assert BASH is not None
    done = subprocess.run([BASH, "-c", HARNESS + text], capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin", **(environ or {})})
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    fields = done.stdout.decode("utf-8").split("\0")
    calls = []
    while fields and fields[0] == "__ARGV__":
        env_at = fields.index("__ENV__")
        end = fields.index("__END__")
        argv = fields[1:env_at]
        env = dict(f.split("=", 1) for f in fields[env_at + 1 : end])
        calls.append((argv, env))
        fields = fields[end + 1 :]
    assert fields in ([], [""]), f"bash printed more than the vllm calls: {fields[:5]}"
    return calls


def _expected_env(r: Any, secrets: dict[str, str]) -> dict[str, str]:
    env = dict(r.env)
    for target, source in r.env_from.items():
        env[target] = secrets[source]
    return env


def _unescape_comment(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = text[i + 1]
        if n in "\\":
            out.append("\\")
            i += 2
        elif n in "nrt":
            out.append({"n": "\n", "r": "\r", "t": "\t"}[n])
            i += 2
        elif n == "x":
            out.append(chr(int(text[i + 2 : i + 4], 16)))
            i += 4
        elif n == "u":
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        elif n == "U":
            out.append(chr(int(text[i + 2 : i + 10], 16)))
            i += 10
        else:
            raise AssertionError(f"unknown escape \\{n}")
    return "".join(out)


def k8s_expand(text: str, mapping: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command, args and env values (k8s third_party/forked/golang/expansion)."""
    out = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(mapping.get(name, f"$({name})"))
                    i = end + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def compose_unescape(text: str) -> str:
    """Compose interpolation of a literal: `$$` is `$`; any other `$` would be a variable (refused here)."""
    out = []
    i = 0
    while i < len(text):
        if text[i] == "$":
            assert text[i + 1 : i + 2] == "$", f"unescaped $ in {text!r}: Compose would interpolate it"
            out.append("$")
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


# ------------------------------------------------------------------------------- the checks


def check_every_format(profile: Profile, secrets: dict[str, str]) -> None:
    r = render(profile)
    js = json.loads(format_json(r))
    assert js["argv"] == list(r.argv)
    for value in secrets.values():
        for fmt, fn in FORMATS.items():
            try:
                text = fn(r)
            except ProfileError:
                continue  # refused with exit 2 (yaml: an option a config file cannot carry): nothing is printed
            assert value not in text, f"a secret value is printed in --format {fmt}"
    _check_shell_and_env(r, js, secrets)
    _check_yaml(r)
    if profile.deployment is None or profile.deployment.nodes == 1:
        _check_compose(profile, r, js, secrets)
    _check_k8s(profile, r, js, secrets)


def _check_shell_and_env(r: Any, js: dict[str, Any], secrets: dict[str, str]) -> None:
    """What bash makes of --format shell and --format env."""
    if not BASH:
        return
    want_env = _expected_env(r, secrets)
    ((argv, env),) = _bash(format_shell(r), secrets)
    assert argv == js["argv"]
    assert {k: env.get(k) for k in want_env} == want_env
    ((argv, env),) = _bash(format_env(r) + "vllm\n", secrets)
    assert {k: env.get(k) for k in want_env} == want_env


def _check_yaml(r: Any) -> None:
    """Exactly the config mapping; the environment only inside one comment line. An option a config file cannot
    carry (anything but `--long`: vLLM makes every key `--KEY`) is refused with exit 2, never rewritten."""
    pairs = option_pairs(option_tokens(r))
    if any(not f.startswith("--") for f, _ in pairs):
        with pytest.raises(ProfileError, match="cannot carry"):
            format_yaml(r)
        return
    text = format_yaml(r)
    assert yaml.safe_load(text) == config_mapping(r)
    pairs = option_pairs(option_tokens(r))
    assert list(config_mapping(r))[1:] == list(dict.fromkeys(f[2:] if f.startswith("--") else f.lstrip("-") for f, _ in pairs))
    env_lines = [line for line in text.splitlines() if line.startswith("# Environment needed too")]
    if not (r.env or r.env_from):
        assert not env_lines
        return
    (line,) = env_lines
    words = shlex.split(_unescape_comment(line.split(": ", 1)[1]))
    seen = dict(w.split("=", 1) for w in words)
    refs = {k: v for k, v in seen.items() if k in r.env_from}
    assert {k: v for k, v in seen.items() if k not in refs} == dict(r.env)
    assert refs == {t: "${" + s + "}" for t, s in r.env_from.items()}


def _check_compose(profile: Profile, r: Any, js: dict[str, Any], secrets: dict[str, str]) -> None:
    try:
        text = format_compose(r, profile)
    except ProfileError:
        return
    doc = yaml.safe_load(text)
    assert doc == compose_file(r, profile), "the Compose header leaked into the file"
    service = doc["services"]["vllm"]
    assert [compose_unescape(a) for a in service["entrypoint"] + service["command"]] == js["argv"]
    for key, value in r.env.items():
        if key != "CUDA_VISIBLE_DEVICES":
            assert compose_unescape(service["environment"][key]) == value
    for target, source in r.env_from.items():
        assert service["environment"][target].startswith("${" + source + ":?")
    for value in secrets.values():
        assert value not in text


def _check_k8s(profile: Profile, r: Any, js: dict[str, Any], secrets: dict[str, str]) -> None:
    """What the kubelet makes of command and env values after $(VAR) expansion."""
    try:
        docs = manifests(profile, "fuzz")
    except ProfileError:
        return
    text = to_yaml(docs)
    for value in secrets.values():
        assert value not in text
    parsed = list(yaml.safe_load_all(text))
    assert parsed == [json.loads(json.dumps(d)) for d in docs.docs]
    single = profile.deployment is None or profile.deployment.nodes == 1
    for doc in parsed:
        if doc["kind"] == "Service":
            continue
        spec = doc["spec"]
        templates = [spec["template"]] if "template" in spec else [
            spec["leaderWorkerTemplate"]["leaderTemplate"], spec["leaderWorkerTemplate"]["workerTemplate"]]
        for container in [c for t in templates for c in t["spec"]["containers"]]:
            poison = {e["name"]: "EXPANDED" for e in container["env"]}
            command = [k8s_expand(a, poison) for a in container["command"]]
            assert (command if single else command[: len(js["argv"])]) == js["argv"]
            for e in container["env"]:
                if "value" in e and e["name"] in r.env:
                    assert k8s_expand(e["value"], poison) == r.env[e["name"]]
                assert e["name"] not in secrets or "valueFrom" in e


def check_plan(profile: Profile, secrets: dict[str, str]) -> None:
    p = deploy.plan(profile)
    js = json.loads(deploy.format_plan(p, "json"))
    text = deploy.format_plan(p, "shell")
    for value in secrets.values():
        assert value not in text and value not in json.dumps(js)
    if BASH:
        calls = _bash(text, secrets)
        expected = [(cmd, n) for n in js["nodes"] for cmd in [*n.get("prelude", []), *([n["argv"]] if n["argv"] else [])]]
        assert [argv for argv, _ in calls] == [cmd for cmd, _ in expected]
        for (_, env), (_, node) in zip(calls, expected, strict=True):
            want = {**node["env"], **{t: secrets[s] for t, s in node.get("env_from", {}).items()}}
            assert {k: env.get(k) for k in want} == want
    for rank in range(len(p.nodes)):
        node = deploy.node_command(profile, rank)
        if node.rendered is not None:
            assert yaml.safe_load(deploy.format_node(node, "yaml")) == config_mapping(node.rendered)


# ------------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("ip", ["192.0.2.11\ntouch /tmp/PWNED\n#", "a b", "x;rm -rf /", "$(id)", "`id`", "-oProxyCommand=x", "", "a..b", "10.0.0.1\r"])
def test_host_addresses_are_validated(ip: str) -> None:
    data = json.loads(json.dumps(TWO_NODES))
    data["deployment"]["hosts"][1]["ip"] = ip
    with pytest.raises(ValueError):
        _profile(data)
    data = json.loads(json.dumps(TWO_NODES))
    data["deployment"]["master_addr"] = ip
    with pytest.raises(ValueError):
        _profile(data)


@pytest.mark.parametrize("host", ["0.0.0.0\n--trust-remote-code", "a b", "$(id)", "http://x"])
def test_server_host_is_validated(host: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or a DNS name"):
        _profile(_merge(BASE, {"server": {"host": host}}))
    assert _profile(_merge(BASE, {"server": {"host": "::"}})).server.host == "::"


@pytest.mark.parametrize("ip", ["10.1.2.3", "fe80::1", "2001:db8::10", "node-1", "gpu7.cluster.example.com", "my_host"])
def test_good_host_addresses_load(ip: str) -> None:
    data = json.loads(json.dumps(TWO_NODES))
    data["deployment"]["hosts"][1]["ip"] = ip
    assert _profile(data).deployment.hosts[1].ip == ip  # type: ignore[union-attr]


def test_newline_in_an_address_is_refused_through_resolve(tmp_path, write_profile) -> None:
    write_profile("inj", 'extends: tp4-pp2-2node\ndeployment:\n  hosts:\n    - ip: 192.0.2.10\n    - ip: "192.0.2.11\\ntouch /tmp/PWNED\\n#"\n')
    with pytest.raises(ProfileError, match=r"deployment\.hosts\.1\.ip"):
        resolve("inj", profiles_dirs=[tmp_path / "profiles"], environ={})


@pytest.mark.slow
def test_node_headers_are_one_comment_line_whatever_the_host() -> None:
    profile = _profile(TWO_NODES)
    node = deploy.node_command(profile, 1)
    hostile = deploy.NodeCommand(node.rank, node.role, "10.0.0.1\ntouch /tmp/PWNED\n#", node.env, node.prelude, node.rendered, node.serves_http)
    header = deploy._header(hostile, 2)
    assert "\n" not in header and header.startswith("# ")
    plan = deploy.Plan(deploy.topology(profile), (deploy.node_command(profile, 0), hostile))
    text = deploy.format_plan(plan, "shell")
    if BASH:
        calls = _bash(text)
        assert len(calls) == 2, "the header let a command out"


# ------------------------------------------------------------------------------- item 2


@pytest.mark.slow
def test_yaml_format_gains_no_keys_from_an_environment_value() -> None:
    profile = _profile(_merge(BASE, {"env": {"FOO": "a\ntrust-remote-code: true\nhost: 0.0.0.0", "BAR": "x\u2028port: 1\x85y: 2\rz: 3"}}))
    r = render(profile)
    parsed = yaml.safe_load(format_yaml(r))
    assert parsed == config_mapping(r)
    assert "trust-remote-code" not in parsed and "host" not in parsed and "port" not in parsed
    check_every_format(profile, {})


def test_compose_header_gains_no_keys_from_a_deviation() -> None:
    profile = _profile(_merge(BASE, {"deviations": [{"card": "x", "rendered": "y", "why": "z\nvolumes: {evil: {}}\n#"}]}))
    r = render(profile)
    doc = yaml.safe_load(format_compose(r, profile))
    assert list(doc) == ["services"]


# ------------------------------------------------------------------------------- item 3


@pytest.mark.slow
def test_k8s_escapes_variable_references() -> None:
    profile = _profile(_merge(BASE, {"server": {"served_model_name": "qwen-$(HF_TOKEN)"}, "env": {"X": "$(VLLM_API_KEY)$$(a)$"}}))
    docs = manifests(profile, "p")
    container = docs.docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert "qwen-$$(HF_TOKEN)" in container["command"]
    check_every_format(profile, {})


def test_k8s_multi_node_placeholders_still_expand() -> None:
    profile = _profile(_merge(TWO_NODES, {"server": {"served_model_name": "m-$(LWS_LEADER_ADDRESS)"}}))
    docs = manifests(profile, "p")
    leader = docs.docs[0]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert "$(LWS_LEADER_ADDRESS)" in leader["command"] and "m-$$(LWS_LEADER_ADDRESS)" in leader["command"]


# ------------------------------------------------------------------------------- item 4: secrets by reference


@pytest.mark.slow
@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "MY_SECRET", "DB_PASSWORD", "hf_token"])
def test_secret_looking_environment_renders_by_reference(name: str) -> None:
    profile = _profile(_merge(BASE, {"env": {name: SECRET, "PLAIN": "visible"}, "server": {"api_key_env": "MY_KEY_VAR"}}))
    r = render(profile)
    assert SECRET not in json.dumps(r.to_json())
    assert r.env == {"PLAIN": "visible"} and r.env_from[name] == name
    check_every_format(profile, {name: SECRET, "MY_KEY_VAR": "k-123"})
    assert f'{name}="${{{name}}}"' in format_shell(r)


def test_secret_environment_reaches_vllm_but_not_the_printed_command(tmp_path, write_profile) -> None:
    from click.testing import CliRunner

    from launcher.cli import cli
    from launcher.hardware.inventory import load_inventory
    from launcher.live.exec import child_environment
    from launcher.live.runtime import Runtime
    from tests.helpers import FIXTURES

    write_profile("s", f"extends: tp4\nenv:\n  HF_TOKEN: {SECRET}\n")
    inventory = load_inventory(FIXTURES / "inventories" / "a100-80gbx4.json")
    calls: list[Any] = []
    runtime = Runtime(probe=lambda: inventory, exec_fn=calls.append)
    dirs = ["--profiles-dir", str(tmp_path / "profiles")]
    dry = CliRunner().invoke(cli, ["serve", "-p", "s", *dirs, "--dry-run"], obj=runtime)
    assert dry.exit_code == 0, dry.output
    assert SECRET not in dry.output and 'HF_TOKEN="${HF_TOKEN}"' in dry.stdout
    done = CliRunner().invoke(cli, ["serve", "-p", "s", *dirs], obj=runtime)
    assert done.exit_code == 0 and SECRET not in done.output
    (rendered,) = calls
    assert child_environment(rendered, {})["HF_TOKEN"] == SECRET
    assert child_environment(rendered, {"HF_TOKEN": "from-shell"})["HF_TOKEN"] == "from-shell"
    for fmt in ("shell", "json", "yaml", "env", "compose", "k8s"):
        out = CliRunner().invoke(cli, ["render", "-p", "s", *dirs, "--format", fmt])
        assert out.exit_code == 0 and SECRET not in out.output, fmt


@pytest.mark.slow
def test_secret_environment_of_a_multi_node_plan_is_by_reference() -> None:
    profile = _profile(_merge(TWO_NODES, {"env": {"HF_TOKEN": SECRET}}))
    check_plan(profile, {"HF_TOKEN": SECRET})
    ray = _merge(TWO_NODES, {"env": {"HF_TOKEN": SECRET}})
    ray["deployment"] = {**ray["deployment"], "backend": "ray"}
    check_plan(_profile(ray), {"HF_TOKEN": SECRET})


# ------------------------------------------------------------------------------- generated input

CONTROL = "\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x7f\x85\x9b\u2028\u2029\u202e\ufeff"
SPECIAL = "'\"$`\\;&|(){}[]#:- =*!%@,.~?<>^"
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(list(CONTROL + SPECIAL + "ab1")), max_size=40),
)
STRING_FIELDS = [
    ("model", "revision"), ("model", "tokenizer"), ("model", "quantization"),
    ("engine", "attention_backend"), ("engine", "mamba_ssm_cache_dtype"), ("engine", "gdn_prefill_backend"),
    ("kv_cache", "dtype"), ("chat", "chat_template"), ("server", "host"), ("server", "served_model_name"),
]
ENV_NAMES = st.sampled_from(["FOO", "VLLM_LOGGING_LEVEL", "NCCL_DEBUG", "HF_TOKEN", "OPENAI_API_KEY", "X_SECRET", "PGPASSWORD"])


@st.composite
def hostile_profiles(draw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    data = json.loads(json.dumps(draw(st.sampled_from([BASE, TWO_NODES]))))
    for section, key in draw(st.lists(st.sampled_from(STRING_FIELDS), max_size=6, unique=True)):
        data.setdefault(section, {})[key] = draw(hostile_text)
    if draw(st.booleans()):
        data["model"]["name"] = draw(hostile_text)
    env = draw(st.dictionaries(ENV_NAMES, hostile_text, max_size=4))
    secrets = {}
    for name in list(env):
        if any(w in name for w in ("TOKEN", "KEY", "SECRET", "PASSWORD")):
            env[name] = SECRET + name
            secrets[name] = env[name]
    data["env"] = env
    data["extra_args"] = draw(st.lists(hostile_text, max_size=3))
    data["description"] = draw(hostile_text)
    if draw(st.booleans()):
        data["deviations"] = [{"card": draw(hostile_text), "rendered": draw(hostile_text), "why": draw(hostile_text)}]
    if "deployment" in data and draw(st.booleans()):
        data["deployment"]["nccl_socket_ifname"] = draw(hostile_text)
        data["deployment"]["load_balancer"] = draw(hostile_text)
    if draw(st.booleans()):
        data.setdefault("deployment", {"replicas": 1})["kubernetes"] = {"namespace": draw(hostile_text)}
    return data, secrets


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_profiles())
def test_generated_hostile_strings_round_trip_through_every_format(case: tuple[dict[str, Any], dict[str, str]]) -> None:
    data, secrets = case
    try:
        profile = _profile(data)
    except ValueError:
        assume(False)  # refused with a message (exit 2): nothing is rendered
        return
    if profile.deployment is not None and profile.deployment.nodes > 1:
        try:
            check_plan(profile, secrets)
        except ProfileError:
            pass  # the node commands are the checked ones: what vLLM would reject is refused (exit 2), not printed
    check_every_format(profile, secrets)


# ------------------------------------------------------------------------------- values that look like options


def test_a_value_starting_with_a_dash_stays_a_value(tmp_path, write_profile) -> None:
    from launcher.output.validate import render_checked

    write_profile("d", "extends: tp4\nserver: {served_model_name: -qwen}\nengine: {seed: -1}\n")
    r = render_checked(resolve("d", profiles_dirs=[tmp_path / "profiles"], environ={}))
    assert "--served-model-name=-qwen" in r.argv  # argparse would take `-qwen` for an option
    assert r.argv[r.argv.index("--seed") + 1] == "-1"  # a negative number is a value to argparse
    assert yaml.safe_load(format_yaml(r))["served-model-name"] == "-qwen"


def test_a_model_name_starting_with_a_dash_is_refused() -> None:
    with pytest.raises(ValueError, match="must not start with '-'"):
        _profile(_merge(BASE, {"model": {"name": "-x"}}))


def test_show_and_explain_print_secret_looking_environment_by_reference(tmp_path, write_profile) -> None:
    from click.testing import CliRunner

    from launcher.cli import cli

    path = write_profile("sec", "extends: dual-3090\nenv:\n  HF_TOKEN: hf_secret_value_123\n  PLAIN: visible\n")
    for args in (["show", "--profile", str(path)], ["show", "--profile", str(path), "--json"],
                 ["explain", "--profile", str(path)], ["explain", "--profile", str(path), "--json"]):
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 0, out.output
        assert "hf_secret_value_123" not in out.output and "${HF_TOKEN}" in out.output and "visible" in out.output
