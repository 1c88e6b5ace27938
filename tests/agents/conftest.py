"""Provider-specific fixtures: fake upstream servers (tests/support/upstreams.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.providers.upstream_client import UpstreamClient
from agents.store import SessionStore
from tests.support.scripted import Harness
from tests.support.upstreams import FakeAnthropic, FakeOpenAI


@pytest.fixture
async def http() -> AsyncIterator[UpstreamClient]:
    """The upstream client the providers under test share."""
    client = UpstreamClient()
    yield client
    await client.aclose()


@pytest.fixture
async def openai_upstream() -> AsyncIterator[FakeOpenAI]:
    """A started fake OpenAI-compatible server; script it with `.script(...)`."""
    upstream = FakeOpenAI()
    await upstream.start()
    yield upstream
    await upstream.aclose()


@pytest.fixture
async def anthropic_upstream() -> AsyncIterator[FakeAnthropic]:
    """A started fake Anthropic Messages server; script it with `.script(...)`."""
    upstream = FakeAnthropic()
    await upstream.start()
    yield upstream
    await upstream.aclose()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A real store in tmp_path and registries built on it (tests/support/scripted.py)."""
    store = SessionStore(tmp_path / "state")
    await store.open()
    harness = Harness(tmp_path / "state", store)
    yield harness
    await harness.aclose()
