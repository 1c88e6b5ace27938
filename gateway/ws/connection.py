"""One WebSocket client: its outbound queue and writer task, its event `seq`, its close.

Producers (the dispatcher, the fan-out, ticks) call `send`/`send_event`, which never await:
frames go into a queue bounded in bytes (`policy.maxBufferedBytes`, ws-protocol.md §9.3) that
exactly one writer task empties onto the socket. When a frame does not fit, a droppable event
is skipped (the client sees a `seq` gap); anything else first drops queued droppable events
(`_make_room`), and closes the connection with 1008 `slow consumer` only if it still does not
fit. A state snapshot (`presence`) that is still queued when a newer one comes is
dropped the same way, so a client that reads slowly holds at most one of them; a piece of a
text sent in pieces (a tool call's arguments) joins its text's unsent piece. Closing is a
request too: the writer sends what is queued, then the close frame, so a handshake error
response arrives before its close. A client that takes in no byte of what waits for it for
`send_deadline` seconds is closed as a slow consumer too, however little waits (`_watch`).

The writer exists only while there is something to send: the first frame queued (or a close)
starts it, and it ends once the queue is empty, dropping the queue with it. An idle connection,
which most are (a client waiting for events), then holds no task, coroutine, queue or wake-up
event: about 3 KiB of the 20 an idle socket may cost (README, Performance).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import attrs
import structlog
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

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
from gateway.ws.rfc6455 import text_frame_header

log = structlog.get_logger()

# Frames queued together go out in one write of up to about this many bytes: a run's events
# reach every reader in bursts, and aiohttp's `send_frame` is a system call per frame
# (16 readers of `chat.send` turns: 3.07 → 2.24 ms of CPU a turn). A frame this large at the
# head of the queue goes through `send_frame` alone, which writes it without a copy.
WRITE_BATCH_BYTES = 64 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Phase(StrEnum):
    """A connection's life (ws-protocol.md §2): the handshake until hello-ok, then open until
    a close is requested; closing lasts until the writer has sent what was queued."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSING = "closing"


@attrs.define(eq=False)
class _Replaceable:
    """A queued event that a newer one of the same name may drop (`EventFrame.replaces`)."""

    frame: EventFrame | None  # None once dropped or taken by the writer
    seq: int
    size: int


@attrs.define(eq=False)
class _Merging:
    """A queued piece of a text (`EventFrame.merges`) and the later pieces joined to it."""

    frame: EventFrame | None  # None once taken by the writer
    seq: int
    size: int
    pieces: list[bytes] = attrs.field(factory=list)
    grown: int = 0  # bytes of `pieces`


@attrs.frozen
class _Pause:
    """The writer waits this long before the frames queued behind it (`Connection.pause`)."""

    seconds: float


# What the queue holds: a frame that is all bytes, or an event and its seq, rendered by the
# writer only when it sends it: a broadcast queued to n connections holds one copy of its
# bytes, not n.
_Queued = bytes | tuple[EventFrame, int] | _Replaceable | _Merging | _Pause


@attrs.define(eq=False)
class AnswerBudget:
    """Bytes queued for every connection together (`WsSettings`'s `max_buffered_total_bytes`).

    Each connection may queue its `maxBufferedBytes`, and a few hundred clients that stop
    reading would hold gigabytes. Counted: each connection's own bytes (its answers, a
    `chat.history` answer is up to 6 MiB; the tool pieces joined to an event it has queued),
    and the event frames queued, each once however many connections queue it (a broadcast is
    one copy of its bytes; clients that stopped reading at different times hold different
    ones). Over the bound, the droppable events queued by the connections holding the most
    are dropped (`_over`), and only if that is not enough is the one holding the most closed
    as a slow consumer; a droppable event that would take it over is dropped instead for a
    connection that is behind (has frames queued), as for a full queue."""

    limit: int
    held: int = 0
    holders: set[Connection] = attrs.field(factory=set)  # those with something queued

    def add(self, conn: Connection, size: int) -> None:
        """`size` bytes of `conn`'s own."""
        self.held += size
        self.holders.add(conn)
        if self.held > self.limit:
            self._over()

    def remove(self, size: int) -> None:
        self.held -= size

    def admits(self, frame: EventFrame) -> bool:
        """Whether `frame` can be queued without going over (one queued already costs
        nothing more)."""
        return frame.holders.count > 0 or self.held + frame.weight <= self.limit

    def hold(self, conn: Connection, frame: EventFrame) -> None:
        """`conn` has queued `frame`."""
        self.holders.add(conn)
        holders = frame.holders
        holders.count += 1
        if holders.count == 1:
            self.held += frame.weight
            if self.held > self.limit:
                self._over(keep=frame)

    def release(self, frame: EventFrame) -> None:
        """A queue no longer holds `frame` (sent, replaced, or dropped)."""
        holders = frame.holders
        holders.count -= 1
        if not holders.count:
            self.held -= frame.weight

    def leave(self, conn: Connection) -> None:
        self.holders.discard(conn)

    def _over(self, keep: EventFrame | None = None) -> None:
        """Queued deltas give way first, as for a full queue: those of the connections holding
        the most, until within the bound (an event queued by several connections frees its
        bytes only once none holds it). Only if that is not enough is the connection holding
        the most closed. `keep`, a droppable event just queued for a client that keeps up
        (`hold`), is not dropped for the others' sake."""
        for holder in sorted(self.holders, key=lambda holder: holder.held_bytes, reverse=True):
            holder.give_way(self, keep)
            if self.held <= self.limit:
                return
        largest = max(self.holders, key=lambda holder: holder.held_bytes)
        largest._slow_consumer(total=self)


