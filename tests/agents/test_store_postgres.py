"""What only the PostgreSQL store has: shared schema, cross-process turn locks, its failures.

The contract both stores keep is tests/agents/test_store.py, run against both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from agents.config import MaintenanceConfig
from agents.errors import REFUSED_ERROR, SessionChanged, StoreError, StoreUnavailable
from agents.store import SessionPage, SessionRow
from agents.store_postgres import (
    LOCK_CLASS_TURN,
    MIGRATIONS,
    SCAN_CONNECTIONS,
    SCHEMA_VERSION,
    SQL_CHAIN_BOUNDS,
    SQL_LAST_ANSWER,
    SQL_NEXT_ASSISTANT,
    SQL_REFUSED_RUN_END,
    SQL_TURN_END,
    SQL_TURN_REPLY,
    STATEMENT_TIMEOUT_S,
    PostgresSessionStore,
)
from tests.support.pgserver import PASSWORD, PgServer, free_port
from tests.support.shared_store import claim_kept_for
from tests.support.statement_relay import HeldSendRelay, StatementRelay, statement_relay
from tests.support.turns import KEY, turn

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresSessionStore]:
    async with PostgresSessionStore(pg_url) as store:
        yield store


@contextlib.asynccontextmanager
async def database_at(pg_url: str, version: int) -> AsyncIterator[asyncpg.Connection]:
    """A database made by the migrations up to schema `version`, for a test to fill in the
    same transaction before the store opens it."""
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            for migration in MIGRATIONS[:version]:
                await conn.execute(migration)
            await conn.execute("CREATE TABLE clawgate_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO clawgate_schema SELECT generate_series(1, $1)", version)
            yield conn
    finally:
        await conn.close()


async def plan_of(pg_url: str, sql: str, *args: object) -> str:
    """PostgreSQL's plan of `sql` with sequential scans off, as on tables of many rows, where
    a lookup has to use its index."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("SET enable_seqscan = off")
        return "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
    finally:
        await conn.close()


