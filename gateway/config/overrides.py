"""The command line and the environment over the file (config.md §1, §2), and the auth in force.

The CLI's config and secret flags are declared here (`clawgate run`, `config`, `token`, `call`
and `health` share them) and become an Overrides; after the schema walk, `apply_overrides` puts
the port, bind and the resolved auth into the normalized `gateway` section, and the startup
guards (§6.1) check the result.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from typing import Any

import attrs
import structlog

from gateway.config.errors import ConfigIssue
from gateway.config.model import GatewayConfig
from gateway.config.schema import Checker, Invalid, credential_problem, show
from gateway.config.secret_keys import holds_password

log = structlog.get_logger()

_PORT_RE = re.compile(r"[0-9]{1,5}")


@attrs.frozen
class Overrides:
    """What the command line says; each value wins over the environment and the file."""

    config_path: str | None = None
    state_dir: str | None = None
    port: int | None = None  # 0 = let the OS pick a free port (tests)
    bind: str | None = None  # "loopback", "lan", "custom" or an IPv4 address (= custom there)
    token: str | None = None
    password: str | None = None
    # --token-file/--password-file: read on every load, so a rewritten file takes effect on
    # the next reload. Each excludes its plain flag (the CLI's argparse says so), but for a
    # pipe (`<(cmd)`, a FIFO), read once by `overrides_from_args`: its secret is then the flag's
    # value, and the file only names where it came from.
    token_file: str | None = None
    password_file: str | None = None
    verbose: bool = False  # --verbose: logging.level "debug", on every reload too


NO_OVERRIDES = Overrides()


class SecretFileError(Exception):
    """--token-file/--password-file cannot give a secret; the message says why."""


# The most of a secret file that is read. A secret this long could not be sent anyway: the
# `connect` frame that carries it must fit in 64 KiB (ws-protocol.md §2.3). Reading no more
# keeps /dev/zero or a file named by mistake (a log, a disk image) from filling the memory.
SECRET_FILE_MAX_BYTES = 64 * 1024


def read_secret_file(path: str, *, regular_only: bool = False) -> str:
    """The first line of `path`, its line ending stripped; an empty one is an error, and so is
    one with no line end in the first SECRET_FILE_MAX_BYTES.

    The file's permissions are not checked: it is the operator's, and container secret mounts
    (Docker's /run/secrets, Kubernetes' volumes) are 0444 and often symlinks, in a mount
    namespace of their own. `regular_only` refuses anything but a regular file (a link to one
    is followed), as the config file is read: for a secret read with the config (at a reload,
    by a config.patch holding the config's lock), where a FIFO would hold them all until some
    writer came. --token-file takes a pipe too: `<(pass show clawgate)`.
    """
    try:
        with open(path, "rb", opener=_open_nonblocking if regular_only else None) as file:
            if regular_only and not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            first = file.readline(SECRET_FILE_MAX_BYTES)
    except OSError as exc:
        raise SecretFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(first) == SECRET_FILE_MAX_BYTES and not first.endswith(b"\n"):
        raise SecretFileError(
            f"{path} has no line end in its first {SECRET_FILE_MAX_BYTES} bytes"
            " (the secret is its first line)"
        )
    try:
        secret = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} is not valid UTF-8") from None
    if not secret:
        raise SecretFileError(f"{path} is empty (the secret is its first line)")
    return secret


def _open_nonblocking(path: str, flags: int) -> int:
    # A FIFO's open would wait for a writer; a regular file's reads are the same either way.
    return os.open(path, flags | os.O_NONBLOCK)


def env_setting(environ: Mapping[str, str], name: str) -> str | None:
    """A variable of §2: trimmed, and empty counts as unset."""
    value = environ.get(name, "").strip()
    return value or None


# --- Environment and command line (config.md §1, §2) -----------------------------------------
#
# Deliberate choice: CLI flag > environment > file > default, uniformly, for the port AND the
# secrets. config.md §2 has the file's gateway.auth.token/password win over
# OPENCLAW_GATEWAY_TOKEN/PASSWORD (as OpenClaw does); the team decided against that so that one
# rule holds for every setting and an operator can always override the file from the unit file.


def apply_overrides(
    gateway: Any, overrides: Overrides, environ: Mapping[str, str], ctx: Checker
) -> None:
    """Puts the port, bind and auth in force into the normalized `gateway` section."""
    if not isinstance(gateway, dict):
        return
    port = _override_port(overrides, environ, ctx)
    if port is not None:
        gateway["port"] = port
    if overrides.bind is not None:
        problem = bind_problem(overrides.bind)
        if problem is not None:
            ctx.issue("--bind", problem)
        elif overrides.bind in ("loopback", "lan", "custom"):
            gateway["bind"] = overrides.bind
        else:
            gateway["bind"], gateway["customBindHost"] = "custom", overrides.bind
    auth = gateway.get("auth")
    if isinstance(auth, dict) and not any(isinstance(v, Invalid) for v in auth.values()):
        _resolve_auth(auth, overrides, environ, ctx)


def bind_problem(bind: str) -> str | None:
    """Why `--bind` cannot be `bind`, or None."""
    if bind in ("loopback", "lan", "custom") or _is_ipv4(bind):
        return None
    return f'must be one of "loopback", "lan", "custom" or an IPv4 address (got {show(bind)})'


def _override_port(overrides: Overrides, environ: Mapping[str, str], ctx: Checker) -> int | None:
    if overrides.port is not None:
        if not 0 <= overrides.port <= 65535:  # 0: the OS picks a free port
            ctx.issue("--port", f"must be between 0 and 65535 (got {overrides.port})")
            return None
        return overrides.port
    value = env_setting(environ, "OPENCLAW_GATEWAY_PORT")
    if value is None:
        return None
    digits = value.rpartition(":")[2]  # `host:port` uses its port part
    if _PORT_RE.fullmatch(digits) is None or not 1 <= int(digits) <= 65535:
        ctx.issue("OPENCLAW_GATEWAY_PORT", f'not a valid port ("{value}")')
        return None
    return int(digits)


def _first_secret(*candidates: tuple[str, str | None]) -> tuple[str | None, str | None]:
    """(value, source) of the first candidate that is set; an empty string is not set."""
    for source, value in candidates:
        if value:
            return value, source
    return None, None


def has_secret_flag(overrides: Overrides) -> bool:
    return any(
        v is not None
        for v in (
            overrides.token,
            overrides.password,
            overrides.token_file,
            overrides.password_file,
        )
    )


def _flag_secret(value: str | None, path: str | None, flag: str, ctx: Checker) -> str | None:
    if path is None or value is not None:
        return value
    try:
        return read_secret_file(path)
    except SecretFileError as exc:
        ctx.issue(flag, str(exc))
        return None


def _trimmed_flag_secret(
    value: str | None, path: str | None, flag: str, ctx: Checker
) -> str | None:
    """A flag's (or its file's) secret trimmed, as the environment's, the file's and
    gateway.token are: a presented Bearer secret is trimmed, so one kept with its spaces would
    match no HTTP client. One of only whitespace is an issue."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        if path:
            ctx.issue(f"{flag}-file", f"{path} is only whitespace")
        else:
            ctx.issue(flag, "is only whitespace")
        return None
    return value


