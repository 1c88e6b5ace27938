"""`clawgate call` and `clawgate health` against a real gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.ws.protocol import MAX_PAYLOAD
from tests.support.process import GatewayProcess, clean_env, run_cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A default install (embedded config, generated token) on a free port."""
    home = tmp_path_factory.mktemp("client")
    return clean_env(
        home / "home",
        {"CLAWGATE_STATE_DIR": str(home / "state"), "OPENCLAW_GATEWAY_PORT": str(free_port())},
    )


@pytest.fixture(scope="module")
def running(env: dict[str, str]) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess([], env)
    try:
        gateway.wait_listening()
        yield gateway
    finally:
        gateway.stop()


class TestCall:
    def test_call_health_prints_the_health_payload(
        self, running: GatewayProcess, env: dict[str, str]
    ) -> None:
        result = run_cli(["call", "health"], env)
        assert result.returncode == 0, result.stderr
        payload = json.loads(result.stdout)
        assert payload["ok"] is True and payload["defaultAgentId"] == "main"
        assert payload["sessions"]["path"] == str(
            Path(env["CLAWGATE_STATE_DIR"]) / "sessions.sqlite3"
        )

    def test_health_command(self, running: GatewayProcess, env: dict[str, str]) -> None:
        result = run_cli(["health", "--url", running.url.replace("http", "ws", 1)], env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] is True

    def test_call_with_params(self, running: GatewayProcess, env: dict[str, str]) -> None:
        result = run_cli(["call", "sessions.list", "--params", '{"limit": 1}'], env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["sessions"] == []

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("NaN", "Invalid JSON value: NaN"),
            ("Infinity", "Invalid JSON value: Infinity"),
            ("-Infinity", "Invalid JSON value: -Infinity"),
            ("1e400", "Out of range float values are not JSON compliant"),
        ],
    )
    def test_params_with_a_value_json_does_not_have_exit_2(
        self, running: GatewayProcess, env: dict[str, str], value: str, reason: str
    ) -> None:
        params = f'{{"limit": {value}}}'
        result = run_cli(["call", "sessions.list", "--params", params, "--timeout", "5"], env)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == f"--params is not valid JSON: {reason}\n"

    def test_agent_prints_the_final_answer(
        self, running: GatewayProcess, env: dict[str, str]
    ) -> None:
        params = '{"message": "hi", "idempotencyKey": "cli-1", "sessionKey": "cli"}'
        result = run_cli(["call", "agent", "--params", params], env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["result"]["payloads"][0]["text"] == "[turn 1] hi"

    def test_a_bad_token_exits_non_zero_with_the_message(
        self, running: GatewayProcess, env: dict[str, str], tmp_path: Path
    ) -> None:
        # --token-file: a --token would add its secret_on_command_line warning to stderr.
        (tmp_path / "token").write_text("wrong-token\n")
        result = run_cli(["call", "health", "--token-file", str(tmp_path / "token")], env)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.strip() == (
            "error: unauthorized: gateway token mismatch (provide gateway auth token)"
        )

    def test_an_error_response(self, running: GatewayProcess, env: dict[str, str]) -> None:
        result = run_cli(["call", "no.such.method"], env)
        assert result.returncode == 1
        assert result.stderr.strip() == "error: unknown method: no.such.method"

    def test_the_local_credential_is_not_sent_to_a_url_of_another_host(
        self, running: GatewayProcess, env: dict[str, str]
    ) -> None:
        # A command pasted from somewhere else must not hand this gateway's token to a host
        # that somebody else runs (`.invalid` never resolves: nothing is sent either way).
        url = "ws://gateway.example.invalid:18789"
        result = run_cli(["call", "health", "--url", url, "--timeout", "5"], env)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            f"--url {url} is not this host's gateway: pass its credential with --token-file or"
            " --password-file (this gateway's token or password is sent only to this host)\n"
        )

    def test_nothing_listening(self, env: dict[str, str], tmp_path: Path) -> None:
        url = f"ws://127.0.0.1:{free_port()}"
        (tmp_path / "token").write_text("t\n")
        args = ["call", "health", "--url", url, "--token-file", str(tmp_path / "token")]
        result = run_cli(args, env)
        assert result.returncode == 1
        assert result.stderr == (
            f"cannot connect to {url}: connection refused, no gateway listens there. Fix: start"
            " it (`clawgate run`, `systemctl status clawgate`), or give the URL of its"
            " gateway_listening log line with --url.\n"
        )

    def test_nothing_listening_on_the_configured_port_says_what_to_do_as_well(
        self, env: dict[str, str], tmp_path: Path
    ) -> None:
        port = free_port()
        config = tmp_path / "c.json5"
        config.write_text(f'{{ gateway: {{ port: {port}, auth: {{ token: "t" }} }} }}')
        env = {k: v for k, v in env.items() if k != "OPENCLAW_GATEWAY_PORT"}
        result = run_cli(["health", "--config", str(config)], env)
        assert result.returncode == 1
        assert result.stderr == (
            f"cannot connect to ws://127.0.0.1:{port}: connection refused, no gateway listens"
            f" there. Fix: start it (`clawgate run`, `systemctl status clawgate`), or give the"
            " URL of its gateway_listening log line with --url.\n"
        )


