"""What OpenClaw's CLI, TUI and Control UI call beyond §8 (ws-protocol.md §12).

Methods for OpenClaw features clawgate does not have answer with their honest empty state,
so those clients keep working and tell the truth. `sessions.subscribe` is a no-op: events
already reach every read-scoped connection (deviation 23). `sessions.create` is the TUI's
`/new`: an empty session on a new key. OpenClaw's browser Control UI opens a chat with
`chat.startup` (the history) and follows it with `sessions.messages.subscribe`.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

import attrs

from agents.errors import SessionArchived, UnknownAgent
from agents.ids import uuid7
from agents.keys import SESSION_KEY_MAX, parse_session_key
from gateway.config.schema import holds_path
from gateway.ws.connection import now_ms
from gateway.ws.dispatch import CallContext, MethodRegistry, no_params
from gateway.ws.methods.catalog import model_rows
from gateway.ws.methods.chat import StartupParams, history, send
from gateway.ws.methods.health import default_model
from gateway.ws.methods.sessions import (
    KeyParams,
    empty_row,
    parse_label,
    resolve_key,
    resolve_key_of_agent,
)
from gateway.ws.protocol import (
    ADMIN,
    APPROVALS,
    FORBIDDEN,
    INVALID_REQUEST,
    PAIRING,
    QUESTIONS,
    READ,
    UNAVAILABLE,
    WRITE,
    ParamReader,
    ParamsError,
    WsError,
    scope_allows,
)

CRON_LIST_LIMIT_DEFAULT = 50  # OpenClaw's page size for an empty inventory
CRON_LIST_LIMIT_MAX = 200  # OpenClaw's bound on a `cron.list` page
# OpenClaw's revision of an inventory is the sha256 of its jobs' JSON: here always `[]`.
EMPTY_CRON_REVISION = "sha256:T1PNoYwrqgwDVLtfmj7L5e0Sq02OEbqHPC8RFhICuUU"
CRON_RUNS_LIMIT_DEFAULT = 50  # OpenClaw's CLI default
CRON_RUNS_LIMIT_MAX = 200  # OpenClaw's page bound

EMPTY_STATES: tuple[tuple[str, str, Any], ...] = (
    ("channels.status", READ, {"channelOrder": [], "channels": {}}),
    # No scheduler: `openclaw cron status` shows it off, with no jobs and no next wake.
    ("cron.status", READ, {"enabled": False, "jobs": 0, "nextWakeAtMs": None}),
    ("node.list", READ, {"nodes": []}),
    ("node.pair.list", PAIRING, {"pending": [], "paired": []}),
    ("device.pair.list", PAIRING, {"pending": [], "paired": []}),
    ("question.list", QUESTIONS, {"questions": []}),
    # `openclaw approvals pending` lists all three kinds, with the scope OpenClaw checks.
    ("exec.approval.list", APPROVALS, []),
    ("plugin.approval.list", APPROVALS, []),
    ("openclaw.approval.list", APPROVALS, []),
    ("taskSuggestions.list", READ, {"suggestions": []}),
    # OpenClaw's Control UI's Systems page: no machines, workers or desktops to show.
    ("environments.list", READ, {"environments": []}),
    ("commands.list", READ, {"commands": []}),
    # Skills and hooks live in an OpenClaw agent's workspace; clawgate's agents have none.
    ("skills.status", READ, {"skills": []}),
    ("hooks.status", READ, {"hooks": []}),
    # No heartbeat has run (OpenClaw answers null until its first).
    ("last-heartbeat", READ, None),
    # `openclaw gateway stability`: a recorder of diagnostic events that records none.
    (
        "diagnostics.stability",
        READ,
        {"capacity": 0, "count": 0, "dropped": 0, "events": [], "summary": {"byType": {}}},
    ),
    # The Worktrees page: no agent workspaces, so no git worktrees of theirs.
    ("worktrees.list", READ, {"worktrees": []}),
    # Its "Clean up now": none to remove, no orphans, no snapshots.
    ("worktrees.gc", ADMIN, {"removed": [], "orphansDeleted": 0, "snapshotsPruned": 0}),
    # The Plugins page: none installed, and none to install from here.
    (
        "plugins.list",
        READ,
        {"generation": 0, "plugins": [], "diagnostics": [], "mutationAllowed": False},
    ),
)

# What OpenClaw's Control UI asks of a session's features clawgate does not have, with the
# empty answer: no progress card, no branches (no rewind or fork), no side-chat exchanges.
SESSION_FEATURES: tuple[tuple[str, Any], ...] = (
    ("progressCard.get", {"card": None}),
    ("sessions.branches.list", {"branches": []}),
    ("sessions.companion.state", {"exchanges": []}),
)

COMPANION_QUESTION_MAX = 400  # OpenClaw's bound on a side-chat question
SIDE_CHAT_UNAVAILABLE = "Side chat is unavailable."
TASKS_LIST_LIMIT_MAX = 500  # OpenClaw's bound on a `tasks.list` page
TASKS_CURSOR_MAX = 512
TASK_STATUSES = frozenset({"queued", "running", "completed", "failed", "cancelled", "timed_out"})
TASK_SORTS = frozenset({"updatedAt", "endedAt"})
AUTH_PROFILE_ID_MAX = 256
# No voice: OpenClaw's talk catalog with no mode, transport or provider.
EMPTY_TALK_CATALOG: dict[str, Any] = {
    "modes": [],
    "transports": [],
    "brains": [],
    "speech": {"providers": []},
    "transcription": {"ready": False, "providers": []},
    "realtime": {"ready": False, "providers": []},
}


# OpenClaw's `sessions.create` fields that only say where the call comes from (its TUI's
# `/new` sends the session it leaves; a retry, its key): nothing to keep; and a first message.
# Any other field (a model, a fork) is a feature clawgate does not have: refused, not dropped.
CREATE_FIELDS = frozenset(
    {
        "key",
        "agentId",
        "label",
        "idempotencyKey",
        "parentSessionKey",
        "succeedsParent",
        "emitCommandHooks",
        # OpenClaw's Control UI's New conversation: the session's first turn.
        "message",
        "timeoutMs",
    }
)


@attrs.frozen
class CreateParams:
    key: str | None  # None: a new key of the gateway's
    agent_id: str | None
    label: str | None
    message: str  # blank: no first turn
    timeout_ms: int | None

    @classmethod
    def parse(cls, r: ParamReader) -> CreateParams:
        for name, value in r.data.items():
            if name not in CREATE_FIELDS and value is not None:
                raise ParamsError(f"unsupported field '{name}'")
        return cls(
            r.string("key", non_empty=True),
            r.string("agentId", non_empty=True),
            parse_label(r),
            r.string("message") or "",
            r.integer("timeoutMs", minimum=0),
        )


@attrs.frozen
class CronListParams:
    """`cron.list`'s page: OpenClaw's filters and sort are read by none here (no jobs)."""

    limit: int

    @classmethod
    def parse(cls, r: ParamReader) -> CronListParams:
        limit = r.integer("limit", minimum=1, maximum=CRON_LIST_LIMIT_MAX)
        r.integer("offset", minimum=0)
        return cls(CRON_LIST_LIMIT_DEFAULT if limit is None else limit)


@attrs.frozen
class CronJobParams:
    """`cron.runs`: a job by `id` (or `jobId`), as OpenClaw reads it.

    No `cron.get`: there is no job to get (OpenClaw's CLI probes for it only to tell an older
    gateway's `cron.list` pages, without a revision, from current ones)."""

    job_id: str | None
    limit: int

    @classmethod
    def parse(cls, r: ParamReader) -> CronJobParams:
        job_id = (r.string("id") or r.string("jobId") or "").strip() or None
        limit = r.integer("limit", minimum=1, maximum=CRON_RUNS_LIMIT_MAX)
        return cls(job_id, CRON_RUNS_LIMIT_DEFAULT if limit is None else limit)


def cron_job_not_found(job_id: str) -> WsError:
    """OpenClaw's answer for a job it does not have: without a scheduler, every job."""
    return WsError(
        INVALID_REQUEST,
        f"Automation not found: {job_id}. List automations and retry with a current job id.",
        details={"code": "CRON_JOB_NOT_FOUND", "jobId": job_id},
    )


@attrs.frozen
class MessagesParams:
    """`sessions.messages.subscribe`/`unsubscribe`: a session (`key`, relative to `agentId`)."""

    key: str
    agent_id: str | None
    include_approvals: bool

    @classmethod
    def parse(cls, r: ParamReader) -> MessagesParams:
        unsubscribe = cls.parse_unsubscribe(r)
        return attrs.evolve(unsubscribe, include_approvals=r.boolean("includeApprovals") is True)

    @classmethod
    def parse_unsubscribe(cls, r: ParamReader) -> MessagesParams:
        return cls(
            r.required_string("key", max_len=SESSION_KEY_MAX),
            r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX),
            include_approvals=False,
        )


