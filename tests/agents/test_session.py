"""A session on its own (agents-sessions.md §2.3): built from a `SessionDeps`, with a real
store in tmp_path and the echo provider, no registry."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.config import API_ECHO, AgentConfig, AgentsConfig, ModelRef
from agents.errors import UnknownAgent
from agents.events import EventSink, RunEvent, SessionChange, SessionStatus, Stream
from agents.history import HistoryCache
from agents.providers.base import WORD_COUNT_SLICE, ChatMessage, word_count
from agents.providers.echo import EchoProvider
from agents.runs import AgentRun, RunState, RunStatus, TurnRequest
from agents.session import AgentSession, RunSlots, SessionDeps
from agents.store import SessionStore, StoredMessage
from tests.support.scripted import FIXED_NOW, until
from tests.support.strategies import fuzz
from tests.support.turns import turn

KEY = "agent:main:s1"
SLOW = {"delayMs": 20}  # echo waits this long between words: time to abort mid-stream


@attrs.define
class Owner:
    """What a registry would be to the session: the deps it hands out and what they record."""

    store: SessionStore
    config: AgentsConfig = AgentsConfig()
    sink: EventSink = attrs.field(factory=EventSink)
    slots: RunSlots = attrs.field(factory=lambda: RunSlots(4))
    seen: list[RunEvent | SessionChange] = attrs.field(factory=list)
    idle_calls: list[AgentSession] = attrs.field(factory=list)
    tasks: set[asyncio.Task[None]] = attrs.field(factory=set)
    ended: list[AgentRun] = attrs.field(factory=list)
    histories: HistoryCache = attrs.field(factory=HistoryCache)

    def __attrs_post_init__(self) -> None:
        self.sink.add(self.seen.append)

    def deps(self) -> SessionDeps:
        providers = {API_ECHO: EchoProvider()}
        return SessionDeps(
            config=lambda: self.config,
            store=self.store,
            provider=providers.__getitem__,
            sink=self.sink,
            clock=lambda: FIXED_NOW,
            slots=self.slots,
            spawn=self.spawn,
            session_idle=self.idle_calls.append,
            histories=self.histories,
        )

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        return task

    def run(self, text: str, n: int, **fields: Any) -> AgentRun:
        request = TurnRequest("main", KEY, f"run-{n}", text, **fields)
        return AgentRun(request, FIXED_NOW, lambda: FIXED_NOW, self.sink, self.ended.append)

    def started(self) -> list[str]:
        return [
            e.run_id
            for e in self.seen
            if isinstance(e, RunEvent) and e.stream == Stream.LIFECYCLE
            and e.data["phase"] == "start"
        ]  # fmt: skip


class CountingStore(SessionStore):
    """The SQLite store, counting the history reads a turn makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []

    async def recent_turns(self, session_id: str, user_turns: int) -> tuple[StoredMessage, ...]:
        self.reads.append("recent_turns")
        return await super().recent_turns(session_id, user_turns)

    async def replay(
        self, session_id: str, user_turns: int
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage | None]:
        self.reads.append(f"replay {user_turns}")
        return await super().replay(session_id, user_turns)

    async def messages_after(self, session_id: str, seq: int) -> tuple[StoredMessage, ...]:
        self.reads.append(f"after {seq}")
        return await super().messages_after(session_id, seq)


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[Owner]:
    store = CountingStore(tmp_path / "state")
    await store.open()
    owner = Owner(store)
    yield owner
    if owner.tasks:
        await asyncio.wait(owner.tasks)
    await store.aclose()


def session(owner: Owner) -> AgentSession:
    return AgentSession(KEY, "main", owner.deps())


async def transcript(owner: Owner, session: AgentSession) -> list[tuple[str, str]]:
    assert session.row is not None
    history = await owner.store.history(session.row.session_id, 100)
    return [(m.role, m.text) for m in history.messages]


