"""Run events and aborts between processes over LISTEN/NOTIFY (agents/events_postgres.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from structlog.testing import capture_logs

from agents import events_postgres
from agents.events import ChangeReason, RunEvent, SessionChange, StreamedText
from agents.events_postgres import (
    CHANNEL,
    MAX_BODY_BYTES,
    MAX_REMOTE_RUNS,
    AbortReplies,
    PostgresEventBus,
    Reassembly,
    RemoteRuns,
    encode,
    encode_item,
)
from tests.support.blackhole import Blackhole
from tests.support.pgserver import PgServer


def event(seq: int, text: str = "hi") -> RunEvent:
    return RunEvent("r1", "agent:main:k", "sid", "main", "assistant", seq, 1000 + seq,
                    {"text": text, "delta": text})  # fmt: skip


def run_end(seq: int) -> RunEvent:
    return RunEvent("r1", "agent:main:k", "sid", "main", "lifecycle", seq, 1000 + seq,
                    {"phase": "end"})  # fmt: skip


def reply_events(run_id: str, pieces: list[str], stream: str) -> list[RunEvent]:
    """A run's events of one stream of `pieces`, as a session emits them."""
    text = StreamedText()
    return [
        RunEvent(run_id, "agent:main:k", "sid", "main", stream, seq, 1000 + seq, text.add(piece))
        for seq, piece in enumerate(pieces, start=1)
    ]


def item(seq: int, text: str = "hi") -> dict[str, object]:
    return {"t": "run", "e": event(seq, text).to_dict()}


async def watching(
    listener: PostgresEventBus, sender: PostgresEventBus
) -> list[RunEvent | SessionChange]:
    """What `listener` hears from the other processes, once `sender` knows it watches."""
    heard: list[RunEvent | SessionChange] = []
    listener.add_remote_listener(heard.append)
    listener.watchers_here(1)
    await until(lambda: sender.watched_elsewhere)
    return heard


async def sent_until_heard(
    sender: PostgresEventBus, heard: list[RunEvent | SessionChange], count: int
) -> None:
    """`sender` publishes an event every 0.1 s until `heard` holds `count` (one sent while
    nobody listens is lost); at most 10 s."""
    async with asyncio.timeout(10):
        while len(heard) < count:
            sender.publish(event(next(_SEQ)))
            await asyncio.sleep(0.1)


_SEQ = itertools.count(1)  # events of `sent_until_heard` numbered in order


class TestWire:
    def test_a_small_message_is_one_notification(self) -> None:
        [payload] = encode("a/1/x", 7, [encode_item(item(1))])
        assert payload.startswith("a/1/x 7 0 1\n")
        assert Reassembly().add(payload) == ("a/1/x", [json.loads(json.dumps(item(1)))])

    def test_a_large_event_is_split_under_the_limit_and_joined_in_order(self) -> None:
        text = 'é€😀"\\\n' * 20_000  # escapes and multi-byte characters
        payloads = encode("a/1/x", 1, [encode_item(item(1, text))])
        assert len(payloads) > 10
        assert all(len(p.encode()) < 8000 for p in payloads)
        joined = Reassembly()
        results = [joined.add(p) for p in payloads]
        assert results[:-1] == [None] * (len(payloads) - 1)
        assert results[-1] is not None
        assert results[-1][1][0]["e"]["data"]["text"] == text

    def test_pieces_of_two_origins_interleaved_are_joined_apart(self) -> None:
        first = encode("a", 1, [encode_item(item(1, "x" * 3 * MAX_BODY_BYTES))])
        second = encode("b", 1, [encode_item(item(2, "y" * 3 * MAX_BODY_BYTES))])
        joined = Reassembly()
        done = [r for pair in zip(first, second, strict=True) for r in map(joined.add, pair) if r]
        assert [(origin, items[0]["e"]["seq"]) for origin, items in done] == [("a", 1), ("b", 2)]

    def test_a_message_whose_first_piece_was_lost_is_dropped(self) -> None:
        payloads = encode("a", 1, [encode_item(item(1, "x" * 3 * MAX_BODY_BYTES))])
        joined = Reassembly()
        assert [joined.add(p) for p in payloads[1:]] == [None] * (len(payloads) - 1)

    def test_garbage_is_ignored(self) -> None:
        assert Reassembly().add("no header") is None
        assert Reassembly().add("a 1 0 1\nnot json") == ("a", [])


