"""The methods a dashboard needs: `sessions.preview`, `system.info`, `usage`,
`chat.subscribe` and `chat.unsubscribe`, over a real WebSocket connection."""

from __future__ import annotations

import asyncio
import datetime as dt
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from agents.store import DailyUsage, SessionStore, TurnRecord
from gateway import __version__
from gateway.appkeys import STATE
from gateway.ws.connection import now_ms
from gateway.ws.handler import WS
from gateway.ws.methods.dashboard import usage_summary
from gateway.ws.protocol import MAX_PAYLOAD
from gateway.ws.usage import usage_since
from tests.support.turns import turn as stored_turn
from tests.support.ws_client import CONFIG, Gateway, GatewayWs, MakeGateway, wire

TWO_AGENTS = CONFIG.replace(
    '[{ id: "main", default: true }]',
    '[{ id: "main", default: true }, { id: "ops", name: "Operations" }]',
)
# Turns seeded 40 days back: maintenance's default `pruneAfter` (30 days) would prune them.
KEEP_OLD = (
    TWO_AGENTS.rstrip().removesuffix("}")
    + '  session: { maintenance: { pruneAfter: "90d" } },\n}\n'
)

DAY_MS = 86_400_000


async def turn(ws: GatewayWs, key: str, message: str) -> dict[str, Any]:
    """Send and wait for the turn's `final` chat event."""
    idem = f"idem-{key}-{message}"
    await ws.ok("chat.send", {"sessionKey": key, "message": message, "idempotencyKey": idem})
    return await ws.event("chat", state="final", runId=idem)


class TestSessionsPreview:
    async def test_gives_the_last_messages_of_several_sessions_in_one_call(
        self, ws: GatewayWs
    ) -> None:
        await turn(ws, "p-1", "first")
        await turn(ws, "p-1", "second")
        await turn(ws, "p-2", "other")
        payload = await ws.ok("sessions.preview", {"keys": ["p-1", "p-2"], "limit": 3})
        assert payload["previews"] == [
            {
                "key": "p-1",
                "status": "ok",
                "items": [
                    {"role": "assistant", "text": "[turn 1] first"},
                    {"role": "user", "text": "second"},
                    {"role": "assistant", "text": "[turn 2] second"},
                ],
            },
            {
                "key": "p-2",
                "status": "ok",
                "items": [
                    {"role": "user", "text": "other"},
                    {"role": "assistant", "text": "[turn 1] other"},
                ],
            },
        ]
        assert isinstance(payload["ts"], int)

    async def test_says_missing_empty_and_error_per_key(self, ws: GatewayWs) -> None:
        await ws.ok("sessions.reset", {"key": "fresh"})
        payload = await ws.ok("sessions.preview", {"keys": ["nobody", "fresh", "agent::"]})
        assert payload["previews"] == [
            {"key": "nobody", "status": "missing", "items": []},
            {"key": "fresh", "status": "empty", "items": []},
            {"key": "agent::", "status": "error", "items": []},
        ]

    async def test_cuts_each_text_at_max_chars(self, ws: GatewayWs) -> None:
        await turn(ws, "long", "x" * 50)
        payload = await ws.ok("sessions.preview", {"keys": ["long"], "limit": 1, "maxChars": 20})
        assert payload["previews"][0]["items"] == [
            {"role": "assistant", "text": "[turn 1] xxxxxxxxxxx"}
        ]

    async def test_long_messages_are_read_a_page_at_a_time(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # 40 user messages of 1 MiB: read whole, the store's rows and their decoded contents
        # alone were 80 MiB for previews of a few kilobytes.
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:huge", "main", 1000)
        for n in range(40):
            row = await store.append_turn(stored_turn(row, f"r{n}", user_text="u" * 2**20))
        tracemalloc.start()
        try:
            payload = await ws.ok("sessions.preview", {"keys": ["huge"], "limit": 100})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 32 * 2**20
        items = payload["previews"][0]["items"]
        assert (
            items
            == [
                {"role": "user", "text": "u" * 240},
                {"role": "assistant", "text": "[turn 1] hello there"},
            ]
            * 40
        )

    async def test_an_answer_is_at_most_6_mib_each_key_keeping_its_newest_items(
        self, gateway: Gateway
    ) -> None:
        # 64 keys of 100 items of 10,000 characters: some 64 MB, a frame no client reads.
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:long", "main", 1000)
        for n in range(50):
            row = await store.append_turn(stored_turn(row, f"r{n}", user_text="u" * 10_000))
        ws = await gateway.raw(max_msg_size=MAX_PAYLOAD + 1)  # reads up to maxPayload
        await ws.connect()
        params = {"keys": ["long"] * 64, "limit": 100, "maxChars": 10_000}
        frame = await ws.call("sessions.preview", params)
        assert frame["ok"] is True, frame.get("error")
        assert len(wire(frame).encode()) <= 6 * 2**20 + 64 * 1024
        # Each key's share is 6 MiB / 64: the newest 19 items fit in it.
        user = {"role": "user", "text": "u" * 10_000}
        reply = {"role": "assistant", "text": "[turn 1] hello there"}
        for preview in frame["payload"]["previews"]:
            assert preview == {"key": "long", "status": "ok", "items": [reply] + [user, reply] * 9}

    async def test_a_single_key_has_the_whole_6_mib(self, ws: GatewayWs, gateway: Gateway) -> None:
        store = gateway.app[STATE].store
        assert store is not None
        row, _ = await store.create("agent:main:long", "main", 1000)
        for n in range(50):
            row = await store.append_turn(stored_turn(row, f"r{n}", user_text="u" * 10_000))
        params = {"keys": ["long"], "limit": 100, "maxChars": 10_000}
        (preview,) = (await ws.ok("sessions.preview", params))["previews"]
        assert len(preview["items"]) == 100

    async def test_no_keys_no_previews(self, ws: GatewayWs) -> None:
        assert (await ws.ok("sessions.preview", {"keys": []}))["previews"] == []

    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            ({}, "at /keys: is required"),
            ({"keys": "main"}, "at /keys: must be array"),
            ({"keys": [1]}, "at /keys/0: must be string"),
            ({"keys": ["k"] * 65}, "at /keys: must have at most 64 items"),
            ({"keys": ["k" * 513]}, "at /keys/0: must have at most 512 characters"),
            ({"keys": [], "limit": 0}, "at /limit: must be >= 1"),
            ({"keys": [], "maxChars": 19}, "at /maxChars: must be >= 20"),
        ],
    )
    async def test_refuses_bad_params(
        self, ws: GatewayWs, params: dict[str, Any], detail: str
    ) -> None:
        frame = await ws.call("sessions.preview", params)
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"invalid sessions.preview params: {detail}",
        }