Script = Callable[[web.WebSocketResponse], Awaitable[None]]


async def scripted(aiohttp_server: Any, script: Script, tmp_path: Path) -> list[str]:
    """`clawgate call health`'s arguments for a WebSocket server that plays `script` once
    upgraded."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await script(ws)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    (tmp_path / "token").write_text("t\n")
    url = f"ws://127.0.0.1:{server.port}/"
    return ["call", "health", "--url", url, "--token-file", str(tmp_path / "token")]


async def call_through(
    aiohttp_server: Any, script: Script, env: dict[str, str], tmp_path: Path, *more: str
) -> subprocess.CompletedProcess[str]:
    args = await scripted(aiohttp_server, script, tmp_path)
    return await asyncio.to_thread(run_cli, [*args, *more], env)


async def answer_connect(ws: web.WebSocketResponse) -> str:
    """Read the `connect` request, answer it ok, return the id of the next request."""
    connect = await ws.receive_json()
    await ws.send_json({"type": "res", "id": connect["id"], "ok": True, "payload": {}})
    request: str = (await ws.receive_json())["id"]
    return request


def answer_of(request: str, size: int) -> str:
    """An ok answer to `request` whose frame is `size` bytes: a payload string of spaces."""
    frame = json.dumps({"type": "res", "id": request, "ok": True, "payload": ""})
    return frame[:-2] + " " * (size - len(frame)) + frame[-2:]


class TestAHostileGateway:
    """Whatever a server answers, `call` ends with one line on stderr and exit 1."""

    @pytest.mark.parametrize("frame", ["hello, not JSON", "[1, 2]"])
    async def test_a_frame_that_is_not_a_json_object(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path, frame: str
    ) -> None:
        async def script(ws: web.WebSocketResponse) -> None:
            await ws.send_str(frame)
            await ws.receive()

        result = await call_through(aiohttp_server, script, env, tmp_path)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == "error: the gateway sent a frame that is not a JSON object\n"

    @pytest.mark.parametrize(
        ("error", "printed"),
        [
            ("boom", "request failed"),  # an error that is not an object
            # ESC ] 0 ; … BEL sets the terminal's title; others write the clipboard or move
            # the cursor over what was printed before: escaped, they reach it as text.
            (
                {"code": "INVALID_REQUEST", "message": "no\x1b]0;owned\x07\x1b[2K\x9b1A\r"},
                "no\\x1b]0;owned\\x07\\x1b[2K\\x9b1A\\x0d",
            ),
        ],
    )
    async def test_an_error_answer_is_one_printable_line(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path, error: Any, printed: str
    ) -> None:
        async def script(ws: web.WebSocketResponse) -> None:
            request = await answer_connect(ws)
            await ws.send_json({"type": "res", "id": request, "ok": False, "error": error})
            await ws.receive()

        result = await call_through(aiohttp_server, script, env, tmp_path)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"error: {printed}\n"

    async def test_an_answer_over_max_payload_is_refused(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path
    ) -> None:
        async def script(ws: web.WebSocketResponse) -> None:
            request = await answer_connect(ws)
            await ws.send_str(answer_of(request, MAX_PAYLOAD + 1))
            await ws.receive()

        result = await call_through(aiohttp_server, script, env, tmp_path, "--timeout", "10")
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == "error: the gateway sent a frame larger than 26214400 bytes\n"

    async def test_a_frame_that_claims_to_be_endless_is_refused_before_it_is_read(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path
    ) -> None:
        # A text frame announcing 1 TiB, then as much as the client takes (64 MiB at most, so
        # that a client that buffers it all fails this test by its timeout, not the machine).
        async def script(ws: web.WebSocketResponse) -> None:
            await answer_connect(ws)
            transport = ws._writer.transport  # type: ignore[union-attr]
            transport.write(b"\x81\x7f" + (1 << 40).to_bytes(8, "big"))
            chunk = b" " * (1 << 20)
            with contextlib.suppress(ConnectionError):
                for _ in range(64):
                    transport.write(chunk)
                    await asyncio.sleep(0)
            await asyncio.sleep(30)

        result = await call_through(aiohttp_server, script, env, tmp_path, "--timeout", "10")
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == "error: the gateway sent a frame larger than 26214400 bytes\n"

    async def test_an_answer_of_exactly_max_payload_is_printed(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path
    ) -> None:
        sent: list[str] = []

        async def script(ws: web.WebSocketResponse) -> None:
            sent.append(answer_of(await answer_connect(ws), MAX_PAYLOAD))
            await ws.send_str(sent[0])
            await ws.receive()

        result = await call_through(aiohttp_server, script, env, tmp_path, "--timeout", "10")
        assert result.returncode == 0, result.stderr
        assert len(sent[0]) == MAX_PAYLOAD
        assert json.loads(result.stdout) == json.loads(sent[0])["payload"]

    async def test_a_server_that_never_answers_is_a_timeout_not_a_refused_connect(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path
    ) -> None:
        async def script(ws: web.WebSocketResponse) -> None:
            await ws.receive()
            await ws.receive()

        result = await call_through(aiohttp_server, script, env, tmp_path, "--timeout", "0.5")
        assert (result.returncode, result.stdout) == (1, "")
        assert re.fullmatch(r"no answer from ws://127\.0\.0\.1:\d+/ within 0\.5s\n", result.stderr)


class TestAClosedOutput:
    @pytest.mark.parametrize("buffered", [False, True])
    def test_a_reader_that_stops_early_ends_the_command_quietly_with_1(
        self, running: GatewayProcess, env: dict[str, str], buffered: bool
    ) -> None:
        # `clawgate call ... | head -c 1`: the reader is gone before the answer is written
        # (buffered: when Python flushes stdout at exit). Exit 1 as Python's signal docs
        # ("Note on SIGPIPE") have it, and nothing on stderr.
        env = {k: v for k, v in env.items() if not (buffered and k == "PYTHONUNBUFFERED")}
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "call", "sessions.list"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        with process:
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            stderr = process.stderr.read()
        assert (process.wait(15), stderr) == (1, b"")


class TestCredentialsInTheUrl:
    """A password in `--url` (ws://user:secret@host/) is never printed back: error messages
    end up in terminals' scrollback, CI logs and bug reports."""

    def test_a_refused_connect_shows_the_url_without_them(
        self, env: dict[str, str], tmp_path: Path
    ) -> None:
        port = free_port()
        result = run_cli(call_args(f"ws://user:hunter2@127.0.0.1:{port}/", tmp_path), env)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr.startswith(f"cannot connect to ws://***@127.0.0.1:{port}/: ")
        assert "hunter2" not in result.stderr

    def test_a_url_that_is_refused_is_not_echoed_with_them(
        self, env: dict[str, str], tmp_path: Path
    ) -> None:
        result = run_cli(call_args("ws://user:hunter2@127.0.0.1:99999/", tmp_path), env)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.startswith("--url ws://***@127.0.0.1:99999/ is not a gateway's")
        assert "hunter2" not in result.stderr

    async def test_a_timeout_shows_the_url_without_them(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path
    ) -> None:
        async def script(ws: web.WebSocketResponse) -> None:
            await ws.receive()
            await ws.receive()

        args = await scripted(aiohttp_server, script, tmp_path)
        url = args[3].replace("ws://", "ws://user:hunter2@")
        args[3:4] = [url, "--timeout", "0.5"]
        result = await asyncio.to_thread(run_cli, args, env)
        assert (result.returncode, result.stdout) == (1, "")
        assert re.fullmatch(
            r"no answer from ws://\*\*\*@127\.0\.0\.1:\d+/ within 0\.5s\n", result.stderr
        )

    def test_a_url_of_another_host_is_refused_without_them(self, env: dict[str, str]) -> None:
        url = "ws://user:hunter2@gateway.example.invalid:18789"
        result = run_cli(["call", "health", "--url", url, "--timeout", "5"], env)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.startswith(
            "--url ws://***@gateway.example.invalid:18789 is not this host's gateway: "
        )


def call_args(url: str, tmp_path: Path) -> list[str]:
    (tmp_path / "token").write_text("t\n")
    return ["call", "health", "--url", url, "--token-file", str(tmp_path / "token")]


class TestInterrupt:
    async def test_ctrl_c_while_waiting_exits_130_without_a_traceback(
        self, aiohttp_server: Any, env: dict[str, str], tmp_path: Path
    ) -> None:
        connected = asyncio.Event()

        async def script(ws: web.WebSocketResponse) -> None:
            await ws.receive()
            connected.set()
            await ws.receive()

        args = await scripted(aiohttp_server, script, tmp_path)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            # As a terminal's Ctrl-C finds it, whatever this test runner ignores.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        await asyncio.wait_for(connected.wait(), 15)
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
        assert (process.returncode, stdout, stderr) == (130, b"", b"")


class TestTimeoutArgument:
    @pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
    def test_a_timeout_that_is_not_a_positive_number_of_seconds_exits_2(
        self, env: dict[str, str], value: str
    ) -> None:
        result = run_cli(["call", "health", "--timeout", value], env)
        assert result.returncode == 2
        assert "--timeout: must be a positive number of seconds" in result.stderr


class TestUrlArgument:
    """A `--url` that names no WebSocket endpoint is a mistake on the command line (exit 2,
    as for `--timeout`), not a gateway that cannot be reached (exit 1, worth a retry)."""

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("foo", "it has no scheme"),
            ("ftp://127.0.0.1:9/", "its scheme is ftp"),
            ("ws://", "it has no host"),
            ("ws://127.0.0.1:99999/", "its port is not a number from 0 to 65535"),
            ("ws://127.0.0.1:port/", "its port is not a number from 0 to 65535"),
            ("ws://[::1/", "it is not a URL (Invalid IPv6 URL)"),
        ],
    )
    def test_a_url_that_is_no_websocket_url_exits_2_saying_what_to_give(
        self, env: dict[str, str], tmp_path: Path, url: str, reason: str
    ) -> None:
        result = run_cli(call_args(url, tmp_path), env)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            f"--url {url} is not a gateway's WebSocket URL: {reason}. Give"
            " ws://HOST:PORT (or wss:// behind TLS).\n"
        )
