"""Fixtures for `GET /metrics`: a gateway with a config file (so reloads are real), an echo
agent and one on a fake OpenAI upstream (helpers in tests/support/metrics.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.auth import with_generated_token
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from gateway.state import AppOptions
from tests.support.configs import merged
from tests.support.http_client import ServedTestServer
from tests.support.metrics import Client, MakeGateway, MetricsGateway, settings_for
from tests.support.upstreams import FakeOpenAI


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.aclose()


@pytest.fixture
def make_gateway(aiohttp_client: Any, tmp_path: Path, upstream: FakeOpenAI) -> MakeGateway:
    async def make(extra: Mapping[str, Any] | None = None) -> MetricsGateway:
        settings = merged(settings_for(upstream), extra or {})
        directory = tmp_path / f"gw{len(list(tmp_path.iterdir()))}"
        directory.mkdir()
        config_path = directory / "clawgate.json5"
        config_path.write_text(json.dumps(settings))
        loader = ConfigLoader(
            Overrides(config_path=str(config_path), state_dir=str(directory / "state")),
            environ={},
        )
        app = create_app(
            with_generated_token(loader.load()),
            loader=loader,
            options=AppOptions(config_poll_seconds=0.02),
        )
        client: Client = await aiohttp_client(ServedTestServer(app))
        return MetricsGateway(client, config_path, settings)

    return make


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> MetricsGateway:
    return await make_gateway()
