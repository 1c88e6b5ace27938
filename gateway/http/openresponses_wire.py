"""The OpenResponses wire (`/v1/responses`), Sans-I/O: pure functions, no server.

Request side: `validate_request` checks the fields and maps them onto what a chat completion
turn takes (sampling params, client tools in chat-completions form); `build_input` turns the
`input` items into the chat-completions messages that `openai_wire.build_conversation`
already folds, so both endpoints give a session the same conversation.

Response side: the `response` object (`response_body`), its output items, and
`ResponseEvents`, the semantic SSE events of one streamed response in OpenAI's order, each
with its `sequence_number`. The object a stream completes with is built from the items the
stream opened, so ids and order match what the client saw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import attrs
from multidict import MultiMapping

from agents.ids import uuid7_hex
from agents.providers.base import (
    IMAGE_ONLY_TEXT,
    REASONING_EFFORTS,
    TOOL_IMAGE_ONLY_TEXT,
    ChatMessage,
    ToolCall,
    Usage,
)
from agents.runs import ReplyPart
from gateway.config.model import ChatCompletionsConfig
from gateway.http.openai_wire import (
    MAX_TOOL_CALL_ID,
    MAX_TOOLS,
    NO_RESPONSE_TEXT,
    RESPONSE_FORMATS,
    TOOL_CHOICES,
    VERBOSITIES,
    Conversation,
    RequestError,
    allowed_tools,
    bad_request,
    build_conversation,
    check_json_schema,
    check_parameters,
    encode_json,
    json_type,
)
from gateway.jsonwire import MAX_SAFE_INTEGER, has_surrogate

# OpenAI's metadata limits: 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# Our ids are 37 characters; anything far longer is not one of ours (and is not looked up).
MAX_RESPONSE_ID = 256
_TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# Input items that carry nothing a session keeps: the model's own reasoning (providers do not
# take it back) and references to items by id.
_SKIPPED_ITEMS = frozenset({"reasoning"})  # item_reference: replaced first (`item_references`)
_ROLES = frozenset({"user", "assistant", "system", "developer"})
TEXT_FORMAT = {"type": "text"}
# `reasoning.summary` values: read and echoed; the reply's reasoning is the model's own text.
REASONING_SUMMARIES = ("auto", "concise", "detailed")
# What of a `json_schema` text format becomes chat completions' `response_format.json_schema`.
_JSON_SCHEMA_KEYS = ("name", "description", "schema", "strict")

# `status` of a response object
COMPLETED = "completed"
INCOMPLETE = "incomplete"
FAILED = "failed"
IN_PROGRESS = "in_progress"


def new_response_id(reply: str) -> str:
    """`resp_<32hex>`: the response id, and the id of the run that answers it. Its hex is
    its reply's (`ResponseHead.reply`), so that an output item's id names its response
    before either is stored (`response_id_of`). Time-ordered (agents/ids.py): it is the key
    of the stored response."""
    return f"resp_{reply}"


def response_id_of(message_id: str) -> str:
    """The id of the response whose reply is stored as `message_id` (`new_response_id`), for
    a response created so; for another message, an id of no response."""
    return new_response_id(message_id.replace("-", ""))


@attrs.define
class ItemIds:
    """The ids of a response's output items, made of its reply's: the stored assistant
    message's id (in hex), chosen before the run, so an item is listed under the same id in
    a later response's input items (agents/store.py `turn_messages`), as at OpenAI, where
    an item keeps one id. The first text stretch is `msg_<id>`, as the reply's message is
    listed; a call is `fc_<id>_<n>`, `n` its place among the reply's calls, as listed too.
    A later text stretch (a server that alternates text with reasoning or calls) is
    `msg_<id>_<k>`, `k` counting from 1, and reasoning `rs_<id>`, then `rs_<id>_<k>`: each
    listed later under its id, as answered (`input_items`)."""

    reply: str = attrs.field(factory=uuid7_hex)
    _stretches: dict[str, int] = attrs.field(factory=dict)

    def stretch(self, prefix: str) -> str:
        """The id of the next text (`msg`) or reasoning (`rs`) item."""
        number = self._stretches.get(prefix, 0)
        self._stretches[prefix] = number + 1
        return f"{prefix}_{self.reply}" if number == 0 else f"{prefix}_{self.reply}_{number}"

    def call(self, index: int) -> str:
        return f"fc_{self.reply}_{index}"


def previous_response_not_found(response_id: str) -> RequestError:
    return bad_request(
        f"Previous response with id '{response_id[:MAX_RESPONSE_ID]}' not found.",
        "previous_response_id",
        "previous_response_not_found",
    )


def response_not_found(response_id: str) -> RequestError:
    return RequestError(
        404,
        f"Response with id '{response_id[:MAX_RESPONSE_ID]}' not found.",
        code="response_not_found",
    )


def response_in_progress(response_id: str, param: str | None = None) -> RequestError:
    """A response whose run has not ended, named where only an ended one will do."""
    return RequestError(
        409,
        f"Response with id '{response_id[:MAX_RESPONSE_ID]}' is still in progress.",
        param=param,
        code="response_in_progress",
    )


def response_not_cancellable(response_id: str) -> RequestError:
    """OpenAI cancels only background responses; every response here is answered at once
    (`background: false`), so there is none to cancel."""
    return bad_request(
        f"Response with id '{response_id[:MAX_RESPONSE_ID]}' cannot be cancelled: only"
        " background responses can be, and this gateway answers every response at once"
        " (background: false)."
    )


def response_not_streamable(response_id: str) -> RequestError:
    """OpenAI streams a `background` response again from `GET ...?stream=true`; none is
    here (every response is answered at once), so there is no stream to replay."""
    return bad_request(
        f"Response with id '{response_id[:MAX_RESPONSE_ID]}' cannot be streamed: only"
        " background responses can be, and this gateway answers every response at once"
        " (background: false). Retrieve it without `stream`.",
        "stream",
    )


# OpenAI's documented `include` values (its SDKs' `ResponseIncludable`), in their order. None
# adds anything here (no logprobs, no tools of OpenAI's own, no encrypted reasoning), but a
# client may ask for them; another value is a 400 naming it, as at OpenAI, so a misspelt one
# is not taken for a field the answer lacks.
INCLUDABLE = (
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
)
# As much of a refused value as its error repeats.
_SHOWN_CHARS = 64


def _check_includable(value: str) -> None:
    if value not in INCLUDABLE:
        shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
        supported = ", ".join(f"'{known}'" for known in INCLUDABLE)
        raise bad_request(
            f"Invalid value for `include`: '{shown}'. Supported values are: {supported}.",
            "include",
        )


def check_include(query: MultiMapping[str]) -> None:
    """The `include` values of a query, each repeated as `include` or as the OpenAI SDKs'
    `include[]`: every one must be documented."""
    for name in ("include", "include[]"):
        for value in query.getall(name, ()):
            _check_includable(value)


def _include(value: Any) -> None:
    """`include` of a request: a list of documented values, or null."""
    if value is None:
        return
    if not isinstance(value, list):
        raise _type_error("include", "array", value)
    for index, included in enumerate(value):
        if not isinstance(included, str):
            raise _type_error(f"include[{index}]", "string", included, "include")
        _check_includable(included)


def retrieve_streamed(query: MultiMapping[str]) -> bool:
    """The query of `GET /v1/responses/{id}`: whether it asks for a stream. `starting_after`
    (an event's sequence number) is checked, as OpenAI does; `include` must hold documented
    values, which change nothing here, as `include_obfuscation` does not (no obfuscation)."""
    check_include(query)
    stream = query.get("stream")
    if stream is not None and stream not in ("true", "false"):
        raise bad_request("`stream` must be true or false.", "stream")
    after = query.get("starting_after")
    if after is not None and not _is_count(after):
        raise bad_request("`starting_after` must be a non-negative integer.", "starting_after")
    return stream == "true"


def _is_count(value: str) -> bool:
    """A non-negative safe integer in decimal ASCII digits."""
    return (
        0 < len(value) <= 16
        and value.isascii()
        and value.isdigit()
        and (int(value) <= MAX_SAFE_INTEGER)
    )


def is_response_id(value: str) -> bool:
    """A string that can be looked up: bounded, and storable as UTF-8."""
    return 0 < len(value) <= MAX_RESPONSE_ID and not has_surrogate(value)


# -- GET /v1/responses/{id}/input_items ------------------------------------------------------

# OpenAI's page sizes: 1 to 100 items, 20 unless asked.
MAX_ITEMS_LIMIT = 100
DEFAULT_ITEMS_LIMIT = 20


@attrs.frozen
class ItemsQuery:
    after: str | None = None  # the id of the item the page begins after
    limit: int = DEFAULT_ITEMS_LIMIT
    ascending: bool = False  # OpenAI's default order is `desc`: the newest item first


def items_query(query: MultiMapping[str]) -> ItemsQuery:
    """The query of an input item list; `include` must hold documented values, which change
    nothing here."""
    check_include(query)
    limit = query.get("limit")
    count = DEFAULT_ITEMS_LIMIT
    if limit is not None:
        if not _is_count(limit) or not 1 <= int(limit) <= MAX_ITEMS_LIMIT:
            raise bad_request(f"`limit` must be an integer from 1 to {MAX_ITEMS_LIMIT}.", "limit")
        count = int(limit)
    order = query.get("order")
    if order is not None and order not in ("asc", "desc"):
        raise bad_request("`order` must be asc or desc.", "order")
    return ItemsQuery(query.get("after"), count, order == "asc")


@attrs.frozen
class InputMessage:
    """A stored message as an input item list reads it."""

    id: str
    message: ChatMessage
    images: int = 0  # how many images it had (their data is not stored)
    # A reply's reasoning and the order its parts began in (`StoredMessage.layout`), when
    # kept: it is listed as the output items it was answered as, under their ids.
    reasoning: str = ""
    layout: tuple[tuple[str, int], ...] = ()
    status: str = COMPLETED  # a reply's items': incomplete, as answered, when it was cut
    # The place of each of `message`'s calls among the stored reply's (their ids are made
    # of it), when some are not given to the model again (agents/history.py `replayed`):
    # the others keep the ids they were answered with. Empty: each call's own place.
    call_places: tuple[int, ...] = ()
    # A reply whose response failed (the upstream's error, a timeout): its items as
    # `response.failed` closed them, without the placeholder message of one that ended.
    failed: bool = False


# An image whose data is not stored: it was there, nothing more is known (OpenAI's default
# detail).
_IMAGE_PART = {"type": "input_image", "detail": "auto", "file_id": None, "image_url": None}


def input_items(messages: list[InputMessage]) -> list[dict[str, Any]]:
    """The conversation a response answered as Responses items, oldest first: each message
    (with its stored id) a `message` item, an assistant's calls `function_call` items after
    it, a tool result a `function_call_output` item. A message's images are `input_image`
    parts after its text (an image-only message's is the model's placeholder, not listed);
    a tool result's make its output the list of them, after an `input_text` part of its
    text if it had one.
    Ids are made of the stored message's, so they stay the same from one page to the
    next. A reply whose layout was kept is its output items again (`output_items`), with
    the same ids: its reasoning, and its text in the stretches it came in."""
    items: list[dict[str, Any]] = []
    for stored in messages:
        message = stored.message
        hexed = stored.id.replace("-", "")
        laid_out = _reply_parts(stored)
        if laid_out is None and _reasoning_alone(stored):  # its parts not kept: in order
            laid_out = (), ()
        if laid_out is not None:
            parts, starts = laid_out
            answered = output_items(
                message.text, stored.reasoning, message.tool_calls, stored.status, parts,
                starts, ItemIds(hexed), stored.call_places,
            )  # fmt: skip
            if stored.failed and not (message.text or message.tool_calls):
                answered = [item for item in answered if item["type"] != "message"]
            items.extend(answered)
            continue
        if message.role == "tool":
            output: str | list[dict[str, Any]] = message.text
            if stored.images:
                # OpenAI's content list form of an output sent as parts: its text (not the
                # model's placeholder for a result of images alone), then the images.
                output = [{"type": "input_text", "text": message.text}]
                if message.text == TOOL_IMAGE_ONLY_TEXT:
                    output = []
                output.extend(dict(_IMAGE_PART) for _ in range(stored.images))
            items.append({"id": f"fco_{hexed}", "type": "function_call_output",
                          "call_id": message.tool_call_id or "", "output": output,
                          "status": COMPLETED})  # fmt: skip
            continue
        content: list[dict[str, Any]] = []
        if message.text and not (stored.images and message.text == IMAGE_ONLY_TEXT):
            kind = "output_text" if message.role == "assistant" else "input_text"
            part: dict[str, Any] = {"type": kind, "text": message.text}
            if message.role == "assistant":
                part["annotations"] = []
            content.append(part)
        if message.role != "assistant":
            content.extend(dict(_IMAGE_PART) for _ in range(stored.images))
        if content:
            items.append({"id": f"msg_{hexed}", "type": "message", "role": message.role,
                          "status": stored.status, "content": content})  # fmt: skip
        places = _call_places(message.tool_calls, stored.call_places)
        for number, call in zip(places, message.tool_calls, strict=True):
            items.append(function_call_item(f"fc_{hexed}_{number}", call, stored.status))
    return items


def _reasoning_alone(stored: InputMessage) -> bool:
    """A reply of reasoning without text or calls: answered as its reasoning and the
    placeholder message (`output_items`), listed so."""
    message = stored.message
    return (
        message.role == "assistant"
        and not (message.text or message.tool_calls)
        and bool(stored.reasoning)
    )


def _call_places(calls: tuple[ToolCall, ...], places: tuple[int, ...]) -> tuple[int, ...]:
    """The place of each of `calls` among its reply's (`InputMessage.call_places`)."""
    return places if len(places) == len(calls) else tuple(range(len(calls)))


_REPLY_PARTS = {part.value: part for part in ReplyPart}


def _reply_parts(stored: InputMessage) -> tuple[tuple[ReplyPart, ...], tuple[int, ...]] | None:
    """The parts of a reply with text, calls or reasoning and their places, as its layout
    keeps them; None when it has none (listed as its message and calls)."""
    message = stored.message
    if message.role != "assistant" or not stored.layout:
        return None
    if not (message.text or message.tool_calls or stored.reasoning):
        return None
    if any(kind not in _REPLY_PARTS for kind, _ in stored.layout):
        return None
    parts = tuple(_REPLY_PARTS[kind] for kind, _ in stored.layout)
    return parts, tuple(start for _, start in stored.layout)


def items_page(items: list[dict[str, Any]], query: ItemsQuery) -> dict[str, Any]:
    """One page of a list of items, as OpenAI's list objects are."""
    ordered = items if query.ascending else items[::-1]
    start = 0
    if query.after is not None:
        start = next((n + 1 for n, item in enumerate(ordered) if item["id"] == query.after), -1)
        if start < 0:
            raise bad_request(
                f"No input item with id '{query.after[:MAX_RESPONSE_ID]}' in this response.",
                "after",
            )
    page = ordered[start : start + query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + query.limit < len(ordered),
    }


# -- request fields -------------------------------------------------------------------------


def _type_error(field: str, expected: str, value: Any, param: str | None = None) -> RequestError:
    return bad_request(
        f"{field}: Expected {expected}, received {json_type(value)}", param=param or field
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.frozen
class ResponseFields:
    """The validated fields of a `/v1/responses` request."""

    stream: bool = False
    store: bool = True
    # Forwarded to the provider under chat-completions names (tools in that form too).
    params: Mapping[str, Any] = attrs.field(factory=dict)
    user: str | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    # Echoed in the response object as the client sent them.
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    text_format: Mapping[str, Any] = TEXT_FORMAT
    text_verbosity: str | None = None
    truncation: str = "disabled"
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None


def validate_request(body: Mapping[str, Any]) -> ResponseFields:
    """Every field this endpoint reads, in a fixed order; the first failure wins. `null` is
    absent everywhere; fields it does not read (`service_tier`...) pass. `include` must
    hold documented values (`INCLUDABLE`), which change nothing here.

    Fields with no equivalent here: `conversation` is refused (its context would be lost
    without a word; `previous_response_id` continues a session), and so is `prompt` (a
    template kept at OpenAI, whose instructions would be lost); `background` is answered
    at once (a client polling the response finds it done, and the response says
    `background: false`); `truncation` is echoed as asked (a session's context is its last
    `historyLimit` turns either way, and one the model cannot take is the upstream's error).
    """
    flags: dict[str, bool] = {}
    for field, default in (
        ("stream", False),
        ("store", True),
        ("parallel_tool_calls", True),
        ("background", False),
    ):
        value = body.get(field)
        if value is not None and not isinstance(value, bool):
            raise _type_error(field, "boolean", value)
        flags[field] = default if value is None else value

    texts: dict[str, str | None] = {}
    for field in ("instructions", "user", "previous_response_id"):
        value = body.get(field)
        if value is not None and not isinstance(value, str):
            raise _type_error(field, "string", value)
        texts[field] = value
    previous = texts["previous_response_id"]
    if previous is not None and not is_response_id(previous):
        raise previous_response_not_found(previous)
    if body.get("conversation") is not None:
        raise bad_request(
            "conversation is not supported: continue with previous_response_id.",
            "conversation",
            "unsupported_parameter",
        )
    if body.get("prompt") is not None:
        # A template kept at OpenAI: the model would answer without its instructions.
        raise bad_request(
            "prompt is not supported: send its text as instructions and input.",
            "prompt",
            "unsupported_parameter",
        )
    _include(body.get("include"))
    truncation = body.get("truncation")
    if truncation is None:
        truncation = "disabled"
    elif truncation not in ("auto", "disabled"):
        raise bad_request("`truncation` must be auto or disabled.", "truncation")

    params: dict[str, Any] = {}
    numbers: dict[str, float | None] = {}
    for field, high in (("temperature", 2), ("top_p", 1)):
        value = body.get(field)
        numbers[field] = None
        if value is None:
            continue
        if not _is_number(value):
            raise _type_error(field, "number", value)
        if not 0 <= value <= high:
            raise bad_request(f"`{field}` must be between 0 and {high}.", field)
        params[field] = numbers[field] = value

    cap = body.get("max_output_tokens")
    max_output_tokens: int | None = None
    if cap is not None:
        if isinstance(cap, float) and cap.is_integer():
            cap = int(cap)
        if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_SAFE_INTEGER:
            raise bad_request(
                "max_output_tokens must be a positive safe integer", "max_output_tokens"
            )
        params["max_tokens"] = max_output_tokens = cap

    text_format = _text_format(body.get("text"))
    if text_format["type"] != "text":
        params["response_format"] = _response_format(text_format)
    verbosity = _text_verbosity(body.get("text"))
    if verbosity is not None:
        params["verbosity"] = verbosity
    effort, summary = _reasoning(body.get("reasoning"))
    if effort is not None:
        params["reasoning_effort"] = effort
    metadata = _metadata(body.get("metadata"))
    tools, chat_tools, names = _tools(body.get("tools"))
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        chat_choice, allowed = allowed_tools(
            choice.get("mode"), choice.get("tools"), names, nested=False
        )
        chat_tools = [tool for tool in chat_tools if tool["function"]["name"] in allowed]
    else:
        chat_choice = _tool_choice(choice, names)
    if chat_tools:
        params["tools"] = chat_tools
        if chat_choice is not None:
            params["tool_choice"] = chat_choice
        if body.get("parallel_tool_calls") is not None:
            params["parallel_tool_calls"] = flags["parallel_tool_calls"]
    return ResponseFields(
        stream=flags["stream"],
        store=flags["store"],
        params=params,
        user=texts["user"],
        instructions=texts["instructions"],
        previous_response_id=previous,
        tools=tools,
        tool_choice="auto" if choice is None else choice,
        parallel_tool_calls=flags["parallel_tool_calls"],
        max_output_tokens=max_output_tokens,
        temperature=numbers["temperature"],
        top_p=numbers["top_p"],
        metadata=metadata,
        text_format=text_format,
        text_verbosity=verbosity,
        truncation=truncation,
        reasoning_effort=effort,
        reasoning_summary=summary,
    )


def _reasoning(value: Any) -> tuple[str | None, str | None]:
    """`reasoning`: its `effort` goes to the provider as chat completions' `reasoning_effort`
    (an OpenAI-compatible upstream's field, Anthropic's thinking budget); its `summary` is
    checked and echoed only (the reply's reasoning item holds the model's own text)."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise _type_error("reasoning", "object", value)
    found: list[str | None] = []
    for key, allowed in (("effort", REASONING_EFFORTS), ("summary", REASONING_SUMMARIES)):
        item = value.get(key)
        if item is not None and not isinstance(item, str):
            raise _type_error(f"reasoning.{key}", "string", item, "reasoning")
        if item is not None and item not in allowed:
            raise bad_request(
                f"Invalid reasoning.{key}: reasoning.{key} must be {', '.join(allowed[:-1])},"
                f" or {allowed[-1]}",
                "reasoning",
            )
        found.append(item)
    return found[0], found[1]


def _text_format(value: Any) -> Mapping[str, Any]:
    """`text.format`: the output's format (`text`, `json_object`, `json_schema`), which goes
    to the provider as chat completions' `response_format` and is echoed in the response
    (LangChain parses a streamed answer only when the echo says `json_schema`)."""
    if value is None:
        return TEXT_FORMAT
    if not isinstance(value, dict):
        raise _type_error("text", "object", value)
    text_format = value.get("format")
    if text_format is None:
        return TEXT_FORMAT
    kind = text_format.get("type") if isinstance(text_format, dict) else None
    # Checked as a string before the set lookup: an object or array is not hashable.
    if not isinstance(kind, str) or kind not in RESPONSE_FORMATS:
        raise bad_request(
            "Invalid text.format: text.format.type must be text, json_object, or json_schema",
            "text",
        )
    if kind == "json_schema":
        check_json_schema(text_format, "text.format", "text")
    return cast(Mapping[str, Any], text_format)


def _text_verbosity(value: Any) -> str | None:
    """`text.verbosity` (`text` already checked to be an object or null): chat completions'
    `verbosity`, which an OpenAI-compatible upstream is sent (GPT-5 reads it) and Anthropic,
    which has no such field, is not; echoed in the response as asked."""
    verbosity = value.get("verbosity") if isinstance(value, dict) else None
    if verbosity is None:
        return None
    if not isinstance(verbosity, str):
        raise _type_error("text.verbosity", "string", verbosity, "text")
    if verbosity not in VERBOSITIES:
        raise bad_request(
            "Invalid text.verbosity: text.verbosity must be low, medium, or high", "text"
        )
    return verbosity


def _response_format(text_format: Mapping[str, Any]) -> dict[str, Any]:
    """A `json_object` or `json_schema` text format in chat completions' form: the
    Responses API flattens the schema's name, description, schema and strict into it."""
    if text_format["type"] == "json_object":
        return {"type": "json_object"}
    schema = {key: text_format[key] for key in _JSON_SCHEMA_KEYS if key in text_format}
    return {"type": "json_schema", "json_schema": schema}


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error("metadata", "object", value)
    if len(value) > MAX_METADATA_PAIRS:
        raise bad_request(f"`metadata` holds at most {MAX_METADATA_PAIRS} pairs.", "metadata")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(
                f"`metadata` keys are at most {MAX_METADATA_KEY} characters.", "metadata"
            )
        if not isinstance(item, str):
            raise _type_error(f"metadata.{key[:MAX_METADATA_KEY]}", "string", item, "metadata")
        if len(item) > MAX_METADATA_VALUE:
            raise bad_request(
                f"`metadata` values are at most {MAX_METADATA_VALUE} characters.", "metadata"
            )
    return dict(value)


def _tools(value: Any) -> tuple[tuple[Mapping[str, Any], ...], list[dict[str, Any]], list[str]]:
    """Responses function tools (flat: `{type, name, description, parameters, strict}`), and
    the same tools in chat-completions form, which every provider takes."""
    if value is None:
        return (), [], []
    if not isinstance(value, list):
        raise _type_error("tools", "array", value)
    if len(value) > MAX_TOOLS:
        raise bad_request(f"`tools` supports at most {MAX_TOOLS} tools.", "tools")
    chat: list[dict[str, Any]] = []
    names: list[str] = []
    for index, tool in enumerate(value):
        path = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _type_error(path, "object", tool, "tools")
        if tool.get("type") != "function":
            raise bad_request(
                f'Invalid `{path}.type`: only "function" tools are supported.', "tools"
            )
        name = tool.get("name")
        if not isinstance(name, str) or _TOOL_NAME_RE.fullmatch(name) is None:
            raise bad_request(
                f"Invalid `{path}.name`: 1 to 64 letters, digits, underscores or dashes.",
                "tools",
            )
        function: dict[str, Any] = {"name": name}
        for field, kind, expected in (
            ("description", "string", str),
            ("parameters", "object", dict),
            ("strict", "boolean", bool),
        ):
            item = tool.get(field)
            if item is None:
                continue
            if not isinstance(item, expected):
                raise _type_error(f"{path}.{field}", kind, item, "tools")
            function[field] = item
        check_parameters(function.get("parameters"), f"{path}.parameters")
        chat.append({"type": "function", "function": function})
        names.append(name)
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise bad_request(f"Duplicate function name '{duplicate}' in `tools`.", "tools")
    return tuple(value), chat, names


def _tool_choice(choice: Any, names: list[str]) -> Any:
    """The chat-completions form of `tool_choice`; None when absent."""
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = choice.get("name")
        if choice.get("type") != "function" or not isinstance(name, str):
            raise bad_request(
                'Invalid `tool_choice`: expected "none", "auto", "required" or'
                ' {"type": "function", "name": ...}.',
                "tool_choice",
            )
        if name not in names:
            raise bad_request(
                f"Invalid `tool_choice`: no function named '{name[:64]}' in `tools`.",
                "tool_choice",
            )
        return {"type": "function", "function": {"name": name}}
    if not isinstance(choice, str) or choice not in TOOL_CHOICES:
        raise bad_request(
            'Invalid `tool_choice`: expected "none", "auto", "required" or a named function.',
            "tool_choice",
        )
    if choice == "required" and not names:
        raise bad_request('`tool_choice` "required" needs `tools`.', "tool_choice")
    return choice


# -- input ----------------------------------------------------------------------------------


def _invalid_item(path: str, expected: str) -> RequestError:
    return bad_request(f"Invalid `{path}`: expected {expected}.", "input")


def _content_parts(content: Any, path: str) -> str | list[dict[str, Any]]:
    """A message's content in chat-completions form: text parts and base64 images."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _type_error(f"{path}.content", "string or array", content, "input")
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        part_path = f"{path}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            raise _invalid_item(part_path, "an object with a `type`")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise _type_error(f"{part_path}.text", "string", text, "input")
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                # file_id images would need a files API; only data: URIs are taken.
                raise _invalid_item(part_path, "an `image_url` holding a base64 data: URI")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "refusal":
            continue
        else:
            raise bad_request(
                f"Unsupported content part type '{kind[:64]}' in `{part_path}`.", "input"
            )
    return parts


def _call_id(item: Mapping[str, Any], path: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id.strip() or len(call_id) > MAX_TOOL_CALL_ID:
        raise _invalid_item(
            f"{path}.call_id", f"a non-empty string of at most {MAX_TOOL_CALL_ID} characters"
        )
    return call_id


def _joined(contents: list[str | list[dict[str, Any]]]) -> str | list[dict[str, Any]]:
    """The contents of one message, one after the other, as one: texts until the first list
    of parts are one text; from there on each is a text part of its own. In one pass: a
    message may be joined of as many items as a body holds."""
    texts: list[str] = []
    parts: list[dict[str, Any]] | None = None
    for content in contents:
        if parts is None:
            if isinstance(content, str):
                texts.append(content)
                continue
            text = "".join(texts)
            parts = [{"type": "text", "text": text}] if text else []
        if isinstance(content, list):
            parts.extend(content)
        elif content:
            parts.append({"type": "text", "text": content})
    return "".join(texts) if parts is None else parts


def input_messages(value: Any, instructions: str | None) -> list[dict[str, Any]]:
    """`instructions` and the `input` items as chat-completions messages. Consecutive
    `function_call` items become the `tool_calls` of one assistant message, with the
    assistant `message` item that follows them, if any. Trailing assistant items stay here;
    `build_conversation` drops them as it drops a trailing assistant message (http-openai.md
    §4.3 step 3): the model answers anew rather than continue a reply the client began."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if value is None:
        return messages
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
        return messages
    if not isinstance(value, list):
        raise _type_error("input", "string or array", value)
    joined: dict[int, list[str | list[dict[str, Any]]]] = {}  # by message: contents to join
    for index, item in enumerate(value):
        path = f"input[{index}]"
        if not isinstance(item, dict):
            raise _type_error(path, "object", item, "input")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _ROLES:
                raise _invalid_item(f"{path}.role", '"user", "assistant", "system" or "developer"')
            said = _content_parts(item.get("content"), path)
            last = messages[-1] if messages else None
            if role == "assistant" and last is not None and "tool_calls" in last:
                # The text of a turn whose calls came first (a response's items are in the
                # order the model began them): one assistant message with its calls, so
                # that their results follow them, as every upstream wants.
                joined.setdefault(len(messages) - 1, [last["content"]]).append(said)
                continue
            messages.append({"role": role, "content": said})
        elif kind == "function_call":
            call_id = _call_id(item, path)
            name, arguments = item.get("name"), item.get("arguments")
            if not isinstance(name, str) or _TOOL_NAME_RE.fullmatch(name) is None:
                raise _invalid_item(f"{path}.name", "a function name")
            if not isinstance(arguments, str):
                raise _type_error(f"{path}.arguments", "string", arguments, "input")
            call = {"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}}  # fmt: skip
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = _call_id(item, path)
            output = item.get("output")
            content = _content_parts(output, path) if isinstance(output, list) else output
            if not isinstance(content, str | list):
                raise _type_error(f"{path}.output", "string or array", output, "input")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif isinstance(kind, str) and kind in _SKIPPED_ITEMS:  # a str: dicts do not hash
            continue
        else:
            shown = kind[:64] if isinstance(kind, str) else json_type(kind)
            raise bad_request(f"Unsupported input item type '{shown}' in `{path}`.", "input")
    for at, contents in joined.items():
        messages[at]["content"] = _joined(contents)
    return messages


def input_item_ids(value: Any) -> list[str]:
    """The ids an `input` list gives its items (an output item sent back has its own), in
    order; an `input` that is no list has none."""
    if not isinstance(value, list):
        return []
    return [
        item["id"] for item in value if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def item_references(value: Any) -> list[tuple[int, str]]:
    """The places and ids of the `item_reference` items of `input` (typed so, or of no
    `type` and no `role`, as OpenAI takes them), in order; an id that is no string, or an
    empty or oversize one, is a 400 naming it."""
    if not isinstance(value, list):
        return []
    found: list[tuple[int, str]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        # OpenAI's `type` of a reference is optional: an `id` without a role is one.
        if kind != "item_reference" and not (kind is None and "id" in item and "role" not in item):
            continue
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id or len(item_id) > MAX_RESPONSE_ID:
            raise _invalid_item(
                f"input[{index}].id", f"a non-empty string of at most {MAX_RESPONSE_ID} characters"
            )
        found.append((index, item_id))
    return found


def with_items(value: list[Any], items: Mapping[int, dict[str, Any]]) -> list[Any]:
    """`input` with the items at the places of `items` replaced by them."""
    return [items.get(index, item) for index, item in enumerate(value)]


def item_not_found(item_id: str) -> RequestError:
    """OpenAI's answer to an `item_reference` to no item it keeps."""
    return bad_request(f"Item with id '{item_id}' not found.", "input")


def without_image_data(item: Mapping[str, Any]) -> bool:
    """Whether a listed item holds images (their data is not stored): it cannot be given
    to a model again."""
    parts = item.get("content") if item.get("type") == "message" else item.get("output")
    return isinstance(parts, list) and any(part.get("type") == "input_image" for part in parts)


def output_ids(body: Mapping[str, object]) -> tuple[str, ...]:
    """The ids of a response object's output items, stored beside it
    (`StoredResponse.output_ids`)."""
    output = body.get("output")
    return tuple(item["id"] for item in output) if isinstance(output, list) else ()


def duplicate_item(item_id: str) -> RequestError:
    """OpenAI's answer to an item of the previous response sent again with it."""
    return bad_request(
        f"Duplicate item found with id {item_id}. Remove duplicate items from your input and"
        " try again.",
        "input",
    )


def build_input(
    value: Any, instructions: str | None, limits: ChatCompletionsConfig
) -> Conversation:
    """The conversation of `input`, as chat completions build it; errors name `input`."""
    messages = input_messages(value, instructions)
    try:
        return build_conversation(messages, limits)
    except RequestError as exc:
        if exc.param != "messages":
            raise
        raise RequestError(
            exc.status,
            exc.message.replace("`messages`", "`input`"),
            exc.type,
            param="input",
            code=exc.code,
            detail=exc.detail,
        ) from None


# -- the response object --------------------------------------------------------------------


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.total,
    }


def outcome_status(failed: bool, stop_reason: str) -> tuple[str, dict[str, str] | None]:
    """A run's end as a response `status` and `incomplete_details`. A run aborted by someone
    else (`chat.abort`, a session reset) while its client waited is incomplete, no reason."""
    if failed:
        return FAILED, None
    if stop_reason == "length":
        return INCOMPLETE, {"reason": "max_output_tokens"}
    if stop_reason == "content_filter":
        return INCOMPLETE, {"reason": "content_filter"}
    if stop_reason == "aborted":
        return INCOMPLETE, None
    return COMPLETED, None


def failure_body(error: RequestError) -> dict[str, str]:
    """`response.error` of a failed response: OpenAI's code for the kind of failure."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {"code": code, "message": error.message}


@attrs.frozen
class ResponseHead:
    """What every response object of one request repeats."""

    id: str
    created_at: int  # s
    model: str  # echoed as the client sent it
    fields: ResponseFields
    # The stored reply message's id in hex (`TurnRequest.reply_id`): its items' ids are
    # made of it (`ItemIds`).
    reply: str = attrs.field(factory=uuid7_hex)


def response_body(
    head: ResponseHead,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    *,
    error: dict[str, str] | None = None,
    incomplete_details: dict[str, str] | None = None,
) -> dict[str, Any]:
    fields = head.fields
    return {
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": fields.instructions,
        "max_output_tokens": fields.max_output_tokens,
        "model": head.model,
        "output": output,
        "parallel_tool_calls": fields.parallel_tool_calls,
        "previous_response_id": fields.previous_response_id,
        "reasoning": {"effort": fields.reasoning_effort, "summary": fields.reasoning_summary},
        "store": fields.store,
        "temperature": fields.temperature,
        "text": _text_body(fields),
        "tool_choice": fields.tool_choice,
        "tools": list(fields.tools),
        "top_p": fields.top_p,
        "truncation": fields.truncation,
        "usage": usage_body(usage) if usage is not None else None,
        "user": fields.user,
        "metadata": dict(fields.metadata),
    }


def _text_body(fields: ResponseFields) -> dict[str, Any]:
    text: dict[str, Any] = {"format": dict(fields.text_format)}
    if fields.text_verbosity is not None:
        text["verbosity"] = fields.text_verbosity
    return text


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [output_text_part(text)] if status != IN_PROGRESS else []
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


# How a provider sets the blocks of a reply's thinking apart in its one reasoning text
# (Anthropic's blank line): a reasoning item that resumes after another item begins with its
# own text, not with the separator.
_REASONING_SEPARATOR = "\n\n"


def _separator_length(text: str, separator: str = _REASONING_SEPARATOR) -> int:
    """How much of `text`'s beginning is of `separator` (its beginning)."""
    length = 0
    while length < min(len(text), len(separator)) and text[length] == separator[length]:
        length += 1
    return length


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if status != IN_PROGRESS else []
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content}


def function_call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def output_items(
    text: str,
    reasoning: str,
    tool_calls: tuple[ToolCall, ...],
    status: str,
    parts: tuple[ReplyPart, ...] = (),
    starts: tuple[int, ...] = (),
    ids: ItemIds | None = None,
    call_places: tuple[int, ...] = (),
) -> list[dict[str, Any]]:
    """A finished run's output: its reasoning, its text, its tool calls, in the order they
    began (`parts`, each stretch of text or reasoning from its place in `starts`), as a
    stream of the run opened their items; without `parts` (the run produced nothing), in
    that order. Without text or tool calls the text is chat completions' placeholder,
    last, so a client always reads one. `ids`: those of the response's reply;
    `call_places`: the place of each of `tool_calls` among the reply's, when some were left
    out (`InputMessage.call_places`): a call is named by its place, its id made of it."""
    ids = ids if ids is not None else ItemIds()
    item_status = INCOMPLETE if status == INCOMPLETE else COMPLETED
    if len(starts) != len(parts):  # parts of a run that gave no places: one stretch each
        starts = (0,) * len(parts)
    calls_in_order = (ReplyPart.TOOL_CALL,) * len(tool_calls)
    order = parts or (ReplyPart.REASONING, ReplyPart.TEXT, *calls_in_order)
    # Each stretch of text or reasoning runs from its start to the next one's.
    marks = {
        kind: [at for part, at in zip(parts, starts, strict=True) if part is kind]
        for kind in (ReplyPart.REASONING, ReplyPart.TEXT)
    }
    taken = dict.fromkeys(marks, 0)
    calls = dict(zip(_call_places(tool_calls, call_places), tool_calls, strict=True))
    called = 0  # the place of the next call among the reply's
    items: list[dict[str, Any]] = []
    for part in order:
        match part:
            case ReplyPart.REASONING | ReplyPart.TEXT:
                whole, at = (reasoning if part is ReplyPart.REASONING else text), marks[part]
                number = taken[part]
                taken[part] += 1
                begin = at[number] if number < len(at) else 0
                piece = whole[begin : at[number + 1] if number + 1 < len(at) else len(whole)]
                if part is ReplyPart.REASONING and begin > 0:  # resumes: see ResponseEvents
                    piece = piece[_separator_length(piece) :]
                if not piece:
                    continue
                kind = "reasoning" if part is ReplyPart.REASONING else "message"
                if items and items[-1]["type"] == kind:
                    # Nothing was opened since (a stretch of reasoning that was its
                    # separator alone): a stream goes on with the open item, so does this.
                    items[-1]["content"][0]["text"] += piece
                elif part is ReplyPart.REASONING:
                    items.append(reasoning_item(ids.stretch("rs"), piece, item_status))
                else:
                    items.append(message_item(ids.stretch("msg"), piece, item_status))
            case ReplyPart.TOOL_CALL:
                call = calls.pop(called, None)
                if call is not None:
                    items.append(function_call_item(ids.call(called), call, item_status))
                called += 1
    for number, call in sorted(calls.items()):
        items.append(function_call_item(ids.call(number), call, item_status))
    if not text and not tool_calls:
        items.append(message_item(ids.stretch("msg"), NO_RESPONSE_TEXT, item_status))
    return items


# -- streaming ------------------------------------------------------------------------------


def sse_event(event: Mapping[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + encode_json(event) + b"\n\n"


@attrs.define
class _OpenItem:
    output_index: int
    item: dict[str, Any]
    kind: str  # "message", "reasoning" or "function_call"
    pieces: list[str] = attrs.field(factory=list)
    # An item held back: its events (type, fields) not sent yet; None once it is sent live.
    held: list[tuple[str, dict[str, Any]]] | None = None
    closed: bool = False
    filled: bool = False  # a call closed without arguments, given `{}`


class ResponseEvents:
    """The events of one streamed response, as SSE bytes; `output` holds the closed items, in
    output order, for the final object.

    As OpenAI streams them, items come one after another: an item is added at the next
    output index, gets its deltas and is done before the next item's events, so clients
    that number an item's blocks by the order items' events arrive (LangChain's stream
    converter) see each once. So text or reasoning that follows another item opens a new
    item, as at OpenAI, where a response may hold several reasoning and message items: a
    server that alternates reasoning and text, or resumes either after a call, gives one
    item per stretch, each streamed live (a call-first answer's text included).

    Calls next to each other form a group that closes together, when something else
    begins or the run ends: a call's arguments may come after the next call began
    (servers that stream parallel calls side by side, or name all their calls before any
    arguments), each fragment going to its own call's item. The group's first call streams
    live; the others are held back (their events kept, in order) and sent when the group
    closes, in output order, so each item's events still come together. A call closed
    without arguments gets `{}`, as the provider completes it at the end of the stream; a
    fragment that comes after its call closed (no server known sends text before the
    arguments of a call it already named) goes into the final object's call only."""

    def __init__(self, head: ResponseHead) -> None:
        self.head = head
        self._ids = ItemIds(head.reply)
        self.output: list[dict[str, Any]] = []
        self._seq = 0
        self._next_index = 0  # the output_index of the next item
        # The open items, in output order: one text or reasoning item, or a group of calls.
        self._open: list[_OpenItem] = []
        self._calls: dict[int, _OpenItem] = {}  # tool call index -> its item, open or closed
        self._closed: dict[int, dict[str, Any]] = {}  # output_index -> the closed item
        self._produced = False  # text or a tool call
        self._reasoned = False  # reasoning came before
        # The part of the separator the next reasoning item still drops from its beginning
        # (the whole of it once another item was added: `_REASONING_SEPARATOR`).
        self._separator = _REASONING_SEPARATOR

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse_event(event)

    def start(self) -> bytes:
        body = response_body(self.head, IN_PROGRESS, [], None)
        return self._event("response.created", response=body) + self._event(
            "response.in_progress", response=body
        )

    def _item_event(self, of: _OpenItem, kind: str, /, **fields: Any) -> bytes:
        """An event of the item `of`: sent now, or kept while the item is held back."""
        if of.held is not None:
            of.held.append((kind, fields))
            return b""
        return self._event(kind, **fields)

    def _add(self, kind: str, item: dict[str, Any]) -> tuple[bytes, _OpenItem]:
        """A new item; the open items of another kind (or any but calls) are closed first."""
        out = b""
        if self._open and not (kind == "function_call" == self._open[-1].kind):
            out = self._close_open(fill=True)
        # Only a call can be added while others are open: the group's first one is live.
        opened = _OpenItem(self._next_index, item, kind, held=[] if self._open else None)
        self._separator = _REASONING_SEPARATOR
        self._next_index += 1
        self._open.append(opened)
        out += self._item_event(opened, "response.output_item.added",
                                output_index=opened.output_index, item=item)  # fmt: skip
        if kind == "message":
            out += self._part_event(opened, "response.content_part.added", output_text_part(""))
        elif kind == "reasoning":
            part = {"type": "reasoning_text", "text": ""}
            out += self._part_event(opened, "response.content_part.added", part)
        return out, opened

    def _part_event(self, item: _OpenItem, kind: str, part: dict[str, Any]) -> bytes:
        return self._item_event(
            item,
            kind,
            item_id=item.item["id"],
            output_index=item.output_index,
            content_index=0,
            part=part,
        )

    def _current(self, kind: str) -> _OpenItem | None:
        """The open item of `kind` that a fragment of it continues: the last one added."""
        last = self._open[-1] if self._open else None
        return last if last is not None and last.kind == kind else None

    def content(self, delta: str) -> bytes:
        self._produced = True
        out, item = b"", self._current("message")
        if item is None:
            out, item = self._add(
                "message", message_item(self._ids.stretch("msg"), "", IN_PROGRESS)
            )
        return out + self._delta(item, "response.output_text.delta", delta, logprobs=[])

    def reasoning(self, delta: str) -> bytes:
        out, item = b"", self._current("reasoning")
        if item is None and self._reasoned:
            # Reasoning that resumes after another item: without the separator, which
            # may come in pieces; nothing is opened for a piece of it alone.
            dropped = _separator_length(delta, self._separator)
            self._separator = self._separator[dropped:] if dropped == len(delta) else ""
            delta = delta[dropped:]
            if not delta:
                return b""
        self._reasoned = self._reasoned or bool(delta)
        if item is None:
            out, item = self._add(
                "reasoning", reasoning_item(self._ids.stretch("rs"), "", IN_PROGRESS)
            )
        return out + self._delta(item, "response.reasoning_text.delta", delta)

    def _delta(self, item: _OpenItem, kind: str, delta: str, **extra: Any) -> bytes:
        item.pieces.append(delta)
        return self._item_event(
            item,
            kind,
            item_id=item.item["id"],
            output_index=item.output_index,
            content_index=0,
            delta=delta,
            **extra,
        )

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes:
        self._produced = True
        item = function_call_item(self._ids.call(index), ToolCall(call_id, name, ""), IN_PROGRESS)
        out, self._calls[index] = self._add("function_call", item)
        return out

    def tool_call_arguments(self, index: int, delta: str) -> bytes:
        item = self._calls.get(index)
        if item is None:
            return b""  # the run sends only those of a call started: not reached
        if item.closed:
            if item.filled:  # the provider's own `{}`, or the arguments instead of it
                item.pieces.clear()
                item.filled = False
            item.pieces.append(delta)
            self._closed[item.output_index]["arguments"] = "".join(item.pieces)
            return b""
        item.pieces.append(delta)
        return self._item_event(
            item,
            "response.function_call_arguments.delta",
            item_id=item.item["id"],
            output_index=item.output_index,
            delta=delta,
        )

    def _close_open(self, status: str = COMPLETED, fill: bool = False) -> bytes:
        """The open items closed, in output order (`fill`: a call without arguments gets
        `{}`, when something else begins)."""
        items, self._open = self._open, []
        return b"".join(self._close_item(item, status, fill) for item in items)

    def _close_all(self, status: str = COMPLETED) -> bytes:
        """Every open item closed, in output order; `output` then holds them all."""
        out = self._close_open(status)
        self.output = [self._closed[index] for index in sorted(self._closed)]
        return out

    def _close_item(self, item: _OpenItem, status: str, fill: bool = False) -> bytes:
        if fill and item.kind == "function_call" and not item.pieces:
            item.pieces.append("{}")
            item.filled = True
        item.closed = True
        whole = "".join(item.pieces)
        ids = {"item_id": item.item["id"], "output_index": item.output_index}
        held, item.held = item.held or [], None
        out = b"".join(self._event(kind, **fields) for kind, fields in held)
        if item.kind == "message":
            done = message_item(item.item["id"], whole, status)
            out += self._event("response.output_text.done", **ids, content_index=0, text=whole,
                               logprobs=[])  # fmt: skip
            out += self._event("response.content_part.done", **ids, content_index=0,
                               part=output_text_part(whole))  # fmt: skip
        elif item.kind == "reasoning":
            done = reasoning_item(item.item["id"], whole, status)
            out += self._event("response.reasoning_text.done", **ids, content_index=0, text=whole)
            out += self._event("response.content_part.done", **ids, content_index=0,
                               part={"type": "reasoning_text", "text": whole})  # fmt: skip
        else:
            call = ToolCall(item.item["call_id"], item.item["name"], whole)
            done = function_call_item(item.item["id"], call, status)
            out += self._event("response.function_call_arguments.done", **ids,
                               name=call.name, arguments=whole)  # fmt: skip
        self._closed[item.output_index] = done
        return out + self._event(
            "response.output_item.done", output_index=item.output_index, item=done
        )

    def finish(self, stop_reason: str, usage: Usage) -> tuple[bytes, dict[str, Any]]:
        """The open items closed, then `response.completed` (or `.incomplete`); with the
        final response object, which is also what is stored."""
        status, details = outcome_status(False, stop_reason)
        item_status = INCOMPLETE if status == INCOMPLETE else COMPLETED
        out = b""
        if not self._produced:
            out += self.content(NO_RESPONSE_TEXT)
        out += self._close_all(item_status)
        body = response_body(self.head, status, self.output, usage, incomplete_details=details)
        kind = "response.completed" if status == COMPLETED else "response.incomplete"
        return out + self._event(kind, response=body), body

    def fail(self, error: RequestError) -> bytes:
        """`response.failed`, after closing the open items as incomplete."""
        out = self._close_all(INCOMPLETE)
        body = response_body(self.head, FAILED, self.output, None, error=failure_body(error))
        return out + self._event("response.failed", response=body)
