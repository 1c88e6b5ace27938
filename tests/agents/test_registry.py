"""The session registry: reset, delete, labels, listing, live sessions, maintenance,
shutdown (agents-sessions.md §2.3-2.4, §5; ws-protocol.md §8 `sessions.*`)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents import registry as registry_module
from agents.config import AgentConfig, MaintenanceConfig, ModelRef
from agents.errors import AgentError, InvalidSessionKey
from agents.events import SessionChange
from agents.registry import SessionRegistry
from agents.runs import TurnRequest
from agents.store import SessionStore
from tests.support.scripted import (
    FIXED_NOW,
    Harness,
    ScriptedPool,
    ScriptedProvider,
    make_config,
    until,
)

DAY = 24 * 3600 * 1000


def req(session: str = "s1", text: str = "hi", **fields: Any) -> TurnRequest:
    fields.setdefault("run_id", f"chatcmpl-{uuid.uuid4().hex}")
    return TurnRequest("main", f"agent:main:{session}", text=text, **fields)


async def reply(registry: SessionRegistry, session: str = "s1", text: str = "hi") -> str:
    return (await registry.submit(req(session, text)).wait()).text


def stalling(harness: Harness, **config: Any) -> tuple[SessionRegistry, ScriptedProvider]:
    """A registry whose runs stream "partial" and then wait until aborted."""
    stall = ScriptedProvider("stall", deltas=("partial",), block=True)
    registry = harness.registry(make_config(("stall/m",), apis=("stall",), **config), [stall])
    return registry, stall


def changes(got: list[object]) -> list[SessionChange]:
    return [c for c in got if isinstance(c, SessionChange)]


class TestReset:
    async def test_reset_starts_a_new_transcript(self, harness: Harness) -> None:
        registry = harness.registry()
        await registry.patch("agent:main:s1", label=("mine",))
        await reply(registry)
        await reply(registry)
        old = await registry.get_session("agent:main:s1")
        got: list[object] = []
        registry.add_listener(got.append)
        info = await registry.reset("agent:main:s1")
        assert old is not None and info.session_id != old.session_id
        assert (info.label, info.input_tokens, info.output_tokens, info.total_tokens) == (
            "mine", 0, 0, 0
        )  # fmt: skip
        assert (info.status, info.aborted_last_run, info.created_at) == (
            "idle",
            False,
            old.created_at,
        )
        [change] = changes(got)
        assert (change.reason, change.session) == ("reset", info)
        assert await reply(registry) == "[turn 1] hi"
        assert (await registry.store.history(old.session_id, 10)).total == 4  # kept

    async def test_reset_aborts_the_runs_first(self, harness: Harness) -> None:
        registry, stall = stalling(harness)
        running = registry.submit(req())
        queued = registry.submit(req())
        await stall.first_delta.wait()
        old_sid = running.session_id
        assert old_sid is not None
        info = await registry.reset("agent:main:s1")
        assert running.outcome is not None and running.outcome.status == "aborted"
        assert queued.outcome is not None and queued.outcome.status == "aborted"
        old = await registry.store.history(old_sid, 10)
        assert [m.text for m in old.messages] == ["hi", "partial"]  # committed before the reset
        assert old.messages[1].aborted
        assert (await registry.history("agent:main:s1")).total == 0
        assert info.status == "idle"

    async def test_reset_of_an_unknown_key_creates_it(self, harness: Harness) -> None:
        registry = harness.registry()
        info = await registry.reset("agent:main:new")
        assert info.key == "agent:main:new" and info.status == "idle"


class TestDelete:
    async def test_delete_then_a_fresh_session(self, harness: Harness) -> None:
        registry = harness.registry()
        await reply(registry)
        old = await registry.get_session("agent:main:s1")
        got: list[object] = []
        registry.add_listener(got.append)
        assert await registry.delete("agent:main:s1") is True
        assert [(c.reason, c.session) for c in changes(got)] == [("delete", None)]
        assert await registry.get_session("agent:main:s1") is None
        assert old is not None and (await registry.store.history(old.session_id, 10)).total == 0
        assert await registry.delete("agent:main:s1") is False
        assert await reply(registry) == "[turn 1] hi"

    async def test_delete_can_keep_the_transcript(self, harness: Harness) -> None:
        registry = harness.registry()
        await reply(registry)
        old = await registry.get_session("agent:main:s1")
        assert await registry.delete("agent:main:s1", delete_transcript=False)
        assert old is not None and (await registry.store.history(old.session_id, 10)).total == 2

    async def test_main_sessions_cannot_be_deleted(self, harness: Harness) -> None:
        registry = harness.registry(make_config(main_key="home"))
        await reply(registry, "home")
        with pytest.raises(InvalidSessionKey) as info:
            await registry.delete("agent:main:home")
        assert info.value.message == "Cannot delete the main session (agent:main:home)."
        assert await registry.get_session("agent:main:home") is not None

    async def test_delete_aborts_the_running_turn(self, harness: Harness) -> None:
        registry, stall = stalling(harness)
        run = registry.submit(req())
        await stall.first_delta.wait()
        assert await registry.delete("agent:main:s1")
        assert run.outcome is not None and run.outcome.status == "aborted"
        assert stall.cancelled == 1
        assert await registry.get_session("agent:main:s1") is None


class TestChangeInterest:
    async def test_no_session_change_is_built_while_no_listener_wants_one(
        self, harness: Harness
    ) -> None:
        registry = harness.registry()
        wanted = False
        got: list[object] = []
        registry.add_listener(got.append, changes=lambda: wanted)
        await reply(registry)
        await registry.delete("agent:main:s1")
        assert changes(got) == []
        assert got  # the run events still came
        wanted = True
        await reply(registry)
        await registry.delete("agent:main:s1")
        reasons = [c.reason for c in changes(got)]
        assert (reasons[0], reasons[-1]) == ("create", "delete")

    async def test_one_interested_listener_gets_changes_to_every_listener(
        self, harness: Harness
    ) -> None:
        registry = harness.registry()
        quiet: list[object] = []
        interested: list[object] = []
        registry.add_listener(quiet.append, changes=lambda: False)
        registry.add_listener(interested.append)
        await reply(registry)
        assert changes(quiet) == changes(interested) != []


class TestLabelsAndListing:
    async def test_a_label_upserts(self, harness: Harness) -> None:
        registry = harness.registry(clock=lambda: FIXED_NOW)
        got: list[object] = []
        registry.add_listener(got.append)
        info = await registry.patch("agent:main:x", label=("Project",))
        assert (info.label, info.status, info.created_at) == ("Project", "idle", FIXED_NOW)
        assert [(c.reason, c.session) for c in changes(got)] == [("patch", info)]
        cleared = await registry.patch("agent:main:x", label=(None,))
        assert cleared.label is None and cleared.session_id == info.session_id
        assert await reply(registry, "x") == "[turn 1] hi"

    async def test_a_label_given_during_a_minted_keys_first_turn_keeps_that_turn(
        self, harness: Harness
    ) -> None:
        # The key of a stateless request is in its response's headers (and in the
        # sessions.changed that announced it) while its first turn runs, whose row is written
        # only with the turn: a label given meanwhile created the row under another session
        # id, and the turn was stored where the session never looked.
        registry, stall = stalling(harness)
        run = registry.submit(req("openai:minted", stateless=True, new_key=True))
        await until(lambda: stall.active == 1)
        labelled = await registry.patch("agent:main:openai:minted", label=("Named",))
        run.abort()
        outcome = await run.wait()
        info = await registry.get_session("agent:main:openai:minted")
        assert info is not None
        assert (info.label, info.session_id) == ("Named", outcome.session_id)
        assert labelled.key == info.key
        transcript = await registry.history("agent:main:openai:minted")
        assert [m.role for m in transcript.messages] == ["user", "assistant"]
        stall.block = False
        second = await registry.submit(req("openai:minted", "again")).wait()
        assert second.session_id == outcome.session_id
        transcript = await registry.history("agent:main:openai:minted")
        assert [m.role for m in transcript.messages] == ["user", "assistant"] * 2

    async def test_session_row_as_sessions_list_wants_it(self, harness: Harness) -> None:
        registry = harness.registry(clock=lambda: FIXED_NOW)
        await registry.submit(req("main", run_id="idem-2")).wait()
        listed = await registry.list_sessions()
        assert (listed.total_count, listed.has_more) == (1, False)
        [info] = listed.sessions
        assert info.to_dict() == {
            "key": "agent:main:main",
            "kind": "direct",
            "agentId": "main",
            "isMain": True,
            "label": None,
            "sessionId": info.session_id,
            "createdAt": FIXED_NOW,
            "updatedAt": FIXED_NOW,
            "abortedLastRun": False,
            "inputTokens": 1,
            "outputTokens": 3,
            "totalTokens": 1,
            "modelProvider": "echo",
            "model": "echo",
            "status": "done",
            "lastRunId": "idem-2",
            "hasActiveRun": False,
            "activeRunIds": [],
        }

    async def test_listing_shows_active_runs(self, harness: Harness) -> None:
        registry, stall = stalling(harness)
        running = registry.submit(req("s1", run_id="a"))
        queued = registry.submit(req("s1", run_id="b"))
        await stall.first_delta.wait()
        [info] = (await registry.list_sessions()).sessions
        assert (info.status, info.active_run_ids, info.has_active_run) == (
            "running",
            ("a", "b"),
            True,
        )
        assert (await registry.get_session("agent:main:s1")) == info
        registry.abort_session("agent:main:s1")
        await asyncio.gather(running.wait(), queued.wait())
        [info] = (await registry.list_sessions()).sessions
        assert (info.status, info.active_run_ids, info.aborted_last_run) == ("aborted", (), True)

    async def test_listing_filters_and_limit(self, harness: Harness) -> None:
        registry = harness.registry()
        for name in ("a", "b", "c"):
            await reply(registry, name)
        await registry.patch("agent:main:b", label=("Bee",))
        page = await registry.list_sessions(limit=2)
        assert [s.key for s in page.sessions] == ["agent:main:b", "agent:main:c"]
        assert (page.total_count, page.has_more) == (3, True)
        assert [s.key for s in (await registry.list_sessions(search="bee")).sessions] == [
            "agent:main:b"
        ]
        assert (await registry.list_sessions(agent_id="ops")).total_count == 0

    async def test_history_of_the_current_transcript(self, harness: Harness) -> None:
        registry = harness.registry()
        for _ in range(3):
            await reply(registry)
        transcript = await registry.history("agent:main:s1", 3)
        assert (transcript.total, transcript.has_more) == (6, True)
        assert [m.seq for m in transcript.messages] == [4, 5, 6]
        assert transcript.session is not None and transcript.session.key == "agent:main:s1"
        unknown = await registry.history("agent:main:none")
        assert (unknown.session, unknown.messages, unknown.total) == (None, (), 0)
        assert await registry.get_session("agent:main:none") is None


class TestRunsAndLiveSessions:
    async def test_runs_are_found_while_active_and_after_the_end(self, harness: Harness) -> None:
        registry, stall = stalling(harness)
        run = registry.submit(req(run_id="r1", idempotency_key="r1"))
        assert registry.run("r1") is run
        assert registry.run("nope") is None
        await stall.first_delta.wait()
        run.abort()
        await run.wait()
        assert registry.run("r1") is run

    async def test_abort_session_and_active_runs(self, harness: Harness) -> None:
        registry, stall = stalling(harness)
        runs = [registry.submit(req(run_id=f"r{i}")) for i in range(3)]
        await stall.first_delta.wait()
        assert [r.id for r in registry.active_runs("agent:main:s1")] == ["r0", "r1", "r2"]
        stats = registry.stats()
        assert (stats.active, stats.queued, stats.max_concurrent) == (1, 2, 4)
        assert registry.abort_session("agent:main:s1") == ["r0", "r1", "r2"]
        assert registry.abort_session("agent:main:s1") == []
        assert registry.abort_session("agent:main:unknown") == []
        outcomes = await asyncio.gather(*(r.wait() for r in runs))
        assert [o.status for o in outcomes] == ["aborted"] * 3
        assert registry.active_runs("agent:main:s1") == []
        assert (registry.stats().active, registry.stats().queued) == (0, 0)

    async def test_idle_sessions_are_evicted_and_reload_intact(self, harness: Harness) -> None:
        registry = harness.registry(max_live_sessions=2)
        for name in ("s1", "s2", "s3", "s4"):
            assert await reply(registry, name) == "[turn 1] hi"
        assert registry.stats().live_sessions == 2
        assert await reply(registry, "s1") == "[turn 2] hi"
        info = await registry.get_session("agent:main:s1")
        assert info is not None and (info.last_run_id, info.status) == (
            (await registry.history("agent:main:s1")).messages[-1].run_id, "done"
        )  # fmt: skip

    async def test_busy_sessions_are_never_evicted(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", deltas=("x",), block=True)
        slow = AgentConfig("slow", (ModelRef("stall", "m"),))
        registry = harness.registry(
            make_config(agents=[slow], apis=("stall",)), [stall], max_live_sessions=1
        )
        busy = registry.submit(TurnRequest("slow", "agent:slow:s1", "b", "hi"))
        await stall.first_delta.wait()
        for name in ("s2", "s3"):
            await reply(registry, name)
        assert [r.id for r in registry.active_runs("agent:slow:s1")] == ["b"]
        busy.abort()
        await busy.wait()
        await reply(registry, "s4")
        assert registry.stats().live_sessions == 1

    async def test_a_new_key_runs_its_turns_one_at_a_time_while_every_live_session_is_busy(
        self, harness: Harness
    ) -> None:
        stall = ScriptedProvider("stall", deltas=("x",), block=True)
        config = make_config(("stall/m",), apis=("stall",))
        registry = harness.registry(config, [stall], max_live_sessions=1)
        registry.submit(req("s1"))
        await stall.first_delta.wait()
        first, second = registry.submit(req("s2")), registry.submit(req("s2"))
        # The key's one session holds both: abort and reset reach them.
        assert registry.active_runs("agent:main:s2") == [first, second]
        await until(lambda: stall.active == 2)
        for _ in range(10):
            await asyncio.sleep(0)
        assert (stall.active, first.state, second.state) == (2, "running", "queued")
        assert registry.abort_session("agent:main:s2") == [first.id, second.id]


class TestRunEndsAnnounced:
    """Every run's terminal event is followed by `sessions.changed` END (as on OpenClaw),
    also for a run that never started; its snapshot no longer lists the run."""

    async def test_a_run_whose_agent_was_removed_while_it_waited(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", deltas=("x",), block=True)
        slow = AgentConfig("slow", (ModelRef("stall", "m"),))
        registry = harness.registry(make_config(agents=[slow], apis=("stall",)), [stall])
        first = registry.submit(TurnRequest("slow", "agent:slow:s1", "r1", "hi"))
        waiting = registry.submit(TurnRequest("slow", "agent:slow:s1", "r2", "hi"))
        await stall.first_delta.wait()
        registry.configure(make_config(apis=("stall",)))  # `slow` is gone
        got: list[object] = []
        registry.add_listener(got.append)
        first.abort()
        assert (await waiting.wait()).status == "failed"
        ends = [c for c in changes(got) if c.phase == "end"]
        assert [(c.run_id, c.session and c.session.active_run_ids) for c in ends] == [
            ("r1", ("r2",)), ("r2", ())
        ]  # fmt: skip


def ws_req(session: str, key: str, text: str = "hi") -> TurnRequest:
    """A WS `chat.send`/`agent` turn: its run id is the client's idempotency key."""
    return req(session, text, run_id=key, idempotency_key=key)


