"""The HTTP edge against requests no client library sends, as raw bytes on a real socket:
framing that one hop may read otherwise than the next, conflicting headers, odd targets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.support.http_client import AUTH, CHAT, HI, Client, MakeClient
from tests.support.process import GatewayProcess, clean_env
from tests.support.raw_http import (
    RawResponse,
    exchange,
    exchange_all,
    exchange_head_request,
    exchange_upgrade,
    request_bytes,
)
from tests.support.served import SETTINGS
from tests.support.served import TOKEN as SERVED_TOKEN

CHUNKED_HI = b"%x\r\n%s\r\n0\r\n\r\n" % (len(json.dumps(HI)), json.dumps(HI).encode())
HOOK_TOKEN = "hook-token-5e1d"
HOOKS = {"hooks": {"enabled": True, "token": HOOK_TOKEN}}
NEXT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def head(first_line: str, headers: dict[str, str]) -> bytes:
    lines = [first_line, "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answers(port: int | None, data: bytes) -> list[RawResponse]:
    assert port is not None
    return await exchange_all(port, data)


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


class TestRepeatedCredentials:
    @pytest.mark.parametrize("order", ["right first", "wrong first"])
    @pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/readyz"])
    async def test_two_authorization_headers_are_a_400_whatever_their_order(
        self, gateway: MakeClient, order: str, path: str
    ) -> None:
        """Authorization is no list (RFC 9110 §11.6.2): two are ambiguous, and a proxy that
        checks one while the gateway reads the other is let through. The first one was
        taken: the right token first was a 200, the wrong one first a counted failure."""
        client = await gateway({"gateway": {"metrics": {"enabled": True}}})
        right, wrong = AUTH["Authorization"], "Bearer not-the-token"
        values = [right, wrong] if order == "right first" else [wrong, right]
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: {values[0]}\r\nAuthorization: {values[1]}\r\n\r\n"
        ).encode()
        got = await answers(client.port, request)
        assert [answer.status for answer in got] == [400]
        assert got[0].json()["error"] == {
            "message": "More than one Authorization header; send one.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }

    async def test_two_hook_tokens_are_a_400(self, gateway: MakeClient) -> None:
        client = await gateway(HOOKS)
        request = (
            "POST /hooks/wake HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n"
            f"x-openclaw-token: {HOOK_TOKEN}\r\nx-openclaw-token: other\r\n\r\n{{}}"
        ).encode()
        got = await answers(client.port, request)
        assert [answer.status for answer in got] == [400]
        assert got[0].json()["error"]["message"] == (
            "More than one X-OpenClaw-Token header; send one."
        )


class TestAbsoluteFormTarget:
    """RFC 9112 §3.2.2: a request-target in absolute form names the authority; the server
    MUST ignore Host then. The Host check read Host alone: `GET http://evil.example/...` with
    `Host: 127.0.0.1` was served, and the same target at 127.0.0.1 with `Host: evil.example`
    refused."""

    @pytest.mark.parametrize(
        "target",
        [
            "http://evil.example/v1/models",
            "HTTP://Evil.Example:18789/v1/models",
            "http://user@127.0.0.1/v1/models",  # user info: no authority we answer to
        ],
    )
    async def test_an_authority_not_allowed_is_refused_whatever_the_host(
        self, client: Client, target: str
    ) -> None:
        request = (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: {AUTH['Authorization']}\r\n\r\n"
        ).encode()
        got = await answers(client.port, request)
        assert [answer.status for answer in got] == [421]
        assert got[0].json()["error"]["code"] == "host_not_allowed"

    async def test_an_allowed_authority_is_served_whatever_the_host(self, client: Client) -> None:
        request = (
            f"GET http://127.0.0.1:{client.port}/v1/models HTTP/1.1\r\nHost: evil.example\r\n"
            f"Connection: close\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
        ).encode()
        got = await answers(client.port, request)
        assert [answer.status for answer in got] == [200]


class TestHttp10Streams:
    @pytest.mark.parametrize(
        ("path", "body"),
        [
            (CHAT, {**HI, "stream": True}),
            ("/v1/responses", {"model": "openclaw", "input": "hi", "stream": True}),
        ],
    )
    async def test_a_stream_asked_with_keep_alive_ends_with_the_connection(
        self, gateway: MakeClient, path: str, body: dict[str, object]
    ) -> None:
        """HTTP/1.0 has no chunked coding: a body of unknown length ends only when the
        connection closes (RFC 9112 §6.3). A client asking for keep-alive got a stream that
        said `Connection: keep-alive` and never ended: the connection stayed open after
        `[DONE]` until the idle timeout."""
        client = await gateway(
            {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
        )
        raw = json.dumps(body).encode()
        request = head(
            f"POST {path} HTTP/1.0",
            {**AUTH, "Connection": "keep-alive", "Content-Length": str(len(raw))},
        )
        got = await answers(client.port, request + raw)
        assert [answer.status for answer in got] == [200]
        assert got[0].headers["content-type"].startswith("text/event-stream")
        assert "transfer-encoding" not in got[0].headers
        if path == CHAT:
            assert got[0].body.endswith(b"data: [DONE]\n\n")
        else:
            assert b"event: response.completed" in got[0].body


class TestHead:
    async def test_every_get_route_answers_head_with_its_headers_and_no_body(
        self, gateway: MakeClient
    ) -> None:
        """RFC 9110 §9.3.2: HEAD is GET without the body, the same header fields (the
        Content-Length of the body a GET gets) included; checked route by route on the wire."""
        client = await gateway(
            {
                "gateway": {
                    "metrics": {"enabled": True},
                    "http": {"endpoints": {"responses": {"enabled": True}}},
                }
            }
        )
        assert client.port is not None
        created = await client.post(
            "/v1/responses", json={"model": "openclaw", "input": "hi"}, headers=AUTH
        )
        stored = (await created.json())["id"]
        paths = [
            "/health",
            "/healthz",
            "/ready",
            "/readyz",
            "/v1/models",
            "/v1/models/openclaw%2Fdefault",
            "/v1/models/nope",
            "/",
            "/ui/app.js",
            "/favicon.ico",
            f"/v1/responses/{stored}",
            f"/v1/responses/{stored}/input_items",
            "/v1/responses/resp_nope",
            "/nope",
        ]
        headers = {"Authorization": AUTH["Authorization"], "x-request-id": "head-check"}
        for path in [*paths, "/metrics"]:
            got = await exchange(client.port, request_bytes("GET", path, headers))
            head_only = await exchange_head_request(
                client.port, request_bytes("HEAD", path, headers)
            )
            assert (head_only.status, head_only.body) == (got.status, b""), path
            varying = {"date"} if path != "/metrics" else {"date", "content-length"}
            assert {k: v for k, v in head_only.headers.items() if k not in varying} == {
                k: v for k, v in got.headers.items() if k not in varying
            }, path
            if path != "/metrics":  # its counters move between the two requests
                assert int(head_only.headers.get("content-length", "0")) == len(got.body), path


class TestAbsoluteFormWebSocket:
    async def test_the_own_origin_of_an_upgrade_is_the_targets_authority_not_host(
        self, client: Client
    ) -> None:
        """The Origin check took the gateway's own origin from Host, which the Host check
        ignores for a target in absolute form: `Host: evil.example` with `Origin:
        http://evil.example` passed as same-origin (a 101)."""
        assert client.port is not None
        request = (
            f"GET http://127.0.0.1:{client.port}/ HTTP/1.1\r\nHost: evil.example\r\n"
            "Origin: http://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        response = await exchange_upgrade(client.port, request)
        assert response.status == 403
        assert response.json()["error"]["code"] == "origin_not_allowed"

    async def test_its_own_origin_in_absolute_form_is_let_in(self, client: Client) -> None:
        assert client.port is not None
        own = f"127.0.0.1:{client.port}"
        request = (
            f"GET http://{own}/ HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://{own}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        response = await exchange_upgrade(client.port, request)
        assert response.status == 101


class TestAbsoluteFormPaths:
    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/v1/models/openclaw", b'{"id":"openclaw",'),
            ("/v1/models/openclaw%2Fdefault", b'{"id":"openclaw/default",'),
            ("/v1//models", b'{"object":"list",'),
            ("//healthz", b'{"ok":true,'),
        ],
    )
    async def test_a_path_reads_the_same_in_absolute_form(
        self, client: Client, path: str, body: bytes
    ) -> None:
        """The model id and the merged `//` came from the raw target, which in absolute form
        starts with the scheme and authority: `Model 'http:/127.0.0.1:…/v1/models/openclaw'
        not found.`, and a 404 for `/v1//models`."""
        request = (
            f"GET http://127.0.0.1:{client.port}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Connection: close\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
        ).encode()
        got = await answers(client.port, request)
        assert [answer.status for answer in got] == [200], got
        assert got[0].body.startswith(body)


class TestDeclinedUpgrade:
    @pytest.mark.parametrize("upgrade", ["h2c", "foo", "websocket"])
    async def test_a_request_asking_for_another_protocol_is_answered_and_its_connection_closed(
        self, client: Client, upgrade: str
    ) -> None:
        """RFC 9110 §7.8 lets a server ignore Upgrade and answer as usual (curl --http2 asks
        for h2c on http://). aiohttp then reads nothing more of the connection as a request:
        one sent right behind was never answered, and its client waited on an open
        connection. The answer now closes the connection, so the client sends it again."""
        first = head(
            "GET /healthz HTTP/1.1",
            {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": upgrade},
        )
        got = await answers(client.port, first + NEXT)
        assert got[0].status in (200, 400)
        assert len(got) == 1


class TestHostPort:
    @pytest.mark.parametrize(
        "value", ["127.0.0.1:\u0661\u0668", "[::1]:\u00b2", "localhost:\uff11"]
    )
    async def test_a_port_of_other_digits_than_ascii_is_refused(
        self, client: Client, value: str
    ) -> None:
        """RFC 9110 §4.1: a port is ASCII digits. Digits of other scripts (and superscripts,
        which Python's isdigit takes) passed as a port."""
        request = f"GET /healthz HTTP/1.1\r\nHost: {value}\r\nConnection: close\r\n\r\n"
        got = await answers(client.port, request.encode())
        assert [answer.status for answer in got] == [421]


def refusal(message: str, code: str | None) -> dict[str, object]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


TARGET_TOO_LONG = refusal("Request target too long (at most 8192 bytes).", "uri_too_long")
HEADERS_TOO_LARGE = refusal(
    "Request header fields too large (at most 8190 bytes a field, 128 fields).",
    "request_header_fields_too_large",
)


class TestOversizeHead:
    """RFC 9110 §15.5.15 and RFC 6585 §5: a request-target over the parser's limit is a 414,
    a header field over it (or too many of them) a 431; both were aiohttp's bare 400."""

    @pytest.mark.parametrize(
        "target",
        ["/v1/models?" + "q" * 9000, "/" + "p" * 9000, "http://127.0.0.1/" + "p" * 9000],
        ids=["query", "path", "absolute-form"],
    )
    async def test_a_target_over_the_limit_is_a_414(self, client: Client, target: str) -> None:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        got = await answers(client.port, request + NEXT)
        assert [answer.status for answer in got] == [414]  # the connection closed after it
        assert got[0].json() == TARGET_TOO_LONG

    @pytest.mark.parametrize(
        "lines",
        [
            [b"Authorization: Bearer " + b"y" * 9000],
            [b"X-" + b"n" * 9000 + b": 1"],
            [b"X-Many-%d: 1" % i for i in range(200)],
        ],
        ids=["long-value", "long-name", "too-many"],
    )
    async def test_header_fields_over_the_limit_are_a_431(
        self, client: Client, lines: list[bytes]
    ) -> None:
        request = b"\r\n".join([b"GET /healthz HTTP/1.1", b"Host: 127.0.0.1", *lines]) + b"\r\n\r\n"
        got = await answers(client.port, request + NEXT)
        assert [answer.status for answer in got] == [431]  # the connection closed after it
        assert got[0].json() == HEADERS_TOO_LARGE

    async def test_a_target_at_the_limit_is_served(self, client: Client) -> None:
        target = "/healthz?" + "q" * (8192 - len("/healthz?"))
        got = await answers(
            client.port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() + NEXT
        )
        assert [answer.status for answer in got] == [200, 200]


CORS_ORIGIN = "https://app.example"
CHAT_OFF = {"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": False}}}}}


