"""What the network providers share: opening the upstream request, relaying its stream
(reading, the connection's release or close, failure mapping), failure classification
(agents-sessions.md §6.5), Retry-After parsing, and debug logging of upstream bodies.

Each provider supplies only its wire format: a `StreamDecoder` that says what each SSE event
means, and how a non-streamed JSON answer reads.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import email.utils
import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

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
from agents.providers.base import MAX_TOOL_CALL_ID, TOOL_NAME_RE, Deliver, ProviderEvent
from agents.providers.sse import SSEError, SSEEvent, SSEParser
from agents.providers.timeouts import Timeouts
from agents.providers.upstream_client import UpstreamClient, UpstreamResponse

log = structlog.get_logger()

# §6.5: upstream bodies are logged at debug level, truncated to 2 KiB.
LOG_BODY_BYTES = 2048
# After the format's terminator the reply is whole: the body's end (for the connection's
# reuse) is waited for this long at most; an upstream that stalls or hangs up before it fails
# nothing.
AFTER_TERMINATOR_S = 1.0
# A whole (non-streamed) JSON answer is one completion: far below this. The bound keeps a
# misbehaving upstream from filling our memory.
MAX_JSON_BODY = 16 * 1024 * 1024
# A whole answer longer than this is parsed, and read as a reply, in a thread: json.loads of
# the MAX_JSON_BODY it may be takes a good part of a second (many small objects: more), which
# the event loop, serving every other client meanwhile, must not wait for.
PARSE_IN_THREAD_BYTES = 64 * 1024
# A streamed reply's body: a model's longest (128k output tokens and as many of reasoning, a
# token a chunk of some 250 bytes: OpenAI's chunks repeat id, model and timestamps) is under
# 64 MiB. Past this an upstream is streaming without end (a local server looping with no
# token limit, a hostile one): the turn fails rather than hold its run, and its text in
# memory, until the run timeout.
MAX_STREAM_BYTES = 256 * 1024 * 1024
# An upstream's Retry-After is passed on to our client (http-openai.md §8), so it is bounded:
# a day, longer than any provider's rate-limit window. A hint beyond it (`1e30`, a date in the
# year 9999: a broken or hostile upstream) says "much later", and a day says that too.
MAX_RETRY_AFTER_S = 24 * 3600


@functools.lru_cache(maxsize=64)
def endpoint_url(base_url: str, path: str) -> str:
    """`path` (`/chat/completions`) under a provider's base URL: after the base URL's path and
    before its query, which some upstreams need on every request (Azure OpenAI's
    `?api-version=`). A fragment is not sent. (A handful per config: cached.)"""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, fragment=""))


class SentCallIds:
    """The ids one assistant message's calls went under, for their results. A call whose id
    the message already sent goes as `<id>_2`, `<id>_3`, ...: the upstreams refuse a
    message whose calls share an id (some servers give parallel calls one). Linear in the
    calls: a client may send thousands in one message."""

    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[str]] = {}
        self._taken: set[str] = set()
        self._next: dict[str, int] = {}  # per id as sent: the number its next repeat tries

    def add(self, call_id: str, base: str) -> str:
        """The id the call `call_id` goes under: `base` (its id as the upstream takes it), or
        for one the message already sent, `<base>_<n>`."""
        sent = base
        if sent in self._taken:
            number = self._next.get(base, 2)
            sent = f"{base}_{number}"
            while sent in self._taken:  # a call's own id was `<base>_<n>`
                number += 1
                sent = f"{base}_{number}"
            self._next[base] = number + 1
        self._taken.add(sent)
        self._queues.setdefault(call_id, collections.deque()).append(sent)
        return sent

    def result(self, call_id: str | None) -> str | None:
        """The id a result for `call_id` goes under: that of the first of its calls not
        answered yet; None when there is none."""
        queue = self._queues.get(call_id or "")
        return queue.popleft() if queue else None


class UnrelayedReply(ValueError):
    """A reply the gateway does not relay, as malformed: a call's name or id that a client
    could not send back (`check_call`), more calls or thinking blocks than one reply may have
    (base.MAX_TOOL_CALLS, base.MAX_THINKING_BLOCKS)."""


# gpt-oss's chat format puts the tools in a `functions` namespace, and the model names its
# calls so (`functions.get_weather` for a tool declared as `get_weather`) when a server does
# not strip it, as vLLM and others do. A name that is one of the request's tools once that is
# stripped is that tool's; any other name with a dot stays refused.
TOOL_NAMESPACE = "functions."


def declared_tools(params: Mapping[str, Any]) -> frozenset[str]:
    """The function names of a request's `tools` (OpenAI's shape) that its `tool_choice`
    lets the model call, ill-shaped entries left out: none for "none", the named one for a
    named function (`allowed_tools` was already applied to `tools`). A namespaced call of
    another is not read as one of a tool the client forbade (`check_call`)."""
    tools = params.get("tools")
    names: set[str] = set()
    for tool in tools if isinstance(tools, list | tuple) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str):
            names.add(name)
    choice = params.get("tool_choice")
    if choice == "none":
        return frozenset()
    if isinstance(choice, Mapping):
        function = choice.get("function")
        chosen = function.get("name") if isinstance(function, Mapping) else None
        return frozenset(names & {chosen}) if isinstance(chosen, str) else frozenset()
    return frozenset(names)


def check_call(
    call_id: str | None, name: str | None, tools: frozenset[str] = frozenset()
) -> str | None:
    """The call's name as relayed (`name`, or the tool of `tools` that it names in gpt-oss's
    namespace: TOOL_NAMESPACE). UnrelayedReply for a call name (when given) or id from the
    upstream that a client may not send back (`TOOL_NAME_RE`, `MAX_TOOL_CALL_ID`): a broken
    or hostile upstream's name of megabytes, or of characters a client chokes on, fails the
    turn as a malformed reply rather than reach the client and the session."""
    if name is not None and name.startswith(TOOL_NAMESPACE):
        bare = name[len(TOOL_NAMESPACE) :]
        if bare in tools:
            name = bare
    if name is not None and (len(name) > 64 or TOOL_NAME_RE.fullmatch(name) is None):
        raise UnrelayedReply("tool call name is not 1 to 64 letters, digits, '_' or '-'")
    if call_id is not None and len(call_id) > MAX_TOOL_CALL_ID:
        raise UnrelayedReply(f"tool call id is over {MAX_TOOL_CALL_ID} characters")
    return name


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> int | None:
    """Seconds to wait, rounded up; None when the upstream gave no usable hint.

    `retry-after-ms` (OpenAI, Azure) wins when present because it is the more precise of the
    two; `Retry-After` is delta-seconds or an HTTP-date (RFC 9110 §10.2.3). At most
    MAX_RETRY_AFTER_S.
    """
    millis = headers.get("retry-after-ms")  # `headers`: lower-case names
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return min(math.ceil(value / 1000), MAX_RETRY_AFTER_S)
    text = headers.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: a year 10**20
            return None
        if when.tzinfo is None:  # asctime carries no zone: HTTP dates are GMT (RFC 9110 §5.6.7)
            when = when.replace(tzinfo=datetime.UTC)
        now = time.time() if now is None else now
        return min(max(0, math.ceil(when.timestamp() - now)), MAX_RETRY_AFTER_S)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(math.ceil(seconds), MAX_RETRY_AFTER_S)


def status_error(
    status: int, headers: Mapping[str, str], detail: str | None = None
) -> UpstreamError:
    """§6.5: 429 rate limited, 401/403 auth, any other status but 2xx a plain upstream error
    (a 3xx included: redirects are not followed, so an API key never goes where one points)."""
    if status == 429:
        return UpstreamRateLimited(parse_retry_after(headers), detail)
    if status in (401, 403):
        return UpstreamAuthFailed(status, detail)
    return UpstreamStatusError(status, detail)


def stream_error(status: object) -> UpstreamError:
    """An error event inside a 200 stream (OpenRouter and proxies send the upstream's failure
    so, Anthropic its `error` event), or a 200 answer that is an error object. §6.5: an
    in-stream error is an upstream error (502), whatever it names; the status it names is
    kept, so that a 400 marks the turn refused (`UpstreamStatusError.refused`). An event
    naming no error status (none, an unknown word, a 2xx) is a malformed stream. `status` is
    the status the event names, as sent: an integer, or one in a string."""
    named = error_status(status)
    if named is not None:
        return UpstreamStatusError(named, f"in-stream error from upstream (HTTP {named})")
    return MalformedStream("in-stream error from upstream")


def error_status(value: object) -> int | None:
    """The error status (400 to 599) an error's field names, as an integer or in a string."""
    if type(value) is str and value.isascii() and value.isdigit() and len(value) == 3:
        value = int(value)
    if type(value) is int and 400 <= value <= 599:
        return value
    return None


