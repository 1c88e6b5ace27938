"""Sessions: the per-key lane that runs turns one at a time, and the turn itself.

`AgentSession` keeps a FIFO of its queued runs and at most one worker task that executes
them in order (agents-sessions.md §2.3). Before each run the worker takes a slot of the
registry's global `RunSlots`, then the session's lane (a lock reset/delete also take, so they
never interleave with a turn). A session's queued runs never hold a global slot: only the
worker waits for one, and only when its session has nothing running. With a shared store the
run then waits for another process's turn of its key (the store's turn lock), still queued:
an abort ends it at once and cancels that wait.

A session gets what it needs of its owner as one `SessionDeps` (the registry makes one for
all its sessions): it never sees the registry, and a test can build one without it.

The turn (§2.2, §3, §6.1): lifecycle start → for each model of the chain a `model` event and
an attempt → `assistant` events → one `usage` event → one store transaction → the terminal
lifecycle event. The provider runs in its own task so abort and the run timeout can cancel
it (which closes a network provider's connection) while the run goes on to commit; it
delivers its events to the session as they are decoded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import attrs
import structlog

from agents.config import API_ECHO, ECHO_PROVIDER, AgentConfig, AgentsConfig, ModelRef
from agents.errors import (
    AgentError,
    RunTimedOut,
    SessionArchived,
    StoreError,
    UnansweredResult,
    UnknownAgent,
    UpstreamError,
    UpstreamTimeout,
    refused,
    stored_error,
)
from agents.events import (
    ChangeReason,
    EventSink,
    LifecyclePhase,
    SessionChange,
    SessionInfo,
    SessionStatus,
    Stream,
    StreamedText,
    TextPieces,
    ToolPhase,
)
from agents.history import HistoryCache, SessionHistory, cut_short, window_start
from agents.providers.base import (
    ChatMessage,
    Finish,
    PartialUsage,
    Provider,
    ProviderEvent,
    ProviderRequest,
    ReasoningDelta,
    SignedThinking,
    StopReason,
    TextDelta,
    ThinkingBlock,
    ToolCall,
    ToolCallDelta,
    Usage,
    format_refusal,
    word_count,
)
from agents.providers.images import image_refusal
from agents.runs import AgentRun, ReplyPart, RunOutcome, RunStatus, TurnRequest, terminal_data
from agents.store import SessionRow, StoredMessage, TurnRecord, images_meta
from agents.store_protocol import Store
from agents.transcript import (
    Replayed,
    new_inputs,
    paired,
    replay_before,
    stored_part,
    unanswerable,
    with_tool_names,
)

log = structlog.get_logger(__name__)


@attrs.define(eq=False)
class RunSlots:
    """The global FIFO semaphore of running turns (`agents.defaults.maxConcurrent`).

    `resize` applies to later acquisitions: running turns keep their slots when it shrinks.
    """

    limit: int
    active: int = 0
    _waiters: deque[asyncio.Future[None]] = attrs.field(factory=deque)

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just before the cancellation: pass it on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    @property
    def free(self) -> bool:
        """An `acquire` now takes a slot at once."""
        return self.active < self.limit and not self._waiters

    def release(self) -> None:
        self.active -= 1
        self._grant()

    @asynccontextmanager
    async def lent(self) -> AsyncIterator[None]:
        """The caller's slot, given back while it waits for something else and taken again,
        in line, after. The caller holds its slot when this ends, cancelled or not, so that
        its own release stays the one that balances its acquire. A wait that ends in an
        error or a cancel (an abort) takes it back at once, over the limit: the caller is
        leaving, and must not wait behind other sessions' turns to give it back."""
        self.release()
        try:
            yield
        except BaseException:
            self.active += 1  # held at once, over the limit, until the caller's release
            raise
        try:
            await self.acquire()
        except asyncio.CancelledError:
            self.active += 1
            raise

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.active < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.active += 1  # handed over: the waiter owns the slot when it wakes
                fut.set_result(None)


# A shared store's mark of a session whose turn waits here for a run slot, holding no turn
# lock yet: a claim naming the session (`Store.claim_call`, under a scope of its own), so that
# another process's `chat.abort` of the session finds the turn (`claimed_run_going_on`) and
# its maintenance keeps the session (`prune`). Renewed while the turn waits, as a call's claim
# is (a process that dies leaves it for one lease), given up when the turn runs. The marks of
# a process are renewed together, one statement every QUEUED_LEASE_S / 3 (`QueuedMarks`).
QUEUED_SCOPE_PREFIX = "queued:"
QUEUED_LEASE_S = 15.0


