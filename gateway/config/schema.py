"""The config schema (config.md §4, §4a) and the walk that validates a parsed file against it.

The walk substitutes `${VAR}` in the strings it reads, checks each value, and fills in the
defaults, producing a plain dict in the file's own shape ("normalized"). Each problem becomes a
ConfigIssue at its dotted path; an unknown key gets a did-you-mean. The checks across sections
(model refs, duplicate agent ids, hooks) run on the normalized dict after the walk.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from agents.config import (
    API_ANTHROPIC_MESSAGES,
    API_OPENAI_COMPLETIONS,
    DEFAULT_MAX_DISK_BYTES,
    ECHO_PROVIDER,
    AgentsConfig,
    ModelRef,
)
from agents.errors import InvalidSessionKey
from agents.keys import (
    KEY_TOO_LONG_MESSAGE,
    RESERVED_KEY_MESSAGE,
    RESERVED_PREFIXES,
    SESSION_KEY_MAX,
    normalize_session_key,
)
from agents.providers.upstream_client import upstream_target
from agents.surrogates import has_surrogate
from gateway.config.errors import ConfigIssue, join_path
from gateway.config.model import (
    DEFAULT_ALLOWED_MIMES,
    DEFAULT_SESSION_HEADERS,
    ConfigWarning,
    HooksConfig,
)
from gateway.config.secret_keys import (
    ENV_REF_RE,
    HEADER_NAME_RE,
    SECRET_IN_PATH,
    holds_password,
    is_postgres_url,
)
from gateway.edge import normalize_origin, parse_network, split_host

DEFAULT_PORT = 18789
ID_PATTERN = "[a-z0-9][a-z0-9_-]{0,63}"
IGNORED_REASON = "not implemented by clawgate"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
IMPLEMENTED_APIS = (API_OPENAI_COMPLETIONS, API_ANTHROPIC_MESSAGES)
MAX_SAFE_INTEGER = 2**53 - 1  # http-openai.md §5: OpenClaw checks max_tokens as a JS safe integer
MAX_STOP_SEQUENCES = 4  # OpenAI's limit, http-openai.md §5
MIB = 1024 * 1024

_ID_RE = re.compile(ID_PATTERN, re.IGNORECASE)
# At most 20 digits (beyond any sensible value): int() refuses strings over 4,300 digits with
# a ValueError, which would escape validation.
_DURATION_RE = re.compile(r"([0-9]{1,20})(ms|s|m|h|d)")
_DURATION_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_BYTE_SIZE_RE = re.compile(r"([0-9]{1,20})\s*(b|kb|mb|gb|tb)")
_BYTE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


class Invalid:
    """A value that failed its check; the issue is already recorded."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Final = Invalid()


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


def wrong_type(expected: str, value: Any) -> str:
    return f"expected {expected}, got {_type_name(value)}"


def show(value: Any) -> str:
    """A value as an issue line quotes it. The lines are logged and shown by health and
    config.get: a URL that holds a secret (secret_keys.holds_password), pasted where some
    other value belongs, is not quoted."""
    if holds_password(value):
        return "a value not shown: it may hold a password"
    return json.dumps(value, ensure_ascii=False)


def shown_url(text: str) -> str:
    """A URL or origin as an issue line says it. The lines are logged and shown by health and
    config.get: one that may carry a user and password (even a mistyped one: `https:/me:pw@host`)
    or a key in its query (`?key=`, `?password=`) or in its path (a Slack, Discord or Telegram
    webhook) is not."""
    if "@" in text or "=" in text or SECRET_IN_PATH.search(text) is not None:
        return "not shown: it may hold a password"
    return f"got {show(text)}"


# A double's range; json5 reads `0x…` of any length, and Python will not even print an integer
# of more than 4300 digits.
_LARGEST_INTEGER_BITS = 1024


