"""The pages of `GET /v1/responses/{id}/input_items`, read a stretch of the transcript at a
time: a page costs what it lists (and a turn or so around it), not the whole chain, which a
client paging through a long conversation would otherwise read once per page.

The items of a chain are made of its messages as the model was given them
(`chain_items`): without the turns the upstream refused (each known by its reply, its
run's last message), and a turn that got no reply, or part of one, once when the turn
after it asked again (`retries_left_out`, which looks as far as the next turn's inputs).
Both rules start afresh after an answered reply that ends its run (`_ends_run`): the runs
before it are whole (a turn is written whole, its reply last), and the retry rule keeps
nothing across an answered reply. So the chain is cut there into stretches whose items are
made apart, the same as made with the whole chain; a page reads the stretches it lists
from, the one its cursor is in first."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from agents.history import SessionHistory, replay_entry
from agents.providers.base import ChatMessage
from agents.store import StoredMessage
from agents.store_protocol import Store
from agents.transcript import CutShort, retries_left_out
from gateway.http.openai_wire import bad_request
from gateway.http.openresponses_wire import (
    MAX_RESPONSE_ID,
    InputMessage,
    ItemsQuery,
    input_items,
    items_page,
)

# Messages read at once beyond a page's size (some make no item: an empty reply, a refused
# turn), and the first read of the stretch around a cursor (a turn or two, as a rule).
_READ_MORE = 8
_FIRST_READ = 4


def chain_items(session_id: str, messages: tuple[StoredMessage, ...]) -> list[dict[str, Any]]:
    """The input items of `messages`, a chain's messages before its reply (or a stretch of
    them between two cuts, see above), oldest first."""
    history = SessionHistory.of(session_id, 0, messages)
    given = {id(chat) for chat in retries_left_out(history.chats)}
    kept = [
        InputMessage(message.id, chat, _image_count(message.images))
        for message, entry in zip(history.kept, history.chats, strict=True)
        if entry is not None
        for chat in (entry.message if isinstance(entry, CutShort) else entry,)
        if id(chat) in given
    ]
    return input_items(kept)


def _image_count(images: Mapping[str, Any] | None) -> int:
    """How many images a stored message had (`{"count", "mimeTypes"}`, data not kept)."""
    count = images.get("count") if images is not None else None
    return count if type(count) is int and count > 0 else 0


def _ends_run(message: StoredMessage, after: StoredMessage) -> bool:
    """`message`, followed by `after`, is an answered reply that ends its run: a cut."""
    if message.role != "assistant" or after.run_id == message.run_id:
        return False
    return isinstance(replay_entry(message), ChatMessage)


def message_id_of(item_id: str) -> str | None:
    """The stored message an item id was made of (`input_items`): `msg_`, `fco_` or
    `fc_..._<n>` and its id's 32 hex digits; None for any other text."""
    kind, _, rest = item_id.partition("_")
    if kind == "fc":
        rest, _, number = rest.partition("_")
        if not (number.isascii() and number.isdigit()):
            return None
    elif kind not in ("msg", "fco"):
        return None
    if len(rest) != 32 or not all(c in "0123456789abcdef" for c in rest):
        return None
    return f"{rest[:8]}-{rest[8:12]}-{rest[12:16]}-{rest[16:20]}-{rest[20:]}"


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


async def input_items_page(
    store: Store, session_id: str, run_id: str, query: ItemsQuery
) -> dict[str, Any]:
    """One page of the input items of the turn `run_id` answered: `items_page` of
    `chain_items` of its whole chain, read a stretch at a time. A cursor that names no item
    of the chain is a RequestError."""
    bounds = await store.chain_bounds(session_id, run_id)
    if bounds is None:
        return items_page([], query)
    low, top = bounds[0], bounds[1] - 1  # the reply is not an input
    most = query.limit + _READ_MORE
    descending = not query.ascending
    window: list[StoredMessage] = []  # a stretch, oldest first
    cursor = query.after
    if cursor is None:
        main = _Reader(store, session_id, (low, top), descending, (most, most))
    else:
        # The stretch the cursor's message is in: back to the cut before it, and on to the
        # one after it (read on with the page when ascending).
        message_id = message_id_of(cursor)
        seq = await store.message_seq(session_id, message_id) if message_id else None
        if seq is None or not low <= seq <= top:
            raise _no_such_item(cursor)
        up = _Reader(store, session_id, (seq, top), False, (_FIRST_READ, most))
        down = _Reader(store, session_id, (low, seq - 1), True, (_FIRST_READ, most))
        first = await up.pop()
        if first is None:  # the transcript was deleted since
            raise _no_such_item(cursor)
        window = [first]
        while (m := await down.peek()) is not None and not _ends_run(m, window[-1]):
            window.append(m)
            await down.pop()
        window.reverse()
        if descending:
            while (m := await up.peek()) is not None and not _ends_run(window[-1], m):
                window.append(m)
                await up.pop()
        main = down if descending else up
    found: list[dict[str, Any]] = []  # the page's items, and one more when there are more
    wanted = query.limit + 1

    def add(stretch: list[StoredMessage]) -> None:
        nonlocal cursor
        items = chain_items(session_id, tuple(stretch))
        for item in reversed(items) if descending else items:
            if cursor is None:
                found.append(item)
            elif item["id"] == cursor:
                cursor = None

    if descending:
        while window or len(found) < wanted:
            if not window:
                while (m := await main.peek()) is not None and not (
                    window and _ends_run(m, window[-1])
                ):
                    window.append(m)
                    await main.pop()
                if not window:
                    break
                window.reverse()
            add(window)
            if cursor is not None:
                raise _no_such_item(cursor)
            window = []
    else:
        while True:
            m = await main.peek()
            if m is None or (window and _ends_run(window[-1], m)):
                add(window)
                if cursor is not None:
                    raise _no_such_item(cursor)
                window = []
                if m is None or len(found) >= wanted:
                    break
            window.append(m)
            await main.pop()
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
