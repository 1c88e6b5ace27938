"""Reading the config file: where it is, JSON5, `${VAR}`, validation, env and flags, redaction.

config.md is the contract (§1 resolution, §3 substitution, §4/§4a schema, §6 issues, §6.1 guards).
One load runs

    text -json5-> parsed -schema walk-> normalized -refs, ids-> -env, flags-> Config -guards

The schema walk substitutes `${VAR}` in the strings it reads, checks each value, and fills in the
defaults, producing a plain dict in the file's own shape ("normalized"). Every problem is recorded
as a ConfigIssue at its dotted path and all of them are raised together as one ConfigError, in
document order. Nothing here writes to disk: the generated token is the CLI's job (§5).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.resources
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import json5

from agents.config import (
    API_ANTHROPIC_MESSAGES,
    API_OPENAI_COMPLETIONS,
    DEFAULT_MAX_DISK_BYTES,
    ECHO_PROVIDER,
    AgentConfig,
    AgentsConfig,
    MaintenanceConfig,
    ModelEntry,
    ModelRef,
    ProviderConfig,
)
from gateway.config import (
    DEFAULT_ALLOWED_MIMES,
    DEFAULT_SESSION_HEADERS,
    AuthConfig,
    ChatCompletionsConfig,
    Config,
    ConfigSource,
    ConfigWarning,
    GatewayConfig,
    HooksConfig,
    HttpConfig,
    ImagesConfig,
    LoggingConfig,
    PreAuthConfig,
    RateLimitConfig,
    StoreConfig,
)
from gateway.edge import normalize_origin, parse_network, split_host
from gateway.statedir import UnsafeStateError, read_state_file

REDACTED = "__OPENCLAW_REDACTED__"
EMBEDDED_DEFAULT = "<embedded default>"  # ConfigError.location when the embedded default failed
FILE_LEVEL = "<file>"  # the issue path of a problem with the file as a whole (§6)
CONFIG_FILE_NAME = "clawgate.json5"
DEFAULT_STATE_DIR = "~/.clawgate"
DEFAULT_PORT = 18789
ID_PATTERN = "[a-z0-9][a-z0-9_-]{0,63}"
IGNORED_REASON = "not implemented by clawgate"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
IMPLEMENTED_APIS = (API_OPENAI_COMPLETIONS, API_ANTHROPIC_MESSAGES)
MAX_SAFE_INTEGER = 2**53 - 1  # http-openai.md §5: OpenClaw checks max_tokens as a JS safe integer
MAX_STOP_SEQUENCES = 4  # OpenAI's limit, http-openai.md §5
MIB = 1024 * 1024

_ID_RE = re.compile(ID_PATTERN, re.IGNORECASE)
# `$${VAR}` is matched too (one leading `$` more) so that it can be turned into a literal `${VAR}`.
_ENV_REF_RE = re.compile(r"\$?\$\{([A-Z_][A-Z0-9_]*)\}")
# At most 20 digits (beyond any sensible value): int() refuses strings over 4,300 digits with
# a ValueError, which would escape validation.
_DURATION_RE = re.compile(r"([0-9]{1,20})(ms|s|m|h|d)")
_DURATION_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_BYTE_SIZE_RE = re.compile(r"([0-9]{1,20})\s*(b|kb|mb|gb|tb)")
_BYTE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_PORT_RE = re.compile(r"[0-9]{1,5}")
_JSON5_ERROR_RE = re.compile(r"<string>:\d+ (Unexpected .*) at column \d+", re.DOTALL)


# --- Public values ---------------------------------------------------------------------------


@attrs.frozen
class ConfigIssue:
    """One problem that keeps the config from loading, at a dotted path (`agents.list[0].id`)."""

    path: str
    message: str

    def line(self) -> str:
        return f"- {self.path}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `render()` is what the CLI prints before exiting 78."""

    def __init__(self, location: str, issues: Sequence[ConfigIssue]) -> None:
        self.location = location  # the file path, or EMBEDDED_DEFAULT
        self.issues = tuple(issues)
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join([f"Invalid config at {self.location}:", *(i.line() for i in self.issues)])


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
    # the next reload. Each excludes its plain flag (the CLI's argparse says so).
    token_file: str | None = None
    password_file: str | None = None


_NO_OVERRIDES = Overrides()


class SecretFileError(Exception):
    """--token-file/--password-file cannot give a secret; the message says why."""


def read_secret_file(path: str) -> str:
    """The first line of `path`, its line ending stripped; an empty one is an error.

    The file's permissions are not checked: it is the operator's, and container secret mounts
    (Docker's /run/secrets, Kubernetes' volumes) are 0444 and often symlinks, in a mount
    namespace of their own.
    """
    try:
        with open(path, "rb") as file:
            first = file.readline()
    except OSError as exc:
        raise SecretFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        secret = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} is not valid UTF-8") from None
    if not secret:
        raise SecretFileError(f"{path} is empty (the secret is its first line)")
    return secret


# --- Loading ---------------------------------------------------------------------------------


class ConfigLoader:
    """Finds, reads and checks the config; the CLI, the hot reloader and `config.patch` share one.

    The paths are resolved once, here; `load()` reads the file (and the environment) again on
    every call, which is what a reload wants.
    """

    def __init__(
        self, overrides: Overrides = _NO_OVERRIDES, environ: Mapping[str, str] | None = None
    ) -> None:
        self.overrides = overrides
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        state_dir = overrides.state_dir or _env(self.environ, "CLAWGATE_STATE_DIR")
        self.state_dir: Path = _absolute(state_dir or DEFAULT_STATE_DIR, self.environ)
        explicit = overrides.config_path or _env(self.environ, "CLAWGATE_CONFIG")
        self.explicit_path: bool = explicit is not None
        self.config_path: Path = (
            _absolute(explicit, self.environ) if explicit else self.state_dir / CONFIG_FILE_NAME
        )

    def load(self) -> Config:
        """The config in force: the file, else (at the default path only) the embedded default."""
        location = str(self.config_path)
        try:
            data = self._read_config()
        except UnsafeStateError as exc:
            raise ConfigError(location, [ConfigIssue(FILE_LEVEL, str(exc))]) from None
        except FileNotFoundError:
            if self.explicit_path:
                message = f"config file not found: {self.config_path}"
                raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
            source = ConfigSource(self.config_path, exists=False)
            return self._check(embedded_default_text(), EMBEDDED_DEFAULT, source)
        except OSError as exc:
            message = f"cannot read config file: {exc.strerror or exc}"
            raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
        try:
            text = data.decode("utf-8-sig")  # an editor's BOM is not a syntax error
        except UnicodeDecodeError as exc:
            message = f"not valid UTF-8 (byte {exc.start})"
            raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
        source = ConfigSource(self.config_path, exists=True, raw=text, hash=_sha256(data))
        return self._check(text, location, source)

    def _read_config(self) -> bytes:
        # In the state dir a symlink is refused, as for the token and the database; a file the
        # administrator named elsewhere (/etc, often a link from config management) is followed.
        if self.config_path.parent == self.state_dir:
            return read_state_file(self.config_path)
        return self.config_path.read_bytes()

    def load_text(self, text: str) -> Config:
        """The config `text` would give if it were the file (config.patch checks before writing)."""
        data = text.encode("utf-8")
        source = ConfigSource(self.config_path, exists=True, raw=text, hash=_sha256(data))
        return self._check(text, str(self.config_path), source)

    def _check(self, text: str, location: str, source: ConfigSource) -> Config:
        parsed = _parse(text, location)
        if source.exists:
            source = attrs.evolve(source, parsed=parsed)
        ctx = _Checker(self.environ, _expandable_paths(parsed))
        normalized = _ROOT.check(parsed, "", ctx)
        _check_model_refs(ctx, _dig(normalized, "models", "providers"))
        _check_agent_list(ctx, _dig(normalized, "agents", "list"))
        if not source.exists and _has_secret_flag(self.overrides):
            # The embedded default's `mode: "token"` is a default, not the operator's word:
            # `clawgate run --password P` without a file means password mode.
            normalized["gateway"]["auth"].pop("mode", None)
        _check_embedding_model(ctx, normalized)
        _check_hooks(ctx, normalized.get("hooks"))
        _check_store(ctx, normalized.get("store"))
        _apply_overrides(normalized["gateway"], self.overrides, self.environ, ctx)
        _check_hooks_token(ctx, normalized)
        if ctx.issues:
            raise ConfigError(location, ctx.sorted_issues())
        gateway = _gateway_config(normalized["gateway"])
        if gateway.reload_mode == "restart":
            ctx.warn("gateway.reload.mode", 'clawgate never restarts itself; acts as "hybrid"')
        config = Config(
            gateway=gateway,
            agents=_agents_config(normalized),
            logging=LoggingConfig(**normalized["logging"]),
            source=source,
            state_dir=self.state_dir,
            warnings=ctx.sorted_warnings(),
            hooks=_hooks_config(normalized["hooks"]),
            store=_store_config(normalized["store"]),
        )
        guard_issues = _startup_guards(config.gateway)
        if guard_issues:
            raise ConfigError(location, guard_issues)
        return config


