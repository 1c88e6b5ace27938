"""The Logs screen for a gateway started in a terminal: its log lines are the console
renderer's, coloured, rather than JSON."""

from __future__ import annotations

import contextlib
import os
import pty
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CONFIG, Page
from tests.support.process import clean_env

pytestmark = pytest.mark.browser

# An OpenClaw section clawgate does not have: one warning line at start.
GATEWAY_CONFIG = CONFIG.replace("  agents: {", "  channels: {},\n  agents: {", 1)


class TerminalGateway:
    """`clawgate run` with a terminal for its stdout and stderr."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        config = root / "clawgate.json5"
        config.write_text(GATEWAY_CONFIG)
        self.master, terminal = pty.openpty()
        args = ["--config", str(config), "--state-dir", str(root / "state"), "--port", str(port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", *args],
            env=clean_env(root / "home", {"TERM": "xterm"}),
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        # Read all the time: a full terminal buffer would block the gateway's writes.
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                return
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.master, 65536):
                pass

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        os.close(self.master)
        self.reader.join(5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TerminalGateway]:
    process = TerminalGateway(tmp_path_factory.mktemp("terminal-gateway"))
    try:
        yield process
    finally:
        process.stop()


def test_coloured_lines_are_shown_as_text_with_their_level(page: Page) -> None:
    page.connected()
    page.go("logs")
    page.find("#logs-level").send_keys("warn")
    texts = (
        "return [...document.querySelectorAll('.log-line')].map(e => [e.className, e.textContent])"
    )
    lines = page.until(lambda: page.driver.execute_script(texts), "a warning line")
    assert all("\x1b" not in text for _, text in lines)
    assert [cls for cls, text in lines if "channels" in text] == ["log-line level-warning"]
