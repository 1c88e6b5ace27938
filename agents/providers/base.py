"""What every provider is given and what it delivers (agents-sessions.md §6)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol

import attrs

from agents.config import API_ANTHROPIC_MESSAGES, ModelEntry, ModelRef, ProviderConfig

# OpenClaw's words for a user turn that has images and no text.
IMAGE_ONLY_TEXT = "User sent image(s) with no text."
# A replayed tool result that had images and no text: its images are not stored, and an
# empty result would tell the model the tool returned nothing.
TOOL_IMAGE_ONLY_TEXT = "Tool returned image(s) with no text."


def format_refusal(provider: ProviderConfig | None, response_format: Any) -> str | None:
    """Why `provider`'s models cannot be given a request's `response_format`, else None.
    The Messages API has no such field, and its structured outputs (`output_config`) only
    some models take: a json_schema format is refused rather than answered without its
    schema (OpenClaw drops it). A json_object format goes ahead, as on OpenClaw: the
    prompt asks for JSON (OpenAI requires it to), the model is not held to it."""
    if provider is None or provider.api != API_ANTHROPIC_MESSAGES:
        return None
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    return "Anthropic models take no json_schema response_format"


@attrs.frozen
class ImageInput:
    """One image of the current user turn, as a validated base64 payload."""

    mime_type: str
    data_b64: str  # the payload exactly as the client sent it (valid base64)
    size: int  # decoded bytes

    @property
    def data_uri(self) -> str:
        return f"data:{self.mime_type};base64,{self.data_b64}"


# The tool names a client may give (its `tools`, the calls it sends back: the HTTP wire checks
# them so) and OpenAI's and Anthropic's APIs take; a call an upstream names otherwise is not
# relayed (agents.providers.upstream.check_call): the client could not send it back, and the
# session would replay it to an upstream that refuses it on every later turn.
TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# The longest call id a client may send back (OpenAI's are 40 characters).
MAX_TOOL_CALL_ID = 256
# The most tool calls, and Anthropic thinking blocks, one reply may have: far above any
# model's parallel calls (a few dozen), a bound on an upstream that numbers a new one in every
# chunk, each of which the run would hold, and stream to every client, until the stream's own
# bound (upstream.MAX_STREAM_BYTES: millions of them).
MAX_TOOL_CALLS = 1024
MAX_THINKING_BLOCKS = 1024


# OpenAI's `reasoning_effort` levels (`none` for its models that can skip reasoning, `xhigh`
# for its newest): forwarded to an OpenAI-compatible upstream, Anthropic's thinking budgets
# for the others (agents.providers.anthropic_messages.EFFORT_BUDGETS).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


@attrs.frozen
class ToolCall:
    """A call of a client tool, as OpenAI's `tool_calls[]` carries it."""

    id: str
    name: str
    arguments: str  # JSON text exactly as the model produced it (possibly not valid JSON)


@attrs.frozen
class ThinkingBlock:
    """One block of a reply's signed thinking (Anthropic's), as the API takes it back in a
    tool loop: its text and signature, or for a redacted block its opaque data (in
    `signature`) and no text."""

    text: str
    signature: str
    redacted: bool = False


