"""Property-based fuzzing of the WebSocket protocol (ws-protocol.md §1, §2, §6), before and
after the handshake.

Before `hello-ok`, whatever the first frame is, the server answers as §2.4 says: a close with
one of its codes, an error response first where the table has one, or `hello-ok` for a valid
connect. After it, every frame gets a response of the §1 shape (an error code of §6, never
`internal error`), and the connection goes on answering. Nothing is ever logged as an error or
a traceback, and a fresh client still connects. One gateway serves the module (as `clawgate
run` serves it); examples are fixed in number and derandomized.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import struct
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest
import pytest_asyncio
from aiohttp import WSMsgType
from hypothesis import event, given
from hypothesis import strategies as st

from gateway.appkeys import STATE
from gateway.ws.dispatch import MethodRegistry
from gateway.ws.handler import WS
from gateway.ws.methods import register_all
from gateway.ws.protocol import (
    INVALID_REQUEST,
    REQUEST_ID_MAX,
    ParamReader,
    ParamsError,
    WsError,
)
from tests.support.raw_http import RawResponse, exchange_upgrade
from tests.support.served import TOKEN, Served, ServerLog, build_app, production_logging, served
from tests.support.spec_checks import assert_error_body
from tests.support.strategies import (
    WRONG_TYPES,
    Deep,
    corrupted,
    fuzz,
    json_paths,
    json_values,
    nonempty_text,
    odd_steps,
    odd_text,
    often,
    replaced,
    specials,
    text,
    to_json,
    weighted,
    wrong,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

PREAUTH_MAX = 64 * 1024
ERROR_CODES = frozenset({"INVALID_REQUEST", "FORBIDDEN", "UNAVAILABLE"})
# §2.4 (1000, 1002, 1008, 1009) and RFC 6455's 1007 for text that is not UTF-8 (aiohttp's).
HANDSHAKE_CLOSES = frozenset({1000, 1002, 1007, 1008, 1009})
WITHIN = 5.0  # no answer of these tests takes longer; a hang fails the example


@attrs.frozen
class Gateway:
    server: Served
    log: ServerLog
    http: aiohttp.ClientSession
    methods: tuple[str, ...]

    @property
    def url(self) -> str:
        return self.server.url + "/"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-ws"))
        async with served(app) as server, aiohttp.ClientSession() as http:
            # The method names are the server's own (hello-ok's features.methods).
            ws = await http.ws_connect(server.url)
            hello = await handshake(ws)
            await ws.close()
            yield Gateway(server, log, http, tuple(hello["payload"]["features"]["methods"]))
        assert log.new_problems() == []


# -- a client that checks every frame ---------------------------------------------------------


def assert_frame(frame: Any) -> None:
    """§1: every server frame is a `res` or an `event` of the documented shape."""
    assert isinstance(frame, dict), frame
    if frame.get("type") == "event":
        assert isinstance(frame.get("event"), str), frame
        return
    assert frame.get("type") == "res", frame
    assert isinstance(frame.get("id"), str) and frame["id"], frame
    if frame.get("ok") is True:
        return
    assert frame.get("ok") is False, frame
    error = frame["error"]
    assert error["code"] in ERROR_CODES, frame
    assert isinstance(error["message"], str) and error["message"], frame
    # §6: a handler failure is UNAVAILABLE `internal error`: the WebSocket's 500, a bug.
    assert error["message"] != "internal error", frame
    assert set(error) <= {"code", "message", "details", "retryable", "retryAfterMs"}, frame
    assert isinstance(error.get("details", {}), dict), frame


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
    """The next frame, checked; None once the socket is closed."""
    msg = await ws.receive(timeout=WITHIN)
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
        return None
    assert msg.type is WSMsgType.TEXT, msg
    frame = json.loads(msg.data)
    assert_frame(frame)
    return frame


# Responses read while waiting for another one (requests run concurrently, §6).
_unread: weakref.WeakKeyDictionary[aiohttp.ClientWebSocketResponse, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)


async def response(ws: aiohttp.ClientWebSocketResponse, frame_id: str) -> dict[str, Any]:
    unread = _unread.setdefault(ws, {})
    if frame_id in unread:
        return unread.pop(frame_id)  # type: ignore[no-any-return]
    while True:
        frame = await receive(ws)
        assert frame is not None, f"closed ({ws.close_code}) before the response to {frame_id}"
        if frame["type"] == "res":
            if frame["id"] == frame_id:
                return frame
            unread[frame["id"]] = frame


def connect_frame(**params: Any) -> str:
    base = {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "fuzz", "version": "1", "platform": "linux", "mode": "cli"},
        "auth": {"token": TOKEN},
    }
    return json.dumps({"type": "req", "id": "c1", "method": "connect", "params": base | params})


async def handshake(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    challenge = await receive(ws)
    assert challenge is not None and challenge["event"] == "connect.challenge", challenge
    await ws.send_str(connect_frame())
    hello = await response(ws, "c1")
    assert hello["ok"] is True, hello
    return hello


async def still_serves(gateway: Gateway) -> None:
    """A new client connects and gets an answer; nothing was logged as an error."""
    async with gateway.http.ws_connect(gateway.url) as ws:
        await handshake(ws)
        await ws.send_str('{"type":"req","id":"alive","method":"health"}')
        assert (await response(ws, "alive"))["ok"] is True
    assert gateway.log.new_problems() == []


@attrs.frozen
class Frame:
    """What a fuzzing client sends: text, binary, or text frame bytes that may not be UTF-8."""

    kind: str  # "text", "binary", "raw-text"
    data: str | bytes

    @property
    def size(self) -> int:
        return len(self.data.encode() if isinstance(self.data, str) else self.data)

    async def send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self.kind == "text":
            assert isinstance(self.data, str)
            await ws.send_str(self.data)
        elif self.kind == "binary":
            assert isinstance(self.data, bytes)
            await ws.send_bytes(self.data)
        else:
            assert isinstance(self.data, bytes)
            await ws.send_frame(self.data, WSMsgType.TEXT)


def text_frame(value: Any) -> Frame:
    return Frame("text", to_json(value, ascii_only=True))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def strict_json(text: str | bytes) -> Any:
    """JSON as the server reads a frame: NaN and Infinity are no JSON values (§1)."""
    return json.loads(text, parse_constant=_reject_constant)


def response_id(frame: Frame) -> str:
    """The id the server answers `frame` with: its own when it has a usable one (§6)."""
    try:
        value = strict_json(frame.data)
    except (ValueError, RecursionError):
        return "invalid"
    usable = isinstance(value, dict) and usable_id(value.get("id"))
    return value["id"] if usable else "invalid"


def usable_id(value: Any) -> bool:
    """§1: a request id is a non-empty string, of at most REQUEST_ID_MAX characters (README)."""
    return isinstance(value, str) and 0 < len(value) <= REQUEST_ID_MAX


def is_request(frame: Frame) -> bool:
    """Whether the server reads `frame` as a request frame (§1), rather than an invalid one."""
    if frame.kind != "text":
        return False
    try:
        value = strict_json(frame.data)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(value, dict)
        and value.get("type") == "req"
        and usable_id(value.get("id"))
        and isinstance(value.get("method"), str)
        and value["method"] != ""
    )


# -- frames that are not requests --------------------------------------------------------------

# Ids longer than any a client uses: never echoed, the frame is no request (README).
long_id = st.builds(
    lambda unit, n: unit * (REQUEST_ID_MAX + n),
    st.sampled_from(["i", "é", "😀", "\u202e", "\x00", "\\", '"', " "]),
    st.sampled_from([1, 2, 1_000, 50_000]),
)
not_requests = st.one_of(
    wrong.map(text_frame),  # any JSON value, objects of the wrong shape included
    st.fixed_dictionaries(
        {}, optional={"type": often(st.just("req")), "id": wrong, "method": wrong}
    ).map(text_frame),
    text.map(lambda s: Frame("text", s.encode("utf-8", "backslashreplace").decode())),
    st.binary(max_size=200).map(lambda b: Frame("binary", b)),
    st.binary(min_size=1, max_size=50).map(lambda b: Frame("raw-text", b"\xff" + b)),
    st.just(Frame("raw-text", b'{"type":"req","id":"\xed\xa0\x80","method":"health"}')),
    st.sampled_from([1_000, 100_000]).map(lambda n: text_frame(Deep(n, "[", "]", 0))),
    long_id.map(lambda fid: text_frame({"type": "req", "id": fid, "method": "health"})),
)

# -- connect (§3) -------------------------------------------------------------------------------

client = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["cli", "gateway-client", "fuzz"]) | nonempty_text,
        "version": nonempty_text,
        "platform": st.just("linux"),
        "mode": st.sampled_from(["cli", "probe", "ui"]),
    },
    optional={
        "displayName": odd_text,
        "deviceFamily": odd_text,
        "modelIdentifier": odd_text,
        "instanceId": odd_text,
    },
)
valid_connect = st.builds(
    lambda versions, rest: {"minProtocol": min(versions), "maxProtocol": max(versions), **rest},
    weighted(
        (3, st.tuples(st.sampled_from([3, 4]), st.sampled_from([3, 4, 5]))),
        (1, st.tuples(st.integers(1, 6), st.integers(1, 6))),  # no overlap: 1002
    ),
    st.fixed_dictionaries(
        {"client": client, "auth": st.just({"token": TOKEN})},
        optional={
            "role": st.just("operator"),
            "scopes": st.lists(st.sampled_from(["operator.read", "operator.admin", "x", ""])),
            "device": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
            "caps": json_values,
            "locale": json_values,
        },
    ),
)
CONNECT_PATHS: list[tuple[str | int, ...]] = [
    ("minProtocol",),
    ("maxProtocol",),
    ("client",),
    *(("client", key) for key in ("id", "version", "platform", "mode", "displayName")),
    ("client", "instanceId"),
    ("role",),
    ("scopes",),
    ("scopes", 0),
    ("auth",),
    *(("auth", key) for key in ("token", "password", "deviceToken", "bootstrapToken")),
    ("device",),
]
CONNECT_MISSES = st.sampled_from(
    [0, 1, 2, 5, 99, -1, 3.5, 2**64, "", "4", "node", "wrong", TOKEN + " ", [TOKEN], {}]
)
connect_params = weighted(
    (2, valid_connect),
    (
        5,
        st.builds(
            corrupted,
            valid_connect,
            st.dictionaries(
                st.sampled_from(CONNECT_PATHS),
                st.one_of(CONNECT_MISSES, wrong),
                min_size=1,
                max_size=2,
            ),
        ),
    ),
)
frame_id = weighted((4, st.just("c1")), (1, nonempty_text), (1, long_id))
connect_request = st.builds(
    lambda fid, method, params: text_frame(
        {"type": "req", "id": fid, "method": method, "params": params}
    ),
    frame_id,
    weighted((6, st.just("connect")), (1, st.sampled_from(["health", "chat.send", ""]))),
    weighted((6, connect_params), (1, wrong)),
)
huge_connect = st.sampled_from([PREAUTH_MAX - 200, PREAUTH_MAX + 1, 200_000]).map(
    lambda n: Frame("text", connect_frame(locale="x" * n))
)
first_frames = weighted((6, connect_request), (3, not_requests), (1, huge_connect))


# -- the upgrade request's edge headers (gateway/edge.py) -------------------------------------

upgrade_value = weighted(
    (3, odd_text.map(lambda s: s.encode("utf-8", "surrogatepass"))),
    (1, st.just(b"h" * 9000)),  # over aiohttp's 8190-byte field limit
    (
        6,
        st.sampled_from(
            [
                b"127.0.0.1",
                b"127.0.0.1:1",
                b"localhost",
                b"[::1]:80",
                b"evil.example",
                b"null",
                b"http://127.0.0.1",
                b"http://localhost:1",
                b"https://evil.example",
                b"http://[::1",
                b"file://",
                "http://\u00e9.example".encode(),
                b"203.0.113.7, 127.0.0.1",
                b"",
            ]
        ),
    ),
)
UPGRADE_STATUSES = frozenset({101, 400, 403, 421, 431})
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


async def upgrade_status(port: int, headers: list[tuple[bytes, bytes]]) -> RawResponse:
    """A raw upgrade request; a 101 is closed at once (the handshake then ends unread)."""
    key = base64.b64encode(os.urandom(16))
    lines = [b"GET / HTTP/1.1", b"Upgrade: websocket", b"Connection: Upgrade"]
    lines += [b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: 13"]
    lines += [name + b": " + value for name, value in headers]
    return await exchange_upgrade(port, b"\r\n".join(lines) + b"\r\n\r\n", within=WITHIN)


class TestUpgradeHeaders:
    @fuzz(120)
    @given(
        hosts=weighted(
            (3, st.just([b"127.0.0.1"])),
            (4, upgrade_value.map(lambda v: [v])),
            (1, st.lists(upgrade_value, max_size=2)),
        ),
        origins=st.lists(upgrade_value, max_size=2),
        forwarded=st.lists(upgrade_value, max_size=2),
    )
    async def test_any_host_origin_and_forwarded_values_get_a_documented_answer(
        self,
        gateway: Gateway,
        hosts: list[bytes],
        origins: list[bytes],
        forwarded: list[bytes],
    ) -> None:
        named = [(b"Host", hosts), (b"Origin", origins), (b"X-Forwarded-For", forwarded)]
        headers = [(name, value) for name, values in named for value in values]
        response = await upgrade_status(gateway.server.port, headers)
        event(f"status {response.status}")
        assert response.status in UPGRADE_STATUSES, response
        values = [value for _, value in headers]
        parser_refused = len(hosts) != 1 or any(_CONTROL.search(v) or len(v) > 8190 for v in values)
        if response.status in (403, 421) or (response.status == 400 and not parser_refused):
            assert_error_body(response)
        await still_serves(gateway)

    @fuzz(100)
    @given(
        headers=st.dictionaries(
            st.sampled_from(
                [
                    b"Sec-WebSocket-Key",
                    b"Sec-WebSocket-Version",
                    b"Sec-WebSocket-Protocol",
                    b"Sec-WebSocket-Extensions",
                    b"Upgrade",
                    b"Connection",
                    b"Expect",
                ]
            ),
            weighted(
                (3, upgrade_value),
                (
                    2,
                    st.sampled_from(
                        [
                            b"\xff",
                            b"websocket, \xed\xa0\x80",
                            b"upgrade, \xff",
                            b"8",
                            b"13, 8",
                            b"99999999999999999999",
                            b"dGhlIHNhbXBsZSBub25jZQ",
                            b"openclaw, , x",
                            b"permessage-deflate; client_max_window_bits=99",
                        ]
                    ),
                ),
            ).filter(lambda v: v.strip().lower() != b"100-continue"),
            min_size=1,
            max_size=3,
        ),
        path=st.sampled_from([b"/", b"/nope", b"/v1/models", b"/?x=%ff"]),
    )
    async def test_any_handshake_header_value_gets_a_documented_answer(
        self, gateway: Gateway, headers: dict[bytes, bytes], path: bytes
    ) -> None:
        """The headers of the upgrade itself (RFC 6455 §4.2.1) replaced with hostile values:
        a 101 for what still is a valid upgrade, else a JSON error."""
        key = base64.b64encode(os.urandom(16))
        sent = {
            b"Host": b"127.0.0.1",
            b"Upgrade": b"websocket",
            b"Connection": b"Upgrade",
            b"Sec-WebSocket-Key": key,
            b"Sec-WebSocket-Version": b"13",
            **headers,
        }
        head = b"GET " + path + b" HTTP/1.1\r\n"
        head += b"".join(name + b": " + value + b"\r\n" for name, value in sent.items())
        response = await exchange_upgrade(gateway.server.port, head + b"\r\n", within=WITHIN)
        event(f"status {response.status}")
        parser_refused = any(_CONTROL.search(v) or len(v) > 8190 for v in headers.values())
        if parser_refused:
            assert response.status in (400, 431), response  # 431: a field over the limit
        elif response.status >= 400:
            # A refused upgrade, or none after all (an Upgrade without `websocket`): then the
            # path's own answer (the Control UI's page at `/`).
            assert response.status < 500, response
            assert_error_body(response)
        await still_serves(gateway)


class TestBeforeTheHandshake:
    @fuzz(200)
    @given(frame=first_frames)
    async def test_any_first_frame_is_answered_as_the_spec_says(
        self, gateway: Gateway, frame: Frame
    ) -> None:
        async with gateway.http.ws_connect(gateway.url) as ws:
            challenge = await receive(ws)
            assert challenge is not None and challenge["event"] == "connect.challenge"
            await frame.send(ws)
            frames = []
            while (got := await receive(ws)) is not None:
                frames.append(got)
                if got["type"] == "res" and got["ok"]:
                    break  # a valid connect: hello-ok, the connection stays open
            responses = [f for f in frames if f["type"] == "res"]
            assert len(responses) <= 1, frames
            if responses and responses[0]["ok"]:
                event("hello-ok")
                assert responses[0]["payload"]["type"] == "hello-ok"
                assert is_request(frame), frame.data[:300]  # an over-long id is refused
            else:
                event(f"close {ws.close_code}")
                assert ws.close_code in HANDSHAKE_CLOSES, (ws.close_code, frames)
                if frame.size > PREAUTH_MAX:
                    assert ws.close_code == 1009, ws.close_code
        await still_serves(gateway)

    async def test_any_wrong_or_odd_value_anywhere_in_connect_is_answered_as_the_spec_says(
        self, gateway: Gateway
    ) -> None:
        """Each place of a complete connect with each wrong JSON type, or with a value made to
        slip past a check (NUL, lone surrogates, strings, lists and objects over the limits):
        hello-ok or one of §2.4's closes, never `internal error` (checked as read)."""
        steps = [
            (p, wrong_value) for p in json_paths(COMPLETE_CONNECT) for wrong_value in WRONG_TYPES
        ]
        # The pre-handshake frame limit is 64 KiB: the odd values that fit.
        steps += [(p, v) for p, v in odd_steps(COMPLETE_CONNECT) if len(to_json(v)) < 40_000]
        for path, value in steps:
            frame = {"type": "req", "id": "c1", "method": "connect"}
            frame["params"] = replaced(COMPLETE_CONNECT, path, value)
            async with gateway.http.ws_connect(gateway.url) as ws:
                challenge = await receive(ws)
                assert challenge is not None and challenge["event"] == "connect.challenge"
                await ws.send_str(to_json(frame))
                while (got := await receive(ws)) is not None:
                    if got["type"] == "res" and got["ok"]:
                        break  # still a valid connect: hello-ok
                else:
                    assert ws.close_code in HANDSHAKE_CLOSES, (path, value, ws.close_code)
        await still_serves(gateway)


