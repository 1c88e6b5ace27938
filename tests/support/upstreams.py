"""Fake model upstreams: real aiohttp servers on loopback, scripted per test.

`FakeOpenAI` speaks OpenAI Chat Completions (`POST /v1/chat/completions`), `FakeAnthropic`
speaks Anthropic Messages (`POST /v1/messages`). Each records every request it received and
whether the client went away before the reply was complete.

    async with FakeOpenAI() as upstream:           # or the `openai_upstream` fixture
        upstream.script(Status(429, {"Retry-After": "7"}), Stream(("Hel", "lo"), delay=0.05))
        config = upstream.provider_config()       # a ProviderConfig pointing at the fake
        request = provider_request(config, "hi")  # a ProviderRequest for that config
        ...                                       # 1st request gets 429, the 2nd streams
        assert upstream.requests[0].body["stream"] is True
        assert upstream.requests[0].headers["Authorization"] == "Bearer sk-test-key"
        await upstream.last.wait_gone()           # the client disconnected mid-reply

Replies are format-neutral values (`Stream`, `JSONAnswer`, `Status`, `Stall`, `Raw`); each
fake renders them in its wire format. With nothing scripted a request gets `default`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Protocol

import attrs
from aiohttp import web
from multidict import CIMultiDictProxy

from agents.config import (
    API_ANTHROPIC_MESSAGES,
    API_OPENAI_COMPLETIONS,
    ModelEntry,
    ModelRef,
    ProviderConfig,
)
from agents.providers.base import ChatMessage, ImageInput, Provider, ProviderEvent, ProviderRequest

# A marker in every fake error body: tests assert it never reaches an exception message.
SECRET_BODY_MARKER = "upstream-body-must-not-leak"
# The key `provider_config()` gives the provider; it must not reach an exception either.
API_KEY = "sk-test-key"

# How often a waiting handler checks whether its client is still there.
_POLL_S = 0.01


@attrs.frozen
class FakeToolCall:
    """A tool call the fake model makes; streamed, its arguments go out piece by piece."""

    id: str
    name: str
    arguments: tuple[str, ...] = ("{}",)


@attrs.frozen
class Stream:
    """A 200 event stream: reasoning, the deltas `delay` seconds apart, tool calls, then
    finish, usage, end."""

    deltas: tuple[str, ...] = ("Hello", " world")
    reasoning: tuple[str, ...] = ()  # thinking pieces, before the text
    signature: str | None = None  # Anthropic: the thinking block's signature
    tool_calls: tuple[FakeToolCall, ...] = ()  # after the text; finish says so
    delay: float = 0.0
    finish: str | None = None  # the wire's own reason; None: the format's normal stop
    finish_event: bool = True  # send the chunk/event that carries the finish reason
    usage: tuple[int, int] | None = (3, 2)  # (input, output) as the wire reports them
    end: bool = True  # send the terminator (`data: [DONE]` / `message_stop`)
    error_after: int | None = None  # after this many deltas: an in-stream error, then EOF
    stall_after: int | None = None  # after this many deltas: hold the connection silently
    drop_after: int | None = None  # after this many deltas: close the connection mid-body
    newline: str = "\n"  # "\r\n" to check CRLF handling
    comments: bool = False  # a `: keepalive` comment before every delta


@attrs.frozen
class JSONAnswer:
    """A 200 `application/json` answer: the whole completion at once (stream ignored)."""

    text: str = "Hello world"
    finish: str | None = None
    usage: tuple[int, int] | None = (3, 2)
    reasoning: str = ""
    signature: str | None = None  # Anthropic
    tool_calls: tuple[FakeToolCall, ...] = ()


@attrs.frozen
class Status:
    """An error status with the format's error body (containing SECRET_BODY_MARKER)."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: str | None = None  # None: the format's error JSON


@attrs.frozen
class Stall:
    """Say nothing until the client gives up: after the 200 headers, or before any."""

    headers: bool = True


@attrs.frozen
class Raw:
    """Exactly these body pieces, `delay` seconds apart, status 200."""

    pieces: tuple[bytes, ...]
    content_type: str = "text/event-stream"
    delay: float = 0.0


