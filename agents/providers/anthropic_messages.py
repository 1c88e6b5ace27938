"""The `anthropic-messages` provider (agents-sessions.md §6.4).

Speaks Anthropic's streamed Messages API. Request building is pure (`request_body`,
`request_headers`, `anthropic_messages`); `stream` does the I/O and relays the event stream.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import structlog
from multidict import CIMultiDict

from agents.config import API_ANTHROPIC_MESSAGES, ProviderConfig
from agents.errors import MalformedStream, UpstreamError
from agents.pieces import TextPieces
from agents.providers.base import (
    MAX_THINKING_BLOCKS,
    MAX_TOOL_CALLS,
    ChatMessage,
    Deliver,
    Finish,
    ImageInput,
    PartialUsage,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    SignedThinking,
    StopReason,
    TextDelta,
    ThinkingBlock,
    ToolCallDelta,
    Usage,
    token_count,
)
from agents.providers.echo import token_cap
from agents.providers.images import image_type
from agents.providers.sse import SSEEvent, data_json
from agents.providers.timeouts import Timeouts
from agents.providers.upstream import (
    SentCallIds,
    UnrelayedReply,
    check_call,
    declared_tools,
    endpoint_url,
    explained,
    log_body,
    relay,
    stream_error,
)
from agents.providers.upstream_client import UpstreamClient

log = structlog.get_logger()

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens; used when neither the client nor the model config gives one.
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS: Mapping[str, StopReason] = {
    "end_turn": StopReason.STOP,
    "stop_sequence": StopReason.STOP,
    "max_tokens": StopReason.LENGTH,
    "refusal": StopReason.CONTENT_FILTER,
    # The context ran out: the reply was cut short, like max_tokens (spec addition).
    "model_context_window_exceeded": StopReason.LENGTH,
    "tool_use": StopReason.TOOL_CALLS,
}
# Messages API params with no OpenAI counterpart that an agent may set (`thinking` turns on
# extended thinking, streamed back as reasoning); anything else not
# mapped explicitly (seed, penalties, response_format, delayMs, unknown keys) is dropped,
# because Anthropic answers 400 to unknown fields (a request's json_schema response_format
# never gets here: `base.format_refusal`).
_PASSTHROUGH_KEYS = frozenset({"top_k", "metadata", "service_tier", "thinking"})
# The lowest top_p the API takes with extended thinking on.
_THINKING_MIN_TOP_P = 0.95
_MAPPED_KEYS = frozenset(
    {
        "temperature", "top_p", "stop", "stop_sequences", "max_tokens", "max_completion_tokens",
        "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort",
    }
)  # fmt: skip
# OpenAI's `reasoning_effort` as extended thinking: the budgets OpenClaw gives its thinking
# levels (pi-ai's defaults), xhigh as high as OpenClaw does for a budget. `none` is thinking
# off, an agent's own `thinking` too: the client's field wins for the turn, as its others do.
EFFORT_BUDGETS: Mapping[str, int] = {
    "minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 16384,
}  # fmt: skip
# The smallest budget the API takes.
MIN_THINKING_BUDGET = 1024


@attrs.define
class _Turn:
    """One Messages API turn in the making: what consecutive same-role messages add up to."""

    role: str
    texts: list[str] = attrs.field(factory=list)
    images: list[ImageInput] = attrs.field(factory=list)
    tool_results: list[dict[str, Any]] = attrs.field(factory=list)  # user side
    thinking: list[dict[str, Any]] = attrs.field(factory=list)  # assistant side
    tool_uses: list[dict[str, Any]] = attrs.field(factory=list)  # assistant side

    def content(self) -> str | list[dict[str, Any]]:
        text = "\n\n".join(self.texts)
        if not (self.images or self.tool_results or self.thinking or self.tool_uses):
            return text
        # Tool results first (the API requires them at the start of the user turn), then
        # images before the text: Anthropic documents that Claude does best in that order.
        blocks: list[dict[str, Any]] = [*self.tool_results, *self.thinking]
        blocks.extend(_image_block(image) for image in self.images)
        if text:  # Anthropic rejects empty text blocks; an image-only turn has none
            blocks.append({"type": "text", "text": text})
        blocks.extend(self.tool_uses)
        return blocks


def _image_block(image: ImageInput) -> dict[str, Any]:
    return {
        "type": "image",
        # The type the bytes are, when known: the API refuses an image declared as another
        # (a PNG sent as image/jpeg), which the client may not know it sent.
        "source": {
            "type": "base64",
            "media_type": image_type(image.data_b64) or image.mime_type,
            "data": image.data_b64,
        },
    }


def _tool_result_content(message: ChatMessage) -> str | list[dict[str, Any]]:
    """A tool result's text, or with images, its text and image blocks (the API takes
    both in a `tool_result`; it refuses an empty text block, which an image-only result
    would have)."""
    if not message.images:
        return message.text
    text = [] if not message.text or message.text.isspace() else [message.text]
    return [
        *({"type": "text", "text": t} for t in text),
        *(_image_block(image) for image in message.images),
    ]


# The ids the Messages API takes for `tool_use` blocks (and their `tool_result`s).
_TOOL_ID_RE = re.compile(r"[a-zA-Z0-9_-]+")
_NOT_TOOL_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(call_id: str | None) -> str | None:
    """A call id as Anthropic takes it. Ids of other models and clients (Kimi's
    `functions.get_weather:0`) are rewritten, the same way in the call and its result; the
    digest of the original keeps two ids that differ only in refused characters apart."""
    if call_id is None or _TOOL_ID_RE.fullmatch(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{_NOT_TOOL_ID_CHARS.sub('_', call_id)}_{digest}"


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is no JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: JSON, but no double, and sent on as `Infinity`
        raise ValueError(f"{text} is beyond a double")
    return value


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = (
            json.loads(arguments, parse_constant=_not_json, parse_float=_finite)
            if arguments.strip()
            else {}
        )
    except (ValueError, RecursionError):  # no JSON, or nested deeper than the parser goes
        value = None
    # The API takes an object only; a model's broken JSON is kept where it can be read.
    return value if isinstance(value, dict) else {"arguments": arguments}


def anthropic_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Alternating roles starting with `user`: consecutive same-role messages are joined
    with "\\n\\n" (blank texts skipped), leading assistant messages are dropped (the API
    rejects them and there is no user text they could answer). Tool calls become `tool_use`
    blocks, tool results `tool_result` blocks of the next user turn; signed thinking goes
    back only with the tool calls it led to, as the API requires in a tool loop."""
    turns: list[_Turn] = []
    # The last assistant turn's call ids, each with the ids its calls went under, in order:
    # the API refuses a turn whose tool_use blocks share an id (some servers give parallel
    # calls one), so a repeated one goes as `<id>_2`, and its result with it.
    sent_ids = SentCallIds()
    for message in messages:
        blank = not message.text or message.text.isspace()
        if blank and message.role != "tool" and not (message.images or message.tool_calls):
            # The API refuses a text of whitespace alone ("text content blocks must contain
            # non-whitespace text"); a stored reply of "\n" would fail every later turn.
            continue
        role = "user" if message.role == "tool" else message.role
        if not turns and role != "user":
            continue
        if not turns or turns[-1].role != role:
            turns.append(_Turn(role))
            if role == "assistant":
                sent_ids = SentCallIds()
        turn = turns[-1]
        if message.role == "tool":
            sent = sent_ids.result(message.tool_call_id)
            turn.tool_results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": sent or _tool_id(message.tool_call_id),
                    "content": _tool_result_content(message),
                }
            )
            continue
        if message.tool_calls:
            turn.thinking.extend(_thinking_block(block) for block in message.thinking)
        if not blank:
            turn.texts.append(message.text)
        turn.images.extend(message.images)
        for call in message.tool_calls:
            turn.tool_uses.append(
                {
                    "type": "tool_use",
                    "id": sent_ids.add(call.id, _tool_id(call.id) or call.id),
                    "name": call.name,
                    "input": _tool_input(call.arguments),
                }
            )
    return [{"role": turn.role, "content": turn.content()} for turn in turns]


