"""`system-presence` and `logs.tail` (ws-protocol.md §8)."""

from __future__ import annotations

import bisect
from typing import Any

import attrs

from gateway.logs import RING, LogRing, for_openclaw
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.protocol import READ, ParamReader

TAIL_LIMIT_MAX = 5000
TAIL_BYTES_MAX = 1_000_000
LOG_ID_MAX = 64  # ours are 32 hex digits; room for another gateway's, no more


@attrs.frozen
class TailParams:
    cursor: int | None
    limit: int
    max_bytes: int
    log_id: str | None = None  # the log `cursor` is a place in, as an answer named it

    @classmethod
    def parse(cls, r: ParamReader) -> TailParams:
        cursor = r.integer("cursor", minimum=0)
        limit = r.integer("limit", minimum=1, maximum=TAIL_LIMIT_MAX)
        max_bytes = r.integer("maxBytes", minimum=1, maximum=TAIL_BYTES_MAX)
        log_id = r.string("logId", max_len=LOG_ID_MAX)
        return cls(
            cursor,
            200 if limit is None else limit,
            250_000 if max_bytes is None else max_bytes,
            log_id,
        )


def tail(ring: LogRing, params: TailParams, caller: str | None = None) -> dict[str, Any]:
    """Lines after `cursor` (or the newest), newest kept when `limit`/`maxBytes` cut; each
    as OpenClaw's CLI reads it (`for_openclaw`), and `maxBytes` counts them so.

    Without the `ws_connected` line of the `caller` (its connection id), one that has only
    read the log (Connection.log_reader): it may be logged (one that asked only a second after
    its hello-ok was taken for a listener: handler.LISTENER_LOGGED_AFTER_S),
    and the reader asked for what the gateway did, not for its own arrival.

    `logId` names the log the answer's `cursor` is a place in; OpenClaw's clients leave it out
    and rely on the cursor alone, the Control UI sends it back with the cursor. Either way a
    cursor this log did not hand out resets (LogRing.handed_out).

    A worker of `--workers` reads the log all of them write (SharedLog): a cursor any of them
    handed out is a place in it, and one that is no line end of it, that none of them handed
    out, or that names another log resets. A poll of `openclaw logs --follow` reaches any
    worker, and its lines are those of all of them, each once."""
    shared = ring.shared
    # Read only as far back as `maxBytes` could reach: each line answered is at least as long.
    view = shared.read(params.cursor, params.max_bytes) if shared is not None else None
    if shared is not None and view is not None:
        cursor = params.cursor
        if (
            cursor is not None
            and view.cursor_is_a_place
            and cursor != view.oldest
            and not shared.handed_out(cursor, view.oldest)
        ):
            # A line end no worker answered with: another log's cursor (a restart's whose new
            # log reached its offset), as for one process's ring below. The newest lines.
            view = shared.read(None, params.max_bytes)
    if shared is not None and view is not None:
        another_log = params.log_id is not None and params.log_id != shared.log_id
        reset = params.cursor is not None and (another_log or not view.cursor_is_a_place)
        shared.hand_out(view.size)
        return _answer(params, caller, (shared.log_id, view.size, reset, view.lines, view.cut))
    size = ring.size
    lines = list(ring.lines)  # (byte offset after the line, line)
    oldest_start = lines[0][0] - len(lines[0][1].encode()) - 1 if lines else size
    reset = False
    candidates = lines
    if params.cursor is not None:
        cursor = params.cursor
        # Every cursor we hand out ends a line: one that cuts a line is another process's
        # (a restart, another worker of `--workers`), and says nothing about this log.
        at = bisect.bisect_right(lines, cursor, key=lambda entry: entry[0])
        ends_a_line = cursor == oldest_start or (at > 0 and lines[at - 1][0] == cursor)
        another_log = params.log_id is not None and params.log_id != ring.log_id
        # A cursor this log never answered with is another log's even when it ends one of
        # this log's lines (a restart whose new log reached the old cursor's offset); the
        # oldest line's start is a place in any log, the start of the ring.
        ours = cursor == oldest_start or cursor in ring.handed_out
        if another_log or not ours or cursor > size or cursor < oldest_start or not ends_a_line:
            reset = True  # lines were lost, or the gateway restarted
        else:
            candidates = lines[at:]
    found = (ring.log_id, ring.hand_out(size), reset, candidates, False)
    return _answer(params, caller, found)


def _answer(
    params: TailParams,
    caller: str | None,
    found: tuple[str, int, bool, list[tuple[int, str]], bool],
) -> dict[str, Any]:
    log_id, size, reset, candidates, truncated = found
    picked: list[str] = []
    total = 0
    for _, kept in reversed(candidates):
        if len(picked) >= params.limit:
            truncated = True
            break
        if caller is not None and caller in kept and "ws_connected" in kept:
            continue
        line = for_openclaw(kept)
        n = len(line.encode()) + 1
        if total + n > params.max_bytes:
            truncated = True
            break
        picked.append(line)
        total += n
    picked.reverse()
    return {
        "file": "(memory)",
        "logId": log_id,
        "cursor": size,
        "size": size,
        "truncated": truncated,
        "reset": reset,
        "lines": picked,
    }


def register(methods: MethodRegistry) -> None:
    @methods.method("system-presence", params=no_params, scope=READ)
    async def system_presence(ctx: CallContext, params: None) -> Any:
        # Every entry: asked for, unlike the bounded list that events push to everyone.
        return ctx.ws.presence.snapshot(now_ms())

    @methods.method("logs.tail", params=TailParams.parse, scope=READ, quiet=True)
    async def logs_tail(ctx: CallContext, params: TailParams) -> Any:
        # Only a connection that has done nothing else (a poll of `openclaw logs --follow`):
        # the Control UI, which has, shows its own arrival.
        reader = ctx.conn.log_reader is not False
        return tail(RING, params, ctx.conn.conn_id if reader else None)
