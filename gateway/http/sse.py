"""A thin server-sent-events response: OpenAI's stream wire over an aiohttp StreamResponse."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

# http-openai.md §7. Chunked (no Content-Length), never compressed: a compressor would hold
# events back until its buffer fills.
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

    @property
    def opened(self) -> bool:
        return self.response.prepared

    async def open(self, request: web.Request, first: bytes) -> None:
        """The headers and the first event go out together, at once."""
        self._request = request
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

        aiohttp's write puts the bytes on the transport, then awaits a drain only when the
        transport paused writing, which a transport with nothing buffered has not: the
        coroutine ends in its first step. Should it ever stop at the drain, the bytes are out
        already and the next `send` waits for it instead."""
        step = self.response.write(data)
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()

    async def close(self, last: bytes) -> None:
        """The last events and the end of the chunked body, in one write."""
        await self.response.write_eof(last)
