"""Fixtures for the OpenAI-compatible HTTP surface: a gateway built from a config dict, raw
HTTP for what a polite client cannot send, and a fake OpenAI upstream."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from gateway.app import create_app
from gateway.appkeys import STATE
from gateway.state import AppOptions
from tests.agents.upstreams import FakeOpenAI
from tests.conftest import MakeConfig

TOKEN = "test-token-5f2a9c"
# Content-Type too: a chat completion without application/json is refused with 415.
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CHAT = "/v1/chat/completions"
HI = {"model": "openclaw", "messages": [{"role": "user", "content": "hello there"}]}

Client = TestClient[web.Request, web.Application]
Settings = Mapping[str, Any]

BASE_SETTINGS: dict[str, Any] = {
    "gateway": {
        "auth": {"mode": "token", "token": TOKEN},
        "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
    },
    "agents": {"defaults": {"model": "echo/echo"}, "list": [{"id": "main", "default": True}]},
}


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` deep-merged over `base` (lists are replaced, not merged)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fake_provider(upstream: FakeOpenAI, **agent: Any) -> dict[str, Any]:
    """Settings whose default agent `main` runs on the fake upstream's `fake-model`."""
    return {
        "models": {
            "providers": {
                "fake": {
                    "api": "openai-completions",
                    "baseUrl": upstream.base_url,
                    "apiKey": "sk-test-key",
                    "models": [{"id": "fake-model"}],
                }
            }
        },
        "agents": {"list": [{"id": "main", "default": True, "model": "fake/fake-model", **agent}]},
    }


MakeApp = Callable[..., web.Application]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_app(make_config: MakeConfig) -> MakeApp:
    """An app for BASE_SETTINGS with `settings` merged over them."""

    def make(
        settings: Settings | None = None, options: AppOptions | None = None
    ) -> web.Application:
        text = json.dumps(merged(BASE_SETTINGS, settings or {}))
        return create_app(make_config(text), options=options)

    return make


class ServedTestServer(TestServer):
    """aiohttp's TestServer, but serving as `clawgate run` does (gateway/server.py).

    TestServer turns `handler_cancellation` on, so a client that disconnects cancels its
    handler; aiohttp's default, which production uses, leaves it off. Disconnect handling
    must work without that help, so the tests serve the production way (request bodies
    left encoded too).
    """

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs["handler_cancellation"] = False
        kwargs["auto_decompress"] = False  # as make_runner: the gateway decodes bodies itself
        return await super()._make_runner(**kwargs)


@pytest.fixture
def gateway(aiohttp_client: Any, make_app: MakeApp) -> MakeClient:
    """A client of a gateway on a real loopback socket, served as in production."""

    async def make(settings: Settings | None = None, options: AppOptions | None = None) -> Client:
        client: Client = await aiohttp_client(ServedTestServer(make_app(settings, options)))
        return client

    return make


@pytest.fixture
async def client(gateway: MakeClient) -> Client:
    """The default gateway: agent `main` on echo, token auth, the endpoint enabled."""
    return await gateway()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.aclose()


async def session_runs(client: Client, key: str, count: int, within: float = 2.0) -> None:
    """Until the session `key` has `count` active runs (the running one, then the queued)."""
    registry = client.app[STATE].registry
    assert registry is not None
    async with asyncio.timeout(within):
        while len(registry.active_runs(key)) != count:
            await asyncio.sleep(0.005)


# -- normalising volatile values --------------------------------------------------------------

_VOLATILE = (
    (re.compile(r"chatcmpl-[0-9a-f]{32}"), "chatcmpl-<32hex>"),
    (re.compile(r'"created":\d+'), '"created":<unix>'),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"), "<uuid>"),
)


def normalised(text: str) -> str:
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def sse_events(body: str) -> list[str]:
    """The `data:` payloads of an SSE body (comments dropped); asserts the framing."""
    assert body.endswith("\n\n"), body[-50:]
    events = []
    for block in body[:-2].split("\n\n"):
        if block.startswith(":"):
            continue
        assert block.startswith("data: ") and "\n" not in block, block
        events.append(block[len("data: ") :])
    return events


# -- raw HTTP ------------------------------------------------------------------------------------


async def raw_exchange(
    port: int | None, request: bytes, *, then: bytes = b"", within: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send `request` (and `then`), read one response; (status, headers, body).

    For what aiohttp's client will not send: bad escapes, lying Content-Length, bodies
    that stop halfway. Header names come back lowercased.
    """
    assert port is not None, "the server is not listening"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request + then)
        await writer.drain()
        async with asyncio.timeout(within):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    body += (await reader.readexactly(size + 2))[:-2]
            else:
                body = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1]), headers, body


def request_head(
    method: str, path: str, headers: Mapping[str, str] | None = None, *, close: bool = True
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
