"""The settings the agents layer runs with, as frozen values.

The gateway parses and validates the config file (gateway/config/) and hands the
`agents`, `models` and `session` sections to this package as an `AgentsConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

ECHO_PROVIDER = "echo"
API_ECHO = "echo"
API_OPENAI_COMPLETIONS = "openai-completions"
API_ANTHROPIC_MESSAGES = "anthropic-messages"


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class ModelRef:
    """`provider/model`, split at the first `/`."""

    provider: str
    model: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        provider, sep, model = text.partition("/")
        if not sep or not provider or not model:
            raise ValueError(f'must be "provider/model" (got "{text}")')
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@attrs.frozen
class ModelEntry:
    """One model a provider lists (`models.providers.<id>.models[]`)."""

    id: str
    name: str = attrs.field(default=attrs.Factory(lambda self: self.id, takes_self=True))
    context_window: int | None = None
    max_tokens: int | None = None
    reasoning: bool = False


@attrs.frozen
class ProviderConfig:
    """`models.providers.<id>`: a network provider the agents can use."""

    id: str
    api: str
    base_url: str
    api_key: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    models: tuple[ModelEntry, ...] = ()

    def model(self, model_id: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)


@attrs.frozen
class AgentConfig:
    """One entry of `agents.list` with the defaults applied."""

    id: str
    models: tuple[ModelRef, ...]  # primary first, then the fallbacks in order
    name: str = attrs.field(default=attrs.Factory(lambda self: self.id, takes_self=True))
    system_prompt: str = ""
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    default: bool = False
    # `agents.list[].models`: what a request may choose instead (`x-openclaw-model`).
    allowed_models: tuple[ModelRef, ...] = ()

    def allows(self, ref: ModelRef) -> bool:
        """A request may run this agent on `ref`: its own chain or its allow-list."""
        return ref in self.models or ref in self.allowed_models

    @property
    def primary(self) -> ModelRef:
        return self.models[0]

    @property
    def fallbacks(self) -> tuple[ModelRef, ...]:
        return self.models[1:]


GIB = 1024**3
DEFAULT_MAX_DISK_BYTES = GIB


@attrs.frozen
class MaintenanceConfig:
    """`session.maintenance` (OpenClaw's key names and meanings where they fit)."""

    mode: str = "enforce"  # "warn" only logs; "enforce" deletes
    prune_after_ms: int = 30 * 24 * 3600 * 1000
    max_entries: int = 500
    # Keyless HTTP sessions: nobody can continue one without the key the response named, so
    # a day is plenty, and it keeps a flood of one-shot requests from filling the disk.
    stateless_ttl_ms: int = 24 * 3600 * 1000
    # The store file's budget; 0 switches the byte limit off. OpenClaw's default is 10 GB per
    # agent; one gigabyte is years of a person's chats and fits a small VPS's disk.
    max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES
    # What a pass over the budget frees down to, so the next turns do not trigger it again
    # (OpenClaw: 80 % of maxDiskBytes by default).
    high_water_bytes: int = DEFAULT_MAX_DISK_BYTES * 8 // 10


@attrs.frozen
class AgentsConfig:
    """Everything the agents layer needs from the config file."""

    agents: tuple[AgentConfig, ...] = (AgentConfig("main", (ModelRef("echo", "echo"),)),)
    providers: Mapping[str, ProviderConfig] = attrs.field(factory=dict, converter=_frozen_mapping)
    timeout_seconds: int = 172_800  # 48 h, OpenClaw's default; 0 means no run timeout
    max_concurrent: int = 4
    history_limit: int = 50
    main_key: str = "main"
    maintenance: MaintenanceConfig = MaintenanceConfig()
    # `agents.defaults.model`: already applied to every agent without a model of its own; kept
    # so the effective config (`config.get`, reload diffs) can show it.
    default_models: tuple[ModelRef, ...] = (ModelRef("echo", "echo"),)
    # `agents.defaults.embeddingModel`: what /v1/embeddings asks, an openai-completions
    # provider's model (or echo's offline vectors); None: the endpoint answers 400.
    embedding_model: ModelRef | None = None

    @property
    def default_agent(self) -> AgentConfig:
        """The first agent marked `default`, else the first agent."""
        return next((a for a in self.agents if a.default), self.agents[0])

    def agent(self, agent_id: str) -> AgentConfig | None:
        agent_id = agent_id.lower()
        return next((a for a in self.agents if a.id == agent_id), None)

    def main_session_key(self, agent_id: str) -> str:
        return f"agent:{agent_id}:{self.main_key}"
