"""The real `openai` SDK against a gateway on a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel

from tests.support.http_client import TOKEN, MakeClient, fake_provider
from tests.support.upstreams import FakeOpenAI, Raw, Status, Stream

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def base_url(gateway: MakeClient) -> str:
    client = await gateway({"agents": {"list": [{"id": "main", "default": True}, {"id": "beta"}]}})
    return str(client.server.make_url("/v1"))


@pytest.fixture
async def sdk(base_url: str) -> AsyncIterator[AsyncOpenAI]:
    # No retries: a test sees the gateway's first answer.
    async with AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0) as client:
        yield client


class TestChatCompletions:
    async def test_create(self, sdk: AsyncOpenAI) -> None:
        completion = await sdk.chat.completions.create(model="openclaw", messages=HELLO)
        assert completion.id.startswith("chatcmpl-") and len(completion.id) == 41
        assert completion.model == "openclaw"
        choice = completion.choices[0]
        assert (choice.message.role, choice.message.content) == (
            "assistant",
            "[turn 1] hello there",
        )
        assert choice.finish_reason == "stop"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 4)

    async def test_create_streamed(self, sdk: AsyncOpenAI) -> None:
        stream = await sdk.chat.completions.create(model="openclaw", messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "[turn 1] hello there"
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
        assert all(c.usage is None for c in chunks)

    async def test_create_streamed_with_usage(self, sdk: AsyncOpenAI) -> None:
        stream = await sdk.chat.completions.create(
            model="openclaw/beta",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert last.usage.total_tokens == 6

    async def test_content_as_a_list_of_parts(self, sdk: AsyncOpenAI) -> None:
        completion = await sdk.chat.completions.create(
            model="openclaw",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
                }
            ],
        )
        assert completion.choices[0].message.content == "[turn 1] one\ntwo"

    async def test_the_user_field_keeps_a_session(self, sdk: AsyncOpenAI) -> None:
        for turn in (1, 2):
            completion = await sdk.chat.completions.create(
                model="openclaw", messages=HELLO, user="Alice"
            )
            assert completion.choices[0].message.content == f"[turn {turn}] hello there"

    async def test_a_wrong_token_raises_authentication_error(self, base_url: str) -> None:
        async with AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as exc:
                await client.chat.completions.create(model="openclaw", messages=HELLO)
        assert exc.value.status_code == 401
        assert exc.value.code == "invalid_api_key"

    async def test_a_bad_request_raises_bad_request_error(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as exc:
            await sdk.chat.completions.create(model="openclaw", messages=HELLO, temperature=5)
        assert exc.value.param == "temperature"
        assert "`temperature` must be between 0 and 2." in exc.value.message

    async def test_n_above_1_raises_bad_request_error(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as exc:
            await sdk.chat.completions.create(model="openclaw", messages=HELLO, n=2)
        assert exc.value.code == "unsupported_parameter"

    async def test_the_request_id_is_exposed(self, sdk: AsyncOpenAI) -> None:
        raw = await sdk.chat.completions.with_raw_response.create(model="openclaw", messages=HELLO)
        assert raw.request_id is not None and len(raw.request_id) == 32


class TestModels:
    async def test_list_has_every_agent(self, sdk: AsyncOpenAI) -> None:
        ids = [model.id async for model in sdk.models.list()]
        assert ids == ["openclaw", "openclaw/default", "openclaw/main", "openclaw/beta"]

    async def test_retrieve(self, sdk: AsyncOpenAI) -> None:
        model = await sdk.models.retrieve("openclaw/beta")
        assert (model.id, model.owned_by) == ("openclaw/beta", "openclaw")

    async def test_retrieve_an_unknown_id_raises_not_found(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.NotFoundError) as exc:
            await sdk.models.retrieve("gpt-4o")
        assert exc.value.code == "model_not_found"


class TestReasoningTokens:
    @pytest.mark.parametrize("stream", [False, True])
    async def test_the_reasoning_tokens_an_upstream_reports_are_in_usage(
        self, gateway: MakeClient, upstream: FakeOpenAI, stream: bool
    ) -> None:
        """OpenAI's `completion_tokens_details.reasoning_tokens` goes on to the client, as
        `/v1/responses` gives it; an answer without reasoning tokens has no details."""
        usage = {
            "prompt_tokens": 5,
            "completion_tokens": 40,
            "total_tokens": 45,
            "completion_tokens_details": {"reasoning_tokens": 32},
        }
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "Hi."}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": usage},
        ]
        body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
        upstream.script(Raw((body + b"data: [DONE]\n\n",)), Stream(("plain",)))
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            found = []
            for _ in range(2):
                if stream:
                    chunked = await sdk.chat.completions.create(
                        model="openclaw", messages=HELLO, stream=True,
                        stream_options={"include_usage": True},
                    )  # fmt: skip
                    used = [c.usage async for c in chunked if c.usage is not None][-1]
                else:
                    reply = await sdk.chat.completions.create(model="openclaw", messages=HELLO)
                    assert reply.usage is not None
                    used = reply.usage
                details = used.completion_tokens_details
                found.append(None if details is None else details.reasoning_tokens)
        assert found == [32, None]


class Weather(BaseModel):
    city: str
    sunny: bool


class TestStructuredOutputs:
    """`response_format` reaches an OpenAI-compatible upstream as the SDK sent it, so the
    SDK's `.parse()` works end to end; a `json_schema` format the upstream would refuse is
    the client's 400, not an upstream error (502)."""

    async def test_parse_round_trip(self, gateway: MakeClient, upstream: FakeOpenAI) -> None:
        upstream.script(Stream(('{"city": "Oslo",', ' "sunny": false}')))
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            completion = await sdk.chat.completions.parse(
                model="openclaw", messages=HELLO, response_format=Weather
            )
        assert completion.choices[0].message.parsed == Weather(city="Oslo", sunny=False)
        sent = upstream.last.body["response_format"]
        assert sent["type"] == "json_schema"
        assert (sent["json_schema"]["name"], sent["json_schema"]["strict"]) == ("Weather", True)
        assert sent["json_schema"]["schema"]["required"] == ["city", "sunny"]

    @pytest.mark.parametrize(
        ("response_format", "message"),
        [
            ({"type": "json_schema"},
             "Invalid response_format: type json_schema needs response_format.json_schema"),
            ({"type": "json_schema", "json_schema": "Weather"},
             "response_format.json_schema: Expected object, received string"),
            ({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
             "response_format.json_schema.name: Expected string, received null"),
            ({"type": "json_schema", "json_schema": {"name": "the weather"}},
             "Invalid response_format.json_schema.name: 1 to 64 letters, digits, _ or -"),
            ({"type": "json_schema", "json_schema": {"name": "w" * 65}},
             "Invalid response_format.json_schema.name: 1 to 64 letters, digits, _ or -"),
            ({"type": "json_schema", "json_schema": {"name": "w", "schema": "object"}},
             "response_format.json_schema.schema: Expected object, received string"),
            ({"type": "json_schema", "json_schema": {"name": "w", "strict": "yes"}},
             "response_format.json_schema.strict: Expected boolean, received string"),
            ({"type": "json_schema", "json_schema": {"name": "w", "description": 1}},
             "response_format.json_schema.description: Expected string, received number"),
        ],
    )  # fmt: skip
    async def test_a_malformed_json_schema_is_refused_before_the_upstream(
        self, gateway: MakeClient, upstream: FakeOpenAI, response_format: Any, message: str
    ) -> None:
        # As OpenAI answers such a format: before the fix, the client got a 502.
        upstream.script(Status(400))
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.chat.completions.create(
                    model="openclaw", messages=HELLO, response_format=response_format
                )
        assert caught.value.body == {
            "message": message,
            "type": "invalid_request_error",
            "param": "response_format",
            "code": None,
        }
        assert upstream.requests == []


class TestFieldsReadAndIgnored:
    async def test_they_are_answered_and_not_sent_on(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Every field of the SDK's `create` that the gateway has no use for is accepted as
        the README lists it, and none reaches the upstream: an SDK's `extra_body` keys
        neither (a provider's own sampling keys are the agent's `params`)."""
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            completion = await sdk.chat.completions.create(
                model="openclaw",
                messages=HELLO,
                logprobs=True,
                top_logprobs=2,
                logit_bias={"50256": -100},
                metadata={"k": "v"},
                store=True,
                service_tier="flex",
                prompt_cache_key="cache",
                safety_identifier="someone",
                prediction={"type": "content", "content": "Hello"},
                web_search_options={"search_context_size": "low"},
                modalities=["text"],
                audio={"voice": "alloy", "format": "wav"},
                user="alice",
                extra_body={"top_k": 5, "chat_template_kwargs": {"enable_thinking": False}},
            )
        assert completion.choices[0].logprobs is None
        assert completion.choices[0].message.audio is None
        sent = upstream.last.body
        assert set(sent) == {"model", "messages", "stream", "stream_options"}

    async def test_verbosity_goes_on_and_audio_output_is_refused(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            await sdk.chat.completions.create(model="openclaw", messages=HELLO, verbosity="low")
            assert upstream.last.body["verbosity"] == "low"
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.chat.completions.create(
                    model="openclaw",
                    messages=HELLO,
                    modalities=["text", "audio"],
                    audio={"voice": "alloy", "format": "wav"},
                )
        assert caught.value.body == {
            "message": "Audio output is not supported: `modalities` may only ask for text.",
            "type": "invalid_request_error",
            "param": "modalities",
            "code": "unsupported_parameter",
        }
        assert len(upstream.requests) == 1


class TestSeed:
    @pytest.mark.parametrize("seed", [-(2**63), 2**63 - 1])
    async def test_a_64_bit_seed_goes_on(
        self, gateway: MakeClient, upstream: FakeOpenAI, seed: int
    ) -> None:
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            await sdk.chat.completions.create(model="openclaw", messages=HELLO, seed=seed)
        assert upstream.last.body["seed"] == seed

    @pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 10**30])
    async def test_one_beyond_64_bits_is_refused_before_the_upstream(
        self, gateway: MakeClient, upstream: FakeOpenAI, seed: int
    ) -> None:
        """OpenAI and vLLM take a signed 64-bit seed and refuse any other, which reached the
        client as an upstream error (502)."""
        upstream.script(Status(400))
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.chat.completions.create(model="openclaw", messages=HELLO, seed=seed)
        assert caught.value.body == {
            "message": "`seed` must be a signed 64-bit integer.",
            "type": "invalid_request_error",
            "param": "seed",
            "code": None,
        }
        assert upstream.requests == []


def function_tool(name: str) -> ChatCompletionToolParam:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


class TestAllowedTools:
    """`tool_choice` `allowed_tools` narrows the tools the model may call this turn: every
    provider is given only those (OpenAI's own models keep the rest to cache the prompt; no
    other server knows the form), under the choice's mode."""

    async def test_the_upstream_gets_only_the_allowed_tools(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            await sdk.chat.completions.create(
                model="openclaw",
                messages=HELLO,
                tools=[function_tool("a"), function_tool("b"), function_tool("c")],
                tool_choice={
                    "type": "allowed_tools",
                    "allowed_tools": {
                        "mode": "required",
                        "tools": [
                            {"type": "function", "function": {"name": "c"}},
                            {"type": "function", "function": {"name": "a"}},
                        ],
                    },
                },
            )
        sent = upstream.last.body
        assert sent["tools"] == [function_tool("a"), function_tool("c")]
        assert sent["tool_choice"] == "required"

    @pytest.mark.parametrize(
        ("allowed", "message"),
        [
            ("a", "tool_choice.allowed_tools: Expected object, received string"),
            ({"mode": "none", "tools": [{"type": "function", "function": {"name": "a"}}]},
             'Invalid `tool_choice`: allowed_tools.mode must be "auto" or "required".'),
            ({"mode": "auto", "tools": []},
             "Invalid `tool_choice`: allowed_tools.tools must list the functions by name."),
            ({"mode": "auto", "tools": [{"type": "function", "name": "a"}]},
             "Invalid `tool_choice`: allowed_tools.tools must list the functions by name."),
            ({"mode": "auto", "tools": [{"type": "function", "function": {"name": "z"}}]},
             "Invalid `tool_choice`: no function named 'z' in `tools`."),
        ],
    )  # fmt: skip
    async def test_a_wrong_one_is_refused(
        self, gateway: MakeClient, upstream: FakeOpenAI, allowed: Any, message: str
    ) -> None:
        client = await gateway(fake_provider(upstream))
        url = str(client.server.make_url("/v1"))
        async with AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0) as sdk:
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk.chat.completions.create(
                    model="openclaw",
                    messages=HELLO,
                    tools=[function_tool("a")],
                    tool_choice={"type": "allowed_tools", "allowed_tools": allowed},
                )
        assert caught.value.body == {
            "message": message,
            "type": "invalid_request_error",
            "param": "tool_choice",
            "code": None,
        }
        assert upstream.requests == []
