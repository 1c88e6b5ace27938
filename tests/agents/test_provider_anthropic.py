"""The `anthropic-messages` provider (agents-sessions.md §6.4, §6.5) against a real fake server."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import tracemalloc
from typing import Any, ClassVar

import attrs
import pytest

from agents.config import ModelEntry, ProviderConfig
from agents.errors import (
    MalformedStream,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
)
from agents.providers.anthropic_messages import (
    AnthropicMessagesProvider,
    MessageEventDecoder,
    anthropic_messages,
    messages_url,
)
from agents.providers.base import (
    MAX_THINKING_BLOCKS,
    MAX_TOOL_CALLS,
    ChatMessage,
    Finish,
    ImageInput,
    PartialUsage,
    ProviderEvent,
    ReasoningDelta,
    SignedThinking,
    TextDelta,
    ThinkingBlock,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from agents.providers.pool import Timeouts
from agents.providers.sse import SSEEvent
from agents.providers.upstream_client import UpstreamClient
from tests.support.counting import CountedId
from tests.support.upstreams import (
    API_KEY,
    SECRET_BODY_MARKER,
    FakeAnthropic,
    FakeToolCall,
    JSONAnswer,
    Raw,
    Stall,
    Status,
    Stream,
    assert_no_leak,
    closed_port,
    collect,
    events_of,
    provider_request,
    raw_answer,
    sent_body,
)

TIMEOUTS = Timeouts(connect=1, idle=0.3)
PNG = ImageInput("image/png", "iVBORw0KGgo=", 8)
JPEG = ImageInput("image/jpeg", "/9j/4AAQ", 6)


@pytest.fixture
def provider(http: UpstreamClient) -> AnthropicMessagesProvider:
    return AnthropicMessagesProvider(http, TIMEOUTS)


def events(*pairs: tuple[str | None, dict[str, Any]]) -> bytes:
    """Raw SSE: (event name or None, data object) pairs."""
    out = []
    for name, obj in pairs:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(obj, ensure_ascii=False)}\n\n")
    return "".join(out).encode()


def start(input_tokens: int = 3, **usage: int) -> tuple[str, dict[str, Any]]:
    message = {"type": "message", "role": "assistant", "content": []}
    return "message_start", {
        "type": "message_start",
        "message": {**message, "usage": {"input_tokens": input_tokens, **usage}},
    }


def text(delta: str) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": delta},
    }


def stop(reason: str = "end_turn", output: int = 2) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason},
                "usage": {"output_tokens": output},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


class TestRequest:
    async def test_posts_to_v1_messages_under_base_url(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        await collect(provider, anthropic_upstream)
        assert anthropic_upstream.last.path == "/v1/messages"

    @pytest.mark.parametrize(
        ("base_url", "url"),
        [
            ("", "https://api.anthropic.com/v1/messages"),
            ("https://proxy.test/", "https://proxy.test/v1/messages"),
            ("https://proxy.test/a?key=1", "https://proxy.test/a/v1/messages?key=1"),
            ("https://proxy.test/a/?key=1#x", "https://proxy.test/a/v1/messages?key=1"),
            # The API's root given with its version, as OpenAI-compatible base URLs are:
            # not `/v1/v1/messages` (a 404 on every turn).
            ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
            ("https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1/messages"),
            ("https://proxy.test/V1?key=1", "https://proxy.test/V1/messages?key=1"),
            ("https://proxy.test/xv1", "https://proxy.test/xv1/v1/messages"),
        ],
    )
    def test_messages_url(self, base_url: str, url: str) -> None:
        assert messages_url(base_url) == url

    async def test_minimal_body_is_exact_with_default_max_tokens(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        assert await sent_body(provider, anthropic_upstream, text="hello") == {
            "model": "fake-model",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": "hello"}],
            "stream": True,
        }

    async def test_system_prompt_is_the_system_field(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = await sent_body(provider, anthropic_upstream, system="be brief")
        assert body["system"] == "be brief"
        assert body["messages"] == [{"role": "user", "content": "hi"}]

    async def test_headers(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        await collect(provider, anthropic_upstream)
        headers = anthropic_upstream.last.headers
        assert headers["x-api-key"] == API_KEY
        assert headers["anthropic-version"] == "2023-06-01"
        assert headers["content-type"] == "application/json"
        assert "Authorization" not in headers

    async def test_provider_headers_are_added_and_override(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        config = anthropic_upstream.provider_config(
            headers={"Anthropic-Version": "2024-01-01", "anthropic-beta": "feature-x"}
        )
        await collect(provider, anthropic_upstream, config=config)
        headers = anthropic_upstream.last.headers
        assert headers.getall("anthropic-version") == ["2024-01-01"]
        assert headers["anthropic-beta"] == "feature-x"

    async def test_no_api_key_header_without_a_key(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        config = anthropic_upstream.provider_config(api_key=None)
        await collect(provider, anthropic_upstream, config=config)
        assert "x-api-key" not in anthropic_upstream.last.headers

    @pytest.mark.parametrize(
        ("params", "model_max", "expected"),
        [
            ({"max_tokens": 10}, 500, 10),
            ({"max_completion_tokens": 20}, 500, 20),
            ({"max_completion_tokens": 20, "max_tokens": 10}, None, 20),
            ({}, 500, 500),
            ({}, None, 4096),
        ],
    )
    async def test_max_tokens_is_client_cap_else_model_else_4096(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        params: dict[str, int],
        model_max: int | None,
        expected: int,
    ) -> None:
        config = anthropic_upstream.provider_config(
            models=(ModelEntry("fake-model", max_tokens=model_max),)
        )
        body = await sent_body(provider, anthropic_upstream, config=config, params=params)
        assert body["max_tokens"] == expected
        assert "max_completion_tokens" not in body

    @pytest.mark.parametrize(("given", "sent"), [(1.5, 1), (2, 1), (-0.5, 0), (0.7, 0.7), (0, 0)])
    async def test_temperature_is_clamped_to_0_1(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        given: float,
        sent: float,
    ) -> None:
        body = await sent_body(provider, anthropic_upstream, params={"temperature": given})
        assert body["temperature"] == sent

    @pytest.mark.parametrize(("stop", "sequences"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
    async def test_stop_becomes_stop_sequences(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        stop: str | list[str],
        sequences: list[str],
    ) -> None:
        body = await sent_body(provider, anthropic_upstream, params={"stop": stop})
        assert body["stop_sequences"] == sequences
        assert "stop" not in body

    @pytest.mark.parametrize(
        ("stop", "sequences"), [(["\n", "END", " \t"], ["END"]), ("\n", None), (["\n\n"], None)]
    )
    async def test_whitespace_only_stop_sequences_are_dropped(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        stop: str | list[str],
        sequences: list[str] | None,
    ) -> None:
        # Anthropic answers 400 "stop_sequences: each stop sequence must contain
        # non-whitespace" to the `stop: ["\n"]` OpenAI clients often send.
        body = await sent_body(provider, anthropic_upstream, params={"stop": stop})
        assert body.get("stop_sequences") == sequences

    async def test_unsupported_params_are_dropped_known_ones_pass(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        params = {
            "seed": 1,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.5,
            "response_format": {"type": "json_object"},
            "delayMs": 5,
            "logit_bias": {},
            "top_p": 0.8,
            "top_k": 5,
        }
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert body == {
            "model": "fake-model",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "top_p": 0.8,
            "top_k": 5,
        }

    @pytest.mark.parametrize(
        ("params", "sent"),
        [
            ({"temperature": 0.5, "top_p": 0.9}, {"temperature": 0.5}),
            ({"temperature": 0.5, "top_p": 1}, {"temperature": 0.5}),
            ({"top_p": 0.9}, {"top_p": 0.9}),
            ({"temperature": 0.5}, {"temperature": 0.5}),
        ],
    )
    async def test_temperature_and_top_p_are_never_sent_together(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        params: dict[str, Any],
        sent: dict[str, Any],
    ) -> None:
        # Claude's models since Opus 4.1 refuse both: "`temperature` and `top_p` cannot both
        # be specified for this model. Please use only one." OpenAI clients often send both
        # (top_p 1 as a default); temperature is the one Anthropic says to change.
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert {k: body[k] for k in ("temperature", "top_p") if k in body} == sent

    async def test_consecutive_same_role_messages_are_joined(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        history = (
            ChatMessage("user", "a"),
            ChatMessage("user", "b"),
            ChatMessage("assistant", "c"),
            ChatMessage("assistant", "d"),
        )
        body = await sent_body(provider, anthropic_upstream, text="e", history=history)
        assert body["messages"] == [
            {"role": "user", "content": "a\n\nb"},
            {"role": "assistant", "content": "c\n\nd"},
            {"role": "user", "content": "e"},
        ]

    async def test_leading_assistant_messages_are_dropped(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        history = (ChatMessage("assistant", "orphan"), ChatMessage("user", "q"))
        body = await sent_body(provider, anthropic_upstream, text="r", history=history)
        assert body["messages"] == [{"role": "user", "content": "q\n\nr"}]

    async def test_images_are_base64_blocks_before_the_text(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = await sent_body(provider, anthropic_upstream, text="what", images=(PNG, JPEG))
        assert body["messages"] == [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": PNG.data_b64,
                        },
                    },
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": JPEG.data_b64,
                        },
                    },
                    {"type": "text", "text": "what"},
                ],
            }
        ]

    @pytest.mark.parametrize(
        ("declared", "data", "sent"),
        [
            ("image/jpeg", PNG.data_b64, "image/png"),
            ("image/png", JPEG.data_b64, "image/jpeg"),
            ("image/png", base64.b64encode(b"GIF89a\x01\0\x01\0").decode(), "image/gif"),
            ("image/png", base64.b64encode(b"RIFF\0\0\0\0WEBPVP8 ").decode(), "image/webp"),
            ("image/webp", base64.b64encode(b"not a known format").decode(), "image/webp"),
        ],
        ids=["png-as-jpeg", "jpeg-as-png", "gif-as-png", "webp-as-png", "unknown"],
    )
    async def test_an_image_goes_with_the_type_its_bytes_are(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        declared: str,
        data: str,
        sent: str,
    ) -> None:
        # Anthropic refuses an image whose bytes are of another type than it is declared
        # ("The image was specified using the image/jpeg media type, but the image appears
        # to be a image/png image"): the turn failed with a 502.
        image = ImageInput(declared, data, len(base64.b64decode(data)))
        body = await sent_body(provider, anthropic_upstream, text="", images=(image,))
        source = body["messages"][0]["content"][0]["source"]
        assert (source["media_type"], source["data"]) == (sent, data)

    async def test_image_only_turn_has_no_empty_text_block(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = await sent_body(provider, anthropic_upstream, text="", images=(PNG,))
        assert [block["type"] for block in body["messages"][0]["content"]] == ["image"]


class TestStreaming:
    async def test_deltas_then_usage_then_finish(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("Hel", "lo", " world"), usage=(11, 3)))
        assert await collect(provider, anthropic_upstream) == [
            TextDelta("Hel"),
            TextDelta("lo"),
            TextDelta(" world"),
            Usage(11, 3),
            Finish("stop"),
        ]

    @pytest.mark.parametrize(
        ("wire", "ours"),
        [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
            ("tool_use", "tool_calls"),
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
        ],
    )
    async def test_stop_reason_mapping(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        wire: str,
        ours: str,
    ) -> None:
        anthropic_upstream.script(Stream(("x",), finish=wire))
        assert (await collect(provider, anthropic_upstream))[-1] == Finish(ours)

    async def test_crlf_and_comments(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("a", "b"), newline="\r\n", comments=True))
        assert await collect(provider, anthropic_upstream) == [
            TextDelta("a"),
            TextDelta("b"),
            Usage(3, 2),
            Finish("stop"),
        ]

    async def test_events_without_event_lines_dispatch_on_data_type(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = events(*((None, obj) for _, obj in (start(4), text("x"), *stop(output=1))))
        anthropic_upstream.script(Raw((body,)))
        assert await collect(provider, anthropic_upstream) == [
            TextDelta("x"),
            Usage(4, 1),
            Finish("stop"),
        ]

    async def test_thinking_is_reasoning_and_unknown_events_are_ignored(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        thinking = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        }
        body = events(
            start(),
            ("content_block_delta", thinking),
            ("brand_new_event", {"type": "brand_new_event"}),
            ("ping", {"type": "ping"}),
            text("answer"),
            *stop(),
        )
        anthropic_upstream.script(Raw((body,)))
        assert await collect(provider, anthropic_upstream) == [
            ReasoningDelta("hmm"),
            TextDelta("answer"),
            Usage(3, 2),
            Finish("stop"),
        ]

    async def test_cached_prompt_tokens_count_as_input(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        first = start(5, cache_creation_input_tokens=100, cache_read_input_tokens=20)
        anthropic_upstream.script(Raw((events(first, text("x"), *stop(output=7)),)))
        assert Usage(125, 7) in await collect(provider, anthropic_upstream)

    @pytest.mark.parametrize(
        ("first", "delta_usage", "usage"),
        [
            # Servers that count the prompt only at the end (message_start says 0).
            (start(0), {"input_tokens": 12, "output_tokens": 7}, Usage(12, 7)),
            # Server tools: the cumulative count of message_delta is the final one.
            (start(5), {"input_tokens": 40, "output_tokens": 7}, Usage(40, 7)),
            # A delta's count below message_start's (0, or no cache fields) lowers nothing.
            (start(5, cache_read_input_tokens=20), {"input_tokens": 0, "output_tokens": 7},
             Usage(25, 7)),
        ],
    )  # fmt: skip
    async def test_message_delta_input_counts_are_cumulative(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        first: tuple[str, dict[str, Any]],
        delta_usage: dict[str, int],
        usage: Usage,
    ) -> None:
        delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
        body = events(first, text("x"), ("message_delta", {**delta, "usage": delta_usage}))
        anthropic_upstream.script(Raw((body,)))
        assert await collect(provider, anthropic_upstream) == [
            TextDelta("x"),
            usage,
            Finish("stop"),
        ]

    async def test_without_usage_no_usage_is_reported(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("x",), usage=None))
        assert await collect(provider, anthropic_upstream) == [TextDelta("x"), Finish("stop")]

    @pytest.mark.parametrize(
        "first", [start(10**30), start(-1), start(5, cache_read_input_tokens=2**53 - 5)]
    )
    async def test_a_count_no_model_reports_is_not_reported(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        first: tuple[str, dict[str, Any]],
    ) -> None:
        # JSON allows any integer; beyond 64 bits it would fail the session's write. The
        # output's count is the turn's (the session estimates the prompt's).
        anthropic_upstream.script(Raw((events(first, text("x"), *stop(output=7)),)))
        assert await collect(provider, anthropic_upstream) == [
            TextDelta("x"),
            PartialUsage(None, 7),
            Finish("stop"),
        ]

    async def test_events_split_across_network_reads(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = events(start(), text("héllo"), *stop())
        cut = body.index("é".encode()) + 1
        anthropic_upstream.script(Raw((body[:cut], body[cut:]), delay=0.02))
        assert [
            e for e in await collect(provider, anthropic_upstream) if isinstance(e, TextDelta)
        ] == [TextDelta("héllo")]

    async def test_idle_timeout_is_between_reads_not_total(
        self, http: UpstreamClient, anthropic_upstream: FakeAnthropic
    ) -> None:
        # 5 gaps of 0.25 s: 1.25 s in total, longer than the 1 s idle timeout (each gap a
        # quarter of it: a loaded host may stretch a gap, not four times).
        provider = AnthropicMessagesProvider(http, Timeouts(connect=1, idle=1))
        anthropic_upstream.script(Stream(tuple("abcdef"), delay=0.25))
        got = await collect(provider, anthropic_upstream)
        assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "abcdef"

    async def test_eof_after_message_delta_without_message_stop_is_complete(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("x",), end=False))
        assert (await collect(provider, anthropic_upstream))[-1] == Finish("stop")

    async def test_json_answer_is_one_delta(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(JSONAnswer("whole", finish="max_tokens", usage=(4, 1)))
        assert await collect(provider, anthropic_upstream) == [
            TextDelta("whole"),
            Usage(4, 1),
            Finish("length"),
        ]


class TestFailures:
    async def test_429_with_retry_after(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Status(429, {"Retry-After": "7"}))
        with pytest.raises(UpstreamRateLimited) as caught:
            await collect(provider, anthropic_upstream)
        assert caught.value.retry_after == 7
        assert_no_leak(caught.value)

    async def test_429_with_retry_after_ms(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Status(429, {"retry-after-ms": "2001"}))
        with pytest.raises(UpstreamRateLimited) as caught:
            await collect(provider, anthropic_upstream)
        assert caught.value.retry_after == 3

    @pytest.mark.parametrize("status", [401, 403])
    async def test_auth_failures(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, status: int
    ) -> None:
        anthropic_upstream.script(Status(status))
        with pytest.raises(UpstreamAuthFailed) as caught:
            await collect(provider, anthropic_upstream)
        assert caught.value.status == status
        assert_no_leak(caught.value)

    @pytest.mark.parametrize("status", [400, 500, 529])
    async def test_other_statuses(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, status: int
    ) -> None:
        anthropic_upstream.script(Status(status))
        with pytest.raises(UpstreamStatusError) as caught:
            await collect(provider, anthropic_upstream)
        assert caught.value.status == status
        assert_no_leak(caught.value)

    async def test_connection_refused(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        config: ProviderConfig = attrs.evolve(
            anthropic_upstream.provider_config(), base_url=f"http://127.0.0.1:{closed_port()}"
        )
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, anthropic_upstream, config=config)
        assert type(caught.value) is UpstreamError

    async def test_stall_after_headers_is_an_idle_timeout(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stall())
        began = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await collect(provider, anthropic_upstream)
        assert 0.25 < time.monotonic() - began < 1.0

    async def test_ping_events_alone_time_out_with_no_reply_progress(
        self, http: UpstreamClient, anthropic_upstream: FakeAnthropic
    ) -> None:
        provider = AnthropicMessagesProvider(http, Timeouts(connect=1, idle=0.3, progress=0.5))
        ping = events(("ping", {"type": "ping"}))
        anthropic_upstream.script(Raw((events(start(), text("a")), *(ping,) * 60), delay=0.05))
        got: list[ProviderEvent] = []
        began = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await provider.stream(
                provider_request(anthropic_upstream.provider_config()), got.append
            )
        assert 0.45 < time.monotonic() - began < 1.5
        assert got == [TextDelta("a")]
        await anthropic_upstream.last.wait_gone()

    async def test_stall_mid_stream_is_an_idle_timeout(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("a", "b", "c"), stall_after=1))
        got: list[ProviderEvent] = []
        with pytest.raises(UpstreamTimeout):
            await provider.stream(
                provider_request(anthropic_upstream.provider_config()), got.append
            )
        assert got == [TextDelta("a")]
        await anthropic_upstream.last.wait_gone()

    async def test_in_stream_error_event(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("a", "b"), error_after=1))  # overloaded_error
        got: list[ProviderEvent] = []
        with pytest.raises(UpstreamStatusError) as caught:
            await provider.stream(
                provider_request(anthropic_upstream.provider_config()), got.append
            )
        assert got == [TextDelta("a")]
        assert caught.value.status == 529
        assert caught.value.message == "upstream provider error"
        assert_no_leak(caught.value)

    @pytest.mark.parametrize(
        ("kind", "error", "status"),
        [
            ("invalid_request_error", UpstreamStatusError, 400),
            ("request_too_large", UpstreamStatusError, 413),
            ("not_found_error", UpstreamStatusError, 404),
            ("rate_limit_error", UpstreamStatusError, 429),
            ("authentication_error", UpstreamStatusError, 401),
            ("permission_error", UpstreamStatusError, 403),
            ("api_error", UpstreamStatusError, 500),
            ("overloaded_error", UpstreamStatusError, 529),
            ("some_later_error", MalformedStream, None),
            (None, MalformedStream, None),
        ],
    )
    async def test_an_error_event_is_classified_by_its_type(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        kind: str | None,
        error: type[UpstreamError],
        status: int | None,
    ) -> None:
        # The statuses Anthropic answers these types with before a stream, kept (a 400 marks
        # the turn refused); in a stream each is an upstream error (spec §6.5: 502).
        body = {"type": kind, "message": SECRET_BODY_MARKER} if kind else SECRET_BODY_MARKER
        raw = events(start(), ("error", {"type": "error", "error": body}))
        anthropic_upstream.script(Raw((raw,)))
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, anthropic_upstream)
        assert type(caught.value) is error
        assert getattr(caught.value, "status", None) == status
        assert_no_leak(caught.value)

    async def test_malformed_data_line(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = events(start(), text("ok")) + b"event: content_block_delta\ndata: {broken\n\n"
        anthropic_upstream.script(Raw((body,)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    async def test_delta_of_the_wrong_shape(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = events(start(), ("content_block_delta", {"type": "content_block_delta"}))
        anthropic_upstream.script(Raw((body,)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    @pytest.mark.parametrize(
        "block",
        [{"type": "text", "text": 5}, {"type": "text", "text": {"a": 1}},
         {"type": "thinking", "thinking": ["x"]}, {"type": "thinking", "thinking": 7}],
    )  # fmt: skip
    async def test_a_block_start_whose_text_is_not_text_is_malformed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, block: Any
    ) -> None:
        # It was relayed as Python's repr of it: `{'a': 1}` as the reply's text.
        started = {"type": "content_block_start", "index": 0, "content_block": block}
        body = events(start(), ("content_block_start", started), *stop(), ("message_stop", {}))
        anthropic_upstream.script(Raw((body,)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    @pytest.mark.parametrize(
        "block",
        [{"type": "text", "text": 5}, {"type": "text", "text": {"a": 1}},
         {"type": "thinking", "thinking": ["x"], "signature": "s"},
         {"type": "thinking", "thinking": 7, "signature": "s"}, "hi", ["hi"], None],
    )  # fmt: skip
    async def test_a_json_answers_block_of_the_wrong_shape_is_malformed_as_in_a_stream(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, block: Any
    ) -> None:
        # It was left out: the client got the rest of the reply as if whole, where the same
        # block in a stream fails the turn.
        answer = {"type": "message", "content": [{"type": "text", "text": "hi"}, block],
                  "stop_reason": "end_turn"}  # fmt: skip
        anthropic_upstream.script(
            Raw((json.dumps(answer).encode(),), content_type="application/json")
        )
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    @pytest.mark.parametrize(
        ("kind", "error"),
        [("invalid_request_error", UpstreamStatusError), ("rate_limit_error", UpstreamStatusError),
         ("no_such_error", MalformedStream)],
    )  # fmt: skip
    async def test_a_json_error_with_200_counts_as_the_status_its_type_names(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        kind: str,
        error: type[UpstreamError],
    ) -> None:
        answer = {"type": "error", "error": {"type": kind, "message": SECRET_BODY_MARKER}}
        anthropic_upstream.script(
            Raw((json.dumps(answer).encode(),), content_type="application/json")
        )
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, anthropic_upstream)
        assert type(caught.value) is error
        assert_no_leak(caught.value)

    @pytest.mark.parametrize("content_type", ["application/json", "text/event-stream"])
    async def test_a_refusal_in_a_200_keeps_its_reason_for_the_client(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        content_type: str,
    ) -> None:
        """An error answer or event naming a refusal (`invalid_request_error`, 400) says why,
        as a refusing status does (`UpstreamStatusError.reason`), the key scrubbed."""
        answer = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: sk-test-key"},
        }
        piece = json.dumps(answer).encode()
        if content_type == "text/event-stream":
            piece = b"event: error\ndata: " + piece + b"\n\n"
        anthropic_upstream.script(Raw((piece,), content_type=content_type))
        with pytest.raises(UpstreamStatusError) as caught:
            await collect(provider, anthropic_upstream)
        assert (caught.value.status, caught.value.reason) == (400, "max_tokens: [redacted]")

    @pytest.mark.parametrize("reason", [["end_turn"], {"type": "end_turn"}])
    async def test_json_answer_with_a_stop_reason_of_the_wrong_shape_is_malformed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, reason: Any
    ) -> None:
        # A list or object is no dict key: a TypeError escaped, the turn failed as an
        # internal error (500) and the next model was not tried.
        answer = {"type": "message", "content": [{"type": "text", "text": "hi"}]}
        answer["stop_reason"] = reason
        anthropic_upstream.script(
            Raw((json.dumps(answer).encode(),), content_type="application/json")
        )
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    async def test_message_stop_ends_the_reply_when_the_body_never_ends(
        self, http: UpstreamClient, anthropic_upstream: FakeAnthropic
    ) -> None:
        # The body's last chunk never comes after message_stop: the reply was whole, yet the
        # turn failed with a timeout (504) once the idle timeout passed.
        body = events(start(), text("x"), *stop())
        data = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
        )
        provider = AnthropicMessagesProvider(http, Timeouts(connect=1, idle=30))
        async with raw_answer(data) as upstream:
            config = attrs.evolve(
                anthropic_upstream.provider_config(), base_url=f"http://127.0.0.1:{upstream.port}"
            )
            started = time.monotonic()
            got = await collect(provider, anthropic_upstream, config=config)
            assert time.monotonic() - started < 5
            assert got == [TextDelta("x"), Usage(3, 2), Finish("stop")]
            await asyncio.wait_for(upstream.gone.wait(), 1)  # closed, never pooled

    async def test_chunked_body_cut_after_the_stop_reason_is_a_complete_reply(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # message_delta with its stop reason came, then the connection broke before
        # message_stop and the body's last chunk: the reply is whole.
        body = events(start(), text("x"), stop()[0])
        data = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
        )
        async with raw_answer(data, hang_up=True) as upstream:
            config = attrs.evolve(
                anthropic_upstream.provider_config(), base_url=f"http://127.0.0.1:{upstream.port}"
            )
            got = await collect(provider, anthropic_upstream, config=config)
        assert got == [TextDelta("x"), Usage(3, 2), Finish("stop")]

    async def test_eof_before_stop_is_malformed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("a",), finish_event=False, end=False))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    async def test_connection_cut_mid_body(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(("a", "b", "c"), drop_after=2))
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, anthropic_upstream)
        assert type(caught.value) is UpstreamError


class TestCancellation:
    async def test_cancelled_consumer_closes_the_upstream_connection(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(tuple(f" w{i}" for i in range(100)), delay=0.05))
        got: list[ProviderEvent] = []
        two = asyncio.Event()

        def deliver(event: ProviderEvent) -> None:
            got.append(event)
            if len(got) == 2:
                two.set()

        async def consume() -> None:
            await provider.stream(provider_request(anthropic_upstream.provider_config()), deliver)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(two.wait(), 2)
        began = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - began < 0.1
        await anthropic_upstream.last.wait_gone(1.0)
        assert not anthropic_upstream.last.completed

    async def test_a_consumer_error_ends_the_stream_and_closes_the_connection(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream(tuple(f" w{i}" for i in range(100)), delay=0.05))
        got: list[ProviderEvent] = []

        def deliver(event: ProviderEvent) -> None:
            got.append(event)
            if len(got) == 2:
                raise KeyError("the consumer's own bug")

        with pytest.raises(KeyError):
            await provider.stream(provider_request(anthropic_upstream.provider_config()), deliver)
        assert got == [TextDelta(" w0"), TextDelta(" w1")]
        await anthropic_upstream.last.wait_gone(1.0)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')


class TestTools:
    async def test_tools_become_messages_api_tools(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        body = await sent_body(provider, anthropic_upstream, params={"tools": [WEATHER]})
        assert body["tools"] == [
            {
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ]
        assert "tool_choice" not in body

    @pytest.mark.parametrize(
        ("choice", "parallel", "mapped"),
        [
            ("auto", None, {"type": "auto"}),
            ("required", None, {"type": "any"}),
            ("none", None, {"type": "none"}),
            (
                {"type": "function", "function": {"name": "get_weather"}},
                None,
                {"type": "tool", "name": "get_weather"},
            ),
            (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
            ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ],
    )
    async def test_tool_choice_and_parallel_calls_are_mapped(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        choice: Any,
        parallel: bool | None,
        mapped: dict[str, Any],
    ) -> None:
        params = {"tools": [WEATHER], "tool_choice": choice, "parallel_tool_calls": parallel}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert body["tool_choice"] == mapped

    async def test_calls_and_results_become_tool_use_and_tool_result_blocks(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        request = attrs.evolve(
            provider_request(anthropic_upstream.provider_config()),
            messages=(
                ChatMessage("user", "weather?"),
                ChatMessage(
                    "assistant",
                    "Let me look.",
                    tool_calls=(CALL,),
                    reasoning="need the tool",
                    thinking=(ThinkingBlock("need the tool", "sig-1"),),
                ),
                ChatMessage("tool", "sunny", tool_call_id="toolu_1"),
                ChatMessage("user", "and tomorrow?"),
            ),
        )
        await events_of(provider, request)
        assert anthropic_upstream.last.body["messages"] == [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "need the tool", "signature": "sig-1"},
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ]

    @pytest.mark.parametrize(
        ("text", "texts"),
        [("a chart", [{"type": "text", "text": "a chart"}]), ("", []), (" \n", [])],
    )
    async def test_a_results_images_are_image_blocks_in_its_tool_result(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        text: str,
        texts: list[dict[str, Any]],
    ) -> None:
        # The API refuses an empty text block: an image-only result has none.
        request = attrs.evolve(
            provider_request(anthropic_upstream.provider_config()),
            messages=(
                ChatMessage("user", "chart?"),
                ChatMessage("assistant", "", tool_calls=(CALL,)),
                ChatMessage("tool", text, images=(PNG, JPEG), tool_call_id="toolu_1"),
            ),
        )
        await events_of(provider, request)
        png = {"type": "base64", "media_type": "image/png", "data": PNG.data_b64}
        jpeg = {"type": "base64", "media_type": "image/jpeg", "data": JPEG.data_b64}
        assert anthropic_upstream.last.body["messages"][2] == {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [*texts, {"type": "image", "source": png},
                                {"type": "image", "source": jpeg}],
                },
            ],
        }  # fmt: skip

    async def test_call_ids_anthropic_refuses_are_rewritten_the_same_in_use_and_result(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # Anthropic takes ids matching ^[a-zA-Z0-9_-]+$ only; OpenAI-compatible models
        # (Kimi's "functions.get_weather:0") and clients make others.
        ids = ("functions.get_weather:0", "toolu_01A", "functions_get_weather_0")
        calls = tuple(attrs.evolve(CALL, id=call_id) for call_id in ids)
        history = (
            ChatMessage("user", "q"),
            ChatMessage("assistant", "", tool_calls=calls),
            *(ChatMessage("tool", "sunny", tool_call_id=call_id) for call_id in ids),
        )
        body = await sent_body(provider, anthropic_upstream, text="q2", history=history)
        uses = [block["id"] for block in body["messages"][1]["content"]]
        results = [block["tool_use_id"] for block in body["messages"][2]["content"][:3]]
        assert uses == results
        assert uses[1:] == ["toolu_01A", "functions_get_weather_0"]  # valid ones stay
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", uses[0])
        assert len(set(uses)) == 3

    async def test_calls_that_share_an_id_go_under_the_next_free_one_their_results_too(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # The API refuses a turn whose tool_use blocks share an id; `x_2` is a call's own.
        ids = ("x", "x_2", "x", "x", "y", "x")
        calls = tuple(attrs.evolve(CALL, id=call_id) for call_id in ids)
        history = (
            ChatMessage("user", "q"),
            ChatMessage("assistant", "", tool_calls=calls),
            *(ChatMessage("tool", "sunny", tool_call_id=i) for i in reversed(ids)),
        )
        body = await sent_body(provider, anthropic_upstream, text="q2", history=history)
        uses = [block["id"] for block in body["messages"][1]["content"]]
        results = [block["tool_use_id"] for block in body["messages"][2]["content"][:6]]
        assert uses == ["x", "x_2", "x_3", "x_4", "y", "x_5"]
        assert results == ["x", "y", "x_3", "x_4", "x_2", "x_5"]

    @pytest.mark.parametrize("shared", [False, True], ids=["own-ids", "one-id"])
    def test_each_call_id_is_used_a_few_times_however_many_calls_a_reply_has(
        self, shared: bool
    ) -> None:
        """A request may carry one reply of as many calls as its body holds (100,000 in
        20 MiB); an id looked for among all the turn's ids held the event loop for minutes."""
        uses = []
        for count in (1000, 2000):
            ids = [CountedId("call" if shared else f"call_{n}") for n in range(count)]
            messages = (
                ChatMessage("user", "q"),
                ChatMessage(
                    "assistant", "", tool_calls=tuple(attrs.evolve(CALL, id=i) for i in ids)
                ),
                *(ChatMessage("tool", "x", tool_call_id=CountedId(str(i))) for i in reversed(ids)),
            )
            CountedId.reset()
            sent = anthropic_messages(messages)
            uses.append(CountedId.uses())
            assert len({block["id"] for block in sent[1]["content"]}) == count
        assert uses[1] <= 2 * uses[0] + 10, uses  # twice the calls, twice the work

    @pytest.mark.parametrize(
        "arguments",
        ["{oops", "[" * 5000 + "]" * 5000, '{"x": NaN}', '{"x": 1e400}', '{"x": -Infinity}'],
    )
    async def test_arguments_that_are_no_object_are_kept_as_their_text(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, arguments: str
    ) -> None:
        # The API takes an object; the second nests deeper than the JSON parser goes; the
        # others hold numbers no JSON can send (they went as NaN or Infinity, which the API
        # refuses, on every turn of the session).
        call = attrs.evolve(CALL, arguments=arguments)
        history = (ChatMessage("user", "q"), ChatMessage("assistant", "", tool_calls=(call,)))
        body = await sent_body(provider, anthropic_upstream, text="q2", history=history)
        assert body["messages"][1]["content"][0]["input"] == {"arguments": arguments}

    async def test_an_agent_can_turn_extended_thinking_on(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        thinking = {"type": "enabled", "budget_tokens": 1024}
        body = await sent_body(provider, anthropic_upstream, params={"thinking": thinking})
        assert body["thinking"] == thinking

    async def test_with_thinking_on_the_sampling_params_anthropic_refuses_are_dropped(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # "Thinking isn't compatible with temperature or top_k modifications"; top_p may be
        # 0.95 to 1. A client's temperature made every turn of a thinking agent a 502.
        thinking = {"type": "enabled", "budget_tokens": 1024}
        params = {"thinking": thinking, "temperature": 0.3, "top_k": 5, "top_p": 0.8}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert body == {
            "model": "fake-model",
            "max_tokens": 4096 + 1024,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "thinking": thinking,
        }
        params = {"thinking": thinking, "top_p": 0.97}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert (body["thinking"], body["top_p"]) == (thinking, 0.97)

    @pytest.mark.parametrize(
        ("choice", "mapped"),
        [("required", {"type": "any"}), ({"type": "function", "function": {"name": "get_weather"}},
                                         {"type": "tool", "name": "get_weather"})],
    )  # fmt: skip
    async def test_a_forced_tool_turns_thinking_off_for_the_turn(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        choice: Any,
        mapped: dict[str, Any],
    ) -> None:
        # "Thinking may not be enabled when tool_choice forces tool use."
        params = {
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": [WEATHER],
            "tool_choice": choice,
            "temperature": 0.3,
        }
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert "thinking" not in body
        assert (body["tool_choice"], body["temperature"]) == (mapped, 0.3)

    async def test_a_cap_within_the_thinking_budget_turns_thinking_off_for_the_turn(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # max_tokens must be greater than thinking.budget_tokens.
        params = {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert "thinking" not in body
        assert body["max_tokens"] == 2048

    async def test_a_tool_loop_whose_call_has_no_signed_thinking_turns_thinking_off(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # A stateless client resends the call without the thinking (clients do not keep it):
        # "When thinking is enabled, a final assistant message must start with a thinking
        # block ... To avoid this requirement, disable thinking."
        request = attrs.evolve(
            provider_request(
                anthropic_upstream.provider_config(),
                params={"thinking": {"type": "enabled", "budget_tokens": 1024}},
            ),
            messages=(
                ChatMessage("user", "weather?"),
                ChatMessage("assistant", "", tool_calls=(CALL,)),
                ChatMessage("tool", "sunny", tool_call_id="toolu_1"),
            ),
        )
        await events_of(provider, request)
        body = anthropic_upstream.last.body
        assert "thinking" not in body
        assert body["max_tokens"] == 4096

    async def test_a_tool_loop_with_its_signed_thinking_keeps_thinking_on(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        thinking = {"type": "enabled", "budget_tokens": 1024}
        call = ChatMessage(
            "assistant",
            "",
            tool_calls=(CALL,),
            reasoning="r",
            thinking=(ThinkingBlock("r", "sig"),),
        )
        request = attrs.evolve(
            provider_request(anthropic_upstream.provider_config(), params={"thinking": thinking}),
            messages=(
                ChatMessage("user", "weather?"),
                call,
                ChatMessage("tool", "sunny", tool_call_id="toolu_1"),
            ),
        )
        await events_of(provider, request)
        assert anthropic_upstream.last.body["thinking"] == thinking

    async def test_without_a_cap_thinking_gets_its_budget_on_top_of_the_default(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        thinking = {"type": "enabled", "budget_tokens": 8000}
        body = await sent_body(provider, anthropic_upstream, params={"thinking": thinking})
        assert (body["thinking"], body["max_tokens"]) == (thinking, 8000 + 4096)

    async def test_unsigned_reasoning_is_not_sent_back(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        history = (ChatMessage("user", "q"), ChatMessage("assistant", "a", reasoning="r"))
        body = await sent_body(provider, anthropic_upstream, text="q2", history=history)
        assert body["messages"][1] == {"role": "assistant", "content": "a"}

    async def test_streamed_tool_use_thinking_and_signature(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        call = FakeToolCall("toolu_1", "get_weather", ('{"ci', 'ty":"Paris"}'))
        anthropic_upstream.script(
            Stream(("Checking.",), reasoning=("hm",), signature="sig-1", tool_calls=(call,))
        )
        # The signed blocks come with the reply's end, once it is known that each has one.
        assert await collect(provider, anthropic_upstream) == [
            ReasoningDelta("hm"),
            TextDelta("Checking."),
            ToolCallDelta(0, "toolu_1", "get_weather", ""),
            ToolCallDelta(0, None, None, '{"ci'),
            ToolCallDelta(0, None, None, 'ty":"Paris"}'),
            SignedThinking((ThinkingBlock("hm", "sig-1"),)),
            Usage(3, 2),
            Finish("tool_calls"),
        ]

    def test_thousands_of_calls_that_share_ids_each_get_one_of_their_own(self) -> None:
        # Their ids were checked against every id before them (10,000 took 10 s, quadratic).
        same = tuple(ToolCall("c", "f", "{}") for _ in range(5000))
        distinct = tuple(ToolCall(f"d{i}", "f", "{}") for i in range(5000))
        calls = same + distinct
        messages = (
            ChatMessage("user", "q"),
            ChatMessage("assistant", "", tool_calls=calls),
            *(ChatMessage("tool", "r", tool_call_id=call.id) for call in calls),
        )
        sent = anthropic_messages(messages)
        ids = [block["id"] for block in sent[1]["content"]]
        assert ids[:3] == ["c", "c_2", "c_3"] and ids[4999] == "c_5000" and ids[5000] == "d0"
        assert [block["tool_use_id"] for block in sent[2]["content"]] == ids

    async def test_a_server_tools_blocks_are_no_call_of_the_clients(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # A server tool (web search, run by the API or a proxy) streams its input as a
        # client tool's is; its block is not one of ours: the stream failed as malformed.
        search = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                  "input": {}}  # fmt: skip
        body = events(
            start(),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": search}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "input_json_delta",
                                               "partial_json": '{"query": "x"}'}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("content_block_start", {"type": "content_block_start", "index": 1,
                                     "content_block": {"type": "web_search_tool_result",
                                                       "tool_use_id": "srvtoolu_1",
                                                       "content": []}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
            ("content_block_start", {"type": "content_block_start", "index": 2,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                     "delta": {"type": "text_delta", "text": "Found."}}),
            *stop(),
        )  # fmt: skip
        anthropic_upstream.script(Raw((body,)))
        assert await collect(provider, anthropic_upstream) == [
            TextDelta("Found."),
            Usage(3, 2),
            Finish("stop"),
        ]

    async def test_several_thinking_blocks_are_signed_block_by_block(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # Interleaved or redacted thinking: each block has its own signature, which the
        # reply's one joined reasoning text could not carry back. Their texts are set apart.
        def thinking(
            index: int, block: dict[str, Any], signature: str | None = None
        ) -> list[tuple[str, dict[str, Any]]]:
            out = [("content_block_start", {
                "type": "content_block_start", "index": index, "content_block": block,
            })]  # fmt: skip
            if signature is not None:
                delta = {"type": "signature_delta", "signature": signature}
                out.append(("content_block_delta", {
                    "type": "content_block_delta", "index": index, "delta": delta,
                }))  # fmt: skip
            out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
            return out

        body = events(
            start(),
            *thinking(0, {"type": "thinking", "thinking": "a"}, "sig-a"),
            *thinking(1, {"type": "redacted_thinking", "data": "EmwK"}),
            *thinking(2, {"type": "thinking", "thinking": "b"}, "sig-b"),
            *stop("tool_use"),
        )
        anthropic_upstream.script(Raw((body,)))
        assert await collect(provider, anthropic_upstream) == [
            ReasoningDelta("a"),
            ReasoningDelta("\n\nb"),
            SignedThinking(
                (
                    ThinkingBlock("a", "sig-a"),
                    ThinkingBlock("", "EmwK", redacted=True),
                    ThinkingBlock("b", "sig-b"),
                )
            ),
            Usage(3, 2),
            Finish("tool_calls"),
        ]

    async def test_a_block_without_its_signature_leaves_the_reply_unsigned(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # The API refuses a reply's blocks sent back with one left out.
        def block(index: int, thinking: str, signature: str | None) -> list[Any]:
            out: list[Any] = [("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {"type": "thinking", "thinking": thinking},
            })]  # fmt: skip
            if signature is not None:
                delta = {"type": "signature_delta", "signature": signature}
                out.append(("content_block_delta", {
                    "type": "content_block_delta", "index": index, "delta": delta,
                }))  # fmt: skip
            return out

        body = events(start(), *block(0, "a", "sig-a"), *block(1, "b", None), *stop("end_turn"))
        anthropic_upstream.script(Raw((body,)))
        assert await collect(provider, anthropic_upstream) == [
            ReasoningDelta("a"),
            ReasoningDelta("\n\nb"),
            Usage(3, 2),
            Finish("stop"),
        ]

    async def test_a_json_answer_with_several_thinking_blocks_is_signed_block_by_block(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        answer = {
            "type": "message",
            "content": [
                {"type": "thinking", "thinking": "a", "signature": "sig-a"},
                {"type": "thinking", "thinking": "b", "signature": "sig-b"},
                {"type": "text", "text": "ok"},
            ],
            "stop_reason": "end_turn",
        }
        anthropic_upstream.script(
            Raw((json.dumps(answer).encode(),), content_type="application/json")
        )
        assert await collect(provider, anthropic_upstream) == [
            ReasoningDelta("a"),
            ReasoningDelta("\n\nb"),
            TextDelta("ok"),
            SignedThinking((ThinkingBlock("a", "sig-a"), ThinkingBlock("b", "sig-b"))),
            Finish("stop"),
        ]

    async def test_a_call_without_arguments_gets_an_empty_object(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Stream((), tool_calls=(FakeToolCall("toolu_1", "now", ()),)))
        events = await collect(provider, anthropic_upstream)
        assert [e for e in events if isinstance(e, ToolCallDelta)] == [
            ToolCallDelta(0, "toolu_1", "now", ""),
            ToolCallDelta(0, None, None, "{}"),
        ]

    async def test_arguments_given_whole_in_the_blocks_start_are_kept(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # Some servers of the Messages API put the whole input in content_block_start and
        # send no input_json_delta; the call must not lose its arguments to `{}`.
        block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}  # fmt: skip
        body = events(
            start(),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": block}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            *stop("tool_use"),
        )  # fmt: skip
        anthropic_upstream.script(Raw((body,)))
        events_seen = await collect(provider, anthropic_upstream)
        assert [e for e in events_seen if isinstance(e, ToolCallDelta)] == [
            ToolCallDelta(0, "toolu_1", "get_weather", ""),
            ToolCallDelta(0, None, None, '{"city":"Paris"}'),
        ]

    async def test_a_json_answer_with_tool_use(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        call = FakeToolCall("toolu_1", "get_weather", ('{"city": "Paris"}',))
        anthropic_upstream.script(
            JSONAnswer("", reasoning="r", signature="sig", tool_calls=(call,))
        )
        assert await collect(provider, anthropic_upstream) == [
            ReasoningDelta("r"),
            ToolCallDelta(0, "toolu_1", "get_weather", '{"city":"Paris"}'),
            Usage(3, 2),
            SignedThinking((ThinkingBlock("r", "sig"),)),
            Finish("tool_calls"),
        ]


class TestUpstreamCallNames:
    """As for an OpenAI-compatible upstream: a tool_use block's name and id are what a
    client may send back, or the turn fails."""

    BAD = (
        pytest.param(("toolu_1", "n" * 65), id="name-too-long"),
        pytest.param(("toolu_1", "n" * 1_000_000), id="name-of-a-megabyte"),
        pytest.param(("toolu_1", "get weather"), id="name-with-a-space"),
        pytest.param(("toolu_1", "get\u2028weather"), id="name-with-a-line-separator"),
        pytest.param(("toolu_1", ""), id="empty-name"),
        pytest.param(("t" * 257, "f"), id="id-too-long"),
    )

    @pytest.mark.parametrize("call", BAD)
    async def test_a_streamed_tool_use_of_a_bad_name_or_id_is_a_malformed_stream(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        call: tuple[str, str],
    ) -> None:
        call_id, name = call
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        body = events(
            start(),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": block}),
            *stop("tool_use"),
        )  # fmt: skip
        anthropic_upstream.script(Raw((body,)))
        delivered: list[ProviderEvent] = []
        with pytest.raises(MalformedStream):
            await provider.stream(provider_request(anthropic_upstream.provider_config()),
                                  delivered.append)  # fmt: skip
        assert not any(isinstance(event, ToolCallDelta) for event in delivered)

    @pytest.mark.parametrize("call", BAD)
    async def test_a_json_answer_tool_use_of_a_bad_name_or_id_is_malformed(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        call: tuple[str, str],
    ) -> None:
        anthropic_upstream.script(JSONAnswer("", tool_calls=(FakeToolCall(*call),)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    TOOLS: ClassVar = {"tools": [{"type": "function", "function": {"name": "get_weather"}}]}

    @pytest.mark.parametrize("reply", [Stream, JSONAnswer], ids=["stream", "json"])
    async def test_a_call_in_gpt_oss_namespace_of_a_tool_of_the_request_is_that_tools(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, reply: Any
    ) -> None:
        # gpt-oss served without its namespace stripped: `functions.get_weather`.
        anthropic_upstream.script(
            reply("", tool_calls=(FakeToolCall("toolu_1", "functions.get_weather"),))
        )
        events = await collect(provider, anthropic_upstream, params=self.TOOLS)
        assert [e.name for e in events if isinstance(e, ToolCallDelta) and e.name] == [
            "get_weather"
        ]

    async def test_one_of_no_tool_of_the_request_stays_malformed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        call = FakeToolCall("toolu_1", "functions.get_time")
        anthropic_upstream.script(Stream((), tool_calls=(call,)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream, params=self.TOOLS)


class TestReasoningEffort:
    """OpenAI's `reasoning_effort` is extended thinking with the budget OpenClaw gives each
    thinking level (minimal 1024, low 2048, medium 8192, high and xhigh 16384 tokens); `none`
    turns thinking off for the turn, an agent's own `thinking` too."""

    @pytest.mark.parametrize(
        ("effort", "budget"),
        [("minimal", 1024), ("low", 2048), ("medium", 8192), ("high", 16384), ("xhigh", 16384)],
    )
    async def test_each_effort_is_a_thinking_budget_on_top_of_the_default_cap(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        effort: str,
        budget: int,
    ) -> None:
        body = await sent_body(
            provider, anthropic_upstream, params={"reasoning_effort": effort, "temperature": 0.2}
        )
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert body["max_tokens"] == 4096 + budget
        assert "reasoning_effort" not in body and "temperature" not in body

    async def test_a_cap_bounds_the_budget(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # As OpenAI's cap, the client's counts the reasoning: the budget is what it leaves.
        params = {"reasoning_effort": "high", "max_completion_tokens": 4000}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert (body["thinking"], body["max_tokens"]) == (
            {"type": "enabled", "budget_tokens": 3999},
            4000,
        )

    async def test_a_cap_below_the_smallest_budget_leaves_thinking_off(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # The API's smallest budget is 1024 tokens, and max_tokens must be above it.
        params = {"reasoning_effort": "low", "max_tokens": 1024}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert "thinking" not in body and body["max_tokens"] == 1024

    async def test_none_turns_the_agents_thinking_off(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        thinking = {"type": "enabled", "budget_tokens": 1024}
        params = {"reasoning_effort": "none", "thinking": thinking, "temperature": 0.2}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert "thinking" not in body and body["temperature"] == 0.2

    async def test_the_clients_effort_wins_over_the_agents_thinking(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        params = {"reasoning_effort": "low", "thinking": {"type": "enabled", "budget_tokens": 9000}}
        body = await sent_body(provider, anthropic_upstream, params=params)
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}

    @pytest.mark.parametrize("effort", ["extreme", 3, None])
    async def test_an_unknown_effort_in_an_agents_params_is_dropped(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, effort: Any
    ) -> None:
        body = await sent_body(provider, anthropic_upstream, params={"reasoning_effort": effort})
        assert "thinking" not in body and "reasoning_effort" not in body


class TestBlocksPerReply:
    """As for an OpenAI-compatible upstream: more tool_use blocks than MAX_TOOL_CALLS, or
    thinking blocks than MAX_THINKING_BLOCKS, in one reply fail it as malformed."""

    @staticmethod
    def blocks(count: int, block: dict[str, Any]) -> bytes:
        starts = (
            ("content_block_start", {"type": "content_block_start", "index": i,
                                     "content_block": {**block, "id": f"toolu_{i}"}})
            for i in range(count)
        )  # fmt: skip
        return events(start(), *starts, *stop("tool_use"))

    async def test_the_limit_of_calls_is_relayed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        block = {"type": "tool_use", "name": "f", "input": {}}
        anthropic_upstream.script(Raw((self.blocks(MAX_TOOL_CALLS, block),)))
        delivered = await collect(provider, anthropic_upstream)
        calls = {e.index for e in delivered if isinstance(e, ToolCallDelta)}
        assert len(calls) == MAX_TOOL_CALLS

    @pytest.mark.parametrize(
        "block",
        [
            {"type": "tool_use", "name": "f", "input": {}},
            {"type": "thinking", "thinking": "", "signature": "s"},
            {"type": "redacted_thinking", "data": "d"},
        ],
    )
    async def test_one_more_is_a_malformed_stream(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        block: dict[str, Any],
    ) -> None:
        anthropic_upstream.script(Raw((self.blocks(MAX_TOOL_CALLS + 1, block),)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    async def test_signatures_of_blocks_never_started_count_too(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        deltas = (
            ("content_block_delta", {"type": "content_block_delta", "index": i,
                                     "delta": {"type": "signature_delta", "signature": "s"}})
            for i in range(MAX_THINKING_BLOCKS + 1)
        )  # fmt: skip
        anthropic_upstream.script(Raw((events(start(), *deltas, *stop()),)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    async def test_in_a_json_answer(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        calls = tuple(FakeToolCall(f"toolu_{i}", "f") for i in range(MAX_TOOL_CALLS + 1))
        anthropic_upstream.script(JSONAnswer("", tool_calls=calls))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)


class TestInputGivenWhole:
    """A tool_use block's input given whole is sent on as its JSON: one that is no object, or
    holds a number JSON cannot write back (1e400, NaN), fails the reply as malformed."""

    @pytest.mark.parametrize("number", ["1e400", "NaN"])
    async def test_in_a_stream(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, number: str
    ) -> None:
        block = (
            '{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use",'
            ' "id": "toolu_1", "name": "f", "input": {"x": ' + number + "}}}"
        )
        body = (events(start()) + f"event: content_block_start\ndata: {block}\n\n".encode()
                + events(("content_block_stop", {"type": "content_block_stop", "index": 0}),
                         *stop("tool_use")))  # fmt: skip
        anthropic_upstream.script(Raw((body,)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    async def test_in_a_json_answer(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        answer = ('{"type": "message", "role": "assistant", "content": [{"type": "tool_use",'
                  ' "id": "toolu_1", "name": "f", "input": {"x": 1e400}}],'
                  ' "stop_reason": "tool_use"}')  # fmt: skip
        anthropic_upstream.script(Raw((answer.encode(),), content_type="application/json"))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    NOT_OBJECTS = ('"{}"', "[1]", "[]", "1", "true", '""')

    @pytest.mark.parametrize("given", NOT_OBJECTS)
    async def test_one_that_is_no_object_in_a_json_answer_is_malformed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, given: str
    ) -> None:
        # The API's `input` is an object: anything else would reach the client as arguments
        # it cannot read as a call's, and go back to the API, which refuses it.
        answer = ('{"type": "message", "role": "assistant", "content": [{"type": "tool_use",'
                  ' "id": "toolu_1", "name": "f", "input": ' + given + '}],'
                  ' "stop_reason": "tool_use"}')  # fmt: skip
        anthropic_upstream.script(Raw((answer.encode(),), content_type="application/json"))
        delivered: list[ProviderEvent] = []
        with pytest.raises(MalformedStream):
            await provider.stream(provider_request(anthropic_upstream.provider_config()),
                                  delivered.append)  # fmt: skip
        assert delivered == []

    @pytest.mark.parametrize("given", NOT_OBJECTS)
    async def test_one_that_is_no_object_in_a_stream_is_malformed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, given: str
    ) -> None:
        block = (
            '{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use",'
            ' "id": "toolu_1", "name": "f", "input": ' + given + "}}"
        )
        body = (events(start()) + f"event: content_block_start\ndata: {block}\n\n".encode()
                + events(("content_block_stop", {"type": "content_block_stop", "index": 0}),
                         *stop("tool_use")))  # fmt: skip
        anthropic_upstream.script(Raw((body,)))
        delivered: list[ProviderEvent] = []
        with pytest.raises(MalformedStream):
            await provider.stream(provider_request(anthropic_upstream.provider_config()),
                                  delivered.append)  # fmt: skip
        assert not any(isinstance(event, ToolCallDelta) for event in delivered)

    @pytest.mark.parametrize("reply", ["json", "stream"])
    async def test_a_null_one_is_none_given(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic, reply: str
    ) -> None:
        block = '{"type": "tool_use", "id": "toolu_1", "name": "f", "input": null}'
        if reply == "json":
            answer = ('{"type": "message", "role": "assistant", "content": [' + block + '],'
                      ' "stop_reason": "tool_use"}')  # fmt: skip
            anthropic_upstream.script(Raw((answer.encode(),), content_type="application/json"))
        else:
            start_block = ('{"type": "content_block_start", "index": 0, "content_block": '
                           + block + "}")  # fmt: skip
            head = f"event: content_block_start\ndata: {start_block}\n\n".encode()
            body = (events(start()) + head
                    + events(("content_block_stop", {"type": "content_block_stop", "index": 0}),
                             *stop("tool_use")))  # fmt: skip
            anthropic_upstream.script(Raw((body,)))
        events_seen = await collect(provider, anthropic_upstream)
        assert "".join(e.arguments for e in events_seen if isinstance(e, ToolCallDelta)) == "{}"


def streamed_call(*pieces: str, block_stop: bool = True) -> bytes:
    """A reply of one tool call whose input comes in `pieces` of input_json_delta."""
    use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    deltas = [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "input_json_delta",
                                                 "partial_json": piece}})
              for piece in pieces]  # fmt: skip
    stopped = [("content_block_stop", {"type": "content_block_stop", "index": 0})]
    return events(
        start(),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": use}),
        *deltas,
        *(stopped if block_stop else []),
        *stop("tool_use"),
    )  # fmt: skip


class TestInputStreamed:
    """A tool_use block's input streamed in input_json_delta pieces is relayed as it comes;
    at the block's end the pieces must make one JSON object, as the input given whole must
    (TestInputGivenWhole): else the reply is malformed, an in-stream error for the client,
    where the pieces were relayed unchecked and the call ended as arguments no client could
    read as a call's."""

    @pytest.mark.parametrize(
        "pieces",
        [
            ('{"a": ', "1"),  # cut short
            ("[1, ", "2]"),
            ('"x"',),
            ("1",),
            ('{"a": 1}', "{}"),  # two values
            ('{"x": ', "1e400}"),
            ('{"x": ', "NaN}"),
            ("{not json}",),
        ],
        ids=["cut", "array", "string", "number", "two", "1e400", "NaN", "not-json"],
    )
    async def test_pieces_that_make_no_object_are_malformed(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        pieces: tuple[str, ...],
    ) -> None:
        anthropic_upstream.script(Raw((streamed_call(*pieces),)))
        delivered: list[ProviderEvent] = []
        with pytest.raises(MalformedStream):
            await provider.stream(provider_request(anthropic_upstream.provider_config()),
                                  delivered.append)  # fmt: skip
        assert not any(isinstance(event, Finish) for event in delivered)

    async def test_a_piece_after_the_blocks_end_is_malformed(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # The block's end gave the call `{}`: a piece after it would follow that.
        late = ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "input_json_delta",
                                                  "partial_json": '{"a": 1}'}})  # fmt: skip
        body = streamed_call().replace(
            b"event: message_delta", events(late) + b"event: message_delta"
        )
        anthropic_upstream.script(Raw((body,)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    async def test_a_block_that_never_stops_without_pieces_is_a_call_of_no_arguments(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # The reply said why it stopped: the call is whole, with `{}` as a call the block's
        # end gave none (its arguments were empty, which no client reads as JSON).
        anthropic_upstream.script(Raw((streamed_call(block_stop=False),)))
        seen = await collect(provider, anthropic_upstream)
        arguments = "".join(e.arguments for e in seen if isinstance(e, ToolCallDelta))
        assert (arguments, seen[-1]) == ("{}", Finish("tool_calls"))

    async def test_pieces_of_a_block_that_never_stops_are_checked_at_the_end(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        anthropic_upstream.script(Raw((streamed_call('{"a": ', block_stop=False),)))
        with pytest.raises(MalformedStream):
            await collect(provider, anthropic_upstream)

    @pytest.mark.parametrize(
        "pieces", [('{"a": ', '[1, {"b": "}"}]', "}"), (" ", '{"a":1}', "\n"), ("{}",)]
    )
    async def test_pieces_that_make_an_object_are_relayed_as_they_came(
        self,
        provider: AnthropicMessagesProvider,
        anthropic_upstream: FakeAnthropic,
        pieces: tuple[str, ...],
    ) -> None:
        anthropic_upstream.script(Raw((streamed_call(*pieces),)))
        seen = await collect(provider, anthropic_upstream)
        calls = [event for event in seen if isinstance(event, ToolCallDelta)]
        assert "".join(call.arguments for call in calls) == "".join(pieces)
        assert seen[-1] == Finish("tool_calls")

    async def test_blank_pieces_are_no_input(
        self, provider: AnthropicMessagesProvider, anthropic_upstream: FakeAnthropic
    ) -> None:
        # As no piece at all: the call's arguments are `{}`, which every client can read.
        anthropic_upstream.script(Raw((streamed_call(" ", "\n"),)))
        seen = await collect(provider, anthropic_upstream)
        arguments = "".join(e.arguments for e in seen if isinstance(e, ToolCallDelta))
        assert json.loads(arguments) == {}


class TestThinkingKept:
    def test_a_thinking_text_in_tiny_pieces_is_held_in_about_its_size(self) -> None:
        # A thinking block's text is kept for the reply's end (sent back signed); one by one,
        # its pieces took some 50 bytes each beside their text.
        decoder = MessageEventDecoder(ProviderConfig("a", "anthropic-messages", "http://a.invalid"))
        list(decoder.feed([SSEEvent("message_start", json.dumps(start()[1]))]))
        tracemalloc.start()
        try:
            for n in range(100_000):
                delta = {"type": "thinking_delta", "thinking": f"{n % 100:02d}"}
                data = {"type": "content_block_delta", "index": 0, "delta": delta}
                for _ in decoder.feed([SSEEvent("content_block_delta", json.dumps(data))]):
                    pass
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < 3 * 200_000  # was 6 MB for these 200 KB of thinking
        signature = {"type": "signature_delta", "signature": "sig"}
        data = {"type": "content_block_delta", "index": 0, "delta": signature}
        list(decoder.feed([SSEEvent("content_block_delta", json.dumps(data))]))
        list(decoder.feed([SSEEvent(kind, json.dumps(obj)) for kind, obj in stop()]))
        signed = [e for e in decoder.finish() if isinstance(e, SignedThinking)]
        text = "".join(f"{n % 100:02d}" for n in range(100_000))
        assert signed == [SignedThinking((ThinkingBlock(text, "sig"),))]