def non_json_number(value: Any, path: str = "") -> ConfigIssue | None:
    """The first number in `value` that JSON cannot carry, as an issue at its path, or None.

    JSON5 has NaN and ±Infinity; config.get answers in JSON, config.patch writes the file as
    JSON and params go upstream as JSON, none of which has them.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return ConfigIssue(path, f"must be a finite number (got {show(value)})")
    if _is_int(value) and value.bit_length() > _LARGEST_INTEGER_BITS:
        return ConfigIssue(path, "must be a finite number (got an integer of more than 308 digits)")
    items: Any = ()
    if isinstance(value, dict):
        items = ((join_path(path, key), item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    for item_path, item in items:
        if isinstance(item, dict | list | float | int):
            issue = non_json_number(item, item_path)
            if issue is not None:
                return issue
    return None


def _is_int(value: Any) -> bool:
    # A JSON integer only: `true` is not 1, and `1.0` (a float after parsing) is a number.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


@attrs.define
class Checker:
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

    def issue(self, path: str, message: str) -> Invalid:
        self.issues.append(ConfigIssue(path, message))
        return INVALID

    def warn(self, path: str, message: str, *, event: str = "config_warning") -> None:
        self.warnings.append(ConfigWarning(path, message, event))

    def wrong_type(self, path: str, expected: str, value: Any) -> Invalid:
        return self.issue(path, wrong_type(expected, value))

    def string(self, value: Any, path: str) -> str | Invalid:
        if not isinstance(value, str):
            return self.wrong_type(path, "string", value)
        return self.substitute(value, path)

    def substitute(self, text: str, path: str) -> str | Invalid:
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

        references = [m[0] for m in ENV_REF_RE.finditer(text) if not m[0].startswith("$$")]
        if references and path not in self.expandable:
            message = (
                f"{references[0]} is not expanded here: environment variables are expanded"
                " only in secret values (a token, password, key or header value)"
            )
            return self.issue(path, message)
        result = ENV_REF_RE.sub(replace, text)
        for name in missing:
            self.issue(path, f'Missing env var "{name}" referenced at config path: {path}')
        return INVALID if missing else result

    def plain(self, value: Any, path: str) -> Any:
        """A free-form value (extra provider params): substituted, otherwise taken as it is."""
        if isinstance(value, str):
            return self.substitute(value, path)
        if isinstance(value, list):
            return [self.plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {key: self.plain(item, join_path(path, key)) for key, item in value.items()}
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

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        raise NotImplementedError


def _in_range(value: Any, low: float | None, high: float | None, path: str, ctx: Checker) -> Any:
    if low is not None and high is not None:
        if not low <= value <= high:  # written so that NaN fails too
            return ctx.issue(path, f"must be between {low} and {high} (got {show(value)})")
    elif low is not None and not value >= low:
        return ctx.issue(path, f"must be >= {low} (got {show(value)})")
    return value


@attrs.frozen
class _Int(_Node):
    """An integer; where no bound is named, within ±MAX_SAFE_INTEGER all the same: OpenClaw
    (JavaScript) holds no larger integer exactly, and ms or seconds beyond a float (the
    limiter's clock, asyncio's timers) would fail where they are used, on every request."""

    low: int | None = None
    high: int | None = None

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not _is_int(value):
            return ctx.wrong_type(path, "integer", value)
        low, high = self.low, self.high
        if abs(value) > MAX_SAFE_INTEGER and (low is None or value >= low):
            low = -MAX_SAFE_INTEGER if low is None else low
            high = MAX_SAFE_INTEGER if high is None else high
        return _in_range(value, low, high, path, ctx)


@attrs.frozen
class _Number(_Node):
    low: float | None = None
    high: float | None = None

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not _is_number(value):
            return ctx.wrong_type(path, "number", value)
        return _in_range(value, self.low, self.high, path, ctx)


@attrs.frozen
class _Bool(_Node):
    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not isinstance(value, bool):
            return ctx.wrong_type(path, "boolean", value)
        return value


@attrs.frozen
class _FalseOnly(_Node):
    """A boolean clawgate cannot honour when true: a warning, and it counts as false."""

    warning: str

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not isinstance(value, bool):
            return ctx.wrong_type(path, "boolean", value)
        if value:
            ctx.warn(path, self.warning)
        return False


@attrs.frozen
class _Str(_Node):
    non_empty: bool = False
    trimmed: bool = False  # surrounding whitespace dropped

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if self.trimmed and isinstance(text, str):
            text = text.strip()
        if self.non_empty and text == "":
            return ctx.issue(path, "must not be empty")
        return text


@attrs.frozen
class _Choice(_Node):
    values: tuple[str, ...]
    aliases: Mapping[str, str] = attrs.field(factory=dict)  # OpenClaw spellings we accept
    refused: Mapping[str, str] = attrs.field(factory=dict)  # OpenClaw values we cannot serve

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        if text in self.refused:
            return ctx.issue(path, self.refused[text])
        if text in self.values:
            return text
        if text in self.aliases:
            return self.aliases[text]
        accepted = ", ".join(show(v) for v in (*self.values, *self.aliases))
        return ctx.issue(path, f"must be one of {accepted} (got {show(text)})")


@attrs.frozen
class _Duration(_Node):
    """`"30d"`, `"12h"`, `"90m"`, `"45s"` (and `"500ms"`), or integer milliseconds; in ms."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if _is_int(value):
            return _in_range(value, 0, None, path, ctx)
        if not isinstance(value, str):
            return ctx.wrong_type(path, "string or integer", value)
        text = ctx.substitute(value, path)
        if isinstance(text, Invalid):
            return text
        match = _DURATION_RE.fullmatch(text.strip())
        if match is None:
            return ctx.issue(
                path,
                'must be a duration like "30d", "12h", "90m", "45s" or integer milliseconds'
                f" (got {show(text)})",
            )
        return int(match[1]) * _DURATION_UNIT_MS[match[2]]


