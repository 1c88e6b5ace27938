"""POST /v1/chat/completions in process: the wire examples, sessions, routing, every error."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.appkeys import STATE
from gateway.http import openai as openai_http
from gateway.http import openai_wire
from gateway.state import AppOptions
from tests.support.http_client import (
    AUTH,
    CHAT,
    HI,
    TOKEN,
    Client,
    MakeClient,
    NoErrorLogs,
    anthropic_agent,
    call_started,
    normalised,
    order_of_answers,
    parse_started,
    session_runs,
    sse_events,
)
from tests.support.raw_http import raw_exchange, read_response, request_bytes, request_head
from tests.support.upstreams import FakeAnthropic

COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(self), geolocation=()",
}


@pytest.fixture
async def anthropic_upstream() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


def err(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> str:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}},
        separators=(",", ":"),
        ensure_ascii=False,
    )


async def post(
    client: Client, body: Any = HI, headers: dict[str, str] | None = None, auth: bool = True
) -> tuple[int, str, Any]:
    all_headers = {"Content-Type": "application/json", **(AUTH if auth else {}), **(headers or {})}
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = await client.post(CHAT, data=data, headers=all_headers)
    return response.status, await response.text(), response.headers


async def reply_text(client: Client, body: Any, headers: dict[str, str] | None = None) -> str:
    status, text, _ = await post(client, body, headers)
    assert status == 200, text
    content: str = json.loads(text)["choices"][0]["message"]["content"]
    return content


# §13.2, byte for byte (ids and timestamps normalised).
STREAM_132 = """\
data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,"model":"openclaw","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,"model":"openclaw","choices":[{"index":0,"delta":{"content":"[turn"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,"model":"openclaw","choices":[{"index":0,"delta":{"content":" 1]"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,"model":"openclaw","choices":[{"index":0,"delta":{"content":" hello"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,"model":"openclaw","choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,"model":"openclaw","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

"""  # noqa: E501
USAGE_133 = (
    'data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,'
    '"model":"openclaw","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":4,'
    '"total_tokens":6}}\n\n'
)
DONE = "data: [DONE]\n\n"


class TestWireExamples:
    async def test_simple_json_13_1(self, client: Client) -> None:
        status, text, headers = await post(client)
        assert status == 200
        assert normalised(text) == (
            '{"id":"chatcmpl-<32hex>","object":"chat.completion","created":<unix>,'
            '"model":"openclaw","choices":[{"index":0,"message":{"role":"assistant",'
            '"content":"[turn 1] hello there"},"logprobs":null,"finish_reason":"stop"}],'
            '"usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":6}}'
        )
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        assert normalised(headers["x-openclaw-session-key"]) == "agent:main:openai:<uuid>"
        for name, value in COMMON.items():
            assert headers[name] == value
        assert len(headers["x-request-id"]) == 32

    async def test_streaming_13_2(self, client: Client) -> None:
        status, text, headers = await post(client, {**HI, "stream": True})
        assert status == 200
        assert normalised(text) == STREAM_132 + DONE
        assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache"
        assert headers["Connection"] == "keep-alive"
        assert headers["X-Accel-Buffering"] == "no"
        assert headers["Transfer-Encoding"] == "chunked"
        assert "Content-Encoding" not in headers
        assert normalised(headers["x-openclaw-session-key"]) == "agent:main:openai:<uuid>"
        for name, value in COMMON.items():
            assert headers[name] == value

    async def test_streaming_with_include_usage_13_3(self, client: Client) -> None:
        body = {**HI, "stream": True, "stream_options": {"include_usage": True}}
        _, text, _ = await post(client, body)
        assert normalised(text) == STREAM_132 + USAGE_133 + DONE

    async def test_every_chunk_repeats_one_id_and_created(self, client: Client) -> None:
        _, text, _ = await post(client, {**HI, "stream": True})
        chunks = [json.loads(e) for e in sse_events(text)[:-1]]
        assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1

    async def test_the_stream_carries_the_clients_request_id(self, client: Client) -> None:
        _, _, headers = await post(client, {**HI, "stream": True}, {"x-request-id": "trace-42"})
        assert headers["x-request-id"] == "trace-42"

    async def test_the_token_cap_finishes_with_length(self, client: Client) -> None:
        _, text, _ = await post(client, {**HI, "max_tokens": 2})
        choice = json.loads(text)["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("[turn 1]", "length")

    @pytest.mark.parametrize(
        "content_type",
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
    )
    async def test_a_body_that_is_not_json_by_content_type_is_415(
        self, client: Client, content_type: str
    ) -> None:
        # The "simple request" a page may post cross-site without a preflight (CSRF).
        status, text, _ = await post(client, HI, {"Content-Type": content_type})
        assert (status, text) == (
            415,
            err(
                "Unsupported Content-Type; send application/json.",
                "invalid_request_error",
                code="unsupported_media_type",
            ),
        )

    async def test_a_post_without_content_type_is_415(self, client: Client) -> None:
        response = await client.post(
            CHAT, data=json.dumps(HI).encode(), headers={"Authorization": AUTH["Authorization"]}
        )
        assert response.status == 415

    @pytest.mark.parametrize(
        "content_type",
        ["application/json", "Application/JSON; charset=UTF-8", " application/json;x=y"],
    )
    async def test_json_with_any_parameters_and_case_is_accepted(
        self, client: Client, content_type: str
    ) -> None:
        status, text, _ = await post(client, HI, {"Content-Type": content_type})
        assert status == 200, text


class TestSessions:
    async def test_the_same_user_twice_continues_the_session(self, client: Client) -> None:
        body = {**HI, "user": "Alice"}
        assert await reply_text(client, body) == "[turn 1] hello there"
        _, text, headers = await post(client, body)
        assert json.loads(text)["choices"][0]["message"]["content"] == "[turn 2] hello there"
        assert headers["x-openclaw-session-key"] == "agent:main:openai-user:alice"

    async def test_the_same_session_header_twice_continues_the_session(
        self, client: Client
    ) -> None:
        headers = {"x-openclaw-session-key": "My-Thread"}
        assert await reply_text(client, HI, headers) == "[turn 1] hello there"
        _, text, response_headers = await post(client, HI, headers)
        assert json.loads(text)["choices"][0]["message"]["content"] == "[turn 2] hello there"
        assert response_headers["x-openclaw-session-key"] == "agent:main:my-thread"

    async def test_an_archived_session_takes_no_new_turn(self, client: Client) -> None:
        """OpenClaw's archiving (`sessions.patch {archived: true}`): a 400 until restored."""
        headers = {"x-openclaw-session-key": "Shelved"}
        assert await reply_text(client, HI, headers) == "[turn 1] hello there"
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.patch("agent:main:shelved", archived=True)
        status, text, _ = await post(client, HI, headers)
        assert (status, text) == (
            400,
            err(
                'Session "agent:main:shelved" is archived. Restore it before starting new work.',
                code="session_archived",
            ),
        )
        await registry.patch("agent:main:shelved", archived=False)
        assert await reply_text(client, HI, headers) == "[turn 2] hello there"

    async def test_without_either_every_request_is_turn_1(self, client: Client) -> None:
        assert await reply_text(client, HI) == "[turn 1] hello there"
        assert await reply_text(client, HI) == "[turn 1] hello there"

    async def test_the_returned_key_continues_an_unnamed_session(self, client: Client) -> None:
        _, _, headers = await post(client)
        again = {"x-openclaw-session-key": headers["x-openclaw-session-key"]}
        assert await reply_text(client, HI, again) == "[turn 2] hello there"

    async def test_keys_are_case_insensitive(self, client: Client) -> None:
        await reply_text(client, HI, {"x-openclaw-session-key": "Foo"})
        assert await reply_text(client, HI, {"x-openclaw-session-key": "agent:MAIN:foo"}) == (
            "[turn 2] hello there"
        )

    async def test_a_streamed_turn_counts_like_any_other(self, client: Client) -> None:
        await post(client, {**HI, "user": "bob", "stream": True})
        assert await reply_text(client, {**HI, "user": "bob"}) == "[turn 2] hello there"


