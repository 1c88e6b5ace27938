"""The OpenAI-compatible HTTP surface (http-openai.md): chat completions, models, CORS.

Handlers stay thin: the pipeline of §2 calls the pure functions of `gateway.openai_wire` in
order, and only reading the body, running the turn and writing the answer happen here.

Client disconnects (deviation 6). aiohttp 3.14 does not cancel a handler whose client went
away (`handler_cancellation` is off by default) and has no public callback for it: the
protocol's `connection_lost` only drops its transport (`request.transport` becomes None)
and fails a pending body read. A request waiting on its run therefore polls the transport
(`ClientWatch`); a streaming request also learns it from a failed write. Either way the run
is aborted, nothing more is written and the handler returns normally (aiohttp then swallows
the ConnectionError of finishing the response), so there is no error log.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable

import attrs
import structlog
from aiohttp import web
from yarl import URL

from agents.config import ModelRef
from agents.errors import AgentError
from agents.events import ASSISTANT, THINKING, TOOL
from agents.runs import ABORTED, FAILED, AgentRun, RunSubscription, TurnRequest
from gateway.appkeys import AGENT_ID, MODEL_USED, SESSION_KEY, STATE
from gateway.http_common import MODEL_USED_HEADER, SESSION_HEADER
from gateway.http_common import error_answer as _error
from gateway.http_common import gate as _gate
from gateway.http_common import is_preflight as _is_preflight
from gateway.http_common import origin_allowed as _origin_allowed
from gateway.http_common import preflight as _preflight
from gateway.http_common import read_body as _read_body
from gateway.http_common import session_header as _session_header
from gateway.openai_wire import (
    DONE,
    KEEPALIVE,
    MODEL_HEADER,
    NO_RESPONSE_TEXT,
    SHUTDOWN_ABORT,
    AgentSelection,
    ChatFields,
    ChunkEncoder,
    Conversation,
    RequestError,
    Route,
    build_conversation,
    completion_body,
    decode_model_id,
    encode_json,
    error_event,
    error_reply,
    internal_error,
    model_ids,
    model_not_found,
    model_object,
    models_body,
    new_completion_id,
    parse_body,
    resolve_session_key,
    select_agent,
    select_model,
    shutting_down,
    validate_fields,
)
from gateway.responses import JSON_CONTENT_TYPE, json_response, not_found
from gateway.sse import EventStream
from gateway.state import GatewayState

log = structlog.get_logger()

# How often a request waiting on its run checks that its client is still connected. The
# upstream must see the cancel within a second (deviation 6); a tenth of that leaves the
# abort most of the second, and 10 timer callbacks/s per open request cost next to nothing.
DISCONNECT_POLL_SECONDS = 0.1
CLIENT_GONE = "client disconnected"  # AgentRun.abort_reason when the client left
HANDLER_ENDED = "request ended"  # the handler ended some other way (cancelled, a bug)
# nginx's "client closed request": what the access log shows; nobody receives it.
CLIENT_CLOSED_REQUEST = 499

CORS_EXPOSE_HEADERS = f"{SESSION_HEADER}, {MODEL_USED_HEADER}, x-request-id"

_SLASHES_RE = re.compile(r"/{2,}")
_MODELS_PREFIX = "/v1/models/"


def register(app: web.Application) -> None:
    router = app.router
    router.add_route("*", "/v1/chat/completions", chat_completions)
    router.add_route("*", "/v1/models", list_models)
    router.add_route("*", "/v1/models/{model_id:.*}", retrieve_model)
    # Any path with `//` (Open WebUI, when its base URL ends in `/`): routed again with the
    # slashes merged. Only such paths match, so no other module's route is shadowed.
    router.add_route("*", r"/{path:(?:.*/)?/.*}", merged_slashes)
    # The rest of /v1: CORS preflights answer everywhere under it; anything else is 404.
    router.add_route("*", "/v1/{tail:.*}", other_v1)
    app.on_response_prepare.append(cors_headers)


# -- routes ---------------------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    refused = _gate(request, ("POST",))
    if refused is not None:
        return refused
    state = request.app[STATE]
    try:
        turn = await _accept(request, state)
    except RequestError as exc:
        return _error(request, exc)
    except ConnectionError:  # the client left while sending its body
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    try:
        return await _run(request, state, turn)
    except Exception:
        # A bug of ours before any byte of the answer (a stream handles its own).
        log.exception("chat_completion_crashed")
        return _error(request, internal_error())


async def list_models(request: web.Request) -> web.StreamResponse:
    refused = _gate(request, ("GET", "HEAD"))
    if refused is not None:
        return refused
    return json_response(models_body(request.app[STATE].config.agents))


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    refused = _gate(request, ("GET", "HEAD"))
    if refused is not None:
        return refused
    try:
        # From the raw path: aiohttp's match_info is decoded leniently (a bad escape passes).
        model_id = decode_model_id(_merged_path(request).removeprefix(_MODELS_PREFIX))
    except RequestError as exc:
        return _error(request, exc)
    if model_id not in model_ids(request.app[STATE].config.agents):
        return _error(request, model_not_found(model_id))
    return json_response(model_object(model_id))


async def merged_slashes(request: web.Request) -> web.StreamResponse:
    """`/v1//models` is `/v1/models` (§1): resolve the merged path, run its handler.

    The handlers of this module read the path through `_merged_path`, so they see the
    merged one too; a 404/405 of the merged path raises as usual and becomes JSON.
    """
    merged = URL.build(path=_merged_path(request), query_string=request.query_string, encoded=True)
    match = await request.app.router.resolve(request.clone(rel_url=merged))
    return await match.handler(request)


async def other_v1(request: web.Request) -> web.StreamResponse:
    if "//" in request.raw_path.partition("?")[0]:
        # The router tries the longest static prefix first, so `/v1//models` lands here.
        return await merged_slashes(request)
    config = request.app[STATE].config
    if config.gateway.http.chat_completions.enabled and _is_preflight(request):
        return _preflight(request, config)
    return not_found()


# -- steps 1-4: enablement, method, draining, auth ------------------------------------------


# -- steps 5-9: body, fields, agent, session key, prompt ------------------------------------


@attrs.frozen
class _Turn:
    fields: ChatFields
    selection: AgentSelection
    route: Route
    conversation: Conversation
    model: ModelRef  # the model the run starts with: the header's, else the agent's primary
    model_override: bool  # chosen by x-openclaw-model


async def _accept(request: web.Request, state: GatewayState) -> _Turn:
    config = state.config
    endpoint = config.gateway.http.chat_completions
    raw = await _read_body(request, endpoint.max_body_bytes, state.options.body_timeout_seconds)
    body = parse_body(raw)
    fields = validate_fields(body)
    headers = request.headers
    agent_header = (headers.get("x-openclaw-agent-id") or "").strip() or headers.get(
        "x-openclaw-agent"
    )
    selection = select_agent(body.get("model"), agent_header, config.agents, endpoint.unknown_model)
    conversation_header = next(
        ((name, headers[name]) for name in endpoint.session_headers if headers.get(name)), None
    )
    route = resolve_session_key(
        headers.get(SESSION_HEADER), fields.user, selection, config.agents, conversation_header
    )
    request[AGENT_ID] = route.agent_id
    request[SESSION_KEY] = route.session_key
    agent = config.agents.agent(route.agent_id)
    assert agent is not None  # resolve_session_key checked it
    override = select_model(headers.get(MODEL_HEADER), agent)
    conversation = build_conversation(body.get("messages"), endpoint)
    model = override or agent.primary
    return _Turn(fields, selection, route, conversation, model, override is not None)


# -- step 10: the run -----------------------------------------------------------------------


async def _run(request: web.Request, state: GatewayState, turn: _Turn) -> web.StreamResponse:
    registry = state.registry
    assert registry is not None  # open for as long as the app serves requests
    completion_id = new_completion_id()
    created = int(time.time())
    route, conversation = turn.route, turn.conversation
    try:
        run = registry.submit(
            TurnRequest(
                agent_id=route.agent_id,
                session_key=route.session_key,
                run_id=completion_id,
                text=conversation.text,
                images=conversation.images,
                extra_system_prompt=conversation.extra_system_prompt,
                params=turn.fields.params,
                stateless=route.stateless,
                messages=conversation.messages,
                model=turn.model if turn.model_override else None,
            )
        )
    except AgentError as exc:
        return _error(request, error_reply(exc))
    encoder_args = (completion_id, created, turn.selection.model)
    if turn.fields.stream:
        # Subscribed before any await, so the subscription sees every event.
        subscription = run.subscribe()
        encoder = ChunkEncoder(*encoder_args)
        # Headers go out before any model is tried: the one the run starts with.
        request[MODEL_USED] = str(turn.model)
        return await _stream(request, state, run, subscription, encoder, turn.fields)
    return await _complete(request, run, *encoder_args)


async def _complete(
    request: web.Request, run: AgentRun, completion_id: str, created: int, model: str
) -> web.StreamResponse:
    """§6: wait for the run's end, watching the client meanwhile."""
    watch = ClientWatch(request, lambda: run.abort(CLIENT_GONE))
    try:
        outcome = await run.wait()
    finally:
        watch.close()
        if not run.ended:
            run.abort(HANDLER_ENDED)
    if watch.gone:
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    if outcome.provider is not None and outcome.model is not None:
        request[MODEL_USED] = f"{outcome.provider}/{outcome.model}"
    if outcome.status == FAILED:
        return _error(request, error_reply(outcome.error or AgentError()))
    if outcome.status == ABORTED and run.abort_reason == SHUTDOWN_ABORT:
        return _error(request, shutting_down())
    body = completion_body(
        completion_id, created, model, outcome.text, outcome.stop_reason, outcome.usage,
        reasoning=outcome.reasoning, tool_calls=outcome.tool_calls,
    )  # fmt: skip
    return web.Response(
        body=encode_json(body),
        headers={"Content-Type": JSON_CONTENT_TYPE, **_session_header(request)},
    )


