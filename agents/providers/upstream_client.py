"""Keep-alive HTTP/1.1 to the upstreams, each response's body pushed to its reader as it
arrives.

Why not aiohttp's client (it served until round 7 of the performance work): its reader pulls,
so every read of a streamed reply woke the task iterating it, and the task resumed a chain of
async generators before the token reached the client. Here the body goes to a callback in the
event loop's own call of `data_received`: read, SSE parse, run event and the client's write
happen in one pass, no task woken. Its request set-up was also costly: 75 µs of CPU a request
against 22 for a plain protocol on the same keep-alive connections (c = 16, this box). The
response framing (status line, headers, chunked and length-delimited bodies) is httptools',
the llhttp parser uvloop's authors maintain; this module owns connections, the pool, TLS and
the timeouts.

What it does not do, on purpose: redirects (a 3xx is the caller's error, an API key never
follows one), compression (it asks for `identity`; a coded body is refused), cookies (none
kept: a cookie one upstream answer sets must not reach the next client's request), and
proxies. A URL's `user:password@` is sent as HTTP Basic auth, as aiohttp's client did.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import math
import re
import select
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import NamedTuple, cast
from urllib.parse import unquote, urlsplit

import aiohappyeyeballs
import httptools

from agents.providers.timeouts import Timeouts

__all__ = ["UpstreamClient", "UpstreamProtocolError", "UpstreamResponse", "upstream_target"]

# An idle connection is reused only this long after its last response: below the keep-alive
# timeouts of common servers (nginx 75 s, uvicorn 5 s is the exception: its close is seen in
# `connection_lost` long before), as aiohttp's default.
KEEPALIVE_SECONDS = 15.0
# RFC 8305's recommended Connection Attempt Delay, and aiohttp's default.
HAPPY_EYEBALLS_DELAY_S = 0.25
# Idle connections kept per upstream origin; more are closed when released. The registry
# bounds how many turns run at once, so this only caps what a burst leaves behind.
MAX_IDLE_PER_ORIGIN = 100
# Status line and headers of one response (1xx heads and trailers too): far above any API
# server's, a bound on a broken one.
MAX_HEAD_BYTES = 64 * 1024
# Body bytes that arrived before their reader asked: reading pauses above this (a caller
# between `post` and `read`/`deliver` does not take long; this bounds a flood meanwhile).
MAX_UNREAD_BYTES = 1024 * 1024

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE_RE = re.compile(r"[\r\n\0]")
_UNSAFE_TARGET_RE = re.compile(r"[^\x21-\x7e]")  # would break the request line
# Set by the client only: the body's framing, the connection's fate, and `identity` (a coded
# body would be refused).
_OURS_ONLY = frozenset({"content-length", "transfer-encoding", "connection", "accept-encoding"})


class UpstreamProtocolError(ConnectionError):
    """The upstream broke HTTP/1.1: a malformed or oversized response, an unasked-for
    upgrade, a coded body, bytes on an idle connection. The connection is closed."""


class _Target(NamedTuple):
    origin: tuple[str, str, int]  # scheme, host, port: what a pooled connection can serve
    path: str  # with the query
    host: str  # the Host header
    authorization: str | None  # Basic, from the URL's `user:password@`


@functools.lru_cache(maxsize=64)
def upstream_target(url: str) -> _Target:
    """A URL as the request line and the pool see it (a handful per config: cached).
    ValueError, with what is wrong, for one this client will not use (config validation
    asks it too)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} (http or https)")
    authorization = None
    if parts.username is not None or parts.password is not None:
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        try:
            pair = f"{user}:{password}".encode("latin-1")  # as aiohttp's BasicAuth
        except UnicodeEncodeError:
            raise ValueError("the URL's user or password is not latin-1 text") from None
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    host = parts.hostname
    if not host:
        raise ValueError("no host in the URL")  # not the URL: it may hold a password
    default = 443 if scheme == "https" else 80
    port = parts.port  # ValueError for a bad port
    if port is None:
        port = default
    elif port == 0:
        raise ValueError("port 0 in the URL")
    literal = f"[{host}]" if ":" in host else host
    header = literal if port == default else f"{literal}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _UNSAFE_TARGET_RE.search(path):
        raise ValueError("the URL's path has a space, control or non-ASCII character")
    return _Target((scheme, host, port), path, header, authorization)


