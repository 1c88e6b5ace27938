"""The OpenAI-compatible HTTP surface (http-openai.md): chat completions, models, CORS.

Handlers stay thin: the pipeline of §2 calls the pure functions of `gateway.http.openai_wire` in
order, and only reading the body, running the turn and writing the answer happen here.

A run's waiting and streaming live in `gateway.http.runs`, shared with `/v1/responses`.
"""

from __future__ import annotations

import re
import time

import attrs
import structlog
from aiohttp import web
from yarl import URL

from agents.config import ModelRef
from agents.errors import AgentError
from agents.events import RunEvent
from agents.runs import AgentRun, RunOutcome, TurnRequest
from gateway.appkeys import AGENT_ID, MERGED_ROUTE, MODEL_USED, SESSION_KEY, STATE
from gateway.edge_http import add_route, raw_target_path
from gateway.http.common import MODEL_USED_HEADER, SESSION_HEADER, body_answer, work_on_body
from gateway.http.common import error_answer as _error
from gateway.http.common import gate as _gate
from gateway.http.common import is_preflight as _is_preflight
from gateway.http.common import origin_allowed as _origin_allowed
from gateway.http.common import preflight as _preflight
from gateway.http.common import read_body as _read_body
from gateway.http.openai_wire import (
    DONE,
    MODEL_HEADER,
    NO_RESPONSE_TEXT,
    TASK_HEADER,
    AgentSelection,
    ChatFields,
    ChunkEncoder,
    Conversation,
    RequestError,
    Route,
    build_conversation,
    check_format_taken,
    check_images_taken,
    check_tool_results,
    completion_body,
    declared_task,
    decode_model_id,
    error_event,
    error_reply,
    internal_error,
    is_background_task,
    model_ids,
    model_not_found,
    model_object,
    models_body,
    new_completion_id,
    parse_body,
    resolve_session_key,
    select_agent,
    select_model,
    validate_fields,
)
from gateway.http.runs import CLIENT_CLOSED_REQUEST, encode_delta, outcome_of, stream_run
from gateway.responses import json_response, not_found
from gateway.state import GatewayState

log = structlog.get_logger()

CORS_EXPOSE_HEADERS = f"{SESSION_HEADER}, {MODEL_USED_HEADER}, x-request-id"

_SLASHES_RE = re.compile(r"/{2,}")
_MODELS_PREFIX = "/v1/models/"


