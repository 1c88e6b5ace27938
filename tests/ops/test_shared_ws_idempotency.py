"""WebSocket `chat.send`/`agent` idempotency keys across processes that share one PostgreSQL
store: a client that reconnects to another process and sends the same key again gets the
first call's run, not a second run of its turn."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from agents.registry import wall_clock_ms
from agents.store_postgres import SQL_NOW_MS, PostgresSessionStore
from gateway.ws.claims import scope
from tests.support.http_client import fake_provider
from tests.support.pgserver import PgServer
from tests.support.process import GatewayProcess
from tests.support.process_client import connect_ws
from tests.support.shared_store import (
    HeldOpenAI,
    claim_kept_for,
    frames_until,
    shared_config,
    start_on_config,
)
from tests.support.statement_relay import CuttingRelay
from tests.support.turns import turn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

StartGateway = Callable[[str], GatewayProcess]
# A process's statement that marks a claim ended, waiting on a row lock.
SQL_CLAIM_END_WAITS = (
    "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE hook_calls SET ended%'"
)
LONG = " ".join(f"w{i}" for i in range(30))  # 3 s at 100 ms a word
_ids = itertools.count(1)


@pytest.fixture
def start_gateway(tmp_path: Path, database: str) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(name: str) -> GatewayProcess:
        return start_on_config(started, tmp_path, name, shared_config(database, delay_ms=100))

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def call(
    ws: aiohttp.ClientWebSocketResponse, method: str, params: dict[str, Any], answers: int = 1
) -> list[dict[str, Any]]:
    """The `answers` response frames of one request (events in between are passed over)."""
    request_id = str(next(_ids))
    await ws.send_json({"type": "req", "id": request_id, "method": method, "params": params})
    got: list[dict[str, Any]] = []
    while len(got) < answers:
        got.append((await frames_until(ws, lambda f: f.get("id") == request_id))[-1])
    return got


def send(key: str, text: str = LONG) -> dict[str, Any]:
    return {"sessionKey": "s1", "message": text, "idempotencyKey": key}


async def user_messages(pg_url: str, key: str) -> list[str]:
    """Of the session's turns, once its last one has ended."""
    async with PostgresSessionStore(pg_url) as store, asyncio.timeout(20):
        while (row := await store.get(key)) is None or row.last_status in (None, "running"):
            await asyncio.sleep(0.05)
        history = await store.history(row.session_id, 100)
        return [m.text for m in history.messages if m.role == "user"]


async def ended(ws: aiohttp.ClientWebSocketResponse, run_id: str) -> None:
    [answer] = await call(ws, "agent.wait", {"runId": run_id, "timeoutMs": 20_000})
    assert answer["payload"]["status"] == "ok", answer


