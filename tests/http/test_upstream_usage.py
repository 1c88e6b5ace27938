"""Usage an upstream reports in part: the count it gives is the turn's, only the other one
is estimated (§7), rather than both estimated as when it reports none."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.http_client import TOKEN, Client, MakeClient, anthropic_agent, fake_provider
from tests.support.upstreams import FakeAnthropic, FakeOpenAI, Raw

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ASK = {"model": "openclaw", "messages": [{"role": "user", "content": "count to three"}]}


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


def anthropic_sse(*objects: dict[str, Any]) -> Raw:
    body = "".join(f"event: {o['type']}\ndata: {json.dumps(o)}\n\n" for o in objects)
    return Raw((body.encode(),))


async def usage_of(client: Client) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json=ASK, headers=AUTH)
    assert response.status == 200
    usage: dict[str, Any] = (await response.json())["usage"]
    return usage


class TestAnthropic:
    async def test_the_prompt_count_without_an_output_count_is_kept(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        # A server that counts the output in no message_delta: the prompt's 41 tokens were
        # replaced by a word count of the context (3).
        anthropic_fake.script(anthropic_sse(
            {"type": "message_start", "message": {"usage": {"input_tokens": 41}}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "one two three"}},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
            {"type": "message_stop"},
        ))  # fmt: skip
        usage = await usage_of(await gateway(anthropic_agent(anthropic_fake)))
        assert usage == {"prompt_tokens": 41, "completion_tokens": 3, "total_tokens": 44}

    async def test_the_output_count_without_a_prompt_count_is_kept(
        self, gateway: MakeClient, anthropic_fake: FakeAnthropic
    ) -> None:
        anthropic_fake.script(anthropic_sse(
            {"type": "message_start", "message": {}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "one two three"}},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
             "usage": {"output_tokens": 9}},
            {"type": "message_stop"},
        ))  # fmt: skip
        usage = await usage_of(await gateway(anthropic_agent(anthropic_fake)))
        assert usage == {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}


class TestOpenAICompatible:
    @pytest.mark.parametrize(
        ("reported", "expected"),
        [({"prompt_tokens": 41}, (41, 3)), ({"completion_tokens": 9}, (3, 9)),
         ({"prompt_tokens": 41, "completion_tokens": "9"}, (41, 3))],
    )  # fmt: skip
    async def test_the_one_count_reported_is_kept(
        self,
        gateway: MakeClient,
        upstream: FakeOpenAI,
        reported: dict[str, Any],
        expected: tuple[int, int],
    ) -> None:
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "one two three"},
                          "finish_reason": "stop"}]},
            {"choices": [], "usage": reported},
        ]  # fmt: skip
        body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
        upstream.script(Raw((body + b"data: [DONE]\n\n",)))
        usage = await usage_of(await gateway(fake_provider(upstream)))
        prompt, completion = expected
        assert usage == {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
