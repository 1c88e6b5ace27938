"""The SQLite session store: agents-sessions.md §3, §5 and §8, on real files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog

from agents import store as store_module
from agents.config import MaintenanceConfig
from agents.errors import (
    REFUSED_ERROR,
    SessionArchivedPin,
    SessionChanged,
    StoreError,
    UnsafeStoreFile,
    UpstreamStatusError,
    stored_error,
)
from agents.history import SessionHistory
from agents.providers.base import ChatMessage, ThinkingBlock, ToolCall
from agents.store import (
    DB_FILENAME,
    MESSAGES_BY_ID_BATCH,
    MIGRATIONS,
    SCHEMA_VERSION,
    SQL_CHAIN_BOUNDS,
    SQL_CHAIN_TO,
    SQL_FIRST_DIFFERENCE,
    SQL_GET_SESSION,
    SQL_LAST_ANSWER,
    SQL_LAST_ASSISTANT,
    SQL_LAST_ASSISTANT_IN,
    SQL_MESSAGE_SEQ,
    SQL_MESSAGES_AFTER,
    SQL_MESSAGES_IN,
    SQL_MESSAGES_IN_DESC,
    SQL_NEXT_ASSISTANT,
    SQL_NEXT_SEQ,
    SQL_RECENT_TURNS,
    SQL_REFUSED_RUN_END,
    SQL_TURN_END,
    SQL_TURN_REPLY,
    SQL_UPSERT_TURN,
    DailyUsage,
    ResponseOutputIds,
    SessionRow,
    SessionStore,
    SessionUsage,
    StoredMessage,
    StoredResponse,
    TurnRecord,
    UsagePoint,
)
from agents.store_postgres import PostgresSessionStore
from tests.support.turns import KEY, turn

DAY = 24 * 3600 * 1000


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def new_store(request: pytest.FixtureRequest, tmp_path: Path, **options: Any) -> Any:
    if request.param == "postgres":
        return PostgresSessionStore(request.getfixturevalue("pg_url"), **options)
    return SessionStore(tmp_path / "state", **options)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    """The contract's store: every test using it runs against both backends."""
    store = new_store(request, tmp_path)
    await store.open()
    yield store
    await store.aclose()


@pytest.fixture(params=BACKENDS)
async def timed_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SessionStore, list[float]]]:
    """A store of either backend and the durations its `on_commit` was told."""
    durations: list[float] = []
    store = new_store(request, tmp_path, on_commit=durations.append)
    await store.open()
    yield store, durations
    await store.aclose()


def raw_db(store: SessionStore) -> sqlite3.Connection:
    """A second connection to the same file, as another process would have."""
    if not isinstance(store, SessionStore):
        pytest.skip("reads SQLite's file; tests/agents/test_store_postgres.py checks PostgreSQL")
    return sqlite3.connect(store.path, isolation_level=None)


class TestFile:
    async def test_file_is_0600_in_a_0700_directory(self, tmp_path: Path) -> None:
        store = SessionStore(tmp_path / "a" / "state")
        await store.open()
        try:
            row, _ = await store.create(KEY, "main", 1)
            await store.append_turn(turn(row))
            assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
            assert stat.S_IMODE(store.state_dir.stat().st_mode) == 0o700
            wal = store.path.with_name(store.path.name + "-wal")
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
            assert store.path == tmp_path / "a" / "state" / "sessions.sqlite3"
        finally:
            await store.aclose()

    async def test_connection_settings(self, tmp_path: Path) -> None:
        async with SessionStore(tmp_path) as store:
            assert await store.pragmas() == {
                "journal_mode": "wal",
                "synchronous": 2,  # FULL
                "foreign_keys": 1,
                "busy_timeout": 5000,
                "temp_store": 2,  # MEMORY: savepoint sub-journals without a file per commit
                "journal_size_limit": store_module.WAL_SIZE_LIMIT_BYTES,
                "user_version": SCHEMA_VERSION,
            }

    async def test_the_wal_shrinks_back_after_a_large_transaction(self, tmp_path: Path) -> None:
        """The WAL grows to hold a transaction (a group of large turns) and, without a size
        limit, keeps that size until the store closes: bytes no maintenance can count."""
        async with SessionStore(tmp_path) as store:
            rows = [(await store.create(f"{KEY}-{i}", "main", 1))[0] for i in range(4)]
            text = "x" * 5_000_000
            await asyncio.gather(
                *(store.append_turn(turn(row, user_text=text, assistant_text=text)) for row in rows)
            )
            wal = store.path.with_name(store.path.name + "-wal")
            assert wal.stat().st_size > 40_000_000
            for i in range(3):  # the WAL starts over once checkpointed, at the next write
                await store.append_turn(turn(rows[0], run_id=f"small{i}"))
            assert wal.stat().st_size <= store_module.WAL_SIZE_LIMIT_BYTES

    async def test_schema(self, store: SessionStore) -> None:
        with raw_db(store) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert tables == {"sessions", "transcripts", "messages", "responses"}

    async def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        store = SessionStore(tmp_path)
        await store.open()
        await store.aclose()
        with sqlite3.connect(store.path) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StoreError, match="newer"):
            await store.open()

    async def test_two_stores_opening_one_fresh_file_at_once_both_open_it(
        self, tmp_path: Path
    ) -> None:
        """Two connections, as two processes would have: the one that waits for the other's
        migration finds the schema made, and neither fails with "table sessions already
        exists" (each read the version before the other's migration committed)."""
        for attempt in range(10):
            state = tmp_path / f"state{attempt}"
            first, second = SessionStore(state), SessionStore(state)
            try:
                await asyncio.gather(first.open(), second.open())
                row, _ = await first.create(KEY, "main", 1)
                assert await second.get(KEY) == row
            finally:
                await first.aclose()
                await second.aclose()
            with contextlib.closing(sqlite3.connect(first.path)) as db:
                assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
                assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    async def test_a_message_damaged_on_disk_is_a_store_error_naming_it(
        self, tmp_path: Path
    ) -> None:
        """Bytes of a data page changed where SQLite checks nothing (a row's text): the
        history and replay reads failed with a JSONDecodeError, no StoreError, and the
        gateway answered it as a bug of its own (a traceback in the log)."""
        async with SessionStore(tmp_path) as store:
            row, _ = await store.create(KEY, "main", 1)
            row = await store.append_turn(turn(row, "r1", user_text="intact"))
            row = await store.append_turn(turn(row, "r2", user_text="soon damaged"))
        data = store.path.read_bytes()
        at = data.index(b'"soon damaged"')
        store.path.write_bytes(data[:at] + b"}" * 14 + data[at + 14 :])
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            damaged = db.execute("SELECT id FROM messages WHERE seq = 3").fetchone()[0]
        async with SessionStore(tmp_path) as store:
            sid = row.session_id
            for read in (
                lambda: store.history(sid, 10),
                lambda: store.recent_turns(sid, 2),
                lambda: store.messages_after(sid, 0),
                lambda: store.replay(sid, 2),
            ):
                with pytest.raises(StoreError) as caught:
                    await read()
                assert str(caught.value) == (
                    f"stored message {damaged} (seq 3) is damaged: its content is not JSON"
                    " (Expecting value: line 1 column 1 (char 0))"
                )
            # What is intact reads as before, and new turns are stored.
            intact = await store.history(row.session_id, 10, before_seq=3)
            assert intact.messages[0].content == "intact"
            assert (await store.append_turn(turn(row, "r3"))).last_run_id == "r3"

    async def test_a_damaged_page_found_while_serving_says_how_to_rescue_the_file(
        self, tmp_path: Path
    ) -> None:
        """The file opens (only its first page is read then): the damage shows on the first
        read or write of its page, and said only "database disk image is malformed", with
        neither the file nor what to do about it."""
        async with SessionStore(tmp_path) as store:
            row, _ = await store.create(KEY, "main", 1)
            for i in range(20):
                row = await store.append_turn(turn(row, f"r{i}", user_text="words " * 100))
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            page = db.execute("PRAGMA page_size").fetchone()[0]
            root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sessions'")
            (sessions_page,) = root.fetchone()
        with store.path.open("r+b") as file:
            file.seek((sessions_page - 1) * page)  # the b-tree page header of `sessions`
            file.write(b"\xff" * 16)
        async with SessionStore(tmp_path) as store:
            for call in (lambda: store.list(), lambda: store.get(KEY)):
                with pytest.raises(StoreError) as caught:
                    await call()
                assert str(caught.value) == (
                    f"{store.path} is damaged (DatabaseError: database disk image is"
                    " malformed). Fix: restore a backup, or rescue what it holds with"
                    f" `sqlite3 {store.path} .recover`."
                )

    async def test_a_symlinked_database_is_refused_not_followed(self, tmp_path: Path) -> None:
        victim = tmp_path / "victim.sqlite3"
        with sqlite3.connect(victim) as db:
            db.execute("CREATE TABLE mine (x)")
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "sessions.sqlite3").symlink_to(victim)
        store = SessionStore(tmp_path / "state")
        with pytest.raises(UnsafeStoreFile, match="refusing to follow the symlink"):
            await store.open()
        with sqlite3.connect(victim) as db:
            tables = db.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == [("mine",)]

    async def test_a_database_that_is_not_a_regular_file_is_refused(self, tmp_path: Path) -> None:
        os.mkfifo(tmp_path / "sessions.sqlite3")  # would hang a reader without O_NONBLOCK
        with pytest.raises(UnsafeStoreFile, match="not a regular file"):
            await SessionStore(tmp_path).open()

    async def test_calls_on_a_closed_store_raise_store_error(self, tmp_path: Path) -> None:
        store = SessionStore(tmp_path)
        with pytest.raises(StoreError):
            await store.get(KEY)
        await store.open()
        await store.aclose()
        with pytest.raises(StoreError):
            await store.count()

    async def test_everything_is_there_after_reopening(self, tmp_path: Path) -> None:
        store = SessionStore(tmp_path)
        await store.open()
        rows = []
        for i in range(3):
            row, _ = await store.create(f"agent:main:s{i}", "main", 10 + i)
            rows.append(await store.append_turn(turn(row, run_id=f"r{i}")))
        await store.patch_label("agent:main:s0", "main", "first", 20)
        before = [await store.history(r.session_id, 100) for r in rows]
        listed = await store.list()
        await store.aclose()

        reopened = SessionStore(tmp_path)
        await reopened.open()
        try:
            assert await reopened.list() == listed
            assert [await reopened.history(r.session_id, 100) for r in rows] == before
            assert (await reopened.get("agent:main:s0")).label == "first"  # type: ignore[union-attr]
        finally:
            await reopened.aclose()


