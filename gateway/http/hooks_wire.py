"""OpenClaw's webhook payloads (`POST <hooks.path>/agent`, `/wake`), Sans-I/O: the fields,
the agent and session policy of the `hooks` config, and the answers.

Field names, defaults and most messages follow OpenClaw's `hooks.ts`; errors use the gateway's
one error shape rather than OpenClaw's `{ok: false, error}`. What clawgate cannot do is
refused rather than ignored where ignoring would change the outcome (`model`, `thinking`,
`mode: "next-heartbeat"`); delivery to chat channels (`deliver`, `channel`, `to`) and the
main-session heartbeat (`wakeMode`) have no counterpart and are accepted without effect.

An idempotency key (the `Idempotency-Key` or `x-openclaw-idempotency-key` header, else
`idempotencyKey`) makes a retried /agent call answer with the run of the first one, as
OpenClaw's replay cache does, for as long as the registry remembers finished runs; the
processes that share a PostgreSQL store claim each call there first (gateway/http/hooks.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from agents.config import AgentsConfig
from agents.errors import InvalidSessionKey
from agents.ids import uuid7
from agents.keys import INVALID_KEY_MESSAGE, RESERVED_KEY_MESSAGE, normalize_session_key
from agents.providers.base import Usage
from agents.runs import RunOutcome, RunStatus
from gateway.config.model import HooksConfig
from gateway.http.openai_wire import (
    API_ERROR,
    UNSUPPORTED,
    RequestError,
    bad_request,
    json_type,
    usage_body,
)
from gateway.jsonwire import has_surrogate, spells_surrogate, strict_loads

TOKEN_HEADER = "x-openclaw-token"
QUERY_TOKEN_MESSAGE = (
    "Hook token must be provided via Authorization: Bearer <token> or X-OpenClaw-Token header"
    " (query parameters are not allowed)."
)
AGENT_POLICY_MESSAGE = "agentId is not allowed by hooks.allowedAgentIds"
SESSION_KEY_POLICY_MESSAGE = (
    "sessionKey is disabled for external /hooks/agent payloads;"
    " set hooks.allowRequestSessionKey=true to enable"
)
WAKE_PREFIX = "System: "  # how OpenClaw shows a system event to the model
MAX_TIMEOUT_SECONDS = 365 * 24 * 3600
MAX_IDEMPOTENCY_KEY = 256  # OpenClaw's bound; a longer key is no key, as there
IDEMPOTENCY_HEADERS = ("Idempotency-Key", "x-openclaw-idempotency-key")
# As long as agents.registry keeps a finished run findable (FINISHED_RUN_TTL_S), and as many.
REPLAY_TTL_SECONDS = 600.0
REPLAYS_MAX = 10_000
# The key goes back in the x-openclaw-session-key header, which cannot carry controls.
_HEADER_UNSAFE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@attrs.frozen
class AgentHook:
    message: str
    name: str = "Hook"
    agent_id: str | None = None
    session_key: str | None = None
    wait: bool = False
    timeout_seconds: int | None = None
    idempotency_key: str | None = None


@attrs.frozen
class WakeHook:
    text: str
    agent_id: str | None = None


def _optional_str(body: Mapping[str, Any], field: str) -> str | None:
    """A trimmed string, None when absent, null or blank; 400 for any other type."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{field}: Expected string, received {json_type(value)}", field)
    return value.strip() or None


def _optional_bool(body: Mapping[str, Any], field: str) -> bool | None:
    value = body.get(field)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"{field} must be boolean", field)
    return value


def _refuse_unsupported(body: Mapping[str, Any], *fields: str) -> None:
    for field in fields:
        if body.get(field) is not None:
            raise bad_request(
                f"`{field}` is not supported by clawgate's hooks.", field, UNSUPPORTED
            )


def parse_agent_hook(body: Mapping[str, Any]) -> AgentHook:
    wait = _optional_bool(body, "waitForCompletion")
    message = _optional_str(body, "message")
    if message is None:
        raise bad_request("message required", "message")
    name = _optional_str(body, "name") or "Hook"
    agent_id = _optional_str(body, "agentId")
    session_key = _optional_str(body, "sessionKey")
    for field in ("wakeMode", "channel", "to"):
        _optional_str(body, field)  # accepted without effect, but only well-typed
    idempotency_key = _optional_str(body, "idempotencyKey")
    _optional_bool(body, "deliver")
    _refuse_unsupported(body, "model", "thinking")
    timeout = body.get("timeoutSeconds")
    if timeout is not None:
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not 1 <= timeout <= MAX_TIMEOUT_SECONDS
        ):
            raise bad_request(
                f"timeoutSeconds must be a number of seconds from 1 to {MAX_TIMEOUT_SECONDS}",
                "timeoutSeconds",
            )
        timeout = int(timeout)
    return AgentHook(
        message, name, agent_id, session_key, bool(wait), timeout, _usable_key(idempotency_key)
    )


