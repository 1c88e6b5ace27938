"""A session changed on one gateway process (reset, delete, patch) as the others see it, when
they share one PostgreSQL store and hold the session live."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from agents.config import MaintenanceConfig
from agents.registry import wall_clock_ms
from agents.session import QUEUED_SCOPE_PREFIX
from agents.store_postgres import LOCK_CLASS_TURN, PostgresSessionStore
from tests.support.http_client import fake_provider
from tests.support.pgserver import PgServer
from tests.support.process import GatewayProcess
from tests.support.process_client import connect_ws
from tests.support.shared_store import (
    HeldOpenAI,
    chat,
    frames_until,
    shared_config,
    start_on_config,
)
from tests.support.statement_relay import ReplyRelay, StatementRelay

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

StartGateway = Callable[[str], GatewayProcess]
KEY = "agent:main:s1"
_ids = itertools.count(1)


@pytest.fixture
def start_gateway(tmp_path: Path, database: str) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(name: str) -> GatewayProcess:
        return start_on_config(started, tmp_path, name, shared_config(database, delay_ms=5))

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    ws: aiohttp.ClientWebSocketResponse, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The response frame of one request (events in between are passed over)."""
    request_id = str(next(_ids))
    await ws.send_json({"type": "req", "id": request_id, "method": method, "params": params})
    return (await frames_until(ws, lambda f: f.get("id") == request_id))[-1]


async def ok(ws: aiohttp.ClientWebSocketResponse, method: str, params: dict[str, Any]) -> Any:
    answer = await call(ws, method, params)
    assert answer["ok"] is True, answer
    return answer["payload"]


def held_settings(database: str, held: HeldOpenAI, slots: int, *, hooks: bool = False) -> str:
    """A process's config on the shared store: its model the held upstream, `slots` run
    slots, and the webhooks on when asked."""
    settings = json.loads(shared_config(database, delay_ms=0))
    settings.update(fake_provider(held))
    settings["agents"]["defaults"] = {"maxConcurrent": slots}
    if hooks:
        settings["hooks"] = {"enabled": True, "token": "hook-token-1"}
    return json.dumps(settings)


async def occupy_slot(ws: aiohttp.ClientWebSocketResponse, held: HeldOpenAI) -> None:
    """A turn of another session takes the process's run slot, held at the upstream."""
    busy = {"sessionKey": "other", "message": "hi", "idempotencyKey": "busy"}
    assert (await ok(ws, "chat.send", busy))["status"] == "started"
    await held.wait_for_requests(1, within=15)


