"""Frame headers (RFC 6455 §5.2), Sans-I/O: the header of a text frame as a server sends it,
and the mask check of the frames a client sends.

aiohttp writes each frame with its own `transport.write`, a system call each; the connection's
writer sends frames queued together in one write instead, with these headers in front of them.

aiohttp's reader takes a client's frames whether they are masked or not; §5.1 says "the server
MUST close the connection upon receiving a frame that is not masked" (close 1002). `MaskCheck`
follows the client's byte stream from header to header (it reads no payload) and says where
the first unmasked frame begins; framelimit.py puts it in front of aiohttp's reader.
"""

from __future__ import annotations

import struct

# FIN (the whole message in one frame) and opcode 1, text. No RSV bits: no compression.
_FIN_TEXT = 0x81
_SHORT = struct.Struct("!BB")  # a length up to 125 fits in the second byte
_MEDIUM = struct.Struct("!BBH")  # 126, then a 16-bit length
_LONG = struct.Struct("!BBQ")  # 127, then a 64-bit length

# The headers of the short frames, which most events are: built once.
_SHORT_HEADERS = tuple(_SHORT.pack(_FIN_TEXT, n) for n in range(126))


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked (server to client), unfragmented text frame of `length`
    bytes of payload."""
    if length < 126:
        return _SHORT_HEADERS[length]
    if length < 0x10000:
        return _MEDIUM.pack(_FIN_TEXT, 126, length)
    return _LONG.pack(_FIN_TEXT, 127, length)


class MaskCheck:
    """The headers of a client's frames, followed across the chunks its bytes arrive in.

    With `stop_after_message` it also stops at the end of the client's first data message
    (its `connect`): `stopped_at` is then where that end is in the chunk fed, and the bytes
    after it are fed again later.

    It also counts the payload bytes of the data message begun and not yet whole (`partial`,
    what a frame reader keeps of it until its end), and the data messages ended (`ended`)."""

    __slots__ = (
        "_data",
        "_ending",
        "_fin",
        "_fragmented",
        "_header",
        "_skip",
        "ended",
        "partial",
        "stop_after_message",
        "stopped_at",
    )

    def __init__(self, *, stop_after_message: bool = False) -> None:
        self._header = b""  # the start of a header cut by the end of the last chunk
        self._skip = 0  # payload bytes of the current frame still to come
        self._ending = False  # the current frame ends the first data message
        self._data = False  # the current frame is a data frame (not a control frame)
        self._fin = False  # ... and the last of its message
        self._fragmented = False  # a data message's first frames came, its last has not
        self.stop_after_message = stop_after_message
        self.stopped_at: int | None = None
        self.partial = 0
        self.ended = 0

    @property
    def pending(self) -> bool:
        """A data message has begun (its first header came) and is not whole yet."""
        return self._data or self._fragmented

    def feed(self, data: bytes) -> int | None:
        """Where in `data` the first unmasked frame begins (0 when it began in an earlier
        chunk); None while every frame so far is masked."""
        kept = len(self._header)
        if kept:  # rare: a header cut by the end of the last chunk
            data = self._header + data
            self._header = b""
        pos, end, skip = 0, len(data), self._skip
        while True:
            pos += skip
            if pos > end:
                if self._data:
                    self.partial += skip - (pos - end)
                self._skip = pos - end
                return None
            if self._data:  # the end of a data frame
                self._data = False
                if self._fin:
                    self._fragmented = False
                    self.partial = 0
                    self.ended += 1
                else:
                    self._fragmented = True
                    self.partial += skip
            self._skip = 0
            if pos == end and not self._ending:
                return None
            if self._ending:
                self._ending = self.stop_after_message = False
                self.stopped_at = pos - kept
                return None
            if end - pos < 2:
                self._header = data[pos:]
                return None
            second = data[pos + 1]
            if not second & 0x80:
                return max(pos - kept, 0)
            skip = second & 0x7F
            size = 6 if skip < 126 else 8 if skip == 126 else 14  # with the mask key
            if end - pos < size:
                self._header = data[pos:]
                return None
            if skip == 126:
                (skip,) = _LENGTH_16.unpack_from(data, pos + 2)
            elif skip == 127:
                (skip,) = _LENGTH_64.unpack_from(data, pos + 2)
            first = data[pos]
            if first & 0x0F < 0x8:  # a data frame (continuation, text, binary)
                self._data = True
                self._fin = bool(first & 0x80)
                # FIN: the end of a message.
                if self.stop_after_message and self._fin:
                    self._ending = True
            pos += size


_LENGTH_16 = struct.Struct("!H")
_LENGTH_64 = struct.Struct("!Q")
