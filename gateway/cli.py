"""The `clawgate` command (also `python -m gateway`).

Exit codes (config.md §1): 0 clean stop, 78 invalid config or failed startup guard,
1 runtime failure, 2 bad command line, 130 interrupted (Ctrl-C) before the end.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from agents.errors import StoreError, UnsafeStoreFile, UnusableStore
from gateway import __version__, hangup
from gateway.auth import with_generated_token
from gateway.client import add_commands as add_client_commands
from gateway.config.errors import ConfigError
from gateway.config.loader import ConfigLoader, embedded_default_text, load_or_report, report
from gateway.config.model import EX_CONFIG
from gateway.config.overrides import (
    add_config_arguments,
    add_secret_arguments,
    bind_argument,
    overrides_from_args,
    path_argument,
    warn_secret_flags,
)
from gateway.config.view import redacted
from gateway.logs import RING, SharedLog, configure_logging
from gateway.statedir import (
    StateDirInUse,
    UnsafeStateError,
    check_state_dir_usable,
    hold_state_dir,
    not_a_directory,
    prepare_state_dir,
)
from gateway.supervisor import (
    SHARED_LOG_ENV,
    WORKER_ENV,
    supervise,
    worker_config,
    worker_count,
)
from gateway.systemd import (
    SYSTEM_CONFIG,
    SYSTEM_STATE,
    default_executable,
    hidden_by_sandbox,
    state_directory,
    unit_text,
    write_unit,
)

log = structlog.get_logger()

EX_INTERRUPTED = 128 + 2  # killed by SIGINT, as a shell reports it


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # `clawgate --config X` (config.md §8's unit file) means `clawgate run --config X`.
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "run")
    command = args[0]
    if command != "run":
        hangup.release()  # held from the start (gateway/__main__.py) for `run` alone
    try:
        parsed = _parse(args)
        parsed.run_args = args[1:]  # `run`'s own arguments, for the workers of --workers
        # To stderr (structlog's default is stdout, where a command's answer goes); `run`
        # configures again once it knows the config's level and format.
        configure_logging(level="warn")
        result: int = parsed.func(parsed)
        sys.stdout.flush()  # here, not at exit, so that a closed reader is caught below
    except KeyboardInterrupt:
        # Ctrl-C while `call` waits, or while `run` starts (once it serves, SIGINT is its
        # signal to stop: gateway/server.py): the shell's code for it.
        return EX_INTERRUPTED
    except BrokenPipeError:
        if command == "run":
            raise  # the server writes to sockets and pipes, not to stdout: a real failure
        # `clawgate call status | head -c 1`: the reader left, as Unix tools do we leave
        # quietly. Python's signal docs ("Note on SIGPIPE") do it so: stdout to /dev/null
        # (the flush at exit would fail again) and exit 1, Python's own code for EPIPE; not
        # SIGPIPE's default action, which would also end the gateway on any closed socket.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return result


def _parse(args: list[str]) -> argparse.Namespace:
    """argparse's parse_args, but a wrong flag is told by its command's parser (argparse
    tells it at the top, whose usage lists commands, no flag) with the flag it resembles."""
    parser = _parser()
    _tag_commands(parser)
    parsed, extra = parser.parse_known_args(args)
    if extra:
        command: argparse.ArgumentParser = parsed.command_parser
        message = f"unrecognized arguments: {' '.join(extra)}"
        flags = [flag for action in command._actions for flag in action.option_strings]
        wrong = next((arg.split("=", 1)[0] for arg in extra if arg.startswith("--")), None)
        # Above config.md's 0.6 for keys: the leading "--" both share makes any two flags
        # look alike (--token-file and --config score 0.6).
        close = difflib.get_close_matches(wrong, flags, n=1, cutoff=0.75) if wrong else []
        command.error(f"{message} (did you mean {close[0]}?)" if close else message)
    return parsed


def _tag_commands(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser is left in the namespace as `command_parser` when it
    parses; the innermost one's defaults win."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_parser=sub)
                _tag_commands(sub)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clawgate", description="An OpenClaw-compatible gateway on one port."
    )
    parser.add_argument("--version", action="version", version=f"clawgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the gateway")
    add_config_arguments(run)
    run.add_argument("--port", type=_port, help="listen port (0 picks a free one)")
    run.add_argument(
        "--bind",
        type=bind_argument,
        metavar="MODE",
        help="loopback, lan, custom, or an IPv4 address to bind",
    )
    add_secret_arguments(run, "clients must present")
    run.add_argument("--verbose", action="store_true", help="log at debug level")
    run.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="gateway processes sharing the port (auto: one per core); above 1 needs the"
        ' "postgres" store backend',
    )
    run.set_defaults(func=_run)

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    for name, func, text in (
        ("validate", _config_validate, "check the config file; exit 78 when invalid"),
        ("show", _config_show, "print the effective config, secrets redacted"),
        ("path", _config_path, "print the config file path in use"),
    ):
        sub = config_commands.add_parser(name, help=text)
        add_config_arguments(sub)
        sub.set_defaults(func=func)

    token = commands.add_parser("token", help="print the gateway token (generated if needed)")
    add_config_arguments(token)
    token.set_defaults(func=_token)

    service = commands.add_parser("service", help="run clawgate as a systemd service")
    service_commands = service.add_subparsers(dest="service_command", required=True)
    install = service_commands.add_parser("install", help="write the systemd unit file")
    install.add_argument("--user", action="store_true", help="a user unit, not a system one")
    add_config_arguments(install)
    install.add_argument(
        "--unit-dir", type=path_argument, metavar="DIR", help="where to write clawgate.service"
    )
    install.add_argument(
        "--force",
        action="store_true",
        help="replace a clawgate.service that differs from the one install writes",
    )
    install.set_defaults(func=_service_install)
    add_client_commands(commands)  # `call`, `health`: gateway/client.py
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535 (got {value})")
    return value


def _workers(text: str) -> int:
    try:
        return worker_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _loader(args: argparse.Namespace) -> ConfigLoader:
    return ConfigLoader(overrides_from_args(args))


def _run(args: argparse.Namespace) -> int:
    worker = _worker_index()
    if worker is not None:
        # A terminal's Ctrl-C reaches the workers with their supervisor, which passes it on as
        # SIGTERM: that one is the worker's signal to stop (gateway/server.py).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    loader = _loader(args)
    configure_logging(level="debug" if args.verbose else "info", worker=worker)
    shared_log = os.environ.get(SHARED_LOG_ENV) if worker is not None else None
    if shared_log:
        # Every line from here on goes to the log the workers share too: `logs.tail` polls
        # that reach one worker and then another follow one log (gateway/logs.py, SharedLog).
        RING.shared = SharedLog.open(shared_log)
    warn_secret_flags(args)
    config = load_or_report(loader)
    if config is None:
        return EX_CONFIG
    if worker is not None:
        try:
            config = worker_config(loader, config)
        except ConfigError as exc:
            report(exc)
            return EX_CONFIG
    configure_logging(level=config.logging.level, fmt=config.logging.format, worker=worker)
    for warning in config.warnings:
        log.warning(warning.event, path=warning.path, reason=warning.message)
    if not config.source.exists:
        log.info("config_default_used", path=str(config.source.path))
    # Imported here for start-up time only (no cycle: nothing the server imports imports this
    # module): `config`, `token`, `call` and `health` need neither the server nor the agents.
    from gateway.server import serve

    workers = args.workers or 1
    if workers > 1 and config.store.backend != "postgres":
        message = (
            f"--workers {workers} needs a store every worker shares: set store.backend to"
            ' "postgres" (the sqlite store belongs to one process)'
        )
        print(message, file=sys.stderr)
        log.error("workers_need_postgres", workers=workers, backend=config.store.backend)
        return EX_CONFIG
    sqlite = config.store.backend != "postgres"
    try:
        prepare_state_dir(config.state_dir, written=sqlite)
        if sqlite:
            hold_state_dir(config.state_dir)  # held until the process ends
        config = with_generated_token(config)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            if workers > 1:
                gateway = config.gateway
                supervisor = supervise(
                    args.run_args, workers, gateway.host, gateway.port, config.source.raw
                )
                return runner.run(supervisor)
            return runner.run(serve(config, loader))
    except (UnsafeStateError, UnsafeStoreFile) as exc:
        return _refuse_state(exc)
    except StateDirInUse as exc:
        # 1, not 78: the other one may stop (systemd then starts this one again).
        print(str(exc), file=sys.stderr)
        log.error("state_dir_in_use", path=str(config.state_dir))
        return 1
    except UnusableStore as exc:
        # Data this version cannot use: a restart would meet it again.
        print(f"cannot open the session store: {exc.detail}", file=sys.stderr)
        log.error("store_open_refused", backend=config.store.backend, error=exc.detail)
        return EX_CONFIG
    except StoreError as exc:
        # A shared database that is down or refuses us: a runtime failure, worth a restart.
        # The detail, not the message (a client's "internal error"), says what to fix.
        reason = exc.detail or exc.message
        print(f"cannot open the session store: {reason}", file=sys.stderr)
        log.error("store_open_failed", backend=config.store.backend, error=reason)
        return 1


def _worker_index() -> int | None:
    """This process's index under `clawgate run --workers` (gateway/supervisor.py), or None."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it installs (not on Windows): 7% less CPU per JSON request and 11% per
    stream than asyncio's loop, measured interleaved in one run. None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _refuse_state(exc: Exception) -> int:
    print(str(exc), file=sys.stderr)
    log.error("state_dir_unsafe", reason=str(exc))
    return EX_CONFIG