class TestEndedRuns:
    async def test_expire_on_the_timer_without_any_lookup(self, harness: Harness) -> None:
        registry = harness.registry(finished_run_ttl_s=0.05)
        await registry.start()
        await registry.submit(ws_req("s1", "k1")).wait()
        assert registry.finished_runs[0] == 1
        await until(lambda: registry.finished_runs == (0, 0))

    async def test_ws_runs_are_found_within_the_ttl(self, harness: Harness) -> None:
        registry = harness.registry(finished_run_ttl_s=60)
        await registry.start()
        run = registry.submit(ws_req("s1", "k1"))
        await run.wait()
        found = registry.run("k1")
        assert found is run and found.outcome is not None
        assert (found.outcome.status, found.session_key) == ("completed", "agent:main:s1")

    async def test_http_runs_are_not_kept(self, harness: Harness) -> None:
        registry = harness.registry()
        run = registry.submit(req())
        await run.wait()
        assert registry.run(run.id) is None
        assert registry.finished_runs == (0, 0)

    async def test_the_byte_budget_evicts_the_oldest_first(self, harness: Harness) -> None:
        registry = harness.registry(finished_runs_max_bytes=250_000)
        for key in ("k1", "k2", "k3"):  # one after the other: they end in this order
            run = registry.submit(ws_req(key, key, "x" * 100_000))
            await run.wait()
        size = run.retained_bytes()
        assert size > 100_000  # the echoed reply is counted
        assert [registry.run(k) is not None for k in ("k1", "k2", "k3")] == [False, True, True]
        assert registry.finished_runs == (2, 2 * size)

    async def test_an_ended_run_keeps_no_prompt(self, harness: Harness) -> None:
        registry = harness.registry()
        run = registry.submit(ws_req("s1", "k1", "a long prompt"))
        await run.wait()
        assert (run.request.text, run.request.images, dict(run.request.params)) == ("", (), {})
        assert (run.request.run_id, run.request.idempotency_key) == ("k1", "k1")

    async def test_stateless_sessions_leave_the_live_map_when_idle(self, harness: Harness) -> None:
        registry = harness.registry()
        await registry.submit(req("openai:one", stateless=True)).wait()
        await registry.submit(req("named")).wait()
        await until(lambda: registry.stats().live_sessions == 1)
        assert [r.key for r in (await registry.list_sessions()).sessions] == [
            "agent:main:named",
            "agent:main:openai:one",
        ]

    async def test_stateless_sessions_aborted_while_waiting_for_a_slot_leave_at_once(
        self, harness: Harness
    ) -> None:
        # Every slot is taken by a long turn; requests that give up meanwhile (clients that
        # time out and retry) must not each leave a session and its waiting worker behind
        # until a slot frees, hours later.
        registry, stall = stalling(harness, max_concurrent=1)
        busy = registry.submit(req("busy"))
        await until(lambda: stall.active == 1)
        for i in range(50):
            run = registry.submit(req(f"openai:{i}", stateless=True, new_key=True))
            await asyncio.sleep(0)  # its worker now waits for the slot
            assert run.abort() is True
            assert (await run.wait()).status == "aborted"
        await until(lambda: registry.stats().live_sessions == 1)
        assert registry.slots.active == 1
        # A turn that comes later still gets the slot when it frees, and runs.
        later = registry.submit(req("openai:later", stateless=True, new_key=True))
        busy.abort()
        await busy.wait()
        stall.block = False
        assert (await later.wait()).status == "completed"
        await until(lambda: registry.stats().live_sessions == 1 and registry.slots.active == 0)

    async def test_a_turn_queued_right_after_the_last_queued_one_was_aborted_runs(
        self, harness: Harness
    ) -> None:
        registry, stall = stalling(harness, max_concurrent=1)
        busy = registry.submit(req("busy"))
        await until(lambda: stall.active == 1)
        first = registry.submit(req("s2"))
        await asyncio.sleep(0)
        first.abort()
        second = registry.submit(req("s2"))  # before the worker saw its wait cancelled
        busy.abort()
        await busy.wait()
        stall.block = False
        async with asyncio.timeout(5):
            assert (await second.wait()).status == "completed"
        await until(lambda: registry.slots.active == 0)

    async def test_a_stateless_turn_creates_its_row_in_the_turns_commit(
        self, harness: Harness
    ) -> None:
        registry = harness.registry()
        before = harness.store.commits
        run = registry.submit(req("openai:fresh", stateless=True, new_key=True))
        await run.wait()
        assert harness.store.commits - before == 1
        row = await harness.store.get("agent:main:openai:fresh")
        assert row is not None
        assert (row.created_at, row.last_run_id) == (run.accepted_at, run.id)
        assert await harness.store.is_stateless(row.key) is True
        assert (await harness.store.history(row.session_id, 10)).total == 2

    async def test_a_continued_stateless_session_keeps_its_history(self, harness: Harness) -> None:
        """`previous_response_id` continues a stateless session: its key is not new."""
        registry = harness.registry()
        await registry.submit(req("openai:again", "one", stateless=True, new_key=True)).wait()
        run = registry.submit(req("openai:again", "two", stateless=True))
        await run.wait()
        row = await harness.store.get("agent:main:openai:again")
        assert row is not None
        assert (await harness.store.history(row.session_id, 10)).total == 4


