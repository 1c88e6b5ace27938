"""Support of the robustness suite: a gateway served as `clawgate run` serves it (its runner,
its logging), raw HTTP for what a polite client cannot send, and the checks that say a
response is one the spec documents."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import STATE
from gateway.auth import with_generated_token
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from gateway.logs import configure_logging, set_level
from gateway.server import make_runner
from gateway.state import AppOptions, GatewayState
from tests.http.conftest import merged

TOKEN = "robust-token-7c1e"
# Content-Type too: a chat completion without application/json is refused with 415.
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CHAT = "/v1/chat/completions"

SETTINGS: dict[str, Any] = {
    "gateway": {
        "auth": {"mode": "token", "token": TOKEN},
        "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
    },
    "agents": {"list": [{"id": "main", "default": True}]},
}

JSON_TYPE = "application/json; charset=utf-8"
COMMON_HEADERS = ("x-content-type-options", "referrer-policy", "permissions-policy", "x-request-id")
# http-openai.md §8: the only 5xx a client may see. 500 is documented too, but as a bug.
UPSTREAM_OR_DRAINING = frozenset({502, 503, 504})


# -- the server's log -------------------------------------------------------------------------


class ServerLog:
    """The JSON lines the production logging writes (gateway.logs), parsed as they come."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self._offset = 0
        self._checked = 0
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Every event logged so far."""
        text = self.stream.getvalue()
        end = text.rfind("\n") + 1
        # Only "\n" ends a line: the JSON lines may hold U+2028 or U+0085 unescaped.
        for line in text[self._offset : end - 1].split("\n") if end > self._offset else ():
            self.events.append(json.loads(line))
        self._offset = end
        return self.events

    def problems(self, since: int = 0) -> list[dict[str, Any]]:
        """Errors and tracebacks: an unhandled exception anywhere (a handler, a task, asyncio's
        "never retrieved", aiohttp's "Error handling request") is logged as one of these."""
        return [
            event
            for event in self.read()[since:]
            if event.get("level") in ("error", "critical") or "exception" in event
        ]

    def new_problems(self) -> list[dict[str, Any]]:
        """The problems logged since the previous call: one failure fails one check."""
        problems = self.problems(self._checked)
        self._checked = len(self.events)
        return problems


@contextlib.contextmanager
def production_logging() -> Iterator[ServerLog]:
    """structlog and the stdlib root logger configured as the CLI does (JSON lines), into
    memory; the previous configuration is restored afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = logging.getLogger("aiohttp.access")
    access_disabled = access.disabled
    log = ServerLog()
    configure_logging("info", "json", log.stream)
    try:
        yield log
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        access.disabled = access_disabled
        set_level("info")


# -- a served gateway -------------------------------------------------------------------------


def build_app(
    directory: Path,
    settings: Mapping[str, Any] | None = None,
    options: AppOptions | None = None,
) -> web.Application:
    """The app of `clawgate run --config <directory>/clawgate.json5` for SETTINGS + `settings`."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "clawgate.json5"
    config_path.write_text(json.dumps(merged(SETTINGS, settings or {})))
    loader = ConfigLoader(
        Overrides(config_path=str(config_path), state_dir=str(directory / "state")), environ={}
    )
    return create_app(with_generated_token(loader.load()), loader=loader, options=options)


@attrs.define
class Served:
    app: web.Application
    host: str
    port: int

    @property
    def state(self) -> GatewayState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def served(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Served]:
    """`app` listening on `host` the way gateway/server.py serves it (make_runner: no handler
    cancellation, the header timeout as keep-alive timeout); cleaned up on exit."""
    runner = make_runner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield Served(app, host, runner.addresses[0][1])
    finally:
        await runner.cleanup()


# -- raw HTTP ---------------------------------------------------------------------------------


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]  # names lowercased; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str, path: str, headers: Mapping[str, str | bytes] | None = None, body: bytes = b""
) -> bytes:
    """An HTTP/1.1 request with `Connection: close`; header values may be raw bytes."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        raw = value if isinstance(value, bytes) else value.encode()
        lines.append(name.encode() + b": " + raw)
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(port: int, request: bytes, *, within: float = 10.0) -> RawResponse:
    """Send one request, read its whole response (Content-Length, chunked, or until EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    try:
        writer.write(request)
        async with asyncio.timeout(within):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                parts = []
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    parts.append((await reader.readexactly(size + 2))[:-2])
                await reader.readuntil(b"\r\n")
                body = b"".join(parts)
            else:
                body = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return RawResponse(int(status_line.split()[1]), headers, body)


# -- what the spec documents ------------------------------------------------------------------


def assert_error_body(response: RawResponse) -> None:
    """http-openai.md §8: JSON with exactly the four keys, and the common headers (§9)."""
    assert response.headers.get("content-type") == JSON_TYPE, response
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert list(error) == ["message", "type", "param", "code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str), body
    assert error["param"] is None or isinstance(error["param"], str), body
    assert error["code"] is None or isinstance(error["code"], str), body
    for name in COMMON_HEADERS:
        assert name in response.headers, (name, response)


def assert_documented_status(status: int) -> None:
    assert status < 500 or status in UPSTREAM_OR_DRAINING, f"undocumented status {status}"


def sse_payloads(body: bytes) -> list[str]:
    """The `data:` payloads of a whole SSE body, keepalive comments dropped."""
    text = body.decode()
    assert text.endswith("\n\n"), text[-80:]
    out = []
    for block in text[:-2].split("\n\n"):
        if block.startswith(":"):
            continue
        assert block.startswith("data: ") and "\n" not in block, block[:200]
        out.append(block[len("data: ") :])
    return out


def assert_completion(response: RawResponse) -> None:
    """A 200 chat completion, JSON (§6) or a whole stream ending in [DONE] (§7)."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        events = sse_payloads(response.body)
        assert events[-1] == "[DONE]", events[-3:]
        for event in events[:-1]:
            chunk = json.loads(event)
            assert chunk.get("object") == "chat.completion.chunk", chunk
        return
    assert content_type == JSON_TYPE, response
    body = response.json()
    assert body["object"] == "chat.completion", body
    assert isinstance(body["choices"][0]["message"]["content"], str), body


async def normal_completion(port: int, content: str = "still there?") -> RawResponse:
    """A plain request that must succeed: the server still serves after what came before."""
    body = json.dumps({"model": "openclaw", "messages": [{"role": "user", "content": content}]})
    response = await exchange(port, request_bytes("POST", CHAT, AUTH, body.encode()))
    assert response.status == 200, response
    assert response.json()["choices"][0]["message"]["content"].endswith(content), response
    return response
