"""One checked command: every output format of every shipped profile carries the argv of `validate.command`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.output import deploy
from launcher.output.compose import compose_file
from launcher.output.k8s import manifests
from launcher.output.render import FORMATS, Rendered, assemble, option_pairs, option_tokens
from launcher.output.validate import command, render_checked
from launcher.profile.load import list_profiles, resolve, search_dirs

ENV = {"HOME": "/home/operator"}
SHIPPED = sorted(name for name in list_profiles(search_dirs((), environ={})) if not name.startswith("_"))
INVENTORIES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"


def _shell_argv(text: str) -> list[str]:
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)  # VAR=value prefixes
    return words


def _options(tokens: list[str]) -> list[tuple[str, str | None]]:
    return option_pairs(tokens)


def _yaml_options(text: str) -> tuple[str, list[tuple[str, str | None]]]:
    data = yaml.safe_load(text)
    model = data.pop("model")
    pairs: list[tuple[str, str | None]] = []
    for key, value in data.items():
        if value is True:
            pairs.append((f"--{key}", None))
        elif isinstance(value, bool):
            pairs.append((f"--{key}", "true" if value else "false"))
        else:
            pairs.append((f"--{key}", str(value) if not isinstance(value, str) else value))
    return model, pairs


def _k8s_commands(text: str) -> list[list[str]]:
    out = []
    for doc in yaml.safe_load_all(text):
        if not doc or doc.get("kind") not in ("Deployment", "LeaderWorkerSet"):
            continue
        spec = doc["spec"]
        templates = [spec["template"]] if "template" in spec else [
            spec["leaderWorkerTemplate"]["leaderTemplate"], spec["leaderWorkerTemplate"]["workerTemplate"]]
        for t in templates:
            for c in t["spec"]["containers"]:
                out.append([a.replace("$$(", "$(") for a in c["command"]])
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_every_format_carries_the_checked_argv(name: str) -> None:
    resolved = resolve(name, environ=ENV)
    checked = render_checked(resolved)
    profile = resolved.profile
    topo = deploy.topology(profile)
    if topo.multi_node:
        plan = deploy.plan(profile, str(resolved.path))
        for node in plan.nodes:
            if node.rendered is None:
                continue
            argv = list(node.rendered.argv)
            # a node runs the checked command plus its own flags, nothing else
            assert argv[: len(checked.argv)] == list(checked.argv)
            extra = {f for f, _ in option_pairs(argv[len(checked.argv):])}
            assert extra <= set(deploy.MULTINODE_FLAGS) | {deploy.RAY_FLAG}
            for fmt in ("shell", "json", "yaml"):
                text = deploy.format_node(node, fmt)
                if fmt == "shell":
                    body = "\n".join(line for line in text.splitlines() if not line.startswith("ray "))
                    assert _shell_argv(body) == argv
                elif fmt == "json":
                    assert json.loads(text)["argv"] == argv
                else:
                    model, pairs = _yaml_options(text)
                    assert model == node.rendered.model and pairs == _options(option_tokens(node.rendered))
        for c in _k8s_commands(_k8s(profile, resolved)):
            assert c[: len(checked.argv)] == list(checked.argv)
        return
    # shell / json / yaml: exactly the checked argv
    assert _shell_argv(FORMATS["shell"](checked)) == list(checked.argv)
    assert json.loads(FORMATS["json"](checked))["argv"] == list(checked.argv)
    model, pairs = _yaml_options(FORMATS["yaml"](checked))
    assert model == checked.model and pairs == _options(option_tokens(checked))
    # the environment: env and json agree with the checked env
    assert json.loads(FORMATS["json"](checked))["env"] == checked.env
    # compose runs the checked argv
    service = next(iter(compose_file(checked, profile)["services"].values()))
    assert [a.replace("$$", "$") for a in service["entrypoint"] + service["command"]] == list(checked.argv)
    # k8s: every container runs the checked argv
    commands = _k8s_commands(_k8s(profile, resolved))
    assert commands and all(c == list(checked.argv) for c in commands)
    # the plan's (single) node is the checked command too
    assert deploy.plan(profile, str(resolved.path)).nodes[0].rendered == checked


def _k8s(profile: Any, resolved: Any) -> str:
    from launcher.output.k8s import to_yaml

    return to_yaml(manifests(profile, resolved.name, str(resolved.path)))


def test_k8s_of_dual_3090_full_has_no_mamba_cache_mode() -> None:
    resolved = resolve("dual-3090-full", environ=ENV)
    assert "--mamba-cache-mode" in assemble(resolved.profile).argv  # the profile keeps the card's value
    text = _k8s(resolved.profile, resolved)
    assert "--mamba-cache-mode" not in text
    assert all("--mamba-cache-mode" not in c for c in _k8s_commands(text))


def test_check_json_command_is_the_checked_one() -> None:
    from launcher.commands.check import report_json
    from launcher.hardware.inventory import load_inventory
    from launcher.preflight.choice import run_preflight

    inventory = load_inventory(INVENTORIES / "rtx3090x2-idle.json")
    resolved, report = run_preflight("dual-3090-full", (), (), (), inventory, environ={})
    out = report_json(resolved, report, inventory, "test")
    assert out["command"]["argv"] == list(render_checked(resolved).argv)
    assert "--mamba-cache-mode" not in out["command"]["argv"]


def test_per_node_flags_are_checked_too() -> None:
    """A node's flags go through the engine check: a version without them would refuse, not print."""
    resolved = resolve("tp4-pp2-2node", environ=ENV)
    node = deploy.node_command(resolved.profile, 1, str(resolved.path))
    assert node.rendered is not None
    assert isinstance(node.rendered, Rendered)
    again = command(resolved.profile, str(resolved.path), more=[], env=node.env)
    assert list(node.rendered.argv[: len(again.argv)]) == list(again.argv)