class TestSystemInfo:
    async def test_reports_version_agents_connections_and_runs(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(TWO_AGENTS)
        first, second = await gateway.connected(), await gateway.connected()
        info = await first.ok("system.info")
        assert info["version"] == __version__
        assert info["agents"] == [
            {"id": "main", "name": "main", "default": True, "model": "echo/echo", "fallbacks": []},
            {
                "id": "ops",
                "name": "Operations",
                "default": False,
                "model": "echo/echo",
                "fallbacks": [],
            },
        ]
        assert info["connections"] == {"open": 2, "authenticated": 2}
        assert info["runs"] == {"active": 0, "queued": 0, "maxConcurrent": 4}
        assert info["sessions"] == {"live": 0, "stored": 0}
        assert info["ready"] is True and info["draining"] is False
        assert info["gateway"]["bind"] == "loopback"
        assert info["gateway"]["authMode"] == "token"
        assert info["gateway"]["controlUi"] is True
        assert 0 <= info["uptimeMs"] < 60_000
        await second.ws.close()

    async def test_counts_a_run_in_flight(self, make_gateway: MakeGateway) -> None:
        slow = CONFIG.replace("default: true }", "default: true, params: { delayMs: 200 } }")
        ws = await (await make_gateway(slow)).connected()
        await ws.ok(
            "chat.send", {"sessionKey": "busy", "message": "a b c", "idempotencyKey": "busy-1"}
        )
        await ws.event("chat", state="delta")
        info = await ws.ok("system.info")
        assert info["runs"]["active"] == 1
        assert info["sessions"] == {"live": 1, "stored": 1}


async def seed(state_dir: Path, key: str, agent: str, when: int, inp: int, out: int) -> None:
    """A turn written to the store file before the gateway opens it."""
    async with SessionStore(state_dir) as store:
        row, _ = await store.get_or_create(key, agent, when)
        await store.append_turn(
            TurnRecord(
                key, agent, row.session_id, f"run-{key}-{when}", "hi", when, "hello", when,
                inp, out, "stop", "done",
            )
        )  # fmt: skip


class TestUsage:
    async def test_totals_by_agent_and_day_from_the_store(
        self, make_gateway: MakeGateway, tmp_path: Path
    ) -> None:
        state_dir = tmp_path / "state"
        now = now_ms()
        today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date()
        yesterday = today - dt.timedelta(days=1)
        await seed(state_dir, "agent:main:a", "main", now - DAY_MS, 10, 5)
        await seed(state_dir, "agent:ops:b", "ops", now - DAY_MS, 7, 3)
        await seed(state_dir, "agent:main:c", "main", now - 40 * DAY_MS, 1000, 1000)
        ws = await (await make_gateway(KEEP_OLD)).connected()
        await turn(ws, "live", "one two three")  # echo: 3 words in, 5 out ("[turn 1] …")
        usage = await ws.ok("usage", {"days": 30})
        assert usage["startDate"] == (today - dt.timedelta(days=29)).isoformat()
        assert usage["endDate"] == today.isoformat()
        assert usage["daily"] == [
            {"date": yesterday.isoformat(), "agentId": "main", "inputTokens": 10,
             "outputTokens": 5, "totalTokens": 15, "turns": 1},
            {"date": yesterday.isoformat(), "agentId": "ops", "inputTokens": 7,
             "outputTokens": 3, "totalTokens": 10, "turns": 1},
            {"date": today.isoformat(), "agentId": "main", "inputTokens": 3,
             "outputTokens": 5, "totalTokens": 8, "turns": 1},
        ]  # fmt: skip
        assert usage["byAgent"] == [
            {"agentId": "main", "inputTokens": 13, "outputTokens": 10, "totalTokens": 23,
             "turns": 2},
            {"agentId": "ops", "inputTokens": 7, "outputTokens": 3, "totalTokens": 10,
             "turns": 1},
        ]  # fmt: skip
        assert usage["totals"] == {
            "inputTokens": 20, "outputTokens": 13, "totalTokens": 33, "turns": 3
        }  # fmt: skip

    async def test_one_agent_and_a_longer_window(
        self, make_gateway: MakeGateway, tmp_path: Path
    ) -> None:
        now = now_ms()
        await seed(tmp_path / "state", "agent:main:c", "main", now - 40 * DAY_MS, 100, 50)
        await seed(tmp_path / "state", "agent:ops:d", "ops", now - 40 * DAY_MS, 9, 9)
        ws = await (await make_gateway(KEEP_OLD)).connected()
        usage = await ws.ok("usage", {"days": 60, "agentId": "main"})
        assert usage["totals"] == {
            "inputTokens": 100, "outputTokens": 50, "totalTokens": 150, "turns": 1
        }  # fmt: skip
        assert usage["days"] == 60

    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            ({"days": 0}, "at /days: must be >= 1"),
            ({"days": 367}, "at /days: must be <= 366"),
            ({"days": "7"}, "at /days: must be integer"),
            ({"agentId": 7}, "at /agentId: must be string"),
        ],
    )
    async def test_refuses_bad_params(
        self, ws: GatewayWs, params: dict[str, Any], detail: str
    ) -> None:
        frame = await ws.call("usage", params)
        assert frame["error"]["message"] == f"invalid usage params: {detail}"