class TestPreflightOnAnyV1Path:
    @pytest.mark.parametrize("path", ["/v1/other", "/v1//other", "/v1/"])
    async def test_an_unknown_v1_path_answers_it_whatever_endpoint_is_off(
        self, gateway: MakeClient, path: str
    ) -> None:
        """http-openai.md §9: a preflight on any /v1/* path from an allowed origin is a 204.
        With chat completions off, an unknown path's was a 404 (the responses endpoint on)."""
        cors = {"cors": {"allowedOrigins": [CORS_ORIGIN]}}
        client = await gateway({"gateway": {"http": {**CHAT_OFF["gateway"]["http"], **cors}}})
        preflight = {"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST"}
        preflight["Connection"] = "close"  # a 204 has no body: read to the close
        got = await answers(client.port, head(f"OPTIONS {path} HTTP/1.1", preflight))
        assert [answer.status for answer in got] == [204]
        assert got[0].headers["access-control-allow-origin"] == CORS_ORIGIN
        assert got[0].headers["access-control-allow-methods"] == "GET, POST, OPTIONS"

    async def test_another_origin_is_still_refused_there(self, gateway: MakeClient) -> None:
        client = await gateway(
            {
                "gateway": {
                    "http": {
                        **CHAT_OFF["gateway"]["http"],
                        "cors": {"allowedOrigins": [CORS_ORIGIN]},
                    }
                }
            }
        )
        preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        got = await answers(client.port, head("OPTIONS /v1/other HTTP/1.1", preflight) + NEXT)
        assert [answer.status for answer in got] == [403, 200]
        assert "access-control-allow-origin" not in got[0].headers

    @pytest.mark.parametrize(
        ("path", "endpoints"),
        [
            (CHAT, {"chatCompletions": {"enabled": False}}),
            ("/v1/models", {"chatCompletions": {"enabled": False}}),
            ("/v1/embeddings", {"chatCompletions": {"enabled": False}}),
            ("/v1/responses", {"responses": {"enabled": False}}),
            ("/v1/responses/resp_x", {"responses": {"enabled": False}}),
        ],
    )
    async def test_a_disabled_endpoints_path_answers_it_too(
        self, gateway: MakeClient, path: str, endpoints: dict[str, object]
    ) -> None:
        """Its requests are 404s (with the CORS headers, so the page reads them); its
        preflight was a 404 too, which a browser reports as a CORS failure instead."""
        client = await gateway(
            {
                "gateway": {
                    "http": {"endpoints": endpoints, "cors": {"allowedOrigins": [CORS_ORIGIN]}}
                }
            }
        )
        preflight = {
            "Origin": CORS_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Connection": "close",
        }
        got = await answers(client.port, head(f"OPTIONS {path} HTTP/1.1", preflight))
        assert [answer.status for answer in got] == [204]
        assert got[0].headers["access-control-allow-origin"] == CORS_ORIGIN