COMPLETE_CONNECT: dict[str, Any] = {
    "minProtocol": 3,
    "maxProtocol": 4,
    "client": {
        "id": "cli",
        "version": "1",
        "platform": "linux",
        "mode": "cli",
        "displayName": "d",
        "deviceFamily": "f",
        "modelIdentifier": "m",
        "instanceId": "i",
    },
    "role": "operator",
    "scopes": ["operator.admin"],
    "auth": {"token": TOKEN, "password": "p", "deviceToken": "d", "bootstrapToken": "b"},
    "device": {"id": "d", "publicKey": "k", "signature": "s", "signedAt": 1, "nonce": "n"},
}


# -- after the handshake: each method's params (§6, §8) ----------------------------------------

session_key = weighted(
    (3, st.sampled_from(["main", "ws-1", "agent:main:fuzz", "MAIN", "agent:main:main"])),
    (1, st.sampled_from(["agent:nope:x", "agent:main:", "subagent:x", "x" * 600])),
    (2, odd_text),
)
small = st.integers(-1, 1200) | st.floats(-1, 1200)
# `sessions.usage`'s dates: any day from year 1 to 9999, impossible ones, text that is none.
usage_dates = weighted(
    (3, st.dates().map(dt.date.isoformat)),
    (1, st.sampled_from(["2026-02-30", "0000-01-01", "2026-1-1", " 2026-01-01 "])),
    (1, odd_text),
)
idempotency = weighted((2, st.uuids().map(str)), (1, nonempty_text))
PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "health": st.fixed_dictionaries({}, optional={"probe": often(st.booleans())}),
    "sessions.list": st.fixed_dictionaries(
        {},
        optional={
            "limit": often(small),
            "offset": often(small),
            "agentId": often(st.just("main") | odd_text),
            "search": often(odd_text),
            "label": often(odd_text),
            "activeMinutes": often(small),
            "spawnedBy": often(session_key),
            "archived": often(st.sampled_from([True, False, "all", "none"]) | json_values),
        },
    ),
    "chat.history": st.fixed_dictionaries(
        {"sessionKey": often(session_key)}, optional={"limit": often(small)}
    ),
    "logs.tail": st.fixed_dictionaries(
        {},
        optional={
            "cursor": often(st.integers(-1, 10**9)),
            "limit": often(small),
            "maxBytes": often(st.integers(-1, 10**7)),
            "logId": often(st.text(max_size=80)),
        },
    ),
    "chat.send": st.fixed_dictionaries(
        {
            "sessionKey": often(session_key),
            "message": often(st.sampled_from(["/stop", "", "hi"]) | odd_text),
            "idempotencyKey": often(idempotency),
        },
        optional={
            # Past the configured run timeout too (clamped to it, README).
            "timeoutMs": often(
                weighted((4, st.integers(0, 60_000)), (1, st.sampled_from([2**53 - 1, 10**300])))
            ),
            "thinking": often(odd_text),
            "deliver": often(st.booleans()),
            "attachments": often(st.sampled_from([[], [{"type": "image"}]])),
        },
    ),
    "chat.abort": st.fixed_dictionaries(
        {"sessionKey": often(session_key)}, optional={"runId": often(idempotency)}
    ),
    "agent": st.fixed_dictionaries(
        {"message": often(odd_text), "idempotencyKey": often(idempotency)},
        optional={
            "agentId": often(st.just("main") | odd_text),
            "sessionKey": often(session_key),
            "extraSystemPrompt": often(odd_text),
            "timeout": often(st.floats(0, 1e300) | st.integers(0, 10**6)),
            "provider": often(st.just([])),
            "model": often(st.just([])),
            "deliver": json_values,
        },
    ),
    "agent.wait": st.fixed_dictionaries(
        {"runId": often(idempotency)},
        # Past the one-day maximum too (clamped, README): its answer is not awaited here.
        optional={
            "timeoutMs": often(
                weighted((4, st.integers(0, 200)), (1, st.sampled_from([2**53 - 1, 1e300])))
            )
        },
    ),
    "sessions.patch": st.fixed_dictionaries(
        {"key": often(session_key)},
        optional={
            "label": often(st.none() | odd_text),
            "thinkingLevel": json_values,
            "archived": often(st.booleans() | json_values),
            "pinned": often(st.booleans() | json_values),
            "expectedSessionId": often(odd_text),
        },
    ),
    "sessions.reset": st.fixed_dictionaries(
        {"key": often(session_key)}, optional={"reason": often(st.sampled_from(["new", "x"]))}
    ),
    "sessions.delete": st.fixed_dictionaries(
        {"key": often(session_key)},
        optional={
            "deleteTranscript": often(st.booleans()),
            "expectedSessionId": odd_text,
            "archivedOnly": often(st.booleans() | json_values),
            "agentId": often(st.just("main") | odd_text),
        },
    ),
    "sessions.preview": st.fixed_dictionaries(
        {"keys": often(st.lists(session_key | json_values, max_size=70))},
        optional={"limit": often(small), "maxChars": often(small)},
    ),
    "system.info": st.fixed_dictionaries({}, optional={"extra": json_values}),
    "usage": st.fixed_dictionaries(
        {},
        optional={
            "days": often(st.integers(-1, 400) | st.floats(-1, 400)),
            "agentId": often(st.just("main") | odd_text),
        },
    ),
    "sessions.usage": st.fixed_dictionaries(
        {},
        optional={
            "key": often(session_key),
            "agentId": often(st.just("main") | odd_text),
            "agentScope": often(st.just("all") | odd_text),
            "creatorKey": often(st.just('["unknown"]') | odd_text),
            # Real dates and impossible ones, years apart, and text that is no date.
            "startDate": often(usage_dates),
            "endDate": often(usage_dates),
            "mode": often(st.sampled_from(["utc", "gateway", "specific"]) | odd_text),
            "timeZone": often(st.sampled_from(["Asia/Tokyo", "UTC", "../etc", ""]) | odd_text),
            "utcOffset": often(st.sampled_from(["UTC+5:30", "UTC-12", "UTC+99"]) | odd_text),
            "range": often(st.sampled_from(["7d", "1y", "all"]) | odd_text),
            "days": often(st.integers(-1, 400) | st.floats(-1, 1e9)),
            "groupBy": often(st.sampled_from(["instance", "family"]) | odd_text),
            "limit": often(st.integers(-1, 2000)),
            "includeHistorical": often(st.booleans()),
            "includeContextWeight": often(st.booleans()),
        },
    ),
    "sessions.usage.timeseries": st.fixed_dictionaries(
        {"key": often(session_key)},
        optional={"agentId": often(st.just("main") | odd_text), "sessionId": often(odd_text)},
    ),
    "sessions.usage.logs": st.fixed_dictionaries(
        {"key": often(session_key)},
        optional={
            "agentId": often(st.just("main") | odd_text),
            "sessionId": often(odd_text),
            "limit": often(st.integers(-(2**70), 2**70) | st.floats(-1, 1e300)),
        },
    ),
    "transcripts.list": st.fixed_dictionaries(
        {},
        optional={
            "limit": often(small),
            "cursor": often(odd_text),
            "query": often(odd_text),
            "agentId": often(odd_text),
            "startedAfter": often(st.datetimes().map(dt.datetime.isoformat) | odd_text),
            "startedBefore": often(
                st.datetimes(timezones=st.timezones()).map(dt.datetime.isoformat) | odd_text
            ),
        },
    ),
    "chat.subscribe": st.fixed_dictionaries({"sessionKey": often(session_key)}),
    "chat.unsubscribe": st.fixed_dictionaries({"sessionKey": often(session_key)}),
    "chat.startup": st.one_of(
        st.fixed_dictionaries(
            {"sessionKey": often(session_key)},
            optional={
                "limit": often(small),
                "maxBytes": often(st.integers(-1, 10**9)),
                "agentId": often(st.just("main") | odd_text),
            },
        ),
        st.fixed_dictionaries(
            {"shortId": often(odd_text), "agentId": often(st.just("main") | odd_text)},
            optional={"slugHint": often(odd_text), "limit": often(small)},
        ),
    ),
    "sessions.messages.subscribe": st.fixed_dictionaries(
        {"key": often(session_key)},
        optional={
            "agentId": often(st.just("main") | odd_text),
            "includeApprovals": often(st.booleans()),
        },
    ),
    "sessions.messages.unsubscribe": st.fixed_dictionaries(
        {"key": often(session_key)}, optional={"agentId": often(st.just("main") | odd_text)}
    ),
    "tools.github.status": st.fixed_dictionaries(
        {
            "agentId": often(st.just("main") | odd_text),
            "selectedScope": often(st.sampled_from(["system", "agent"]) | odd_text),
        }
    ),
    "config.schema.lookup": st.fixed_dictionaries(
        {"path": often(st.sampled_from(["gateway.port", "plugins", "agents.list[].id"]) | odd_text)}
    ),
    "config.patch": st.fixed_dictionaries(
        # The file exists, so a patch needs its sha256 as baseHash: none of these can apply.
        {"raw": often(st.one_of(odd_text, json_values.map(to_json), specials.map(to_json)))},
        optional={
            "baseHash": often(odd_text),
            "note": often(odd_text),
            "restartDelayMs": often(small),
        },
    ),
}
# -- every param of every method, with every wrong type ------------------------------------

