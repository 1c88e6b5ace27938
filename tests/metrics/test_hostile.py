"""What a hostile client can do to `GET /metrics`: whatever paths, methods, models, agents,
session keys, tokens and WebSocket methods it sends, a scrape keeps the same series (no
label takes a value a client chose), and stays valid text format."""

from __future__ import annotations

import re

from gateway.appkeys import METRICS
from tests.support.metrics import AUTH, JSON_AUTH, TOKEN, MakeGateway, MetricsGateway, parse, until
from tests.support.ws_client import GatewayWs

CHAT = "/v1/chat/completions"

# The text format, version 0.0.4 (Prometheus' exposition_formats.md), line by line.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABEL = rf"[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE}"
_LABELS = rf"\{{(?:{_LABEL}(?:,{_LABEL})*)?\}}"
_VALUE = r"(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN)"
_LINE = re.compile(
    rf"# HELP {_NAME} (?:[^\\\n]|\\[\\n])*"
    rf"|# TYPE {_NAME} (?:counter|gauge|histogram|summary|untyped)"
    rf"|{_NAME}(?:{_LABELS})? {_VALUE}(?: -?\d+)?"
)


def assert_valid_text_format(text: str) -> None:
    assert text.endswith("\n")
    bad = [line for line in text[:-1].split("\n") if _LINE.fullmatch(line) is None]
    assert bad == []


def series(text: str) -> set[str]:
    """Each sample's name and labels."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


async def hostile_round(gateway: MetricsGateway, n: int) -> None:
    client = gateway.client
    odd = f'x"\\\n\u00e9\u2028{n}'
    header = f'x"\\\u00e9{n}'  # no line break: the client refuses to send one
    for path in (f"/p-{n}", f"/v1/models/m-{n}", f"/v1/zz-{n}", f"/hooks/{n}", f"/ui/{n}"):
        await client.get(path, headers=AUTH)
        await client.request("PROPFIND", path + f"?{odd}", headers=AUTH)
    for model in (f"gpt-{n}", odd, f"openclaw/agent-{n}", f"agent:{odd}"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        await client.post(CHAT, json=body, headers=JSON_AUTH)
    hi = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}
    await client.post(CHAT, json=hi, headers={**JSON_AUTH, "x-openclaw-model": f"p{n}/{header}"})
    await client.post(CHAT, json=hi, headers={**JSON_AUTH, "x-openclaw-agent-id": header})
    await client.post(CHAT, json={**hi, "user": odd}, headers=JSON_AUTH)
    await client.post(CHAT, data=b"{", headers=JSON_AUTH)
    hook = {"x-openclaw-token": header}
    await client.post(f"/hooks/agent-{n}", json={"message": odd}, headers=hook)
    await client.get("/metrics", headers={"Authorization": f"Bearer {header}"})
    ws = GatewayWs(await client.ws_connect(f"/ws-{n}"))
    await ws.connect(auth={"token": TOKEN})
    await ws.call(f"no.such.method.{odd}", {})
    send = {"sessionKey": f"agent:{odd}:x", "message": "hi", "idempotencyKey": f"i-{n}"}
    await ws.call("chat.send", send)
    await ws.call("chat.send", {**send, "sessionKey": f"s-{odd}", "idempotencyKey": f"k-{n}"})
    await ws.event("chat", state="final", runId=f"k-{n}")
    await ws.call("agent", {"agentId": f"a{n}", "message": "hi", "idempotencyKey": f"j-{n}"})
    await ws.ws.close()
    # The WebSocket's request is counted when its handler returns, after the close.
    counted = gateway.app[METRICS].registry.get_sample_value
    upgraded = {"route": "websocket", "status": "101"}
    await until(lambda: counted("clawgate_http_requests_total", upgraded) == n + 1)


async def test_hostile_requests_add_no_series(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway({"hooks": {"enabled": True, "token": "hook-token-for-metrics"}})
    client = gateway.client
    await hostile_round(gateway, 0)
    await client.get("/metrics", headers=AUTH)  # a scrape counts itself after its answer
    first = await (await client.get("/metrics", headers=AUTH)).text()
    for n in range(1, 4):
        await hostile_round(gateway, n)
    later = await (await client.get("/metrics", headers=AUTH)).text()
    assert_valid_text_format(later)
    assert series(later) == series(first)
    samples = parse(later)
    assert set(samples["clawgate_runs_total"]) == {("main", "completed")}
    assert {route for route, _ in samples["clawgate_http_requests_total"]} == {
        "unmatched",
        "/v1/models/{model_id}",
        "/v1/{tail}",
        "/ui/{name}",
        "/v1/chat/completions",
        "/metrics",
        "hooks",
        "websocket",
    }