def lifecycle(run_id: str, key: str, phase: str) -> RunEvent:
    return RunEvent(run_id, key, "sid", "main", "lifecycle", 1, 1000, {"phase": phase})


class TestAbortReplies:
    async def test_complete_once_each_listener_expected_answered(self) -> None:
        replies = AbortReplies()
        replies.expect(frozenset({11, 12}))
        replies.heard("a", ["r1"], 11)
        replies.heard("c", [], 13)  # a listener not expected (not waited for) answers too
        assert not replies.complete.is_set()
        replies.heard("b", ["r2"], 12)
        assert replies.complete.is_set()
        assert replies.ids == ["r1", "r2"]
        assert replies.unanswered() == frozenset()

    async def test_the_listeners_that_did_not_answer_are_named(self) -> None:
        replies = AbortReplies()
        replies.expect(frozenset({11, 12}))
        replies.heard("a", [], 11)
        assert replies.unanswered() == frozenset({12})

    async def test_answers_of_an_earlier_version_are_counted(self) -> None:
        """Its answers name no listener: as many answers as listeners complete the wait,
        and none of the listeners is taken for silent (the answer may have been its)."""
        replies = AbortReplies()
        replies.expect(frozenset({11, 12}))
        replies.heard("a", [], 11)
        replies.heard("old", ["r1"], None)
        assert replies.complete.is_set()
        assert replies.unanswered() == frozenset()


class TestRemoteRuns:
    def test_a_run_is_running_from_its_first_event_to_its_end(self) -> None:
        runs = RemoteRuns()
        assert not runs.running("agent:main:k")
        runs.saw(lifecycle("r1", "agent:main:k", "start"))
        runs.saw(event(2))
        assert runs.running("agent:main:k")
        runs.saw(lifecycle("r1", "agent:main:k", "end"))
        assert not runs.running("agent:main:k")

    def test_a_session_runs_while_any_of_its_runs_does(self) -> None:
        runs = RemoteRuns()
        runs.saw(lifecycle("r1", "agent:main:k", "start"))
        runs.saw(lifecycle("r2", "agent:main:k", "start"))
        runs.saw(lifecycle("r1", "agent:main:k", "error"))
        assert runs.running("agent:main:k")
        runs.saw(lifecycle("r2", "agent:main:k", "end"))
        assert not runs.running("agent:main:k")

    def test_runs_that_never_end_are_forgotten_oldest_first(self) -> None:
        # A process killed mid-run never sends their end.
        runs = RemoteRuns()
        for n in range(MAX_REMOTE_RUNS + 1):
            runs.saw(lifecycle(f"r{n}", f"agent:main:k{n}", "start"))
        assert not runs.running("agent:main:k0")
        assert runs.running("agent:main:k1")
        assert runs.running(f"agent:main:k{MAX_REMOTE_RUNS}")


