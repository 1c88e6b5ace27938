"""`chat.send`, `chat.history`, `chat.abort` (ws-protocol.md §8; idempotency: §2.7)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from agents.errors import StoreError
from agents.keys import SESSION_KEY_MAX, parse_session_key
from agents.registry import SessionRegistry, Transcript
from agents.runs import AgentRun, RunState, TurnRequest
from agents.store import StoredMessage
from gateway.jsonwire import dumps, wire
from gateway.ws.claims import ClaimedElsewhere, start_once, wait_for_start
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import AnswerThenPause, CallContext, MethodRegistry
from gateway.ws.methods.health import model_defaults
from gateway.ws.methods.sessions import empty_row, refuse_unpaired, resolve_key
from gateway.ws.protocol import (
    INVALID_REQUEST,
    READ,
    TRUNCATED_MARK,
    UNAVAILABLE,
    WRITE,
    ParamReader,
    WsError,
)
from gateway.ws.state import IDEMPOTENCY_TTL_SECONDS, IdempotentCall

HISTORY_MAX = 1000
# OpenClaw's bounds on a `chat.history` answer (server-methods/chat.ts, server-constants.ts):
# 1000 stored messages of any size would make a frame no client reads (they stop at 25 MiB)
# and cost the gateway as much memory to build. A text over 12,000 characters is cut, with
# OpenClaw's mark; a message still over 128 KiB of JSON is replaced by OpenClaw's placeholder;
# while the messages are over 6 MiB the oldest are left out (`hasMore` then says so).
HISTORY_TEXT_MAX_CHARS = 12_000
HISTORY_MESSAGE_MAX_BYTES = 128 * 1024
HISTORY_MAX_BYTES = 6 * 1024 * 1024
STARTUP_MIN_BYTES = 1024  # OpenClaw's least `maxBytes` for `chat.startup`
# The store is read a page of the newest messages at a time, this many characters of stored
# content a page (a longer message alone), and no further once the answer is full: whole
# messages are only cut here, and 1000 of them could be gigabytes.
HISTORY_PAGE_CHARS = 8 * 1024 * 1024
OVERSIZED_TEXT = "[chat.history omitted: message too large]"
_CUT_FIELDS = ("text", "partialJson", "arguments", "thinking")  # OpenClaw's, in a block
# Sessions one connection may follow: a UI follows the one on screen and a few beside it;
# the bound keeps a connection's filter small and its per-event check cheap.
FOLLOW_MAX = 64
# A run keeps its idempotency key as its id for 10 minutes, and the last 1000 keys are
# remembered: unbounded, keys of megabytes would pin gigabytes. OpenClaw's hooks' bound.
IDEMPOTENCY_KEY_MAX = 256
# Turns that may wait behind a session's running one (`chat.send`, `agent`; the spec sets no
# bound): each holds its message (up to maxPayload) until it runs, and a client could queue
# them without end. OpenClaw's default queue cap (`messages.queue.cap`); OpenClaw then drops
# the oldest, clawgate refuses the newest, retryable, so no turn is lost without an answer.
SESSION_QUEUE_MAX = 20
STOP_COMMAND = "/stop"
# OpenClaw's TUI handles a `chat.send` acknowledgement only after every frame that came in the
# same read; when a run's end came in that read too (echo ends within a millisecond, as can a
# turn that fails at once), it takes the run for one still to come, shows "waiting" for ever
# and refuses the next message. So its connection writes nothing for this long after the
# acknowledgement: the TUI draws the sent message first (a few ms; 50 ms was too short on a
# loaded host one time in seven, 250 ms never was), and a model's first token seldom comes
# sooner anyway. Other clients are not held up.
CLIENTS_READING_ACK_LATE = frozenset({"openclaw-tui"})
RUN_EVENTS_AFTER_ACK = 0.25
MSG_EMPTY = "message or attachment required"
MSG_ATTACHMENTS = "attachments are not supported yet"


def answers_for_key(run: AgentRun) -> bool:
    """Whether the registry's `run` answers for its idempotency key (its id) when the cache
    no longer has it: while it goes on, and once ended for the 5 minutes a key is remembered,
    however many newer keys pushed it out of the cache (the registry keeps ended runs 10
    minutes, within a byte budget)."""
    return not run.ended or now_ms() - run.accepted_at < IDEMPOTENCY_TTL_SECONDS * 1000


def run_timeout(ctx: CallContext, asked: float | None) -> float | None:
    """The timeout of a run whose client asked for `asked` seconds (`chat.send`'s
    `timeoutMs`, `agent`'s `timeout`; 0: none): the spec lets it override the run timeout and
    OpenClaw takes any value up to its timers' 24.8 days (0 among them). The operator's
    `agents.defaults.timeoutSeconds` is the longest a run may go here: a client may ask for
    less (OpenClaw's CLI sends 600 s), not for more nor for none, which are clamped to it, as
    any write-scoped client could otherwise hold a run, its session and a run slot for weeks.
    With no configured timeout (0) the client's value is taken as asked."""
    ceiling = ctx.gateway.config.agents.timeout_seconds
    if asked is None or not ceiling:
        return asked
    return ceiling if not asked else min(asked, ceiling)


MSG_SHARE_FULL = "too many turns of this connection waiting to run; retry after one has started"


def submit_turn(ctx: CallContext, turn: TurnRequest) -> AgentRun:
    """Queue `turn` as one of this connection's (`WsSettings.waiting_turns_share`): beyond
    its share of the turns that may wait to run, refused (retryable) as the gateway's bound
    is. One turn is taken when none of its waits, however large (as the registry does)."""
    registry, conn = ctx.registry, ctx.conn
    share = ctx.ws.settings.waiting_turns_share
    limit = max(1, registry.max_waiting_turns // share)
    limit_chars = registry.max_waiting_chars // share
    waiting = [
        (run_id, chars)
        for run_id, chars in conn.turns or ()
        if (run := registry.run(run_id)) is not None and run.state is RunState.QUEUED
    ]
    chars = turn.input_chars()
    if (
        share > 1
        and waiting
        and (len(waiting) >= limit or sum(c for _, c in waiting) + chars > limit_chars)
    ):
        conn.turns = waiting
        details = {"limit": limit, "limitChars": limit_chars}
        raise WsError(UNAVAILABLE, MSG_SHARE_FULL, details=details, retryable=True)
    run = registry.submit(turn)
    waiting.append((run.id, chars))
    conn.turns = waiting
    return run


def check_queue(registry: SessionRegistry, key: str) -> None:
    """Refuse a turn that would wait behind SESSION_QUEUE_MAX others of its session."""
    if len(registry.active_runs(key)) > SESSION_QUEUE_MAX:
        raise WsError(
            UNAVAILABLE,
            f"too many turns queued for session {key} ({SESSION_QUEUE_MAX});"
            " retry after one has ended",
            details={"sessionKey": key, "limit": SESSION_QUEUE_MAX},
            retryable=True,
        )


def _session_required(method: str) -> WsError:
    # OpenClaw's own error for a send without a target session.
    return WsError(
        INVALID_REQUEST,
        "session mutation target is unavailable",
        details={"code": "SESSION_MUTATION_TARGET_REQUIRED", "method": method},
    )


@attrs.frozen
class SendParams:
    session_key: str
    message: str
    idempotency_key: str
    timeout_ms: int | None
    attachments: bool  # non-empty attachments were sent

    @classmethod
    def parse(cls, r: ParamReader) -> SendParams:
        session_key = r.string("sessionKey", max_len=SESSION_KEY_MAX)
        if not session_key:
            raise _session_required("chat.send")
        message = r.string("message") or ""
        idempotency_key = r.required_string("idempotencyKey", max_len=IDEMPOTENCY_KEY_MAX)
        timeout_ms = r.integer("timeoutMs", minimum=0)
        r.string("thinking")
        r.boolean("deliver")
        attachments = r.array("attachments")
        return cls(session_key, message, idempotency_key, timeout_ms, bool(attachments))


@attrs.frozen
class HistoryParams:
    session_key: str
    limit: int

    @classmethod
    def parse(cls, r: ParamReader) -> HistoryParams:
        session_key = r.required_string("sessionKey", max_len=SESSION_KEY_MAX)
        limit = r.integer("limit", minimum=1, maximum=HISTORY_MAX)
        return cls(session_key, 200 if limit is None else limit)


@attrs.frozen
class StartupParams:
    """`chat.startup`, OpenClaw's Control UI opening a chat: `chat.history`'s params (and a
    `maxBytes` bound on the answer's messages), or a short chat link (`shortId`, `agentId`)."""

    history: HistoryParams | None  # None: a short link
    max_bytes: int

    @classmethod
    def parse(cls, r: ParamReader) -> StartupParams:
        r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX)
        max_bytes = r.integer("maxBytes", minimum=STARTUP_MIN_BYTES) or HISTORY_MAX_BYTES
        if r.data.get("sessionKey") is None and r.data.get("shortId") is not None:
            r.required_string("shortId")
            r.required_string("agentId")
            r.string("slugHint")
            r.integer("limit", minimum=1, maximum=HISTORY_MAX)
            return cls(None, max_bytes)
        return cls(HistoryParams.parse(r), min(max_bytes, HISTORY_MAX_BYTES))


@attrs.frozen
class AbortParams:
    session_key: str
    run_id: str | None

    @classmethod
    def parse(cls, r: ParamReader) -> AbortParams:
        session_key = r.required_string("sessionKey", max_len=SESSION_KEY_MAX)
        return cls(session_key, r.string("runId", max_len=IDEMPOTENCY_KEY_MAX) or None)


@attrs.frozen
class FollowParams:
    session_key: str

    @classmethod
    def parse(cls, r: ParamReader) -> FollowParams:
        return cls(r.required_string("sessionKey", max_len=SESSION_KEY_MAX))


def register(methods: MethodRegistry) -> None:
    @methods.method("chat.send", params=SendParams.parse, scope=WRITE)
    async def chat_send(ctx: CallContext, params: SendParams) -> Any:
        refuse_unpaired(ctx, "idempotencyKey", "idempotency key")
        key = resolve_key(ctx, params.session_key, "sessionKey")
        if params.attachments:
            raise WsError(INVALID_REQUEST, MSG_ATTACHMENTS)
        answer = await send(ctx, key, params.message, params.idempotency_key, params.timeout_ms)
        client = ctx.conn.client
        if answer.get("status") == "started" and client and client.id in CLIENTS_READING_ACK_LATE:
            return AnswerThenPause(answer, RUN_EVENTS_AFTER_ACK)
        return answer

    @methods.method("chat.history", params=HistoryParams.parse, scope=READ)
    async def chat_history(ctx: CallContext, params: HistoryParams) -> Any:
        return await history(ctx, params, HISTORY_MAX_BYTES)

    @methods.method("chat.abort", params=AbortParams.parse, scope=WRITE)
    async def chat_abort(ctx: CallContext, params: AbortParams) -> Any:
        refuse_unpaired(ctx, "runId", "run id")
        key = resolve_key(ctx, params.session_key, "sessionKey")
        registry = ctx.registry
        if params.run_id is None:
            aborted = registry.abort_session(key, "aborted")
            if not aborted:
                aborted = await abort_elsewhere(ctx, key, None)
            return {"ok": True, "aborted": bool(aborted), "runIds": aborted}
        run = registry.run(params.run_id)
        if run is None:
            elsewhere = await abort_elsewhere(ctx, key, params.run_id)
            return {"ok": True, "aborted": bool(elsewhere), "runIds": elsewhere}
        if run.session_key != key:
            raise WsError(INVALID_REQUEST, "runId does not match sessionKey")
        if not run.abort("aborted"):
            return {"ok": True, "aborted": False, "runIds": []}
        return {"ok": True, "aborted": True, "runIds": [run.id]}

    # Without a subscription a reader gets every session's `chat` and `agent` events
    # (deviation 23); the first subscription narrows them to the sessions it follows, and
    # unsubscribing the last one widens them again. `sessions.changed` is never narrowed: a
    # session list wants every change.
    @methods.method("chat.subscribe", params=FollowParams.parse, scope=READ)
    async def chat_subscribe(ctx: CallContext, params: FollowParams) -> Any:
        key = resolve_key(ctx, params.session_key, "sessionKey")
        conn = ctx.conn
        follows = conn.follows if conn.follows is not None else set()
        if key not in follows and len(follows) >= FOLLOW_MAX:
            raise WsError(INVALID_REQUEST, f"too many chat subscriptions (at most {FOLLOW_MAX})")
        follows.add(key)
        conn.follows = follows
        ctx.ws.fanout.followers.add(conn)
        active = [run.id for run in ctx.registry.active_runs(key)]
        return {"subscribed": True, "sessionKey": key, "activeRunIds": active}

    @methods.method("chat.unsubscribe", params=FollowParams.parse, scope=READ)
    async def chat_unsubscribe(ctx: CallContext, params: FollowParams) -> Any:
        key = resolve_key(ctx, params.session_key, "sessionKey")
        conn = ctx.conn
        if conn.follows is not None:
            conn.follows.discard(key)
            if not conn.follows:
                conn.follows = None
                ctx.ws.fanout.followers.discard(conn)
        return {"subscribed": False, "sessionKey": key}


async def history(ctx: CallContext, params: HistoryParams, max_bytes: int) -> Any:
    """`chat.history`'s answer, its messages within `max_bytes` of JSON."""
    config, registry = ctx.config, ctx.registry
    key = resolve_key(ctx, params.session_key, "sessionKey")
    # Pages of megabytes: a few at a time in the process, one per connection.
    async with ctx.ws.transcript_reads.turn(ctx.conn.conn_id):
        transcript = await registry.history(key, params.limit, max_chars=HISTORY_PAGE_CHARS)
        if transcript.session is None:
            return {
                "sessionKey": params.session_key,
                "hasMore": False,
                "totalMessages": 0,
                "messages": [],
                "defaults": model_defaults(config, parse_session_key(key)[0]),
                "sessionInfo": empty_row(config, registry, key),
            }
        # The newest messages, each cut to OpenClaw's bounds, the oldest left out beyond
        # `max_bytes` (the newest stays).
        answer = NewestItems(_history_item, max_bytes)
        messages = await read_newest(registry, transcript, params.limit, answer)
    return {
        "sessionKey": params.session_key,  # echoed unchanged (observed on OpenClaw)
        "sessionId": transcript.session.session_id,
        "hasMore": transcript.total > len(messages),
        "totalMessages": transcript.total,
        "messages": messages,
        "defaults": model_defaults(config, parse_session_key(key)[0]),
        "sessionInfo": transcript.session.to_dict(),
    }


async def send(
    ctx: CallContext, key: str, message: str, run_id: str, timeout_ms: int | None
) -> dict[str, Any]:
    """`chat.send`'s answer for `message` to the session `key` (canonical): its turn started,
    or the run its idempotency key `run_id` already names, or `/stop`'s aborts."""
    if not message.strip():
        raise WsError(INVALID_REQUEST, MSG_EMPTY)
    registry = ctx.registry
    if message.strip() == STOP_COMMAND:
        aborted = registry.abort_session(key, "stop")
        if not aborted:
            aborted = await abort_elsewhere(ctx, key, None)
        return {"ok": True, "aborted": bool(aborted), "runIds": aborted}
    # A call of this key claiming it in a shared store now: its run is looked up after.
    await wait_for_start(ctx.ws, run_id)
    # No await from here to put() but the archive check's and the claim's, during which a
    # concurrent duplicate waits above: it sees this call's entry.
    previous = ctx.ws.idempotency.get(run_id)
    if previous is not None and not previous.reset_done:  # reset_done: no run started
        run = previous.run  # None: ended and forgotten
        return {"runId": run_id, "status": "ok" if run is None or run.ended else "in_flight"}
    run = registry.run(run_id)
    if run is not None and answers_for_key(run):
        return {"runId": run_id, "status": "ok" if run.ended else "in_flight"}
    agent_id, _ = parse_session_key(key)
    asked = timeout_ms / 1000 if timeout_ms is not None else None
    timeout = run_timeout(ctx, asked)
    turn = TurnRequest(
        agent_id, key, run_id, message, timeout_seconds=timeout, idempotency_key=run_id
    )

    async def check() -> None:
        # OpenClaw's: an archived session takes no new work until restored. After the
        # retry's lookups (and a shared store's claim): a retry of a run started before the
        # archive answers that run's status.
        await registry.refuse_archived(key)
        check_queue(registry, key)

    started = await start_once(ctx.ws, run_id, key, lambda: submit_turn(ctx, turn), check)
    if isinstance(started, ClaimedElsewhere):  # another process sharing the store runs it
        return {"runId": run_id, "status": "ok" if started.ended else "in_flight"}
    ctx.ws.idempotency.put(run_id, IdempotentCall.of(started))
    return {"runId": run_id, "status": "started"}


async def abort_elsewhere(ctx: CallContext, key: str, run_id: str | None) -> list[str]:
    """A shared store: the session's turn may be running on another process. Asked only
    when another process runs a turn of the session (`turn_running_elsewhere`), or a run of
    the session (named or not) is claimed and has not ended (a turn waiting
    there for a run slot holds no lock and has said nothing yet; one that claims no key is
    marked so while it waits: agents.session.QueuedMark), so an abort of nothing answers at
    once."""
    store = ctx.gateway.store
    if store is None or store.bus is None:
        return []
    try:
        # A named run too by its session's claims: a turn waiting for a run slot elsewhere
        # with no key of its own (a webhook call's, whose 202 named its run) is marked under
        # a scope of its own, not its run id's.
        going_on = await store.turn_running_elsewhere(key)
        if not going_on and not await store.claimed_run_going_on(key):
            return []
    except StoreError:
        return []  # the database is away: there is no other process to reach either
    return await store.bus.abort_elsewhere(key, run_id)


Item = dict[str, Any]


@attrs.define
class NewestItems:
    """Items made of a transcript's messages from the newest back, within `budget` bytes of
    JSON (the array of them): the item that would take them over it is left out, with all
    older ones, and the newest always stays. `make` gives a message's item and its size."""

    make: Callable[[StoredMessage], tuple[Item, int]]
    budget: int
    _kept: list[Item] = attrs.field(init=False, factory=list)  # newest first
    _bytes: int = attrs.field(init=False, default=2)  # the JSON array `[a,b,…]` of them
    full: bool = attrs.field(init=False, default=False)

    @property
    def count(self) -> int:
        return len(self._kept)

    def add_older(self, stored: Sequence[StoredMessage]) -> bool:
        """Add `stored` (oldest first, older than those added so far); False when full."""
        for message in reversed(stored):
            item, size = self.make(message)
            grown = self._bytes + size + (1 if self._kept else 0)
            if self._kept and grown > self.budget:
                self.full = True
                break
            self._kept.append(item)
            self._bytes = grown
        return not self.full

    def items(self) -> list[Item]:
        """Oldest first."""
        return self._kept[::-1]


async def read_newest(
    registry: SessionRegistry, transcript: Transcript, limit: int, items: NewestItems
) -> list[Item]:
    """`items` filled from `transcript` (the registry's first page of HISTORY_PAGE_CHARS)
    and the pages before it, up to `limit` messages, the store read no further once `items`
    is full; oldest first."""
    session, page = transcript.session, transcript.messages
    wanted = min(limit, transcript.total)
    while page and items.add_older(page) and session is not None and items.count < wanted:
        page = (
            await registry.store.history(
                session.session_id,
                limit - items.count,
                before_seq=page[0].seq,
                max_chars=HISTORY_PAGE_CHARS,
            )
        ).messages
    return items.items()


def _history_item(message: StoredMessage) -> tuple[Item, int]:
    """A message of a `chat.history` answer within OpenClaw's bounds (HISTORY_*)."""
    bounded = _texts_cut(message.to_transcript())
    size = _json_bytes(bounded)
    if size > HISTORY_MESSAGE_MAX_BYTES:
        bounded = _oversized(bounded)
        size = _json_bytes(bounded)
    return bounded, size


def _cut(text: str) -> str:
    if len(text) <= HISTORY_TEXT_MAX_CHARS:
        return text
    return text[:HISTORY_TEXT_MAX_CHARS] + TRUNCATED_MARK


def _texts_cut(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": _cut(content)}
    if not isinstance(content, list):
        return message
    blocks = [
        {
            name: _cut(value) if name in _CUT_FIELDS and isinstance(value, str) else value
            for name, value in block.items()
        }
        if isinstance(block, dict)
        else block
        for block in content
    ]
    return {**message, "content": blocks}


def _oversized(message: dict[str, Any]) -> dict[str, Any]:
    """OpenClaw's placeholder for a message too large to send; ours keeps its ids."""
    meta = message.get("__openclaw")
    return {
        "role": message.get("role", "assistant"),
        "timestamp": message.get("timestamp"),
        "content": [{"type": "text", "text": OVERSIZED_TEXT}],
        "__openclaw": {
            **(meta if isinstance(meta, dict) else {}),
            "truncated": True,
            "reason": "oversized",
        },
    }


def _json_bytes(value: Any) -> int:
    return len(wire(dumps(value)))