@attrs.frozen
class _ByteSize(_Node):
    """`"500mb"`, `"10gb"`, `"64kb"`, `"100b"` (binary units), integer bytes, or `false` (0)."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if value is False:
            return 0
        if _is_int(value):
            return _in_range(value, 0, None, path, ctx)
        if not isinstance(value, str):
            return ctx.wrong_type(path, "string, integer or false", value)
        text = ctx.substitute(value, path)
        if isinstance(text, Invalid):
            return text
        match = _BYTE_SIZE_RE.fullmatch(text.strip().lower())
        if match is None:
            return ctx.issue(
                path,
                f'must be a size like "500mb", "10gb", "64kb" or integer bytes (got {show(text)})',
            )
        return int(match[1]) * _BYTE_UNITS[match[2]]


@attrs.frozen
class _Url(_Node):
    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        try:
            parts = urlsplit(text)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # e.g. an unbalanced `[` in the host
            valid = False
        if not valid:
            return ctx.issue(path, f"must be an http(s) URL ({shown_url(text)})")
        try:
            upstream_target(text)  # what the upstream client refuses to send to
        except ValueError as exc:
            return ctx.issue(path, str(exc))  # not the URL: it may hold a password
        return text


@attrs.frozen
class _List(_Node):
    item: _Node

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
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
    # A key with a problem may be a secret (a header's name: secret_keys.hidden_key): its
    # issue is the map's, naming the entry by its number, not by the key.
    hide_bad_keys: bool = False

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        entries = {}
        for number, (key, item) in enumerate(value.items(), 1):
            item_path = join_path(path, key)
            problem = self.key_problem(key) if self.key_problem else None
            if problem is not None and self.hide_bad_keys:
                ctx.issue(path, f"entry {number}: {problem}")
                continue
            ctx.visit(item_path)
            if problem is not None:
                ctx.issue(item_path, problem)
                continue
            entries[key] = self.value.check(item, item_path, ctx)
        return entries


@attrs.frozen
class _Origin(_Node):
    """An exact browser origin, `scheme://host[:port]`; stored normalized (lowercase)."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        origin = normalize_origin(text)
        if origin is None:
            shown = shown_url(text)
            return ctx.issue(path, f"must be an origin like https://host[:port] ({shown})")
        return origin


@attrs.frozen
class _HostName(_Node):
    """A host name or address as a Host header names it, without port; stored lowercase."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
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
                path, f"must be a host name or address without port (got {show(text)})"
            )
        return host


@attrs.frozen
class _Network(_Node):
    """An IP address or a CIDR network."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        if parse_network(text) is None:
            return ctx.issue(path, f"must be an IP address or CIDR (got {show(text)})")
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

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        normalized = {}
        for key, item in value.items():
            key_path = join_path(path, key)
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
                ctx.issue(join_path(path, key), "is required")
            elif isinstance(spec.node, _Section | _FalseOr):
                normalized[key] = spec.node.check({}, join_path(path, key), ctx)
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

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
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

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
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

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
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

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if isinstance(value, str):
            ref = _MODEL_REF.check(value, path, ctx)
            return ref if isinstance(ref, Invalid) else [ref]
        if isinstance(value, dict):
            chain = _MODEL_CHAIN.check(value, path, ctx)
            fallbacks = chain.get("fallbacks", INVALID)
            if isinstance(fallbacks, Invalid):
                return fallbacks
            refs = [chain.get("primary", INVALID), *fallbacks]
            return INVALID if any(isinstance(r, Invalid) for r in refs) else refs
        return ctx.wrong_type(path, "string or object", value)


