"""Liveness and readiness probes (http-openai.md §11): no auth, always enabled."""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import STATE
from gateway.auth import Authenticated, authenticate, bearer_secret, is_loopback
from gateway.edge_http import add_route, client_of
from gateway.responses import NO_STORE, json_response, method_not_allowed


def register(app: web.Application) -> None:
    for path in ("/health", "/healthz"):
        add_route(app, path, live)
    for path in ("/ready", "/readyz"):
        add_route(app, path, ready)


async def live(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    return json_response({"ok": True, "status": "live"}, headers=NO_STORE)


async def ready(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    state = request.app[STATE]
    failing = state.failing()
    if not failing:
        return json_response({"ready": True}, headers=NO_STORE)
    body: dict[str, object] = {"ready": False}
    if _may_see_details(request):
        body.update(failing=failing, uptimeMs=state.uptime_ms)
    # When to ask again (the spec is silent): a load balancer or `curl --retry` reads it. 1 s,
    # as the drain's 503 on /v1 (http-openai.md §2): a start, a drain's end or a store coming
    # back is a matter of seconds, and a probe is cheap.
    return json_response(body, status=503, headers={**NO_STORE, "Retry-After": "1"})


def _may_see_details(request: web.Request) -> bool:
    client = client_of(request)
    if is_loopback(client):
        return True
    state = request.app[STATE]
    auth = state.config.gateway.auth
    if auth.mode == "none":
        return False  # no credential to prove: the details stay with loopback
    presented = bearer_secret(request.headers.get("Authorization"))
    if not presented:
        # A load balancer's probe asks for nothing: no failed authentication (the metrics).
        return False
    outcome = authenticate(
        auth,
        state.limiter,
        presented,
        client,
        browser="Origin" in request.headers,
    )
    return isinstance(outcome, Authenticated)
