"""Fixtures of the process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.pgserver import PASSWORD, PgServer
from tests.support.shared_store import HeldOpenAI


@pytest.fixture
def database(pg_server: PgServer, pg_url: str) -> str:
    """The test database's URL without its password."""
    return pg_url.replace(f":{PASSWORD}@", "@")


@pytest.fixture
async def held() -> AsyncIterator[HeldOpenAI]:
    """An upstream that holds its reply after the first word until the test lets it go."""
    upstream = HeldOpenAI()
    await upstream.start()
    yield upstream
    upstream.go.set()
    await upstream.aclose()
