"""`health` and `status` (ws-protocol.md §8, §12)."""

from __future__ import annotations

import os
from typing import Any

import attrs

from agents.events import SessionInfo
from gateway import __version__
from gateway.config.model import Config
from gateway.state import GatewayState
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.health import registry_of
from gateway.ws.protocol import READ, ParamReader

RECENT = 5


@attrs.frozen
class HealthParams:
    probe: bool = False

    @classmethod
    def parse(cls, r: ParamReader) -> HealthParams:
        return cls(bool(r.boolean("probe")))


def default_model(config: Config, agent_id: str | None = None) -> tuple[str, str, int | None]:
    """The primary model of `agent_id` (the default agent when None or not configured):
    provider, model id, context window."""
    agent = config.agents.agent(agent_id) if agent_id is not None else None
    ref = (agent or config.agents.default_agent).primary
    return ref.provider, ref.model, context_window(config, ref.provider, ref.model)


def model_defaults(config: Config, agent_id: str | None = None) -> dict[str, Any]:
    """`defaults` of `sessions.list` and `chat.history`: what a session of `agent_id` with no
    turn yet runs on (OpenClaw's TUI shows it in its footer until the first reply)."""
    provider, model, context = default_model(config, agent_id)
    return {"modelProvider": provider, "model": model, "contextTokens": context}


def context_window(config: Config, provider: str | None, model: str | None) -> int | None:
    if provider is None or model is None:
        return None
    provider_config = config.agents.providers.get(provider)
    entry = provider_config.model(model) if provider_config is not None else None
    return entry.context_window if entry is not None else None


def register(methods: MethodRegistry) -> None:
    @methods.method("health", params=HealthParams.parse, scope=None)
    async def health(ctx: CallContext, params: HealthParams) -> Any:
        return await ctx.ws.health.get(ctx.gateway, probe=params.probe)

    @methods.method("status", params=no_params, scope=READ)
    async def status(ctx: CallContext, params: None) -> Any:
        return await ctx.ws.status.get(lambda: _status(ctx.gateway))


async def _status(gateway: GatewayState) -> dict[str, Any]:
    """Of no caller in particular: the calls asked meanwhile share it (`SharedRead`)."""
    config, registry = gateway.config, registry_of(gateway)
    path = config.sessions_location
    now = now_ms()
    everything = await registry.list_sessions(limit=RECENT)
    by_agent = []
    for agent in config.agents.agents:
        listed = await registry.list_sessions(limit=RECENT, agent_id=agent.id)
        by_agent.append(
            {
                "agentId": agent.id,
                "path": path,
                "count": listed.total_count,
                "recent": [_recent(config, s, now) for s in listed.sessions],
            }
        )
    _, model, context = default_model(config)
    stats = registry.stats()
    return {
        "runtimeVersion": __version__,
        "pid": os.getpid(),
        "uptimeMs": gateway.uptime_ms,
        "sessions": {
            "paths": [path],
            "count": everything.total_count,
            "defaults": {"model": model, "contextTokens": context},
            "recent": [_recent(config, s, now) for s in everything.sessions],
            "byAgent": by_agent,
        },
        "heartbeat": {"defaultAgentId": config.agents.default_agent.id, "agents": []},
        "channelSummary": [],
        "queuedSystemEvents": [],
        "runs": {
            "active": stats.active,
            "queued": stats.queued,
            "maxConcurrent": stats.max_concurrent,
        },
    }


def _recent(config: Config, session: SessionInfo, now: int) -> dict[str, Any]:
    return {
        "agentId": session.agent_id,
        "key": session.key,
        "kind": session.kind,
        "sessionId": session.session_id,
        "updatedAt": session.updated_at,
        "age": max(0, now - session.updated_at),
        "abortedLastRun": session.aborted_last_run,
        "inputTokens": session.input_tokens,
        "outputTokens": session.output_tokens,
        "totalTokens": session.total_tokens,
        "model": session.model,
        "contextTokens": context_window(config, session.model_provider, session.model),
    }
