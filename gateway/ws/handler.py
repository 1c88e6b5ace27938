"""The WebSocket endpoint: upgrade, handshake phase, read loop, teardown, ticks, shutdown.

Any GET with `Upgrade: websocket` is the gateway WebSocket, whatever the path (ws-protocol.md
§1): a middleware sends such requests here before the router can answer 404.

A connection lives in two phases. The handshake (§2-§5): `connect.challenge`, then the first
frame within the handshake timeout, which must be a valid `connect` that negotiates a protocol
and authenticates; every failure answers and closes as §2.4 says. After `hello-ok` the read
loop hands each request to the dispatcher in a task of its own (an `agent` call may wait for
minutes without holding up the others). Teardown, always in `finally` and in this order:
cancel the connection's tasks, unsubscribe it (presence, fan-out), stop its writer, close the
socket. Runs it started go on (agents-sessions.md §2.4).
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from agents.errors import StoreUnavailable
from gateway import __version__
from gateway.appkeys import LOG_READER, STATE
from gateway.auth import AuthFailure, AuthFailureReason, authenticate
from gateway.edge import origin_allowed
from gateway.edge_http import authorities, client_of, origin_refused
from gateway.jsonwire import PARSE_IN_THREAD_CHARS
from gateway.responses import error_response
from gateway.ws import protocol
from gateway.ws.connection import Connection, now_ms
from gateway.ws.dispatch import (
    CALLER,
    MethodRegistry,
    dispatch,
    error_for,
    log_connected,
    refuse,
)
from gateway.ws.events import EventFanout
from gateway.ws.framelimit import GatewayWebSocket, raise_frame_limit, release_frames
from gateway.ws.methods import register_all
from gateway.ws.protocol import (
    INVALID_REQUEST,
    UNAVAILABLE,
    ConnectParams,
    InvalidFrame,
    NotJson,
    ParamsError,
    RequestFrame,
    WsError,
    event_frame,
)
from gateway.ws.state import WsSettings, WsState

log = structlog.get_logger()

# The WebSocket side's own keys, declared here rather than in gateway/appkeys.py so that the
# modules every side shares import nothing of this one.
WS = web.AppKey("ws", WsState)
METHODS = web.AppKey("ws_methods", MethodRegistry)  # the method table of every connection

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SHUTDOWN_PAYLOAD = {"reason": "gateway stopping", "restartExpectedMs": None}
REASON_AUTH_CHANGED = "gateway auth changed"
# A connection that made no call this long after its hello-ok listens to events: its
# `ws_connected` line then. A poll of the log (`openclaw logs --follow`: connect, `logs.tail`,
# close) has asked by then, and is logged at debug at its end (dispatch.log_connected).
LISTENER_LOGGED_AFTER_S = 1.0


def setup(app: web.Application) -> None:
    """Call after the session store's cleanup_ctx is registered: the fan-out needs it."""
    app[WS] = WsState(app[STATE])
    app[METHODS] = register_all(MethodRegistry())
    app.middlewares.append(upgrade_middleware)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(shutdown_connections)


def is_websocket_upgrade(request: web.Request) -> bool:
    upgrade = request.headers.get("Upgrade", "")
    return request.method == "GET" and "websocket" in (
        token.strip().lower() for token in upgrade.split(",")
    )


@web.middleware
def upgrade_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    # Not a coroutine itself: the middleware above awaits the WebSocket handler's coroutine
    # directly, one frame fewer kept alive for as long as the socket is open.
    if is_websocket_upgrade(request):
        return websocket_handler(request)
    return handler(request)