class TestAgentHeaderNotUtf8:
    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            (b"\xffbad", "\\xffbad"),
            (b"caf\xe9", "caf\\xe9"),
            (b"ok\xc3\xa9\xed\xa0\x80", "ok\u00e9\\xed\\xa0\\x80"),
        ],
        ids=["lead-byte", "latin-1", "utf-8-then-surrogate-bytes"],
    )
    async def test_unknown_agent_shows_the_bytes_sent_in_json_any_parser_reads(
        self, client: Client, value: bytes, shown: str
    ) -> None:
        """The message echoed the bytes as lone surrogates (`\\udcff` in the JSON), which
        strict parsers (serde_json, Go's encoding/json keeps none of it) refuse or garble:
        each byte that is not UTF-8 is now written `\\xNN`, as Python shows it."""
        body = json.dumps(HI).encode()
        request = request_bytes(
            "POST",
            CHAT,
            {**AUTH, "Content-Type": "application/json", "x-openclaw-agent-id": value},
            body,
        )
        assert client.port is not None
        response = await exchange(client.port, request)
        assert response.status == 400
        assert b"\\ud" not in response.body.lower()  # no surrogate escape
        message = json.loads(response.body.decode("utf-8", "strict"))["error"]["message"]
        assert message == f"Unknown agent '{shown}'."