RESERVED = "`x-openclaw-session-key` cannot use reserved internal session namespaces."
TWO_AGENTS = {"agents": {"list": [{"id": "main", "default": True}, {"id": "beta"}]}}


class TestAgentRouting:
    async def test_header_and_foreign_model_answers_echoing_the_model(self, client: Client) -> None:
        status, text, _ = await post(
            client, {**HI, "model": "gpt-4o"}, {"x-openclaw-agent-id": "main"}
        )
        assert status == 200 and json.loads(text)["model"] == "gpt-4o"

    async def test_a_stream_does_not_repeat_a_model_over_256_characters(
        self, client: Client
    ) -> None:
        # Each chunk repeats the model: 1 MiB of it made 300 words a 300 MiB answer.
        body = {**HI, "model": "m" * 257, "stream": True}
        assert (await post(client, body, {"x-openclaw-agent-id": "main"}))[:2] == (
            400,
            err("`model` is too long (max 256 characters).", param="model"),
        )

    async def test_the_legacy_agent_header(self, gateway: MakeClient) -> None:
        client = await gateway(TWO_AGENTS)
        _, _, headers = await post(client, HI, {"x-openclaw-agent": "beta"})
        assert headers["x-openclaw-session-key"].startswith("agent:beta:openai:")

    async def test_a_model_naming_an_agent_runs_it(self, gateway: MakeClient) -> None:
        client = await gateway(TWO_AGENTS)
        status, text, headers = await post(client, {**HI, "model": "openclaw:beta"})
        assert status == 200 and json.loads(text)["model"] == "openclaw:beta"
        assert headers["x-openclaw-session-key"].startswith("agent:beta:openai:")

    async def test_an_agent_session_key_runs_its_agent(self, gateway: MakeClient) -> None:
        client = await gateway(TWO_AGENTS)
        _, _, headers = await post(client, HI, {"x-openclaw-session-key": "agent:beta:x"})
        assert headers["x-openclaw-session-key"] == "agent:beta:x"

    async def test_the_system_prompt_reaches_the_agent(self, client: Client) -> None:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        body = {"messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        _, text, _ = await post(client, body)
        usage = json.loads(sse_events(text)[-2])["usage"]
        # echo counts the words of every context message, the system prompt included
        assert usage == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}

    async def test_content_as_a_list_of_parts(self, client: Client) -> None:
        content = [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]
        body = {"messages": [{"role": "user", "content": content}]}
        assert await reply_text(client, body) == "[turn 1] part one\npart two"

    async def test_an_image_only_turn(self, client: Client) -> None:
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
        part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
        body = {"messages": [{"role": "user", "content": [part]}]}
        assert await reply_text(client, body) == "[turn 1] User sent image(s) with no text."


def image_turn(mime: str, data: bytes) -> dict[str, Any]:
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    part = {"type": "image_url", "image_url": {"url": url}}
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, part]}]}


