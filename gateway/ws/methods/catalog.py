"""`agents.list` and `models.list` (ws-protocol.md §8, §12)."""

from __future__ import annotations

from typing import Any

from agents.config import ECHO_PROVIDER, AgentsConfig
from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.protocol import READ


def register(methods: MethodRegistry) -> None:
    @methods.method("agents.list", params=no_params, scope=READ)
    async def agents_list(ctx: CallContext, params: None) -> Any:
        agents = ctx.config.agents
        return {
            "defaultId": agents.default_agent.id,
            "mainKey": agents.main_key,
            "scope": "per-sender",
            "agents": [
                {
                    "id": agent.id,
                    "name": agent.name,
                    "model": {
                        "primary": str(agent.primary),
                        "fallbacks": [str(ref) for ref in agent.fallbacks],
                    },
                }
                for agent in agents.agents
            ],
        }

    # OpenClaw's CLI sends {view, includeDetails}: ignored, every model has all its fields.
    @methods.method("models.list", params=no_params, scope=READ)
    async def models_list(ctx: CallContext, params: None) -> Any:
        return {"models": model_rows(ctx.config.agents)}


def model_rows(agents: AgentsConfig) -> list[dict[str, Any]]:
    """`models.list`'s models (also the model picker of OpenClaw's `chat.metadata`)."""
    primary = agents.default_agent.primary
    models: list[dict[str, Any]] = []

    def add(provider: str, model_id: str, name: str, window: int | None, reasoning: bool) -> None:
        entry: dict[str, Any] = {
            "id": model_id,
            "name": name,
            "provider": provider,
            "contextWindow": window,
            "reasoning": reasoning,
            "available": True,
        }
        if (provider, model_id) == (primary.provider, primary.model):
            entry["tags"] = ["default"]
        models.append(entry)

    add(ECHO_PROVIDER, "echo", "echo", None, False)
    for provider in agents.providers.values():
        for model in provider.models:
            add(provider.id, model.id, model.name, model.context_window, model.reasoning)
    return models
