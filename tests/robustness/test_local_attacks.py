"""Attacks by another local user on the state dir, against real `clawgate run` processes.

The attacker is uid 65534 (nobody) where the tests run as root, so the planted links and the
handed-over directory really belong to someone else; elsewhere the same files are planted by
the test's own user, which the gateway must refuse just the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.process import clean_env, run_cli

ATTACKER = 65534


def plant_link(link: Path, target: Path) -> None:
    link.symlink_to(target)
    if os.geteuid() == 0:
        os.lchown(link, ATTACKER, ATTACKER)


def run(state: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(state)})
    result = run_cli(["run", "--port", "0", *args], env, timeout=20)
    assert "gateway_listening" not in result.stderr
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr


class TestPlantedLinks:
    def test_a_token_link_to_a_token_the_attacker_knows_is_refused(self, tmp_path: Path) -> None:
        # A shared, sticky, world-writable dir (like /tmp) as the state dir: anyone can plant.
        state = tmp_path / "shared"
        state.mkdir()
        state.chmod(0o1777)
        known = tmp_path / "attacker-token"
        known.write_text("attacker-knows-this\n")
        plant_link(state / "gateway.token", known)
        code, stderr = run(state, tmp_path)
        assert code == 78
        assert f"the state dir {state} is writable by its group or by everyone" in stderr

    def test_a_dangling_token_link_does_not_make_the_gateway_write_elsewhere(
        self, tmp_path: Path
    ) -> None:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        victim = tmp_path / "victim-dir" / "authorized_keys"
        victim.parent.mkdir()
        plant_link(state / "gateway.token", victim)
        code, stderr = run(state, tmp_path)
        assert code == 78
        assert f"refusing to follow the symlink {state / 'gateway.token'}" in stderr
        assert not victim.exists()

    def test_a_database_link_does_not_get_the_sessions_written_through_it(
        self, tmp_path: Path
    ) -> None:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        victim = tmp_path / "victim.conf"
        victim.write_bytes(b"setting = 1\n")
        plant_link(state / "sessions.sqlite3", victim)
        code, stderr = run(state, tmp_path, "--token", "t0ken")
        assert code == 78
        assert f"refusing to follow the symlink {state / 'sessions.sqlite3'}" in stderr
        assert victim.read_bytes() == b"setting = 1\n"

    def test_a_fifo_as_the_token_file_is_refused_without_hanging(self, tmp_path: Path) -> None:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        os.mkfifo(state / "gateway.token")
        code, stderr = run(state, tmp_path)  # run_cli's timeout fails a hang
        assert code == 78
        assert f"refusing to use {state / 'gateway.token'}: it is not a regular file" in stderr


class TestHandedOverStateDir:
    def test_a_state_dir_owned_by_another_user_is_refused(self, tmp_path: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("a directory owned by another user needs root to set up")
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        os.chown(state, ATTACKER, ATTACKER)
        code, stderr = run(state, tmp_path)
        assert code == 78
        assert f"the state dir {state} is owned by nobody" in stderr
        # Root can write there, but must not: the owner could swap the files at any time.
        assert os.listdir(state) == []