KEY = "agent:main:walk"
# Complete valid params of every method the server registers (checked below against the
# registry and against what each method's parser reads, so neither can outgrow this table).
COMPLETE_PARAMS: dict[str, dict[str, Any]] = {
    "health": {"probe": True},
    "status": {},
    "agents.list": {},
    "models.list": {},
    "sessions.list": {
        "limit": 5,
        "offset": 1,
        "agentId": "main",
        "search": "w",
        "label": "l",
        "activeMinutes": 60,
        "spawnedBy": KEY,
        "archived": "all",
    },
    "sessions.patch": {
        "key": KEY,
        "label": "walk",
        "archived": False,
        "pinned": True,
        "agentId": "main",
        "expectedSessionId": "s",
    },
    "sessions.reset": {"key": KEY, "reason": "new"},
    "sessions.delete": {
        "key": KEY,
        "deleteTranscript": False,
        "expectedSessionId": "",
        "archivedOnly": True,
        "agentId": "main",
    },
    "chat.send": {
        "sessionKey": KEY,
        "message": "hi",
        "idempotencyKey": "walk-1",
        "timeoutMs": 1000,
        "thinking": "low",
        "deliver": False,
        "attachments": [],
    },
    "chat.history": {"sessionKey": KEY, "limit": 10},
    "chat.abort": {"sessionKey": KEY, "runId": "walk-1"},
    "agent": {
        "message": "hi",
        "idempotencyKey": "walk-2",
        "agentId": "main",
        "sessionKey": KEY,
        "extraSystemPrompt": "Be brief.",
        "timeout": 30,
    },
    "agent.wait": {"runId": "walk-2", "timeoutMs": 0},
    "config.get": {},
    "config.patch": {"raw": "{}", "baseHash": "0" * 64, "note": "n", "restartDelayMs": 0},
    "system-presence": {},
    "logs.tail": {"cursor": 0, "limit": 10, "maxBytes": 1000, "logId": "0" * 32},
    "sessions.subscribe": {},
    "sessions.unsubscribe": {},
    "sessions.describe": {"key": KEY},
    "sessions.create": {
        "key": KEY,
        "agentId": "main",
        "label": "walk",
        "idempotencyKey": "walk-3",
        "parentSessionKey": KEY,
        "succeedsParent": True,
        "emitCommandHooks": False,
        "message": "hi",
        "timeoutMs": 1000,
    },
    "channels.status": {},
    "cron.list": {"limit": 50, "offset": 0},
    "cron.status": {},
    "cron.runs": {"id": "", "jobId": "", "limit": 5},  # "" is no job: every job's runs
    "node.list": {},
    "node.pair.list": {},
    "last-heartbeat": {},
    "diagnostics.stability": {"limit": 10},
    "device.pair.list": {},
    "question.list": {},
    "exec.approval.list": {},
    "plugin.approval.list": {},
    "openclaw.approval.list": {},
    "taskSuggestions.list": {},
    "environments.list": {},
    "commands.list": {},
    "skills.status": {"agentId": "main"},
    "hooks.status": {"agentId": "main"},
    "sessions.preview": {"keys": [KEY], "limit": 3, "maxChars": 100},
    "system.info": {},
    "usage": {"days": 7, "agentId": "main"},
    "usage.cost": {"days": 7, "agentId": "", "agentScope": "all"},  # "" is no agent
    "usage.status": {},
    # `agentScope: "all"` goes without `key` and `agentId`: a walk's value here.
    "sessions.usage": {
        "key": KEY,
        "agentId": "main",
        "agentScope": None,
        "creatorKey": '["unknown"]',
        "startDate": "2026-01-01",
        "endDate": "2026-01-31",
        "mode": "specific",
        "timeZone": "Europe/Berlin",
        "utcOffset": "UTC+1",
        "range": "30d",
        "days": 30,
        "groupBy": "family",
        "includeHistorical": False,
        "limit": 10,
        "includeContextWeight": True,
    },
    "sessions.usage.timeseries": {"key": KEY, "agentId": "main", "sessionId": "s"},
    "sessions.usage.logs": {"key": KEY, "agentId": "main", "sessionId": "s", "limit": 10},
    "diagnostics.lanes": {},
    # `cursor` goes without transcripts (none was given out): a walk's value here.
    "transcripts.list": {
        "limit": 50,
        "cursor": None,
        "query": "q",
        "providerId": "zoom",
        "accountId": "a",
        "agentId": "main",
        "startedAfter": "2026-01-01T00:00:00Z",
        "startedBefore": "2026-02-01T00:00:00Z",
    },
    "themes.list": {},
    "worktrees.list": {},
    "worktrees.gc": {},
    "cron.add": {"name": "n", "schedule": {"kind": "every"}, "payload": {"kind": "agentTurn"}},
    "memory.search": {"query": "q", "maxResults": 5, "minScore": 0.5, "agentId": "main"},
    "models.authSetApiKey": {"provider": "openai", "apiKey": "sk-x", "agentId": "main"},
    "worktrees.create": {"repoRoot": "/srv/repo", "name": "feature-1", "baseRef": "main"},
    "worktrees.branches": {"repoRoot": "/srv/repo", "includeRepositoryStatus": True},
    "channels.pairing.list": {"channel": "telegram", "accountId": "default"},
    "chat.subscribe": {"sessionKey": KEY},
    "chat.unsubscribe": {"sessionKey": KEY},
    "chat.startup": {"sessionKey": KEY, "limit": 10, "maxBytes": 2048, "agentId": "main"},
    "sessions.messages.subscribe": {"key": KEY, "agentId": "main", "includeApprovals": True},
    "sessions.messages.unsubscribe": {"key": KEY, "agentId": "main"},
    "plugins.list": {},
    "progressCard.get": {"sessionKey": KEY, "agentId": "main"},
    "sessions.branches.list": {"sessionKey": KEY, "agentId": "main"},
    "sessions.companion.state": {"sessionKey": KEY, "agentId": "main"},
    "sessions.companion.ask": {"sessionKey": KEY, "agentId": "main", "question": "why?"},
    "sessions.companion.reset": {"sessionKey": KEY, "agentId": "main"},
    "update.status": {"refreshCheckout": False},
    "sessions.observer.visibility": {"visible": True},
    "agent.identity.get": {"agentId": "main", "sessionKey": KEY},
    "models.authStatus": {"refresh": True, "agentId": "main"},
    "talk.catalog": {"provider": "p", "model": "m"},
    "tools.github.status": {"agentId": "main", "selectedScope": "agent"},
    "tools.github.configure": {
        "scope": "system",
        "agentId": "main",
        "mode": "managed",
        "secretName": "github-setup-" + "0" * 32,
        "gitAuthor": {"name": "n", "email": "e"},
    },
    "tools.github.authorize.start": {"scope": "agent", "agentId": "main"},
    "secrets.store.list": {},
    "secrets.store.set": {
        "name": "API_KEY",
        "value": "v",
        "kind": "secret",
        "allowedHosts": ["example.com"],
    },
    "tools.github.authorize.poll": {"requestId": "github-device-" + "0" * 32},
    "tools.github.authorize.cancel": {"requestId": "github-device-" + "0" * 32},
    "push.web.vapidPublicKey": {},
    "push.web.subscribe": {
        "endpoint": "https://push.example.test/sub",
        "keys": {"p256dh": "k", "auth": "a"},
    },
    "push.web.unsubscribe": {"endpoint": "https://push.example.test/sub"},
    "push.web.preferences.get": {"endpoint": "https://push.example.test/sub"},
    "push.web.preferences.set": {
        "endpoint": "https://push.example.test/sub",
        "scope": "device",
        "preferences": {"enabled": True},
    },
    "push.web.test": {"title": "t", "body": "b"},
    "push.test": {"nodeId": "phone-1", "title": "t", "body": "b", "environment": "sandbox"},
    "doctor.memory.status": {"agentId": "main", "probe": True, "deep": False},
    "doctor.memory.dreamDiary": {"agentId": "main"},
    "tools.catalog": {"agentId": "main", "includePlugins": True},
    "agents.files.list": {"agentId": "main"},
    "wizard.start": {
        "mode": "local",
        "workspace": "w",
        "installDaemon": False,
        "flow": "channels",
        "channel": "telegram",
    },
    "tools.effective": {"sessionKey": KEY, "agentId": "main"},
    "config.schema.lookup": {"path": "plugins.entries.memory-core.config"},
    # `cursor` goes without a history (none was given out): a walk's value here.
    "approval.history": {"cursor": None, "limit": 50, "kind": "plugin"},
    "exec.approval.grants.list": {"limit": 500},
    "exec.approvals.get": {},
    "exec.approvals.set": {
        "file": {"version": 1, "defaults": {"security": "full"}, "agents": {}},
        "baseHash": "h",
    },
    "skills.library.list": {"sessionKey": KEY, "scope": "team"},
    "skills.search": {"query": "git", "limit": 20},
    "skills.proposals.list": {"agentId": "main"},
    "migrations.memory.plan": {"agentId": "main", "overwrite": False},
    "openclaw.setup.detect": {"agentId": "main"},
    "openclaw.setup.verify": {"agentId": "main", "modelTarget": "utility"},
    "webSearch.status": {"agentId": "main", "modelProvider": "echo", "modelId": "echo"},
    "artifacts.list": {
        "sessionKey": KEY,
        "runId": "r",
        "taskId": "t",
        "agentId": "main",
        "messageRole": "assistant",
        "type": "image",
        "limit": 4,
        "cursor": "c",
    },
    # `authProfileId` (a model account to preview) goes without `sessionKey`; clawgate has none.
    "chat.metadata": {"agentId": "main", "sessionKey": KEY, "authProfileId": None},
    # A search (`query`) takes no `cursor`: a browse's page here.
    "plugins.catalog.browse": {
        "query": None,
        "searchSource": "openclaw-control-ui",
        "intent": "trending",
        "category": "dev-tools",
        "cursor": "c",
        "pageSize": 20,
    },
    "tasks.list": {
        "status": ["running"],
        "agentId": "main",
        "sessionKey": KEY,
        "limit": 10,
        "cursor": "c",
        "sortBy": "updatedAt",
    },
}
METHODS = register_all(MethodRegistry())


