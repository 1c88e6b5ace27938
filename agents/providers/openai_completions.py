"""The `openai-completions` provider (agents-sessions.md §6.3).

Speaks OpenAI's streamed Chat Completions: OpenAI itself, vLLM, llama.cpp server, Ollama `/v1`,
LM Studio, OpenRouter. Request building is pure (`request_body`, `request_headers`); `stream`
does the I/O and relays the SSE stream with as little work per chunk as possible.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog
from multidict import CIMultiDict

from agents.config import API_OPENAI_COMPLETIONS, ProviderConfig
from agents.errors import MalformedStream
from agents.providers.base import (
    MAX_TOOL_CALLS,
    ChatMessage,
    Deliver,
    Finish,
    ImageInput,
    PartialUsage,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    StopReason,
    TextDelta,
    ToolCallDelta,
    Usage,
    token_count,
)
from agents.providers.images import host_of, is_openai
from agents.providers.sse import SSEEvent, data_json
from agents.providers.timeouts import Timeouts
from agents.providers.upstream import (
    SentCallIds,
    UnrelayedReply,
    check_call,
    declared_tools,
    endpoint_url,
    error_status,
    explained,
    log_body,
    relay,
    stream_error,
)
from agents.providers.upstream_client import UpstreamClient

log = structlog.get_logger()

# OpenRouter's finish reason for a generation that failed midway (its error object, when it
# sends one, fails the reply first): a reply cut short, not a complete one.
ERROR_FINISH = "error"
# `function_call` and unknown reasons become "stop" (§6.3).
FINISH_REASONS: Mapping[str, StopReason] = {
    "stop": StopReason.STOP,
    "length": StopReason.LENGTH,
    "content_filter": StopReason.CONTENT_FILTER,
    "tool_calls": StopReason.TOOL_CALLS,
}
# OpenAI's error words, as the statuses its API answers them with (its "Error codes" guide):
# a server or proxy that streams an OpenAI-shaped failure (LiteLLM, Azure, llama.cpp, Mistral)
# often names it so, by its `code`, else its `type`, rather than by number.
ERROR_WORDS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "exceed_context_size_error": 400,  # llama.cpp server
    "string_above_max_length": 400,
    "invalid_value": 400,
    "invalid_type": 400,
    "unsupported_parameter": 400,
    "unsupported_value": 400,
    "content_filter": 400,  # Azure: the prompt was filtered
    "content_policy_violation": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "permission_error": 403,
    "model_not_found": 404,
    "not_found_error": 404,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "tokens": 429,  # OpenAI's rate limit types
    "requests": 429,
    "server_error": 500,
    "api_error": 500,
    "service_unavailable": 503,
    "overloaded_error": 529,
}
# The body owns these; a param of the same name would break streaming or the context.
_RESERVED_KEYS = frozenset({"model", "messages", "stream", "stream_options"})
# Echo's pacing knob (§6.2), meaningless to a real model.
_DROPPED_KEYS = frozenset({"delayMs"})


def chat_messages(
    messages: Sequence[ChatMessage], *, mistral: bool = False, reasoning_back: bool = False
) -> list[dict[str, Any]]:
    """The context as Chat Completions messages. Calls of one assistant message that share
    an id (some servers give parallel calls one) go under ids of their own, `<id>_2` and so
    on, each result with its call in order: OpenAI refuses a message whose calls share an
    id, and a result could not say which one it answers. For a Mistral model (`mistral`),
    every id goes as Mistral takes it (`mistral_call_id`). The transcript keeps the ids.
    `reasoning_back`: a message with calls carries its reasoning (`takes_reasoning_back`)."""
    out: list[dict[str, Any]] = []
    sent_ids = SentCallIds()  # the last assistant message's
    attached: list[ImageInput] = []  # the images of the results just sent
    for message in messages:
        if message.role == "tool":
            call_id = sent_ids.result(message.tool_call_id) or message.tool_call_id
            if mistral and call_id is not None:
                call_id = mistral_call_id(call_id)
            text = message.text
            if message.images:
                attached.extend(message.images)
                text = text or TOOL_IMAGE_TEXT
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
            continue
        merged = bool(attached) and message.role == "user"
        _attach(out, attached)
        if message.role == "assistant":
            sent_ids = SentCallIds()
        chat = chat_message(message, sent_ids, mistral)
        if merged:
            # A user message right after the results' images is one with theirs: strict chat
            # templates (Mistral's, Gemma's) refuse two user messages in a row.
            content = chat["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}] if content else []
            out[-1]["content"].extend(content)
            continue
        if reasoning_back and message.tool_calls:
            chat["reasoning_content"] = message.reasoning
        out.append(chat)
    _attach(out, attached)
    return out


# A tool result's images as OpenClaw sends them to a Chat Completions API, whose tool messages
# carry text alone: a result of images only says where they are, and they follow the results
# of the calls (all of which must come right after the calls) in a user message.
TOOL_IMAGE_TEXT = "(see attached image)"
TOOL_IMAGES_TEXT = "Attached image(s) from tool result:"


def _attach(out: list[dict[str, Any]], images: list[ImageInput]) -> None:
    """The user message of the `images` of the results just sent, if any (then cleared)."""
    if images:
        parts = [{"type": "image_url", "image_url": {"url": image.data_uri}} for image in images]
        out.append({"role": "user", "content": [{"type": "text", "text": TOOL_IMAGES_TEXT},
                                                *parts]})  # fmt: skip
        images.clear()


# Mistral's API, and its models' chat template wherever they are served (vLLM), refuse a call
# id that is not nine letters and digits ("Tool call id was call_1 but must be a-z, A-Z,
# 0-9, with a length of 9"): a call another model made, or one the gateway named.
_MISTRAL_ID_RE = re.compile(r"[a-zA-Z0-9]{9}")
_MISTRAL_HOST = "api.mistral.ai"
# Mistral's model families, by the names they are served under (`mistral-large-latest`,
# `devstral-small-2505`, `mistralai/Magistral-Small-2506`, ...). A model of another maker that
# one of them names gets ids of nine letters and digits too, which every server takes.
_MISTRAL_MODEL_RE = re.compile(
    r"mistral|mixtral|devstral|magistral|ministral|codestral|pixtral|voxtral", re.IGNORECASE
)
_ALPHANUMERIC = string.ascii_letters + string.digits


# DeepSeek's and Kimi's thinking models take their reasoning back in a tool loop, in the
# message with the calls it led to, and refuse one without it ("Missing `reasoning_content`
# field in the assistant message"); the field must be there even when empty. Other servers
# are not sent it (some refuse a field they do not know), nor these a reply's without calls.
_REASONING_BACK_HOSTS = frozenset({"api.deepseek.com", "api.moonshot.ai", "api.moonshot.cn"})
_REASONING_BACK_MODEL_RE = re.compile(r"deepseek|kimi", re.IGNORECASE)


def takes_reasoning_back(provider: ProviderConfig | None, model: str) -> bool:
    """DeepSeek's or Moonshot's API, or a DeepSeek or Kimi model served elsewhere."""
    host = host_of(provider.base_url if provider else "")
    return host in _REASONING_BACK_HOSTS or bool(_REASONING_BACK_MODEL_RE.search(model))


def is_mistral(provider: ProviderConfig | None, model: str) -> bool:
    """Mistral's API, or a model of Mistral's served elsewhere."""
    return host_of(provider.base_url if provider else "") == _MISTRAL_HOST or bool(
        _MISTRAL_MODEL_RE.search(model)
    )


def mistral_call_id(call_id: str) -> str:
    """A call id as Mistral takes it: one of nine letters and digits as it is, any other the
    same nine for the same id (its digest), in the call and in its result."""
    if _MISTRAL_ID_RE.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).digest())
    letters = []
    for _ in range(9):
        number, digit = divmod(number, len(_ALPHANUMERIC))
        letters.append(_ALPHANUMERIC[digit])
    return "".join(letters)


def chat_message(
    message: ChatMessage, sent_ids: SentCallIds, mistral: bool = False
) -> dict[str, Any]:
    """A user or assistant message; `sent_ids`: its calls' ids as sent (chat_messages)."""
    if message.tool_calls:
        # Reasoning is not sent back but to the servers that ask for it (chat_messages).
        unique = (sent_ids.add(call.id, call.id) for call in message.tool_calls)
        return {
            "role": "assistant",
            "content": message.text or None,
            "tool_calls": [
                {
                    "id": mistral_call_id(call_id) if mistral else call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call, call_id in zip(message.tool_calls, unique, strict=True)
            ],
        }
    if not message.images:
        return {"role": message.role, "content": message.text}
    parts: list[dict[str, Any]] = []
    if message.text:  # some servers reject an empty text part; an image-only turn has none
        parts.append({"type": "text", "text": message.text})
    parts.extend(
        {"type": "image_url", "image_url": {"url": image.data_uri}} for image in message.images
    )
    return {"role": message.role, "content": parts}


def request_body(request: ProviderRequest) -> dict[str, Any]:
    """The JSON body of §6.3: context, streaming with usage, and the params."""
    provider, model = request.provider, request.ref.model
    messages = chat_messages(
        request.messages,
        mistral=is_mistral(provider, model),
        reasoning_back=takes_reasoning_back(provider, model),
    )
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    body: dict[str, Any] = {
        "model": request.ref.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    params = request.params
    dropped: list[str] = []
    for key, value in params.items():
        if value is None:
            continue  # "unset" in our params; some servers reject explicit nulls
        if key in _RESERVED_KEYS or key in _DROPPED_KEYS:
            dropped.append(key)
        elif key == "max_tokens" and params.get("max_completion_tokens") is not None:
            # Both names given: send one cap, the one echo honours too (echo.token_cap);
            # OpenAI rejects requests that carry both.
            dropped.append(key)
        else:
            # The known sampling fields and any other agent param (top_k, min_p, … for local
            # servers) go verbatim, under the name the client used.
            body[key] = value
    if (
        "max_tokens" not in body
        and "max_completion_tokens" not in body
        and request.model is not None
        and request.model.max_tokens
    ):
        body["max_tokens"] = request.model.max_tokens
    if "max_tokens" in body and is_openai(request.provider):
        # OpenAI's own API takes the cap under its current name from every model, and its
        # reasoning models refuse the old one. Other servers keep the name they were given:
        # Ollama and LM Studio read `max_tokens` only.
        body["max_completion_tokens"] = body.pop("max_tokens")
    if host_of(provider.base_url if provider else "") == _MISTRAL_HOST:
        # Mistral's API refuses a field it does not know (422 "extra_forbidden") on every
        # turn: no `stream_options` (it reports the usage in its last chunk unasked), its
        # own names for the cap and the seed.
        del body["stream_options"]
        if "max_completion_tokens" in body:
            body["max_tokens"] = body.pop("max_completion_tokens")
        if "seed" in body:
            body["random_seed"] = body.pop("seed")
    if dropped:
        log.debug("provider_params_dropped", api=API_OPENAI_COMPLETIONS, keys=dropped)
    return body


def request_headers(provider: ProviderConfig) -> CIMultiDict[str]:
    """Content-Type, the bearer key when set, then the provider's headers, which win
    (compared case-insensitively, so `authorization` replaces `Authorization`)."""
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    for name, value in provider.headers.items():
        headers[name] = value
    return headers


def usage_of(usage: Any) -> Usage | PartialUsage | None:
    """Reported usage; the one usable count of the two; None when neither is (then §7
    estimates what is missing)."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None if prompt is None and completion is None else PartialUsage(prompt, completion)
    details = usage.get("completion_tokens_details")
    reasoning = token_count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    if reasoning is None or reasoning > completion:
        reasoning = 0  # not reported, or not a part of the output it says it is part of
    return Usage(prompt, completion, reasoning)


def content_parts(parts: list[Any]) -> Iterator[TextDelta | ReasoningDelta]:
    """Content as a list of parts, as Mistral's magistral models give it: `text` parts, and
    `thinking` parts whose `thinking` is a list of text parts (their reasoning). Other parts
    (references, images) carry no reply text. TypeError or AttributeError for a part of
    the wrong shape."""
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            text = part["text"]
            if type(text) is not str:
                raise TypeError("content part text is not text")
            if text:
                yield TextDelta(text)
        elif kind == "thinking":
            thinking: Any = part["thinking"]
            pieces: list[Any] = [{"text": thinking}] if type(thinking) is str else thinking
            for piece in pieces:
                text = piece.get("text") or ""
                if type(text) is not str:
                    raise TypeError("thinking part text is not text")
                if text:
                    yield ReasoningDelta(text)


def error_object_status(obj: Mapping[str, Any]) -> int | None:
    """The status an error chunk or answer names: `{"error": {...}}` (OpenAI, OpenRouter,
    llama.cpp) or vLLM's `{"object": "error", ...}`. Its `code` as a number (OpenRouter: the
    upstream's status), else its `code` or `type` as one of OpenAI's words."""
    error = obj.get("error")
    fields: Mapping[str, Any] = error if isinstance(error, dict) else obj
    code = fields.get("code")
    status = error_status(code)
    if status is None:
        for word in (code, fields.get("type")):
            if type(word) is str and word in ERROR_WORDS:
                return ERROR_WORDS[word]
    return status


def json_answer(answer: Any, tools: frozenset[str] = frozenset()) -> list[ProviderEvent]:
    """A whole chat.completion object (the server ignored `stream`): one delta, usage, finish.
    `tools`: the request's tool names (`check_call`)."""
    if not isinstance(answer, dict):
        raise MalformedStream("upstream JSON answer is not an object")
    if answer.get("error") or answer.get("object") == "error":  # as in a stream (`feed`)
        raise stream_error(error_object_status(answer))
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedStream("upstream JSON answer has no choices")
    choice = choices[0]
    if choice.get("finish_reason") == ERROR_FINISH:
        raise MalformedStream("upstream JSON answer ended with finish_reason error")
    # As in a stream (`ChunkDecoder.feed`), a field of the wrong shape makes the reply
    # malformed rather than be left out of it: a message, reasoning or tool calls.
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise MalformedStream("upstream JSON answer message is not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise MalformedStream("upstream JSON answer content is not text")
    # Structured outputs' refusal (content null, or empty on some servers): the reply's
    # text, after any content, as in a stream.
    refusal = message.get("refusal")
    if refusal and not isinstance(refusal, str):
        raise MalformedStream("upstream JSON answer refusal is not text")
    events: list[ProviderEvent] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        if not isinstance(reasoning, str):
            raise MalformedStream("upstream JSON answer reasoning is not text")
        events.append(ReasoningDelta(reasoning))
    if isinstance(content, list):
        events.extend(content_parts(content))
    elif content:
        events.append(TextDelta(content))
    if refusal:
        events.append(TextDelta(refusal))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise MalformedStream("upstream JSON answer tool calls are not a list")
    if len(calls) > MAX_TOOL_CALLS:
        raise MalformedStream(f"upstream JSON answer has more than {MAX_TOOL_CALLS} tool calls")
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise MalformedStream("upstream JSON answer has a malformed tool call")
        arguments = _arguments_text(function.get("arguments"))
        given_id = call.get("id")
        if not isinstance(given_id, str | None):
            raise MalformedStream("upstream JSON answer has a tool call id that is not text")
        call_id = given_id or f"call_{index}"
        name = check_call(call_id, function["name"], tools)
        events.append(
            ToolCallDelta(
                index,
                call_id,
                name,
                # None given (a function without parameters): `{}`, as OpenAI gives it.
                arguments or "{}",
            )
        )
    usage = usage_of(answer.get("usage"))
    if usage is not None:
        events.append(usage)
    reason = FINISH_REASONS.get(choice.get("finish_reason") or "stop", StopReason.STOP)
    events.append(Finish(reason))
    return events


def _arguments_text(arguments: Any) -> str:
    """A call's `arguments` as text. Some OpenAI-compatible servers give them
    as an object, whole: its JSON; anything else that is not text is a malformed reply."""
    if arguments is None or isinstance(arguments, str):
        return arguments or ""
    if isinstance(arguments, dict):
        # allow_nan=False: a number JSON cannot hold (1e400, NaN) is a ValueError, malformed.
        return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    raise MalformedStream("upstream tool call arguments are neither text nor an object")


class OpenAICompletionsProvider:
    api = API_OPENAI_COMPLETIONS

    def __init__(self, client: UpstreamClient, timeouts: Timeouts) -> None:
        self._client = client
        self._timeouts = timeouts

    async def stream(self, request: ProviderRequest, deliver: Deliver) -> None:
        provider = request.provider
        if provider is None:
            raise ValueError("openai-completions needs the provider's config")
        tools = declared_tools(request.params)
        await relay(
            self._client,
            provider,
            endpoint_url(provider.base_url, "/chat/completions"),
            request_headers(provider),
            request_body(request),
            self._timeouts,
            ChunkDecoder(provider, tools),
            functools.partial(json_answer, tools=tools),
            deliver,
        )


class ChunkDecoder:
    """`data:` lines of `chat.completion.chunk` objects, up to `data: [DONE]`."""

    def __init__(self, provider: ProviderConfig, tools: frozenset[str] = frozenset()) -> None:
        self._provider = provider
        self._tool_names = tools  # the request's tool names (`check_call`)
        self.done = False
        self.data = ""
        self._reason: str | None = None
        self._usage: Any = None
        # Tool calls as we number them: each one's id (None until a fragment gives one), and
        # which of them the upstream's `index` last named.
        self._call_ids: list[str | None] = []
        self._by_index: dict[int, int] = {}
        self._with_arguments: set[int] = set()  # the calls some fragment gave arguments

    def feed(self, events: Sequence[SSEEvent]) -> Iterator[ProviderEvent]:
        loads = data_json
        for sse in events:
            data = self.data = sse.data
            if data == "[DONE]":
                self.done = True
                return
            obj = loads(data)
            # `{"error": {...}}` or `{"object": "error", ...}`: classified by the status it
            # names (`error_object_status`).
            if obj.get("error") or obj.get("object") == "error":
                log_body("upstream_stream_error", self._provider, data)
                raise explained(stream_error(error_object_status(obj)), self._provider, data)
            choices = obj.get("choices")
            if choices:
                choice = choices[0]
                if choice.get("index"):
                    # Another choice than the first (an agent's `n` above 1): not the reply,
                    # whose text would otherwise be interleaved with it.
                    choice = next((c for c in choices if not c.get("index")), {})
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content")
                    # Reasoning, refusals and tool calls: not looked for in a chunk of text
                    # alone. A chunk's reasoning is the thought before its text (some
                    # servers send both in one chunk); its calls come after the text.
                    other = len(delta) > 1 or not content
                    if other:
                        yield from self._reasoning(delta)
                    if content:
                        if type(content) is str:
                            yield TextDelta(content)
                        elif type(content) is list:
                            yield from content_parts(content)
                        else:
                            raise TypeError("delta content is not text")
                    if other:
                        yield from self._other(delta)
                if choice.get("finish_reason"):
                    self._reason = choice["finish_reason"]
                    if self._reason == ERROR_FINISH:
                        log_body("upstream_stream_error", self._provider, data)
                        raise MalformedStream("upstream reply ended with finish_reason error")
            usage = obj.get("usage")
            if usage:
                self._usage = usage
            elif "x_groq" in obj and self._usage is None:
                # Groq gives the usage inside `x_groq` of its last chunk.
                groq = obj["x_groq"]
                if isinstance(groq, dict) and groq.get("usage"):
                    self._usage = groq["usage"]
            if usage and self._reason is not None:
                # The usage at or after the finish reason is the last thing a reply has
                # before `[DONE]` (OpenAI's usage chunk, llama.cpp's finish chunk): the reply
                # is whole here. An upstream that then sends neither `[DONE]` nor the body's
                # end would hold the turn until the idle timeout. (Groq's `x_groq` usage
                # in its finish chunk may still be followed by the usage chunk, which wins.)
                self.done = True
                return

    def _reasoning(self, delta: Mapping[str, Any]) -> Iterator[ProviderEvent]:
        """Reasoning (`reasoning_content`: DeepSeek, vLLM; `reasoning`: OpenRouter, Ollama)."""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            if type(reasoning) is not str:
                raise TypeError("delta reasoning is not text")
            yield ReasoningDelta(reasoning)

    def _other(self, delta: Mapping[str, Any]) -> Iterator[ProviderEvent]:
        """A refusal (OpenAI's structured outputs: the reply, there being no other) and tool
        call fragments."""
        refusal = delta.get("refusal")
        if refusal:
            if type(refusal) is not str:
                raise TypeError("delta refusal is not text")
            yield TextDelta(refusal)
        calls = delta.get("tool_calls")
        if calls:
            for call in calls:
                function = call.get("function") or {}
                arguments = function.get("arguments") or ""
                if type(arguments) is not str:
                    arguments = _arguments_text(arguments)
                index = call.get("index")
                if type(index) is not int and index is not None:
                    raise TypeError("tool call index is not an integer")
                call_id, name = call.get("id"), function.get("name")
                if not isinstance(call_id, str | None) or not isinstance(name, str | None):
                    raise TypeError("tool call id or name is not text")
                name = check_call(call_id, name or None, self._tool_names)
                number = self._call_number(index, call_id)
                if arguments:
                    self._with_arguments.add(number)
                if call_id or name or arguments:
                    # One of none is no piece of the reply (nor progress: Timeouts.progress);
                    # its call, if new, is numbered all the same.
                    yield ToolCallDelta(number, call_id or None, name or None, arguments)

    def _call_number(self, index: int | None, call_id: str | None) -> int:
        """Our number of the call a fragment belongs to. OpenAI numbers calls by `index`, but
        Gemini leaves it out and Ollama puts every call at 0: a fragment with an id that its
        call does not have yet starts a new one; one without continues its call (the last
        one, when there is no index)."""
        ids = self._call_ids
        number = self._by_index.get(index) if index is not None else len(ids) - 1
        if number is None or number < 0 or (call_id and ids[number] not in (None, call_id)):
            number = len(ids)
            if number >= MAX_TOOL_CALLS:
                raise UnrelayedReply(f"more than {MAX_TOOL_CALLS} tool calls in one reply")
            ids.append(call_id or None)
            if index is not None:
                self._by_index[index] = number
        elif call_id and ids[number] is None:
            ids[number] = call_id
        return number

    @property
    def finished(self) -> bool:
        return self._reason is not None

    def finish(self) -> list[ProviderEvent]:
        # EOF without [DONE]: complete only if the model said it was finished.
        if not self.done and self._reason is None:
            raise MalformedStream("upstream stream ended before [DONE]")
        self.data = ""
        tail: list[ProviderEvent] = []
        if self._reason != "length":
            # Calls given no arguments (a function without parameters, on some servers):
            # `{}`, as OpenAI gives them, so that every client can parse them.
            tail.extend(
                ToolCallDelta(number, None, None, "{}")
                for number in range(len(self._call_ids))
                if number not in self._with_arguments
            )
        reported = usage_of(self._usage)
        if reported is not None:
            tail.append(reported)
        tail.append(Finish(FINISH_REASONS.get(self._reason or "stop", StopReason.STOP)))
        return tail
