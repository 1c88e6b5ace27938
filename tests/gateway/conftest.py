"""Fixtures of the CLI and process tests: a clean environment for the `clawgate` subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.process import clean_env


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The parent's environment without clawgate's variables; HOME and the state dir in tmp."""
    return clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(tmp_path / "state")})
