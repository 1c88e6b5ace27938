"""The app factory in process: probes, common headers, JSON errors for unknown routes and
unexpected failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.appkeys import STATE
from tests.support.configs import MakeConfig
from tests.support.raw_http import exchange_head_request, raw_exchange, request_bytes
from tests.support.served import production_logging

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(self), geolocation=()",
}


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_config: MakeConfig) -> Client:
    return await aiohttp_client(create_app(make_config()))


class TestProbes:
    @pytest.mark.parametrize("path", ["/health", "/healthz"])
    async def test_liveness_answers_ok(self, client: Client, path: str) -> None:
        response = await client.get(path)
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"
        assert await response.read() == b'{"ok":true,"status":"live"}'

    @pytest.mark.parametrize("path", ["/ready", "/readyz"])
    async def test_readiness_is_ready_once_started(self, client: Client, path: str) -> None:
        response = await client.get(path)
        assert (response.status, await response.read()) == (200, b'{"ready":true}')

    async def test_head_has_no_body(self, client: Client) -> None:
        response = await client.head("/readyz")
        assert response.status == 200
        assert await response.read() == b""

    async def test_readiness_fails_while_draining_with_details_for_loopback(
        self, client: Client
    ) -> None:
        client.app[STATE].draining = True
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["ready"] is False and body["failing"] == ["shutdown"]
        assert isinstance(body["uptimeMs"], int)

    @pytest.mark.parametrize("path", ["/ready", "/readyz"])
    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    async def test_not_ready_says_when_to_ask_again(
        self, client: Client, path: str, method: str
    ) -> None:
        # A load balancer or `curl --retry` reads Retry-After on a 503 (RFC 9110 §10.2.3).
        client.app[STATE].draining = True
        assert client.port is not None
        answer = await exchange_head_request(client.port, request_bytes(method, path))
        assert answer.status == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["cache-control"] == "no-store"
        if method == "HEAD":
            assert answer.body == b""

    async def test_other_methods_get_405_json_with_allow(self, client: Client) -> None:
        response = await client.post("/healthz")
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"
        assert await response.read() == (
            b'{"error":{"message":"Method Not Allowed","type":"invalid_request_error",'
            b'"param":null,"code":null}}'
        )


class TestCommonHeaders:
    async def test_every_response_carries_them(self, client: Client) -> None:
        for response in (await client.get("/healthz"), await client.get("/no/such/path")):
            for name, value in COMMON.items():
                assert response.headers[name] == value
            assert len(response.headers["x-request-id"]) == 32

    async def test_a_valid_request_id_is_echoed(self, client: Client) -> None:
        response = await client.get("/healthz", headers={"x-request-id": "req-1:a.b_C"})
        assert response.headers["x-request-id"] == "req-1:a.b_C"

    async def test_an_invalid_request_id_is_replaced(self, client: Client) -> None:
        response = await client.get("/healthz", headers={"x-request-id": "bad id!"})
        assert response.headers["x-request-id"] != "bad id!"
        assert len(response.headers["x-request-id"]) == 32


class TestUnknownPaths:
    async def test_answer_404_in_the_json_error_shape(self, client: Client) -> None:
        response = await client.get("/no/such/path")
        assert response.status == 404
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await response.read() == (
            b'{"error":{"message":"Not Found","type":"not_found_error","param":null,"code":null}}'
        )


class TestExpect:
    """RFC 9110 §10.1.1: `100-continue` gets its 100 Continue when the handler reads the body
    (tests/http/test_expect.py); any other expectation is ignored, as the RFC allows, whatever
    bytes it holds."""

    HOOKS = '{hooks: {enabled: true, token: "hook-secret-1"}}'

    async def test_100_continue_without_a_body_is_answered_at_once(self, client: Client) -> None:
        """The RFC lets a server leave the 100 out when the framing says there is no body."""
        request = request_bytes("GET", "/healthz", {"Expect": "100-continue"})
        status, _, _ = await raw_exchange(client.port, request)
        assert status == 200

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/healthz", 200),
            ("/", 200),
            ("/ui/app.js", 200),
            ("/no/such/path", 404),
            ("/metrics", 401),
            ("/hooks/wake", 405),
        ],
    )
    @pytest.mark.parametrize("value", [b"\xff\xfe", b"\xed\xa0\x80", b"x-other"])
    async def test_another_expectation_is_ignored(
        self,
        aiohttp_client: AiohttpClient,
        make_config: MakeConfig,
        path: str,
        status: int,
        value: bytes,
    ) -> None:
        client = await aiohttp_client(create_app(make_config(self.HOOKS)))
        got, _, body = await raw_exchange(
            client.port, request_bytes("GET", path, {"Expect": value})
        )
        assert got == status, body


class TestLifetime:
    async def test_the_store_is_open_while_the_app_runs_and_closed_after(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig
    ) -> None:
        config = make_config()
        client = await aiohttp_client(create_app(config))
        state = client.app[STATE]
        assert state.store is not None and state.registry is not None
        assert config.sessions_path.is_file()
        await client.close()
        assert state.store is None and state.registry is None


class TestRequestLog:
    async def test_a_websocket_open_at_shutdown_is_not_logged_as_a_500(
        self, client: Client
    ) -> None:
        """Stopping the server cancels the socket's handler; nobody received a 500."""
        ws = await client.ws_connect("/")
        with capture_logs() as logs:
            await client.close()
        assert ws.closed or await ws.receive()
        lines = [entry for entry in logs if entry["event"] == "http_request"]
        assert [(line["path"], line["status"]) for line in lines] == [("/", 499)]

    async def test_a_path_s_control_characters_reach_the_console_log_escaped(
        self, client: Client
    ) -> None:
        """The console format is read on a terminal: a path's ESC or BEL (`%1B`, `%07`) would
        be a terminal control sequence there (OSC 52 writes the clipboard), as a C1 CSI
        (`%C2%9B`); each is shown as an escape instead."""
        with production_logging("console") as log:
            response = await client.get("/%1B]52;c;ZWNobyBoaQ%07/ok%C2%9B")
            assert response.status == 404
        (line,) = (li for li in log.stream.getvalue().splitlines() if "http_request" in li)
        assert "path=/\\x1b]52;c;ZWNobyBoaQ\\x07/ok\\x9b " in line
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line)

    async def test_a_json_line_escapes_del_c1_and_line_separators(self, client: Client) -> None:
        """JSON escapes C0 controls, not DEL or C1 (`%7F`, `%C2%85`): raw, they make the line
        binary to journald (`journalctl` shows `[blob data]`) and act on a terminal; nor
        U+2028, where Python's `splitlines()` ends a line."""
        with production_logging() as log:
            for path in ("/a%7Fb", "/c%C2%85d%C2%9B%E2%80%A8"):
                assert (await client.get(path)).status == 404
        lines = [li for li in log.stream.getvalue().split("\n") if "http_request" in li]
        assert [li[: li.index('","status"')] for li in lines] == [
            '{"method":"GET","path":"/a\\u007fb',
            '{"method":"GET","path":"/c\\u0085d\\u009b\\u2028',
        ]
        assert [e["path"] for e in log.read() if e["event"] == "http_request"] == [
            "/a\x7fb",
            "/c\x85d\x9b\u2028",
        ]


