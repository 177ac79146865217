"""Hostile values in the systemd unit (issue 30, "High" 1): every value the unit carries is quoted by systemd's
rules or refused with exit 2; secrets never land in it; it runs exactly the configuration that was checked.

The unit is read back the way systemd reads it: directives line by line (no value may add one), ExecStart=
and Environment= split and unquoted by systemd.syntax(7)'s rules (double quotes, C escapes, `%%` for a
specifier, `$$` for a variable), and `systemd-analyze verify` must accept the file.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.output.systemd import LASTING_EXIT, this_launcher, unit_name

UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX (256) less its NUL

HOSTILE = [
    "a\nb",
    "a\r\nb",
    "/models/a\n[Service]\nExecStartPre=/bin/sh -c id\n[Unit]\nX-Pad=",
    "50% %h %n %%",
    "$HOME ${HOME} $$ $",
    "q\"uo'te",
    "back\\slash\\",
    "ends in one backslash \\",
    "tab\there",
    "\x1b[31mred\x1b]0;title\x07",
    "\u2028line\u2029para",
    "\u202eRTL\u200b",
    "emoji \U0001f600 ü",
    ";",
    "  lead and trail  ",
    "\\;",
    "-looks-like-a-flag",
    "x" * 3000,
]
# Directives the unit is made of; a value that adds any other one (or a section) broke out.
KNOWN = {
    "Description", "After", "Wants", "StartLimitIntervalSec", "StartLimitBurst", "Type", "ExecStart", "EnvironmentFile",
    "Environment", "SyslogIdentifier", "Restart", "RestartSec", "RestartSteps", "RestartMaxDelaySec", "RestartPreventExitStatus",
    "KillSignal", "KillMode", "TimeoutStopSec", "TimeoutStartSec", "LimitNOFILE", "WantedBy", "CacheDirectory", "WatchdogSec",
    "NotifyAccess",
}
ONCE = KNOWN - {"Environment", "After", "Wants"}


def render_unit(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, Any]:
    clean = {k: None for k in os.environ if k.startswith("LAUNCHER")}
    result = CliRunner().invoke(cli, ["render", "--format", "systemd", *args], env={**clean, **(env or {})})  # type: ignore[dict-item]
    return getattr(result.exception, "exit_code", result.exit_code), result.stdout, result.stderr, result.exception


def _cunescape(text: str) -> str:
    """systemd's C unescaping inside a double-quoted word (cunescape_one)."""
    out, i = [], 0
    simple = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"', "'": "'", "s": " "}
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = text[i + 1]
        if n in simple:
            out.append(simple[n])
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
            raise AssertionError(f"unknown escape \\{n} in {text[:80]!r}")
    return "".join(out)


def split_words(value: str, dollars: bool) -> list[str]:
    """A directive's value -> words, as systemd splits and unquotes them; `%%` -> `%` (and `$$` -> `$`)."""
    words = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', value):
        word = _cunescape(m.group(1)) if m.group(1) is not None else m.group(2)
        assert m.group(1) is not None or not set(word) & set("\\\"'"), f"unquoted word with quoting characters: {word!r}"
        word = word.replace("%%", "\0").replace("%", "\0BAD")
        assert "\0BAD" not in word, f"a lone % (a systemd specifier) in {value[:120]!r}"
        word = word.replace("\0", "%")
        if dollars:
            assert not re.search(r"(?<!\$)\$(?!\$)", word.replace("$$", "")), f"a lone $ (a variable) in {word!r}"
            word = word.replace("$$", "$")
        words.append(word)
    return words


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line in ("[Unit]", "[Service]", "[Install]"):
            continue
        key, eq, value = line.partition("=")
        assert eq and key in KNOWN, f"the unit gained a line: {line[:120]!r}"
        out.setdefault(key, []).append(value)
    for key in ONCE:
        assert len(out.get(key, [])) <= 1, f"{key} appears {len(out[key])} times"
    lines = text.splitlines()
    assert lines.count("[Service]") == lines.count("[Unit]") == lines.count("[Install]") == 1
    return out


def check_free_text(text: str) -> None:
    """Description= and comments: one line each, no lone `%`, no trailing odd backslash (a line continuation)."""
    for line in text.splitlines():
        if line.startswith(("#", "Description=")):
            assert "%" not in line.replace("%%", ""), line[:120]
            assert (len(line) - len(line.rstrip("\\"))) % 2 == 0, f"continues into the next line: {line[:120]!r}"
            assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202e]", line), line[:120]