# --- The connection ------------------------------------------------------------------------------


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    ws_state, methods = request.app[WS], request.app[METHODS]
    if ws_state.closing or ws_state.gateway.draining:
        return error_response(
            503, "gateway is shutting down", "api_error", headers={"Retry-After": "1"}
        )
    gateway = ws_state.gateway.config.gateway
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(
        origin, request.scheme, next(iter(authorities(request)), ""), gateway.allowed_origins
    ):
        # Browsers apply no CORS to WebSockets: without this any page the user visits could
        # open one (and in auth mode none be admin).
        log.info("ws_origin_refused", remote=client_of(request))
        return origin_refused()
    remote = client_of(request)
    if not ws_state.preauth_admits(remote, gateway.ws_preauth):
        log.warning("ws_preauth_full", remote=remote, open=ws_state.preauth_open)
        return error_response(
            503,
            "Too many unauthenticated WebSocket connections; try again later.",
            "api_error",
            headers={"Retry-After": "1"},
        )
    settings = ws_state.settings
    ws = GatewayWebSocket(
        # §2.3: until hello-ok a frame over 64 KiB is refused from its header (framelimit.py).
        max_msg_size=settings.preauth_max_payload + 1,
        timeout=settings.close_timeout_seconds,
        compress=False,  # as OpenClaw's server: no permessage-deflate
    )
    ws.too_big_reason = protocol.REASON_PREAUTH_TOO_LARGE
    ws.partial_frames = ws_state.partial_frames
    ws.message_deadline = ws_state.gateway.options.message_deadline_seconds
    try:
        upgradable = ws.can_prepare(request).ok
    except ValueError:
        # aiohttp refuses a handshake header that is not ASCII with an error of its own: a
        # key it cannot decode, a refusal whose text (the value) it cannot encode.
        upgradable = False
    if not upgradable:
        return error_response(400, "Invalid WebSocket upgrade request.", "invalid_request_error")
    ws_state.preauth_enter(remote)
    try:
        stream = await ws.prepare(request)
        # The 101's headers are on the wire; kept, they would hold some 1 KiB (the security
        # headers, the date, the request id) for as long as the socket is open.
        ws.headers.clear()
        conn = Connection(
            ws,
            str(uuid.uuid4()),
            remote,
            settings.max_buffered_bytes,
            settings.close_timeout_seconds,
            stream,
            from_browser=origin is not None,
            answers=ws_state.answers,
            send_deadline=settings.send_deadline_seconds,
        )
    except BaseException:
        ws_state.preauth_leave(remote)
        raise
    ws_state.connections.add(conn)
    conn.start()
    # conn_id goes into each log line explicitly, not through contextvars: tasks spawned
    # from here (a session's worker) outlive the connection and would carry it on.
    authenticated = False
    try:
        authenticated = await _handshake(ws_state, methods, conn, request)
        if not authenticated:
            release_frames(request)
        if authenticated:
            ws_state.preauth_leave(remote)
            ws.too_big_reason = ""
            await _read_loop(ws_state, methods, conn)
    finally:
        # Before the teardown as well: aiohttp cancels this handler when the peer is gone.
        request[LOG_READER] = bool(conn.log_reader)
        try:
            await _teardown(ws_state, conn)
            request[LOG_READER] = bool(conn.log_reader)  # a call the teardown cut is not quiet
        finally:
            # A refused socket holds its place until it is closed: a client that does not
            # answer the close keeps it open for the close timeout.
            if not authenticated:
                ws_state.preauth_leave(remote)
    return ws


