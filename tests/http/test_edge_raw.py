"""The HTTP edge against requests no client library sends, as raw bytes on a real socket:
framing that one hop may read otherwise than the next, conflicting headers, odd targets."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.support.http_client import AUTH, CHAT, HI, Client
from tests.support.raw_http import RawResponse, read_response

CHUNKED_HI = b"%x\r\n%s\r\n0\r\n\r\n" % (len(json.dumps(HI)), json.dumps(HI).encode())
NEXT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def head(first_line: str, headers: dict[str, str]) -> bytes:
    lines = [first_line, "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answers(port: int | None, data: bytes) -> list[RawResponse]:
    """Every response the connection gives to `data` before the server closes it."""
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got: list[RawResponse] = []
    try:
        writer.write(data)
        async with asyncio.timeout(10):
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


class TestHttp10TransferEncoding:
    @pytest.mark.parametrize(
        ("method", "path"), [("POST", CHAT), ("GET", "/v1/models"), ("GET", "/healthz")]
    )
    async def test_is_faulty_framing_refused_and_the_connection_closed(
        self, client: Client, method: str, path: str
    ) -> None:
        """RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding MUST be treated as having
        faulty framing and the connection closed: an HTTP/1.0 hop in front reads its body by
        Content-Length or to the close, so what the gateway reads as chunks (and the request
        after them) is not what the hop saw. It was read as chunked, answered, and the
        connection kept alive for the request that followed."""
        request = head(
            f"{method} {path} HTTP/1.0",
            {**AUTH, "Connection": "keep-alive", "Transfer-Encoding": "chunked"},
        )
        got = await answers(client.port, request + CHUNKED_HI + NEXT)
        assert [answer.status for answer in got] == [400]  # the next request is not served
        assert "connection" not in got[0].headers  # no keep-alive: HTTP/1.0 closes by default
        assert got[0].json()["error"] == {
            "message": "Transfer-Encoding is not allowed in an HTTP/1.0 request; "
            "send the body with a Content-Length.",
            "type": "invalid_request_error",
            "param": None,
            "code": "unsupported_transfer_encoding",
        }

    async def test_http_1_0_keep_alive_with_a_content_length_carries_the_next_request(
        self, client: Client
    ) -> None:
        body = json.dumps(HI).encode()
        request = head(
            f"POST {CHAT} HTTP/1.0",
            {**AUTH, "Connection": "keep-alive", "Content-Length": str(len(body))},
        )
        got = await answers(client.port, request + body + NEXT)
        assert [answer.status for answer in got] == [200, 200]
        assert got[0].headers["connection"] == "keep-alive"
