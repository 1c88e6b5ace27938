"""The edge checks of gateway/edge.py as aiohttp sees them: the client address, the Host
check of every request (HTTP and WebSocket alike) and the answers that refuse."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import urlsplit

from aiohttp import HttpVersion, HttpVersion11, hdrs, web

from gateway.appkeys import CLIENT_ADDRESS, STATE
from gateway.config.model import GatewayConfig
from gateway.edge import client_address, host_allowed, own_names, parse_address, split_host
from gateway.responses import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# 421 Misdirected Request (RFC 9110 §15.5.20): "this server does not answer for that
# authority", which is what a rebinding page's `Host: evil.example` meets. 403 stays the
# Origin refusal's, so an operator can tell a missing allowedHosts entry from a missing
# allowedOrigins entry by the status alone.
HOST_REFUSED_STATUS = 421
MSG_HOST_NOT_ALLOWED = "Host not allowed; list this host name in gateway.http.allowedHosts."
MSG_ORIGIN_NOT_ALLOWED = "Origin not allowed; list it in gateway.controlUi.allowedOrigins."
MSG_NOT_JSON = "Unsupported Content-Type; send application/json."
# A request-target in absolute form (RFC 9112 §3.2.2): a scheme and `//`.
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The credentials a request presents: each names one secret, so two are ambiguous.
CREDENTIAL_HEADERS = ("Authorization", "X-OpenClaw-Token")
MSG_UNSUPPORTED_VERSION = "Unsupported HTTP version; send HTTP/1.1 (or HTTP/1.0)."
# The largest Content-Length aiohttp's C parser reads: it holds a length in 64 bits.
MAX_CONTENT_LENGTH = 2**64 - 1
# The methods aiohttp's C parser (llhttp, 9.x) reads in an HTTP/1.x request; it refuses any
# other, a lowercase `get` too (RFC 9110 §9.1: methods are case-sensitive), with a 400 before
# a handler sees it. aiohttp's pure-Python parser reads any token.
HTTP_METHODS = frozenset(
    {
        *("DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "PATCH"),
        *("COPY", "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK"),
        *("BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE"),
        *("M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "MKCALENDAR"),
        *("LINK", "UNLINK", "SOURCE", "QUERY"),
    }
)
MSG_HTTP10_TRANSFER_ENCODING = (
    "Transfer-Encoding is not allowed in an HTTP/1.0 request; send the body with a Content-Length."
)


def add_route(app: web.Application, path: str, handler: Handler) -> None:
    """A route of ours: any method (each handler answers 405 itself), our Expect handling."""
    app.router.add_route("*", path, handler, expect_handler=continue_if_expected)


# The version a request was sent in when it is neither HTTP/1.0 nor HTTP/1.1 (its request is
# read as HTTP/1.1 to be answered in it: gateway/server.py).
ASKED_VERSION = web.RequestKey("asked_version", HttpVersion)


# An `Expect: 100-continue` not answered yet: the 100 waits until the handler reads the body.
_CONTINUE_OWED = web.RequestKey("continue_owed", bool)


async def continue_if_expected(request: web.Request) -> None:
    """RFC 9110 §10.1.1: `Expect: 100-continue` asks whether to send the body at all. This
    runs before the middlewares, so the 100 is only owed here and sent by send_continue,
    when the handler reads the body: a refusal its head decides (421, 401, 415, 413 by
    Content-Length, 400 transfer coding, 404, 405) is the answer without a 100, and curl
    does not send a body that would be thrown away (close_if_body_unread). A request that
    frames no body gets no 100, as the RFC allows. Any other expectation is ignored, as the
    RFC allows too; aiohttp's own handler answers those with a 417 whose text holds the
    value, and fails with a 500 on a value that is not UTF-8."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if (
        request.version >= HttpVersion11
        and expect.lower() == "100-continue"
        and request.can_read_body
    ):
        request[_CONTINUE_OWED] = True


async def send_continue(request: web.Request) -> None:
    """The owed 100 Continue, as the handler starts reading the body; none when all of the
    body came already (RFC 9110 §10.1.1 allows leaving it out then)."""
    if request.get(_CONTINUE_OWED):
        del request[_CONTINUE_OWED]
        if not request.content.is_eof():
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # what the answer writes is counted from here


