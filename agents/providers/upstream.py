"""What the network providers share: opening the upstream request, relaying its stream
(reading, the connection's release or close, failure mapping), failure classification
(agents-sessions.md §6.5), Retry-After parsing, and debug logging of upstream bodies.

Each provider supplies only its wire format: a `StreamDecoder` that says what each SSE event
means, and how a non-streamed JSON answer reads.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
import structlog

from agents.config import ProviderConfig
from agents.errors import (
    MalformedStream,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
)
from agents.providers.base import ProviderEvent
from agents.providers.sse import SSEError, SSEEvent, SSEParser
from agents.providers.timeouts import Timeouts

log = structlog.get_logger()

# §6.5: upstream bodies are logged at debug level, truncated to 2 KiB.
LOG_BODY_BYTES = 2048
# A whole (non-streamed) JSON answer is one completion: far below this. The bound keeps a
# misbehaving upstream from filling our memory.
MAX_JSON_BODY = 16 * 1024 * 1024


def upstream_session() -> aiohttp.ClientSession:
    """The client session the providers share. Created on first use, inside the running loop;
    no total timeout because a stream may last as long as the run (the providers enforce
    connect/idle). No cookie jar: a cookie one upstream response sets must not go out with
    the next client's request (and filtering the jar cost every request CPU)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar()
    )


def client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """connect: DNS + TCP + TLS (and a pool slot). sock_read: aiohttp re-arms it on every
    received byte and pauses it while we apply back-pressure, which is exactly "no byte for
    `idle` seconds" (also before the response headers; a streamed body hands it over to an
    `IdleWatchdog`). No total: a stream lasts the run."""
    return aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_read=timeouts.idle)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> int | None:
    """Seconds to wait, rounded up; None when the upstream gave no usable hint.

    `retry-after-ms` (OpenAI, Azure) wins when present because it is the more precise of the
    two; `Retry-After` is delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return math.ceil(value / 1000)
    text = headers.get("Retry-After")
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 850/asctime forms carry no zone; HTTP dates are GMT
            return None
        now = time.time() if now is None else now
        return max(0, math.ceil(when.timestamp() - now))
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return math.ceil(seconds)


def status_error(status: int, headers: Mapping[str, str]) -> UpstreamError:
    """§6.5: 429 rate limited, 401/403 auth, any other status ≥ 400 a plain upstream error."""
    if status == 429:
        return UpstreamRateLimited(parse_retry_after(headers))
    if status in (401, 403):
        return UpstreamAuthFailed(status)
    return UpstreamStatusError(status)


def transport_error(exc: BaseException) -> UpstreamError:
    """A failure of the connection itself. aiohttp's connect and sock_read timeouts are
    TimeoutError subclasses; everything else (refused, reset, DNS, TLS, truncated body)
    is a plain upstream error. The detail names the exception (host:port at most)."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(detail)
    return UpstreamError(detail)


def log_body(event: str, provider: ProviderConfig, body: bytes | str, **fields: Any) -> None:
    """Debug-log an upstream body, truncated to 2 KiB, with our API key scrubbed (upstreams
    echo a wrong key back in their 401 bodies)."""
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    text = body[:LOG_BODY_BYTES].decode("utf-8", "replace")
    if provider.api_key:
        text = text.replace(provider.api_key, "[redacted]")
    log.debug(
        event,
        provider=provider.id,
        body=text,
        truncated=len(body) > LOG_BODY_BYTES,
        **fields,
    )


