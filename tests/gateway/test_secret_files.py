"""Secrets kept off the command line: --token-file/--password-file for `run` and `call`, the
`secret_on_command_line` warning, and a flag that the config file's auth.mode would ignore."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.support.process import GatewayProcess, clean_env, run_cli

SECRET = "file-secret-5d0b9e"


def status_with(url: str, secret: str) -> int:
    request = urllib.request.Request(f"{url}/v1/models")
    request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def secret_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    return path


class TestRunSecretFiles:
    def test_token_file_gives_the_token_from_its_first_line(
        self, tmp_path: Path, env: dict[str, str], gateways: list[GatewayProcess]
    ) -> None:
        path = secret_file(tmp_path, f"{SECRET}\nnot part of it\n")
        gateway = GatewayProcess(["--port", "0", "--token-file", str(path)], env)
        gateways.append(gateway)
        url = gateway.wait_listening()
        assert status_with(url, SECRET) == 200
        assert status_with(url, "not part of it") == 401
        cmdline = Path(f"/proc/{gateway.proc.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline
        assert not any(e["event"] == "secret_on_command_line" for e in gateway.events())
        assert not (tmp_path / "state" / "gateway.token").exists()

    def test_a_token_file_line_is_trimmed_as_every_other_token_source_is(
        self, tmp_path: Path, env: dict[str, str], gateways: list[GatewayProcess]
    ) -> None:
        # A Bearer token is trimmed when presented: a token kept with its spaces matched no
        # HTTP client at all.
        path = secret_file(tmp_path, f"  {SECRET} \t\n")
        gateway = GatewayProcess(["--port", "0", "--token-file", str(path)], env)
        gateways.append(gateway)
        url = gateway.wait_listening()
        assert status_with(url, SECRET) == 200
        ws = url.replace("http://", "ws://")
        result = run_cli(["call", "health", "--url", ws, "--token-file", str(path)], env)
        assert result.returncode == 0, result.stderr

    def test_password_file_sets_password_mode(
        self, tmp_path: Path, env: dict[str, str], gateways: list[GatewayProcess]
    ) -> None:
        path = secret_file(tmp_path, f"{SECRET}\r\n")
        gateway = GatewayProcess(["--port", "0", "--password-file", str(path)], env)
        gateways.append(gateway)
        url = gateway.wait_listening()
        assert gateway.wait_for_event("gateway_listening")["auth"] == "password"
        assert status_with(url, SECRET) == 200

    @pytest.mark.parametrize("flag", ["--token", "--password"])
    def test_a_secret_flag_is_warned_about_without_the_secret(
        self, env: dict[str, str], gateways: list[GatewayProcess], flag: str
    ) -> None:
        gateway = GatewayProcess(["--port", "0", flag, SECRET], env)
        gateways.append(gateway)
        gateway.wait_listening()
        warning = gateway.wait_for_event("secret_on_command_line")
        assert warning["flag"] == flag
        assert warning["level"] == "warning"
        assert f"{flag}-file PATH" in warning["hint"]
        assert SECRET not in "\n".join(gateway.lines)

    @pytest.mark.parametrize(
        ("content", "reason"),
        [
            ("", "is empty (the secret is its first line)"),
            ("\nsecond\n", "is empty"),
            (" \t \n", "is only whitespace"),
        ],
    )
    def test_an_empty_secret_file_is_refused(
        self, tmp_path: Path, env: dict[str, str], content: str, reason: str
    ) -> None:
        path = secret_file(tmp_path, content)
        result = run_cli(["run", "--port", "0", "--token-file", str(path)], env)
        assert result.returncode == 78
        assert f"- --token-file: {path} {reason}" in result.stderr
        assert "gateway_listening" not in result.stderr

    def test_a_missing_secret_file_is_refused(self, tmp_path: Path, env: dict[str, str]) -> None:
        path = tmp_path / "absent"
        result = run_cli(["run", "--port", "0", "--password-file", str(path)], env)
        assert result.returncode == 78
        assert f"- --password-file: cannot read {path}: No such file or directory" in (
            result.stderr
        )

    def test_a_flag_and_its_file_together_are_a_usage_error(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        path = secret_file(tmp_path, SECRET)
        result = run_cli(["run", "--token", "x", "--token-file", str(path)], env)
        assert result.returncode == 2
        assert "not allowed with argument" in result.stderr


async def ws_connect_ok(url: str, password: str) -> bool:
    """Whether a WebSocket `connect` with `auth.password` is accepted (ws-protocol.md §2)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws")) as ws:
        await ws.receive_json(timeout=5)  # connect.challenge
        client = {"id": "test", "version": "1", "platform": "linux", "mode": "cli"}
        params = {"minProtocol": 4, "maxProtocol": 4, "client": client}
        await ws.send_json(
            {
                "type": "req",
                "id": "1",
                "method": "connect",
                "params": {**params, "auth": {"password": password}},
            }
        )
        ok: bool = (await ws.receive_json(timeout=5))["ok"]
        return ok