def companion_ask_params(r: ParamReader) -> None:
    """`sessions.companion.ask {sessionKey, agentId?, question}`, checked as OpenClaw checks it
    before it finds its side chat off."""
    AgentTarget.parse_session(r)
    question = r.required_string("question", max_len=COMPANION_QUESTION_MAX)
    if not question.strip():
        raise WsError(INVALID_REQUEST, "question must contain non-whitespace text")


# OpenClaw's bounds on a channel's pending pairing requests (its CHANNEL_PAIRING_PENDING_TTL_MS),
# shown by the Channels page beside the none there are.
CHANNEL_PAIRING_LIMITS: dict[str, Any] = {"pendingPerAccount": 3, "ttlMs": 3_600_000}


def channel_pairing_params(r: ParamReader) -> str | None:
    """`channels.pairing.list {channel?, accountId?}`: the channel named, if any."""
    channel = r.string("channel", non_empty=True, max_len=SESSION_KEY_MAX)
    r.string("accountId", non_empty=True, max_len=SESSION_KEY_MAX)
    return channel if channel is not None and channel.strip() else None


def update_status_params(r: ParamReader) -> None:
    """`update.status`: `refreshCheckout` asks to look at the install again; nothing to look at."""
    r.boolean("refreshCheckout")


def observer_visibility_params(r: ParamReader) -> None:
    """`sessions.observer.visibility {visible}`: the tab says whether it is shown. Events reach
    every reader anyway (deviation 23), so it is acknowledged and changes nothing."""
    if r.data.get("visible") is None:
        raise r.fail("visible", "is required")
    r.boolean("visible")


@attrs.frozen
class AgentTarget:
    """An agent named by `agentId`, by a session key's agent, or the default one."""

    session_key: str | None
    agent_id: str | None

    @classmethod
    def parse_identity(cls, r: ParamReader) -> AgentTarget:
        """`agent.identity.get {agentId?, sessionKey?}` (an empty `sessionKey` is none)."""
        return cls(
            r.string("sessionKey", max_len=SESSION_KEY_MAX) or None,
            r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX),
        )

    @classmethod
    def parse_session(cls, r: ParamReader) -> AgentTarget:
        """`{sessionKey, agentId?}` of the session-feature reads."""
        return cls(
            r.required_string("sessionKey", max_len=SESSION_KEY_MAX),
            r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX),
        )

    @classmethod
    def parse_auth_status(cls, r: ParamReader) -> AgentTarget:
        """`models.authStatus {refresh?, agentId?}` (an empty `agentId` is the default)."""
        r.boolean("refresh")
        return cls(None, r.string("agentId", max_len=SESSION_KEY_MAX) or None)

    def resolve(self, ctx: CallContext) -> str:
        """The agent's id; an unknown agent, or a key of another agent than `agentId`, is
        refused as OpenClaw refuses it."""
        agents = ctx.config.agents
        agent_id = self.agent_id.strip().lower() if self.agent_id else None
        if agent_id is not None and agents.agent(agent_id) is None:
            raise UnknownAgent(agent_id)
        if self.session_key is None:
            return agent_id or agents.default_agent.id
        key = resolve_key(ctx, self.session_key, "sessionKey", agent_id=agent_id)
        key_agent = parse_session_key(key)[0]
        if agent_id is not None and key_agent != agent_id:
            raise ParamsError("at /agentId: is not the agent of the session key")
        if agents.agent(key_agent) is None:
            raise UnknownAgent(key_agent)
        return key_agent


@attrs.frozen
class ChatMetadataParams:
    """`chat.metadata {agentId?, sessionKey?, authProfileId?}`: the model picker of a chat."""

    target: AgentTarget

    @classmethod
    def parse(cls, r: ParamReader) -> ChatMetadataParams:
        session_key = r.string("sessionKey", non_empty=True, max_len=SESSION_KEY_MAX)
        profile = r.string("authProfileId", non_empty=True, max_len=AUTH_PROFILE_ID_MAX)
        if profile is not None:
            # A personal model account of OpenClaw's users; clawgate has none to preview.
            if session_key is not None:
                raise ParamsError("sessionKey and authProfileId are mutually exclusive")
            raise ParamsError("at /authProfileId: unknown model account")
        return cls(
            AgentTarget(session_key, r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX))
        )


def tasks_list_params(r: ParamReader) -> None:
    """`tasks.list`'s filters and page, checked as OpenClaw checks them (there are no tasks)."""
    status = r.data.get("status")
    if status is not None:
        values = status if isinstance(status, list) else [status]
        for value in values:
            if not isinstance(value, str) or value not in TASK_STATUSES:
                raise r.fail("status", f"must be one of {', '.join(sorted(TASK_STATUSES))}")
    r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX)
    r.string("sessionKey", non_empty=True, max_len=SESSION_KEY_MAX)
    r.integer("limit", minimum=1, maximum=TASKS_LIST_LIMIT_MAX)
    r.string("cursor", max_len=TASKS_CURSOR_MAX)
    sort = r.string("sortBy")
    if sort is not None and sort not in TASK_SORTS:
        raise r.fail("sortBy", f"must be one of {', '.join(sorted(TASK_SORTS))}")


PLUGIN_INTENTS = frozenset({"all", "bundled", "trending", "official", "featured"})
PLUGIN_CATEGORY = re.compile(r"[a-z][a-z0-9-]{0,63}")
PLUGIN_QUERY_MAX = 200
PLUGIN_CURSOR_MAX = 4096
PLUGIN_PAGE_MAX = 100


def plugin_catalog_params(r: ParamReader) -> None:
    """`plugins.catalog.browse`: a page of ClawHub's plugins, checked as OpenClaw checks it."""
    query = r.string("query", max_len=PLUGIN_QUERY_MAX)
    source = r.string("searchSource")
    if source is not None and source != "openclaw-control-ui":
        raise r.fail("searchSource", "must be openclaw-control-ui")
    intent = r.string("intent")
    if intent is not None and intent not in PLUGIN_INTENTS:
        raise r.fail("intent", f"must be one of {', '.join(sorted(PLUGIN_INTENTS))}")
    category = r.string("category")
    if category is not None and not PLUGIN_CATEGORY.fullmatch(category):
        raise r.fail("category", "must match ^[a-z][a-z0-9-]*$ (at most 64 characters)")
    cursor = r.string("cursor", non_empty=True, max_len=PLUGIN_CURSOR_MAX)
    r.integer("pageSize", minimum=1, maximum=PLUGIN_PAGE_MAX)
    if query and query.strip() and cursor:
        raise WsError(INVALID_REQUEST, "Plugin search does not accept a browse cursor.")


def talk_catalog_params(r: ParamReader) -> None:
    r.string("provider", non_empty=True)
    r.string("model", non_empty=True)


# The Devices settings' exec approval policy. OpenClaw keeps it in a file it creates on the first
# read, with a socket its exec tool asks through; clawgate has no exec tool and keeps no such
# file. What it answers is OpenClaw's snapshot of a file not there (`exists` false, OpenClaw's
# hash of none), with the policy clawgate holds to: OpenClaw's fail-closed one (deny, never
# ask), not OpenClaw's defaults for a missing file (`full`), which would say host commands run.
EXEC_APPROVALS_DENY: dict[str, Any] = {
    "security": "deny",
    "ask": "off",
    "askFallback": "deny",
    "autoAllowSkills": False,
}
EXEC_APPROVALS_SNAPSHOT: dict[str, Any] = {
    "path": "none: clawgate has no exec tool",
    "exists": False,
    "hash": "missing:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "file": {"version": 1, "defaults": EXEC_APPROVALS_DENY, "agents": {}},
    "resolvedDefaults": EXEC_APPROVALS_DENY,
}
NO_EXEC_TOOL = "clawgate has no exec tool: no host command runs, so the policy is deny"