async def _stream(
    request: web.Request,
    state: GatewayState,
    run: AgentRun,
    subscription: RunSubscription,
    encoder: ChunkEncoder,
    fields: ChatFields,
) -> web.StreamResponse:
    """§7: headers and the role chunk at once, then the run's events as they come."""
    stream = EventStream(_session_header(request))
    watch = ClientWatch(request, lambda: run.abort(CLIENT_GONE))
    try:
        await stream.open(request, encoder.role)
        keepalive_s = state.options.sse_keepalive_seconds
        await _relay(stream, run, subscription, encoder, fields, keepalive_s, watch)
    except ConnectionError:
        run.abort(CLIENT_GONE)  # a write failed: the client is gone, stop writing
    except Exception:
        log.exception("chat_stream_crashed")
        if not stream.opened:
            return _error(request, internal_error())
        run.abort(HANDLER_ENDED)
        with contextlib.suppress(ConnectionError):
            await stream.close(error_event(internal_error()) + DONE)
    finally:
        watch.close()
        subscription.close()
        if not run.ended:
            run.abort(HANDLER_ENDED)
    return stream.response


async def _relay(
    stream: EventStream,
    run: AgentRun,
    subscription: RunSubscription,
    encoder: ChunkEncoder,
    fields: ChatFields,
    keepalive_s: float,
    watch: ClientWatch,
) -> None:
    """Relay the run's events until its terminal one. Events already queued go out in one
    write; `: keepalive` after `keepalive_s` without a write, including while the run waits
    behind another turn of its session."""
    keepalive = KeepaliveTimer(keepalive_s, subscription.wake)
    next_event = subscription.__anext__
    try:
        while True:
            if not subscription.pending:
                await subscription.wait()  # an event, or the keepalive timer's wake-up
                if keepalive.due and not subscription.pending:
                    await stream.send(KEEPALIVE)
                    keepalive.written()
                    continue
            event = await next_event()
            out: list[bytes] = []
            while True:
                if event.is_terminal:
                    if not watch.gone:
                        out.append(_stream_end(run, encoder, fields))
                        await stream.close(b"".join(out))
                    return
                stream_name = event.stream
                if stream_name == ASSISTANT:
                    out.append(encoder.content(event.data["delta"]))
                elif stream_name == THINKING:
                    out.append(encoder.reasoning(event.data["delta"]))
                elif stream_name == TOOL:
                    data = event.data
                    phase = data.get("phase")
                    if phase == "start":
                        start = (data["index"], data["toolCallId"], data["name"])
                        out.append(encoder.tool_call_start(*start))
                    elif phase == "update":
                        out.append(encoder.tool_call_arguments(data["index"], data["delta"]))
                if not subscription.pending:
                    break
                event = await next_event()
            if watch.gone:
                return  # the run is being aborted; nothing more goes out
            if out:
                await stream.send(b"".join(out))
                keepalive.written()
    finally:
        keepalive.cancel()


