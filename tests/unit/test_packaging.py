"""What ships with the package: the profile JSON Schema file editors are pointed at, and install
hints that name the distribution as it is published (the import package and command stay `launcher`)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from launcher.cli import cli
from launcher.errors import EngineStartError
from launcher.live.exec import exec_vllm
from launcher.output.validate import command as render
from launcher.profile.load import resolve, shipped_profiles_dir
from tests.helpers import REPO

PROFILES = sorted(p for p in (REPO / "profiles").glob("*.yaml"))
SCHEMA_FILE = REPO / "profiles" / "profile.schema.json"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
PYPROJECT = (REPO / "pyproject.toml").read_text(encoding="utf-8")
DISTRIBUTION = re.search(r'^name = "([^"]+)"', PYPROJECT, re.M).group(1)  # type: ignore[union-attr]


def test_schema_file_is_what_launcher_schema_prints() -> None:
    """Drift: after a schema change, regenerate with `launcher schema > profiles/profile.schema.json`."""
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0, result.output
    assert SCHEMA_FILE.read_text(encoding="utf-8") == result.output


def test_schema_file_ships_next_to_the_profiles() -> None:
    # The wheel force-includes profiles/ as launcher/profiles/; in a checkout it is profiles/ itself.
    assert re.search(r'^"profiles" = "launcher/profiles"$', PYPROJECT, re.M)
    assert (shipped_profiles_dir() / SCHEMA_FILE.name).is_file()


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_each_profile_names_a_schema_that_exists_and_accepts_it(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{path.name}: the first line must be the yaml-language-server modeline"
    target = (path.parent / match.group(1)).resolve()  # relative to the file, as the language server reads it
    assert target == SCHEMA_FILE.resolve()
    schema = json.loads(target.read_text(encoding="utf-8"))
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in Draft202012Validator(schema).iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == [], f"{path.name}: an editor would flag {errors}"


def test_schema_still_catches_a_wrong_key_and_a_wrong_type() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    assert not list(validator.iter_errors({"extends": "dual-3090", "engine": {"max_model_len": 4096}}))
    assert list(validator.iter_errors({"extends": "dual-3090", "engine": {"max_model_lenn": 4096}}))
    assert list(validator.iter_errors({"hardware": {"min_compute_capability": "eight"}}))
    assert list(validator.iter_errors({"deployment": {"hosts": [{"gloo_socket_ifname": "eth0"}]}}))  # a host needs its ip


def test_missing_vllm_hint_names_the_published_distribution_and_its_extra() -> None:
    assert DISTRIBUTION != "launcher"  # on PyPI that name belongs to an unrelated project
    assert re.search(r"^vllm = \[", PYPROJECT, re.M), "the [vllm] extra the hint names"
    rendered = render(resolve("dual-3090", environ={}).profile)
    with pytest.raises(EngineStartError) as err:
        exec_vllm(rendered, environ={"PATH": "/nonexistent"})
    message = str(err.value)
    assert f"pip install '{DISTRIBUTION}[vllm]'" in message  # from an index or a wheel
    assert "pip install -e '.[vllm]'" in message  # from a checkout


def test_readme_installs_the_published_name() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"pip install ([^`\n&;|]+)", readme)
    assert commands
    for command in commands:
        for target in (t for t in shlex.split(command) if not t.startswith("-")):
            # launcher itself (a checkout or the published name), or the engine it drives
            assert target.startswith((".", DISTRIBUTION, "'vllm", "vllm")), command