@attrs.define(eq=False)
class QueuedMarks:
    """The marks this process holds, and the one task that renews them all while any is
    held: a thousand turns waiting for a slot cost one UPDATE a period, not a thousand."""

    store: Store
    spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]
    # scope → token, key, answer (the claim's, made again with it)
    _held: dict[str, tuple[str, str, str | None]] = attrs.field(factory=dict)
    _emptied: asyncio.Event = attrs.field(factory=asyncio.Event)
    _renewer: asyncio.Task[None] | None = None

    def mark(self, key: str) -> QueuedMark:
        mark = QueuedMark(self, key)
        self.spawn(mark.keep(), f"queued-mark {key}")
        return mark

    def hold(self, scope: str, token: str, key: str, answer: str | None = None) -> None:
        """Renew the mark of `scope`, claimed with `answer` (`Store.claim_call`), until
        `let_go`."""
        self._held[scope] = token, key, answer
        self._emptied.clear()
        if self._renewer is None:
            self._renewer = self.spawn(self._renew(), "queued-marks")

    def let_go(self, scope: str) -> None:
        self._held.pop(scope, None)
        if not self._held:
            self._emptied.set()

    async def _renew(self) -> None:
        # No await between the last look at `_held` and forgetting the task: a mark held
        # after that starts a renewer of its own.
        while self._held:
            try:
                async with asyncio.timeout(QUEUED_LEASE_S / 3):
                    await self._emptied.wait()
            except TimeoutError:
                held = list(self._held.items())
                try:
                    kept = await self.store.extend_hook_calls(
                        [(scope, token) for scope, (token, _, _) in held],
                        int(QUEUED_LEASE_S * 1000),
                    )
                    renewed = set(kept)
                    await self._make_again([m for m in held if m[0] not in renewed])
                except StoreError as exc:  # kept until their lease is out: tried again
                    log.warning(
                        "queued_marks_renewal_failed", count=len(self._held), error=str(exc)
                    )
        self._renewer = None

    async def _make_again(self, lost: list[tuple[str, tuple[str, str, str | None]]]) -> None:
        """The marks a renewal found gone while still held: their lease ran out while the
        database was away, and a claim forgot them. Made again (as `QueuedMark.keep` made
        them: another process's abort finds the turn, its maintenance keeps the session; with
        the answer they were claimed with); one whose turn stopped waiting meanwhile is
        released again after, as it was."""
        lease_ms = int(QUEUED_LEASE_S * 1000)
        for scope, (token, key, answer) in lost:
            if scope not in self._held:
                continue  # released since the renewal was sent
            await self.store.claim_call(scope, token, key, lease_ms, answer=answer)
            if scope not in self._held:
                await self.store.release_hook_call(scope, token)


@attrs.define(eq=False)
class QueuedMark:
    """One wait of a session's worker for a run slot: `keep` holds the mark until `end`."""

    marks: QueuedMarks
    key: str
    _ended: asyncio.Event = attrs.field(factory=asyncio.Event)
    # Set once the mark is in the store, or will never be (its write failed, or the turn
    # got its slot first): the store's claim is bounded by its statement timeout.
    _settled: asyncio.Event = attrs.field(factory=asyncio.Event)

    def end(self) -> None:
        self._ended.set()
        self._settled.set()

    async def written(self) -> None:
        """Until another process can see the mark (or never will: see `_settled`)."""
        await self._settled.wait()

    async def keep(self) -> None:
        store, token = self.marks.store, uuid.uuid4().hex
        scope, lease_ms = QUEUED_SCOPE_PREFIX + token, int(QUEUED_LEASE_S * 1000)
        try:
            if self._ended.is_set():
                return
            try:
                await store.claim_call(scope, token, self.key, lease_ms)
            finally:
                self._settled.set()
            self.marks.hold(scope, token, self.key)
            try:
                await self._ended.wait()
            finally:
                self.marks.let_go(scope)
        except StoreError as exc:
            # Kept until its lease is out, or never made: the turn goes on either way.
            log.warning("queued_mark_failed", session_key=self.key, error=str(exc))
        except asyncio.CancelledError:
            await self._release(scope, token)
            raise
        await self._release(scope, token)

    async def _release(self, scope: str, token: str) -> None:
        """Forget the mark, cancelled or not: cut short by a shutdown's last resort, it was
        kept for the lease's 15 s, and another process's abort or webhook retry meanwhile saw
        a queued turn that would never run. Bounded by the statement timeout."""
        release = asyncio.ensure_future(self.marks.store.release_hook_call(scope, token))
        try:
            await asyncio.shield(release)
        except asyncio.CancelledError:
            with suppress(StoreError):
                await release  # the cancel is delivered once: this wait is not cut short
            raise
        except StoreError:
            pass  # kept until its lease is out


@attrs.frozen
class SessionDeps:
    """What a session needs of its owner: one for all the sessions of a registry."""

    # The current config: a run reads it once, when it starts, and keeps it (hot reload).
    config: Callable[[], AgentsConfig]
    store: Store
    provider: Callable[[str], Provider]  # by `api` name; KeyError when it is not implemented
    sink: EventSink  # where session changes go (runs publish their events themselves)
    clock: Callable[[], int]  # Unix ms
    slots: RunSlots  # shared by every session: the global limit of running turns
    # Starts a tracked task: the owner's shutdown waits for the worker and provider tasks.
    spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]
    # Told whenever the session may have become idle, so its owner can let it go.
    session_idle: Callable[[AgentSession], None]
    # The replay windows of the sessions used last, by key (named sessions only).
    histories: HistoryCache = attrs.Factory(HistoryCache)
    # A shared store's marks of the turns waiting for a run slot, renewed together.
    queued: QueuedMarks = attrs.Factory(
        lambda deps: QueuedMarks(deps.store, deps.spawn), takes_self=True
    )


