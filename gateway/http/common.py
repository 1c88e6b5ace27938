"""What every authenticated JSON endpoint of the HTTP surface shares (http-openai.md §2-§3,
§8-§9): the gate in front of a handler, the body reader, the error answer, the CORS preflight.

Chat completions, embeddings and the hooks all answer bad requests the same way, so these
live here once rather than in each endpoint's module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.appkeys import MODEL_USED, SESSION_KEY, STATE
from gateway.auth import AuthFailure, AuthFailureReason, bearer_secret
from gateway.auth import authenticate as check_secret
from gateway.config.model import AuthConfig, Config
from gateway.edge_http import (
    client_of,
    is_json_content_type,
    send_continue,
    unsupported_media_type,
)
from gateway.http.content_coding import BodyInflater, check_transfer_coding, request_coding
from gateway.http.openai_wire import (
    RequestError,
    auth_locked_out,
    body_timeout,
    broken_body,
    encode_json,
    payload_too_large,
    shutting_down,
    unauthorized,
)
from gateway.jsonwire import PARSE_IN_THREAD_CHARS
from gateway.responses import JSON_CONTENT_TYPE, error_response, method_not_allowed, not_found
from gateway.state import GatewayState

log = structlog.get_logger()

T = TypeVar("T")

SESSION_HEADER = "x-openclaw-session-key"
MODEL_USED_HEADER = "x-openclaw-model-used"

# CORS (§9). Preflights are cached for 10 minutes, as the spec asks.
CORS_MAX_AGE = "600"
CORS_METHODS = "GET, POST, OPTIONS"
# Always allowed, whatever the preflight asks for; the requested ones are echoed on top.
CORS_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "x-openclaw-agent-id",
    "x-openclaw-agent",
    "x-openclaw-session-key",
    "x-openclaw-model",
    "x-openwebui-chat-id",
    "x-chat-id",
    "x-request-id",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
# Never echoed, although the spec echoes what a preflight asks for: the headers a proxy sets.
# A page allowed to send them would pick the address the failed-auth limiter counts it under
# whenever it reaches clawgate from a trusted proxy's address (the loopback, in the README's
# set-up) without the proxy: a fresh address for every guess. A real proxy adds them itself.
CORS_NEVER_ALLOWED = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
)


def chat_completions_enabled(config: Config) -> bool:
    return config.gateway.http.chat_completions.enabled


# -- steps 1-4: enablement, method, draining, auth ------------------------------------------


def gate(
    request: web.Request,
    methods: Collection[str],
    enabled: Callable[[Config], bool] = chat_completions_enabled,
) -> web.StreamResponse | None:
    """The answer for a request that must not reach its handler, else None."""
    state = request.app[STATE]
    config = state.config  # read per request: a reload swaps it
    if request.method not in methods and is_preflight(request):
        # §9: a preflight on any /v1/* path, a disabled endpoint's too: the request it
        # clears then gets its 404 with the CORS headers, where a refused preflight is
        # reported by the browser as a CORS failure.
        return preflight(request, config)
    if not enabled(config):
        return not_found()  # before method and auth: a disabled endpoint does not exist
    if request.method not in methods:
        return method_not_allowed(", ".join(methods))
    if state.draining:
        return error_answer(request, shutting_down())
    try:
        authenticate(request, state)
    except RequestError as exc:
        return error_answer(request, exc)
    if request.method == "POST" and not is_json_content_type(request.headers.get("Content-Type")):
        return unsupported_media_type()  # after auth, as before: a CSRF form post stops here
    return None


def authenticate(
    request: web.Request,
    state: GatewayState,
    presented: str | None = None,
    auth: AuthConfig | None = None,
) -> None:
    """§3: the lockout before the credential; only a wrong credential counts as a failure.
    By default the gateway's own secret, presented as a bearer token; the hooks pass theirs,
    whose successes do not clear the failures counted against the gateway's."""
    outcome = check_secret(
        state.config.gateway.auth if auth is None else auth,
        state.limiter,
        bearer_secret(request.headers.get("Authorization")) if presented is None else presented,
        client_of(request),
        browser="Origin" in request.headers,
        forgives=auth is None,
    )
    match outcome:
        case AuthFailure(reason=AuthFailureReason.LOCKED_OUT, retry_after=int(retry_after)):
            raise auth_locked_out(retry_after)
        case AuthFailure():
            raise unauthorized()


# -- step 5: the body -----------------------------------------------------------------------


