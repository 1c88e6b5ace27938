"""The benchmark behind `scripts/bench` (issue 7): clawgate against a fake upstream, on loopback.

Processes (each a subprocess of this one, stopped in `finally`, also on Ctrl-C and SIGTERM):
- `scripts/fake_upstream.py`, an OpenAI-compatible server (JSON, and SSE whose model id picks
  the number of chunks and the delay between them);
- clawgate (`python -m gateway run`) in front of it with the `openai-completions` provider, and
  with the built-in `echo` agent; `agents.defaults.maxConcurrent` raised above every load
  level, log level `warn` (so the per-request log line is not measured), a fresh state dir.

The load client is this process: asyncio + aiohttp, each cell bounded in time and count. It runs
on the same cores as the servers, so requests/s are a floor; CPU seconds per request of each
server (from /proc/<pid>/stat, utime + stime, over the measured window) do not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agents.store import SessionStore, TurnRecord

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONCURRENCY = (1, 16, 64, 256)
STREAM_CHUNKS = 20
LONG_CHUNKS = 200  # the long streams of the per-chunk measurement
RESULTS = ROOT / "bench-results.json"
PROFILE = ROOT / "bench-profile.txt"  # the summary; the sampled stacks go beside it
PROFILE_TOP = 30  # functions listed per ordering
PROFILE_WINDOW_S = 8.0  # sampled seconds per run: some thousands of requests at c=16
PROFILE_RATE = 200  # samples per second

# The round-2 targets: ratios to what the same run measures of the minimal relay
# (scripts/minimal_relay.py) and of the fake upstream, so a loaded host moves both sides.
TARGET_JSON_VS_RELAY = 3.0  # clawgate CPU per JSON request ≤ 3 × the minimal relay's
TARGET_STREAM_VS_RELAY = 4.0  # … per 20-chunk stream ≤ 4 × the relay's
TARGET_CHUNK_VS_UPSTREAM = 1.5  # CPU per relayed chunk, 1 ms apart ≤ 1.5 × the upstream's own
TARGET_WS_KIB = 20.0  # RSS per idle authenticated WebSocket
TARGET_REST_MIB = 80.0  # RSS at rest
TARGET_STORED_MIB = 2.0  # RSS at rest, 100k stored sessions over 10: nothing loaded per session
# Kept from issue 7.
TARGET_TTFB_MS = 2.0  # first SSE byte p50 at concurrency 1
TARGET_STORE_RATIO = 1.10  # a turn with 100k stored sessions vs with 10

# The warm-up of an HTTP matrix window after a setup's first: its processes are warm, the
# load client only opens its connections again.
HTTP_REWARM_S = 0.3

# Echo answers "[turn 1] <prompt>", one delta per word: 2 + 18 words = 20 chunks.
ECHO_STREAM_PROMPT = " ".join(f"word{i}" for i in range(STREAM_CHUNKS - 2))


@dataclass(frozen=True)
class Plan:
    """How long and how much: `--quick` (under 60 s) or the full run (under 10 minutes)."""

    name: str
    warmup_s: float  # per load cell, not measured
    window_s: float  # per load cell, measured
    # The HTTP matrix measures each cell in this many windows (window_s in all), the setups
    # taking turns: a change of the host's speed falls on clawgate and the relay alike.
    http_rounds: int
    max_requests: int  # per load cell
    chunk_window_s: float  # per stream length of the per-chunk measurement
    ws_turn_window_s: float
    idle_sockets: tuple[int, ...]
    idle_budget_s: float  # the idle-socket phase stops connecting after this long
    settle_s: float  # how long clawgate must stay quiet before its RSS is read
    stored_sessions: int
    store_turns: int


QUICK = Plan(
    "quick", warmup_s=0.25, window_s=0.8, http_rounds=1, max_requests=20_000,
    chunk_window_s=1.5,
    ws_turn_window_s=1.0, idle_sockets=(1000, 5000), idle_budget_s=4.0, settle_s=0.5,
    stored_sessions=10_000, store_turns=100,
)  # fmt: skip
FULL = Plan(
    "full", warmup_s=1.0, window_s=5.0, http_rounds=4, max_requests=200_000,
    chunk_window_s=6.0,
    ws_turn_window_s=5.0, idle_sockets=(1000, 5000), idle_budget_s=60.0, settle_s=1.0,
    stored_sessions=100_000, store_turns=600,
)  # fmt: skip


# -- processes ------------------------------------------------------------------------------


class Child:
    """A subprocess we own: its CPU and RSS from /proc; `stop()` is idempotent."""

    def __init__(
        self, name: str, args: Sequence[str], log: Path, env: dict[str, str], *, stdout: bool
    ) -> None:
        """`stdout`: read its stdout (`first_line`); otherwise it goes to /dev/null. stderr goes
        to the `log` file, never to a pipe nobody reads (a full pipe would stall the child)."""
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=self._log_file,
        )
        self.pid = self.proc.pid

    def first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"{self.name}: nothing on stdout within {timeout} s")
        line = self.proc.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
        return line

    def cpu_seconds(self, *, loop_thread: bool = False) -> float:
        """utime + stime of every thread of the process (/proc/<pid>/stat), or of its main
        thread only, which runs the event loop (/proc/<pid>/task/<pid>/stat)."""
        path = f"/proc/{self.pid}/task/{self.pid}/stat" if loop_thread else f"/proc/{self.pid}/stat"
        stat = Path(path).read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def cpu_sample(self) -> dict[str, float]:
        """CPU seconds so far: the process, and for clawgate its event-loop thread apart
        (the rest is the session store's SQLite thread)."""
        sample = {self.name: self.cpu_seconds()}
        if self.name.startswith("gw"):
            sample[f"{self.name}_loop"] = self.cpu_seconds(loop_thread=True)
        return sample

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"{self.name}: no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


class Children:
    """Every subprocess of the run, stopped together, newest first."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def add(self, child: Child) -> Child:
        self._children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self._children:
            self._children.remove(child)

    def cpu_seconds(self) -> float:
        return sum(child.cpu_seconds() for child in self._children if child.alive())

    def stop_all(self) -> None:
        while self._children:
            self._children.pop().stop()


def clean_env(home: Path) -> dict[str, str]:
    """Our environment minus anything that configures clawgate, with HOME in the tmp dir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAWGATE_", "OPENCLAW_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_upstream(children: Children, tmp: Path) -> tuple[Child, int]:
    child = children.add(
        Child(
            "upstream",
            [sys.executable, str(ROOT / "scripts" / "fake_upstream.py"), "--port", "0"],
            tmp / "upstream.log",
            clean_env(tmp),
            stdout=True,
        )
    )
    port = int(json.loads(child.first_line(15))["port"])
    return child, port


def start_relay(children: Children, tmp: Path, upstream_port: int) -> tuple[Child, str]:
    child = children.add(
        Child(
            "relay",
            [sys.executable, str(ROOT / "scripts" / "minimal_relay.py"),
             "--upstream", f"http://127.0.0.1:{upstream_port}"],
            tmp / "relay.log",
            clean_env(tmp),
            stdout=True,
        )
    )  # fmt: skip
    port = int(json.loads(child.first_line(15))["port"])
    return child, f"http://127.0.0.1:{port}"


def free_port() -> int:
    # The gateway_listening line (info) is below the `warn` level we run clawgate at, so the
    # port is picked here rather than read from the log; on loopback the race is harmless.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_config(upstream_port: int | None, history_limit: int = 50) -> dict[str, Any]:
    """Agents: `echo` (default), and per upstream answer shape one on the fake provider."""
    agents: list[dict[str, Any]] = [{"id": "echo", "default": True, "model": "echo/echo"}]
    config: dict[str, Any] = {
        "gateway": {
            "auth": {"mode": "token", "token": TOKEN},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            "shutdown": {"drainSeconds": 1},
        },
        # Above every concurrency we drive: the global run limit must not be what we measure.
        "agents": {
            "defaults": {"maxConcurrent": 4096, "historyLimit": history_limit},
            "list": agents,
        },
        # Above every store we build: maintenance must not prune the sessions we time.
        "session": {"maintenance": {"mode": "warn", "maxEntries": 10_000_000}},
        "logging": {"level": "warn"},
    }
    if upstream_port is not None:
        for model in ("c1", f"c{STREAM_CHUNKS}", f"c{LONG_CHUNKS}", *DELAYED_MODELS):
            agents.append({"id": agent_for(model), "model": f"fake/{model}"})
        config["models"] = {
            "providers": {
                "fake": {
                    "api": "openai-completions",
                    "baseUrl": f"http://127.0.0.1:{upstream_port}/v1",
                }
            }
        }
    return config


def agent_for(model: str) -> str:
    return "up-" + model.replace(".", "_")


def start_gateway(
    children: Children,
    tmp: Path,
    name: str,
    upstream_port: int | None,
    state_dir: Path,
    history_limit: int = 50,
) -> tuple[Child, str]:
    home = tmp / f"{name}-home"
    home.mkdir(exist_ok=True)
    config = tmp / f"{name}.json5"
    config.write_text(json.dumps(gateway_config(upstream_port, history_limit), indent=1))
    port = free_port()
    args = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    args += ["--state-dir", str(state_dir), "--port", str(port)]
    child = children.add(Child(name, args, tmp / f"{name}.log", clean_env(home), stdout=False))
    url = f"http://127.0.0.1:{port}"
    wait_listening(child, port)
    return child, url


def wait_listening(child: Child, port: int) -> None:
    """Until clawgate accepts connections on `port` (30 s at most, or it exited)."""
    deadline = time.monotonic() + 30
    while True:
        if not child.alive():
            raise RuntimeError(f"clawgate exited: {child.log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("clawgate did not listen within 30 s") from None
            time.sleep(0.05)


# -- the load client ------------------------------------------------------------------------


@dataclass
class Request:
    url: str
    body: bytes
    headers: dict[str, str]
    stream: bool


@dataclass
class Cell:
    """One measured load level: what the client saw and what each server spent."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # s
    first_bytes: list[float] = field(default_factory=list)  # s
    cpu: dict[str, float] = field(default_factory=dict)  # process name → CPU seconds
    client_cpu: float = 0.0
    other_cpu: float = 0.0  # CPU seconds of the machine spent outside our processes

    def summary(self) -> dict[str, Any]:
        n = max(self.requests, 1)
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": {"p50": ms(pct(self.latencies, 50)), "p99": ms(pct(self.latencies, 99))},
            "cpu_ms_per_1k": {k: round(v * 1e6 / n, 1) for k, v in self.cpu.items()},
            "client_cpu_ms_per_1k": round(self.client_cpu * 1e6 / n, 1),
            "other_load_cores": round(self.other_cpu / self.seconds, 2) if self.seconds else 0.0,
        }
        if self.first_bytes:
            out["first_byte_ms"] = {
                "p50": ms(pct(self.first_bytes, 50)),
                "p99": ms(pct(self.first_bytes, 99)),
            }
        return out


def merged(cells: Sequence[Cell]) -> Cell:
    """Several windows of the same load as one."""
    total = Cell()
    for cell in cells:
        total.requests += cell.requests
        total.errors += cell.errors
        total.seconds += cell.seconds
        total.latencies += cell.latencies
        total.first_bytes += cell.first_bytes
        for name, cpu in cell.cpu.items():
            total.cpu[name] = total.cpu.get(name, 0.0) + cpu
        total.client_cpu += cell.client_cpu
        total.other_cpu += cell.other_cpu
    return total


def per_chunk(short: Cell, long_: Cell, name: str) -> float:
    """µs of `name`'s CPU per extra chunk of the long streams over the short ones."""
    extra = LONG_CHUNKS - STREAM_CHUNKS
    cpu = long_.cpu[name] / long_.requests - short.cpu[name] / short.requests
    return round(cpu * 1e6 / extra, 2)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat, idle and iowait
    excluded): compared with ours, it tells whether something else ran during a window."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


async def one_request(
    http: aiohttp.ClientSession, request: Request
) -> tuple[bool, float, float | None]:
    """(ok, latency, time to the first body byte of a stream)."""
    started = time.perf_counter()
    first: float | None = None
    async with http.post(request.url, data=request.body, headers=request.headers) as resp:
        if request.stream:
            chunk = await resp.content.readany()
            first = time.perf_counter() - started
            tail = chunk
            while chunk:
                chunk = await resp.content.readany()
                tail = (tail + chunk)[-16:]
            ok = resp.status == 200 and tail.endswith(b"data: [DONE]\n\n")
        else:
            body = await resp.read()
            ok = resp.status == 200 and b'"choices"' in body
    return ok, time.perf_counter() - started, first


async def drive(
    request: Request,
    concurrency: int,
    plan: Plan,
    procs: Sequence[Child],
    window_s: float,
    everyone: Children,
    warmup_s: float | None = None,
) -> Cell:
    """`concurrency` workers in a loop: a warm-up (the plan's unless given), then the
    measured window. Requests that end inside the window count; workers finish the one they
    are in, nothing is cut."""
    cell = Cell()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    measuring = False
    stop = False
    ended = asyncio.Event()  # a request ended inside the window
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            while not stop:
                try:
                    ok, latency, first = await one_request(http, request)
                except (aiohttp.ClientError, OSError, TimeoutError):
                    ok, latency, first = False, 0.0, None
                if not measuring or stop:
                    continue
                ended.set()
                if not ok:
                    cell.errors += 1
                    continue
                cell.requests += 1
                cell.latencies.append(latency)
                if first is not None:
                    cell.first_bytes.append(first)
                if cell.requests >= plan.max_requests:
                    return  # ends the window early

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            await asyncio.sleep(plan.warmup_s if warmup_s is None else warmup_s)
            cpu0 = {k: v for p in procs for k, v in p.cpu_sample().items()}
            ours0 = everyone.cpu_seconds()
            client0, busy0, t0 = own_cpu(), machine_busy(), time.perf_counter()
            measuring = True
            await asyncio.wait(workers, timeout=window_s, return_when=asyncio.FIRST_COMPLETED)
            # A loaded host can stretch a long stream past a short window: then the window
            # lasts until the first request ends (at most WINDOW_STRETCH_S).
            if not ended.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), WINDOW_STRETCH_S)
            cell.seconds = time.perf_counter() - t0
            busy = machine_busy() - busy0
            cell.cpu = {k: v - cpu0[k] for p in procs for k, v in p.cpu_sample().items()}
            cell.client_cpu = own_cpu() - client0
            ours = cell.client_cpu + everyone.cpu_seconds() - ours0
            cell.other_cpu = max(0.0, busy - ours)
            stop = True
            await asyncio.wait_for(asyncio.gather(*workers), 60)
        finally:
            stop = True
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return cell


