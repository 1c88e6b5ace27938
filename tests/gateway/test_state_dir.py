"""The state dir guard, through real `clawgate` subprocesses: a state dir others can write or
that another user owns stops `run` with 78, and files in it are never followed as symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.process import GatewayProcess, clean_env, run_cli

NOBODY = 65534


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def env(tmp_path: Path, state: Path) -> dict[str, str]:
    return clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(state)})


def refused(result_stderr: str, *parts: str) -> None:
    for part in parts:
        assert part in result_stderr, result_stderr
    assert "gateway_listening" not in result_stderr
    assert "Traceback" not in result_stderr


class TestStateDirOwnershipAndMode:
    @pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
    def test_run_refuses_a_state_dir_others_can_write(
        self, state: Path, env: dict[str, str], mode: int
    ) -> None:
        state.chmod(mode)
        result = run_cli(["run", "--port", "0"], env)
        assert result.returncode == 78
        refused(
            result.stderr,
            f"refusing to start: the state dir {state} is writable by its group or by everyone"
            f" (mode {mode:04o})",
            f"Fix: `chmod 700 {state}`.",
        )
        assert not (state / "gateway.token").exists()
        assert not (state / "sessions.sqlite3").exists()

    def test_run_refuses_a_state_dir_owned_by_another_user(
        self, state: Path, env: dict[str, str]
    ) -> None:
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another user needs root")
        os.chown(state, NOBODY, NOBODY)
        result = run_cli(["run", "--port", "0"], env)
        assert result.returncode == 78
        refused(
            result.stderr,
            f"refusing to start: the state dir {state} is owned by nobody, not by root",
            f"Fix: `chown root {state}`",
        )

    def test_token_refuses_an_unsafe_state_dir_like_run(
        self, state: Path, env: dict[str, str]
    ) -> None:
        state.chmod(0o777)
        result = run_cli(["token"], env)
        assert (result.returncode, result.stdout) == (78, "")
        # One line, as `call` says it: not the same again as a JSON log line.
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.endswith(f"Fix: `chmod 700 {state}`.\n")
        assert not (state / "gateway.token").exists()

    def test_a_missing_state_dir_is_created_0700_and_accepted(
        self, tmp_path: Path, gateways: list[GatewayProcess]
    ) -> None:
        state = tmp_path / "deep" / "state"
        env = clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(state)})
        gateway = GatewayProcess(["--port", "0"], env)
        gateways.append(gateway)
        gateway.wait_listening()
        assert state.stat().st_mode & 0o777 == 0o700

    @pytest.mark.parametrize("command", [["run", "--port", "0"], ["token"]])
    def test_a_state_dir_that_cannot_be_created_stops_the_command_with_78(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        # Under a regular file (as root, no permission is missing that this could show).
        (tmp_path / "file").write_text("")
        state = tmp_path / "file" / "state"
        config = tmp_path / "c.json5"
        config.write_text("{}")
        env = clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(state)})
        result = run_cli([*command, "--config", str(config)], env)
        assert (result.returncode, result.stdout) == (78, "")
        refused(result.stderr, f"cannot create the state dir {state}: Not a directory")

    def test_a_symlinked_state_dir_of_our_own_is_accepted(
        self, tmp_path: Path, gateways: list[GatewayProcess]
    ) -> None:
        # systemd's StateDirectory= under DynamicUser= makes /var/lib/clawgate a link to
        # /var/lib/private/clawgate, owned by the service's user, mode StateDirectoryMode.
        private = tmp_path / "private" / "clawgate"
        private.mkdir(parents=True, mode=0o700)
        link = tmp_path / "clawgate"
        link.symlink_to(private)
        env = clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(link)})
        gateway = GatewayProcess(["--port", "0"], env)
        gateways.append(gateway)
        gateway.wait_listening()
        assert (private / "sessions.sqlite3").is_file()


class TestSymlinksInTheStateDir:
    def test_run_refuses_a_symlinked_token_file(
        self, tmp_path: Path, state: Path, env: dict[str, str]
    ) -> None:
        elsewhere = tmp_path / "elsewhere.txt"
        elsewhere.write_text("a token someone else knows\n")
        (state / "gateway.token").symlink_to(elsewhere)
        result = run_cli(["run", "--port", "0"], env)
        assert result.returncode == 78
        refused(
            result.stderr,
            f"refusing to follow the symlink {state / 'gateway.token'} -> {elsewhere}",
            f"Fix: remove the link (`rm {state / 'gateway.token'}`)",
        )

    def test_token_refuses_a_symlinked_token_file(
        self, tmp_path: Path, state: Path, env: dict[str, str]
    ) -> None:
        (state / "gateway.token").symlink_to(tmp_path / "missing-target")
        result = run_cli(["token"], env)
        assert (result.returncode, result.stdout) == (78, "")
        assert f"refusing to follow the symlink {state / 'gateway.token'}" in result.stderr
        assert not (tmp_path / "missing-target").exists()  # nor created through the link

    @pytest.mark.parametrize(
        "name", ["sessions.sqlite3", "sessions.sqlite3-wal", "sessions.sqlite3-shm"]
    )
    def test_run_refuses_a_symlinked_database_file(
        self, tmp_path: Path, state: Path, env: dict[str, str], name: str
    ) -> None:
        victim = tmp_path / "victim"
        victim.write_bytes(b"precious")
        (state / name).symlink_to(victim)
        result = run_cli(["run", "--port", "0", "--token", "t0ken"], env)
        assert result.returncode == 78
        refused(
            result.stderr,
            f"refusing to follow the symlink {state / name}: the session database must be a"
            f" regular file. Fix: remove the link (`rm {state / name}`).",
        )
        assert victim.read_bytes() == b"precious"

    def test_run_refuses_a_symlinked_config_at_the_default_path(
        self, tmp_path: Path, state: Path, env: dict[str, str]
    ) -> None:
        elsewhere = tmp_path / "other.json5"
        elsewhere.write_text("{gateway: {auth: {mode: 'none'}}}")
        (state / "clawgate.json5").symlink_to(elsewhere)
        for args in (["run", "--port", "0"], ["config", "validate"], ["config", "show"]):
            result = run_cli(args, env)
            assert result.returncode == 78, args
            assert f"refusing to follow the symlink {state / 'clawgate.json5'}" in result.stderr

    def test_an_explicit_config_outside_the_state_dir_may_be_a_symlink(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        # /etc/clawgate/clawgate.json5 is often a link from config management.
        real = tmp_path / "managed.json5"
        real.write_text("{gateway: {port: 18789}}")
        link = tmp_path / "clawgate.json5"
        link.symlink_to(real)
        result = run_cli(["config", "validate", "--config", str(link)], env)
        assert result.returncode == 0, result.stderr
