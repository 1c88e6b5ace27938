"""Session keys (agents-sessions.md §4, http-openai.md §4.2): pure functions, no I/O.

A canonical key is `agent:<agentId>:<rest>`, lowercase, at most 512 characters. HTTP and WS
both normalise client input with `normalize_session_key`; the error messages are the HTTP
layer's wire text (the WS layer may reword them).
"""

from __future__ import annotations

import re

from agents.errors import InvalidSessionKey

# OpenClaw's limit; a key is also a primary key and appears in every event, so it stays short.
SESSION_KEY_MAX = 512

AGENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
RESERVED_PREFIXES = ("subagent:", "cron:", "acp:")

INVALID_KEY_MESSAGE = "Invalid `x-openclaw-session-key`."
KEY_TOO_LONG_MESSAGE = f"Session key too long (max {SESSION_KEY_MAX} characters)."
RESERVED_KEY_MESSAGE = "`x-openclaw-session-key` cannot use reserved internal session namespaces."

_AGENT_PREFIX = "agent:"


def _split(key: str) -> tuple[str, str] | None:
    """`agent:<id>:<rest>` → (id, rest) when the shape and the id are valid."""
    if not key.startswith(_AGENT_PREFIX):
        return None
    agent_id, sep, rest = key[len(_AGENT_PREFIX) :].partition(":")
    if not sep or not rest or AGENT_ID_RE.fullmatch(agent_id) is None:
        return None
    return agent_id, rest


def normalize_session_key(
    raw: str, agent_id: str, main_key: str = "main", *, reject_reserved: bool = False
) -> str:
    """A client's key → the canonical key (§4: trim, lowercase, `main`, `agent:`, prefix).

    `agent_id` is the selected (HTTP) or default (WS) agent; an `agent:` key names its own.
    With `reject_reserved` (HTTP) the reserved namespaces are refused, checked before the
    `agent:` shape as http-openai.md §4.2 orders them. Whether the key's agent is configured
    is the caller's check. An empty key is invalid: HTTP treats it as absent before calling.
    """
    key = raw.strip().lower()
    if not key:
        raise InvalidSessionKey(INVALID_KEY_MESSAGE)
    main_key = main_key.lower()
    if reject_reserved and is_reserved(key):
        raise InvalidSessionKey(RESERVED_KEY_MESSAGE)
    if key in ("main", main_key):
        key = f"{_AGENT_PREFIX}{agent_id.lower()}:{main_key}"
    elif key.startswith(_AGENT_PREFIX):
        if _split(key) is None:
            raise InvalidSessionKey(INVALID_KEY_MESSAGE)
    else:
        key = f"{_AGENT_PREFIX}{agent_id.lower()}:{key}"
    if len(key) > SESSION_KEY_MAX:
        raise InvalidSessionKey(KEY_TOO_LONG_MESSAGE)
    return key


def parse_session_key(key: str) -> tuple[str, str]:
    """A canonical key → `(agent_id, rest)`; InvalidSessionKey when it is not canonical."""
    parts = _split(key) if key == key.lower() and len(key) <= SESSION_KEY_MAX else None
    if parts is None:
        raise InvalidSessionKey(INVALID_KEY_MESSAGE)
    return parts


def is_reserved(key: str) -> bool:
    """`subagent:`, `cron:`, `acp:` at the start or right after `agent:<id>:`."""
    key = key.strip().lower()
    if key.startswith(RESERVED_PREFIXES):
        return True
    parts = _split(key)
    return parts is not None and parts[1].startswith(RESERVED_PREFIXES)


def is_main_key(key: str, main_key: str = "main") -> bool:
    """True for `agent:<any id>:<mainKey>`: main sessions of every agent, removed ones too."""
    parts = _split(key)
    return parts is not None and parts[1] == main_key.lower()
