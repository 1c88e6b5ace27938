"""Compressed chat completion bodies (gateway.http.content_coding) on a real `clawgate run`: gzip
and deflate decode, and a body limit that counts decoded bytes, so a "zip bomb" is a 413
after at most `maxBodyBytes` of it were inflated, never all of it."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.codings import held_back_body, raw_deflate
from tests.support.process import GatewayProcess, running
from tests.support.raw_http import exchange, read_response, request_bytes
from tests.support.served import AUTH, CHAT, SETTINGS

MIB = 1024 * 1024
DEFAULT_LIMIT = 20 * MIB  # maxBodyBytes when the config does not set it
HELLO_BODY = b'{"messages":[{"role":"user","content":"hello"}]}'
TOO_LARGE = (
    b'{"error":{"message":"Payload too large","type":"invalid_request_error",'
    b'"param":null,"code":null}}'
)
# What the gateway may grow by while it refuses a bomb: the body it holds (up to the limit;
# measured: 20 MiB) and some slack; inflating a 512 MiB bomb whole would be 16 times this.
BOMB_HEADROOM = DEFAULT_LIMIT + 12 * MIB


def zeros_gzip(size: int) -> bytes:
    """`size` zero bytes as one gzip member: about a thousandth of the size."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    parts = [packer.compress(block) for _ in range(size // MIB)]
    parts.append(packer.compress(bytes(size % MIB)))
    return b"".join([*parts, packer.flush()])


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    with running(tmp_path, json.dumps(SETTINGS)) as process:
        yield process


def peak_rss(process: GatewayProcess) -> int:
    """The process's high-water mark of resident memory, in bytes (Linux's VmHWM)."""
    status = Path(f"/proc/{process.proc.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


async def post(port: int, coding: str, body: bytes) -> tuple[int, bytes]:
    headers = {**AUTH, "Content-Encoding": coding}
    response = await exchange(port, request_bytes("POST", CHAT, headers, body), within=30)
    return response.status, response.body


class TestCompressedBodies:
    async def test_gzip_and_deflate_bodies_are_decoded(self, gateway: GatewayProcess) -> None:
        two_members = gzip.compress(HELLO_BODY[:9]) + gzip.compress(HELLO_BODY[9:])
        raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        raw = raw_deflate.compress(HELLO_BODY) + raw_deflate.flush()
        for coding, body in (
            ("gzip", gzip.compress(HELLO_BODY)),
            ("x-gzip", two_members),
            ("deflate", zlib.compress(HELLO_BODY)),  # RFC 9110's deflate: zlib-wrapped
            ("Deflate", raw),  # what many clients send under the name
            ("identity", HELLO_BODY),
        ):
            status, answer = await post(gateway.port, coding, body)
            assert status == 200, (coding, answer)
            assert json.loads(answer)["choices"][0]["message"]["content"].endswith("hello")

    async def test_a_raw_deflate_body_whose_last_piece_fills_a_step_is_decoded(
        self, gateway: GatewayProcess
    ) -> None:
        """The body's first byte arrives alone, the rest later: decoding that rest fills a
        step with the stream's last bytes still inside zlib. They are the end of the JSON."""
        body = held_back_body(b'{"messages":[{"role":"user","content":"')
        request = request_bytes(
            "POST", CHAT, {**AUTH, "Content-Encoding": "deflate"}, raw_deflate(body)
        )
        split = len(request) - len(raw_deflate(body)) + 1
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(request[:split])
            await writer.drain()
            await asyncio.sleep(0.3)  # the gateway reads the first byte on its own
            writer.write(request[split:])
            async with asyncio.timeout(30):
                response = await read_response(reader)
        finally:
            writer.close()
        assert response.status == 200, response.body
        assert json.loads(response.body)["choices"][0]["message"]["content"].endswith("aaa")

    async def test_a_gzip_bomb_is_a_413_without_being_inflated_whole(
        self, gateway: GatewayProcess
    ) -> None:
        """21 MiB from 21 KiB, and 512 MiB from half a MiB: both over the default limit as
        they decode, both refused, and the gateway's peak memory stays near the limit."""
        small, large = zeros_gzip(DEFAULT_LIMIT + MIB), zeros_gzip(512 * MIB)
        assert len(small) < 22 * 1024 and len(large) < 600 * 1024
        assert (await post(gateway.port, "gzip", gzip.compress(HELLO_BODY)))[0] == 200
        before = await asyncio.to_thread(peak_rss, gateway)
        assert await post(gateway.port, "gzip", small) == (413, TOO_LARGE)
        assert await post(gateway.port, "gzip", large) == (413, TOO_LARGE)
        grew = await asyncio.to_thread(peak_rss, gateway) - before
        assert grew < BOMB_HEADROOM, f"peak RSS grew by {grew / MIB:.0f} MiB"
        assert (await post(gateway.port, "gzip", gzip.compress(HELLO_BODY)))[0] == 200
