"""A client of a real `clawgate run` process (tests/support/process.py): its token, a
WebSocket that has done the handshake, the first streamed content."""

from __future__ import annotations

import aiohttp

TOKEN = "tok-one-2f6c1d"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def first_content(response: aiohttp.ClientResponse) -> None:
    """Read until the first content chunk arrived (the turn is streaming)."""
    seen = b""
    while b'"content":"[turn' not in seen:
        chunk = await response.content.readany()
        assert chunk, "stream ended early"
        seen += chunk


async def connect_ws(
    http: aiohttp.ClientSession, url: str, token: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket that has done the handshake (ws-protocol.md §2), with `token` or TOKEN."""
    ws = await http.ws_connect(url.replace("http", "ws", 1))
    challenge = await ws.receive_json(timeout=5)
    assert challenge["event"] == "connect.challenge"
    connect = {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "test", "version": "1", "platform": "linux", "mode": "cli"},
        "auth": {"token": token or TOKEN},
    }
    await ws.send_json({"type": "req", "id": "1", "method": "connect", "params": connect})
    hello = await ws.receive_json(timeout=5)
    assert hello["ok"] is True
    return ws
