"""RFC 9110 §10.1.1 on real sockets: `Expect: 100-continue` asks the server whether to send
the body at all. A refusal the head alone decides is the answer, with no 100 before it: the
client then does not send a body that would be thrown away."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.support.http_client import AUTH, CHAT, HI, TOKEN, Client, MakeClient
from tests.support.raw_http import exchange, read_head, read_response, request_head

HOOKS = {"hooks": {"enabled": True, "token": "hook-secret-1"}}
LARGE = 30 * 2**20  # over every body limit


# (path, the request's headers (with its Content-Length), status): refusals the head decides.
REFUSALS = [
    pytest.param(CHAT, {"Content-Type": "application/json"}, 401, id="no-credential"),
    pytest.param(
        CHAT, {**AUTH, "Authorization": "Bearer wrong-token-1"}, 401, id="wrong-credential"
    ),
    pytest.param(CHAT, {**AUTH, "Content-Type": "text/plain"}, 415, id="content-type"),
    pytest.param(CHAT, {**AUTH, "Content-Encoding": "br"}, 415, id="content-coding"),
    pytest.param("/v1/embeddings", {**AUTH, "Content-Encoding": "gzip, gzip"}, 415, id="stacked"),
    pytest.param(CHAT, {**AUTH, "Host": "evil.example"}, 421, id="host"),
    pytest.param("/hooks/wake", {"Content-Type": "application/json"}, 401, id="hook-credential"),
    pytest.param("/no/such/path", AUTH, 404, id="no-route"),
    pytest.param("/v1/models", AUTH, 405, id="method"),
]


def post_head(path: str, headers: dict[str, str], framing: dict[str, str]) -> bytes:
    """A POST head whose Host may be replaced by `headers`."""
    text = request_head("POST", path, {**headers, **framing}, close=False)
    if "Host" in headers:
        text = text.replace(b"Host: 127.0.0.1\r\n", b"", 1)
    return text


@pytest.fixture
async def hooked(gateway: MakeClient) -> Client:
    return await gateway(HOOKS)


class TestRefusedOnTheHead:
    @pytest.mark.parametrize(("path", "headers", "status"), REFUSALS)
    @pytest.mark.parametrize(
        "framing",
        [{"Content-Length": "200"}, {"Transfer-Encoding": "chunked"}],
        ids=["length", "chunked"],
    )
    async def test_the_refusal_comes_without_a_100_and_as_without_the_expectation(
        self,
        hooked: Client,
        path: str,
        headers: dict[str, str],
        status: int,
        framing: dict[str, str],
    ) -> None:
        """The answer is the one the same request gets without `Expect` (status, body), sent
        at once with `Connection: close`: the body was never asked for, and a client that
        sends it anyway must not have its bytes read as a next request."""
        plain = await exchange(hooked.port, post_head(path, headers, {"Content-Length": "0"}))
        assert plain.status == status, plain
        reader, writer = await asyncio.open_connection("127.0.0.1", hooked.port)
        try:
            writer.write(post_head(path, headers, {**framing, "Expect": "100-continue"}))
            async with asyncio.timeout(5):
                answer = await read_response(reader)
                assert answer.status == status, answer
                assert answer.body == plain.body
                assert answer.headers.get("connection") == "close"
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @pytest.mark.parametrize("path", [CHAT, "/v1/embeddings", "/hooks/wake"])
    async def test_a_length_over_the_limit_is_a_413_without_a_100(
        self, hooked: Client, path: str
    ) -> None:
        framing = {"Content-Length": str(LARGE), "Expect": "100-continue"}
        headers = {**AUTH, "Authorization": "Bearer hook-secret-1"} if "hooks" in path else AUTH
        answer = await exchange(hooked.port, post_head(path, headers, framing), within=5)
        assert answer.status == 413, answer
        assert answer.json()["error"]["type"] == "invalid_request_error"

    async def test_a_transfer_coding_is_a_400_without_a_100(self, hooked: Client) -> None:
        framing = {"Transfer-Encoding": "gzip, chunked", "Expect": "100-continue"}
        answer = await exchange(hooked.port, post_head(CHAT, AUTH, framing), within=5)
        assert answer.status == 400, answer
        assert answer.json()["error"]["code"] == "unsupported_transfer_encoding"


class TestAccepted:
    async def test_a_request_that_passes_its_head_gets_the_100_then_its_answer(
        self, client: Client
    ) -> None:
        body = json.dumps(HI).encode()
        framing = {"Content-Length": str(len(body)), "Expect": "100-continue"}
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            writer.write(request_head("POST", CHAT, {**AUTH, **framing}))
            async with asyncio.timeout(5):
                status, _ = await read_head(reader)
                assert status == 100
                writer.write(body)
                answer = await read_response(reader)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert answer.status == 200, answer
        assert answer.json()["object"] == "chat.completion"

    async def test_a_request_without_a_body_is_answered_without_a_100(self, client: Client) -> None:
        """RFC 9110 §10.1.1: a server may omit the 100 when the framing says there is no
        content; the connection stays open for the next request."""
        headers = {"Authorization": f"Bearer {TOKEN}", "Expect": "100-continue"}
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            for _ in range(2):
                writer.write(request_head("GET", "/v1/models", headers, close=False))
                async with asyncio.timeout(5):
                    answer = await read_response(reader)
                assert answer.status == 200, answer
                assert answer.headers.get("connection") != "close"
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
