"""The pages of `GET /v1/responses/{id}/input_items`, read a few messages at a time: a
page costs what it lists (and a segment or two around it), not the whole chain, which a
client paging through a long conversation would otherwise read once per page.

The items of a chain are made of its messages as the model was given them
(`chain_items`): without the turns the upstream refused (a message is of a refused turn
when the turn's reply, the first message at or after it with a stop reason, is refused:
`refused_turns`), and a try that got no reply, or part of one, once when the next one asked
again (`retries_left_out`, which compares the try's messages with the first of the next
one's). So the chain is read as segments: the messages up to and with an assistant message
(a reply, or one of a client's history). Whether a segment's messages are listed depends on
itself, its turn's reply, and, when it ends in an empty reply or one cut short, on the next
segment's first messages; never on a segment before it. A page reads the segments it lists
from (the one its cursor is in first), a segment after them, and the reply of a turn it
begins inside of: a long stretch of failed turns, or a client's long history in one turn,
is read a segment at a time. A long segment whose messages are each listed whatever comes
next (it ends with an answered reply, is the chain's own input, or ends unanswered and the
next segment does not ask all of it again) is read a piece at a time: a client's history
of many messages without a reply between. One that ends unanswered and that the next
segment asks again whole (a client's long history sent again after a failure) lists
nothing, and is stepped over: the store compares the two (`_Chain.decide`), and the pairs
it finds stored otherwise are read (a message sent again in other whitespace asks the same).
A run of turns the upstream refused (a client sending a request too large for it again and
again) lists nothing: a page reads its first turn's first piece, and the store says where
the run ends."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from agents.history import SessionHistory, cut_short, replay_entry
from agents.providers.base import ChatMessage, StopReason
from agents.store import StoredMessage
from agents.store_protocol import Store
from agents.transcript import CutShort, Replayed, retries_left_out, same_message
from gateway.http.openai_wire import bad_request
from gateway.http.openresponses_wire import (
    COMPLETED,
    INCOMPLETE,
    MAX_RESPONSE_ID,
    InputMessage,
    ItemsQuery,
    input_items,
    items_page,
    outcome_status,
)

# Messages read at once beyond a page's size (some make no item: an empty reply, a refused
# turn), and the first read of the segment around a cursor, or of one to look ahead at.
_READ_MORE = 8
_FIRST_READ = 4


def chain_items(session_id: str, messages: tuple[StoredMessage, ...]) -> list[dict[str, Any]]:
    """The input items of `messages`, a chain's messages before its reply, oldest first:
    what the pages list, a segment at a time (`segment_items`)."""
    history = SessionHistory.of(session_id, 0, messages)
    return _listed(history.kept, history.chats)


def _listed(
    kept: Sequence[StoredMessage], chats: tuple[Replayed, ...], asked: tuple[Replayed, ...] = ()
) -> list[dict[str, Any]]:
    """The items of the `kept` messages (`chats` as replayed) the model was given, `asked`
    the replayed messages after them that `retries_left_out` compares them with."""
    given = {id(chat) for chat in retries_left_out((*chats, *asked))}
    # A reply cut short holds its whole text, as the model is given it: listed as its
    # output items too.
    listed: list[InputMessage] = []
    asked_given = True  # whether the model was given the input of the turn the reply is of
    for message, entry in zip(kept, chats, strict=True):
        chat = entry.message if isinstance(entry, CutShort) else entry
        if chat is None:
            # An empty reply is not given to the model; one of reasoning alone is listed
            # as it was answered (its reasoning, and the placeholder message), unless its
            # turn was left out (asked again).
            if message.reasoning and asked_given:
                listed.append(_input_message(message, ChatMessage("assistant", "")))
            asked_given = True
            continue
        asked_given = chat.role == "assistant" or id(chat) in given
        if id(chat) in given:
            listed.append(_input_message(message, chat))
    return input_items(listed)


def _input_message(message: StoredMessage, chat: ChatMessage) -> InputMessage:
    return InputMessage(
        message.id,
        chat,
        _image_count(message.images),
        message.reasoning,
        message.layout,
        _status(message),
        _call_places(message, chat),
        message.stop_reason in _FAILED,
    )


# The stop reasons of a reply whose response failed (agents/session.py).
_FAILED = frozenset({StopReason.ERROR, StopReason.TIMEOUT})


def _call_places(message: StoredMessage, chat: ChatMessage) -> tuple[int, ...]:
    """The place of each call of `chat`, the replayed `message`, among the stored reply's:
    a call left out of the replay (agents/history.py `replayed`) does not shift the ids of
    those after it. Empty when none was left out."""
    if chat.role != "assistant" or not chat.tool_calls:
        return ()
    stored = message.to_chat().tool_calls
    if len(stored) == len(chat.tool_calls):
        return ()
    places: list[int] = []
    place = 0
    for call in chat.tool_calls:  # those kept, in their order: a subsequence of `stored`
        while place < len(stored) and stored[place] != call:
            place += 1
        if place == len(stored):  # not of it after all (not reached): each its own place
            return ()
        places.append(place)
        place += 1
    return tuple(places)


def _status(message: StoredMessage) -> str:
    """The status of a message's items: a reply's as its response gave them (incomplete
    when cut by `max_output_tokens`, a content filter or an abort; a failed response's,
    the upstream's error or a timeout, closed its items incomplete too)."""
    if message.role != "assistant" or message.stop_reason is None:
        return COMPLETED
    if cut_short(message):
        return INCOMPLETE
    return outcome_status(False, message.stop_reason)[0]


def _image_count(images: Mapping[str, Any] | None) -> int:
    """How many images a stored message had (`{"count", "mimeTypes"}`, data not kept)."""
    count = images.get("count") if images is not None else None
    return count if type(count) is int and count > 0 else 0


def message_id_of(item_id: str) -> str | None:
    """The stored message an item id was made of (`input_items`, `ItemIds`): `msg_`,
    `rs_`, `fco_` or `fc_..._<n>` and its id's 32 hex digits (a later stretch of a reply's
    text or reasoning: `msg_..._<k>`, `rs_..._<k>`); None for any other text."""
    kind, _, rest = item_id.partition("_")
    if kind not in ("msg", "rs", "fc", "fco"):
        return None
    rest, numbered, number = rest.partition("_")
    if (numbered or kind == "fc") and not (kind != "fco" and number.isascii() and number.isdigit()):
        return None
    if len(rest) != 32 or not all(c in "0123456789abcdef" for c in rest):
        return None
    return f"{rest[:8]}-{rest[8:12]}-{rest[12:16]}-{rest[16:20]}-{rest[20:]}"


def message_items(message: StoredMessage) -> list[dict[str, Any]]:
    """The items a stored message is listed as, by itself: as the model is given it (a
    call left out of the replay is not one), a reply of reasoning alone as answered."""
    entry = replay_entry(message)
    chat = entry.message if isinstance(entry, CutShort) else entry
    if chat is None:
        if not message.reasoning:
            return []
        chat = ChatMessage("assistant", "")
    return input_items([_input_message(message, chat)])


class _Reader:
    """A chain's messages from one seq on, one way, read a batch at a time (a first batch
    of `first`, then twice as many each time, up to `most`)."""

    def __init__(
        self,
        store: Store,
        session_id: str,
        span: tuple[int, int],
        descending: bool,
        sizes: tuple[int, int],
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._low, self._high = span
        self._descending = descending
        self._size, self._most = sizes
        self._buffer: deque[StoredMessage] = deque()

    async def peek(self) -> StoredMessage | None:
        if not self._buffer and self._low <= self._high:
            size = self._size
            self._size = min(size * 2, self._most)
            read = await self._store.messages_in(
                self._session_id, self._low, self._high, self._descending, size
            )
            self._buffer.extend(read)
            if len(read) < size:
                self._low, self._high = 1, 0  # all read
            elif self._descending:
                self._high = read[-1].seq - 1
            else:
                self._low = read[-1].seq + 1
        return self._buffer[0] if self._buffer else None

    async def pop(self) -> StoredMessage | None:
        message = await self.peek()
        if message is not None:
            self._buffer.popleft()
        return message

    def skip_to(self, seq: int) -> None:
        """Go on from the first message at `seq` or after it (before it, when read back):
        those between are not read."""
        buffer = self._buffer
        if self._descending:
            while buffer and buffer[0].seq > seq:
                buffer.popleft()
            if not buffer:
                self._high = min(self._high, seq)
        else:
            while buffer and buffer[0].seq < seq:
                buffer.popleft()
            if not buffer:
                self._low = max(self._low, seq)


# A piece of a chain, oldest first, and those of its messages of no refused turn: a
# segment, or a run of messages of one whose items depend on no other segment's (`_loose`).
_Piece = tuple[list[StoredMessage], list[StoredMessage]]

# Messages of a segment read before asking how it ends: a segment longer than this (a
# client's history of many messages without a reply between) is read a piece at a time
# when its items do not depend on the next one's.
_LOOSE_AFTER = 16


def _kept(piece: list[StoredMessage], reply: StoredMessage | None) -> list[StoredMessage]:
    """`piece` without the messages of a refused turn, `reply` its turn's reply (None: the
    chain's own input, whose reply is the response)."""
    if reply is None or not reply.refused:
        return piece
    return [m for m in piece if m.run_id != reply.run_id]


def _answered(message: StoredMessage) -> bool:
    return isinstance(replay_entry(message), ChatMessage)


def _loose(end: StoredMessage | None) -> bool:
    """The messages of a segment ending with `end` (None: the chain's own input, which
    ends it) are listed each on its own: an answered reply keeps every one of them."""
    return end is None or _answered(end)


def _unanswered(kept: list[StoredMessage]) -> bool:
    """The piece ends with an empty reply or one cut short: whether its messages are
    listed depends on the next segment (`retries_left_out`)."""
    last = kept[-1]
    return last.role == "assistant" and not _answered(last)


def _same(again: StoredMessage, asked: StoredMessage) -> bool:
    """Whether `again`, a segment's input, asks what `asked` did (`retries_left_out`)."""
    chat, earlier = replay_entry(again), replay_entry(asked)
    assert isinstance(chat, ChatMessage) and isinstance(earlier, ChatMessage)  # no replies
    return same_message(chat, earlier)


def _has_reply(kept: list[StoredMessage]) -> bool:
    return any(m.role == "assistant" for m in kept)


def segment_items(
    session_id: str, kept: list[StoredMessage], after: list[StoredMessage]
) -> list[dict[str, Any]]:
    """The items of a piece's `kept` messages, `after` the kept messages after it (at
    least the next segment's first as many as the piece has, when it has fewer: all of
    them; empty: none): the same as `chain_items` makes of them in the whole chain."""
    asked: list[Replayed] = []  # the next try's first messages, all that is compared
    for message in after[: len(kept)]:
        if message.role == "assistant":
            break
        asked.append(replay_entry(message))
    return _listed(kept, tuple(replay_entry(m) for m in kept), tuple(asked))


@attrs.define
class _Chain:
    """Where a chain's messages are: `low` to `top` (its reply's seq not included)."""

    store: Store
    session_id: str
    low: int
    top: int
    batch: int  # messages read at once
    # The unanswered ends of segments found listed whole, and of those found left out (a
    # retry asked them all again) with their first message's seq (`decide`).
    whole: set[int] = attrs.field(factory=set)
    left_out: dict[int, int] = attrs.field(factory=dict)

    def depends(self, kept: list[StoredMessage]) -> bool:
        """Whether the items of a piece's `kept` messages depend on the next segment's
        (`segment_items`): it ends unanswered, and its segment was not found listed whole."""
        return _unanswered(kept) and kept[-1].seq not in self.whole

    async def decide(self, end: StoredMessage) -> bool:
        """Whether the long segment that ends with `end`, a reply empty or cut short, is
        listed whatever it holds (True), or left out (False): the next segment listed
        begins with all its messages again, a retry of its turn (`retries_left_out`). A
        few lookups, and the two segments compared in the database, where each may be
        thousands of messages (a client's history that the upstream failed on, sent
        again)."""
        if end.seq in self.whole or end.seq in self.left_out:
            return end.seq in self.whole
        reply = await self.reply(end)
        listed = True  # a refused turn's segment lists nothing either way
        before = await self.store.last_assistant_in(self.session_id, self.low, end.seq - 1)
        start = (before if before is not None else self.low - 1) + 1
        first = await self.store.messages_in(self.session_id, start, end.seq - 1, False, 1)
        if first and not (reply is not None and reply.refused):
            ahead = await self.after_refused(end)  # the turns right after it refused: skipped
            nxt = await self.store.messages_in(self.session_id, ahead, self.top, False, 1)
            if nxt and nxt[0].role != "assistant" and _same(nxt[0], first[0]):
                listed = await self._asked_again(first[0].seq, end.seq, ahead)
        if listed:
            self.whole.add(end.seq)
        else:
            self.left_out[end.seq] = first[0].seq
        return listed

    async def _asked_again(self, start: int, end: int, ahead: int) -> bool:
        """`decide` for a segment from `start` to before `end` that the one at `ahead`
        begins as it does: False when it asks each of its messages again. A message sent
        again in other whitespace asks the same (`same_message`): past one that the store
        finds stored otherwise, the two are read and compared a pair at a time (more at a time
        while the next is stored otherwise too), and the store compares the rest."""
        stop = await self.end(ahead)
        if (stop.seq if stop is not None else self.top + 1) - ahead < end - start:
            return True  # fewer messages: not all of them asked again
        shift = ahead - start
        size = 1
        differs = await self.store.first_difference(self.session_id, start, end - 1, shift)
        while differs is not None:
            high = min(differs + size - 1, end - 1)
            pairs = await self.store.messages_in(self.session_id, differs, high, False, size)
            again = await self.store.messages_in(
                self.session_id, differs + shift, high + shift, False, size
            )
            if len(pairs) != len(again) or not all(map(_same, again, pairs)):
                return True
            low = high + 1
            differs = await self.store.first_difference(self.session_id, low, end - 1, shift)
            # Pairs one after another stored otherwise (a client that trims every message)
            # are read more at a time; one far on, alone again.
            size = min(size * 2, self.batch) if differs == low else 1
        return False

    def reader(self, span: tuple[int, int], descending: bool, first: int) -> _Reader:
        return _Reader(self.store, self.session_id, span, descending, (first, self.batch))

    async def reply(self, last: StoredMessage) -> StoredMessage | None:
        """The reply of the turn of a piece that ends with `last`."""
        if last.stop_reason is not None:
            return last
        return await self.store.turn_reply(self.session_id, last.seq, self.top)

    async def after_refused(self, reply: StoredMessage) -> int:
        """The seq after the run of refused turns whose first has this `reply`: a client
        that sends a request too large again and again leaves thousands of them, none of
        them listed."""
        end = await self.store.refused_run_end(self.session_id, reply.seq + 1, self.top)
        return (end if end is not None else reply.seq) + 1

    async def before_refused(self, seq: int) -> int:
        """The seq before the refused turns that the message at `seq` ends a run of (its
        turn's reply is refused): the last answer before it (`low` - 1: none)."""
        answer = await self.store.last_answer(self.session_id, self.low, seq - 1)
        return answer if answer is not None else self.low - 1

    async def end(self, seq: int) -> StoredMessage | None:
        """The last message of the segment the message at `seq` is in (None: the chain's
        own input, which has none)."""
        return await self.store.next_assistant(self.session_id, seq, self.top)

    async def around(self, seq: int) -> tuple[_Piece, StoredMessage | None] | None:
        """The piece the message at `seq` is in, and its turn's reply; None when it is gone
        (deleted since), or its segment is left out. A segment listed at all is loose (its
        messages each listed whatever the next segment holds, `decide`): the piece is the
        message alone."""
        end = await self.end(seq)
        if end is not None and not _loose(end) and not await self.decide(end):
            return None
        piece = list(await self.store.messages_in(self.session_id, seq, seq, False, 1))
        if not piece:
            return None
        reply = await self.reply(piece[-1])
        return (piece, _kept(piece, reply)), reply


class _Forward:
    """A chain's pieces from one seq on, oldest first, read `first` messages at first (a
    segment to look ahead at, as a rule), then more. `loose`: the first seq is inside a
    loose segment."""

    def __init__(self, chain: _Chain, start: int, first: int, loose: bool = False) -> None:
        self._chain = chain
        self._reader = chain.reader((start, chain.top), False, first)
        self._loose = loose
        self._asked = loose  # how the segment being read ends is known
        # The reply of the turn, first at or after seq `_from` (None: none up to `top`).
        self._reply: StoredMessage | None = None
        self._from: int | None = None
        self._ahead: deque[_Piece] = deque()

    async def _read(self) -> _Piece | None:
        piece: list[StoredMessage] = []
        while (m := await self._reader.pop()) is not None:
            piece.append(m)
            if m.role == "assistant":
                self._loose = self._asked = False  # a new segment begins after it
                break
            if len(piece) < _LOOSE_AFTER:
                continue
            if not self._asked:
                self._asked = True
                end = await self._chain.end(m.seq + 1)
                decided = True if end is None or _loose(end) else await self._chain.decide(end)
                if end is not None and decided is False:
                    # Asked again whole by the next segment: none of it is read. A segment
                    # before it that is compared with its first messages is compared with
                    # the next one's instead, which begin with all of them.
                    self._reader.skip_to(end.seq + 1)
                    self._loose = self._asked = False
                    return [*piece, end], []
                self._loose = True
            if self._loose:
                break
        if not piece:
            return None
        last = piece[-1]
        reply, since = self._reply, self._from
        if since is None or last.seq < since or (reply is not None and last.seq > reply.seq):
            # Each turn's reply looked up once: a client's long history in one turn is many
            # segments of one turn.
            self._reply, self._from = await self._chain.reply(last), last.seq
        kept = _kept(piece, self._reply)
        if self._reply is not None and self._reply.refused:
            # The rest of its turn, and the refused turns right after it, list nothing.
            self._reader.skip_to(await self._chain.after_refused(self._reply))
            self._loose = self._asked = False  # a new segment begins after them
        return piece, kept

    async def peek(self, index: int = 0) -> _Piece | None:
        while len(self._ahead) <= index:
            piece = await self._read()
            if piece is None:
                return None
            self._ahead.append(piece)
        return self._ahead[index]

    async def pop(self) -> _Piece | None:
        piece = await self.peek()
        if piece is not None:
            self._ahead.popleft()
        return piece

    async def following(self, count: int) -> list[StoredMessage]:
        """The kept messages ahead (not consumed), up to the first reply or `count` of
        them: what `segment_items` compares a piece's with."""
        kept: list[StoredMessage] = []
        index = 0
        while len(kept) < count and not _has_reply(kept):
            piece = await self.peek(index)
            if piece is None:
                break
            kept += piece[1]
            index += 1
        return kept


class _Backward:
    """A chain's pieces from one seq back, newest first. `reply`: the reply of the turn of
    the messages just before the first seq, when it is known (a later piece's); `loose`:
    they are of a loose segment."""

    def __init__(
        self,
        chain: _Chain,
        end: int,
        reply: tuple[StoredMessage | None] | None = None,
        loose: bool = False,
    ) -> None:
        self._chain = chain
        self._reader = chain.reader((chain.low, end), True, chain.batch)
        self._reply = reply
        self._loose = loose
        # The unanswered end of the segment being read, until it is asked whether the
        # segment is listed whole (`_Chain.decide`).
        self._end: StoredMessage | None = None

    async def pop(self) -> _Piece | None:
        piece: list[StoredMessage] = []  # newest first
        while (m := await self._reader.peek()) is not None:
            if m.role == "assistant":
                if piece:
                    break
                self._loose = _answered(m)
                self._end = None if self._loose else m  # asked when the segment is long
            elif not piece and self._reply is None:
                self._loose = True  # the chain's own input, read from its end
            piece.append(m)
            await self._reader.pop()
            if len(piece) >= _LOOSE_AFTER and self._end is not None:
                end, self._end = self._end, None
                decided = await self._chain.decide(end)
                if decided is False:
                    # Asked again whole by the next segment: none of the rest is read.
                    self._reader.skip_to(self._chain.left_out[end.seq] - 1)
                    self._reply = (await self._chain.reply(end),)
                    piece.reverse()
                    return piece, []
                self._loose = True
            if self._loose and len(piece) >= _LOOSE_AFTER:
                break
        if not piece:
            return None
        piece.reverse()
        last = piece[-1]
        if last.stop_reason is not None or self._reply is None:
            self._reply = (await self._chain.reply(last),)
        reply = self._reply[0]
        if reply is not None and reply.refused:
            # The messages before it of its turn, and of the refused turns right before
            # it, list nothing: the next piece read ends with the answer before them.
            self._reader.skip_to(await self._chain.before_refused(piece[0].seq))
        return piece, _kept(piece, reply)


@attrs.define
class _Following:
    """Going back: the kept messages after the pieces read so far, oldest first, up to the
    first reply; more of them from `ahead` (the messages after a cursor) when needed."""

    kept: list[StoredMessage]
    ahead: _Forward | None = None

    def before(self, kept: list[StoredMessage]) -> _Following:
        if _has_reply(kept):
            return _Following(kept)
        return _Following(kept + self.kept, self.ahead)

    async def first(self, count: int) -> list[StoredMessage]:
        if self.ahead is not None and len(self.kept) < count and not _has_reply(self.kept):
            self.kept += await self.ahead.following(count - len(self.kept))
            self.ahead = None
        return self.kept


async def input_items_page(
    store: Store, session_id: str, run_id: str, query: ItemsQuery
) -> dict[str, Any]:
    """One page of the input items of the turn `run_id` answered: `items_page` of
    `chain_items` of its whole chain, read a piece at a time. A cursor that names no item
    of the chain is a RequestError."""
    bounds = await store.chain_bounds(session_id, run_id)
    if bounds is None:
        return items_page([], query)
    chain = _Chain(store, session_id, bounds[0], bounds[1] - 1, query.limit + _READ_MORE)
    found: list[dict[str, Any]] = []  # the page's items, and one more when there are more
    wanted = query.limit + 1
    cursor = query.after
    forward: _Forward | None = None
    backward: _Backward | None = None
    later = _Following([])  # going back: what follows
    if cursor is None:
        if query.ascending:
            forward = _Forward(chain, chain.low, chain.batch)
        else:
            backward = _Backward(chain, chain.top)
    else:
        message_id = message_id_of(cursor)
        seq = await store.message_seq(session_id, message_id) if message_id else None
        if seq is None or not chain.low <= seq <= chain.top:
            raise _no_such_item(cursor)
        around = await chain.around(seq)
        if around is None or not around[0][1]:  # deleted since, or of a refused turn
            raise _no_such_item(cursor)
        (piece, kept), reply = around
        inside = piece[-1].role != "assistant"  # the segment goes on after it
        forward = _Forward(chain, piece[-1].seq + 1, _FIRST_READ, inside)
        after = await forward.following(len(kept)) if chain.depends(kept) else []
        items = segment_items(session_id, kept, after)
        if not query.ascending:
            items.reverse()
            backward = _Backward(chain, piece[0].seq - 1, (reply,), loose=True)
            later = _Following(kept) if _has_reply(kept) else _Following(kept, forward)
            forward = None
        ids = [item["id"] for item in items]
        if cursor not in ids:
            raise _no_such_item(cursor)
        found = items[ids.index(cursor) + 1 :]
    while len(found) < wanted:
        if forward is not None:
            got = await forward.pop()
            if got is None:
                break
            kept = got[1]
            if kept:
                after = await forward.following(len(kept)) if chain.depends(kept) else []
                found += segment_items(session_id, kept, after)
        else:
            assert backward is not None
            got = await backward.pop()
            if got is None:
                break
            kept = got[1]
            if kept:
                after = await later.first(len(kept)) if chain.depends(kept) else []
                found += reversed(segment_items(session_id, kept, after))
                later = later.before(kept)
    page = found[: query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(found) > query.limit,
    }


def _no_such_item(item_id: str) -> Exception:
    return bad_request(
        f"No input item with id '{item_id[:MAX_RESPONSE_ID]}' in this response.", "after"
    )
