"""What every provider is given and what it yields (agents-sessions.md §6)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import attrs

from agents.config import ModelEntry, ModelRef, ProviderConfig


@attrs.frozen
class ImageInput:
    """One image of the current user turn, as a validated base64 payload."""

    mime_type: str
    data_b64: str  # the payload exactly as the client sent it (valid base64)
    size: int  # decoded bytes

    @property
    def data_uri(self) -> str:
        return f"data:{self.mime_type};base64,{self.data_b64}"


@attrs.frozen
class ChatMessage:
    role: str  # "user" or "assistant"
    text: str
    images: tuple[ImageInput, ...] = ()


@attrs.frozen
class ProviderRequest:
    """One provider attempt: the context of §6.1 and the merged params."""

    ref: ModelRef
    # The agent's systemPrompt and the request's extra system prompt, "\n\n"-joined; "" if none.
    system: str
    messages: tuple[ChatMessage, ...]  # stored history, then the current user message (last)
    # Agent `params` overlaid by the request's sampling fields: temperature, top_p,
    # max_tokens or max_completion_tokens, frequency_penalty, presence_penalty, seed, stop,
    # response_format, delayMs (echo), and any other agent param key.
    params: Mapping[str, Any] = attrs.field(factory=dict)
    provider: ProviderConfig | None = None  # None for the built-in echo provider
    model: ModelEntry | None = None  # the provider's entry for ref.model, when it lists models


@attrs.frozen
class TextDelta:
    text: str  # never empty


@attrs.frozen
class Finish:
    reason: str  # "stop", "length" or "content_filter"


@attrs.frozen
class Usage:
    input: int
    output: int

    @property
    def total(self) -> int:
        return self.input + self.output


ProviderEvent = TextDelta | Finish | Usage


class Provider(Protocol):
    """A backend that turns a ProviderRequest into a stream of events.

    `stream` yields TextDelta items in order, then at most one Usage and one Finish (in any
    order, both after the last delta). It raises agents.errors.UpstreamError subclasses for
    upstream failures. Cancelling the iteration (task cancellation or `aclose()`) must stop
    the upstream request at once and close its connection.
    """

    api: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]: ...
