"""A real `clawgate run` process: graceful drain, second signal, hot reload, log lines."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.held_relay import held_relay
from tests.support.http_client import fake_provider
from tests.support.pgserver import PgServer
from tests.support.process import GatewayProcess, clean_env
from tests.support.process_client import TOKEN, auth, connect_ws, first_content
from tests.support.slow_dns import SLOW_RES_OPTIONS, silent_dns
from tests.support.upstreams import FakeOpenAI, Stream


def config_text(token: str = TOKEN, drain: int = 10, delay_ms: int = 100) -> str:
    return json.dumps(
        {
            "gateway": {
                # Exempt: the reload test polls with the new token until the reload, and
                # those failures must not lock loopback out (the exemption is off by default).
                "auth": {"mode": "token", "token": token, "rateLimit": {"exemptLoopback": True}},
                "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
                "shutdown": {"drainSeconds": drain},
                "reload": {"debounceMs": 50},
            },
            "agents": {"list": [{"id": "main", "params": {"delayMs": delay_ms}}]},
        }
    )


def read_until(fd: int, wanted: bytes) -> bytes:
    """What a terminal showed until `wanted`; a gateway that exits first fails it."""
    shown = b""
    while wanted not in shown:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the gateway closed the terminal
            chunk = b""
        assert chunk, shown
        shown += chunk
    return shown


def edit(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()  # a distinct mtime even within the filesystem's granularity
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "clawgate.json5"
    path.write_text(config_text())
    return path


StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(tmp_path: Path, config_file: Path) -> Iterator[StartGateway]:
    """Start `clawgate run` on `config_file` (rewritten first when `text` is given)."""
    started: list[GatewayProcess] = []

    def start(text: str | None = None) -> GatewayProcess:
        if text is not None:
            config_file.write_text(text)
        args = ["--config", str(config_file), "--state-dir", str(tmp_path / "state")]
        process = GatewayProcess([*args, "--port", "0"], clean_env(tmp_path / "home"))
        started.append(process)
        process.wait_listening()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def gateway(start_gateway: StartGateway) -> GatewayProcess:
    return start_gateway()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def open_stream(
    http: aiohttp.ClientSession, url: str, text: str, key: str = "drain"
) -> aiohttp.ClientResponse:
    response = await http.post(
        f"{url}/v1/chat/completions",
        headers={**auth(), "x-openclaw-session-key": key},
        json={"model": "openclaw", "stream": True, "messages": [{"role": "user", "content": text}]},
    )
    assert response.status == 200
    return response


async def read_events(response: aiohttp.ClientResponse) -> list[Any]:
    """Every `data:` payload until the body ends ([DONE] as the string)."""
    body = (await response.read()).decode()
    events: list[Any] = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def wait_exit(gateway: GatewayProcess, timeout: float) -> int:
    return await asyncio.to_thread(gateway.wait, timeout)


class TestGracefulShutdown:
    async def test_a_turn_in_flight_finishes_within_the_drain_time_and_exit_is_0(
        self, gateway: GatewayProcess, http: aiohttp.ClientSession
    ) -> None:
        words = " ".join(f"w{i}" for i in range(15))  # ~1.7 s at 100 ms per delta
        response = await open_stream(http, gateway.url, words)
        await first_content(response)
        gateway.signal(signal.SIGTERM)
        events = await read_events(response)
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "stop"
        assert not any("error" in e for e in events[:-1] if isinstance(e, dict))
        assert await wait_exit(gateway, 10) == 0

    async def test_a_turn_longer_than_the_drain_ends_with_an_in_band_error_and_exit_is_0(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        gateway = start_gateway(config_text(drain=1, delay_ms=300))
        response = await open_stream(http, gateway.url, " ".join(["word"] * 40))  # ~12 s
        await first_content(response)
        began = time.monotonic()
        gateway.signal(signal.SIGTERM)
        events = await read_events(response)
        assert events[-2:] == [
            {
                "error": {
                    "message": "gateway is shutting down",
                    "type": "api_error",
                    "param": None,
                    "code": None,
                }
            },
            "[DONE]",
        ]
        assert await wait_exit(gateway, 10) == 0
        assert time.monotonic() - began < 5
        assert any(e["event"] == "drain_timeout" for e in gateway.events())

    async def test_websocket_clients_get_shutdown_then_close_1012(
        self, gateway: GatewayProcess, http: aiohttp.ClientSession
    ) -> None:
        ws = await connect_ws(http, gateway.url)
        gateway.signal(signal.SIGTERM)
        frames = []
        while True:
            message = await ws.receive(timeout=10)
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            frames.append(json.loads(message.data))
        shutdown = [f for f in frames if f.get("event") == "shutdown"]
        assert shutdown and shutdown[0]["payload"] == {
            "reason": "gateway stopping",
            "restartExpectedMs": None,
        }
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (1012, "service restart")
        await ws.close()
        assert await wait_exit(gateway, 10) == 0

    async def test_a_second_signal_exits_at_once_with_1(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        gateway = start_gateway(config_text(drain=60, delay_ms=300))
        response = await open_stream(http, gateway.url, " ".join(["word"] * 40))
        await first_content(response)
        gateway.signal(signal.SIGTERM)
        await asyncio.to_thread(gateway.wait_for_event, "gateway_stopping")
        began = time.monotonic()
        gateway.signal(signal.SIGTERM)
        assert await wait_exit(gateway, 5) == 1
        assert time.monotonic() - began < 2
        response.close()


class TestASignalWhileStarting:
    @pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.6, 1.0])
    def test_sigterm_at_any_moment_of_the_start_ends_it_at_once_and_cleanly(
        self, tmp_path: Path, delay: float
    ) -> None:
        """Before its handlers are in place (while Python loads clawgate: a fraction of a
        second, more on a loaded host), SIGTERM ends the process as its default action does,
        which systemd counts as a clean stop; once they are, it stops as any stop does, 0.
        Either way at once, with no traceback and nothing half-written in the state dir."""
        state = tmp_path / "state"
        gateway = GatewayProcess(
            ["--port", "0", "--state-dir", str(state)], clean_env(tmp_path / "home")
        )
        try:
            time.sleep(delay)
            gateway.signal(signal.SIGTERM)
            began = time.monotonic()
            code = gateway.wait(5)
        finally:
            gateway.stop()
        assert code in (0, -signal.SIGTERM)
        assert time.monotonic() - began < 2
        assert not [line for line in gateway.lines if "Traceback" in line]
        names = {path.name for path in state.iterdir()} if state.exists() else set()
        assert names <= {"gateway.token", "sessions.sqlite3", "sessions.sqlite3-wal",
                         "sessions.sqlite3-shm"}  # fmt: skip
        if "gateway.token" in names:
            assert len((state / "gateway.token").read_text().strip()) >= 32

    @pytest.mark.postgres
    def test_sigterm_while_the_database_is_slow_to_answer_stops_at_once_with_0(
        self, tmp_path: Path, pg_server: PgServer, pg_url: str
    ) -> None:
        """The store's PostgreSQL is reached through a relay that holds every connection and
        never lets it through: the open would wait for its connect timeout, then fail (1). A
        stop asked for meanwhile is a stop like any other, and nothing waits for the database."""
        with held_relay("127.0.0.1", pg_server.port) as relay:
            url = pg_url.replace(f":{pg_server.port}/", f":{relay.listen_port}/")
            config = tmp_path / "clawgate.json5"
            store = {"backend": "postgres", "url": url}
            config.write_text(json.dumps({"gateway": {"auth": {"token": TOKEN}}, "store": store}))
            env = clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(tmp_path / "state")})
            gateway = GatewayProcess(["--config", str(config), "--port", "0"], env)
            try:
                relay.wait_accepted()
                gateway.signal(signal.SIGTERM)
                code = gateway.wait(15)
                events = [e["event"] for e in gateway.events()]
            finally:
                gateway.stop()
        assert code == 0, gateway.lines
        assert "store_open_failed" not in events
        assert events[-1] == "gateway_stopped"
        assert not [line for line in gateway.lines if "Traceback" in line or "never" in line]

    @pytest.mark.parametrize("command", [["run", "--port", "0"], ["config", "path"]])
    def test_ctrl_c_while_python_loads_clawgate_exits_130_without_a_traceback(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        """The Ctrl-C comes as aiohttp's import begins (under gateway.cli's): clawgate's modules
        are still loading. The process sends it to itself from an import hook, so it comes at
        that point however loaded the host is (watching /proc from here came too late there)."""
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(INTERRUPT_ON_AIOHTTP_IMPORT)
        env = clean_env(
            tmp_path / "home",
            {
                "CLAWGATE_STATE_DIR": str(tmp_path / "state"),
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(hook), os.environ.get("PYTHONPATH")])
                ),
            },
        )
        gateway = GatewayProcess(command, env, command=(sys.executable, "-m", "gateway"))
        try:
            code = gateway.wait(60)
        finally:
            gateway.stop()
        assert gateway.lines == [], gateway.lines
        assert code == 130

    @pytest.mark.parametrize("module", ["aiohttp", "gateway.server"])
    def test_sighup_while_starting_is_a_reload_once_it_serves_not_a_stop(
        self, tmp_path: Path, module: str
    ) -> None:
        """A SIGHUP's default action ends a process: one sent while clawgate loads (as the
        CLI's modules import; after the config was read, as the server's do) came before the
        server's handler and stopped the gateway. It is held and taken as a reload once the
        gateway serves. The process sends it to itself from an import hook, at that point."""
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(HANGUP_ON_IMPORT.replace("MODULE", module))
        env = clean_env(
            tmp_path / "home",
            {
                "CLAWGATE_STATE_DIR": str(tmp_path / "state"),
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(hook), os.environ.get("PYTHONPATH")])
                ),
            },
        )
        gateway = GatewayProcess(["--port", "0"], env)
        try:
            gateway.wait_listening(60)
            gateway.wait_for_event("config_reload_requested")
            gateway.signal(signal.SIGTERM)
            code = gateway.wait(15)
        finally:
            gateway.stop()
        assert code == 0, gateway.lines
        assert not [line for line in gateway.lines if "Traceback" in line]


# A SIGHUP at a known point of clawgate's start: as Python begins to import MODULE.
HANGUP_ON_IMPORT = """
import os
import signal
import sys


class HangUpOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "MODULE":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGHUP)
        return None


sys.meta_path.insert(0, HangUpOnImport())
"""


# A Ctrl-C at a known point of clawgate's start: as Python begins to import aiohttp. Python's
# own handler first, as a terminal's Ctrl-C finds it: a runner started in the background (a
# shell's `&`) ignores SIGINT, and so would this process, its child.
INTERRUPT_ON_AIOHTTP_IMPORT = """
import os
import signal
import sys

signal.signal(signal.SIGINT, signal.default_int_handler)


class InterruptOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "aiohttp":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


sys.meta_path.insert(0, InterruptOnImport())
"""


class TestHotReload:
    async def test_a_rotated_token_works_within_2_seconds_and_the_old_one_gets_401(
        self, gateway: GatewayProcess, config_file: Path, http: aiohttp.ClientSession
    ) -> None:
        models = f"{gateway.url}/v1/models"
        async with http.get(models, headers=auth()) as response:
            assert response.status == 200
        edit(config_file, config_text(token="tok-two-9a8b7c"))
        began = time.monotonic()
        while True:
            async with http.get(models, headers=auth("tok-two-9a8b7c")) as response:
                if response.status == 200:
                    break
            assert time.monotonic() - began < 2, "the new token was not in force within 2 s"
            await asyncio.sleep(0.05)
        async with http.get(models, headers=auth()) as response:
            assert response.status == 401
        assert gateway.proc.poll() is None  # no restart
        reloaded = gateway.wait_for_event("config_reloaded")
        assert reloaded["changed"] == ["gateway.auth.token"]

    async def test_an_invalid_edit_is_logged_and_the_old_config_keeps_serving(
        self, gateway: GatewayProcess, config_file: Path, http: aiohttp.ClientSession
    ) -> None:
        edit(config_file, config_text()[:-10])  # cut short: not JSON5 any more
        failed = await asyncio.to_thread(gateway.wait_for_event, "config_reload_failed", 5)
        assert failed["level"] == "error"
        assert failed["issues"][0].startswith("- <file>: JSON5 syntax error:")
        async with http.get(f"{gateway.url}/v1/models", headers=auth()) as response:
            assert response.status == 200

    async def test_sighup_reloads_at_once(
        self, gateway: GatewayProcess, config_file: Path, http: aiohttp.ClientSession
    ) -> None:
        # Same size and mtime as before would hide it from the poller; SIGHUP reads anyway.
        config_file.write_text(config_text(token="tok-hup-000000"))
        gateway.signal(signal.SIGHUP)
        await asyncio.to_thread(gateway.wait_for_event, "config_reloaded", 5)
        async with http.get(f"{gateway.url}/v1/models", headers=auth("tok-hup-000000")) as r:
            assert r.status == 200

    async def test_sighup_reads_a_rewritten_token_file_when_the_config_is_unchanged(
        self,
        tmp_path: Path,
        config_file: Path,
        gateways: list[GatewayProcess],
        http: aiohttp.ClientSession,
    ) -> None:
        """`run` re-reads --token-file on every reload (README): rotating the secret is
        rewriting that file and `systemctl reload`, with the config file as it was."""
        config = json.loads(config_text())
        del config["gateway"]["auth"]["token"]
        config_file.write_text(json.dumps(config))
        token_file = tmp_path / "gateway-token"
        token_file.write_text(f"{TOKEN}\n")
        args = ["--config", str(config_file), "--state-dir", str(tmp_path / "state")]
        args += ["--token-file", str(token_file), "--port", "0"]
        gateway = GatewayProcess(args, clean_env(tmp_path / "home"))
        gateways.append(gateway)
        gateway.wait_listening()
        token_file.write_text("tok-file-rotated-5e4d\n")
        gateway.signal(signal.SIGHUP)
        reloaded = await asyncio.to_thread(gateway.wait_for_event, "config_reloaded", 5)
        assert reloaded["changed"] == ["gateway.auth.token"]
        models = f"{gateway.url}/v1/models"
        async with http.get(models, headers=auth("tok-file-rotated-5e4d")) as response:
            assert response.status == 200
        async with http.get(models, headers=auth()) as response:
            assert response.status == 401

    async def test_a_reload_of_a_large_file_holds_up_no_client(
        self, gateway: GatewayProcess, config_file: Path, http: aiohttp.ClientSession
    ) -> None:
        """json5's parser reads some 100-300 KB a second: a file with long system prompts
        takes it seconds. A WebSocket handshake and call made once the reload began are
        answered before it ends only if the file was read and checked off the event loop."""
        config = json.loads(config_text(token="tok-big-000000"))
        config["agents"]["list"][0]["systemPrompt"] = "x" * 250_000
        config_file.write_text(json.dumps(config))
        gateway.signal(signal.SIGHUP)
        await asyncio.to_thread(gateway.wait_for_event, "config_reload_requested", 5)
        ws = await connect_ws(http, gateway.url)
        await ws.send_json({"type": "req", "id": "h", "method": "health"})
        while (frame := await ws.receive_json(timeout=60))["type"] != "res":
            pass
        assert frame["id"] == "h" and frame["ok"] is True
        assert not [e for e in gateway.events() if e.get("event") == "config_reloaded"]
        await ws.close()
        await asyncio.to_thread(gateway.wait_for_event, "config_reloaded", 60)
        async with http.get(f"{gateway.url}/v1/models", headers=auth("tok-big-000000")) as r:
            assert r.status == 200


class TestLogLines:
    async def test_on_a_terminal_the_log_is_coloured_and_logs_tail_hands_out_plain_lines(
        self, tmp_path: Path, config_file: Path, http: aiohttp.ClientSession
    ) -> None:
        """`openclaw logs` prints what `logs.tail` answers as it is: the console renderer's
        colours, kept in the ring, came out as raw escape codes in a file or a pipe, and as
        colours no one asked for mixed into its own on a terminal."""
        terminal, stderr = os.openpty()
        args = ["--config", str(config_file), "--state-dir", str(tmp_path / "state")]
        gateway = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "gateway", "run", *args, "--port", "0"),
            env=clean_env(tmp_path / "home"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        os.close(stderr)
        try:
            shown = await asyncio.to_thread(read_until, terminal, b"gateway_listening")
            plain = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())
            url = re.search(r"url=(http://\S+)", plain)
            assert url is not None, plain
            ws = await connect_ws(http, url.group(1))
            await ws.send_json({"type": "req", "id": "t", "method": "logs.tail"})
            while (frame := await ws.receive_json(timeout=10))["type"] != "res":
                pass
            await ws.close()
        finally:
            if gateway.returncode is None:
                gateway.terminate()
            await gateway.wait()
            os.close(terminal)
        assert "\x1b[" in shown.decode()  # the terminal keeps its colours
        lines = frame["payload"]["lines"]
        assert [line for line in lines if "gateway_listening" in line]
        assert not [line for line in lines if "\x1b" in line]

    async def test_one_json_line_per_request_with_no_secret_or_message_text(
        self, gateway: GatewayProcess, http: aiohttp.ClientSession
    ) -> None:
        secret_text = "please-do-not-log-this-sentence"
        async with http.get(f"{gateway.url}/v1/models", headers=auth()) as response:
            assert response.status == 200
        async with http.get(f"{gateway.url}/v1/models", headers=auth("wrong-token")) as response:
            assert response.status == 401
        async with http.post(
            f"{gateway.url}/v1/chat/completions",
            headers={**auth(), "x-request-id": "req-42"},
            json={"model": "openclaw", "user": "alice", "messages": [
                {"role": "user", "content": secret_text}]},
        ) as response:  # fmt: skip
            assert response.status == 200
        ws = await connect_ws(http, gateway.url)
        await ws.send_json({"type": "req", "id": "h-1", "method": "chat.history",
                            "params": {"sessionKey": "Alice-WS"}})  # fmt: skip
        while (await ws.receive_json(timeout=5)).get("id") != "h-1":
            pass  # events (health, presence) may come first
        await ws.close()
        gateway.signal(signal.SIGTERM)
        assert await wait_exit(gateway, 10) == 0

        lines = gateway.lines
        assert lines and all(isinstance(json.loads(line), dict) for line in lines)
        requests = [e for e in gateway.events() if e["event"] == "http_request"]
        assert [(r["method"], r["path"], r["status"]) for r in requests] == [
            ("GET", "/v1/models", 200),
            ("GET", "/v1/models", 401),
            ("POST", "/v1/chat/completions", 200),
            ("GET", "/", 101),  # the WebSocket, logged when it closed
        ]
        chat = requests[2]
        assert chat["request_id"] == "req-42"
        assert chat["agent"] == "main"
        assert chat["session_key"] == "agent:main:openai-user:alice"
        assert isinstance(chat["duration_ms"], float)
        calls = [e for e in gateway.events() if e["event"] == "ws_call"]
        assert [(c["method"], c["ok"], c["request_id"], c["session_key"], c["agent"])
                for c in calls] == [
            ("chat.history", True, "h-1", "agent:main:alice-ws", "main")]  # fmt: skip
        text = "\n".join(lines)
        for secret in (TOKEN, "wrong-token", secret_text):
            assert secret not in text


class TestUpstreamProvider:
    """A turn through an OpenAI-compatible upstream in a real `clawgate run`, on its loop
    (uvloop): the upstream client's connections, pool and push delivery as served."""

    async def test_json_and_streamed_turns_reach_the_upstream_and_come_back(
        self, start_gateway: StartGateway, http: aiohttp.ClientSession
    ) -> None:
        upstream = FakeOpenAI()
        await upstream.start()
        try:
            upstream.script(
                Stream(("Hel", "lo")), Stream(("a", "b", "c"), delay=0.01), Stream(("again",))
            )
            settings = json.loads(config_text())
            settings.update(fake_provider(upstream))
            gateway = start_gateway(json.dumps(settings))
            url = gateway.url + "/v1/chat/completions"
            body = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(url, json=body, headers=auth()) as response:
                assert response.status == 200
                answer = await response.json()
            assert answer["choices"][0]["message"]["content"] == "Hello"
            async with http.post(url, json={**body, "stream": True}, headers=auth()) as response:
                text = (await response.read()).decode()
            deltas = [
                chunk["choices"][0]["delta"].get("content")
                for line in text.split("\n\n")
                if line.startswith("data: {")
                for chunk in [json.loads(line.removeprefix("data: "))]
                if chunk["choices"]
            ]
            assert "".join(d for d in deltas if d) == "abc"
            assert text.endswith("data: [DONE]\n\n")
            async with http.post(url, json=body, headers=auth()) as response:
                assert (await response.json())["choices"][0]["message"]["content"] == "again"
            assert len(upstream.requests) == 3
            # Kept alive: three turns, one connection to the upstream.
            assert len({received.peer for received in upstream.requests}) == 1
        finally:
            await upstream.aclose()


def test_a_stop_during_the_lookup_of_a_lan_binds_names_stops_at_once(tmp_path: Path) -> None:
    """The resolver of a `lan` bind's host name can take minutes (a DNS server that does not
    answer: 30 s a try). A SIGTERM then waited for the lookup's thread before the exit."""
    env = clean_env(
        tmp_path / "home", {"CLAWGATE_STATE_DIR": str(tmp_path / "state"), **SLOW_RES_OPTIONS}
    )
    args = ["--port", "0", "--bind", "lan", "--token", TOKEN]
    with silent_dns(tmp_path) as dns:
        command = [*dns.prefix, sys.executable, "-m", "gateway", "run"]
        gateway = GatewayProcess(args, env, command=command)
        try:
            dns.wait_query()  # the lookup has begun
            gateway.signal(signal.SIGTERM)
            assert gateway.wait(15) == 0
            events = [e["event"] for e in gateway.events()]
            assert "gateway_listening" not in events
            assert "gateway_stopped" in events
        finally:
            gateway.stop()
