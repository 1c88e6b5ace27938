"""Who is connected (`system-presence`, the `presence` event; ws-protocol.md §8, §9.2)."""

from __future__ import annotations

import socket
import sys
import uuid
from typing import Any

import attrs

from gateway import __version__
from gateway.ws.protocol import ROLE_OPERATOR, ClientInfo

# OpenClaw keeps disconnected entries; how long is unverified, 5 minutes is the spec's choice.
DISCONNECTED_RETENTION_MS = 5 * 60 * 1000


@attrs.define
class _Entry:
    conn_id: str
    client: ClientInfo
    scopes: tuple[str, ...]
    online_since: int
    ts: int
    disconnected_at: int | None = None
    last_activity_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        client = self.client
        out: dict[str, Any] = {
            "clientId": client.id,
            "mode": client.mode,
            "host": client.display_name or client.id,
            "version": client.version,
            "platform": client.platform,
        }
        if client.device_family is not None:
            out["deviceFamily"] = client.device_family
        out["instanceId"] = client.instance_id or self.conn_id
        out["roles"] = [ROLE_OPERATOR]
        out["scopes"] = list(self.scopes)
        out["onlineSince"] = self.online_since
        if self.disconnected_at is None:
            out["reason"] = "connect"
        else:
            out["reason"] = "disconnect"
            out["lastActivityAt"] = self.last_activity_at
        # OpenClaw names the node by its display name and says `unknown` without one.
        out["text"] = f"Node: {client.display_name or 'unknown'} · mode {client.mode}"
        out["ts"] = self.ts
        return out


@attrs.define
class PresenceBook:
    """The gateway's own entry, then one per client connection, newest first.

    `version` is the `stateVersion.presence` counter: +1 per change.
    """

    host: str = attrs.field(factory=socket.gethostname)
    instance_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    version: int = 0
    _entries: dict[str, _Entry] = attrs.field(factory=dict)

    def connect(self, conn_id: str, client: ClientInfo, scopes: tuple[str, ...], now: int) -> None:
        instance = client.instance_id or conn_id
        # A client that reconnects replaces its disconnected entry.
        for key, entry in list(self._entries.items()):
            if entry.disconnected_at is not None and (
                (entry.client.instance_id or entry.conn_id) == instance
            ):
                del self._entries[key]
        self._entries[conn_id] = _Entry(conn_id, client, scopes, now, now)
        self.version += 1

    def disconnect(self, conn_id: str, now: int, last_activity_at: int) -> None:
        entry = self._entries.get(conn_id)
        if entry is None:
            return
        entry.disconnected_at = entry.ts = now
        entry.last_activity_at = last_activity_at
        self.version += 1

    def snapshot(self, now: int) -> list[dict[str, Any]]:
        for key, entry in list(self._entries.items()):
            if (
                entry.disconnected_at is not None
                and now - entry.disconnected_at > DISCONNECTED_RETENTION_MS
            ):
                del self._entries[key]
        # Newest first; among equal timestamps the later insertion is the newer.
        ordered = sorted(enumerate(self._entries.values()), key=lambda p: (p[1].ts, p[0]))
        return [self._own(now), *(entry.to_dict() for _, entry in reversed(ordered))]

    def _own(self, now: int) -> dict[str, Any]:
        return {
            "host": self.host,
            "version": __version__,
            "platform": sys.platform,
            "mode": "gateway",
            "reason": "self",
            "instanceId": self.instance_id,
            "text": f"Gateway: {self.host} · app {__version__} · mode gateway · reason self",
            "ts": now,
        }
