"""Methods and the dispatcher (ws-protocol.md §6, §7).

Each methods module has a `register(methods)` that declares its handlers with the `method`
decorator: name, params parser and required scope. The dispatcher checks, in this order,
frame shape (done by the reader) → method known → scope → params → (rate limit) → handler,
and turns every exception into an error response in one place, `error_for`.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import attrs
import structlog

from agents.errors import (
    AgentError,
    InvalidSessionKey,
    SessionArchived,
    StoreError,
    TurnsBacklogged,
    UnknownAgent,
)
from agents.registry import SessionRegistry
from gateway.config.model import Config
from gateway.state import GatewayState
from gateway.ws import protocol
from gateway.ws.connection import Connection
from gateway.ws.health import registry_of
from gateway.ws.protocol import (
    INVALID_REQUEST,
    UNAVAILABLE,
    ParamReader,
    ParamsError,
    RequestFrame,
    WsError,
)
from gateway.ws.state import WsState

log = structlog.get_logger()

P = TypeVar("P")
T = TypeVar("T")
ParamsParser = Callable[[ParamReader], P]
Handler = Callable[["CallContext", P], Awaitable[Any]]

# The log line's code for a call its connection's end cancelled (the client left, or the
# server is stopping): no answer was sent, as HTTP's 499. Never on the wire.
CALL_CANCELLED = "CANCELLED"

# The id of the connection whose call runs in this task (and in the tasks it starts): a config
# change it makes knows who made it (handler.py's reload listener). The id, not the
# connection: a session's worker the call started outlives it, and would keep it alive.
CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("ws_caller", default=None)


@attrs.frozen
class AnswerThenPause:
    """A handler's answer, after which its connection's writer waits `seconds` before the
    frames queued behind it (`Connection.pause`)."""

    payload: Any
    seconds: float


@attrs.frozen
class RateLimit:
    calls: int
    window_seconds: int

    def describe(self) -> str:
        return f"{self.calls} per {self.window_seconds}s"


@attrs.frozen
class MethodSpec(Generic[P]):
    name: str
    handler: Handler[P]
    params: ParamsParser[P]
    scope: str | None  # None: any authenticated connection
    rate_limit: RateLimit | None = None
    # Answered, its `ws_call` line is at debug: a read of the log, polled (Connection.log_reader).
    quiet: bool = False
    # The scope some params need instead of `scope` (OpenClaw's per-call scopes), from the
    # params as sent, before they are parsed: None keeps `scope`.
    scope_of: Callable[[Any], str | None] | None = None


def no_params(reader: ParamReader) -> None:
    """For methods whose params are all ignored (an object is still required)."""
    return None


class MethodRegistry:
    def __init__(self) -> None:
        self._methods: dict[str, MethodSpec[Any]] = {}

    def method(
        self,
        name: str,
        *,
        params: ParamsParser[P],
        scope: str | None,
        rate_limit: RateLimit | None = None,
        quiet: bool = False,
        scope_of: Callable[[Any], str | None] | None = None,
    ) -> Callable[[Handler[P]], Handler[P]]:
        def register(handler: Handler[P]) -> Handler[P]:
            if name in self._methods:
                raise ValueError(f"method {name!r} registered twice")
            self._methods[name] = MethodSpec(
                name, handler, params, scope, rate_limit, quiet, scope_of
            )
            return handler

        return register

    def get(self, name: str) -> MethodSpec[Any] | None:
        return self._methods.get(name)

    @property
    def names(self) -> list[str]:
        """In registration order: hello-ok's `features.methods`."""
        return list(self._methods)