async def described(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return (await ok(ws, "sessions.describe", {"key": KEY}))["session"]  # type: ignore[no-any-return]


class TestASessionChangedOnAnotherProcess:
    async def test_a_reset_there_shows_here_at_once_with_its_new_transcript(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        await chat(http, b.url, KEY, "hello")  # b holds the session live
        before = await described(on_b)
        reset = await ok(on_a, "sessions.reset", {"key": KEY})
        new_id = reset["entry"]["sessionId"]
        assert new_id != before["sessionId"]
        assert (await described(on_b))["sessionId"] == new_id
        history = await ok(on_b, "chat.history", {"sessionKey": KEY})
        assert history["sessionId"] == new_id
        assert history["messages"] == []
        # A patch naming the new id is taken there, not refused as naming a changed session.
        patch = {"key": KEY, "label": "after", "expectedSessionId": new_id}
        assert (await ok(on_b, "sessions.patch", patch))["entry"]["label"] == "after"

    async def test_a_delete_or_patch_there_shows_here_at_once(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        await chat(http, b.url, KEY, "hello")
        await ok(on_a, "sessions.patch", {"key": KEY, "label": "named"})
        assert (await described(on_b))["label"] == "named"
        await ok(on_a, "sessions.delete", {"key": KEY})
        history = await ok(on_b, "chat.history", {"sessionKey": KEY})
        assert history["messages"] == []
        assert (await described(on_b)).get("label") is None


async def waiting_for_turn_lock(conn: asyncpg.Connection) -> None:
    """Until some connection waits for a turn lock (held by the test)."""
    async with asyncio.timeout(15):
        while not await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1"
            " AND NOT granted",
            LOCK_CLASS_TURN,
        ):
            await asyncio.sleep(0.05)


async def queued_mark(pg_url: str, key: str) -> None:
    """Until the store says a turn of `key` is queued (its process waits for a run slot)."""
    async with PostgresSessionStore(pg_url) as store:
        try:
            async with asyncio.timeout(15):
                while not await store.claimed_run_going_on(key):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"nothing in the store says a turn of {key} waits: another process's"
                " chat.abort and maintenance cannot see it"
            ) from None


class TestAPatchOfALabelAndAnArchive:
    async def test_a_reset_while_it_waits_leaves_nothing_of_it_written(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        """The label was written first, then the archive refused as naming a changed
        session: the patch failed with half of it done."""
        a = start_gateway("a")
        on_a = await connect_ws(http, a.url)
        await chat(http, a.url, KEY, "hello")
        session_id = (await described(on_a))["sessionId"]
        holder = await asyncpg.connect(pg_url)
        try:
            # A turn of another process holds the session: the archive waits for it.
            await holder.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_CLASS_TURN, KEY)
            patch = {"key": KEY, "label": "half", "archived": True, "expectedSessionId": session_id}
            answer = asyncio.ensure_future(call(on_a, "sessions.patch", patch))
            await waiting_for_turn_lock(holder)
            async with PostgresSessionStore(pg_url) as store:
                await store.reset(KEY, "main", 1)  # that turn's process resets the session
            await holder.execute("SELECT pg_advisory_unlock_all()")
            refused = await answer
        finally:
            await holder.close()
        assert refused["ok"] is False, refused
        assert refused["error"]["details"] == {"reason": "session-changed"}
        after = await described(on_a)
        assert after.get("label") is None, after
        assert after.get("archivedAt") is None, after


class TestATurnWaitingForARunSlotOnAnotherProcess:
    async def test_is_aborted_by_a_chat_abort_naming_it_here(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """`chat.abort` with its run id on process a: its claim says the run goes on
        elsewhere, so a asks the other processes, though none holds the session's turn lock;
        b aborts it, and a's answer names it."""
        started: list[GatewayProcess] = []
        try:
            for name, slots in (("a", 4), ("b", 1)):
                start_on_config(started, tmp_path, name, held_settings(database, held, slots))
            a, b = started
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            await occupy_slot(on_b, held)
            waiting = {"sessionKey": KEY, "message": "hi", "idempotencyKey": "waiting"}
            assert (await ok(on_b, "chat.send", waiting))["status"] == "started"
            aborted = await ok(on_a, "chat.abort", {"sessionKey": KEY, "runId": "waiting"})
            assert aborted == {"ok": True, "aborted": True, "runIds": ["waiting"]}, aborted
            held.go.set()
            waited = await ok(on_b, "agent.wait", {"runId": "waiting", "timeoutMs": 20_000})
            assert waited["status"] == "timeout", waited  # agent.wait's word for aborted
            assert len(held.requests) == 1
            # A run id nobody runs is answered at once, as before.
            nothing = await ok(on_a, "chat.abort", {"sessionKey": KEY, "runId": "nobody"})
            assert nothing == {"ok": True, "aborted": False, "runIds": []}
        finally:
            for process in started:
                process.stop()

    @pytest.mark.parametrize("how", ["chat.abort", "/stop"])
    async def test_is_aborted_by_a_chat_abort_of_its_session_here(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        held: HeldOpenAI,
        how: str,
    ) -> None:
        """`chat.abort` without a run id (and `/stop`) on process a: no process holds the
        session's turn lock and b has said nothing of the run yet, so a asked nobody and
        answered `aborted: false`; the run then ran on b. Its claim names the session."""
        started: list[GatewayProcess] = []
        try:
            for name, slots in (("a", 4), ("b", 1)):
                start_on_config(started, tmp_path, name, held_settings(database, held, slots))
            a, b = started
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            await occupy_slot(on_b, held)
            waiting = {"sessionKey": KEY, "message": "hi", "idempotencyKey": "waiting"}
            assert (await ok(on_b, "chat.send", waiting))["status"] == "started"
            if how == "chat.abort":
                aborted = await ok(on_a, "chat.abort", {"sessionKey": KEY})
            else:
                stop = {"sessionKey": KEY, "message": "/stop", "idempotencyKey": "stop"}
                aborted = await ok(on_a, "chat.send", stop)
            assert aborted == {"ok": True, "aborted": True, "runIds": ["waiting"]}, aborted
            held.go.set()
            waited = await ok(on_b, "agent.wait", {"runId": "waiting", "timeoutMs": 20_000})
            assert waited["status"] == "timeout", waited  # agent.wait's word for aborted
            assert len(held.requests) == 1
            # Its claim now says it ended: an abort of the session asks nobody again.
            nothing = await ok(on_a, "chat.abort", {"sessionKey": KEY})
            assert nothing == {"ok": True, "aborted": False, "runIds": []}
        finally:
            for process in started:
                process.stop()

    async def test_keeps_its_session_from_another_processs_maintenance(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """Process b's maintenance protects the sessions of its own runs and those whose turn
        lock some process holds; a turn queued on a for a run slot holds none, so b pruned its
        idle session, and the turn then ended aborted on a, as in a session deleted since."""
        idle = "agent:main:idle"
        started: list[GatewayProcess] = []
        try:
            settings = held_settings(database, held, 1)
            a = start_on_config(started, tmp_path, "a", settings)
            async with PostgresSessionStore(pg_url) as store:  # after a's pass at its start
                for key in (KEY, idle):
                    await store.create(key, "main", 1)  # long idle: past pruneAfter
            on_a = await connect_ws(http, a.url)
            await occupy_slot(on_a, held)
            waiting = {"sessionKey": KEY, "message": "hi", "idempotencyKey": "waiting"}
            assert (await ok(on_a, "chat.send", waiting))["status"] == "started"
            b = start_on_config(started, tmp_path, "b", settings)
            pruned = b.wait_for_event("session_pruned")  # its pass at start
            assert pruned["keys"] == [idle], pruned
            held.go.set()
            waited = await ok(on_a, "agent.wait", {"runId": "waiting", "timeoutMs": 20_000})
            assert waited["status"] == "ok", waited
            assert len(held.requests) == 2
        finally:
            for process in started:
                process.stop()

    async def test_of_http_is_aborted_by_a_chat_abort_of_its_session_here(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """An HTTP turn claims no idempotency key: nothing in the store said it waited on b,
        and `chat.abort` of its session on a answered `aborted: false`. While it waits for a
        run slot, b marks its session queued."""
        started: list[GatewayProcess] = []
        try:
            for name, slots in (("a", 4), ("b", 1)):
                start_on_config(started, tmp_path, name, held_settings(database, held, slots))
            a, b = started
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            await occupy_slot(on_b, held)
            turn = asyncio.ensure_future(chat(http, b.url, KEY, "queued"))
            await queued_mark(pg_url, KEY)
            aborted = await ok(on_a, "chat.abort", {"sessionKey": KEY})
            assert aborted["aborted"] is True, aborted
            [run_id] = aborted["runIds"]
            assert run_id.startswith("chatcmpl-"), aborted
            answer = await turn
            assert answer["id"] == run_id, answer
            held.go.set()
            await ok(on_b, "agent.wait", {"runId": "busy", "timeoutMs": 20_000})
            assert len(held.requests) == 1
        finally:
            for process in started:
                process.stop()

    async def test_of_a_webhook_is_aborted_by_a_chat_abort_naming_its_run_here(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """A webhook call without an idempotency key is answered 202 with its run id at once;
        waiting for a run slot on b, it claims no key, and `chat.abort` naming the run on a
        asked only after a claim of that run id: it answered `aborted: false`."""
        started: list[GatewayProcess] = []
        try:
            for name, slots in (("a", 4), ("b", 1)):
                start_on_config(
                    started, tmp_path, name, held_settings(database, held, slots, hooks=True)
                )
            a, b = started
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            await occupy_slot(on_b, held)
            async with http.post(
                f"{b.url}/hooks/agent",
                json={"message": "queued"},
                headers={"Authorization": "Bearer hook-token-1"},
            ) as response:
                accepted = await response.json()
                assert response.status == 202, accepted
            await queued_mark(pg_url, accepted["sessionKey"])
            params = {"sessionKey": accepted["sessionKey"], "runId": accepted["runId"]}
            aborted = await ok(on_a, "chat.abort", params)
            assert aborted == {"ok": True, "aborted": True, "runIds": [accepted["runId"]]}
            held.go.set()
            await ok(on_b, "agent.wait", {"runId": "busy", "timeoutMs": 20_000})
            assert len(held.requests) == 1
        finally:
            for process in started:
                process.stop()

    @pytest.mark.parametrize("hook", ["agent", "wake"])
    async def test_of_a_webhook_is_answered_once_its_mark_is_written(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_server: PgServer,
        held: HeldOpenAI,
        hook: str,
    ) -> None:
        """The mark of a keyless webhook's turn waiting for a run slot was written after its
        answer: a `chat.abort` on another process sent as soon as the answer came found no
        turn (the mark's statement held back here, the answer came all the same)."""
        relay = StatementRelay("127.0.0.1", pg_server.port, QUEUED_SCOPE_PREFIX.encode())
        started: list[GatewayProcess] = []
        try:
            for name, slots in (("a", 4), ("b", 1)):
                url = database if name == "a" else relay.url(database)
                start_on_config(
                    started, tmp_path, name, held_settings(url, held, slots, hooks=True)
                )
            a, b = started
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            await occupy_slot(on_b, held)
            body = {"message": "queued"} if hook == "agent" else {"text": "queued"}

            async def post() -> tuple[int, dict[str, Any]]:
                async with http.post(
                    f"{b.url}/hooks/{hook}",
                    json=body,
                    headers={"Authorization": "Bearer hook-token-1"},
                ) as response:
                    return response.status, await response.json()

            answer = asyncio.create_task(post())
            await relay.wait_held()  # the mark's statement: not in the store yet
            # b has answered a request made after the webhook's (one more step of its loop).
            await ok(on_b, "sessions.list", {})
            answered_unmarked = answer.done()
            relay.release()
            status, accepted = await answer
            assert status == (202 if hook == "agent" else 200), accepted
            assert not answered_unmarked, "answered before its turn's mark was in the store"
            params = {"sessionKey": accepted["sessionKey"], "runId": accepted["runId"]}
            aborted = await ok(on_a, "chat.abort", params)
            assert aborted == {"ok": True, "aborted": True, "runIds": [accepted["runId"]]}
            held.go.set()
            await ok(on_b, "agent.wait", {"runId": "busy", "timeoutMs": 20_000})
            assert len(held.requests) == 1
        finally:
            for process in started:
                process.stop()
            relay.close()

    async def test_queued_behind_another_of_its_session_keeps_it_as_the_lock_goes(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_server: PgServer,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """The turn queued behind another of its session on b was marked nowhere once that
        one gave its lock back (b's unlock done in the database, its answer held back here):
        another process's maintenance deleted the session of the turn about to run."""
        # The reply to the unlock's execution (the send that binds the key, after the one
        # that prepares it): the lock is free in the database, b's worker not yet past it.
        relay = ReplyRelay("127.0.0.1", pg_server.port, b"hook:queued", after=b"pg_advisory_unlock")
        started: list[GatewayProcess] = []
        try:
            for name in ("b",):  # the other process: this test's own store, below
                settings = json.loads(shared_config(relay.url(database), delay_ms=0))
                settings.update(fake_provider(held))
                settings["hooks"] = {
                    "enabled": True,
                    "token": "hook-token-1",
                    "defaultSessionKey": "hook:queued",
                }
                start_on_config(started, tmp_path, name, json.dumps(settings))
            [b] = started
            accepted = []
            for text in ("first", "second"):
                async with http.post(
                    f"{b.url}/hooks/agent",
                    json={"message": text},
                    headers={"Authorization": "Bearer hook-token-1"},
                ) as response:
                    accepted.append(await response.json())
                    assert response.status == 202, accepted[-1]
                if text == "first":
                    await held.wait_for_requests(1, within=15)
            held.go.set()
            await relay.wait_held()  # the first turn's lock is given back
            day = 24 * 3600 * 1000
            maintenance = MaintenanceConfig(prune_after_ms=day, mode="enforce")
            async with PostgresSessionStore(pg_url) as store:
                pruned = await store.prune(maintenance, wall_clock_ms() + 40 * day)
            relay.release()
            assert pruned == []
        finally:
            for process in started:
                process.stop()
            relay.close()

    async def test_of_http_keeps_its_session_from_another_processs_maintenance(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        idle = "agent:main:idle"
        started: list[GatewayProcess] = []
        try:
            settings = held_settings(database, held, 1)
            a = start_on_config(started, tmp_path, "a", settings)
            async with PostgresSessionStore(pg_url) as store:  # after a's pass at its start
                for key in (KEY, idle):
                    await store.create(key, "main", 1)  # long idle: past pruneAfter
            on_a = await connect_ws(http, a.url)
            await occupy_slot(on_a, held)
            turn = asyncio.ensure_future(chat(http, a.url, KEY, "queued"))
            await queued_mark(pg_url, KEY)
            b = start_on_config(started, tmp_path, "b", settings)
            pruned = b.wait_for_event("session_pruned")  # its pass at start
            assert pruned["keys"] == [idle], pruned
            held.go.set()
            answer = await turn
            assert answer["choices"][0]["message"]["content"] == "held reply", answer
            async with PostgresSessionStore(pg_url) as store, asyncio.timeout(15):
                while await store.claimed_run_going_on(KEY):  # given up as it ran
                    await asyncio.sleep(0.05)
        finally:
            for process in started:
                process.stop()

    @pytest.mark.parametrize("method", ["sessions.delete", "sessions.reset"])
    async def test_is_ended_by_a_delete_or_reset_here_as_on_its_own_process(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
        method: str,
    ) -> None:
        """Process b runs one turn at a time (`maxConcurrent` 1): its turn of the session
        waits for the run slot, holding no turn lock and not yet announced. A delete or reset
        of the session on process a ends it, storing nothing, as one on b would: it does not
        run afterwards into the new session, or recreate the deleted one."""
        async with PostgresSessionStore(pg_url) as store:
            await store.create(KEY, "main", wall_clock_ms())
        started: list[GatewayProcess] = []
        try:
            for name, slots in (("a", 4), ("b", 1)):
                start_on_config(started, tmp_path, name, held_settings(database, held, slots))
            a, b = started
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            await occupy_slot(on_b, held)
            waiting = {"sessionKey": KEY, "message": "hi", "idempotencyKey": "waiting"}
            assert (await ok(on_b, "chat.send", waiting))["status"] == "started"
            await ok(on_a, method, {"key": KEY})
            held.go.set()
            waited = await ok(on_b, "agent.wait", {"runId": "waiting", "timeoutMs": 20_000})
            assert waited["status"] == "timeout", waited  # agent.wait's word for aborted
            await ok(on_b, "agent.wait", {"runId": "busy", "timeoutMs": 20_000})
            assert len(held.requests) == 1
            async with PostgresSessionStore(pg_url) as store:
                row = await store.get(KEY)
                if method == "sessions.delete":
                    assert row is None, row
                else:
                    assert row is not None
                    assert (await store.history(row.session_id, 10)).messages == ()
        finally:
            for process in started:
                process.stop()
