"""A WebSocket idempotency key sent again once it is forgotten (its 5 minutes out, or a
restart in between, as here) starts a second turn under the same run id, in the same session:
each turn is still one turn of its own in the model's history."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.http_client import fake_provider
from tests.support.process import GatewayProcess, clean_env
from tests.support.process_client import TOKEN, connect_ws
from tests.support.shared_store import frames_until
from tests.support.upstreams import FakeOpenAI, Status, Stream

pytestmark = [pytest.mark.slow]

_ids = itertools.count(1)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.aclose()


@pytest.fixture
def start(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[Any]:
    """`clawgate run` on one SQLite state dir, started anew by each call (a restart)."""
    settings = {"gateway": {"auth": {"mode": "token", "token": TOKEN}}, **fake_provider(upstream)}
    config = tmp_path / "clawgate.json5"
    config.write_text(json.dumps(settings))
    started: list[GatewayProcess] = []

    def start() -> GatewayProcess:
        for process in started:
            process.stop()
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        process = GatewayProcess(args, clean_env(tmp_path / "home"))
        started.append(process)
        process.wait_listening(30)
        return process

    yield start
    for process in started:
        process.stop()


async def turn(http: aiohttp.ClientSession, url: str, text: str, key: str) -> str:
    """`agent`'s final status for `text` under idempotency key `key` in session s1."""
    ws = await connect_ws(http, url)
    request_id = str(next(_ids))
    params = {"message": text, "sessionKey": "s1", "idempotencyKey": key}
    await ws.send_json({"type": "req", "id": request_id, "method": "agent", "params": params})
    await frames_until(ws, lambda f: f.get("id") == request_id)  # accepted
    final = (await frames_until(ws, lambda f: f.get("id") == request_id))[-1]
    await ws.close()
    if not final["ok"]:
        return str(final["error"]["code"])
    return str(final["payload"]["status"])


@pytest.mark.parametrize("refused_first", [True, False], ids=["refused-then-ok", "ok-then-refused"])
async def test_a_refused_turn_of_the_key_does_not_hide_its_other_turn(
    start: Any, upstream: FakeOpenAI, refused_first: bool
) -> None:
    refused, answered = Status(400), Stream(("kept", " reply"))
    upstream.script(*((refused, answered) if refused_first else (answered, refused)))
    async with aiohttp.ClientSession() as http:
        await turn(http, start().url, "first", "k1")
        await turn(http, start().url, "second", "k1")  # forgotten: a turn of its own
        assert await turn(http, start().url, "next", "k2") == "ok"
    assert len(upstream.requests) == 3
    given = [(m["role"], m["content"]) for m in upstream.last.body["messages"]]
    kept = ("first", "second")[0 if not refused_first else 1]
    assert given[-3:] == [("user", kept), ("assistant", "kept reply"), ("user", "next")], given
