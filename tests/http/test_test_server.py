"""The gateway tests/http serve (tests/support/http_client.py) answers as `clawgate run`
does, also what never reaches the app: a request its HTTP parser refuses."""

from __future__ import annotations

import pytest

from tests.support.http_client import Client
from tests.support.raw_http import exchange

BAD_REQUEST = {
    "error": {
        "message": "Bad Request",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-\x01Bad: y\r\n\r\n",
        b"G@T /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ],
    ids=["header-name", "method"],
)
async def test_a_request_the_parser_refuses_gets_the_production_answer(
    client: Client, request_: bytes
) -> None:
    """aiohttp's own protocol answers these in plain text quoting the refused bytes; the
    gateway's (gateway/server.py) in the one error shape."""
    response = await exchange(client.port, request_)
    assert response.status == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json() == BAD_REQUEST
