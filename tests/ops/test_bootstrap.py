"""scripts/serve and scripts/test as a user runs them. On a fresh machine: the real scripts, run
on a copy of the project in a directory whose path has a space; pip runs with PIP_NO_INDEX, so
nothing is downloaded: an install that needs PyPI fails, which is what these tests need of it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.process import GatewayProcess, clean_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The scripts and the files bootstrap.sh hashes, at a path with a space in it."""
    root = tmp_path / "a clone"
    (root / "scripts").mkdir(parents=True)
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    for name in ("serve", "test", "bootstrap.sh"):
        shutil.copy(ROOT / "scripts" / name, root / "scripts" / name)
    return root


def run_script(project: Path, name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(tmp_path / "home", {"PYTHON": sys.executable, "PIP_NO_INDEX": "1"})
    return subprocess.run(
        [str(project / "scripts" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestAFirstRunThatStoppedHalfway:
    @pytest.mark.parametrize("script", ["serve", "test"])
    def test_a_venv_left_without_pip_is_made_again(
        self, project: Path, tmp_path: Path, script: str
    ) -> None:
        # What `python3 -m venv` leaves on Debian without python3-venv, or when stopped
        # during ensurepip: bin/python, no pip.
        venv = project / ".venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        result = run_script(project, script, tmp_path)
        assert f"creating {venv} with {sys.executable}" in result.stderr
        assert "No module named pip" not in result.stderr
        pip = subprocess.run([str(venv / "bin/python"), "-m", "pip", "--version"])
        assert pip.returncode == 0
        # The install itself cannot reach PyPI here: it fails, the script with it, and no
        # stamp says it was done.
        assert result.returncode == 1
        assert list(venv.glob(".clawgate-installed*")) == []


class TestServe:
    def test_a_relative_config_path_is_relative_to_where_serve_was_run(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "mine.json5").write_text('{gateway: {auth: {mode: "token", token: "t"}}}')
        env = clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(tmp_path / "state")})
        serve = [str(ROOT / "scripts" / "serve")]
        gateway = GatewayProcess(
            ["--config", "mine.json5", "--port", "0"], env, command=serve, cwd=tmp_path
        )
        try:
            gateway.wait_listening()
            assert not any(e["event"] == "config_default_used" for e in gateway.events())
        finally:
            gateway.stop()

    def test_the_token_command_it_prints_runs_as_printed_from_a_path_with_a_space(
        self, project: Path, tmp_path: Path
    ) -> None:
        # A venv bootstrap.sh finds done: this one's python and clawgate, and its stamp.
        venv = project / ".venv"
        (venv / "bin").mkdir(parents=True)
        for name in ("python", "clawgate"):
            (venv / "bin" / name).symlink_to(Path(sys.executable).with_name(name))
        hashed = b"".join((project / name).read_bytes() for name in ("setup.cfg", "pyproject.toml"))
        (venv / ".clawgate-installed").write_text(hashlib.sha256(hashed).hexdigest()[:16] + "\n")
        env = clean_env(tmp_path / "home", {"CLAWGATE_STATE_DIR": str(tmp_path / "state")})
        serve = [str(project / "scripts" / "serve")]
        gateway = GatewayProcess(["--port", "0"], env, command=serve, cwd=tmp_path)
        try:
            gateway.wait_listening()
        finally:
            gateway.stop()
        hint = next(line for line in gateway.lines if line.startswith("clawgate:   "))
        command = hint.removeprefix("clawgate:").split("   (")[0].strip()
        printed = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30
        )
        assert printed.returncode == 0, (command, printed.stderr)
        assert printed.stdout == (tmp_path / "state" / "gateway.token").read_text()
