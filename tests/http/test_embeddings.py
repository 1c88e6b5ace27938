"""`POST /v1/embeddings` over HTTP: echo's offline vectors, a real fake upstream behind an
openai-completions provider, the model choice, validation and the error mapping."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.providers import embeddings as embeddings_module
from agents.providers.embeddings import MAX_VECTOR_VALUES, Embeddings, echo_vector
from agents.providers.pool import Timeouts
from gateway.http.embeddings_wire import embeddings_body, embeddings_json
from gateway.http.openai_wire import encode_json
from gateway.state import AppOptions
from tests.support.http_client import (
    AUTH,
    TOKEN,
    Client,
    MakeClient,
    NoErrorLogs,
    upstream_settings,
)
from tests.support.upstreams import FakeOpenAI, Stall, Status, fake_embedding

EMBEDDINGS = "/v1/embeddings"
ECHO = {"agents": {"defaults": {"embeddingModel": "echo/echo"}}}


def error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


async def post(
    client: Client, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    # A stream rather than bytes: aiohttp warns about large bytes bodies (filterwarnings=error).
    response = await client.post(
        EMBEDDINGS,
        data=io.BytesIO(json.dumps(body).encode()),
        headers={**AUTH, "Content-Type": "application/json", **(headers or {})},
    )
    return response.status, await response.json(), response.headers


class TestEchoVectors:
    async def test_one_string_gives_one_unit_vector(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        status, body, headers = await post(client, {"model": "openclaw", "input": "hello world"})
        assert status == 200
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        assert body == {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": 0,
                    "embedding": list(echo_vector("hello world", 16)),
                }
            ],
            "model": "openclaw",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }

    async def test_the_same_text_gives_the_same_vector(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        _, body, _ = await post(client, {"input": ["a", "b", "a"], "dimensions": 4})
        vectors = [item["embedding"] for item in body["data"]]
        assert vectors[0] == vectors[2] != vectors[1]
        assert [len(v) for v in vectors] == [4, 4, 4]

    async def test_base64_is_little_endian_float32(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        _, body, _ = await post(client, {"input": "x", "encoding_format": "base64"})
        raw = base64.b64decode(body["data"][0]["embedding"])
        expected = struct.unpack("<16f", struct.pack("<16f", *echo_vector("x", 16)))
        assert struct.unpack("<16f", raw) == expected

    async def test_the_model_names_the_agent_and_is_echoed(self, gateway: MakeClient) -> None:
        client = await gateway(
            {**ECHO, "agents": {**ECHO["agents"], "list": [{"id": "main"}, {"id": "beta"}]}}
        )
        status, body, _ = await post(client, {"model": "openclaw/beta", "input": "x"})
        assert (status, body["model"]) == (200, "openclaw/beta")

    async def test_an_unknown_agent_is_refused(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        assert (await post(client, {"model": "openclaw/nope", "input": "x"}))[:2] == (
            400,
            error("Unknown agent 'nope'.", "model"),
        )

    async def test_any_model_runs_the_default_agent_with_unknown_model_default_agent(
        self, gateway: MakeClient
    ) -> None:
        # The clients that insist on their own model names send them here too (Open WebUI's
        # and LibreChat's RAG: `text-embedding-3-small`).
        lenient = {"gateway": {"http": {"endpoints": {"chatCompletions": {
            "unknownModel": "default-agent"}}}}}  # fmt: skip
        client = await gateway({**ECHO, **lenient})
        status, body, _ = await post(client, {"model": "text-embedding-3-small", "input": "x"})
        assert (status, body["model"]) == (200, "text-embedding-3-small")

    async def test_echo_bounds_inputs_times_dimensions(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        status, body, _ = await post(client, {"input": ["x"] * 200, "dimensions": 8192})
        assert (status, body) == (
            400,
            error(
                "The echo embedding model makes at most 1048576 values per request"
                " (inputs × dimensions = 1638400).",
                "dimensions",
            ),
        )


class TestModelChoice:
    async def test_without_an_embedding_model_the_answer_is_400(self, client: Client) -> None:
        assert (await post(client, {"model": "openclaw", "input": "hi"}))[:2] == (
            400,
            error(
                "No embedding model is configured: set agents.defaults.embeddingModel,"
                " or name one in the `x-openclaw-model` header.",
                "model",
                "embedding_model_not_configured",
            ),
        )

    async def test_the_header_names_the_model(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream, "echo/echo"))
        status, body, _ = await post(client, {"input": "hi"}, {"x-openclaw-model": "fake/other"})
        assert status == 200
        assert upstream.last.body["model"] == "other"
        assert body["data"][0]["embedding"] == fake_embedding("hi")

    async def test_the_header_works_without_a_configured_model(self, gateway: MakeClient) -> None:
        client = await gateway()
        status, _, _ = await post(client, {"input": "hi"}, {"x-openclaw-model": "echo/echo"})
        assert status == 200

    async def test_a_header_with_an_unknown_provider_is_refused(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        assert (await post(client, {"input": "hi"}, {"x-openclaw-model": "nope/m"}))[:2] == (
            400,
            error("Invalid `x-openclaw-model`: unknown provider 'nope'."),
        )

    async def test_a_header_naming_an_anthropic_provider_is_refused(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        assert (await post(client, {"input": "hi"}, {"x-openclaw-model": "claude/m"}))[:2] == (
            400,
            error("Invalid `x-openclaw-model`: provider 'claude' is not OpenAI-compatible."),
        )

    async def test_a_header_that_is_not_a_model_ref_is_refused(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        assert (await post(client, {"input": "hi"}, {"x-openclaw-model": "gpt"}))[:2] == (
            400,
            error('Invalid `x-openclaw-model`: expected "provider/model".'),
        )


class TestUpstream:
    async def test_the_request_sent_upstream(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        await post(client, {"input": ["one", "two"], "dimensions": 4, "user": "u1"})
        sent = upstream.last
        assert sent.path == "/v1/embeddings"
        assert sent.headers["Authorization"] == "Bearer sk-test-key"
        assert sent.body == {
            "model": "embed-small",
            "input": ["one", "two"],
            "encoding_format": "float",
            "dimensions": 4,
            "user": "u1",
        }

    async def test_the_vectors_and_usage_come_back(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        status, body, _ = await post(client, {"model": "openclaw", "input": ["a b", "c"]})
        assert status == 200
        assert body == {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 0, "embedding": fake_embedding("a b")},
                {"object": "embedding", "index": 1, "embedding": fake_embedding("c")},
            ],
            "model": "openclaw",
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }

    @pytest.mark.parametrize(
        ("usage", "expected"),
        [
            ({"prompt_tokens": -5, "total_tokens": -5}, {"prompt_tokens": 3, "total_tokens": 3}),
            ({"prompt_tokens": 10**30, "total_tokens": 10**30}, {"prompt_tokens": 3,
                                                                 "total_tokens": 3}),
            ({"prompt_tokens": 4, "total_tokens": -1}, {"prompt_tokens": 4, "total_tokens": 4}),
            ({"prompt_tokens": 4, "total_tokens": 2**60}, {"prompt_tokens": 4,
                                                           "total_tokens": 4}),
            ({"prompt_tokens": 4, "total_tokens": 1}, {"prompt_tokens": 4, "total_tokens": 4}),
            ({"prompt_tokens": 4, "total_tokens": 6}, {"prompt_tokens": 4, "total_tokens": 6}),
        ],
    )  # fmt: skip
    async def test_usage_that_is_no_token_count_is_estimated(
        self,
        gateway: MakeClient,
        upstream: FakeOpenAI,
        usage: dict[str, int],
        expected: dict[str, int],
    ) -> None:
        """As a chat reply's (agents.providers.base.token_count): a count below 0 or beyond
        2**53 - 1 (JavaScript's safe integers) is none reported, so the estimate (3 words);
        a total that is none, or below the prompt, is the prompt's. They were relayed."""
        data = [{"index": 0, "embedding": [0.5, 1.0]}]
        upstream.script(Status(200, body=json.dumps({"data": data, "usage": usage})))
        client = await gateway(upstream_settings(upstream))
        status, body, _ = await post(client, {"input": "one two three"})
        assert (status, body["usage"]) == (200, expected)

    async def test_base64_is_asked_of_the_upstream_and_relayed(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        _, body, _ = await post(client, {"input": "a", "encoding_format": "base64"})
        assert upstream.last.body["encoding_format"] == "base64"
        raw = base64.b64decode(body["data"][0]["embedding"])
        assert list(struct.unpack("<8f", raw)) == fake_embedding("a")

    @pytest.mark.parametrize("status", [400, 422])
    async def test_base64_refused_by_the_upstream_is_asked_as_floats(
        self, gateway: MakeClient, upstream: FakeOpenAI, status: int
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(status))
        _, body, _ = await post(client, {"input": "a", "encoding_format": "base64"})
        assert [r.body["encoding_format"] for r in upstream.requests] == ["base64", "float"]
        raw = base64.b64decode(body["data"][0]["embedding"])
        assert list(struct.unpack("<8f", raw)) == fake_embedding("a")

    async def test_a_400_floats_do_not_cure_is_relayed_and_base64_asked_again(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        # A 400 for another cause (an input beyond the model's context) fails both ways.
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(400), Status(400))
        base64_request = {"input": "a", "encoding_format": "base64"}
        assert (await post(client, base64_request))[0] == 502
        assert (await post(client, base64_request))[0] == 200
        asked = [r.body["encoding_format"] for r in upstream.requests]
        assert asked == ["base64", "float", "base64"]

    async def test_a_float_request_is_not_asked_twice(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(400))
        assert (await post(client, {"input": "a"}))[0] == 502
        assert len(upstream.requests) == 1

    async def test_a_429_comes_back_with_its_retry_after(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(429, {"Retry-After": "7"}))
        status, body, headers = await post(client, {"input": "a"})
        assert (status, headers["Retry-After"]) == (429, "7")
        assert body == {
            "error": {
                "message": "upstream provider rate limited",
                "type": "rate_limit_error",
                "param": None,
                "code": None,
            }
        }

    async def test_a_rejected_api_key_is_a_502_upstream_auth_failed(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(401))
        assert (await post(client, {"input": "a"}))[:2] == (
            502,
            {
                "error": {
                    "message": "upstream provider authentication failed",
                    "type": "api_error",
                    "param": None,
                    "code": "upstream_auth_failed",
                }
            },
        )

    async def test_an_upstream_error_is_a_502(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(500))
        status, body, _ = await post(client, {"input": "a"})
        assert (status, body["error"]["message"]) == (502, "upstream provider error")

    async def test_a_number_beyond_any_float_is_a_502(
        self, gateway: MakeClient, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
    ) -> None:
        # JSON allows integers of any size; float() of this one overflows.
        huge = "1" + "0" * 400
        upstream.script(Status(200, body=f'{{"data": [{{"index": 0, "embedding": [{huge}]}}]}}'))
        client = await gateway(upstream_settings(upstream))
        with NoErrorLogs(caplog) as logs:
            status, body, _ = await post(client, {"input": "a"})
        assert (status, body["error"]["message"]) == (502, "upstream provider error")
        assert logs.errors() == []

    async def test_an_answer_nested_deeper_than_the_parser_goes_is_a_502(
        self, gateway: MakeClient, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
    ) -> None:
        upstream.script(Status(200, body="[" * 200_000 + "]" * 200_000))
        client = await gateway(upstream_settings(upstream))
        with NoErrorLogs(caplog) as logs:
            status, body, _ = await post(client, {"input": "a"})
        assert (status, body["error"]["message"]) == (502, "upstream provider error")
        assert logs.errors() == []

    @pytest.mark.parametrize(
        ("vectors", "fields"),
        [
            ([[0.5, 0.5], [0.5]], {}),
            ([[], []], {}),
            ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], {"dimensions": 2}),
        ],
    )
    async def test_vectors_of_the_wrong_shape_are_a_502(
        self,
        gateway: MakeClient,
        upstream: FakeOpenAI,
        vectors: list[list[float]],
        fields: dict[str, Any],
    ) -> None:
        data = [{"index": i, "embedding": v} for i, v in enumerate(vectors)]
        upstream.script(Status(200, body=json.dumps({"data": data})))
        client = await gateway(upstream_settings(upstream))
        status, body, _ = await post(client, {"input": ["a", "b"], **fields})
        assert (status, body["error"]["message"]) == (502, "upstream provider error")

    async def test_a_silent_upstream_is_a_504(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(
            upstream_settings(upstream),
            AppOptions(provider_timeouts=Timeouts(connect=1.0, idle=0.2)),
        )
        upstream.script(Stall(headers=False))
        status, body, _ = await post(client, {"input": "a"})
        assert (status, body["error"]["message"]) == (504, "upstream provider timeout")

    async def test_a_client_that_leaves_cancels_the_upstream_call(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Stall(headers=False))
        response = client.post(EMBEDDINGS, json={"input": "a"}, headers=AUTH)
        task = asyncio.ensure_future(response)
        await upstream.wait_for_requests(1, within=2.0)
        task.cancel()
        await upstream.last.wait_gone(within=2.0)


WRONG_FIELDS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, error("Missing `input`.", "input")),
    ({"input": 3}, error("`input` must be a string or an array of strings.", "input")),
    ({"input": [{"a": 1}]}, error("`input` must be a string or an array of strings.", "input")),
    ({"input": []}, error("`input` must not be empty.", "input")),
    ({"input": ["a", ""]}, error("`input[1]` is empty.", "input")),
    (
        {"input": ["x"] * 2049},
        error("`input` may hold at most 2048 items (got 2049).", "input"),
    ),
    (
        {"input": "x" * 32769},
        error(
            "`input[0]` is too long (32769 characters; at most 32768, about 8192 tokens).",
            "input",
        ),
    ),
    (
        {"input": ["x" * 32768] * 37},
        error(
            "`input` is too long (1212416 characters in all;"
            " at most 1200000, about 300000 tokens).",
            "input",
        ),
    ),
    (
        {"input": "a", "encoding_format": "binary"},
        error('`encoding_format` must be "float" or "base64".', "encoding_format"),
    ),
    (
        {"input": "a", "dimensions": 0},
        error("`dimensions` must be an integer between 1 and 8192.", "dimensions"),
    ),
    (
        {"input": "a", "dimensions": 1.5},
        error("`dimensions` must be an integer between 1 and 8192.", "dimensions"),
    ),
    (
        {"input": "a", "dimensions": True},
        error("`dimensions` must be an integer between 1 and 8192.", "dimensions"),
    ),
    ({"input": "a", "user": 5}, error("user: Expected string, received number", "user")),
]


