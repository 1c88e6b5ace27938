"""The upstream HTTP/1.1 client (agents/providers/upstream_client.py) against real loopback servers.

Most servers here are raw `asyncio.start_server` ones that read the request and write scripted
bytes, so a test controls the framing byte by byte (pieces are written a little apart, so the
client gets them in separate reads). HTTPS uses a self-signed certificate the openssl CLI makes.
`TestOnUvloop` runs the main paths again on uvloop, the loop `clawgate run` uses: its transports
are not `asyncio.Transport` subclasses, and its TLS is its own.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

import attrs
import pytest
import uvloop

from agents.providers import upstream_client
from agents.providers.timeouts import Timeouts
from agents.providers.upstream_client import (
    MAX_HEAD_BYTES,
    UpstreamClient,
    UpstreamProtocolError,
    UpstreamResponse,
    request_head,
    upstream_target,
)
from tests.support.upstreams import closed_port, silent_server

TIMEOUTS = Timeouts(connect=1.0, idle=1.0)
SHORT_IDLE = Timeouts(connect=1.0, idle=0.2)
# The longest a test waits for something that should happen at once.
WAIT_S = 1.0
# Between two scripted writes: long enough for the client to read them apart.
PIECE_DELAY = 0.01
CHUNKED = "Transfer-Encoding: chunked"
LAST_CHUNK = b"0\r\n\r\n"


# -- scripted responses --------------------------------------------------------------------


def head(status: str = "200 OK", *headers: str, version: str = "HTTP/1.1") -> bytes:
    """A status line and headers, through the blank line."""
    lines = [f"{version} {status}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ok(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    """A whole Content-Length response."""
    return head(status, f"Content-Length: {len(body)}", *headers) + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# -- a raw server ----------------------------------------------------------------------------


@attrs.frozen
class Request:
    """One request as the server read it off the wire."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.values(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


