"""Typed failures of the agents layer.

Each carries the message a client may see; upstream details (bodies, keys) never go into it.
The gateway maps the classes to HTTP statuses and WS error codes (http-openai.md §8).
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class; `message` is safe to show to a client."""

    message = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        # `detail` is for logs only.
        super().__init__(detail or self.message)
        self.detail = detail


class UnknownAgent(AgentError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"unknown agent {agent_id!r}")
        self.agent_id = agent_id
        self.message = f"Unknown agent '{agent_id}'."


class InvalidSessionKey(AgentError):
    message = "Invalid session key."

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SessionChanged(AgentError):
    """A delete named the session it meant (`expected_session_id`), and the key holds
    another one now (reset, or deleted and made again): nothing is deleted."""

    def __init__(self, key: str) -> None:
        super().__init__(f"session {key} changed")
        self.message = f"Session {key} changed before deletion. Retry."  # OpenClaw's


class SessionNotArchived(AgentError):
    """A delete of archived sessions only (`archivedOnly`) named one that is not archived."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.message = f"Session {key} is not archived. Archive it first, then delete it."


class SessionArchivedPin(AgentError):
    """A pin named an archived session (OpenClaw's: restore it first)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"session {key} is archived")
        self.message = "cannot pin an archived session; restore it first"  # OpenClaw's


class SessionArchived(AgentError):
    """New work (a turn, a session created with a message) named an archived session."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.message = f'Session "{key}" is archived. Restore it before starting new work.'


class UnansweredResult(AgentError):
    """A turn's tool message answers no call of the assistant message before it."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"tool result for unknown call {call_id!r}")
        self.message = (
            f"Invalid tool result for '{call_id}': it answers no tool call before it (an"
            " unknown id, or a call already answered)."
        )


class TurnsBacklogged(AgentError):
    """The gateway holds as many turns waiting to run as it takes (`SessionRegistry`'s
    `max_waiting_turns`, `max_waiting_chars`): worth a retry once one has started."""

    message = "too many turns waiting to run in the gateway; retry after one has started"

    def __init__(self, limit: int, limit_chars: int) -> None:
        super().__init__(f"turns waiting: limit {limit} turns, {limit_chars} characters")
        self.limit = limit
        self.limit_chars = limit_chars


class StoreError(AgentError):
    """The session store failed; the run fails as `internal error`."""


class StoreUnavailable(StoreError):
    """The shared database cannot be reached now (down, restarting): worth a retry later."""


class UnusableStore(StoreError):
    """The store holds what this version cannot use (not a database, a newer schema): a
    restart would meet it again."""


class UnsafeStoreFile(StoreError):
    """A database file is a symlink or not a regular file: refused, never followed."""


class UpstreamError(AgentError):
    """Any failure of a network provider: 5xx/4xx, refused, reset, DNS, TLS, bad stream."""

    message = "upstream provider error"


class UpstreamStatusError(UpstreamError):
    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(detail or f"upstream answered HTTP {status}")
        self.status = status
        # Why the upstream refused the request (`refused`), from its error body: scrubbed of
        # the provider's credentials and bounded (agents.providers.upstream.refusal_reason),
        # so a client may be shown it; None when it gave none, or did not refuse.
        self.reason: str | None = None

    @property
    def refused(self) -> bool:
        """The upstream refused the request itself as bad (its messages, its size): asked
        again as it was, it is refused again (agents/history.py)."""
        return self.status in REFUSED_STATUSES


# The statuses of an upstream that refuses the request as bad: 400 (a message or an image it
# cannot take), 413 (too large), 422 (a message it rejects, a context too long). Not 401,
# 403, 429 or 5xx, which say nothing about the request's messages.
REFUSED_STATUSES = frozenset({400, 413, 422})
# How a turn the upstream refused as bad is stored: its reply's errorMessage begins with it;
# the client is told it too, with the upstream's reason (`client_message`).
REFUSED_ERROR = "upstream provider refused the request"


def refused(error: AgentError | None) -> bool:
    """The upstream refused the request as bad (`REFUSED_STATUSES`)."""
    return isinstance(error, UpstreamStatusError) and error.refused


def client_message(error: AgentError) -> str:
    """The message a client is shown for `error`: its class's, but for a request the upstream
    refused as bad (a `max_tokens` above the model's limit, a schema it does not take),
    `REFUSED_ERROR`, the status and the upstream's reason when it gave one (scrubbed of the
    provider's credentials and bounded: `UpstreamStatusError.reason`). The client can only
    fix what it is told; the status it gets stays the spec's (502)."""
    if isinstance(error, UpstreamStatusError) and error.refused:
        told = f"{REFUSED_ERROR} (HTTP {error.status})"
        return f"{told}: {error.reason}" if error.reason else told
    return error.message


def stored_error(error: AgentError) -> str:
    """The errorMessage a failed turn's reply is stored with: the client's message, or for a
    request the upstream refused as bad, `REFUSED_ERROR` and its status."""
    if isinstance(error, UpstreamStatusError) and error.refused:
        return f"{REFUSED_ERROR} (HTTP {error.status})"
    return error.message


class UpstreamRateLimited(UpstreamError):
    """HTTP 429. `retry_after` in seconds (rounded up), None when the upstream gave none."""

    message = "upstream provider rate limited"

    def __init__(self, retry_after: int | None, detail: str | None = None) -> None:
        super().__init__(detail or "upstream answered HTTP 429")
        self.retry_after = retry_after


class UpstreamAuthFailed(UpstreamError):
    """HTTP 401/403 from the upstream: our API key is wrong, not the client's token."""

    message = "upstream provider authentication failed"

    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(detail or f"upstream answered HTTP {status}")
        self.status = status


class UpstreamTimeout(UpstreamError):
    """Connect timeout, idle-read timeout, or the run's own timeout."""

    message = "upstream provider timeout"


class RunTimedOut(UpstreamTimeout):
    """The run's own deadline passed (the agent's `timeoutSeconds`, or the one its caller
    chose): answered as any timeout, but no failure of the provider (gateway/metrics.py)."""


class MalformedStream(UpstreamError):
    """The upstream's stream could not be parsed, or carried an in-stream error."""
