"""`agent` (two answers to one request) and `agent.wait` (ws-protocol.md §8)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import attrs
import structlog

from agents.errors import InvalidSessionKey, UnknownAgent
from agents.events import LifecyclePhase, RunEvent
from agents.keys import SESSION_KEY_MAX, parse_session_key
from agents.runs import AgentRun, RunOutcome, RunStatus, TurnRequest
from gateway.ws import protocol
from gateway.ws.claims import (
    ClaimedElsewhere,
    ResetElsewhere,
    claim_reset,
    end_reset,
    release_reset,
    reset_answered_at,
    reset_held,
    start_once,
    starting,
    wait_for_start,
)
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry
from gateway.ws.methods.chat import (
    IDEMPOTENCY_KEY_MAX,
    MSG_EMPTY,
    answers_for_key,
    check_queue,
    run_timeout,
    submit_turn,
)
from gateway.ws.methods.sessions import refuse_unpaired, resolve_key
from gateway.ws.protocol import (
    ADMIN,
    INVALID_REQUEST,
    TRUNCATED_MARK,
    UNAVAILABLE,
    WRITE,
    ParamReader,
    ParamsError,
    WsError,
    text_head,
)
from gateway.ws.state import IdempotentCall

log = structlog.get_logger()

WAIT_DEFAULT_MS = 30_000  # agents-sessions.md §2.5
# A longer `timeoutMs` is clamped to a day (the spec and OpenClaw set no maximum; OpenClaw's
# timer cannot wait past 24.8 days): a wait for a run id that never comes would otherwise
# hold one of the connection's calls, and its watchers, for as long as it asks. A day is
# longer than any turn a client waits on; the wait answers `timeout` and can be made again.
WAIT_MAX_MS = 86_400_000
UNSUPPORTED = ("provider", "model", "attachments")  # deviation 33: refused, not dropped
# A retried `agent` whose run ended so long ago (or so many bytes of replies ago) that the
# registry no longer holds its reply.
RESULT_FORGOTTEN = "run result no longer available"
# OpenClaw's session commands of an `agent` message (`openclaw agent --message /new`).
RESET_COMMAND = re.compile(r"^/(new|reset)(?:\s+([\s\S]*))?$", re.IGNORECASE)


@attrs.frozen
class AgentParams:
    message: str
    idempotency_key: str
    agent_id: str | None
    session_key: str | None
    extra_system_prompt: str
    timeout: float | None

    @classmethod
    def parse(cls, r: ParamReader) -> AgentParams:
        for name in UNSUPPORTED:
            value = r.data.get(name)
            if value is not None and value != []:
                raise ParamsError(f"{name} is not supported")
        session_key = r.string("sessionKey", max_len=SESSION_KEY_MAX) or None
        # OpenClaw finds the session a `sessionId` names (`openclaw agent --session-id`); we
        # keep no index of ids, and running the turn in the main session instead would put it
        # where the caller did not ask. With a sessionKey, the key names the session.
        session_id = r.data.get("sessionId")
        if session_key is None and isinstance(session_id, str) and session_id.strip():
            raise ParamsError("sessionId is not supported; name the session with sessionKey")
        return cls(
            message=r.string("message") or "",
            idempotency_key=r.required_string("idempotencyKey", max_len=IDEMPOTENCY_KEY_MAX),
            agent_id=r.string("agentId", non_empty=True),
            session_key=session_key,
            extra_system_prompt=r.string("extraSystemPrompt") or "",
            timeout=r.number("timeout", minimum=0),
        )


@attrs.frozen
class WaitParams:
    run_id: str
    timeout_ms: int

    @classmethod
    def parse(cls, r: ParamReader) -> WaitParams:
        # Run ids are idempotency keys or shorter ids of our own: a longer one names no run.
        run_id = r.required_string("runId", max_len=IDEMPOTENCY_KEY_MAX)
        timeout_ms = r.integer("timeoutMs", minimum=0)
        return cls(run_id, WAIT_DEFAULT_MS if timeout_ms is None else min(timeout_ms, WAIT_MAX_MS))


def reset_answer(run_id: str, command: str, session_id: str) -> dict[str, Any]:
    """The one answer to a bare `/new` or `/reset`: OpenClaw's acknowledgement, no run."""
    text = "✅ New session started." if command == "new" else "✅ Session reset."
    return {
        "runId": run_id,
        "status": "ok",
        "summary": "completed",
        "result": {
            "payloads": [{"text": text, "isStatusNotice": True}],
            "meta": {"durationMs": 0, "agentMeta": {"sessionId": session_id}},
        },
    }


def accepted_answer(run: AgentRun) -> dict[str, Any]:
    """The first `agent` answer."""
    return {
        "runId": run.id,
        "sessionKey": run.session_key,
        "agentId": run.agent_id,
        "status": "accepted",
        "acceptedAt": run.accepted_at,
    }


