"""What all clients together can make the gateway hold in turns that wait to run: at most
`MAX_WAITING_TURNS` turns and `MAX_WAITING_CHARS` characters of their input, over every
session and every surface (README, "Turns waiting to run")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.registry import SessionRegistry
from gateway.appkeys import STATE
from gateway.ws.state import WsSettings
from tests.support.ws_client import SLOW_CONFIG, TOKEN, Gateway, GatewayWs, MakeGateway, send

SLOW_TEXT = " ".join(f"w{i}" for i in range(30))  # 30 deltas at 40 ms: over a second
# One run at a time: every turn after the first waits for the slot.
ONE_SLOT = (
    SLOW_CONFIG.replace("agents: {", "agents: { defaults: { maxConcurrent: 1 },")
    .replace(
        "chatCompletions: { enabled: true }",
        "chatCompletions: { enabled: true }, responses: { enabled: true }",
    )
    .replace("agents: {", 'hooks: { enabled: true, token: "hook-token" }, agents: {', 1)
)
BUSY_WS = {
    "code": "UNAVAILABLE",
    "message": "too many turns waiting to run in the gateway; retry after one has started",
    "details": {"limit": 2, "limitChars": 1_000_000},
    "retryable": True,
}
BUSY_HTTP = {
    "error": {
        "message": "too many turns waiting to run in the gateway; retry after one has started",
        "type": "api_error",
        "param": None,
        "code": None,
    }
}


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    # One connection may take all of the gateway's turns here: these tests are of that bound.
    gateway = await make_gateway(ONE_SLOT, settings=WsSettings(waiting_turns_share=1))
    registry = registry_of(gateway)
    registry.max_waiting_turns = 2
    registry.max_waiting_chars = 1_000_000
    return gateway


def registry_of(gateway: Gateway) -> SessionRegistry:
    registry = gateway.app[STATE].registry
    assert registry is not None
    return registry


async def running_one(gateway: Gateway, ws: GatewayWs) -> None:
    """A slow turn holds the one slot."""
    await ws.ok("chat.send", send("busy", SLOW_TEXT, "busy-1"))
    registry = registry_of(gateway)
    while registry.stats().active < 1:
        await asyncio.sleep(0.01)


async def http_turn(gateway: Gateway, path: str, body: dict[str, Any], key: str) -> Any:
    if path.startswith("/hooks/"):  # a hook's session is its own
        headers = {"Authorization": "Bearer hook-token"}
    else:
        headers = {"Authorization": f"Bearer {TOKEN}", "x-openclaw-session-key": key}
    return await gateway.client.post(path, json=body, headers=headers)


class TestWaitingTurns:
    async def test_a_turn_beyond_the_gateways_waiting_turns_is_refused_on_every_surface(
        self, gateway: Gateway
    ) -> None:
        ws = await gateway.connected()
        await running_one(gateway, ws)
        # One turn on each of two other sessions: each waits for the slot.
        await ws.ok("chat.send", send("a", "hi", "a-1"))
        await ws.ok("chat.send", send("b", "hi", "b-1"))
        assert registry_of(gateway).waiting == (2, 4)
        refused = await ws.call("chat.send", send("c", "hi", "c-1"))
        assert refused["error"] == BUSY_WS
        refused = await ws.call("agent", {"message": "hi", "sessionKey": "c",
                                          "idempotencyKey": "c-agent"})  # fmt: skip
        assert refused["error"] == BUSY_WS
        for path, body in (
            ("/v1/chat/completions", {"model": "openclaw", "messages": [{"role": "user",
                                                                         "content": "hi"}]}),
            ("/v1/responses", {"model": "openclaw", "input": "hi"}),
            ("/hooks/agent", {"message": "hi"}),
        ):  # fmt: skip
            resp = await http_turn(gateway, path, body, "c")
            assert (resp.status, resp.headers.get("Retry-After")) == (503, "1"), path
            assert await resp.json() == BUSY_HTTP
        # An abort of a waiting turn, or the start of one, makes room again.
        await ws.ok("chat.abort", {"sessionKey": "a", "runId": "a-1"})
        assert registry_of(gateway).waiting == (1, 2)
        await ws.ok("chat.send", send("c", "hi", "c-1"))
        await ws.ok("chat.abort", {"sessionKey": "busy", "runId": "busy-1"})
        await ws.event("chat", state="final", runId="c-1")
        assert registry_of(gateway).waiting == (0, 0)
        await ws.ws.close()

    async def test_an_agent_reset_with_text_refused_after_its_reset_is_not_reset_again(
        self, gateway: Gateway
    ) -> None:
        ws = await gateway.connected()
        first_id = (await ws.ok("sessions.patch", {"key": "r", "label": "L"}))["entry"]["sessionId"]
        await running_one(gateway, ws)
        await ws.ok("chat.send", send("a", "hi", "a-1"))
        await ws.ok("chat.send", send("b", "hi", "b-1"))
        params = {"message": "/reset hello", "sessionKey": "r", "idempotencyKey": "r-1"}
        assert (await ws.call("agent", params))["error"] == BUSY_WS  # after the reset
        reset_id = (await ws.ok("chat.history", {"sessionKey": "r"}))["sessionId"]
        assert reset_id != first_id
        # Retried while the gateway is still full: refused again, and no second reset.
        assert (await ws.call("agent", params))["error"] == BUSY_WS
        history = await ws.ok("chat.history", {"sessionKey": "r"})
        assert history["sessionId"] == reset_id
        # With room again, the retry runs the text in the session the first call reset.
        await ws.ok("chat.abort", {"sessionKey": "a", "runId": "a-1"})
        frame_id = await ws.request("agent", params)
        assert (await ws.response(frame_id))["payload"]["status"] == "accepted"
        await ws.ok("chat.abort", {"sessionKey": "busy", "runId": "busy-1"})
        assert (await ws.response(frame_id))["payload"]["status"] == "ok"
        history = await ws.ok("chat.history", {"sessionKey": "r"})
        assert history["sessionId"] == reset_id
        users = [m["content"] for m in history["messages"] if m["role"] == "user"]
        assert users == ["hello"]
        await ws.ws.close()

    async def test_a_turn_beyond_the_characters_waiting_is_refused(self, gateway: Gateway) -> None:
        registry_of(gateway).max_waiting_chars = 1_000
        ws = await gateway.connected()
        await running_one(gateway, ws)
        await ws.ok("chat.send", send("a", "x" * 600, "a-1"))
        refused = await ws.call("chat.send", send("b", "x" * 600, "b-1"))
        assert refused["error"] == {**BUSY_WS, "details": {"limit": 2, "limitChars": 1_000}}
        body = {"model": "openclaw", "messages": [{"role": "user", "content": "x" * 600}]}
        resp = await http_turn(gateway, "/v1/chat/completions", body, "b")
        assert resp.status == 503
        # A smaller one still fits.
        await ws.ok("chat.send", send("b", "x" * 300, "b-1"))
        await ws.ok("chat.abort", {"sessionKey": "busy", "runId": "busy-1"})
        await ws.ws.close()

    async def test_one_turn_larger_than_the_budget_is_taken_when_none_waits(
        self, gateway: Gateway
    ) -> None:
        registry_of(gateway).max_waiting_chars = 100
        ws = await gateway.connected()
        await running_one(gateway, ws)
        await ws.ok("chat.send", send("a", "x" * 600, "a-1"))
        await ws.ok("chat.abort", {"sessionKey": "busy", "runId": "busy-1"})
        await ws.event("chat", state="final", runId="a-1")
        await ws.ws.close()


class TestAConnectionsShare:
    async def test_one_connection_cannot_take_every_waiting_turn(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(ONE_SLOT)  # a quarter of the turns each, by default
        registry = registry_of(gateway)
        registry.max_waiting_turns = 8
        greedy, other = await gateway.connected(), await gateway.connected()
        await running_one(gateway, greedy)
        answers = [await greedy.call("chat.send", send(f"g{n}", "hi", f"g-{n}")) for n in range(8)]
        assert [a["ok"] for a in answers] == [True, True] + [False] * 6
        assert answers[2]["error"] == {
            "code": "UNAVAILABLE",
            "message": "too many turns of this connection waiting to run;"
            " retry after one has started",
            "details": {"limit": 2, "limitChars": 64 * 1024 * 1024},
            "retryable": True,
        }
        refused = await greedy.call("agent", {"message": "hi", "sessionKey": "g9",
                                              "idempotencyKey": "g-agent"})  # fmt: skip
        assert refused["error"]["message"] == answers[2]["error"]["message"]
        assert registry.waiting == (2, 4)
        # Another client still gets through, and up to its own share.
        await other.ok("chat.send", send("o1", "hi", "o-1"))
        await other.ok("agent", {"message": "hi", "sessionKey": "o2", "idempotencyKey": "o-2"})
        assert registry.waiting == (4, 8)
        # A turn of the greedy one that ended (or started) makes room in its share again.
        await greedy.ok("chat.abort", {"sessionKey": "g0", "runId": "g-0"})
        await greedy.ok("chat.send", send("g8", "hi", "g-8"))
        for ws in (greedy, other):
            await ws.ws.close()

    async def test_a_connections_share_of_characters_is_bounded_too(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(ONE_SLOT)
        registry = registry_of(gateway)
        registry.max_waiting_chars = 4_000
        greedy, other = await gateway.connected(), await gateway.connected()
        await running_one(gateway, greedy)
        await greedy.ok("chat.send", send("a", "x" * 600, "a-1"))
        refused = await greedy.call("chat.send", send("b", "x" * 600, "b-1"))
        assert refused["error"]["details"] == {"limit": 250, "limitChars": 1_000}
        await other.ok("chat.send", send("b", "x" * 600, "b-1"))
        for ws in (greedy, other):
            await ws.ws.close()


HOOKS_BUSY = {
    "error": {
        "message": "too many webhook turns waiting to run; retry after one has started",
        "type": "api_error",
        "param": None,
        "code": None,
    }
}


class TestTheWebhooksShare:
    """Every hook sender presents the one hook token, and a call that does not wait for its
    run costs it nothing to repeat: the webhooks together hold a connection's share."""

    async def test_webhooks_cannot_take_every_waiting_turn(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(ONE_SLOT)  # a quarter of the turns, as a connection
        registry = registry_of(gateway)
        registry.max_waiting_turns = 8
        ws = await gateway.connected()
        await running_one(gateway, ws)
        answers = [await http_turn(gateway, "/hooks/agent", {"message": "hi"}, "") for _ in "1234"]
        assert [a.status for a in answers] == [202, 202, 503, 503]
        assert answers[2].headers.get("Retry-After") == "1"
        assert await answers[2].json() == HOOKS_BUSY
        resp = await http_turn(gateway, "/hooks/wake", {"text": "mail"}, "")
        assert (resp.status, await resp.json()) == (503, HOOKS_BUSY)
        assert registry.waiting == (2, 4)
        # Chat clients still get through, each up to its own share.
        await ws.ok("chat.send", send("c1", "hi", "c-1"))
        await ws.ok("chat.send", send("c2", "hi", "c-2"))
        # A hook turn that ended (or started) makes room in the webhooks' share again.
        first = await answers[0].json()
        await ws.ok("chat.abort", {"sessionKey": first["sessionKey"], "runId": first["runId"]})
        resp = await http_turn(gateway, "/hooks/agent", {"message": "hi"}, "")
        assert resp.status == 202
        await ws.ws.close()

    async def test_the_webhooks_share_of_characters_is_bounded_too(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(ONE_SLOT)
        registry_of(gateway).max_waiting_chars = 4_000
        ws = await gateway.connected()
        await running_one(gateway, ws)
        statuses = [
            (await http_turn(gateway, "/hooks/agent", {"message": "x" * 600}, "")).status
            for _ in "12"
        ]
        assert statuses == [202, 503]
        await ws.ok("chat.send", send("b", "x" * 600, "b-1"))
        await ws.ws.close()
