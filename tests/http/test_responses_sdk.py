"""The real `openai` SDK's Responses API against clawgate on a real socket: plain, streamed,
a function tool loop (echo's tool mode, and a fake OpenAI-compatible upstream that is a real
HTTP server), `previous_response_id`, and GET/DELETE of stored responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, get_args

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import FunctionToolParam
from openai.types.responses.response_includable import ResponseIncludable
from pydantic import BaseModel

from gateway.http import openresponses
from tests.support.configs import merged
from tests.support.counting import BodiesRead
from tests.support.http_client import TOKEN, Client, MakeClient, anthropic_agent, fake_provider
from tests.support.upstreams import (
    FakeAnthropic,
    FakeOpenAI,
    FakeToolCall,
    Raw,
    Status,
    Stream,
    openai_sse,
)

RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}


# An image as an input item list shows it (its data is not stored), without the null fields.
IMAGE_PART = {"type": "input_image", "detail": "auto"}
INCLUDABLE: tuple[str, ...] = get_args(ResponseIncludable)

CLOCK: FunctionToolParam = {"type": "function", "name": "get_time", "parameters": None,
                             "strict": False}  # fmt: skip
CLOCK_CALL = {"index": 0, "id": "call_t", "type": "function",
              "function": {"name": "get_time", "arguments": "{}"}}  # fmt: skip


async def sdk_for(client: Client) -> AsyncOpenAI:
    base_url = str(client.server.make_url("/v1"))
    return AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0)


@pytest.fixture
async def sdk(gateway: MakeClient) -> AsyncIterator[AsyncOpenAI]:
    async with await sdk_for(await gateway(RESPONSES_ON)) as sdk:
        yield sdk


class TestCreate:
    async def test_plain_text_answer(self, sdk: AsyncOpenAI) -> None:
        response = await sdk.responses.create(model="openclaw", input="hello there")
        assert response.id.startswith("resp_")
        assert response.object == "response"
        assert response.status == "completed"
        assert response.model == "openclaw"
        assert response.output_text == "[turn 1] hello there"
        [message] = response.output
        assert message.type == "message"
        assert message.id.startswith("msg_")
        assert message.role == "assistant"
        assert response.usage is not None
        assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 4)
        assert response.usage.total_tokens == 6

    async def test_instructions_and_message_items(self, sdk: AsyncOpenAI) -> None:
        response = await sdk.responses.create(
            model="openclaw",
            instructions="Be brief.",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        )
        assert response.instructions == "Be brief."
        assert response.output_text == "[turn 1] hi"

    async def test_max_output_tokens_makes_it_incomplete(self, sdk: AsyncOpenAI) -> None:
        response = await sdk.responses.create(
            model="openclaw", input="one two three four", max_output_tokens=3
        )
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.output_text == "[turn 1] one"

    @pytest.mark.parametrize("stream", [False, True])
    async def test_reasoning_tokens_the_upstream_reports_are_in_usage(
        self, gateway: MakeClient, upstream: FakeOpenAI, stream: bool
    ) -> None:
        """OpenAI's `completion_tokens_details.reasoning_tokens` is the response's
        `output_tokens_details.reasoning_tokens`; a count larger than the output is not one."""
        usage = {
            "prompt_tokens": 5,
            "completion_tokens": 40,
            "total_tokens": 45,
            "completion_tokens_details": {"reasoning_tokens": 32},
        }
        bogus = {**usage, "completion_tokens_details": {"reasoning_tokens": 41}}
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "Hi."}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]

        def body(reported: dict[str, Any]) -> bytes:
            frames = [*chunks, {"choices": [], "usage": reported}]
            return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in frames) + (
                b"data: [DONE]\n\n"
            )

        upstream.script(Raw((body(usage),)), Raw((body(bogus),)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            counts, ids = [], []
            for _ in range(2):
                if stream:
                    async with sdk.responses.stream(model="openclaw", input="hi") as s:
                        response = await s.get_final_response()
                else:
                    response = await sdk.responses.create(model="openclaw", input="hi")
                assert response.usage is not None
                assert response.usage.output_tokens == 40
                counts.append(response.usage.output_tokens_details.reasoning_tokens)
                ids.append(response.id)
            fetched = await sdk.responses.retrieve(ids[0])
        assert counts == [32, 0]
        assert fetched.usage is not None
        assert fetched.usage.output_tokens_details.reasoning_tokens == 32

    async def test_an_unknown_agent_raises_bad_request(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.responses.create(model="openclaw/nobody", input="hi")
        assert caught.value.body == {
            "message": "Unknown agent 'nobody'.",
            "type": "invalid_request_error",
            "param": "model",
            "code": None,
        }


class TestStreaming:
    async def test_the_stream_helper_yields_text_and_the_final_response(
        self, sdk: AsyncOpenAI
    ) -> None:
        async with sdk.responses.stream(model="openclaw", input="hello streaming world") as s:
            deltas = [e.delta async for e in s if e.type == "response.output_text.delta"]
            final = await s.get_final_response()
        assert "".join(deltas) == "[turn 1] hello streaming world"
        assert final.status == "completed"
        assert final.output_text == "[turn 1] hello streaming world"

    async def test_stream_true_event_types_in_order(self, sdk: AsyncOpenAI) -> None:
        stream = await sdk.responses.create(model="openclaw", input="hi", stream=True)
        types = [event.type async for event in stream]
        assert types == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            *["response.output_text.delta"] * 3,  # "[turn", " 1]", " hi"
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]

    @pytest.mark.parametrize(
        "deltas",
        [
            pytest.param(
                ({"reasoning_content": "Hmm"}, {"content": "A"},
                 {"reasoning_content": ", more"}, {"content": "B"}),
                id="alternating",
            ),
            pytest.param(
                ({"reasoning_content": "Hmm", "content": "A"},
                 {"reasoning_content": ", more", "content": "B"}),
                id="both-in-one-chunk",
            ),
        ],
    )  # fmt: skip
    async def test_interleaved_reasoning_and_text_stream_as_the_response_answers(
        self, gateway: MakeClient, upstream: FakeOpenAI, deltas: tuple[dict[str, str], ...]
    ) -> None:
        """A server that alternates reasoning and text, or sends both in one chunk (the
        reasoning comes first): as at OpenAI, each stretch is an item, streamed after the
        one before is done, and the final, stored and non-streamed responses have the same
        items."""
        chunks = openai_sse(*deltas)
        upstream.script(Raw((chunks,)), Raw((chunks,)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            async with sdk.responses.stream(model="openclaw", input="think") as s:
                added = [e.item.type async for e in s if e.type == "response.output_item.added"]
                streamed = await s.get_final_response()
            created = await sdk.responses.create(model="openclaw", input="think")
            stored = await sdk.responses.retrieve(streamed.id)

        def shape(response: Any) -> list[tuple[str, str]]:
            return [
                (item.type, "".join(part.text for part in item.content or ()))
                for item in response.output
            ]

        assert added == ["reasoning", "message", "reasoning", "message"]
        assert shape(streamed) == [
            ("reasoning", "Hmm"), ("message", "A"), ("reasoning", ", more"), ("message", "B")
        ]  # fmt: skip
        assert shape(created) == shape(streamed) == shape(stored)
        assert streamed.output_text == "AB"

    @pytest.mark.parametrize(
        "deltas",
        [
            pytest.param(({"content": "A"}, {"reasoning_content": "Hmm"}), id="text-first"),
            pytest.param(({"tool_calls": [CLOCK_CALL]}, {"content": "A"}), id="call-first"),
            pytest.param(
                ({"content": "A"}, {"tool_calls": [CLOCK_CALL]}, {"reasoning_content": "Hmm"}),
                id="text-call-reasoning",
            ),
        ],
    )
    async def test_items_in_a_rarer_order_are_in_that_order_everywhere(
        self, gateway: MakeClient, upstream: FakeOpenAI, deltas: tuple[dict[str, Any], ...]
    ) -> None:
        """Items are in the order they began, as OpenAI gives them: the stream's
        `output_index`es are positions in the final object, the stored one and the
        non-streamed one, whatever order the server sent text, reasoning and calls in."""
        chunks = openai_sse(*deltas)
        upstream.script(Raw((chunks,)), Raw((chunks,)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            async with sdk.responses.stream(model="openclaw", input="x", tools=[CLOCK]) as s:
                added = [
                    (e.output_index, e.item.type)
                    async for e in s
                    if e.type == "response.output_item.added"
                ]
                streamed = await s.get_final_response()
            created = await sdk.responses.create(model="openclaw", input="x", tools=[CLOCK])
            stored = await sdk.responses.retrieve(streamed.id)

        def kinds(response: Any) -> list[str]:
            return [item.type for item in response.output]

        assert added == list(enumerate(kinds(streamed)))
        assert kinds(created) == kinds(stored) == kinds(streamed)
        assert [added_type for _, added_type in added] == [
            {"content": "message", "reasoning_content": "reasoning", "tool_calls": "function_call"}[
                next(iter(delta))
            ]
            for delta in deltas
        ]

    async def test_the_text_of_a_call_first_answer_streams_while_it_is_written(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """The call is done when the text begins (as OpenAI's items come one after
        another): the text's deltas reach the client while the upstream is still writing
        the answer, not whole at its end."""
        call = {"index": 0, "id": "call_t", "type": "function",
                "function": {"name": "get_time", "arguments": "{}"}}  # fmt: skip
        begun = openai_sse({"tool_calls": [call]}, {"content": "Checking"})
        begun = begun[: begun.index(b'data: {"choices": [{"index": 0, "delta": {}')]
        rest = openai_sse({"content": " the clock."})
        # The rest only when the client has gone (the test never waits that long).
        upstream.script(Raw((begun, rest), delay=60))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            stream = await sdk.responses.create(
                model="openclaw", input="time?", tools=[CLOCK], stream=True
            )
            seen: list[tuple[str, int | None]] = []
            async for event in stream:
                seen.append((event.type, getattr(event, "output_index", None)))
                if event.type == "response.output_text.delta":
                    assert event.delta == "Checking"
                    break
            assert not upstream.last.completed
            await stream.close()
        assert [(kind.removeprefix("response."), index) for kind, index in seen] == [
            ("created", None), ("in_progress", None),
            ("output_item.added", 0), ("function_call_arguments.delta", 0),
            ("function_call_arguments.done", 0), ("output_item.done", 0),
            ("output_item.added", 1), ("content_part.added", 1), ("output_text.delta", 1),
        ]  # fmt: skip


class TestFunctionToolLoop:
    async def test_echo_calls_the_tool_and_answers_with_its_output(self, sdk: AsyncOpenAI) -> None:
        first = await sdk.responses.create(
            model="openclaw", input='call get_weather {"city":"Paris"}', tools=[WEATHER]
        )
        [call] = first.output
        assert call.type == "function_call"
        assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
        assert call.call_id == "call_echo_1_0"
        second = await sdk.responses.create(
            model="openclaw",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
            tools=[WEATHER],
        )
        assert second.previous_response_id == first.id
        assert second.output_text == "[turn 1] get_weather: sunny"

    async def test_streamed_call_arguments_arrive_in_pieces(self, sdk: AsyncOpenAI) -> None:
        async with sdk.responses.stream(
            model="openclaw", input='call get_weather {"city":"Paris"}', tools=[WEATHER]
        ) as s:
            pieces = [
                e.delta async for e in s if e.type == "response.function_call_arguments.delta"
            ]
            final = await s.get_final_response()
        assert len(pieces) > 1
        [call] = final.output
        assert call.type == "function_call"
        assert "".join(pieces) == call.arguments == '{"city":"Paris"}'

    async def test_a_call_without_arguments_followed_by_text_streams_its_arguments(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A parameterless function named, then text: the call's arguments are `{}`, as the
        non-streamed response has them, not empty."""
        call = {"index": 0, "id": "call_t", "type": "function",
                "function": {"name": "get_time", "arguments": ""}}  # fmt: skip
        chunks = openai_sse({"tool_calls": [call]}, {"content": "Checking the clock."})
        upstream.script(Raw((chunks,)), Raw((chunks,)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        tool: FunctionToolParam = {"type": "function", "name": "get_time", "parameters": None,
                                   "strict": False}  # fmt: skip
        async with await sdk_for(client) as sdk:
            async with sdk.responses.stream(model="openclaw", input="time?", tools=[tool]) as s:
                streamed = await s.get_final_response()
            created = await sdk.responses.create(model="openclaw", input="time?", tools=[tool])
        for response in (streamed, created):
            [fc] = [item for item in response.output if item.type == "function_call"]
            assert (fc.call_id, fc.arguments) == ("call_t", "{}")

    async def test_arguments_that_come_after_the_next_call_began_reach_their_call(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Servers that stream parallel calls side by side: a fragment of the first call
        after the second began is in the stream, and in the streamed final object, as in
        the non-streamed one."""

        def call(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
            fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
            if name is not None:
                fragment.update(id=f"call_{index}", type="function")
                fragment["function"]["name"] = name
            return {"tool_calls": [fragment]}

        chunks = openai_sse(
            call(0, '{"city":', "get_weather"),
            call(1, '{"city":"Rome"}', "get_weather"),
            call(0, '"Oslo"}'),
        )
        upstream.script(Raw((chunks,)), Raw((chunks,)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            async with sdk.responses.stream(model="openclaw", input="x", tools=[WEATHER]) as s:
                pieces: dict[int, str] = {}
                async for event in s:
                    if event.type == "response.function_call_arguments.delta":
                        pieces[event.output_index] = pieces.get(event.output_index, "") + (
                            event.delta
                        )
                streamed = await s.get_final_response()
            created = await sdk.responses.create(model="openclaw", input="x", tools=[WEATHER])
        whole = [("call_0", '{"city":"Oslo"}'), ("call_1", '{"city":"Rome"}')]
        for response in (streamed, created):
            calls = [item for item in response.output if item.type == "function_call"]
            assert [(c.call_id, c.arguments) for c in calls] == whole
        assert pieces == {0: whole[0][1], 1: whole[1][1]}

    async def test_the_whole_history_resent_without_previous_response_id(
        self, sdk: AsyncOpenAI
    ) -> None:
        ask: list[Any] = [{"role": "user", "content": 'call get_weather {"city":"Rome"}'}]
        first = await sdk.responses.create(model="openclaw", input=ask, tools=[WEATHER])
        call = first.output[0]
        assert call.type == "function_call"
        history = [
            *ask,
            *(item.model_dump(exclude_none=True) for item in first.output),
            {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
        ]
        second = await sdk.responses.create(model="openclaw", input=history, tools=[WEATHER])
        assert second.output_text == "[turn 1] get_weather: rainy"

    async def test_an_output_that_calls_before_its_text_can_be_sent_back_whole(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A server that calls first, then writes: the output's items are in that order,
        and sent back as `input` they are one assistant message with its calls, followed
        by the results, as every upstream wants them."""
        chunks = openai_sse({"tool_calls": [CLOCK_CALL]}, {"content": "Checking."})
        upstream.script(Raw((chunks,)), Stream(("Noon.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            ask: list[Any] = [{"role": "user", "content": "time?"}]
            first = await sdk.responses.create(model="openclaw", input=ask, tools=[CLOCK])
            assert [item.type for item in first.output] == ["function_call", "message"]
            history = [
                *ask,
                *(item.model_dump(exclude_none=True) for item in first.output),
                {"type": "function_call_output", "call_id": "call_t", "output": "12:00"},
            ]
            second = await sdk.responses.create(model="openclaw", input=history, tools=[CLOCK])
        assert second.output_text == "Noon."
        sent = upstream.last.body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[1]["content"] == "Checking."
        assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_t"]

    async def test_against_an_openai_compatible_upstream(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(
            Stream(
                (), tool_calls=(FakeToolCall("call_up_1", "get_weather", ('{"city":', '"Oslo"}')),)
            ),
            Stream(("It is cold", " in Oslo.")),
        )
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            first = await sdk.responses.create(
                model="openclaw", input="Weather in Oslo?", tools=[WEATHER], user="alice"
            )
            assert upstream.last.body["tools"] == [
                {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
            ]
            call = first.output[0]
            assert call.type == "function_call"
            assert (call.call_id, call.arguments) == ("call_up_1", '{"city":"Oslo"}')
            second = await sdk.responses.create(
                model="openclaw",
                previous_response_id=first.id,
                input=[{"type": "function_call_output", "call_id": "call_up_1", "output": "-5C"}],
                tools=[WEATHER],
            )
        assert second.output_text == "It is cold in Oslo."
        sent = upstream.last.body["messages"]
        assert sent[-2]["tool_calls"][0]["id"] == "call_up_1"
        assert sent[-1] == {"role": "tool", "tool_call_id": "call_up_1", "content": "-5C"}


class TestPreviousResponseId:
    async def test_continues_the_session(self, sdk: AsyncOpenAI) -> None:
        first = await sdk.responses.create(model="openclaw", input="one")
        second = await sdk.responses.create(
            model="openclaw", input="two", previous_response_id=first.id
        )
        assert second.output_text == "[turn 2] two"
        third = await sdk.responses.create(
            model="openclaw", input="three", previous_response_id=second.id
        )
        assert third.output_text == "[turn 3] three"

    async def test_an_unknown_id_is_previous_response_not_found(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.responses.create(
                model="openclaw", input="x", previous_response_id="resp_nope"
            )
        assert caught.value.body == {
            "message": "Previous response with id 'resp_nope' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }

    async def test_a_response_not_stored_cannot_be_continued(self, sdk: AsyncOpenAI) -> None:
        first = await sdk.responses.create(model="openclaw", input="one", store=False)
        with pytest.raises(openai.BadRequestError):
            await sdk.responses.create(model="openclaw", input="two", previous_response_id=first.id)

    async def test_a_streamed_response_can_be_continued(self, sdk: AsyncOpenAI) -> None:
        async with sdk.responses.stream(model="openclaw", input="one") as s:
            first = await s.get_final_response()
        second = await sdk.responses.create(
            model="openclaw", input="two", previous_response_id=first.id
        )
        assert second.output_text == "[turn 2] two"


class TestItemsSentAgain:
    """A client that continues a response and sends its output items again (they are in
    the context already): as at OpenAI, a 400 naming the first such item, rather than the
    model given the reply twice, its calls answered `No result provided` in between."""

    async def test_an_output_item_of_the_previous_response_is_refused(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Raw((openai_sse({"content": "A"}, {"tool_calls": [CLOCK_CALL]}),)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            asked = await sdk.responses.create(model="openclaw", input="time?", tools=[CLOCK])
            result = {"type": "function_call_output", "call_id": "call_t", "output": "noon"}
            sent_again: Any = [item.model_dump(exclude_none=True) for item in asked.output]
            for repeated in (sent_again, sent_again[1:]):
                with pytest.raises(openai.BadRequestError) as caught:
                    await sdk.responses.create(
                        model="openclaw", input=[*repeated, result], tools=[CLOCK],
                        previous_response_id=asked.id,
                    )  # fmt: skip
                assert caught.value.body == {
                    "message": f"Duplicate item found with id {repeated[0]['id']}. Remove"
                    " duplicate items from your input and try again.",
                    "type": "invalid_request_error",
                    "param": "input",
                    "code": None,
                }
            assert len(upstream.requests) == 1
            # Without `previous_response_id` they are the conversation the client sends.
            answered = await sdk.responses.create(
                model="openclaw",
                input=[{"role": "user", "content": "time?"}, *sent_again, result],
                tools=[CLOCK],
            )
            assert answered.status == "completed"
            # Sent alone, the result continues the response.
            await sdk.responses.create(
                model="openclaw", input=[result], tools=[CLOCK], previous_response_id=asked.id
            )
        assert upstream.last.body["messages"][-1] == {
            "role": "tool", "tool_call_id": "call_t", "content": "noon"
        }  # fmt: skip

    async def test_the_check_reads_the_output_ids_alone_of_a_large_response(
        self, gateway: MakeClient, upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The previous response's body holds its whole output: the check of the ids an
        input carries reads their ids alone, and finds each all the same."""
        calls = [
            {"index": n, "id": f"call_{n}", "type": "function",
             "function": {"name": "get_time", "arguments": json.dumps({"pad": "p" * 20_000})}}
            for n in range(50)
        ]  # fmt: skip
        upstream.script(Raw((openai_sse({"content": "A" * 1_000_000}, {"tool_calls": calls}),)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            asked = await sdk.responses.create(model="openclaw", input="time?", tools=[CLOCK])
            assert len(asked.output) == 51
            bodies = BodiesRead(monkeypatch)
            results: Any = [
                {"type": "function_call_output", "call_id": f"call_{n}", "output": "noon"}
                for n in range(50)
            ]
            for repeated in (asked.output[0], asked.output[-1]):
                with pytest.raises(openai.BadRequestError) as caught:
                    await sdk.responses.create(
                        model="openclaw", input=[repeated.model_dump(exclude_none=True), *results],
                        tools=[CLOCK], previous_response_id=asked.id,
                    )  # fmt: skip
                assert caught.value.body["message"] == (
                    f"Duplicate item found with id {repeated.id}. Remove duplicate items"
                    " from your input and try again."
                )
            mine: Any = {"type": "message", "id": "msg_mine", "role": "user", "content": "ok?"}
            answered = await sdk.responses.create(
                model="openclaw", input=[*results, mine], tools=[CLOCK],
                previous_response_id=asked.id,
            )  # fmt: skip
        assert answered.status == "completed"
        assert bodies.chars == 0

    async def test_an_item_of_an_earlier_response_of_the_chain_is_refused(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Not only the previous response's output: any item of the chain the request
        continues (an earlier response's output, an input item as `input_items` lists it)
        sent again is a 400 naming it; an item of another conversation is the client's."""
        upstream.script(
            Raw((openai_sse({"content": "A"}, {"tool_calls": [CLOCK_CALL]}),)),
            Stream(("B",)), Stream(("other",)), Stream(("C",)),
        )  # fmt: skip
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            asked = await sdk.responses.create(model="openclaw", input="time?", tools=[CLOCK])
            result: Any = {"type": "function_call_output", "call_id": "call_t", "output": "1"}
            answered = await sdk.responses.create(
                model="openclaw", input=[result], tools=[CLOCK], previous_response_id=asked.id
            )
            listed = (await sdk.responses.input_items.list(answered.id, order="asc")).data
            other = await sdk.responses.create(model="openclaw", input="other")
            dumped = [
                item.model_dump(exclude_none=True)
                for item in (*asked.output, *listed, *other.output)
            ]
            question, sent_result = listed[0].model_dump(exclude_none=True), dumped[-2]
            for repeated in ([*dumped[:2]], [question], [sent_result]):
                with pytest.raises(openai.BadRequestError) as caught:
                    await sdk.responses.create(
                        model="openclaw", input=[*repeated, {"role": "user", "content": "?"}],
                        tools=[CLOCK], previous_response_id=answered.id,
                    )  # fmt: skip
                assert caught.value.body["message"] == (
                    f"Duplicate item found with id {repeated[0]['id']}. Remove duplicate items"
                    " from your input and try again."
                )
            assert len(upstream.requests) == 3
            mine: Any = [dumped[-1], {"role": "user", "content": "?"}]
            last = await sdk.responses.create(
                model="openclaw", input=mine, previous_response_id=answered.id
            )
        assert last.status == "completed"


class TestItemReference:
    """`item_reference` input items send a stored item again by its id, as at OpenAI:
    the item as `input_items` lists it, wherever the caller could continue its response."""

    async def test_a_referenced_item_is_given_to_the_model(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(
            Raw((openai_sse({"content": "A"}, {"tool_calls": [CLOCK_CALL]}),)),
            Stream(("B",)), Stream(("C",)),
        )  # fmt: skip
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            asked = await sdk.responses.create(model="openclaw", input="time?", tools=[CLOCK])
            result: Any = {"type": "function_call_output", "call_id": "call_t", "output": "1"}
            answered = await sdk.responses.create(
                model="openclaw", input=[result], tools=[CLOCK], previous_response_id=asked.id
            )
            listed = (await sdk.responses.input_items.list(answered.id, order="asc")).data
            refs: Any = [{"type": "item_reference", "id": item.id} for item in listed]
            again = await sdk.responses.create(
                model="openclaw", tools=[CLOCK],
                input=[*refs, {"type": "item_reference", "id": answered.output[0].id},
                       {"role": "user", "content": "and?"}],
            )  # fmt: skip
        assert again.status == "completed"
        assert upstream.last.body["messages"] == [
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": "A", "tool_calls": [
                {"id": "call_t", "type": "function",
                 "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_t", "content": "1"},
            {"role": "assistant", "content": "B"},
            {"role": "user", "content": "and?"},
        ]  # fmt: skip

    async def test_a_reference_without_its_type_is_one(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """OpenAI's item reference has an optional `type`: an item of an `id` alone (or a
        null `type`) is one."""
        upstream.script(Stream(("A",)), Stream(("B",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            one = await sdk.responses.create(model="openclaw", input="one")
            item_id = one.output[0].id
            refs: Any = [{"id": item_id}, {"id": item_id, "type": None}]
            await sdk.responses.create(
                model="openclaw", input=[*refs, {"role": "user", "content": "?"}]
            )
        assert upstream.last.body["messages"] == [
            {"role": "assistant", "content": "A"}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": "?"},
        ]  # fmt: skip

    async def test_an_unknown_id_is_refused(self, sdk: AsyncOpenAI) -> None:
        one = await sdk.responses.create(model="openclaw", input="one")
        for unknown in ("msg_" + "0" * 32, "nope", one.id, one.output[0].id + "_7"):
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(
                    model="openclaw", input=[{"type": "item_reference", "id": unknown}]
                )
            assert caught.value.body == {
                "message": f"Item with id '{unknown}' not found.",
                "type": "invalid_request_error",
                "param": "input",
                "code": None,
            }


class TestStoredResponses:
    async def test_retrieve_returns_the_response_as_created(self, sdk: AsyncOpenAI) -> None:
        created = await sdk.responses.create(model="openclaw", input="keep me", metadata={"a": "b"})
        fetched = await sdk.responses.retrieve(created.id)
        assert fetched.model_dump() == created.model_dump()

    async def test_delete_removes_it(self, sdk: AsyncOpenAI) -> None:
        created = await sdk.responses.create(model="openclaw", input="drop me")
        await sdk.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.responses.retrieve(created.id)
        assert caught.value.body == {
            "message": f"Response with id '{created.id}' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": "response_not_found",
        }

    async def test_store_false_is_not_retrievable(self, sdk: AsyncOpenAI) -> None:
        created = await sdk.responses.create(model="openclaw", input="x", store=False)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve(created.id)


class TestFieldsNotServed:
    """Fields of the Responses API that the gateway has no equivalent of: those whose silent
    neglect would mislead are refused, naming the field; the others are answered as asked."""

    @pytest.mark.parametrize("conversation", ["conv_123", {"id": "conv_123"}])
    async def test_a_conversation_is_refused_rather_than_its_context_lost(
        self, gateway: MakeClient, upstream: FakeOpenAI, conversation: Any
    ) -> None:
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(
                    model="openclaw", input="and then?", conversation=conversation
                )
        assert caught.value.body == {
            "message": "conversation is not supported: continue with previous_response_id.",
            "type": "invalid_request_error",
            "param": "conversation",
            "code": "unsupported_parameter",
        }
        assert upstream.requests == []

    @pytest.mark.parametrize("input_", ["and then?", None])
    async def test_a_reusable_prompt_is_refused_rather_than_its_instructions_lost(
        self, gateway: MakeClient, upstream: FakeOpenAI, input_: str | None
    ) -> None:
        """OpenAI's prompt templates (`prompt: {id, variables}`) live at OpenAI: the model
        would answer without the template's instructions, or with no input at all."""
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        prompt = {"id": "pmpt_123", "version": "2", "variables": {"city": "Paris"}}
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(
                    model="openclaw", prompt=prompt, **({"input": input_} if input_ else {})
                )
        assert caught.value.body == {
            "message": "prompt is not supported: send its text as instructions and input.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "unsupported_parameter",
        }
        assert upstream.requests == []

    async def test_background_is_answered_at_once_and_says_so(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A client that polls a background response until it is done finds it done."""
        upstream.script(Stream(("Done.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(model="openclaw", input="hi", background=True)
            fetched = await sdk.responses.retrieve(response.id)
        assert (response.status, response.background) == ("completed", False)
        assert response.output_text == "Done."
        assert fetched.model_dump() == response.model_dump()

    async def test_fields_of_no_use_here_are_answered_and_not_sent_on(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("Done.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(
                model="openclaw",
                input="hi",
                include=["reasoning.encrypted_content"],
                service_tier="flex",
                prompt_cache_key="cache",
                safety_identifier="someone",
                top_logprobs=2,
                max_tool_calls=3,
            )
        assert response.output_text == "Done."
        assert set(upstream.last.body) == {"model", "messages", "stream", "stream_options"}

    async def test_the_text_verbosity_goes_on_and_is_echoed(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        # Chat completions' `verbosity` (GPT-5), as OpenAI's Responses API takes it.
        upstream.script(Stream(("Done.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(
                model="openclaw", input="hi", text={"verbosity": "high"}
            )
            fetched = await sdk.responses.retrieve(response.id)
        assert upstream.last.body["verbosity"] == "high"
        assert response.text is not None and response.text.verbosity == "high"
        assert fetched.model_dump() == response.model_dump()

    async def test_a_wrong_text_verbosity_is_refused_before_the_upstream(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as raised:
                await sdk.responses.create(
                    model="openclaw",
                    input="hi",
                    text={"verbosity": "loud"},  # type: ignore[typeddict-item]
                )
        assert raised.value.body == {
            "message": "Invalid text.verbosity: text.verbosity must be low, medium, or high",
            "type": "invalid_request_error",
            "param": "text",
            "code": None,
        }
        assert upstream.requests == []

    @pytest.mark.parametrize("truncation", ["auto", "disabled"])
    async def test_truncation_is_echoed_as_asked(
        self, gateway: MakeClient, upstream: FakeOpenAI, truncation: Any
    ) -> None:
        upstream.script(Stream(("Done.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(
                model="openclaw", input="hi", truncation=truncation
            )
        assert response.truncation == truncation

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("background", "yes", "background: Expected boolean, received string"),
            ("truncation", "middle", "`truncation` must be auto or disabled."),
            ("truncation", 1, "`truncation` must be auto or disabled."),
        ],
    )
    async def test_bad_values_are_refused(
        self, gateway: MakeClient, upstream: FakeOpenAI, field: str, value: Any, message: str
    ) -> None:
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(model="openclaw", input="hi", extra_body={field: value})
        assert caught.value.body == {
            "message": message,
            "type": "invalid_request_error",
            "param": field,
            "code": None,
        }
        assert upstream.requests == []


class TestARunningResponse:
    """A response whose run has not ended: the stream's client knows its id from
    `response.created` on, and may look it up or name it meanwhile."""

    async def test_get_says_in_progress_and_continuing_it_is_a_conflict(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("One", " two", " three."), delay=0.4))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            stream = await sdk.responses.create(model="openclaw", input="count", stream=True)
            created = await anext(aiter(stream))
            assert created.type == "response.created"
            response_id = created.response.id
            running = await sdk.responses.retrieve(response_id)
            assert (running.id, running.status, running.output) == (response_id, "in_progress", [])
            with pytest.raises(openai.ConflictError) as caught:
                await sdk.responses.create(
                    model="openclaw", input="and?", previous_response_id=response_id
                )
            assert caught.value.body == {
                "message": f"Response with id '{response_id}' is still in progress.",
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "response_in_progress",
            }
            with pytest.raises(openai.ConflictError):
                await sdk.responses.delete(response_id)
            with pytest.raises(openai.ConflictError):  # its turn is not stored yet
                await sdk.responses.input_items.list(response_id)
            rest = [event.type async for event in stream]
            assert rest[-1] == "response.completed"
            done = await sdk.responses.retrieve(response_id)
        assert (done.status, done.output_text) == ("completed", "One two three.")
        assert len(upstream.requests) == 1

    async def test_referring_to_an_item_of_it_is_a_conflict_until_it_ends(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Its items are not stored yet: an `item_reference` to one is the 409 of a
        `previous_response_id` to it, not an item not found; once stored, it is found."""
        upstream.script(Stream(("One", " two."), stall_after=1))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            stream = await sdk.responses.create(model="openclaw", input="count", stream=True)
            response_id, item_id = "", ""
            async for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                if event.type == "response.output_item.added":
                    item_id = str(event.item.id)
                if event.type == "response.output_text.delta":
                    break
            asked: Any = [
                {"type": "item_reference", "id": item_id},
                {"role": "user", "content": "and?"},
            ]
            with pytest.raises(openai.ConflictError) as caught:
                await sdk.responses.create(model="openclaw", input=asked)
            assert caught.value.body == {
                "message": f"Response with id '{response_id}' is still in progress.",
                "type": "invalid_request_error",
                "param": "input",
                "code": "response_in_progress",
            }
            await stream.close()  # the run is aborted, what it said stored
            await upstream.last.wait_gone(within=1.0)
            while client.app[openresponses.RUNNING]:
                await asyncio.sleep(0.01)
            found = await sdk.responses.create(model="openclaw", input=asked)
        assert found.status == "completed"
        assert upstream.last.body["messages"][0] == {"role": "assistant", "content": "One"}

    async def test_one_not_stored_stays_unknown(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("One", " two."), delay=0.4))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            stream = await sdk.responses.create(
                model="openclaw", input="count", stream=True, store=False
            )
            created = await anext(aiter(stream))
            assert created.type == "response.created"
            with pytest.raises(openai.NotFoundError):
                await sdk.responses.retrieve(created.response.id)
            [_ async for _ in stream]


class TestCancel:
    """`POST /v1/responses/{id}/cancel` cancels a background response at OpenAI; this
    gateway answers every response at once (`background: false`), so none can be."""

    async def test_cancelling_a_response_is_a_clear_refusal(self, sdk: AsyncOpenAI) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi", background=True)
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.responses.cancel(created.id)
        assert caught.value.body == {
            "message": f"Response with id '{created.id}' cannot be cancelled: only background"
            " responses can be, and this gateway answers every response at once"
            " (background: false).",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        fetched = await sdk.responses.retrieve(created.id)
        assert fetched.model_dump() == created.model_dump()

    async def test_cancelling_an_unknown_response_is_response_not_found(
        self, sdk: AsyncOpenAI
    ) -> None:
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.responses.cancel("resp_nope")
        assert caught.value.body == {
            "message": "Response with id 'resp_nope' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": "response_not_found",
        }

    async def test_a_running_response_is_refused_and_runs_on(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Its own client stops it by leaving; another's cancel does not."""
        upstream.script(Stream(("One", " two."), delay=0.3))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            stream = await sdk.responses.create(model="openclaw", input="count", stream=True)
            created = await anext(aiter(stream))
            assert created.type == "response.created"
            with pytest.raises(openai.BadRequestError):
                await sdk.responses.cancel(created.response.id)
            rest = [event.type async for event in stream]
        assert rest[-1] == "response.completed"


class TestRetrieveAsAStream:
    """OpenAI streams a `background` response from `GET ...?stream=true` (from the event
    after `starting_after`); every response here is answered at once, so none is streamed
    again: a clear 400 rather than a JSON body the SDK reads as a broken stream."""

    async def test_a_stored_response_is_a_clear_refusal(self, sdk: AsyncOpenAI) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi")
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.responses.retrieve(created.id, stream=True, starting_after=2)
        assert caught.value.body == {
            "message": f"Response with id '{created.id}' cannot be streamed: only background"
            " responses can be, and this gateway answers every response at once"
            " (background: false). Retrieve it without `stream`.",
            "type": "invalid_request_error",
            "param": "stream",
            "code": None,
        }

    async def test_an_unknown_response_is_response_not_found(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve("resp_nope", stream=True)

    async def test_stream_false_and_the_other_parameters_retrieve_it(
        self, sdk: AsyncOpenAI
    ) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi")
        fetched = await sdk.responses.retrieve(
            created.id, stream=False, include=["message.output_text.logprobs"],
            include_obfuscation=False,
        )  # fmt: skip
        assert fetched.model_dump() == created.model_dump()

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("stream=yes", "`stream` must be true or false."),
            ("stream=", "`stream` must be true or false."),
            ("starting_after=-1", "`starting_after` must be a non-negative integer."),
            ("starting_after=x", "`starting_after` must be a non-negative integer."),
            ("starting_after=" + "9" * 40, "`starting_after` must be a non-negative integer."),
        ],
    )
    async def test_wrong_query_values_are_refused(
        self, sdk: AsyncOpenAI, query: str, message: str
    ) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi")
        param = query.partition("=")[0]
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.get(f"/responses/{created.id}?{query}", cast_to=object)
        assert caught.value.body == {
            "message": message, "type": "invalid_request_error", "param": param, "code": None,
        }  # fmt: skip


class TestInclude:
    """`include` on a GET and an input item list: OpenAI's documented values are accepted
    (they change nothing here), and another is a 400 naming it, as at OpenAI, so a typo is
    not taken for a field the answer lacks."""

    async def test_every_documented_value_is_accepted(self, sdk: AsyncOpenAI) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi")
        every = list(INCLUDABLE)
        fetched = await sdk.responses.retrieve(created.id, include=every)
        assert fetched.model_dump() == created.model_dump()
        page = await sdk.responses.input_items.list(created.id, include=every)
        assert [item.type for item in page.data] == ["message"]
        for name in ("include", "include[]"):  # repeated, without the SDK's brackets too
            query = "&".join(f"{name}={value}" for value in every)
            for path in (f"/responses/{created.id}", f"/responses/{created.id}/input_items"):
                assert await sdk.get(f"{path}?{query}", cast_to=object)

    @pytest.mark.parametrize(
        "value", ["message.output_text.logprob", "", "MESSAGE.OUTPUT_TEXT.LOGPROBS", "x" * 300]
    )
    async def test_another_value_is_refused_naming_it(self, sdk: AsyncOpenAI, value: str) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi")
        shown = value if len(value) <= 64 else value[:64] + "…"
        expected = {
            "message": f"Invalid value for `include`: '{shown}'. Supported values are: "
            + ", ".join(f"'{v}'" for v in INCLUDABLE) + ".",
            "type": "invalid_request_error",
            "param": "include",
            "code": None,
        }  # fmt: skip
        include: Any = ["reasoning.encrypted_content", value]
        for response_id in (created.id, "resp_nope"):  # the query is read before the lookup
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.retrieve(response_id, include=include)
            assert caught.value.body == expected
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.input_items.list(response_id, include=include)
            assert caught.value.body == expected


class TestIncludeOfACreate:
    """`include` of a request: OpenAI's documented values are accepted (they change nothing
    here); another value, or one not a list of strings, is a 400 naming it, as at OpenAI."""

    async def test_every_documented_value_is_accepted(self, sdk: AsyncOpenAI) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi", include=list(INCLUDABLE))
        assert created.status == "completed"

    @pytest.mark.parametrize(
        ("include", "message"),
        [
            (["reasoning.encrypted_content", "reasoning.encrypted"],
             "Invalid value for `include`: 'reasoning.encrypted'. Supported values are: "
             + ", ".join(f"'{v}'" for v in INCLUDABLE) + "."),
            ("reasoning.encrypted_content", "include: Expected array, received string"),
            ([1], "include[0]: Expected string, received number"),
        ],
    )  # fmt: skip
    async def test_another_value_is_refused_naming_it(
        self, gateway: MakeClient, upstream: FakeOpenAI, include: Any, message: str
    ) -> None:
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(model="openclaw", input="hi", include=include)
        assert caught.value.body == {
            "message": message, "type": "invalid_request_error", "param": "include",
            "code": None,
        }  # fmt: skip
        assert upstream.requests == []


class TestContinuingAnOlderResponse:
    """`previous_response_id` naming a response that later turns followed: the context is
    the chain up to that response, as at OpenAI, not the session as it is now."""

    async def test_the_upstream_is_sent_exactly_the_chain(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(*(Stream((f"reply {n}",)) for n in range(1, 7)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))

        def sent() -> list[tuple[str, str]]:
            return [(m["role"], m["content"]) for m in upstream.last.body["messages"]]

        def chat(*texts: str) -> list[tuple[str, str]]:
            return [("user" if n % 2 == 0 else "assistant", t) for n, t in enumerate(texts)]

        async with await sdk_for(client) as sdk:
            one = await sdk.responses.create(model="openclaw", input="one")
            two = await sdk.responses.create(
                model="openclaw", input="two", previous_response_id=one.id
            )
            three = await sdk.responses.create(
                model="openclaw", input="three", previous_response_id=two.id
            )
            fork = await sdk.responses.create(
                model="openclaw", input="fork", previous_response_id=one.id
            )
            assert fork.output_text == "reply 4"
            assert sent() == chat("one", "reply 1", "fork")
            await sdk.responses.create(
                model="openclaw", input="on the fork", previous_response_id=fork.id
            )
            assert sent() == chat("one", "reply 1", "fork", "reply 4", "on the fork")
            await sdk.responses.create(
                model="openclaw", input="after three", previous_response_id=three.id
            )
            assert sent() == chat(
                "one", "reply 1", "two", "reply 2", "three", "reply 3", "after three"
            )
            # Every response stays where it was answered, and can be fetched.
            for response in (one, two, three, fork):
                fetched = await sdk.responses.retrieve(response.id)
                assert fetched.output_text == response.output_text

    async def test_two_continuations_of_one_response_at_once_each_get_its_chain(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """The session runs them one after the other; the second is not given the first."""
        upstream.script(Stream(("hi",)), Stream(("A",), delay=0.2), Stream(("B",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            first = await sdk.responses.create(model="openclaw", input="hello")
            await asyncio.gather(
                *(
                    sdk.responses.create(
                        model="openclaw", input=question, previous_response_id=first.id
                    )
                    for question in ("left", "right")
                )
            )
        sent = sorted(
            [(m["role"], m["content"]) for m in request.body["messages"]]
            for request in upstream.requests[1:]
        )
        chain = [("user", "hello"), ("assistant", "hi")]
        assert sent == [[*chain, ("user", "left")], [*chain, ("user", "right")]]

    async def test_a_tool_loop_continued_from_before_it_is_not_given_it(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("call_w", "get_weather", ('{"city":"Oslo"}',))
        upstream.script(Stream(("hi",)), Stream((), tool_calls=(call,)), Stream(("cold",)),
                        Stream(("again",)))  # fmt: skip
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            first = await sdk.responses.create(model="openclaw", input="hello")
            asked = await sdk.responses.create(
                model="openclaw", input="weather?", tools=[WEATHER], previous_response_id=first.id
            )
            await sdk.responses.create(
                model="openclaw",
                input=[{"type": "function_call_output", "call_id": "call_w", "output": "-5C"}],
                tools=[WEATHER],
                previous_response_id=asked.id,
            )
            await sdk.responses.create(
                model="openclaw", input="something else", previous_response_id=first.id
            )
        assert upstream.last.body["messages"] == [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "something else"},
        ]


class TestInputItems:
    """`GET /v1/responses/{id}/input_items`: the conversation a response answered, as
    OpenAI lists it (its chain of earlier responses included), newest first by default."""

    async def test_the_chain_is_listed_in_either_order(self, sdk: AsyncOpenAI) -> None:
        one = await sdk.responses.create(model="openclaw", input="one")
        two = await sdk.responses.create(model="openclaw", input="two", previous_response_id=one.id)
        page = await sdk.responses.input_items.list(two.id, order="asc")
        assert page.model_dump()["object"] == "list"
        assert [(i.type, i.role, i.content[0].text) for i in page.data] == [  # type: ignore[union-attr]
            ("message", "user", "one"),
            ("message", "assistant", "[turn 1] one"),
            ("message", "user", "two"),
        ]
        assert [i.content[0].type for i in page.data] == [  # type: ignore[union-attr]
            "input_text", "output_text", "input_text"
        ]  # fmt: skip
        assert page.has_more is False
        newest_first = await sdk.responses.input_items.list(two.id)
        assert [i.id for i in newest_first.data] == [i.id for i in reversed(page.data)]
        body = newest_first.model_dump()
        assert (body["first_id"], body["last_id"]) == (page.data[-1].id, page.data[0].id)
        first = await sdk.responses.input_items.list(one.id)
        assert [i.id for i in first.data] == [page.data[0].id]

    async def test_an_output_item_is_listed_later_under_its_id(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """At OpenAI an item keeps its id: a response's output items are listed under the
        same ids in a later response's input items (clients match items by id), streamed
        or not; so are the stored response's."""
        calls = [{**CLOCK_CALL, "id": "call_a"}, {**CLOCK_CALL, "index": 1, "id": "call_b"}]
        chunks = openai_sse({"reasoning_content": "Hmm"}, {"content": "A"}, {"tool_calls": calls})
        upstream.script(Raw((chunks,)), Raw((chunks,)), Stream(("done",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            async with sdk.responses.stream(model="openclaw", input="think", tools=[CLOCK]) as s:
                added = [e.item.id async for e in s if e.type == "response.output_item.added"]
                streamed = await s.get_final_response()
            created = await sdk.responses.create(
                model="openclaw", input="again", tools=[CLOCK], previous_response_id=streamed.id
            )
            results: Any = [
                {"type": "function_call_output", "call_id": call_id, "output": "noon"}
                for call_id in ("call_a", "call_b")
            ]
            last = await sdk.responses.create(
                model="openclaw", input=results, tools=[CLOCK], previous_response_id=created.id
            )
            listed = (await sdk.responses.input_items.list(last.id, limit=100)).data
            stored = [await sdk.responses.retrieve(r.id) for r in (streamed, created)]
        assert added == [item.id for item in streamed.output]
        for got, expected in zip(stored, (streamed, created), strict=True):
            assert [item.id for item in got.output] == [item.id for item in expected.output]
        listed_ids = {item.id: item.type for item in listed}
        for response in (streamed, created):
            kept = response.output
            assert [item.type for item in kept] == [
                "reasoning", "message", "function_call", "function_call"
            ]  # fmt: skip
            assert [listed_ids.get(item.id) for item in kept] == [item.type for item in kept]
        ids = [item.id for response in (streamed, created) for item in response.output]
        assert len(set(ids)) == len(ids)

    async def test_a_reply_in_stretches_is_listed_item_by_item_under_its_ids(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A reply whose text comes in stretches, reasoning and a call between, is listed
        later as it was answered: each output item under its id, in its order, with its
        text; a page may begin after any of them."""
        chunks = openai_sse(
            {"content": "A"}, {"reasoning_content": "Hmm"}, {"content": "B"},
            {"tool_calls": [CLOCK_CALL]}, {"content": "C"},
        )  # fmt: skip
        upstream.script(Raw((chunks,)), Stream(("done",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            async with sdk.responses.stream(model="openclaw", input="think", tools=[CLOCK]) as s:
                added = [e.item.id async for e in s if e.type == "response.output_item.added"]
                asked = await s.get_final_response()
            result: Any = [{"type": "function_call_output", "call_id": "call_t", "output": "1"}]
            last = await sdk.responses.create(
                model="openclaw", input=result, tools=[CLOCK], previous_response_id=asked.id
            )
            listed = (await sdk.responses.input_items.list(last.id, order="asc")).data
            afters = [
                (await sdk.responses.input_items.list(last.id, order="asc", after=item.id)).data
                for item in asked.output
            ]
        assert added == [item.id for item in asked.output]

        def shown(item: BaseModel) -> tuple[Any, ...]:
            data = item.model_dump()
            texts = [part["text"] for part in data.get("content") or ()]
            return data["id"], data["type"], texts, data.get("call_id"), data.get("arguments")

        output = [shown(item) for item in asked.output]
        assert [item[1:3] for item in output] == [
            ("message", ["A"]), ("reasoning", ["Hmm"]), ("message", ["B"]),
            ("function_call", []), ("message", ["C"]),
        ]  # fmt: skip
        assert [shown(item) for item in listed][1:-1] == output
        for number, page in enumerate(afters):
            assert [item.id for item in page] == [item.id for item in listed[number + 2 :]]

    async def test_text_around_a_separator_alone_is_one_item_streamed_or_not(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Reasoning that resumes with its blocks' separator alone opens no item in a
        stream: the text around it is one message there, and so in the final object, the
        non-streamed answer and a later response's input items."""
        chunks = openai_sse(
            {"reasoning_content": "R"}, {"content": "A"}, {"reasoning_content": "\n\n"},
            {"content": "B"},
        )  # fmt: skip
        upstream.script(Raw((chunks,)), Raw((chunks,)), Stream(("done",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            async with sdk.responses.stream(model="openclaw", input="think") as s:
                added = [e.item.id async for e in s if e.type == "response.output_item.added"]
                streamed = await s.get_final_response()
            created = await sdk.responses.create(model="openclaw", input="think")
            later = await sdk.responses.create(
                model="openclaw", input="next", previous_response_id=streamed.id
            )
            listed = (await sdk.responses.input_items.list(later.id, order="asc")).data

        def shown(item: BaseModel) -> tuple[Any, ...]:
            data = item.model_dump()
            return data["type"], [part["text"] for part in data.get("content") or ()]

        assert added == [item.id for item in streamed.output]
        expected = [("reasoning", ["R"]), ("message", ["AB"])]
        assert [shown(item) for item in streamed.output] == expected
        assert [shown(item) for item in created.output] == expected
        assert [item.id for item in listed[1:-1]] == added
        assert [shown(item) for item in listed[1:-1]] == expected

    async def test_an_item_cut_by_max_output_tokens_is_listed_incomplete(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """An item keeps its status too: one the answer gave as incomplete is listed so."""
        upstream.script(
            Stream(("Cut",), reasoning=("R",), finish="length"), Stream(("Whole",))
        )  # fmt: skip
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            cut = await sdk.responses.create(model="openclaw", input="a", max_output_tokens=16)
            later = await sdk.responses.create(
                model="openclaw", input="b", previous_response_id=cut.id
            )
            listed = (await sdk.responses.input_items.list(later.id, order="asc")).data
        assert cut.status == "incomplete"
        given = {item.id: getattr(item, "status", None) for item in cut.output}
        assert [item.type for item in cut.output] == ["reasoning", "message"]
        assert {item.id: getattr(item, "status", None) for item in listed[1:-1]} == given
        assert [getattr(item, "status", None) for item in listed] == [
            "completed", None, "incomplete", "completed"
        ]  # fmt: skip

    async def test_pages_follow_after_and_limit(self, sdk: AsyncOpenAI) -> None:
        one = await sdk.responses.create(model="openclaw", input="one")
        two = await sdk.responses.create(model="openclaw", input="two", previous_response_id=one.id)
        whole = await sdk.responses.input_items.list(two.id)
        page = await sdk.responses.input_items.list(two.id, limit=2)
        assert [i.id for i in page.data] == [i.id for i in whole.data[:2]]
        assert page.has_more is True
        rest = await sdk.responses.input_items.list(two.id, limit=2, after=page.data[-1].id)
        assert [i.id for i in rest.data] == [whole.data[2].id]
        assert rest.has_more is False
        paged = [i.id async for i in sdk.responses.input_items.list(two.id, limit=1)]
        assert paged == [i.id for i in whole.data]

    async def test_calls_and_their_results_are_items(self, sdk: AsyncOpenAI) -> None:
        asked = await sdk.responses.create(
            model="openclaw", input="call get_weather {}", tools=[WEATHER]
        )
        [call] = [item for item in asked.output if item.type == "function_call"]
        answered = await sdk.responses.create(
            model="openclaw",
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "-5C"}],
            tools=[WEATHER],
            previous_response_id=asked.id,
        )
        page = await sdk.responses.input_items.list(answered.id, order="asc")
        kinds = [item.type for item in page.data]
        assert kinds == ["message", "function_call", "function_call_output"]
        _, made, result = page.data
        assert (made.call_id, made.name, made.arguments) == (  # type: ignore[union-attr]
            call.call_id, call.name, call.arguments
        )  # fmt: skip
        assert (result.call_id, result.output) == (call.call_id, "-5C")  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("text", "images", "listed"),
        [
            ([], 1, [IMAGE_PART]),
            ([{"type": "input_text", "text": "-5C"}], 2,
             [{"type": "input_text", "text": "-5C"}, IMAGE_PART, IMAGE_PART]),
        ],
    )  # fmt: skip
    async def test_a_result_with_images_is_listed_in_the_content_list_form(
        self, sdk: AsyncOpenAI, text: list[Any], images: int, listed: list[Any]
    ) -> None:
        """As OpenAI lists an output sent as parts: `input_text` and `input_image` parts,
        the images without their data, which is not stored (not the placeholder a later
        turn gives the model, nor nothing at all)."""
        asked = await sdk.responses.create(
            model="openclaw", input="call get_weather {}", tools=[WEATHER]
        )
        [call] = [item for item in asked.output if item.type == "function_call"]
        png = "data:image/png;base64,iVBORw0KGgo="
        output: Any = [
            *text,
            *[{"type": "input_image", "image_url": png, "detail": "auto"}] * images,
        ]
        answered = await sdk.responses.create(
            model="openclaw",
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": output}],
            tools=[WEATHER],
            previous_response_id=asked.id,
        )
        later = await sdk.responses.create(
            model="openclaw", input="thanks", previous_response_id=answered.id
        )
        page = await sdk.responses.input_items.list(later.id, order="asc")
        [result] = [item for item in page.data if item.type == "function_call_output"]
        assert result.model_dump(exclude_none=True)["output"] == listed

    async def test_a_continued_older_response_lists_its_own_chain(self, sdk: AsyncOpenAI) -> None:
        one = await sdk.responses.create(model="openclaw", input="one")
        await sdk.responses.create(model="openclaw", input="two", previous_response_id=one.id)
        fork = await sdk.responses.create(
            model="openclaw", input="fork", previous_response_id=one.id
        )
        page = await sdk.responses.input_items.list(fork.id, order="asc")
        texts = [i.content[0].text for i in page.data]  # type: ignore[union-attr]
        assert texts == ["one", "[turn 1] one", "fork"]

    async def test_an_image_is_an_input_image_part(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """As OpenAI lists it, an `input_image` part where the message had it (after its
        text: where among the parts is not kept); its data is not stored, so it is listed
        without an `image_url`, and `auto` detail."""
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        png = "data:image/png;base64,iVBORw0KGgo="
        async with await sdk_for(client) as sdk:
            image_part: Any = {"type": "input_image", "image_url": png, "detail": "auto"}
            text_part: Any = {"type": "input_text", "text": "What is it?"}
            one = await sdk.responses.create(
                model="openclaw", input=[{"role": "user", "content": [text_part, image_part]}]
            )
            bare = await sdk.responses.create(
                model="openclaw",
                input=[{"role": "user", "content": [image_part]}],
                previous_response_id=one.id,
            )
            page = await sdk.responses.input_items.list(bare.id, order="asc")
        image = {"type": "input_image", "detail": "auto"}
        assert [item.model_dump(exclude={"id"}, exclude_none=True) for item in page.data] == [
            {"type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": "What is it?"}, image]},
            {"type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Hello world", "annotations": []}]},
            {"type": "message", "role": "user", "status": "completed", "content": [image]},
        ]  # fmt: skip

    async def test_a_failed_turn_asked_again_is_listed_once(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """As the model was given it: a turn that got no reply and was asked again is its
        question once (the session keeps both tries)."""
        upstream.script(Stream(("first",)), Status(500), Stream(("second",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        headers = {"x-openclaw-session-key": "agent:main:retried"}
        async with await sdk_for(client) as sdk:
            await sdk.responses.create(model="openclaw", input="one", extra_headers=headers)
            with pytest.raises(openai.InternalServerError):
                await sdk.responses.create(model="openclaw", input="two", extra_headers=headers)
            again = await sdk.responses.create(model="openclaw", input="two", extra_headers=headers)
            assert upstream.last.body["messages"][1:] == [
                {"role": "assistant", "content": "first"}, {"role": "user", "content": "two"}
            ]  # fmt: skip
            page = await sdk.responses.input_items.list(again.id, order="asc")
        texts = [(i.role, i.content[0].text) for i in page.data]  # type: ignore[union-attr]
        assert texts == [("user", "one"), ("assistant", "first"), ("user", "two")]

    async def test_an_unknown_response_is_response_not_found(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.responses.input_items.list("resp_nope")
        assert caught.value.body == {
            "message": "Response with id 'resp_nope' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": "response_not_found",
        }

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("limit=0", "`limit` must be an integer from 1 to 100."),
            ("limit=101", "`limit` must be an integer from 1 to 100."),
            ("limit=x", "`limit` must be an integer from 1 to 100."),
            ("order=up", "`order` must be asc or desc."),
            ("after=msg_nope", "No input item with id 'msg_nope' in this response."),
            ("after=" + "x" * 300, "No input item with id '" + "x" * 256 + "' in this response."),
        ],
    )
    async def test_wrong_query_values_are_refused(
        self, sdk: AsyncOpenAI, query: str, message: str
    ) -> None:
        created = await sdk.responses.create(model="openclaw", input="hi")
        param = query.partition("=")[0]
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.get(f"/responses/{created.id}/input_items?{query}", cast_to=object)
        assert caught.value.body == {
            "message": message, "type": "invalid_request_error", "param": param, "code": None,
        }  # fmt: skip


class TestATrailingAssistantItem:
    """As on chat completions (a trailing assistant message answers nothing, and is
    dropped), assistant items after the last user message or call output are not given to
    the model, not stored, not listed: no reply is continued from a client's words."""

    async def test_it_is_dropped_as_on_chat_completions(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("answer",)), Stream(("again",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(
                model="openclaw",
                input=[
                    {"role": "user", "content": "one"},
                    {"role": "assistant", "content": "The answer begins"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                ],
            )
            assert upstream.last.body["messages"] == [{"role": "user", "content": "one"}]
            items = await sdk.responses.input_items.list(response.id)
            assert [i.type for i in items.data] == ["message"]
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(
                    model="openclaw",
                    input=[{"role": "assistant", "content": "only mine"}],
                    previous_response_id=response.id,
                )
        assert caught.value.body["message"] == "Missing user message in `input`."


class TestReasoning:
    """`reasoning.effort` goes on as chat completions' `reasoning_effort` does: as it is to an
    OpenAI-compatible upstream, as extended thinking to Anthropic; the response echoes it."""

    async def test_an_openai_compatible_upstream_gets_the_effort(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("Done.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(
                model="openclaw", input="Think.", reasoning={"effort": "high", "summary": "auto"}
            )
        assert upstream.last.body["reasoning_effort"] == "high"
        assert response.reasoning is not None
        assert (response.reasoning.effort, response.reasoning.summary) == ("high", "auto")

    async def test_anthropic_gets_extended_thinking(self, gateway: MakeClient) -> None:
        async with FakeAnthropic() as fake:
            client = await gateway(merged(RESPONSES_ON, anthropic_agent(fake)))
            async with await sdk_for(client) as sdk:
                await sdk.responses.create(
                    model="openclaw", input="Think.", reasoning={"effort": "medium"}
                )
            body = fake.last.body
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
        assert "reasoning_effort" not in body

    async def test_thinking_that_resumes_after_a_call_is_an_item_without_the_blank_line(
        self, gateway: MakeClient
    ) -> None:
        """Anthropic's thinking blocks are one reasoning text, set apart by a blank line;
        a block after a call is a reasoning item of its own, which begins with its text,
        streamed or not, and stored."""

        def event(name: str, **fields: Any) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **fields})}\n\n".encode()

        def thinking(index: int, *pieces: str) -> bytes:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out = event("content_block_start", index=index, content_block=block)
            for piece in pieces:
                delta = {"type": "thinking_delta", "thinking": piece}
                out += event("content_block_delta", index=index, delta=delta)
            signed = {"type": "signature_delta", "signature": f"sig{index}"}
            return (
                out
                + event("content_block_delta", index=index, delta=signed)
                + event("content_block_stop", index=index)
            )

        use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
        arguments = {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                   "usage": {"input_tokens": 3, "output_tokens": 1}}  # fmt: skip
        answer = (
            event("message_start", message=message)
            + thinking(0, "Let me ", "look.")
            + event("content_block_start", index=1, content_block=use)
            + event("content_block_delta", index=1, delta=arguments)
            + event("content_block_stop", index=1)
            + thinking(2, "Now ", "I know.")
            + event("message_delta", delta={"stop_reason": "tool_use"},
                    usage={"output_tokens": 9})
            + event("message_stop")
        )  # fmt: skip
        async with FakeAnthropic() as fake:
            fake.script(Raw((answer,)), Raw((answer,)))
            client = await gateway(merged(RESPONSES_ON, anthropic_agent(fake)))
            async with await sdk_for(client) as sdk:
                async with sdk.responses.stream(
                    model="openclaw", input="Weather?", tools=[WEATHER]
                ) as s:
                    deltas: dict[int, str] = {}
                    async for e in s:
                        if e.type == "response.reasoning_text.delta":
                            deltas[e.output_index] = deltas.get(e.output_index, "") + e.delta
                    streamed = await s.get_final_response()
                created = await sdk.responses.create(
                    model="openclaw", input="Weather?", tools=[WEATHER]
                )
                stored = await sdk.responses.retrieve(streamed.id)

        def shape(response: Any) -> list[tuple[str, str]]:
            return [
                (item.type, "".join(part.text for part in getattr(item, "content", None) or ()))
                for item in response.output
            ]

        assert shape(streamed) == [
            ("reasoning", "Let me look."), ("function_call", ""), ("reasoning", "Now I know.")
        ]  # fmt: skip
        assert deltas == {0: "Let me look.", 2: "Now I know."}
        assert shape(created) == shape(stored) == shape(streamed)

    async def test_without_an_effort_nothing_is_asked(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("Done.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(
                model="openclaw", input="hi", reasoning={"summary": "concise"}
            )
        assert "reasoning_effort" not in upstream.last.body
        assert response.reasoning is not None
        assert (response.reasoning.effort, response.reasoning.summary) == (None, "concise")

    @pytest.mark.parametrize(
        ("reasoning", "message"),
        [
            ("high", "reasoning: Expected object, received string"),
            ({"effort": 1}, "reasoning.effort: Expected string, received number"),
            ({"effort": "maximum"}, "Invalid reasoning.effort: reasoning.effort must be none,"
                                    " minimal, low, medium, high, or xhigh"),
            ({"summary": True}, "reasoning.summary: Expected string, received boolean"),
            ({"summary": "long"}, "Invalid reasoning.summary: reasoning.summary must be auto,"
                                  " concise, or detailed"),
        ],
    )  # fmt: skip
    async def test_a_wrong_one_is_refused_before_the_upstream(
        self, gateway: MakeClient, upstream: FakeOpenAI, reasoning: Any, message: str
    ) -> None:
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(
                    model="openclaw", input="hi", extra_body={"reasoning": reasoning}
                )
        assert caught.value.body == {
            "message": message,
            "type": "invalid_request_error",
            "param": "reasoning",
            "code": None,
        }
        assert upstream.requests == []


class TestStructuredOutputs:
    async def test_parse_round_trip(self, gateway: MakeClient, upstream: FakeOpenAI) -> None:
        """The SDK's `responses.parse` with a pydantic model: its schema reaches the upstream
        as chat completions' `response_format`, and the answer parses."""

        class Weather(BaseModel):
            city: str
            sunny: bool

        upstream.script(Stream(('{"city": "Oslo",', ' "sunny": false}')))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.parse(model="openclaw", input="hi", text_format=Weather)
        assert response.output_parsed == Weather(city="Oslo", sunny=False)
        sent = upstream.last.body["response_format"]
        assert (sent["type"], sent["json_schema"]["name"]) == ("json_schema", "Weather")
        assert sent["json_schema"]["schema"]["required"] == ["city", "sunny"]

    async def test_a_malformed_json_schema_is_refused_before_the_upstream(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(400))  # as OpenAI answers it: before, the client got a 502
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(
                    model="openclaw",
                    input="hi",
                    text={"format": {"type": "json_schema", "name": "the weather", "schema": {}}},
                )
        assert caught.value.body == {
            "message": "Invalid text.format.name: 1 to 64 letters, digits, _ or -",
            "type": "invalid_request_error",
            "param": "text",
            "code": None,
        }
        assert upstream.requests == []


class TestAllowedTools:
    async def test_the_upstream_gets_only_the_allowed_tools(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("Done.",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        choice = {"type": "allowed_tools", "mode": "auto",
                  "tools": [{"type": "function", "name": "get_time"}]}  # fmt: skip
        async with await sdk_for(client) as sdk:
            response = await sdk.responses.create(
                model="openclaw", input="hi", tools=[WEATHER, CLOCK], tool_choice=choice
            )
        sent = upstream.last.body
        assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_time"]
        assert sent["tool_choice"] == "auto"
        assert response.tool_choice.model_dump() == choice

    async def test_a_function_not_in_tools_is_refused(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        async with await sdk_for(client) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.responses.create(
                    model="openclaw",
                    input="hi",
                    tools=[WEATHER],
                    tool_choice={"type": "allowed_tools", "mode": "auto",
                                 "tools": [{"type": "function", "name": "nope"}]},
                )  # fmt: skip
        assert caught.value.body == {
            "message": "Invalid `tool_choice`: no function named 'nope' in `tools`.",
            "type": "invalid_request_error",
            "param": "tool_choice",
            "code": None,
        }
        assert upstream.requests == []