class TestRefusedByTheUpstream:
    """An upstream that refuses the request as bad (400, 413, 422: an input too long for its
    model, `dimensions` it does not make) gives its reason to the client, whose request it
    is: still the spec's 502, its message saying why, the provider's credentials scrubbed."""

    @staticmethod
    def refusal(status: int, reason: str) -> dict[str, Any]:
        return {
            "error": {
                "message": f"upstream provider refused the request (HTTP {status}): {reason}",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        }

    @pytest.mark.parametrize(
        ("status", "body", "reason"),
        [
            # OpenAI's shape.
            (400, {"error": {"message": "This model's maximum context length is 8192 tokens.",
                             "type": "invalid_request_error", "param": None, "code": None}},
             "This model's maximum context length is 8192 tokens."),
            # Ollama's.
            (400, {"error": "input length exceeds the context length"},
             "input length exceeds the context length"),
            # vLLM's.
            (400, {"object": "error", "message": "dimensions is not supported",
                   "type": "BadRequestError", "code": 400},
             "dimensions is not supported"),
            # A FastAPI server's.
            (422, {"detail": "input: too many items"}, "input: too many items"),
            (413, {"error": {"message": "Request\ntoo\tlarge"}}, "Request too large"),
        ],
    )  # fmt: skip
    async def test_the_reason_reaches_the_client(
        self, gateway: MakeClient, upstream: FakeOpenAI, status: int, body: Any, reason: str
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(status, body=json.dumps(body)))
        answer = await post(client, {"input": "a", "encoding_format": "float"})
        assert answer[:2] == (502, self.refusal(status, reason))

    async def test_the_providers_key_is_scrubbed_from_it(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        # Escaped in the JSON, the key is the key once parsed.
        echoed = "Bad input for key sk-test-\\u006bey (Bearer sk-test-key)"
        upstream.script(Status(400, body=f'{{"error": {{"message": "{echoed}"}}}}'))
        answer = await post(client, {"input": "a", "encoding_format": "float"})
        assert answer[:2] == (
            502,
            self.refusal(400, "Bad input for key [redacted] (Bearer [redacted])"),
        )

    async def test_a_long_reason_is_cut(self, gateway: MakeClient, upstream: FakeOpenAI) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(400, body=json.dumps({"error": {"message": "x" * 100_000}})))
        _, body, _ = await post(client, {"input": "a", "encoding_format": "float"})
        assert body == self.refusal(400, "x" * 300 + "…")

    @pytest.mark.parametrize("body", ["<html>Bad Request</html>", '{"error": {"code": 1}}', ""])
    async def test_without_a_reason_it_says_the_status(
        self, gateway: MakeClient, upstream: FakeOpenAI, body: str
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(400, body=body))
        _, answer, _ = await post(client, {"input": "a", "encoding_format": "float"})
        assert answer["error"]["message"] == "upstream provider refused the request (HTTP 400)"

    @pytest.mark.parametrize("status", [404, 500, 503])
    async def test_other_failures_keep_their_reason_to_the_log(
        self, gateway: MakeClient, upstream: FakeOpenAI, status: int
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        upstream.script(Status(status, body=json.dumps({"error": {"message": "db at 10.0.0.5"}})))
        _, answer, _ = await post(client, {"input": "a", "encoding_format": "float"})
        assert answer["error"]["message"] == "upstream provider error"


class TestLargeAnswersHoldUpNoOtherClient:
    """`GET /healthz`, sent once the gateway began decoding a large upstream answer, is
    answered first only if decoding it and writing the client's answer let the event loop
    run: 2048 vectors of 1536 floats (OpenAI's limits) take seconds of each."""

    async def test_an_answer_of_2048_vectors_of_1536_floats(
        self, gateway: MakeClient, upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        client = await gateway(upstream_settings(upstream))
        loop = asyncio.get_running_loop()
        decoding = asyncio.Event()
        parse = embeddings_module.parse_answer

        def noting_the_start(answer: Any, count: int, dimensions: int | None) -> Embeddings:
            loop.call_soon_threadsafe(decoding.set)
            return parse(answer, count, dimensions)

        monkeypatch.setattr(embeddings_module, "parse_answer", noting_the_start)
        inputs = [f"text {i}" for i in range(2048)]
        with capture_logs() as logs:
            slow = asyncio.create_task(post(client, {"input": inputs, "dimensions": 1536}))
            await decoding.wait()
            assert (await client.get("/healthz")).status == 200
            status, body, _ = await slow
        assert status == 200
        assert body["data"][2047]["embedding"] == fake_embedding("text 2047", 1536)
        assert [e["path"] for e in logs if e["event"] == "http_request"] == [
            "/healthz",
            EMBEDDINGS,
        ]

    @pytest.mark.parametrize("encoding", ["float", "base64"])
    def test_the_answer_written_a_vector_at_a_time_is_the_whole_one(self, encoding: str) -> None:
        result = Embeddings(((0.5, -1.0), (0.25, 2.0)), 3, 3)
        model = 'm "data":[] \u00e9'
        whole = encode_json(embeddings_body(model, result, encoding))
        assert embeddings_json(model, result, encoding) == whole


class TestValidation:
    @pytest.mark.parametrize(("body", "expected"), WRONG_FIELDS)
    async def test_a_wrong_field_is_a_400_naming_it(
        self, gateway: MakeClient, body: dict[str, Any], expected: dict[str, Any]
    ) -> None:
        client = await gateway(ECHO)
        assert (await post(client, body))[:2] == (400, expected)

    async def test_null_fields_are_absent(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        body = {"input": "a", "encoding_format": None, "dimensions": None, "user": None}
        assert (await post(client, body))[0] == 200

    async def test_a_body_over_the_limit_is_a_413(self, gateway: MakeClient) -> None:
        client = await gateway(
            {**ECHO, "gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": 100}}}}}
        )
        status, body, _ = await post(client, {"input": "x" * 200})
        assert (status, body["error"]["message"]) == (413, "Payload too large")


