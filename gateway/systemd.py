"""systemd integration: sd_notify over `$NOTIFY_SOCKET`, the watchdog, the unit file.

Written against the sd_notify(3) datagram protocol directly: it is a few lines, and a library
would be one more dependency for them.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import sys
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import structlog

log = structlog.get_logger()


class Notifier:
    """Sends `KEY=value` lines to systemd; does nothing when `$NOTIFY_SOCKET` is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: its address starts with a NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        self.watchdog_seconds: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_seconds = int(usec) / 1_000_000

    def notify(self, *lines: str) -> None:
        if not self._address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # systemd gone or the socket unreachable: the gateway keeps serving regardless.
            log.warning("sd_notify_failed", error=str(exc))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


SYSTEM_CONFIG = Path("/etc/clawgate/clawgate.json5")
SYSTEM_STATE = Path("/var/lib/clawgate")


# A StateDirectory= name written as it is: neither quoting nor specifiers to get right.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")


def state_directory(state_dir: Path) -> str | None:
    """The StateDirectory= of a system unit that runs on `state_dir`, or None when systemd
    makes no such directory. Under ProtectSystem=strict and DynamicUser= that one is all the
    gateway can write and own: /var/lib/NAME (a link to /var/lib/private/NAME)."""
    try:
        name = state_dir.relative_to(SYSTEM_STATE.parent)
    except ValueError:
        return None
    plain = name.parts and _PLAIN_NAME.fullmatch(str(name)) and ".." not in name.parts
    return str(name) if plain else None


# Where the system unit's sandbox keeps the gateway from reading: ProtectHome=yes makes these
# inaccessible, PrivateTmp=yes gives the service empty ones of its own.
_HIDDEN = {
    Path("/home"): "ProtectHome=yes",
    Path("/root"): "ProtectHome=yes",
    Path("/run/user"): "ProtectHome=yes",
    Path("/tmp"): "PrivateTmp=yes",
    Path("/var/tmp"): "PrivateTmp=yes",
}


def hidden_by_sandbox(path: Path) -> str | None:
    """`/home (ProtectHome=yes)` when the system unit's sandbox hides `path` (or the file
    it links to) from the gateway; None when the gateway can reach it."""
    for candidate in (path, path.resolve()):
        for top, setting in _HIDDEN.items():
            if candidate.is_relative_to(top):
                return f"{top} ({setting})"
    return None


def unit_text(*, user: bool, executable: str, config: Path, state_dir: Path) -> str:
    """conf/clawgate.service with the paths of this installation filled in. A system unit's
    `state_dir` must have a state_directory()."""
    template = (resources.files("gateway") / "clawgate.service").read_text()
    text = template.replace("/opt/clawgate/.venv/bin/clawgate", exec_word(executable, command=True))
    text = text.replace(str(SYSTEM_CONFIG), exec_word(str(config)))
    text = text.replace(str(SYSTEM_STATE), exec_word(str(state_dir)))
    if not user:
        name = state_directory(state_dir)
        assert name is not None, state_dir
        text = text.replace("StateDirectory=clawgate\n", f"StateDirectory={name}\n")
    if user:
        # A user manager cannot switch users or drop capabilities, and most sandboxing needs
        # privileges it does not have; user units start from default.target.
        text = "".join(_without_system_only(text.splitlines(keepends=True)))
        text = text.replace("WantedBy=multi-user.target", "WantedBy=default.target")
    return text


def write_unit(path: Path, text: str) -> None:
    """The unit at `path`, written whole or not at all: a temp file beside it, fsync, rename.
    Truncated and written in place, a crash or a full disk midway left half a unit (systemd
    would start what it could parse of it). A symlink (`systemctl link` makes one) stays a
    link: its target is what is replaced. A unit's mode is kept; a new one is 0644, as
    systemd's own units are (they hold no secret)."""
    target = path.resolve()
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        # Named by the unit the operator asked for, not by a temp file they never heard of.
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(fd, mode)
            file.write(text)
            file.flush()
            os.fsync(fd)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself, across a power cut
    finally:
        os.close(dir_fd)


def exec_word(value: str, *, command: bool = False) -> str:
    """`value` as one word of an `Exec…=` line (systemd.service(5), "Command lines"): `%`
    doubled, and `$` in an argument (not in the command, where systemd expands no variable),
    or systemd expands them; in double quotes, control characters as C escapes, when it holds
    one, whitespace, a quote or a backslash, or systemd splits it."""
    word = value.replace("%", "%%") if command else value.replace("%", "%%").replace("$", "$$")
    if not any(c in " \"'\\" or _is_control(c) for c in word):
        return word
    escaped = "".join(
        f"\\x{ord(c):02x}" if _is_control(c) else "\\" + c if c in '"\\' else c for c in word
    )
    return f'"{escaped}"'


def _is_control(char: str) -> bool:
    return char < " " or char == "\x7f"


def _without_system_only(lines: list[str]) -> list[str]:
    """The lines that are not _SYSTEM_ONLY settings, nor the comments that explain those."""
    kept: list[str] = []
    comments: list[str] = []
    for line in lines:
        if line.startswith("#"):
            comments.append(line)
            continue
        if not line.startswith(_SYSTEM_ONLY):
            kept += comments
            kept.append(line)
        comments = []
    return kept + comments


_SYSTEM_ONLY = (
    "DynamicUser=",
    "Protect",
    "Private",
    "Restrict",
    "CapabilityBoundingSet=",
    "SystemCall",
    "MemoryDenyWriteExecute=",
    "LockPersonality=",
    "ProcSubset=",
    "RemoveIPC=",
)


def default_executable() -> str:
    """The `clawgate` script next to the running interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).with_name("clawgate")
    return str(candidate if candidate.exists() else Path(sys.argv[0]).resolve())
