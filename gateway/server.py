"""Serving the app on its socket: startup, signals, graceful drain, systemd notifications.

SIGTERM/SIGINT: stop accepting, tell WebSocket clients (`shutdown`, close 1012), let running
turns finish for up to `gateway.shutdown.drainSeconds`, abort the rest (their HTTP streams end
with an in-band error and `[DONE]`), close the store, exit 0. A second SIGTERM/SIGINT exits at
once with 1 (SQLite's WAL keeps the store consistent). SIGHUP reloads the config file.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import re
import signal
import uuid
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import HttpVersion10, HttpVersion11, web, web_protocol
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, LineTooLong

from gateway import hangup
from gateway.app import COMMON_HEADERS, create_app
from gateway.appkeys import METRICS, STATE
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config
from gateway.edge_http import ASKED_VERSION, is_bare_request_line, unsupported_version
from gateway.metrics_http import unparsed_request_counter
from gateway.reload import reload_from_file
from gateway.responses import error_response
from gateway.state import AppOptions, GatewayState
from gateway.supervisor import WORKER_ENV, listen_failed
from gateway.systemd import Notifier

log = structlog.get_logger()

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After the drain, aborted streams only need to write their error and [DONE].
HANDLER_GRACE_SECONDS = 5.0
# What a stop takes after the drain: aborted turns commit (_drain), handlers end
# (runner.cleanup), the store closes; up to HANDLER_GRACE_SECONDS each.
AFTER_DRAIN_SECONDS = 3 * HANDLER_GRACE_SECONDS
# The cyclic collector looks at its youngest generation after this many container objects
# were made (net of those freed), where CPython's default is 700. Under load nearly all it
# finds there is alive, the requests in flight, and each collection visits all of it: at 700
# that took 20-23 µs of a request at concurrency 16, 40 at 64 and 70-105 at 256 (3-11% of its
# CPU); at 20,000, 0 / 0 / 7-26 µs. A gateway makes few cycles (a closed connection breaks
# its own), so waiting longer keeps little garbage: at most this many objects, a few MiB.
GC_YOUNG_THRESHOLD = 20_000
# The parser's limits on a request's head (aiohttp's defaults, but for the target's). A
# LineTooLong says which limit it met, not which line (aiohttp's C parser quotes the target
# or a header's name or value alone): the two limits differ so that its limit tells a target
# over it (414) from a header field (431).
MAX_TARGET_BYTES = 8192
MAX_FIELD_BYTES = 8190
MAX_FIELDS = 128
MSG_TARGET_TOO_LONG = f"Request target too long (at most {MAX_TARGET_BYTES} bytes)."
MSG_FIELDS_TOO_LARGE = (
    f"Request header fields too large (at most {MAX_FIELD_BYTES} bytes a field, "
    f"{MAX_FIELDS} fields)."
)
# Both parsers' text for a head of more than MAX_FIELDS lines (aiohttp 3.14).
_TOO_MANY_FIELDS = "Too many headers received"
# The C parser's for an HTTP/1.x it does not know (HTTP/1.2; the pure-Python one reads it).
_UNKNOWN_VERSION = "Invalid HTTP version"
# What aiohttp's pure-Python parser quotes when the limit it met was the request line's:
# the line itself (a method and a space), a target (C parser), or the start of a line not
# ended yet, which is a header's too once the request line was read (a name and a colon)
# or a chunk size (hex digits). Only the first two are a target.
_REQUEST_LINE = re.compile(rb"[A-Z]+ [/*A-Za-z]|[/*]|[A-Za-z][A-Za-z0-9+.-]*://")
_HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:")


async def serve(
    config: Config, loader: ConfigLoader | None = None, options: AppOptions | None = None
) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    app = create_app(config, loader=loader, options=options)
    # A worker of `--workers` stops on its supervisor's SIGTERM alone: a terminal's Ctrl-C
    # reaches it and the supervisor at once, which then passes SIGTERM on, and two signals
    # would end the worker without its drain. The CLI set SIGINT to be ignored.
    worker = os.environ.get(WORKER_ENV) is not None
    stop_signals = (signal.SIGTERM,) if worker else STOP_SIGNALS
    # Handlers before anything else: a signal that arrives while starting up must be ours.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    loop.add_signal_handler(signal.SIGHUP, _reload, app[STATE], reloads)
    if hangup.take():  # one came while clawgate loaded (gateway/hangup.py)
        _reload(app[STATE], reloads)
    if worker:
        # A config.patch writes the shared file in one worker: the supervisor passes a SIGHUP
        # to all, so the others apply it too (also with gateway.reload.mode "off").
        supervisor = os.getppid()
        app[STATE].config_written_listeners.append(functools.partial(_ask_reload, supervisor))
        # Every worker checks the file (and gets each SIGHUP): the first tells what fails.
        app[STATE].tells_reloads = os.environ.get(WORKER_ENV) == "0"
    notifier = Notifier()
    try:
        return await _serve(app, stop, notifier, stop_signals)
    finally:
        for sig in (*stop_signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for task in reloads:
            task.cancel()
        await asyncio.gather(*reloads, return_exceptions=True)
        notifier.close()


async def _serve(
    app: web.Application,
    stop: asyncio.Event,
    notifier: Notifier,
    stop_signals: tuple[signal.Signals, ...],
) -> int:
    state = app[STATE]
    config = state.config
    host, port = config.gateway.host, config.gateway.port
    runner = make_runner(app)
    # Opens the store: nothing listens before it is ready. A stop asked for meanwhile (systemd
    # stops a unit that is still activating) ends the start there, also one that waits for a
    # database slow to answer: no socket, no READY=1, nothing to drain.
    if not await _unless_stopped(runner.setup(), stop):
        # Told as at any stop (the `--workers` supervisor tells it for its workers): the stop
        # may come from elsewhere than systemd, which then knows why the start ends.
        notifier.notify("STOPPING=1", "STATUS=stopped while starting")
        await runner.cleanup()  # what had started (aiohttp cleans up what entered)
        log.info("gateway_stopped", listened=False)
        return 0
    try:
        # A worker of `--workers`: its siblings listen on the same port (gateway/supervisor.py).
        reuse_port = True if os.environ.get(WORKER_ENV) is not None else None
        site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port)
        await site.start()
    except OSError as exc:
        code = listen_failed(host, port, exc)
        await runner.cleanup()
        return code

    url = f"http://{_url_host(host)}:{runner.addresses[0][1]}"
    log.info(
        "gateway_listening",
        url=url,
        ws=url.replace("http://", "ws://", 1),
        auth=config.gateway.auth.mode,
        config=str(config.source.path) if config.source.exists else "(embedded default)",
    )
    notifier.notify("READY=1", f"STATUS=listening on {url}")
    watchdog = _start_watchdog(notifier)
    settle_collector()

    await stop.wait()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, _exit_now)
    # systemd's stop timeout (the unit's TimeoutStopSec=30) must not SIGKILL a longer drain.
    drain_seconds = state.config.gateway.drain_seconds
    stop_usec = int((drain_seconds + AFTER_DRAIN_SECONDS) * 1_000_000)
    notifier.notify("STOPPING=1", "STATUS=draining", f"EXTEND_TIMEOUT_USEC={stop_usec}")
    log.info("gateway_stopping", drain_seconds=drain_seconds)
    state.draining = True
    await site.stop()  # no new connections; open ones are served to their end
    # on_shutdown (WebSocket clients: `shutdown`, then close 1012) runs now rather than after
    # the drain; runner.cleanup() sends it again and it finds nothing left to close.
    await app.shutdown()
    await _drain(state)
    await runner.cleanup()
    if watchdog is not None:
        watchdog.cancel()
    log.info("gateway_stopped")
    return 0


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Runs `work` to its end and returns True, unless `stop` is set first: then `work` is
    cancelled (its own cleanup done) and the answer is False. An error of `work` that ended
    on its own is raised."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        cancelled = not task.done()
        if cancelled:
            task.cancel()
            # What it raises as it ends (a driver's error for the connection cut short) is
            # of the cancellation, not a failure to report.
            await asyncio.gather(task, return_exceptions=True)
    if cancelled:
        return False
    task.result()
    return not stop.is_set()


def settle_collector() -> None:
    """Once listening. What start-up made (modules, the config, the app) lives until exit:
    frozen out of the cyclic collector's way, the collections a request's garbage triggers
    scan only what is new (gen 2 scans took some 3% of the CPU of a request; freezing: -5%,
    side by side). Then the young generation waits for GC_YOUNG_THRESHOLD objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# aiohttp's private record of a request its parser refused (3.14). Looked up, not imported: an
