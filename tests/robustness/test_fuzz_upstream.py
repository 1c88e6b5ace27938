"""Property-based fuzzing of what an upstream answers: the upstream client
(agents/providers/upstream_client.py) and the providers' decoders, over a real socket.

Whatever a broken or hostile upstream writes (status lines, headers, framing, SSE events and
JSON of every shape, cut into any pieces, then closed, kept open or left hanging), a turn's
provider call ends with its reply or with an UpstreamError: never another exception, never
past its idle timeout. A connection goes back to the pool only after a complete response,
and a pooled one carries the next request cleanly. Generation is derandomized and bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_asyncio
from hypothesis import event, given
from hypothesis import strategies as st

from agents.config import ModelEntry, ProviderConfig
from agents.errors import UpstreamError
from agents.providers.anthropic_messages import AnthropicMessagesProvider
from agents.providers.base import TOOL_NAME_RE, Finish, Provider, ProviderEvent, ToolCallDelta
from agents.providers.openai_completions import OpenAICompletionsProvider
from agents.providers.timeouts import Timeouts
from agents.providers.upstream_client import UpstreamClient
from tests.support.strategies import fuzz
from tests.support.upstreams import provider_request

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
]

# Short: a hanging answer costs this much per example.
TIMEOUTS = Timeouts(connect=1.0, idle=0.05)
# A provider call must end within this, whatever the upstream does (the idle timeout, plus
# the time to read what was sent).
BOUND_S = 2.0

CHUNK = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}]}


def chunk(delta: Any = None, finish: Any = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": {} if delta is None else delta}
    if finish is not None:
        choice["finish_reason"] = finish
    return {**CHUNK, "choices": [choice], **extra}


# -- what the upstream writes ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def sse_event(value: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(value).encode() + b"\n\n"


# Call names: the request's tool (TOOLS), in gpt-oss's namespace or not, near misses, odd.
call_names = st.one_of(
    st.sampled_from(["get_weather", "functions.get_weather", "functions.", "functions.get_time",
                     "functions.functions.get_weather", "functions.get_weather ",
                     "Functions.get_weather", "functions." + "n" * 70]),
    st.text(max_size=12).map(lambda text: "functions." + text),
)  # fmt: skip
TOOLS = {"tools": [{"type": "function", "function": {"name": "get_weather"}}]}
# Events of each wire format: mostly well formed, some of the wrong shape.
openai_events = st.one_of(
    st.builds(
        lambda name: sse_event(
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": name, "arguments": "{}"}}
                    ]
                }
            )
        ),
        call_names,
    ),
    st.builds(lambda text: sse_event(chunk({"content": text})), st.text(max_size=12)),
    st.builds(lambda text: sse_event(chunk({"content": text})), st.text(max_size=12)),
    st.builds(lambda reason: sse_event(chunk(finish=reason)), st.sampled_from(["stop", "length"])),
    st.builds(lambda value: sse_event(chunk({"content": value})), json_values),
    st.builds(lambda calls: sse_event(chunk({"tool_calls": calls})), json_values),
    st.builds(lambda usage: sse_event({**CHUNK, "choices": [], "usage": usage}), json_values),
    st.builds(lambda value: sse_event({"choices": value}), json_values),
    st.just(sse_event({"error": {"message": "boom"}})),
    st.just(b"data: [DONE]\n\n"),
)
anthropic_events = st.one_of(
    st.builds(
        lambda name: sse_event({"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": name, "input": {}}},
            "content_block_start"),
        call_names,
    ),
    st.just(sse_event({"type": "message_start", "message": {"usage": {"input_tokens": 1}}},
                      "message_start")),
    st.builds(
        lambda text: sse_event({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": text}},
                               "content_block_delta"),
        st.text(max_size=12),
    ),
    st.builds(
        lambda value: sse_event({"type": "content_block_delta", "index": 0, "delta": value},
                                "content_block_delta"),
        json_values,
    ),
    st.builds(
        lambda reason: sse_event({"type": "message_delta", "delta": {"stop_reason": reason},
                                  "usage": {"output_tokens": 1}}, "message_delta"),
        st.sampled_from(["end_turn", "max_tokens", 5]),
    ),
    st.builds(lambda value: sse_event(value, "message_delta"), json_values),
    st.just(sse_event({"type": "ping"}, "ping")),
    st.just(sse_event({"type": "error", "error": {"message": "boom"}}, "error")),
    st.just(sse_event({"type": "message_stop"}, "message_stop")),
    # The input of the tool_use block at index 1, in pieces, and the block's end.
    st.builds(
        lambda piece: sse_event({"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": piece}},
                                "content_block_delta"),
        st.one_of(st.sampled_from(['{"city": ', '"Paris"', "}", "{}", "[1]", " ", "NaN"]),
                  st.text(max_size=6), json_values),
    ),
    st.just(sse_event({"type": "content_block_stop", "index": 1}, "content_block_stop")),
)  # fmt: skip
damage = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"data: {nope\n\n", b"data:\n\n", b"\r\n\r\n", b": keepalive\n\n",
         b"data: " + b"x" * 5000 + b"\n\n", b"event: \xff\ndata: 1\n\n"]
    ),
)  # fmt: skip

good_status = b"HTTP/1.1 200 OK"
odd_statuses = st.sampled_from(
    [
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
        b"HTTP/1.1 429 Too Many",
        b"HTTP/1.1 500 Oops",
        b"HTTP/1.1 302 Found",
        b"HTTP/1.1 101 Switching Protocols",
        b"HTTP/1.1 abc OK",
        b"HTTP/9.9 200 OK",
        b"garbage",
        b"",
    ]
)
content_types = st.sampled_from(
    [b"Content-Type: text/event-stream"] * 4
    + [b"Content-Type: application/json", b"Content-Type: text/plain"]
)
odd_headers = st.sampled_from(
    [
        b"Connection: close",
        b"Content-Encoding: gzip",
        b"Transfer-Encoding: gzip, chunked",
        b"Content-Length: 3",
        b"Content-Length: -1",
        b"Content-Length: 99999999999999999999999",
        b"Content-Length: 1, 2",
        b"Retry-After: soon",
        b"Retry-After: 7",
        b"X-Long: " + b"a" * 70_000,
        b"No colon here",
        b"Bad\x00Name: x",
        b": empty name",
    ]
)


@attrs.frozen
class Answer:
    """One scripted answer: a head, a body (chunked or not), the pieces it is written in, and
    what the upstream does after."""

    status: bytes
    headers: tuple[bytes, ...]
    body: bytes
    chunked: bool
    cuts: tuple[int, ...]  # byte offsets where one write ends and the next begins
    then: str  # "close", "stay" (keep the connection open) or "hang" (also before the end)

    def wire(self) -> bytes:
        headers = list(self.headers)
        body = self.body
        if self.chunked:
            headers.append(b"Transfer-Encoding: chunked")
            body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        elif not any(h.lower().startswith(b"content-length") for h in headers):
            headers.append(f"Content-Length: {len(body)}".encode())
        head = b"\r\n".join([self.status, *headers]) + b"\r\n\r\n"
        return head + body

    def pieces(self) -> list[bytes]:
        wire = self.wire()
        if self.then == "hang":
            wire = wire[: len(wire) // 2]
        edges = sorted({0, *(c % (len(wire) + 1) for c in self.cuts), len(wire)})
        return [wire[a:b] for a, b in itertools.pairwise(edges) if b > a]


@st.composite
def answers(draw: st.DrawFn, api: str) -> Answer:
    """Mostly a 200 event stream of the format's events; now and then an odd status, odd
    headers, damaged events or no terminator."""
    events = openai_events if api == "openai" else anthropic_events
    status = draw(odd_statuses) if draw(st.integers(0, 4)) == 0 else good_status
    headers = [draw(content_types)]
    if draw(st.integers(0, 3)) == 0:
        headers += draw(st.lists(odd_headers, min_size=1, max_size=2))
    pieces = draw(st.lists(events, max_size=8))
    if draw(st.integers(0, 3)) == 0:
        pieces.insert(draw(st.integers(0, len(pieces))), draw(damage))
    if api == "openai" and draw(st.booleans()):
        pieces.append(b"data: [DONE]\n\n")
    return Answer(
        status,
        tuple(headers),
        b"".join(pieces),
        draw(st.booleans()),
        tuple(draw(st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))),
        draw(st.sampled_from(["close", "stay", "stay", "hang"])),
    )


# -- the upstream ------------------------------------------------------------------------------


class Upstream:
    """A raw server that writes the answer it was given to each request, piece by piece."""

    def __init__(self) -> None:
        self.answer: Answer | None = None
        self.port = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                answer = self.answer
                assert answer is not None
                for piece in answer.pieces():
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                if answer.then == "close":
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def aclose(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    await server.start()
    yield server
    await server.aclose()


def config(upstream: Upstream, api: str) -> ProviderConfig:
    base = f"http://127.0.0.1:{upstream.port}" + ("/v1" if api == "openai" else "")
    return ProviderConfig(
        id="fake",
        api="openai-completions" if api == "openai" else "anthropic-messages",
        base_url=base,
        api_key="sk-fuzz",
        headers={},
        models=(ModelEntry("fake-model", max_tokens=None),),
    )


async def one_turn(provider: Provider, upstream: Upstream, api: str) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []
    async with asyncio.timeout(BOUND_S):
        await provider.stream(provider_request(config(upstream, api), params=TOOLS), events.append)
    # A call goes under a name a client may send back, whatever the upstream named it.
    names = [e.name for e in events if isinstance(e, ToolCallDelta) and e.name is not None]
    assert all(TOOL_NAME_RE.fullmatch(name) for name in names), names
    return events


class TestWhateverTheUpstreamAnswers:
    @fuzz(250)
    @given(data=st.data(), api=st.sampled_from(["openai", "anthropic"]))
    async def test_the_turn_ends_with_its_reply_or_an_upstream_error(
        self, upstream: Upstream, data: st.DataObject, api: str
    ) -> None:
        answer = data.draw(answers(api))
        client = UpstreamClient()
        provider: Provider = (
            OpenAICompletionsProvider(client, TIMEOUTS)
            if api == "openai"
            else AnthropicMessagesProvider(client, TIMEOUTS)
        )
        upstream.answer = answer
        try:
            try:
                events = await one_turn(provider, upstream, api)
            except UpstreamError as exc:
                event(f"{api}: {type(exc).__name__}")
            else:
                event(f"{api}: a reply")
                assert isinstance(events[-1], Finish) or any(isinstance(e, Finish) for e in events)
                if api == "anthropic":
                    # Anthropic's input is an object: a call's arguments are one, whatever
                    # pieces of it came.
                    calls: dict[int, str] = {}
                    for e in events:
                        if isinstance(e, ToolCallDelta):
                            calls[e.index] = calls.get(e.index, "") + e.arguments
                    for arguments in calls.values():
                        assert type(json.loads(arguments)) is dict, calls
            # Whatever happened, the client is in order: at most the one connection idle,
            # and a pooled one carries a good answer next. (Not after a server that closes
            # right after a whole answer without `Connection: close`: the request may go out
            # before its FIN is read, and fail, as it would with aiohttp's client.)
            assert client.idle_connections <= 1
            if client.idle_connections and answer.then == "stay":
                upstream.answer = GOOD[api]
                events = await one_turn(provider, upstream, api)
                assert any(isinstance(e, Finish) for e in events)
        finally:
            await client.aclose()


input_pieces = st.lists(
    st.one_of(
        st.sampled_from(['{"city": ', '"Paris"', "}", "{}", "[1]", " ", "NaN", "1e400", '{"a":']),
        st.text(max_size=6),
    ),
    max_size=5,
)


class TestAnthropicToolInput:
    @fuzz(100)
    @given(pieces=input_pieces, block_stop=st.booleans(), late=st.booleans())
    async def test_a_calls_arguments_are_an_object_or_the_turn_fails(
        self, upstream: Upstream, pieces: list[str], block_stop: bool, late: bool
    ) -> None:
        """Whatever input_json_delta pieces come (cut short, no object, after the block's
        end, a block that never ends), a finished reply's call has an object as arguments."""
        use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}

        def piece_event(piece: str) -> bytes:
            delta = {"type": "input_json_delta", "partial_json": piece}
            body = {"type": "content_block_delta", "index": 1, "delta": delta}
            return sse_event(body, "content_block_delta")

        body = [
            sse_event({"type": "message_start", "message": {"usage": {"input_tokens": 1}}},
                      "message_start"),
            sse_event({"type": "content_block_start", "index": 1, "content_block": use},
                      "content_block_start"),
            *(piece_event(piece) for piece in pieces),
        ]  # fmt: skip
        if block_stop:
            body.append(sse_event({"type": "content_block_stop", "index": 1}, "content_block_stop"))
        if late:
            body.append(piece_event('{"late": 1}'))
        body += [
            sse_event({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                       "usage": {"output_tokens": 1}}, "message_delta"),
            sse_event({"type": "message_stop"}, "message_stop"),
        ]  # fmt: skip
        upstream.answer = attrs.evolve(GOOD["anthropic"], body=b"".join(body))
        client = UpstreamClient()
        try:
            events = await one_turn(
                AnthropicMessagesProvider(client, TIMEOUTS), upstream, "anthropic"
            )
        except UpstreamError:
            return
        finally:
            await client.aclose()
        arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
        assert type(json.loads(arguments)) is dict, (pieces, arguments)


GOOD = {
    "openai": Answer(
        b"HTTP/1.1 200 OK",
        (b"Content-Type: text/event-stream",),
        sse_event(chunk({"content": "ok"})) + sse_event(chunk(finish="stop")) + b"data: [DONE]\n\n",
        True,
        (),
        "stay",
    ),
    "anthropic": Answer(
        b"HTTP/1.1 200 OK",
        (b"Content-Type: text/event-stream",),
        sse_event(
            {"type": "message_start", "message": {"usage": {"input_tokens": 1}}}, "message_start"
        )
        + sse_event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "ok"},
            },
            "content_block_delta",
        )
        + sse_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 1},
            },
            "message_delta",
        )
        + sse_event({"type": "message_stop"}, "message_stop"),
        True,
        (),
        "stay",
    ),
}
