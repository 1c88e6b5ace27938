"""OpenClaw's webhooks: `POST <hooks.path>/agent` and `POST <hooks.path>/wake`.

Served by a middleware rather than a route, so that `hooks.enabled` and `hooks.path` apply
on reload like every other hot key. The order of checks is OpenClaw's (query token, method,
auth, sub-path, body), except that a sub-path clawgate does not serve is a 404 after auth
whatever the method (OpenClaw's 405 `Allow: POST` there offers a POST that is a 404 too); the
answers use the gateway's error shape, CORS and body rules (gateway.http.common). The hook
token is its own secret (`hooks.token`), presented as `Authorization: Bearer` or
`x-openclaw-token`; its failures count in the same failed-auth limiter as the gateway token's.

An accepted run belongs to the gateway, not to the request: a caller that stops waiting (or
disconnects) does not abort it, as OpenClaw's hook runs go on without their caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from agents.errors import AgentError
from agents.runs import AgentRun, RunState, RunStatus, TurnRequest
from gateway.appkeys import AGENT_ID, SESSION_KEY, STATE
from gateway.auth import bearer_secret
from gateway.config.model import AuthConfig, HooksConfig
from gateway.edge_http import is_json_content_type, unsupported_media_type
from gateway.http.common import (
    authenticate,
    error_answer,
    is_preflight,
    preflight,
    read_body,
    session_header,
    work_on_body,
)
from gateway.http.hooks_wire import (
    QUERY_TOKEN_MESSAGE,
    REPLAY_TTL_SECONDS,
    TOKEN_HEADER,
    HookReplays,
    accepted_body,
    completion_body,
    hook_agent,
    hook_session_key,
    hooks_backlogged,
    new_run_id,
    parse_agent_hook,
    parse_wake_hook,
    refuse_unpaired_key,
    replay_scope,
    result_forgotten,
    run_elsewhere,
    wait_timeout,
    with_header_key,
)
from gateway.http.openai_wire import (
    SHUTDOWN_ABORT,
    RequestError,
    bad_request,
    error_reply,
    internal_error,
    parse_body,
    shutting_down,
)
from gateway.http.runs import ClientWatch
from gateway.responses import json_response, method_not_allowed, not_found
from gateway.run_claims import Lease, RunClaim, claimed, keep, release_later
from gateway.state import GatewayState

log = structlog.get_logger()

HOOK_REPLAYS = web.AppKey("hook_replays", HookReplays)  # idempotent /hooks/agent calls
# Replay scopes whose call is claiming and starting its run now; done when it has.
HOOK_STARTS = web.AppKey("hook_starts", dict[str, asyncio.Future[None]])
# Runs of calls claimed in a shared store, whose claims these tasks keep (RunClaim.held).
HOOK_HOLDS = web.AppKey("hook_holds", set[asyncio.Task[None]])
HOLD_LAST_WORD_S = 2.0  # a statement's round trip, with room for a slow database
# The webhooks' turns that wait to run (README, "Turns waiting to run") may together hold
# this fraction (1/n) of the gateway's (the registry's `max_waiting_turns`,
# `max_waiting_chars`), as one WebSocket connection may (WsSettings.waiting_turns_share):
# every hook sender presents the one hook token, and a burst of calls that do not wait for
# their run would otherwise fill the gateway's bound and refuse every chat client's turns.
HOOK_TURNS_SHARE = 4
# Their run ids and input characters, those still waiting among them (_submit).
HOOK_TURNS = web.AppKey("hook_turns", list[tuple[str, int]])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application) -> None:
    app[HOOK_REPLAYS] = HookReplays()
    app[HOOK_STARTS] = {}
    app[HOOK_HOLDS] = set()
    app[HOOK_TURNS] = []
    app.cleanup_ctx.append(_holds)
    app.middlewares.append(hooks_middleware)


async def _holds(app: web.Application) -> AsyncIterator[None]:
    yield
    holds = app[HOOK_HOLDS].copy()
    if holds:
        # After the drain their runs have ended: let them say so to the store (a release or
        # the replay window) before it closes.
        await asyncio.wait(holds, timeout=HOLD_LAST_WORD_S)
    for task in holds:
        task.cancel()
    await asyncio.gather(*holds, return_exceptions=True)


@web.middleware
async def hooks_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    hooks = request.app[STATE].config.hooks  # read per request: a reload swaps it
    if hooks.enabled:
        path, base = request.path, hooks.path
        if path == base or path.startswith(base + "/"):
            return await hook(request, hooks, path[len(base) :].lstrip("/"))
    return await handler(request)


async def hook(request: web.Request, hooks: HooksConfig, sub_path: str) -> web.StreamResponse:
    state = request.app[STATE]
    if "token" in request.query:
        return error_answer(request, bad_request(QUERY_TOKEN_MESSAGE))
    known = sub_path in ("agent", "wake")
    if request.method != "POST":
        if is_preflight(request):
            return preflight(request, state.config)
        if known:  # an unknown sub-path has no method: a 404 after auth, as a POST there
            return method_not_allowed("POST")
    if state.draining:
        return error_answer(request, shutting_down())
    try:
        _authenticate(request, state, hooks)
    except RequestError as exc:
        return error_answer(request, exc)
    if not known:
        return not_found()  # OpenClaw's mappings (other sub-paths) are not implemented
    if not is_json_content_type(request.headers.get("Content-Type")):
        return unsupported_media_type()  # as every JSON endpoint (gateway.http.common.gate)
    try:
        raw = await read_body(request, hooks.max_body_bytes, state.options.body_timeout_seconds)
        body = await work_on_body(raw, parse_body, raw)
        if sub_path == "agent":
            await work_on_body(raw, refuse_unpaired_key, raw)
            return await _agent(request, state, hooks, body)
        return await _wake(request, state, hooks, body)
    except RequestError as exc:
        return error_answer(request, exc)
    except ConnectionError:  # the client left while sending its body
        return web.Response(status=499)
    except Exception:
        log.exception("hook_crashed")  # a bug of ours; the caller gets the error shape
        return error_answer(request, internal_error())


def _authenticate(request: web.Request, state: GatewayState, hooks: HooksConfig) -> None:
    """As the gateway token, with the hook token, also presented in its own header."""
    presented = bearer_secret(request.headers.get("Authorization"))
    if presented is None:
        presented = request.headers.get(TOKEN_HEADER, "").strip() or None
    authenticate(request, state, presented or "", AuthConfig(mode="token", token=hooks.token))


async def _refuse_archived(state: GatewayState, key: str) -> None:
    """OpenClaw's: an archived session takes no new work (400, as the WebSocket refuses it)."""
    registry = state.registry
    assert registry is not None  # open for as long as the app serves requests
    try:
        await registry.refuse_archived(key)
    except AgentError as exc:
        raise error_reply(exc) from None