# aiohttp without it (or without the protocol's state data_received reads) starts as before,
# its broken bodies then ending in the 408 of the body timeout.
_PARSER_REFUSAL: type[Any] = getattr(web_protocol, "_ErrInfo", type(None))
# The request aiohttp makes up to answer one its parser refused (3.14): an HTTP/1.0 one.
_REFUSED_REQUEST: RawRequestMessage | None = getattr(web_protocol, "ERROR", None)


class _GatewayRequestHandler(web.RequestHandler):
    """aiohttp's protocol, but for the answer to what never reaches the app: a request its
    parser refused, or a failure outside every middleware. aiohttp answers those in plain
    text with the parser's message, which quotes the refused bytes (the first 100 of a header
    line over the limit: a token, a cookie); this answer is fixed, in the one error shape."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own: the log line (gateway.logs drops the quoted bytes), the refusal of a
        # second answer after the first one started, the closed connection.
        super().handle_error(request, status, exc, message)
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            response = error_response(status, "internal error", "api_error")
        elif (told := self._told_refusal(exc)) is not None:
            response = told
        else:
            kind = "invalid_request_error" if status < 500 else "api_error"
            response = error_response(status, HTTPStatus(status).phrase, kind)
        response.headers.update(COMMON_HEADERS)
        # A new one: the request's own may be among what the parser refused.
        response.headers["x-request-id"] = uuid.uuid4().hex
        response.force_close()
        return response

    def _told_refusal(self, exc: BaseException | None) -> web.Response | None:
        """RFC 9110 §15.5.15 and RFC 6585 §5: a target over its limit is a 414, a header field
        over its own or a head of too many fields a 431 (a client may retry with less); an
        HTTP version the parser does not know (HTTP/1.2, a bare `GET /x` of HTTP/0.9),
        edge_http's 400 for it."""
        if isinstance(exc, LineTooLong):
            quoted, limit = exc.args[0], exc.args[1]
            start = bytes(quoted) if isinstance(quoted, bytes | bytearray) else b""
            if limit == self.max_line_size and _REQUEST_LINE.match(start):
                return error_response(
                    414, MSG_TARGET_TOO_LONG, "invalid_request_error", code="uri_too_long"
                )
            if limit == self.max_field_size or _HEADER_LINE.match(start):
                return _fields_too_large()
        elif isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_FIELDS:
            return _fields_too_large()
        elif isinstance(exc, BadHttpMessage) and _UNKNOWN_VERSION in exc.message:
            return unsupported_version()
        elif isinstance(exc, BadStatusLine) and is_bare_request_line(exc.line):
            return unsupported_version()  # the pure-Python parser's refusal of HTTP/0.9
        return None

    def data_received(self, data: bytes) -> None:
        """aiohttp's, but a body whose framing breaks while its handler reads it (a chunk size
        that is no number) fails as the pure-Python parser fails it. aiohttp's C parser drops
        the body without failing it and queues the refusal as the next request's: the handler
        waited for the body timeout (408), and the connection then closed with the refusal
        unanswered. The body's reader now raises the parser's error: the handler answers the
        fixed 400 and closes the connection (http.common.read_body), so the refusal queued
        behind it never gets a second answer. Private state of aiohttp's protocol (3.14):
        the request being handled, and the messages parsed but not yet handled."""
        request = getattr(self, "_current_request", None)
        messages = getattr(self, "_messages", None)
        queued = len(messages) if messages is not None else 0
        super().data_received(data)
        if request is None or messages is None or len(messages) == queued:
            return
        refused = messages[-1][0]
        body = request.content
        # A body the parser finished is not the one it refused: that is a later request's.
        if isinstance(refused, _PARSER_REFUSAL) and not body.is_eof() and body.exception() is None:
            body.set_exception(refused.exc)