def transport_error(exc: BaseException) -> UpstreamError:
    """A failure of the connection itself. The connect and idle timeouts are TimeoutErrors;
    everything else (refused, reset, DNS, TLS, a truncated or malformed response, a URL or
    header the client will not send) is a plain upstream error. The detail names the
    exception (host:port at most)."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(detail)
    return UpstreamError(detail)


# An upstream's reason for refusing a request, as a client may be shown it: its error body is
# read up to REASON_BODY_BYTES (OpenAI's, vLLM's, Ollama's are a few hundred bytes), and its
# message cut at MAX_REASON_CHARS (a sentence or two: one that echoes the input whole is cut).
REASON_BODY_BYTES = 16 * 1024
MAX_REASON_CHARS = 300
_WHITESPACE_RUN = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def refusal_reason(provider: ProviderConfig, body: bytes | str) -> str | None:
    """The message of an upstream's error body: OpenAI's `{"error": {"message"}}`, Ollama's
    `{"error": "..."}`, vLLM's `{"message"}`, FastAPI's `{"detail": "..."}`. Its control
    characters and line breaks are spaces; the API key and the provider's header values
    (what `log_body` scrubs) are `[redacted]`, found in the decoded text, whatever escapes
    the JSON wrote them with; at most MAX_REASON_CHARS. None without one."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(answer, dict):
        return None
    error = answer.get("error")
    found: Any = error.get("message") if isinstance(error, dict) else error
    for key in ("message", "detail"):
        if not isinstance(found, str):
            found = answer.get(key)
    if not isinstance(found, str):
        return None
    # Lone surrogates (a `\ud800` escape) cannot go out as UTF-8.
    text = found.encode("utf-8", "replace").decode("utf-8")
    for secret in _secrets(provider):
        text = text.replace(secret, "[redacted]")
    text = _WHITESPACE_RUN.sub(" ", text).strip()
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS] + "…"
    return text or None


