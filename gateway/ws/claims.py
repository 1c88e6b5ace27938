"""`chat.send`/`agent` idempotency keys across the processes that share a PostgreSQL store.

A process's IdempotencyCache (gateway/ws/state.py) knows the keys its own clients sent; a
client that reconnects may send the same key to another process. Before a run of a key starts,
the key is claimed in the store (the webhooks' claims, agents/store_postgres.py `hook_calls`,
under a scope of its own): the process whose claim comes first runs it, and every other one
answers with that run instead of a second run. The claim is a lease while the run goes on,
renewed here, so that a process that dies with its run (SIGKILL, OOM) lets a retry run the
turn once the lease is out; once the run has ended, it is kept, marked ended, for as long as
a key is remembered. One process (SQLite) claims nothing: its cache knows every key."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import structlog

from agents.errors import AgentError
from agents.runs import AgentRun
from gateway.run_claims import Lease, RunClaim, claimed, keep, release_later
from gateway.ws.state import IDEMPOTENCY_TTL_SECONDS, WsState

if TYPE_CHECKING:
    from agents.store_protocol import Store

log = structlog.get_logger()

T = TypeVar("T")

SCOPE_PREFIX = "ws:"  # a webhook's scope is a bare hash: the two never meet
# An `agent` `/new` or `/reset`'s reset, claimed apart from its run (`claim_reset`).
RESET_SCOPE_PREFIX = "ws-reset:"


@attrs.frozen
class ClaimedElsewhere:
    """The key's run was started by another process: its session, and whether it ended."""

    session_key: str
    ended: bool


@attrs.frozen
class ResetElsewhere:
    """The key's reset was claimed by another process: whether it is done, and a bare
    `/new`'s answer facts (`claim_reset`)."""

    done: bool
    answer: dict[str, Any] | None


def scope(key: str, prefix: str = SCOPE_PREFIX) -> str:
    # Hashed: a key may hold characters (NUL) a PostgreSQL text refuses, and up to 256 of them.
    return prefix + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


async def claim_reset(ws: WsState, run_id: str, session_key: str) -> str | ResetElsewhere | None:
    """The reset of an `agent` `/new` or `/reset [text]` of key `run_id`, claimed among the
    processes sharing the store before it is done, so that the session is reset once for the
    key wherever its retries go, and two processes racing reset it once. The claim's token
    when this call is to reset (ended with `end_reset`, or given up with `release_reset`);
    None with one process (its cache knows every key); else what another process did: the
    reset done, with a bare `/new`'s answer facts (`end_reset`), or not yet (its lease runs)."""
    store = ws.gateway.store
    if store is None or not store.shared:
        return None
    token = uuid.uuid4().hex
    key_scope = scope(run_id, RESET_SCOPE_PREFIX)
    lease_ms = int(ws.gateway.options.hook_claim_lease_seconds * 1000)
    # Released when given up or failed with the claim maybe made (its answer lost).
    call = store.claim_call(key_scope, token, session_key, lease_ms)
    holder, _, ended = await claimed(ws.claims, call, store, key_scope, token, "ws-reset")
    if holder == token:
        return token
    if not ended:
        return ResetElsewhere(done=False, answer=None)
    facts = await store.call_answer(key_scope)
    try:
        answer = json.loads(facts) if facts is not None else None
    except ValueError:
        answer = None  # not ours: the reset is done, nothing to answer with
    return ResetElsewhere(done=True, answer=answer if isinstance(answer, dict) else None)


@contextlib.asynccontextmanager
async def reset_held(
    ws: WsState, run_id: str, token: str | None, session_key: str
) -> AsyncIterator[None]:
    """The claim of a reset (`claim_reset`'s `token`) renewed while the reset is done, as a
    run's is (RunClaim): a reset that took longer than the lease (waiting for the turn it
    aborted to commit, a slow database) lost it, and a retry on another process reset the
    session again.
    Its last renewal is over on exit: `end_reset` or `release_reset` follow, never one."""
    store = ws.gateway.store
    if token is None or store is None:
        yield
        return
    key_scope = scope(run_id, RESET_SCOPE_PREFIX)
    seconds = ws.gateway.options.hook_claim_lease_seconds

    async def claim_again() -> str:
        holder, _, _ = await store.claim_call(key_scope, token, session_key, int(seconds * 1000))
        return holder

    lease = Lease(store, key_scope, token, seconds, claim_again, "ws-reset", run_id)
    done = asyncio.get_running_loop().create_future()
    renewing = asyncio.ensure_future(lease.held(done))
    try:
        yield
    finally:
        done.set_result(None)
        await renewing


async def reset_answered_at(ws: WsState, run_id: str) -> int | None:
    """When another process sharing the store answered a bare `/new` or `/reset` of key
    `run_id` (`end_reset`'s facts), for `agent.wait`; None: none did (or one process)."""
    store = ws.gateway.store
    if store is None or not store.shared:
        return None
    facts = await store.call_answer(scope(run_id, RESET_SCOPE_PREFIX))
    try:
        answer = json.loads(facts) if facts is not None else None
    except ValueError:
        return None
    at = answer.get("at") if isinstance(answer, dict) else None
    return at if type(at) is int else None