@attrs.define
class _CallSoFar:
    """A tool call as its fragments arrive. The arguments are kept in pieces and joined once
    (`TextPieces`): added to the text so far, each piece would copy all of it, and a megabyte
    of arguments in 8-character pieces (a model streams them a token at a time) some 60 GB."""

    id: str
    name: str
    pieces: TextPieces = attrs.Factory(TextPieces)
    position: int = -1  # among the calls shown, once it has its name

    def tool_call(self) -> ToolCall:
        return ToolCall(self.id, self.name, self.pieces.joined())


@attrs.define
class _Attempts:
    """What the provider task shares with the run's driver, which reads it after a cancel."""

    reply: StreamedText = attrs.Factory(StreamedText)  # the assistant text
    usage: Usage | None = None
    partial_usage: PartialUsage | None = None  # the one count reported, without `usage`
    finish: StopReason = StopReason.STOP
    ref: ModelRef | None = None
    api: str | None = None
    thought: StreamedText = attrs.Factory(StreamedText)  # the reasoning text
    thinking: tuple[ThinkingBlock, ...] = ()  # signed (Anthropic's), given at the reply's end
    calls: dict[int, _CallSoFar] = attrs.field(factory=dict)  # by the provider's index
    # The calls that got a name, in the order they started: what the clients see. One
    # without (a reply broken off after the id) is no call a client could make, and OpenAI
    # and Anthropic refuse it in a replayed context.
    named: list[_CallSoFar] = attrs.field(factory=list)
    parts: list[ReplyPart] = attrs.field(factory=list)  # the order they began in
    part_starts: list[int] = attrs.field(factory=list)  # `RunOutcome.part_starts`
    # A model of the chain refused the request as bad (`agents.errors.refused`).
    refusal: AgentError | None = None

    @property
    def produced(self) -> bool:
        """Something reached the run's consumers: no other model may take over."""
        return bool(self.reply.length or self.thought.length or self.calls)

    @property
    def text(self) -> str:
        return str(self.reply)

    @property
    def reasoning(self) -> str:
        return str(self.thought)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(call.tool_call() for call in self.named)


