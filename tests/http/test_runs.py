"""Turns over real fake upstreams: failures mapped per §8, streams cut by the client or by
shutdown, and what the session keeps afterwards."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, ClassVar

import pytest

from agents.providers.pool import Timeouts
from agents.runs import RUNNING
from gateway.appkeys import STATE
from gateway.state import AppOptions
from tests.support.http_client import (
    AUTH,
    CHAT,
    HI,
    Client,
    MakeClient,
    NoErrorLogs,
    fake_provider,
    normalised,
    session_runs,
    stored_messages,
)
from tests.support.upstreams import FakeOpenAI, Raw, Stall, Status, Stream, closed_port

ROLE = (
    'data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,'
    '"model":"openclaw","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    '"logprobs":null,"finish_reason":null}]}\n\n'
)
DONE = "data: [DONE]\n\n"


def content(text: str) -> str:
    return (
        'data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,'
        f'"model":"openclaw","choices":[{{"index":0,"delta":{{"content":{json.dumps(text)}}},'
        '"logprobs":null,"finish_reason":null}]}\n\n'
    )


def finish(reason: str = "stop") -> str:
    return (
        'data: {"id":"chatcmpl-<32hex>","object":"chat.completion.chunk","created":<unix>,'
        f'"model":"openclaw","choices":[{{"index":0,"delta":{{}},"logprobs":null,'
        f'"finish_reason":"{reason}"}}]}}\n\n'
    )


def error_body(message: str, type_: str = "api_error", code: str | None = None) -> str:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        separators=(",", ":"),
    )


async def post(
    client: Client, body: Any = HI, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    response = await client.post(CHAT, data=json.dumps(body), headers={**AUTH, **(headers or {})})
    return response.status, await response.text(), response.headers


@pytest.fixture
async def on_upstream(gateway: MakeClient, upstream: FakeOpenAI) -> Client:
    """The gateway with agent `main` on the fake OpenAI upstream."""
    return await gateway(fake_provider(upstream))


class TestUpstreamFailures:
    async def test_429_passes_retry_after_on(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(429, {"Retry-After": "7"}))
        status, text, headers = await post(on_upstream)
        assert (status, text) == (
            429,
            error_body("upstream provider rate limited", "rate_limit_error"),
        )
        assert headers["Retry-After"] == "7"
        assert headers["x-openclaw-session-key"].startswith("agent:main:openai:")

    @pytest.mark.parametrize(
        "hint",
        [
            {"Retry-After": "1e30"},
            {"retry-after-ms": "1e40"},
            {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
        ],
    )
    async def test_an_absurd_retry_after_is_capped_at_a_day(
        self, on_upstream: Client, upstream: FakeOpenAI, hint: dict[str, str]
    ) -> None:
        # Passed on as it was, `1e30` told our client to wait a 31-digit number of seconds.
        upstream.script(Status(429, hint))
        status, _, headers = await post(on_upstream)
        assert (status, headers["Retry-After"]) == (429, "86400")

    async def test_a_rate_limit_inside_a_200_stream_is_a_502(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        # As OpenRouter sends it: the 200 went out, the upstream's 429 is the first event.
        # Spec §6.5: an in-stream error is an upstream error, whatever status it names.
        upstream.script(Raw((b'data: {"error": {"code": 429, "message": "slow down"}}\n\n',)))
        status, text, headers = await post(on_upstream)
        assert (status, text) == (502, error_body("upstream provider error"))
        assert "Retry-After" not in headers

    async def test_401_is_a_502_upstream_auth_failure(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(401))
        assert (await post(on_upstream))[:2] == (
            502,
            error_body("upstream provider authentication failed", code="upstream_auth_failed"),
        )

    async def test_500_is_a_502(self, on_upstream: Client, upstream: FakeOpenAI) -> None:
        upstream.script(Status(500))
        assert (await post(on_upstream))[:2] == (502, error_body("upstream provider error"))

    async def test_a_refused_connection_is_a_502(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        settings = fake_provider(upstream)
        settings["models"]["providers"]["fake"]["baseUrl"] = f"http://127.0.0.1:{closed_port()}/v1"
        client = await gateway(settings)
        assert (await post(client))[:2] == (502, error_body("upstream provider error"))

    async def test_a_silent_upstream_is_a_504(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(
            fake_provider(upstream),
            AppOptions(provider_timeouts=Timeouts(connect=1.0, idle=0.2)),
        )
        upstream.script(Stall())
        assert (await post(client))[:2] == (504, error_body("upstream provider timeout"))

    @pytest.mark.parametrize("status", [404, 500, 503])
    async def test_details_never_reach_the_client(
        self, on_upstream: Client, upstream: FakeOpenAI, status: int
    ) -> None:
        upstream.script(Status(status))
        answer = await post(on_upstream)
        assert answer[:2] == (502, error_body("upstream provider error"))

    async def test_an_error_inside_a_stream_after_the_first_delta_13_4(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("[turn", " 1]"), error_after=1))
        status, text, _ = await post(on_upstream, {**HI, "stream": True})
        assert status == 200
        assert normalised(text) == (
            ROLE + content("[turn") + f"data: {error_body('upstream provider error')}\n\n" + DONE
        )

    async def test_a_failure_before_any_text_of_a_stream_is_in_band_too(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(429, {"Retry-After": "7"}))
        _, text, _ = await post(on_upstream, {**HI, "stream": True})
        assert normalised(text) == (
            ROLE
            + f"data: {error_body('upstream provider rate limited', 'rate_limit_error')}\n\n"
            + DONE
        )


REFUSAL = "upstream provider refused the request (HTTP 400): max_tokens is too large: 99999."


class TestRefusedByTheUpstream:
    """An upstream that refuses the request as bad (400, 413, 422: a `max_tokens` above the
    model's limit, a schema it does not take) gives its reason to the client, whose request
    it is: still §8's 502, its message saying why, the provider's credentials scrubbed
    (the reason is read as for embeddings: agents.providers.upstream.refusal_reason)."""

    BODY = json.dumps({"error": {"message": "max_tokens is too large:\n99999.", "code": None}})

    async def test_the_reason_is_in_the_json_error(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(400, body=self.BODY))
        assert (await post(on_upstream))[:2] == (502, error_body(REFUSAL))

    @pytest.mark.parametrize(
        ("status", "body", "reason"),
        [
            (422, {"detail": "response_format: unsupported"}, "response_format: unsupported"),
            (413, {"error": "prompt too long"}, "prompt too long"),
            (400, {"object": "error", "message": "bad schema", "code": 400}, "bad schema"),
        ],
    )
    async def test_each_shape_and_status(
        self, on_upstream: Client, upstream: FakeOpenAI, status: int, body: Any, reason: str
    ) -> None:
        upstream.script(Status(status, body=json.dumps(body)))
        message = f"upstream provider refused the request (HTTP {status}): {reason}"
        assert (await post(on_upstream))[:2] == (502, error_body(message))

    async def test_the_key_is_scrubbed_and_the_reason_bounded(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        echoed = "key sk-test-\\u006bey " + "x" * 1000
        upstream.script(Status(400, body=f'{{"error": {{"message": "{echoed}"}}}}'))
        _, text, _ = await post(on_upstream)
        message = json.loads(text)["error"]["message"]
        assert "sk-test-key" not in message
        assert message == (
            "upstream provider refused the request (HTTP 400): "
            + ("key [redacted] " + "x" * 1000)[:300]
            + "…"
        )

    async def test_without_a_reason_it_says_the_status(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(400, body="<html>Bad Request</html>"))
        message = "upstream provider refused the request (HTTP 400)"
        assert (await post(on_upstream))[:2] == (502, error_body(message))

    async def test_a_refusal_the_upstream_streamed_with_a_200_says_why_too(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        """OpenRouter sends an upstream's refusal as an error event in a 200 stream."""
        error = {"error": {"message": "max_tokens is too large:\n99999.", "code": 400}}
        upstream.script(Raw((f"data: {json.dumps(error)}\n\n".encode(),)))
        _, text, _ = await post(on_upstream, {**HI, "stream": True})
        assert normalised(text) == ROLE + f"data: {error_body(REFUSAL)}\n\n" + DONE
        upstream.script(Raw((json.dumps(error).encode(),), content_type="application/json"))
        assert (await post(on_upstream))[:2] == (502, error_body(REFUSAL))

    async def test_a_stream_has_it_in_its_error_event(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(400, body=self.BODY))
        status, text, _ = await post(on_upstream, {**HI, "stream": True})
        assert status == 200
        assert normalised(text) == ROLE + f"data: {error_body(REFUSAL)}\n\n" + DONE


class TestUpstreamReplies:
    async def test_an_empty_reply_reads_no_response(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(()))
        _, text, _ = await post(on_upstream)
        assert json.loads(text)["choices"][0]["message"]["content"] == "No response from OpenClaw."

    async def test_an_empty_streamed_reply_gets_one_content_chunk(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(()))
        _, text, _ = await post(on_upstream, {**HI, "stream": True})
        assert normalised(text) == ROLE + content("No response from OpenClaw.") + finish() + DONE

    async def test_reported_usage_and_finish_reason(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("a", "b"), finish="length", usage=(11, 2)))
        body = json.loads((await post(on_upstream))[1])
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}

    async def test_duplicate_deltas_are_kept(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("ha", "ha", "ha")))
        _, text, _ = await post(on_upstream, {**HI, "stream": True})
        assert normalised(text) == ROLE + content("ha") * 3 + finish() + DONE

    async def test_sampling_fields_reach_the_provider(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        body = {**HI, "temperature": 0.5, "seed": 9, "stop": ["\n"], "max_completion_tokens": 7}
        assert (await post(on_upstream, body))[0] == 200
        sent = upstream.last.body
        assert (sent["temperature"], sent["seed"], sent["stop"]) == (0.5, 9, ["\n"])
        assert sent["max_completion_tokens"] == 7

    async def test_a_png_data_uri_reaches_the_provider(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()
        uri = f"data:image/png;base64,{png}"
        parts = [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": uri, "detail": "low"}},
        ]
        status, _, _ = await post(on_upstream, {"messages": [{"role": "user", "content": parts}]})
        assert status == 200
        assert upstream.last.body["messages"][-1] == {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": uri}},
            ],
        }

    async def test_the_system_text_reaches_the_provider(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        messages = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]
        await post(on_upstream, {"messages": messages})
        assert upstream.last.body["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ]


async def raw_stream(client: Client, version: str) -> bytes:
    """What comes back on the socket for a streamed chat request in HTTP/`version`, read to
    the connection's end: the answer's head and its body as it is framed on the wire."""
    body = json.dumps({**HI, "stream": True}).encode()
    lines = [f"POST {CHAT} HTTP/{version}", "Host: 127.0.0.1", "Connection: close"]
    lines += [*(f"{k}: {v}" for k, v in AUTH.items()), f"Content-Length: {len(body)}"]
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


class TestDeltasWrittenAsTheyCome:
    """Deltas that come apart are written from the upstream's read (`DirectWrites`), past
    aiohttp's awaited write: on the wire each is its own HTTP chunk, framed as aiohttp frames
    the others, and the chunked body ends as it should; over HTTP/1.0 the bytes go as they
    are, up to the close."""

    DELTAS = ("one", " two", " three")
    SSE = ROLE + "".join(content(d) for d in DELTAS) + finish() + DONE

    async def test_each_delta_is_one_chunk_of_the_body(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(self.DELTAS, delay=0.05))
        raw = await raw_stream(on_upstream, "1.1")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head
        chunks = []
        while True:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            assert body[size : size + 2] == b"\r\n"
            chunks.append(body[:size].decode())
            body = body[size + 2 :]
        assert body == b"\r\n"  # the last chunk, no trailers, nothing after it
        assert normalised("".join(chunks)) == self.SSE
        # The deltas after the first (which may go out with the role chunk, or by the
        # relay's loop) each came in a read of their own: one chunk each, one event each.
        assert [normalised(c) for c in chunks if '"content":" t' in c] == [
            content(" two"),
            content(" three"),
        ]

    async def test_over_http_1_0_the_events_are_the_body(
        self, on_upstream: Client, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(self.DELTAS, delay=0.05))
        raw = await raw_stream(on_upstream, "1.0")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ") and b"Transfer-Encoding" not in head
        assert normalised(body.decode()) == self.SSE


class TestClientDisconnect:
    async def test_a_cut_stream_cancels_the_upstream_and_the_session_goes_on(
        self, on_upstream: Client, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
    ) -> None:
        upstream.script(Stream(("Hel", "lo", " there"), delay=10.0))
        session = {"x-openclaw-session-key": "cut"}
        with NoErrorLogs(caplog) as logs:
            response = await on_upstream.post(
                CHAT, data=json.dumps({**HI, "stream": True}), headers={**AUTH, **session}
            )
            assert b'"role":"assistant"' in await response.content.readuntil(b"\n\n")
            assert b'"content":"Hel"' in await response.content.readuntil(b"\n\n")
            response.close()
            await upstream.last.wait_gone(within=1.0)

            loop = asyncio.get_running_loop()
            started = loop.time()
            status, _, _ = await post(on_upstream, HI, session)
            assert status == 200 and loop.time() - started < 1.0
        assert logs.errors() == []
        # The aborted turn was stored, partial text and all; asked again word for word, the
        # next turn replaces it in the model's context (a question twice confuses it).
        assert upstream.last.body["messages"] == [{"role": "user", "content": "hello there"}]
        first_reply = (await stored_messages(on_upstream, "agent:main:cut"))[1]
        assert (first_reply.text, first_reply.aborted) == ("Hel", True)

    async def test_a_non_streaming_client_that_leaves_cancels_the_upstream(
        self, on_upstream: Client, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
    ) -> None:
        upstream.script(Stream(("Hel", "lo"), delay=10.0))
        session = {"x-openclaw-session-key": "gone"}
        with NoErrorLogs(caplog) as logs:
            request = asyncio.create_task(post(on_upstream, HI, session))
            await upstream.wait_for_requests(1)
            request.cancel()  # aiohttp's client closes the connection
            with pytest.raises(asyncio.CancelledError):
                await request
            await upstream.last.wait_gone(within=1.0)
            assert (await post(on_upstream, HI, session))[0] == 200
        assert logs.errors() == []
        assert [m.aborted for m in await stored_messages(on_upstream, "agent:main:gone")] == [
            False,
            True,
            False,
            False,
        ]

    @staticmethod
    async def _cut_then_next_turn(client: Client, key: str) -> float:
        """Cut a stream after its first word, then stream the session's next turn: the
        seconds until that turn started (its first word), after checking it is turn 2 (it
        asks something else: the same again would replace the cut turn)."""
        session = {"x-openclaw-session-key": key}
        data = json.dumps({**HI, "stream": True})
        response = await client.post(CHAT, data=data, headers={**AUTH, **session})
        await response.content.readuntil(b"\n\n")
        assert b"[turn" in await response.content.readuntil(b"\n\n")
        response.close()
        loop = asyncio.get_running_loop()
        cut_at = loop.time()
        data = json.dumps({"messages": [{"role": "user", "content": "next"}], "stream": True})
        async with client.post(CHAT, data=data, headers={**AUTH, **session}) as second:
            await second.content.readuntil(b"\n\n")
            assert b'"[turn"' in await second.content.readuntil(b"\n\n")
            started_after = loop.time() - cut_at
            assert b'" 2]"' in await second.content.readuntil(b"\n\n")
        return started_after

    # 600 ms between words: a cut turn that went on until its next (failing) write would
    # hold the session that long; the transport watch aborts it within 0.1 s.
    SLOW_ECHO: ClassVar[dict[str, Any]] = {
        "agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 600}}]}
    }

    async def test_the_echo_session_starts_turn_2_at_once(self, gateway: MakeClient) -> None:
        client = await gateway(self.SLOW_ECHO)
        assert await self._cut_then_next_turn(client, "echo-cut") < 0.4

    async def test_a_handler_cancelled_by_the_server_aborts_its_run(
        self, aiohttp_client: Any, make_app: Any
    ) -> None:
        # aiohttp's own TestServer cancels the handler of a client that leaves (an opt-in
        # that production does not use): the run is aborted on that path too.
        client = await aiohttp_client(make_app(self.SLOW_ECHO))
        assert await self._cut_then_next_turn(client, "cancelled") < 0.4

    async def test_a_client_that_leaves_while_queued_leaves_nothing_behind(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(
            {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 100}}]}}
        )
        session = {"x-openclaw-session-key": "queue"}
        first = asyncio.create_task(post(client, HI, session))
        await session_runs(client, "agent:main:queue", 1)
        queued = await client.post(
            CHAT, data=json.dumps({**HI, "stream": True}), headers={**AUTH, **session}
        )
        await queued.content.readuntil(b"\n\n")  # the role chunk, while queued
        await session_runs(client, "agent:main:queue", 2)
        queued.close()
        # Aborted while the first turn still runs (its four words take 300 ms).
        await session_runs(client, "agent:main:queue", 1, within=0.25)
        await first
        reply = json.loads((await post(client, HI, session))[1])["choices"][0]["message"]
        assert reply["content"] == "[turn 2] hello there"