def _usable_key(value: str | None) -> str | None:
    key = (value or "").strip()
    return key if key and len(key) <= MAX_IDEMPOTENCY_KEY else None


def with_header_key(hook: AgentHook, headers: Mapping[str, str]) -> AgentHook:
    """The headers' idempotency key wins over the body's, as in OpenClaw."""
    for name in IDEMPOTENCY_HEADERS:
        key = _usable_key(headers.get(name))
        if key is not None:
            if has_surrogate(key):
                # Bytes that are not UTF-8 arrive as lone surrogates: repaired to U+FFFD, two
                # keys would be one, and the second call would be answered as the first.
                raise bad_request(f"invalid idempotency key (the {name} header is not UTF-8)")
            return attrs.evolve(hook, idempotency_key=key)
    return hook


def refuse_unpaired_key(raw: bytes) -> None:
    """A 400 for a body whose `idempotencyKey` holds a lone UTF-16 surrogate, which JSON can
    spell and UTF-8 cannot (`parse_body` repairs them to U+FFFD: two keys would be one). The
    body is parsed again, unrepaired, only when it spells a surrogate at all."""
    text = raw.decode("utf-8", "replace")
    if not spells_surrogate(text):
        return
    try:
        value = strict_loads(text, finite=True)
    except (ValueError, RecursionError):
        return  # parse_body refused it
    key = value.get("idempotencyKey") if isinstance(value, dict) else None
    if isinstance(key, str) and has_surrogate(key):
        raise bad_request(
            "invalid idempotency key (a lone UTF-16 surrogate is not text)", "idempotencyKey"
        )


def replay_scope(hook: AgentHook, agent_id: str, hooks: HooksConfig) -> str | None:
    """What a retry must repeat to be answered with the first call's run: the key and the
    call (a different message under the same key is a new call), under the same token."""
    if hook.idempotency_key is None:
        return None
    scope = [
        hooks.token,
        agent_id,
        hook.session_key or hooks.default_session_key,
        hook.message,
        hook.name,
        hook.timeout_seconds,
        hook.idempotency_key,
    ]
    return hashlib.sha256(json.dumps(scope).encode("utf-8", "surrogatepass")).hexdigest()


@attrs.define
class HookReplays:
    """Accepted /agent calls by replay scope: (run id, session key), for a while."""

    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[str, tuple[float, str, str]] = attrs.field(factory=OrderedDict)

    def get(self, scope: str) -> tuple[str, str] | None:
        self._expire()
        entry = self._entries.get(scope)
        return None if entry is None else (entry[1], entry[2])

    def put(self, scope: str, run_id: str, session_key: str) -> None:
        self._entries[scope] = (self.clock() + REPLAY_TTL_SECONDS, run_id, session_key)
        self._entries.move_to_end(scope)
        while len(self._entries) > REPLAYS_MAX:
            self._entries.popitem(last=False)

    def _expire(self) -> None:
        now = self.clock()
        while self._entries:
            expires, _, _ = next(iter(self._entries.values()))
            if expires > now:
                break
            self._entries.popitem(last=False)


def parse_wake_hook(body: Mapping[str, Any]) -> WakeHook:
    text = _optional_str(body, "text")
    if text is None:
        raise bad_request("text required", "text")
    mode = _optional_str(body, "mode")
    if mode == "next-heartbeat":
        raise bad_request(
            'mode "next-heartbeat" is not supported: clawgate has no heartbeat; use "now".',
            "mode",
            UNSUPPORTED,
        )
    if mode not in (None, "now"):
        raise bad_request('mode must be "now"', "mode")
    if body.get("sessionKey") is not None:
        raise bad_request("`sessionKey` is not supported on /wake.", "sessionKey", UNSUPPORTED)
    return WakeHook(WAKE_PREFIX + text, _optional_str(body, "agentId"))


def hook_agent(agent_id: str | None, hooks: HooksConfig, agents: AgentsConfig) -> str:
    """The agent a hook runs on: the named one (known, and allowed), else the default."""
    if agent_id is None:
        chosen = agents.default_agent.id
    else:
        agent = agents.agent(agent_id)
        if agent is None:
            raise bad_request(f"Unknown agent '{agent_id[:64]}'.", "agentId")
        chosen = agent.id
    allowed = hooks.allowed_agent_ids
    if allowed is not None and "*" not in allowed and chosen not in allowed:
        raise bad_request(AGENT_POLICY_MESSAGE, "agentId")
    return chosen