# Slow by design, so only their other frames are awaited: `agent` answers again when its run
# ends; `agent.wait` waits up to timeoutMs (30 s when absent).
SLOW = frozenset({"agent", "agent.wait"})


@st.composite
def requests(draw: st.DrawFn, methods: tuple[str, ...]) -> tuple[str, Frame]:
    method = draw(
        weighted(
            (6, st.sampled_from(sorted(PARAMS))),
            (2, st.sampled_from(methods)),
            (1, st.sampled_from(["connect", "nope"]) | odd_text),
        )
    )
    complete = COMPLETE_PARAMS.get(method, {})
    # The complete params with wrong values at a few of their places (any depth).
    damaged_complete = st.builds(
        corrupted,
        st.just(complete),
        st.dictionaries(
            st.sampled_from(json_paths(complete)[1:] or [("x",)]), wrong, min_size=1, max_size=2
        ),
    )
    params = draw(
        weighted((6, PARAMS.get(method, st.just(complete))), (2, damaged_complete), (1, wrong))
    )
    request = {"type": "req", "id": "fuzz", "method": method}
    if draw(st.booleans()) or params != {}:
        request["params"] = params
    return method, text_frame(request)


class TestAfterTheHandshake:
    @fuzz(250)
    @given(data=st.data())
    async def test_any_request_gets_one_documented_response(
        self, gateway: Gateway, data: st.DataObject
    ) -> None:
        method, frame = data.draw(requests(gateway.methods))
        async with gateway.http.ws_connect(gateway.url) as ws:
            await handshake(ws)
            await frame.send(ws)
            await ws.send_str('{"type":"req","id":"after","method":"health"}')
            if not is_request(frame):
                # An empty method, or nested deeper than the parser goes (§6).
                answer = await response(ws, response_id(frame))
                assert answer["error"]["message"].startswith("invalid request frame: ")
            elif method not in SLOW:
                answer = await response(ws, "fuzz")
                event(f"{method if method in PARAMS else 'other'} ok={answer['ok']}")
            assert (await response(ws, "after"))["ok"] is True
        await still_serves(gateway)

    @fuzz(100)
    @given(frame=not_requests)
    async def test_any_other_frame_gets_an_invalid_request_response(
        self, gateway: Gateway, frame: Frame
    ) -> None:
        async with gateway.http.ws_connect(gateway.url) as ws:
            await handshake(ws)
            await frame.send(ws)
            if frame.kind == "raw-text":
                # Not UTF-8: aiohttp closes with 1007 before the frame reaches us (RFC 6455).
                while await receive(ws) is not None:
                    pass
                assert ws.close_code == 1007, ws.close_code
            else:
                await ws.send_str('{"type":"req","id":"after","method":"health"}')
                got = await response(ws, response_id(frame))
                if is_request(frame):
                    event("a request after all")  # any documented answer (checked)
                else:
                    event("invalid request frame")
                    assert got["error"]["code"] == "INVALID_REQUEST", got
                    assert got["error"]["message"].startswith("invalid request frame: "), got
                if got["id"] != "after":
                    assert (await response(ws, "after"))["ok"] is True
        await still_serves(gateway)

    async def test_a_frame_over_max_payload_closes_1009_and_the_gateway_goes_on(
        self, gateway: Gateway
    ) -> None:
        """The largest frame of all (§2.3): one byte over `policy.maxPayload` ends the
        connection, and only it."""
        async with gateway.http.ws_connect(gateway.url) as ws:
            hello = await handshake(ws)
            limit = hello["payload"]["policy"]["maxPayload"]
            head = '{"type":"req","id":"big","method":"health","params":{"x":"'
            # The server may stop reading at the frame's header, before all of it is sent.
            with contextlib.suppress(ConnectionError):
                await ws.send_str(head + "a" * (limit - len(head) - 2) + '"}}')  # limit + 1
            while await receive(ws) is not None:
                pass
            # §2.3 says 1009; aiohttp's reader cuts the TCP connection on an oversized frame
            # without a close frame, so the client sees 1006 (reported to the lead).
            assert ws.close_code in (1006, 1009), ws.close_code
        await still_serves(gateway)