_HEADER_NAME_RE = HEADER_NAME_RE


@attrs.frozen
class _HeaderName(_Node):
    """An HTTP header name, kept lowercased."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        if _HEADER_NAME_RE.fullmatch(text) is None:
            return ctx.issue(path, f'not a header name: "{text}"')
        return text.lower()


def _header_name_problem(key: str) -> str | None:
    if _HEADER_NAME_RE.fullmatch(key):
        return None
    # Not quoted: a whole header written as the name (`"Authorization: Bearer sk-…": "x"`)
    # holds the secret.
    return (
        "its name is not a header name, and is not shown as it may hold a secret (a header"
        ' is written {"Authorization": "Bearer …"}, not as one string)'
    )


@attrs.frozen
class _HeaderValue(_Node):
    """A string sent in an upstream request's head (a header value, an API key), which the
    upstream client refuses with a line break or a NUL (a header of its own) and cannot
    write beyond Latin-1. Checked here, not at each turn; the value, a secret, is not shown."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        try:
            text.encode("latin-1")
            sendable = not any(char in text for char in "\r\n\0")
        except UnicodeEncodeError:
            sendable = False
        if not sendable:
            return ctx.issue(
                path,
                "cannot be sent in an HTTP header (it has a line break, a NUL or a character"
                " beyond Latin-1)",
            )
        return text


# C0 controls and DEL: no header (`Authorization: Bearer …`, `x-openclaw-token`) carries
# them. A tab is left: a header value may hold one (RFC 9110 §5.5).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# A lone surrogate: a byte that is no UTF-8 in the environment or a flag (Python decodes
# them with surrogateescape), or a `\udcXX` escape in the file.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def credential_problem(secret: str) -> str | None:
    """Why no client could ever present `secret` (a token or password it must send), or None.
    A gateway started with one would refuse every client; the secret is not shown."""
    if _CONTROL_RE.search(secret) is not None:
        return (
            "has a control character (such as a line break or a NUL), which no client can send"
            " in a header; the value is not shown"
        )
    if _SURROGATE_RE.search(secret) is not None:
        # No WebSocket frame carries one (a text frame is UTF-8; a sender replaces it), and a
        # client typing the character sends its UTF-8, which never matches: mostly it is an
        # environment file saved in another encoding (Latin-1's `ä`).
        return (
            "is not valid UTF-8 (a byte of another encoding, such as an environment file saved"
            " as Latin-1, or a lone surrogate escape such as \\udce4), which no WebSocket"
            " client can send; the value is not shown"
        )
    return None


@attrs.frozen
class _Credential(_Node):
    """A secret clients present to the gateway: `gateway.auth.token`/`password`, `hooks.token`."""

    trimmed: bool = False

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = _Str(trimmed=self.trimmed).check(value, path, ctx)
        if text == "" and isinstance(value, str) and value:
            # Written, so meant as a secret: taken as unset it started token mode with a
            # generated token, whatever the operator meant. `""` stays unset, as an empty
            # variable does; a flag of only whitespace is refused alike (overrides.py).
            return ctx.issue(path, "is only whitespace")
        if isinstance(text, str):
            problem = credential_problem(text)
            if problem is not None:
                return ctx.issue(path, problem)
        return text


