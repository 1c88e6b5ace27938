"""Config files in tmp_path, loaded with an explicit environment (never the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.configs import ConfigFiles


@pytest.fixture
def files(tmp_path: Path) -> ConfigFiles:
    return ConfigFiles(tmp_path)