def request_head(target: _Target, headers: Mapping[str, str], length: int) -> bytes:
    """The request line and headers of a POST of `length` bytes. A header name that is not a
    token or a value with CR, LF or NUL raises ValueError: a config value must never be able
    to end the head early and write a request of its own."""
    lines = ["POST ", target.path, " HTTP/1.1\r\n"]
    host = f"Host: {target.host}\r\n"
    # Some API front ends (web application firewalls) refuse a request that names no client.
    agent = "User-Agent: clawgate\r\n"
    for name, value in headers.items():
        if not _TOKEN_RE.fullmatch(name) or _UNSAFE_VALUE_RE.search(value):
            raise ValueError(f"header {name!r} is not a valid HTTP header")
        lower = name.lower()
        if lower in _OURS_ONLY:
            continue
        if lower == "authorization" and target.authorization is not None:
            raise ValueError("credentials both in the URL and in an Authorization header")
        if lower == "host":
            host = ""  # a provider's own Host replaces ours
        elif lower == "user-agent":
            agent = ""  # and its own User-Agent ours
        lines.append(f"{name}: {value}\r\n")
    if target.authorization is not None:
        lines.append(f"Authorization: {target.authorization}\r\n")
    lines.append(f"{host}{agent}Accept-Encoding: identity\r\nContent-Length: {length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


class UpstreamClient:
    """Connections to upstreams, kept alive between requests (LIFO per origin).

    `ssl_context`: for https (None: the system's trust store, as `ssl.create_default_context`
    reads it, SSL_CERT_FILE included).
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self.connections_made = 0
        self.closed = False

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Timeouts
    ) -> UpstreamResponse:
        """Send the request; return once the response's status and headers are in.

        Raises OSError (refused, reset, DNS, TLS; UpstreamProtocolError for a broken
        response), TimeoutError (connect, or no byte for `timeouts.idle` seconds), ValueError
        (a URL or header this client will not send). The caller owns the response: `release()`
        or `close()` it.
        """
        if self.closed:
            raise ConnectionError("the upstream client is closed")
        target = upstream_target(url)
        head = request_head(target, headers, len(body))
        connection = self._checkout(target.origin)
        if connection is None:
            connection = await self._connect(target.origin, timeouts.connect)
        response = connection.send(head, body, timeouts)
        try:
            await response.head_received()
        except BaseException:
            response.close()
            raise
        return response

    def _checkout(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if (
                not connection.closed
                and now - connection.parked_at < KEEPALIVE_SECONDS
                and not connection.readable()
            ):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: tuple[str, str, int], seconds: float) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            context = self._ssl if self._ssl is not None else _default_context()
        try:
            async with asyncio.timeout(seconds):
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                # Happy eyeballs (RFC 8305), as aiohttp's client connects: the next address is
                # tried 0.25 s into the last one's attempt, so a host whose IPv6 route is a
                # black hole is reached over IPv4 in a quarter second, not after the timeout
                # (uvloop's create_connection tries one address after the other).
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S
                )
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    sock=sock,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} took over {seconds:g} s") from None
        self.connections_made += 1
        if self.closed:  # closed while we connected
            connection.close()
            raise ConnectionError("the upstream client is closed")
        return connection

    def park(self, connection: _Connection) -> None:
        """A connection whose response was read whole, ready for the next request."""
        idle = self._idle.setdefault(connection.origin, [])
        if self.closed or len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.parked_at = asyncio.get_running_loop().time()
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    def opened(self, connection: _Connection) -> None:
        self._all.add(connection)

    @property
    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def aclose(self) -> None:
        """Close every connection, idle or in use; a response being read fails."""
        self.closed = True
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost


@functools.cache
def _default_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its parser; the parser's callbacks go to the response
    being received."""

    def __init__(self, client: UpstreamClient, origin: tuple[str, str, int]) -> None:
        self.client = client
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        # None once the connection is lost (see connection_lost).
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.parked_at = 0.0
        self._head_bytes = 0
        # Bytes read since the response's last body byte (or its request): a head, 1xx heads,
        # trailers. httptools gathers a header whole before `on_header` sees it, so this is
        # what bounds one that never ends.
        self._bare_bytes = 0
        self._informational = False

    def send(self, head: bytes, body: bytes, timeouts: Timeouts) -> UpstreamResponse:
        assert self.transport is not None and self.response is None
        response = self.response = UpstreamResponse(self, timeouts.idle, timeouts.progress)
        self._bare_bytes = 0
        self.transport.writelines((head, body))  # one send, the body not copied onto the head
        return response

    def readable(self) -> bool:
        """Whether the socket has something to read, or has failed: on an idle connection,
        the server's close (or bytes of no response) that the event loop has not handled yet.

        A POST is not retried by this client: when a connection breaks with no response
        byte, the request may still have reached the server, which may have acted on it (a
        model billed for a turn), so the failure is the caller's. Only a close known before
        the request is written is safe to avoid, and this looks for one as a pooled
        connection is taken (as urllib3 does): the server's FIN or RST already in our
        kernel. What is left is a close on its way while the request is too; the keep-alive
        limit (KEEPALIVE_SECONDS) keeps that race away from the servers' idle timeouts."""
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))  # POLLHUP and POLLERR come whatever was asked

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self.client.forget(self)

    def release(self, response: UpstreamResponse) -> None:
        """The response is over: pool the connection when it may carry another one."""
        if self.response is response:
            self.response = None
        if response.complete and response.reusable and not self.closed:
            self.client.park(self)
        else:
            self.close()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.client.opened(self)

    def data_received(self, data: bytes) -> None:
        response = self.response
        parser = self.parser
        if response is None or parser is None:
            # Bytes nobody asked for: the server broke the protocol. Drop the connection.
            self.close()
            return
        response.last_read = response.loop.time()
        self._bare_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response.fail(UpstreamProtocolError("the upstream switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            # A callback's own error (the reader's, or one of ours) was kept by `fail`; after
            # the response ended (`on_message_begin` refused more) it stays as it was.
            response.fail(UpstreamProtocolError(f"malformed HTTP response: {exc}"))
            self.close()
            return
        if self._bare_bytes > MAX_HEAD_BYTES and self.response is response and not self.closed:
            response.fail(UpstreamProtocolError(f"response headers over {MAX_HEAD_BYTES} bytes"))
            self.close()

    def eof_received(self) -> bool:
        self.closed = True  # no new request on it while connection_lost is on its way
        self.client.forget(self)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.forget(self)
        response = self.response
        if response is not None:
            self.response = None
            response.lost(exc)
        # The parser holds our bound callbacks and we hold the parser (and the response holds
        # us): cycles that only the cyclic collector would free, with the transport and its
        # buffers. No byte comes after this.
        self.parser = None

    # -- httptools callbacks (inside feed_data) -----------------------------------------

    def _feeding(self) -> httptools.HttpResponseParser:
        """The parser whose feed_data calls us now."""
        assert self.parser is not None  # set until connection_lost, which no callback follows
        return self.parser

    def _status(self) -> int:
        return self._feeding().get_status_code()

    def on_message_begin(self) -> None:
        if self.response is None:  # a second response to our one request
            raise UpstreamProtocolError("bytes after the end of the response")
        self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if response is None or response.status or 100 <= self._status() < 200:
            return  # trailers, or the headers of a 100 Continue: nothing about the response
        try:
            self._head_bytes += len(name) + len(value) + 4
            if self._head_bytes > MAX_HEAD_BYTES:
                raise UpstreamProtocolError(f"response headers over {MAX_HEAD_BYTES} bytes")
            response.header(name, value)
        except UpstreamProtocolError as exc:
            response.fail(exc)  # kept: the parser's own error says only which callback
            raise

    def on_headers_complete(self) -> None:
        status = self._status()
        self._informational = 100 <= status < 200
        if not self._informational and self.response is not None:
            self.response.head(status)

    def on_body(self, body: bytes) -> None:
        self._bare_bytes = 0
        if self.response is not None:
            self.response.body(body)

    def on_message_complete(self) -> None:
        if self._informational:  # 100 Continue and friends: the real response follows
            self._informational = False
            return
        response = self.response
        if response is not None:
            self.response = None  # what follows on this connection is no part of it
            response.finished(self._feeding().should_keep_alive())


class UpstreamResponse:
    """One response: its head, then its body read whole (`read`) or pushed (`deliver`).

    A timer runs from the request's write to the body's end: `idle_seconds` without a byte,
    or `progress_seconds` without progress, fail the response with TimeoutError (reads only
    note their time; the one timer, when it fires early, re-arms for the real deadline).
    Progress is what the reader says it is (`progressed`, the time of the read that brought
    it: the relay sets it for each piece of a reply), or the body's end: so a head or a body
    trickled a byte at a time, keepalives alone, fail too.
    """

    def __init__(
        self, connection: _Connection, idle_seconds: float, progress_seconds: float = 0.0
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; repeated ones joined by ", "
        self.reusable = False  # the response ended, and its connection may carry another
        self.complete = False
        self.last_read = self.loop.time()
        self.progressed = self.last_read  # set by the reader: see the class's docstring
        self._connection = connection
        self._close_delimited = True  # no Content-Length, not chunked: EOF ends the body
        self._error: BaseException | None = None
        self._head: asyncio.Future[None] = self.loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._unread: list[bytes] = []
        self._unread_size = 0
        self._limit = -1  # read(): wake the reader past this many unread bytes
        self._sink: Callable[[bytes], None] | None = None
        self._reader: asyncio.Task[object] | None = None
        self._paused = False
        self._idle = idle_seconds or math.inf  # 0: no limit
        self._progress = progress_seconds or math.inf
        self._timer: asyncio.TimerHandle | None = None
        first = self.last_read + min(self._idle, self._progress)
        if first < math.inf:
            self._timer = self.loop.call_at(first, self._check_idle)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    async def head_received(self) -> None:
        await self._head

    async def read(self, limit: int) -> bytes:
        """The body until its end or until more than `limit` bytes are in (then the rest is
        not read: `close()`, never `release()`)."""
        self._limit = limit
        self._resume()
        await self._wait(lambda: self.complete or self._unread_size > limit)
        body = b"".join(self._unread)
        self._unread.clear()
        self._unread_size = 0
        return body

    async def deliver(self, sink: Callable[[bytes], None]) -> None:
        """Hand each piece of the body to `sink` as it arrives, in the event loop's call that
        received it; return at the body's end. What `sink` raises fails the response (the
        connection is closed) and is raised here. Once the calling task is being cancelled,
        nothing more reaches `sink`."""
        self._reader = asyncio.current_task()
        early, self._unread = self._unread, []
        self._unread_size = 0
        try:
            for piece in early:  # what came with the head, or before this call
                sink(piece)
        except BaseException as exc:
            self.fail(exc)
            self._connection.close()
            raise
        self._sink = sink
        self._resume()
        try:
            await self._wait(lambda: self.complete)
        finally:
            self._sink = None

    def release(self) -> None:
        """Done with the response: a complete one gives its connection back to the pool."""
        self._done()
        self._connection.release(self)

    def close(self) -> None:
        """Done with the response, read or not: its connection is closed."""
        self._done()
        self.reusable = False
        self._connection.release(self)

    def _done(self) -> None:
        self._stop_timer()
        # Nobody reads the error after this. Kept, once raised its traceback (whose frames
        # hold us) would make a cycle that only the cyclic collector frees, with the connection.
        self._error = None

    # -- from the connection -------------------------------------------------------------

    def header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in ("content-length", "transfer-encoding"):
            self._close_delimited = False
        if key == "transfer-encoding" and text.strip().lower() != "chunked":
            raise UpstreamProtocolError(f"unrequested transfer-encoding {text!r}")
        if key == "content-encoding" and text.strip().lower() not in ("", "identity"):
            raise UpstreamProtocolError(f"unrequested content-encoding {text!r}")
        known = self.headers.get(key)
        self.headers[key] = text if known is None else f"{known}, {text}"

    def head(self, status: int) -> None:
        self.status = status
        if not self._head.done():
            self._head.set_result(None)

    def body(self, piece: bytes) -> None:
        sink = self._sink
        if sink is not None:
            reader = self._reader
            if reader is not None and reader.cancelling():
                return  # its task is being cancelled: it closes the connection next
            try:
                sink(piece)
            except BaseException as exc:
                self.fail(exc)
                raise
            return
        self._unread.append(piece)
        self._unread_size += len(piece)
        if self._unread_size > self._limit >= 0:
            self._wake()
        elif self._limit < 0 and self._unread_size > MAX_UNREAD_BYTES and not self._paused:
            transport = self._connection.transport
            if transport is not None:
                transport.pause_reading()
                self._paused = True

    def finished(self, keep_alive: bool) -> None:
        self.complete = True
        self.reusable = keep_alive
        self._stop_timer()
        self._wake()

    def lost(self, exc: Exception | None) -> None:
        """The connection closed under us."""
        self.reusable = False
        if self.complete:
            return
        if exc is None and self._head.done() and self._close_delimited and self.status:
            self.finished(False)  # a body that ends with the connection
            return
        detail = f": {exc}" if exc is not None else ""
        self.fail(ConnectionResetError(f"the upstream closed the connection early{detail}"))

    def fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
        self._stop_timer()
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a caller cancelled meanwhile never looks
        self._wake()

    # -- internals -----------------------------------------------------------------------

    async def _wait(self, enough: Callable[[], bool]) -> None:
        """Until `enough()`; the response's error, if it failed meanwhile, is raised."""
        while not enough():
            self._raise_error()
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            transport = self._connection.transport
            if transport is not None and not self._connection.closed:
                transport.resume_reading()

    def _check_idle(self) -> None:
        now = self.loop.time()
        idle = self.last_read + self._idle
        if self._paused:  # we are the slow side: the upstream is not idle
            idle = now + self._idle
        progress = self.progressed + self._progress
        deadline = min(idle, progress)
        if deadline > now:
            self._timer = self.loop.call_at(deadline, self._check_idle)
            return
        self._timer = None
        if idle <= now:
            error = TimeoutError(f"no data from the upstream for {self._idle:g} s")
        else:
            seconds = f"{self._progress:g}"
            error = TimeoutError(f"nothing of the reply from the upstream for {seconds} s")
        self.fail(error)
        self._connection.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