class TestTurns:
    async def test_queued_turns_run_one_at_a_time_in_order(self, owner: Owner) -> None:
        lane = session(owner)
        runs = [owner.run(f"turn {n}", n, params=SLOW) for n in range(3)]
        for run in runs:
            lane.enqueue(run)
        assert lane.active_run_ids() == ("run-0", "run-1", "run-2")
        outcomes = [await run.wait() for run in runs]
        assert [o.text for o in outcomes] == [
            "[turn 1] turn 0",
            "[turn 2] turn 1",
            "[turn 3] turn 2",
        ]
        assert owner.started() == ["run-0", "run-1", "run-2"]
        assert owner.slots.active == 0
        assert await transcript(owner, lane) == [
            ("user", "turn 0"), ("assistant", "[turn 1] turn 0"),
            ("user", "turn 1"), ("assistant", "[turn 2] turn 1"),
            ("user", "turn 2"), ("assistant", "[turn 3] turn 2"),
        ]  # fmt: skip

    async def test_the_first_turn_creates_the_session_and_announces_it(self, owner: Owner) -> None:
        lane = session(owner)
        run = owner.run("hello", 1)
        lane.enqueue(run)
        await run.wait()
        changes = [(c.reason, c.phase) for c in owner.seen if isinstance(c, SessionChange)]
        assert changes == [("create", None), (None, "start"), (None, "end")]
        info = lane.info()
        assert info is not None and info.status == SessionStatus.DONE


class BrokenStore(SessionStore):
    """The SQLite store, with a failure that is not a StoreError (a bug of ours) on a
    history read: the turn that reads it crashes after its start."""

    async def recent_turns(self, session_id: str, user_turns: int) -> tuple[StoredMessage, ...]:
        raise RuntimeError("a bug")


class TestBrokenRuns:
    """A run ended by the crash or shutdown fallback (`_end_broken`) is announced like any
    other: `sessions.changed` END after its START, or a client's list shows it running."""

    def run_changes(self, owner: Owner) -> list[tuple[str | None, str | None, tuple[str, ...]]]:
        return [
            (c.phase, c.run_id, c.session.active_run_ids if c.session else ())
            for c in owner.seen
            if isinstance(c, SessionChange) and c.phase is not None
        ]

    async def test_a_crashed_run_ends_its_session_change(self, tmp_path: Path) -> None:
        store = BrokenStore(tmp_path / "state")
        await store.open()
        owner = Owner(store)
        try:
            lane = session(owner)
            first, second = owner.run("one", 1), owner.run("two", 2)
            lane.enqueue(first)
            await first.wait()
            lane.enqueue(second)  # reads the history: crashes
            outcome = await second.wait()
            assert outcome.status == RunStatus.FAILED
            assert self.run_changes(owner)[2:] == [
                ("start", "run-2", ("run-2",)),
                ("end", "run-2", ()),
            ]
            info = lane.info()
            assert info is not None and info.status != SessionStatus.RUNNING
        finally:
            await asyncio.wait(owner.tasks)
            await store.aclose()

    async def test_a_run_cancelled_by_the_shutdown_fallback_ends_its_session_change(
        self, owner: Owner
    ) -> None:
        lane = session(owner)
        run = owner.run("a slow one", 1, params=SLOW)
        lane.enqueue(run)
        await until(lambda: owner.started() == ["run-1"])
        for task in owner.tasks:
            if task.get_name().startswith("session-worker"):
                task.cancel()  # as the registry's aclose() does after its grace time
        await asyncio.wait(owner.tasks)
        assert run.ended
        assert self.run_changes(owner) == [
            ("start", "run-1", ("run-1",)),
            ("end", "run-1", ()),
        ]


