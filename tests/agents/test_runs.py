"""Runs: events, ordering, concurrency, abort, timeout, fallback (agents-sessions.md §2, §3,
§6.1, §7), through a real registry, store and providers."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.config import AgentConfig, ModelRef
from agents.errors import (
    AgentError,
    InvalidSessionKey,
    UnknownAgent,
    UpstreamStatusError,
    UpstreamTimeout,
)
from agents.events import RunEvent, SessionChange, StreamedText
from agents.providers.base import ImageInput, ToolCallDelta, Usage
from agents.registry import SessionRegistry
from agents.runs import SUBSCRIPTION_TEXT_BUDGET, RunSubscription, TurnRequest
from tests.support.counting import CountedData, CountedText
from tests.support.scripted import (
    FIXED_NOW,
    Harness,
    ScriptedProvider,
    failing,
    make_config,
    until,
)


def req(session: str = "s1", text: str = "hello there", **fields: Any) -> TurnRequest:
    fields.setdefault("run_id", f"chatcmpl-{uuid.uuid4().hex}")
    agent = fields.pop("agent_id", "main")
    return TurnRequest(agent, f"agent:{agent}:{session}", text=text, **fields)


async def reply(registry: SessionRegistry, session: str = "s1", text: str = "hi", **kw: Any) -> str:
    outcome = await registry.submit(req(session, text, **kw)).wait()
    return outcome.text


async def stored(registry: SessionRegistry, session: str = "s1") -> list[dict[str, Any]]:
    transcript = await registry.history(f"agent:main:{session}", 100)
    return [m.to_transcript() for m in transcript.messages]


def shape(events: list[RunEvent]) -> list[tuple[str, str]]:
    """(stream, phase or delta) per event: the order of a run at a glance."""
    return [(e.stream, e.data.get("phase") or e.data.get("delta") or "") for e in events]


class TestEchoTurns:
    async def test_events_of_a_turn(self, harness: Harness) -> None:
        registry = harness.registry(clock=lambda: FIXED_NOW)
        run = registry.submit(req("s1", "hello there", run_id="r1"))
        events = [e.to_dict() async for e in run.subscribe()]
        base = {
            "runId": "r1",
            "sessionKey": "agent:main:s1",
            "sessionId": run.session_id,
            "agentId": "main",
            "ts": FIXED_NOW,
        }
        t = FIXED_NOW
        assert events == [
            {**base, "stream": "lifecycle", "seq": 1, "data": {"phase": "start", "startedAt": t}},
            {
                **base,
                "stream": "lifecycle",
                "seq": 2,
                "data": {"phase": "model", "provider": "echo", "model": "echo"},
            },
            {**base, "stream": "assistant", "seq": 3, "data": {"text": "[turn", "delta": "[turn"}},
            {**base, "stream": "assistant", "seq": 4, "data": {"text": "[turn 1]", "delta": " 1]"}},
            {
                **base,
                "stream": "assistant",
                "seq": 5,
                "data": {"text": "[turn 1] hello", "delta": " hello"},
            },
            {
                **base,
                "stream": "assistant",
                "seq": 6,
                "data": {"text": "[turn 1] hello there", "delta": " there"},
            },
            {**base, "stream": "usage", "seq": 7, "data": {"inputTokens": 2, "outputTokens": 4}},
            {
                **base,
                "stream": "lifecycle",
                "seq": 8,
                "data": {
                    "phase": "end",
                    "startedAt": t,
                    "endedAt": t,
                    "stopReason": "stop",
                    "aborted": False,
                },
            },
        ]
        assert run.session_id is not None and len(run.session_id) == 36

    async def test_outcome_of_a_turn(self, harness: Harness) -> None:
        registry = harness.registry(clock=lambda: FIXED_NOW)
        run = registry.submit(req("s1", "hello there"))
        outcome = await run.wait()
        assert (outcome.status, outcome.stop_reason, outcome.text, outcome.error) == (
            "completed", "stop", "[turn 1] hello there", None
        )  # fmt: skip
        assert outcome.usage == Usage(2, 4)
        assert (outcome.provider, outcome.model, outcome.session_id) == (
            "echo", "echo", run.session_id
        )  # fmt: skip
        assert (outcome.started_at, outcome.ended_at) == (FIXED_NOW, FIXED_NOW)
        assert run.outcome is outcome and run.state == "ended"

    async def test_sessions_count_their_own_turns(self, harness: Harness) -> None:
        registry = harness.registry()
        assert await reply(registry, "s1", "hi") == "[turn 1] hi"
        assert await reply(registry, "s1", "hi") == "[turn 2] hi"
        assert await reply(registry, "other", "hi") == "[turn 1] hi"
        assert await reply(registry, "s1", "again") == "[turn 3] again"

    async def test_the_turn_is_stored_before_the_terminal_event(self, harness: Harness) -> None:
        registry = harness.registry(clock=lambda: FIXED_NOW)
        seen: list[int] = []

        async def history_at_end() -> None:
            async for event in run.subscribe():
                if event.is_terminal:
                    seen.append((await registry.history("agent:main:s1")).total)

        run = registry.submit(req("s1", "hello there", run_id="r1", idempotency_key="r1"))
        await asyncio.gather(history_at_end(), run.wait())
        assert seen == [2]
        user, assistant = await stored(registry)
        assert user == {
            "role": "user",
            "content": "hello there",
            "timestamp": FIXED_NOW,
            "idempotencyKey": "r1:user",
            "__openclaw": {"id": user["__openclaw"]["id"], "seq": 1},
        }
        assert assistant == {
            "role": "assistant",
            "content": [{"type": "text", "text": "[turn 1] hello there"}],
            "api": "echo",
            "provider": "echo",
            "model": "echo",
            "usage": {"input": 2, "output": 4, "totalTokens": 6},
            "stopReason": "stop",
            "timestamp": FIXED_NOW,
            "__openclaw": {"id": assistant["__openclaw"]["id"], "seq": 2, "runId": "r1"},
        }

    async def test_session_row_after_turns(self, harness: Harness) -> None:
        registry = harness.registry()
        await reply(registry, "s1", "hello there", run_id="r1")
        await reply(registry, "s1", "hello there", run_id="r2")
        info = await registry.get_session("agent:main:s1")
        assert info is not None
        # Second turn: input = "hello there" + "[turn 1] hello there" + "hello there" = 8.
        assert (info.input_tokens, info.output_tokens, info.total_tokens) == (8, 4, 8)
        assert (info.status, info.last_run_id, info.model_provider, info.model) == (
            "done", "r2", "echo", "echo"
        )  # fmt: skip

    async def test_token_cap_stops_with_length(self, harness: Harness) -> None:
        registry = harness.registry()
        outcome = await registry.submit(req("s1", "a b c d", params={"max_tokens": 2})).wait()
        assert (outcome.text, outcome.stop_reason) == ("[turn 1]", "length")

    async def test_image_only_turn(self, harness: Harness) -> None:
        registry = harness.registry()
        image = ImageInput("image/png", "aGk=", 2)
        text = await reply(registry, "s1", "", images=(image,))
        assert text == "[turn 1] User sent image(s) with no text."
        user = (await stored(registry))[0]
        assert (user["content"], user["images"]) == ("", {"count": 1, "mimeTypes": ["image/png"]})


class TestProviderRequest:
    async def test_context_system_history_and_params(self, harness: Harness) -> None:
        rec = ScriptedProvider("rec", deltas=("ok",))
        silent = ScriptedProvider("silent")
        config = make_config(
            ("rec/m",), apis=("rec", "silent"), system_prompt="You are X.",
            params={"temperature": 0.5, "top_p": 0.9},
        )  # fmt: skip
        registry = harness.registry(config, [rec, silent])
        await reply(registry, "s1", "one")
        registry.configure(make_config(("silent/m",), apis=("rec", "silent")))
        await reply(registry, "s1", "two")  # stores an empty assistant text
        registry.configure(config)
        image = ImageInput("image/png", "aGk=", 2)
        await registry.submit(
            req("s1", "three", images=(image,), extra_system_prompt="Be brief.",
                params={"temperature": 0.1, "seed": 7})
        ).wait()  # fmt: skip
        request = rec.requests[-1]
        assert request.system == "You are X.\n\nBe brief."
        assert [(m.role, m.text, m.images) for m in request.messages] == [
            ("user", "one", ()),
            ("assistant", "ok", ()),
            ("user", "two", ()),  # its empty reply is skipped
            ("user", "three", (image,)),
        ]
        assert dict(request.params) == {"temperature": 0.1, "top_p": 0.9, "seed": 7}
        assert request.ref == ModelRef("rec", "m")
        assert request.provider is not None and request.provider.id == "rec"
        assert rec.requests[0].system == "You are X."

    async def test_history_limit_counts_user_turns(self, harness: Harness) -> None:
        registry = harness.registry(make_config(history_limit=1))
        assert [await reply(registry) for _ in range(3)] == [
            "[turn 1] hi",
            "[turn 2] hi",
            "[turn 2] hi",
        ]
        registry.configure(make_config(history_limit=0))
        assert await reply(registry) == "[turn 1] hi"

    async def test_reported_usage_wins(self, harness: Harness) -> None:
        provider = ScriptedProvider("u", deltas=("a b",), usage=Usage(11, 22))
        registry = harness.registry(make_config(("u/m",), apis=("u",)), [provider])
        run = registry.submit(req())
        usage = [e.data async for e in run.subscribe() if e.stream == "usage"]
        assert usage == [{"inputTokens": 11, "outputTokens": 22}]
        assistant = (await stored(registry))[1]
        assert assistant["usage"] == {"input": 11, "output": 22, "totalTokens": 33}
        info = await registry.get_session("agent:main:s1")
        assert info is not None
        assert (info.input_tokens, info.output_tokens, info.total_tokens) == (11, 22, 11)

    async def test_usage_is_estimated_from_words(self, harness: Harness) -> None:
        provider = ScriptedProvider("u", deltas=("a b", " c"))
        registry = harness.registry(
            make_config(("u/m",), apis=("u",), system_prompt="be kind"), [provider]
        )
        outcome = await registry.submit(req("s1", "one two three")).wait()
        assert outcome.usage == Usage(2 + 3, 3)


class TestOrdering:
    async def test_turns_of_one_session_run_one_after_the_other(self, harness: Harness) -> None:
        registry = harness.registry(make_config(params={"delayMs": 2}))
        log: list[tuple[str, str]] = []
        registry.add_listener(
            lambda e: log.append((e.run_id, e.data.get("phase", "")))
            if isinstance(e, RunEvent) and e.stream == "lifecycle" else None
        )  # fmt: skip
        first = registry.submit(req("s1", "one two three", run_id="a"))
        second = registry.submit(req("s1", "four", run_id="b"))
        assert second.state == "queued"
        outcomes = await asyncio.gather(first.wait(), second.wait())
        assert [o.text for o in outcomes] == ["[turn 1] one two three", "[turn 2] four"]
        assert log == [
            ("a", "start"), ("a", "model"), ("a", "end"),
            ("b", "start"), ("b", "model"), ("b", "end"),
        ]  # fmt: skip

    async def test_sessions_run_in_parallel_up_to_max_concurrent(self, harness: Harness) -> None:
        slow = ScriptedProvider("slow", deltas=("x", "y"), delay=0.03)
        registry = harness.registry(
            make_config(("slow/m",), apis=("slow",), max_concurrent=3), [slow]
        )
        runs = [registry.submit(req(f"s{i}")) for i in range(7)]
        await until(lambda: slow.active == 3)
        assert registry.stats().active == 3 and registry.stats().queued == 4
        await asyncio.gather(*(run.wait() for run in runs))
        assert slow.peak == 3
        assert all(run.outcome and run.outcome.text == "xy" for run in runs)

    async def test_queued_turns_of_a_busy_session_hold_no_slot(self, harness: Harness) -> None:
        slow = ScriptedProvider("slow", deltas=("x",), delay=0.05)
        registry = harness.registry(
            make_config(("slow/m",), apis=("slow",), max_concurrent=2), [slow]
        )
        busy = [registry.submit(req("s1")) for _ in range(3)]
        other = registry.submit(req("s2"))
        await until(lambda: slow.active == 2)
        # s1's first turn and s2 run; s1's next turns wait for s1, not for a slot.
        assert (registry.stats().active, slow.active) == (2, 2)
        assert [r.state for r in [*busy, other]] == ["running", "queued", "queued", "running"]
        await asyncio.gather(*(r.wait() for r in [*busy, other]))

    async def test_a_new_max_concurrent_applies_to_later_acquisitions(
        self, harness: Harness
    ) -> None:
        stall = ScriptedProvider("stall", block=True)
        config = make_config(("stall/m",), apis=("stall",), max_concurrent=1)
        registry = harness.registry(config, [stall])
        runs = [registry.submit(req(f"s{i}")) for i in range(4)]
        await until(lambda: stall.active == 1)
        await asyncio.sleep(0.01)
        assert (stall.active, registry.stats().queued) == (1, 3)
        registry.configure(make_config(("stall/m",), apis=("stall",), max_concurrent=3))
        await until(lambda: stall.active == 3)
        assert registry.stats().max_concurrent == 3
        registry.configure(config)  # shrinking keeps the running ones
        runs[0].abort()
        await runs[0].wait()
        await asyncio.sleep(0.02)
        assert stall.active == 2 and runs[3].state == "queued"
        for run in runs:
            run.abort()
        await asyncio.gather(*(run.wait() for run in runs))


class TestAbort:
    async def test_abort_while_streaming(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", deltas=("partial", " text"), block=True)
        registry = harness.registry(make_config(("stall/m",), apis=("stall",)), [stall])
        run = registry.submit(req("s1", "hello there"))
        sub = run.subscribe()
        await stall.first_delta.wait()
        await asyncio.sleep(0)
        started = time.monotonic()
        assert run.abort() is True
        outcome = await run.wait()
        assert time.monotonic() - started < 0.1
        assert stall.cancelled == 1 and stall.active == 0
        assert (outcome.status, outcome.stop_reason, outcome.text) == (
            "aborted", "aborted", "partial text"
        )  # fmt: skip
        assert outcome.usage == Usage(2, 2)  # estimated
        events = [e async for e in sub]
        assert shape(events)[-3:] == [("assistant", " text"), ("usage", ""), ("lifecycle", "end")]
        assert events[-1].data["aborted"] is True and events[-1].data["stopReason"] == "aborted"
        assistant = (await stored(registry))[1]
        assert assistant["content"] == [{"type": "text", "text": "partial text"}]
        assert (assistant["stopReason"], assistant["aborted"]) == ("aborted", True)
        info = await registry.get_session("agent:main:s1")
        assert info is not None and (info.status, info.aborted_last_run) == ("aborted", True)
        assert run.abort() is False  # finished: a no-op

    async def test_aborted_partial_text_is_replayed(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", deltas=("half",), block=True)
        registry = harness.registry(make_config(("stall/m",), apis=("stall",)), [stall])
        run = registry.submit(req("s1", "first"))
        await stall.first_delta.wait()
        run.abort()
        await run.wait()
        registry.configure(make_config())
        assert await reply(registry, "s1", "second") == "[turn 2] second"

    async def test_abort_while_queued_behind_the_session(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", deltas=("x",), block=True)
        registry = harness.registry(
            make_config(("stall/m",), apis=("stall",)), [stall], clock=lambda: FIXED_NOW
        )
        first = registry.submit(req("s1", run_id="a"))
        second = registry.submit(req("s1", run_id="b"))
        sub = second.subscribe()
        await stall.first_delta.wait()
        assert second.abort("stop") is True
        assert second.outcome is not None and second.outcome.status == "aborted"
        assert second.abort() is False
        events = [e async for e in sub]
        assert [(e.seq, e.stream, dict(e.data)) for e in events] == [
            (1, "lifecycle", {
                "phase": "end", "startedAt": FIXED_NOW, "endedAt": FIXED_NOW,
                "stopReason": "aborted", "aborted": True,
            })
        ]  # fmt: skip
        first.abort()
        await first.wait()
        assert [
            m["__openclaw"]["runId"] for m in await stored(registry) if m["role"] == "assistant"
        ] == ["a"]
        assert stall.requests and len(stall.requests) == 1

    async def test_abort_while_waiting_for_a_slot_stores_nothing(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", block=True)
        registry = harness.registry(
            make_config(("stall/m",), apis=("stall",), max_concurrent=1), [stall]
        )
        busy = registry.submit(req("s1"))
        waiting = registry.submit(req("s2"))
        await until(lambda: stall.active == 1)
        assert waiting.abort() is True
        assert (await waiting.wait()).status == "aborted"
        busy.abort()
        await busy.wait()
        assert await registry.store.get("agent:main:s2") is None
        assert registry.slots.active == 0

    async def test_run_timeout(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", deltas=("so far",), block=True)
        registry = harness.registry(make_config(("stall/m",), apis=("stall",)), [stall])
        run = registry.submit(req("s1", timeout_seconds=0.05))
        sub = run.subscribe()
        outcome = await run.wait()
        assert (outcome.status, outcome.stop_reason, outcome.text) == (
            "failed",
            "timeout",
            "so far",
        )
        assert isinstance(outcome.error, UpstreamTimeout)
        assert stall.cancelled == 1
        events = [e async for e in sub]
        assert events[-1].data["phase"] == "error"
        assert events[-1].data["error"] == "upstream provider timeout"
        assistant = (await stored(registry))[1]
        assert (assistant["stopReason"], assistant["errorMessage"]) == (
            "timeout", "upstream provider timeout"
        )  # fmt: skip
        assert assistant["content"][0]["text"] == "so far"

    async def test_timeout_zero_means_none(self, harness: Harness) -> None:
        registry = harness.registry(make_config(params={"delayMs": 1}))
        outcome = await registry.submit(req("s1", "a b c", timeout_seconds=0)).wait()
        assert outcome.status == "completed"


class TestFallback:
    async def test_next_model_when_the_first_fails_before_text(self, harness: Harness) -> None:
        bad = failing("bad")
        config = make_config(("bad/x", "echo/echo"), apis=("bad",))
        registry = harness.registry(config, [bad])
        run = registry.submit(req("s1", "hi"))
        events = [e async for e in run.subscribe()]
        assert [dict(e.data) for e in events if e.data.get("phase") == "model"] == [
            {"phase": "model", "provider": "bad", "model": "x"},
            {"phase": "model", "provider": "echo", "model": "echo"},
        ]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        outcome = await run.wait()
        assert (outcome.status, outcome.text, outcome.provider) == (
            "completed",
            "[turn 1] hi",
            "echo",
        )
        assert len(bad.requests) == 1
        assert (await stored(registry))[1]["api"] == "echo"

    async def test_no_fallback_after_text(self, harness: Harness) -> None:
        flaky = ScriptedProvider("flaky", deltas=("par",), fail=UpstreamStatusError(502))
        registry = harness.registry(make_config(("flaky/m", "echo/echo"), apis=("flaky",)), [flaky])
        run = registry.submit(req())
        events = [e async for e in run.subscribe()]
        assert shape(events) == [
            ("lifecycle", "start"), ("lifecycle", "model"), ("assistant", "par"),
            ("usage", ""), ("lifecycle", "error"),
        ]  # fmt: skip
        assert events[-1].data["error"] == "upstream provider error"
        outcome = await run.wait()
        assert (outcome.status, outcome.stop_reason, outcome.text) == ("failed", "error", "par")
        assert isinstance(outcome.error, UpstreamStatusError)
        assistant = (await stored(registry))[1]
        assert (assistant["stopReason"], assistant["errorMessage"], assistant["provider"]) == (
            "error", "upstream provider error", "flaky"
        )  # fmt: skip
        info = await registry.get_session("agent:main:s1")
        assert info is not None and info.status == "error"

    async def test_the_last_failure_is_reported(self, harness: Harness) -> None:
        first, second = failing("one", 429), failing("two", 503)
        config = make_config(("one/x", "two/y"), apis=("one", "two"))
        registry = harness.registry(config, [first, second])
        outcome = await registry.submit(req()).wait()
        assert outcome.status == "failed"
        assert outcome.error is second.fail_first
        assert [m["role"] for m in await stored(registry)] == ["user", "assistant"]

    async def test_a_bug_fails_the_run_as_internal_error(self, harness: Harness) -> None:
        buggy = ScriptedProvider("buggy", fail_first=ZeroDivisionError("oops"))
        registry = harness.registry(make_config(("buggy/m", "echo/echo"), apis=("buggy",)), [buggy])
        with capture_logs() as logs:
            run = registry.submit(req())
            events = [e async for e in run.subscribe()]
        assert events[-1].data["error"] == "internal error"
        outcome = await run.wait()
        assert type(outcome.error) is AgentError and outcome.error.message == "internal error"
        assert [e.data.get("phase") for e in events].count("model") == 1  # no fallback
        failed = [entry for entry in logs if entry["event"] == "run_failed"]
        assert len(failed) == 1 and isinstance(failed[0]["exc_info"], ZeroDivisionError)

    async def test_an_unknown_provider_is_a_failed_attempt(self, harness: Harness) -> None:
        registry = harness.registry(make_config(("gone/x", "echo/echo")))
        assert await reply(registry) == "[turn 1] hi"


class TestSubscribers:
    async def test_a_stalled_subscriber_slows_nobody(self, harness: Harness) -> None:
        deltas = tuple(f" w{i}" for i in range(5000))
        fire = ScriptedProvider("fire", deltas=deltas, cooperative=True)
        registry = harness.registry(make_config(("fire/m",), apis=("fire",)), [fire])
        run = registry.submit(req())
        stalled = run.subscribe(maxsize=8)
        reader = run.subscribe(maxsize=64)
        started = time.monotonic()
        seen = [e async for e in reader]
        outcome = await run.wait()
        assert time.monotonic() - started < 2.0
        assistant = [e for e in seen if e.stream == "assistant"]
        assert len(assistant) == 5000  # the reader kept up: nothing merged
        assert [e.seq for e in seen] == list(range(1, 5005))
        # The stalled one holds a bounded queue whose deltas still add up to the text.
        assert len(stalled._queue) <= 8 + 3
        late = [e async for e in stalled]
        texts = [e for e in late if e.stream == "assistant"]
        assert "".join(e.data["delta"] for e in texts) == outcome.text == "".join(deltas)
        assert texts[-1].data["text"] == outcome.text
        assert late[-1].is_terminal

    async def test_a_stalled_subscriber_holds_a_bounded_share_of_a_long_reply(
        self, harness: Harness
    ) -> None:
        # Each assistant event carries the reply so far: a reader that stops reading (an HTTP
        # client that does not read its socket) held up to a queue's worth of them, some
        # maxsize times the reply (50 MB for this 300 KB one).
        deltas = tuple("x" * 99 + " " for _ in range(3000))
        fire = ScriptedProvider("fire", deltas=deltas, cooperative=True)
        registry = harness.registry(make_config(("fire/m",), apis=("fire",)), [fire])
        run = registry.submit(req())
        stalled = run.subscribe()
        outcome = await run.wait()
        held = sum(len(e.data.get("text", "")) for e in stalled._queue)
        assert held <= SUBSCRIPTION_TEXT_BUDGET + len(outcome.text)
        late = [e async for e in stalled]
        texts = [e for e in late if e.stream == "assistant"]
        assert "".join(e.data["delta"] for e in texts) == outcome.text == "".join(deltas)
        assert texts[-1].data["text"] == outcome.text
        assert late[-1].is_terminal

    async def test_subscribing_after_the_end_yields_the_terminal_event(
        self, harness: Harness
    ) -> None:
        registry = harness.registry()
        run = registry.submit(req())
        await run.wait()
        events = [e async for e in run.subscribe()]
        assert len(events) == 1 and events[0].data["phase"] == "end"

    async def test_a_closed_subscription_ends(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", block=True)
        registry = harness.registry(make_config(("stall/m",), apis=("stall",)), [stall])
        run = registry.submit(req())
        with run.subscribe() as sub:
            await sub.__anext__()
        assert [e async for e in sub] == []
        run.abort()
        await run.wait()


class TestDirectDelivery:
    async def test_a_waiting_reader_takes_events_directly_and_is_not_woken(self) -> None:
        sub = RunSubscription(None, 8)
        taken: list[int] = []

        def direct(e: RunEvent) -> bool:
            taken.append(e.seq)
            return True

        waiting = asyncio.ensure_future(sub.wait(direct))
        await asyncio.sleep(0)
        sub.push(event("assistant", 1, text="a", delta="a"))
        sub.push(event("assistant", 2, text="ab", delta="b"))
        await asyncio.sleep(0)
        assert taken == [1, 2] and not sub.pending and not waiting.done()
        sub.wake()
        await waiting

    async def test_a_declined_event_and_the_ones_after_it_are_queued_in_order(self) -> None:
        sub = RunSubscription(None, 8)
        taken: list[int] = []

        def direct(e: RunEvent) -> bool:
            if e.seq == 2:
                return False
            taken.append(e.seq)
            return True

        waiting = asyncio.ensure_future(sub.wait(direct))
        await asyncio.sleep(0)
        for seq in (1, 2, 3):
            sub.push(event("assistant", seq, text="x", delta="x"))
        await waiting  # woken by the declined event
        assert taken == [1]
        assert [e.seq async for e in _drain(sub, 2)] == [2, 3]
        sub.push(event("assistant", 4, text="x", delta="x"))  # nobody waits: queued
        assert taken == [1] and sub.pending


def event(stream: str, seq: int, **data: Any) -> RunEvent:
    return RunEvent("r", "agent:main:s", "sid", "main", stream, seq, seq, data)


class TestOverflow:
    async def test_merged_events_keep_the_text_exact(self) -> None:
        sub = RunSubscription(None, 3)
        sub.push(event("lifecycle", 1, phase="start"))
        sub.push(event("lifecycle", 2, phase="model"))
        text = ""
        for seq in range(3, 13):
            text += f"d{seq} "
            sub.push(event("assistant", seq, text=text, delta=f"d{seq} "))
        sub.push(event("usage", 13, inputTokens=1, outputTokens=10))
        sub.push(event("lifecycle", 14, phase="end"))
        assert len(sub._queue) == 5  # bounded: 3 + the two lifecycle/usage events after it
        got = [(e.stream, e.seq, dict(e.data)) async for e in sub]
        assert got == [
            ("lifecycle", 1, {"phase": "start"}),
            ("lifecycle", 2, {"phase": "model"}),
            ("assistant", 12, {"text": text, "delta": text}),
            ("usage", 13, {"inputTokens": 1, "outputTokens": 10}),
            ("lifecycle", 14, {"phase": "end"}),
        ]

    async def test_an_assistant_event_after_a_lifecycle_event_is_queued(self) -> None:
        sub = RunSubscription(None, 2)
        sub.push(event("lifecycle", 1, phase="start"))
        sub.push(event("lifecycle", 2, phase="model"))
        sub.push(event("assistant", 3, text="a", delta="a"))  # full, but nothing to merge into
        sub.push(event("assistant", 4, text="ab", delta="b"))
        first = await sub.__anext__()
        sub.push(event("assistant", 5, text="abc", delta="c"))
        rest = [await sub.__anext__() for _ in range(2)]
        assert [first.seq, *(e.seq for e in rest)] == [1, 2, 5]
        assert dict(rest[-1].data) == {"text": "abc", "delta": "abc"}

    async def test_reading_while_merging(self) -> None:
        sub = RunSubscription(None, 2)
        sub.push(event("assistant", 1, text="a", delta="a"))
        sub.push(event("assistant", 2, text="ab", delta="b"))
        sub.push(event("assistant", 3, text="abc", delta="c"))  # merged into seq 2
        assert dict((await sub.__anext__()).data) == {"text": "a", "delta": "a"}
        sub.push(event("assistant", 4, text="abcd", delta="d"))  # room again: queued
        assert [dict(e.data) for e in [await sub.__anext__(), await sub.__anext__()]] == [
            {"text": "abc", "delta": "bc"},
            {"text": "abcd", "delta": "d"},
        ]

    async def test_argument_pieces_of_one_tool_call_merge(self) -> None:
        sub = RunSubscription(None, 2)
        start = {"name": "f", "toolCallId": "c1", "index": 0}
        sub.push(event("tool", 1, phase="start", **start))
        sub.push(event("tool", 2, phase="update", **start, delta='{"a'))
        sub.push(event("tool", 3, phase="update", **start, delta='":1}'))
        assert [dict(e.data) async for e in _drain(sub, 2)] == [
            {"phase": "start", **start},
            {"phase": "update", **start, "delta": '{"a":1}'},
        ]

    async def test_pieces_of_different_tool_calls_do_not_merge(self) -> None:
        sub = RunSubscription(None, 1)
        sub.push(event("tool", 1, phase="update", toolCallId="c1", index=0, delta="x"))
        sub.push(event("tool", 2, phase="update", toolCallId="c2", index=1, delta="y"))
        sub.push(event("thinking", 3, text="t", delta="t"))
        assert [e.seq async for e in _drain(sub, 3)] == [1, 2, 3]


async def _drain(sub: RunSubscription, count: int) -> AsyncIterator[RunEvent]:
    for _ in range(count):
        yield await sub.__anext__()


class TestWaitAndWake:
    async def test_wait_returns_when_an_event_is_queued(self) -> None:
        sub = RunSubscription(None, 8)
        waiting = asyncio.create_task(sub.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        sub.push(event("lifecycle", 1, phase="start"))
        await asyncio.wait_for(waiting, 1)
        assert sub.pending

    async def test_wake_returns_without_an_event(self) -> None:
        sub = RunSubscription(None, 8)
        waiting = asyncio.create_task(sub.wait())
        await asyncio.sleep(0)
        sub.wake()
        await asyncio.wait_for(waiting, 1)
        assert not sub.pending

    async def test_wake_does_not_end_an_iteration(self) -> None:
        sub = RunSubscription(None, 8)
        reading = asyncio.create_task(sub.__anext__())
        await asyncio.sleep(0)
        sub.wake()
        await asyncio.sleep(0)
        assert not reading.done()
        sub.push(event("lifecycle", 1, phase="start"))
        assert (await asyncio.wait_for(reading, 1)).seq == 1


class TestLongReplies:
    async def test_each_piece_costs_its_own_length_not_the_text_so_far(
        self, harness: Harness
    ) -> None:
        # Each event carries its stream's text so far (§2.2); built by adding every piece to
        # it, a reply of n characters in small pieces copied O(n²) characters, read or not.
        pieces = tuple(CountedText(f"{n:05d} ") for n in range(4000))
        provider = ScriptedProvider("long", deltas=pieces, reasoning=pieces)
        registry = harness.registry(make_config(("long/m",), apis=("long",)), [provider])
        got: list[RunEvent | SessionChange] = []
        registry.add_listener(got.append)  # a consumer of every event, as the WS fan-out is
        CountedText.copied = 0
        run = registry.submit(req())
        with run.subscribe() as sub:  # and one that writes the deltas, as the HTTP relay does
            deltas: dict[str, list[str]] = {"assistant": [], "thinking": []}
            async for e in sub:
                if e.stream in deltas:
                    deltas[e.stream].append(e.data["delta"])
        outcome = await run.wait()
        whole = "".join(pieces)
        # Some joins of the text at the end, not 4,000 of it: 2 * 48 million characters.
        assert CountedText.copied <= 2 * 2 * len(whole)
        assert outcome.text == outcome.reasoning == whole
        assert {k: "".join(v) for k, v in deltas.items()} == {"assistant": whole, "thinking": whole}
        # The text so far is still each event's, when read.
        texts = [e for e in got if isinstance(e, RunEvent) and e.stream == "assistant"]
        assert [dict(texts[n].data) for n in (0, 2, -1)] == [
            {"text": "".join(pieces[:1]), "delta": pieces[0]},
            {"text": "".join(pieces[:3]), "delta": pieces[2]},
            {"text": whole, "delta": pieces[-1]},
        ]
        assert (await stored(registry))[-1]["content"] == [
            {"type": "thinking", "thinking": whole},
            {"type": "text", "text": whole},
        ]

    def test_a_reply_in_tiny_pieces_is_held_in_about_its_own_size(self) -> None:
        # A piece is a string object of its own (some 50 bytes beside its characters): kept
        # one by one until read, a 1 MB reply in 2-character pieces took 30 MB.
        tracemalloc.start()
        try:
            text = StreamedText()
            for n in range(500_000):
                text.add(f"{n % 100:02d}")
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < 2 * text.length
        assert str(text) == "".join(f"{n % 100:02d}" for n in range(500_000))
        assert text.add("x")["text"] == str(text) and str(text).endswith("99x")

    def test_a_reader_that_stopped_holds_the_deltas_merged_in_about_their_size(self) -> None:
        # Past its bound, a subscription merges the deltas (the overflow policy), kept until
        # read: one by one, some 50 bytes a piece beside its text.
        sub = RunSubscription(None, 4)
        text = StreamedText()
        tracemalloc.start()
        try:
            for seq in range(1, 500_001):
                data = text.add(f"{seq % 100:02d}")
                sub.push(RunEvent("r", "agent:main:s", "sid", "main", "assistant", seq, seq, data))
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < 3 * text.length  # the text and the deltas merged; was 30 times it
        deltas = []
        while sub.pending:
            deltas.append(sub._pop().data["delta"])
        assert "".join(deltas) == str(text)

    async def test_a_tool_calls_arguments_in_tiny_pieces_are_held_in_about_their_size(
        self, harness: Harness
    ) -> None:
        def pieces() -> Iterator[ToolCallDelta]:
            yield ToolCallDelta(0, "call_1", "f", "")
            for n in range(100_000):
                yield ToolCallDelta(0, None, None, f"{n % 100:02d}")

        provider = ScriptedProvider("long", calls=pieces(), block=True)
        registry = harness.registry(make_config(("long/m",), apis=("long",)), [provider])
        tracemalloc.start()
        try:
            run = registry.submit(req())
            await provider.first_delta.wait()  # all its pieces came; it waits for more
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        run.abort()
        outcome = await run.wait()
        assert outcome.tool_calls[0].arguments == "".join(f"{n % 100:02d}" for n in range(100_000))
        assert held < 3 * 200_000  # the arguments so far; were 6 MB in their pieces

    async def test_a_subscriber_that_falls_behind_reads_no_text_so_far(self) -> None:
        # Past its bound (or its text budget) a subscription merges deltas (the overflow
        # policy), which measured each event's text so far: it reads only lengths.
        sub = RunSubscription(None, 8)
        pieces = [f"{n:05d} " for n in range(4000)]
        CountedData.read = 0
        for seq, data in enumerate(CountedData.stream(pieces), start=1):
            sub.push(RunEvent("r", "agent:main:s", "sid", "main", "assistant", seq, seq, data))
            if seq % 1000 == 0:
                sub.push(event("lifecycle", seq, phase="model"))  # an event that is kept
        sub.push(event("lifecycle", 5000, phase="end"))
        deltas = [e.data["delta"] async for e in sub if e.stream == "assistant"]
        assert "".join(deltas) == "".join(pieces)
        assert CountedData.read == 0


class TestListeners:
    async def test_listeners_get_every_event_and_session_change(self, harness: Harness) -> None:
        registry = harness.registry()
        got: list[RunEvent | SessionChange] = []
        registry.add_listener(got.append)
        runs = [registry.submit(req(f"s{i}", "a b c", run_id=f"r{i}")) for i in range(3)]
        subs = [run.subscribe() for run in runs]
        for run, sub in zip(runs, subs, strict=True):
            mine = [e async for e in sub]
            theirs = [e for e in got if isinstance(e, RunEvent) and e.run_id == run.id]
            assert theirs == mine
            assert [e.seq for e in mine] == list(range(1, len(mine) + 1))
        changes = [
            (c.session_key[-2:], c.reason, c.phase) for c in got if isinstance(c, SessionChange)
        ]
        for i in range(3):
            assert [c[1:] for c in changes if c[0] == f"s{i}"] == [
                ("create", None), (None, "start"), (None, "end")
            ]  # fmt: skip
        end = next(c for c in got if isinstance(c, SessionChange) and c.phase == "end")
        assert end.session is not None and end.session.status == "done"
        registry.remove_listener(got.append)
        count = len(got)
        await reply(registry)
        assert len(got) == count

    async def test_a_raising_listener_breaks_nothing(self, harness: Harness) -> None:
        registry = harness.registry()
        got: list[object] = []

        def boom(event: object) -> None:
            raise RuntimeError("listener bug")

        registry.add_listener(boom)
        registry.add_listener(got.append)
        with capture_logs() as logs:
            assert await reply(registry, "s1", "hi") == "[turn 1] hi"
        assert len(got) == 10  # create, start, 7 run events, end
        assert {e["event"] for e in logs} == {"listener_failed"}
        assert len(logs) == 10


class TestAgents:
    async def test_unknown_agent_is_refused_at_submit(self, harness: Harness) -> None:
        registry = harness.registry()
        with pytest.raises(UnknownAgent) as info:
            registry.submit(req("x", agent_id="nope"))
        assert info.value.message == "Unknown agent 'nope'."

    async def test_key_of_another_agent_is_refused(self, harness: Harness) -> None:
        registry = harness.registry()
        with pytest.raises(InvalidSessionKey):
            registry.submit(TurnRequest("main", "agent:ops:x", "r", "hi"))
        with pytest.raises(InvalidSessionKey):
            registry.submit(TurnRequest("main", "not-canonical", "r", "hi"))

    async def test_removed_agent_fails_new_runs_running_ones_finish(self, harness: Harness) -> None:
        stall = ScriptedProvider("stall", deltas=("x",), block=True)
        ops = AgentConfig("ops", (ModelRef("stall", "m"),))
        registry = harness.registry(make_config(agents=[ops], apis=("stall",)), [stall])
        running = registry.submit(req("s1", agent_id="ops"))
        queued = registry.submit(req("s1", agent_id="ops"))
        sub = queued.subscribe()
        await stall.first_delta.wait()
        registry.configure(make_config(apis=("stall",)))
        with pytest.raises(UnknownAgent):
            registry.submit(req("s2", agent_id="ops"))
        running.abort()
        assert (await running.wait()).text == "x"
        outcome = await queued.wait()
        assert outcome.status == "failed" and isinstance(outcome.error, UnknownAgent)
        assert [(e.stream, e.data["phase"], e.data["error"]) async for e in sub] == [
            ("lifecycle", "error", "Unknown agent 'ops'.")
        ]
        transcript = await registry.history("agent:ops:s1")
        assert transcript.total == 2  # only the running turn