class TestMaintenance:
    async def fill(self, store: SessionStore, now: int) -> None:
        await store.create("agent:main:main", "main", now - 90 * DAY)
        for i in range(3):
            await store.create(f"agent:main:old{i}", "main", now - 40 * DAY)
        await store.create("agent:main:fresh", "main", now - DAY)

    async def test_warn_mode_logs_the_candidates_at_start(self, harness: Harness) -> None:
        now = 1000 * DAY
        await self.fill(harness.store, now)
        registry = harness.registry(
            make_config(maintenance=MaintenanceConfig(mode="warn")), clock=lambda: now
        )
        with capture_logs() as logs:
            await registry.start()
        [entry] = [e for e in logs if e["event"] == "session_prune_candidates"]
        assert entry["count"] == 3 and entry["log_level"] == "warning"
        assert await harness.store.count() == 5

    async def test_enforce_mode_prunes_but_not_active_sessions(self, harness: Harness) -> None:
        now = 1000 * DAY
        await self.fill(harness.store, now)
        registry, stall = stalling(
            harness, maintenance=MaintenanceConfig(mode="enforce", max_entries=500)
        )
        registry.clock = lambda: now
        run = registry.submit(req("old0"))
        await stall.first_delta.wait()
        got: list[object] = []
        registry.add_listener(got.append)
        pruned = await registry.maintain()
        assert sorted(r.key for r in pruned) == ["agent:main:old1", "agent:main:old2"]
        assert [(c.session_key, c.reason) for c in changes(got)] == [
            ("agent:main:old1", "delete"), ("agent:main:old2", "delete")
        ]  # fmt: skip
        assert sorted(s.key for s in (await registry.list_sessions()).sessions) == [
            "agent:main:fresh", "agent:main:main", "agent:main:old0"
        ]  # fmt: skip
        run.abort()
        await run.wait()

    async def test_a_turn_that_races_the_prune_of_its_session_replays_only_stored_messages(
        self, harness: Harness
    ) -> None:
        """A turn submitted while a pass deletes its session recreates it (the store's
        upsert); the replay window kept from before the prune must not outlive it."""
        now = [1000 * DAY]
        registry = harness.registry(clock=lambda: now[0])
        for _ in range(3):
            await reply(registry)
        now[0] += 40 * DAY
        prune = asyncio.ensure_future(registry.maintain())
        await asyncio.sleep(0)  # its job is on the store thread's queue
        racing = registry.submit(req())  # its reads queue behind the prune
        assert [row.key for row in await prune] == ["agent:main:s1"]
        assert (await racing.wait()).text == "[turn 1] hi"
        assert await reply(registry) == "[turn 2] hi"