def _expandable_paths(parsed: Mapping[str, Any]) -> frozenset[str]:
    """The dotted paths of the secret strings, where `${VAR}` may be expanded.

    Anywhere else the expanded value would be shown by `config.get` (or sent where a reader
    sees it): a `config.patch` writing `name: "${OPENAI_API_KEY}"` would read the key. A dotted
    path can stand for two places (a key with a dot in it); it is expandable only if every
    place it stands for is a secret, so nothing expanded is ever shown unredacted.
    """
    secret: dict[str, bool] = {}

    def walk(value: Any, path: tuple[_PathKey, ...], dotted: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, (*path, key), _join(dotted, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i), f"{dotted}[{i}]")
        elif isinstance(value, str):
            secret[dotted] = secret.get(dotted, True) and _is_secret_path(path)

    walk(parsed, (), "")
    return frozenset(dotted for dotted, is_secret in secret.items() if is_secret)


def embedded_default_text() -> str:
    return (importlib.resources.files("gateway") / "default.json5").read_text(encoding="utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """A variable of §2: trimmed, and empty counts as unset."""
    value = environ.get(name, "").strip()
    return value or None


def _absolute(text: str, environ: Mapping[str, str]) -> Path:
    """`~` expanded (from $HOME in `environ`), relative to the working directory, `..` folded."""
    if text == "~" or text.startswith("~/"):
        text = (environ.get("HOME") or str(Path.home())) + text[1:]
    else:
        text = os.path.expanduser(text)  # `~user/…`
    return Path(os.path.abspath(text))


def _parse(text: str, location: str) -> dict[str, Any]:
    try:
        value, error, pos = json5.parse(text)
    except ValueError:  # json5 refuses the empty string outright, without a position
        value, error, pos = None, "Unexpected end of input", 0
    if error is not None:
        line, column = _line_column(text, pos)
        message = f"JSON5 syntax error: {_syntax_message(error)} (line {line}, column {column})"
        raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)])
    if not isinstance(value, dict):
        raise ConfigError(location, [ConfigIssue(FILE_LEVEL, _wrong_type("object", value))])
    return value


def _syntax_message(error: str) -> str:
    """json5's `<string>:3 Unexpected "b" at column 3` without the position (we add our own)."""
    match = _JSON5_ERROR_RE.fullmatch(error)
    if match is None:
        return error
    thing = match[1]
    if thing.startswith('Unexpected "') and len(thing) == len('Unexpected "x"'):
        # Show a newline or tab as `"\n"`, so that the issue stays on one line.
        thing = "Unexpected " + json.dumps(thing[-2], ensure_ascii=False)
    return thing


def _line_column(text: str, pos: int) -> tuple[int, int]:
    """1-based, counted the way json5 counts them (every character is one column)."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


# --- The schema walk -------------------------------------------------------------------------


class _Invalid:
    """A value that failed its check; the issue is already recorded."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Final = _Invalid()


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong_type(expected: str, value: Any) -> str:
    return f"expected {expected}, got {_type_name(value)}"


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _is_int(value: Any) -> bool:
    # A JSON integer only: `true` is not 1, and `1.0` (a float after parsing) is a number.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


@attrs.define
class _Checker:
    """What one schema walk has found so far."""

    environ: Mapping[str, str]
    # The dotted paths of the strings in which `${VAR}` is expanded: those of secrets.
    expandable: frozenset[str] = frozenset()
    issues: list[ConfigIssue] = attrs.Factory(list)
    warnings: list[ConfigWarning] = attrs.Factory(list)
    # Where each path sits in the document (pre-order), so that issues found after the walk
    # (model refs, duplicate ids, env, flags) can be sorted into document order.
    positions: dict[str, int] = attrs.Factory(dict)
    # Every model ref read, checked against the providers once all of them are known.
    model_refs: list[tuple[str, ModelRef]] = attrs.Factory(list)

    def visit(self, path: str) -> None:
        self.positions.setdefault(path, len(self.positions))

    def issue(self, path: str, message: str) -> _Invalid:
        self.issues.append(ConfigIssue(path, message))
        return _INVALID

    def warn(self, path: str, message: str, *, event: str = "config_warning") -> None:
        self.warnings.append(ConfigWarning(path, message, event))

    def wrong_type(self, path: str, expected: str, value: Any) -> _Invalid:
        return self.issue(path, _wrong_type(expected, value))

    def string(self, value: Any, path: str) -> str | _Invalid:
        if not isinstance(value, str):
            return self.wrong_type(path, "string", value)
        return self.substitute(value, path)

    def substitute(self, text: str, path: str) -> str | _Invalid:
        """§3: `${VAR}` from the environment; `$${VAR}` is the literal `${VAR}`."""
        missing: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name = match[1]
            if match[0].startswith("$$"):
                return match[0][1:]
            value = self.environ.get(name, "")
            if not value and name not in missing:
                missing.append(name)
            return value

        references = [m[0] for m in _ENV_REF_RE.finditer(text) if not m[0].startswith("$$")]
        if references and path not in self.expandable:
            message = (
                f"{references[0]} is not expanded here: environment variables are expanded"
                " only in secret values (a token, password, key or header value)"
            )
            return self.issue(path, message)
        result = _ENV_REF_RE.sub(replace, text)
        for name in missing:
            self.issue(path, f'Missing env var "{name}" referenced at config path: {path}')
        return _INVALID if missing else result

    def plain(self, value: Any, path: str) -> Any:
        """A free-form value (extra provider params): substituted, otherwise taken as it is."""
        if isinstance(value, str):
            return self.substitute(value, path)
        if isinstance(value, list):
            return [self.plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {key: self.plain(item, _join(path, key)) for key, item in value.items()}
        return value

    def sorted_issues(self) -> list[ConfigIssue]:
        return sorted(self.issues, key=lambda issue: self._position(issue.path))

    def sorted_warnings(self) -> tuple[ConfigWarning, ...]:
        return tuple(sorted(self.warnings, key=lambda warning: self._position(warning.path)))

    def _position(self, path: str) -> int:
        # A path that is not in the document (a missing required key) sorts with the object
        # that should hold it; one outside it entirely (env, flags) after everything in it.
        # sorted() is stable, so issues at one place keep the order they were found in.
        while path:
            if path in self.positions:
                return self.positions[path]
            path = _parent(path)
        return len(self.positions)


class _Node:
    """A place in the schema: checks the value found there and returns it normalized."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        raise NotImplementedError


def _in_range(value: Any, low: float | None, high: float | None, path: str, ctx: _Checker) -> Any:
    if low is not None and high is not None:
        if not low <= value <= high:  # written so that NaN fails too
            return ctx.issue(path, f"must be between {low} and {high} (got {_show(value)})")
    elif low is not None and not value >= low:
        return ctx.issue(path, f"must be >= {low} (got {_show(value)})")
    return value


@attrs.frozen
class _Int(_Node):
    low: int | None = None
    high: int | None = None

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not _is_int(value):
            return ctx.wrong_type(path, "integer", value)
        return _in_range(value, self.low, self.high, path, ctx)


@attrs.frozen
class _Number(_Node):
    low: float | None = None
    high: float | None = None

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not _is_number(value):
            return ctx.wrong_type(path, "number", value)
        return _in_range(value, self.low, self.high, path, ctx)


@attrs.frozen
class _Bool(_Node):
    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not isinstance(value, bool):
            return ctx.wrong_type(path, "boolean", value)
        return value


@attrs.frozen
class _FalseOnly(_Node):
    """A boolean clawgate cannot honour when true: a warning, and it counts as false."""

    warning: str

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not isinstance(value, bool):
            return ctx.wrong_type(path, "boolean", value)
        if value:
            ctx.warn(path, self.warning)
        return False


@attrs.frozen
class _Str(_Node):
    non_empty: bool = False

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if self.non_empty and text == "":
            return ctx.issue(path, "must not be empty")
        return text


@attrs.frozen
class _Choice(_Node):
    values: tuple[str, ...]
    aliases: Mapping[str, str] = attrs.field(factory=dict)  # OpenClaw spellings we accept
    refused: Mapping[str, str] = attrs.field(factory=dict)  # OpenClaw values we cannot serve

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        if text in self.refused:
            return ctx.issue(path, self.refused[text])
        if text in self.values:
            return text
        if text in self.aliases:
            return self.aliases[text]
        accepted = ", ".join(_show(v) for v in (*self.values, *self.aliases))
        return ctx.issue(path, f"must be one of {accepted} (got {_show(text)})")


@attrs.frozen
class _Duration(_Node):
    """`"30d"`, `"12h"`, `"90m"`, `"45s"` (and `"500ms"`), or integer milliseconds; in ms."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if _is_int(value):
            return _in_range(value, 0, None, path, ctx)
        if not isinstance(value, str):
            return ctx.wrong_type(path, "string or integer", value)
        text = ctx.substitute(value, path)
        if isinstance(text, _Invalid):
            return text
        match = _DURATION_RE.fullmatch(text.strip())
        if match is None:
            return ctx.issue(
                path,
                'must be a duration like "30d", "12h", "90m", "45s" or integer milliseconds'
                f" (got {_show(text)})",
            )
        return int(match[1]) * _DURATION_UNIT_MS[match[2]]


@attrs.frozen
class _ByteSize(_Node):
    """`"500mb"`, `"10gb"`, `"64kb"`, `"100b"` (binary units), integer bytes, or `false` (0)."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if value is False:
            return 0
        if _is_int(value):
            return _in_range(value, 0, None, path, ctx)
        if not isinstance(value, str):
            return ctx.wrong_type(path, "string, integer or false", value)
        text = ctx.substitute(value, path)
        if isinstance(text, _Invalid):
            return text
        match = _BYTE_SIZE_RE.fullmatch(text.strip().lower())
        if match is None:
            return ctx.issue(
                path,
                f'must be a size like "500mb", "10gb", "64kb" or integer bytes (got {_show(text)})',
            )
        return int(match[1]) * _BYTE_UNITS[match[2]]


@attrs.frozen
class _Url(_Node):
    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        try:
            parts = urlsplit(text)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # e.g. an unbalanced `[` in the host
            valid = False
        if not valid:
            return ctx.issue(path, f"must be an http(s) URL (got {_show(text)})")
        return text


@attrs.frozen
class _List(_Node):
    item: _Node

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not isinstance(value, list):
            return ctx.wrong_type(path, "array", value)
        items = []
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            ctx.visit(item_path)
            items.append(self.item.check(item, item_path, ctx))
        return items


@attrs.frozen
class _Map(_Node):
    """An object whose keys are names the user chooses (provider ids, header names)."""

    value: _Node
    # The problem with a key, or None; a key with a problem is left out.
    key_problem: Callable[[str], str | None] | None = None

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        entries = {}
        for key, item in value.items():
            item_path = _join(path, key)
            ctx.visit(item_path)
            problem = self.key_problem(key) if self.key_problem else None
            if problem is not None:
                ctx.issue(item_path, problem)
                continue
            entries[key] = self.value.check(item, item_path, ctx)
        return entries


@attrs.frozen
class _Origin(_Node):
    """An exact browser origin, `scheme://host[:port]`; stored normalized (lowercase)."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        origin = normalize_origin(text)
        if origin is None:
            return ctx.issue(
                path, f"must be an origin like https://host[:port] (got {_show(text)})"
            )
        return origin


@attrs.frozen
class _HostName(_Node):
    """A host name or address as a Host header names it, without port; stored lowercase."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        candidate = text.strip()
        if candidate.startswith("[") and candidate.endswith("]"):
            candidate = candidate[1:-1]
        if ":" in candidate:  # only an IPv6 address has one: a port is not allowed
            try:
                host: str | None = str(ipaddress.IPv6Address(candidate))
            except ValueError:
                host = None
        else:
            host = split_host(candidate)
        if host is None:
            return ctx.issue(
                path, f"must be a host name or address without port (got {_show(text)})"
            )
        return host


@attrs.frozen
class _Network(_Node):
    """An IP address or a CIDR network."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        if parse_network(text) is None:
            return ctx.issue(path, f"must be an IP address or CIDR (got {_show(text)})")
        return text.strip()


_ABSENT: Final = object()  # a key with no default is left out of the normalized dict


@attrs.frozen
class _Key:
    node: _Node
    default: Any = _ABSENT
    required: bool = False


@attrs.frozen
class _Section(_Node):
    """An object with known keys (ours) and ignored keys (OpenClaw's, §4a); others are issues."""

    keys: Mapping[str, _Key]
    ignored: tuple[str, ...] = ()
    notes: Mapping[str, str] = attrs.field(factory=dict)  # added to an ignored key's warning

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        normalized = {}
        for key, item in value.items():
            key_path = _join(path, key)
            ctx.visit(key_path)
            if key == "$include":
                ctx.issue(key_path, "$include is not supported by clawgate")
            elif key in self.keys:
                normalized[key] = self.keys[key].node.check(item, key_path, ctx)
            elif key in self.ignored:
                note = self.notes.get(key)
                reason = f"{IGNORED_REASON}; {note}" if note else IGNORED_REASON
                ctx.warn(key_path, reason, event="config_key_ignored")
            else:
                ctx.issue(key_path, self._unknown_key(key))
        for key, spec in self.keys.items():
            if key in value:
                continue
            if spec.required:
                ctx.issue(_join(path, key), "is required")
            elif isinstance(spec.node, _Section | _FalseOr):
                normalized[key] = spec.node.check({}, _join(path, key), ctx)
            elif spec.default is not _ABSENT:
                normalized[key] = spec.default
        return normalized

    def _unknown_key(self, key: str) -> str:
        known = [*self.keys, *self.ignored]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        return f'unknown key (did you mean "{close[0]}"?)' if close else "unknown key"


@attrs.frozen
class _FalseOr(_Node):
    """`false` switches a feature off; anything else must be its section (`auth.rateLimit`)."""

    section: _Section

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if value is False:
            return False
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object or false", value)
        return self.section.check(value, path, ctx)


def _id_problem(what: str, text: str) -> str | None:
    if _ID_RE.fullmatch(text) is None:
        return f'invalid {what} id "{text}" (expected {ID_PATTERN})'
    return None


@attrs.frozen
class _AgentId(_Node):
    """Matched case-insensitively, stored lowercase."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        problem = _id_problem("agent", text)
        return ctx.issue(path, problem) if problem else text.lower()


def _provider_id_problem(key: str) -> str | None:
    if key == ECHO_PROVIDER:
        return f'"{ECHO_PROVIDER}" is reserved for the built-in provider'
    # Matched as written: model refs name providers exactly, so "OpenAI" would never be found.
    if re.fullmatch(ID_PATTERN, key) is None:
        return f'invalid provider id "{key}" (expected {ID_PATTERN})'
    return None


@attrs.frozen
class _ModelRefNode(_Node):
    """`"provider/model"`; whether the provider and model exist is checked after the walk."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        try:
            ref = ModelRef.parse(text)
        except ValueError as exc:
            return ctx.issue(path, str(exc))
        ctx.model_refs.append((path, ref))
        return ref


_MODEL_REF = _ModelRefNode()
_MODEL_CHAIN = _Section(
    {
        "primary": _Key(_MODEL_REF, required=True),
        "fallbacks": _Key(_List(_MODEL_REF), ()),
    }
)


@attrs.frozen
class _ModelSpec(_Node):
    """`"provider/model"` or `{primary, fallbacks}`; normalized to the chain, primary first."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if isinstance(value, str):
            ref = _MODEL_REF.check(value, path, ctx)
            return ref if isinstance(ref, _Invalid) else [ref]
        if isinstance(value, dict):
            chain = _MODEL_CHAIN.check(value, path, ctx)
            fallbacks = chain.get("fallbacks", _INVALID)
            if isinstance(fallbacks, _Invalid):
                return fallbacks
            refs = [chain.get("primary", _INVALID), *fallbacks]
            return _INVALID if any(isinstance(r, _Invalid) for r in refs) else refs
        return ctx.wrong_type(path, "string or object", value)


_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


@attrs.frozen
class _HeaderName(_Node):
    """An HTTP header name, kept lowercased."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        if _HEADER_NAME_RE.fullmatch(text) is None:
            return ctx.issue(path, f'not a header name: "{text}"')
        return text.lower()


@attrs.frozen
class _Stop(_Node):
    """OpenAI's `stop`: a non-empty string or up to 4 of them."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        problem = f"must be a non-empty string or an array of at most {MAX_STOP_SEQUENCES}"
        problem += " non-empty strings"
        items = value if isinstance(value, list) else [value]
        if len(items) > MAX_STOP_SEQUENCES or not all(isinstance(s, str) and s for s in items):
            return ctx.issue(path, problem)
        return ctx.plain(value, path)


@attrs.frozen
class _Params(_Node):
    """`agents.list[].params`: known sampling keys are checked, other keys pass through."""

    known: Mapping[str, _Node]

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        params = {}
        for key, item in value.items():
            item_path = _join(path, key)
            ctx.visit(item_path)
            node = self.known.get(key)
            params[key] = node.check(item, item_path, ctx) if node else ctx.plain(item, item_path)
        return params


@attrs.frozen
class _IgnoredProvider:
    """A provider whose `api` clawgate does not implement: loads, but no agent may use it."""

    api: str


@attrs.frozen
class _Provider(_Node):
    section: _Section

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        api_path = _join(path, "api")
        if "api" in value:
            api = ctx.string(value["api"], api_path)
            if isinstance(api, _Invalid):
                return api
            if api not in IMPLEMENTED_APIS:
                ctx.warn(api_path, f'api "{api}" is not implemented; provider ignored')
                return _IgnoredProvider(api)
        provider = self.section.check(value, path, ctx)
        if isinstance(provider, dict) and "baseUrl" not in provider:
            if provider["api"] == API_OPENAI_COMPLETIONS:
                ctx.issue(_join(path, "baseUrl"), "is required")
            else:
                provider["baseUrl"] = ANTHROPIC_BASE_URL
        return provider


# --- `hooks` and `agents.defaults.embeddingModel` ------------------------------------------


@attrs.frozen
class _EmbeddingModelRef(_Node):
    """`"provider/model"`; the provider is checked after the walk (_check_embedding_model).
    Unlike an agent's model it need not be in the provider's `models`, which lists chat models."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        try:
            return ModelRef.parse(text)
        except ValueError as exc:
            return ctx.issue(path, str(exc))


# Paths the gateway serves itself: a hooks path over them would shadow them.
_OWN_PATHS = ("/v1", "/health", "/healthz", "/ready", "/readyz")
_HOOKS_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")


@attrs.frozen
class _HooksPath(_Node):
    """OpenClaw's normalization: one leading slash, no trailing one, never `/` alone."""

    def check(self, value: Any, path: str, ctx: _Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, _Invalid):
            return text
        text = "/" + text.strip().strip("/")
        if text == "/":
            return ctx.issue(path, 'may not be "/"')
        if _HOOKS_PATH_RE.fullmatch(text) is None:
            return ctx.issue(path, f"must be a URL path like /hooks (got {_show(text)})")
        if any(text == own or text.startswith(own + "/") for own in _OWN_PATHS):
            return ctx.issue(path, f"must not be under one of clawgate's own paths (got {text})")
        return text


_HOOKS = _Section(
    {
        "enabled": _Key(_Bool(), False),
        "token": _Key(_Str()),  # required when enabled (_check_hooks)
        "path": _Key(_HooksPath(), "/hooks"),
        "maxBodyBytes": _Key(_Int(1), 256 * 1024),  # OpenClaw's default
        "waitTimeoutSeconds": _Key(_Int(1), 120),
        "allowedAgentIds": _Key(_List(_Str())),
        "defaultSessionKey": _Key(_Str(non_empty=True)),
        "allowRequestSessionKey": _Key(_Bool(), False),
        "allowedSessionKeyPrefixes": _Key(_List(_Str(non_empty=True))),
    },
    ignored=("presets", "transformsDir", "mappings", "gmail", "internal"),
    notes={"mappings": "only /agent and /wake are served"},
)


# `store`: the SQLite file in the state dir (one process), or a PostgreSQL database that
# every process and host shares. The password is a secret key (`${VAR}` allowed) or a file.
_STORE = _Section(
    {
        "backend": _Key(_Choice(("sqlite", "postgres")), "sqlite"),
        "url": _Key(_Str(non_empty=True)),
        "password": _Key(_Str(non_empty=True)),
        "passwordFile": _Key(_Str(non_empty=True)),
        "poolSize": _Key(_Int(1, 1000), 10),
    }
)


def _check_store(ctx: _Checker, store: Any) -> None:
    if not isinstance(store, dict) or isinstance(store.get("backend"), _Invalid):
        return
    url = store.get("url")
    if store["backend"] == "sqlite":
        for key in ("url", "password", "passwordFile"):
            if key in store:
                ctx.issue(f"store.{key}", 'applies to the "postgres" backend only')
        return
    if url is None:
        ctx.issue("store.url", 'is required with the "postgres" backend')
    elif isinstance(url, str) and not _is_postgres_url(url):
        ctx.issue("store.url", "must be a postgresql:// URL with a host")
    if "password" in store and "passwordFile" in store:
        ctx.issue("store.passwordFile", "give password or passwordFile, not both")
    elif isinstance(store.get("passwordFile"), str):
        try:
            store["password"] = read_secret_file(store.pop("passwordFile"))
        except SecretFileError as exc:
            ctx.issue("store.passwordFile", str(exc))


def _is_postgres_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("postgresql", "postgres") and bool(parts.hostname)
    except ValueError:  # e.g. an unbalanced `[` in the host
        return False


def _store_config(store: dict[str, Any]) -> StoreConfig:
    return StoreConfig(
        backend=store["backend"],
        url=store.get("url"),
        password=store.get("password"),
        pool_size=store["poolSize"],
    )


def _check_embedding_model(ctx: _Checker, normalized: dict[str, Any]) -> None:
    path = "agents.defaults.embeddingModel"
    ref = _dig(normalized, "agents", "defaults", "embeddingModel")
    providers = _dig(normalized, "models", "providers")
    if not isinstance(ref, ModelRef) or not isinstance(providers, dict):
        return  # absent, or an issue already recorded
    if ref.provider == ECHO_PROVIDER:
        return  # echo's offline vectors
    provider = providers.get(ref.provider)
    if isinstance(provider, _Invalid):
        return
    if isinstance(provider, _IgnoredProvider):
        ctx.issue(
            path, f'provider "{ref.provider}" is ignored: api "{provider.api}" is not implemented'
        )
    elif provider is None:
        usable = [pid for pid, p in providers.items() if isinstance(p, dict)]
        suggestion = _suggest(ref.provider, [ECHO_PROVIDER, *usable])
        ctx.issue(path, f'unknown provider "{ref.provider}"{suggestion}')
    elif provider.get("api") != API_OPENAI_COMPLETIONS:
        message = (
            f'provider "{ref.provider}" is not OpenAI-compatible (api "{provider.get("api")}");'
            f' embeddings need an "{API_OPENAI_COMPLETIONS}" provider'
        )
        ctx.issue(path, message)


def _key_allowed(key: str, prefixes: Sequence[str]) -> bool:
    return key.strip().lower().startswith(tuple(p.strip().lower() for p in prefixes))


def _check_hooks(ctx: _Checker, hooks: Any) -> None:
    """OpenClaw's rules: a token when enabled; a default key inside the allowed prefixes."""
    if not isinstance(hooks, dict):
        return
    if hooks.get("enabled") is True and not hooks.get("token"):
        ctx.issue("hooks.token", "is required when hooks.enabled is true")
    prefixes = hooks.get("allowedSessionKeyPrefixes")
    default_key = hooks.get("defaultSessionKey")
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        return
    if isinstance(default_key, str):
        if not _key_allowed(default_key, prefixes):
            message = "must match hooks.allowedSessionKeyPrefixes"
            ctx.issue("hooks.defaultSessionKey", message)
    elif default_key is None and not _key_allowed("hook:example", prefixes):
        message = "must include 'hook:' when hooks.defaultSessionKey is unset"
        ctx.issue("hooks.allowedSessionKeyPrefixes", message)


def _check_hooks_token(ctx: _Checker, normalized: dict[str, Any]) -> None:
    """As OpenClaw: the hook token is a second, distinct secret (after env and flags)."""
    hooks_token = _dig(normalized, "hooks", "token")
    auth = _dig(normalized, "gateway", "auth")
    if not isinstance(hooks_token, str) or not hooks_token or not isinstance(auth, dict):
        return
    if auth.get("mode") == "token" and auth.get("token") == hooks_token:
        message = "must not match the gateway auth token; set a distinct hooks.token"
        ctx.issue("hooks.token", message)


def _hooks_config(hooks: dict[str, Any]) -> HooksConfig:
    agent_ids = hooks.get("allowedAgentIds")
    prefixes = hooks.get("allowedSessionKeyPrefixes")
    return HooksConfig(
        enabled=hooks["enabled"],
        token=hooks.get("token") or None,
        path=hooks["path"],
        max_body_bytes=hooks["maxBodyBytes"],
        wait_timeout_seconds=hooks["waitTimeoutSeconds"],
        allowed_agent_ids=None if agent_ids is None else tuple(a.lower() for a in agent_ids),
        default_session_key=hooks.get("defaultSessionKey"),
        allow_request_session_key=hooks["allowRequestSessionKey"],
        allowed_session_key_prefixes=(
            None if not prefixes else tuple(p.strip().lower() for p in prefixes)
        ),
    )


def _effective_hooks(hooks: HooksConfig) -> dict[str, Any]:
    effective: dict[str, Any] = {"enabled": hooks.enabled}
    if hooks.token is not None:
        effective["token"] = hooks.token
    effective.update(
        path=hooks.path,
        maxBodyBytes=hooks.max_body_bytes,
        waitTimeoutSeconds=hooks.wait_timeout_seconds,
    )
    if hooks.allowed_agent_ids is not None:
        effective["allowedAgentIds"] = list(hooks.allowed_agent_ids)
    if hooks.default_session_key is not None:
        effective["defaultSessionKey"] = hooks.default_session_key
    effective["allowRequestSessionKey"] = hooks.allow_request_session_key
    if hooks.allowed_session_key_prefixes is not None:
        effective["allowedSessionKeyPrefixes"] = list(hooks.allowed_session_key_prefixes)
    return effective


# --- The schema (config.md §4, §4a) ----------------------------------------------------------


def _words(names: str) -> tuple[str, ...]:
    return tuple(names.split())


_UNSUPPORTED_BIND = "not supported by clawgate (use loopback, lan or custom)"

_RATE_LIMIT = _Section(
    {
        "maxAttempts": _Key(_Int(1), 10),
        "windowMs": _Key(_Int(1), 60_000),
        "lockoutMs": _Key(_Int(1), 300_000),
        # false by default: a web page is a loopback client too (gateway/config.py).
        "exemptLoopback": _Key(_Bool(), False),
    }
)

_AUTH = _Section(
    {
        # No default: with no mode the mode is inferred, after env and flags (_resolve_auth).
        "mode": _Key(
            _Choice(
                ("token", "password", "none"),
                refused={"trusted-proxy": "not supported by clawgate"},
            )
        ),
        "token": _Key(_Str()),
        "password": _Key(_Str()),
        "rateLimit": _Key(_FalseOr(_RATE_LIMIT)),
    },
    ignored=("allowTailscale", "trustedProxy"),
)

_IMAGES = _Section(
    {
        "allowUrl": _Key(
            _FalseOnly("remote image URLs are not supported; treated as false"), False
        ),
        "urlAllowlist": _Key(_List(_Str()), ()),
        "allowedMimes": _Key(_List(_Str()), DEFAULT_ALLOWED_MIMES),
        "maxBytes": _Key(_Int(1), 10 * MIB),
        "maxRedirects": _Key(_Int(0), 3),
        "timeoutMs": _Key(_Int(0), 10_000),
    }
)

_CHAT_COMPLETIONS = _Section(
    {
        "enabled": _Key(_Bool(), False),
        "maxBodyBytes": _Key(_Int(1), 20 * MIB),
        "maxImageParts": _Key(_Int(0), 8),
        "maxTotalImageBytes": _Key(_Int(1), 20 * MIB),
        "images": _Key(_IMAGES),
        # Headers that name a conversation (Open WebUI's), tried after x-openclaw-session-key.
        "sessionHeaders": _Key(_List(_HeaderName()), DEFAULT_SESSION_HEADERS),
        "unknownModel": _Key(_Choice(("error", "default-agent")), "error"),
    }
)

_HTTP = _Section(
    {
        "endpoints": _Key(
            _Section({"chatCompletions": _Key(_CHAT_COMPLETIONS)}, ignored=("responses",))
        ),
        "cors": _Key(_Section({"allowedOrigins": _Key(_List(_Str()), ())})),
        "allowedHosts": _Key(_List(_HostName()), ()),
    },
    ignored=("securityHeaders",),
)

_GATEWAY = _Section(
    {
        "port": _Key(_Int(1, 65535), DEFAULT_PORT),
        "bind": _Key(
            _Choice(
                ("loopback", "lan", "custom"),
                refused={"auto": _UNSUPPORTED_BIND, "tailnet": _UNSUPPORTED_BIND},
            ),
            "loopback",
        ),
        # Checked as an IPv4 address by the startup guard, and only when bind is custom.
        "customBindHost": _Key(_Str()),
        "auth": _Key(_AUTH),
        "http": _Key(_HTTP),
        "controlUi": _Key(
            _Section(
                {"allowedOrigins": _Key(_List(_Origin()), ())},
                ignored=_words(
                    "enabled basePath root allowInsecureAuth dangerouslyDisableDeviceAuth"
                    " dangerouslyAllowHostHeaderOriginFallback"
                ),
            )
        ),
        "trustedProxies": _Key(_List(_Network()), ()),
        "ws": _Key(
            _Section(
                {
                    "preAuth": _Key(
                        _Section(
                            {
                                "maxConnections": _Key(_Int(1), 256),
                                "maxPerAddress": _Key(_Int(1), 32),
                            }
                        )
                    )
                }
            )
        ),
        "shutdown": _Key(_Section({"drainSeconds": _Key(_Int(0), 20)})),
        "reload": _Key(
            _Section(
                {
                    "mode": _Key(_Choice(("off", "hot", "hybrid", "restart")), "hybrid"),
                    "debounceMs": _Key(_Int(0), 300),
                },
                ignored=("deferralTimeoutMs",),
            )
        ),
    },
    ignored=_words("mode tls tailscale remote allowRealIpFallback tools channelHealthCheckMinutes"),
    notes={"tls": "TLS is not supported; terminate TLS in a reverse proxy"},
)

_PARAMS = _Params(
    {
        "temperature": _Number(0, 2),
        "top_p": _Number(0, 1),
        "frequency_penalty": _Number(-2, 2),
        "presence_penalty": _Number(-2, 2),
        "seed": _Int(),
        "max_tokens": _Int(1, MAX_SAFE_INTEGER),
        "stop": _Stop(),
        "delayMs": _Int(0),
    }
)

_AGENTS = _Section(
    {
        "defaults": _Key(
            _Section(
                {
                    "model": _Key(_ModelSpec(), [ModelRef(ECHO_PROVIDER, "echo")]),
                    "timeoutSeconds": _Key(_Int(0), 172_800),
                    "maxConcurrent": _Key(_Int(1), 4),
                    "historyLimit": _Key(_Int(0), 50),
                    "embeddingModel": _Key(_EmbeddingModelRef()),
                },
                ignored=_words(
                    "workspace models imageModel thinkingDefault verboseDefault heartbeat"
                    " sandbox memorySearch contextTokens compaction subagents skills"
                ),
            )
        ),
        "list": _Key(
            _List(
                _Section(
                    {
                        "id": _Key(_AgentId(), required=True),
                        "default": _Key(_Bool(), False),
                        "name": _Key(_Str()),  # the id when absent
                        "model": _Key(_ModelSpec()),  # defaults.model when absent
                        "systemPrompt": _Key(_Str(), ""),
                        "params": _Key(_PARAMS, {}),
                        # What `x-openclaw-model` may choose, besides the agent's own chain.
                        "models": _Key(_List(_MODEL_REF), ()),
                    },
                    ignored=_words(
                        "workspace agentDir identity thinkingDefault skills subagents sandbox"
                        " tools runtime memorySearch heartbeat groupChat"
                    ),
                )
            ),
            (),
        ),
    }
)

_MODEL_ENTRY = _Section(
    {
        "id": _Key(_Str(non_empty=True), required=True),
        "name": _Key(_Str()),  # the id when absent
        "contextWindow": _Key(_Int(1)),
        "maxTokens": _Key(_Int(1)),
        "reasoning": _Key(_Bool(), False),
    },
    ignored=("input", "cost", "api", "headers", "compat"),
)

_PROVIDER = _Section(
    {
        "api": _Key(_Choice(IMPLEMENTED_APIS), API_OPENAI_COMPLETIONS),
        "baseUrl": _Key(_Url()),  # required or defaulted by api, in _Provider
        "apiKey": _Key(_Str()),
        "headers": _Key(_Map(_Str()), {}),
        "models": _Key(_List(_MODEL_ENTRY), ()),
    },
    ignored=("auth", "authHeader", "injectNumCtxForOpenAICompat"),
)

_MODELS = _Section(
    {"providers": _Key(_Map(_Provider(_PROVIDER), _provider_id_problem), {})},
    ignored=("mode",),
)

_SESSION = _Section(
    {
        "mainKey": _Key(_Str(non_empty=True), "main"),
        "maintenance": _Key(
            _Section(
                {
                    "mode": _Key(_Choice(("warn", "enforce")), "enforce"),
                    "pruneAfter": _Key(_Duration(), 30 * _DURATION_UNIT_MS["d"]),
                    "maxEntries": _Key(_Int(1), 500),
                    "statelessTtl": _Key(_Duration(), 24 * _DURATION_UNIT_MS["h"]),
                    "maxDiskBytes": _Key(_ByteSize(), DEFAULT_MAX_DISK_BYTES),
                    # 0: 80 % of maxDiskBytes (OpenClaw's rule), resolved in _agents_config.
                    "highWaterBytes": _Key(_ByteSize(), 0),
                }
            )
        ),
    },
    ignored=_words(
        "scope dmScope reset resetByType identityLinks store"
        " typingIntervalSeconds sendPolicy agentToAgent"
    ),
)

_LOGGING = _Section(
    {
        "level": _Key(
            _Choice(
                ("debug", "info", "warn", "error", "silent"),
                aliases={"trace": "debug", "fatal": "error"},
            ),
            "info",
        ),
        "format": _Key(_Choice(("auto", "json", "console")), "auto"),
    },
    ignored=("file", "consoleLevel", "consoleStyle", "redactSensitive"),
)

OPENCLAW_SECTIONS = _words(
    "$schema meta env wizard update identity agent channels plugins tools"
    " cron bindings discovery canvasHost browser messages commands talk"
    " skills secrets ui audio routing broadcast web auth memory approvals"
    " nodeHost diagnostics media"
)

_ROOT = _Section(
    {
        "gateway": _Key(_GATEWAY),
        "agents": _Key(_AGENTS),
        "models": _Key(_MODELS),
        "session": _Key(_SESSION),
        "logging": _Key(_LOGGING),
        "hooks": _Key(_HOOKS),
        "store": _Key(_STORE),
    },
    ignored=OPENCLAW_SECTIONS,
)


# --- Checks across sections ------------------------------------------------------------------


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return _INVALID
        value = value.get(key, _INVALID)
    return value


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _check_model_refs(ctx: _Checker, providers: Any) -> None:
    if not isinstance(providers, dict):
        return  # the providers' own issue is already recorded
    usable = {pid: p for pid, p in providers.items() if isinstance(p, dict)}
    for path, ref in ctx.model_refs:
        provider = providers.get(ref.provider)
        if ref.provider == ECHO_PROVIDER or isinstance(provider, _Invalid):
            continue  # echo takes any model id; a broken provider has its own issue
        if isinstance(provider, _IgnoredProvider):
            message = (
                f'provider "{ref.provider}" is ignored: api "{provider.api}" is not implemented'
            )
            ctx.issue(path, message)
        elif provider is None:
            suggestion = _suggest(ref.provider, [ECHO_PROVIDER, *usable])
            ctx.issue(path, f'unknown provider "{ref.provider}"{suggestion}')
        else:
            models = provider.get("models")
            if not isinstance(models, list):
                continue
            ids = [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]
            if ids and ref.model not in ids:
                suggestion = _suggest(ref.model, ids)
                message = f'unknown model "{ref.model}" for provider "{ref.provider}"{suggestion}'
                ctx.issue(path, message)


def _check_agent_list(ctx: _Checker, agents: Any) -> None:
    if not isinstance(agents, list):
        return
    seen: set[str] = set()
    default_id: str | None = None
    for i, agent in enumerate(agents):
        if not isinstance(agent, dict):
            continue
        agent_id = agent.get("id")
        if isinstance(agent_id, str):
            if agent_id in seen:
                ctx.issue(f"agents.list[{i}].id", f'duplicate agent id "{agent_id}"')
            seen.add(agent_id)
        if agent.get("default") is True:
            if default_id is None:
                default_id = agent_id if isinstance(agent_id, str) else ""
            else:
                message = (
                    f'more than one agent is marked default; the first ("{default_id}") is used'
                )
                ctx.warn(f"agents.list[{i}].default", message)


# --- Environment and command line (config.md §1, §2) -----------------------------------------
#
# Deliberate choice: CLI flag > environment > file > default, uniformly, for the port AND the
# secrets. config.md §2 has the file's gateway.auth.token/password win over
# OPENCLAW_GATEWAY_TOKEN/PASSWORD (as OpenClaw does); the team decided against that so that one
# rule holds for every setting and an operator can always override the file from the unit file.


def _apply_overrides(
    gateway: Any, overrides: Overrides, environ: Mapping[str, str], ctx: _Checker
) -> None:
    """Puts the port, bind and auth in force into the normalized `gateway` section."""
    if not isinstance(gateway, dict):
        return
    port = _override_port(overrides, environ, ctx)
    if port is not None:
        gateway["port"] = port
    if overrides.bind is not None:
        if overrides.bind in ("loopback", "lan", "custom"):
            gateway["bind"] = overrides.bind
        elif _is_ipv4(overrides.bind):
            gateway["bind"], gateway["customBindHost"] = "custom", overrides.bind
        else:
            message = (
                'must be one of "loopback", "lan", "custom" or an IPv4 address'
                f" (got {_show(overrides.bind)})"
            )
            ctx.issue("--bind", message)
    auth = gateway.get("auth")
    if isinstance(auth, dict) and not any(isinstance(v, _Invalid) for v in auth.values()):
        _resolve_auth(auth, overrides, environ, ctx)


def _override_port(overrides: Overrides, environ: Mapping[str, str], ctx: _Checker) -> int | None:
    if overrides.port is not None:
        if not 0 <= overrides.port <= 65535:  # 0: the OS picks a free port
            ctx.issue("--port", f"must be between 0 and 65535 (got {overrides.port})")
            return None
        return overrides.port
    value = _env(environ, "OPENCLAW_GATEWAY_PORT")
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


def _has_secret_flag(overrides: Overrides) -> bool:
    return any(
        v is not None
        for v in (
            overrides.token,
            overrides.password,
            overrides.token_file,
            overrides.password_file,
        )
    )


def _flag_secret(value: str | None, path: str | None, flag: str, ctx: _Checker) -> str | None:
    if path is None:
        return value
    try:
        return read_secret_file(path)
    except SecretFileError as exc:
        ctx.issue(flag, str(exc))
        return None


def _resolve_auth(
    auth: dict[str, Any], overrides: Overrides, environ: Mapping[str, str], ctx: _Checker
) -> None:
    flag_token = _flag_secret(overrides.token, overrides.token_file, "--token-file", ctx)
    flag_password = _flag_secret(
        overrides.password, overrides.password_file, "--password-file", ctx
    )
    token, token_source = _first_secret(
        ("flag", flag_token),
        ("env", _env(environ, "OPENCLAW_GATEWAY_TOKEN")),
        ("config", auth.get("token")),
    )
    password, password_source = _first_secret(
        ("flag", flag_password),
        ("env", _env(environ, "OPENCLAW_GATEWAY_PASSWORD")),
        ("config", auth.get("password")),
    )
    mode: str | None = auth.get("mode")
    if mode is not None:
        # The file's mode wins over a flag's secret of the other mode; ignoring the flag
        # quietly would start a gateway that refuses the secret its operator just gave.
        for flag, value, flag_mode in (
            ("--token", flag_token, "token"),
            ("--password", flag_password, "password"),
        ):
            if value and mode != flag_mode:
                ctx.issue(
                    flag,
                    f'gateway.auth.mode is "{mode}" in the config file, so {flag} would be'
                    f' ignored; drop {flag} or set gateway.auth.mode to "{flag_mode}"',
                )
    if mode is None:
        # A flag names the mode unless the file does; otherwise the secrets that are set do.
        if flag_token and flag_password:
            mode = None
        elif flag_token:
            mode = "token"
        elif flag_password:
            mode = "password"
        elif not (token and password):
            mode = "password" if password else "token"
        if mode is None:
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


def _startup_guards(gateway: GatewayConfig) -> list[ConfigIssue]:
    """§6.1. A token-mode gateway with no token passes: the CLI generates one."""
    if gateway.bind == "custom":
        host = gateway.custom_bind_host
        if not host:
            message = "gateway.bind=custom requires gateway.customBindHost"
            return [ConfigIssue("gateway.customBindHost", message)]
        if not _is_ipv4(host):
            message = f"gateway.bind=custom requires a valid IPv4 customBindHost (got {host})"
            return [ConfigIssue("gateway.customBindHost", message)]
    if gateway.bind != "loopback" and gateway.auth.mode == "none":
        message = (
            f"refusing to bind gateway to {gateway.host}:{gateway.port} without auth"
            " (set gateway.auth.token/password,"
            " or set OPENCLAW_GATEWAY_TOKEN/OPENCLAW_GATEWAY_PASSWORD)"
        )
        return [ConfigIssue("gateway.bind", message)]
    return []


# --- Normalized dict -> values ---------------------------------------------------------------


def _gateway_config(gateway: dict[str, Any]) -> GatewayConfig:
    auth, http = gateway["auth"], gateway["http"]
    chat = http["endpoints"]["chatCompletions"]
    images = chat["images"]
    rate_limit = auth["rateLimit"]
    return GatewayConfig(
        port=gateway["port"],
        bind=gateway["bind"],
        custom_bind_host=gateway.get("customBindHost"),
        auth=AuthConfig(
            mode=auth["mode"],
            token=auth["token"],
            password=auth["password"],
            source=auth["source"],
            rate_limit=(
                RateLimitConfig(enabled=False)
                if rate_limit is False
                else RateLimitConfig(
                    max_attempts=rate_limit["maxAttempts"],
                    window_ms=rate_limit["windowMs"],
                    lockout_ms=rate_limit["lockoutMs"],
                    exempt_loopback=rate_limit["exemptLoopback"],
                )
            ),
        ),
        http=HttpConfig(
            chat_completions=ChatCompletionsConfig(
                enabled=chat["enabled"],
                max_body_bytes=chat["maxBodyBytes"],
                max_image_parts=chat["maxImageParts"],
                max_total_image_bytes=chat["maxTotalImageBytes"],
                images=ImagesConfig(
                    allow_url=images["allowUrl"],
                    url_allowlist=tuple(images["urlAllowlist"]),
                    allowed_mimes=tuple(images["allowedMimes"]),
                    max_bytes=images["maxBytes"],
                    max_redirects=images["maxRedirects"],
                    timeout_ms=images["timeoutMs"],
                ),
                session_headers=tuple(chat["sessionHeaders"]),
                unknown_model=chat["unknownModel"],
            ),
            cors_allowed_origins=tuple(http["cors"]["allowedOrigins"]),
            allowed_hosts=tuple(http["allowedHosts"]),
        ),
        allowed_origins=tuple(gateway["controlUi"]["allowedOrigins"]),
        trusted_proxies=tuple(gateway["trustedProxies"]),
        ws_preauth=PreAuthConfig(
            max_connections=gateway["ws"]["preAuth"]["maxConnections"],
            max_per_address=gateway["ws"]["preAuth"]["maxPerAddress"],
        ),
        drain_seconds=gateway["shutdown"]["drainSeconds"],
        reload_mode=gateway["reload"]["mode"],
        reload_debounce_ms=gateway["reload"]["debounceMs"],
    )


def _agents_config(normalized: dict[str, Any]) -> AgentsConfig:
    agents, session = normalized["agents"], normalized["session"]
    defaults = agents["defaults"]
    default_models = tuple(defaults["model"])
    entries = agents["list"] or [{"id": "main"}]  # an empty list means one implicit agent
    maintenance = session["maintenance"]
    return AgentsConfig(
        agents=tuple(
            AgentConfig(
                id=entry["id"],
                models=tuple(entry.get("model", default_models)),
                name=entry.get("name", entry["id"]),
                system_prompt=entry.get("systemPrompt", ""),
                params=entry.get("params", {}),
                default=entry.get("default", False),
                allowed_models=tuple(entry.get("models", ())),
            )
            for entry in entries
        ),
        providers={
            pid: _provider_config(pid, provider)
            for pid, provider in normalized["models"]["providers"].items()
            if not isinstance(provider, _IgnoredProvider)
        },
        timeout_seconds=defaults["timeoutSeconds"],
        max_concurrent=defaults["maxConcurrent"],
        history_limit=defaults["historyLimit"],
        main_key=session["mainKey"].lower(),
        maintenance=MaintenanceConfig(
            mode=maintenance["mode"],
            prune_after_ms=maintenance["pruneAfter"],
            max_entries=maintenance["maxEntries"],
            stateless_ttl_ms=maintenance["statelessTtl"],
            max_disk_bytes=maintenance["maxDiskBytes"],
            high_water_bytes=min(
                maintenance["highWaterBytes"] or maintenance["maxDiskBytes"] * 8 // 10,
                maintenance["maxDiskBytes"],
            ),
        ),
        default_models=default_models,
        embedding_model=defaults.get("embeddingModel"),
    )


def _provider_config(provider_id: str, provider: dict[str, Any]) -> ProviderConfig:
    return ProviderConfig(
        id=provider_id,
        api=provider["api"],
        base_url=provider["baseUrl"],
        api_key=provider.get("apiKey"),
        headers=provider["headers"],
        models=tuple(
            ModelEntry(
                id=model["id"],
                name=model.get("name", model["id"]),
                context_window=model.get("contextWindow"),
                max_tokens=model.get("maxTokens"),
                reasoning=model["reasoning"],
            )
            for model in provider["models"]
        ),
    )


# --- Values -> the effective config, and redaction -------------------------------------------


def effective_dict(config: Config) -> dict[str, Any]:
    """The config in force, JSON-able, in the file's camelCase shape with every default filled in.

    Loading `json.dumps(effective_dict(c))` as a file gives `c` again (tests hold us to it).
    """
    agents = config.agents
    maintenance = agents.maintenance
    return {
        "gateway": _effective_gateway(config.gateway),
        "agents": {
            "defaults": {
                "model": _effective_models(agents.default_models),
                "timeoutSeconds": agents.timeout_seconds,
                "maxConcurrent": agents.max_concurrent,
                "historyLimit": agents.history_limit,
                **(
                    {"embeddingModel": str(agents.embedding_model)}
                    if agents.embedding_model is not None
                    else {}
                ),
            },
            "list": [
                {
                    "id": agent.id,
                    "default": agent.default,
                    "name": agent.name,
                    "model": _effective_models(agent.models),
                    "systemPrompt": agent.system_prompt,
                    "params": copy.deepcopy(dict(agent.params)),
                    "models": [str(m) for m in agent.allowed_models],
                }
                for agent in agents.agents
            ],
        },
        "models": {
            "providers": {pid: _effective_provider(p) for pid, p in agents.providers.items()}
        },
        "session": {
            "mainKey": agents.main_key,
            "maintenance": {
                "mode": maintenance.mode,
                "pruneAfter": maintenance.prune_after_ms,
                "maxEntries": maintenance.max_entries,
                "statelessTtl": maintenance.stateless_ttl_ms,
                "maxDiskBytes": maintenance.max_disk_bytes,
                "highWaterBytes": maintenance.high_water_bytes,
            },
        },
        "logging": {"level": config.logging.level, "format": config.logging.format},
        "hooks": _effective_hooks(config.hooks),
        "store": _effective_store(config.store),
    }


def _effective_store(store: StoreConfig) -> dict[str, Any]:
    effective: dict[str, Any] = {"backend": store.backend, "poolSize": store.pool_size}
    for key, value in (("url", store.url), ("password", store.password)):
        if value is not None:
            effective[key] = value
    return effective


def _effective_gateway(gateway: GatewayConfig) -> dict[str, Any]:
    auth, chat = gateway.auth, gateway.http.chat_completions
    rate_limit, images = auth.rate_limit, chat.images
    effective_auth: dict[str, Any] = {"mode": auth.mode}
    if auth.token is not None:
        effective_auth["token"] = auth.token
    if auth.password is not None:
        effective_auth["password"] = auth.password
    effective_auth["rateLimit"] = (
        {
            "maxAttempts": rate_limit.max_attempts,
            "windowMs": rate_limit.window_ms,
            "lockoutMs": rate_limit.lockout_ms,
            "exemptLoopback": rate_limit.exempt_loopback,
        }
        if rate_limit.enabled
        else False
    )
    effective: dict[str, Any] = {"port": gateway.port, "bind": gateway.bind}
    if gateway.custom_bind_host is not None:
        effective["customBindHost"] = gateway.custom_bind_host
    effective["auth"] = effective_auth
    effective["http"] = {
        "endpoints": {
            "chatCompletions": {
                "enabled": chat.enabled,
                "maxBodyBytes": chat.max_body_bytes,
                "maxImageParts": chat.max_image_parts,
                "maxTotalImageBytes": chat.max_total_image_bytes,
                "images": {
                    "allowUrl": images.allow_url,
                    "urlAllowlist": list(images.url_allowlist),
                    "allowedMimes": list(images.allowed_mimes),
                    "maxBytes": images.max_bytes,
                    "maxRedirects": images.max_redirects,
                    "timeoutMs": images.timeout_ms,
                },
                "sessionHeaders": list(chat.session_headers),
                "unknownModel": chat.unknown_model,
            }
        },
        "cors": {"allowedOrigins": list(gateway.http.cors_allowed_origins)},
        "allowedHosts": list(gateway.http.allowed_hosts),
    }
    effective["controlUi"] = {"allowedOrigins": list(gateway.allowed_origins)}
    effective["trustedProxies"] = list(gateway.trusted_proxies)
    preauth = gateway.ws_preauth
    effective["ws"] = {
        "preAuth": {
            "maxConnections": preauth.max_connections,
            "maxPerAddress": preauth.max_per_address,
        }
    }
    effective["shutdown"] = {"drainSeconds": gateway.drain_seconds}
    effective["reload"] = {"mode": gateway.reload_mode, "debounceMs": gateway.reload_debounce_ms}
    return effective


def _effective_models(models: Sequence[ModelRef]) -> str | dict[str, Any]:
    if len(models) == 1:
        return str(models[0])
    return {"primary": str(models[0]), "fallbacks": [str(m) for m in models[1:]]}


def _effective_provider(provider: ProviderConfig) -> dict[str, Any]:
    effective: dict[str, Any] = {"api": provider.api, "baseUrl": provider.base_url}
    if provider.api_key is not None:
        effective["apiKey"] = provider.api_key
    effective["headers"] = dict(provider.headers)
    effective["models"] = []
    for model in provider.models:
        entry: dict[str, Any] = {"id": model.id, "name": model.name}
        if model.context_window is not None:
            entry["contextWindow"] = model.context_window
        if model.max_tokens is not None:
            entry["maxTokens"] = model.max_tokens
        entry["reasoning"] = model.reasoning
        effective["models"].append(entry)
    return effective


_PathKey = str | int

# Which keys hold secrets, by name, anywhere in the file: clawgate's own secrets and those of the
# OpenClaw sections it loads but ignores (`channels.*.botToken`, `env.vars.*`, ...), which
# `config.get` would otherwise hand to any `operator.read` client. The rule, on the key's name
# lowercased with `_`, `-` and `.` removed:
# - it ends in one of _SECRET_SUFFIXES: `token`, `botToken`, `accessToken`, `apiKey`, `api_key`,
#   `clientSecret`, `webhookSecret`, `password`, `privateKey`, `credentials`;
#   but `maxTokens`, `contextTokens` (counts: "tokens" is not a suffix), `tokenizer`,
#   `keyPrefix`, `keyId`, `tokenFile` (the word is not at the end) are settings, shown;
# - and it is not one of _NOT_SECRET, names that end in "key" but name a lookup key
#   (`session.mainKey` is a session key's last part, shown by `sessions.list` anyway);
# - or it is `auth`, `headers` or `env`: every value below them is a secret (provider auth
#   objects, `Authorization` headers, environment variables), except clawgate's own
#   `gateway.auth`, whose settings in _GATEWAY_AUTH_SETTINGS are shown (its secrets `token` and
#   `password` are secrets by name); any other key there is redacted whole.
# Everything below a secret key is a secret: an object or array there is redacted leaf by leaf.
# A name that merely looks secret is redacted too (`hotkey`): showing a harmless value as
# "__OPENCLAW_REDACTED__" costs less than showing a credential, and a redacted value sent back
# in config.patch keeps what the file has.
_SECRET_SUFFIXES = (
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "key",
    "keys",
    "credential",
    "credentials",
    "authorization",
    "cookie",
)
_NOT_SECRET = frozenset(
    {"mainkey", "sessionkey", "idempotencykey", "dedupekey", "sortkey", "groupkey", "cachekey"}
)
_SECRET_SECTIONS = frozenset({"auth", "headers", "env"})
_GATEWAY_AUTH_SETTINGS = frozenset({"mode", "rateLimit", "allowTailscale", "trustedProxy"})
_NAME_SEPARATORS = str.maketrans("", "", "_-.")


def _is_secret_name(key: str) -> bool:
    name = key.lower().translate(_NAME_SEPARATORS)
    return name not in _NOT_SECRET and name.endswith(_SECRET_SUFFIXES)


def _is_secret_path(path: tuple[_PathKey, ...]) -> bool:
    """Whether the value at `path` (or any value inside it) is a secret."""
    if path[:2] == ("gateway", "auth"):
        if len(path) == 2:
            return False
        if path[2] not in _GATEWAY_AUTH_SETTINGS:
            return True
        path = path[3:]  # mode and the limiter's settings: only a secret-named key inside
    return any(
        isinstance(key, str) and (key.lower() in _SECRET_SECTIONS or _is_secret_name(key))
        for key in path
    )


def _is_secret_value(value: Any) -> bool:
    # Any scalar: a number or boolean where a secret belongs is invalid, yet may be the secret.
    # null says nothing, and stays.
    return isinstance(value, str | int | float)


# A URL with credentials in it (`https://user:pass@proxy`, `https://<token>@host`) is a secret
# whatever its key: the whole string is redacted, a `baseUrl` included.
_URL_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+@")


def _holds_password(value: Any) -> bool:
    return isinstance(value, str) and _URL_WITH_PASSWORD.search(value) is not None


def _is_secret_leaf(path: tuple[_PathKey, ...], value: Any) -> bool:
    return (_is_secret_path(path) and _is_secret_value(value)) or _holds_password(value)


def _redact_tree(value: Any, path: tuple[_PathKey, ...] = ()) -> Any:
    if isinstance(value, Mapping):
        return {key: _redact_tree(item, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_tree(item, (*path, i)) for i, item in enumerate(value)]
    if _is_secret_leaf(path, value):
        return REDACTED
    return value


def redacted(config: Config) -> dict[str, Any]:
    """`effective_dict` with every secret replaced by REDACTED (`config.get`, `config show`)."""
    result: dict[str, Any] = _redact_tree(effective_dict(config))
    return result


def redact_parsed(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """The file as parsed (ConfigSource.parsed) with every secret replaced by REDACTED."""
    result: dict[str, Any] = _redact_tree(parsed)
    return result


def redact_raw(raw: str, parsed: Mapping[str, Any]) -> str:
    """The file text with each secret's literal replaced in place; all else byte-identical.

    `parsed` is `raw` as parsed: should the text defeat our scanner, its secret values are
    replaced wherever they occur instead, so that a secret never leaks through `config.get`.
    """
    try:
        spans = _Json5Scanner(raw).secret_spans()
    except (ValueError, IndexError):
        return _redact_by_value(raw, parsed)
    pieces, end = [], 0
    for start, stop in spans:
        quote = raw[start] if raw[start] in "\"'" else '"'
        pieces += [raw[end:start], quote, REDACTED, quote]
        end = stop
    pieces.append(raw[end:])
    return "".join(pieces)


def _redact_by_value(raw: str, parsed: Mapping[str, Any]) -> str:
    secrets: list[str] = []

    def collect(value: Any, path: tuple[_PathKey, ...]) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                collect(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                collect(item, (*path, i))
        elif _is_secret_leaf(path, value):
            # A boolean's "True" is not in the text, and its "true" is everywhere.
            secrets.append("" if isinstance(value, bool) else str(value))

    collect(parsed, ())
    # Longest first: one may contain another.
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        raw = raw.replace(secret, REDACTED)
    return raw


# --- config.patch and the secrets it keeps ---------------------------------------------------

# A key whose value says where a request goes. A sibling is also one when its value is a string
# with "://" in it, whatever its name.
_ADDRESS_SUFFIXES = ("url", "uri", "endpoint", "host", "hostname", "base", "server", "proxy")
_MISSING: Final = object()


def _lookup(value: Any, path: tuple[_PathKey, ...]) -> Any:
    for key in path:
        if isinstance(key, str):
            if not isinstance(value, Mapping) or key not in value:
                return _MISSING
        elif not isinstance(value, list) or not 0 <= key < len(value):
            return _MISSING
        value = value[key]
    return value


def _is_address(key: str, *values: Any) -> bool:
    if any(isinstance(v, str) and "://" in v for v in values):
        return True
    name = key.lower().translate(_NAME_SEPARATORS)
    return name.endswith(_ADDRESS_SUFFIXES) and all(
        v is _MISSING or not isinstance(v, Mapping | list) for v in values
    )


def _dotted(path: tuple[_PathKey, ...]) -> str:
    dotted = ""
    for key in path:
        dotted = f"{dotted}[{key}]" if isinstance(key, int) else _join(dotted, key)
    return dotted


def secrets_sent_elsewhere(
    base: Mapping[str, Any], patch: Mapping[str, Any], merged: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(secret, address) paths where `merged` would send a secret the patch did not write out
    to an address the patch changed.

    A patch may keep a secret without knowing it (the redaction marker, or leaving the key out)
    and may name one it cannot read (`${OPENAI_API_KEY}`); either is fine while the secret goes
    where it went. Changing where it goes (a provider's `baseUrl`, any address-like key beside
    the secret or beside an object holding it, such as the provider of a `headers` value) would
    hand the secret to whoever the patch names, so the patch must then spell out the secret.
    """
    found: list[tuple[str, str]] = []
    # Per object: its address-like keys that the patch changed. Computed once per object, so
    # that a patch of many secrets in one wide object costs its size, not its size squared.
    changed: dict[tuple[_PathKey, ...], list[str]] = {}

    def changed_addresses(prefix: tuple[_PathKey, ...]) -> list[str]:
        if prefix not in changed:
            old, new = _lookup(base, prefix), _lookup(merged, prefix)
            keys = dict.fromkeys(old if isinstance(old, Mapping) else ())
            keys.update(dict.fromkeys(new if isinstance(new, Mapping) else ()))
            changed[prefix] = [
                key
                for key in keys
                if (before := _lookup(old, (key,))) != (after := _lookup(new, (key,)))
                and _is_address(key, before, after)
            ]
        return changed[prefix]

    for path, value in _secret_leaves(merged):
        if path[0] == "gateway":
            continue  # the gateway's own token and password: clients send them to us
        given = _lookup(patch, path)
        if isinstance(value, str) and given == value and _has_reference(value):
            pass  # written by the patch, but it expands to a secret the patch never saw
        elif given is _MISSING or given == REDACTED:
            if _lookup(base, path) != value:
                continue  # not the file's secret (the marker itself, inside a replaced array)
        else:
            continue
        for depth in range(len(path)):
            prefix = path[:depth]
            found += [
                (_dotted(path), _dotted((*prefix, key)))
                for key in changed_addresses(prefix)
                if key != path[depth]
            ]
            if found:
                return found  # the first is the one reported
    return found


def _secret_leaves(
    value: Any, path: tuple[_PathKey, ...] = ()
) -> list[tuple[tuple[_PathKey, ...], Any]]:
    if isinstance(value, Mapping):
        return [leaf for k, v in value.items() for leaf in _secret_leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _secret_leaves(v, (*path, i))]
    return [(path, value)] if _is_secret_path(path) and _is_secret_value(value) else []


def _has_reference(text: str) -> bool:
    return any(not m[0].startswith("$$") for m in _ENV_REF_RE.finditer(text))


@attrs.define
class _Json5Scanner:
    """Walks JSON5 text that json5 has accepted, finding where the secrets' literals are.

    json5 gives no positions, so this small scanner tracks the path of each value itself.
    It raises ValueError or IndexError on text it does not understand.
    """

    text: str
    pos: int = 0
    spans: list[tuple[int, int]] = attrs.Factory(list)

    def secret_spans(self) -> list[tuple[int, int]]:
        self._value(())
        self._skip()
        if self.pos != len(self.text):
            raise ValueError("trailing text")
        return self.spans

    def _skip(self) -> None:
        """Whitespace and comments."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() or char == "\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                ends = [text.find(c, self.pos) for c in "\n\r\u2028\u2029"]
                self.pos = min((e for e in ends if e >= 0), default=len(text))
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise ValueError("unterminated comment")
                self.pos = end + 2
            else:
                return

    def _value(self, path: tuple[_PathKey, ...]) -> None:
        self._skip()
        char = self.text[self.pos]
        if char == "{":
            self._object(path)
            return
        if char == "[":
            self._array(path)
            return
        start = self.pos
        if char in "\"'":
            self._skip_string()
        else:
            self._scalar()
        if self._is_secret_literal(path, self.text[start : self.pos]):
            self.spans.append((start, self.pos))

    @staticmethod
    def _is_secret_literal(path: tuple[_PathKey, ...], literal: str) -> bool:
        if _is_secret_path(path):
            return literal != "null"
        # Decoding every string would be slow; a URL's credentials need an "@" (or an escape).
        quoted = literal[0] in "\"'"
        return (
            quoted and ("@" in literal or "\\" in literal) and _holds_password(json5.loads(literal))
        )

    def _object(self, path: tuple[_PathKey, ...]) -> None:
        self.pos += 1
        while True:
            self._skip()
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            key = self._key()
            self._skip()
            self._expect(":")
            self._value((*path, key))
            self._end_of_item("}")

    def _array(self, path: tuple[_PathKey, ...]) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip()
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self._value((*path, index))
            index += 1
            self._end_of_item("]")

    def _end_of_item(self, closer: str) -> None:
        self._skip()
        if self.text[self.pos] == ",":
            self.pos += 1
        elif self.text[self.pos] != closer:
            raise ValueError(f"expected , or {closer}")

    def _expect(self, char: str) -> None:
        if self.text[self.pos] != char:
            raise ValueError(f"expected {char}")
        self.pos += 1

    def _skip_string(self) -> None:
        quote = self.text[self.pos]
        self.pos += 1
        while True:
            char = self.text[self.pos]
            self.pos += 2 if char == "\\" else 1
            if char == quote:
                return

    def _key(self) -> str:
        if self.text[self.pos] in "\"'":
            start = self.pos
            self._skip_string()
            key: str = json5.loads(self.text[start : self.pos])
            return key
        start = self.pos
        while self.text[self.pos] not in ":/" and not self.text[self.pos].isspace():
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise ValueError("expected a key")
        if "\\" in name:  # an identifier spelled with \uXXXX escapes
            decoded: dict[str, Any] = json5.loads("{" + name + ":0}")
            return next(iter(decoded))
        return name

    def _scalar(self) -> None:
        start, text = self.pos, self.text
        while (
            self.pos < len(text) and text[self.pos] not in ",]}/" and not text[self.pos].isspace()
        ):
            self.pos += 1
        if self.pos == start:
            raise ValueError("expected a value")
