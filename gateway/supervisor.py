"""`clawgate run --workers N`: one supervisor, N gateway processes on one port.

Each worker is a whole `clawgate run` (its own event loop, registry and connections) that binds
the port with SO_REUSEPORT, so the kernel spreads new connections over them. They share the
sessions through the `postgres` store: a session's turns stay serial through its advisory
lock, and run events cross over LISTEN/NOTIFY (agents/store_postgres.py, events_postgres.py).

The supervisor gives each worker a sd_notify socket of its own and counts their READY=1: it
sends systemd one READY=1 when all are ready. SIGTERM/SIGINT go to every worker (each drains
its turns) and the supervisor exits when they all have; SIGHUP goes to every worker (each
reloads its config), also when a worker sends it after writing a `config.patch` to the file.
A worker that dies is started again, and so is one whose event loop stopped (a bug that blocks
it, a deadlock): each worker pets the supervisor as systemd's watchdog, and one silent for the
watchdog's interval is killed (`_watch_workers`). One that dies before any worker was ever
ready stops them all (a config or database problem that a restart would not fix). Every
worker, the first ones and those started again, runs with the listener, log format and store
of the config the supervisor started with (`worker_config`): a change to those waits for a
restart of all.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import structlog

from gateway.config.apply import in_force
from gateway.config.errors import FILE_LEVEL, ConfigError, ConfigIssue
from gateway.config.loader import ConfigLoader
from gateway.config.model import EX_CONFIG, Config
from gateway.config.overrides import startup_guards
from gateway.systemd import Notifier

log = structlog.get_logger()

# The environment that makes `clawgate run` a worker: it binds its port with SO_REUSEPORT.
WORKER_ENV = "CLAWGATE_WORKER"
# Where a worker reads the config text its supervisor started with (a file only the user reads).
STARTUP_CONFIG_ENV = "CLAWGATE_WORKER_STARTUP_CONFIG"
# The log file the workers share for `logs.tail` (gateway/logs.py, SharedLog), beside it.
SHARED_LOG_ENV = "CLAWGATE_WORKER_SHARED_LOG"
# A worker that died is started again after this long, so a crash loop does not spin a core;
# each time it dies again before it was ready, twice as long, up to RESTART_DELAY_MAX_S: one
# that cannot start (a file made invalid, a database away) costs half a second of CPU a try.
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A worker whose event loop stops serves nothing, and its share of the new connections hangs.
# Each worker is given the supervisor's watchdog interval (systemd's WatchdogSec=, the unit's
# 60 s), or this one when systemd watches nothing, and sends WATCHDOG=1 from its loop at half
# of it; one silent for the whole interval is killed and started again. No event loop of ours
# blocks for seconds, let alone a minute.
WORKER_WATCHDOG_S = 60.0
# sun_path of sockaddr_un (unix(7)) is 108 bytes with its NUL: longer, bind() fails.
MAX_SOCKET_PATH = 107


def worker_count(text: str) -> int:
    """`--workers`: a count from 1, or `auto` for one per core this process may run on. The
    ValueError's message goes after argparse's `argument --workers:`."""
    if text == "auto":
        return _usable_cores()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be a number or auto (got {text!r})") from None
    if value < 1:
        raise ValueError(f"must be at least 1 (got {value})")
    return value


def _usable_cores() -> int:
    # Not os.cpu_count(): the host's cores, also where taskset, a container's cpuset or
    # systemd's CPUAffinity= hold the process to fewer (os.process_cpu_count() from 3.13).
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def without_workers(argv: Sequence[str]) -> list[str]:
    """The `run` arguments minus `--workers N`: what each worker is started with."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, never listening: it resolves port 0 to
    the one port every worker binds, and holds it until they all have."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        # SO_REUSEPORT lets any process of this user bind beside a socket that has it too: a
        # second `--workers` gateway would take a share of the connections of one running
        # there. Without it, a bind fails (EADDRINUSE) while anything holds the port.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


CLAIM_PREFIX = "clawgate-workers "
# The addresses that cover every other of their family: asyncio listens on IPv6 with
# IPV6_V6ONLY, so `::` does not cover IPv4.
_ANY_HOST = ("0.0.0.0", "::")


