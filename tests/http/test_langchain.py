"""LangChain's `ChatOpenAI(...).bind_tools([...])` and its tool-calling agent loop against
clawgate: the echo agent, and a fake OpenAI-compatible upstream that calls the tool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.support.http_client import TOKEN, Client, MakeClient, fake_provider
from tests.support.upstreams import FakeOpenAI, FakeToolCall, Raw, Stream, openai_sse


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


TOOLS = {"get_weather": get_weather}


def chat_model(client: Client, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="openclaw",
        base_url=str(client.server.make_url("/v1")),
        api_key=TOKEN,  # type: ignore[arg-type]
        max_retries=0,
        **options,
    )


async def agent_loop(llm: ChatOpenAI, question: str, *, stream: bool) -> list[BaseMessage]:
    """LangChain's tool-calling loop: invoke, run every tool call, send the results back,
    until the model answers without calling a tool."""
    model = llm.bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(4):
        if stream:
            reply: BaseMessage | None = None
            async for chunk in model.astream(messages):
                assert isinstance(chunk, AIMessageChunk)
                reply = chunk if reply is None else reply + chunk  # type: ignore[operator]
            assert reply is not None
        else:
            reply = await model.ainvoke(messages)
        assert isinstance(reply, AIMessage)
        messages.append(reply)
        if not reply.tool_calls:
            return messages
        for call in reply.tool_calls:
            messages.append(await TOOLS[call["name"]].ainvoke(call))
    raise AssertionError("the agent loop did not end")


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


class TestBindTools:
    @pytest.mark.parametrize("stream", [False, True])
    async def test_the_agent_loop_against_the_echo_agent(
        self, client: Client, stream: bool
    ) -> None:
        messages = await agent_loop(
            chat_model(client), 'call get_weather {"city": "Paris"}', stream=stream
        )
        called = messages[1]
        assert isinstance(called, AIMessage)
        assert [(c["name"], c["args"], c["id"]) for c in called.tool_calls] == [
            ("get_weather", {"city": "Paris"}, "call_echo_1_0")
        ]
        assert messages[2].content == "sunny in Paris"
        assert messages[-1].content == "[turn 1] get_weather: sunny in Paris"

    @pytest.mark.parametrize("stream", [False, True])
    async def test_the_agent_loop_against_an_upstream_model(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, stream: bool
    ) -> None:
        call = FakeToolCall("call_9", "get_weather", ('{"city"', ':"Oslo"}'))
        openai_fake.script(Stream((), tool_calls=(call,)), Stream(("Sunny in Oslo.",)))
        client = await gateway(fake_provider(openai_fake))
        messages = await agent_loop(chat_model(client), "Weather in Oslo?", stream=stream)
        assert messages[-1].content == "Sunny in Oslo."
        assert openai_fake.requests[0].body["tools"][0]["function"]["name"] == "get_weather"
        sent = openai_fake.requests[1].body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[2] == {"role": "tool", "tool_call_id": "call_9", "content": "sunny in Oslo"}


class Weather(BaseModel):
    city: str
    sunny: bool


RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}


class TestStructuredOutputOverResponses:
    """`with_structured_output` on `ChatOpenAI(use_responses_api=True)`: the schema goes
    out as `text.format`; streamed, LangChain parses the text only when the completed
    response says its format was that json_schema."""

    @pytest.mark.parametrize("streaming", [False, True])
    async def test_the_answer_is_parsed_into_the_schema(
        self, gateway: MakeClient, openai_fake: FakeOpenAI, streaming: bool
    ) -> None:
        openai_fake.script(Stream(('{"city":"Oslo",', '"sunny":true}')))
        client = await gateway({**fake_provider(openai_fake), **RESPONSES_ON})
        llm = chat_model(client, use_responses_api=True, streaming=streaming)
        model = llm.with_structured_output(Weather)
        if streaming:
            chunks = [chunk async for chunk in model.astream("Weather in Oslo?")]
            answer = chunks[-1]
        else:
            answer = await model.ainvoke("Weather in Oslo?")
        assert answer == Weather(city="Oslo", sunny=True)
        sent = openai_fake.last.body["response_format"]
        assert sent["type"] == "json_schema"
        assert sent["json_schema"]["name"] == "Weather"
        assert sent["json_schema"]["strict"] is True
        assert sent["json_schema"]["schema"]["required"] == ["city", "sunny"]


class TestParallelCallsOverResponses:
    """LangChain's stream converter numbers an item's blocks by the order items' events
    come in: an item's events after another item's began would be an orphan fragment. Two
    calls an upstream streams side by side reach it as two whole calls."""

    async def test_interleaved_calls_are_assembled_whole(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        def head(index: int, call_id: str) -> dict[str, Any]:
            return {"index": index, "id": call_id, "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}  # fmt: skip

        def args(index: int, piece: str) -> dict[str, Any]:
            return {"index": index, "function": {"arguments": piece}}

        openai_fake.script(Raw((openai_sse(
            {"tool_calls": [head(0, "call_a")]},
            {"tool_calls": [args(0, '{"city":')]},
            {"tool_calls": [head(1, "call_b")]},
            {"tool_calls": [args(1, '{"city":"Paris"}')]},
            {"tool_calls": [args(0, '"Oslo"}')]},  # late: after the next call began
        ),)))  # fmt: skip
        client = await gateway({**fake_provider(openai_fake), **RESPONSES_ON})
        llm = chat_model(client, use_responses_api=True).bind_tools([get_weather])
        merged: AIMessageChunk | None = None
        async for chunk in llm.astream("Weather in Oslo and Paris?"):
            assert isinstance(chunk, AIMessageChunk)
            merged = chunk if merged is None else merged + chunk
        assert merged is not None
        assert merged.invalid_tool_calls == []
        assert [(c["id"], c["name"], c["args"]) for c in merged.tool_calls] == [
            ("call_a", "get_weather", {"city": "Oslo"}),
            ("call_b", "get_weather", {"city": "Paris"}),
        ]


class TestStreamOrderOverResponses:
    """Items stream one after another, as OpenAI's do: reasoning that resumes after a call
    is an item of its own after the call, not a fragment of the first reasoning item
    (which LangChain would read as a block of no item)."""

    async def test_reasoning_resumed_after_a_call_is_a_block_after_it(
        self, gateway: MakeClient, openai_fake: FakeOpenAI
    ) -> None:
        call = {"index": 0, "id": "call_a", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}  # fmt: skip
        openai_fake.script(Raw((openai_sse(
            {"reasoning_content": "Oslo first."},
            {"tool_calls": [call]},
            {"reasoning_content": " Then done."},
        ),)))  # fmt: skip
        client = await gateway({**fake_provider(openai_fake), **RESPONSES_ON})
        llm = chat_model(client, use_responses_api=True).bind_tools([get_weather])
        merged: AIMessageChunk | None = None
        async for chunk in llm.astream("Weather in Oslo?"):
            assert isinstance(chunk, AIMessageChunk)
            merged = chunk if merged is None else merged + chunk
        assert merged is not None
        assert [(c["id"], c["args"]) for c in merged.tool_calls] == [("call_a", {"city": "Oslo"})]
        blocks = [block for block in merged.content if isinstance(block, dict)]
        assert [(b["type"], b.get("id", "")[:3]) for b in blocks] == [
            ("reasoning", "rs_"), ("function_call", "fc_"), ("reasoning", "rs_"),
        ]  # fmt: skip