# -- frames as RFC 6455 lays them out, broken in every way a reader must notice -------------


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True
) -> bytes:
    """One frame as a client writes it (RFC 6455 §5.2): masked unless told otherwise."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        head += bytes([mask_bit | len(payload)])
    elif len(payload) < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", len(payload))
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


HEALTH = b'{"type":"req","id":"a","method":"health"}'
CLOSE_1000 = struct.pack("!H", 1000)
RAW_FRAMES: dict[str, list[bytes]] = {
    "ping of 125 bytes": [client_frame(0x9, b"p" * 125)],
    "ping of 126 bytes": [client_frame(0x9, b"p" * 126)],
    "fragmented ping": [client_frame(0x9, b"p", fin=False)],
    "unsolicited pong": [client_frame(0xA, b"\xff" * 10)],
    "close 999": [client_frame(0x8, struct.pack("!H", 999))],
    "close 1005": [client_frame(0x8, struct.pack("!H", 1005))],
    "close 5000": [client_frame(0x8, struct.pack("!H", 5000))],
    "close of one byte": [client_frame(0x8, b"\x03")],
    "close reason not UTF-8": [client_frame(0x8, CLOSE_1000 + b"\xff\xfe")],
    "close over 125 bytes": [client_frame(0x8, CLOSE_1000 + b"r" * 200)],
    "continuation first": [client_frame(0x0, HEALTH)],
    "reserved data opcode": [client_frame(0x3, HEALTH)],
    "reserved control opcode": [client_frame(0xB, HEALTH)],
    "RSV1 without an extension": [client_frame(0x1, HEALTH, rsv=4)],
    "RSV3": [client_frame(0x1, HEALTH, rsv=1)],
    "unmasked": [client_frame(0x1, HEALTH, masked=False)],
    "fragmented": [client_frame(0x1, HEALTH[:14], fin=False), client_frame(0x0, HEALTH[14:])],
    "UTF-8 split across fragments": [
        client_frame(0x1, b'{"type":"req","id":"\xc3', fin=False),
        client_frame(0x0, b'\xa9","method":"health"}'),
    ],
    "not UTF-8 across fragments": [
        client_frame(0x1, b'{"type":"req","id":"\xc3', fin=False),
        client_frame(0x0, b'\x28","method":"health"}'),
    ],
    "new message inside a fragmented one": [
        client_frame(0x1, b"{", fin=False),
        client_frame(0x1, HEALTH),
    ],
    "ping between fragments": [
        client_frame(0x1, HEALTH[:14], fin=False),
        client_frame(0x9, b"p"),
        client_frame(0x0, HEALTH[14:]),
    ],
    "a thousand fragments": [
        client_frame(0x1, b"", fin=False),
        *[client_frame(0x0, b" ", fin=False)] * 1000,
        client_frame(0x0, HEALTH),
    ],
    "empty text": [client_frame(0x1, b"")],
    "binary": [client_frame(0x2, HEALTH)],
    "length of 2**63 - 1": [bytes([0x81, 0xFF]) + struct.pack("!Q", 2**63 - 1) + b"mask"],
}
# The closes RFC 6455 §7.4.1 has for a frame a reader refuses, and 1000 for the client's own.
FRAME_CLOSES = frozenset({1000, 1002, 1007, 1009})


async def read_server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


class TestRawFrames:
    @pytest.mark.parametrize("frames", RAW_FRAMES.values(), ids=RAW_FRAMES.keys())
    async def test_any_frame_is_read_or_closed_with_a_documented_code(
        self, gateway: Gateway, frames: list[bytes]
    ) -> None:
        """After hello-ok, a frame of any layout: the request behind it still gets its
        response, or the socket is closed with one of RFC 6455's codes; never a traceback."""
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
        try:
            key = base64.b64encode(os.urandom(16))
            writer.write(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            writer.write(client_frame(0x1, connect_frame().encode()))
            async with asyncio.timeout(WITHIN):
                while b'"hello-ok"' not in (await read_server_frame(reader))[1]:
                    pass
                writer.writelines([*frames, client_frame(0x1, b'{"type":"req","id":"after",'
                                   b'"method":"health"}')])  # fmt: skip
                while True:
                    opcode, payload = await read_server_frame(reader)
                    if opcode == 0x8:
                        (code,) = struct.unpack("!H", payload[:2])
                        assert code in FRAME_CLOSES, payload
                        break
                    if opcode == 0x1:
                        assert_frame(json.loads(payload))
                        if b'"id":"after"' in payload:
                            break
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await still_serves(gateway)


class TestEveryParamOfEveryMethod:
    async def test_the_table_has_every_registered_method(self) -> None:
        assert sorted(COMPLETE_PARAMS) == sorted(METHODS.names)

    async def test_each_method_reads_only_params_the_table_holds(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        read: list[tuple[str, str]] = []
        original = ParamReader._get

        def recording(reader: ParamReader, key: str, required: bool) -> Any:
            read.append((reader.path, key))
            return original(reader, key, required)

        monkeypatch.setattr(ParamReader, "_get", recording)
        for name, params in COMPLETE_PARAMS.items():
            read.clear()
            spec = METHODS.get(name)
            assert spec is not None
            spec.params(ParamReader(params))  # valid: parses
            missing = [key for path, key in read if path == "" and key not in params]
            assert missing == [], name

    async def test_any_wrong_type_anywhere_is_a_params_error_or_accepted(self) -> None:
        """Each place of each method's complete params (the params themselves, every
        container, every value) with each wrong JSON type. The dispatcher turns a
        ParamsError (or a parser's INVALID_REQUEST) into an error frame; any other exception
        of a parser would be an `internal error` (§6)."""
        failures = []
        for name, params in COMPLETE_PARAMS.items():
            spec = METHODS.get(name)
            assert spec is not None
            for path in json_paths(params):
                for wrong_value in WRONG_TYPES:
                    try:
                        spec.params(ParamReader(replaced(params, path, wrong_value)))
                    except ParamsError:
                        pass
                    except WsError as exc:  # a parser's own documented refusal
                        if exc.code != INVALID_REQUEST:
                            failures.append(f"{name} {path} = {wrong_value!r}: {exc!r}")
                    except Exception as exc:
                        failures.append(f"{name} {path} = {wrong_value!r}: {exc!r}")
        assert failures == []

    async def test_any_odd_or_oversize_value_anywhere_is_a_params_error_or_accepted(
        self,
    ) -> None:
        """The same walk with the values made to slip past a check: over every length limit,
        NUL, controls, lone surrogates, bidi marks."""
        failures = []
        for name, params in COMPLETE_PARAMS.items():
            spec = METHODS.get(name)
            assert spec is not None
            for path, odd in odd_steps(params):
                try:
                    spec.params(ParamReader(replaced(params, path, odd)))
                except ParamsError:
                    pass
                except WsError as exc:
                    if exc.code != INVALID_REQUEST:
                        failures.append(f"{name} {path} = {odd!r:.60}: {exc!r}")
                except Exception as exc:
                    failures.append(f"{name} {path} = {odd!r:.60}: {exc!r}")
        assert failures == []

    async def test_any_wrong_type_anywhere_gets_a_documented_frame(self, gateway: Gateway) -> None:
        """The same walk over the wire, handlers included: every request is answered with a
        frame of the §1 shape (checked as it is read: never `internal error`), and the
        connection goes on serving."""
        await walk_over_the_wire(
            gateway,
            [
                (name, replaced(params, path, wrong_value))
                for name, params in COMPLETE_PARAMS.items()
                for path in json_paths(params)
                for wrong_value in WRONG_TYPES
            ],
        )

    async def test_any_odd_or_oversize_value_anywhere_gets_a_documented_frame(
        self, gateway: Gateway
    ) -> None:
        await walk_over_the_wire(
            gateway,
            [
                (name, replaced(params, path, odd))
                for name, params in COMPLETE_PARAMS.items()
                for path, odd in odd_steps(params)
            ],
        )


async def walk_over_the_wire(gateway: Gateway, steps: list[tuple[str, Any]]) -> None:
    """Each (method, params) as a request over one connection, sent in batches, each read
    back before the next."""
    frames = [(f"walk-{number}", name, params) for number, (name, params) in enumerate(steps)]
    # NaN and Infinity make a frame no JSON (§1): answered as `invalid`, one at a time, since
    # responses are told apart by their ids.
    texts = [
        (frame_id, name, json.dumps({"type": "req", "id": frame_id, "method": name, "params": p}))
        for frame_id, name, p in frames
    ]
    requests = [t for t in texts if response_id(Frame("text", t[2])) == t[0]]
    not_json = [t for t in texts if response_id(Frame("text", t[2])) == "invalid"]
    assert len(requests) + len(not_json) == len(texts)
    async with gateway.http.ws_connect(gateway.url) as ws:
        await handshake(ws)
        for start in range(0, len(requests), 16):
            batch = requests[start : start + 16]
            for _, _, text in batch:
                await ws.send_str(text)
            for frame_id, name, _ in batch:
                if name not in SLOW:
                    await response(ws, frame_id)
        for _, _, text in not_json:
            await ws.send_str(text)
            answer = await response(ws, "invalid")
            assert answer["error"]["message"] == "invalid request frame: not JSON", answer
        await ws.send_str('{"type":"req","id":"after","method":"health"}')
        assert (await response(ws, "after"))["ok"] is True
    await still_serves(gateway)


# -- run ids that are not text ----------------------------------------------------------------

RUN_ID_FIELDS = {
    "chat.send": ("idempotencyKey", "idempotency key", {"sessionKey": "lone", "message": "hi"}),
    "agent": ("idempotencyKey", "idempotency key", {"sessionKey": "lone", "message": "hi"}),
    "agent.wait": ("runId", "run id", {"timeoutMs": 0}),
    "chat.abort": ("runId", "run id", {"sessionKey": "lone"}),
}


class TestRunIdsThatAreNotText:
    @fuzz(60)
    @given(
        method=st.sampled_from(sorted(RUN_ID_FIELDS)),
        around=st.tuples(st.text(max_size=5), st.text(max_size=5)),  # no surrogates
        lone=st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]),
    )
    async def test_a_run_id_with_a_lone_surrogate_is_a_params_error(
        self, gateway: Gateway, method: str, around: tuple[str, str], lone: str
    ) -> None:
        """Repaired to U+FFFD it would be another key's (README): refused wherever it sits,
        and nothing runs."""
        field, kind, params = RUN_ID_FIELDS[method]
        params = {**params, field: around[0] + lone + around[1]}
        async with gateway.http.ws_connect(gateway.url) as ws:
            await handshake(ws)
            await ws.send_str(to_json({"type": "req", "id": "lone", "method": method,
                                       "params": params}, ascii_only=True))  # fmt: skip
            answer = await response(ws, "lone")
        assert answer["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"invalid {method} params: at /{field}: invalid {kind}"
            " (a lone UTF-16 surrogate is not text)",
        }


