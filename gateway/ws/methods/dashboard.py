"""What a dashboard asks for: `sessions.preview`, `system.info`, `usage`, `usage.cost`.

`sessions.preview` has OpenClaw's name and shape (`{keys, limit, maxChars}` →
`{ts, previews: [{key, status, items: [{role, text}]}]}`); `system.info` and `usage` are
clawgate's own (OpenClaw spreads the same facts over `status`, `health` and `usage.cost`), so
that the Control UI's status screen is one call. `usage.cost` is OpenClaw's, for
`openclaw gateway usage-cost`: the same rows in its shape.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
from typing import Any

import aiohttp
import attrs

from agents.errors import InvalidSessionKey
from agents.keys import SESSION_KEY_MAX, normalize_session_key
from agents.store import DailyUsage, StoredMessage
from gateway import __version__
from gateway.jsonwire import dumps, wire
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.methods.chat import HISTORY_PAGE_CHARS, NewestItems, read_newest
from gateway.ws.methods.sessions import NOT_TEXT
from gateway.ws.protocol import READ, ParamReader, ParamsError
from gateway.ws.usage import USAGE_DAYS_MAX

# OpenClaw takes the first 64 keys and drops the rest; we refuse more, so that a UI that
# asks for 65 learns it instead of missing one.
PREVIEW_KEYS_MAX = 64
PREVIEW_LIMIT_MAX = 100
PREVIEW_CHARS_MIN = 20  # OpenClaw's floor
PREVIEW_CHARS_MAX = 10_000
# 64 keys (repeats allowed) of 100 items of 10,000 characters would be a frame of 64 MB and
# more, over maxPayload: an answer's items are at most chat.history's 6 MiB of JSON, shared
# evenly by its keys, each keeping its newest items. A share (96 KiB with 64 keys) always
# holds the newest item: 10,000 characters are at most 60,000 bytes of JSON (`\u0001`).
PREVIEW_MAX_BYTES = 6 * 1024 * 1024


@attrs.frozen
class PreviewParams:
    keys: tuple[str, ...]
    limit: int
    max_chars: int

    @classmethod
    def parse(cls, r: ParamReader) -> PreviewParams:
        keys = r.strings("keys")
        if keys is None:
            raise r.fail("keys", "is required")
        if len(keys) > PREVIEW_KEYS_MAX:
            raise r.fail("keys", f"must have at most {PREVIEW_KEYS_MAX} items")
        for i, key in enumerate(keys):
            if len(key) > SESSION_KEY_MAX:
                raise ParamsError(
                    f"at {r.at('keys')}/{i}: must have at most {SESSION_KEY_MAX} characters"
                )
        limit = r.integer("limit", minimum=1, maximum=PREVIEW_LIMIT_MAX)
        max_chars = r.integer("maxChars", minimum=PREVIEW_CHARS_MIN, maximum=PREVIEW_CHARS_MAX)
        return cls(keys, 12 if limit is None else limit, 240 if max_chars is None else max_chars)


def _preview_item(max_chars: int, message: StoredMessage) -> tuple[dict[str, Any], int]:
    item = {"role": message.role, "text": message.text[:max_chars]}
    return item, len(wire(dumps(item)))


@attrs.frozen
class UsageParams:
    days: int
    agent_id: str | None

    @classmethod
    def parse(cls, r: ParamReader) -> UsageParams:
        days = r.integer("days", minimum=1, maximum=USAGE_DAYS_MAX)
        return cls(30 if days is None else days, r.string("agentId", max_len=64))


@attrs.frozen
class CostParams:
    days: int
    agent_id: str | None  # with all_agents False, None is the default agent (as OpenClaw)
    all_agents: bool  # `agentScope: "all"`

    @classmethod
    def parse(cls, r: ParamReader) -> CostParams:
        days = r.integer("days", minimum=1, maximum=USAGE_DAYS_MAX)
        agent_id = r.string("agentId", max_len=64) or None
        scope = r.string("agentScope")
        if scope is not None and scope != "all":
            raise r.fail("agentScope", 'must be "all"')
        if scope == "all" and agent_id is not None:
            raise ParamsError("agentScope=all cannot be combined with agentId")  # OpenClaw's
        return cls(30 if days is None else days, agent_id, scope == "all")


def _cost_totals(rows: list[DailyUsage]) -> dict[str, int]:
    """OpenClaw's cost totals: the tokens, and a cost of 0 with every turn an entry whose cost
    is missing (clawgate knows no prices), as OpenClaw counts a model it has no price for."""
    return cost_totals(
        sum(row.input_tokens for row in rows),
        sum(row.output_tokens for row in rows),
        sum(row.turns for row in rows),
    )


def cost_totals(inp: int, out: int, missing: int) -> dict[str, int]:
    """OpenClaw's CostUsageTotals of `inp` and `out` tokens: every cost 0, and `missing`
    entries whose cost is not known (clawgate knows no prices)."""
    return {
        "input": inp,
        "output": out,
        "cacheRead": 0,
        "cacheWrite": 0,
        "totalTokens": inp + out,
        "totalCost": 0,
        "inputCost": 0,
        "outputCost": 0,
        "cacheReadCost": 0,
        "cacheWriteCost": 0,
        "missingCostEntries": missing,
    }


def cost_summary(rows: list[DailyUsage], days: int, now: int) -> dict[str, Any]:
    """The `usage.cost` payload (`openclaw gateway usage-cost`): one entry a day, oldest
    first, the agents' rows summed."""
    by_day: dict[str, list[DailyUsage]] = {}
    for row in rows:
        by_day.setdefault(row.date, []).append(row)
    return {
        "updatedAt": now,
        "days": days,
        "daily": [{"date": date, **_cost_totals(by_day[date])} for date in sorted(by_day)],
        "totals": _cost_totals(rows),
    }


