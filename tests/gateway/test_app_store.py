"""The app's session store and registry: what a start that fails halfway leaves behind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from agents.store_postgres import PostgresSessionStore
from gateway.app import create_app
from tests.support.configs import MakeConfig
from tests.support.pgserver import PgServer
from tests.support.statement_relay import statement_relay
from tests.support.ws_client import CONFIG

pytestmark = pytest.mark.postgres

# The gateway's first maintenance pass, waiting on the test's lock of the sessions table.
SQL_PRUNE_WAITS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE '%FROM sessions%'"
)


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[asyncpg.Pool]:
    """Every asyncpg pool created during the test (the real ones, only kept track of)."""
    created: list[asyncpg.Pool] = []
    create_pool = asyncpg.create_pool

    def tracked(*args: Any, **kwargs: Any) -> asyncpg.Pool:
        pool = create_pool(*args, **kwargs)
        created.append(pool)
        return pool

    monkeypatch.setattr(asyncpg, "create_pool", tracked)
    return created


class TestAStartStoppedWhileTheRegistryStarts:
    async def test_closes_the_store_it_opened(
        self, make_config: MakeConfig, pg_url: str, pools: list[asyncpg.Pool]
    ) -> None:
        """A stop while the start's maintenance pass runs (systemd stops a unit still starting,
        and aiohttp cancels the start): the registry's start fails after the store opened, and
        the store is closed with it (its pools), not left to the process's exit."""
        async with PostgresSessionStore(pg_url):
            pass  # the schema is there: the start's open does not wait on the lock below
        config = make_config(
            CONFIG.replace(
                "agents:",
                f'store: {{ backend: "postgres", url: {json.dumps(pg_url)} }},\n  agents:',
            )
        )
        runner = web.AppRunner(create_app(config))
        # Two connections: a transaction sees pg_stat_activity as it was at its first look.
        watch, holder = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
                start = asyncio.create_task(runner.setup())
                async with asyncio.timeout(20):
                    while await watch.fetchval(SQL_PRUNE_WAITS) != 1:
                        await asyncio.sleep(0.05)
                start.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await start
        finally:
            await watch.close()
            await holder.close()
            await runner.cleanup()
        assert len(pools) == 4  # the test's store's two, the gateway's two
        assert [pool.is_closing() for pool in pools] == [True] * 4


class TestAStartStoppedWhileTheEventBusStarts:
    async def test_closes_the_bus_connection_it_opened(
        self, make_config: MakeConfig, pg_url: str, pg_server: PgServer
    ) -> None:
        """A stop while the event bus's listener connection starts to LISTEN: the connection
        was left open, unknown to the bus, until the process's exit."""
        async with PostgresSessionStore(pg_url):
            pass
        connections: list[asyncpg.Connection] = []
        connect = asyncpg.connect

        async def tracked(*args: Any, **kwargs: Any) -> asyncpg.Connection:
            conn = await connect(*args, **kwargs)
            connections.append(conn)
            return conn

        with statement_relay("127.0.0.1", pg_server.port, b'LISTEN "') as relay:
            url = relay.url(pg_url)
            config = make_config(
                CONFIG.replace(
                    "agents:",
                    f'store: {{ backend: "postgres", url: {json.dumps(url)} }},\n  agents:',
                )
            )
            runner = web.AppRunner(create_app(config))
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(asyncpg, "connect", tracked)
                start = asyncio.create_task(runner.setup())
                try:
                    await relay.wait_held()
                    start.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await start
                finally:
                    relay.release()
                    await runner.cleanup()
        assert connections and [conn.is_closed() for conn in connections] == [True] * len(
            connections
        )
