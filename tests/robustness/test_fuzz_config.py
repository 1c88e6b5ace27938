"""Every place of a complete config file with every wrong JSON type and every odd or oversize
value: the loader answers with issues (ConfigError) or a config, never another exception,
`config.get`'s redaction reads whatever the file holds, and `config.patch`'s steps refuse or
apply the same values sent as patches (and its redacted view sent back, markers and all).

The complete config is the effective config of a file that sets every section (the loader's
own output: every key it knows, `gateway.controlUi.basePath` included), so a new key is walked
as soon as it exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.config.apply import with_token
from gateway.config.errors import ConfigError
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config
from gateway.config.overrides import Overrides
from gateway.config.patch import MarkerWithoutValue, merge_patch, render, secrets_sent_elsewhere
from gateway.config.schema import non_json_number
from gateway.config.secret_keys import REDACTED
from gateway.config.view import effective_dict, redact_parsed, redact_raw
from gateway.ws.methods.config import (
    _weakened_auth,
    _widened_exposure,
    _widened_hooks,
    _written_bind,
)
from tests.support.strategies import WRONG_TYPES, json_paths, odd_steps, replaced

FULL = {
    "gateway": {
        "auth": {"mode": "token", "token": "zq-token-0123456789abcdef"},
        "controlUi": {"basePath": "/openclaw", "allowedOrigins": ["https://ui.example"]},
        "http": {
            "endpoints": {"chatCompletions": {"enabled": True}, "responses": {"enabled": True}}
        },
    },
    "models": {
        "providers": {
            "up": {
                "api": "openai-completions",
                "baseUrl": "https://up.example/v1",
                "apiKey": "zq-key",
                "headers": {"x-org": "zq-org"},
                "models": [{"id": "m1", "name": "M1", "contextWindow": 1000, "maxTokens": 100}],
            }
        }
    },
    "agents": {
        "defaults": {"model": {"primary": "up/m1", "fallbacks": ["up/m1"]}},
        "list": [
            {"id": "main", "default": True, "params": {"temperature": 0.5, "token budget": 3}},
            {"id": "beta", "model": "up/m1", "models": ["up/m1"]},
        ],
    },
    "hooks": {"enabled": True, "token": "zq-hook-token-0123456789", "defaultSessionKey": "hook:x"},
}


def complete(tmp: Path) -> dict[str, Any]:
    return effective_dict(loader(tmp).load_text(json.dumps(FULL)))


def loader(tmp: Path) -> ConfigLoader:
    overrides = Overrides(config_path=str(tmp / "clawgate.json5"), state_dir=str(tmp / "state"))
    return ConfigLoader(overrides, environ={})


def parsed_as_the_loader_would(text: str) -> dict[str, Any]:
    """loader.parse_text's value of `text` (JSON, which JSON5 reads alike), without json5's
    parser, which takes seconds for the oversize values."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ConfigError("fuzz", [])
    issue = non_json_number(value)
    if issue is not None:
        raise ConfigError("fuzz", [issue])
    return value


def check(tmp: Path, config: dict[str, Any]) -> str | None:
    """What went wrong with `config` as the file, if anything did."""
    # The file as config.patch writes it. What json.dumps writes for NaN, Infinity and
    # integers of any size, JSON5 reads.
    text = render(config)
    try:
        parsed = parsed_as_the_loader_would(text)
    except ConfigError:
        return None
    try:
        loader(tmp).load_text(text, parsed)
    except ConfigError:
        pass
    except Exception as exc:
        return f"load: {exc!r}"
    try:
        redact_parsed(parsed)
        redact_raw(text, parsed)
    except Exception as exc:
        return f"redaction: {exc!r}"
    return None