class TestSchema:
    async def test_two_processes_starting_together_migrate_once(self, pg_url: str) -> None:
        first, second = PostgresSessionStore(pg_url), PostgresSessionStore(pg_url)
        await asyncio.gather(first.open(), second.open())
        try:
            everything = tuple(range(1, SCHEMA_VERSION + 1))
            assert sorted([first.migrated, second.migrated]) == [(), everything]
            assert await first.schema_version() == SCHEMA_VERSION
        finally:
            await first.aclose()
            await second.aclose()

    async def test_reopening_migrates_nothing(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url):
            pass
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == ()

    async def test_a_version_1_database_gains_the_responses_table_in_place(
        self, pg_url: str
    ) -> None:
        conn = await asyncpg.connect(pg_url)
        async with conn.transaction():
            await conn.execute(MIGRATIONS[0])
            await conn.execute("CREATE TABLE clawgate_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO clawgate_schema VALUES (1)")
        await conn.close()
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == tuple(range(2, 14)) == tuple(range(2, SCHEMA_VERSION + 1))
            assert await store.get_response("resp_x") is None
            assert await store.claim_hook_call("s", "r", "k", 1) == ("r", "k")

    async def test_a_version_4_database_gains_the_archive_columns_in_place(
        self, pg_url: str
    ) -> None:
        async with database_at(pg_url, 4) as conn:
            await conn.execute(
                "INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at)"
                " VALUES ($1, 'main', 'sid', 'old', 1, 2)",
                KEY,
            )
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == (5, 6, 7, 8, 9, 10, 11, 12, 13) and SCHEMA_VERSION == 13
            assert await store.get(KEY) == SessionRow(KEY, "main", "sid", "old", 1, 2)
            assert [r.key for r in (await store.list(archived=False)).rows] == [KEY]
            archived = await store.set_archived(KEY, True, 3)
            assert archived is not None and archived.archived_at == 3

    async def test_a_version_5_database_gains_the_pin_column_in_place(self, pg_url: str) -> None:
        async with database_at(pg_url, 5) as conn:
            await conn.execute(
                "INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at,"
                " archived_at, archive_reason)"
                " VALUES ($1, 'main', 'sid', 'old', 1, 2, 2, 'manual')",
                KEY,
            )
            await conn.execute(
                "INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at)"
                " VALUES ('agent:main:other', 'main', 'sid2', NULL, 1, 3)"
            )
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == (6, 7, 8, 9, 10, 11, 12, 13) and SCHEMA_VERSION == 13
            kept = SessionRow(
                KEY, "main", "sid", "old", 1, 2, archived_at=2, archive_reason="manual"
            )
            assert await store.get(KEY) == kept
            pinned = await store.set_pinned("agent:main:other", "main", True, 4)
            assert pinned.pinned_at == 4
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'sessions_pinned'"
            ) == ("CREATE INDEX sessions_pinned ON public.sessions USING btree (pinned_at)"
                  " WHERE (pinned_at IS NOT NULL)")  # fmt: skip
        finally:
            await conn.close()

    async def test_a_version_6_database_finds_a_turns_reply_by_its_run(self, pg_url: str) -> None:
        """Not by a walk back over the messages of every later turn: an old response of
        a long session is continued, or its input items paged, at the cost of a new one."""
        async with database_at(pg_url, 6):
            pass
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == (7, 8, 9, 10, 11, 12, 13) and SCHEMA_VERSION == 13
        for sql in (SQL_TURN_END, SQL_CHAIN_BOUNDS):
            plan = await plan_of(pg_url, sql, "sid", "r1")
            assert "messages_by_run" in plan, plan

    async def test_a_version_7_database_gains_the_call_answer_column_in_place(
        self, pg_url: str
    ) -> None:
        async with database_at(pg_url, 7) as conn:
            await conn.execute(
                "INSERT INTO hook_calls (scope, run_id, session_key, expires_at, ended)"
                " VALUES ('ws:old', 't0', $1, 9000000000000, TRUE)",
                KEY,
            )
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == (8, 9, 10, 11, 12, 13) and SCHEMA_VERSION == 13
            assert await store.claim_call("ws:old", "t1", KEY, 600) == ("t0", KEY, True)
            assert await store.call_answer("ws:old") is None
            assert await store.claim_call("ws:new", "t2", KEY, 600_000) == ("t2", KEY, False)
            assert await store.call_answer("ws:new") is None  # not ended: none yet
            await store.end_call("ws:new", "t2", 600_000, '{"a": 1}')
            assert await store.claim_call("ws:new", "t3", KEY, 600) == ("t2", KEY, True)
            assert await store.call_answer("ws:new") == '{"a": 1}'

    @pytest.mark.parametrize("version", [0, 8])
    async def test_the_claims_going_on_are_found_by_their_session(
        self, pg_url: str, version: int
    ) -> None:
        """A fresh database, and one of schema 8: `chat.abort` of a session looks up its
        claims by the session's key, not by a scan of every call's claim."""
        if version:
            async with database_at(pg_url, version):
                pass
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == tuple(range(version + 1, SCHEMA_VERSION + 1))
            assert await store.claimed_run_going_on(KEY) is False
            assert await store.claim_call("ws:a", "t1", KEY, 600_000) == ("t1", KEY, False)
            assert await store.claimed_run_going_on(KEY) is True
            assert await store.claimed_run_going_on("agent:main:other") is False
            await store.end_call("ws:a", "t1", 600_000)
            assert await store.claimed_run_going_on(KEY) is False
            assert await store.claim_call("ws:b", "t2", KEY, 1) == ("t2", KEY, False)
            await claim_kept_for(pg_url, "ws:b", -1000)
            assert await store.claimed_run_going_on(KEY) is False  # its lease is out
        going_on = "SELECT 1 FROM hook_calls WHERE session_key = $1 AND NOT ended"
        plan = await plan_of(pg_url, going_on, KEY)
        assert "hook_calls_going_on" in plan, plan

    async def test_a_version_12_database_gains_the_call_start_column_in_place(
        self, pg_url: str
    ) -> None:
        """A claim kept from before says its run started: a retry is answered at once."""
        async with database_at(pg_url, 12) as conn:
            await conn.execute(
                "INSERT INTO hook_calls (scope, run_id, session_key, expires_at)"
                " VALUES ('ws:old', 't0', $1, 9000000000000)",
                KEY,
            )
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == (13,) and SCHEMA_VERSION == 13
            assert await store.claim_call("ws:old", "t1", KEY, 600) == ("t0", KEY, False)

    async def test_a_version_9_database_finds_a_turns_reply_and_next_assistant_by_index(
        self, pg_url: str
    ) -> None:
        """As the SQLite store's schema 8: lookups, not a step along a long turn."""
        async with database_at(pg_url, 9) as conn:
            await conn.execute(
                "INSERT INTO transcripts (session_id, key, agent_id, created_at)"
                " VALUES ('sid', $1, 'main', 1)",
                KEY,
            )
            await conn.execute(
                "INSERT INTO messages (id, session_id, seq, role, content, timestamp, run_id,"
                " stop_reason)"
                " SELECT 'm' || n, 'sid', n, CASE WHEN n IN (51, 53) THEN 'assistant'"
                " ELSE 'user' END, '\"x\"', 1, 'r1', CASE WHEN n = 53 THEN 'stop' END"
                " FROM generate_series(1, 53) AS n"
            )
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == (10, 11, 12, 13) and SCHEMA_VERSION == 13
            reply = await store.turn_reply("sid", 1, 99)
            assert reply is not None and reply.seq == 53
            assistant = await store.next_assistant("sid", 1, 99)
            assert assistant is not None and assistant.seq == 51
            assert await store.next_assistant("sid", 54, 99) is None
        for sql, index in (
            (SQL_TURN_REPLY, "messages_replies"),
            (SQL_NEXT_ASSISTANT, "messages_assistants"),
        ):
            plan = await plan_of(pg_url, sql, "sid", 1, 99)
            assert index in plan, plan

    async def test_a_version_10_database_finds_the_end_of_a_refused_run_by_index(
        self, pg_url: str
    ) -> None:
        """As the SQLite store's schema 9: the answer after a run of refused turns, and the
        one before it, are lookups in the index of answers."""
        async with database_at(pg_url, 10) as conn:
            await conn.execute(
                "INSERT INTO transcripts (session_id, key, agent_id, created_at)"
                " VALUES ('sid', $1, 'main', 1)",
                KEY,
            )
            # Turn 0 answered, turns 1 to 40 refused, turn 41 answered.
            await conn.execute(
                "INSERT INTO messages (id, session_id, seq, role, content, timestamp, run_id,"
                " stop_reason, error_message)"
                " SELECT 'm' || n, 'sid', n, CASE WHEN n % 2 = 0 THEN 'assistant' ELSE 'user'"
                " END, '\"x\"', 1, 'r' || ((n - 1) / 2),"
                " CASE WHEN n IN (2, 84) THEN 'stop' WHEN n % 2 = 0 THEN 'error' END,"
                " CASE WHEN n % 2 = 0 AND n NOT IN (2, 84) THEN $1 END"
                " FROM generate_series(1, 84) AS n",
                f"{REFUSED_ERROR} (HTTP 413)",
            )
        async with PostgresSessionStore(pg_url) as store:
            assert store.migrated == (11, 12, 13) and SCHEMA_VERSION == 13
            assert await store.refused_run_end("sid", 3, 200) == 82
            assert await store.refused_run_end("sid", 83, 200) is None
            assert await store.last_answer("sid", 1, 82) == 2
        for sql in (SQL_REFUSED_RUN_END, SQL_LAST_ANSWER):
            plan = await plan_of(pg_url, sql, "sid", 3, 200)
            assert "messages_answers" in plan, plan

    async def test_the_end_of_a_run_of_refused_turns_is_found_by_the_index_of_replies(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        """As the SQLite store's: a run of refused turns is stepped over in one statement."""
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(
                "INSERT INTO transcripts (session_id, key, agent_id, created_at)"
                " VALUES ('sid', $1, 'main', 1)",
                KEY,
            )
            # Turn 0 answered, turns 1 to 40 refused, turn 41 failed.
            await conn.execute(
                "INSERT INTO messages (id, session_id, seq, role, content, timestamp, run_id,"
                " stop_reason, error_message)"
                " SELECT 'm' || n, 'sid', n, CASE WHEN n % 2 = 0 THEN 'assistant' ELSE 'user'"
                " END, '\"x\"', 1, 'r' || ((n - 1) / 2),"
                " CASE WHEN n = 2 THEN 'stop' WHEN n % 2 = 0 THEN 'error' END,"
                " CASE WHEN n = 84 THEN 'upstream 500' WHEN n > 2 AND n % 2 = 0 THEN $1 END"
                " FROM generate_series(1, 84) AS n",
                f"{REFUSED_ERROR} (HTTP 413)",
            )
            assert await store.refused_run_end("sid", 3, 200) == 82
            assert await store.refused_run_end("sid", 3, 60) == 60
            assert await store.refused_run_end("sid", 1, 200) is None
            assert await store.refused_run_end("sid", 83, 200) is None
            assert await store.last_answer("sid", 1, 82) == 2
            assert await store.last_answer("sid", 1, 200) == 84
            assert await store.last_answer("sid", 3, 82) is None
            for sql in (SQL_REFUSED_RUN_END, SQL_LAST_ANSWER):
                plan = await plan_of(pg_url, sql, "sid", 3, 200)
                assert "messages_answers" in plan, plan
        finally:
            await conn.close()

    async def test_a_newer_schema_is_refused(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url):
            pass
        conn = await asyncpg.connect(pg_url)
        await conn.execute("INSERT INTO clawgate_schema VALUES ($1)", SCHEMA_VERSION + 1)
        await conn.close()
        with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1}, newer than"):
            await PostgresSessionStore(pg_url).open()