def _thinking_block(block: ThinkingBlock) -> dict[str, Any]:
    if block.redacted:
        return {"type": "redacted_thinking", "data": block.signature}
    return {"type": "thinking", "thinking": block.text, "signature": block.signature}


def _input_schema(parameters: Any) -> Any:
    """A function's `parameters` as the API takes them: it refuses a schema without its
    type, which OpenAI takes as an object's."""
    if not parameters:
        return {"type": "object", "properties": {}}
    if isinstance(parameters, Mapping) and "type" not in parameters:
        return {"type": "object", **parameters}
    return parameters


def tool_fields(params: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's `tools`, `tool_choice`, `parallel_tool_calls` as the Messages API's."""
    out: dict[str, Any] = {}
    tools = params.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": tool["function"]["name"],
                **(
                    {"description": tool["function"]["description"]}
                    if tool["function"].get("description")
                    else {}
                ),
                "input_schema": _input_schema(tool["function"].get("parameters")),
            }
            for tool in tools
        ]
    choice = params.get("tool_choice")
    mapped: dict[str, Any] | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif isinstance(choice, Mapping):
        mapped = {"type": "tool", "name": choice["function"]["name"]}
    if params.get("parallel_tool_calls") is False and tools and choice != "none":
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    if mapped is not None and tools:
        out["tool_choice"] = mapped
    return out


def _thinking_budget(thinking: Any) -> int | None:
    """An agent's extended thinking, when it is on: its budget (0 for adaptive thinking)."""
    if not isinstance(thinking, Mapping) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    budget = thinking.get("budget_tokens")
    return budget if type(budget) is int and budget > 0 else 0


def _effort_thinking(effort: str, cap: int | None) -> dict[str, Any] | None:
    """Extended thinking for a `reasoning_effort`; None for `none`, or when the cap leaves
    no room for the smallest budget. As OpenAI's, a cap counts the reasoning: the budget is
    at most what it leaves for one token of the answer."""
    budget = EFFORT_BUDGETS.get(effort)
    if budget is None:
        return None
    if cap is not None:
        budget = min(budget, cap - 1)
    if budget < MIN_THINKING_BUDGET:
        return None
    return {"type": "enabled", "budget_tokens": budget}


def _unsigned_tool_loop(messages: list[dict[str, Any]]) -> bool:
    """The context ends in tool results whose calls' turn does not start with thinking."""
    if len(messages) < 2:
        return False
    results, calls = messages[-1]["content"], messages[-2]["content"]
    if not (isinstance(results, list) and results and results[0]["type"] == "tool_result"):
        return False
    return not (isinstance(calls, list) and calls and calls[0]["type"] in _THINKING_BLOCKS)


def request_body(request: ProviderRequest) -> dict[str, Any]:
    """The JSON body of §6.4."""
    params = request.params
    tools = tool_fields(params)
    cap = token_cap(params)
    if cap is None and request.model is not None:
        cap = request.model.max_tokens
    messages = anthropic_messages(request.messages)
    # With extended thinking on, the API refuses a tool_choice that forces tool use, a
    # max_tokens not above the budget, and a tool loop whose call came without its signed
    # thinking (a stateless client's resent call, another model's): those turn it off for the
    # turn. A changed temperature or top_k, and a top_p below 0.95, it refuses too: those
    # are dropped while it is on.
    thinking = params.get("thinking")
    effort = params.get("reasoning_effort")
    mapped_effort = isinstance(effort, str) and (effort in EFFORT_BUDGETS or effort == "none")
    if isinstance(effort, str) and mapped_effort:
        thinking = _effort_thinking(effort, cap)
    budget = _thinking_budget(thinking)
    thinking_off = budget is not None and (
        tools.get("tool_choice", {}).get("type") in ("any", "tool")
        or (cap is not None and cap <= budget)
        or _unsigned_tool_loop(messages)
    )
    if thinking_off:
        budget = None
    # No cap given: thinking's budget comes on top of the default, which it would eat.
    max_tokens = cap or DEFAULT_MAX_TOKENS + (budget or 0)
    body: dict[str, Any] = {"model": request.ref.model, "max_tokens": max_tokens}
    if request.system:  # the API rejects an empty system prompt
        body["system"] = request.system
    body["messages"] = messages
    body["stream"] = True
    body.update(tools)

    temperature = params.get("temperature")
    if (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and budget is None
    ):
        # OpenAI's range is 0..2, Anthropic's 0..1.
        body["temperature"] = min(max(temperature, 0), 1)
    top_p = params.get("top_p")
    if (
        top_p is not None
        and "temperature" not in body
        and (budget is None or (isinstance(top_p, int | float) and top_p >= _THINKING_MIN_TOP_P))
    ):
        # Not with a temperature: Claude's models since Opus 4.1 refuse both ("`temperature`
        # and `top_p` cannot both be specified for this model"), OpenAI clients often send
        # both (a top_p of 1 as their default), and Anthropic's advice is to change only the
        # temperature.
        body["top_p"] = top_p
    stop = params.get("stop")
    if stop is None:
        stop = params.get("stop_sequences")
    if stop is not None:
        sequences = [stop] if isinstance(stop, str) else stop
        if isinstance(sequences, list):
            # Anthropic refuses a sequence of whitespace alone (400 "each stop sequence must
            # contain non-whitespace"), such as the `"\n"` completion-style clients send.
            sequences = [s for s in sequences if not (isinstance(s, str) and s.isspace())]
        if sequences:
            body["stop_sequences"] = sequences
    dropped: list[str] = []
    for key, value in params.items():
        if key == "thinking":
            continue  # `thinking` below: the agent's, or the effort's
        if key in _PASSTHROUGH_KEYS:
            if key == "top_k" and budget is not None:
                dropped.append(key)
            elif value is not None:
                body[key] = value
        elif value is not None and (
            key not in _MAPPED_KEYS or (key == "reasoning_effort" and not mapped_effort)
        ):
            dropped.append(key)
    if thinking_off or (thinking is None and params.get("thinking") is not None):
        dropped.append("thinking")
    elif thinking is not None:
        body["thinking"] = thinking
    if dropped:
        log.debug("provider_params_dropped", api=API_ANTHROPIC_MESSAGES, keys=dropped)
    return body


@functools.lru_cache(maxsize=64)
def messages_url(base_url: str) -> str:
    """`<baseUrl>/v1/messages` (a handful per config: cached). A base URL that ends in the
    API's version already (`https://api.anthropic.com/v1`, as OpenAI-compatible base URLs are
    given) gets `/messages`: no server answers at `/v1/v1/messages`, and every turn would
    fail with 404."""
    base_url = base_url or DEFAULT_BASE_URL
    path = urlsplit(base_url).path.rstrip("/")
    versioned = path[-3:].lower() == "/v1"
    return endpoint_url(base_url, "/messages" if versioned else "/v1/messages")


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


def _usage(input_tokens: int | None, output_tokens: int | None) -> list[ProviderEvent]:
    """The reply's usage; the one count of the two that was given; none."""
    if input_tokens is not None and output_tokens is not None:
        return [Usage(input_tokens, output_tokens)]
    if input_tokens is not None or output_tokens is not None:
        return [PartialUsage(input_tokens, output_tokens)]
    return []


def _count(usage: Any, *names: str) -> int | None:
    """Sum of the named token counts; None unless the first one is a count (and the sum too)."""
    if not isinstance(usage, dict) or token_count(usage.get(names[0])) is None:
        return None
    return token_count(sum(n for name in names if (n := token_count(usage.get(name))) is not None))


# The content blocks of a model's thinking, each signed on its own: the API takes them back
# only as they came, block by block. A tuple, not a set: a block's `type` may be any JSON
# value, a list too, which a set cannot look up.
_THINKING_BLOCKS = ("thinking", "redacted_thinking")
# Between the texts of a reply's thinking blocks, in its one reasoning text.
_BLOCK_SEPARATOR = "\n\n"


@attrs.define
class _ThinkingSoFar:
    """One thinking block of a reply being read. Its text in pieces, joined once
    (`TextPieces`): one by one, a thinking text in 2-character pieces took 30 times its size."""

    pieces: TextPieces = attrs.Factory(TextPieces)
    signature: str | None = None  # a redacted block's data
    redacted: bool = False

    def block(self) -> ThinkingBlock | None:
        """The block as the API takes it back; None without its signature."""
        if not self.signature:
            return None
        return ThinkingBlock(self.pieces.joined(), self.signature, self.redacted)


def _signed(blocks: Sequence[_ThinkingSoFar]) -> list[ProviderEvent]:
    """SignedThinking when every block has its signature: the API refuses a reply's blocks
    sent back with one left out."""
    signed = [block.block() for block in blocks]
    if not signed or None in signed:
        return []
    return [SignedThinking(tuple(b for b in signed if b is not None))]


# Anthropic's error types, as the HTTP statuses it answers them with before a stream
# (docs.anthropic.com, "Errors"): an `error` event of the stream fails the turn as that status
# would (529, overloaded, is a 5xx like any other: 502 to our client).
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _error_event(obj: dict[str, Any]) -> UpstreamError:
    """An `error` event, or a 200 answer that is one: classified by its type."""
    error = obj.get("error")
    named = error.get("type") if isinstance(error, dict) else None
    return stream_error(ERROR_STATUSES.get(named) if type(named) is str else None)


def _input_json(given: Any) -> str | None:
    """A tool_use block's input given whole, as arguments; None when none is given (null
    too). ValueError (malformed) for an input that is no object (the API's always is: a
    client could not read anything else as a call's arguments, and the API refuses it back)
    and for a number JSON cannot write back (1e400, NaN): as `Infinity` it would reach
    clients whose parsers refuse it, and go back to the API, which refuses it too, with every
    later turn."""
    if given is None:
        return None
    if type(given) is not dict:
        raise ValueError("tool_use input is not an object")
    return json.dumps(given, separators=(",", ":"), allow_nan=False)


# Prompt caching bills the prompt in three parts; all of it was input to the model.
_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def json_answer(answer: Any, tools: frozenset[str] = frozenset()) -> list[ProviderEvent]:
    """A whole Message object (a server that ignored `stream`): one delta, usage, finish.
    `tools`: the request's tool names (`check_call`)."""
    if isinstance(answer, dict) and answer.get("type") == "error":  # as in a stream (`feed`)
        raise _error_event(answer)
    if not isinstance(answer, dict) or answer.get("type") != "message":
        raise MalformedStream("upstream JSON answer is not a message")
    content = answer.get("content")
    if not isinstance(content, list):
        raise MalformedStream("upstream JSON answer has no content")
    # As in a stream (`MessageEventDecoder.feed`): a block that is no object, or a text of
    # its that is no text, makes the reply malformed rather than be left out of it.
    if not all(type(block) is dict for block in content):
        raise MalformedStream("upstream JSON answer has a content block that is no object")
    blocks: list[dict[str, Any]] = content
    for block in blocks:
        kind = block.get("type")  # any JSON value: a list too, which no dict can look up
        field = kind if kind == "text" or kind == "thinking" else None
        if field is not None and block.get(field) and type(block[field]) is not str:
            raise MalformedStream(f"upstream JSON answer has a {field} block of no text")
    text = "".join(
        block["text"] for block in blocks if block.get("type") == "text" and block.get("text")
    )
    events: list[ProviderEvent] = []
    thinking: list[_ThinkingSoFar] = []
    for block in blocks:
        block_type = block.get("type")
        if block_type not in _THINKING_BLOCKS:
            continue
        redacted = block_type == "redacted_thinking"
        signature = block.get("data" if redacted else "signature")
        so_far = _ThinkingSoFar(signature=signature if isinstance(signature, str) else None,
                                redacted=redacted)  # fmt: skip
        thinking.append(so_far)
        piece = block.get("thinking")
        if not redacted and isinstance(piece, str) and piece:
            reasoned = any(t.pieces for t in thinking)
            so_far.pieces.append(piece)
            events.append(ReasoningDelta(_BLOCK_SEPARATOR + piece if reasoned else piece))
    if text:
        events.append(TextDelta(text))
    uses = [block for block in blocks if block.get("type") == "tool_use"]
    if len(uses) > MAX_TOOL_CALLS or len(thinking) > MAX_THINKING_BLOCKS:
        raise MalformedStream("upstream JSON answer has too many tool_use or thinking blocks")
    for index, block in enumerate(uses):
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise MalformedStream("upstream JSON answer has a malformed tool_use block")
        name = check_call(block["id"], block["name"], tools)
        arguments = _input_json(block.get("input")) or "{}"
        events.append(ToolCallDelta(index, block["id"], name, arguments))
    usage = answer.get("usage")
    input_tokens = _count(usage, *_INPUT_FIELDS)
    output_tokens = _count(usage, "output_tokens")
    events.extend(_usage(input_tokens, output_tokens))
    events.extend(_signed(thinking))
    reason = STOP_REASONS.get(answer.get("stop_reason") or "end_turn", StopReason.STOP)
    events.append(Finish(reason))
    return events


class AnthropicMessagesProvider:
    api = API_ANTHROPIC_MESSAGES

    def __init__(self, client: UpstreamClient, timeouts: Timeouts) -> None:
        self._client = client
        self._timeouts = timeouts

    async def stream(self, request: ProviderRequest, deliver: Deliver) -> None:
        provider = request.provider
        if provider is None:
            raise ValueError("anthropic-messages needs the provider's config")
        tools = declared_tools(request.params)
        await relay(
            self._client,
            provider,
            messages_url(provider.base_url),
            request_headers(provider),
            request_body(request),
            self._timeouts,
            MessageEventDecoder(provider, tools),
            functools.partial(json_answer, tools=tools),
            deliver,
        )


class MessageEventDecoder:
    """Messages API stream events, up to `message_stop`."""

    def __init__(self, provider: ProviderConfig, tools: frozenset[str] = frozenset()) -> None:
        self._provider = provider
        self._tool_names = tools  # the request's tool names (`check_call`)
        self.done = False
        self.data = ""
        self._reason: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        # Content block index → our tool call index, for tool_use blocks.
        self._tools: dict[int, int] = {}
        # Our tool call index → the input a tool_use block's start gave whole, as JSON.
        self._given_inputs: dict[int, str] = {}
        # Our tool call index → the input its input_json_delta pieces gave so far, until the
        # block's end checks it (`_streamed_input`).
        self._streamed: dict[int, TextPieces] = {}
        self._ended: set[int] = set()  # our tool call indexes whose block ended
        # Content block index → the thinking blocks so far: given with the reply's end,
        # signed (see _THINKING_BLOCKS); and whether any reasoning text was given.
        self._thinking: dict[int, _ThinkingSoFar] = {}
        self._reasoned = False

    def feed(self, events: Sequence[SSEEvent]) -> Iterator[ProviderEvent]:
        loads = data_json
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
                kind = delta["type"]
                if kind == "text_delta":
                    text = delta["text"]
                    if text:
                        if type(text) is not str:
                            raise TypeError("text_delta text is not text")
                        yield TextDelta(text)
                elif kind == "input_json_delta":
                    piece = delta["partial_json"]
                    if type(piece) is not str:
                        raise TypeError("partial_json is not text")
                    tool = self._tools.get(obj["index"])
                    if tool is None:
                        continue  # a server tool's input (web search): no call of the client's
                    if tool in self._ended:
                        raise ValueError("input_json_delta after its block's end")
                    if piece:
                        pieces = self._streamed.get(tool)
                        if pieces is None:
                            pieces = self._streamed[tool] = TextPieces()
                        pieces.append(piece)
                        yield ToolCallDelta(tool, None, None, piece)
                elif kind == "thinking_delta":
                    thinking = delta["thinking"]
                    if type(thinking) is not str:
                        raise TypeError("thinking_delta thinking is not text")
                    if thinking:
                        yield self._thought(self._block(obj["index"]), thinking)
                elif kind == "signature_delta":
                    signature = delta["signature"]
                    if type(signature) is not str:
                        raise TypeError("signature_delta signature is not text")
                    self._block(obj["index"]).signature = signature
            elif kind == "message_start":
                self._input_tokens = _count(obj["message"].get("usage"), *_INPUT_FIELDS)
            elif kind == "message_delta":
                self._reason = obj["delta"].get("stop_reason") or self._reason
                # Cumulative: the last message_delta with a count has the final one.
                usage = obj.get("usage")
                count = _count(usage, "output_tokens")
                if count is not None:
                    self._output_tokens = count
                # The prompt too, when given (server tools add to it; some servers count it
                # only here, message_start saying 0); a smaller one (0, no cache fields) is
                # not the whole prompt.
                count = _count(usage, *_INPUT_FIELDS)
                if count is not None and (self._input_tokens or 0) < count:
                    self._input_tokens = count
            elif kind == "message_stop":
                self.done = True
                return
            elif kind == "content_block_start":
                block = obj["content_block"]
                block_type = block.get("type")
                if block_type == "text" and block.get("text"):
                    if type(block["text"]) is not str:
                        raise TypeError("text block text is not text")
                    yield TextDelta(block["text"])
                elif block_type == "tool_use":
                    call_id, name = block["id"], block["name"]
                    if type(call_id) is not str or type(name) is not str:
                        raise TypeError("tool_use id or name is not text")
                    name = check_call(call_id, name, self._tool_names)
                    index = len(self._tools)
                    if index >= MAX_TOOL_CALLS:
                        raise UnrelayedReply(f"more than {MAX_TOOL_CALLS} tool calls in one reply")
                    self._tools[obj["index"]] = index
                    given = _input_json(block.get("input"))
                    if given is not None and given != "{}":
                        # Some servers put the whole input here and stream no deltas of it.
                        self._given_inputs[index] = given
                    yield ToolCallDelta(index, call_id, name, "")
                elif block_type in _THINKING_BLOCKS:
                    redacted = block_type == "redacted_thinking"
                    signature = block.get("data" if redacted else "signature")
                    so_far = self._new_block(obj["index"])
                    so_far.signature = signature if type(signature) is str else None
                    so_far.redacted = redacted
                    if not redacted and block.get("thinking"):
                        if type(block["thinking"]) is not str:
                            raise TypeError("thinking block thinking is not text")
                        yield self._thought(so_far, block["thinking"])
            elif kind == "content_block_stop":
                stopped = self._tools.get(obj.get("index"))
                if stopped is not None:
                    yield from self._input_end(stopped)
            elif kind == "error":
                log_body("upstream_stream_error", self._provider, data)
                raise explained(_error_event(obj), self._provider, data)
            # Event types added later carry no reply text.

    def _input_end(self, index: int) -> Iterator[ProviderEvent]:
        """At the end of call `index`'s block. A call without argument deltas (or blank ones
        only): the input its start gave, else `{}`, so that every client can parse it. Each
        call's once: a delta after it is malformed (`feed`)."""
        if not self._streamed_input(index) and index not in self._ended:
            yield ToolCallDelta(index, None, None, self._given_inputs.get(index, "{}"))
        self._ended.add(index)

    def _streamed_input(self, index: int) -> bool:
        """Whether call `index` had argument deltas that were not blank; they must make one
        object, as an input given whole must (`_input_json`), else the reply is malformed
        (ValueError). They were relayed as they came: a client sees the reply fail, in its
        stream, instead of a call whose arguments it cannot read as a call's, which would go
        back to the API with every later turn."""
        streamed = self._streamed.pop(index, None)
        text = streamed.joined() if streamed is not None else ""
        if not text.strip():
            return False
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
        if type(value) is not dict:
            raise ValueError("streamed tool_use input is not an object")
        return True

    def _block(self, index: int) -> _ThinkingSoFar:
        """The thinking block at `index`; one never started is started here (unsigned
        unless a signature_delta comes for it)."""
        so_far = self._thinking.get(index)
        if so_far is None:
            so_far = self._new_block(index)
        return so_far

    def _new_block(self, index: int) -> _ThinkingSoFar:
        """A thinking block started at `index` (one started there before is replaced)."""
        if index not in self._thinking and len(self._thinking) >= MAX_THINKING_BLOCKS:
            raise UnrelayedReply(f"more than {MAX_THINKING_BLOCKS} thinking blocks in one reply")
        so_far = self._thinking[index] = _ThinkingSoFar()
        return so_far

    def _thought(self, block: _ThinkingSoFar, text: str) -> ReasoningDelta:
        """A piece of `block`'s text; the first of a block after others' text is set
        apart from it."""
        first = not block.pieces
        block.pieces.append(text)
        if first and self._reasoned:
            return ReasoningDelta(_BLOCK_SEPARATOR + text)
        self._reasoned = True
        return ReasoningDelta(text)

    @property
    def finished(self) -> bool:
        return self._reason is not None

    def finish(self) -> list[ProviderEvent]:
        # EOF without message_stop: complete only if the model said why it stopped.
        if not self.done and self._reason is None:
            raise MalformedStream("upstream stream ended before message_stop")
        self.data = ""
        # The calls whose block never ended (the reply said why it stopped all the same):
        # ended here, their pieces checked, `{}` for one without.
        tail = [event for index in self._tools.values() for event in self._input_end(index)]
        tail.extend(_signed(list(self._thinking.values())))
        tail.extend(_usage(self._input_tokens, self._output_tokens))
        tail.append(Finish(STOP_REASONS.get(self._reason or "end_turn", StopReason.STOP)))
        return tail
