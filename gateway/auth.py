"""Shared-secret auth for HTTP and WebSocket clients, the generated token, and the limiter.

Secrets are compared as sha256 digests with `hmac.compare_digest`, so neither the length nor
the content of the configured secret leaks through timing (http-openai.md §3).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import hmac
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path

import attrs
import structlog

from gateway.config.model import AuthConfig, Config, RateLimitConfig
from gateway.edge import client_key, parse_address, unmapped
from gateway.statedir import UnsafeStateError, prepare_state_dir, read_state_file

log = structlog.get_logger()

TOKEN_BYTES = 24  # 48 hex characters (config.md §5)
TOKEN_TEMP_PREFIX = ".gateway.token."  # the token is written there, then linked into place
# A temp file this old has no live writer (a token is written in milliseconds; a minute leaves
# room for a host that stalls on fsync): its writer died, and it is removed.
TOKEN_TEMP_STALE_S = 60.0


def secret_digest(secret: str) -> bytes:
    # surrogatepass: bytes that are not UTF-8 arrive as lone surrogates, in a header (aiohttp
    # decodes with surrogateescape) as in a configured secret (the environment, `\udce4` in
    # the file); they are part of the secret, not an encoding error.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def secret_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(secret_digest(given), secret_digest(expected))


# The digests of the configured secrets (the gateway's, the hook token; a rotated one for a
# while): one object per secret, which every known client that proved it refers to. Never
# for a presented secret, which is any string a client chooses.
_configured_digest = functools.lru_cache(maxsize=8)(secret_digest)


def bearer_secret(header: str | None) -> str | None:
    """The secret of `Authorization: Bearer <secret>`; scheme case-insensitive, trimmed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def ensure_token(state_dir: Path) -> tuple[str, bool]:
    """Read `<stateDir>/gateway.token`, creating it (0600, atomically) on first use.

    Returns the token and whether it was generated now. A symlink or non-file at that path
    raises UnsafeStateError: it is refused, never followed; so does a file we cannot write.
    """
    path = state_dir / "gateway.token"
    existing = _read_token(path)
    if existing:
        return existing, False
    token = secrets.token_hex(TOKEN_BYTES)
    tmp: Path | None = None
    try:
        # A name of its own (O_EXCL, 0600), not one made of the pid: gateways in containers
        # that share the state dir are all pid 1, and one would remove the other's file.
        fd, name = tempfile.mkstemp(prefix=TOKEN_TEMP_PREFIX, dir=state_dir)
        tmp = Path(name)
        try:
            os.write(fd, f"{token}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        # link() fails if another process created the file meanwhile: then its token wins.
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            existing = _read_token(path)
            if existing:
                return existing, False
        # A full or read-only file system, a state dir we may not write: not a traceback.
        raise UnsafeStateError(
            f"cannot write the token file {path}: {exc.strerror or exc}. Fix: make"
            f" {state_dir} writable, with free space, or configure a token"
            " ($OPENCLAW_GATEWAY_TOKEN or gateway.auth.token)."
        ) from None
    finally:
        # On a read-only file system even the unlink of a missing file fails (EROFS).
        with contextlib.suppress(OSError):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    _remove_stale_temp_files(state_dir)
    return token, True


def _remove_stale_temp_files(state_dir: Path) -> None:
    """Remove the temp files of writers that died (killed while writing the token): one is
    written in milliseconds, so a file older than TOKEN_TEMP_STALE_S has no live writer."""
    now = time.time()
    with contextlib.suppress(OSError):
        for temp in state_dir.glob(f"{TOKEN_TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if now - temp.lstat().st_mtime > TOKEN_TEMP_STALE_S:
                    temp.unlink()


def with_generated_token(config: Config) -> Config:
    """Token mode with no token anywhere: use (or create) `<stateDir>/gateway.token`.

    Raises UnsafeStateError (`run`, `token` and `call` exit 78) when the state dir or the
    token file is not safe: the same guard for every command that reads or writes the token.
    """
    auth = config.gateway.auth
    if auth.mode != "token" or auth.token:
        return config
    prepare_state_dir(config.state_dir)
    token, generated = ensure_token(config.state_dir)
    if generated:
        log.info("auth_token_generated", path=str(config.token_path))
    auth = attrs.evolve(auth, token=token, source="generated")
    return attrs.evolve(config, gateway=attrs.evolve(config.gateway, auth=auth))


def _read_token(path: Path) -> str | None:
    """The token in `path`, None when there is no file. A file that holds no token was not
    written by us (ours appear whole, by link()): it is refused, not replaced."""
    try:
        data = read_state_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        message = f"cannot read the token file {path}: {exc.strerror or exc}"
        if isinstance(exc, PermissionError):  # left by a tool run as another user, say
            message += (
                f". Fix: give the user running clawgate read access to it (`ls -l {path}`:"
                f" theirs, mode 600), or remove it (`rm {path}`) and a new token is generated."
            )
        raise UnsafeStateError(message) from None
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        defect = "is not valid UTF-8"
    else:
        if token:
            return token
        defect = "is empty"
    raise UnsafeStateError(
        f"the token file {path} {defect}. Fix: remove it (`rm {path}`) and a new token is"
        " generated, or write the token in it."
    )


def is_loopback(ip: str | None) -> bool:
    address = parse_address(ip) if ip else None
    return address is not None and unmapped(address).is_loopback


# The client key of an address, cached: every authenticated request records its success.
_key = functools.lru_cache(maxsize=4096)(client_key)


@attrs.define
class AuthRateLimiter:
    """Failed-auth limiter keyed by client IP, shared by HTTP and WebSocket connects.

    A sliding window of failures per IP; `max_attempts` failures within `window_ms` lock the
    IP out for `lockout_ms`. An IPv6 client is its /64 (`edge.client_key`). Settings can
    change on reload; the counters are kept.

    At most MAX_TRACKED clients have counts of their own. A count is never dropped while it
    matters (failures within the window, a lockout in force): forgetting one would hand an
    attacker with many addresses a fresh budget, and guessing without end. While the table is
    full, the failures of every other client count together, as one client's (`_overflow`),
    and when that client is locked out, so are all of them, whatever they present; the clients
    that presented the gateway's secret or the hook token before (the last MAX_TRACKED) keep
    counts of their own and get in meanwhile (README "Security").
    """

    settings: RateLimitConfig
    clock: Callable[[], float] = time.monotonic
    # Told the reason of every failed authentication, exempt clients' included (the
    # gateway's metrics); must not block.
    on_failure: Callable[[str], None] | None = None
    # Failures within the window, the least recently failing client first; a client that is
    # locked out moves to _locked_until, in the order its lockout ends (with one lockoutMs).
    _failures: dict[str, collections.deque[float]] = attrs.field(factory=dict)
    _locked_until: dict[str, float] = attrs.field(factory=dict)
    # Clients that presented the gateway's secret or the hook token, the least recent first,
    # with the digest of the secret they presented last; forgotten when that secret is
    # rotated (keep_known): the old secret proves nothing any more.
    _known: dict[str, bytes] = attrs.field(factory=dict)
    # The failures of the clients that found the table full, and their common lockout.
    _overflow: collections.deque[float] = attrs.field(factory=collections.deque)
    _overflow_locked_until: float = 0.0

    # Bound the memory a scan of many source addresses can take (known clients may add as
    # many again: their number is bounded too).
    MAX_TRACKED = 10_000

    def exempt(self, ip: str | None, *, browser: bool = False) -> bool:
        # A request with an Origin comes from a web page, which may be any site the user
        # visits: the loopback exemption is for local tools, never for pages.
        if not self.settings.enabled:
            return True
        return self.settings.exempt_loopback and not browser and is_loopback(ip)

    def retry_after(self, ip: str | None, *, browser: bool = False) -> int | None:
        """Seconds until the lockout of `ip` ends (rounded up), or None when not locked."""
        if ip is None or not (self._locked_until or self._overflow_locked_until):
            return None  # no lockout at all: every authenticated request's case
        if self.exempt(ip, browser=browser):
            return None
        ip = _key(ip)
        now = self.clock()
        until = self._locked_until.get(ip)
        if until is not None:
            if until > now:
                return max(1, math.ceil(until - now))
            del self._locked_until[ip]
        if self._overflow_locked_until > now:
            if self._in_overflow(ip, now):
                return max(1, math.ceil(self._overflow_locked_until - now))
        else:
            self._overflow_locked_until = 0.0  # ended: back to the quick way out above
        return None

    def record_failure(self, ip: str | None, *, browser: bool = False) -> None:
        if ip is None or self.exempt(ip, browser=browser):
            return
        ip = _key(ip)
        now = self.clock()
        # Taken out and put back at the end: the dict stays least recently failing first.
        failures = self._failures.pop(ip, None)
        if failures is None:
            if self._in_overflow(ip, now):
                if self._count(self._overflow, now):
                    self._overflow_locked_until = now + self.settings.lockout_ms / 1000
                return
            failures = collections.deque()
        if self._count(failures, now):
            self._locked_until.pop(ip, None)
            self._locked_until[ip] = now + self.settings.lockout_ms / 1000
        else:
            self._failures[ip] = failures

    def record_success(self, ip: str | None, proved: bytes, *, forgive: bool = True) -> None:
        """`ip` presented the secret of digest `proved`: it becomes a known client, and when
        `forgive`, its failures are cleared."""
        if ip is None:
            return
        ip = _key(ip)
        if forgive and self._failures:
            self._failures.pop(ip, None)
        known = self._known
        if ip in known:
            del known[ip]
        elif len(known) >= self.MAX_TRACKED:
            del known[next(iter(known))]
        known[ip] = proved  # the most recent last

    def keep_known(self, secrets: Iterable[str | None]) -> None:
        """Forget the known clients that proved a secret other than `secrets` (those in force
        after a reload): someone who knew only a rotated secret is no longer known."""
        current = {_configured_digest(secret) for secret in secrets if secret}
        if not current.issuperset(self._known.values()):
            self._known = {ip: proved for ip, proved in self._known.items() if proved in current}

    def _count(self, failures: collections.deque[float], now: float) -> bool:
        """Count a failure at `now`; True when it locks out (the failures are then cleared)."""
        failures.append(now)
        while failures and failures[0] <= now - self.settings.window_ms / 1000:
            failures.popleft()
        if len(failures) < self.settings.max_attempts:
            return False
        failures.clear()
        return True

    def _in_overflow(self, ip: str, now: float) -> bool:
        """Whether `ip`, which has no count of its own, counts in the overflow: the table is
        full of counts that matter, and it is no known client."""
        if ip in self._failures or ip in self._known:
            return False
        self._forget_stale(now)
        return len(self._failures) + len(self._locked_until) >= self.MAX_TRACKED

    def _forget_stale(self, now: float) -> None:
        # From the front of each dict, so each entry is looked at once. After a reload that
        # shortened windowMs or lockoutMs the order may be off: some stale entries then wait
        # for those before them, which only delays their place in the table.
        window = self.settings.window_ms / 1000
        failures = self._failures
        while failures:
            ip, times = next(iter(failures.items()))
            if times and times[-1] > now - window:
                break
            del failures[ip]
        locked = self._locked_until
        while locked:
            ip, until = next(iter(locked.items()))
            if until > now:
                break
            del locked[ip]


# --- The one credential check of HTTP, WebSocket and probes (http-openai.md §3, ws §5.1) ---


class AuthFailureReason(StrEnum):
    LOCKED_OUT = "locked_out"  # too many failures from this address: nothing else is looked at
    MISSING = "missing"  # no secret presented: not counted, a client that forgot is no attacker
    MISMATCH = "mismatch"  # a wrong secret: counted


@attrs.frozen
class Authenticated:
    mode: str  # "token", "password" or "none"


@attrs.frozen
class AuthFailure:
    reason: AuthFailureReason
    retry_after: int | None = None  # seconds, with LOCKED_OUT


def authenticate(
    auth: AuthConfig,
    limiter: AuthRateLimiter,
    presented: str | None,
    client: str | None,
    *,
    browser: bool,
    forgives: bool = True,
) -> Authenticated | AuthFailure:
    """The one credential check (`_check_secret` says how); each failure is also told to
    `limiter.on_failure`, so failed attempts are counted in one place. A success makes the
    address a known client; it clears the address's failures only when `forgives`: the hook
    token, a second secret that counts in the same limiter, must not buy its holder unlimited
    guesses at the gateway's."""
    outcome = _check_secret(auth, limiter, presented, client, browser=browser, forgives=forgives)
    if isinstance(outcome, AuthFailure) and limiter.on_failure is not None:
        limiter.on_failure(outcome.reason)
    return outcome


def _check_secret(
    auth: AuthConfig,
    limiter: AuthRateLimiter,
    presented: str | None,
    client: str | None,
    *,
    browser: bool,
    forgives: bool,
) -> Authenticated | AuthFailure:
    """The shared-secret check for every transport, in the order the spec gives: the
    lockout before the secret (a locked-out address learns nothing), and only a wrong secret
    counts as a failure. `client` is the client's address (after trusted proxies);
    `browser` says an Origin header came with the request, which is never exempt."""
    if auth.mode == "none":
        return Authenticated(auth.mode)
    retry_after = limiter.retry_after(client, browser=browser)
    if retry_after is not None:
        return AuthFailure(AuthFailureReason.LOCKED_OUT, retry_after)
    if not presented:
        return AuthFailure(AuthFailureReason.MISSING)
    expected = auth.secret
    proved = None if expected is None else _configured_digest(expected)
    if proved is None or not hmac.compare_digest(secret_digest(presented), proved):
        limiter.record_failure(client, browser=browser)
        return AuthFailure(AuthFailureReason.MISMATCH)
    limiter.record_success(client, proved, forgive=forgives)
    return Authenticated(auth.mode)
