"""Fixtures of the process tests."""

from __future__ import annotations

import pytest

from tests.support.pgserver import PASSWORD, PgServer


@pytest.fixture
def database(pg_server: PgServer, pg_url: str) -> str:
    """The test database's URL without its password."""
    return pg_url.replace(f":{PASSWORD}@", "@")