def cost(inp: int, out: int, turns: int) -> dict[str, int]:
    """OpenClaw's cost totals of `inp`/`out` tokens over `turns` turns of unknown price."""
    return {
        "input": inp, "output": out, "cacheRead": 0, "cacheWrite": 0,
        "totalTokens": inp + out, "totalCost": 0, "inputCost": 0, "outputCost": 0,
        "cacheReadCost": 0, "cacheWriteCost": 0, "missingCostEntries": turns,
    }  # fmt: skip


class TestUsageCost:
    """OpenClaw's `usage.cost` (`openclaw gateway usage-cost`): tokens a day, the cost unknown."""

    async def test_the_default_agent_one_agent_or_all(
        self, make_gateway: MakeGateway, tmp_path: Path
    ) -> None:
        now = now_ms()
        yesterday = dt.datetime.fromtimestamp((now - DAY_MS) / 1000, dt.UTC).date().isoformat()
        await seed(tmp_path / "state", "agent:main:a", "main", now - DAY_MS, 10, 5)
        await seed(tmp_path / "state", "agent:ops:b", "ops", now - DAY_MS, 7, 3)
        await seed(tmp_path / "state", "agent:main:c", "main", now - 40 * DAY_MS, 100, 100)
        ws = await (await make_gateway(KEEP_OLD)).connected()
        default = await ws.ok("usage.cost", {"days": 30})
        assert (default["days"], default["daily"]) == (30, [{"date": yesterday, **cost(10, 5, 1)}])
        assert default["totals"] == cost(10, 5, 1)
        assert (await ws.ok("usage.cost", {"days": 7, "agentId": "ops"}))["totals"] == cost(7, 3, 1)
        every = await ws.ok("usage.cost", {"days": 60, "agentScope": "all"})
        assert every["totals"] == cost(117, 108, 3)
        assert [day["totalTokens"] for day in every["daily"]] == [200, 25]  # oldest first

    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            ({"days": 0}, "at /days: must be >= 1"),
            ({"agentScope": "mine"}, 'at /agentScope: must be "all"'),
            ({"agentScope": "all", "agentId": "main"},
             "agentScope=all cannot be combined with agentId"),
        ],
    )  # fmt: skip
    async def test_refuses_bad_params(
        self, ws: GatewayWs, params: dict[str, Any], detail: str
    ) -> None:
        frame = await ws.call("usage.cost", params)
        assert frame["error"]["message"] == f"invalid usage.cost params: {detail}"


