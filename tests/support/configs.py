"""Configs loaded the way the CLI loads them (an explicit environment, never the real one),
and settings dicts merged over a test module's defaults."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config.errors import ConfigError
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config
from gateway.config.overrides import Overrides

# The `make_config` fixture (tests/conftest.py): JSON5 text (or None) and overrides → Config.
MakeConfig = Callable[..., Config]


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` deep-merged over `base` (lists are replaced, not merged)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
