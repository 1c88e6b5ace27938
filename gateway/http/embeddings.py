"""`POST /v1/embeddings`: vectors from the configured embedding model (OpenAI-compatible).

Served whenever the OpenAI-compatible surface is (`chatCompletions.enabled`), with its auth,
body limit, error shape and CORS (gateway.http.common). The model is
`agents.defaults.embeddingModel`, or the `x-openclaw-model` header's; `model` in the body
picks the agent as on chat completions and is echoed back, as OpenClaw does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from agents.errors import AgentError
from agents.providers.embeddings import ECHO_DIMENSIONS, EmbeddingRequest, EmbeddingsClient
from gateway.appkeys import AGENT_ID, STATE
from gateway.config.model import Config
from gateway.edge_http import add_route
from gateway.http.common import (
    chat_completions_enabled,
    error_answer,
    gate,
    read_body,
    work_on_body,
)
from gateway.http.embeddings_wire import (
    check_echo_size,
    embedding_model,
    embeddings_json,
    validate_embeddings,
)
from gateway.http.openai_wire import (
    MODEL_HEADER,
    RequestError,
    error_reply,
    internal_error,
    parse_body,
    select_agent,
)
from gateway.http.runs import CLIENT_CLOSED_REQUEST, ClientWatch
from gateway.responses import JSON_CONTENT_TYPE

log = structlog.get_logger()

EMBEDDINGS = web.AppKey("embeddings", EmbeddingsClient)  # the upstream client


def register(app: web.Application) -> None:
    add_route(app, "/v1/embeddings", embeddings)
    app.cleanup_ctx.append(_client)


def embeddings_enabled(config: Config) -> bool:
    # OpenClaw serves embeddings when either OpenAI endpoint is on.
    return chat_completions_enabled(config) or config.gateway.http.responses.enabled


async def _client(app: web.Application) -> AsyncIterator[None]:
    client = EmbeddingsClient(app[STATE].options.provider_timeouts)
    app[EMBEDDINGS] = client
    try:
        yield
    finally:
        await client.aclose()


async def embeddings(request: web.Request) -> web.StreamResponse:
    refused = gate(request, ("POST",), embeddings_enabled)
    if refused is not None:
        return refused
    try:
        embedding_request, model = await _accept(request)
    except RequestError as exc:
        return error_answer(request, exc)
    except ConnectionError:  # the client left while sending its body
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    # The upstream call runs as a task so that a client that leaves cancels it.
    task = asyncio.ensure_future(request.app[EMBEDDINGS].embed(embedding_request))
    watch = ClientWatch(request, task.cancel)
    try:
        await asyncio.wait({task})
    finally:
        watch.close()
        task.cancel()  # a no-op once done; else the handler itself ended early
    if watch.gone or task.cancelled():
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    failure = task.exception()
    if isinstance(failure, AgentError):
        log.info("embeddings_failed", error=type(failure).__name__, detail=failure.detail)
        return error_answer(request, error_reply(failure))
    if failure is not None:
        log.error("embeddings_crashed", exc_info=failure)
        return error_answer(request, internal_error())
    # In a thread: millions of floats take seconds to write (embeddings_json).
    body = await asyncio.to_thread(
        embeddings_json, model, task.result(), embedding_request.encoding_format
    )
    return web.Response(body=body, headers={"Content-Type": JSON_CONTENT_TYPE})


async def _accept(request: web.Request) -> tuple[EmbeddingRequest, str]:
    state = request.app[STATE]
    config = state.config
    limit = config.gateway.http.chat_completions.max_body_bytes
    raw = await read_body(request, limit, state.options.body_timeout_seconds)
    body = await work_on_body(raw, parse_body, raw)
    headers = request.headers
    agent_header = (headers.get("x-openclaw-agent-id") or "").strip() or headers.get(
        "x-openclaw-agent"
    )
    unknown_model = config.gateway.http.chat_completions.unknown_model
    selection = select_agent(body.get("model"), agent_header, config.agents, unknown_model)
    request[AGENT_ID] = selection.agent_id
    fields = validate_embeddings(body)
    ref = embedding_model(headers.get(MODEL_HEADER), config.agents)
    check_echo_size(ref, fields, ECHO_DIMENSIONS)
    embedding_request = EmbeddingRequest(
        ref=ref,
        inputs=fields.inputs,
        dimensions=fields.dimensions,
        encoding_format=fields.encoding_format,
        user=fields.user,
        provider=config.agents.providers.get(ref.provider),
    )
    return embedding_request, selection.model