def exec_approvals_set_params(r: ParamReader) -> None:
    """`exec.approvals.set {file, baseHash?}`: the file an object (its rules are not read, as
    none is kept), the hash a non-empty string."""
    r.object("file", required=True)
    r.string("baseHash", non_empty=True)


GITHUB_SCOPES = ("system", "agent")
# OpenClaw's facts of a GitHub identity with no credential found: clawgate keeps no GitHub
# token and reads none from its host (no `gh`, no git author looked up).
NO_GITHUB_IDENTITY: dict[str, Any] = {
    "source": "system-detected",
    "credentialKind": "native",
    "credentialState": "unavailable",
    "account": None,
    "gitAuthor": {"name": None, "email": None},
    "evidence": "none",
    "accessExpiresAtMs": None,
    "refreshState": "not_applicable",
    "oauthScopes": [],
    "repositoryGrants": "unknown",
}


@attrs.frozen
class GitHubStatusParams:
    """`tools.github.status {agentId, selectedScope: "system" | "agent"}`."""

    target: AgentTarget
    scope: str

    @classmethod
    def parse(cls, r: ParamReader) -> GitHubStatusParams:
        agent_id = r.required_string("agentId", max_len=SESSION_KEY_MAX)
        scope = r.required_string("selectedScope")
        if scope not in GITHUB_SCOPES:
            raise r.fail("selectedScope", f"must be one of {', '.join(GITHUB_SCOPES)}")
        return cls(AgentTarget(None, agent_id), scope)


# GitHub set-up as OpenClaw answers it without its device-login service (`authorize.*`) or
# without the temporary credential a token's set-up hands over (`configure`, managed): clawgate
# has neither, and keeps no GitHub token.
GITHUB_AUTHORIZE_START_FAILED = "GitHub authorization could not start"
GITHUB_AUTHORIZE_POLL_FAILED = "GitHub authorization polling failed"
GITHUB_AUTHORIZE_UNAVAILABLE = "GitHub authorization lifecycle is unavailable"
GITHUB_SETUP_FAILED = "GitHub identity setup failed"
GITHUB_DEVICE_REQUEST = re.compile(r"github-device-[a-f0-9]{32}")
GITHUB_SETUP_HANDLE = re.compile(r"github-setup-[a-f0-9]{32}")
GITHUB_AUTHOR_MAX = 256


def _github_scope(r: ParamReader, key: str) -> str:
    scope = r.required_string(key)
    if scope not in GITHUB_SCOPES:
        raise r.fail(key, f"must be one of {', '.join(GITHUB_SCOPES)}")
    return scope


def github_target_params(r: ParamReader) -> GitHubStatusParams:
    """`tools.github.authorize.start {scope, agentId}`."""
    scope = _github_scope(r, "scope")
    return GitHubStatusParams(
        AgentTarget(None, r.required_string("agentId", max_len=SESSION_KEY_MAX)), scope
    )


def github_request_params(r: ParamReader) -> None:
    """`tools.github.authorize.poll`/`cancel {requestId}`: a device request's id."""
    if not GITHUB_DEVICE_REQUEST.fullmatch(r.required_string("requestId")):
        raise r.fail("requestId", f"must match ^{GITHUB_DEVICE_REQUEST.pattern}$")


def github_configure_params(r: ParamReader) -> tuple[GitHubStatusParams, bool]:
    """`tools.github.configure {scope, agentId, mode: "managed" | "inherit", …}`: the target,
    and whether it sets up a token (`managed`: `secretName`, `gitAuthor?`)."""
    target = github_target_params(r)
    mode = r.required_string("mode")
    if mode not in ("managed", "inherit"):
        raise r.fail("mode", "must be one of managed, inherit")
    if mode == "managed":
        if not GITHUB_SETUP_HANDLE.fullmatch(r.required_string("secretName")):
            raise r.fail("secretName", f"must match ^{GITHUB_SETUP_HANDLE.pattern}$")
        author = r.object("gitAuthor")
        if author is not None:
            author.string("name", max_len=GITHUB_AUTHOR_MAX)
            author.string("email", max_len=GITHUB_AUTHOR_MAX)
    return target, mode == "managed"


# OpenClaw's team secret store (the Secrets settings, a GitHub token's set-up): clawgate keeps
# none, its credentials are its config's. A secret saved is refused and its value not kept.
NO_SECRET_STORE = "clawgate has no secret store: its credentials are set in its config file"
SECRET_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,127}|github-setup-[a-f0-9]{32}")
SECRET_VALUE_MAX = 65_536
SECRET_HOSTS_MAX = 128
SECRET_HOST_MAX = 253


def secrets_store_set_params(r: ParamReader) -> None:
    """`secrets.store.set {name, value, kind, allowedHosts?}`, checked as OpenClaw checks it."""
    if not SECRET_NAME.fullmatch(r.required_string("name")):
        raise r.fail("name", f"must match ^(?:{SECRET_NAME.pattern})$")
    r.required_string("value", non_empty=False, max_len=SECRET_VALUE_MAX)
    if r.required_string("kind") not in ("secret", "env"):
        raise r.fail("kind", "must be one of secret, env")
    hosts = r.strings("allowedHosts")
    if hosts is not None:
        if len(hosts) > SECRET_HOSTS_MAX:
            raise r.fail("allowedHosts", f"must have at most {SECRET_HOSTS_MAX} items")
        if any(not host or len(host) > SECRET_HOST_MAX for host in hosts):
            raise r.fail("allowedHosts", f"must hold names of 1 to {SECRET_HOST_MAX} characters")


NO_WEB_PUSH = "clawgate sends no push notifications: its events reach connected clients only"
# A browser's push subscription, as OpenClaw's schema bounds it.
WEB_PUSH_ENDPOINT_MAX = 2048
WEB_PUSH_KEY_MAX = 512
WEB_PUSH_PREFERENCE_SCOPES = ("user", "device")
# clawgate holds no subscription: OpenClaw's answers for an endpoint it holds none for (FORBIDDEN)
# and for a test with none registered (INVALID_REQUEST), each with clawgate's reason.
NO_WEB_PUSH_SUBSCRIPTION = "subscription is not bound to this device: " + NO_WEB_PUSH
NO_WEB_PUSH_SUBSCRIPTIONS = "no web push subscriptions registered: " + NO_WEB_PUSH


def web_push_endpoint_params(r: ParamReader) -> None:
    """`push.web.unsubscribe`/`preferences.get {endpoint}`: a push service's https URL."""
    endpoint = r.required_string("endpoint", max_len=WEB_PUSH_ENDPOINT_MAX)
    if not endpoint.startswith("https://"):
        raise r.fail("endpoint", "must start with https://")


def web_push_subscribe_params(r: ParamReader) -> None:
    """`push.web.subscribe {endpoint, keys: {p256dh, auth}}`."""
    web_push_endpoint_params(r)
    keys = r.object("keys", required=True)
    assert keys is not None
    for key in ("p256dh", "auth"):
        keys.required_string(key, max_len=WEB_PUSH_KEY_MAX)


def web_push_preferences_set_params(r: ParamReader) -> None:
    """`push.web.preferences.set {endpoint, scope: "user" | "device", preferences}`: the
    preferences' fields are not read (no subscription to keep them for)."""
    web_push_endpoint_params(r)
    if r.required_string("scope") not in WEB_PUSH_PREFERENCE_SCOPES:
        raise r.fail("scope", 'must be one of "user", "device"')
    r.object("preferences", required=True)


def web_push_test_params(r: ParamReader) -> None:
    """`push.web.test {title?, body?}`."""
    r.string("title")
    r.string("body")


# `push.test {nodeId}` (`openclaw nodes push`): an APNs test push to a paired iOS node. clawgate
# pairs no nodes, so none has a push registration: OpenClaw's answer for such a node, with the
# reason. The id is echoed in the answer, so bounded (OpenClaw bounds it by the frame alone).
PUSH_NODE_ID_MAX = 512
APNS_ENVIRONMENTS = ("sandbox", "production")
NO_NODE_PUSH = "clawgate pairs no nodes and sends no push notifications"


