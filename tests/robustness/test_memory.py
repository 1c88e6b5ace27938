"""Floods of stateless requests against a real `clawgate run`: what they leave behind.

A stateless request (no session header, no `user`) names a session nobody can name again and a
run nobody can look up. Neither may keep the process's memory or the store's disk growing:
ended HTTP runs are not remembered (ws-protocol.md §8 only lets WS runs be looked up), an
ended run keeps no request body, and maintenance prunes stateless sessions after
`session.maintenance.statelessTtl`.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agents.store import SessionStore
from gateway.config.errors import ConfigError
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from tests.support.configs import merged
from tests.support.process import GatewayProcess, run_on_config
from tests.support.served import AUTH, CHAT, SETTINGS
from tests.support.strategies import fuzz, odd_text

MIB = 1024 * 1024
BIG_REQUESTS = 15
# Eight words of 1 MiB: an 8 MiB prompt the echo agent answers in eight deltas.
BIG_TEXT = " ".join(chr(ord("a") + i) * MIB for i in range(8))
# The baseline is taken after one big request, so it holds what one request's working set
# (body, parsed JSON, prompt, reply, stored row, response) leaves with the allocator for reuse.
# The other 14 may add fragmentation of those same sizes (measured: -24 to +17 MiB); they must
# not add their own copies, ~18 MiB each (the prompt and the echoed reply): measured +249 MiB
# when ended runs kept them. 64 MiB sits well clear of both.
RSS_MARGIN = 64 * MIB
FLOOD = 1000  # small stateless requests


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def start(
    gateways: list[GatewayProcess], tmp_path: Path, settings: dict[str, Any]
) -> GatewayProcess:
    config = tmp_path / "clawgate.json5"
    config.write_text(json.dumps(settings))
    process = run_on_config(tmp_path, config)
    gateways.append(process)
    await asyncio.to_thread(process.wait_listening)
    return process


async def ask(http: aiohttp.ClientSession, url: str, text: str) -> str:
    body = {"model": "openclaw", "messages": [{"role": "user", "content": text}]}
    # A file-like body: aiohttp warns that a large bytes body would block the loop.
    data = io.BytesIO(json.dumps(body).encode())
    headers = {**AUTH, "Content-Type": "application/json"}
    async with http.post(url + CHAT, data=data, headers=headers) as response:
        assert response.status == 200
        reply = await response.json()
        return str(reply["choices"][0]["message"]["content"])


async def test_stateless_big_requests_do_not_pin_memory(
    gateways: list[GatewayProcess], tmp_path: Path
) -> None:
    gateway = await start(gateways, tmp_path, SETTINGS)
    async with aiohttp.ClientSession() as http:
        first = await ask(http, gateway.url, BIG_TEXT)
        assert first == f"[turn 1] {BIG_TEXT}"
        baseline = rss(gateway.proc.pid)
        for _ in range(BIG_REQUESTS - 1):
            await ask(http, gateway.url, BIG_TEXT)
    after = rss(gateway.proc.pid)
    assert after < baseline + RSS_MARGIN, (baseline // MIB, after // MIB)


def stateless_rows(state_dir: Path) -> tuple[int, int]:
    """(stateless sessions, messages) in the store file, read as another process would."""
    with sqlite3.connect(state_dir / "sessions.sqlite3") as db:
        sessions = db.execute("SELECT COUNT(*) FROM sessions WHERE stateless = 1").fetchone()
        messages = db.execute("SELECT COUNT(*) FROM messages").fetchone()
    return int(sessions[0]), int(messages[0])


async def test_a_flood_of_stateless_requests_is_pruned_by_maintenance(
    gateways: list[GatewayProcess], tmp_path: Path
) -> None:
    settings = merged(SETTINGS, {"session": {"maintenance": {"statelessTtl": "1s"}}})
    gateway = await start(gateways, tmp_path, settings)
    async with aiohttp.ClientSession() as http:
        for _ in range(FLOOD // 50):
            await asyncio.gather(*(ask(http, gateway.url, "hi") for _ in range(50)))
            gateway.read_available()  # a full stderr pipe would stall the gateway's logging
        await ask_named(http, gateway.url)
    assert stateless_rows(tmp_path / "state") == (FLOOD, 2 * FLOOD + 2)
    gateway.signal()
    assert await asyncio.to_thread(gateway.wait) == 0
    await asyncio.sleep(1.1)  # older than statelessTtl
    # Maintenance runs at startup: the restart prunes the flood, not the named session.
    restarted = await start(gateways, tmp_path, settings)
    pruned = await asyncio.to_thread(restarted.wait_for_event, "session_pruned")
    assert pruned["count"] == FLOOD
    assert stateless_rows(tmp_path / "state") == (0, 2)


async def ask_named(http: aiohttp.ClientSession, url: str) -> None:
    body = {"model": "openclaw", "user": "alice", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(url + CHAT, json=body, headers=AUTH) as response:
        assert response.status == 200


# -- the maintenance settings, fuzzed -----------------------------------------------------------

MAINTENANCE_KEYS = ("pruneAfter", "statelessTtl", "maxEntries", "maxDiskBytes", "highWaterBytes")
BIG_NUMBERS = st.sampled_from(
    [
        2**63,
        2**70,
        "99999999999999999999d",
        "99999999999999999999tb",
        "1" + "0" * 4000,
        "1" * 5000 + "d",  # beyond what int() parses: a ValueError escaped validation
        "1" * 5000 + "gb",
    ]
)


@given(
    st.dictionaries(
        st.sampled_from(MAINTENANCE_KEYS),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.floats(),
            odd_text,
            st.lists(odd_text, max_size=2),
            st.dictionaries(odd_text, odd_text, max_size=2),
            BIG_NUMBERS,
            st.sampled_from(["24h", "1gb", "500 mb", "0", "-1d", False]),
        ),
        min_size=1,
    )
)
# What fuzzing found, always tried: thousands of digits (int() raised ValueError) and
# durations beyond SQLite's integers (sqlite3 raised OverflowError at startup maintenance).
@example({"pruneAfter": "1" * 5000 + "d"})
@example({"maxDiskBytes": "1" * 5000 + "gb"})
@example({"pruneAfter": "99999999999999999999d", "statelessTtl": "99999999999999999999d"})
@fuzz(100)
def test_any_maintenance_setting_is_refused_or_prunes_without_error(
    tmp_path_factory: pytest.TempPathFactory, maintenance: dict[str, Any]
) -> None:
    """An operator's typo is a validation error; anything that validates (however large) runs
    a maintenance pass that ends normally: a crash there would stop the gateway at startup."""
    state_dir = tmp_path_factory.mktemp("state")
    loader = ConfigLoader(Overrides(state_dir=str(state_dir)), environ={})
    text = json.dumps({"session": {"maintenance": maintenance}})
    try:
        config = loader.load_text(text).agents.maintenance
    except ConfigError as exc:
        assert all(issue.path.startswith("session.maintenance.") for issue in exc.issues)
        return

    async def prune() -> None:
        async with SessionStore(state_dir) as store:
            await store.create("agent:main:s1", "main", 1, stateless=True)
            assert isinstance(await store.prune(config, 2**40), list)

    asyncio.run(prune())
