"""The `health` snapshot (ws-protocol.md §8): the method, hello-ok and the `health` event."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from typing import Any

import attrs

from agents.registry import SessionList, SessionRegistry
from gateway.state import GatewayState
from gateway.ws.connection import now_ms
from gateway.ws.protocol import UNAVAILABLE, WsError

# A `health` answer may be this old; clients poll it, and each computation reads the store.
MAX_AGE_SECONDS = 1.0
# A probe asks for the state now, not the snapshot kept for a second; one whose computation
# began this recently is that to any reader (its `ts` says when), and a client that loops
# probes (`health` needs no scope) then costs at most two computations a second, not one per
# call, each a read of the store per agent and one more.
PROBE_REUSE_SECONDS = 0.5
RECENT = 5  # sessions listed under `recent`


def registry_of(state: GatewayState) -> SessionRegistry:
    registry = state.registry
    if registry is None:
        raise WsError(UNAVAILABLE, "gateway is not ready")
    return registry


def _sessions_block(path: str, listed: SessionList, now: int) -> dict[str, Any]:
    return {
        "path": path,
        "count": listed.total_count,
        "recent": [
            {"key": s.key, "updatedAt": s.updated_at, "age": max(0, now - s.updated_at)}
            for s in listed.sessions
        ],
    }


@attrs.define
class HealthCache:
    """The last snapshot; `version` (`stateVersion.health`) is +1 per computation."""

    version: int = 0
    _snapshot: dict[str, Any] | None = None
    _started_at: float = -math.inf  # when the last snapshot's computation began
    _computed_at: float = 0.0
    _lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    probe_reuse_seconds: float = PROBE_REUSE_SECONDS

    async def get(
        self, state: GatewayState, *, probe: bool = False, refresh: bool = False
    ) -> dict[str, Any]:
        """The snapshot; `probe`: a client's, computed unless one is recent; `refresh`: the
        periodic `health` event's, computed anew (unless one began meanwhile)."""
        asked = time.monotonic()
        async with self._lock:  # concurrent callers share one computation
            # A computation that began after this call was made is as new as a probe asks
            # for: probes that wait for one another share it, so a burst of them (`health`
            # needs no scope) costs two computations, not one each.
            if self._snapshot is not None and self._started_at >= asked:
                return self._snapshot
            now = time.monotonic()
            fresh = now - self._computed_at <= MAX_AGE_SECONDS
            recent = now - self._started_at < self.probe_reuse_seconds
            if self._snapshot is None or refresh or (probe and not recent) or not fresh:
                started = time.monotonic()
                self._snapshot = await compute_health(state)
                self._started_at, self._computed_at = started, time.monotonic()
                self.version += 1
            return self._snapshot


async def compute_health(state: GatewayState) -> dict[str, Any]:
    started = time.monotonic()
    registry = registry_of(state)
    config = state.config
    path = config.sessions_location
    agents = config.agents
    now = now_ms()
    everything = await registry.list_sessions(limit=RECENT)
    per_agent = []
    for agent in agents.agents:
        listed = await registry.list_sessions(limit=RECENT, agent_id=agent.id)
        per_agent.append(
            {
                "agentId": agent.id,
                "isDefault": agent.id == agents.default_agent.id,
                "sessions": _sessions_block(path, listed, now),
            }
        )
    health = {
        "ok": True,
        "ts": now,
        "durationMs": int((time.monotonic() - started) * 1000),
        "defaultAgentId": agents.default_agent.id,
        "agents": per_agent,
        "sessions": _sessions_block(path, everything, now),
        "configReload": {
            "hotReloadStatus": "off" if config.gateway.reload_mode == "off" else "active",
            "lastError": state.reload_error,
        },
        "channels": {},
        "channelOrder": [],
        "channelLabels": {},
        "plugins": {"loaded": [], "errors": [], "unavailable": []},
    }
    if state.store is not None and state.store.bus is not None:
        # Processes share the sessions (a postgres store): the snapshot's sessions are
        # everyone's, its runs and connections this process's, which this names.
        health["process"] = {"host": socket.gethostname(), "pid": os.getpid()}
    return health
