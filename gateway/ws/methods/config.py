"""`config.get` and `config.patch` (ws-protocol.md §8; hot reload: config.md §7).

`config.patch` merges an RFC 7396 patch into the file as parsed (so `${VAR}` strings stay
unexpanded), validates the result like a startup load, writes it atomically and applies it
through the hot-reload path before answering. Beyond §8, a patch may not send a secret it did
not write out to an address it changed (config/patch.py's secrets_sent_elsewhere), weaken the
auth in force (_weakened_auth), let more clients reach the gateway (_widened_exposure) nor let
the webhooks do more (_widened_hooks); all are params errors, and the file edited by hand still may.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import json5
import structlog

from agents.config import AgentsConfig
from agents.errors import InvalidSessionKey
from agents.keys import normalize_session_key
from gateway.config.apply import ReloadResult, apply_config, with_token
from gateway.config.errors import FILE_LEVEL, ConfigError, ConfigIssue
from gateway.config.loader import ConfigLoader, embedded_default_text
from gateway.config.model import BIND_HOSTS, Config, GatewayConfig, HooksConfig
from gateway.config.patch import (
    FileState,
    MarkerWithoutValue,
    merge_patch,
    parse_object,
    read_file,
    render,
    secrets_sent_elsewhere,
    write_atomic,
    writers_turn,
)
from gateway.config.schema import non_json_number
from gateway.config.secret_keys import REDACTED
from gateway.edge import parse_network
from gateway.state import GatewayState
from gateway.statedir import MAX_CONFIG_BYTES
from gateway.ws.configfile import ParsedFile
from gateway.ws.dispatch import CallContext, MethodRegistry, RateLimit, no_params
from gateway.ws.protocol import (
    ADMIN,
    INVALID_REQUEST,
    READ,
    UNAVAILABLE,
    ParamReader,
    ParamsError,
    WsError,
)

log = structlog.get_logger()

# §6: control-plane writes are limited per connection; a loop of patches is a bug or abuse.
PATCH_RATE = RateLimit(30, 60)
COMMENTS_LOST = "config file rewritten as JSON: comments and formatting were not preserved"


def _warnings(config: Config) -> list[str]:
    return [f"{w.path}: {w.message}" for w in config.warnings]


def _issues(issues: tuple[ConfigIssue, ...]) -> list[dict[str, str]]:
    return [{"path": issue.path, "message": issue.message} for issue in issues]


def _weakened_auth(running_gateway: GatewayConfig, new_gateway: GatewayConfig) -> str | None:
    """How `new` would weaken the auth in force, or None.

    An `operator.admin` token may be one an attacker holds for a while (a leaked CLI token, a
    compromised UI); turning auth or the failed-auth limiter off through config.patch would make
    that access permanent and open to everyone. The file, edited by the host's owner, still can.
    A new trusted proxy is the limiter off by another name: a trusted peer says, in
    X-Forwarded-For, which client the limiter counts, so it may name a fresh one per guess.
    """
    untrusted = _newly_trusted(running_gateway.trusted_proxies, new_gateway.trusted_proxies)
    if untrusted is not None:
        return f"gateway.trustedProxies: a patch may not trust a new proxy ({untrusted})"
    running, new = running_gateway.auth, new_gateway.auth
    if new.mode == "none" and running.mode != "none":
        return 'gateway.auth.mode: a patch may not turn auth off ("none")'
    old_limit, new_limit = running.rate_limit, new.rate_limit
    if not old_limit.enabled:
        return None
    if not new_limit.enabled:
        return "gateway.auth.rateLimit: a patch may not turn the failed-auth limiter off"
    looser = [
        name
        for name, is_looser in (
            ("maxAttempts", new_limit.max_attempts > old_limit.max_attempts),
            ("windowMs", new_limit.window_ms < old_limit.window_ms),
            ("lockoutMs", new_limit.lockout_ms < old_limit.lockout_ms),
            ("exemptLoopback", new_limit.exempt_loopback and not old_limit.exempt_loopback),
        )
        if is_looser
    ]
    if looser:
        return f"gateway.auth.rateLimit.{looser[0]}: a patch may not loosen the failed-auth limiter"
    return None


def _widened_exposure(
    running: GatewayConfig, new: GatewayConfig, written_bind: str | None
) -> str | None:
    """How `new` would let more clients reach the gateway than `running` does, or None.

    With auth `none` on loopback (or a password a page may guess at the limiter's pace), the
    Host and Origin checks and the loopback bind are all that keep a web page the user visits
    out; a patch that widened them would open the gateway for good, as turning auth off would
    (_weakened_auth). Narrowing, and keeping what is in force, still apply. `written_bind` is
    the address the file names now: a `bind` edited by hand waits for a restart, and a later
    patch of something else writes it back unchanged.
    """
    http, old_http = new.http, running.http
    origin = _first_new(http.cors_allowed_origins, old_http.cors_allowed_origins)
    if origin is not None:
        return f"gateway.http.cors.allowedOrigins: a patch may not allow a new origin ({origin})"
    origin = _first_new(new.allowed_origins, running.allowed_origins)
    if origin is not None:
        return f"gateway.controlUi.allowedOrigins: a patch may not allow a new origin ({origin})"
    host = _first_new(http.allowed_hosts, old_http.allowed_hosts)
    if host is not None:
        return f"gateway.http.allowedHosts: a patch may not allow a new host ({host})"
    # The files served at `/` need no auth: a patch that pointed them at another directory
    # (one with an index.html: a home directory, a web root) would publish what it holds.
    if new.control_ui.root != running.control_ui.root:
        return "gateway.controlUi.root: a patch may not change the directory served at /"
    metrics, old_metrics = new.metrics, running.metrics
    if metrics.enabled and metrics.public and not (old_metrics.enabled and old_metrics.public):
        return "gateway.metrics.public: a patch may not serve the metrics without auth"
    # `lan` (0.0.0.0) listens on every address: one of them is no wider.
    within = (running.host, written_bind) if running.host != BIND_HOSTS["lan"] else (new.host,)
    if not _is_loopback(new.host) and new.host not in within:
        return f"gateway.bind: a patch may not bind the gateway beyond loopback ({new.host})"
    # What a client that has not authenticated may hold, loosened as the limiter may not be.
    preauth, old_preauth = new.ws_preauth, running.ws_preauth
    for name, is_higher in (
        ("maxConnections", preauth.max_connections > old_preauth.max_connections),
        ("maxPerAddress", preauth.max_per_address > old_preauth.max_per_address),
    ):
        if is_higher:
            return (
                f"gateway.ws.preAuth.{name}: a patch may not raise the cap on unauthenticated"
                " sockets"
            )
    return None


def _widened_hooks(running: HooksConfig, new: HooksConfig, agents: AgentsConfig) -> str | None:
    """How `new` would let the webhooks do more than `running` does, or None.

    The hook token is a credential of its own: webhooks a patch turned on, or let run another
    agent or write to another session (the main one included), would outlive the rotation of the
    gateway token the patch came with. A new token, narrower rights, turning them off apply.
    """
    if not new.enabled:
        return None
    if not running.enabled:
        return "hooks.enabled: a patch may not turn the webhooks on"
    agent = _first_new_or_any(new.allowed_agent_ids, running.allowed_agent_ids)
    if agent is not None:
        return (
            f"hooks.allowedAgentIds: a patch may not let the webhooks run another agent ({agent})"
        )
    if new.allow_request_session_key and not running.allow_request_session_key:
        return "hooks.allowRequestSessionKey: a patch may not let the webhooks choose their session"
    old_prefixes, prefixes = running.allowed_session_key_prefixes, new.allowed_session_key_prefixes
    if old_prefixes is not None:
        wider = "any" if prefixes is None else None
        if prefixes is not None:
            wider = next((p for p in prefixes if not p.startswith(old_prefixes)), None)
        if wider is not None:
            return (
                "hooks.allowedSessionKeyPrefixes: a patch may not allow a new session key prefix"
                f" ({wider})"
            )
    if running.allow_request_session_key and old_prefixes is None:
        return None  # callers may name any session already
    # Without prefixes, the hooks' own sessions are the `hook:` ones each call starts.
    key = _hook_default_key(new.default_session_key, agents)
    if key is None or key == _hook_default_key(running.default_session_key, agents):
        return None
    rest = key.split(":", 2)[-1]
    own = old_prefixes if old_prefixes is not None else ("hook:",)
    if not (key.startswith(own) or rest.startswith(own)):
        return (
            "hooks.defaultSessionKey: a patch may not point the webhooks at another session"
            f" ({key})"
        )
    return None


def _hook_default_key(raw: str | None, agents: AgentsConfig) -> str | None:
    """`hooks.defaultSessionKey` as the webhooks use it (hooks_wire.hook_session_key)."""
    if raw is None:
        return None
    try:
        return normalize_session_key(
            raw, agents.default_agent.id, agents.main_key, reject_reserved=True
        )
    except InvalidSessionKey:  # the loader refuses one (default_session_key_issues)
        return raw


def _first_new_or_any(new: tuple[str, ...] | None, running: tuple[str, ...] | None) -> str | None:
    """_first_new of two lists where None allows any: `any` when `new` alone is None."""
    if running is None:
        return None
    return "any" if new is None else _first_new(new, running)


def _first_new(new: tuple[str, ...], running: tuple[str, ...]) -> str | None:
    """The first entry of `new` that `running` does not hold, or None (`*` in `running`
    already allows any)."""
    if "*" in running:
        return None
    return next((entry for entry in new if entry not in running), None)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _written_bind(file: Mapping[str, Any]) -> str | None:
    """The address the file's `gateway.bind` names (checked when it was loaded), or None."""
    gateway = file.get("gateway")
    if not isinstance(gateway, Mapping):
        return BIND_HOSTS["loopback"]
    bind = gateway.get("bind", "loopback")
    if bind == "custom":
        host = gateway.get("customBindHost")
        return host if isinstance(host, str) else None
    return BIND_HOSTS.get(bind) if isinstance(bind, str) else None


def _newly_trusted(running: tuple[str, ...], new: tuple[str, ...]) -> str | None:
    """The first entry of `new` that trusts an address `running` does not, or None."""
    networks = [n for n in map(parse_network, running) if n is not None]
    for entry in new:
        network = parse_network(entry)
        if network is None or not any(
            network.version == old.version and network.subnet_of(old)  # type: ignore[arg-type]
            for old in networks
        ):
            return entry
    return None


@attrs.frozen
class PatchParams:
    raw: str
    base_hash: str | None

    @classmethod
    def parse(cls, r: ParamReader) -> PatchParams:
        raw = r.required_string("raw", non_empty=False)
        # Before any parse: json5's of a frame's 25 MiB would hold the config lock for minutes.
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
            raise r.fail(
                "raw",
                f"must be at most {MAX_CONFIG_BYTES} bytes (UTF-8), the most a config file"
                " may hold",
            )
        base_hash = r.string("baseHash")
        r.string("note")
        r.integer("restartDelayMs", minimum=0)
        return cls(raw, base_hash)


@attrs.frozen
class FileView:
    """What config.get says of the file on disk; `warnings` None: those of the running config."""

    exists: bool
    raw: str | None
    parsed: Any
    valid: bool
    hash: str | None
    issues: list[dict[str, str]]
    warnings: list[str] | None


def _file_view(
    current: FileState, parsed: ParsedFile | None, loader: ConfigLoader | None
) -> FileView:
    """The file's view from its parse (`parsed`, of `current.text`): the loader's checks after
    the parse run on every call, as they read the token file, secret files, the environment."""
    if not current.exists:
        return FileView(False, None, None, True, None, [], None)
    if current.text is None or parsed is None:  # unreadable or not UTF-8: as the loader says
        issue = ConfigIssue(FILE_LEVEL, current.problem or "not valid UTF-8")
        return FileView(True, None, None, False, current.hash, _issues((issue,)), [])
    raw, shown = parsed.raw, parsed.shown
    if loader is not None:
        if parsed.parsed is None:
            return FileView(True, raw, shown, False, current.hash, _issues(parsed.issues), [])
        try:
            config = loader.load_text(current.text, copy.deepcopy(parsed.parsed))
        except ConfigError as exc:
            return FileView(True, raw, shown, False, current.hash, _issues(exc.issues), [])
        return FileView(True, raw, shown, True, current.hash, [], _warnings(config))
    return FileView(True, raw, shown, True, current.hash, [], None)


async def _read_view(ctx: CallContext, path: Path, state_dir: Path) -> FileView:
    """The file's view. Its parse is shared by every call on the same text (ws/configfile.py);
    the reading and the checks run in threads, as json5's parse does."""
    current = await asyncio.to_thread(read_file, path, state_dir)
    parsed = None
    if current.text is not None and current.hash is not None:
        parsed = await ctx.ws.config_file.parse(current.text, current.hash, ctx.ws.spawn)
    return await asyncio.to_thread(_file_view, current, parsed, ctx.gateway.loader)


def _load_text(loader: ConfigLoader, text: str) -> Config:
    # The token it would run with is checked too: the file is written only if it applies.
    return with_token(loader.load_text(text))


def _parse_patch(raw: str) -> Any:
    try:
        patch = json5.loads(raw)
    except ValueError as exc:
        raise ParamsError(f"at /raw: not valid JSON5 ({exc})") from None
    except RecursionError:  # json5's parser recurses once per level of nesting
        raise ParamsError("at /raw: not valid JSON5 (nested too deeply)") from None
    if not isinstance(patch, dict):
        return patch
    issue = non_json_number(patch)  # the file is written as JSON
    if issue is not None:
        raise ParamsError(f"at /raw: {issue.path}: {issue.message}")
    return patch


async def _commit(
    state: GatewayState, loader: ConfigLoader, new: Config, text: str
) -> ReloadResult:
    """Write the file, then apply what it holds."""
    try:
        await asyncio.to_thread(write_atomic, loader.config_path, text)
    except OSError as exc:  # a read-only /etc (the systemd unit), a full disk
        reason = exc.strerror or str(exc)
        log.warning("config_patch_write_failed", path=str(loader.config_path), error=reason)
        raise WsError(UNAVAILABLE, f"cannot write the config file: {reason}") from None
    result = apply_config(state, new)
    for listener in list(state.config_written_listeners):
        listener()
    return result


def register(methods: MethodRegistry) -> None:
    @methods.method("config.get", params=no_params, scope=READ)
    async def config_get(ctx: CallContext, params: None) -> Any:
        state = ctx.gateway
        running = state.config
        path = state.loader.config_path if state.loader is not None else running.source.path
        view = await _read_view(ctx, path, running.state_dir)
        answer: dict[str, Any] = {"path": str(path), "exists": view.exists}
        answer["raw"], answer["parsed"] = view.raw, view.parsed
        # Once per loaded config, in a thread: each agent's entry repeats the default chain,
        # so a file of some KB can give MBs (ws/configfile.py).
        answer["config"] = await ctx.ws.running_config.shown(running, ctx.ws.spawn)
        answer["valid"] = view.valid
        answer["hash"] = view.hash
        answer["issues"] = view.issues
        answer["warnings"] = _warnings(running) if view.warnings is None else view.warnings
        # An answer over maxPayload (agents x fallbacks can reach it) is the dispatcher's
        # UNAVAILABLE error, as for every method (gateway/ws/dispatch.py).
        return answer

    @methods.method("config.patch", params=PatchParams.parse, scope=ADMIN, rate_limit=PATCH_RATE)
    async def config_patch(ctx: CallContext, params: PatchParams) -> Any:
        state = ctx.gateway
        loader = state.loader
        if loader is None:
            raise WsError(UNAVAILABLE, "config.patch is not available: no config file in use")
        # The parsing and checking run in threads, as config.get's do (_read_view).
        patch = await asyncio.to_thread(_parse_patch, params.raw)
        if not isinstance(patch, dict):
            raise WsError(INVALID_REQUEST, "config.patch raw must be an object")
        # Hash check to apply: no reload or patch between, here or in another worker.
        async with state.config_lock, writers_turn(loader.state_dir):
            current = await asyncio.to_thread(read_file, loader.config_path, loader.state_dir)
            warnings: list[str] = []
            if current.exists:
                if current.hash is None:  # unreadable: no hash to compare, nothing to merge into
                    issue = ConfigIssue(FILE_LEVEL, current.problem or "cannot read config file")
                    raise WsError(
                        INVALID_REQUEST, "invalid config", details={"issues": _issues((issue,))}
                    )
                if not params.base_hash:
                    raise WsError(
                        INVALID_REQUEST, "config base hash required; re-run config.get and retry"
                    )
                if params.base_hash != current.hash:
                    raise WsError(
                        INVALID_REQUEST,
                        "config changed since last load; re-run config.get and retry",
                    )
                base = None
                if current.text is not None:
                    base = await asyncio.to_thread(parse_object, current.text)
                if base is None:
                    problem = current.problem or "the config file is not a valid JSON5 object"
                    issue = ConfigIssue(FILE_LEVEL, problem)
                    raise WsError(
                        INVALID_REQUEST, "invalid config", details={"issues": _issues((issue,))}
                    )
                if current.text != render(base):
                    warnings.append(COMMENTS_LOST)
            elif state.config.source.exists and state.config.source.parsed is not None:
                # Gone since it was loaded (deleted, moved aside): patch what is in force.
                base = copy.deepcopy(dict(state.config.source.parsed))
            else:
                # No file yet: patch what is in force, the embedded default.
                base = json5.loads(embedded_default_text())
            try:
                merged = merge_patch(base, patch)
            except MarkerWithoutValue as exc:
                raise ParamsError(
                    f"at /raw: {exc.path}: {REDACTED} keeps a secret only where the file has"
                    " one; send the value itself"
                ) from None
            exposed = secrets_sent_elsewhere(base, patch, merged)
            if exposed:
                secret, address = exposed[0]
                raise ParamsError(
                    f"at /raw: {secret} must be sent again when {address} changes"
                    " (a redacted, omitted, ${VAR} or file-read secret is not sent to a new"
                    " address)"
                )
            text = render(merged)
            try:
                new = await asyncio.to_thread(_load_text, loader, text)
            except ConfigError as exc:
                raise WsError(
                    INVALID_REQUEST, "invalid config", details={"issues": _issues(exc.issues)}
                ) from None
            running = state.config.gateway
            weakened = (
                _weakened_auth(running, new.gateway)
                or _widened_exposure(running, new.gateway, _written_bind(base))
                or _widened_hooks(state.config.hooks, new.hooks, new.agents)
            )
            if weakened is not None:
                raise ParamsError(f"at /raw: {weakened}; only an edit of the file may do that")
            # Checking took a while (seconds for a large file): an edit saved meanwhile by
            # hand, which no lock keeps out, must not be replaced without a word.
            now = await asyncio.to_thread(read_file, loader.config_path, loader.state_dir)
            if (now.exists, now.hash) != (current.exists, current.hash):
                raise WsError(
                    INVALID_REQUEST, "config changed since last load; re-run config.get and retry"
                )
            # Once the file is being written the patch is done whether or not its client
            # stays: closing the socket cancels this call, but not the write's thread, and a
            # file written and never applied would leave the gateway on the old config (with
            # reload "off", until a restart) while config.get shows the new one. Under the
            # lock to the end: no other patch reads the file meanwhile.
            commit = asyncio.ensure_future(_commit(state, loader, new, text))
            try:
                result = await asyncio.shield(commit)
            except asyncio.CancelledError:
                await asyncio.wait((commit,))
                raise
        shown = await ctx.ws.running_config.shown(state.config, ctx.ws.spawn)
        return {
            "ok": True,
            "path": str(loader.config_path),
            "hash": new.source.hash,
            "config": shown,
            "restart": {
                "required": bool(result.restart_required),
                "paths": list(result.restart_required),
            },
            "warnings": [*warnings, *_warnings(new)],
        }
