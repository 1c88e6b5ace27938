"""A thin server-sent-events response: OpenAI's stream wire over an aiohttp StreamResponse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http import StreamWriter

# http-openai.md §7. Chunked (no Content-Length; over HTTP/1.0 up to the close), never
# compressed: a compressor would hold events back until its buffer fills.
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",  # nginx would otherwise buffer the stream
}


class EventStream:
    """One `text/event-stream` response, written in already-encoded events.

    Every header is set before `open()`: prepare() runs the on_response_prepare handlers
    (common headers, CORS) and sends the headers, after which nothing can be added.
    `send` and `close` raise ConnectionError when the client has gone away.
    """

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
        self._request: web.Request | None = None
        self._closed = False

    @property
    def opened(self) -> bool:
        return self.response.prepared

    async def open(self, request: web.Request, first: bytes) -> None:
        """The headers and the first event go out together, at once."""
        self._request = request
        if request.version < HttpVersion11 or not request.keep_alive:
            # HTTP/1.0 has no chunked coding: the stream ends where the connection does
            # (RFC 9112 §6.3), whatever keep-alive the client asked for. aiohttp notes that
            # as it prepares the head but keeps the connection open all the same, and the
            # spec's `Connection: keep-alive` (§7) is for HTTP/1.1's chunked stream on a
            # connection kept open: one whose client sent `Connection: close` closes after
            # the stream, and its answer says so (RFC 9112 §9.6; the spec is silent).
            self.response.force_close()
            self.response.headers[hdrs.CONNECTION] = "close"
        await self.response.prepare(request)
        await self.response.write(first)

    async def send(self, data: bytes) -> None:
        await self.response.write(data)

    def can_send_now(self) -> bool:
        """`send_now` would write at once: the client's socket has nothing buffered (so no
        back-pressure to wait for) and the body is not compressed (no compressor to run)."""
        if self._request is None:
            return False
        transport = self._request.transport
        return (
            transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() == 0
            and not self.response.compression
        )

    def send_now(self, data: bytes) -> None:
        """`send` for a caller that cannot await, after `can_send_now()` said yes.

        The bytes go on the transport without waiting for it to drain; the next `send` waits
        for the drain. They are framed here as aiohttp's writer frames a chunk (the head went
        out with the first event, in `open`, and `can_send_now` ruled out compression) and
        counted in its sizes as its own write counts them: its drain and the response's
        `body_length` see them. Stepping aiohttp's `write(drain=False)` coroutine instead cost
        2.8 µs a write against 0.4 (a coroutine, its StopIteration, the checks of a first
        write, a compressor and a declared length, none of which can apply here), once per
        upstream read of a stream."""
        if self._closed or self._request is None:
            raise RuntimeError("the stream is not open")
        if not data:
            return  # framed, nothing would be the end of the body
        writer = cast(StreamWriter, self._request.writer)
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        if writer.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        size = len(data)
        writer.buffer_size += size
        writer.output_size += size
        transport.write(data)

    async def close(self, last: bytes) -> None:
        """The last events and the end of the chunked body, in one write."""
        self._closed = True
        await self.response.write_eof(last)
