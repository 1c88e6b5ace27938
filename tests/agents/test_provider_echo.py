"""The built-in `echo` provider, as agents-sessions.md §6.2 specifies it."""

from __future__ import annotations

import asyncio
import itertools
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest

from agents.config import ModelRef
from agents.providers.base import (
    ChatMessage,
    Finish,
    ImageInput,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from agents.providers.echo import EchoProvider

PNG = ImageInput("image/png", "iVBORw0KGgo=", 8)


def request(
    text: str = "hello there",
    *,
    history: tuple[ChatMessage, ...] = (),
    system: str = "",
    params: Mapping[str, Any] | None = None,
    images: tuple[ImageInput, ...] = (),
) -> ProviderRequest:
    return ProviderRequest(
        ref=ModelRef("echo", "echo"),
        system=system,
        messages=(*history, ChatMessage("user", text, images)),
        params=dict(params or {}),
    )


async def run(req: ProviderRequest) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []
    await EchoProvider().stream(req, events.append)
    return events


def deltas(events: list[ProviderEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


class TestReply:
    async def test_first_turn_echoes_the_text(self) -> None:
        assert "".join(deltas(await run(request("hello there")))) == "[turn 1] hello there"

    async def test_turn_counts_every_user_message_in_the_context(self) -> None:
        history = (
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "[turn 1] hi"),
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "[turn 2] hi"),
        )
        assert "".join(deltas(await run(request("hi", history=history)))) == "[turn 3] hi"

    async def test_image_only_turn_says_so(self) -> None:
        events = await run(request("", images=(PNG,)))
        assert "".join(deltas(events)) == "[turn 1] User sent image(s) with no text."

    async def test_events_are_deltas_then_usage_then_finish(self) -> None:
        events = await run(request("hello there"))
        assert events == [
            TextDelta("[turn"),
            TextDelta(" 1]"),
            TextDelta(" hello"),
            TextDelta(" there"),
            Usage(2, 4),
            Finish("stop"),
        ]


class TestDeltaSplit:
    async def test_spec_example_splits_into_words_with_leading_whitespace(self) -> None:
        assert deltas(await run(request("hello there"))) == ["[turn", " 1]", " hello", " there"]

    async def test_whitespace_is_preserved_exactly(self) -> None:
        text = "a\n\tb   c"
        got = deltas(await run(request(text)))
        assert got == ["[turn", " 1]", " a", "\n\tb", "   c"]
        assert "".join(got) == f"[turn 1] {text}"

    async def test_trailing_whitespace_is_its_own_delta(self) -> None:
        got = deltas(await run(request("end \n")))
        assert got == ["[turn", " 1]", " end", " \n"]

    async def test_no_delta_is_empty(self) -> None:
        assert all(deltas(await run(request("  x  y  "))))


class TestDelay:
    async def test_delay_ms_sleeps_between_consecutive_deltas(self) -> None:
        times: list[float] = []

        def deliver(event: ProviderEvent) -> None:
            if isinstance(event, TextDelta):
                times.append(time.monotonic())

        await EchoProvider().stream(request(params={"delayMs": 100}), deliver)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) == 3
        assert all(0.09 <= gap < 0.3 for gap in gaps), gaps

    async def test_no_delay_by_default(self) -> None:
        start = time.monotonic()
        await run(request("a b c d e f g h"))
        assert time.monotonic() - start < 0.05

    async def test_first_delta_is_not_delayed(self) -> None:
        got: list[ProviderEvent] = []
        start = time.monotonic()
        task = asyncio.create_task(
            EchoProvider().stream(request(params={"delayMs": 500}), got.append)
        )
        while not got:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - start
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert got == [TextDelta("[turn")]
        assert elapsed < 0.1

    async def test_abort_during_the_sleep_ends_at_once(self) -> None:
        got: list[ProviderEvent] = []

        async def consume() -> None:
            await EchoProvider().stream(request(params={"delayMs": 5000}), got.append)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 0.1
        assert got == [TextDelta("[turn")]


class TestTokenCap:
    @pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
    async def test_cap_below_delta_count_stops_with_length(self, name: str) -> None:
        events = await run(request("hello there", params={name: 3}))
        assert deltas(events) == ["[turn", " 1]", " hello"]
        assert events[-1] == Finish("length")

    async def test_max_completion_tokens_wins_over_max_tokens(self) -> None:
        events = await run(request(params={"max_completion_tokens": 2, "max_tokens": 3}))
        assert deltas(events) == ["[turn", " 1]"]
        assert events[-1] == Finish("length")

    @pytest.mark.parametrize("cap", [4, 100])
    async def test_cap_not_below_delta_count_finishes_with_stop(self, cap: int) -> None:
        events = await run(request("hello there", params={"max_tokens": cap}))
        assert len(deltas(events)) == 4
        assert events[-1] == Finish("stop")

    async def test_usage_counts_only_emitted_text(self) -> None:
        events = await run(request("hello there", params={"max_tokens": 3}))
        assert Usage(2, 3) in events

    async def test_other_sampling_params_are_ignored(self) -> None:
        params = {"temperature": 0, "top_p": 0.1, "stop": ["hello"], "seed": 1}
        assert deltas(await run(request(params=params))) == ["[turn", " 1]", " hello", " there"]


