"""What a client can make the gateway keep between its requests, measured in-process.

A gateway served on a real socket (tests/support/served.py), the requests sent over it, and
the memory the process holds afterwards traced (tracemalloc): each structure a client fills
must stay within its bound however the client shapes what it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import socket
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents.history import HISTORY_CACHE_MAX_BYTES
from gateway.state import AppOptions
from tests.support.served import AUTH, CHAT, build_app, served

MIB = 1024 * 1024


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def held() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def chat(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    # A file-like body: aiohttp warns that a large bytes body would block the loop.
    data = io.BytesIO(json.dumps(body).encode())
    async with http.post(url + CHAT, data=data, headers=AUTH) as response:
        assert response.status == 200, await response.text()


class TestReplayWindows:
    # A client's history of tool calls: 2 MiB of arguments per session, in 32 sessions,
    # twice the replay cache's budget (agents/history.py).
    ARGUMENTS = json.dumps({"data": "x" * (2 * MIB)})
    SESSIONS = 32
    # The budget, and room for what the gateway's own first requests leave allocated.
    LIMIT = HISTORY_CACHE_MAX_BYTES + 16 * MIB

    def history(self, user: str) -> dict[str, Any]:
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "f", "arguments": self.ARGUMENTS},
        }
        return {
            "model": "openclaw",
            "user": user,
            "messages": [
                {"role": "user", "content": "call f"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"},
                {"role": "user", "content": "and now?"},
            ],
        }

    async def test_sessions_of_large_tool_calls_are_kept_within_the_cache_budget(
        self, tmp_path: Path, traced: None
    ) -> None:
        async with served(build_app(tmp_path)) as gateway, aiohttp.ClientSession() as http:
            before = held()
            for n in range(self.SESSIONS):
                user = f"client-{n}"
                await chat(http, gateway.url, self.history(user))
                # The next turn reads the window from the store, and keeps it.
                more = {"role": "user", "content": "more"}
                await chat(
                    http, gateway.url, {"model": "openclaw", "user": user, "messages": [more]}
                )
            grown = held() - before
        assert grown < self.LIMIT, grown // MIB


class TestStalledReaders:
    """A client that stops reading an answer (a zero TCP window: its peer still acknowledges
    the probes) would hold the answer's bytes, its handler and its run's events for as long
    as it keeps the connection open; past the send deadline it is cut, as a WebSocket client
    that takes in no byte is (ws/connection.py)."""

    DEADLINE = 1.0
    # The client reads nothing for this long: several deadlines.
    STALL = 5.0
    # Echoed back in 1 MiB deltas: more than the socket buffers on both ends take.
    PROMPT = " ".join(chr(ord("a") + i) * MIB for i in range(8))

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    async def test_an_answer_its_client_stops_reading_is_cut_at_the_send_deadline(
        self, tmp_path: Path, stream: bool
    ) -> None:
        options = AppOptions(send_deadline_seconds=self.DEADLINE)
        body = {"model": "openclaw", "stream": stream}
        body["messages"] = [{"role": "user", "content": self.PROMPT}]
        data = json.dumps(body).encode()
        async with served(build_app(tmp_path, options=options)) as gateway:
            loop = asyncio.get_running_loop()
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setblocking(False)
                await loop.sock_connect(sock, (gateway.host, gateway.port))
                head = (
                    f"POST {CHAT} HTTP/1.1\r\nHost: {gateway.host}\r\n"
                    f"Authorization: {AUTH['Authorization']}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                )
                await loop.sock_sendall(sock, head.encode() + data)
                first = await loop.sock_recv(sock, 4096)
                assert first.startswith(b"HTTP/1.1 200"), first[:200]
                await asyncio.sleep(self.STALL)  # the client's stall, what is tested
                received = len(first)
                ended = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := await loop.sock_recv(sock, 1024 * 1024):
                        received += len(chunk)
                        ended = (ended + chunk)[-64:]
        # Cut: the answer's end never came.
        assert not (b"data: [DONE]" in ended if stream else ended.endswith(b"}")), received
        assert received < len(data), received


# A tool whose schema's description is 3 MiB, sent with a one-word question.
TOOL = {"name": "f", "description": "x" * (3 * MIB), "parameters": {}}
# A turn waiting behind the running one with 3 MiB of tools and "hi", by each endpoint that
# queues turns: its body as that endpoint takes it.
BEHIND = {
    "chat": (
        CHAT,
        {
            "tools": [{"type": "function", "function": TOOL}],
            "messages": [{"role": "user", "content": "hi"}],
        },
    ),
    "responses": ("/v1/responses", {"tools": [{"type": "function", **TOOL}], "input": "hi"}),
}
WAITING_BOUND = 4 * MIB  # the registry's bound, lowered: one such turn fits, two do not
SLOW_ECHO = {
    "gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}},
    "agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 60_000}}]},
}
ONE_SESSION = {**AUTH, "x-openclaw-session-key": "waiting"}


class TestWaitingTurns:
    """Turns accepted behind a running one hold their requests until they run; what all of
    them hold is bounded by the registry (`max_waiting_chars`), and a client's tools are
    held as much as its messages are, by every endpoint that queues turns."""

    @pytest.mark.parametrize("endpoint", sorted(BEHIND))
    async def test_a_turn_whose_tools_are_over_the_waiting_bound_is_refused(
        self, tmp_path: Path, endpoint: str
    ) -> None:
        path, fields = BEHIND[endpoint]
        async with served(build_app(tmp_path, SLOW_ECHO)) as gateway:
            registry = gateway.state.registry
            assert registry is not None
            registry.max_waiting_chars = WAITING_BOUND
            async with aiohttp.ClientSession() as http:
                # The session's first turn runs, held between its words (delayMs).
                first = {"model": "openclaw", "stream": True}
                first["messages"] = [{"role": "user", "content": "one two"}]
                running = await http.post(gateway.url + CHAT, json=first, headers=ONE_SESSION)
                assert running.status == 200
                await running.content.readline()
                data = json.dumps({"model": "openclaw", **fields}).encode()
                waiting = asyncio.create_task(
                    http.post(gateway.url + path, data=io.BytesIO(data), headers=ONE_SESSION)
                )
                while registry.waiting[0] == 0:  # accepted, behind the running turn
                    assert not waiting.done(), await waiting
                    await asyncio.sleep(0.01)
                refused = asyncio.create_task(
                    http.post(gateway.url + path, data=io.BytesIO(data), headers=ONE_SESSION)
                )
                # Answered at once, or accepted to wait as well (it then answers nothing).
                while not refused.done() and registry.waiting[0] == 1:
                    await asyncio.sleep(0.01)
                assert registry.waiting[0] == 1, registry.waiting
                async with await refused as response:
                    answer = await response.json()
                    assert response.status == 503, answer
                assert answer["error"]["type"] == "api_error"
                waiting.cancel()
                running.close()