class TestATokenFileThatIsAPipe:
    """`--token-file <(pass show clawgate)` or a FIFO: what it gave at the start is all it
    gives. Every reload read it again: a FIFO's open waited for a writer that never came,
    holding the config lock, so no reload nor config.patch ever ended; a pipe read empty, so
    every reload failed."""

    def test_reloads_keep_the_token_it_gave_and_apply_the_file(
        self, tmp_path: Path, env: dict[str, str], gateways: list[GatewayProcess]
    ) -> None:
        fifo = tmp_path / "token.fifo"
        os.mkfifo(fifo)
        writer = threading.Thread(target=fifo.write_text, args=(f"{SECRET}\n",), daemon=True)
        writer.start()
        config = tmp_path / "c.json5"
        gateway_section = (
            'gateway: { reload: { mode: "off" },'
            " http: { endpoints: { chatCompletions: { enabled: true } } } }"
        )
        config.write_text(f"{{ {gateway_section} }}")
        args = ["--config", str(config), "--port", "0", "--token-file", str(fifo)]
        gateway = GatewayProcess(args, env)
        gateways.append(gateway)
        url = gateway.wait_listening()
        writer.join(5)
        config.write_text(f'{{ {gateway_section}, logging: {{ level: "debug" }} }}')
        gateway.signal(signal.SIGHUP)
        assert gateway.wait_for_event("config_reloaded", 10)["changed"] == ["logging.level"]
        assert status_with(url, SECRET) == 200
        assert status_with(url, "another") == 401
        assert not [e for e in gateway.events() if e["event"] == "config_reload_failed"]


