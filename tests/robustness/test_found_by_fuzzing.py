"""What the fuzzing found, pinned as plain tests of the pure functions involved (or, where the
bug was in how aiohttp hands over the body, of a served gateway): lone surrogates (JSON
escapes, or header bytes that are not UTF-8), control characters in a key that goes back in a
header, nesting deeper than a parser recurses, aiohttp's own 400s, bodies under a
`Content-Encoding` that does not decode, and JSON types a check did not expect."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import logging
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
from aiohttp.http_exceptions import BadHttpMessage

from agents.config import AgentsConfig
from agents.store import SessionStore, TurnRecord
from gateway.auth import secret_matches
from gateway.http.openai_wire import (
    AgentSelection,
    RequestError,
    parse_body,
    resolve_session_key,
    validate_fields,
)
from gateway.jsonwire import dumps, scrub_surrogates, wire
from gateway.logs import LogRing, _RingLogger
from gateway.ws.protocol import NotJson, parse_request
from tests.support.process import GatewayProcess, clean_env
from tests.support.raw_http import (
    RawResponse,
    exchange,
    read_response,
    request_bytes,
    request_head,
)
from tests.support.served import (
    AUTH,
    CHAT,
    SETTINGS,
    Served,
    build_app,
    production_logging,
    served,
)

AGENTS = AgentsConfig()
MAIN = AgentSelection("main", "openclaw", explicit=False)


class TestLoneSurrogates:
    def test_a_json_body_s_lone_surrogates_become_replacement_characters(self) -> None:
        raw = b'{"messages":[{"role":"user","content":"a\\ud83d b \\udfff"}],"\\ud800":1}'
        assert parse_body(raw) == {
            "messages": [{"role": "user", "content": "a\ufffd b \ufffd"}],
            "\ufffd": 1,
        }

    def test_a_surrogate_pair_is_one_character_and_is_kept(self) -> None:
        assert parse_body(b'{"user":"\\ud83d\\ude00"}') == {"user": "😀"}

    def test_a_websocket_frame_s_lone_surrogates_are_replaced_everywhere(self) -> None:
        frame = parse_request('{"type":"req","id":"\\ud800","method":"x","params":["\\udc00"]}')
        assert (frame.id, frame.params) == ("\ufffd", ["\ufffd"])

    def test_scrubbing_walks_any_depth_without_recursion(self) -> None:
        depth = 5000
        value: object = "\ud800"
        for _ in range(depth):
            value = [value]
        scrub_surrogates(value, "\\ud800")
        for _ in range(depth):
            assert isinstance(value, list)
            value = value[0]
        assert value == "\ufffd"

    def test_json_written_with_a_lone_surrogate_escapes_it(self) -> None:
        data = wire(dumps({"error": "Unknown agent '\udcff'."}))
        assert data == b'{"error":"Unknown agent \'\\udcff\'."}'
        assert json.loads(data) == {"error": "Unknown agent '\udcff'."}

    def test_a_secret_with_undecodable_bytes_is_a_wrong_secret(self) -> None:
        assert secret_matches("tok\udcffen", "token") is False

    def test_a_session_key_header_with_undecodable_bytes_is_invalid(self) -> None:
        with pytest.raises(RequestError) as caught:
            resolve_session_key("ses\udcffsion", None, MAIN, AGENTS)
        assert (caught.value.status, caught.value.message) == (
            400,
            "Invalid `x-openclaw-session-key`.",
        )

    def test_a_log_line_with_a_lone_surrogate_is_written_escaped(self) -> None:
        stream, ring = io.StringIO(), LogRing()
        _RingLogger(stream, ring).msg('{"key":"agent:main:\udcff"}')
        assert stream.getvalue() == '{"key":"agent:main:\\udcff"}\n'
        assert ring.lines[-1] == (len(stream.getvalue()), '{"key":"agent:main:\\udcff"}')


class TestSplitSurrogatePairs:
    async def test_a_reply_with_a_pair_split_across_deltas_is_stored_joined(
        self, tmp_path: Path
    ) -> None:
        """An upstream that sends the two halves of an emoji in two chunks (each a lone
        `\\udXXX` escape) makes a text SQLite cannot take; the store joins the pair, and
        replaces a half that stays alone."""
        async with SessionStore(tmp_path) as store:
            row, _ = await store.create("agent:main:s", "main", 1)
            for run_id, text in (("r1", "a\ud83d\ude00b"), ("r2", "c\ud83dd")):
                await store.append_turn(
                    TurnRecord(
                        key="agent:main:s",
                        agent_id="main",
                        session_id=row.session_id,
                        run_id=run_id,
                        user_text="hi",
                        user_timestamp=2,
                        assistant_text=text,
                        assistant_timestamp=3,
                        input_tokens=1,
                        output_tokens=1,
                        stop_reason="stop",
                        status="done",
                    )
                )
            history = await store.history(row.session_id, 10)
        assert [m.text for m in history.messages] == ["hi", "a😀b", "hi", "c\ufffdd"]


class TestHeaderUnsafeKeys:
    @pytest.mark.parametrize("user", ["a\nb", "a\rb", "a\x00b", "a\x1bb", "a\x7fb"])
    def test_a_user_with_control_characters_is_refused(self, user: str) -> None:
        with pytest.raises(RequestError) as caught:
            resolve_session_key(None, user, MAIN, AGENTS)
        assert (caught.value.status, caught.value.param) == (400, "user")

    def test_a_user_with_a_tab_or_any_printable_character_is_a_key(self) -> None:
        route = resolve_session_key(None, " A\tb é😀\u202e ", MAIN, AGENTS)
        assert route.session_key == "agent:main:openai-user:a\tb é😀\u202e"


class TestDeepNesting:
    def test_a_websocket_frame_nested_beyond_the_parser_is_not_json(self) -> None:
        with pytest.raises(NotJson):
            parse_request("[" * 100_000 + "]" * 100_000)

    def test_a_body_nested_beyond_the_parser_is_a_400(self) -> None:
        with pytest.raises(RequestError) as caught:
            parse_body(b"[" * 100_000 + b"]" * 100_000)
        assert caught.value.status == 400


class TestMalformedRequestsInTheLog:
    def test_aiohttp_s_400_is_one_info_line_without_the_offending_bytes(self) -> None:
        with production_logging() as log:
            exc = BadHttpMessage("Invalid header value char:\n\n  b'Authorization: secret\\x05'")
            logging.getLogger("aiohttp.server").error(
                "Error handling request from %s", "192.0.2.9", exc_info=exc
            )
            events = log.read()
        assert [(e["event"], e["level"]) for e in events] == [("http_bad_request", "info")]
        assert events[0]["reason"] == "Invalid header value char"
        assert events[0]["remote"] == "192.0.2.9"
        assert "secret" not in json.dumps(events)
        assert structlog.get_config()["processors"]  # the previous configuration is back

    @pytest.mark.parametrize(
        "header",
        [
            # Over the header limit (8190 bytes): aiohttp quotes the value's first 100 bytes.
            b"Cookie: username-localhost-8888=2|1:0|10:1765000000|hidden-session; a=" + b"x" * 9000,
            b"Authorization: Bearer hidden-secret-" + b"y" * 9000,
        ],
        ids=["cookie", "authorization"],
    )
    async def test_a_refused_header_s_value_is_not_logged(
        self, tmp_path: Path, header: bytes
    ) -> None:
        # The log goes to journald and to `logs.tail`, which operator.read may call; a
        # browser sends every cookie of localhost (other local apps' sessions) to the gateway.
        request = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n\r\n"
        with production_logging() as log:
            async with served(build_app(tmp_path)) as server:
                response = await exchange(server.port, request)
            events = [e for e in log.read() if e.get("event") == "http_bad_request"]
        assert response.status == 431
        assert len(events) == 1
        assert "hidden" not in json.dumps(events)


class TestNonStringResponseFormatType:
    @pytest.mark.parametrize("format_type", [{}, [], ["text"], 1, True, None])
    def test_a_response_format_type_that_is_not_a_string_is_a_400(self, format_type: Any) -> None:
        """An object or an array as `type` made the set lookup raise TypeError: a 500."""
        with pytest.raises(RequestError) as caught:
            validate_fields({"response_format": {"type": format_type}})
        assert (caught.value.status, caught.value.param, caught.value.message) == (
            400,
            "response_format",
            "Invalid response_format: response_format.type must be text, json_object,"
            " or json_schema",
        )


HELLO_BODY = b'{"messages":[{"role":"user","content":"hello"}]}'


def error_wire(message: str) -> bytes:
    return (
        b'{"error":{"message":'
        + json.dumps(message).encode()
        + b',"type":"invalid_request_error","param":null,"code":null}}'
    )


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Served]:
    with production_logging() as log:
        async with served(build_app(tmp_path)) as server:
            yield server
        assert log.problems() == []


async def post_encoded(server: Served, coding: str, body: bytes) -> tuple[int, bytes]:
    headers = {**AUTH, "Content-Encoding": coding}
    response = await exchange(server.port, request_bytes("POST", CHAT, headers, body))
    return response.status, response.body


class TestBodiesThatDoNotDecode:
    """aiohttp decoded request bodies: a corrupt gzip or deflate body failed the body read
    with an exception the handler did not expect (a 500), and a cut deflate stream or br/zstd
    (without their optional packages) got aiohttp's plain-text 400, not the §8 shape."""

    @pytest.mark.parametrize(
        "body",
        [
            b"not gzip at all",
            gzip.compress(HELLO_BODY)[:-6],  # the trailer cut off
            gzip.compress(HELLO_BODY) + b"junk after the end",
        ],
        ids=["garbage", "truncated", "trailing-junk"],
    )
    async def test_a_gzip_body_that_does_not_inflate_is_a_400(
        self, gateway: Served, body: bytes
    ) -> None:
        assert await post_encoded(gateway, "gzip", body) == (
            400,
            error_wire("Request body is not valid gzip data."),
        )

    @pytest.mark.parametrize(
        "body",
        [b"\x78 not deflate", zlib.compress(HELLO_BODY)[:12]],
        ids=["garbage", "truncated"],
    )
    async def test_a_deflate_body_that_does_not_inflate_is_a_400(
        self, gateway: Served, body: bytes
    ) -> None:
        assert await post_encoded(gateway, "deflate", body) == (
            400,
            error_wire("Request body is not valid deflate data."),
        )

    @pytest.mark.parametrize(
        ("coding", "body"),
        [
            ("br", b"\x0b\x02\x80hi\x03"),
            ("zstd", b"(\xb5/\xfd garbage"),
            ("compress", HELLO_BODY),
            ("x-unknown", HELLO_BODY),
            ("gzip, gzip", gzip.compress(gzip.compress(HELLO_BODY))),
        ],
        ids=["br", "zstd", "compress", "unknown", "stacked"],
    )
    async def test_an_unsupported_content_coding_is_a_415(
        self, gateway: Served, coding: str, body: bytes
    ) -> None:
        """br and zstd need packages the gateway does not depend on; an unknown coding was
        ignored (its body read as if plain); stacked codings multiply a bomb's ratio."""
        assert await post_encoded(gateway, coding, body) == (
            415,
            error_wire(
                "Unsupported `Content-Encoding`: send the body as identity, gzip or deflate."
            ).replace(b'"code":null', b'"code":"unsupported_content_encoding"'),
        )


