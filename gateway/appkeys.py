"""Every `web.AppKey` of the application, declared in one place."""

from __future__ import annotations

from aiohttp import web

from agents.providers.embeddings import EmbeddingsClient
from gateway.hooks_wire import HookReplays
from gateway.metrics import GatewayMetrics
from gateway.state import GatewayState
from gateway.ws.state import WsState

STATE = web.AppKey("state", GatewayState)
WS = web.AppKey("ws", WsState)  # the WebSocket side: connections, presence, fan-out
EMBEDDINGS = web.AppKey("embeddings", EmbeddingsClient)  # /v1/embeddings' upstream client
HOOK_REPLAYS = web.AppKey("hook_replays", HookReplays)  # idempotent /hooks/agent calls
METRICS = web.AppKey("metrics", GatewayMetrics)  # this app's own Prometheus registry

# The request id of §9 (http-openai.md): the client's `x-request-id` when valid, else new.
REQUEST_ID = web.RequestKey("request_id", str)
# Set by handlers once resolved, for the canonical request log line.
AGENT_ID = web.RequestKey("agent_id", str)
SESSION_KEY = web.RequestKey("session_key", str)
# The client's address: the peer, or what a trusted proxy forwarded (gateway/edge.py).
CLIENT_ADDRESS = web.RequestKey("client_address", str)
# `provider/model` of the answer, for the x-openclaw-model-used header.
MODEL_USED = web.RequestKey("model_used", str)
