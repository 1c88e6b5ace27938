"""An incremental Server-Sent Events parser: bytes in, events out (Sans-I/O).

Follows the WHATWG event-stream rules that matter for model APIs: `event:` and `data:` fields,
multi-line data joined with "\\n", comment lines (`:`) ignored, `id:`/`retry:`/unknown fields
ignored, and CRLF, LF or lone CR line endings, also when a chunk boundary splits a CRLF.
It runs once per streamed token, so it works on bytes and allocates little.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

# An upstream that never ends a line would otherwise grow the buffer without bound. No model
# API sends a single event anywhere near this size (a streamed chunk is well under 64 KiB).
MAX_EVENT_BYTES = 8 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """The byte stream cannot be an event stream (an event larger than MAX_EVENT_BYTES)."""


class SSEEvent(NamedTuple):
    event: str  # "message" when the event had no `event:` field
    data: str  # the event's `data:` lines joined with "\n"


class SSEParser:
    """Feed it the body chunk by chunk; each call returns the events completed so far."""

    __slots__ = (
        "_data",
        "_event",
        "_head",
        "_pending",
        "_skip_lf",
        "_started",
        "_tail",
        "_tail_size",
    )

    def __init__(self) -> None:
        # The incomplete last line so far, in the pieces it came in: joined once its line
        # ends. Joined at every piece, a line that a chunked body cuts into n pieces would be
        # copied n times (an endless line of 1 KiB chunks: a minute of the event loop's CPU).
        self._tail: list[bytes] = []
        self._tail_size = 0
        self._data: list[bytes] = []  # the current event's data lines
        self._pending = 0  # at least the bytes held in _data, for the size limit
        self._event = ""
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._started = False
        self._head = b""  # the first bytes while they may be the start of a BOM

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if not self._started:
            # The body's first bytes may be a BOM cut by a chunk boundary: a piece that could
            # still be one waits for the next.
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return []
            self._started = True
            self._head = b""
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
                if not chunk:
                    return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
            if not chunk:
                return []
        tail = self._tail
        if b"\n" not in chunk and b"\r" not in chunk:
            # No line ends here: the piece waits for the end of its line.
            tail.append(chunk)
            self._tail_size += len(chunk)
            if self._tail_size > MAX_EVENT_BYTES:
                raise SSEError("event-stream line too long")
            return []
        if tail:
            tail.append(chunk)
            buf = b"".join(tail)
        else:
            buf = chunk
        if b"\r" in buf:
            # A CR at the very end ends its line now (no waiting for the next chunk);
            # remember to drop the LF of a CRLF that the chunk boundary split.
            self._skip_lf = buf[-1:] == b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        last = lines.pop()
        if len(last) > MAX_EVENT_BYTES:
            raise SSEError("event-stream line too long")
        self._tail = [last] if last else []
        self._tail_size = len(last)
        events = self._lines(lines)
        if self._data:
            # An event spanning chunks: count this chunk against it (an upper bound, kept
            # per chunk rather than per line because this runs for every token).
            self._pending += len(buf)
            if self._pending > MAX_EVENT_BYTES:
                raise SSEError("event-stream event too large")
        return events

    def feed_eof(self) -> list[SSEEvent]:
        """End of body. The last line is taken even without its newline and a pending
        event is dispatched even without its blank line: servers that drop the final
        terminator exist, and the text they sent is real (openai-python does the same)."""
        if self._head:  # a body of a BOM's first bytes and nothing else
            self._tail.append(self._head)
            self._head = b""
        lines = [b"".join(self._tail)] if self._tail else []
        self._tail = []
        self._tail_size = 0
        lines.append(b"")
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if line:
                # `data:` first: nearly every line of a model stream is one.
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                elif line[0] != 0x3A:  # ":" starts a comment (keepalives)
                    name, _, value = line.partition(b":")
                    if name == b"event":
                        self._event = (value[1:] if value[:1] == b" " else value).decode(
                            "utf-8", "replace"
                        )
                    elif name == b"data":  # a bare "data" line: an empty data field
                        data.append(b"")
                    # `id`, `retry` and unknown fields mean nothing to a one-shot stream.
                continue
            # A blank line dispatches; with no data field at all there is no event.
            if data:
                text = data[0] if len(data) == 1 else b"\n".join(data)
                events.append(
                    _new_event(
                        SSEEvent, (self._event or "message", text.decode("utf-8", "replace"))
                    )
                )
                data.clear()
                self._pending = 0
            self._event = ""
        return events


# NamedTuple's own __new__ costs twice as much; this runs once per streamed token.
_new_event = tuple.__new__

# The C scanner that json.loads ends in. Its Python wrapper (a whitespace regex before and
# after, two more calls) is half of decoding a token's chunk (2.5 → 1.2 µs), for data that is
# nearly always one JSON value with nothing around it.
# (`scan_once` is set in JSONDecoder.__init__; typeshed does not declare it.)
_decoder: Any = json.JSONDecoder()
_scan_json: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once


def data_json(data: str) -> Any:
    """An event's data as JSON: what `json.loads(data)` returns or raises, sooner."""
    try:
        value, end = _scan_json(data, 0)
    except StopIteration:
        return json.loads(data)  # whitespace first, or no JSON value: json.loads says which
    if end != len(data):
        return json.loads(data)  # whitespace after, or extra data: the same
    return value
