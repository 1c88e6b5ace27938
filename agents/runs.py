"""Runs: one turn of one session, its events and its outcome (agents-sessions.md §2).

A run is created by `SessionRegistry.submit` and driven by its `AgentSession`. Consumers
read its events through `AgentRun.subscribe()` (the HTTP handler of the run) or through the
registry-wide listeners (the WS fan-out), and its result through `AgentRun.wait()`.

Subscriptions. Each subscriber has its own bounded queue, filled synchronously by the run:
the run never awaits a subscriber, so a slow or stalled one cannot slow the run or the other
subscribers. A subscription made right after `submit()` returns, before any `await`, sees
every event from seq 1; one made after the run ended yields just the terminal event.

Overflow policy:
- when the queue is full, or its events hold more than `SUBSCRIPTION_TEXT_BUDGET` characters
  of text so far, an `assistant` (or `thinking`, or `tool` `update`) event is merged into the
  newest queued event of the same kind (the same tool call for `tool`), when only delta
  events of other kinds (at most `MERGE_LOOKBACK` of them) follow that one: the deltas are
  concatenated, the other fields become the newer event's, `seq`/`ts` the newer ones. The
  reader sees seq gaps, and seqs out of order where two streams interleave (some servers send
  a chunk's reasoning and text together), but each stream's text is exact and in order, and
  the queue stops growing: every event held would otherwise hold its stream's cumulative
  text, quadratic memory in the reply's length;
- `lifecycle` and `usage` events and tool `start`/`result` are always enqueued (a run has
  only a handful), and so is a delta event that follows one of them; the queue may thus
  exceed `maxsize` by a few.
Merging is O(1) per event: deltas are collected and joined once, when the merged event is read.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections import deque
from collections.abc import Callable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import attrs

from agents.config import ModelRef
from agents.errors import AgentError, client_message
from agents.events import (
    DeltaData,
    EventSink,
    LifecyclePhase,
    RunEvent,
    Stream,
    TextPieces,
    ToolPhase,
    text_length,
)
from agents.providers.base import ChatMessage, ImageInput, StopReason, ToolCall, Usage

__all__ = [
    "RUNNING",
    "AgentRun",
    "ReplyPart",
    "RunEvent",
    "RunOutcome",
    "RunState",
    "RunStatus",
    "RunSubscription",
    "TurnRequest",
]


class RunState(StrEnum):
    """`AgentRun.state`: queued → running → ended, or queued → ended when aborted there."""

    # Waiting for its session lane, a global slot, or another process's turn of its session
    # (a shared store's turn lock); abort ends it at once.
    QUEUED = "queued"
    RUNNING = "running"  # got lane and slot; abort cancels the provider stream
    ENDED = "ended"  # outcome set, terminal event emitted


class RunStatus(StrEnum):
    """`RunOutcome.status`: how the run ended. The values are those `agent.wait` reports."""

    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


class ReplyPart(StrEnum):
    """A part of the reply, in `RunOutcome.parts`: the order the parts began in is the order
    the clients saw them stream in (OpenResponses' output items keep it). Text and reasoning
    are parts of one stretch each: a part begins again at the first piece after another
    part (a server that alternates them, or resumes either after a call)."""

    REASONING = "reasoning"  # at the first piece of each stretch
    TEXT = "text"  # at the first piece of each stretch
    TOOL_CALL = "tool_call"  # one per call in `tool_calls`, when it got its name


RUNNING = RunState.RUNNING  # the name tests compare `run.state` with

DEFAULT_SUBSCRIPTION_SIZE = 1024  # events; merging keeps the text exact beyond it
# Characters of text the queued `assistant`/`thinking` events of a subscriber may hold: each
# carries its stream's text so far, so a reader that stopped reading late in a long reply
# held `maxsize` copies of most of it (50 MB for a 300 KB reply). Past it, deltas merge as
# past `maxsize`; a reader that keeps up never gets near it.
SUBSCRIPTION_TEXT_BUDGET = 1024 * 1024
# An ended run with an empty reply, measured with tracemalloc (run, released request,
# outcome, terminal event and its data, the done event): about 2.3 KiB; rounded up, as ids
# and error texts vary.
RUN_OVERHEAD_BYTES = 4096


def _frozen_params(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class TurnRequest:
    """One user turn for one session, as the gateway resolved it."""

    agent_id: str
    session_key: str  # canonical (agents.keys.normalize_session_key)
    run_id: str  # HTTP: the completion id; WS: the idempotencyKey
    text: str  # the prompt exactly as built; stored as is
    images: tuple[ImageInput, ...] = ()
    extra_system_prompt: str = ""
    # Per-request sampling fields, overlaid on the agent's params (http-openai.md §5).
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_params)
    timeout_seconds: float | None = None  # None: the configured default; 0: no timeout
    idempotency_key: str | None = None  # WS, and hooks given one; stored on the user message
    # HTTP without a session header or `user`: a fresh key nobody names again, which
    # maintenance prunes after `session.maintenance.statelessTtl`.
    stateless: bool = False
    # The gateway minted the key for this request (a stateless one's first turn): no row can
    # exist, so the session's row is written with the turn (one store trip, not two). A
    # stateless session continued later (`previous_response_id`) is not new.
    new_key: bool = False
    # HTTP: the client's whole conversation (system messages taken out, the last one a user
    # or tool message). The session keeps what is new of it (agents/transcript.py); `text`
    # and `images` then only describe its last user message.
    messages: tuple[ChatMessage, ...] = ()
    # HTTP: the client sends its whole conversation every time (a chat UI, its chat id the
    # session's name), so `messages` without an assistant one start the conversation again.
    whole_conversation: bool = False
    # HTTP (`previous_response_id`): the run id of the session's turn this one continues.
    # When later turns followed it, the model is given the conversation up to that turn's
    # reply, not theirs, and it is stored as a context start (as a client's history that
    # replaces the session's), so the turns after this one continue this branch.
    continues: str | None = None
    model: ModelRef | None = None  # instead of the agent's chain (x-openclaw-model)
    # The caller was given the run id to name the run by later (hooks), with or without an
    # idempotency key: the registry keeps the run once it ended, as it keeps keyed ones.
    addressable: bool = False
    # The id the reply's message is stored under; None: a new one when it is stored. HTTP
    # Responses chooses it before the run, as its output items' ids are made of it.
    reply_id: str | None = None
    # The characters of the client's request it was made of (HTTP: its body), when its
    # transport knows them: `params` may hold most of it (a client's tools, up to the body's
    # limit), which `input_chars` does not walk (a walk of megabytes of parsed JSON would
    # hold the event loop, as the parse would).
    request_chars: int = 0

    def input_chars(self) -> int:
        """The characters of this request's input (texts, base64 images, tool calls, and
        at least the client's request it came from): what it holds while it waits to run,
        within a few small strings per message."""
        return max(self.request_chars, self._message_chars())

    def _message_chars(self) -> int:
        chars = len(self.text) + len(self.extra_system_prompt)
        chars += sum(len(image.data_b64) for image in self.images)
        for message in self.messages:
            chars += len(message.text) + len(message.reasoning)
            chars += sum(len(image.data_b64) for image in message.images)
            chars += sum(len(call.arguments) for call in message.tool_calls)
            chars += sum(len(block.text) + len(block.signature) for block in message.thinking)
        return chars

    def released(self) -> TurnRequest:
        """This request without its prompt, images and params: what an ended run keeps (a
        lookup needs its ids and key, never its input, and the input may be megabytes)."""
        return TurnRequest(
            self.agent_id,
            self.session_key,
            self.run_id,
            "",
            timeout_seconds=self.timeout_seconds,
            idempotency_key=self.idempotency_key,
            stateless=self.stateless,
            new_key=self.new_key,
            model=self.model,
            addressable=self.addressable,
        )


@attrs.frozen
class RunOutcome:
    status: RunStatus
    stop_reason: StopReason
    text: str  # the assistant text, partial when aborted or failed
    usage: Usage  # reported by the provider, else estimated (§7)
    error: AgentError | None  # set when failed
    started_at: int | None  # lifecycle start; None when the run never started
    ended_at: int
    provider: str | None  # the attempt that produced the text (the last one tried)
    model: str | None
    session_id: str | None
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    parts: tuple[ReplyPart, ...] = ()  # the order they began in
    # Where each of `parts` begins in `text` (or `reasoning`); 0 for a call.
    part_starts: tuple[int, ...] = ()


# A NamedTuple's own __new__ costs half again as much; `emit` runs once per token.
_new_event = tuple.__new__
# Module globals, not enum attributes (a `match` reads those on every call): a subscriber that
# fell behind merges every delta through here.
_DELTA_STREAMS = frozenset({Stream.ASSISTANT, Stream.THINKING, Stream.TOOL})
_TOOL = Stream.TOOL
# Their events' data hold the text so far. A tuple, not a set: a StrEnum member hashes
# through a Python call, and `push` runs once per token per subscriber.
_TEXT_STREAMS = (Stream.ASSISTANT, Stream.THINKING)
_UPDATE = ToolPhase.UPDATE


# How far back a delta event looks for one of its kind to merge into, past deltas of other
# kinds: text, reasoning and the tool calls a model streams side by side.
MERGE_LOOKBACK = 16


def _is_delta(event: RunEvent) -> bool:
    """An event a later one of another kind may be merged past (never a start or an end)."""
    stream = event.stream
    return stream in _DELTA_STREAMS and (stream != _TOOL or event.data.get("phase") == _UPDATE)


def _mergeable(event: RunEvent, last: RunEvent) -> bool:
    """Whether the delta event `event` (`assistant`, `thinking`, `tool`) merges into `last`."""
    stream = event.stream
    if stream != last.stream:
        return False
    if stream != _TOOL:
        return True
    data, before = event.data, last.data
    return data.get("phase") == before.get("phase") == _UPDATE and data.get(
        "toolCallId"
    ) == before.get("toolCallId")


def _merge_target(queue: deque[RunEvent], event: RunEvent) -> int | None:
    """The index of the queued event the delta `event` is merged into, if any."""
    index = len(queue) - 1
    stop = max(-1, index - MERGE_LOOKBACK)
    while index > stop:
        queued = queue[index]
        if _mergeable(event, queued):
            return index
        if not _is_delta(queued):
            return None
        index -= 1
    return None


@attrs.define(eq=False)
class RunSubscription:
    """An async iterator over one run's events; it ends after the terminal event.

    Close it (or use it as a context manager) when you stop reading early.
    """

    _run: AgentRun | None
    _maxsize: int
    _queue: deque[RunEvent] = attrs.field(factory=deque)
    # Deltas merged into queued events, by the event's number (`_head` + its index), joined
    # when that event is read.
    _merged: dict[int, TextPieces] = attrs.field(factory=dict)
    _head: int = 0  # the number of the queue's first event: how many were read
    _held: int = 0  # characters of text so far in the queued events (the text budget)
    _waiter: asyncio.Future[None] | None = None
    _ended: bool = False  # the terminal event is queued, or the subscription was closed
    # Given to `wait()`: takes events at once while the reader waits with nothing queued.
    _direct: Callable[[RunEvent], bool] | None = None

    def push(self, event: RunEvent) -> None:
        """Called by the run for every event; never blocks (see the overflow policy)."""
        queue = self._queue
        if not queue and self._direct is not None and self._direct(event):
            return
        stream = event.stream
        texted = stream in _TEXT_STREAMS
        size = text_length(event.data) if texted else 0
        full = len(queue) >= self._maxsize or self._held > SUBSCRIPTION_TEXT_BUDGET
        if full and (texted or stream == _TOOL):
            index: int | None = len(queue) - 1
            if not _mergeable(event, queue[-1]):  # most often the last one, else look back
                index = _merge_target(queue, event)
            if index is not None:
                number = self._head + index
                merged = queue[index]
                pieces = self._merged.get(number)
                if pieces is None:
                    pieces = self._merged[number] = TextPieces()
                    pieces.append(merged.data["delta"])
                pieces.append(event.data["delta"])
                if size:
                    self._held += size - text_length(merged.data)
                queue[index] = event
                return
        self._held += size
        queue.append(event)
        if event.is_terminal:
            self._ended = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pop(self) -> RunEvent:
        """The queue's first event, with the deltas merged into it joined."""
        event = self._queue.popleft()
        stream = event.stream
        if stream in _TEXT_STREAMS:
            self._held -= text_length(event.data)
        pieces = self._merged.pop(self._head, None) if self._merged else None
        self._head += 1
        if pieces is not None:
            data, delta = event.data, pieces.joined()
            merged = (
                data.with_delta(delta) if isinstance(data, DeltaData) else {**data, "delta": delta}
            )
            event = event._replace(data=merged)
        return event

    @property
    def pending(self) -> bool:
        """Events are queued: the next `__anext__` returns without waiting."""
        return bool(self._queue)

    async def wait(self, direct: Callable[[RunEvent], bool] | None = None) -> None:
        """Until an event is queued, the subscription ends, or `wake()` is called: a reader
        with a timer of its own (a keepalive) waits here instead of under a timeout per event.

        `direct`, while this waits, is offered each event first, synchronously, in the run's
        own call: True means it took the event, False that the event is queued as usual (and
        so are the following ones, in order, until the reader has read them). A reader that
        can handle an event without awaiting (the HTTP relay writing a delta) thus is not
        woken once per event; it must never block, nor raise."""
        if self._queue or self._ended:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        self._direct = direct
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._direct = None

    def wake(self) -> None:
        """Make a pending `wait()` return, with or without an event."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> RunSubscription:
        return self

    async def __anext__(self) -> RunEvent:
        while True:
            queue = self._queue
            if queue:
                return self._pop()
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """Stop receiving; a pending `__anext__` ends the iteration."""
        if self._run is not None:
            self._run.unsubscribe(self)
            self._run = None
        self._queue.clear()
        self._merged.clear()
        self._held = 0
        self._ended = True
        self._direct = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __enter__(self) -> RunSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.define(eq=False)
class AgentRun:
    """One turn: events out, an outcome at the end. Built by the registry, driven by its
    AgentSession through the methods below the line."""

    request: TurnRequest
    accepted_at: int  # ms; the user message's timestamp
    _clock: Callable[[], int]
    _sink: EventSink
    _on_end: Callable[[AgentRun], None]
    id: str = attrs.field(init=False)
    session_key: str = attrs.field(init=False)
    agent_id: str = attrs.field(init=False)
    session_id: str | None = None
    state: RunState = RunState.QUEUED
    started_at: int | None = None  # lifecycle start, once emitted
    outcome: RunOutcome | None = None
    abort_reason: str | None = None
    # The session id its key held when a shared store's check accepted the run (None: not
    # known, or no session then): a reset or delete on another process since ends it, as one
    # on this process ends its queued runs (AgentSession._load_row).
    accepted_in: str | None = None
    _seq: int = 0
    _subscribers: list[RunSubscription] = attrs.field(factory=list)
    _terminal: RunEvent | None = None
    _done: asyncio.Event = attrs.field(factory=asyncio.Event)
    _stream_task: asyncio.Task[None] | None = None
    _finishing: bool = False  # provider done; the turn is being committed
    # Given by the session while the run waits in its queue: takes it out of that queue.
    _dequeue: Callable[[AgentRun], None] | None = None
    # Called when the run leaves its queue to run (the registry's count of waiting turns).
    _on_start: Callable[[AgentRun], None] | None = attrs.field(default=None, kw_only=True)
    # `hold_end`'s: told of the run's end before anyone else; set while the end is held.
    _end_hold: Callable[[RunOutcome, Callable[[], None]], None] | None = None
    _end_held: bool = False

    def __attrs_post_init__(self) -> None:
        self.id = self.request.run_id
        self.session_key = self.request.session_key
        self.agent_id = self.request.agent_id

    # -- for consumers -----------------------------------------------------------------

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> RunSubscription:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if self._terminal is not None:
            sub = RunSubscription(None, maxsize)
            sub.push(self._terminal)
            return sub
        sub = RunSubscription(self, maxsize)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: RunSubscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def abort(self, reason: str = "aborted") -> bool:
        """Abort while queued (ends at once, nothing stored) or while streaming (the provider
        is cancelled, the partial text stored). True when this call aborted the run; a
        finished, finishing or already aborted run is left alone."""
        if (
            self.state == RunState.ENDED
            or self._finishing
            or self._end_held
            or self.abort_reason is not None
        ):
            return False
        self.abort_reason = reason
        match self.state:
            case RunState.QUEUED:
                if self._dequeue is not None:
                    self._dequeue(self)
                self.end_unstarted(RunStatus.ABORTED)
            case RunState.RUNNING if self._stream_task is not None:
                self._stream_task.cancel()
            case _:
                pass  # between its start and its provider call: it checks abort_reason
        return True

    async def wait(self) -> RunOutcome:
        await self._done.wait()
        assert self.outcome is not None
        return self.outcome

    @property
    def ended(self) -> bool:
        return self.state == RunState.ENDED

    @property
    def addressable(self) -> bool:
        """A later call can name this run: WS runs, whose id is the client's idempotency key
        (`agent.wait`, `chat.abort`, a repeated `chat.send`/`agent`), and hook runs, whose id
        the hook's answer gives (`agent.wait`, a retried call). An HTTP completion id is only
        ever named by the response that carries it."""
        request = self.request
        return request.addressable or request.idempotency_key is not None

    def retained_bytes(self) -> int:
        """What keeping this ended run costs, roughly: its reply text and a fixed part for
        the objects around it (the run, its outcome, its terminal event)."""
        text = self.outcome.text if self.outcome is not None else ""
        return sys.getsizeof(text) + RUN_OVERHEAD_BYTES

    # -- for the AgentSession that drives the run --------------------------------------

    def queue_on(self, remove: Callable[[AgentRun], None]) -> None:
        """Queued by a session: an abort while queued calls `remove(run)` to take the run
        out of that queue."""
        self._dequeue = remove

    def start(self) -> None:
        """Taken off its session's queue to run: an abort now cancels the provider stream."""
        self._dequeue = None
        self.state = RunState.RUNNING
        if self._on_start is not None:
            self._on_start(self)

    def emit(self, stream: Stream, data: Mapping[str, Any]) -> RunEvent:
        # Hot path (once per provider delta): no logging, no allocation beyond the event.
        self._seq += 1
        event = _new_event(
            RunEvent,
            (
                self.id,
                self.session_key,
                self.session_id,
                self.agent_id,
                stream,
                self._seq,
                self._clock(),
                data,
            ),
        )
        for sub in self._subscribers:
            sub.push(event)
        if self._sink.listeners:
            self._sink.publish(event)
        return event

    def attach_stream(self, task: asyncio.Task[None]) -> None:
        """The task awaiting the provider; abort cancels it (so is an earlier abort)."""
        self._stream_task = task
        if self.abort_reason is not None:
            task.cancel()

    def detach_stream(self) -> None:
        """The provider is done: from here on the turn is committed and abort is a no-op."""
        self._stream_task = None
        self._finishing = True

    def hold_end(self, hold: Callable[[RunOutcome, Callable[[], None]], None]) -> None:
        """When the run ends, `hold(outcome, announce)` is called before the end is told to
        anyone (the terminal event, `wait()`, the registry), and the end is told when
        `announce()` is called: what the caller must record first (a shared store's
        idempotency claim, marked ended) is recorded before any client can learn of the end,
        and a client that then asks another process gets an answer that agrees. Until then
        the run is neither ended nor abortable."""
        self._end_hold = hold

    def finish(self, outcome: RunOutcome, data: Mapping[str, Any]) -> None:
        """Set the outcome, then emit the terminal event `data` (the turn is committed)."""
        if self.state == RunState.ENDED or self._end_held:
            return
        if self._end_hold is not None:
            hold, self._end_hold = self._end_hold, None
            self._end_held = True
            hold(outcome, functools.partial(self._announce_end, outcome, data))
            return
        self._announce_end(outcome, data)

    def _announce_end(self, outcome: RunOutcome, data: Mapping[str, Any]) -> None:
        if self.state == RunState.ENDED:
            return
        self._end_held = False
        self.outcome = outcome
        self.state = RunState.ENDED
        self._dequeue = None
        self._terminal = self.emit(Stream.LIFECYCLE, data)
        self._subscribers = []
        self.request = self.request.released()
        self._done.set()
        self._on_end(self)

    def end_unstarted(self, status: RunStatus, error: AgentError | None = None) -> None:
        """End a run that never emitted lifecycle start: only the terminal event, and
        nothing stored (aborted while queued, or its agent vanished from the config)."""
        now = self._clock()
        outcome = RunOutcome(
            status=status,
            stop_reason=StopReason.ABORTED if status == RunStatus.ABORTED else StopReason.ERROR,
            text="",
            usage=Usage(0, 0),
            error=error,
            started_at=None,
            ended_at=now,
            provider=None,
            model=None,
            session_id=self.session_id,
        )
        self.finish(outcome, terminal_data(outcome, self.accepted_at))


def terminal_data(outcome: RunOutcome, started_at: int) -> dict[str, Any]:
    """The terminal lifecycle event's data (§2.2): `end` unless the run failed."""
    match outcome.status:
        case RunStatus.FAILED:
            error = (
                client_message(outcome.error) if outcome.error is not None else AgentError.message
            )
            return {
                "phase": LifecyclePhase.ERROR,
                "startedAt": started_at,
                "endedAt": outcome.ended_at,
                "error": error,
            }
        case RunStatus.COMPLETED | RunStatus.ABORTED:
            return {
                "phase": LifecyclePhase.END,
                "startedAt": started_at,
                "endedAt": outcome.ended_at,
                "stopReason": outcome.stop_reason,
                "aborted": outcome.status == RunStatus.ABORTED,
            }
