"""Who is connected (`system-presence`, the `presence` event; ws-protocol.md §8, §9.2).

The book keeps its entries in the order they last changed, so "newest first" is a walk from
the end and a bounded list reads only the entries it lists: its work for a connect or a close
does not grow with the number of clients. The fan-out coalesces changes (at most one broadcast
per interval) and builds each broadcast's frame once, for every connection.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from gateway import __version__
from gateway.ws.connection import Connection
from gateway.ws.protocol import ROLE_OPERATOR, ClientInfo, EventFrame

# OpenClaw keeps disconnected entries; how long is unverified, 5 minutes is the spec's choice.
DISCONNECTED_RETENTION_MS = 5 * 60 * 1000
# ... and at most this many of them, the oldest dropped first: a client in a reconnect loop
# (each connection a new instance) would otherwise grow the book and every `system-presence`
# answer for those 5 minutes; a thousand is more than any real set of operator clients.
DISCONNECTED_MAX = 1000


@attrs.define
class _Entry:
    conn_id: str
    client: ClientInfo
    scopes: tuple[str, ...]
    online_since: int
    ts: int
    disconnected_at: int | None = None
    last_activity_at: int | None = None

    @property
    def instance(self) -> str:
        return self.client.instance_id or self.conn_id

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
        out["instanceId"] = self.instance
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
    # Oldest change first: a connect appends, a disconnect moves its entry to the end.
    _entries: dict[str, _Entry] = attrs.field(factory=dict)
    # The disconnected entries, oldest disconnect first (retention expires them from the
    # front), and by instance (a reconnect replaces them): neither needs a walk of every entry.
    _gone: dict[str, _Entry] = attrs.field(factory=dict)
    _gone_by_instance: dict[str, set[str]] = attrs.field(factory=dict)

    def connect(self, conn_id: str, client: ClientInfo, scopes: tuple[str, ...], now: int) -> None:
        # A client that reconnects replaces its disconnected entry.
        for key in self._gone_by_instance.pop(client.instance_id or conn_id, ()):
            del self._gone[key]
            del self._entries[key]
        self._entries[conn_id] = _Entry(conn_id, client, scopes, now, now)
        self.version += 1

    def disconnect(self, conn_id: str, now: int, last_activity_at: int) -> None:
        entry = self._entries.pop(conn_id, None)
        if entry is None:
            return
        entry.disconnected_at = entry.ts = now
        entry.last_activity_at = last_activity_at
        self._entries[conn_id] = entry  # now the newest
        self._gone.pop(conn_id, None)
        self._gone[conn_id] = entry
        self._gone_by_instance.setdefault(entry.instance, set()).add(conn_id)
        if len(self._gone) > DISCONNECTED_MAX:
            self._forget(next(iter(self._gone)))
        self.version += 1

    def snapshot(self, now: int, limit: int | None = None) -> list[dict[str, Any]]:
        """The `self` entry, then the newest `limit` client entries (all of them by default)."""
        self._expire(now)
        entries: Iterable[_Entry] = reversed(self._entries.values())
        if limit is not None:
            entries = itertools.islice(entries, limit)
        return [self._own(now), *(entry.to_dict() for entry in entries)]

    def _expire(self, now: int) -> None:
        gone = self._gone
        while gone:
            key, entry = next(iter(gone.items()))
            assert entry.disconnected_at is not None
            if now - entry.disconnected_at <= DISCONNECTED_RETENTION_MS:
                return
            self._forget(key)

    def _forget(self, key: str) -> None:
        """A disconnected entry, gone for good."""
        entry = self._gone.pop(key)
        del self._entries[key]
        keys = self._gone_by_instance[entry.instance]
        keys.discard(key)
        if not keys:
            del self._gone_by_instance[entry.instance]

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


@attrs.define(eq=False)
class PresenceFanout:
    """Sends the `presence` event (§9.2) to every authenticated connection, coalesced.

    The first change after a quiet interval goes out at once; later ones within the interval
    are folded into one broadcast at its end, with the state of that moment. A connection
    whose hello-ok snapshot is already as new as the book is skipped.
    """

    book: PresenceBook
    connections: set[Connection]  # the authenticated ones
    frame: Callable[[], EventFrame]  # the event for the book as it is now
    _sent_at: float = -math.inf  # loop time of the last broadcast
    _timer: asyncio.TimerHandle | None = None

    def changed(self, interval: float) -> None:
        """After a change of the book: broadcast now, or at the end of the interval."""
        if self._timer is not None:
            return  # a broadcast is scheduled; it will carry this change
        loop = asyncio.get_running_loop()
        wait = self._sent_at + interval - loop.time()
        if wait <= 0:
            self._broadcast()
        else:
            self._timer = loop.call_later(wait, self._broadcast)

    def _broadcast(self) -> None:
        self._timer = None
        version = self.book.version
        frame: EventFrame | None = None
        # No copy: connections join and leave only in their handlers, never from send_event.
        for conn in self.connections:
            if conn.presence_version >= version:
                continue
            if frame is None:
                frame = self.frame()  # serialised once, for every connection
            conn.presence_version = version
            conn.send_event(frame)
        if frame is not None:
            self._sent_at = asyncio.get_running_loop().time()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
