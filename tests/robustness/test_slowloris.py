"""Slowloris: 200 connections that send their request head one byte per second.

The gateway is served as `clawgate run` serves it (gateway/server.py `make_runner`), with a
2-second header timeout: a connection must complete its request head within that long of
opening. The slow clients reconnect as soon as they are cut, so 200 of them trickle for the
whole measurement, as an attacker's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import pytest

from gateway.state import AppOptions
from tests.support.raw_http import exchange, request_bytes
from tests.support.served import (
    AUTH,
    CHAT,
    Served,
    ServerLog,
    build_app,
    production_logging,
    served,
)

SLOW_CLIENTS = 200
HEADER_TIMEOUT = 2.0
# The server's timer fires on time; the margin covers the event loop being busy with 200
# connections (and the client noticing the close) on a loaded 2-core CI machine.
CLOSE_MARGIN = 1.0
ALLOWED_DELAY = 0.100  # the bound on what the slow clients may cost a normal client
ROUNDS = 25
# A head that never ends: the last header's value goes on and on.
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000


@attrs.define
class SlowClients:
    """`count` clients, each sending SLOW_HEAD one byte per second on a connection and opening
    a new one as soon as the server cuts it; `lifetimes` are the cut connections' ages."""

    port: int
    count: int
    lifetimes: list[float] = attrs.Factory(list)
    connected: int = 0
    _stop: asyncio.Event = attrs.Factory(asyncio.Event)
    _tasks: list[asyncio.Task[None]] = attrs.Factory(list)

    def start(self, rng: random.Random) -> None:
        for i in range(self.count):
            # Spread over the first second, as byte-per-second senders drift apart anyway.
            delay = rng.random()
            self._tasks.append(asyncio.create_task(self._run(delay), name=f"slowloris-{i}"))

    async def _run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while not self._stop.is_set():
            await self._one_connection()

    async def _one_connection(self) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        opened = loop.time()
        self.connected += 1
        eof = asyncio.ensure_future(reader.read())  # b"" (or an error) when the server cuts
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            for byte in SLOW_HEAD:
                writer.write(bytes([byte]))
                await asyncio.wait((eof, stop), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if eof.done():
                    assert eof.exception() is not None or eof.result() == b"", eof
                    self.lifetimes.append(loop.time() - opened)
                    return
                if stop.done():
                    return
        finally:
            for future in (eof, stop):
                future.cancel()
            await asyncio.wait((eof, stop))
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def aclose(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Served, ServerLog]]:
    with production_logging() as log:
        app = build_app(tmp_path, options=AppOptions(header_timeout_seconds=HEADER_TIMEOUT))
        async with served(app) as server:
            yield server, log


async def latencies(request: Callable[[], Awaitable[None]]) -> list[float]:
    """ROUNDS timed requests, spread out so they sample the slow clients' whole cycle."""
    out = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await request()
        out.append(time.perf_counter() - started)
        await asyncio.sleep(0.1)
    return out


def summary(values: list[float]) -> tuple[float, float]:
    """(median, 90th percentile)."""
    return statistics.median(values), statistics.quantiles(values, n=10)[-1]


class TestSlowloris:
    async def test_slow_clients_neither_delay_a_normal_client_nor_outlive_the_header_timeout(
        self, gateway: tuple[Served, ServerLog]
    ) -> None:
        server, log = gateway
        chat = request_bytes(
            "POST",
            CHAT,
            AUTH,
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
        )
        health = request_bytes("GET", "/healthz")

        async def healthz() -> None:
            assert (await exchange(server.port, health)).status == 200

        async def completion() -> None:
            assert (await exchange(server.port, chat)).status == 200

        # Every request on a new connection: the accept path is part of what is measured.
        await healthz()  # warm up (first request, first session)
        await completion()
        baseline = {"healthz": await latencies(healthz), "chat": await latencies(completion)}

        slow = SlowClients(server.port, SLOW_CLIENTS)
        slow.start(random.Random(7))
        try:
            # All of them connected and trickling: each starts within its first second, and
            # on a loaded host the connects take longer (185 of 200 after 1.5 s, once).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while slow.connected < SLOW_CLIENTS:
                assert loop.time() < deadline, slow.connected
                await asyncio.sleep(0.05)
            during = {"healthz": await latencies(healthz), "chat": await latencies(completion)}
        finally:
            await slow.aclose()

        for name, values in during.items():
            base_p50, base_p90 = summary(baseline[name])
            p50, p90 = summary(values)
            assert p50 - base_p50 <= ALLOWED_DELAY, (name, baseline[name], values)
            assert p90 - base_p90 <= ALLOWED_DELAY, (name, baseline[name], values)

        # ~5 s of trickling: every slow client was cut at least once, each within the timeout.
        assert len(slow.lifetimes) >= SLOW_CLIENTS, len(slow.lifetimes)
        assert max(slow.lifetimes) <= HEADER_TIMEOUT + CLOSE_MARGIN, max(slow.lifetimes)
        # And not long before it: the header timeout cut them, not something else. A client
        # measures from when its own task resumed after connecting, which on a loaded machine
        # is later than the server's accept, so its lifetimes can read short by a few tenths.
        assert min(slow.lifetimes) >= HEADER_TIMEOUT / 2, min(slow.lifetimes)
        assert log.new_problems() == []