@pytest.mark.postgres
class TestBus:
    @pytest.fixture
    async def buses(self, pg_url: str) -> AsyncIterator[tuple[PostgresEventBus, PostgresEventBus]]:
        a, b = PostgresEventBus(pg_url), PostgresEventBus(pg_url)
        self.aborted: list[tuple[str, str | None]] = []

        def abort_on_a(key: str, run_id: str | None) -> list[str]:
            self.aborted.append((key, run_id))
            return ["r1"] if key == "agent:main:k" else []

        # Each bus says hello from its own sending connection, a moment after start()
        # returns. b starts once a's hello is out, so that b does not hear it (and answer a
        # later watch with a second one) in the middle of a test.
        said_hello: asyncio.Queue[str] = asyncio.Queue()
        conn = await asyncpg.connect(pg_url)

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            done = Reassembly().add(payload)
            if done is not None and any(item["t"] == "hello" for item in done[1]):
                said_hello.put_nowait(done[0])

        await conn.add_listener(CHANNEL, heard)
        for bus, local_abort in ((a, abort_on_a), (b, lambda key, run_id: [])):
            await bus.start(local_abort)
            async with asyncio.timeout(5):
                assert await said_hello.get() == bus.origin
        await conn.close()
        yield a, b
        await a.aclose()
        await b.aclose()

    async def test_events_arrive_at_the_other_process_whole_and_in_order(
        self, buses: tuple[PostgresEventBus, PostgresEventBus]
    ) -> None:
        a, b = buses
        heard: list[RunEvent] = []
        own: list[RunEvent] = []
        b.add_remote_listener(heard.append)
        a.add_remote_listener(own.append)
        b.watchers_here(1)
        await until(lambda: a.watched_elsewhere)
        sent = [event(n, "w" * (n * 997 % 30_000)) for n in range(1, 101)]
        for each in sent:
            a.publish(each)
        async with asyncio.timeout(10):
            while len(heard) < len(sent):
                await asyncio.sleep(0.02)
        assert heard == sent
        assert own == []  # a process does not hear its own events back

    async def test_a_session_change_arrives_at_the_other_process_as_it_was_sent(
        self, buses: tuple[PostgresEventBus, PostgresEventBus]
    ) -> None:
        a, b = buses
        heard: list[RunEvent | SessionChange] = []
        b.add_remote_listener(heard.append)
        b.watchers_here(1)
        await until(lambda: a.watched_elsewhere)
        change = SessionChange(
            "agent:main:k", "main", 1234, None, reason=ChangeReason.DELETE, run_id="r1"
        )
        a.publish(change)
        await until(lambda: heard)
        [received] = heard
        assert isinstance(received, SessionChange)
        assert received.to_dict() == change.to_dict()

    async def test_an_abort_reaches_the_process_that_runs_the_session(
        self, buses: tuple[PostgresEventBus, PostgresEventBus]
    ) -> None:
        _, b = buses
        assert await b.abort_elsewhere("agent:main:k", None) == ["r1"]
        assert self.aborted == [("agent:main:k", None)]

    async def test_an_abort_lists_the_runs_every_process_stopped(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], pg_url: str
    ) -> None:
        """Two other processes stop a run of the session each (one ran it, one had the next
        turn queued): the abort listed only the first answer's."""
        _, b = buses
        c = PostgresEventBus(pg_url)
        await c.start(lambda key, run_id: ["r2"] if key == "agent:main:k" else [])
        try:
            await until(lambda: c.listening.is_set())
            assert sorted(await b.abort_elsewhere("agent:main:k", None)) == ["r1", "r2"]
            # Each answers, with nothing when it stopped nothing: the asker waits for all.
            assert await b.abort_elsewhere("agent:main:other", None) == []
        finally:
            await c.aclose()

    async def test_run_events_are_not_sent_while_no_other_process_watches(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], kinds: list[str]
    ) -> None:
        a, b = buses
        heard: list[RunEvent] = []
        b.add_remote_listener(heard.append)
        a.publish(event(1))
        b.watchers_here(1)
        await until(lambda: a.watched_elsewhere)
        a.publish(event(2))
        await until(lambda: heard)
        b.watchers_here(0)
        await until(lambda: not a.watched_elsewhere)
        a.publish(event(3))
        a.publish(event(4))
        b.watchers_here(2)
        await until(lambda: a.watched_elsewhere)
        a.publish(event(5))
        await until(lambda: len(heard) == 2)
        assert [e.seq for e in heard] == [2, 5]
        assert kinds.count("run") == 2
        assert kinds.count("watch") == 3  # on, off, on: a second client says nothing new

    async def test_a_process_that_starts_later_learns_at_once_who_watches(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], pg_url: str
    ) -> None:
        _, b = buses
        b.watchers_here(1)
        late = PostgresEventBus(pg_url)
        await late.start(lambda key, run_id: [])
        try:
            async with asyncio.timeout(5):  # at once: not at the 10 s refresh
                await until(lambda: late.watched_elsewhere)
        finally:
            await late.aclose()

    async def test_a_watcher_that_stops_saying_so_is_forgotten(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # What a process killed while it had clients leaves behind: no "off", no refresh.
        monkeypatch.setattr(events_postgres, "WATCH_TTL_S", 0.5)
        a, b = buses
        b.watchers_here(1)
        await until(lambda: a.watched_elsewhere)
        await b.aclose()
        async with asyncio.timeout(5):
            await until(lambda: not a.watched_elsewhere)

    async def test_a_run_that_ends_after_the_watch_stopped_is_known_to_have_ended(
        self, buses: tuple[PostgresEventBus, PostgresEventBus]
    ) -> None:
        """Its end went unsent (nobody watched any more), and the run stayed "running" to the
        other process for good: each chat.abort, reset or delete of the session there waited
        ABORT_REPLY_TIMEOUT_S for an answer that never came."""
        a, b = buses
        b.watchers_here(1)
        await until(lambda: a.watched_elsewhere)
        a.publish(event(1))
        await until(lambda: b.remote_runs.running("agent:main:k"))
        b.watchers_here(0)
        await until(lambda: not a.watched_elsewhere)
        a.publish(event(2))  # a delta: nobody watches
        a.publish(run_end(3))
        async with asyncio.timeout(5):
            await until(lambda: not b.remote_runs.running("agent:main:k"))

    @pytest.mark.parametrize("run_id", [None, "r1"])
    async def test_runs_of_a_process_killed_mid_run_are_forgotten_once_unanswered(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], run_id: str | None
    ) -> None:
        """A killed process never sends the ends of its runs: they stayed running to the
        others for good, and each abort, reset or delete of their sessions waited
        ABORT_REPLY_TIMEOUT_S for an answer, not only the first."""
        a, b = buses
        b.watchers_here(1)
        await until(lambda: a.watched_elsewhere)
        a.publish(event(1))
        await until(lambda: b.remote_runs.running("agent:main:k"))
        await a.aclose()  # killed: no end, and nobody answers the abort
        assert await b.abort_elsewhere("agent:main:k", run_id) == []
        assert not b.remote_runs.running("agent:main:k")

    async def test_a_long_reply_costs_the_channel_its_length_not_its_square(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], sizes: list[int]
    ) -> None:
        # Each event carries the text so far (§2.2): sent as it is, 4,000 pieces of 6
        # characters were 48 MB of notifications for a reply of 24 KB.
        a, b = buses
        heard = await watching(b, a)
        sent = reply_events("r1", [f"{n:05d} " for n in range(4000)], "assistant")
        for each in [*sent, run_end(len(sent) + 1)]:
            a.publish(each)
        async with asyncio.timeout(10):
            await until(lambda: len(heard) == len(sent) + 1)
        assert heard[:-1] == sent  # the same events, their text so far included
        assert len(set(sizes)) > 1  # the sizes of what passed, a third listener heard it
        text = sent[-1].data["text"]
        assert sum(sizes) <= 4 * len(text) + 400 * len(sent)  # was 50 MB; now some 600 KB

    async def test_a_process_that_watches_again_mid_reply_gets_each_text_so_far(
        self, buses: tuple[PostgresEventBus, PostgresEventBus]
    ) -> None:
        a, b = buses
        heard = await watching(b, a)
        # Its first piece long: the later ones all go as pieces (the text never doubles).
        sent = reply_events("r1", ["x" * 100] + [f"{n} " for n in range(29)], "thinking")
        for each in sent[:10]:
            a.publish(each)
        await until(lambda: len(heard) == 10)
        b.watchers_here(0)
        await until(lambda: not a.watched_elsewhere)
        for each in sent[10:20]:
            a.publish(each)  # unheard
        b.watchers_here(1)
        await until(lambda: a.watched_elsewhere)
        for each in sent[20:]:
            a.publish(each)
        await until(lambda: len(heard) == 20)
        assert heard == sent[:10] + sent[20:]

    async def test_a_process_that_begins_to_watch_mid_reply_gets_each_text_so_far(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], pg_url: str
    ) -> None:
        a, b = buses
        heard = await watching(b, a)
        sent = reply_events("r1", ["x" * 100] + [f"{n} " for n in range(29)], "assistant")
        for each in sent[:10]:
            a.publish(each)
        await until(lambda: len(heard) == 10)
        c = PostgresEventBus(pg_url)
        await c.start(lambda key, run_id: [])
        try:
            late: list[RunEvent | SessionChange] = []
            c.add_remote_listener(late.append)
            c.watchers_here(1)
            await until(lambda: len(a._watched_elsewhere) == 2)
            for each in sent[10:]:
                a.publish(each)
            await until(lambda: len(heard) == 30 and len(late) == 20)
            assert (heard, late) == (sent, sent[10:])
        finally:
            await c.aclose()

    async def test_a_piece_that_adds_to_no_text_here_is_dropped(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], pg_url: str
    ) -> None:
        _, b = buses
        heard: list[RunEvent | SessionChange] = []
        b.add_remote_listener(heard.append)
        whole = reply_events("r1", ["ab", "cd"], "assistant")
        piece = {**whole[1].to_dict(), "data": {"delta": "cd"}}
        items: list[dict[str, object]] = [
            {"t": "piece", "e": piece, "at": 2},  # its run's text never came
            {"t": "run", "e": whole[0].to_dict()},
            {"t": "piece", "e": piece, "at": "2"},
            {"t": "piece", "e": piece, "at": True},
            {"t": "piece", "e": {**piece, "data": ["cd"]}, "at": 2},
            {"t": "piece", "e": {**piece, "data": {"delta": 7}}, "at": 2},
            {"t": "piece", "e": piece, "at": 2},  # the text was forgotten at the first wrong one
            {"t": "run", "e": whole[1].to_dict()},
            {"t": "piece", "e": {**piece, "seq": 3, "ts": 1003, "data": {"delta": "e"}}, "at": 4},
        ]
        conn = await asyncpg.connect(pg_url)
        try:
            with capture_logs() as logs:
                for payload in encode("peer/1/x", 1, [encode_item(i) for i in items]):
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                await until(lambda: len(heard) == 3)
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        expected = [*whole, reply_events("r1", ["ab", "cd", "e"], "assistant")[2]]
        assert heard == expected
        assert logs == []

    async def test_a_runs_end_with_a_malformed_last_event_still_ends_it(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], pg_url: str
    ) -> None:
        _, b = buses
        heard: list[RunEvent | SessionChange] = []
        b.add_remote_listener(heard.append)
        end = run_end(2).to_dict()
        lasts: list[object] = [
            "x",
            None,
            {"data": ["a"]},
            {"data": {"text": 7}},
            {"runId": "r1", "stream": "assistant", "data": {"text": "a", "delta": "a"}},
        ]
        items = [{"t": "run", "e": end, key: last} for key in ("last", "lastThinking")
                 for last in lasts]  # fmt: skip
        checks = [{"t": "last", "e": last} for last in lasts]  # once sending works again
        conn = await asyncpg.connect(pg_url)
        try:
            with capture_logs() as logs:
                for payload in encode("peer/1/x", 1, [encode_item(i) for i in [*checks, *items]]):
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                await until(lambda: len(heard) == len(items))
                # The other bus reads the same items, on its own time.
                await until(lambda: sum(e["event"] == "event_bus_item_failed" for e in logs) >= 6)
        finally:
            await conn.close()
        assert heard == [run_end(2)] * len(items)
        # The one without a session key, once for each bus.
        assert (
            sorted((e["event"], e.get("kind")) for e in logs)
            == [("event_bus_item_failed", "last")] * 4
            + [("event_bus_item_failed", "lastThinking")] * 2
        )

    async def test_a_process_that_finds_the_database_again_gets_each_text_so_far(
        self, buses: tuple[PostgresEventBus, PostgresEventBus], pg_url: str
    ) -> None:
        # What was sent while its listening connection was away is lost to it: it says hello
        # again, and each stream's next event goes whole.
        a, b = buses
        await watching(b, a)
        said: list[tuple[str, str]] = []
        conn = await asyncpg.connect(pg_url)

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            done = Reassembly().add(payload)
            if done is not None:
                said.extend((done[0], item["t"]) for item in done[1])

        await conn.add_listener(CHANNEL, heard)
        try:
            a.watchers_here(1)  # so that it answers a hello: then it has read it
            sent = reply_events("r1", ["x" * 100] + [f"{n} " for n in range(9)], "assistant")
            for each in sent[:5]:
                a.publish(each)
            await until(lambda: said.count((a.origin, "piece")) == 4)
            for payload in encode("peer/1/x", 1, [encode_item({"t": "hello"})]):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            hello = ("peer/1/x", "hello")
            await until(lambda: hello in said and (a.origin, "watch") in said[said.index(hello) :])
            for each in sent[5:]:
                a.publish(each)
            kinds: list[str] = []
            async with asyncio.timeout(5):
                while len(kinds) < len(sent):
                    await asyncio.sleep(0.02)
                    kinds = [k for origin, k in said if origin == a.origin and k != "watch"]
        finally:
            await conn.close()
        assert kinds == ["run", *["piece"] * 4, "run", *["piece"] * 4]

    @pytest.fixture
    async def sizes(self, pg_url: str) -> AsyncIterator[list[int]]:
        """The sizes of the notifications on the channel, as a third listener hears them."""
        sizes: list[int] = []
        conn = await asyncpg.connect(pg_url)

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            sizes.append(len(payload))

        await conn.add_listener(CHANNEL, heard)
        yield sizes
        await conn.close()

    @pytest.fixture
    async def kinds(self, pg_url: str) -> AsyncIterator[list[str]]:
        """The kinds of the items on the channel, as a third listener hears them."""
        kinds: list[str] = []
        conn = await asyncpg.connect(pg_url)

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            done = Reassembly().add(payload)
            if done is not None:
                kinds.extend(item["t"] for item in done[1])

        await conn.add_listener(CHANNEL, heard)
        yield kinds
        await conn.close()


