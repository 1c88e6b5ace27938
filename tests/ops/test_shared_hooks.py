"""Webhook idempotency keys across processes that share one PostgreSQL store: a retry that
reaches another process than the first call gets the first call's run, not a second run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from agents.store_postgres import PostgresSessionStore
from tests.support.http_client import fake_provider
from tests.support.pgserver import PgServer
from tests.support.process import GatewayProcess
from tests.support.shared_store import HeldOpenAI, claim_kept_for, shared_config, start_on_config
from tests.support.statement_relay import CuttingRelay, DroppingRelay, ReplyRelay, StatementRelay

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HOOK_TOKEN = "hook-token-5e1c"
StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(tmp_path: Path, database: str) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(name: str, **hooks: Any) -> GatewayProcess:
        config = json.loads(shared_config(database, delay_ms=100))
        config["hooks"] = {"enabled": True, "token": HOOK_TOKEN, **hooks}
        return start_on_config(started, tmp_path, name, json.dumps(config))

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def hook(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], key: str = "retry-1"
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {HOOK_TOKEN}", "Idempotency-Key": key}
    async with http.post(f"{url}/hooks/agent", json=body, headers=headers) as response:
        return response.status, await response.json()


async def user_messages(pg_url: str, key: str) -> list[str]:
    """Of the session's turns, once its first is committed."""
    async with PostgresSessionStore(pg_url) as store, asyncio.timeout(10):
        while (row := await store.get(key)) is None or not row.last_status:
            await asyncio.sleep(0.05)
        history = await store.history(row.session_id, 100)
        return [m.text for m in history.messages if m.role == "user"]