Reply = Stream | JSONAnswer | Status | Stall | Raw


def openai_sse(*deltas: dict[str, Any]) -> bytes:
    """A chat-completions stream of these deltas, a `tool_calls` finish and `[DONE]`: a
    `Raw` body for what `Stream` does not send (text and reasoning alternating, calls
    named before their arguments)."""
    chunks = [*({"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas),
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]  # fmt: skip
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


@attrs.define
class Received:
    """One request as the fake saw it."""

    path: str
    headers: CIMultiDictProxy[str]
    body: Any
    reply: Reply
    peer: Any = None  # the client's (host, port): which connection it came on
    query: str = ""  # the request target's query string
    completed: bool = False  # the whole reply was written
    gone: asyncio.Event = attrs.field(factory=asyncio.Event)  # client left before completion

    async def wait_gone(self, within: float = 1.0) -> None:
        """Until the fake saw the client disconnect; TimeoutError after `within` seconds."""
        await asyncio.wait_for(self.gone.wait(), within)


class _ClientGone(Exception):
    """The client closed the connection before the reply was complete."""


class _StopServing(Exception):
    """The script (drop_after) or the fake's shutdown ends the reply early."""


class _Event(Protocol):
    """Renders one SSE event: `event(obj)` or `event(obj, "message_start")`."""

    def __call__(self, obj: Mapping[str, Any], name: str | None = None) -> bytes: ...


class FakeUpstream:
    """The shared server; subclasses render replies in their wire format."""

    path = "/"
    api = ""

    def __init__(self, default: Reply = Stream()) -> None:
        self.default = default
        # A reply chosen by the request's body before the script (None: the script's);
        # a refused request takes no scripted reply.
        self.answer: Callable[[Any], Reply | None] = lambda body: None
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._closing = asyncio.Event()
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- scripting ------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order; then `default` again."""
        self._script.extend(replies)

    async def wait_for_requests(self, count: int = 1, within: float = 1.0) -> None:
        """Until `count` requests have arrived (their handlers may still be running)."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()

    @property
    def last(self) -> Received:
        return self.requests[-1]

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def provider_config(
        self,
        *,
        id: str = "fake",
        api_key: str | None = API_KEY,
        headers: Mapping[str, str] | None = None,
        models: tuple[ModelEntry, ...] = (ModelEntry("fake-model", max_tokens=None),),
    ) -> ProviderConfig:
        return ProviderConfig(
            id=id,
            api=self.api,
            base_url=self.base_url,
            api_key=api_key,
            headers=dict(headers or {}),
            models=models,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Anthropic's documented request limit, 32 MB; aiohttp's default of 1 MiB would turn
        # away a turn with one large image.
        app = web.Application(client_max_size=32 * 1000 * 1000)
        app.router.add_post(self.path, self._handle)
        for path, handler in self.extra_routes():
            app.router.add_post(path, handler)
        # A short shutdown grace: every handler returns promptly once _closing is set.
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def aclose(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- serving --------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> Received:
        """The request recorded, with the reply `answer` gives it, else the one scripted for
        it, else `default`."""
        body = await request.json()
        reply = self.answer(body)
        if reply is None:
            reply = self._script.popleft() if self._script else self.default
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = Received(
            request.path, request.headers, body, reply, peer, query=request.query_string
        )
        self.requests.append(received)
        self._arrived.set()
        return received

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = await self._receive(request)
        reply = received.reply
        if isinstance(reply, Status):
            received.completed = True
            return self.status_response(reply)
        if isinstance(reply, JSONAnswer):
            received.completed = True
            return web.json_response(self.render_json(reply))
        content_type = reply.content_type if isinstance(reply, Raw) else "text/event-stream"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        try:
            if isinstance(reply, Stall) and not reply.headers:
                await self._pause(request, None)
            await response.prepare(request)
            if isinstance(reply, Stall):
                await self._pause(request, None)
            elif isinstance(reply, Raw):
                for index, piece in enumerate(reply.pieces):
                    if index and reply.delay:
                        await self._pause(request, reply.delay)
                    await response.write(piece)
            else:
                await self._stream(request, response, reply)
            await response.write_eof()
            received.completed = True
        except (_ClientGone, ConnectionResetError):
            # ConnectionResetError: a write to a transport the client has closed.
            received.gone.set()
        except _StopServing:
            pass
        # aiohttp finishes this response and ignores the dead connection quietly.
        return response

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, reply: Stream
    ) -> None:
        def event(obj: Mapping[str, Any], name: str | None = None) -> bytes:
            nl = reply.newline
            head = f"event: {name}{nl}" if name else ""
            return f"{head}data: {json.dumps(obj)}{nl}{nl}".encode()

        for piece in self.render_head(reply, event):
            await response.write(piece)
        for index, delta in enumerate(reply.deltas):
            if index == reply.error_after:
                await response.write(self.render_error(event))
                return
            if index == reply.stall_after:
                await self._pause(request, None)
            if index == reply.drop_after:
                assert request.transport is not None
                request.transport.close()
                raise _StopServing
            if index and reply.delay:
                await self._pause(request, reply.delay)
            if reply.comments:
                await response.write(f": keepalive{reply.newline}{reply.newline}".encode())
            await response.write(self.render_delta(delta, event))
        if reply.error_after is not None and reply.error_after >= len(reply.deltas):
            await response.write(self.render_error(event))
            return
        for piece in self.render_tail(reply, event):
            await response.write(piece)

    async def _pause(self, request: web.Request, seconds: float | None) -> None:
        """Wait (forever when None) while watching the connection, so a disconnect is seen
        at once even when nothing is being written; the fake's shutdown ends the wait."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while deadline is None or loop.time() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise _ClientGone
            if self._closing.is_set():
                raise _StopServing
            step = _POLL_S if deadline is None else min(_POLL_S, deadline - loop.time())
            await asyncio.sleep(max(step, 0))

    # -- wire formats (subclasses) ---------------------------------------------------------

    def extra_routes(self) -> list[tuple[str, Any]]:
        return []

    def error_body(self) -> dict[str, Any]:
        raise NotImplementedError

    def status_response(self, reply: Status) -> web.Response:
        """The error `reply` scripts: its body, else the format's error with the marker."""
        body = reply.body if reply.body is not None else json.dumps(self.error_body())
        return web.Response(
            status=reply.status,
            text=body,
            content_type="application/json",
            headers=dict(reply.headers),
        )

    def render_json(self, reply: JSONAnswer) -> dict[str, Any]:
        raise NotImplementedError

    def render_head(self, reply: Stream, event: _Event) -> Iterator[bytes]:
        raise NotImplementedError

    def render_delta(self, delta: str, event: _Event) -> bytes:
        raise NotImplementedError

    def render_tail(self, reply: Stream, event: _Event) -> Iterator[bytes]:
        raise NotImplementedError

    def render_error(self, event: _Event) -> bytes:
        raise NotImplementedError


class FakeOpenAI(FakeUpstream):
    path = "/v1/chat/completions"
    api = API_OPENAI_COMPLETIONS
    # Embeddings asked as base64 get a 400, as from a server that makes only floats.
    refuses_base64 = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @staticmethod
    def _chunk(delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake-model",
            "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}],
        }

    def error_body(self) -> dict[str, Any]:
        return {"error": {"message": SECRET_BODY_MARKER, "type": "server_error", "code": None}}

    def render_json(self, reply: JSONAnswer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for call in reply.tool_calls
            ]
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish or ("tool_calls" if reply.tool_calls else "stop"),
                }
            ],
        }
        if reply.usage is not None:
            answer["usage"] = _openai_usage(reply.usage)
        return answer

    def render_head(self, reply: Stream, event: _Event) -> Iterator[bytes]:
        # Real servers open with an empty role-only delta; the provider must skip it.
        yield event(self._chunk({"role": "assistant", "content": ""}))
        for piece in reply.reasoning:  # DeepSeek's and vLLM's field
            yield event(self._chunk({"content": None, "reasoning_content": piece}))

    def render_delta(self, delta: str, event: _Event) -> bytes:
        return event(self._chunk({"content": delta}))

    def render_tail(self, reply: Stream, event: _Event) -> Iterator[bytes]:
        for index, call in enumerate(reply.tool_calls):
            # OpenAI's shape: the first fragment names the call, the next carry arguments.
            first = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield event(self._chunk({"tool_calls": [first]}))
            for piece in call.arguments:
                fragment = {"index": index, "function": {"arguments": piece}}
                yield event(self._chunk({"tool_calls": [fragment]}))
        if reply.finish_event:
            finish = reply.finish or ("tool_calls" if reply.tool_calls else "stop")
            yield event(self._chunk({}, finish))
        if reply.usage is not None:
            yield event({**self._chunk({}), "choices": [], "usage": _openai_usage(reply.usage)})
        if reply.end:
            yield f"data: [DONE]{reply.newline}{reply.newline}".encode()

    def render_error(self, event: _Event) -> bytes:
        return event(self.error_body())

    # -- embeddings -----------------------------------------------------------------------

    def extra_routes(self) -> list[tuple[str, Any]]:
        return [("/v1/embeddings", self._embeddings)]

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """`fake_embedding` of each input; a scripted Status or Stall is served instead
        (any other scripted reply is consumed and ignored)."""
        received = await self._receive(request)
        reply = received.reply
        if isinstance(reply, Status):
            received.completed = True
            return self.status_response(reply)
        if isinstance(reply, Stall):
            try:
                await self._pause(request, None)
            except (_ClientGone, _StopServing):
                received.gone.set()
            return web.Response(status=204)
        inputs = received.body["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        dimensions = received.body.get("dimensions") or FAKE_DIMENSIONS
        base64_wanted = received.body.get("encoding_format") == "base64"
        if base64_wanted and self.refuses_base64:
            received.completed = True
            error = {"message": "base64 encoding is not supported", "type": "BadRequestError",
                     "param": None, "code": 400}  # fmt: skip
            return web.json_response({"object": "error", **error}, status=400)
        data = []
        for index, text in enumerate(inputs):
            vector = fake_embedding(text, dimensions)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                if base64_wanted
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(text.split()) for text in inputs)
        received.completed = True
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": received.body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