def explained(error: UpstreamError, provider: ProviderConfig, body: bytes | str) -> UpstreamError:
    """`error`, with the upstream's reason (`refusal_reason` of its error `body`) when it
    refused the request as bad: an error status, an error event in a 200 stream (OpenRouter
    sends the upstream's refusal so) or a 200 answer that is an error object."""
    if isinstance(error, UpstreamStatusError) and error.refused:
        error.reason = refusal_reason(provider, body)
    return error


def log_body(event: str, provider: ProviderConfig, body: bytes | str, **fields: Any) -> None:
    """Debug-log an upstream body, truncated to 2 KiB, with our credentials scrubbed: the API
    key and the provider's header values (upstreams echo a wrong one back in their 401
    bodies)."""
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    text = body[:LOG_BODY_BYTES].decode("utf-8", "replace")
    cut = len(body) > LOG_BODY_BYTES
    for secret in _secrets(provider):
        text = text.replace(secret, "[redacted]")
        if cut:
            # A secret the cut went through: its first characters end the text.
            for shown in range(min(len(secret) - 1, len(text)), 0, -1):
                if text.endswith(secret[:shown]):
                    text = text[:-shown] + "[redacted]"
                    break
    log.debug(event, provider=provider.id, body=text, truncated=cut, **fields)


# A header value shorter than this (`true`, a version number) is no credential, and scrubbing
# it would blank out every occurrence in the body.
MIN_SCRUBBED_HEADER = 8


def _secrets(provider: ProviderConfig) -> list[str]:
    """What a logged body must not show, longest first (so a `Bearer <token>` header goes
    whole before its token): the API key, each header value and the credential of a
    `<scheme> <credential>` value, which an upstream may echo alone."""
    found = {provider.api_key} if provider.api_key else set()
    for value in provider.headers.values():
        for candidate in (value.strip(), value.strip().rpartition(" ")[2]):
            if len(candidate) >= MIN_SCRUBBED_HEADER:
                found.add(candidate)
    # As a JSON body echoes them: `"` and `\` escaped, every character beyond ASCII as
    # `\uXXXX` (Python's json), and `/` as `\/` too (PHP's json_encode).
    for secret in list(found):
        escaped = json.dumps(secret)[1:-1]
        found.update((escaped, escaped.replace("/", "\\/")))
    return sorted(found, key=len, reverse=True)


