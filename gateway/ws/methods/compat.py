"""What OpenClaw's CLI and TUI call beyond §8 (ws-protocol.md §12).

Methods for OpenClaw features clawgate does not have answer with their honest empty state,
so those clients keep working and tell the truth. `sessions.subscribe` is a no-op: events
already reach every read-scoped connection (deviation 23).
"""

from __future__ import annotations

from typing import Any

from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.methods.sessions import KeyParams, empty_row, resolve_key
from gateway.ws.protocol import APPROVALS, PAIRING, QUESTIONS, READ

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

    for name, scope, answer in EMPTY_STATES:
        methods.method(name, params=no_params, scope=scope)(_empty_state(answer))
