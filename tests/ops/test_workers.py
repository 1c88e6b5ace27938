"""`clawgate run --workers N`: a supervisor and N real gateway processes on one port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from agents.store_postgres import SCHEMA_VERSION, PostgresSessionStore
from gateway.config.errors import ConfigError
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from gateway.supervisor import (
    SHARED_LOG_ENV,
    STARTUP_CONFIG_ENV,
    WORKER_ENV,
    PortClaimed,
    claim_port,
    worker_config,
)
from tests.support.pgserver import PASSWORD
from tests.support.process import GatewayProcess, clean_env, privileged_port, run_cli
from tests.support.process_client import auth, connect_ws, first_content
from tests.support.shared_store import chat, frames_until, shared_config, streaming
from tests.support.slow_dns import SLOW_RES_OPTIONS, silent_dns


def test_workers_above_one_with_sqlite_exit_78_naming_the_postgres_backend(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.json5").write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(tmp_path / "c.json5"),
         "--state-dir", str(tmp_path / "state"), "--workers", "2", "--port", "0"],
        env=clean_env(tmp_path / "home"), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 78
    assert done.stderr.startswith(
        '--workers 2 needs a store every worker shares: set store.backend to "postgres"'
    )


@pytest.mark.parametrize("reuse_port", [False, True], ids=["busy", "another-workers-gateway"])
def test_workers_on_a_port_in_use_exit_1_with_a_clear_message(
    tmp_path: Path, reuse_port: bool
) -> None:
    """As one process does: the supervisor's own hold on the port is what fails. A port held
    with SO_REUSEPORT (another `--workers` gateway's) too: that option lets any process of the
    same user bind beside it, and a second gateway would take half the first one's
    connections."""
    config = tmp_path / "c.json5"
    config.write_text(
        '{ store: { backend: "postgres", url: "postgresql://u@127.0.0.1:1/db", password: "x" } }'
    )
    with socket.socket() as other:
        if reuse_port:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--config", str(config),
             "--state-dir", str(tmp_path / "state"), "--workers", "2", "--port", str(port)],
            env=clean_env(tmp_path / "home"), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert "worker_started" not in done.stderr


@pytest.mark.parametrize(
    ("first_bind", "second_bind"),
    [("loopback", "loopback"), ("loopback", "lan"), ("lan", "loopback")],
)
def test_a_second_workers_gateway_on_the_port_of_one_still_starting_exits_1(
    tmp_path: Path, first_bind: str, second_bind: str
) -> None:
    """The first one holds the port without listening until a worker listens (here never:
    its database does not answer), and the port-in-use check passed beside it: two gateways
    would have shared the port, each taking a share of the other's connections. So did one
    on 0.0.0.0 and one on 127.0.0.1, which 0.0.0.0 covers."""
    hosts = {"loopback": "127.0.0.1", "lan": "0.0.0.0"}
    with socket.socket() as silent_db, socket.socket() as free:
        silent_db.bind(("127.0.0.1", 0))
        silent_db.listen()  # connections wait in the backlog: no answer, no refusal
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        config = tmp_path / "c.json5"
        db_port = silent_db.getsockname()[1]
        config.write_text(
            f'{{ store: {{ backend: "postgres", url: "postgresql://u@127.0.0.1:{db_port}/db",'
            ' password: "x" } }'
        )
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state")]
        args += ["--workers", "2", "--port", str(port)]
        first = GatewayProcess([*args, "--bind", first_bind], clean_env(tmp_path / "home"))
        try:
            first.wait_for_event("worker_started", 30)
            second = run_cli(["run", *args, "--bind", second_bind], clean_env(tmp_path / "home"))
        finally:
            workers = [e["pid"] for e in first.events() if e.get("event") == "worker_started"]
            first.stop()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert second.returncode == 1
    where = "it" if first_bind == second_bind else f"{hosts[first_bind]}:{port}"
    assert (
        f"cannot listen on {hosts[second_bind]}:{port}: address already in use (another"
        f" `clawgate run --workers` is starting or running on {where})\n"
    ) in second.stderr
    assert "worker_started" not in second.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets")
def test_claims_on_one_port_overlap_only_where_the_addresses_do() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with contextlib.ExitStack() as held:
        for host in ("127.0.0.1", "127.0.0.2", "::"):  # `::` listens on IPv6 alone
            claim = claim_port(host, port)
            assert claim is not None
            held.enter_context(claim)
        with pytest.raises(PortClaimed) as caught:
            claim_port("0.0.0.0", port)
        assert caught.value.holder in (f"127.0.0.1:{port}", f"127.0.0.2:{port}")
        with pytest.raises(PortClaimed) as caught:
            claim_port("::1", port)
        assert caught.value.holder == f"[::]:{port}"
        with pytest.raises(OSError) as same:
            claim_port("127.0.0.1", port)
        assert same.value.errno == errno.EADDRINUSE
    # All of them let go: 0.0.0.0 claims it now.
    claim = claim_port("0.0.0.0", port)
    assert claim is not None
    claim.close()


def test_a_temp_dir_too_deep_for_the_workers_sockets_exits_78_saying_so(tmp_path: Path) -> None:
    """A socket's path holds at most 107 bytes: under a deep TMPDIR the supervisor could not
    make the workers' sd_notify sockets, and ended with a traceback (exit 1, restarted in a
    loop by systemd)."""
    config = tmp_path / "c.json5"
    config.write_text(
        '{ store: { backend: "postgres", url: "postgresql://u@127.0.0.1:1/db", password: "x" } }'
    )
    deep = tmp_path / ("d" * 110)
    deep.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config),
         "--state-dir", str(tmp_path / "state"), "--workers", "2", "--port", "0"],
        env=clean_env(tmp_path / "home", {"TMPDIR": str(deep)}),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 78
    assert "Traceback" not in done.stderr
    assert "worker_started" not in done.stderr
    assert (
        f"cannot start worker 0: its sd_notify socket's path {deep}/clawgate-workers-"
    ) in done.stderr
    assert (
        "/worker-0.sock is longer than the 107 bytes a socket's path may hold. Fix: set TMPDIR"
        " to a shorter directory (such as /tmp).\n"
    ) in done.stderr
    assert not list(deep.iterdir())  # its temp dir removed


def test_workers_on_a_privileged_port_exit_78_saying_what_it_needs(tmp_path: Path) -> None:
    config = tmp_path / "c.json5"
    config.write_text(
        '{ store: { backend: "postgres", url: "postgresql://u@127.0.0.1:1/db", password: "x" } }'
    )
    port = privileged_port()
    done = run_cli(
        ["run", "--config", str(config), "--state-dir", str(tmp_path / "state"),
         "--workers", "2", "--port", str(port)],
        clean_env(tmp_path / "home"), unprivileged=True,
    )  # fmt: skip
    assert done.returncode == 78
    assert (
        f"cannot listen on 127.0.0.1:{port}: permission denied (a port below 1024 needs"
        " the CAP_NET_BIND_SERVICE capability; or choose a port of 1024 or above)\n"
    ) in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_workers_value_is_a_usage_error(tmp_path: Path, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--workers", value],
        env=clean_env(tmp_path / "home"), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--workers" in done.stderr


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


@pytest.fixture
def delay_ms() -> int:
    return 5


@pytest.fixture
def reload_mode() -> str | None:
    return None  # the default: each worker checks the file


@pytest.fixture
def watchdog_usec() -> int | None:
    return None  # systemd's WatchdogSec= unset


@pytest.fixture
def supervisor(
    tmp_path: Path,
    database: str,
    notify: socket.socket,
    delay_ms: int,
    reload_mode: str | None,
    watchdog_usec: int | None,
) -> Iterator[GatewayProcess]:
    config = tmp_path / "c.json5"
    settings = json.loads(shared_config(database, delay_ms))
    if reload_mode is not None:
        settings["gateway"]["reload"] = {"mode": reload_mode}
    config.write_text(json.dumps(settings))
    extra = {"CLAWGATE_DB_PASSWORD": PASSWORD, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    if watchdog_usec is not None:
        extra["WATCHDOG_USEC"] = str(watchdog_usec)
    env = clean_env(tmp_path / "home", extra)
    args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
    process = GatewayProcess([*args, "--workers", "2"], env)
    try:
        process.wait_listening(30)
        process.wait_for_event("supervisor_ready", 30)
        yield process
    finally:
        workers = [e["pid"] for e in process.events() if e.get("event") == "worker_started"]
        process.stop()
        for pid in workers:  # the supervisor's death stops them too; this is belt and braces
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def notifications(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    found = []
    while True:
        try:
            found.append(sock.recv(4096).decode())
        except BlockingIOError:
            return found


async def health_pid(http: aiohttp.ClientSession, url: str, token: str | None = None) -> int:
    ws = await connect_ws(http, url, token)
    await ws.send_json({"type": "req", "id": "h", "method": "health", "params": {}})
    frames = await frames_until(ws, lambda f: f.get("id") == "h")
    await ws.close()
    return int(frames[-1]["payload"]["process"]["pid"])


async def _health_by_worker(url: str) -> dict[int, dict[str, Any]]:
    """The `health` payload of each worker that answered one of 24 connections."""
    found: dict[int, dict[str, Any]] = {}
    # Each request on a connection of its own: the kernel spreads them over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
        for _ in range(24):
            ws = await connect_ws(one, url)
            await ws.send_json({"type": "req", "id": "h", "method": "health", "params": {}})
            frames = await frames_until(ws, lambda f: f.get("id") == "h")
            await ws.close()
            payload = frames[-1]["payload"]
            found[payload["process"]["pid"]] = payload
    return found


async def _connect_or_none(
    http: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientWebSocketResponse | None:
    """A WebSocket that has done the handshake with `token`, or None when it was refused."""
    ws = await http.ws_connect(url.replace("http", "ws", 1))
    await ws.receive_json(timeout=5)  # connect.challenge
    connect = {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "test", "version": "1", "platform": "linux", "mode": "cli"},
        "auth": {"token": token},
    }
    await ws.send_json({"type": "req", "id": "1", "method": "connect", "params": connect})
    hello = await ws.receive_json(timeout=5)
    if hello["ok"] is True:
        return ws
    await ws.close()
    return None


def ready_pids(process: GatewayProcess) -> set[int]:
    return set(process.wait_for_event("supervisor_ready")["pids"])


@pytest.mark.postgres
@pytest.mark.slow
class TestWorkers:
    async def test_two_workers_serve_one_port_and_systemd_hears_ready_once(
        self, supervisor: GatewayProcess, notify: socket.socket, http: aiohttp.ClientSession
    ) -> None:
        pids = {await health_pid(http, supervisor.url) for _ in range(24)}
        assert pids == ready_pids(supervisor)
        assert len(pids) == 2
        assert [m for m in notifications(notify) if "READY=1" in m] == [
            "READY=1\nSTATUS=2 workers ready"
        ]

    async def test_sigterm_drains_every_worker_and_exits_0(
        self, supervisor: GatewayProcess, notify: socket.socket
    ) -> None:
        supervisor.signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 30) == 0
        stopped = [e for e in supervisor.events() if e.get("event") == "worker_stopped"]
        assert sorted((e["pid"], e["exit_code"]) for e in stopped) == sorted(
            (pid, 0) for pid in ready_pids(supervisor)
        )
        assert "STOPPING=1\nSTATUS=draining" in notifications(notify)

    async def test_sigterm_extends_systemds_stop_timeout_to_the_workers_drain(
        self, supervisor: GatewayProcess, notify: socket.socket
    ) -> None:
        supervisor.signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 30) == 0
        # drainSeconds 5, then 15 s to finish (gateway/server.py), as each worker asked.
        assert "EXTEND_TIMEOUT_USEC=20000000" in notifications(notify)

    async def test_sighup_reloads_every_worker(self, supervisor: GatewayProcess) -> None:
        supervisor.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            events = supervisor.events()
            if sum(e.get("event") == "config_reload_requested" for e in events) == 2:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("not every worker reloaded:\n" + "\n".join(supervisor.lines))

    @pytest.mark.parametrize("reload_mode", ["off"])
    async def test_a_config_patch_applies_in_every_worker(
        self, supervisor: GatewayProcess, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """Without the file check (reload mode "off"), the worker that wrote the file has the
        supervisor pass a SIGHUP to all: a rotated token works whichever worker answers."""
        ws = await connect_ws(http, supervisor.url)
        base_hash = hashlib.sha256((tmp_path / "c.json5").read_bytes()).hexdigest()
        raw = json.dumps({"gateway": {"auth": {"token": "tok-rotated-51c0"}}})
        params = {"raw": raw, "baseHash": base_hash}
        await ws.send_json({"type": "req", "id": "p", "method": "config.patch", "params": params})
        frames = await frames_until(ws, lambda f: f.get("id") == "p")
        assert frames[-1]["ok"] is True, frames[-1]
        await ws.close()
        # The patch's worker, then the other on its SIGHUP: until then that one refuses the
        # new token. Each request on a connection of its own: the kernel spreads them over
        # both workers.
        answered: set[int] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
            deadline = time.monotonic() + 10
            while answered != ready_pids(supervisor):
                assert time.monotonic() < deadline, "\n".join(supervisor.lines)
                ws = await _connect_or_none(one, supervisor.url, "tok-rotated-51c0")
                if ws is not None:
                    request = {"type": "req", "id": "h", "method": "health", "params": {}}
                    await ws.send_json(request)
                    frames = await frames_until(ws, lambda f: f.get("id") == "h")
                    await ws.close()
                    answered.add(int(frames[-1]["payload"]["process"]["pid"]))
        # Told once, by worker 0, whichever worker the patch reached.
        reloaded = _events_named(supervisor, "config_reloaded")
        assert [(e["worker"], e["changed"]) for e in reloaded] == [(0, ["gateway.auth.token"])]

    async def test_a_bad_edit_is_logged_once_and_every_worker_keeps_its_error(
        self, supervisor: GatewayProcess, tmp_path: Path
    ) -> None:
        """Each worker checks the file: one bad edit was logged `config_reload_failed` once a
        worker (and its fix `config_reload_recovered` so), N lines for one edit."""
        config = tmp_path / "c.json5"
        good = config.read_text()

        async def errors_by_worker() -> dict[int, Any]:
            found: dict[int, Any] = {}
            # Each request on a connection of its own: the kernel spreads them over both.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as one:
                for _ in range(24):
                    ws = await connect_ws(one, supervisor.url)
                    request = {"type": "req", "id": "h", "method": "health", "params": {}}
                    await ws.send_json(request)
                    frames = await frames_until(ws, lambda f: f.get("id") == "h")
                    await ws.close()
                    payload = frames[-1]["payload"]
                    found[payload["process"]["pid"]] = payload["configReload"]["lastError"]
            return found

        async def until_every_worker(failing: bool) -> None:
            deadline = time.monotonic() + 15
            while True:
                found = await errors_by_worker()
                if set(found) == ready_pids(supervisor) and all(
                    (error is not None) is failing for error in found.values()
                ):
                    return
                assert time.monotonic() < deadline, "\n".join(supervisor.lines)
                await asyncio.sleep(0.1)

        def told(event: str) -> list[dict[str, Any]]:
            return [e for e in supervisor.events() if e.get("event") == event]

        config.write_text(good[:-10])  # cut short: not JSON5 any more
        await until_every_worker(failing=True)
        failed = told("config_reload_failed")
        assert len(failed) == 1, "\n".join(supervisor.lines)
        assert failed[0]["level"] == "error"
        assert failed[0]["issues"][0].startswith("- <file>: JSON5 syntax error:")
        config.write_text(good + " ")
        await until_every_worker(failing=False)
        assert len(told("config_reload_recovered")) == 1, "\n".join(supervisor.lines)

    async def test_a_good_edit_is_logged_once_with_what_needs_a_restart(
        self, supervisor: GatewayProcess, tmp_path: Path
    ) -> None:
        """Each worker applies the file: one edit was logged `config_reloaded` and
        `restart_required` once a worker, N lines for one edit; worker 0 tells it."""
        config = tmp_path / "c.json5"
        settings = json.loads(config.read_text())
        settings["agents"]["list"].append({"id": "second"})
        settings["logging"] = {"format": "json"}  # needs a restart
        config.write_text(json.dumps(settings))
        deadline = time.monotonic() + 15
        while True:
            found = await _health_by_worker(supervisor.url)
            agents = {pid: {a["agentId"] for a in h["agents"]} for pid, h in found.items()}
            if set(found) == ready_pids(supervisor) and all(
                ids == {"main", "second"} for ids in agents.values()
            ):
                break
            assert time.monotonic() < deadline, "\n".join(supervisor.lines)
        reloaded = _events_named(supervisor, "config_reloaded")
        assert [(e["worker"], e["level"]) for e in reloaded] == [(0, "info")]
        assert reloaded[0]["changed"] == ["agents.list"]
        restart = _events_named(supervisor, "restart_required")
        assert [(e["worker"], e["level"], e["paths"]) for e in restart] == [
            (0, "warning", ["logging.format"])
        ]

    async def test_a_killed_worker_is_started_again(
        self, supervisor: GatewayProcess, http: aiohttp.ClientSession
    ) -> None:
        victim = min(ready_pids(supervisor))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            started = [e for e in supervisor.events() if e.get("event") == "worker_ready"]
            if len(started) == 3:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no worker started again:\n" + "\n".join(supervisor.lines))
        assert started[-1]["pid"] != victim
        pids = {await health_pid(http, supervisor.url) for _ in range(24)}
        assert victim not in pids and len(pids) == 2
        body = await chat(http, supervisor.url, "k", "still here")
        assert body["choices"][0]["message"]["content"] == "[turn 1] still here"


@pytest.mark.postgres
@pytest.mark.slow
class TestHungWorker:
    @pytest.mark.parametrize("watchdog_usec", [3_000_000])
    async def test_a_worker_whose_loop_stops_is_killed_and_started_again(
        self, supervisor: GatewayProcess, notify: socket.socket, http: aiohttp.ClientSession
    ) -> None:
        """A worker whose event loop no longer runs (stopped here; blocked, deadlocked) was
        left serving nothing, its share of the connections hanging, while the supervisor went
        on petting systemd's watchdog. Each worker now pets the supervisor's: one silent for
        the watchdog's interval is killed, and started again as a worker that died."""
        victim = min(ready_pids(supervisor))
        os.kill(victim, signal.SIGSTOP)
        try:
            hung = await asyncio.to_thread(supervisor.wait_for_event, "worker_hung", 15)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        assert hung["pid"] == victim
        assert hung["silent_s"] >= 3.0
        deadline = time.monotonic() + 20
        while len(_events_named(supervisor, "worker_ready")) < 3:
            assert time.monotonic() < deadline, "\n".join(supervisor.lines)
            await asyncio.sleep(0.05)
        [exited] = _events_named(supervisor, "worker_exited")
        assert (exited["pid"], exited["exit_code"]) == (victim, -signal.SIGKILL)
        pids = {await health_pid(http, supervisor.url) for _ in range(24)}
        assert victim not in pids and len(pids) == 2
        # The healthy worker was left alone, and systemd's watchdog still hears the supervisor.
        assert len(_events_named(supervisor, "worker_hung")) == 1
        notifications(notify)
        await asyncio.sleep(2)
        assert "WATCHDOG=1" in notifications(notify)


