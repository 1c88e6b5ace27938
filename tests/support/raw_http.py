"""Raw HTTP over a bare socket, for what aiohttp's client will not send: bad escapes, lying
Content-Length, bodies that stop halfway, header values that are not text."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]  # names lowercased; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """A response's status and headers (names lowercased)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip(" \t").lower()] = value.strip(" \t")  # HTTP's whitespace only
    return int(status_line.split()[1]), headers


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One whole response: its body by Content-Length, chunked, or until EOF."""
    status, headers = await read_head(reader)
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")
        body = b"".join(parts)
    else:
        body = await reader.read()
    return RawResponse(status, headers, body)


async def raw_exchange(
    port: int | None, request: bytes, *, then: bytes = b"", within: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send `request` (and `then`), read one response; (status, headers, body).

    Header names come back lowercased.
    """
    assert port is not None, "the server is not listening"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request + then)
        await writer.drain()
        async with asyncio.timeout(within):
            response = await read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    return response.status, response.headers, response.body


def request_head(
    method: str, path: str, headers: Mapping[str, str] | None = None, *, close: bool = True
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request_bytes(
    method: str, path: str, headers: Mapping[str, str | bytes] | None = None, body: bytes = b""
) -> bytes:
    """An HTTP/1.1 request with `Connection: close`; header values may be raw bytes."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        raw = value if isinstance(value, bytes) else value.encode()
        lines.append(name.encode() + b": " + raw)
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(port: int, request: bytes, *, within: float = 10.0) -> RawResponse:
    """Send one request, read its whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    try:
        writer.write(request)
        async with asyncio.timeout(within):
            return await read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def exchange_all(port: int, data: bytes, *, within: float = 10.0) -> list[RawResponse]:
    """Send `data` (one request or several in a row) and read every response the connection
    gives before the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    got: list[RawResponse] = []
    try:
        writer.write(data)
        async with asyncio.timeout(within):
            while not reader.at_eof():
                try:
                    got.append(await read_response(reader))
                except asyncio.IncompleteReadError:
                    break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return got


async def exchange_head_request(port: int, request: bytes, *, within: float = 10.0) -> RawResponse:
    """One exchange of a HEAD request sent with `Connection: close`: its head, and as body
    every byte that came after it before the server closed (none, if it is right)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(within):
            status, headers = await read_head(reader)
            rest = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return RawResponse(status, headers, rest)


async def exchange_upgrade(port: int, request: bytes, *, within: float = 10.0) -> RawResponse:
    """One exchange of a WebSocket upgrade request; a 101 is returned at its head (the socket
    is then closed, the handshake unfinished), anything else with its Content-Length body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(within):
            status, headers = await read_head(reader)
            length = int(headers.get("content-length", "0")) if status != 101 else 0
            body = await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return RawResponse(status, headers, body)
