"""The entry point of the agents layer: submit turns, watch them, manage sessions.

The gateway owns one `SessionRegistry` (and the `SessionStore` it is given). HTTP and WS both
submit `TurnRequest`s here; the WS fan-out registers one listener for every run event and
session change (ws-protocol.md §9).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import structlog

from agents.config import AgentsConfig
from agents.errors import (
    AgentError,
    InvalidSessionKey,
    SessionArchived,
    SessionChanged,
    SessionNotArchived,
    StoreError,
    TurnsBacklogged,
    UnknownAgent,
)
from agents.events import (
    ChangeInterest,
    ChangeReason,
    EventSink,
    LifecyclePhase,
    Listener,
    SessionChange,
    SessionInfo,
)
from agents.keys import is_main_key, parse_session_key
from agents.providers.base import Provider
from agents.runs import AgentRun, RunState, TurnRequest
from agents.session import AgentSession, QueuedMarks, RunSlots, SessionDeps
from agents.store import PRUNE_BATCH, SessionRow, StoredMessage
from agents.store_protocol import Store

log = structlog.get_logger(__name__)

MAINTENANCE_INTERVAL_S = 3600.0  # §5: at startup and hourly
# A pass's share of the store thread: a backlog (a flood of stateless sessions, a lowered
# limit) is worked off over the hourly passes instead of in one long stall at startup.
MAINTENANCE_PASS_S = 30.0
# A reload that changes `session.maintenance` brings the next pass forward to this long
# after it: the reloads of a burst (an editor's saves) share the pass, and even a reload loop
# leaves the store thread to turns at least half the time (a pass works up to 30 s).
MAINTENANCE_AFTER_RELOAD_S = 60.0
# `agent.wait` and `chat.abort` may name a run that just ended (ws-protocol.md §8).
FINISHED_RUN_TTL_S = 600.0
FINISHED_RUNS_MAX = 10_000  # bounds the bookkeeping of a burst of short runs
# Bounds what ended runs pin for their 10 minutes, counted by `AgentRun.retained_bytes`
# (their reply texts, mostly): a burst of big replies evicts the oldest instead of growing the
# process. 64 MiB keeps every run of a busy operator's 10 minutes at ordinary reply sizes.
FINISHED_RUNS_MAX_BYTES = 64 * 1024 * 1024
# Turns accepted but not started (behind their session's running turn, or waiting for a run
# slot), over all sessions and surfaces: each holds its input until it runs, and a client may
# queue one on each of any number of session keys (a WS message may be 25 MiB, an HTTP body
# 20 MiB). 1,000 turns is minutes of work for `maxConcurrent` 4 at ordinary turn lengths, so a
# burst of hooks or chats fits; 256 Mi characters (about ten turns of the largest size, and a
# few hundred MiB of memory at most) bounds what they hold. One turn is always taken when
# none waits, however large: the limits of a single request are the transport's.
MAX_WAITING_TURNS = 1_000
MAX_WAITING_CHARS = 256 * 1024 * 1024
# Runs that end this close together expire in one wake-up of the sweeper, not one each.
_EXPIRY_COALESCE_S = 1.0
# How long aclose() lets aborted runs commit before cancelling them outright.
SHUTDOWN_GRACE_S = 10.0
_LOGGED_KEYS_MAX = 20  # prune logs name this many keys, not thousands


class ProviderSource(Protocol):
    """What the registry needs of `agents.providers.pool.ProviderPool`."""

    def get(self, api: str) -> Provider: ...

    async def aclose(self) -> None: ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@attrs.frozen
class RunStats:
    active: int  # running (holding a global slot)
    queued: int  # waiting for their session or a slot
    max_concurrent: int
    live_sessions: int  # session objects in memory


@attrs.frozen
class SessionList:
    sessions: tuple[SessionInfo, ...]
    total_count: int  # matching the filters, before `limit`

    @property
    def has_more(self) -> bool:
        return self.total_count > len(self.sessions)


@attrs.frozen
class Transcript:
    """`chat.history`: the last messages of the session's current transcript."""

    session: SessionInfo | None  # None when the key has no session
    messages: tuple[StoredMessage, ...]  # oldest first
    total: int

    @property
    def has_more(self) -> bool:
        return self.total > len(self.messages)


