"""Crash safety (agents-sessions.md §8): SIGKILL a process mid-run, then reopen its store.

Every turn whose end was reported is complete; no half turn exists anywhere.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from agents.store import SessionStore

ROOT = Path(__file__).resolve().parents[2]
ENDS_BEFORE_KILL = 60


async def run_and_kill(state_dir: Path) -> tuple[set[str], list[tuple[str, str]]]:
    """Start the child, SIGKILL it after ENDS_BEFORE_KILL ended runs; the runs it started
    and the (run id, status) of those it reported ended."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.agents.crash_child", str(state_dir),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    started: set[str] = set()
    ended: list[tuple[str, str]] = []
    try:
        async with asyncio.timeout(20):
            while len(ended) < ENDS_BEFORE_KILL:
                line = await proc.stdout.readline()
                assert line, "the child died on its own"
                if line.startswith(b"START "):
                    started.add(line.decode().split()[1])
                if line.startswith(b"END "):
                    _, run_id, status = line.decode().split()
                    ended.append((run_id, status))
    finally:
        proc.kill()
        rest = await proc.stdout.read()  # ends printed before the kill count too
        await proc.wait()
    for text in rest.decode().splitlines():
        if text.startswith("START "):
            started.add(text.split()[1])
        if text.startswith("END "):
            _, run_id, status = text.split()
            ended.append((run_id, status))
    return started, ended


async def test_a_killed_process_leaves_only_whole_turns(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    started, ended = await run_and_kill(state_dir)
    assert all(status == "completed" for _, status in ended)
    in_flight = started - {run_id for run_id, _ in ended}
    # Killed with turns in flight: 20, or 19 when the kill fell between a run's END line and
    # the START of the turn that replaces it.
    assert 19 <= len(in_flight) <= 20
    assert (state_dir / "sessions.sqlite3-wal").exists()  # reopening recovers from the WAL

    store = SessionStore(state_dir)
    await store.open()
    try:
        rows = (await store.list(limit=10_000)).rows
    finally:
        await store.aclose()

    with sqlite3.connect(state_dir / "sessions.sqlite3") as db:
        messages = db.execute(
            "SELECT session_id, seq, role, run_id, content, usage FROM messages"
            " ORDER BY session_id, seq"
        ).fetchall()
        orphans = db.execute(
            "SELECT COUNT(*) FROM transcripts WHERE session_id NOT IN"
            " (SELECT session_id FROM sessions)"
        ).fetchone()[0]
    assert orphans == 0

    by_session: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for message in messages:
        by_session[message[0]].append(message)
    by_run: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    # No half turn: each transcript is whole user/assistant pairs of one run, seq 1..n, and
    # the echo turn counter proves each turn saw exactly the turns before it.
    for session_id, rows_of_session in by_session.items():
        assert [m[1] for m in rows_of_session] == list(range(1, len(rows_of_session) + 1))
        assert len(rows_of_session) % 2 == 0, session_id
        for turn, index in enumerate(range(0, len(rows_of_session), 2), start=1):
            user, assistant = rows_of_session[index], rows_of_session[index + 1]
            assert (user[2], assistant[2]) == ("user", "assistant")
            assert user[3] == assistant[3]
            reply = json.loads(assistant[4])[0]["text"]
            assert reply == f"[turn {turn}] {json.loads(user[4])}"
            by_run[user[3]] = [user, assistant]

    # Every reported end is there, complete.
    assert len(ended) >= ENDS_BEFORE_KILL
    for run_id, _ in ended:
        assert run_id in by_run, run_id
    # In-flight turns are either wholly there (committed, not yet reported) or absent.
    assert set(by_run) <= started

    # Every session row agrees with its transcript.
    for row in rows:
        transcript = by_session.get(row.session_id, [])
        if not transcript:
            assert (row.last_run_id, row.input_tokens, row.output_tokens) == (None, 0, 0)
            continue
        last = transcript[-1]
        usage = json.loads(last[5])
        assert row.last_run_id == last[3]
        assert (row.input_tokens, row.output_tokens, row.total_tokens) == (
            usage["input"], usage["output"], usage["input"]
        )  # fmt: skip
        assert row.last_status == "done"
    assert {row.session_id for row in rows} >= set(by_session)
    assert re.fullmatch(r"run-\d+", ended[0][0])