class TestStreamToAClosingClient:
    @pytest.mark.parametrize(
        ("path", "body"),
        [
            (CHAT, {**HI, "stream": True}),
            ("/v1/responses", {"model": "openclaw", "input": "hi", "stream": True}),
        ],
    )
    @pytest.mark.parametrize("connection", ["close", "Close", "te, close"])
    async def test_a_stream_asked_with_connection_close_says_close(
        self, gateway: MakeClient, path: str, body: dict[str, object], connection: str
    ) -> None:
        """RFC 9112 §9.6: the connection closes after a response to a request with
        `Connection: close`, and the answer says so. A stream said `Connection: keep-alive`
        (http-openai.md §7's header, for a connection kept open) and then closed."""
        client = await gateway(
            {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
        )
        raw = json.dumps(body).encode()
        request = head(
            f"POST {path} HTTP/1.1",
            {**AUTH, "Connection": connection, "Content-Length": str(len(raw))},
        )
        got = await answers(client.port, request + raw)
        assert [answer.status for answer in got] == [200]
        assert got[0].headers["content-type"].startswith("text/event-stream")
        assert got[0].headers["connection"] == "close"
        assert got[0].headers["transfer-encoding"] == "chunked"

    async def test_a_stream_on_a_kept_connection_still_says_keep_alive(
        self, client: Client
    ) -> None:
        raw = json.dumps({**HI, "stream": True}).encode()
        request = head(f"POST {CHAT} HTTP/1.1", {**AUTH, "Content-Length": str(len(raw))})
        got = await answers(client.port, request + raw + NEXT)
        assert [answer.status for answer in got] == [200, 200]
        assert got[0].headers["connection"] == "keep-alive"


UNSUPPORTED_VERSION = refusal(
    "Unsupported HTTP version; send HTTP/1.1 (or HTTP/1.0).", "unsupported_http_version"
)


class TestHttpVersions:
    """Only HTTP/1.0 and HTTP/1.1 are spoken here. A request in another version was served,
    its answer's status line claiming that version (`HTTP/2.0 200 OK` in HTTP/1 text); a bare
    `GET /x` (HTTP/0.9) got one as `HTTP/0.9 200 OK`. RFC 9110 §15.6.6 has 505 for this, a
    5xx for the client's own mistake: it is a 400 in the error shape (the spec is silent)."""

    @pytest.mark.parametrize(
        "first_line",
        ["GET /healthz HTTP/2.0", "GET /healthz HTTP/0.9", "GET /healthz"],
        ids=["2.0", "0.9", "bare"],
    )
    async def test_another_version_is_a_400_in_http_1_1_that_closes(
        self, client: Client, first_line: str
    ) -> None:
        request = f"{first_line}\r\nHost: 127.0.0.1\r\n\r\n".encode()
        assert client.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            writer.write(request)
            async with asyncio.timeout(10):
                rest = await reader.read()  # to the close
        finally:
            writer.close()
        status_line, _, _ = rest.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 400 Bad Request"
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == UNSUPPORTED_VERSION
        assert b"\r\nConnection: close\r\n" in rest

    @pytest.mark.parametrize("version", ["HTTP/1.2", "HTTP/1.9", "HTTP/3.0"])
    async def test_one_the_parser_refuses_is_the_same_400(
        self, client: Client, version: str
    ) -> None:
        got = await answers(
            client.port, f"GET /healthz {version}\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        assert [answer.status for answer in got] == [400]
        assert got[0].json() == UNSUPPORTED_VERSION


# -- what aiohttp's two HTTP parsers refuse -----------------------------------------------------


@pytest.fixture(scope="module", params=["c", "python"])
def parser_port(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The port of a `clawgate run` reading requests with aiohttp's C parser (llhttp, the one
    its wheels carry) or its pure-Python one (AIOHTTP_NO_EXTENSIONS, or a platform without the
    extension): the edge answers alike whichever reads."""
    root = tmp_path_factory.mktemp(f"parser-{request.param}")
    config = root / "clawgate.json5"
    config.write_text(json.dumps(SETTINGS))
    args = ["--config", str(config), "--state-dir", str(root / "state"), "--port", "0"]
    extra = {"AIOHTTP_NO_EXTENSIONS": "1"} if request.param == "python" else {}
    process = GatewayProcess(args, clean_env(root / "home", extra))
    try:
        process.wait_listening()
        yield process.port
    finally:
        process.stop()


async def one_answer(port: int, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """The status line, the headers (names lowercased) and the body of the answer to
    `request`. Read by its Content-Length: after a refusal of a request whose body was not
    sent, aiohttp waits for that body a while (its lingering close) before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = {n.lower(): v.strip() for n, _, v in (h.partition(":") for h in lines)}
            body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    return status_line.encode(), headers, body


BAD_REQUEST = refusal("Bad Request", None)
REFUSED_HEADS = [
    (b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, TARGET_TOO_LONG),
    (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n",
        431,
        HEADERS_TOO_LARGE,
    ),
    (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-Many-%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
        431,
        HEADERS_TOO_LARGE,
    ),
    (b"GET /healthz HTTP/1.1 junk\r\nHost: 127.0.0.1\r\n\r\n", 400, BAD_REQUEST),
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fold: a\r\n b\r\n\r\n", 400, BAD_REQUEST),
    (b"GET /healthz HTTP/1.2\r\nHost: 127.0.0.1\r\n\r\n", 400, UNSUPPORTED_VERSION),
    # HTTP/0.9's bare `GET /x`: the C parser reads it, the pure-Python one refused it as a
    # bad request line, the plain 400.
    (b"GET /healthz\r\nHost: 127.0.0.1\r\n\r\n", 400, UNSUPPORTED_VERSION),
    (b"GET /healthz\r\n\r\n", 400, UNSUPPORTED_VERSION),
    (b"get /healthz\r\n\r\n", 400, BAD_REQUEST),  # no method: methods are case-sensitive
    # A method the C parser does not know: the pure-Python one read it, and it met a 405.
    (b"FOO /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, BAD_REQUEST),
    (b"DESCRIBE /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, BAD_REQUEST),  # RTSP's
    (b"G" * 70 + b" /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, BAD_REQUEST),
    # A byte that is not ASCII in the target (RFC 9112 §3.2): the C parser refuses it, the
    # pure-Python one served it (a 404, a 200 for a query of /healthz).
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, BAD_REQUEST),
    (b"GET /healthz?a=\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, BAD_REQUEST),
    (b"GET http://127.0.0.1/\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, BAD_REQUEST),
    *[
        (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line + b"\r\n\r\n", 400, BAD_REQUEST)
        for line in [
            b"X-Space : a",  # RFC 9112 §5.1: whitespace before the colon
            b"X-Nul: a\x00b",
            b"X-Cr: a\rb",
            b"X-Lf: a\nb",  # a line `b` with no colon
            b"Content-Length: +0",
            b"Content-Length: 0\r\nContent-Length: 0",  # RFC 9112 §6.3: two that agree, too
            b"Content-Length: 0\r\nContent-Length: 1",
            b"Content-Length: 0, 0",
        ]
    ],
    # A length of more than 64 bits: the C parser's overflow; the pure-Python one read it,
    # and the request met the endpoint's 413.
    (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SERVED_TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 18446744073709551616\r\n\r\n{}".encode(),
        400,
        BAD_REQUEST,
    ),
]
REFUSED_HEAD_IDS = [
    "414",
    "431-field",
    "431-many",
    "request-line",
    "obs-fold",
    "http-1.2",
    "bare",
    "bare-no-host",
    "bare-lowercase",
    "unknown-method",
    "rtsp-method",
    "long-method",
    "utf-8-path",
    "byte-in-query",
    "absolute-form-byte",
    "space-before-colon",
    "nul-in-value",
    "cr-in-value",
    "lf-in-value",
    "length-plus",
    "two-lengths-agree",
    "two-lengths-differ",
    "length-list",
    "length-over-64-bits",
]


class TestParserRefusals:
    @pytest.mark.parametrize(("request_", "status", "body"), REFUSED_HEADS, ids=REFUSED_HEAD_IDS)
    async def test_are_answered_in_http_1_1_in_the_error_shape_and_close(
        self, parser_port: int, request_: bytes, status: int, body: dict[str, object]
    ) -> None:
        """A request the parser refuses never reaches the app: aiohttp answers it on a
        request of its own making, in HTTP/1.0, and the status line said `HTTP/1.0 414` to a
        client that spoke HTTP/1.1. Every answer of the gateway is in HTTP/1.1."""
        status_line, headers, got = await one_answer(parser_port, request_)
        assert status_line.startswith(b"HTTP/1.1 %d " % status), (status_line, got)
        assert json.loads(got) == body
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert headers["x-content-type-options"] == "nosniff"
        assert len(headers["x-request-id"]) == 32


class TestConnect:
    async def test_a_connect_is_refused_and_its_connection_closed(self, parser_port: int) -> None:
        """CONNECT asks for a tunnel (RFC 9110 §9.3.6), which the gateway does not open. Its
        404 kept the connection, and the parsers part there: the C one read a request sent
        behind it and answered it, the pure-Python one read it as the tunnel's bytes and never
        answered. The refusal now closes the connection, as a declined Upgrade's does."""
        request = b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
        status_line, headers, got = await one_answer(parser_port, request + NEXT)
        assert status_line == b"HTTP/1.1 404 Not Found"
        assert json.loads(got)["error"]["type"] == "not_found_error"
        assert headers["connection"] == "close"


class TestContentLength:
    async def test_a_length_with_leading_zeros_is_read(self, parser_port: int) -> None:
        """`1*DIGIT` (RFC 9110 §8.6): `0002` is 2, with either parser."""
        request = (
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SERVED_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 0002\r\n\r\n{}"
        ).encode()
        status_line, _, got = await one_answer(parser_port, request)
        assert status_line == b"HTTP/1.1 400 Bad Request"
        assert json.loads(got)["error"]["param"] == "messages"  # the body `{}` was read