@attrs.define(eq=False)
class Connection:
    ws: web.WebSocketResponse
    conn_id: str
    remote: str | None
    max_buffered_bytes: int
    close_timeout: float  # how long a close may wait for the client before the TCP is cut
    # The byte stream under the socket (what `prepare` returned): where frames queued together
    # are written in one go. None: each frame goes through `ws.send_frame`.
    stream: AbstractStreamWriter | None = None
    from_browser: bool = False  # the upgrade carried an Origin: never exempt from the limiter
    answers: AnswerBudget | None = None  # the process's bound on queued bytes
    # A writer that waits this long on a client that takes in no byte closes the connection
    # (WsSettings.send_deadline_seconds); None: no deadline.
    send_deadline: float | None = None
    connected_at: int = attrs.field(factory=now_ms)
    last_activity_at: int = attrs.field(factory=now_ms)
    phase: Phase = Phase.HANDSHAKE
    # Set by the handshake.
    client: ClientInfo | None = None
    protocol: int = 0
    role: str = ROLE_OPERATOR
    scopes: tuple[str, ...] = ()
    auth_method: str = ""
    # The secret it was opened with (WsState.auth_stamp): one no longer in force closes it.
    auth_stamp: tuple[str, bytes | None] | None = None
    authenticated_at: int | None = None
    dropped: int = 0  # droppable events skipped (queue full, or replaced by a newer one)
    # `stateVersion.presence` of the newest presence list sent (hello-ok or event).
    presence_version: int = 0
    # The queue, the last replaceable event queued per name, and the request tasks exist only
    # while they hold something (None otherwise): idle sockets are counted in bytes.
    _queue: deque[_Queued] | None = None
    _replaceable: dict[str, _Replaceable] | None = None
    _merging: dict[str, _Merging] | None = None  # the last piece queued per text
    _buffered: int = 0
    # This connection's own bytes (answers and tool pieces joined to a queued event, of
    # `_buffered`; and `_sending`), counted in `answers` too.
    _own_bytes: int = 0
    # Bytes taken off the queue and written, until the socket's buffer has taken them in (a
    # client that reads nothing leaves them there).
    _sending: int = 0
    # A droppable event may be queued (set when one is; cleared by a pass over the queue
    # that leaves none): a queue without one is not gone through at each over the process's
    # bound (`give_way`).
    _may_give_way: bool = False
    _seq: int = 0
    _writing: bool = False  # start() was called: queued frames are written
    # The writer while frames are queued or a close is due; after the close, or a reset, the
    # finished task stays here so that no other one starts.
    _writer: asyncio.Task[None] | None = None
    _closer: asyncio.Task[None] | None = None
    # The writer's watchdog (`_watch`) while a writer runs, and the writes it has finished.
    _watchdog: asyncio.TimerHandle | None = None
    _writes: int = 0
    _close: tuple[int, str] | None = None  # requested close code and reason
    _tasks: set[asyncio.Task[Any]] | None = None
    # config.patch's control-plane limit: call times per method (monotonic seconds); None
    # until the first limited call.
    calls: dict[str, deque[float]] | None = None
    # `chat.subscribe`: the session keys whose `chat`/`agent` events this connection gets;
    # None (no subscription) means every session's (deviation 23). None rather than an empty
    # set: most connections never subscribe, and idle sockets are counted in bytes.
    follows: set[str] | None = None
    # None until its first call; then True while every call was a `quiet` method answered
    # (`logs.tail`): its end is logged at debug (`ws_disconnected`, its `http_request`), so a
    # client that polls the log with a connection per poll (`openclaw logs --follow`) does not
    # fill the log it reads, nor journald.
    log_reader: bool | None = None
    connect_logged: bool = False  # its `ws_connected` line (dispatch.log_connected)
    # The `chat.send`/`agent` turns it submitted that may still wait to run: (run id,
    # characters of its input); None while it has none (`submit_turn`).
    turns: list[tuple[str, int]] | None = None

    @property
    def authenticated(self) -> bool:
        return self.authenticated_at is not None

    @property
    def can_read(self) -> bool:
        return scope_allows(self.scopes, READ)

    @property
    def closing(self) -> bool:
        return self.phase is Phase.CLOSING

    @property
    def peer_gone(self) -> bool:
        """The TCP connection under the socket is closed or closing."""
        if self.stream is None:
            return self.ws.closed
        transport = self.stream.transport
        return transport is None or transport.is_closing()

    def opened(self, at: int) -> None:
        """The handshake ended with hello-ok at `at` (epoch ms)."""
        self.authenticated_at = at
        self.phase = Phase.OPEN

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    @property
    def own_bytes(self) -> int:
        return self._own_bytes

    @property
    def held_bytes(self) -> int:
        """Queued or being written: what this connection holds of the process's memory."""
        return self._buffered + self._sending

    # -- producers: never await ------------------------------------------------------------

    def start(self) -> None:
        """From now on queued frames are written (those queued before it too)."""
        self._writing = True
        if self._queue or self._close is not None:
            self._write_soon()

    def _write_soon(self) -> None:
        """Start the writer unless one runs (or has closed the socket): one at a time, so
        frames go out in the order they were queued."""
        if self._writer is None and self._writing:
            self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer {self.conn_id}")
            deadline = self.send_deadline
            if self._watchdog is None and deadline is not None and self.stream is not None:
                loop = asyncio.get_running_loop()
                self._watchdog = loop.call_later(
                    deadline / 4, self._watch, self._writes, -1, loop.time()
                )

    def _watch(self, writes: int, pending: int, since: float) -> None:
        """Every quarter of the send deadline while bytes wait for the client (queued, or in
        the socket's buffer): a connection that has finished no write since `since`, on a
        socket whose buffer (`pending` bytes then) has not shrunk, waits on a client that
        takes in nothing. Within the bytes it may queue such a client would keep its socket,
        and what waits for it, for ever; past the deadline it is closed as a slow consumer.
        Counting writes costs the writer nothing per frame; the check runs once per quarter
        deadline per connection that has bytes waiting."""
        self._watchdog = None
        stream, deadline = self.stream, self.send_deadline
        transport = stream.transport if stream is not None else None
        if transport is None or deadline is None or transport.is_closing():
            return
        if self.phase is Phase.CLOSING and self._queue is None:
            return  # closing the socket, which has a timeout of its own
        buffered = transport.get_write_buffer_size()
        if not buffered and (self._writer is None or self._writer.done()):
            return  # nothing waits for the client: the next writer starts a new watch
        loop = asyncio.get_running_loop()
        now = loop.time()
        if writes != self._writes or buffered < pending or not buffered:
            since = now
        elif now - since >= deadline:
            self._slow_consumer(stalled=now - since)
            return
        self._watchdog = loop.call_later(deadline / 4, self._watch, self._writes, buffered, since)

    def send(self, frame: bytes) -> None:
        """A response or another frame that must arrive (not droppable)."""
        self._enqueue(frame, len(frame), droppable=False)

    def pause(self, seconds: float) -> None:
        """Frames queued from now on go out `seconds` after those queued before: in a later
        read of the client's, not in the same one."""
        if self.phase is Phase.CLOSING:
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(_Pause(seconds))
        self._write_soon()

    def drops(self, size: int) -> bool:
        """Whether a droppable event frame of at least `size` bytes would be dropped now (or
        not sent: the connection is closing), so that it need not be built for it."""
        if self.phase is Phase.CLOSING:
            return True
        buffered = self._buffered
        return bool(buffered) and buffered + size > self.max_buffered_bytes

    def skip_event(self) -> None:
        """A droppable event frame not built for this connection (`drops`): dropped, a gap."""
        self._seq += 1
        if self.phase is not Phase.CLOSING:
            self.dropped += 1

    def send_event(self, frame: EventFrame) -> None:
        """An event frame with this connection's next `seq` (§9.1); a dropped one leaves a gap.
        A piece of a text whose previous piece is still queued joins it (no `seq` of its own):
        a burst of tiny pieces (a tool call's arguments) would otherwise queue some 300 bytes
        of event for each byte of text, more than any client reads."""
        merges = frame.merges
        if merges is not None and self.phase is not Phase.CLOSING and self._merge(frame, merges):
            return
        self._seq += 1
        if self.phase is Phase.CLOSING:
            return
        seq = self._seq
        size = frame.size(seq)
        if frame.merges is not None:
            merging = _Merging(frame, seq, size)
            if self._enqueue(merging, size, frame.droppable, frame):
                if self._merging is None:
                    self._merging = {}
                self._merging[frame.merges] = merging
            return
        name = frame.replaces
        if name is None:
            self._enqueue((frame, seq), size, frame.droppable, frame)
            return
        replaceable = self._replaceable
        older = replaceable.get(name) if replaceable is not None else None
        if older is not None and older.frame is not None:
            # Still unsent: the client wants the newer state, not both (its seq is a gap).
            self._buffered -= older.size
            if self.answers is not None:
                self.answers.release(older.frame)
            older.frame = None
            self.dropped += 1
        item = _Replaceable(frame, seq, size)
        if self._enqueue(item, size, frame.droppable, frame):
            if self._replaceable is None:
                self._replaceable = {}
            self._replaceable[name] = item

    def _merge(self, frame: EventFrame, key: str) -> bool:
        """Whether `frame` joined the unsent piece of its text (or was refused with it)."""
        merging = self._merging.get(key) if self._merging is not None else None
        if merging is None or merging.frame is None:
            return False
        piece = frame.piece_bytes()
        if merging.grown + len(piece) > merging.frame.room:
            return False  # as large as a frame may be: the piece starts the next one
        if self._buffered + len(piece) > self.max_buffered_bytes and not self._make_room(
            len(piece)
        ):
            self._slow_consumer()
            return True
        merging.pieces.append(piece)
        merging.grown += len(piece)
        merging.size += len(piece)
        self._buffered += len(piece)
        if self.answers is not None:
            self._own_bytes += len(piece)
            self.answers.add(self, len(piece))  # may close this connection, or another one
        return True

    def _enqueue(
        self, item: _Queued, size: int, droppable: bool, frame: EventFrame | None = None
    ) -> bool:
        """Whether `item` (`size` bytes; the event `frame`, or bytes of its own) was queued."""
        if self.phase is Phase.CLOSING:
            return False
        # An empty queue takes any frame: a single large answer (up to maxPayload) is not a
        # sign of a slow client.
        if self._buffered and self._buffered + size > self.max_buffered_bytes:
            if droppable:
                self.dropped += 1
                return False
            if not self._make_room(size):
                self._slow_consumer()
                return False
        budget = self.answers
        if (
            droppable
            and self._buffered  # a client with nothing queued keeps up: it gets the event
            and budget is not None
            and frame is not None
            and not budget.admits(frame)
        ):
            self.dropped += 1
            return False
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(item)
        self._buffered += size
        if droppable and not isinstance(item, _Merging):
            self._may_give_way = True
        self._write_soon()
        if budget is not None:  # may close this connection, or another one
            if frame is None:
                self._own_bytes += size
                budget.add(self, size)
            else:
                budget.hold(self, frame)
        return True

    def _make_room(self, size: int) -> bool:
        """Whether dropping queued droppable events, the oldest first, leaves room for a frame
        of `size` bytes that must arrive (a run's end, its `chat` final, an answer). A burst
        of deltas (each the text so far) fills a queue before its writer runs; a client behind
        on them loses deltas (a `seq` gap, as for one dropped when queued), not its connection.
        Each frame dropped is gone for good: at most one pass over the queue per frame it
        drops, and none once the queue holds no droppable event."""
        excess = self._buffered + size - self.max_buffered_bytes
        if not self._drop_droppable(lambda freed: freed >= excess):
            return False
        # An empty queue takes any frame, as in `_enqueue`.
        return not self._buffered or self._buffered + size <= self.max_buffered_bytes

    def give_way(self, budget: AnswerBudget, keep: EventFrame | None) -> None:
        """Drop queued droppable events, the oldest first, until every connection's queued
        bytes are within `budget` again (`AnswerBudget._over`); `keep` is not dropped."""
        self._drop_droppable(lambda _: budget.held <= budget.limit, keep)

    def _drop_droppable(self, enough: Callable[[int], bool], keep: EventFrame | None = None) -> int:
        """The bytes of this queue freed by dropping droppable events, the oldest first, until
        `enough(freed)`."""
        queue = self._queue
        if queue is None or not self._may_give_way:
            return 0
        budget = self.answers
        kept: list[_Queued] = []
        freed = 0
        left = False  # a droppable event kept
        for item in queue:
            if isinstance(item, tuple):
                frame = item[0]
                size = frame.size(item[1]) if frame.droppable else 0
            elif isinstance(item, _Replaceable) and item.frame is not None:
                frame = item.frame
                size = item.size if frame.droppable else 0
            else:
                kept.append(item)
                continue
            if not size or frame is keep or enough(freed):
                kept.append(item)
                left = left or bool(size)
                continue
            if isinstance(item, _Replaceable):
                item.frame = None
            freed += size
            self.dropped += 1
            if budget is not None:
                budget.release(frame)
        self._may_give_way = left
        if freed:
            queue.clear()
            queue.extend(kept)
            self._buffered -= freed
        return freed

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close after the frames already queued; later frames are discarded."""
        if self.phase is not Phase.CLOSING:
            self._closing(code, close_reason(reason))
            self._write_soon()

    def _closing(self, code: int, reason: str) -> None:
        self._close = (code, reason)
        self.phase = Phase.CLOSING

    def _slow_consumer(
        self, total: AnswerBudget | None = None, stalled: float | None = None
    ) -> None:
        """Close now: over this connection's limit, or (`total`) the one holding the most
        answers when all of them are over the process's, or (`stalled`) a client that has
        taken in nothing for that many seconds."""
        if stalled is not None:
            log.warning(
                "ws_send_stalled",
                conn_id=self.conn_id,
                stalled_seconds=round(stalled, 1),
                buffered_bytes=self.held_bytes,
            )
        elif total is None:
            log.warning(
                "ws_slow_consumer",
                conn_id=self.conn_id,
                buffered_bytes=self._buffered,
                limit=self.max_buffered_bytes,
            )
        else:
            log.warning(
                "ws_slow_consumer",
                conn_id=self.conn_id,
                buffered_bytes=self._buffered,
                limit=self.max_buffered_bytes,
                total_buffered_bytes=total.held,
                total_limit=total.limit,
            )
        self._drop_queue()
        self._closing(CLOSE_POLICY_VIOLATION, REASON_SLOW_CONSUMER)
        # The writer is probably parked in a drain that never ends: stop it and close from
        # a task of our own (the close frame is all that is written after it).
        self._closer = asyncio.create_task(self._close_slow(), name=f"ws-close {self.conn_id}")

    # -- the writer --------------------------------------------------------------------------

    def _drop_queue(self) -> None:
        queue, budget = self._queue, self.answers
        self._queue = self._replaceable = self._merging = None
        self._buffered = 0
        if budget is None:
            return
        for item in queue or ():
            if isinstance(item, tuple):
                budget.release(item[0])
            elif isinstance(item, _Replaceable | _Merging) and item.frame is not None:
                budget.release(item.frame)
        budget.remove(self._own_bytes)
        self._own_bytes = self._sending = 0
        budget.leave(self)

    def _take(self, queue: deque[_Queued]) -> bytes | None:
        """The next frame, rendered; None for one that a newer one replaced (or a pause, which
        the writer takes itself before it gets here)."""
        item = queue.popleft()
        if isinstance(item, _Pause):
            return None
        budget = self.answers
        if isinstance(item, bytes):
            data = item
            if budget is not None:
                self._own_bytes -= len(data)
                budget.remove(len(data))
        elif isinstance(item, tuple):
            frame = item[0]
            data = frame.render(item[1])
            if budget is not None:
                budget.release(frame)
        elif item.frame is None:
            return None
        else:
            frame, item.frame = item.frame, None
            if isinstance(item, _Merging):
                data = (
                    frame.merged(item.seq, item.pieces) if item.pieces else frame.render(item.seq)
                )
                item.pieces = []
                if budget is not None:
                    self._own_bytes -= item.grown
                    budget.remove(item.grown)
            else:
                data = frame.render(item.seq)
            if budget is not None:
                budget.release(frame)
        self._buffered -= len(data)
        return data

    async def _write_batch(
        self, stream: AbstractStreamWriter, first: bytes, queue: deque[_Queued]
    ) -> None:
        """`first` and the frames queued behind it, in one write; then, as `send_frame`
        does, wait while the client is slow to read."""
        parts = [text_frame_header(len(first)), first]
        size = len(first)
        while queue and size < WRITE_BATCH_BYTES and not isinstance(queue[0], _Pause):
            data = self._take(queue)
            if data is not None:
                parts += (text_frame_header(len(data)), data)
                size += len(data)
        transport = stream.transport
        # Nothing after a close frame (ours, or aiohttp's answer to the client's): as
        # `send_frame` refuses to.
        if self.ws.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        self._being_sent(size)
        # uvloop's writelines is one writev, no copy; asyncio's joins.
        transport.writelines(parts)
        await stream.drain()

    async def _write_loop(self) -> None:
        ws = self.ws
        try:
            # Read anew each time: frames queued while one is sent join this queue, and a slow
            # consumer's close drops it (and cancels this task).
            while queue := self._queue:
                if isinstance(pause := queue[0], _Pause):
                    queue.popleft()
                    await asyncio.sleep(pause.seconds)
                    continue
                data = self._take(queue)
                if data is None:
                    continue
                if (
                    not queue
                    or isinstance(queue[0], _Pause)
                    or self.stream is None
                    or ws.compress
                    or len(data) >= WRITE_BATCH_BYTES
                ):
                    self._being_sent(len(data))
                    await ws.send_frame(data, WSMsgType.TEXT)
                else:
                    await self._write_batch(self.stream, data, queue)
                self._sent()
        except ConnectionError:
            # The peer is gone; nothing more can be written. (A drain that waited for it
            # fails with a plain ConnectionError when the connection was lost with an error.)
            if self._close is None:
                self._closing(CLOSE_NORMAL, "")
            self._drop_queue()
            return
        # Nothing queued: the queue goes, and with no close due this writer too (no await
        # between the check above and here, so no frame can be queued in between).
        self._drop_queue()
        if self._close is None:
            self._writer = None
            return
        code, reason = self._close
        await self._close_socket(code, reason)

    def _being_sent(self, size: int) -> None:
        """`size` bytes go to the socket: they count until it has taken them in (`_sent`)."""
        if self.answers is not None:
            self._sending = size
            self._own_bytes += size
            self.answers.add(self, size)  # may close this connection, or another one

    def _sent(self) -> None:
        self._writes += 1
        sending = self._sending
        if sending and self.answers is not None:
            self._sending = 0
            self._own_bytes -= sending
            self.answers.remove(sending)

    async def _close_slow(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            await asyncio.wait((writer,))
        await self._close_socket(CLOSE_POLICY_VIOLATION, REASON_SLOW_CONSUMER)

    async def _close_socket(self, code: int, reason: str) -> None:
        if self.ws.closed:
            return
        if self.stream is not None:
            # aiohttp ends a close that timed out (or whose drain failed) with the transport's
            # close(), which waits for its buffer to be written: a client that reads nothing
            # more would keep the socket, and this connection, for ever. Cut it instead.
            loop = asyncio.get_running_loop()
            loop.call_later(self.close_timeout, _cut, self.stream)
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.ws.close(code=code, message=reason.encode())
        except TimeoutError:
            pass  # aiohttp has cut the transport; the client sees 1006

    # -- request tasks and teardown ------------------------------------------------------------

    @property
    def calls_in_flight(self) -> int:
        return len(self._tasks) if self._tasks is not None else 0

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro, name=name)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        task.add_done_callback(_reap)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        tasks = self._tasks
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                self._tasks = None

    def cancel_tasks(self) -> None:
        for task in self._tasks or ():
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
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        # What a writer cut off left queued is never sent; it leaves the budget.
        self._drop_queue()
        if not self.ws.closed:
            code, reason = self._close or (code, reason)
            await self._close_socket(code, reason)

    async def wait_closed(self) -> None:
        """Until the writer (and a slow-consumer close) has finished."""
        pending = {t for t in (self._writer, self._closer) if t is not None and not t.done()}
        if pending:
            await asyncio.wait(pending)


def _cut(stream: AbstractStreamWriter) -> None:
    """Abort the connection under `stream` unless it is gone already."""
    transport = stream.transport
    if transport is not None:
        transport.abort()


def _reap(task: asyncio.Task[Any] | None) -> None:
    """Retrieve a finished task's failure so it is logged once, here, not at GC."""
    if task is None or not task.done() or task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("ws_task_failed", task=task.get_name(), exc_info=exc)
