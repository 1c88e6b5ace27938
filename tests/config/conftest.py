"""Config files in tmp_path, loaded with an explicit environment (never the real one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.errors import ConfigError
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config
from gateway.config.overrides import Overrides


class ConfigFiles:
    """Writes config text under a tmp_path and loads it the way the CLI does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / "state"  # never created: loading must not create it
        self.path = root / "clawgate.json5"

    def write(self, text: str) -> Path:
        self.path.write_text(text, encoding="utf-8")
        return self.path

    def loader(self, *, environ: dict[str, str] | None = None, **overrides: Any) -> ConfigLoader:
        overrides.setdefault("config_path", str(self.path))
        overrides.setdefault("state_dir", str(self.state_dir))
        return ConfigLoader(Overrides(**overrides), environ={} if environ is None else environ)

    def load(self, text: str, *, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
        self.write(text)
        return self.loader(environ=environ, **overrides).load()

    def error(
        self, text: str, *, environ: dict[str, str] | None = None, **overrides: Any
    ) -> ConfigError:
        self.write(text)
        with pytest.raises(ConfigError) as caught:
            self.loader(environ=environ, **overrides).load()
        return caught.value

    def issues(
        self, text: str, *, environ: dict[str, str] | None = None, **overrides: Any
    ) -> list[str]:
        """The issue lines, as `- <path>: <message>`."""
        return [i.line() for i in self.error(text, environ=environ, **overrides).issues]


@pytest.fixture
def files(tmp_path: Path) -> ConfigFiles:
    return ConfigFiles(tmp_path)
