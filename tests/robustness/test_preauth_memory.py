"""Memory before login (ws-protocol.md §2.3): a frame over 64 KiB before hello-ok is refused
from its header, so a client that announces 25 MiB costs the gateway nothing like 25 MiB.

Against a real `clawgate run`: eight unauthenticated sockets each start a 25 MiB text frame
and keep writing. Each is closed with 1009 long before its frame is through, and the
process's resident memory stays where it was (it used to read each frame whole).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import GatewayProcess, running

CHUNK_SIZE = 256 * 1024

# Just under the 25 MiB maxPayload: the largest frame the gateway accepts after hello-ok.
FRAME = 25 * 1024 * 1024 - CHUNK_SIZE
SOCKETS = 8
# Python, aiohttp and the store take some 50 MiB; eight frames read whole took 200+ MiB more.
RSS_GROWTH_LIMIT = 48 * 1024 * 1024


@pytest.fixture
def process(tmp_path: Path) -> Iterator[GatewayProcess]:
    config = {"gateway": {"auth": {"mode": "token", "token": "t-1"}}}
    with running(tmp_path, json.dumps(config)) as gateway:
        yield gateway


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def oversized_frame(port: int) -> tuple[tuple[int, bytes] | str, int]:
    """Upgrade, then write a 25 MiB frame until the server closes. Returns the close code and
    reason received (or "reset": the server closed with the rest of the frame unread, and the
    reset may overtake its close frame), and the payload bytes the client got out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(struct.pack("!BBQ", 0x81, 0x80 | 127, FRAME) + b"\0\0\0\0")  # mask 0: plain
    sent = 0

    async def write() -> None:
        nonlocal sent
        chunk = b"x" * CHUNK_SIZE
        while sent < FRAME:
            writer.write(chunk)
            await writer.drain()
            sent += CHUNK_SIZE

    writing = asyncio.create_task(write())
    try:
        async with asyncio.timeout(30):
            while True:
                first, second = await reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                payload = await reader.readexactly(length)
                if first & 0x0F == 0x8:  # close
                    return (struct.unpack("!H", payload[:2])[0], payload[2:]), sent
    except (ConnectionError, asyncio.IncompleteReadError):
        return "reset", sent
    finally:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writing
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def test_eight_25_mib_frames_before_login_are_refused_unread(
    process: GatewayProcess,
) -> None:
    before = rss(process.proc.pid)
    results = await asyncio.gather(*(oversized_frame(process.port) for _ in range(SOCKETS)))
    after = rss(process.proc.pid)
    for outcome, sent in results:
        assert outcome in ((1009, b"preauth payload too large"), "reset"), outcome
        # Closed while most of the frame was still to come: only the kernel's buffers and
        # the 64 KiB limit's worth were taken.
        assert sent < FRAME // 2, sent
    assert after - before < RSS_GROWTH_LIMIT, (before, after)