def final_answer(run: AgentRun, outcome: RunOutcome) -> dict[str, Any]:
    """The second `agent` answer; raises the failure as an error response with a payload."""
    if outcome.status == RunStatus.FAILED:
        message = outcome.error.message if outcome.error is not None else "internal error"
        payload = {"runId": run.id, "status": "error", "summary": message}
        raise WsError(UNAVAILABLE, message, payload=payload)
    started = outcome.started_at if outcome.started_at is not None else run.accepted_at
    usage = outcome.usage
    return {
        "runId": run.id,
        "status": "ok",
        "summary": "completed",
        "result": {
            "payloads": [{"text": outcome.text, "mediaUrl": None}],
            "meta": {
                "durationMs": max(0, outcome.ended_at - started),
                "agentMeta": {
                    "sessionId": outcome.session_id,
                    "provider": outcome.provider,
                    "model": outcome.model,
                    "usage": {
                        "input": usage.input,
                        "output": usage.output,
                        "total": usage.input + usage.output,
                    },
                },
                "stopReason": outcome.stop_reason,
                "aborted": outcome.status == RunStatus.ABORTED,
            },
        },
    }


def within_max_payload(ctx: CallContext, answer: dict[str, Any]) -> dict[str, Any]:
    """The final answer, its reply cut to fit maxPayload with OpenClaw's mark, as a `chat`
    event's is (gateway/ws/events.py): the run succeeded, and the dispatcher would turn an
    answer over the limit into an error."""
    [reply] = answer["result"]["payloads"]
    text, limit = reply["text"], ctx.ws.settings.max_payload
    if len(text) * 6 < limit // 2:  # 6: the most JSON bytes of a character; the rest is small
        return answer
    size = len(protocol.response(ctx.request_id, answer))
    if size <= limit:
        return answer
    log.warning(
        "ws_answer_cut", conn_id=ctx.conn.conn_id, method=ctx.method, bytes=size, limit=limit
    )
    reply["text"] = TRUNCATED_MARK
    room = limit - len(protocol.response(ctx.request_id, answer))
    reply["text"] = text_head(text, room) + TRUNCATED_MARK
    return answer


def answered_without_run(ctx: CallContext, run_id: str) -> dict[str, Any] | None:
    """`agent.wait`'s answer for the id of a bare `/new` or `/reset`: OpenClaw remembers that
    call's answer under its run id and reads it as a run that ended `ok` when it answered,
    never started (no `startedAt`)."""
    previous = ctx.ws.idempotency.get(run_id)
    if previous is None or previous.answered_at is None:
        return None
    return {"runId": run_id, "status": "ok", "endedAt": previous.answered_at}


def ended_elsewhere(event: RunEvent) -> dict[str, Any]:
    """`agent.wait`'s answer for another process's run, from its terminal event."""
    data = event.data
    failed = data.get("phase") == LifecyclePhase.ERROR
    status = "error" if failed else "timeout" if data.get("aborted") else "ok"
    answer: dict[str, Any] = {"runId": event.run_id, "status": status}
    answer["startedAt"] = data.get("startedAt")
    answer["endedAt"] = data.get("endedAt")
    if failed:
        answer["error"] = data.get("error")
    return answer


def run_elsewhere(run_id: str, claim: ClaimedElsewhere) -> WsError:
    """A retried `agent` whose key another process sharing the store started: that process
    runs the turn (or ran it), and this one cannot wait for it; no second run is started.
    `agent.wait` names the run on any process while it goes on."""
    if claim.ended:
        message = (
            f"run {run_id} of this idempotency key was run by another gateway process; its"
            f" reply is in the history of session {claim.session_key}"
        )
    else:
        message = (
            f"run {run_id} of this idempotency key was started by another gateway process,"
            f" which this one cannot wait on; agent.wait names it, and its reply goes to the"
            f" history of session {claim.session_key}"
        )
    details = {
        "runId": run_id,
        "sessionKey": claim.session_key,
        "status": "ok" if claim.ended else "in_flight",
    }
    return WsError(UNAVAILABLE, message, details=details)


MSG_RESET_ELSEWHERE = (
    "the reset of this idempotency key is being done by another gateway process; retry"
)