def push_test_params(r: ParamReader) -> str:
    """`push.test {nodeId, title?, body?, environment?: "sandbox" | "production"}`: the node's
    id, trimmed as OpenClaw trims it."""
    node_id = r.required_string("nodeId", max_len=PUSH_NODE_ID_MAX)
    r.string("title")
    r.string("body")
    environment = r.string("environment")
    if environment is not None and environment not in APNS_ENVIRONMENTS:
        raise r.fail("environment", 'must be one of "sandbox", "production"')
    return node_id.strip()


# OpenClaw's memory search is a plugin's; clawgate has none: its answer when no memory plugin
# is selected.
NO_MEMORY_PLUGIN = "memory plugin unavailable"
# Dreaming (OpenClaw's nightly sweep of an agent's memory) is a memory plugin's too: off. OpenClaw
# answers its state beside a memory plugin's status only; without it, its Control UI's Dreams tab
# reads the config, where no `plugins` section reads as on. So clawgate says off: each phase off,
# nothing stored (OpenClaw's counts for an agent with no dreaming store); the schedule and limits,
# config of OpenClaw's that clawgate does not have, are left out.
NO_DREAMING: dict[str, Any] = {
    "enabled": False,
    "shortTermEntries": [],
    "signalEntries": [],
    "promotedEntries": [],
    **dict.fromkeys(
        (
            "shortTermCount",
            "recallSignalCount",
            "dailySignalCount",
            "groundedSignalCount",
            "totalSignalCount",
            "phaseSignalCount",
            "lightPhaseHitCount",
            "remPhaseHitCount",
            "promotedTotal",
            "promotedToday",
        ),
        0,
    ),
    "phases": {
        phase: {"enabled": False, "managedCronPresent": False} for phase in ("light", "deep", "rem")
    },
}


def memory_status_params(r: ParamReader) -> AgentTarget:
    """`doctor.memory.status {agentId?, probe?, deep?}`: an empty `agentId` is the default."""
    r.boolean("probe")
    r.boolean("deep")
    return AgentTarget(None, r.string("agentId", max_len=SESSION_KEY_MAX) or None)


DREAM_DIARY = "DREAMS.md"  # OpenClaw's name of a diary it did not find
# The Profile settings' "View agent account": OpenClaw's tool catalog and a session's effective
# tools. clawgate's agents have no tools of the gateway's (no OpenClaw core or plugin tools); an
# HTTP client's tools come with its request and all pass, none filtered: OpenClaw's profile
# full (no tool policy), clawgate's only one. The Agents settings' Tools tab shows the profile
# it reads from the config (OpenClaw's `tools.profile`, full when none, as in clawgate's config)
# and offers the catalog's profiles as presets (OpenClaw's four when the catalog has none): so
# the catalog lists full alone, and the notice, shown on that tab, says why. Its presets and
# Save stay disabled there (without `config.set` it may not update the config), so nothing
# writes a `tools` section from it, which clawgate would ignore.
NO_GATEWAY_TOOLS_NOTICE: dict[str, Any] = {
    "id": "no-gateway-tools",
    "severity": "info",
    "message": "clawgate's agents have no tools of the gateway's: a client's tools come with"
    " its request, and all of them pass. So its only tool profile is full (no tool policy);"
    " `tools` in its config are ignored, and nothing here saves one.",
}
TOOL_PROFILES = ({"id": "full", "label": "Full"},)
# The catalog's groups: OpenClaw's Control UI shows its own bundled catalog (58 tools, `exec`,
# `web_search`, …) when a catalog has no group, so the catalog holds one, with no tool in it.
NO_GATEWAY_TOOLS_GROUP: dict[str, Any] = {
    "id": "clawgate",
    "label": "No gateway tools",
    "source": "core",
    "tools": [],
}


# Models → the model-setup card's "Check model": OpenClaw asks the agent's model for a quick
# reply. clawgate sends no turn of its own to a provider (each costs the operator tokens), and
# its config load already refused a model whose provider is not configured: OpenClaw's answer
# when it cannot verify, saying what is known and how to check.
SETUP_VERIFY_TARGETS = ("utility",)
NO_UTILITY_MODEL = "clawgate has no utility model: each agent runs on its own model"


def setup_verify_params(r: ParamReader) -> tuple[AgentTarget, bool]:
    """`openclaw.setup.verify {agentId?, modelTarget?: "utility"}`: the agent, and whether
    its utility model is asked about."""
    target = r.string("modelTarget")
    if target is not None and target not in SETUP_VERIFY_TARGETS:
        raise r.fail("modelTarget", 'must be "utility"')
    return agent_id_params(r), target is not None


def setup_not_verified(error: str) -> dict[str, Any]:
    return {"ok": False, "status": "unavailable", "error": error}


# OpenClaw's setup wizards: the Channels page's "Set up" (`flow: "channels"`) and the gateway's
# own setup. clawgate has no channels and is set up in its config file: neither starts, and
# the page shows why.
NO_CHANNELS = "clawgate has no channels: it answers its HTTP and WebSocket clients only"
NO_SETUP_WIZARD = "clawgate has no setup wizard: it is set up in its config file"
WIZARD_FLOWS = ("setup", "channels")
WIZARD_MODES = ("local", "remote")


def wizard_start_params(r: ParamReader) -> str:
    """`wizard.start {mode?, workspace?, installDaemon?, flow?, channel?}`: the flow."""
    for key, choices in (("mode", WIZARD_MODES), ("flow", WIZARD_FLOWS)):
        value = r.string(key)
        if value is not None and value not in choices:
            raise r.fail(key, "must be one of " + ", ".join(f'"{c}"' for c in choices))
    r.string("workspace")
    r.boolean("installDaemon")
    r.string("channel", non_empty=True, max_len=SESSION_KEY_MAX)
    return r.string("flow") or "setup"


def tools_catalog_params(r: ParamReader) -> AgentTarget:
    """`tools.catalog {agentId?, includePlugins?}`."""
    r.boolean("includePlugins")
    return agent_id_params(r)


def agent_id_or_default_params(r: ParamReader) -> AgentTarget:
    """`{agentId?}`: an empty `agentId` is the default agent."""
    return AgentTarget(None, r.string("agentId", max_len=SESSION_KEY_MAX) or None)


CONFIG_PATH_MAX = 1024  # OpenClaw's bound on a `config.schema.lookup` path
CONFIG_PATH = re.compile(r"[A-Za-z0-9_./\[\]\-*]+")


def schema_path_params(r: ParamReader) -> str:
    """`config.schema.lookup {path}`, checked as OpenClaw checks it."""
    path = r.required_string("path", max_len=CONFIG_PATH_MAX)
    if not CONFIG_PATH.fullmatch(path):
        raise r.fail("path", "must match ^[A-Za-z0-9_./\\[\\]\\-*]+$")
    return path


APPROVAL_KINDS = ("exec", "plugin", "system-agent")
APPROVAL_CURSOR_MAX = 512
APPROVAL_HISTORY_LIMIT_MAX = 100
GRANTS_LIST_LIMIT_MAX = 500  # OpenClaw's bound on an `exec.approval.grants.list` page


def approval_history_params(r: ParamReader) -> None:
    """`approval.history {cursor?, limit?, kind?}`, checked as OpenClaw checks it. No cursor
    was given out (there is no history), so any is refused as OpenClaw refuses a stale one."""
    cursor = r.string("cursor", non_empty=True, max_len=APPROVAL_CURSOR_MAX)
    r.integer("limit", minimum=1, maximum=APPROVAL_HISTORY_LIMIT_MAX)
    kind = r.string("kind")
    if kind is not None and kind not in APPROVAL_KINDS:
        raise r.fail("kind", f"must be one of {', '.join(APPROVAL_KINDS)}")
    if cursor is not None:
        raise WsError(INVALID_REQUEST, "invalid approval.history cursor")


SKILL_LIBRARY_SCOPES = ("mine", "team", "all")
SKILL_SEARCH_LIMIT_MAX = 100  # OpenClaw's bound on a `skills.search` page
# OpenClaw's skill library with no skill in it, as a connection without a personal profile sees
# it: nowhere to save one (clawgate has no library to manage).
EMPTY_SKILL_LIBRARY: dict[str, Any] = {
    "entries": [],
    "profileId": None,
    "multipleProfiles": False,
    "defaultTarget": "unavailable",
    "canManageWorkspace": False,
    "defaultSelectionLimit": 64,
}


