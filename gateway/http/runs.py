"""A run seen from an HTTP request: its outcome awaited while the client is watched, or its
events relayed as a stream. Chat completions and `/v1/responses` differ only in the bytes
they write, which a `RunRenderer` makes.

Client disconnects (deviation 6). aiohttp 3.14 does not cancel a handler whose client went
away (`handler_cancellation` is off by default) and has no public callback for it: the
protocol's `connection_lost` only drops its transport (`request.transport` becomes None)
and fails a pending body read. A request waiting on its run therefore polls the transport
(`ClientWatch`); a streaming request also learns it from a failed write. Either way the run
is aborted, nothing more is written and the handler returns normally (aiohttp then swallows
the ConnectionError of finishing the response), so there is no error log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog
from aiohttp import web

from agents.errors import AgentError
from agents.events import RunEvent, Stream, ToolPhase
from agents.runs import AgentRun, RunOutcome, RunStatus, RunSubscription
from gateway.appkeys import CLIENT_LEFT, MODEL_USED
from gateway.http.common import error_answer, session_header
from gateway.http.openai_wire import (
    KEEPALIVE,
    SHUTDOWN_ABORT,
    RequestError,
    error_reply,
    internal_error,
    shutting_down,
)
from gateway.http.sse import EventStream

log = structlog.get_logger()

# How often a request waiting on its run checks that its client is still connected. The
# upstream must see the cancel within a second (deviation 6); a tenth of that leaves the
# abort most of the second, and 10 timer callbacks/s per open request cost next to nothing.
DISCONNECT_POLL_SECONDS = 0.1
CLIENT_GONE = "client disconnected"  # AgentRun.abort_reason when the client left
HANDLER_ENDED = "request ended"  # the handler ended some other way (cancelled, a bug)
# nginx's "client closed request": what the access log shows; nobody receives it.
CLIENT_CLOSED_REQUEST = 499


class DeltaEncoder(Protocol):
    """The pieces both stream formats show, as they come."""

    def content(self, delta: str) -> bytes: ...

    def reasoning(self, delta: str) -> bytes: ...

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes: ...

    def tool_call_arguments(self, index: int, delta: str) -> bytes: ...


# Once per delta: on Python 3.11 reading a member off the enum class (`Stream.ASSISTANT`, as a
# `match` case does) costs 0.2-0.3 µs, a module global a tenth of it.
_ASSISTANT, _THINKING, _TOOL = Stream.ASSISTANT, Stream.THINKING, Stream.TOOL


def encode_delta(encoder: DeltaEncoder, event: RunEvent) -> bytes | None:
    """A non-terminal event's bytes in `encoder`'s format; None when it shows nothing."""
    data = event.data
    stream = event.stream
    if stream == _ASSISTANT:
        return encoder.content(data["delta"])
    if stream == _THINKING:
        return encoder.reasoning(data["delta"])
    if stream == _TOOL:
        match data.get("phase"):
            case ToolPhase.START:
                return encoder.tool_call_start(data["index"], data["toolCallId"], data["name"])
            case ToolPhase.UPDATE:
                return encoder.tool_call_arguments(data["index"], data["delta"])
    return None


class RunRenderer(Protocol):
    """The bytes of one streamed answer format."""

    def event(self, event: RunEvent) -> bytes | None:
        """A non-terminal event's bytes; None when it shows nothing."""

    async def end(self, run: AgentRun, outcome: RunOutcome) -> bytes:
        """The last bytes, after the terminal event of a run that completed (or was aborted
        by someone else while this client listens: what was produced is the answer)."""

    def failure(self, error: RequestError) -> bytes:
        """An error in the stream, after which it ends."""


async def outcome_of(request: web.Request, run: AgentRun) -> RunOutcome | web.StreamResponse:
    """The run's outcome, awaited while watching the client; or the answer that replaces it:
    499 for a client gone, the error shape for a failure or a shutdown."""
    watch = ClientWatch(request, lambda: run.abort(CLIENT_GONE))
    try:
        outcome = await run.wait()
    finally:
        watch.close()
        if not run.ended:
            run.abort(HANDLER_ENDED)
    if watch.gone:
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    if outcome.provider is not None and outcome.model is not None:
        request[MODEL_USED] = f"{outcome.provider}/{outcome.model}"
    failure = _failure(run, outcome)
    if failure is not None:
        return error_answer(request, failure)
    return outcome


async def stream_run(
    request: web.Request,
    run: AgentRun,
    subscription: RunSubscription,
    renderer: RunRenderer,
    first: bytes,
    keepalive_s: float,
) -> web.StreamResponse:
    """Headers and `first` at once, then the run's events as they come (http-openai.md §7)."""
    stream = EventStream(session_header(request))
    watch = ClientWatch(request, lambda: run.abort(CLIENT_GONE))
    try:
        await stream.open(request, first)
        await _relay(stream, run, subscription, renderer, keepalive_s, watch)
    except ConnectionError:
        run.abort(CLIENT_GONE)  # a write failed: the client is gone, stop writing
        request[CLIENT_LEFT] = True
    except Exception:
        log.exception("stream_crashed", path=request.path)
        if not stream.opened:
            return error_answer(request, internal_error())
        run.abort(HANDLER_ENDED)
        with contextlib.suppress(ConnectionError):
            await stream.close(renderer.failure(internal_error()))
    finally:
        if watch.gone:
            request[CLIENT_LEFT] = True
        watch.close()
        subscription.close()
        if not run.ended:
            run.abort(HANDLER_ENDED)
    return stream.response