class TestUnhashableValues:
    def test_a_response_format_type_that_is_a_list_is_a_400(self) -> None:
        with pytest.raises(RequestError) as exc:
            validate_fields({"response_format": {"type": ["text"]}})
        assert (exc.value.status, exc.value.param) == (400, "response_format")


# A chunked body whose framing breaks after its first chunk: a chunk size that is no number,
# a chunk's data not followed by CRLF, a line feed in a chunk extension.
BROKEN_CHUNKS = [b"5\r\nhello\r\nzz\r\n", b"5\r\nhelloXY\r\n", b"5\r\nhello\r\n1;a\nb\r\n"]
BROKEN_CHUNK_IDS = ["chunk-size", "chunk-end", "chunk-extension"]


async def broken_chunks_after_the_head(port: int, chunks: bytes) -> tuple[RawResponse, bytes]:
    """A chat request whose body is `chunks`, sent once the handler waits for its body (its
    `100 Continue` came); the answer, and what came after it until the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        headers = {**AUTH, "Transfer-Encoding": "chunked", "Expect": "100-continue"}
        writer.write(request_head("POST", CHAT, headers, close=False))
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(chunks)
        # Well within the body timeout (30 s), which it waited for before.
        async with asyncio.timeout(10):
            return await read_response(reader), await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


BAD_REQUEST = {
    "error": {
        "message": "Bad Request",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}


OVERSIZE = {414: "uri_too_long", 431: "request_header_fields_too_large"}
OVERSIZE_HEADS = [
    (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer hidden-"
        + b"y" * 9000
        + b"\r\n\r\n",
        431,
    ),
    # A header line not ended: the pure-Python parser stops it at the request line's limit.
    (b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: hidden-" + b"c" * 9000, 431),
    (b"GET /hidden-" + b"p" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
    (b"GET /hidden-" + b"p" * 9000, 414),  # a request line not ended
]
OVERSIZE_HEAD_IDS = ["header-line", "header-line-unended", "request-target", "target-unended"]


class TestMalformedRequestsAnswer:
    """aiohttp answered a request its parser refused in plain text quoting what it refused (a
    header line over the limit: its first 100 bytes): a token, a cookie, sent back."""

    @pytest.mark.parametrize(
        "request_",
        [
            b"GET /hidden HTTP/1.1 junk\r\nHost: 127.0.0.1\r\n\r\n",
            b"G@T /hidden HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A\x01b: hidden\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer robust-token-7c1e\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nhidden\r\n{}\r\n0\r\n\r\n",
        ],
        ids=["request-line", "method", "header-name", "chunk-size"],
    )
    async def test_a_refused_request_gets_a_fixed_json_400_that_quotes_none_of_it(
        self, tmp_path: Path, request_: bytes
    ) -> None:
        async with served(build_app(tmp_path)) as server:
            response = await exchange(server.port, request_)
        assert response.status == 400
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert len(response.headers["x-request-id"]) == 32
        assert response.json() == {
            "error": {
                "message": "Bad Request",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }

    @pytest.mark.parametrize(("request_", "status"), OVERSIZE_HEADS, ids=OVERSIZE_HEAD_IDS)
    async def test_an_oversize_head_gets_its_fixed_414_or_431_that_quotes_none_of_it(
        self, tmp_path: Path, request_: bytes, status: int
    ) -> None:
        async with served(build_app(tmp_path)) as server:
            response = await exchange(server.port, request_)
        assert (response.status, response.json()["error"]["code"]) == (status, OVERSIZE[status])
        assert b"hidden" not in response.body
        assert len(response.headers["x-request-id"]) == 32

    def test_an_oversize_head_gets_its_414_or_431_from_the_pure_python_parser_too(
        self, tmp_path: Path
    ) -> None:
        # aiohttp's pure-Python parser measures the whole request line, and a line not ended
        # yet by the request line's limit: what it quotes tells a target from a header.
        config = tmp_path / "clawgate.json5"
        config.write_text(json.dumps(SETTINGS))
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        env = clean_env(tmp_path / "home", {"AIOHTTP_NO_EXTENSIONS": "1"})
        process = GatewayProcess(args, env)
        try:
            process.wait_listening()

            async def each() -> list[tuple[int, str]]:
                got = [await exchange(process.port, request_) for request_, _ in OVERSIZE_HEADS]
                return [(r.status, r.json()["error"]["code"]) for r in got]

            answered = asyncio.run(each())
        finally:
            process.stop()
        assert answered == [(status, OVERSIZE[status]) for _, status in OVERSIZE_HEADS]

    def test_a_version_other_than_1_0_or_1_1_is_refused_by_the_pure_python_parser_too(
        self, tmp_path: Path
    ) -> None:
        # It reads any `HTTP/d.d`: HTTP/1.2 and HTTP/3.0 were served too (`HTTP/3.0 200 OK`).
        config = tmp_path / "clawgate.json5"
        config.write_text(json.dumps(SETTINGS))
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        env = clean_env(tmp_path / "home", {"AIOHTTP_NO_EXTENSIONS": "1"})
        process = GatewayProcess(args, env)
        lines = ["GET /healthz HTTP/2.0", "GET /healthz HTTP/1.2", "GET /healthz HTTP/3.0"]
        try:
            process.wait_listening()

            async def each() -> list[tuple[int, str]]:
                got = [
                    await exchange(process.port, f"{line}\r\nHost: 127.0.0.1\r\n\r\n".encode())
                    for line in lines
                ]
                return [(r.status, r.json()["error"]["code"]) for r in got]

            answered = asyncio.run(each())
        finally:
            process.stop()
        # (A bare `GET /x`, which it refuses as a bad request line: tests/http/test_edge_raw.py.)
        assert answered == [(400, "unsupported_http_version")] * 3

    @pytest.mark.parametrize("chunks", BROKEN_CHUNKS, ids=BROKEN_CHUNK_IDS)
    async def test_a_chunked_body_that_breaks_while_it_is_read_gets_the_400_at_once(
        self, tmp_path: Path, chunks: bytes
    ) -> None:
        # Refused with the request's head, it gets the 400 above; once the handler reads the
        # body, aiohttp's C parser dropped the body without failing it: the request waited
        # for the body timeout (30 s), then got a 408.
        with production_logging() as log:
            async with served(build_app(tmp_path)) as server:
                response, after = await broken_chunks_after_the_head(server.port, chunks)
            logged = log.read()
        assert (response.status, response.json()) == (400, BAD_REQUEST)
        assert response.headers["connection"] == "close"
        assert after == b""  # no second answer: the connection is closed
        (answered,) = [e for e in logged if e["event"] == "http_request"]
        assert answered["status"] == 400
        assert not [e for e in logged if e["level"] in ("warning", "error", "critical")]

    @pytest.mark.parametrize("chunks", BROKEN_CHUNKS, ids=BROKEN_CHUNK_IDS)
    def test_a_chunked_body_that_breaks_while_it_is_read_gets_the_400_too(
        self, tmp_path: Path, chunks: bytes
    ) -> None:
        # aiohttp's pure-Python parser (AIOHTTP_NO_EXTENSIONS, or no C extension built for
        # the platform) fails the body with RequestPayloadError, which the gateway answered
        # 500 `internal error`.
        config = tmp_path / "clawgate.json5"
        config.write_text(json.dumps(SETTINGS))
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        env = clean_env(tmp_path / "home", {"AIOHTTP_NO_EXTENSIONS": "1"})
        process = GatewayProcess(args, env)
        try:
            process.wait_listening()
            response, after = asyncio.run(broken_chunks_after_the_head(process.port, chunks))
            answered = process.wait_for_event("http_request")
            logged = process.events()
        finally:
            process.stop()
        assert (response.status, response.json()) == (400, BAD_REQUEST)
        assert response.headers["connection"] == "close"
        assert after == b""
        assert answered["status"] == 400
        # Nothing more: aiohttp did not read on after the answer, to fail again.
        assert not [e for e in logged if e.get("level") in ("warning", "error", "critical")]
