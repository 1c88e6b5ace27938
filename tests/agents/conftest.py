"""Provider-specific fixtures: fake upstream servers (tests/support/upstreams.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agents.store import SessionStore
from tests.support.scripted import Harness
from tests.support.upstreams import FakeAnthropic, FakeOpenAI


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for the providers under test: no total timeout, theirs apply."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield session


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
