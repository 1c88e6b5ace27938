"""A PostgreSQL store that goes away and comes back, as the gateway's log tells it: one line
when the outage starts (with its reason, no traceback), one when it ends."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from gateway.logs import configure_logging
from gateway.state import AppOptions
from tests.support.pgserver import PgServer
from tests.support.ws_client import CONFIG, MakeGateway

pytestmark = pytest.mark.postgres


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The process's log output, as `clawgate run` configures it (JSON lines), stdlib loggers
    (asyncpg's) included; the test run's logging as it was afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def events(stream: io.StringIO) -> list[str]:
    return [line["event"] for line in lines(stream)]


class TestAStoreOutage:
    async def test_is_one_line_when_it_starts_and_one_when_it_ends(
        self,
        make_gateway: MakeGateway,
        pg_server: PgServer,
        pg_url: str,
        log_output: io.StringIO,
    ) -> None:
        config = CONFIG.replace(
            "agents:", f'store: {{ backend: "postgres", url: {json.dumps(pg_url)} }},\n  agents:'
        )
        await make_gateway(config, options=AppOptions(health_interval_seconds=0.1))
        with pg_server.stopped():
            # Some 40 health probes fail, and asyncpg's pool tries its connection again after
            # 1 s and 2 s.
            await asyncio.sleep(4)
        async with asyncio.timeout(10):
            while "store_available" not in events(log_output):
                await asyncio.sleep(0.1)
        logged = lines(log_output)
        assert [line for line in logged if "exception" in line] == []
        outage = [line for line in logged if line["level"] in ("warning", "error")]
        # The store's line; and the event bus's, when it had something to send meanwhile.
        assert {line["event"] for line in outage} <= {"store_unavailable", "event_bus_send_failed"}
        assert len(outage) == len({line["event"] for line in outage})
        [started] = [line for line in outage if line["event"] == "store_unavailable"]
        assert started["level"] == "warning"
        assert started["backend"] == "postgres" and started["reason"]
        [ended] = [line for line in logged if line["event"] == "store_available"]
        assert ended["level"] == "info" and ended["down_seconds"] >= 3