FAKE_DIMENSIONS = 8  # the fake's vector size when the request names none


def fake_embedding(text: str, dimensions: int = FAKE_DIMENSIONS) -> list[float]:
    """The fake upstream's vector for `text`: sha256 bytes as multiples of 1/128, which
    float32 holds exactly, so the base64 form decodes to the same numbers."""
    digest = hashlib.sha256(f"fake:{text}".encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(dimensions)]


class FakeAnthropic(FakeUpstream):
    path = "/v1/messages"
    api = API_ANTHROPIC_MESSAGES

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "api_error", "message": SECRET_BODY_MARKER}}

    def render_json(self, reply: JSONAnswer) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "fake-model",
            "content": [
                *(
                    [{"type": "thinking", "thinking": reply.reasoning,
                      "signature": reply.signature or ""}]
                    if reply.reasoning
                    else []
                ),
                {"type": "text", "text": reply.text},
                *(
                    {"type": "tool_use", "id": c.id, "name": c.name,
                     "input": json.loads("".join(c.arguments))}
                    for c in reply.tool_calls
                ),
            ],
            "stop_reason": reply.finish or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None,
        }  # fmt: skip
        if reply.usage is not None:
            answer["usage"] = {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]}
        return answer

    def render_head(self, reply: Stream, event: _Event) -> Iterator[bytes]:
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "fake-model",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if reply.usage is not None:
            message["usage"] = {"input_tokens": reply.usage[0], "output_tokens": 1}
        yield event({"type": "message_start", "message": message}, "message_start")
        if reply.reasoning:
            block = {"type": "thinking", "thinking": ""}
            yield event(
                {"type": "content_block_start", "index": 0, "content_block": block},
                "content_block_start",
            )
            for piece in reply.reasoning:
                delta = {"type": "thinking_delta", "thinking": piece}
                yield event(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            if reply.signature:
                delta = {"type": "signature_delta", "signature": reply.signature}
                yield event(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            yield event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        # The text block's index is the thinking block's + 1 in reality; the decoder reads
        # text deltas whatever their index, so the fake keeps 0.
        yield event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        yield event({"type": "ping"}, "ping")

    def render_delta(self, delta: str, event: _Event) -> bytes:
        return event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": delta},
            },
            "content_block_delta",
        )

    def render_tail(self, reply: Stream, event: _Event) -> Iterator[bytes]:
        yield event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        for offset, call in enumerate(reply.tool_calls, start=1):
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            yield event(
                {"type": "content_block_start", "index": offset, "content_block": block},
                "content_block_start",
            )
            for piece in call.arguments:
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield event(
                    {"type": "content_block_delta", "index": offset, "delta": delta},
                    "content_block_delta",
                )
            yield event({"type": "content_block_stop", "index": offset}, "content_block_stop")
        if reply.finish_event:
            stop = reply.finish or ("tool_use" if reply.tool_calls else "end_turn")
            message_delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
            }
            if reply.usage is not None:
                message_delta["usage"] = {"output_tokens": reply.usage[1]}
            yield event(message_delta, "message_delta")
        if reply.end:
            yield event({"type": "message_stop"}, "message_stop")

    def render_error(self, event: _Event) -> bytes:
        return event(
            {"type": "error", "error": {"type": "overloaded_error", "message": SECRET_BODY_MARKER}},
            "error",
        )


