"""A connection's writer runs only while it has frames to write (gateway/ws/connection.py):
still one at a time, frames in the order they were queued, a close sent after them."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType

from gateway.ws.connection import Connection
from tests.support.ws_client import Gateway, GatewayWs

SETTLE_SECONDS = 5.0


def writers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("ws-writer ")]


async def no_writer_within(seconds: float) -> bool:
    """Whether every writer has ended within `seconds` (they end once their queue is empty)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while writers():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class _Socket:
    """Stands in for aiohttp's WebSocketResponse: records what the writer sends; `block`
    holds a send as a client that reads nothing would."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.close_args: tuple[int, bytes] | None = None
        self.block = asyncio.Event()
        self.block.set()

    async def send_frame(self, data: bytes, opcode: WSMsgType) -> None:
        await self.block.wait()
        self.sent.append(data)

    async def close(self, *, code: int, message: bytes) -> bool:
        self.closed, self.close_args = True, (code, message)
        return True


def connection() -> tuple[Connection, _Socket]:
    sock = _Socket()
    conn = Connection(sock, "c", None, 10_000, 1.0)  # type: ignore[arg-type]
    conn.start()
    return conn, sock


class TestIdleConnection:
    async def test_an_idle_authenticated_connection_runs_no_writer(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        assert await no_writer_within(SETTLE_SECONDS)

    async def test_an_idle_connection_still_gets_its_responses(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        assert await no_writer_within(SETTLE_SECONDS)
        for _ in range(3):
            assert await ws.ok("health") is not None
            assert await no_writer_within(SETTLE_SECONDS)


class TestWriter:
    async def test_a_connection_with_nothing_queued_has_no_writer(self) -> None:
        connection()
        await asyncio.sleep(0)
        assert writers() == []

    async def test_frames_queued_after_the_writer_ended_go_out_in_order(self) -> None:
        conn, sock = connection()
        conn.send(b"a")
        assert await no_writer_within(SETTLE_SECONDS)
        conn.send(b"b")
        conn.send(b"c")
        assert len(writers()) == 1
        assert await no_writer_within(SETTLE_SECONDS)
        assert sock.sent == [b"a", b"b", b"c"]

    async def test_frames_queued_while_one_is_sent_join_the_same_writer(self) -> None:
        conn, sock = connection()
        sock.block.clear()
        conn.send(b"a")
        await asyncio.sleep(0)  # the writer takes it and waits on the client
        conn.send(b"b")
        conn.send(b"c")
        assert len(writers()) == 1
        sock.block.set()
        assert await no_writer_within(SETTLE_SECONDS)
        assert sock.sent == [b"a", b"b", b"c"]

    async def test_a_close_of_an_idle_connection_is_sent(self) -> None:
        conn, sock = connection()
        conn.send(b"a")
        assert await no_writer_within(SETTLE_SECONDS)
        conn.close(4000, "bye")
        await conn.wait_closed()
        assert sock.sent == [b"a"]
        assert sock.close_args == (4000, b"bye")

    async def test_a_close_is_sent_after_the_frames_queued_before_it(self) -> None:
        conn, sock = connection()
        sock.block.clear()
        conn.send(b"a")
        conn.send(b"b")
        conn.close(4000, "bye")
        conn.send(b"after")  # discarded
        assert not sock.closed
        sock.block.set()
        await conn.wait_closed()
        assert sock.sent == [b"a", b"b"]
        assert sock.close_args == (4000, b"bye")

    async def test_frames_queued_before_start_are_written_once_started(self) -> None:
        sock = _Socket()
        conn = Connection(sock, "c", None, 10_000, 1.0)  # type: ignore[arg-type]
        conn.send(b"a")
        await asyncio.sleep(0)
        assert sock.sent == [] and writers() == []
        conn.start()
        assert await no_writer_within(SETTLE_SECONDS)
        assert sock.sent == [b"a"]

    async def test_a_slow_consumer_close_of_a_parked_writer_leaves_no_writer(self) -> None:
        sock = _Socket()
        conn = Connection(sock, "c", None, 100, 1.0)  # type: ignore[arg-type]
        conn.start()
        sock.block.clear()
        conn.send(b"x" * 10)
        await asyncio.sleep(0)  # the writer takes it and waits on the client
        conn.send(b"y" * 60)
        conn.send(b"z" * 60)  # does not fit: 1008
        await conn.wait_closed()
        assert sock.close_args == (1008, b"slow consumer")
        assert await no_writer_within(SETTLE_SECONDS)
        conn.send(b"after")  # discarded, and starts nothing
        assert writers() == [] and conn.buffered_bytes == 0
