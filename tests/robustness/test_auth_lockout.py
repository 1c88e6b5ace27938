"""Failed-auth lockout for a client the limiter does not exempt (http-openai.md §3,
ws-protocol.md §5.1).

These tests turn the loopback exemption on, and every 127.x.y.z address is loopback, so a
second loopback address would not do: the client must come from an address that is not
loopback at all. Two ways, each its own test case:
- `netns`: a network namespace made for the test, joined to this one by a veth pair; the
  client's socket is created inside it (setns(2) in a thread of its own), the gateway listens
  on this side of the pair. Needs root and iproute2 (CI runs as root).
- `host-address`: a non-loopback address of this machine; the gateway listens on it and the
  client binds its socket to it.
A case skips, saying why, only when its setup cannot be done here.

The exemption is turned on (it is off by default): a loopback client next to the locked-out
one is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import WSMsgType, web

from gateway.server import make_runner
from tests.support.served import AUTH, CHAT, TOKEN, ServerLog, build_app, production_logging

MAX_ATTEMPTS = 10
LOCKOUT_MS = 1500
WRONG = {"Authorization": "Bearer not-the-token"}
HI = {"messages": [{"role": "user", "content": "hi"}]}

SocketFactory = Callable[[Any], socket.socket]


@attrs.frozen
class ClientAddress:
    """Where the gateway listens, and how to make a client socket the gateway sees as coming
    from `client_ip`, which is not a loopback address."""

    server_host: str
    client_ip: str
    socket_factory: SocketFactory


# -- a network namespace ------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def netns_socket(netns: str) -> SocketFactory:
    libc = ctypes.CDLL(None, use_errno=True)

    def make(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        made: dict[str, Any] = {}

        def inside() -> None:
            # setns changes the calling thread's namespace only, so a thread of our own
            # that ends right after; the socket stays in the namespace it was made in.
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
                made["socket"] = socket.socket(family, type_, proto)
            except OSError as exc:
                made["error"] = exc
            finally:
                os.close(fd)

        thread = threading.Thread(target=inside, name=f"socket-in-{netns}")
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        return made["socket"]  # type: ignore[no-any-return]

    return make


@contextlib.contextmanager
def network_namespace() -> Iterator[ClientAddress]:
    if os.geteuid() != 0:
        pytest.skip("netns: creating a network namespace needs root")
    if shutil.which("ip") is None:
        pytest.skip("netns: iproute2's `ip` is not installed")
    tag = os.getpid() % 10_000
    netns, host_if, ns_if = f"clawgate-{tag}", f"cgr{tag}h", f"cgr{tag}n"
    subnet = f"10.213.{tag % 250}"
    try:
        ip("netns", "add", netns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"netns: `ip netns add` failed here: {exc.stderr.strip()}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", netns)
        ip("addr", "add", f"{subnet}.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", netns, "addr", "add", f"{subnet}.2/30", "dev", ns_if)
        ip("-n", netns, "link", "set", ns_if, "up")
        yield ClientAddress(f"{subnet}.1", f"{subnet}.2", netns_socket(netns))
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", host_if)  # takes its peer with it
        ip("netns", "del", netns)


# -- an address of this machine ------------------------------------------------------------------


def non_loopback_address() -> str | None:
    if shutil.which("ip") is None:
        return None
    listing = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "up"], capture_output=True, text=True, timeout=10
    )
    for interface in json.loads(listing.stdout or "[]"):
        for address in interface.get("addr_info", []):
            if address.get("scope") == "global" and not address["local"].startswith("127."):
                return str(address["local"])
    return None


def bound_socket(address: str) -> SocketFactory:
    def make(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family, type_, proto)
        sock.bind((address, 0))
        return sock

    return make


@contextlib.contextmanager
def host_address() -> Iterator[ClientAddress]:
    address = non_loopback_address()
    if address is None:
        pytest.skip("host-address: this machine has no non-loopback IPv4 address")
    yield ClientAddress(address, address, bound_socket(address))


# -- the gateway ----------------------------------------------------------------------------------


@attrs.frozen
class Gateway:
    remote_url: str  # what the non-loopback client reaches
    loopback_url: str
    remote: aiohttp.ClientSession  # its sockets come from the non-loopback address
    local: aiohttp.ClientSession
    client_ip: str
    log: ServerLog


@pytest.fixture(params=["netns", "host-address"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    setup = network_namespace if request.param == "netns" else host_address
    with setup() as address, production_logging() as log:
        settings = {
            "gateway": {
                "auth": {
                    "rateLimit": {
                        "maxAttempts": MAX_ATTEMPTS,
                        "windowMs": 60_000,
                        "lockoutMs": LOCKOUT_MS,
                        "exemptLoopback": True,
                    }
                },
                # The remote client names the gateway by this address (the Host check).
                "http": {"allowedHosts": [address.server_host]},
            }
        }
        runner = make_runner(build_app(tmp_path, settings))
        await runner.setup()
        try:
            for host in (address.server_host, "127.0.0.1"):
                await web.TCPSite(runner, host, 0).start()
            ports = {host: port for host, port, *_ in runner.addresses}
            remote_port, local_port = ports[address.server_host], ports["127.0.0.1"]
            connector = aiohttp.TCPConnector(socket_factory=address.socket_factory)
            async with (
                aiohttp.ClientSession(connector=connector) as remote,
                aiohttp.ClientSession() as local,
            ):
                yield Gateway(
                    f"http://{address.server_host}:{remote_port}",
                    f"http://127.0.0.1:{local_port}",
                    remote,
                    local,
                    address.client_ip,
                    log,
                )
        finally:
            await runner.cleanup()
        assert log.new_problems() == []


async def chat(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http.post(url + CHAT, json=HI, headers=headers) as response:
        return response.status, response.headers.get("Retry-After")


async def ws_connect(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    """A WebSocket handshake with `token`: the `connect` response (the close follows an error)."""
    async with http.ws_connect(url) as ws:
        await ws.receive_json(timeout=5)  # connect.challenge
        params = {
            "minProtocol": 4,
            "maxProtocol": 4,
            "client": {"id": "gateway-client", "version": "1", "platform": "linux", "mode": "cli"},
            "auth": {"token": token},
        }
        await ws.send_json({"type": "req", "id": "c", "method": "connect", "params": params})
        answer: dict[str, Any] = await ws.receive_json(timeout=5)
        if not answer["ok"]:
            closing = await ws.receive(timeout=5)
            assert closing.type is WSMsgType.CLOSE and closing.data == 1008, closing
        return answer


async def until_unlocked(gateway: Gateway, locked_at: float) -> float:
    """Poll with the right token until it is served; when that happened, since `locked_at`.
    Every refusal meanwhile is a 429 with a Retry-After."""
    while True:
        status, retry_after = await chat(gateway.remote, gateway.remote_url, AUTH)
        if status == 200:
            return time.monotonic() - locked_at
        assert status == 429 and retry_after is not None, status
        await asyncio.sleep(0.05)


class TestLockout:
    async def test_ten_wrong_tokens_lock_the_address_out_of_http_and_websocket(
        self, gateway: Gateway
    ) -> None:
        remote, url = gateway.remote, gateway.remote_url
        assert (await chat(remote, url, AUTH))[0] == 200  # served before: the address is fine
        # The gateway sees the client's address, which is not loopback.
        seen = [e["remote"] for e in gateway.log.read() if e["event"] == "http_request"]
        assert seen == [gateway.client_ip], seen
        assert not ipaddress.ip_address(gateway.client_ip).is_loopback
        for _ in range(MAX_ATTEMPTS):
            assert (await chat(remote, url, WRONG))[0] == 401
        locked_at = time.monotonic()

        # Locked out: the right token gets 429 with Retry-After, over HTTP and WebSocket.
        status, retry_after = await chat(remote, url, AUTH)
        assert status == 429
        assert retry_after is not None and 1 <= int(retry_after) <= -(-LOCKOUT_MS // 1000)
        refused = await ws_connect(remote, url, TOKEN)
        assert refused["error"]["details"]["code"] == "AUTH_RATE_LIMITED", refused
        assert 0 < refused["error"]["retryAfterMs"] <= LOCKOUT_MS + 1000, refused
        # The lockout is per address; loopback stays exempt (wrong tokens do not count).
        for _ in range(MAX_ATTEMPTS + 2):
            assert (await chat(gateway.local, gateway.loopback_url, WRONG))[0] == 401
        assert (await chat(gateway.local, gateway.loopback_url, AUTH))[0] == 200

        # Refused until the lockout ends, then served again.
        unlocked_after = await until_unlocked(gateway, locked_at)
        assert LOCKOUT_MS / 1000 - 0.05 <= unlocked_after <= LOCKOUT_MS / 1000 + 1.0
        assert (await ws_connect(remote, url, TOKEN))["ok"] is True

    async def test_wrong_websocket_tokens_lock_the_address_out_of_http(
        self, gateway: Gateway
    ) -> None:
        remote, url = gateway.remote, gateway.remote_url
        for _ in range(MAX_ATTEMPTS):
            answer = await ws_connect(remote, url, "not-the-token")
            assert answer["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH", answer
        locked_at = time.monotonic()
        status, retry_after = await chat(remote, url, AUTH)
        assert status == 429 and retry_after is not None
        unlocked_after = await until_unlocked(gateway, locked_at)
        assert LOCKOUT_MS / 1000 - 0.05 <= unlocked_after <= LOCKOUT_MS / 1000 + 1.0