class TestUsageScans:
    """Any operator.read client may ask for `usage` as often as it likes, and each answer
    sums every assistant message of its window: one scan of the store answers them all."""

    async def test_concurrent_calls_for_any_window_and_agent_share_one_scan(
        self, make_gateway: MakeGateway, tmp_path: Path
    ) -> None:
        now = now_ms()
        for days_ago, agent, inp in ((0, "main", 1), (3, "ops", 20), (40, "main", 300),
                                     (200, "ops", 4000), (400, "main", 50000)):  # fmt: skip
            await seed(tmp_path / "state", f"agent:{agent}:{days_ago}", agent,
                       now - days_ago * DAY_MS, inp, 1)  # fmt: skip
        gateway = await make_gateway(KEEP_OLD)
        sockets = [await gateway.connected() for _ in range(3)]
        asked = [{}, {"days": 1}, {"days": 7, "agentId": "OPS"}, {"days": 60},
                 {"days": 366, "agentId": "main"}, {"agentId": "nobody"}]  # fmt: skip
        sent = [(ws, await ws.request("usage", params)) for ws in sockets for params in asked]
        answers = [(await ws.response(frame_id))["payload"] for ws, frame_id in sent]
        state = gateway.app[WS]
        assert state.usage.scans == 1
        store = state.gateway.store
        assert store is not None
        for answer, params in zip(answers, asked * len(sockets), strict=True):
            days = params.get("days", 30)
            agent = params.get("agentId")
            rows = await store.usage_by_day(usage_since(days, answer["updatedAt"]), agent)
            assert answer == usage_summary(rows, days, answer["updatedAt"])

    async def test_a_later_call_is_answered_from_the_scan_while_it_is_fresh(
        self, gateway: Gateway, ws: GatewayWs
    ) -> None:
        first = await ws.ok("usage", {})
        await turn(ws, "after", "one two")
        again = await ws.ok("usage", {"days": 7})
        assert gateway.app[WS].usage.scans == 1
        assert again["updatedAt"] == first["updatedAt"]
        assert again["totals"] == first["totals"]


class TestUsageWindow:
    def test_starts_at_utc_midnight_days_minus_one_ago(self) -> None:
        now = int(dt.datetime(2026, 3, 10, 15, 30, tzinfo=dt.UTC).timestamp() * 1000)
        since = usage_since(7, now)
        assert since == int(dt.datetime(2026, 3, 4, tzinfo=dt.UTC).timestamp() * 1000)

    def test_an_empty_store_has_zero_totals(self) -> None:
        now = int(dt.datetime(2026, 3, 10, tzinfo=dt.UTC).timestamp() * 1000)
        assert usage_summary([], 1, now) == {
            "updatedAt": now,
            "days": 1,
            "startDate": "2026-03-10",
            "endDate": "2026-03-10",
            "daily": [],
            "byAgent": [],
            "totals": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0, "turns": 0},
        }

    def test_sums_rows_per_agent(self) -> None:
        rows = [DailyUsage("2026-03-09", "a", 1, 2, 1), DailyUsage("2026-03-10", "a", 3, 4, 2)]
        summary = usage_summary(rows, 2, now_ms())
        assert summary["byAgent"] == [
            {"agentId": "a", "inputTokens": 4, "outputTokens": 6, "totalTokens": 10, "turns": 3}
        ]


def chat_events(ws: GatewayWs) -> list[tuple[str, str]]:
    """(sessionKey, state) of every `chat` event read so far."""
    return [
        (f["payload"]["sessionKey"], f["payload"]["state"])
        for f in ws.frames
        if f.get("type") == "event" and f.get("event") == "chat"
    ]


def agent_sessions(ws: GatewayWs) -> set[str]:
    return {
        f["payload"]["sessionKey"]
        for f in ws.frames
        if f.get("type") == "event" and f.get("event") == "agent"
    }


