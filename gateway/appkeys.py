"""The `web.AppKey`s and `web.RequestKey`s that the app, the HTTP routes and the WebSocket
side share. A key one side alone uses is declared with that side (`WS` in gateway/ws/handler.py,
`HOOK_REPLAYS` and `EMBEDDINGS` in gateway/http/), so this module stays below both."""

from __future__ import annotations

from aiohttp import web

from gateway.metrics import GatewayMetrics
from gateway.state import GatewayState

STATE = web.AppKey("state", GatewayState)
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
# The client left before the answer ended, though its status went out with the headers (an SSE
# stream): the request log and metrics count it as 499, as one that never got its status.
CLIENT_LEFT = web.RequestKey("client_left", bool)
# A WebSocket whose every call read the log (Connection.log_reader): its line is at debug.
LOG_READER = web.RequestKey("log_reader", bool)
# The route that answered a path with `//` in it, once merged (the router matched a catch-all).
MERGED_ROUTE = web.RequestKey("merged_route", web.AbstractRoute)