async def open_stream(
    http: aiohttp.ClientSession,
    provider: ProviderConfig,
    url: str,
    headers: Mapping[str, str],
    body: dict[str, Any],
    limits: aiohttp.ClientTimeout,
) -> aiohttp.ClientResponse:
    """POST the request and return the response once its status is known to be good.

    A status ≥ 400 is classified (after a bounded read of its body, for the debug log) and
    raised; the connection is closed, never pooled half-read. Transport failures are mapped
    by `transport_error`. The caller owns the returned response and must close it.
    """
    payload = json.dumps(body, separators=(",", ":")).encode()
    try:
        resp = await http.post(url, data=payload, headers=headers, timeout=limits)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise transport_error(exc) from exc
    if resp.status < 400:
        return resp
    error = status_error(resp.status, resp.headers)
    try:
        text = await read_some(resp, LOG_BODY_BYTES + 1)
        log_body("upstream_error_body", provider, text, status=resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass  # the status alone classifies the failure; the body was only for the log
    finally:
        resp.close()
    raise error


async def read_some(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read the body until EOF or at least `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.readany()
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


async def read_json(resp: aiohttp.ClientResponse, provider: ProviderConfig) -> Any:
    """The whole body of a non-streamed answer, parsed; bad or oversized JSON is malformed."""
    body = await read_some(resp, MAX_JSON_BODY + 1)
    if len(body) > MAX_JSON_BODY:
        raise MalformedStream("upstream JSON answer too large")
    try:
        return json.loads(body)
    except ValueError as exc:
        log_body("upstream_malformed_json", provider, body)
        raise MalformedStream("upstream answer is not valid JSON") from exc


# What aiohttp's own sock_read timeout says: a stalled stream fails the same with either.
_IDLE_TIMEOUT_TEXT = "Timeout on reading data from socket"


class IdleWatchdog:
    """`seconds` without a read that returned bytes fail the body's reader with aiohttp's
    own SocketTimeoutError, as its sock_read timeout does.

    aiohttp re-arms sock_read (a new timer, the old one cancelled) on every packet, which a
    stream of tokens pays once per chunk. Here a read only records its time in `last`, and
    one timer, when it fires early, re-arms for the real deadline. Bytes that arrived but
    were not read yet (we are the slow side) also count as progress, as aiohttp pauses
    sock_read while it applies back-pressure.
    """

    __slots__ = ("_content", "_loop", "_seconds", "_seen", "_timer", "last")

    def __init__(self, resp: aiohttp.ClientResponse, seconds: float) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._content = resp.content
        self._seconds = seconds
        self._seen = resp.content.total_bytes
        self.last = loop.time()
        connection = resp.connection
        if connection is not None and connection.protocol is not None:
            # From here on we watch the body: aiohttp's timer is not re-armed any more (the
            # one pending is cancelled by the next packet, or fails the body just as ours).
            connection.protocol.read_timeout = None
        self._timer: asyncio.TimerHandle | None = loop.call_at(self.last + seconds, self._fire)

    def _fire(self) -> None:
        now = self._loop.time()
        received = self._content.total_bytes
        if received != self._seen:
            self._seen = received
            self.last = max(self.last, now)
        deadline = self.last + self._seconds
        if deadline > now:
            self._timer = self._loop.call_at(deadline, self._fire)
            return
        self._timer = None
        self._content.set_exception(aiohttp.SocketTimeoutError(_IDLE_TIMEOUT_TEXT))

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class StreamDecoder(Protocol):
    """One upstream stream in one wire format, decoded event by event."""

    done: bool  # the format's terminator arrived (`[DONE]`, `message_stop`)
    data: str  # the event data being decoded: logged when it turns out malformed

    def feed(self, events: Sequence[SSEEvent]) -> Iterator[ProviderEvent]:
        """The reply text in `events`; stops reading them at the terminator."""
        ...

    def finish(self) -> list[ProviderEvent]:
        """After the terminator or EOF: usage and finish; MalformedStream when the stream
        stopped short of saying it was complete."""
        ...


async def relay(
    http: aiohttp.ClientSession,
    provider: ProviderConfig,
    url: str,
    headers: Mapping[str, str],
    body: dict[str, Any],
    limits: aiohttp.ClientTimeout,
    decoder: StreamDecoder,
    json_answer: Callable[[Any], list[ProviderEvent]],
) -> AsyncIterator[ProviderEvent]:
    """POST the request and yield its reply: a stream through `decoder`, or a JSON answer
    (an upstream that ignored `stream`) through `json_answer`."""
    resp = await open_stream(http, provider, url, headers, body, limits)
    # Until the stream ended cleanly, leaving this generator (error, task cancellation,
    # aclose) closes the connection: a half-read response must not go back to the pool,
    # and the upstream has to see the disconnect to stop generating.
    finished = False
    try:
        if resp.content_type == "application/json":
            answer = json_answer(await read_json(resp, provider))
            finished = True  # the body is read: the connection may be reused
            for event in answer:
                yield event
            return
        parser = SSEParser()
        read = resp.content.readany
        feed = decoder.feed
        idle = None if limits.sock_read is None else IdleWatchdog(resp, limits.sock_read)
        clock = asyncio.get_running_loop().time
        try:
            while not decoder.done:
                chunk = await read()
                if idle is not None:
                    idle.last = clock()
                for event in feed(parser.feed(chunk) if chunk else parser.feed_eof()):
                    yield event
                if not chunk:
                    break
        finally:
            if idle is not None:
                idle.cancel()
        tail = decoder.finish()
        # The stream is over: set before the last yields so that a consumer closing us right
        # after Finish releases the connection (aiohttp pools it only if the body reached
        # EOF, else it closes it) instead of forcing a close.
        finished = True
        for event in tail:
            yield event
    except (ValueError, TypeError, AttributeError, LookupError) as exc:
        # json.loads, SSEError and an event of the wrong shape all land here.
        if decoder.data:
            log_body("upstream_malformed_stream", provider, decoder.data)
        detail = str(exc) if isinstance(exc, SSEError) else type(exc).__name__
        raise MalformedStream(f"malformed upstream stream ({detail})") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise transport_error(exc) from exc
    finally:
        if finished:
            resp.release()
        else:
            resp.close()
