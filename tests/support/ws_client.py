"""The WebSocket side: a client socket that keeps every frame it read, a gateway to open it on,
the connect parameters, and the wire form of frames."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from agents.store import SessionStore
from gateway.ws.handler import WS

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]

TOKEN = "test-token"
CONFIG = """{
  // the WebSocket tests' gateway
  gateway: {
    auth: { mode: "token", token: "test-token" },
    http: { endpoints: { chatCompletions: { enabled: true } } },
  },
  agents: { list: [{ id: "main", default: true }] },
}
"""
TIMEOUT = 5.0  # no single frame of these tests takes longer
# The echo agent waits between words: a run that is still streaming when the test acts.
SLOW_CONFIG = CONFIG.replace(
    '{ id: "main", default: true }', '{ id: "main", default: true, params: { delayMs: 40 } }'
)


def connect_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "test", "version": "1.0", "platform": "linux", "mode": "cli"},
        "role": "operator",
        "auth": {"token": TOKEN},
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


class GatewayWs:
    """A client socket that keeps every frame it has read, so tests can look back."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []  # everything read, in order
        self._unread: list[dict[str, Any]] = []  # read from the socket, not yet consumed
        self.hello: dict[str, Any] | None = None

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def _read(self, wait: float) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=wait)
        if msg.type is not WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r}")
        frame: dict[str, Any] = json.loads(msg.data)
        self.frames.append(frame)
        return frame

    async def recv(self, wait: float = TIMEOUT) -> dict[str, Any]:
        """The next frame."""
        if self._unread:
            return self._unread.pop(0)
        return await self._read(wait)

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], wait: float = TIMEOUT
    ) -> dict[str, Any]:
        """The first frame that matches; the others stay unread, in order."""
        for i, frame in enumerate(self._unread):
            if match(frame):
                return self._unread.pop(i)
        async with asyncio.timeout(wait):
            while True:
                frame = await self._read(wait)
                if match(frame):
                    return frame
                self._unread.append(frame)

    async def event(self, name: str, **payload: Any) -> dict[str, Any]:
        def match(frame: dict[str, Any]) -> bool:
            if frame.get("type") != "event" or frame.get("event") != name:
                return False
            body = frame.get("payload") or {}
            return all(body.get(k) == v for k, v in payload.items())

        return await self.wait_for(match)

    async def request(self, method: str, params: Any = None, **extra: Any) -> str:
        frame_id = extra.pop("id", None) or f"r-{uuid.uuid4().hex[:8]}"
        frame: dict[str, Any] = {"type": "req", "id": frame_id, "method": method}
        if params is not None:
            frame["params"] = params
        await self.send(frame)
        return frame_id

    async def response(self, frame_id: str, wait: float = TIMEOUT) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: f.get("type") == "res" and f.get("id") == frame_id, wait
        )

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """The whole response frame."""
        return await self.response(await self.request(method, params))

    async def ok(self, method: str, params: Any = None) -> Any:
        """The payload of a successful call."""
        frame = await self.call(method, params)
        assert frame["ok"] is True, frame
        return frame["payload"]

    async def connect(self, **overrides: Any) -> dict[str, Any]:
        challenge = await self.recv()
        assert challenge["event"] == "connect.challenge", challenge
        frame = await self.call("connect", connect_params(**overrides))
        self.hello = frame
        return frame

    async def closed(self, wait: float = TIMEOUT) -> tuple[int | None, str]:
        """Read (and keep) frames until the close; its code and reason."""
        async with asyncio.timeout(wait):
            while True:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.TEXT:
                    self.frames.append(json.loads(msg.data))
                    continue
                if msg.type is WSMsgType.CLOSE:
                    return msg.data, msg.extra or ""
                assert msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING), msg
                return self.ws.close_code, ""


@attrs.define
class Gateway:
    """An app under test and ways to open sockets to it."""

    client: Client
    config_path: Path
    state_dir: Path

    @property
    def app(self) -> web.Application:
        return self.client.app

    async def raw(self, path: str = "/", **kwargs: Any) -> GatewayWs:
        """A socket that has not done the handshake."""
        return GatewayWs(await self.client.ws_connect(path, **kwargs))

    async def connected(self, **overrides: Any) -> GatewayWs:
        ws = await self.raw()
        hello = await ws.connect(**overrides)
        assert hello["ok"] is True, hello
        await ws.event("health")
        return ws


MakeGateway = Callable[..., Awaitable[Gateway]]


def wire(frame: Any) -> str:
    """A frame as it was on the wire (json.loads keeps the key order): compact JSON."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


VOLATILE = {
    "ts",
    "nonce",
    "connId",
    "uptimeMs",
    "durationMs",
    "acceptedAt",
    "startedAt",
    "endedAt",
    "createdAt",
    "updatedAt",
    "onlineSince",
    "age",
    "timestamp",
    "sessionId",
    "instanceId",
    "lastActivityAt",
    "pid",
    "host",
}


def normalized(value: Any) -> Any:
    """`value` with volatile fields (times, ids, host names) replaced by `"<key>"`; key order
    kept, so `wire(normalized(frame))` still shows the order."""
    if isinstance(value, dict):
        return {
            k: (
                f"<{k}>"
                if k in VOLATILE and v is not None and not isinstance(v, (dict, list))
                else normalized(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def send(key: str, message: str, idem: str, **extra: Any) -> dict[str, Any]:
    """The params of `chat.send`."""
    return {"sessionKey": key, "message": message, "idempotencyKey": idem, **extra}


@attrs.define
class HeldWrite:
    """A `SessionStore` write held once begun (`storing`) until `stored` is set: a store
    write that takes a while. `calls` counts its calls."""

    storing: asyncio.Event = attrs.field(factory=asyncio.Event)
    stored: asyncio.Event = attrs.field(factory=asyncio.Event)
    calls: int = 0


def hold_store_write(monkeypatch: pytest.MonkeyPatch, name: str) -> HeldWrite:
    """`SessionStore.<name>` held (HeldWrite) from now on, for the test."""
    held = HeldWrite()
    write = getattr(SessionStore, name)

    async def holding(self: SessionStore, *args: Any, **kwargs: Any) -> Any:
        held.calls += 1
        held.storing.set()
        await held.stored.wait()
        return await write(self, *args, **kwargs)

    monkeypatch.setattr(SessionStore, name, holding)
    return held


async def leave_while_stored(gateway: Gateway, client: GatewayWs, held: HeldWrite) -> None:
    """`client` closes its socket once the held write has begun, and the server has seen it
    leave (the gateway's other connection stays)."""
    async with asyncio.timeout(5):
        await held.storing.wait()
        await client.ws.close()
        while len(gateway.app[WS].connections) > 1:
            await asyncio.sleep(0.01)