async def open_stream(
    client: UpstreamClient,
    provider: ProviderConfig,
    url: str,
    headers: Mapping[str, str],
    body: dict[str, Any],
    timeouts: Timeouts,
) -> UpstreamResponse:
    """POST the request and return the response once its status is known to be good (2xx).

    Any other status is classified (after a bounded read of its body, for the debug log) and
    raised; the connection is closed, never pooled half-read. Transport failures are mapped
    by `transport_error`. The caller owns the returned response and must close or release it.
    """
    payload = json.dumps(body, separators=(",", ":")).encode()
    try:
        resp = await client.post(url, headers, payload, timeouts)
    except (OSError, TimeoutError, ValueError) as exc:
        raise transport_error(exc) from exc
    if 200 <= resp.status < 300:
        return resp
    error = status_error(resp.status, resp.headers)
    refused = isinstance(error, UpstreamStatusError) and error.refused
    try:
        text = await resp.read(REASON_BODY_BYTES if refused else LOG_BODY_BYTES)
        log_body("upstream_error_body", provider, text, status=resp.status)
        explained(error, provider, text)
    except (OSError, TimeoutError):
        pass  # the status alone classifies the failure; the body was only for the log
    finally:
        resp.close()
    raise error


async def read_json(resp: UpstreamResponse) -> bytes:
    """The whole body of a non-streamed answer; an oversized one is malformed."""
    body = await resp.read(MAX_JSON_BODY)
    if len(body) > MAX_JSON_BODY:
        raise MalformedStream("upstream JSON answer too large")
    return body


def answer_events(
    raw: bytes, provider: ProviderConfig, json_answer: Callable[[Any], list[ProviderEvent]]
) -> list[ProviderEvent]:
    """A non-streamed answer's events (`json_answer` of its JSON). Bad JSON, or an answer of
    the wrong shape, is malformed; an error object with a 200 is classified by its status
    (`json_answer`). Either way the body is logged: it says which."""
    try:
        whole = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        log_body("upstream_malformed_json", provider, raw)
        raise MalformedStream("upstream answer is not valid JSON") from exc
    try:
        return json_answer(whole)
    except (UpstreamError, *_DECODE_ERRORS) as exc:
        # An error object with a 200 (classified as its status), or a field of the wrong
        # shape (a list for a reason).
        log_body("upstream_malformed_answer", provider, raw)
        if isinstance(exc, UpstreamError):
            explained(exc, provider, raw)
            raise
        raise MalformedStream(f"malformed upstream answer ({type(exc).__name__})") from exc


class StreamDecoder(Protocol):
    """One upstream stream in one wire format, decoded event by event."""

    done: bool  # the format's terminator arrived (`[DONE]`, `message_stop`)
    data: str  # the event data being decoded: logged when it turns out malformed

    def feed(self, events: Sequence[SSEEvent]) -> Iterator[ProviderEvent]:
        """The reply text in `events`; stops reading them at the terminator."""
        ...

    @property
    def finished(self) -> bool:
        """The reply said why it ended (a finish reason): whole, even if the terminator and
        the body's end never come."""
        ...

    def finish(self) -> list[ProviderEvent]:
        """After the terminator or EOF: usage and finish; MalformedStream when the stream
        stopped short of saying it was complete."""
        ...


# What a malformed event raises while it is decoded: json.loads, SSEError, a field of the
# wrong shape.
# RecursionError: JSON nested deeper than the parser goes (a hostile or broken upstream).
_DECODE_ERRORS = (ValueError, TypeError, AttributeError, LookupError, RecursionError)


def _malformed(decoder: StreamDecoder, provider: ProviderConfig, exc: Exception) -> MalformedStream:
    if decoder.data:
        log_body("upstream_malformed_stream", provider, decoder.data)
    detail = str(exc) if isinstance(exc, SSEError | UnrelayedReply) else type(exc).__name__
    return MalformedStream(f"malformed upstream stream ({detail})")


