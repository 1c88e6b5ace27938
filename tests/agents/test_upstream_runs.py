"""Runs against real upstream servers through the real ProviderPool: fallback and abort."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.config import AgentConfig, AgentsConfig, ModelRef
from agents.providers.pool import ProviderPool, Timeouts
from agents.registry import SessionRegistry
from agents.runs import TurnRequest
from agents.store import SessionStore
from tests.support.upstreams import FakeAnthropic, FakeOpenAI, Raw, Status, Stream


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SessionStore]:
    store = SessionStore(tmp_path)
    await store.open()
    yield store
    await store.aclose()


async def make_registry(
    store: SessionStore, chain: tuple[str, ...], *upstreams: FakeOpenAI | FakeAnthropic
) -> SessionRegistry:
    providers = {
        f"up{i}": up.provider_config(id=f"up{i}") for i, up in enumerate(upstreams, start=1)
    }
    agent = AgentConfig("main", tuple(ModelRef.parse(ref) for ref in chain))
    registry = SessionRegistry(
        AgentsConfig(agents=(agent,), providers=providers),
        store,
        ProviderPool(Timeouts(connect=1, idle=2)),
    )
    await registry.start()
    return registry


def turn(text: str = "hi", run_id: str = "run-1") -> TurnRequest:
    return TurnRequest("main", "agent:main:s1", run_id, text)


class TestFallback:
    async def test_a_failing_first_model_falls_back_to_the_second_upstream(
        self,
        store: SessionStore,
        openai_upstream: FakeOpenAI,
        anthropic_upstream: FakeAnthropic,
    ) -> None:
        openai_upstream.script(Status(500))
        anthropic_upstream.script(Stream(("from ", "anthropic")))
        registry = await make_registry(
            store, ("up1/fake-model", "up2/fake-model"), openai_upstream, anthropic_upstream
        )
        try:
            run = registry.submit(turn())
            models = [
                (e.data["provider"], e.data["model"])
                async for e in run.subscribe()
                if e.data.get("phase") == "model"
            ]
            outcome = await run.wait()
        finally:
            await registry.aclose()
        assert models == [("up1", "fake-model"), ("up2", "fake-model")]
        assert (outcome.status, outcome.text, outcome.provider) == (
            "completed",
            "from anthropic",
            "up2",
        )
        assert (outcome.usage.input, outcome.usage.output) == (3, 2)  # the upstream's numbers
        assert len(openai_upstream.requests) == len(anthropic_upstream.requests) == 1

    async def test_a_rate_limited_last_model_fails_the_run_as_rate_limited(
        self, store: SessionStore, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Status(500), Status(429, {"Retry-After": "7"}))
        registry = await make_registry(store, ("up1/fake-model", "up1/fake-model"), openai_upstream)
        try:
            outcome = await registry.submit(turn()).wait()
        finally:
            await registry.aclose()
        assert outcome.status == "failed"
        assert outcome.error is not None and outcome.error.message == (
            "upstream provider rate limited"
        )
        assert getattr(outcome.error, "retry_after", None) == 7


class TestUsage:
    async def test_a_count_beyond_64_bits_is_estimated_and_the_turn_kept(
        self, store: SessionStore, openai_upstream: FakeOpenAI
    ) -> None:
        # JSON allows any integer: taken as it came, it failed the turn's write.
        openai_upstream.script(Stream(("fine",), usage=(10**30, 2)))
        registry = await make_registry(store, ("up1/fake-model",), openai_upstream)
        try:
            outcome = await registry.submit(turn()).wait()
            history = await registry.history("agent:main:s1")
        finally:
            await registry.aclose()
        row = await store.get("agent:main:s1")
        assert (outcome.status, outcome.text) == ("completed", "fine")
        assert 0 < outcome.usage.input < 100  # the estimate (agents-sessions.md §7)
        assert row is not None
        assert (row.input_tokens, row.output_tokens) == (outcome.usage.input, outcome.usage.output)
        assert history.messages[-1].to_transcript()["content"][0]["text"] == "fine"


class TestAbort:
    async def test_abort_ends_a_streaming_run_within_100ms_and_closes_the_upstream(
        self, store: SessionStore, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(tuple(f"w{i} " for i in range(100)), delay=0.05))
        registry = await make_registry(store, ("up1/fake-model",), openai_upstream)
        try:
            run = registry.submit(turn())
            async for event in run.subscribe():
                if event.stream == "assistant":
                    break
            began = time.perf_counter()
            assert run.abort()
            outcome = await run.wait()
            elapsed = time.perf_counter() - began
            await openai_upstream.last.wait_gone(within=1.0)
            history = await registry.history("agent:main:s1")
        finally:
            await registry.aclose()
        assert elapsed < 0.1, elapsed
        assert (outcome.status, outcome.stop_reason) == ("aborted", "aborted")
        assert outcome.text.startswith("w0 ")
        assistant = history.messages[-1].to_transcript()
        assert assistant["aborted"] is True
        assert assistant["content"][0]["text"] == outcome.text

    async def test_the_session_takes_its_next_turn_at_once_after_an_abort(
        self, store: SessionStore, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("slow",) * 50, delay=0.1), Stream(("next",)))
        registry = await make_registry(store, ("up1/fake-model",), openai_upstream)
        try:
            first = registry.submit(turn(run_id="run-1"))
            second = registry.submit(turn("and then?", run_id="run-2"))
            async for event in first.subscribe():
                if event.stream == "assistant":
                    break
            first.abort()
            async with asyncio.timeout(1):
                outcome = await second.wait()
        finally:
            await registry.aclose()
        assert (outcome.status, outcome.text) == ("completed", "next")
        # The second turn's context holds the first (aborted) turn: user, partial assistant
        # (it asks something else: the same again would replace the aborted turn).
        sent = openai_upstream.requests[1].body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]


class TestAnthropicReplay:
    async def test_a_whitespace_only_reply_is_not_replayed_to_anthropic(
        self, store: SessionStore, anthropic_upstream: FakeAnthropic
    ) -> None:
        # Anthropic refuses a turn of whitespace alone ("text content blocks must contain
        # non-whitespace text"): replayed, the stored reply failed every later turn.
        anthropic_upstream.script(Stream(("\n\n",)), Stream(("fine",)))
        registry = await make_registry(store, ("up1/fake-model",), anthropic_upstream)
        try:
            first = await registry.submit(turn("first", "run-1")).wait()
            second = await registry.submit(turn("second", "run-2")).wait()
        finally:
            await registry.aclose()
        assert (first.status, first.text) == ("completed", "\n\n")
        assert second.status == "completed"
        assert anthropic_upstream.requests[1].body["messages"] == [
            {"role": "user", "content": "first\n\nsecond"}
        ]


class TestSlowSubscriber:
    async def test_interleaved_reasoning_and_text_keep_a_stalled_queue_bounded(
        self, store: SessionStore, openai_upstream: FakeOpenAI
    ) -> None:
        # Some servers send a chunk's reasoning and its text together: the run's events then
        # alternate between the two streams. A reader that fell behind (an HTTP client reading
        # slowly) held every one of them, each with its stream's cumulative text: quadratic
        # memory in the reply's length.
        def chunk(i: int) -> bytes:
            delta = {"content": f" t{i}", "reasoning_content": f" r{i}"}
            body = {"id": "c", "object": "chat.completion.chunk", "created": 0,
                    "model": "fake-model", "choices": [{"index": 0, "delta": delta}]}  # fmt: skip
            return f"data: {json.dumps(body)}\n\n".encode()

        count = 3000
        end = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        openai_upstream.script(Raw((*(chunk(i) for i in range(count)), end, b"data: [DONE]\n\n")))
        registry = await make_registry(store, ("up1/fake-model",), openai_upstream)
        try:
            run = registry.submit(turn())
            stalled = run.subscribe(maxsize=16)
            outcome = await run.wait()
        finally:
            await registry.aclose()
        assert outcome.text == "".join(f" t{i}" for i in range(count))
        assert outcome.reasoning == "".join(f" r{i}" for i in range(count))
        assert len(stalled._queue) <= 16 + 4
        late = [e async for e in stalled]
        texts = [e for e in late if e.stream == "assistant"]
        thoughts = [e for e in late if e.stream == "thinking"]
        assert "".join(e.data["delta"] for e in texts) == outcome.text
        assert "".join(e.data["delta"] for e in thoughts) == outcome.reasoning
        assert (texts[-1].data["text"], thoughts[-1].data["text"]) == (
            outcome.text, outcome.reasoning
        )  # fmt: skip
        assert late[-1].is_terminal