async def _handshake(
    ws_state: WsState, methods: MethodRegistry, conn: Connection, request: web.Request
) -> bool:
    """True when `hello-ok` was sent; otherwise the close is already requested."""
    gateway = ws_state.gateway
    challenge = {"nonce": str(uuid.uuid4()), "ts": now_ms(), "capabilities": []}
    conn.send(protocol.unsequenced_event("connect.challenge", challenge))
    try:
        # One deadline for the whole wait: receive(timeout=) restarts its timer after every
        # ping or pong it answers or swallows, so a client that only pings would stay in the
        # handshake (and hold a pre-auth slot) for as long as it liked.
        async with asyncio.timeout(gateway.options.handshake_timeout_seconds):
            msg = await conn.ws.receive()
    except TimeoutError:
        return _refuse(conn, Refusal.TIMEOUT)
    if msg.type is WSMsgType.ERROR and getattr(msg.data, "code", None) == protocol.CLOSE_TOO_BIG:
        # Refused from the frame's header (the socket's pre-auth limit); closed with 1009.
        return _refuse(conn, Refusal.TOO_LARGE)
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        _log_refused_frames(conn)
        return False
    if msg.type is not WSMsgType.TEXT:
        return _refuse(conn, Refusal.BINARY)  # as non-JSON (§1)
    text: str = msg.data
    if len(text.encode()) > ws_state.settings.preauth_max_payload:
        return _refuse(conn, Refusal.TOO_LARGE)
    try:
        frame = protocol.parse_request(text)
    except NotJson:
        return _refuse(conn, Refusal.NOT_JSON)
    except InvalidFrame:
        return _refuse(conn, Refusal.INVALID_FRAME)
    if frame.method != "connect":
        error = WsError(INVALID_REQUEST, protocol.MSG_FIRST_MUST_BE_CONNECT)
        return _reject(conn, frame, error, protocol.CLOSE_POLICY_VIOLATION)
    try:
        params = ConnectParams.from_dict(frame.params)
    except ParamsError as exc:
        error = WsError(INVALID_REQUEST, f"invalid connect params: {exc.detail}")
        return _reject(conn, frame, error, protocol.CLOSE_POLICY_VIOLATION)
    version = protocol.negotiate(params.min_protocol, params.max_protocol)
    if version is None:
        error = protocol.protocol_mismatch(params.min_protocol, params.max_protocol)
        return _reject(
            conn, frame, error, protocol.CLOSE_PROTOCOL_ERROR, protocol.REASON_PROTOCOL_MISMATCH
        )
    auth = gateway.config.gateway.auth  # read now: a reload may have rotated the secret
    kind = "password" if auth.mode == "password" else "token"
    # Trimmed, as the configured secret and HTTP's bearer secret are (a pasted one often ends
    # in a newline); one of only whitespace is missing, as over HTTP.
    sent = params.auth.password if kind == "password" else params.auth.token
    presented = (sent or "").strip() or None
    outcome = authenticate(auth, gateway.limiter, presented, conn.remote, browser=conn.from_browser)
    match outcome:
        # The lockout is checked before the secret: a locked-out address learns nothing (§5.1).
        case AuthFailure(reason=AuthFailureReason.LOCKED_OUT, retry_after=int(retry_after)):
            error = protocol.rate_limited(retry_after)
            return _reject(conn, frame, error, protocol.CLOSE_POLICY_VIOLATION)
        case AuthFailure(reason=reason):
            missing = reason is AuthFailureReason.MISSING
            error = protocol.auth_error(kind, missing, params.client.id)
            return _reject(conn, frame, error, protocol.CLOSE_POLICY_VIOLATION)
    if params.role != protocol.ROLE_OPERATOR:
        error = WsError(INVALID_REQUEST, protocol.MSG_INVALID_ROLE)
        return _reject(conn, frame, error, protocol.CLOSE_POLICY_VIOLATION)

    # aiohttp refuses a frame of its limit or more: a frame of exactly maxPayload is allowed.
    raise_frame_limit(conn.ws, request, ws_state.settings.max_payload + 1)
    conn.client = params.client
    conn.protocol = version
    conn.scopes = protocol.granted_scopes(params.scopes)
    conn.auth_method = auth.mode
    conn.auth_stamp = ws_state.auth_stamp(auth)
    try:
        health = await ws_state.health.get(gateway)
    except Exception as exc:
        # The snapshot reads the session store: while it fails there is no hello-ok to give.
        error = error_for(exc, "connect", conn.conn_id)
        return _reject(conn, frame, error, protocol.CLOSE_INTERNAL_ERROR)
    if conn.closing:  # shut down while the snapshot was computed
        return False
    in_force = gateway.config.gateway.auth
    if in_force.mode != "none" and ws_state.auth_stamp(in_force) != conn.auth_stamp:
        # The secret was rotated while the snapshot was computed (_close_retired).
        log.info(
            "ws_handshake_failed",
            conn_id=conn.conn_id,
            remote=conn.remote,
            reason=REASON_AUTH_CHANGED,
            close_code=protocol.CLOSE_SERVICE_RESTART,
        )
        conn.close(protocol.CLOSE_SERVICE_RESTART, REASON_AUTH_CHANGED)
        return False
    # From here on no await: the connection joins the fan-out right after its hello-ok.
    now = now_ms()
    conn.opened(now)
    ws_state.presence.connect(conn.conn_id, params.client, conn.scopes, now)
    # The snapshot in hello-ok is this version: the presence event of this very change, if it
    # comes, is not for this connection.
    conn.presence_version = ws_state.presence.version
    conn.send(protocol.response(frame.id, _hello_ok(ws_state, methods, conn, health, now)))
    conn.send_event(
        event_frame("health", health, droppable=True, state_version=ws_state.state_version())
    )
    ws_state.authenticated.add(conn)
    if conn.can_read:
        ws_state.readers.add(conn)
    ws_state.watchers_changed()
    ws_state.presence_changed()
    # Its `ws_connected` line waits until it shows what it is (dispatch.log_connected).
    asyncio.get_running_loop().call_later(LISTENER_LOGGED_AFTER_S, _log_listener, conn)
    return True