class TestChatSubscribe:
    async def test_a_follower_gets_only_the_sessions_it_follows(self, gateway: Gateway) -> None:
        writer, follower, everyone = (
            await gateway.connected(),
            await gateway.connected(scopes=["operator.read"]),
            await gateway.connected(scopes=["operator.read"]),
        )
        assert await follower.ok("chat.subscribe", {"sessionKey": "followed"}) == {
            "subscribed": True,
            "sessionKey": "agent:main:followed",
            "activeRunIds": [],
        }
        await turn(writer, "other", "not for the follower")
        await turn(writer, "followed", "for the follower")
        await follower.event("chat", state="final", sessionKey="agent:main:followed")
        await everyone.event("chat", state="final", sessionKey="agent:main:followed")
        assert {key for key, _ in chat_events(follower)} == {"agent:main:followed"}
        assert agent_sessions(follower) == {"agent:main:followed"}
        assert {key for key, _ in chat_events(everyone)} == {
            "agent:main:other",
            "agent:main:followed",
        }

    async def test_unsubscribing_the_last_session_gets_every_session_again(
        self, gateway: Gateway
    ) -> None:
        writer, follower = await gateway.connected(), await gateway.connected()
        await follower.ok("chat.subscribe", {"sessionKey": "a"})
        assert await follower.ok("chat.unsubscribe", {"sessionKey": "a"}) == {
            "subscribed": False,
            "sessionKey": "agent:main:a",
        }
        await turn(writer, "b", "hello")
        await follower.event("chat", state="final", sessionKey="agent:main:b")

    async def test_a_follower_joining_mid_run_sees_the_rest_of_it(
        self, make_gateway: MakeGateway
    ) -> None:
        slow = CONFIG.replace("default: true }", "default: true, params: { delayMs: 50 } }")
        gateway = await make_gateway(slow)
        writer, follower = await gateway.connected(), await gateway.connected()
        await follower.ok("chat.subscribe", {"sessionKey": "elsewhere"})
        message = " ".join(f"w{i}" for i in range(10))
        await writer.ok(
            "chat.send", {"sessionKey": "live", "message": message, "idempotencyKey": "mid-1"}
        )
        await writer.event("chat", state="delta", runId="mid-1")
        answer = await follower.ok("chat.subscribe", {"sessionKey": "live"})
        assert answer["activeRunIds"] == ["mid-1"]
        final = await follower.event("chat", state="final", runId="mid-1")
        assert final["payload"]["message"]["content"][0]["text"] == f"[turn 1] {message}"

    async def test_follows_at_most_64_sessions(self, ws: GatewayWs) -> None:
        for i in range(64):
            await ws.ok("chat.subscribe", {"sessionKey": f"s{i}"})
        await ws.ok("chat.subscribe", {"sessionKey": "s0"})  # again: not a new one
        frame = await ws.call("chat.subscribe", {"sessionKey": "s64"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "too many chat subscriptions (at most 64)",
        }

    async def test_sessions_changed_still_reaches_a_follower(self, gateway: Gateway) -> None:
        writer, follower = await gateway.connected(), await gateway.connected()
        await follower.ok("chat.subscribe", {"sessionKey": "mine"})
        await turn(writer, "not-mine", "hi")
        await follower.event("sessions.changed", sessionKey="agent:main:not-mine")

    async def test_a_closed_follower_is_forgotten_when_it_closes(self, gateway: Gateway) -> None:
        # Not at the next run event: a gateway without runs would keep every connection that
        # ever subscribed, and a client reconnecting in a loop could pin them without bound.
        ws_state = gateway.app[WS]
        follower = await gateway.connected()
        await follower.ok("chat.subscribe", {"sessionKey": "gone"})
        await follower.ws.close()
        async with asyncio.timeout(5):
            while ws_state.connections:
                await asyncio.sleep(0.01)
        assert ws_state.fanout.followers == set()

    @pytest.mark.parametrize("method", ["chat.subscribe", "chat.unsubscribe"])
    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            ({}, "at /sessionKey: is required"),
            ({"sessionKey": 5}, "at /sessionKey: must be string"),
            ({"sessionKey": ""}, "at /sessionKey: must not be empty"),
            ({"sessionKey": "k" * 513}, "at /sessionKey: must have at most 512 characters"),
        ],
    )
    async def test_refuses_bad_params(
        self, ws: GatewayWs, method: str, params: dict[str, Any], detail: str
    ) -> None:
        frame = await ws.call(method, params)
        assert frame["error"]["message"] == f"invalid {method} params: {detail}"