@attrs.define(eq=False)
class SessionRegistry:
    """All sessions and runs of one gateway process.

    Session keys given here are canonical (`agents.keys`). Live `AgentSession` objects are
    kept for at most `max_live_sessions` idle keys (LRU); a dropped one is reloaded from the
    store on its next use. `clock` gives Unix ms for every timestamp (tests pin it).
    """

    config: AgentsConfig
    store: Store
    providers: ProviderSource
    max_live_sessions: int = attrs.field(default=10_000, kw_only=True)
    clock: Callable[[], int] = attrs.field(default=wall_clock_ms, kw_only=True)  # Unix ms
    finished_run_ttl_s: float = attrs.field(default=FINISHED_RUN_TTL_S, kw_only=True)
    finished_runs_max_bytes: int = attrs.field(default=FINISHED_RUNS_MAX_BYTES, kw_only=True)
    maintenance_batch: int = attrs.field(default=PRUNE_BATCH, kw_only=True)
    max_waiting_turns: int = attrs.field(default=MAX_WAITING_TURNS, kw_only=True)
    max_waiting_chars: int = attrs.field(default=MAX_WAITING_CHARS, kw_only=True)
    maintenance_after_reload_s: float = attrs.field(
        default=MAINTENANCE_AFTER_RELOAD_S, kw_only=True
    )
    slots: RunSlots = attrs.field(init=False)
    _sink: EventSink = attrs.field(init=False, factory=EventSink)
    _deps: SessionDeps = attrs.field(init=False)  # what every session gets of the registry
    # Live sessions, least recently used first; busy ones are never evicted.
    _live: OrderedDict[str, AgentSession] = attrs.field(init=False, factory=OrderedDict)
    # Queued and running runs (an ordered set: run ids may repeat across time).
    _active: dict[AgentRun, None] = attrs.field(init=False, factory=dict)
    _by_id: dict[str, AgentRun] = attrs.field(init=False, factory=dict)
    # Accepted runs that have not started, and the characters of their input
    # (`MAX_WAITING_TURNS`, `MAX_WAITING_CHARS`).
    _waiting: dict[AgentRun, int] = attrs.field(init=False, factory=dict)
    _waiting_chars: int = attrs.field(init=False, default=0)
    # Ended addressable runs, oldest first (so also in expiry order): monotonic expiry, run,
    # and the bytes counted for it in `_finished_bytes`.
    _finished: OrderedDict[str, tuple[float, AgentRun, int]] = attrs.field(
        init=False, factory=OrderedDict
    )
    _finished_bytes: int = attrs.field(init=False, default=0)
    _finished_added: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)
    _sweeper: asyncio.Task[None] | None = attrs.field(init=False, default=None)
    _tasks: set[asyncio.Task[Any]] = attrs.field(init=False, factory=set)
    _maintenance: asyncio.Task[None] | None = attrs.field(init=False, default=None)
    # Set by a reload that changed the maintenance settings; the hourly loop waits on it.
    _maintenance_due: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)
    _closing: bool = attrs.field(init=False, default=False)
    # A shared store's row of the key `refuse_archived` last let through: (key, session id),
    # for the run `submit` accepts right after it (`AgentRun.accepted_in`).
    _checked: tuple[str, str] | None = attrs.field(init=False, default=None)
    # Set while no run is queued or running (the gateway's drain waits on it).
    _idle: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)

    def __attrs_post_init__(self) -> None:
        self.slots = RunSlots(self.config.max_concurrent)
        self._idle.set()
        # Through methods, not values: `configure` (a reload) replaces the config, and tests
        # pin the clock after construction.
        self._deps = SessionDeps(
            config=self._current_config,
            store=self.store,
            provider=self._provider,
            sink=self._sink,
            clock=self._now,
            slots=self.slots,
            spawn=self.spawn,
            session_idle=self._session_idle,
        )

    @property
    def marks(self) -> QueuedMarks:
        """A shared store's marks this process holds, renewed together (agents/session.py):
        the turns waiting for a run slot, and what another part of the gateway marks so."""
        return self._deps.queued

    def _current_config(self) -> AgentsConfig:
        return self.config

    def _now(self) -> int:
        return self.clock()

    def _provider(self, api: str) -> Provider:
        return self.providers.get(api)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Maintenance now, then hourly in a background task; ended runs expire on a timer."""
        if self._maintenance is not None:
            return
        await self.maintain()
        self._maintenance = self.spawn(self._maintain_hourly(), "session-maintenance")
        self._sweeper = self.spawn(self._expire_finished_runs(), "finished-run-expiry")

    def configure(self, config: AgentsConfig) -> None:
        """Hot reload: new runs use `config`; running runs finish with theirs. Changed
        maintenance settings bring the next pass forward (`MAINTENANCE_AFTER_RELOAD_S`)."""
        if config.maintenance != self.config.maintenance:
            self._maintenance_due.set()
        self.config = config
        self.slots.resize(config.max_concurrent)

    async def aclose(self) -> None:
        """Abort every run, let them commit, stop background work, close the providers.

        The store is the caller's: it stays open.
        """
        self._closing = True
        for run in list(self._active):
            run.abort("shutdown")
        if self._maintenance is not None:
            self._maintenance.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)
            for task in late:
                log.warning("shutdown_task_cancelled", task=task.get_name())
                task.cancel()
            if late:
                await asyncio.wait(late)
            for task in pending:
                # Retrieved, so none is reported as "never retrieved" when collected; a
                # provider task's failure was already handled by its run.
                if not task.cancelled():
                    task.exception()
        await self.providers.aclose()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A tracked background task: aclose() waits for it."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, listener: Listener, changes: ChangeInterest | None = None) -> None:
        """`listener` is called synchronously for every run event of every run and every
        session change. It must not block; an exception is logged and ignored. `changes`:
        whether it has anybody to tell of a session change at the moment (default: always);
        while no listener has, none is built."""
        self._sink.add(listener, changes)

    def remove_listener(self, listener: Listener) -> None:
        self._sink.remove(listener)

    # -- runs --------------------------------------------------------------------------

    def submit(self, request: TurnRequest) -> AgentRun:
        """Queue a turn on its session and return its run (no await: a subscription made
        right after this returns sees every event)."""
        if self._closing:
            raise AgentError("registry is closed")
        key_agent, _ = parse_session_key(request.session_key)
        if key_agent != request.agent_id:
            raise InvalidSessionKey(
                f"Session key '{request.session_key}' belongs to agent '{key_agent}',"
                f" not '{request.agent_id}'."
            )
        if self.config.agent(request.agent_id) is None:
            raise UnknownAgent(request.agent_id)
        chars = request.input_chars()
        if self._waiting and (
            len(self._waiting) >= self.max_waiting_turns
            or self._waiting_chars + chars > self.max_waiting_chars
        ):
            raise TurnsBacklogged(self.max_waiting_turns, self.max_waiting_chars)
        session = self._session(request.session_key)
        session.stateless = request.stateless
        session.new_key = request.new_key
        run = AgentRun(
            request,
            self.clock(),
            self.clock,
            self._sink,
            self._run_ended,
            on_start=self._run_started,
        )
        checked, self._checked = self._checked, None
        if checked is not None and checked[0] == request.session_key and not request.new_key:
            run.accepted_in = checked[1]
        self._waiting[run] = chars
        self._waiting_chars += chars
        self._active[run] = None
        self._idle.clear()
        self._by_id[run.id] = run
        session.enqueue(run)
        return run

    async def queued_marked(self, key: str) -> None:
        """Until a turn of `key` queued here that waits for a run slot is marked so in a shared
        store (`AgentSession.marked`): then another process's `chat.abort` stops it and its
        maintenance keeps the session. At once when no turn of `key` waits for a slot."""
        session = self._live.get(key)
        if session is not None:
            await session.marked()

    def run(self, run_id: str) -> AgentRun | None:
        """An active run, or an addressable one that ended in the last 10 minutes (fewer
        when the byte budget of ended runs evicted it earlier)."""
        run = self._by_id.get(run_id)
        if run is not None:
            return run
        self._expire_finished()
        entry = self._finished.get(run_id)
        return entry[1] if entry is not None else None

    @property
    def waiting(self) -> tuple[int, int]:
        """Accepted runs that have not started: (count, characters of their input)."""
        return len(self._waiting), self._waiting_chars

    @property
    def finished_runs(self) -> tuple[int, int]:
        """Ended runs kept for lookups: (count, bytes counted for them)."""
        return len(self._finished), self._finished_bytes

    def active_runs(self, session_key: str) -> list[AgentRun]:
        """The running run, then the queued ones in order."""
        session = self._live.get(session_key)
        return session.active_runs() if session is not None else []

    def abort_session(self, session_key: str, reason: str = "aborted") -> list[str]:
        """Abort the session's running and queued runs; the ids of those aborted."""
        session = self._live.get(session_key)
        return session.abort_all(reason) if session is not None else []

    async def wait_idle(self) -> None:
        """Until no run is queued or running."""
        await self._idle.wait()

    def abort_all(self, reason: str = "aborted") -> list[str]:
        """Abort every running and queued run (shutdown after the drain time)."""
        return [run.id for run in list(self._active) if run.abort(reason)]

    def stats(self) -> RunStats:
        running = sum(1 for run in self._active if run.state == RunState.RUNNING)
        queued = sum(1 for run in self._active if run.state == RunState.QUEUED)
        return RunStats(running, queued, self.slots.limit, len(self._live))

    def _run_started(self, run: AgentRun) -> None:
        self._waiting_chars -= self._waiting.pop(run, 0)

    def _run_ended(self, run: AgentRun) -> None:
        self._run_started(run)  # one that never started no longer waits either
        self._active.pop(run, None)
        if not self._active:
            self._idle.set()
        if run.started_at is None:
            # Its session announces the end of a turn it ran; one that never started (aborted
            # while queued, its agent gone) ends here. As on OpenClaw, every terminal event is
            # followed by `sessions.changed` END, whose session no longer lists the run.
            session = self._live.get(run.session_key)
            if session is not None and session.row is not None:
                session.publish_change(phase=LifecyclePhase.END, run_id=run.id)
        if self._by_id.get(run.id) is run:
            del self._by_id[run.id]
        if not run.addressable:
            return  # nobody can name it again: nothing to keep
        size = run.retained_bytes()
        previous = self._finished.pop(run.id, None)
        if previous is not None:
            self._finished_bytes -= previous[2]
        self._finished[run.id] = (time.monotonic() + self.finished_run_ttl_s, run, size)
        self._finished_bytes += size
        while self._finished and (
            len(self._finished) > FINISHED_RUNS_MAX
            or self._finished_bytes > self.finished_runs_max_bytes
        ):
            self._drop_oldest_finished()
        self._finished_added.set()

    def _drop_oldest_finished(self) -> None:
        _, (_, _, size) = self._finished.popitem(last=False)
        self._finished_bytes -= size

    def _expire_finished(self) -> None:
        now = time.monotonic()
        while self._finished:
            expires, _, _ = next(iter(self._finished.values()))
            if expires > now:
                break
            self._drop_oldest_finished()

    async def _expire_finished_runs(self) -> None:
        """Ended runs leave when their time is up, whether or not anyone looks them up.

        One task for all of them: the cache is in expiry order (one TTL for all), so it only
        ever sleeps until the oldest entry's expiry. A `call_later` per run measured 340
        bytes and 2.6 µs a run (a handle on the loop's heap) on top of the cache entry.
        """
        coalesce = min(_EXPIRY_COALESCE_S, self.finished_run_ttl_s / 10)
        while True:
            if not self._finished:
                self._finished_added.clear()
                await self._finished_added.wait()
                continue
            expires, _, _ = next(iter(self._finished.values()))
            delay = expires - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay + coalesce)
            self._expire_finished()

    # -- sessions ----------------------------------------------------------------------

    def _session(self, key: str) -> AgentSession:
        session = self._live.get(key)
        if session is None:
            agent_id, _ = parse_session_key(key)
            session = AgentSession(key, agent_id, self._deps)
            # Room is made before it joins: it is not busy yet, so a trim after would evict
            # it when every other session is busy, and the caller's turn would run on a
            # session nobody else finds (a second turn of the key would run beside it).
            self._trim(room=1)
            self._live[key] = session
        else:
            self._live.move_to_end(key)
        return session

    def _session_idle(self, session: AgentSession) -> None:
        """Called by a session that may have become idle: keep the LRU within bounds."""
        if session.stateless and not session.busy and self._live.get(session.key) is session:
            # Nobody names a stateless key again: keeping it live would only pin memory.
            del self._live[session.key]
        if len(self._live) > self.max_live_sessions:
            self._trim()

    def _trim(self, room: int = 0) -> None:
        excess = len(self._live) + room - self.max_live_sessions
        if excess <= 0:
            return
        # Least recently used first; stops as soon as enough idle ones are found, so a
        # full map costs one or two steps per new session, not a scan.
        idle: list[str] = []
        for key, session in self._live.items():
            if not session.busy:
                idle.append(key)
                if len(idle) >= excess:
                    break
        for key in idle:
            del self._live[key]

    def _publish_deleted(self, key: str, agent_id: str) -> None:
        """`sessions.changed` for a session that is gone (no live object may be left)."""
        if self._sink.wants_changes():
            change = SessionChange(key, agent_id, self.clock(), None, ChangeReason.DELETE)
            self._sink.publish(change)

    def _info(self, row: SessionRow) -> SessionInfo:
        session = self._live.get(row.key)
        active = session.active_run_ids() if session is not None else ()
        return SessionInfo.from_row(row, self.config.main_key, active)

    async def list_sessions(
        self,
        *,
        limit: int = 100,
        agent_id: str | None = None,
        search: str | None = None,
        label: str | None = None,
        active_minutes: float | None = None,
        archived: bool | None = None,
    ) -> SessionList:
        """`archived`: only the archived sessions (True), the others (False), or all."""
        page = await self.store.list(
            limit=limit,
            agent_id=agent_id,
            search=search,
            label=label,
            active_minutes=active_minutes,
            now=self.clock(),
            archived=archived,
        )
        return SessionList(tuple(self._info(row) for row in page.rows), page.total_count)

    async def get_session(self, key: str) -> SessionInfo | None:
        """The session of `key` as the store has it, with this process's runs of it.

        A live session's cached row answers on a store of its own. A shared store's row is
        read every time: another process may have reset, deleted, patched it or run a turn
        since, and the event bus, which tells of these, loses what is said while a process
        is away from the database (and says nothing unless a process has WebSocket clients).
        So a change committed on one process shows on every other at once, in the next read.
        The live row still answers when the store has none and a turn of the key runs here:
        a minted key's row is written with its first turn."""
        session = self._live.get(key)
        if session is not None and session.row is not None and not self.store.shared:
            return session.info()
        row = await self.store.get(key)
        if row is None and session is not None and session.row is not None and session.busy:
            return session.info()
        return self._info(row) if row is not None else None

    async def history(self, key: str, limit: int = 200, *, max_chars: int = 0) -> Transcript:
        """The session's last `limit` messages; with `max_chars`, the first page of them
        (`Store.history`): the next ones come from the store, before the oldest seq."""
        info = await self.get_session(key)
        if info is None:
            return Transcript(None, (), 0)
        found = await self.store.history(info.session_id, limit, max_chars=max_chars)
        return Transcript(info, found.messages, found.total)

    async def patch(
        self,
        key: str,
        *,
        label: tuple[str | None] | None = None,
        archived: bool | None = None,
        pinned: bool | None = None,
        expected_session_id: str | None = None,
    ) -> SessionInfo | None:
        """Set or clear the label (`label`, in a 1-tuple), archive the session (its runs
        aborted, no new work starts on it) or restore it, pin or unpin it: those given, in one
        store write, so a refusal of one (a reset or delete since, an archived session pinned)
        leaves none written. An unknown key gets an empty session for a label or a pin; None
        when an archive or restore found no session. With `expected_session_id`,
        SessionChanged unless the key holds that session: checked in the store's write (a
        reset since, here or on another process, is seen), and for an archive also before
        the runs are aborted (a session that changed keeps its turns). An archive waits for
        the aborted runs to commit (as OpenClaw drains them) before it writes."""
        makes = label is not None or pinned is not None  # an unknown key gets a session
        agent_id = await self._agent_of_kept_or_new(key) if makes else parse_session_key(key)[0]
        sid = expected_session_id
        if archived and sid is not None:  # before the runs are aborted
            kept = await self.store.get(key)
            if kept is not None and kept.session_id != sid:
                raise SessionChanged(key)
        session = self._session(key)

        async def write() -> SessionRow | None:
            return await self.store.patch(
                key, agent_id, self.clock(), label=label, archived=archived, pinned=pinned,
                session_id=sid,
            )  # fmt: skip

        with session.hold():
            if archived:
                session.abort_all("archive")
                async with session.lane, self._stopped_elsewhere(key):
                    row = await write()
            else:
                row = await write()
            if row is not None:
                session.row = row
        if row is None:
            return None
        session.publish_change(ChangeReason.PATCH, row=row)
        return self._info(row)

    async def create(self, key: str, label: str | None = None) -> tuple[SessionInfo, bool]:
        """The session of `key`, created empty with `label` if the key has none; True when
        created. An existing session is left as it is (its label too)."""
        agent_id = await self._agent_of_kept_or_new(key)
        session = self._session(key)
        with session.hold():
            row, created = await self.store.create(key, agent_id, self.clock(), label=label)
            if created:  # an existing one's row in memory may be newer (a turn going on)
                session.row = row
        if created:
            session.publish_change(ChangeReason.CREATE, row=row)
        return self._info(row), created

    async def reset(self, key: str) -> SessionInfo:
        """Abort the session's runs, then a new session id with zeroed counters (§5).

        An archived session raises SessionArchived (OpenClaw's: a reset is new work, refused
        until the session is restored), checked again under the lane: an archive that came
        first leaves the session as it was, its id and its archive mark."""
        agent_id = await self._agent_of_kept_or_new(key)
        await self.refuse_archived(key)  # before the runs are aborted too
        self._checked = None  # no turn is accepted by this check
        session = self._session(key)
        with session.hold():
            session.abort_all("reset")
            # The lane: the aborted turn commits to the old transcript before the reset.
            async with session.lane, self._stopped_elsewhere(key):
                kept = await self.store.get(key)
                if kept is not None and kept.archived_at is not None:
                    raise SessionArchived(key)
                row = await self.store.reset(key, agent_id, self.clock())
                session.row = row
        session.publish_change(ChangeReason.RESET, row=row)
        return self._info(row)

    async def _agent_of_kept_or_new(self, key: str) -> str:
        """The agent of `key`, when a session may be changed or created on it: the session of
        an agent removed from the config is kept (§4), but none is created for an agent that
        is not configured (its runs would fail with `Unknown agent`)."""
        agent_id, _ = parse_session_key(key)
        if self.config.agent(agent_id) is None and await self.store.get(key) is None:
            raise UnknownAgent(agent_id)
        return agent_id

    async def delete(
        self,
        key: str,
        delete_transcript: bool = True,
        expected_session_id: str | None = None,
        *,
        archived_only: bool = False,
    ) -> bool:
        """Abort the session's runs and delete it; False when it did not exist.

        Main sessions are refused. A later turn on the key starts a fresh session. With
        `expected_session_id`, a key that holds no session of that id (any more) raises
        SessionChanged, checked under the session's lock: no reset (or delete and new turn)
        can come between the check and the delete. With `archived_only`, a key that holds no
        archived session raises SessionNotArchived, checked as that.
        """
        if is_main_key(key, self.config.main_key):
            raise InvalidSessionKey(f"Cannot delete the main session ({key}).")
        parse_session_key(key)
        if expected_session_id is not None or archived_only:
            # Before the runs are aborted too: a session that changed keeps its turns.
            await self._still(key, expected_session_id, archived_only)
        session = self._session(key)
        with session.hold():
            session.abort_all("delete")
            async with session.lane, self._stopped_elsewhere(key):
                if expected_session_id is not None or archived_only:
                    await self._still(key, expected_session_id, archived_only)
                deleted = await self.store.delete(
                    key, self.clock(), delete_transcript=delete_transcript
                )
                session.row = None
        self._publish_deleted(key, session.agent_id)
        return deleted

    async def _still(self, key: str, session_id: str | None, archived: bool = False) -> None:
        """Raise SessionChanged unless the store holds session `session_id` under `key`, and
        with `archived` SessionNotArchived unless that session is archived (OpenClaw's order:
        the archive first)."""
        row = await self.store.get(key)
        if archived and (row is None or row.archived_at is None):
            raise SessionNotArchived(key)
        if session_id is not None and (row is None or row.session_id != session_id):
            raise SessionChanged(key)

    async def refuse_archived(self, key: str) -> None:
        """Raise SessionArchived when `key`'s session is archived: no new work starts on it.
        The live session's row when there is one (archiving here updates it), without a
        lookup on every turn of a live session; a shared store's row, which another process
        may have archived. A turn checks again under the turn lock (AgentSession).

        The callers submit the turn right after this returns, with no await between: the
        shared store's row read here is the session the turn is accepted in. Kept until the
        caller's next await at most: a turn refused after the check (a full backlog) must not
        leave it to the next turn of the key, accepted without a check of its own later (a
        webhook's wake), perhaps after a reset elsewhere."""
        if self.store.shared:
            row = await self.store.get(key)
            archived = row is not None and row.archived_at is not None
            checked = (key, row.session_id) if row is not None and not archived else None
            self._checked = checked
            if checked is not None:
                asyncio.get_running_loop().call_soon(self._forget_checked, checked)
        else:
            info = await self.get_session(key)
            archived = info is not None and info.archived_at is not None
        if archived:
            raise SessionArchived(key)

    def _forget_checked(self, checked: tuple[str, str]) -> None:
        if self._checked is checked:
            self._checked = None

    @asynccontextmanager
    async def _stopped_elsewhere(self, key: str) -> AsyncIterator[None]:
        """A shared store: another process's turn of the key is aborted, and held off while
        the caller changes the session, as the lane holds off this process's turns. Else
        the aborted turn would commit afterwards, into the new transcript or a deleted row."""
        store = self.store
        if store.bus is not None and await store.turn_running_elsewhere(key):
            await store.bus.abort_elsewhere(key, None)
        async with store.turn_lock(key):
            yield

    # -- maintenance -------------------------------------------------------------------

    async def maintain(self) -> list[SessionRow]:
        """One maintenance pass (§5); returns the prune candidates.

        The store works in batches, each one job on its thread, so turns get in between;
        a pass stops after `MAINTENANCE_PASS_S` and the next one goes on from there.
        """
        config = self.config
        enforce = config.maintenance.mode == "enforce"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAINTENANCE_PASS_S
        candidates: list[SessionRow] = []
        more = False
        while True:
            protected = {run.session_key for run in self._active}
            try:
                batch = await self.store.prune(
                    config.maintenance,
                    self.clock(),
                    protected,
                    main_key=config.main_key,
                    limit=self.maintenance_batch,
                )
            except StoreError as exc:
                log.error("session_maintenance_failed", error=str(exc))
                break
            candidates += batch
            if enforce:
                self._forget(batch)
            # In warn mode nothing changes between batches: the first one is the report.
            more = len(batch) >= self.maintenance_batch
            if not (enforce and more) or loop.time() >= deadline:
                break
        if not candidates:
            return candidates
        keys = [row.key for row in candidates[:_LOGGED_KEYS_MAX]]
        if not enforce:
            log.warning("session_prune_candidates", count=len(candidates), keys=keys, more=more)
            return candidates
        log.info("session_pruned", count=len(candidates), keys=keys, more=more)
        return candidates

    def _forget(self, pruned: list[SessionRow]) -> None:
        """Pruned rows: drop their idle live sessions and kept replay windows, tell the
        listeners."""
        for row in pruned:
            # A turn racing the prune recreates the transcript under its id, from seq 1: a
            # window kept from before would hide those messages behind its own last seq.
            self._deps.histories.drop(row.key)
            session = self._live.get(row.key)
            if session is not None:
                session.row = None
                if not session.busy:
                    del self._live[row.key]
            self._publish_deleted(row.key, row.agent_id)

    async def _maintain_hourly(self) -> None:
        while True:
            try:
                async with asyncio.timeout(MAINTENANCE_INTERVAL_S):
                    await self._maintenance_due.wait()
            except TimeoutError:
                pass
            else:
                await asyncio.sleep(self.maintenance_after_reload_s)
            self._maintenance_due.clear()  # the pass reads the settings of the last reload
            try:
                await self.maintain()
            except Exception:
                # Housekeeping must not die with one bad pass; the next hour tries again.
                log.exception("session_maintenance_crashed")
