"""What flows out of the agents layer: run events, session rows, session changes.

The gateway turns these into SSE chunks and WS `agent`/`chat`/`sessions.changed` frames
(agents-sessions.md §2.2, ws-protocol.md §8 `sessions.list`, §9.2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from typing import Any, NamedTuple

import attrs
import structlog

from agents.keys import is_main_key
from agents.pieces import TextPieces as TextPieces
from agents.store import SessionRow

log = structlog.get_logger(__name__)


class Stream(StrEnum):
    """`RunEvent.stream`: which of a run's streams an event belongs to (§2.2)."""

    LIFECYCLE = "lifecycle"
    ASSISTANT = "assistant"
    USAGE = "usage"
    # The model's reasoning, like `assistant`: {"text": cumulative, "delta": piece}.
    THINKING = "thinking"
    # Client tool calls, in OpenClaw's `tool` stream shape: `start` {name, toolCallId, index}
    # when the model begins a call, `update` {name, toolCallId, index, delta} per piece of its
    # arguments, `result` {name, toolCallId, isError, result} when the client sends the result.
    TOOL = "tool"


LIFECYCLE = Stream.LIFECYCLE  # the name tests build lifecycle events with


class LifecyclePhase(StrEnum):
    """`data.phase` of a `lifecycle` event; a run's `sessions.changed` carry START and END."""

    START = "start"
    MODEL = "model"  # an attempt with the next model of the chain begins
    END = "end"  # terminal: completed or aborted
    ERROR = "error"  # terminal: failed


class ToolPhase(StrEnum):
    """`data.phase` of a `tool` event."""

    START = "start"
    UPDATE = "update"
    RESULT = "result"


class ChangeReason(StrEnum):
    """`SessionChange.reason`: what happened to the session outside a run."""

    CREATE = "create"
    PATCH = "patch"
    RESET = "reset"
    DELETE = "delete"


# Module globals, not enum lookups: `is_terminal` runs for every event and subscriber.
_TERMINAL_PHASES = frozenset({LifecyclePhase.END, LifecyclePhase.ERROR})


class SessionStatus(StrEnum):
    """`SessionInfo.status` (`sessions.list`): running while a run is queued or running, else
    how its last run ended (the store's `last_status`), or idle before the first one."""

    RUNNING = "running"
    IDLE = "idle"
    DONE = "done"
    ABORTED = "aborted"
    ERROR = "error"


class StreamedText(TextPieces):
    """The text of an `assistant` or `thinking` stream as it grows (`TextPieces`).

    Each event of the stream carries the text so far (§2.2), which most consumers never read:
    the HTTP relay writes the deltas, the WS fan-out reads the text at most once per chat
    delta while nobody reads `agent` events. Built by adding each piece to the text so far,
    it copied all of it per piece, whoever read it: a reply of n characters in small pieces
    copied O(n²) (a 1 MB reply in 4-character pieces, 125 GB). So the text is joined when
    somebody reads it, and each event knows only its length (`DeltaData`)."""

    __slots__ = ("length",)

    def __init__(self) -> None:
        super().__init__()
        self.length = 0

    def add(self, piece: str) -> DeltaData:
        """Add a piece: the data of its event."""
        self.append(piece)
        self.length += len(piece)
        return DeltaData(self, self.length, piece)

    def upto(self, length: int) -> str:
        """The first `length` characters: the text as an event of `length` carried it."""
        text = self.joined()
        return text if length == len(text) else text[:length]

    def __str__(self) -> str:
        return self.joined()


class DeltaData(Mapping[str, Any]):
    """An `assistant` or `thinking` event's data, `{"text": <text so far>, "delta": <piece>}`,
    whose text is joined only when read (`StreamedText`); `length` is its length, for free.
    It is the event's data for everyone, read-only, equal to the same dict."""

    __slots__ = ("_text", "delta", "length")

    def __init__(self, text: StreamedText, length: int, delta: str) -> None:
        self._text = text
        self.length = length
        self.delta = delta

    def __getitem__(self, key: str) -> Any:
        if key == "delta":
            return self.delta
        if key == "text":
            return self._text.upto(self.length)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(("text", "delta"))

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        return repr(dict(self))

    def with_delta(self, delta: str) -> DeltaData:
        """This event's data with another delta (the deltas merged into it, runs.py)."""
        return type(self)(self._text, self.length, delta)