class TestKeptHistory:
    """A named session's replay window is kept between its turns (agents/history.py)."""

    async def test_later_turns_read_only_what_was_written_since(self, owner: Owner) -> None:
        lane = session(owner)
        replies = [await self.turn(owner, lane, f"turn {n}", n) for n in range(3)]
        assert replies == ["[turn 1] turn 0", "[turn 2] turn 1", "[turn 3] turn 2"]
        # The first turn created the transcript: nothing to read, nothing kept. The second
        # reads its window; the third only what the second wrote.
        assert store(owner).reads == ["recent_turns", "after 2"]

    async def test_what_another_writer_added_is_in_the_next_turns_history(
        self, owner: Owner, tmp_path: Path
    ) -> None:
        lane = session(owner)
        await self.turn(owner, lane, "mine", 1)
        assert lane.row is not None
        async with SessionStore(tmp_path / "state") as other:
            await other.append_turn(turn(lane.row, "elsewhere", user_text="theirs"))
        assert await self.turn(owner, lane, "mine again", 2) == "[turn 3] mine again"

    async def test_a_lowered_history_limit_applies_to_the_next_turn(self, owner: Owner) -> None:
        lane = session(owner)
        for n in range(3):
            await self.turn(owner, lane, f"turn {n}", n)
        owner.config = attrs.evolve(owner.config, history_limit=1)
        assert await self.turn(owner, lane, "now", 3) == "[turn 2] now"
        assert store(owner).reads[-1] == "recent_turns"  # the kept window was cut to 50

    async def test_a_client_sending_its_history_gets_its_new_messages_stored_once(
        self, owner: Owner
    ) -> None:
        lane = session(owner)
        sent = [ChatMessage("user", "one")]
        for n in range(3):
            run = owner.run(sent[-1].text, n, messages=tuple(sent))
            lane.enqueue(run)
            sent += [ChatMessage("assistant", (await run.wait()).text),
                     ChatMessage("user", f"next {n}")]  # fmt: skip
        assert [text for _, text in await transcript(owner, lane)] == [
            "one", "[turn 1] one", "next 0", "[turn 2] next 0", "next 1", "[turn 3] next 1",
        ]  # fmt: skip
        assert store(owner).reads == ["replay 50", "after 2"]

    async def test_stateless_turns_keep_nothing(self, owner: Owner) -> None:
        lane = session(owner)
        await self.turn(owner, lane, "hi", 1, stateless=True)
        assert len(owner.histories) == 0

    async def test_a_sessions_first_turn_keeps_nothing(self, owner: Owner) -> None:
        """Keys used once (a hook's minted key) must not fill the cache."""
        lane = session(owner)
        await self.turn(owner, lane, "hi", 1)
        assert len(owner.histories) == 0
        await self.turn(owner, lane, "again", 2)
        assert len(owner.histories) == 1

    @staticmethod
    async def turn(owner: Owner, lane: AgentSession, text: str, n: int, **fields: Any) -> str:
        run = owner.run(text, n, **fields)
        lane.enqueue(run)
        return (await run.wait()).text


def store(owner: Owner) -> CountingStore:
    assert isinstance(owner.store, CountingStore)
    return owner.store


class TestAbort:
    async def test_a_queued_run_aborted_leaves_the_queue_and_stores_nothing(
        self, owner: Owner
    ) -> None:
        lane = session(owner)
        first, second = owner.run("one two three", 1, params=SLOW), owner.run("never", 2)
        lane.enqueue(first)
        lane.enqueue(second)
        assert second.abort()
        assert second.state == RunState.ENDED and second.outcome is not None
        assert (second.outcome.status, second.outcome.started_at) == (RunStatus.ABORTED, None)
        assert lane.active_run_ids() == ("run-1",)
        await first.wait()
        assert await transcript(owner, lane) == [
            ("user", "one two three"), ("assistant", "[turn 1] one two three"),
        ]  # fmt: skip
        assert owner.started() == ["run-1"]

    async def test_the_running_run_aborted_keeps_its_partial_reply(self, owner: Owner) -> None:
        lane = session(owner)
        run = owner.run("one two three four five six", 1, params={"delayMs": 200})
        with run.subscribe() as events:
            lane.enqueue(run)
            async for event in events:
                if event.stream == Stream.ASSISTANT:
                    break
        assert run.abort("stop it")
        outcome = await run.wait()
        assert (outcome.status, outcome.stop_reason, outcome.text) == (
            RunStatus.ABORTED, "aborted", "[turn",
        )  # fmt: skip
        assert await transcript(owner, lane) == [
            ("user", "one two three four five six"), ("assistant", "[turn"),
        ]  # fmt: skip
        info = lane.info()
        assert info is not None and info.status == SessionStatus.ABORTED


