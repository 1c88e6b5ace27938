"""systemd: the unit file, `clawgate service install`, and sd_notify over a real socket."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.systemd import Notifier
from tests.support.held_relay import held_relay
from tests.support.pgserver import PgServer
from tests.support.process import GatewayProcess, clean_env, run_cli

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "conf" / "clawgate.service"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        # CI installs it (.ci/run) and sets this, so there a missing command fails the test.
        if os.environ.get("CLAWGATE_REQUIRE_SYSTEMD"):
            pytest.fail("systemd-analyze is missing")
        pytest.skip("systemd-analyze is not installed")
    return path


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def exposure(report: str) -> float:
    """The number of systemd-analyze security's last line, `→ Overall exposure level for
    clawgate.service: 1.1 OK 🙂`."""
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
    assert match is not None, report
    return float(match.group(1))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(10)
    yield sock
    sock.close()


def receive_until(sock: socket.socket, wanted: str, timeout: float = 10) -> list[str]:
    """Every datagram line received until one equals `wanted`."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while wanted not in lines:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            lines.extend(sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            raise AssertionError(f"no {wanted!r}; got {lines}") from None
    return lines


class TestUnitFile:
    def test_the_shipped_unit_runs_clawgate_as_the_issue_says(self) -> None:
        text = UNIT.read_text()
        for line in (
            "Type=notify",
            "ExecStart=/opt/clawgate/.venv/bin/clawgate run --config"
            " /etc/clawgate/clawgate.json5 --state-dir /var/lib/clawgate",
            "Restart=on-failure",
            "RestartPreventExitStatus=78",
            "StateDirectory=clawgate",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "DynamicUser=yes",
        ):
            assert line in text.splitlines(), line

    def test_a_command_line_run_refuses_is_not_restarted_in_a_loop(self, tmp_path: Path) -> None:
        """A typo in ExecStart (or a drop-in's) exits 2 at every start: with RestartSec=5 the
        restarts never reach systemd's start limit (5 in 10 s), so it looped for ever."""
        result = run_cli(["run", "--no-such-flag"], clean_env(tmp_path / "home"))
        prevented: set[str] = set()
        for line in UNIT.read_text().splitlines():
            if line.startswith("RestartPreventExitStatus="):
                prevented.update(line.partition("=")[2].split())
        assert str(result.returncode) in prevented
        assert "78" in prevented

    def test_systemd_signals_the_main_process_alone_on_stop(self) -> None:
        """With `--workers`, systemd's default (SIGTERM to every process of the unit) and the
        supervisor's SIGTERM passed on would be two signals to each worker: it would exit
        without its drain. The final SIGKILL still reaches every process."""
        assert "KillMode=mixed" in UNIT.read_text().splitlines()

    def test_systemd_analyze_verify_accepts_the_unit(self, tmp_path: Path) -> None:
        # verify checks that ExecStart exists: point it at this checkout's command.
        executable = shutil.which("clawgate") or str(ROOT / ".venv" / "bin" / "clawgate")
        unit = tmp_path / "clawgate.service"
        unit.write_text(UNIT.read_text().replace("/opt/clawgate/.venv/bin/clawgate", executable))
        result = verify(unit)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""

    def test_verify_complains_about_a_broken_unit(self, tmp_path: Path) -> None:
        # Proves the check above can fail: verify reports a bad value on stderr (exit 0).
        unit = tmp_path / "clawgate.service"
        unit.write_text(UNIT.read_text().replace("Type=notify", "Type=bogus"))
        assert "Failed to parse service type" in verify(unit).stderr


class TestServiceInstall:
    @pytest.mark.parametrize("user", [False, True])
    def test_writes_a_unit_that_verifies_and_the_default_config(
        self, tmp_path: Path, user: bool
    ) -> None:
        env = clean_env(tmp_path / "home")
        config = tmp_path / "etc" / "clawgate.json5"
        # A system unit's state dir is one systemd makes for its dynamic user, in /var/lib.
        state = tmp_path / "state" if user else Path("/var/lib/clawgate-b")
        args = ["service", "install", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(config), "--state-dir", str(state)]
        result = run_cli([*args, "--user"] if user else args, env)
        assert result.returncode == 0, result.stderr
        unit = tmp_path / "units" / "clawgate.service"
        text = unit.read_text()
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        assert exec_start.endswith(f"/clawgate run --config {config} --state-dir {state}")
        if not user:
            assert "StateDirectory=clawgate-b" in text.splitlines()
        assert ("DynamicUser=yes" in text) is not user
        # A user unit keeps no sandboxing line, nor the comment that explained one.
        assert ("EPERM" in text) is not user
        assert ("WantedBy=default.target" in text) is user
        assert "systemctl" + (" --user" if user else "") + " enable --now clawgate" in result.stdout
        validated = run_cli(["config", "validate", "--config", str(config)], env)
        assert validated.returncode == 0, validated.stderr
        checked = verify(unit)
        assert (checked.returncode, checked.stderr) == (0, "")

    def test_paths_with_spaces_percent_and_dollar_signs_stay_one_argument_each(
        self, tmp_path: Path
    ) -> None:
        # This interpreter seen through a directory whose name has a space: the command the
        # unit runs is then `<tmp>/my venv/bin/clawgate`.
        venv = tmp_path / "my venv"
        venv.symlink_to(Path(sys.executable).parent.parent)
        config = tmp_path / "my conf" / "gw%h$HOME.json5"
        state = tmp_path / "st ate"
        args = ["service", "install", "--user", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(config), "--state-dir", str(state)]
        result = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "gateway", *args],
            env=clean_env(tmp_path / "home"), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        unit = tmp_path / "units" / "clawgate.service"
        exec_start = next(
            line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")
        )
        assert exec_start == (
            f'ExecStart="{venv}/bin/clawgate" run'
            f' --config "{tmp_path}/my conf/gw%%h$$HOME.json5" --state-dir "{state}"'
        )
        checked = verify(unit)
        assert (checked.returncode, checked.stderr) == (0, "")

    def test_the_installed_system_unit_scores_at_most_1_2_in_systemd_analyze_security(
        self, tmp_path: Path
    ) -> None:
        args = ["service", "install", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(tmp_path / "clawgate.json5")]
        assert run_cli(args, clean_env(tmp_path / "home")).returncode == 0
        unit = tmp_path / "units" / "clawgate.service"
        result = subprocess.run(
            [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert exposure(result.stdout) <= 1.2, result.stdout

    @pytest.mark.parametrize("state", ["/srv/clawgate", "/var/lib", "/var/lib/../srv/clawgate"])
    def test_a_system_unit_refuses_a_state_dir_systemd_cannot_make_for_it(
        self, tmp_path: Path, state: str
    ) -> None:
        """Under ProtectSystem=strict and DynamicUser= the gateway can write only the
        StateDirectory= systemd makes for it: a directory under /var/lib."""
        config = tmp_path / "etc" / "clawgate.json5"
        args = ["service", "install", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(config), "--state-dir", state]
        result = run_cli(args, clean_env(tmp_path / "home"))
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            f"cannot install the service: a system unit's state dir must be /var/lib/NAME,"
            f" which systemd makes for its dynamic user (not {state}). Fix: --state-dir"
            " /var/lib/NAME (NAME of letters, digits, `.`, `_`, `-`), or a user unit (--user).\n"
        )
        assert not (tmp_path / "units").exists()
        assert not config.exists()

    @pytest.mark.parametrize("user", [False, True])
    def test_a_system_unit_warns_of_a_config_its_sandbox_hides(
        self, tmp_path: Path, user: bool
    ) -> None:
        """PrivateTmp=yes gives the service a /tmp of its own, ProtectHome=yes hides /home,
        /root and /run/user: a config there would be `not found` when the service starts."""
        if not tmp_path.is_relative_to("/tmp"):
            pytest.skip("the test's files are not under /tmp")
        config = tmp_path / "clawgate.json5"
        args = ["service", "install", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(config)]
        result = run_cli([*args, "--user"] if user else args, clean_env(tmp_path / "home"))
        assert result.returncode == 0, result.stderr
        warning = (
            f"warning: the service will not find {config}: its sandbox hides /tmp"
            " (PrivateTmp=yes). Fix: a config in /etc/clawgate and clawgate in /opt/clawgate,"
            " or a user unit (--user)."
        )
        assert (warning in result.stderr.splitlines()) is not user
        assert (tmp_path / "units" / "clawgate.service").exists()

    def test_a_system_install_says_where_the_service_keeps_its_token(self, tmp_path: Path) -> None:
        """`clawgate token` as root refuses the state dir the service's dynamic user owns."""
        args = ["service", "install", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(tmp_path / "c.json5"), "--state-dir", "/var/lib/clawgate-b"]
        result = run_cli(args, clean_env(tmp_path / "home"))
        assert result.returncode == 0, result.stderr
        assert (
            "  cat /var/lib/clawgate-b/gateway.token   # as root, once started: the token"
            " clients send (none when one is configured)" in result.stdout.splitlines()
        )

    def test_a_user_install_prints_a_token_command_that_runs_as_printed(
        self, tmp_path: Path
    ) -> None:
        config = tmp_path / "my conf" / "c.json5"
        state = tmp_path / "st ate"
        env = clean_env(tmp_path / "home")
        args = ["service", "install", "--user", "--unit-dir", str(tmp_path / "units")]
        result = run_cli([*args, "--config", str(config), "--state-dir", str(state)], env)
        assert result.returncode == 0, result.stderr
        command = next(line for line in result.stdout.splitlines() if " token " in line)
        printed = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30
        )
        assert printed.returncode == 0, (command, printed.stderr)
        assert printed.stdout == (state / "gateway.token").read_text()

    def test_a_user_install_writes_a_config_only_its_user_reads(self, tmp_path: Path) -> None:
        """The user's token and API keys go there, and `config.patch` writes them there
        (keeping the mode): under the usual umask 022 it was readable by every local user.
        A system unit's config stays readable: its dynamic user is no owner, and its secrets
        go in /etc/clawgate/env."""
        config = tmp_path / "conf" / "clawgate.json5"
        args = ["service", "install", "--user", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(config), "--state-dir", str(tmp_path / "state")]
        result = subprocess.run(
            [sys.executable, "-m", "gateway", *args], env=clean_env(tmp_path / "home"),
            capture_output=True, text=True, timeout=30, preexec_fn=lambda: os.umask(0o022),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "units" / "clawgate.service").stat().st_mode) == 0o644

    def test_a_unit_file_edited_by_hand_is_kept_unless_forced(self, tmp_path: Path) -> None:
        """It was overwritten without a word: an operator's own lines (Environment=, a
        MemoryMax=) gone at the next install."""
        env = clean_env(tmp_path / "home")
        args = ["service", "install", "--user", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(tmp_path / "c.json5"), "--state-dir", str(tmp_path / "state")]
        assert run_cli(args, env).returncode == 0
        unit = tmp_path / "units" / "clawgate.service"
        written = unit.read_text()
        again = run_cli(args, env)  # what install would write: no harm, said so
        assert again.returncode == 0, again.stderr
        assert f"{unit} is up to date" in again.stdout.splitlines()
        edited = written.replace("[Service]\n", "[Service]\nEnvironment=MINE=1\n")
        unit.write_text(edited)
        refused = run_cli(args, env)
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            f"cannot install the service: {unit} exists and is not the unit this install"
            " writes (edited by hand, or written by another version or with other paths);"
            " it is left as it is. Fix: move it away, or run again with --force to replace it.\n"
        )
        # What --force would change, as a diff: the operator's line would go.
        assert "-Environment=MINE=1" in refused.stderr.splitlines()
        assert refused.stdout == ""
        assert unit.read_text() == edited
        forced = run_cli([*args, "--force"], env)
        assert forced.returncode == 0, forced.stderr
        assert f"wrote {unit}" in forced.stdout.splitlines()
        assert unit.read_text() == written

    def test_a_forced_install_replaces_the_unit_whole_never_in_place(self, tmp_path: Path) -> None:
        """The unit was truncated and written in place: a crash or a full disk midway left
        half a unit. A reader of the old file (systemd's daemon-reload) reads it whole."""
        env = clean_env(tmp_path / "home")
        args = ["service", "install", "--user", "--unit-dir", str(tmp_path / "units")]
        args += ["--config", str(tmp_path / "c.json5"), "--state-dir", str(tmp_path / "state")]
        unit = tmp_path / "units" / "clawgate.service"
        unit.parent.mkdir()
        old = "[Unit]\nDescription=an operator's own\n"
        unit.write_text(old)
        unit.chmod(0o640)
        with unit.open() as reader:
            forced = run_cli([*args, "--force"], env)
            assert forced.returncode == 0, forced.stderr
            assert reader.read() == old
        assert unit.read_text().startswith("# clawgate as a systemd service.")
        assert stat.S_IMODE(unit.stat().st_mode) == 0o640
        assert sorted(p.name for p in unit.parent.iterdir()) == ["clawgate.service"]

    def test_a_forced_install_over_a_linked_unit_keeps_the_link_and_replaces_its_target(
        self, tmp_path: Path
    ) -> None:
        """`systemctl link /opt/x/clawgate.service` puts a symlink in the unit dir."""
        env = clean_env(tmp_path / "home")
        target = tmp_path / "opt" / "clawgate.service"
        target.parent.mkdir()
        target.write_text("[Unit]\nDescription=linked\n")
        unit = tmp_path / "units" / "clawgate.service"
        unit.parent.mkdir()
        unit.symlink_to(target)
        args = ["service", "install", "--user", "--unit-dir", str(unit.parent), "--force"]
        args += ["--config", str(tmp_path / "c.json5"), "--state-dir", str(tmp_path / "state")]
        forced = run_cli(args, env)
        assert forced.returncode == 0, forced.stderr
        assert unit.is_symlink() and unit.readlink() == target
        assert target.read_text().startswith("# clawgate as a systemd service.")
        assert [p.name for p in target.parent.iterdir()] == ["clawgate.service"]

    def test_a_unit_dir_it_cannot_write_is_told_by_the_units_name(self, tmp_path: Path) -> None:
        """It named the temp file beside the unit, a name the operator never gave."""
        units = tmp_path / "units"
        units.mkdir(mode=0o500)
        args = ["service", "install", "--user", "--unit-dir", str(units)]
        args += ["--config", str(tmp_path / "c.json5"), "--state-dir", str(tmp_path / "state")]
        try:
            refused = run_cli(args, clean_env(tmp_path / "home"), file_modes_bind=True)
        finally:
            units.chmod(0o700)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            "cannot install the service: [Errno 13] Permission denied:"
            f" '{units / 'clawgate.service'}'\n"
        )
        assert list(units.iterdir()) == []

    def test_a_unit_file_that_is_no_text_is_kept_and_told(self, tmp_path: Path) -> None:
        unit = tmp_path / "units" / "clawgate.service"
        unit.parent.mkdir()
        unit.write_bytes(b"[Unit]\nDescription=caf\xe9\n")  # Latin-1
        args = ["service", "install", "--user", "--unit-dir", str(unit.parent)]
        args += ["--config", str(tmp_path / "c.json5"), "--state-dir", str(tmp_path / "state")]
        refused = run_cli(args, clean_env(tmp_path / "home"))
        assert refused.returncode == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        assert refused.stderr.startswith(f"cannot install the service: {unit} exists and")
        assert "-Description=caf\ufffd" in refused.stderr.splitlines()
        assert unit.read_bytes() == b"[Unit]\nDescription=caf\xe9\n"

    def test_an_existing_config_is_left_alone(self, tmp_path: Path) -> None:
        config = tmp_path / "mine.json5"
        config.write_text("{gateway: {port: 9999}}")
        args = ["service", "install", "--unit-dir", str(tmp_path), "--config", str(config)]
        assert run_cli(args, clean_env(tmp_path / "home")).returncode == 0
        assert config.read_text() == "{gateway: {port: 9999}}"


class TestNotifier:
    def test_sends_each_message_as_one_datagram(
        self, tmp_path: Path, notify_socket: socket.socket
    ) -> None:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        notifier.notify("READY=1", "STATUS=up")
        assert notify_socket.recv(4096) == b"READY=1\nSTATUS=up"
        notifier.close()

    def test_reaches_an_abstract_socket(self) -> None:
        name = f"clawgate-test-{os.getpid()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            sock.settimeout(5)
            notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
            notifier.notify("WATCHDOG=1")
            assert sock.recv(4096) == b"WATCHDOG=1"
            notifier.close()

    def test_is_a_no_op_without_notify_socket(self) -> None:
        notifier = Notifier({})
        notifier.notify("READY=1")  # nothing to send to, nothing raised

    def test_watchdog_interval_comes_from_watchdog_usec(self) -> None:
        assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_seconds == 30.0
        assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
        assert Notifier({}).watchdog_seconds is None


class TestGatewayNotifies:
    def test_ready_once_listening_and_stopping_on_sigterm(
        self, tmp_path: Path, notify_socket: socket.socket
    ) -> None:
        env = clean_env(
            tmp_path / "home",
            {
                "CLAWGATE_STATE_DIR": str(tmp_path / "state"),
                "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                "WATCHDOG_USEC": "200000",  # pets every 0.1 s
            },
        )
        gateway = GatewayProcess(["--port", "0"], env)
        try:
            lines = receive_until(notify_socket, "READY=1")
            url = gateway.wait_listening()
            assert f"STATUS=listening on {url}" in lines
            receive_until(notify_socket, "WATCHDOG=1")
            gateway.signal(signal.SIGTERM)
            assert "STATUS=draining" in receive_until(notify_socket, "STOPPING=1")
            assert gateway.wait() == 0
        finally:
            gateway.stop()

    def test_stopping_extends_systemds_stop_timeout_to_the_configured_drain(
        self, tmp_path: Path, notify_socket: socket.socket
    ) -> None:
        """The unit's TimeoutStopSec=30 is 20 s of drain and 10 to finish: a longer
        drainSeconds would be cut short by systemd's SIGKILL, losing the turns it waits for."""
        config = tmp_path / "clawgate.json5"
        config.write_text('{gateway: {auth: {token: "t0ken"}, shutdown: {drainSeconds: 120}}}')
        env = clean_env(
            tmp_path / "home",
            {
                "CLAWGATE_STATE_DIR": str(tmp_path / "state"),
                "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            },
        )
        gateway = GatewayProcess(["--config", str(config), "--port", "0"], env)
        try:
            receive_until(notify_socket, "READY=1")
            gateway.signal(signal.SIGTERM)
            lines = receive_until(notify_socket, "STOPPING=1")
            # The drain, then 5 s each for aborted turns, the handlers and the store.
            assert "EXTEND_TIMEOUT_USEC=135000000" in lines
            assert gateway.wait() == 0
        finally:
            gateway.stop()

    @pytest.mark.postgres
    def test_a_stop_requested_while_the_store_opens_stops_without_listening_or_ready(
        self, tmp_path: Path, notify_socket: socket.socket, pg_server: PgServer, pg_url: str
    ) -> None:
        """The store is on a PostgreSQL reached through a relay that holds the connection:
        SIGTERM arrives while the store opens; the relay lets it through afterwards."""
        with held_relay("127.0.0.1", pg_server.port) as relay:
            url = pg_url.replace(f":{pg_server.port}/", f":{relay.listen_port}/")
            config = tmp_path / "clawgate.json5"
            store = {"backend": "postgres", "url": url}
            config.write_text(json.dumps({"gateway": {"auth": {"token": "t0ken"}}, "store": store}))
            env = clean_env(
                tmp_path / "home",
                {
                    "CLAWGATE_STATE_DIR": str(tmp_path / "state"),
                    "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                },
            )
            gateway = GatewayProcess(["--config", str(config), "--port", "0"], env)
            try:
                relay.wait_accepted()
                gateway.signal(signal.SIGTERM)
                relay.release()
                code = gateway.wait(15)
                events = [e["event"] for e in gateway.events()]
            finally:
                gateway.stop()
        notify_socket.settimeout(0)
        lines = []
        with contextlib.suppress(BlockingIOError):
            while True:
                lines.extend(notify_socket.recv(4096).decode().split("\n"))
        assert code == 0, gateway.lines
        assert "READY=1" not in lines
        assert "STOPPING=1" in lines  # as at any stop
        assert "gateway_listening" not in events
        assert "gateway_stopped" in events