@pytest.mark.postgres
class TestAConnectionThePartitionSwallowed:
    """A partition (or a firewall that forgot the connections) leaves the bus's connections
    open with nothing passing on them; no error ever comes. The bus finds that out and
    connects again, so events pass again once the database can be reached."""

    @pytest.fixture
    async def partitioned(
        self, pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[tuple[PostgresEventBus, PostgresEventBus, Blackhole]]:
        monkeypatch.setattr(events_postgres, "PROBE_INTERVAL_S", 0.2)
        monkeypatch.setattr(events_postgres, "ANSWER_TIMEOUT_S", 0.5)
        hole = Blackhole("127.0.0.1", pg_server.port)
        await hole.start()
        far = PostgresEventBus(pg_url.replace(f":{pg_server.port}/", f":{hole.listen_port}/"))
        near = PostgresEventBus(pg_url)
        await far.start(lambda key, run_id: [])
        await near.start(lambda key, run_id: [])
        yield far, near, hole
        await far.aclose()
        await near.aclose()
        await hole.aclose()

    async def test_events_reach_a_process_whose_listening_connection_was_swallowed(
        self, partitioned: tuple[PostgresEventBus, PostgresEventBus, Blackhole]
    ) -> None:
        far, near, hole = partitioned
        heard = await watching(far, near)
        hole.swallow()
        await sent_until_heard(near, heard, 1)

    async def test_events_leave_a_process_whose_sending_connection_was_swallowed(
        self, partitioned: tuple[PostgresEventBus, PostgresEventBus, Blackhole]
    ) -> None:
        far, near, hole = partitioned
        heard = await watching(near, far)
        await sent_until_heard(far, heard, 1)
        hole.swallow()
        await sent_until_heard(far, heard, 2)

    async def test_aborts_after_the_listening_connection_was_swallowed_do_not_each_wait(
        self,
        partitioned: tuple[PostgresEventBus, PostgresEventBus, Blackhole],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An abort counts the processes listening, on the listening connection: swallowed,
        it never answered, the abort's wait cut the count short and left the connection as
        it was, and every abort waited its whole ABORT_REPLY_TIMEOUT_S, for answers it could
        not hear, until the probe found the connection dead."""
        far, _, hole = partitioned
        # The probe and the statements' own limit as by default (the probe far apart, the
        # limit past an abort's wait), and an abort's wait that no test outlasts.
        monkeypatch.setattr(events_postgres, "PROBE_INTERVAL_S", 3600.0)
        monkeypatch.setattr(events_postgres, "ANSWER_TIMEOUT_S", 5.0)
        monkeypatch.setattr(events_postgres, "ABORT_REPLY_TIMEOUT_S", 3600.0)
        hole.swallow()
        for _ in range(3):
            assert await asyncio.wait_for(far.abort_elsewhere("agent:main:k", None), 15) == []

    async def test_aborts_elsewhere_wait_for_a_swallowed_listener_once(
        self,
        partitioned: tuple[PostgresEventBus, PostgresEventBus, Blackhole],
        monkeypatch: pytest.MonkeyPatch,
        pg_url: str,
    ) -> None:
        """A process cut off by the network keeps its listening connection in the server's
        list until the server's keepalives find it dead (about a minute): each abort of the
        others waited its whole ABORT_REPLY_TIMEOUT_S for its answer, as long."""
        _, near, hole = partitioned
        monkeypatch.setattr(events_postgres, "PROBE_INTERVAL_S", 3600.0)  # far stays cut off
        third = PostgresEventBus(pg_url)
        await third.start(lambda key, run_id: ["r2"] if key == "agent:main:k" else [])
        try:
            await until(lambda: third.listening.is_set())
            hole.swallow(server_too=True)
            monkeypatch.setattr(events_postgres, "ABORT_REPLY_TIMEOUT_S", 0.5)
            assert await near.abort_elsewhere("agent:main:k", None) == ["r2"]  # far's missing
            # An abort's wait that no test outlasts: far's answer is not waited for again,
            # the third process's still is.
            monkeypatch.setattr(events_postgres, "ABORT_REPLY_TIMEOUT_S", 3600.0)
            for _ in range(3):
                aborted = await asyncio.wait_for(near.abort_elsewhere("agent:main:k", None), 15)
                assert aborted == ["r2"]
        finally:
            await third.aclose()

    async def test_a_reply_whose_last_pieces_were_lost_ends_with_its_whole_text(
        self, partitioned: tuple[PostgresEventBus, PostgresEventBus, Blackhole]
    ) -> None:
        # The sender's connection is swallowed while it sends the reply's last pieces: they
        # are lost while the receiver stays connected, and the next item is the run's end.
        # The receiver then ended the run on the text it had (its `chat` final an older
        # text); the end now brings the last text event, passed on before it when missed.
        far, near, hole = partitioned
        heard = await watching(near, far)
        sent = reply_events("r1", ["x" * 100] + [f"{n} " for n in range(19)], "assistant")
        for each in sent[:10]:
            far.publish(each)
        await until(lambda: len(heard) == 10)
        with capture_logs() as logs:
            hole.swallow()
            for each in sent[10:]:
                far.publish(each)
            await until(lambda: any(e["event"] == "event_bus_send_failed" for e in logs))
        end = RunEvent("r1", "agent:main:k", "sid", "main", "lifecycle", 21, 1021,
                       {"phase": "end"})  # fmt: skip
        far.publish(end)
        await until(lambda: heard and heard[-1] == end)
        assert heard == [*sent[:10], sent[-1], end]
        assert heard[-2].data["text"] == "x" * 100 + "".join(f"{n} " for n in range(19))

    async def test_reasoning_whose_last_pieces_were_lost_ends_with_its_whole_text(
        self, partitioned: tuple[PostgresEventBus, PostgresEventBus, Blackhole]
    ) -> None:
        # The same for the `thinking` stream, lost with the reply that followed it: the
        # receiver kept an older reasoning text (its clients' last `thinking` event) for good,
        # as the end brought the last `assistant` event only. It brings the last of each.
        far, near, hole = partitioned
        heard = await watching(near, far)
        thinking = reply_events("r1", ["t" * 100] + [f"{n} " for n in range(19)], "thinking")
        reply = [
            event._replace(seq=event.seq + 20, ts=event.ts + 20)
            for event in reply_events("r1", ["x" * 100, "y", "z"], "assistant")
        ]
        for each in thinking[:10]:
            far.publish(each)
        await until(lambda: len(heard) == 10)
        with capture_logs() as logs:
            hole.swallow()
            for each in [*thinking[10:], *reply]:
                far.publish(each)
            await until(lambda: any(e["event"] == "event_bus_send_failed" for e in logs))
        end = RunEvent("r1", "agent:main:k", "sid", "main", "lifecycle", 24, 1024,
                       {"phase": "end"})  # fmt: skip
        far.publish(end)
        await until(lambda: heard and heard[-1] == end)
        assert heard == [*thinking[:10], thinking[-1], reply[-1], end]
        assert heard[-3].data["text"] == "t" * 100 + "".join(f"{n} " for n in range(19))

    async def test_reasoning_whose_last_pieces_were_lost_recovers_once_sending_works_again(
        self, partitioned: tuple[PostgresEventBus, PostgresEventBus, Blackhole]
    ) -> None:
        # The reasoning's last pieces lost, the reply that follows goes out once sending
        # works again, whole (its stream's first event after a loss), but the reasoning has
        # no event after them: the receiver's clients kept an older reasoning until the run
        # ended. Once sending works again, the last event of each text stream of the runs in
        # flight follows, passed on by a receiver that missed it.
        far, near, hole = partitioned
        heard = await watching(near, far)
        thinking = reply_events("r1", ["t" * 100] + [f"{n} " for n in range(19)], "thinking")
        reply = [
            event._replace(seq=event.seq + 20, ts=event.ts + 20)
            for event in reply_events("r1", ["x" * 100, "y", "z"], "assistant")
        ]
        for each in thinking[:10]:
            far.publish(each)
        await until(lambda: len(heard) == 10)
        with capture_logs() as logs:
            hole.swallow()
            for each in thinking[10:]:
                far.publish(each)
            await until(lambda: any(e["event"] == "event_bus_send_failed" for e in logs))
            for each in reply:
                far.publish(each)
            await until(lambda: len(heard) == 10 + len(reply) + 1)
        assert heard == [*thinking[:10], *reply, thinking[-1]]


@pytest.mark.postgres
class TestAConnectionTheServerEnded:
    """The server ends a connection (a restart, pg_terminate_backend) and its last words, a
    FATAL error, reach the bus but the end of the connection has not yet (it comes later, or a
    firewall lost it): asyncpg then refuses the next statement with an InternalClientError
    ("another operation is in progress"). The bus connects again, as for any lost connection."""

    @pytest.fixture
    async def ended(
        self, pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[tuple[PostgresEventBus, PostgresEventBus, Callable[[], None]]]:
        monkeypatch.setattr(events_postgres, "PROBE_INTERVAL_S", 0.2)
        hole = Blackhole("127.0.0.1", pg_server.port)
        await hole.start()
        far = PostgresEventBus(pg_url.replace(f":{pg_server.port}/", f":{hole.listen_port}/"))
        near = PostgresEventBus(pg_url)
        await far.start(lambda key, run_id: [])
        await near.start(lambda key, run_id: [])

        def end_far_connections() -> None:
            hole.lose_ends()
            ports = ",".join(str(port) for port in hole.server_ports)
            pg_server.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE client_port IN ({ports})"
            )

        yield far, near, end_far_connections
        await far.aclose()
        await near.aclose()
        await hole.aclose()

    async def test_events_leave_the_process_again(
        self, ended: tuple[PostgresEventBus, PostgresEventBus, Callable[[], None]]
    ) -> None:
        far, near, end_far_connections = ended
        heard = await watching(near, far)
        await sent_until_heard(far, heard, 1)
        end_far_connections()
        await sent_until_heard(far, heard, 2)

    async def test_events_reach_the_process_again(
        self, ended: tuple[PostgresEventBus, PostgresEventBus, Callable[[], None]]
    ) -> None:
        far, near, end_far_connections = ended
        heard = await watching(far, near)
        end_far_connections()
        await sent_until_heard(near, heard, 1)

    async def test_runs_heard_of_before_the_connection_ended_are_forgotten(
        self, ended: tuple[PostgresEventBus, PostgresEventBus, Callable[[], None]]
    ) -> None:
        """Their ends may have come while nobody listened: kept, a run that ended then stayed
        running to this process for good (see the test above of a watch that stopped)."""
        far, near, end_far_connections = ended
        heard = await watching(far, near)
        near.publish(event(1))
        await until(lambda: far.remote_runs.running("agent:main:k"))
        end_far_connections()
        near.publish(run_end(2))  # lost: far's listening connection is gone
        async with asyncio.timeout(10):  # far listens again: it hears another run
            while not any(e.session_key == "agent:main:other" for e in heard):
                near.publish(RunEvent("r2", "agent:main:other", "sid2", "main", "assistant",
                                      1, 1, {"text": "x", "delta": "x"}))  # fmt: skip
                await asyncio.sleep(0.1)
        assert not far.remote_runs.running("agent:main:k")


async def until(condition: Callable[[], object]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)
