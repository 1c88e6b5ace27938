"""The two frame limits of one socket (ws-protocol.md §2.3; gateway/ws/framelimit.py).

The socket starts with the 64 KiB pre-auth limit and gets a reader with `maxPayload` after
hello-ok, by way of aiohttp internals: these tests fail when aiohttp changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import struct
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

from structlog.testing import capture_logs

from gateway.state import AppOptions
from gateway.ws.handler import WS
from gateway.ws.state import WsSettings
from tests.support.metrics import until
from tests.support.raw_http import read_head
from tests.support.ws_client import Gateway, GatewayWs, MakeGateway, connect_params

PREAUTH_MAX = 64 * 1024


def padded(size: int) -> dict[str, object]:
    """A `health` request frame whose JSON is about `size` bytes."""
    return {"type": "req", "id": "big", "method": "health", "params": {"pad": "a" * size}}


class TestAfterHelloOk:
    async def test_a_frame_far_over_64_kib_is_answered(self, ws: GatewayWs) -> None:
        await ws.send(padded(4 * 1024 * 1024))
        answer = await ws.response("big")
        assert answer["type"] == "res"
        assert (await ws.call("health"))["ok"] is True  # and the socket goes on

    async def test_a_frame_of_exactly_max_payload_is_read(self, make_gateway: MakeGateway) -> None:
        # hello-ok's policy.maxPayload is the largest frame a client may send, not one more.
        gateway = await make_gateway(settings=WsSettings(max_payload=100_000))
        ws = await gateway.connected()
        assert ws.hello is not None
        assert ws.hello["payload"]["policy"]["maxPayload"] == 100_000
        text = '{"type":"req","id":"big","method":"health","params":{"pad":"'
        text += "a" * (100_000 - len(text) - 3) + '"}}'
        assert len(text.encode()) == 100_000
        await ws.ws.send_str(text)
        assert (await ws.response("big"))["ok"] is True

    async def test_one_byte_over_max_payload_closes_1009(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(settings=WsSettings(max_payload=100_000))
        ws = await gateway.connected()
        await ws.ws.send_str("a" * 100_001)
        assert (await ws.closed())[0] == 1009


class TestBeforeHelloOk:
    async def test_a_frame_of_exactly_64_kib_is_read(self, raw_ws: GatewayWs) -> None:
        text = '{"type":"req","id":"c","method":"connect","params":{"p":"'
        text += "a" * (PREAUTH_MAX - len(text) - 3) + '"}}'
        assert len(text.encode()) == PREAUTH_MAX
        await raw_ws.recv()  # the challenge
        await raw_ws.ws.send_str(text)
        answer = await raw_ws.recv()
        # Read and parsed: refused for its params, not for its size.
        assert answer["error"]["message"].startswith("invalid connect params"), answer

    async def test_one_byte_more_closes_1009(self, raw_ws: GatewayWs) -> None:
        await raw_ws.recv()
        await raw_ws.ws.send_str("a" * (PREAUTH_MAX + 1))
        assert await raw_ws.closed() == (1009, "preauth payload too large")


async def test_a_large_frame_sent_right_behind_connect_is_answered(raw_ws: GatewayWs) -> None:
    # A client that does not wait for hello-ok: the frames behind `connect` wait for the
    # full limit, not refused by the pre-auth one (1009) nor cut in two by the change (1002).
    await raw_ws.recv()
    connect = {"type": "req", "id": "c", "method": "connect", "params": connect_params()}
    await raw_ws.send(connect)
    await raw_ws.send(padded(200_000) | {"id": "big"})
    await raw_ws.send({"type": "req", "id": "h", "method": "health"})
    assert (await raw_ws.response("c"))["ok"] is True
    assert (await raw_ws.response("big"))["ok"] is True
    assert (await raw_ws.response("h"))["ok"] is True


async def test_frames_behind_a_refused_connect_do_not_delay_its_close(
    raw_ws: GatewayWs,
) -> None:
    await raw_ws.recv()
    params = connect_params(auth={"token": "wrong"})
    await raw_ws.send({"type": "req", "id": "c", "method": "connect", "params": params})
    await raw_ws.send(padded(200_000) | {"id": "big"})
    answer = await raw_ws.response("c")
    assert answer["ok"] is False
    code, _ = await raw_ws.closed(wait=2)  # not the 5 s a close waits for an answer
    assert code == 1008


async def test_frames_sent_right_behind_connect_are_answered(raw_ws: GatewayWs) -> None:
    # Both frames arrive together and are parsed by the pre-auth reader before the new one
    # takes over: neither is lost.
    await raw_ws.recv()
    connect = {"type": "req", "id": "c", "method": "connect", "params": connect_params()}
    await raw_ws.send(connect)
    await raw_ws.send({"type": "req", "id": "h", "method": "health"})
    assert (await raw_ws.response("c"))["ok"] is True
    assert (await raw_ws.response("h"))["ok"] is True


def unmasked(ws: GatewayWs) -> GatewayWs:
    """From now on `ws` sends its frames unmasked, as no client may (RFC 6455 §5.1)."""
    writer = ws.ws._writer  # aiohttp's client has no switch for it
    writer.use_mask = False
    return ws


class TestUnmaskedFrames:
    # RFC 6455 §5.1: "The server MUST close the connection upon receiving a frame that is not
    # masked", with 1002 (§7.4.1). A proxy or a client that does not mask is broken, and the
    # mask is what keeps a browser's frames from being read as another protocol by a cache.
    async def test_an_unmasked_frame_after_hello_ok_closes_1002(self, ws: GatewayWs) -> None:
        await unmasked(ws).send({"type": "req", "id": "h", "method": "health"})
        code, _ = await ws.closed()
        assert code == 1002
        assert [f for f in ws.frames if f.get("id") == "h"] == []

    async def test_an_unmasked_connect_closes_1002(self, raw_ws: GatewayWs) -> None:
        await raw_ws.recv()  # the challenge
        await unmasked(raw_ws).send(
            {"type": "req", "id": "c", "method": "connect", "params": connect_params()}
        )
        code, _ = await raw_ws.closed()
        assert code == 1002
        assert [f for f in raw_ws.frames if f.get("id") == "c"] == []

    async def test_an_unmasked_ping_closes_1002(self, ws: GatewayWs) -> None:
        await unmasked(ws).ws.ping(b"hi")
        assert (await ws.closed())[0] == 1002

    async def test_an_unmasked_frame_sent_with_the_upgrade_request_closes_1002(
        self, gateway: Gateway
    ) -> None:
        # Bytes read together with the upgrade request reach the reader before any other.
        head = (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        frame = b'{"type":"req","id":"c","method":"connect","params":{}}'
        assert gateway.client.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.client.port)
        try:
            writer.write(head + bytes((0x81, len(frame))) + frame)
            async with asyncio.timeout(5):
                status, _ = await read_head(reader)
                assert status == 101
                while True:
                    first, second = await reader.readexactly(2)
                    payload = await reader.readexactly(second & 0x7F)
                    if first & 0x0F == 0x8:  # the close
                        break
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert int.from_bytes(payload[:2], "big") == 1002


class RawClient:
    """A connected socket whose frames are written by hand, masked (with a zero key: the
    payload goes as it is), so that a test can stop one halfway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connected(cls, gateway: Gateway) -> RawClient:
        assert gateway.client.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.client.port)
        client = cls(reader, writer)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with asyncio.timeout(5):
            status, _ = await read_head(reader)
            assert status == 101
            await client.read()  # the challenge
            connect = {"type": "req", "id": "c", "method": "connect", "params": connect_params()}
            client.write(masked_frame(json.dumps(connect).encode()))
            while (await client.read()).get("id") != "c":
                pass
        return client

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def read(self) -> dict[str, Any]:
        """The next text frame."""
        while True:
            opcode, payload = await self.read_frame()
            assert opcode != 0x8, payload
            if opcode == 0x1:
                frame: dict[str, Any] = json.loads(payload)
                return frame

    async def response(self, frame_id: str) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while (frame := await self.read()).get("id") != frame_id:
                pass
            return frame

    async def pinged(self) -> None:
        """Everything written so far was read by the gateway (its pong comes after it)."""
        assert await self.pinged_or_closed() is None

    async def pinged_or_closed(self) -> int | None:
        """None when the gateway read everything written so far; the code of its close
        if it closed the socket instead."""
        self.write(masked_frame(b"sync", opcode=0x9))
        async with asyncio.timeout(5):
            while True:
                opcode, payload = await self.read_frame()
                if opcode == 0xA:
                    return None
                if opcode == 0x8:
                    code: int = struct.unpack("!H", payload[:2])[0]
                    return code

    async def closed(self, wait: float = 5) -> tuple[int, bytes]:
        """The close frame's code and reason (frames before it are skipped)."""
        async with asyncio.timeout(wait):
            while True:
                opcode, payload = await self.read_frame()
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0], payload[2:]

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def masked_frame(payload: bytes, *, opcode: int = 0x1, fin: bool = True, length: int = -1) -> bytes:
    """A client's frame: its header (with a zero mask key) and `payload`; `length` says
    another payload length than the bytes given (a frame to be continued)."""
    size = len(payload) if length < 0 else length
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 0x10000:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