def chat_request(base: str, agent: str | None, model: str, prompt: str, stream: bool) -> Request:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    if agent is not None:
        headers["x-openclaw-agent-id"] = agent
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return Request(f"{base}/v1/chat/completions", json.dumps(body).encode(), headers, stream)


# -- the WebSocket client -------------------------------------------------------------------


class WsClient:
    """An authenticated gateway WebSocket (ws-protocol.md §2-§3): challenge, connect, hello-ok."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = 0

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, url: str, scopes: Sequence[str]
    ) -> WsClient:
        ws = await http.ws_connect(url, autoping=True, max_msg_size=0)
        client = cls(ws)
        challenge = await client.frame()
        if challenge.get("event") != "connect.challenge":
            raise RuntimeError(f"expected connect.challenge, got {challenge}")
        params = {
            "minProtocol": 3,
            "maxProtocol": 4,
            "client": {"id": "bench", "version": "1", "platform": sys.platform, "mode": "cli"},
            "role": "operator",
            "scopes": list(scopes),
            "auth": {"token": TOKEN},
        }
        request_id = await client.request("connect", params)
        while True:
            frame = await client.frame()
            if frame.get("type") == "res" and frame.get("id") == request_id:
                if not frame.get("ok"):
                    raise RuntimeError(f"connect refused: {frame}")
                return client

    async def frame(self) -> dict[str, Any]:
        msg = await self.ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"socket closed: {msg.type.name} {msg.data!r}")
        value: dict[str, Any] = json.loads(msg.data)
        return value

    async def request(self, method: str, params: dict[str, Any]) -> str:
        self._ids += 1
        request_id = f"{self._ids}:{method}"
        await self.ws.send_str(
            json.dumps({"type": "req", "id": request_id, "method": method, "params": params})
        )
        return request_id

    async def chat_turn(self, session_key: str, message: str) -> None:
        """`chat.send`, then the run's `chat` `final` (every other frame is skipped)."""
        run_id = str(uuid.uuid4())
        params = {"sessionKey": session_key, "message": message, "idempotencyKey": run_id}
        request_id = await self.request("chat.send", params)
        while True:
            frame = await self.frame()
            if frame.get("type") == "res" and frame.get("id") == request_id:
                if not frame.get("ok"):
                    raise RuntimeError(f"chat.send failed: {frame}")
            elif frame.get("event") == "chat":
                payload = frame["payload"]
                if payload.get("runId") == run_id and payload.get("state") != "delta":
                    if payload["state"] != "final":
                        raise RuntimeError(f"turn ended {payload['state']}")
                    return

    async def drain(self) -> None:
        """Read and drop frames until the socket closes (an idle client still reads)."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return
            if msg.type is aiohttp.WSMsgType.ERROR:
                return


async def ws_turns(base: str, gateway: Child, connections: int, window_s: float) -> Cell:
    """Turns/s over the echo agent: each connection runs one session, one turn after another."""
    cell = Cell()
    url = base.replace("http://", "ws://", 1)
    measuring = stop = False
    async with aiohttp.ClientSession() as http:
        clients = [
            await WsClient.connect(http, url, ["operator.write"]) for _ in range(connections)
        ]

        async def worker(client: WsClient, index: int) -> None:
            key = f"bench-ws-{index}-{uuid.uuid4().hex[:8]}"
            while not stop:
                started = time.perf_counter()
                await client.chat_turn(key, "hello from the bench")
                if measuring and not stop:
                    cell.requests += 1
                    cell.latencies.append(time.perf_counter() - started)

        workers = [asyncio.create_task(worker(c, i)) for i, c in enumerate(clients)]
        try:
            await asyncio.sleep(0.5)
            cpu0, t0 = gateway.cpu_sample(), time.perf_counter()
            measuring = True
            await asyncio.sleep(window_s)
            cell.seconds = time.perf_counter() - t0
            cell.cpu = {k: v - cpu0[k] for k, v in gateway.cpu_sample().items()}
            stop = True
            await asyncio.wait_for(asyncio.gather(*workers), 30)
        finally:
            stop = True
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for client in clients:
                await client.ws.close()
    return cell


async def idle_sockets(
    base: str, gateway: Child, plan: Plan, stop_gateway: Callable[[], None]
) -> dict[str, Any]:
    """RSS of the gateway with `plan.idle_sockets` idle authenticated WebSockets open, each
    reading what the gateway sends as a real client would; per socket: (RSS_n − RSS_0) / n.

    Every connect changes presence (ws-protocol.md §9.2), which the gateway broadcasts to every
    connection, coalesced to one a second and bounded in length. The sockets are opened in
    steps (100, 250, 500, then the plan's counts); the phase stops at the first step not done
    within `plan.idle_budget_s`, or that takes RSS over RSS_GUARD_KIB, and reports the steps
    not reached as such. The gateway is stopped before the clients close, so their
    departures (presence changes too) cost nothing.
    """
    url = base.replace("http://", "ws://", 1)
    out: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        # Warm the code paths (imports, caches) so RSS_0 is not inflated by first use.
        warm = await WsClient.connect(http, url, ["operator.read"])
        await warm.ws.close()
        await asyncio.sleep(0.5)
        rss0 = gateway.rss_kib()
        out["rss_0_kib"] = rss0
        counts = plan.idle_sockets
        out["targets"] = list(counts)
        clients: list[WsClient] = []
        drains: list[asyncio.Task[None]] = []
        steps = sorted({*(n for n in IDLE_STEPS if n < max(counts)), *counts})
        started = time.perf_counter()
        stopped: str | None = None
        try:
            for count in steps:
                if stopped is not None:
                    out[str(count)] = {"reached": False, "stopped": stopped}
                    continue
                while len(clients) < count:
                    batch = min(IDLE_CONNECT_BATCH, count - len(clients))
                    new = await asyncio.gather(
                        *(WsClient.connect(http, url, ["operator.read"]) for _ in range(batch))
                    )
                    clients.extend(new)
                    drains.extend(asyncio.create_task(c.drain()) for c in new)
                    elapsed = time.perf_counter() - started
                    rss = gateway.rss_kib()
                    if elapsed > plan.idle_budget_s or rss > RSS_GUARD_KIB:
                        stopped = (
                            f"{len(clients)} sockets after {elapsed:.0f} s, RSS {rss // 1024} MiB"
                        )
                        break
                if stopped is not None:
                    out[str(count)] = {"reached": False, "stopped": stopped}
                    continue
                connect_s = time.perf_counter() - started
                await settle(gateway, plan.settle_s)
                rss = gateway.rss_kib()
                out[str(count)] = {
                    "reached": True,
                    "rss_kib": rss,
                    "per_socket_kib": round((rss - rss0) / count, 2),
                    "connect_seconds": round(connect_s, 2),
                }
        finally:
            stop_gateway()
            for task in drains:
                task.cancel()
            await asyncio.gather(*drains, return_exceptions=True)
            await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    return out


async def settle(child: Child, quiet_s: float, limit_s: float = 15.0) -> None:
    """Until the process stops using CPU (its queued frames are written) for `quiet_s`."""
    deadline = time.monotonic() + limit_s
    last = child.cpu_seconds()
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = child.cpu_seconds()
        if now - last < 0.02 * quiet_s:
            return
        last = now


# -- the store ------------------------------------------------------------------------------


async def fill_store(state_dir: Path, sessions: int) -> list[str]:
    """`sessions` sessions with one turn each, written through SessionStore.

    The store's public calls are one durable transaction each (two fsyncs per session); to
    build 100,000 in seconds the same statements run here in batches, one transaction each.
    """
    store = SessionStore(state_dir)
    await store.open()
    keys = [f"agent:echo:bench-{i}" for i in range(sessions)]
    now = int(time.time() * 1000) - 60_000

    def write(batch: list[str]) -> Callable[[Any], None]:
        def fn(db: Any) -> None:
            for key in batch:
                row, _ = SessionStore._create(db, key, "echo", now, None)
                turn = TurnRecord(
                    key=key, agent_id="echo", session_id=row.session_id, run_id=uuid.uuid4().hex,
                    user_text="hi", user_timestamp=now, assistant_text="[turn 1] hi",
                    assistant_timestamp=now, input_tokens=1, output_tokens=3, stop_reason="stop",
                    status="done", provider="echo", model="echo", api="echo",
                )  # fmt: skip
                SessionStore._append_turn(db, turn)

        return fn

    try:
        for start in range(0, sessions, 10_000):
            await store._call(store._write, write(keys[start : start + 10_000]))
        assert await store.count() == sessions
    finally:
        await store.aclose()
    return keys


async def store_turns(
    stores: dict[str, tuple[str, list[str]]], turns: int
) -> dict[str, dict[str, Any]]:
    """Echo turns (HTTP, JSON, concurrency 1) on stored sessions of each gateway, interleaved
    in rounds so that drift of the machine hits every store alike.

    Each store serves turns on 10 of its sessions (the small store has no more), so both run
    the same code path and only the size of the tables differs; "large_cold" adds turns on a
    different session each time, which loads the row from the 100,000 first.
    """
    picked = {name: random.sample(keys, 10) for name, (_, keys) in stores.items()}
    base_large, keys_large = stores["large"]
    cold = iter(random.sample(keys_large, min(len(keys_large), turns + 10)))
    samples: dict[str, list[float]] = {name: [] for name in (*stores, "large_cold")}
    rounds = 10
    async with aiohttp.ClientSession() as http:

        async def timed(name: str, base: str, key: str) -> None:
            ok, latency, _ = await one_request(http, session_turn(base, key))
            if not ok:
                raise RuntimeError(f"turn on the {name} store failed")
            samples[name].append(latency)

        for name, (base, _) in stores.items():  # warm-up: the sessions are live from here
            for key in picked[name]:
                await one_request(http, session_turn(base, key))
        for _ in range(rounds):
            for name, (base, _) in stores.items():
                for i in range(turns // rounds):
                    await timed(name, base, picked[name][i % 10])
            for _ in range(turns // rounds):
                await timed("large_cold", base_large, next(cold))
    return {
        name: {"turns": len(s), "p50_ms": ms(pct(s, 50)), "p99_ms": ms(pct(s, 99))}
        for name, s in samples.items()
    }


def session_turn(base: str, key: str) -> Request:
    request = chat_request(base, "echo", "openclaw", "hi", stream=False)
    request.headers = {**request.headers, "x-openclaw-session-key": key}
    return request


# -- the run --------------------------------------------------------------------------------

DELAYED_MODELS = (f"c{STREAM_CHUNKS}-d1", f"c{LONG_CHUNKS}-d1")
PARTS = ("http", "chunks", "ws", "store")
IDLE_STEPS = (100, 250, 500)  # sockets; see idle_sockets
# Handshakes in flight at once: the default `gateway.ws.preAuth.maxPerAddress` (32) refuses
# more unauthenticated sockets from one address with a 503.
IDLE_CONNECT_BATCH = 32
WINDOW_STRETCH_S = 30.0
CHUNK_ROUNDS = 3  # alternations of short and long streams in the per-chunk measurement
OTHER_LOAD_WARN = 0.2  # cores; softirq work of our own sockets shows up as a little
RSS_GUARD_KIB = 3 * 1024 * 1024  # the idle-socket phase stops before clawgate passes 3 GiB


@dataclass
class Run:
    plan: Plan
    tmp: Path
    children: Children
    results: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async def http_matrix(
        self,
        upstream: Child,
        up_port: int,
        gateway: Child,
        base: str,
        relay: Child,
        relay_base: str,
    ) -> None:
        """Every setup at one load level, then the next level. Within a level the setups take
        turns for `plan.http_rounds` windows each (the order reversed every other round), so
        the ratios between them (clawgate over the relay) compare interleaved windows, not
        windows that a change of the host's speed between them would skew."""
        direct = f"http://127.0.0.1:{up_port}"
        setups: list[tuple[str, str, Callable[[bool], Request], list[Child]]] = [
            ("a", "upstream", lambda s: chat_request(direct, None, upstream_model(s), "hi", s),
             [upstream]),
            ("b", "clawgate+upstream",
             lambda s: chat_request(base, agent_for(upstream_model(s)), "openclaw", "hi", s),
             [gateway, upstream]),
            ("c", "clawgate echo",
             lambda s: chat_request(base, "echo", "openclaw", echo_prompt(s), s), [gateway]),
            ("r", "aiohttp relay+up",
             lambda s: chat_request(relay_base, None, upstream_model(s), "hi", s),
             [relay, upstream]),
        ]  # fmt: skip
        cells: list[dict[str, Any]] = []
        rounds = self.plan.http_rounds
        for stream in (False, True):
            kind = "stream" if stream else "json"
            for concurrency in CONCURRENCY:
                self.say(f"  {kind:<6} concurrency {concurrency}: a, b, c and r, {rounds} rounds")
                windows: dict[str, list[Cell]] = {key: [] for key, *_ in setups}
                for round_ in range(rounds):
                    order = setups if round_ % 2 == 0 else setups[::-1]
                    for key, _label, build, procs in order:
                        windows[key].append(await drive(
                            build(stream), concurrency, self.plan, procs,
                            self.plan.window_s / rounds, self.children,
                            # Warm after its first window: the rest only reconnect.
                            warmup_s=self.plan.warmup_s if round_ == 0 else HTTP_REWARM_S,
                        ))  # fmt: skip
                for key, label, *_ in setups:
                    cell = merged(windows[key])
                    cells.append(
                        {"setup": key, "label": label, "kind": kind, "concurrency": concurrency}
                        | cell.summary()
                    )
        order = {key: i for i, (key, *_) in enumerate(setups)}
        cells.sort(key=lambda c: (order[c["setup"]], c["kind"] == "stream", c["concurrency"]))
        self.results["http"] = cells

    async def chunk_cost(
        self, upstream: Child, gateway: Child, base: str, relay: Child, relay_base: str
    ) -> None:
        """Clawgate CPU per relayed chunk: the difference between long and short streams
        (same request path, only the number of chunks differs) divided by the extra chunks.
        With 1 ms between chunks each chunk is its own read, event and write, as with a
        real model; without delay the upstream sends a stream in one write (the best case).
        Short and long alternate in rounds, so that a change of the machine's speed during
        the run (a shared host) falls on both. Chunks 1 ms apart are also measured through
        the minimal relay, in the same rounds: what relaying a chunk costs at the least."""
        out: dict[str, Any] = {}
        rounds = CHUNK_ROUNDS
        for label, short, long_ in (
            ("no_delay", f"c{STREAM_CHUNKS}", f"c{LONG_CHUNKS}"),
            ("delay_1ms", *DELAYED_MODELS),
        ):
            setups: list[tuple[str, Child, Callable[[str], Request]]] = [
                ("", gateway, lambda m: chat_request(base, agent_for(m), "openclaw", "hi", True))
            ]
            if label == "delay_1ms":
                setups.append(
                    ("relay_", relay, lambda m: chat_request(relay_base, None, m, "hi", True))
                )
            cells: dict[tuple[str, str], list[Cell]] = {
                (prefix, m): [] for prefix, *_ in setups for m in (short, long_)
            }
            self.say(f"  chunk cost: {short} and {long_}, concurrency 16, {rounds} rounds")
            for _ in range(rounds):
                for prefix, server, build in setups:
                    for model_id in (short, long_):
                        cell = await drive(
                            build(model_id), 16, self.plan, [server, upstream],
                            self.plan.chunk_window_s / rounds, self.children,
                        )  # fmt: skip
                        if cell.requests == 0 or cell.errors:
                            raise RuntimeError(f"chunk cost run {model_id}: {cell.summary()}")
                        cells[prefix, model_id].append(cell)
            for prefix, server, _ in setups:
                short_cell, long_cell = merged(cells[prefix, short]), merged(cells[prefix, long_])
                if not prefix:
                    out[short], out[long_] = short_cell.summary(), long_cell.summary()
                out[f"{label}_{prefix}us_per_chunk"] = per_chunk(short_cell, long_cell, server.name)
                # The same difference for the fake upstream, which only writes the chunks.
                out[f"{label}_{prefix}upstream_us_per_chunk"] = per_chunk(
                    short_cell, long_cell, upstream.name
                )
        self.results["chunk_cost"] = out

    async def ws(self, gateway: Child, base: str) -> None:
        turns: dict[str, Any] = {}
        for connections in (1, 16):
            self.say(f"  ws chat.send turns, {connections} connection(s)")
            cell = await ws_turns(base, gateway, connections, self.plan.ws_turn_window_s)
            turns[str(connections)] = cell.summary()
        self.results["ws_turns"] = turns

    async def idle(self) -> None:
        """On a clawgate of its own, so no earlier load has grown its heap."""
        gateway, base = start_gateway(self.children, self.tmp, "gw-idle", None, self.tmp / "idle")
        self.say(f"  idle WebSockets: {', '.join(map(str, self.plan.idle_sockets))}")
        stop = functools.partial(self.children.stop, gateway)
        self.results["idle_ws"] = await idle_sockets(base, gateway, self.plan, stop)

    async def store(self) -> None:
        stores: dict[str, tuple[str, list[str]]] = {}
        sizes = {"small": 10, "large": self.plan.stored_sessions}
        rest: dict[str, int] = {}
        for name, size in sizes.items():
            state = self.tmp / f"store-{name}"
            self.say(f"  store: writing {size:,} sessions")
            started = time.perf_counter()
            keys = await fill_store(state, size)
            self.say(f"  store: {size:,} sessions in {time.perf_counter() - started:.1f} s")
            # One turn of history: the 10 sessions of the small store take many turns each,
            # and must not replay more history than the large store's sessions do.
            child, base = start_gateway(self.children, self.tmp, f"gw-{name}", None, state, 1)
            stores[name] = (base, keys)
            await settle(child, self.plan.settle_s)
            rest[name] = child.rss_kib()  # before any turn: no session is loaded yet
        self.say(f"  store: {self.plan.store_turns} turns on each")
        timed = await store_turns(stores, self.plan.store_turns)
        self.results["store"] = {
            "sessions": sizes,
            **timed,
            "ratio": round(timed["large"]["p50_ms"] / timed["small"]["p50_ms"], 3),
            "rest_rss_kib": rest,
        }

    async def all(self, parts: Sequence[str]) -> None:
        upstream, up_port = start_upstream(self.children, self.tmp)
        gateway, base = start_gateway(self.children, self.tmp, "gw", up_port, self.tmp / "state")
        if "http" in parts or "chunks" in parts:
            relay, relay_base = start_relay(self.children, self.tmp, up_port)
            if "http" in parts:
                self.say("HTTP matrix")
                await self.http_matrix(upstream, up_port, gateway, base, relay, relay_base)
            if "chunks" in parts:
                self.say("per-chunk cost")
                await self.chunk_cost(upstream, gateway, base, relay, relay_base)
            self.children.stop(relay)
        if "ws" in parts:
            self.say("WebSocket")
            await self.ws(gateway, base)
        self.children.stop(gateway)
        if "ws" in parts:
            await self.idle()
        if "store" in parts:
            self.say("session store")
            await self.store()


def upstream_model(stream: bool) -> str:
    """JSON: a one-chunk answer; streams: STREAM_CHUNKS chunks."""
    return f"c{STREAM_CHUNKS}" if stream else "c1"


def echo_prompt(stream: bool) -> str:
    """Echo's answer has one chunk per word: 3 for JSON, STREAM_CHUNKS for streams."""
    return ECHO_STREAM_PROMPT if stream else "hi"


# -- the report -----------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: the measurement, the limit, their ratio (≤ 1 is met)."""
    out: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, limit: float, unit: str) -> None:
        """`measured` None: the run could not measure it (a missed target too)."""
        ratio = None if measured is None else round(measured / limit, 3)
        out.append(
            {
                "target": name,
                "measured": None if measured is None else round(measured, 3),
                "limit": round(limit, 3),
                "unit": unit,
                "ratio": ratio,
                "met": ratio is not None and ratio <= 1.0,
            }
        )

    http = results.get("http", [])
    relay = {
        (c["kind"], c["concurrency"]): c["cpu_ms_per_1k"]["relay"]
        for c in http
        if c["setup"] == "r"
    }
    for cell in http:
        if cell["setup"] == "b" and (cell["kind"], cell["concurrency"]) in relay:
            reference = relay[cell["kind"], cell["concurrency"]]
            limit = TARGET_JSON_VS_RELAY if cell["kind"] == "json" else TARGET_STREAM_VS_RELAY
            what = "JSON request" if cell["kind"] == "json" else f"{STREAM_CHUNKS}-chunk stream"
            add(
                f"CPU/{what} vs relay's, c={cell['concurrency']}",
                cell["cpu_ms_per_1k"]["gw"] / reference if reference else None,
                limit,
                "×",
            )
    for cell in http:
        if cell["setup"] in ("b", "c") and cell["kind"] == "stream" and cell["concurrency"] == 1:
            add(
                f"first SSE byte p50, ({cell['setup']}) c=1",
                cell["first_byte_ms"]["p50"],
                TARGET_TTFB_MS,
                "ms",
            )
    if chunk := results.get("chunk_cost"):
        upstream = chunk["delay_1ms_upstream_us_per_chunk"]
        add(
            "CPU per relayed chunk (1 ms apart) vs upstream's",
            chunk["delay_1ms_us_per_chunk"] / upstream if upstream > 0 else None,
            TARGET_CHUNK_VS_UPSTREAM,
            "×",
        )
    idle = results.get("idle_ws", {})
    for count, value in idle.items():
        if isinstance(value, dict) and int(count) in idle["targets"]:
            add(
                f"RSS per idle WebSocket, {int(count):,} open",
                value.get("per_socket_kib"),
                TARGET_WS_KIB,
                "KiB",
            )
    if "rss_0_kib" in idle:
        add("RSS at rest (no socket open)", idle["rss_0_kib"] / 1024, TARGET_REST_MIB, "MiB")
    if store := results.get("store"):
        add(
            f"turn p50, {store['sessions']['large']:,} vs 10 stored sessions",
            store["ratio"],
            TARGET_STORE_RATIO,
            "×",
        )
        if rest := store.get("rest_rss_kib"):
            add(
                f"RSS at rest, {store['sessions']['large']:,} minus 10 stored sessions",
                (rest["large"] - rest["small"]) / 1024,
                TARGET_STORED_MIB,
                "MiB",
            )
    return out


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    head = (
        f"{'setup':<22} {'kind':<6} {'conc':>4} {'req/s':>8} {'lat p50':>8} {'lat p99':>8}"
        f" {'1st p50':>8} {'1st p99':>8} {'gw CPU':>8} {'gw loop':>8} {'up CPU':>8}"
        f" {'errors':>6}"
    )
    lines.append(head)
    lines.append(
        f"{'':<22} {'':<6} {'':>4} {'':>8} {'ms':>8} {'ms':>8} {'ms':>8} {'ms':>8}"
        f" {'ms/1k':>8} {'ms/1k':>8} {'ms/1k':>8}"
    )
    for cell in results.get("http", []):
        cpu = cell["cpu_ms_per_1k"]
        first = cell.get("first_byte_ms", {})
        lines.append(
            f"({cell['setup']}) {cell['label']:<18} {cell['kind']:<6} {cell['concurrency']:>4}"
            f" {cell['rps']:>8,.0f} {cell['latency_ms']['p50']:>8.2f}"
            f" {cell['latency_ms']['p99']:>8.2f} {fmt(first.get('p50'))} {fmt(first.get('p99'))}"
            f" {fmt(cpu.get('gw', cpu.get('relay')), 0)} {fmt(cpu.get('gw_loop'), 0)}"
            f" {fmt(cpu.get('upstream'), 0)}"
            f" {cell['errors']:>6}"
        )
    lines.append("")
    if chunk := results.get("chunk_cost"):
        lines.append(
            f"per relayed SSE chunk, clawgate CPU of {LONG_CHUNKS}- minus {STREAM_CHUNKS}-chunk"
            f" streams / {LONG_CHUNKS - STREAM_CHUNKS}, c=16:"
            f" {chunk['no_delay_us_per_chunk']} µs sent without delay,"
            f" {chunk['delay_1ms_us_per_chunk']} µs sent 1 ms apart"
            f" (the fake upstream's own: {chunk['no_delay_upstream_us_per_chunk']} µs,"
            f" {chunk['delay_1ms_upstream_us_per_chunk']} µs)"
        )
        if (relayed := chunk.get("delay_1ms_relay_us_per_chunk")) is not None:
            own = chunk["delay_1ms_relay_upstream_us_per_chunk"]
            lines.append(
                f"the same through the minimal relay (r), 1 ms apart: {relayed} µs"
                f" (the fake upstream's own meanwhile: {own} µs)"
            )
    if any(c["setup"] == "r" for c in results.get("http", [])):
        lines.append(
            "(r): scripts/minimal_relay.py, aiohttp relaying bytes to the same upstream (no auth,"
            " sessions, store or events); its CPU is in the gw CPU column"
        )
    if derived := table_chunk_cost(results.get("http", [])):
        lines.append(
            f"per relayed SSE chunk from the table, ((b) stream − (b) JSON) / {STREAM_CHUNKS}: "
            + ", ".join(f"{us} µs at c={c}" for c, us in derived.items())
        )
    for connections, cell in results.get("ws_turns", {}).items():
        lines.append(
            f"WebSocket chat.send turns (echo), {connections:>2} connection(s):"
            f" {cell['rps']:,.0f} turns/s, p50 {cell['latency_ms']['p50']:.2f} ms,"
            f" p99 {cell['latency_ms']['p99']:.2f} ms,"
            f" gw CPU {cell['cpu_ms_per_1k']['gw']:,.0f} ms/1k turns"
        )
    idle = results.get("idle_ws", {})
    for count, value in idle.items():
        if not isinstance(value, dict):
            continue
        if not value["reached"]:
            lines.append(
                f"idle WebSockets: {int(count):>5,} not reached (stopped: {value['stopped']})"
            )
            continue
        lines.append(
            f"idle WebSockets: {int(count):>5,} open → RSS {value['rss_kib'] / 1024:,.1f} MiB"
            f" (none open: {idle['rss_0_kib'] / 1024:,.1f} MiB), {value['per_socket_kib']} KiB"
            f" each; connecting took {value['connect_seconds']} s"
        )
    if store := results.get("store"):
        large, small, cold = store["large"], store["small"], store["large_cold"]
        lines.append(
            f"turn on a stored session (echo, JSON, c=1): p50 {large['p50_ms']:.2f} ms"
            f" with {store['sessions']['large']:,} stored sessions, {small['p50_ms']:.2f} ms"
            f" with 10 (p99 {large['p99_ms']:.2f} / {small['p99_ms']:.2f} ms); a session not"
            f" loaded yet, of the {store['sessions']['large']:,}: p50 {cold['p50_ms']:.2f} ms"
        )
        if rest := store.get("rest_rss_kib"):
            lines.append(
                f"RSS at rest before any turn: {rest['large'] / 1024:,.1f} MiB with"
                f" {store['sessions']['large']:,} stored sessions,"
                f" {rest['small'] / 1024:,.1f} MiB with 10"
            )
    if (load := other_load(results)) > OTHER_LOAD_WARN:
        lines.append(
            f"WARNING: other processes kept up to {load} cores busy during measured windows;"
            " these numbers are disturbed, run again on a quiet machine."
        )
    lines.append("")
    lines.append(f"{'target':<52} {'measured':>12} {'limit':>10} {'ratio':>7}  result")
    for t in results["targets"]:
        measured = "n/a" if t["measured"] is None else t["measured"]
        ratio = "-" if t["ratio"] is None else t["ratio"]
        result = "met" if t["met"] else "MISSED" if t["measured"] is not None else "NOT MEASURED"
        lines.append(
            f"{t['target']:<52} {measured:>8} {t['unit']:<3}"
            f" {t['limit']:>6} {t['unit']:<3} {ratio:>6}  {result}"
        )
    return "\n".join(lines)