class TestMaintenanceAfterReload:
    """A reload that changes `session.maintenance` brings the next pass forward (a stricter
    limit need not wait up to an hour); reloads in a row share one pass, and a reload that
    leaves the settings alone brings none."""

    NOW = 1000 * DAY
    SOON = 0.2

    async def started(self, harness: Harness, maintenance: MaintenanceConfig) -> SessionRegistry:
        await TestMaintenance().fill(harness.store, self.NOW)
        registry = harness.registry(
            make_config(maintenance=maintenance),
            clock=lambda: self.NOW,
            maintenance_after_reload_s=self.SOON,
        )
        await registry.start()
        return registry

    async def test_a_stricter_setting_is_applied_soon_after_the_reload(
        self, harness: Harness
    ) -> None:
        registry = await self.started(harness, MaintenanceConfig(mode="warn"))
        registry.configure(make_config(maintenance=MaintenanceConfig(mode="enforce")))
        await asyncio.sleep(self.SOON / 4)
        assert await harness.store.count() == 5  # not at once: a burst shares the pass
        async with asyncio.timeout(5):
            while await harness.store.count() != 2:
                await asyncio.sleep(0.01)

    async def test_reloads_in_a_row_share_one_pass_with_the_last_settings(
        self, harness: Harness
    ) -> None:
        registry = await self.started(harness, MaintenanceConfig(mode="warn", max_entries=400))
        with capture_logs() as logs:
            registry.configure(make_config(maintenance=MaintenanceConfig(mode="enforce")))
            registry.configure(make_config(maintenance=MaintenanceConfig(mode="warn")))
            await until(lambda: any(e["event"] == "session_prune_candidates" for e in logs))
            await asyncio.sleep(self.SOON * 2)
        assert [e["event"] for e in logs] == ["session_prune_candidates"]
        assert await harness.store.count() == 5

    async def test_a_reload_that_leaves_the_settings_alone_brings_no_pass(
        self, harness: Harness
    ) -> None:
        registry = await self.started(harness, MaintenanceConfig(mode="warn"))
        with capture_logs() as logs:
            registry.configure(
                make_config(history_limit=10, maintenance=MaintenanceConfig(mode="warn"))
            )
            await asyncio.sleep(self.SOON * 3)
        assert logs == []