@pytest.mark.postgres
@pytest.mark.slow
async def test_sigterm_while_the_workers_start_stops_every_one(
    tmp_path: Path, database: str
) -> None:
    """A SIGTERM as soon as the first worker started: the workers started after it, or while
    it was being handled, are stopped as well, and the supervisor exits."""
    config = tmp_path / "c.json5"
    config.write_text(shared_config(database, 5))
    env = clean_env(tmp_path / "home", {"CLAWGATE_DB_PASSWORD": PASSWORD})
    args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
    process = GatewayProcess([*args, "--workers", "8"], env)
    try:
        process.wait_for_event("worker_started", 30)
        process.signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        started = [e["pid"] for e in process.events() if e.get("event") == "worker_started"]
        for pid in started:
            assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), pid
    finally:
        workers = [e["pid"] for e in process.events() if e.get("event") == "worker_started"]
        process.stop()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("delay_ms", [200])
async def test_a_worker_killed_mid_turn_is_restarted_and_the_session_runs_its_next_turn(
    supervisor: GatewayProcess, http: aiohttp.ClientSession, delay_ms: int
) -> None:
    long_text = " ".join(f"w{i}" for i in range(100))  # 20 s at 200 ms a word
    response = await http.post(
        f"{supervisor.url}/v1/chat/completions",
        headers={**auth(), "x-openclaw-session-key": "k"},
        json={"model": "openclaw", "stream": True,
              "messages": [{"role": "user", "content": long_text}]},
    )  # fmt: skip
    await first_content(response)
    # Which worker took the connection is the kernel's choice: kill one, and if the stream
    # goes on, the other.
    pids = sorted(ready_pids(supervisor))
    killed = 0
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
        killed += 1
        try:
            async with asyncio.timeout(1):
                while await response.content.readany():
                    pass
            break  # the stream ended: that worker ran the turn
        except TimeoutError:
            continue
        except aiohttp.ClientPayloadError:
            break
    response.close()
    deadline = time.monotonic() + 20
    while sum(e.get("event") == "worker_ready" for e in supervisor.events()) < 2 + killed:
        assert time.monotonic() < deadline, "\n".join(supervisor.lines)
        await asyncio.sleep(0.05)
    body = await asyncio.wait_for(chat(http, supervisor.url, "k", "after"), 15)
    assert body["choices"][0]["message"]["content"].endswith(" after")