def skill_library_params(r: ParamReader) -> str | None:
    """`skills.library.list {sessionKey?, scope?}`: the session named, if any."""
    key = r.string("sessionKey", non_empty=True, max_len=SESSION_KEY_MAX)
    scope = r.string("scope")
    if scope is not None and scope not in SKILL_LIBRARY_SCOPES:
        raise r.fail("scope", f"must be one of {', '.join(SKILL_LIBRARY_SCOPES)}")
    return key


def skills_search_params(r: ParamReader) -> None:
    """`skills.search {query?, limit?}`: ClawHub's skills, checked as OpenClaw checks it."""
    r.string("query", non_empty=True, max_len=PLUGIN_QUERY_MAX)
    r.integer("limit", minimum=1, maximum=SKILL_SEARCH_LIMIT_MAX)


# OpenClaw's Skill Workshop manifest with no proposal (its `updatedAt` then the epoch).
EMPTY_SKILL_PROPOSALS: dict[str, Any] = {
    "schema": "openclaw.skill-workshop.proposals-manifest.v1",
    "updatedAt": "1970-01-01T00:00:00.000Z",
    "proposals": [],
    "installedSkills": [],
}


# The Agents settings' Files: OpenClaw lists the core files of an agent's workspace (its
# answer needs the workspace's path); clawgate's agents have none, so it is refused, saying so.
NO_WORKSPACE_FILES = "clawgate's agents have no workspace: no files to list"


def agent_files_params(r: ParamReader) -> AgentTarget:
    """`agents.files.list {agentId}`."""
    return AgentTarget(None, r.required_string("agentId", max_len=SESSION_KEY_MAX))


# The Worktrees page's "New worktree": OpenClaw checks out a git worktree of a repository on
# the gateway's host (and lists the repository's branches to base it on). clawgate manages no
# worktrees and runs no git, so both are refused, as OpenClaw refuses a path it cannot read as
# a repository; the page shows the reason.
NO_WORKTREES = "clawgate has no managed worktrees: it checks out no repository"
WORKTREE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # OpenClaw's worktree name
WORKTREE_TEXT_MAX = 4096  # a repository path or git ref, far beyond any real one


def worktrees_create_params(r: ParamReader) -> None:
    """`worktrees.create {repoRoot, name?, baseRef?}`, checked as OpenClaw checks it."""
    r.required_string("repoRoot", max_len=WORKTREE_TEXT_MAX)
    name = r.string("name", max_len=WORKTREE_TEXT_MAX)
    if name is not None and not WORKTREE_NAME.fullmatch(name):
        raise r.fail("name", "must be lowercase letters, digits and dashes, at most 64")
    r.string("baseRef", non_empty=True, max_len=WORKTREE_TEXT_MAX)


def worktrees_branches_params(r: ParamReader) -> None:
    """`worktrees.branches {repoRoot, includeRepositoryStatus?}`."""
    r.required_string("repoRoot", max_len=WORKTREE_TEXT_MAX)
    r.boolean("includeRepositoryStatus")


# The Models page's "Set API key": OpenClaw saves the key in the agent's auth profiles.
# clawgate's upstream keys are its config's (`models.providers`), so a key sent is refused and
# neither kept nor logged; the page shows the reason.
NO_MODEL_CREDENTIALS = (
    "clawgate keeps no model credentials: a provider's API key is set in its config file"
)
PROVIDER_ID_MAX = 256


def auth_set_api_key_params(r: ParamReader) -> AgentTarget:
    """`models.authSetApiKey {provider, apiKey, agentId?}`, checked as OpenClaw checks it."""
    for name, max_len in (("provider", PROVIDER_ID_MAX), ("apiKey", SECRET_VALUE_MAX)):
        if not r.required_string(name, max_len=max_len).strip():
            raise r.fail(name, "must not be blank")
    return AgentTarget(None, r.string("agentId", max_len=SESSION_KEY_MAX) or None)


MEMORY_QUERY_MAX = 4096  # far beyond a search box's query


def memory_search_params(r: ParamReader) -> AgentTarget:
    """`memory.search {query, maxResults?, minScore?, agentId?}`, checked as OpenClaw checks
    it; the search itself is a memory plugin's (NO_MEMORY_PLUGIN)."""
    if not r.required_string("query", max_len=MEMORY_QUERY_MAX).strip():
        raise r.fail("query", "must not be blank")
    r.number("maxResults")
    r.number("minScore")
    return AgentTarget(None, r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX))


# The Automations page's "New automation": OpenClaw's scheduler runs the job. clawgate has
# none (`cron.status`: not enabled), so a job is refused, not stored to never run.
NO_SCHEDULER = "clawgate has no scheduler: its agents run when asked, never on a schedule"
CRON_NAME_MAX = 256


def cron_add_params(r: ParamReader) -> None:
    """`cron.add {name, schedule, payload, …}`: the fields every job has."""
    r.required_string("name", max_len=CRON_NAME_MAX)
    r.object("schedule", required=True)
    r.object("payload", required=True)


def agent_id_params(r: ParamReader) -> AgentTarget:
    """`{agentId?}`: the agent named, else the default one."""
    return AgentTarget(None, r.string("agentId", non_empty=True, max_len=SESSION_KEY_MAX))


# Models → "Connect provider" → "On this Gateway": OpenClaw looks on its host for AI access to
# set up (CLI logins, keys in its environment, saved profiles) and offers sign-ins and keys to
# save. clawgate probes nothing and saves no credential (its upstreams are its config's), so it
# answers as OpenClaw does when it detects nothing it can set up: no candidates, no sign-in, key
# or install to offer; the agent's primary model is the configured one, so it is set up.
# OpenClaw's `workspace` is left out, as clawgate's agents have none.
NOTHING_TO_SET_UP: dict[str, Any] = {
    "candidates": [],
    "unavailableCandidates": [],
    "manualProviders": [],
    "authOptions": [],
    "prepareOptions": [],
    "recommendedInstalls": [],
    "nativeSessionCatalogs": [],
    "nativeSessionCatalogPreferenceRequired": False,
}


def memory_plan_params(r: ParamReader) -> AgentTarget:
    """`migrations.memory.plan {agentId, overwrite?}`."""
    r.boolean("overwrite")
    return AgentTarget(None, r.required_string("agentId", max_len=SESSION_KEY_MAX))


NO_WEB_SEARCH = "clawgate's agents have no web search tool."
WEB_SEARCH_TEXT_MAX = 512  # OpenClaw's bound on a `webSearch.status` selection


@attrs.frozen
class WebSearchParams:
    """`webSearch.status {agentId?, modelProvider?, modelId?}` (the model: both or neither)."""

    target: AgentTarget
    model: tuple[str, str] | None

    @classmethod
    def parse(cls, r: ParamReader) -> WebSearchParams:
        agent_id, provider, model = (
            r.string(name, non_empty=True, max_len=WEB_SEARCH_TEXT_MAX)
            for name in ("agentId", "modelProvider", "modelId")
        )
        for name, value in (("agentId", agent_id), ("modelProvider", provider), ("modelId", model)):
            if value is not None and not value.strip():
                raise r.fail(name, "must not be blank")
        if (provider is None) != (model is None):
            raise WsError(INVALID_REQUEST, "modelProvider and modelId must be supplied together.")
        chosen = (provider.strip(), model.strip()) if provider and model else None
        return cls(AgentTarget(None, agent_id), chosen)


ARTIFACT_PAGE_MAX = 4  # OpenClaw's bound on an image page of `artifacts.list`
ARTIFACT_CURSOR_MAX = 256


def artifact_query_unsupported(message: str) -> WsError:
    return WsError(INVALID_REQUEST, message, details={"type": "artifact_query_unsupported"})


def artifacts_list_params(r: ParamReader) -> tuple[str | None, str | None]:
    """`artifacts.list {sessionKey? | runId? | taskId?, agentId?, messageRole?, type?, limit?,
    cursor?}`, checked as OpenClaw checks it: the session named (relative to `agentId`)."""
    key, run_id, task_id, agent_id = (
        r.string(name, non_empty=True, max_len=SESSION_KEY_MAX)
        for name in ("sessionKey", "runId", "taskId", "agentId")
    )
    role = r.string("messageRole")
    if role is not None and role != "assistant":
        raise r.fail("messageRole", "must be assistant")
    kind = r.string("type")
    if kind is not None and kind != "image":
        raise r.fail("type", "must be image")
    limit = r.integer("limit", minimum=1, maximum=ARTIFACT_PAGE_MAX)
    cursor = r.string("cursor", non_empty=True, max_len=ARTIFACT_CURSOR_MAX)
    if not (key or run_id or task_id):
        raise artifact_query_unsupported("artifacts require one of sessionKey, runId, or taskId")
    if kind is None and (limit is not None or cursor is not None):
        raise artifact_query_unsupported("limit and cursor require type image")
    return key, agent_id