@attrs.frozen
class ChatMessage:
    """One message of the context. Tool calls and results are structured, OpenAI-style:
    an assistant message carries `tool_calls`, and each result is a `tool` message naming
    the call it answers."""

    role: str  # "user", "assistant" or "tool"
    text: str
    images: tuple[ImageInput, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # assistant
    tool_call_id: str | None = None  # tool
    tool_name: str | None = None  # tool: the called function's name, when known
    # Assistant: the model's reasoning. Providers do not send it back, except Anthropic's
    # signed thinking blocks in a tool loop, which the API requires.
    reasoning: str = ""
    thinking: tuple[ThinkingBlock, ...] = ()


@attrs.frozen
class ProviderRequest:
    """One provider attempt: the context of §6.1 and the merged params."""

    ref: ModelRef
    # The agent's systemPrompt and the request's extra system prompt, "\n\n"-joined; "" if none.
    system: str
    messages: tuple[ChatMessage, ...]  # stored history, then the current user message (last)
    # Agent `params` overlaid by the request's sampling fields: temperature, top_p,
    # max_tokens or max_completion_tokens, frequency_penalty, presence_penalty, seed, stop,
    # response_format, delayMs (echo), and any other agent param key. The client's tools
    # travel here too, under OpenAI's names (`tools`, `tool_choice`, `parallel_tool_calls`):
    # an OpenAI-compatible provider sends them as they are, the others map them.
    params: Mapping[str, Any] = attrs.field(factory=dict)
    provider: ProviderConfig | None = None  # None for the built-in echo provider
    model: ModelEntry | None = None  # the provider's entry for ref.model, when it lists models


@attrs.frozen
class TextDelta:
    text: str  # never empty


@attrs.frozen
class ReasoningDelta:
    """A piece of the model's reasoning (OpenAI-compatible `reasoning_content`/`reasoning`,
    Anthropic `thinking`)."""

    text: str


@attrs.frozen
class SignedThinking:
    """All of a reply's thinking blocks with their signatures (Anthropic's), given after
    the reply's last delta; a reply with a block that has none gives no SignedThinking."""

    blocks: tuple[ThinkingBlock, ...]


@attrs.frozen
class ToolCallDelta:
    """A fragment of the `index`-th tool call: the first carries `id` and `name`, the
    following ones pieces of the arguments (OpenAI's streaming shape)."""

    index: int
    id: str | None
    name: str | None
    arguments: str


class StopReason(StrEnum):
    """Why a turn's text ended (`RunOutcome.stop_reason`, the stored `stopReason`). A provider's
    `Finish` gives one of the first four; the run itself the last three."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    ERROR = "error"


@attrs.frozen
class Finish:
    reason: StopReason  # STOP, LENGTH, CONTENT_FILTER or TOOL_CALLS


@attrs.frozen
class Usage:
    input: int
    output: int
    # Of `output`, the tokens the model spent reasoning, when the provider says (OpenAI's
    # `completion_tokens_details.reasoning_tokens`); 0 otherwise.
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output


@attrs.frozen
class PartialUsage:
    """The one count an upstream reported of the two (a server that counts the output in
    no event, or the prompt nowhere): the turn's, the other being estimated (§7)."""

    input: int | None
    output: int | None


# Characters split at a time by `word_count`: the list of one slice's words, not of the whole
# text's (some 20 bytes a character for one-letter words: 420 MB for a 20 MiB context).
WORD_COUNT_SLICE = 64 * 1024


def word_count(text: str) -> int:
    """`len(text.split())`, in memory bounded by `WORD_COUNT_SLICE`: the usage estimate of
    a turn whose provider reported none (and the echo provider's), over its whole context."""
    if len(text) <= WORD_COUNT_SLICE:
        return len(text.split())
    count = 0
    inside = False  # the slice before ended inside a word
    for start in range(0, len(text), WORD_COUNT_SLICE):
        piece = text[start : start + WORD_COUNT_SLICE]
        count += len(piece.split())
        if inside and not piece[0].isspace():
            count -= 1  # a word across the cut, counted in both slices
        inside = not piece[-1].isspace()
    return count


# The largest token count an upstream may report: JavaScript's Number.MAX_SAFE_INTEGER, so that
# a browser reads the stored counts exactly, and SQLite's 64-bit integers hold their sums. A
# count beyond it (JSON allows any integer) is no model's, and is taken as not reported.
MAX_TOKEN_COUNT = 2**53 - 1


def token_count(value: object) -> int | None:
    """An upstream's token count: an int from 0 to MAX_TOKEN_COUNT, else None (not reported)."""
    if type(value) is not int or not 0 <= value <= MAX_TOKEN_COUNT:
        return None
    return value


ProviderEvent = (
    TextDelta | ReasoningDelta | SignedThinking | ToolCallDelta | Finish | Usage | PartialUsage
)


# Takes one event of a reply; called synchronously, in order, as the events are decoded.
Deliver = Callable[[ProviderEvent], None]


class Provider(Protocol):
    """A backend that turns a ProviderRequest into events, handed to `deliver` one by one.

    `stream` delivers TextDelta, ReasoningDelta and ToolCallDelta items in order, then at
    most one SignedThinking, one Usage (or PartialUsage) and one Finish (in any order, all
    after the last delta), and returns when the reply is complete. A network provider
    delivers from the event loop's call that received the bytes (no task woken per read), so
    `deliver` must not block; what it raises ends the stream and is raised by `stream` as it
    is. Upstream failures raise agents.errors.UpstreamError subclasses. Cancelling the task
    awaiting `stream` stops the upstream request at once and closes its connection; nothing
    is delivered after the cancellation was requested.
    """

    api: str

    async def stream(self, request: ProviderRequest, deliver: Deliver) -> None: ...