@attrs.frozen
class _Stop(_Node):
    """OpenAI's `stop`: a non-empty string or up to 4 of them."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
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

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        params = {}
        for key, item in value.items():
            item_path = join_path(path, key)
            ctx.visit(item_path)
            node = self.known.get(key)
            params[key] = node.check(item, item_path, ctx) if node else ctx.plain(item, item_path)
        return params


@attrs.frozen
class IgnoredProvider:
    """A provider whose `api` clawgate does not implement: loads, but no agent may use it."""

    api: str


@attrs.frozen
class _Provider(_Node):
    section: _Section

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        if not isinstance(value, dict):
            return ctx.wrong_type(path, "object", value)
        api_path = join_path(path, "api")
        if "api" in value:
            api = ctx.string(value["api"], api_path)
            if isinstance(api, Invalid):
                return api
            if api not in IMPLEMENTED_APIS:
                ctx.warn(api_path, f'api "{api}" is not implemented; provider ignored')
                return IgnoredProvider(api)
        provider = self.section.check(value, path, ctx)
        if isinstance(provider, dict) and "baseUrl" not in provider:
            if provider["api"] == API_OPENAI_COMPLETIONS:
                ctx.issue(join_path(path, "baseUrl"), "is required")
            else:
                provider["baseUrl"] = ANTHROPIC_BASE_URL
        return provider


# --- `hooks` and `agents.defaults.embeddingModel` ------------------------------------------


@attrs.frozen
class _EmbeddingModelRef(_Node):
    """`"provider/model"`; the provider is checked after the walk (check_embedding_model).
    Unlike an agent's model it need not be in the provider's `models`, which lists chat models."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        try:
            return ModelRef.parse(text)
        except ValueError as exc:
            return ctx.issue(path, str(exc))


# Paths the gateway serves itself: a hooks path over them would shadow them.
_OWN_PATHS = ("/v1", "/health", "/healthz", "/ready", "/readyz", "/metrics", "/ui")
_HOOKS_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")


@attrs.frozen
class _HooksPath(_Node):
    """OpenClaw's normalization: one leading slash, no trailing one, never `/` alone."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        text = "/" + text.strip().strip("/")
        if text == "/":
            return ctx.issue(path, 'may not be "/"')
        if _HOOKS_PATH_RE.fullmatch(text) is None:
            return ctx.issue(path, f"must be a URL path like /hooks (got {show(text)})")
        if any(text == own or text.startswith(own + "/") for own in _OWN_PATHS):
            return ctx.issue(path, f"must not be under one of clawgate's own paths (got {text})")
        return text


# `gateway.controlUi.basePath`: letters, digits and `-._~` per segment. It is written into
# the page's HTML (links, an attribute) and compared with request paths as they are decoded,
# so nothing that HTML or percent-decoding would read another way.
_BASE_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
BASE_PATH_MAX = 200  # far beyond any mount point; bounds what each page and request repeats


@attrs.frozen
class _ControlUiBasePath(_Node):
    """OpenClaw's normalization (`normalizeControlUiBasePath`): trimmed, one leading slash, no
    trailing one, `/` alone the root (""). No `.` or `..` segment, no query, no fragment."""

    def check(self, value: Any, path: str, ctx: Checker) -> Any:
        text = ctx.string(value, path)
        if isinstance(text, Invalid):
            return text
        text = text.strip()
        if text in ("", "/"):
            return ""
        text = ("" if text.startswith("/") else "/") + text.removesuffix("/")
        if len(text) > BASE_PATH_MAX:
            return ctx.issue(path, f"must have at most {BASE_PATH_MAX} characters")
        segments = text.split("/")[1:]
        if _BASE_PATH_RE.fullmatch(text) is None or any(set(s) == {"."} for s in segments):
            return ctx.issue(path, f"must be a URL path like /openclaw (got {show(text)})")
        if any(text == own or text.startswith(own + "/") for own in _OWN_PATHS):
            return ctx.issue(
                path, f"must not be one of clawgate's own paths or under one (got {text})"
            )
        return text


def check_control_ui_base_path(ctx: Checker, normalized: Any) -> None:
    """The hooks are answered before any route: a base path over or under their path would
    lose those pages to them."""
    base = dig(normalized, "gateway", "controlUi", "basePath")
    hooks = dig(normalized, "hooks", "path")
    if not isinstance(base, str) or not base or not isinstance(hooks, str):
        return
    if base == hooks or base.startswith(hooks + "/") or hooks.startswith(base + "/"):
        ctx.issue(
            "gateway.controlUi.basePath",
            f"must not overlap hooks.path ({hooks}): the hooks would shadow the Control UI's pages",
        )


_HOOKS = _Section(
    {
        "enabled": _Key(_Bool(), False),
        # Trimmed, as OpenClaw does and as a presented token is (a pasted token often ends in a
        # newline, which would match nothing). Required when enabled (check_hooks).
        "token": _Key(_Credential(trimmed=True)),
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


def check_store(ctx: Checker, store: Any) -> None:
    """The keys each backend takes; the loader reads `passwordFile` once this passes."""
    if not isinstance(store, dict) or isinstance(store.get("backend"), Invalid):
        return
    url = store.get("url")
    if store["backend"] == "sqlite":
        for key in ("url", "password", "passwordFile"):
            if key in store:
                ctx.issue(f"store.{key}", 'applies to the "postgres" backend only')
        return
    if url is None:
        ctx.issue("store.url", 'is required with the "postgres" backend')
    elif isinstance(url, str) and not is_postgres_url(url):
        ctx.issue("store.url", URL_ISSUE)
    if "password" in store and "passwordFile" in store:
        ctx.issue("store.passwordFile", "give password or passwordFile, not both")


URL_ISSUE = "must be a postgresql:// URL with a host, or a socket directory in ?host=/…"


def check_embedding_model(ctx: Checker, normalized: dict[str, Any]) -> None:
    path = "agents.defaults.embeddingModel"
    ref = dig(normalized, "agents", "defaults", "embeddingModel")
    providers = dig(normalized, "models", "providers")
    if not isinstance(ref, ModelRef) or not isinstance(providers, dict):
        return  # absent, or an issue already recorded
    if ref.provider == ECHO_PROVIDER:
        return  # echo's offline vectors
    provider = providers.get(ref.provider)
    if isinstance(provider, Invalid):
        return
    if isinstance(provider, IgnoredProvider):
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


def check_hooks(ctx: Checker, hooks: Any) -> None:
    """OpenClaw's rules: a token when enabled; a default key inside the allowed prefixes."""
    if not isinstance(hooks, dict):
        return
    if hooks.get("enabled") is True and not hooks.get("token"):
        ctx.issue("hooks.token", "is required when hooks.enabled is true")
    prefixes = hooks.get("allowedSessionKeyPrefixes")
    default_key = hooks.get("defaultSessionKey")
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        return
    # A default key is checked against the prefixes as a call's key is, once the agents are
    # known (default_session_key_issues).
    if default_key is None and not _key_allowed("hook:example", prefixes):
        message = "must include 'hook:' when hooks.defaultSessionKey is unset"
        ctx.issue("hooks.allowedSessionKeyPrefixes", message)