class PortClaimed(OSError):
    """Another supervisor claimed an address that overlaps ours; `holder` is its host:port."""

    def __init__(self, holder: str) -> None:
        super().__init__(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        self.holder = holder


def claim_port(host: str, port: int) -> socket.socket | None:
    """An abstract AF_UNIX socket named for host:port, held for the supervisor's life, so a
    second supervisor for the same address is refused: reserve_port's probe alone lets it
    through while the first one's reserved socket does not listen yet (until a worker does,
    seconds), as SO_REUSEADDR binds beside a socket that does not listen. The kernel frees the
    name when the process ends, however it ends: no lock file to go stale. Raises OSError
    (EADDRINUSE) when another holds it, PortClaimed when another holds an address that
    overlaps (0.0.0.0:P covers 127.0.0.1:P, and the other way round); None for port 0 (each
    gets a port of its own) and where there is no abstract namespace (not Linux), where the
    probe is all there is.

    Overlaps are looked for among the names bound in this network namespace (as ports are)
    after ours is bound: of two supervisors claiming at once, the later one sees the first,
    or both see each other and both exit; never neither."""
    if port == 0 or not sys.platform.startswith("linux"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0{CLAIM_PREFIX}{host} {port}")
        for other in _claims(port):
            if other != host and _overlap(host, other):
                raise PortClaimed(f"[{other}]:{port}" if ":" in other else f"{other}:{port}")
    except OSError:
        sock.close()
        raise
    return sock


def _claims(port: int) -> list[str]:
    """The hosts of the supervisors' claims on `port` in this network namespace. None found
    where /proc cannot be read."""
    try:
        text = Path("/proc/self/net/unix").read_text(errors="replace")
    except OSError:
        return []
    hosts = []
    for line in text.splitlines()[1:]:
        fields = line.split(maxsplit=7)
        # The path of an abstract socket starts with "@" (its NUL).
        if len(fields) == 8 and fields[7].startswith("@" + CLAIM_PREFIX):
            name = fields[7].removeprefix("@" + CLAIM_PREFIX).split(" ")
            if len(name) == 2 and name[1] == str(port):
                hosts.append(name[0])
    return hosts


def _overlap(host: str, other: str) -> bool:
    """Listening on both would take connections of one address (the family's any-address
    covers every address of that family)."""
    same_family = (":" in host) == (":" in other)
    return host == other or (same_family and (host in _ANY_HOST or other in _ANY_HOST))


# In each supervisor's temp dir, locked (flock) for the supervisor's life: the kernel releases
# the lock when the process ends, however it ends, so a dir whose lock can be taken is a dead
# supervisor's (SIGKILLed: nothing removed it). Not a pid: by then it may be another process's,
# and a supervisor in another pid namespace (a container sharing /tmp) has one we cannot see.
TEMP_PREFIX = "clawgate-workers-"
LOCK_NAME = "supervisor.lock"


def _hold(directory: Path) -> int:
    """Locks `directory` (just made, ours alone) as this supervisor's; the lock's fd. Locked
    before it has its name, so no other supervisor finds it unlocked in between."""
    new = directory / f".{LOCK_NAME}"
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(new, directory / LOCK_NAME)
    except OSError:
        os.close(fd)
        raise
    return fd


def remove_dead_supervisors_dirs(parent: Path) -> None:
    """Removes the temp dirs in `parent` of this user's supervisors that are gone. One with
    no lock is left alone: a supervisor may be making it now (or it is of a clawgate from
    before the lock); systemd-tmpfiles ages it."""
    for directory in parent.glob(f"{TEMP_PREFIX}*"):
        if not _ours_alone(directory):
            continue
        try:
            fd = os.open(directory / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its supervisor runs
        try:
            shutil.rmtree(directory)
            log.info("dead_supervisor_dir_removed", path=str(directory))
        except OSError as exc:  # removed meanwhile by another starting supervisor, or tmpfiles
            if exc.errno != errno.ENOENT:
                log.warning("dead_supervisor_dir_kept", path=str(directory), error=str(exc))
        finally:
            os.close(fd)


def _ours_alone(directory: Path) -> bool:
    """A directory (not a link) of this user that no one else may enter."""
    try:
        info = directory.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    )


def worker_config(loader: ConfigLoader, config: Config) -> Config:
    """`config` as a worker runs it: the paths that need a restart (listener, log format,
    store) with their values in the config the supervisor started with. A worker started again
    after a crash reads the file as it is now; a change there that needs a restart is pending
    in its siblings, which keep their values, and one worker alone must not listen elsewhere or
    use another store. Raises ConfigError as a load does."""
    path = os.environ.get(STARTUP_CONFIG_ENV)
    if os.environ.get(WORKER_ENV) is None or not path:
        return config
    try:
        text = Path(path).read_text()
    except OSError as exc:
        issue = ConfigIssue(FILE_LEVEL, f"cannot read the supervisor's config: {exc.strerror}")
        raise ConfigError(path, [issue]) from None
    running = in_force(loader.load_text(text), config)
    issues = startup_guards(running.gateway)  # as a reload checks them (check_in_force)
    if issues:
        raise ConfigError(str(config.source.path), issues)
    return running


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with_parent() -> None:
    """In the worker before exec: SIGTERM when the supervisor dies, however it died (a
    SIGKILLed supervisor must not leave workers serving the port unsupervised)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's own signal handling is all there is


@attrs.define(eq=False)
class Worker:
    index: int
    notify_path: Path | None = None  # where its `notify` socket is bound
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    notify: socket.socket | None = None
    failed_starts: int = 0  # deaths since it was last ready
    last_ping: float = 0.0  # time.monotonic() of its last READY=1 or WATCHDOG=1
    reload_pending: bool = False  # a SIGHUP came while it was starting


@attrs.define(eq=False)
class Supervisor:
    argv: list[str]  # `run` arguments for the workers, the port made explicit
    count: int
    startup_text: str | None = None  # the config file as the supervisor read it
    notifier: Notifier = attrs.Factory(Notifier)
    # In the temp dir: the workers' notify sockets and the copy of startup_text they read.
    notify_dir: Path | None = None
    startup_config: Path | None = None
    made_dirs: list[Path] = attrs.Factory(list)
    locks: list[int] = attrs.Factory(list)  # the fds of made_dirs' locks (_hold)
    workers: list[Worker] = attrs.Factory(list)
    stopping: bool = False
    ever_ready: bool = False
    exit_code: int = 0
    _all_exited: asyncio.Event = attrs.Factory(asyncio.Event)
    _tasks: set[asyncio.Task[None]] = attrs.Factory(set)

    async def run(self, reserved: socket.socket | None) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.forward, signal.SIGHUP)
        watchdog = self._start_watchdog()
        watch = loop.create_task(self._watch_workers(), name="worker-watchdog")
        try:
            remove_dead_supervisors_dirs(Path(tempfile.gettempdir()))
            for index in range(self.count):
                if self.stopping:  # a SIGTERM while starting them: no more
                    break
                worker = Worker(index)
                self.workers.append(worker)
                try:
                    await self._start(worker)
                except OSError as exc:
                    # Before any worker was ready, as a worker that exits then: stop them all.
                    reason = exc.strerror or str(exc)
                    print(f"cannot start worker {index}: {reason}", file=sys.stderr)
                    log.error("worker_start_failed", worker=index, error=reason)
                    self.exit_code = EX_CONFIG if exc.errno == errno.ENAMETOOLONG else 1
                    self.stop()
                    break
            await self._all_exited.wait()
        finally:
            if reserved is not None:
                reserved.close()
            if watchdog is not None:
                watchdog.cancel()
            watch.cancel()
            for sig in (*STOP_SIGNALS, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for worker in self.workers:
                self._unlisten(worker)
            self.notifier.close()
            for directory in self.made_dirs:
                if _ours_alone(directory):  # not one made again by someone else meanwhile
                    shutil.rmtree(directory, ignore_errors=True)
            for fd in self.locks:
                os.close(fd)
        log.info("supervisor_stopped", exit_code=self.exit_code)
        return self.exit_code

    def _prepare_files(self, worker: Worker) -> None:
        """The notify dir, the config copy and `worker`'s notify socket, made again where
        they went: systemd-tmpfiles removes what has aged in /tmp (10 days by default, a
        unit's PrivateTmp= too), and a worker started again after that could not read its
        config (exit 78 at every try) nor say it is ready. A dir that is not ours alone any
        more (gone, then made again by someone else in /tmp) is replaced by a new one."""
        directory = self.notify_dir
        if directory is None or not _ours_alone(directory):
            directory = self.notify_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
            self.made_dirs.append(directory)  # 0700
            self.locks.append(_hold(directory))
        if self.startup_text is not None:
            config = directory / "config.json5"
            if not config.exists():
                config.write_text(self.startup_text)
            self.startup_config = config
        path = directory / f"worker-{worker.index}.sock"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise OSError(
                errno.ENAMETOOLONG,
                f"its sd_notify socket's path {path} is longer than the {MAX_SOCKET_PATH} bytes"
                " a socket's path may hold. Fix: set TMPDIR to a shorter directory (such as /tmp).",
            )
        if worker.notify is None or worker.notify_path != path or not path.exists():
            self._unlisten(worker)
            path.unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.setblocking(False)
            worker.notify, worker.notify_path = sock, path
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_notify, worker)

    @staticmethod
    def _unlisten(worker: Worker) -> None:
        if worker.notify is not None:
            asyncio.get_running_loop().remove_reader(worker.notify.fileno())
            worker.notify.close()
            worker.notify = None

    def _on_notify(self, worker: Worker) -> None:
        assert worker.notify is not None
        try:
            lines = worker.notify.recv(4096).decode(errors="replace").split("\n")
        except BlockingIOError:
            return
        if "WATCHDOG=1" in lines:
            worker.last_ping = time.monotonic()
        extend = [line for line in lines if line.startswith("EXTEND_TIMEOUT_USEC=")]
        if extend and self.stopping:
            # A draining worker's stop budget (gateway/server.py), for systemd's stop timeout.
            self.notifier.notify(*extend)
        if "READY=1" in lines and not worker.ready:
            worker.ready = True
            worker.last_ping = time.monotonic()
            worker.failed_starts = 0
            if worker.reload_pending and worker.process is not None:
                worker.reload_pending = False
                worker.process.send_signal(signal.SIGHUP)
            log.info("worker_ready", worker=worker.index, pid=self._pid(worker))
            started = len(self.workers) == self.count
            if not self.ever_ready and started and all(w.ready for w in self.workers):
                self.ever_ready = True
                pids = [self._pid(w) for w in self.workers]
                log.info("supervisor_ready", workers=self.count, pids=pids)
                self.notifier.notify("READY=1", f"STATUS={self.count} workers ready")

    @property
    def worker_watchdog_seconds(self) -> float:
        return self.notifier.watchdog_seconds or WORKER_WATCHDOG_S

    async def _watch_workers(self) -> None:
        """Kill a ready worker silent for the watchdog's interval: `_watch` starts it again."""
        seconds = self.worker_watchdog_seconds
        while True:
            await asyncio.sleep(seconds / 4)
            if self.stopping:
                return  # each worker drains; systemd's stop timeout bounds a hung one
            for worker in self.workers:
                process = worker.process
                if not worker.ready or process is None or process.returncode is not None:
                    continue
                # What it sent while this loop was held up is still in its socket: read first.
                while worker.notify is not None and _readable(worker.notify):
                    self._on_notify(worker)
                silent = time.monotonic() - worker.last_ping
                if silent > seconds:
                    log.error(
                        "worker_hung", worker=worker.index, pid=process.pid,
                        silent_s=round(silent, 1),
                    )  # fmt: skip
                    worker.ready = False
                    process.kill()  # SIGKILL: a loop that does not run handles no SIGTERM

    @staticmethod
    def _pid(worker: Worker) -> int | None:
        return worker.process.pid if worker.process is not None else None

    async def _start(self, worker: Worker) -> None:
        self._prepare_files(worker)
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
        env.update({
            "NOTIFY_SOCKET": str(worker.notify_path),
            WORKER_ENV: str(worker.index),
            # The supervisor's watchdog (`_watch_workers`), which the worker pets as systemd's.
            "WATCHDOG_USEC": str(int(self.worker_watchdog_seconds * 1_000_000)),
        })  # fmt: skip
        if self.startup_config is not None:
            env[STARTUP_CONFIG_ENV] = str(self.startup_config)
        if self.notify_dir is not None:
            env[SHARED_LOG_ENV] = str(self.notify_dir / "log")
        worker.ready = False
        worker.reload_pending = False  # it reads the file as it is now
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", *self.argv,
            env=env, stdin=asyncio.subprocess.DEVNULL, preexec_fn=_stop_with_parent,
        )  # fmt: skip
        log.info("worker_started", worker=worker.index, pid=worker.process.pid)
        if self.stopping:  # the SIGTERM came while this one was being started: forward missed it
            worker.process.send_signal(signal.SIGTERM)
        task = asyncio.get_running_loop().create_task(self._watch(worker, worker.process))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        worker.ready = False
        if self.stopping:
            # Killed by the SIGTERM: one still starting, before its handler, with nothing to
            # drain. Nor over a code already set: a worker that failed to start (78: a
            # restart would fail again) stops the others.
            if code not in (0, -signal.SIGTERM) and self.exit_code == 0:
                self.exit_code = 1
            log.info("worker_stopped", worker=worker.index, pid=process.pid, exit_code=code)
            self._check_all_exited()
            return
        if not self.ever_ready:
            log.error("worker_exited", worker=worker.index, pid=process.pid, exit_code=code)
            # Before any worker was ready: the same cause would stop every restart.
            self.exit_code = code if code > 0 else 1
            self.stop()
            self._check_all_exited()
            return
        delay = self._next_delay(worker)
        log.error(
            "worker_exited",
            worker=worker.index,
            pid=process.pid,
            exit_code=code,
            restart_in_s=delay,
        )
        while True:
            await asyncio.sleep(delay)
            if self.stopping:
                self._check_all_exited()
                return
            try:
                await self._start(worker)
                return
            except OSError as exc:
                # No process to watch (fork or exec failed: the unit's TasksMax reached,
                # memory short, the installation being replaced): one more failed start.
                delay = self._next_delay(worker)
                log.error(
                    "worker_start_failed", worker=worker.index, error=str(exc), restart_in_s=delay
                )

    @staticmethod
    def _next_delay(worker: Worker) -> float:
        """The wait before `worker`'s next start; twice the last one since it was ready."""
        delay: float = min(RESTART_DELAY_S * 2**worker.failed_starts, RESTART_DELAY_MAX_S)
        worker.failed_starts += 1
        return delay

    def _check_all_exited(self) -> None:
        if all(w.process is None or w.process.returncode is not None for w in self.workers):
            self._all_exited.set()

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.notifier.notify("STOPPING=1", "STATUS=draining")
            log.info("supervisor_stopping", workers=len(self.workers))
        # A second signal is passed on too: each worker then exits at once.
        self.forward(signal.SIGTERM)
        self._check_all_exited()

    def forward(self, sig: int) -> None:
        log.info("supervisor_signal", signal=signal.Signals(sig).name)
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            if sig == signal.SIGHUP and not worker.ready:
                # Until its handler is in place, a SIGHUP would end it (the default action);
                # it may have read the file before the change: it reloads once ready.
                worker.reload_pending = True
                continue
            process.send_signal(sig)

    def _start_watchdog(self) -> asyncio.Task[None] | None:
        seconds = self.notifier.watchdog_seconds
        if seconds is None:
            return None

        async def pet() -> None:
            while True:
                self.notifier.notify("WATCHDOG=1")
                await asyncio.sleep(seconds / 2)

        return asyncio.get_running_loop().create_task(pet(), name="sd-watchdog")


def _readable(sock: socket.socket) -> bool:
    """A datagram waits in `sock` (non-blocking)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except OSError:  # BlockingIOError: none
        return False
    return True


def listen_failed(host: str, port: int, exc: OSError) -> int:
    """Says why host:port cannot be listened on (one gateway, or the supervisor of several);
    the exit code. A port in use may come free, so 1 (systemd restarts the unit); a port this
    user may not bind will not, so 78 (systemd does not restart it every RestartSec for ever)."""
    code = 1
    if exc.errno == errno.EACCES:
        reason = (
            "permission denied (a port below 1024 needs the CAP_NET_BIND_SERVICE capability;"
            " or choose a port of 1024 or above)"
        )
        code = EX_CONFIG
    elif exc.errno == errno.EADDRINUSE:
        reason = (
            "address already in use (another program listens there: stop it, or choose"
            " another port with --port or gateway.port)"
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        # Not 78: at boot the address may come with the network, and a restart finds it.
        reason = (
            f"no network interface of this host has the address {host} (`ip address` lists"
            " them; bind loopback or lan, or an address listed there)"
        )
    else:
        reason = exc.strerror or str(exc)
    print(f"cannot listen on {host}:{port}: {reason}", file=sys.stderr)
    log.error("listen_failed", host=host, port=port, error=reason)
    return code


async def supervise(
    argv: Sequence[str], count: int, host: str, port: int, config_text: str | None = None
) -> int:
    """Run `count` workers of `clawgate run argv` on host:port until SIGTERM/SIGINT;
    `config_text` is the config file as the supervisor read it."""
    try:
        claim = claim_port(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return listen_failed(host, port, exc)
        where = exc.holder if isinstance(exc, PortClaimed) else "it"
        reason = (
            "address already in use (another `clawgate run --workers` is starting or running"
            f" on {where})"
        )
        print(f"cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        log.error("listen_failed", host=host, port=port, error=reason)
        return 1  # as for a port in use: it comes free when the other one stops
    try:
        reserved = reserve_port(host, port)
    except OSError as exc:
        if claim is not None:
            claim.close()
        return listen_failed(host, port, exc)
    port = reserved.getsockname()[1]
    try:
        worker_argv = [*without_workers(argv), "--port", str(port)]
        supervisor = Supervisor(worker_argv, count, config_text)
        log.info("supervisor_starting", workers=count, host=host, port=port)
        return await supervisor.run(reserved)
    finally:
        if claim is not None:
            claim.close()
