"""`clawgate call` and `clawgate health` against a real gateway process."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

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

    def test_nothing_listening(self, env: dict[str, str], tmp_path: Path) -> None:
        url = f"ws://127.0.0.1:{free_port()}"
        (tmp_path / "token").write_text("t\n")
        args = ["call", "health", "--url", url, "--token-file", str(tmp_path / "token")]
        result = run_cli(args, env)
        assert result.returncode == 1
        assert result.stderr.startswith(f"cannot connect to {url}")