def other_load(results: dict[str, Any]) -> float:
    """The most CPU (cores) that processes other than ours used during a measured window."""
    cells = [*results.get("http", []), *results.get("chunk_cost", {}).values()]
    return max((c["other_load_cores"] for c in cells if isinstance(c, dict)), default=0.0)


def table_chunk_cost(http: list[dict[str, Any]]) -> dict[int, float]:
    """Per concurrency: clawgate CPU per (b) stream minus per (b) JSON request, per chunk."""
    cpu = {
        (c["kind"], c["concurrency"]): c["cpu_ms_per_1k"]["gw"] for c in http if c["setup"] == "b"
    }
    return {
        conc: round((cpu["stream", conc] - cpu["json", conc]) / STREAM_CHUNKS, 1)
        for kind, conc in cpu
        if kind == "stream" and ("json", conc) in cpu
    }


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return f"{'-':>8}"
    return f"{value:>8,.{digits}f}"


def calibration_ms() -> float:
    """CPU ms of a fixed pure-Python workload in this process. On a shared host the speed of
    a core changes from run to run (and within one); this number tells runs apart."""
    sample = {"id": "chatcmpl-x", "choices": [{"index": 0, "delta": {"content": " token"}}]}
    started = time.process_time()
    for _ in range(20_000):
        json.loads(json.dumps(sample))
    return round((time.process_time() - started) * 1000, 1)