# -- two clients acting on one session at once (§8) ---------------------------------------------

# Each of the echo agent's words takes a few ms: a run is still streaming when the other
# client's calls arrive, and a second session's turn waits for the one run slot.
BUSY = {
    "agents": {
        "defaults": {"maxConcurrent": 1},
        "list": [{"id": "main", "default": True, "params": {"delayMs": 3}}],
    }
}
WORDS = " ".join(f"w{i}" for i in range(12))
TERMINAL = frozenset({"final", "aborted", "error"})
EXAMPLES = itertools.count()


@attrs.frozen
class Busy:
    server: Served
    log: ServerLog
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url + "/"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def busy(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Busy]:
    app = build_app(tmp_path_factory.mktemp("fuzz-ws-busy"), BUSY)
    async with served(app) as server:
        yield Busy(server, gateway.log, gateway.http)


# What one client does to the session (`k`) or to the other session (`other`, which takes the
# run slot): the writes the spec lets race a run, and the reads that must see no half of them.
session_ops = st.sampled_from(
    [
        "send",
        "send",
        "send other",
        "patch",
        "patch null",
        "reset",
        "delete",
        "abort",
        "abort run",
        "stop",
        "history",
        "list",
        "describe",
        "agent",
        "create",
        "new",
        "reset text",
    ]
)