def verify(text: str, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    name = directives(text)["SyslogIdentifier"][0] + ".service"
    (tmp_path / name).write_text(text, encoding="utf-8")
    p = subprocess.run([tool, "verify", "--man=no", name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    allowed = ("Unknown key 'RestartSteps'", "Unknown key 'RestartMaxDelaySec'")
    complaints = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip() and not any(a in ln for a in allowed)]
    assert p.returncode == 0 and not complaints, "\n".join(complaints)


def exec_start(text: str) -> list[str]:
    return split_words(directives(text)["ExecStart"][0], dollars=True)


# Lines launcher writes with a specifier on purpose (no user value in them): the compile cache under systemd's
# CacheDirectory= (%C = /var/cache for a system unit).
INTENDED_SPECIFIERS = {"VLLM_CACHE_ROOT=%C/vllm"}
# The unit's own settings, the same in every unit: unbuffered output, and the exit code for a failure no restart heals.
FIXED_ENV = {"PYTHONUNBUFFERED": "1", "LAUNCHER_LASTING_FAILURE_EXIT": str(LASTING_EXIT)}


def environment(text: str) -> dict[str, str]:
    out = {}
    for value in directives(text).get("Environment", []):
        if value in INTENDED_SPECIFIERS:
            continue
        for word in split_words(value, dollars=False):
            k, _, v = word.partition("=")
            out[k] = v
    return out


def unit_ok(code: int, out: str, exc: Any, tmp_path: Path) -> bool:
    """The render refused (exit 2, one line) or made a unit systemd reads as written."""
    assert code in (0, 2), f"exit {code}: {exc!r}"
    if code == 2:
        return False
    directives(out)
    check_free_text(out)
    return True


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:24] for v in HOSTILE])
def test_a_hostile_set_value_is_one_execstart_word(tmp_path: Path, value: str) -> None:
    code, out, _, exc = render_unit("--profile", "dual-3090", "--set", f"model.name={value}")
    if unit_ok(code, out, exc, tmp_path):
        assert exec_start(out) == [*this_launcher(), "serve", "--profile", "dual-3090", "--set", f"model.name={value}"]


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:24] for v in HOSTILE])
def test_a_hostile_extra_arg_is_one_execstart_word(tmp_path: Path, value: str) -> None:
    code, out, _, exc = render_unit("--profile", "dual-3090", "--", "--served-model-name", value)
    if unit_ok(code, out, exc, tmp_path):
        assert exec_start(out)[-3:] == ["--", "--served-model-name", value]


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:24] for v in HOSTILE])
def test_hostile_environment_layers_are_carried_verbatim(tmp_path: Path, value: str) -> None:
    env = {"LAUNCHER__ENV__NOTE": value, "LAUNCHER_SET": shlex.join([f"env.OTHER={value}"]),
           "LAUNCHER_EXTRA_ARGS": shlex.join(["--served-model-name", value])}
    code, out, _, exc = render_unit("--profile", "dual-3090", env=env)
    if unit_ok(code, out, exc, tmp_path):
        assert environment(out) == {**FIXED_ENV, **env}


@pytest.mark.parametrize("stem", ["my box", "50%", "a\nb", "x\x1b[2Jy", "$HOME", "q\"'", "é" * 10, "n" * 245])
def test_a_hostile_profile_file_name_and_directory(tmp_path: Path, stem: str) -> None:
    root = tmp_path / f"pro files %h $x{chr(10)}dir"
    root.mkdir()
    (root / f"{stem}.yaml").write_text("extends: dual-3090\ndescription: \"\\e[31m %n \\\\\"\n", encoding="utf-8")
    code, out, _, exc = render_unit("--profile", str(root / f"{stem}.yaml"), "--profiles-dir", str(root))
    assert unit_ok(code, out, exc, tmp_path)
    argv = exec_start(out)
    assert argv[argv.index("--profile") + 1] == str((root / f"{stem}.yaml").resolve())
    assert argv[argv.index("--profiles-dir") + 1] == str(root.resolve())
    name = directives(out)["SyslogIdentifier"][0] + ".service"
    assert len(name) <= UNIT_NAME_MAX and name == unit_name(stem) and re.fullmatch(r"[A-Za-z0-9:_.\-]+", name)


def test_the_injection_of_the_report_adds_no_directive(tmp_path: Path) -> None:
    evil = "/models/a\n[Service]\nExecStartPre=/x\n[Unit]\nX-Pad="
    code, out, _, exc = render_unit("--profile", "dual-3090", "--set", f"model.name={evil}")
    assert unit_ok(code, out, exc, tmp_path)
    assert "ExecStartPre" not in directives(out) and "\nExecStartPre=" not in out