def default_session_key_issues(hooks: HooksConfig, agents: AgentsConfig) -> list[ConfigIssue]:
    """Why `hooks.defaultSessionKey` would fail every /hooks/agent call that names no session,
    each a 400 that blames the caller's `sessionKey`; checked as a call's key is
    (gateway.http.hooks_wire.hook_session_key)."""
    raw = hooks.default_session_key
    if raw is None:
        return []
    path = "hooks.defaultSessionKey"
    if _CONTROL_RE.search(raw) or has_surrogate(raw):
        return [ConfigIssue(path, f"is not a valid session key (got {show(raw)})")]
    try:
        key = normalize_session_key(
            raw, agents.default_agent.id, agents.main_key, reject_reserved=True
        )
    except InvalidSessionKey as exc:
        problem = {
            RESERVED_KEY_MESSAGE: "uses a reserved internal session namespace"
            f" ({', '.join(RESERVED_PREFIXES)})",
            KEY_TOO_LONG_MESSAGE: "is longer than a session key may be"
            f" ({SESSION_KEY_MAX} characters)",
        }.get(exc.message, f"is not a valid session key (got {show(raw)})")
        return [ConfigIssue(path, problem)]
    _, agent_id, rest = key.split(":", 2)
    if agents.agent(agent_id) is None:
        return [ConfigIssue(path, f"names agent {show(agent_id)}, which is not in agents.list")]
    allowed = hooks.allowed_agent_ids
    if allowed is not None and "*" not in allowed and agent_id not in allowed:
        message = f"names agent {show(agent_id)}, which hooks.allowedAgentIds does not allow"
        return [ConfigIssue(path, message)]
    prefixes = hooks.allowed_session_key_prefixes
    if prefixes is not None and not (key.startswith(prefixes) or rest.startswith(prefixes)):
        return [ConfigIssue(path, "must match hooks.allowedSessionKeyPrefixes")]
    return []