def _log_listener(conn: Connection) -> None:
    """The `ws_connected` line of one that made no call since its hello-ok: it listens to
    events. One that read the log (or reads it now) is left to its end or its next call."""
    if conn.log_reader is None and not conn.calls_in_flight and not conn.closing:
        log_connected(conn)


class Refusal(StrEnum):
    """Why a handshake ended with a close and no response (§2.4); the value is what the log
    line says."""

    TIMEOUT = "timeout"
    TOO_LARGE = "too large"
    BINARY = "binary frame"
    NOT_JSON = "not json"
    INVALID_FRAME = "invalid frame"


def _refuse(conn: Connection, why: Refusal) -> bool:
    """Close without a response (§2.4)."""
    match why:
        case Refusal.TOO_LARGE:
            code, reason = protocol.CLOSE_TOO_BIG, protocol.REASON_PREAUTH_TOO_LARGE
        case Refusal.INVALID_FRAME:
            code, reason = protocol.CLOSE_POLICY_VIOLATION, protocol.REASON_INVALID_FRAME
        case Refusal.TIMEOUT | Refusal.BINARY | Refusal.NOT_JSON:
            code, reason = protocol.CLOSE_NORMAL, ""
    log.info(
        "ws_handshake_failed", conn_id=conn.conn_id, remote=conn.remote, reason=why, close_code=code
    )
    conn.close(code, reason)
    return False


def _reject(
    conn: Connection, frame: RequestFrame, error: WsError, code: int, reason: str | None = None
) -> bool:
    """An error response, then the close (§2.4); the reason is the message unless given."""
    log.info(
        "ws_handshake_failed",
        conn_id=conn.conn_id,
        remote=conn.remote,
        reason=error.message,
        close_code=code,
    )
    conn.send(protocol.error_response(frame.id, error))
    conn.close(code, error.message if reason is None else reason)
    return False


def _hello_ok(
    ws_state: WsState, methods: MethodRegistry, conn: Connection, health: dict[str, Any], now: int
) -> dict[str, Any]:
    gateway = ws_state.gateway
    config = gateway.config
    agents = config.agents
    default = agents.default_agent.id
    config_path = gateway.loader.config_path if gateway.loader is not None else config.source.path
    payload: dict[str, Any] = {
        "type": "hello-ok",
        "protocol": conn.protocol,
        "server": {"version": __version__, "connId": conn.conn_id},
        "features": {
            "methods": methods.names,
            "events": list(protocol.EVENTS),
            "capabilities": list(protocol.CAPABILITIES),
        },
        "snapshot": {
            "presence": ws_state.presence_snapshot(now),
            "health": health,
            "stateVersion": ws_state.state_version(),
            "uptimeMs": gateway.uptime_ms,
            "configPath": str(config_path),
            "stateDir": str(config.state_dir),
            "sessionDefaults": {
                "defaultAgentId": default,
                "mainKey": agents.main_key,
                "mainSessionKey": agents.main_session_key(default),
                "scope": "per-sender",
            },
            "authMode": config.gateway.auth.mode,
        },
    }
    if conn.protocol >= 4:  # §4: v3 clients get no `auth` block
        payload["auth"] = {
            "method": conn.auth_method,
            "role": conn.role,
            "scopes": list(conn.scopes),
        }
    payload["policy"] = {
        "maxPayload": ws_state.settings.max_payload,
        "maxBufferedBytes": ws_state.settings.max_buffered_bytes,
        "tickIntervalMs": int(gateway.options.tick_interval_seconds * 1000),
    }
    return payload


async def _read_loop(ws_state: WsState, methods: MethodRegistry, conn: Connection) -> None:
    ws = conn.ws
    waiting = _WaitingRequests(ws_state, methods, conn)
    try:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                conn.last_activity_at = now_ms()
                data = msg.data
                try:
                    # Awaited here: the connection's requests are still dispatched in order.
                    if len(data) > PARSE_IN_THREAD_CHARS:
                        frame = await asyncio.to_thread(protocol.parse_request, data)
                    else:
                        frame = protocol.parse_request(data)
                except NotJson:
                    _invalid_frame(conn, None, "not JSON")
                    continue
                except InvalidFrame as exc:
                    _invalid_frame(conn, exc.frame_id, exc.detail)
                    continue
                waiting.submit(frame, len(data))
            elif msg.type is WSMsgType.BINARY:
                conn.last_activity_at = now_ms()
                _invalid_frame(conn, None, "binary frames are not supported")
            else:  # CLOSE, CLOSING, CLOSED, ERROR: the socket is done
                _log_refused_frames(conn)
                return
    finally:
        waiting.drop()


