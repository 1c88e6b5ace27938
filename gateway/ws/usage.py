"""The store scan behind `usage`, shared by every caller.

A `usage` answer sums the assistant messages of its window: a scan of the messages table
(timestamps have no index) that holds the SQLite store's scan thread, which `sessions.list`
and the health snapshot wait for too, or one of the PostgreSQL store's scan connections, and a
core while it runs. Any client with operator.read may ask, as often as it likes and on as many
connections. So one scan answers them all: it reads the longest window for every agent, each
answer takes its days and its agent from those rows, callers that come while it runs wait for
it, and its rows answer later calls while they are fresh.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from agents.store import DailyUsage, SessionUsage
from agents.store_protocol import Store
from gateway.ws.connection import now_ms

USAGE_DAYS_MAX = 366
# A scan's rows answer calls for this long at least: the Control UI's status screen asks
# every 5 s, so several open dashboards share a scan.
FRESH_SECONDS_MIN = 5.0
# ... and for this many times as long as the scan took: scans then take at most 1/50 of the
# store's time whoever asks, however many messages it holds (0.4 s with 500,000 messages:
# rows 20 s old at most).
FRESH_PER_SCAN_SECOND = 50

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


def usage_since(days: int, now: int) -> int:
    """Unix ms of the first UTC midnight of a `days`-day window that ends today."""
    today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date()
    start = dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time(), dt.UTC)
    return int(start.timestamp() * 1000)


def _utc_day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


@attrs.define
class UsageCache:
    """The last scan's rows: every agent, the last USAGE_DAYS_MAX days."""

    scans: int = 0  # scans run
    _rows: list[DailyUsage] = attrs.field(factory=list)
    _scanned_at: int = 0  # now_ms() when the scan began: the answers' `updatedAt`
    _fresh_until: float = -math.inf  # time.monotonic()
    _scan: asyncio.Task[tuple[list[DailyUsage], int]] | None = None

    async def rows(
        self, store: Store, days: int, agent_id: str | None, spawn: Spawn
    ) -> tuple[list[DailyUsage], int]:
        """The rows of `days` days (of `agent_id`'s), as `store.usage_by_day` gives them, and
        the Unix ms they are as of."""
        fresh = (
            time.monotonic() < self._fresh_until
            and _utc_day(now_ms()) == _utc_day(self._scanned_at)  # a new day: a new window
        )
        if fresh:
            rows, scanned_at = self._rows, self._scanned_at
        else:
            if self._scan is None:
                self._scan = spawn(self._run(store), "usage-scan")
            # Shielded: a caller that goes away (its socket closed) leaves the scan to the
            # others, and to the next caller, instead of having it run again.
            rows, scanned_at = await asyncio.shield(self._scan)
        # The window's rows: its days are UTC dates, so a date at or after the window's first
        # is a message at or after its first midnight, which is what the store compares.
        start = _utc_day(usage_since(days, scanned_at)).isoformat()
        agent = None if agent_id is None else agent_id.lower()
        return [
            row for row in rows if row.date >= start and (agent is None or row.agent_id == agent)
        ], scanned_at

    async def _run(self, store: Store) -> tuple[list[DailyUsage], int]:
        try:
            started = time.monotonic()
            scanned_at = now_ms()
            rows = await store.usage_by_day(usage_since(USAGE_DAYS_MAX, scanned_at))
            took = time.monotonic() - started
            self.scans += 1
            self._rows, self._scanned_at = rows, scanned_at
            self._fresh_until = time.monotonic() + max(
                FRESH_SECONDS_MIN, took * FRESH_PER_SCAN_SECOND
            )
            return rows, scanned_at
        finally:
            self._scan = None


@attrs.define
class SessionUsageScans:
    """`sessions.usage`'s store scans (`usage_by_session`): one at a time in the process, so
    that they wait here for each other, not in the store's scan thread or connections, where
    `sessions.list` and the health snapshot would wait behind them. The calls for one window
    asked at once share a scan: one that began after a call was made answers it (as
    `SharedRead`). The rows are kept only while calls wait: a later call scans anew anyway,
    and a scan of a large store holds hundreds of thousands of them."""

    scans: int = 0  # scans run
    _lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    _waiting: int = 0  # calls in `rows`
    _window: tuple[Any, ...] | None = None
    _started_at: float = -math.inf  # time.monotonic() when the last scan began
    _rows: list[SessionUsage] = attrs.field(factory=list)

    @property
    def kept(self) -> int:
        """Rows kept for calls that wait."""
        return len(self._rows)

    async def rows(
        self,
        store: Store,
        start: int,
        end: int,
        offset_ms: int,
        *,
        shifts: tuple[tuple[int, int], ...] = (),
        agent_id: str | None,
        key: str | None,
    ) -> list[SessionUsage]:
        asked = time.monotonic()
        window = (start, end, offset_ms, shifts, agent_id, key)
        self._waiting += 1
        try:
            async with self._lock:
                if self._window != window or self._started_at < asked:
                    started = time.monotonic()
                    self._window, self._rows = None, []  # a failed scan answers nobody
                    self._rows = await store.usage_by_session(
                        start, end, offset_ms, shifts=shifts, agent_id=agent_id, key=key
                    )
                    self.scans += 1
                    self._window, self._started_at = window, started
                return self._rows
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._window, self._rows = None, []