async def post_large(
    client: Client, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    """`post` for a body of megabytes, which aiohttp's client wants as a file."""
    all_headers = {"Content-Type": "application/json", **AUTH, **(headers or {})}
    data = io.BytesIO(json.dumps(body).encode())
    response = await client.post(CHAT, data=data, headers=all_headers)
    return response.status, await response.text(), response.headers


# Anthropic's limit is 5 MiB of base64 text: this many decoded bytes encode to exactly that.
ANTHROPIC_MAX_DECODED = 5 * 1024 * 1024 * 3 // 4


PHOTOS = {"x-openclaw-session-key": "photos"}


class TestImagesTheUpstreamRefuses:
    """HEIC and HEIF are in `images.allowedMimes`, and 10 MiB an image is allowed; Anthropic
    takes neither. Such a turn is the client's 400, before any upstream call or store write."""

    @pytest.mark.parametrize("stream", [False, True])
    @pytest.mark.parametrize(
        ("mime", "size"),
        [("image/heic", 100), ("image/heif", 100), ("image/png", ANTHROPIC_MAX_DECODED + 1)],
        ids=["heic", "heif", "png-over-5MiB-of-base64"],
    )
    async def test_is_refused_for_an_anthropic_agent(
        self, gateway: MakeClient, anthropic_upstream: FakeAnthropic, mime: str, size: int,
        stream: bool,
    ) -> None:  # fmt: skip
        client = await gateway(anthropic_agent(anthropic_upstream))
        body = {**image_turn(mime, b"\0" * size), "stream": stream}
        status, text, headers = await post_large(client, body, PHOTOS)
        assert (status, text) == (
            400,
            err("Invalid image_url content in `messages`.", param="messages"),
        )
        assert headers["x-openclaw-session-key"] == "agent:main:photos"
        assert anthropic_upstream.requests == []
        store = client.app[STATE].store
        assert store is not None
        assert await store.get("agent:main:photos") is None

    @pytest.mark.parametrize(("width", "height", "status"), [(8000, 8000, 200), (9000, 10, 400)])
    async def test_an_image_over_8000_pixels_on_a_side_is_refused_for_an_anthropic_agent(
        self, gateway: MakeClient, anthropic_upstream: FakeAnthropic, width: int, height: int,
        status: int,
    ) -> None:  # fmt: skip
        # Anthropic refuses it with a 400 of its own: the turn failed with a 502.
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
        png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR" + ihdr + b"\0" * 4
        client = await gateway(anthropic_agent(anthropic_upstream))
        got, text, _ = await post_large(client, image_turn("image/png", png), PHOTOS)
        assert got == status
        if status == 400:
            assert text == err("Invalid image_url content in `messages`.", param="messages")
            assert anthropic_upstream.requests == []

    async def test_an_image_of_exactly_5_mib_of_base64_reaches_anthropic(
        self, gateway: MakeClient, anthropic_upstream: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_upstream))
        png = b"\x89PNG\r\n\x1a\n"
        body = image_turn("image/png", png + b"\0" * (ANTHROPIC_MAX_DECODED - len(png)))
        assert (await post_large(client, body))[0] == 200
        image = anthropic_upstream.last.body["messages"][0]["content"][0]
        assert len(image["source"]["data"]) == 5 * 1024 * 1024

    async def test_bytes_that_are_no_image_are_refused_for_an_anthropic_agent(
        self, gateway: MakeClient, anthropic_upstream: FakeAnthropic
    ) -> None:
        # Anthropic refuses them ("Could not process image"): the turn failed with a 502.
        client = await gateway(anthropic_agent(anthropic_upstream))
        status, text, _ = await post_large(client, image_turn("image/png", b"<html>"), PHOTOS)
        assert (status, text) == (
            400,
            err("Invalid image_url content in `messages`.", param="messages"),
        )
        assert anthropic_upstream.requests == []

    async def test_a_model_header_naming_anthropic_is_held_to_its_rules(
        self, gateway: MakeClient, anthropic_upstream: FakeAnthropic
    ) -> None:
        settings = anthropic_agent(anthropic_upstream)
        settings["agents"]["list"][0]["model"] = "echo/echo"
        settings["agents"]["list"][0]["models"] = ["claude/fake-model"]
        client = await gateway(settings)
        body = image_turn("image/heic", b"\0" * 100)
        assert (await post(client, body))[0] == 200  # echo takes it
        status, _, _ = await post(client, body, {"x-openclaw-model": "claude/fake-model"})
        assert status == 400
        assert anthropic_upstream.requests == []

    async def test_a_chain_with_a_model_that_takes_it_goes_ahead(
        self, gateway: MakeClient, anthropic_upstream: FakeAnthropic
    ) -> None:
        client = await gateway(anthropic_agent(anthropic_upstream, "echo/echo"))
        assert await reply_text(client, image_turn("image/heic", b"\0" * 100)) == "[turn 1] what?"