class TestGate:
    async def test_needs_the_gateway_token(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        response = await client.post(EMBEDDINGS, json={"input": "a"})
        assert response.status == 401
        response = await client.post(
            EMBEDDINGS, json={"input": "a"}, headers={"Authorization": f"Bearer {TOKEN}x"}
        )
        assert response.status == 401

    async def test_is_off_with_the_openai_surface(self, gateway: MakeClient) -> None:
        client = await gateway(
            {**ECHO, "gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": False}}}}}
        )
        response = await client.post(EMBEDDINGS, json={"input": "a"}, headers=AUTH)
        assert response.status == 404

    async def test_only_post(self, gateway: MakeClient) -> None:
        client = await gateway(ECHO)
        response = await client.get(EMBEDDINGS, headers=AUTH)
        assert (response.status, response.headers["Allow"]) == (405, "POST")

    async def test_a_preflight_from_an_allowed_origin_needs_no_token(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(
            {**ECHO, "gateway": {"http": {"cors": {"allowedOrigins": ["https://ui.example"]}}}}
        )
        response = await client.options(
            EMBEDDINGS,
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://ui.example"


class TestAnswerSizeBound:
    """An answer is read up to what the request's vectors can take as JSON (16,384 values
    each, written as long and as indented as any server writes them), not up to the 256 MiB
    bound of OpenAI's largest request: a broken or hostile upstream answering one input with
    hundreds of megabytes is a 502, not gigabytes of parsed numbers."""

    async def test_the_largest_vector_written_at_its_longest_is_taken(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        vector = [-1.2345678901234567e-05] * MAX_VECTOR_VALUES
        answer = {"object": "list", "data": [{"object": "embedding", "index": 0,
                  "embedding": vector}], "model": "m", "usage": {"prompt_tokens": 1,
                  "total_tokens": 1}}  # fmt: skip
        upstream.script(Status(200, body=json.dumps(answer, indent=8)))
        client = await gateway(upstream_settings(upstream))
        status, body, _ = await post(client, {"input": "a", "encoding_format": "float"})
        assert status == 200 and len(body["data"][0]["embedding"]) == MAX_VECTOR_VALUES

    async def test_more_for_one_input_is_a_502(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        vector = "[" + ",".join(["0.5"] * 1_000_000) + "]"
        upstream.script(Status(200, body=f'{{"data": [{{"index": 0, "embedding": {vector}}}]}}'))
        client = await gateway(upstream_settings(upstream))
        status, body, _ = await post(client, {"input": "a", "encoding_format": "float"})
        assert (status, body["error"]["message"]) == (502, "upstream provider error")