@pytest.mark.parametrize("args, env, name", [
    (("--set", "env.HF_TOKEN=hf_abcdefghijklmnopqrstuvwx"), {}, "HF_TOKEN"),
    (("--set", "env.DB_PASS=correct horse battery"), {}, "DB_PASS"),
    (("--set", "env.GITHUB_PAT=abcd1234efgh5678"), {}, "GITHUB_PAT"),
    (("--set", "env.UPSTREAM=https://me:pw0rd42@example.com/x"), {}, "UPSTREAM"),
    ((), {"LAUNCHER__ENV__HF_TOKEN": "hf_abcdefghijklmnopqrstuvwx"}, "HF_TOKEN"),
    ((), {"LAUNCHER__ENV__MY_AUTH": "Bearer zzzzzzzzzz"}, "MY_AUTH"),
    ((), {"LAUNCHER_SET": "engine.max_num_seqs=2 'env.SVC_PASSWORD=p a s s w o r d'"}, "SVC_PASSWORD"),
])
def test_a_secret_never_lands_in_the_unit(tmp_path: Path, args: tuple[str, ...], env: dict[str, str], name: str) -> None:
    secret = (args[1] if args else next(iter(env.values()))).split("=", 1)[-1].rstrip("'")
    code, out, err, exc = render_unit("--profile", "dual-3090", *args, env=env)
    assert unit_ok(code, out, exc, tmp_path)
    assert secret not in out and shlex.quote(secret) not in out
    d = directives(out)
    assert d["EnvironmentFile"] == ["/etc/launcher/launcher-dual-3090.env"]  # required: the secret must come from it
    assert f"{name}=..." in err


def test_a_secret_inside_a_whole_env_mapping_is_refused(tmp_path: Path) -> None:
    code, out, err, exc = render_unit("--profile", "dual-3090", "--set", 'env={"HF_TOKEN": "hf_abcdefghijklmnopqrstuvwx"}')
    assert code == 2 and "world-readable" in str(exc) and "hf_abcdefghijklmnop" not in str(exc) + out


def test_the_checked_environment_layers_reach_the_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "box.yaml").write_text("extends: dual-3090\nengine: {max_num_seqs: 3}\n")
    env = {"LAUNCHER__ENGINE__MAX_MODEL_LEN": "32768", "LAUNCHER_SET": "engine.max_num_seqs=2",
           "LAUNCHER_EXTRA_ARGS": "--seed 7", "LAUNCHER_PROFILES_DIR": "mine"}
    code, out, _, exc = render_unit("--profile", "box", env=env)
    assert unit_ok(code, out, exc, tmp_path)
    carried = environment(out)
    assert carried == {**FIXED_ENV, "LAUNCHER__ENGINE__MAX_MODEL_LEN": "32768", "LAUNCHER_SET": "engine.max_num_seqs=2",
                       "LAUNCHER_EXTRA_ARGS": "--seed 7", "LAUNCHER_PROFILES_DIR": str((tmp_path / "mine").resolve())}
    # the service, with that environment and from another directory, resolves what was checked
    from launcher.profile.load import resolve

    argv = exec_start(out)
    monkeypatch.chdir("/")  # systemd starts the service in /
    served = resolve(argv[argv.index("--profile") + 1], environ=carried)
    assert served.profile.engine.max_model_len == 32768 and served.profile.engine.max_num_seqs == 2
    assert served.profile.engine.seed == 7


def test_every_percent_sign_outside_execstart_is_doubled(tmp_path: Path) -> None:
    code, out, _, exc = render_unit("--profile", "dual-3090", "--set", "model.name=/m/50%n%%")
    assert unit_ok(code, out, exc, tmp_path)
    assert "Description=vLLM serving /m/50%%n%%%% " in out


@pytest.mark.slow
def test_systemd_analyze_verify_accepts_every_hostile_unit(tmp_path: Path) -> None:
    """Every unit the hostile values above render (the ones not refused) is accepted by systemd itself."""
    renders = []
    for value in HOSTILE:
        renders.append(render_unit("--profile", "dual-3090", "--set", f"model.name={value}"))
        renders.append(render_unit("--profile", "dual-3090", "--", "--served-model-name", value))
        renders.append(render_unit("--profile", "dual-3090", env={
            "LAUNCHER__ENV__NOTE": value, "LAUNCHER_SET": shlex.join([f"env.OTHER={value}"]),
            "LAUNCHER_EXTRA_ARGS": shlex.join(["--served-model-name", value])}))
    renders.append(render_unit("--profile", "dual-3090", "--set", "env.HF_TOKEN=hf_abcdefghijklmnopqrstuvwx",
                               env={"LAUNCHER__ENGINE__MAX_MODEL_LEN": "32768"}))
    units = [out for code, out, _, exc in renders if unit_ok(code, out, exc, tmp_path)]
    assert len(units) >= len(HOSTILE) * 2  # most of them render (the engine check refuses a few extra-arg values)
    for i, text in enumerate(units):
        folder = tmp_path / str(i)
        folder.mkdir()
        verify(text, folder)