class TestRequestErrors:
    """§13.5 and the 400 rows of §8, one request each, whole bodies."""

    @pytest.mark.parametrize(
        ("body", "message", "param", "code"),
        [
            ({"stream": "yes", **HI}, "stream: Expected boolean, received string", "stream", None),
            (
                {"temperature": 5, **HI},
                "`temperature` must be between 0 and 2.",
                "temperature",
                None,
            ),
            ({"n": 2, **HI}, "n>1 is not supported.", "n", "unsupported_parameter"),
            (
                {"tools": [{"type": "function", "function": {"name": "a b"}}], **HI},
                "Invalid `tools[0].function.name`: 1 to 64 letters, digits, underscores or dashes.",
                "tools",
                None,
            ),
            (
                {"tool_choice": "required", **HI},
                '`tool_choice` "required" needs `tools`.',
                "tool_choice",
                None,
            ),
            (
                {**HI, "model": "gpt-4o"},
                "Invalid `model`. Use `openclaw` or `openclaw/<agentId>`.",
                "model",
                None,
            ),
            (
                {**HI, "model": "openclaw/nosuchagent"},
                "Unknown agent 'nosuchagent'.",
                "model",
                None,
            ),
        ],
    )
    async def test_a_refused_body(
        self, client: Client, body: dict[str, Any], message: str, param: str, code: str | None
    ) -> None:
        assert (await post(client, body))[:2] == (400, err(message, param=param, code=code))

    @pytest.mark.parametrize(
        "body",
        [
            {"model": "openclaw"},
            {"messages": []},
            {"messages": None},
            {"messages": "hi"},
            {"messages": [{"role": "system", "content": "only system"}]},
        ],
    )
    async def test_no_user_message(self, client: Client, body: dict[str, Any]) -> None:
        assert (await post(client, body))[:2] == (
            400,
            err("Missing user message in `messages`.", param="messages"),
        )

    async def test_a_stream_request_that_is_invalid_gets_a_plain_error(
        self, client: Client
    ) -> None:
        status, _, headers = await post(client, {**HI, "stream": True, "n": 3})
        assert status == 400 and headers["Content-Type"] == "application/json; charset=utf-8"

    async def test_unknown_agent_in_the_header(self, client: Client) -> None:
        assert (await post(client, HI, {"x-openclaw-agent-id": "nosuchagent"}))[:2] == (
            400,
            err("Unknown agent 'nosuchagent'."),
        )

    @pytest.mark.parametrize(
        ("key", "message"),
        [
            ("subagent:x", RESERVED),
            ("agent:main:cron:x", RESERVED),
            ("agent:ghost:k", "Unknown agent 'ghost'."),
            ("agent:main", "Invalid `x-openclaw-session-key`."),
            ("k" * 600, "Session key too long (max 512 characters)."),
        ],
    )
    async def test_refused_session_keys(self, client: Client, key: str, message: str) -> None:
        assert (await post(client, HI, {"x-openclaw-session-key": key}))[:2] == (
            400,
            err(message),
        )

    async def test_a_session_key_of_another_agent_than_the_one_named(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(TWO_AGENTS)
        status, text, _ = await post(
            client, {**HI, "model": "openclaw/main"}, {"x-openclaw-session-key": "agent:beta:k"}
        )
        assert (status, text) == (
            400,
            err("Session key 'agent:beta:k' belongs to agent 'beta', not 'main'."),
        )

    async def test_x_openclaw_model_outside_the_allow_list_is_refused(self, client: Client) -> None:
        assert (await post(client, HI, {"x-openclaw-model": "openai/gpt-4o"}))[:2] == (
            400,
            err("Model 'openai/gpt-4o' is not allowed for agent 'main'.", code="model_not_allowed"),
        )

    async def test_a_remote_image_url(self, client: Client) -> None:
        part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]}
        assert (await post(client, body))[:2] == (
            400,
            err("Invalid image_url content in `messages`.", param="messages"),
        )

    @pytest.mark.parametrize(
        ("url", "count"),
        [
            ("data:image/png;base64,@@notbase64@@", 1),
            ("data:text/plain;base64,aGk=", 1),
            ("data:image/png;base64,aGk=", 9),
        ],
        ids=["bad-base64", "wrong-mime", "too-many-parts"],
    )
    async def test_invalid_images(self, client: Client, url: str, count: int) -> None:
        part = {"type": "image_url", "image_url": {"url": url}}
        body = {"messages": [{"role": "user", "content": [part] * count}]}
        assert (await post(client, body))[:2] == (
            400,
            err("Invalid image_url content in `messages`.", param="messages"),
        )

    async def test_an_image_over_the_size_limit(self, gateway: MakeClient) -> None:
        limit = {"images": {"maxBytes": 10}}
        client = await gateway({"gateway": {"http": {"endpoints": {"chatCompletions": limit}}}})
        data = base64.b64encode(b"x" * 11).decode()
        part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
        status, _, _ = await post(client, {"messages": [{"role": "user", "content": [part]}]})
        assert status == 400

    async def test_errors_after_the_key_is_resolved_carry_it(self, client: Client) -> None:
        body = {"messages": [{"role": "system", "content": "x"}], "user": "carol"}
        _, _, headers = await post(client, body)
        assert headers["x-openclaw-session-key"] == "agent:main:openai-user:carol"

    async def test_errors_before_the_key_is_resolved_do_not(self, client: Client) -> None:
        _, _, headers = await post(client, {**HI, "n": 2, "user": "carol"})
        assert "x-openclaw-session-key" not in headers