def _fields_too_large() -> web.Response:
    return error_response(
        431, MSG_FIELDS_TOO_LARGE, "invalid_request_error", code="request_header_fields_too_large"
    )


class _GatewayServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


def _spoken_versions(factory: Any) -> Any:
    """The app's request factory, but a request in another version than HTTP/1.0 or HTTP/1.1
    (aiohttp's parsers read `HTTP/2.0` in HTTP/1 text, and a bare `GET /x` as HTTP/0.9) is
    read as HTTP/1.1 without keep-alive, its own version kept under ASKED_VERSION: the edge
    middleware refuses it, in HTTP/1.1, and the connection closes. Its answer's status line
    claimed the version asked (`HTTP/2.0 200 OK`), and HTTP/0.9 has no status line at all.
    The request aiohttp makes up for one its parser refused (a 414, a 431, a malformed head)
    is read as HTTP/1.1 too: it is HTTP/1.0, and the refusal said `HTTP/1.0 414` to a client
    that spoke HTTP/1.1 (RFC 9110 §2.5: a server sends the highest version it conforms to)."""

    def make(message: RawRequestMessage, *args: Any) -> web.BaseRequest:
        if message is _REFUSED_REQUEST:
            return factory(message._replace(version=HttpVersion11), *args)  # type: ignore[no-any-return]
        if message.version in (HttpVersion10, HttpVersion11):
            return factory(message, *args)  # type: ignore[no-any-return]
        spoken = message._replace(version=HttpVersion11, should_close=True)
        request: web.BaseRequest = factory(spoken, *args)
        request[ASKED_VERSION] = message.version
        return request

    return make


