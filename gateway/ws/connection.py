"""One WebSocket client: its outbound queue and writer task, its event `seq`, its close.

Producers (the dispatcher, the fan-out, ticks) call `send`/`send_event`, which never await:
frames go into a queue bounded in bytes (`policy.maxBufferedBytes`, ws-protocol.md §9.3) that
exactly one writer task empties onto the socket. When a frame does not fit, a droppable event
is skipped (the client sees a `seq` gap) and anything else closes the connection with 1008
`slow consumer`. Closing is a request too: the writer sends what is queued, then the close
frame, so a handshake error response arrives before its close.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import attrs
import structlog
from aiohttp import WSMsgType, web

from gateway.ws.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    READ,
    REASON_SLOW_CONSUMER,
    ROLE_OPERATOR,
    ClientInfo,
    EventFrame,
    close_reason,
    scope_allows,
)

log = structlog.get_logger()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@attrs.define(eq=False)
class Connection:
    ws: web.WebSocketResponse
    conn_id: str
    remote: str | None
    max_buffered_bytes: int
    close_timeout: float  # how long a close may wait for the client before the TCP is cut
    connected_at: int = attrs.field(factory=now_ms)
    last_activity_at: int = attrs.field(factory=now_ms)
    # Set by the handshake.
    client: ClientInfo | None = None
    protocol: int = 0
    role: str = ROLE_OPERATOR
    scopes: tuple[str, ...] = ()
    auth_method: str = ""
    authenticated_at: int | None = None
    dropped: int = 0  # droppable events skipped because the queue was full
    _queue: deque[bytes] = attrs.field(factory=deque)
    _buffered: int = 0
    _seq: int = 0
    _wakeup: asyncio.Event = attrs.field(factory=asyncio.Event)
    _writer: asyncio.Task[None] | None = None
    _closer: asyncio.Task[None] | None = None
    _close: tuple[int, str] | None = None  # requested close code and reason
    _tasks: set[asyncio.Task[Any]] = attrs.field(factory=set)
    # config.patch's control-plane limit: call times per method (monotonic seconds).
    calls: dict[str, deque[float]] = attrs.field(factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.authenticated_at is not None

    @property
    def can_read(self) -> bool:
        return scope_allows(self.scopes, READ)

    @property
    def closing(self) -> bool:
        return self._close is not None

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    # -- producers: never await ------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer {self.conn_id}")

    def send(self, frame: bytes) -> None:
        """A response or another frame that must arrive (not droppable)."""
        self._enqueue(frame, droppable=False)

    def send_event(self, frame: EventFrame) -> None:
        """An event frame with this connection's next `seq` (§9.1); a dropped one leaves a gap."""
        self._seq += 1
        if self._close is None:
            self._enqueue(frame.render(self._seq), frame.droppable)

    def _enqueue(self, data: bytes, droppable: bool) -> None:
        if self._close is not None:
            return
        size = len(data)
        # An empty queue takes any frame: a single large answer (up to maxPayload) is not a
        # sign of a slow client.
        if self._buffered and self._buffered + size > self.max_buffered_bytes:
            if droppable:
                self.dropped += 1
                return
            self._slow_consumer()
            return
        self._queue.append(data)
        self._buffered += size
        self._wakeup.set()

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close after the frames already queued; later frames are discarded."""
        if self._close is None:
            self._close = (code, close_reason(reason))
            self._wakeup.set()

    def _slow_consumer(self) -> None:
        log.warning(
            "ws_slow_consumer",
            conn_id=self.conn_id,
            buffered_bytes=self._buffered,
            limit=self.max_buffered_bytes,
        )
        self._queue.clear()
        self._buffered = 0
        self._close = (CLOSE_POLICY_VIOLATION, REASON_SLOW_CONSUMER)
        # The writer is probably parked in a drain that never ends: stop it and close from
        # a task of our own (the close frame is all that is written after it).
        self._closer = asyncio.create_task(self._close_slow(), name=f"ws-close {self.conn_id}")

    # -- the writer --------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        ws, queue = self.ws, self._queue
        try:
            while True:
                if queue:
                    data = queue.popleft()
                    self._buffered -= len(data)
                    await ws.send_frame(data, WSMsgType.TEXT)
                elif self._close is not None:
                    break
                else:
                    self._wakeup.clear()
                    await self._wakeup.wait()
        except ConnectionResetError:
            # The peer is gone; nothing more can be written.
            self._close = self._close or (CLOSE_NORMAL, "")
            queue.clear()
            self._buffered = 0
            return
        code, reason = self._close
        await self._close_socket(code, reason)

    async def _close_slow(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            await asyncio.wait((writer,))
        await self._close_socket(CLOSE_POLICY_VIOLATION, REASON_SLOW_CONSUMER)

    async def _close_socket(self, code: int, reason: str) -> None:
        if self.ws.closed:
            return
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.ws.close(code=code, message=reason.encode())
        except TimeoutError:
            pass  # aiohttp has cut the transport; the client sees 1006

    # -- request tasks and teardown ------------------------------------------------------------

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_reap)
        return task

    def cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def wait_tasks(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Stop the writer (after what is queued) and make sure the socket is closed."""
        self.close(code, reason)
        pending = {t for t in (self._writer, self._closer) if t is not None and not t.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.close_timeout + 1)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        _reap(self._writer)
        _reap(self._closer)
        if not self.ws.closed:
            code, reason = self._close or (code, reason)
            await self._close_socket(code, reason)

    async def wait_closed(self) -> None:
        """Until the writer (and a slow-consumer close) has finished."""
        pending = {t for t in (self._writer, self._closer) if t is not None and not t.done()}
        if pending:
            await asyncio.wait(pending)


def _reap(task: asyncio.Task[Any] | None) -> None:
    """Retrieve a finished task's failure so it is logged once, here, not at GC."""
    if task is None or not task.done() or task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("ws_task_failed", task=task.get_name(), exc_info=exc)
