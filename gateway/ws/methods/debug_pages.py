"""What the Debug and Meetings pages of OpenClaw's Control UI ask for, in OpenClaw's shapes.

`diagnostics.lanes` (the Debug page's lane table, which the page reads together with `status`
and `health`: without it the page showed neither) gives clawgate's one queue of runs as
OpenClaw's `main` lane. `transcripts.list` (the Meetings page) lists no meeting transcripts:
clawgate captures none.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.protocol import INVALID_REQUEST, READ, ParamReader, ParamsError, WsError

# OpenClaw's bounds of `transcripts.list`'s params.
TRANSCRIPTS_LIST_MAX = 200
TRANSCRIPTS_CURSOR_MAX = 1024 * 1024
TRANSCRIPTS_FILTER_MAX = 256
TRANSCRIPTS_DATE_MAX = 64


def _date_time(r: ParamReader, key: str) -> dt.datetime | None:
    raw = r.string(key, non_empty=True, max_len=TRANSCRIPTS_DATE_MAX)
    if raw is None:
        return None
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise r.fail(key, "must be a date-time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@attrs.frozen
class TranscriptsListParams:
    """`transcripts.list {limit?, cursor?, query?, providerId?, accountId?, agentId?,
    startedAfter?, startedBefore?}`, checked as OpenClaw checks them."""

    cursor: str | None

    @classmethod
    def parse(cls, r: ParamReader) -> TranscriptsListParams:
        r.integer("limit", minimum=1, maximum=TRANSCRIPTS_LIST_MAX)
        cursor = r.string("cursor", non_empty=True, max_len=TRANSCRIPTS_CURSOR_MAX)
        r.string("query", max_len=TRANSCRIPTS_FILTER_MAX)
        for key in ("providerId", "accountId", "agentId"):
            r.string(key, non_empty=True, max_len=TRANSCRIPTS_FILTER_MAX)
        after, before = _date_time(r, "startedAfter"), _date_time(r, "startedBefore")
        if after is not None and before is not None and after >= before:
            raise ParamsError("Transcript date range must end after it starts.")  # OpenClaw's
        return cls(cursor)


def register(methods: MethodRegistry) -> None:
    @methods.method("diagnostics.lanes", params=no_params, scope=READ)
    async def diagnostics_lanes(ctx: CallContext, params: None) -> Any:
        stats = ctx.registry.stats()
        lane = {
            "lane": "main",
            "queuedCount": stats.queued,
            "activeCount": stats.active,
            "maxConcurrent": stats.max_concurrent,
            "draining": ctx.gateway.draining,
            "generation": 0,
            "blockedBy": None,
        }
        return {"ts": now_ms(), "lanes": [lane], "dynamic": None}

    @methods.method("transcripts.list", params=TranscriptsListParams.parse, scope=READ)
    async def transcripts_list(ctx: CallContext, params: TranscriptsListParams) -> Any:
        if params.cursor is not None:  # none was given out: there are no transcripts
            raise WsError(INVALID_REQUEST, "Invalid transcript library cursor.")  # OpenClaw's
        return {"sessions": [], "nextCursor": None}
