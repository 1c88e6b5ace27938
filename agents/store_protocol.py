"""What the agents layer needs of a session store, whatever keeps the data.

Two implementations: `agents.store.SessionStore` (SQLite, one process, the default) and
`agents.store_postgres.PostgresSessionStore` (PostgreSQL, shared by processes and hosts).
The contract tests (tests/agents/test_store.py) run against both.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from agents.config import MaintenanceConfig
from agents.events import RunEvent, SessionChange
from agents.store import (
    DailyUsage,
    History,
    ResponseOutputIds,
    ResponsePlace,
    SessionPage,
    SessionRow,
    SessionUsage,
    StoredMessage,
    StoredResponse,
    TurnChain,
    TurnRecord,
    UsagePoint,
)


class EventBus(Protocol):
    """Run events and aborts between the processes of a shared store
    (agents.events_postgres.PostgresEventBus)."""

    async def start(self, local_abort: Callable[[str, str | None], list[str]]) -> None: ...

    async def aclose(self) -> None: ...

    def publish(self, event: RunEvent | SessionChange) -> None: ...

    # Whether another process has clients for this one's events: else `publish` drops them.
    @property
    def watched_elsewhere(self) -> bool: ...

    def watchers_here(self, count: int) -> None: ...

    def add_remote_listener(self, listener: Callable[[RunEvent | SessionChange], None]) -> None: ...

    def remove_remote_listener(
        self, listener: Callable[[RunEvent | SessionChange], None]
    ) -> None: ...

    async def abort_elsewhere(self, session_key: str, run_id: str | None) -> list[str]: ...


class Store(Protocol):
    # True when other processes write the same sessions: a cached row may be stale, and a
    # session's turns need `turn_lock` to stay serial across processes.
    @property
    def shared(self) -> bool: ...

    # The other processes' run events and aborts; None when no other process shares it.
    @property
    def bus(self) -> EventBus | None: ...

    # False from a statement that found the database unreachable (`store_unavailable`) to
    # the next one answered: what waits on a write may tell its outcome first meanwhile.
    @property
    def reachable(self) -> bool: ...

    async def open(self) -> None: ...

    async def turn_running_elsewhere(self, key: str) -> bool:
        """Whether another process runs a turn of `key`: holds its turn lock (a maintenance
        pass's hold on it is none), waits for it, or announced a run of it that has not ended
        (a minted key's turn takes no lock)."""
        ...

    async def aclose(self) -> None: ...

    # A claim is kept for a time measured by the store's one clock (a shared store's: the
    # database's), never by comparing the times of processes whose clocks differ.
    async def claim_hook_call(
        self, scope: str, run_id: str, session_key: str, ttl_ms: int, *, starting: bool = False
    ) -> tuple[str, str]:
        """(run id, session key) of the first webhook call of `scope` that other processes
        sharing the store made and still keep; (run_id, session_key) when there is none (it is
        then kept for `ttl_ms`). `starting` as `claim_call`'s."""
        ...

    async def extend_hook_call(self, scope: str, run_id: str, keep_ms: int) -> bool:
        """The claim of `scope` by `run_id` is kept for `keep_ms` from now, and its run said
        started (`claim_call`'s `starting`). False: it is gone
        (released, ended, or forgotten once its lease ran out: `claim_call` makes it again)."""
        ...

    async def extend_hook_calls(
        self, claims: Sequence[tuple[str, str]], keep_ms: int
    ) -> Collection[str]:
        """Each claim of (scope, run id) is kept for `keep_ms` from now: one statement. The
        scopes of those kept (the others are gone: released, ended, or forgotten once their
        lease ran out)."""
        ...

    async def claim_call(
        self,
        scope: str,
        token: str,
        session_key: str,
        ttl_ms: int,
        answer: str | None = None,
        *,
        starting: bool = False,
    ) -> tuple[str, str, bool]:
        """(token, session key, whether its run ended) of the first claim of `scope` that
        other processes sharing the store made and still keep; this one's when there is none
        (made with `answer`, read with `call_answer`, as `end_call`'s).
        Renewed with `extend_hook_call`, given up with `release_hook_call`.
        `starting`: the claim is made before its run is submitted, which may yet be refused;
        it says so until its first renewal, and another process's claim of `scope` waits for
        it meanwhile (no retry is told of a run that will not start)."""
        ...

    async def end_call(
        self, scope: str, token: str, keep_ms: int, answer: str | None = None
    ) -> bool:
        """The claim's run has ended: kept for `keep_ms`, with `answer`. False: the claim is
        gone (forgotten once its lease ran out)."""
        ...

    async def call_answer(self, scope: str) -> str | None:
        """What the claim of `scope` was ended with (`end_call`'s `answer`)."""
        ...

    async def call_going_on(self, scope: str) -> str | None:
        """The session key of the claim of `scope` while its run has not ended; else None."""
        ...

    async def claimed_run_going_on(self, session_key: str) -> bool:
        """Whether the run of a claim naming `session_key` has not ended (a run of another
        process may wait there for a run slot: it holds no turn lock); False without claims."""
        ...

    async def release_hook_call(self, scope: str, run_id: str) -> None: ...

    def turn_lock(
        self,
        key: str,
        *,
        while_waiting: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Held around a turn of `key`: no other process runs a turn of it meanwhile. While
        one does, the wait happens inside `while_waiting()` (the session lends its run slot
        there), unless too many wait already."""
        ...

    async def get(self, key: str) -> SessionRow | None: ...

    async def create(
        self, key: str, agent_id: str, now: int, *, label: str | None = None,
        stateless: bool = False,
    ) -> tuple[SessionRow, bool]: ...  # fmt: skip

    async def get_or_create(
        self, key: str, agent_id: str, now: int, *, stateless: bool = False
    ) -> tuple[SessionRow, bool]: ...

    def unsaved_row(self, key: str, agent_id: str, now: int) -> SessionRow:
        """A new session's row that nothing has written yet: `append_turn` creates it in the
        turn's own write (a key minted for the turn pays one trip to the store, not two)."""
        ...

    async def is_stateless(self, key: str) -> bool | None: ...

    async def append_turn(self, turn: TurnRecord) -> SessionRow: ...

    async def list(
        self, *, limit: int = 100, agent_id: str | None = None, search: str | None = None,
        label: str | None = None, active_minutes: float | None = None, now: int | None = None,
        archived: bool | None = None,
    ) -> SessionPage: ...  # fmt: skip

    async def count(self) -> int: ...

    async def usage_by_day(
        self, since: int, agent_id: str | None = None
    ) -> builtins.list[DailyUsage]: ...

    async def usage_by_session(
        self,
        start: int,
        end: int,
        offset_ms: int,
        *,
        shifts: Sequence[tuple[int, int]] = (),
        agent_id: str | None = None,
        key: str | None = None,
    ) -> builtins.list[SessionUsage]: ...

    async def usage_points(self, session_id: str, limit: int) -> builtins.list[UsagePoint]: ...

    async def patch_label(
        self, key: str, agent_id: str, label: str | None, now: int, *, session_id: str | None = None
    ) -> SessionRow: ...

    async def set_archived(
        self, key: str, archived: bool, now: int, *, session_id: str | None = None
    ) -> SessionRow | None: ...

    async def set_pinned(
        self, key: str, agent_id: str, pinned: bool, now: int, *, session_id: str | None = None
    ) -> SessionRow: ...

    async def patch(
        self,
        key: str,
        agent_id: str,
        now: int,
        *,
        label: tuple[str | None] | None = None,
        archived: bool | None = None,
        pinned: bool | None = None,
        session_id: str | None = None,
    ) -> SessionRow | None:
        """`patch_label` (`label`: the label in a 1-tuple, None: not changed), then
        `set_archived`, then `set_pinned`, those given, in one write: all or nothing. None
        when the archive found no session (and nothing else was asked to make one)."""
        ...

    async def reset(self, key: str, agent_id: str, now: int) -> SessionRow: ...

    async def delete(self, key: str, now: int, *, delete_transcript: bool = True) -> bool: ...

    async def history(
        self,
        session_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        max_chars: int = 0,
    ) -> History: ...

    async def recent_turns(self, session_id: str, user_turns: int) -> tuple[StoredMessage, ...]: ...

    async def replay(
        self, session_id: str, user_turns: int
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage | None]: ...

    async def messages_after(self, session_id: str, seq: int) -> tuple[StoredMessage, ...]: ...

    async def chain_to(
        self, session_id: str, run_id: str, user_turns: int = 0
    ) -> TurnChain | None: ...

    async def chain_bounds(self, session_id: str, run_id: str) -> tuple[int, int] | None: ...

    async def messages_in(
        self, session_id: str, low: int, high: int, descending: bool, limit: int
    ) -> tuple[StoredMessage, ...]: ...

    async def turn_reply(self, session_id: str, low: int, high: int) -> StoredMessage | None: ...

    async def next_assistant(
        self, session_id: str, low: int, high: int
    ) -> StoredMessage | None: ...

    async def last_assistant_in(self, session_id: str, low: int, high: int) -> int | None: ...

    async def first_difference(
        self, session_id: str, low: int, high: int, shift: int
    ) -> int | None: ...

    async def refused_run_end(self, session_id: str, low: int, high: int) -> int | None: ...

    async def last_answer(self, session_id: str, low: int, high: int) -> int | None: ...

    async def message_seq(self, session_id: str, message_id: str) -> int | None: ...

    async def messages_by_id(self, message_ids: Sequence[str]) -> tuple[StoredMessage, ...]: ...

    async def put_response(self, response: StoredResponse) -> None: ...

    async def get_response(self, response_id: str) -> StoredResponse | None: ...

    async def response_place(self, response_id: str) -> ResponsePlace | None: ...

    async def response_output_ids(self, response_id: str) -> ResponseOutputIds | None: ...

    async def delete_response(self, response_id: str) -> bool: ...

    async def used_bytes(self) -> int: ...

    async def prune(
        self, maintenance: MaintenanceConfig, now: int, protected_keys: Collection[str] = (),
        *, main_key: str = "main", limit: int = ...,
    ) -> builtins.list[SessionRow]: ...  # fmt: skip