def text_length(data: Mapping[str, Any]) -> int:
    """The length of an `assistant` or `thinking` event's text, without joining it."""
    return data.length if isinstance(data, DeltaData) else len(data["text"])


class RunEvent(NamedTuple):
    """One event of a run. `seq` is per run, from 1, without gaps at the source; `data` is
    exactly the §2.2 table's object and is shared by every consumer: never mutate it. An
    `assistant` or `thinking` event's is a `DeltaData`: read its text only when you need it.

    A NamedTuple, not an attrs frozen class: a run builds one per token, and a frozen class
    sets each of its eight fields through `object.__setattr__` (0.95 µs an event, against
    0.24 µs for a tuple). It is just as immutable.
    """

    run_id: str
    session_key: str
    session_id: str | None  # None only for a run that ended before its session was loaded
    agent_id: str
    stream: Stream
    seq: int
    ts: int  # Unix ms
    data: Mapping[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.stream == LIFECYCLE and self.data.get("phase") in _TERMINAL_PHASES

    def to_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "sessionKey": self.session_key,
            "sessionId": self.session_id,
            "agentId": self.agent_id,
            "stream": self.stream,
            "seq": self.seq,
            "ts": self.ts,
            # A dict, as JSON takes it: a `DeltaData`'s text is joined here.
            "data": self.data if type(self.data) is dict else dict(self.data),
        }


@attrs.frozen
class SessionInfo:
    """A session row with its live state: every field of a `sessions.list` entry."""

    key: str
    agent_id: str
    is_main: bool
    label: str | None
    session_id: str
    created_at: int
    updated_at: int
    aborted_last_run: bool
    input_tokens: int
    output_tokens: int
    total_tokens: int
    model_provider: str | None
    model: str | None
    # A `SessionStatus`; typed str because the last status comes from the store as written.
    status: str
    last_run_id: str | None
    active_run_ids: tuple[str, ...] = ()  # queued and running runs, oldest first
    kind: str = "direct"
    archived_at: int | None = None  # set while archived, with the reason ("manual")
    archive_reason: str | None = None
    pinned_at: int | None = None  # set while pinned

    @classmethod
    def from_row(
        cls, row: SessionRow, main_key: str, active_run_ids: tuple[str, ...] = ()
    ) -> SessionInfo:
        return cls(
            key=row.key,
            agent_id=row.agent_id,
            is_main=is_main_key(row.key, main_key),
            label=row.label,
            session_id=row.session_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            aborted_last_run=row.aborted_last_run,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            total_tokens=row.total_tokens,
            model_provider=row.model_provider,
            model=row.model,
            status=(
                SessionStatus.RUNNING if active_run_ids else row.last_status or SessionStatus.IDLE
            ),
            last_run_id=row.last_run_id,
            active_run_ids=active_run_ids,
            archived_at=row.archived_at,
            archive_reason=row.archive_reason,
            pinned_at=row.pinned_at,
        )

    @property
    def has_active_run(self) -> bool:
        return bool(self.active_run_ids)

    def to_dict(self) -> dict[str, Any]:
        return session_entry(
            key=self.key,
            kind=self.kind,
            agent_id=self.agent_id,
            is_main=self.is_main,
            label=self.label,
            session_id=self.session_id,
            created_at=self.created_at,
            updated_at=self.updated_at,
            aborted_last_run=self.aborted_last_run,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            total_tokens=self.total_tokens,
            model_provider=self.model_provider,
            model=self.model,
            status=self.status,
            last_run_id=self.last_run_id,
            active_run_ids=self.active_run_ids,
            archived_at=self.archived_at,
            archive_reason=self.archive_reason,
            pinned_at=self.pinned_at,
        )