def _openai_usage(usage: tuple[int, int]) -> dict[str, int]:
    prompt, completion = usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# -- helpers for provider tests -------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def provider_request(
    config: ProviderConfig,
    text: str = "hi",
    *,
    model: str = "fake-model",
    system: str = "",
    history: tuple[ChatMessage, ...] = (),
    images: tuple[ImageInput, ...] = (),
    params: Mapping[str, Any] | None = None,
) -> ProviderRequest:
    """A ProviderRequest for `config`: history, then the current user message."""
    return ProviderRequest(
        ref=ModelRef(config.id, model),
        system=system,
        messages=(*history, ChatMessage("user", text, images)),
        params=dict(params or {}),
        provider=config,
        model=config.model(model),
    )


async def collect(
    provider: Provider, upstream: FakeUpstream, text: str = "hi", **kw: Any
) -> list[ProviderEvent]:
    """Every event `provider` delivers for a request to `upstream` (`config=` for another)."""
    config = kw.pop("config", None) or upstream.provider_config()
    request = provider_request(config, text, **kw)
    return await events_of(provider, request)


async def events_of(provider: Provider, request: ProviderRequest) -> list[ProviderEvent]:
    """Every event `provider` delivers for `request`, in order."""
    events: list[ProviderEvent] = []
    await provider.stream(request, events.append)
    return events


