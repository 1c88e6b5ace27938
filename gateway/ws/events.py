"""The fan-out: run events and session changes → `agent`, `chat`, `sessions.changed` frames.

One `EventFanout` is the registry's listener (agents/registry.py). It is called synchronously,
once per token of every run (HTTP runs included), so it serialises each payload once and hands
the same bytes to every read-scoped connection, which only splices in its own `seq`
(ws-protocol.md §9.1). It never awaits: connections queue, their writers send.

`chat` events are derived per run (§9.2): a `delta` with the cumulative text at most every
150 ms (the first one at once), a pending delta flushed before the terminal state, then
`final`, `aborted` or `error`.

No event frame is larger than hello-ok's `policy.maxPayload`: OpenClaw's clients close the
socket (1009) on a larger one, and a run's text has no bound (a long reply, a hostile
upstream). A `chat` event that would be larger carries the head of the text that fits, ending
with OpenClaw's `\n...(truncated)...` mark (tool calls left out), and `deltaText` is the mark:
a UI shows the reply cut, and its end, rather than losing the connection or waiting for a
`final` that never comes. After a cut delta the run sends no more deltas (each would show the
same head); its `final` or `aborted` is cut the same way. An `agent` event that would be
larger (the cumulative text of an `assistant` or `thinking` event) is dropped for every
reader, a `seq` gap as for a slow client; once one was, a later one whose text alone is over
the limit is dropped without being encoded. One warning line per run says so. A `tool` piece of
a call's arguments joins a piece of that call still queued for a reader (within maxPayload).
Other events are small by construction (presence entries and session rows have bounded fields).
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs
import structlog

from agents.events import RunEvent, SessionChange, Stream, TextPieces, ToolPhase, text_length
from agents.providers.base import ToolCall
from agents.store import assistant_content
from gateway.jsonwire import dumps, wire
from gateway.ws.connection import Connection
from gateway.ws.protocol import MAX_PAYLOAD, TRUNCATED_MARK, EventFrame, event_frame, text_head

log = structlog.get_logger()

# §9.2: at most one chat delta per run per 150 ms; UIs re-render the whole text per delta.
CHAT_DELTA_INTERVAL_SECONDS = 0.150
# The streams whose events carry the text so far (§9.3 names `assistant`; `thinking` is the
# same kind): one dropped for a reader that falls behind loses nothing the next one does not
# carry. A reasoning model's thinking that arrives in a burst would otherwise close every
# reader as a slow consumer.
_CUMULATIVE = frozenset({Stream.ASSISTANT, Stream.THINKING})
# Read once per run event: on Python 3.11 reading a member off the enum class
# (`Stream.ASSISTANT`) costs 0.2-0.3 µs, a module global a tenth of it.
_ASSISTANT, _TOOL, _UPDATE = Stream.ASSISTANT, Stream.TOOL, ToolPhase.UPDATE
# What follows a tool piece's `delta` string content in its `agent` payload (agent_payload).
_AFTER_DELTA = '"},"isHeartbeat":false}'
# A run of another process (a shared store) whose events stop before its end: its process was
# killed, it stopped sending when this one's last client left (the bus's watch), or the
# database lost a notification. Its chat state (the text so far) is forgotten this long after
# its last event; a run of this process always ends. Longer than any pause of a live run:
# one that speaks again after it starts a new chat state from its cumulative text.
REMOTE_RUN_IDLE_SECONDS = 600.0
# ... and at most this many are kept, the longest silent forgotten first (the bus's bound).
MAX_REMOTE_CHAT_RUNS = 10_000


@attrs.define
class _ChatRun:
    run_id: str
    session_key: str
    agent_id: str
    text: str = ""  # cumulative text of the latest assistant event read (`current`)
    # The data of a later assistant event, its text not read yet: only a delta sent reads it
    # (agents.events.StreamedText), not every event of a run nobody here watches.
    latest: Mapping[str, Any] | None = None
    sent: str = ""  # cumulative text of the last delta sent
    seq: int = 0  # run seq of the latest assistant event
    ts: int = 0
    sent_at: float = -math.inf  # loop time of the last delta
    timer: asyncio.TimerHandle | None = None
    # The run's client tool calls so far: toolCallId → (name, pieces of the arguments).
    # Pieces, joined when read (agents.events.TextPieces): added to the text so far, each
    # piece would copy all of it (agents/session.py's _CallSoFar).
    calls: dict[str, tuple[str, TextPieces]] = attrs.field(factory=dict)
    cut: bool = False  # a delta was cut to fit maxPayload: no more deltas
    too_large: bool = False  # an event of this run was over maxPayload (logged once)

    def current(self) -> str:
        """The cumulative text of the latest assistant event."""
        if self.latest is not None:
            self.text, self.latest = self.latest["text"], None
        return self.text

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(i, name, pieces.joined()) for i, (name, pieces) in self.calls.items())

    def head(self, seq: int) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "sessionKey": self.session_key,
            "agentId": self.agent_id,
            "seq": seq,
        }


def _message(text: str, ts: int, calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
    """The assistant message of a `chat` event; tool calls as in the transcript."""
    content = assistant_content(text, calls) if calls else [{"type": "text", "text": text}]
    return {"role": "assistant", "content": content, "timestamp": ts}


def agent_payload(event: RunEvent) -> dict[str, Any]:
    """The `agent` event payload (§9.2): the run event plus `isHeartbeat`, no null sessionId."""
    payload: dict[str, Any] = {"runId": event.run_id, "sessionKey": event.session_key}
    if event.session_id is not None:
        payload["sessionId"] = event.session_id
    payload["agentId"] = event.agent_id
    payload["stream"] = event.stream
    payload["seq"] = event.seq
    payload["ts"] = event.ts
    data = event.data
    payload["data"] = data if isinstance(data, dict) else dict(data)
    payload["isHeartbeat"] = False
    return payload


@attrs.define(eq=False)
class EventFanout:
    readers: set[Connection]  # the authenticated ones with operator.read
    delta_interval: float = CHAT_DELTA_INTERVAL_SECONDS
    max_payload: int = MAX_PAYLOAD  # hello-ok's `policy.maxPayload`: no frame is larger
    # Readers that narrowed their `chat`/`agent` events to some sessions (`chat.subscribe`);
    # while it is empty, every event goes to every reader without a per-connection check.
    followers: set[Connection] = attrs.field(factory=set)
    _chat: dict[str, _ChatRun] = attrs.field(factory=dict)
    # `agent.wait`s on run ids not known here, by run id: sets, as a client may hold many
    # waits on one id, and each that ends leaves its set in one step.
    _run_waiters: dict[str, set[asyncio.Future[None]]] = attrs.field(factory=dict)
    _end_waiters: dict[str, set[asyncio.Future[RunEvent]]] = attrs.field(factory=dict)
    remote_idle_seconds: float = REMOTE_RUN_IDLE_SECONDS
    # The other processes' runs with chat state here: run id → loop time of its last event,
    # the longest silent first.
    _remote: OrderedDict[str, float] = attrs.field(factory=OrderedDict)
    _sweep: asyncio.TimerHandle | None = None

    @property
    def chat_runs(self) -> int:
        """How many runs' chat state is kept."""
        return len(self._chat)

    # -- the registry listener ------------------------------------------------------------

    def has_readers(self) -> bool:
        """Whether a session change has anybody here to go to."""
        return bool(self.readers)

    def __call__(self, event: RunEvent | SessionChange) -> None:
        if isinstance(event, RunEvent):
            self._run_event(event)
        elif self.readers:
            self.broadcast(event_frame("sessions.changed", event.to_dict()), self.readers)

    def remote(self, event: RunEvent | SessionChange) -> None:
        """The event bus's listener: another process's run events and session changes."""
        self(event)
        if not isinstance(event, RunEvent):
            return
        run_id = event.run_id
        if run_id not in self._chat:
            self._remote.pop(run_id, None)  # ended, or no chat state yet
            return
        loop = asyncio.get_running_loop()
        self._remote[run_id] = loop.time()
        self._remote.move_to_end(run_id)
        if len(self._remote) > MAX_REMOTE_CHAT_RUNS:
            self._forget_remote(next(iter(self._remote)))
        if self._sweep is None:
            self._sweep = loop.call_later(self.remote_idle_seconds, self._forget_silent)

    def _forget_silent(self) -> None:
        """Forget the remote runs silent for `remote_idle_seconds`; come back for the next."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.remote_idle_seconds
        while self._remote:
            run_id, seen = next(iter(self._remote.items()))
            if seen > cutoff:
                self._sweep = loop.call_later(seen - cutoff, self._forget_silent)
                return
            self._forget_remote(run_id)

    def _forget_remote(self, run_id: str) -> None:
        del self._remote[run_id]
        run = self._chat.pop(run_id, None)
        if run is not None and run.timer is not None:
            run.timer.cancel()

    def _run_event(self, event: RunEvent) -> None:
        waiters = self._run_waiters.pop(event.run_id, None)
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._end_waiters and event.is_terminal:
            for end in self._end_waiters.pop(event.run_id, ()):
                if not end.done():
                    end.set_result(event)
        readers = self.readers_of(event.session_key)
        if readers and not self._still_too_large(event, readers):
            frame = self._agent_frame(event)
            if frame.bound <= self.max_payload:
                self.broadcast(frame, readers)
            else:
                self._too_large(self._chat_run(event), "agent", frame.bound, event.stream)
        stream = event.stream
        if stream == _ASSISTANT:
            self._assistant(event)
        elif stream == _TOOL:
            self._tool(event)
        elif event.is_terminal:
            self._terminal(event)

    def _still_too_large(self, event: RunEvent, readers: Collection[Connection]) -> bool:
        """An `assistant` or `thinking` event dropped without encoding its text, each being
        O(n), O(n²) for the reply: one whose text alone is over maxPayload, of a run that had
        one over it (logged), as each later one of its stream (the text only grows); or one
        every reader would drop, its queue full (a burst of them, delivered in one go, fills
        it before its writer runs)."""
        if event.stream not in _CUMULATIVE:
            return False
        length = text_length(event.data)
        if length > self.max_payload:
            run = self._chat.get(event.run_id)
            return run is not None and run.too_large
        if not all(conn.drops(length) for conn in readers):
            return False
        for conn in readers:
            conn.skip_event()
        return True

    def _agent_frame(self, event: RunEvent) -> EventFrame:
        data = event.data
        if event.stream != _TOOL or data.get("phase") != _UPDATE:
            return event_frame(
                "agent", None, payload_json=dumps(agent_payload(event)),
                droppable=event.stream in _CUMULATIVE,
            )  # fmt: skip
        # A piece of a call's arguments: its `delta` last, so that the pieces a reader has
        # queued join into one event (Connection.send_event).
        delta = data["delta"]
        fields = {k: v for k, v in data.items() if k != "delta"}
        fields["delta"] = delta
        payload = agent_payload(event)
        payload["data"] = fields
        body = dumps(payload)
        frame = event_frame("agent", None, payload_json=body)
        if not body.endswith(_AFTER_DELTA):
            return frame
        piece = len(wire(dumps(delta))) - 2
        key = f"{event.run_id}\n{data['toolCallId']}"
        return frame.merging(key, piece, len(_AFTER_DELTA), self.max_payload)

    def _chat_run(self, event: RunEvent) -> _ChatRun:
        run = self._chat.get(event.run_id)
        if run is None:
            run = self._chat[event.run_id] = _ChatRun(
                event.run_id, event.session_key, event.agent_id
            )
        return run

    def _assistant(self, event: RunEvent) -> None:
        run = self._chat_run(event)
        run.latest, run.seq, run.ts = event.data, event.seq, event.ts
        if run.timer is not None:
            return  # a flush is already scheduled; it will carry this text
        if not self.readers:
            return  # nobody to send it to: a reader that comes gets the text with the next
        loop = asyncio.get_running_loop()
        wait = run.sent_at + self.delta_interval - loop.time()
        if wait <= 0:
            self._send_delta(run, run.seq, run.ts)
        else:
            run.timer = loop.call_later(wait, self._flush, run)

    def _tool(self, event: RunEvent) -> None:
        data = event.data
        phase = data.get("phase")
        if phase == "start":
            self._chat_run(event).calls[data["toolCallId"]] = (data["name"], TextPieces())
        elif phase == "update":
            call = self._chat_run(event).calls.get(data["toolCallId"])
            if call is not None:
                call[1].append(data["delta"])

    def _flush(self, run: _ChatRun) -> None:
        run.timer = None
        if self._chat.get(run.run_id) is run:
            self._send_delta(run, run.seq, run.ts)

    def _send_delta(self, run: _ChatRun, seq: int, ts: int) -> None:
        if run.cut:
            return
        text = run.current()
        if text == run.sent:
            return
        delta = text[len(run.sent) :]
        run.sent = text
        run.sent_at = asyncio.get_running_loop().time()
        readers = self.readers_of(run.session_key)
        if not readers:
            return
        frames: dict[bool, EventFrame] = {}
        for conn in readers:
            v4 = conn.protocol >= 4
            frame = frames.get(v4)
            if frame is None:
                payload = run.head(seq)
                payload["state"] = "delta"
                if v4:  # §4: deltaText is a v4 field
                    payload["deltaText"] = delta
                payload["message"] = _message(text, ts)
                frame = frames[v4] = self._chat_frame(run, payload, text, droppable=True)
            conn.send_event(frame)

    def _terminal(self, event: RunEvent) -> None:
        run = self._chat.pop(event.run_id, None) or _ChatRun(
            event.run_id, event.session_key, event.agent_id
        )
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        # §11: the flushed delta and the final repeat the terminal event's seq.
        self._send_delta(run, event.seq, event.ts)
        readers = self.readers_of(event.session_key)
        if not readers:
            return
        data, text = event.data, run.current()
        payload = run.head(event.seq)
        if data.get("phase") == "error":
            payload["state"] = "error"
            payload["errorMessage"] = data.get("error")
        elif data.get("aborted"):
            payload["state"] = "aborted"
            if text:
                payload["message"] = _message(text, event.ts)
        else:
            payload["state"] = "final"
            payload["stopReason"] = data.get("stopReason")
            payload["message"] = _message(text, event.ts, run.tool_calls())
        self.broadcast(self._chat_frame(run, payload, text), readers)

    def _chat_frame(
        self, run: _ChatRun, payload: dict[str, Any], text: str, *, droppable: bool = False
    ) -> EventFrame:
        """The `chat` event of `payload`; over maxPayload, its message's text is cut to fit
        (module docstring)."""
        frame = event_frame("chat", payload, droppable=droppable)
        limit = self.max_payload
        if frame.bound <= limit or "message" not in payload:
            return frame
        self._too_large(run, "chat", frame.bound)
        message = payload["message"]
        if droppable:  # a delta
            run.cut = True
            if "deltaText" in payload:
                payload["deltaText"] = TRUNCATED_MARK
        payload["message"] = _message(TRUNCATED_MARK, message["timestamp"])
        room = limit - event_frame("chat", payload).bound
        payload["message"] = _message(text_head(text, room) + TRUNCATED_MARK, message["timestamp"])
        return event_frame("chat", payload, droppable=droppable)

    def _too_large(self, run: _ChatRun, name: str, size: int, stream: str | None = None) -> None:
        if not run.too_large:
            run.too_large = True
            log.warning(
                "ws_event_too_large",
                run_id=run.run_id,
                session_key=run.session_key,
                event_name=name,
                stream=stream,
                bytes=size,
                limit=self.max_payload,
            )

    def readers_of(self, session_key: str) -> Collection[Connection]:
        """The readers that get a session's `chat` and `agent` events: those that follow it
        and those that follow no session in particular."""
        if not self.followers:
            return self.readers
        self.followers.intersection_update(self.readers)  # closed since they subscribed
        return [
            conn for conn in self.readers if conn.follows is None or session_key in conn.follows
        ]

    # -- delivery -----------------------------------------------------------------------------

    @staticmethod
    def broadcast(frame: EventFrame, connections: Iterable[Connection]) -> None:
        # No copy: connections join and leave only in their handlers, never from send_event.
        for conn in connections:
            conn.send_event(frame)

    # -- agent.wait: a run id that is not known yet ------------------------------------------

    def watch_run(self, run_id: str) -> asyncio.Future[None]:
        """Resolved by the first event of a run with this id."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_waiters.setdefault(run_id, set()).add(waiter)
        return waiter

    def unwatch_run(self, run_id: str, waiter: asyncio.Future[None]) -> None:
        _unwatch(self._run_waiters, run_id, waiter)

    def answered_without_run(self, run_id: str) -> None:
        """A call of this id was answered without a run (`agent`'s bare `/new`): the waits
        for its first event look again, and find that answer."""
        for waiter in self._run_waiters.pop(run_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def watch_run_end(self, run_id: str) -> asyncio.Future[RunEvent]:
        """Resolved with the terminal event of a run with this id: the one thing this process
        learns of another process's run (a shared store) is its events."""
        waiter: asyncio.Future[RunEvent] = asyncio.get_running_loop().create_future()
        self._end_waiters.setdefault(run_id, set()).add(waiter)
        return waiter

    def unwatch_run_end(self, run_id: str, waiter: asyncio.Future[RunEvent]) -> None:
        _unwatch(self._end_waiters, run_id, waiter)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._remote.clear()
        for run in self._chat.values():
            if run.timer is not None:
                run.timer.cancel()
        self._chat.clear()
        for waiters in self._run_waiters.values():
            for waiter in waiters:
                waiter.cancel()
        self._run_waiters.clear()
        for ends in self._end_waiters.values():
            for end in ends:
                end.cancel()
        self._end_waiters.clear()


def _unwatch(
    watched: dict[str, set[asyncio.Future[Any]]], run_id: str, waiter: asyncio.Future[Any]
) -> None:
    waiters = watched.get(run_id)
    if waiters is not None:
        waiters.discard(waiter)
        if not waiters:
            del watched[run_id]
