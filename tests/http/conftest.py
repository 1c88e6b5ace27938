"""Fixtures for the OpenAI-compatible HTTP surface: a gateway built from a config dict
(tests/support/http_client.py) and a fake OpenAI upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.state import AppOptions
from tests.support.configs import MakeConfig, merged
from tests.support.http_client import (
    BASE_SETTINGS,
    Client,
    MakeApp,
    MakeClient,
    ServedTestServer,
    Settings,
)
from tests.support.upstreams import FakeOpenAI


@pytest.fixture
def make_app(make_config: MakeConfig) -> MakeApp:
    """An app for BASE_SETTINGS with `settings` merged over them."""

    def make(
        settings: Settings | None = None, options: AppOptions | None = None
    ) -> web.Application:
        text = json.dumps(merged(BASE_SETTINGS, settings or {}))
        return create_app(make_config(text), options=options)

    return make


@pytest.fixture
def gateway(aiohttp_client: Any, make_app: MakeApp) -> MakeClient:
    """A client of a gateway on a real loopback socket, served as in production."""

    async def make(settings: Settings | None = None, options: AppOptions | None = None) -> Client:
        client: Client = await aiohttp_client(ServedTestServer(make_app(settings, options)))
        return client

    return make


@pytest.fixture
async def client(gateway: MakeClient) -> Client:
    """The default gateway: agent `main` on echo, token auth, the endpoint enabled."""
    return await gateway()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.aclose()
