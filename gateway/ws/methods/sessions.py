"""`sessions.list`, `sessions.patch`, `sessions.reset`, `sessions.delete` (ws-protocol.md §8).

`sessions.patch` needs `operator.write`, not the spec §7 table's admin: deviation 16 says scope
checks follow OpenClaw, whose gateway (and CLI) take a label patch with write."""

from __future__ import annotations

from typing import Any

import attrs

from agents.errors import (
    InvalidSessionKey,
    SessionArchivedPin,
    SessionChanged,
    SessionNotArchived,
)
from agents.events import session_entry
from agents.keys import (
    KEY_TOO_LONG_MESSAGE,
    SESSION_KEY_MAX,
    is_main_key,
    normalize_session_key,
    parse_session_key,
)
from agents.registry import SessionList, SessionRegistry
from gateway.config.model import Config
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry
from gateway.ws.methods.health import model_defaults
from gateway.ws.protocol import (
    ADMIN,
    INVALID_REQUEST,
    READ,
    WRITE,
    ParamReader,
    ParamsError,
    WsError,
)

LABEL_MAX = 64  # OpenClaw's label limit
# What OpenClaw's sessions.patch takes beside the change: where it applies, and what the
# session must still be for it to apply.
PATCH_GUARDS = frozenset(
    {
        "agentId",
        "expectedSessionId",
        "expectedLifecycleRevision",
        "expectedPermissionMode",
        "expectedMarkedUnreadAt",
    }
)
PATCH_FIELDS = frozenset({"key", "label", "archived", "pinned", "agentId", "expectedSessionId"})
# OpenClaw's sessions.delete asks for operator.write, not admin, when it may only delete an
# archived session (`archivedOnly: true`) and names nothing else (its method-scopes).
DELETE_ARCHIVED_FIELDS = frozenset(
    {"key", "agentId", "deleteTranscript", "expectedSessionId", "archivedOnly"}
)
LIST_MAX = 1000
# A page after `offset` rows costs the store offset + limit rows (as on OpenClaw, which pages
# the same way): bounded, so that no call makes it read every session of a large store.
OFFSET_MAX = 10_000
# A key that held a lone surrogate (JSON can spell one): repaired to U+FFFD it would share a
# session with every other key repaired so, and HTTP refuses such a key.
NOT_TEXT_REASON = "a lone UTF-16 surrogate is not text"
NOT_TEXT = f"invalid session key ({NOT_TEXT_REASON})"


def resolve_key(ctx: CallContext, raw: str, field: str, *, agent_id: str | None = None) -> str:
    """A client's session key → canonical (agents-sessions.md §4): relative to `agent_id`,
    by default the default agent; an `agent:` key names its own agent. Noted on `ctx` for
    the call's log line."""
    if field in ctx.unpaired:
        raise ParamsError(f"at /{field}: {NOT_TEXT}")
    agents = ctx.config.agents
    try:
        key = normalize_session_key(raw, agent_id or agents.default_agent.id, agents.main_key)
        ctx.route["session_key"] = key
        return key
    except InvalidSessionKey as exc:
        problem = (
            "session key too long (max 512 characters)"
            if exc.message == KEY_TOO_LONG_MESSAGE
            else "invalid session key"
        )
        raise ParamsError(f"at /{field}: {problem}") from None


def refuse_unpaired(ctx: CallContext, field: str, what: str) -> None:
    """A run's id (`chat.send`'s and `agent`'s idempotency key, the `runId` that names it)
    that held a lone surrogate is refused as a session key is: repaired to U+FFFD, two keys
    would be one, and the second call would be answered with the first's run (its message
    never run), or name a run of another key."""
    if field in ctx.unpaired:
        raise ParamsError(f"at /{field}: invalid {what} ({NOT_TEXT_REASON})")


def resolve_key_of_agent(ctx: CallContext, raw: str, agent_id: str | None) -> str:
    """`resolve_key` relative to `agent_id` (`key`'s field, OpenClaw's `agentId` beside it);
    an `agent:` key must then name that agent."""
    key = resolve_key(ctx, raw, "key", agent_id=agent_id)
    if agent_id is not None and parse_session_key(key)[0] != agent_id.strip().lower():
        raise ParamsError("at /agentId: is not the agent of the session key")
    return key


def empty_row(config: Config, registry: SessionRegistry, key: str) -> dict[str, Any]:
    """The `sessions.list` row of a key that has no session yet (`updatedAt: null`)."""
    agent_id, _ = parse_session_key(key)
    active = tuple(run.id for run in registry.active_runs(key))
    return session_entry(
        key=key,
        agent_id=agent_id,
        is_main=is_main_key(key, config.agents.main_key),
        status="running" if active else "idle",
        active_run_ids=active,
    )


