"""Two frame limits on one socket: 64 KiB until hello-ok, `maxPayload` after (ws-protocol.md §2.3).

aiohttp refuses a frame over its limit from the frame's header, before buffering any of the
payload, which is what makes a 25 MiB frame from an unauthenticated client cheap. But it fixes
the limit when `prepare()` builds the frame reader (a compiled one whose limit cannot be
changed afterwards) and has no API to change it. So the socket starts with the pre-auth limit
and, after hello-ok, `raise_frame_limit` puts a new reader with the full limit in its place.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, web


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
    if protocol._payload_parser is not old:
        raise RuntimeError("aiohttp's WebSocket reader is not where clawgate expects it")
    new = type(old)(
        internals._reader,
        limit,
        compress=bool(internals._compress),
        decode_text=internals._decode_text,
    )
    protocol._payload_parser = new
    internals._parser = new
    internals._max_msg_size = limit
