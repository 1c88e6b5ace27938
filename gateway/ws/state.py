"""The WebSocket side's own state: settings, connections, presence, health, idempotency."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs

from agents.runs import AgentRun
from gateway.auth import secret_digest
from gateway.config.model import AuthConfig, PreAuthConfig
from gateway.edge import client_key
from gateway.state import GatewayState
from gateway.ws import protocol
from gateway.ws.configfile import ConfigFileCache, RunningConfigView
from gateway.ws.connection import AnswerBudget, Connection, now_ms
from gateway.ws.events import EventFanout
from gateway.ws.framelimit import PartialFrames
from gateway.ws.health import HealthCache
from gateway.ws.presence import PresenceBook, PresenceFanout
from gateway.ws.usage import SessionUsageScans, UsageCache

T = TypeVar("T")

# agents-sessions.md §2.7: idempotency keys are remembered 5 minutes, at most 1000 of them.
IDEMPOTENCY_TTL_SECONDS = 300.0
IDEMPOTENCY_MAX_KEYS = 1000
CLAIMS_LAST_WORD_SECONDS = 2.0  # a statement's round trip, with room for a slow database


@attrs.frozen
class WsSettings:
    """Limits of the protocol; tests lower `max_buffered_bytes` to provoke a slow consumer."""

    max_payload: int = protocol.MAX_PAYLOAD
    preauth_max_payload: int = protocol.PREAUTH_MAX_PAYLOAD
    max_buffered_bytes: int = protocol.MAX_BUFFERED_BYTES
    # Bytes queued for every connection together (AnswerBudget: answers, joined tool pieces,
    # each event frame once): each may hold its
    # `max_buffered_bytes` (50 MiB), and a few hundred clients that stop reading would hold
    # gigabytes, more than the host the gateway runs on, which then kills it with every
    # client. Ten clients' worth; over it the largest holders' queued deltas are dropped,
    # then, if that is not enough, the connection holding the most is closed.
    max_buffered_total_bytes: int = 10 * protocol.MAX_BUFFERED_BYTES
    # Payload bytes of messages begun and not yet whole, of every connection together (the
    # frame reader keeps them until the message's end): each may have its `maxPayload`
    # (25 MiB), and many connections that trickle a large frame each would hold gigabytes.
    # Ten connections' worth; the connection whose bytes would go over it is closed with
    # 1013, try again later (framelimit.PartialFrames).
    max_partial_total_bytes: int = 10 * protocol.MAX_PAYLOAD
    # A closing handshake waits this long for the client before cutting the TCP connection.
    close_timeout_seconds: float = 5.0
    # A connection whose writer waits on a client that takes in no byte for this long is
    # closed as a slow consumer (Connection's watchdog): within the bytes it may queue, a
    # client that stopped reading would otherwise keep its socket and queue for ever. A
    # minute: OpenClaw's clients give a gateway up after two missed ticks (60 s) themselves,
    # and a flaky mobile link's TCP retransmissions back off for tens of seconds without the
    # client being gone. (OpenClaw's own gateway has only the byte bound; Home Assistant
    # closes a client that keeps 1,024 messages pending for 5 s, a bound on a backlog rather
    # than on progress, which a large answer on a slow link could trip.)
    send_deadline_seconds: float = 60.0
    # Requests of one connection handled at once. Those beyond it wait their turn, in order,
    # while the reader goes on reading (pings are answered: a reader that stopped would let
    # a client's keepalive drop a connection whose requests all wait, as `agent.wait`s do).
    max_inflight_requests: int = 64
    # The waiting ones, by count and by their frames' characters (a frame may be up to
    # maxPayload); one beyond either is answered at once with a retryable UNAVAILABLE. A
    # client that pipelines a burst (a script's Promise.all) is served; one without limit
    # is told to slow down.
    max_waiting_requests: int = 1024
    max_waiting_chars: int = 16 * 1024 * 1024
    # ... and every connection's together: many connections could each hold their 16 MiB (a
    # parsed frame takes several times its text), so beyond four connections' worth the next
    # waiting request of any connection is refused the same way (retryable).
    max_waiting_total_chars: int = 64 * 1024 * 1024
    # `chat.history` and `sessions.preview` calls of every connection built at once: each
    # reads pages of up to 8 MiB of stored text and builds up to 6 MiB of answer (some
    # 50 MiB of Python objects at worst), so 64 calls on each of many sockets would hold
    # gigabytes. The others wait their turn, one per connection (TranscriptReads); two cores
    # gain nothing from more. `sessions.list` takes the same turns: each is a job of the
    # store's one scan thread, and 64 of one client would queue before everyone's.
    max_transcript_reads: int = 4
    # Turns that wait to run (the registry's `max_waiting_turns` and `max_waiting_chars`, for
    # every client and surface together): one connection may hold this fraction of them
    # (1/n), so that a client that queues turns on session after session fills its share, not
    # the gateway's, and the others still get theirs through. A quarter: 250 turns and 64 Mi
    # characters, more than any client that waits for its answers queues; a burst beyond it is
    # answered with the retryable refusal the gateway's bound gives.
    waiting_turns_share: int = 4
    # Presence goes to every connection, so n connects each broadcast at once would cost n
    # frames per connection (n² frames); coalesced, a burst costs one frame per connection per
    # interval. A second is as often as a person watching a client list can follow.
    presence_interval_seconds: float = 1.0
    # Client entries in a `presence` event and the hello-ok snapshot (newest first, after
    # `self`): every connect sends the list to every connection, and a whole list of n makes
    # that O(n²) bytes per connect. 64 fill any operator UI's list (some 20 KiB of JSON);
    # `system-presence`, asked for explicitly, still lists every entry (a README deviation).
    presence_max_entries: int = 64


@attrs.define
class TranscriptReads:
    """Turns for `chat.history`, `sessions.preview` and `sessions.list`
    (WsSettings.max_transcript_reads): at most `limit` at once in the process, and one at a
    time per connection, so that a connection's 64 calls wait behind one another, not in
    front of every other client's."""

    limit: int
    _slots: asyncio.Semaphore = attrs.field(init=False)
    # Per connection id: its lock and how many of its calls hold or wait for it.
    _connections: dict[str, tuple[asyncio.Lock, int]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.limit)

    @property
    def idle(self) -> bool:
        """No call holds a turn or waits for one (every caller is counted until it leaves,
        cancelled or not)."""
        return not self._connections

    @contextlib.asynccontextmanager
    async def turn(self, conn_id: str) -> AsyncIterator[None]:
        lock, calls = self._connections.get(conn_id) or (asyncio.Lock(), 0)
        self._connections[conn_id] = (lock, calls + 1)
        try:
            async with lock, self._slots:
                yield
        finally:
            lock, calls = self._connections[conn_id]
            if calls == 1:
                del self._connections[conn_id]
            else:
                self._connections[conn_id] = (lock, calls - 1)