def _log_refused_frames(conn: Connection) -> None:
    """The line of a socket whose frames the gateway stopped reading (framelimit.py): a
    message not whole in time, the partial messages of every socket full, a frame not
    masked."""
    ws = conn.ws
    refusal = ws.refusal if isinstance(ws, GatewayWebSocket) else None
    if refusal is not None:
        code, reason = refusal
        log.warning(
            "ws_frames_refused",
            conn_id=conn.conn_id,
            remote=conn.remote,
            reason=reason,
            close_code=code,
        )


class _WaitingRequests:
    """A connection's requests beyond its slots (WsSettings.max_inflight_requests), in the
    order they came: each starts when a call ends. The reader never waits for a slot."""

    def __init__(self, ws_state: WsState, methods: MethodRegistry, conn: Connection) -> None:
        self._ws_state = ws_state
        self._methods = methods
        self._conn = conn
        self._frames: collections.deque[tuple[RequestFrame, int]] = collections.deque()
        self._chars = 0
        self._open = True

    def submit(self, frame: RequestFrame, chars: int) -> None:
        ws_state = self._ws_state
        settings = ws_state.settings
        if not self._frames and self._conn.calls_in_flight < settings.max_inflight_requests:
            self._start(frame)
        elif (
            len(self._frames) >= settings.max_waiting_requests
            or self._chars + chars > settings.max_waiting_chars
        ):
            error = _too_many_in_flight(settings.max_inflight_requests, len(self._frames))
            refuse(self._conn, frame.id, frame.method, error)
        elif ws_state.waiting_chars + chars > settings.max_waiting_total_chars:
            refuse(self._conn, frame.id, frame.method, _too_many_waiting(settings))
        else:
            self._frames.append((frame, chars))
            self._chars += chars
            ws_state.waiting_chars += chars

    def drop(self) -> None:
        """The socket is done: what waits is not started."""
        self._open = False
        self._frames.clear()
        self._ws_state.waiting_chars -= self._chars
        self._chars = 0

    def _start(self, frame: RequestFrame) -> None:
        dispatching = dispatch(self._methods, self._ws_state, self._conn, frame)
        task = self._conn.spawn(dispatching, f"ws-call {frame.method}")
        task.add_done_callback(self._next)

    def _next(self, _: asyncio.Task[Any]) -> None:
        limit = self._ws_state.settings.max_inflight_requests
        while self._open and self._frames and self._conn.calls_in_flight < limit:
            frame, chars = self._frames.popleft()
            self._chars -= chars
            self._ws_state.waiting_chars -= chars
            self._start(frame)


def _too_many_in_flight(limit: int, waiting: int) -> WsError:
    return WsError(
        UNAVAILABLE,
        f"too many requests in flight: {limit} per connection and {waiting} waiting;"
        " retry after one is answered",
        details={"limit": limit, "waiting": waiting},
        retryable=True,
    )


def _too_many_waiting(settings: WsSettings) -> WsError:
    return WsError(
        UNAVAILABLE,
        "too many requests waiting in the gateway; retry after one is answered",
        details={"limit": settings.max_waiting_total_chars},
        retryable=True,
    )


def _invalid_frame(conn: Connection, frame_id: str | None, detail: str) -> None:
    error = WsError(INVALID_REQUEST, f"invalid request frame: {detail}")
    refuse(conn, frame_id or protocol.INVALID_FRAME_ID, None, error)


async def _teardown(ws_state: WsState, conn: Connection) -> None:
    conn.cancel_tasks()
    ws_state.connections.discard(conn)
    if conn in ws_state.authenticated:
        ws_state.authenticated.discard(conn)
        ws_state.readers.discard(conn)
        ws_state.fanout.followers.discard(conn)
        ws_state.watchers_changed()
        ws_state.presence.disconnect(conn.conn_id, now_ms(), conn.last_activity_at)
        ws_state.presence_changed()
    # Shielded and tracked: the writer and the socket are closed even when aiohttp cancels
    # this handler because the peer vanished.
    closing = ws_state.spawn(_close(conn), f"ws-close {conn.conn_id}")
    await asyncio.shield(closing)


