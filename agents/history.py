"""The replayed histories of the sessions used last, kept from one turn to the next.

A turn on a named session gives the provider the session's last `historyLimit` user turns
(agents-sessions.md §6.1). Read from the store for every turn, that is the whole window
fetched, decoded and converted again each time: with 50 turns of short messages about 0.9 ms
of a turn's 1.2 ms of CPU. A transcript only grows (a reset or a delete starts a new session
id, and nothing edits or removes a message of a live transcript), so a window kept from the
last turn needs only the messages written since (`Store.messages_after`), cut again by the
rule of the store's `SQL_RECENT_TURNS`, applied here in Python (`window_start`).

Kept per session key within a byte budget, least recently used dropped first: a dropped or
stale history is read from the store again, as before.

A turn the upstream refused as a bad request (HTTP 400, 413 or 422: an image or a message it
cannot take, a context too long) is stored, its reply marked so (`stopReason` `error`, an
`errorMessage` that begins with `agents.errors.REFUSED_ERROR`), but none of its messages is
replayed: given to the model again they would be refused again, and every later turn of the
session with them. Nor is its reply the session's last one that a client resending its
history continues from (agents/transcript.py): a client that drops or edits the refused
question continues the session, and one that sends it again has it given to the model once.
A client history the upstream refused does not replace the session's (it is stored without
the context start mark), nor is an assistant message of it the session's last reply.
Nor is a refused turn one of the window's `historyLimit` user turns (`SQL_RECENT_TURNS`):
the window reaches back past it, however many user messages it holds. Other failures (401,
403, 429, 5xx, timeouts, a broken connection) say nothing about the messages: their turns
are replayed as any (agents/transcript.py on retried turns), unless an earlier model of the
chain refused them (agents/session.py). A refused turn stored before replies were marked so
is replayed, and counts, as any failed one.
As a call cut off in its arguments (`replayed`), only the model's context: the transcript
keeps it, and `chat.history` shows it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence

import attrs

from agents.providers.base import ChatMessage, StopReason, ToolCall
from agents.store import StoredMessage, refused_turns
from agents.transcript import CutShort, Replayed

# About what the replayed histories of a few hundred active conversations of ordinary
# length hold; the live sessions themselves are bounded by count (up to 10,000 idle ones),
# which would not bound this.
HISTORY_CACHE_MAX_BYTES = 32 * 1024 * 1024
# What a message costs beyond its text: its two objects (stored and replayed) and their
# fields, roughly; and what a kept window costs with none (the entry, its key).
_MESSAGE_OVERHEAD_BYTES = 600
_ENTRY_OVERHEAD_BYTES = 400


def window_start(messages: Sequence[StoredMessage], user_turns: int) -> int:
    """Where `SQL_RECENT_TURNS` starts in `messages`, a transcript's messages from some point
    on that hold its window: at the `user_turns`-th last user message of a turn not refused
    (the first message when there are fewer), or at the last context start when that comes
    later. (A turn is written whole: `messages` hold the reply of each user message's turn.)"""
    refused = refused_turns(messages)
    start = 0
    seen = 0
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user" and messages[index].seq not in refused:
            seen += 1
            if seen == user_turns:
                start = index
                break
    for index in range(len(messages) - 1, start, -1):
        if messages[index].context_start:
            return index
    return start


# The replies that did not finish: one may hold a call cut off in its arguments.
_UNFINISHED = frozenset({StopReason.ERROR, StopReason.ABORTED, StopReason.TIMEOUT})


def replayed(message: StoredMessage) -> ChatMessage | None:
    """The message as the provider is given it; None for an empty reply, which is left out."""
    chat = message.to_chat()
    if chat.role == "assistant":
        calls = chat.tool_calls
        if calls:
            # A call stored without its name (a reply broken off after the id, before such
            # calls were dropped) the upstreams refuse; one cut off in its arguments (a
            # reply that failed, timed out or was aborted while the call streamed) those
            # that parse the arguments to render the prompt (vLLM, llama.cpp) do. Either
            # is left out, and its result then as one without its call (`transcript.paired`);
            # the transcript keeps it.
            unfinished = message.stop_reason in _UNFINISHED
            kept = tuple(c for c in calls if c.name and not (unfinished and _cut_off(c)))
            if len(kept) != len(calls):
                chat = attrs.evolve(chat, tool_calls=kept)
        if not chat.text and not chat.tool_calls:
            return None
    return chat


def replay_entry(message: StoredMessage) -> Replayed:
    """`replayed`, a reply that did not finish marked so (agents/transcript.py: a turn asked
    again replaces it)."""
    chat = replayed(message)
    if chat is not None and chat.role == "assistant" and cut_short(message):
        return CutShort(chat)
    return chat


def cut_short(message: StoredMessage) -> bool:
    """A reply that failed, timed out or was aborted (it may hold part of one)."""
    return message.stop_reason in _UNFINISHED


def _cut_off(call: ToolCall) -> bool:
    """The call's arguments are not a JSON object (as a whole call's always are)."""
    try:
        return not isinstance(json.loads(call.arguments), dict)
    except (ValueError, RecursionError):
        return True


def _unrefused(messages: tuple[StoredMessage, ...]) -> tuple[StoredMessage, ...]:
    """`messages` without those of the turns the upstream refused (see above): every
    message of the run whose reply is refused. A turn is written whole, in one transaction,
    and its reply is its last message, so a window that holds any of it holds its reply."""
    refused = refused_turns(messages)
    if not refused:
        return messages
    return tuple(m for m in messages if m.seq not in refused)


@attrs.frozen
class SessionHistory:
    """A transcript's replay window as the store would give it, and its messages replayed."""

    session_id: str
    user_turns: int  # the `historyLimit` it was cut to
    stored: tuple[StoredMessage, ...]  # oldest first: `recent_turns(session_id, user_turns)`
    kept: tuple[StoredMessage, ...]  # `stored` without the refused turns: the replayed ones
    chats: tuple[Replayed, ...]  # `replay_entry` of each of `kept`
    size: int  # roughly, in bytes: what the budget counts

    @classmethod
    def of(
        cls, session_id: str, user_turns: int, stored: tuple[StoredMessage, ...]
    ) -> SessionHistory:
        kept = _unrefused(stored)
        chats = tuple(replay_entry(m) for m in kept)
        return cls(session_id, user_turns, stored, kept, chats, _size(stored, kept, chats))

    @property
    def last_seq(self) -> int:
        """The transcript's last seq: the window always ends with its last message."""
        return self.stored[-1].seq if self.stored else 0

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        return tuple(
            c.message if isinstance(c, CutShort) else c for c in self.chats if c is not None
        )

    def last_assistant(self) -> StoredMessage | None:
        """The window's last replayed assistant message (None: none in the window, not none
        at all)."""
        return next((m for m in reversed(self.kept) if m.role == "assistant"), None)

    def before(self, message: StoredMessage) -> StoredMessage | None:
        """The window's replayed message before `message` (None: not in the window, or its
        first)."""
        index = self._index(message)
        return self.kept[index - 1] if index else None

    def replayed_before(self, message: StoredMessage) -> tuple[Replayed, ...]:
        """The window's messages before `message` as replayed (`replay_entry`), oldest first
        (none when `message` is not in the window)."""
        index = self._index(message) or 0
        return self.chats[:index]

    def _index(self, message: StoredMessage) -> int | None:
        kept = self.kept
        for index in range(len(kept) - 1, -1, -1):  # the last message, as a rule
            if kept[index].seq == message.seq:
                return index
        return None

    def extended(self, added: tuple[StoredMessage, ...]) -> SessionHistory:
        """With the messages written after `last_seq`, cut to the window again."""
        if not added:
            return self
        stored = self.stored + added
        start = window_start(stored, self.user_turns)
        stored = stored[start:]
        new = _unrefused(added)
        kept = self.kept + new
        chats = self.chats + tuple(replay_entry(m) for m in new)
        first = stored[0].seq if stored else 0
        cut = next((i for i, m in enumerate(kept) if m.seq >= first), len(kept))
        kept, chats = kept[cut:], chats[cut:]
        return SessionHistory(
            self.session_id, self.user_turns, stored, kept, chats, _size(stored, kept, chats)
        )


def _size(
    stored: tuple[StoredMessage, ...], kept: tuple[StoredMessage, ...], chats: tuple[Replayed, ...]
) -> int:
    """Every part a client or a model can make large: counted by its text alone, a window
    whose messages are tool calls (a client's resent history may hold megabytes of their
    arguments) took some 3 KiB of the budget and held megabytes, so the cache kept as many
    such windows as it has room for small ones, and a client that named session after
    session grew the process without bound. The refused turns' messages are held too, in
    `stored`, though not replayed."""
    size = _ENTRY_OVERHEAD_BYTES + _MESSAGE_OVERHEAD_BYTES * len(stored)
    size += sum(_chars(c.message if isinstance(c, CutShort) else c) for c in chats if c is not None)
    if len(kept) != len(stored):
        replayed_seqs = {m.seq for m in kept}
        size += sum(_chars(m.to_chat()) for m in stored if m.seq not in replayed_seqs)
    return size


def _chars(chat: ChatMessage) -> int:
    """A message's parts, as held: its text and reasoning once (the stored content's strings
    are the replayed ones'), a call's arguments twice (parsed in the stored content, and as
    the replayed text)."""
    calls = sum(len(c.id) + len(c.name) + 2 * len(c.arguments) for c in chat.tool_calls)
    signatures = sum(len(block.signature) for block in chat.thinking)
    return len(chat.text) + len(chat.reasoning) + calls + signatures


@attrs.define
class HistoryCache:
    """Histories by session key, within `max_bytes`, least recently used dropped first."""

    max_bytes: int = HISTORY_CACHE_MAX_BYTES
    _entries: OrderedDict[str, SessionHistory] = attrs.field(init=False, factory=OrderedDict)
    _bytes: int = attrs.field(init=False, default=0)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, session_id: str, user_turns: int) -> SessionHistory | None:
        """The history kept for `key` if it is of this transcript and this limit."""
        history = self._entries.get(key)
        if history is None:
            return None
        if history.session_id != session_id or history.user_turns != user_turns:
            self.drop(key)  # reset, deleted, or the limit was reloaded: read it anew
            return None
        self._entries.move_to_end(key)
        return history

    def holds(self, key: str, history: SessionHistory) -> bool:
        """`history` is still the one kept for `key` (not dropped or replaced since)."""
        return self._entries.get(key) is history

    def put(self, key: str, history: SessionHistory) -> None:
        self.drop(key)
        if history.size > self.max_bytes:
            return  # larger than the whole budget: read from the store each time
        self._entries[key] = history
        self._bytes += history.size
        while self._bytes > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size

    def drop(self, key: str) -> None:
        history = self._entries.pop(key, None)
        if history is not None:
            self._bytes -= history.size