@attrs.define(eq=False)
class AgentSession:
    """One live session key: its queued runs, its worker, its cached row."""

    key: str
    agent_id: str  # from the key; may name an agent that is no longer configured
    _deps: SessionDeps
    row: SessionRow | None = None  # cached store row; None until loaded, or after delete
    stateless: bool = False  # its last turn came without a key (HTTP)
    new_key: bool = False  # its last turn's key was minted for it (TurnRequest.new_key)
    _pending: deque[AgentRun] = attrs.field(factory=deque)
    _running: AgentRun | None = None
    _lane: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    _worker: asyncio.Task[None] | None = None
    # The mark of the next turn while it waits here for a run slot (a shared store).
    _mark: QueuedMark | None = None
    _holds: int = 0  # reset/delete/patch in progress
    # An abort cancelled the worker's wait for another process's turn of the key.
    _wait_aborted: bool = False
    # The worker waits for a global slot (`_slot_wait`), and an abort that emptied the queue
    # cancelled that wait (`_slot_wait_aborted`): a session with nothing queued lets go at
    # once, instead of holding its place in line (and its memory) until a slot frees.
    _slot_wait: bool = False
    _slot_wait_aborted: bool = False

    # -- queue -------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Not evictable: something is queued, running or holding the session."""
        return bool(self._pending) or self._worker is not None or self._holds > 0

    def active_runs(self) -> list[AgentRun]:
        """Running then queued runs, in execution order (a run that ended before its worker
        let go of it is neither)."""
        running = self._running
        runs = [running] if running is not None and not running.ended else []
        return runs + list(self._pending)

    def active_run_ids(self) -> tuple[str, ...]:
        return tuple(run.id for run in self.active_runs())

    def info(self, row: SessionRow | None = None) -> SessionInfo | None:
        row = row or self.row
        if row is None:
            return None
        return SessionInfo.from_row(row, self._deps.config().main_key, self.active_run_ids())

    def publish_change(
        self,
        reason: ChangeReason | None = None,
        *,
        phase: LifecyclePhase | None = None,
        run_id: str | None = None,
        row: SessionRow | None = None,
    ) -> None:
        """Tell the listeners about a change of this session (`sessions.changed`)."""
        sink = self._deps.sink
        if sink.wants_changes():
            change = SessionChange(
                self.key, self.agent_id, self._deps.clock(), self.info(row), reason, phase, run_id
            )
            sink.publish(change)

    def enqueue(self, run: AgentRun) -> None:
        run.queue_on(self._remove)
        self._pending.append(run)
        if self._worker is None:
            # The first turn's mark is started here, not in the worker (a task that runs
            # later): `marked`, right after this returns, finds it.
            self._mark = self._mark_waiting()
            self._worker = self._deps.spawn(self._work(), f"session-worker {self.key}")

    async def marked(self) -> None:
        """Until the mark of this session's turn waiting here for a run slot is in a shared
        store, so that another process's `chat.abort` and maintenance see it: an answer that
        names the turn waits for it (none when the turn holds a slot or none is needed)."""
        if self._mark is not None:
            await self._mark.written()

    def _remove(self, run: AgentRun) -> None:
        if run in self._pending:
            self._pending.remove(run)
            worker = self._worker
            waiting = self._slot_wait and not self._slot_wait_aborted
            if not self._pending and waiting and worker is not None:
                self._slot_wait_aborted = True
                worker.cancel()
        elif run is self._running and self._worker is not None:
            # Taken off the queue, it waits for another process's turn of the key (a shared
            # store's turn lock): the run ends now, and the worker stops waiting for it.
            self._wait_aborted = True
            self._worker.cancel()
        if run.session_id is None and self.row is not None:
            run.session_id = self.row.session_id

    def abort_all(self, reason: str) -> list[str]:
        """Abort every queued and running run; the ids of those this call aborted."""
        return [run.id for run in self.active_runs() if run.abort(reason)]

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep this object live (not evicted) for an operation on the session."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            self._deps.session_idle(self)

    @property
    def lane(self) -> asyncio.Lock:
        return self._lane

    async def _work(self) -> None:
        slots = self._deps.slots
        try:
            while self._pending:
                mark = self._mark = self._mark or self._mark_waiting()
                try:
                    # The slot first, then the lane: a reset waiting for the lane then only
                    # waits for the (aborted) running turn, never for a global slot.
                    if not await self._slot():
                        continue  # the queue was emptied meanwhile
                    try:
                        async with self._lane:
                            if not self._pending:
                                break  # everything queued was aborted meanwhile
                            run = self._pending.popleft()
                            self._running = run
                            try:
                                await self._run_guarded(run, mark)
                            finally:
                                self._running = None
                    finally:
                        slots.release()
                finally:
                    if self._mark is mark:
                        self._mark = None
                    if mark is not None:
                        mark.end()
        finally:
            if self._mark is not None:  # the next turn's, and it was aborted meanwhile
                self._mark.end()
                self._mark = None
            self._worker = None
            self._deps.session_idle(self)

    def _mark_waiting(self) -> QueuedMark | None:
        """A shared store's `QueuedMark` while the next turn waits for a run slot (none when
        one is free: the turn takes its lock at once); a minted key is known nowhere else."""
        store = self._deps.store
        if not store.shared or self.new_key or self._deps.slots.free:
            return None
        return self._deps.queued.mark(self.key)

    async def _slot(self) -> bool:
        """Wait for a global slot; False, holding none, when an abort emptied the queue
        meanwhile (a run queued after that abort is then still in it)."""
        self._slot_wait = True
        try:
            await self._deps.slots.acquire()
            return True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._slot_wait_aborted and task is not None and task.uncancel() == 0:
                return False
            raise
        finally:
            self._slot_wait = False
            self._slot_wait_aborted = False

    async def _run_guarded(self, run: AgentRun, mark: QueuedMark | None = None) -> None:
        store = self._deps.store
        try:
            # A shared store: another process may run a turn of this key too. Its lock
            # queues us behind that turn as the lane queues us behind ours. A key minted for
            # this turn's request is known nowhere else yet: its turn takes no lock (two of a
            # stateless turn's three round trips to PostgreSQL).
            if self.new_key:
                run.start()
                await self._execute(run)
            else:
                # Waiting for another process's turn, the run slot goes to other sessions,
                # as a queued turn of a session busy here holds none; and the run is still
                # queued: an abort ends it at once.
                async with store.turn_lock(self.key, while_waiting=self._deps.slots.lent):
                    run.start()
                    if mark is not None:
                        mark.end()  # the turn lock says it from here
                        if self._mark is mark:
                            self._mark = None
                    await self._execute(run)
                    if self._pending and self._mark is None and store.shared:
                        # The next turn is marked before the lock goes: between the two,
                        # another process's abort or maintenance found nothing of it. One
                        # write more for a turn queued behind another of its session.
                        self._mark = self._deps.queued.mark(self.key)
                        await self._mark.written()
        except asyncio.CancelledError:
            if self._wait_abort_taken_back():
                return  # the run ended with its abort, while it waited for the turn lock
            self._end_broken(run)  # cancelled by the shutdown fallback
            raise
        except StoreError as exc:
            # Taking or giving back the lock failed (the database went away); the run's own
            # store failures are handled inside _execute.
            log.error("turn_lock_failed", session_key=self.key, run_id=run.id, error=str(exc))
            if not run.ended:
                if run.started_at is None:
                    run.end_unstarted(RunStatus.FAILED, exc)
                else:
                    self._end_broken(run)
        except Exception:
            # A bug of ours: the run must still end, and the next turn must still run.
            log.exception("run_crashed", session_key=self.key, run_id=run.id)
            self._end_broken(run)
        except BaseException:
            self._end_broken(run)
            raise
        finally:
            # The wait's cleanup failed in its own way instead of being cancelled.
            self._wait_abort_taken_back()

    def _wait_abort_taken_back(self) -> bool:
        """Whether an abort cancelled the worker's wait for the turn lock, and nothing else
        cancelled it: the worker then goes on with the next run."""
        if not self._wait_aborted:
            return False
        self._wait_aborted = False
        task = asyncio.current_task()
        return task is not None and task.uncancel() == 0

    def _end_broken(self, run: AgentRun) -> None:
        if run.ended:
            return
        error = AgentError("run ended unexpectedly")
        if run.started_at is None:
            run.end_unstarted(RunStatus.FAILED, error)
            return
        outcome = RunOutcome(
            RunStatus.FAILED, StopReason.ERROR, "", Usage(0, 0), error, run.started_at,
            self._deps.clock(),
            None, None, run.session_id,
        )  # fmt: skip
        # As every turn that started ends: its `sessions.changed` END too, or the session
        # stays `running` in the clients' lists (an unstarted run's is the registry's).
        self._finish(run, outcome, run.started_at)

    # -- the turn ----------------------------------------------------------------------

    async def _load_row(
        self, now: int, accepted_in: str | None = None
    ) -> tuple[SessionRow, bool] | None:
        """The session's row, created for a new key; True when created by this call. None
        when the key no longer holds session `accepted_in` (a shared store's: another process
        reset or deleted it since); `self.row` is then the key's row, if any."""
        # A shared store's row may have changed on another process (a turn, a reset): it is
        # read again under the turn lock.
        if self.row is not None and not self._deps.store.shared:
            return self.row, False
        store = self._deps.store
        if self.new_key:
            # A key minted for this turn (a new uuid): nothing to read, and the row is written
            # with the turn, in its transaction.
            row, created = store.unsaved_row(self.key, self.agent_id, now), True
        elif accepted_in is not None:
            kept = await store.get(self.key)
            if kept is None or kept.session_id != accepted_in:
                self.row = kept
                return None
            row, created = kept, False
        else:
            row, created = await store.get_or_create(
                self.key, self.agent_id, now, stateless=self.stateless
            )
        self.row = row
        if created:
            self.publish_change(ChangeReason.CREATE, row=row)
        return row, created

    async def _execute(self, run: AgentRun) -> None:
        deps = self._deps
        config = deps.config()  # this run keeps this config even if it is reloaded
        clock = deps.clock
        agent = config.agent(run.agent_id)
        if agent is None:
            run.end_unstarted(RunStatus.FAILED, UnknownAgent(run.agent_id))
            return
        try:
            loaded = await self._load_row(clock(), run.accepted_in)
        except StoreError as exc:
            log.error("session_load_failed", session_key=self.key, run_id=run.id, error=str(exc))
            run.end_unstarted(RunStatus.FAILED, exc)
            return
        if loaded is None:
            # Reset or deleted on another process since the run was accepted: it ends as a
            # queued run of this process does at a reset or delete here, storing nothing (it
            # would run in the new session, or bring the deleted one back).
            run.abort_reason = "reset" if self.row is not None else "delete"
            run.end_unstarted(RunStatus.ABORTED)
            return
        row, created = loaded
        run.session_id = row.session_id
        if run.abort_reason is not None:
            run.end_unstarted(RunStatus.ABORTED)
            return
        if row.archived_at is not None:
            # Archived after the caller's check (by another process of a shared store, which
            # this row was read again from): nothing runs, as the check would have refused.
            run.end_unstarted(RunStatus.FAILED, SessionArchived(self.key))
            return

        loop = asyncio.get_running_loop()
        started_mono = loop.time()
        started_at = run.started_at = clock()
        run.emit(Stream.LIFECYCLE, {"phase": LifecyclePhase.START, "startedAt": started_at})
        self.publish_change(phase=LifecyclePhase.START, run_id=run.id)

        request = run.request
        sent = request.messages
        user_turns = config.history_limit
        if not user_turns and sent and sent[-1].role == "tool":
            # No earlier user turn, but this one answers tool calls: it continues the user
            # turn that made them, which the model must see before their results.
            user_turns = 1
        chain: tuple[Replayed, ...] | None = None
        try:
            last, window = await self._history(
                row.session_id, user_turns, created=created, sent=bool(sent),
                keep=not request.stateless,
            )  # fmt: skip
            if request.continues is not None and sent and user_turns > 0 and not created:
                chain = await self._chain(row.session_id, request.continues, user_turns)
        except StoreError as exc:
            log.error("history_load_failed", session_key=self.key, run_id=run.id, error=str(exc))
            run.detach_stream()
            outcome = RunOutcome(
                RunStatus.FAILED, StopReason.ERROR, "", Usage(0, 0), exc, started_at, clock(),
                None, None, row.session_id,
            )  # fmt: skip
            self._finish(run, outcome, started_at)
            return
        system = "\n\n".join(p for p in (agent.system_prompt, request.extra_system_prompt) if p)
        history: tuple[ChatMessage, ...] = ()
        if chain is not None:
            # A turn continued from an earlier one that later turns followed: its
            # conversation, not theirs, replaces the session's history from here on.
            whole = with_tool_names((*replay_before(chain, sent), *sent))
            context_start = True
            stored = stored_part(whole, config.history_limit)
            new = stored_part(whole, config.history_limit + 1)
        elif sent:
            last_chat = last.to_chat() if last is not None else None
            last_cut_short = last is not None and cut_short(last)
            before: ChatMessage | None = None
            earlier: tuple[Replayed, ...] = ()
            if last is not None and window is not None:
                before_last = window.before(last)
                if before_last is not None and before_last.images is None:
                    # (A question of images alone is stored with a text its resent copy lacks.)
                    before = before_last.to_chat()
                earlier = window.replayed_before(last)
            inputs = new_inputs(
                last_chat, sent, request.whole_conversation, before, earlier, last_cut_short
            )
            if window is not None and not inputs.replaces_history:
                history = replay_before(window.chats, inputs.messages)
            new = with_tool_names((*history, *inputs.messages))[len(history) :]
            context_start = inputs.replaces_history
            # A history that replaces the session's: as much of it as later turns replay.
            stored = stored_part(new, config.history_limit) if context_start else new
            if context_start and not request.stateless:
                # The model is given it as any turn: the current one after `historyLimit`
                # turns (a stateless request, never replayed, is given all it sent).
                new = stored_part(new, config.history_limit + 1)
        else:
            new = (ChatMessage("user", request.text, request.images),)
            history = replay_before(window.chats, new) if window is not None else ()
            context_start = False
            stored = ()
        orphan = unanswerable(history, new)
        if orphan is not None:
            run.detach_stream()
            outcome = RunOutcome(
                RunStatus.FAILED, StopReason.ERROR, "", Usage(0, 0),
                UnansweredResult(orphan.tool_call_id or ""), started_at, clock(),
                None, None, row.session_id,
            )  # fmt: skip
            self._finish(run, outcome, started_at)
            return
        for message in new:
            if message.role == "tool":
                run.emit(Stream.TOOL, {
                    "phase": ToolPhase.RESULT, "name": message.tool_name,
                    "toolCallId": message.tool_call_id, "isError": False, "result": message.text,
                })  # fmt: skip
        messages = paired(history, new)
        params = {**agent.params, **request.params}

        state = _Attempts()
        # Tracked by the owner, so even a shutdown that had to cancel us waits for it.
        task = deps.spawn(
            self._attempts(run, config, agent, system, messages, params, state),
            f"provider-stream {run.id}",
        )
        run.attach_stream(task)
        timeout = (
            request.timeout_seconds
            if request.timeout_seconds is not None
            else config.timeout_seconds
        )
        timed_out = False
        try:
            if timeout:
                remaining = max(0.0, timeout - (loop.time() - started_mono))
                done, _ = await asyncio.wait((task,), timeout=remaining)
                if not done:
                    timed_out = True
                    task.cancel()
            if not task.done():  # a wait on a finished task still costs a loop iteration
                await asyncio.wait((task,))
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            run.detach_stream()

        error: AgentError | None = None
        status: RunStatus
        if timed_out:
            status, stop_reason = RunStatus.FAILED, StopReason.TIMEOUT
            error = RunTimedOut(f"run timed out after {timeout} s")
        elif run.abort_reason is not None or task.cancelled():
            status, stop_reason = RunStatus.ABORTED, StopReason.ABORTED
        elif (failure := task.exception()) is not None:
            status = RunStatus.FAILED
            if isinstance(failure, AgentError):
                error = failure
            else:
                # A bug, ours or a provider's: the traceback goes to the log, not the client.
                log.error("run_failed", session_key=self.key, run_id=run.id, exc_info=failure)
                error = AgentError(f"{type(failure).__name__}: {failure}")
            stop_reason = (
                StopReason.TIMEOUT if isinstance(failure, UpstreamTimeout) else StopReason.ERROR
            )
        else:
            status, stop_reason = RunStatus.COMPLETED, state.finish

        # The turn is stored as refused when a model of the chain read its messages and
        # refused them, whatever failure a later model ended it with (a 5xx, a 429, a
        # timeout says nothing of the messages): replayed, they would be refused again by
        # that model, first in the chain, at every later turn (agents/history.py). A model
        # that began its reply took the messages: a 400 in its stream after that is no
        # refusal of them.
        recorded = error
        if error is not None and not state.produced:
            if not refused(error):
                recorded = state.refusal or error
        elif error is not None and refused(error):
            recorded = UpstreamError(error.detail)

        usage = state.usage
        if usage is None:
            # Estimated only when the provider reported nothing: splitting the whole context
            # costs about 0.75 ms a turn for 100 KB of it, for a number a model that reports
            # usage makes useless. A count it did report is kept.
            partial = state.partial_usage or PartialUsage(None, None)
            usage = Usage(
                word_count(system) + sum(word_count(m.text) for m in messages)
                if partial.input is None
                else partial.input,
                word_count(state.text) if partial.output is None else partial.output,
            )
        run.emit(Stream.USAGE, {"inputTokens": usage.input, "outputTokens": usage.output})
        ended_at = clock()
        ref = state.ref
        record = TurnRecord(
            key=self.key,
            agent_id=self.agent_id,
            session_id=row.session_id,
            run_id=run.id,
            user_text=request.text,
            user_timestamp=run.accepted_at,
            assistant_text=state.text,
            assistant_timestamp=ended_at,
            input_tokens=usage.input,
            output_tokens=usage.output,
            stop_reason=stop_reason,
            status=_session_status(status),
            provider=ref.provider if ref else None,
            model=ref.model if ref else None,
            api=state.api,
            aborted=status == RunStatus.ABORTED,
            error_message=stored_error(recorded) if recorded is not None else None,
            idempotency_key=request.idempotency_key,
            images=_images_meta(request),
            stateless=request.stateless,
            inputs=stored,
            reasoning=state.reasoning,
            thinking=state.thinking,
            tool_calls=state.tool_calls(),
            reply_id=request.reply_id,
            layout=tuple(zip(state.parts, state.part_starts, strict=False)),
            # A refused turn is not replayed (agents/history.py): a history it sent does not
            # replace the session's either.
            context_start=context_start and not refused(recorded),
        )
        try:
            self.row = await deps.store.append_turn(record)
        except StoreError as exc:
            log.error("turn_commit_failed", session_key=self.key, run_id=run.id, error=str(exc))
            status, stop_reason, error = RunStatus.FAILED, StopReason.ERROR, exc
        outcome = RunOutcome(
            status=status,
            stop_reason=stop_reason,
            text=state.text,
            usage=usage,
            error=error,
            started_at=started_at,
            ended_at=ended_at,
            provider=record.provider,
            model=record.model,
            session_id=row.session_id,
            reasoning=state.reasoning,
            tool_calls=record.tool_calls,
            parts=tuple(state.parts),
            part_starts=tuple(state.part_starts),
        )
        self._finish(run, outcome, started_at)

    async def _history(
        self, session_id: str, user_turns: int, *, created: bool, sent: bool, keep: bool
    ) -> tuple[StoredMessage | None, SessionHistory | None]:
        """(When the client `sent` its history) the transcript's last assistant message, and
        the transcript's replay window (None for a transcript created for this turn).

        A named session's window is kept between turns (`agents/history.py`), from its second
        turn on: the next turn reads only what was written since. A stateless session is never
        used again, and neither is many a named one (a hook's minted key): a window is kept
        once a session has a history, not for its first turn."""
        store = self._deps.store
        if created:  # a transcript created for this turn has no history: no store trip
            return None, None
        if not keep or user_turns <= 0:
            history, last = await self._read_history(session_id, user_turns, sent)
        else:
            histories = self._deps.histories
            kept = histories.get(self.key, session_id, user_turns)
            added: tuple[StoredMessage, ...] = ()
            if kept is not None:
                added = await store.messages_after(session_id, kept.last_seq)
                if not histories.holds(self.key, kept):
                    # Dropped while this read: maintenance pruned the transcript (this turn,
                    # racing it, recreates it from seq 1), so it is read anew.
                    kept = None
            if kept is None:
                history, last = await self._read_history(session_id, user_turns, sent)
            else:
                history = kept.extended(added)
                last = history.last_assistant() if sent else None
                if sent and last is None:  # none in the window: the last one is older, if any
                    _, last = await store.replay(session_id, 0)
        if keep and user_turns > 0:
            self._deps.histories.put(self.key, history)
        return last, history

    async def _chain(
        self, session_id: str, run_id: str, user_turns: int
    ) -> tuple[Replayed, ...] | None:
        """The replay window of the conversation the turn of `run_id` answered, through its
        reply, as the model would be given it; None when that turn is the transcript's last
        (the session is continued as it is) or not in it."""
        found = await self._deps.store.chain_to(session_id, run_id, user_turns)
        if found is None or not found.followed:
            return None
        messages = found.messages
        window = messages[window_start(messages, user_turns) :]
        return SessionHistory.of(session_id, user_turns, window).chats

    async def _read_history(
        self, session_id: str, user_turns: int, sent: bool
    ) -> tuple[SessionHistory, StoredMessage | None]:
        store = self._deps.store
        last: StoredMessage | None = None
        if sent:
            stored, last = await store.replay(session_id, user_turns)
        else:
            stored = await store.recent_turns(session_id, user_turns)
        return SessionHistory.of(session_id, user_turns, stored), last

    def _finish(self, run: AgentRun, outcome: RunOutcome, started_at: int) -> None:
        self._running = None  # the terminal event's consumers see the session idle
        run.finish(outcome, terminal_data(outcome, started_at))
        self.publish_change(phase=LifecyclePhase.END, run_id=run.id)

    async def _attempts(
        self,
        run: AgentRun,
        config: AgentsConfig,
        agent: AgentConfig,
        system: str,
        messages: tuple[ChatMessage, ...],
        params: dict[str, Any],
        state: _Attempts,
    ) -> None:
        """The model chain (§2.6): the next model only while nothing has been emitted."""
        failure: AgentError | None = None
        chain = (run.request.model,) if run.request.model is not None else agent.models
        for ref in chain:
            state.ref, state.usage, state.finish, state.api = ref, None, StopReason.STOP, None
            state.partial_usage = None
            model = {"phase": LifecyclePhase.MODEL, "provider": ref.provider, "model": ref.model}
            run.emit(Stream.LIFECYCLE, model)
            try:
                provider, request = self._provider_request(config, ref, system, messages, params)
                results = (i for m in messages if m.role == "tool" for i in m.images)
                refusal = image_refusal(
                    request.provider, (*run.request.images, *results)
                ) or format_refusal(request.provider, run.request.params.get("response_format"))
                if refusal is not None:
                    # Its upstream would refuse the whole turn: the next model may take it.
                    raise UpstreamError(refusal)
                state.api = provider.api
                await self._consume(run, provider, request, state)
                return
            except AgentError as exc:
                if state.produced:
                    raise
                failure = exc
                if refused(exc) and state.refusal is None:
                    state.refusal = exc
                log.warning(
                    "provider_attempt_failed",
                    session_key=self.key,
                    run_id=run.id,
                    provider=ref.provider,
                    model=ref.model,
                    error=exc.message,
                    detail=exc.detail,
                )
        assert failure is not None  # an agent has at least one model
        raise failure

    def _provider_request(
        self,
        config: AgentsConfig,
        ref: ModelRef,
        system: str,
        messages: tuple[ChatMessage, ...],
        params: dict[str, Any],
    ) -> tuple[Provider, ProviderRequest]:
        if ref.provider == ECHO_PROVIDER:
            provider_config, entry, api = None, None, API_ECHO
        else:
            provider_config = config.providers.get(ref.provider)
            if provider_config is None:
                raise UpstreamError(f"provider {ref.provider!r} is not configured")
            entry, api = provider_config.model(ref.model), provider_config.api
        try:
            provider = self._deps.provider(api)
        except KeyError:
            raise UpstreamError(f"api {api!r} is not implemented") from None
        request = ProviderRequest(ref, system, messages, params, provider_config, entry)
        return provider, request

    @staticmethod
    async def _consume(
        run: AgentRun, provider: Provider, request: ProviderRequest, state: _Attempts
    ) -> None:
        emit = run.emit
        assistant = Stream.ASSISTANT  # once per delta: a local, not an enum class lookup
        text_part = ReplyPart.TEXT
        reply, thought = state.reply, state.thought
        parts, starts = state.parts, state.part_starts

        def deliver(event: ProviderEvent) -> None:
            # Called by the provider as each event is decoded: in the event loop's call that
            # read the upstream's bytes, so it must not block.
            if isinstance(event, TextDelta):
                delta = event.text
                if delta:
                    if not parts or parts[-1] is not text_part:
                        parts.append(text_part)
                        starts.append(reply.length)
                    emit(assistant, reply.add(delta))
            elif isinstance(event, ReasoningDelta):
                if event.text:
                    if not parts or parts[-1] is not ReplyPart.REASONING:
                        parts.append(ReplyPart.REASONING)
                        starts.append(thought.length)
                    emit(Stream.THINKING, thought.add(event.text))
            elif isinstance(event, ToolCallDelta):
                _tool_fragment(run, state, event)
            elif isinstance(event, Usage):
                state.usage = event
            elif isinstance(event, PartialUsage):
                state.partial_usage = event
            elif isinstance(event, SignedThinking):
                state.thinking = event.blocks
            elif isinstance(event, Finish):
                state.finish = event.reason

        await provider.stream(request, deliver)
        if state.named and state.finish == StopReason.STOP:
            # Some servers (Ollama, llama.cpp) say "stop" after tool calls; clients look at
            # the finish reason to know a tool must run.
            state.finish = StopReason.TOOL_CALLS