@attrs.frozen
class ListParams:
    limit: int
    offset: int
    agent_id: str | None
    search: str | None
    label: str | None
    active_minutes: float | None
    # OpenClaw's `spawnedBy`: the sessions a session spawned (its sub-agents), which OpenClaw's
    # Control UI asks for with `limit: 10000`. No session spawns another here, so the answer
    # is none and the limit has nothing to bound.
    spawned_by: str | None = None
    # OpenClaw's `archived`: the sessions not archived (False, the default), only the
    # archived ones (True), or both (None, sent as "all").
    archived: bool | None = False

    @classmethod
    def parse(cls, r: ParamReader) -> ListParams:
        spawned_by = r.string("spawnedBy", max_len=SESSION_KEY_MAX)
        archived = r.data.get("archived")
        if archived is not None and archived != "all" and not isinstance(archived, bool):
            raise r.fail("archived", 'must be boolean or "all"')
        limit = r.integer("limit", minimum=1, maximum=None if spawned_by else LIST_MAX)
        offset = r.integer("offset", minimum=0, maximum=OFFSET_MAX)
        return cls(
            100 if limit is None else limit,
            offset or 0,
            r.string("agentId"),
            r.string("search"),
            r.string("label"),
            r.number("activeMinutes", minimum=0),
            spawned_by,
            False if archived is None else None if archived == "all" else bool(archived),
        )


@attrs.frozen
class KeyParams:
    key: str

    @classmethod
    def parse(cls, r: ParamReader) -> KeyParams:
        return cls(r.required_string("key"))


@attrs.frozen
class PatchParams:
    key: str
    label: str | None  # None clears
    # The guards of OpenClaw's that are kept (its Control UI renames with both): the agent
    # the key is relative to, and the session the caller read (one reset since is another).
    agent_id: str | None = None
    expected_session_id: str | None = None
    # OpenClaw's archiving: True archives, False restores, None leaves it.
    archived: bool | None = None
    label_given: bool = True
    # OpenClaw's pins: True pins (listed first, kept by maintenance), False unpins.
    pinned: bool | None = None

    @classmethod
    def parse(cls, r: ParamReader) -> PatchParams:
        key = r.required_string("key")
        # Only the label is supported; silently dropping a model or policy change would
        # lose the caller's intent (ws-protocol.md §6). A change is named before a guard
        # beside it (`openclaw sessions archive` sends `expectedSessionId` before `archived`).
        unsupported = sorted(
            (
                name
                for name, value in r.data.items()
                if name not in PATCH_FIELDS and value is not None
            ),
            key=lambda name: name in PATCH_GUARDS,  # stable: else in the caller's order
        )
        if unsupported:
            raise ParamsError(f"unsupported field '{unsupported[0]}'")
        archived = r.boolean("archived")
        pinned = r.boolean("pinned")
        if "label" not in r.data and archived is None and pinned is None:
            raise r.fail("label", "is required")
        return cls(
            key,
            parse_label(r),
            r.string("agentId", non_empty=True),
            r.string("expectedSessionId", non_empty=True),
            archived,
            "label" in r.data,
            pinned,
        )


def parse_label(r: ParamReader) -> str | None:
    label = r.string("label")
    if label is not None:
        label = label.strip()
        if not 1 <= len(label) <= LABEL_MAX:
            raise r.fail("label", f"must have 1 to {LABEL_MAX} characters, or be null")
    return label


@attrs.frozen
class ResetParams:
    key: str

    @classmethod
    def parse(cls, r: ParamReader) -> ResetParams:
        key = r.required_string("key")
        reason = r.string("reason")
        if reason is not None and reason not in ("new", "reset"):
            raise r.fail("reason", 'must be "new" or "reset"')
        return cls(key)


@attrs.frozen
class DeleteParams:
    key: str
    delete_transcript: bool
    expected_session_id: str | None  # OpenClaw's guard: the session the caller read
    # OpenClaw's Control UI deletes only what it archived first: a session not archived stays.
    archived_only: bool = False
    agent_id: str | None = None

    @classmethod
    def parse(cls, r: ParamReader) -> DeleteParams:
        key = r.required_string("key")
        delete_transcript = r.boolean("deleteTranscript")
        expected = (r.string("expectedSessionId") or "").strip() or None
        return cls(
            key,
            True if delete_transcript is None else delete_transcript,
            expected,
            bool(r.boolean("archivedOnly")),
            r.string("agentId", non_empty=True),
        )

    @staticmethod
    def scope_of(raw: Any) -> str | None:
        """operator.write for a delete of an archived session only (OpenClaw's scopes)."""
        if (
            isinstance(raw, dict)
            and raw.get("archivedOnly") is True
            and all(name in DELETE_ARCHIVED_FIELDS for name in raw)
        ):
            return WRITE
        return None


