"""`clawgate call METHOD` and `clawgate health`: a small WebSocket client of our own gateway.

It does the handshake (ws-protocol.md §2-§5), calls one method, prints the JSON result and
exits 0; a refused connect or an error response is printed to stderr with exit code 1. The
defaults reach the local gateway with no flags: the URL from the config's port, the token
as `clawgate token` finds it; that token goes to no other host than this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WebSocketError, WSCloseCode

from gateway import __version__
from gateway.auth import is_loopback, with_generated_token
from gateway.config.loader import ConfigLoader, load_or_report
from gateway.config.model import EX_CONFIG
from gateway.config.overrides import (
    SecretFileError,
    add_config_arguments,
    add_secret_arguments,
    overrides_from_args,
    read_secret_file,
    warn_secret_flags,
)
from gateway.jsonwire import strict_loads
from gateway.logs import configure_logging
from gateway.statedir import UnsafeStateError
from gateway.ws.protocol import MAX_PAYLOAD

CLIENT_ID = "clawgate-cli"
PROTOCOL = 4
# The largest frame read from the server: the gateway's own maxPayload, the limit OpenClaw's
# client sets too. Unlimited, a server that is not our gateway (or a proxy in front of it)
# could announce an endless frame and grow this command's memory until --timeout; a frame
# over the limit is refused from its header, before any of it is read.
MAX_ANSWER_BYTES = MAX_PAYLOAD


class CallError(Exception):
    """The gateway refused the connect or answered with an error."""


def add_commands(commands: Any) -> None:
    """Add `call` and `health` to the CLI's subcommands (`cli._parser`)."""
    call = commands.add_parser("call", help="call one gateway WebSocket method")
    call.add_argument("method", metavar="METHOD", help="e.g. health, status, sessions.list")
    call.add_argument("--params", metavar="JSON", default=None, help="params object (JSON)")
    _connection_arguments(call)
    call.set_defaults(func=_call_command)

    health = commands.add_parser("health", help="print the gateway's health (WebSocket)")
    _connection_arguments(health)
    health.set_defaults(func=_health_command, method="health", params=None)


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--url", help="ws://host:port (default: the configured local gateway)")
    add_secret_arguments(parser, "to connect with (default: the configured one)")
    parser.add_argument(
        "--timeout", type=_seconds, default=30.0, metavar="S", help="seconds to wait (30)"
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (got {text!r})")
    return value


def _health_command(args: argparse.Namespace) -> int:
    return _call_command(args)


def _call_command(args: argparse.Namespace) -> int:
    configure_logging(level="warn")
    params: Any = None
    if args.params is not None:
        try:
            # JSON's values only: the gateway cannot read a frame with NaN or Infinity, so its
            # error would not carry this request's id and the call would wait for --timeout.
            params = strict_loads(args.params)
            json.dumps(params, allow_nan=False)  # 1e400 reads as Infinity
        except ValueError as exc:
            print(f"--params is not valid JSON: {exc}", file=sys.stderr)
            return 2
    if args.url is not None:
        problem = _url_problem(args.url)
        if problem is not None:
            print(
                f"--url {_shown(args.url)} is not a gateway's WebSocket URL: {problem}. Give"
                " ws://HOST:PORT (or wss:// behind TLS).",
                file=sys.stderr,
            )
            return 2
    warn_secret_flags(args)
    url, token, password = args.url, args.token, args.password
    try:
        if args.token_file is not None:
            token = read_secret_file(args.token_file)
        if args.password_file is not None:
            password = read_secret_file(args.password_file)
    except SecretFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if token is not None:
        token = token.strip()  # as the gateway trims its own (gateway/config/overrides.py)
    if url is None or (token is None and password is None):
        config = load_or_report(ConfigLoader(overrides_from_args(args, secrets=False)))
        if config is None:
            return EX_CONFIG
        gateway = config.gateway
        host = gateway.host if gateway.bind == "custom" else "127.0.0.1"
        if url is None:
            url = f"ws://{host}:{gateway.port}"
        if token is None and password is None:
            if not _on_this_host(url, host):
                print(
                    f"--url {_shown(url)} is not this host's gateway: pass its credential with"
                    " --token-file or --password-file (this gateway's token or password is"
                    " sent only to this host)",
                    file=sys.stderr,
                )
                return 2
            try:
                auth = with_generated_token(config).gateway.auth
            except UnsafeStateError as exc:
                print(str(exc), file=sys.stderr)
                return EX_CONFIG
            token = auth.token if auth.mode == "token" else None
            password = auth.password if auth.mode == "password" else None
    try:
        result = asyncio.run(
            call(
                url,
                args.method,
                params,
                token=token,
                password=password,
                wait_seconds=args.timeout,
            )
        )
    except CallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:  # before OSError, of which it is a subclass
        print(f"no answer from {_shown(url)} within {args.timeout:g}s", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"cannot connect to {_shown(url)}: {_connect_problem(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _connect_problem(exc: BaseException) -> str:
    """Why the connection failed, and for the common case (nothing listens: the gateway is
    down, or on another port) what to do; aiohttp's own words otherwise."""
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return (
            "connection refused, no gateway listens there. Fix: start it (`clawgate run`,"
            " `systemctl status clawgate`), or give the URL of its gateway_listening log line"
            " with --url."
        )
    return _shown(str(exc))


# The user information of a URL (ws://user:password@host/): aiohttp sends it as Basic auth,
# and a message that shows the URL must not show the password (terminals' scrollback, CI logs,
# bug reports). A pattern rather than urlsplit, which raises on the URLs that need a message.
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")


def _shown(text: str) -> str:
    """`text` (a URL, or a message that names one) with any user information as `***`."""
    return _USERINFO.sub("***@", text)


# aiohttp's ws_connect takes http(s):// as well, the same endpoint.
_WS_SCHEMES = ("ws", "wss", "http", "https")


def _url_problem(url: str) -> str | None:
    """Why `url` cannot name a gateway's WebSocket endpoint, or None. A typo found here is a
    usage error (exit 2), not a gateway that did not answer (exit 1, worth a retry)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"it is not a URL ({exc})"
    if not parts.scheme:
        return "it has no scheme"
    if parts.scheme.lower() not in _WS_SCHEMES:
        return f"its scheme is {_printable(parts.scheme)}"
    if not parts.hostname:
        return "it has no host"
    try:
        parts.port  # noqa: B018 (the property checks the port)
    except ValueError:
        return "its port is not a number from 0 to 65535"
    return None


def _on_this_host(url: str, gateway_host: str) -> bool:
    """Whether `url` names a loopback address or the host the gateway binds: the only places
    its credential goes without being named on the command line."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and (host in ("localhost", gateway_host) or is_loopback(host))


async def call(
    url: str,
    method: str,
    params: Any = None,
    *,
    token: str | None = None,
    password: str | None = None,
    wait_seconds: float = 30.0,
) -> Any:
    """Connect, call `method`, return its payload (`agent`: the final answer)."""
    auth = {k: v for k, v in (("token", token), ("password", password)) if v}
    connect = {
        "minProtocol": PROTOCOL,
        "maxProtocol": PROTOCOL,
        "client": {
            "id": CLIENT_ID,
            "version": __version__,
            "platform": sys.platform,
            "mode": "cli",
            "instanceId": str(uuid.uuid4()),
        },
        "role": "operator",
        "auth": auth,
    }
    async with asyncio.timeout(wait_seconds):
        async with (
            aiohttp.ClientSession() as session,
            # aiohttp refuses a frame of its limit or more: one of exactly MAX_PAYLOAD is read.
            session.ws_connect(url, max_msg_size=MAX_ANSWER_BYTES + 1) as ws,
        ):
            await _request(ws, "connect", connect)
            return await _request(ws, method, params)


async def _request(ws: aiohttp.ClientWebSocketResponse, method: str, params: Any) -> Any:
    frame_id = str(uuid.uuid4())
    frame: dict[str, Any] = {"type": "req", "id": frame_id, "method": method}
    if params is not None:
        frame["params"] = params
    await ws.send_str(json.dumps(frame))
    async for msg in ws:
        if isinstance(msg.data, WebSocketError) and msg.data.code == WSCloseCode.MESSAGE_TOO_BIG:
            raise CallError(f"the gateway sent a frame larger than {MAX_ANSWER_BYTES} bytes")
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        answer = _frame(msg.data)
        if answer.get("type") != "res" or answer.get("id") != frame_id:
            continue  # events
        if not answer.get("ok"):
            error = answer.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            raise CallError(_printable(message) if isinstance(message, str) else "request failed")
        payload = answer.get("payload")
        # `agent` answers twice (§8): the acceptance, then the result.
        if method == "agent" and isinstance(payload, dict) and payload.get("status") == "accepted":
            continue
        return payload
    reason = ws.close_code
    raise CallError(f"connection closed ({reason})" if reason else "connection closed")


# C0 controls but tab and newline, DEL and C1: a message written to a terminal must not
# drive it (set its title, write the clipboard, move the cursor over earlier lines).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """`text` from the server with its control characters shown as escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _frame(text: str) -> dict[str, Any]:
    """A frame from the server; whatever else it sent (it may not be our gateway at all) is
    a CallError, never a traceback."""
    try:
        frame = json.loads(text)
    except ValueError:
        frame = None
    if not isinstance(frame, dict):
        raise CallError("the gateway sent a frame that is not a JSON object")
    return frame