async def reset_claimed(
    ctx: CallContext, run_id: str, key: str, claim: str | None, command: str, text: str
) -> dict[str, Any] | None:
    """The session of `key` reset, the reset's claim (`claim_reset`) ended or given up with
    it, and what a retry of the key finds remembered (a bare `/new`'s answer, or the mark
    that the reset is done): one task, finished even if the call is cancelled, so the claim
    never says "not done" of a reset that was, and a retry from a client that left meanwhile
    does not reset again. A bare `/new`'s answer (None with a `text`)."""
    try:
        async with reset_held(ctx.ws, run_id, claim, key):
            info = await ctx.registry.reset(key)
    except Exception:
        await release_reset(ctx.ws, run_id, claim)
        raise
    if text:
        await end_reset(ctx.ws, run_id, claim, None)
        # Until the run's entry takes over: a retry of a turn refused (a full queue,
        # retryable) or never started (its client left) runs it without a second reset.
        ctx.ws.idempotency.put(run_id, IdempotentCall.after_reset())
        return None
    at = now_ms()
    await end_reset(
        ctx.ws, run_id, claim, {"sessionId": info.session_id, "command": command, "at": at}
    )
    answer = reset_answer(run_id, command, info.session_id)
    ctx.ws.idempotency.put(run_id, IdempotentCall.answered(answer, at))
    ctx.ws.fanout.answered_without_run(run_id)
    return answer


async def reset_done_elsewhere(
    ctx: CallContext, run_id: str, key: str, claim: ResetElsewhere, command: str, bare: bool
) -> dict[str, Any] | None:
    """A retried `/new` or `/reset [text]` whose reset another process claimed: a bare one's
    answer rebuilt from the facts that process kept (no second reset); None when the reset
    is done and the turn's text is to run here, without resetting; UNAVAILABLE (retryable)
    while that process has not done it (its claim's lease runs out if it died)."""
    if not claim.done:
        details = {"runId": run_id, "sessionKey": key, "status": "in_flight"}
        raise WsError(UNAVAILABLE, MSG_RESET_ELSEWHERE, details=details, retryable=True)
    if not bare:
        return None
    facts = claim.answer or {}
    session_id, at = facts.get("sessionId"), facts.get("at")
    if isinstance(stored := facts.get("command"), str) and stored in ("new", "reset"):
        command = stored  # the first call's
    if not (isinstance(session_id, str) and type(at) is int):
        # No facts of the first call's (it ended its claim without, as a `/reset <text>`
        # does): its reset is done all the same; the session's id now, answered now.
        info = await ctx.registry.get_session(key)
        session_id, at = info.session_id if info is not None else "", now_ms()
    answer = reset_answer(run_id, command, session_id)
    ctx.ws.idempotency.put(run_id, IdempotentCall.answered(answer, at))
    ctx.ws.fanout.answered_without_run(run_id)
    return answer


