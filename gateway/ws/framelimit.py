"""Two frame limits on one socket: 64 KiB until hello-ok, `maxPayload` after (ws-protocol.md §2.3);
and no unmasked frame from a client (RFC 6455 §5.1).

aiohttp refuses a frame over its limit from the frame's header, before buffering any of the
payload, which is what makes a 25 MiB frame from an unauthenticated client cheap. But it fixes
the limit when `prepare()` builds the frame reader (a compiled one whose limit cannot be
changed afterwards) and has no API to change it. So the socket starts with the pre-auth limit
and, after hello-ok, `raise_frame_limit` puts a new reader with the full limit in its place.

aiohttp's reader does not look at the mask bit either. `MaskedFramesOnly` stands in front of
it from the socket's first byte (the upgrade request's own read may carry frames), follows the
headers (rfc6455.MaskCheck), and at the first unmasked frame fails the reader as aiohttp does
for a frame over the limit: `receive()` closes the socket with 1002.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError

from gateway.ws.rfc6455 import MaskCheck


class GatewayWebSocket(web.WebSocketResponse):
    """aiohttp closes a socket whose frame is over the limit itself, with code 1009 and no
    reason; this one gives the reason the protocol names and stops reading at once, so the
    rest of the frame stays in the client's buffers and the kernel's, not in ours."""

    too_big_reason: str = ""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message and self.too_big_reason:
            message = self.too_big_reason.encode()
            transport = self._req.transport if self._req is not None else None
            if transport is not None and not transport.is_closing():
                transport.pause_reading()
        return await super().close(code=code, message=message, drain=drain)

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        # aiohttp feeds the bytes read with the upgrade request to its reader as it installs
        # it: they are held back until the check stands in front of it.
        http: Any = request.protocol
        tail, http._message_tail = http._message_tail, b""
        super()._post_start(request, protocol, writer)
        internals: Any = self
        if http._payload_parser is not internals._parser:
            raise RuntimeError("aiohttp's WebSocket reader is not where clawgate expects it")
        check = http._payload_parser = MaskedFramesOnly(internals._parser, internals._reader)
        if tail:
            eof, _ = check.feed_data(tail)
            if eof:
                http.close()


class MaskedFramesOnly:
    """In aiohttp's protocol, where its frame reader was: the reader, behind the mask check."""

    __slots__ = ("_check", "_queue", "_refused", "reader")

    def __init__(self, reader: Any, queue: Any) -> None:
        self.reader = reader
        self._queue = queue  # where the reader puts the messages (and its failure)
        self._check = MaskCheck()
        self._refused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._refused:
            return True, b""
        at = self._check.feed(bytes(data))
        if at is None:
            result: tuple[bool, bytes] = self.reader.feed_data(data)
            return result
        if at:
            eof, _ = self.reader.feed_data(data[:at])
            if eof:
                return True, b""
        self._refused = True
        self._queue.set_exception(
            WebSocketError(WSCloseCode.PROTOCOL_ERROR, "Received a frame that is not masked")
        )
        return True, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()


def raise_frame_limit(ws: web.WebSocketResponse, request: web.Request, limit: int) -> None:
    """Give `ws` (prepared) a frame reader with `limit` in place of its current one.

    Touches aiohttp's private `_parser`, `_reader` and the protocol's `_payload_parser`, here
    only; tests/ws/test_frame_limit.py fails when aiohttp changes them. Called right after the
    `connect` frame was read: a client that sent more frames behind it without waiting for
    hello-ok (no OpenClaw client does) may have had part of the next frame read by the old
    reader; the new one then sees a broken frame and closes the socket (1002).
    """
    internals: Any = ws
    protocol: Any = request.protocol
    old = internals._parser
    check = protocol._payload_parser
    if not isinstance(check, MaskedFramesOnly) or check.reader is not old:
        raise RuntimeError("aiohttp's WebSocket reader is not where clawgate expects it")
    new = type(old)(
        internals._reader,
        limit,
        compress=bool(internals._compress),
        decode_text=internals._decode_text,
    )
    check.reader = new
    internals._parser = new
    internals._max_msg_size = limit
