"""The claim of a `chat.send` idempotency key in a PostgreSQL store that other processes
share (gateway/ws/claims.py): lost while the database was away longer than its lease, won by
a call then refused; and an `agent` reset's claim, held past its lease."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agents.store_postgres import SQL_NOW_MS, PostgresSessionStore
from gateway.appkeys import STATE
from gateway.state import AppOptions
from gateway.ws.claims import RESET_SCOPE_PREFIX, scope
from tests.support.http_client import fake_provider
from tests.support.pgserver import PgServer
from tests.support.shared_store import HeldOpenAI, forget_the_claim, renewals_of
from tests.support.statement_relay import (
    DroppingRelay,
    HeldSendRelay,
    ReplyRelay,
    StatementRelay,
    statement_relay,
)
from tests.support.ws_client import TOKEN, Gateway, MakeGateway, send

pytestmark = pytest.mark.postgres

KEY = "agent:main:main"
RELEASE_GOES_ON = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state <> 'idle'"


@pytest.fixture
async def held() -> AsyncIterator[HeldOpenAI]:
    upstream = HeldOpenAI()
    await upstream.start()
    yield upstream
    upstream.go.set()
    await upstream.aclose()


@pytest.fixture
async def other(pg_url: str) -> AsyncIterator[PostgresSessionStore]:
    """The shared store as another process sees it: where a retry claims the key."""
    store = PostgresSessionStore(pg_url)
    await store.open()
    yield store
    await store.aclose()


def config(held: HeldOpenAI, pg_url: str) -> str:
    return json.dumps(
        {
            "gateway": {"auth": {"mode": "token", "token": TOKEN}},
            **fake_provider(held),
            "store": {"backend": "postgres", "url": pg_url},
        }
    )


class TestAKeysClaimLost:
    async def test_while_its_run_goes_on_is_claimed_again(
        self,
        make_gateway: MakeGateway,
        held: HeldOpenAI,
        pg_url: str,
        monkeypatch: pytest.MonkeyPatch,
        other: PostgresSessionStore,
    ) -> None:
        """It was never claimed again: a retry on another process ran the turn twice."""
        gateway = await make_gateway(
            config(held, pg_url), options=AppOptions(hook_claim_lease_seconds=0.6)
        )
        store = gateway.app[STATE].store
        assert store is not None
        renewed = renewals_of(store, monkeypatch)
        conn = await asyncpg.connect(pg_url)
        try:
            ws = await gateway.connected()
            await ws.ok("chat.send", send("main", "hi", "lost-1"))
            await held.wait_for_requests(1, within=15)
            [token] = await conn.fetch("SELECT run_id FROM hook_calls")
            await forget_the_claim(conn)
            renewed.clear()
            async with asyncio.timeout(10):
                while len(renewed) < 2:  # a renewal begun after the loss has ended
                    await asyncio.sleep(0.02)
            # A retry on another process is told the run goes on.
            holder, _, ended = await other.claim_call(scope("lost-1"), "retry", KEY, 60_000)
            assert (holder, ended) == (token[0], False)
            held.go.set()
            await ws.event("chat", state="final", runId="lost-1")
            holder, _, ended = await other.claim_call(scope("lost-1"), "retry", KEY, 60_000)
            assert (holder, ended) == (token[0], True)
        finally:
            held.go.set()
            await conn.close()

    async def test_and_its_run_ended_before_a_renewal_is_kept_ended(
        self, make_gateway: MakeGateway, held: HeldOpenAI, pg_url: str, other: PostgresSessionStore
    ) -> None:
        """The run's end marked a claim that was no longer there: a retry on another process
        of a client told of the end ran the turn a second time."""
        gateway = await make_gateway(
            config(held, pg_url), options=AppOptions(hook_claim_lease_seconds=600)
        )
        conn = await asyncpg.connect(pg_url)
        try:
            ws = await gateway.connected()
            await ws.ok("chat.send", send("main", "hi", "lost-2"))
            await held.wait_for_requests(1, within=15)
            [token] = await conn.fetch("SELECT run_id FROM hook_calls")
            await forget_the_claim(conn)
            held.go.set()
            await ws.event("chat", state="final", runId="lost-2")
            holder, _, ended = await other.claim_call(scope("lost-2"), "retry", KEY, 60_000)
            assert (holder, ended) == (token[0], True)
        finally:
            held.go.set()
            await conn.close()


class TestAKeysClaimRefused:
    async def test_is_not_taken_by_a_retry_elsewhere_as_a_run_that_started(
        self,
        make_gateway: MakeGateway,
        held: HeldOpenAI,
        pg_url: str,
        pg_server: PgServer,
        other: PostgresSessionStore,
    ) -> None:
        """`chat.send` won its key's claim, then found the session archived; until the claim
        was released (held here), a retry on another process found it and was told
        `in_flight` for a run that never started. It waits, then claims the key itself."""
        release = b"DELETE FROM hook_calls WHERE scope"
        await other.create(KEY, "main", 1)
        assert await other.set_archived(KEY, True, 1) is not None
        with statement_relay("127.0.0.1", pg_server.port, release) as relay:
            gateway = await make_gateway(config(held, relay.url(pg_url)))
            ws = await gateway.connected()
            first = asyncio.ensure_future(ws.call("chat.send", send("main", "hi", "refused-1")))
            await relay.wait_held()  # claimed and refused: the release waits
            retry = asyncio.ensure_future(
                other.claim_call(scope("refused-1"), "retry", KEY, 60_000)
            )
            await asyncio.wait({retry}, timeout=2)  # its answer, if it comes meanwhile
            relay.release()
            refused = await first
            assert refused["ok"] is False and "archived" in refused["error"]["message"]
            holder, _, ended = await retry
            assert (holder, ended) == ("retry", False)


# A claim is its INSERT, then its COMMIT: what the relays below hold or drop.
CLAIM, COMMIT = b"INSERT INTO hook_calls", b"COMMIT"


@contextlib.asynccontextmanager
async def claiming_through(
    relay: StatementRelay, make_gateway: MakeGateway, held: HeldOpenAI, pg_url: str
) -> AsyncIterator[Gateway]:
    """A gateway whose store is reached through `relay` (closed after), its claims' lease
    600 s: a retry that gets the key within seconds got it released, not run out."""
    try:
        yield await make_gateway(
            config(held, relay.url(pg_url)), options=AppOptions(hook_claim_lease_seconds=600)
        )
    finally:
        relay.close()


async def claimed_anew(other: PostgresSessionStore, key_scope: str) -> None:
    """A retry on another process claims `key_scope` itself, within seconds."""
    async with asyncio.timeout(5):  # not the lease's 600 s
        holder, _, ended = await other.claim_call(key_scope, "retry", KEY, 60_000)
    assert (holder, ended) == ("retry", False)


class TestAKeysClaimGivenUp:
    async def test_by_a_call_cancelled_twice_is_released_at_once(
        self,
        make_gateway: MakeGateway,
        held: HeldOpenAI,
        pg_url: str,
        pg_server: PgServer,
        other: PostgresSessionStore,
    ) -> None:
        """`chat.send`'s claim was committed, its answer held; its connection closed (the
        call cancelled), then the gateway shut down (what it left going on cancelled): the
        claim is released by then, not left starting for a retry to wait out its lease."""
        relay = ReplyRelay("127.0.0.1", pg_server.port, COMMIT, after=CLAIM)
        async with claiming_through(relay, make_gateway, held, pg_url) as gateway:
            ws = await gateway.connected()
            await ws.request("chat.send", send("main", "hi", "given-up-1"))
            await relay.wait_held()  # claimed in the database; the call waits for the answer
            await ws.ws.close()
            await gateway.client.close()
            await claimed_anew(other, scope("given-up-1"))

    async def test_whose_commit_was_on_its_way_when_its_call_was_cancelled_is_released(
        self,
        make_gateway: MakeGateway,
        held: HeldOpenAI,
        pg_url: str,
        pg_server: PgServer,
        other: PostgresSessionStore,
    ) -> None:
        """`chat.send`'s claim was sent, its COMMIT not yet done at the server (held here),
        when its connection closed: the release went at once, found nothing, and the COMMIT
        done after it left the claim, starting, for a retry on another process to wait out
        its lease. The release now follows the claim's statement, then the shutdown."""
        conn = await asyncpg.connect(pg_url)
        release = b"DELETE FROM hook_calls WHERE scope"
        relay = HeldSendRelay("127.0.0.1", pg_server.port, COMMIT, after=CLAIM, watch=release)
        try:
            async with claiming_through(relay, make_gateway, held, pg_url) as gateway:
                ws = await gateway.connected()
                await ws.request("chat.send", send("main", "hi", "given-up-2"))
                await relay.wait_held()  # claimed; its COMMIT on its way to the database
                await ws.ws.close()  # the call cancelled
                # A release sent meanwhile, if one is, done at the server before the COMMIT.
                if await asyncio.to_thread(relay.watched.wait, 2):
                    async with asyncio.timeout(5):
                        while await conn.fetchval(RELEASE_GOES_ON, release.decode() + "%"):
                            await asyncio.sleep(0.02)
                relay.release()
                await gateway.client.close()  # the shutdown
                await claimed_anew(other, scope("given-up-2"))
        finally:
            await conn.close()

    async def test_whose_answer_was_lost_is_released_at_once(
        self,
        make_gateway: MakeGateway,
        held: HeldOpenAI,
        pg_url: str,
        pg_server: PgServer,
        other: PostgresSessionStore,
    ) -> None:
        """The claim's COMMIT went through and its answer was lost (the connection cut): the
        call failed, its claim (made starting) was kept, and a retry on another process waited
        the lease out for a run nobody started."""
        relay = DroppingRelay("127.0.0.1", pg_server.port, COMMIT, after=CLAIM)
        async with claiming_through(relay, make_gateway, held, pg_url) as gateway:
            ws = await gateway.connected()
            failed = await ws.call("chat.send", send("main", "hi", "lost-answer-1"))
            assert failed["ok"] is False, failed
            await claimed_anew(other, scope("lost-answer-1"))

    async def test_of_a_reset_whose_answer_was_lost_is_released_at_once(
        self,
        make_gateway: MakeGateway,
        held: HeldOpenAI,
        pg_url: str,
        pg_server: PgServer,
        other: PostgresSessionStore,
    ) -> None:
        """As a run's: an `agent` `/new` whose reset's claim was committed, its answer lost,
        failed and kept the claim; a retry on another process was told for the lease that
        the reset goes on there."""
        relay = DroppingRelay("127.0.0.1", pg_server.port, COMMIT, after=CLAIM)
        async with claiming_through(relay, make_gateway, held, pg_url) as gateway:
            ws = await gateway.connected()
            params = {"message": "/new", "idempotencyKey": "new-lost-1"}
            failed = await ws.call("agent", params)
            assert failed["ok"] is False, failed
            key_scope = scope("new-lost-1", RESET_SCOPE_PREFIX)
            # A reset's claim is never starting: a retry is told at once while it is kept.
            async with asyncio.timeout(5):
                while (await other.call_going_on(key_scope)) is not None:
                    await asyncio.sleep(0.02)  # the release, in a task of its own
            await claimed_anew(other, key_scope)