def register(app: web.Application) -> None:
    add_route(app, "/v1/chat/completions", chat_completions)
    add_route(app, "/v1/models", list_models)
    add_route(app, "/v1/models/{model_id:.*}", retrieve_model)
    # Any path with `//` (Open WebUI, when its base URL ends in `/`): routed again with the
    # slashes merged. Only such paths match, so no other module's route is shadowed.
    add_route(app, r"/{path:(?:.*/)?/.*}", merged_slashes)
    # The rest of /v1: CORS preflights answer everywhere under it; anything else is 404.
    add_route(app, "/v1/{tail:.*}", other_v1)
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
    merged one too; a 404/405 of the merged path raises as usual and becomes JSON. The
    merged route's own parameters (`/ui/{name}`, `/v1/responses/{response_id}`) join the
    request's match_info, where other modules' handlers read them.
    """
    merged = URL.build(path=_merged_path(request), query_string=request.query_string, encoded=True)
    match = await request.app.router.resolve(request.clone(rel_url=merged))
    request[MERGED_ROUTE] = match.route  # what the request's metrics are labelled by
    if match.handler is other_v1:
        # No route of its own: answered here, or other_v1 would see the `//` of the request's
        # path again and merge it again, without end.
        return _rest_of_v1(request)
    request.match_info.update(match)
    return await match.handler(request)


async def other_v1(request: web.Request) -> web.StreamResponse:
    if "//" in raw_target_path(request):
        # The router tries the longest static prefix first, so `/v1//models` lands here.
        return await merged_slashes(request)
    return _rest_of_v1(request)


def _rest_of_v1(request: web.Request) -> web.StreamResponse:
    """http-openai.md §9: a preflight on any /v1/* path from an allowed origin is a 204,
    whichever endpoints are on (a browser asks before it knows a path is there)."""
    if _is_preflight(request):
        return _preflight(request, request.app[STATE].config)
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
    body_chars: int  # the request body's length: what its turn holds while it waits, at least


async def _accept(request: web.Request, state: GatewayState) -> _Turn:
    config = state.config
    endpoint = config.gateway.http.chat_completions
    raw = await _read_body(request, endpoint.max_body_bytes, state.options.body_timeout_seconds)
    body = await work_on_body(raw, parse_body, raw)
    fields = validate_fields(body)
    headers = request.headers
    agent_header = (headers.get("x-openclaw-agent-id") or "").strip() or headers.get(
        "x-openclaw-agent"
    )
    selection = select_agent(body.get("model"), agent_header, config.agents, endpoint.unknown_model)
    conversation_header = next(
        ((name, headers[name]) for name in endpoint.session_headers if headers.get(name)), None
    )
    messages = body.get("messages")
    declared = declared_task(headers.get(TASK_HEADER))
    route = resolve_session_key(
        headers.get(SESSION_HEADER),
        fields.user,
        selection,
        config.agents,
        conversation_header,
        background_task=declared is None
        and conversation_header is not None
        and is_background_task(messages),
        declared_task=declared is True,
    )
    request[AGENT_ID] = route.agent_id
    request[SESSION_KEY] = route.session_key
    agent = config.agents.agent(route.agent_id)
    assert agent is not None  # resolve_session_key checked it
    override = select_model(headers.get(MODEL_HEADER), agent)
    conversation = await work_on_body(raw, build_conversation, messages, endpoint)
    check_tool_results(conversation, route, "messages")
    chain = (override,) if override else agent.models
    check_images_taken(conversation.given_images, chain, config.agents)
    check_format_taken(fields.params.get("response_format"), chain, config.agents)
    model = override or agent.primary
    return _Turn(fields, selection, route, conversation, model, override is not None, len(raw))


# -- step 10: the run -----------------------------------------------------------------------


async def _run(request: web.Request, state: GatewayState, turn: _Turn) -> web.StreamResponse:
    registry = state.registry
    assert registry is not None  # open for as long as the app serves requests
    completion_id = new_completion_id()
    created = int(time.time())
    route, conversation = turn.route, turn.conversation
    try:
        if not route.new_key:  # OpenClaw's: an archived session takes no new work
            await registry.refuse_archived(route.session_key)
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
                new_key=route.new_key,
                messages=conversation.messages,
                whole_conversation=route.whole_conversation,
                model=turn.model if turn.model_override else None,
                request_chars=turn.body_chars,
            )
        )
    except AgentError as exc:
        return _error(request, error_reply(exc))
    encoder = ChunkEncoder(completion_id, created, turn.selection.model)
    if turn.fields.stream:
        # Subscribed before any await, so the subscription sees every event.
        subscription = run.subscribe()
        # Headers go out before any model is tried: the one the run starts with.
        request[MODEL_USED] = str(turn.model)
        renderer = _Chunks(encoder, turn.fields.include_usage)
        keepalive_s = state.options.sse_keepalive_seconds
        return await stream_run(request, run, subscription, renderer, encoder.role, keepalive_s)
    outcome = await outcome_of(request, run)
    if isinstance(outcome, web.StreamResponse):
        return outcome
    body = completion_body(
        completion_id, created, turn.selection.model, outcome.text, outcome.stop_reason,
        outcome.usage, reasoning=outcome.reasoning, tool_calls=outcome.tool_calls,
    )  # fmt: skip
    return body_answer(request, body)


@attrs.define
class _Chunks:
    """A run as chat completion chunks (http-openai.md §7)."""

    encoder: ChunkEncoder
    include_usage: bool

    def event(self, event: RunEvent) -> bytes | None:
        return encode_delta(self.encoder, event)

    async def end(self, run: AgentRun, outcome: RunOutcome) -> bytes:
        """finish (+ usage) + [DONE]."""
        encoder = self.encoder
        parts = [] if outcome.text or outcome.tool_calls else [encoder.content(NO_RESPONSE_TEXT)]
        parts.append(encoder.finish(outcome.stop_reason))
        if self.include_usage:
            parts.append(encoder.usage(outcome.usage))
        parts.append(DONE)
        return b"".join(parts)

    def failure(self, error: RequestError) -> bytes:
        return error_event(error) + DONE


# -- answers --------------------------------------------------------------------------------


def _merged_path(request: web.Request) -> str:
    return _SLASHES_RE.sub("/", raw_target_path(request))


# -- CORS -----------------------------------------------------------------------------------


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer to an allowed origin, streams included, carries
    the CORS headers (WebSocket upgrades are the WebSocket layer's business).

    While CORS is on, every answer varies on Origin, refusals and answers to requests
    without one included: a cache between browser and gateway must not give one origin's
    answer to another."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return
    config = request.app[STATE].config
    if not config.gateway.http.cors_allowed_origins:
        return
    headers = response.headers
    vary = headers.get("Vary")
    headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    origin = request.headers.get("Origin")
    if origin is None or not _origin_allowed(origin, config):
        return
    headers["Access-Control-Allow-Origin"] = origin
    headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
