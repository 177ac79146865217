"""Fixtures of the engine stage (helpers live in real_engines.py)."""

from __future__ import annotations

import pytest

from tests.engine.real_engines import RealEngines, session_argvs


@pytest.fixture(scope="session")
def real_engines() -> RealEngines:
    """One tools/vllm_parse_batch.py run per venv, shared by every test of the session."""
    return RealEngines(session_argvs())