def _config_validate(args: argparse.Namespace) -> int:
    config = load_or_report(_loader(args))
    if config is None:
        return EX_CONFIG
    try:
        # As `run` checks it, creating nothing: "config OK" of a config `run` refuses misleads.
        check_state_dir_usable(config.state_dir, written=config.store.backend != "postgres")
    except UnsafeStateError as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    for warning in config.warnings:
        print(f"warning: {warning.path}: {warning.message}", file=sys.stderr)
    if config.source.exists:
        print(f"config OK: {config.source.path}")
    else:
        print(f"config OK: the embedded default (no file at {config.source.path})")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    config = load_or_report(_loader(args))
    if config is None:
        return EX_CONFIG
    print(json.dumps(redacted(config), indent=2, ensure_ascii=False))
    return 0


def _config_path(args: argparse.Namespace) -> int:
    loader = _loader(args)
    print(loader.config_path)
    if loader.state_dir.exists() and not loader.state_dir.is_dir():
        # `run` refuses it (with --config too): not "the embedded default is used".
        print(not_a_directory(loader.state_dir), file=sys.stderr)
        return EX_CONFIG
    if not loader.config_path.exists():
        note = "not found" if loader.explicit_path else "not found; the embedded default is used"
        print(f"({note})", file=sys.stderr)
    return 0


