"""Fixtures shared by every test package."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth import with_generated_token
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config
from gateway.config.overrides import Overrides
from tests.support.configs import MakeConfig
from tests.support.pgserver import PgServer, start_or_skip
from tests.support.process import GatewayProcess


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """Load a config the way `clawgate run` does, from JSON5 text (or the embedded default).

    The state dir is a fresh directory under tmp_path; the environment is empty unless given.
    """

    def make(
        text: str | None = None,
        *,
        environ: dict[str, str] | None = None,
        generate_token: bool = True,
        **overrides: object,
    ) -> Config:
        state_dir = tmp_path / "state"
        config_path = None
        if text is not None:
            config_path = tmp_path / "clawgate.json5"
            config_path.write_text(text)
        loader = ConfigLoader(
            Overrides(
                config_path=str(config_path) if config_path else None,
                state_dir=str(state_dir),
                **overrides,  # type: ignore[arg-type]
            ),
            environ=environ or {},
        )
        config = loader.load()
        return with_generated_token(config) if generate_token else config

    return make


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    """The `clawgate` subprocesses a test appends here are killed (if still running) after it."""
    started: list[GatewayProcess] = []
    yield started
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole run of this process, each worker of a parallel
    run its own (tests/support/pgserver.py); skipped, or failed under
    CLAWGATE_REQUIRE_POSTGRES=1, when its binaries are not installed."""
    server = start_or_skip()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL (with its password) of a fresh, empty database on `pg_server`.

    Synchronous, so any fixture can ask for it: the admin statements run on a loop of their own.
    """
    name = f"t_{uuid.uuid4().hex[:16]}"
    pg_server.admin(f"CREATE DATABASE {name} TEMPLATE template0")
    yield pg_server.url(name)
    pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
