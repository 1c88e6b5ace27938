"""Helpers for the `GET /metrics` tests: the gateway they drive, a scrape parsed by
prometheus_client's parser, and the settings of an echo agent and one on a fake upstream."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.upstreams import FakeOpenAI

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


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)
