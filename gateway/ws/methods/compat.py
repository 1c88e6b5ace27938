"""What OpenClaw's CLI and TUI call beyond §8 (ws-protocol.md §12).

Methods for OpenClaw features clawgate does not have answer with their honest empty state,
so those clients keep working and tell the truth. `sessions.subscribe` is a no-op: events
already reach every read-scoped connection (deviation 23). `sessions.create` is the TUI's
`/new`: an empty session on a new key.
"""

from __future__ import annotations

from typing import Any

import attrs

from agents.ids import uuid7
from agents.keys import parse_session_key
from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.methods.sessions import KeyParams, empty_row, parse_label, resolve_key
from gateway.ws.protocol import (
    APPROVALS,
    INVALID_REQUEST,
    PAIRING,
    QUESTIONS,
    READ,
    WRITE,
    ParamReader,
    ParamsError,
    WsError,
)

CRON_RUNS_LIMIT_DEFAULT = 50  # OpenClaw's CLI default
CRON_RUNS_LIMIT_MAX = 200  # OpenClaw's page bound

EMPTY_STATES: tuple[tuple[str, str, Any], ...] = (
    ("channels.status", READ, {"channelOrder": [], "channels": {}}),
    ("cron.list", READ, {"jobs": []}),
    # No scheduler: `openclaw cron status` shows it off, with no jobs and no next wake.
    ("cron.status", READ, {"enabled": False, "jobs": 0, "nextWakeAtMs": None}),
    ("node.list", READ, {"nodes": []}),
    ("node.pair.list", PAIRING, {"pending": [], "paired": []}),
    ("device.pair.list", PAIRING, {"pending": [], "paired": []}),
    ("question.list", QUESTIONS, {"questions": []}),
    # `openclaw approvals pending` lists all three kinds, with the scope OpenClaw checks.
    ("exec.approval.list", APPROVALS, []),
    ("plugin.approval.list", APPROVALS, []),
    ("openclaw.approval.list", APPROVALS, []),
    ("taskSuggestions.list", READ, {"suggestions": []}),
    ("commands.list", READ, {"commands": []}),
    # Skills and hooks live in an OpenClaw agent's workspace; clawgate's agents have none.
    ("skills.status", READ, {"skills": []}),
    ("hooks.status", READ, {"hooks": []}),
    # No heartbeat has run (OpenClaw answers null until its first).
    ("last-heartbeat", READ, None),
    # `openclaw gateway stability`: a recorder of diagnostic events that records none.
    (
        "diagnostics.stability",
        READ,
        {"capacity": 0, "count": 0, "dropped": 0, "events": [], "summary": {"byType": {}}},
    ),
)


# OpenClaw's `sessions.create` fields that only say where the call comes from (its TUI's
# `/new` sends the session it leaves; a retry, its key): nothing to keep. Any other field (a
# model, a first message, a fork) is a feature clawgate does not have: refused, not dropped.
CREATE_FIELDS = frozenset(
    {
        "key",
        "agentId",
        "label",
        "idempotencyKey",
        "parentSessionKey",
        "succeedsParent",
        "emitCommandHooks",
    }
)


@attrs.frozen
class CreateParams:
    key: str | None  # None: a new key of the gateway's
    agent_id: str | None
    label: str | None

    @classmethod
    def parse(cls, r: ParamReader) -> CreateParams:
        for name, value in r.data.items():
            if name not in CREATE_FIELDS and value is not None:
                raise ParamsError(f"unsupported field '{name}'")
        return cls(
            r.string("key", non_empty=True),
            r.string("agentId", non_empty=True),
            parse_label(r),
        )


@attrs.frozen
class CronJobParams:
    """`cron.runs`: a job by `id` (or `jobId`), as OpenClaw reads it.

    No `cron.get`: OpenClaw's CLI takes a gateway that has it for one whose `cron.list` pages
    carry a snapshot revision, and `openclaw cron list` would refuse our plain `{jobs: []}`."""

    job_id: str | None
    limit: int

    @classmethod
    def parse(cls, r: ParamReader) -> CronJobParams:
        job_id = (r.string("id") or r.string("jobId") or "").strip() or None
        limit = r.integer("limit", minimum=1, maximum=CRON_RUNS_LIMIT_MAX)
        return cls(job_id, CRON_RUNS_LIMIT_DEFAULT if limit is None else limit)


def cron_job_not_found(job_id: str) -> WsError:
    """OpenClaw's answer for a job it does not have: without a scheduler, every job."""
    return WsError(
        INVALID_REQUEST,
        f"Automation not found: {job_id}. List automations and retry with a current job id.",
        details={"code": "CRON_JOB_NOT_FOUND", "jobId": job_id},
    )


def _empty_state(answer: Any) -> Any:
    async def handler(ctx: CallContext, params: None) -> Any:
        return answer

    return handler


def register(methods: MethodRegistry) -> None:
    @methods.method("sessions.subscribe", params=no_params, scope=READ)
    async def sessions_subscribe(ctx: CallContext, params: None) -> Any:
        return {"subscribed": True}

    @methods.method("sessions.unsubscribe", params=no_params, scope=READ)
    async def sessions_unsubscribe(ctx: CallContext, params: None) -> Any:
        return {"subscribed": False}

    @methods.method("sessions.describe", params=KeyParams.parse, scope=READ)
    async def sessions_describe(ctx: CallContext, params: KeyParams) -> Any:
        config, registry = ctx.config, ctx.registry
        key = resolve_key(ctx, params.key, "key")
        info = await registry.get_session(key)
        row = info.to_dict() if info is not None else empty_row(config, registry, key)
        return {"session": row}

    @methods.method("sessions.create", params=CreateParams.parse, scope=WRITE)
    async def sessions_create(ctx: CallContext, params: CreateParams) -> Any:
        # A key that has a session already gets that session, unchanged: a retried call
        # finds the session its first try made (OpenClaw would reset it in place).
        raw = params.key if params.key is not None else str(uuid7())
        key = resolve_key(ctx, raw, "key", agent_id=params.agent_id)
        agent_id = params.agent_id
        if agent_id is not None and parse_session_key(key)[0] != agent_id.strip().lower():
            raise ParamsError("at /agentId: is not the agent of the session key")
        info, _ = await ctx.to_the_end(ctx.registry.create(key, params.label))
        entry = info.to_dict()
        return {"ok": True, "key": key, "sessionId": entry["sessionId"], "entry": entry}

    for name, scope, answer in EMPTY_STATES:
        methods.method(name, params=no_params, scope=scope)(_empty_state(answer))

    @methods.method("cron.runs", params=CronJobParams.parse, scope=READ)
    async def cron_runs(ctx: CallContext, params: CronJobParams) -> Any:
        if params.job_id is not None:
            raise cron_job_not_found(params.job_id)
        # Every job's runs (OpenClaw's `scope: "all"`): none.
        return {
            "entries": [],
            "total": 0,
            "offset": 0,
            "limit": params.limit,
            "hasMore": False,
            "nextOffset": None,
        }
