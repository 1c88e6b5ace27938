"""Client tools, reasoning, conversation headers and the model header on
/v1/chat/completions: the wire, the real `openai` SDK, and fake upstreams that are real
HTTP servers (tests/support/upstreams.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from structlog.testing import capture_logs

from agents.providers import openai_completions
from agents.providers.base import TOOL_IMAGE_ONLY_TEXT, ChatMessage, ToolCall
from agents.store import TurnRecord
from gateway.appkeys import STATE
from tests.support.configs import merged
from tests.support.http_client import (
    AUTH,
    CHAT,
    TOKEN,
    Client,
    MakeClient,
    anthropic_agent,
    fake_provider,
    fake_provider_entry,
    normalised,
    sse_events,
    stored_messages,
)
from tests.support.upstreams import (
    FakeAnthropic,
    FakeOpenAI,
    FakeToolCall,
    JSONAnswer,
    Raw,
    Status,
    Stream,
)

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL_PARIS = 'call get_weather {"city": "Paris"}'
UPSTREAM_CALL = FakeToolCall("call_up_1", "get_weather", ('{"city":', '"Paris"}'))


async def post(client: Client, body: Any, headers: dict[str, str] | None = None) -> Any:
    response = await client.post(CHAT, json=body, headers={**AUTH, **(headers or {})})
    return response


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "openclaw", "messages": [{"role": "user", "content": text}], **extra}


CHUNK = (
    'data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,'
    '"model":"openclaw","choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]}'
    "\n\n"
)


class TestEchoWire:
    """The echo agent's tool mode, byte for byte: what OpenAI streams for a tool call."""

    async def test_a_streamed_tool_call_is_openais_fragments(self, client: Client) -> None:
        response = await post(client, ask(CALL_PARIS, stream=True, tools=[WEATHER]))
        assert response.status == 200
        first = {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_echo_1_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }

        def piece(arguments: str) -> str:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}
            return CHUNK % (json.dumps(delta, separators=(",", ":")), "null")

        assert normalised(await response.text()) == (
            CHUNK % ('{"role":"assistant","content":""}', "null")
            + CHUNK % (json.dumps(first, separators=(",", ":")), "null")
            + piece('{"city":')
            + piece('"Paris"}')
            + CHUNK % ("{}", '"tool_calls"')
            + "data: [DONE]\n\n"
        )

    async def test_a_json_tool_call_has_null_content(self, client: Client) -> None:
        response = await post(client, ask(CALL_PARIS, tools=[WEATHER]))
        assert normalised(await response.text()) == (
            '{"id":"chatcmpl-<32hex>","object":"chat.completion","created":<unix>,'
            '"model":"openclaw","choices":[{"index":0,"message":{"role":"assistant",'
            '"content":null,"tool_calls":[{"id":"call_echo_1_0","type":"function",'
            '"function":{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]},'
            '"logprobs":null,"finish_reason":"tool_calls"}],'
            '"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}'
        )

    async def test_tool_results_are_answered(self, client: Client) -> None:
        call = {
            "id": "call_echo_1_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
        messages = [
            {"role": "user", "content": CALL_PARIS},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_echo_1_0", "content": "sunny, 22 C"},
        ]
        body = {"model": "openclaw", "messages": messages, "tools": [WEATHER]}
        reply = await (await post(client, body)).json()
        assert reply["choices"][0]["message"]["content"] == "[turn 1] get_weather: sunny, 22 C"
        assert reply["choices"][0]["finish_reason"] == "stop"

    async def test_without_tools_call_is_plain_text(self, client: Client) -> None:
        reply = await (await post(client, ask(CALL_PARIS))).json()
        assert reply["choices"][0]["message"]["content"] == f"[turn 1] {CALL_PARIS}"

    async def test_a_named_tool_choice_is_the_only_tool_it_calls(self, client: Client) -> None:
        now = {"type": "function", "function": {"name": "now"}}
        only_now = now  # a named tool_choice has the tool's own shape
        body = ask(CALL_PARIS, tools=[WEATHER, now], tool_choice=only_now)
        reply = await (await post(client, body)).json()
        assert reply["choices"][0]["message"]["content"] == f"[turn 1] {CALL_PARIS}"
        body = ask("call now", tools=[WEATHER, now], tool_choice=only_now)
        reply = await (await post(client, body)).json()
        assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "now"

    async def test_a_call_nested_deeper_than_the_parser_goes_is_plain_text(
        self, client: Client
    ) -> None:
        text = "call get_weather " + "[" * 5000 + "]" * 5000
        reply = await (await post(client, ask(text, tools=[WEATHER]))).json()
        assert reply["choices"][0]["message"]["content"] == f"[turn 1] {text}"

    @pytest.mark.parametrize("stream", [False, True])
    async def test_the_model_used_is_in_a_header(self, client: Client, stream: bool) -> None:
        response = await post(client, ask("hi", stream=stream))
        await response.read()
        assert response.headers["x-openclaw-model-used"] == "echo/echo"


# -- the real openai SDK ----------------------------------------------------------------------


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


async def sdk_for(client: Client) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=str(client.server.make_url("/v1")), api_key=TOKEN, max_retries=0)


