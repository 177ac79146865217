"""The commands the docs show work with today's tools (issue 17): `hf`, not the removed `huggingface-cli`;
docs/multi-node.md's launcher commands run, as the runbook's do (tests/unit/test_runbook.py)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.fakes import FakeVllm, child_env

REPO = Path(__file__).resolve().parents[2]
MULTI_NODE = REPO / "docs" / "multi-node.md"
DOCS = [REPO / "README.md", REPO / "Dockerfile", *sorted((REPO / "docs").glob("*.md"))]
HEAD = "http://HEAD:8000"  # the head node's address in docs/multi-node.md


def doc_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


def test_no_doc_names_the_removed_huggingface_cli() -> None:
    assert "huggingface-cli" not in doc_text()


def hf_commands() -> list[str]:
    """Every `hf ...` command the docs show (inline code or code blocks) and the one launcher's own fixes print."""
    from launcher.preflight.model_files import download_command

    found = re.findall(r"`(hf [^`]+)`", doc_text())
    found += [line.strip() for line in re.findall(r"^\s*(hf .+)$", doc_text(), re.M)]
    return sorted(set(found) | {download_command("havenoammo/Qwen3.6-27B-INT8-MTP")})


def hf_binary() -> Path:
    cache = Path(os.environ.get("LAUNCHER_ENGINE_CACHE") or "~/.cache/launcher-engines").expanduser()
    ready = sorted(p for p in cache.glob("*/bin/hf") if (p.parent.parent / ".ready").exists())
    if not ready:
        msg = f"no prepared engine venv with huggingface_hub's `hf` under {cache} (tools/prepare_engines.sh)"
        if os.environ.get("LAUNCHER_REQUIRE_ENGINES", "") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return ready[-1]


@pytest.mark.engine
@pytest.mark.parametrize("cmd", hf_commands())
def test_hf_commands_are_accepted_by_the_real_hf(cmd: str) -> None:
    """The subcommand and every option exist in the `hf` vLLM installs (huggingface_hub >= 1.0); no download."""
    hf = hf_binary()
    words = shlex.split(cmd)
    assert words[0] == "hf" and len(words) >= 3, cmd
    help_text = subprocess.run([str(hf), words[1], "--help"], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"})
    assert help_text.returncode == 0, help_text.stderr
    for word in words[2:]:
        if word.startswith("--"):
            assert word.split("=")[0] in help_text.stdout, f"`hf {words[1]}` has no option {word}"
    assert not (hf.parent / "huggingface-cli").exists()  # gone from huggingface_hub 1.0 on


def bash_commands(text: str) -> list[str]:
    """The commands of every bash block, indented ones (inside a list) included."""
    out = []
    for body in re.findall(r"^[ ]*```bash\n(.*?)^[ ]*```$", text, re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


MULTI_NODE_COMMANDS = bash_commands(MULTI_NODE.read_text(encoding="utf-8"))


def test_multi_node_shows_commands() -> None:
    assert any(c.startswith("launcher render") for c in MULTI_NODE_COMMANDS)
    assert any(c.startswith("launcher wait") for c in MULTI_NODE_COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("cmd", MULTI_NODE_COMMANDS, ids=[c[:50] for c in MULTI_NODE_COMMANDS])
def test_multi_node_commands_run(cmd: str, tmp_path: Path) -> None:
    """Run as written; the head's URL points at a local server that answers like vLLM (tp4-pp2-2node: no MTP)."""
    assert cmd.startswith("launcher "), f"docs/multi-node.md shows a command this test does not know how to run: {cmd}"
    with FakeVllm(model="havenoammo/Qwen3.6-27B-INT8-MTP", spec_decode="off") as server:
        result = subprocess.run(["bash", "-o", "pipefail", "-c", cmd.replace(HEAD, server.url)], cwd=tmp_path,
                                env=child_env({"HOME": str(tmp_path)}), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