class TestSessions:
    async def test_create_then_get(self, store: SessionStore) -> None:
        row, created = await store.create(KEY, "main", 100, label="x")
        assert created
        assert row == SessionRow(KEY, "main", row.session_id, "x", 100, 100)
        assert len(row.session_id) == 36
        assert await store.get(KEY) == row
        assert await store.get("agent:main:nope") is None

    async def test_create_returns_the_existing_row(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        again, created = await store.create(KEY, "main", 200)
        assert (again, created) == (row, False)

    async def test_get_or_create_creates_once(self, store: SessionStore) -> None:
        row, created = await store.get_or_create(KEY, "main", 100)
        assert created and row == SessionRow(KEY, "main", row.session_id, None, 100, 100)
        assert await store.get_or_create(KEY, "main", 200) == (row, False)

    async def test_count(self, store: SessionStore) -> None:
        for i in range(4):
            await store.create(f"agent:main:{i}", "main", i)
        assert await store.count() == 4

    async def test_patch_label_upserts_and_clears(self, store: SessionStore) -> None:
        created = await store.patch_label(KEY, "main", "hello", 100)
        assert (created.label, created.created_at) == ("hello", 100)
        cleared = await store.patch_label(KEY, "main", None, 200)
        assert cleared == attrs.evolve(created, label=None, updated_at=200)

    async def test_list_is_most_recent_first_with_a_total(self, store: SessionStore) -> None:
        for i in range(5):
            await store.create(f"agent:main:s{i}", "main", 100 + i)
        page = await store.list(limit=2)
        assert [r.key for r in page.rows] == ["agent:main:s4", "agent:main:s3"]
        assert page.total_count == 5

    async def test_list_filters(self, store: SessionStore) -> None:
        await store.create("agent:main:alpha", "main", 100, label="Project X")
        await store.create("agent:main:beta", "main", 200)
        await store.create("agent:ops:gamma", "ops", 300, label="other")

        async def keys(**filters: Any) -> list[str]:
            page = await store.list(**filters)
            assert page.total_count == len(page.rows)
            return [r.key for r in page.rows]

        assert await keys(agent_id="ops") == ["agent:ops:gamma"]
        assert await keys(search="ALPH") == ["agent:main:alpha"]
        assert await keys(search="project x") == ["agent:main:alpha"]  # label, any case
        assert await keys(search="%") == []  # no wildcards
        assert await keys(label="other") == ["agent:ops:gamma"]
        assert await keys(label="Other") == []  # exact
        assert await keys(active_minutes=1, now=60_200) == ["agent:ops:gamma", "agent:main:beta"]

    @pytest.mark.parametrize("search", ["ärger", "ÄRGER", "über", "σοφία"])
    async def test_list_search_ignores_the_case_of_any_letter(
        self, store: SessionStore, search: str
    ) -> None:
        """Whatever the database's locale: the test server's is C, which folds ASCII only."""
        await store.create("agent:main:umlaut", "main", 100, label="Ärger Über ΣΟΦΊΑ")
        await store.create("agent:main:plain", "main", 200, label="Plain")
        assert [r.key for r in (await store.list(search=search)).rows] == ["agent:main:umlaut"]

    async def test_reset_keeps_key_and_label_and_archives_the_transcript(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100, label="keep")
        row = await store.append_turn(turn(row, aborted=True, status="aborted"))
        new = await store.reset(KEY, "main", 500)
        assert new.session_id != row.session_id
        assert new == SessionRow(
            KEY, "main", new.session_id, "keep", 100, 500, 0, 0, 0, "echo", "echo", None, None
        )
        assert (await store.history(row.session_id, 10)).total == 2  # old transcript kept
        assert (await store.history(new.session_id, 10)).total == 0

    async def test_reset_of_an_unknown_key_creates_it(self, store: SessionStore) -> None:
        row = await store.reset(KEY, "main", 500)
        assert (row.created_at, row.updated_at) == (500, 500)

    async def test_delete_with_transcripts_of_every_session_id(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row))
        new = await store.reset(KEY, "main", 200)
        await store.append_turn(turn(new, run_id="r2"))
        assert await store.delete(KEY, 300) is True
        assert await store.get(KEY) is None
        for sid in (row.session_id, new.session_id):
            assert (await store.history(sid, 10)).total == 0
        assert await store.delete(KEY, 300) is False

    async def test_delete_can_keep_the_transcript(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row))
        assert await store.delete(KEY, 300, delete_transcript=False)
        assert (await store.history(row.session_id, 10)).total == 2

    async def test_a_key_with_a_nul_is_a_session_like_any_other(self, store: SessionStore) -> None:
        # A WebSocket client's key may hold a NUL (JSON spells it `\u0000`); PostgreSQL
        # keeps it as U+FFFD, as it does a label's, but the session works all the same.
        key = "agent:main:a\x00b"
        row, created = await store.create(key, "main", 100)
        assert created
        assert await store.get(key) == row
        assert await store.create(key, "main", 150) == (row, False)
        assert await store.is_stateless(key) is False
        row = await store.append_turn(turn(row, key=key))
        assert (await store.patch_label(key, "main", "l", 200)).session_id == row.session_id
        assert [r.key for r in (await store.list(search="a\x00b")).rows] == [row.key]
        assert not await store.turn_running_elsewhere(key)
        async with store.turn_lock(key):
            pass
        assert (await store.reset(key, "main", 300)).session_id != row.session_id
        assert await store.delete(key, 400) is True
        assert await store.get(key) is None