async def end_reset(
    ws: WsState, run_id: str, token: str | None, answer: dict[str, Any] | None
) -> None:
    """The claimed reset is done: kept for as long as a key is remembered, with a bare
    `/new`'s answer facts (None: a `/reset <text>`, whose turn runs under its own claim)."""
    store = ws.gateway.store
    if token is None or store is None:
        return
    keep_ms = int(IDEMPOTENCY_TTL_SECONDS * 1000)
    facts = json.dumps(answer) if answer is not None else None
    await _quietly(store.end_call(scope(run_id, RESET_SCOPE_PREFIX), token, keep_ms, facts), "end")


async def release_reset(ws: WsState, run_id: str, token: str | None) -> None:
    """The claimed reset was not done (refused, failed): a retry may do it."""
    store = ws.gateway.store
    if token is not None and store is not None:
        await _release(store, scope(run_id, RESET_SCOPE_PREFIX), token)


async def start_once(
    ws: WsState,
    run_id: str,
    session_key: str,
    submit: Callable[[], AgentRun],
    check: Callable[[], Awaitable[None]] | None = None,
) -> AgentRun | ClaimedElsewhere:
    """`submit()`'s run, unless another process sharing the store started the key first.
    Callers look in the cache first, after `wait_for_start`: no other call of this process
    starts the key meanwhile (a concurrent one waits in `wait_for_start`). `check` (the
    archive's refusal) runs right before `submit`, after the claim is won: a retry of a run
    that another process started before the session was archived gets that run, as a retry
    of this process's own run does (found in its cache)."""
    gateway = ws.gateway
    store = gateway.store
    if store is None or not store.shared:
        if check is not None:
            with starting(ws, run_id):
                await check()
        return submit()
    done = asyncio.get_running_loop().create_future()
    ws.starting[run_id] = done
    try:
        token = uuid.uuid4().hex
        lease = gateway.options.hook_claim_lease_seconds
        # Starting until its run is submitted (RunClaim.held's first renewal): a retry on
        # another process waits meanwhile, and is not told of a run `check` refuses. Given up
        # (its connection closed) or failed (a StoreError, which goes to the caller as any
        # store's does: dispatch.error_for; its answer maybe lost after the COMMIT), the claim
        # maybe made is released: a retry must not wait out the lease for a run nobody started.
        call = store.claim_call(scope(run_id), token, session_key, int(lease * 1000), starting=True)
        holder, key, ended = await claimed(ws.claims, call, store, scope(run_id), token, "ws")
        if holder != token:
            # The claim alone says whether the run ended: it is marked before the end is told
            # (`RunClaim.end`). Not the key's turn in the session: a run aborted while queued
            # stores none, and telling this run's from one of a key sent again once forgotten
            # would compare the clock that stamped it with this process's.
            return ClaimedElsewhere(key, ended)
        try:
            if check is not None:
                await check()
            run = submit()
        except BaseException:
            release_later(ws.claims, store, scope(run_id), token, "ws")
            raise
        key_scope = scope(run_id)

        async def claim_again() -> str:
            holder, _, _ = await store.claim_call(
                key_scope, token, run.session_key, int(lease * 1000)
            )
            return holder

        keep_ms = int(IDEMPOTENCY_TTL_SECONDS * 1000)
        held = Lease(store, key_scope, token, lease, claim_again, "ws", run.id)
        claim = RunClaim(held, run, keep_ms)
        run.hold_end(lambda outcome, announce: _keep(ws, claim.end(outcome, announce)))
        _keep(ws, claim.held())
        return run
    finally:
        del ws.starting[run_id]
        done.set_result(None)


def _keep(ws: WsState, work: Coroutine[Any, Any, None]) -> None:
    keep(ws.claims, work, "ws-claim")


@attrs.define
class Starting:
    """`starting`'s mark: kept past the call, until `until`'s task is done, when the call
    is cancelled (its client left) while that task (a reset, finished to the end) goes on."""

    task: asyncio.Future[Any] | None = None

    def until(self, task: asyncio.Future[Any]) -> None:
        self.task = task


@contextlib.contextmanager
def starting(ws: WsState, run_id: str) -> Iterator[Starting]:
    """This call does what `run_id` asks for before its run (`agent`'s `/new`, `/reset`):
    a concurrent call of the key waits in `wait_for_start` meanwhile, then finds what this
    one remembered, rather than doing it again. A retry from a client whose first call was
    cancelled waits, too, for the work that call left going on (`Starting.until`)."""
    done = asyncio.get_running_loop().create_future()
    ws.starting[run_id] = done
    mark = Starting()

    def release(_: object = None) -> None:
        del ws.starting[run_id]
        done.set_result(None)

    try:
        yield mark
    finally:
        if mark.task is not None and not mark.task.done():
            mark.task.add_done_callback(release)
        else:
            release()


async def wait_for_start(ws: WsState, run_id: str) -> None:
    """Until no call of this process is claiming and starting `run_id`."""
    while (start := ws.starting.get(run_id)) is not None:
        await asyncio.shield(start)


async def _release(store: Store, key_scope: str, token: str) -> None:
    await _quietly(store.release_hook_call(key_scope, token), "release")


async def _quietly(statement: Awaitable[T], what: str) -> T | None:
    """The statement's answer; None when it failed."""
    try:
        return await statement
    except AgentError:
        # Kept until its lease is out (extend: the next renewal may do it).
        log.warning("ws_claim_failed", what=what)
        return None