def _submit(
    request: web.Request, state: GatewayState, turn: TurnRequest, hook_name: str
) -> AgentRun:
    registry = state.registry
    assert registry is not None  # open for as long as the app serves requests
    request[AGENT_ID] = turn.agent_id
    request[SESSION_KEY] = turn.session_key
    turns = request.app[HOOK_TURNS]
    turns[:] = [
        (run_id, chars)
        for run_id, chars in turns
        if (run := registry.run(run_id)) is not None and run.state is RunState.QUEUED
    ]
    # One turn is taken when none of the webhooks' waits, however large (as the registry does).
    limit = max(1, registry.max_waiting_turns // HOOK_TURNS_SHARE)
    limit_chars = registry.max_waiting_chars // HOOK_TURNS_SHARE
    chars = turn.input_chars()
    if turns and (len(turns) >= limit or sum(c for _, c in turns) + chars > limit_chars):
        raise hooks_backlogged()
    try:
        run = registry.submit(turn)
    except AgentError as exc:
        raise error_reply(exc) from None
    turns.append((run.id, chars))
    log.info("hook_run_accepted", hook=hook_name[:64], run_id=run.id, session_key=turn.session_key)
    return run


async def _marked(state: GatewayState, key: str) -> None:
    """A turn without a claim of its own, queued for a run slot: its answer names the run only
    once a shared store says the turn waits, so that a `chat.abort` sent on another process as
    soon as the answer comes stops it, and no maintenance deletes the session meanwhile. Not
    long: one statement, within the store's statement timeout; none when a slot was free."""
    assert state.registry is not None
    await state.registry.queued_marked(key)


async def _agent(
    request: web.Request, state: GatewayState, hooks: HooksConfig, body: dict[str, object]
) -> web.StreamResponse:
    agents = state.config.agents
    parsed = with_header_key(parse_agent_hook(body), request.headers)
    agent_id = hook_agent(parsed.agent_id, hooks, agents)
    replays, starting = request.app[HOOK_REPLAYS], request.app[HOOK_STARTS]
    scope = replay_scope(parsed, agent_id, hooks)
    if scope is not None:
        while (start := starting.get(scope)) is not None:
            await asyncio.shield(start)  # the same call, here, is claiming and starting its run
        replayed = replays.get(scope)
        if replayed is not None:
            return await _replay(request, state, hooks, parsed.wait, *replayed)
    agent_id, key = hook_session_key(parsed, agent_id, hooks, agents)
    run_id = new_run_id()
    turn = TurnRequest(
        agent_id=agent_id,
        session_key=key,
        run_id=run_id,
        text=parsed.message,
        timeout_seconds=parsed.timeout_seconds,
        # The key is also stored with the turn; a retry answers with the run (_replay).
        idempotency_key=parsed.idempotency_key,
        addressable=True,  # its id is in the answer: `agent.wait` may name it once it ended
    )
    if scope is None:
        await _refuse_archived(state, key)
        run = _submit(request, state, turn, parsed.name)
        await _marked(state, key)
    else:
        done = asyncio.get_running_loop().create_future()
        starting[scope] = done
        try:
            claimed = await _claim(request.app, state, scope, run_id, key)
            if claimed == (run_id, key):
                try:
                    # After the claim: a retry of a call another process ran before the
                    # session was archived gets that run, as a retry here does (HookReplays).
                    await _refuse_archived(state, key)
                    run = _submit(request, state, turn, parsed.name)
                except BaseException:
                    _release_later(request.app, state, scope, run_id)  # no run used it
                    raise
                replays.put(scope, run_id, key)
                _hold(request.app, state, scope, run)
        finally:
            del starting[scope]
            done.set_result(None)
        if claimed != (run_id, key):  # another process made the call first
            return await _replay(request, state, hooks, parsed.wait, *claimed, elsewhere=True)
    if not parsed.wait:
        return json_response(
            accepted_body(run_id, key), status=202, headers=session_header(request)
        )
    return await _wait(request, run, key, hooks.wait_timeout_seconds)


async def _claim(
    app: web.Application, state: GatewayState, scope: str, run_id: str, key: str
) -> tuple[str, str]:
    """The run of the first call of `scope` among the processes that share the store (a retry
    may reach any of them): this one's, unless another process made the call first."""
    store = state.store
    if store is None or not store.shared:
        return run_id, key  # one process: its HookReplays know every call
    lease_ms = int(state.options.hook_claim_lease_seconds * 1000)
    # Starting until its run is submitted (`_hold`'s first renewal): a retry on another
    # process waits meanwhile, and finds the run, or no claim when this call is refused.
    # Given up (the process stops) or failed (its answer lost after the COMMIT), the claim
    # maybe made is released: a retry on another process must not wait out the lease's 15 s
    # for a run that never starts.
    claim = store.claim_hook_call(scope, run_id, key, lease_ms, starting=True)
    try:
        return await claimed(app[HOOK_HOLDS], claim, store, scope, run_id, "hook")
    except AgentError as exc:
        raise error_reply(exc) from None


def _release_later(app: web.Application, state: GatewayState, scope: str, run_id: str) -> None:
    """The call's claim released in a task of its own (HOOK_HOLDS, given its last word at
    shutdown): gateway/run_claims.py `release_later`."""
    store = state.store
    if store is not None and store.shared:
        release_later(app[HOOK_HOLDS], store, scope, run_id, "hook")


def _hold(app: web.Application, state: GatewayState, scope: str, run: AgentRun) -> None:
    """The call's claim held while its run goes on here, and kept for the replay window once
    it ended (gateway/run_claims.py)."""
    store = state.store
    if store is None or not store.shared:
        return
    lease = state.options.hook_claim_lease_seconds

    async def claim_again() -> str:
        holder, _ = await store.claim_hook_call(scope, run.id, run.session_key, int(lease * 1000))
        return holder

    held = Lease(store, scope, run.id, lease, claim_again, "hook", run.id)
    claim = RunClaim(held, run, int(REPLAY_TTL_SECONDS * 1000))
    run.hold_end(lambda outcome, announce: _keep(app, claim.end(outcome, announce)))
    _keep(app, claim.held())


def _keep(app: web.Application, work: Coroutine[Any, Any, None]) -> None:
    keep(app[HOOK_HOLDS], work, "hook-claim")


async def _replay(
    request: web.Request,
    state: GatewayState,
    hooks: HooksConfig,
    wait: bool,
    run_id: str,
    key: str,
    *,
    elsewhere: bool = False,
) -> web.StreamResponse:
    """A retried call: the first call's run, waited for when this call waits (a 410 when
    its result is no longer kept, a 409 when another process runs it)."""
    request[SESSION_KEY] = key
    log.info("hook_run_replayed", run_id=run_id, session_key=key)
    if not wait:
        return json_response(
            accepted_body(run_id, key), status=202, headers=session_header(request)
        )
    assert state.registry is not None
    run = state.registry.run(run_id)
    if run is None:
        error = run_elsewhere(run_id, key) if elsewhere else result_forgotten(run_id)
        return error_answer(request, error)
    return await _wait(request, run, key, hooks.wait_timeout_seconds)


async def _wait(request: web.Request, run: AgentRun, key: str, seconds: int) -> web.StreamResponse:
    """Until the run ends, the wait times out, or the caller leaves (the run goes on)."""
    gone = asyncio.Event()
    watch = ClientWatch(request, gone.set)
    outcome_task = asyncio.ensure_future(run.wait())
    gone_task = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait(
            {outcome_task, gone_task}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        watch.close()
        gone_task.cancel()
        if not outcome_task.done():
            outcome_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone_task
    if watch.gone:
        return web.Response(status=499)
    if not outcome_task.done() or outcome_task.cancelled():
        return error_answer(request, wait_timeout(seconds, run.id))
    outcome = outcome_task.result()
    if outcome.status == RunStatus.FAILED:
        return error_answer(request, error_reply(outcome.error or AgentError()))
    if outcome.status == RunStatus.ABORTED and run.abort_reason == SHUTDOWN_ABORT:
        return error_answer(request, shutting_down())
    return json_response(completion_body(run.id, key, outcome), headers=session_header(request))


async def _wake(
    request: web.Request, state: GatewayState, hooks: HooksConfig, body: dict[str, object]
) -> web.StreamResponse:
    """OpenClaw queues a system event for the main session and runs its heartbeat; clawgate
    has neither, so the nearest it can do is a turn on the main session with the event's
    text, marked as a system event. An archived main session takes no wake turn, as it takes
    no `/hooks/agent` or `chat.send` one (400 `session_archived`)."""
    agents = state.config.agents
    parsed = parse_wake_hook(body)
    agent_id = hook_agent(parsed.agent_id, hooks, agents)
    key = agents.main_session_key(agent_id)
    run_id = new_run_id()
    turn = TurnRequest(
        agent_id=agent_id, session_key=key, run_id=run_id, text=parsed.text, addressable=True
    )
    await _refuse_archived(state, key)
    _submit(request, state, turn, "wake")
    await _marked(state, key)
    return json_response(
        {"ok": True, "mode": "now", **accepted_body(run_id, key)}, headers=session_header(request)
    )