def _stream_end(run: AgentRun, encoder: ChunkEncoder, fields: ChatFields) -> bytes:
    """After the terminal event: finish (+ usage) + [DONE], or an in-band error + [DONE]."""
    outcome = run.outcome
    assert outcome is not None  # set before the terminal event is emitted
    if outcome.status == FAILED:
        return error_event(error_reply(outcome.error or AgentError())) + DONE
    if outcome.status == ABORTED and run.abort_reason == SHUTDOWN_ABORT:
        return error_event(shutting_down()) + DONE
    # Completed, or aborted by someone else (WS chat.abort, a session reset) while this
    # client still listens: what was produced is the answer.
    parts = [] if outcome.text or outcome.tool_calls else [encoder.content(NO_RESPONSE_TEXT)]
    parts.append(encoder.finish(outcome.stop_reason))
    if fields.include_usage:
        parts.append(encoder.usage(outcome.usage))
    parts.append(DONE)
    return b"".join(parts)


class KeepaliveTimer:
    """`due` once `seconds` have passed since the last `written()`; then calls `wake`.

    One timer per quiet period rather than a timeout around every event: a write only
    records its time, and the timer, when it fires early, re-arms for the real deadline.
    """

    def __init__(self, seconds: float, wake: Callable[[], object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._wake = wake
        self.due = False
        self._last = self._loop.time()
        self._armed_for = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def written(self) -> None:
        self._last = self._loop.time()
        self.due = False
        if self._timer is None:
            self._arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._armed_for = self._last + self._seconds
        self._timer = self._loop.call_at(self._armed_for, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._last + self._seconds > self._armed_for:
            self._arm()  # written since it was armed: not quiet for long enough yet
            return
        self.due = True
        self._wake()


class ClientWatch:
    """Calls `on_gone` once when the request's client disconnects (see the module doc)."""

    def __init__(self, request: web.Request, on_gone: Callable[[], object]) -> None:
        self._request = request
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self.gone = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            DISCONNECT_POLL_SECONDS, self._check
        )

    def _check(self) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self._timer = None
            self.gone = True
            self._on_gone()
        else:
            self._timer = self._loop.call_later(DISCONNECT_POLL_SECONDS, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# -- answers --------------------------------------------------------------------------------


def _merged_path(request: web.Request) -> str:
    return _SLASHES_RE.sub("/", request.raw_path.partition("?")[0])


# -- CORS -----------------------------------------------------------------------------------


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer to an allowed origin, streams included, carries
    the CORS headers (WebSocket upgrades are the WebSocket layer's business)."""
    origin = request.headers.get("Origin")
    if origin is None or request.headers.get("Upgrade", "").lower() == "websocket":
        return
    if not _origin_allowed(origin, request.app[STATE].config):
        return
    headers = response.headers
    headers["Access-Control-Allow-Origin"] = origin
    vary = headers.get("Vary")
    headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