@attrs.define
class SharedRead(Generic[T]):
    """An answer that depends on no caller (`status`, the session count), shared by the calls
    asked at once: a computation that began after a call was made is as new as that call asks
    for, so a burst of them costs two computations, not one each (as `HealthCache` does)."""

    _value: Any = None
    _started_at: float = -math.inf  # when the computation of `_value` began
    _lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    async def get(self, compute: Callable[[], Awaitable[T]]) -> T:
        asked = time.monotonic()
        async with self._lock:
            if self._started_at < asked:
                started = time.monotonic()
                self._value = await compute()
                self._started_at = started
            value: T = self._value
            return value


@attrs.define
class IdempotentCall:
    """What a `chat.send`/`agent` idempotency key started, and the first answer given.

    The run is held weakly: the registry keeps an ended run for 10 minutes within a byte budget
    (agents/registry.py), and a strong reference here would pin the replies of the last 1,000
    keys beyond that budget. A run the registry forgot is an ended one."""

    run_ref: weakref.ref[AgentRun] | None
    accepted: dict[str, Any] | None = None  # `agent`'s first response payload
    # The whole answer of a call that started no run (`agent`'s bare `/new`, `/reset`), and
    # when it was given (Unix ms): `agent.wait` on its key reads it as a run that ended then.
    answer: dict[str, Any] | None = None
    answered_at: int | None = None
    # `agent`'s `/reset <text>` reset its session, and its turn has not started (refused, the
    # queue being full): a retry starts the turn in that session without a second reset.
    reset_done: bool = False

    @classmethod
    def of(cls, run: AgentRun, accepted: dict[str, Any] | None = None) -> IdempotentCall:
        return cls(weakref.ref(run), accepted)

    @classmethod
    def answered(cls, answer: dict[str, Any], at: int) -> IdempotentCall:
        return cls(None, answer=answer, answered_at=at)

    @classmethod
    def after_reset(cls) -> IdempotentCall:
        return cls(None, reset_done=True)

    @property
    def run(self) -> AgentRun | None:
        return self.run_ref() if self.run_ref is not None else None


