"""`openclaw logs` (OpenClaw's command line) reading the gateway's log through `logs.tail`
(ws-protocol.md §8): each line as time, level and message, not as the raw JSON line."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.openclaw_clients import CONFIG, TOKEN, OpenClaw
from tests.support.process import GatewayProcess, clean_env, drain, running

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def ws_url(gateway: GatewayProcess) -> str:
    return gateway.url.replace("http://", "ws://", 1)


def logs(openclaw: OpenClaw, gateway: GatewayProcess, *args: str) -> list[str]:
    done = openclaw.run("logs", "--url", ws_url(gateway), "--token", TOKEN, *args)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout.splitlines()


class TestLogs:
    def test_each_line_reads_as_time_level_and_message(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        lines = logs(openclaw, gateway, "--plain", "--utc")
        assert lines[0] == "Log file: (memory)"
        (listening,) = (line for line in lines if "gateway_listening" in line)
        url = gateway.url
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info gateway_listening"
            rf" url={re.escape(url)} ws={re.escape(ws_url(gateway))} auth=token"
            r" config=/\S+/clawgate\.json5",
            listening,
        ), listening
        assert not [line for line in lines[1:] if "{" in line]  # no raw JSON line

    def test_follow_shows_what_the_gateway_did_not_its_own_polls(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """Each poll of `--follow` is a connection of its own (connect, logs.tail, close):
        none of its lines comes back in the tail, where they were four lines a poll."""
        command = [str(openclaw.command), "logs", "--url", ws_url(gateway), "--token", TOKEN]
        printed: list[str] = []
        with subprocess.Popen(
            [*command, "--follow", "--plain", "--interval", "300"],
            env=openclaw.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as follow:
            reader = threading.Thread(target=lambda: printed.extend(follow.stdout or ()))
            reader.start()
            try:
                _wait_until(lambda: len(printed) > 1)  # the first answer (Node starts slowly)
                time.sleep(3)  # about eight polls, which must print nothing
                before = len(printed)
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(f"{gateway.url}/logfmt-marker", timeout=10)
                refused.value.close()
                _wait_until(lambda: len(printed) > before)
                time.sleep(3)  # more polls after the marker's line
            finally:
                follow.terminate()
                reader.join(10)
        (marker,) = printed[before:]
        assert " info http_request method=GET path=/logfmt-marker status=404 " in marker


def _wait_until(done: Callable[[], bool], seconds: float = 60.0) -> None:
    """Wait for what `openclaw logs --follow` prints: a bound for a client that hangs, not a
    measure of its speed (on a loaded host Node alone takes seconds to start)."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "openclaw logs --follow printed nothing new"
        time.sleep(0.05)


class TestFollowInTheJournal:
    def test_follow_s_polls_write_no_info_line_to_the_journal(
        self, openclaw: OpenClaw, tmp_path: Path
    ) -> None:
        """What `--follow` does to stderr (journald): each poll is a connection that only
        reads the log. Its lines are at debug, its `ws_connected` line too, where that one
        was an info line a poll. At debug level here, to see the polls happen."""
        config = CONFIG.replace("gateway: {", 'logging: { level: "debug" },\n  gateway: {', 1)
        assert config != CONFIG
        with running(tmp_path, config) as gateway:
            command = [str(openclaw.command), "logs", "--url", ws_url(gateway), "--token", TOKEN]
            with subprocess.Popen(
                [*command, "--follow", "--plain", "--interval", "200"],
                env=openclaw.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ) as follow:
                try:
                    gateway.wait_for_event("ws_disconnected")
                    while sum(e["event"] == "ws_disconnected" for e in gateway.events()) < 4:
                        assert follow.poll() is None and gateway.proc.poll() is None
                        gateway.read_available(0.05)
                finally:
                    follow.terminate()
            events = gateway.events()
        connected = [e for e in events if e["event"] == "ws_connected"]
        assert len(connected) >= 4
        assert {e["level"] for e in connected} == {"debug"}
        assert [e for e in events if e["event"].startswith(("ws_", "http_"))] == [
            e for e in events if e["event"].startswith(("ws_", "http_")) and e["level"] == "debug"
        ]


class TestFollowAcrossARestart:
    def test_follow_says_the_log_was_reset_and_goes_on_with_the_new_process(
        self, openclaw: OpenClaw, tmp_path: Path
    ) -> None:
        """`openclaw logs --follow` sends the cursor back without a `logId`: across a restart
        on the same port it is told `reset` (the notice on stderr) and prints the new
        process's lines after it, the CLI unchanged."""
        printed: list[str] = []
        notices: list[str] = []
        (tmp_path / "first").mkdir()
        root = tmp_path / "second"
        root.mkdir()
        config = root / "clawgate.json5"
        config.write_text(CONFIG)
        with contextlib.ExitStack() as cleanup:
            with running(tmp_path / "first", CONFIG) as first:
                url, port = ws_url(first), first.port
                follow = cleanup.enter_context(
                    subprocess.Popen(
                        [str(openclaw.command), "logs", "--url", url, "--token", TOKEN,
                         "--follow", "--plain", "--interval", "300"],
                        env=openclaw.env(),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )  # fmt: skip
                for lines, stream in ((printed, follow.stdout), (notices, follow.stderr)):
                    reader = threading.Thread(target=lambda ls=lines, st=stream: ls.extend(st))
                    reader.start()
                    cleanup.callback(reader.join, 10)
                cleanup.callback(follow.terminate)  # first (the last registered): its pipes end
                _wait_until(lambda: len(printed) > 1)  # the first answer (Node starts slowly)
                time.sleep(1)  # a few polls with its cursor
            # The first process is gone (`running` killed it); the CLI retries meanwhile.
            args = ["--config", str(config), "--state-dir", str(root / "state"),
                    "--port", str(port)]  # fmt: skip
            second = GatewayProcess(args, clean_env(root / "home"))
            cleanup.callback(second.stop)
            second.wait_listening()
            stop = threading.Event()
            threading.Thread(target=drain, args=(second, stop), daemon=True).start()
            cleanup.callback(stop.set)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{second.url}/after-the-restart", timeout=10)
            refused.value.close()
            _wait_until(lambda: any("after-the-restart" in line for line in printed))
            _wait_until(lambda: any("Log cursor reset" in line for line in notices))