def register(methods: MethodRegistry) -> None:
    @methods.method("sessions.list", params=ListParams.parse, scope=READ)
    async def sessions_list(ctx: CallContext, params: ListParams) -> Any:
        config = ctx.config
        if params.spawned_by is not None:
            listed = SessionList((), 0)
        else:
            # A job of the store's one scan thread: a connection's calls take turns (state.py).
            async with ctx.ws.transcript_reads.turn(ctx.conn.conn_id):
                listed = await ctx.registry.list_sessions(
                    limit=params.offset + params.limit,
                    agent_id=params.agent_id,
                    search=params.search,
                    label=params.label,
                    active_minutes=params.active_minutes,
                    archived=params.archived,
                )
        page = listed.sessions[params.offset :]
        next_offset = params.offset + len(page)
        has_more = next_offset < listed.total_count
        answer: dict[str, Any] = {
            "ts": now_ms(),
            "path": config.sessions_location,
            "count": len(page),
            "totalCount": listed.total_count,
        }
        if params.offset:
            answer["offset"] = params.offset
        # OpenClaw's paging, which its CLI follows (`openclaw sessions delete` of an old key).
        answer["nextOffset"] = next_offset if has_more else None
        answer["hasMore"] = has_more
        answer["defaults"] = model_defaults(config, params.agent_id)
        answer["sessions"] = [session.to_dict() for session in page]
        return answer

    # OpenClaw takes a label (and its other presentation fields) from `operator.write`, and
    # its CLI asks for no more; the fields that need admin there are not supported here.
    @methods.method("sessions.patch", params=PatchParams.parse, scope=WRITE)
    async def sessions_patch(ctx: CallContext, params: PatchParams) -> Any:
        key = resolve_key_of_agent(ctx, params.key, params.agent_id)
        if params.archived is not None:
            # OpenClaw's order: the main session stays, then only a session that exists, and
            # named with the id the caller read (the guard below).
            if params.archived and is_main_key(key, ctx.config.agents.main_key):
                raise WsError(INVALID_REQUEST, "Cannot archive an agent's main session.")
            if await ctx.registry.get_session(key) is None:
                raise WsError(INVALID_REQUEST, f"session not found: {key}")
            if params.expected_session_id is None:
                missing = f"expectedSessionId required for session lifecycle patch: {key}"
                raise WsError(INVALID_REQUEST, missing)
        changed = WsError(
            INVALID_REQUEST,
            f"Session {key} changed before patch. Retry.",  # OpenClaw's
            details={"reason": "session-changed"},
        )
        expected = params.expected_session_id
        if expected is not None:
            # Checked here for a clear answer, and again in each write below, as
            # sessions.delete's under its lock: a reset between this and the write is seen.
            info = await ctx.registry.get_session(key)
            if info is None or info.session_id != expected:
                raise changed
        if params.pinned and params.archived is not False:
            # Refused before any write (the store checks again in its own): a label beside
            # it is not changed by a patch that fails.
            kept = await ctx.registry.get_session(key)
            if params.archived or (kept is not None and kept.archived_at is not None):
                raise WsError(INVALID_REQUEST, SessionArchivedPin(key).message)
        # One store write: a refusal of one part (a reset since, a pin of an archived session)
        # leaves the others unwritten. The pin goes after the archive, as OpenClaw's (which
        # unpins).
        patch = ctx.registry.patch(
            key,
            label=(params.label,) if params.label_given else None,
            archived=params.archived,
            pinned=params.pinned,
            expected_session_id=expected,
        )
        try:
            patched = await ctx.to_the_end(patch)
        except SessionChanged:
            raise changed from None
        except SessionArchivedPin as exc:
            raise WsError(INVALID_REQUEST, exc.message) from None
        if patched is None:  # deleted since
            raise WsError(INVALID_REQUEST, f"session not found: {key}")
        return {"ok": True, "key": key, "entry": patched.to_dict()}

    @methods.method("sessions.reset", params=ResetParams.parse, scope=ADMIN)
    async def sessions_reset(ctx: CallContext, params: ResetParams) -> Any:
        key = resolve_key(ctx, params.key, "key")
        info = await ctx.to_the_end(ctx.registry.reset(key))
        return {"ok": True, "key": key, "entry": info.to_dict()}

    @methods.method(
        "sessions.delete", params=DeleteParams.parse, scope=ADMIN, scope_of=DeleteParams.scope_of
    )
    async def sessions_delete(ctx: CallContext, params: DeleteParams) -> Any:
        key = resolve_key_of_agent(ctx, params.key, params.agent_id)
        # `openclaw sessions delete` names the session it listed: one reset (or deleted and
        # made again) since is another, and stays; checked under the session's lock.
        try:
            deleted = await ctx.to_the_end(
                ctx.registry.delete(
                    key,
                    delete_transcript=params.delete_transcript,
                    expected_session_id=params.expected_session_id,
                    archived_only=params.archived_only,
                )
            )
        except SessionNotArchived as exc:
            raise WsError(INVALID_REQUEST, exc.message) from None
        except SessionChanged as exc:
            raise WsError(
                INVALID_REQUEST, exc.message, details={"reason": "session-changed"}
            ) from None
        return {"ok": True, "key": key, "deleted": deleted, "archived": []}