def _service_install(args: argparse.Namespace) -> int:
    if args.user:
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        state_home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state")
        unit_dir, config_path = (
            config_home / "systemd/user",
            config_home / "clawgate/clawgate.json5",
        )
        # systemd's StateDirectory= of a user unit is $XDG_STATE_HOME/<name>.
        state_dir = state_home / "clawgate"
    else:
        unit_dir = Path("/etc/systemd/system")
        config_path, state_dir = SYSTEM_CONFIG, SYSTEM_STATE
    unit_dir = Path(args.unit_dir) if args.unit_dir else unit_dir
    config_path = Path(args.config).expanduser().absolute() if args.config else config_path
    state_dir = Path(args.state_dir).expanduser().absolute() if args.state_dir else state_dir
    if not args.user and state_directory(state_dir) is None:
        print(
            f"cannot install the service: a system unit's state dir must be /var/lib/NAME,"
            f" which systemd makes for its dynamic user (not {state_dir}). Fix: --state-dir"
            " /var/lib/NAME (NAME of letters, digits, `.`, `_`, `-`), or a user unit (--user).",
            file=sys.stderr,
        )
        return 2
    executable = default_executable()
    for path in () if args.user else (Path(executable), config_path):
        hidden = hidden_by_sandbox(path)
        if hidden is not None:
            # Installed all the same: the operator may move the file there before starting.
            print(
                f"warning: the service will not find {path}: its sandbox hides {hidden}."
                " Fix: a config in /etc/clawgate and clawgate in /opt/clawgate, or a user"
                " unit (--user).",
                file=sys.stderr,
            )
    unit = unit_text(user=args.user, executable=executable, config=config_path, state_dir=state_dir)
    unit_path = unit_dir / "clawgate.service"
    try:
        try:
            # A file in another encoding is no unit install wrote: its odd bytes show as U+FFFD.
            existing: str | None = unit_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            existing = None
        if existing is not None and existing != unit and not args.force:
            # An operator's own lines (Environment=, MemoryMax=) would be gone without a word.
            print(
                f"cannot install the service: {unit_path} exists and is not the unit this"
                " install writes (edited by hand, or written by another version or with other"
                " paths); it is left as it is. Fix: move it away, or run again with --force to"
                " replace it.\nWhat --force would change (- its lines, + the new ones):",
                file=sys.stderr,
            )
            diff = difflib.unified_diff(
                existing.splitlines(), unit.splitlines(), str(unit_path), "new", lineterm=""
            )
            for line in diff:
                print(line, file=sys.stderr)
            return 1
        if existing == unit:
            print(f"{unit_path} is up to date")
        else:
            unit_dir.mkdir(parents=True, exist_ok=True)
            write_unit(unit_path, unit)
            print(f"wrote {unit_path}")
        if not config_path.exists():
            # The unit names its config explicitly, so it must exist: start from the default.
            _write_new_config(config_path, user=args.user)
            print(f"wrote {config_path} (the embedded default: loopback, port 18789, echo agent)")
    except OSError as exc:
        print(f"cannot install the service: {exc}", file=sys.stderr)
        return 1
    systemctl = "systemctl --user" if args.user else "systemctl"
    print("next:")
    print(f"  {systemctl} daemon-reload")
    print(f"  {systemctl} enable --now clawgate")
    print(f"  journalctl {'--user ' if args.user else ''}-u clawgate -f")
    if args.user:
        command = [executable, "token", "--config", str(config_path), "--state-dir", str(state_dir)]
        print(f"  {shlex.join(command)}   # the token clients send")
    else:
        # Not `clawgate token`: as root it refuses a state dir the service's dynamic user owns.
        token_file = shlex.quote(str(state_dir / "gateway.token"))
        print(
            f"  cat {token_file}   # as root, once started: the token clients send"
            " (none when one is configured)"
        )
    return 0


def _write_new_config(path: Path, *, user: bool) -> None:
    """The embedded default at `path`, whatever the umask. A user unit's config is its user's
    alone (0600, a new directory 0700): their token and API keys go there, and config.patch
    keeps the mode it finds. A system unit's is readable by all (0644): its dynamic user owns
    nothing in /etc, and its secrets go in /etc/clawgate/env, which systemd reads as root."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True)
        os.chmod(path.parent, 0o700 if user else 0o755)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600 if user else 0o644)
        file.write(embedded_default_text())


def _token(args: argparse.Namespace) -> int:
    configure_logging(level="warn")
    config = load_or_report(_loader(args))
    if config is None:
        return EX_CONFIG
    if config.gateway.auth.mode != "token":
        # The configuration's answer, not a failure: 78 as for every config refusal.
        print(f"auth mode is {config.gateway.auth.mode}: there is no token", file=sys.stderr)
        return EX_CONFIG
    try:
        token = with_generated_token(config).gateway.auth.token
    except UnsafeStateError as exc:
        # A command's one line on stderr, as `call` says it; a log line would repeat it.
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    print(token)
    return 0