def _resolve_auth(
    auth: dict[str, Any], overrides: Overrides, environ: Mapping[str, str], ctx: Checker
) -> None:
    flag_token = _trimmed_flag_secret(
        _flag_secret(overrides.token, overrides.token_file, "--token-file", ctx),
        overrides.token_file,
        "--token",
        ctx,
    )
    flag_password = _trimmed_flag_secret(
        _flag_secret(overrides.password, overrides.password_file, "--password-file", ctx),
        overrides.password_file,
        "--password",
        ctx,
    )
    env_token = env_setting(environ, "OPENCLAW_GATEWAY_TOKEN")
    env_password = env_setting(environ, "OPENCLAW_GATEWAY_PASSWORD")
    # The file's values are checked by the schema (_Credential).
    for where, value in (
        ("--token-file" if overrides.token_file else "--token", flag_token),
        ("--password-file" if overrides.password_file else "--password", flag_password),
        ("OPENCLAW_GATEWAY_TOKEN", env_token),
        ("OPENCLAW_GATEWAY_PASSWORD", env_password),
    ):
        problem = None if value is None else credential_problem(value)
        if problem is not None:
            ctx.issue(where, problem)
    token, token_source = _first_secret(
        ("flag", flag_token), ("env", env_token), ("config", auth.get("token"))
    )
    password, password_source = _first_secret(
        ("flag", flag_password), ("env", env_password), ("config", auth.get("password"))
    )
    mode: str | None = auth.get("mode")
    if bool(flag_token) != bool(flag_password):
        # The command line wins over the file, its mode too (CLI flag > environment > file,
        # above): the unit file's --token is the operator's word; the file's mode is said to
        # be overridden, not left to be found out from a client refused.
        flag_mode = "token" if flag_token else "password"
        if mode is not None and mode != flag_mode:
            read = overrides.token_file if flag_token else overrides.password_file
            flag = f"--{flag_mode}-file" if read else f"--{flag_mode}"
            ctx.warn(
                flag,
                f'overrides gateway.auth.mode "{mode}" of the config file: the gateway runs'
                f" in {flag_mode} mode",
            )
        mode = flag_mode
    elif flag_token and flag_password and mode == "none":
        # Both flags: the file's mode picks one (with no mode it is the issue below), but
        # "none" picks neither, and two secrets given would be ignored without a word.
        ctx.issue(
            "--token",
            'gateway.auth.mode is "none" in the config file and both --token and --password'
            ' are given; drop one of them, or set gateway.auth.mode to "token" or "password"',
        )
    if mode is None:
        # Not named by a flag or the file: the secrets that are set name it.
        if not (token and password):
            mode = "password" if password else "token"
        else:
            ctx.issue(
                "gateway.auth.mode",
                "both token and password are configured; set gateway.auth.mode explicitly",
            )
            mode = "token"
    if mode == "password" and password is None:
        ctx.issue(
            "gateway.auth.password", "gateway auth mode is password, but no password was configured"
        )
    auth.update(
        mode=mode,
        token=token,
        password=password,
        source={"token": token_source, "password": password_source}.get(mode),
    )


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def startup_guards(gateway: GatewayConfig) -> list[ConfigIssue]:
    """§6.1. A token-mode gateway with no token passes: the CLI generates one."""
    if gateway.bind == "custom":
        host = gateway.custom_bind_host
        if not host:
            message = "gateway.bind=custom requires gateway.customBindHost"
            return [ConfigIssue("gateway.customBindHost", message)]
        if not _is_ipv4(host):
            got = show(host) if holds_password(host) else host  # show() does not quote it
            message = f"gateway.bind=custom requires a valid IPv4 customBindHost (got {got})"
            return [ConfigIssue("gateway.customBindHost", message)]
    if gateway.bind != "loopback" and gateway.auth.mode == "none":
        message = (
            f"refusing to bind gateway to {gateway.host}:{gateway.port} without auth"
            " (set gateway.auth.token/password,"
            " or set OPENCLAW_GATEWAY_TOKEN/OPENCLAW_GATEWAY_PASSWORD)"
        )
        return [ConfigIssue("gateway.bind", message)]
    return []