def grants_list_params(r: ParamReader) -> None:
    r.integer("limit", minimum=1, maximum=GRANTS_LIST_LIMIT_MAX)


def _empty_state(answer: Any) -> Any:
    async def handler(ctx: CallContext, params: None) -> Any:
        return answer

    return handler


async def create_and_start(ctx: CallContext, key: str, params: CreateParams) -> Any:
    """`sessions.create`'s answer: the session of `key`, made if new, and a first message's
    turn started in a new one."""
    info, created = await ctx.registry.create(key, params.label)
    if not created and info.archived_at is not None:
        # OpenClaw resets the session a create names, which an archived one refuses;
        # here it would answer it unchanged and drop the first message in silence.
        raise SessionArchived(key)
    entry = info.to_dict()
    answer = {"ok": True, "key": key, "sessionId": entry["sessionId"], "entry": entry}
    # A first message starts the new session's first turn, as chat.send would (OpenClaw
    # answers its outcome beside the session, `runError` when it could not start). Not
    # for a session that was there: a retried create ran its message the first time.
    if not created or not params.message.strip():
        return answer
    try:
        run = await send(ctx, key, params.message, str(uuid4()), params.timeout_ms)
    except WsError as exc:
        return {**answer, "runStarted": False, "runError": exc.to_dict()}
    return {**answer, "runStarted": run.get("status") == "started", **run}