class TestShutdown:
    async def _running(self, client: Client, key: str) -> None:
        registry = client.app[STATE].registry
        assert registry is not None
        async with asyncio.timeout(2.0):
            while not any(r.state == RUNNING for r in registry.active_runs(key)):
                await asyncio.sleep(0.01)

    @pytest.fixture
    async def slow(self, gateway: MakeClient) -> Client:
        return await gateway(
            {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 5000}}]}}
        )

    async def test_a_stream_aborted_by_shutdown_ends_with_an_in_band_error(
        self, slow: Client
    ) -> None:
        response = await slow.post(
            CHAT,
            data=json.dumps({**HI, "stream": True}),
            headers={**AUTH, "x-openclaw-session-key": "s1"},
        )
        await response.content.readuntil(b"\n\n")
        await response.content.readuntil(b"\n\n")
        registry = slow.app[STATE].registry
        assert registry is not None
        registry.abort_session("agent:main:s1", "shutdown")
        rest = (await response.read()).decode()
        assert rest == f"data: {error_body('gateway is shutting down')}\n\n" + DONE

    async def test_a_waiting_request_aborted_by_shutdown_gets_503(self, slow: Client) -> None:
        request = asyncio.create_task(post(slow, HI, {"x-openclaw-session-key": "s2"}))
        await self._running(slow, "agent:main:s2")
        registry = slow.app[STATE].registry
        assert registry is not None
        registry.abort_session("agent:main:s2", "shutdown")
        status, text, headers = await request
        assert (status, text) == (503, error_body("gateway is shutting down"))
        assert headers["Retry-After"] == "1"

    async def test_a_stream_aborted_by_someone_else_ends_normally(self, slow: Client) -> None:
        response = await slow.post(
            CHAT,
            data=json.dumps({**HI, "stream": True}),
            headers={**AUTH, "x-openclaw-session-key": "s3"},
        )
        await response.content.readuntil(b"\n\n")
        await response.content.readuntil(b"\n\n")
        registry = slow.app[STATE].registry
        assert registry is not None
        registry.abort_session("agent:main:s3", "aborted")  # e.g. a WS chat.abort
        rest = normalised((await response.read()).decode())
        assert rest == finish() + DONE

    async def test_a_waiting_request_whose_session_is_reset_gets_the_text_so_far(
        self, gateway: MakeClient
    ) -> None:
        """An abort someone asked for (a reset, `chat.abort`) ends the answer as a stop: 200,
        the text so far, `finish_reason` "stop" (README, "Aborted by someone else")."""
        client = await gateway(
            {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 200}}]}}
        )
        request = asyncio.create_task(post(client, HI, {"x-openclaw-session-key": "s4"}))
        await self._running(client, "agent:main:s4")
        await asyncio.sleep(0.1)  # the first words out, not the last
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.reset("agent:main:s4")
        status, text, _ = await request
        choice = json.loads(text)["choices"][0]
        assert status == 200 and choice["finish_reason"] == "stop"
        content = choice["message"]["content"]
        assert content and content != "[turn 1] hello there"
        assert "[turn 1] hello there".startswith(content)