class TestAPasswordWithSurroundingWhitespace:
    """Trimmed wherever it comes from, as a token is: HTTP trims the presented bearer secret,
    so a password kept with its spaces worked over the WebSocket only."""

    PASSWORD = "pw-4e7a1c"
    PADDED = f"  {PASSWORD} \t"

    @pytest.mark.parametrize("source", ["file", "flag", "password-file"])
    async def test_works_over_http_and_websocket_with_or_without_the_whitespace(
        self, tmp_path: Path, env: dict[str, str], gateways: list[GatewayProcess], source: str
    ) -> None:
        args = ["--port", "0"]
        if source == "file":
            config = tmp_path / "clawgate.json5"
            config.write_text(
                json.dumps(
                    {
                        "gateway": {
                            "auth": {"password": self.PADDED},
                            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
                        }
                    }
                )
            )
            args += ["--config", str(config)]
        elif source == "flag":
            args += ["--password", self.PADDED]
        else:
            args += ["--password-file", str(secret_file(tmp_path, f"{self.PADDED}\n"))]
        gateway = GatewayProcess(args, env)
        gateways.append(gateway)
        url = gateway.wait_listening()
        assert gateway.wait_for_event("gateway_listening")["auth"] == "password"
        assert await asyncio.to_thread(status_with, url, self.PASSWORD) == 200
        assert await ws_connect_ok(url, self.PASSWORD)
        assert await ws_connect_ok(url, self.PADDED)
        assert not await ws_connect_ok(url, f"{self.PASSWORD}x")

    def test_one_of_only_whitespace_is_a_usage_error(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A bad command line (config.md §1: 2), as every bad value of a flag over the config."""
        result = run_cli(["run", "--port", "0", "--password", " \t "], env)
        assert result.returncode == 2
        assert result.stderr.endswith("error: argument --password: is only whitespace\n")

    @pytest.mark.parametrize("field", ["password", "token"])
    @pytest.mark.parametrize("mode", ["", 'mode: "password", ', 'mode: "token", '])
    def test_one_of_only_whitespace_in_the_file_is_refused_with_78(
        self, tmp_path: Path, env: dict[str, str], field: str, mode: str
    ) -> None:
        """Written, so meant to be a secret: not taken as unset (which started a token-mode
        gateway with a generated token, whatever the operator wrote)."""
        config = tmp_path / "gateway.json5"
        config.write_text(f'{{gateway: {{auth: {{{mode}{field}: " \\t "}}}}}}')
        for command in (["config", "validate"], ["token"], ["run", "--port", "0"]):
            result = run_cli([*command, "--config", str(config)], env, timeout=10)
            assert (result.returncode, result.stdout) == (78, ""), command
            assert f"- gateway.auth.{field}: is only whitespace" in result.stderr
        assert not (tmp_path / "state" / "gateway.token").exists()


class TestAFlagOfTheOtherModeThanTheFiles:
    @pytest.mark.parametrize(
        ("mode", "args", "flag", "wanted"),
        [
            ("token", ["--password", SECRET], "--password", "password"),
            ("token", ["--password-file", "SECRET_FILE"], "--password-file", "password"),
            ("password", ["--token", SECRET], "--token", "token"),
            ("none", ["--token", SECRET], "--token", "token"),
        ],
    )
    def test_wins_and_the_override_is_logged(
        self,
        tmp_path: Path,
        env: dict[str, str],
        gateways: list[GatewayProcess],
        mode: str,
        args: list[str],
        flag: str,
        wanted: str,
    ) -> None:
        """CLI flag > environment > file, the mode too. It was refused with 78, and the
        operator could not override the file's mode from the unit file."""
        config = tmp_path / "gateway.json5"
        secrets = {"token": ', token: "file-secret-token"', "password": ', password: "file-pw"'}
        config.write_text(
            f'{{gateway: {{auth: {{mode: "{mode}"{secrets.get(mode, "")}}},'
            " http: {endpoints: {chatCompletions: {enabled: true}}}}}"
        )
        path = secret_file(tmp_path, SECRET)
        args = [str(path) if a == "SECRET_FILE" else a for a in args]
        gateway = GatewayProcess(["--port", "0", "--config", str(config), *args], env)
        gateways.append(gateway)
        url = gateway.wait_listening()
        assert status_with(url, SECRET) == 200
        for other in ("file-secret-token", "file-pw"):
            assert status_with(url, other) == 401
        warned = [e for e in gateway.events() if e.get("path") == flag]
        assert [(e["event"], e["level"], e["reason"]) for e in warned] == [
            (
                "config_warning",
                "warning",
                f'overrides gateway.auth.mode "{mode}" of the config file: the gateway runs in'
                f" {wanted} mode",
            )
        ]
        assert not (tmp_path / "state" / "gateway.token").exists()


class TestCallSecretFiles:
    @pytest.fixture
    def running(
        self, tmp_path: Path, env: dict[str, str], gateways: list[GatewayProcess]
    ) -> GatewayProcess:
        gateway = GatewayProcess(["--port", "0", "--token", SECRET], env)
        gateways.append(gateway)
        gateway.wait_listening()
        return gateway

    def test_call_reads_its_token_from_token_file(
        self, tmp_path: Path, running: GatewayProcess
    ) -> None:
        path = secret_file(tmp_path, f"{SECRET}\n")
        ws = running.url.replace("http://", "ws://")
        # No state dir and no config in this environment: only the file can give the token.
        env = clean_env(tmp_path / "elsewhere")
        result = run_cli(["call", "health", "--url", ws, "--token-file", str(path)], env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] is True
        assert "secret_on_command_line" not in result.stderr

    def test_call_with_a_token_flag_warns(self, tmp_path: Path, running: GatewayProcess) -> None:
        ws = running.url.replace("http://", "ws://")
        result = run_cli(["call", "health", "--url", ws, "--token", SECRET], clean_env(tmp_path))
        assert result.returncode == 0, result.stderr
        assert "secret_on_command_line" in result.stderr
        assert SECRET not in result.stderr

    def test_call_refuses_an_empty_password_file(self, tmp_path: Path) -> None:
        path = secret_file(tmp_path, "")
        args = ["call", "health", "--url", "ws://127.0.0.1:9", "--password-file", str(path)]
        result = run_cli(args, clean_env(tmp_path))
        assert result.returncode == 78
        assert f"error: {path} is empty (the secret is its first line)" in result.stderr

    @pytest.mark.parametrize("flag", ["--token-file", "--password-file"])
    def test_call_refuses_a_secret_file_whose_first_line_is_longer_than_any_secret(
        self, tmp_path: Path, flag: str
    ) -> None:
        # Read whole, /dev/zero or a mistaken --token-file (a log, a disk image) would grow
        # the command's memory without end: only the first 64 KiB are read.
        path = secret_file(tmp_path, "x" * (1 << 20))
        args = ["call", "health", "--url", "ws://127.0.0.1:9", flag, str(path)]
        result = run_cli(args, clean_env(tmp_path))
        assert (result.returncode, result.stdout) == (78, "")
        assert result.stderr == (
            f"error: {path} has no line end in its first 65536 bytes (the secret is its"
            " first line)\n"
        )

    def test_call_reads_at_most_64_kib_of_an_endless_token_file(self, tmp_path: Path) -> None:
        args = ["call", "health", "--url", "ws://127.0.0.1:9", "--token-file", "/dev/zero"]
        result = run_cli(args, clean_env(tmp_path), timeout=15)
        assert (result.returncode, result.stdout) == (78, "")
        assert result.stderr == (
            "error: /dev/zero has no line end in its first 65536 bytes (the secret is its"
            " first line)\n"
        )
