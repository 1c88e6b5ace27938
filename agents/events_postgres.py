"""Run events and aborts between gateway processes, over PostgreSQL's LISTEN/NOTIFY.

Every process LISTENs on one channel and NOTIFYs its own runs' events there, so a WebSocket
client of process B sees the `agent`/`chat` events of a run on process A, and `chat.abort` on B
reaches a run on A.

Wire: one notification is `<origin> <message id> <index> <count>\\n<body>`. The body of a
whole message is a JSON array (ASCII only, so characters are bytes) of items:
`{"t": "run", "e": <RunEvent.to_dict()>}`, `{"t": "piece", "e": <RunEvent.to_dict() without
`data.text`>, "at": <its length before the delta>}` (below), `{"t": "change", "c":
<SessionChange.to_dict()>}`
(`sessions.changed`), `{"t": "abort", "q": <request id>, "k": <key>,
"r": <run id or null>}` and `{"t": "aborted", "q": <request id>, "to": <origin>, "ids": [...]}`
(every process answers an abort, `ids` empty when it stopped nothing, and `"l"`: the server's
pid of its listening connection; the asker waits for an answer from each listening connection
pg_stat_activity lists, LISTENER_APPLICATION_NAME, but those that left one unanswered).
Items queued together go in one notification while they fit; a body over the limit is cut into
`count` pieces sent in order (one connection's notifications arrive in the order sent) and
joined again by the receivers. The sender is one task on one connection: events leave in the
order the runs emitted them.

Run events and session changes are sent only while some other process wants them: one with
WebSocket clients says so (`{"t": "watch", "on": true}`) when its first client comes, again
every WATCH_REFRESH_S while it has any, and `"on": false` when its last one leaves; a process
that starts (or finds the database again) asks with `{"t": "hello"}` and the watching ones
answer. A process killed while watching is forgotten after WATCH_TTL_S. Without the watch, an
HTTP-only deployment paid a NOTIFY and its JSON for every event of every run, a quarter of a
turn's CPU. A run whose events went out sends its end whether watched or not: the others
count it as running until they hear it (`RemoteRuns`).

An `assistant` or `thinking` event carries its stream's text so far (agents/events.py): sent as
it is, a reply of n characters in small pieces made O(n²) bytes of notifications (48 MB for
24 KB in 6-character pieces). So it goes whole (`run`) as the stream's first sent, and again
each time the text has doubled since, and else as a `piece`: its delta, which the receivers
add to the text they have. The whole texts sent add up to twice the text at most. A receiver
whose text is not the piece's `at` characters long (it missed one) drops the pieces until the
next whole one, a `seq` gap as for a slow client; the sender sends the next event whole
after anything that could make one miss it: a stream's event it did not send (nobody
watched), a process that begins to watch or says hello (it found the database again), items
lost. A run's end (`run`) carries its last `assistant` event sent, whole (`"last"`), and its
last `thinking` event sent (`"lastThinking"`): a receiver that missed a piece, or the whole one,
with nothing of the stream after it (items lost while it stayed connected: the sender's
connection swallowed mid-batch) passes that event on before the end (the reasoning first, as a
run emits it), so its `chat` final shows the whole text rather than an older one, and its
clients' last `thinking` event the whole reasoning; one whose text is that long already passes
on the end alone. That costs each text once more: three times it at most. And a stream with no
event after the lost ones (the reasoning, once the reply has begun) need not wait for the end:
once sending works again, a `last` item (`{"t": "last", "e": <RunEvent.to_dict()>}`) follows
what waits to go for the last event sent of each text stream of the runs in flight, passed on
by a receiver that missed it as the end's are (each text once more per outage). A process of an
earlier version ignores `piece` and `last` items, `last` and `lastThinking`: its clients see the
whole events only (one of the version before `lastThinking`, the reasoning as it had it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import structlog

from agents.errors import StoreUnavailable
from agents.events import DeltaData, RunEvent, SessionChange, Stream, StreamedText

log = structlog.get_logger(__name__)

CHANNEL = "clawgate_events"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; the header takes < 100 of these.
MAX_BODY_BYTES = 7800
# Partly received messages kept at once: a process killed between two pieces leaves one behind.
MAX_PARTIAL_MESSAGES = 256
# How long `abort_elsewhere` waits for the other processes to answer.
ABORT_REPLY_TIMEOUT_S = 2.0
# How long it waits for the count of the processes listening (a millisecond's statement) on
# the listening connection: one unanswered so long was swallowed by the network, and is closed
# then (and made again), within the abort's wait, so that the next aborts know it at once.
ABORT_COUNT_ANSWER_S = 1.0
# The listening connections' name in pg_stat_activity: how many processes an abort waits for.
LISTENER_APPLICATION_NAME = "clawgate-events"
# Between attempts to reconnect after the database went away.
RECONNECT_DELAY_S = 1.0
# A partition (or a firewall that forgot the connection) leaves a connection open with nothing
# passing on it and no error, ever, on one that only listens. So the listening connection is
# asked a `SELECT 1` this often, and a connection whose statement waits this long for an
# answer is closed and made again (a NOTIFY or the probe take milliseconds).
PROBE_INTERVAL_S = 10.0
ANSWER_TIMEOUT_S = 5.0
# Events not yet sent are dropped past this many (the database is down): the runs go on, and
# remote watchers miss deltas rather than the process growing without bound.
MAX_QUEUED_ITEMS = 100_000
# A watching process says so again this often; a word older than the TTL (three refreshes and
# some) is forgotten: its process was killed or lost the database.
WATCH_REFRESH_S = 10.0
WATCH_TTL_S = 35.0

# Runs of other processes remembered as in flight: a process killed mid-run never ends its
# runs, so the oldest are forgotten past this many.
MAX_REMOTE_RUNS = 10_000
# The streams of remote runs whose text so far is kept to add pieces to (module docstring):
# two a run, the longest silent forgotten first, as the runs themselves.
MAX_REMOTE_TEXTS = 2 * MAX_REMOTE_RUNS
# The text streams an event of which may go as a `piece`.
_TEXT_STREAMS = (Stream.ASSISTANT, Stream.THINKING)
# A run's end carries each text stream's last event sent under these keys (module docstring),
# passed on in this order when missed: the reasoning before the reply, as a run emits them.
_LAST_KEYS = ((Stream.THINKING, "lastThinking"), (Stream.ASSISTANT, "last"))


class AbortReplies:
    """The answers to one `abort_elsewhere`: every process answers, with the ids it aborted
    (none: it ran nothing of the session) and the server's pid of its listening connection
    (none from a version before it said so); complete once each `expected` listener did, or
    as many processes."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.expected: frozenset[int] | None = None
        self.complete = asyncio.Event()
        self.listeners: set[int] = set()  # the pids answered with
        self.unnamed = 0  # answers with no pid
        self._origins: set[str] = set()

    def heard(self, origin: str, ids: list[str], listener: int | None) -> None:
        if origin not in self._origins:
            self._origins.add(origin)
            self.ids.extend(ids)
            if listener is None:
                self.unnamed += 1
            else:
                self.listeners.add(listener)
            self._check()

    def expect(self, listeners: frozenset[int]) -> None:
        self.expected = listeners
        self._check()

    def unanswered(self) -> frozenset[int]:
        """The expected listeners that did not answer; none when one answer named none
        (it may have been any of them)."""
        if self.expected is None or self.unnamed:
            return frozenset()
        return self.expected - self.listeners

    def _check(self) -> None:
        expected = self.expected
        # By count when an answer named no listener (a version before they did).
        if expected is not None and (
            expected <= self.listeners or (self.unnamed and len(self._origins) >= len(expected))
        ):
            self.complete.set()