class TestConnecting:
    async def test_the_password_can_come_apart_from_the_url(self, pg_server: PgServer) -> None:
        pg_server.admin("CREATE DATABASE apart TEMPLATE template0")
        try:
            url = pg_server.url_without_password("apart")
            async with PostgresSessionStore(url, password=PASSWORD) as store:
                assert await store.count() == 0
        finally:
            pg_server.admin("DROP DATABASE apart WITH (FORCE)")

    async def test_a_server_on_this_host_by_its_unix_socket(self, pg_server: PgServer) -> None:
        database = f"t_{uuid.uuid4().hex[:12]}"
        pg_server.admin(f"CREATE DATABASE {database} TEMPLATE template0")
        url = f"postgresql://clawgate@/{database}?host={pg_server.root}&port={pg_server.port}"
        async with PostgresSessionStore(url, password=PASSWORD) as store:
            assert await store.schema_version() == SCHEMA_VERSION

    async def test_the_password_is_never_logged_or_shown(self, pg_url: str) -> None:
        with capture_logs() as logs:
            async with PostgresSessionStore(pg_url) as store:
                assert PASSWORD not in repr(store)
        assert logs and PASSWORD not in repr(logs)
        assert [e["url"] for e in logs if e["event"] == "store_opened"] == [
            pg_url.replace(PASSWORD, "***")
        ]

    async def test_a_wrong_password_is_a_store_error_that_does_not_show_it(
        self, pg_server: PgServer
    ) -> None:
        url = pg_server.url_without_password()
        with pytest.raises(StoreError, match="password authentication failed") as caught:
            await PostgresSessionStore(url, password="wrong-secret").open()
        assert "wrong-secret" not in str(caught.value)

    async def test_no_server_is_store_unavailable(self) -> None:
        url = f"postgresql://u:p@127.0.0.1:{free_port()}/db"
        with pytest.raises(StoreUnavailable):
            await PostgresSessionStore(url).open()