async def close_if_body_unread(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an answer given without the 100 a client waits for closes the
    connection (RFC 9110 §10.1.1 asks the server to say whether it will read the body). A
    client may send the body anyway; aiohttp reads and drops it before closing, and no byte
    of it is read as a next request."""
    if request.get(_CONTINUE_OWED) and response.status != 101:
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"  # the head's own was set before this hook


async def close_if_upgrade_declined(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a request asking to switch protocols (`Connection: Upgrade` with
    an `Upgrade`: curl --http2's h2c, a WebSocket refused) answered in HTTP/1.1 instead, as
    RFC 9110 §7.8 allows, closes the connection. aiohttp's parser stops at such a request and
    does not read what follows as requests: one sent right behind it was never answered, its
    client left waiting on an open connection; closed, the client sends it again."""
    if response.status != 101 and _asks_upgrade(request):
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"


def _asks_upgrade(request: web.Request) -> bool:
    """As the HTTP parser decides it: an Upgrade header, and `upgrade` among Connection's; or
    a CONNECT, which asks for a tunnel (the pure-Python parser reads what follows it as the
    tunnel's bytes, the C one as requests)."""
    if request.method == hdrs.METH_CONNECT:
        return True
    if hdrs.UPGRADE not in request.headers:
        return False
    options = request.headers.getall(hdrs.CONNECTION, ())
    return any(
        token.strip().lower() == "upgrade" for value in options for token in value.split(",")
    )


def client_of(request: web.Request) -> str | None:
    """The client's address as the limiter, the loopback checks and the logs see it."""
    client = request.get(CLIENT_ADDRESS)
    return client if client is not None else request.remote


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    gateway = request.app[STATE].config.gateway  # per request: a reload swaps the lists
    client = client_address(
        request.remote, request.headers.getall("X-Forwarded-For", []), gateway.trusted_proxies
    )
    if client is not None:
        request[CLIENT_ADDRESS] = client
    if ASKED_VERSION in request:
        return unsupported_version()
    if _refused_by_the_c_parser(request):
        return _as_the_c_parser_refuses()
    if request.version < HttpVersion11 and hdrs.TRANSFER_ENCODING in request.headers:
        return _faulty_framing()
    if not _host_allowed(request, gateway):
        return error_response(
            HOST_REFUSED_STATUS,
            MSG_HOST_NOT_ALLOWED,
            "invalid_request_error",
            code="host_not_allowed",
        )
    for name in CREDENTIAL_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            return _repeated_credential(name)
    return await handler(request)


def _faulty_framing() -> web.Response:
    """RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding MUST be treated as having
    faulty framing, and the connection closed. An HTTP/1.0 hop in front reads its body by
    Content-Length or up to the close, so the chunks aiohttp reads (and a request after them
    on a keep-alive connection) are not what that hop saw: how requests are smuggled. Every
    path, whether it reads a body or not; a 400 in our shape (the spec is silent), the code
    of the other transfer codings refused (gateway/http/content_coding.py)."""
    response = error_response(
        400,
        MSG_HTTP10_TRANSFER_ENCODING,
        "invalid_request_error",
        code="unsupported_transfer_encoding",
    )
    response.force_close()
    return response


def _refused_by_the_c_parser(request: web.Request) -> bool:
    """A request aiohttp's C parser refuses, read by its pure-Python one: a method outside
    HTTP_METHODS (it met the route's 405), a byte that is not ASCII in the target (RFC 9112
    §3.2; it was served), a Content-Length of more than 64 bits (the endpoint's 413)."""
    length = request.content_length
    return (
        request.method not in HTTP_METHODS
        or not request.raw_path.isascii()
        or (length is not None and length > MAX_CONTENT_LENGTH)
    )


def _as_the_c_parser_refuses() -> web.Response:
    """Its 400, and the connection closed."""
    response = error_response(400, HTTPStatus.BAD_REQUEST.phrase, "invalid_request_error")
    response.force_close()
    return response


def unsupported_version() -> web.Response:
    """A request in a version other than HTTP/1.0 or HTTP/1.1 (`HTTP/2.0` in HTTP/1 text, a
    bare `GET /x` of HTTP/0.9): a 400 that closes the connection. RFC 9110 §15.6.6 has 505
    for it, a 5xx, which the gateway keeps for its own failures (the spec is silent). HTTP/1.2
    is refused too, although RFC 9110 §2.5 would read it as HTTP/1.1: aiohttp's C parser
    refuses it before any handler, and both parsers give the same answer."""
    response = error_response(
        400, MSG_UNSUPPORTED_VERSION, "invalid_request_error", code="unsupported_http_version"
    )
    response.force_close()
    return response


def is_bare_request_line(line: str) -> bool:
    """HTTP/0.9's request line, a method and a target and no version (`GET /x`): the C
    parser reads it as HTTP/0.9 (refused by the edge middleware), the pure-Python one refuses
    it as a malformed line."""
    method, sep, target = line.partition(" ")
    return bool(sep) and method in HTTP_METHODS and bool(target) and " " not in target


def _repeated_credential(name: str) -> web.Response:
    """A credential header sent twice is a 400 on every path, before any check reads one (the
    spec is silent). Neither is a list (RFC 9110 §5.3, §11.6.2): a proxy in front that checks
    one of them while the gateway took the other (the first) lets a request through on a
    credential nobody checked, and a wrong one first was counted as a failed guess. aiohttp
    answers a repeated Content-Type, Content-Length or Host with a 400 alike."""
    return error_response(400, f"More than one {name} header; send one.", "invalid_request_error")


def authorities(request: web.Request) -> list[str]:
    """The authority the request names, as sent: its Host headers, or, for a target in
    absolute form, that target's (RFC 9112 §3.2.2: Host is ignored then). Browsers send that
    form to proxies only; one that passes it on unchanged (a rebinding page's
    `http://evil.example/...`) is refused by the name it carries. The Host check and the
    WebSocket's own origin read the same one."""
    if _ABSOLUTE_FORM.match(request.raw_path):
        return [urlsplit(request.raw_path).netloc]
    return request.headers.getall(hdrs.HOST, [])


def _host_allowed(request: web.Request, gateway: GatewayConfig) -> bool:
    """Every path, probes included: /healthz leaks nothing to a rebinding page, but one rule
    for all is one rule to audit, and a proxy or monitor that probes by name lists it."""
    values = authorities(request)
    if not values:
        # HTTP/1.0 without Host: browsers always send one, so such a request cannot come
        # from a page; refusing it would only break old monitoring tools.
        return True
    if len(values) > 1:
        return False
    host = split_host(values[0])
    if host is None:
        return False
    own = own_names(gateway.bind, gateway.custom_bind_host)
    if host_allowed(host, gateway.http.allowed_hosts, own):
        return True
    # A lan bind answers to the address a request arrived on: the machine's own address on
    # that interface (the standard library cannot list interfaces up front).
    if gateway.bind == "lan" and parse_address(host) is not None:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local = parse_address(str(sockname[0])) if sockname else None
        return local is not None and local == parse_address(host)
    return False


def raw_target_path(request: web.Request) -> str:
    """The path of the request-target as sent (its escapes kept), without the query. In
    absolute form (`http://host/v1/models`, RFC 9112 §3.2.2) aiohttp's raw_path is the whole
    target, scheme and authority too; the router matched the path alone."""
    target = request.raw_path
    if _ABSOLUTE_FORM.match(target):
        rest = target.split("://", 1)[1]
        start = rest.find("/")
        target = rest[start:] if start >= 0 else "/"
    return target.partition("?")[0]


def origin_refused() -> web.Response:
    return error_response(
        403, MSG_ORIGIN_NOT_ALLOWED, "invalid_request_error", code="origin_not_allowed"
    )


def is_json_content_type(value: str | None) -> bool:
    """`application/json` with any parameters, case-insensitive. Anything else (notably the
    `text/plain` and form types a page may post cross-site without a preflight) is refused,
    which makes a CSRF form post fail before its body is read."""
    if value is None:
        return False
    media_type = value.split(";", 1)[0].strip().lower()
    return media_type == "application/json"


def unsupported_media_type() -> web.Response:
    return error_response(415, MSG_NOT_JSON, "invalid_request_error", code="unsupported_media_type")