# A shared secret shorter than this, on a gateway others can reach, is a warning (not an issue:
# config.md names no length and OpenClaw checks none, so a refusal would stop configs that
# start there). The limiter slows one address; a secret guessed from many addresses, or
# behind a proxy that names a client per request, needs length. A generated token has 48.
MIN_SECRET_CHARS = 16
_SECRET_PATHS = {
    "flag": {"token": "--token", "password": "--password"},
    "env": {"token": "OPENCLAW_GATEWAY_TOKEN", "password": "OPENCLAW_GATEWAY_PASSWORD"},
}


def exposure(gateway: GatewayConfig) -> str | None:
    """Why clients from other hosts reach the gateway, or None when only this host does."""
    if gateway.bind == "lan":
        return "bind lan"
    if gateway.bind == "custom":
        try:
            loopback = ipaddress.ip_address(gateway.host).is_loopback
        except ValueError:
            return None  # refused by startup_guards
        if not loopback:
            return f"bind custom {gateway.host}"
    if gateway.trusted_proxies:
        return "behind a trusted proxy"
    return None


def short_secret_warnings(
    gateway: GatewayConfig, overrides: Overrides, hooks_enabled: bool, hook_token: str | None
) -> list[tuple[str, str]]:
    """(path, message) for each secret clients present that is short on an exposed gateway:
    the one the auth mode uses, named where it came from, and the hooks' token."""
    reached = exposure(gateway)
    if reached is None:
        return []
    auth = gateway.auth
    found = []
    if auth.mode in ("token", "password") and auth.secret is not None:
        where = _SECRET_PATHS.get(auth.source or "", {}).get(auth.mode)
        read = overrides.token_file if auth.mode == "token" else overrides.password_file
        if auth.source == "flag" and read:
            where = f"--{auth.mode}-file"
        found.append((where or f"gateway.auth.{auth.mode}", auth.secret))
    if hooks_enabled and hook_token is not None:
        found.append(("hooks.token", hook_token))
    return [
        (
            path,
            f"is {len(secret)} characters long, on a gateway others can reach ({reached}):"
            f" a secret of fewer than {MIN_SECRET_CHARS} characters can be guessed; use a long"
            " random one (`clawgate token` prints one)",
        )
        for path, secret in found
        if len(secret) < MIN_SECRET_CHARS
    ]


