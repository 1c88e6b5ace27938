"""`chat.send`, `chat.history`, `chat.abort`, `agent`, `agent.wait` and the events of a run
(ws-protocol.md §8, §9, §11; agents-sessions.md §2.4, §2.7)."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
import weakref
from typing import Any

import pytest

from agents.providers.base import ToolCall
from gateway.appkeys import STATE
from gateway.ws.connection import now_ms
from gateway.ws.handler import WS
from gateway.ws.methods import agent as agent_methods
from gateway.ws.methods.chat import RUN_EVENTS_AFTER_ACK, SESSION_QUEUE_MAX
from gateway.ws.protocol import MAX_PAYLOAD
from gateway.ws.state import IdempotencyCache
from tests.support.http_client import fake_provider_entry
from tests.support.turns import turn
from tests.support.upstreams import FakeOpenAI, Status, Stream
from tests.support.ws_client import (
    CONFIG,
    SLOW_CONFIG,
    Gateway,
    GatewayWs,
    MakeGateway,
    hold_store_write,
    leave_while_stored,
    normalized,
    send,
    wire,
)

SLOW_TEXT = " ".join(f"w{i}" for i in range(30))  # 30 deltas at 40 ms: over a second


def run_frames(ws: GatewayWs, run_id: str) -> list[dict[str, Any]]:
    """Every event frame read so far that belongs to the run."""
    out = []
    for frame in ws.frames:
        payload = frame.get("payload")
        if frame.get("type") != "event" or not isinstance(payload, dict):
            continue
        if payload.get("runId") == run_id or (
            frame["event"] == "sessions.changed" and payload.get("reason") == "create"
        ):
            out.append(frame)
    return out


@pytest.fixture
async def slow(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(SLOW_CONFIG)


class TestChatSend:
    async def test_streams_deltas_and_a_final_that_history_then_returns(
        self, ws: GatewayWs
    ) -> None:
        await ws.request("chat.send", send("ws-1", "hello from websocket", "idem-1"), id="s-1")
        assert wire(await ws.response("s-1")) == (
            '{"type":"res","id":"s-1","ok":true,"payload":{"runId":"idem-1","status":"started"}}'
        )
        final = await ws.event("chat", state="final")
        end = await ws.event("sessions.changed", phase="end")
        frames = run_frames(ws, "idem-1")
        shape = [
            (
                f["event"],
                f["payload"].get("stream")
                or f["payload"].get("state")
                or f["payload"].get("phase")
                or f["payload"].get("reason"),
            )
            for f in frames
        ]
        assert shape == [
            ("sessions.changed", "create"),
            ("agent", "lifecycle"),
            ("sessions.changed", "start"),
            ("agent", "lifecycle"),
            ("agent", "assistant"),
            ("chat", "delta"),
            ("agent", "assistant"),
            ("agent", "assistant"),
            ("agent", "assistant"),
            ("agent", "assistant"),
            ("agent", "usage"),
            ("agent", "lifecycle"),
            ("chat", "delta"),
            ("chat", "final"),
            ("sessions.changed", "end"),
        ]
        # The connection's seq: +1 per event frame, after the health event's 1.
        assert [f["seq"] for f in frames] == list(range(2, 2 + len(frames)))
        assert frames[-1] is end
        first_delta = normalized(frames[5])
        assert wire(first_delta) == (
            '{"type":"event","event":"chat","payload":{"runId":"idem-1",'
            '"sessionKey":"agent:main:ws-1","agentId":"main","seq":3,"state":"delta",'
            '"deltaText":"[turn","message":{"role":"assistant","content":[{"type":"text",'
            '"text":"[turn"}],"timestamp":"<timestamp>"}},"seq":7}'
        )
        flushed = frames[12]["payload"]
        assert (flushed["seq"], flushed["deltaText"]) == (9, " 1] hello from websocket")
        assert wire(normalized(final)) == (
            '{"type":"event","event":"chat","payload":{"runId":"idem-1",'
            '"sessionKey":"agent:main:ws-1","agentId":"main","seq":9,"state":"final",'
            '"stopReason":"stop","message":{"role":"assistant","content":[{"type":"text",'
            '"text":"[turn 1] hello from websocket"}],"timestamp":"<timestamp>"}},"seq":15}'
        )
        agent_end = normalized(frames[11])
        assert wire(agent_end) == (
            '{"type":"event","event":"agent","payload":{"runId":"idem-1",'
            '"sessionKey":"agent:main:ws-1","sessionId":"<sessionId>","agentId":"main",'
            '"stream":"lifecycle","seq":9,"ts":"<ts>","data":{"phase":"end",'
            '"startedAt":"<startedAt>","endedAt":"<endedAt>","stopReason":"stop",'
            '"aborted":false},"isHeartbeat":false},"seq":13}'
        )

        history = await ws.ok("chat.history", {"sessionKey": "ws-1"})
        text = final["payload"]["message"]["content"][0]["text"]
        assert history["messages"][-1]["content"] == [{"type": "text", "text": text}]
        assert wire(normalized(history)) == wire(
            {
                "sessionKey": "ws-1",
                "sessionId": "<sessionId>",
                "hasMore": False,
                "totalMessages": 2,
                "messages": [
                    {
                        "role": "user",
                        "content": "hello from websocket",
                        "timestamp": "<timestamp>",
                        "idempotencyKey": "idem-1:user",
                        "__openclaw": {"id": history["messages"][0]["__openclaw"]["id"], "seq": 1},
                    },
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "[turn 1] hello from websocket"}],
                        "api": "echo",
                        "provider": "echo",
                        "model": "echo",
                        "usage": {"input": 3, "output": 5, "totalTokens": 8},
                        "stopReason": "stop",
                        "timestamp": "<timestamp>",
                        "__openclaw": {
                            "id": history["messages"][1]["__openclaw"]["id"],
                            "seq": 2,
                            "runId": "idem-1",
                        },
                    },
                ],
                "defaults": {"modelProvider": "echo", "model": "echo", "contextTokens": None},
                "sessionInfo": normalized(history["sessionInfo"]),
            }
        )
        assert history["sessionInfo"]["key"] == "agent:main:ws-1"

    async def test_v3_deltas_carry_no_delta_text(self, gateway: Gateway) -> None:
        ws = await gateway.connected(minProtocol=3, maxProtocol=3)
        await ws.ok("chat.send", send("v3", "hi there", "v3-1"))
        delta = await ws.event("chat", state="delta")
        assert "deltaText" not in delta["payload"]
        assert list(delta["payload"]) == [
            "runId",
            "sessionKey",
            "agentId",
            "seq",
            "state",
            "message",
        ]
        await ws.ws.close()

    async def test_deltas_are_coalesced_to_one_per_150_ms(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("c", SLOW_TEXT, "co-1"))
        final = await ws.event("chat", state="final")
        deltas = [f for f in run_frames(ws, "co-1") if f["event"] == "chat"][:-1]
        assistant = [f for f in run_frames(ws, "co-1") if f["payload"].get("stream") == "assistant"]
        # 32 assistant events over more than a second; at most one delta per 150 ms of it
        # (plus the first at once and the flush before the final).
        elapsed_ms = assistant[-1]["payload"]["ts"] - assistant[0]["payload"]["ts"]
        assert len(assistant) == 32 and elapsed_ms >= 1000
        assert 3 <= len(deltas) <= elapsed_ms / 150 + 2
        assert (
            "".join(d["payload"]["deltaText"] for d in deltas)
            == (final["payload"]["message"]["content"][0]["text"])
        )
        await ws.ws.close()

    async def test_history_of_an_unknown_session(self, ws: GatewayWs) -> None:
        payload = await ws.ok("chat.history", {"sessionKey": "main"})
        assert list(payload) == [
            "sessionKey",
            "hasMore",
            "totalMessages",
            "messages",
            "defaults",
            "sessionInfo",
        ]
        assert (payload["sessionKey"], payload["totalMessages"], payload["messages"]) == (
            "main",
            0,
            [],
        )
        info = payload["sessionInfo"]
        assert (info["key"], info["isMain"], info["updatedAt"]) == ("agent:main:main", True, None)

    @pytest.mark.parametrize(
        "params", [{"message": "m", "idempotencyKey": "k"}, send("", "m", "k")]
    )
    async def test_a_missing_session_key(self, ws: GatewayWs, params: dict) -> None:
        await ws.request("chat.send", params, id="m-1")
        assert wire(await ws.response("m-1")) == (
            '{"type":"res","id":"m-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            '"message":"session mutation target is unavailable","details":'
            '{"code":"SESSION_MUTATION_TARGET_REQUIRED","method":"chat.send"}}}'
        )

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            (send("a", "", "k"), "message or attachment required"),
            (send("a", "  ", "k"), "message or attachment required"),
            (
                send("a", "m", "k", attachments=[{"type": "image"}]),
                "attachments are not supported yet",
            ),
            (send("agent:ghost:x", "m", "k"), "Unknown agent 'ghost'."),
        ],
    )
    async def test_refused_sends(self, ws: GatewayWs, params: dict, message: str) -> None:
        frame = await ws.call("chat.send", params)
        assert frame["error"] == {"code": "INVALID_REQUEST", "message": message}

    async def test_empty_attachments_thinking_and_deliver_are_ignored(self, ws: GatewayWs) -> None:
        payload = await ws.ok(
            "chat.send", send("a", "m", "ig-1", attachments=[], deliver=False, thinking="low")
        )
        assert payload == {"runId": "ig-1", "status": "started"}
        await ws.event("chat", state="final")

    async def test_openclaws_tui_gets_the_runs_events_in_a_later_read_than_the_ack(
        self, gateway: Gateway
    ) -> None:
        """Echo's run ends within a millisecond: in one read with the acknowledgement,
        OpenClaw's TUI takes its end for a run still to come (RUN_EVENTS_AFTER_ACK)."""
        client = {"id": "openclaw-tui", "version": "2026.9.6", "platform": "linux", "mode": "ui"}
        ws = await gateway.connected(client=client)
        loop = asyncio.get_running_loop()
        await ws.response(await ws.request("chat.send", send("fast", "hi", "fast-1")))
        acknowledged = loop.time()
        first = await ws.wait_for(lambda f: (f.get("payload") or {}).get("runId") == "fast-1")
        assert first["event"] == "agent"
        # Read in this loop: the acknowledgement was read at once, the wait is the writer's.
        assert loop.time() - acknowledged >= RUN_EVENTS_AFTER_ACK * 0.8


