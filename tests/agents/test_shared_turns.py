"""Turns of one session key on two processes sharing a PostgreSQL store: two registries,
each on its own store and event bus, one database (README "Scaling out")."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import asyncpg
import attrs
import pytest

from agents import registry as registry_module
from agents import session
from agents.errors import SessionArchived, SessionChanged, TurnsBacklogged
from agents.registry import SessionRegistry
from agents.runs import AgentRun, TurnRequest
from agents.store_postgres import SQL_NOW_MS, PostgresSessionStore
from gateway.stores import abort_here
from tests.support.scripted import ScriptedPool, ScriptedProvider, make_config, until

pytestmark = pytest.mark.postgres

KEY = "agent:main:shared"


@attrs.define
class Process:
    store: PostgresSessionStore
    registry: SessionRegistry

    def submit(self, run_id: str, text: str) -> AgentRun:
        return self.registry.submit(TurnRequest("main", KEY, run_id, text))


@attrs.define
class TwoProcesses:
    stall: ScriptedProvider  # every turn streams "part", then waits until aborted
    a: Process
    b: Process


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[TwoProcesses]:
    stall = ScriptedProvider("stall", deltas=("part",), block=True)
    config = make_config(("stall/m",), apis=("stall",))
    processes = []
    for _ in range(2):
        store = PostgresSessionStore(pg_url)
        await store.open()
        registry = SessionRegistry(config, store, ScriptedPool([stall]))
        await store.bus.start(functools.partial(abort_here, registry))
        processes.append(Process(store, registry))
    yield TwoProcesses(stall, *processes)
    for process in processes:
        await process.registry.aclose()
        await process.store.bus.aclose()
        await process.store.aclose()


async def waiting_elsewhere(pair: TwoProcesses) -> tuple[AgentRun, AgentRun]:
    """A turn of the key running on `a`, and one on `b` waiting for it (it lent its slot)."""
    running = pair.a.submit("run-a", "first")
    await until(lambda: pair.stall.active == 1)
    waiting = pair.b.submit("run-b", "second")
    await until(lambda: pair.b.registry.slots.active == 0 and pair.b.store._lock_waiters == 1)
    return running, waiting


class TestWaitingForAnotherProcess:
    async def test_an_abort_ends_the_wait_at_once_and_stores_nothing(
        self, pair: TwoProcesses
    ) -> None:
        running, waiting = await waiting_elsewhere(pair)
        events = waiting.subscribe()
        assert waiting.abort() is True
        outcome = await asyncio.wait_for(waiting.wait(), 2)
        assert (outcome.status, outcome.started_at) == ("aborted", None)
        assert [(e.stream, dict(e.data)["phase"], e.data["aborted"]) async for e in events] == [
            ("lifecycle", "end", True)
        ]
        assert not running.ended  # the other process's turn goes on
        assert pair.b.registry.active_runs(KEY) == []
        running.abort()
        await running.wait()
        info = await pair.b.registry.history(KEY)
        assert [m.text for m in info.messages] == ["first", "part"]

    async def test_the_session_takes_its_next_turn_after_the_aborted_one(
        self, pair: TwoProcesses
    ) -> None:
        running, waiting = await waiting_elsewhere(pair)
        waiting.abort()
        await asyncio.wait_for(waiting.wait(), 2)
        after = pair.b.submit("run-c", "third")
        running.abort()
        await running.wait()
        await until(lambda: after.state == "running" and pair.stall.active == 1)
        after.abort()
        assert (await after.wait()).status == "aborted"
        info = await pair.b.registry.history(KEY)
        assert [m.text for m in info.messages] == ["first", "part", "third", "part"]
        # The worker gives its slot back after the terminal event, once the store's turn lock
        # is released (a round trip to PostgreSQL): not necessarily before that read.
        await until(lambda: pair.b.registry.slots.active == 0)

    async def test_a_reset_stops_the_turn_elsewhere_instead_of_waiting_for_it(
        self, pair: TwoProcesses
    ) -> None:
        running, waiting = await waiting_elsewhere(pair)
        old = running.session_id
        info = await asyncio.wait_for(pair.b.registry.reset(KEY), 5)
        assert info.session_id != old
        assert (await waiting.wait()).status == "aborted"
        assert (await running.wait()).status == "aborted"
        kept = await pair.b.store.history(old or "", 10)
        assert [m.text for m in kept.messages] == ["first", "part"]

    async def test_a_reset_does_not_wait_for_a_slot_another_session_holds(
        self, pair: TwoProcesses
    ) -> None:
        running, waiting = await waiting_elsewhere(pair)
        pair.b.registry.configure(make_config(("stall/m",), apis=("stall",), max_concurrent=1))
        other = pair.b.registry.submit(TurnRequest("main", "agent:main:other", "run-o", "x"))
        await until(lambda: pair.stall.active == 2)  # the slot `waiting` lent is taken
        await asyncio.wait_for(pair.b.registry.reset(KEY), 5)
        assert (await running.wait()).status == "aborted"
        assert (await waiting.wait()).status == "aborted"
        assert not other.ended
        other.abort()
        await other.wait()
        await until(lambda: pair.b.registry.slots.active == 0)  # nothing leaked


class TestArchivedElsewhere:
    async def test_archiving_on_one_process_stops_the_turn_and_the_next_on_the_other(
        self, pair: TwoProcesses
    ) -> None:
        running = pair.a.submit("run-a", "first")
        await until(lambda: pair.stall.active == 1)
        archived = await asyncio.wait_for(pair.b.registry.patch(KEY, archived=True), 5)
        assert archived is not None and archived.archived_at is not None
        assert (await asyncio.wait_for(running.wait(), 5)).status == "aborted"
        # `a` keeps the session live, its row from before the archive: the check reads the
        # shared row, and so does the turn, accepted past it.
        with pytest.raises(SessionArchived):
            await pair.a.registry.refuse_archived(KEY)
        late = pair.a.submit("run-late", "second")
        outcome = await asyncio.wait_for(late.wait(), 5)
        assert (outcome.status, outcome.started_at) == ("failed", None)
        assert isinstance(outcome.error, SessionArchived)
        info = await pair.a.registry.history(KEY)
        assert [m.text for m in info.messages] == ["first", "part"]

    async def test_a_patch_guarded_by_the_id_it_read_misses_a_reset_made_elsewhere(
        self, pair: TwoProcesses
    ) -> None:
        """`sessions.patch {expectedSessionId}`: the id is checked in the write, on the
        shared row, not on the row `a` read (kept live, from before `b`'s reset)."""
        pair.stall.block = False
        done = await asyncio.wait_for(pair.a.submit("run-a", "first").wait(), 5)
        assert done.status == "completed"
        read = await pair.a.registry.get_session(KEY)
        assert read is not None
        reset = await pair.b.registry.reset(KEY)
        for patch in (
            pair.a.registry.patch(KEY, label=("renamed",), expected_session_id=read.session_id),
            pair.a.registry.patch(KEY, archived=True, expected_session_id=read.session_id),
            pair.a.registry.patch(KEY, pinned=True, expected_session_id=read.session_id),
        ):
            with pytest.raises(SessionChanged):
                await asyncio.wait_for(patch, 5)
        row = await pair.b.store.get(KEY)
        assert row is not None
        assert (row.session_id, row.label, row.archived_at, row.pinned_at) == (
            reset.session_id, None, None, None
        )  # fmt: skip


class TestATurnAcceptedAfterARefusedOne:
    async def test_runs_in_the_session_its_key_holds_then(self, pair: TwoProcesses) -> None:
        """The archive check before a turn refused (the gateway's backlog full: an HTTP 503)
        left the session id it read for the next turn of the key accepted without a check of
        its own (a webhook's wake): after a reset on the other process, that turn was taken
        for one accepted before the reset, and ended aborted."""
        pair.stall.block = False
        first = await asyncio.wait_for(pair.a.submit("run-1", "first").wait(), 5)
        assert first.status == "completed"
        registry = pair.a.registry
        registry.max_waiting_turns = 1
        registry.slots.resize(0)  # a turn of another session waits: the backlog is full
        other = registry.submit(TurnRequest("main", "agent:main:other", "other", "x"))
        await registry.refuse_archived(KEY)
        with pytest.raises(TurnsBacklogged):
            pair.a.submit("refused", "refused")
        registry.slots.resize(4)
        assert (await asyncio.wait_for(other.wait(), 5)).status == "completed"
        reset = await pair.b.registry.reset(KEY)
        late = await asyncio.wait_for(pair.a.submit("run-2", "second").wait(), 5)
        assert (late.status, late.session_id) == ("completed", reset.session_id)


class CountedRenewals(PostgresSessionStore):
    """The store, telling how many claims each renewal statement renews."""

    renewed: list[int]

    async def extend_hook_call(self, scope: str, run_id: str, keep_ms: int) -> bool:
        self.renewed.append(1)
        return await super().extend_hook_call(scope, run_id, keep_ms)

    async def extend_hook_calls(self, claims: list[tuple[str, str]], keep_ms: int) -> list[str]:
        self.renewed.append(len(claims))
        return await super().extend_hook_calls(claims, keep_ms)


class TestTurnsWaitingForARunSlot:
    async def test_their_marks_are_renewed_in_one_statement(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each waiting session's mark was renewed by an UPDATE of its own, every 5 s: a
        process with a thousand turns waiting sent a thousand."""
        monkeypatch.setattr(session, "QUEUED_LEASE_S", 0.6)  # renewed every 0.2 s
        store = CountedRenewals(pg_url)
        store.renewed = []
        await store.open()
        stall = ScriptedProvider("stall", deltas=("part",), block=True)
        registry = SessionRegistry(
            make_config(("stall/m",), apis=("stall",)), store, ScriptedPool([stall])
        )
        await store.bus.start(functools.partial(abort_here, registry))
        conn = await asyncpg.connect(pg_url)
        try:
            registry.slots.resize(0)  # every turn waits for a run slot
            runs = [
                registry.submit(TurnRequest("main", f"agent:main:w{n}", f"w{n}", "hi"))
                for n in range(3)
            ]
            async with asyncio.timeout(10):
                while await conn.fetchval(
                    "SELECT count(*) FROM hook_calls WHERE scope LIKE 'queued:%'"
                ) < len(runs):
                    await asyncio.sleep(0.02)
                store.renewed.clear()
                while len(store.renewed) < 3:
                    await asyncio.sleep(0.02)
            assert store.renewed[:3] == [3, 3, 3]
            for run in runs:
                run.abort("aborted")
            async with asyncio.timeout(10):
                while await conn.fetchval("SELECT count(*) FROM hook_calls"):
                    await asyncio.sleep(0.02)
        finally:
            await conn.close()
            await registry.aclose()
            await store.bus.aclose()
            await store.aclose()

    async def test_a_mark_cancelled_at_shutdown_is_released(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A shutdown whose grace ran out cancelled the mark's task as it waited for the turn
        to run: the mark stayed for its lease, and another process's `chat.abort` or webhook
        retry meanwhile saw a queued turn that would never run."""
        monkeypatch.setattr(registry_module, "SHUTDOWN_GRACE_S", 0)  # every task is late
        store = PostgresSessionStore(pg_url)
        await store.open()
        registry = SessionRegistry(
            make_config(("stall/m",), apis=("stall",)),
            store,
            ScriptedPool([ScriptedProvider("stall", deltas=("part",), block=True)]),
        )
        try:
            registry.slots.resize(0)  # the turn waits for a run slot, marked
            registry.submit(TurnRequest("main", KEY, "queued", "hi"))
            await asyncio.wait_for(registry.queued_marked(KEY), 5)
            assert await store.claimed_run_going_on(KEY)
            await registry.aclose()
            assert not await store.claimed_run_going_on(KEY)
        finally:
            await store.aclose()

    async def test_a_mark_lost_while_the_database_was_away_is_made_again(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A mark whose lease ran out while its renewals failed (the database away longer
        than 15 s) was forgotten by the next claim of any process, and never made again: for
        the rest of the turn's wait, another process's `chat.abort` missed it and its
        maintenance could delete the session."""
        monkeypatch.setattr(session, "QUEUED_LEASE_S", 0.6)  # renewed every 0.2 s
        store = CountedRenewals(pg_url)
        store.renewed = []
        await store.open()
        registry = SessionRegistry(
            make_config(("stall/m",), apis=("stall",)),
            store,
            ScriptedPool([ScriptedProvider("stall", deltas=("part",), block=True)]),
        )
        conn = await asyncpg.connect(pg_url)
        try:
            registry.slots.resize(0)  # the turn waits for a run slot, marked
            run = registry.submit(TurnRequest("main", KEY, "queued", "hi"))
            await asyncio.wait_for(registry.queued_marked(KEY), 5)
            # Its lease out, and forgotten, as the next claim of any process does.
            await conn.execute(f"UPDATE hook_calls SET expires_at = {SQL_NOW_MS} - 1")
            await store.claim_call("other", "t", "agent:main:other", 60_000)
            assert not await store.claimed_run_going_on(KEY)
            store.renewed.clear()
            async with asyncio.timeout(10):
                while len(store.renewed) < 2:  # a renewal begun after the loss has ended
                    await asyncio.sleep(0.02)
            assert await store.claimed_run_going_on(KEY)
            run.abort("aborted")
            async with asyncio.timeout(10):
                while await conn.fetchval("SELECT count(*) FROM hook_calls WHERE scope <> 'other'"):
                    await asyncio.sleep(0.02)
        finally:
            await conn.close()
            await registry.aclose()
            await store.aclose()