@attrs.frozen
class CallContext:
    """What a handler may use: the caller's connection, the WS state, the gateway."""

    conn: Connection
    ws: WsState
    request_id: str
    method: str
    # What the call resolved (`session_key`), for its log line.
    route: dict[str, str] = attrs.field(factory=dict)
    unpaired: frozenset[str] = frozenset()  # `RequestFrame.unpaired`

    @property
    def gateway(self) -> GatewayState:
        return self.ws.gateway

    @property
    def config(self) -> Config:
        return self.ws.gateway.config  # read per call: a reload swaps it

    @property
    def registry(self) -> SessionRegistry:
        return registry_of(self.ws.gateway)

    async def to_the_end(
        self,
        change: Coroutine[Any, Any, T],
        started: Callable[[asyncio.Task[T]], None] | None = None,
    ) -> T:
        """`change` finished even if this call is cancelled (its socket closed): a change the
        store committed while the session in memory never heard of it, as a reset cut off
        after its write, is worse than one made for a client that left. `started` is told
        of the task that does it (what must wait for it: `claims.Starting.until`)."""
        task: asyncio.Task[T] = self.ws.spawn(change, f"ws-{self.method}")
        if started is not None:
            started(task)
        return await asyncio.shield(task)

    def respond(self, payload: Any) -> None:
        """An extra `ok` response before the handler's own (`agent`'s acceptance, §8)."""
        self.conn.send(protocol.response(self.request_id, payload))


async def dispatch(
    methods: MethodRegistry, ws: WsState, conn: Connection, frame: RequestFrame
) -> None:
    """Answer one request frame (the shape is already checked)."""
    ctx = CallContext(conn, ws, frame.id, frame.method, unpaired=frame.unpaired)
    started = time.monotonic()
    spec = methods.get(frame.method)
    if spec is None or not spec.quiet:
        log_connected(conn)  # before the call's own lines
    CALLER.set(conn.conn_id)  # this call's task's own context
    # A call may wait for minutes (`agent.wait`, `agent`): it keeps the params it takes, not
    # the frame, whose params it ignores may be megabytes (up to maxPayload for each call).
    call = _call(methods, ctx, frame.params)
    del frame
    try:
        payload = await call
    except asyncio.CancelledError:
        _log_call(ctx, started, CALL_CANCELLED)
        raise
    except Exception as exc:
        error = error_for(exc, ctx.method, conn.conn_id)
        conn.send(protocol.error_response(ctx.request_id, error))
        _log_call(ctx, started, error.code)
    else:
        pause = 0.0
        if isinstance(payload, AnswerThenPause):
            payload, pause = payload.payload, payload.seconds
        answer = protocol.response(ctx.request_id, payload)
        limit = ws.settings.max_payload
        if len(answer) <= limit:
            conn.send(answer)
            if pause:
                conn.pause(pause)
            _log_call(ctx, started, None, quiet=spec is not None and spec.quiet)
            return
        # hello-ok told the client the largest frame it reads; OpenClaw's clients close on a
        # larger one. An error it can show beats a socket it loses.
        log.warning(
            "ws_answer_too_large",
            conn_id=conn.conn_id,
            method=ctx.method,
            bytes=len(answer),
            limit=limit,
        )
        error = WsError(
            UNAVAILABLE, f"{ctx.method} answer too large: over maxPayload ({limit} bytes)"
        )
        conn.send(protocol.error_response(ctx.request_id, error))
        _log_call(ctx, started, error.code)


async def _call(methods: MethodRegistry, ctx: CallContext, raw: Any) -> Any:
    """`raw`: the frame's params, as sent."""
    method = ctx.method
    if method == "connect":
        raise WsError(INVALID_REQUEST, protocol.MSG_CONNECT_AGAIN)
    spec = methods.get(method)
    if spec is None:
        raise WsError(INVALID_REQUEST, f"unknown method: {method}")
    conn = ctx.conn
    scope = spec.scope
    if spec.scope_of is not None:
        scope = spec.scope_of(raw) or scope
    if scope is not None and not protocol.scope_allows(conn.scopes, scope):
        raise protocol.missing_scope(scope, conn.protocol)
    try:
        params = spec.params(ParamReader(raw))
    except ParamsError as exc:
        raise WsError(INVALID_REQUEST, f"invalid {method} params: {exc.detail}") from None
    del raw
    if spec.rate_limit is not None:
        _check_rate(conn, spec.name, spec.rate_limit)
    return await spec.handler(ctx, params)


