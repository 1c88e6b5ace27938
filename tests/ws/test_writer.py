"""A connection's writer runs only while it has frames to write (gateway/ws/connection.py):
still one at a time, frames in the order they were queued, a close sent after them."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

from aiohttp import WSMsgType, web
from pytest_aiohttp import AiohttpClient
from structlog.testing import capture_logs

from agents.events import RunEvent
from gateway.ws.connection import WRITE_BATCH_BYTES, AnswerBudget, Connection
from gateway.ws.events import EventFanout
from gateway.ws.handler import WS
from gateway.ws.protocol import EventFrame, event_frame
from gateway.ws.state import WsSettings
from tests.support.ws_client import TOKEN, Gateway, GatewayWs, MakeGateway

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

    compress = 0

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


class _TimedSocket(_Socket):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def send_frame(self, data: bytes, opcode: WSMsgType) -> None:
        self.times.append(asyncio.get_running_loop().time())
        await super().send_frame(data, opcode)


class TestPause:
    """`Connection.pause`: what is queued after it goes out that much later."""

    async def test_frames_queued_after_a_pause_are_written_that_much_later(self) -> None:
        sock = _TimedSocket()
        conn = Connection(sock, "c", None, 10_000, 1.0)  # type: ignore[arg-type]
        conn.start()
        conn.send(b"ack")
        conn.pause(0.05)
        conn.send(b"event 1")
        conn.send(b"event 2")
        assert await no_writer_within(SETTLE_SECONDS)
        assert sock.sent == [b"ack", b"event 1", b"event 2"]
        assert sock.times[1] - sock.times[0] >= 0.05

    async def test_a_close_during_a_pause_is_sent_after_the_frames_queued_before_it(
        self,
    ) -> None:
        conn, sock = connection()
        conn.send(b"ack")
        conn.pause(0.05)
        conn.send(b"event")
        conn.close(4000, "bye")
        conn.pause(0.05)  # a closing connection queues nothing more
        await conn.wait_closed()
        assert sock.sent == [b"ack", b"event"]
        assert sock.close_args == (4000, b"bye")

    async def test_a_slow_consumer_close_during_a_pause_leaves_no_writer(self) -> None:
        sock = _Socket()
        conn = Connection(sock, "c", None, 100, 1.0)  # type: ignore[arg-type]
        conn.start()
        conn.send(b"x" * 10)
        conn.pause(30.0)
        await asyncio.sleep(0.01)  # the writer sent the frame and waits out the pause
        conn.send(b"y" * 60)
        conn.send(b"z" * 60)  # does not fit: 1008 at once, not after the pause
        await asyncio.wait_for(conn.wait_closed(), SETTLE_SECONDS)
        assert sock.close_args == (1008, b"slow consumer")
        assert await no_writer_within(SETTLE_SECONDS)


class TestBatchedWrites:
    """Frames queued together go out in one write, through a real aiohttp server and client
    (the client's frame parser reads them back)."""

    SIZES = (10, 200, 70_000, 5, 130_000, 1, 126, 65_535, 65_536, 3)

    @staticmethod
    def payload(index: int, size: int) -> bytes:
        return (f"{index}:".encode() + b"x" * size)[:size] if size > 8 else b"y" * size

    async def serve(
        self, aiohttp_client: AiohttpClient, sizes: tuple[int, ...]
    ) -> tuple[list[bytes], list[tuple[int, int]]]:
        """What a real client receives when `sizes` frames are queued at once on a fresh
        connection, and the writes the server's transport saw (calls, bytes)."""
        writes: list[tuple[int, int]] = []

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            stream = await ws.prepare(request)
            transport = request.transport
            assert transport is not None
            write, writelines = transport.write, transport.writelines

            inside = False  # asyncio's writelines calls write with the parts joined

            def counted_write(data: bytes) -> None:
                if not inside:
                    writes.append((1, len(data)))
                write(data)

            def counted_writelines(parts: list[bytes]) -> None:
                nonlocal inside
                writes.append((len(parts), sum(map(len, parts))))
                inside = True
                try:
                    writelines(parts)
                finally:
                    inside = False

            transport.write = counted_write  # type: ignore[method-assign]
            transport.writelines = counted_writelines  # type: ignore[method-assign]
            conn = Connection(ws, "c", None, 10_000_000, 1.0, stream)
            for index, size in enumerate(sizes):
                conn.send(self.payload(index, size))
            conn.start()
            conn.close(4000, "done")
            await conn.wait_closed()
            return ws

        app = web.Application()
        app.router.add_get("/", handler)
        client = await aiohttp_client(app)
        received: list[bytes] = []
        async with client.ws_connect("/", max_msg_size=0) as ws:
            async for message in ws:
                received.append(message.data.encode())
        assert ws.close_code == 4000
        return received, writes

    async def test_every_frame_arrives_whole_and_in_order(
        self, aiohttp_client: AiohttpClient
    ) -> None:
        received, _ = await self.serve(aiohttp_client, self.SIZES)
        assert received == [self.payload(i, size) for i, size in enumerate(self.SIZES)]

    async def test_small_frames_queued_together_make_one_write(
        self, aiohttp_client: AiohttpClient
    ) -> None:
        sizes = (10,) * 50
        received, writes = await self.serve(aiohttp_client, sizes)
        assert len(received) == 50
        # One write of 50 headers and 50 payloads, then the close frame.
        assert writes[0] == (100, 50 * (2 + 10))
        assert len(writes) == 2

    async def test_a_frame_over_the_batch_size_goes_alone(
        self, aiohttp_client: AiohttpClient
    ) -> None:
        sizes = (WRITE_BATCH_BYTES, 10, 10)
        received, writes = await self.serve(aiohttp_client, sizes)
        assert [len(r) for r in received] == list(sizes)
        # aiohttp's send_frame: the header, then the payload uncopied (its writes of 1 part).
        assert sum(size for _, size in writes[:-2]) == 10 + WRITE_BATCH_BYTES
        assert all(parts == 1 for parts, _ in writes[:-2])
        assert writes[-2] == (4, 2 * (2 + 10))  # the two small ones, together

    async def test_a_closed_socket_is_not_written_to(self) -> None:
        sock = _Socket()
        sock.closed = True
        stream = _Stream()
        conn = Connection(sock, "c", None, 10_000, 1.0, stream)  # type: ignore[arg-type]
        conn.send(b"a")
        conn.send(b"b")
        conn.start()
        assert await no_writer_within(SETTLE_SECONDS)
        assert sock.sent == [] and stream.transport.written == [] and conn.buffered_bytes == 0

    async def test_frames_queued_while_a_batch_drains_go_out_in_the_next_one(self) -> None:
        sock = _Socket()
        stream = _Stream()
        stream.drained.clear()  # a client that reads nothing
        conn = Connection(sock, "c", None, 10_000, 1.0, stream)  # type: ignore[arg-type]
        conn.start()
        conn.send(b"a")
        conn.send(b"b")
        await asyncio.sleep(0)  # the writer writes both and waits for the client
        conn.send(b"c")
        conn.send(b"d")
        await asyncio.sleep(0)
        assert stream.transport.written == [[b"\x81\x01", b"a", b"\x81\x01", b"b"]]
        stream.drained.set()
        assert await no_writer_within(SETTLE_SECONDS)
        assert stream.transport.written[1] == [b"\x81\x01", b"c", b"\x81\x01", b"d"]


async def stop_reading(gateway: Gateway) -> GatewayWs:
    """A connected client that reads nothing more once the server's writer waits for it:
    large answers it does not read (well within the bytes a connection may queue) fill the
    socket's buffers (aiohttp's client stops taking bytes in while its frames are unread)."""
    created = await gateway.client.post(
        "/v1/chat/completions",
        json={"model": "openclaw", "messages": [{"role": "user", "content": "x" * 300_000}]},
        headers={"Authorization": f"Bearer {TOKEN}", "x-openclaw-session-key": "big"},
    )
    assert created.status == 200
    client = await gateway.connected()
    (conn,) = gateway.app[WS].connections
    assert conn.stream is not None and conn.stream.transport is not None
    server = conn.stream.transport
    async with asyncio.timeout(20):
        while server.get_write_buffer_size() <= server.get_write_buffer_limits()[1]:
            await client.request("chat.history", {"sessionKey": "big"})
            await asyncio.sleep(0.01)
    return client


class TestStalledClient:
    async def test_a_client_that_stops_reading_is_closed_after_the_send_deadline(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(send_deadline_seconds=1.0))
        ws_state = gateway.app[WS]
        with capture_logs() as logs:
            await stop_reading(gateway)
            (conn,) = ws_state.connections
            assert conn.held_bytes < ws_state.settings.max_buffered_bytes
            async with asyncio.timeout(30):
                while ws_state.connections:
                    await asyncio.sleep(0.05)
        stalled = [e for e in logs if e["event"] == "ws_send_stalled"]
        assert len(stalled) == 1
        assert stalled[0]["log_level"] == "warning"
        assert stalled[0]["conn_id"] == conn.conn_id
        assert not [e for e in logs if e["event"] == "ws_slow_consumer"]
        assert not [e for e in logs if e["log_level"] == "error"]
        assert ws_state.answers.held == 0

    async def test_a_client_that_reads_slowly_but_steadily_keeps_its_connection(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(send_deadline_seconds=1.0))
        ws_state = gateway.app[WS]
        client = await stop_reading(gateway)
        (conn,) = ws_state.connections
        # It takes in what it asked for after all: the writer makes progress again.
        answers = 0
        async with asyncio.timeout(60):
            while conn.held_bytes or answers < 3:
                frame = await client.recv()
                answers += frame.get("type") == "res"
        assert ws_state.connections == {conn}
        assert await client.ok("health") is not None


class TestPeerGone:
    async def test_a_client_reset_while_the_writer_waits_for_it_is_no_error(
        self, gateway: Gateway
    ) -> None:
        ws_state = gateway.app[WS]
        with capture_logs() as logs:
            client = await stop_reading(gateway)
            connection = client.ws._response.connection
            assert connection is not None and connection.transport is not None
            transport = connection.transport
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()  # a reset
            async with asyncio.timeout(5):
                while ws_state.connections:
                    await asyncio.sleep(0.02)
        assert [e for e in logs if e["log_level"] == "error"] == []
        assert any(e["event"] == "ws_disconnected" for e in logs)


class _Transport:
    def __init__(self) -> None:
        self.written: list[list[bytes]] = []

    def is_closing(self) -> bool:
        return False

    def writelines(self, parts: list[bytes]) -> None:
        self.written.append(list(parts))


class _Stream:
    """Stands in for the stream `prepare` returns: records writes; `drained` holds a drain."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.drained = asyncio.Event()
        self.drained.set()

    async def drain(self) -> None:
        await self.drained.wait()


def tool_piece(n: int, delta: str, call: str = "c1") -> EventFrame:
    """The `agent` event of a run's `n`th event, a piece of the arguments of tool call
    `call`, as the fan-out builds it (pieces of one call queued together join into one)."""
    data = {"phase": "update", "name": "w", "toolCallId": call, "index": 0, "delta": delta}
    event = RunEvent("r1", "agent:main:k", "sid", "main", "tool", n, n, data)
    return EventFanout(set())._agent_frame(event)


def blocked(budget: AnswerBudget, name: str) -> tuple[Connection, _Socket]:
    """A connection under `budget` whose client reads nothing (its queue only grows)."""
    sock = _Socket()
    sock.block.clear()
    conn = Connection(sock, name, None, 1_000_000, 1.0, answers=budget)  # type: ignore[arg-type]
    conn.start()
    return conn, sock


class TestProcessBound:
    # What every connection queues together is bounded (WsSettings.max_buffered_total_bytes):
    # answers, the pieces joined to a queued tool event (each connection's own bytes), and
    # event frames, each counted once however many connections queue it.

    async def test_tool_pieces_joined_for_a_client_count_in_the_process_bound(self) -> None:
        budget = AnswerBudget(20_000)
        conn, _ = blocked(budget, "slow")
        conn.send_event(tool_piece(1, "a"))
        await asyncio.sleep(0)  # the writer took the first and waits for the client
        for n in range(2, 400):
            conn.send_event(tool_piece(n, "b" * 100))
            if conn.closing:
                break
        assert conn.closing
        await conn.aclose()
        assert (budget.held, budget.holders) == (0, set())

    async def test_an_event_queued_by_many_clients_counts_once(self) -> None:
        budget = AnswerBudget(25_000)
        conns = [blocked(budget, f"c{n}")[0] for n in range(10)]
        frame = event_frame("chat", {"text": "x" * 10_000})
        for conn in conns:
            conn.send_event(frame)
        assert 10_000 < budget.held < 11_000
        assert not any(conn.closing for conn in conns)
        other = event_frame("chat", {"text": "y" * 20_000})
        for conn in conns[:3]:
            conn.send_event(other)  # over the bound: the client holding the most goes
        assert conns[0].closing
        assert not any(conn.closing for conn in conns[3:])
        for conn in conns:
            await conn.aclose()
        assert (budget.held, budget.holders) == (0, set())

    async def test_a_droppable_event_over_the_bound_is_dropped_not_a_close(self) -> None:
        budget = AnswerBudget(25_000)
        conns = [blocked(budget, f"c{n}")[0] for n in range(3)]
        state = event_frame("chat", {"text": "x" * 20_000})
        for conn in conns:
            conn.send_event(state)
        delta = event_frame("chat", {"text": "y" * 10_000}, droppable=True)
        for conn in conns:
            conn.send_event(delta)
        assert [conn.dropped for conn in conns] == [1, 1, 1]
        assert not any(conn.closing for conn in conns)
        for conn in conns:
            await conn.aclose()
        assert (budget.held, budget.holders) == (0, set())

    async def test_a_client_that_keeps_up_still_gets_a_droppable_event_over_the_bound(
        self,
    ) -> None:
        # Dropped for the client that is behind; one with nothing queued gets it, and the
        # client holding the most is closed instead.
        budget = AnswerBudget(25_000)
        behind, _ = blocked(budget, "behind")
        behind.send_event(event_frame("chat", {"text": "x" * 20_000}))
        sock = _Socket()
        keeping_up = Connection(sock, "up", None, 1_000_000, 1.0, answers=budget)  # type: ignore[arg-type]
        keeping_up.start()
        delta = event_frame("chat", {"text": "y" * 10_000}, droppable=True)
        for conn in (behind, keeping_up):
            conn.send_event(delta)
        assert behind.dropped == 1 and behind.closing
        assert keeping_up.dropped == 0 and not keeping_up.closing
        assert await no_writer_within(SETTLE_SECONDS)
        assert len(sock.sent) == 1
        await behind.aclose()
        assert (budget.held, budget.holders) == (0, set())

    async def test_events_sent_leave_the_bound(self) -> None:
        budget = AnswerBudget(1_000_000)
        conns = [Connection(_Socket(), f"c{n}", None, 1_000_000, 1.0, answers=budget)  # type: ignore[arg-type]
                 for n in range(3)]  # fmt: skip
        for conn in conns:
            conn.start()
        for n in range(5):
            frame = event_frame("chat", {"n": n})
            for conn in conns:
                conn.send_event(frame)
        for conn in conns:
            conn.send(b"answer")
        assert await no_writer_within(SETTLE_SECONDS)
        assert (budget.held, budget.holders) == (0, set())

    async def test_a_frame_the_client_does_not_read_counts_while_it_is_written(self) -> None:
        # Taken off the queue, a frame is still held (by the socket's buffer) until the
        # client reads it: a client that asks for a large answer and reads nothing keeps it.
        budget = AnswerBudget(10_000)
        stuck, _ = blocked(budget, "stuck")
        stuck.send(b"x" * 9_000)
        await asyncio.sleep(0)  # the writer took it; the client reads nothing
        other, _ = blocked(budget, "other")
        other.send(b"y" * 3_000)
        assert stuck.closing
        assert not other.closing
        for conn in (stuck, other):
            await conn.aclose()
        assert (budget.held, budget.holders) == (0, set())

    async def test_queued_deltas_give_way_before_the_client_holding_the_most_is_closed(
        self,
    ) -> None:
        budget = AnswerBudget(25_000)
        behind, _ = blocked(budget, "behind")
        behind.send(b"x" * 12_000)
        await asyncio.sleep(0)  # the writer took it; the client reads nothing
        for n in range(4):
            behind.send_event(event_frame("chat", {"text": f"{n}" * 2_000}, droppable=True))
        other, _ = blocked(budget, "other")
        other.send(b"y" * 7_000)  # over the bound: deltas of `behind` give way
        assert not behind.closing and not other.closing
        assert behind.dropped == 2 and budget.held <= budget.limit  # the oldest two
        other.send(b"z" * 9_000)  # over again, and the deltas left are not enough
        assert behind.dropped == 4
        assert other.closing and not behind.closing  # the one holding the most
        for conn in (behind, other):
            await conn.aclose()
        assert (budget.held, budget.holders) == (0, set())

    async def test_a_queue_without_deltas_is_not_gone_through_at_each_over(self) -> None:
        # Over the bound, queues give way their droppable events; one found to hold none is
        # not gone through again until one is queued, however many times the bound is over.
        budget = AnswerBudget(100_000)
        many, _ = blocked(budget, "many")
        many.send(b"first")
        await asyncio.sleep(0)  # the writer took it; the client reads nothing
        for n in range(1_000):
            many.send_event(CountedFrame.of("chat", {"n": n}))
        CountedFrame.looked = 0
        for n in range(10):
            large, _ = blocked(budget, f"large{n}")
            large.send(b"x" * 100_000)  # over the bound each time: the largest is closed
            assert large.closing and not many.closing
            await large.aclose()
        assert CountedFrame.looked <= 1_000  # was 10,000: once per queued event per over
        await many.aclose()
        assert (budget.held, budget.holders) == (0, set())


class CountedFrame(EventFrame):
    """An event frame that counts how often whether it is droppable is looked up."""

    looked = 0

    @classmethod
    def of(cls, name: str, payload: object) -> CountedFrame:
        frame = event_frame(name, payload)
        return cls(frame.head, frame.tail, frame.droppable)

    def __getattribute__(self, name: str) -> object:
        if name == "droppable":
            CountedFrame.looked += 1
        return super().__getattribute__(name)


class TestJoinedToolPieces:
    async def test_a_joined_event_keeps_its_place_and_seq_stays_in_order(self) -> None:
        # Pieces of two calls interleaved (a model calling tools in parallel). The joined
        # event stands where its first piece was, so it carries that piece's run `seq` and
        # `ts`: the last one's would put the run's seq out of order (5 before 4); the
        # connection's `seq` counts events sent, with no gap for the pieces joined.
        sock = _Socket()
        sock.block.clear()
        conn = Connection(sock, "c", None, 1_000_000, 1.0)  # type: ignore[arg-type]
        conn.start()
        conn.send_event(tool_piece(2, "x"))  # taken by the writer, which waits for the client
        await asyncio.sleep(0)
        for n, delta, call in ((3, "a1", "A"), (4, "b1", "B"), (5, "a2", "A"), (6, "b2", "B")):
            conn.send_event(tool_piece(n, delta, call))
        sock.block.set()
        assert await no_writer_within(SETTLE_SECONDS)
        frames = [json.loads(data) for data in sock.sent]
        assert [f["seq"] for f in frames] == [1, 2, 3]
        assert [(f["payload"]["seq"], f["payload"]["data"]["delta"]) for f in frames] == [
            (2, "x"),
            (3, "a1a2"),
            (4, "b1b2"),
        ]


class TestDeltasGiveWay:
    async def test_queued_deltas_make_room_for_what_must_arrive(self) -> None:
        # A client behind on droppable events (deltas, a presence snapshot) that fill its
        # queue: a piece of a call's arguments, then an answer, that did not fit closed it
        # as a slow consumer. The oldest droppable events are dropped for them instead.
        budget = AnswerBudget(1_000_000)
        sock = _Socket()
        sock.block.clear()
        conn = Connection(sock, "c", None, 10_000, 1.0, answers=budget)  # type: ignore[arg-type]
        conn.start()
        conn.send_event(tool_piece(1, "x"))  # taken by the writer, which waits for the client
        await asyncio.sleep(0)
        conn.send_event(tool_piece(2, "a"))
        conn.send_event(event_frame("presence", {"p": "x" * 2_000}, droppable=True,
                                    replaces="presence"))  # fmt: skip
        for n in range(3):
            conn.send_event(event_frame("chat", {"text": f"{n}" * 2_000}, droppable=True))
        assert conn.dropped == 0 and conn.buffered_bytes > 8_000
        conn.send_event(tool_piece(3, "b" * 3_000))  # joins piece 2
        conn.send(b'{"answer":"' + b"y" * 3_000 + b'"}')
        assert not conn.closing
        assert conn.dropped == 3  # the presence and two deltas, the oldest
        sock.block.set()
        assert await no_writer_within(SETTLE_SECONDS)
        frames = [json.loads(data) for data in sock.sent]
        assert [f.get("seq") for f in frames] == [1, 2, 6, None]  # a gap
        assert frames[1]["payload"]["data"]["delta"] == "a" + "b" * 3_000
        assert frames[2]["payload"] == {"text": "2" * 2_000}
        assert frames[3]["answer"] == "y" * 3_000
        assert (budget.held, budget.holders) == (0, set())