def register(methods: MethodRegistry) -> None:
    @methods.method("agent", params=AgentParams.parse, scope=WRITE)
    async def agent(ctx: CallContext, params: AgentParams) -> Any:
        refuse_unpaired(ctx, "idempotencyKey", "idempotency key")
        config, registry = ctx.config, ctx.registry
        run_id = params.idempotency_key
        await wait_for_start(ctx.ws, run_id)  # as chat.send
        previous = ctx.ws.idempotency.get(run_id)
        reset_done = previous is not None and previous.reset_done
        if reset_done:
            previous = None  # a retry of a `/reset <text>` refused after its reset
        if previous is None:
            # The key was forgotten (5 minutes, 1000 newer keys) while its run goes on, or
            # pushed out within its 5 minutes: still a repeat, as for `chat.send`; a second
            # run under one id would run the turn twice, or leave the first unaddressable.
            running = registry.run(run_id)
            if running is not None and answers_for_key(running):
                previous = IdempotentCall.of(running, accepted_answer(running))
        if previous is not None:
            # A repeat: the first call's answers, and no new run.
            if previous.answer is not None:  # a bare `/new`: no second reset either
                return previous.answer
            if previous.accepted is not None:
                ctx.respond(previous.accepted)
            run = previous.run
            if run is None:  # ended, and its reply evicted by the registry's byte budget
                raise WsError(UNAVAILABLE, RESULT_FORGOTTEN)
            return within_max_payload(ctx, final_answer(run, await run.wait()))
        if not params.message.strip():
            raise WsError(INVALID_REQUEST, MSG_EMPTY)
        agents = config.agents
        agent_id = params.agent_id.lower() if params.agent_id else None
        if agent_id is not None and agents.agent(agent_id) is None:
            raise UnknownAgent(agent_id)
        base_agent = agent_id or agents.default_agent.id
        if params.session_key is None:
            key = agents.main_session_key(base_agent)
            ctx.route["session_key"] = key
        else:
            key = resolve_key(ctx, params.session_key, "sessionKey", agent_id=base_agent)
        key_agent, _ = parse_session_key(key)
        if agent_id is not None and key_agent != agent_id:
            raise InvalidSessionKey(
                f"Session key '{key}' belongs to agent '{key_agent}', not '{agent_id}'."
            )
        # OpenClaw's: an archived session takes no new work (nor a reset) until restored:
        # refused by the reset below, and by the check right before the run is submitted,
        # after a shared store's claim (a retry of a run another process started before the
        # archive is answered with that run).
        message = params.message
        if (reset := RESET_COMMAND.match(message)) is not None:
            # OpenClaw's `/new` and `/reset [text]`: the session starts again (admin, as
            # `sessions.reset`), then the text, if any, is the new session's first turn.
            if not protocol.scope_allows(ctx.conn.scopes, ADMIN):
                raise protocol.missing_scope(ADMIN, ctx.conn.protocol)
            message = (reset.group(2) or "").strip()
            if not (reset_done and message):
                # A duplicate sent meanwhile waits (wait_for_start above), then finds this
                # call's answer, mark or run under the key: the session is reset once. With a
                # text, no await comes between the mark and start_once's, or the run's entry.
                # A shared store: the reset is claimed first (claims.claim_reset), so a retry
                # on another process does not reset again either.
                with starting(ctx.ws, run_id) as mark:
                    claim = await claim_reset(ctx.ws, run_id, key)
                    command = reset.group(1).lower()
                    if isinstance(claim, ResetElsewhere):
                        bare = not message
                        elsewhere = reset_done_elsewhere(ctx, run_id, key, claim, command, bare)
                        if (answer := await elsewhere) is not None:
                            return answer
                    else:
                        reset_done_here = reset_claimed(ctx, run_id, key, claim, command, message)
                        # A retry from a client that left meanwhile waits for it too.
                        answer = await ctx.to_the_end(reset_done_here, mark.until)
                        if answer is not None:
                            return answer
                    # Until the run's entry takes over: a retry of a turn refused below (a
                    # full queue, retryable) runs it without resetting the session again.
                    ctx.ws.idempotency.put(run_id, IdempotentCall.after_reset())
        turn = TurnRequest(
            key_agent,
            key,
            run_id,
            message,
            extra_system_prompt=params.extra_system_prompt,
            timeout_seconds=run_timeout(ctx, params.timeout),
            idempotency_key=run_id,
        )

        async def check() -> None:
            await registry.refuse_archived(key)
            check_queue(registry, key)

        started = await start_once(ctx.ws, run_id, key, lambda: submit_turn(ctx, turn), check)
        if isinstance(started, ClaimedElsewhere):
            raise run_elsewhere(run_id, started)
        run = started
        accepted = accepted_answer(run)
        ctx.ws.idempotency.put(run_id, IdempotentCall.of(run, accepted))
        ctx.respond(accepted)
        return within_max_payload(ctx, final_answer(run, await run.wait()))

    @methods.method("agent.wait", params=WaitParams.parse, scope=WRITE)
    async def agent_wait(ctx: CallContext, params: WaitParams) -> Any:
        refuse_unpaired(ctx, "runId", "run id")
        registry, fanout = ctx.registry, ctx.ws.fanout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + params.timeout_ms / 1000
        run = registry.run(params.run_id)
        if run is None and (answered := answered_without_run(ctx, params.run_id)) is not None:
            return answered
        if run is None and (at := await reset_answered_at(ctx.ws, params.run_id)) is not None:
            # A bare `/new` answered by another process sharing the store: as one of ours.
            return {"runId": params.run_id, "status": "ok", "endedAt": at}
        if run is None:
            # Not submitted yet: its first event announces it (or a bare `/new` answers under
            # its id). Or it runs on another process (a shared store): its events, the only
            # thing of it that reaches us, say when it ends.
            first = fanout.watch_run(params.run_id)
            end = fanout.watch_run_end(params.run_id)
            try:
                await asyncio.wait((first,), timeout=params.timeout_ms / 1000)
                run = registry.run(params.run_id)
                if run is None and (answered := answered_without_run(ctx, params.run_id)):
                    return answered
                if run is None and first.done() and not first.cancelled():
                    await asyncio.wait((end,), timeout=max(0.0, deadline - loop.time()))
                    if end.done() and not end.cancelled():  # cancelled: shutting down
                        return ended_elsewhere(end.result())
            finally:
                fanout.unwatch_run(params.run_id, first)
                fanout.unwatch_run_end(params.run_id, end)
                first.cancel()
                end.cancel()
            if run is None:
                return {"runId": params.run_id, "status": "timeout"}
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await run.wait()
        except TimeoutError:
            answer: dict[str, Any] = {"runId": run.id, "status": "timeout"}
            if run.started_at is not None:
                answer["startedAt"] = run.started_at
            return answer
        status = {RunStatus.COMPLETED: "ok", RunStatus.FAILED: "error"}.get(
            outcome.status, "timeout"
        )
        answer = {"runId": run.id, "status": status}
        if outcome.started_at is not None:
            answer["startedAt"] = outcome.started_at
        answer["endedAt"] = outcome.ended_at
        if outcome.status == RunStatus.FAILED and outcome.error is not None:
            answer["error"] = outcome.error.message
        return answer
