"""The seed document's two curl commands, run as written against `scripts/serve`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import GatewayProcess, clean_env, run_cli

ROOT = Path(__file__).resolve().parents[2]
PORT = 18789  # the commands name it; so does the embedded default config
# Concurrent test runs on this machine take turns on the port.
PORT_LOCK = Path("/tmp/clawgate-test-port-18789.lock")
LOCK_WAIT_S = 90.0
PORT_WAIT_S = 10.0
# The first start may install the project into .venv (scripts/bootstrap.sh).
START_WAIT_S = 100.0

# Exactly as the seed gives them (../shared/seed/README.md), and as README.md repeats them.
CURL_JSON = """\
curl -sS http://127.0.0.1:18789/v1/chat/completions \\
  -H 'Authorization: Bearer YOUR_TOKEN' \\
  -H 'Content-Type: application/json' \\
  -H 'x-openclaw-agent-id: main' \\
  -d '{
    "model": "openclaw",
    "messages": [{"role":"user","content":"hi"}]
  }'"""

CURL_SSE = """\
curl -N http://127.0.0.1:18789/v1/chat/completions \\
  -H 'Authorization: Bearer YOUR_TOKEN' \\
  -H 'Content-Type: application/json' \\
  -H 'x-openclaw-agent-id: main' \\
  -d '{
    "model": "openclaw",
    "stream": true,
    "messages": [{"role":"user","content":"hi"}]
  }'"""

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")


def serve_script(env: dict[str, str]) -> GatewayProcess:
    """`scripts/serve` (which execs `clawgate run`), its stderr collected like any gateway's."""
    return GatewayProcess([], env, command=[str(ROOT / "scripts" / "serve")], cwd=ROOT)


@contextlib.contextmanager
def port_turn() -> Iterator[None]:
    """Hold the machine-wide lock for port 18789, then wait for the port to be free."""
    with PORT_LOCK.open("a") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test run held {PORT_LOCK} for {LOCK_WAIT_S:.0f} s")
                time.sleep(0.2)
        try:
            _wait_port_free()
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _wait_port_free() -> None:
    deadline = time.monotonic() + PORT_WAIT_S
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", PORT))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        if time.monotonic() > deadline:
            pytest.fail(
                f"port {PORT} is still in use after {PORT_WAIT_S:.0f} s: something outside "
                "this test run (a gateway started by hand?) listens on it; stop it to run "
                "the seed's curl commands"
            )
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    """`scripts/serve` with HOME and the state dir in tmp; the token `clawgate token` prints."""
    home = tmp_path_factory.mktemp("home")
    env = clean_env(home, {"CLAWGATE_STATE_DIR": str(home / "state")})
    with port_turn():
        gateway = serve_script(env)
        try:
            gateway.wait_listening(START_WAIT_S)
            assert gateway.port == PORT
            token = run_cli(["token"], env).stdout.strip()
            assert token
            yield gateway, token
        finally:
            gateway.signal()
            try:
                gateway.wait(10)
            finally:
                gateway.stop()


def run_as_written(command: str, token: str) -> str:
    done = subprocess.run(
        ["bash", "-c", command.replace("YOUR_TOKEN", token)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def answered(gateway: GatewayProcess) -> list[int]:
    """The statuses of the chat completion requests in the gateway's request log so far."""
    return [
        e["status"]
        for e in gateway.events()
        if e.get("event") == "http_request" and e.get("path") == "/v1/chat/completions"
    ]


def next_status(gateway: GatewayProcess, seen: int, within: float = 5.0) -> int:
    """The status of the request logged after the first `seen` ones (a stream's line comes
    when it ended, possibly just after curl exited)."""
    deadline = time.monotonic() + within
    while len(statuses := answered(gateway)) <= seen:
        assert time.monotonic() < deadline, "the gateway logged no request line"
        gateway.read_available(0.05)
    return statuses[seen]


class TestSeedCurlCommands:
    def test_scripts_serve_answers_the_probes(self, served: tuple[GatewayProcess, str]) -> None:
        gateway, _ = served
        for path, body in (
            ("/healthz", {"ok": True, "status": "live"}),
            ("/readyz", {"ready": True}),
        ):
            with urllib.request.urlopen(f"{gateway.url}{path}", timeout=5) as response:
                assert (response.status, json.loads(response.read())) == (200, body)

    def test_the_readme_shows_them_as_written(self) -> None:
        readme = (ROOT / "README.md").read_text()
        assert CURL_JSON in readme and CURL_SSE in readme

    def test_the_json_command_answers_200(self, served: tuple[GatewayProcess, str]) -> None:
        gateway, token = served
        seen = len(answered(gateway))
        completion = json.loads(run_as_written(CURL_JSON, token))
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"]["content"] == "[turn 1] hi"
        assert next_status(gateway, seen) == 200

    def test_the_streaming_command_answers_200_ending_in_done(
        self, served: tuple[GatewayProcess, str]
    ) -> None:
        gateway, token = served
        seen = len(answered(gateway))
        output = run_as_written(CURL_SSE, token)
        assert output.startswith("data: {") and output.endswith("data: [DONE]\n\n")
        deltas = [
            json.loads(block[len("data: ") :])["choices"][0]["delta"].get("content", "")
            for block in output.split("\n\n")
            if block.startswith("data: {")
        ]
        assert "".join(deltas) == "[turn 1] hi"
        assert next_status(gateway, seen) == 200