class TestAbort:
    async def test_abort_during_a_slow_turn(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("slow", SLOW_TEXT, "ab-1"))
        await ws.event("chat", state="delta")
        assert await ws.ok("chat.abort", {"sessionKey": "slow"}) == {
            "ok": True,
            "aborted": True,
            "runIds": ["ab-1"],
        }
        aborted = await ws.event("chat", state="aborted")
        partial = aborted["payload"]["message"]["content"][0]["text"]
        full = f"[turn 1] {SLOW_TEXT}"
        assert full.startswith(partial) and len(partial) < len(full)
        assert list(aborted["payload"]) == [
            "runId",
            "sessionKey",
            "agentId",
            "seq",
            "state",
            "message",
        ]
        history = await ws.ok("chat.history", {"sessionKey": "slow"})
        last = history["messages"][-1]
        assert (last["aborted"], last["stopReason"]) == (True, "aborted")
        assert last["content"][0]["text"] == partial
        assert await ws.ok("chat.abort", {"sessionKey": "slow", "runId": "ab-1"}) == {
            "ok": True,
            "aborted": False,
            "runIds": [],
        }
        await ws.ws.close()

    async def test_the_same_message_sent_again_after_an_abort_is_given_once(
        self, slow: Gateway
    ) -> None:
        """The Control UI's Abort, then Send again: the aborted turn and its part of a reply
        are stored, but the model is given the message once (echo's turn number counts the
        user messages it was given)."""
        ws = await slow.connected()
        await ws.ok("chat.send", send("slow", SLOW_TEXT, "ab-1"))
        await ws.event("chat", state="delta")
        await ws.ok("chat.abort", {"sessionKey": "slow"})
        aborted = await ws.event("chat", state="aborted")
        assert aborted["payload"]["message"]["content"][0]["text"]
        await ws.ok("chat.send", send("slow", SLOW_TEXT, "ab-2"))
        final = await ws.event("chat", state="final", runId="ab-2")
        assert final["payload"]["message"]["content"][0]["text"] == f"[turn 1] {SLOW_TEXT}"
        await ws.ws.close()

    async def test_abort_by_run_id_and_its_session(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("one", SLOW_TEXT, "rid-1"))
        frame = await ws.call("chat.abort", {"sessionKey": "other", "runId": "rid-1"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "runId does not match sessionKey",
        }
        assert (await ws.ok("chat.abort", {"sessionKey": "one", "runId": "nope"}))[
            "aborted"
        ] is False
        assert (await ws.ok("chat.abort", {"sessionKey": "one", "runId": "rid-1"}))["runIds"] == [
            "rid-1"
        ]
        await ws.event("chat", state="aborted", runId="rid-1")
        await ws.ws.close()

    async def test_stop_command_aborts_the_session(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("st", SLOW_TEXT, "st-1"))
        await ws.event("agent", stream="assistant")
        assert await ws.ok("chat.send", send("st", "/stop", "st-2")) == {
            "ok": True,
            "aborted": True,
            "runIds": ["st-1"],
        }
        await ws.event("chat", state="aborted", runId="st-1")
        assert await ws.ok("chat.send", send("st", "/stop", "st-3")) == {
            "ok": True,
            "aborted": False,
            "runIds": [],
        }
        await ws.ws.close()

    async def test_archiving_aborts_the_session_s_turns_and_stays_archived(
        self, slow: Gateway
    ) -> None:
        """As OpenClaw drains an archived session: its turn stops, and its commit (the
        aborted reply) leaves the session archived."""
        ws = await slow.connected()
        await ws.ok("chat.send", send("ar", SLOW_TEXT, "ar-1"))
        await ws.ok("chat.send", send("ar", "queued", "ar-2"))
        await ws.event("chat", state="delta", runId="ar-1")
        sid = (await ws.ok("sessions.describe", {"key": "ar"}))["session"]["sessionId"]
        patched = await ws.ok(
            "sessions.patch", {"key": "ar", "archived": True, "expectedSessionId": sid}
        )
        assert patched["entry"]["archived"] is True
        await ws.event("chat", state="aborted", runId="ar-1")
        await ws.event("chat", state="aborted", runId="ar-2")
        row = (await ws.ok("sessions.describe", {"key": "ar"}))["session"]
        assert (row["archivedAt"], row["hasActiveRun"]) == (patched["entry"]["archivedAt"], False)
        history = await ws.ok("chat.history", {"sessionKey": "ar"})
        users = [m["content"] for m in history["messages"] if m["role"] == "user"]
        assert users == [SLOW_TEXT]  # the queued turn never ran
        await ws.ws.close()

    async def test_a_turn_aborted_while_queued_ends_with_sessions_changed(
        self, slow: Gateway
    ) -> None:
        """Like a running one (and as OpenClaw, which follows every terminal lifecycle event
        with one): the session's snapshot no longer lists the aborted run."""
        ws = await slow.connected()
        await ws.ok("chat.send", send("q", SLOW_TEXT, "q-1"))
        await ws.event("sessions.changed", phase="start", runId="q-1")
        await ws.ok("chat.send", send("q", "later", "q-2"))  # queued behind q-1
        assert (await ws.ok("chat.abort", {"sessionKey": "q", "runId": "q-2"}))["runIds"] == ["q-2"]
        await ws.event("chat", state="aborted", runId="q-2")
        changed = await ws.event("sessions.changed", runId="q-2")
        assert changed["payload"]["phase"] == "end"
        assert changed["payload"]["session"]["activeRunIds"] == ["q-1"]
        await ws.ok("chat.abort", {"sessionKey": "q"})
        ended = await ws.event("sessions.changed", phase="end", runId="q-1")
        assert ended["payload"]["session"]["activeRunIds"] == []
        await ws.ws.close()

    async def test_a_run_that_outlives_its_socket_does_not_keep_the_connection(
        self, slow: Gateway
    ) -> None:
        # The session's worker, started by the call, goes on after the socket closed: what
        # it carries of the call (its context) must not hold the closed connection.
        ws_state = slow.app[WS]
        ws = await slow.connected()
        [conn] = ws_state.connections
        gone = weakref.ref(conn)
        del conn
        await ws.ok("chat.send", send("outlive", SLOW_TEXT, "outlive-1"))
        await ws.ws.close()
        run = slow.app[STATE].registry.run("outlive-1")  # type: ignore[union-attr]
        assert run is not None
        async with asyncio.timeout(5):
            while gone() is not None:  # the socket's teardown ends
                await asyncio.sleep(0.02)
                gc.collect()
        assert not run.ended  # gone while the run goes on

    async def test_closing_the_socket_does_not_abort_its_run(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("keep", "a b c d", "keep-1"))
        await ws.ws.close()
        watcher = await slow.connected()
        assert (await watcher.ok("agent.wait", {"runId": "keep-1"}))["status"] == "ok"
        history = await watcher.ok("chat.history", {"sessionKey": "keep"})
        assert history["messages"][-1]["content"][0]["text"] == "[turn 1] a b c d"
        await watcher.ws.close()


class TestQueuedTurns:
    """A session runs one turn at a time; those sent meanwhile wait behind it, at most
    SESSION_QUEUE_MAX of them (OpenClaw's default queue cap): each holds its message, and a
    client could queue turns without end."""

    async def test_a_turn_beyond_the_queue_of_its_session_is_refused(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("full", SLOW_TEXT, "full-0"))
        for n in range(1, SESSION_QUEUE_MAX + 1):
            await ws.ok("chat.send", send("full", f"turn {n}", f"full-{n}"))
        refused = await ws.call("chat.send", send("full", "one more", "full-more"))
        assert refused["error"] == {
            "code": "UNAVAILABLE",
            "message": f"too many turns queued for session agent:main:full ({SESSION_QUEUE_MAX});"
            " retry after one has ended",
            "details": {"sessionKey": "agent:main:full", "limit": SESSION_QUEUE_MAX},
            "retryable": True,
        }
        refused = await ws.call("agent", {"message": "hi", "sessionKey": "full",
                                          "idempotencyKey": "agent-more"})  # fmt: skip
        assert refused["error"]["code"] == "UNAVAILABLE"
        # A repeat of a queued turn is still answered, another session still takes turns,
        # and /stop still stops them all.
        assert (await ws.ok("chat.send", send("full", "turn 1", "full-1")))["status"] == "in_flight"
        await ws.ok("chat.send", send("other", "hi", "other-1"))
        await ws.event("chat", state="final", runId="other-1")
        stopped = await ws.ok("chat.send", send("full", "/stop", "full-stop"))
        assert len(stopped["runIds"]) == SESSION_QUEUE_MAX + 1
        await ws.ok("chat.send", send("full", "after", "full-after"))
        await ws.event("chat", state="final", runId="full-after")
        await ws.ws.close()


class TestIdempotency:
    async def test_a_repeated_key_starts_no_second_run(self, slow: Gateway) -> None:
        ws = await slow.connected()
        registry = slow.app[STATE].registry
        assert registry is not None
        assert await ws.ok("chat.send", send("i", "a b c", "dup-1")) == {
            "runId": "dup-1",
            "status": "started",
        }
        assert await ws.ok("chat.send", send("i", "a b c", "dup-1")) == {
            "runId": "dup-1",
            "status": "in_flight",
        }
        await ws.event("chat", state="final", runId="dup-1")
        assert await ws.ok("chat.send", send("i", "something else", "dup-1")) == {
            "runId": "dup-1",
            "status": "ok",
        }
        other = await slow.connected()
        assert (await other.ok("chat.send", send("i", "x", "dup-1")))["status"] == "ok"
        assert registry.stats().active == 0
        history = await ws.ok("chat.history", {"sessionKey": "i"})
        assert history["totalMessages"] == 2
        for client in (ws, other):
            await client.ws.close()

    async def test_a_forgotten_key_whose_run_still_runs_starts_no_second_run(
        self, slow: Gateway
    ) -> None:
        """Keys are forgotten after 5 minutes or 1000 newer keys; a run may outlast that. A
        second run under the same id would leave the first one unaddressable and mix both
        runs' `chat` events."""
        slow.app[WS].idempotency = IdempotencyCache(max_keys=1)
        ws = await slow.connected()
        await ws.request(
            "agent", {"message": SLOW_TEXT, "idempotencyKey": "long", "sessionKey": "a"}, id="a-1"
        )
        accepted = await ws.response("a-1")
        await ws.ok("chat.send", send("c", "hi", "newer"))  # pushes "long" out
        await ws.request(
            "agent", {"message": "other", "idempotencyKey": "long", "sessionKey": "b"}, id="a-2"
        )
        assert (await ws.response("a-2"))["payload"] == accepted["payload"]
        assert await ws.ok("chat.send", send("b", "again", "long")) == {
            "runId": "long",
            "status": "in_flight",
        }
        final = await ws.response("a-2")
        text = final["payload"]["result"]["payloads"][0]["text"]
        assert text == f"[turn 1] {SLOW_TEXT}"
        assert (await ws.response("a-1"))["payload"] == final["payload"]
        history = await ws.ok("chat.history", {"sessionKey": "b"})
        assert history["totalMessages"] == 0
        await ws.ws.close()

    async def test_a_key_pushed_out_by_newer_ones_within_5_minutes_starts_no_second_run(
        self, gateway: Gateway
    ) -> None:
        """1000 newer keys (any client's) push a key out of the cache before its 5 minutes:
        a client's retry of a send whose answer it lost would run the turn again. The run
        itself, remembered longer, still answers for its key within the 5 minutes."""
        gateway.app[WS].idempotency = IdempotencyCache(max_keys=1)
        ws = await gateway.connected()
        await ws.ok("chat.send", send("once", "hi", "once-1"))
        await ws.event("chat", state="final", runId="once-1")
        agent_answer = await ws.ok(
            "agent", {"message": "hi", "sessionKey": "twice", "idempotencyKey": "agent-1"}
        )
        await ws.ok("chat.send", send("other", "hi", "newer"))  # pushes both out
        await ws.event("chat", state="final", runId="newer")
        assert await ws.ok("chat.send", send("once", "hi", "once-1")) == {
            "runId": "once-1",
            "status": "ok",
        }
        again = await ws.ok(
            "agent", {"message": "hi", "sessionKey": "twice", "idempotencyKey": "agent-1"}
        )
        assert again == agent_answer
        for key in ("once", "twice"):
            history = await ws.ok("chat.history", {"sessionKey": key})
            assert history["totalMessages"] == 2
        await ws.ws.close()

    async def test_a_key_of_256_characters_is_taken(self, ws: GatewayWs) -> None:
        """Longer ones are refused (test_methods.py): a run keeps its key, the run id, for
        10 minutes and the last 1000 keys are remembered, so a key of megabytes each would
        pin gigabytes."""
        key = "k" * 256
        assert await ws.ok("chat.send", send("long-key", "hi", key)) == {
            "runId": key,
            "status": "started",
        }
        await ws.event("chat", state="final", runId=key)


class TestAgent:
    async def test_answers_twice_with_the_same_id(self, ws: GatewayWs) -> None:
        await ws.request(
            "agent",
            {
                "message": "hi",
                "idempotencyKey": "ag-1",
                "sessionKey": "ag",
                "deliver": False,
                "timeout": 600,
            },
            id="a-1",
        )
        accepted = await ws.response("a-1")
        assert wire(normalized(accepted)) == (
            '{"type":"res","id":"a-1","ok":true,"payload":{"runId":"ag-1",'
            '"sessionKey":"agent:main:ag","agentId":"main","status":"accepted",'
            '"acceptedAt":"<acceptedAt>"}}'
        )
        final = await ws.response("a-1")
        assert wire(normalized(final)) == (
            '{"type":"res","id":"a-1","ok":true,"payload":{"runId":"ag-1","status":"ok",'
            '"summary":"completed","result":{"payloads":[{"text":"[turn 1] hi",'
            '"mediaUrl":null}],"meta":{"durationMs":"<durationMs>","agentMeta":'
            '{"sessionId":"<sessionId>","provider":"echo","model":"echo","usage":'
            '{"input":1,"output":3,"total":4}},"stopReason":"stop","aborted":false}}}}'
        )
        # A repeat: the same two answers, no new run.
        await ws.request("agent", {"message": "hi", "idempotencyKey": "ag-1"}, id="a-2")
        again = [await ws.response("a-2"), await ws.response("a-2")]
        assert [f["payload"] for f in again] == [accepted["payload"], final["payload"]]
        history = await ws.ok("chat.history", {"sessionKey": "ag"})
        assert history["totalMessages"] == 2

    async def test_defaults_to_the_main_session_of_the_agent(self, ws: GatewayWs) -> None:
        await ws.request(
            "agent", {"message": "hi", "idempotencyKey": "ag-m", "agentId": "main"}, id="a-m"
        )
        accepted = await ws.response("a-m")
        assert accepted["payload"]["sessionKey"] == "agent:main:main"
        await ws.response("a-m")

    async def test_new_resets_the_session_and_answers_once(self, ws: GatewayWs) -> None:
        before = await ws.ok("sessions.patch", {"key": "cmd", "label": "L"})
        await ws.request(
            "agent", {"message": "/New", "idempotencyKey": "ag-new", "sessionKey": "cmd"}, id="n"
        )
        answer = (await ws.response("n"))["payload"]
        session_id = answer["result"]["meta"]["agentMeta"]["sessionId"]
        assert session_id != before["entry"]["sessionId"]
        assert answer == {
            "runId": "ag-new",
            "status": "ok",
            "summary": "completed",
            "result": {
                "payloads": [{"text": "✅ New session started.", "isStatusNotice": True}],
                "meta": {"durationMs": 0, "agentMeta": {"sessionId": session_id}},
            },
        }
        assert (await ws.ok("chat.history", {"sessionKey": "cmd"}))["sessionId"] == session_id

    async def test_new_retried_with_its_key_answers_again_without_a_second_reset(
        self, ws: GatewayWs
    ) -> None:
        params = {"message": "/new", "idempotencyKey": "ag-new2", "sessionKey": "cmd4"}
        # Two sent at once (a client that retries before the first answer), then one more.
        first, second = await ws.request("agent", params), await ws.request("agent", params)
        answers = [(await ws.response(first))["payload"], (await ws.response(second))["payload"]]
        answers.append(await ws.ok("agent", params))
        session_id = answers[0]["result"]["meta"]["agentMeta"]["sessionId"]
        assert answers[1] == answers[2] == answers[0]
        assert (await ws.ok("chat.history", {"sessionKey": "cmd4"}))["sessionId"] == session_id
        # The key names that reset for chat.send too: no turn is run under it.
        again = await ws.ok("chat.send", send("cmd4", "hi", "ag-new2"))
        assert again == {"runId": "ag-new2", "status": "ok"}

    @pytest.mark.parametrize("message", ["/new", "/reset hello"])
    async def test_a_reset_whose_client_leaves_while_it_is_stored_is_not_done_again(
        self, gateway: Gateway, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch, message: str
    ) -> None:
        """The client left while the reset was stored, and retries with the call's key: it
        gets the reset done (and the text's turn), not a second reset. The key's answer was
        remembered only by the call, which its client's leaving cancelled."""
        params = {"message": message, "idempotencyKey": "ag-left", "sessionKey": "left"}
        held = hold_store_write(monkeypatch, "reset")
        client = await gateway.connected()
        await client.request("agent", params)
        await leave_while_stored(gateway, client, held)
        held.stored.set()
        async with asyncio.timeout(5):
            while any(t.get_name() == "ws-agent" for t in asyncio.all_tasks()):
                await asyncio.sleep(0.01)
        reset_to = (await ws.ok("sessions.describe", {"key": "left"}))["session"]["sessionId"]
        first = await ws.request("agent", params)
        answer = (await ws.response(first))["payload"]
        if message != "/new":
            assert answer["status"] == "accepted"
            answer = (await ws.response(first))["payload"]
        assert answer["result"]["meta"]["agentMeta"]["sessionId"] == reset_to
        history = await ws.ok("chat.history", {"sessionKey": "left"})
        assert history["sessionId"] == reset_to

    async def test_a_retry_sent_while_a_left_clients_reset_is_stored_waits_for_it(
        self, gateway: Gateway, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The retry comes while the reset its first call started (and left) is still being
        stored: it waits for it and answers with it, and the session is reset once."""
        params = {"message": "/new", "idempotencyKey": "ag-soon", "sessionKey": "soon"}
        held = hold_store_write(monkeypatch, "reset")
        client = await gateway.connected()
        await client.request("agent", params)
        await leave_while_stored(gateway, client, held)
        asked = asyncio.Event()
        wait_for_start = agent_methods.wait_for_start

        async def noted(ws_state: Any, run_id: str) -> None:
            asked.set()
            await wait_for_start(ws_state, run_id)

        monkeypatch.setattr(agent_methods, "wait_for_start", noted)
        retry = await ws.request("agent", params)
        async with asyncio.timeout(5):
            await asked.wait()  # the retry is being handled
        held.stored.set()
        answer = (await ws.response(retry))["payload"]
        session_id = (await ws.ok("sessions.describe", {"key": "soon"}))["session"]["sessionId"]
        assert answer["result"]["meta"]["agentMeta"]["sessionId"] == session_id
        assert held.calls == 1

    async def test_a_reset_with_text_retried_with_its_key_resets_once(self, ws: GatewayWs) -> None:
        params = {"message": "/reset hello", "idempotencyKey": "ag-r3", "sessionKey": "cmd5"}
        first, second = await ws.request("agent", params), await ws.request("agent", params)
        for frame_id in (first, second):
            assert (await ws.response(frame_id))["payload"]["status"] == "accepted"
        finals = [(await ws.response(first))["payload"], (await ws.response(second))["payload"]]
        assert finals[0] == finals[1]
        history = await ws.ok("chat.history", {"sessionKey": "cmd5"})
        assert history["sessionId"] == finals[0]["result"]["meta"]["agentMeta"]["sessionId"]
        assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["hello"]

    async def test_reset_with_text_runs_it_in_the_new_session(self, ws: GatewayWs) -> None:
        turn = {"message": "one", "idempotencyKey": "ag-r1", "sessionKey": "cmd2"}
        await ws.request("agent", turn, id="r1")
        await ws.response("r1")
        await ws.response("r1")
        turn = {"message": "/reset  two\nthree", "idempotencyKey": "ag-r2", "sessionKey": "cmd2"}
        await ws.request("agent", turn, id="r2")
        assert (await ws.response("r2"))["payload"]["status"] == "accepted"
        final = (await ws.response("r2"))["payload"]
        assert final["result"]["payloads"][0]["text"] == "[turn 1] two\nthree"
        history = await ws.ok("chat.history", {"sessionKey": "cmd2"})
        assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["two\nthree"]

    async def test_a_word_that_begins_like_a_command_is_a_message(self, ws: GatewayWs) -> None:
        turn = {"message": "/newer", "idempotencyKey": "ag-nw", "sessionKey": "cmd3"}
        await ws.request("agent", turn, id="nw")
        await ws.response("nw")
        final = (await ws.response("nw"))["payload"]
        assert final["result"]["payloads"][0]["text"] == "[turn 1] /newer"

    async def test_new_needs_admin(self, gateway: Gateway) -> None:
        ws = await gateway.connected(scopes=["operator.write"])
        frame = await ws.call("agent", {"message": "/new", "idempotencyKey": "ag-na"})
        assert frame["error"]["message"] == "missing scope: operator.admin"
        assert (await ws.ok("chat.history", {"sessionKey": "main"}))["messages"] == []
        await ws.ws.close()

    async def test_a_session_id_beside_a_session_key_is_left_to_the_key(
        self, ws: GatewayWs
    ) -> None:
        params = {"message": "hi", "idempotencyKey": "ag-id", "sessionKey": "by-key"}
        await ws.request("agent", {**params, "sessionId": "some-id"}, id="a-id")
        assert (await ws.response("a-id"))["payload"]["sessionKey"] == "agent:main:by-key"
        assert (await ws.response("a-id"))["payload"]["status"] == "ok"

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"agentId": "ghost"}, "Unknown agent 'ghost'."),
            (
                {"agentId": "main", "sessionKey": "agent:other:x"},
                "Session key 'agent:other:x' belongs to agent 'other', not 'main'.",
            ),
        ],
    )
    async def test_refused(self, ws: GatewayWs, params: dict, message: str) -> None:
        frame = await ws.call("agent", {"message": "m", "idempotencyKey": "r", **params})
        assert frame["error"] == {"code": "INVALID_REQUEST", "message": message}


class TestAgentWait:
    async def test_a_run_id_longer_than_any_run_has_is_refused(self, ws: GatewayWs) -> None:
        # Run ids are idempotency keys (at most 256 characters) or ids of our own: a longer
        # one names no run, and while `agent.wait` waits, it is held (64 calls a connection
        # of up to maxPayload each).
        for method in ("agent.wait", "chat.abort"):
            refused = await ws.call(method, {"sessionKey": "k", "runId": "r" * 257})
            assert refused["error"] == {
                "code": "INVALID_REQUEST",
                "message": f"invalid {method} params: at /runId: must have at most 256 characters",
            }
        answer = await ws.ok("agent.wait", {"runId": "r" * 256, "timeoutMs": 1})
        assert answer["status"] == "timeout"

    async def test_ok_for_a_finished_run(self, ws: GatewayWs) -> None:
        await ws.ok("chat.send", send("w", "hi", "w-1"))
        payload = await ws.ok("agent.wait", {"runId": "w-1"})
        assert list(payload) == ["runId", "status", "startedAt", "endedAt"]
        assert (payload["runId"], payload["status"]) == ("w-1", "ok")

    async def test_ok_for_a_run_that_ended_before_the_wait(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        await ws.ok("chat.send", send("w", "hi", "w-ended"))
        await ws.event("chat", state="final", runId="w-ended")
        other = await gateway.connected()  # no idempotency entry of its own for the run
        payload = await other.ok("agent.wait", {"runId": "w-ended", "timeoutMs": 30})
        assert list(payload) == ["runId", "status", "startedAt", "endedAt"]
        assert (payload["runId"], payload["status"]) == ("w-ended", "ok")
        await other.ws.close()

    async def test_timeout_leaves_the_run_alone(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("w", SLOW_TEXT, "w-2"))
        payload = await ws.ok("agent.wait", {"runId": "w-2", "timeoutMs": 50})
        assert (payload["runId"], payload["status"]) == ("w-2", "timeout")
        final = await ws.event("chat", state="final", runId="w-2")
        assert final["payload"]["stopReason"] == "stop"
        await ws.ws.close()

    async def test_an_unknown_run_times_out(self, ws: GatewayWs) -> None:
        assert await ws.ok("agent.wait", {"runId": "never", "timeoutMs": 30}) == {
            "runId": "never",
            "status": "timeout",
        }

    async def test_a_wait_longer_than_the_maximum_ends_at_the_maximum(
        self, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The maximum is a day (README); lowered here to be seen. Without it a wait for a
        # run that never comes holds the call and its watchers for as long as it asks.
        monkeypatch.setattr(agent_methods, "WAIT_MAX_MS", 50, raising=False)
        for timeout_ms in (10**15, 1e300, 2**53 - 1):
            answer = await ws.ok("agent.wait", {"runId": "never", "timeoutMs": timeout_ms})
            assert answer == {"runId": "never", "status": "timeout"}

    async def test_a_run_that_starts_while_waiting(self, ws: GatewayWs, gateway: Gateway) -> None:
        frame_id = await ws.request("agent.wait", {"runId": "later-1", "timeoutMs": 5000})
        await asyncio.sleep(0.05)
        other = await gateway.connected()
        await other.ok("chat.send", send("later", "hi", "later-1"))
        assert (await ws.response(frame_id))["payload"]["status"] == "ok"
        await other.ws.close()

    async def test_a_bare_new_answers_ok_at_once_as_a_run_that_ended(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # OpenClaw keeps the reset's answer under its run id, and agent.wait reads it: `ok`,
        # ended when the reset answered, never started.
        params = {"message": "/new", "idempotencyKey": "w-new", "sessionKey": "w-new"}
        before = now_ms()
        await ws.ok("agent", params)
        other = await gateway.connected()
        answer = await other.ok("agent.wait", {"runId": "w-new", "timeoutMs": 2000})
        assert list(answer) == ["runId", "status", "endedAt"]
        assert (answer["runId"], answer["status"]) == ("w-new", "ok")
        assert before <= answer["endedAt"] <= now_ms()
        await other.ws.close()

    async def test_a_wait_made_before_a_bare_reset_answers_when_it_does(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        other = await gateway.connected()
        frame_id = await other.request("agent.wait", {"runId": "w-reset", "timeoutMs": 5000})
        await other.ok("health")  # the wait is under way
        params = {"message": "/reset", "idempotencyKey": "w-reset", "sessionKey": "w-reset"}
        await ws.ok("agent", params)
        answer = (await other.response(frame_id))["payload"]
        assert (answer["runId"], answer["status"]) == ("w-reset", "ok")
        await other.ws.close()

    async def test_an_aborted_run_reads_as_timeout(self, slow: Gateway) -> None:
        ws = await slow.connected()
        await ws.ok("chat.send", send("w", SLOW_TEXT, "w-3"))
        frame_id = await ws.request("agent.wait", {"runId": "w-3"})
        await ws.ok("chat.abort", {"sessionKey": "w"})
        payload = (await ws.response(frame_id))["payload"]
        assert payload["status"] == "timeout" and "endedAt" in payload
        await ws.ws.close()


async def stored_turns(gateway: Gateway, key: str, *turns: dict[str, Any]) -> None:
    """Turns committed to the gateway's store as a run commits them (tests/support/turns.py)."""
    store = gateway.app[STATE].store
    assert store is not None
    row, _ = await store.create(key, "main", 1000)
    for n, fields in enumerate(turns, 1):
        row = await store.append_turn(turn(row, run_id=f"r{n}", **fields))


class TestHistoryBounds:
    """OpenClaw's bounds on a `chat.history` answer (its server-methods/chat.ts): a session's
    last 1000 messages must still make a frame a client reads (25 MiB at most)."""

    async def test_a_text_over_12000_characters_is_cut_with_openclaws_mark(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        await stored_turns(gateway, "agent:main:long", {
            "user_text": "u" * 12_001, "assistant_text": "a" * 12_000,
        })  # fmt: skip
        messages = (await ws.ok("chat.history", {"sessionKey": "long"}))["messages"]
        assert messages[0]["content"] == "u" * 12_000 + "\n...(truncated)..."
        assert messages[1]["content"] == [{"type": "text", "text": "a" * 12_000}]

    async def test_a_message_over_128_kib_is_replaced_by_openclaws_placeholder(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        call = ToolCall("call-1", "save", json.dumps({"data": "x" * 140_000}))
        await stored_turns(gateway, "agent:main:big", {"tool_calls": (call,)})
        history = await ws.ok("chat.history", {"sessionKey": "big"})
        user, reply = history["messages"]
        assert user["content"] == "hello there"
        assert reply == {
            "role": "assistant",
            "timestamp": 1005,
            "content": [{"type": "text", "text": "[chat.history omitted: message too large]"}],
            "__openclaw": {
                "id": reply["__openclaw"]["id"], "seq": 2, "runId": "r1",
                "truncated": True, "reason": "oversized",
            },
        }  # fmt: skip
        assert (history["totalMessages"], history["hasMore"]) == (2, False)

    async def test_the_oldest_messages_are_left_out_beyond_6_mib(self, gateway: Gateway) -> None:
        # A control character is six bytes in JSON (\u0001): 12,000 of them about 72 KB.
        text = "\x01" * 12_000
        await stored_turns(
            gateway, "agent:main:many", *({"user_text": text, "assistant_text": text},) * 50
        )
        ws = await gateway.raw(max_msg_size=MAX_PAYLOAD + 1)  # a client reads up to maxPayload
        await ws.connect()
        history = await ws.ok("chat.history", {"sessionKey": "many", "limit": 1000})
        messages = history["messages"]
        size = len(json.dumps(messages, separators=(",", ":")))
        one = len(json.dumps(messages[-1], separators=(",", ":")))
        assert 6 * 1024 * 1024 - one < size <= 6 * 1024 * 1024
        assert [m["__openclaw"]["seq"] for m in messages] == list(range(101 - len(messages), 101))
        assert (history["totalMessages"], history["hasMore"]) == (100, True)

    async def test_long_messages_are_read_a_page_at_a_time(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # 40 user messages of 1 MiB: read whole, the store's rows and their decoded contents
        # alone were 80 MiB for an answer of half a megabyte.
        await stored_turns(gateway, "agent:main:huge", *({"user_text": "u" * 2**20},) * 40)
        tracemalloc.start()
        try:
            history = await ws.ok("chat.history", {"sessionKey": "huge", "limit": 1000})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 32 * 2**20
        messages = history["messages"]
        assert [m["__openclaw"]["seq"] for m in messages] == list(range(1, 81))
        assert messages[0]["content"] == "u" * 12_000 + "\n...(truncated)..."
        assert messages[-1]["content"] == [{"type": "text", "text": "[turn 1] hello there"}]
        assert (history["totalMessages"], history["hasMore"]) == (80, False)

    async def test_paging_stops_at_6_mib_as_one_read_would(self, gateway: Gateway) -> None:
        # 300,000 characters stored a message (a control character is six in JSON), 72 KB once
        # cut: an 8 MiB page holds 27 of them, the answer about 87.
        text = "\x01" * 50_000
        await stored_turns(
            gateway, "agent:main:pages", *({"user_text": text, "assistant_text": text},) * 60
        )
        ws = await gateway.raw(max_msg_size=MAX_PAYLOAD + 1)
        await ws.connect()
        history = await ws.ok("chat.history", {"sessionKey": "pages", "limit": 1000})
        messages = history["messages"]
        size = len(json.dumps(messages, separators=(",", ":")))
        one = len(json.dumps(messages[-1], separators=(",", ":")))
        assert 6 * 1024 * 1024 - one < size <= 6 * 1024 * 1024
        assert [m["__openclaw"]["seq"] for m in messages] == list(range(121 - len(messages), 121))
        assert (history["totalMessages"], history["hasMore"]) == (120, True)


class TestAQuestionAskedAgain:
    async def test_a_turn_the_upstream_refused_is_not_given_to_the_model_again(
        self, make_gateway: MakeGateway
    ) -> None:
        """A turn the upstream refused as a bad request (an image or a message it cannot
        take) is in `chat.history`, marked so, but later turns do not replay it, which would
        have them refused too."""
        async with FakeOpenAI() as upstream:
            upstream.script(Stream(("A1",)), Status(400), Stream(("A3",)))
            provider = json.dumps(fake_provider_entry(upstream))
            config = CONFIG.replace(
                '{ id: "main", default: true }',
                '{ id: "main", default: true, model: "fake/fake-model" }',
            ).replace("  agents:", f"  models: {{ providers: {{ fake: {provider} }} }},\n  agents:")
            ws = await (await make_gateway(config)).connected()
            for n, state in ((1, "final"), (2, "error"), (3, "final")):
                await ws.ok("chat.send", send("refused", f"Q{n}", f"refused-{n}"))
                await ws.event("chat", state=state, runId=f"refused-{n}")
            history = await ws.ok("chat.history", {"sessionKey": "refused"})
        assert [m["content"] for m in upstream.last.body["messages"]] == ["Q1", "A1", "Q3"]
        messages = history["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 3
        assert messages[2]["content"] == "Q2"
        assert (messages[3]["stopReason"], messages[3]["errorMessage"]) == (
            "error",
            "upstream provider refused the request (HTTP 400)",
        )

    async def test_the_error_event_says_why_the_upstream_refused_it(
        self, make_gateway: MakeGateway
    ) -> None:
        """A run the upstream refused as bad ends with its reason in `errorMessage`."""
        async with FakeOpenAI() as upstream:
            body = json.dumps({"error": {"message": "max_tokens is too large"}})
            upstream.script(Status(400, body=body))
            provider = json.dumps(fake_provider_entry(upstream))
            config = CONFIG.replace(
                '{ id: "main", default: true }',
                '{ id: "main", default: true, model: "fake/fake-model" }',
            ).replace("  agents:", f"  models: {{ providers: {{ fake: {provider} }} }},\n  agents:")
            ws = await (await make_gateway(config)).connected()
            await ws.ok("chat.send", send("refused", "Q1", "refused-1"))
            event = await ws.event("chat", state="error", runId="refused-1")
        assert event["payload"]["errorMessage"] == (
            "upstream provider refused the request (HTTP 400): max_tokens is too large"
        )

    async def test_after_a_failed_turn_the_model_is_given_it_once(
        self, make_gateway: MakeGateway
    ) -> None:
        """The Control UI sends the same text again after a turn that failed before any
        text: both turns are stored, but the model is not given the question twice."""
        async with FakeOpenAI() as upstream:
            upstream.script(Status(500), Stream(("Answer",)))
            provider = json.dumps(fake_provider_entry(upstream))
            config = CONFIG.replace(
                '{ id: "main", default: true }',
                '{ id: "main", default: true, model: "fake/fake-model" }',
            ).replace("  agents:", f"  models: {{ providers: {{ fake: {provider} }} }},\n  agents:")
            ws = await (await make_gateway(config)).connected()
            await ws.ok("chat.send", send("again", "Q1", "again-1"))
            await ws.event("chat", state="error", runId="again-1")
            await ws.ok("chat.send", send("again", "Q1", "again-2"))
            await ws.event("chat", state="final", runId="again-2")
            history = await ws.ok("chat.history", {"sessionKey": "again"})
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"] * 2
        assert [m["role"] for m in upstream.last.body["messages"]] == ["user"]


# The operator's run timeout is a second; the echo agent takes three per word.
LIMITED_CONFIG = CONFIG.replace(
    'agents: { list: [{ id: "main", default: true }] }',
    "agents: { defaults: { timeoutSeconds: 1 },"
    ' list: [{ id: "main", default: true, params: { delayMs: 3000 } }] }',
)


class TestARunTimeoutAskedFor:
    @pytest.mark.parametrize("timeout_ms", [0, 10**12, 10**300])
    async def test_chat_send_cannot_outlast_the_configured_run_timeout(
        self, make_gateway: MakeGateway, timeout_ms: int
    ) -> None:
        ws = await (await make_gateway(LIMITED_CONFIG)).connected()
        await ws.ok("chat.send", send("long", "one two", "long-1", timeoutMs=timeout_ms))
        ended = await ws.wait_for(
            lambda f: f.get("event") == "chat" and f["payload"]["state"] != "delta", wait=30
        )
        assert ended["payload"]["state"] == "error"
        assert ended["payload"]["errorMessage"] == "upstream provider timeout"

    @pytest.mark.parametrize("timeout", [0, 10**9, 1e300])
    async def test_agent_cannot_outlast_the_configured_run_timeout(
        self, make_gateway: MakeGateway, timeout: float
    ) -> None:
        ws = await (await make_gateway(LIMITED_CONFIG)).connected()
        params = {"message": "one two", "idempotencyKey": "long-2", "timeout": timeout}
        frame_id = await ws.request("agent", params)
        assert (await ws.response(frame_id))["payload"]["status"] == "accepted"
        final = await ws.response(frame_id, wait=30)
        assert final["payload"]["status"] == "error"
        assert final["payload"]["summary"] == "upstream provider timeout"

    async def test_a_shorter_timeout_is_kept(self, make_gateway: MakeGateway) -> None:
        config = LIMITED_CONFIG.replace("timeoutSeconds: 1", "timeoutSeconds: 600")
        ws = await (await make_gateway(config)).connected()
        await ws.ok("chat.send", send("short", "one two", "short-1", timeoutMs=500))
        ended = await ws.wait_for(
            lambda f: f.get("event") == "chat" and f["payload"]["state"] != "delta", wait=30
        )
        assert ended["payload"]["errorMessage"] == "upstream provider timeout"