async def read_body(request: web.Request, limit: int, within: float) -> bytes:
    """§2 step 5: the announced length first, then what actually arrives, in `within` s.
    A compressed body (gateway.http.content_coding) is held to the limit twice: as it arrives,
    and as it decodes."""
    check_transfer_coding(request.headers.getall("Transfer-Encoding", ()))
    if request.content_length is not None and request.content_length > limit:
        raise payload_too_large()
    coding = request_coding(request.headers.getall("Content-Encoding", ()))
    await send_continue(request)  # the head passed every check: the client may send the body
    if coding is None and request.content.is_eof():
        # The whole body came with the headers, as a small request's does: no timer, no wait.
        body = request.content.read_nowait()
        if len(body) > limit:
            raise payload_too_large()
        return body
    inflater = BodyInflater(coding, limit) if coding is not None else None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise payload_too_large()
                if inflater is None:
                    chunks.append(chunk)
                else:
                    chunks.extend(inflater.feed(chunk))
    except TimeoutError:
        raise body_timeout() from None
    except (web.RequestPayloadError, HttpProcessingError):
        # The body's framing broke (a chunk size that is no number; HttpProcessingError:
        # the C parser's, server.py): the parser can read no more of it, nor of the
        # connection. As for a request the parser refuses with its
        # head (server.py), a fixed 400 that quotes none of it; the body ends here, so that
        # aiohttp does not go on reading it after the answer, to fail again.
        request.content.feed_eof()
        raise broken_body() from None
    if inflater is not None:
        inflater.finish()
    return b"".join(chunks)


async def work_on_body(raw: bytes, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)`, a step on the body `raw`, in a thread when the body is large: parsing
    a body within the limit (20 MiB) can take seconds (jsonwire.PARSE_IN_THREAD_CHARS), and
    so can building the conversation of its hundreds of thousands of messages; on the event
    loop either would hold every other client up."""
    if len(raw) > PARSE_IN_THREAD_CHARS:
        return await asyncio.to_thread(work, *args)
    return work(*args)


# -- answers --------------------------------------------------------------------------------


def session_header(request: web.Request) -> dict[str, str]:
    """Once resolved, the session key goes back on every answer (§4.2), and once known,
    the model that answers."""
    headers: dict[str, str] = {}
    key = request.get(SESSION_KEY)
    if key is not None:
        headers[SESSION_HEADER] = key
    model = request.get(MODEL_USED)
    if model is not None:
        headers[MODEL_USED_HEADER] = model
    return headers


def body_answer(request: web.Request, body: dict[str, Any]) -> web.Response:
    """A completed run's JSON body (the wire's own encoding) with the session headers."""
    return web.Response(
        body=encode_json(body),
        headers={"Content-Type": JSON_CONTENT_TYPE, **session_header(request)},
    )


def error_answer(request: web.Request, error: RequestError) -> web.Response:
    if error.detail is not None:
        log.info("chat_request_rejected", status=error.status, reason=error.detail)
    response = error_response(
        error.status,
        error.message,
        error.type,
        param=error.param,
        code=error.code,
        headers={**error.headers, **session_header(request)},
    )
    if error.status in (408, 413) or error.closes:
        # The rest of the body may still be on the wire (or cannot be parsed), so the
        # connection cannot carry another request. (aiohttp still reads and drops what
        # comes for up to 10 s before closing, so a client busy sending reads this answer
        # rather than a reset.)
        response.force_close()
    return response


# -- CORS -----------------------------------------------------------------------------------


def origin_allowed(origin: str, config: Config) -> bool:
    """An origin `gateway.http.cors.allowedOrigins` lists, or any under `*`. Only one in
    ASCII is an origin (RFC 6454 serializes them so; no browser sends another): aiohttp reads
    a header's other bytes as UTF-8, so an echo of such a value would allow another origin
    than the one sent."""
    if not origin.isascii():
        return False
    allowed = config.gateway.http.cors_allowed_origins
    return "*" in allowed or origin in allowed


def is_preflight(request: web.Request) -> bool:
    headers = request.headers
    return (
        request.method == "OPTIONS"
        and "Origin" in headers
        and "Access-Control-Request-Method" in headers
    )


def preflight(request: web.Request, config: Config, methods: str = CORS_METHODS) -> web.Response:
    """204 without auth for an allowed origin; 403 without CORS headers for any other."""
    if not origin_allowed(request.headers["Origin"], config):
        return error_response(403, "Origin not allowed", "invalid_request_error")
    requested = request.headers.get("Access-Control-Request-Headers", "")
    unique: dict[str, str] = {}  # header names are case-insensitive; the first spelling wins
    for name in (*CORS_ALLOW_HEADERS, *requested.split(",")):
        if name.strip() and name.strip().lower() not in CORS_NEVER_ALLOWED:
            unique.setdefault(name.strip().lower(), name.strip())
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ", ".join(unique.values()),
            "Access-Control-Max-Age": CORS_MAX_AGE,
        },
    )
