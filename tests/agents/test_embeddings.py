"""agents.providers.embeddings: echo's vectors, reading an upstream's answer, the client
against a fake OpenAI-compatible server."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import attrs
import pytest
import structlog

from agents.config import API_OPENAI_COMPLETIONS, ModelRef, ProviderConfig
from agents.errors import MalformedStream, UpstreamAuthFailed, UpstreamError, UpstreamTimeout
from agents.providers.embeddings import (
    EmbeddingRequest,
    Embeddings,
    EmbeddingsClient,
    echo_vector,
    parse_answer,
)
from agents.providers.pool import Timeouts
from tests.support.upstreams import (
    API_KEY,
    FakeOpenAI,
    Stall,
    Status,
    closed_port,
    fake_embedding,
)


class TestEchoVector:
    def test_is_a_unit_vector_of_the_asked_size(self) -> None:
        for size in (1, 7, 8, 9, 100):
            vector = echo_vector("some text", size)
            assert len(vector) == size
            assert math.isclose(math.fsum(v * v for v in vector), 1.0)

    def test_depends_only_on_the_text(self) -> None:
        assert echo_vector("a", 16) == echo_vector("a", 16) != echo_vector("b", 16)

    def test_takes_text_that_is_not_valid_unicode(self) -> None:
        assert len(echo_vector("\ud800", 4)) == 4


def answer(*embeddings: Any, usage: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "data": [{"index": i, "embedding": e} for i, e in enumerate(embeddings)]
    }
    if usage is not None:
        body["usage"] = usage
    return body


class TestParseAnswer:
    def test_floats_and_usage(self) -> None:
        result = parse_answer(answer([0.5, 1], usage={"prompt_tokens": 3, "total_tokens": 3}), 1)
        assert result == Embeddings(((0.5, 1.0),), 3, 3)

    def test_base64_float32(self) -> None:
        encoded = base64.b64encode(struct.pack("<2f", 0.25, -1.0)).decode()
        assert parse_answer(answer(encoded), 1).vectors == ((0.25, -1.0),)

    def test_orders_by_index(self) -> None:
        body = {"data": [{"index": 1, "embedding": [2]}, {"index": 0, "embedding": [1]}]}
        assert parse_answer(body, 2).vectors == ((1.0,), (2.0,))

    def test_without_usage_asks_for_an_estimate(self) -> None:
        assert parse_answer(answer([1]), 1).prompt_tokens == -1

    @pytest.mark.parametrize(
        "body",
        [
            [],
            {"error": {"message": "no"}},
            answer([1]),  # one vector for two inputs
            answer([1], ["x"]),
            answer([1], [True]),
            answer([1], [1e39]),
            answer([1], [10**400]),
            answer([1], "not base64!"),
            answer([1], base64.b64encode(b"abc").decode()),
            answer([1], base64.b64encode(struct.pack("<f", math.nan)).decode()),
            {"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [1]}]},
            {"data": [1, 2]},
            answer([1, 2], [1]),  # vectors of different lengths
            answer([], []),
            answer("", ""),  # base64 of no values
        ],
    )
    def test_anything_else_is_malformed(self, body: Any) -> None:
        with pytest.raises(MalformedStream):
            parse_answer(body, 2)

    def test_vectors_not_of_the_asked_dimensions_are_malformed(self) -> None:
        # An upstream that ignores `dimensions` (some servers do) would hand the client
        # vectors its index was not made for.
        with pytest.raises(MalformedStream, match="3 values, 2 asked"):
            parse_answer(answer([1, 2, 3]), 1, dimensions=2)
        assert parse_answer(answer([1, 2]), 1, dimensions=2).vectors == ((1.0, 2.0),)


TIMEOUTS = Timeouts(connect=1, idle=0.3)


def request_for(upstream: FakeOpenAI, *inputs: str, **fields: Any) -> EmbeddingRequest:
    return EmbeddingRequest(
        ModelRef("fake", "embed"), inputs, provider=upstream.provider_config(), **fields
    )


class TestClient:
    async def test_vectors_from_the_upstream(self, openai_upstream: FakeOpenAI) -> None:
        client = EmbeddingsClient(TIMEOUTS)
        try:
            result = await client.embed(request_for(openai_upstream, "a", "b c"))
        finally:
            await client.aclose()
        assert result == Embeddings(
            (tuple(fake_embedding("a")), tuple(fake_embedding("b c"))), 3, 3
        )

    async def test_a_query_in_the_base_url_stays_after_the_path(
        self, openai_upstream: FakeOpenAI
    ) -> None:
        # Azure OpenAI's deployments take their API version so: `...?api-version=2024-10-21`.
        base_url = f"{openai_upstream.base_url}/?api-version=2024-10-21"
        provider = attrs.evolve(openai_upstream.provider_config(), base_url=base_url)
        client = EmbeddingsClient(TIMEOUTS)
        try:
            request = attrs.evolve(request_for(openai_upstream, "a"), provider=provider)
            result = await client.embed(request)
        finally:
            await client.aclose()
        assert result.vectors == (tuple(fake_embedding("a")),)
        assert openai_upstream.last.path == "/v1/embeddings"
        assert openai_upstream.last.query == "api-version=2024-10-21"

    async def test_echo_needs_no_upstream(self) -> None:
        client = EmbeddingsClient(TIMEOUTS)
        result = await client.embed(EmbeddingRequest(ModelRef("echo", "echo"), ("a",), 4))
        assert result.vectors == (echo_vector("a", 4),)

    @pytest.mark.parametrize(
        ("reply", "error"),
        [
            (Status(401), UpstreamAuthFailed),
            (Status(500), UpstreamError),
            (Status(200, body="not json"), MalformedStream),
            (Stall(headers=False), UpstreamTimeout),
        ],
    )
    async def test_failures_are_the_chat_providers_classes(
        self, openai_upstream: FakeOpenAI, reply: Any, error: type[Exception]
    ) -> None:
        openai_upstream.script(reply)
        client = EmbeddingsClient(TIMEOUTS)
        try:
            with pytest.raises(error):
                await client.embed(request_for(openai_upstream, "a"))
        finally:
            await client.aclose()

    async def test_a_200_answer_that_is_no_embeddings_is_logged_at_debug(
        self, openai_upstream: FakeOpenAI
    ) -> None:
        # An error object with a 200: the request failed without its cause in the log.
        body = json.dumps({"error": {"message": f"bad key {API_KEY}"}})
        openai_upstream.script(Status(200, body=body))
        client = EmbeddingsClient(TIMEOUTS)
        try:
            with structlog.testing.capture_logs() as logs, pytest.raises(MalformedStream):
                await client.embed(request_for(openai_upstream, "a"))
        finally:
            await client.aclose()
        [entry] = [e for e in logs if e["event"] == "upstream_malformed_answer"]
        assert entry["log_level"] == "debug"
        assert entry["body"] == body.replace(API_KEY, "[redacted]")

    async def test_a_refused_connection_is_an_upstream_error(self) -> None:
        provider = ProviderConfig(
            "fake", API_OPENAI_COMPLETIONS, f"http://127.0.0.1:{closed_port()}/v1"
        )
        client = EmbeddingsClient(TIMEOUTS)
        try:
            with pytest.raises(UpstreamError):
                await client.embed(
                    EmbeddingRequest(ModelRef("fake", "e"), ("a",), provider=provider)
                )
        finally:
            await client.aclose()