async def _relay(
    stream: EventStream,
    run: AgentRun,
    subscription: RunSubscription,
    renderer: RunRenderer,
    keepalive_s: float,
    watch: ClientWatch,
) -> None:
    """Relay the run's events until its terminal one. Events already queued go out in one
    write; `: keepalive` after `keepalive_s` without a write, including while the run waits
    behind another turn of its session.

    While this task waits, the run hands deltas to `DirectWrites` instead of waking it per
    event; what is taken that way is written once per loop iteration, so a read of the
    upstream that held several chunks still makes one write."""
    keepalive = KeepaliveTimer(keepalive_s, subscription.wake)
    direct = DirectWrites(stream, renderer, keepalive, watch, subscription.wake)
    next_event = subscription.__anext__
    render = renderer.event
    try:
        while True:
            if not subscription.pending:
                await subscription.wait(direct.take)  # an event, or a wake-up
                if direct.broken:
                    raise ConnectionError("client gone while writing")
                if keepalive.due and not subscription.pending:
                    taken = direct.taken()  # deltas about to go out: no keepalive needed
                    await stream.send(b"".join(taken) if taken else KEEPALIVE)
                    keepalive.written()
                    continue
            event = await next_event()
            out = direct.taken()  # what the run handed over before this event goes first
            while True:
                if event.is_terminal:
                    if not watch.gone:
                        out.append(await _stream_end(run, renderer))
                        await stream.close(b"".join(out))
                    return
                piece = render(event)
                if piece:
                    out.append(piece)
                if not subscription.pending:
                    break
                event = await next_event()
            if watch.gone:
                return  # the run is being aborted; nothing more goes out
            if out:
                await stream.send(b"".join(out))
                keepalive.written()
    finally:
        keepalive.cancel()
        direct.cancel()


class DirectWrites:
    """Deltas that the run hands over synchronously (`RunSubscription.wait(direct)`),
    rendered at once and written together at the end of the loop iteration: one write per
    upstream read and no task wake-up per event.

    It declines (the event is queued for the relay's loop instead) the terminal event, any
    event once the client is gone, and a first event while the client's socket still holds
    unsent bytes: waiting for the client to read is the loop's business (`send` awaits it).
    """

    def __init__(
        self,
        stream: EventStream,
        renderer: RunRenderer,
        keepalive: KeepaliveTimer,
        watch: ClientWatch,
        wake: Callable[[], object],
    ) -> None:
        self._stream = stream
        self._render = renderer.event
        self._keepalive = keepalive
        self._watch = watch
        self._wake = wake
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        # Once, not per delta: asyncio.get_running_loop() makes a getpid() system call each
        # time on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self.broken = False  # a write failed: the client is gone

    def take(self, event: RunEvent) -> bool:
        if event.is_terminal or self._watch.gone or self.broken:
            return False
        pending = self._pending
        if not pending and not self._stream.can_send_now():
            return False
        try:
            piece = self._render(event)
        except Exception:
            # A bug of ours: queued, the event meets it again in the relay's loop, which
            # ends the stream as it would have without this shortcut.
            return False
        if piece:
            pending.append(piece)
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._flush)
        return True

    def taken(self) -> list[bytes]:
        """The bytes taken and not written yet, for the relay to write before its own."""
        out = self._pending
        self._pending = []
        return out

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return  # the relay wrote them with its own
        data = b"".join(self.taken())
        try:
            self._stream.send_now(data)
        except Exception:
            self.broken = True
            self._wake()
            return
        self._keepalive.written()

    def cancel(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None


async def _stream_end(run: AgentRun, renderer: RunRenderer) -> bytes:
    outcome = run.outcome
    assert outcome is not None  # set before the terminal event is emitted
    failure = _failure(run, outcome)
    if failure is not None:
        return renderer.failure(failure)
    return await renderer.end(run, outcome)


def _failure(run: AgentRun, outcome: RunOutcome) -> RequestError | None:
    """What a failed run, or one aborted by the shutdown, answers instead of its text."""
    if outcome.status == RunStatus.FAILED:
        return error_reply(outcome.error or AgentError())
    if outcome.status == RunStatus.ABORTED and run.abort_reason == SHUTDOWN_ABORT:
        return shutting_down()
    return None


class KeepaliveTimer:
    """`due` once `seconds` have passed since the last `written()`; then calls `wake`.

    One timer per quiet period rather than a timeout around every event: a write only
    records its time, and the timer, when it fires early, re-arms for the real deadline.
    """

    def __init__(self, seconds: float, wake: Callable[[], object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._wake = wake
        self.due = False
        self._last = self._loop.time()
        self._armed_for = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def written(self) -> None:
        self._last = self._loop.time()
        self.due = False
        if self._timer is None:
            self._arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._armed_for = self._last + self._seconds
        self._timer = self._loop.call_at(self._armed_for, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._last + self._seconds > self._armed_for:
            self._arm()  # written since it was armed: not quiet for long enough yet
            return
        self.due = True
        self._wake()


class ClientWatch:
    """Calls `on_gone` once when the request's client disconnects (see the module doc)."""

    def __init__(self, request: web.Request, on_gone: Callable[[], object]) -> None:
        self._request = request
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self.gone = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            DISCONNECT_POLL_SECONDS, self._check
        )

    def _check(self) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self._timer = None
            self.gone = True
            self._on_gone()
        else:
            self._timer = self._loop.call_later(DISCONNECT_POLL_SECONDS, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