def _key_error(message: str) -> RequestError:
    reworded = {
        INVALID_KEY_MESSAGE: "Invalid `sessionKey`.",
        RESERVED_KEY_MESSAGE: "`sessionKey` cannot use reserved internal session namespaces.",
    }
    return bad_request(reworded.get(message, message), "sessionKey")


def hook_session_key(
    hook: AgentHook, agent_id: str, hooks: HooksConfig, agents: AgentsConfig
) -> tuple[str, str]:
    """(agent id, canonical session key) of an /agent call: the caller's key when allowed,
    else `hooks.defaultSessionKey`, else a fresh `hook:<uuid>` (one session per call)."""
    if hook.session_key is not None:
        if not hooks.allow_request_session_key:
            raise bad_request(SESSION_KEY_POLICY_MESSAGE, "sessionKey")
        raw = hook.session_key
    elif hooks.default_session_key is not None:
        raw = hooks.default_session_key
    else:
        raw = f"hook:{uuid7()}"
    if has_surrogate(raw) or _HEADER_UNSAFE_RE.search(raw):
        raise _key_error(INVALID_KEY_MESSAGE)
    try:
        key = normalize_session_key(raw, agent_id, agents.main_key, reject_reserved=True)
    except InvalidSessionKey as exc:
        raise _key_error(exc.message) from None
    _, key_agent, rest = key.split(":", 2)
    if key_agent != agent_id:
        if hook.agent_id is not None:
            raise bad_request(
                f"Session key '{key}' belongs to agent '{key_agent}', not '{agent_id}'.",
                "sessionKey",
            )
        agent_id = hook_agent(key_agent, hooks, agents)  # the key's agent, under the policy
    # A prefix matches the whole key or the part after `agent:<id>:`: OpenClaw compares the key
    # as the caller spelled it, so both `hook:` and `agent:main:` are prefixes in use there.
    prefixes = hooks.allowed_session_key_prefixes
    if prefixes is not None and not (key.startswith(prefixes) or rest.startswith(prefixes)):
        raise bad_request(f"sessionKey must start with one of: {', '.join(prefixes)}", "sessionKey")
    return agent_id, key


def new_run_id() -> str:
    return str(uuid.uuid4())


def accepted_body(run_id: str, session_key: str) -> dict[str, Any]:
    return {"ok": True, "runId": run_id, "sessionKey": session_key}


def completion_body(run_id: str, session_key: str, outcome: RunOutcome) -> dict[str, Any]:
    """`waitForCompletion`: OpenClaw's `completion`, with the reply's text, which OpenClaw
    delivers to a chat channel instead."""
    usage: Usage = outcome.usage
    return {
        **accepted_body(run_id, session_key),
        "completion": {
            "status": "ok" if outcome.status == RunStatus.COMPLETED else outcome.status,
            "text": outcome.text,
            "stopReason": outcome.stop_reason,
            "usage": usage_body(usage),
        },
    }


def result_forgotten(run_id: str) -> RequestError:
    """A waiting retry whose run ended so long ago, or so many bytes of replies ago, that the
    registry no longer holds its result. The run is not started again: a second run is what
    the idempotency key is there to prevent. Gone for good, so not a status a client retries."""
    return RequestError(
        410,
        f"Run {run_id} of this idempotency key has ended and its result is no longer kept;"
        " its reply is in the history of its session.",
        code="hook_result_unavailable",
    )


def run_elsewhere(run_id: str, session_key: str) -> RequestError:
    """A waiting retry that reached another process than the first call (several processes
    share a PostgreSQL store): that process runs the run, and this one cannot wait for it.
    The run is not started again."""
    return RequestError(
        409,
        f"Run {run_id} of this idempotency key was started by another gateway process, which"
        f" this one cannot wait on; its reply goes to the history of session {session_key}.",
        code="hook_run_elsewhere",
    )


def hooks_backlogged() -> RequestError:
    """The webhooks' share of the turns that wait to run is full: answered as the gateway's
    own bound is (a retryable 503), the gateway being overloaded for the webhooks."""
    return RequestError(
        503,
        "too many webhook turns waiting to run; retry after one has started",
        API_ERROR,
        headers={"Retry-After": "1"},
    )


def wait_timeout(seconds: int, run_id: str) -> RequestError:
    return RequestError(
        504,
        f"The run did not finish within {seconds} s (hooks.waitTimeoutSeconds);"
        f" it goes on as run {run_id}.",
        API_ERROR,
        code="hook_wait_timeout",
    )