class TestEveryPlaceOfTheConfig:
    def test_the_complete_config_loads(self, tmp_path: Path) -> None:
        config = complete(tmp_path)
        assert config["gateway"]["controlUi"]["basePath"] == "/openclaw"
        assert check(tmp_path, config) is None

    def test_any_wrong_type_anywhere_is_an_issue_or_accepted(self, tmp_path: Path) -> None:
        config = complete(tmp_path)
        failures = []
        for path in json_paths(config)[1:]:
            for wrong_value in WRONG_TYPES:
                problem = check(tmp_path, replaced(config, path, wrong_value))
                if problem is not None:
                    failures.append(f"{path} = {wrong_value!r:.40}: {problem}")
        assert failures == []

    def test_any_odd_or_oversize_value_anywhere_is_an_issue_or_accepted(
        self, tmp_path: Path
    ) -> None:
        config = complete(tmp_path)
        failures = []
        for path, odd in odd_steps(config)[1:]:
            problem = check(tmp_path, replaced(config, path, odd))
            if problem is not None:
                failures.append(f"{path} = {odd!r:.40}: {problem}")
        assert failures == []


# -- config.patch: the same walk as patches of the file -----------------------------------------


def patched(tmp: Path, base: dict[str, Any], patch: dict[str, Any]) -> str | None:
    """What went wrong with config.patch's steps (gateway/ws/methods/config.py) for `patch`
    of the file `base`, if anything did: each refusal is a documented one."""
    if non_json_number(patch) is not None:
        return None  # refused as the patch is parsed
    running = loaded(tmp, render(base))
    try:
        merged = merge_patch(base, patch)
        secrets_sent_elsewhere(base, patch, merged)
        try:
            new = with_token(loaded(tmp, render(merged)))
        except ConfigError:
            return None
        _weakened_auth(running.gateway, new.gateway)
        _widened_exposure(running.gateway, new.gateway, _written_bind(base))
        _widened_hooks(running.hooks, new.hooks, new.agents)
    except MarkerWithoutValue:
        pass
    except Exception as exc:
        return repr(exc)
    return None


def loaded(tmp: Path, text: str) -> Config:
    return loader(tmp).load_text(text, json.loads(text))


def section_patch(config: dict[str, Any], path: tuple[str | int, ...], value: Any) -> Any:
    """The patch a Control UI sends for a change at `path`: the whole top-level section."""
    return {path[0]: replaced(config, path, value)[path[0]]}


class TestEveryPlaceOfAPatch:
    def test_any_wrong_type_or_marker_anywhere_is_refused_or_applies(self, tmp_path: Path) -> None:
        base = FULL
        config = complete(tmp_path)
        failures = []
        for path in json_paths(config)[1:]:
            for wrong_value in (*WRONG_TYPES, REDACTED, f"{REDACTED}2"):
                patch = section_patch(config, path, wrong_value)
                if (problem := patched(tmp_path, base, patch)) is not None:
                    failures.append(f"{path} = {wrong_value!r:.40}: {problem}")
        assert failures == []

    def test_any_odd_or_oversize_value_anywhere_is_refused_or_applies(self, tmp_path: Path) -> None:
        config = complete(tmp_path)
        failures = []
        for path, odd in odd_steps(config):
            if not path:
                continue
            patch = section_patch(config, path, odd)
            if (problem := patched(tmp_path, FULL, patch)) is not None:
                failures.append(f"{path} = {odd!r:.40}: {problem}")
        assert failures == []

    def test_the_redacted_view_sent_back_with_any_change_is_refused_or_applies(
        self, tmp_path: Path
    ) -> None:
        """What config.get shows (markers in place of secrets and of keys holding one),
        sent back with one place changed."""
        shown = redact_parsed(FULL)
        failures = []
        for path in json_paths(shown)[1:]:
            for wrong_value in (*WRONG_TYPES, REDACTED, {REDACTED: REDACTED}):
                patch = section_patch(shown, path, wrong_value)
                if (problem := patched(tmp_path, FULL, patch)) is not None:
                    failures.append(f"{path} = {wrong_value!r:.40}: {problem}")
        assert failures == []