class TestTurns:
    async def test_a_turn_on_an_unsaved_row_creates_the_session_with_it(
        self, store: SessionStore
    ) -> None:
        """A key minted for the turn: its row is written by the turn's own write."""
        row = store.unsaved_row(KEY, "main", 100)
        assert await store.get(KEY) is None
        saved = await store.append_turn(turn(row, stateless=True))
        # Created when its first message was: the turn's user timestamp.
        assert (saved.key, saved.session_id, saved.created_at) == (KEY, row.session_id, 1000)
        assert await store.get(KEY) == saved
        assert await store.is_stateless(KEY) is True
        assert (await store.history(row.session_id, 10)).total == 2

    async def test_a_turn_on_an_unsaved_row_takes_over_a_row_created_meanwhile(
        self, store: SessionStore
    ) -> None:
        """A label given while a minted key's first turn runs creates the row first: the turn's
        session (its messages) wins, the label stays. A row older than the turn keeps its own
        session (another process reset it meanwhile)."""
        row = store.unsaved_row(KEY, "main", 100)
        labelled = await store.patch_label(KEY, "main", "Named", 1002)
        assert labelled.session_id != row.session_id
        saved = await store.append_turn(turn(row, stateless=True))
        assert (saved.session_id, saved.label) == (row.session_id, "Named")
        assert (await store.history(saved.session_id, 10)).total == 2
        older = await store.reset(KEY, "main", 2000)
        late = await store.append_turn(turn(saved, "r2", user_timestamp=1500))
        assert late.session_id == older.session_id

    async def test_a_turn_on_an_unsaved_row_leaves_a_turn_stored_meanwhile_the_keys(
        self, store: SessionStore
    ) -> None:
        """Another process took the minted key from the response's headers and ran a turn on
        it while the first turn ran (both run, lock-free): the key keeps the session holding
        that turn, not an empty one for the first turn's."""
        row = store.unsaved_row(KEY, "main", 100)
        other, _ = await store.create(KEY, "main", 1002)
        await store.append_turn(turn(other, "r-other", user_timestamp=1002))
        saved = await store.append_turn(turn(row))
        assert saved.session_id == other.session_id
        assert (await store.history(other.session_id, 10)).total == 2
        assert (await store.history(row.session_id, 10)).total == 2  # kept, not the key's

    async def test_a_reset_during_a_sessions_first_turn_wins_over_the_turn(
        self, store: SessionStore
    ) -> None:
        """A named key's row is made as its first turn starts, in the same millisecond as the
        turn's user message (or after it): a reset while that turn runs still wins, and the
        turn goes into the archived transcript, as any late turn of a reset session does."""
        row, _ = await store.create(KEY, "main", 1000)
        newer = await store.reset(KEY, "main", 1003)
        late = await store.append_turn(turn(row, user_timestamp=1000))
        assert late.session_id == newer.session_id
        assert (await store.history(newer.session_id, 10)).total == 0

    async def test_session_and_message_ids_are_time_ordered_uuids(
        self, store: SessionStore
    ) -> None:
        """Version 7 (agents/ids.py): a new row lands next to the last one in every index."""
        first, _ = await store.create(KEY, "main", 100)
        await asyncio.sleep(0.002)
        second = store.unsaved_row("agent:main:s2", "main", 100)
        await store.append_turn(turn(first))
        await store.append_turn(turn(second))
        ids = [first.session_id, second.session_id]
        for row in (first, second):
            ids.extend(m.id for m in (await store.history(row.session_id, 10)).messages)
        assert all(uuid.UUID(i).version == 7 for i in ids)
        assert first.session_id < second.session_id

    async def test_a_turn_stores_both_messages_in_openclaw_shape(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(
            turn(
                row,
                run_id="idem-1",
                idempotency_key="idem-1",
                images={"count": 1, "mimeTypes": ["image/png"]},
            )
        )
        history = await store.history(row.session_id, 10)
        assert history.total == 2
        user, assistant = history.messages
        assert user.to_transcript() == {
            "role": "user",
            "content": "hello there",
            "timestamp": 1000,
            "idempotencyKey": "idem-1:user",
            "images": {"count": 1, "mimeTypes": ["image/png"]},
            "__openclaw": {"id": user.id, "seq": 1},
        }
        assert assistant.to_transcript() == {
            "role": "assistant",
            "content": [{"type": "text", "text": "[turn 1] hello there"}],
            "api": "echo",
            "provider": "echo",
            "model": "echo",
            "usage": {"input": 2, "output": 4, "totalTokens": 6},
            "stopReason": "stop",
            "timestamp": 1005,
            "__openclaw": {"id": assistant.id, "seq": 2, "runId": "idem-1"},
        }
        assert user.id != assistant.id

    async def test_aborted_and_failed_turns_carry_their_markers(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(
            turn(row, "r1", assistant_text="[turn", stop_reason="aborted", aborted=True)
        )
        await store.append_turn(
            turn(row, "r2", stop_reason="error", error_message="upstream provider error")
        )
        messages = (await store.history(row.session_id, 10)).messages
        aborted, failed = messages[1].to_transcript(), messages[3].to_transcript()
        assert (aborted["stopReason"], aborted["aborted"]) == ("aborted", True)
        assert "errorMessage" not in aborted
        assert failed["errorMessage"] == "upstream provider error"
        assert "aborted" not in failed
        assert messages[0].to_transcript().keys() == {"role", "content", "timestamp", "__openclaw"}

    async def test_a_turn_updates_the_row(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100, label="l")
        updated = await store.append_turn(
            turn(row, "r9", input_tokens=7, output_tokens=3, status="aborted", aborted=True)
        )
        assert updated == SessionRow(
            KEY, "main", row.session_id, "l", 100, 1005, 7, 3, 7, "echo", "echo", "r9",
            "aborted", True,
        )  # fmt: skip
        assert await store.get(KEY) == updated

    async def test_seq_continues_per_session_id(self, store: SessionStore) -> None:
        a, _ = await store.create(KEY, "main", 100)
        b, _ = await store.create("agent:main:other", "main", 100)
        for run_id in ("r1", "r2", "r3"):
            await store.append_turn(turn(a, run_id))
        await store.append_turn(turn(b, "r4"))
        assert [m.seq for m in (await store.history(a.session_id, 100)).messages] == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]
        assert [m.seq for m in (await store.history(b.session_id, 100)).messages] == [1, 2]

    async def test_history_pages_by_the_characters_of_stored_contents(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        for run_id, size in (("r1", 10), ("r2", 1000), ("r3", 10)):
            row = await store.append_turn(turn(row, run_id, user_text="u" * size))
        # Stored contents: the user texts as JSON strings (size + 2), the replies 46 each.
        page = await store.history(row.session_id, 100, max_chars=60)
        assert ([m.seq for m in page.messages], page.total) == ([5, 6], 6)
        page = await store.history(row.session_id, 100, before_seq=4, max_chars=60)
        assert [m.seq for m in page.messages] == [3]  # one message, however long
        page = await store.history(row.session_id, 100, before_seq=3, max_chars=2000)
        assert [m.seq for m in page.messages] == [1, 2]
        page = await store.history(row.session_id, 1, before_seq=3, max_chars=2000)
        assert [m.seq for m in page.messages] == [2]
        assert (await store.history(row.session_id, 100, before_seq=1, max_chars=60)).messages == ()

    async def test_a_turn_is_all_or_nothing(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        row = await store.append_turn(turn(row, "r1"))
        # Make the second INSERT of the transaction fail, after the user message went in.
        with raw_db(store) as db:
            db.execute(
                "CREATE TRIGGER refuse_assistant BEFORE INSERT ON messages"
                " WHEN NEW.role = 'assistant' BEGIN SELECT RAISE(ABORT, 'forced'); END"
            )
        with pytest.raises(StoreError, match="forced"):
            await store.append_turn(turn(row, "r2", input_tokens=99))
        history = await store.history(row.session_id, 10)
        assert [m.run_id for m in history.messages] == ["r1", "r1"]
        assert await store.get(KEY) == row
        # And the connection is usable afterwards.
        with raw_db(store) as db:
            db.execute("DROP TRIGGER refuse_assistant")
        await store.append_turn(turn(row, "r3"))
        assert (await store.history(row.session_id, 10)).total == 4

    async def test_a_unique_violation_inside_the_turn_leaves_nothing(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        # A message that jumps onto the assistant's seq as soon as the user message is in.
        with raw_db(store) as db:
            db.execute(
                "INSERT INTO messages (id, session_id, seq, role, content, timestamp)"
                " VALUES ('x', ?, 2, 'assistant', '[]', 0)",
                (row.session_id,),
            )
            db.execute(
                "CREATE TRIGGER squat AFTER INSERT ON messages WHEN NEW.role = 'user'"
                " BEGIN UPDATE messages SET seq = NEW.seq + 1 WHERE id = 'x'; END"
            )
        with pytest.raises(StoreError, match="UNIQUE"):
            await store.append_turn(turn(row, "r1"))
        history = await store.history(row.session_id, 10)
        assert [m.id for m in history.messages] == ["x"]
        assert await store.get(KEY) == row

    async def test_a_turn_recreates_a_vanished_row(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.delete(KEY, 150)
        recreated = await store.append_turn(turn(row))
        assert (recreated.session_id, recreated.last_run_id) == (row.session_id, "r1")

    async def test_history_is_the_last_messages_oldest_first(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        for i in range(3):
            await store.append_turn(turn(row, f"r{i}", user_text=f"u{i}"))
        history = await store.history(row.session_id, 3)
        assert history.total == 6
        assert [m.seq for m in history.messages] == [4, 5, 6]
        assert history.messages[1].text == "u2"

    async def test_recent_turns_counts_user_turns(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        for i in range(4):
            await store.append_turn(turn(row, f"r{i}", user_text=f"u{i}"))
        recent = await store.recent_turns(row.session_id, 2)
        assert [(m.role, m.seq) for m in recent] == [
            ("user", 5), ("assistant", 6), ("user", 7), ("assistant", 8)
        ]  # fmt: skip
        assert len(await store.recent_turns(row.session_id, 10)) == 8
        assert await store.recent_turns(row.session_id, 0) == ()

    @pytest.mark.parametrize(
        ("sql", "params"),
        [
            (SQL_GET_SESSION, (KEY,)),
            (SQL_NEXT_SEQ, ("sid",)),
            (SQL_RECENT_TURNS, {"sid": "sid", "skip": 49}),
            (SQL_MESSAGES_AFTER, ("sid", 10)),
        ],
    )
    async def test_turn_statements_use_an_index(
        self, store: SessionStore, sql: str, params: Any
    ) -> None:
        with raw_db(store) as db:
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        searches = [step for step in plan if "messages" in step or "sessions" in step]
        assert searches
        assert all(step.startswith("SEARCH") and " USING " in step for step in searches), plan

    async def test_turn_upsert_is_a_primary_key_conflict(self, store: SessionStore) -> None:
        # An upsert's only lookup is its conflict target: sessions.key, the primary key.
        assert "ON CONFLICT (key)" in SQL_UPSERT_TURN
        with raw_db(store) as db:
            pk = db.execute("SELECT name FROM pragma_table_info('sessions') WHERE pk = 1")
            assert [r[0] for r in pk] == ["key"]


CALL = ToolCall("call_1", "get_weather", '{"city":"Paris"}')


class TestGroupCommit:
    """Writes queued together are one transaction and one fsync; each caller hears back
    after the commit that holds its writes."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SessionStore]:
        """SQLite's: PostgreSQL commits each write on its own connection."""
        async with SessionStore(tmp_path / "state") as store:
            yield store

    async def test_turns_ending_together_share_commits(self, store: SessionStore) -> None:
        rows = [(await store.create(f"{KEY}-{i}", "main", 100))[0] for i in range(40)]
        before = store.commits
        await asyncio.gather(*(store.append_turn(turn(row)) for row in rows))
        # The first may commit alone; the rest queue up behind its fsync.
        assert store.commits - before <= 5

    async def test_every_turn_of_a_group_is_committed_when_its_call_returns(
        self, store: SessionStore
    ) -> None:
        rows = [(await store.create(f"{KEY}-{i}", "main", 100))[0] for i in range(40)]
        await asyncio.gather(*(store.append_turn(turn(row)) for row in rows))
        with raw_db(store) as db:  # another connection sees only what is committed
            assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 80

    async def test_a_failing_turn_in_a_group_rolls_back_only_itself(
        self, store: SessionStore
    ) -> None:
        rows = [(await store.create(f"{KEY}-{i}", "main", 100))[0] for i in range(3)]
        with raw_db(store) as db:
            db.execute(
                "CREATE TRIGGER refuse_bad BEFORE INSERT ON messages"
                " WHEN NEW.role = 'assistant' AND NEW.run_id = 'bad'"
                " BEGIN SELECT RAISE(ABORT, 'forced'); END"
            )
        results = await asyncio.gather(
            store.append_turn(turn(rows[0], "good1")),
            store.append_turn(turn(rows[1], "bad")),
            store.append_turn(turn(rows[2], "good2")),
            return_exceptions=True,
        )
        assert isinstance(results[1], StoreError)
        assert "forced" in str(results[1])
        with raw_db(store) as db:
            stored = db.execute("SELECT DISTINCT run_id FROM messages ORDER BY run_id").fetchall()
        assert stored == [("good1",), ("good2",)]

    async def test_a_turn_that_fills_the_disk_is_told_so_and_the_rest_of_its_group_commits(
        self, store: SessionStore
    ) -> None:
        """SQLite rolls the whole transaction back on a full disk, not only the failing
        job's savepoint: every turn of the group failed with "the store's transaction was
        rolled back", the one that filled it too, and none was told why."""
        rows = [(await store.create(f"{KEY}-{i}", "main", 100))[0] for i in range(3)]

        def room_for_a_few_pages() -> None:  # on the store's own connection: per connection
            db = store._conn()
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages + 4}").fetchone()

        await store._call(room_for_a_few_pages)
        results = await asyncio.gather(
            store.append_turn(turn(rows[0], "good1")),
            store.append_turn(turn(rows[1], "huge", user_text="x" * 200_000)),
            store.append_turn(turn(rows[2], "good2")),
            return_exceptions=True,
        )
        assert isinstance(results[1], StoreError)
        assert str(results[1]) == "OperationalError: database or disk is full"
        assert [type(r) for r in (results[0], results[2])] == [SessionRow, SessionRow]
        with raw_db(store) as db:
            stored = db.execute("SELECT DISTINCT run_id FROM messages ORDER BY run_id").fetchall()
        assert stored == [("good1",), ("good2",)]

    async def test_a_write_lock_held_elsewhere_costs_a_group_one_busy_timeout_not_one_a_write(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 300)
        async with SessionStore(tmp_path / "busy") as store:
            rows = [(await store.create(f"{KEY}-{i}", "main", 100))[0] for i in range(20)]
            with raw_db(store) as db:
                db.execute("BEGIN IMMEDIATE")  # a backup tool, the sqlite3 shell
                started = time.monotonic()
                results = await asyncio.gather(
                    *(store.append_turn(turn(row)) for row in rows), return_exceptions=True
                )
                waited = time.monotonic() - started
                db.execute("ROLLBACK")
            assert [str(r) for r in results] == ["OperationalError: database is locked"] * 20
            # Each write waiting its own 0.3 s would take 6 s; the group waits once (the
            # first write may be a group of its own).
            assert waited < 2.0
            await store.append_turn(turn(rows[0]))  # the lock is gone: writes work again

    async def test_a_turn_whose_commit_fails_at_the_close_is_told_so(
        self, store: SessionStore
    ) -> None:
        """The close commits the writes of its group before it closes the connection. That
        commit's error was dropped: a turn ending as the gateway stopped was told it was
        stored, and was not."""
        row, _ = await store.create(KEY, "main", 100)

        def orphan_message(db: sqlite3.Connection) -> None:
            # Checked at COMMIT, not at the INSERT: a commit that fails, on a real file.
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.execute(
                "INSERT INTO messages (id, session_id, seq, role, content, timestamp)"
                " VALUES ('orphan', 'no-such-transcript', 1, 'user', '[]', 1)"
            )

        # The store thread is busy while the write, the turn and the close queue up behind
        # it: they run as one group, the close last.
        busy = asyncio.ensure_future(store._call(time.sleep, 0.5))
        await asyncio.sleep(0.1)
        orphan = asyncio.ensure_future(store._call(store._write, orphan_message))
        ending = asyncio.ensure_future(store.append_turn(turn(row)))
        await asyncio.sleep(0)
        await store.aclose()
        await busy
        results = await asyncio.gather(orphan, ending, return_exceptions=True)
        assert [str(result) for result in results] == [
            "IntegrityError: FOREIGN KEY constraint failed"
        ] * 2
        with sqlite3.connect(store.path) as db:
            assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0

    async def test_a_connection_gone_bad_mid_group_fails_its_calls_and_later_ones_fast(
        self, store: SessionStore
    ) -> None:
        """A group whose connection breaks before its COMMIT (the COMMIT and the ROLLBACK after
        it both fail) ended the store thread: that call, every later one and the close waited
        forever, a gateway stuck with no word in its log."""
        row, _ = await store.create(KEY, "main", 100)

        def write_then_lose_the_connection() -> None:
            store._write(lambda db: db.execute("UPDATE sessions SET label = 'x'"))
            store._conn().close()  # as a connection whose file went away would behave

        with structlog.testing.capture_logs() as logs:
            with pytest.raises(StoreError, match="Cannot operate on a closed database"):
                await asyncio.wait_for(store._call(write_then_lose_the_connection), 5)
            with pytest.raises(StoreError, match="connection failed"):
                await asyncio.wait_for(store.append_turn(turn(row)), 5)
            with pytest.raises(StoreError, match="connection failed"):
                await asyncio.wait_for(store.get(KEY), 5)
        errors = [entry for entry in logs if entry["log_level"] == "error"]
        assert [entry["event"] for entry in errors] == ["store_thread_error"]
        assert errors[0]["exc_info"]
        await asyncio.wait_for(store.aclose(), 5)


class TestScansBesideTurns:
    """The reads a client may ask for at will and that scan tables (`sessions.list`, `count`,
    `usage`) run on a connection and thread of their own: a turn never waits behind one."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SessionStore]:
        """SQLite's, with 200,000 labelled sessions: a search lowers every label."""
        state = tmp_path / "state"
        async with SessionStore(state):
            pass
        db = sqlite3.connect(state / DB_FILENAME)
        with db:
            db.executemany(
                "INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at)"
                " VALUES (?, 'main', ?, ?, ?, ?)",
                ((f"agent:main:many-{i}", f"sid-{i}", f"Label {i}", i, i) for i in range(200_000)),
            )
        db.close()
        async with SessionStore(state) as store:
            yield store

    async def test_a_turn_is_committed_before_a_search_queued_ahead_of_it_answers(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        search = asyncio.create_task(store.list(search="no such session"))
        await asyncio.sleep(0)  # the search is queued
        await store.append_turn(turn(row))
        assert not search.done()
        assert (await search).total_count == 0

    async def test_a_search_sees_the_turns_committed_before_it(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row))
        page = await store.list(search="s1")
        assert [r.key for r in page.rows] == [KEY]
        assert page.rows[0].last_status == "done"
        assert page.total_count == 1


class TestToolMessages:
    """Schema 2: tool calls, results and reasoning as structured transcript messages."""

    def test_a_messages_parts_are_read_from_its_blocks_in_order(self) -> None:
        content = [
            {"type": "thinking", "thinking": "first", "thinkingSignature": "s1"},
            {"type": "text", "text": "Let me "},
            "not a block",
            {"type": "toolCall", "id": "c1", "name": "f", "arguments": {"x": 1}},
            {"type": "thinking", "thinking": " then", "thinkingSignature": "s2"},
            {"type": "text", "text": "look."},
            {"type": "thinking", "thinking": "!", "thinkingSignature": None},
            {"type": "toolCall", "id": "c2", "name": "g", "arguments": "{}"},
        ]
        message = StoredMessage("m", "s", 1, "assistant", content, 1000)
        calls = (ToolCall("c1", "f", '{"x":1}'), ToolCall("c2", "g", "{}"))
        # The thinking blocks' texts are one reasoning text, set apart as they streamed.
        assert (message.text, message.tool_calls, message.reasoning) == (
            "Let me look.", calls, "first\n\n then\n\n!",
        )  # fmt: skip
        assert message.thinking == ()  # one block is not signed: none can go back
        assert message.to_chat() == ChatMessage(
            "assistant", "Let me look.", tool_calls=calls, reasoning="first\n\n then\n\n!",
        )  # fmt: skip

    def test_signed_thinking_blocks_are_read_block_by_block(self) -> None:
        content = [
            {"type": "thinking", "thinking": "first", "thinkingSignature": "s1"},
            {"type": "thinking", "thinking": "", "thinkingSignature": "EmwK", "redacted": True},
            {"type": "thinking", "thinking": "then", "thinkingSignature": "s2"},
            {"type": "toolCall", "id": "c1", "name": "f", "arguments": {}},
        ]
        message = StoredMessage("m", "s", 1, "assistant", content, 1000)
        assert message.thinking == (
            ThinkingBlock("first", "s1"),
            ThinkingBlock("", "EmwK", redacted=True),
            ThinkingBlock("then", "s2"),
        )
        assert message.reasoning == "first\n\nthen"

    async def test_a_v1_store_is_migrated_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / DB_FILENAME
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("BEGIN")
            MIGRATIONS[0](db)
            db.execute("PRAGMA user_version = 1")
            db.execute("COMMIT")
            db.execute(
                "INSERT INTO transcripts (session_id, key, agent_id, created_at)"
                " VALUES ('sid', 'agent:main:s1', 'main', 1)"
            )
            db.execute(
                "INSERT INTO messages (id, session_id, seq, role, content, timestamp)"
                " VALUES ('m1', 'sid', 1, 'user', '\"old\"', 1)"
            )
        store = SessionStore(tmp_path)
        await store.open()
        try:
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION
            (old,) = (await store.history("sid", 10)).messages
            assert (old.role, old.text, old.tool_call_id, old.context_start) == (
                "user", "old", None, False
            )  # fmt: skip
        finally:
            await store.aclose()

    async def test_a_tool_loop_turn_is_stored_as_structured_messages(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(
            turn(row, "r1", user_text="weather?", assistant_text="", tool_calls=(CALL,),
                 reasoning="need it", thinking=(ThinkingBlock("need it", "sig"),),
                 stop_reason="tool_calls")
        )  # fmt: skip
        result = ChatMessage("tool", "sunny", tool_call_id="call_1", tool_name="get_weather")
        await store.append_turn(turn(row, "r2", inputs=(result,), assistant_text="Sunny."))
        history = await store.history(row.session_id, 10)
        assert [m.to_transcript() for m in history.messages][1:3] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "need it", "thinkingSignature": "sig"},
                    {"type": "toolCall", "id": "call_1", "name": "get_weather",
                     "arguments": {"city": "Paris"}},
                ],
                "api": "echo",
                "provider": "echo",
                "model": "echo",
                "usage": {"input": 2, "output": 4, "totalTokens": 6},
                "stopReason": "toolUse",
                "timestamp": 1005,
                "__openclaw": {"id": history.messages[1].id, "seq": 2, "runId": "r1"},
            },
            {
                "role": "toolResult",
                "toolCallId": "call_1",
                "toolName": "get_weather",
                "content": [{"type": "text", "text": "sunny"}],
                "isError": False,
                "timestamp": 1000,
                "__openclaw": {"id": history.messages[2].id, "seq": 3},
            },
        ]  # fmt: skip

    async def test_stored_messages_replay_as_they_were(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(
            turn(row, "r1", user_text="weather?", assistant_text="", tool_calls=(CALL,),
                 reasoning="need it", thinking=(ThinkingBlock("need it", "sig"),))
        )  # fmt: skip
        result = ChatMessage("tool", "sunny", tool_call_id="call_1", tool_name="get_weather")
        await store.append_turn(turn(row, "r2", inputs=(result,), assistant_text="Sunny."))
        recent = await store.recent_turns(row.session_id, 5)
        assert [m.to_chat() for m in recent] == [
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=(CALL,), reasoning="need it",
                        thinking=(ThinkingBlock("need it", "sig"),)),
            result,
            ChatMessage("assistant", "Sunny."),
        ]  # fmt: skip

    async def test_history_starts_at_the_last_context_start(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row, "r1", user_text="old"))
        client = (ChatMessage("user", "u1"), ChatMessage("assistant", "a1"),
                  ChatMessage("user", "u2"))  # fmt: skip
        await store.append_turn(turn(row, "r2", inputs=client, context_start=True))
        recent = await store.recent_turns(row.session_id, 50)
        assert [m.text for m in recent] == ["u1", "a1", "u2", "[turn 1] hello there"]
        assert recent[0].context_start and not any(m.context_start for m in recent[1:])

    async def test_a_refused_turn_is_not_one_of_the_last_turns(self, store: SessionStore) -> None:
        """A turn the upstream refused is not replayed (agents/history.py): it does not take
        the place of one that is, however many user messages it holds."""
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row, "r1", user_text="u1"))
        await store.append_turn(turn(row, "r2", user_text="bad", **REFUSED))
        history = tuple(ChatMessage("user", f"h{i}") for i in range(3))
        await store.append_turn(turn(row, "r3", inputs=history, **REFUSED))
        await store.append_turn(turn(row, "r4", user_text="u4", **FAILED))
        recent = await store.recent_turns(row.session_id, 2)
        assert [m.run_id for m in recent if m.role == "user"] == ["r1", "r2", *["r3"] * 3, "r4"]
        recent, last = await store.replay(row.session_id, 1)
        assert [m.run_id for m in recent if m.role == "user"] == ["r4"]
        assert last is not None and last.run_id == "r4"

    async def test_replay_gives_the_last_assistant_message(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row, "r1", assistant_text="first"))
        await store.append_turn(turn(row, "r2", assistant_text="second"))
        recent, last = await store.replay(row.session_id, 0)
        assert recent == () and last is not None and last.text == "second"
        _, last = await store.replay(row.session_id, 1)
        assert last is not None and last.text == "second"

    async def test_a_refused_turns_reply_is_not_the_last_assistant_message(
        self, store: SessionStore
    ) -> None:
        """A client resending its history continues from the reply before a turn the
        upstream refused, which is not replayed (agents/history.py)."""
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row, "r1", assistant_text="first"))
        await store.append_turn(turn(row, "r2", **REFUSED))
        await store.append_turn(turn(row, "r3", **FAILED))
        # A client's history the upstream refused, its own replies too.
        history = (
            ChatMessage("user", "h"),
            ChatMessage("assistant", "x"),
            ChatMessage("user", "u"),
        )
        await store.append_turn(turn(row, "r4", inputs=history, **REFUSED))
        for user_turns in (0, 1, 2, 5):
            _, last = await store.replay(row.session_id, user_turns)
            assert last is not None and last.run_id == "r3", user_turns
        await store.append_turn(turn(row, "r5", assistant_text="second"))
        _, last = await store.replay(row.session_id, 0)
        assert last is not None and last.text == "second"
        stored = (await store.history(row.session_id, 20)).messages
        assert [m.refused for m in stored if m.role == "assistant"] == [
            False, True, False, False, True, False,
        ]  # fmt: skip
        assert stored[3].error_message == "upstream provider refused the request (HTTP 400)"

    async def test_a_run_id_used_again_is_a_turn_of_its_own(self, store: SessionStore) -> None:
        """A WebSocket idempotency key (the run id) sent again once forgotten: its refused
        turn hides neither the earlier turn of that run id nor the later one."""
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row, "k", assistant_text="first"))
        await store.append_turn(turn(row, "k", **REFUSED))
        _, last = await store.replay(row.session_id, 0)
        assert last is not None and last.text == "first"
        await store.append_turn(turn(row, "k", assistant_text="again"))
        recent, last = await store.replay(row.session_id, 5)
        assert last is not None and last.text == "again"
        assert [m.text for m in recent if m.role == "assistant"] == ["first", "", "again"]

    async def test_an_empty_transcript_has_no_last_assistant(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        assert await store.replay(row.session_id, 5) == ((), None)

    @pytest.mark.parametrize("sql", [SQL_RECENT_TURNS, SQL_LAST_ASSISTANT])
    async def test_replay_statements_use_an_index(self, store: SessionStore, sql: str) -> None:
        params: Any = {"sid": "sid", "skip": 49} if ":sid" in sql else ("sid",)
        with raw_db(store) as db:
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        searches = [step for step in plan if "messages" in step]
        assert searches
        assert all(step.startswith("SEARCH") and " USING " in step for step in searches), plan


class TestChainTo:
    """`chain_to`: the conversation a turn answered, for `previous_response_id` naming a
    turn that later ones followed (session.py), on both backends."""

    async def test_it_runs_from_the_last_context_start_through_the_turns_reply(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        row = await store.append_turn(turn(row, "r1", user_text="u1"))
        history = (ChatMessage("user", "h1"), ChatMessage("assistant", "a1"),
                   ChatMessage("user", "u2"))  # fmt: skip
        row = await store.append_turn(turn(row, "r2", inputs=history, context_start=True))
        row = await store.append_turn(turn(row, "r3", user_text="u3"))
        row = await store.append_turn(turn(row, "r4", user_text="u4"))
        sid = row.session_id
        chain = await store.chain_to(sid, "r3")
        assert chain is not None and chain.followed
        assert [(m.role, m.text) for m in chain.messages] == [
            ("user", "h1"), ("assistant", "a1"), ("user", "u2"),
            ("assistant", "[turn 1] hello there"), ("user", "u3"),
            ("assistant", "[turn 1] hello there"),
        ]  # fmt: skip
        first = await store.chain_to(sid, "r1")
        assert first is not None and first.followed
        assert [m.text for m in first.messages] == ["u1", "[turn 1] hello there"]
        window = await store.chain_to(sid, "r3", 2)
        assert window is not None and window.followed
        assert [m.text for m in window.messages] == [m.text for m in chain.messages[2:]]
        assert await store.chain_to(sid, "r3", 9) == chain  # not before the context start
        last = await store.chain_to(sid, "r4")
        assert last is not None and not last.followed
        assert last.messages[0].text == "h1" and last.messages[-2].text == "u4"
        assert await store.chain_to(sid, "r9") is None
        assert await store.chain_to("no-such-transcript", "r1") is None

    async def test_its_statements_use_an_index(self, store: SessionStore) -> None:
        with raw_db(store) as db:
            for sql, params in (
                (SQL_TURN_END, ("sid", "r1", "sid")),
                (SQL_CHAIN_TO, {"sid": "sid", "end": 9, "skip": 1}),
                (SQL_CHAIN_BOUNDS, {"sid": "sid", "run": "r1"}),
                (SQL_MESSAGES_IN, ("sid", 1, 9, 5)),
                (SQL_MESSAGES_IN_DESC, ("sid", 1, 9, 5)),
                (SQL_MESSAGE_SEQ, ("id", "sid")),
                (SQL_TURN_REPLY, ("sid", 1, 9)),
                (SQL_NEXT_ASSISTANT, ("sid", 1, 9)),
                (SQL_LAST_ASSISTANT_IN, ("sid", 1, 9)),
                (SQL_REFUSED_RUN_END, {"sid": "sid", "low": 1, "high": 9}),
                (SQL_LAST_ANSWER, ("sid", 1, 9)),
                (SQL_FIRST_DIFFERENCE, {"sid": "sid", "low": 1, "high": 9, "shift": 9}),
            ):
                plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                searches = [step for step in plan if "messages" in step]
                assert searches
                assert all(s.startswith("SEARCH") and " USING " in s for s in searches), plan

    async def test_the_end_of_a_run_of_refused_turns_is_found_in_one_statement(
        self, store: SessionStore
    ) -> None:
        """A client that sends a request too large again and again: the run of refused
        turns it leaves is stepped over, its end looked up in the indexes of answers and
        replies, no message built."""
        row, _ = await store.create(KEY, "main", 100)
        row = await store.append_turn(turn(row, "r0"))  # seqs 1, 2
        refused = f"{REFUSED_ERROR} (HTTP 413)"
        for number in range(1, 41):  # seqs 3 to 82
            row = await store.append_turn(
                turn(row, f"r{number}", stop_reason="error", error_message=refused)
            )
        failed = turn(row, "r41", stop_reason="error", error_message="upstream provider error")
        row = await store.append_turn(failed)  # seqs 83, 84
        sid = row.session_id
        assert await store.refused_run_end(sid, 3, 200) == 82  # the 40th refused reply
        assert await store.refused_run_end(sid, 3, 60) == 60  # up to `high`
        assert await store.refused_run_end(sid, 1, 200) is None  # answered
        assert await store.refused_run_end(sid, 83, 200) is None  # failed, not refused
        assert await store.last_answer(sid, 1, 82) == 2
        assert await store.last_answer(sid, 1, 200) == 84
        assert await store.last_answer(sid, 3, 82) is None
        with raw_db(store) as db:
            for sql, params in (
                (SQL_REFUSED_RUN_END, {"sid": sid, "low": 3, "high": 200}),
                (SQL_LAST_ANSWER, (sid, 1, 82)),
            ):
                plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                searches = [step for step in plan if "messages" in step]
                assert searches and all(
                    "messages_replies" in s or "messages_answers" in s for s in searches
                ), plan
                assert any("messages_answers" in s for s in searches), plan

    async def test_a_turns_reply_is_found_by_its_run(self, store: SessionStore) -> None:
        """Not by a walk back over the messages of every later turn: an old response of
        a long session is continued, or its input items paged, at the cost of a new one."""
        with raw_db(store) as db:
            for sql, params in (
                (SQL_TURN_END, ("sid", "r1", "sid")),
                (SQL_CHAIN_BOUNDS, {"sid": "sid", "run": "r1"}),
            ):
                plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                assert any("session_id=? AND run_id=?" in step for step in plan), plan

    async def test_messages_are_found_by_id_and_a_reply_keeps_its_layout(
        self, store: SessionStore
    ) -> None:
        """`messages_by_id`: in any transcript, any number of ids (more than a statement
        takes), unknown and odd ones found as nothing. A reply's layout (the order its
        parts began in) is kept when its content does not say it, and read back."""
        row, _ = await store.create(KEY, "main", 100)
        layout = (("text", 0), ("reasoning", 0), ("tool_call", 0), ("text", 1))
        row = await store.append_turn(turn(row, "r1", assistant_text="AB", layout=layout))
        row = await store.append_turn(turn(row, "r2", layout=(("text", 0),)))
        chain = await store.chain_to(row.session_id, "r2")
        assert chain is not None
        odd = [f"no-such-{n}" for n in range(MESSAGES_BY_ID_BATCH + 1)] + ["\x00", ""]
        found = await store.messages_by_id([*odd, *(m.id for m in chain.messages)])
        assert sorted(found, key=lambda m: m.seq) == list(chain.messages)
        assert await store.messages_by_id(odd) == ()
        assert [m.layout for m in chain.messages] == [(), layout, (), ()]

    async def test_it_is_read_a_stretch_at_a_time(self, store: SessionStore) -> None:
        """`chain_bounds`, `messages_in` and `message_seq`: the same conversation as
        `chain_to`, for a list of its items read page by page."""
        row, _ = await store.create(KEY, "main", 100)
        row = await store.append_turn(turn(row, "r1", user_text="u1"))
        history = (ChatMessage("user", "h1"), ChatMessage("assistant", "a1"),
                   ChatMessage("user", "u2"))  # fmt: skip
        row = await store.append_turn(turn(row, "r2", inputs=history, context_start=True))
        row = await store.append_turn(turn(row, "r3", user_text="u3"))
        sid = row.session_id
        assert await store.chain_bounds(sid, "r1") == (0, 2)
        assert await store.chain_bounds(sid, "r3") == (3, 8)
        assert await store.chain_bounds(sid, "r9") is None
        assert await store.chain_bounds("no-such-transcript", "r1") is None
        chain = await store.chain_to(sid, "r3")
        assert chain is not None
        assert await store.messages_in(sid, 3, 8, False, 10) == chain.messages
        assert await store.messages_in(sid, 3, 8, True, 2) == chain.messages[::-1][:2]
        assert await store.messages_in(sid, 4, 6, False, 2) == chain.messages[1:3]
        assert await store.messages_in(sid, 9, 20, False, 2) == ()
        assert [await store.message_seq(sid, m.id) for m in chain.messages] == [3, 4, 5, 6, 7, 8]
        assert await store.message_seq(sid, "no-such-message") is None
        assert await store.message_seq("no-such-transcript", chain.messages[0].id) is None
        # A message's turn's reply: the first message with a stop reason from it on (the
        # client's assistant message in the history has none).
        replies = [await store.turn_reply(sid, seq, 8) for seq in range(3, 9)]
        assert [r.seq if r is not None else None for r in replies] == [6, 6, 6, 6, 8, 8]
        assert await store.turn_reply(sid, 7, 7) is None
        assert await store.turn_reply("no-such-transcript", 1, 8) is None
        found = [await store.next_assistant(sid, seq, 8) for seq in range(3, 9)]
        assert [m.seq if m is not None else None for m in found] == [4, 4, 6, 6, 8, 8]
        assert await store.next_assistant(sid, 7, 7) is None


class TestMessagesAfter:
    """`messages_after` and the replay window kept from turn to turn (agents/history.py):
    what it gives must be what the store replays, on both backends."""

    async def test_it_gives_the_messages_after_a_seq_oldest_first(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        for i in range(3):
            await store.append_turn(turn(row, f"r{i}", user_text=f"u{i}"))
        after = await store.messages_after(row.session_id, 3)
        assert [(m.seq, m.role, m.text) for m in after] == [
            (4, "assistant", "[turn 1] hello there"), (5, "user", "u2"),
            (6, "assistant", "[turn 1] hello there"),
        ]  # fmt: skip
        assert await store.messages_after(row.session_id, 6) == ()
        assert await store.messages_after("no-such-transcript", 0) == ()
        assert await store.messages_after(row.session_id, 0) == (
            await store.recent_turns(row.session_id, 50)
        )

    @pytest.mark.parametrize("seed", range(12))
    async def test_a_kept_window_extended_turn_by_turn_is_what_the_store_replays(
        self, store: SessionStore, seed: int
    ) -> None:
        rng = random.Random(seed)
        row, _ = await store.create(KEY, "main", 100)
        limits = (1, 2, 3, 5)
        kept = {limit: SessionHistory.of(row.session_id, limit, ()) for limit in limits}
        for n in range(rng.randint(8, 16)):
            await store.append_turn(_random_turn(rng, row, n))
            for limit in limits:
                added = await store.messages_after(row.session_id, kept[limit].last_seq)
                kept[limit] = kept[limit].extended(added)
                replayed = await store.recent_turns(row.session_id, limit)
                assert kept[limit].stored == replayed, (seed, n, limit)
                fresh = SessionHistory.of(row.session_id, limit, replayed)
                assert kept[limit].messages == fresh.messages
                assert kept[limit].kept == fresh.kept


def _random_turn(rng: random.Random, row: SessionRow, n: int) -> TurnRecord:
    """A turn of one of the shapes a transcript holds: a user text, a client's new messages
    (tool results, several user messages), a client's whole history (a context start), an
    empty reply or one with a tool call."""
    fields: dict[str, Any] = {"user_text": f"u{n}", "assistant_text": f"a{n}"}
    match rng.randrange(6):
        case 1:
            fields["inputs"] = (
                ChatMessage("tool", f"result {n}", tool_call_id=f"c{n}", tool_name="get"),
            )
        case 2:
            fields["inputs"] = tuple(ChatMessage("user", f"u{n}.{i}") for i in range(3))
        case 3:
            fields["inputs"] = (ChatMessage("user", f"h{n}"), ChatMessage("assistant", "x"),
                                ChatMessage("user", f"u{n}"))  # fmt: skip
            fields["context_start"] = True
        case 4:
            fields["assistant_text"] = ""
            if rng.random() < 0.5:
                fields["tool_calls"] = (CALL,)
        case 5:
            fields.update(REFUSED)
            if rng.random() < 0.5:
                fields["inputs"] = (
                    ChatMessage("tool", f"result {n}", tool_call_id=f"c{n}", tool_name="get"),
                    ChatMessage("user", f"u{n}"),
                )
    return turn(row, f"r{n}", **fields)


# A turn the upstream refused as a bad request, and one that failed otherwise.
REFUSED: dict[str, Any] = {
    "assistant_text": "", "stop_reason": "error", "status": "error",
    "error_message": stored_error(UpstreamStatusError(400)),
}  # fmt: skip
FAILED: dict[str, Any] = {
    "assistant_text": "", "stop_reason": "error", "status": "error",
    "error_message": stored_error(UpstreamStatusError(500)),
}  # fmt: skip


class TestPrune:
    async def fill(self, store: SessionStore) -> None:
        now = 100 * DAY
        await store.create("agent:main:main", "main", 0)  # main: never pruned
        await store.create("agent:main:stale", "main", now - 31 * DAY)
        await store.create("agent:main:busy", "main", now - 40 * DAY)  # active run
        for i in range(4):
            await store.create(f"agent:main:r{i}", "main", now - 10 * DAY + i)

    async def test_warn_only_reports(self, store: SessionStore) -> None:
        await self.fill(store)
        maintenance = MaintenanceConfig(mode="warn", max_entries=4)
        found = await store.prune(maintenance, 100 * DAY, {"agent:main:busy"})
        # Stale first, then the oldest beyond 4 entries (7 rows - 1 stale = 6 > 4).
        assert [r.key for r in found] == ["agent:main:stale", "agent:main:r0", "agent:main:r1"]
        assert await store.count() == 7

    async def test_enforce_deletes_them_and_their_transcripts(self, store: SessionStore) -> None:
        await self.fill(store)
        stale = await store.get("agent:main:stale")
        assert stale is not None
        await store.append_turn(turn(stale, assistant_timestamp=stale.updated_at))
        maintenance = MaintenanceConfig(mode="enforce", max_entries=4)
        found = await store.prune(maintenance, 100 * DAY, {"agent:main:busy"})
        assert len(found) == 3
        assert sorted(r.key for r in (await store.list()).rows) == [
            "agent:main:busy", "agent:main:main", "agent:main:r2", "agent:main:r3"
        ]  # fmt: skip
        assert (await store.history(stale.session_id, 10)).total == 0

    async def test_archived_sessions_are_kept_and_not_counted(self, store: SessionStore) -> None:
        """As OpenClaw's maintenance: a session someone archived is put away, not stale, so
        neither `pruneAfter`, the stateless TTL nor `maxEntries` prunes it, and it does not
        count toward `maxEntries` (the byte limit still does: see TestPruneLimits)."""
        await self.fill(store)
        now = 100 * DAY
        for key, at, stateless in [
            ("agent:main:put-away", now - 40 * DAY, False),
            ("agent:main:openai:1e2d3c4b-0000-4000-8000-00000000000a", now - 2 * DAY, True),
            ("agent:main:shelf", now - 20 * DAY, False),
        ]:
            await store.create(key, "main", at - 1, stateless=stateless)
            assert await store.set_archived(key, True, at) is not None
        maintenance = MaintenanceConfig(mode="enforce", max_entries=4)
        found = await store.prune(maintenance, now, {"agent:main:busy"})
        # As without them (test_warn_only_reports): stale by age, then the oldest beyond 4.
        assert [r.key for r in found] == ["agent:main:stale", "agent:main:r0", "agent:main:r1"]
        assert [r.key for r in (await store.list(archived=True)).rows] == [
            "agent:main:openai:1e2d3c4b-0000-4000-8000-00000000000a",
            "agent:main:shelf",
            "agent:main:put-away",
        ]

    async def test_enforce_deletes_old_archived_transcripts(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 0)
        await store.append_turn(turn(row, assistant_timestamp=1))
        await store.reset(KEY, "main", 2)  # archived at 2
        recent = await store.reset(KEY, "main", 60 * DAY)  # archives the empty one at 60 d
        enforce = MaintenanceConfig(mode="enforce")
        assert await store.prune(enforce, 61 * DAY, {KEY}) == []
        assert (await store.history(row.session_id, 10)).total == 0
        with raw_db(store) as db:
            left = [r[0] for r in db.execute("SELECT session_id FROM transcripts")]
        assert len(left) == 2 and recent.session_id in left

    async def test_a_backlog_of_archived_transcripts_goes_a_batch_a_transaction(
        self, tmp_path: Path
    ) -> None:
        """SQLite's: one job holds the store thread, and the turns queued behind it wait.
        A backlog past `pruneAfter` (it was lowered, or the gateway was down) in one
        transaction took seconds; in batches of `limit` turns get in between."""
        async with SessionStore(tmp_path) as store:
            archived = []
            for i in range(5):
                row, _ = await store.create(f"{KEY}-{i}", "main", 0)
                await store.append_turn(turn(row))
                await store.delete(row.key, 2, delete_transcript=False)  # archived at 2
                archived.append(row.session_id)
            before = store.commits
            enforce = MaintenanceConfig(mode="enforce")
            assert await store.prune(enforce, 61 * DAY, limit=2) == []
            assert store.commits - before == 3  # 2, 2, then 1: the last batch
            assert [(await store.history(sid, 10)).total for sid in archived] == [0] * 5


HOUR = 3600 * 1000
STATELESS_KEY = "agent:main:openai:0f8e2c8e-6a5b-4c1e-9d3f-2b7a1c0e4d5f"


class TestStatelessSessions:
    async def test_older_than_the_ttl_are_pruned_named_ones_of_that_age_are_not(
        self, store: SessionStore
    ) -> None:
        now = 100 * DAY
        await store.create(STATELESS_KEY, "main", now - 25 * HOUR, stateless=True)
        await store.create("agent:main:openai:fresh", "main", now - HOUR, stateless=True)
        await store.create("agent:main:openai-user:bob", "main", now - 25 * HOUR)
        # Named by a client in the shape of a stateless key: named all the same.
        await store.create("agent:main:openai:1e2d3c4b-0000-4000-8000-000000000000", "main",
                           now - 25 * HOUR)  # fmt: skip
        found = await store.prune(MaintenanceConfig(mode="enforce"), now)
        assert [r.key for r in found] == [STATELESS_KEY]
        assert await store.get(STATELESS_KEY) is None
        assert await store.count() == 3

    async def test_a_named_turn_on_the_key_makes_it_named(self, store: SessionStore) -> None:
        row, _ = await store.create(STATELESS_KEY, "main", 0, stateless=True)
        await store.append_turn(turn(row, stateless=True))
        assert await store.is_stateless(STATELESS_KEY) is True
        await store.append_turn(turn(row, "r2"))
        assert await store.is_stateless(STATELESS_KEY) is False

    async def test_a_turn_that_creates_the_row_sets_the_mark(self, store: SessionStore) -> None:
        row = SessionRow(STATELESS_KEY, "main", "sid-1", None, 0, 0)
        await store.append_turn(turn(row, stateless=True))
        assert await store.is_stateless(STATELESS_KEY) is True

    async def test_a_label_makes_it_named(self, store: SessionStore) -> None:
        await store.create(STATELESS_KEY, "main", 0, stateless=True)
        await store.patch_label(STATELESS_KEY, "main", "keep me", 1)
        assert await store.is_stateless(STATELESS_KEY) is False

    async def test_migrating_an_older_store_marks_the_keys_the_gateway_made(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "state").mkdir()
        with sqlite3.connect(tmp_path / "state" / "sessions.sqlite3") as db:
            MIGRATIONS[0](db)
            db.execute("PRAGMA user_version = 1")
            for key in (STATELESS_KEY, "agent:main:openai:not-a-uuid", "agent:main:named"):
                db.execute(
                    "INSERT INTO sessions (key, agent_id, session_id, created_at, updated_at)"
                    " VALUES (?, 'main', ?, 0, 0)",
                    (key, f"sid-{key}"),
                )
        async with SessionStore(tmp_path / "state") as store:
            assert [
                await store.is_stateless(key)
                for key in (STATELESS_KEY, "agent:main:openai:not-a-uuid", "agent:main:named")
            ] == [True, False, False]
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION


class TestPruneLimits:
    async def fill(self, store: SessionStore, sessions: int, text: str = "hi") -> list[str]:
        """`sessions` sessions, oldest first, one turn each."""
        keys = [f"agent:main:s{i:02d}" for i in range(sessions)]
        for i, key in enumerate(keys):
            row, _ = await store.create(key, "main", DAY + i)
            await store.append_turn(
                turn(row, user_text=text, assistant_text=text, user_timestamp=DAY + i,
                     assistant_timestamp=DAY + i)
            )  # fmt: skip
        return keys

    @staticmethod
    async def enforce_one_megabyte(store: SessionStore, keys: list[str]) -> None:
        """A 1 MB limit enforced down to its 800 KB high water: the oldest sessions go first,
        no more than that takes."""
        maintenance = MaintenanceConfig(
            mode="enforce", max_disk_bytes=1_000_000, high_water_bytes=800_000
        )
        found = [r.key for r in await store.prune(maintenance, 2 * DAY)]
        assert found == keys[: len(found)]
        assert 800_000 - 200_000 < await store.used_bytes() <= 800_000

    async def test_enforce_brings_the_store_under_the_byte_limit(self, store: SessionStore) -> None:
        keys = await self.fill(store, 20, "x" * 50_000)  # some 100 KB a session
        await store.create("agent:main:main", "main", 0)  # the oldest, but main
        assert await store.used_bytes() > 2_000_000
        await self.enforce_one_megabyte(store, keys)
        assert await store.get("agent:main:main") is not None

    async def test_the_limit_holds_whatever_the_indexes_hold(self, store: SessionStore) -> None:
        """What a session's rows take is estimated first, but the pages the store holds are
        what the limit is on. One more index (a later schema's) took a page the estimate did
        not know of: pruning stopped where its estimate said, 2,816 bytes over."""
        keys = await self.fill(store, 20, "x" * 50_000)
        with raw_db(store) as db:
            db.execute("CREATE INDEX messages_extra ON messages(session_id, role, seq)")
        assert await store.used_bytes() > 2_000_000
        await self.enforce_one_megabyte(store, keys)

    async def test_archived_sessions_go_under_the_byte_limit_too(self, store: SessionStore) -> None:
        """Kept from `pruneAfter` and `maxEntries`, not from the operator's byte limit: else
        they would hold the store over it while every other session went."""
        keys = await self.fill(store, 20, "x" * 50_000)
        for i, key in enumerate(keys):
            assert await store.set_archived(key, True, DAY + i) is not None
        await self.enforce_one_megabyte(store, keys)

    async def test_stored_responses_count_toward_what_pruning_frees(
        self, store: SessionStore
    ) -> None:
        """A `/v1/responses` turn keeps its answer twice (the transcript and the response
        object): a store that counted only the transcript pruned twice the sessions it needed
        (SQLite), or did not see it was over its limit (PostgreSQL)."""
        keys = await self.fill(store, 20, "x" * 25_000)
        for key in keys:
            row = await store.get(key)
            assert row is not None
            body = '{"output":"' + "x" * 50_000 + '"}'
            await store.put_response(
                StoredResponse(f"resp_{key}", row.session_id, key, "main", DAY, body)
            )
        assert await store.used_bytes() > 1_000_000
        await self.enforce_one_megabyte(store, keys)

    async def test_archived_transcripts_go_before_any_session_oldest_first(
        self, store: SessionStore
    ) -> None:
        """A reset keeps the old transcript, archived, until `pruneAfter`: the main session's
        (never pruned) held the store over its limit while every other session was pruned
        for it, pass after pass."""
        keys = await self.fill(store, 20)
        row, _ = await store.create("agent:main:main", "main", DAY)
        archived = []
        for i in range(20):
            row = await store.append_turn(
                turn(row, run_id=f"m{i}", user_text="x" * 50_000, assistant_text="x" * 50_000,
                     user_timestamp=DAY + i, assistant_timestamp=DAY + i)
            )  # fmt: skip
            archived.append(row.session_id)
            row = await store.reset(row.key, "main", DAY + i)
        assert await store.used_bytes() > 2_000_000
        maintenance = MaintenanceConfig(
            mode="enforce", max_disk_bytes=1_000_000, high_water_bytes=800_000
        )
        assert await store.prune(maintenance, 2 * DAY) == []
        assert sorted(r.key for r in (await store.list()).rows) == sorted(
            [*keys, "agent:main:main"]
        )
        assert 800_000 - 200_000 < await store.used_bytes() <= 800_000
        left = [(await store.history(sid, 10)).total for sid in archived]
        gone = left.count(0)
        assert left == [0] * gone + [2] * (20 - gone)

    async def test_under_the_byte_limit_nothing_goes(self, store: SessionStore) -> None:
        await self.fill(store, 20, "x" * 50_000)
        maintenance = MaintenanceConfig(mode="enforce", max_disk_bytes=10_000_000)
        assert await store.prune(maintenance, 2 * DAY) == []

    async def test_a_zero_byte_limit_is_no_limit(self, store: SessionStore) -> None:
        await self.fill(store, 20, "x" * 50_000)
        maintenance = MaintenanceConfig(mode="enforce", max_disk_bytes=0, high_water_bytes=0)
        assert await store.prune(maintenance, 2 * DAY) == []
        assert await store.count() == 20

    async def test_enforce_keeps_max_entries(self, store: SessionStore) -> None:
        keys = await self.fill(store, 8)
        maintenance = MaintenanceConfig(mode="enforce", max_entries=5)
        assert [r.key for r in await store.prune(maintenance, 2 * DAY)] == keys[:3]
        assert sorted(r.key for r in (await store.list()).rows) == keys[3:]

    async def test_one_step_prunes_at_most_limit_sessions(self, store: SessionStore) -> None:
        keys = await self.fill(store, 5)
        maintenance = MaintenanceConfig(mode="enforce", prune_after_ms=HOUR)
        assert [r.key for r in await store.prune(maintenance, 2 * DAY, limit=2)] == keys[:2]
        assert await store.count() == 3


class TestCommitTiming:
    async def test_each_write_transaction_reports_its_duration_and_reads_do_not(
        self, timed_store: tuple[SessionStore, list[float]]
    ) -> None:
        store, durations = timed_store
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row))
        await store.get(KEY)
        await store.history(row.session_id, 10)
        await store.usage_by_day(0)
        assert len(durations) == 2
        assert all(0 < seconds < 10 for seconds in durations)

    async def test_a_failed_write_reports_nothing(
        self, timed_store: tuple[SessionStore, list[float]]
    ) -> None:
        store, durations = timed_store
        with pytest.raises(StoreError):
            await store.put_response(StoredResponse("resp_1", "nope", "k", "main", 5, "{}"))
        assert durations == []

    @pytest.mark.parametrize("backend", BACKENDS)
    async def test_a_failing_commit_callback_does_not_fail_the_committed_writes(
        self, request: pytest.FixtureRequest, tmp_path: Path, backend: str
    ) -> None:
        """The callback (the gateway's metrics) runs after the COMMIT: its error reached the
        writers (on SQLite it ended the store thread and every call waited forever), who
        were told a write had failed that was in the database."""
        calls: list[float] = []

        def broken_metrics(seconds: float) -> None:
            calls.append(seconds)
            raise ZeroDivisionError("metrics")

        store: Any = (
            PostgresSessionStore(request.getfixturevalue("pg_url"), on_commit=broken_metrics)
            if backend == "postgres"
            else SessionStore(tmp_path / "state", on_commit=broken_metrics)
        )
        await store.open()
        try:
            with structlog.testing.capture_logs() as logs:
                row, _ = await asyncio.wait_for(store.create(KEY, "main", 100), 5)
                await asyncio.wait_for(store.append_turn(turn(row, "r1")), 5)
            stored = await asyncio.wait_for(store.get(KEY), 5)
            assert stored is not None
            assert (await store.history(row.session_id, 10)).total == 2
            assert len(calls) == 2
            failures = [entry for entry in logs if entry["event"] == "on_commit_failed"]
            assert len(failures) == 1  # once: not a line for every commit
            assert failures[0]["exc_info"]
        finally:
            await asyncio.wait_for(store.aclose(), 5)


class TestUsageBySession:
    """`sessions.usage`'s rows: a window's messages by transcript, day (in an offset) and
    model."""

    async def test_rows_by_transcript_day_and_model_in_the_callers_offset(
        self, store: SessionStore
    ) -> None:
        main, _ = await store.create(KEY, "main", 1)
        ops, _ = await store.create("agent:ops:s1", "ops", 1)
        # A turn at 23:00 UTC on 1970-01-01 is on 1970-01-02 at UTC+2.
        late = DAY - 3600_000
        await store.append_turn(turn(main, "r1", user_timestamp=late, assistant_timestamp=late + 9))
        await store.append_turn(
            turn(ops, "r2", user_timestamp=5, assistant_timestamp=7, stop_reason="error")
        )
        rows = await store.usage_by_session(0, 2 * DAY, 2 * 3600_000)
        assert sorted(rows, key=lambda r: (r.key, r.provider or "")) == [
            SessionUsage(KEY, "main", main.session_id, 1, None, None, 0, 0, 1, 0, 0, 0, late, late),
            SessionUsage(
                KEY, "main", main.session_id, 1, "echo", "echo", 2, 4, 0, 1, 0, 0, late + 9,
                late + 9,
            ),
            SessionUsage(
                "agent:ops:s1", "ops", ops.session_id, 0, None, None, 0, 0, 1, 0, 0, 0, 5, 5
            ),
            SessionUsage(
                "agent:ops:s1", "ops", ops.session_id, 0, "echo", "echo", 2, 4, 0, 1, 0, 1, 7, 7
            ),
        ]  # fmt: skip
        # At UTC-12 the early turn is on the day before the epoch's.
        west = await store.usage_by_session(0, 2 * DAY, -12 * 3600_000, key="agent:ops:s1")
        assert {r.day for r in west} == {-1}

    async def test_each_message_s_day_at_the_offset_from_its_shift(
        self, store: SessionStore
    ) -> None:
        """A time zone's changes of offset (`shifts`): turns at 23:00 UTC on the epoch's first
        two days, UTC+0 until midday on the second, UTC+2 from then on."""
        main, _ = await store.create(KEY, "main", 1)
        for n, at in enumerate((DAY - 3600_000, 2 * DAY - 3600_000)):
            await store.append_turn(turn(main, f"r{n}", user_timestamp=at, assistant_timestamp=at))
        shifts = ((DAY + DAY // 2, 2 * 3600_000),)
        rows = await store.usage_by_session(0, 3 * DAY, 0, shifts=shifts)
        assert sorted({r.day for r in rows}) == [0, 2]
        assert sorted({r.day for r in await store.usage_by_session(0, 3 * DAY, 0)}) == [0, 1]

    async def test_one_agent_or_key_within_the_window(self, store: SessionStore) -> None:
        main, _ = await store.create(KEY, "main", 1)
        other, _ = await store.create("agent:main:s2", "main", 1)
        ops, _ = await store.create("agent:ops:s1", "ops", 1)
        await store.append_turn(turn(main, "r1", user_timestamp=DAY, assistant_timestamp=DAY))
        await store.append_turn(turn(other, "r2"))
        await store.append_turn(turn(ops, "r3", user_timestamp=DAY, assistant_timestamp=DAY))
        rows = await store.usage_by_session(DAY, 2 * DAY, 0, agent_id="MAIN")
        assert {(r.key, r.day) for r in rows} == {(KEY, 1)}
        rows = await store.usage_by_session(0, 2 * DAY, 0, key="agent:main:s2")
        assert {r.key for r in rows} == {"agent:main:s2"}
        assert await store.usage_by_session(0, DAY - 1, 0, agent_id="ops") == []

    async def test_a_deleted_session_no_longer_counts_and_a_reset_one_does(
        self, store: SessionStore
    ) -> None:
        kept, _ = await store.create(KEY, "main", 1)
        gone, _ = await store.create("agent:main:s2", "main", 1)
        await store.append_turn(turn(kept))
        await store.append_turn(turn(gone))
        await store.reset(kept.key, "main", 2000)
        await store.delete(gone.key, 2000)
        rows = await store.usage_by_session(0, DAY, 0)
        assert {(r.key, r.session_id) for r in rows} == {(KEY, kept.session_id)}

    async def test_a_sum_beyond_64_bits_is_a_number_not_an_error(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 1)
        await store.append_turn(turn(row, "r1", input_tokens=2**62))
        await store.append_turn(turn(row, "r2", input_tokens=2**62))
        rows = await store.usage_by_session(0, DAY, 0)
        assert [r.input_tokens for r in rows if r.model] == [2**63]


class TestUsagePoints:
    async def test_the_newest_assistant_messages_tokens_oldest_first(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 1)
        for n in range(1, 4):
            await store.append_turn(
                turn(row, f"r{n}", assistant_timestamp=n * 100, input_tokens=n, output_tokens=9)
            )
        assert await store.usage_points(row.session_id, 2) == [
            UsagePoint(200, 2, 9),
            UsagePoint(300, 3, 9),
        ]
        assert len(await store.usage_points(row.session_id, 10)) == 3
        assert await store.usage_points("no-such-session", 10) == []


class TestUsageByDay:
    """The WS `usage` method's totals: assistant messages by agent and UTC day."""

    async def test_totals_by_agent_and_utc_day_oldest_first(self, store: SessionStore) -> None:
        main, _ = await store.create(KEY, "main", 1)
        ops, _ = await store.create("agent:ops:s1", "ops", 1)
        # 23:59:59.999 on 1970-01-01 and the first millisecond of the next day, in UTC.
        await store.append_turn(turn(main, "r1", assistant_timestamp=DAY - 1))
        await store.append_turn(
            turn(main, "r2", assistant_timestamp=DAY, input_tokens=10, output_tokens=20)
        )
        await store.append_turn(turn(main, "r3", assistant_timestamp=DAY + 5, output_tokens=1))
        await store.append_turn(turn(ops, "r4", assistant_timestamp=DAY + 7))
        assert await store.usage_by_day(0) == [
            DailyUsage("1970-01-01", "main", 2, 4, 1),
            DailyUsage("1970-01-02", "main", 12, 21, 2),
            DailyUsage("1970-01-02", "ops", 2, 4, 1),
        ]

    async def test_one_agent_since_a_time(self, store: SessionStore) -> None:
        main, _ = await store.create(KEY, "main", 1)
        ops, _ = await store.create("agent:ops:s1", "ops", 1)
        await store.append_turn(turn(main, "r1", assistant_timestamp=DAY - 1))
        await store.append_turn(turn(main, "r2", assistant_timestamp=DAY))
        await store.append_turn(turn(ops, "r3", assistant_timestamp=DAY))
        assert await store.usage_by_day(DAY, "MAIN") == [DailyUsage("1970-01-02", "main", 2, 4, 1)]

    async def test_a_sum_beyond_64_bits_is_a_number_not_an_error(self, store: SessionStore) -> None:
        # SQLite's SUM raises on an integer overflow; the counts themselves fit in 64 bits.
        row, _ = await store.create(KEY, "main", 1)
        await store.append_turn(turn(row, "r1", input_tokens=2**62))
        await store.append_turn(turn(row, "r2", input_tokens=2**62))
        assert await store.usage_by_day(0) == [DailyUsage("1970-01-01", "main", 2**63, 8, 2)]

    async def test_a_deleted_session_no_longer_counts_and_a_reset_one_does(
        self, store: SessionStore
    ) -> None:
        kept, _ = await store.create(KEY, "main", 1)
        gone, _ = await store.create("agent:main:s2", "main", 1)
        await store.append_turn(turn(kept))
        await store.append_turn(turn(gone))
        await store.reset(kept.key, "main", 2000)
        await store.delete(gone.key, 2000)
        assert await store.usage_by_day(0) == [DailyUsage("1970-01-01", "main", 2, 4, 1)]


class TestResponses:
    """Schema 4: `/v1/responses` objects, children of their transcript."""

    async def test_a_v3_store_gains_the_table_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / DB_FILENAME
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("BEGIN")
            for migrate in MIGRATIONS[:3]:
                migrate(db)
            db.execute("PRAGMA user_version = 3")
            db.execute("COMMIT")
        async with SessionStore(tmp_path) as store:
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION
            assert await store.get_response("resp_x") is None

    async def test_put_get_delete(self, store: SessionStore) -> None:
        row, _ = await store.create("agent:main:r", "main", 1)
        kept = StoredResponse("resp_1", row.session_id, row.key, "main", 5, '{"id":"resp_1"}')
        await store.put_response(kept)
        assert await store.get_response("resp_1") == kept
        assert await store.delete_response("resp_1") is True
        assert await store.get_response("resp_1") is None
        assert await store.delete_response("resp_1") is False

    async def test_output_ids_are_read_without_the_body(self, store: SessionStore) -> None:
        """Kept beside the body (schema 10); a response stored without them (before) has
        them read from its body."""
        row, _ = await store.create("agent:main:r", "main", 1)
        body = '{"id":"resp_2","output":[{"id":"msg_a"},{"id":"fc_a_0"}]}'
        kept = ("msg_b", "fc_b_0")
        await store.put_response(
            StoredResponse("resp_1", row.session_id, row.key, "main", 5, "{}", kept)
        )
        await store.put_response(StoredResponse("resp_2", row.session_id, row.key, "main", 5, body))
        assert await store.response_output_ids("resp_1") == ResponseOutputIds(
            row.session_id, frozenset(kept)
        )
        assert await store.response_output_ids("resp_2") == ResponseOutputIds(
            row.session_id, frozenset({"msg_a", "fc_a_0"})
        )
        assert await store.response_output_ids("resp_x") is None

    async def test_deleting_the_session_deletes_its_responses(self, store: SessionStore) -> None:
        row, _ = await store.create("agent:main:r", "main", 1)
        await store.put_response(StoredResponse("resp_1", row.session_id, row.key, "main", 5, "{}"))
        await store.delete(row.key, 2)
        assert await store.get_response("resp_1") is None

    async def test_a_response_of_an_unknown_transcript_is_refused(
        self, store: SessionStore
    ) -> None:
        with pytest.raises(StoreError):
            await store.put_response(StoredResponse("resp_1", "nope", "k", "main", 5, "{}"))


class TestPinned:
    """Schema 6: pinned sessions (OpenClaw's `sessions.patch {pinned}`)."""

    async def test_pin_keeps_the_first_time_unpin_clears_archive_unpins(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        pinned = await store.set_pinned(KEY, "main", True, 200)
        assert pinned == attrs.evolve(row, pinned_at=200)  # not an update of the session
        assert (await store.set_pinned(KEY, "main", True, 300)).pinned_at == 200
        assert (await store.set_pinned(KEY, "main", False, 400)).pinned_at is None
        await store.set_pinned(KEY, "main", True, 500)
        archived = await store.set_archived(KEY, True, 600)
        assert archived is not None and archived.pinned_at is None
        with pytest.raises(SessionArchivedPin):
            await store.set_pinned(KEY, "main", True, 700)
        assert await store.get(KEY) == archived
        assert (await store.set_pinned(KEY, "main", False, 700)).pinned_at is None  # unpin: ok
        made = await store.set_pinned("agent:main:new", "main", True, 800)  # as a label: made
        assert (made.created_at, made.pinned_at) == (800, 800)

    async def test_a_patch_is_one_write_a_refused_part_leaves_nothing_written(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        archived = await store.set_archived(KEY, True, 200)
        with pytest.raises(SessionArchivedPin):
            await store.patch(KEY, "main", 300, label=("renamed",), pinned=True)
        assert await store.get(KEY) == archived
        with pytest.raises(SessionChanged):
            await store.patch(KEY, "main", 300, label=("renamed",), session_id="other")
        assert await store.get(KEY) == archived
        both = await store.patch(
            KEY, "main", 400, label=("renamed",), archived=False, pinned=True,
            session_id=row.session_id,
        )  # fmt: skip
        assert both is not None
        assert (both.label, both.archived_at, both.pinned_at) == ("renamed", None, 400)
        assert await store.patch("agent:main:none", "main", 500, archived=True) is None
        assert await store.get("agent:main:none") is None

    async def test_the_list_shows_the_pinned_first_the_last_pinned_first(
        self, store: SessionStore
    ) -> None:
        for i in range(5):
            await store.create(f"agent:main:s{i}", "main", 100 + i)
        await store.set_pinned("agent:main:s1", "main", True, 200)
        await store.set_pinned("agent:main:s3", "main", True, 300)

        async def keys(**filters: Any) -> list[str]:
            return [r.key[len("agent:main:") :] for r in (await store.list(**filters)).rows]

        assert await keys() == ["s3", "s1", "s4", "s2", "s0"]
        assert await keys(limit=3) == ["s3", "s1", "s4"]
        assert await keys(limit=1) == ["s3"]
        assert await keys(search="s1") == ["s1"]
        assert (await store.list(limit=2)).total_count == 5

    async def test_maintenance_keeps_the_pinned_but_counts_them(self, store: SessionStore) -> None:
        """As OpenClaw's: a pinned session is neither stale nor beyond `maxEntries`, but it
        counts toward them."""
        now = 100 * DAY
        await store.create("agent:main:old", "main", now - 40 * DAY)
        await store.set_pinned("agent:main:old", "main", True, now - 40 * DAY)
        for i in range(3):
            await store.create(f"agent:main:r{i}", "main", now - 10 * DAY + i)
        maintenance = MaintenanceConfig(mode="enforce", max_entries=2)
        found = await store.prune(maintenance, now)
        assert [r.key for r in found] == ["agent:main:r0", "agent:main:r1"]
        assert sorted(r.key for r in (await store.list()).rows) == [
            "agent:main:old", "agent:main:r2"
        ]  # fmt: skip

    async def test_a_v5_store_gains_the_column_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / DB_FILENAME
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("BEGIN")
            for migrate in MIGRATIONS[:5]:
                migrate(db)
            db.execute("PRAGMA user_version = 5")
            db.execute("COMMIT")
            db.execute(
                "INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at,"
                " archived_at, archive_reason) VALUES (?, 'main', 'sid', 'old', 1, 2, 2, 'manual')",
                (KEY,),
            )
        async with SessionStore(tmp_path) as store:
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION == 10
            kept = SessionRow(
                KEY, "main", "sid", "old", 1, 2, archived_at=2, archive_reason="manual"
            )
            assert await store.get(KEY) == kept
            restored = await store.set_archived(KEY, False, 3)
            assert restored is not None
            assert (await store.set_pinned(KEY, "main", True, 4)).pinned_at == 4
        with sqlite3.connect(path) as db:
            plan = db.execute(
                "EXPLAIN QUERY PLAN SELECT key FROM sessions WHERE pinned_at IS NOT NULL"
            ).fetchall()
        assert "sessions_pinned" in str(plan)  # the pinned ones found without a scan

    async def test_a_v6_store_gains_the_index_of_runs_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / DB_FILENAME
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("BEGIN")
            for migrate in MIGRATIONS[:6]:
                migrate(db)
            db.execute("PRAGMA user_version = 6")
            db.execute("COMMIT")
        async with SessionStore(tmp_path) as store:
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION == 10
        with sqlite3.connect(path) as db:
            sql = f"EXPLAIN QUERY PLAN {SQL_CHAIN_BOUNDS}"
            plan = db.execute(sql, {"sid": "sid", "run": "r1"}).fetchall()
        assert "messages_by_run" in str(plan)

    async def test_a_v7_store_finds_a_turns_reply_and_next_assistant_by_index(
        self, tmp_path: Path
    ) -> None:
        """A turn's reply and the next assistant message (an input item page's segment
        ends) are lookups, not a step along every message of a client's long history."""
        path = tmp_path / DB_FILENAME
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("BEGIN")
            for migrate in MIGRATIONS[:7]:
                migrate(db)
            db.execute("PRAGMA user_version = 7")
            db.execute(
                "INSERT INTO transcripts (session_id, key, agent_id, created_at)"
                " VALUES ('sid', ?, 'main', 1)",
                (KEY,),
            )
            rows = [("user", None)] * 50 + [("assistant", None), ("user", None)]
            rows += [("assistant", "stop")]
            for seq, (role, stop) in enumerate(rows, 1):
                db.execute(
                    "INSERT INTO messages (id, session_id, seq, role, content, timestamp,"
                    " run_id, stop_reason) VALUES (?, 'sid', ?, ?, '\"x\"', 1, 'r1', ?)",
                    (f"m{seq}", seq, role, stop),
                )
            db.execute("COMMIT")
        async with SessionStore(tmp_path) as store:
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION == 10
            reply = await store.turn_reply("sid", 1, 99)
            assert reply is not None and reply.seq == 53
            assistant = await store.next_assistant("sid", 1, 99)
            assert assistant is not None and assistant.seq == 51
            assert await store.next_assistant("sid", 54, 99) is None
        with sqlite3.connect(path) as db:
            for sql, index in (
                (SQL_TURN_REPLY, "messages_replies"),
                (SQL_NEXT_ASSISTANT, "messages_assistants"),
            ):
                plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", ("sid", 1, 99))]
                assert plan == [
                    f"SEARCH messages USING INDEX {index} (session_id=? AND seq>? AND seq<?)"
                ], plan

    async def test_a_v8_store_finds_the_end_of_a_run_of_refused_turns_by_index(
        self, tmp_path: Path
    ) -> None:
        """A client that sent a request too large again and again: the run of refused turns
        it left, and the answer before it, are a lookup in the index of answers, not a step
        along the index of replies, one entry a refused turn."""
        path = tmp_path / DB_FILENAME
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("BEGIN")
            for migrate in MIGRATIONS[:8]:
                migrate(db)
            db.execute("PRAGMA user_version = 8")
            db.execute(
                "INSERT INTO transcripts (session_id, key, agent_id, created_at)"
                " VALUES ('sid', ?, 'main', 1)",
                (KEY,),
            )
            # Turn 0 answered, turns 1 to 40 refused, turn 41 answered.
            for seq in range(1, 85):
                stop = None if seq % 2 else ("stop" if seq in (2, 84) else "error")
                error = f"{REFUSED_ERROR} (HTTP 413)" if stop == "error" else None
                db.execute(
                    "INSERT INTO messages (id, session_id, seq, role, content, timestamp,"
                    " run_id, stop_reason, error_message)"
                    " VALUES (?, 'sid', ?, ?, '\"x\"', 1, ?, ?, ?)",
                    (f"m{seq}", seq, "user" if seq % 2 else "assistant", f"r{(seq - 1) // 2}",
                     stop, error),
                )  # fmt: skip
            db.execute("COMMIT")
        async with SessionStore(tmp_path) as store:
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION == 10
            assert await store.refused_run_end("sid", 3, 200) == 82
            assert await store.refused_run_end("sid", 83, 200) is None
            assert await store.last_answer("sid", 1, 82) == 2
        answers = "SEARCH messages USING INDEX messages_answers (session_id=? AND seq>? AND seq<?)"
        with sqlite3.connect(path) as db:
            for sql, params in (
                (SQL_REFUSED_RUN_END, {"sid": "sid", "low": 3, "high": 200}),
                (SQL_LAST_ANSWER, ("sid", 1, 82)),
            ):
                plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                assert answers in plan, plan


class TestArchived:
    """Schema 5: archived sessions (OpenClaw's `sessions.patch {archived}`)."""

    async def test_archive_keeps_the_first_time_and_restore_clears(
        self, store: SessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        archived = await store.set_archived(KEY, True, 200)
        assert archived == attrs.evolve(row, updated_at=200, archived_at=200,
                                        archive_reason="manual")  # fmt: skip
        again = await store.set_archived(KEY, True, 300)
        assert again is not None and (again.archived_at, again.archive_reason) == (200, "manual")
        assert await store.get(KEY) == again
        restored = await store.set_archived(KEY, False, 400)
        assert restored == attrs.evolve(row, updated_at=400)
        assert await store.set_archived("agent:main:nope", True, 500) is None
        assert await store.get("agent:main:nope") is None

    async def test_a_turn_keeps_the_archive(self, store: SessionStore) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.set_archived(KEY, True, 200)
        after = await store.append_turn(turn(row))
        assert (after.archived_at, after.archive_reason) == (200, "manual")

    async def test_list_hides_shows_or_mixes_the_archived(self, store: SessionStore) -> None:
        for i in range(3):
            await store.create(f"agent:main:s{i}", "main", 100 + i)
        await store.set_archived("agent:main:s1", True, 50)  # older than the others now

        async def keys(**filters: Any) -> list[str]:
            page = await store.list(**filters)
            assert page.total_count == len(page.rows)
            return [r.key for r in page.rows]

        assert await keys(archived=False) == ["agent:main:s2", "agent:main:s0"]
        assert await keys(archived=True) == ["agent:main:s1"]
        assert await keys() == ["agent:main:s2", "agent:main:s0", "agent:main:s1"]
        assert await keys(archived=True, search="s0") == []

    async def test_a_guarded_patch_changes_only_the_session_it_names(
        self, store: SessionStore
    ) -> None:
        """`session_id`: checked in the write itself, so a reset (or a delete) that came
        after the caller read the session is seen, whatever process made it."""
        read, _ = await store.create(KEY, "main", 100, label="before")
        reset = await store.reset(KEY, "main", 200)
        with pytest.raises(SessionChanged):
            await store.patch_label(KEY, "main", "after", 300, session_id=read.session_id)
        with pytest.raises(SessionChanged):
            await store.set_archived(KEY, True, 300, session_id=read.session_id)
        with pytest.raises(SessionChanged):
            await store.set_pinned(KEY, "main", True, 300, session_id=read.session_id)
        assert await store.get(KEY) == reset  # untouched
        labelled = await store.patch_label(KEY, "main", "after", 400, session_id=reset.session_id)
        assert labelled.label == "after"
        archived = await store.set_archived(KEY, True, 500, session_id=reset.session_id)
        assert archived is not None and archived.archived_at == 500
        ghost = "agent:main:ghost"
        with pytest.raises(SessionChanged):  # not made by a guarded label either
            await store.patch_label(ghost, "main", "x", 600, session_id="s")
        assert await store.set_archived(ghost, True, 600, session_id="s") is None
        assert await store.get(ghost) is None

    async def test_a_v4_store_gains_the_columns_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / DB_FILENAME
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("BEGIN")
            for migrate in MIGRATIONS[:4]:
                migrate(db)
            db.execute("PRAGMA user_version = 4")
            db.execute("COMMIT")
            db.execute(
                "INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at)"
                " VALUES (?, 'main', 'sid', 'old', 1, 2)",
                (KEY,),
            )
        async with SessionStore(tmp_path) as store:
            assert (await store.pragmas())["user_version"] == SCHEMA_VERSION == 10
            assert await store.get(KEY) == SessionRow(KEY, "main", "sid", "old", 1, 2)
            assert [r.key for r in (await store.list(archived=False)).rows] == [KEY]
            archived = await store.set_archived(KEY, True, 3)
            assert archived is not None and archived.archived_at == 3