class TestBody:
    async def test_invalid_json_gets_the_parsers_message(self, client: Client) -> None:
        assert (await post(client, b"{not json"))[:2] == (
            400,
            err("Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        )

    async def test_non_utf8(self, client: Client) -> None:
        assert (await post(client, b'{"model":"\xff\xfe"}'))[:2] == (
            400,
            err("Request body is not valid UTF-8."),
        )

    async def test_an_empty_body_is_an_empty_object(self, client: Client) -> None:
        assert (await post(client, b""))[:2] == (
            400,
            err("Missing user message in `messages`.", param="messages"),
        )

    async def test_a_json_array_is_an_empty_object(self, client: Client) -> None:
        assert (await post(client, b"[1]"))[0] == 400

    async def test_an_announced_length_over_the_limit_is_refused_unread(
        self, client: Client
    ) -> None:
        head = request_head("POST", CHAT, {**AUTH, "Content-Length": "22020164"}, close=False)
        status, headers, body = await raw_exchange(client.port, head)
        assert (status, body.decode()) == (413, err("Payload too large"))
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert headers["connection"] == "close"  # the unread body cannot precede a request

    async def test_a_chunked_body_that_grows_past_the_limit(self, gateway: MakeClient) -> None:
        client = await gateway(
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": 1000}}}}}
        )
        head = request_head("POST", CHAT, {**AUTH, "Transfer-Encoding": "chunked"}, close=False)
        chunk = b"400\r\n" + b" " * 0x400 + b"\r\n"  # 1024 bytes: over the limit on its own
        status, _, body = await raw_exchange(client.port, head, then=chunk)
        assert (status, body.decode()) == (413, err("Payload too large"))

    async def test_a_whole_chunked_body_past_the_limit_sent_with_its_head(
        self, gateway: MakeClient
    ) -> None:
        """No Content-Length to refuse it by, and all of it already received when the
        handler reads: it is measured all the same."""
        client = await gateway(
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": 1000}}}}}
        )
        head = request_head("POST", CHAT, {**AUTH, "Transfer-Encoding": "chunked"}, close=False)
        body = json.dumps({**HI, "user": "x" * 1000}).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        status, _, answer = await raw_exchange(client.port, head + chunked)
        assert (status, answer.decode()) == (413, err("Payload too large"))

    async def test_a_body_at_the_limit_is_read(self, gateway: MakeClient) -> None:
        data = json.dumps(HI).encode()
        client = await gateway(
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": len(data)}}}}}
        )
        assert (await post(client, data))[0] == 200

    @pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 413)])
    async def test_a_chunked_body_sent_with_its_head_is_held_to_the_exact_limit(
        self, gateway: MakeClient, extra: int, status: int
    ) -> None:
        data = json.dumps(HI).encode()
        client = await gateway(
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": len(data)}}}}}
        )
        body = data + b" " * extra
        head = request_head("POST", CHAT, {**AUTH, "Transfer-Encoding": "chunked"}, close=False)
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        assert (await raw_exchange(client.port, head + chunked))[0] == status

    @pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 413)])
    async def test_a_body_arriving_in_pieces_is_held_to_the_exact_limit(
        self, gateway: MakeClient, extra: int, status: int
    ) -> None:
        data = json.dumps(HI).encode()
        client = await gateway(
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": len(data)}}}}}
        )

        async def pieces() -> AsyncIterator[bytes]:
            yield data[:5]
            await asyncio.sleep(0.05)  # the handler is reading by now: the streamed path
            yield data[5:] + b" " * extra

        headers = {"Content-Type": "application/json", **AUTH}
        response = await client.post(CHAT, data=pieces(), headers=headers)
        assert response.status == status

    async def test_a_body_that_never_finishes(self, gateway: MakeClient) -> None:
        client = await gateway(options=AppOptions(body_timeout_seconds=0.2))
        head = request_head("POST", CHAT, {**AUTH, "Content-Length": "100"}, close=False)
        status, headers, body = await raw_exchange(client.port, head, then=b'{"model":')
        assert (status, body.decode()) == (408, err("Request body timeout"))
        assert headers["connection"] == "close"  # the rest of the body may still come

    async def test_a_gzip_body_cut_before_its_trailer_is_a_400(self, client: Client) -> None:
        """All the JSON decodes, but the stream never ends: a body cut short is refused."""
        cut = gzip.compress(json.dumps(HI).encode())[:-8]
        status, body, _ = await post(client, cut, {"Content-Encoding": "gzip"})
        assert (status, body) == (400, err("Request body is not valid gzip data."))

    # (`chunked, chunked`, a coding after chunked and a second Transfer-Encoding line the HTTP
    # parser refuses itself: 400.)
    @pytest.mark.parametrize("codings", ["gzip, chunked", "deflate,chunked", "identity, chunked"])
    async def test_a_transfer_coding_besides_chunked_is_a_400_that_closes(
        self, client: Client, codings: str
    ) -> None:
        """A transfer coding the gateway does not read is the client's error (RFC 9112 §6.1's
        501 would be a 5xx for client input). Its body was read still compressed and answered
        as invalid JSON."""
        head = request_head("POST", CHAT, {**AUTH, "Transfer-Encoding": codings}, close=False)
        data = gzip.compress(json.dumps(HI).encode())
        status, headers, body = await raw_exchange(
            client.port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
        )
        assert (status, body.decode()) == (
            400,
            err(
                "Unsupported `Transfer-Encoding`: send the body with a Content-Length "
                "or chunked alone.",
                code="unsupported_transfer_encoding",
            ),
        )
        assert headers["connection"] == "close"

    async def test_a_content_coding_we_do_not_decode_is_a_415(self, client: Client) -> None:
        """RFC 9110 §15.5.16: an unsupported content coding is a 415, whose Accept-Encoding
        (§12.5.3) says which codings a request may have."""
        status, body, headers = await post(
            client, b"\x0b\x02\x80hi\x03", {"Content-Encoding": "br"}
        )
        assert (status, body) == (
            415,
            err(
                "Unsupported `Content-Encoding`: send the body as identity, gzip or deflate.",
                code="unsupported_content_encoding",
            ),
        )
        assert headers["Accept-Encoding"] == "gzip, deflate"


