"""Requests after the handshake (ws-protocol.md §6-§8, §12): the dispatcher's errors and each
method's answer."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from agents.store import SessionStore
from gateway import logs
from gateway.appkeys import STATE
from gateway.logs import FIELD_CHARS, RING, LogRing, SharedLog
from gateway.ws import protocol
from gateway.ws.connection import now_ms
from gateway.ws.handler import WS
from gateway.ws.methods.system import TailParams, tail
from gateway.ws.state import WsSettings
from tests.support.served import TOKEN as SERVED_TOKEN
from tests.support.served import build_app, production_logging, served
from tests.support.turns import turn
from tests.support.ws_client import (
    Gateway,
    GatewayWs,
    MakeGateway,
    connect_params,
    hold_store_write,
    leave_while_stored,
    normalized,
    send,
    wire,
)

READ_METHODS = [
    "status",
    "agents.list",
    "models.list",
    "sessions.list",
    "chat.history",
    "config.get",
    "system-presence",
    "logs.tail",
    "sessions.preview",
    "system.info",
    "usage",
    "chat.subscribe",
    "chat.unsubscribe",
    "sessions.subscribe",
    "channels.status",
    "cron.list",
]
ADMIN_METHODS = ["sessions.reset", "sessions.delete", "config.patch"]
CLIENT = connect_params()["client"]
LABEL = {"sessions.patch": {"label": "Boo"}, "sessions.reset": {}}  # what each needs besides key


class TestDispatcher:
    async def test_unknown_method(self, ws: GatewayWs) -> None:
        await ws.request("no.such.method", {}, id="u-1")
        assert wire(await ws.response("u-1")) == (
            '{"type":"res","id":"u-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            '"message":"unknown method: no.such.method"}}'
        )

    async def test_a_call_cut_by_its_connection_closing_still_has_its_log_line(
        self, gateway: Gateway
    ) -> None:
        """One `ws_call` line per call: one still waiting when its client leaves (an
        `agent.wait`, an `agent` that started a run) is cancelled, and says so."""
        ws = await gateway.connected()
        with capture_logs() as logs:
            await ws.request("agent.wait", {"runId": "never", "timeoutMs": 60_000}, id="left")
            assert await ws.ok("health")  # read after `left`: that call is under way
            await ws.ws.close()
            for _ in range(100):
                if any(e.get("request_id") == "left" for e in logs):
                    break
                await asyncio.sleep(0.01)
        (line,) = (e for e in logs if e["event"] == "ws_call" and e["request_id"] == "left")
        assert (line["method"], line["ok"], line["code"]) == ("agent.wait", False, "CANCELLED")

    async def test_frames_answered_without_a_call_have_their_log_line(
        self, make_gateway: MakeGateway
    ) -> None:
        """One `ws_call` line per answer: a frame that is no request, and a request refused
        because the connection's slots and waiting room are full, are answered errors too."""
        gateway = await make_gateway(
            settings=WsSettings(max_inflight_requests=1, max_waiting_requests=0)
        )
        ws = await gateway.connected()
        with capture_logs() as logs:
            await ws.request("agent.wait", {"runId": "never", "timeoutMs": 60_000}, id="held")
            await ws.request("health", id="over")
            assert (await ws.response("over"))["error"]["code"] == "UNAVAILABLE"
            await ws.send("{nope")
            await ws.response("invalid")
            await ws.send({"type": "res", "id": "x-1", "method": "health"})
            await ws.response("x-1")
            await ws.ws.send_bytes(b"\x00")
            await ws.response("invalid")
        lines = [
            (e["request_id"], e["method"], e["ok"], e["code"])
            for e in logs
            if e["event"] == "ws_call"
        ]
        assert lines == [
            ("over", "health", False, "UNAVAILABLE"),
            ("invalid", None, False, "INVALID_REQUEST"),
            ("x-1", None, False, "INVALID_REQUEST"),
            ("invalid", None, False, "INVALID_REQUEST"),
        ]
        await ws.ws.close()

    async def test_not_json_after_the_handshake(self, ws: GatewayWs) -> None:
        await ws.send("{nope")
        frame = await ws.response("invalid")
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid request frame: not JSON",
        }

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    async def test_nan_and_infinity_are_not_json(self, ws: GatewayWs, constant: str) -> None:
        """Python's parser takes them; JSON has no such values (the HTTP side refuses them)."""
        await ws.send(
            '{"type":"req","id":"n-1","method":"sessions.list","params":{"activeMinutes":'
            + constant
            + "}}"
        )
        frame = await ws.response("invalid")
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid request frame: not JSON",
        }

    async def test_not_a_request_frame_keeps_its_id(self, ws: GatewayWs) -> None:
        await ws.send({"type": "res", "id": "x-1", "method": "health"})
        frame = await ws.response("x-1")
        assert frame["error"]["message"] == 'invalid request frame: at /type: must be "req"'

    async def test_an_id_longer_than_any_client_uses_is_refused_unechoed(
        self, ws: GatewayWs
    ) -> None:
        # The id is echoed in every answer (twice for `agent`) and kept while the call goes
        # on: a frame of maxPayload could otherwise be mostly id.
        await ws.send({"type": "req", "id": "i" * 257, "method": "health"})
        frame = await ws.response("invalid")
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid request frame: at /id: must have at most 256 characters",
        }
        await ws.send({"type": "req", "id": "i" * 256, "method": "health"})
        assert (await ws.response("i" * 256))["ok"] is True

    async def test_binary_after_the_handshake(self, ws: GatewayWs) -> None:
        await ws.ws.send_bytes(b"\x00")
        frame = await ws.response("invalid")
        assert frame["error"]["message"] == "invalid request frame: binary frames are not supported"

    @pytest.mark.parametrize("params", [None, {}, "absent"])
    async def test_params_may_be_omitted_or_null(self, ws: GatewayWs, params: object) -> None:
        if params == "absent":
            await ws.send({"type": "req", "id": "p-1", "method": "status"})
        else:
            await ws.send({"type": "req", "id": "p-1", "method": "status", "params": params})
        assert (await ws.response("p-1"))["ok"] is True

    async def test_params_must_be_an_object(self, ws: GatewayWs) -> None:
        frame = await ws.call("sessions.list", [1])
        assert frame["error"]["message"] == "invalid sessions.list params: must be object"

    @pytest.mark.parametrize("method", READ_METHODS)
    async def test_v4_missing_scope_is_forbidden(self, gateway: Gateway, method: str) -> None:
        ws = await gateway.connected(scopes=["operator.approvals"])
        await ws.request(method, {}, id="s-1")
        assert wire(await ws.response("s-1")) == (
            '{"type":"res","id":"s-1","ok":false,"error":{"code":"FORBIDDEN",'
            '"message":"missing scope: operator.read","details":{"code":"MISSING_SCOPE",'
            '"missingScope":"operator.read","requiredScopes":["operator.read"]}}}'
        )
        await ws.ws.close()

    async def test_v3_missing_scope_is_an_invalid_request(self, gateway: Gateway) -> None:
        ws = await gateway.connected(minProtocol=3, maxProtocol=3, scopes=["operator.read"])
        frame = await ws.call(
            "chat.send", {"sessionKey": "a", "message": "m", "idempotencyKey": "k"}
        )
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "missing scope: operator.write",
        }
        await ws.ws.close()

    @pytest.mark.parametrize("method", ADMIN_METHODS)
    async def test_admin_methods_need_admin(self, gateway: Gateway, method: str) -> None:
        ws = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await ws.call(method, {"key": "x"})
        assert frame["error"]["message"] == "missing scope: operator.admin"
        await ws.ws.close()

    async def test_a_label_needs_write_as_on_openclaw(self, gateway: Gateway) -> None:
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("sessions.patch", {"key": "x", "label": "L"})
        assert frame["error"]["message"] == "missing scope: operator.write"
        await reader.ws.close()
        writer = await gateway.connected(scopes=["operator.write"])
        patched = await writer.ok("sessions.patch", {"key": "x", "label": "L"})
        assert patched["entry"]["label"] == "L"
        await writer.ws.close()

    async def test_write_satisfies_read_and_health_needs_nothing(self, gateway: Gateway) -> None:
        ws = await gateway.connected(scopes=["operator.write"])
        assert (await ws.call("status"))["ok"] is True
        await ws.ws.close()
        ws = await gateway.connected(scopes=["bogus"])
        assert (await ws.call("health"))["ok"] is True
        assert (await ws.call("status"))["error"]["code"] == "FORBIDDEN"
        await ws.ws.close()

    async def test_scope_is_checked_before_params(self, gateway: Gateway) -> None:
        ws = await gateway.connected(scopes=["operator.read"])
        frame = await ws.call("chat.send", {"sessionKey": 5})
        assert frame["error"]["code"] == "FORBIDDEN"
        await ws.ws.close()

    @pytest.mark.parametrize(
        ("method", "params", "detail"),
        [
            ("sessions.list", {"limit": 0}, "at /limit: must be >= 1"),
            ("sessions.list", {"limit": 1001}, "at /limit: must be <= 1000"),
            ("sessions.list", {"search": 1}, "at /search: must be string"),
            ("chat.history", {}, "at /sessionKey: is required"),
            ("chat.history", {"sessionKey": "a", "limit": "5"}, "at /limit: must be integer"),
            ("chat.send", {"sessionKey": "a", "message": "m"}, "at /idempotencyKey: is required"),
            ("chat.abort", {"sessionKey": "a", "runId": 3}, "at /runId: must be string"),
            ("agent", {"message": "m"}, "at /idempotencyKey: is required"),
            (
                "agent",
                {"message": "m", "idempotencyKey": "k", "model": "x"},
                "model is not supported",
            ),
            (
                "agent",
                {"message": "m", "idempotencyKey": "k", "provider": "x"},
                "provider is not supported",
            ),
            (
                "agent",
                {"message": "m", "idempotencyKey": "k", "sessionId": "some-id"},
                "sessionId is not supported; name the session with sessionKey",
            ),
            (
                "chat.send",
                {"sessionKey": "a", "message": "m", "idempotencyKey": "k" * 257},
                "at /idempotencyKey: must have at most 256 characters",
            ),
            (
                "agent",
                {"message": "m", "idempotencyKey": "k" * 257},
                "at /idempotencyKey: must have at most 256 characters",
            ),
            ("agent.wait", {}, "at /runId: is required"),
            # Beyond a double (JavaScript reads Infinity): no integer, no number.
            ("agent.wait", {"runId": "r", "timeoutMs": 10**400}, "at /timeoutMs: must be integer"),
            (
                "chat.send",
                {"sessionKey": "a", "message": "m", "idempotencyKey": "k", "timeoutMs": 10**400},
                "at /timeoutMs: must be integer",
            ),
            (
                "agent",
                {"message": "m", "idempotencyKey": "k", "timeout": 10**400},
                "at /timeout: must be number",
            ),
            ("sessions.list", {"activeMinutes": 10**400}, "at /activeMinutes: must be number"),
            (
                "sessions.patch",
                {"key": "x", "thinkingLevel": "high"},
                "unsupported field 'thinkingLevel'",
            ),
            (
                "sessions.patch",
                {"key": "x", "expectedSessionId": "s", "archived": True, "unread": True},
                "unsupported field 'unread'",
            ),
            ("sessions.patch", {"key": "x", "pinned": "yes"}, "at /pinned: must be boolean"),
            ("sessions.patch", {"key": "x", "pinned": 0}, "at /pinned: must be boolean"),
            ("sessions.patch", {"key": "x", "archived": "yes"}, "at /archived: must be boolean"),
            ("sessions.patch", {"key": "x", "archived": 1}, "at /archived: must be boolean"),
            ("sessions.list", {"archived": "some"}, 'at /archived: must be boolean or "all"'),
            ("sessions.list", {"archived": 0}, 'at /archived: must be boolean or "all"'),
            (
                "sessions.delete",
                {"key": "x", "archivedOnly": "true"},
                "at /archivedOnly: must be boolean",
            ),
            (
                "sessions.patch",
                {"key": "x", "expectedLifecycleRevision": 3, "label": "L"},
                "unsupported field 'expectedLifecycleRevision'",
            ),
            (
                "sessions.patch",
                {"key": "x", "label": "L", "agentId": ""},
                "at /agentId: must not be empty",
            ),
            (
                "sessions.patch",
                {"key": "x", "label": "L", "expectedSessionId": 5},
                "at /expectedSessionId: must be string",
            ),
            ("sessions.patch", {"key": "x"}, "at /label: is required"),
            (
                "sessions.patch",
                {"key": "x", "label": " "},
                "at /label: must have 1 to 64 characters, or be null",
            ),
            (
                "sessions.reset",
                {"key": "x", "reason": "nope"},
                'at /reason: must be "new" or "reset"',
            ),
            (
                "sessions.delete",
                {"key": "x", "deleteTranscript": "no"},
                "at /deleteTranscript: must be boolean",
            ),
            ("logs.tail", {"limit": 5001}, "at /limit: must be <= 5000"),
            ("logs.tail", {"logId": 5}, "at /logId: must be string"),
            ("logs.tail", {"logId": "x" * 65}, "at /logId: must have at most 64 characters"),
            ("config.patch", {}, "at /raw: is required"),
            ("sessions.describe", {}, "at /key: is required"),
            (
                "chat.history",
                {"sessionKey": "agent:Bad Id:x"},
                "at /sessionKey: invalid session key",
            ),
        ],
    )
    async def test_invalid_params(
        self, ws: GatewayWs, method: str, params: dict, detail: str
    ) -> None:
        frame = await ws.call(method, params)
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"invalid {method} params: {detail}",
        }

    async def test_a_number_that_overflows_a_double_is_not_a_number(self, ws: GatewayWs) -> None:
        """`1e400` is JSON, and Python reads it as infinity."""
        await ws.send(
            '{"type":"req","id":"o-1","method":"agent",'
            '"params":{"message":"m","idempotencyKey":"o-1","timeout":1e400}}'
        )
        frame = await ws.response("o-1")
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid agent params: at /timeout: must be number",
        }

    async def test_a_failing_store_is_unavailable_and_logged(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        store = gateway.app[STATE].store
        assert store is not None
        await store.aclose()
        with capture_logs() as logs:
            frame = await ws.call("sessions.list")
        assert frame["error"] == {"code": "UNAVAILABLE", "message": "internal error"}
        failed = [e for e in logs if e["event"] == "ws_store_failed"]
        assert failed[0]["error"] == "session store is not open"

    async def test_unknown_keys_are_ignored(self, ws: GatewayWs) -> None:
        payload = await ws.ok("status", {"includeChannelSummary": True, "includeCliProjection": 1})
        assert "byAgent" in payload["sessions"]


# A frame of 3,000,000 empty objects (9 MB, within maxPayload) with a lone surrogate escape:
# parsing it and walking every container to repair the escape takes seconds.
SLOW_FRAME = (
    '{"type":"req","id":"big","method":"health","params":{"a":['
    + ",".join(["{}"] * 3_000_000)
    + '],"b":"\\ud800"}}'
)


class TestAnswersWithinMaxPayload:
    """hello-ok's `policy.maxPayload` is the largest frame the client reads (OpenClaw's closes
    on a larger one): an answer that would be larger is an error answer instead."""

    async def test_an_answer_over_max_payload_is_an_error_and_the_socket_goes_on(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(max_payload=100_000))
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:big", "main", 1000)
        for n in range(10):  # ten texts of 12,000 characters: chat.history keeps them whole
            row = await store.append_turn(turn(row, f"r{n}", user_text="u" * 12_000))
        ws = await gateway.raw(max_msg_size=100_001)  # reads up to maxPayload, as OpenClaw's
        await ws.connect()
        with capture_logs() as logs:
            frame = await ws.call("chat.history", {"sessionKey": "big"})
        assert frame["error"] == {
            "code": "UNAVAILABLE",
            "message": "chat.history answer too large: over maxPayload (100000 bytes)",
        }
        (line,) = (e for e in logs if e["event"] == "ws_answer_too_large")
        assert (line["method"], line["limit"]) == ("chat.history", 100_000)
        assert line["bytes"] > 100_000
        assert (await ws.ok("chat.history", {"sessionKey": "big", "limit": 2}))["messages"]


class TestTranscriptReadsShareABound:
    """`chat.history` and `sessions.preview` each read pages of up to 8 MiB of stored text and
    build up to 6 MiB of answer: however many clients ask at once, the process builds only
    `max_transcript_reads` of them at a time, the others wait their turn."""

    async def test_the_reads_of_every_connection_wait_their_turn(
        self, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(max_transcript_reads=2))
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:h", "main", 1000)
        await store.append_turn(turn(row, "r0"))
        reading, most = 0, 0
        history = SessionStore.history

        async def counted(self: SessionStore, *args: Any, **kwargs: Any) -> Any:
            nonlocal reading, most
            reading += 1
            most = max(most, reading)
            try:
                await asyncio.sleep(0.05)  # a read of megabytes takes a while
                return await history(self, *args, **kwargs)
            finally:
                reading -= 1

        monkeypatch.setattr(SessionStore, "history", counted)
        clients = [await gateway.connected() for _ in range(3)]
        calls = [(ws, await ws.request("chat.history", {"sessionKey": "h"})) for ws in clients]
        calls += [(ws, await ws.request("sessions.preview", {"keys": ["h"]})) for ws in clients]
        for ws, frame_id in calls:
            assert (await ws.response(frame_id))["ok"] is True
        assert most == 2
        for ws in clients:
            await ws.ws.close()

    async def test_a_client_asking_many_at_once_does_not_hold_up_another(
        self, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A connection's reads take their turns one at a time: another client's read waits
        # for at most one of them, not for all 20.
        gateway = await make_gateway(settings=WsSettings(max_transcript_reads=1))
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:h", "main", 1000)
        await store.append_turn(turn(row, "r0"))
        history = SessionStore.history

        async def slow(self: SessionStore, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.02)  # a read of megabytes takes a while
            return await history(self, *args, **kwargs)

        monkeypatch.setattr(SessionStore, "history", slow)
        greedy, other = await gateway.connected(), await gateway.connected()
        with capture_logs() as logs:
            many = [await greedy.request("chat.history", {"sessionKey": "h"}) for _ in range(20)]
            await asyncio.sleep(0.03)  # the first of them is being read
            one = await other.request("chat.history", {"sessionKey": "h"}, id="other")
            assert (await other.response(one))["ok"] is True
            for frame_id in many:
                assert (await greedy.response(frame_id))["ok"] is True
        answered = [e["request_id"] for e in logs if e["event"] == "ws_call"]
        assert answered.index("other") <= 2
        await greedy.ws.close()
        await other.ws.close()


class TestSessionListsShareTheStore:
    """`status` and `sessions.list` read the store's scan thread, one job after another: a
    read-scoped client with 64 calls in flight must not queue 64 scans before every other
    client's."""

    async def test_status_calls_asked_at_once_share_their_computations(
        self, gateway: Gateway, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        scans = 0
        listing = SessionStore.list

        async def counted(self: SessionStore, *args: Any, **kwargs: Any) -> Any:
            nonlocal scans
            scans += 1
            return await listing(self, *args, **kwargs)

        monkeypatch.setattr(SessionStore, "list", counted)
        calls = [await ws.request("status") for _ in range(20)]
        for frame_id in calls:
            assert (await ws.response(frame_id))["ok"] is True
        # Each computation scans once for every session and once per agent (one here).
        assert 2 <= scans <= 4
        # A call asked after that computation ended computes again.
        await ws.ok("status")
        assert scans >= 4

    async def test_system_info_calls_asked_at_once_share_their_session_count(
        self, gateway: Gateway, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        scans = 0
        count = SessionStore.count

        async def counted(self: SessionStore) -> int:
            nonlocal scans
            scans += 1
            return await count(self)

        monkeypatch.setattr(SessionStore, "count", counted)
        calls = [await ws.request("system.info") for _ in range(20)]
        for frame_id in calls:
            assert (await ws.response(frame_id))["ok"] is True
        assert 1 <= scans <= 2
        await ws.ok("sessions.patch", {"key": "counted", "label": "L"})
        assert (await ws.ok("system.info"))["sessions"]["stored"] == 1  # asked after: counts

    async def test_a_client_listing_many_at_once_does_not_hold_up_another(
        self, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(max_transcript_reads=1))
        listing = SessionStore.list

        async def slow(self: SessionStore, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.02)  # a scan of many sessions takes a while
            return await listing(self, *args, **kwargs)

        monkeypatch.setattr(SessionStore, "list", slow)
        greedy, other = await gateway.connected(), await gateway.connected()
        with capture_logs() as logs:
            many = [await greedy.request("sessions.list", {"limit": 1 + i}) for i in range(20)]
            await asyncio.sleep(0.03)  # the first of them is being read
            before = sum(e["event"] == "ws_call" for e in logs)  # answered before it was asked
            one = await other.request("sessions.list", {}, id="other")
            assert (await other.response(one))["ok"] is True
            for frame_id in many:
                assert (await greedy.response(frame_id))["ok"] is True
        answered = [e["request_id"] for e in logs if e["event"] == "ws_call"]
        assert answered.index("other") - before <= 2
        await greedy.ws.close()
        await other.ws.close()


class TestLargeFramesParseOffTheLoop:
    """The calls' order in the log shows it: `health` on another connection, sent once the
    large frame's parse began, is answered first only if that parse let the loop run."""

    async def test_a_large_frame_holds_up_no_other_client(
        self, gateway: Gateway, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        loop = asyncio.get_running_loop()
        parsing = asyncio.Event()
        parse = protocol.strict_loads

        def noting_the_start(text: str) -> object:
            if len(text) == len(SLOW_FRAME):
                loop.call_soon_threadsafe(parsing.set)
            return parse(text)

        monkeypatch.setattr(protocol, "strict_loads", noting_the_start)
        other = await gateway.connected()
        with capture_logs() as logs:
            await ws.send(SLOW_FRAME)
            await parsing.wait()
            assert (await other.response(await other.request("health", id="quick")))["ok"]
            assert (await ws.response("big", wait=60))["ok"]
        assert [e["request_id"] for e in logs if e["event"] == "ws_call"] == ["quick", "big"]
        await other.ws.close()


class TestReadMethods:
    async def test_health(self, ws: GatewayWs, gateway: Gateway) -> None:
        payload = await ws.ok("health", {"probe": True})
        assert list(payload) == [
            "ok",
            "ts",
            "durationMs",
            "defaultAgentId",
            "agents",
            "sessions",
            "configReload",
            "channels",
            "channelOrder",
            "channelLabels",
            "plugins",
        ]
        assert payload["sessions"]["path"] == str(gateway.state_dir / "sessions.sqlite3")

    async def test_probes_asked_at_once_share_their_computations(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # Each computation reads the store once per agent and once more; `health` needs no
        # scope, and 64 probes in flight would otherwise be 64 computations one after another.
        health = gateway.app[WS].health
        health.probe_reuse_seconds = 0.0  # no result is recent: only sharing saves work
        before = health.version
        calls = [await ws.request("health", {"probe": True}) for _ in range(20)]
        for frame_id in calls:
            assert (await ws.response(frame_id))["ok"] is True
        assert 1 <= health.version - before <= 2
        # A probe asked after that computation ended computes again.
        again = health.version
        await ws.ok("health", {"probe": True})
        assert health.version == again + 1

    async def test_probes_asked_one_after_another_reuse_a_recent_computation(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # A client that loops `health {probe: true}` (no scope needed) would otherwise cost a
        # computation, a read of the store per agent and one more, per call.
        health = gateway.app[WS].health
        health.probe_reuse_seconds = 3600.0  # "recent" for the whole test
        before = health.version
        for _ in range(30):
            assert (await ws.ok("health", {"probe": True}))["ok"] is True
        assert health.version - before <= 1

    async def test_status(self, ws: GatewayWs, gateway: Gateway) -> None:
        await ws.ok("chat.send", {"sessionKey": "s1", "message": "hi", "idempotencyKey": "st-1"})
        await ws.event("chat", state="final")
        payload = normalized(await ws.ok("status"))
        path = str(gateway.state_dir / "sessions.sqlite3")
        recent = {
            "agentId": "main",
            "key": "agent:main:s1",
            "kind": "direct",
            "sessionId": "<sessionId>",
            "updatedAt": "<updatedAt>",
            "age": "<age>",
            "abortedLastRun": False,
            "inputTokens": 1,
            "outputTokens": 3,
            "totalTokens": 1,
            "model": "echo",
            "contextTokens": None,
        }
        assert wire(payload) == wire(
            {
                "runtimeVersion": "0.1.0",
                "pid": "<pid>",
                "uptimeMs": "<uptimeMs>",
                "sessions": {
                    "paths": [path],
                    "count": 1,
                    "defaults": {"model": "echo", "contextTokens": None},
                    "recent": [recent],
                    "byAgent": [{"agentId": "main", "path": path, "count": 1, "recent": [recent]}],
                },
                "heartbeat": {"defaultAgentId": "main", "agents": []},
                "channelSummary": [],
                "queuedSystemEvents": [],
                "runs": {"active": 0, "queued": 0, "maxConcurrent": 4},
            }
        )

    async def test_agents_list(self, ws: GatewayWs) -> None:
        assert wire(await ws.ok("agents.list")) == (
            '{"defaultId":"main","mainKey":"main","scope":"per-sender","agents":[{"id":"main",'
            '"name":"main","model":{"primary":"echo/echo","fallbacks":[]}}]}'
        )

    async def test_models_list(self, make_gateway) -> None:  # type: ignore[no-untyped-def]
        gateway = await make_gateway(
            """{
              gateway: { auth: { token: "test-token" } },
              models: { providers: { openai: { baseUrl: "http://127.0.0.1:9/v1",
                models: [{ id: "gpt-4o-mini", contextWindow: 128000 }] } } },
              agents: { list: [{ id: "main", model: "openai/gpt-4o-mini" }] },
            }"""
        )
        ws = await gateway.connected()
        assert wire(await ws.ok("models.list", {"view": "all", "includeDetails": True})) == (
            '{"models":[{"id":"echo","name":"echo","provider":"echo","contextWindow":null,'
            '"reasoning":false,"available":true},{"id":"gpt-4o-mini","name":"gpt-4o-mini",'
            '"provider":"openai","contextWindow":128000,"reasoning":false,"available":true,'
            '"tags":["default"]}]}'
        )
        await ws.ws.close()

    async def test_defaults_are_the_model_of_the_session_s_agent(self, make_gateway) -> None:  # type: ignore[no-untyped-def]
        """What a session with no turn yet runs on: OpenClaw's TUI shows it in its footer."""
        gateway = await make_gateway(
            """{
              gateway: { auth: { token: "test-token" } },
              models: { providers: { openai: { baseUrl: "http://127.0.0.1:9/v1",
                models: [{ id: "gpt-4o-mini", contextWindow: 128000 }] } } },
              agents: { list: [{ id: "main", default: true },
                               { id: "ops", model: "openai/gpt-4o-mini" }] },
            }"""
        )
        ws = await gateway.connected()
        ops = {"modelProvider": "openai", "model": "gpt-4o-mini", "contextTokens": 128000}
        main = {"modelProvider": "echo", "model": "echo", "contextTokens": None}
        history = await ws.ok("chat.history", {"sessionKey": "agent:ops:new"})
        assert history["defaults"] == ops
        assert (await ws.ok("chat.history", {"sessionKey": "new"}))["defaults"] == main
        assert (await ws.ok("sessions.list", {"agentId": "ops"}))["defaults"] == ops
        assert (await ws.ok("sessions.list", {"agentId": "ghost"}))["defaults"] == main
        assert (await ws.ok("sessions.list", {}))["defaults"] == main
        await ws.ws.close()

    async def test_system_presence_is_an_array_self_first_then_newest(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        other = await gateway.connected(
            client={
                "id": "openclaw-tui",
                "version": "2026.9.6",
                "platform": "linux",
                "mode": "ui",
                "deviceFamily": "Linux",
                "instanceId": "tui-1",
            },
            scopes=["operator.read"],
        )
        event = await ws.event("presence")
        assert event["stateVersion"]["presence"] == 2
        presence = await ws.ok("system-presence")
        assert normalized(presence) == normalized(event["payload"]["presence"])
        assert [p.get("clientId", p["reason"]) for p in presence] == [
            "self",
            "openclaw-tui",
            "test",
        ]
        assert wire(normalized(presence[1])) == (
            '{"clientId":"openclaw-tui","mode":"ui","host":"<host>","version":"2026.9.6",'
            '"platform":"linux","deviceFamily":"Linux","instanceId":"<instanceId>",'
            '"roles":["operator"],"scopes":["operator.read"],"onlineSince":"<onlineSince>",'
            '"reason":"connect","text":"Node: unknown · mode ui","ts":"<ts>"}'
        )
        assert presence[1]["host"] == "openclaw-tui"  # no displayName: the client id
        assert presence[1]["instanceId"] == "tui-1"
        assert presence[0]["text"].startswith("Gateway: ")
        await other.ws.close()
        gone = await ws.event("presence")
        entry = next(p for p in gone["payload"]["presence"] if p.get("clientId") == "openclaw-tui")
        assert entry["reason"] == "disconnect" and isinstance(entry["lastActivityAt"], int)

    async def test_logs_tail(self, ws: GatewayWs) -> None:
        RING.append('{"event":"ws_test_line_1"}')
        RING.append('{"event":"ws_test_line_2"}')
        payload = await ws.ok("logs.tail", {"limit": 1})
        assert list(payload) == ["file", "logId", "cursor", "size", "truncated", "reset", "lines"]
        assert payload["file"] == "(memory)" and payload["cursor"] == payload["size"]
        assert payload["lines"][-1].startswith("{") and payload["truncated"] is True
        RING.append('{"event":"ws_test_line_3"}')
        newer = await ws.ok("logs.tail", {"cursor": payload["cursor"]})
        assert newer["lines"][0] == '{"event":"ws_test_line_3"}'
        assert newer["reset"] is False
        beyond = await ws.ok("logs.tail", {"cursor": newer["size"] + 10})
        assert beyond["reset"] is True

    async def test_logs_tail_lines_carry_the_time_and_message_openclaw_s_cli_shows(
        self, ws: GatewayWs
    ) -> None:
        """`openclaw logs` shows a line's `time`, `level` and `message`, else its raw JSON:
        logs.tail adds the two to our JSON lines (stderr keeps them as they are). A value a
        terminal would act on is quoted as JSON."""
        kept = (
            '{"path":"/a b","status":200,"agent":null,"name":"x\\u001b]0;t\\u0007","ok":true,'
            '"scopes":["operator.read"],"event":"http_request","level":"info",'
            '"ts":"2026-12-07T10:00:00.123456Z"}'
        )
        RING.append(kept)
        (line,) = (await ws.ok("logs.tail", {"limit": 1}))["lines"]
        assert line == kept[:-1] + (
            ',"time":"2026-12-07T10:00:00.123456Z","message":"http_request path=\\"/a b\\"'
            ' status=200 name=\\"x\\\\u001b]0;t\\\\u0007\\" ok=true scopes=[\\"operator.read\\"]"}'
        )
        assert json.loads(line)["message"] == (
            'http_request path="/a b" status=200 name="x\\u001b]0;t\\u0007" ok=true'
            ' scopes=["operator.read"]'
        )

    async def test_logs_tail_message_puts_a_traceback_on_the_lines_after(
        self, ws: GatewayWs
    ) -> None:
        trace = 'Traceback (most recent call last):\n  File "x\u001b"\nValueError: bad'
        RING.append(
            json.dumps(
                {
                    "conn_id": "c1",
                    "event": "ws_method_failed",
                    "level": "error",
                    "ts": "2026-12-07T10:00:00Z",
                    "exception": trace,
                }
            )
        )
        (line,) = (await ws.ok("logs.tail", {"limit": 1}))["lines"]
        assert json.loads(line)["message"] == (
            "ws_method_failed conn_id=c1\nTraceback (most recent call last):\n"
            '  File "x\\x1b"\nValueError: bad'
        )

    def test_logs_tail_max_bytes_counts_the_lines_as_answered(self) -> None:
        ring = LogRing()
        kept = ring.append('{"event":"ws_test_bytes","level":"info","ts":"2026-12-07T10:00:00Z"}')
        answered = tail(ring, TailParams(None, 1, 10_000))["lines"][0]
        assert len(answered) > len(kept)
        cut = tail(ring, TailParams(None, 1, len(kept) + 1))
        assert (cut["lines"], cut["truncated"]) == ([], True)
        whole = tail(ring, TailParams(None, 1, len(answered) + 1))
        assert (whole["lines"], whole["truncated"]) == ([answered], False)

    def test_logs_tail_of_two_workers_follows_their_shared_log(self, tmp_path: Path) -> None:
        """Two rings (two workers of `--workers`) writing one shared file: a cursor either
        hands out is read by the other, each line once; a cursor that is no line end of it,
        or beyond it, resets; another log's id resets."""
        path = str(tmp_path / "log")
        workers = [LogRing(shared=SharedLog.open(path)), LogRing(shared=SharedLog.open(path))]
        line = '{{"event":"line_{}","level":"info","ts":"2026-12-07T10:00:00Z","worker":{}}}'
        workers[0].append(line.format(0, 0))
        first = tail(workers[1], TailParams(None, 200, 250_000))
        assert [json.loads(x)["event"] for x in first["lines"]] == ["line_0"]
        cursor, seen = first["cursor"], []
        for n in range(1, 7):
            workers[n % 2].append(line.format(n, n % 2))
            answer = tail(workers[(n * 5) % 3 % 2], TailParams(cursor, 200, 250_000))
            assert answer["reset"] is False and answer["logId"] == first["logId"]
            seen += [json.loads(x)["event"] for x in answer["lines"]]
            cursor = answer["cursor"]
        assert seen == [f"line_{n}" for n in range(1, 7)]
        for bad in (cursor - 3, cursor + 1, 10**15):
            answer = tail(workers[0], TailParams(bad, 200, 250_000))
            assert answer["reset"] is True and len(answer["lines"]) == 7, bad
        other = tail(workers[0], TailParams(cursor, 200, 250_000, "another-log"))
        assert other["reset"] is True
        # A line end neither answered with: another log's cursor (a restart's whose new log
        # reached its offset) that happens to end a line of this one, told by either worker.
        workers[0].append(line.format(7, 0))
        workers[1].append(line.format(8, 1))
        line_end = cursor + len(line.format(7, 0)) + 1
        for worker in workers:
            unknown = tail(worker, TailParams(line_end, 200, 250_000))
            assert unknown["reset"] is True and len(unknown["lines"]) == 9
        cursor = unknown["cursor"]
        # A line another worker has begun and not ended is not read yet.
        with open(path, "ab") as file:
            file.write(b'{"event":"half')
        assert tail(workers[1], TailParams(cursor, 200, 250_000))["lines"] == []

    def test_the_shared_log_frees_its_start_and_keeps_its_offsets(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Its file would grow with everything ever logged: what is older than SHARED_KEEP
        bytes is freed (the disk it takes bounded), the cursors still count every byte, and a
        cursor into the freed part resets."""
        monkeypatch.setattr(logs, "SHARED_KEEP", 64 * 1024)
        monkeypatch.setattr(logs, "SHARED_PUNCH_EVERY", 16 * 1024)
        path = tmp_path / "log"
        ring = LogRing(shared=SharedLog.open(str(path)))
        line = '{"event":"n","level":"info","n":%d,"pad":"' + "x" * 200 + '"}'
        for n in range(4000):
            ring.append(line % n)
            if n == 3997:  # a cursor answered with: where a follower of the log got to
                got_to = tail(ring, TailParams(None, 1, 250_000))["cursor"]
        assert ring.shared is not None and ring.shared.fd is not None
        assert path.stat().st_size == ring.size > 900_000
        assert path.stat().st_blocks * 512 < 200 * 1024
        newest = tail(ring, TailParams(None, 5, 250_000))
        assert newest["cursor"] == ring.size
        assert [json.loads(x)["n"] for x in newest["lines"]] == [3995, 3996, 3997, 3998, 3999]
        later = tail(ring, TailParams(got_to, 200, 250_000))
        assert later["reset"] is False
        assert [json.loads(x)["n"] for x in later["lines"]] == [3998, 3999]
        old = tail(ring, TailParams(len(line % 0) + 1, 200, 250_000))
        assert old["reset"] is True
        assert json.loads(old["lines"][0])["n"] > 3000
        # A window that holds no line end: no line, not a piece of one.
        assert tail(ring, TailParams(None, 5, 100))["lines"] == []

    async def test_a_call_s_log_line_cuts_what_the_client_chose_to_a_bounded_length(
        self, ws: GatewayWs
    ) -> None:
        """An unknown method name is the client's, up to 25 MB: the canonical line keeps its
        first FIELD_CHARS characters and says how many it cut, so a reader cannot fill
        stderr (journald splits lines past 48 KiB) at a frame's size. The frame id is at
        most REQUEST_ID_MAX characters, so it is logged whole."""
        huge = "m" * 100_000
        with production_logging() as log:
            frame_id = await ws.request(huge, id="i" * protocol.REQUEST_ID_MAX)
            assert (await ws.response(frame_id))["ok"] is False
        (line,) = (e for e in log.read() if e["event"] == "ws_call")
        assert line["method"] == "m" * FIELD_CHARS + f"…(+{100_000 - FIELD_CHARS} chars)"
        assert line["request_id"] == "i" * protocol.REQUEST_ID_MAX
        assert len(RING.lines[-1][1]) < 3 * FIELD_CHARS + 1000

    async def test_compat_methods_answer_their_empty_state(self, ws: GatewayWs) -> None:
        answers = {
            "channels.status": {"channelOrder": [], "channels": {}},
            "cron.list": EMPTY_CRON_PAGE,
            "node.list": {"nodes": []},
            "device.pair.list": {"pending": [], "paired": []},
            "question.list": {"questions": []},
            "exec.approval.list": [],
            "plugin.approval.list": [],
            "openclaw.approval.list": [],
            "taskSuggestions.list": {"suggestions": []},
            "environments.list": {"environments": []},
            "commands.list": {"commands": []},
            "skills.status": {"skills": []},
            "hooks.status": {"hooks": []},
            "cron.status": {"enabled": False, "jobs": 0, "nextWakeAtMs": None},
            "node.pair.list": {"pending": [], "paired": []},
            "last-heartbeat": None,
            "diagnostics.stability": {
                "capacity": 0,
                "count": 0,
                "dropped": 0,
                "events": [],
                "summary": {"byType": {}},
            },
            "sessions.subscribe": {"subscribed": True},
            "sessions.unsubscribe": {"subscribed": False},
        }
        for method, answer in answers.items():
            assert await ws.ok(method, {"ignored": 1}) == answer, method

    @pytest.mark.parametrize(
        "method", ["exec.approval.list", "plugin.approval.list", "openclaw.approval.list"]
    )
    async def test_approval_lists_need_the_approvals_scope(
        self, gateway: Gateway, method: str
    ) -> None:
        ws = await gateway.connected(scopes=["operator.read", "operator.write"])
        assert (await ws.call(method))["error"]["message"] == "missing scope: operator.approvals"
        await ws.ws.close()
        approver = await gateway.connected(scopes=["operator.approvals"])
        assert await approver.ok(method) == []
        await approver.ws.close()

    async def test_cron_runs_of_a_job_find_no_such_job_and_of_all_none(self, ws: GatewayWs) -> None:
        frame = await ws.call("cron.runs", {"id": "nightly", "limit": 5})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "Automation not found: nightly. List automations and retry with a "
            "current job id.",
            "details": {"code": "CRON_JOB_NOT_FOUND", "jobId": "nightly"},
        }
        assert (await ws.call("cron.runs", {"jobId": "x"}))["error"]["details"]["jobId"] == "x"
        assert await ws.ok("cron.runs", {"scope": "all", "limit": 5}) == {
            "entries": [],
            "total": 0,
            "offset": 0,
            "limit": 5,
            "hasMore": False,
            "nextOffset": None,
        }
        frame = await ws.call("cron.runs", {"id": "x", "limit": 0})
        assert frame["error"]["message"] == "invalid cron.runs params: at /limit: must be >= 1"

    async def test_question_list_needs_the_questions_scope(self, gateway: Gateway) -> None:
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("question.list")
        assert frame["error"]["message"] == "missing scope: operator.questions"
        await reader.ws.close()
        asker = await gateway.connected(scopes=["operator.questions"])
        assert await asker.ok("question.list") == {"questions": []}
        await asker.ws.close()

    @pytest.mark.parametrize("method", ["device.pair.list", "node.pair.list"])
    async def test_pair_lists_need_the_pairing_scope(self, gateway: Gateway, method: str) -> None:
        ws = await gateway.connected(scopes=["operator.read"])
        assert (await ws.call(method))["error"]["message"] == "missing scope: operator.pairing"
        await ws.ws.close()

    async def test_sessions_describe(self, ws: GatewayWs) -> None:
        empty = await ws.ok("sessions.describe", {"key": "Nobody"})
        assert empty["session"]["key"] == "agent:main:nobody"
        assert empty["session"]["updatedAt"] is None and empty["session"]["status"] == "idle"
        await ws.ok("sessions.patch", {"key": "nobody", "label": "Somebody"})
        row = (await ws.ok("sessions.describe", {"key": "nobody"}))["session"]
        assert row["label"] == "Somebody" and isinstance(row["updatedAt"], int)
        listed = await ws.ok("sessions.list")
        assert listed["sessions"] == [row]


class TestLogReaders:
    """`openclaw logs --follow` polls with a connection per poll (connect, logs.tail, close):
    a connection that only reads the log is logged at debug, its `ws_connected` line (logged
    once it shows what it is) and its calls too, and an answer leaves out the caller's own
    `ws_connected` line, so that the tail shows what the gateway did, not its readers, and
    journald does not get four lines a second per reader."""

    LINES = ("ws_connected", "ws_call", "ws_disconnected", "http_request")

    async def lines_of(self, gateway: Gateway, *calls: tuple[str, Any]) -> list[tuple[str, ...]]:
        with capture_logs() as logs:
            ws = await gateway.connected()
            for method, params in calls:
                await ws.call(method, params)
            await ws.ws.close()
            for _ in range(200):
                if {"http_request", "ws_disconnected"} <= {e["event"] for e in logs}:
                    break
                await asyncio.sleep(0.01)
        # In this order (the last two come in either: the handler ends as the socket closes).
        lines = [e for e in logs if e["event"] in self.LINES]
        lines.sort(key=lambda e: self.LINES.index(e["event"]))
        return [(e["event"], e.get("method") or "", e["log_level"]) for e in lines]

    async def test_a_connection_that_only_read_the_log_is_logged_at_debug(
        self, gateway: Gateway
    ) -> None:
        tail = ("logs.tail", {"limit": 1})
        assert await self.lines_of(gateway, tail, tail) == [
            ("ws_connected", "", "debug"),  # logged at its end
            ("ws_call", "logs.tail", "debug"),
            ("ws_call", "logs.tail", "debug"),
            ("ws_disconnected", "", "debug"),
            ("http_request", "GET", "debug"),
        ]

    async def test_a_connection_that_did_anything_else_is_logged_at_info(
        self, gateway: Gateway
    ) -> None:
        lines = await self.lines_of(gateway, ("logs.tail", {}), ("status", {}))
        assert lines == [
            ("ws_connected", "", "info"),
            ("ws_call", "logs.tail", "debug"),
            ("ws_call", "status", "info"),
            ("ws_disconnected", "", "info"),
            ("http_request", "GET", "info"),
        ]

    async def test_a_failed_read_of_the_log_is_logged_at_info(self, gateway: Gateway) -> None:
        assert await self.lines_of(gateway, ("logs.tail", {"limit": 0})) == [
            ("ws_connected", "", "info"),
            ("ws_call", "logs.tail", "info"),
            ("ws_disconnected", "", "info"),
            ("http_request", "GET", "info"),
        ]

    async def test_a_connection_without_a_call_is_logged_at_info(self, gateway: Gateway) -> None:
        assert [level for *_, level in await self.lines_of(gateway)] == ["info"] * 3

    async def test_one_that_only_listens_has_its_ws_connected_line_soon_not_at_a_tick(
        self, gateway: Gateway
    ) -> None:
        """A client that makes no call (it listens to events) was logged at the next tick,
        up to 30 s after it came: its line now comes a second after its hello-ok."""
        with capture_logs() as logs:
            ws = await gateway.connected()
            for _ in range(200):  # 10 s: a third of the tick interval
                if any(e["event"] == "ws_connected" for e in logs):
                    break
                await asyncio.sleep(0.05)
            connected = [e for e in logs if e["event"] == "ws_connected"]
            assert [e["log_level"] for e in connected] == ["info"]
            await ws.ws.close()

    async def test_a_log_reader_still_open_a_second_in_is_not_taken_for_a_listener(
        self, gateway: Gateway
    ) -> None:
        """A poll of the log that stays open past the listener's second (a loaded host) keeps
        its line at debug: it showed what it is by asking."""
        with capture_logs() as logs:
            ws = await gateway.connected()
            await ws.call("logs.tail", {"limit": 1})
            await asyncio.sleep(1.5)  # past the listener's second
            await ws.ws.close()
            for _ in range(200):
                if "ws_disconnected" in {e["event"] for e in logs}:
                    break
                await asyncio.sleep(0.01)
        connected = [e for e in logs if e["event"] == "ws_connected"]
        assert [e["log_level"] for e in connected] == ["debug"]

    async def test_an_answer_leaves_out_its_caller_s_own_ws_connected_line(
        self, gateway: Gateway
    ) -> None:
        with production_logging():
            other = await gateway.connected(client={**CLIENT, "id": "other"})
            await other.ok("status")  # its arrival is logged with its first call
            reader = await gateway.connected()
            lines = (await reader.ok("logs.tail", {"limit": 5000}))["lines"]
            await other.ws.close()
            await reader.ws.close()
        clients = [json.loads(line)["client_id"] for line in lines if "ws_connected" in line]
        assert clients[-1:] == ["other"]

    async def test_a_caller_that_did_anything_else_gets_its_own_ws_connected_line(
        self, gateway: Gateway
    ) -> None:
        """The Control UI's Logs screen shows its own arrival."""
        with production_logging():
            ws = await gateway.connected(client={**CLIENT, "id": "itself"})
            await ws.ok("status")
            lines = (await ws.ok("logs.tail", {"limit": 5000}))["lines"]
            await ws.ws.close()
        clients = [json.loads(line)["client_id"] for line in lines if "ws_connected" in line]
        assert clients[-1:] == ["itself"]


class TestSessionKeysThatAreNotText:
    """A lone surrogate (JSON can spell one, UTF-8 cannot) is no session key: repaired to
    U+FFFD, two different keys would share a session, as HTTP's header refuses."""

    @pytest.mark.parametrize(
        ("method", "field", "params"),
        [
            ("chat.send", "sessionKey", {"message": "hi", "idempotencyKey": "lone-1"}),
            ("chat.history", "sessionKey", {}),
            ("chat.abort", "sessionKey", {}),
            ("chat.subscribe", "sessionKey", {}),
            ("chat.unsubscribe", "sessionKey", {}),
            ("agent", "sessionKey", {"message": "hi", "idempotencyKey": "lone-2"}),
            ("sessions.patch", "key", {"label": "L"}),
            ("sessions.reset", "key", {}),
            ("sessions.delete", "key", {}),
            ("sessions.describe", "key", {}),
        ],
    )
    async def test_a_key_with_a_lone_surrogate_is_refused(
        self, ws: GatewayWs, method: str, field: str, params: dict[str, Any]
    ) -> None:
        body = json.dumps(params)[1:-1]
        body = f'"{field}":"a\\ud800b"' + (f",{body}" if body else "")
        await ws.send(f'{{"type":"req","id":"lone","method":"{method}","params":{{{body}}}}}')
        frame = await ws.response("lone")
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"invalid {method} params: at /{field}: invalid session key"
            " (a lone UTF-16 surrogate is not text)",
        }
        listed = await ws.ok("sessions.list")
        assert listed["sessions"] == []

    async def test_two_idempotency_keys_with_lone_surrogates_are_not_one_call(
        self, ws: GatewayWs
    ) -> None:
        """Repaired to U+FFFD, `k\\ud800` and `k\\udbff` would be one key: the second
        message would be answered as a repeat of the first and never run. Each is refused,
        and a key that spells U+FFFD itself is an ordinary key."""
        for session, key in (("lone-a", "k\\ud800"), ("lone-b", "k\\udbff")):
            params = f'{{"sessionKey":"{session}","message":"hi","idempotencyKey":"{key}"}}'
            method = '"method":"chat.send"'
            await ws.send(f'{{"type":"req","id":"{session}",{method},"params":{params}}}')
            assert (await ws.response(session))["error"] == {
                "code": "INVALID_REQUEST",
                "message": "invalid chat.send params: at /idempotencyKey: invalid idempotency"
                " key (a lone UTF-16 surrogate is not text)",
            }
        assert (await ws.ok("sessions.list"))["sessions"] == []
        assert (await ws.ok("chat.send", send("fffd", "hi", "k\ufffd")))["status"] == "started"

    @pytest.mark.parametrize(
        ("method", "params"),
        [
            ("agent", '{"message":"hi","sessionKey":"lone","idempotencyKey":"k\\ud800"}'),
            ("agent.wait", '{"runId":"k\\ud800","timeoutMs":0}'),
            ("chat.abort", '{"sessionKey":"lone","runId":"k\\ud800"}'),
        ],
    )
    async def test_a_run_id_with_a_lone_surrogate_is_refused(
        self, ws: GatewayWs, method: str, params: str
    ) -> None:
        """The run of another key repaired to the same text is not named by it either."""
        await ws.ok("chat.send", send("lone", "hi", "k\ufffd"))
        await ws.send(f'{{"type":"req","id":"lone","method":"{method}","params":{params}}}')
        field = "runId" if "runId" in params else "idempotencyKey"
        kind = "run id" if field == "runId" else "idempotency key"
        assert (await ws.response("lone"))["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"invalid {method} params: at /{field}: invalid {kind}"
            " (a lone UTF-16 surrogate is not text)",
        }

    async def test_a_key_that_spells_u_fffd_itself_is_a_key(self, ws: GatewayWs) -> None:
        await ws.send(
            '{"type":"req","id":"fffd","method":"sessions.patch",'
            '"params":{"key":"a\\ufffdb","label":"L"}}'
        )
        frame = await ws.response("fffd")
        assert frame["ok"] is True and frame["payload"]["key"] == "agent:main:a\ufffdb"

    async def test_a_preview_row_of_such_a_key_is_an_error(self, ws: GatewayWs) -> None:
        await ws.ok("sessions.patch", {"key": "a\ufffdb", "label": "L"})
        await ws.send(
            '{"type":"req","id":"pv","method":"sessions.preview",'
            '"params":{"keys":["a\\ud800b","a\\ufffdb"]}}'
        )
        previews = (await ws.response("pv"))["payload"]["previews"]
        assert [p["status"] for p in previews] == ["error", "empty"]


class TestSessions:
    async def test_list_shape(self, ws: GatewayWs, gateway: Gateway) -> None:
        await ws.ok("chat.send", {"sessionKey": "ws-1", "message": "hi", "idempotencyKey": "l-1"})
        await ws.event("chat", state="final")
        payload = normalized(await ws.ok("sessions.list", {"limit": 10}))
        assert wire(payload) == wire(
            {
                "ts": "<ts>",
                "path": str(gateway.state_dir / "sessions.sqlite3"),
                "count": 1,
                "totalCount": 1,
                "nextOffset": None,
                "hasMore": False,
                "defaults": {"modelProvider": "echo", "model": "echo", "contextTokens": None},
                "sessions": [
                    {
                        "key": "agent:main:ws-1",
                        "kind": "direct",
                        "agentId": "main",
                        "isMain": False,
                        "label": None,
                        "sessionId": "<sessionId>",
                        "createdAt": "<createdAt>",
                        "updatedAt": "<updatedAt>",
                        "abortedLastRun": False,
                        "inputTokens": 1,
                        "outputTokens": 3,
                        "totalTokens": 1,
                        "modelProvider": "echo",
                        "model": "echo",
                        "status": "done",
                        "lastRunId": "l-1",
                        "hasActiveRun": False,
                        "activeRunIds": [],
                    }
                ],
            }
        )

    async def test_list_filters(self, ws: GatewayWs) -> None:
        for key, label in (("a1", "Alpha"), ("b1", "Beta"), ("c1", None)):
            await ws.ok("sessions.patch", {"key": key, "label": label})
        assert (await ws.ok("sessions.list", {"search": "alp"}))["totalCount"] == 1
        assert (await ws.ok("sessions.list", {"label": "Beta"}))["sessions"][0]["key"] == (
            "agent:main:b1"
        )
        limited = await ws.ok("sessions.list", {"limit": 2})
        assert (limited["count"], limited["totalCount"], limited["hasMore"]) == (2, 3, True)
        assert (await ws.ok("sessions.list", {"activeMinutes": 5}))["totalCount"] == 3

    async def test_list_pages_on_with_offset(self, ws: GatewayWs) -> None:
        """OpenClaw's paging, which `openclaw sessions delete` follows to an old key."""
        for key in ("p1", "p2", "p3"):
            await ws.ok("sessions.patch", {"key": key, "label": key})
        whole = [row["key"] for row in (await ws.ok("sessions.list"))["sessions"]]
        first = await ws.ok("sessions.list", {"limit": 2})
        assert [row["key"] for row in first["sessions"]] == whole[:2]
        assert (first["nextOffset"], first["hasMore"], "offset" in first) == (2, True, False)
        last = await ws.ok("sessions.list", {"limit": 2, "offset": first["nextOffset"]})
        assert [row["key"] for row in last["sessions"]] == whole[2:]
        assert (last["count"], last["totalCount"], last["offset"]) == (1, 3, 2)
        assert (last["nextOffset"], last["hasMore"]) == (None, False)
        beyond = await ws.ok("sessions.list", {"offset": 5})
        assert (beyond["sessions"], beyond["nextOffset"], beyond["hasMore"]) == ([], None, False)
        frame = await ws.call("sessions.list", {"offset": 10_001})
        assert frame["error"]["message"] == (
            "invalid sessions.list params: at /offset: must be <= 10000"
        )

    @pytest.mark.parametrize(
        "search", ["Ärger", "ärger", "ÄRGER", "über"], ids=["exact", "lower", "upper", "inner"]
    )
    async def test_list_search_ignores_the_case_of_any_letter(
        self, ws: GatewayWs, search: str
    ) -> None:
        await ws.ok("sessions.patch", {"key": "umlaut", "label": "Ärger Über"})
        await ws.ok("sessions.patch", {"key": "plain", "label": "Plain"})
        listed = await ws.ok("sessions.list", {"search": search})
        assert [s["label"] for s in listed["sessions"]] == ["Ärger Über"]

    @pytest.mark.parametrize("minutes", [1e300, 1.7e308])
    async def test_list_any_number_of_active_minutes(self, ws: GatewayWs, minutes: float) -> None:
        """More minutes than have passed since 1970 keep every session."""
        await ws.ok("sessions.patch", {"key": "a1", "label": "Alpha"})
        assert (await ws.ok("sessions.list", {"activeMinutes": minutes}))["totalCount"] == 1

    async def test_patch_upserts_and_emits_sessions_changed(self, ws: GatewayWs) -> None:
        payload = await ws.ok("sessions.patch", {"key": "X", "label": "  My label "})
        assert (payload["ok"], payload["key"]) == (True, "agent:main:x")
        assert payload["entry"]["label"] == "My label"
        changed = await ws.event("sessions.changed", reason="patch")
        assert list(changed["payload"]) == ["sessionKey", "agentId", "ts", "reason", "session"]
        assert changed["payload"]["session"] == payload["entry"]
        cleared = await ws.ok("sessions.patch", {"key": "x", "label": None})
        assert cleared["entry"]["label"] is None

    @pytest.mark.parametrize("method", ["sessions.patch", "sessions.reset"])
    async def test_no_session_is_created_for_an_agent_that_is_not_configured(
        self, ws: GatewayWs, gateway: Gateway, method: str
    ) -> None:
        # agents-sessions.md §4: its runs fail with `Unknown agent`; a row made for it could
        # never run, only fill the store and sessions.list.
        frame = await ws.call(method, {"key": "agent:ghost:x", **LABEL[method]})
        assert frame["error"] == {"code": "INVALID_REQUEST", "message": "Unknown agent 'ghost'."}
        assert await gateway.app[STATE].store.get("agent:ghost:x") is None
        assert (await ws.ok("sessions.list", {}))["sessions"] == []

    @pytest.mark.parametrize("method", ["sessions.patch", "sessions.reset"])
    async def test_a_kept_session_of_an_agent_removed_from_the_config_can_still_be_changed(
        self, ws: GatewayWs, gateway: Gateway, method: str
    ) -> None:
        # Its row stays in the store and is listed (§4): it can be relabelled and reset.
        store = gateway.app[STATE].store
        await store.patch_label("agent:gone:x", "gone", "Kept", 1)
        payload = await ws.ok(method, {"key": "agent:gone:x", **LABEL[method]})
        assert (payload["ok"], payload["entry"]["agentId"]) == (True, "gone")

    async def test_reset_gives_a_new_session_id_and_turn_1(self, ws: GatewayWs) -> None:
        await ws.ok("chat.send", {"sessionKey": "r", "message": "one", "idempotencyKey": "r-1"})
        first = await ws.event("chat", state="final")
        assert first["payload"]["message"]["content"][0]["text"] == "[turn 1] one"
        before = (await ws.ok("sessions.describe", {"key": "r"}))["session"]
        payload = await ws.ok("sessions.reset", {"key": "r", "reason": "new"})
        assert payload["entry"]["sessionId"] != before["sessionId"]
        assert payload["entry"]["inputTokens"] == 0
        await ws.event("sessions.changed", reason="reset")
        await ws.ok("chat.send", {"sessionKey": "r", "message": "two", "idempotencyKey": "r-2"})
        final = await ws.event("chat", state="final", runId="r-2")
        assert final["payload"]["message"]["content"][0]["text"] == "[turn 1] two"

    async def test_delete(self, ws: GatewayWs) -> None:
        await ws.ok("sessions.patch", {"key": "d", "label": "gone soon"})
        assert await ws.ok("sessions.delete", {"key": "d"}) == {
            "ok": True,
            "key": "agent:main:d",
            "deleted": True,
            "archived": [],
        }
        changed = await ws.event("sessions.changed", reason="delete")
        assert changed["payload"]["session"] is None
        again = await ws.ok("sessions.delete", {"key": "d"})
        assert again["deleted"] is False

    async def test_delete_of_a_session_that_changed_since_it_was_read_is_refused(
        self, ws: GatewayWs
    ) -> None:
        """OpenClaw's guard (`openclaw sessions delete` sends the id it listed): a session
        reset (or deleted and made again) since is not the one the caller chose."""
        listed = await ws.ok("sessions.patch", {"key": "g", "label": "guarded"})
        old_id = listed["entry"]["sessionId"]
        await ws.ok("sessions.reset", {"key": "g"})
        frame = await ws.call("sessions.delete", {"key": "g", "expectedSessionId": old_id})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "Session agent:main:g changed before deletion. Retry.",
            "details": {"reason": "session-changed"},
        }
        current = (await ws.ok("sessions.describe", {"key": "g"}))["session"]["sessionId"]
        deleted = await ws.ok("sessions.delete", {"key": "g", "expectedSessionId": current})
        assert deleted["deleted"] is True
        frame = await ws.call("sessions.delete", {"key": "g", "expectedSessionId": current})
        assert frame["error"]["message"] == "Session agent:main:g changed before deletion. Retry."

    async def test_a_reset_that_gets_in_before_a_guarded_delete_keeps_the_new_session(
        self, ws: GatewayWs
    ) -> None:
        """The guard holds under the session's lock: a reset asked just before the delete
        (its answer not yet in) makes a session the caller did not choose, which stays."""
        listed = await ws.ok("sessions.patch", {"key": "race", "label": "guarded"})
        old_id = listed["entry"]["sessionId"]
        reset = await ws.request("sessions.reset", {"key": "race"})
        guarded = {"key": "race", "expectedSessionId": old_id}
        delete = await ws.request("sessions.delete", guarded)
        new_id = (await ws.response(reset))["payload"]["entry"]["sessionId"]
        frame = await ws.response(delete)
        assert frame["ok"] is False, frame
        assert frame["error"]["details"] == {"reason": "session-changed"}
        described = await ws.ok("sessions.describe", {"key": "race"})
        assert described["session"]["sessionId"] == new_id

    async def test_the_main_session_cannot_be_deleted(self, ws: GatewayWs) -> None:
        frame = await ws.call("sessions.delete", {"key": "main"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "Cannot delete the main session (agent:main:main).",
        }


class TestPinnedSessions:
    """OpenClaw's pins (its Control UI's Pin and Unpin): `sessions.patch {pinned}`, the rows
    that say so, the pinned listed first, and an archive that unpins."""

    async def test_pin_lists_first_and_unpin(self, ws: GatewayWs) -> None:
        for key in ("a", "b", "c"):
            await ws.ok("sessions.create", {"key": key})
        patched = await ws.ok("sessions.patch", {"key": "a", "pinned": True})
        entry = patched["entry"]
        assert (entry["pinned"], entry["label"]) == (True, None)
        assert isinstance(entry["pinnedAt"], int)
        changed = await ws.event("sessions.changed", reason="patch")
        assert changed["payload"]["session"]["pinnedAt"] == entry["pinnedAt"]
        listed = await ws.ok("sessions.list", {})
        keys = [r["key"] for r in listed["sessions"]]
        # The pinned first; b and c, made in the same millisecond maybe, in either order.
        assert keys[0] == "agent:main:a" and set(keys[1:]) == {"agent:main:b", "agent:main:c"}
        assert listed["sessions"][0]["pinned"] is True
        assert "pinned" not in listed["sessions"][1]
        unpinned = await ws.ok("sessions.patch", {"key": "a", "pinned": False})
        assert not {"pinned", "pinnedAt"} & set(unpinned["entry"])

    async def test_an_archived_session_is_unpinned_and_not_pinned(self, ws: GatewayWs) -> None:
        created = await ws.ok("sessions.create", {"key": "p", "label": "before"})
        sid = created["sessionId"]
        await ws.ok("sessions.patch", {"key": "p", "pinned": True})
        archived = await ws.ok(
            "sessions.patch", {"key": "p", "archived": True, "expectedSessionId": sid}
        )
        assert "pinned" not in archived["entry"]
        refused = {
            "code": "INVALID_REQUEST",
            "message": "cannot pin an archived session; restore it first",
        }
        for params in (
            {"key": "p", "pinned": True, "label": "after"},  # the label is not written either
            {"key": "p", "pinned": True, "archived": True, "expectedSessionId": sid},
        ):
            frame = await ws.call("sessions.patch", params)
            assert frame["error"] == refused
        row = (await ws.ok("sessions.describe", {"key": "p"}))["session"]
        assert (row["label"], row["archived"], "pinned" in row) == ("before", True, False)
        frame = await ws.call(
            "sessions.patch",
            {"key": "x", "archived": True, "pinned": True, "expectedSessionId": "s"},
        )
        assert frame["error"]["message"] == "session not found: agent:main:x"
        restored = await ws.ok(
            "sessions.patch",
            {"key": "p", "archived": False, "pinned": True, "expectedSessionId": sid},
        )
        assert (restored["entry"]["pinned"], "archived" in restored["entry"]) == (True, False)


class TestArchivedSessions:
    """OpenClaw's archiving: `sessions.patch {archived}`, the lists that hide or show the
    archived sessions, the work refused on them, and the delete of archived ones only."""

    @staticmethod
    async def archived(ws: GatewayWs, key: str) -> dict[str, Any]:
        created = await ws.ok("sessions.create", {"key": key})
        params = {"key": key, "archived": True, "expectedSessionId": created["sessionId"]}
        return dict(await ws.ok("sessions.patch", params))

    async def test_archive_then_restore(self, ws: GatewayWs) -> None:
        patched = await self.archived(ws, "old")
        entry = patched["entry"]
        assert (entry["archived"], entry["archiveReason"]) == (True, "manual")
        assert isinstance(entry["archivedAt"], int)
        changed = await ws.event("sessions.changed", reason="patch")
        assert changed["payload"]["session"]["archivedAt"] == entry["archivedAt"]
        sid = entry["sessionId"]
        again = await ws.ok(
            "sessions.patch", {"key": "old", "archived": True, "expectedSessionId": sid}
        )
        assert again["entry"]["archivedAt"] == entry["archivedAt"]  # the first archive's
        restored = await ws.ok(
            "sessions.patch", {"key": "old", "archived": False, "expectedSessionId": sid}
        )
        assert not {"archived", "archivedAt", "archiveReason"} & set(restored["entry"])
        described = await ws.ok("sessions.describe", {"key": "old"})
        assert "archivedAt" not in described["session"]

    async def test_the_list_hides_the_archived_unless_asked(self, ws: GatewayWs) -> None:
        await ws.ok("sessions.create", {"key": "live"})
        await self.archived(ws, "gone")

        async def keys(**params: Any) -> list[str]:
            listed = await ws.ok("sessions.list", params)
            assert listed["totalCount"] == listed["count"]
            return sorted(row["key"] for row in listed["sessions"])

        assert await keys() == ["agent:main:live"]
        assert await keys(archived=False) == ["agent:main:live"]
        assert await keys(archived=True) == ["agent:main:gone"]
        assert await keys(archived="all") == ["agent:main:gone", "agent:main:live"]
        row = (await ws.ok("sessions.list", {"archived": True}))["sessions"][0]
        assert (row["archived"], row["archiveReason"]) == (True, "manual")

    async def test_only_an_existing_session_named_by_its_id_is_archived(
        self, ws: GatewayWs
    ) -> None:
        frame = await ws.call(
            "sessions.patch", {"key": "ghost", "archived": True, "expectedSessionId": "s"}
        )
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "session not found: agent:main:ghost",
        }
        created = await ws.ok("sessions.create", {"key": "bare"})
        frame = await ws.call("sessions.patch", {"key": "bare", "archived": True})
        assert frame["error"]["message"] == (
            "expectedSessionId required for session lifecycle patch: agent:main:bare"
        )
        await ws.ok("sessions.reset", {"key": "bare"})
        stale = {"key": "bare", "archived": True, "expectedSessionId": created["sessionId"]}
        frame = await ws.call("sessions.patch", stale)
        assert frame["error"]["details"] == {"reason": "session-changed"}
        row = (await ws.ok("sessions.describe", {"key": "bare"}))["session"]
        assert "archived" not in row

    async def test_the_main_session_is_not_archived(self, ws: GatewayWs) -> None:
        await ws.ok("chat.send", {"sessionKey": "main", "message": "hi", "idempotencyKey": "m"})
        await ws.event("chat", state="final", runId="m")
        sid = (await ws.ok("sessions.describe", {"key": "main"}))["session"]["sessionId"]
        frame = await ws.call(
            "sessions.patch", {"key": "main", "archived": True, "expectedSessionId": sid}
        )
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "Cannot archive an agent's main session.",
        }

    async def test_no_new_work_starts_on_an_archived_session(self, ws: GatewayWs) -> None:
        await self.archived(ws, "shut")
        refused = 'Session "agent:main:shut" is archived. Restore it before starting new work.'
        for method, params in [
            ("chat.send", {"sessionKey": "shut", "message": "hi", "idempotencyKey": "c1"}),
            ("agent", {"sessionKey": "shut", "message": "hi", "idempotencyKey": "a1"}),
            ("agent", {"sessionKey": "shut", "message": "/reset hi", "idempotencyKey": "a2"}),
        ]:
            frame = await ws.call(method, params)
            assert frame["error"] == {"code": "INVALID_REQUEST", "message": refused}, method
        history = await ws.ok("chat.history", {"sessionKey": "shut"})
        assert history["messages"] == []
        sid = (await ws.ok("sessions.list", {"archived": True}))["sessions"][0]["sessionId"]
        await ws.ok("sessions.patch", {"key": "shut", "archived": False, "expectedSessionId": sid})
        await ws.ok("chat.send", {"sessionKey": "shut", "message": "hi", "idempotencyKey": "c2"})
        final = await ws.event("chat", state="final", runId="c2")
        assert final["payload"]["message"]["content"][0]["text"] == "[turn 1] hi"

    async def test_status_counts_the_archived_as_openclaw_s(self, ws: GatewayWs) -> None:
        """OpenClaw's health and status summaries read every session of the store, archived
        ones too (only its session lists leave them out): so do clawgate's."""
        await self.archived(ws, "gone")
        # The health snapshot reads the same lists as status (gateway/ws/health.py).
        status = await ws.ok("status")
        assert status["sessions"]["count"] == 1
        assert [r["key"] for r in status["sessions"]["recent"]] == ["agent:main:gone"]

    async def test_a_retried_send_answers_its_run_after_the_archive(self, ws: GatewayWs) -> None:
        """A chat.send retried with its idempotencyKey after its session was archived
        answers its run's status, as any retry does: it starts no new work."""
        send = {"sessionKey": "retry", "message": "hi", "idempotencyKey": "r1"}
        assert (await ws.ok("chat.send", send))["status"] == "started"
        await ws.event("chat", state="final", runId="r1")
        sid = (await ws.ok("sessions.describe", {"key": "retry"}))["session"]["sessionId"]
        await ws.ok("sessions.patch", {"key": "retry", "archived": True, "expectedSessionId": sid})
        assert await ws.ok("chat.send", send) == {"runId": "r1", "status": "ok"}
        refused = 'Session "agent:main:retry" is archived. Restore it before starting new work.'
        frame = await ws.call("chat.send", {**send, "idempotencyKey": "r2"})
        assert frame["error"] == {"code": "INVALID_REQUEST", "message": refused}

    async def test_create_and_reset_of_an_archived_session_are_refused(self, ws: GatewayWs) -> None:
        """OpenClaw's: a reset (sessions.reset, or sessions.create naming the session,
        which resets it there) is new work, refused until the session is restored; the
        first message of such a create is not dropped in silence."""
        sid = (await self.archived(ws, "shelf"))["entry"]["sessionId"]
        message = 'Session "agent:main:shelf" is archived. Restore it before starting new work.'
        refused = {"code": "INVALID_REQUEST", "message": message}
        for method, params in [
            ("sessions.reset", {"key": "shelf"}),
            ("sessions.create", {"key": "shelf", "message": "hi"}),
            ("sessions.create", {"key": "shelf"}),
        ]:
            frame = await ws.call(method, params)
            assert frame["error"] == refused, (method, params)
        row = (await ws.ok("sessions.describe", {"key": "shelf"}))["session"]
        assert (row["sessionId"], row["archived"]) == (sid, True)
        assert (await ws.ok("chat.history", {"sessionKey": "shelf"}))["messages"] == []
        await ws.ok("sessions.patch", {"key": "shelf", "archived": False, "expectedSessionId": sid})
        reset = await ws.ok("sessions.reset", {"key": "shelf"})
        assert reset["entry"]["sessionId"] != sid

    async def test_archived_only_deletes_only_an_archived_session(self, ws: GatewayWs) -> None:
        created = await ws.ok("sessions.create", {"key": "kept"})
        params = {
            "key": "kept",
            "deleteTranscript": True,
            "expectedSessionId": created["sessionId"],
            "archivedOnly": True,
        }
        frame = await ws.call("sessions.delete", params)
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "Session agent:main:kept is not archived. Archive it first, then delete it.",
        }
        assert (await ws.ok("sessions.describe", {"key": "kept"}))["session"]["updatedAt"]
        await ws.ok(
            "sessions.patch",
            {"key": "kept", "archived": True, "expectedSessionId": created["sessionId"]},
        )
        deleted = await ws.ok("sessions.delete", params)
        assert (deleted["key"], deleted["deleted"]) == ("agent:main:kept", True)
        assert (await ws.ok("sessions.describe", {"key": "kept"}))["session"]["updatedAt"] is None

    async def test_archived_only_needs_write_and_anything_more_admin(
        self, gateway: Gateway
    ) -> None:
        admin = await gateway.connected()
        created = await self.archived(admin, "w")
        writer = await gateway.connected(scopes=["operator.read", "operator.write"])
        params = {"key": "w", "agentId": "main", "archivedOnly": True}
        frame = await writer.call("sessions.delete", {**params, "extra": 1})
        assert frame["error"]["message"] == "missing scope: operator.admin"
        frame = await writer.call("sessions.delete", {**params, "archivedOnly": False})
        assert frame["error"]["message"] == "missing scope: operator.admin"
        deleted = await writer.ok(
            "sessions.delete",
            {
                **params,
                "deleteTranscript": True,
                "expectedSessionId": created["entry"]["sessionId"],
            },
        )
        assert deleted["deleted"] is True
        await writer.ws.close()
        await admin.ws.close()


class TestSessionsPatchGuards:
    """OpenClaw's Control UI renames a session with `{key, agentId, expectedSessionId,
    label}`: the agent the key is relative to, and the session it read."""

    async def test_a_rename_of_the_session_read_applies(self, ws: GatewayWs) -> None:
        created = await ws.ok("sessions.create", {"key": "named"})
        params = {
            "key": "agent:main:named",
            "agentId": "main",
            "expectedSessionId": created["sessionId"],
            "label": "Renamed chat",
        }
        patched = await ws.ok("sessions.patch", params)
        assert (patched["key"], patched["entry"]["label"]) == ("agent:main:named", "Renamed chat")

    async def test_a_session_reset_since_is_not_renamed(self, ws: GatewayWs) -> None:
        created = await ws.ok("sessions.create", {"key": "moved"})
        await ws.ok("sessions.reset", {"key": "moved"})
        params = {"key": "moved", "expectedSessionId": created["sessionId"], "label": "Late"}
        frame = await ws.call("sessions.patch", params)
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "Session agent:main:moved changed before patch. Retry.",
            "details": {"reason": "session-changed"},
        }
        row = (await ws.ok("sessions.describe", {"key": "moved"}))["session"]
        assert row["label"] is None

    async def test_a_key_is_relative_to_the_agent_id(self, make_gateway) -> None:  # type: ignore[no-untyped-def]
        gateway = await make_gateway(
            """{
              gateway: { auth: { token: "test-token" } },
              agents: { list: [{ id: "main", default: true }, { id: "ops" }] },
            }"""
        )
        ws = await gateway.connected()
        patched = await ws.ok("sessions.patch", {"key": "k", "agentId": "ops", "label": "L"})
        assert patched["key"] == "agent:ops:k"
        frame = await ws.call(
            "sessions.patch", {"key": "agent:main:k", "agentId": "ops", "label": "L"}
        )
        assert frame["error"]["message"] == (
            "invalid sessions.patch params: at /agentId: is not the agent of the session key"
        )
        await ws.ws.close()


class TestSessionsCreate:
    """OpenClaw's TUI's `/new` (ws-protocol.md §12): an empty session on a key of its own."""

    async def test_a_new_key_gets_an_empty_session_and_sessions_changed(
        self, ws: GatewayWs
    ) -> None:
        params = {"key": "tui-1", "agentId": "main", "parentSessionKey": "agent:main:s"}
        payload = await ws.ok("sessions.create", {**params, "emitCommandHooks": True})
        assert list(payload) == ["ok", "key", "sessionId", "entry"]
        assert (payload["ok"], payload["key"]) == (True, "agent:main:tui-1")
        entry = payload["entry"]
        assert entry["sessionId"] == payload["sessionId"] and isinstance(entry["updatedAt"], int)
        assert (entry["status"], entry["inputTokens"], entry["label"]) == ("idle", 0, None)
        changed = await ws.event("sessions.changed", reason="create")
        assert changed["payload"]["sessionKey"] == "agent:main:tui-1"
        assert (await ws.ok("sessions.list"))["sessions"] == [entry]

    async def test_without_a_key_the_gateway_makes_one_and_a_label_is_kept(
        self, ws: GatewayWs
    ) -> None:
        first = await ws.ok("sessions.create", {"label": " Mine "})
        second = await ws.ok("sessions.create", {})
        assert first["key"].startswith("agent:main:") and first["key"] != second["key"]
        assert first["entry"]["label"] == "Mine"

    async def test_a_key_is_relative_to_the_agent_id(self, make_gateway) -> None:  # type: ignore[no-untyped-def]
        """The TUI's `/new` while it talks to another agent than the default one."""
        gateway = await make_gateway(
            """{
              gateway: { auth: { token: "test-token" } },
              agents: { list: [{ id: "main", default: true }, { id: "ops" }] },
            }"""
        )
        ws = await gateway.connected()
        payload = await ws.ok("sessions.create", {"key": "tui-2", "agentId": "Ops"})
        assert (payload["key"], payload["entry"]["agentId"]) == ("agent:ops:tui-2", "ops")
        await ws.ws.close()

    async def test_a_first_message_starts_the_sessions_first_turn(self, ws: GatewayWs) -> None:
        """OpenClaw's Control UI's New conversation: `{agentId, message}`."""
        payload = await ws.ok("sessions.create", {"agentId": "main", "message": "first words"})
        run_id = payload["runId"]
        assert (payload["runStarted"], payload["status"]) == (True, "started")
        assert list(payload) == [
            "ok", "key", "sessionId", "entry", "runStarted", "runId", "status"
        ]  # fmt: skip
        final = await ws.event("chat", state="final")
        assert (final["payload"]["runId"], final["payload"]["sessionKey"]) == (
            run_id,
            payload["key"],
        )
        history = await ws.ok("chat.history", {"sessionKey": payload["key"]})
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        assert history["sessionId"] == payload["sessionId"]

    async def test_a_blank_first_message_starts_no_turn(self, ws: GatewayWs) -> None:
        payload = await ws.ok("sessions.create", {"key": "blank", "message": "  "})
        assert list(payload) == ["ok", "key", "sessionId", "entry"]

    async def test_a_first_message_to_an_existing_session_is_not_sent_again(
        self, ws: GatewayWs
    ) -> None:
        """A retried create finds the session its first try made; its message ran then."""
        first = await ws.ok("sessions.create", {"key": "retried", "message": "once"})
        await ws.event("chat", state="final")
        again = await ws.ok("sessions.create", {"key": "retried", "message": "once"})
        assert list(again) == ["ok", "key", "sessionId", "entry"]
        assert again["sessionId"] == first["sessionId"]
        history = await ws.ok("chat.history", {"sessionKey": "retried"})
        assert len(history["messages"]) == 2

    async def test_an_existing_session_is_answered_unchanged(self, ws: GatewayWs) -> None:
        await ws.ok("chat.send", {"sessionKey": "kept", "message": "hi", "idempotencyKey": "k-1"})
        await ws.event("chat", state="final")
        before = (await ws.ok("sessions.describe", {"key": "kept"}))["session"]
        again = await ws.ok("sessions.create", {"key": "kept", "label": "other"})
        assert again["entry"] == before and again["sessionId"] == before["sessionId"]

    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            ({"key": "x", "message": 5}, "at /message: must be string"),
            ({"key": "x", "message": "hi", "timeoutMs": -1}, "at /timeoutMs: must be >= 0"),
            ({"key": "x", "model": "echo/echo"}, "unsupported field 'model'"),
            ({"key": "x", "fork": True}, "unsupported field 'fork'"),
            ({"key": ""}, "at /key: must not be empty"),
            ({"key": "x", "agentId": ""}, "at /agentId: must not be empty"),
            ({"key": "agent:main:x", "agentId": "ops"}, "at /agentId: is not the agent of"),
            ({"key": "agent:Bad Id:x"}, "at /key: invalid session key"),
            ({"key": "x", "label": ""}, "at /label: must have 1 to 64 characters, or be null"),
        ],
    )
    async def test_bad_params_are_refused_and_nothing_is_created(
        self, ws: GatewayWs, params: dict[str, Any], detail: str
    ) -> None:
        frame = await ws.call("sessions.create", params)
        assert frame["error"]["code"] == "INVALID_REQUEST"
        assert frame["error"]["message"].startswith(f"invalid sessions.create params: {detail}")
        assert (await ws.ok("sessions.list"))["sessions"] == []

    async def test_no_session_is_created_for_an_agent_that_is_not_configured(
        self, ws: GatewayWs
    ) -> None:
        frame = await ws.call("sessions.create", {"key": "x", "agentId": "ghost"})
        assert frame["error"] == {"code": "INVALID_REQUEST", "message": "Unknown agent 'ghost'."}
        assert (await ws.ok("sessions.list"))["sessions"] == []

    async def test_it_needs_the_write_scope(self, gateway: Gateway) -> None:
        ws = await gateway.connected(scopes=["operator.read"])
        frame = await ws.call("sessions.create", {"key": "x"})
        assert frame["error"]["message"] == "missing scope: operator.write"
        await ws.ws.close()


class TestSessionChangesOutliveTheirClient:
    async def test_a_reset_whose_client_leaves_while_it_is_stored_still_takes_effect(
        self, gateway: Gateway, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Closing a socket cancels its calls, but not the store's write that a reset started:
        # committed, and cut off before the session in memory heard of it, the next turn went
        # on in the old transcript.
        await ws.ok("chat.send", send("left", "before", "left-1"))
        await ws.event("chat", state="final", runId="left-1")
        store = gateway.app[STATE].store
        assert store is not None
        before = await store.get("agent:main:left")
        assert before is not None
        storing, stored = threading.Event(), threading.Event()
        reset = SessionStore._reset

        def held(self: SessionStore, db: Any, key: str, agent_id: str, now: int) -> Any:
            storing.set()
            stored.wait(5)
            return reset(db, key, agent_id, now)

        monkeypatch.setattr(SessionStore, "_reset", held)
        admin = await gateway.connected()
        await admin.request("sessions.reset", {"key": "left"})
        assert await asyncio.to_thread(storing.wait, 5)
        await admin.ws.close()
        stored.set()
        async with asyncio.timeout(5):
            while (
                row := await store.get("agent:main:left")
            ) and row.session_id == before.session_id:
                await asyncio.sleep(0.01)
        await ws.ok("chat.send", send("left", "after", "left-2"))
        await ws.event("chat", state="final", runId="left-2")
        history = await ws.ok("chat.history", {"sessionKey": "left"})
        assert history["sessionId"] == row.session_id
        assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["after"]

    async def test_a_create_whose_client_leaves_while_it_is_stored_still_runs_its_message(
        self, gateway: Gateway, ws: GatewayWs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The session was made and its first message dropped: a retry of the call (the key
        # has a session now) runs no message either, so it was never run.
        registry = gateway.app[STATE].registry
        assert registry is not None
        held = hold_store_write(monkeypatch, "create")
        client = await gateway.connected()
        await client.request("sessions.create", {"key": "first", "message": "hello"})
        await leave_while_stored(gateway, client, held)
        held.stored.set()
        async with asyncio.timeout(5):
            while any(t.get_name() == "ws-sessions.create" for t in asyncio.all_tasks()):
                await asyncio.sleep(0.01)
        key = "agent:main:first"
        history = await ws.ok("chat.history", {"sessionKey": "first"})
        assert registry.active_runs(key) or history["messages"], "the first message never ran"
        await ws.event("chat", state="final", sessionKey=key)
        history = await ws.ok("chat.history", {"sessionKey": "first"})
        assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["hello"]


class TestRequestsInFlight:
    async def test_a_request_beyond_the_slots_waits_for_one_and_is_answered(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(max_inflight_requests=2))
        ws = await gateway.connected()
        waits = [
            await ws.request("agent.wait", {"runId": f"never-{i}", "timeoutMs": 500})
            for i in range(2)
        ]
        health = await ws.request("health")
        answers = [await ws.response(frame_id) for frame_id in (*waits, health)]
        assert [a["ok"] for a in answers] == [True, True, True]
        assert [a["payload"]["status"] for a in answers[:2]] == ["timeout", "timeout"]
        await ws.ws.close()

    async def test_a_burst_of_requests_is_answered_in_full(self, make_gateway: MakeGateway) -> None:
        # A script's Promise.all over 150 sessions.patch (the Control UI's tests do so).
        gateway = await make_gateway(settings=WsSettings(max_inflight_requests=4))
        ws = await gateway.connected()
        sent = [
            await ws.request("sessions.patch", {"key": f"bulk-{i}", "label": f"bulk {i}"})
            for i in range(150)
        ]
        answers = [await ws.response(frame_id, wait=30) for frame_id in sent]
        assert all(a["ok"] for a in answers), [a for a in answers if not a["ok"]][:1]
        await ws.ws.close()

    async def test_a_request_beyond_the_slots_and_the_waiting_ones_is_refused(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(
            settings=WsSettings(max_inflight_requests=1, max_waiting_requests=1)
        )
        ws = await gateway.connected()
        wait = await ws.request("agent.wait", {"runId": "never", "timeoutMs": 500})
        waiting = await ws.request("health")
        refused = await ws.call("health")
        assert refused["error"] == {
            "code": "UNAVAILABLE",
            "message": "too many requests in flight: 1 per connection and 1 waiting; retry"
            " after one is answered",
            "details": {"limit": 1, "waiting": 1},
            "retryable": True,
        }
        assert (await ws.response(wait))["payload"]["status"] == "timeout"
        assert (await ws.response(waiting))["ok"] is True
        assert (await ws.call("health"))["ok"] is True
        await ws.ws.close()

    async def test_waiting_requests_are_bounded_by_their_size_too(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(
            settings=WsSettings(max_inflight_requests=1, max_waiting_chars=1000)
        )
        ws = await gateway.connected()
        await ws.request("agent.wait", {"runId": "never", "timeoutMs": 500})
        refused = await ws.call("health", {"padding": "x" * 2000})
        assert refused["error"]["code"] == "UNAVAILABLE"
        assert refused["error"]["details"] == {"limit": 1, "waiting": 0}
        await ws.ws.close()

    async def test_waiting_requests_of_every_connection_together_are_bounded(
        self, make_gateway: MakeGateway
    ) -> None:
        # Each connection may hold its 16 MiB of waiting frames; many connections would hold
        # gigabytes. Beyond the process's bound the next one is refused, and the room a closed
        # connection's waiting frames took is free again.
        gateway = await make_gateway(
            settings=WsSettings(max_inflight_requests=1, max_waiting_total_chars=3000)
        )
        first, second = await gateway.connected(), await gateway.connected()
        for ws in (first, second):
            await ws.request("agent.wait", {"runId": "never", "timeoutMs": 600_000})
        waiting = await first.request("health", {"padding": "x" * 2000})
        refused = await second.call("health", {"padding": "x" * 2000})
        assert refused["error"] == {
            "code": "UNAVAILABLE",
            "message": "too many requests waiting in the gateway; retry after one is answered",
            "details": {"limit": 3000},
            "retryable": True,
        }
        await second.request("health", {"padding": "x" * 500})  # what is left still serves
        await first.ws.close()
        async with asyncio.timeout(5):
            while gateway.app[WS].waiting_chars > 1000:
                await asyncio.sleep(0.01)
        assert waiting  # never answered: its connection closed first
        later = await second.request("health", {"padding": "x" * 2000})
        async with asyncio.timeout(5):
            while gateway.app[WS].waiting_chars < 2500:  # it waits, and is not refused
                await asyncio.sleep(0.01)
        assert [f for f in second.frames if f.get("id") == later] == []
        await second.ws.close()

    async def test_a_call_in_flight_does_not_hold_the_params_it_ignores(
        self, gateway: Gateway
    ) -> None:
        # Unknown params are ignored (spec §6), but a call that waits (an `agent.wait` may,
        # for minutes) held its whole frame: 64 calls of a connection, up to maxPayload each.
        ws = await gateway.connected()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for n in range(8):
                params = {"runId": f"never-{n}", "timeoutMs": 600_000, "pad": "x" * 2**22}
                await ws.request("agent.wait", params)
            assert (await ws.call("health"))["ok"] is True  # the waits are all in flight
            del params
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held - before < 8 * 2**20  # not the 32 MiB of padding
        await ws.ws.close()

    async def test_pings_are_answered_while_every_slot_is_taken(
        self, make_gateway: MakeGateway
    ) -> None:
        # A client's keepalive (python-websockets pings every 20 s and gives up after 20 more)
        # must not drop a healthy connection whose requests all wait, as `agent.wait`s do.
        gateway = await make_gateway(settings=WsSettings(max_inflight_requests=1))
        ws = await gateway.raw(autoping=False)
        await ws.connect()
        await ws.request("agent.wait", {"runId": "never", "timeoutMs": 600_000})
        health = await ws.request("health")
        await ws.ws.ping(b"still there?")
        read: list[dict[str, Any]] = []
        async with asyncio.timeout(3):
            while (msg := await ws.ws.receive()).type is not aiohttp.WSMsgType.PONG:
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                read.append(json.loads(msg.data))
        assert msg.data == b"still there?"
        assert [f for f in read if f.get("id") == health] == []  # it waits for the slot
        await ws.ws.close()

    async def test_a_client_that_leaves_while_its_requests_fill_every_slot_is_let_go(
        self, tmp_path: Path
    ) -> None:
        # An `agent.wait` holds its slot as long as its client likes; the request beyond the
        # slots waits, and the socket's end is still read. Served as in production: aiohttp
        # does not cancel a handler whose client left.
        app = build_app(tmp_path)
        ws_state = app[WS]
        ws_state.settings = WsSettings(max_inflight_requests=2)
        async with served(app) as server, aiohttp.ClientSession() as http:
            raw = await http.ws_connect(server.url, timeout=aiohttp.ClientWSTimeout(ws_close=0.2))
            ws = GatewayWs(raw)
            conn_id = (await ws.connect(auth={"token": SERVED_TOKEN}))["payload"]["server"][
                "connId"
            ]
            for i in range(3):  # the third waits for a slot
                await ws.request("agent.wait", {"runId": f"never-{i}", "timeoutMs": 600_000})
            await asyncio.sleep(0.1)
            await raw.close()  # the close goes unanswered: the client drops the connection
            async with asyncio.timeout(5):
                while ws_state.connections:
                    await asyncio.sleep(0.05)
            [entry] = [
                e for e in ws_state.presence.snapshot(now_ms()) if e.get("instanceId") == conn_id
            ]
            assert entry["reason"] == "disconnect"


class TestOpenClawControlUiStartup:
    """What OpenClaw's browser Control UI calls to open a chat (`chat.startup`) and to follow
    it (`sessions.messages.subscribe`): without them its chat pane shows the error and no
    transcript, and cannot send."""

    async def test_chat_startup_of_a_session_is_its_history(self, ws: GatewayWs) -> None:
        sent = await ws.ok(
            "chat.send", {"sessionKey": "startup", "message": "hi", "idempotencyKey": "st-1"}
        )
        await ws.ok("agent.wait", {"runId": sent["runId"], "timeoutMs": 10_000})
        params = {"sessionKey": "startup", "limit": 80, "maxBytes": 262_144, "agentId": "main"}
        startup = await ws.ok("chat.startup", params)
        history = await ws.ok("chat.history", {"sessionKey": "startup", "limit": 80})
        assert startup == history
        assert [m["role"] for m in startup["messages"]] == ["user", "assistant"]

    async def test_chat_startup_of_a_new_session_is_empty(self, ws: GatewayWs) -> None:
        startup = await ws.ok("chat.startup", {"sessionKey": "agent:main:main"})
        assert (startup["messages"], startup["hasMore"]) == ([], False)

    async def test_chat_startup_by_a_short_link_finds_no_session(self, ws: GatewayWs) -> None:
        # Short chat links are OpenClaw's; clawgate has none to resolve.
        answer = await ws.ok("chat.startup", {"shortId": "abc123", "agentId": "main"})
        assert answer == {"resolution": {"ok": False}}

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({}, "invalid chat.startup params: at /sessionKey: is required"),
            ({"sessionKey": 7}, "invalid chat.startup params: at /sessionKey: must be string"),
            (
                {"sessionKey": "x", "limit": 0},
                "invalid chat.startup params: at /limit: must be >= 1",
            ),
            (
                {"shortId": "a", "agentId": 1},
                "invalid chat.startup params: at /agentId: must be string",
            ),
        ],
    )
    async def test_chat_startup_refuses_bad_params(
        self, ws: GatewayWs, params: dict[str, Any], message: str
    ) -> None:
        frame = await ws.call("chat.startup", params)
        assert frame["error"]["message"] == message

    async def test_sessions_messages_subscribe_answers_the_canonical_key(
        self, ws: GatewayWs
    ) -> None:
        answer = await ws.ok("sessions.messages.subscribe", {"key": "Main"})
        assert answer == {"subscribed": True, "key": "agent:main:main"}
        answer = await ws.ok("sessions.messages.unsubscribe", {"key": "main"})
        assert answer == {"subscribed": False, "key": "agent:main:main"}

    async def test_with_approvals_it_replays_none(self, ws: GatewayWs) -> None:
        answer = await ws.ok(
            "sessions.messages.subscribe", {"key": "agent:main:main", "includeApprovals": True}
        )
        replay = answer.pop("approvalReplay")
        assert answer == {"subscribed": True, "key": "agent:main:main"}
        assert isinstance(replay.pop("updatedAtMs"), int)
        assert replay == {"sessionKey": "agent:main:main", "approvals": [], "truncated": False}

    async def test_approvals_need_the_approvals_scope(self, gateway: Gateway) -> None:
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call(
            "sessions.messages.subscribe", {"key": "main", "includeApprovals": True}
        )
        assert frame["error"]["message"] == (
            "sessions.messages.subscribe includeApprovals requires gateway scope:"
            " operator.approvals"
        )
        assert await reader.ok("sessions.messages.subscribe", {"key": "main"}) == {
            "subscribed": True,
            "key": "agent:main:main",
        }
        await reader.ws.close()

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({}, "at /key: is required"),
            ({"key": ""}, "at /key: must not be empty"),
            ({"key": "main", "includeApprovals": "yes"}, "at /includeApprovals: must be boolean"),
            ({"key": "agent:"}, "at /key: invalid session key"),
        ],
    )
    @pytest.mark.parametrize(
        "method", ["sessions.messages.subscribe", "sessions.messages.unsubscribe"]
    )
    async def test_sessions_messages_refuse_bad_params(
        self, ws: GatewayWs, method: str, params: dict[str, Any], message: str
    ) -> None:
        if "includeApprovals" in params and method.endswith("unsubscribe"):
            return  # not read there
        frame = await ws.call(method, params)
        assert frame["error"]["message"] == f"invalid {method} params: {message}"


class TestOpenClawControlUiFeatureReads:
    """What OpenClaw's Control UI asks at start-up and on its pages about features clawgate
    does not have: each answered in OpenClaw's empty shape, not `unknown method` (its Plugins
    page showed the error)."""

    async def test_each_answers_its_empty_state(self, ws: GatewayWs) -> None:
        key = {"sessionKey": "agent:main:main"}
        talk_group = {"ready": False, "providers": []}
        answers: list[tuple[str, dict[str, Any], Any]] = [
            ("update.status", {}, {"sentinel": None, "updateAvailable": None}),
            ("sessions.observer.visibility", {"visible": True}, {"ok": True}),
            (
                "talk.catalog",
                {},
                {
                    "modes": [],
                    "transports": [],
                    "brains": [],
                    "speech": {"providers": []},
                    "transcription": talk_group,
                    "realtime": talk_group,
                },
            ),
            ("progressCard.get", key, {"card": None}),
            ("sessions.branches.list", key, {"branches": []}),
            ("sessions.companion.state", key, {"exchanges": []}),
            ("tasks.list", {"status": ["running", "queued"], "limit": 50}, {"tasks": []}),
            ("plugins.catalog.browse", {"intent": "featured", "pageSize": 20}, {"items": []}),
            (
                "plugins.list",
                {},
                {"generation": 0, "plugins": [], "diagnostics": [], "mutationAllowed": False},
            ),
        ]
        for method, params, answer in answers:
            assert await ws.ok(method, params) == answer, method

    async def test_agent_identity_is_the_agent_s_name(self, ws: GatewayWs) -> None:
        # No `name` configured: the id, said to be the fallback (OpenClaw's "default").
        main = {"agentId": "main", "name": "main", "nameSource": "default", "avatarStatus": "none"}
        assert await ws.ok("agent.identity.get", {}) == main
        assert await ws.ok("agent.identity.get", {"sessionKey": "agent:main:x"}) == main
        assert await ws.ok("agent.identity.get", {"agentId": "Main", "sessionKey": ""}) == main
        frame = await ws.call("agent.identity.get", {"agentId": "ghost"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."

    async def test_a_configured_name_is_the_agent_s_own(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(
            """{
              gateway: { auth: { token: "test-token" } },
              agents: { list: [{ id: "main", default: true }, { id: "ops", name: "Ops desk" }] },
            }"""
        )
        ws = await gateway.connected()
        ops = {"agentId": "ops", "name": "Ops desk", "nameSource": "agent", "avatarStatus": "none"}
        assert await ws.ok("agent.identity.get", {"agentId": "ops"}) == ops
        assert await ws.ok("agent.identity.get", {"sessionKey": "agent:ops:x"}) == ops
        main = await ws.ok("agent.identity.get", {"sessionKey": "agent:main:x"})
        assert (main["name"], main["nameSource"]) == ("main", "default")

    async def test_themes_are_openclaw_s_built_in_ones_claw_chosen(self, ws: GatewayWs) -> None:
        """The Appearance page's catalog: OpenClaw's built-in themes (its UI ships them), none
        imported (that takes an OpenClaw user profile); the gateway's choice is Claw, system
        mode, as OpenClaw's without a `ui` section."""
        answer = await ws.ok("themes.list", {})
        ids = [theme["id"] for theme in answer["themes"]]
        assert ids == [
            "claw", "knot", "dash", "absolutely", "tide", "beacon", "phosphor", "crt",
            "manuscript", "rose", "miami",
        ]  # fmt: skip
        assert answer["current"] == {
            "id": "claw",
            "mode": "system",
            "scope": "gateway",
            "overrides": {},
        }
        claw = answer["themes"][0]
        assert answer["theme"] == claw
        assert set(claw) == {"id", "name", "description", "source", "modes"}
        assert (claw["name"], claw["source"], claw["modes"]) == (
            "Claw",
            "builtin",
            ["light", "dark"],
        )

    async def test_channel_pairing_and_worktrees_are_empty(self, gateway: Gateway) -> None:
        """The Channels page's pairing requests (no channels: no accounts to pair with, and a
        channel named is unknown, as OpenClaw says of one without pairing) and the Worktrees
        page (no agent workspaces)."""
        ws = await gateway.connected()
        assert await ws.ok("channels.pairing.list", {}) == {
            "accounts": [],
            "requests": [],
            "commandOwnerConfigured": False,
            "limits": {"pendingPerAccount": 3, "ttlMs": 3_600_000},
        }
        frame = await ws.call("channels.pairing.list", {"channel": "Telegram"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "unknown pairing channel: Telegram",
        }
        frame = await ws.call("channels.pairing.list", {"accountId": ""})
        assert frame["error"]["message"] == (
            "invalid channels.pairing.list params: at /accountId: must not be empty"
        )
        assert await ws.ok("worktrees.list", {}) == {"worktrees": []}
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("channels.pairing.list", {})
        assert frame["error"]["message"] == "missing scope: operator.pairing"
        assert await reader.ok("worktrees.list", {}) == {"worktrees": []}

    async def test_a_worktree_clean_up_has_nothing_to_clean(self, gateway: Gateway) -> None:
        """The Worktrees page's "Clean up now" (`worktrees.gc`, admin): no worktrees, so none
        removed, no orphans deleted, no snapshots pruned."""
        ws = await gateway.connected(scopes=["operator.admin"])
        cleaned = {"removed": [], "orphansDeleted": 0, "snapshotsPruned": 0}
        assert await ws.ok("worktrees.gc", {}) == cleaned
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("worktrees.gc", {})
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_a_new_automation_is_refused(self, gateway: Gateway) -> None:
        """The Automations page's "New automation" (`cron.add`, admin as on OpenClaw): no
        scheduler, so the job is refused, not kept; the fields every job has checked."""
        ws = await gateway.connected(scopes=["operator.admin"])
        job = {
            "name": "Morning brief",
            "schedule": {"kind": "every", "everyMs": 1_800_000},
            "sessionTarget": "isolated",
            "wakeMode": "now",
            "payload": {"kind": "agentTurn", "message": "Brief me"},
        }
        assert (await ws.call("cron.add", job))["error"] == {
            "code": "UNAVAILABLE",
            "message": "clawgate has no scheduler: its agents run when asked, never on a schedule",
        }
        for bad, message in [
            ({**job, "name": ""}, "at /name: must not be empty"),
            ({**job, "name": "n" * 257}, "at /name: must have at most 256 characters"),
            ({**job, "schedule": "daily"}, "at /schedule: must be object"),
            ({"name": "n", "schedule": {}}, "at /payload: is required"),
        ]:
            frame = await ws.call("cron.add", bad)
            assert frame["error"] == {
                "code": "INVALID_REQUEST",
                "message": f"invalid cron.add params: {message}",
            }, bad
        assert (await ws.ok("cron.list", {}))["jobs"] == []
        writer = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await writer.call("cron.add", job)
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_a_memory_search_has_no_memory_plugin(self, gateway: Gateway) -> None:
        """The Memory settings' search (`memory.search`, read): refused as OpenClaw refuses it
        with no memory plugin; its params and agent checked first."""
        ws = await gateway.connected(scopes=["operator.read"])
        params = {"query": "notes", "maxResults": 5, "minScore": 0.5, "agentId": "main"}
        assert (await ws.call("memory.search", params))["error"] == {
            "code": "UNAVAILABLE",
            "message": "memory plugin unavailable",
        }
        for bad, message in [
            ({}, "at /query: is required"),
            ({"query": "  "}, "at /query: must not be blank"),
            ({"query": "q", "maxResults": "5"}, "at /maxResults: must be number"),
            ({"query": "q", "minScore": True}, "at /minScore: must be number"),
            ({"query": "q", "agentId": ""}, "at /agentId: must not be empty"),
            ({"query": "q" * 4097}, "at /query: must have at most 4096 characters"),
        ]:
            frame = await ws.call("memory.search", bad)
            assert frame["error"] == {
                "code": "INVALID_REQUEST",
                "message": f"invalid memory.search params: {message}",
            }, bad
        frame = await ws.call("memory.search", params | {"agentId": "ghost"})
        assert frame["error"]["code"] == "INVALID_REQUEST", frame

    async def test_an_api_key_set_is_refused_and_not_kept(self, gateway: Gateway) -> None:
        """The Models page's "Set API key" (`models.authSetApiKey`, admin as on OpenClaw):
        clawgate's upstream keys are its config's, so the key is refused, saying where keys
        live; its params and agent checked as OpenClaw checks them."""
        ws = await gateway.connected(scopes=["operator.admin"])
        params = {"provider": "openai", "apiKey": "sk-secret-value", "agentId": "main"}
        assert (await ws.call("models.authSetApiKey", params))["error"] == {
            "code": "UNAVAILABLE",
            "message": (
                "clawgate keeps no model credentials: a provider's API key is set in its config"
                " file"
            ),
        }
        for bad, message in [
            ({"apiKey": "k"}, "at /provider: is required"),
            ({"provider": " ", "apiKey": "k"}, "at /provider: must not be blank"),
            ({"provider": "p", "apiKey": "\t"}, "at /apiKey: must not be blank"),
            ({"provider": "p", "apiKey": 1}, "at /apiKey: must be string"),
            ({"provider": "p", "apiKey": "k", "agentId": 1}, "at /agentId: must be string"),
        ]:
            frame = await ws.call("models.authSetApiKey", bad)
            assert frame["error"] == {
                "code": "INVALID_REQUEST",
                "message": f"invalid models.authSetApiKey params: {message}",
            }, bad
        frame = await ws.call("models.authSetApiKey", params | {"agentId": "ghost"})
        assert frame["error"]["code"] == "INVALID_REQUEST", frame
        writer = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await writer.call("models.authSetApiKey", params)
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_a_new_worktree_and_its_branches_are_refused(self, gateway: Gateway) -> None:
        """The Worktrees page's "New worktree" (`worktrees.create`) and the branches it offers
        to base one on (`worktrees.branches`), write-scoped as on OpenClaw: clawgate checks out
        no repository, so both are refused, saying so; their params checked as OpenClaw does."""
        ws = await gateway.connected(scopes=["operator.write"])
        no_worktrees = {
            "code": "UNAVAILABLE",
            "message": "clawgate has no managed worktrees: it checks out no repository",
        }
        create = {"repoRoot": "/srv/repo", "name": "feature-1", "baseRef": "main"}
        assert (await ws.call("worktrees.create", create))["error"] == no_worktrees
        branches = {"repoRoot": "/srv/repo", "includeRepositoryStatus": True}
        assert (await ws.call("worktrees.branches", branches))["error"] == no_worktrees
        for method, params, message in [
            ("worktrees.create", {}, "at /repoRoot: is required"),
            ("worktrees.create", {"repoRoot": ""}, "at /repoRoot: must not be empty"),
            (
                "worktrees.create",
                {"repoRoot": "/r", "name": "Feature"},
                "at /name: must be lowercase letters, digits and dashes, at most 64",
            ),
            (
                "worktrees.create",
                {"repoRoot": "/r", "name": "a" * 65},
                "at /name: must be lowercase letters, digits and dashes, at most 64",
            ),
            (
                "worktrees.create",
                {"repoRoot": "/r", "baseRef": ""},
                "at /baseRef: must not be empty",
            ),
            ("worktrees.branches", {"repoRoot": 1}, "at /repoRoot: must be string"),
            (
                "worktrees.branches",
                {"repoRoot": "/r", "includeRepositoryStatus": "yes"},
                "at /includeRepositoryStatus: must be boolean",
            ),
        ]:
            frame = await ws.call(method, params)
            assert frame["error"] == {
                "code": "INVALID_REQUEST",
                "message": f"invalid {method} params: {message}",
            }, (method, params)
        reader = await gateway.connected(scopes=["operator.read"])
        for method in ("worktrees.create", "worktrees.branches"):
            frame = await reader.call(method, {"repoRoot": "/srv/repo"})
            assert frame["error"]["message"] == "missing scope: operator.write"

    async def test_tools_github_status_has_no_identity(self, gateway: Gateway) -> None:
        """The Profile settings' GitHub identity of an agent: none configured at either scope
        and none detected, in OpenClaw's shape; its params checked as OpenClaw checks them."""
        ws = await gateway.connected(scopes=["operator.read"])
        none = {
            "source": "system-detected",
            "credentialKind": "native",
            "credentialState": "unavailable",
            "account": None,
            "gitAuthor": {"name": None, "email": None},
            "evidence": "none",
            "accessExpiresAtMs": None,
            "refreshState": "not_applicable",
            "oauthScopes": [],
            "repositoryGrants": "unknown",
        }
        for scope, selected in (("system", none), ("agent", None)):
            answer = await ws.ok("tools.github.status", {"agentId": "Main", "selectedScope": scope})
            assert answer == {
                "agentId": "main",
                "selectedScope": scope,
                "selected": {"scope": scope, "configured": False, "identity": selected},
                "effective": none,
            }
        bad = [
            ({"selectedScope": "system"}, "at /agentId: is required"),
            ({"agentId": "", "selectedScope": "agent"}, "at /agentId: must not be empty"),
            (
                {"agentId": "main", "selectedScope": "org"},
                "at /selectedScope: must be one of system, agent",
            ),
            ({"agentId": "main", "selectedScope": 1}, "at /selectedScope: must be string"),
            ({"agentId": "main"}, "at /selectedScope: is required"),
        ]
        for params, message in bad:
            frame = await ws.call("tools.github.status", params)
            assert frame["error"]["message"] == f"invalid tools.github.status params: {message}"
        frame = await ws.call("tools.github.status", {"agentId": "ghost", "selectedScope": "agent"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."

    async def test_github_setup_fails_as_on_openclaw_without_its_services(
        self, gateway: Gateway
    ) -> None:
        """The Profile settings' "Continue with GitHub" (`tools.github.authorize.*`) and a
        token set up (`tools.github.configure`): clawgate runs no GitHub device login and
        keeps no GitHub token, so they fail as OpenClaw's do without its authorization
        service or the temporary credential; going back to inherit changes nothing."""
        ws = await gateway.connected(scopes=["operator.admin"])
        target = {"scope": "system", "agentId": "main"}
        request = {"requestId": "github-device-" + "a" * 32}
        refused = [
            ("tools.github.authorize.start", target, "GitHub authorization could not start"),
            ("tools.github.authorize.poll", request, "GitHub authorization polling failed"),
            (
                "tools.github.authorize.cancel",
                request,
                "GitHub authorization lifecycle is unavailable",
            ),
            (
                "tools.github.configure",
                {**target, "mode": "managed", "secretName": "github-setup-" + "b" * 32},
                "GitHub identity setup failed",
            ),
        ]
        for method, params, message in refused:
            frame = await ws.call(method, params)
            assert frame["error"] == {"code": "UNAVAILABLE", "message": message}, method
        inherit = await ws.ok(
            "tools.github.configure", {"scope": "agent", "agentId": "main", "mode": "inherit"}
        )
        status = await ws.ok("tools.github.status", {"agentId": "main", "selectedScope": "agent"})
        assert inherit == status
        bad = [
            ("tools.github.authorize.start", {"scope": "x", "agentId": "main"}, "at /scope"),
            ("tools.github.authorize.start", {"scope": "system"}, "at /agentId: is required"),
            ("tools.github.authorize.poll", {"requestId": "x"}, "at /requestId"),
            ("tools.github.authorize.cancel", {}, "at /requestId: is required"),
            ("tools.github.configure", {**target, "mode": "other"}, "at /mode"),
            (
                "tools.github.configure",
                {**target, "mode": "managed", "secretName": "x"},
                "at /secretName",
            ),
            (
                "tools.github.configure",
                {**target, "mode": "managed", "secretName": "github-setup-" + "b" * 32,
                 "gitAuthor": {"name": 1}},
                "at /gitAuthor/name: must be string",
            ),
            ("tools.github.authorize.start", {**target, "agentId": "ghost"}, "Unknown agent"),
        ]  # fmt: skip
        for method, params, message in bad:
            frame = await ws.call(method, params)
            assert message in frame["error"]["message"], (method, params, frame)
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("tools.github.authorize.start", target)
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_a_secret_is_not_stored(self, gateway: Gateway) -> None:
        """A secret saved (`secrets.store.set`, the Profile settings' GitHub token set up with
        "Use a PAT instead"): clawgate has no secret store, its credentials are its config's;
        refused, the value not kept, its params checked as OpenClaw checks them first."""
        ws = await gateway.connected(scopes=["operator.admin"])
        # The Secrets settings' list: none stored, before a save or after it.
        assert await ws.ok("secrets.store.list", {}) == {"entries": []}
        token = {"name": "github-setup-" + "c" * 32, "value": "ghp_x", "kind": "secret"}
        for params in (token, {"name": "API_KEY", "value": "v", "kind": "env"}):
            frame = await ws.call("secrets.store.set", params)
            assert frame["error"] == {
                "code": "UNAVAILABLE",
                "message": "clawgate has no secret store: its credentials are set in its config"
                " file",
            }, params
        bad = [
            ({**token, "name": "lower"}, "at /name: must match"),
            ({**token, "kind": "file"}, "at /kind: must be one of secret, env"),
            ({**token, "value": "v" * 65_537}, "at /value: must have at most 65536 characters"),
            ({"name": "API_KEY", "kind": "env"}, "at /value: is required"),
            ({**token, "allowedHosts": ["a", 1]}, "at /allowedHosts/1: must be string"),
        ]
        for params, message in bad:
            frame = await ws.call("secrets.store.set", params)
            assert message in frame["error"]["message"], (params, frame)
        assert await ws.ok("secrets.store.list", {}) == {"entries": []}
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("secrets.store.set", token)
        assert frame["error"]["message"] == "missing scope: operator.admin"
        frame = await reader.call("secrets.store.list", {})
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_an_agent_has_no_workspace_files(self, gateway: Gateway) -> None:
        """The Agents settings' Files (`agents.files.list {agentId}`): OpenClaw's core files
        of an agent's workspace; clawgate's agents have no workspace, so refused, saying so
        (OpenClaw's answer needs the workspace's path)."""
        ws = await gateway.connected(scopes=["operator.read"])
        frame = await ws.call("agents.files.list", {"agentId": "main"})
        assert frame["error"] == {
            "code": "UNAVAILABLE",
            "message": "clawgate's agents have no workspace: no files to list",
        }
        bad = [
            ({}, "invalid agents.files.list params: at /agentId: is required"),
            ({"agentId": ""}, "invalid agents.files.list params: at /agentId: must not be empty"),
            ({"agentId": "ghost"}, "Unknown agent 'ghost'."),
        ]
        for params, message in bad:
            frame = await ws.call("agents.files.list", params)
            assert frame["error"]["message"] == message, params

    async def test_web_push_has_no_key(self, gateway: Gateway) -> None:
        """The Notifications settings' "Enable notifications" (`push.web.vapidPublicKey`, write
        scope as on OpenClaw): clawgate sends no push notifications, so no key; refused."""
        ws = await gateway.connected(scopes=["operator.write"])
        frame = await ws.call("push.web.vapidPublicKey", {})
        assert frame["error"] == {
            "code": "UNAVAILABLE",
            "message": "clawgate sends no push notifications: its events reach connected"
            " clients only",
        }
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("push.web.vapidPublicKey", {})
        assert frame["error"]["message"] == "missing scope: operator.write"

    async def test_web_push_subscriptions_are_answered_as_none_held(self, gateway: Gateway) -> None:
        """A browser subscribed from an OpenClaw gateway on this address registers again,
        unsubscribes, tests and reads its preferences: each said `unknown method`. clawgate
        holds no subscription: OpenClaw's answers for none held, with the reason."""
        ws = await gateway.connected(scopes=["operator.write"])
        endpoint = "https://push.example.test/sub"
        reason = "clawgate sends no push notifications: its events reach connected clients only"
        calls = [
            ("push.web.subscribe", {"endpoint": endpoint, "keys": {"p256dh": "k", "auth": "a"}},
             "UNAVAILABLE", reason),
            ("push.web.unsubscribe", {"endpoint": endpoint},
             "FORBIDDEN", "subscription is not bound to this device: " + reason),
            ("push.web.preferences.get", {"endpoint": endpoint},
             "FORBIDDEN", "subscription is not bound to this device: " + reason),
            ("push.web.preferences.set",
             {"endpoint": endpoint, "scope": "device", "preferences": {"enabled": True}},
             "FORBIDDEN", "subscription is not bound to this device: " + reason),
            ("push.web.test", {"title": "t"},
             "INVALID_REQUEST", "no web push subscriptions registered: " + reason),
        ]  # fmt: skip
        for method, params, code, message in calls:
            frame = await ws.call(method, params)
            assert frame["error"] == {"code": code, "message": message}, method
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("push.web.preferences.get", {"endpoint": endpoint})
        assert frame["error"]["code"] == "FORBIDDEN"
        assert frame["error"]["message"].startswith("subscription is not bound"), frame
        for method, *_ in calls:
            if method != "push.web.preferences.get":
                frame = await reader.call(method, {"endpoint": endpoint})
                assert frame["error"]["message"] == "missing scope: operator.write", method
        bad = [
            ("push.web.subscribe", {"endpoint": endpoint},
             "at /keys: is required"),
            ("push.web.subscribe", {"endpoint": endpoint, "keys": {"p256dh": "k"}},
             "at /keys/auth: is required"),
            ("push.web.subscribe",
             {"endpoint": endpoint, "keys": {"p256dh": "k" * 513, "auth": "a"}},
             "at /keys/p256dh: must have at most 512 characters"),
            ("push.web.subscribe", {"endpoint": endpoint, "keys": []},
             "at /keys: must be object"),
            ("push.web.unsubscribe", {}, "at /endpoint: is required"),
            ("push.web.unsubscribe", {"endpoint": "http://push.example.test/"},
             "at /endpoint: must start with https://"),
            ("push.web.unsubscribe", {"endpoint": "https://" + "x" * 2041},
             "at /endpoint: must have at most 2048 characters"),
            ("push.web.preferences.get", {"endpoint": 7}, "at /endpoint: must be string"),
            ("push.web.preferences.set", {"endpoint": endpoint, "preferences": {}},
             "at /scope: is required"),
            ("push.web.preferences.set", {"endpoint": endpoint, "scope": "all", "preferences": {}},
             'at /scope: must be one of "user", "device"'),
            ("push.web.preferences.set", {"endpoint": endpoint, "scope": "user"},
             "at /preferences: is required"),
            ("push.web.test", {"body": 1}, "at /body: must be string"),
        ]  # fmt: skip
        for method, params, detail in bad:
            frame = await ws.call(method, params)
            assert frame["error"]["message"] == f"invalid {method} params: {detail}", params

    async def test_a_node_push_test_says_the_node_has_no_push_registration(
        self, gateway: Gateway
    ) -> None:
        """`push.test {nodeId}` (`openclaw nodes push`, an APNs test push to a paired iOS
        node) said `unknown method`. clawgate pairs no nodes, so none has a push registration:
        OpenClaw's answer for a node without one, with the reason."""
        ws = await gateway.connected(scopes=["operator.write"])
        frame = await ws.call("push.test", {"nodeId": "phone-1", "environment": "sandbox"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "node phone-1 has no APNs registration (connect iOS node first):"
            " clawgate pairs no nodes and sends no push notifications",
        }
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("push.test", {"nodeId": "phone-1"})
        assert frame["error"]["message"] == "missing scope: operator.write"
        bad = [
            ({}, "invalid push.test params: at /nodeId: is required"),
            ({"nodeId": ""}, "invalid push.test params: at /nodeId: must not be empty"),
            ({"nodeId": 7}, "invalid push.test params: at /nodeId: must be string"),
            ({"nodeId": "n" * 513},
             "invalid push.test params: at /nodeId: must have at most 512 characters"),
            ({"nodeId": "n", "title": 1}, "invalid push.test params: at /title: must be string"),
            ({"nodeId": "n", "environment": "staging"},
             'invalid push.test params: at /environment: must be one of "sandbox", "production"'),
            ({"nodeId": "   "}, "nodeId required"),
        ]  # fmt: skip
        for params, message in bad:
            frame = await ws.call("push.test", params)
            assert frame["error"] == {"code": "INVALID_REQUEST", "message": message}, params

    async def test_doctor_memory_status_has_no_memory_plugin(self, gateway: Gateway) -> None:
        """The Memory settings' overview: OpenClaw's answer with no memory plugin, and its
        dreaming off (the Dreams tab read a config without OpenClaw's `plugins` as on)."""
        ws = await gateway.connected(scopes=["operator.read"])
        counts = ("shortTermCount", "recallSignalCount", "dailySignalCount", "groundedSignalCount")
        counts += ("totalSignalCount", "phaseSignalCount", "lightPhaseHitCount")
        counts += ("remPhaseHitCount", "promotedTotal", "promotedToday")
        phase_off = {"enabled": False, "managedCronPresent": False}
        dreaming = {
            "enabled": False,
            "shortTermEntries": [],
            "signalEntries": [],
            "promotedEntries": [],
            **dict.fromkeys(counts, 0),
            "phases": {"light": phase_off, "deep": phase_off, "rem": phase_off},
        }
        none = {
            "agentId": "main",
            "embedding": {"ok": False, "error": "memory plugin unavailable"},
            "dreaming": dreaming,
        }
        assert await ws.ok("doctor.memory.status", {}) == none
        assert await ws.ok("doctor.memory.status", {"agentId": "Main", "probe": True}) == none
        assert await ws.ok("doctor.memory.status", {"agentId": "", "deep": False}) == none
        bad = [
            ({"agentId": 3}, "invalid doctor.memory.status params: at /agentId: must be string"),
            ({"probe": "yes"}, "invalid doctor.memory.status params: at /probe: must be boolean"),
            ({"agentId": "ghost"}, "Unknown agent 'ghost'."),
        ]
        for params, message in bad:
            frame = await ws.call("doctor.memory.status", params)
            assert frame["error"]["message"] == message, params

    async def test_the_agents_have_no_gateway_tools(self, gateway: Gateway) -> None:
        """The Profile settings' "View agent account": the tool catalog and a session's
        effective tools. clawgate's agents have no tools of the gateway's (a client's tools
        come with its request): none, the one tool profile full (no tool policy: a client's
        tools all pass), and a notice that says so."""
        ws = await gateway.connected(scopes=["operator.read"])
        # One group, with no tool: with none, OpenClaw's Control UI shows its bundled catalog;
        # one profile: with none, it offers OpenClaw's four.
        empty = {"id": "clawgate", "label": "No gateway tools", "source": "core"}
        profiles = [{"id": "full", "label": "Full"}]
        catalog = {"agentId": "main", "profiles": profiles, "groups": [{**empty, "tools": []}]}
        assert await ws.ok("tools.catalog", {}) == catalog
        assert await ws.ok("tools.catalog", {"agentId": "main", "includePlugins": True}) == catalog
        effective = await ws.ok("tools.effective", {"sessionKey": "main"})
        assert effective == {
            "agentId": "main",
            "profile": "full",
            "groups": [],
            "notices": [
                {
                    "id": "no-gateway-tools",
                    "severity": "info",
                    "message": "clawgate's agents have no tools of the gateway's: a client's"
                    " tools come with its request, and all of them pass. So its only tool"
                    " profile is full (no tool policy); `tools` in its config are ignored, and"
                    " nothing here saves one.",
                }
            ],
        }
        key = {"sessionKey": "agent:main:other", "agentId": "main"}
        assert (await ws.ok("tools.effective", key))["agentId"] == "main"
        bad = [
            ("tools.catalog", {"agentId": "ghost"}, "Unknown agent 'ghost'."),
            ("tools.catalog", {"includePlugins": 1}, "at /includePlugins: must be boolean"),
            ("tools.effective", {}, "at /sessionKey: is required"),
            (
                "tools.effective",
                {"sessionKey": "main", "agentId": 1},
                "at /agentId: must be string",
            ),
            ("tools.effective", {"sessionKey": "agent:ghost:x"}, "Unknown agent 'ghost'."),
        ]
        for method, params, message in bad:
            frame = await ws.call(method, params)
            assert frame["error"]["message"].endswith(message), (method, params)

    async def test_no_setup_wizard_runs(self, gateway: Gateway) -> None:
        """The Channels page's "Set up" (`wizard.start {flow: "channels", channel}`) and
        OpenClaw's setup wizard: clawgate has no channels and is set up in its config file, so
        neither starts; the page shows why."""
        ws = await gateway.connected(scopes=["operator.admin"])
        frame = await ws.call("wizard.start", {"flow": "channels", "channel": "telegram"})
        assert frame["error"] == {
            "code": "UNAVAILABLE",
            "message": "clawgate has no channels: it answers its HTTP and WebSocket clients only",
        }
        for params in ({}, {"flow": "setup", "mode": "local", "installDaemon": False}):
            frame = await ws.call("wizard.start", params)
            assert frame["error"] == {
                "code": "UNAVAILABLE",
                "message": "clawgate has no setup wizard: it is set up in its config file",
            }, params
        bad = [
            ({"flow": "all"}, 'at /flow: must be one of "setup", "channels"'),
            ({"mode": "cloud"}, 'at /mode: must be one of "local", "remote"'),
            ({"channel": ""}, "at /channel: must not be empty"),
            ({"installDaemon": "yes"}, "at /installDaemon: must be boolean"),
            ({"workspace": 1}, "at /workspace: must be string"),
        ]
        for params, message in bad:
            frame = await ws.call("wizard.start", params)
            assert frame["error"]["message"] == f"invalid wizard.start params: {message}", params
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("wizard.start", {"flow": "channels"})
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_no_agent_has_a_dream_diary(self, gateway: Gateway) -> None:
        """The Memory settings' dream diary: OpenClaw's answer for a workspace without one
        (clawgate's agents have no workspace, so no diary)."""
        ws = await gateway.connected(scopes=["operator.read"])
        none = {"agentId": "main", "found": False, "path": "DREAMS.md"}
        assert await ws.ok("doctor.memory.dreamDiary", {}) == none
        assert await ws.ok("doctor.memory.dreamDiary", {"agentId": "Main"}) == none
        bad = [
            (
                {"agentId": 3},
                "invalid doctor.memory.dreamDiary params: at /agentId: must be string",
            ),
            ({"agentId": "ghost"}, "Unknown agent 'ghost'."),
        ]
        for params, message in bad:
            frame = await ws.call("doctor.memory.dreamDiary", params)
            assert frame["error"]["message"] == message, params

    async def test_config_schema_lookup_finds_no_openclaw_path(self, gateway: Gateway) -> None:
        """A path outside clawgate's config (the Memory settings ask for a memory plugin's) is
        not found, as OpenClaw answers; one of clawgate's own has no JSON Schema to send."""
        ws = await gateway.connected(scopes=["operator.read"])
        outside = [
            "plugins.entries.memory-core.config",
            "memory",
            "gateway.nope",
            "gateway.auth.rateLimit.nope",
            "agents.defaults.nope",
        ]
        for path in outside:
            frame = await ws.call("config.schema.lookup", {"path": path})
            assert frame["error"] == {
                "code": "INVALID_REQUEST",
                "message": "config schema path not found",
            }, path
        for path in ("gateway", "gateway.auth.rateLimit.maxAttempts", "agents.list[].id"):
            frame = await ws.call("config.schema.lookup", {"path": path})
            assert frame["error"] == {
                "code": "UNAVAILABLE",
                "message": "config schema lookup is not available on clawgate",
            }, path
        bad = [
            ({}, "at /path: is required"),
            ({"path": ""}, "at /path: must not be empty"),
            ({"path": "a b"}, "at /path: must match ^[A-Za-z0-9_./\\[\\]\\-*]+$"),
            ({"path": "a" * 1025}, "at /path: must have at most 1024 characters"),
            ({"path": 1}, "at /path: must be string"),
        ]
        for params, message in bad:
            frame = await ws.call("config.schema.lookup", params)
            assert frame["error"]["message"] == f"invalid config.schema.lookup params: {message}"

    async def test_the_approvals_history_and_grants_are_empty(self, gateway: Gateway) -> None:
        """The Approvals settings: no approval decided, no standing grant; a cursor is one
        never given out, refused as OpenClaw refuses a stale one."""
        ws = await gateway.connected(scopes=["operator.approvals"])
        params = {"limit": 50, "kind": "exec"}
        assert await ws.ok("approval.history", params) == {"items": []}
        assert await ws.ok("exec.approval.grants.list", {"limit": 500}) == {"grants": []}
        bad = [
            ("approval.history", {"cursor": "c"}, "invalid approval.history cursor"),
            ("approval.history", {"cursor": ""}, "at /cursor: must not be empty"),
            ("approval.history", {"limit": 101}, "at /limit: must be <= 100"),
            (
                "approval.history",
                {"kind": "x"},
                "at /kind: must be one of exec, plugin, system-agent",
            ),
            ("exec.approval.grants.list", {"limit": 0}, "at /limit: must be >= 1"),
        ]
        for method, params, message in bad:
            frame = await ws.call(method, params)
            assert frame["error"]["message"].endswith(message), (method, params)
        reader = await gateway.connected(scopes=["operator.read"])
        for method in ("approval.history", "exec.approval.grants.list"):
            frame = await reader.call(method, {})
            assert frame["error"]["message"] == "missing scope: operator.approvals"

    async def test_the_exec_approval_policy_denies_every_host_command(
        self, gateway: Gateway
    ) -> None:
        """The Devices settings' exec approval policy: OpenClaw's snapshot of no stored file,
        with the policy clawgate holds to (no exec tool, so no host command runs: deny, never
        ask); setting one is refused, its params checked as OpenClaw checks them first."""
        ws = await gateway.connected(scopes=["operator.admin"])
        deny = {"security": "deny", "ask": "off", "askFallback": "deny", "autoAllowSkills": False}
        snapshot = await ws.ok("exec.approvals.get", {})
        assert snapshot == {
            "path": "none: clawgate has no exec tool",
            "exists": False,
            # OpenClaw's hash of a file that is not there: `missing:` and the sha256 of "".
            "hash": "missing:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "file": {"version": 1, "defaults": deny, "agents": {}},
            "resolvedDefaults": deny,
        }
        file = {"version": 1, "defaults": {"security": "full"}, "agents": {}}
        frame = await ws.call("exec.approvals.set", {"file": file, "baseHash": snapshot["hash"]})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "clawgate has no exec tool: no host command runs, so the policy is deny",
        }
        bad = [
            ("exec.approvals.set", {}, "at /file: is required"),
            ("exec.approvals.set", {"file": []}, "at /file: must be object"),
            (
                "exec.approvals.set",
                {"file": file, "baseHash": ""},
                "at /baseHash: must not be empty",
            ),
            ("exec.approvals.set", {"file": file, "baseHash": 1}, "at /baseHash: must be string"),
        ]
        for method, params, message in bad:
            frame = await ws.call(method, params)
            assert frame["error"]["message"] == f"invalid {method} params: {message}", params
        reader = await gateway.connected(scopes=["operator.read", "operator.approvals"])
        for method, params in (("exec.approvals.get", {}), ("exec.approvals.set", {"file": {}})):
            frame = await reader.call(method, params)
            assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_the_skill_library_and_clawhub_search_are_empty(self, gateway: Gateway) -> None:
        """The Skills page: no skill in the library, nowhere to save one; a session named has
        none selected; ClawHub (a third party) is not asked."""
        ws = await gateway.connected(scopes=["operator.read"])
        empty = {
            "entries": [],
            "profileId": None,
            "multipleProfiles": False,
            "defaultTarget": "unavailable",
            "canManageWorkspace": False,
            "defaultSelectionLimit": 64,
        }
        assert await ws.ok("skills.library.list", {"scope": "all"}) == empty
        session = {"sessionKey": "agent:main:main", "selections": [], "attachable": []}
        answer = await ws.ok("skills.library.list", {"sessionKey": "main"})
        assert answer == {**empty, "session": session}
        assert await ws.ok("skills.search", {"query": "git", "limit": 100}) == {"results": []}
        bad = [
            ("skills.library.list", {"scope": "x"}, "at /scope: must be one of mine, team, all"),
            ("skills.library.list", {"sessionKey": ""}, "at /sessionKey: must not be empty"),
            ("skills.library.list", {"sessionKey": "agent:"}, "at /sessionKey: invalid session key"),  # noqa: E501
            ("skills.search", {"query": ""}, "at /query: must not be empty"),
            ("skills.search", {"limit": 101}, "at /limit: must be <= 100"),
        ]  # fmt: skip
        for method, params, message in bad:
            frame = await ws.call(method, params)
            assert frame["error"]["message"] == f"invalid {method} params: {message}", params

    async def test_the_skill_workshop_has_no_proposals(self, ws: GatewayWs) -> None:
        empty = {
            "schema": "openclaw.skill-workshop.proposals-manifest.v1",
            "updatedAt": "1970-01-01T00:00:00.000Z",
            "proposals": [],
            "installedSkills": [],
        }
        assert await ws.ok("skills.proposals.list", {}) == empty
        assert await ws.ok("skills.proposals.list", {"agentId": "main"}) == empty
        frame = await ws.call("skills.proposals.list", {"agentId": ""})
        message = "invalid skills.proposals.list params: at /agentId: must not be empty"
        assert frame["error"]["message"] == message
        frame = await ws.call("skills.proposals.list", {"agentId": "ghost"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."

    async def test_a_memory_import_has_no_provider(self, gateway: Gateway) -> None:
        """Import Memory: no memory plugin, no provider to import from (admin, as on OpenClaw)."""
        ws = await gateway.connected()
        plan = await ws.ok("migrations.memory.plan", {"agentId": "Main", "overwrite": True})
        assert plan == {"agentId": "main", "providers": []}
        bad = [
            ({}, "at /agentId: is required"),
            ({"agentId": ""}, "at /agentId: must not be empty"),
            ({"agentId": "main", "overwrite": 1}, "at /overwrite: must be boolean"),
        ]
        for params, message in bad:
            frame = await ws.call("migrations.memory.plan", params)
            assert frame["error"]["message"] == f"invalid migrations.memory.plan params: {message}"
        frame = await ws.call("migrations.memory.plan", {"agentId": "ghost"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("migrations.memory.plan", {"agentId": "main"})
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_the_gateway_has_nothing_to_set_up(self, gateway: Gateway) -> None:
        """Models → "Connect provider" → "On this Gateway" (`openclaw.setup.detect`, admin as on
        OpenClaw): nothing detected, nothing to sign in to or save a key for; the agent's
        primary model is the configured one (echo/echo here)."""
        ws = await gateway.connected()
        nothing = {
            "candidates": [],
            "unavailableCandidates": [],
            "manualProviders": [],
            "authOptions": [],
            "prepareOptions": [],
            "recommendedInstalls": [],
            "nativeSessionCatalogs": [],
            "nativeSessionCatalogPreferenceRequired": False,
            "configuredModel": "echo/echo",
            "setupComplete": True,
        }
        assert await ws.ok("openclaw.setup.detect", {}) == nothing
        assert await ws.ok("openclaw.setup.detect", {"agentId": "Main"}) == nothing
        bad = [
            ({"agentId": ""}, "at /agentId: must not be empty"),
            ({"agentId": 1}, "at /agentId: must be string"),
            ({"agentId": "a" * 513}, "at /agentId: must have at most 512 characters"),
        ]
        for params, message in bad:
            frame = await ws.call("openclaw.setup.detect", params)
            assert frame["error"]["message"] == f"invalid openclaw.setup.detect params: {message}"
        frame = await ws.call("openclaw.setup.detect", {"agentId": "ghost"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("openclaw.setup.detect", {})
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_check_model_says_clawgate_sends_no_check_turn(self, gateway: Gateway) -> None:
        """Models → the model-setup card's "Check model" (`openclaw.setup.verify`, admin as on
        OpenClaw, which asks the model for a quick reply): it was an unknown method. clawgate
        sends no check turn: OpenClaw's answer when it cannot verify, saying what is known."""
        ws = await gateway.connected()
        expected = {
            "ok": False,
            "status": "unavailable",
            "error": "clawgate sends no check turn: the agent's model echo/echo is configured"
            " (provider echo); a chat message is its check",
        }
        assert await ws.ok("openclaw.setup.verify", {}) == expected
        assert await ws.ok("openclaw.setup.verify", {"agentId": "Main"}) == expected
        assert await ws.ok("openclaw.setup.verify", {"modelTarget": "utility"}) == {
            "ok": False,
            "status": "unavailable",
            "error": "clawgate has no utility model: each agent runs on its own model",
        }
        bad = [
            ({"agentId": ""}, "at /agentId: must not be empty"),
            ({"agentId": 1}, "at /agentId: must be string"),
            ({"modelTarget": "main"}, 'at /modelTarget: must be "utility"'),
            ({"modelTarget": 1}, "at /modelTarget: must be string"),
        ]
        for params, message in bad:
            frame = await ws.call("openclaw.setup.verify", params)
            assert frame["error"]["message"] == f"invalid openclaw.setup.verify params: {message}"
        frame = await ws.call("openclaw.setup.verify", {"agentId": "ghost"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."
        reader = await gateway.connected(scopes=["operator.read", "operator.write"])
        frame = await reader.call("openclaw.setup.verify", {})
        assert frame["error"]["message"] == "missing scope: operator.admin"

    async def test_web_search_has_no_route(self, ws: GatewayWs) -> None:
        """The Search settings: no web search tool, so no provider and no route; the model is
        the agent's primary one (echo/echo here) or the one asked about."""
        answer = await ws.ok("webSearch.status", {})
        assert answer == {
            "enabled": False,
            "provider": None,
            "agentId": "main",
            "model": {
                "provider": "echo",
                "id": "echo",
                "runtime": "unknown",
                "runtimeLabel": "Not resolved",
            },
            "providers": [],
            "route": {
                "kind": "unavailable",
                "label": "Search unavailable",
                "testable": False,
                "reason": "clawgate's agents have no web search tool.",
            },
        }
        asked = {"agentId": "main", "modelProvider": " p ", "modelId": "m"}
        model = (await ws.ok("webSearch.status", asked))["model"]
        assert (model["provider"], model["id"]) == ("p", "m")
        bad = [
            ({"modelProvider": "p"}, "modelProvider and modelId must be supplied together."),
            ({"agentId": "ghost"}, "Unknown agent 'ghost'."),
            ({"modelId": " "}, "invalid webSearch.status params: at /modelId: must not be blank"),
            ({"agentId": ""}, "invalid webSearch.status params: at /agentId: must not be empty"),
            ({"agentId": "a" * 513}, "invalid webSearch.status params: at /agentId: must have at most 512 characters"),  # noqa: E501
        ]  # fmt: skip
        for params, message in bad:
            frame = await ws.call("webSearch.status", params)
            assert frame["error"]["message"] == message, params

    async def test_no_session_has_artifacts(self, ws: GatewayWs) -> None:
        """A session's artifacts: clawgate takes no attachments and its tools make no files."""
        for params in (
            {"sessionKey": "main", "agentId": "Main", "messageRole": "assistant"},
            {"sessionKey": "agent:main:x", "type": "image", "limit": 4, "cursor": "c"},
            {"runId": "r"},
            {"taskId": "t"},
        ):
            assert await ws.ok("artifacts.list", params) == {"artifacts": []}, params
        unsupported = [
            ({}, "artifacts require one of sessionKey, runId, or taskId"),
            ({"runId": "r", "limit": 2}, "limit and cursor require type image"),
        ]
        for params, message in unsupported:
            frame = await ws.call("artifacts.list", params)
            assert frame["error"] == {
                "code": "INVALID_REQUEST",
                "message": message,
                "details": {"type": "artifact_query_unsupported"},
            }, params
        bad = [
            ({"sessionKey": ""}, "at /sessionKey: must not be empty"),
            ({"runId": "r", "type": "file"}, "at /type: must be image"),
            ({"runId": "r", "messageRole": "user"}, "at /messageRole: must be assistant"),
            ({"runId": "r", "type": "image", "limit": 5}, "at /limit: must be <= 4"),
            ({"sessionKey": "agent:"}, "at /sessionKey: invalid session key"),
        ]
        for params, message in bad:
            frame = await ws.call("artifacts.list", params)
            assert frame["error"]["message"] == f"invalid artifacts.list params: {message}", params
        frame = await ws.call("artifacts.list", {"sessionKey": "x", "agentId": "ghost"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."

    async def test_usage_status_has_no_provider_quotas(self, ws: GatewayWs) -> None:
        """The Usage page's provider quota windows: upstream keys are the config's, with no
        account whose quota to read (OpenClaw's answer with no such provider)."""
        before = now_ms()
        answer = await ws.ok("usage.status", {})
        assert answer["providers"] == [] and answer["updatedAt"] >= before
        assert set(answer) == {"updatedAt", "providers"}

    async def test_models_auth_status_has_no_providers(self, ws: GatewayWs) -> None:
        before = now_ms()
        answer = await ws.ok("models.authStatus", {"refresh": False, "agentId": ""})
        assert answer["providers"] == [] and answer["ts"] >= before
        assert set(answer) == {"ts", "providers"}

    async def test_chat_metadata_is_the_model_list_chosen_automatically(
        self, ws: GatewayWs
    ) -> None:
        models = (await ws.ok("models.list"))["models"]
        automatic = {"kind": "automatic", "label": "Automatic account selection"}
        draft = await ws.ok("chat.metadata", {"agentId": "main"})
        assert draft == {"models": models, "swarmEnabled": False, "accountSelection": automatic}
        session = await ws.ok("chat.metadata", {"sessionKey": "agent:main:main"})
        assert session == {**draft, "runtimeSelectionLocked": False}

    @pytest.mark.parametrize(
        ("method", "params", "message"),
        [
            ("update.status", {"refreshCheckout": "yes"}, "at /refreshCheckout: must be boolean"),
            ("sessions.observer.visibility", {}, "at /visible: is required"),
            ("sessions.observer.visibility", {"visible": 1}, "at /visible: must be boolean"),
            ("agent.identity.get", {"agentId": ""}, "at /agentId: must not be empty"),
            ("agent.identity.get", {"sessionKey": 3}, "at /sessionKey: must be string"),
            (
                "agent.identity.get",
                {"agentId": "main", "sessionKey": "agent:ops:x"},
                "at /agentId: is not the agent of the session key",
            ),
            ("models.authStatus", {"refresh": "no"}, "at /refresh: must be boolean"),
            ("talk.catalog", {"provider": ""}, "at /provider: must not be empty"),
            ("chat.metadata", {"sessionKey": ""}, "at /sessionKey: must not be empty"),
            ("chat.metadata", {"authProfileId": "me"}, "at /authProfileId: unknown model account"),
            (
                "chat.metadata",
                {"sessionKey": "main", "authProfileId": "me"},
                "sessionKey and authProfileId are mutually exclusive",
            ),
            ("progressCard.get", {}, "at /sessionKey: is required"),
            (
                "sessions.branches.list",
                {"sessionKey": "agent:"},
                "at /sessionKey: invalid session key",
            ),
            ("sessions.companion.state", {"sessionKey": []}, "at /sessionKey: must be string"),
            ("sessions.companion.ask", {"question": "why?"}, "at /sessionKey: is required"),
            ("sessions.companion.ask", {"sessionKey": "main"}, "at /question: is required"),
            (
                "sessions.companion.ask",
                {"sessionKey": "main", "question": ""},
                "at /question: must not be empty",
            ),
            (
                "sessions.companion.ask",
                {"sessionKey": "main", "question": "q" * 401},
                "at /question: must have at most 400 characters",
            ),
            ("sessions.companion.reset", {"sessionKey": ""}, "at /sessionKey: must not be empty"),
            ("tasks.list", {"limit": 501}, "at /limit: must be <= 500"),
            (
                "tasks.list",
                {"status": ["running", "lost"]},
                "at /status: must be one of cancelled, completed, failed, queued, running, "
                "timed_out",
            ),
            (
                "plugins.catalog.browse",
                {"category": "Tools"},
                "at /category: must match ^[a-z][a-z0-9-]*$ (at most 64 characters)",
            ),
            ("plugins.catalog.browse", {"pageSize": 101}, "at /pageSize: must be <= 100"),
            ("plugins.catalog.browse", {"cursor": ""}, "at /cursor: must not be empty"),
            ("tasks.list", {"sortBy": "name"}, "at /sortBy: must be one of endedAt, updatedAt"),
            ("tasks.list", {"cursor": "c" * 513}, "at /cursor: must have at most 512 characters"),
        ],
    )
    async def test_bad_params_are_refused(
        self, ws: GatewayWs, method: str, params: dict[str, Any], message: str
    ) -> None:
        frame = await ws.call(method, params)
        assert frame["error"]["code"] == "INVALID_REQUEST"
        assert frame["error"]["message"] == f"invalid {method} params: {message}"

    async def test_a_plugin_search_takes_no_cursor(self, ws: GatewayWs) -> None:
        frame = await ws.call("plugins.catalog.browse", {"query": "git", "cursor": "c"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "Plugin search does not accept a browse cursor.",
        }

    async def test_a_session_of_an_unknown_agent_is_refused(self, ws: GatewayWs) -> None:
        for method in ("progressCard.get", "sessions.branches.list", "sessions.companion.state"):
            frame = await ws.call(method, {"sessionKey": "main", "agentId": "ghost"})
            assert frame["error"]["message"] == "Unknown agent 'ghost'.", method
            frame = await ws.call(method, {"sessionKey": "agent:ghost:main"})
            assert frame["error"]["message"] == "Unknown agent 'ghost'.", method

    async def test_side_chat_is_unavailable_as_on_openclaw_without_it(self, ws: GatewayWs) -> None:
        """The chat's side-chat rail asks `sessions.companion.ask`: clawgate has no side chat,
        so it is refused as OpenClaw refuses it when the feature is off; a blank question is
        refused first, as there. A reset clears the (always empty) thread."""
        target = {"sessionKey": "agent:main:main", "agentId": "main"}
        frame = await ws.call("sessions.companion.ask", {**target, "question": "what now?"})
        assert frame["error"] == {"code": "UNAVAILABLE", "message": "Side chat is unavailable."}
        frame = await ws.call("sessions.companion.ask", {**target, "question": " \n"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "question must contain non-whitespace text",
        }
        assert await ws.ok("sessions.companion.reset", target) == {"ok": True}
        assert await ws.ok("sessions.companion.state", target) == {"exchanges": []}
        frame = await ws.call("sessions.companion.reset", {"sessionKey": "agent:ghost:main"})
        assert frame["error"]["message"] == "Unknown agent 'ghost'."

    async def test_scopes_are_openclaw_s(self, gateway: Gateway) -> None:
        reader = await gateway.connected(scopes=["operator.read"])
        assert (await reader.ok("agent.identity.get"))["agentId"] == "main"
        assert await reader.ok("tasks.list") == {"tasks": []}
        frame = await reader.call("update.status")
        assert frame["error"]["message"] == "missing scope: operator.admin"
        # Asking the side chat reads; resetting its thread writes.
        frame = await reader.call("sessions.companion.ask", {"sessionKey": "main", "question": "q"})
        assert frame["error"]["code"] == "UNAVAILABLE"
        frame = await reader.call("sessions.companion.reset", {"sessionKey": "main"})
        assert frame["error"]["message"] == "missing scope: operator.write"
        await reader.ws.close()


# OpenClaw's page of no automations: its snapshot revision is the sha256 of `[]`.
EMPTY_CRON_PAGE = {
    "jobs": [],
    "snapshotRevision": "sha256:T1PNoYwrqgwDVLtfmj7L5e0Sq02OEbqHPC8RFhICuUU",
    "total": 0,
    "offset": 0,
    "limit": 50,
    "hasMore": False,
    "nextOffset": None,
}


class TestCronList:
    """`cron.list` is a page of OpenClaw's automation inventory, as its Control UI checks it
    (its Automations page said `cron.list returned an invalid inventory page`) and as its CLI
    reads it without probing for `cron.get`."""

    async def test_an_empty_page_of_the_size_asked_for(self, ws: GatewayWs) -> None:
        params = {
            "agentId": "main",
            "includeDisabled": True,
            "compact": True,
            "limit": 50,
            "offset": 0,
            "enabled": "all",
            "sortBy": "nextRunAtMs",
            "sortDir": "asc",
        }
        assert await ws.ok("cron.list", params) == EMPTY_CRON_PAGE
        assert await ws.ok("cron.list") == EMPTY_CRON_PAGE
        page = await ws.ok("cron.list", {"limit": 200, "offset": 400})
        assert (page["limit"], page["offset"], page["total"]) == (200, 0, 0)

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"limit": 0}, "at /limit: must be >= 1"),
            ({"limit": 201}, "at /limit: must be <= 200"),
            ({"offset": -1}, "at /offset: must be >= 0"),
            ({"limit": "5"}, "at /limit: must be integer"),
        ],
    )
    async def test_bad_params_are_refused(
        self, ws: GatewayWs, params: dict[str, Any], message: str
    ) -> None:
        frame = await ws.call("cron.list", params)
        assert frame["error"]["message"] == f"invalid cron.list params: {message}"


class TestSessionsSpawnedBy:
    """OpenClaw's Control UI asks for the sessions a session spawned (its sub-agents) with
    `sessions.list {spawnedBy, limit: 10000}`. No session spawns another here: the answer is
    none, whatever the limit, and never the whole list as it was with the key ignored."""

    async def test_no_session_was_spawned_by_another(self, ws: GatewayWs) -> None:
        await ws.ok("sessions.patch", {"key": "other", "label": "Other"})
        params = {
            "spawnedBy": "agent:main:main",
            "limit": 10_000,
            "includeGlobal": False,
            "includeUnknown": False,
            "configuredAgentsOnly": True,
        }
        answer = await ws.ok("sessions.list", params)
        assert (answer["sessions"], answer["count"], answer["totalCount"]) == ([], 0, 0)
        assert (answer["hasMore"], answer["nextOffset"]) == (False, None)
        assert len((await ws.ok("sessions.list", {"limit": 10}))["sessions"]) == 1

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"spawnedBy": 5}, "at /spawnedBy: must be string"),
            ({"spawnedBy": "main", "limit": 0}, "at /limit: must be >= 1"),
            ({"limit": 10_000}, "at /limit: must be <= 1000"),
        ],
    )
    async def test_bad_params_are_refused(
        self, ws: GatewayWs, params: dict[str, Any], message: str
    ) -> None:
        frame = await ws.call("sessions.list", params)
        assert frame["error"]["message"] == f"invalid sessions.list params: {message}"