def machine() -> dict[str, Any]:
    import aiohttp as _aiohttp

    model_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model_name,
        "python": platform.python_version(),
        "aiohttp": _aiohttp.__version__,
        "platform": platform.platform(),
    }


# -- the profile ----------------------------------------------------------------------------


def py_spy() -> str:
    """py-spy (a sampling profiler: every thread, next to no overhead on the process it
    reads), installed into the venv with pip on first use."""
    path = Path(sys.executable).with_name("py-spy")
    if not path.exists():
        print("  profile: installing py-spy into the venv", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "py-spy"],
            check=True,
        )  # fmt: skip
    return str(path)


async def profile_runs(
    tmp: Path, children: Children, plan: Plan, output: Path
) -> list[tuple[str, Path]]:
    """A JSON and a stream load (c=16, over the fake upstream), each on a clawgate of its own,
    sampled by py-spy during the measured window. Per run the stacks go to
    `bench-profile-<kind>.folded` (flamegraph.pl or speedscope.app read them), and the top
    functions by own and by inclusive samples, with each thread's share, to `output`
    (`profile` writes it from the headings and stacks returned)."""
    spy = py_spy()
    _, up_port = start_upstream(children, tmp)
    sections: list[tuple[str, Path]] = []
    window = dataclasses.replace(plan, window_s=PROFILE_WINDOW_S)
    for stream in (False, True):
        kind = "stream" if stream else "json"
        folded = output.with_name(f"bench-profile-{kind}.folded")
        name = f"gw-profile-{kind}"
        gateway, base = start_gateway(children, tmp, name, up_port, tmp / f"state-{name}")
        request = chat_request(base, agent_for(upstream_model(stream)), "openclaw", "hi", stream)
        print(f"  profile: {kind}, concurrency 16", file=sys.stderr, flush=True)

        async def sample(pid: int = gateway.pid, out: Path = folded) -> int:
            await asyncio.sleep(window.warmup_s)  # as `drive` does: the window only
            proc = await asyncio.create_subprocess_exec(
                spy, "record", "--pid", str(pid), "--duration", str(int(PROFILE_WINDOW_S)),
                "--rate", str(PROFILE_RATE), "--format", "raw", "--threads", "--nonblocking",
                "--output", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-1000:]}")
            return proc.returncode

        sampler = asyncio.create_task(sample())
        cell = await drive(request, 16, window, [gateway], window.window_s, children)
        await sampler
        children.stop(gateway)
        requests = cell.requests
        heading = (
            f"== {kind}: c=16, {STREAM_CHUNKS if stream else 1} upstream chunk(s) per request,"
            f" {requests} requests in {cell.seconds:.1f} s, clawgate CPU"
            f" {cell.cpu[gateway.name] * 1e6 / max(requests, 1):,.0f} ms/1k"
            f" (stacks: {folded.name}) =="
        )
        sections.append((heading, folded))
    return sections