def op_request(op: str, key: str, number: int) -> tuple[str, dict[str, Any]]:
    run = f"{key}-{number}"
    match op:
        case "send":
            return "chat.send", {"sessionKey": key, "message": WORDS, "idempotencyKey": run}
        case "send other":
            params = {"sessionKey": key + "-other", "message": WORDS, "idempotencyKey": run}
            return "chat.send", params
        case "agent":
            return "agent", {"sessionKey": key, "message": WORDS, "idempotencyKey": run}
        case "create":  # OpenClaw's Control UI's New conversation: made with its first turn
            return "sessions.create", {"key": key, "message": WORDS}
        case "new":
            return "agent", {"sessionKey": key, "message": "/new", "idempotencyKey": run}
        case "reset text":
            params = {"sessionKey": key, "message": "/reset " + WORDS, "idempotencyKey": run}
            return "agent", params
        case "patch":
            return "sessions.patch", {"key": key, "label": f"label {number}"}
        case "patch null":
            return "sessions.patch", {"key": key, "label": None}
        case "reset":
            return "sessions.reset", {"key": key}
        case "delete":
            return "sessions.delete", {"key": key}
        case "abort":
            return "chat.abort", {"sessionKey": key}
        case "abort run":  # the run of the send before it, whichever it was
            return "chat.abort", {"sessionKey": key, "runId": f"{key}-{number - 1}"}
        case "stop":
            return "chat.send", {"sessionKey": key, "message": "/stop", "idempotencyKey": run}
        case "history":
            return "chat.history", {"sessionKey": key}
        case "list":
            return "sessions.list", {"search": key}
        case _:
            return "sessions.describe", {"key": key}


