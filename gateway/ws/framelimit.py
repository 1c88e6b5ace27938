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

Following the headers, it also knows where the first message (`connect`) ends: what a client
sends behind it without waiting for hello-ok waits, unread, until the reader with the full
limit is in place (or the handshake failed), rather than meet the pre-auth limit or have its
first bytes read by the old reader and the rest by the new one. At most about
`HELD_MAX` bytes wait: beyond it the socket is not read until then.

And it knows how much of a message has come while the message is not whole, which the reader
keeps (a frame's payload, a fragmented message's frames) until its end. After hello-ok that
is up to `maxPayload` (25 MiB) a socket, for as long as the client takes to send the rest. So
a message begun must be whole within a deadline (one timer, armed only while a message is
not whole at the end of a read; 1008), and the bytes of messages not yet whole of every
socket together are bounded (`PartialFrames`): the socket whose bytes would go over it is
closed with 1013, try again later, and the others go on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError

from gateway.ws.rfc6455 import MaskCheck

# Bytes behind `connect` kept while the handshake ends (beyond them the socket is not read).
HELD_MAX = 64 * 1024

REASON_TOO_SLOW = "message not whole in time"
REASON_PARTIAL_FULL = "too many partial messages; try again later"


@attrs.define
class PartialFrames:
    """The payload bytes of messages begun and not yet whole, of every socket together
    (`WsSettings.max_partial_total_bytes`)."""

    limit: int
    held: int = 0


class GatewayWebSocket(web.WebSocketResponse):
    """aiohttp closes a socket whose frame is over the limit itself, with code 1009 and no
    reason; this one gives the reason the protocol names and stops reading at once, so the
    rest of the frame stays in the client's buffers and the kernel's, not in ours."""

    too_big_reason: str = ""
    # Given by the handler before `prepare`: the bound on every socket's partial messages and
    # the time a message begun has to be whole.
    partial_frames: PartialFrames | None = None
    message_deadline: float = 60.0
    _check: MaskedFramesOnly | None = None

    @property
    def refusal(self) -> tuple[int, str] | None:
        """The close code and reason of a stream refused by `MaskedFramesOnly`."""
        return self._check.refusal if self._check is not None else None

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        check = self._check
        if not message and check is not None and check.refusal is not None:
            # aiohttp closes with the code of the reader's failure, without its reason.
            refused, reason = check.refusal
            if code == refused:
                message = reason.encode()
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
        check = MaskedFramesOnly(
            internals._parser,
            internals._reader,
            http,
            self.partial_frames or PartialFrames(limit=2**62),
            self.message_deadline,
        )
        self._check = check
        http._payload_parser = check
        if tail:
            eof, _ = check.feed_data(tail)
            if eof:
                http.close()


class MaskedFramesOnly:
    """In aiohttp's protocol, where its frame reader was: the reader, behind the mask check;
    and until `release`, the bytes behind the first message held back."""

    __slots__ = (
        "_check",
        "_deadline",
        "_held",
        "_http",
        "_partial",
        "_paused",
        "_queue",
        "_refused",
        "_timer",
        "reader",
        "refusal",
    )

    def __init__(
        self, reader: Any, queue: Any, http: Any, partial: PartialFrames, deadline: float
    ) -> None:
        self.reader = reader
        self._queue = queue  # where the reader puts the messages (and its failure)
        self._http = http  # aiohttp's protocol: reading paused and resumed, closed
        self._check = MaskCheck(stop_after_message=True)
        self._refused = False
        self._held: bytearray | None = None  # what came behind the first message
        self._paused = False
        self._partial = partial
        self._deadline = deadline
        self._timer: asyncio.TimerHandle | None = None  # while a message is not whole
        self.refusal: tuple[int, str] | None = None  # the close code and reason, if refused

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._refused:
            return True, b""
        held = self._held
        if held is not None:
            held += data
            if len(held) > HELD_MAX:
                # Again each time: aiohttp's reader resumes reading when its own queue drains.
                self._paused = True
                self._http.pause_reading()
            return False, b""
        check = self._check
        partial, ended = check.partial, check.ended
        at = check.feed(bytes(data))
        if check.partial != partial:
            total = self._partial
            if check.partial > partial and total.held + check.partial - partial > total.limit:
                # Not fed to the reader: what it holds of this socket stays counted.
                check.partial = partial
                self._refuse(WSCloseCode.TRY_AGAIN_LATER, REASON_PARTIAL_FULL)
                return True, b""
            total.held += check.partial - partial
        if check.pending:
            if self._timer is None or check.ended != ended:  # a message begun in this read
                self._arm()
        elif self._timer is not None:
            self._stop_timer()
        stop = check.stopped_at
        if stop is not None:
            check.stopped_at = None
            self._held = bytearray(data[stop:])
            data = data[:stop]
        if at is None:
            result: tuple[bool, bytes] = self.reader.feed_data(data)
            return result
        if at:
            eof, _ = self.reader.feed_data(data[:at])
            if eof:
                return True, b""
        self._refuse(WSCloseCode.PROTOCOL_ERROR, "Received a frame that is not masked")
        return True, b""

    def feed_eof(self) -> None:
        """The socket is gone (aiohttp's protocol lost its connection)."""
        self._stop_timer()
        check = self._check
        self._partial.held -= check.partial
        check.partial = 0
        self.reader.feed_eof()
        # aiohttp lets go of its reader here; the socket (which keeps `refusal` for its log
        # line) may outlive it a while, the reader's buffers need not.
        self.reader = None

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._deadline, self._too_slow)

    def _too_slow(self) -> None:
        self._timer = None
        if not self._refused:
            self._refuse(WSCloseCode.POLICY_VIOLATION, REASON_TOO_SLOW)

    def _refuse(self, code: int, reason: str) -> None:
        """Fail the reader: `receive()` closes the socket with `code` (and `reason`).

        The reader keeps what it has of a partial message until the socket is gone, so it
        counts until then (`feed_eof`); aiohttp's close then ends at once, not waiting for the
        client's close frame, which the reader would not read anyway."""
        self._refused = True
        self.refusal = (code, reason)
        self._stop_timer()
        self._queue.set_exception(WebSocketError(code, reason))

    def release(self) -> None:
        """The handshake is over: the bytes held go to the reader (the new one, after
        hello-ok), and the socket is read again."""
        held, self._held = self._held, None
        self._check.stop_after_message = False
        if held:
            eof, _ = self.feed_data(bytes(held))
            if eof:
                self._http.close()
        if self._paused:
            self._paused = False
            self._http.resume_reading()


def release_frames(request: web.Request) -> None:
    """The handshake failed: what the client sent behind its first frame is read after all
    (its close frame among it, which the close waits for)."""
    check: Any = request.protocol._payload_parser if request.protocol is not None else None
    if isinstance(check, MaskedFramesOnly):
        check.release()


def raise_frame_limit(ws: web.WebSocketResponse, request: web.Request, limit: int) -> None:
    """Give `ws` (prepared) a frame reader with `limit` in place of its current one.

    Touches aiohttp's private `_parser`, `_reader` and the protocol's `_payload_parser`, here
    only; tests/ws/test_frame_limit.py fails when aiohttp changes them. Called right after the
    `connect` frame was read; what the client sent behind it, held back until now, then goes
    to the new reader (`MaskedFramesOnly.release`).
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
    check.release()