def session_entry(
    *,
    key: str,
    agent_id: str,
    is_main: bool,
    kind: str = "direct",
    label: str | None = None,
    session_id: str | None = None,
    created_at: int | None = None,
    updated_at: int | None = None,
    aborted_last_run: bool = False,
    input_tokens: int = 0,
    output_tokens: int = 0,
    total_tokens: int = 0,
    model_provider: str | None = None,
    model: str | None = None,
    status: str = "idle",
    last_run_id: str | None = None,
    active_run_ids: tuple[str, ...] = (),
    archived_at: int | None = None,
    archive_reason: str | None = None,
    pinned_at: int | None = None,
) -> dict[str, Any]:
    """A `sessions.list` entry, keys in the spec's order. The defaults are the entry of a key
    that has no session yet (`updatedAt: null`). An archived session's carries OpenClaw's
    `archived`, `archivedAt` and `archiveReason`; another's none of them, as OpenClaw's
    leaves out the unset two. A pinned one's carries `pinned` and `pinnedAt`, as OpenClaw's
    (its Control UI lists the pinned first and offers to unpin them)."""
    entry = {
        "key": key,
        "kind": kind,
        "agentId": agent_id,
        "isMain": is_main,
        "label": label,
        "sessionId": session_id,
        "createdAt": created_at,
        "updatedAt": updated_at,
        "abortedLastRun": aborted_last_run,
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": total_tokens,
        "modelProvider": model_provider,
        "model": model,
        "status": status,
        "lastRunId": last_run_id,
        "hasActiveRun": bool(active_run_ids),
        "activeRunIds": list(active_run_ids),
    }
    if archived_at is not None:
        entry["archived"] = True
        entry["archivedAt"] = archived_at
        entry["archiveReason"] = archive_reason
    if pinned_at is not None:
        entry["pinned"] = True
        entry["pinnedAt"] = pinned_at
    return entry


@attrs.frozen
class SessionChange:
    """`sessions.changed`: `reason` for create/patch/reset/delete, or `phase` start/end with
    `run_id` around a run. `session` is None after a delete."""

    session_key: str
    agent_id: str
    ts: int
    session: SessionInfo | None
    reason: ChangeReason | None = None
    phase: LifecyclePhase | None = None
    run_id: str | None = None
    # A change another process announced (agents.events_postgres): its payload as sent.
    wire: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.wire is not None:
            return dict(self.wire)
        out: dict[str, Any] = {
            "sessionKey": self.session_key,
            "agentId": self.agent_id,
            "ts": self.ts,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.phase is not None:
            out["phase"] = self.phase
        if self.run_id is not None:
            out["runId"] = self.run_id
        out["session"] = self.session.to_dict() if self.session is not None else None
        return out


# Called synchronously for every run event and session change; must never block.
Listener = Callable[[RunEvent | SessionChange], None]
# Whether a listener has anybody to pass a session change to at this moment.
ChangeInterest = Callable[[], bool]


@attrs.define
class EventSink:
    """The registry-wide listeners. `listeners` is replaced, never mutated, so a dispatch
    loop may iterate it while a listener removes itself, and runs can test it for
    emptiness per token at the cost of one attribute read."""

    listeners: tuple[Listener, ...] = ()
    # Per listener, whether it wants session changes now (None: always): building one (the
    # session's row as the wire shows it) is the costly part of publishing it, three times
    # a turn.
    _interests: tuple[tuple[Listener, ChangeInterest | None], ...] = ()

    def add(self, listener: Listener, changes: ChangeInterest | None = None) -> None:
        self.listeners = (*self.listeners, listener)
        self._interests = (*self._interests, (listener, changes))

    def remove(self, listener: Listener) -> None:
        # `!=`, not `is not`: each `obj.method` access makes a new, equal, bound method.
        self.listeners = tuple(cb for cb in self.listeners if cb != listener)
        self._interests = tuple(pair for pair in self._interests if pair[0] != listener)

    def wants_changes(self) -> bool:
        """Whether some listener would pass a session change on now."""
        return any(interest is None or interest() for _, interest in self._interests)

    def publish(self, event: RunEvent | SessionChange) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                # One broken consumer must not break the run or the other consumers.
                log.exception("listener_failed", listener=repr(listener))
