"""The OpenAI-compatible surface under aiohttp's test client: the default settings, the
gateway served as production serves it, and what reads its answers."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from structlog.testing import capture_logs

from gateway.appkeys import STATE
from gateway.server import make_runner
from tests.support.upstreams import FakeAnthropic, FakeOpenAI

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


def fake_provider_entry(upstream: FakeOpenAI) -> dict[str, Any]:
    """The provider `fake`: the fake upstream's OpenAI-compatible API, model `fake-model`."""
    return {
        "api": "openai-completions",
        "baseUrl": upstream.base_url,
        "apiKey": "sk-test-key",
        "models": [{"id": "fake-model"}],
    }


def fake_provider(upstream: FakeOpenAI, **agent: Any) -> dict[str, Any]:
    """Settings whose default agent `main` runs on the fake upstream's `fake-model`."""
    return {
        "models": {"providers": {"fake": fake_provider_entry(upstream)}},
        "agents": {"list": [{"id": "main", "default": True, "model": "fake/fake-model", **agent}]},
    }


def anthropic_agent(upstream: FakeAnthropic, *fallbacks: str) -> dict[str, Any]:
    """Agent `main` on a fake Anthropic upstream, then `fallbacks`."""
    model: Any = "claude/fake-model"
    if fallbacks:
        model = {"primary": model, "fallbacks": list(fallbacks)}
    return {
        "models": {
            "providers": {
                "claude": {
                    "api": "anthropic-messages",
                    "baseUrl": upstream.base_url,
                    "apiKey": "sk-ant-test",
                    "models": [{"id": "fake-model"}],
                }
            }
        },
        "agents": {"list": [{"id": "main", "default": True, "model": model}]},
    }


def upstream_settings(upstream: FakeOpenAI, model: str = "fake/embed-small") -> dict[str, Any]:
    """Settings whose embedding model is `model`, with the fake upstream as provider `fake`."""
    return {
        "models": {
            "providers": {
                "fake": fake_provider_entry(upstream),
                "claude": {"api": "anthropic-messages", "apiKey": "k"},
            }
        },
        "agents": {"defaults": {"embeddingModel": model}},
    }


MakeApp = Callable[..., web.Application]
MakeClient = Callable[..., Awaitable[Client]]


class ServedTestServer(TestServer):
    """aiohttp's TestServer, but serving as `clawgate run` does (gateway/server.py): the
    production runner, with the gateway's protocol (a request its parser refuses gets the
    fixed JSON 400, not aiohttp's plain text), request bodies left encoded, the header
    timeout of the app's options.

    TestServer turns `handler_cancellation` on, so a client that disconnects cancels its
    handler; aiohttp's default, which production uses, leaves it off. Disconnect handling
    must work without that help, so that is left off too.
    """

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return make_runner(self.app)


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
    # Version 4, or 7 for the ids the gateway mints time-ordered (agents/ids.py).
    (
        re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
        "<uuid>",
    ),
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


class NoErrorLogs:
    """Collects structlog events and stdlib records (aiohttp's own) at error level."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def __enter__(self) -> NoErrorLogs:
        self._capture = structlog.testing.capture_logs()
        self.events = self._capture.__enter__()
        self.caplog.set_level(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        self._capture.__exit__(None, None, None)

    def errors(self) -> list[Any]:
        found: list[Any] = [e for e in self.events if e["log_level"] in ("error", "critical")]
        found += [r.getMessage() for r in self.caplog.records if r.levelno >= logging.ERROR]
        return found


async def stored_messages(client: Client, key: str) -> list[Any]:
    registry = client.app[STATE].registry
    assert registry is not None
    return list((await registry.history(key)).messages)


def parse_started(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, length: int
) -> asyncio.Event:
    """An event set when `module`'s `strict_loads` begins on a text of `length` characters,
    on whichever thread it runs: the moment the gateway began parsing a slow request."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    parse = module.strict_loads

    def noting_the_start(text: str, **options: Any) -> Any:
        if len(text) == length:
            loop.call_soon_threadsafe(started.set)
        return parse(text, **options)

    monkeypatch.setattr(module, "strict_loads", noting_the_start)
    return started


def call_started(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> asyncio.Event:
    """An event set when `module`'s function `name` is called, on whichever thread it runs:
    the moment the gateway began a slow step of a request."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    function = getattr(module, name)

    def noting_the_start(*args: Any) -> Any:
        loop.call_soon_threadsafe(started.set)
        return function(*args)

    monkeypatch.setattr(module, name, noting_the_start)
    return started


async def order_of_answers(
    client: Client, path: str, body: str, started: asyncio.Event
) -> tuple[list[str], tuple[int, str]]:
    """`body` posted to `path` and, once `started` is set (a slow step on the body began),
    `GET /healthz` on another connection: the paths in the order the gateway answered them,
    and the post's answer."""
    with capture_logs() as logs:
        slow = asyncio.create_task(client.post(path, data=io.BytesIO(body.encode()), headers=AUTH))
        begun = asyncio.create_task(started.wait())
        # An answer before the step began (an error) would leave `started` unset for good.
        await asyncio.wait((begun, slow), return_when=asyncio.FIRST_COMPLETED)
        begun.cancel()
        assert (await client.get("/healthz")).status == 200
        response = await slow
        answer = response.status, await response.text()
    return [e["path"] for e in logs if e["event"] == "http_request"], answer