def health_text(size: int) -> bytes:
    """A `health` request of exactly `size` bytes of JSON, id "big"."""
    text = b'{"type":"req","id":"big","method":"health","params":{"pad":"'
    return text + b"a" * (size - len(text) - 3) + b'"}}'


@contextlib.asynccontextmanager
async def raw_client(gateway: Gateway) -> AsyncIterator[RawClient]:
    client = await RawClient.connected(gateway)
    try:
        yield client
    finally:
        await client.aclose()


class TestUnfinishedMessages:
    # A message may be up to maxPayload after hello-ok, and aiohttp keeps its bytes as they
    # come: one begun must be whole within the message deadline, or the socket is closed.
    async def test_a_frame_stopped_halfway_is_closed_1008_at_the_deadline(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(options=AppOptions(message_deadline_seconds=0.5))
        with capture_logs() as logs:
            async with raw_client(gateway) as client:
                text = health_text(100_000)
                client.write(masked_frame(text[:50_000], length=len(text)))
                code, reason = await client.closed()
        assert (code, reason) == (1008, b"message not whole in time")
        await until(lambda: gateway.app[WS].partial_frames.held == 0)  # the socket is gone
        [line] = [e for e in logs if e["event"] == "ws_frames_refused"]
        assert (line["close_code"], line["reason"]) == (1008, "message not whole in time")

    async def test_a_fragmented_message_left_unfinished_is_closed_1008(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(options=AppOptions(message_deadline_seconds=0.5))
        async with raw_client(gateway) as client:
            client.write(masked_frame(health_text(1000)[:600], fin=False))
            assert (await client.closed())[0] == 1008

    async def test_a_message_whole_within_the_deadline_leaves_the_socket_open(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(options=AppOptions(message_deadline_seconds=0.5))
        async with raw_client(gateway) as client:
            text = health_text(100_000)
            client.write(masked_frame(text[:60_000], fin=False))
            await client.pinged()
            client.write(masked_frame(text[60_000:], opcode=0x0))
            assert (await client.response("big"))["ok"] is True
            # The deadline was the message's: the socket outlives it idle.
            await asyncio.sleep(1.0)
            client.write(masked_frame(b'{"type":"req","id":"h","method":"health"}'))
            assert (await client.response("h"))["ok"] is True


class TestPartialBytesOfAllSockets:
    async def test_the_socket_that_would_go_over_the_total_is_closed_1013(
        self, make_gateway: MakeGateway
    ) -> None:
        settings = WsSettings(max_payload=1_000_000, max_partial_total_bytes=300_000)
        gateway = await make_gateway(settings=settings)
        budget = gateway.app[WS].partial_frames
        text = health_text(400_000)
        async with raw_client(gateway) as first:
            first.write(masked_frame(text[:200_000], fin=False))
            await first.pinged()
            assert budget.held == 200_000
            async with raw_client(gateway) as second:
                second.write(masked_frame(text[:200_000], fin=False))
                closed = await second.closed()
            assert closed == (1013, b"too many partial messages; try again later")
            await until(lambda: budget.held == 200_000)  # the closed one's bytes are let go
            first.write(masked_frame(text[200_000:], opcode=0x0))
            assert (await first.response("big"))["ok"] is True  # the other goes on
            assert budget.held == 0

    async def test_a_closed_socket_lets_its_partial_bytes_go(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway()
        budget = gateway.app[WS].partial_frames
        async with raw_client(gateway) as client:
            text = health_text(100_000)
            client.write(masked_frame(text[:50_000], fin=False))
            await client.pinged()
            assert budget.held == 50_000
        await until(lambda: budget.held == 0)  # once the gateway has read the socket's end

    async def test_what_many_sockets_trickling_large_frames_hold_stays_within_the_total(
        self, make_gateway: MakeGateway
    ) -> None:
        # Eight sockets each with 400 kB of a 2 MB message begun: without the total the
        # gateway holds all 3.2 MB until their clients send the rest; with a total of 1 MB,
        # two of them, and the six beyond it are closed.
        settings = WsSettings(max_payload=4_000_000, max_partial_total_bytes=1_000_000)
        gateway = await make_gateway(settings=settings)
        budget = gateway.app[WS].partial_frames
        piece = masked_frame(health_text(2_000_000)[:400_000], fin=False)
        clients = [await RawClient.connected(gateway) for _ in range(8)]
        outcomes = []
        try:
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for client in clients:
                    client.write(piece)
                    outcomes.append(await client.pinged_or_closed())
                # What the closed ones' readers had is let go with their sockets.
                await until(lambda: budget.held == 800_000)
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
        finally:
            for client in clients:
                await client.aclose()
        assert outcomes == [None, None] + [1013] * 6
        assert held < 1_400_000, held
