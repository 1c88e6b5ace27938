"""`sessions.usage`: OpenClaw's Usage page (and the Models page's usage by provider), from the
messages the store keeps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from agents.store import SessionStore, SessionUsage, TurnRecord, UsagePoint
from gateway.ws.connection import now_ms
from gateway.ws.handler import WS
from gateway.ws.methods import session_usage
from gateway.ws.methods.session_usage import (
    LISTED_ROWS_MAX,
    POINTS_MAX,
    UNKNOWN_CREATOR,
    SessionsUsageParams,
    sessions_usage_answer,
    timeseries_points,
)
from gateway.ws.protocol import ParamReader
from tests.support.ws_client import CONFIG, Gateway, GatewayWs, MakeGateway

TWO_AGENTS = CONFIG.replace(
    '[{ id: "main", default: true }]',
    '[{ id: "main", default: true }, { id: "ops", name: "Operations" }]',
)
DAY_MS = 86_400_000


def today() -> dt.date:
    return dt.datetime.fromtimestamp(now_ms() / 1000, dt.UTC).date()


def ui_params(**overrides: Any) -> dict[str, Any]:
    """What OpenClaw's Usage page asks (its last 30 days, in UTC, every agent)."""
    end = today()
    params = {
        "startDate": (end - dt.timedelta(days=29)).isoformat(),
        "endDate": end.isoformat(),
        "agentScope": "all",
        "mode": "utc",
        "groupBy": "family",
        "limit": 1000,
        "includeContextWeight": False,
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


async def chat(ws: GatewayWs, key: str, message: str) -> None:
    idem = f"idem-{key}-{message[:100]}"
    await ws.ok("chat.send", {"sessionKey": key, "message": message, "idempotencyKey": idem})
    await ws.event("chat", state="final", runId=idem)


def totals(inp: int, out: int, entries: int) -> dict[str, int]:
    return {
        "input": inp, "output": out, "cacheRead": 0, "cacheWrite": 0,
        "totalTokens": inp + out, "totalCost": 0, "inputCost": 0, "outputCost": 0,
        "cacheReadCost": 0, "cacheWriteCost": 0, "missingCostEntries": entries,
    }  # fmt: skip


class TestSessionsUsage:
    async def test_a_turn_s_usage_in_its_session_and_the_totals(self, ws: GatewayWs) -> None:
        await chat(ws, "main", "one two three")  # echo: 3 words in, 5 out ("[turn 1] …")
        answer = await ws.ok("sessions.usage", ui_params())
        date = today().isoformat()
        assert (answer["startDate"], answer["endDate"]) == (
            (today() - dt.timedelta(days=29)).isoformat(),
            date,
        )
        [session] = answer["sessions"]
        assert session["key"] == "agent:main:main"
        assert (session["agentId"], session["scope"], session["creatorKey"]) == (
            "main", "family", UNKNOWN_CREATOR,
        )  # fmt: skip
        assert (session["modelProvider"], session["model"]) == ("echo", "echo")
        usage = session["usage"]
        assert {k: usage[k] for k in totals(0, 0, 0)} == totals(3, 5, 1)
        assert usage["messageCounts"] == {
            "total": 2, "user": 1, "assistant": 1, "toolCalls": 0, "toolResults": 0, "errors": 0,
        }  # fmt: skip
        assert usage["activityDates"] == [date]
        assert usage["dailyBreakdown"] == [
            {"date": date, "tokens": 8, "cost": 0, **totals(3, 5, 1)}
        ]
        assert usage["modelUsage"] == [
            {"provider": "echo", "model": "echo", "count": 1, "totals": totals(3, 5, 1)}
        ]
        assert usage["firstActivity"] <= usage["lastActivity"] == session["updatedAt"]
        assert answer["totals"] == totals(3, 5, 1)
        aggregates = answer["aggregates"]
        assert aggregates["sessionCount"] == 1
        assert aggregates["byProvider"] == [
            {"provider": "echo", "count": 1, "totals": totals(3, 5, 1)}
        ]
        assert aggregates["byAgent"] == [{"agentId": "main", "totals": totals(3, 5, 1)}]
        assert aggregates["daily"] == [
            {"date": date, "tokens": 8, "cost": 0, "messages": 2, "toolCalls": 0, "errors": 0}
        ]
        assert answer["creatorOptions"] == [{"key": UNKNOWN_CREATOR}]
        # A creator clawgate does not know has no sessions.
        other = await ws.ok("sessions.usage", ui_params(creatorKey='["profile","p1"]'))
        assert other["sessions"] == [] and other["totals"] == totals(0, 0, 0)

    async def test_one_session_an_agent_and_a_reset_session_s_family(
        self, make_gateway: MakeGateway
    ) -> None:
        ws = await (await make_gateway(TWO_AGENTS)).connected()
        await chat(ws, "a", "one")
        await ws.ok("sessions.reset", {"key": "a"})
        await chat(ws, "a", "two words")
        await chat(ws, "agent:ops:b", "x y z")
        family = await ws.ok("sessions.usage", ui_params())
        assert [s["key"] for s in family["sessions"]] == ["agent:ops:b", "agent:main:a"]
        a = family["sessions"][1]
        assert a["historicalInstanceCount"] == 2 and len(a["includedSessionIds"]) == 2
        assert a["usage"]["messageCounts"]["assistant"] == 2
        instances = await ws.ok("sessions.usage", ui_params(groupBy="instance"))
        assert [s["key"] for s in instances["sessions"]] == [
            "agent:ops:b", "agent:main:a", "agent:main:a",
        ]  # fmt: skip
        assert instances["totals"] == family["totals"]
        # The default agent's only, without agentScope; a key's own.
        default = await ws.ok("sessions.usage", ui_params(agentScope=None))
        assert {s["agentId"] for s in default["sessions"]} == {"main"}
        one = await ws.ok("sessions.usage", ui_params(agentScope=None, key="agent:ops:b", limit=1))
        assert [s["key"] for s in one["sessions"]] == ["agent:ops:b"]
        assert one["totals"]["input"] == 3
        # `limit` lists fewer sessions; the totals count them all.
        first = await ws.ok("sessions.usage", ui_params(limit=1))
        assert len(first["sessions"]) == 1 and first["totals"] == family["totals"]

    async def test_a_session_s_label_is_its_name_in_the_list(self, ws: GatewayWs) -> None:
        """As OpenClaw's Usage page names a session: its label; one without has none."""
        await chat(ws, "named", "one")
        await chat(ws, "plain", "two")
        await ws.ok("sessions.patch", {"key": "named", "label": "Release notes"})
        for group_by in ("family", "instance"):
            answer = await ws.ok("sessions.usage", ui_params(groupBy=group_by))
            labels = {s["key"]: s.get("label") for s in answer["sessions"]}
            assert labels == {"agent:main:named": "Release notes", "agent:main:plain": None}
            plain = next(s for s in answer["sessions"] if s["key"] == "agent:main:plain")
            assert "label" not in plain  # as OpenClaw leaves it out

    async def test_days_in_the_caller_s_time_zone(
        self, make_gateway: MakeGateway, tmp_path: Path
    ) -> None:
        """A turn at 23:30 UTC yesterday is at 8:30 today in Tokyo (UTC+9)."""
        midnight = dt.datetime.combine(today(), dt.time(), dt.UTC).timestamp() * 1000
        when = int(midnight) - 30 * 60_000
        async with SessionStore(tmp_path / "state") as store:
            row, _ = await store.get_or_create("agent:main:late", "main", when)
            await store.append_turn(
                TurnRecord(
                    row.key, "main", row.session_id, "r1", "hi", when, "hello", when, 4, 2,
                    "stop", "done",
                )
            )  # fmt: skip
        ws = await (await make_gateway(CONFIG)).connected()
        yesterday = (today() - dt.timedelta(days=1)).isoformat()
        utc = await ws.ok("sessions.usage", ui_params(startDate=yesterday, endDate=yesterday))
        assert utc["sessions"][0]["usage"]["activityDates"] == [yesterday]
        tokyo_today = today().isoformat()
        for zone in (
            {"timeZone": "Asia/Tokyo"},
            {"timeZone": "Nowhere/Else", "utcOffset": "UTC+9"},
        ):
            params = ui_params(mode="specific", startDate=tokyo_today, endDate=tokyo_today, **zone)
            answer = await ws.ok("sessions.usage", params)
            assert answer["sessions"][0]["usage"]["activityDates"] == [tokyo_today], zone
        # Yesterday in Tokyo ended at 15:00 UTC, before the turn.
        tokyo_yesterday = yesterday
        params = ui_params(
            mode="specific", timeZone="Asia/Tokyo", startDate=tokyo_yesterday,
            endDate=tokyo_yesterday,
        )  # fmt: skip
        assert (await ws.ok("sessions.usage", params))["sessions"] == []

    async def test_days_follow_the_time_zone_s_daylight_saving_changes(
        self, make_gateway: MakeGateway, tmp_path: Path
    ) -> None:
        """Berlin went from UTC+1 to UTC+2 at 01:00 UTC on 2026-03-29 and back at 01:00 UTC on
        2026-10-25: a day of the window is cut at the offset of its own time, not at today's.
        Turns at 22:30 UTC are on their UTC day in winter and on the next in summer."""

        def at(when: str) -> int:
            return int(dt.datetime.fromisoformat(when + "+00:00").timestamp() * 1000)

        turns = [
            "2026-03-28T22:30",  # 23:30 CET: 28 March
            "2026-03-29T00:30",  # 01:30 CET: 29 March, before the change
            "2026-03-29T01:30",  # 03:30 CEST: 29 March, after it
            "2026-03-29T22:30",  # 00:30 CEST: 30 March
            "2026-10-24T22:30",  # 00:30 CEST: 25 October
            "2026-10-25T22:30",  # 23:30 CET: 25 October
        ]
        async with SessionStore(tmp_path / "state") as store:
            row, _ = await store.get_or_create("agent:main:dst", "main", at(turns[0]))
            for n, when in enumerate(turns):
                ms = at(when)
                await store.append_turn(
                    TurnRecord(
                        row.key, "main", row.session_id, f"r{n}", "hi", ms, "hello", ms, 1, 1,
                        "stop", "done",
                    )
                )  # fmt: skip
        # Months old: kept from maintenance's pruning.
        kept = CONFIG.replace("agents:", 'session: { maintenance: { mode: "warn" } }, agents:')
        ws = await (await make_gateway(kept)).connected()
        spring = await ws.ok(
            "sessions.usage",
            ui_params(
                mode="specific", timeZone="Europe/Berlin", startDate="2026-03-28",
                endDate="2026-03-30",
            ),
        )  # fmt: skip
        [session] = spring["sessions"]
        assert [(d["date"], d["assistant"]) for d in session["usage"]["dailyMessageCounts"]] == [
            ("2026-03-28", 1),
            ("2026-03-29", 2),
            ("2026-03-30", 1),
        ]
        for day, assistant in (("2026-03-29", 2), ("2026-03-30", 1), ("2026-10-25", 2)):
            params = ui_params(
                mode="specific", timeZone="Europe/Berlin", startDate=day, endDate=day
            )
            answer = await ws.ok("sessions.usage", params)
            assert answer["aggregates"]["messages"]["assistant"] == assistant, day
            assert answer["sessions"][0]["usage"]["activityDates"] == [day], day
        # The whole of 2026 in Berlin: each turn on its own local day.
        params = ui_params(
            mode="specific", timeZone="Europe/Berlin", startDate="2026-01-01",
            endDate="2026-12-31",
        )  # fmt: skip
        answer = await ws.ok("sessions.usage", params)
        assert [(d["date"], d["messages"]) for d in answer["aggregates"]["daily"]] == [
            ("2026-03-28", 2), ("2026-03-29", 4), ("2026-03-30", 2), ("2026-10-25", 4),
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            ({"startDate": "2026-01-01"}, "startDate and endDate must be provided together"),
            (
                {"startDate": "2026-02-30", "endDate": "2026-03-01"},
                "invalid startDate: expected a valid YYYY-MM-DD calendar date",
            ),
            (
                {"startDate": "0000-01-01", "endDate": "0000-01-01"},
                "invalid startDate: expected a valid YYYY-MM-DD calendar date",
            ),
            (
                {"startDate": "2026-03-02", "endDate": "2026-03-01"},
                "startDate must not be after endDate",
            ),
            (
                {"mode": "specific", "timeZone": "../../etc/passwd"},
                "invalid timeZone: expected a valid IANA time zone",
            ),
            (
                {"mode": "specific", "utcOffset": "UTC+15"},
                "invalid utcOffset: expected UTC-12:00 through UTC+14:00",
            ),
            (
                {"agentScope": "all", "key": "main"},
                "agentScope=all cannot be combined with key or agentId",
            ),
            ({"limit": 1001}, "at /limit: must be <= 1000"),
            ({"limit": 0}, "at /limit: must be >= 1"),
            ({"groupBy": "all"}, 'at /groupBy: must be one of "instance", "family"'),
            ({"range": "10y"}, 'at /range: must be one of "7d", "30d", "90d", "1y", "all"'),
            ({"key": ""}, "at /key: must not be empty"),
            ({"days": 36_601}, "at /days: must be <= 36600"),
        ],
    )
    async def test_refuses_bad_params(
        self, ws: GatewayWs, params: dict[str, Any], detail: str
    ) -> None:
        frame = await ws.call("sessions.usage", params)
        assert frame["error"]["message"] == f"invalid sessions.usage params: {detail}"

    async def test_an_unknown_agent_and_the_read_scope(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(CONFIG)
        ws = await gateway.connected()
        frame = await ws.call("sessions.usage", {"agentId": "nobody"})
        assert frame["error"]["code"] == "INVALID_REQUEST"
        frame = await ws.call("sessions.usage", {"key": "agent:nobody:x"})
        assert frame["error"]["code"] == "INVALID_REQUEST"
        reader = await gateway.connected(scopes=["operator.read"])
        assert (await reader.ok("sessions.usage", {}))["sessions"] == []
        # `range: "all"` is from 1970, as OpenClaw's.
        answer = await reader.ok("sessions.usage", {"range": "all"})
        assert answer["startDate"] == "1970-01-01"

    async def test_a_window_of_years_costs_a_scan_of_what_is_stored(self, gateway: Gateway) -> None:
        """The Usage page's "All" asks from 1970-01-01; the widest window is from year 1 to
        9999. Each is one scan of the messages stored in it, and its lists have an entry per
        day with messages."""
        ws = await gateway.connected()
        await chat(ws, "main", "one two three")
        scans = gateway.app[WS].session_usage
        for start, end in (("1970-01-01", today().isoformat()), ("0001-01-01", "9999-12-31")):
            before = scans.scans
            answer = await ws.ok("sessions.usage", ui_params(startDate=start, endDate=end))
            assert scans.scans == before + 1
            assert (answer["startDate"], answer["endDate"]) == (start, end)
            assert answer["totals"] == totals(3, 5, 1)
            assert answer["aggregates"]["daily"] == [
                {"date": today().isoformat(), "tokens": 8, "cost": 0, "messages": 2,
                 "toolCalls": 0, "errors": 0}
            ]  # fmt: skip
            assert len(answer["sessions"][0]["usage"]["dailyBreakdown"]) == 1

    async def test_a_large_answer_is_built_in_a_thread_and_is_the_same(
        self, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past ANSWER_IN_THREAD_ROWS rows the answer is built off the event loop (here every
        answer, the limit lowered): it is the one built on the loop."""
        ws = await (await make_gateway(TWO_AGENTS)).connected()
        await chat(ws, "a", "one")
        await chat(ws, "agent:ops:b", "x y z")
        on_loop = await ws.ok("sessions.usage", ui_params())
        monkeypatch.setattr(session_usage, "ANSWER_IN_THREAD_ROWS", 0)
        in_thread = await ws.ok("sessions.usage", ui_params())
        assert {**in_thread, "updatedAt": 0} == {**on_loop, "updatedAt": 0}
        assert len(in_thread["sessions"]) == 2

    async def test_calls_asked_at_once_for_one_window_share_a_scan(self, gateway: Gateway) -> None:
        """Scans run one at a time; the calls for one window that wait for a scan that began
        after them share the next one (two scans for a burst, not one each)."""
        sockets = [await gateway.connected() for _ in range(4)]
        await chat(sockets[0], "main", "one two three")
        scans = gateway.app[WS].session_usage
        before = scans.scans
        sent = [
            (ws, await ws.request("sessions.usage", ui_params()))
            for ws in sockets
            for _ in range(5)
        ]
        answers = [(await ws.response(frame_id))["payload"] for ws, frame_id in sent]
        assert all(answer["totals"] == totals(3, 5, 1) for answer in answers)
        assert scans.scans - before <= 2
        assert scans.kept == 0  # no call waits: the rows are let go


def usage_row(key: str, day: int, when: int) -> SessionUsage:
    """An assistant message of 1 + 1 tokens, on `day` with a model of its own."""
    return SessionUsage(key, "main", key, day, "echo", f"m{day}", 1, 1, 0, 1, 0, 0, when, when)


def test_the_sessions_listed_share_a_budget_of_rows_and_the_totals_count_all() -> None:
    """Sessions with a row for each day and model: past LISTED_ROWS_MAX rows, fewer are
    listed (the first always is), while the totals count every session."""
    params = SessionsUsageParams.parse(ParamReader({"limit": 1000}))
    per_session = LISTED_ROWS_MAX // 2 + 1
    rows = [
        usage_row(f"agent:main:s{s}", day, s * 1000 + day)
        for s in range(3)
        for day in range(per_session)
    ]
    answer = sessions_usage_answer(rows, params, now_ms())
    assert [s["key"] for s in answer["sessions"]] == ["agent:main:s2"]
    assert answer["totals"]["input"] == 3 * per_session
    assert answer["aggregates"]["sessionCount"] == 3


class TestSessionDetails:
    """A session the Usage page opens: its turns' tokens over time and its messages."""

    async def test_a_session_s_turns_over_time_and_its_messages(self, ws: GatewayWs) -> None:
        await chat(ws, "main", "one two three")  # 3 in, 5 out
        await chat(ws, "main", "four")  # the history and "four" in, 3 out
        series = await ws.ok("sessions.usage.timeseries", {"key": "main", "sessionId": "x"})
        listed = await ws.ok("sessions.list", {})
        assert series["sessionId"] == listed["sessions"][0]["sessionId"]
        first, second = series["points"]
        assert (first["input"], first["output"], first["cumulativeTokens"]) == (3, 5, 8)
        assert second["output"] == 3
        assert second["cumulativeTokens"] == 8 + second["totalTokens"]
        assert first["timestamp"] <= second["timestamp"]
        assert (first["cost"], first["cumulativeCost"], first["cacheRead"]) == (0, 0, 0)

        logs = (await ws.ok("sessions.usage.logs", {"key": "agent:main:main", "limit": 1000}))[
            "logs"
        ]
        assert [(log["role"], log["content"]) for log in logs] == [
            ("user", "one two three"),
            ("assistant", "[turn 1] one two three"),
            ("user", "four"),
            ("assistant", "[turn 2] four"),
        ]
        assert (logs[1]["tokens"], logs[1]["cost"]) == (8, 0)
        assert "tokens" not in logs[0]
        newest = await ws.ok("sessions.usage.logs", {"key": "main", "limit": 1})
        assert [log["content"] for log in newest["logs"]] == ["[turn 2] four"]
        # OpenClaw's bounds: at most 1,000, and none at or below 0; 200 by default.
        assert (
            len((await ws.ok("sessions.usage.logs", {"key": "main", "limit": 10**9}))["logs"]) == 4
        )
        assert (await ws.ok("sessions.usage.logs", {"key": "main", "limit": 0}))["logs"] == []
        assert len((await ws.ok("sessions.usage.logs", {"key": "main"}))["logs"]) == 4

    async def test_a_long_message_is_cut_and_a_session_without_turns_is_none(
        self, ws: GatewayWs
    ) -> None:
        await chat(ws, "long", "w" * 2500)
        logs = (await ws.ok("sessions.usage.logs", {"key": "long"}))["logs"]
        assert logs[0]["content"] == "w" * 2000 + "\u2026"
        frame = await ws.call("sessions.usage.timeseries", {"key": "nobody"})
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "No transcript found for session: nobody",
        }
        assert await ws.ok("sessions.usage.logs", {"key": "nobody"}) == {"logs": []}

    @pytest.mark.parametrize("method", ["sessions.usage.timeseries", "sessions.usage.logs"])
    async def test_refuses_bad_params(self, ws: GatewayWs, method: str) -> None:
        detail = method.rsplit(".", 1)[1]
        frame = await ws.call(method, {"key": " "})
        assert frame["error"]["message"] == (
            f"invalid {method} params: key is required for {detail}"
        )
        frame = await ws.call(method, {"key": "main", "agentId": "ops"})
        assert frame["error"]["code"] == "INVALID_REQUEST"  # no such agent
        frame = await ws.call(method, {"key": "x" * 600})
        assert frame["error"]["message"] == (
            f"invalid {method} params: at /key: must have at most 512 characters"
        )


def test_a_long_session_s_points_are_sums_of_turns_in_a_row() -> None:
    points = [UsagePoint(n, 1, 2) for n in range(450)]
    out = timeseries_points(points)
    assert len(out) == 150 <= POINTS_MAX  # 3 turns a point
    assert (out[0]["timestamp"], out[0]["input"], out[0]["output"]) == (2, 3, 6)
    assert out[-1]["cumulativeTokens"] == 450 * 3
    assert timeseries_points([]) == []
