"""Events reach every read-scoped connection, HTTP runs included; a slow consumer is cut off
without slowing anyone else; shutdown closes every socket (ws-protocol.md §9, §10)."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.events import RunEvent
from agents.events_postgres import PostgresEventBus
from gateway.appkeys import STATE
from gateway.ws.events import MAX_REMOTE_CHAT_RUNS, EventFanout
from gateway.ws.handler import WS, shutdown_connections
from gateway.ws.state import WsSettings
from tests.support.configs import merged
from tests.support.counting import CountedData
from tests.support.http_client import fake_provider
from tests.support.turns import turn
from tests.support.upstreams import FakeOpenAI, FakeToolCall, Stream
from tests.support.ws_client import (
    CONFIG,
    SLOW_CONFIG,
    TOKEN,
    Gateway,
    GatewayWs,
    MakeGateway,
    send,
    wire,
)

HTTP_HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def sse_content(body: str) -> tuple[str, str]:
    """The completion id and the concatenated content of an SSE body."""
    completion_id, text = "", ""
    for line in body.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        completion_id = chunk["id"]
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    return completion_id, text


class TestHttpRuns:
    async def test_an_http_stream_and_a_websocket_see_the_same_run(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        response = await gateway.client.post(
            "/v1/chat/completions",
            json={
                "model": "openclaw",
                "stream": True,
                "messages": [{"role": "user", "content": "hello there"}],
            },
            headers={**HTTP_HEADERS, "x-openclaw-session-key": "shared"},
        )
        assert response.status == 200
        completion_id, text = sse_content(await response.text())
        assert text == "[turn 1] hello there"
        final = await ws.event("chat", state="final", runId=completion_id)
        assert final["payload"]["sessionKey"] == "agent:main:shared"
        assert final["payload"]["message"]["content"][0]["text"] == text
        deltas = [
            f["payload"]["data"]["delta"]
            for f in ws.frames
            if f.get("event") == "agent"
            and f["payload"]["runId"] == completion_id
            and f["payload"]["stream"] == "assistant"
        ]
        assert "".join(deltas) == text
        # And the session is the same one for both surfaces.
        history = await ws.ok("chat.history", {"sessionKey": "shared"})
        assert history["messages"][-1]["content"][0]["text"] == text


class TestEventsWithinMaxPayload:
    """hello-ok's `policy.maxPayload` is the largest frame OpenClaw's clients read (they close
    with 1009 on a larger one): a run whose reply grows past it keeps the socket."""

    LIMIT = 100_000
    MARK = "\n...(truncated)..."

    async def connected(self, make_gateway: MakeGateway, upstream: FakeOpenAI) -> GatewayWs:
        """A client of a gateway whose agent's model is `upstream`."""
        upstream.script(Stream(("x" * 30_000,) * 5, delay=0.01))  # 150,000 characters
        config = merged(
            {"gateway": {"auth": {"mode": "token", "token": TOKEN}}}, fake_provider(upstream)
        )
        gateway = await make_gateway(
            json.dumps(config), settings=WsSettings(max_payload=self.LIMIT)
        )
        # Reads frames up to maxPayload, as OpenClaw's; a larger one fails the read.
        ws = await gateway.raw(max_msg_size=self.LIMIT + 1)
        await ws.connect()
        return ws

    async def test_an_agent_answer_over_max_payload_is_cut_with_a_mark(
        self, make_gateway: MakeGateway
    ) -> None:
        async with FakeOpenAI() as upstream:
            ws = await self.connected(make_gateway, upstream)
            frame_id = await ws.request("agent", {"message": "write a lot", "idempotencyKey": "a"})
            assert (await ws.response(frame_id))["payload"]["status"] == "accepted"
            final = await ws.response(frame_id)
            assert final["ok"] is True, final
            assert len(wire(final).encode()) <= self.LIMIT
            [reply] = final["payload"]["result"]["payloads"]
            assert reply["text"].endswith(self.MARK)
            head = reply["text"].removesuffix(self.MARK)
            assert set(head) == {"x"} and self.LIMIT - 1000 < len(head) < self.LIMIT
            assert final["payload"]["status"] == "ok"
            await ws.ws.close()

    async def test_a_reply_over_max_payload_is_cut_with_a_mark_and_the_socket_goes_on(
        self, make_gateway: MakeGateway
    ) -> None:
        async with FakeOpenAI() as upstream:
            ws = await self.connected(make_gateway, upstream)
            with capture_logs() as logs:
                await ws.ok("chat.send", send("big", "write a lot", "big-run"))
                final = await ws.event("chat", state="final", runId="big-run")
                end = await ws.wait_for(
                    lambda f: (
                        f.get("event") == "agent"
                        and f["payload"]["stream"] == "lifecycle"
                        and f["payload"]["data"].get("phase") == "end"
                    )
                )
            assert len(wire(final).encode()) <= self.LIMIT
            [content] = final["payload"]["message"]["content"]
            text = content["text"]
            assert text.endswith("\n...(truncated)...")
            head = text.removesuffix("\n...(truncated)...")
            assert set(head) == {"x"} and self.LIMIT - 1000 < len(head) < self.LIMIT
            assert end["payload"]["runId"] == "big-run"
            # No delta after the one that was cut: its text would be the same.
            deltas = [
                f["payload"]
                for f in ws.frames
                if f.get("event") == "chat" and f["payload"]["state"] == "delta"
            ]
            assert deltas[-1]["deltaText"] == "\n...(truncated)..."
            assert all(not d["deltaText"].endswith(")...") for d in deltas[:-1])
            [line] = [e for e in logs if e["event"] == "ws_event_too_large"]
            assert (line["run_id"], line["limit"], line["log_level"]) == (
                "big-run",
                self.LIMIT,
                "warning",
            )
            assert (await ws.ok("health"))["ok"] is True
            await ws.ws.close()


