"""The `anthropic-messages` provider (agents-sessions.md §6.4).

Speaks Anthropic's streamed Messages API. Request building is pure (`request_body`,
`request_headers`, `anthropic_messages`); `stream` does the I/O and relays the event stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from multidict import CIMultiDict

from agents.config import API_ANTHROPIC_MESSAGES, ProviderConfig
from agents.errors import MalformedStream
from agents.providers.base import (
    ChatMessage,
    Finish,
    ImageInput,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    Usage,
)
from agents.providers.echo import token_cap
from agents.providers.sse import SSEEvent
from agents.providers.upstream import client_timeout, log_body, relay

if TYPE_CHECKING:
    from agents.providers.pool import Timeouts

log = structlog.get_logger()

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens; used when neither the client nor the model config gives one.
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    # The context ran out: the reply was cut short, like max_tokens (spec addition).
    "model_context_window_exceeded": "length",
}
# Messages API params with no OpenAI counterpart that an agent may set; anything else not
# mapped explicitly (seed, penalties, response_format, delayMs, unknown keys) is dropped,
# because Anthropic answers 400 to unknown fields.
_PASSTHROUGH_KEYS = frozenset({"top_k", "metadata", "service_tier"})
_MAPPED_KEYS = frozenset(
    {"temperature", "top_p", "stop", "stop_sequences", "max_tokens", "max_completion_tokens"}
)


def _content(texts: Sequence[str], images: Sequence[ImageInput]) -> str | list[dict[str, Any]]:
    text = "\n\n".join(texts)
    if not images:
        return text
    # Images before the text: Anthropic documents that Claude does best in that order.
    blocks: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": image.mime_type, "data": image.data_b64},
        }
        for image in images
    ]
    if text:  # Anthropic rejects empty text blocks; an image-only turn has none
        blocks.append({"type": "text", "text": text})
    return blocks


def anthropic_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Alternating roles starting with `user`: consecutive same-role messages are joined
    with "\\n\\n" (empty texts skipped), leading assistant messages are dropped (the API
    rejects them and there is no user text they could answer)."""
    turns: list[tuple[str, list[str], list[ImageInput]]] = []
    for message in messages:
        if not turns and message.role != "user":
            continue
        if turns and turns[-1][0] == message.role:
            role, texts, images = turns[-1]
        else:
            role, texts, images = message.role, [], []
            turns.append((role, texts, images))
        if message.text:
            texts.append(message.text)
        images.extend(message.images)
    return [{"role": role, "content": _content(texts, images)} for role, texts, images in turns]


def request_body(request: ProviderRequest) -> dict[str, Any]:
    """The JSON body of §6.4."""
    params = request.params
    max_tokens = token_cap(params)
    if max_tokens is None:
        configured = request.model.max_tokens if request.model is not None else None
        max_tokens = configured or DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": request.ref.model, "max_tokens": max_tokens}
    if request.system:  # the API rejects an empty system prompt
        body["system"] = request.system
    body["messages"] = anthropic_messages(request.messages)
    body["stream"] = True

    temperature = params.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        # OpenAI's range is 0..2, Anthropic's 0..1.
        body["temperature"] = min(max(temperature, 0), 1)
    if params.get("top_p") is not None:
        body["top_p"] = params["top_p"]
    stop = params.get("stop")
    if stop is None:
        stop = params.get("stop_sequences")
    if stop is not None:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    dropped: list[str] = []
    for key, value in params.items():
        if key in _PASSTHROUGH_KEYS:
            if value is not None:
                body[key] = value
        elif key not in _MAPPED_KEYS and value is not None:
            dropped.append(key)
    if dropped:
        log.debug("provider_params_dropped", api=API_ANTHROPIC_MESSAGES, keys=dropped)
    return body