class TestUnexpectedErrors:
    """§8: a bug in the gateway is a 500 in the error shape, logged once with its traceback;
    an answer already started is cut, never followed by a second one."""

    INTERNAL = b'{"error":{"message":"internal error","type":"api_error","param":null,"code":null}}'

    @staticmethod
    async def crash(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug")

    @staticmethod
    async def crash_mid_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"n":1}\n\n')
        raise RuntimeError("a bug")

    async def app_with(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig, handler: Handler
    ) -> Client:
        app = create_app(make_config())
        app.router.add_get("/test/crash", handler)
        return await aiohttp_client(app)

    async def test_a_crash_before_answering_is_a_json_500(
        self,
        aiohttp_client: AiohttpClient,
        make_config: MakeConfig,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        client = await self.app_with(aiohttp_client, make_config, self.crash)
        with capture_logs() as logs:
            response = await client.get("/test/crash", headers={"x-request-id": "req-9"})
            body = await response.read()
        assert response.status == 500
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["x-request-id"] == "req-9"
        for name, value in COMMON.items():
            assert response.headers[name] == value
        assert body == self.INTERNAL
        crashes = [entry for entry in logs if entry.get("exc_info")]
        assert [entry["event"] for entry in crashes] == ["http_handler_crashed"]
        assert not [r for r in caplog.records if r.name.startswith("aiohttp")]
        lines = [entry for entry in logs if entry["event"] == "http_request"]
        assert [line["status"] for line in lines] == [500]

    async def test_a_crash_after_the_first_bytes_cuts_the_answer(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig
    ) -> None:
        client = await self.app_with(aiohttp_client, make_config, self.crash_mid_stream)
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            writer.write(request_bytes("GET", "/test/crash", {}))
            await writer.drain()
            received = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'data: {"n":1}' in received
        assert b"internal error" not in received
        assert b"HTTP/1.1 500" not in received