class TestSlowConsumer:
    async def test_a_burst_of_reasoning_is_dropped_for_a_reader_that_cannot_keep_up(
        self, make_gateway: MakeGateway
    ) -> None:
        # Each `thinking` event carries the reasoning so far, as an `assistant` event carries
        # the text: a model's reasoning that arrives in a burst (here 300 pieces at once, some
        # 45 MB of events) fills a queue faster than any client reads it.
        async with FakeOpenAI() as upstream:
            upstream.script(Stream(("the answer",), reasoning=("r" * 1000,) * 300))
            config = merged(
                {"gateway": {"auth": {"mode": "token", "token": TOKEN}}}, fake_provider(upstream)
            )
            gateway = await make_gateway(
                json.dumps(config), settings=WsSettings(max_buffered_bytes=1024 * 1024)
            )
            ws = await gateway.connected()
            with capture_logs() as logs:
                await ws.ok("chat.send", send("think", "think hard", "think-1"))
                final = await ws.event("chat", state="final", runId="think-1")
            assert final["payload"]["message"]["content"] == [
                {"type": "text", "text": "the answer"}
            ]
            assert not [e for e in logs if e["event"] == "ws_slow_consumer"]
            assert (await ws.ok("health"))["ok"] is True
            await ws.ws.close()

    async def test_a_burst_of_tool_arguments_merges_for_a_reader_that_cannot_keep_up(
        self, make_gateway: MakeGateway
    ) -> None:
        # Each piece of a call's arguments is an `agent` event of its own, some 300 bytes for
        # one character: an upstream that sends them in one burst (here 10,000) fills a queue
        # with 3 MB of events faster than any client reads it. Pieces of one call queued
        # together go out as one event, their deltas joined.
        arguments = '{"text":"' + "a" * 9_990 + '"}'
        async with FakeOpenAI() as upstream:
            call = FakeToolCall("call_big", "write", tuple(arguments))
            upstream.script(Stream(("",), tool_calls=(call,)))
            config = merged(
                {
                    "gateway": {
                        "auth": {"mode": "token", "token": TOKEN},
                        "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
                    }
                },
                fake_provider(upstream),
            )
            gateway = await make_gateway(
                json.dumps(config), settings=WsSettings(max_buffered_bytes=64 * 1024)
            )
            ws = await gateway.connected()
            tool = {"type": "function", "function": {"name": "write"}}
            with capture_logs() as logs:
                answer = await gateway.client.post(
                    "/v1/chat/completions",
                    json={"model": "openclaw", "messages": [{"role": "user", "content": "go"}],
                          "tools": [tool]},
                    headers={**HTTP_HEADERS, "x-openclaw-session-key": "tools"},
                )  # fmt: skip
                assert answer.status == 200, await answer.text()
                final = await ws.event("chat", state="final")
            assert not [e for e in logs if e["event"] == "ws_slow_consumer"]
            updates = [
                f["payload"]["data"]
                for f in ws.frames
                if f.get("event") == "agent"
                and f["payload"]["stream"] == "tool"
                and f["payload"]["data"]["phase"] == "update"
            ]
            assert "".join(u["delta"] for u in updates) == arguments
            assert len(updates) < len(arguments)
            assert {(u["toolCallId"], u["name"], u["index"]) for u in updates} == {
                ("call_big", "write", 0)
            }
            seqs = [f["seq"] for f in ws.frames if f.get("type") == "event" and "seq" in f]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap: nothing dropped
            (content,) = final["payload"]["message"]["content"][-1:]
            assert content["arguments"] == json.loads(arguments)
            assert (await ws.ok("health"))["ok"] is True
            await ws.ws.close()

    def test_tool_pieces_joined_are_the_event_of_their_joined_text(self) -> None:
        fanout = EventFanout(set())
        deltas = ['{"q": "a\\"b', "\n\u00e9\U0001f600", "\u2028</x>", '"}']
        frames = [
            fanout._agent_frame(
                RunEvent(
                    "r1",
                    "agent:main:k",
                    "sid",
                    "main",
                    "tool",
                    n,
                    100 + n,
                    {
                        "phase": "update",
                        "name": "w",
                        "toolCallId": "c1",
                        "index": 0,
                        "delta": delta,
                    },
                )
            )
            for n, delta in enumerate(deltas, 1)
        ]
        assert len({f.merges for f in frames}) == 1 and frames[0].merges is not None
        joined = json.loads(frames[0].merged(7, [f.piece_bytes() for f in frames[1:]]))
        assert joined["seq"] == 7
        assert joined["payload"]["data"] == {
            "phase": "update",
            "name": "w",
            "toolCallId": "c1",
            "index": 0,
            "delta": "".join(deltas),
        }
        assert json.loads(frames[1].render(3))["payload"]["data"]["delta"] == deltas[1]

    async def test_a_client_that_stops_reading_is_closed_and_the_rest_carry_on(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(SLOW_CONFIG, settings=WsSettings(max_buffered_bytes=64 * 1024))
        # A session whose history is a large answer: 200 messages, 100 of 12,000 characters
        # (chat.history keeps them whole), some 1.2 MB.
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:big", "main", 1000)
        for n in range(100):
            row = await store.append_turn(turn(row, f"r{n}", user_text="u" * 12_000))
        with capture_logs() as logs:
            fast = await gateway.connected()
            slow = await gateway.connected()
            await slow.ok("chat.send", send("s", "a b c d e f", "slow-run"))
            # Ask for 48 MB of answers, more than the kernel's buffers hold, and read none.
            for _ in range(40):
                await slow.request("chat.history", {"sessionKey": "big"})
            # The slow client's run and the other client carry on.
            final = await fast.event("chat", state="final", runId="slow-run")
            assert final["payload"]["message"]["content"][0]["text"] == "[turn 1] a b c d e f"
            await fast.ok("chat.send", send("f", "still here", "fast-run"))
            await fast.event("chat", state="final", runId="fast-run")
            async with asyncio.timeout(5):
                while not any(e["event"] == "ws_slow_consumer" for e in logs):
                    await asyncio.sleep(0.02)
            # Reading again, the slow client finds what was already on its way, then the close.
            assert await slow.closed(wait=10) == (1008, "slow consumer")
        warnings = [e for e in logs if e["event"] == "ws_slow_consumer"]
        assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
        presence = await fast.wait_for(
            lambda f: (
                f.get("event") == "presence"
                and any(p["reason"] == "disconnect" for p in f["payload"]["presence"])
            )
        )
        entries = presence["payload"]["presence"]
        assert [p["reason"] for p in entries] == ["self", "disconnect", "connect"]
        assert (await fast.ok("health"))["ok"] is True
        await fast.ws.close()

    async def test_clients_that_stop_reading_share_a_bound_and_the_largest_is_closed(
        self, make_gateway: MakeGateway
    ) -> None:
        # Each may hold its own 64 MiB, but not all of them together: answers queued for
        # every connection are bounded in the process, and over it the connection holding
        # the most is closed as a slow consumer, the rest carry on.
        total = 8 * 1024 * 1024
        settings = WsSettings(max_buffered_bytes=64 * 1024 * 1024, max_buffered_total_bytes=total)
        gateway = await make_gateway(settings=settings)
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:big", "main", 1000)
        for n in range(100):  # chat.history answers of some 1.2 MB
            row = await store.append_turn(turn(row, f"r{n}", user_text="u" * 12_000))
        with capture_logs() as logs:
            fast = await gateway.connected()
            small, large = await gateway.connected(), await gateway.connected()
            # 3.6 MB of answers, then 30 MB (more than the kernel's buffers hold), read by
            # nobody for now.
            asked = [await small.request("chat.history", {"sessionKey": "big"}) for _ in range(3)]
            async with asyncio.timeout(10):
                while sum(e["event"] == "ws_call" for e in logs) < len(asked):
                    await asyncio.sleep(0.02)
            for _ in range(25):
                await large.request("chat.history", {"sessionKey": "big"})
            async with asyncio.timeout(10):
                while not any(e["event"] == "ws_slow_consumer" for e in logs):
                    await asyncio.sleep(0.02)
            await fast.ok("chat.send", send("f", "still here", "fast-run"))
            await fast.event("chat", state="final", runId="fast-run")
            assert await large.closed(wait=20) == (1008, "slow consumer")
            for frame_id in asked:  # the other one finds its answers
                assert (await small.response(frame_id, wait=10))["ok"] is True
            assert (await small.ok("health"))["ok"] is True
        (line,) = [e for e in logs if e["event"] == "ws_slow_consumer"]
        assert line["conn_id"] == large.hello["payload"]["server"]["connId"]  # type: ignore[index]
        assert (line["log_level"], line["total_limit"]) == ("warning", total)
        assert line["total_buffered_bytes"] > total
        await small.ws.close()
        await fast.ws.close()
        ws_state = gateway.app[WS]
        async with asyncio.timeout(5):
            while ws_state.connections:
                await asyncio.sleep(0.02)
        assert (ws_state.answers.held, ws_state.answers.holders) == (0, set())

    async def test_a_client_that_never_reads_again_is_cut_after_the_close_timeout(
        self, make_gateway: MakeGateway
    ) -> None:
        settings = WsSettings(max_buffered_bytes=4 * 1024 * 1024, close_timeout_seconds=0.5)
        gateway = await make_gateway(settings=settings)
        created = await gateway.client.post(
            "/v1/chat/completions",
            json={"model": "openclaw", "messages": [{"role": "user", "content": "x" * 300_000}]},
            headers={**HTTP_HEADERS, "x-openclaw-session-key": "big"},
        )
        assert created.status == 200
        ws_state = gateway.app[WS]
        with capture_logs() as logs:
            slow = await gateway.connected()
            # Ask for answers, slowly enough that the server's buffers fill before its queue
            # does: the close frame then waits behind them, and the client never takes them.
            async with asyncio.timeout(20):
                while not any(e["event"] == "ws_slow_consumer" for e in logs):
                    await slow.request("chat.history", {"sessionKey": "big"})
                    await asyncio.sleep(0.01)
            async with asyncio.timeout(settings.close_timeout_seconds + 3):
                while ws_state.connections:
                    await asyncio.sleep(0.02)
            assert not ws_state.authenticated and not ws_state.readers
        assert any(e["event"] == "ws_disconnected" for e in logs)
        await slow.ws.close()


class TestShutdown:
    async def test_shutdown_event_then_close_1012(self, gateway: Gateway, ws: GatewayWs) -> None:
        raw = await gateway.raw()  # still in its handshake
        await ws.ok("chat.send", send("sd", "goes on", "sd-1"))
        await shutdown_connections(gateway.app)
        await shutdown_connections(gateway.app)  # idempotent
        shutdown = await ws.event("shutdown")
        assert wire({k: v for k, v in shutdown.items() if k != "seq"}) == (
            '{"type":"event","event":"shutdown","payload":{"reason":"gateway stopping",'
            '"restartExpectedMs":null}}'
        )
        assert list(shutdown) == ["type", "event", "payload", "seq"]
        assert await ws.closed() == (1012, "service restart")
        assert await raw.closed() == (1012, "service restart")
        # Closing the sockets aborted nothing.
        registry = gateway.app[STATE].registry
        assert registry is not None
        run = registry.run("sd-1")
        assert run is not None
        outcome = await run.wait()
        assert outcome.stop_reason == "stop"

    async def test_no_new_connections_after_shutdown(self, gateway: Gateway) -> None:
        await shutdown_connections(gateway.app)
        assert gateway.app[WS].closing
        response = await gateway.client.get(
            "/",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert response.status == 503
        assert (await response.json())["error"]["message"] == "gateway is shutting down"


@pytest.mark.postgres
class TestAnotherProcessesRun:
    """Runs of the other processes sharing a PostgreSQL store reach this one's clients through
    the event bus (agents/events_postgres.py)."""

    @pytest.fixture
    async def peer(self, pg_url: str) -> AsyncIterator[PostgresEventBus]:
        """Another gateway process's end of the bus."""
        bus = PostgresEventBus(pg_url)
        await bus.start(lambda key, run_id: [])
        yield bus
        await bus.aclose()

    async def test_one_whose_process_died_mid_turn_is_forgotten_after_a_silence(
        self, make_gateway: MakeGateway, pg_url: str, peer: PostgresEventBus
    ) -> None:
        config = CONFIG.replace(
            "agents:", f'store: {{ backend: "postgres", url: {json.dumps(pg_url)} }},\n  agents:'
        )
        gateway = await make_gateway(config)
        fanout = gateway.app[WS].fanout
        fanout.remote_idle_seconds = 0.5
        ws = await gateway.connected()
        async with asyncio.timeout(10):
            while not peer.watched_elsewhere:
                await asyncio.sleep(0.05)
        data = {"text": "half a repl", "delta": "half a repl"}
        peer.publish(RunEvent("peer-1", "agent:main:k", "sid", "main", "assistant", 1, 1, data))
        delta = await ws.event("chat", runId="peer-1", state="delta")
        assert delta["payload"]["message"]["content"] == [{"type": "text", "text": "half a repl"}]
        assert fanout.chat_runs == 1
        await peer.aclose()  # its process killed: the run's end never comes
        async with asyncio.timeout(5):
            while fanout.chat_runs:
                await asyncio.sleep(0.05)
        await ws.ws.close()


class TestLongReplies:
    async def test_a_run_nobody_here_reads_costs_no_read_of_its_text_per_piece(self) -> None:
        # An HTTP-only gateway: every run event passes the fan-out, which reads the text so
        # far only for a chat delta it sends, and at the end.
        fanout = EventFanout(set())
        pieces = [f"{n:05d} " for n in range(4000)]
        CountedData.read = 0
        for seq, data in enumerate(CountedData.stream(pieces), start=1):
            fanout(RunEvent("r1", "agent:main:k", "sid", "main", "assistant", seq, 1, data))
        end = {"phase": "end", "stopReason": "stop", "aborted": False}
        fanout(RunEvent("r1", "agent:main:k", "sid", "main", "lifecycle", 4001, 2, end))
        assert CountedData.read <= len("".join(pieces))  # was 48 million characters
        assert fanout.chat_runs == 0
        fanout.close()

    async def test_a_reply_past_max_payload_is_not_encoded_again_for_each_piece(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        # Every `agent` event of a reply past maxPayload is dropped; each was encoded first,
        # its whole text so far, to find that out.
        fanout = gateway.app[WS].fanout
        fanout.max_payload = limit = 10_000
        pieces = [f"{n:05d} " for n in range(4000)]
        stream = CountedData.stream(pieces)
        CountedData.read = 0
        with capture_logs() as logs:
            for seq, data in enumerate(stream, start=1):
                fanout(RunEvent("big", "agent:main:k", "sid", "main", "assistant", seq, 1, data))
            end = {"phase": "end", "stopReason": "stop", "aborted": False}
            fanout(RunEvent("big", "agent:main:k", "sid", "main", "lifecycle", 4001, 2, end))
        final = await ws.event("chat", state="final", runId="big")
        assert final["payload"]["message"]["content"][0]["text"].endswith("(truncated)...")
        within = sum(data.length for data in stream if data.length <= limit)
        total = stream[-1].length
        # Those within it, the first past it, and a few chat events' (all of 48 MB before).
        assert CountedData.read <= within + limit + 4 * total
        assert [e["event"] for e in logs] == ["ws_event_too_large"]

    async def test_a_burst_past_a_readers_bound_is_not_encoded_again_for_each_piece(
        self, make_gateway: MakeGateway
    ) -> None:
        # A reply delivered in one go (the echo provider's, an upstream chunk of many pieces)
        # fills a reader's queue before its writer runs; every later `agent` event is
        # dropped for it, and each was encoded first, its whole text so far.
        bound = 1_000_000
        gateway = await make_gateway(settings=WsSettings(max_buffered_bytes=bound))
        ws = await gateway.connected()
        fanout = gateway.app[WS].fanout
        pieces = [f"{n:05d} " for n in range(4000)]
        stream = CountedData.stream(pieces)
        CountedData.read = 0
        for seq, data in enumerate(stream, start=1):
            fanout(RunEvent("burst", "agent:main:k", "sid", "main", "assistant", seq, 1, data))
        # Those it queued (a bound's worth) and the first chat delta's; all of 48 MB before.
        assert CountedData.read <= 2 * bound
        first = await ws.event("agent", runId="burst")
        assert first["payload"]["data"] == dict(stream[0])
        assert (await ws.ok("health"))["ok"] is True
        await ws.ws.close()

    async def test_a_reader_behind_on_a_burst_loses_deltas_not_its_connection(
        self, make_gateway: MakeGateway
    ) -> None:
        # A reply delivered in one go fills a reader's queue with `agent` deltas (each the
        # text so far) before its writer runs; the run's end and its `chat` final then did
        # not fit, and the reader was closed with 1008 `slow consumer`. Queued deltas give
        # way to them: the reader sees a `seq` gap, then the end and the whole final text.
        bound = 64 * 1024
        gateway = await make_gateway(settings=WsSettings(max_buffered_bytes=bound))
        ws = await gateway.connected()
        fanout = gateway.app[WS].fanout
        text = ""
        with capture_logs() as logs:
            for seq in range(1, 2001):
                piece = f"{seq:05d} "
                text += piece
                data = {"text": text, "delta": piece}
                fanout(RunEvent("burst", "agent:main:k", "sid", "main", "assistant", seq, 1, data))
            end = {"phase": "end", "stopReason": "stop"}
            fanout(RunEvent("burst", "agent:main:k", "sid", "main", "lifecycle", 2001, 2, end))
            final = await ws.event("chat", state="final", runId="burst")
        assert final["payload"]["message"]["content"] == [{"type": "text", "text": text}]
        assert await ws.event("agent", runId="burst", stream="lifecycle")
        assert not [e for e in logs if e["event"] == "ws_slow_consumer"]
        seqs = [f["seq"] for f in ws.frames if f.get("type") == "event" and "seq" in f]
        assert seqs == sorted(seqs) and len(seqs) < seqs[-1] - seqs[0] + 1  # a gap
        assert (await ws.ok("health"))["ok"] is True
        await ws.ws.close()

    async def test_readers_behind_on_a_burst_past_the_process_bound_lose_deltas_not_a_socket(
        self, make_gateway: MakeGateway
    ) -> None:
        # The same burst, queued for two readers that read nothing until it is over, past
        # the bound on what all clients queue together (each is well within its own): the
        # run's end and its `chat` final went over it, and the reader holding the most was
        # closed with 1008 `slow consumer`, its queue all deltas. Queued deltas of the
        # largest holders give way first: each reader sees a `seq` gap, then the final.
        total = 256 * 1024
        settings = WsSettings(max_buffered_bytes=64 * 1024 * 1024, max_buffered_total_bytes=total)
        gateway = await make_gateway(settings=settings)
        readers = [await gateway.connected(), await gateway.connected()]
        ws_state = gateway.app[WS]
        fanout = ws_state.fanout
        text = ""
        with capture_logs() as logs:
            for seq in range(1, 2001):
                piece = f"{seq:05d} "
                text += piece
                data = {"text": text, "delta": piece}
                fanout(RunEvent("burst", "agent:main:k", "sid", "main", "assistant", seq, 1, data))
            queued = [conn.buffered_bytes for conn in ws_state.connections]
            end = {"phase": "end", "stopReason": "stop"}
            fanout(RunEvent("burst", "agent:main:k", "sid", "main", "lifecycle", 2001, 2, end))
            assert ws_state.answers.held <= total
            for ws in readers:
                final = await ws.event("chat", state="final", runId="burst")
                assert final["payload"]["message"]["content"] == [{"type": "text", "text": text}]
                assert await ws.event("agent", runId="burst", stream="lifecycle")
                seqs = [f["seq"] for f in ws.frames if f.get("type") == "event" and "seq" in f]
                assert seqs == sorted(seqs) and len(seqs) < seqs[-1] - seqs[0] + 1  # a gap
                assert (await ws.ok("health"))["ok"] is True
        assert min(queued) > total // 2  # each held deltas, shared: together near the bound
        assert not [e for e in logs if e["event"] == "ws_slow_consumer"]
        for ws in readers:
            await ws.ws.close()
        async with asyncio.timeout(5):
            while ws_state.connections:
                await asyncio.sleep(0.02)
        assert (ws_state.answers.held, ws_state.answers.holders) == (0, set())

    async def test_a_tool_calls_arguments_in_tiny_pieces_are_held_in_about_their_size(
        self,
    ) -> None:
        # The chat state keeps a run's calls for its `final`; one by one, its pieces took
        # some 50 bytes each beside their text.
        fanout = EventFanout(set())
        call = {"name": "f", "toolCallId": "c1", "index": 0}
        fanout(
            RunEvent("r1", "agent:main:k", "sid", "main", "tool", 1, 1, {"phase": "start", **call})
        )
        tracemalloc.start()
        try:
            for n in range(100_000):
                data = {"phase": "update", **call, "delta": f"{n % 100:02d}"}
                fanout(RunEvent("r1", "agent:main:k", "sid", "main", "tool", n + 2, 1, data))
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < 3 * 200_000  # was 6 MB for these 200 KB of arguments
        fanout.close()


class TestAnotherProcessesRunsKept:
    async def test_at_most_10000_are_kept_the_longest_silent_forgotten_first(self) -> None:
        fanout = EventFanout(set())
        data = {"text": "t", "delta": "t"}
        for n in range(MAX_REMOTE_CHAT_RUNS + 1):
            fanout.remote(RunEvent(f"r{n}", "agent:main:k", None, "main", "assistant", 1, 1, data))
        assert fanout.chat_runs == MAX_REMOTE_CHAT_RUNS
        fanout.remote(
            RunEvent("r1", "agent:main:k", None, "main", "lifecycle", 2, 2, {"phase": "end"})
        )
        assert fanout.chat_runs == MAX_REMOTE_CHAT_RUNS - 1
        fanout.close()


class _CountedFuture(asyncio.Future[Any]):
    """A future that counts how often it is compared with another or hashed."""

    uses = 0

    def __eq__(self, other: object) -> bool:
        _CountedFuture.uses += 1
        return self is other

    def __hash__(self) -> int:
        _CountedFuture.uses += 1
        return id(self)


class _CountingLoop(asyncio.SelectorEventLoop):
    def create_future(self) -> asyncio.Future[Any]:
        return _CountedFuture(loop=self)


class TestWaitsOnOneRunId:
    """A client may hold many `agent.wait`s on one run id that is not known (64 calls on each
    of its connections): each one that ends stops watching in a few steps, not in a look
    through all the others', which would make n waits cost n² steps."""

    @staticmethod
    async def watched_and_unwatched(waits: int) -> int:
        fanout = EventFanout(set())
        watched = [(fanout.watch_run("never"), fanout.watch_run_end("never")) for _ in range(waits)]
        _CountedFuture.uses = 0
        for first, end in reversed(watched):  # the last one asked ends first
            fanout.unwatch_run("never", first)
            fanout.unwatch_run_end("never", end)
        uses = _CountedFuture.uses
        fanout.close()
        return uses

    def test_n_waits_end_in_linear_steps(self) -> None:
        with asyncio.Runner(loop_factory=_CountingLoop) as runner:
            counts = [runner.run(self.watched_and_unwatched(n)) for n in (500, 1000)]
        assert counts[1] <= 2 * counts[0] + 10, counts  # twice the waits, twice the work