def check_hooks_token(
    ctx: Checker, normalized: dict[str, Any], generated: str | None = None
) -> None:
    """As OpenClaw: the hook token is a second, distinct secret (after env and flags), also
    from the token in the state dir (`generated`) that a config without one runs with. Unlike
    OpenClaw, not the gateway's password either: the hook token is handed to automation
    services, and with it the gateway's own credential."""
    hooks_token = dig(normalized, "hooks", "token")
    auth = dig(normalized, "gateway", "auth")
    if not isinstance(hooks_token, str) or not hooks_token or not isinstance(auth, dict):
        return
    if auth.get("mode") == "token" and (auth.get("token") or generated) == hooks_token:
        message = "must not match the gateway auth token; set a distinct hooks.token"
        ctx.issue("hooks.token", message)
    if auth.get("mode") == "password" and auth.get("password") == hooks_token:
        message = "must not match the gateway auth password; set a distinct hooks.token"
        ctx.issue("hooks.token", message)


# --- The schema (config.md §4, §4a) ----------------------------------------------------------


def _words(names: str) -> tuple[str, ...]:
    return tuple(names.split())


_UNSUPPORTED_BIND = "not supported by clawgate (use loopback, lan or custom)"

_RATE_LIMIT = _Section(
    {
        "maxAttempts": _Key(_Int(1), 10),
        "windowMs": _Key(_Int(1), 60_000),
        "lockoutMs": _Key(_Int(1), 300_000),
        # false by default: a web page is a loopback client too (gateway/config/model.py).
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
        # Trimmed as the secret files' and the environment's are: a presented token or
        # password is trimmed, so surrounding whitespace (a pasted newline) would match nothing.
        "token": _Key(_Credential(trimmed=True)),
        "password": _Key(_Credential(trimmed=True)),
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

_RESPONSES = _Section(
    {
        "enabled": _Key(_Bool(), False),
        "maxBodyBytes": _Key(_Int(1), 20 * MIB),
    },
    # OpenClaw's input_file and URL inputs: clawgate takes base64 images only.
    ignored=("maxUrlParts", "files", "images"),
)

_HTTP = _Section(
    {
        "endpoints": _Key(
            _Section({"chatCompletions": _Key(_CHAT_COMPLETIONS), "responses": _Key(_RESPONSES)})
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
                {
                    # No default: unset means on for a loopback bind, off otherwise
                    # (GatewayConfig.control_ui_enabled).
                    "enabled": _Key(_Bool()),
                    "allowedOrigins": _Key(_List(_Origin()), ()),
                    # A directory of a Control UI build served at `/` instead of ours; the
                    # loader checks it and makes it absolute (gateway/http/controlui_root.py).
                    "root": _Key(_Str(non_empty=True)),
                    # The path the UI is served under ("" for `/`): gateway/http/controlui.py.
                    "basePath": _Key(_ControlUiBasePath(), ""),
                },
                ignored=_words(
                    "allowInsecureAuth dangerouslyDisableDeviceAuth"
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
        "metrics": _Key(_Section({"enabled": _Key(_Bool(), True), "public": _Key(_Bool(), False)})),
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
        "apiKey": _Key(_HeaderValue()),
        "headers": _Key(_Map(_HeaderValue(), _header_name_problem, hide_bad_keys=True), {}),
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

ROOT = _Section(
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


def holds_path(path: str) -> bool:
    """Whether a dotted config path (`gateway.auth.mode`, `agents.list[].id`) is one of
    clawgate's keys: False once it leaves them (an OpenClaw section ignored here, or none).
    Inside a list or a map of chosen names every deeper path counts as held."""
    node: _Node = ROOT
    for segment in path.split("."):
        name = segment.removesuffix("[]")
        if isinstance(node, _FalseOr):
            node = node.section
        if not isinstance(node, _Section):
            return True
        key = node.keys.get(name)
        if key is None:
            return False
        node = key.node
    return True


# --- Checks across sections ------------------------------------------------------------------


def dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return INVALID
        value = value.get(key, INVALID)
    return value


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def check_model_refs(ctx: Checker, providers: Any) -> None:
    if not isinstance(providers, dict):
        return  # the providers' own issue is already recorded
    usable = {pid: p for pid, p in providers.items() if isinstance(p, dict)}
    for path, ref in ctx.model_refs:
        provider = providers.get(ref.provider)
        if ref.provider == ECHO_PROVIDER or isinstance(provider, Invalid):
            continue  # echo takes any model id; a broken provider has its own issue
        if isinstance(provider, IgnoredProvider):
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


def check_agent_list(ctx: Checker, agents: Any) -> None:
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
