"""The real `openai` SDK's `embeddings.create` against a gateway on a real socket, in front of
a fake OpenAI-compatible upstream (a real HTTP server) that computes deterministic vectors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.support.http_client import TOKEN, MakeClient, upstream_settings
from tests.support.upstreams import FakeOpenAI, Status, fake_embedding


@pytest.fixture
async def sdk(gateway: MakeClient, upstream: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    client = await gateway(upstream_settings(upstream))
    base_url = str(client.server.make_url("/v1"))
    async with AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0) as sdk:
        yield sdk


class TestEmbeddingsCreate:
    async def test_float(self, sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
        result = await sdk.embeddings.create(
            model="openclaw", input="hello world", encoding_format="float"
        )
        assert upstream.last.body["encoding_format"] == "float"
        assert result.model == "openclaw"
        assert [(e.index, e.embedding) for e in result.data] == [(0, fake_embedding("hello world"))]
        assert (result.usage.prompt_tokens, result.usage.total_tokens) == (2, 2)

    async def test_base64_as_the_sdk_asks_by_default(
        self, sdk: AsyncOpenAI, upstream: FakeOpenAI
    ) -> None:
        result = await sdk.embeddings.create(model="openclaw", input="hello")
        assert upstream.last.body["encoding_format"] == "base64"
        assert result.data[0].embedding == fake_embedding("hello")

    async def test_base64_from_an_upstream_that_makes_only_floats(
        self, sdk: AsyncOpenAI, upstream: FakeOpenAI
    ) -> None:
        upstream.refuses_base64 = True
        for text in ("hello", "world"):
            result = await sdk.embeddings.create(model="openclaw", input=text)
            assert result.data[0].embedding == fake_embedding(text)
        # Asked once, then floats: the gateway writes the float32 base64 itself.
        asked = [request.body["encoding_format"] for request in upstream.requests]
        assert asked == ["base64", "float", "float"]

    async def test_a_list_of_inputs_in_order(self, sdk: AsyncOpenAI) -> None:
        texts = ["one", "two", "three"]
        result = await sdk.embeddings.create(model="openclaw", input=texts)
        assert [e.index for e in result.data] == [0, 1, 2]
        assert [e.embedding for e in result.data] == [fake_embedding(t) for t in texts]

    async def test_dimensions(self, sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
        result = await sdk.embeddings.create(model="openclaw", input="x", dimensions=3)
        assert upstream.last.body["dimensions"] == 3
        assert result.data[0].embedding == fake_embedding("x", 3)

    async def test_a_rate_limited_upstream_raises_rate_limit_error(
        self, sdk: AsyncOpenAI, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(429, {"Retry-After": "3"}))
        with pytest.raises(openai.RateLimitError) as caught:
            await sdk.embeddings.create(model="openclaw", input="x")
        assert caught.value.response.headers["retry-after"] == "3"

    async def test_a_bad_input_raises_bad_request(self, sdk: AsyncOpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.embeddings.create(model="openclaw", input=[])
        assert caught.value.body == {
            "message": "`input` must not be empty.",
            "type": "invalid_request_error",
            "param": "input",
            "code": None,
        }

    @pytest.mark.parametrize("tokens", [[9906, 1917], [[9906, 1917], [15339]]])
    async def test_token_arrays_are_refused_saying_how_to_send_text(
        self, sdk: AsyncOpenAI, upstream: FakeOpenAI, tokens: Any
    ) -> None:
        """What LangChain's `OpenAIEmbeddings` sends by default (tiktoken's tokens): the
        model behind the gateway may read other tokens, so text is asked for, by name."""
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.embeddings.create(model="openclaw", input=tokens)
        assert caught.value.body == {
            "message": "`input` must be text: token arrays are not taken, as their tokens"
            " depend on the model (LangChain's OpenAIEmbeddings sends text with"
            " check_embedding_ctx_length=False).",
            "type": "invalid_request_error",
            "param": "input",
            "code": None,
        }
        assert upstream.requests == []
