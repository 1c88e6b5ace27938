"""Two real `clawgate run` processes sharing one PostgreSQL database (store.backend postgres).

A session's turns stay serial whichever process takes them, every transcript is whole and in
order, and a process killed mid-turn loses no committed turn and leaves no session locked.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from agents.store_postgres import LOCK_CLASS_TURN, PostgresSessionStore
from tests.support.held_relay import held_relay
from tests.support.pgserver import PASSWORD, PgServer
from tests.support.process import GatewayProcess, clean_env, run_cli
from tests.support.process_client import TOKEN, auth, connect_ws
from tests.support.shared_store import chat, frames_until, shared_config, start_on_config, streaming

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SESSIONS = 20
TURNS = 200


StartGateway = Callable[..., GatewayProcess]
CONNECT = {
    "minProtocol": 4,
    "maxProtocol": 4,
    "client": {"id": "test", "version": "1", "platform": "linux", "mode": "cli"},
    "auth": {"token": TOKEN},
}


@pytest.fixture
def start_gateway(tmp_path: Path, database: str) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(name: str, delay_ms: int = 5, max_concurrent: int = 4) -> GatewayProcess:
        config = shared_config(database, delay_ms, max_concurrent)
        return start_on_config(started, tmp_path, name, config)

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def transcripts(pg_url: str) -> dict[str, list[tuple[str, str]]]:
    """Every session's current transcript as (role, text) pairs, read from the database."""
    async with PostgresSessionStore(pg_url) as store:
        page = await store.list(limit=1000)
        found = {}
        for row in page.rows:
            history = await store.history(row.session_id, 10_000)
            found[row.key] = [(m.role, m.text) for m in history.messages]
        return found