async def sent_body(provider: Provider, upstream: FakeUpstream, **kw: Any) -> dict[str, Any]:
    """The JSON body `provider` sent `upstream`."""
    await collect(provider, upstream, **kw)
    body: dict[str, Any] = upstream.last.body
    return body


def assert_no_leak(exc: BaseException) -> None:
    """Neither the upstream's error body nor the API key is in what the exception says."""
    text = f"{exc} {exc!r} {getattr(exc, 'message', '')} {getattr(exc, 'detail', '')}"
    assert SECRET_BODY_MARKER not in text
    assert API_KEY not in text


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A loopback TCP port that accepts connections and never sends a byte: point an
    `https://` URL at it and the TLS handshake hangs, which is a connect timeout."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(OSError):
            await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


@attrs.define
class RawAnswer:
    """`raw_answer`'s server: its port, and whether the client hung up."""

    port: int = 0
    gone: asyncio.Event = attrs.field(factory=asyncio.Event)


@contextlib.asynccontextmanager
async def raw_answer(data: bytes, *, hang_up: bool = False) -> AsyncIterator[RawAnswer]:
    """A loopback server that answers each request with exactly `data` (status line and
    framing included), then hangs up or waits, silent, for the client to."""
    answer = RawAnswer()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(data)
            await writer.drain()
            if not hang_up:
                await reader.read()  # until the client hangs up
                answer.gone.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    answer.port = server.sockets[0].getsockname()[1]
    try:
        yield answer
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