def _totals(rows: list[DailyUsage]) -> dict[str, int]:
    inp = sum(row.input_tokens for row in rows)
    out = sum(row.output_tokens for row in rows)
    return {
        "inputTokens": inp,
        "outputTokens": out,
        "totalTokens": inp + out,
        "turns": sum(row.turns for row in rows),
    }


def usage_summary(rows: list[DailyUsage], days: int, now: int) -> dict[str, Any]:
    """The `usage` payload from the store's rows (pure: tested without a gateway)."""
    today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date()
    start = today - dt.timedelta(days=days - 1)
    by_agent: dict[str, list[DailyUsage]] = {}
    for row in rows:
        by_agent.setdefault(row.agent_id, []).append(row)
    return {
        "updatedAt": now,
        "days": days,
        "startDate": start.isoformat(),
        "endDate": today.isoformat(),
        "daily": [{"date": row.date, "agentId": row.agent_id, **_totals([row])} for row in rows],
        "byAgent": [
            {"agentId": agent_id, **_totals(agent_rows)}
            for agent_id, agent_rows in sorted(by_agent.items())
        ],
        "totals": _totals(rows),
    }


def register(methods: MethodRegistry) -> None:
    @methods.method("sessions.preview", params=PreviewParams.parse, scope=READ)
    async def sessions_preview(ctx: CallContext, params: PreviewParams) -> Any:
        agents = ctx.config.agents
        previews: list[dict[str, Any]] = []
        share = PREVIEW_MAX_BYTES // max(1, len(params.keys))
        # As `chat.history`: a few at a time in the process, one per connection.
        async with ctx.ws.transcript_reads.turn(ctx.conn.conn_id):
            for i, raw in enumerate(params.keys):
                try:
                    if f"keys/{i}" in ctx.unpaired:  # as resolve_key refuses
                        raise InvalidSessionKey(NOT_TEXT)
                    key = normalize_session_key(raw, agents.default_agent.id, agents.main_key)
                except InvalidSessionKey:
                    previews.append({"key": raw, "status": "error", "items": []})
                    continue
                # A page at a time, as `chat.history` reads: only `maxChars` of each is kept.
                transcript = await ctx.registry.history(
                    key, params.limit, max_chars=HISTORY_PAGE_CHARS
                )
                if transcript.session is None:
                    status = "missing"
                else:
                    status = "ok" if transcript.messages else "empty"
                # The newest items within this key's share; the newest always stays.
                make = functools.partial(_preview_item, params.max_chars)
                items = await read_newest(
                    ctx.registry, transcript, params.limit, NewestItems(make, share)
                )
                # The key as the client sent it, so that it can match answers to its rows.
                previews.append({"key": raw, "status": status, "items": items})
        return {"ts": now_ms(), "previews": previews}

    @methods.method("system.info", params=no_params, scope=READ)
    async def system_info(ctx: CallContext, params: None) -> Any:
        config, gateway, ws = ctx.config, ctx.gateway, ctx.ws
        stats = ctx.registry.stats()
        store = ctx.registry.store
        stored = await ws.stored_sessions.get(store.count)  # a scan: calls at once share it
        return {
            "version": __version__,
            "runtime": {
                "python": platform.python_version(),
                "aiohttp": aiohttp.__version__,
                "platform": platform.platform(terse=True),
            },
            "pid": os.getpid(),
            "startedAt": int(gateway.started_at * 1000),
            "uptimeMs": gateway.uptime_ms,
            "ready": not gateway.failing(),
            "draining": gateway.draining,
            "gateway": {
                "bind": config.gateway.bind,
                "port": config.gateway.port,
                "authMode": config.gateway.auth.mode,
                "controlUi": config.gateway.control_ui_enabled,
                "chatCompletions": config.gateway.http.chat_completions.enabled,
                "configPath": str(config.source.path),
                "stateDir": str(config.state_dir),
            },
            "agents": [
                {
                    "id": agent.id,
                    "name": agent.name,
                    "default": agent.id == config.agents.default_agent.id,
                    "model": str(agent.primary),
                    "fallbacks": [str(ref) for ref in agent.fallbacks],
                }
                for agent in config.agents.agents
            ],
            "connections": {"open": len(ws.connections), "authenticated": len(ws.authenticated)},
            "runs": {
                "active": stats.active,
                "queued": stats.queued,
                "maxConcurrent": stats.max_concurrent,
            },
            "sessions": {"live": stats.live_sessions, "stored": stored},
        }

    @methods.method("usage", params=UsageParams.parse, scope=READ)
    async def usage(ctx: CallContext, params: UsageParams) -> Any:
        rows, now = await ctx.ws.usage.rows(
            ctx.registry.store, params.days, params.agent_id, ctx.ws.spawn
        )
        return usage_summary(rows, params.days, now)

    @methods.method("usage.cost", params=CostParams.parse, scope=READ)
    async def usage_cost(ctx: CallContext, params: CostParams) -> Any:
        agent_id = None if params.all_agents else params.agent_id
        if agent_id is None and not params.all_agents:
            agent_id = ctx.config.agents.default_agent.id
        rows, now = await ctx.ws.usage.rows(ctx.registry.store, params.days, agent_id, ctx.ws.spawn)
        return cost_summary(rows, params.days, now)
