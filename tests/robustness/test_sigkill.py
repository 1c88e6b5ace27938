"""SIGKILL of a `clawgate run` process in the middle of 50 streaming turns, then a restart on
the same state dir (agents-sessions.md §8: a turn is one transaction, synchronous=FULL).

Every turn whose client saw `[DONE]` before the kill is in the store, whole; no transcript
holds half a turn; the store passes SQLite's integrity check; the sessions go on with the
right `[turn N]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from tests.support.configs import merged
from tests.support.process import GatewayProcess, run_on_config
from tests.support.served import AUTH, CHAT, SETTINGS

SOLO = 25  # sessions with one turn each
SHARED = 5  # sessions with five turns each, queued behind each other
PER_SHARED = 5
DELAY_MS = 20  # per word: a turn of 5-40 words streams for 0.1-0.8 s
# Turns finished when the kill comes: the solo ones and about two per shared session; each
# shared session then has one turn streaming and two queued.
KILL_AFTER_DONE = 35


@attrs.define
class Turn:
    session: str
    words: int
    run_id: str | None = None
    text: str = ""
    done: bool = False  # the client read `data: [DONE]`

    @property
    def prompt(self) -> str:
        return " ".join(f"{self.session}-w{i}" for i in range(self.words))


async def start(
    gateways: list[GatewayProcess], tmp_path: Path, config: Path
) -> tuple[GatewayProcess, str]:
    process = run_on_config(tmp_path, config)
    gateways.append(process)
    url = await asyncio.to_thread(process.wait_listening)
    return process, url


async def stream(http: aiohttp.ClientSession, url: str, turn: Turn) -> None:
    body = {"stream": True, "messages": [{"role": "user", "content": turn.prompt}]}
    headers = {**AUTH, "x-openclaw-session-key": turn.session}
    # The kill cuts the streams that are still open; those turns are simply not done.
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with http.post(url + CHAT, json=body, headers=headers) as response:
            assert response.status == 200
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[len(b"data: ") :].strip()
                if data == b"[DONE]":
                    turn.done = True
                    return
                chunk = json.loads(data)
                turn.run_id = chunk["id"]
                turn.text += chunk["choices"][0]["delta"].get("content", "")


def transcripts(db_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Session key → its current transcript's messages, in order, read straight from SQLite."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute(
            "SELECT s.key, m.seq, m.role, m.content, m.run_id, m.aborted"
            " FROM sessions s JOIN messages m ON m.session_id = s.session_id"
            " ORDER BY s.key, m.seq"
        ).fetchall()
    finally:
        db.close()
    out: dict[str, list[dict[str, Any]]] = {}
    for key, seq, role, content, run_id, aborted in rows:
        value = json.loads(content)
        text = value if isinstance(value, str) else "".join(p["text"] for p in value)
        out.setdefault(key, []).append(
            {"seq": seq, "role": role, "text": text, "run_id": run_id, "aborted": bool(aborted)}
        )
    return out


class TestSigkill:
    async def test_a_killed_gateway_restarts_with_whole_turns_and_its_sessions_go_on(
        self, tmp_path: Path, gateways: list[GatewayProcess]
    ) -> None:
        settings = merged(
            SETTINGS,
            {
                "agents": {
                    "defaults": {"maxConcurrent": 64},
                    "list": [{"id": "main", "default": True, "params": {"delayMs": DELAY_MS}}],
                }
            },
        )
        config = tmp_path / "clawgate.json5"
        config.write_text(json.dumps(settings))
        rng = random.Random(50)
        turns = [Turn(f"solo-{i}", rng.randint(5, 40)) for i in range(SOLO)]
        turns += [
            Turn(f"shared-{i}", rng.randint(5, 40))
            for i in range(SHARED)
            for _ in range(PER_SHARED)
        ]

        first, url = await start(gateways, tmp_path, config)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            tasks = [asyncio.create_task(stream(http, url, turn)) for turn in turns]
            async with asyncio.timeout(30):
                while sum(turn.done for turn in turns) < KILL_AFTER_DONE:
                    await asyncio.sleep(0.005)
            first.signal(signal.SIGKILL)
            async with asyncio.timeout(30):
                await asyncio.gather(*tasks)
        assert await asyncio.to_thread(first.wait) == -signal.SIGKILL
        done = [turn for turn in turns if turn.done]
        cut = [turn for turn in turns if not turn.done]
        assert len(done) >= KILL_AFTER_DONE and cut, (len(done), len(cut))

        # The restart opens the store (recovering its WAL), then listens.
        second, url = await start(gateways, tmp_path, config)
        stored = transcripts(tmp_path / "state" / "sessions.sqlite3")

        # No half turn: each transcript is user/assistant pairs of one run each.
        for key, messages in stored.items():
            assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
            assert len(messages) % 2 == 0, key
            for user, assistant in zip(messages[::2], messages[1::2], strict=True):
                assert user["run_id"] == assistant["run_id"], (key, user, assistant)
        # Every turn a client saw end is there, whole and not aborted.
        by_run = {m["run_id"]: m for messages in stored.values() for m in messages}
        for turn in done:
            assistant = by_run[turn.run_id]
            assert assistant["role"] == "assistant" and not assistant["aborted"], assistant
            assert assistant["text"] == turn.text, (assistant, turn)
            key = f"agent:main:{turn.session}"
            assert any(m["text"] == turn.prompt for m in stored[key]), key

        shared_kept = [len(stored.get(f"agent:main:shared-{i}", [])) // 2 for i in range(SHARED)]
        assert max(shared_kept) >= 2, shared_kept
        # The sessions go on: a new turn counts the turns the store kept.
        async with aiohttp.ClientSession() as http:
            for session in [f"shared-{i}" for i in range(SHARED)] + ["solo-0"]:
                kept = len(stored.get(f"agent:main:{session}", [])) // 2
                body = {"messages": [{"role": "user", "content": "after the restart"}]}
                headers = {**AUTH, "x-openclaw-session-key": session}
                async with http.post(url + CHAT, json=body, headers=headers) as response:
                    assert response.status == 200
                    answer = await response.json()
                text = answer["choices"][0]["message"]["content"]
                assert text == f"[turn {kept + 1}] after the restart", (session, kept, text)

        second.signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait) == 0
        problems = [e for e in second.events() if e.get("level") in ("error", "critical")]
        assert problems == []
