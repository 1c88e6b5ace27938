"""A real `clawgate` subprocess for end-to-end tests: started, read, signalled, reaped."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment minus anything that configures clawgate, with HOME in tmp."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAWGATE_", "OPENCLAW_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    timeout: float = 30,
    *,
    unprivileged: bool = False,
    file_modes_bind: bool = False,
    read_only: Path | None = None,
    full: Path | None = None,
    full_holding: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """unprivileged: without the capability to bind a port below 1024 (tests run as root).
    file_modes_bind: without the capabilities that let root read and write any file.
    read_only: a directory the command sees mounted read-only (EROFS), in a mount namespace
    of its own (unshare(1)); skips the test where one cannot be made.
    full: a directory the command sees as a small file system with no space left (ENOSPC),
    also in a mount namespace of its own, holding a copy of the files of `full_holding`;
    skips the test where one cannot be made."""
    preexec_fn = None
    if unprivileged:
        preexec_fn = _drop_bind_capability
    elif file_modes_bind:
        preexec_fn = _drop_file_capabilities
    command = [sys.executable, "-m", "gateway", *args]
    if read_only is not None:
        command = [*_read_only_mount(read_only), *command]
    if full is not None:
        command = [*_full_mount(full, full_holding), *command]
    return subprocess.run(
        command,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


_READ_ONLY_BIND = (
    'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
)


def _read_only_mount(path: Path) -> list[str]:
    """A command prefix: what follows runs with `path` bind-mounted read-only on itself."""
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", _READ_ONLY_BIND, "sh", str(path), "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"no read-only bind mount here: {probe.stderr.strip()}")
    return ["unshare", "--mount", "sh", "-c", _READ_ONLY_BIND, "sh", str(path)]


# A tmpfs of 256 KiB (mode 0700, as a state dir must be) holding a copy of the files of "$2"
# (when not empty), then filled to its last block by `filler`.
_FULL_TMPFS = (
    'mount -t tmpfs -o size=256k,mode=700 tmpfs "$1" && { if [ -n "$2" ]; then cp -a "$2"/. "$1";'
    ' fi && cat /dev/zero > "$1/filler" 2>/dev/null; shift 2; exec "$@"; }'
)


def _full_mount(path: Path, holding: Path | None) -> list[str]:
    """A command prefix: what follows runs with a full file system mounted on `path`."""
    prefix = ["unshare", "--mount", "sh", "-c", _FULL_TMPFS, "sh", str(path), str(holding or "")]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here: {probe.stderr.strip()}")
    return prefix


PR_CAPBSET_DROP = 24  # <linux/prctl.h>
CAP_NET_BIND_SERVICE = 10  # <linux/capability.h>
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def _drop_file_capabilities() -> None:
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def privileged_port() -> int:
    """A port below net.ipv4.ip_unprivileged_port_start (1024 by default), or skips the test."""
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 80:
        pytest.skip(f"every port from {start} is unprivileged on this host")
    return 80


def _drop_bind_capability() -> None:
    # Out of the bounding set, root's exec'd program binds as another user does.
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAPBSET_DROP, CAP_NET_BIND_SERVICE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class GatewayProcess:
    """`python -m gateway run ...` with its stderr (JSON log lines) collected as it runs;
    `command` starts another program that execs it (scripts/serve)."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        command: Sequence[str] = (sys.executable, "-m", "gateway", "run"),
        cwd: Path | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._selector = selectors.DefaultSelector()
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._selector.register(self.proc.stderr, selectors.EVENT_READ)
        self._partial = ""
        self.url = ""
        self.port = 0

    def read_available(self, timeout: float = 0.0) -> None:
        assert self.proc.stderr is not None
        for _key, _mask in self._selector.select(timeout):
            chunk = self.proc.stderr.read()
            if chunk:
                self._partial += chunk
                *complete, self._partial = self._partial.split("\n")
                self.lines.extend(complete)

    def events(self) -> list[dict[str, Any]]:
        """Every stderr line that parses as a JSON object."""
        self.read_available()
        parsed = []
        for line in self.lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                parsed.append(value)
        return parsed

    def wait_for_event(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if event.get("event") == name:
                    return event
            if self.proc.poll() is not None:
                self.read_available()
                raise AssertionError(
                    f"gateway exited with {self.proc.returncode} before {name!r}:\n"
                    + "\n".join(self.lines)
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name!r} within {timeout}s:\n" + "\n".join(self.lines))
            self.read_available(0.05)

    def wait_listening(self, timeout: float = 15.0) -> str:
        event = self.wait_for_event("gateway_listening", timeout)
        self.url = event["url"]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway still running after {timeout}s")
            self.read_available(0.05)
        self.read_available()
        return self.proc.returncode

    def stop(self) -> None:
        """Make sure the process is gone (for fixture teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self._selector.close()


def run_on_config(root: Path, config: Path) -> GatewayProcess:
    """`clawgate run --config <config>` on a free port, its state dir and HOME under `root`."""
    args = ["--config", str(config), "--state-dir", str(root / "state"), "--port", "0"]
    return GatewayProcess(args, clean_env(root / "home"))


@contextlib.contextmanager
def running(root: Path, config_text: str) -> Iterator[GatewayProcess]:
    """A gateway on `config_text` (written to `<root>/clawgate.json5`), listening; then gone."""
    config = root / "clawgate.json5"
    config.write_text(config_text)
    process = run_on_config(root, config)
    try:
        process.wait_listening()
        yield process
    finally:
        process.stop()


def drain(process: GatewayProcess, stop: threading.Event) -> None:
    while not stop.is_set() and process.proc.poll() is None:
        process.read_available(0.1)
        del process.lines[:-1000]  # only the recent lines matter


@contextlib.contextmanager
def served(root: Path, config_text: str) -> Iterator[GatewayProcess]:
    """A gateway that serves a whole module: `running`, its log read on a thread all the
    while (a full pipe would block the gateway's loop; only the recent lines are kept)."""
    with running(root, config_text) as process:
        stop = threading.Event()
        reader = threading.Thread(target=drain, args=(process, stop), daemon=True)
        reader.start()
        try:
            yield process
        finally:
            stop.set()
            reader.join(5)