def _check_rate(conn: Connection, method: str, limit: RateLimit) -> None:
    now = time.monotonic()
    if conn.calls is None:
        conn.calls = {}
    calls = conn.calls.setdefault(method, deque())
    while calls and calls[0] <= now - limit.window_seconds:
        calls.popleft()
    if len(calls) >= limit.calls:
        retry_ms = max(1, int((calls[0] + limit.window_seconds - now) * 1000))
        raise WsError(
            UNAVAILABLE,
            f"rate limit exceeded for {method}; retry after {-(-retry_ms // 1000)}s",
            details={"method": method, "limit": limit.describe()},
            retryable=True,
            retry_after_ms=retry_ms,
        )
    calls.append(now)


def error_for(exc: Exception, method: str, conn_id: str | None = None) -> WsError:
    """The one mapping from a failure to the error a client sees (§6)."""
    if isinstance(exc, WsError):
        return exc
    if isinstance(exc, ParamsError):
        return WsError(INVALID_REQUEST, f"invalid {method} params: {exc.detail}")
    if isinstance(exc, UnknownAgent | InvalidSessionKey | SessionArchived):
        return WsError(INVALID_REQUEST, exc.message)
    if isinstance(exc, StoreError):
        log.error("ws_store_failed", conn_id=conn_id, method=method, error=str(exc))
        return WsError(UNAVAILABLE, protocol.MSG_INTERNAL)
    if isinstance(exc, TurnsBacklogged):
        details = {"limit": exc.limit, "limitChars": exc.limit_chars}
        return WsError(UNAVAILABLE, exc.message, details=details, retryable=True)
    if isinstance(exc, AgentError):
        return WsError(UNAVAILABLE, exc.message)
    log.error("ws_method_failed", conn_id=conn_id, method=method, exc_info=exc)
    return WsError(UNAVAILABLE, protocol.MSG_INTERNAL)


def refuse(conn: Connection, frame_id: str, method: str | None, error: WsError) -> None:
    """An error answer to a frame the reader does not dispatch (one that is no request, one
    beyond the connection's slots), with the `ws_call` line every answer has (README, Logs):
    a client that floods them is seen as one that floods calls."""
    conn.send(protocol.error_response(frame_id, error))
    conn.log_reader = False
    log_connected(conn)
    _log_line(conn.conn_id, frame_id, method, error.code, 0.0, None)


def _log_call(ctx: CallContext, started: float, code: str | None, *, quiet: bool = False) -> None:
    conn = ctx.conn
    conn.log_reader = quiet and conn.log_reader is not False
    if not quiet:
        log_connected(conn)
    duration = (time.monotonic() - started) * 1000
    _log_line(
        conn.conn_id,
        ctx.request_id,
        ctx.method,
        code,
        duration,
        ctx.route.get("session_key"),
        quiet=quiet,
    )


def log_connected(conn: Connection, *, reader: bool = False) -> None:
    """The connection's `ws_connected` line, once. It waits until the connection shows what
    it is: one that only reads the log (`openclaw logs --follow` opens one per poll: connect,
    `logs.tail`, close) gets it at debug, at its end, with its other lines (journald would
    get an info line a poll); any other at info, at its first call that is no read of the
    log, at its end, or a second after its hello-ok when it made no call (one that only
    listens to events: handler.LISTENER_LOGGED_AFTER_S)."""
    client = conn.client
    if conn.connect_logged or client is None or not conn.authenticated:
        return
    conn.connect_logged = True
    (log.debug if reader else log.info)(
        "ws_connected",
        conn_id=conn.conn_id,
        remote=conn.remote,
        client_id=client.id,
        client_mode=client.mode,
        client_version=client.version,
        protocol=conn.protocol,
        scopes=list(conn.scopes),
    )


def _log_line(
    conn_id: str,
    request_id: str,
    method: str | None,
    code: str | None,
    duration_ms: float,
    session_key: str | None,
    *,
    quiet: bool = False,
) -> None:
    """The call's one canonical line: never params, message text or credentials."""
    (log.debug if quiet else log.info)(
        "ws_call",
        conn_id=conn_id,
        request_id=request_id,
        method=method,
        ok=code is None,
        code=code,
        duration_ms=round(duration_ms, 1),
        agent=session_key.split(":", 2)[1] if session_key else None,
        session_key=session_key,
    )