def _events_named(process: GatewayProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in process.events() if e.get("event") == name]


async def _wait_events(process: GatewayProcess, name: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(_events_named(process, name)) < count:
        assert time.monotonic() < deadline, f"no {count} {name!r}:\n" + "\n".join(process.lines)
        await asyncio.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.slow
class TestRestartedWorker:
    async def test_a_restarted_worker_keeps_the_listener_and_log_format_its_siblings_run_with(
        self, supervisor: GatewayProcess, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A change that needs a restart, pending in the file, is not half applied: the worker
        started again listens where its siblings do and logs as they do."""
        config = tmp_path / "c.json5"
        settings = json.loads(config.read_text())
        settings["gateway"].update(bind="custom", customBindHost="127.0.0.2")
        settings["logging"] = {"format": "console"}
        config.write_text(json.dumps(settings))
        supervisor.signal(signal.SIGHUP)
        await _wait_events(supervisor, "restart_required", 2, 10)
        victim = min(ready_pids(supervisor))
        os.kill(victim, signal.SIGKILL)
        await _wait_events(supervisor, "worker_ready", 3, 15)
        listening = _events_named(supervisor, "gateway_listening")
        assert [e["url"] for e in listening] == [supervisor.url] * 3
        restarted = _events_named(supervisor, "worker_ready")[-1]["pid"]
        answered = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
            deadline = time.monotonic() + 10
            while restarted not in answered and time.monotonic() < deadline:
                answered.add(await health_pid(one, supervisor.url))
        assert restarted in answered


class TestWorkerConfig:
    def test_a_worker_refuses_auth_none_from_the_file_beside_the_lan_bind_it_keeps(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """As a reload refuses it (check_in_force): the file's loopback would make "none" safe,
        but the worker listens where the supervisor's config said."""
        started = tmp_path / "started.json5"
        started.write_text('{ gateway: { bind: "lan", auth: { token: "t-1" } } }')
        now = tmp_path / "c.json5"
        now.write_text('{ gateway: { bind: "loopback", auth: { mode: "none" } } }')
        monkeypatch.setenv(WORKER_ENV, "1")
        monkeypatch.setenv(STARTUP_CONFIG_ENV, str(started))
        loader = ConfigLoader(Overrides(config_path=str(now), state_dir=str(tmp_path / "s")))
        with pytest.raises(ConfigError) as raised:
            worker_config(loader, loader.load())
        assert [i.path for i in raised.value.issues] == ["gateway.bind"]

    def test_a_worker_takes_the_hot_paths_from_the_file_as_it_is_now(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        started = tmp_path / "started.json5"
        started.write_text('{ gateway: { port: 1111, auth: { token: "t-old" } } }')
        now = tmp_path / "c.json5"
        now.write_text('{ gateway: { port: 2222, auth: { token: "t-new" } } }')
        monkeypatch.setenv(WORKER_ENV, "1")
        monkeypatch.setenv(STARTUP_CONFIG_ENV, str(started))
        loader = ConfigLoader(Overrides(config_path=str(now), state_dir=str(tmp_path / "s")))
        config = worker_config(loader, loader.load())
        assert (config.gateway.port, config.gateway.auth.token) == (1111, "t-new")


@pytest.mark.postgres
@pytest.mark.slow
class TestStopSignals:
    async def test_ctrl_c_drains_every_worker_and_exits_0(
        self, tmp_path: Path, database: str, http: aiohttp.ClientSession
    ) -> None:
        """A terminal's Ctrl-C reaches the supervisor and its workers at once (one process
        group); the SIGTERM the supervisor passes on must not be the second signal that ends a
        worker without its drain. Here the workers see the SIGINT first, the order that lost
        the drain."""
        config = tmp_path / "c.json5"
        config.write_text(shared_config(database, 100))
        env = clean_env(tmp_path / "home", {"CLAWGATE_DB_PASSWORD": PASSWORD})
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        process = GatewayProcess([*args, "--workers", "2"], env)
        workers: set[int] = set()
        try:
            process.wait_listening(30)
            workers = ready_pids(process)
            responses = [await streaming(http, process.url, 20) for _ in range(2)]
            for pid in workers:
                os.kill(pid, signal.SIGINT)
            await asyncio.sleep(0.5)
            process.signal(signal.SIGINT)
            for response in responses:
                body = (await asyncio.wait_for(response.read(), 15)).decode()
                assert "w19" in body and body.endswith("data: [DONE]\n\n"), body
            assert await asyncio.to_thread(process.wait, 15) == 0
            assert "gateway_killed" not in {e.get("event") for e in process.events()}
        finally:
            process.stop()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_worker_that_keeps_failing_to_start_is_started_again_less_and_less_often(
    supervisor: GatewayProcess, tmp_path: Path
) -> None:
    """Each start costs a process's start-up (half a second of CPU): one that cannot succeed
    (here the file became invalid: the workers still running keep their config) is tried
    after 1, 2, 4 s, not every second."""
    (tmp_path / "c.json5").write_text("{ gateway: { port: 'x' } }")
    os.kill(min(ready_pids(supervisor)), signal.SIGKILL)
    await _wait_events(supervisor, "worker_exited", 4, 15)
    exits = [datetime.fromisoformat(e["ts"]) for e in _events_named(supervisor, "worker_exited")]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(exits)]
    assert all(gap >= delay for gap, delay in zip(gaps, [1, 2, 4], strict=True)), gaps
    assert [e["exit_code"] for e in _events_named(supervisor, "worker_exited")] == [-9, 78, 78, 78]


def test_workers_auto_counts_the_cores_the_gateway_may_run_on(tmp_path: Path) -> None:
    """A process held to one core (taskset, a container's cpuset, systemd's CPUAffinity=) runs
    one gateway: no supervisor, and the sqlite store is fine for it."""
    (tmp_path / "c.json5").write_text("{}")
    process = GatewayProcess(
        ["--config", str(tmp_path / "c.json5"), "--state-dir", str(tmp_path / "state"),
         "--port", "0", "--workers", "auto"],
        clean_env(tmp_path / "home"),
        command=("taskset", "-c", "0", sys.executable, "-m", "gateway", "run"),
    )  # fmt: skip
    try:
        process.wait_listening(30)
        assert "supervisor_starting" not in {e.get("event") for e in process.events()}
    finally:
        process.stop()


@pytest.mark.postgres
@pytest.mark.slow
async def test_each_line_a_worker_logs_names_the_worker(
    supervisor: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    """The workers write to the supervisor's stderr (one journal stream): without its index a
    line could be from any of them."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
        for _ in range(8):
            await health_pid(one, supervisor.url)
    listening = _events_named(supervisor, "gateway_listening")
    assert sorted(e.get("worker") for e in listening) == [0, 1]
    calls = _events_named(supervisor, "ws_call")
    assert calls and all(e.get("worker") in (0, 1) for e in calls)


async def _tail_on_a_new_connection(
    http: aiohttp.ClientSession, url: str, cursor: int | None
) -> tuple[int, dict[str, Any]]:
    """`logs.tail` as `openclaw logs --follow` polls it (a connection per poll, no logId),
    with the pid of the worker that answered."""
    ws = await connect_ws(http, url)
    params = {"limit": 5000, "maxBytes": 1_000_000}
    if cursor is not None:
        params["cursor"] = cursor
    await ws.send_json({"type": "req", "id": "t", "method": "logs.tail", "params": params})
    await ws.send_json({"type": "req", "id": "h", "method": "health", "params": {}})
    frames = await frames_until(ws, lambda f: f.get("id") == "h")
    await ws.close()
    tail = next(f["payload"] for f in frames if f.get("id") == "t")
    return int(frames[-1]["payload"]["process"]["pid"]), tail


@pytest.mark.postgres
@pytest.mark.slow
async def test_logs_tail_follows_one_log_whichever_worker_a_poll_reaches(
    supervisor: GatewayProcess,
) -> None:
    """Each worker kept its own log: a poll reaching the other worker was answered reset,
    with that worker's newest lines (again), at nearly every poll. The workers' cursors are
    places in one log, the lines of both, each once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
        pid, first = await _tail_on_a_new_connection(one, supervisor.url, None)
        cursor, answered, seen = first["cursor"], [pid], list(first["lines"])
        polls = 0
        # Until both workers answered a poll before the last: its health line is read next.
        while len(set(answered[:-1])) < 2 or polls < 6:
            polls += 1
            assert polls <= 40, "every poll reached one worker"
            pid, answer = await _tail_on_a_new_connection(one, supervisor.url, cursor)
            answered.append(pid)
            assert answer["reset"] is False, (polls, answer)
            assert answer["truncated"] is False
            cursor = answer["cursor"]
            seen += answer["lines"]
    calls = [json.loads(line) for line in seen]
    health = [e for e in calls if e.get("event") == "ws_call" and e.get("method") == "health"]
    # Each poll's health call is logged once, after its answer: all of them but the last.
    assert len(health) == polls
    assert {e["worker"] for e in health} == {0, 1}
    assert len(seen) == len(set(seen))


@pytest.mark.postgres
@pytest.mark.slow
async def test_logs_tail_resets_at_a_line_end_of_the_shared_log_no_worker_answered_with(
    supervisor: GatewayProcess,
) -> None:
    """A restart's new log may reach a follower's old cursor and end a line there: only a
    cursor some worker answered with is a place. One that was no more than a line end of the
    shared log was taken for one, and the lines before it were lost without a reset."""
    pid = min(ready_pids(supervisor))
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    shared = next(
        e.split(b"=", 1)[1] for e in environ if e.startswith(f"{SHARED_LOG_ENV}=".encode())
    )
    first_line_end = Path(shared.decode()).read_bytes().index(b"\n") + 1
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
        _, first = await _tail_on_a_new_connection(one, supervisor.url, None)
        answered: set[int] = set()
        polls = 0
        while answered != ready_pids(supervisor):
            polls += 1
            assert polls <= 40, "every poll reached one worker"
            pid, handed = await _tail_on_a_new_connection(one, supervisor.url, first["cursor"])
            assert handed["reset"] is False, handed
            pid, unknown = await _tail_on_a_new_connection(one, supervisor.url, first_line_end)
            assert unknown["reset"] is True, (pid, unknown["cursor"], first_line_end)
            answered.add(pid)


@pytest.mark.postgres
@pytest.mark.slow
async def test_workers_on_a_database_of_a_newer_schema_exit_78(
    tmp_path: Path, database: str, pg_url: str
) -> None:
    """Every worker refuses the store with 78 (a restart would meet it again); the supervisor
    says 78 too, whichever worker's exit it hears first and however the others then end."""
    async with PostgresSessionStore(pg_url):
        pass
    conn = await asyncpg.connect(pg_url)
    await conn.execute("INSERT INTO clawgate_schema VALUES ($1)", SCHEMA_VERSION + 1)
    await conn.close()
    config = tmp_path / "c.json5"
    config.write_text(shared_config(database, 5))
    env = clean_env(tmp_path / "home", {"CLAWGATE_DB_PASSWORD": PASSWORD})
    args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
    process = GatewayProcess([*args, "--workers", "4"], env)
    try:
        assert await asyncio.to_thread(process.wait, 30) == 78, "\n".join(process.lines)
    finally:
        process.stop()


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_stop_while_the_workers_look_up_their_names_tells_systemd_stopping(
    tmp_path: Path, database: str, notify: socket.socket
) -> None:
    """systemd stops a unit still starting (its workers looking up a lan bind's names, which
    a DNS server that does not answer makes minutes): it hears STOPPING=1, never READY=1,
    and the supervisor exits 0 at once."""
    config = tmp_path / "c.json5"
    config.write_text(shared_config(database, 5))
    extra = {
        "CLAWGATE_DB_PASSWORD": PASSWORD,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        **SLOW_RES_OPTIONS,
    }
    env = clean_env(tmp_path / "home", extra)
    args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
    with silent_dns(tmp_path) as dns:
        command = [*dns.prefix, sys.executable, "-m", "gateway", "run"]
        process = GatewayProcess([*args, "--bind", "lan", "--workers", "2"], env, command=command)
        try:
            dns.wait_query()
            process.wait_for_event("worker_started", 30)
            process.signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 15) == 0, "\n".join(process.lines)
        finally:
            workers = [e["pid"] for e in process.events() if e.get("event") == "worker_started"]
            process.stop()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    sent = [line for message in notifications(notify) for line in message.split("\n")]
    assert "READY=1" not in sent
    assert "STOPPING=1" in sent, sent


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_reload_while_a_worker_starts_again_reaches_it_once_it_is_ready(
    supervisor: GatewayProcess,
) -> None:
    """A SIGHUP's default action ends a process: a worker still starting (no handler yet) must
    not get one. It gets it once ready, so the reload is not lost (reload mode "off")."""
    os.kill(min(ready_pids(supervisor)), signal.SIGKILL)
    await _wait_events(supervisor, "worker_started", 3, 10)
    supervisor.signal(signal.SIGHUP)
    await _wait_events(supervisor, "worker_ready", 3, 15)
    await _wait_events(supervisor, "config_reload_requested", 2, 10)
    exits = [e["exit_code"] for e in _events_named(supervisor, "worker_exited")]
    assert exits == [-9]
    restarted = _events_named(supervisor, "worker_ready")[-1]["worker"]
    reloads = _events_named(supervisor, "config_reload_requested")
    assert sorted(e["worker"] for e in reloads) == [0, 1] and restarted in (0, 1)


@pytest.mark.postgres
@pytest.mark.slow
async def test_sigterm_while_a_worker_starts_again_is_still_a_clean_stop(
    supervisor: GatewayProcess,
) -> None:
    """The worker still starting has nothing to drain and dies of the SIGTERM itself: that is
    no failure, and systemd must not see the stop it asked for as one."""
    os.kill(min(ready_pids(supervisor)), signal.SIGKILL)
    await _wait_events(supervisor, "worker_started", 3, 10)
    supervisor.signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.wait, 15) == 0, "\n".join(supervisor.lines)


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_worker_that_cannot_be_spawned_again_is_tried_again_later(
    tmp_path: Path, database: str
) -> None:
    """A restart whose fork or exec fails (the unit's TasksMax reached, memory short, the
    installation being replaced) is one more failed start, tried again after the next delay:
    it ended the restart task with an exception, and the worker stayed dead for good."""
    venv = tmp_path / "venv"  # the supervisor's sys.executable goes through this link
    venv.symlink_to(Path(sys.executable).parent.parent)
    config = tmp_path / "c.json5"
    config.write_text(shared_config(database, 5))
    env = clean_env(tmp_path / "home", {"CLAWGATE_DB_PASSWORD": PASSWORD})
    args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
    command = [str(venv / "bin" / "python"), "-m", "gateway", "run"]
    process = GatewayProcess([*args, "--workers", "2"], env, command=command)
    try:
        process.wait_for_event("supervisor_ready", 30)
        venv.unlink()
        victim = min(ready_pids(process))
        os.kill(victim, signal.SIGKILL)
        failed = process.wait_for_event("worker_start_failed", 15)
        assert failed["level"] == "error" and failed["restart_in_s"] == 2.0
        assert "No such file or directory" in failed["error"]
        venv.symlink_to(Path(sys.executable).parent.parent)
        await _wait_events(process, "worker_ready", 3, 15)
        assert _events_named(process, "worker_ready")[-1]["pid"] != victim
    finally:
        workers = [e["pid"] for e in process.events() if e.get("event") == "worker_started"]
        process.stop()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("cleaned", ["dir", "files"])
async def test_a_worker_restarts_after_its_temp_files_were_cleaned_away(
    supervisor: GatewayProcess, http: aiohttp.ClientSession, cleaned: str
) -> None:
    """systemd-tmpfiles ages /tmp, a unit's PrivateTmp= one too (10 days by default): the
    notify sockets and the config copy the supervisor keeps there go, and a worker that died
    afterwards could never start again (its config copy missing: exit 78, again and again)."""
    victim = min(ready_pids(supervisor))
    environ = Path(f"/proc/{victim}/environ").read_bytes().split(b"\0")
    notify = next(v for v in environ if v.startswith(b"NOTIFY_SOCKET=")).partition(b"=")[2]
    notify_dir = Path(os.fsdecode(notify)).parent
    if cleaned == "dir":
        shutil.rmtree(notify_dir)
    else:
        for path in notify_dir.iterdir():
            path.unlink()
    os.kill(victim, signal.SIGKILL)
    await _wait_events(supervisor, "worker_ready", 3, 20)
    assert not [e for e in _events_named(supervisor, "worker_exited") if e["exit_code"] == 78]
    pids = {await health_pid(http, supervisor.url) for _ in range(24)}
    assert victim not in pids and len(pids) == 2


@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_supervisors_temp_dir_is_removed_at_the_next_start_and_a_live_ones_is_not(
    tmp_path: Path, database: str
) -> None:
    """A SIGKILLed supervisor (an OOM kill, `systemctl kill -s KILL`) removed nothing: its
    dir with the config copy stayed in /tmp until systemd-tmpfiles aged it, one more at each
    such death. The next supervisor removes those of dead supervisors, of this user alone."""
    # Short, as a real TMPDIR is: a worker's notify socket is made in it, and a socket's path
    # holds 107 bytes, which tmp_path's can use up (a parallel run's is longer).
    temp = Path(tempfile.mkdtemp(prefix="cgw-"))
    config = tmp_path / "c.json5"
    config.write_text(shared_config(database, 5))
    env = clean_env(tmp_path / "home", {"CLAWGATE_DB_PASSWORD": PASSWORD, "TMPDIR": str(temp)})
    # Of another user, named as ours are: not ours to judge.
    foreign = temp / "clawgate-workers-foreign"
    foreign.mkdir(mode=0o700)
    (foreign / "config.json5").write_text("{}")
    os.chown(foreign, 65534, 65534)
    started: list[GatewayProcess] = []

    def supervisor(name: str) -> tuple[GatewayProcess, set[Path]]:
        before = set(temp.iterdir())
        args = ["--config", str(config), "--state-dir", str(tmp_path / name), "--port", "0"]
        process = GatewayProcess([*args, "--workers", "2"], env)
        started.append(process)
        process.wait_for_event("supervisor_ready", 30)
        return process, set(temp.iterdir()) - before

    try:
        killed, killed_dirs = supervisor("killed")
        assert len(killed_dirs) == 1
        workers = set(killed.wait_for_event("supervisor_ready")["pids"])
        killed.proc.kill()
        killed.proc.wait(5)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers):  # stopped with it
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (killed_dir,) = killed_dirs
        assert (killed_dir / "config.json5").exists()  # what it left
        live, live_dirs = supervisor("live")
        assert not killed_dir.exists()
        _next, next_dirs = supervisor("next")
        assert len(next_dirs) == 1
        assert set(temp.iterdir()) == {foreign, *live_dirs, *next_dirs}
        (live_dir,) = live_dirs
        assert (live_dir / "config.json5").read_text() == config.read_text()
        assert (foreign / "config.json5").exists()
        assert live.proc.poll() is None
    finally:
        for process in started:
            process.stop()
        shutil.rmtree(temp, ignore_errors=True)