async def _close(conn: Connection) -> None:
    await conn.wait_tasks()
    await conn.aclose()
    if conn.authenticated:
        log_connected(conn, reader=bool(conn.log_reader))
        (log.debug if conn.log_reader else log.info)(
            "ws_disconnected",
            conn_id=conn.conn_id,
            close_code=conn.ws.close_code,
            dropped_events=conn.dropped,
            duration_ms=now_ms() - conn.connected_at,
        )


# --- Application-wide: fan-out, ticks, health, shutdown ------------------------------------------


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    ws_state, gateway = app[WS], app[STATE]
    registry = gateway.registry
    fanout = ws_state.fanout
    if registry is not None:
        registry.add_listener(fanout, changes=fanout.has_readers)
    # Runs of the other processes sharing the store, as if they were ours.
    bus = gateway.store.bus if gateway.store is not None else None
    if bus is not None:
        bus.add_remote_listener(fanout.remote)

    def on_reload(result: Any) -> None:
        if not ws_state.closing:
            _close_retired(ws_state)
            ws_state.spawn(_broadcast_health(ws_state), "ws-health-after-reload")

    gateway.config_listeners.append(on_reload)
    options = gateway.options
    ws_state.spawn(_ticks(ws_state, options.tick_interval_seconds), "ws-ticks")
    ws_state.spawn(_health_loop(ws_state, options.health_interval_seconds), "ws-health")
    try:
        yield
    finally:
        gateway.config_listeners.remove(on_reload)
        if registry is not None:
            registry.remove_listener(fanout)
        if bus is not None:
            bus.remove_remote_listener(fanout.remote)
        await ws_state.cancel_tasks()
        fanout.close()
        ws_state.presence_fanout.close()


def _close_retired(ws_state: WsState) -> None:
    """Close the connections opened with a secret no longer in force (a rotated token, a
    password set), as OpenClaw's restart on an auth change closes every one: a leaked token
    that was rotated must not keep its sockets. Their clients connect again with the secret
    they have now. The connection whose call made the change holds the new one: it stays."""
    auth = ws_state.gateway.config.gateway.auth
    if auth.mode == "none":
        return  # any connect is accepted: no connection loses its right to be open
    stamp = ws_state.auth_stamp(auth)
    caller = CALLER.get()
    for conn in ws_state.authenticated:
        if conn.auth_stamp == stamp:
            continue
        if conn.conn_id == caller:
            conn.auth_stamp = stamp
            continue
        log.info("ws_auth_retired", conn_id=conn.conn_id, remote=conn.remote)
        conn.close(protocol.CLOSE_SERVICE_RESTART, REASON_AUTH_CHANGED)


async def _ticks(ws_state: WsState, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        frame = event_frame("tick", {"ts": now_ms()}, droppable=True)
        EventFanout.broadcast(frame, ws_state.authenticated)


async def _health_loop(ws_state: WsState, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await _broadcast_health(ws_state)


async def _broadcast_health(ws_state: WsState) -> None:
    try:
        health = await ws_state.health.get(ws_state.gateway, refresh=True)
    except StoreUnavailable:
        return  # the next interval tries again; the store logs when an outage starts and ends
    except Exception:
        # The next interval tries again; a failing store is visible in the log and /readyz.
        log.exception("ws_health_failed")
        return
    frame = event_frame("health", health, droppable=True, state_version=ws_state.state_version())
    EventFanout.broadcast(frame, ws_state.authenticated)


async def shutdown_connections(app: web.Application) -> None:
    """`shutdown`, then close 1012 `service restart`, for every connection (§2.7, §10).

    Idempotent: the lead's drain calls it first, `on_shutdown` again. Runs are not touched.
    """
    ws_state = app[WS]
    if not ws_state.closing:
        ws_state.closing = True
        frame = event_frame("shutdown", SHUTDOWN_PAYLOAD)
        for conn in ws_state.connections:
            if conn.authenticated:
                conn.send_event(frame)
            conn.close(protocol.CLOSE_SERVICE_RESTART, protocol.REASON_SERVICE_RESTART)
        if ws_state.connections:
            log.info("ws_shutdown", connections=len(ws_state.connections))
    waits = [conn.wait_closed() for conn in list(ws_state.connections)]
    if waits:
        try:
            async with asyncio.timeout(ws_state.settings.close_timeout_seconds + 1):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.warning("ws_shutdown_timeout", connections=len(ws_state.connections))