RemoteListener = Callable[[RunEvent | SessionChange], None]
# Aborts the session's runs here (or the one run): the ids it aborted.
LocalAbort = Callable[[str, str | None], list[str]]


def server_address(url: str) -> str:
    """The host(s) and port(s) `url` names, never its user or password: `h:5432`,
    `h1:5432,h2:5433`, a `?host=` (a unix socket's directory), else libpq's default."""
    try:
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        if not hosts:
            query = dict(parse_qsl(parts.query))
            hosts = query.get("host", "")
            if hosts and "port" in query:
                hosts += f":{query['port']}"
    except ValueError:
        return "<unparseable url>"
    return hosts or "the default host (PGHOST, else localhost:5432)"


def unanswered(url: str, seconds: float) -> StoreUnavailable:
    """A connect to `url` that timed out after `seconds`; TimeoutError's own text is empty:
    this one says which server, and how long it was given."""
    return StoreUnavailable(
        f"TimeoutError: the database at {server_address(url)} did not answer within {seconds:g} s"
    )


CONNECT_TIMEOUT_S = 5.0  # as the store's connections (store_postgres.CONNECT_TIMEOUT_S)

# What a connection the database went away from (or never reached) raises. InternalClientError
# too: a connection whose server said its last words (a FATAL error, on a restart) before the
# end of the connection reached us is "in another operation" to asyncpg until that end comes.
_LOST = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
         TimeoutError)  # fmt: skip