async def relay(
    client: UpstreamClient,
    provider: ProviderConfig,
    url: str,
    headers: Mapping[str, str],
    body: dict[str, Any],
    timeouts: Timeouts,
    decoder: StreamDecoder,
    json_answer: Callable[[Any], list[ProviderEvent]],
    deliver: Deliver,
) -> None:
    """POST the request and `deliver` its reply: a stream through `decoder`, event by event
    as its bytes arrive, or a JSON answer (an upstream that ignored `stream`) through
    `json_answer`. Returns when the reply is complete.

    Each read of the stream is decoded and delivered in the event loop's call that received
    it (`UpstreamResponse.deliver`): no task is woken per read. What `deliver` raises ends
    the exchange and is raised here as it is; a malformed event raises MalformedStream.
    """
    resp = await open_stream(client, provider, url, headers, body, timeouts)
    # Until the reply ended cleanly, leaving (error, task cancellation) closes the
    # connection: a half-read response must not go back to the pool, and the upstream has to
    # see the disconnect to stop generating.
    finished = False
    try:
        if resp.content_type == "application/json":
            raw = await read_json(resp)
            if len(raw) > PARSE_IN_THREAD_BYTES:
                answer = await asyncio.to_thread(answer_events, raw, provider, json_answer)
            else:
                answer = answer_events(raw, provider, json_answer)
            finished = True  # the body is read: the connection may be reused
            for event in answer:
                deliver(event)
            return
        parser = SSEParser()
        feed = decoder.feed
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling

        def decode(events: Iterator[ProviderEvent]) -> None:
            # Event by event, so that what came before a malformed event is delivered; none
            # once our task is being cancelled (the rest of a read that a delivery aborted).
            # Each piece of the reply is progress (Timeouts.progress): keepalives are not.
            delivering = False  # an error while set is deliver's own: raised as it is
            try:
                for event in events:
                    if cancelling():
                        return
                    delivering = True
                    deliver(event)
                    delivering = False
                    resp.progressed = resp.last_read
            except _DECODE_ERRORS as exc:
                if delivering:
                    raise
                raise _malformed(decoder, provider, exc) from exc

        after: asyncio.Timeout | None = None
        # The body's first bytes: logged when the stream ends with no event in them (an
        # error page or object that is no event stream).
        head = bytearray()

        received = 0
        limit = MAX_STREAM_BYTES

        def on_data(piece: bytes) -> None:
            nonlocal received
            if decoder.done:
                return  # after the terminator: nothing more is read
            received += len(piece)
            if received > limit:
                raise MalformedStream(f"upstream stream over {limit} bytes")
            if len(head) <= LOG_BODY_BYTES:  # a byte more: log_body knows it cut the body
                head.extend(piece[: LOG_BODY_BYTES + 1 - len(head)])
            try:
                events = parser.feed(piece)
            except SSEError as exc:
                raise _malformed(decoder, provider, exc) from exc
            decode(feed(events))
            if decoder.done and after is not None:
                after.reschedule(asyncio.get_running_loop().time() + AFTER_TERMINATOR_S)

        broken = False
        try:
            async with asyncio.timeout(None) as after:
                await resp.deliver(on_data)
        except (OSError, TimeoutError):
            if not (decoder.done or decoder.finished):
                raise
            # The reply is whole (its terminator, or its finish reason: what may follow it, the
            # usage, is not worth the turn); the body did not end in time, or broke: the
            # connection is closed (`resp` is not complete), the turn is not failed. A line cut
            # by the break is no event.
            broken = True
        if not (decoder.done or broken):
            try:
                events = parser.feed_eof()
            except SSEError as exc:
                raise _malformed(decoder, provider, exc) from exc
            decode(feed(events))
        try:
            tail = decoder.finish()
        except MalformedStream:
            if not decoder.data:  # no event was decoded
                log_body("upstream_malformed_stream", provider, bytes(head))
            raise
        except _DECODE_ERRORS as exc:
            raise _malformed(decoder, provider, exc) from exc
        # The stream is over: set before the last deliveries, so that a consumer failing on
        # them still leaves a connection that may be reused.
        finished = True
        for event in tail:
            deliver(event)
    except (OSError, TimeoutError) as exc:
        raise transport_error(exc) from exc
    finally:
        if finished:
            resp.release()
        else:
            resp.close()