@attrs.define
class IdempotencyCache:
    ttl_seconds: float = IDEMPOTENCY_TTL_SECONDS
    max_keys: int = IDEMPOTENCY_MAX_KEYS
    _entries: OrderedDict[str, tuple[float, IdempotentCall]] = attrs.field(factory=OrderedDict)

    def get(self, key: str) -> IdempotentCall | None:
        now = time.monotonic()
        while self._entries:
            expires, _ = next(iter(self._entries.values()))
            if expires > now:
                break
            self._entries.popitem(last=False)
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def put(self, key: str, call: IdempotentCall) -> None:
        self._entries[key] = (time.monotonic() + self.ttl_seconds, call)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)


@attrs.define(eq=False)
class WsState:
    gateway: GatewayState
    # A new value reaches the fan-out too (tests lower the limits after the app is made).
    settings: WsSettings = attrs.field(
        default=WsSettings(), on_setattr=lambda self, _, new: self._settings_changed(new)
    )
    connections: set[Connection] = attrs.field(factory=set)  # every open socket
    authenticated: set[Connection] = attrs.field(factory=set)
    readers: set[Connection] = attrs.field(factory=set)  # authenticated, operator.read
    presence: PresenceBook = attrs.field(factory=PresenceBook)
    presence_fanout: PresenceFanout = attrs.field(
        default=attrs.Factory(
            lambda self: PresenceFanout(self.presence, self.authenticated, self.presence_frame),
            takes_self=True,
        )
    )
    health: HealthCache = attrs.field(factory=HealthCache)
    status: SharedRead[dict[str, Any]] = attrs.field(factory=SharedRead)
    stored_sessions: SharedRead[int] = attrs.field(factory=SharedRead)  # `system.info`'s
    usage: UsageCache = attrs.field(factory=UsageCache)
    session_usage: SessionUsageScans = attrs.field(factory=SessionUsageScans)
    config_file: ConfigFileCache = attrs.field(factory=ConfigFileCache)
    running_config: RunningConfigView = attrs.field(factory=RunningConfigView)
    idempotency: IdempotencyCache = attrs.field(factory=IdempotencyCache)
    # A shared store (gateway/ws/claims.py): the keys whose call claims and starts its run
    # now, done when it has; the tasks that keep the claims of this process's runs.
    starting: dict[str, asyncio.Future[None]] = attrs.field(factory=dict)
    claims: set[asyncio.Task[None]] = attrs.field(factory=set)
    fanout: EventFanout = attrs.field(
        default=attrs.Factory(
            lambda self: EventFanout(self.readers, max_payload=self.settings.max_payload),
            takes_self=True,
        )
    )
    answers: AnswerBudget = attrs.field(
        default=attrs.Factory(
            lambda self: AnswerBudget(self.settings.max_buffered_total_bytes), takes_self=True
        )
    )
    partial_frames: PartialFrames = attrs.field(
        default=attrs.Factory(
            lambda self: PartialFrames(self.settings.max_partial_total_bytes), takes_self=True
        )
    )
    transcript_reads: TranscriptReads = attrs.field(
        default=attrs.Factory(
            lambda self: TranscriptReads(self.settings.max_transcript_reads), takes_self=True
        )
    )
    closing: bool = False  # shutdown_connections ran: no new connections
    # Characters of the requests that wait for a slot, every connection's (handler.py).
    waiting_chars: int = 0
    # Sockets between upgrade and the end of the handshake, per client address.
    preauth: collections.Counter[str | None] = attrs.field(factory=collections.Counter)
    _tasks: set[asyncio.Task[Any]] = attrs.field(factory=set)
    # The stamp of the auth config last asked about: connections share it.
    _stamp: tuple[AuthConfig, tuple[str, bytes | None]] | None = None

    def auth_stamp(self, auth: AuthConfig) -> tuple[str, bytes | None]:
        """The mode and a digest of the secret clients must present: what a connection keeps
        of the secret it was opened with (not the secret itself, which a rotation retires)."""
        if self._stamp is None or self._stamp[0] is not auth:
            secret = auth.secret
            digest = secret_digest(secret) if secret is not None else None
            self._stamp = (auth, (auth.mode, digest))
        return self._stamp[1]

    def _settings_changed(self, settings: WsSettings) -> WsSettings:
        self.fanout.max_payload = settings.max_payload
        self.transcript_reads = TranscriptReads(settings.max_transcript_reads)
        self.answers.limit = settings.max_buffered_total_bytes
        self.partial_frames.limit = settings.max_partial_total_bytes
        return settings

    @property
    def preauth_open(self) -> int:
        return self.preauth.total()

    # Per client as the limiter counts them (edge.client_key): an IPv6 client is its /64.
    def preauth_admits(self, remote: str | None, limits: PreAuthConfig) -> bool:
        return (
            self.preauth_open < limits.max_connections
            and self.preauth[_key(remote)] < limits.max_per_address
        )

    def preauth_enter(self, remote: str | None) -> None:
        self.preauth[_key(remote)] += 1

    def preauth_leave(self, remote: str | None) -> None:
        key = _key(remote)
        self.preauth[key] -= 1
        if self.preauth[key] <= 0:
            del self.preauth[key]

    def watchers_changed(self) -> None:
        """A shared store's bus hears how many clients here may want the other processes'
        run events: those send theirs only while some process has such a client."""
        store = self.gateway.store
        if store is not None and store.bus is not None:
            store.bus.watchers_here(len(self.authenticated))

    def state_version(self) -> dict[str, int]:
        return {"presence": self.presence.version, "health": self.health.version}

    def presence_snapshot(self, now: int) -> list[dict[str, Any]]:
        """The bounded list of the `presence` event and the hello-ok snapshot."""
        return self.presence.snapshot(now, self.settings.presence_max_entries)

    def presence_frame(self) -> protocol.EventFrame:
        return protocol.event_frame(
            "presence",
            {"presence": self.presence_snapshot(now_ms())},
            droppable=True,
            state_version=self.state_version(),
            replaces="presence",
        )

    def presence_changed(self) -> None:
        """After a connect or a close: the `presence` event, now or coalesced."""
        self.presence_fanout.changed(self.settings.presence_interval_seconds)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_tasks(self) -> None:
        claims = list(self.claims)
        if claims:
            # After the drain their runs have ended: let them say so to the store (ended, or
            # released) before it closes.
            await asyncio.wait(claims, timeout=CLAIMS_LAST_WORD_SECONDS)
        tasks = [*self._tasks, *claims]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _key(remote: str | None) -> str | None:
    return client_key(remote) if remote is not None else None