class TestOwner:
    async def test_the_idle_callback_comes_when_the_queue_is_worked_off(self, owner: Owner) -> None:
        lane = session(owner)
        runs = [owner.run("hi", n) for n in range(2)]
        for run in runs:
            lane.enqueue(run)
        assert lane.busy and owner.idle_calls == []
        await runs[-1].wait()
        await until(lambda: bool(owner.idle_calls))
        assert owner.idle_calls == [lane] and not lane.busy

    async def test_a_running_turn_keeps_the_config_it_started_with(self, owner: Owner) -> None:
        lane = session(owner)
        running, queued = owner.run("a b c", 1, params=SLOW), owner.run("after", 2)
        with running.subscribe() as events:
            lane.enqueue(running)
            lane.enqueue(queued)
            async for event in events:
                if event.stream == Stream.ASSISTANT:
                    break
        # A reload that drops the agent: the running turn ends normally, the next one fails.
        owner.config = AgentsConfig(agents=(AgentConfig("other", (ModelRef("echo", "echo"),)),))
        assert (await running.wait()).status == RunStatus.COMPLETED
        outcome = await queued.wait()
        assert outcome.status == RunStatus.FAILED
        assert isinstance(outcome.error, UnknownAgent)

    async def test_a_session_waits_for_a_global_slot(self, owner: Owner) -> None:
        owner.slots.resize(0)
        lane = session(owner)
        run = owner.run("hi", 1)
        lane.enqueue(run)
        await asyncio.sleep(0.05)
        assert run.state == RunState.QUEUED and owner.started() == []
        owner.slots.resize(1)
        assert (await run.wait()).text == "[turn 1] hi"


class TestLentSlot:
    async def test_a_lent_slot_goes_to_the_next_in_line_and_comes_back_after(self) -> None:
        slots = RunSlots(1)
        await slots.acquire()
        other = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        order: list[str] = []

        async def lend() -> None:
            async with slots.lent():
                await asyncio.wait_for(other, 1)  # the one in line runs meanwhile
                order.append("lent")
            order.append("back")

        task = asyncio.create_task(lend())
        await asyncio.sleep(0.05)
        assert order == ["lent"]  # waiting for the slot again: the other one holds it
        slots.release()  # the other's turn ends
        await asyncio.wait_for(task, 1)
        assert order == ["lent", "back"]
        assert slots.active == 1

    async def test_the_slot_is_held_when_a_cancel_comes_while_taking_it_again(self) -> None:
        slots = RunSlots(1)
        await slots.acquire()

        async def lend() -> None:
            async with slots.lent():
                await slots.acquire()  # someone else takes the slot meanwhile

        task = asyncio.create_task(lend())
        await asyncio.sleep(0.05)  # now waiting to take it again, behind the other holder
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        slots.release()  # the lender's own release
        slots.release()  # the other holder's
        assert slots.active == 0
        await asyncio.wait_for(slots.acquire(), 1)  # nothing leaked either way

    async def test_a_wait_cancelled_inside_gives_the_slot_back_at_once_over_the_limit(
        self,
    ) -> None:
        slots = RunSlots(1)
        await slots.acquire()
        waiting = asyncio.Event()

        async def lend() -> None:
            async with slots.lent():
                waiting.set()
                await asyncio.Event().wait()  # another process's turn that does not end

        task = asyncio.create_task(lend())
        await waiting.wait()
        await slots.acquire()  # another session's long turn takes the lent slot
        task.cancel()  # an abort ends the wait: the lender leaves now, not after that turn
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
        assert slots.active == 2  # held at once, over the limit, until the lender's release
        slots.release()
        slots.release()
        assert slots.active == 0


# What `str.split()` splits at, besides the ASCII space: every kind of Unicode whitespace.
_SPACES = " \t\n\x1c\x85\xa0\u2028\u3000"


class TestWordCount:
    """The usage estimate of a turn whose provider reported none (§7)."""

    def test_a_large_context_is_counted_in_bounded_memory(self) -> None:
        words = 10 * 1024 * 1024
        text = "a " * words  # 20 MiB of one-letter words
        tracemalloc.start()
        try:
            count = word_count(text)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == words
        # One list of all the words held 80 MB of pointers for this text (420 MB for words
        # of a few letters); a slice's list holds 64 KiB worth.
        assert peak < 4 * 1024 * 1024

    @fuzz(300)
    @given(
        head=st.integers(0, 2 * WORD_COUNT_SLICE),
        filler=st.sampled_from(["x", " ", "x ", " x", "\u3000x"]),
        tail=st.text(st.sampled_from(["a", "b", *_SPACES]), max_size=3 * WORD_COUNT_SLICE // 1000),
        repeat=st.integers(1, 1200),
    )
    def test_words_across_the_slices_are_counted_once(
        self, head: int, filler: str, tail: str, repeat: int
    ) -> None:
        # Words and spaces of every kind at and around the cuts between slices.
        text = (filler * head)[:head] + tail * repeat
        assert word_count(text) == len(text.split())
