"""The `openai-completions` provider (agents-sessions.md §6.3, §6.5) against a real fake server."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any, ClassVar

import attrs
import pytest
import structlog
from multidict import CIMultiDict

from agents.config import API_OPENAI_COMPLETIONS, ModelEntry, ModelRef, ProviderConfig
from agents.errors import (
    MalformedStream,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
)
from agents.providers import upstream
from agents.providers.base import (
    MAX_TOOL_CALLS,
    ChatMessage,
    Finish,
    ImageInput,
    PartialUsage,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from agents.providers.openai_completions import OpenAICompletionsProvider, request_body
from agents.providers.pool import ProviderPool, Timeouts
from agents.providers.upstream import parse_retry_after, transport_error
from agents.providers.upstream_client import UpstreamClient, UpstreamProtocolError
from tests.support.counting import CountedId
from tests.support.upstreams import (
    API_KEY,
    SECRET_BODY_MARKER,
    FakeOpenAI,
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
    silent_server,
)

TIMEOUTS = Timeouts(connect=1, idle=0.3)
PNG = ImageInput("image/png", "iVBORw0KGgo=", 8)


@pytest.fixture
def provider(http: UpstreamClient) -> OpenAICompletionsProvider:
    return OpenAICompletionsProvider(http, TIMEOUTS)


def sse(*objects: Any, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(obj, ensure_ascii=False)}\n\n" for obj in objects]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


class TestRequest:
    async def test_posts_to_chat_completions_under_base_url(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        await collect(provider, openai_upstream)
        assert openai_upstream.last.path == "/v1/chat/completions"

    async def test_a_query_in_the_base_url_stays_after_the_path(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # Azure OpenAI's deployments take their API version so: `...?api-version=2024-10-21`.
        config = _with_url(openai_upstream, f"{openai_upstream.base_url}/?api-version=2024-10-21")
        assert (await collect(provider, openai_upstream, config=config))[-1] == Finish("stop")
        assert openai_upstream.last.path == "/v1/chat/completions"
        assert openai_upstream.last.query == "api-version=2024-10-21"

    async def test_minimal_body_is_exact(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        assert await sent_body(provider, openai_upstream, text="hello") == {
            "model": "fake-model",
            "messages": [{"role": "user", "content": "hello"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def test_system_comes_first_then_history_then_current(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        history = (ChatMessage("user", "a"), ChatMessage("assistant", "b"))
        body = await sent_body(
            provider, openai_upstream, text="c", system="sys\n\nextra", history=history
        )
        assert body["messages"] == [
            {"role": "system", "content": "sys\n\nextra"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]

    async def test_headers_carry_bearer_key_and_json_content_type(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        await collect(provider, openai_upstream)
        headers = openai_upstream.last.headers
        assert headers["Authorization"] == f"Bearer {API_KEY}"
        assert headers["Content-Type"] == "application/json"

    async def test_no_authorization_without_api_key(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        config = openai_upstream.provider_config(api_key=None)
        await collect(provider, openai_upstream, config=config)
        assert "Authorization" not in openai_upstream.last.headers

    async def test_provider_headers_are_added_and_override(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        config = openai_upstream.provider_config(
            headers={"authorization": "Bearer other", "HTTP-Referer": "https://x.test"}
        )
        await collect(provider, openai_upstream, config=config)
        headers = openai_upstream.last.headers
        assert headers.getall("Authorization") == ["Bearer other"]
        assert headers["HTTP-Referer"] == "https://x.test"

    async def test_sampling_params_and_other_agent_params_go_verbatim(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        params = {
            "temperature": 1.5,
            "top_p": 0.9,
            "frequency_penalty": 0.1,
            "presence_penalty": -0.2,
            "seed": 42,
            "stop": ["END"],
            "response_format": {"type": "json_object"},
            "top_k": 40,  # an agent param for a local server
        }
        body = await sent_body(provider, openai_upstream, params=params)
        assert {k: body[k] for k in params} == params

    async def test_delay_ms_and_unset_params_are_not_sent(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = await sent_body(
            provider, openai_upstream, params={"delayMs": 10, "temperature": None}
        )
        assert "delayMs" not in body
        assert "temperature" not in body

    async def test_params_cannot_override_the_body_it_owns(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        params = {"stream": False, "model": "other", "messages": [], "stream_options": {}}
        body = await sent_body(provider, openai_upstream, params=params)
        assert body["stream"] is True
        assert body["model"] == "fake-model"
        assert body["stream_options"] == {"include_usage": True}
        assert len(body["messages"]) == 1

    @pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
    async def test_cap_keeps_the_name_the_client_used(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, name: str
    ) -> None:
        config = openai_upstream.provider_config(models=(ModelEntry("fake-model", max_tokens=999),))
        body = await sent_body(provider, openai_upstream, config=config, params={name: 17})
        caps = {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body}
        assert caps == {name: 17}

    async def test_both_cap_names_send_only_max_completion_tokens(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        params = {"max_tokens": 5, "max_completion_tokens": 7}
        body = await sent_body(provider, openai_upstream, params=params)
        assert body["max_completion_tokens"] == 7
        assert "max_tokens" not in body

    async def test_no_client_cap_sends_model_max_tokens_as_max_tokens(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        config = openai_upstream.provider_config(models=(ModelEntry("fake-model", max_tokens=256),))
        body = await sent_body(provider, openai_upstream, config=config)
        assert body["max_tokens"] == 256
        assert "max_completion_tokens" not in body

    @pytest.mark.parametrize(
        ("base_url", "name"),
        [("https://api.openai.com/v1", "max_completion_tokens"),
         ("http://127.0.0.1:11434/v1", "max_tokens")],
    )  # fmt: skip
    @pytest.mark.parametrize("given", [{"max_tokens": 17}, {}])
    def test_openais_own_api_gets_the_cap_as_max_completion_tokens(
        self, base_url: str, name: str, given: dict[str, int]
    ) -> None:
        # Its reasoning models refuse `max_tokens`, which /v1/responses' `max_output_tokens`
        # and the model's `maxTokens` are sent as; Ollama and LM Studio read only that name.
        provider = ProviderConfig(
            id="p", api=API_OPENAI_COMPLETIONS, base_url=base_url,
            models=(ModelEntry("m", max_tokens=17),),
        )  # fmt: skip
        request = ProviderRequest(
            ModelRef("p", "m"), "", (ChatMessage("user", "hi"),), given, provider,
            provider.models[0],
        )  # fmt: skip
        body = request_body(request)
        assert {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body} == {
            name: 17
        }

    def test_mistrals_api_gets_only_the_fields_it_takes(self) -> None:
        # It refuses any field it does not know with a 422 ("extra_forbidden"), on every turn:
        # `stream_options` (it reports the usage unasked), `max_completion_tokens`, `seed`
        # (its `random_seed`).
        provider = ProviderConfig(
            id="p", api=API_OPENAI_COMPLETIONS, base_url="https://api.mistral.ai/v1",
            models=(ModelEntry("mistral-small-latest"),),
        )  # fmt: skip
        params = {"max_completion_tokens": 9, "seed": 4, "temperature": 0.2}
        request = ProviderRequest(
            ModelRef("p", "mistral-small-latest"), "", (ChatMessage("user", "hi"),), params,
            provider, provider.models[0],
        )  # fmt: skip
        assert request_body(request) == {
            "model": "mistral-small-latest",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": 9,
            "random_seed": 4,
            "temperature": 0.2,
        }

    async def test_no_cap_at_all_sends_none(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = await sent_body(provider, openai_upstream)
        assert "max_tokens" not in body
        assert "max_completion_tokens" not in body

    async def test_images_become_content_parts_with_data_uris(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = await sent_body(provider, openai_upstream, text="what is it", images=(PNG, PNG))
        part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "what is it"}, part, part]}
        ]

    async def test_image_only_turn_has_no_empty_text_part(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = await sent_body(provider, openai_upstream, text="", images=(PNG,))
        assert body["messages"][0]["content"] == [
            {"type": "image_url", "image_url": {"url": PNG.data_uri}}
        ]


class TestStreaming:
    async def test_deltas_then_usage_then_finish(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("Hel", "lo", " world"), usage=(5, 3)))
        assert await collect(provider, openai_upstream) == [
            TextDelta("Hel"),
            TextDelta("lo"),
            TextDelta(" world"),
            Usage(5, 3),
            Finish("stop"),
        ]

    @pytest.mark.parametrize(
        ("wire", "ours"),
        [
            ("stop", "stop"),
            ("length", "length"),
            ("content_filter", "content_filter"),
            ("tool_calls", "tool_calls"),
            ("function_call", "stop"),
            ("something_new", "stop"),
        ],
    )
    async def test_finish_reason_mapping(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, wire: str, ours: str
    ) -> None:
        openai_upstream.script(Stream(("x",), finish=wire))
        assert (await collect(provider, openai_upstream))[-1] == Finish(ours)

    async def test_without_usage_chunk_no_usage_is_reported(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("x",), usage=None))
        assert await collect(provider, openai_upstream) == [TextDelta("x"), Finish("stop")]

    async def test_groq_usage_in_the_last_chunks_x_groq_is_read(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        groq_usage = {
            "queue_time": 0.01,
            "prompt_tokens": 12,
            "prompt_time": 0.002,
            "completion_tokens": 3,
            "completion_time": 0.004,
            "total_tokens": 15,
            "total_time": 0.006,
        }
        body = sse(
            chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_01"}),
            chunk({"content": "hi"}),
            chunk({}, "stop", x_groq={"id": "req_01", "usage": groq_usage}),
        )
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            TextDelta("hi"),
            Usage(12, 3),
            Finish("stop"),
        ]

    async def test_standard_usage_wins_over_x_groq(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        groq = {"usage": {"prompt_tokens": 99, "completion_tokens": 99}}
        body = sse(
            chunk({"content": "hi"}, "stop", x_groq=groq),
            {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}},
        )
        openai_upstream.script(Raw((body,)))
        assert (await collect(provider, openai_upstream))[-2] == Usage(12, 3)

    @pytest.mark.parametrize("x_groq", [None, [], "usage", {"usage": "none"}])
    async def test_an_x_groq_of_another_shape_is_no_usage(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, x_groq: Any
    ) -> None:
        openai_upstream.script(Raw((sse(chunk({"content": "hi"}, "stop", x_groq=x_groq)),)))
        assert await collect(provider, openai_upstream) == [TextDelta("hi"), Finish("stop")]

    @pytest.mark.parametrize(
        ("usage", "kept"),
        [((10**30, 2), PartialUsage(None, 2)), ((3, -1), PartialUsage(3, None)),
         ((2**53, 0), PartialUsage(None, 0))],
    )  # fmt: skip
    async def test_a_count_no_model_reports_is_not_reported(
        self,
        provider: OpenAICompletionsProvider,
        openai_upstream: FakeOpenAI,
        usage: tuple[int, int],
        kept: PartialUsage,
    ) -> None:
        # JSON allows any integer; beyond 64 bits it would fail the session's write. The
        # other count is the turn's (the session estimates the one not reported).
        openai_upstream.script(Stream(("x",), usage=usage))
        assert await collect(provider, openai_upstream) == [TextDelta("x"), kept, Finish("stop")]

    async def test_empty_and_null_contents_are_skipped_and_reasoning_is_read(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = sse(
            chunk({"role": "assistant", "content": ""}, usage=None),
            chunk({"reasoning_content": "thinking..."}, usage=None),
            chunk({"content": None, "reasoning_content": "more"}, usage=None),
            chunk({"content": "answer"}, usage=None),
            chunk({}, "stop", usage=None),
            {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9}},
        )
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            ReasoningDelta("thinking..."),
            ReasoningDelta("more"),
            TextDelta("answer"),
            Usage(4, 9),
            Finish("stop"),
        ]

    async def test_a_chunk_with_reasoning_and_text_gives_the_reasoning_first(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = {"index": 0, "id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}  # fmt: skip
        body = sse(
            chunk({"content": "A", "reasoning_content": "r", "tool_calls": [call]}, "tool_calls",
                  usage=None),
        )  # fmt: skip
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            ReasoningDelta("r"),
            TextDelta("A"),
            ToolCallDelta(0, "c1", "f", "{}"),
            Finish("tool_calls"),
        ]

    async def test_only_the_first_choice_is_the_reply(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # An agent's `n: 2` goes to the upstream as it is: the second choice's chunks come
        # between the first one's, each naming its choice by `index`.
        def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> Any:
            return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

        body = sse(
            choice(0, {"reasoning_content": "r0"}),
            choice(1, {"reasoning_content": "r1"}),
            choice(0, {"content": "A"}),
            choice(1, {"content": "B"}),
            choice(1, {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}),
            choice(0, {"content": "C"}),
            choice(0, {}, "stop"),
            # Usage on the last choice's last chunk (llama.cpp, vLLM's continuous usage).
            {**choice(1, {}, "tool_calls"), "usage": {"prompt_tokens": 4, "completion_tokens": 9}},
        )
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            ReasoningDelta("r0"),
            TextDelta("A"),
            TextDelta("C"),
            Usage(4, 9),
            Finish("stop"),
        ]

    async def test_content_as_a_list_of_parts_is_read(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # Mistral's magistral models stream their thinking, and may stream their text, as
        # content parts: the turn failed as a malformed stream.
        def thinking(text: str) -> dict[str, Any]:
            return {"type": "thinking", "thinking": [{"type": "text", "text": text}]}

        body = sse(
            chunk({"role": "assistant", "content": [thinking("Hm, "), thinking("a greeting.")]}),
            chunk({"content": [{"type": "text", "text": "Hello"}]}),
            chunk({"content": [{"type": "reference", "reference_ids": [1]}]}),
            chunk({"content": " there."}, "stop"),
        )
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            ReasoningDelta("Hm, "),
            ReasoningDelta("a greeting."),
            TextDelta("Hello"),
            TextDelta(" there."),
            Finish("stop"),
        ]

    async def test_content_and_finish_in_one_chunk(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Raw((sse(chunk({"content": "all"}, "length")),)))
        assert await collect(provider, openai_upstream) == [TextDelta("all"), Finish("length")]

    async def test_crlf_lines_and_keepalive_comments(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("a", "b"), newline="\r\n", comments=True))
        assert await collect(provider, openai_upstream) == [
            TextDelta("a"),
            TextDelta("b"),
            Usage(3, 2),
            Finish("stop"),
        ]

    async def test_events_split_across_network_reads(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = sse(chunk({"content": "héllo"}), chunk({"content": " wörld"}, "stop"))
        cut1, cut2 = body.index(b"\xc3") + 1, body.index(b"\n\n") + 1  # mid-char, mid-blank-line
        openai_upstream.script(Raw((body[:cut1], body[cut1:cut2], body[cut2:]), delay=0.02))
        assert await collect(provider, openai_upstream) == [
            TextDelta("héllo"),
            TextDelta(" wörld"),
            Finish("stop"),
        ]

    @pytest.mark.parametrize("cut", [1, 2])
    async def test_a_bom_split_across_network_reads_is_dropped(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, cut: int
    ) -> None:
        # The BOM's bytes in two reads: dropped as when it comes whole, not left in front of
        # the first field name (which then named no field, and the first event was lost).
        body = b"\xef\xbb\xbf" + sse(chunk({"content": "hi"}, "stop"))
        openai_upstream.script(Raw((body[:cut], body[cut:]), delay=0.02))
        assert await collect(provider, openai_upstream) == [TextDelta("hi"), Finish("stop")]

    async def test_idle_timeout_is_between_reads_not_total(
        self, http: UpstreamClient, openai_upstream: FakeOpenAI
    ) -> None:
        # 5 gaps of 0.25 s: 1.25 s in total, longer than the 1 s idle timeout (each gap a
        # quarter of it: a loaded host may stretch a gap, not four times).
        provider = OpenAICompletionsProvider(http, Timeouts(connect=1, idle=1))
        openai_upstream.script(Stream(tuple("abcdef"), delay=0.25))
        events = await collect(provider, openai_upstream)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "abcdef"

    async def test_stream_ending_after_finish_without_done_is_complete(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("x",), end=False))
        assert await collect(provider, openai_upstream) == [
            TextDelta("x"),
            Usage(3, 2),
            Finish("stop"),
        ]

    async def test_done_without_finish_reason_is_a_stop(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("x",), finish_event=False, usage=None))
        assert await collect(provider, openai_upstream) == [TextDelta("x"), Finish("stop")]

    async def test_nothing_after_done_is_read(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = sse(chunk({"content": "x"}, "stop")) + b"data: not json\n\n"
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [TextDelta("x"), Finish("stop")]

    @pytest.mark.parametrize("hang_up", [False, True], ids=["stalls", "hangs_up"])
    async def test_done_ends_the_reply_whatever_the_body_does_next(
        self, http: UpstreamClient, openai_upstream: FakeOpenAI, hang_up: bool
    ) -> None:
        # After `data: [DONE]` the body's last chunk never comes: the server stalls or hangs
        # up. The reply was whole, yet the turn failed with a timeout (504) once the idle
        # timeout passed, or as an upstream error (502).
        body = sse(chunk({"content": "x"}, "stop"))
        data = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
        )
        provider = OpenAICompletionsProvider(http, Timeouts(connect=1, idle=30))
        async with raw_answer(data, hang_up=hang_up) as upstream:
            config = _with_url(openai_upstream, f"http://127.0.0.1:{upstream.port}/v1")
            start = time.monotonic()
            events = await collect(provider, openai_upstream, config=config)
            assert time.monotonic() - start < 5
            assert events == [TextDelta("x"), Finish("stop")]
            if not hang_up:
                await asyncio.wait_for(upstream.gone.wait(), 1)  # closed, never pooled
        assert http.idle_connections == 0

    USAGE: ClassVar = {"prompt_tokens": 3, "completion_tokens": 1}
    ENDS: ClassVar = {
        # OpenAI's: the finish chunk, then the usage chunk (no choices) before `[DONE]`.
        "usage_chunk": [
            chunk({"content": "x"}),
            chunk({}, "stop"),
            {"choices": [], "usage": USAGE},
        ],
        # llama.cpp's: the usage in the finish chunk.
        "usage_in_finish": [chunk({"content": "x"}), chunk({}, "stop", usage=USAGE)],
    }

    @pytest.mark.parametrize("end", ENDS)
    async def test_the_finish_reason_and_the_usage_end_the_reply_when_done_never_comes(
        self, http: UpstreamClient, openai_upstream: FakeOpenAI, end: str
    ) -> None:
        # The reply said why it ended, and the usage came, then neither `[DONE]` nor the
        # body's end: the turn waited for the idle timeout (120 s by default) to end.
        body = sse(*self.ENDS[end], done=False)
        data = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
        )
        # An idle timeout no test waits for: only the reply itself can end the turn.
        provider = OpenAICompletionsProvider(http, Timeouts(connect=1, idle=3600))
        async with raw_answer(data) as upstream:
            config = _with_url(openai_upstream, f"http://127.0.0.1:{upstream.port}/v1")
            # A guard against a hung test, far beyond what the reply takes.
            events = await asyncio.wait_for(collect(provider, openai_upstream, config=config), 30)
            assert events == [TextDelta("x"), Usage(3, 1), Finish("stop")]
            await asyncio.wait_for(upstream.gone.wait(), 60)  # closed, never pooled
        assert http.idle_connections == 0

    async def test_a_usage_chunk_in_a_later_read_than_the_finish_is_kept(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        first = sse(chunk({"content": "x"}), chunk({}, "stop"), done=False)
        usage = sse({"choices": [], "usage": self.USAGE})
        openai_upstream.script(Raw((first, usage), delay=0.05))
        assert await collect(provider, openai_upstream) == [
            TextDelta("x"),
            Usage(3, 1),
            Finish("stop"),
        ]

    @pytest.mark.parametrize(
        "usage", ["none", "whole", "cut"], ids=["finish_only", "with_usage", "usage_cut"]
    )
    async def test_chunked_body_cut_after_the_finish_chunk_is_a_complete_reply(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, usage: str
    ) -> None:
        # The finish chunk (and the usage chunk, or a part of it) came, then the connection
        # broke before `[DONE]` and the body's last chunk: the reply is whole; the turn
        # failed with 502.
        chunks = [chunk({"content": "x"}), chunk({}, "stop")]
        if usage == "whole":
            chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
        body = sse(*chunks, done=False)
        if usage == "cut":
            body += b'data: {"choices": [], "usage": {"prompt_tok'
        data = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
        )
        async with raw_answer(data, hang_up=True) as upstream:
            config = _with_url(openai_upstream, f"http://127.0.0.1:{upstream.port}/v1")
            events = await collect(provider, openai_upstream, config=config)
        assert events == [
            TextDelta("x"),
            *([Usage(3, 1)] if usage == "whole" else []),
            Finish("stop"),
        ]

    async def test_chunked_body_cut_before_the_finish_chunk_fails(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = sse(chunk({"content": "x"}), done=False)
        data = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
        )
        async with raw_answer(data, hang_up=True) as upstream:
            config = _with_url(openai_upstream, f"http://127.0.0.1:{upstream.port}/v1")
            with pytest.raises(UpstreamError) as caught:
                await collect(provider, openai_upstream, config=config)
        assert type(caught.value) is UpstreamError

    async def test_session_is_reusable_after_a_stream(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        for _ in range(3):
            assert (await collect(provider, openai_upstream))[-1] == Finish("stop")
        assert len(openai_upstream.requests) == 3


class TestNonStreamingAnswer:
    async def test_json_answer_is_one_delta_with_usage_and_finish(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(JSONAnswer("whole reply", usage=(7, 2)))
        assert await collect(provider, openai_upstream) == [
            TextDelta("whole reply"),
            Usage(7, 2),
            Finish("stop"),
        ]

    async def test_json_answer_finish_reason_is_mapped(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(JSONAnswer("cut", finish="length", usage=None))
        assert await collect(provider, openai_upstream) == [TextDelta("cut"), Finish("length")]

    async def test_content_as_a_list_of_parts_is_read(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        content = [
            {"type": "thinking", "thinking": [{"type": "text", "text": "Hm."}]},
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": " there."},
        ]
        answer = {"choices": [{"message": {"content": content}, "finish_reason": "stop"}]}
        openai_upstream.script(Raw((json.dumps(answer).encode(),), content_type="application/json"))
        assert await collect(provider, openai_upstream) == [
            ReasoningDelta("Hm."),
            TextDelta("Hello"),
            TextDelta(" there."),
            Finish("stop"),
        ]

    @pytest.mark.parametrize("json_answer", [False, True])
    async def test_a_finish_reason_of_error_fails_the_reply(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, json_answer: bool
    ) -> None:
        # OpenRouter's reason for a generation that failed midway: the reply is cut short,
        # and was given as complete ("stop").
        if json_answer:
            answer = {"choices": [{"message": {"content": "Hel"}, "finish_reason": "error"}]}
            reply = Raw((json.dumps(answer).encode(),), content_type="application/json")
        else:
            reply = Raw((sse(chunk({"content": "Hel"}), chunk({}, "error")),))
        openai_upstream.script(reply)
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_a_refusal_is_the_reply_text(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # With structured outputs OpenAI puts a refusal in `message.refusal`, content null.
        answer = {
            "choices": [
                {"message": {"content": None, "refusal": "I can't."}, "finish_reason": "stop"}
            ]
        }
        openai_upstream.script(Raw((json.dumps(answer).encode(),), content_type="application/json"))
        assert await collect(provider, openai_upstream) == [TextDelta("I can't."), Finish("stop")]

    @pytest.mark.parametrize("reply", ["json", "stream"])
    async def test_a_refusal_beside_an_empty_content_is_the_reply_text(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, reply: str
    ) -> None:
        # Some servers give an empty content rather than null: a JSON answer's refusal was
        # lost (a reply of no text), where a stream's was the text.
        message = {"content": "", "refusal": "I can't."}
        if reply == "json":
            answer = {"choices": [{"message": message, "finish_reason": "stop"}]}
            piece = json.dumps(answer).encode()
            openai_upstream.script(Raw((piece,), content_type="application/json"))
        else:
            openai_upstream.script(Raw((sse(chunk(message, "stop")),)))
        assert await collect(provider, openai_upstream) == [TextDelta("I can't."), Finish("stop")]

    @pytest.mark.parametrize("call_id", [7, True, {"a": 1}, ["c1"]])
    async def test_json_answer_call_id_that_is_not_text_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, call_id: Any
    ) -> None:
        # It was relayed as Python's repr of it (`{'a': 1}`), as a streamed one is not.
        call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
        answer = {"choices": [{"message": {"content": None, "tool_calls": [call]}}]}
        openai_upstream.script(Raw((json.dumps(answer).encode(),), content_type="application/json"))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    @pytest.mark.parametrize(
        "content", [0, False, {}, [1], [{"type": "text", "text": 5}], [{"type": "thinking"}]]
    )
    async def test_json_answer_content_that_is_not_text_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, content: Any
    ) -> None:
        answer = {"choices": [{"message": {"content": content, "refusal": None}}]}
        openai_upstream.script(Raw((json.dumps(answer).encode(),), content_type="application/json"))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_json_answer_that_is_not_json_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Raw((b"{oops",), content_type="application/json"))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_json_error_object_with_200_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = json.dumps({"error": {"message": SECRET_BODY_MARKER}}).encode()
        openai_upstream.script(Raw((body,), content_type="application/json"))
        with pytest.raises(MalformedStream) as caught:
            await collect(provider, openai_upstream)
        assert SECRET_BODY_MARKER not in str(caught.value)

    @pytest.mark.parametrize(
        ("code", "kind"),
        [
            (400, UpstreamStatusError),
            ("429", UpstreamStatusError),
            ("context_length_exceeded", UpstreamStatusError),
            (None, MalformedStream),
        ],
    )
    async def test_a_json_error_object_with_200_counts_as_the_status_it_names(
        self,
        provider: OpenAICompletionsProvider,
        openai_upstream: FakeOpenAI,
        code: Any,
        kind: type[UpstreamError],
    ) -> None:
        # As an error event in a stream does: a proxy that ignored `stream` answers so.
        body = json.dumps({"error": {"code": code, "message": SECRET_BODY_MARKER}}).encode()
        openai_upstream.script(Raw((body,), content_type="application/json"))
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamError) as caught:
            await collect(provider, openai_upstream)
        assert type(caught.value) is kind
        assert_no_leak(caught.value)
        assert [e["event"] for e in logs] == ["upstream_malformed_answer"]

    @pytest.mark.parametrize(
        "answer",
        [{"error": {"message": f"bad key {API_KEY}"}}, {"choices": [{"finish_reason": ["x"]}]}],
        ids=["error", "wrong-shape"],
    )
    async def test_a_json_answer_that_is_no_completion_is_logged_at_debug(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, answer: Any
    ) -> None:
        # Only the stream's error events were logged: an operator could not see why.
        body = json.dumps(answer).encode()
        openai_upstream.script(Raw((body,), content_type="application/json"))
        with structlog.testing.capture_logs() as logs, pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)
        [entry] = [e for e in logs if e["event"] == "upstream_malformed_answer"]
        assert entry["log_level"] == "debug"
        assert entry["body"] == body.decode().replace(API_KEY, "[redacted]")

    @pytest.mark.parametrize("reason", [["stop"], {"type": "stop"}])
    async def test_json_answer_with_a_finish_reason_of_the_wrong_shape_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, reason: Any
    ) -> None:
        # A list or object is no dict key: a TypeError escaped, the turn failed as an
        # internal error (500) and the next model was not tried.
        answer = {"choices": [{"message": {"content": "hi"}, "finish_reason": reason}]}
        openai_upstream.script(Raw((json.dumps(answer).encode(),), content_type="application/json"))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    WRONG_SHAPES = (
        pytest.param({"content": "hi", "reasoning_content": ["r"]}, id="reasoning_content-list"),
        pytest.param({"content": "hi", "reasoning": {"text": "r"}}, id="reasoning-object"),
        pytest.param({"content": "hi", "reasoning": 7}, id="reasoning-number"),
        pytest.param({"content": "hi", "tool_calls": {"id": "c"}}, id="tool_calls-object"),
        pytest.param({"content": "hi", "tool_calls": "call"}, id="tool_calls-text"),
        pytest.param({"content": "hi", "tool_calls": 1}, id="tool_calls-number"),
        pytest.param({"content": "hi", "refusal": ["no"]}, id="refusal-list"),
        pytest.param("hi", id="message-text"),
        pytest.param(["hi"], id="message-list"),
    )

    @pytest.mark.parametrize("message", WRONG_SHAPES)
    @pytest.mark.parametrize("reply", ["json", "stream"])
    async def test_a_field_of_the_wrong_shape_is_malformed_in_a_json_answer_as_in_a_stream(
        self,
        provider: OpenAICompletionsProvider,
        openai_upstream: FakeOpenAI,
        message: Any,
        reply: str,
    ) -> None:
        # In a JSON answer it was left out (a message of the wrong shape: the whole reply),
        # and the rest relayed as if whole.
        if reply == "json":
            answer = {"choices": [{"message": message, "finish_reason": "stop"}]}
            piece = json.dumps(answer).encode()
            openai_upstream.script(Raw((piece,), content_type="application/json"))
        else:
            openai_upstream.script(Raw((sse(chunk(message, "stop")),)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)


class TestStatusFailures:
    async def test_429_with_retry_after_seconds(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Status(429, {"Retry-After": "7"}))
        with pytest.raises(UpstreamRateLimited) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.retry_after == 7
        assert caught.value.message == "upstream provider rate limited"
        assert_no_leak(caught.value)

    async def test_429_with_retry_after_ms_is_rounded_up(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Status(429, {"retry-after-ms": "1500"}))
        with pytest.raises(UpstreamRateLimited) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.retry_after == 2

    async def test_429_with_a_date_past_any_calendar_is_rate_limited_without_hint(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # Its year overflowed datetime: an OverflowError escaped, and the turn failed as an
        # internal error (500) instead of rate limited (429).
        date = "Wed, 21 Oct 99999999999999999999 07:28:00 GMT"
        openai_upstream.script(Status(429, {"Retry-After": date}))
        with pytest.raises(UpstreamRateLimited) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.retry_after is None

    async def test_429_without_hint_has_no_retry_after(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Status(429))
        with pytest.raises(UpstreamRateLimited) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.retry_after is None

    @pytest.mark.parametrize("status", [401, 403])
    async def test_401_and_403_are_auth_failures(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, status: int
    ) -> None:
        # Upstreams echo the key they rejected; it must not come back in the error.
        openai_upstream.script(Status(status, body=f"bad key {API_KEY} {SECRET_BODY_MARKER}"))
        with pytest.raises(UpstreamAuthFailed) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.status == status
        assert caught.value.message == "upstream provider authentication failed"
        assert_no_leak(caught.value)

    @pytest.mark.parametrize("status", [400, 404, 500, 503])
    async def test_other_statuses_are_upstream_errors(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, status: int
    ) -> None:
        openai_upstream.script(Status(status))
        with pytest.raises(UpstreamStatusError) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.status == status
        assert caught.value.message == "upstream provider error"
        assert_no_leak(caught.value)

    @pytest.mark.parametrize("status", [301, 307, 308])
    async def test_a_redirect_is_an_upstream_error_and_is_not_followed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, status: int
    ) -> None:
        # Following it would send the API key wherever the Location points.
        where = f"http://127.0.0.1:{openai_upstream.port}/elsewhere"
        openai_upstream.script(Status(status, {"Location": where}))
        with pytest.raises(UpstreamStatusError) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.status == status
        assert len(openai_upstream.requests) == 1

    async def test_error_body_is_logged_at_debug_truncated_without_the_key(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Status(500, body=f"key={API_KEY} " + "x" * 5000))
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamStatusError):
            await collect(provider, openai_upstream)
        [entry] = [e for e in logs if e["event"] == "upstream_error_body"]
        assert entry["log_level"] == "debug"
        assert entry["status"] == 500
        assert entry["truncated"] is True
        assert len(entry["body"].encode()) <= 2048
        assert API_KEY not in entry["body"]
        assert entry["body"].startswith("key=[redacted] x")

    async def test_a_key_cut_by_the_truncation_is_not_logged_in_part(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # The body was cut to 2 KiB before the key was looked for: a key straddling the cut
        # went to the log all but its last characters.
        shown = len(API_KEY) - 2
        openai_upstream.script(Status(500, body="x" * (2048 - shown) + API_KEY + "y" * 100))
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamStatusError):
            await collect(provider, openai_upstream)
        [entry] = [e for e in logs if e["event"] == "upstream_error_body"]
        assert API_KEY[:shown] not in entry["body"]
        assert entry["body"].startswith("x" * (2048 - shown))
        assert len(entry["body"].encode()) <= 2048 + len("[redacted]")

    @pytest.mark.parametrize(
        "echoed", ["gw-secret-header-value", "Bearer cf-gateway-token", "cf-gateway-token"]
    )
    async def test_the_providers_header_values_are_not_logged(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, echoed: str
    ) -> None:
        # `headers` carry credentials too (Azure's `api-key`, an AI gateway's token); an
        # upstream echoes them back as it does a wrong key.
        headers = {
            "X-Api-Key": "gw-secret-header-value",
            "cf-aig-authorization": "Bearer cf-gateway-token",
        }
        config = openai_upstream.provider_config(headers=headers)
        openai_upstream.script(Status(401, body=f"bad credential {echoed}!"))
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamAuthFailed):
            await collect(provider, openai_upstream, config=config)
        [entry] = [e for e in logs if e["event"] == "upstream_error_body"]
        assert entry["body"] == "bad credential [redacted]!"

    @pytest.mark.parametrize("key", ["sk-a/b+c/d==", 'sk-"quoted"\\key', "sk-clé-secrète"])
    async def test_a_key_the_body_echoes_json_escaped_is_not_logged(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, key: str
    ) -> None:
        # JSON bodies escape `"` and `\`, some servers `/` (PHP's json_encode) and every
        # character beyond ASCII (Python's json.dumps).
        escaped = json.dumps(key)[1:-1].replace("/", "\\/")
        config = openai_upstream.provider_config(api_key=key)
        openai_upstream.script(Status(401, body=f'{{"error": "bad key {escaped}"}}'))
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamAuthFailed):
            await collect(provider, openai_upstream, config=config)
        [entry] = [e for e in logs if e["event"] == "upstream_error_body"]
        assert entry["body"] == '{"error": "bad key [redacted]"}'

    async def test_a_short_header_value_is_no_credential_and_stays(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        config = openai_upstream.provider_config(headers={"OpenAI-Beta": "v2"})
        openai_upstream.script(Status(500, body="v2 refused"))
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamStatusError):
            await collect(provider, openai_upstream, config=config)
        [entry] = [e for e in logs if e["event"] == "upstream_error_body"]
        assert entry["body"] == "v2 refused"

    async def test_a_header_value_cut_by_the_truncation_is_not_logged_in_part(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        secret = "gw-secret-header-value"
        config = openai_upstream.provider_config(headers={"X-Api-Key": secret})
        openai_upstream.script(Status(500, body="x" * (2048 - 5) + secret))
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamStatusError):
            await collect(provider, openai_upstream, config=config)
        [entry] = [e for e in logs if e["event"] == "upstream_error_body"]
        assert entry["body"] == "x" * (2048 - 5) + "[redacted]"


class TestConnectionFailures:
    async def test_connection_refused_is_an_upstream_error(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        config = _with_url(openai_upstream, f"http://127.0.0.1:{closed_port()}/v1")
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, openai_upstream, config=config)
        assert type(caught.value) is UpstreamError
        assert caught.value.message == "upstream provider error"

    async def test_tls_failure_is_an_upstream_error(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # TLS spoken to a plain-HTTP server: the handshake fails.
        config = _with_url(openai_upstream, f"https://127.0.0.1:{openai_upstream.port}/v1")
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, openai_upstream, config=config)
        assert type(caught.value) is UpstreamError

    async def test_connect_timeout(self, http: UpstreamClient, openai_upstream: FakeOpenAI) -> None:
        provider = OpenAICompletionsProvider(http, Timeouts(connect=0.3, idle=5))
        async with silent_server() as port:
            config = _with_url(openai_upstream, f"https://127.0.0.1:{port}/v1")
            start = time.monotonic()
            with pytest.raises(UpstreamTimeout) as caught:
                await collect(provider, openai_upstream, config=config)
        assert 0.25 < time.monotonic() - start < 1.5
        assert caught.value.message == "upstream provider timeout"

    async def test_stall_after_headers_is_an_idle_timeout(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stall())
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await collect(provider, openai_upstream)
        assert 0.25 < time.monotonic() - start < 1.0

    async def test_stall_before_headers_is_an_idle_timeout(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stall(headers=False))
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await collect(provider, openai_upstream)
        assert 0.25 < time.monotonic() - start < 1.0

    async def test_stall_mid_stream_times_out_after_the_deltas(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("a", "b", "c"), stall_after=2))
        got: list[ProviderEvent] = []
        with pytest.raises(UpstreamTimeout):
            await provider.stream(provider_request(openai_upstream.provider_config()), got.append)
        assert got == [TextDelta("a"), TextDelta("b")]
        # The timed-out connection is closed, so the upstream sees us leave.
        await openai_upstream.last.wait_gone()

    async def test_stall_mid_stream_times_out_idle_seconds_after_the_last_read(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # "b" comes 0.2 s in: the 0.3 s idle limit counts from it, not from the headers.
        openai_upstream.script(Stream(("a", "b", "c"), delay=0.2, stall_after=2))
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await collect(provider, openai_upstream)
        assert 0.45 < time.monotonic() - start < 1.5
        assert caught.value.detail == "TimeoutError: no data from the upstream for 0.3 s"

    async def test_keepalives_alone_time_out_with_no_reply_progress(
        self, http: UpstreamClient, openai_upstream: FakeOpenAI
    ) -> None:
        # Bytes keep coming (so the idle limit never passes), but no reply: `: ping`
        # comments after some text, until the upstream would end the run's own timeout.
        provider = OpenAICompletionsProvider(http, Timeouts(connect=1, idle=0.3, progress=0.5))
        pings = (b": ping\n\n",) * 60
        openai_upstream.script(Raw((sse(chunk({"content": "a"}), done=False), *pings), delay=0.05))
        got: list[ProviderEvent] = []
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await provider.stream(provider_request(openai_upstream.provider_config()), got.append)
        assert 0.45 < time.monotonic() - start < 1.5
        assert got == [TextDelta("a")]
        assert caught.value.detail == (
            "TimeoutError: nothing of the reply from the upstream for 0.5 s"
        )
        await openai_upstream.last.wait_gone()

    async def test_empty_call_fragments_alone_time_out_with_no_reply_progress(
        self, http: UpstreamClient, openai_upstream: FakeOpenAI
    ) -> None:
        # A fragment of no id, name or arguments is no piece of the reply: a keepalive.
        provider = OpenAICompletionsProvider(http, Timeouts(connect=1, idle=0.3, progress=0.5))
        empty = sse(chunk({"tool_calls": [{"index": 0, "function": {}}]}), done=False)
        openai_upstream.script(Raw((sse(chunk({"content": "a"}), done=False), *(empty,) * 60),
                                   delay=0.05))  # fmt: skip
        got: list[ProviderEvent] = []
        with pytest.raises(UpstreamTimeout) as caught:
            await provider.stream(provider_request(openai_upstream.provider_config()), got.append)
        assert got == [TextDelta("a")]
        assert caught.value.detail == (
            "TimeoutError: nothing of the reply from the upstream for 0.5 s"
        )

    async def test_a_json_answer_trickled_a_byte_at_a_time_times_out(
        self, http: UpstreamClient, openai_upstream: FakeOpenAI
    ) -> None:
        provider = OpenAICompletionsProvider(http, Timeouts(connect=1, idle=0.3, progress=0.5))
        answer = json.dumps({"choices": [{"message": {"content": "x" * 100}}]}).encode()
        pieces = tuple(answer[i : i + 1] for i in range(len(answer)))
        openai_upstream.script(Raw(pieces, content_type="application/json", delay=0.05))
        with pytest.raises(UpstreamTimeout) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.detail == (
            "TimeoutError: nothing of the reply from the upstream for 0.5 s"
        )

    async def test_keepalives_while_a_model_thinks_past_the_idle_limit_are_fine(
        self, http: UpstreamClient, openai_upstream: FakeOpenAI
    ) -> None:
        # A slow reasoning model behind a proxy: keepalives for longer than `idle`, then the
        # reply. Each keepalive is a byte: the idle limit (no byte at all) is not reached.
        provider = OpenAICompletionsProvider(http, Timeouts(connect=1, idle=0.3, progress=2))
        pings = (b": OPENROUTER PROCESSING\n\n",) * 12
        reply = sse(chunk({"content": "ok"}, "stop"))
        openai_upstream.script(Raw((*pings, reply), delay=0.05))
        assert await collect(provider, openai_upstream) == [TextDelta("ok"), Finish("stop")]

    async def test_connection_cut_mid_body_is_an_upstream_error(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("a", "b", "c"), drop_after=2))
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, openai_upstream)
        assert type(caught.value) is UpstreamError


class TestMalformedStream:
    async def test_malformed_data_line(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        body = sse(chunk({"content": "ok"}), done=False) + b"data: {nope\n\n"
        openai_upstream.script(Raw((body,)))
        got: list[ProviderEvent] = []
        with pytest.raises(MalformedStream) as caught:
            await provider.stream(provider_request(openai_upstream.provider_config()), got.append)
        assert got == [TextDelta("ok")]
        assert caught.value.message == "upstream provider error"

    @pytest.mark.parametrize(
        "line",
        [b"data: []", b'data: {"choices": [1]}', b'data: {"choices": [{"delta": {"content": 5}}]}'],
    )
    async def test_chunk_of_the_wrong_shape(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, line: bytes
    ) -> None:
        openai_upstream.script(Raw((line + b"\n\n",)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_in_stream_error_after_deltas(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("a", "b"), error_after=1))  # type server_error
        got: list[ProviderEvent] = []
        with pytest.raises(UpstreamStatusError) as caught:
            await provider.stream(provider_request(openai_upstream.provider_config()), got.append)
        assert got == [TextDelta("a")]
        assert caught.value.status == 500
        assert_no_leak(caught.value)

    async def test_error_object_chunk_is_an_in_stream_error(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # vLLM's shape for an error raised mid-generation.
        error = {"object": "error", "message": SECRET_BODY_MARKER, "code": 500}
        openai_upstream.script(Raw((sse(chunk({"content": "a"}), error),)))
        with pytest.raises(UpstreamStatusError) as caught:
            await collect(provider, openai_upstream)
        assert caught.value.status == 500
        assert caught.value.message == "upstream provider error"
        assert_no_leak(caught.value)

    @pytest.mark.parametrize(
        ("error", "kind", "status"),
        [
            ({"error": {"code": 400, "message": SECRET_BODY_MARKER}}, UpstreamStatusError, 400),
            ({"error": {"code": "413", "message": SECRET_BODY_MARKER}}, UpstreamStatusError, 413),
            ({"object": "error", "code": 422, "message": SECRET_BODY_MARKER}, UpstreamStatusError,
             422),
            ({"error": {"code": 502, "message": SECRET_BODY_MARKER}}, UpstreamStatusError, 502),
            ({"error": {"code": 429, "message": SECRET_BODY_MARKER}}, UpstreamStatusError, 429),
            ({"error": {"code": 401, "message": SECRET_BODY_MARKER}}, UpstreamStatusError, 401),
            # No status named: nothing to tell of the failure.
            ({"error": {"code": None, "message": SECRET_BODY_MARKER}}, MalformedStream, None),
            # OpenAI's words, its `code` before its `type`; a number first.
            ({"error": {"message": SECRET_BODY_MARKER, "type": "invalid_request_error",
                        "param": "messages", "code": "context_length_exceeded"}},
             UpstreamStatusError, 400),
            ({"error": {"type": "invalid_request_error", "code": None}}, UpstreamStatusError,
             400),
            ({"error": {"type": "invalid_request_error", "code": "invalid_api_key"}},
             UpstreamStatusError, 401),
            ({"error": {"type": "requests", "code": "rate_limit_exceeded"}},
             UpstreamStatusError, 429),
            ({"error": {"type": "server_error", "code": None}}, UpstreamStatusError, 500),
            ({"error": {"type": "server_error", "code": 400}}, UpstreamStatusError, 400),
            ({"object": "error", "type": "invalid_request_error", "code": "3051"},
             UpstreamStatusError, 400),  # Mistral's numbered codes
            ({"error": {"code": "some_new_word", "type": "some_new_type"}}, MalformedStream,
             None),
            ({"error": {"code": ["context_length_exceeded"]}}, MalformedStream, None),
            ({"error": {"code": 200}}, MalformedStream, None),
            ({"error": {"code": True}}, MalformedStream, None),
            ({"error": {"code": "\u0664\u0660\u0660"}}, MalformedStream, None),  # Arabic "400"
            ({"error": SECRET_BODY_MARKER}, MalformedStream, None),
        ],
    )  # fmt: skip
    async def test_an_in_stream_error_is_classified_by_the_status_it_names(
        self,
        provider: OpenAICompletionsProvider,
        openai_upstream: FakeOpenAI,
        error: dict[str, Any],
        kind: type[UpstreamError],
        status: int | None,
    ) -> None:
        # OpenRouter and proxies answer 200 and put the upstream's status in the stream.
        openai_upstream.script(Raw((sse(error, done=False),)))
        with pytest.raises(UpstreamError) as caught:
            await collect(provider, openai_upstream)
        assert type(caught.value) is kind
        assert getattr(caught.value, "status", None) == status
        assert_no_leak(caught.value)

    @pytest.mark.parametrize("content_type", ["text/event-stream", "application/json"])
    async def test_json_nested_deeper_than_the_parser_goes_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, content_type: str
    ) -> None:
        # The JSON parser raises RecursionError here, not ValueError.
        deep = b"[" * 200_000 + b"]" * 200_000
        body = b"data: " + deep + b"\n\n" if content_type == "text/event-stream" else deep
        openai_upstream.script(Raw((body,), content_type=content_type))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_an_endless_line_in_small_chunks_is_refused_soon(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # 9 MiB of one line, in as many chunks of the chunked encoding as KiB: refused at
        # 8 MiB, each chunk's bytes handled once (copied again for every chunk, the line took
        # the event loop's CPU for a minute).
        openai_upstream.script(Raw((b"data: ", *(b"x" * 1024 for _ in range(9 * 1024)))))
        started = time.process_time()
        with pytest.raises(MalformedStream) as caught:
            await collect(provider, openai_upstream)
        assert "line too long" in str(caught.value)
        assert time.process_time() - started < 5.0

    async def test_a_stream_that_never_ends_is_cut_at_the_size_limit(
        self,
        provider: OpenAICompletionsProvider,
        openai_upstream: FakeOpenAI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # An upstream that streams text without end (a local server looping with no token
        # limit, a hostile one) held the run, its text growing in memory, until the run
        # timeout. The limit is far above any model's reply; lowered here to 64 KiB.
        monkeypatch.setattr(upstream, "MAX_STREAM_BYTES", 64 * 1024)
        piece = sse(chunk({"content": "x" * 900}), done=False)
        openai_upstream.script(Raw((piece,) * 200, delay=0.002))
        got: list[ProviderEvent] = []
        with pytest.raises(MalformedStream) as caught:
            await provider.stream(provider_request(openai_upstream.provider_config()), got.append)
        assert str(caught.value) == "upstream stream over 65536 bytes"
        assert 60 <= len(got) <= 73
        await openai_upstream.last.wait_gone()

    async def test_a_body_with_no_event_in_it_is_logged_at_debug(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # A proxy's error page, or an error object without `data:`, labelled an event
        # stream: the turn failed as "ended before [DONE]" with nothing in the log to say why.
        body = f'{{"error": "bad key {API_KEY}"}}\n'.encode()
        openai_upstream.script(Raw((body,)))
        with structlog.testing.capture_logs() as logs, pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)
        [entry] = [e for e in logs if e["event"] == "upstream_malformed_stream"]
        assert entry["log_level"] == "debug"
        assert entry["body"] == body.decode().replace(API_KEY, "[redacted]")

    async def test_eof_without_finish_or_done_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("a",), finish_event=False, usage=None, end=False))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)


class TestCancellation:
    async def test_cancelled_consumer_closes_the_upstream_connection(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(tuple(f" w{i}" for i in range(100)), delay=0.05))
        got: list[ProviderEvent] = []
        two = asyncio.Event()

        def deliver(event: ProviderEvent) -> None:
            got.append(event)
            if len(got) == 2:
                two.set()

        async def consume() -> None:
            await provider.stream(provider_request(openai_upstream.provider_config()), deliver)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(two.wait(), 2)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 0.1
        await openai_upstream.last.wait_gone(1.0)
        assert not openai_upstream.last.completed

    async def test_nothing_is_delivered_once_the_cancellation_is_requested(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # No delay: the deltas arrive together, and are decoded in one call. The consumer
        # cancels its task on the second; the rest of that read must not be delivered.
        openai_upstream.script(Stream(tuple(f" w{i}" for i in range(100))))
        got: list[ProviderEvent] = []

        def deliver(event: ProviderEvent) -> None:
            got.append(event)
            if len(got) == 2:
                task.cancel()

        async def consume() -> None:
            await provider.stream(provider_request(openai_upstream.provider_config()), deliver)

        task = asyncio.create_task(consume())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert got == [TextDelta(" w0"), TextDelta(" w1")]

    async def test_a_consumer_error_ends_the_stream_and_closes_the_connection(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(tuple(f" w{i}" for i in range(100)), delay=0.05))
        got: list[ProviderEvent] = []
        boom = KeyError("the consumer's own bug")

        def deliver(event: ProviderEvent) -> None:
            got.append(event)
            if len(got) == 2:
                raise boom

        start = time.monotonic()
        with pytest.raises(KeyError) as caught:
            await provider.stream(provider_request(openai_upstream.provider_config()), deliver)
        assert caught.value is boom  # as it was raised: not mistaken for a malformed stream
        assert got == [TextDelta(" w0"), TextDelta(" w1")]
        assert time.monotonic() - start < 1.0
        await openai_upstream.last.wait_gone(1.0)

    async def test_cancel_while_waiting_for_headers_closes_the_connection(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stall(headers=False))
        task = asyncio.create_task(collect(provider, openai_upstream))
        await openai_upstream.wait_for_requests(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await openai_upstream.last.wait_gone(1.0)

    async def test_provider_still_works_after_a_cancelled_stream(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(tuple("abcdefgh"), delay=0.05))
        task = asyncio.create_task(collect(provider, openai_upstream))
        await openai_upstream.wait_for_requests(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await collect(provider, openai_upstream))[-1] == Finish("stop")


class TestTransportErrorClassification:
    """upstream.transport_error, pure: which client failures are timeouts."""

    @pytest.mark.parametrize(
        "exc",
        [TimeoutError("connecting to h:1 took over 10 s"), TimeoutError("no data for 120 s")],
    )
    def test_connect_and_read_timeouts_are_timeouts(self, exc: Exception) -> None:
        assert type(transport_error(exc)) is UpstreamTimeout

    @pytest.mark.parametrize(
        "exc",
        [
            ConnectionRefusedError(),
            ConnectionResetError("the upstream closed the connection early"),
            UpstreamProtocolError("malformed HTTP response"),
            ssl.SSLError(),
            ValueError("header 'x' is not a valid HTTP header"),
        ],
    )
    def test_other_connection_failures_are_upstream_errors(self, exc: Exception) -> None:
        assert type(transport_error(exc)) is UpstreamError


class TestRetryAfter:
    """upstream.parse_retry_after, pure."""

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({"Retry-After": "7"}, 7),
            ({"retry-after": "0"}, 0),
            ({"Retry-After": "1.2"}, 2),
            ({"retry-after-ms": "1500"}, 2),
            ({"retry-after-ms": "1000"}, 1),
            ({"retry-after-ms": "1", "Retry-After": "9"}, 1),
            ({"retry-after-ms": "junk", "Retry-After": "9"}, 9),
            ({"retry-after-ms": "inf", "Retry-After": "9"}, 9),
            ({"retry-after-ms": "nan", "Retry-After": "9"}, 9),
            ({"Retry-After": "soon"}, None),
            ({"Retry-After": "-3"}, None),
            ({}, None),
        ],
    )
    def test_seconds_and_milliseconds(self, headers: dict[str, str], expected: int | None) -> None:
        assert parse_retry_after(CIMultiDict(headers)) == expected

    def test_http_date_is_seconds_from_now_rounded_up(self) -> None:
        now = 1_700_000_000.5
        headers = CIMultiDict({"Retry-After": "Tue, 14 Nov 2023 22:13:30 GMT"})  # now + 9.5
        assert parse_retry_after(headers, now=now) == 10

    @pytest.mark.parametrize(
        "date",
        [
            "Wed, 21 Oct 99999999999999999999 07:28:00 GMT",
            "Wed, 21 Oct 2015 99999999999999999999:28:00 GMT",
            "Wed, 99999999999 Oct 2015 07:28:00 GMT",
        ],
    )
    def test_http_date_with_a_field_beyond_any_calendar_is_no_hint(self, date: str) -> None:
        assert parse_retry_after(CIMultiDict({"Retry-After": date})) is None

    @pytest.mark.parametrize(
        "date",
        [
            "Tue Nov 14 22:13:30 2023",  # asctime: no zone, as RFC 9110 §5.6.7 defines it (GMT)
            "Tuesday, 14-Nov-23 22:13:30 GMT",  # RFC 850
        ],
    )
    def test_obsolete_http_date_forms_are_read_as_gmt(
        self, date: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # RFC 9110 §5.6.7: a recipient MUST accept all three forms. The asctime one, having no
        # zone, was dropped: the client's 429 lost its Retry-After.
        headers = CIMultiDict({"Retry-After": date})
        # A local time that is not GMT: on a UTC host, a date read as local time is GMT anyway.
        monkeypatch.setenv("TZ", "EST+5")  # POSIX form: needs no zone database
        time.tzset()
        try:
            seconds = parse_retry_after(headers, now=1_700_000_000.5)
        finally:
            monkeypatch.undo()
            time.tzset()
        assert seconds == 10

    def test_http_date_in_the_past_is_zero(self) -> None:
        headers = CIMultiDict({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        assert parse_retry_after(headers, now=1_700_000_000) == 0


def chat_messages_for(request: ProviderRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = request_body(request)["messages"]
    return messages


def _with_url(upstream: FakeOpenAI, url: str) -> ProviderConfig:
    return attrs.evolve(upstream.provider_config(), base_url=url)


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
CALL = ToolCall("call_1", "get_weather", '{"city":"Paris"}')


class TestTools:
    async def test_tools_and_their_choice_are_sent_as_they_are(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        params = {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
        body = await sent_body(provider, openai_upstream, params=params)
        assert (body["tools"], body["tool_choice"], body["parallel_tool_calls"]) == (
            [WEATHER],
            "required",
            False,
        )

    async def test_calls_and_results_in_the_context_are_openai_messages(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        history = (
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=(CALL,), reasoning="not sent back"),
        )
        request = attrs.evolve(
            provider_request(openai_upstream.provider_config(), history=history),
            messages=(*history, ChatMessage("tool", "sunny", tool_call_id="call_1")),
        )
        await events_of(provider, request)
        assert openai_upstream.last.body["messages"] == [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]

    @pytest.mark.parametrize(
        ("base_url", "model"),
        [(None, "deepseek-v4-flash"), (None, "deepseek-ai/DeepSeek-V3.2"),
         (None, "kimi-k2-thinking"), ("https://api.deepseek.com", "fake-model")],
    )  # fmt: skip
    def test_deepseek_and_kimi_get_a_calls_reasoning_back(
        self, openai_upstream: FakeOpenAI, base_url: str | None, model: str
    ) -> None:
        # Their thinking models refuse a tool loop without it: "Missing `reasoning_content`
        # field in the assistant message at message index 1".
        history = (
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "Let me see.", reasoning="earlier turn"),
            ChatMessage("user", "and now?"),
            ChatMessage("assistant", "", tool_calls=(CALL,), reasoning="I should call it."),
            ChatMessage("assistant", "", tool_calls=(attrs.evolve(CALL, id="call_2"),)),
        )
        config = openai_upstream.provider_config()
        if base_url is not None:
            config = attrs.evolve(config, base_url=base_url)
        request = attrs.evolve(
            provider_request(config, model=model),
            messages=(*history, ChatMessage("tool", "sunny", tool_call_id="call_2")),
        )
        sent = chat_messages_for(request)
        assert "reasoning_content" not in sent[1]  # a reply without calls: not needed
        assert sent[3]["reasoning_content"] == "I should call it."
        assert sent[4]["reasoning_content"] == ""  # the field is what they look for

    async def test_calls_that_share_an_id_go_under_ids_of_their_own_with_their_results(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # Some servers give parallel calls one id; OpenAI refuses a context whose calls of one
        # message share an id (and a result could not say which call it answers).
        paris = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
        rome = ToolCall("call_1", "get_weather", '{"city":"Rome"}')
        turn = ChatMessage("assistant", "", tool_calls=(paris, rome))
        later = ChatMessage("assistant", "", tool_calls=(attrs.evolve(paris, id="call_1_2"),))
        messages = (
            ChatMessage("user", "Paris and Rome?"),
            turn,
            ChatMessage("tool", "sunny", tool_call_id="call_1"),
            ChatMessage("tool", "rainy", tool_call_id="call_1"),
            ChatMessage("user", "again"),
            later,  # an id like a rewritten one, in a later turn: kept
            ChatMessage("tool", "sunny", tool_call_id="call_1_2"),
        )
        config = openai_upstream.provider_config()
        request = attrs.evolve(provider_request(config), messages=messages)
        await events_of(provider, request)
        sent = openai_upstream.last.body["messages"]
        assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_1", "call_1_2"]
        assert [(m["tool_call_id"], m["content"]) for m in sent[2:4]] == [
            ("call_1", "sunny"),
            ("call_1_2", "rainy"),
        ]
        assert [c["id"] for c in sent[5]["tool_calls"]] == ["call_1_2"]
        assert sent[6]["tool_call_id"] == "call_1_2"

    @pytest.mark.parametrize(
        ("base_url", "model"),
        [(None, "mistral-large-latest"), (None, "Devstral-Small-2505"),
         ("https://api.mistral.ai/v1", "fake-model")],
    )  # fmt: skip
    async def test_mistral_gets_call_ids_of_nine_letters_and_digits(
        self,
        provider: OpenAICompletionsProvider,
        openai_upstream: FakeOpenAI,
        base_url: str | None,
        model: str,
    ) -> None:
        # Mistral's API (and its models' chat template, served by vLLM) refuses any other id:
        # "Tool call id was call_1 but must be a-z, A-Z, 0-9, with a length of 9" (calls
        # another model made, the gateway's own ids).
        own = ToolCall("Ab3dE6gH9", "get_weather", "{}")
        calls = (CALL, attrs.evolve(CALL, id="toolu_01A09q90qw90lq917835lq9"), own)
        messages = (
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=calls),
            *(ChatMessage("tool", "sunny", tool_call_id=call.id) for call in calls),
        )
        config = openai_upstream.provider_config()
        request = attrs.evolve(provider_request(config, model=model), messages=messages)
        if base_url is not None:
            # The fake stands in for api.mistral.ai: only the host is looked at.
            request = attrs.evolve(request, provider=attrs.evolve(config, base_url=base_url))
            sent = chat_messages_for(request)
        else:
            await events_of(provider, request)
            sent = openai_upstream.last.body["messages"]
        ids = [call["id"] for call in sent[1]["tool_calls"]]
        assert all(len(i) == 9 and i.isascii() and i.isalnum() for i in ids)
        assert ids[2] == "Ab3dE6gH9"  # already one: kept
        assert len(set(ids)) == 3
        assert [m["tool_call_id"] for m in sent[2:]] == ids

    async def test_other_upstreams_get_call_ids_as_they_are(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        messages = (
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=(CALL,)),
            ChatMessage("tool", "sunny", tool_call_id=CALL.id),
        )
        config = openai_upstream.provider_config()
        request = attrs.evolve(provider_request(config), messages=messages)
        assert chat_messages_for(request)[1]["tool_calls"][0]["id"] == "call_1"

    @pytest.mark.parametrize("shared", [False, True], ids=["own-ids", "one-id"])
    def test_each_call_id_is_used_a_few_times_however_many_calls_a_reply_has(
        self, shared: bool
    ) -> None:
        # Each repeat tried `<id>_2`, `<id>_3`, ... from the start: quadratic, and a 20 MiB body
        # holds 200,000 calls (10,000 took 10 s of the event loop).
        uses = []
        for count in (1000, 2000):
            ids = [CountedId("call" if shared else f"call_{n}") for n in range(count)]
            calls = tuple(ToolCall(i, "f", "{}") for i in ids)
            messages = (
                ChatMessage("user", "q"),
                ChatMessage("assistant", "", tool_calls=calls),
                *(ChatMessage("tool", "r", tool_call_id=CountedId(str(i))) for i in ids),
            )
            CountedId.reset()
            sent = request_body(ProviderRequest(ModelRef("p", "m"), "", messages))["messages"]
            uses.append(CountedId.uses())
            assert len({call["id"] for call in sent[1]["tool_calls"]}) == count
        assert uses[1] <= 2 * uses[0] + 10, uses  # twice the calls, twice the work

    def test_thousands_of_calls_that_share_ids_each_get_one_of_their_own(self) -> None:
        # A client may send an assistant message of thousands of calls (a 20 MiB body holds
        # 200,000): their ids were checked against every id before them, on the event loop
        # (10,000 took 10 s, quadratic).
        same = tuple(ToolCall("c", "f", "{}") for _ in range(5000))
        distinct = tuple(ToolCall(f"d{i}", "f", "{}") for i in range(5000))
        calls = same + distinct
        messages = (
            ChatMessage("user", "q"),
            ChatMessage("assistant", "", tool_calls=calls),
            *(ChatMessage("tool", "r", tool_call_id=call.id) for call in calls),
        )
        request = ProviderRequest(ModelRef("p", "m"), "", messages)
        sent = request_body(request)["messages"]
        ids = [call["id"] for call in sent[1]["tool_calls"]]
        assert ids[:3] == ["c", "c_2", "c_3"] and ids[4999] == "c_5000" and ids[5000] == "d0"
        assert [m["tool_call_id"] for m in sent[2:]] == ids

    async def test_streamed_tool_call_fragments(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("call_1", "get_weather", ('{"ci', 'ty":"Paris"}'))
        openai_upstream.script(Stream((), tool_calls=(call,)))
        assert await collect(provider, openai_upstream) == [
            ToolCallDelta(0, "call_1", "get_weather", ""),
            ToolCallDelta(0, None, None, '{"ci'),
            ToolCallDelta(0, None, None, 'ty":"Paris"}'),
            Usage(3, 2),
            Finish("tool_calls"),
        ]

    async def test_a_json_answer_with_tool_calls_and_reasoning(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("call_1", "get_weather", ('{"city":"Paris"}',))
        openai_upstream.script(JSONAnswer("", reasoning="think", tool_calls=(call,)))
        assert await collect(provider, openai_upstream) == [
            ReasoningDelta("think"),
            ToolCallDelta(0, "call_1", "get_weather", '{"city":"Paris"}'),
            Usage(3, 2),
            Finish("tool_calls"),
        ]

    async def test_streamed_reasoning_before_the_text(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Stream(("ok",), reasoning=("Let me", " think")))
        assert await collect(provider, openai_upstream) == [
            ReasoningDelta("Let me"),
            ReasoningDelta(" think"),
            TextDelta("ok"),
            Usage(3, 2),
            Finish("stop"),
        ]

    async def test_text_and_a_call_in_one_chunk(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
        body = sse(chunk({"content": "ok", "tool_calls": [call]}, "tool_calls", usage=None))
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            TextDelta("ok"),
            ToolCallDelta(0, "c1", "f", "{}"),
            Finish("tool_calls"),
        ]

    async def test_a_streamed_refusal_is_the_reply_text(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # Structured outputs: the refusal streams in `delta.refusal`, content null; it was
        # lost, and the client got an empty reply.
        body = sse(
            chunk({"role": "assistant", "content": None, "refusal": None}),
            chunk({"refusal": "I can't"}),
            chunk({"refusal": " help."}),
            chunk({}, "stop"),
        )
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            TextDelta("I can't"),
            TextDelta(" help."),
            Finish("stop"),
        ]

    async def test_parallel_calls_without_an_index_stay_apart(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # Gemini's OpenAI-compatible API leaves `index` out: a fragment with an id starts a
        # call, one without continues the last.
        body = sse(
            chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": ""}}]}),
            chunk({"tool_calls": [{"function": {"arguments": '{"x":1}'}}]}),
            chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
        )
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            ToolCallDelta(0, "a", "f", ""),
            ToolCallDelta(0, None, None, '{"x":1}'),
            ToolCallDelta(1, "b", "g", "{}"),
            Finish("tool_calls"),
        ]

    async def test_parallel_calls_all_at_index_0_with_their_own_ids_stay_apart(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        # Ollama sends each call whole in a chunk of its own, every one at index 0; a server
        # may repeat a call's id in each of its fragments.
        body = sse(
            chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f"}}]}),
            chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "{}"}}]}),
            chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "g"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"y":2}'}}]}),
            chunk({}, "tool_calls"),
        )
        openai_upstream.script(Raw((body,)))
        assert await collect(provider, openai_upstream) == [
            ToolCallDelta(0, "a", "f", ""),
            ToolCallDelta(0, "a", None, "{}"),
            ToolCallDelta(1, "b", "g", ""),
            ToolCallDelta(1, None, None, '{"y":2}'),
            Finish("tool_calls"),
        ]

    @pytest.mark.parametrize(
        "call",
        [
            {"index": "0", "function": {"arguments": "x"}},
            {"index": 0, "function": {"arguments": 5}},
            {"index": 0, "id": 7, "function": {"name": "f"}},
        ],
    )
    async def test_a_malformed_fragment_is_a_malformed_stream(
        self,
        provider: OpenAICompletionsProvider,
        openai_upstream: FakeOpenAI,
        call: dict[str, Any],
    ) -> None:
        openai_upstream.script(Raw((sse(chunk({"tool_calls": [call]})),)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)


class TestSharedClient:
    """The pool's one upstream client carries every client's requests to an upstream."""

    async def test_a_cookie_an_upstream_set_never_goes_out_with_a_later_request(
        self, openai_upstream: FakeOpenAI
    ) -> None:
        # By name, as a cookie jar would keep it for a name and not for a bare IP address.
        config = attrs.evolve(
            openai_upstream.provider_config(),
            base_url=f"http://localhost:{openai_upstream.port}/v1",
        )
        openai_upstream.script(Status(429, headers={"Set-Cookie": "session=first-client"}))
        pool = ProviderPool(TIMEOUTS)
        try:
            provider = pool.get(API_OPENAI_COMPLETIONS)
            with pytest.raises(UpstreamRateLimited):
                await collect(provider, openai_upstream, config=config)
            await collect(provider, openai_upstream, config=config)
        finally:
            await pool.aclose()
        assert len(openai_upstream.requests) == 2
        assert "Cookie" not in openai_upstream.last.headers


class TestUpstreamCallNames:
    """A call's name and id from the upstream are what a client may send back (`tools`,
    an assistant message's `tool_calls`): any other fails the turn rather than reach a
    client that chokes on it, or a session whose every later turn it would break."""

    BAD = (
        pytest.param({"id": "c1", "name": "n" * 65}, id="name-too-long"),
        pytest.param({"id": "c1", "name": "n" * 1_000_000}, id="name-of-a-megabyte"),
        pytest.param({"id": "c1", "name": "get weather"}, id="name-with-a-space"),
        pytest.param({"id": "c1", "name": "get\nweather"}, id="name-with-a-newline"),
        pytest.param({"id": "c1", "name": "get_wéather"}, id="name-not-ascii"),
        pytest.param({"id": "c" * 257, "name": "f"}, id="id-too-long"),
    )

    @pytest.mark.parametrize("call", BAD)
    async def test_a_streamed_call_of_a_bad_name_or_id_is_a_malformed_stream(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, call: Any
    ) -> None:
        fragment = {"index": 0, "id": call["id"], "function": {"name": call["name"]}}
        openai_upstream.script(Raw((sse(chunk({"tool_calls": [fragment]}), chunk({}, "stop")),)))
        delivered: list[ProviderEvent] = []
        with pytest.raises(MalformedStream):
            await provider.stream(provider_request(openai_upstream.provider_config()),
                                  delivered.append)  # fmt: skip
        assert not any(isinstance(event, ToolCallDelta) for event in delivered)

    @pytest.mark.parametrize("call", BAD)
    async def test_a_json_answer_call_of_a_bad_name_or_id_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, call: Any
    ) -> None:
        openai_upstream.script(JSONAnswer("", tool_calls=(FakeToolCall(call["id"], call["name"]),)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_the_longest_name_and_id_a_client_may_send_are_relayed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("c" * 256, "A-z_0" + "n" * 59)
        openai_upstream.script(Stream((), tool_calls=(call,)))
        assert (await collect(provider, openai_upstream))[0] == ToolCallDelta(
            0, call.id, call.name, ""
        )


class TestNamespacedCallNames:
    """gpt-oss names its calls in its `functions` namespace (`functions.get_weather`) on a
    server that does not strip it: a call of one of the request's tools is relayed under the
    tool's name, as vLLM does; a dotted name of no tool of the request stays refused."""

    TOOLS: ClassVar = {"tools": [{"type": "function", "function": {"name": "get_weather"}}]}

    async def test_a_streamed_call_is_relayed_under_the_tools_name(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("c1", "functions.get_weather", ('{"city": "Oslo"}',))
        openai_upstream.script(Stream((), tool_calls=(call,)))
        events = await collect(provider, openai_upstream, params=self.TOOLS)
        assert events[:2] == [
            ToolCallDelta(0, "c1", "get_weather", ""),
            ToolCallDelta(0, None, None, '{"city": "Oslo"}'),
        ]

    async def test_a_json_answer_call_is_relayed_under_the_tools_name(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("c1", "functions.get_weather", ('{"city": "Oslo"}',))
        openai_upstream.script(JSONAnswer("", tool_calls=(call,)))
        events = await collect(provider, openai_upstream, params=self.TOOLS)
        assert events[0] == ToolCallDelta(0, "c1", "get_weather", '{"city": "Oslo"}')

    @pytest.mark.parametrize(
        "name",
        ["functions.get_time", "functions.", "tools.get_weather", "functions.functions.get_x"],
    )
    async def test_a_dotted_name_of_no_tool_of_the_request_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, name: str
    ) -> None:
        openai_upstream.script(Stream((), tool_calls=(FakeToolCall("c1", name),)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream, params=self.TOOLS)

    async def test_without_tools_in_the_request_it_is_malformed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("c1", "functions.get_weather")
        openai_upstream.script(JSONAnswer("", tool_calls=(call,)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    @pytest.mark.parametrize(
        "choice", ["none", {"type": "function", "function": {"name": "get_time"}}]
    )
    async def test_a_tool_the_tool_choice_forbids_is_not_named_so(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, choice: Any
    ) -> None:
        # The client forbade calls of get_weather: the dotted name is not read as one.
        tools = [{"type": "function", "function": {"name": n}} for n in ("get_weather", "get_time")]
        call = FakeToolCall("c1", "functions.get_weather")
        openai_upstream.script(JSONAnswer("", tool_calls=(call,)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream, params={"tools": tools, "tool_choice": choice})

    async def test_the_tool_the_tool_choice_names_is_named_so(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        tools = [{"type": "function", "function": {"name": n}} for n in ("get_weather", "get_time")]
        choice = {"type": "function", "function": {"name": "get_time"}}
        call = FakeToolCall("c1", "functions.get_time")
        openai_upstream.script(Stream((), tool_calls=(call,)))
        events = await collect(
            provider, openai_upstream, params={"tools": tools, "tool_choice": choice}
        )
        assert events[0] == ToolCallDelta(0, "c1", "get_time", "")


class TestCallsPerReply:
    """A reply of more calls than any model makes at once (a broken or hostile upstream
    numbering a new call in every chunk) fails as malformed once past MAX_TOOL_CALLS,
    rather than hold an object per call, in the run and in every stream, until the stream's
    256 MiB."""

    @staticmethod
    def calls(count: int) -> bytes:
        fragments = (
            chunk({"tool_calls": [{"index": i, "id": f"c{i}", "function": {"name": "f"}}]})
            for i in range(count)
        )
        return sse(*fragments, chunk({}, "tool_calls"))

    async def test_the_limit_is_relayed(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Raw((self.calls(MAX_TOOL_CALLS),)))
        events = await collect(provider, openai_upstream)
        assert events[MAX_TOOL_CALLS - 1] == ToolCallDelta(
            MAX_TOOL_CALLS - 1, f"c{MAX_TOOL_CALLS - 1}", "f", ""
        )

    async def test_one_more_is_a_malformed_stream(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        openai_upstream.script(Raw((self.calls(MAX_TOOL_CALLS + 1),)))
        delivered: list[ProviderEvent] = []
        with pytest.raises(MalformedStream):
            await provider.stream(provider_request(openai_upstream.provider_config()),
                                  delivered.append)  # fmt: skip
        assert len(delivered) == MAX_TOOL_CALLS

    async def test_unnamed_calls_count_too(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        fragments = [chunk({"tool_calls": [{"index": i}]}) for i in range(MAX_TOOL_CALLS + 1)]
        openai_upstream.script(Raw((sse(*fragments, chunk({}, "stop")),)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_in_a_json_answer(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        calls = tuple(FakeToolCall(f"c{i}", "f") for i in range(MAX_TOOL_CALLS + 1))
        openai_upstream.script(JSONAnswer("", tool_calls=calls))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)


class TestResultImages:
    CALLS = (ToolCall("c1", "f", "{}"), ToolCall("c2", "g", "{}"))
    PNG_PART: ClassVar = {"type": "image_url", "image_url": {"url": PNG.data_uri}}
    HEADING: ClassVar = {"type": "text", "text": "Attached image(s) from tool result:"}

    @staticmethod
    def sent(*after: ChatMessage) -> list[dict[str, Any]]:
        """The messages sent after the question and the calls, for results then `after`."""
        config = ProviderConfig("p", API_OPENAI_COMPLETIONS, "http://127.0.0.1:9/v1")
        request = attrs.evolve(
            provider_request(config),
            messages=(
                ChatMessage("user", "q"),
                ChatMessage("assistant", "", tool_calls=TestResultImages.CALLS),
                ChatMessage("tool", "", images=(PNG,), tool_call_id="c1"),
                ChatMessage("tool", "text", images=(PNG, PNG), tool_call_id="c2"),
                *after,
            ),
        )
        messages: list[dict[str, Any]] = request_body(request)["messages"][2:]
        return messages

    def test_they_follow_the_results_of_the_calls_in_a_user_message(self) -> None:
        png = self.PNG_PART
        assert self.sent(ChatMessage("assistant", "seen")) == [
            {"role": "tool", "tool_call_id": "c1", "content": "(see attached image)"},
            {"role": "tool", "tool_call_id": "c2", "content": "text"},
            {"role": "user", "content": [self.HEADING, png, png, png]},
            {"role": "assistant", "content": "seen"},
        ]

    def test_a_user_message_after_them_is_one_message_with_them(self) -> None:
        # Strict chat templates (Mistral's, Gemma's) refuse two user messages in a row.
        png = self.PNG_PART
        assert self.sent(ChatMessage("user", "next"))[2:] == [
            {"role": "user", "content": [self.HEADING, png, png, png,
                                         {"type": "text", "text": "next"}]},
        ]  # fmt: skip

    def test_a_user_message_with_images_after_them_keeps_its_own_after_them(self) -> None:
        png = self.PNG_PART
        assert self.sent(ChatMessage("user", "", images=(PNG,)))[2:] == [
            {"role": "user", "content": [self.HEADING, png, png, png, png]},
        ]


class TestArgumentsGivenAsAnObject:
    """Arguments given as an object are sent on as its JSON: a number JSON cannot write back
    (1e400, beyond a double; NaN, which is no JSON) fails the reply as malformed, rather
    than reach clients as `Infinity` their parsers refuse, and go back to the upstream with
    every later turn of the session."""

    @pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN"])
    async def test_in_a_stream(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI, number: str
    ) -> None:
        call = ('{"index": 0, "id": "c1", "function": {"name": "f", "arguments": {"x": '
                + number + "}}}")  # fmt: skip
        body = f'data: {{"choices": [{{"index": 0, "delta": {{"tool_calls": [{call}]}}}}]}}\n\n'
        openai_upstream.script(Raw((body.encode() + sse(chunk({}, "tool_calls")),)))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)

    async def test_in_a_json_answer(
        self, provider: OpenAICompletionsProvider, openai_upstream: FakeOpenAI
    ) -> None:
        answer = (
            '{"choices": [{"message": {"tool_calls": [{"id": "c1", "function": {"name": "f",'
            ' "arguments": {"x": 1e400}}}]}, "finish_reason": "tool_calls"}]}'
        )
        openai_upstream.script(Raw((answer.encode(),), content_type="application/json"))
        with pytest.raises(MalformedStream):
            await collect(provider, openai_upstream)
