"""`GET /metrics` after a mixed load, scraped with prometheus_client's own parser: every
counter is exactly what the test did."""

from __future__ import annotations

import json
from typing import Any

from gateway.appkeys import METRICS, STATE
from gateway.ws.handler import WS
from tests.support.metrics import AUTH, JSON_AUTH, TOKEN, MetricsGateway, Samples, until
from tests.support.upstreams import Status
from tests.support.ws_client import GatewayWs

CHAT = "/v1/chat/completions"
HI = {"model": "openclaw", "messages": [{"role": "user", "content": "hello there metrics"}]}
RELAY = {**HI, "model": "openclaw/relay"}


def counters(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    return samples.get(name, {})


def usage_of(ws: GatewayWs) -> dict[str, dict[str, int]]:
    """Per run id: the `usage` agent event's tokens, as every operator client saw them."""
    found = {}
    for frame in ws.frames:
        payload = frame.get("payload") or {}
        if frame.get("event") == "agent" and payload.get("stream") == "usage":
            found[payload["runId"]] = {"agent": payload["agentId"], **payload["data"]}
    return found


async def test_a_scrape_after_a_mixed_load_counts_exactly_what_happened(
    gateway: MetricsGateway, upstream: Any
) -> None:
    client, app = gateway.client, gateway.app
    metrics = app[METRICS]
    # Startup's session maintenance wrote already (or not: its business).
    commits_before = metrics.registry.get_sample_value("clawgate_store_commit_seconds_count")
    assert app[STATE].store is not None
    store_commits_before = app[STATE].store.commits
    ws = GatewayWs(await client.ws_connect("/"))
    assert (await ws.connect(auth={"token": TOKEN}))["ok"] is True

    # A JSON completion and a streamed one, on echo.
    assert (await client.post(CHAT, json=HI, headers=JSON_AUTH)).status == 200
    streamed = await client.post(CHAT, json={**HI, "stream": True}, headers=JSON_AUTH)
    assert streamed.status == 200
    await streamed.read()
    # A wrong token.
    wrong = {**JSON_AUTH, "Authorization": "Bearer not-the-token"}
    assert (await client.post(CHAT, json=HI, headers=wrong)).status == 401
    # The upstream of `relay` answers 500: a 502 here.
    upstream.script(Status(500))
    assert (await client.post(CHAT, json=RELAY, headers=JSON_AUTH)).status == 502
    # A path nobody serves.
    assert (await client.get("/no/such/path-4711", headers=AUTH)).status == 404
    # chat.send over the WebSocket.
    send = {"sessionKey": "metrics-ws", "message": "hi from ws", "idempotencyKey": "m-1"}
    await ws.ok("chat.send", send)
    await ws.event("chat", state="final", runId="m-1")
    # A reload that applies, then a file that does not load.
    state = app[STATE]
    gateway.rewrite(json.dumps({**gateway.settings, "logging": {"level": "warn"}}))
    await until(lambda: state.config.logging.level == "warn")
    gateway.rewrite("{ gateway: { port: 'not a port' } }")
    await until(lambda: state.reload_error is not None)
    registry = state.registry
    assert registry is not None
    await until(lambda: registry.stats().active == 0)
    usage = usage_of(ws)
    assert len(usage) == 4  # json, streamed, relay, chat.send

    live = await gateway.scrape()
    assert counters(live, "clawgate_ws_connections") == {(): 1}
    assert counters(live, "clawgate_ws_connections_authenticated") == {(): 1}
    assert counters(live, "clawgate_runs_in_flight") == {("queued",): 0, ("running",): 0}
    # Stateless HTTP sessions leave memory when their run ends; the WebSocket's stays.
    assert counters(live, "clawgate_sessions_live") == {(): 1}

    await ws.ws.close()
    # The WebSocket's request is counted when its handler returns, after the close.
    await until(lambda: len(app[WS].connections) == 0)
    upgraded = {"route": "websocket", "status": "101"}
    requests = metrics.registry.get_sample_value
    await until(lambda: requests("clawgate_http_requests_total", upgraded) == 1)
    samples = await gateway.scrape()

    assert counters(samples, "clawgate_http_requests_total") == {
        (CHAT, "200"): 2,
        (CHAT, "401"): 1,
        (CHAT, "502"): 1,
        ("unmatched", "404"): 1,
        ("websocket", "101"): 1,
        ("/metrics", "200"): 1,  # the first scrape; a scrape is counted after its answer
    }
    assert counters(samples, "clawgate_runs_total") == {
        ("main", "completed"): 3,
        ("relay", "failed"): 1,
    }
    assert counters(samples, "clawgate_run_duration_seconds_count") == {("main",): 3, ("relay",): 1}
    # The failed run never produced text: no first token to time.
    assert counters(samples, "clawgate_run_time_to_first_token_seconds_count") == {("main",): 3}
    expected_tokens: dict[tuple[str, str], float] = {}
    # The failed run (relay's) counts none: its input, an estimate of its context, is not
    # what any model read.
    assert [run["inputTokens"] > 0 for run in usage.values() if run["agent"] == "relay"] == [True]
    for run in usage.values():
        if run["agent"] == "relay":
            continue
        for direction in ("input", "output"):
            key = (run["agent"], direction)
            expected_tokens[key] = expected_tokens.get(key, 0) + run[f"{direction}Tokens"]
    assert counters(samples, "clawgate_tokens_total") == expected_tokens
    assert counters(samples, "clawgate_upstream_errors_total") == {("server_error", "fake"): 1}
    assert counters(samples, "clawgate_auth_failures_total") == {("mismatch",): 1}
    assert counters(samples, "clawgate_config_reloads_total") == {
        ("success",): 1,
        ("failure",): 1,
    }
    # One observation per write transaction the store committed. With group commit that is
    # fewer than one per write (a stateless session's row goes in its turn's transaction,
    # writes queued together share one), so the store's own count is the measure.
    store = app[STATE].store
    assert store is not None and store.commits > store_commits_before
    assert counters(samples, "clawgate_store_commit_seconds_count") == {
        (): commits_before + store.commits - store_commits_before
    }
    assert counters(samples, "clawgate_ws_connections") == {(): 0}