@contextlib.contextmanager
def closed_if_unanswered(conn: Any, seconds: float) -> Iterator[None]:
    """Close `conn` when what runs inside waits longer than `seconds` for the server: the
    wait fails at once (cancelling it would leave asyncpg waiting for the server to confirm)."""
    deadline = asyncio.get_running_loop().call_later(seconds, conn.terminate)
    try:
        yield
    finally:
        deadline.cancel()


def process_origin() -> str:
    """This process's name on the bus: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def encode_item(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=True)


def encode(origin: str, message_id: int, items: list[str]) -> list[str]:
    """The notifications that carry `items` (each `encode_item`'s), in order."""
    body = f"[{','.join(items)}]"
    pieces = [body[i : i + MAX_BODY_BYTES] for i in range(0, len(body), MAX_BODY_BYTES)] or [""]
    return [f"{origin} {message_id} {n} {len(pieces)}\n{p}" for n, p in enumerate(pieces)]


def session_change(data: dict[str, Any]) -> SessionChange:
    """Another process's `sessions.changed` payload, passed on as it came."""
    return SessionChange(
        str(data["sessionKey"]), str(data["agentId"]), int(data["ts"]), None, wire=data
    )


class Reassembly:
    """Joins the pieces of each (origin, message id) in order; whole messages come out."""

    def __init__(self) -> None:
        self._partial: OrderedDict[tuple[str, str], list[str]] = OrderedDict()

    def add(self, payload: str) -> tuple[str, list[dict[str, Any]]] | None:
        """The origin and items of a completed message, or None (a piece, or garbage)."""
        header, _, body = payload.partition("\n")
        try:
            origin, message_id, index_text, count_text = header.split(" ")
            index, count = int(index_text), int(count_text)
        except ValueError:
            return None
        if count == 1:
            return origin, _items(body)
        key = (origin, message_id)
        parts = self._partial.get(key)
        if parts is None:
            if index != 0:
                return None  # its start was lost: the whole message is
            parts = self._partial[key] = []
            while len(self._partial) > MAX_PARTIAL_MESSAGES:
                self._partial.popitem(last=False)
        if index != len(parts):
            del self._partial[key]
            return None
        parts.append(body)
        if len(parts) < count:
            return None
        del self._partial[key]
        return origin, _items("".join(parts))


def _items(body: str) -> list[dict[str, Any]]:
    try:
        items = json.loads(body)
    except ValueError:
        return []
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def run_event(data: dict[str, Any]) -> RunEvent:
    return RunEvent(
        data["runId"], data["sessionKey"], data.get("sessionId"), data["agentId"],
        data["stream"], data["seq"], data["ts"], data["data"],
    )  # fmt: skip


class RemoteRuns:
    """The runs other processes announced and have not ended, by session key: how `chat.abort`
    finds a run that holds no turn lock (a key minted for its one request takes none)."""

    def __init__(self) -> None:
        self._keys: OrderedDict[str, str] = OrderedDict()  # run id → session key
        self._count: Counter[str] = Counter()

    def saw(self, event: RunEvent) -> None:
        if event.is_terminal:
            self._forget(event.run_id)
        elif event.run_id not in self._keys:
            self._keys[event.run_id] = event.session_key
            self._count[event.session_key] += 1
            if len(self._keys) > MAX_REMOTE_RUNS:
                self._forget(next(iter(self._keys)))

    def _forget(self, run_id: str) -> None:
        key = self._keys.pop(run_id, None)
        if key is not None:
            self._count[key] -= 1
            if not self._count[key]:
                del self._count[key]

    def running(self, session_key: str) -> bool:
        return session_key in self._count

    def unanswered(self, session_key: str, run_id: str | None) -> None:
        """Nobody answered an abort of the session's runs (or of the one run): forget them.
        A process killed mid-run never sends their ends; a run that still goes on is
        heard of again with its next event."""
        if run_id is not None:
            if self._keys.get(run_id) == session_key:
                self._forget(run_id)
            return
        if session_key in self._count:
            for run in [r for r, key in self._keys.items() if key == session_key]:
                self._forget(run)


class PostgresEventBus:
    """This process's end of the channel: `publish` is the registry listener for local runs,
    remote runs' events go to the `remote` listeners, remote aborts to `local_abort`."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self.url = url
        self._password = password
        # The server's settings on its connections: the store's keepalives (set at its open).
        # A LISTEN connection cut off by the network keeps its place in the server's
        # notification queue until the server finds it dead, and the queue cannot be trimmed
        # past the oldest place: once full (8 GB), every process's NOTIFY fails.
        self.server_settings: dict[str, str] = {}
        self.origin = process_origin()
        self._remote: tuple[RemoteListener, ...] = ()
        self._local_abort: LocalAbort | None = None
        self._queue: deque[str] = deque()  # encoded items
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Any = None  # asyncpg.Connection LISTENing
        self._sender: Any = None  # the one connection that NOTIFYs
        self._reassembly = Reassembly()
        self.remote_runs = RemoteRuns()
        self._watched_here = False
        # This process's runs whose events went out and whose end has not: their end goes
        # out even when nobody watches any more.
        self._announced: OrderedDict[str, bool] = OrderedDict()
        # The processes that want run events, and when their word expires (monotonic s).
        self._watched_elsewhere: dict[str, float] = {}
        self._message_ids = itertools.count()
        # This process's text streams sent whole, by (run id, stream): the length sent whole
        # last (module docstring).
        self._sent_whole: dict[tuple[str, str], int] = {}
        # This process's runs' last `assistant` and `thinking` event sent, by (run id,
        # stream), for their end (module docstring).
        self._last_sent: dict[tuple[str, str], RunEvent] = {}
        # Other processes' text streams: their text so far, to add their pieces to.
        self._texts: OrderedDict[tuple[str, str], StreamedText] = OrderedDict()
        self._replies: dict[str, AbortReplies] = {}
        # Listening connections (server pids) of other processes that left an abort
        # unanswered: cut off by the network, the server lists them until its keepalives find
        # them dead (about a minute), and each abort waited its whole ABORT_REPLY_TIMEOUT_S for
        # them. Not waited for again until they answer one (`_dispatch`) or leave the list.
        self._silent: frozenset[int] = frozenset()
        # The listening connection runs a statement of ours at a time (its probe, a count).
        self._listener_use = asyncio.Lock()
        self._closing = False
        self.listening = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, local_abort: LocalAbort) -> None:
        self._local_abort = local_abort
        # The first connection's failure is the caller's, as the store's open says it.
        try:
            await self._listen()
        except TimeoutError as exc:
            raise unanswered(self.url, CONNECT_TIMEOUT_S) from exc
        except _LOST as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="event-bus-sender"),
            asyncio.create_task(self._keep_listening(), name="event-bus-listener"),
        ]

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            self._listener.terminate()
            self._listener = None

    async def _connect(self, settings: dict[str, str] | None = None) -> Any:
        return await asyncpg.connect(
            self.url,
            password=self._password,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={**self.server_settings, **(settings or {})},
        )

    async def _listen(self) -> None:
        conn = await self._connect({"application_name": LISTENER_APPLICATION_NAME})
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:  # a failure, or a stop while the gateway starts: not left open
            conn.terminate()
            raise
        self._listener = conn
        self.listening.set()
        self._put({"t": "hello"})  # who watches? (what was said while away is lost)

    async def _keep_listening(self) -> None:
        """Reconnect the LISTEN connection when the database went away and came back.
        Notifications sent meanwhile are lost (NOTIFY keeps nothing for absent listeners).
        Also the watch refresh: ours said again, the others' expired words forgotten."""
        said = probed = time.monotonic()
        while not self._closing:
            await asyncio.sleep(RECONNECT_DELAY_S)
            now = time.monotonic()
            for origin, expires in list(self._watched_elsewhere.items()):
                if expires < now:
                    del self._watched_elsewhere[origin]
            if self._watched_here and now - said >= WATCH_REFRESH_S:
                self._put({"t": "watch", "on": True})
                said = now
            listener = self._listener
            if listener is not None and not listener.is_closed():
                if now - probed < PROBE_INTERVAL_S:
                    continue
                probed = now
                async with self._listener_use:
                    answered = await self._answers(listener)
                if answered:
                    continue
                log.warning("event_bus_unanswered", direction="listen")
            self.listening.clear()
            # The ends of runs may come while nobody listens: what was heard of them is
            # forgotten, not kept as running for good. A turn of theirs that still runs
            # holds its turn lock, which `turn_running_elsewhere` finds as well.
            self.remote_runs = RemoteRuns()
            try:
                await self._listen()
                log.info("event_bus_reconnected", direction="listen")
            except _LOST:
                continue

    @staticmethod
    async def _answers(conn: Any) -> bool:
        try:
            with closed_if_unanswered(conn, ANSWER_TIMEOUT_S):
                await conn.execute("SELECT 1")
        except _LOST:
            return False
        return True

    # -- out -------------------------------------------------------------------------------

    def publish(self, event: RunEvent | SessionChange) -> None:
        """The registry listener: this process's run events and session changes go out
        while another process watches, and the end of a run whose events went out (never
        blocks)."""
        if isinstance(event, RunEvent):
            data = event.data
            if event.is_terminal:
                if self._sent_whole:
                    for stream in _TEXT_STREAMS:
                        self._sent_whole.pop((event.run_id, stream), None)
                # A run the others heard of hears its end too, watched or not: else it would
                # stay running to them for good (`remote_runs`), and every abort, reset or
                # delete of its session there would wait for an answer that never comes.
                announced = self._announced.pop(event.run_id, False)
                lasts = self._lasts(event.run_id) if self._last_sent else {}
                if not (self._watched_elsewhere or announced):
                    return
                if lasts:
                    self._put({"t": "run", "e": event.to_dict(), **lasts})
                    return
            elif not self._watched_elsewhere:
                if self._sent_whole and isinstance(data, DeltaData):
                    # Unsent: a process that watches later has not got the text so far.
                    self._sent_whole.pop((event.run_id, event.stream), None)
                    # Not the last any more.
                    self._last_sent.pop((event.run_id, event.stream), None)
                return
            else:
                self._announced[event.run_id] = True
                while len(self._announced) > MAX_REMOTE_RUNS:
                    self._announced.popitem(last=False)
                if isinstance(data, DeltaData):
                    self._last_sent[(event.run_id, event.stream)] = event
                    self._put(self._text_item(event, data))
                    return
            self._put({"t": "run", "e": event.to_dict()})
        elif self._watched_elsewhere:
            self._put({"t": "change", "c": event.to_dict()})

    def _lasts(self, run_id: str) -> dict[str, Any]:
        """The end's `last` and `lastThinking` of a run that ends (module docstring)."""
        lasts: dict[str, Any] = {}
        for stream, name in _LAST_KEYS:
            last = self._last_sent.pop((run_id, stream), None)
            if last is not None:
                lasts[name] = last.to_dict()
        return lasts

    def _text_item(self, event: RunEvent, data: DeltaData) -> dict[str, Any]:
        """An `assistant` or `thinking` event's item: whole, or its piece (module docstring)."""
        key = (event.run_id, event.stream)
        whole = self._sent_whole.get(key)
        if whole is None or data.length > 2 * whole:
            self._sent_whole[key] = data.length
            return {"t": "run", "e": event.to_dict()}
        piece = event._replace(data={"delta": data.delta}).to_dict()
        return {"t": "piece", "e": piece, "at": data.length - len(data.delta)}

    @property
    def watched_elsewhere(self) -> bool:
        """Whether another process watches: this one's run events go out."""
        return bool(self._watched_elsewhere)

    def watchers_here(self, count: int) -> None:
        """How many clients of this process want the other processes' run events (the
        WebSocket clients); the other processes send theirs while some process has any."""
        watched = count > 0
        if watched != self._watched_here:
            self._watched_here = watched
            self._put({"t": "watch", "on": watched})

    def _put(self, item: dict[str, Any]) -> None:
        if self._closing:
            return
        if len(self._queue) >= MAX_QUEUED_ITEMS:
            self._queue.popleft()
            self._sent_whole.clear()  # a piece may be lost: each stream's next goes whole
        self._queue.append(encode_item(item))
        self._wake.set()

    async def _send_loop(self) -> None:
        self._sender = None
        try:
            await self._send_all()
        finally:
            if self._sender is not None:
                self._sender.terminate()

    async def _send_all(self) -> None:
        conn: Any = None
        lost = 0  # items lost since sending last failed; 0: it works
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take_batch()
                try:
                    if conn is None or conn.is_closed():
                        conn = self._sender = await self._connect()
                    with closed_if_unanswered(conn, ANSWER_TIMEOUT_S):
                        for payload in encode(self.origin, next(self._message_ids), batch):
                            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                except _LOST:
                    # The database is away: this batch is lost, later ones wait for it. One
                    # line when sending starts failing and one when it works again, not one
                    # a second for as long as the database is away.
                    if not lost:
                        log.warning("event_bus_send_failed", items=len(batch))
                    self._sent_whole.clear()  # each stream's next event goes whole
                    lost += len(batch)
                    if conn is not None:
                        conn.terminate()
                        conn = self._sender = None
                    await asyncio.sleep(RECONNECT_DELAY_S)
                else:
                    if lost:
                        log.info("event_bus_send_recovered", lost=lost)
                        lost = 0
                        self._recheck()

    def _recheck(self) -> None:
        """Sending works again after items were lost: the last event of each text stream of
        the runs in flight (`last`), after what waits to go, for the receivers that missed it
        (module docstring)."""
        for event in self._last_sent.values():
            self._put({"t": "last", "e": event.to_dict()})

    def _take_batch(self) -> list[str]:
        """Queued items for one notification while they fit; at least one item."""
        batch = [self._queue.popleft()]
        size = len(batch[0])
        while self._queue:
            more = len(self._queue[0]) + 1
            if size + more > MAX_BODY_BYTES:
                break
            batch.append(self._queue.popleft())
            size += more
        return batch

    # -- in --------------------------------------------------------------------------------

    def add_remote_listener(self, listener: RemoteListener) -> None:
        self._remote = (*self._remote, listener)

    def remove_remote_listener(self, listener: RemoteListener) -> None:
        self._remote = tuple(cb for cb in self._remote if cb != listener)

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        done = self._reassembly.add(payload)
        if done is None:
            return
        origin, items = done
        if origin == self.origin:
            return  # ours, back from the channel
        for item in items:
            try:
                self._dispatch(origin, item)
            except Exception:
                log.exception("event_bus_item_failed", kind=item.get("t"))

    def _dispatch(self, origin: str, item: dict[str, Any]) -> None:
        kind = item.get("t")
        if kind == "run":
            for _, name in _LAST_KEYS:
                last = item.get(name)
                if isinstance(last, dict) and self._missed(last):
                    try:
                        self._dispatch(origin, {"t": "run", "e": last})
                    except Exception:  # a malformed one: the end still goes on
                        log.exception("event_bus_item_failed", kind=name)
            event = self._remote_text(run_event(item["e"]))
            self.remote_runs.saw(event)
            for listener in self._remote:
                listener(event)
        elif kind == "last":
            last = item.get("e")
            if isinstance(last, dict) and self._missed(last):
                self._dispatch(origin, {"t": "run", "e": last})
        elif kind == "piece":
            piece = self._remote_piece(run_event(item["e"]), item.get("at"))
            if piece is not None:
                self.remote_runs.saw(piece)
                for listener in self._remote:
                    listener(piece)
        elif kind == "change":
            change = session_change(item["c"])
            for listener in self._remote:
                listener(change)
        elif kind == "watch":
            if item.get("on") is True:
                if origin not in self._watched_elsewhere:
                    self._sent_whole.clear()  # it has no text so far: each next goes whole
                self._watched_elsewhere[origin] = time.monotonic() + WATCH_TTL_S
            else:
                self._watched_elsewhere.pop(origin, None)
        elif kind == "hello":
            # A process that found the database again lost what was said meanwhile.
            self._sent_whole.clear()
            if self._watched_here:
                self._put({"t": "watch", "on": True})
        elif kind == "abort" and self._local_abort is not None:
            # Answered also when nothing was aborted here: the asker waits for every process.
            ids = self._local_abort(str(item["k"]), item.get("r"))
            answer = {"t": "aborted", "q": item["q"], "to": origin, "ids": ids}
            if self._listener is not None:  # it heard the abort
                answer["l"] = self._listener.get_server_pid()
            self._put(answer)
        elif kind == "aborted" and item.get("to") == self.origin:
            pid = item.get("l")  # the server's pid of the answerer's listening connection
            if not isinstance(pid, int) or isinstance(pid, bool):
                pid = None
            elif pid in self._silent:
                self._silent -= {pid}  # it answers again
            replies = self._replies.get(str(item["q"]))
            if replies is not None:
                replies.heard(origin, [str(i) for i in item["ids"]], pid)

    def _remote_text(self, event: RunEvent) -> RunEvent:
        """A remote run's event as it came, its text so far kept when it has one."""
        data = event.data
        if event.is_terminal:
            for stream in _TEXT_STREAMS:
                self._texts.pop((event.run_id, stream), None)
        elif (
            event.stream in _TEXT_STREAMS
            and isinstance(data, dict)
            and type(data.get("text")) is str
        ):
            delta = data.get("delta")
            if type(delta) is str:
                text = StreamedText()
                text.add(data["text"])
                key = (event.run_id, event.stream)
                self._texts[key] = text
                self._texts.move_to_end(key)
                while len(self._texts) > MAX_REMOTE_TEXTS:
                    self._texts.popitem(last=False)
                return event._replace(data=DeltaData(text, text.length, delta))
        return event

    def _missed(self, last: dict[str, Any]) -> bool:
        """Whether a last text event of a run that ends (`last`, `lastThinking`) was missed
        here: the text of its stream here is not as long as its text (none: missed too)."""
        data = last.get("data")
        text = data.get("text") if isinstance(data, dict) else None
        if type(text) is not str:
            return False
        kept = self._texts.get((str(last.get("runId")), str(last.get("stream"))))
        return kept is None or kept.length != len(text)

    def _remote_piece(self, event: RunEvent, at: object) -> RunEvent | None:
        """A remote run's event sent as a piece, with its text so far; None when the text it
        adds to is not here (a piece missed)."""
        key = (event.run_id, event.stream)
        text = self._texts.get(key)
        data = event.data
        delta = data.get("delta") if isinstance(data, dict) else None
        if text is None or type(delta) is not str or type(at) is not int or at != text.length:
            self._texts.pop(key, None)  # none until the next whole one
            return None
        self._texts.move_to_end(key)
        return event._replace(data=text.add(delta))

    # -- aborts ----------------------------------------------------------------------------

    async def abort_elsewhere(self, session_key: str, run_id: str | None) -> list[str]:
        """Ask the other processes to abort the session's runs (or the one run); the ids they
        all aborted (a run on one, the next turn queued on another), once every process
        listening on the database answered, or those answered within ABORT_REPLY_TIMEOUT_S
        (a process that answers nothing: killed, cut off, or of a version that answered only
        when it aborted some); none at once while this process is not listening."""
        request = uuid.uuid4().hex
        replies = self._replies[request] = AbortReplies()
        try:
            self._put({"t": "abort", "q": request, "k": session_key, "r": run_id})
            others = None
            async with asyncio.timeout(ABORT_REPLY_TIMEOUT_S):
                others = await self._listening_elsewhere()
                if others is None:
                    # Not listening (the database away, the connection cut): no answer can
                    # be heard, and waiting for one delayed each abort for nothing.
                    return self._unanswered(session_key, run_id)
                replies.expect(others - self._silent)
                await replies.complete.wait()
        except TimeoutError:
            pass
        finally:
            del self._replies[request]
        if others is not None:
            self._silent = (self._silent & others) | replies.unanswered()
        if not replies.ids:
            return self._unanswered(session_key, run_id)
        return replies.ids

    def _unanswered(self, session_key: str, run_id: str | None) -> list[str]:
        self.remote_runs.unanswered(session_key, run_id)
        return []

    async def _listening_elsewhere(self) -> frozenset[int] | None:
        """The other processes listening on the channel (in this database): the server's
        pids of their listening connections; None: ours is away."""
        listener = self._listener
        if listener is None or listener.is_closed():
            return None
        async with self._listener_use:
            try:
                with closed_if_unanswered(listener, ABORT_COUNT_ANSWER_S):
                    found = await listener.fetchval(
                        "SELECT array_agg(pid) FROM pg_stat_activity WHERE application_name = $1"
                        " AND datname = current_database() AND pid <> pg_backend_pid()",
                        LISTENER_APPLICATION_NAME,
                    )
            except _LOST:
                return None
        return frozenset(found or ())