def _tool_fragment(run: AgentRun, state: _Attempts, event: ToolCallDelta) -> None:
    call = state.calls.get(event.index)
    named = False
    if call is None:
        # Servers that omit the id get one: the client must be able to answer the call.
        call_id = event.id or f"call_{run.id[-12:]}_{event.index}"
        call = state.calls[event.index] = _CallSoFar(call_id, event.name or "")
        named = bool(call.name)
    elif event.name and not call.name:
        call.name = event.name
        named = True
    if event.arguments:
        call.pieces.append(event.arguments)
    if named:
        # A call starts once it has its name, which some servers send after the id (a
        # stream's first fragment is all a client reads the name from), with the arguments
        # that came before it; numbered among the calls shown, without gaps.
        call.position = len(state.named)
        state.named.append(call)
        state.parts.append(ReplyPart.TOOL_CALL)
        state.part_starts.append(0)
        run.emit(Stream.TOOL, {"phase": ToolPhase.START, "name": call.name, "toolCallId": call.id,
                        "index": call.position})  # fmt: skip
        delta = call.pieces.joined()
    elif call.name:
        delta = event.arguments
    else:
        return
    if delta:
        run.emit(Stream.TOOL, {"phase": ToolPhase.UPDATE, "name": call.name, "toolCallId": call.id,
                        "index": call.position, "delta": delta})  # fmt: skip


def _session_status(status: RunStatus) -> SessionStatus:
    """What the session row keeps of a run's outcome (its `last_status`)."""
    match status:
        case RunStatus.COMPLETED:
            return SessionStatus.DONE
        case RunStatus.ABORTED:
            return SessionStatus.ABORTED
        case RunStatus.FAILED:
            return SessionStatus.ERROR


def _images_meta(request: TurnRequest) -> dict[str, Any] | None:
    if not request.images:
        return None
    return images_meta(request.images)