class TestTwoProcesses:
    async def test_200_concurrent_turns_on_20_sessions_leave_every_transcript_whole_and_ordered(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        urls = (a.url, b.url)
        await asyncio.gather(
            *(
                # Each session's turns alternate between the two processes.
                chat(http, urls[(i // SESSIONS) % 2], f"s{i % SESSIONS}", f"m{i}")
                for i in range(TURNS)
            )
        )
        found = await transcripts(pg_url)
        assert len(found) == SESSIONS
        per_session = TURNS // SESSIONS
        for key, messages in found.items():
            session = int(key.rsplit(":s", 1)[1])
            users = [text for role, text in messages if role == "user"]
            assert sorted(users) == sorted(f"m{i}" for i in range(session, TURNS, SESSIONS))
            # Each reply answers the message before it, and counts every earlier turn: no turn
            # ran beside another of its session, none is missing from the history it was given.
            assert messages == [
                pair
                for n, text in enumerate(users, 1)
                for pair in (("user", text), ("assistant", f"[turn {n}] {text}"))
            ], key
            assert len(users) == per_session

    async def test_a_turn_waiting_for_the_other_process_holds_no_run_slot(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a = start_gateway("a", delay_ms=200)
        b = start_gateway("b", max_concurrent=1)
        first = await streaming(http, a.url, 40, "k")  # 8 s at 200 ms a word
        after = asyncio.create_task(chat(http, b.url, "k", "after"))
        await asyncio.sleep(0.3)  # b's turn of k waits for a's
        async with asyncio.timeout(4):  # b's only run slot is free: not after a's 8 s
            meanwhile = await chat(http, b.url, "j", "meanwhile")
        assert meanwhile["choices"][0]["message"]["content"] == "[turn 1] meanwhile"
        assert not after.done()
        await first.read()
        async with asyncio.timeout(10):
            answer = await after
        assert answer["choices"][0]["message"]["content"] == "[turn 2] after"

    async def test_a_process_killed_mid_turn_loses_no_committed_turn_and_locks_nothing(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a", delay_ms=200), start_gateway("b", delay_ms=0)
        await chat(http, a.url, "k", "committed")
        # 20 s at 200 ms a word; a's turn holds the session's lock from now on.
        response = await streaming(http, a.url, 100, "k")
        a.signal(signal.SIGKILL)
        assert await asyncio.to_thread(a.wait, 10) == -signal.SIGKILL
        response.close()
        body = await asyncio.wait_for(chat(http, b.url, "k", "after"), 10)
        assert body["choices"][0]["message"]["content"] == "[turn 2] after"
        assert (await transcripts(pg_url))["agent:main:k"] == [
            ("user", "committed"),
            ("assistant", "[turn 1] committed"),
            ("user", "after"),
            ("assistant", "[turn 2] after"),
        ]


class TestEventsAcrossProcesses:
    async def test_a_websocket_client_on_one_sees_the_runs_and_session_changes_of_the_other(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        ws = await connect_ws(http, b.url)
        await asyncio.sleep(0.5)  # b's LISTEN is up before its first client connects
        await chat(http, a.url, "k", "hello there")
        awaited = {"chat final", "session end"}

        def both(frame: dict[str, Any]) -> bool:
            payload = frame.get("payload") or {}
            if frame.get("event") == "chat" and payload["state"] == "final":
                awaited.discard("chat final")
            if frame.get("event") == "sessions.changed" and payload.get("phase") == "end":
                awaited.discard("session end")
            return not awaited

        frames = await frames_until(ws, both)
        agent = [f["payload"] for f in frames if f.get("event") == "agent"]
        assert {e["sessionKey"] for e in agent} == {"agent:main:k"}
        assert [e["data"]["phase"] for e in agent if e["stream"] == "lifecycle"] == [
            "start",
            "model",
            "end",
        ]
        assert [e["seq"] for e in agent] == list(range(1, len(agent) + 1))
        [final] = [
            f["payload"]
            for f in frames
            if f.get("event") == "chat" and f["payload"]["state"] == "final"
        ]
        assert final["message"]["content"] == [{"type": "text", "text": "[turn 1] hello there"}]
        changes = [f["payload"] for f in frames if f.get("event") == "sessions.changed"]
        assert [(c.get("reason"), c.get("phase")) for c in changes] == [
            ("create", None),
            (None, "start"),
            (None, "end"),
        ]
        assert {c["sessionKey"] for c in changes} == {"agent:main:k"}
        assert changes[-1]["session"]["totalTokens"] > 0
        await ws.close()

    async def test_chat_abort_on_one_stops_a_run_on_the_other(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a", delay_ms=200), start_gateway("b")
        response = await streaming(http, a.url, 100, "k")  # 20 s at 200 ms a word
        ws = await connect_ws(http, b.url)
        params = {"sessionKey": "k"}
        await ws.send_json({"type": "req", "id": "2", "method": "chat.abort", "params": params})
        [answer] = [
            f for f in await frames_until(ws, lambda f: f.get("id") == "2") if f.get("id") == "2"
        ]
        assert answer["ok"] is True
        assert answer["payload"]["aborted"] is True
        assert len(answer["payload"]["runIds"]) == 1
        async with asyncio.timeout(5):
            await response.read()  # the stream ends now, not in 20 s
        [_, reply] = (await transcripts(pg_url))["agent:main:k"]
        assert reply[0] == "assistant" and len(reply[1].split()) < 50
        await ws.close()

    async def test_a_stop_command_on_one_stops_a_run_on_the_other(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a", delay_ms=200), start_gateway("b")
        response = await streaming(http, a.url, 100, "k")  # 20 s at 200 ms a word
        ws = await connect_ws(http, b.url)
        params = {"sessionKey": "k", "message": "/stop", "idempotencyKey": "stop-1"}
        await ws.send_json({"type": "req", "id": "2", "method": "chat.send", "params": params})
        answer = (await frames_until(ws, lambda f: f.get("id") == "2"))[-1]
        assert answer["payload"]["aborted"] is True, answer
        assert len(answer["payload"]["runIds"]) == 1
        async with asyncio.timeout(5):
            await response.read()  # the stream ends now, not in 20 s
        await ws.close()

    async def test_a_stateless_turn_takes_no_lock_and_chat_abort_on_the_other_still_stops_it(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        a, b = start_gateway("a", delay_ms=200), start_gateway("b")
        ws = await connect_ws(http, b.url)
        await asyncio.sleep(0.5)  # b's LISTEN is up: it hears of a's run from its start
        response = await streaming(http, a.url, 100)  # no key: a mints one; 20 s
        key = response.headers["x-openclaw-session-key"]
        conn = await asyncpg.connect(pg_url)
        try:
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1",
                LOCK_CLASS_TURN,
            )
        finally:
            await conn.close()
        assert held == 0
        params = {"sessionKey": key}
        await ws.send_json({"type": "req", "id": "2", "method": "chat.abort", "params": params})
        [answer] = [
            f for f in await frames_until(ws, lambda f: f.get("id") == "2") if f.get("id") == "2"
        ]
        assert answer["payload"]["aborted"] is True
        async with asyncio.timeout(5):
            await response.read()  # the stream ends now, not in 20 s
        await ws.close()

    async def test_a_minted_key_sent_to_the_other_process_mid_turn_fails_nothing(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_url: str
    ) -> None:
        # The one cost of the lock-free stateless turn: both turns run, both answer.
        a, b = start_gateway("a", delay_ms=100), start_gateway("b")
        first = await streaming(http, a.url, 30)  # 3 s: b's turn starts well within it
        key = first.headers["x-openclaw-session-key"]
        second = await http.post(
            f"{b.url}/v1/chat/completions",
            headers={**auth(), "x-openclaw-session-key": key},
            json={"model": "openclaw", "messages": [{"role": "user", "content": "again"}]},
        )
        assert second.status == 200
        assert (await second.json())["choices"][0]["message"]["content"] == "[turn 1] again"
        async with asyncio.timeout(10):
            body = await first.text()
        assert first.status == 200 and body.endswith("data: [DONE]\n\n")
        assert (await transcripts(pg_url))[key] == [
            ("user", "again"),
            ("assistant", "[turn 1] again"),
        ]

    @pytest.mark.parametrize("method", ["sessions.reset", "sessions.delete"])
    async def test_reset_or_delete_on_one_stops_a_run_on_the_other_before_it_acts(
        self,
        start_gateway: StartGateway,
        http: aiohttp.ClientSession,
        pg_url: str,
        method: str,
    ) -> None:
        """The aborted turn commits before the reset or delete, as on one process: it must
        not finish later and write into the fresh (or deleted) session."""
        a, b = start_gateway("a", delay_ms=200), start_gateway("b")
        await chat(http, a.url, "k", "first")
        response = await streaming(http, a.url, 100, "k")  # 20 s at 200 ms a word
        ws = await connect_ws(http, b.url)
        await ws.send_json({"type": "req", "id": "2", "method": method, "params": {"key": "k"}})
        [answer] = [
            f for f in await frames_until(ws, lambda f: f.get("id") == "2") if f.get("id") == "2"
        ]
        assert answer["ok"] is True, answer
        async with asyncio.timeout(5):
            await response.read()  # the stream ends now, not in 20 s
        await asyncio.sleep(0.5)  # time for a late commit, were there one
        async with PostgresSessionStore(pg_url) as store:
            row = await store.get("agent:main:k")
            if method == "sessions.delete":
                assert row is None
            else:
                assert row is not None
                assert row.session_id == answer["payload"]["entry"]["sessionId"]
                assert (row.input_tokens, row.last_run_id) == (0, None)
                assert (await store.history(row.session_id, 10)).total == 0
        await ws.close()

    async def test_agent_wait_on_one_waits_for_a_run_on_the_other(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        a, b = start_gateway("a", delay_ms=200), start_gateway("b")
        waiter = await connect_ws(http, b.url)
        await asyncio.sleep(0.5)  # b's LISTEN is up: it hears of a's run from its start
        sender = await connect_ws(http, a.url)
        text = " ".join(f"w{i}" for i in range(10))  # 2 s at 200 ms a word
        params = {"sessionKey": "k", "message": text, "idempotencyKey": "remote-1"}
        await sender.send_json({"type": "req", "id": "1", "method": "chat.send", "params": params})
        await frames_until(sender, lambda f: f.get("id") == "1")
        await frames_until(waiter, lambda f: f.get("event") == "agent")  # it is running
        wait = {"runId": "remote-1", "timeoutMs": 15_000}
        await waiter.send_json({"type": "req", "id": "2", "method": "agent.wait", "params": wait})
        answer = (await frames_until(waiter, lambda f: f.get("id") == "2"))[-1]
        assert list(answer["payload"]) == ["runId", "status", "startedAt", "endedAt"]
        assert answer["payload"]["status"] == "ok"
        for ws in (waiter, sender):
            await ws.close()

    async def test_chat_abort_of_an_idle_session_answers_at_once(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        start_gateway("a")
        b = start_gateway("b")
        ws = await connect_ws(http, b.url)
        params = {"sessionKey": "idle"}
        async with asyncio.timeout(1):
            await ws.send_json({"type": "req", "id": "2", "method": "chat.abort", "params": params})
            frames = await frames_until(ws, lambda f: f.get("id") == "2")
        assert frames[-1]["payload"] == {"ok": True, "aborted": False, "runIds": []}
        await ws.close()

    async def test_health_names_the_process_and_the_database_it_describes(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, database: str
    ) -> None:
        a, b = start_gateway("a"), start_gateway("b")
        for process in (a, b):
            ws = await connect_ws(http, process.url)
            await ws.send_json({"type": "req", "id": "h", "method": "health", "params": {}})
            frames = await frames_until(ws, lambda f: f.get("id") == "h")
            payload = frames[-1]["payload"]
            assert payload["process"]["pid"] == process.proc.pid
            # Where the sessions live: the database, without the user the URL names.
            host_and_db = database.split("@", 1)[1]
            assert payload["agents"][0]["sessions"]["path"] == f"postgresql://{host_and_db}"
            await ws.close()


class TestFaults:
    async def test_postgresql_restarted_under_load_gives_503s_then_serves_again(
        self,
        start_gateway: StartGateway,
        http: aiohttp.ClientSession,
        pg_server: PgServer,
        pg_url: str,
    ) -> None:
        a = start_gateway("a")
        failures: list[tuple[int, dict[str, Any], str | None]] = []
        successes = 0
        restarted = asyncio.Event()
        after_restart = 0

        async def client(n: int) -> None:
            nonlocal successes, after_restart
            turn = 0
            while not restarted.is_set() or after_restart < 20:
                turn += 1
                response = await http.post(
                    f"{a.url}/v1/chat/completions",
                    headers={**auth(), "x-openclaw-session-key": f"load{n}"},
                    json={"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]},
                )
                body = await response.json()
                # The gateway's log lines (tracebacks of the failed turns among them) must
                # not fill the stderr pipe: a gateway blocked writing its log serves no one.
                a.read_available()
                if response.status == 200:
                    successes += 1
                    after_restart += restarted.is_set()
                else:
                    failures.append((response.status, body, response.headers.get("Retry-After")))
                    await asyncio.sleep(0.05)

        clients = [asyncio.create_task(client(n)) for n in range(5)]
        await asyncio.sleep(1)
        await asyncio.to_thread(pg_server.restart)
        restarted.set()
        async with asyncio.timeout(30):  # the pool reconnects by itself
            await asyncio.gather(*clients)
        assert failures, "no request met the restart"
        for status, body, retry_after in failures:
            assert (status, retry_after) == (503, "1"), [  # the gateway's word on it
                event for event in a.events() if event.get("level") == "error"
            ][-3:]
            assert body == {
                "error": {
                    "message": "session store unavailable",
                    "type": "api_error",
                    "param": None,
                    "code": None,
                }
            }
        # Nothing half-written: every stored user message has its reply after it.
        for key, messages in (await transcripts(pg_url)).items():
            roles = [role for role, _ in messages]
            assert roles == ["user", "assistant"] * (len(roles) // 2), key

    async def test_a_websocket_connect_while_the_database_is_down_is_answered_unavailable(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_server: PgServer
    ) -> None:
        a = start_gateway("a")
        with pg_server.stopped():
            ws = await http.ws_connect(a.url.replace("http", "ws", 1))
            assert (await ws.receive_json(timeout=5))["event"] == "connect.challenge"
            await ws.send_json({"type": "req", "id": "1", "method": "connect", "params": CONNECT})
            assert await ws.receive_json(timeout=10) == {
                "type": "res",
                "id": "1",
                "ok": False,
                "error": {"code": "UNAVAILABLE", "message": "internal error"},
            }
            closed = await ws.receive(timeout=5)
            assert (closed.type, closed.data, closed.extra) == (
                aiohttp.WSMsgType.CLOSE,
                1011,
                "internal error",
            )
        async with asyncio.timeout(20):  # the pool reconnects by itself
            while True:
                try:
                    ws = await connect_ws(http, a.url)
                    break
                except AssertionError:
                    await asyncio.sleep(0.2)
        await ws.close()
        assert not [e for e in a.events() if e.get("logger") == "aiohttp.server"]

    async def test_a_gateway_whose_database_stopped_answering_still_stops_on_sigterm(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_server: PgServer
    ) -> None:
        a = start_gateway("a")
        await chat(http, a.url, "s1", "hi")  # the pools hold connections
        with pg_server.frozen():
            a.signal(signal.SIGTERM)
            assert await asyncio.to_thread(a.wait, 20) == 0

    async def test_a_gateway_whose_database_stopped_answering_mid_turn_stops_on_sigterm(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession, pg_server: PgServer
    ) -> None:
        a = start_gateway("a", delay_ms=50)
        await chat(http, a.url, "s1", "hi")
        response = await streaming(http, a.url, 2000, key="s1")  # 100 s of words
        with pg_server.frozen():
            a.signal(signal.SIGTERM)
            # The drain (5 s), the aborted turn's commit (5 s), the handlers (5 s), the
            # registry's grace (10 s), then the cancelled turn and the pools' goodbyes (10 s).
            assert await asyncio.to_thread(a.wait, 45) == 0
        response.close()

    @pytest.mark.parametrize("answered", [1, 2])
    def test_a_database_that_stops_answering_while_run_opens_stops_it_with_1_saying_so(
        self, tmp_path: Path, pg_server: PgServer, pg_url: str, answered: int
    ) -> None:
        """The first connections are answered, a later one not (the server hung meanwhile):
        the store's pool (after the version probe), or the event bus's listener (after the
        pool's). The bus's said a traceback and nothing of where."""
        with held_relay("127.0.0.1", pg_server.port, pass_first=answered) as relay:
            url = pg_url.replace(f":{pg_server.port}/", f":{relay.listen_port}/")
            config = tmp_path / "clawgate.json5"
            config.write_text(json.dumps({"store": {"backend": "postgres", "url": url}}))
            args = ["run", "--config", str(config), "--state-dir", str(tmp_path / "s")]
            result = run_cli([*args, "--port", "0"], clean_env(tmp_path / "home"))
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert PASSWORD not in result.stderr
        assert (
            "cannot open the session store: TimeoutError: the database at"
            f" 127.0.0.1:{relay.listen_port} did not answer within 5 s"
        ) in result.stderr.splitlines()

    def test_a_password_the_server_refuses_stops_run_with_1_saying_so_without_it(
        self, tmp_path: Path, database: str
    ) -> None:
        config = tmp_path / "clawgate.json5"
        config.write_text(shared_config(database, 0))
        args = ["run", "--config", str(config), "--state-dir", str(tmp_path / "s"), "--port", "0"]
        env = clean_env(tmp_path / "home", {"CLAWGATE_DB_PASSWORD": "not-the-password-4d1c"})
        result = run_cli(args, env)
        assert result.returncode == 1
        assert "gateway_listening" not in result.stderr
        assert "not-the-password-4d1c" not in result.stderr
        assert (
            "cannot open the session store: InvalidPasswordError: password authentication"
            ' failed for user "clawgate"'
        ) in result.stderr.splitlines()
