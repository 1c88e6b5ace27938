"""Scripted providers and a registry harness for the session/run tests.

The providers implement the `Provider` protocol for real (no mocks of our code): each
plays a script — stream deltas, fail before or after them, block until cancelled — and
records what it was asked and whether its iteration was cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from agents.config import AgentConfig, AgentsConfig, ModelRef, ProviderConfig
from agents.errors import UpstreamStatusError
from agents.providers.base import (
    Deliver,
    Finish,
    Provider,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from agents.providers.pool import ProviderPool
from agents.registry import SessionRegistry
from agents.store import SessionStore

FIXED_NOW = 1_700_000_000_000


@attrs.define(eq=False)
class ScriptedProvider:
    """Streams `deltas`, then: raises `fail` if set, blocks forever if `block`, else
    finishes with `finish` (and `usage` if set). `fail_first` raises before any delta."""

    api: str
    deltas: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()  # streamed before the deltas
    # Streamed after the deltas; an iterator makes each as it goes, as an upstream does.
    calls: Iterable[ToolCallDelta] = ()
    fail: Exception | None = None
    fail_first: Exception | None = None
    block: bool = False
    delay: float = 0.0  # before each delta
    cooperative: bool = False  # let the loop run other tasks before each delta
    usage: Usage | None = None
    finish: str = "stop"
    requests: list[ProviderRequest] = attrs.field(factory=list)
    cancelled: int = 0
    closed: int = 0  # iterations that ended (normally, failed or cancelled)
    active: int = 0
    peak: int = 0
    first_delta: asyncio.Event = attrs.field(factory=asyncio.Event)

    async def stream(self, request: ProviderRequest, deliver: Deliver) -> None:
        self.requests.append(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.fail_first is not None:
                raise self.fail_first
            for piece in self.reasoning:
                deliver(ReasoningDelta(piece))
            for delta in self.deltas:
                if self.delay or self.cooperative:
                    await asyncio.sleep(self.delay)
                deliver(TextDelta(delta))
                self.first_delta.set()
            streamed = False
            for fragment in self.calls:
                deliver(fragment)
                streamed = True
            if streamed:
                self.first_delta.set()
            if self.fail is not None:
                raise self.fail
            if self.block:
                await asyncio.Event().wait()
            if self.usage is not None:
                deliver(self.usage)
            deliver(Finish(self.finish))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
            self.closed += 1


def failing(api: str, status: int = 500) -> ScriptedProvider:
    return ScriptedProvider(api, fail_first=UpstreamStatusError(status))


class ScriptedPool:
    """A provider source: scripted providers by api name, the real pool for the rest."""

    def __init__(self, scripted: Iterable[ScriptedProvider] = ()) -> None:
        self.scripted = {p.api: p for p in scripted}
        self.real = ProviderPool()
        self.closed = False

    def get(self, api: str) -> Provider:
        provider = self.scripted.get(api)
        return provider if provider is not None else self.real.get(api)

    async def aclose(self) -> None:
        self.closed = True
        await self.real.aclose()


def make_config(
    models: Iterable[str] = ("echo/echo",),
    *,
    agents: Iterable[AgentConfig] = (),
    system_prompt: str = "",
    params: Mapping[str, Any] | None = None,
    apis: Iterable[str] = (),
    **defaults: Any,
) -> AgentsConfig:
    """`main` with the given model chain (plus `agents`); each name in `apis` becomes a
    provider `<api>` with that api, for the scripted providers."""
    main = AgentConfig(
        "main",
        tuple(ModelRef.parse(m) for m in models),
        system_prompt=system_prompt,
        params=params or {},
    )
    providers = {
        api: ProviderConfig(api, api=api, base_url="http://scripted.invalid") for api in apis
    }
    return AgentsConfig(agents=(main, *agents), providers=providers, **defaults)


@attrs.define
class Harness:
    """Builds registries over one store and closes them all at the end of the test."""

    state_dir: Path
    store: SessionStore
    registries: list[SessionRegistry] = attrs.field(factory=list)

    def registry(
        self,
        config: AgentsConfig | None = None,
        providers: Iterable[ScriptedProvider] = (),
        **kwargs: Any,
    ) -> SessionRegistry:
        registry = SessionRegistry(
            config or make_config(), self.store, ScriptedPool(providers), **kwargs
        )
        self.registries.append(registry)
        return registry

    async def aclose(self) -> None:
        for registry in self.registries:
            await registry.aclose()
        await self.store.aclose()


async def until(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds, polling: runs advance through the store's thread,
    so there is no single event to wait for."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached in 5 s")
