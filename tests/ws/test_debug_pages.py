"""What the Debug and Meetings pages of OpenClaw's Control UI ask for: `diagnostics.lanes`
and `transcripts.list`."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.ws.connection import now_ms
from tests.support.ws_client import CONFIG, GatewayWs, MakeGateway


class TestDiagnosticsLanes:
    async def test_the_queue_of_runs_is_openclaw_s_main_lane(
        self, make_gateway: MakeGateway
    ) -> None:
        slow = CONFIG.replace("default: true }", "default: true, params: { delayMs: 300 } }")
        gateway = await make_gateway(slow)
        ws = await gateway.connected()
        before = now_ms()
        idle = await ws.ok("diagnostics.lanes", {})
        limit = (await ws.ok("system.info"))["runs"]["maxConcurrent"]
        assert idle["ts"] >= before
        assert idle["dynamic"] is None
        assert idle["lanes"] == [
            {"lane": "main", "queuedCount": 0, "activeCount": 0, "maxConcurrent": limit,
             "draining": False, "generation": 0, "blockedBy": None}
        ]  # fmt: skip
        await ws.ok("chat.send", {"sessionKey": "busy", "message": "a b", "idempotencyKey": "b1"})
        await ws.event("chat", state="delta")
        busy = await ws.ok("diagnostics.lanes")
        assert busy["lanes"][0]["activeCount"] == 1
        reader = await gateway.connected(scopes=["operator.read"])
        assert (await reader.ok("diagnostics.lanes"))["lanes"][0]["lane"] == "main"


class TestTranscriptsList:
    async def test_no_meeting_transcripts(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(CONFIG)
        reader = await gateway.connected(scopes=["operator.read"])
        empty = {"sessions": [], "nextCursor": None}
        assert await reader.ok("transcripts.list", {}) == empty
        params = {
            "limit": 200, "query": "standup", "providerId": "zoom", "accountId": "a",
            "agentId": "main", "startedAfter": "2026-01-01T00:00:00Z",
            "startedBefore": "2026-02-01T00:00:00+01:00",
        }  # fmt: skip
        assert await reader.ok("transcripts.list", params) == empty

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"cursor": "abc"}, "Invalid transcript library cursor."),
            (
                {"startedAfter": "2026-02-01T00:00:00Z", "startedBefore": "2026-01-01"},
                "invalid transcripts.list params: Transcript date range must end after it starts.",
            ),
            (
                {"startedAfter": "yesterday"},
                "invalid transcripts.list params: at /startedAfter: must be a date-time",
            ),
            ({"limit": 201}, "invalid transcripts.list params: at /limit: must be <= 200"),
            (
                {"query": "q" * 257},
                "invalid transcripts.list params: at /query: must have at most 256 characters",
            ),
            ({"agentId": ""}, "invalid transcripts.list params: at /agentId: must not be empty"),
        ],
    )
    async def test_refuses_bad_params(
        self, ws: GatewayWs, params: dict[str, Any], message: str
    ) -> None:
        frame = await ws.call("transcripts.list", params)
        assert frame["error"] == {"code": "INVALID_REQUEST", "message": message}
