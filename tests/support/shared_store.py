"""Two or more real `clawgate run` processes on one PostgreSQL database: their config, a
chat turn over HTTP, WebSocket frames until one is seen; a claim forgotten, and its renewals
counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from agents.store_postgres import SQL_FORGET_EXPIRED_CALLS, SQL_NOW_MS
from agents.store_protocol import Store
from tests.support.pgserver import PASSWORD
from tests.support.process import GatewayProcess, clean_env
from tests.support.process_client import TOKEN, auth, first_content
from tests.support.upstreams import FakeOpenAI, Stream


def start_on_config(
    started: list[GatewayProcess], root: Path, name: str, config_text: str
) -> GatewayProcess:
    """`clawgate run` named `name` on `config_text` (the shared database's password in the
    environment, as `shared_config` reads it), its state dir under `root`, listening; in
    `started`, for the fixture to stop, as soon as it runs."""
    path = root / f"{name}.json5"
    path.write_text(config_text)
    args = ["--config", str(path), "--state-dir", str(root / name), "--port", "0"]
    process = GatewayProcess(args, clean_env(root / "home", {"CLAWGATE_DB_PASSWORD": PASSWORD}))
    started.append(process)
    process.wait_listening(30)
    return process


def shared_config(url: str, delay_ms: int, max_concurrent: int = 4) -> str:
    return json.dumps(
        {
            "gateway": {
                "auth": {"mode": "token", "token": TOKEN},
                "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
                "shutdown": {"drainSeconds": 5},
            },
            "agents": {
                "defaults": {"maxConcurrent": max_concurrent},
                "list": [{"id": "main", "params": {"delayMs": delay_ms}}],
            },
            # The password from the environment, as the README tells an operator to do.
            "store": {"backend": "postgres", "url": url, "password": "${CLAWGATE_DB_PASSWORD}"},
        }
    )


async def chat(http: aiohttp.ClientSession, url: str, key: str, text: str) -> dict[str, Any]:
    response = await http.post(
        f"{url}/v1/chat/completions",
        headers={**auth(), "x-openclaw-session-key": key},
        json={"model": "openclaw", "messages": [{"role": "user", "content": text}]},
    )
    body = await response.json()
    assert response.status == 200, body
    return body  # type: ignore[no-any-return]


async def streaming(
    http: aiohttp.ClientSession, url: str, words: int, key: str | None = None
) -> aiohttp.ClientResponse:
    """A streamed turn of `words` words, read until its first content: it is running (the
    echo agent says a word per `delay_ms`). Without `key` the gateway mints one."""
    headers = auth() if key is None else {**auth(), "x-openclaw-session-key": key}
    response = await http.post(
        f"{url}/v1/chat/completions",
        headers=headers,
        json={
            "model": "openclaw",
            "stream": True,
            "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(words))}],
        },
    )
    await first_content(response)
    return response


async def frames_until(
    ws: aiohttp.ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    seen = []
    async with asyncio.timeout(15):
        while True:
            frame = await ws.receive_json()
            seen.append(frame)
            if done(frame):
                return seen


async def claim_kept_for(pg_url: str, scope: str, ms: int) -> None:
    """The claim of `scope` is kept `ms` more (negative: it expired that long ago), by the
    database's clock, which keeps the claims: the time a test cannot wait for, passed."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            f"UPDATE hook_calls SET expires_at = {SQL_NOW_MS} + $2 WHERE scope = $1", scope, ms
        )
    finally:
        await conn.close()


class HeldOpenAI(FakeOpenAI):
    """Its reply's first word, then nothing until the test lets the rest go (`go`)."""

    def __init__(self) -> None:
        super().__init__(Stream(("held", " reply"), stall_after=1))
        self.go = asyncio.Event()

    async def _pause(self, request: web.Request, seconds: float | None) -> None:
        if seconds is None:
            await self.go.wait()
        else:
            await super()._pause(request, seconds)


async def forget_the_claim(conn: asyncpg.Connection) -> None:
    """The one claim in the store, its lease out and forgotten, as the next claim of any
    process does."""
    async with conn.transaction():
        await conn.execute(f"UPDATE hook_calls SET expires_at = {SQL_NOW_MS} - 1")
        assert await conn.execute(SQL_FORGET_EXPIRED_CALLS) == "DELETE 1"


def renewals_of(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each renewal of a claim `store` makes from now on, as it ends: whether it found the
    claim."""
    renewed: list[bool] = []
    extend = store.extend_hook_call

    async def counted(scope: str, run_id: str, keep_ms: int) -> bool:
        kept = await extend(scope, run_id, keep_ms)
        renewed.append(kept)
        return kept

    monkeypatch.setattr(store, "extend_hook_call", counted)
    return renewed