async def tool_loop(sdk: AsyncOpenAI, stream: bool, **extra: Any) -> tuple[Any, Any]:
    """The documented two-step loop: ask, run the tool the model called, send its result.
    Returns (the tool-calling message, the final message)."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    if stream:
        async with sdk.chat.completions.stream(
            model="openclaw", messages=messages, tools=[WEATHER], **extra
        ) as events:
            first = await events.get_final_completion()
    else:
        first = await sdk.chat.completions.create(
            model="openclaw", messages=messages, tools=[WEATHER], **extra
        )
    assert first.choices[0].finish_reason == "tool_calls"
    called = first.choices[0].message
    messages.append(called.model_dump(exclude_none=True))  # type: ignore[arg-type]
    for call in called.tool_calls or []:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    if stream:
        async with sdk.chat.completions.stream(
            model="openclaw", messages=messages, tools=[WEATHER], **extra
        ) as events:
            final = await events.get_final_completion()
    else:
        final = await sdk.chat.completions.create(
            model="openclaw", messages=messages, tools=[WEATHER], **extra
        )
    return called, final.choices[0].message


OPENAI_SECOND_REQUEST = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_up_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_up_1", "content": "sunny"},
]


class TestLongArguments:
    @pytest.mark.timeout(30)
    async def test_megabytes_of_arguments_in_8_character_pieces(self, client: Client) -> None:
        """Echo streams a call's arguments 8 characters at a time, as models stream them a
        token at a time. Kept by adding each piece to the text so far, 3 MB of them were
        copied some 1,000 GB over (twice: the run and the WebSocket fan-out), on the event
        loop: a minute and more."""
        city = "x" * 3_000_000
        body = json.dumps(ask(f'call get_weather {{"city": "{city}"}}', tools=[WEATHER]))
        response = await client.post(CHAT, data=io.BytesIO(body.encode()), headers=AUTH)
        reply = await response.json()
        call = reply["choices"][0]["message"]["tool_calls"][0]
        assert call["function"]["arguments"] == '{"city":"' + city + '"}'


class TestOpenAISDKToolLoop:
    @pytest.mark.parametrize("stream", [False, True])
    @pytest.mark.parametrize("user", [None, "alice"])
    async def test_against_an_openai_compatible_upstream(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, stream: bool, user: str | None
    ) -> None:
        openai_fake.script(
            Stream((), tool_calls=(UPSTREAM_CALL,)), Stream(("It is sunny", " in Paris."))
        )
        client = await gateway(fake_provider(openai_fake))
        extra = {"user": user} if user else {}
        async with await sdk_for(client) as sdk:
            called, final = await tool_loop(sdk, stream, **extra)
        (call,) = called.tool_calls
        assert (call.id, call.function.name, call.function.arguments) == (
            "call_up_1",
            "get_weather",
            '{"city":"Paris"}',
        )
        assert final.content == "It is sunny in Paris."
        first, second = openai_fake.requests
        assert first.body["tools"] == [WEATHER]
        # Stateless or named, the model sees the conversation once, in order.
        assert second.body["messages"] == OPENAI_SECOND_REQUEST

    @pytest.mark.parametrize("stream", [False, True])
    async def test_against_an_anthropic_upstream(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic, stream: bool
    ) -> None:
        anthropic_fake.script(
            Stream((), tool_calls=(UPSTREAM_CALL,)), Stream(("It is sunny in Paris.",))
        )
        client = await gateway(anthropic_agent(anthropic_fake))
        async with await sdk_for(client) as sdk:
            called, final = await tool_loop(sdk, stream, user="bob")
        assert called.tool_calls[0].function.arguments == '{"city":"Paris"}'
        assert final.content == "It is sunny in Paris."
        first, second = anthropic_fake.requests
        assert first.body["tools"] == [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "input_schema": WEATHER["function"]["parameters"],
            }
        ]
        assert second.body["messages"] == [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_up_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_up_1", "content": "sunny"}
                ],
            },
        ]

    async def test_against_the_echo_agent(self, client: Client) -> None:
        async with await sdk_for(client) as sdk:
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": CALL_PARIS}]
            first = await sdk.chat.completions.create(
                model="openclaw", messages=messages, tools=[WEATHER]
            )
            (call,) = first.choices[0].message.tool_calls or []
            messages.append(first.choices[0].message.model_dump(exclude_none=True))  # type: ignore[arg-type]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
            final = await sdk.chat.completions.create(
                model="openclaw", messages=messages, tools=[WEATHER]
            )
        assert final.choices[0].message.content == "[turn 1] get_weather: sunny"


class TestUnansweredToolCalls:
    """A call the conversation never answered (the client asked something else, a WebSocket
    turn followed, the turn was aborted) is given a result before the next message: OpenAI
    and Anthropic refuse a call without one, which would fail every later turn of the
    session; for the same reason a stored result whose call is not before it is not
    replayed. The transcript keeps both as they were."""

    async def test_an_openai_compatible_upstream_gets_a_result_for_it(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Stream((), tool_calls=(UPSTREAM_CALL,)), Stream(("Hello.",)))
        client = await gateway(fake_provider(openai_fake))
        first = await post(
            client, ask("What is the weather in Paris?", user="dana", tools=[WEATHER])
        )
        assert first.status == 200
        second = await post(client, ask("Never mind. Hello!", user="dana"))
        assert second.status == 200
        assert openai_fake.requests[1].body["messages"] == [
            OPENAI_SECOND_REQUEST[0],
            OPENAI_SECOND_REQUEST[1],
            {"role": "tool", "tool_call_id": "call_up_1", "content": "No result provided"},
            {"role": "user", "content": "Never mind. Hello!"},
        ]
        stored = await stored_messages(client, "agent:main:openai-user:dana")
        assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]

    async def test_an_anthropic_upstream_gets_a_result_for_it(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        anthropic_fake.script(Stream((), tool_calls=(UPSTREAM_CALL,)), Stream(("Hello.",)))
        client = await gateway(anthropic_agent(anthropic_fake))
        first = await post(
            client, ask("What is the weather in Paris?", user="eve", tools=[WEATHER])
        )
        assert first.status == 200
        second = await post(client, ask("Never mind. Hello!", user="eve"))
        assert second.status == 200
        assert anthropic_fake.requests[1].body["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_up_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_up_1",
                        "content": "No result provided",
                    },
                    {"type": "text", "text": "Never mind. Hello!"},
                ],
            },
        ]

    async def test_a_stored_result_without_its_call_is_not_replayed(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        # A session that holds one from before such results were refused: the upstream
        # would refuse every turn that replays it.
        openai_fake.script(Stream(("Hello.",)))
        client = await gateway(fake_provider(openai_fake))
        key = "agent:main:openai-user:fay"
        registry = client.app[STATE].registry
        assert registry is not None
        store = registry.store
        row, _ = await store.get_or_create(key, "main", 1)
        result = ChatMessage("tool", "sunny", tool_call_id="call_up_1")
        await store.append_turn(TurnRecord(
            run_id="run-1", user_text="", inputs=(result,), assistant_text="Sunny.",
            stop_reason="stop", key=key, agent_id="main", session_id=row.session_id,
            user_timestamp=1, assistant_timestamp=2, input_tokens=1, output_tokens=1,
            status="done",
        ))  # fmt: skip
        later = await post(client, ask("Hello!", user="fay"))
        assert later.status == 200
        assert openai_fake.requests[0].body["messages"] == [
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": "Hello!"},
        ]


ORPHAN = {"role": "tool", "tool_call_id": "call_zzz", "content": "sunny"}
ORPHAN_MESSAGE = (
    "Invalid tool result for 'call_zzz': it answers no tool call before it (an unknown id,"
    " or a call already answered)."
)


class TestResultsThatAnswerNoCall:
    """A tool message must answer a call of an assistant message before it, once: OpenAI and
    Anthropic refuse a conversation with one that does not. It is the client's mistake, so
    it is a 400 naming the id, and nothing of the turn is stored."""

    @pytest.mark.parametrize("stream", [False, True])
    @pytest.mark.parametrize(
        "messages",
        [
            [{"role": "user", "content": "Weather?"}, ORPHAN],
            [ORPHAN],
            [*OPENAI_SECOND_REQUEST, {**ORPHAN, "tool_call_id": "call_up_1"}],
        ],
        ids=["unknown-id", "alone", "answered-twice"],
    )
    async def test_a_stateless_request_is_refused(
        self,
        gateway: MakeClient,
        openai_fake: FakeOpenAI,
        stream: bool,
        messages: list[dict[str, Any]],
    ) -> None:
        client = await gateway(fake_provider(openai_fake))
        body = {"model": "openclaw", "messages": messages, "tools": [WEATHER], "stream": stream}
        response = await post(client, body)
        assert response.status == 400
        error = (await response.json())["error"]
        wanted = ORPHAN_MESSAGE.replace("call_zzz", messages[-1]["tool_call_id"])
        assert (error["message"], error["param"]) == (wanted, "messages")
        assert openai_fake.requests == []

    async def test_calls_that_share_an_id_are_answered_once_each(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        # Some servers give parallel calls one id; the client answers each of them. The
        # upstream gets them under ids of their own (OpenAI refuses calls that share one),
        # each result with its call.
        call = OPENAI_SECOND_REQUEST[1]["tool_calls"][0]
        messages = [
            OPENAI_SECOND_REQUEST[0],
            {"role": "assistant", "content": None, "tool_calls": [call, call]},
            OPENAI_SECOND_REQUEST[2],
            OPENAI_SECOND_REQUEST[2],
        ]
        second = {**call, "id": f"{call['id']}_2"}
        sent = [
            messages[0],
            {"role": "assistant", "content": None, "tool_calls": [call, second]},
            messages[2],
            {**messages[3], "tool_call_id": second["id"]},
        ]
        openai_fake.script(Stream(("Sunny twice.",)), Stream(("Hi.",)))
        client = await gateway(fake_provider(openai_fake))
        body = {"model": "openclaw", "messages": messages, "tools": [WEATHER]}
        refused = await post(client, {**body, "messages": [*messages, OPENAI_SECOND_REQUEST[2]]})
        assert refused.status == 400
        assert (await post(client, {**body, "user": "ned"})).status == 200
        assert openai_fake.requests[0].body["messages"] == sent
        # Replayed to the next turn with both results.
        assert (await post(client, ask("Hello!", user="ned"))).status == 200
        assert openai_fake.requests[1].body["messages"] == [
            *sent,
            {"role": "assistant", "content": "Sunny twice."},
            {"role": "user", "content": "Hello!"},
        ]

    async def test_anthropic_gets_calls_that_share_an_id_under_ids_of_their_own(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        # The Messages API refuses a reply whose tool_use blocks share an id.
        paris, rome = ('{"city":"Paris"}', '{"city":"Rome"}')
        calls = [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": args}}
            for args in (paris, rome)
        ]  # fmt: skip
        messages = [
            {"role": "user", "content": "Paris and Rome?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_1", "content": "rainy"},
        ]
        client = await gateway(anthropic_agent(anthropic_fake))
        body = {"model": "openclaw", "messages": messages, "tools": [WEATHER]}
        assert (await post(client, body)).status == 200
        assert anthropic_fake.requests[0].body["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather",
                     "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_1_2", "name": "get_weather",
                     "input": {"city": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_1_2", "content": "rainy"},
                ],
            },
        ]  # fmt: skip

    async def test_a_named_session_stores_nothing_of_it(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Stream((), tool_calls=(UPSTREAM_CALL,)), Stream(("Sunny.",)))
        client = await gateway(fake_provider(openai_fake))
        first = await post(
            client, ask("What is the weather in Paris?", user="gus", tools=[WEATHER])
        )
        assert first.status == 200
        orphan = await post(client, {"model": "openclaw", "user": "gus", "messages": [ORPHAN]})
        assert orphan.status == 400
        error = (await orphan.json())["error"]
        # Found against the session's history, not in the request alone: no one field.
        assert (error["message"], error["param"]) == (ORPHAN_MESSAGE, None)
        assert len(openai_fake.requests) == 1
        key = "agent:main:openai-user:gus"
        assert [m.role for m in await stored_messages(client, key)] == ["user", "assistant"]
        # The call the session holds is still answerable, once.
        answer = {**ORPHAN, "tool_call_id": "call_up_1"}
        body = {"model": "openclaw", "user": "gus", "messages": [answer]}
        assert (await post(client, body)).status == 200
        assert openai_fake.requests[1].body["messages"] == OPENAI_SECOND_REQUEST
        again = await post(client, body)
        assert again.status == 400
        assert (await again.json())["error"]["message"] == ORPHAN_MESSAGE.replace(
            "call_zzz", "call_up_1"
        )
        assert len(openai_fake.requests) == 2
        stored = await stored_messages(client, key)
        assert [m.role for m in stored] == ["user", "assistant", "toolResult", "assistant"]

    async def test_a_named_session_stream_ends_in_the_error(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        # Headers go out before the session's history is read: the error is in the stream.
        client = await gateway(fake_provider(openai_fake))
        body = {"model": "openclaw", "user": "hal", "messages": [ORPHAN], "stream": True}
        response = await post(client, body)
        events = sse_events(await response.text())
        error = json.loads(events[-2])["error"]
        assert (error["message"], error["param"]) == (ORPHAN_MESSAGE, None)
        assert events[-1] == "[DONE]"
        assert openai_fake.requests == []
        assert await stored_messages(client, "agent:main:openai-user:hal") == []


class TestParameters:
    """A function's arguments are a JSON object: OpenAI and Anthropic refuse a schema of
    another type (a 502 of the upstream's, before), and Anthropic one without a type."""

    async def test_a_schema_of_another_type_is_refused_before_the_upstream(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        city = {"name": "city", "parameters": {"type": "string"}}
        response = await post(
            client, ask("Weather?", tools=[{"type": "function", "function": city}])
        )
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["message"] == (
            'Invalid `tools[0].function.parameters`: expected a JSON Schema of "type": "object"'
            " (a function's arguments are an object)."
        )
        assert error["param"] == "tools"
        assert anthropic_fake.requests == []

    async def test_anthropic_is_given_the_type_of_a_schema_without_one(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        schema = {"properties": {"city": {"type": "string"}}}
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": schema}}
        assert (await post(client, ask("Weather?", tools=[tool]))).status == 200
        assert anthropic_fake.requests[0].body["tools"] == [
            {"name": "get_weather", "input_schema": {"type": "object", **schema}}
        ]


NOW: ChatCompletionToolParam = {"type": "function", "function": {"name": "now"}}
NOW_HEAD = {"tool_calls": [{"index": 0, "id": "call_now", "type": "function",
                            "function": {"name": "now", "arguments": None}}]}  # fmt: skip


class TestCallsWithoutArguments:
    """A call of a function without parameters, from a server that sends no arguments for
    it (none, `null` or ""), reaches the client with `{}`, as OpenAI and our Anthropic
    provider give it: `""` is no JSON a client can parse."""

    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_streamed_call(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, stream: bool
    ) -> None:
        openai_fake.script(Raw((openai_chunks(NOW_HEAD),)))
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Now?"}]
            if stream:
                async with sdk.chat.completions.stream(
                    model="openclaw", messages=messages, tools=[NOW]
                ) as events:
                    completion = await events.get_final_completion()
            else:
                completion = await sdk.chat.completions.create(
                    model="openclaw", messages=messages, tools=[NOW]
                )
        (call,) = completion.choices[0].message.tool_calls or []
        assert (call.id, call.function.name, call.function.arguments) == ("call_now", "now", "{}")

    @pytest.mark.parametrize("stream", [False, True])
    async def test_arguments_given_as_an_object_are_sent_as_its_json(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, stream: bool
    ) -> None:
        # Some OpenAI-compatible servers give `arguments` as an object.
        call = {"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}  # fmt: skip
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        answer = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
        if stream:
            reply: Raw = Raw((openai_chunks({"tool_calls": [call]}),))
        else:
            reply = Raw((json.dumps(answer).encode(),), content_type="application/json")
        openai_fake.script(reply)
        client = await gateway(fake_provider(openai_fake))
        response = await post(client, ask("Weather?", tools=[WEATHER]))
        assert response.status == 200
        (got,) = (await response.json())["choices"][0]["message"]["tool_calls"]
        assert got["function"]["arguments"] == '{"city":"Paris"}'

    async def test_a_json_answer(self, gateway: MakeClient, openai_fake: FakeOpenAI) -> None:
        openai_fake.script(JSONAnswer("", tool_calls=(FakeToolCall("call_now", "now", ("",)),)))
        client = await gateway(fake_provider(openai_fake))
        reply = await (await post(client, ask("Now?", tools=[NOW]))).json()
        assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


class TestWithoutHistory:
    """`historyLimit: 0` replays no earlier user turn, but a turn that answers tool calls
    continues the user turn that made them: the model must see the calls before their
    results, or OpenAI and Anthropic refuse the turn."""

    @pytest.mark.parametrize("resend", [True, False], ids=["whole-conversation", "new-only"])
    async def test_the_calls_go_before_their_results(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, resend: bool
    ) -> None:
        openai_fake.script(
            Stream((), tool_calls=(UPSTREAM_CALL,)), Stream(("Sunny.",)), Stream(("Hi.",))
        )
        settings = fake_provider(openai_fake)
        settings["agents"]["defaults"] = {"historyLimit": 0}
        client = await gateway(settings)
        first = await post(
            client, ask("What is the weather in Paris?", user="ivy", tools=[WEATHER])
        )
        assert first.status == 200
        messages = OPENAI_SECOND_REQUEST if resend else OPENAI_SECOND_REQUEST[-1:]
        body = {"model": "openclaw", "user": "ivy", "messages": messages, "tools": [WEATHER]}
        second = await post(client, body)
        assert second.status == 200
        assert openai_fake.requests[1].body["messages"] == OPENAI_SECOND_REQUEST
        # A new question is a new user turn: no history again.
        assert (await post(client, ask("Hello!", user="ivy"))).status == 200
        assert openai_fake.requests[2].body["messages"] == [{"role": "user", "content": "Hello!"}]


def openai_chunks(*deltas: dict[str, Any], finish: str | None = "tool_calls") -> bytes:
    """A chat-completions stream of these deltas; with a finish, its chunk and `[DONE]`."""
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    if finish is not None:
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return body + (b"data: [DONE]\n\n" if finish is not None else b"")


NAMELESS_HEAD = {"tool_calls": [{"index": 0, "id": "call_up_1", "type": "function",
                                 "function": {"arguments": ""}}]}  # fmt: skip
LATE_NAME = {"tool_calls": [{"index": 0, "function": {
    "name": "get_weather", "arguments": '{"city":"Paris"}',
}}]}  # fmt: skip


class TestCallsWithoutAName:
    """A server may name a call after its id, or never (a reply broken off after the id).
    A call is shown once it has its name, and one that never got a name is no call: it is
    neither answered nor stored, since OpenAI and Anthropic refuse it in a replayed context,
    which would fail every later turn of the session."""

    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_name_after_the_id_reaches_the_client(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, stream: bool
    ) -> None:
        openai_fake.script(
            Raw((openai_chunks(NAMELESS_HEAD, LATE_NAME),)), Stream(("It is sunny in Paris.",))
        )
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            called, final = await tool_loop(sdk, stream, user="jon")
        assert [(c.id, c.function.name) for c in called.tool_calls] == [
            ("call_up_1", "get_weather")
        ]
        assert final.content == "It is sunny in Paris."
        assert openai_fake.requests[1].body["messages"] == OPENAI_SECOND_REQUEST

    async def test_a_call_broken_off_before_its_name_is_not_replayed(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Raw((openai_chunks(NAMELESS_HEAD, finish=None),)), Stream(("Hi.",)))
        client = await gateway(fake_provider(openai_fake))
        broken = await post(client, ask("Weather in Paris?", user="kim", tools=[WEATHER]))
        assert broken.status == 502
        later = await post(client, ask("Hello!", user="kim"))
        assert later.status == 200
        assert openai_fake.requests[1].body["messages"] == [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "user", "content": "Hello!"},
        ]

    async def test_a_call_broken_off_in_its_arguments_is_not_replayed(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        # Stored as it streamed, its arguments were sent back cut short: servers that parse
        # them to render the prompt (vLLM, llama.cpp) refused every later turn of the session.
        function = {"name": "get_weather", "arguments": '{"city":'}
        head = {"tool_calls": [{"index": 0, "id": "call_up_1", "function": function}]}
        openai_fake.script(Raw((openai_chunks(head, finish=None),)), Stream(("Hi.",)))
        client = await gateway(fake_provider(openai_fake))
        broken = await post(client, ask("Weather in Paris?", user="kit", tools=[WEATHER]))
        assert broken.status == 502
        later = await post(client, ask("Hello!", user="kit"))
        assert later.status == 200
        assert openai_fake.requests[1].body["messages"] == [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "user", "content": "Hello!"},
        ]
        stored = await stored_messages(client, "agent:main:openai-user:kit")
        assert stored[1].tool_calls == (ToolCall("call_up_1", "get_weather", '{"city":'),)

    @pytest.mark.parametrize("stream", [False, True])
    async def test_no_answer_shows_a_call_that_never_got_a_name(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, stream: bool
    ) -> None:
        named = {"tool_calls": [{"index": 1, "id": "call_up_2", "type": "function",
                                 "function": {"name": "now", "arguments": "{}"}}]}  # fmt: skip
        openai_fake.script(Raw((openai_chunks(NAMELESS_HEAD, named),)))
        client = await gateway(fake_provider(openai_fake))
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Now?"}]
        async with await sdk_for(client) as sdk:
            if stream:
                async with sdk.chat.completions.stream(
                    model="openclaw", messages=messages
                ) as events:
                    completion = await events.get_final_completion()
            else:
                completion = await sdk.chat.completions.create(model="openclaw", messages=messages)
        calls = completion.choices[0].message.tool_calls or []
        assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
            ("call_up_2", "now", "{}")
        ]

    async def test_a_stored_call_without_a_name_is_left_out_with_its_result(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        # A session that holds one from before such calls were dropped: the upstream would
        # refuse every turn that replays it.
        openai_fake.script(Stream(("Hi.",)))
        client = await gateway(fake_provider(openai_fake))
        key = "agent:main:openai-user:lea"
        registry = client.app[STATE].registry
        assert registry is not None
        store = registry.store
        row, _ = await store.get_or_create(key, "main", 1)
        turn = {"key": key, "agent_id": "main", "session_id": row.session_id,
                "user_timestamp": 1, "assistant_timestamp": 2, "input_tokens": 1,
                "output_tokens": 1, "status": "done"}  # fmt: skip
        await store.append_turn(TurnRecord(
            run_id="run-1", user_text="Weather in Paris?", assistant_text="",
            stop_reason="tool_calls", tool_calls=(ToolCall("call_up_1", "", ""),), **turn,
        ))  # fmt: skip
        result = ChatMessage("tool", "sunny", tool_call_id="call_up_1")
        await store.append_turn(TurnRecord(
            run_id="run-2", user_text="", inputs=(result,), assistant_text="Sunny.",
            stop_reason="stop", **turn,
        ))  # fmt: skip
        later = await post(client, ask("Hello!", user="lea"))
        assert later.status == 200
        assert openai_fake.last.body["messages"] == [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": "Hello!"},
        ]


class TestNumbersBeyondADouble:
    async def test_are_refused_not_sent_on_as_infinity(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        """`1e400` is JSON that Python reads as infinity, which JSON cannot write: sent on
        to the model in a tool's schema it would be `Infinity`, a body the upstream
        refuses (a 502 for the client's mistake)."""
        openai_fake.script(Stream(("Hello.",)))
        client = await gateway(fake_provider(openai_fake))
        schema = '{"type":"object","properties":{"n":{"type":"number","maximum":1e400}}}'
        body = (
            '{"model":"openclaw","messages":[{"role":"user","content":"hi"}],'
            f'"tools":[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]}}'
        )
        response = await client.post(
            CHAT, data=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert response.status == 400
        assert await response.json() == {
            "error": {
                "message": "Invalid JSON value: 1e400 (out of range)",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        assert openai_fake.requests == []


class TestArgumentsTooDeepToParse:
    """A tool call's arguments are the client's text: nested deeper than the JSON parser
    goes, they are compared and stored as that text, as arguments that are no JSON are."""

    NESTED = "[" * 5000 + "]" * 5000

    async def test_a_resent_tool_call_nested_too_deep_is_kept_as_its_text(
        self, client: Client
    ) -> None:
        headers = {"x-openclaw-session-key": "deep"}
        first = await post(client, ask("hi"), headers)
        assert (await first.json())["choices"][0]["message"]["content"] == "[turn 1] hi"
        call = {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": self.NESTED}}  # fmt: skip
        messages = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "[turn 1] hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        response = await post(client, {"model": "openclaw", "messages": messages}, headers)
        assert response.status == 200
        stored = await stored_messages(client, "agent:main:deep")
        assert [m.role for m in stored] == [
            "user", "assistant", "assistant", "toolResult", "assistant"
        ]  # fmt: skip
        assert stored[2].to_chat().tool_calls[0].arguments == self.NESTED

    async def test_arguments_that_parse_only_on_a_short_stack_do_not_break_later_turns(
        self, client: Client
    ) -> None:
        # The store's thread parses them (a short stack), the event loop encodes them again
        # for every later turn (a longer one): kept as an object, they broke each of those.
        nested = '{"a":' + "[" * 975 + "]" * 975 + "}"
        headers = {"x-openclaw-session-key": "almost"}
        await post(client, ask("hi"), headers)
        call = {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": nested}}  # fmt: skip
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "[turn 1] hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        assert (
            await post(client, {"model": "openclaw", "messages": messages}, headers)
        ).status == 200
        later = await post(client, ask("and now?"), headers)
        assert later.status == 200
        assert (await later.json())["choices"][0]["message"]["content"] == "[turn 2] and now?"
        stored = await stored_messages(client, "agent:main:almost")
        assert stored[2].to_chat().tool_calls[0].arguments == nested


class TestReasoning:
    async def test_json_carries_message_reasoning_content(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Stream(("42",), reasoning=("Let me", " think.")))
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            completion = await sdk.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "6*7?"}]
            )
        message = completion.choices[0].message
        assert (message.content, getattr(message, "reasoning_content", None)) == (
            "42",
            "Let me think.",
        )

    async def test_a_stream_carries_delta_reasoning_content(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        anthropic_fake.script(Stream(("42",), reasoning=("Let me", " think."), signature="s"))
        client = await gateway(anthropic_agent(anthropic_fake))
        async with await sdk_for(client) as sdk:
            stream = await sdk.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "6*7?"}], stream=True
            )
            deltas = [chunk.choices[0].delta async for chunk in stream if chunk.choices]
        reasoning = [getattr(d, "reasoning_content", None) for d in deltas]
        assert [r for r in reasoning if r] == ["Let me", " think."]
        assert "".join(d.content or "" for d in deltas) == "42"

    async def test_reasoning_is_stored_but_not_sent_back(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Stream(("42",), reasoning=("secret",)), Stream(("ok",)))
        client = await gateway(fake_provider(openai_fake))
        for text in ("6*7?", "thanks"):
            body = {
                "model": "openclaw",
                "user": "carol",
                "messages": [{"role": "user", "content": text}],
            }
            assert (await post(client, body)).status == 200
        assert "secret" not in json.dumps(openai_fake.requests[1].body)
        registry = client.app[STATE].registry
        assert registry is not None
        history = await registry.history("agent:main:openai-user:carol")
        assert history.messages[1].reasoning == "secret"


THINKING_ON = {"type": "enabled", "budget_tokens": 2048}


def thinking_settings(upstream: FakeAnthropic) -> dict[str, Any]:
    settings = anthropic_agent(upstream)
    settings["agents"]["list"][0]["params"] = {"thinking": THINKING_ON}
    return settings


def anthropic_sse(*blocks: dict[str, Any]) -> bytes:
    """A Messages API stream of these content blocks, each whole in its start event save
    a thinking block's signature and a tool_use block's input (each in its own delta), as
    Anthropic streams them; the reply ends in `tool_use`."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "usage": {"input_tokens": 3, "output_tokens": 1},
        }}),
    ]  # fmt: skip
    for index, block in enumerate(blocks):
        start, delta = block, None
        if block.get("signature"):
            start = {**block, "signature": ""}
            delta = {"type": "signature_delta", "signature": block["signature"]}
        elif block["type"] == "tool_use":
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(("content_block_start", {
            "type": "content_block_start", "index": index, "content_block": start,
        }))  # fmt: skip
        if delta is not None:
            events.append(("content_block_delta", {
                "type": "content_block_delta", "index": index, "delta": delta,
            }))  # fmt: skip
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events += [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return "".join(f"event: {n}\ndata: {json.dumps(o)}\n\n" for n, o in events).encode()


WEATHER_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
               "input": {"city": "Paris"}}  # fmt: skip


class TestSignedThinking:
    """Anthropic checks each thinking block it is sent back against its own signature: a
    reply's blocks joined into one would be refused on every later turn of the session. A
    reply's thinking blocks (one, or several: interleaved thinking, redacted thinking) are
    sent back as they came, each with its own signature."""

    async def tool_loop_body(
        self, gateway: MakeClient, upstream: FakeAnthropic, user: str, *blocks: dict[str, Any]
    ) -> dict[str, Any]:
        upstream.script(Raw((anthropic_sse(*blocks, WEATHER_USE),)), Stream(("Sunny.",)))
        client = await gateway(thinking_settings(upstream))
        first = await post(client, ask("Weather in Paris?", user=user, tools=[WEATHER]))
        assert first.status == 200
        result = {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
        body = {"model": "openclaw", "user": user, "messages": [result], "tools": [WEATHER]}
        second = await post(client, body)
        assert second.status == 200
        sent: dict[str, Any] = upstream.requests[1].body
        return sent

    async def test_one_block_goes_back_as_it_came(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        thinking = {"type": "thinking", "thinking": "Look it up.", "signature": "sig-a"}
        body = await self.tool_loop_body(gateway, anthropic_fake, "hal", thinking)
        assert body["thinking"] == THINKING_ON
        assert body["messages"][1:] == [
            {"role": "assistant", "content": [thinking, WEATHER_USE]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ]

    @pytest.mark.parametrize(
        "blocks",
        [
            (
                {"type": "thinking", "thinking": "First.", "signature": "sig-a"},
                {"type": "thinking", "thinking": "Second.", "signature": "sig-b"},
            ),
            (
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "thinking", "thinking": "Look it up.", "signature": "sig-a"},
            ),
        ],
        ids=["two-thinking-blocks", "redacted-and-thinking"],
    )
    async def test_several_blocks_go_back_as_they_came(
        self,
        gateway: MakeClient,
        anthropic_fake: FakeAnthropic,
        blocks: tuple[dict[str, Any], ...],
    ) -> None:
        # They were dropped, and the tool loop's next turn ran without thinking.
        body = await self.tool_loop_body(gateway, anthropic_fake, "ivy", *blocks)
        assert body["thinking"] == THINKING_ON
        assert body["messages"][1:] == [
            {"role": "assistant", "content": [*blocks, WEATHER_USE]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ]


# -- Open WebUI's request pattern -------------------------------------------------------------


# What Open WebUI sends with ENABLE_FORWARD_USER_INFO_HEADERS (its chat id names the chat).
# Open WebUI itself cannot run here: its pattern is replayed with the openai SDK.
def webui_headers(chat_id: str) -> dict[str, str]:
    return {
        "X-OpenWebUI-User-Name": "Ada",
        "X-OpenWebUI-User-Id": "6f1c2d3e-user",
        "X-OpenWebUI-User-Email": "ada@example.com",
        "X-OpenWebUI-User-Role": "user",
        "X-OpenWebUI-Chat-Id": chat_id,
    }


async def webui_turns(
    sdk: AsyncOpenAI, chat_id: str, questions: list[str]
) -> tuple[list[str], list[str]]:
    """Open WebUI's loop: the whole history resent every turn, streamed.
    Returns the answers and the session key of each answer."""
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "You are helpful."}]
    answers, keys = [], []
    for question in questions:
        messages.append({"role": "user", "content": question})
        raw = await sdk.chat.completions.with_raw_response.create(
            model="openclaw",
            messages=messages,
            stream=True,
            extra_headers=webui_headers(chat_id),
        )
        keys.append(raw.headers["x-openclaw-session-key"])
        stream = raw.parse()
        answer = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    return answers, keys


# Open WebUI's default task prompts (backend/open_webui/config.py,
# DEFAULT_TITLE_GENERATION_PROMPT_TEMPLATE and DEFAULT_TAGS_GENERATION_PROMPT_TEMPLATE), the
# chat history rendered as backend/open_webui/utils/misc.py `get_messages_content` does.
WEBUI_TITLE_TEMPLATE = """### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
- Use emojis that enhance understanding of the topic, but avoid quotation marks or special formatting.
- Write the title in the chat's primary language; default to English if multilingual.
- Prioritize accuracy over excessive creativity; keep it clear and simple.
### Output:
JSON format: { "title": "your concise title here" }
### Examples:
- { "title": "📉 Stock Market Trends" },
- { "title": "🍪 Perfect Chocolate Chip Recipe" },
- { "title": "Evolution of Music Streaming" },
- { "title": "Remote Work Productivity Tips" },
- { "title": "Artificial Intelligence in Healthcare" },
- { "title": "🎮 Video Game Development Insights" }
### Chat History:
<chat_history>
{history}
</chat_history>"""  # noqa: E501 (Open WebUI's text as it is)
WEBUI_TAGS_TEMPLATE = """### Task:
Generate 1-3 broad tags categorizing the main themes of the chat history, along with 1-3 more specific subtopic tags.

### Guidelines:
- Start with high-level domains (e.g. Science, Technology, Philosophy, Arts, Politics, Business, Health, Sports, Entertainment, Education)
- Consider including relevant subfields/subdomains if they are strongly represented throughout the conversation
- If content is too short (less than 3 messages) or too diverse, use only ["General"]
- Use the chat's primary language; default to English if multilingual
- Prioritize accuracy over specificity

### Output:
JSON format: { "tags": ["tag1", "tag2", "tag3"] }

### Chat History:
<chat_history>
{history}
</chat_history>"""  # noqa: E501 (Open WebUI's text as it is)


async def webui_stream(sdk: AsyncOpenAI, chat_id: str, messages: Any, **extra: Any) -> str:
    """One of Open WebUI's streamed requests; the text it appends to the chat."""
    stream = await sdk.chat.completions.create(
        model="openclaw", messages=messages, stream=True,
        extra_headers=webui_headers(chat_id), **extra,
    )  # fmt: skip
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


def webui_task(template: str, question: str, answer: str, **extra: Any) -> dict[str, Any]:
    """A task's body as backend/open_webui/routers/tasks.py builds it (its `metadata`, with
    the chat's id, is popped by routers/openai.py and sent as X-OpenWebUI-Chat-Id)."""
    history = f"USER: {question}\nASSISTANT: {answer}"
    content = template.replace("{history}", history)
    return {
        "model": "openclaw",
        "messages": [{"role": "user", "content": content}],
        "stream": False,
        **extra,
    }


def webui_title_task(question: str, answer: str) -> dict[str, Any]:
    return webui_task(WEBUI_TITLE_TEMPLATE, question, answer, max_completion_tokens=1000)


def webui_tags_task(question: str, answer: str) -> dict[str, Any]:
    return webui_task(WEBUI_TAGS_TEMPLATE, question, answer)


class TestOpenWebUI:
    async def test_one_session_per_chat(self, client: Client) -> None:
        async with await sdk_for(client) as sdk:
            answers, keys = await webui_turns(sdk, "chat-A", ["hi", "and again", "once more"])
            other, other_keys = await webui_turns(sdk, "chat-B", ["hi"])
        # The echo agent counts the user turns it is given: each reached it once.
        assert answers == ["[turn 1] hi", "[turn 2] and again", "[turn 3] once more"]
        assert set(keys) == {"agent:main:openai-chat:chat-a"}
        assert (other, other_keys) == (["[turn 1] hi"], ["agent:main:openai-chat:chat-b"])

    async def test_resent_history_reaches_the_model_once(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Stream(("A1",)), Stream(("A2",)), Stream(("A3",)))
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            await webui_turns(sdk, "chat-A", ["Q1", "Q2", "Q3"])
        assert openai_fake.last.body["messages"] == [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
            {"role": "user", "content": "Q3"},
        ]

    async def test_an_empty_answer_resent_as_its_placeholder_is_not_a_second_history(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        """The model said nothing, the client got `No response from OpenClaw.` and resends
        it: that is the session's last reply, so only the new question is new."""
        openai_fake.script(Stream(()), Stream(("A2",)), Stream(("A3",)))
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            answers, _ = await webui_turns(sdk, "chat-A", ["Q1", "Q2", "Q3"])
        assert answers == ["No response from OpenClaw.", "A2", "A3"]
        assert openai_fake.last.body["messages"] == [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Q1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
            {"role": "user", "content": "Q3"},
        ]

    async def test_a_regenerated_answer_replaces_the_stored_one(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Stream(("A1",)), Stream(("A2",)), Stream(("A2 again",)))
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            await webui_turns(sdk, "chat-A", ["Q1", "Q2"])
            # Regenerate: the same history up to Q2 again, A2 is not in it.
            messages: list[ChatCompletionMessageParam] = [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"},
            ]
            await sdk.chat.completions.create(
                model="openclaw", messages=messages, extra_headers=webui_headers("chat-A")
            )
        assert openai_fake.last.body["messages"][1:] == [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ]

    async def test_a_regenerated_answer_the_same_as_the_one_before_replaces_it(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        """The session's last reply `OK` is also the chat's first: the chat resent without
        the last one still ends before it, and Q2 is not asked twice."""
        openai_fake.script(Stream(("OK",)), Stream(("OK",)), Stream(("Done",)))
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            await webui_turns(sdk, "chat-A", ["Q1", "Q2"])
            await sdk.chat.completions.create(
                model="openclaw",
                messages=[
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "OK"},
                    {"role": "user", "content": "Q2"},
                ],
                extra_headers=webui_headers("chat-A"),
            )
        assert openai_fake.last.body["messages"][1:] == [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "OK"},
            {"role": "user", "content": "Q2"},
        ]

    async def test_two_image_only_questions_in_a_row_continue_the_session(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        """An image-only question is stored as `User sent image(s) with no text.`; resent,
        it has no text and is left out: the next image-only question is still new."""
        openai_fake.script(Stream(("A1",)), Stream(("OK",)), Stream(("OK",)))
        client = await gateway(fake_provider(openai_fake))
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
        image = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]
        messages: list[Any] = [{"role": "user", "content": "Q1"}]
        async with await sdk_for(client) as sdk:
            for _ in range(3):
                reply = await sdk.chat.completions.create(
                    model="openclaw", messages=messages, extra_headers=webui_headers("chat-A")
                )
                messages += [
                    {"role": "assistant", "content": reply.choices[0].message.content},
                    {"role": "user", "content": image},
                ]
        only_image = "User sent image(s) with no text."
        assert [(m["role"], m["content"]) for m in openai_fake.last.body["messages"]] == [
            ("user", "Q1"),
            ("assistant", "A1"),
            ("user", only_image),
            ("assistant", "OK"),
            ("user", [{"type": "text", "text": only_image}, image[0]]),
        ]

    @pytest.mark.parametrize("edit", [False, True])
    async def test_a_regenerated_first_answer_replaces_the_stored_one(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, edit: bool
    ) -> None:
        """Regenerating the chat's first answer (or editing its first question) sends the
        chat without an assistant message: its first turn again, not a second question."""
        openai_fake.script(Stream(("A1",)), Stream(("A1 again",)), Stream(("A2",)))
        client = await gateway(fake_provider(openai_fake))
        question = "Q1 edited" if edit else "Q1"
        async with await sdk_for(client) as sdk:
            await webui_turns(sdk, "chat-A", ["Q1"])
            await webui_turns(sdk, "chat-A", [question])
            await sdk.chat.completions.create(
                model="openclaw",
                messages=[
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": "A1 again"},
                    {"role": "user", "content": "Q2"},
                ],
                extra_headers=webui_headers("chat-A"),
            )
        _, again, last = openai_fake.requests
        assert again.body["messages"][1:] == [{"role": "user", "content": question}]
        assert last.body["messages"][1:] == [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "A1 again"},
            {"role": "user", "content": "Q2"},
        ]

    async def test_title_and_tags_tasks_stay_out_of_the_chats_session(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        """Open WebUI asks for a title and tags after the first answer, with the chat's id
        in the header: those are not turns of the chat, and its session holds none of them."""
        openai_fake.script(
            Stream(("A1",)),
            Stream(('{"title": "Greeting"}',)),
            Stream(('{"tags": ["General"]}',)),
            Stream(("A2",)),
        )
        client = await gateway(fake_provider(openai_fake))
        async with await sdk_for(client) as sdk:
            await webui_turns(sdk, "chat-A", ["Q1"])
            for task in (webui_title_task, webui_tags_task):
                response = await post(client, task("Q1", "A1"), webui_headers("chat-A"))
                assert response.status == 200
                assert normalised(response.headers["x-openclaw-session-key"]) == (
                    "agent:main:openai:<uuid>"
                )
            stream = await sdk.chat.completions.create(
                model="openclaw",
                messages=[
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "Q2"},
                ],
                stream=True,
                extra_headers=webui_headers("chat-A"),
            )
            assert [c async for c in stream if c.choices and c.choices[0].delta.content]
        stored = await stored_messages(client, "agent:main:openai-chat:chat-a")
        assert [(m.role, m.text) for m in stored] == [
            ("user", "Q1"),
            ("assistant", "A1"),
            ("user", "Q2"),
            ("assistant", "A2"),
        ]
        # The second turn continued the session: only Q2 was new to it.
        assert openai_fake.last.body["messages"][1:] == [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ]

    async def test_a_task_with_the_session_key_header_runs_in_that_session(
        self, client: Client
    ) -> None:
        headers = {**webui_headers("chat-A"), "x-openclaw-session-key": "mine"}
        response = await post(client, webui_title_task("Q1", "A1"), headers)
        assert response.headers["x-openclaw-session-key"] == "agent:main:mine"

    async def test_the_emoji_task_of_a_voice_call_stays_out_of_the_chats_session(
        self, client: Client
    ) -> None:
        """Open WebUI's default emoji prompt (tasks.py `generate_emoji`, after each reply of
        a voice call, with the chat's id) quotes no <chat_history> and has no `### Task:`."""
        emoji = (
            "Your task is to reflect the speaker's likely facial expression through a fitting"
            " emoji. Interpret emotions from the message and reflect their facial expression"
            " using fitting, diverse emojis (e.g., 😊, 😢, 😡, 😱).\n\nMessage: ```Hello!```"
        )
        response = await post(client, ask(emoji, max_completion_tokens=4), webui_headers("chat-A"))
        assert response.status == 200
        assert normalised(response.headers["x-openclaw-session-key"]) == (
            "agent:main:openai:<uuid>"
        )

    # An operator's own title prompt (Settings → Interface → Title Generation Prompt), the
    # chat rendered by Open WebUI's {{MESSAGES:END:2}}: neither `### Task:` nor <chat_history>.
    CUSTOM_TITLE = "Give this conversation a short title:\nUSER: Q1\nASSISTANT: A1"

    async def test_a_task_named_by_its_header_stays_out_of_the_chats_session(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        """With `X-OpenWebUI-Task: {{TASK}}` among the connection's headers, Open WebUI
        names each background task (`title_generation`, …) and sends it empty for the
        chat's turns: a task is no turn of the chat, whatever its prompt."""
        openai_fake.script(Stream(("A1",)), Stream(("Greeting",)), Stream(("A2",)))
        client = await gateway(fake_provider(openai_fake))
        turn = {**webui_headers("chat-A"), "X-OpenWebUI-Task": ""}
        task = {**webui_headers("chat-A"), "X-OpenWebUI-Task": "title_generation"}
        async with await sdk_for(client) as sdk:
            await webui_stream(sdk, "chat-A", [{"role": "user", "content": "Q1"}])
            response = await post(client, ask(self.CUSTOM_TITLE), task)
            assert response.status == 200
            assert normalised(response.headers["x-openclaw-session-key"]) == (
                "agent:main:openai:<uuid>"
            )
            stream = await sdk.chat.completions.create(
                model="openclaw", stream=True, extra_headers=turn, messages=[
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "Q2"},
                ],
            )  # fmt: skip
            assert [c async for c in stream]
        stored = await stored_messages(client, "agent:main:openai-chat:chat-a")
        assert [(m.role, m.text, m.context_start) for m in stored] == [
            ("user", "Q1", False),
            ("assistant", "A1", False),
            ("user", "Q2", False),
            ("assistant", "A2", False),
        ]

    @pytest.mark.parametrize("value", ["", "  ", "{{TASK}}"])
    async def test_a_blank_or_unfilled_task_header_says_nothing_of_a_task(
        self, client: Client, value: str
    ) -> None:
        """Blank: a turn of the chat, even if its prompt looks like a task's. Still the
        placeholder (an Open WebUI that does not fill it in): as if not sent."""
        headers = {**webui_headers("chat-A"), "X-OpenWebUI-Task": value}
        response = await post(client, ask(self.CUSTOM_TITLE), headers)
        assert response.headers["x-openclaw-session-key"] == "agent:main:openai-chat:chat-a"
        response = await post(client, webui_title_task("Q1", "A1"), headers)
        key = normalised(response.headers["x-openclaw-session-key"])
        if value == "{{TASK}}":
            assert key == "agent:main:openai:<uuid>"  # told by its prompt, as without it
        else:
            assert key == "agent:main:openai-chat:chat-a"

    @pytest.mark.parametrize(
        ("named_by", "extra"),
        [({"x-openclaw-session-key": "chat-A"}, {}), ({}, {"user": "ada"})],
        ids=["session-key-header", "user"],
    )
    async def test_a_task_its_header_declares_stays_out_of_any_named_session(
        self, client: Client, named_by: dict[str, str], extra: dict[str, Any]
    ) -> None:
        """The connection's header templates can name the session by the chat id in
        x-openclaw-session-key too, tasks included: a declared task is no turn of it."""
        headers = {"X-OpenWebUI-Task": "title_generation", **named_by}
        response = await post(client, ask(self.CUSTOM_TITLE, **extra), headers)
        assert response.status == 200
        assert normalised(response.headers["x-openclaw-session-key"]) == (
            "agent:main:openai:<uuid>"
        )

    async def test_a_task_with_an_invalid_session_key_is_still_refused(
        self, client: Client
    ) -> None:
        headers = {"X-OpenWebUI-Task": "title_generation", "x-openclaw-session-key": "agent:"}
        response = await post(client, ask(self.CUSTOM_TITLE), headers)
        assert response.status == 400

    async def test_its_native_tool_loop_and_the_next_turn_reach_the_model_once(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        """Native function calling: Open WebUI runs the tool and asks again with the call and
        its result (utils/misc.py `convert_output_to_messages`), then resends the turn so
        in the history of the next one."""
        openai_fake.script(
            Stream(("Let me look.",), tool_calls=(UPSTREAM_CALL,)),
            Stream(("Sunny.",)),
            Stream(("Cold.",)),
        )
        client = await gateway(fake_provider(openai_fake))
        call = {
            "id": "call_up_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }  # fmt: skip
        system: ChatCompletionMessageParam = {"role": "system", "content": "You are helpful."}
        loop: list[Any] = [
            system,
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_up_1", "content": '{"sky": "sunny"}'},
        ]
        async with await sdk_for(client) as sdk:
            await webui_stream(sdk, "chat-A", loop[:2], tools=[WEATHER])
            assert await webui_stream(sdk, "chat-A", loop, tools=[WEATHER]) == "Sunny."
            next_turn = [
                *loop,
                {"role": "assistant", "content": "Sunny."},
                {"role": "user", "content": "And in Oslo?"},
            ]
            await webui_stream(sdk, "chat-A", next_turn, tools=[WEATHER])
        assert openai_fake.last.body["messages"] == next_turn
        stored = await stored_messages(client, "agent:main:openai-chat:chat-a")
        assert [(m.role, m.context_start) for m in stored] == [
            ("user", False),
            ("assistant", False),
            ("toolResult", False),
            ("assistant", False),
            ("user", False),
            ("assistant", False),
        ]

    async def test_a_question_wrapped_in_the_rag_prompt_starts_the_chat(
        self, client: Client
    ) -> None:
        # Open WebUI's DEFAULT_RAG_TEMPLATE (backend/open_webui/config.py), abridged: with
        # RAG_SYSTEM_CONTEXT off it is put before the user's question.
        rag = (
            "### Task:\nRespond to the user query using the provided context.\n"
            '<context>\n<source id="1">notes</source>\n</context>\n\n'
            "<user_query>\nQ1\n</user_query>\nQ1"
        )
        response = await post(client, ask(rag), webui_headers("chat-A"))
        assert response.headers["x-openclaw-session-key"] == "agent:main:openai-chat:chat-a"

    @pytest.mark.parametrize("header", ["X-OpenWebUI-Chat-Id", "x-openclaw-session-key"])
    async def test_a_chat_id_placeholder_left_unfilled_is_refused(
        self, client: Client, header: str
    ) -> None:
        """An Open WebUI older than `{{CHAT_ID}}` sends its connection's header template as
        it is: every chat of every user would be one session."""
        response = await post(client, ask("hi"), {header: "{{CHAT_ID}}"})
        assert response.status == 400
        assert (await response.json())["error"]["message"] == (
            f"Invalid `{header.lower()}`: a template placeholder left unfilled."
        )

    async def test_the_session_key_header_wins(self, client: Client) -> None:
        headers = {**webui_headers("chat-A"), "x-openclaw-session-key": "mine"}
        response = await post(client, ask("hi"), headers)
        assert response.headers["x-openclaw-session-key"] == "agent:main:mine"

    async def test_headers_not_listed_in_the_config_are_ignored(self, gateway: MakeClient) -> None:
        settings = {"gateway": {"http": {"endpoints": {"chatCompletions": {"sessionHeaders": []}}}}}
        client = await gateway(settings)
        response = await post(client, ask("hi"), webui_headers("chat-A"))
        assert normalised(response.headers["x-openclaw-session-key"]) == (
            "agent:main:openai:<uuid>"
        )


class TestAnEarlierMessageChanged:
    """The session's last reply is in the resent chat, but the chat before it is not what the
    session holds: the client's chat is what the model is given."""

    async def turns(
        self, gateway: MakeClient, upstream: FakeOpenAI, last: list[Any]
    ) -> tuple[dict[str, Any], list[Any]]:
        upstream.script(Stream(("A1",)), Stream(("A2",)), Stream(("A3",)), Stream(("A4",)))
        client = await gateway(fake_provider(upstream))
        headers = {"x-openclaw-session-key": "chat"}
        chat: list[Any] = []
        async with await sdk_for(client) as sdk:
            for question in ("Q1", "Q2", "Q3"):
                chat.append({"role": "user", "content": question})
                reply = await sdk.chat.completions.create(
                    model="openclaw", messages=chat, extra_headers=headers
                )
                chat.append({"role": "assistant", "content": reply.choices[0].message.content})
            await sdk.chat.completions.create(
                model="openclaw", messages=last, extra_headers=headers
            )
        stored = await stored_messages(client, "agent:main:chat")
        return upstream.last.body, [(m.role, m.text) for m in stored]

    async def test_a_deleted_turn_is_not_given_to_the_model(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        chat = [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q3"},
            {"role": "assistant", "content": "A3"},
            {"role": "user", "content": "Q4"},
        ]
        sent, _ = await self.turns(gateway, openai_fake, chat)
        assert sent["messages"] == chat

    async def test_an_edited_reply_is_given_to_the_model_as_edited(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        chat = [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1, corrected"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
            {"role": "user", "content": "Q3"},
            {"role": "assistant", "content": "A3"},
            {"role": "user", "content": "Q4"},
        ]
        sent, stored = await self.turns(gateway, openai_fake, chat)
        assert sent["messages"] == chat
        # Stored whole, as a new start: the next turn continues from it.
        assert stored[6:] == [(m["role"], m["content"]) for m in chat] + [("assistant", "A4")]

    async def test_a_client_that_sends_its_last_turns_only_continues_the_session(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        chat = [
            {"role": "assistant", "content": "A2"},
            {"role": "user", "content": "Q3"},
            {"role": "assistant", "content": "A3"},
            {"role": "user", "content": "Q4"},
        ]
        sent, stored = await self.turns(gateway, openai_fake, chat)
        assert [m["content"] for m in sent["messages"]] == [
            "Q1", "A1", "Q2", "A2", "Q3", "A3", "Q4",
        ]  # fmt: skip
        assert stored == [
            ("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2"),
            ("user", "Q3"), ("assistant", "A3"), ("user", "Q4"), ("assistant", "A4"),
        ]  # fmt: skip


# -- the model header -------------------------------------------------------------------------


def two_models(upstream: FakeOpenAI) -> dict[str, Any]:
    settings = fake_provider(upstream, models=["fake/other-model"])
    settings["models"]["providers"]["fake"]["models"].append({"id": "other-model"})
    return settings


class TestModelHeader:
    async def test_an_allowed_model_runs_the_turn(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(two_models(openai_fake))
        response = await post(client, ask("hi"), {"x-openclaw-model": "fake/other-model"})
        assert response.status == 200
        assert openai_fake.last.body["model"] == "other-model"
        assert response.headers["x-openclaw-model-used"] == "fake/other-model"

    async def test_a_stream_names_the_model_in_its_headers(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(two_models(openai_fake))
        response = await post(
            client, ask("hi", stream=True), {"x-openclaw-model": "fake/other-model"}
        )
        await response.read()
        assert response.headers["x-openclaw-model-used"] == "fake/other-model"

    async def test_without_the_header_the_agents_model(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(two_models(openai_fake))
        response = await post(client, ask("hi"))
        assert response.headers["x-openclaw-model-used"] == "fake/fake-model"

    async def test_a_model_outside_the_allow_list_is_refused(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(two_models(openai_fake))
        response = await post(client, ask("hi"), {"x-openclaw-model": "fake/third"})
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "model_not_allowed"
        assert openai_fake.requests == []

    async def test_unknown_models_can_run_the_default_agent(self, gateway: MakeClient) -> None:
        settings = {
            "gateway": {
                "http": {"endpoints": {"chatCompletions": {"unknownModel": "default-agent"}}}
            }
        }
        client = await gateway(settings)
        reply = await (await post(client, {**ask("hi"), "model": "gpt-4o"})).json()
        assert (reply["model"], reply["choices"][0]["message"]["content"]) == (
            "gpt-4o",
            "[turn 1] hi",
        )


class TestReadme:
    async def test_the_tool_example_runs_against_the_echo_agent(self, client: Client) -> None:
        readme = (Path(__file__).parents[2] / "README.md").read_text()
        block = readme.split("### Tools", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
        code = block.replace("http://127.0.0.1:18789/v1", str(client.server.make_url("/v1")))
        code = code.replace("YOUR_TOKEN", TOKEN)
        printed: list[tuple[Any, ...]] = []
        # The example uses the synchronous client: it runs in a thread, the gateway here.
        await asyncio.to_thread(exec, code, {"print": lambda *a: printed.append(a)})
        assert printed == [("[turn 1] get_weather: sunny in Paris",)]


FILE_PART = {"type": "file", "file": {"file_id": "file-1"}}


class TestResultsWithParts:
    """A tool result's `content` as a list of parts gives its text as any message's does
    (http-openai.md §4.3): its `text` parts, joined with a line break; parts of other types
    contribute nothing (images: TestResultsWithImages)."""

    @pytest.mark.parametrize(
        ("content", "text"),
        [
            ([{"type": "text", "text": "Sunny,"}, FILE_PART, {"type": "text", "text": "22 C"}],
             "Sunny,\n22 C"),
            ([{"type": "input_text", "text": "Sunny"}], "Sunny"),
            ([FILE_PART], ""),
        ],
    )  # fmt: skip
    async def test_the_text_parts_reach_the_model_and_its_next_turns(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, content: Any, text: str
    ) -> None:
        openai_fake.script(
            Stream((), tool_calls=(UPSTREAM_CALL,)), Stream(("Sunny.",)), Stream(("Hi.",))
        )
        client = await gateway(fake_provider(openai_fake))
        asked = await post(
            client, ask("What is the weather in Paris?", user="una", tools=[WEATHER])
        )
        assert asked.status == 200
        result = {**OPENAI_SECOND_REQUEST[2], "content": content}
        messages = [*OPENAI_SECOND_REQUEST[:2], result]
        body = {"model": "openclaw", "user": "una", "messages": messages, "tools": [WEATHER]}
        assert (await post(client, body)).status == 200
        sent = {**OPENAI_SECOND_REQUEST[2], "content": text}
        assert openai_fake.requests[1].body["messages"] == [*OPENAI_SECOND_REQUEST[:2], sent]
        assert (await post(client, ask("Hello!", user="una"))).status == 200
        assert openai_fake.requests[2].body["messages"][2] == sent


# A 1x1 PNG, as a tool result's image_url part and as Anthropic's image block of it.
RESULT_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="
)
RESULT_PART = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{RESULT_PNG}"}}
RESULT_BLOCK = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": RESULT_PNG},
}


class TestResultsWithImages:
    """The images of the tool results being answered (a screenshot, a chart) reach Anthropic
    in its `tool_result` blocks, as base64 image blocks; they are held to the rules and
    limits of a user message's images (http-openai.md §4.4: base64 data URIs, `maxImageParts`
    and the byte limits counted with the last user message's), and, as those, not stored
    nor replayed on later turns."""

    PART = RESULT_PART
    BLOCK = RESULT_BLOCK

    @staticmethod
    def body(content: Any, user: str | None = None) -> dict[str, Any]:
        result = {**OPENAI_SECOND_REQUEST[2], "content": content}
        body = {"model": "openclaw", "messages": [*OPENAI_SECOND_REQUEST[:2], result],
                "tools": [WEATHER]}  # fmt: skip
        return body if user is None else {**body, "user": user}

    @pytest.mark.parametrize(
        ("content", "blocks"),
        [
            ([{"type": "text", "text": "Sunny"}, PART], [{"type": "text", "text": "Sunny"}, BLOCK]),
            ([PART], [BLOCK]),
            ([PART, {"type": "text", "text": "Two"}, PART],
             [{"type": "text", "text": "Two"}, BLOCK, BLOCK]),
        ],
    )  # fmt: skip
    async def test_anthropic_gets_them_in_the_tool_result(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic, content: Any, blocks: Any
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        assert (await post(client, self.body(content))).status == 200
        assert anthropic_fake.requests[0].body["messages"][2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_up_1", "content": blocks}],
        }

    @pytest.mark.parametrize(
        ("content", "text"),
        [([{"type": "text", "text": "Sunny"}, PART, PART], "Sunny"),
         ([PART], "(see attached image)")],
    )  # fmt: skip
    async def test_an_openai_compatible_upstream_gets_them_in_a_user_message_after(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, content: Any, text: str
    ) -> None:
        # OpenAI's tool messages carry text alone: the images follow the results, in a user
        # message, as OpenClaw sends them; an image-only result says where its image is.
        client = await gateway(fake_provider(openai_fake))
        assert (await post(client, self.body(content))).status == 200
        images = [part for part in content if part["type"] == "image_url"]
        assert openai_fake.requests[0].body["messages"] == [
            *OPENAI_SECOND_REQUEST[:2],
            {**OPENAI_SECOND_REQUEST[2], "content": text},
            {"role": "user", "content": [
                {"type": "text", "text": "Attached image(s) from tool result:"}, *images]},
        ]  # fmt: skip

    async def test_later_turns_get_the_result_without_them(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        content = [{"type": "text", "text": "Sunny"}, self.PART]
        assert (await post(client, self.body(content, user="ida"))).status == 200
        assert (await post(client, ask("Thanks!", user="ida"))).status == 200
        assert anthropic_fake.requests[1].body["messages"][2:] == [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_up_1", "content": "Sunny"}
                ],
            },
            {"role": "assistant", "content": "Hello world"},
            {"role": "user", "content": "Thanks!"},
        ]

    @pytest.mark.parametrize(
        "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
    )
    async def test_later_turns_get_a_result_of_images_alone_as_a_placeholder(
        self,
        gateway: MakeClient,
        anthropic_fake: FakeAnthropic,
        request: pytest.FixtureRequest,
        backend: str,
    ) -> None:
        # Its images are not stored: the result is not replayed empty, it says it had them.
        settings = anthropic_agent(anthropic_fake)
        if backend == "postgres":
            store = {"backend": "postgres", "url": request.getfixturevalue("pg_url")}
            settings = merged(settings, {"store": store})
        client = await gateway(settings)
        assert (await post(client, self.body([self.PART, self.PART], user="ida"))).status == 200
        assert (await post(client, ask("Thanks!", user="ida"))).status == 200
        assert anthropic_fake.requests[1].body["messages"][2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_up_1",
                         "content": TOOL_IMAGE_ONLY_TEXT}],
        }  # fmt: skip
        stored = await stored_messages(client, "agent:main:openai-user:ida")
        assert stored[2].role == "toolResult"
        assert stored[2].images == {"count": 2, "mimeTypes": ["image/png", "image/png"]}
        assert stored[2].content == [{"type": "text", "text": ""}]

    async def test_a_result_of_images_alone_asked_again_after_a_failure_is_given_once(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        anthropic_fake.script(Status(500), Stream(("Sunny.",)))
        client = await gateway(anthropic_agent(anthropic_fake))
        assert (await post(client, self.body([self.PART], user="ida"))).status == 502
        assert (await post(client, self.body([self.PART], user="ida"))).status == 200
        assert anthropic_fake.requests[-1].body["messages"][2:] == [{
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_up_1",
                         "content": [self.BLOCK]}],
        }]  # fmt: skip
        stored = await stored_messages(client, "agent:main:openai-user:ida")
        # The session continues: the turn asked again adds its result and the reply.
        assert [(m.role, m.context_start) for m in stored[4:]] == [
            ("toolResult", False),
            ("assistant", False),
        ]

    async def test_an_openai_compatible_upstream_gets_the_placeholder_on_later_turns(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(fake_provider(openai_fake))
        assert (await post(client, self.body([self.PART], user="ida"))).status == 200
        assert (await post(client, ask("Thanks!", user="ida"))).status == 200
        assert openai_fake.requests[1].body["messages"][2] == {
            **OPENAI_SECOND_REQUEST[2],
            "content": TOOL_IMAGE_ONLY_TEXT,
        }

    async def test_a_model_that_cannot_take_them_is_skipped_for_the_next(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic, openai_fake: FakeOpenAI
    ) -> None:
        # Anthropic takes no HEIC; the OpenAI-compatible fallback (its rules unknown) may.
        settings = anthropic_agent(anthropic_fake, "fake/fake-model")
        settings["models"]["providers"]["fake"] = fake_provider_entry(openai_fake)
        heic = {"type": "image_url", "image_url": {"url": "data:image/heic;base64,AAAA"}}
        client = await gateway(settings)
        assert (await post(client, self.body([heic]))).status == 200
        assert anthropic_fake.requests == [] and len(openai_fake.requests) == 1

    async def test_an_earlier_results_images_are_not_given(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        remote = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        body = self.body([{"type": "text", "text": "Sunny"}, self.PART, remote])
        body["messages"] += [{"role": "assistant", "content": "Sunny."},
                             {"role": "user", "content": "Thanks!"}]  # fmt: skip
        assert (await post(client, body)).status == 200
        assert anthropic_fake.requests[0].body["messages"][2]["content"][0]["content"] == "Sunny"

    @pytest.mark.parametrize(
        "parts",
        [
            [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
            [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
            [{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}],
        ],
    )
    async def test_one_a_user_message_could_not_carry_is_a_400(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic, parts: Any
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, self.body([{"type": "text", "text": "Sunny"}, *parts]))
        assert response.status == 400
        assert (await response.json())["error"] == {
            "message": "Invalid image_url content in `messages`.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
        assert anthropic_fake.requests == []

    async def test_they_count_with_the_users_images(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        body = self.body([self.PART] * 4)
        body["messages"][0] = {"role": "user", "content": [{"type": "text", "text": "Paris?"},
                                                           *[self.PART] * 5]}  # fmt: skip
        response = await post(client, body)
        assert response.status == 400
        assert anthropic_fake.requests == []

    async def test_one_anthropic_cannot_read_is_a_400_before_the_call(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        # As a user message's: a type Anthropic refuses is found before the upstream is asked.
        heic = {"type": "image_url", "image_url": {"url": "data:image/heic;base64,AAAA"}}
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, self.body([heic]))
        assert response.status == 400
        assert (await response.json())["error"]["message"] == (
            "Invalid image_url content in `messages`."
        )
        assert anthropic_fake.requests == []


class TestReasoningBack:
    """DeepSeek's and Kimi's thinking models refuse a tool loop whose message with the calls
    lacks their reasoning: they get it back, from the session or from the client."""

    @staticmethod
    def settings(upstream: FakeOpenAI) -> dict[str, Any]:
        settings = fake_provider(upstream, model="fake/deepseek-v4-flash")
        settings["models"]["providers"]["fake"]["models"].append({"id": "deepseek-v4-flash"})
        return settings

    async def test_a_named_session_gives_the_stored_reasoning_back(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(
            Stream((), reasoning=("I should look.",), tool_calls=(UPSTREAM_CALL,)),
            Stream(("Sunny.",)),
        )
        client = await gateway(self.settings(openai_fake))
        first = ask("What is the weather in Paris?", user="una", tools=[WEATHER])
        assert (await post(client, first)).status == 200
        body = {"model": "openclaw", "user": "una", "messages": OPENAI_SECOND_REQUEST,
                "tools": [WEATHER]}  # fmt: skip
        assert (await post(client, body)).status == 200
        sent = openai_fake.requests[1].body["messages"]
        assert sent[1]["reasoning_content"] == "I should look."

    async def test_a_stateless_request_gives_the_reasoning_the_client_sent_back(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(self.settings(openai_fake))
        assistant = {**OPENAI_SECOND_REQUEST[1], "reasoning_content": "I should look."}
        messages = [OPENAI_SECOND_REQUEST[0], assistant, OPENAI_SECOND_REQUEST[2]]
        body = {"model": "openclaw", "messages": messages, "tools": [WEATHER]}
        assert (await post(client, body)).status == 200
        assert openai_fake.requests[0].body["messages"][1] == assistant


class TestUpstreamCallNames:
    """A call the upstream names as no client may (agents.providers.base.TOOL_NAME_RE) fails
    the turn as any malformed reply does: 502 in the error shape, the name relayed nowhere."""

    BAD_NAME = "get weather\n" + "x" * 100_000

    async def test_json_gets_502(self, gateway: MakeClient, openai_fake: FakeOpenAI) -> None:
        openai_fake.script(Stream((), tool_calls=(FakeToolCall("call_1", self.BAD_NAME),)))
        client = await gateway(fake_provider(openai_fake))
        response = await post(client, ask("Weather?", tools=[WEATHER]))
        assert response.status == 502
        assert await response.json() == {
            "error": {
                "message": "upstream provider error",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        }

    async def test_a_stream_ends_in_an_error_event_without_the_name(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        openai_fake.script(Stream((), tool_calls=(FakeToolCall("call_1", self.BAD_NAME),)))
        client = await gateway(fake_provider(openai_fake))
        response = await post(client, ask("Weather?", tools=[WEATHER], stream=True))
        text = await response.text()
        assert "get weather" not in text and "tool_calls" not in text
        assert '"message":"upstream provider error"' in text


def anthropic_streamed_call(*pieces: str) -> bytes:
    """An Anthropic stream of one get_weather call whose input comes in `pieces`."""
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    sent: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            "type": "message", "role": "assistant", "content": [],
            "usage": {"input_tokens": 3}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": use}),
        *(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "input_json_delta", "partial_json": p}})
          for p in pieces),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return "".join(f"event: {name}\ndata: {json.dumps(obj)}\n\n" for name, obj in sent).encode()


class TestAnthropicStreamedInput:
    """A call's input streamed by Anthropic in pieces that make no JSON object fails the turn
    as any malformed reply does: a stream ends in the error event instead of its finish chunk
    (its pieces were relayed, and the call ended as arguments no client could read)."""

    async def test_a_stream_ends_in_the_error_event(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        anthropic_fake.script(Raw((anthropic_streamed_call('{"city": ', '"Paris"'),)))
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, ask("Weather?", tools=[WEATHER], stream=True))
        events = sse_events(await response.text())
        assert events[-2:] == [
            '{"error":{"message":"upstream provider error","type":"api_error","param":null,'
            '"code":null}}',
            "[DONE]",
        ]
        assert not any('"finish_reason":"tool_calls"' in event for event in events)

    async def test_json_gets_502(self, gateway: MakeClient, anthropic_fake: FakeAnthropic) -> None:
        anthropic_fake.script(Raw((anthropic_streamed_call('["Paris"]'),)))
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, ask("Weather?", tools=[WEATHER]))
        assert response.status == 502

    async def test_pieces_that_make_an_object_are_a_call(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        anthropic_fake.script(Raw((anthropic_streamed_call('{"city": ', '"Paris"}'),)))
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, ask("Weather?", tools=[WEATHER]))
        call = (await response.json())["choices"][0]["message"]["tool_calls"][0]
        assert call["function"]["arguments"] == '{"city": "Paris"}'


class TestReasoningEffort:
    """`reasoning_effort` reaches an OpenAI-compatible upstream as it is, and Anthropic as
    extended thinking with OpenClaw's budget for that level; a wrong one is a 400."""

    async def test_an_openai_compatible_upstream_gets_it(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(fake_provider(openai_fake))
        assert (await post(client, ask("Think.", reasoning_effort="high"))).status == 200
        assert openai_fake.last.body["reasoning_effort"] == "high"

    async def test_anthropic_gets_extended_thinking(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, ask("Think.", reasoning_effort="medium", stream=True))
        assert response.status == 200
        await response.read()
        body = anthropic_fake.last.body
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
        assert "reasoning_effort" not in body

    @pytest.mark.parametrize(
        ("effort", "message"),
        [
            ("maximum", "Invalid reasoning_effort: reasoning_effort must be none, minimal, low,"
                        " medium, high, or xhigh"),
            (1, "reasoning_effort: Expected string, received number"),
        ],
    )  # fmt: skip
    async def test_a_wrong_one_is_refused_before_the_upstream(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, effort: Any, message: str
    ) -> None:
        client = await gateway(fake_provider(openai_fake))
        response = await post(client, ask("Think.", reasoning_effort=effort))
        assert response.status == 400
        assert await response.json() == {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "reasoning_effort",
                "code": None,
            }
        }
        assert openai_fake.requests == []


class TestVerbosity:
    """`verbosity` reaches an OpenAI-compatible upstream as it is (GPT-5 takes it there);
    Anthropic, which has no such field and refuses unknown ones, is not sent it."""

    @pytest.mark.parametrize("verbosity", ["low", "medium", "high"])
    async def test_an_openai_compatible_upstream_gets_it(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, verbosity: str
    ) -> None:
        client = await gateway(fake_provider(openai_fake))
        assert (await post(client, ask("Say.", verbosity=verbosity))).status == 200
        assert openai_fake.last.body["verbosity"] == verbosity

    async def test_anthropic_is_not_sent_it(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        assert (await post(client, ask("Say.", verbosity="low"))).status == 200
        assert "verbosity" not in anthropic_fake.last.body


WEATHER_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "weather", "schema": {"type": "object"}, "strict": True},
}
RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
FORMAT_REFUSAL = {
    "message": "A json_schema `response_format` is not supported by Anthropic models"
    " (claude/fake-model).",
    "type": "invalid_request_error",
    "param": "response_format",
    "code": "unsupported_parameter",
}


class TestStructuredOutputOnAnthropic:
    """The Messages API takes no `response_format`, and its structured outputs are for some
    models only: a `json_schema` format no model of the chain can be given is a 400 rather
    than an answer that ignores the schema; a chain with a model that can skips to it."""

    async def test_a_json_schema_is_refused_before_the_upstream(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, ask("Weather?", response_format=WEATHER_FORMAT))
        assert response.status == 400
        assert await response.json() == {"error": FORMAT_REFUSAL}
        assert anthropic_fake.requests == []

    async def test_a_responses_json_schema_text_format_is_refused(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        client = await gateway(merged(anthropic_agent(anthropic_fake), RESPONSES_ON))
        text_format = {"type": "json_schema", "name": "weather", "schema": {"type": "object"}}
        body = {"model": "openclaw", "input": "Weather?", "text": {"format": text_format}}
        response = await client.post("/v1/responses", json=body, headers=AUTH)
        assert response.status == 400
        assert await response.json() == {"error": {
            **FORMAT_REFUSAL,
            "message": "A json_schema `text.format` is not supported by Anthropic models"
            " (claude/fake-model).",
            "param": "text",
        }}  # fmt: skip
        assert anthropic_fake.requests == []

    @pytest.mark.parametrize("kind", ["text", "json_object"])
    async def test_other_formats_go_ahead(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic, kind: str
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_fake))
        response = await post(client, ask("Weather?", response_format={"type": kind}))
        assert response.status == 200
        assert "response_format" not in anthropic_fake.last.body

    async def test_a_chain_with_a_model_that_takes_it_skips_to_that_model(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic, openai_fake: FakeOpenAI
    ) -> None:
        settings = anthropic_agent(anthropic_fake, "fake/fake-model")
        settings["models"]["providers"]["fake"] = fake_provider_entry(openai_fake)
        client = await gateway(settings)
        response = await post(client, ask("Weather?", response_format=WEATHER_FORMAT))
        assert response.status == 200
        assert anthropic_fake.requests == []
        assert openai_fake.last.body["response_format"] == WEATHER_FORMAT


class TestAudioOutput:
    async def test_modalities_asking_for_audio_is_refused_before_the_upstream(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        client = await gateway(fake_provider(openai_fake))
        response = await post(client, ask("Sing.", modalities=["text", "audio"]))
        assert response.status == 400
        assert await response.json() == {
            "error": {
                "message": "Audio output is not supported: `modalities` may only ask for text.",
                "type": "invalid_request_error",
                "param": "modalities",
                "code": "unsupported_parameter",
            }
        }
        assert openai_fake.requests == []


class TestLargeJSONAnswersHoldUpNoOtherClient:
    """An upstream that answers a turn with one JSON document (it ignored `stream`) of
    megabytes: `GET /healthz`, sent once the gateway began reading it as a reply, is
    answered before the turn, as the event loop is not held while the answer is parsed."""

    async def test_a_json_answer_of_4_mib(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        client = await gateway(fake_provider(openai_fake))
        openai_fake.script(JSONAnswer("x" * (4 * 1024 * 1024)))
        loop = asyncio.get_running_loop()
        reading, answered = asyncio.Event(), threading.Event()
        read_as_a_reply = openai_completions.json_answer
        held: list[bool] = []

        def held_until_answered(answer: Any, **kw: Any) -> Any:
            loop.call_soon_threadsafe(reading.set)
            # The bound is a guard only: on the event loop's thread, nothing would set it.
            held.append(answered.wait(10))
            return read_as_a_reply(answer, **kw)

        monkeypatch.setattr(openai_completions, "json_answer", held_until_answered)
        with capture_logs() as logs:
            turn = asyncio.create_task(post(client, ask("Hello")))
            await reading.wait()
            assert (await client.get("/healthz")).status == 200
            answered.set()
            assert (await turn).status == 200
        assert held == [True]
        assert [e["path"] for e in logs if e["event"] == "http_request"] == ["/healthz", CHAT]