class Peer:
    """One connection the server accepted."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.index = index
        self.reader = reader
        self.writer = writer
        self.requests: list[Request] = []
        self.after = b""  # what the client sent once the handler was done with it
        self.gone = asyncio.Event()  # the client hung up

    async def request(self) -> Request | None:
        """The next request, or None once the client hung up."""
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        line, *fields = raw.decode("latin-1").split("\r\n")[:-2]
        method, target, version = line.split(" ")
        headers = tuple((name, value.strip()) for name, value in (f.split(":", 1) for f in fields))
        lengths = [value for name, value in headers if name.lower() == "content-length"]
        body = await self.reader.readexactly(int(lengths[0])) if lengths else b""
        request = Request(method, target, version, headers, body)
        self.requests.append(request)
        return request

    async def send(self, *pieces: bytes, delay: float = PIECE_DELAY) -> None:
        """Write `pieces` `delay` seconds apart."""
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(delay)
            self.writer.write(piece)
            await self.writer.drain()

    def hang_up(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0), not a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def wait_gone(self) -> None:
        """Until the client has closed the connection."""
        await asyncio.wait_for(self.gone.wait(), WAIT_S)


Handler = Callable[[Peer], Awaitable[None]]


class RawServer:
    """Runs `handler` on each connection; once it returns (without hanging up), reads what
    the client still sends until the client hangs up."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/v1/x") -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> list[Request]:
        return [request for peer in self.peers for request in peer.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._handler(peer)
            if not writer.is_closing():
                peer.after += await reader.read()
                peer.gone.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            peer.gone.set()  # the client hung up while the handler wrote or read
        except Exception as exc:  # a broken script: the test fails at teardown
            self.errors.append(exc)
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for peer in self.peers:
            peer.writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self.errors:
            raise self.errors[0]


class Serve(Protocol):
    async def __call__(
        self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None
    ) -> RawServer: ...


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a raw server on 127.0.0.1 (closed after the test)."""
    servers: list[RawServer] = []

    async def start(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(handler, ssl_context)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.aclose()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient()
    yield upstream
    await upstream.aclose()


def every_request(*pieces: bytes, delay: float = PIECE_DELAY) -> Handler:
    """Answer each request on a connection with `pieces`, until the client hangs up."""

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(*pieces, delay=delay)

    return handler


def one_request(*pieces: bytes, hang_up: bool = False) -> Handler:
    """Answer one request with `pieces`, then hang up or wait for the client to."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(*pieces)
        if hang_up:
            peer.hang_up()

    return handler


def gated(gate: asyncio.Event, first: tuple[bytes, ...], then: bytes) -> Handler:
    """Answer one request with `first`, then, once the client set `gate`, with `then`."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(*first)
        await asyncio.wait_for(gate.wait(), WAIT_S)
        await peer.send(then)

    return handler


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.005)


async def post(
    client: UpstreamClient,
    server: RawServer,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
    timeouts: Timeouts = TIMEOUTS,
) -> UpstreamResponse:
    return await client.post(server.url(), headers or {}, body, timeouts)


async def fetch(client: UpstreamClient, server: RawServer) -> bytes:
    """Post, read the whole body, release the response."""
    response = await post(client, server)
    try:
        return await response.read(1 << 20)
    finally:
        response.release()


async def two_released_together(serve: Serve, client: UpstreamClient) -> RawServer:
    """Two fetches on two connections, answered once both requests are in: both connections
    come back to the pool at about the same time."""
    both_in = asyncio.Event()

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            if len(server.requests) == 2:
                both_in.set()
            await both_in.wait()
            await peer.send(ok(b"abc"))

    server = await serve(handler)
    assert await asyncio.gather(fetch(client, server), fetch(client, server)) == [b"abc"] * 2
    return server


# -- pure functions ------------------------------------------------------------------------


class TestTarget:
    def test_origin_is_scheme_host_port_in_lower_case(self) -> None:
        assert upstream_target("HTTP://API.Example.com:8080/v1").origin == (
            "http",
            "api.example.com",
            8080,
        )

    @pytest.mark.parametrize(
        ("url", "port"), [("http://h/", 80), ("https://h/", 443), ("http://h:80/", 80)]
    )
    def test_port_defaults_by_scheme(self, url: str, port: int) -> None:
        assert upstream_target(url).origin[2] == port

    def test_path_keeps_the_query_and_drops_the_fragment(self) -> None:
        assert (
            upstream_target("http://h/v1/chat?api-version=2&x=1#frag").path
            == "/v1/chat?api-version=2&x=1"
        )

    def test_empty_path_is_slash(self) -> None:
        assert upstream_target("http://h").path == "/"
        assert upstream_target("http://h?q=1").path == "/?q=1"

    @pytest.mark.parametrize("url", ["http://h/", "http://h:80/", "https://h/", "https://h:443/"])
    def test_host_header_omits_the_default_port(self, url: str) -> None:
        assert upstream_target(url).host == "h"

    @pytest.mark.parametrize(
        ("url", "host"),
        [("http://h:443/", "h:443"), ("https://h:80/", "h:80"), ("http://h:8080", "h:8080")],
    )
    def test_host_header_carries_a_non_default_port(self, url: str, host: str) -> None:
        assert upstream_target(url).host == host

    @pytest.mark.parametrize(
        ("url", "host"),
        [("http://[::1]:8080/", "[::1]:8080"), ("https://[2001:db8::1]/", "[2001:db8::1]")],
    )
    def test_ipv6_host_is_bracketed_in_the_host_header(self, url: str, host: str) -> None:
        assert upstream_target(url).host == host

    def test_ipv6_origin_host_is_unbracketed_for_connecting(self) -> None:
        assert upstream_target("http://[::1]:8080/").origin == ("http", "::1", 8080)

    @pytest.mark.parametrize("url", ["ftp://h/", "ws://h/", "file:///etc/passwd", "h/v1", "//h/v1"])
    def test_refuses_a_scheme_other_than_http_and_https(self, url: str) -> None:
        with pytest.raises(ValueError, match="scheme"):
            upstream_target(url)

    @pytest.mark.parametrize(
        ("url", "pair"),
        [
            ("http://user:pass@h/", b"user:pass"),
            ("https://key@h/", b"key:"),
            ("http://:pw@h/", b":pw"),
            ("http://us%40er:p%3Ass@h/", b"us@er:p:ss"),
        ],
    )
    def test_credentials_in_the_url_are_basic_auth(self, url: str, pair: bytes) -> None:
        lines = request_head(upstream_target(url), {}, 0).split(b"\r\n")
        assert b"Authorization: Basic " + base64.b64encode(pair) in lines
        assert upstream_target(url).host == "h"

    def test_credentials_in_the_url_and_an_authorization_header_are_refused(self) -> None:
        with pytest.raises(ValueError, match="both in the URL and in an Authorization header"):
            request_head(upstream_target("http://u:p@h/"), {"Authorization": "Bearer k"}, 0)

    def test_no_authorization_without_credentials(self) -> None:
        assert b"Authorization" not in request_head(upstream_target("http://h/"), {}, 0)

    @pytest.mark.parametrize("url", ["http:///v1", "https://:8080/v1"])
    def test_refuses_a_url_without_host(self, url: str) -> None:
        with pytest.raises(ValueError, match="no host"):
            upstream_target(url)

    @pytest.mark.parametrize("url", ["http://h:99999/", "http://h:port/", "http://h:0/"])
    def test_refuses_a_bad_port(self, url: str) -> None:
        with pytest.raises(ValueError):
            upstream_target(url)

    @pytest.mark.parametrize("path", ["/v1 HTTP/1.0", "/v1\x00x"])
    def test_url_path_cannot_change_the_request_line(self, path: str) -> None:
        """Refused, or escaped: the request line stays `POST <target> HTTP/1.1`."""
        try:
            target = upstream_target(f"http://h{path}")
        except ValueError:
            return
        line = request_head(target, {}, 0).split(b"\r\n", 1)[0]
        method, sent_path, version = line.split(b" ")
        assert (method, version) == (b"POST", b"HTTP/1.1")
        assert all(0x21 <= byte < 0x7F for byte in sent_path)


class TestRequestHead:
    def test_is_request_line_then_given_headers_then_ours(self) -> None:
        head_bytes = request_head(
            upstream_target("http://api.test:8080/v1/chat?x=1"), {"Authorization": "Bearer k"}, 12
        )
        assert head_bytes == (
            b"POST /v1/chat?x=1 HTTP/1.1\r\n"
            b"Authorization: Bearer k\r\n"
            b"Host: api.test:8080\r\n"
            b"User-Agent: clawgate\r\n"
            b"Accept-Encoding: identity\r\n"
            b"Content-Length: 12\r\n"
            b"\r\n"
        )

    def test_content_length_is_set_for_an_empty_body(self) -> None:
        assert b"\r\nContent-Length: 0\r\n\r\n" in request_head(upstream_target("http://h/"), {}, 0)

    @pytest.mark.parametrize(
        "name", ["Content-Length", "transfer-encoding", "CONNECTION", "Accept-Encoding"]
    )
    def test_provider_framing_headers_are_dropped(self, name: str) -> None:
        lines = request_head(upstream_target("http://h/"), {name: "gzip, chunked, 999"}, 3).split(
            b"\r\n"
        )
        assert f"{name}: gzip, chunked, 999".encode() not in lines
        assert b"Accept-Encoding: identity" in lines
        assert b"Content-Length: 3" in lines

    def test_provider_host_replaces_ours(self) -> None:
        lines = request_head(
            upstream_target("http://10.0.0.1:8080/"), {"host": "api.test"}, 0
        ).split(b"\r\n")
        assert [line for line in lines if line.lower().startswith(b"host:")] == [b"host: api.test"]

    def test_provider_user_agent_replaces_ours(self) -> None:
        lines = request_head(upstream_target("http://h/"), {"User-Agent": "mine/1"}, 0)
        assert lines.count(b"User-Agent") == 1
        assert b"\r\nUser-Agent: mine/1\r\n" in lines

    def test_header_names_and_values_go_out_as_given(self) -> None:
        lines = request_head(
            upstream_target("http://h/"), {"X-Title": "Café  x", "anthropic-version": "1"}, 0
        )
        assert b"\r\nX-Title: Caf\xe9  x\r\nanthropic-version: 1\r\n" in lines

    @pytest.mark.parametrize(
        "value",
        ["a\r\nX-Evil: 1", "a\nX-Evil: 1", "a\rX", "a\x00b", "\r\n\r\nPOST /other HTTP/1.1"],
    )
    def test_header_value_with_cr_lf_or_nul_raises_value_error(self, value: str) -> None:
        with pytest.raises(ValueError):
            request_head(upstream_target("http://h/"), {"X-Key": value}, 0)

    @pytest.mark.parametrize("name", ["", "X Key", "X-Key:", "X\r\nEvil", "X-Ké", "(x)"])
    def test_header_name_that_is_not_a_token_raises_value_error(self, name: str) -> None:
        with pytest.raises(ValueError):
            request_head(upstream_target("http://h/"), {name: "v"}, 0)

    def test_value_outside_latin_1_raises_value_error(self) -> None:
        with pytest.raises(ValueError):
            request_head(upstream_target("http://h/"), {"X-Key": "€"}, 0)


# -- on the wire -----------------------------------------------------------------------------


class TestRequestOnTheWire:
    async def test_server_sees_path_host_framing_headers_and_body(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(ok(b"")))
        body = b'{"model": "m"}'
        response = await client.post(
            server.url("/v1/chat/completions?v=1"),
            {"Authorization": "Bearer k", "Content-Type": "application/json"},
            body,
            TIMEOUTS,
        )
        response.close()
        [request] = server.requests
        assert (request.method, request.target, request.version) == (
            "POST",
            "/v1/chat/completions?v=1",
            "HTTP/1.1",
        )
        assert request.header("Host") == f"127.0.0.1:{server.port}"
        assert request.header("Accept-Encoding") == "identity"
        assert request.header("Content-Length") == str(len(body))
        assert request.header("Authorization") == "Bearer k"
        assert request.header("Content-Type") == "application/json"
        assert request.body == body

    async def test_provider_framing_headers_do_not_reach_the_server(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(ok(b"")))
        headers = {
            "Content-Length": "999",
            "Transfer-Encoding": "chunked",
            "Connection": "close",
            "Accept-Encoding": "gzip",
        }
        (await post(client, server, b"abc", headers)).close()
        [request] = server.requests
        assert request.header("Content-Length") == "3"
        assert request.header("Accept-Encoding") == "identity"
        assert request.header("Transfer-Encoding") is None
        assert request.header("Connection") is None
        assert request.body == b"abc"


class TestBodyFraming:
    async def test_content_length_body_across_writes_is_read_whole(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("200 OK", "Content-Length: 11"), b"hello", b" ", b"world")
        )
        response = await post(client, server)
        assert await response.read(1000) == b"hello world"
        assert response.complete

    async def test_chunked_body_with_a_chunk_size_line_split_across_writes(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(
                head("200 OK", CHUNKED),
                b"1",
                b"0\r\n0123456789",
                b"abcdef\r\n3",
                b"\r\nxyz\r\n0\r",
                b"\n\r\n",
            )
        )
        response = await post(client, server)
        assert await response.read(1000) == b"0123456789abcdefxyz"
        assert response.complete and response.reusable

    async def test_http_1_0_body_without_length_ends_with_the_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("200 OK", version="HTTP/1.0"), b"par", b"tial", hang_up=True)
        )
        response = await post(client, server)
        assert await response.read(1000) == b"partial"
        assert response.complete and not response.reusable

    async def test_connection_close_body_without_length_ends_with_the_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("200 OK", "Connection: close"), b"a", b"b", b"c", hang_up=True)
        )
        response = await post(client, server)
        assert await response.read(1000) == b"abc"
        assert response.complete and not response.reusable

    async def test_100_continue_is_skipped_for_the_real_response(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("100 Continue", "X-Interim: 1"), ok(b"done", status="201 Created"))
        )
        response = await post(client, server)
        assert response.status == 201
        assert "x-interim" not in response.headers
        assert await response.read(1000) == b"done"

    async def test_trailers_after_the_last_chunk_end_the_body(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("200 OK", CHUNKED), chunk(b"abc"), b"0\r\nX-Checksum: 1\r\n\r\n")
        )
        response = await post(client, server)
        assert await response.read(1000) == b"abc"
        assert response.complete and response.reusable

    async def test_204_is_complete_without_a_body(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("204 No Content")))
        response = await post(client, server)
        assert await response.read(1000) == b""
        assert response.complete

    async def test_header_names_are_lower_case_and_repeats_joined(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(ok(b"", "X-Request-ID: 7", "Vary: Origin", "VARY: Accept"))
        )
        response = await post(client, server)
        assert response.headers["x-request-id"] == "7"
        assert response.headers["vary"] == "Origin, Accept"
        response.close()

    @pytest.mark.parametrize(
        ("header", "media_type"),
        [
            ("Content-Type: Text/Event-Stream; charset=UTF-8", "text/event-stream"),
            ("Content-Type: application/json", "application/json"),
            ("X-None: 1", ""),
        ],
    )
    async def test_content_type_is_the_lower_case_media_type(
        self, serve: Serve, client: UpstreamClient, header: str, media_type: str
    ) -> None:
        server = await serve(one_request(ok(b"", header)))
        response = await post(client, server)
        assert response.content_type == media_type
        response.close()

    async def test_bytes_after_a_complete_response_do_not_join_it(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """A server that writes more than the response (in the same write): the response
        stays what its framing says, and the connection is not used again."""
        extra = ok(b"bad", "X-Extra: 1", status="404 Not Found")
        server = await serve(one_request(ok(b"abc") + extra))
        response = await post(client, server)
        body = await response.read(1000)
        response.release()
        assert (response.status, body) == (200, b"abc")
        assert "x-extra" not in response.headers
        assert client.idle_connections == 0


class TestStatuses:
    @pytest.mark.parametrize(
        "status", ["400 Bad Request", "404 Not Found", "429 Too Many", "503 Busy"]
    )
    async def test_error_status_is_a_normal_response(
        self, serve: Serve, client: UpstreamClient, status: str
    ) -> None:
        server = await serve(one_request(ok(b'{"error": "x"}', status=status)))
        response = await post(client, server)
        assert response.status == int(status.split()[0])
        assert await response.read(1000) == b'{"error": "x"}'

    async def test_redirect_is_returned_not_followed(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"", "Location: /elsewhere", status="302 Found")))
        response = await post(client, server)
        assert response.status == 302
        assert response.headers["location"] == "/elsewhere"
        assert await response.read(1000) == b""
        response.release()
        await client.aclose()
        [peer] = server.peers
        await peer.wait_gone()
        assert [request.target for request in peer.requests] == ["/v1/x"]


class TestBrokenUpstreams:
    async def test_content_length_body_cut_by_close_raises_connection_reset(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("200 OK", "Content-Length: 10"), b"abc", hang_up=True)
        )
        response = await post(client, server)
        with pytest.raises(ConnectionResetError):
            await response.read(1000)

    async def test_chunked_body_cut_by_close_raises_connection_reset(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", CHUNKED), chunk(b"abc"), hang_up=True))
        response = await post(client, server)
        pieces: list[bytes] = []
        with pytest.raises(ConnectionResetError):
            await response.deliver(pieces.append)
        assert pieces == [b"abc"]

    async def test_close_delimited_body_cut_by_a_reset_raises_connection_reset(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        headed = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(head("200 OK", version="HTTP/1.0") + b"par")
            await headed.wait()
            peer.reset()

        server = await serve(handler)
        response = await post(client, server)
        headed.set()
        with pytest.raises(ConnectionResetError):
            await response.read(1000)

    async def test_close_before_the_head_raises_connection_reset(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(hang_up=True))
        with pytest.raises(ConnectionResetError):
            await post(client, server)

    @pytest.mark.parametrize(
        "status_line", [b"HTTP/1.1 2x0 OK\r\n\r\n", b"HTP/1.1 200 OK\r\n\r\n", b"garbage\r\n\r\n"]
    )
    async def test_malformed_status_line_raises_protocol_error(
        self, serve: Serve, client: UpstreamClient, status_line: bytes
    ) -> None:
        server = await serve(one_request(status_line))
        with pytest.raises(UpstreamProtocolError):
            await post(client, server)

    async def test_malformed_response_closes_the_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(b"HTTP/1.1 2x0 OK\r\n\r\n"))
        with pytest.raises(UpstreamProtocolError):
            await post(client, server)
        await server.peers[0].wait_gone()
        assert client.idle_connections == 0

    async def test_bad_chunk_size_raises_protocol_error(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", CHUNKED), chunk(b"ok"), b"zz\r\nabc\r\n"))
        response = await post(client, server)
        with pytest.raises(UpstreamProtocolError):
            await response.read(1000)

    async def test_headers_over_the_limit_raise_protocol_error(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        big = [f"X-Filler-{i}: {'v' * 1000}" for i in range(MAX_HEAD_BYTES // 1000 + 1)]
        server = await serve(one_request(head("200 OK", *big, "Content-Length: 0")))
        with pytest.raises(UpstreamProtocolError, match="headers over"):
            await post(client, server)

    async def test_one_header_over_the_limit_fails_before_its_end(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """A header value that never ends: it was only measured once whole, and httptools
        gathers it meanwhile (one bytes object, copied for every read), so the bound held
        nothing and the request waited for the idle timeout."""
        piece = b"v" * 16384
        pieces = [head("200 OK")[:-2] + b"X-Big: "] + [piece] * (MAX_HEAD_BYTES // 16384 + 2)
        server = await serve(one_request(*pieces))
        with pytest.raises(UpstreamProtocolError, match="headers over"):
            await post(client, server, timeouts=Timeouts(connect=1.0, idle=5.0))
        await server.peers[0].wait_gone()

    async def test_informational_responses_without_end_fail_at_the_limit(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """1xx heads one after the other, never the real one: they count as its head."""
        continues = head("100 Continue", "X-Filler: " + "v" * 1000) * 8
        pieces = [continues] * (MAX_HEAD_BYTES // len(continues) + 2)
        server = await serve(one_request(*pieces))
        with pytest.raises(UpstreamProtocolError, match="headers over"):
            await post(client, server, timeouts=Timeouts(connect=1.0, idle=5.0))
        await server.peers[0].wait_gone()

    async def test_trailers_without_end_fail_at_the_limit(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """A trailer value that never ends, after the last chunk: gathered as a header is."""
        piece = b"v" * 16384
        tail = [b"0\r\nX-Big: "] + [piece] * (MAX_HEAD_BYTES // 16384 + 2)
        server = await serve(one_request(head("200 OK", CHUNKED), chunk(b"abc"), *tail))
        response = await post(client, server, timeouts=Timeouts(connect=1.0, idle=5.0))
        pieces: list[bytes] = []
        with pytest.raises(UpstreamProtocolError, match="headers over"):
            await response.deliver(pieces.append)
        assert pieces == [b"abc"]
        response.close()
        await server.peers[0].wait_gone()

    async def test_headers_just_under_the_limit_are_accepted(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        big = [f"X-Filler-{i}: {'v' * 1000}" for i in range(MAX_HEAD_BYTES // 1000 - 2)]
        server = await serve(one_request(ok(b"ok", *big)))
        response = await post(client, server)
        assert await response.read(1000) == b"ok"

    @pytest.mark.parametrize("coding", ["gzip", "br", "deflate"])
    async def test_content_encoding_other_than_identity_is_refused(
        self, serve: Serve, client: UpstreamClient, coding: str
    ) -> None:
        server = await serve(one_request(ok(b"\x1f\x8b", f"Content-Encoding: {coding}")))
        with pytest.raises(UpstreamProtocolError, match="content-encoding"):
            await post(client, server)

    async def test_identity_content_encoding_is_accepted(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(ok(b"abc", "Content-Encoding: Identity")))
        response = await post(client, server)
        assert await response.read(1000) == b"abc"

    async def test_transfer_coding_other_than_chunked_is_refused(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """A gzip transfer coding is a coded body too: its bytes are not the payload."""
        server = await serve(
            one_request(
                head("200 OK", "Transfer-Encoding: gzip, chunked"), chunk(b"\x1f\x8b"), LAST_CHUNK
            )
        )
        with pytest.raises(UpstreamProtocolError):
            response = await post(client, server)
            await response.read(1000)

    async def test_switching_protocols_is_refused(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(
                head("101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade")
            )
        )
        with pytest.raises(UpstreamProtocolError, match="switched protocols"):
            await post(client, server)

    async def test_bytes_on_an_idle_connection_drop_it_from_the_pool(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        released = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(ok(b"abc"))
            if peer.index == 0:
                await released.wait()
                await peer.send(ok(b"unasked"))

        server = await serve(handler)
        assert await fetch(client, server) == b"abc"
        assert client.idle_connections == 1
        released.set()
        await server.peers[0].wait_gone()
        assert client.idle_connections == 0
        assert await fetch(client, server) == b"abc"
        assert client.connections_made == 2


class TestIdleTimeout:
    async def test_server_that_never_answers_times_out_and_is_disconnected(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request())
        with pytest.raises(TimeoutError):
            await post(client, server, timeouts=SHORT_IDLE)
        await server.peers[0].wait_gone()
        assert client.idle_connections == 0

    async def test_stall_mid_body_times_out_in_deliver(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", CHUNKED), chunk(b"abc")))
        response = await post(client, server, timeouts=SHORT_IDLE)
        pieces: list[bytes] = []
        with pytest.raises(TimeoutError):
            await response.deliver(pieces.append)
        assert pieces == [b"abc"]
        await server.peers[0].wait_gone()

    async def test_stall_mid_body_times_out_in_read(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", "Content-Length: 10"), b"abc"))
        response = await post(client, server, timeouts=SHORT_IDLE)
        with pytest.raises(TimeoutError):
            await response.read(1000)
        await server.peers[0].wait_gone()

    async def test_a_slow_body_with_short_gaps_does_not_time_out(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """Idle is per byte, not for the whole body: 6 gaps of a quarter of it, 1.5 of it."""
        gap = SHORT_IDLE.idle / 4
        pieces = [chunk(bytes([0x61 + i])) for i in range(6)]

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(head("200 OK", CHUNKED), *pieces, LAST_CHUNK, delay=gap)

        server = await serve(handler)
        response = await post(client, server, timeouts=SHORT_IDLE)
        assert await response.read(1000) == b"abcdef"

    async def test_a_head_trickled_byte_by_byte_times_out_with_no_progress(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        # A byte within every idle period, so the idle limit never passes: a header line
        # every 0.05 s, up to the head's size limit (at one a minute, 45 days).
        timeouts = Timeouts(connect=1.0, idle=0.2, progress=0.5)

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(b"HTTP/1.1 200 OK\r\n", *(b"X-A: b\r\n",) * 60, delay=0.05)

        server = await serve(handler)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError, match=r"nothing of the reply from the upstream for 0\.5"):
            await post(client, server, timeouts=timeouts)
        assert 0.45 < asyncio.get_running_loop().time() - started < 1.5
        await server.peers[0].wait_gone()

    async def test_a_body_trickled_byte_by_byte_times_out_in_read(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        timeouts = Timeouts(connect=1.0, idle=0.2, progress=0.5)

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(head("200 OK", "Content-Length: 100"), *(b"a",) * 60, delay=0.05)

        server = await serve(handler)
        response = await post(client, server, timeouts=timeouts)
        with pytest.raises(TimeoutError, match="nothing of the reply"):
            await response.read(1000)
        response.close()
        await server.peers[0].wait_gone()

    async def test_progress_the_reader_marks_keeps_a_slow_body_going(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        # The reader says which bytes were progress (the relay: a piece of the reply).
        timeouts = Timeouts(connect=1.0, idle=0.2, progress=0.3)
        pieces = [chunk(b"a") for _ in range(12)]

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(head("200 OK", CHUNKED), *pieces, LAST_CHUNK, delay=0.05)

        server = await serve(handler)
        response = await post(client, server, timeouts=timeouts)
        got: list[bytes] = []

        def sink(piece: bytes) -> None:
            got.append(piece)
            response.progressed = response.last_read

        await response.deliver(sink)
        assert b"".join(got) == b"a" * 12
        response.release()

    async def test_the_idle_timer_stops_at_the_body_end(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc")))
        response = await post(client, server, timeouts=SHORT_IDLE)
        assert await response.read(1000) == b"abc"
        await asyncio.sleep(SHORT_IDLE.idle * 1.5)
        response.release()
        assert client.idle_connections == 1
        response = await post(client, server, timeouts=SHORT_IDLE)
        assert await response.read(1000) == b"abc"
        assert client.connections_made == 1


class TestConnecting:
    async def test_refused_port_raises_oserror(self, client: UpstreamClient) -> None:
        with pytest.raises(OSError):
            await client.post(f"http://127.0.0.1:{closed_port()}/", {}, b"", TIMEOUTS)
        assert client.connections_made == 0

    async def test_tls_handshake_that_never_ends_is_a_connect_timeout(
        self, client: UpstreamClient
    ) -> None:
        """A TCP server that never answers the ClientHello: the handshake is part of connecting."""
        async with silent_server() as port:
            with pytest.raises(TimeoutError, match="connecting"):
                await client.post(f"https://127.0.0.1:{port}/", {}, b"", Timeouts(0.2, 5.0))
        assert client.connections_made == 0


class TestResolving:
    async def test_a_host_name_is_resolved_and_connected_to(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        # Through getaddrinfo and happy eyeballs; where localhost is also ::1, that address is
        # refused (the server listens on 127.0.0.1 only) and the next one taken.
        server = await serve(every_request(ok(b"found")))
        response = await client.post(f"http://localhost:{server.port}/v1/x", {}, b"", TIMEOUTS)
        assert await response.read(100) == b"found"
        response.release()
        assert server.requests[0].header("Host") == f"localhost:{server.port}"

    async def test_a_name_that_does_not_resolve_is_an_os_error(
        self, client: UpstreamClient
    ) -> None:
        with pytest.raises(OSError):
            await client.post("http://nonexistent.invalid/v1", {}, b"", TIMEOUTS)


class TestKeepAlive:
    async def test_released_complete_response_reuses_the_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc")))
        assert await fetch(client, server) == b"abc"
        assert await fetch(client, server) == b"abc"
        assert client.connections_made == 1
        assert len(server.peers) == 1
        assert len(server.peers[0].requests) == 2

    async def test_released_complete_response_leaves_one_idle_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc")))
        await fetch(client, server)
        assert client.idle_connections == 1

    async def test_response_closed_unread_is_not_reused(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc")))
        (await post(client, server)).close()
        assert client.idle_connections == 0
        await server.peers[0].wait_gone()
        assert await fetch(client, server) == b"abc"
        assert client.connections_made == 2
        assert len(server.peers) == 2

    async def test_response_released_before_its_end_closes_the_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", "Content-Length: 10"), b"abc"))
        response = await post(client, server)
        response.release()
        assert client.idle_connections == 0
        await server.peers[0].wait_gone()

    async def test_connection_close_response_is_not_reused(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc", "Connection: close")))
        assert await fetch(client, server) == b"abc"
        assert client.idle_connections == 0
        await server.peers[0].wait_gone()
        assert await fetch(client, server) == b"abc"
        assert client.connections_made == 2

    async def test_http_1_0_response_is_not_reused(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            every_request(head("200 OK", "Content-Length: 3", version="HTTP/1.0") + b"abc")
        )
        assert await fetch(client, server) == b"abc"
        assert client.idle_connections == 0
        await server.peers[0].wait_gone()

    async def test_connection_the_server_closed_while_idle_is_not_used_again(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        released = asyncio.Event()

        async def handler(peer: Peer) -> None:
            if peer.index == 0:
                await peer.request()
                await peer.send(ok(b"abc"))
                await released.wait()
                peer.hang_up()
            else:
                await every_request(ok(b"def"))(peer)

        server = await serve(handler)
        assert await fetch(client, server) == b"abc"
        assert client.idle_connections == 1
        released.set()
        await eventually(lambda: client.idle_connections == 0)
        assert await fetch(client, server) == b"def"
        assert client.connections_made == 2

    async def test_connection_the_server_closed_just_before_reuse_is_not_used(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        # The server's FIN is in our kernel, but the event loop has not run since (busy
        # elsewhere): the pool has not heard of the close when the next request takes the
        # connection.
        server = await serve(every_request(ok(b"abc")))
        assert await fetch(client, server) == b"abc"
        server.peers[0].writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        time.sleep(0.05)  # blocks the loop on purpose: the FIN arrives, unseen
        assert await fetch(client, server) == b"abc"
        assert client.connections_made == 2
        assert [len(peer.requests) for peer in server.peers] == [1, 1]

    async def test_connection_with_stray_bytes_waiting_is_not_reused(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        # Bytes the server sent after its answer, not read yet: that connection cannot tell
        # its next response from them.
        server = await serve(every_request(ok(b"abc")))
        assert await fetch(client, server) == b"abc"
        os.write(server.peers[0].writer.get_extra_info("socket").fileno(), b"HTTP/1.1 200 OK\r\n")
        time.sleep(0.05)
        assert await fetch(client, server) == b"abc"
        assert client.connections_made == 2

    async def test_concurrent_posts_use_two_connections(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        both_in = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.request()
            if len(server.requests) == 2:
                both_in.set()
            await both_in.wait()
            await peer.send(ok(b"abc"))

        server = await serve(handler)
        bodies = await asyncio.gather(fetch(client, server), fetch(client, server))
        assert bodies == [b"abc", b"abc"]
        assert client.connections_made == 2
        assert len(server.peers) == 2
        assert client.idle_connections == 2

    async def test_connection_idle_past_keepalive_seconds_is_closed_not_reused(
        self, serve: Serve, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(upstream_client, "KEEPALIVE_SECONDS", 0.0)
        server = await serve(every_request(ok(b"abc")))
        await fetch(client, server)
        assert await fetch(client, server) == b"abc"
        assert client.connections_made == 2
        await server.peers[0].wait_gone()

    async def test_idle_connections_over_the_cap_are_closed(
        self, serve: Serve, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(upstream_client, "MAX_IDLE_PER_ORIGIN", 1)
        server = await two_released_together(serve, client)
        assert client.idle_connections == 1
        await eventually(lambda: any(peer.gone.is_set() for peer in server.peers))


class TestFreedWithoutTheCollector:
    """A connection that ends is freed by reference counting: its parser holds its bound
    callbacks, so without the cut in connection_lost every closed connection (and its
    transport) would wait for the cyclic collector, which a busy gateway runs rarely."""

    @pytest.fixture(autouse=True)
    def collector_off(self) -> Iterator[None]:
        gc.collect()  # what earlier tests left
        gc.disable()
        try:
            yield
        finally:
            gc.enable()

    @staticmethod
    def alive(server: RawServer) -> int:
        """Connections to `server` that still exist, garbage or not."""
        return sum(
            1
            for obj in gc.get_objects()
            if type(obj) is upstream_client._Connection and obj.origin[2] == server.port
        )

    async def test_a_connection_the_server_closed_after_its_answer(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc", "Connection: close")))
        assert await fetch(client, server) == b"abc"
        await server.peers[0].wait_gone()
        await eventually(lambda: self.alive(server) == 0)

    async def test_a_connection_closed_over_the_idle_cap(
        self, serve: Serve, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(upstream_client, "MAX_IDLE_PER_ORIGIN", 1)
        server = await two_released_together(serve, client)
        await eventually(lambda: self.alive(server) == 1)  # the one kept idle

    async def test_an_idle_connection_the_server_hung_up(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        released = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(ok(b"abc"))
            await released.wait()
            peer.hang_up()

        server = await serve(handler)
        assert await fetch(client, server) == b"abc"
        released.set()
        await eventually(lambda: self.alive(server) == 0)

    async def test_a_connection_lost_while_its_response_was_read(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        cut_short = one_request(head("200 OK", "Content-Length: 10"), b"abc", hang_up=True)
        server = await serve(cut_short)
        response = await post(client, server)
        pieces: list[bytes] = []
        try:
            await response.deliver(pieces.append)
        except ConnectionResetError:
            pass
        else:
            pytest.fail("a body cut short must fail")
        response.close()
        del response
        await eventually(lambda: self.alive(server) == 0)


class TestDeliver:
    async def test_pieces_reach_the_sink_in_order_as_they_arrive(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """The server sends the next piece only once the sink has the one before."""
        delivered = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(head("200 OK", CHUNKED))
            for piece in (b"one", b"two", b"three"):
                delivered.clear()
                await peer.send(chunk(piece))
                await asyncio.wait_for(delivered.wait(), WAIT_S)
            await peer.send(LAST_CHUNK)

        def sink(piece: bytes) -> None:
            pieces.append(piece)
            delivered.set()

        pieces: list[bytes] = []
        server = await serve(handler)
        response = await post(client, server)
        await response.deliver(sink)
        assert pieces == [b"one", b"two", b"three"]
        assert response.complete

    async def test_body_bytes_that_came_with_the_head_are_delivered_first(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        delivered = asyncio.Event()
        first = head("200 OK", CHUNKED) + chunk(b"early")

        def sink(piece: bytes) -> None:
            pieces.append(piece)
            delivered.set()

        pieces: list[bytes] = []
        server = await serve(gated(delivered, (first,), chunk(b"late") + LAST_CHUNK))
        response = await post(client, server)
        await response.deliver(sink)
        assert pieces == [b"early", b"late"]

    async def test_delivered_response_is_reusable(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(head("200 OK", CHUNKED), chunk(b"abc"), LAST_CHUNK))
        response = await post(client, server)
        pieces: list[bytes] = []
        await response.deliver(pieces.append)
        response.release()
        assert b"".join(pieces) == b"abc"
        assert client.idle_connections == 1

    async def test_close_delimited_body_is_delivered_to_its_end(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("200 OK", version="HTTP/1.0"), b"ab", b"cd", hang_up=True)
        )
        response = await post(client, server)
        pieces: list[bytes] = []
        await response.deliver(pieces.append)
        assert b"".join(pieces) == b"abcd"

    async def test_sink_error_is_raised_by_deliver_and_closes_the_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        delivered = asyncio.Event()
        error = RuntimeError("the client went away")

        def sink(piece: bytes) -> None:
            delivered.set()
            if piece == b"two":
                raise error

        first = (head("200 OK", CHUNKED), chunk(b"one"))
        server = await serve(gated(delivered, first, chunk(b"two")))
        response = await post(client, server)
        with pytest.raises(RuntimeError) as caught:
            await response.deliver(sink)
        assert caught.value is error
        await server.peers[0].wait_gone()

    async def test_sink_error_on_a_piece_that_came_with_the_head_closes_the_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", CHUNKED) + chunk(b"early")))
        response = await post(client, server)
        error = RuntimeError("the client went away")

        def sink(piece: bytes) -> None:
            raise error

        with pytest.raises(RuntimeError) as caught:
            await response.deliver(sink)
        assert caught.value is error
        await server.peers[0].wait_gone()

    async def test_cancelled_deliver_hands_the_sink_nothing_more(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """Once deliver runs, two chunks come in one read; the task is cancelled while the
        first is delivered (as a cancel landing between two reads would be): the second does
        not reach the sink."""
        delivering = asyncio.Event()
        first = head("200 OK", CHUNKED) + chunk(b"zero")
        then = chunk(b"one") + chunk(b"two") + LAST_CHUNK

        def sink(piece: bytes) -> None:
            pieces.append(piece)
            delivering.set()
            if piece == b"one":
                task.cancel()

        pieces: list[bytes] = []
        server = await serve(gated(delivering, (first,), then))
        response = await post(client, server)
        task = asyncio.create_task(response.deliver(sink))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pieces == [b"zero", b"one"]
        response.close()

    async def test_close_after_a_cancelled_deliver_disconnects(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", CHUNKED), chunk(b"one")))
        response = await post(client, server)
        delivered = asyncio.Event()

        def sink(piece: bytes) -> None:
            delivered.set()

        task = asyncio.create_task(response.deliver(sink))
        await asyncio.wait_for(delivered.wait(), WAIT_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        response.close()
        await server.peers[0].wait_gone()
        assert client.idle_connections == 0


class TestReadLimit:
    async def test_read_returns_early_once_past_the_limit(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", "Content-Length: 100000") + b"x" * 100))
        response = await post(client, server)
        body = await response.read(50)
        assert 50 < len(body) < 100000
        assert not response.complete

    async def test_response_read_past_the_limit_is_not_reused(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(head("200 OK", "Content-Length: 1000") + b"x" * 100))
        response = await post(client, server)
        await response.read(50)
        response.release()
        assert client.idle_connections == 0
        await server.peers[0].wait_gone()

    async def test_body_of_exactly_the_limit_is_read_whole(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(
            one_request(head("200 OK", "Content-Length: 50"), b"x" * 20, b"y" * 30)
        )
        response = await post(client, server)
        assert await response.read(50) == b"x" * 20 + b"y" * 30
        assert response.complete


class TestClosing:
    async def test_aclose_closes_idle_connections(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc")))
        await fetch(client, server)
        await client.aclose()
        await server.peers[0].wait_gone()
        assert client.idle_connections == 0

    async def test_post_after_aclose_raises(self, serve: Serve, client: UpstreamClient) -> None:
        server = await serve(every_request(ok(b"abc")))
        await client.aclose()
        with pytest.raises(ConnectionError):
            await post(client, server)
        assert server.peers == []

    async def test_aclose_fails_a_response_being_read(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(one_request(head("200 OK", "Content-Length: 10"), b"abc"))
        response = await post(client, server)
        reading = asyncio.create_task(response.read(1000))
        await asyncio.sleep(0)
        await client.aclose()
        with pytest.raises(ConnectionResetError):
            await reading
        await server.peers[0].wait_gone()


class TestHeaderInjection:
    async def test_crlf_in_a_header_value_sends_nothing(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        """On a pooled connection, so that a half-written request would show up."""
        server = await serve(every_request(ok(b"abc")))
        await fetch(client, server)
        with pytest.raises(ValueError):
            await post(client, server, b"evil", {"X-Key": "k\r\n\r\nPOST /evil HTTP/1.1"})
        assert client.idle_connections == 1
        assert await fetch(client, server) == b"abc"
        assert [request.target for request in server.requests] == ["/v1/x", "/v1/x"]
        assert [request.body for request in server.requests] == [b"{}", b"{}"]

    async def test_crlf_in_a_header_value_opens_no_connection(
        self, serve: Serve, client: UpstreamClient
    ) -> None:
        server = await serve(every_request(ok(b"abc")))
        with pytest.raises(ValueError):
            await post(client, server, b"", {"X-Key": "k\r\nX-Evil: 1"})
        assert client.connections_made == 0


# -- HTTPS ---------------------------------------------------------------------------------


@attrs.frozen
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed: no certificate for the HTTPS tests")
    directory = tmp_path_factory.mktemp("tls")
    made = Certificate(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(made.key),
            "-out",
            str(made.cert),
        ],
        check=True,
        capture_output=True,
    )
    return made


@pytest.fixture
def server_tls(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


@pytest.fixture
async def trusting_client(certificate: Certificate) -> AsyncIterator[UpstreamClient]:
    """A client whose TLS context trusts the self-signed certificate."""
    upstream = UpstreamClient(ssl_context=ssl.create_default_context(cafile=certificate.cert))
    yield upstream
    await upstream.aclose()


class TestHTTPS:
    async def test_post_through_a_context_that_trusts_the_certificate(
        self, serve: Serve, trusting_client: UpstreamClient, server_tls: ssl.SSLContext
    ) -> None:
        server = await serve(every_request(ok(b"secure")), ssl_context=server_tls)
        assert server.url().startswith("https://")
        assert await fetch(trusting_client, server) == b"secure"
        assert server.requests[0].header("Host") == f"127.0.0.1:{server.port}"

    async def test_tls_connection_is_kept_alive(
        self, serve: Serve, trusting_client: UpstreamClient, server_tls: ssl.SSLContext
    ) -> None:
        server = await serve(every_request(ok(b"secure")), ssl_context=server_tls)
        await fetch(trusting_client, server)
        await fetch(trusting_client, server)
        assert trusting_client.connections_made == 1

    async def test_default_client_refuses_a_self_signed_certificate(
        self, serve: Serve, client: UpstreamClient, server_tls: ssl.SSLContext
    ) -> None:
        server = await serve(every_request(ok(b"secure")), ssl_context=server_tls)
        with pytest.raises(OSError) as caught:
            await post(client, server)
        assert isinstance(caught.value, ssl.SSLCertVerificationError)
        assert server.requests == []


class TestOnUvloop:
    """The main paths on uvloop, each scenario in a loop of its own (`uvloop.run`): keep-alive,
    push delivery, a whole read, TLS, the idle timeout, a broken response, cancellation."""

    def test_keep_alive_push_and_read(self) -> None:
        async def scenario() -> None:
            server = RawServer(every_request(head("200 OK", CHUNKED), chunk(b"ab"), LAST_CHUNK))
            await server.start()
            client = UpstreamClient()
            try:
                pieces: list[bytes] = []
                response = await post(client, server)
                await response.deliver(pieces.append)
                response.release()
                assert b"".join(pieces) == b"ab"
                assert await fetch(client, server) == b"ab"
                assert (client.connections_made, len(server.peers)) == (1, 1)
            finally:
                await client.aclose()
                await server.aclose()

        uvloop.run(scenario())

    def test_a_closed_connection_is_freed_without_the_collector(self) -> None:
        async def scenario() -> None:
            server = RawServer(every_request(ok(b"abc", "Connection: close")))
            await server.start()
            client = UpstreamClient()
            try:
                assert await fetch(client, server) == b"abc"
                await server.peers[0].wait_gone()
                await eventually(lambda: TestFreedWithoutTheCollector.alive(server) == 0)
            finally:
                await client.aclose()
                await server.aclose()

        gc.collect()
        gc.disable()
        try:
            uvloop.run(scenario())
        finally:
            gc.enable()

    def test_tls(self, certificate: Certificate, server_tls: ssl.SSLContext) -> None:
        async def scenario() -> None:
            server = RawServer(every_request(ok(b"secure")), server_tls)
            await server.start()
            trusting = ssl.create_default_context(cafile=certificate.cert)
            client = UpstreamClient(ssl_context=trusting)
            try:
                assert await fetch(client, server) == b"secure"
                assert await fetch(client, server) == b"secure"
                assert client.connections_made == 1
            finally:
                await client.aclose()
                await server.aclose()

        uvloop.run(scenario())

    def test_idle_timeout_and_a_broken_response(self) -> None:
        async def scenario() -> None:
            silent = RawServer(one_request())
            broken = RawServer(every_request(b"HTTP/1.1 abc OK\r\n\r\n"))
            await silent.start()
            await broken.start()
            client = UpstreamClient()
            try:
                with pytest.raises(TimeoutError):
                    await post(client, silent, timeouts=SHORT_IDLE)
                with pytest.raises(UpstreamProtocolError):
                    await post(client, broken)
                assert client.idle_connections == 0
            finally:
                await client.aclose()
                await silent.aclose()
                await broken.aclose()

        uvloop.run(scenario())

    def test_cancelled_delivery_closes_the_connection(self) -> None:
        async def scenario() -> None:
            pieces = [chunk(b"x") for _ in range(50)]
            server = RawServer(one_request(head("200 OK", CHUNKED), *pieces, LAST_CHUNK))
            await server.start()
            client = UpstreamClient()
            try:
                got: list[bytes] = []
                response = await post(client, server)

                def sink(piece: bytes) -> None:
                    got.append(piece)
                    if len(got) == 2:
                        task.cancel()

                task = asyncio.create_task(response.deliver(sink))
                with pytest.raises(asyncio.CancelledError):
                    await task
                response.close()
                assert len(got) == 2
                await server.peers[0].wait_gone()
            finally:
                await client.aclose()
                await server.aclose()

        uvloop.run(scenario())
