"""A run's claim in a shared store, held while the run goes on in this process: a webhook
call's (gateway/http/hooks.py) and a WebSocket `chat.send`/`agent` key's (gateway/ws/claims.py).

The claim is a lease, renewed here, so that a process that dies with its run lets a retry run
it once the lease is out; one found lost (its lease ran out while the database was away, and
another claim forgot it) is made again. When the run ends, the claim is ended (kept for its
retries' window) or, for a run the drain gave up on, released, before the end is told
(`AgentRun.hold_end`): a client told of the end that retries on another process finds it.
An `agent` `/new`'s reset, claimed apart from its run, is renewed so too (`Lease`,
gateway/ws/claims.py `reset_held`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import structlog

from agents.errors import AgentError
from agents.runs import AgentRun, RunOutcome, RunStatus

if TYPE_CHECKING:
    from agents.store_protocol import Store

log = structlog.get_logger()

T = TypeVar("T")

SHUTDOWN_ABORT = "shutdown"  # AgentRun.abort_reason of the runs the drain gave up on


def keep(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None], name: str) -> None:
    """`work` in a task of its own, kept in `tasks` (which the shutdown gives their last word
    before the store closes, then cancels)."""
    task = asyncio.create_task(work, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def release_later(
    tasks: set[asyncio.Task[None]], store: Store, scope: str, token: str, kind: str
) -> None:
    """The claim of `scope` by `token` released in a task of its own (`keep`), for a call
    that claimed it and will not start its run: given up (cancelled), refused, or failed,
    its claim's own statement too, whose COMMIT may have gone through with its answer lost.
    Not awaited in that call: one being cancelled could be cancelled again meanwhile (the
    shutdown), and the claim, starting, made a retry on another process wait out its lease.
    Safe whether the claim was made or not: only the row of `token`, this call's own, goes."""
    keep(tasks, _release(store, scope, token, kind), f"{kind}-claim-release")


async def claimed(
    tasks: set[asyncio.Task[None]],
    claim: Coroutine[Any, Any, T],
    store: Store,
    scope: str,
    token: str,
    kind: str,
) -> T:
    """`claim`'s answer (the claim of `scope` by `token`), its statement in a task of its
    own that this call's cancellation does not cut short: a release sent while the claim's
    COMMIT was still on its way found nothing, and the claim, committed after it, stayed
    for its lease. A call given up (cancelled) or whose claim failed has it released once
    its statement is over (`release_later`'s task, which the shutdown cuts short in turn)."""
    claiming = asyncio.ensure_future(claim)
    try:
        return await asyncio.shield(claiming)
    except BaseException:
        keep(tasks, _release_after(claiming, store, scope, token, kind), f"{kind}-claim-release")
        raise


async def _release_after(
    claiming: asyncio.Future[Any], store: Store, scope: str, token: str, kind: str
) -> None:
    try:
        await asyncio.wait({claiming})
    except asyncio.CancelledError:
        # The shutdown's, its answer not come: the statement is cut (its connection closed),
        # and the claim, maybe committed, released still, unless the database is known away
        # (the release would only wait out its timeouts).
        claiming.cancel()
        await asyncio.wait({claiming})
        if store.reachable:
            await _release(store, scope, token, kind)
        raise
    await _release(store, scope, token, kind)  # its failure was told to the call (shield)


async def _release(store: Store, scope: str, token: str, kind: str) -> None:
    try:
        await store.release_hook_call(scope, token)
    except AgentError:
        log.warning("run_claim_failed", kind=kind, what="release", scope=scope)  # lease runs


@attrs.define(eq=False)
class Lease:
    """The lease of the claim of `scope` by `token`, renewed while the work it claims goes on
    here (`held`). Its renewals and what ends it (`RunClaim.end`, a reset's end or release)
    write it one at a time (`turn`), and no renewal follows the end: a claim made again by a
    renewal never comes back after its end or release."""

    store: Store
    scope: str
    token: str
    seconds: float  # renewed every third of it
    # Claims `scope` again; the holder it finds (`token`: made again).
    claim_again: Callable[[], Awaitable[str]]
    kind: str  # whose claim, in the log lines: "hook", "ws" or "ws-reset"
    work: str  # what it claims, in the log lines: a run's id
    turn: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    ending: bool = False

    async def held(self, done: Awaitable[object]) -> None:
        """Renew the lease until `done`; one a renewal finds gone is made again. The first
        renewal, at once, says the work started: a retry on another process that found the
        claim waits for that (`Store.claim_call`'s `starting`), not told of a run its call
        may yet be refused."""
        ended = asyncio.ensure_future(done)
        try:
            while not ended.done():
                async with self.turn:
                    if self.ending:
                        break
                    keep_ms = int(self.seconds * 1000)
                    extend = self.store.extend_hook_call(self.scope, self.token, keep_ms)
                    if await self.quietly(extend, "extend") is False:
                        await self.make_again()
                await asyncio.wait({ended}, timeout=self.seconds / 3)
        finally:
            ended.cancel()

    async def release(self) -> None:
        """Forget the claim: its work did not start, or was given up on (kept until its
        lease is out when the write fails)."""
        await self.quietly(self.store.release_hook_call(self.scope, self.token), "release")

    async def make_again(self) -> bool:
        """The claim, found gone while its work goes on, made again, unless a retry on
        another process claimed it meanwhile (which then does it too: nothing undoes that).
        Whether this process holds it."""
        holder = await self.quietly(self.claim_again(), "claim again")
        if holder is None:
            return False  # the next renewal may
        if holder != self.token:
            log.warning(
                "run_claim_taken_elsewhere", kind=self.kind, run_id=self.work, holder=holder
            )
            return False
        log.info("run_claim_made_again", kind=self.kind, run_id=self.work)
        return True

    async def quietly(self, statement: Awaitable[T], what: str) -> T | None:
        """The statement's answer; None when it failed."""
        try:
            return await statement
        except AgentError:
            log.warning("run_claim_failed", kind=self.kind, what=what, run_id=self.work)
            return None


@attrs.define(eq=False)
class RunClaim:
    """The claim (`lease`) of a run that goes on here: renewed until the run has ended
    (`held`), then ended or released (`end`)."""

    lease: Lease
    run: AgentRun
    keep_ms: int  # how long an ended claim is kept: its retries' window

    async def held(self) -> None:
        await self.lease.held(self.run.wait())

    async def end(self, outcome: RunOutcome, announce: Callable[[], None]) -> None:
        """The run has ended: the claim says so (one lost meanwhile made again first), or is
        released for a run the drain gave up on (a retry elsewhere runs it), before `announce`
        tells the end. A store that fails to write it only delays the end by its timeout; one
        that has found the database unreachable (the run's own commit failed so, mostly) does
        not: the end is told at once, the write tried after (it would only wait out its
        timeouts, 5 s to connect, 30 s for an answer)."""
        lease, run = self.lease, self.run
        store = lease.store
        lease.ending = True
        if not store.reachable:
            announce()
        try:
            async with lease.turn:  # after a renewal under way
                if outcome.status == RunStatus.ABORTED and run.abort_reason == SHUTDOWN_ABORT:
                    await lease.release()
                else:
                    end = store.end_call(lease.scope, lease.token, self.keep_ms)
                    if await lease.quietly(end, "end") is False and await lease.make_again():
                        await lease.quietly(
                            store.end_call(lease.scope, lease.token, self.keep_ms), "end"
                        )
        finally:
            announce()
