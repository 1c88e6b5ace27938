"""The one aiohttp application: probes, the OpenAI-compatible HTTP surface, the WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from agents.providers.pool import ProviderPool
from agents.registry import SessionRegistry
from gateway import metrics_http
from gateway.appkeys import (
    AGENT_ID,
    CLIENT_LEFT,
    LOG_READER,
    METRICS,
    REQUEST_ID,
    SESSION_KEY,
    STATE,
)
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config
from gateway.edge import own_names
from gateway.edge_http import (
    add_route,
    client_of,
    close_if_body_unread,
    close_if_upgrade_declined,
    edge_middleware,
)
from gateway.http import controlui, embeddings, hooks, openai, openresponses, probes
from gateway.http.common import error_answer
from gateway.http.openai_wire import internal_error
from gateway.http.runs import CLIENT_CLOSED_REQUEST
from gateway.http.sending import watch_sending
from gateway.reload import watch_config
from gateway.responses import method_not_allowed, not_found
from gateway.state import AppOptions, GatewayState
from gateway.stores import abort_here, new_store
from gateway.ws.handler import setup as setup_websocket

log = structlog.get_logger()

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# http-openai.md §9: on every response, success or error, SSE and probes included.
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(self), geolocation=()",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Set once an answer's head is prepared: from then on a failure can only cut the answer.
_ANSWER_STARTED = web.RequestKey("answer_started", bool)


def create_app(
    config: Config, *, loader: ConfigLoader | None = None, options: AppOptions | None = None
) -> web.Application:
    # Bodies are read and limited by the handlers themselves (413/408 in our error shape).
    app = web.Application(
        # The edge checks (Host, client address) after the log line's start, before any route
        # and before the WebSocket upgrade middleware that setup_websocket appends.
        middlewares=[_request_id, _request_log, edge_middleware, _json_errors],
        client_max_size=2**63,
    )
    app[STATE] = GatewayState(config, options=options or AppOptions(), loader=loader)
    app.on_response_prepare.append(_common_headers)
    app.on_response_prepare.append(_mark_started)
    app.on_response_prepare.append(close_if_body_unread)
    app.on_response_prepare.append(close_if_upgrade_declined)
    app.on_response_prepare.append(watch_sending)
    app.cleanup_ctx.append(_sessions)
    app.cleanup_ctx.append(watch_config)
    setup_websocket(app)  # after _sessions: its fan-out listens to the registry
    metrics_http.setup(app)  # after both: it listens to the registry and counts sockets
    app.on_startup.append(_look_up_own_names)
    hooks.setup(app)
    app.on_startup.append(_mark_ready)
    probes.register(app)
    controlui.register(app)
    openai.register(app)
    embeddings.register(app)
    openresponses.register(app)
    # Last: any path no route above takes (a configured Control UI build's files, else 404).
    add_route(app, "/{unrouted:.*}", controlui.unrouted)
    return app


async def _sessions(app: web.Application) -> AsyncIterator[None]:
    """The session store and registry live exactly as long as the app."""
    state = app[STATE]
    store = new_store(state.config, on_commit=app[METRICS].store_committed)
    await store.open()
    registry = SessionRegistry(
        state.config.agents,
        store,
        ProviderPool(state.options.provider_timeouts),
        max_live_sessions=state.options.max_live_sessions,
    )
    bus = store.bus
    try:
        await registry.start()
        if bus is not None:  # a shared store: run events and aborts cross processes
            await bus.start(functools.partial(abort_here, registry))
    except BaseException:
        # The registry's first maintenance pass failed or was cancelled (a stop while the
        # gateway starts), or the bus's listener could not connect: what opened is closed, in
        # the order of a stop (the registry's runs before the store they commit to), the bus
        # too: a start stopped after its listener connected leaves it open otherwise.
        await registry.aclose()
        if bus is not None:
            await bus.aclose()
        await store.aclose()
        raise
    if bus is not None:
        registry.add_listener(bus.publish, changes=lambda: bus.watched_elsewhere)
    state.store, state.registry = store, registry
    try:
        yield
    finally:
        state.ready = False
        await registry.aclose()
        if bus is not None:
            registry.remove_listener(bus.publish)
            await bus.aclose()
        await store.aclose()
        state.store = state.registry = None


async def _look_up_own_names(app: web.Application) -> None:
    # A lan bind's names come from the resolver, which may block: once, off the loop, before
    # the first request needs them (edge.own_names caches them).
    gateway = app[STATE].config.gateway
    await _in_daemon_thread(functools.partial(own_names, gateway.bind, gateway.custom_bind_host))


async def _in_daemon_thread(work: Callable[[], object]) -> None:
    """`work` in a thread of its own that the exit does not wait for. Not asyncio.to_thread:
    a resolver that gets no answer takes minutes (30 s a try, several tries and names), and
    a stop meanwhile (systemd stops a unit still starting) would wait for the executor's
    thread, at the loop's close and again at the interpreter's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(error: BaseException | None) -> None:
        if done.done():  # cancelled: the start was stopped
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:  # raised in the awaiting task, as to_thread does
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one waits
            loop.call_soon_threadsafe(finish, error)

    threading.Thread(target=run, name="own-names", daemon=True).start()
    await done


async def _mark_ready(app: web.Application) -> None:
    # on_startup runs after every cleanup_ctx entry has entered, so the store is open.
    app[STATE].ready = True


@web.middleware
async def _request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("x-request-id", "")
    request[REQUEST_ID] = given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
    return await handler(request)


@web.middleware
async def _request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One canonical line per request, after it ended (a stream: after its last byte).

    Never the Authorization header, a body or message text: only what routes the request.
    """
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        # The handler was cancelled: its client left, or the server is stopping (a WebSocket
        # open at shutdown). Nobody receives a status; nginx's "client closed request" says so.
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        if request.get(CLIENT_LEFT):
            status = CLIENT_CLOSED_REQUEST  # an SSE stream's 200 went out, its answer did not
        request.app[METRICS].request_done(metrics_http.route_label(request, status), status)
        # A WebSocket that only read the log: at debug, as its other lines (Connection.log_reader).
        (log.debug if request.get(LOG_READER) else log.info)(
            "http_request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            agent=request.get(AGENT_ID),
            session_key=request.get(SESSION_KEY),
            request_id=request.get(REQUEST_ID),
            remote=client_of(request),
        )


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Our JSON error shape where aiohttp would answer in its own: the router's 404/405
    (deviation 29), and a bug of ours (http-openai.md §8) before any answer was prepared,
    logged once with its traceback. A started answer (an SSE stream, a WebSocket) is left to
    aiohttp, which logs the failure and closes the connection: a second answer cannot follow.
    """
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return not_found()
    except web.HTTPMethodNotAllowed as exc:
        return method_not_allowed(", ".join(sorted(exc.allowed_methods)))
    except web.HTTPException:
        raise
    except Exception:
        if request.get(_ANSWER_STARTED):
            raise
        log.exception("http_handler_crashed", path=request.path)
        response = error_answer(request, internal_error())
        # What the handler left of the request body is unknown: no second request follows.
        response.force_close()
        return response


async def _mark_started(request: web.Request, response: web.StreamResponse) -> None:
    request[_ANSWER_STARTED] = True


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(COMMON_HEADERS)
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["x-request-id"] = request_id
