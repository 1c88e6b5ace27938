"""Fixtures for `GET /metrics`: a gateway with a config file (so reloads are real), an echo
agent and one on a fake OpenAI upstream, and a scrape parsed by prometheus_client's parser."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.auth import with_generated_token
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from gateway.state import AppOptions
from tests.agents.upstreams import FakeOpenAI
from tests.http.conftest import ServedTestServer, merged

Client = TestClient[web.Request, web.Application]

TOKEN = "metrics-token-3b9d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# label values (sorted by label name) -> sample value, per sample name
Samples = dict[str, dict[tuple[str, ...], float]]


def settings_for(upstream: FakeOpenAI) -> dict[str, Any]:
    """`main` on echo; `relay` on the fake upstream, with no fallback."""
    return {
        "gateway": {
            "auth": {"mode": "token", "token": TOKEN},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            "reload": {"debounceMs": 20},
        },
        "models": {
            "providers": {
                "fake": {
                    "api": "openai-completions",
                    "baseUrl": upstream.base_url,
                    "apiKey": "sk-test-key",
                    "models": [{"id": "fake-model"}],
                }
            }
        },
        "agents": {
            "defaults": {"model": "echo/echo"},
            "list": [{"id": "main", "default": True}, {"id": "relay", "model": "fake/fake-model"}],
        },
    }


@attrs.define
class MetricsGateway:
    client: Client
    config_path: Path
    settings: dict[str, Any]

    @property
    def app(self) -> web.Application:
        return self.client.app

    def rewrite(self, text: str) -> None:
        """A new config file (with a new mtime, whatever the timestamp granularity)."""
        self.config_path.write_text(text)
        stat = self.config_path.stat()
        os.utime(self.config_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    async def scrape(self, headers: Mapping[str, str] = AUTH) -> Samples:
        response = await self.client.get("/metrics", headers=headers)
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return parse(await response.text())


def parse(text: str) -> Samples:
    """The scrape as prometheus_client's own parser reads it."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(value for _, value in sorted(sample.labels.items()))
            by_labels = samples.setdefault(sample.name, {})
            assert key not in by_labels, (sample.name, key)
            by_labels[key] = sample.value
    return samples


MakeGateway = Callable[..., Awaitable[MetricsGateway]]


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


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)
