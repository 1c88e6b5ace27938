"""`clawgate` as a real subprocess: config commands, token, run and stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import resource
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from agents.store import SCHEMA_VERSION, SessionStore
from tests.support.openclaw_secrets import ENVIRON, OPENCLAW_SECRETS, SECRET_MARK, SECRET_NUMBERS
from tests.support.process import GatewayProcess, privileged_port, run_cli

GOOD = """{
  gateway: { port: 18789, auth: { mode: "token", token: "s3cret-token" } },
  agents: { list: [{ id: "main" }] },
}"""

BAD = """{
  gateway: { bind: "public", prot: 1 },
}"""


def start(gateways: list[GatewayProcess], args: list[str], env: dict[str, str]) -> GatewayProcess:
    gateway = GatewayProcess(args, env)
    gateways.append(gateway)
    return gateway


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def _made_store(state: Path) -> None:
    async with SessionStore(state):
        pass


def assert_store_refused(env: dict[str, str], database: Path, line: str) -> None:
    """`run` on the state dir of `database` (made 0600 here) stops with 78 and `line`, before
    it listens, without a traceback."""
    database.chmod(0o600)
    result = run_cli(["run", "--port", "0", "--token", "t0ken"], env)
    assert result.returncode == 78
    assert "gateway_listening" not in result.stderr
    assert "Traceback" not in result.stderr
    assert line in result.stderr.splitlines()


class TestConfigCommands:
    def test_validate_accepts_a_good_file(self, tmp_path: Path, env: dict[str, str]) -> None:
        path = tmp_path / "good.json5"
        path.write_text(GOOD)
        result = run_cli(["config", "validate", "--config", str(path)], env)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"config OK: {path}\n"

    def test_validate_with_no_file_at_the_default_path_says_the_embedded_default_is_checked(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """Not `config OK: <path>`, which reads as if a file there had been checked."""
        result = run_cli(["config", "validate"], env)
        assert result.returncode == 0, result.stderr
        path = tmp_path / "state" / "clawgate.json5"
        assert result.stdout == f"config OK: the embedded default (no file at {path})\n"

    def test_validate_rejects_a_bad_file_with_exit_78_and_key_paths(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        path = tmp_path / "bad.json5"
        path.write_text(BAD)
        result = run_cli(["config", "validate", "--config", str(path)], env)
        assert result.returncode == 78
        assert result.stderr.startswith(
            f"Invalid config at {path}:\n"
            '- gateway.bind: must be one of "loopback", "lan", "custom" (got "public")\n'
            '- gateway.prot: unknown key (did you mean "port"?)\n'
        )

    @pytest.mark.parametrize("command", ["validate", "show"])
    def test_a_bad_file_writes_nothing_to_stdout(
        self, tmp_path: Path, env: dict[str, str], command: str
    ) -> None:
        # stdout is the command's answer (`config show > effective.json`); its log goes to stderr.
        path = tmp_path / "bad.json5"
        path.write_text(BAD)
        result = run_cli(["config", command, "--config", str(path)], env)
        assert (result.returncode, result.stdout) == (78, "")
        assert "config_invalid" in result.stderr

    def test_validate_of_a_file_nested_deeper_than_the_parser_goes_exits_78(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        # json5's parser recurses several frames per level: a few hundred levels exceed the
        # interpreter's stack. That is a file we cannot read, not a crash.
        path = tmp_path / "deep.json5"
        path.write_text("{ channels: " + "[" * 300 + "]" * 300 + " }")
        result = run_cli(["config", "validate", "--config", str(path)], env)
        assert result.returncode == 78
        assert result.stderr.startswith(
            f"Invalid config at {path}:\n- <file>: JSON5 syntax error: nested too deeply\n"
        )
        assert "Traceback" not in result.stderr

    def test_validate_of_a_missing_explicit_file_exits_78(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        missing = tmp_path / "nope.json5"
        result = run_cli(["config", "validate", "--config", str(missing)], env)
        assert result.returncode == 78
        assert f"config file not found: {missing}" in result.stderr

    def test_show_prints_the_effective_config_with_secrets_redacted(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        path = tmp_path / "good.json5"
        path.write_text(GOOD)
        result = run_cli(["config", "show", "--config", str(path)], env)
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert shown["gateway"]["auth"]["token"] == "__OPENCLAW_REDACTED__"
        assert shown["gateway"]["port"] == 18789
        assert "s3cret-token" not in result.stdout

    def test_show_hides_every_secret_of_an_openclaw_config(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        path = tmp_path / "openclaw.json5"
        path.write_text(OPENCLAW_SECRETS)
        result = run_cli(["config", "show", "--config", str(path)], {**env, **ENVIRON})
        assert result.returncode == 0, result.stderr
        assert [s for s in (SECRET_MARK, *SECRET_NUMBERS) if s in result.stdout] == []
        shown = json.loads(result.stdout)
        assert shown["agents"]["list"][0]["params"]["api_key"] == "__OPENCLAW_REDACTED__"
        assert shown["models"]["providers"]["openai"]["headers"] == {
            "x-org": "__OPENCLAW_REDACTED__",
            "Authorization": "__OPENCLAW_REDACTED__",
        }

    def test_path_names_the_default_file_under_the_state_dir(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        result = run_cli(["config", "path"], env)
        assert result.returncode == 0
        assert result.stdout == f"{tmp_path / 'state' / 'clawgate.json5'}\n"
        assert "embedded default" in result.stderr

    @pytest.mark.parametrize("with_config", [False, True])
    def test_path_with_a_state_dir_that_is_a_file_says_what_run_says(
        self, tmp_path: Path, env: dict[str, str], with_config: bool
    ) -> None:
        """It said `not found; the embedded default is used`, where `run` refuses the dir."""
        state = tmp_path / "not-a-dir"
        state.write_text("")
        args = ["config", "path", "--state-dir", str(state)]
        if with_config:
            (tmp_path / "c.json5").write_text("{}")
            args += ["--config", str(tmp_path / "c.json5")]
        result = run_cli(args, env)
        assert result.returncode == 78
        config = tmp_path / "c.json5" if with_config else state / "clawgate.json5"
        assert result.stdout == f"{config}\n"
        assert result.stderr == (
            f"the state dir {state} is not a directory. Fix: move that file away, or choose"
            " another state dir with --state-dir.\n"
        )
        ran = run_cli(["run", "--port", "0", *args[2:]], env)
        assert ran.returncode == 78
        assert result.stderr.rstrip("\n") in ran.stderr

    @pytest.mark.parametrize(
        "state_dir", ["a-file", "under-a-file", "writable-by-all", "not-writable", "unmakable"]
    )
    def test_validate_refuses_a_state_dir_run_refuses_with_runs_message(
        self, tmp_path: Path, env: dict[str, str], state_dir: str
    ) -> None:
        """With --config (the unit file's way) it said `config OK` of a config whose `run`
        exits 78 on the state dir."""
        config = tmp_path / "c.json5"
        config.write_text("{}")
        state = tmp_path / "state"
        parent = tmp_path
        if state_dir == "a-file":
            state.write_text("")
        elif state_dir == "under-a-file":
            (tmp_path / "file").write_text("")
            state = tmp_path / "file" / "state"
        elif state_dir == "writable-by-all":
            state.mkdir()
            state.chmod(0o777)
        elif state_dir == "not-writable":
            state.mkdir(mode=0o500)
        else:
            parent = tmp_path / "locked"
            parent.mkdir(mode=0o500)
            state = parent / "state"
        args = ["--config", str(config), "--state-dir", str(state)]
        try:
            validated = run_cli(["config", "validate", *args], env, file_modes_bind=True)
            ran = run_cli(["run", "--port", "0", *args], env, file_modes_bind=True)
        finally:
            parent.chmod(0o700)
        assert (validated.returncode, validated.stdout) == (78, ""), validated.stdout
        assert ran.returncode == 78, ran.stderr
        message = validated.stderr.rstrip("\n")
        assert "\n" not in message and message in ran.stderr.splitlines()
        assert not (parent / "state").is_dir() or state_dir in ("writable-by-all", "not-writable")

    def test_validate_creates_no_missing_state_dir(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        config = tmp_path / "c.json5"
        config.write_text("{}")
        state = tmp_path / "new" / "state"
        args = ["config", "validate", "--config", str(config), "--state-dir", str(state)]
        validated = run_cli(args, env)
        assert (validated.returncode, validated.stdout) == (0, f"config OK: {config}\n")
        assert not (tmp_path / "new").exists()

    def test_python_dash_m_gateway_is_the_clawgate_command(self, env: dict[str, str]) -> None:
        result = run_cli(["--version"], env)
        assert result.returncode == 0
        assert result.stdout.startswith("clawgate ")

    def test_a_bad_command_line_exits_2(self, env: dict[str, str]) -> None:
        assert run_cli(["run", "--port", "seventy"], env).returncode == 2
        assert run_cli(["no-such-command"], env).returncode == 2

    @pytest.mark.parametrize(
        ("args", "usage", "wrong", "meant"),
        [
            (["run", "--prot", "8080"], "clawgate run", "--prot 8080", "--port"),
            (["--prot", "8080"], "clawgate run", "--prot 8080", "--port"),
            (["config", "validate", "--confg", "x"], "clawgate config validate", "--confg x",
             "--config"),
            (["token", "--state-dri", "x"], "clawgate token", "--state-dri x", "--state-dir"),
            (["call", "health", "--tokn", "x"], "clawgate call", "--tokn x", "--token"),
            (["health", "--bogus"], "clawgate health", "--bogus", None),
            (["token", "--token-file", "x"], "clawgate token", "--token-file x", None),
            (["service", "install", "--usr"], "clawgate service install", "--usr", "--user"),
        ],
    )  # fmt: skip
    def test_a_wrong_flag_shows_the_usage_of_its_command_and_the_flag_it_resembles(
        self, env: dict[str, str], args: list[str], usage: str, wrong: str, meant: str | None
    ) -> None:
        """Not the top level's `clawgate [-h] [--version] COMMAND ...`, which lists no flag."""
        result = run_cli(args, env)
        assert result.returncode == 2
        assert result.stderr.startswith(f"usage: {usage} [-h]")
        hint = f" (did you mean {meant}?)" if meant else ""
        assert result.stderr.endswith(f"{usage}: error: unrecognized arguments: {wrong}{hint}\n")

    @pytest.mark.parametrize(
        ("args", "flag"),
        [
            (["run", "--config", ""], "--config"),
            (["run", "--state-dir", " "], "--state-dir"),
            (["run", "--token-file", ""], "--token-file"),
            (["run", "--password-file", ""], "--password-file"),
            (["config", "show", "--config", ""], "--config"),
            (["token", "--state-dir", ""], "--state-dir"),
            (["call", "health", "--config", ""], "--config"),
            (["service", "install", "--unit-dir", "", "--user"], "--unit-dir"),
        ],
    )
    def test_an_empty_path_is_a_usage_error_not_the_default_path(
        self, tmp_path: Path, env: dict[str, str], args: list[str], flag: str
    ) -> None:
        """`--config "$CONFIG"` with the variable unset: it ran on the embedded default and
        ~/.clawgate (a token generated there), or a user unit in the working directory."""
        result = run_cli(args, env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.endswith(
            f"error: argument {flag}: an empty path (an unset variable in the command line?)\n"
        )
        assert not (tmp_path / "state").exists()

    @pytest.mark.parametrize(
        ("args", "flag", "error"),
        [
            (["run", "--bind", "foo"], "--bind",
             'must be one of "loopback", "lan", "custom" or an IPv4 address (got "foo")'),
            (["run", "--bind", "10.0.0.300"], "--bind",
             'must be one of "loopback", "lan", "custom" or an IPv4 address (got "10.0.0.300")'),
            (["run", "--token", "  "], "--token", "is only whitespace"),
            (["run", "--password", ""], "--password", "is only whitespace"),
            (["run", "--token", "s3cret\x7f"], "--token",
             "has a control character (such as a line break or a NUL), which no client can send"
             " in a header; the value is not shown"),
            (["call", "health", "--password", "pw\nx"], "--password",
             "has a control character (such as a line break or a NUL), which no client can send"
             " in a header; the value is not shown"),
        ],
    )  # fmt: skip
    def test_a_bad_value_of_a_flag_over_the_config_is_a_usage_error_naming_the_flag(
        self, tmp_path: Path, env: dict[str, str], args: list[str], flag: str, error: str
    ) -> None:
        """A bad command line (config.md §1: 2), not `Invalid config at <embedded default>`
        with 78, which names a file the operator did not write and systemd does not retry."""
        result = run_cli(args, env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("usage: clawgate ")
        assert result.stderr.endswith(f"error: argument {flag}: {error}\n")
        assert "Invalid config" not in result.stderr
        assert "s3cret" not in result.stderr
        assert not (tmp_path / "state").exists()

    @pytest.mark.parametrize(
        ("value", "error"),
        [("0", "must be at least 1 (got 0)"), ("many", "must be a number or auto (got 'many')")],
    )
    def test_a_bad_workers_count_names_the_flag_once(
        self, env: dict[str, str], value: str, error: str
    ) -> None:
        result = run_cli(["run", "--workers", value], env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.endswith(f"clawgate run: error: argument --workers: {error}\n")


class TestToken:
    def test_token_is_generated_once_with_mode_0600_and_reused(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        first = run_cli(["token"], env)
        assert first.returncode == 0, first.stderr
        token = first.stdout.strip()
        assert len(token) == 48 and int(token, 16) >= 0
        token_file = tmp_path / "state" / "gateway.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
        assert run_cli(["token"], env).stdout.strip() == token

    @staticmethod
    def token_with_a_temp_file_of_this_pid(
        state: Path, env: dict[str, str], age_s: float
    ) -> subprocess.CompletedProcess[str]:
        """`clawgate token` where `.gateway.token.<its pid>` was written `age_s` ago: what a
        gateway killed while writing the token leaves, or one in another container sharing
        the state dir (every container's first process is pid 1) is writing right now."""
        state.mkdir(mode=0o700)

        def temp_file_of_this_pid() -> None:  # in the child, before exec: same pid
            temp = state / f".gateway.token.{os.getpid()}"
            temp.write_text("half a tok")
            os.utime(temp, (time.time() - age_s,) * 2)

        return subprocess.run(
            [sys.executable, "-m", "gateway", "token"], env=env, capture_output=True,
            text=True, timeout=30, preexec_fn=temp_file_of_this_pid,
        )  # fmt: skip

    def test_a_temporary_token_file_left_by_a_crash_does_not_stop_the_next_start(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """In a container the next start has the same pid (1) and must write its token all
        the same; the dead writer's file, minutes old, is removed."""
        state = tmp_path / "state"
        result = self.token_with_a_temp_file_of_this_pid(state, env, age_s=600)
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip()
        assert len(token) == 48
        assert (state / "gateway.token").read_text() == f"{token}\n"
        assert [p.name for p in state.iterdir()] == ["gateway.token"]

    def test_the_temporary_token_file_of_another_container_with_this_pid_is_left_alone(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """Two containers on one state dir are both pid 1: a temp name made of the pid let
        one remove the file the other was about to link as the token (which then failed)."""
        state = tmp_path / "state"
        result = self.token_with_a_temp_file_of_this_pid(state, env, age_s=0)
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip()
        assert (state / "gateway.token").read_text() == f"{token}\n"
        others = [p for p in state.iterdir() if p.name != "gateway.token"]
        assert len(others) == 1 and others[0].read_text() == "half a tok"

    def test_a_configured_token_is_printed_and_nothing_is_generated(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        result = run_cli(["token"], {**env, "OPENCLAW_GATEWAY_TOKEN": "from-env"})
        assert result.stdout == "from-env\n"
        assert not (tmp_path / "state" / "gateway.token").exists()

    @pytest.mark.parametrize(
        ("auth", "mode"),
        [('{mode: "password", password: "p"}', "password"), ('{mode: "none"}', "none")],
    )
    def test_a_config_with_no_token_stops_the_command_with_78(
        self, tmp_path: Path, env: dict[str, str], auth: str, mode: str
    ) -> None:
        """The configuration, not a failure at run time, is why there is nothing to print:
        78, as for every config refusal, so a script tells it from a gateway problem."""
        config = tmp_path / "gateway.json5"
        config.write_text(f"{{gateway: {{auth: {auth}}}}}")
        result = run_cli(["token", "--config", str(config)], env)
        assert (result.returncode, result.stdout) == (78, "")
        assert result.stderr == f"auth mode is {mode}: there is no token\n"
        assert not (tmp_path / "state").exists()

    @pytest.mark.parametrize(
        ("content", "defect"),
        [(b"", "is empty"), (b" \n", "is empty"), (b"\xff\xfe\n", "is not valid UTF-8")],
    )
    @pytest.mark.parametrize("command", [["token"], ["call", "health"], ["run", "--port", "0"]])
    def test_a_token_file_that_holds_no_token_stops_the_command_with_78(
        self, tmp_path: Path, env: dict[str, str], content: bytes, defect: str, command: list[str]
    ) -> None:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        token_file = state / "gateway.token"
        token_file.write_bytes(content)
        token_file.chmod(0o600)
        result = run_cli(command, env)
        assert (result.returncode, result.stdout) == (78, "")
        assert (
            f"the token file {token_file} {defect}. Fix: remove it (`rm {token_file}`) and a new"
            " token is generated, or write the token in it." in result.stderr
        )
        assert "Traceback" not in result.stderr
        assert token_file.read_bytes() == content

    @pytest.mark.parametrize("command", [["token"], ["call", "health"], ["run", "--port", "0"]])
    def test_a_token_file_it_cannot_read_stops_the_command_with_78_saying_what_to_do(
        self, tmp_path: Path, env: dict[str, str], command: list[str]
    ) -> None:
        """A token file left by a tool run as another user (or chmod 000): it said only
        `Permission denied`."""
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        token_file = state / "gateway.token"
        token_file.write_text("0123456789abcdef0123456789abcdef\n")
        token_file.chmod(0o000)
        result = run_cli(command, env, file_modes_bind=True)
        assert (result.returncode, result.stdout) == (78, "")
        assert (
            f"cannot read the token file {token_file}: Permission denied. Fix: give the user"
            f" running clawgate read access to it (`ls -l {token_file}`: theirs, mode 600), or"
            f" remove it (`rm {token_file}`) and a new token is generated."
        ) in result.stderr.splitlines()
        assert "Traceback" not in result.stderr

    @pytest.mark.parametrize("command", [["token"], ["call", "health"], ["run", "--port", "0"]])
    def test_a_token_that_cannot_be_written_stops_the_command_with_78_leaving_nothing(
        self, tmp_path: Path, env: dict[str, str], command: list[str]
    ) -> None:
        """A full file system: here a file size limit of 0, which fails the write (EFBIG) as
        a full disk fails it (ENOSPC); root is held to it too."""
        state = tmp_path / "state"
        state.mkdir(mode=0o700)

        def full_file_system() -> None:  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

        result = subprocess.run(
            [sys.executable, "-m", "gateway", *command], env=env, capture_output=True,
            text=True, timeout=30, preexec_fn=full_file_system,
        )  # fmt: skip
        assert (result.returncode, result.stdout) == (78, "")
        token_file = state / "gateway.token"
        assert (
            f"cannot write the token file {token_file}: File too large. Fix: make"
            f" {state} writable, with free space, or configure a token"
            " ($OPENCLAW_GATEWAY_TOKEN or gateway.auth.token)." in result.stderr.splitlines()
        )
        assert "Traceback" not in result.stderr
        assert "gateway_listening" not in result.stderr
        assert list(state.iterdir()) == []

    @pytest.mark.parametrize("command", [["token"], ["run", "--port", "0"]])
    def test_a_token_on_a_read_only_file_system_stops_the_command_with_78(
        self, tmp_path: Path, env: dict[str, str], command: list[str]
    ) -> None:
        mount = tmp_path / "ro"
        mount.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)])
        if mounted.returncode != 0:
            pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
        try:
            state = mount / "state"
            state.mkdir(mode=0o700)
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            result = run_cli(command, {**env, "CLAWGATE_STATE_DIR": str(state)})
        finally:
            subprocess.run(["umount", str(mount)], check=True)
        assert (result.returncode, result.stdout) == (78, "")
        # `run` finds the read-only state dir before the token: its store lives there too.
        said = (
            f"cannot use the state dir {state}: it is on a read-only file system (EROFS)"
            if command[0] == "run"
            else f"cannot write the token file {state / 'gateway.token'}: Read-only file system."
        )
        assert said in result.stderr
        assert "Traceback" not in result.stderr


class TestRun:
    def test_port_0_serves_healthz_and_sigterm_exits_0_within_5s(
        self, gateways: list[GatewayProcess], env: dict[str, str]
    ) -> None:
        gateway = start(gateways, ["--port", "0"], env)
        url = gateway.wait_listening()
        assert gateway.port > 0
        status, _, body = get(f"{url}/healthz")
        assert (status, json.loads(body)) == (200, {"ok": True, "status": "live"})
        assert get(f"{url}/readyz")[0] == 200
        began = time.monotonic()
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(timeout=5) == 0
        assert time.monotonic() - began < 5
        names = [e["event"] for e in gateway.events()]
        assert names.index("gateway_stopping") < names.index("gateway_stopped")

    def test_first_start_generates_the_token_file_and_later_starts_reuse_it(
        self, tmp_path: Path, gateways: list[GatewayProcess], env: dict[str, str]
    ) -> None:
        first = start(gateways, ["--port", "0"], env)
        first.wait_listening()
        generated = first.wait_for_event("auth_token_generated")
        token_file = tmp_path / "state" / "gateway.token"
        assert generated["path"] == str(token_file)
        token = token_file.read_text().strip()
        assert token not in "\n".join(first.lines)  # the token itself is never logged
        first.signal()
        assert first.wait() == 0

        second = start(gateways, ["--port", "0"], env)
        second.wait_listening()
        assert token_file.read_text().strip() == token
        assert not any(e["event"] == "auth_token_generated" for e in second.events())
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        second.signal()
        assert second.wait() == 0

    def test_logs_are_json_lines_when_stderr_is_not_a_terminal(
        self, gateways: list[GatewayProcess], env: dict[str, str]
    ) -> None:
        gateway = start(gateways, ["--port", "0"], env)
        gateway.wait_listening()
        gateway.signal()
        gateway.wait()
        assert gateway.lines and all(json.loads(line)["event"] for line in gateway.lines)

    def test_non_loopback_bind_without_auth_is_refused(
        self, tmp_path: Path, gateways: list[GatewayProcess], env: dict[str, str]
    ) -> None:
        path = tmp_path / "open.json5"
        path.write_text('{gateway: {bind: "lan", auth: {mode: "none"}}}')
        result = run_cli(["run", "--config", str(path), "--port", "0"], env)
        assert result.returncode == 78
        assert (
            "refusing to bind gateway to 0.0.0.0:0 without auth (set gateway.auth.token/password,"
            " or set OPENCLAW_GATEWAY_TOKEN/OPENCLAW_GATEWAY_PASSWORD)" in result.stderr
        )

    def test_an_invalid_config_stops_run_with_78_and_nothing_listens(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        path = tmp_path / "bad.json5"
        path.write_text(BAD)
        result = run_cli(["run", "--config", str(path), "--port", "0"], env)
        assert result.returncode == 78
        assert "gateway_listening" not in result.stderr
        assert f"Invalid config at {path}:" in result.stderr

    def test_a_password_no_client_can_send_stops_run_with_78_without_showing_it(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A `${VAR}` with a line break inside (an env file's value with a stray `\\r`): a
        gateway that started would refuse every client, and systemd would not restart it out
        of that."""
        path = tmp_path / "crlf.json5"
        path.write_text("{gateway: {auth: {mode: 'password', password: '${PW}'}}}")
        result = run_cli(["run", "--config", str(path), "--port", "0"], {**env, "PW": "pw\r-8d1"})
        assert result.returncode == 78
        assert "gateway_listening" not in result.stderr
        assert (
            f"Invalid config at {path}:\n- gateway.auth.password: has a control character"
            " (such as a line break or a NUL), which no client can send in a header; the value"
            " is not shown\n"
        ) in result.stderr
        assert "8d1" not in result.stderr

    def test_a_token_that_is_not_utf_8_stops_run_with_78_without_showing_it(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """An environment file saved as Latin-1: its `ä` reaches the gateway as a byte that
        is no UTF-8, which no WebSocket client can send (nor does one typing `ä` send it)."""
        path = tmp_path / "latin1.json5"
        path.write_text("{}")
        # The byte 0xe4 in the child's environment (os.fsencode of the lone surrogate).
        token_env = {**env, "OPENCLAW_GATEWAY_TOKEN": "tok-8d1-\udce4"}
        result = run_cli(["run", "--config", str(path), "--port", "0"], token_env)
        assert result.returncode == 78
        assert "gateway_listening" not in result.stderr
        assert (
            f"Invalid config at {path}:\n- OPENCLAW_GATEWAY_TOKEN: is not valid UTF-8 (a byte"
            " of another encoding, such as an environment file saved as Latin-1, or a lone"
            " surrogate escape such as \\udce4), which no WebSocket client can send; the value"
            " is not shown\n"
        ) in result.stderr
        assert "8d1" not in result.stderr

    def test_a_second_gateway_on_the_state_dir_of_a_running_one_exits_1_saying_so(
        self, tmp_path: Path, gateways: list[GatewayProcess], env: dict[str, str]
    ) -> None:
        """`clawgate run` again by mistake (on another port, or on the same one) while the
        service runs: the SQLite store belongs to one process, and the second one served from
        it beside the first, each keeping its sessions' turns in order by itself alone."""
        first = start(gateways, ["--port", "0"], env)
        first.wait_listening()
        state = tmp_path / "state"
        for port in ("0", str(first.port)):
            result = run_cli(["run", "--port", port], env)
            assert result.returncode == 1, result.stderr
            assert "gateway_listening" not in result.stderr
            assert (
                f"another clawgate runs on the state dir {state}, and its SQLite session"
                " store belongs to one process. Fix: stop that one first, or give this one a"
                " state dir of its own with --state-dir (several processes share the postgres"
                " store)."
            ) in result.stderr.splitlines()
        first.signal()
        assert first.wait() == 0
        second = start(gateways, ["--port", "0"], env)  # the first gone, the dir is free
        second.wait_listening()

    def test_a_busy_port_exits_1_with_a_clear_message(self, env: dict[str, str]) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = run_cli(["run", "--port", str(port)], env)
        assert result.returncode == 1
        assert (
            f"cannot listen on 127.0.0.1:{port}: address already in use (another program"
            " listens there: stop it, or choose another port with --port or gateway.port)\n"
        ) in result.stderr

    @pytest.mark.parametrize("with_config", [False, True])
    def test_a_state_dir_that_is_a_file_exits_78_saying_so_and_what_to_do(
        self, tmp_path: Path, env: dict[str, str], with_config: bool
    ) -> None:
        """Without --config the config file is looked for in it: the error said only
        `cannot read config file: Not a directory`, of a file the operator never named."""
        state = tmp_path / "not-a-dir"
        state.write_text("")
        args = ["run", "--port", "0", "--state-dir", str(state)]
        if with_config:
            (tmp_path / "c.json5").write_text("{}")
            args += ["--config", str(tmp_path / "c.json5")]
        result = run_cli(args, env)
        assert result.returncode == 78
        assert (
            f"the state dir {state} is not a directory. Fix: move that file away, or choose"
            " another state dir with --state-dir."
        ) in result.stderr

    def test_an_address_this_host_does_not_have_exits_1_saying_what_to_check(
        self, env: dict[str, str]
    ) -> None:
        """1, not 78: at boot the address may come with the network (systemd restarts it)."""
        # 192.0.2.0/24 is for documentation (RFC 5737): no host has it.
        result = run_cli(["run", "--bind", "192.0.2.1", "--port", "0"], env)
        assert result.returncode == 1
        assert (
            "cannot listen on 192.0.2.1:0: no network interface of this host has the address"
            " 192.0.2.1 (`ip address` lists them; bind loopback or lan, or an address listed"
            " there)\n"
        ) in result.stderr
        assert "Traceback" not in result.stderr

    def test_a_privileged_port_exits_78_saying_what_it_needs(self, env: dict[str, str]) -> None:
        """Not 1: a restart (systemd's Restart=on-failure) would meet the same refusal."""
        port = privileged_port()
        result = run_cli(["run", "--port", str(port)], env, unprivileged=True)
        assert result.returncode == 78
        assert (
            f"cannot listen on 127.0.0.1:{port}: permission denied (a port below 1024 needs"
            " the CAP_NET_BIND_SERVICE capability; or choose a port of 1024 or above)\n"
        ) in result.stderr
        assert "Traceback" not in result.stderr

    def test_a_database_file_that_is_no_database_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        database = state / "sessions.sqlite3"
        database.write_bytes(b"not a database, but a file that took its name " * 200)
        assert_store_refused(
            env,
            database,
            f"cannot open the session store: {database} is not a SQLite database"
            " (DatabaseError: file is not a database)",
        )

    def test_a_database_whose_schema_is_damaged_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A restart would meet the damage again: not a runtime failure worth one (exit 1)."""
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        database = state / "sessions.sqlite3"
        with contextlib.closing(sqlite3.connect(database)) as db:
            db.execute("CREATE TABLE sessions (key TEXT PRIMARY KEY)")
            db.commit()
        with database.open("r+b") as file:
            file.seek(100)  # the header of page 1's b-tree: the schema table
            file.write(b"\xff" * 8)
        assert_store_refused(
            env,
            database,
            f"cannot open the session store: {database} is damaged"
            " (DatabaseError: database disk image is malformed). Fix: restore a backup, or"
            f" rescue what it holds with `sqlite3 {database} .recover`.",
        )

    def test_a_database_of_a_newer_schema_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        database = state / "sessions.sqlite3"
        with contextlib.closing(sqlite3.connect(database)) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        assert_store_refused(
            env,
            database,
            "cannot open the session store: sessions.sqlite3 has schema"
            f" {SCHEMA_VERSION + 1}, newer than {SCHEMA_VERSION}",
        )

    def test_a_wal_file_it_cannot_write_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """SQLite opens the database read-only when its -wal and -shm files are not writable
        (left by a `sqlite3` shell of another user, say): the gateway said it was ready, then
        failed every turn with "attempt to write a readonly database"."""
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        database = state / "sessions.sqlite3"
        asyncio.run(_made_store(state))
        for name in ("sessions.sqlite3-wal", "sessions.sqlite3-shm"):
            (state / name).touch(mode=0o400)
        result = run_cli(
            ["run", "--port", "0", "--token", "t0ken"], env, timeout=15, file_modes_bind=True
        )
        assert result.returncode == 78
        assert "gateway_listening" not in result.stderr
        assert "Traceback" not in result.stderr
        assert (
            f"cannot open the session store: {database} cannot be written (OperationalError:"
            " attempt to write a readonly database). Fix: give the user running clawgate"
            f" write access to it, its -wal and -shm files and {state} (`ls -la {state}`); a"
            " tool run as another user, such as the sqlite3 shell, may have left them."
        ) in result.stderr.splitlines()

    def test_a_database_it_cannot_write_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """One made 0400 (or another user's): it exited 1, restarted every 5 s for ever."""
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        database = state / "sessions.sqlite3"
        asyncio.run(_made_store(state))
        database.chmod(0o400)
        result = run_cli(
            ["run", "--port", "0", "--token", "t0ken"], env, timeout=15, file_modes_bind=True
        )
        assert result.returncode == 78
        assert "Traceback" not in result.stderr
        assert (
            f"cannot open the session store: {database} cannot be written (PermissionError:"
            f" [Errno 13] Permission denied: '{database}'). Fix: give the user running clawgate"
            f" write access to it, its -wal and -shm files and {state} (`ls -la {state}`); a"
            " tool run as another user, such as the sqlite3 shell, may have left them."
        ) in result.stderr.splitlines()

    def test_a_state_dir_it_cannot_write_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """Its own, but not writable (0500): SQLite cannot make the -wal file, which exited 1
        with a bare "attempt to write a readonly database", restarted every 5 s for ever."""
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        asyncio.run(_made_store(state))
        state.chmod(0o500)
        try:
            result = run_cli(
                ["run", "--port", "0", "--token", "t0ken"], env, timeout=15, file_modes_bind=True
            )
        finally:
            state.chmod(0o700)
        assert result.returncode == 78
        assert "gateway_listening" not in result.stderr
        assert "Traceback" not in result.stderr
        assert (
            f"cannot use the state dir {state}: {pwd.getpwuid(os.geteuid()).pw_name} who runs"
            " clawgate cannot write it, and"
            " clawgate keeps its session database there. Fix: `chmod 700"
            f" {state}`, or choose a writable state dir with --state-dir."
        ) in result.stderr.splitlines()

    @pytest.mark.parametrize("state_dir", ["empty", "used", "missing"])
    def test_a_state_dir_on_a_read_only_file_system_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str], state_dir: str
    ) -> None:
        """A mount gone read-only (a disk error remounts it so), or a sandbox that makes the
        file system read-only (systemd's ProtectSystem=strict) and forgot this dir: it exited
        1 with a bare OSError, restarted every 5 s for ever."""
        mount = tmp_path / "mount"
        state = mount / "state"
        state.mkdir(mode=0o700, parents=True)
        if state_dir == "used":
            asyncio.run(_made_store(state))
        elif state_dir == "missing":
            state.rmdir()
        env = {**env, "CLAWGATE_STATE_DIR": str(state)}
        result = run_cli(["run", "--port", "0", "--token", "t0ken"], env, read_only=mount)
        assert result.returncode == 78, result.stderr
        assert "gateway_listening" not in result.stderr
        assert "Traceback" not in result.stderr
        assert (
            f"cannot use the state dir {state}: it is on a read-only file system (EROFS), and"
            " clawgate keeps its session database there. Fix: mount it read-write (under"
            " systemd's ProtectSystem=, list it in the unit's StateDirectory= or"
            " ReadWritePaths=), or choose a writable state dir with --state-dir."
        ) in result.stderr.splitlines()

    @pytest.mark.parametrize(
        ("state_dir", "error"),
        [("empty", "database or disk is full"), ("used", "disk I/O error")],
    )
    def test_a_state_dir_on_a_full_disk_exits_1_saying_so_and_what_to_do(
        self, tmp_path: Path, env: dict[str, str], state_dir: str, error: str
    ) -> None:
        """The database cannot be made, or its shared-memory file cannot grow (SQLite says
        only "disk I/O error" then): a runtime failure (1: systemd tries again, and space may
        come free), with where and what to do, not a bare `OperationalError`."""
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        holding = None
        if state_dir == "used":
            holding = tmp_path / "used"
            asyncio.run(_made_store(holding))  # copied into the file system mounted there
        env = {**env, "CLAWGATE_STATE_DIR": str(state)}
        args = ["run", "--port", "0", "--token", "t0ken"]
        result = run_cli(args, env, full=state, full_holding=holding)
        assert result.returncode == 1, result.stderr
        assert "gateway_listening" not in result.stderr
        assert "Traceback" not in result.stderr
        database = state / "sessions.sqlite3"
        assert (
            f"cannot open the session store: {database} cannot be written: its file system"
            f" is full (OperationalError: {error}). Fix: free space there"
            f" (`df -h {state}`), or choose a state dir on another file system with --state-dir."
        ) in result.stderr.splitlines()

    def test_a_postgres_url_setting_the_driver_refuses_exits_78_saying_so(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A setting in `store.url` the driver refuses (`sslmode=bogus`) is the same at every
        start: it exited 1, and systemd restarted it every 5 s for ever."""
        config = tmp_path / "c.json5"
        config.write_text(
            '{ store: { backend: "postgres", password: "x",'
            ' url: "postgresql://u@127.0.0.1:1/db?sslmode=bogus" } }'
        )
        result = run_cli(["run", "--config", str(config), "--port", "0"], env)
        assert result.returncode == 78
        assert "Traceback" not in result.stderr
        assert (
            "cannot open the session store: store.url: ClientConfigurationError: `sslmode`"
            " parameter must be one of: disable, allow, prefer, require, verify-ca, verify-full"
        ) in result.stderr.splitlines()

    def test_a_postgres_server_that_never_answers_exits_1_saying_where_and_how_long(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A database host that takes the connection and never answers (a hung server, a
        firewall's tarpit): it said `TimeoutError: ` and nothing after it."""
        listener = socket.create_server(("127.0.0.1", 0))
        held: list[socket.socket] = []

        def hold() -> None:
            with contextlib.suppress(OSError):  # the listener closed at the end
                while True:
                    held.append(listener.accept()[0])

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        port = listener.getsockname()[1]
        config = tmp_path / "c.json5"
        config.write_text(
            '{ store: { backend: "postgres",'
            f' url: "postgresql://u:s3cret-pw@127.0.0.1:{port}/db" }} }}'
        )
        try:
            result = run_cli(["run", "--config", str(config), "--port", "0"], env)
        finally:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            listener.close()
            holder.join()
            for each in held:
                each.close()
        assert result.returncode == 1
        assert held  # it did connect: the server took the connection and said nothing
        assert "Traceback" not in result.stderr
        assert "s3cret-pw" not in result.stderr
        assert (
            f"cannot open the session store: TimeoutError: the database at 127.0.0.1:{port}"
            " did not answer within 5 s"
        ) in result.stderr.splitlines()

    def test_bare_options_mean_run(self, env: dict[str, str]) -> None:
        # Only the `run` subcommand knows --port, so this error proves the routing.
        result = run_cli(["--port", "70000"], env)
        assert result.returncode == 2
        assert "port must be between 0 and 65535 (got 70000)" in result.stderr