class TestUsage:
    async def test_spec_example_hello_there(self) -> None:
        events = await run(request("hello there"))
        assert [e for e in events if isinstance(e, Usage)] == [Usage(input=2, output=4)]

    async def test_input_counts_system_and_history_words(self) -> None:
        history = (ChatMessage("user", "one two"), ChatMessage("assistant", "[turn 1] one two"))
        events = await run(request("three", history=history, system="be brief please"))
        # system 3 + history 2 + 4 + current 1 words; output "[turn 2] three" is 3 words.
        assert Usage(10, 3) in events


class TestLargeRequests:
    async def test_a_large_request_is_echoed_in_memory_about_its_size(self) -> None:
        # Its words were listed at once, as deltas and to count them (input and output):
        # some 60 bytes a word beside its text, 21 MB for this 512 KiB one.
        text = "ab " * (512 * 1024 // 3)
        req = request(text)
        words = len(text.split())
        count = [0, 0]

        def deliver(event: ProviderEvent) -> None:
            if isinstance(event, TextDelta):
                count[0] += 1
                count[1] += len(event.text)
            elif isinstance(event, Usage):
                assert event == Usage(words, words + 2)

        tracemalloc.start()
        try:
            await EchoProvider().stream(req, deliver)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == [words + 3, len(f"[turn 1] {text}")]  # and the trailing space
        # The reply (a copy of the text) and a few MB whatever its size (`word_count`).
        assert peak < len(text) + 4 * 1024 * 1024

    @pytest.mark.parametrize("cap", [-3, -1, 0])
    async def test_a_cap_below_one_from_an_agents_params_cuts_as_before(self, cap: int) -> None:
        # The HTTP request's cap is at least 1; an agent's configured params are not checked.
        events = await run(request("hello there", params={"max_tokens": cap}))
        assert deltas(events) == ["[turn", " 1]", " hello", " there"][:cap]
        assert events[-1] == Finish("length")


class TestSessions:
    async def test_same_user_text_twice_counts_turns(self) -> None:
        first = "".join(deltas(await run(request("hi"))))
        history = (ChatMessage("user", "hi"), ChatMessage("assistant", first))
        second = "".join(deltas(await run(request("hi", history=history))))
        assert (first, second) == ("[turn 1] hi", "[turn 2] hi")


WEATHER = {"type": "function", "function": {"name": "get_weather"}}


class TestToolMode:
    async def test_call_calls_an_offered_tool_in_fragments(self) -> None:
        req = request('call get_weather {"city": "Paris"}', params={"tools": [WEATHER]})
        events = await run(req)
        calls = [e for e in events if isinstance(e, ToolCallDelta)]
        assert calls[0] == ToolCallDelta(0, "call_echo_1_0", "get_weather", "")
        assert all(c.id is None and c.name is None for c in calls[1:])
        assert "".join(c.arguments for c in calls) == '{"city":"Paris"}'
        assert len(calls) == 3  # 16 characters of arguments, 8 at a time
        assert events[-1] == Finish("tool_calls")
        assert deltas(events) == []

    async def test_without_arguments_the_call_gets_an_empty_object(self) -> None:
        events = await run(request("call get_weather", params={"tools": [WEATHER]}))
        assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == "{}"

    @pytest.mark.parametrize(
        ("text", "params"),
        [
            ("call get_weather {}", {}),
            ("call get_weather {}", {"tools": [WEATHER], "tool_choice": "none"}),
            ("call other {}", {"tools": [WEATHER]}),
            ("call get_weather {not json", {"tools": [WEATHER]}),
            ("call get_weather [1]", {"tools": [WEATHER]}),
        ],
    )
    async def test_otherwise_it_echoes(self, text: str, params: dict[str, Any]) -> None:
        assert "".join(deltas(await run(request(text, params=params)))) == f"[turn 1] {text}"

    async def test_tool_results_are_answered_with(self) -> None:
        call = ToolCall("call_echo_1_0", "get_weather", "{}")
        req = ProviderRequest(
            ref=ModelRef("echo", "echo"),
            system="",
            messages=(
                ChatMessage("user", "call get_weather {}"),
                ChatMessage("assistant", "", tool_calls=(call,)),
                ChatMessage("tool", "sunny", tool_call_id="call_echo_1_0"),
                ChatMessage("tool", "22C", tool_call_id="other", tool_name="temperature"),
            ),
            params={"tools": [WEATHER]},
        )
        events = await run(req)
        assert "".join(deltas(events)) == "[turn 1] get_weather: sunny; temperature: 22C"
        assert events[-1] == Finish("stop")