class TestAuth:
    async def test_no_token(self, client: Client) -> None:
        assert (await post(client, auth=False))[:2] == (
            401,
            err("Unauthorized", "unauthorized", code="invalid_api_key"),
        )

    @pytest.mark.parametrize(
        "value", ["Bearer wrong-token", f"Basic {TOKEN}", "Bearer  ", f"Bearer {TOKEN}x"]
    )
    async def test_wrong_credentials(self, client: Client, value: str) -> None:
        assert (await post(client, HI, {"Authorization": value}, auth=False))[:2] == (
            401,
            err("Unauthorized", "unauthorized", code="invalid_api_key"),
        )

    async def test_the_scheme_is_case_insensitive_and_the_secret_trimmed(
        self, client: Client
    ) -> None:
        headers = {"Authorization": f"bearer   {TOKEN}  "}
        assert (await post(client, HI, headers, auth=False))[0] == 200

    async def test_the_configured_token_is_trimmed_as_the_presented_one_is(
        self, gateway: MakeClient
    ) -> None:
        # As the token file and the environment's: a token pasted with its newline would
        # otherwise match no presented one.
        client = await gateway({"gateway": {"auth": {"token": f" {TOKEN}\n"}}})
        assert (await post(client, HI))[0] == 200

    async def test_a_locked_out_ip_gets_429_even_with_the_right_token(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway({"gateway": {"auth": {"rateLimit": {"exemptLoopback": False}}}})
        wrong = {"Authorization": "Bearer wrong-token"}
        for _ in range(10):
            assert (await post(client, HI, wrong, auth=False))[0] == 401
        for headers in (wrong, AUTH):
            status, text, response_headers = await post(client, HI, headers, auth=False)
            assert (status, text) == (
                429,
                err(
                    "Too many failed authentication attempts. Please try again later.",
                    "rate_limited",
                ),
            )
            assert response_headers["Retry-After"] == "300"

    async def test_the_lockout_also_covers_models(self, gateway: MakeClient) -> None:
        client = await gateway(
            {"gateway": {"auth": {"rateLimit": {"exemptLoopback": False, "maxAttempts": 1}}}}
        )
        await post(client, HI, {"Authorization": "Bearer nope"}, auth=False)
        assert (await client.get("/v1/models", headers=AUTH)).status == 429

    async def test_missing_credentials_are_not_counted(self, gateway: MakeClient) -> None:
        client = await gateway(
            {"gateway": {"auth": {"rateLimit": {"exemptLoopback": False, "maxAttempts": 2}}}}
        )
        for _ in range(5):
            assert (await post(client, auth=False))[0] == 401
        assert (await post(client))[0] == 200

    async def test_success_resets_the_count(self, gateway: MakeClient) -> None:
        client = await gateway(
            {"gateway": {"auth": {"rateLimit": {"exemptLoopback": False, "maxAttempts": 2}}}}
        )
        wrong = {"Authorization": "Bearer nope"}
        await post(client, HI, wrong, auth=False)
        assert (await post(client))[0] == 200
        await post(client, HI, wrong, auth=False)
        assert (await post(client))[0] == 200

    async def test_loopback_is_not_exempt_by_default(self, client: Client) -> None:
        # A web page the user visits is a loopback client too.
        for _ in range(10):
            await post(client, HI, {"Authorization": "Bearer nope"}, auth=False)
        assert (await post(client))[0] == 429

    async def test_loopback_is_exempt_when_configured(self, gateway: MakeClient) -> None:
        client = await gateway({"gateway": {"auth": {"rateLimit": {"exemptLoopback": True}}}})
        for _ in range(12):
            await post(client, HI, {"Authorization": "Bearer nope"}, auth=False)
        assert (await post(client))[0] == 200

    async def test_a_request_with_an_origin_is_never_exempt(self, gateway: MakeClient) -> None:
        client = await gateway({"gateway": {"auth": {"rateLimit": {"exemptLoopback": True}}}})
        page = {"Authorization": "Bearer nope", "Origin": "https://evil.example"}
        for _ in range(10):
            assert (await post(client, HI, page, auth=False))[0] == 401
        assert (await post(client, HI, {**AUTH, "Origin": "https://evil.example"}))[0] == 429
        # A local tool without an Origin keeps its exemption: the page cannot lock it out.
        assert (await post(client))[0] == 200

    async def test_password_mode(self, gateway: MakeClient) -> None:
        client = await gateway({"gateway": {"auth": {"mode": "password", "password": "s3cret"}}})
        assert (await post(client, HI, {"Authorization": "Bearer s3cret"}, auth=False))[0] == 200
        assert (await post(client))[0] == 401  # the token is not the password

    async def test_mode_none_needs_no_credential(self, gateway: MakeClient) -> None:
        client = await gateway({"gateway": {"auth": {"mode": "none"}}})
        assert (await post(client, auth=False))[0] == 200


class TestEnablementAndMethod:
    @pytest.fixture
    async def disabled(self, gateway: MakeClient) -> Client:
        return await gateway(
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": False}}}}}
        )

    async def test_disabled_endpoint_is_404_even_without_auth(self, disabled: Client) -> None:
        not_found = err("Not Found", "not_found_error")
        assert (await post(disabled, auth=False))[:2] == (404, not_found)
        assert (await post(disabled))[:2] == (404, not_found)

    @pytest.mark.parametrize("path", ["/v1/models", "/v1/models/openclaw", "/v1/x"])
    async def test_disabled_endpoint_hides_models_too(self, disabled: Client, path: str) -> None:
        response = await disabled.get(path, headers=AUTH)
        assert response.status == 404

    async def test_disabled_is_checked_before_the_method(self, disabled: Client) -> None:
        assert (await disabled.get(CHAT)).status == 404

    async def test_get_is_405_with_allow_post_before_auth(self, client: Client) -> None:
        response = await client.get(CHAT)
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert await response.text() == err("Method Not Allowed")

    async def test_a_trailing_slash_does_not_match(self, client: Client) -> None:
        response = await client.post(CHAT + "/", data=json.dumps(HI), headers=AUTH)
        assert response.status == 404

    async def test_draining_answers_503_retry_after_1(self, client: Client) -> None:
        client.app[STATE].draining = True
        status, text, headers = await post(client)
        assert (status, text) == (503, err("gateway is shutting down", "api_error"))
        assert headers["Retry-After"] == "1"


class TestModels:
    async def test_the_list_has_every_agent(self, gateway: MakeClient) -> None:
        client = await gateway(TWO_AGENTS)
        response = await client.get("/v1/models", headers=AUTH)
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        ids = [m["id"] for m in (await response.json())["data"]]
        assert ids == ["openclaw", "openclaw/default", "openclaw/main", "openclaw/beta"]

    async def test_the_default_list_exactly(self, client: Client) -> None:
        response = await client.get("/v1/models", headers=AUTH)
        assert await response.text() == (
            '{"object":"list","data":[{"id":"openclaw","object":"model","created":0,'
            '"owned_by":"openclaw","permission":[]},{"id":"openclaw/default","object":"model",'
            '"created":0,"owned_by":"openclaw","permission":[]},{"id":"openclaw/main",'
            '"object":"model","created":0,"owned_by":"openclaw","permission":[]}]}'
        )

    @pytest.mark.parametrize(
        "path", ["/v1/models/openclaw%2Fdefault", "/v1/models/openclaw/default"]
    )
    async def test_retrieve_a_listed_id(self, client: Client, path: str) -> None:
        response = await client.get(path, headers=AUTH)
        assert await response.text() == (
            '{"id":"openclaw/default","object":"model","created":0,"owned_by":"openclaw",'
            '"permission":[]}'
        )

    async def test_retrieve_an_unlisted_id(self, client: Client) -> None:
        response = await client.get("/v1/models/gpt-4o", headers=AUTH)
        assert response.status == 404
        assert await response.text() == err(
            "Model 'gpt-4o' not found.", param="model", code="model_not_found"
        )

    async def test_an_empty_id(self, client: Client) -> None:
        response = await client.get("/v1/models/", headers=AUTH)
        assert (response.status, await response.text()) == (400, err("Missing model id."))

    async def test_bad_percent_encoding(self, client: Client) -> None:
        head = request_head("GET", "/v1/models/openclaw%zz", AUTH)
        status, _, body = await raw_exchange(client.port, head)
        assert (status, body.decode()) == (400, err("Invalid model id encoding."))

    async def test_head_has_no_body(self, client: Client) -> None:
        response = await client.head("/v1/models", headers=AUTH)
        assert (response.status, await response.read()) == (200, b"")

    async def test_other_methods_are_405(self, client: Client) -> None:
        response = await client.post("/v1/models/openclaw", headers=AUTH)
        assert (response.status, response.headers["Allow"]) == (405, "GET, HEAD")

    async def test_auth_is_required(self, client: Client) -> None:
        assert (await client.get("/v1/models")).status == 401
        assert (await client.get("/v1/models/openclaw")).status == 401

    async def test_a_double_slash_is_merged(self, client: Client) -> None:
        response = await client.get("/v1//models", headers=AUTH)
        assert response.status == 200
        assert len((await response.json())["data"]) == 3

    async def test_a_double_slash_works_for_chat_too(self, client: Client) -> None:
        response = await client.post("/v1//chat/completions", data=json.dumps(HI), headers=AUTH)
        assert response.status == 200

    async def test_a_leading_double_slash(self, client: Client) -> None:
        status, _, _ = await raw_exchange(client.port, request_head("GET", "//v1/models", AUTH))
        assert status == 200

    @pytest.mark.parametrize("path", ["/v1//nothing", "/v1//", "//v1/nothing"])
    async def test_a_double_slash_to_no_route_is_404(self, client: Client, path: str) -> None:
        status, _, body = await raw_exchange(client.port, request_head("GET", path, AUTH))
        assert (status, body.decode()) == (404, err("Not Found", "not_found_error"))

    async def test_a_preflight_through_a_double_slash_to_no_route(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(CORS)
        preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        status, headers, _ = await raw_exchange(
            client.port, request_head("OPTIONS", "/v1//nothing", preflight)
        )
        assert (status, headers["access-control-allow-origin"]) == (204, ORIGIN)


ORIGIN = "https://app.example"
CORS = {"gateway": {"http": {"cors": {"allowedOrigins": [ORIGIN]}}}}


class TestCors:
    async def test_an_allowed_origin_gets_the_headers_on_a_stream(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(CORS)
        _, _, headers = await post(client, {**HI, "stream": True}, {"Origin": ORIGIN})
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
        assert headers["Vary"] == "Origin"
        assert headers["Access-Control-Expose-Headers"] == (
            "x-openclaw-session-key, x-openclaw-model-used, x-request-id"
        )

    async def test_errors_carry_them_too(self, gateway: MakeClient) -> None:
        client = await gateway(CORS)
        _, _, headers = await post(client, HI, {"Origin": ORIGIN}, auth=False)
        assert headers["Access-Control-Allow-Origin"] == ORIGIN

    async def test_another_origin_gets_none(self, gateway: MakeClient) -> None:
        client = await gateway(CORS)
        _, _, headers = await post(client, HI, {"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers

    @pytest.mark.parametrize("path", [CHAT, "/v1/models", "/v1/models/openclaw", "/v1/other"])
    async def test_preflight_is_204_without_auth(self, gateway: MakeClient, path: str) -> None:
        client = await gateway(CORS)
        response = await client.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-stainless-foo",
            },
        )
        assert response.status == 204
        headers = response.headers
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
        assert headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
        assert headers["Access-Control-Max-Age"] == "600"
        allowed = [h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")]
        for name in (
            "authorization",
            "content-type",
            "x-openclaw-agent-id",
            "x-openclaw-session-key",
            "x-stainless-os",
            "x-stainless-foo",
        ):
            assert name in allowed
        assert len(allowed) == len(set(allowed))

    async def test_a_preflight_never_allows_the_headers_a_proxy_sets(
        self, gateway: MakeClient
    ) -> None:
        # Sent by a page, they would choose the address the failed-auth limiter counts.
        client = await gateway(CORS)
        asked = "Authorization, X-Forwarded-For, forwarded, X-Real-IP, x-foo, X-Forwarded-Proto"
        response = await client.options(
            CHAT,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
        )
        assert response.status == 204
        allowed = [
            h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
        ]
        assert "x-foo" in allowed
        assert not {"x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-proto"} & set(allowed)

    async def test_a_disallowed_origins_preflight_is_403_without_cors(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(CORS)
        response = await client.options(
            CHAT,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.status == 403
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]

    async def test_no_origin_is_allowed_by_default(self, client: Client) -> None:
        response = await client.options(
            CHAT, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        )
        assert response.status == 403

    @pytest.mark.parametrize("origin", [b"\x87\x9fM\x88o", b"https://\xc3\xa9.example", b"\xf8"])
    async def test_an_origin_that_is_not_ascii_is_no_origin_even_for_a_wildcard(
        self, gateway: MakeClient, origin: bytes
    ) -> None:
        # No browser sends one (RFC 6454 serializes origins in ASCII), and aiohttp reads its
        # bytes as UTF-8: echoed, the allowed origin named something else than was sent.
        client = await gateway({"gateway": {"http": {"cors": {"allowedOrigins": ["*"]}}}})
        headers = {"Origin": origin, "Access-Control-Request-Method": b"POST"}
        preflight = await raw_exchange(client.port, request_bytes("OPTIONS", CHAT, headers))
        assert preflight[0] == 403
        assert "access-control-allow-origin" not in preflight[1]
        asked = request_bytes("GET", "/v1/models", {**AUTH, "Origin": origin})
        status, answered, _ = await raw_exchange(client.port, asked)
        assert status == 200
        assert "access-control-allow-origin" not in answered

    async def test_a_wildcard_allows_any_origin(self, gateway: MakeClient) -> None:
        client = await gateway({"gateway": {"http": {"cors": {"allowedOrigins": ["*"]}}}})
        _, _, headers = await post(client, HI, {"Origin": "https://any.example"})
        assert headers["Access-Control-Allow-Origin"] == "https://any.example"

    @pytest.mark.parametrize(
        ("method", "path", "headers"),
        [
            ("POST", CHAT, {}),
            ("POST", CHAT, {"Origin": "https://evil.example"}),
            ("POST", CHAT, {"Origin": ORIGIN}),
            ("OPTIONS", CHAT, {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}),
            (
                "OPTIONS",
                CHAT,
                {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            ),
            ("GET", "/v1/models", {"Origin": "https://evil.example"}),
            ("GET", "/healthz", {}),
        ],
    )
    async def test_every_answer_varies_on_origin_once_cors_is_on(
        self, gateway: MakeClient, method: str, path: str, headers: dict[str, str]
    ) -> None:
        # A cache between browser and gateway must not give one origin's answer (with or
        # without CORS headers) to another origin, nor to a request without one.
        client = await gateway(CORS)
        response = await client.request(
            method,
            path,
            data=json.dumps(HI),
            headers={**AUTH, "Content-Type": "application/json", **headers},
        )
        assert response.headers.getall("Vary") == ["Origin"]

    async def test_no_vary_while_cors_is_off(self, client: Client) -> None:
        _, _, headers = await post(client, HI, {"Origin": ORIGIN})
        assert "Vary" not in headers


class TestStreaming:
    async def test_keepalive_comments_while_the_agent_is_silent(self, gateway: MakeClient) -> None:
        client = await gateway(
            {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 300}}]}},
            AppOptions(sse_keepalive_seconds=0.05),
        )
        _, text, _ = await post(
            client, {"messages": [{"role": "user", "content": "a"}], "stream": True}
        )
        blocks = text.split("\n\n")
        assert ": keepalive" in blocks
        assert blocks.index(": keepalive") > 1  # between content chunks, after the role chunk
        assert text.endswith(DONE)

    async def test_no_keepalive_while_text_keeps_coming(self, gateway: MakeClient) -> None:
        # 30 words 20 ms apart outlast the keepalive interval; no gap reaches it.
        client = await gateway(
            {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 20}}]}},
            AppOptions(sse_keepalive_seconds=0.4),
        )
        words = " ".join(f"w{i}" for i in range(30))
        _, text, _ = await post(
            client, {"messages": [{"role": "user", "content": words}], "stream": True}
        )
        assert ": keepalive" not in text.split("\n\n")
        assert text.endswith(DONE)

    @pytest.mark.parametrize(
        ("count", "size"),
        [
            (400, 10_000),
            # Deltas of 400 KB: one alone is more than the kernel still takes plus the
            # transport's 64 KiB, so writing it leaves the socket to drain.
            (10, 400_000),
        ],
    )
    async def test_a_client_that_stops_reading_for_a_while_gets_every_delta_in_order(
        self, gateway: MakeClient, caplog: pytest.LogCaptureFixture, count: int, size: int
    ) -> None:
        # 4 MB of chunks (more than the kernel buffers) to a client that reads nothing
        # for a while: the gateway's writes back up, the later deltas wait for the socket.
        client = await gateway(
            {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 1}}]}}
        )
        words = " ".join(f"w{i:03}" + "x" * size for i in range(count))
        body = json.dumps({"messages": [{"role": "user", "content": words}], "stream": True})
        head = request_head(
            "POST", CHAT, {**AUTH, "Content-Type": "application/json",
                           "Content-Length": str(len(body))},
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        with NoErrorLogs(caplog) as logs, socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", client.port))
            await loop.sock_sendall(sock, head + body.encode())
            await asyncio.sleep(0.5)  # reading nothing while the turn streams
            received = asyncio.StreamReader()
            async with asyncio.timeout(10):
                while data := await loop.sock_recv(sock, 65536):
                    received.feed_data(data)
        received.feed_eof()
        response = await read_response(received)
        assert response.status == 200
        events = sse_events(response.body.decode())
        assert events[-1] == "[DONE]"
        text = "".join(
            json.loads(e)["choices"][0]["delta"].get("content", "")
            for e in events[:-1]
            if json.loads(e)["choices"]
        )
        assert text == f"[turn 1] {words}"
        assert logs.errors() == []

    async def test_keepalive_while_queued_behind_the_sessions_turn(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(
            {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 150}}]}},
            AppOptions(sse_keepalive_seconds=0.05),
        )
        session = {"x-openclaw-session-key": "busy"}
        first = asyncio.create_task(post(client, HI, session))
        await session_runs(client, "agent:main:busy", 1)  # its words are 150 ms apart
        _, text, _ = await post(client, {**HI, "stream": True}, session)
        await first
        blocks = text.split("\n\n")
        assert blocks[1] == ": keepalive"  # right after the role chunk, before any content
        assert '"content":"[turn"' in text and '" 2]"' in text