def messages_url(base_url: str) -> str:
    return (base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"


def request_headers(provider: ProviderConfig) -> CIMultiDict[str]:
    """content-type, x-api-key, anthropic-version, then the provider's headers, which win
    (compared case-insensitively)."""
    headers: CIMultiDict[str] = CIMultiDict({"content-type": "application/json"})
    if provider.api_key:
        headers["x-api-key"] = provider.api_key
    headers["anthropic-version"] = ANTHROPIC_VERSION
    for name, value in provider.headers.items():
        headers[name] = value
    return headers


def _count(usage: Any, *names: str) -> int | None:
    """Sum of the named token counts; None unless the first one is an int."""
    if not isinstance(usage, dict) or type(usage.get(names[0])) is not int:
        return None
    return sum(n for name in names if type(n := usage.get(name)) is int)


# Prompt caching bills the prompt in three parts; all of it was input to the model.
_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def json_answer(answer: Any) -> list[ProviderEvent]:
    """A whole Message object (a server that ignored `stream`): one delta, usage, finish."""
    if not isinstance(answer, dict) or answer.get("type") != "message":
        raise MalformedStream("upstream JSON answer is an error or not a message")
    content = answer.get("content")
    if not isinstance(content, list):
        raise MalformedStream("upstream JSON answer has no content")
    text = "".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    events: list[ProviderEvent] = []
    if text:
        events.append(TextDelta(text))
    usage = answer.get("usage")
    input_tokens = _count(usage, *_INPUT_FIELDS)
    output_tokens = _count(usage, "output_tokens")
    if input_tokens is not None and output_tokens is not None:
        events.append(Usage(input_tokens, output_tokens))
    events.append(Finish(STOP_REASONS.get(answer.get("stop_reason") or "end_turn", "stop")))
    return events


class AnthropicMessagesProvider:
    api = API_ANTHROPIC_MESSAGES

    def __init__(self, http: aiohttp.ClientSession, timeouts: Timeouts) -> None:
        self._http = http
        self._timeout = client_timeout(timeouts)

    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        provider = request.provider
        if provider is None:
            raise ValueError("anthropic-messages needs the provider's config")
        return relay(
            self._http,
            provider,
            messages_url(provider.base_url),
            request_headers(provider),
            request_body(request),
            self._timeout,
            MessageEventDecoder(provider),
            json_answer,
        )


class MessageEventDecoder:
    """Messages API stream events, up to `message_stop`."""

    def __init__(self, provider: ProviderConfig) -> None:
        self._provider = provider
        self.done = False
        self.data = ""
        self._reason: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None

    def feed(self, events: Sequence[SSEEvent]) -> Iterator[ProviderEvent]:
        loads = json.loads
        for sse in events:
            kind = sse.event
            if kind == "ping":
                continue
            data = self.data = sse.data
            obj = loads(data)
            if kind == "message":  # no `event:` line: the data names its type
                kind = obj["type"]
            if kind == "content_block_delta":
                delta = obj["delta"]
                # thinking_delta, input_json_delta, signature_delta: not reply text.
                if delta["type"] == "text_delta":
                    text = delta["text"]
                    if text:
                        if type(text) is not str:
                            raise TypeError("text_delta text is not text")
                        yield TextDelta(text)
            elif kind == "message_start":
                self._input_tokens = _count(obj["message"].get("usage"), *_INPUT_FIELDS)
            elif kind == "message_delta":
                self._reason = obj["delta"].get("stop_reason") or self._reason
                # Cumulative: the last message_delta with a count has the final one.
                count = _count(obj.get("usage"), "output_tokens")
                if count is not None:
                    self._output_tokens = count
            elif kind == "message_stop":
                self.done = True
                return
            elif kind == "content_block_start":
                block = obj["content_block"]
                if block.get("type") == "text" and block.get("text"):
                    yield TextDelta(str(block["text"]))
            elif kind == "error":
                log_body("upstream_stream_error", self._provider, data)
                raise MalformedStream("in-stream error from upstream")
            # content_block_stop and event types added later carry no reply text.

    def finish(self) -> list[ProviderEvent]:
        # EOF without message_stop: complete only if the model said why it stopped.
        if not self.done and self._reason is None:
            raise MalformedStream("upstream stream ended before message_stop")
        self.data = ""
        tail: list[ProviderEvent] = []
        if self._input_tokens is not None and self._output_tokens is not None:
            tail.append(Usage(self._input_tokens, self._output_tokens))
        tail.append(Finish(STOP_REASONS.get(self._reason or "end_turn", "stop")))
        return tail
