"""Every way a run ends, scraped: the in-flight gauges come back to zero, each run is counted
once with its outcome, and the HTTP status says what the client got."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from gateway.appkeys import METRICS, STATE
from tests.support.metrics import JSON_AUTH, TOKEN, MakeGateway, until
from tests.support.ws_client import GatewayWs

CHAT = "/v1/chat/completions"
LONG = " ".join(f"w{i}" for i in range(400))  # 400 words at 20 ms: 8 s, never waited out


async def test_runs_ended_every_way_leave_nothing_in_flight(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        {"agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 20}}]}}
    )
    client, registry = gateway.client, gateway.app[STATE].registry
    assert registry is not None
    ws = GatewayWs(await client.ws_connect("/"))
    assert (await ws.connect(auth={"token": TOKEN}))["ok"] is True

    # A WebSocket run aborted while it streams, and one queued behind it.
    await ws.ok("chat.send", {"sessionKey": "s", "message": LONG, "idempotencyKey": "a-1"})
    await ws.event("chat", state="delta", runId="a-1")
    await ws.ok("chat.send", {"sessionKey": "s", "message": "next", "idempotencyKey": "a-2"})
    scraped = await gateway.scrape()
    assert scraped["clawgate_runs_in_flight"] == {("running",): 1, ("queued",): 1}
    await ws.ok("chat.abort", {"sessionKey": "s"})
    await ws.event("chat", state="aborted", runId="a-2")
    # A WebSocket run past its timeout.
    timed = {"sessionKey": "t", "message": LONG, "idempotencyKey": "t-1", "timeoutMs": 1}
    await ws.ok("chat.send", timed)
    await ws.event("chat", state="error", runId="t-1")

    url = str(client.make_url(CHAT))
    body = {"model": "openclaw", "stream": True, "messages": [{"role": "user", "content": LONG}]}
    async with aiohttp.ClientSession() as http:
        # An SSE stream whose client leaves after its first delta.
        async with http.post(url, json=body, headers=JSON_AUTH) as response:
            assert response.status == 200
            await response.content.readline()
        # A JSON completion whose client leaves while its run streams.
        await until(lambda: registry.stats().active == 0)
        left = asyncio.ensure_future(
            http.post(url, json={**body, "stream": False}, headers=JSON_AUTH)
        )
        await until(lambda: registry.stats().active == 1)
        left.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await left
    await until(lambda: registry.stats().active + registry.stats().queued == 0, 15)
    # A request is counted once its handler returned, after its run ended.
    counted = gateway.app[METRICS].registry.get_sample_value
    left_early = {"route": CHAT, "status": "499"}
    await until(lambda: counted("clawgate_http_requests_total", left_early) == 2)

    samples = await gateway.scrape()
    assert samples["clawgate_runs_in_flight"] == {("running",): 0, ("queued",): 0}
    assert samples["clawgate_runs_total"] == {("main", "aborted"): 4, ("main", "failed"): 1}
    # Runs that started are timed; the one aborted while queued never started.
    assert samples["clawgate_run_duration_seconds_count"] == {("main",): 4}
    assert samples["clawgate_http_requests_total"][(CHAT, "499")] == 2
    assert samples.get("clawgate_upstream_errors_total", {}) == {}
    await ws.ws.close()