# 3,000,000 empty objects (9 MB) and a lone surrogate escape: parsing the body and walking
# every container to repair the escape takes seconds.
SLOW_TO_PARSE = '{"stream":"yes","pad":[' + ",".join(["{}"] * 3_000_000) + '],"user":"\\ud800"}'
# 500,000 messages (17.5 MB): building the conversation from them takes seconds.
SLOW_TO_BUILD = json.dumps(
    {"messages": [{"role": "assistant", "content": "a"}] * 500_000}, separators=(",", ":")
)


class TestLargeBodiesHoldUpNoOtherClient:
    """`GET /healthz`, sent once a slow step on a body began, is answered first only if that
    step let the event loop run."""

    async def test_a_body_slow_to_parse(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        parsing = parse_started(monkeypatch, openai_wire, len(SLOW_TO_PARSE))
        order, answer = await order_of_answers(client, CHAT, SLOW_TO_PARSE, parsing)
        assert answer == (
            400,
            err("stream: Expected boolean, received string", param="stream"),
        )
        assert order == ["/healthz", CHAT]

    async def test_a_conversation_slow_to_build(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        building = call_started(monkeypatch, openai_http, "build_conversation")
        order, answer = await order_of_answers(client, CHAT, SLOW_TO_BUILD, building)
        assert answer == (400, err("Missing user message in `messages`.", param="messages"))
        assert order == ["/healthz", CHAT]