class TestStatelessMaintenance:
    NOW = 100 * DAY

    async def fill(self, store: SessionStore, count: int) -> list[str]:
        """`count` stateless sessions over a day old, and one named session as old."""
        keys = [f"agent:main:openai:{uuid.UUID(int=i)}" for i in range(count)]
        for i, key in enumerate(keys):
            await store.create(key, "main", self.NOW - DAY - 1000 + i, stateless=True)
        await store.create("agent:main:named", "main", self.NOW - DAY - 1000)
        return keys

    async def test_a_pass_works_through_every_batch(self, harness: Harness) -> None:
        keys = await self.fill(harness.store, 5)
        registry = harness.registry(clock=lambda: self.NOW, maintenance_batch=2)
        with capture_logs() as logs:
            pruned = await registry.maintain()
        assert [r.key for r in pruned] == keys
        [entry] = [e for e in logs if e["event"] == "session_pruned"]
        assert (entry["count"], entry["more"]) == (5, False)
        assert [s.key for s in (await registry.list_sessions()).sessions] == ["agent:main:named"]

    async def test_a_pass_stops_at_its_time_budget(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(registry_module, "MAINTENANCE_PASS_S", 0.0)
        keys = await self.fill(harness.store, 5)
        registry = harness.registry(clock=lambda: self.NOW, maintenance_batch=2)
        with capture_logs() as logs:
            assert [r.key for r in await registry.maintain()] == keys[:2]
        [entry] = [e for e in logs if e["event"] == "session_pruned"]
        assert (entry["count"], entry["more"]) == (2, True)
        assert [r.key for r in await registry.maintain()] == keys[2:4]  # the next pass goes on

    async def test_warn_mode_only_logs(self, harness: Harness) -> None:
        keys = await self.fill(harness.store, 3)
        config = make_config(maintenance=MaintenanceConfig(mode="warn"))
        registry = harness.registry(config, clock=lambda: self.NOW)
        with capture_logs() as logs:
            await registry.maintain()
        assert [(e["event"], e["log_level"], e["count"], e["keys"]) for e in logs] == [
            ("session_prune_candidates", "warning", 3, keys)
        ]
        assert await harness.store.count() == 4


class TestShutdown:
    async def test_aclose_aborts_commits_and_leaves_no_task(self, harness: Harness) -> None:
        before = asyncio.all_tasks()
        registry, stall = stalling(harness, max_concurrent=2)
        await registry.start()
        runs = [registry.submit(req(f"s{i % 3}")) for i in range(6)]
        await until(lambda: stall.active == 2)
        assert len(asyncio.all_tasks()) > len(before)
        await registry.aclose()
        assert asyncio.all_tasks() == before
        assert all(r.outcome is not None and r.outcome.status == "aborted" for r in runs)
        started = [r for r in runs if r.outcome and r.outcome.started_at is not None]
        assert len(started) == 2 and stall.cancelled == 2
        for run in started:
            transcript = await registry.history(run.session_key)
            assert transcript.messages[-1].run_id == run.id and transcript.messages[-1].aborted
        assert isinstance(registry.providers, ScriptedPool) and registry.providers.closed
        with pytest.raises(AgentError):
            registry.submit(req())
        await registry.aclose()  # twice is fine
