"""The running gateway's state, shared by the HTTP and WebSocket handlers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from agents.providers.timeouts import Timeouts
from gateway.auth import AuthRateLimiter
from gateway.config.model import Config

if TYPE_CHECKING:
    from agents.registry import SessionRegistry
    from agents.store_protocol import Store
    from gateway.config.loader import ConfigLoader


@attrs.frozen
class AppOptions:
    """Timings that are constants in production and shortened by tests."""

    provider_timeouts: Timeouts = Timeouts()
    max_live_sessions: int = 10_000
    sse_keepalive_seconds: float = 15.0  # http-openai.md §7: proxies drop idle streams
    body_timeout_seconds: float = 30.0  # http-openai.md §2 step 5
    handshake_timeout_seconds: float = 10.0  # ws-protocol.md §2
    tick_interval_seconds: float = 30.0  # ws-protocol.md §9.2
    health_interval_seconds: float = 60.0
    config_poll_seconds: float = 1.0  # config.md §7
    # A webhook call claimed in a shared store is held this long at a time while its run goes
    # on (renewed at a third of it): a retry runs the call of a process that died after this.
    hook_claim_lease_seconds: float = 15.0
    # A connection must send a complete request head within this long of opening, or of its
    # previous response (aiohttp's keep-alive timer starts when the connection opens): the
    # bound on slowloris clients, and the idle keep-alive time.
    header_timeout_seconds: float = 15.0
    # An HTTP answer whose client takes in no byte of it for this long is cut (its
    # connection closed): see gateway/http/sending.py.
    send_deadline_seconds: float = 60.0
    # A WebSocket message whose first bytes came must be whole this long after, or its socket
    # is closed (1008; gateway/ws/framelimit.py): its bytes are kept until its end. A request
    # body over HTTP has half of it (body_timeout_seconds); a minute takes a 25 MiB frame at
    # some 3.5 Mbit/s, and the few MiB of an image attachment over a slow uplink.
    message_deadline_seconds: float = 60.0


@attrs.define
class GatewayState:
    """Mutable on purpose: hot reload swaps `config`; shutdown sets `draining`."""

    config: Config
    options: AppOptions = AppOptions()
    loader: ConfigLoader | None = None
    limiter: AuthRateLimiter = attrs.field(
        default=attrs.Factory(
            lambda self: AuthRateLimiter(self.config.gateway.auth.rate_limit), takes_self=True
        )
    )
    store: Store | None = None
    registry: SessionRegistry | None = None
    started_at: float = attrs.field(factory=time.time)
    ready: bool = False
    draining: bool = False
    # The issue lines of the last failed reload, None after a successful one (health).
    reload_error: list[str] | None = None
    # Whether a reload (applied, failed, recovered, needing a restart) is logged at its level:
    # of the workers of `--workers`, which all check the file and share one stderr, only the
    # first (gateway.server); the others log it at debug, so one edit is one line to read.
    tells_reloads: bool = True
    # Called with each gateway.reload.ReloadResult after a config was applied (the WebSocket
    # layer sends a `health` event).
    config_listeners: list[Callable[[Any], None]] = attrs.Factory(list)
    # Called with the issue lines of each config file that failed to load on a reload.
    reload_failure_listeners: list[Callable[[list[str]], None]] = attrs.Factory(list)
    # Called after config.patch wrote the file and applied it here (a worker of `--workers`
    # has its siblings reload it: gateway.server).
    config_written_listeners: list[Callable[[], None]] = attrs.Factory(list)
    # Reloads and config.patch, one at a time: each reads the file (off the loop) and applies
    # what it read, so none may apply an older file after another applied a newer one.
    config_lock: asyncio.Lock = attrs.Factory(asyncio.Lock)

    @property
    def uptime_ms(self) -> int:
        return int((time.time() - self.started_at) * 1000)

    def failing(self) -> list[str]:
        """What keeps /readyz from answering ready."""
        failing = []
        if self.store is None or self.registry is None:
            failing.append("store")
        if not self.ready:
            failing.append("startup")
        if self.draining:
            failing.append("shutdown")
        return failing