class TestAResetsClaim:
    async def test_is_renewed_while_the_reset_goes_on_past_its_lease(
        self,
        make_gateway: MakeGateway,
        held: HeldOpenAI,
        pg_url: str,
        pg_server: PgServer,
        other: PostgresSessionStore,
    ) -> None:
        """An `agent` `/new`'s claim was never renewed: a reset that took longer than the
        lease (here waiting for the turn it aborted, whose commit is held at the store) lost
        it, and a retry on another process reset the session a second time."""
        conn = await asyncpg.connect(pg_url)
        try:
            with statement_relay("127.0.0.1", pg_server.port, b"INSERT INTO messages") as relay:
                gateway = await make_gateway(
                    config(held, relay.url(pg_url)),
                    options=AppOptions(hook_claim_lease_seconds=0.6),
                )
                ws = await gateway.connected()
                await ws.ok("chat.send", send("main", "hi", "before-1"))
                await held.wait_for_requests(1, within=15)  # a turn the reset aborts
                params = {"message": "/new", "idempotencyKey": "new-held"}
                reset = asyncio.ensure_future(ws.call("agent", params))
                await relay.wait_held()  # the aborted turn's commit: the reset waits for it
                key_scope = scope("new-held", RESET_SCOPE_PREFIX)
                lease_end = await conn.fetchval(
                    "SELECT expires_at FROM hook_calls WHERE scope = $1", key_scope
                )
                assert lease_end is not None  # claimed before the reset began
                async with asyncio.timeout(5):  # by the database's clock, which keeps it
                    while await conn.fetchval(f"SELECT {SQL_NOW_MS}") <= lease_end:
                        await asyncio.sleep(0.02)
                holder, _, ended = await other.claim_call(key_scope, "retry", KEY, 60_000)
                assert (holder != "retry", ended) == (True, False)
                relay.release()
                answer = await reset
                assert answer["ok"] is True, answer
                reset_to = answer["payload"]["result"]["meta"]["agentMeta"]["sessionId"]
            holder, _, ended = await other.claim_call(key_scope, "retry", KEY, 60_000)
            assert (holder != "retry", ended) == (True, True)
            row = await other.get(KEY)
            assert row is not None and row.session_id == reset_to
        finally:
            held.go.set()
            await conn.close()