class _GatewayRunner(web.AppRunner):
    """aiohttp has no hook for the answers of its protocol (aio-libs/aiohttp#3287): the
    app's server, built as AppRunner builds it, with our protocol in place of aiohttp's."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _GatewayServer(
            server.request_handler,
            request_factory=_spoken_versions(server.request_factory),
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )


def make_runner(app: web.Application) -> web.AppRunner:
    return _GatewayRunner(
        app,
        handle_signals=False,
        # app._request_log writes one line per request and counts it; the access logger only
        # counts what aiohttp answered itself (its logger is disabled: gateway/logs.py).
        access_log=logging.getLogger("aiohttp.access"),
        access_log_class=unparsed_request_counter(app[METRICS]),
        shutdown_timeout=HANDLER_GRACE_SECONDS,
        keepalive_timeout=app[STATE].options.header_timeout_seconds,
        # Request bodies are decoded by the chat endpoint (gateway.http.content_coding), bounded
        # and with its error bodies; aiohttp's decoder would answer or fail on its own.
        auto_decompress=False,
        max_line_size=MAX_TARGET_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_FIELDS,
    )


async def _drain(state: GatewayState) -> None:
    """Let running and queued turns finish for up to drainSeconds; abort what is left."""
    registry = state.registry
    if registry is None:
        return
    try:
        await asyncio.wait_for(registry.wait_idle(), state.config.gateway.drain_seconds)
        return
    except TimeoutError:
        pass
    aborted = registry.abort_all("shutdown")
    log.warning("drain_timeout", aborted_runs=len(aborted))
    # Aborted runs commit their partial turns first; that takes milliseconds.
    try:
        await asyncio.wait_for(registry.wait_idle(), HANDLER_GRACE_SECONDS)
    except TimeoutError:
        log.warning("drain_abort_timeout")


def _ask_reload(supervisor: int) -> None:
    # Only the supervisor that started this worker: once it is gone (PDEATHSIG stops us soon
    # after), the parent is another process, init perhaps, which a SIGHUP must not reach.
    if os.getppid() == supervisor:
        os.kill(supervisor, signal.SIGHUP)


def _reload(state: GatewayState, reloads: set[asyncio.Task[None]]) -> None:
    log.info("config_reload_requested", trigger="SIGHUP")
    task = asyncio.create_task(_reload_logged(state), name="config-reload")
    reloads.add(task)
    task.add_done_callback(reloads.discard)


async def _reload_logged(state: GatewayState) -> None:
    try:
        await reload_from_file(state)
    except Exception:
        # A bug in applying must not go unseen; the running config stays.
        log.exception("config_reload_crashed")


def _exit_now() -> None:
    log.warning("gateway_killed", reason="second signal")
    os._exit(1)


def _start_watchdog(notifier: Notifier) -> asyncio.Task[None] | None:
    if notifier.watchdog_seconds is None:
        return None

    async def pet() -> None:
        # Half the interval, as sd_watchdog_enabled(3) recommends.
        while True:
            notifier.notify("WATCHDOG=1")
            await asyncio.sleep(notifier.watchdog_seconds / 2)  # type: ignore[operator]

    return asyncio.get_running_loop().create_task(pet(), name="sd-watchdog")


def _url_host(host: str) -> str:
    # 0.0.0.0 is where we listen, not an address a client can use.
    return "127.0.0.1" if host == "0.0.0.0" else host