class TestAChatSendRetryOnAnotherProcess:
    async def test_gets_the_first_run_in_flight_then_ok_and_no_second_run(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """`ok` once the run's end is reported: the process that ran it reports the end once
        its claim says so, however late that mark is (here it waits on a lock this test holds
        on the claim, and `agent.wait` there waits with it)."""
        settings = json.loads(shared_config(database, delay_ms=0))
        settings.update(fake_provider(held))
        started: list[GatewayProcess] = []
        try:
            a, b = (start_on_config(started, tmp_path, n, json.dumps(settings)) for n in "ab")
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            [first] = await call(on_a, "chat.send", send("idem-1", "hi"))
            assert first["payload"] == {"runId": "idem-1", "status": "started"}
            await held.wait_for_requests(1, within=15)
            [again] = await call(on_b, "chat.send", send("idem-1", "hi"))
            assert again["ok"] is True
            assert again["payload"] == {"runId": "idem-1", "status": "in_flight"}
            lock, watch = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
            try:
                async with lock.transaction():
                    claim = "SELECT 1 FROM hook_calls WHERE scope = $1 FOR UPDATE"
                    assert await lock.fetchval(claim, scope("idem-1")) == 1
                    held.go.set()
                    waited = asyncio.ensure_future(ended(on_a, "idem-1"))
                    async with asyncio.timeout(20):
                        while not await watch.fetchval(SQL_CLAIM_END_WAITS):
                            await asyncio.sleep(0.05)
                    assert not waited.done()
                await waited
                [late] = await call(on_b, "chat.send", send("idem-1", "hi"))
                assert late["payload"] == {"runId": "idem-1", "status": "ok"}
            finally:
                await lock.close()
                await watch.close()
            assert await user_messages(pg_url, "agent:main:s1") == ["hi"]
            assert len(held.requests) == 1
        finally:
            for process in started:
                process.stop()

    async def test_of_a_run_that_stored_nothing_agrees_with_its_end_told_elsewhere(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
    ) -> None:
        """A run aborted while queued stores no turn: only its claim, marked ended, tells
        another process that it ended. While that mark waits (on a lock this test holds on
        the claim), `agent.wait` on the process that ran it does not answer either; once it
        has answered, a retry on the other process is told `ok`, never `in_flight`."""
        settings = json.loads(shared_config(database, delay_ms=0))
        settings.update(fake_provider(held))
        started: list[GatewayProcess] = []
        watch = await asyncpg.connect(pg_url)
        lock = await asyncpg.connect(pg_url)
        try:
            a, b = (start_on_config(started, tmp_path, n, json.dumps(settings)) for n in "ab")
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            [first] = await call(on_a, "chat.send", send("idem-run", "hi"))
            assert first["payload"]["status"] == "started"
            await held.wait_for_requests(1, within=15)
            [queued] = await call(on_a, "chat.send", send("idem-q", "hi"))
            assert queued["payload"] == {"runId": "idem-q", "status": "started"}
            async with lock.transaction():
                claim = "SELECT 1 FROM hook_calls WHERE scope = $1 FOR UPDATE"
                assert await lock.fetchval(claim, scope("idem-q")) == 1
                [aborted] = await call(on_a, "chat.abort", {"sessionKey": "s1", "runId": "idem-q"})
                assert aborted["ok"] is True, aborted
                waited = asyncio.ensure_future(
                    call(on_a, "agent.wait", {"runId": "idem-q", "timeoutMs": 30_000})
                )
                async with asyncio.timeout(20):  # A's mark of the claim waits on the lock
                    while not await watch.fetchval(SQL_CLAIM_END_WAITS):
                        await asyncio.sleep(0.05)
                [meanwhile] = await call(on_b, "chat.send", send("idem-q", "hi"))
                told = (waited.done(), meanwhile["payload"]["status"])
                assert told in ((False, "in_flight"), (True, "ok")), told
            [[answer]] = await asyncio.gather(waited)
            assert answer["payload"]["status"] == "timeout"  # agent.wait's word for aborted
            [late] = await call(on_b, "chat.send", send("idem-q", "hi"))
            assert late["payload"] == {"runId": "idem-q", "status": "ok"}
            held.go.set()
            await ended(on_a, "idem-run")
            assert await user_messages(pg_url, "agent:main:s1") == ["hi"]
        finally:
            await watch.close()
            await lock.close()
            for process in started:
                process.stop()

    # The 5 minutes a key is remembered, and more; or by the clock of the process that stored
    # it, 10 minutes ahead of this one's: its turn's times say it is 4 minutes in the future.
    @pytest.mark.parametrize("stored_at", [-6 * 60_000, 4 * 60_000], ids=["ago", "ahead"])
    async def test_of_a_key_sent_again_once_forgotten_is_told_its_new_run_is_in_flight(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        held: HeldOpenAI,
        stored_at: int,
    ) -> None:
        """The session's last turn is of the same key, long ended (its claim gone): the run
        the key now names, held by the upstream, is still going, whatever the clock of the
        process that stored the old turn said."""
        ago = wall_clock_ms() + stored_at
        async with PostgresSessionStore(pg_url) as store:
            row, _ = await store.create("agent:main:s1", "main", ago - 10)
            old = turn(row, "idem-2", user_timestamp=ago - 5, assistant_timestamp=ago)
            await store.append_turn(old)
            last = await store.get("agent:main:s1")
            assert last is not None and last.last_run_id == "idem-2"
        settings = json.loads(shared_config(database, delay_ms=0))
        settings.update(fake_provider(held))
        started: list[GatewayProcess] = []
        try:
            a, b = (start_on_config(started, tmp_path, n, json.dumps(settings)) for n in "ab")
            on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
            [first] = await call(on_a, "chat.send", send("idem-2", "hi"))
            assert first["payload"] == {"runId": "idem-2", "status": "started"}
            await held.wait_for_requests(1, within=15)
            [again] = await call(on_b, "chat.send", send("idem-2", "hi"))
            assert again["payload"] == {"runId": "idem-2", "status": "in_flight"}
            held.go.set()
            await ended(on_a, "idem-2")
        finally:
            for process in started:
                process.stop()

    async def test_gets_the_first_run_after_its_session_was_archived(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        """As on one process: the archive refuses new work, not the answer to a retry."""
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        [first] = await call(on_a, "chat.send", send("arch-1", "short"))
        assert first["payload"]["status"] == "started"
        await ended(on_a, "arch-1")
        async with PostgresSessionStore(pg_url) as store:
            assert await store.set_archived("agent:main:s1", True, 1) is not None
        [again] = await call(on_b, "chat.send", send("arch-1", "short"))
        assert again["payload"] == {"runId": "arch-1", "status": "ok"}, again
        [refused] = await call(on_b, "chat.send", send("arch-2", "short"))
        assert refused["ok"] is False, refused

    async def test_16_sends_at_once_on_both_processes_start_one_run(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        sockets = [await connect_ws(http, (a.url, b.url)[i % 2]) for i in range(16)]
        answers = await asyncio.gather(*(call(ws, "chat.send", send("burst-1")) for ws in sockets))
        statuses = sorted(answer["payload"]["status"] for [answer] in answers)
        assert statuses == ["in_flight"] * 15 + ["started"], answers
        assert {answer["payload"]["runId"] for [answer] in answers} == {"burst-1"}
        assert await user_messages(pg_url, "agent:main:s1") == [LONG]


class TestARunsEnd:
    async def test_is_told_at_once_while_the_database_is_unreachable(
        self,
        tmp_path: Path,
        database: str,
        http: aiohttp.ClientSession,
        pg_url: str,
        pg_server: PgServer,
    ) -> None:
        """The run's commit found the database gone (its connection cut); the mark of its
        claim then waited for a database that did not answer (held here), and the run's end,
        its `chat` error, waited with it: up to 35 s of the write's timeouts after the run
        ended. The end is told now, the mark tried after."""
        relay = CuttingRelay(
            "127.0.0.1", pg_server.port, b"SET ended = TRUE", cut=b"INSERT INTO messages"
        )
        started: list[GatewayProcess] = []
        watch = await asyncpg.connect(pg_url)
        try:
            config = shared_config(relay.url(database), delay_ms=0)
            a = start_on_config(started, tmp_path, "a", config)
            on_a = await connect_ws(http, a.url)
            [first] = await call(on_a, "chat.send", send("idem-cut", "hi"))
            assert first["payload"] == {"runId": "idem-cut", "status": "started"}
            told = await frames_until(
                on_a,
                lambda f: f.get("event") == "chat" and f["payload"].get("state") == "error",
            )
            assert told[-1]["payload"]["runId"] == "idem-cut", told[-1]
            await relay.wait_held()  # the claim's mark: sent, not answered
            claim = "SELECT ended FROM hook_calls WHERE scope = $1"
            assert await watch.fetchval(claim, scope("idem-cut")) is False
            relay.release()
            async with asyncio.timeout(20):
                while not await watch.fetchval(claim, scope("idem-cut")):
                    await asyncio.sleep(0.05)
        finally:
            relay.close()
            await watch.close()
            for process in started:
                process.stop()


class TestAnAgentRetryOnAnotherProcess:
    async def test_is_told_another_process_runs_it_and_no_second_run(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        params = {"message": LONG, "sessionKey": "s1", "idempotencyKey": "agent-1"}
        await on_a.send_json({"type": "req", "id": "first", "method": "agent", "params": params})
        await frames_until(on_a, lambda f: f.get("id") == "first")  # accepted
        [again] = await call(on_b, "agent", params)
        assert again["ok"] is False
        assert again["error"]["code"] == "UNAVAILABLE"
        assert again["error"]["message"] == (
            "run agent-1 of this idempotency key was started by another gateway process, which"
            " this one cannot wait on; agent.wait names it, and its reply goes to the history"
            " of session agent:main:s1"
        )
        assert again["error"]["details"] == {
            "runId": "agent-1",
            "sessionKey": "agent:main:s1",
            "status": "in_flight",
        }
        final = (await frames_until(on_a, lambda f: f.get("id") == "first"))[-1]
        assert final["payload"]["status"] == "ok"
        [late] = await call(on_b, "agent", params)
        assert late["error"]["details"]["status"] == "ok"
        assert late["error"]["message"].startswith("run agent-1 of this idempotency key was run")
        assert await user_messages(pg_url, "agent:main:s1") == [LONG]

    async def test_is_told_of_the_first_run_after_its_session_was_archived(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        params = {"message": "short", "sessionKey": "s1", "idempotencyKey": "agent-arch"}
        [_, final] = await call(on_a, "agent", params, answers=2)
        assert final["payload"]["status"] == "ok", final
        async with PostgresSessionStore(pg_url) as store:
            assert await store.set_archived("agent:main:s1", True, 1) is not None
        [again] = await call(on_b, "agent", params)
        assert again["error"]["details"]["status"] == "ok", again
        [refused] = await call(on_b, "agent", {**params, "idempotencyKey": "agent-arch-2"})
        assert "archived" in refused["error"]["message"], refused

    async def test_a_retry_on_the_same_process_still_gets_both_answers(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, _ = start_gateway("a"), start_gateway("b")
        one, two = await connect_ws(http, a.url), await connect_ws(http, a.url)
        params = {"message": "short", "sessionKey": "s1", "idempotencyKey": "agent-2"}
        first, again = await asyncio.gather(
            call(one, "agent", params, answers=2), call(two, "agent", params, answers=2)
        )
        for answers in (first, again):
            assert [f["payload"]["status"] for f in answers] == ["accepted", "ok"], answers
        assert first[1]["payload"]["result"] == again[1]["payload"]["result"]


async def session_id(ws: aiohttp.ClientWebSocketResponse) -> str:
    [answer] = await call(ws, "sessions.describe", {"key": "agent:main:s1"})
    return str(answer["payload"]["session"]["sessionId"])


class TestAResetRetryOnAnotherProcess:
    async def test_a_bare_new_is_answered_again_without_a_second_reset(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        params = {"message": "/new", "sessionKey": "s1", "idempotencyKey": "new-1"}
        [first] = await call(on_a, "agent", params)
        assert first["payload"]["status"] == "ok", first
        reset_to = first["payload"]["result"]["meta"]["agentMeta"]["sessionId"]
        [again] = await call(on_b, "agent", params)
        assert again["payload"] == first["payload"]
        assert await session_id(on_b) == reset_to
        [waited] = await call(on_b, "agent.wait", {"runId": "new-1", "timeoutMs": 20_000})
        assert waited["payload"]["status"] == "ok", waited

    async def test_agent_wait_for_a_bare_new_answers_ok_without_a_retry_there(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        params = {"message": "/new", "sessionKey": "s1", "idempotencyKey": "new-2"}
        [first] = await call(on_a, "agent", params)
        assert first["payload"]["status"] == "ok", first
        [here] = await call(on_a, "agent.wait", {"runId": "new-2", "timeoutMs": 20_000})
        [there] = await call(on_b, "agent.wait", {"runId": "new-2", "timeoutMs": 5_000})
        assert there["payload"] == here["payload"]
        assert there["payload"]["status"] == "ok", there

    async def test_a_reset_with_text_resets_once_and_runs_its_turn_once(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        params = {"message": f"/reset {LONG}", "sessionKey": "s1", "idempotencyKey": "reset-1"}
        await on_a.send_json({"type": "req", "id": "first", "method": "agent", "params": params})
        await frames_until(on_a, lambda f: f.get("id") == "first")  # accepted
        reset_to = await session_id(on_a)
        [again] = await call(on_b, "agent", params)
        assert again["error"]["details"]["status"] == "in_flight", again
        assert await session_id(on_b) == reset_to
        final = (await frames_until(on_a, lambda f: f.get("id") == "first"))[-1]
        assert final["payload"]["status"] == "ok", final
        assert await user_messages(pg_url, "agent:main:s1") == [LONG]


class TestAKeyOfAnyCharacters:
    async def test_is_claimed_across_processes_like_any_other(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        """A NUL, which PostgreSQL's text refuses: the claim is a hash. (A lone surrogate,
        which it refuses too, is no key: a params error before any claim, README.)"""
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        key = "k\u0000\u202e" + "x" * 240
        [first] = await call(on_a, "chat.send", send(key))
        assert first["payload"]["status"] == "started"
        [again] = await call(on_b, "chat.send", send(key))
        assert again["payload"] == {**first["payload"], "status": "in_flight"}
        await ended(on_a, key)
        assert await user_messages(pg_url, "agent:main:s1") == [LONG]


class TestARetryAfterTheProcessDied:
    async def test_runs_the_turn_once_the_claims_lease_is_out(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        """A process killed with its run (OOM, SIGKILL) never ends it: its claim must not
        answer every retry with `in_flight` for as long as a key is remembered."""
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        slow = " ".join(f"w{i}" for i in range(300))  # 30 s
        [first] = await call(on_a, "chat.send", send("crash-1", slow))
        assert first["payload"]["status"] == "started"
        await asyncio.sleep(0.5)
        a.signal(signal.SIGKILL)
        assert await asyncio.to_thread(a.wait, 10) == -signal.SIGKILL
        async with asyncio.timeout(30):  # the lease, 15 s, runs out
            while True:
                [again] = await call(on_b, "chat.send", send("crash-1", slow))
                if again["payload"]["status"] != "in_flight":
                    break
                await asyncio.sleep(1)
        assert again["payload"] == {"runId": "crash-1", "status": "started"}
        [third] = await call(on_b, "chat.send", send("crash-1", slow))
        assert third["payload"] == {"runId": "crash-1", "status": "in_flight"}

    async def test_runs_a_turn_whose_run_the_drain_aborted(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        """A deploy's SIGTERM: the drain (5 s here) gives up on the run; a retry on the next
        process must run the turn rather than be told it is in flight for 5 minutes."""
        a, b = start_gateway("a"), start_gateway("b")
        on_a, on_b = await connect_ws(http, a.url), await connect_ws(http, b.url)
        slow = " ".join(f"w{i}" for i in range(200))  # 20 s
        [first] = await call(on_a, "chat.send", send("deploy-1", slow))
        assert first["payload"]["status"] == "started"
        await asyncio.sleep(0.5)
        a.signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 20) == 0
        [again] = await call(on_b, "chat.send", send("deploy-1", slow))
        assert again["payload"] == {"runId": "deploy-1", "status": "started"}


class TestCallClaims:
    async def test_the_first_claim_wins_and_says_when_its_run_ended(self, pg_url: str) -> None:
        async with PostgresSessionStore(pg_url) as one, PostgresSessionStore(pg_url) as two:
            assert await one.claim_call("ws:x", "t1", "k1", 60_000) == ("t1", "k1", False)
            assert await two.claim_call("ws:x", "t2", "k2", 60_000) == ("t1", "k1", False)
            await two.end_call("ws:x", "t2", 1)  # not its claim: no change
            assert await two.claim_call("ws:x", "t2", "k2", 60_000) == ("t1", "k1", False)
            await one.end_call("ws:x", "t1", 300_000)
            await one.extend_hook_call("ws:x", "t1", 1)  # a late renewal: the end's time stays
            assert await two.claim_call("ws:x", "t2", "k2", 60_000) == ("t1", "k1", True)
            await claim_kept_for(pg_url, "ws:x", -1)
            assert await two.claim_call("ws:x", "t3", "k3", 60_000) == ("t3", "k3", False)

    async def test_one_starting_is_waited_for_until_its_run_started_or_it_is_gone(
        self, pg_url: str
    ) -> None:
        """A claim made before its run is submitted: a retry was told of that run at once,
        and its call was then refused (its claim released), so no run ever started."""
        async with PostgresSessionStore(pg_url) as one, PostgresSessionStore(pg_url) as two:
            started = await one.claim_call("ws:s", "t1", "k1", 60_000, starting=True)
            assert started == ("t1", "k1", False)
            waiting = asyncio.ensure_future(two.claim_call("ws:s", "t2", "k2", 60_000))
            await asyncio.wait({waiting}, timeout=0.5)
            assert not waiting.done()
            assert await one.extend_hook_call("ws:s", "t1", 60_000)  # the run was submitted
            assert await waiting == ("t1", "k1", False)
            refused = await one.claim_call("ws:r", "t1", "k1", 60_000, starting=True)
            assert refused == ("t1", "k1", False)
            waiting = asyncio.ensure_future(two.claim_call("ws:r", "t2", "k2", 60_000))
            await asyncio.wait({waiting}, timeout=0.5)
            assert not waiting.done()
            await one.release_hook_call("ws:r", "t1")  # the call was refused
            assert await waiting == ("t2", "k2", False)

    async def test_a_claims_lease_is_measured_by_the_databases_clock(self, pg_url: str) -> None:
        """Not by the clocks of the processes, which differ: one whose clock ran a minute
        ahead of another's took the other's claim while its run went on (its lease of 15 s
        long out by that clock), and ran the key's turn a second time."""
        async with PostgresSessionStore(pg_url) as one, PostgresSessionStore(pg_url) as two:
            conn = await asyncpg.connect(pg_url)
            try:
                before = await conn.fetchval(f"SELECT {SQL_NOW_MS}")
                assert await one.claim_call("ws:y", "t1", "k1", 15_000) == ("t1", "k1", False)
                after = await conn.fetchval(f"SELECT {SQL_NOW_MS}")
                expires = "SELECT expires_at FROM hook_calls WHERE scope = $1"
                assert before + 15_000 <= await conn.fetchval(expires, "ws:y") <= after + 15_000
            finally:
                await conn.close()
            await claim_kept_for(pg_url, "ws:y", 1_000)  # a second of its lease left
            assert await two.claim_call("ws:y", "t2", "k2", 15_000) == ("t1", "k1", False)
            await claim_kept_for(pg_url, "ws:y", 0)
            assert await two.claim_call("ws:y", "t3", "k3", 15_000) == ("t3", "k3", False)