def public_metrics_warning(gateway: GatewayConfig) -> str | None:
    """`gateway.metrics.public` on a gateway others can reach: allowed (a scraper that cannot
    send a header), but what it shows goes to anyone there, so it is said."""
    reached = exposure(gateway)
    metrics = gateway.metrics
    if reached is None or not (metrics.enabled and metrics.public):
        return None
    return (
        f"anyone who can reach the gateway ({reached}) reads /metrics without a token: its"
        " agent and provider ids, request and run counts, memory and CPU"
    )


# --- The command line's config and secret flags ----------------------------------------------

_SECRET_ARGUMENTS = ("token", "password", "token_file", "password_file")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=path_argument, metavar="PATH", help="config file (JSON5)")
    parser.add_argument(
        "--state-dir", type=path_argument, metavar="DIR", help="state directory (~/.clawgate)"
    )


def path_argument(text: str) -> str:
    """A path flag's value. An empty one is refused, not taken as unset (as an empty variable
    is, config.md §2): `--config "$CONFIG"` with the variable unset would run on the embedded
    default in ~/.clawgate, a token generated there, and look like it worked."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable in the command line?)")
    return text


def bind_argument(text: str) -> str:
    """`--bind`'s value, checked by the parser: a bad one is a bad command line (config.md §1:
    exit 2), not an invalid config (78) at a file the operator may not have written."""
    problem = bind_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def secret_argument(text: str) -> str:
    """--token/--password's value, checked by the parser as `bind_argument`: one of only
    whitespace, or one no client can send. A secret file's line is checked when it is read
    (at every load: a reload reads it again), as an issue of the config."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is only whitespace")
    problem = credential_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_secret_arguments(parser: argparse.ArgumentParser, whose: str) -> None:
    """--token/--token-file and --password/--password-file, each pair exclusive."""
    for name in ("token", "password"):
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            f"--{name}",
            type=secret_argument,
            metavar=name[0].upper(),
            help=f"shared {name} {whose} (visible in `ps`: prefer --{name}-file)",
        )
        group.add_argument(
            f"--{name}-file",
            type=path_argument,
            metavar="PATH",
            help=f"read the {name} from the first line of PATH",
        )


def warn_secret_flags(args: argparse.Namespace) -> None:
    """Any local user can read a process's command line (`ps`, /proc/PID/cmdline)."""
    for name in ("token", "password"):
        if getattr(args, name, None):
            log.warning(
                "secret_on_command_line",
                flag=f"--{name}",
                hint=f"use --{name}-file PATH or $OPENCLAW_GATEWAY_{name.upper()}",
            )


def overrides_from_args(args: argparse.Namespace, *, secrets: bool = True) -> Overrides:
    """secrets=False: `call` sends its --token/--password, they configure no gateway."""
    if not secrets:
        args = argparse.Namespace(
            **{k: v for k, v in vars(args).items() if k not in _SECRET_ARGUMENTS}
        )
    token_file = getattr(args, "token_file", None)
    password_file = getattr(args, "password_file", None)
    return Overrides(
        config_path=args.config,
        state_dir=args.state_dir,
        port=getattr(args, "port", None),
        bind=getattr(args, "bind", None),
        token=getattr(args, "token", None) or _read_once(token_file),
        password=getattr(args, "password", None) or _read_once(password_file),
        token_file=token_file,
        password_file=password_file,
        verbose=getattr(args, "verbose", False),
    )


def _read_once(path: str | None) -> str | None:
    """The secret of a secret file that cannot be read again, a pipe (`<(pass show x)`, a FIFO):
    a reload would find a pipe's end (every reload failing), or wait in a FIFO's open for a
    writer that never comes, holding the config lock. None for a regular file, read on every
    load, and for one that cannot give a secret: the load says why."""
    if path is None:
        return None
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            return None
        return read_secret_file(path)
    except (OSError, SecretFileError):
        return None