class TestTwoClientsOnOneSession:
    @fuzz(60)
    @given(
        ops=st.lists(st.tuples(st.sampled_from([0, 1]), session_ops), min_size=2, max_size=10),
        leaves=st.booleans(),
    )
    async def test_writes_racing_a_run_leave_a_whole_session_and_no_lock(
        self, busy: Busy, ops: list[tuple[int, str]], leaves: bool
    ) -> None:
        """Two connections send their calls at once, pipelined (one of them may close with
        its calls unanswered): every call is answered with a documented frame (checked as
        read), each run of the key ends (`agent.wait` says when; aborted when an abort said
        it stopped it), and then the session has no run, its history pairs each question
        with its (maybe aborted) reply, the connection's state is gone, and a new turn on
        the key runs to its end."""
        key = f"two-{next(EXAMPLES)}"  # a session of its own (examples repeat)
        ws_state = busy.server.app[WS]
        registry = busy.server.app[STATE].registry
        assert registry is not None
        clients = [await busy.http.ws_connect(busy.url) for _ in range(2)]
        try:
            for client in clients:
                await handshake(client)
            sent: list[tuple[int, str, str]] = []  # (client, frame id, method)
            for number, (who, op) in enumerate(ops):
                method, params = op_request(op, key, number)
                frame_id = f"op-{number}"
                request = {"type": "req", "id": frame_id, "method": method, "params": params}
                await clients[who].send_str(json.dumps(request))
                sent.append((who, frame_id, method))
            if leaves:
                await clients[1].close()
            started: set[str] = set()
            aborted: set[str] = set()  # what an abort (or /stop) said it stopped
            for who, frame_id, method in sent:
                if leaves and who == 1:
                    continue
                answer = await response(clients[who], frame_id)
                event(f"{method} ok={answer['ok']}")
                payload = answer.get("payload") or {}
                if answer["ok"] and payload.get("status") in ("started", "accepted"):
                    started.add(payload["runId"])
                if answer["ok"] and payload.get("aborted") is True:
                    aborted.update(payload["runIds"])
            # Every run of the key, any client's (a created session's first turn has an id
            # of the gateway's), ends: agent.wait says when.
            watcher = clients[0]
            runs = sorted(
                {f"{key}-{number}" for number in range(len(ops))}
                | started
                | {
                    r.id
                    for s in (key, key + "-other")
                    for r in registry.active_runs(f"agent:main:{s}")
                }
            )
            for number, run_id in enumerate(runs):
                if registry.run(run_id) is None:
                    continue
                await watcher.send_str(
                    json.dumps(
                        {"type": "req", "id": f"w-{number}", "method": "agent.wait",
                         "params": {"runId": run_id, "timeoutMs": int(WITHIN * 1000)}}
                    )
                )  # fmt: skip
                waited = await response(watcher, f"w-{number}")
                assert waited["payload"].get("endedAt") is not None, waited
                if run_id in aborted:  # it did: the run ended aborted (agent.wait's timeout)
                    assert waited["payload"]["status"] == "timeout", waited
                run = registry.run(run_id)
                assert run is None or run.ended, run_id
            for session in (key, key + "-other"):
                assert registry.active_runs(f"agent:main:{session}") == []
            await watcher.send_str(
                json.dumps({"type": "req", "id": "h", "method": "chat.history",
                            "params": {"sessionKey": key}})
            )  # fmt: skip
            roles = [m["role"] for m in (await response(watcher, "h"))["payload"]["messages"]]
            assert roles == ["user", "assistant"] * (len(roles) // 2), roles
            # No lock or queue left: a new turn of the key runs to its end.
            after = {"sessionKey": key, "message": "after", "idempotencyKey": key + "-after"}
            await watcher.send_str(
                json.dumps({"type": "req", "id": "after", "method": "chat.send",
                            "params": after})
            )  # fmt: skip
            assert (await response(watcher, "after"))["payload"]["status"] == "started"
            ends: list[str] = []
            while not ends:
                frame = await receive(watcher)
                assert frame is not None
                payload = frame.get("payload") or {}
                ours = frame.get("event") == "chat" and payload.get("runId") == key + "-after"
                if ours and payload["state"] in TERMINAL:
                    ends.append(payload["state"])
            assert ends == ["final"]
        finally:
            for client in clients:
                await client.close()
        async with asyncio.timeout(WITHIN):
            while ws_state.connections:  # the server's side of the closes
                await asyncio.sleep(0.01)
        assert ws_state.transcript_reads.idle, "a transcript read's turn was left held"
        assert not ws_state.fanout.followers
        assert not ws_state.starting, "a key's start was left marked: its retries would wait"
        assert ws_state.waiting_chars == 0
        assert busy.log.new_problems() == []