def folded_summary(folded: str) -> str:
    """Top functions of py-spy's collapsed stacks: by own samples (the frame on top) and by
    inclusive samples (anywhere in the stack), in % of all samples, and per thread."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if frames[0].startswith("thread "):
            threads[frames[0]] = threads.get(frames[0], 0) + count
            frames = frames[1:]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"{total} samples ({PROFILE_RATE}/s while the process ran, idle threads left out)"]
    lines += [f"  {100 * n / total:5.1f}%  {t}" for t, n in sorted(threads.items(), key=by_count)]
    for title, table in (("by own samples", own), ("by inclusive samples", inclusive)):
        lines.append(f"-- {title} --")
        top = sorted(table.items(), key=by_count)[:PROFILE_TOP]
        lines += [f"  {100 * n / max(total, 1):5.1f}%  {frame}" for frame, n in top]
    return "\n".join(lines) + "\n"


def by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


# -- main -----------------------------------------------------------------------------------


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def interrupted_as_keyboard() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the run, so `finally` stops the subprocesses (SIGINT
    too: a shell starts background jobs with it ignored, and Python keeps that)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in stops}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def profile(plan: Plan) -> int:
    children = Children()
    with interrupted_as_keyboard(), tempfile.TemporaryDirectory(prefix="clawgate-bench-") as tmp:
        try:
            sections = asyncio.run(profile_runs(Path(tmp), children, plan, PROFILE))
        except KeyboardInterrupt:
            print("scripts/bench: interrupted", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
    PROFILE.write_text(
        "\n".join(f"{head}\n{folded_summary(path.read_text())}" for head, path in sections)
    )
    print(f"profile of a JSON and a stream run (c=16) in {PROFILE}, the stacks beside it")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="clawgate against a fake OpenAI-compatible upstream"
    )
    parser.add_argument("--quick", action="store_true", help="a short run (under 60 s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: all of {','.join(PARTS)})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"instead of the benchmark, profile a JSON and a stream run into {PROFILE.name}",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="instead: --workers 2 vs 1 and postgres vs sqlite, as ratios (scripts/bench_scale.py)",
    )
    args = parser.parse_args(argv)
    if args.scale:
        import bench_scale

        output = args.output if args.output != RESULTS else ROOT / "bench-scale-results.json"
        return bench_scale.run(args.quick, output)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    raise_fd_limit()
    if args.profile:
        return profile(plan)
    started = time.perf_counter()
    calibration = [calibration_ms()]
    children = Children()
    with interrupted_as_keyboard(), tempfile.TemporaryDirectory(prefix="clawgate-bench-") as tmp:
        run = Run(plan, Path(tmp), children)
        try:
            asyncio.run(run.all(parts))
        except KeyboardInterrupt:
            print("scripts/bench: interrupted", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
    calibration.append(calibration_ms())
    results = run.results
    results["targets"] = targets(results)
    results["meta"] = {
        "plan": plan.name,
        "seconds": round(time.perf_counter() - started, 1),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "note": "load client, upstream and clawgate share the machine's cores",
        "max_other_load_cores": other_load(results),
        "calibration_ms": calibration,
    }
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    cpus = results["meta"]["machine"]["cpus"]
    print(
        f"clawgate benchmark ({plan.name}): the load client, the fake upstream and clawgate share"
        f" this machine's {cpus} cores, so req/s are a floor; CPU is per 1,000 requests, from"
        " /proc over the measured window. clawgate logs at level warn. Speed of this host:"
        f" {calibration[0]} ms at the start, {calibration[1]} ms at the end, for a fixed Python"
        " workload (lower is faster; compare runs by it)."
    )
    print(table(results))
    print(f"({results['meta']['seconds']} s; results in {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
