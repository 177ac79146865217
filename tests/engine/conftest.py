"""Fixtures of the engine stage (helpers live in real_engines.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.cpu_server import ENGINE, make_tiny
from tests.engine.real_engines import RealEngines, python_for, session_argvs


@pytest.fixture(scope="session")
def real_engines() -> RealEngines:
    """One tools/vllm_parse_batch.py run per venv, shared by every test of the session."""
    return RealEngines(session_argvs())


@pytest.fixture(scope="module")
def venv_python() -> Path:
    """The CPU build's python (the engine the CPU-server tests start)."""
    return python_for(ENGINE)


@pytest.fixture(scope="module")
def tiny_model(venv_python: Path) -> Path:
    """The tiny MTP model, generated once into the model cache by tools/make_tiny_model.py."""
    return make_tiny(venv_python)