def register(methods: MethodRegistry) -> None:
    @methods.method("sessions.subscribe", params=no_params, scope=READ)
    async def sessions_subscribe(ctx: CallContext, params: None) -> Any:
        return {"subscribed": True}

    @methods.method("sessions.unsubscribe", params=no_params, scope=READ)
    async def sessions_unsubscribe(ctx: CallContext, params: None) -> Any:
        return {"subscribed": False}

    @methods.method("sessions.describe", params=KeyParams.parse, scope=READ)
    async def sessions_describe(ctx: CallContext, params: KeyParams) -> Any:
        config, registry = ctx.config, ctx.registry
        key = resolve_key(ctx, params.key, "key")
        info = await registry.get_session(key)
        row = info.to_dict() if info is not None else empty_row(config, registry, key)
        return {"session": row}

    @methods.method("sessions.create", params=CreateParams.parse, scope=WRITE)
    async def sessions_create(ctx: CallContext, params: CreateParams) -> Any:
        # A key that has a session already gets that session, unchanged: a retried call
        # finds the session its first try made (OpenClaw would reset it in place).
        raw = params.key if params.key is not None else str(uuid7())
        key = resolve_key_of_agent(ctx, raw, params.agent_id)
        # The session and its first turn, finished together even if the client leaves
        # meanwhile: a session made without the turn would keep it from a retried create.
        return await ctx.to_the_end(create_and_start(ctx, key, params))

    for name, scope, answer in EMPTY_STATES:
        methods.method(name, params=no_params, scope=scope)(_empty_state(answer))

    # A page of OpenClaw's automation inventory, as its Control UI checks it and its CLI
    # reads it (with the revision it needs no `cron.get`): no jobs, so the offset is 0 as
    # OpenClaw clamps it.
    for name, answer in SESSION_FEATURES:
        methods.method(name, params=AgentTarget.parse_session, scope=READ)(_session_feature(answer))

    # OpenClaw's side chat (a question about a session, answered beside it by a utility model)
    # is a feature clawgate does not have: asked, it is refused as OpenClaw refuses it when
    # off; its thread is always empty (`sessions.companion.state`), so a reset has nothing
    # to clear.
    @methods.method("sessions.companion.ask", params=companion_ask_params, scope=READ)
    async def companion_ask(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, SIDE_CHAT_UNAVAILABLE)

    @methods.method("sessions.companion.reset", params=AgentTarget.parse_session, scope=WRITE)
    async def companion_reset(ctx: CallContext, params: AgentTarget) -> Any:
        params.resolve(ctx)
        return {"ok": True}

    # No installer: no update known, none running, no restart record (OpenClaw's `sentinel`).
    @methods.method("update.status", params=update_status_params, scope=ADMIN)
    async def update_status(ctx: CallContext, params: None) -> Any:
        return {"sentinel": None, "updateAvailable": None}

    @methods.method("sessions.observer.visibility", params=observer_visibility_params, scope=READ)
    async def observer_visibility(ctx: CallContext, params: None) -> Any:
        return {"ok": True}

    # An agent's name is its configured `name` (OpenClaw's `nameSource: "agent"`); unset, it is
    # the id, OpenClaw's "default" (whose UI then names the agent from agents.list, the same
    # id). A `name` equal to the id reads as unset: it shows the same. No avatar.
    @methods.method("agent.identity.get", params=AgentTarget.parse_identity, scope=READ)
    async def agent_identity_get(ctx: CallContext, params: AgentTarget) -> Any:
        agent = ctx.config.agents.agent(params.resolve(ctx))
        assert agent is not None  # resolve() refuses an unknown one
        named = agent.name.strip() not in ("", agent.id)
        return {
            "agentId": agent.id,
            "name": agent.name if named else agent.id,
            "nameSource": "agent" if named else "default",
            "avatarStatus": "none",
        }

    # The Channels page's pairing requests: no channels, so no accounts and no requests, and a
    # channel named is unknown, as OpenClaw says of one without pairing.
    @methods.method("channels.pairing.list", params=channel_pairing_params, scope=PAIRING)
    async def channels_pairing_list(ctx: CallContext, channel: str | None) -> Any:
        if channel is not None:
            raise WsError(INVALID_REQUEST, f"unknown pairing channel: {channel}")
        return {
            "accounts": [],
            "requests": [],
            "commandOwnerConfigured": False,
            "limits": CHANNEL_PAIRING_LIMITS,
        }

    # The Usage page's provider quota windows (OpenClaw reads them from its providers'
    # accounts): upstream keys are the config's, no account whose quota to read.
    @methods.method("usage.status", params=no_params, scope=READ)
    async def usage_status(ctx: CallContext, params: None) -> Any:
        return {"updatedAt": now_ms(), "providers": []}

    # Upstream keys are the config's: no OAuth or account profiles whose status to show.
    @methods.method("models.authStatus", params=AgentTarget.parse_auth_status, scope=READ)
    async def models_auth_status(ctx: CallContext, params: AgentTarget) -> Any:
        params.resolve(ctx)
        return {"ts": now_ms(), "providers": []}

    @methods.method("talk.catalog", params=talk_catalog_params, scope=READ)
    async def talk_catalog(ctx: CallContext, params: None) -> Any:
        return EMPTY_TALK_CATALOG

    # `models.list`'s models, chosen automatically (no accounts); no swarm. A session's
    # runtime is never locked (no per-session model).
    @methods.method("chat.metadata", params=ChatMetadataParams.parse, scope=READ)
    async def chat_metadata(ctx: CallContext, params: ChatMetadataParams) -> Any:
        params.target.resolve(ctx)
        answer: dict[str, Any] = {
            "models": model_rows(ctx.config.agents),
            "swarmEnabled": False,
            "accountSelection": {"kind": "automatic", "label": "Automatic account selection"},
        }
        if params.target.session_key is not None:
            answer["runtimeSelectionLocked"] = False
        return answer

    # The Profile settings' GitHub identity of an agent's tools (_github_status).
    @methods.method("tools.github.status", params=GitHubStatusParams.parse, scope=READ)
    async def tools_github_status(ctx: CallContext, params: GitHubStatusParams) -> Any:
        return _github_status(ctx, params)

    # Setting GitHub up: see GITHUB_SETUP_FAILED. Going back to inherit (no identity of the
    # scope's own) changes nothing, as none is configured: the scope's status.
    @methods.method("tools.github.configure", params=github_configure_params, scope=ADMIN)
    async def tools_github_configure(
        ctx: CallContext, params: tuple[GitHubStatusParams, bool]
    ) -> Any:
        target, managed = params
        status = _github_status(ctx, target)
        if managed:
            raise WsError(UNAVAILABLE, GITHUB_SETUP_FAILED)
        return status

    # The Secrets settings list the store first (without this method the page said
    # "Gateway/admin required."): there is none, so no entry.
    @methods.method("secrets.store.list", params=no_params, scope=ADMIN)
    async def secrets_store_list(ctx: CallContext, params: None) -> Any:
        return {"entries": []}

    @methods.method("secrets.store.set", params=secrets_store_set_params, scope=ADMIN)
    async def secrets_store_set(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, NO_SECRET_STORE)

    @methods.method("tools.github.authorize.start", params=github_target_params, scope=ADMIN)
    async def tools_github_authorize_start(ctx: CallContext, params: GitHubStatusParams) -> Any:
        params.target.resolve(ctx)
        raise WsError(UNAVAILABLE, GITHUB_AUTHORIZE_START_FAILED)

    @methods.method("tools.github.authorize.poll", params=github_request_params, scope=ADMIN)
    async def tools_github_authorize_poll(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, GITHUB_AUTHORIZE_POLL_FAILED)

    @methods.method("tools.github.authorize.cancel", params=github_request_params, scope=ADMIN)
    async def tools_github_authorize_cancel(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, GITHUB_AUTHORIZE_UNAVAILABLE)

    # The Notifications settings' "Enable notifications" asks for the gateway's Web Push key
    # first. clawgate sends no push notifications, so it has none: refused as OpenClaw refuses
    # it when it cannot give one, the page showing why.
    @methods.method("push.web.vapidPublicKey", params=no_params, scope=WRITE)
    async def push_web_vapid_public_key(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, NO_WEB_PUSH)

    # A browser still subscribed from an OpenClaw gateway on this address registers again at
    # connect, and its Notifications settings unsubscribe, test and read its preferences.
    @methods.method("push.web.subscribe", params=web_push_subscribe_params, scope=WRITE)
    async def push_web_subscribe(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, NO_WEB_PUSH)

    @methods.method("push.web.unsubscribe", params=web_push_endpoint_params, scope=WRITE)
    async def push_web_unsubscribe(ctx: CallContext, params: None) -> Any:
        raise WsError(FORBIDDEN, NO_WEB_PUSH_SUBSCRIPTION)

    @methods.method("push.web.preferences.get", params=web_push_endpoint_params, scope=READ)
    async def push_web_preferences_get(ctx: CallContext, params: None) -> Any:
        raise WsError(FORBIDDEN, NO_WEB_PUSH_SUBSCRIPTION)

    @methods.method("push.web.preferences.set", params=web_push_preferences_set_params, scope=WRITE)
    async def push_web_preferences_set(ctx: CallContext, params: None) -> Any:
        raise WsError(FORBIDDEN, NO_WEB_PUSH_SUBSCRIPTION)

    @methods.method("push.web.test", params=web_push_test_params, scope=WRITE)
    async def push_web_test(ctx: CallContext, params: None) -> Any:
        raise WsError(INVALID_REQUEST, NO_WEB_PUSH_SUBSCRIPTIONS)

    @methods.method("push.test", params=push_test_params, scope=WRITE)
    async def push_test(ctx: CallContext, node_id: str) -> Any:
        if not node_id:
            raise WsError(INVALID_REQUEST, "nodeId required")
        raise WsError(
            INVALID_REQUEST,
            f"node {node_id} has no APNs registration (connect iOS node first): {NO_NODE_PUSH}",
        )

    # The Memory settings' overview: no memory plugin, so no search, no embeddings, no dreaming.
    @methods.method("doctor.memory.status", params=memory_status_params, scope=READ)
    async def doctor_memory_status(ctx: CallContext, params: AgentTarget) -> Any:
        return {
            "agentId": params.resolve(ctx),
            "embedding": {"ok": False, "error": NO_MEMORY_PLUGIN},
            "dreaming": NO_DREAMING,
        }

    @methods.method("wizard.start", params=wizard_start_params, scope=ADMIN)
    async def wizard_start(ctx: CallContext, flow: str) -> Any:
        raise WsError(UNAVAILABLE, NO_CHANNELS if flow == "channels" else NO_SETUP_WIZARD)

    @methods.method("models.authSetApiKey", params=auth_set_api_key_params, scope=ADMIN)
    async def models_auth_set_api_key(ctx: CallContext, params: AgentTarget) -> Any:
        params.resolve(ctx)
        raise WsError(UNAVAILABLE, NO_MODEL_CREDENTIALS)

    @methods.method("memory.search", params=memory_search_params, scope=READ)
    async def memory_search(ctx: CallContext, params: AgentTarget) -> Any:
        params.resolve(ctx)
        raise WsError(UNAVAILABLE, NO_MEMORY_PLUGIN)

    @methods.method("cron.add", params=cron_add_params, scope=ADMIN)
    async def cron_add(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, NO_SCHEDULER)

    @methods.method("worktrees.create", params=worktrees_create_params, scope=WRITE)
    async def worktrees_create(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, NO_WORKTREES)

    @methods.method("worktrees.branches", params=worktrees_branches_params, scope=WRITE)
    async def worktrees_branches(ctx: CallContext, params: None) -> Any:
        raise WsError(UNAVAILABLE, NO_WORKTREES)

    @methods.method("agents.files.list", params=agent_files_params, scope=READ)
    async def agents_files_list(ctx: CallContext, params: AgentTarget) -> Any:
        params.resolve(ctx)
        raise WsError(UNAVAILABLE, NO_WORKSPACE_FILES)

    @methods.method("tools.catalog", params=tools_catalog_params, scope=READ)
    async def tools_catalog(ctx: CallContext, params: AgentTarget) -> Any:
        return {
            "agentId": params.resolve(ctx),
            "profiles": list(TOOL_PROFILES),
            "groups": [NO_GATEWAY_TOOLS_GROUP],
        }

    @methods.method("tools.effective", params=AgentTarget.parse_session, scope=READ)
    async def tools_effective(ctx: CallContext, params: AgentTarget) -> Any:
        return {
            "agentId": params.resolve(ctx),
            "profile": "full",
            "groups": [],
            "notices": [NO_GATEWAY_TOOLS_NOTICE],
        }

    # The Memory settings' dream diary (OpenClaw's DREAMS.md in the agent's workspace): the
    # agents have no workspace, so none is found, as OpenClaw answers for one without it.
    @methods.method("doctor.memory.dreamDiary", params=agent_id_or_default_params, scope=READ)
    async def doctor_memory_dream_diary(ctx: CallContext, params: AgentTarget) -> Any:
        return {"agentId": params.resolve(ctx), "found": False, "path": DREAM_DIARY}

    # A config path's JSON Schema. A path outside clawgate's config (OpenClaw's `plugins`,
    # which its Memory settings ask about) is not found, as OpenClaw answers one; clawgate's
    # schema is a walk (gateway/config/schema.py), not JSON Schema, so for one of its own
    # paths there is nothing to send: refused as unavailable rather than answered wrongly.
    @methods.method("config.schema.lookup", params=schema_path_params, scope=READ)
    async def config_schema_lookup(ctx: CallContext, path: str) -> Any:
        if not holds_path(path):
            raise WsError(INVALID_REQUEST, "config schema path not found")
        raise WsError(UNAVAILABLE, "config schema lookup is not available on clawgate")

    @methods.method("exec.approvals.get", params=no_params, scope=ADMIN)
    async def exec_approvals_get(ctx: CallContext, params: None) -> Any:
        return EXEC_APPROVALS_SNAPSHOT

    @methods.method("exec.approvals.set", params=exec_approvals_set_params, scope=ADMIN)
    async def exec_approvals_set(ctx: CallContext, params: None) -> Any:
        raise WsError(INVALID_REQUEST, NO_EXEC_TOOL)

    # The Approvals settings' history: clawgate asks for no approvals, so none was decided.
    @methods.method("approval.history", params=approval_history_params, scope=APPROVALS)
    async def approval_history(ctx: CallContext, params: None) -> Any:
        return {"items": []}

    # Standing grants are minted by approved scheduled commands: no scheduler, none.
    @methods.method("exec.approval.grants.list", params=grants_list_params, scope=APPROVALS)
    async def exec_approval_grants_list(ctx: CallContext, params: None) -> Any:
        return {"grants": []}

    # The Skills page: clawgate's agents have no skills, so the library is empty (a session
    # named has none selected and none to attach), and ClawHub, a third party, is not asked.
    @methods.method("skills.library.list", params=skill_library_params, scope=READ)
    async def skills_library_list(ctx: CallContext, session_key: str | None) -> Any:
        if session_key is None:
            return EMPTY_SKILL_LIBRARY
        key = resolve_key(ctx, session_key, "sessionKey")
        session = {"sessionKey": key, "selections": [], "attachable": []}
        return {**EMPTY_SKILL_LIBRARY, "session": session}

    @methods.method("skills.search", params=skills_search_params, scope=READ)
    async def skills_search(ctx: CallContext, params: None) -> Any:
        return {"results": []}

    # Import Memory: no memory plugin, so no provider to import from (OpenClaw's onboarding
    # then closes its import step). OpenClaw adds the agent's `workspace`, where the memory
    # would go; clawgate's agents have none, so it is left out rather than made up.
    @methods.method("migrations.memory.plan", params=memory_plan_params, scope=ADMIN)
    async def migrations_memory_plan(ctx: CallContext, params: AgentTarget) -> Any:
        return {"agentId": params.resolve(ctx), "providers": []}

    @methods.method("openclaw.setup.detect", params=agent_id_params, scope=ADMIN)
    async def setup_detect(ctx: CallContext, params: AgentTarget) -> Any:
        provider, model = default_model(ctx.config, params.resolve(ctx))[:2]
        configured = {"configuredModel": f"{provider}/{model}", "setupComplete": True}
        return {**NOTHING_TO_SET_UP, **configured}

    @methods.method("openclaw.setup.verify", params=setup_verify_params, scope=ADMIN)
    async def setup_verify(ctx: CallContext, params: tuple[AgentTarget, bool]) -> Any:
        target, utility = params
        provider, model = default_model(ctx.config, target.resolve(ctx))[:2]
        if utility:
            return setup_not_verified(NO_UTILITY_MODEL)
        return setup_not_verified(
            f"clawgate sends no check turn: the agent's model {provider}/{model} is configured"
            f" (provider {provider}); a chat message is its check"
        )

    # The Search settings: clawgate's agents have no web search tool, so no provider and no
    # route to search by (OpenClaw's "unavailable" route, saying why); the model is the
    # agent's primary one, or the one asked about, its runtime not resolved as on OpenClaw.
    @methods.method("webSearch.status", params=WebSearchParams.parse, scope=READ)
    async def web_search_status(ctx: CallContext, params: WebSearchParams) -> Any:
        agent_id = params.target.resolve(ctx)
        provider, model = params.model or default_model(ctx.config, agent_id)[:2]
        return {
            "enabled": False,
            "provider": None,
            "agentId": agent_id,
            "model": {
                "provider": provider,
                "id": model,
                "runtime": "unknown",
                "runtimeLabel": "Not resolved",
            },
            "providers": [],
            "route": {
                "kind": "unavailable",
                "label": "Search unavailable",
                "testable": False,
                "reason": NO_WEB_SEARCH,
            },
        }

    # A session's artifacts (OpenClaw's images and files of its turns): clawgate takes no
    # attachments and its tools make no files, so every session, run or task has none.
    @methods.method("artifacts.list", params=artifacts_list_params, scope=READ)
    async def artifacts_list(ctx: CallContext, params: tuple[str | None, str | None]) -> Any:
        key, agent_id = params
        if agent_id is not None and ctx.config.agents.agent(agent_id.lower()) is None:
            raise UnknownAgent(agent_id.lower())
        if key is not None:
            resolve_key(ctx, key, "sessionKey", agent_id=agent_id.lower() if agent_id else None)
        return {"artifacts": []}

    # The Skill workshop: no agent proposes skills here, and none has any to update.
    @methods.method("skills.proposals.list", params=agent_id_params, scope=READ)
    async def skills_proposals_list(ctx: CallContext, params: AgentTarget) -> Any:
        params.resolve(ctx)
        return EMPTY_SKILL_PROPOSALS

    # ClawHub's catalog is a third party's: not asked from here, so nothing to install.
    @methods.method("plugins.catalog.browse", params=plugin_catalog_params, scope=READ)
    async def plugins_catalog_browse(ctx: CallContext, params: None) -> Any:
        return {"items": []}

    @methods.method("tasks.list", params=tasks_list_params, scope=READ)
    async def tasks_list(ctx: CallContext, params: None) -> Any:
        return {"tasks": []}

    @methods.method("cron.list", params=CronListParams.parse, scope=READ)
    async def cron_list(ctx: CallContext, params: CronListParams) -> Any:
        return {
            "jobs": [],
            "snapshotRevision": EMPTY_CRON_REVISION,
            "total": 0,
            "offset": 0,
            "limit": params.limit,
            "hasMore": False,
            "nextOffset": None,
        }

    @methods.method("cron.runs", params=CronJobParams.parse, scope=READ)
    async def cron_runs(ctx: CallContext, params: CronJobParams) -> Any:
        if params.job_id is not None:
            raise cron_job_not_found(params.job_id)
        # Every job's runs (OpenClaw's `scope: "all"`): none.
        return {
            "entries": [],
            "total": 0,
            "offset": 0,
            "limit": params.limit,
            "hasMore": False,
            "nextOffset": None,
        }

    # OpenClaw's Control UI follows the session on screen with these. Its `chat`, `agent` and
    # `sessions.changed` events already reach every reader here (deviation 23), so nothing
    # is narrowed; with `includeApprovals` the replay of the session's pending approvals is
    # empty, as clawgate has no approvals.
    @methods.method("sessions.messages.subscribe", params=MessagesParams.parse, scope=READ)
    async def sessions_messages_subscribe(ctx: CallContext, params: MessagesParams) -> Any:
        key = _messages_key(ctx, params)
        if not params.include_approvals:
            return {"subscribed": True, "key": key}
        if not scope_allows(ctx.conn.scopes, APPROVALS):
            raise WsError(
                INVALID_REQUEST,
                f"sessions.messages.subscribe includeApprovals requires gateway scope: {APPROVALS}",
            )
        replay = {"sessionKey": key, "updatedAtMs": now_ms(), "approvals": [], "truncated": False}
        return {"subscribed": True, "key": key, "approvalReplay": replay}

    @methods.method(
        "sessions.messages.unsubscribe", params=MessagesParams.parse_unsubscribe, scope=READ
    )
    async def sessions_messages_unsubscribe(ctx: CallContext, params: MessagesParams) -> Any:
        return {"subscribed": False, "key": _messages_key(ctx, params)}

    # OpenClaw's Control UI opens a chat with this: the history, with OpenClaw's optional
    # `metadata` (its workspace and model projections) left out. Short chat links are
    # OpenClaw's own; none resolves here, answered as OpenClaw answers a missing one.
    @methods.method("chat.startup", params=StartupParams.parse, scope=READ)
    async def chat_startup(ctx: CallContext, params: StartupParams) -> Any:
        if params.history is None:
            return {"resolution": {"ok": False}}
        return await history(ctx, params.history, params.max_bytes)


def _github_status(ctx: CallContext, params: GitHubStatusParams) -> dict[str, Any]:
    """No GitHub identity configured at either scope, and none detected (OpenClaw's system
    scope is what `gh` finds on its host): the selected scope's identity is the effective one
    for "system" and none for "agent"."""
    agent_id = params.target.resolve(ctx)
    selected = NO_GITHUB_IDENTITY if params.scope == "system" else None
    return {
        "agentId": agent_id,
        "selectedScope": params.scope,
        "selected": {"scope": params.scope, "configured": False, "identity": selected},
        "effective": NO_GITHUB_IDENTITY,
    }


def _session_feature(answer: Any) -> Any:
    async def handler(ctx: CallContext, params: AgentTarget) -> Any:
        params.resolve(ctx)
        return answer

    return handler


def _messages_key(ctx: CallContext, params: MessagesParams) -> str:
    agent_id = params.agent_id.lower() if params.agent_id else None
    if agent_id is not None and ctx.config.agents.agent(agent_id) is None:
        raise UnknownAgent(agent_id)
    return resolve_key(ctx, params.key, "key", agent_id=agent_id)
