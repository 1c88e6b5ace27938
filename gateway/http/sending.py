"""The send deadline of an HTTP answer: its client must take in its bytes.

aiohttp waits for a client's socket to drain without a time limit, and a client may stop
reading while its TCP stack goes on acknowledging the window probes (a zero window): the
answer's bytes, its handler and, for a stream, its run's events would be held for as long as
the client keeps the connection, and a client with many connections holds that many. A watch
per answer, a timer every quarter of the deadline rather than a check per write: while the
answer is being written and its bytes wait in the transport, some of them must go out within
the deadline, or the connection is cut (aborted: a close would wait for the same bytes). The
handler's pending write then fails as a client that left does, which every handler takes for
one (a stream's run is aborted, deviation 6). A WebSocket has its own (ws/connection.py).
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from gateway.appkeys import REQUEST_ID, STATE
from gateway.edge_http import client_of

log = structlog.get_logger()


async def watch_sending(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the answer's watch, until its handler is done writing it."""
    transport = request.transport
    if isinstance(response, web.WebSocketResponse) or transport is None:
        return
    deadline = request.app[STATE].options.send_deadline_seconds
    SendWatch(request, transport, deadline).arm()


class SendWatch:
    def __init__(self, request: web.Request, transport: asyncio.Transport, deadline: float) -> None:
        self._request = request
        self._task = request.task  # aiohttp's, which ends once the answer is written whole
        self._transport = transport
        self._writer: AbstractStreamWriter = request.writer
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._sent = self._sent_now()
        self._progress_at = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        # Its end lets go of the request at once, not a quarter deadline later.
        self._task.add_done_callback(self._stop)

    def _sent_now(self) -> int:
        """The answer's bytes the transport has handed to the socket."""
        return self._writer.output_size - self._transport.get_write_buffer_size()

    def arm(self) -> None:
        self._timer = self._loop.call_later(self._deadline / 4, self._check)

    def _stop(self, _: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        transport = self._transport
        if self._task.done() or transport.is_closing():
            return  # written whole, or the connection is gone
        now = self._loop.time()
        sent = self._sent_now()
        if sent != self._sent or not transport.get_write_buffer_size():
            self._sent, self._progress_at = sent, now  # going out, or nothing waiting
        elif now - self._progress_at >= self._deadline:
            log.warning(
                "http_send_stalled",
                path=self._request.path,
                waiting_bytes=transport.get_write_buffer_size(),
                request_id=self._request.get(REQUEST_ID),
                remote=client_of(self._request),
            )
            transport.abort()
            return
        self.arm()