class TestTurns:
    async def test_a_failing_statement_inside_the_turn_leaves_nothing(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        conn = await asyncpg.connect(pg_url)
        # A message that jumps onto the assistant's seq as soon as the user message is in.
        await conn.execute(
            "INSERT INTO messages (id, session_id, seq, role, content, timestamp)"
            " VALUES ('x', $1, 2, 'assistant', '[]', 0)",
            row.session_id,
        )
        await conn.execute(
            "CREATE FUNCTION squat() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE messages SET seq = NEW.seq + 1 WHERE id = 'x'; RETURN NULL; END $$;"
            " CREATE TRIGGER squat AFTER INSERT ON messages FOR EACH ROW"
            " WHEN (NEW.role = 'user') EXECUTE FUNCTION squat()"
        )
        await conn.close()
        with pytest.raises(StoreError, match="UniqueViolation"):
            await store.append_turn(turn(row, "r1"))
        history = await store.history(row.session_id, 10)
        assert [m.id for m in history.messages] == ["x"]
        assert await store.get(KEY) == row

    async def test_nul_and_lone_surrogates_are_stored_as_replacement_characters(
        self, store: PostgresSessionStore
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.patch_label(KEY, "main", "a\x00b\ud800", 200)
        await store.append_turn(turn(row, "r1", user_text="x\x00y", error_message="e\x00"))
        history = await store.history(row.session_id, 10)
        assert history.messages[0].content == "x\x00y"  # JSON text escapes the NUL itself
        assert history.messages[1].error_message == "e\ufffd"
        assert (await store.get(KEY)).label == "a\ufffdb\ufffd"  # type: ignore[union-attr]

    async def test_a_message_changed_to_text_that_is_not_json_is_a_store_error(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        row, _ = await store.create(KEY, "main", 100)
        await store.append_turn(turn(row, "r1"))
        conn = await asyncpg.connect(pg_url)
        mid = await conn.fetchval("UPDATE messages SET usage = '{' WHERE seq = 2 RETURNING id")
        await conn.close()
        with pytest.raises(StoreError) as caught:
            await store.history(row.session_id, 10)
        assert str(caught.value).startswith(
            f"stored message {mid} (seq 2) is damaged: its usage is not JSON ("
        )

    async def test_turns_of_one_session_committed_by_two_processes_at_once_all_store(
        self, pg_url: str
    ) -> None:
        """Two turns of one session commit together only when the turn lock did not keep
        them apart (a lock whose connection a restart cut): both read the same last seq, and
        the second failed on the unique (session_id, seq), an internal error for its client."""
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            row, _ = await a.create(KEY, "main", 100)
            results = await asyncio.gather(
                *(s.append_turn(turn(row, f"r{i}")) for i, s in enumerate((a, b) * 8)),
                return_exceptions=True,
            )
            assert [r for r in results if isinstance(r, BaseException)] == []
            history = await a.history(row.session_id, 100)
        assert [m.seq for m in history.messages] == list(range(1, 33))
        # Each turn's two messages stay together.
        runs = [m.run_id for m in history.messages]
        assert runs[::2] == runs[1::2]

    async def test_a_session_created_by_two_processes_at_once_has_one_row(
        self, pg_url: str
    ) -> None:
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            results = await asyncio.gather(
                *(s.get_or_create(KEY, "main", 100) for s in (a, b, a, b))
            )
            assert len({row.session_id for row, _ in results}) == 1
            assert sum(created for _, created in results) == 1


class TestSessionsRacingDeletes:
    """A session deleted by another process while one creates or changes it: the insert
    found the row there, and it was gone when read (a TypeError, a 500); a reset locked the
    transcript before the session, a delete the other way round (a deadlock)."""

    @pytest.mark.parametrize("how", ["create", "patch_label", "reset"])
    async def test_creating_a_session_another_process_deletes_gives_a_row(
        self, pg_url: str, how: str
    ) -> None:
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            stop = asyncio.Event()

            async def delete() -> int:
                deleted = 0
                while not stop.is_set():
                    await b.create(KEY, "main", 1)
                    deleted += await b.delete(KEY, 2)
                return deleted

            deleter = asyncio.create_task(delete())
            try:
                for _ in range(400):
                    match how:
                        case "create":
                            row, _ = await a.create(KEY, "main", 3)
                        case "patch_label":
                            row = await a.patch_label(KEY, "main", "mine", 3)
                        case _:
                            row = await a.reset(KEY, "main", 3)
                    assert row.key == KEY
            finally:
                stop.set()
                assert await deleter > 0


class TestArchivingASessionByItsId:
    async def test_a_session_created_on_the_key_meanwhile_is_not_archived(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        """Archiving `session_id` when the key held no session looked for a row without
        locking it, then archived whatever the key held when it wrote: a session another
        process created in between was archived in place of SessionChanged."""
        admin = await asyncpg.connect(pg_url)
        try:
            async with admin.transaction():
                # The write waits on this lock after its check; the session is made meanwhile.
                await admin.execute("LOCK TABLE sessions IN SHARE MODE")
                archive = asyncio.create_task(store.set_archived(KEY, True, 200, session_id="gone"))
                async with asyncio.timeout(5):
                    while not archive.done() and not await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    ):
                        await asyncio.sleep(0.02)
                await admin.execute(
                    "INSERT INTO sessions (key, agent_id, session_id, created_at, updated_at)"
                    " VALUES ($1, 'main', 'new', 100, 100)",
                    KEY,
                )
            with contextlib.suppress(SessionChanged):
                assert await asyncio.wait_for(archive, 5) is None
        finally:
            await admin.close()
        row = await store.get(KEY)
        assert row is not None and row.session_id == "new" and row.archived_at is None


class TestAClaimReleasedWhileAnotherIsMade:
    @pytest.mark.parametrize("kind", ["call", "hook"])
    async def test_the_new_claim_is_written(
        self, pg_url: str, pg_server: PgServer, store: PostgresSessionStore, kind: str
    ) -> None:
        """A claim found taken, then released before it was read: the caller was told the
        claim was its own, with no row behind it, so a retry elsewhere claimed and ran the
        call again while this one ran it."""
        await store.claim_call("ws:k", "t0", KEY, 600_000)
        marker = b"FROM hook_calls WHERE scope = $1"  # the read after the insert found it taken
        with statement_relay("127.0.0.1", pg_server.port, marker) as relay:
            async with PostgresSessionStore(relay.url(pg_url)) as other:
                if kind == "call":
                    claim = asyncio.create_task(other.claim_call("ws:k", "t1", KEY, 600_000))
                else:
                    claim = asyncio.create_task(other.claim_hook_call("ws:k", "t1", KEY, 600_000))
                await relay.wait_held()
                await store.release_hook_call("ws:k", "t0")
                relay.release()
                claimed = await asyncio.wait_for(claim, 10)
        assert claimed[:2] == ("t1", KEY)
        assert await store.claim_call("ws:k", "t2", KEY, 600_000) == ("t1", KEY, False)


class TestScansBesideTurns:
    """The reads a client may ask for at will and that scan tables (`list`, `count`, `usage`)
    hold only some of the query pool's connections: a turn never waits behind them."""

    async def test_a_turn_is_not_queued_behind_searches_that_would_fill_the_pool(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """Searches held at the server (as long ones over a large store are) on every
        connection they may take: a turn still gets one, and its write ends meanwhile."""
        search = "no such session"
        with statement_relay("127.0.0.1", pg_server.port, search.encode(), every=True) as relay:
            async with PostgresSessionStore(relay.url(pg_url), pool_size=4) as store:
                row, _ = await store.create(KEY, "main", 100)
                searches = [asyncio.create_task(store.list(search=search)) for _ in range(8)]
                await relay.wait_held(count=SCAN_CONNECTIONS)
                # Bounded only so that a turn queued behind them fails, not hangs.
                await asyncio.wait_for(store.append_turn(turn(row)), 30)
                assert [s.done() for s in searches] == [False] * 8
                relay.release()
                assert [(await s).total_count for s in searches] == [0] * 8


class TestListing:
    async def test_the_total_and_the_page_are_one_read_under_concurrent_writes(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        """Counted and paged apart, a session created (or deleted) in between made the page
        hold more (or fewer) rows than the total said there were."""
        stop = asyncio.Event()
        writing = [asyncio.Event() for _ in range(3)]

        async def churn(writer: int) -> None:
            async with PostgresSessionStore(pg_url) as other:
                i = 0
                while not stop.is_set():
                    await other.create(f"agent:main:churn-{writer}-{i}", "main", i)
                    writing[writer].set()
                    if i % 3 == 0:
                        await other.delete(f"agent:main:churn-{writer}-{i // 3}", i)
                    i += 1

        writers = [asyncio.create_task(churn(writer)) for writer in range(3)]
        try:
            # The reads begin once every writer writes (opening a store takes a while).
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in writing)), 30)
            pages = [await store.list(limit=100_000) for _ in range(300)]
        finally:
            stop.set()
            await asyncio.gather(*writers)
        torn = [(len(p.rows), p.total_count) for p in pages if len(p.rows) != p.total_count]
        assert torn == []
        assert pages[-1].total_count > 0

    @pytest.mark.parametrize("max_chars", [0, 10_000_000])
    async def test_a_transcripts_total_and_messages_are_one_read_under_concurrent_turns(
        self, store: PostgresSessionStore, pg_url: str, max_chars: int
    ) -> None:
        """chat.history's totalMessages was counted apart from the messages: a turn stored
        in between made it say 10 messages over 12."""
        row, _ = await store.create(KEY, "main", 1)
        stop, talking = asyncio.Event(), asyncio.Event()

        async def talk() -> None:
            async with PostgresSessionStore(pg_url) as other:
                for i in itertools.count():
                    if stop.is_set():
                        return
                    await other.append_turn(turn(row, f"r{i}"))
                    talking.set()

        talker = asyncio.create_task(talk())
        try:
            # Once the other store is open and writing: its open alone may outlast the reads.
            await asyncio.wait_for(talking.wait(), 10)
            read = [
                await store.history(row.session_id, 100_000, max_chars=max_chars)
                for _ in range(200)
            ]
        finally:
            stop.set()
            await talker
        torn = [(len(h.messages), h.total) for h in read if len(h.messages) != h.total]
        assert torn == []
        assert read[-1].total > 0

    async def test_a_page_of_none_still_counts(self, store: PostgresSessionStore) -> None:
        for i in range(3):
            await store.create(f"agent:main:s{i}", "main", i)
        assert await store.list(limit=0) == SessionPage((), 3)
        assert (await store.list(limit=2)).total_count == 3
        assert await store.list(search="nothing like it") == SessionPage((), 0)


class TestAServerThatStopsAnswering:
    """A database host gone from the network keeps our connections open for many minutes:
    a statement left unanswered fails as unavailable after the statement timeout, and the
    store works again once the server answers, without being reopened."""

    async def test_a_turn_left_unanswered_fails_as_unavailable_and_is_stored_whole_or_not(
        self, pg_server: PgServer, pg_url: str
    ) -> None:
        async with PostgresSessionStore(pg_url, statement_timeout=0.5) as store:
            row, _ = await store.create(KEY, "main", 100)
            with pg_server.frozen():
                async with asyncio.timeout(5):
                    with pytest.raises(StoreUnavailable, match="no answer from the database"):
                        await store.append_turn(turn(row, "r1"))
            # The server may still run the first statement, left in its socket, when it comes
            # back: it is let do so before the next turn's.
            await asyncio.sleep(0.5)
            async with asyncio.timeout(10):
                await store.append_turn(turn(row, "r2"))
            history = await store.history(row.session_id, 10)
        # Whether the server ran the first statement when it came back cannot be known here;
        # either way no turn is half-written.
        runs = [m.run_id for m in history.messages]
        assert runs in (["r2", "r2"], ["r1", "r1", "r2", "r2"])

    async def test_a_turn_lock_given_back_unanswered_lets_the_turn_end(
        self, pg_server: PgServer, pg_url: str
    ) -> None:
        async with (
            PostgresSessionStore(pg_url, statement_timeout=0.5) as store,
            PostgresSessionStore(pg_url) as other,
        ):
            async with asyncio.timeout(5):
                lock = store.turn_lock(KEY)
                await lock.__aenter__()
                with pg_server.frozen():
                    await lock.__aexit__(None, None, None)
            # The lock went with its connection: the other process takes it.
            order: list[str] = []
            await asyncio.wait_for(TestTurnLock._take(other, KEY, order), 10)
            assert order == ["b"]

    # A turn tries the lock and then waits; sessions.reset and .delete (and a turn past the
    # most waiters) take it without a wait elsewhere.
    @pytest.mark.parametrize("waiting", [True, False])
    async def test_a_turn_lock_unanswered_fails_as_unavailable(
        self, pg_server: PgServer, pg_url: str, waiting: bool
    ) -> None:
        key = "agent:main:s2" if waiting else KEY
        while_waiting = _nothing if waiting else None
        async with PostgresSessionStore(pg_url, statement_timeout=0.5) as store:
            async with store.turn_lock(KEY):  # leaves an idle lock connection in the pool
                pass
            with pg_server.frozen():
                async with asyncio.timeout(5):
                    with pytest.raises(StoreUnavailable):
                        async with store.turn_lock(key, while_waiting=while_waiting):
                            pass
            async with asyncio.timeout(10), store.turn_lock(key):
                pass
            async with asyncio.timeout(10), store.turn_lock(KEY):
                pass


class TestAConnectionCutMidTransaction:
    async def test_the_error_and_the_log_name_the_cut_not_the_rollback(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        """A write of several statements whose connection the server closes (a restart, an
        administrator) failed with asyncpg's refusal to roll back on a closed connection
        (`InterfaceError: cannot call Transaction.__aexit__()`), which hid the cause."""
        await store.create(KEY, "main", 100)
        admin = await asyncpg.connect(pg_url)
        try:
            with capture_logs() as logs:
                async with admin.transaction():
                    await admin.execute("SELECT 1 FROM sessions WHERE key = $1 FOR UPDATE", KEY)
                    reset = asyncio.create_task(store.reset(KEY, "main", 200))
                    async with asyncio.timeout(5):
                        while not await admin.fetchval(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        ):
                            await asyncio.sleep(0.02)
                    # The write may fail, and log it, before the loop above is back.
                    with pytest.raises(StoreUnavailable) as caught:
                        await asyncio.wait_for(reset, 5)
        finally:
            await admin.close()
        assert "terminating connection due to administrator command" in str(caught.value)
        [unavailable] = [entry for entry in logs if entry["event"] == "store_unavailable"]
        assert unavailable["reason"] == str(caught.value)
        assert (await store.reset(KEY, "main", 300)).updated_at == 300  # the store goes on


DAY_MS = 24 * 3600 * 1000


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


@contextlib.asynccontextmanager
async def _a_pass_deleting_key(
    pg_url: str,
    pg_server: PgServer,
    marker: bytes = b"DELETE FROM transcripts WHERE key",
    statement_timeout: float = STATEMENT_TIMEOUT_S,
) -> AsyncIterator[
    tuple[PostgresSessionStore, PostgresSessionStore, StatementRelay, asyncio.Task[Any]]
]:
    """Process a's maintenance pass (enforce) held open as it sends `marker`: by default once
    it has deleted KEY's row and holds its turn lock, before it deletes its transcripts;
    process b beside it (its statements answered within `statement_timeout`). Yields both,
    the relay that holds the pass (`release()` lets it go on) and the pass."""
    with statement_relay("127.0.0.1", pg_server.port, marker) as relay:
        async with (
            PostgresSessionStore(relay.url(pg_url)) as a,
            PostgresSessionStore(pg_url, statement_timeout=statement_timeout) as b,
        ):
            await a.create(KEY, "main", 1)
            maintenance = MaintenanceConfig(prune_after_ms=DAY_MS, mode="enforce")
            pruning = asyncio.create_task(a.prune(maintenance, 40 * DAY_MS))
            await relay.wait_held()
            yield a, b, relay, pruning


async def _done_before_a_lock_wait(pg_url: str, task: asyncio.Task[Any]) -> bool:
    """Whether `task` ended before any statement of the database waited for a lock."""
    admin = await asyncpg.connect(pg_url)
    blocked = asyncio.create_task(waiting_for_a_lock(admin))
    try:
        await asyncio.wait([task, blocked], return_when=asyncio.FIRST_COMPLETED)
        return task.done()
    finally:
        blocked.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await blocked
        await admin.close()


async def _the_session_in_its_turn(store: PostgresSessionStore) -> SessionRow | None:
    """KEY's session as a turn of it reads it, once it holds the turn lock."""
    async with store.turn_lock(KEY):
        return await store.get(KEY)


class TestPrune:
    async def test_a_session_whose_turn_runs_on_another_process_is_not_pruned(
        self, pg_url: str
    ) -> None:
        # Each process protects only its own runs; another's holds the session's turn lock.
        day = 24 * 3600 * 1000
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            row, _ = await a.create(KEY, "main", 1)
            await a.create("agent:main:old", "main", 2)
            async with b.turn_lock(KEY):
                pruned = await a.prune(MaintenanceConfig(prune_after_ms=day), 40 * day)
                assert [r.key for r in pruned] == ["agent:main:old"]
                committed = await b.append_turn(turn(row, "r1", assistant_timestamp=40 * day))
            assert await a.get(KEY) == committed
            assert (await a.history(row.session_id, 10)).total == 2

    @pytest.mark.parametrize("turn_ends", [True, False], ids=["committed", "running"])
    async def test_a_turn_that_comes_between_choosing_and_deleting_keeps_its_session(
        self, pg_url: str, turn_ends: bool
    ) -> None:
        day = 24 * 3600 * 1000
        maintenance = MaintenanceConfig(prune_after_ms=day, max_disk_bytes=10**9)
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            row, _ = await a.create(KEY, "main", 1)
            admin = await asyncpg.connect(pg_url)
            try:
                # The pass has chosen KEY (not updated for pruneAfter) when it reads the
                # byte total, and waits there; meanwhile a turn of KEY begins elsewhere.
                blocker = admin.transaction()
                await blocker.start()
                await admin.execute("LOCK TABLE responses IN ACCESS EXCLUSIVE MODE")
                pruning = asyncio.create_task(a.prune(maintenance, 40 * day))
                async with asyncio.timeout(5):
                    while not await admin.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted"
                        " AND relation = 'responses'::regclass)"
                    ):
                        await asyncio.sleep(0.02)
                async with b.turn_lock(KEY):
                    await b.append_turn(turn(row, "r1", assistant_timestamp=40 * day))
                    if not turn_ends:  # the pass goes on while the turn holds its lock
                        await blocker.rollback()
                        assert await asyncio.wait_for(pruning, 5) == []
                if turn_ends:  # the pass goes on once the turn has committed
                    await blocker.rollback()
                    assert await asyncio.wait_for(pruning, 5) == []
            finally:
                await admin.close()
            assert (await a.history(row.session_id, 10)).total == 2

    async def test_a_turn_that_comes_between_choosing_and_deleting_does_not_wait_for_the_pass(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """A turn whose lock was taken after the pass chose its session, before the pass
        locked the rows it deletes, kept its session, but the pass held its row to its commit:
        the turn's write waited for the whole pass, holding its run slot (other sessions'
        turns queued behind it)."""
        day = 24 * 3600 * 1000
        maintenance = MaintenanceConfig(prune_after_ms=day, max_disk_bytes=10**9, mode="enforce")
        marker = b"DELETE FROM transcripts WHERE key"
        with statement_relay("127.0.0.1", pg_server.port, marker) as relay:
            async with (
                PostgresSessionStore(relay.url(pg_url)) as a,
                PostgresSessionStore(pg_url) as b,
            ):
                row, _ = await a.create(KEY, "main", 1)
                admin = await asyncpg.connect(pg_url)
                try:
                    # The pass has chosen KEY and waits reading the byte total.
                    blocker = admin.transaction()
                    await blocker.start()
                    await admin.execute("LOCK TABLE responses IN ACCESS EXCLUSIVE MODE")
                    pruning = asyncio.create_task(a.prune(maintenance, 40 * day))
                    await waiting_for_a_lock(admin)
                    async with b.turn_lock(KEY):
                        await blocker.rollback()
                        await relay.wait_held()  # the pass's transaction is open
                        write = asyncio.create_task(
                            b.append_turn(turn(row, "r1", assistant_timestamp=40 * day))
                        )
                        assert await _done_before_a_lock_wait(pg_url, write), (
                            "the turn's write waited for the pass"
                        )
                finally:
                    relay.release()
                    await admin.close()
                assert await asyncio.wait_for(pruning, 5) == []
                assert (await b.history(row.session_id, 10)).total == 2

    async def test_a_claim_committed_while_the_delete_waits_keeps_its_session(
        self, pg_url: str
    ) -> None:
        """The DELETE read the claims as they were when it began: one committed while it
        waited for the session's row (a turn queued elsewhere, its mark written) was not seen,
        and the session was deleted under it."""
        day = 24 * 3600 * 1000
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            await a.create(KEY, "main", 1)
            admin = await asyncpg.connect(pg_url)
            try:
                holder = admin.transaction()
                await holder.start()
                await admin.execute("SELECT 1 FROM sessions WHERE key = $1 FOR KEY SHARE", KEY)
                maintenance = MaintenanceConfig(prune_after_ms=day, mode="enforce")
                pruning = asyncio.create_task(a.prune(maintenance, 40 * day))
                await waiting_for_a_lock(admin)
                await b.claim_call("queued:t1", "t1", KEY, 60_000)
                await holder.rollback()
                assert await asyncio.wait_for(pruning, 5) == []
            finally:
                await admin.close()
            assert await a.get(KEY) is not None

    async def test_a_claim_waits_for_a_delete_that_holds_its_session(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """A claim made while the pass held the session's row was told made, and the session
        then deleted under it: the claimant had read the row still there."""
        marker = b"DELETE FROM sessions s"  # the row locked, its DELETE not yet sent
        async with _a_pass_deleting_key(pg_url, pg_server, marker) as (_, b, relay, pruning):
            claim = asyncio.create_task(b.claim_call("queued:t1", "t1", KEY, 60_000))
            assert not await _done_before_a_lock_wait(pg_url, claim), (
                "the claim was made while the pass held the row"
            )
            relay.release()
            assert [row.key for row in await asyncio.wait_for(pruning, 5)] == [KEY]
            await asyncio.wait_for(claim, 5)
            assert await b.get(KEY) is None  # what the claimant reads after its claim

    async def test_a_claim_waits_for_a_pass_longer_than_the_statement_timeout(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """A claim waiting for a pass that held its session's row past the statement timeout
        was cut as if the database had stopped answering: a false store_unavailable, while
        the store was busy, and answering."""
        marker = b"DELETE FROM sessions s"
        held = _a_pass_deleting_key(pg_url, pg_server, marker, statement_timeout=1.0)
        async with held as (_, b, relay, pruning):
            claim = asyncio.create_task(b.claim_call("queued:t1", "t1", KEY, 60_000))
            # Three of b's statement timeouts.
            done, _ = await asyncio.wait([claim], timeout=3)
            assert not done, f"the claim ended while the pass held its row: {claim.exception()!r}"
            relay.release()
            assert [row.key for row in await asyncio.wait_for(pruning, 5)] == [KEY]
            assert await asyncio.wait_for(claim, 5) == ("t1", KEY, False)
            assert await b.get(KEY) is None  # what the claimant reads after its claim

    @pytest.mark.parametrize("write", ["label", "pin", "archive", "reset", "delete"])
    async def test_a_write_waits_for_a_pass_longer_than_the_statement_timeout(
        self, pg_url: str, pg_server: PgServer, write: str
    ) -> None:
        """A write of a session whose row a pass held past the statement timeout was cut
        as if the database had stopped answering: a false store_unavailable, while the store
        was busy, and answering. It is done once the pass is over, on what the pass left."""
        now = 40 * DAY_MS
        marker = b"DELETE FROM sessions s"
        held = _a_pass_deleting_key(pg_url, pg_server, marker, statement_timeout=1.0)
        async with held as (_, b, relay, pruning):
            writes: dict[str, Callable[[], Awaitable[Any]]] = {
                "label": lambda: b.patch(KEY, "main", now, label=("x",)),
                "pin": lambda: b.patch(KEY, "main", now, pinned=True),
                "archive": lambda: b.patch(KEY, "main", now, archived=True),
                "reset": lambda: b.reset(KEY, "main", now),
                "delete": lambda: b.delete(KEY, now),
            }
            writing = asyncio.ensure_future(writes[write]())
            # Three of b's statement timeouts.
            done, _ = await asyncio.wait([writing], timeout=3)
            assert not done, f"the write ended while the pass held its row: {writing.exception()!r}"
            relay.release()
            assert [row.key for row in await asyncio.wait_for(pruning, 5)] == [KEY]
            written = await asyncio.wait_for(writing, 5)
        # Done on what the pass left: no session, so a new one (none to archive or delete).
        match write:
            case "label":
                assert written.label == "x" and written.created_at == now
            case "pin":
                assert written.pinned_at == now and written.created_at == now
            case "reset":
                assert written.created_at == now
            case "archive" | "delete":
                assert written in (None, False)

    async def test_a_delete_waits_for_a_pass_deleting_its_archived_transcripts(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """A pass deletes the archived transcripts past their age of sessions it keeps, and
        takes no turn lock for them: the delete of such a session (under its turn lock, as
        the registry's) waited for the pass, and was cut at the statement timeout."""
        after = b"DELETE FROM transcripts WHERE archived_at"  # the pass's COMMIT held after it
        relay = HeldSendRelay("127.0.0.1", pg_server.port, b"COMMIT", after=after, watch=after)
        with contextlib.closing(relay):
            async with (
                PostgresSessionStore(relay.url(pg_url)) as a,
                PostgresSessionStore(pg_url, statement_timeout=1.0) as b,
            ):
                await b.create(KEY, "main", 1)
                await b.reset(KEY, "main", 2)  # its first transcript archived at 2
                await b.patch_label(KEY, "main", "kept", 40 * DAY_MS)  # not one to prune
                maintenance = MaintenanceConfig(prune_after_ms=DAY_MS, mode="enforce")
                pruning = asyncio.create_task(a.prune(maintenance, 40 * DAY_MS))
                await relay.wait_held()
                async with b.turn_lock(KEY):
                    deleting = asyncio.create_task(b.delete(KEY, 40 * DAY_MS))
                    done, _ = await asyncio.wait([deleting], timeout=3)
                    assert not done, f"the delete ended: {deleting.exception()!r}"
                    relay.release()
                    assert await asyncio.wait_for(pruning, 5) == []
                    assert await asyncio.wait_for(deleting, 5) is True
                assert await b.get(KEY) is None

    async def test_a_turn_waits_for_a_delete_of_its_session_it_was_not_seen_by(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """A turn lock taken after the DELETE read the turn locks, before the pass committed:
        the turn read its session still there and ran on it, deleted under it."""
        async with _a_pass_deleting_key(pg_url, pg_server) as (_, b, relay, pruning):
            running = asyncio.create_task(_the_session_in_its_turn(b))
            assert not await _done_before_a_lock_wait(pg_url, running), (
                "the turn ran while the pass deleted its session"
            )
            relay.release()
            assert [row.key for row in await asyncio.wait_for(pruning, 5)] == [KEY]
            assert await asyncio.wait_for(running, 5) is None  # it found the session gone

    async def test_the_turn_locks_a_delete_holds_are_no_turns_running(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """While a pass deleted a session, holding its turn lock to its commit, another
        process's abort of the session took the lock for a turn running elsewhere, and asked
        every other process to stop it (waiting for their answers)."""
        async with _a_pass_deleting_key(pg_url, pg_server) as (a, b, relay, pruning):
            await a.create("agent:main:busy", "main", 40 * DAY_MS)  # not the pass's to prune
            async with a.turn_lock("agent:main:busy"):  # a turn, on a's other pool
                assert not await b.turn_running_elsewhere(KEY)
                assert await b.turn_running_elsewhere("agent:main:busy")
            relay.release()
            assert [row.key for row in await asyncio.wait_for(pruning, 5)] == [KEY]

    async def test_a_turn_waiting_for_a_delete_is_a_turn_going_on(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """A turn that waits for the turn lock a pass holds (it got its run slot at once:
        no queued mark) is found by an abort of its session, which asks the processes to stop
        it: else, once the pass committed, it ran in a new session of the key."""
        async with _a_pass_deleting_key(pg_url, pg_server) as (a, b, relay, pruning):
            waiting = asyncio.create_task(_the_session_in_its_turn(b))
            admin = await asyncpg.connect(pg_url)
            try:
                await waiting_for_a_lock(admin)
            finally:
                await admin.close()
            try:
                assert await a.turn_running_elsewhere(KEY)
            finally:
                relay.release()
            assert [row.key for row in await asyncio.wait_for(pruning, 5)] == [KEY]
            assert await asyncio.wait_for(waiting, 5) is None

    async def test_a_delete_takes_the_turn_locks_of_what_it_deletes_only(
        self, pg_url: str, pg_server: PgServer
    ) -> None:
        """The turn locks a pass holds until its commit are those of the sessions it deletes:
        a condition of the DELETE evaluated first on a scan of the table took every one."""
        day = 24 * 3600 * 1000
        marker = b"DELETE FROM transcripts WHERE key"
        # The planner's choice on a table where a scan is cheaper than the index.
        scan = "?enable_indexscan=off&enable_bitmapscan=off"
        with statement_relay("127.0.0.1", pg_server.port, marker) as relay:
            async with PostgresSessionStore(relay.url(pg_url) + scan) as a:
                old = [f"agent:main:old-{n}" for n in range(8)]
                for key in old:
                    await a.create(key, "main", 1)
                for n in range(20):
                    await a.create(f"agent:main:fresh-{n}", "main", 40 * day)
                maintenance = MaintenanceConfig(prune_after_ms=day, mode="enforce")
                pruning = asyncio.create_task(a.prune(maintenance, 40 * day))
                await relay.wait_held()
                admin = await asyncpg.connect(pg_url)
                try:
                    held = await admin.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND classid = $1::bigint::oid",
                        LOCK_CLASS_TURN,
                    )
                finally:
                    await admin.close()
                relay.release()
                assert sorted(row.key for row in await asyncio.wait_for(pruning, 5)) == old
                assert held == len(old)

    async def test_a_turn_holding_its_lock_keeps_its_session(self, pg_url: str) -> None:
        day = 24 * 3600 * 1000
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            await a.create(KEY, "main", 1)
            maintenance = MaintenanceConfig(prune_after_ms=day, mode="enforce")
            async with b.turn_lock(KEY):
                assert await a.prune(maintenance, 40 * day) == []
            assert [row.key for row in await a.prune(maintenance, 40 * day)] == [KEY]


async def waiting_for_a_lock(conn: asyncpg.Connection) -> None:
    """Until some connection of this database waits for a lock."""
    async with asyncio.timeout(10):
        while not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ):
            await asyncio.sleep(0.02)


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
class TestAHolderCutOffByTheNetwork:
    """A real partition, in network namespaces of their own (tests/agents/partition_child.py):
    the holder's packets vanish, no FIN or RST reaches the server. Its lock stayed for the OS
    keepalive's 2 h 11 min (or TCP's 15 min of retransmissions), the session's turns on every
    other process waiting as long. The settings the store gives its lock connections (in
    force: TestTurnLock's test_the_server_finds_a_holder_cut_off_...) let the server find the
    holder gone: here at a few seconds rather than their minute, through the URL's query
    (which wins over the store's own), so that the suite does not wait a minute twice."""

    SHORT = (
        "tcp_user_timeout=3000&tcp_keepalives_idle=1&tcp_keepalives_interval=1"
        "&tcp_keepalives_count=2"
    )

    def test_the_lock_is_free_for_the_next_process_once_the_server_gives_up(self) -> None:
        if (
            shutil.which("ip") is None
            or subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode
        ):
            pytest.skip("needs `ip` and network namespaces (root, or CAP_SYS_ADMIN)")
        command = ["unshare", "--net", sys.executable, "-m", "tests.agents.partition_child"]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        children = {
            mode: subprocess.Popen([*command, "40", mode, self.SHORT], cwd=ROOT, text=True, **pipes)
            for mode in ("idle", "at-once")
        }
        waited = {}
        for mode, child in children.items():
            out, err = child.communicate(timeout=180)
            assert child.returncode == 0, err
            waited[mode] = out.splitlines()[-1].split()  # after the store's log lines
        for mode, (word, *seconds) in waited.items():
            assert word == "TAKEN", mode
            assert 1 <= float(seconds[0]) <= 20, (mode, seconds)


class TestTurnLock:
    async def test_a_second_process_waits_for_the_turn_lock(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            order: list[str] = []
            async with a.turn_lock(KEY):
                waiter = asyncio.create_task(self._take(b, KEY, order))
                await asyncio.sleep(0.3)
                assert not waiter.done()
                order.append("a done")
            await asyncio.wait_for(waiter, 5)
            assert order == ["a done", "b"]

    async def test_other_sessions_do_not_wait(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            order: list[str] = []
            async with a.turn_lock(KEY):
                await asyncio.wait_for(self._take(b, "agent:main:other", order), 5)
            assert order == ["b"]

    async def test_a_lock_whose_connection_died_is_released(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        # What a killed process leaves: its connection closes, the lock goes with it.
        holder = await asyncpg.connect(pg_url)
        await holder.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_CLASS_TURN, KEY)
        order: list[str] = []
        waiter = asyncio.create_task(self._take(store, KEY, order))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        holder.terminate()
        await asyncio.wait_for(waiter, 5)
        assert order == ["b"]

    @staticmethod
    async def settings(pool: asyncpg.Pool, names: tuple[str, ...]) -> dict[str, str]:
        async with pool.acquire() as conn:
            return {name: await conn.fetchval(f"SHOW {name}") for name in names}

    KEEPALIVES = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")

    async def test_the_server_finds_a_holder_cut_off_by_the_network_within_a_minute(
        self, store: PostgresSessionStore
    ) -> None:
        """A process cut off (a partition, a host gone) sends no FIN: its lock connection
        stays open on the server, and the session's turns on every other process wait, for
        as long as the OS's keepalive takes (2 h 11 min on Linux). Over TCP, SHOW reads the
        server's socket itself."""
        async with store.turn_lock(KEY):
            pass
        names = (*self.KEEPALIVES, "tcp_user_timeout", "client_connection_check_interval")
        assert store._locks is not None and store._pool is not None
        assert await self.settings(store._locks, names) == {
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "60000",
            "client_connection_check_interval": "10s",
        }
        # The query pool's too: a write holds FOR UPDATE row locks until its transaction
        # ends, and one whose reply went unacknowledged (the partition came as it went out)
        # held them for TCP's 15 minutes of retransmits, keepalives or not.
        assert await self.settings(store._pool, names) == {
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "60000",
            "client_connection_check_interval": "10s",
        }

    async def test_the_event_bus_listener_is_found_cut_off_as_soon(
        self, store: PostgresSessionStore
    ) -> None:
        """The LISTEN connection of a process cut off kept its place in the server's
        notification queue for the OS's 2 h 11 min: the queue (8 GB) cannot be trimmed past
        the oldest listener's place, and every process's NOTIFY fails once it is full."""
        await store.bus.start(lambda key, run_id: [])
        try:
            names = (*self.KEEPALIVES, "tcp_user_timeout")
            conn = store.bus._listener
            assert {name: await conn.fetchval(f"SHOW {name}") for name in names} == {
                "tcp_keepalives_idle": "30",
                "tcp_keepalives_interval": "10",
                "tcp_keepalives_count": "3",
                "tcp_user_timeout": "60000",
            }
        finally:
            await store.bus.aclose()

    async def test_the_urls_own_keepalive_settings_win(self, pg_url: str) -> None:
        url = f"{pg_url}?tcp_keepalives_idle=120&client_connection_check_interval=1000"
        async with PostgresSessionStore(url) as store:
            async with store.turn_lock(KEY):
                pass
            assert store._locks is not None
            names = ("tcp_keepalives_idle", "client_connection_check_interval")
            shown = await self.settings(store._locks, names)
        assert shown == {"tcp_keepalives_idle": "120", "client_connection_check_interval": "1s"}

    async def test_a_lock_the_server_cut_mid_turn_ends_the_turn_without_an_error(
        self, store: PostgresSessionStore, pg_url: str
    ) -> None:
        # A restart cuts the lock's connection while the turn runs: asyncpg takes the dead
        # connection back into its pool by itself, and giving the lock back must not fail
        # the turn (its own writes report the store as unavailable).
        admin = await asyncpg.connect(pg_url)
        try:
            async with store.turn_lock(KEY):
                cut = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid",
                    LOCK_CLASS_TURN,
                )
                assert cut == 1
                async with asyncio.timeout(5):
                    while await store.turn_running_elsewhere(KEY):
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)  # asyncpg reads the server's goodbye
        finally:
            await admin.close()
        order: list[str] = []
        await asyncio.wait_for(self._take(store, KEY, order), 5)
        assert order == ["b"]

    @pytest.mark.parametrize("next_holder", ["turn", "pass"])
    async def test_a_turn_whose_lock_was_cut_writes_nothing_beside_the_next_holder(
        self, pg_url: str, next_holder: str
    ) -> None:
        """A turn whose lock connection was cut (a restart, a network cut the server found)
        ran on without the lock, and its transcript write went through the query pool: another
        process's turn of the session ran as the holder meanwhile, both wrote, or a pass
        pruned the session and the late write made it again."""
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            row, _ = await a.create(KEY, "main", 1)
            admin = await asyncpg.connect(pg_url)
            try:
                async with a.turn_lock(KEY):
                    assert await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                        " WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid",
                        LOCK_CLASS_TURN,
                    ) == 1  # fmt: skip
                    if next_holder == "turn":
                        async with b.turn_lock(KEY):
                            with pytest.raises(StoreUnavailable, match=r"turn lock .* lost"):
                                await a.append_turn(turn(row, "late"))
                            await b.append_turn(turn(row, "holder"))
                    else:
                        async with asyncio.timeout(5):  # the lock goes with its backend
                            while await b.turn_running_elsewhere(KEY):
                                await asyncio.sleep(0.02)
                        maintenance = MaintenanceConfig(prune_after_ms=DAY_MS, mode="enforce")
                        pruned = await b.prune(maintenance, 40 * DAY_MS)
                        assert [r.key for r in pruned] == [KEY]
                        with pytest.raises(StoreUnavailable, match=r"turn lock .* lost"):
                            await a.append_turn(turn(row, "late", assistant_timestamp=40 * DAY_MS))
            finally:
                await admin.close()
            history = await b.history(row.session_id, 10)
            if next_holder == "turn":
                assert {m.run_id for m in history.messages} == {"holder"}
            else:
                assert await b.get(KEY) is None
                assert history.messages == ()

    async def test_a_cancelled_wait_leaves_the_lock_free(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            order: list[str] = []
            async with a.turn_lock(KEY):
                waiter = asyncio.create_task(self._take(b, KEY, order))
                await asyncio.sleep(0.2)
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
            await asyncio.wait_for(self._take(b, KEY, order), 5)
            await asyncio.wait_for(self._take(a, KEY, order), 5)
            assert order == ["b", "b"]

    async def test_the_wait_for_another_process_happens_inside_while_waiting(
        self, pg_url: str
    ) -> None:
        async with PostgresSessionStore(pg_url) as a, PostgresSessionStore(pg_url) as b:
            order: list[str] = []

            @contextlib.asynccontextmanager
            async def waiting() -> AsyncIterator[None]:
                order.append("waiting")
                yield
                order.append("waited")

            async with b.turn_lock(KEY, while_waiting=waiting):
                order.append("free: no wait")
            async with a.turn_lock(KEY):
                waiter = asyncio.create_task(self._take(b, KEY, order, waiting))
                await until(lambda: "waiting" in order)
                await asyncio.sleep(0.2)  # and it stays there while a holds the lock
                assert order == ["free: no wait", "waiting"]
            await asyncio.wait_for(waiter, 5)
            assert order == ["free: no wait", "waiting", "waited", "b"]

    async def test_past_the_most_waiters_a_turn_waits_without_while_waiting(
        self, pg_url: str
    ) -> None:
        async with (
            PostgresSessionStore(pg_url) as a,
            PostgresSessionStore(pg_url, max_lock_waiters=1) as b,
        ):
            entered: list[str] = []

            def waiting(name: str) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
                @contextlib.asynccontextmanager
                async def enter() -> AsyncIterator[None]:
                    entered.append(name)
                    yield

                return enter

            order: list[str] = []
            async with a.turn_lock(KEY), a.turn_lock("agent:main:other"):
                first = asyncio.create_task(self._take(b, KEY, order, waiting("first")))
                await until(lambda: entered == ["first"])
                second = asyncio.create_task(
                    self._take(b, "agent:main:other", order, waiting("second"))
                )
                await asyncio.sleep(0.3)  # the second waits for its lock, but not in `enter`
                assert entered == ["first"]
                assert not second.done()
            await asyncio.wait_for(asyncio.gather(first, second), 5)
            assert order == ["b", "b"]

    @staticmethod
    async def _take(
        store: PostgresSessionStore,
        key: str,
        order: list[str],
        waiting: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        async with store.turn_lock(key, while_waiting=waiting):
            order.append("b")


async def until(condition: Callable[[], object]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)
