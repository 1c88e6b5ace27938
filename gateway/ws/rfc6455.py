"""The header of a text frame as a server sends it (RFC 6455 §5.2), Sans-I/O.

aiohttp writes each frame with its own `transport.write`, a system call each; the connection's
writer sends frames queued together in one write instead, with these headers in front of them.
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
