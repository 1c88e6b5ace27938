"""A real PostgreSQL server for the tests, from Debian's `postgresql` package.

One server per test run (a session fixture), in a temporary data dir owned by the `postgres`
user when we are root (`initdb` refuses root), listening on 127.0.0.1 on a free port with its
unix socket in the same temporary dir. Each test gets a fresh database of its own.
Password authentication (scram) is on, so the tests exercise the password path of the URL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PASSWORD = "pg-test-secret"
USER = "clawgate"
INSTALL_HINT = (
    "PostgreSQL server binaries not found (/usr/lib/postgresql/<ver>/bin);"
    " install them with `apt-get install -y postgresql`, or set CLAWGATE_REQUIRE_POSTGRES=1"
    " to make this a failure"
)


def find_bindir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """initdb, pg_ctl start/restart/stop; `url(db)` names a database on it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="clawgate-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            entry = pwd.getpwnam("postgres")
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
            "--auth=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        pwfile.unlink()
        self._pg_ctl("start")

    def _pg_ctl(self, action: str) -> None:
        # fsync off: a test server's data need not survive a power cut, and it is much faster.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        args = ["-D", str(self.data), "-w", "-t", "60", "-m", "fast"]
        if action != "stop":
            args += ["-o", options, "-l", str(self.root / "server.log")]
        self._run(str(self.bindir / "pg_ctl"), action, *args)

    def restart(self) -> None:
        self._pg_ctl("restart")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The server stopped (its connections closed), then started again on its data."""
        self._pg_ctl("stop")
        try:
            yield
        finally:
            self._pg_ctl("start")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the server stopped (SIGSTOP), then continued: its connections stay
        open and nothing answers on them, as with a host gone from the network."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [postmaster, *_children(postmaster)]
        try:
            for pid in pids:
                # A backend may have exited since it was listed; the ones stopped before it
                # must still be continued (a server left stopped failed every later test).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def admin(self, statement: str) -> None:
        """Run one statement on the `postgres` database, from any thread or loop."""
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(self.url())
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run()).result()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def url_without_password(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def start_or_skip() -> PgServer:
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CLAWGATE_REQUIRE_POSTGRES") == "1":
            pytest.fail(INSTALL_HINT, pytrace=False)
        pytest.skip(INSTALL_HINT)
    server = PgServer(bindir)
    server.start()
    return server
