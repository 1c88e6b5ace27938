"""`GET /metrics` in the Prometheus text format, and the wiring that feeds gateway/metrics.py.

Behind the gateway's auth (the same `authenticate()` and failed-auth limiter as every other
endpoint) unless `gateway.metrics.public` is true; 404 when `gateway.metrics.enabled` is
false. Both are read per request, so a reload applies at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import generate_latest

from agents.runs import RunOutcome
from gateway.appkeys import MERGED_ROUTE, METRICS, REQUEST_ID, STATE
from gateway.edge_http import add_route
from gateway.http.common import authenticate, error_answer
from gateway.http.controlui import unrouted
from gateway.http.openai_wire import RequestError
from gateway.metrics import CONTENT_TYPE, GatewayMetrics, LiveCounts
from gateway.responses import method_not_allowed, not_found
from gateway.ws.handler import WS, is_websocket_upgrade

METRICS_PATH = "/metrics"
WEBSOCKET_ROUTE = "websocket"  # any path upgraded or refused an upgrade (ws-protocol.md §1)
HOOKS_ROUTE = "hooks"  # served by a middleware under the configured hooks.path
UNMATCHED_ROUTE = "unmatched"  # no route: the label must not be the client's path
MALFORMED_ROUTE = "malformed"  # a request aiohttp's parser refused (400, 414 or 431)


def setup(app: web.Application) -> None:
    """Call after the session store's cleanup_ctx and the WebSocket setup: the metrics read
    both. The store's commit timing is wired where the store is built (gateway/app.py)."""
    metrics = app[METRICS] = GatewayMetrics()
    state = app[STATE]
    state.limiter.on_failure = metrics.auth_failed
    state.config_listeners.append(metrics.reload_applied)
    state.reload_failure_listeners.append(metrics.reload_failed)

    def live() -> LiveCounts | None:
        registry = state.registry
        if registry is None:
            return None
        stats = registry.stats()
        ws = app[WS]
        return LiveCounts(
            ws_connections=len(ws.connections),
            ws_authenticated=len(ws.authenticated),
            sessions_live=stats.live_sessions,
            runs_running=stats.active,
            runs_queued=stats.queued,
        )

    metrics.watch_live(live)
    app.cleanup_ctx.append(_watch_runs)
    add_route(app, METRICS_PATH, metrics_endpoint)


async def _watch_runs(app: web.Application) -> AsyncIterator[None]:
    metrics, registry = app[METRICS], app[STATE].registry
    if registry is None:  # the store failed to open: the app does not start anyway
        yield
        return

    def outcome_of(run_id: str, session_key: str) -> RunOutcome | None:
        # Called for a terminal event, before the registry forgets the run.
        run = registry.run(run_id)
        return run.outcome if run is not None and run.session_key == session_key else None

    metrics.watch_outcomes(outcome_of)
    registry.add_listener(metrics.on_run_event, changes=lambda: False)  # runs only
    try:
        yield
    finally:
        registry.remove_listener(metrics.on_run_event)
        metrics.watch_outcomes(None)


def route_label(request: web.Request, status: int) -> str:
    """The route a request matched, as the router names it (`/v1/models/{model_id}`): a
    bounded set, whatever paths clients send. An upgrade request is the WebSocket's on any
    path, as upgrade_middleware dispatches it, refused (403, 400, 503) or not."""
    if status == 101 or is_websocket_upgrade(request):
        return WEBSOCKET_ROUTE
    hooks = request.app[STATE].config.hooks
    if hooks.enabled and (request.path == hooks.path or request.path.startswith(hooks.path + "/")):
        return HOOKS_ROUTE
    route = request.get(MERGED_ROUTE) or request.match_info.route
    if route.resource is None or route.handler is unrouted:
        return UNMATCHED_ROUTE
    return route.resource.canonical


def unparsed_request_counter(metrics: GatewayMetrics) -> type[AbstractAccessLogger]:
    """The runner's access logger (gateway/server.py), for the answers no middleware saw: a
    request aiohttp's parser refused gets its 400 (414, 431) from the protocol, before any route or
    middleware; counted as route `malformed`, or a client (or a scanner) sending garbage
    would not show on a dashboard at all. Every other request is counted by the request log
    middleware (which gives each its REQUEST_ID first) and skipped here."""

    class UnparsedRequests(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            if REQUEST_ID not in request:
                metrics.request_done(MALFORMED_ROUTE, response.status)

    return UnparsedRequests


async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.config.gateway.metrics  # per request: a reload swaps it
    if not settings.enabled:
        return not_found()
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    if not settings.public:
        try:
            authenticate(request, state)
        except RequestError as exc:
            return error_answer(request, exc)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
    )
