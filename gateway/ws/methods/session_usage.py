"""`sessions.usage`: OpenClaw's Usage page (and the Models page's usage by provider), and the
details of a session it opens: `sessions.usage.timeseries` (its turns' tokens over time) and
`sessions.usage.logs` (its messages).

OpenClaw's shape, from what the store keeps of each message (its role, time, model, tokens,
stop reason): the sessions of the window, newest activity first, each with its usage, and the
window's totals and aggregates over all of them. clawgate knows no prices: every cost is 0 and
each assistant message is a `missingCostEntries`, as OpenClaw counts a model it has no price
for. It keeps no creator, channel, latency, cache tokens or tool names: every session is the
unknown creator's, and those lists are empty. A tool result stands for the call it answers.

The answer is bounded by what the store holds, not by the window: a window of years (the Usage
page's "All" asks from 1970-01-01) costs a scan of the messages in it, as `usage` does, and one
such scan runs at a time (gateway/ws/usage.py). Its lists have an entry per day with messages,
not per calendar day. Deliberate differences, to bound the answer (OpenClaw reads every
session file of the window and lists up to `limit` of them, unbounded):
- `limit` is at most SESSIONS_MAX (what the Usage page asks for), and the sessions listed share
  a budget of rows (a session's day with one model is a row): past it, fewer sessions are
  listed (the first always is), while the totals and aggregates still count every session.

A time zone's days (`mode: "gateway"`, the gateway's own, or a `timeZone`) are cut as OpenClaw
cuts them, at the offset of each instant, through its daylight saving changes (DayCut).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any

import attrs

from agents.errors import UnknownAgent
from agents.keys import SESSION_KEY_MAX, parse_session_key
from agents.store import SessionUsage, StoredMessage, UsagePoint
from gateway.jsonwire import dumps, wire
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry
from gateway.ws.methods.chat import HISTORY_PAGE_CHARS, NewestItems, read_newest
from gateway.ws.methods.dashboard import cost_totals
from gateway.ws.methods.sessions import resolve_key_of_agent
from gateway.ws.protocol import INVALID_REQUEST, READ, ParamReader, ParamsError, WsError

DAY_MS = 86_400_000
SESSIONS_MAX = 1000
SESSIONS_DEFAULT = 50  # OpenClaw's
# Rows (a session's day with one model) of the sessions listed: each is a few hundred bytes
# of JSON in the session's daily lists, so the answer stays within a few MiB.
LISTED_ROWS_MAX = 10_000
# An answer of more rows is built in a thread: 200,000 rows (50,000 sessions in the window)
# take about 0.7 s, which on the event loop would hold every other client up.
ANSWER_IN_THREAD_ROWS = 5_000
UNKNOWN_CREATOR = '["unknown"]'  # OpenClaw's UNKNOWN_USAGE_CREATOR_KEY
TIME_ZONE_MAX = 100
CREATOR_KEY_MAX = 1000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UTC_OFFSET = re.compile(r"UTC([+-])(\d{1,2})(?::([0-5]\d))?")
_RANGES = {"7d": 7, "30d": 30, "90d": 90, "1y": 365}
DAYS_MAX = 36_600  # OpenClaw's MAX_USAGE_DAYS
_EPOCH = dt.date(1970, 1, 1).toordinal()
# A session's details (OpenClaw's bounds): at most 200 points, each the sum of as many turns
# in a row as it takes; at most 1,000 messages (200 by default), each cut at 2,000 characters.
POINTS_MAX = 200
# Unlike OpenClaw (every turn of the transcript), the newest turns this many: a chart of 200
# points, each 100 turns.
POINTS_READ_MAX = 20_000
LOGS_MAX = 1000
LOGS_DEFAULT = 200
LOG_CHARS_MAX = 2000
# The logs' JSON at most (1,000 messages of 2,000 characters may take 12 MB): past it the
# older ones are left out, the newest always kept.
LOGS_MAX_BYTES = 6 * 1024 * 1024


def _choice(r: ParamReader, key: str, choices: Iterable[str]) -> str | None:
    value = r.string(key)
    if value is not None and value not in choices:
        raise r.fail(key, "must be one of " + ", ".join(f'"{c}"' for c in choices))
    return value


def _day(r: ParamReader, key: str) -> int | None:
    """A `YYYY-MM-DD` calendar date, as days since 1970-01-01."""
    raw = r.string(key)
    if raw is None or not raw.strip():
        return None
    try:
        if not _DATE.fullmatch(raw.strip()):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw.strip()).toordinal() - _EPOCH
    except ValueError:
        raise ParamsError(f"invalid {key}: expected a valid YYYY-MM-DD calendar date") from None


def _utc_offset_minutes(raw: str | None) -> int | None:
    match = _UTC_OFFSET.fullmatch(raw.strip()) if raw is not None else None
    if match is None:
        return None
    minutes = (1 if match[1] == "+" else -1) * (int(match[2]) * 60 + int(match[3] or 0))
    return minutes if -720 <= minutes <= 840 else None


def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


# A time zone's changes of offset are followed from 1970 to a little past now: messages are
# stored when they are written, so none lies outside but by a clock set wrong, and one that
# does is cut at the offset of that edge. Within, the offset is probed a week apart (no zone
# changes twice in a week) and a change found to the millisecond.
CUT_FROM_MS = 0
CUT_AHEAD_MS = 2 * DAY_MS
CUT_STEP_MS = 7 * DAY_MS


@attrs.frozen
class DayCut:
    """Where the days of the window begin: at a fixed UTC offset (`fixed_ms`), or in a time
    zone (`zone`; None: the gateway's own) at the offset of each instant."""

    fixed_ms: int | None
    zone: dt.tzinfo | None = None
    horizon_ms: int = 0  # the last instant whose offset is looked up

    @classmethod
    def in_zone(cls, zone: dt.tzinfo | None) -> DayCut:
        return cls(None, zone, now_ms() + CUT_AHEAD_MS)

    def offset_at(self, ms: int) -> int:
        if self.fixed_ms is not None:
            return self.fixed_ms
        seconds = min(max(ms, CUT_FROM_MS), self.horizon_ms) / 1000
        if self.zone is None:
            when = dt.datetime.fromtimestamp(seconds).astimezone()
        else:
            when = dt.datetime.fromtimestamp(seconds, self.zone)
        offset = when.utcoffset()
        return 0 if offset is None else int(offset.total_seconds() * 1000)

    def day_of(self, ms: int) -> int:
        return (ms + self.offset_at(ms)) // DAY_MS

    def day_start(self, day: int) -> int:
        """The first instant of `day` (days since 1970-01-01 in the zone)."""
        midnight = day * DAY_MS
        return midnight - self.offset_at(midnight - self.offset_at(midnight))

    def shifts(self, start: int, end: int) -> tuple[int, tuple[tuple[int, int], ...]]:
        """The offset at `start`, and each change of it through `end`: `(at, offset)`."""
        current = first = self.offset_at(start)
        if self.fixed_ms is not None:
            return first, ()
        found: list[tuple[int, int]] = []
        at, last = max(start, CUT_FROM_MS), min(end, self.horizon_ms)
        while at < last:
            probe = min(at + CUT_STEP_MS, last)
            if self.offset_at(probe) == current:
                at = probe
                continue
            before, after = at, probe  # the change is in (before, after]
            while after - before > 1:
                middle = (before + after) // 2
                if self.offset_at(middle) == current:
                    before = middle
                else:
                    after = middle
            current = self.offset_at(after)
            found.append((after, current))
            at = after
        return first, tuple(found)


def _day_cut(r: ParamReader) -> DayCut:
    """Where the window's days begin (OpenClaw's date interpretation)."""
    mode = _choice(r, "mode", ("utc", "gateway", "specific"))
    utc_offset = r.string("utcOffset", max_len=16)
    time_zone = r.string("timeZone", max_len=TIME_ZONE_MAX)
    if mode == "gateway":
        return DayCut.in_zone(None)
    if mode != "specific":
        return DayCut(0)
    from_offset = _utc_offset_minutes(utc_offset)
    if time_zone is not None:
        zone = _zone(time_zone) if time_zone.strip() else None
        if zone is not None:
            return DayCut.in_zone(zone)
        if from_offset is not None:
            return DayCut(from_offset * 60_000)
        raise ParamsError("invalid timeZone: expected a valid IANA time zone")
    if from_offset is not None:
        return DayCut(from_offset * 60_000)
    if utc_offset is not None and utc_offset.strip():
        raise ParamsError("invalid utcOffset: expected UTC-12:00 through UTC+14:00")
    return DayCut(0)


@attrs.frozen
class SessionsUsageParams:
    first_day: int  # days since 1970-01-01 where the window's days are cut
    last_day: int
    cut: DayCut
    key: str | None
    agent_id: str | None
    all_agents: bool
    creator_key: str | None
    family: bool
    limit: int
    context_weight: bool

    @classmethod
    def parse(cls, r: ParamReader) -> SessionsUsageParams:
        key = r.string("key", non_empty=True, max_len=SESSION_KEY_MAX)
        agent_id = r.string("agentId", non_empty=True, max_len=64)
        all_agents = _choice(r, "agentScope", ("all",)) == "all"
        creator_key = r.string("creatorKey", non_empty=True, max_len=CREATOR_KEY_MAX)
        group_by = _choice(r, "groupBy", ("instance", "family"))
        historical = r.boolean("includeHistorical")
        limit = r.integer("limit", minimum=1, maximum=SESSIONS_MAX)
        context_weight = r.boolean("includeContextWeight") or False
        preset = _choice(r, "range", (*_RANGES, "all"))
        days = r.integer("days", minimum=1, maximum=DAYS_MAX)
        cut = _day_cut(r)
        first, last = _day(r, "startDate"), _day(r, "endDate")
        if all_agents and (key is not None or agent_id is not None):
            raise ParamsError("agentScope=all cannot be combined with key or agentId")  # OpenClaw's
        if (first is None) != (last is None):
            raise ParamsError("startDate and endDate must be provided together")
        if first is None or last is None:
            last = cut.day_of(now_ms())
            if preset == "all":
                first = 0  # OpenClaw's: from 1970
            else:
                first = last - (_RANGES[preset] if preset is not None else days or 30) + 1
        elif first > last:
            raise ParamsError("startDate must not be after endDate")
        return cls(
            first, last, cut, key, agent_id, all_agents, creator_key,
            group_by == "family" or historical is True,
            SESSIONS_DEFAULT if limit is None else limit, context_weight,
        )  # fmt: skip


def _date(day: int) -> str:
    return dt.date.fromordinal(day + _EPOCH).isoformat()


def _totals(rows: Iterable[SessionUsage]) -> dict[str, int]:
    """OpenClaw's cost totals (CostUsageTotals) of `rows`."""
    inp = out = missing = 0
    for row in rows:
        inp += row.input_tokens
        out += row.output_tokens
        missing += row.assistant
    return cost_totals(inp, out, missing)


def _counts(rows: Iterable[SessionUsage]) -> dict[str, int]:
    """OpenClaw's message counts of `rows`."""
    user = assistant = tools = errors = 0
    for row in rows:
        user += row.user
        assistant += row.assistant
        tools += row.tool_results
        errors += row.errors
    return {
        "total": user + assistant,
        "user": user,
        "assistant": assistant,
        "toolCalls": tools,
        "toolResults": tools,
        "errors": errors,
    }


def _by(rows: Iterable[SessionUsage], key: Any) -> dict[Any, list[SessionUsage]]:
    out: dict[Any, list[SessionUsage]] = {}
    for row in rows:
        out.setdefault(key(row), []).append(row)
    return out


def _model_key(row: SessionUsage) -> tuple[str | None, str | None]:
    return row.provider, row.model


def _model_usage(rows: list[SessionUsage]) -> list[dict[str, Any]]:
    """Model by model, most tokens first (user and tool-result messages have no model)."""
    models = _by((row for row in rows if row.model is not None), _model_key)
    out = [
        {
            "provider": provider,
            "model": model,
            "count": sum(row.assistant for row in of_model),
            "totals": _totals(of_model),
        }
        for (provider, model), of_model in models.items()
    ]
    return sorted(out, key=lambda entry: -entry["totals"]["totalTokens"])


@attrs.define
class _Unit:
    """One row of the answer: a transcript (`instance`) or a key's transcripts (`family`)."""

    key: str
    agent_id: str
    rows: list[SessionUsage] = attrs.field(factory=list)

    @property
    def last(self) -> int:
        return max(row.last for row in self.rows)

    @property
    def current(self) -> SessionUsage:
        return max(self.rows, key=lambda row: row.last)

    def usage(self) -> dict[str, Any]:
        rows = self.rows
        first, last = min(row.first for row in rows), self.last
        days = _by(rows, lambda row: row.day)
        daily_models = _by(
            (row for row in rows if row.model is not None), lambda r: (r.day, *_model_key(r))
        )
        session_ids = sorted({row.session_id for row in rows})
        return {
            "sessionId": self.current.session_id,
            **_totals(rows),
            "firstActivity": first,
            "lastActivity": last,
            "durationMs": max(0, last - first),
            "activityDates": [_date(day) for day in sorted(days)],
            "dailyBreakdown": [
                {
                    "date": _date(day),
                    "tokens": (t := _totals(of_day))["totalTokens"],
                    "cost": 0,
                    **t,
                }
                for day, of_day in sorted(days.items())
            ],
            "dailyMessageCounts": [
                {"date": _date(day), **_counts(of_day)} for day, of_day in sorted(days.items())
            ],
            "dailyModelUsage": [
                {
                    "date": _date(day),
                    "provider": provider,
                    "model": model,
                    "tokens": _totals(of_model)["totalTokens"],
                    "cost": 0,
                    "count": sum(row.assistant for row in of_model),
                }
                for (day, provider, model), of_model in sorted(
                    daily_models.items(), key=lambda item: (item[0][0], str(item[0][1:]))
                )
            ],
            "messageCounts": _counts(rows),
            "modelUsage": _model_usage(rows),
            **({"includedSessionIds": session_ids} if len(session_ids) > 1 else {}),
        }


def _units(rows: list[SessionUsage], family: bool) -> list[_Unit]:
    """The answer's rows, newest activity first."""
    units: dict[str, _Unit] = {}
    for row in rows:
        unit_id = row.key if family else row.session_id
        unit = units.get(unit_id)
        if unit is None:
            unit = units[unit_id] = _Unit(row.key, row.agent_id)
        unit.rows.append(row)
    return sorted(units.values(), key=lambda unit: (-unit.last, unit.key))


def _listed(units: list[_Unit], limit: int) -> list[_Unit]:
    """The first `limit` units within the rows' budget; the first always."""
    listed: list[_Unit] = []
    budget = LISTED_ROWS_MAX
    for unit in units[:limit]:
        budget -= len(unit.rows)
        if listed and budget < 0:
            break
        listed.append(unit)
    return listed


def _session(unit: _Unit, family: bool, context_weight: bool) -> dict[str, Any]:
    usage = unit.usage()
    models = [row for row in unit.rows if row.model is not None]
    newest = max(models, key=lambda row: row.last) if models else None
    entry: dict[str, Any] = {
        "key": unit.key,
        **({"label": unit.current.label} if unit.current.label is not None else {}),
        "sessionId": usage["sessionId"],
        "scope": "family" if family else "instance",
        "updatedAt": unit.last,
        "agentId": unit.agent_id,
        "creatorKey": UNKNOWN_CREATOR,
        "usage": usage,
        "hasContextWeight": False,
    }
    if family:
        entry["sessionFamilyKey"] = unit.key
        entry["currentSessionId"] = usage["sessionId"]
        ids = usage.get("includedSessionIds", [usage["sessionId"]])
        entry["includedSessionIds"] = ids
        entry["historicalInstanceCount"] = len(ids)
    if newest is not None:
        entry["modelProvider"] = newest.provider
        entry["model"] = newest.model
    if context_weight:
        entry["contextWeight"] = None
    return entry


def _aggregates(units: list[_Unit]) -> dict[str, Any]:
    """OpenClaw's aggregates over every session of the window."""
    rows = [row for unit in units for row in unit.rows]
    days = _by(rows, lambda row: row.day)
    models = _model_usage(rows)
    providers = _by((row for row in rows if row.model is not None), lambda row: row.provider)
    agents = _by(rows, lambda row: row.agent_id)
    longest = max((unit.last - min(row.first for row in unit.rows) for unit in units), default=0)
    daily_models = _by(
        (row for row in rows if row.model is not None), lambda r: (r.day, *_model_key(r))
    )
    return {
        "sessionCount": len(units),
        **({"longestSessionDurationMs": longest} if longest > 0 else {}),
        "messages": _counts(rows),
        "tools": {"totalCalls": 0, "uniqueTools": 0, "tools": []},
        "byModel": models,
        "byProvider": sorted(
            (
                {
                    "provider": provider,
                    "count": sum(row.assistant for row in of_provider),
                    "totals": _totals(of_provider),
                }
                for provider, of_provider in providers.items()
            ),
            key=lambda entry: -entry["totals"]["totalTokens"],
        ),
        "byAgent": [
            {"agentId": agent, "totals": _totals(of_agent)}
            for agent, of_agent in sorted(agents.items())
        ],
        "byChannel": [],
        "byCreator": [
            {
                "key": UNKNOWN_CREATOR,
                "totals": _totals(rows),
                "sessionCount": len(units),
                "daily": [
                    {"date": _date(d), **_totals(of_day)} for d, of_day in sorted(days.items())
                ],
                "sessionActivity": [],
            }
        ]
        if units
        else [],
        "costDaily": [{"date": _date(d), **_totals(of_day)} for d, of_day in sorted(days.items())],
        "dailyLatency": [],
        "modelDaily": [
            {
                "date": _date(day),
                "provider": provider,
                "model": model,
                "tokens": _totals(of_model)["totalTokens"],
                "cost": 0,
                "count": sum(row.assistant for row in of_model),
            }
            for (day, provider, model), of_model in sorted(
                daily_models.items(), key=lambda item: (item[0][0], str(item[0][1:]))
            )
        ],
        "daily": [
            {
                "date": _date(day),
                "tokens": _totals(of_day)["totalTokens"],
                "cost": 0,
                "messages": (counts := _counts(of_day))["total"],
                "toolCalls": counts["toolCalls"],
                "errors": counts["errors"],
            }
            for day, of_day in sorted(days.items())
        ],
    }


def sessions_usage_answer(
    rows: list[SessionUsage], params: SessionsUsageParams, now: int
) -> dict[str, Any]:
    """The `sessions.usage` payload from the store's rows (pure: tested without a gateway)."""
    units = _units(rows, params.family)
    if params.creator_key is not None and params.creator_key != UNKNOWN_CREATOR:
        matched: list[_Unit] = []  # no session has a known creator
    else:
        matched = units
    listed = _listed(matched, params.limit)
    return {
        "updatedAt": now,
        "startDate": _date(params.first_day),
        "endDate": _date(params.last_day),
        "sessions": [_session(unit, params.family, params.context_weight) for unit in listed],
        "totals": _totals(row for unit in matched for row in unit.rows),
        "aggregates": _aggregates(matched),
        "creatorOptions": [{"key": UNKNOWN_CREATOR}] if units else [],
    }


@attrs.frozen
class SessionTarget:
    """`sessions.usage.timeseries {key, agentId?}` and `sessions.usage.logs {…, limit?}`: the
    session of `key` (its current transcript, as OpenClaw's). The Usage page also sends the
    `sessionId` it listed, which OpenClaw does not read either."""

    key: str
    agent_id: str | None
    limit: int

    @classmethod
    def parse_timeseries(cls, r: ParamReader) -> SessionTarget:
        return cls._parse(r, "timeseries", 0)

    @classmethod
    def parse_logs(cls, r: ParamReader) -> SessionTarget:
        limit = r.integer("limit")  # OpenClaw's: at most 1,000, none at or below 0
        return cls._parse(r, "logs", LOGS_DEFAULT if limit is None else min(limit, LOGS_MAX))

    @classmethod
    def _parse(cls, r: ParamReader, detail: str, limit: int) -> SessionTarget:
        key = r.string("key", max_len=SESSION_KEY_MAX)
        r.string("sessionId", max_len=SESSION_KEY_MAX)
        agent_id = r.string("agentId", non_empty=True, max_len=64)
        if key is None or not key.strip():
            raise ParamsError(f"key is required for {detail}")  # OpenClaw's
        return cls(key.strip(), agent_id, limit)

    def resolve(self, ctx: CallContext) -> str:
        agent_id = self.agent_id.strip().lower() if self.agent_id else None
        if agent_id is not None and ctx.config.agents.agent(agent_id) is None:
            raise UnknownAgent(agent_id)
        key = resolve_key_of_agent(ctx, self.key, agent_id)
        if ctx.config.agents.agent(parse_session_key(key)[0]) is None:
            raise UnknownAgent(parse_session_key(key)[0])
        return key


def timeseries_points(points: list[UsagePoint]) -> list[dict[str, Any]]:
    """OpenClaw's points: at most POINTS_MAX, a point the sum of `step` turns in a row at the
    last one's time, with the running total."""
    step = max(1, -(-len(points) // POINTS_MAX))
    out: list[dict[str, Any]] = []
    cumulative = 0
    for i in range(0, len(points), step):
        bucket = points[i : i + step]
        inp = sum(p.input_tokens for p in bucket)
        out_tokens = sum(p.output_tokens for p in bucket)
        cumulative += inp + out_tokens
        out.append(
            {
                "timestamp": bucket[-1].timestamp,
                "input": inp,
                "output": out_tokens,
                "cacheRead": 0,
                "cacheWrite": 0,
                "totalTokens": inp + out_tokens,
                "cost": 0,
                "cumulativeTokens": cumulative,
                "cumulativeCost": 0,
            }
        )
    return out


def _log_entry(message: StoredMessage) -> tuple[dict[str, Any], int]:
    """A message as OpenClaw's session logs show it (empty: nothing to show)."""
    parts = []
    if message.role == "toolResult":
        parts += [f"[Tool: {message.tool_name or 'tool'}]", "[Tool Result]"]
    parts.append(message.text)
    parts += [f"[Tool: {call.name or 'unknown'}]" for call in message.tool_calls]
    content = "\n".join(part for part in parts if part).strip()
    if not content:
        return {}, 0
    if len(content) > LOG_CHARS_MAX:
        content = content[:LOG_CHARS_MAX] + "\u2026"
    entry: dict[str, Any] = {
        "timestamp": message.timestamp,
        "role": message.role,
        "content": content,
    }
    if message.role == "assistant" and message.usage is not None:
        entry["tokens"] = int(message.usage.get("input", 0)) + int(message.usage.get("output", 0))
        entry["cost"] = 0
    return entry, len(wire(dumps(entry)))


def register(methods: MethodRegistry) -> None:
    @methods.method("sessions.usage", params=SessionsUsageParams.parse, scope=READ)
    async def sessions_usage(ctx: CallContext, params: SessionsUsageParams) -> Any:
        agents = ctx.config.agents
        agent_id = params.agent_id.strip().lower() if params.agent_id else None
        if agent_id is not None and agents.agent(agent_id) is None:
            raise UnknownAgent(agent_id)
        key = None
        if params.key is not None:
            key = resolve_key_of_agent(ctx, params.key, agent_id)
            agent_id = parse_session_key(key)[0]
            if agents.agent(agent_id) is None:
                raise UnknownAgent(agent_id)
        elif agent_id is None and not params.all_agents:
            agent_id = agents.default_agent.id
        cut = params.cut
        start, end = cut.day_start(params.first_day), cut.day_start(params.last_day + 1) - 1
        # Decades of a zone's changes are a few thousand lookups of its offset (the gateway's
        # own zone's, through the C library, tens of milliseconds): not on the event loop.
        if cut.fixed_ms is None:
            offset_ms, shifts = await asyncio.to_thread(cut.shifts, start, end)
        else:
            offset_ms, shifts = cut.shifts(start, end)
        rows = await ctx.ws.session_usage.rows(
            ctx.registry.store, start, end, offset_ms, shifts=shifts, agent_id=agent_id, key=key
        )
        if len(rows) > ANSWER_IN_THREAD_ROWS:
            return await asyncio.to_thread(sessions_usage_answer, rows, params, now_ms())
        return sessions_usage_answer(rows, params, now_ms())

    @methods.method("sessions.usage.timeseries", params=SessionTarget.parse_timeseries, scope=READ)
    async def sessions_usage_timeseries(ctx: CallContext, params: SessionTarget) -> Any:
        key = params.resolve(ctx)
        session = await ctx.registry.get_session(key)
        if session is None:
            raise WsError(INVALID_REQUEST, f"No transcript found for session: {params.key}")
        points = await ctx.registry.store.usage_points(session.session_id, POINTS_READ_MAX)
        return {"sessionId": session.session_id, "points": timeseries_points(points)}

    @methods.method("sessions.usage.logs", params=SessionTarget.parse_logs, scope=READ)
    async def sessions_usage_logs(ctx: CallContext, params: SessionTarget) -> Any:
        key = params.resolve(ctx)
        if params.limit <= 0:
            return {"logs": []}
        # As `chat.history` reads: a page at a time, a few at a time in the process.
        async with ctx.ws.transcript_reads.turn(ctx.conn.conn_id):
            transcript = await ctx.registry.history(key, params.limit, max_chars=HISTORY_PAGE_CHARS)
            items = await read_newest(
                ctx.registry, transcript, params.limit, NewestItems(_log_entry, LOGS_MAX_BYTES)
            )
        return {"logs": [item for item in items if item]}