class TestAHookRetryOnAnotherProcess:
    async def test_gets_the_first_calls_run_and_no_second_run(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        status, first = await hook(http, a.url, {"message": "invoice 42"})
        assert status == 202, first
        status, again = await hook(http, b.url, {"message": "invoice 42"})
        assert (status, again) == (202, first)
        # Waiting on the process that runs it gives its reply.
        status, waited = await hook(
            http, a.url, {"message": "invoice 42", "waitForCompletion": True}
        )
        assert status == 200 and waited["runId"] == first["runId"], waited
        assert waited["completion"]["text"] == "[turn 1] invoice 42"
        assert await user_messages(pg_url, first["sessionKey"]) == ["invoice 42"]

    async def test_gets_the_first_calls_run_after_its_session_was_archived(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        """As on one process: the archive refuses new work, not the answer to a retry."""
        a = start_gateway("a", defaultSessionKey="hook:ingest")
        b = start_gateway("b", defaultSessionKey="hook:ingest")
        status, first = await hook(http, a.url, {"message": "invoice 44"}, "archived-1")
        assert status == 202, first
        key = first["sessionKey"]
        assert key == "agent:main:hook:ingest"
        assert await user_messages(pg_url, key) == ["invoice 44"]
        async with PostgresSessionStore(pg_url) as store:
            assert await store.set_archived(key, True, 1) is not None
        status, again = await hook(http, b.url, {"message": "invoice 44"}, "archived-1")
        assert (status, again) == (202, first)
        status, refused = await hook(http, b.url, {"message": "invoice 45"}, "archived-2")
        assert status == 400, refused
        assert "archived" in refused["error"]["message"], refused

    async def test_made_while_the_first_call_is_refused_gets_the_same_refusal(
        self,
        start_gateway: StartGateway,
        http: aiohttp.ClientSession,
        tmp_path: Path,
        database: str,
        pg_server: PgServer,
        pg_url: str,
    ) -> None:
        """Process a claimed the call, then found the session archived; until its claim was
        released (held here), a retry on b was told 202 for a run that never started."""
        b = start_gateway("b", defaultSessionKey="hook:ingest")
        status, earlier = await hook(http, b.url, {"message": "invoice 46"}, "refused-0")
        assert status == 202, earlier
        key = earlier["sessionKey"]
        assert await user_messages(pg_url, key) == ["invoice 46"]
        async with PostgresSessionStore(pg_url) as store:
            assert await store.set_archived(key, True, 1) is not None
        relay = StatementRelay("127.0.0.1", pg_server.port, b"DELETE FROM hook_calls WHERE scope")
        started: list[GatewayProcess] = []
        try:
            config = json.loads(shared_config(relay.url(database), delay_ms=0))
            config["hooks"] = {
                "enabled": True,
                "token": HOOK_TOKEN,
                "defaultSessionKey": "hook:ingest",
            }
            a = start_on_config(started, tmp_path, "a", json.dumps(config))
            first = asyncio.create_task(hook(http, a.url, {"message": "invoice 47"}, "refused-1"))
            await relay.wait_held()  # a claimed the call and was refused; its release waits
            again = asyncio.create_task(hook(http, b.url, {"message": "invoice 47"}, "refused-1"))
            await asyncio.wait({again}, timeout=2)  # b's answer, if it comes while a's is held
            relay.release()
            status, refused = await first
            assert status == 400, refused
            status, retried = await again
            assert (status, retried) == (400, refused)
        finally:
            relay.close()
            for process in started:
                process.stop()
        assert await user_messages(pg_url, key) == ["invoice 46"]

    async def test_that_waits_is_told_that_another_process_runs_it(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        status, first = await hook(http, a.url, {"message": "invoice 43"})
        assert status == 202, first
        status, body = await hook(http, b.url, {"message": "invoice 43", "waitForCompletion": True})
        assert status == 409
        assert body == {
            "error": {
                "message": f"Run {first['runId']} of this idempotency key was started by another"
                " gateway process, which this one cannot wait on; its reply goes to the history"
                f" of session {first['sessionKey']}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "hook_run_elsewhere",
            }
        }

    async def test_calls_at_once_on_both_processes_start_one_run(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        answers = await asyncio.gather(
            *(hook(http, (a.url, b.url)[i % 2], {"message": "burst"}, "k-9") for i in range(16))
        )
        assert {status for status, _ in answers} == {202}
        assert len({body["runId"] for _, body in answers}) == 1
        key = answers[0][1]["sessionKey"]
        assert await user_messages(pg_url, key) == ["burst"]

    async def test_gets_a_run_longer_than_the_claims_lease_while_it_goes_on(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        long = " ".join(f"w{i}" for i in range(200))  # 20 s at 100 ms a word
        status, first = await hook(http, a.url, {"message": long}, "long-1")
        assert status == 202, first
        await asyncio.sleep(17)  # past the first lease of 15 s: renewed meanwhile
        status, again = await hook(http, b.url, {"message": long}, "long-1")
        assert (status, again) == (202, first)


# The run's end marking its claim, waiting on the test's lock of the claim.
SQL_END_WAITS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE '%SET ended = TRUE%'"
)


class TestAHookAnswer:
    async def test_comes_once_its_claim_is_kept_for_the_replay_window(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """The claim was kept for the replay window only after the answer went out, still on
        its lease until then: a retry on another process right after the answer, once the
        lease ran out (a renewal that failed), found no claim and ran the call again."""
        settings = json.loads(shared_config(database, delay_ms=0))
        settings.update(fake_provider(held))
        settings["hooks"] = {"enabled": True, "token": HOOK_TOKEN}
        started: list[GatewayProcess] = []
        # Two connections: a transaction sees pg_stat_activity as it was at its first look.
        watch, holder = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
        try:
            a = start_on_config(started, tmp_path, "a", json.dumps(settings))
            body = {"message": "hi", "waitForCompletion": True}
            answer = asyncio.create_task(hook(http, a.url, body, "end-1"))
            await held.wait_for_requests(1, within=15)  # claimed, its run held upstream
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM hook_calls FOR UPDATE")
                held.go.set()
                async with asyncio.timeout(20):
                    while not answer.done() and not await watch.fetchval(SQL_END_WAITS):
                        await asyncio.sleep(0.05)
                answered_first = answer.done()
            status, done = await asyncio.wait_for(answer, 20)
            assert status == 200, done
            claim = await watch.fetchrow(
                "SELECT ended, expires_at - (extract(epoch FROM now()) * 1000)::BIGINT AS left_ms"
                " FROM hook_calls"
            )
        finally:
            await watch.close()
            await holder.close()
            for process in started:
                process.stop()
        assert not answered_first  # the answer waited for the claim's end
        assert claim["ended"] and claim["left_ms"] > 60_000, claim

    async def test_that_waits_is_answered_at_once_while_the_database_is_unreachable(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        pg_server: PgServer,
    ) -> None:
        """The run's commit found the database gone (its connection cut); the answer then
        waited for the claim's mark, which waited for a database that did not answer."""
        relay = CuttingRelay(
            "127.0.0.1", pg_server.port, b"SET ended = TRUE", cut=b"INSERT INTO messages"
        )
        started: list[GatewayProcess] = []
        watch = await asyncpg.connect(pg_url)
        try:
            config = json.loads(shared_config(relay.url(database), delay_ms=0))
            config["hooks"] = {"enabled": True, "token": HOOK_TOKEN}
            a = start_on_config(started, tmp_path, "a", json.dumps(config))
            body = {"message": "cut", "waitForCompletion": True}
            async with asyncio.timeout(15):
                status, answer = await hook(http, a.url, body, "cut-1")
            assert status == 503, answer
            await relay.wait_held()  # the claim's mark: sent, not answered
            assert await watch.fetchval("SELECT ended FROM hook_calls") is False
            relay.release()
        finally:
            relay.close()
            await watch.close()
            for process in started:
                process.stop()


class TestAHookRetryAfterItsProcessDied:
    async def test_runs_the_call_once_the_claims_lease_is_out(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        """The claim of a call whose process died with its run (OOM, SIGKILL) would have
        answered every retry for 10 minutes with a run that never ends: lost."""
        a, b = start_gateway("a"), start_gateway("b")
        long = " ".join(f"w{i}" for i in range(200))  # 20 s at 100 ms a word
        status, first = await hook(http, a.url, {"message": long}, "crash-1")
        assert status == 202, first
        await asyncio.sleep(0.5)
        a.signal(signal.SIGKILL)
        assert await asyncio.to_thread(a.wait, 10) == -signal.SIGKILL
        status, again = await hook(http, b.url, {"message": long}, "crash-1")
        assert (status, again["runId"]) == (202, first["runId"])  # maybe still running
        async with asyncio.timeout(30):  # the lease, 15 s, runs out
            while again["runId"] == first["runId"]:
                await asyncio.sleep(1)
                status, again = await hook(http, b.url, {"message": long}, "crash-1")
                assert status == 202, again
        assert again["sessionKey"] != first["sessionKey"]
        # Once running there, the call is claimed again: a retry gets that run.
        status, third = await hook(http, b.url, {"message": long}, "crash-1")
        assert (status, third) == (202, again)

    async def test_runs_a_call_whose_run_the_drain_aborted(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        """A deploy's SIGTERM: the drain (5 s here) gives up on the run; a retry on the next
        process got that aborted run for 10 minutes, and the call was lost."""
        a, b = start_gateway("a"), start_gateway("b")
        long = " ".join(f"w{i}" for i in range(200))  # 20 s at 100 ms a word
        status, first = await hook(http, a.url, {"message": long}, "deploy-1")
        assert status == 202, first
        await asyncio.sleep(0.5)
        a.signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 20) == 0
        status, again = await hook(http, b.url, {"message": long}, "deploy-1")
        assert status == 202 and again["runId"] != first["runId"], again

    async def test_runs_a_call_whose_process_stopped_while_it_claimed_it(
        self,
        start_gateway: StartGateway,
        http: aiohttp.ClientSession,
        tmp_path: Path,
        database: str,
        pg_server: PgServer,
        pg_url: str,
    ) -> None:
        """The claim's COMMIT reached the database, its answer did not reach process a before
        a stopped (its handler cancelled): the claim was left behind, and a retry on b was
        told for the lease's 15 s that a run nobody started goes on elsewhere."""
        b = start_gateway("b")
        relay = ReplyRelay("127.0.0.1", pg_server.port, b"COMMIT", after=b"INSERT INTO hook_calls")
        started: list[GatewayProcess] = []
        try:
            config = json.loads(shared_config(relay.url(database), delay_ms=0))
            config["hooks"] = {"enabled": True, "token": HOOK_TOKEN}
            a = start_on_config(started, tmp_path, "a", json.dumps(config))
            first = asyncio.create_task(hook(http, a.url, {"message": "stopped"}, "stop-1"))
            await relay.wait_held()  # claimed in the database; a waits for the answer
            conn = await asyncpg.connect(pg_url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM hook_calls") == 1
            finally:
                await conn.close()
            a.signal(signal.SIGTERM)
            assert await asyncio.to_thread(a.wait, 30) == 0
            with contextlib.suppress(aiohttp.ClientError):
                await first
        finally:
            relay.close()
            for process in started:
                process.stop()
        body = {"message": "stopped", "waitForCompletion": True}
        status, again = await hook(http, b.url, body, "stop-1")
        assert status == 200, again
        assert again["completion"]["text"] == "[turn 1] stopped"

    async def test_runs_a_call_whose_claims_answer_was_lost(
        self,
        start_gateway: StartGateway,
        http: aiohttp.ClientSession,
        tmp_path: Path,
        database: str,
        pg_server: PgServer,
    ) -> None:
        """The claim's COMMIT reached the database, its answer was lost (the connection cut):
        a answered 503 and kept the claim, and a retry on b waited out the lease's 15 s for a
        run that never started."""
        b = start_gateway("b")
        relay = DroppingRelay(
            "127.0.0.1", pg_server.port, b"COMMIT", after=b"INSERT INTO hook_calls"
        )
        started: list[GatewayProcess] = []
        try:
            config = json.loads(shared_config(relay.url(database), delay_ms=0))
            config["hooks"] = {"enabled": True, "token": HOOK_TOKEN}
            a = start_on_config(started, tmp_path, "a", json.dumps(config))
            status, failed = await hook(http, a.url, {"message": "lost"}, "lost-1")
            assert status == 503, failed
            async with asyncio.timeout(10):  # not the lease's 15 s
                status, again = await hook(http, b.url, {"message": "lost"}, "lost-1")
            assert status == 202, again
        finally:
            relay.close()
            for process in started:
                process.stop()


class TestHookCallClaims:
    async def test_the_first_claim_wins_until_it_expires_or_is_released(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url) as one, PostgresSessionStore(pg_url) as two:
            assert await one.claim_hook_call("s", "r1", "k1", 60_000) == ("r1", "k1")
            assert await two.claim_hook_call("s", "r2", "k2", 60_000) == ("r1", "k1")
            await claim_kept_for(pg_url, "s", 0)
            assert await two.claim_hook_call("s", "r3", "k3", 60_000) == ("r3", "k3")
            await two.release_hook_call("s", "r1")  # not its claim any more: kept
            assert await one.claim_hook_call("s", "r4", "k4", 60_000) == ("r3", "k3")
            await two.release_hook_call("s", "r3")
            assert await one.claim_hook_call("s", "r5", "k5", 60_000) == ("r5", "k5")

    async def test_a_claim_extended_is_kept_until_then(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url) as one, PostgresSessionStore(pg_url) as two:
            assert await one.claim_hook_call("s", "r1", "k1", 1) == ("r1", "k1")
            assert await one.extend_hook_call("s", "r1", 600_000)
            # Not its claim: no change, and told so.
            assert not await one.extend_hook_call("s", "r-other", 1)
            assert await two.claim_hook_call("s", "r2", "k2", 60_000) == ("r1", "k1")
            await claim_kept_for(pg_url, "s", 0)
            assert await two.claim_hook_call("s", "r3", "k3", 60_000) == ("r3", "k3")
            # r1's claim is gone (forgotten once expired): its end and renewals are told so.
            assert not await one.extend_hook_call("s", "r1", 600_000)
            assert not await one.end_call("s", "r1", 600_000)
            assert await two.end_call("s", "r3", 600_000)
            assert not await two.extend_hook_call("s", "r3", 1)  # ended: keeps its own time
