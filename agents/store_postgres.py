"""The session store on PostgreSQL: one database shared by every gateway process and host.

The same tables and the same contract as the SQLite store (agents/store.py); what differs:

- the driver is asyncpg, with its pool: a turn's round trips cost about a quarter less client
  CPU than psycopg 3 with psycopg_pool in our measurement (one turn's transaction, 2,000 times:
  ~490 µs against ~665 µs of CPU per turn on this box), and its pool replaces a broken
  connection on the next acquire by itself;
- the schema is versioned in `clawgate_schema`, and migrations run at open inside a
  transaction that holds `pg_advisory_xact_lock`: two processes starting together migrate once;
- `turn_lock` holds `pg_advisory_lock` on the session key for the length of a turn, on a
  connection of its own pool (a turn's own queries use the other pool, so turns waiting for
  locks can never starve the queries of the turns that hold them; its transcript write goes on
  the lock's connection, so a turn whose lock was lost writes nothing). The lock belongs to the
  connection: a killed process's connection closes, and the lock with it; the server finds
  that of a process cut off by the network dead within about a minute (SERVER_KEEPALIVES);
- `used_bytes` is the estimate of the live rows (text plus a fixed part per row), not the
  size of the files: PostgreSQL frees space only to its own reuse, as SQLite's free pages.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Sequence,
)
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import structlog

from agents.config import MaintenanceConfig
from agents.errors import (
    SessionArchivedPin,
    SessionChanged,
    StoreError,
    StoreUnavailable,
    UnusableStore,
)
from agents.events_postgres import PostgresEventBus, unanswered
from agents.ids import uuid7
from agents.keys import is_main_key
from agents.store import (
    _ALL_TURNS,
    _MESSAGE_ROW_BYTES,
    _SESSION_ROW_BYTES,
    PRUNE_BATCH,
    SESSION_USAGE_COLUMNS,
    SESSION_USAGE_GROUP,
    SESSION_USAGE_LABELLED,
    SQL_ANSWER,
    SQL_NOT_REFUSED,
    SQL_RESPONSE_OUTPUT_IDS,
    SQL_USAGE_POINTS,
    SQL_USER_NOT_REFUSED,
    DailyUsage,
    History,
    ResponseOutputIds,
    ResponsePlace,
    SessionPage,
    SessionRow,
    SessionUsage,
    StoredMessage,
    StoredResponse,
    TurnChain,
    TurnRecord,
    UsagePoint,
    _dumps_ids,
    _message,
    _session_row,
    _session_usage,
    _sql_int,
    _usage_point,
    active_since,
    history_span,
    last_replayed_assistant,
    response_output_ids,
    tell_commit,
    turn_messages,
    usage_offset,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The first key of every advisory lock we take ('claw'), so ours never meet another
# application's locks in the same database; the second names what is locked.
LOCK_CLASS = 0x636C6177
_MIGRATION_LOCK = 0  # the schema; session keys are hashed into the turn-lock class below
# Held (shared) by a maintenance pass's transaction beside the turn locks of the sessions it
# deletes: a turn lock whose holder holds this one too is a pass's, no turn's
# (`turn_running_elsewhere`). A turn takes nothing more.
_PRUNE_MARK = 1
LOCK_CLASS_TURN = LOCK_CLASS + 1
# Query pool: a turn makes three or four short trips; ten connections keep a busy process's
# turns from queueing on the pool while staying far below the server's max_connections.
DEFAULT_POOL_SIZE = 10
# Query pool connections the reads that scan a table (`list`, `count`, `usage_by_day`) hold
# at most: any operator.read client may ask for them at will, and turns queued behind them on
# the pool would wait. Two of the default ten; half of a smaller pool; one of a pool of one.
SCAN_CONNECTIONS = 2
# Connections that hold turn locks: one per running turn of this process (its
# agents.defaults.maxConcurrent), and one per turn waiting for another process's turn of
# its session (at most DEFAULT_LOCK_WAITERS do so without a run slot; see turn_lock).
DEFAULT_LOCK_POOL_SIZE = 32
DEFAULT_LOCK_WAITERS = 16
# A turn's statement numbers its messages after the transcript's last seq, read in the same
# statement; two turns of one session committing at once both read the same one, and the
# second fails on the unique (session_id, seq). The turn lock keeps them apart (a turn whose
# lock was lost writes nothing: `append_turn`), except when never taken (a key minted for its
# turn, that another process was sent before the turn ended): the loser runs again
# and reads the winner's seq. Each try lost is another turn of the session committed
# meanwhile, so this bound is far beyond any number of turns of one session that can meet.
APPEND_TURN_TRIES = 32
SEQ_CONSTRAINT = "messages_session_id_seq_key"  # PostgreSQL's name for UNIQUE (session_id, seq)
SQL_LOCK = "SELECT pg_advisory_lock($1, hashtext($2))"
SQL_TRY_LOCK = "SELECT pg_try_advisory_lock($1, hashtext($2))"
# A request must not hang on a database that is down: connecting gives up after this long.
CONNECT_TIMEOUT_S = 5.0
# Nor on one that stopped answering (a host gone from the network, a paused VM: the connection
# stays open for many minutes). Our statements take milliseconds, a maintenance batch or a
# usage scan of a large store seconds; one unanswered this long is a database that is away.
STATEMENT_TIMEOUT_S = 30.0
# A process cut off from the database (a partition, a host gone: no FIN, no RST) keeps its turn
# locks on the server until the server finds the connection dead, and every other process's
# turns of those sessions wait as long. Left to the OS that takes 2 h 11 min (Linux: 7200 s
# idle, then 9 probes 75 s apart); asked of the server, it probes a connection idle 30 s (a
# lock connection is idle while its turn waits for the model) every 10 s and gives up after
# 3 unanswered: about a minute. Probes answer while the process lives, even stopped, so no
# live process loses a lock to them. Over a unix socket the server ignores them.
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}
# On every connection of the store, by server version (an older server refuses the names); a
# query connection holds FOR UPDATE row locks in a write's transaction, a lock connection the
# turn locks:
# - 12+: the same minute when the server has sent something the client never acknowledged
#   (the partition came as a reply went out); keepalives probe idle connections only, and TCP
#   would retransmit for 15 min (Linux's tcp_retries2). In ms.
# - 14+: a statement that waits (a turn waiting for another's lock) checks this often (ms)
#   whether its client is still there, and ends when it is not; without it, the waiter of a
#   vanished process takes the lock in its turn and holds it until it fails to answer.
SERVER_LOCK_SETTINGS = (
    (12, {"tcp_user_timeout": "60000"}),
    (14, {"client_connection_check_interval": "10000"}),
)

# What a label search folds with, beside the database's default (`_label_folding`): a C or
# POSIX database's lower() folds ASCII letters only, and "Ärger" would never match "ärger".
# ICU's root locale (a PostgreSQL built with ICU), then PostgreSQL 17's built-in C.UTF-8.
FOLDING_COLLATIONS = ("und-x-icu", "pg_c_utf8")
# Letters a folding must lower as Python's str.lower does (the needle is lowered in Python).
_FOLD_PROBE = "ÄΣΊ"
# Maintenance's statements get longer: a batch deletes up to 500 sessions with their whole
# transcripts, and the archived transcripts past their age, far more rows than a turn writes.
MAINTENANCE_TIMEOUT_S = 600.0
# A write's wait for a lock at the server (a pass's on its session's rows), as a share of the
# statement timeout (`_write_waiting`): half, so that the server's answer comes well before
# the timeout would close the connection.
LOCK_WAIT_SHARE = 0.5
# Closing the pools at shutdown: each connection says goodbye and waits for the server's.
CLOSE_TIMEOUT_S = 5.0

_SCHEMA_V1 = """
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    label TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens BIGINT NOT NULL DEFAULT 0,
    model_provider TEXT,
    model TEXT,
    last_run_id TEXT,
    last_status TEXT,
    aborted_last_run BOOLEAN NOT NULL DEFAULT FALSE,
    stateless BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX sessions_by_updated ON sessions(updated_at);
CREATE INDEX sessions_by_agent ON sessions(agent_id, updated_at);
CREATE INDEX sessions_stateless_by_updated ON sessions(updated_at) WHERE stateless;
CREATE TABLE transcripts (
    session_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    archived_at BIGINT
);
CREATE INDEX transcripts_by_key ON transcripts(key);
CREATE INDEX transcripts_by_archived ON transcripts(archived_at) WHERE archived_at IS NOT NULL;
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES transcripts(session_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    timestamp BIGINT NOT NULL,
    run_id TEXT,
    idempotency_key TEXT,
    provider TEXT,
    model TEXT,
    api TEXT,
    usage TEXT,
    stop_reason TEXT,
    aborted BOOLEAN NOT NULL DEFAULT FALSE,
    error_message TEXT,
    meta TEXT,
    tool_call_id TEXT,
    tool_name TEXT,
    is_error BOOLEAN NOT NULL DEFAULT FALSE,
    context_start BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (session_id, seq)
);
CREATE INDEX messages_context_starts ON messages(session_id, seq) WHERE context_start
"""

# As the SQLite store's schema 4: `/v1/responses` objects, children of their transcript (a
# pruned or deleted session takes its responses with it; the index keeps the cascade a lookup).
_SCHEMA_V2_RESPONSES = """
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES transcripts(session_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX responses_by_session ON responses(session_id)
"""

# The webhooks' idempotency keys, for every process: a retry that reaches another process gets
# the run of the first call rather than a second run (gateway/http/hooks.py). A row is a call's
# replay scope (a hash), kept until `expires_at` (ms since the epoch).
_SCHEMA_V3_HOOK_CALLS = """
CREATE TABLE hook_calls (
    scope TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    session_key TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX hook_calls_by_expiry ON hook_calls(expires_at)
"""

# The WebSocket `chat.send`/`agent` idempotency keys share the table (gateway/ws/claims.py),
# under scopes of their own ("ws:" and a hash, where a webhook's is a bare hash), and say when
# their run has ended: a retry on another process then answers `ok` rather than `in_flight`.
_SCHEMA_V4_CALL_ENDS = """
ALTER TABLE hook_calls ADD COLUMN ended BOOLEAN NOT NULL DEFAULT FALSE
"""

# As the SQLite store's schema 5: archived sessions (set while archived, with the reason).
_SCHEMA_V5_ARCHIVED = """
ALTER TABLE sessions ADD COLUMN archived_at BIGINT, ADD COLUMN archive_reason TEXT
"""

# As the SQLite store's schema 6: pinned sessions (set while pinned).
_SCHEMA_V6_PINNED = """
ALTER TABLE sessions ADD COLUMN pinned_at BIGINT;
CREATE INDEX sessions_pinned ON sessions(pinned_at) WHERE pinned_at IS NOT NULL
"""

# As the SQLite store's schema 7: a turn's messages found by its run.
_SCHEMA_V7_RUNS = """
CREATE INDEX messages_by_run ON messages(session_id, run_id, seq)
"""

# As the SQLite store's schema 8: a turn's reply, and the next assistant message, found by
# a lookup rather than a step along the session's messages.
_SCHEMA_V10_TURN_ENDS = """
CREATE INDEX messages_replies ON messages(session_id, seq) WHERE stop_reason IS NOT NULL;
CREATE INDEX messages_assistants ON messages(session_id, seq) WHERE role = 'assistant'
"""

# As the SQLite store's schema 9: the answers, by seq; the end of a run of refused turns a
# lookup rather than a step along the index of replies, one entry a refused turn.
_SCHEMA_V11_ANSWERS = f"""
CREATE INDEX messages_answers ON messages(session_id, seq) WHERE {SQL_ANSWER}
"""

# A claim's answer, kept with it once ended (JSON, NULL: none): the facts of an `agent` bare
# `/new`'s answer, so a retry on another process answers it again rather than resetting again
# (gateway/ws/claims.py `claim_reset`).
_SCHEMA_V8_CALL_ANSWERS = """
ALTER TABLE hook_calls ADD COLUMN answer TEXT
"""

# The claims whose run has not ended, by their session: `chat.abort` of a session (no run id)
# finds a claimed run that waits for a run slot on another process, which holds no turn lock
# and has said nothing on the bus yet (`claimed_run_going_on`). Only those not ended: an
# ended claim is kept 5 or 10 minutes, and nothing looks it up by session.
_SCHEMA_V9_CALLS_BY_SESSION = """
CREATE INDEX hook_calls_going_on ON hook_calls(session_key) WHERE NOT ended
"""

# A call claim's times (`hook_calls.expires_at`, ms since the epoch) are the database's clock:
# the processes that share the store each have their own, and a lease of seconds measured by
# two of them (written by one, expired by another a few seconds ahead) would let a retry take
# a claim whose run still goes on, and run it twice. (`expires_at` was the writer's clock
# before; a row written so is kept as long as that clock said.)
SQL_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
SQL_FORGET_EXPIRED_CALLS = f"DELETE FROM hook_calls WHERE expires_at <= {SQL_NOW_MS}"
# How often a claim found starting is looked at again: a start is an in-memory submit and one
# statement away (milliseconds); at most for the claim's lease, when its process died or
# failed to release it.
CLAIM_START_POLL_S = 0.05

# As the SQLite store's schema 10: a response's output item ids beside its body.
_SCHEMA_V12_OUTPUT_IDS = """
ALTER TABLE responses ADD COLUMN output_ids TEXT
"""

# A claim made before its run is submitted (a webhook's, a WebSocket `chat.send`/`agent`
# key's) says so until its process has submitted the run (its first renewal): the call may
# still be refused (an archived session, a full backlog) and its claim released, and a retry
# on another process that found it meanwhile was told of a run that never started. Such a
# retry now waits for the claim to start, or to be released, or its lease to run out
# (`claim_call`'s `starting`). Existing rows, and every other claim, are started.
_SCHEMA_V13_CALL_STARTS = """
ALTER TABLE hook_calls ADD COLUMN started BOOLEAN NOT NULL DEFAULT TRUE
"""

# MIGRATIONS[v] takes the schema from version v to v + 1. Version 1 is the SQLite store's
# schema 3 at once: there was never an older PostgreSQL schema to migrate from.
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_V1,
    _SCHEMA_V2_RESPONSES,
    _SCHEMA_V3_HOOK_CALLS,
    _SCHEMA_V4_CALL_ENDS,
    _SCHEMA_V5_ARCHIVED,
    _SCHEMA_V6_PINNED,
    _SCHEMA_V7_RUNS,
    _SCHEMA_V8_CALL_ANSWERS,
    _SCHEMA_V9_CALLS_BY_SESSION,
    _SCHEMA_V10_TURN_ENDS,
    _SCHEMA_V11_ANSWERS,
    _SCHEMA_V12_OUTPUT_IDS,
    _SCHEMA_V13_CALL_STARTS,
)
SCHEMA_VERSION = len(MIGRATIONS)

_SESSION_COLUMNS = (
    "key, agent_id, session_id, label, created_at, updated_at, input_tokens, output_tokens,"
    " total_tokens, model_provider, model, last_run_id, last_status, aborted_last_run,"
    " archived_at, archive_reason, pinned_at"
)
_MESSAGE_COLUMNS = (
    "id, session_id, seq, role, content, timestamp, run_id, idempotency_key, provider, model,"
    " api, usage, stop_reason, aborted, error_message, meta, tool_call_id, tool_name, is_error,"
    " context_start"
)

SQL_GET_SESSION = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE key = $1"
SQL_CREATE = f"""
WITH s AS (
    INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at, stateless)
    VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT (key) DO NOTHING
    RETURNING {_SESSION_COLUMNS}
), t AS (
    INSERT INTO transcripts (session_id, key, agent_id, created_at)
    SELECT session_id, key, agent_id, created_at FROM s
)
SELECT * FROM s
"""
SQL_ADD_TRANSCRIPT = (
    "INSERT INTO transcripts (session_id, key, agent_id, created_at) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (session_id) DO NOTHING"
)
# The whole turn in one statement (one round trip, atomic as any statement): the transcript
# row if missing, the messages numbered after the transcript's last seq, the row upsert.
# The foreign key of the messages is checked at the end of the statement, after `t`. As
# SQLite's SQL_UPSERT_TURN: a reset always wins over a late turn of the old transcript.
SQL_APPEND_TURN = f"""
WITH t AS (
    INSERT INTO transcripts (session_id, key, agent_id, created_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (session_id) DO NOTHING
), base AS (
    SELECT COALESCE(MAX(seq), 0) AS seq FROM messages WHERE session_id = $1
), m AS (
    INSERT INTO messages ({_MESSAGE_COLUMNS})
    SELECT x->>0, $1, base.seq + x.n, x->>1, x->>2, (x->>3)::bigint, x->>4, x->>5, x->>6,
           x->>7, x->>8, x->>9, x->>10, (x->>11)::boolean, x->>12, x->>13, x->>14, x->>15,
           (x->>16)::boolean, (x->>17)::boolean
    FROM base, json_array_elements($5::json) WITH ORDINALITY AS x(x, n)
)
INSERT INTO sessions AS s ({_SESSION_COLUMNS}, stateless)
VALUES ($2, $3, $1, NULL, $4, $6, $7, $8, $7, $9, $10, $11, $12, $13, NULL, NULL, NULL, $14)
ON CONFLICT (key) DO UPDATE SET
    stateless = s.stateless AND excluded.stateless,
    -- A row created while the turn ran and holding no message yet (a label given during a
    -- minted key's first turn, whose row the turn writes): the session is the turn's, which
    -- holds its messages. Not when the turn's transcript was archived meanwhile (a reset
    -- during a session's first turn wins, as over any late turn), nor over a turn another
    -- process stored under the key meanwhile (its row stays the key's).
    session_id = CASE WHEN s.created_at >= excluded.created_at
                           AND NOT EXISTS (SELECT 1 FROM transcripts AS t
                                           WHERE t.session_id = excluded.session_id
                                             AND t.archived_at IS NOT NULL)
                           AND NOT EXISTS (SELECT 1 FROM messages AS m
                                           WHERE m.session_id = s.session_id)
                      THEN excluded.session_id ELSE s.session_id END,
    updated_at = excluded.updated_at,
    input_tokens = excluded.input_tokens,
    output_tokens = excluded.output_tokens,
    total_tokens = excluded.total_tokens,
    model_provider = COALESCE(excluded.model_provider, s.model_provider),
    model = COALESCE(excluded.model, s.model),
    last_run_id = excluded.last_run_id,
    last_status = excluded.last_status,
    aborted_last_run = excluded.aborted_last_run
RETURNING {_SESSION_COLUMNS}
"""

SQL_RECENT_TURNS = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = $1 AND seq >= GREATEST(
    COALESCE((SELECT seq FROM messages AS m WHERE session_id = $1 AND role = 'user'
              AND {SQL_USER_NOT_REFUSED} ORDER BY seq DESC LIMIT 1 OFFSET $2), 0),
    COALESCE((SELECT seq FROM messages WHERE session_id = $1 AND context_start
              ORDER BY seq DESC LIMIT 1), 0))
ORDER BY seq
"""
SQL_LAST_ASSISTANT = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages AS m
WHERE session_id = $1 AND role = 'assistant' AND {SQL_NOT_REFUSED} ORDER BY seq DESC LIMIT 1
"""
SQL_MESSAGES_AFTER = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq > $2 ORDER BY seq
"""
# As the SQLite store's: a turn's last message and the transcript's; the turn's conversation.
SQL_TURN_END = """
SELECT (SELECT MAX(seq) FROM messages WHERE session_id = $1 AND run_id = $2),
       (SELECT MAX(seq) FROM messages WHERE session_id = $1)
"""
SQL_CHAIN_TO = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = $1 AND seq <= $2 AND seq >= GREATEST(
    COALESCE((SELECT seq FROM messages AS m WHERE session_id = $1 AND role = 'user'
              AND seq <= $2 AND {SQL_USER_NOT_REFUSED} ORDER BY seq DESC LIMIT 1 OFFSET $3),
             0),
    COALESCE((SELECT seq FROM messages WHERE session_id = $1 AND context_start
              AND seq <= $2 ORDER BY seq DESC LIMIT 1), 0))
ORDER BY seq
"""
# As the SQLite store's: a turn's conversation read a stretch at a time.
SQL_CHAIN_BOUNDS = """
SELECT COALESCE((SELECT seq FROM messages WHERE session_id = $1 AND context_start
                 AND seq <= turn.reply ORDER BY seq DESC LIMIT 1), 0), turn.reply
FROM (SELECT MAX(seq) AS reply FROM messages WHERE session_id = $1 AND run_id = $2) AS turn
"""
SQL_MESSAGES_IN = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq BETWEEN $2 AND $3
ORDER BY seq LIMIT $4
"""
SQL_MESSAGES_IN_DESC = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq BETWEEN $2 AND $3
ORDER BY seq DESC LIMIT $4
"""
SQL_MESSAGE_SEQ = "SELECT seq FROM messages WHERE id = $1 AND session_id = $2"
SQL_MESSAGES_BY_ID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1::text[])"
SQL_TURN_REPLY = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq BETWEEN $2 AND $3
AND stop_reason IS NOT NULL ORDER BY seq LIMIT 1
"""
SQL_NEXT_ASSISTANT = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq BETWEEN $2 AND $3
AND role = 'assistant' ORDER BY seq LIMIT 1
"""
SQL_LAST_ASSISTANT_IN = """
SELECT seq FROM messages WHERE session_id = $1 AND seq BETWEEN $2 AND $3 AND role = 'assistant'
ORDER BY seq DESC LIMIT 1
"""
SQL_FIRST_DIFFERENCE = """
SELECT a.seq FROM messages AS a JOIN messages AS b
ON b.session_id = a.session_id AND b.seq = a.seq + $4
WHERE a.session_id = $1 AND a.seq BETWEEN $2 AND $3
AND NOT (a.role IS NOT DISTINCT FROM b.role AND a.content IS NOT DISTINCT FROM b.content
         AND a.meta IS NOT DISTINCT FROM b.meta
         AND a.tool_call_id IS NOT DISTINCT FROM b.tool_call_id
         AND a.tool_name IS NOT DISTINCT FROM b.tool_name)
ORDER BY a.seq LIMIT 1
"""
# As the SQLite store's: the end of a run of refused turns; the last answer.
SQL_REFUSED_RUN_END = f"""
SELECT MAX(seq) FROM messages WHERE session_id = $1 AND stop_reason IS NOT NULL
AND seq >= $2 AND seq < COALESCE((SELECT seq FROM messages WHERE session_id = $1
    AND seq BETWEEN $2 AND $3 AND {SQL_ANSWER} ORDER BY seq LIMIT 1), $3 + 1)
"""
SQL_LAST_ANSWER = f"""
SELECT seq FROM messages WHERE session_id = $1 AND seq BETWEEN $2 AND $3 AND {SQL_ANSWER}
ORDER BY seq DESC LIMIT 1
"""

# PostgreSQL's text holds neither NUL nor a lone surrogate (SQLite stores both): client
# text with either is stored with U+FFFD in its place rather than failing the turn. Keys
# too, and a key is looked up (and locked) as it is stored.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    if isinstance(value, str) and _UNSTORABLE.search(value) is not None:
        return _UNSTORABLE.sub("\ufffd", value)
    return value


def _args(args: Sequence[Any]) -> list[Any]:
    return [_storable(a) for a in args]


def _unless_in_url(url: str, settings: dict[str, str]) -> dict[str, str]:
    """`settings` but those the URL sets (`?tcp_keepalives_idle=120`): the operator's word
    wins (asyncpg would let the explicit ones win)."""
    given = {name for name, _ in parse_qsl(urlsplit(url).query)}
    return {name: value for name, value in settings.items() if name not in given}


def redacted_url(url: str) -> str:
    """`url` with its password, if any, replaced: what a log line may show."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable url>"


# Errors that mean the database cannot be reached now (down, restarting, the connection cut):
# a client may retry later. Anything else is a failed statement.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,  # the connection was lost mid-statement
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # A pooled connection the server dropped, found out in the middle of using it.
    asyncpg.InternalClientError,
)


def _store_error(exc: BaseException) -> StoreError:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(text)
    return StoreError(text)


Connection = Any  # asyncpg's pool hands out proxies of asyncpg.Connection
_ASYNCPG_POOL_LOG = logging.getLogger("asyncpg.pool")
_POOL_FLOOR_FAILED = "Failed to restore the pool connection floor"  # asyncpg's own words
# What a turn does while another process runs a turn of its session (RunSlots.lent).
Waiting = Callable[[], contextlib.AbstractAsyncContextManager[None]]


async def _as_it_is(conn: Connection) -> None:
    """The pools' reset: a connection goes back as it is. The store leaves no session state on
    one (no SET, LISTEN or cursor; the one session-level lock, `turn_lock`'s, is unlocked or
    its connection closed), asyncpg still rolls back a transaction left open, and its default
    reset (four statements, one round trip per use) was a sixth of a turn's CPU."""


async def _acquire(pool: asyncpg.Pool) -> Connection:
    """A pooled connection within CONNECT_TIMEOUT_S. Not asyncpg's own `timeout=`: it wraps
    every acquire in a task of its own (`wait_for`), and applies the timeout to the release's
    reset too; that was a third of a stateless turn's store CPU."""
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        return await pool.acquire()


@contextlib.contextmanager
def _answered_within(conn: Connection, seconds: float) -> Iterator[None]:
    """Close `conn` when what runs inside waits longer than `seconds` for the server: the
    statement, and a rollback after it, fail at once (a timeout that cancelled the wait would
    leave asyncpg waiting for the server to confirm the cancel, and the rollback behind it)."""
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        _terminate(conn)

    deadline = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        yield
    except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
        if expired:
            raise StoreUnavailable(f"no answer from the database in {seconds} s") from exc
        raise
    except asyncio.CancelledError:
        # Cancelled midway (a shutdown, a closed WebSocket): asyncpg would ask the server to
        # cancel the statement and hold the connection until it confirms, which one that
        # stopped answering never does. Closed, the connection goes back to its pool at once.
        _terminate(conn)
        raise
    finally:
        deadline.cancel()


@contextlib.asynccontextmanager
async def _transaction(conn: Connection, lock_wait_ms: int | None = None) -> AsyncIterator[None]:
    """What runs inside is one transaction: committed when it ends, rolled back when it
    raises. Not asyncpg's `conn.transaction()` block: on a connection closed meanwhile (the
    server cut it, `_answered_within` closed it) its rollback fails, and that error
    (`InterfaceError: cannot call Transaction.__aexit__()`) replaced the cause.
    `lock_wait_ms`: its waits for a lock end so, set in the BEGIN's round trip."""
    begin = "BEGIN" if lock_wait_ms is None else f"BEGIN; SET LOCAL lock_timeout = {lock_wait_ms}"
    await conn.execute(begin)
    try:
        yield
    except BaseException:
        try:
            await conn.execute("ROLLBACK")
        except (asyncpg.PostgresError, *_UNAVAILABLE):
            # The transaction went with its connection (or goes with it now): nothing is
            # left of it, and the error that ended it is the one to tell.
            _terminate(conn)
        raise
    await conn.execute("COMMIT")


def _terminate(conn: Connection) -> None:
    """Close a pooled connection now, whatever state it is in. One the server cut (a restart)
    is already closed, and asyncpg has taken it back into the pool: nothing is left to do."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def _set_archived(
    conn: Connection, key: str, archived: bool, now: int, session_id: str | None
) -> SessionRow | None:
    """`PostgresSessionStore.set_archived` on `conn`."""
    if archived:
        sql = (
            "UPDATE sessions SET archived_at = COALESCE(archived_at, $1),"
            " archive_reason = COALESCE(archive_reason, 'manual'), updated_at = $1,"
            f" pinned_at = NULL WHERE key = $2 RETURNING {_SESSION_COLUMNS}"
        )
    else:
        sql = (
            "UPDATE sessions SET archived_at = NULL, archive_reason = NULL, updated_at = $1"
            f" WHERE key = $2 RETURNING {_SESSION_COLUMNS}"
        )
    if session_id is not None:
        # Locked, so a session another process creates or resets on the key meanwhile is
        # not the one archived; none there: nothing to archive.
        found = await conn.fetchval(
            "SELECT session_id FROM sessions WHERE key = $1 FOR UPDATE", _storable(key)
        )
        if found is None:
            return None
        if found != session_id:
            raise SessionChanged(key)
    row = await conn.fetchrow(sql, *_args((now, key)))
    return _session_row(tuple(row)) if row is not None else None


async def _still_session(conn: Connection, key: str, session_id: str) -> None:
    """SessionChanged unless `key` holds the session `session_id`; its row stays locked to
    the end of the transaction, so no reset or delete comes between this and the write."""
    found = await conn.fetchval(
        "SELECT session_id FROM sessions WHERE key = $1 FOR UPDATE", _storable(key)
    )
    if found != session_id:
        raise SessionChanged(key)


class PostgresSessionStore:
    """PostgreSQL-backed sessions and transcripts; see the module docstring."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        lock_pool_size: int = DEFAULT_LOCK_POOL_SIZE,
        max_lock_waiters: int = DEFAULT_LOCK_WAITERS,
        on_commit: Callable[[float], None] | None = None,
        statement_timeout: float = STATEMENT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self._statement_timeout = statement_timeout
        # Told the seconds each write took, its first statement to its commit (the gateway's
        # metrics, as the SQLite store's); it must not block: it runs on the event loop.
        self.on_commit = on_commit
        self._on_commit_failed = False  # its first error was logged (`tell_commit`)
        self._password = password
        self._pool_size = pool_size
        self._scans = asyncio.Semaphore(max(1, min(SCAN_CONNECTIONS, pool_size // 2)))
        self._lock_pool_size = lock_pool_size
        self._max_lock_waiters = max_lock_waiters
        self._lock_waiters = 0  # turns in `while_waiting` now
        self._pool: asyncpg.Pool | None = None
        self._locks: asyncpg.Pool | None = None
        # The lock connection of each turn this process runs, by its key (`turn_lock`): the
        # turn's write goes on it (`append_turn`).
        self._held: dict[str, Connection] = {}
        self._label_collate = ""  # ` COLLATE "<name>"` when the default does not fold
        # The versions this process's open() applied: empty when another had done it.
        self.migrated: tuple[int, ...] = ()
        self.bus = PostgresEventBus(url, password=password)
        # Since when the database cannot be reached, as this process last found it (None: it
        # can): an outage is logged once when it starts and once when it ends, however many
        # calls fail in between.
        self._down_since: float | None = None

    def __repr__(self) -> str:
        return f"PostgresSessionStore({redacted_url(self.url)!r})"

    @property
    def reachable(self) -> bool:
        """False while this process last found the database unreachable (`_unreachable`)."""
        return self._down_since is None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            settings = _unless_in_url(self.url, await self._server_settings())
            self.bus.server_settings = settings
            pool = await asyncpg.create_pool(
                self.url, password=self._password, min_size=1, max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_S, reset=_as_it_is, server_settings=settings,
            )  # fmt: skip
        except asyncpg.ClientConfigurationError as exc:
            # A setting of the URL the driver refuses (`?sslmode=bogus`): every start would.
            raise UnusableStore(f"store.url: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise unanswered(self.url, CONNECT_TIMEOUT_S) from exc
        except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
            raise _store_error(exc) from exc
        try:
            async with pool.acquire() as conn:
                self.migrated = await self._migrate(conn)
                self._label_collate = await self._label_folding(conn)
            locks = await asyncpg.create_pool(
                self.url, password=self._password, min_size=0, max_size=self._lock_pool_size,
                timeout=CONNECT_TIMEOUT_S, reset=_as_it_is,
                server_settings=settings,
            )  # fmt: skip
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, (asyncpg.PostgresError, *_UNAVAILABLE)):
                raise _store_error(exc) from exc
            raise
        self._pool, self._locks = pool, locks
        _ASYNCPG_POOL_LOG.addFilter(self._pool_log)
        log.info("store_opened", backend="postgres", url=redacted_url(self.url),
                 schema=SCHEMA_VERSION, migrated=list(self.migrated))  # fmt: skip

    async def _server_settings(self) -> dict[str, str]:
        """SERVER_KEEPALIVES and the SERVER_LOCK_SETTINGS this server knows. Asked on a
        connection of its own: a pool's connections are given their settings as they connect,
        before the server's version is known."""
        conn = await asyncpg.connect(self.url, password=self._password, timeout=CONNECT_TIMEOUT_S)
        major = conn.get_server_version().major
        try:
            await conn.close(timeout=CLOSE_TIMEOUT_S)
        except (asyncpg.PostgresError, *_UNAVAILABLE):
            conn.terminate()
        settings = dict(SERVER_KEEPALIVES)
        for since, more in SERVER_LOCK_SETTINGS:
            if major >= since:
                settings.update(more)
        return settings

    async def aclose(self) -> None:
        pool, locks = self._pool, self._locks
        self._pool = self._locks = None
        _ASYNCPG_POOL_LOG.removeFilter(self._pool_log)
        for each in (locks, pool):
            if each is not None:
                try:
                    # A goodbye the server does not answer (it stopped answering) would be
                    # waited for without end, and the gateway would never exit.
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await each.close()
                except (asyncpg.PostgresError, *_UNAVAILABLE):
                    each.terminate()

    async def __aenter__(self) -> PostgresSessionStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @staticmethod
    async def _label_folding(conn: Connection) -> str:
        """The COLLATE clause under which lower() folds every letter as Python does: none
        when the database's default does, else the first of FOLDING_COLLATIONS that exists
        and does (else none: ASCII-only, the best this server offers)."""
        for name in ("", *FOLDING_COLLATIONS):
            collate = f' COLLATE "{name}"' if name else ""
            try:
                folded = await conn.fetchval(f"SELECT lower($1::text{collate})", _FOLD_PROBE)
            except asyncpg.PostgresError:  # no such collation here
                continue
            if folded == _FOLD_PROBE.lower():
                return collate
        return ""

    @staticmethod
    async def _migrate(conn: Connection) -> tuple[int, ...]:
        applied: list[int] = []
        async with _transaction(conn):
            # Held to the end of this transaction: a second process starting now waits here,
            # then finds the schema current.
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS clawgate_schema (version INTEGER NOT NULL)"
            )
            version = await conn.fetchval("SELECT MAX(version) FROM clawgate_schema") or 0
            if version > SCHEMA_VERSION:
                raise UnusableStore(
                    f"the database has schema {version}, newer than {SCHEMA_VERSION}"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[target - 1])
                await conn.execute("INSERT INTO clawgate_schema (version) VALUES ($1)", target)
                applied.append(target)
        return tuple(applied)

    async def schema_version(self) -> int:
        return int(
            await self._run(lambda c: c.fetchval("SELECT MAX(version) FROM clawgate_schema"))
        )

    async def _run(
        self,
        fn: Callable[[Connection], Awaitable[T]],
        *,
        write: bool = False,
        transaction: bool | None = None,
        answer_within: float | None = None,
        on: Connection | None = None,
        lock_wait_ms: int | None = None,
    ) -> T:
        """`fn` on a pooled connection. With `write` it is timed for `on_commit` and runs in
        one transaction, all or nothing, unless `transaction=False` (one statement is its own
        transaction). `transaction=True` alone: a read that needs one (a cursor).
        `answer_within`: how long it may wait for the server (default: the statement timeout).
        `on`: a connection the caller holds (a turn lock's), used instead of the pool's.
        `lock_wait_ms`: the transaction's `lock_timeout` (`_write_waiting`)."""
        pool = self._pool
        if pool is None:
            raise StoreError("session store is not open")
        in_transaction = write if transaction is None else transaction
        try:
            conn = await _acquire(pool) if on is None else on
            try:
                started = time.perf_counter()
                with _answered_within(conn, answer_within or self._statement_timeout):
                    if in_transaction:
                        async with _transaction(conn, lock_wait_ms):
                            result = await fn(conn)
                    else:
                        result = await fn(conn)
            finally:
                if on is None:
                    await pool.release(conn)
        except StoreUnavailable as exc:
            self._unreachable(exc)
            raise
        except StoreError:
            raise
        except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
            error = _store_error(exc)
            if isinstance(error, StoreUnavailable):
                self._unreachable(error)
            raise error from exc
        if self._down_since is not None:
            self._reachable()
        if write and self.on_commit is not None:
            self._on_commit_failed = tell_commit(
                self.on_commit,
                time.perf_counter() - started,
                backend="postgres",
                logged=self._on_commit_failed,
            )
        return result

    async def _write_waiting(self, fn: Callable[[Connection], Awaitable[T]], rows: str) -> T:
        """`fn` as a write of one transaction that may wait for a maintenance pass holding
        `rows` (a session's row, its archived transcripts) until the pass commits, however
        long: a wait past the statement timeout would close the connection as if the
        database had stopped answering, a false store_unavailable while it is only busy. Its
        lock waits end at the server first (`LOCK_WAIT_SHARE`, set in the BEGIN's round trip:
        nothing more for a write that waits not), and the write is made again, on what the
        pass left, until the pass's own statement limit; then the database is taken for
        unavailable."""
        wait_ms = max(1, int(self._statement_timeout * 1000 * LOCK_WAIT_SHARE))
        give_up = time.monotonic() + MAINTENANCE_TIMEOUT_S
        while True:
            try:
                return await self._run(fn, write=True, transaction=True, lock_wait_ms=wait_ms)
            except StoreError as exc:
                if not isinstance(exc.__cause__, asyncpg.LockNotAvailableError):
                    raise
                if time.monotonic() > give_up:
                    raise StoreUnavailable(f"{rows} held for {MAINTENANCE_TIMEOUT_S:g} s") from exc

    async def _scan(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """A read that scans a table, on one of the SCAN_CONNECTIONS."""
        async with self._scans:
            return await self._run(fn)

    def _unreachable(self, error: StoreError) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("store_unavailable", backend="postgres", reason=error.detail)

    def _reachable(self) -> None:
        if self._down_since is not None:
            seconds = round(time.monotonic() - self._down_since, 1)
            self._down_since = None
            log.info("store_available", backend="postgres", down_seconds=seconds)

    def _pool_log(self, record: logging.LogRecord) -> bool:
        """asyncpg's pool, failing to connect again the connection it keeps open, logs a
        traceback at each try (1 s, 2 s, 4 s … 60 s apart) for as long as the database is
        away: that is the store's outage, logged once (`_unreachable`) instead."""
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not str(record.msg).startswith(_POOL_FLOOR_FAILED):
            return True
        self._unreachable(_store_error(exc))
        return False

    @contextlib.asynccontextmanager
    async def turn_lock(
        self, key: str, *, while_waiting: Waiting | None = None
    ) -> AsyncIterator[None]:
        locks = self._locks
        if locks is None:
            raise StoreError("session store is not open")
        key = _storable(key)
        # Only so many wait in `while_waiting`: each holds a lock connection, and the pool
        # must keep one for every turn that runs.
        if while_waiting is not None and self._lock_waiters >= self._max_lock_waiters:
            while_waiting = None
        conn = await self._lock(locks, key, while_waiting)
        self._held[key] = conn
        try:
            try:
                yield
            finally:
                if self._held.get(key) is conn:
                    del self._held[key]
        except asyncio.CancelledError:
            # Cancelled (a shutdown's last resort): no statement more, which a database that
            # stopped answering would hold for the statement timeout; closing the connection
            # lets the lock go.
            _terminate(conn)
            await self._give_back(locks, conn)
            raise
        except BaseException:
            await self._unlock(locks, conn, key)
            raise
        await self._unlock(locks, conn, key)

    async def _unlock(self, locks: asyncpg.Pool, conn: Connection, key: str) -> None:
        """Give the turn lock back; a lock that cannot be is let go with its connection."""
        try:
            with _answered_within(conn, self._statement_timeout):
                await conn.execute(
                    "SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS_TURN, key
                )
        except BaseException as exc:
            # The turn is over (committed or not); a lock we cannot give back is let go
            # by closing its connection, and that is no failure of the turn.
            _terminate(conn)
            if not isinstance(exc, (StoreUnavailable, asyncpg.PostgresError, *_UNAVAILABLE)):
                await self._give_back(locks, conn)
                raise
        await self._give_back(locks, conn)

    @staticmethod
    async def _give_back(locks: asyncpg.Pool, conn: Connection) -> None:
        try:
            await locks.release(conn)
        except (asyncpg.PostgresError, *_UNAVAILABLE):
            # Its reset failed (the server went away after the unlock): asyncpg closed the
            # connection, and the turn, over by now, must not fail for it.
            pass

    async def turn_running_elsewhere(self, key: str) -> bool:
        if self.bus.remote_runs.running(key):
            return True  # announced on the bus: also the runs that hold no lock
        key = _storable(key)
        # pg_locks shows an advisory lock's two keys as classid and objid (an oid: the
        # int4 hash read as unsigned).
        # A lock a maintenance pass holds while it deletes the session is no turn: the pass
        # holds `_PRUNE_MARK` too (an abort would ask every other process, for nothing). A
        # turn waiting for the lock is one (it may hold no queued mark: its run slot was free),
        # whoever holds it: else, once the pass committed, it ran in a new session of the key.
        found = await self._run(
            lambda c: c.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'"
                " AND l.objsubid = 2 AND l.classid = $1::bigint::oid"
                " AND l.objid = (hashtext($2)::bigint & 4294967295)::oid"
                " AND (NOT l.granted OR NOT EXISTS (SELECT 1 FROM pg_locks p WHERE p.pid = l.pid"
                " AND p.locktype = 'advisory' AND p.granted AND p.objsubid = 2"
                " AND p.classid = $3::bigint::oid AND p.objid = $4::bigint::oid)))",
                LOCK_CLASS_TURN, key, LOCK_CLASS, _PRUNE_MARK,
            )
        )  # fmt: skip
        return bool(found)

    async def _lock(
        self, locks: asyncpg.Pool, key: str, while_waiting: Waiting | None
    ) -> Connection:
        """A lock connection holding `key`'s turn lock; a turn of another process that holds
        it is waited for inside `while_waiting`, as is a maintenance pass deleting the session
        (it holds the lock until its commit: `prune`). A pooled connection that the server
        dropped (a restart) is only found out on use: then once more, on a new one."""
        for attempt in (1, 2):
            try:
                conn = await _acquire(locks)
            except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
                raise _store_error(exc) from exc
            try:
                # Tried first, within the statement timeout: a pooled connection the network
                # swallowed is found out here, not in a wait for another turn that has no end.
                with _answered_within(conn, self._statement_timeout):
                    taken = await conn.fetchval(SQL_TRY_LOCK, LOCK_CLASS_TURN, key)
                if taken:
                    return conn
                if while_waiting is None:
                    await conn.execute(SQL_LOCK, LOCK_CLASS_TURN, key)
                    return conn
                self._lock_waiters += 1
                try:
                    async with while_waiting():
                        await conn.execute(SQL_LOCK, LOCK_CLASS_TURN, key)
                finally:
                    self._lock_waiters -= 1
                return conn
            except BaseException as exc:
                # Cancelled or failed while waiting: the lock may have been granted all the
                # same, and closing the connection is the one sure way to let it go.
                _terminate(conn)
                await locks.release(conn)
                if not isinstance(exc, (asyncpg.PostgresError, *_UNAVAILABLE)):
                    raise
                if attempt == 2 or not isinstance(exc, _UNAVAILABLE):
                    raise _store_error(exc) from exc
        raise AssertionError("unreachable")

    # -- sessions ----------------------------------------------------------------------

    async def get(self, key: str) -> SessionRow | None:
        row = await self._run(lambda c: c.fetchrow(SQL_GET_SESSION, _storable(key)))
        return _session_row(tuple(row)) if row is not None else None

    async def create(
        self, key: str, agent_id: str, now: int, *, label: str | None = None,
        stateless: bool = False,
    ) -> tuple[SessionRow, bool]:  # fmt: skip
        return await self._run(
            lambda c: self._create(c, key, agent_id, now, label, stateless),
            write=True, transaction=False,
        )  # fmt: skip

    async def get_or_create(
        self, key: str, agent_id: str, now: int, *, stateless: bool = False
    ) -> tuple[SessionRow, bool]:
        row = await self.get(key)
        if row is not None:
            return row, False
        return await self.create(key, agent_id, now, stateless=stateless)

    async def is_stateless(self, key: str) -> bool | None:
        found = await self._run(
            lambda c: c.fetchval("SELECT stateless FROM sessions WHERE key = $1", _storable(key))
        )
        return None if found is None else bool(found)

    @staticmethod
    async def _create(
        conn: Connection, key: str, agent_id: str, now: int, label: str | None,
        stateless: bool = False, *, lock: bool = False,
    ) -> tuple[SessionRow, bool]:  # fmt: skip
        """The row of `key`, created if missing. `lock`: the row locked to the end of the
        transaction, for the caller to change (taken before any transcript row, in the order
        `delete` and `prune` take them: a reset racing them cannot deadlock)."""
        key = _storable(key)
        while True:
            # One statement: the row and its transcript, or nothing when another process
            # has the key (created at the same moment: its row wins).
            row = await conn.fetchrow(SQL_CREATE, *_args((key, agent_id, uuid7(), label,
                                                          now, stateless)))  # fmt: skip
            if row is not None:
                return _session_row(tuple(row)), True
            existing = await conn.fetchrow(SQL_GET_SESSION + (" FOR UPDATE" if lock else ""), key)
            if existing is not None:
                return _session_row(tuple(existing)), False
            # Deleted by another process since the insert found it: create it after all.

    @staticmethod
    def unsaved_row(key: str, agent_id: str, now: int) -> SessionRow:
        # append_turn's statement upserts the session and its transcript.
        return SessionRow(key, agent_id, uuid7(), None, now, now)

    async def append_turn(self, turn: TurnRecord) -> SessionRow:
        """The turn written; under its turn lock (`turn_lock`), on the connection that holds
        the lock: a lock lost with its connection (a restart, a network cut the server found)
        may be another turn's or a pass's by now, and the turn must not write beside them. The
        write then fails, as one on the query pool fails when the database is away; a write
        that succeeds was made by the lock's holder. It costs nothing: a statement on one
        connection instead of another."""
        key = _storable(turn.key)
        held = self._held.get(key)
        # One statement is its own transaction: no BEGIN and COMMIT round trips.
        try:
            return await self._run(
                lambda c: self._append_turn(c, turn), write=True, transaction=False, on=held
            )
        except StoreUnavailable as exc:
            if held is None:
                raise
            raise StoreUnavailable(
                f"the turn lock of {key} was lost with its connection: {exc}"
            ) from exc

    @staticmethod
    async def _append_turn(conn: Connection, turn: TurnRecord) -> SessionRow:
        rows = json.dumps([_args(row) for row in turn_messages(turn)], ensure_ascii=False)
        for attempt in range(1, APPEND_TURN_TRIES + 1):
            try:
                row = await conn.fetchrow(
                    SQL_APPEND_TURN,
                    *_args((turn.session_id, turn.key, turn.agent_id, turn.user_timestamp)),
                    rows,
                    *_args((
                        turn.assistant_timestamp, turn.input_tokens, turn.output_tokens,
                        turn.provider, turn.model, turn.run_id, turn.status, turn.aborted,
                        turn.stateless,
                    )),
                )  # fmt: skip
            except asyncpg.UniqueViolationError as exc:
                # The statement is its own transaction: it left nothing, and runs again.
                if exc.constraint_name != SEQ_CONSTRAINT or attempt == APPEND_TURN_TRIES:
                    raise
                continue
            return _session_row(tuple(row))
        raise AssertionError("unreachable")

    async def list(
        self, *, limit: int = 100, agent_id: str | None = None, search: str | None = None,
        label: str | None = None, active_minutes: float | None = None, now: int | None = None,
        archived: bool | None = None,
    ) -> SessionPage:  # fmt: skip
        where: builtins.list[str] = []
        args: builtins.list[Any] = []

        def arg(value: Any) -> str:
            args.append(_storable(value))
            return f"${len(args)}"

        if agent_id is not None:
            where.append(f"agent_id = {arg(agent_id.lower())}")
        if search:
            # strpos() rather than LIKE: no wildcard escaping of client text.
            needle = arg(search.lower())
            where.append(
                f"(strpos(key, {needle}) > 0"
                f" OR strpos(lower(COALESCE(label, ''){self._label_collate}), {needle}) > 0)"
            )
        if label is not None:
            where.append(f"label = {arg(label)}")
        if active_minutes is not None:
            if now is None:
                raise ValueError("active_minutes needs now")
            where.append(f"updated_at >= {arg(active_since(now, active_minutes))}")
        if archived is not None:
            where.append(f"archived_at IS {'NOT ' if archived else ''}NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        limit_arg = arg(max(0, limit))

        # The total and the page in one statement, so from one snapshot: counted and paged
        # apart, sessions created or deleted in between made them disagree. The count is the
        # left side: a page of no rows is still one row, with the total.
        # OpenClaw's order: the pinned first (the last pinned first), then the others by
        # their last update; each part limited in its own order (as SQLite's).
        pinned = " AND ".join([*where, "pinned_at IS NOT NULL"])
        others = " AND ".join([*where, "pinned_at IS NULL"])
        sql = (
            f"SELECT c.total, p.* FROM (SELECT COUNT(*) AS total FROM sessions{clause}) AS c"
            f" LEFT JOIN LATERAL (SELECT * FROM ("
            f"(SELECT {_SESSION_COLUMNS} FROM sessions WHERE {pinned}"
            f" ORDER BY pinned_at DESC, key LIMIT {limit_arg})"
            f" UNION ALL (SELECT {_SESSION_COLUMNS} FROM sessions WHERE {others}"
            f" ORDER BY updated_at DESC, key LIMIT {limit_arg})) AS u"
            f" ORDER BY pinned_at DESC NULLS LAST, updated_at DESC, key LIMIT {limit_arg}"
            ") AS p ON TRUE"
            " ORDER BY p.pinned_at DESC NULLS LAST, p.updated_at DESC, p.key"
        )

        async def page(conn: Connection) -> SessionPage:
            found = await conn.fetch(sql, *args)
            rows = tuple(_session_row(tuple(r)[1:]) for r in found if r["key"] is not None)
            return SessionPage(rows, int(found[0]["total"]))

        return await self._scan(page)

    async def count(self) -> int:
        return int(await self._scan(lambda c: c.fetchval("SELECT COUNT(*) FROM sessions")))

    async def usage_by_day(
        self, since: int, agent_id: str | None = None
    ) -> builtins.list[DailyUsage]:
        """As the SQLite store's: the assistant messages' tokens since `since` (Unix ms), by
        agent and UTC day, oldest day first."""
        where = "m.role = 'assistant' AND m.usage IS NOT NULL AND m.timestamp >= $1"
        args: builtins.list[Any] = [since]
        if agent_id is not None:
            where += " AND t.agent_id = $2"
            args.append(_storable(agent_id.lower()))
        rows = await self._scan(
            lambda c: c.fetch(
                "SELECT to_char(to_timestamp(m.timestamp / 1000) AT TIME ZONE 'UTC',"
                " 'YYYY-MM-DD') AS day, t.agent_id,"
                " COALESCE(SUM((m.usage::jsonb ->> 'input')::bigint), 0),"
                " COALESCE(SUM((m.usage::jsonb ->> 'output')::bigint), 0), COUNT(*)"
                " FROM messages m JOIN transcripts t ON t.session_id = m.session_id"
                f" WHERE {where} GROUP BY day, t.agent_id ORDER BY day, t.agent_id",
                *args,
            )
        )
        return [
            DailyUsage(day, agent, int(inp), int(out), int(n)) for day, agent, inp, out, n in rows
        ]

    async def usage_by_session(
        self,
        start: int,
        end: int,
        offset_ms: int,
        *,
        shifts: Sequence[tuple[int, int]] = (),
        agent_id: str | None = None,
        key: str | None = None,
    ) -> builtins.list[SessionUsage]:
        """As the SQLite store's: the window's messages by transcript, day and model."""
        where = "m.timestamp >= $2 AND m.timestamp <= $3"
        args: builtins.list[Any] = [int(offset_ms), start, end]
        if agent_id is not None:
            args.append(_storable(agent_id.lower()))
            where += f" AND t.agent_id = ${len(args)}"
        if key is not None:
            args.append(_storable(key))
            where += f" AND t.key = ${len(args)}"
        columns = SESSION_USAGE_COLUMNS.format(
            offset=usage_offset("$1::bigint", shifts),
            # numeric sums: a sum beyond 64 bits is a number, not an error.
            inp="SUM((m.usage::jsonb ->> 'input')::numeric)",
            out="SUM((m.usage::jsonb ->> 'output')::numeric)",
            int="::int",
            true="",
        )
        rows = await self._scan(
            lambda c: c.fetch(
                SESSION_USAGE_LABELLED.format(
                    rows=f"SELECT {columns} FROM messages m JOIN transcripts t"
                    f" ON t.session_id = m.session_id WHERE {where}{SESSION_USAGE_GROUP}"
                ),
                *args,
            )
        )
        return [_session_usage(tuple(row)) for row in rows]

    async def usage_points(self, session_id: str, limit: int) -> builtins.list[UsagePoint]:
        """As the SQLite store's: a transcript's newest assistant messages' tokens."""
        rows = await self._scan(lambda c: c.fetch(SQL_USAGE_POINTS, session_id, limit))
        return [_usage_point(tuple(row)) for row in reversed(rows)]

    async def patch_label(
        self, key: str, agent_id: str, label: str | None, now: int, *, session_id: str | None = None
    ) -> SessionRow:
        """As the SQLite store's: `session_id` checked on the row locked for the update."""
        return await self._write_waiting(
            lambda c: self._patch_label(c, key, agent_id, label, now, session_id),
            f"the row of session {key}",
        )

    async def _patch_label(
        self,
        conn: Connection,
        key: str,
        agent_id: str,
        label: str | None,
        now: int,
        session_id: str | None,
    ) -> SessionRow:
        if session_id is not None:
            await _still_session(conn, key, session_id)
        row, created = await self._create(conn, key, agent_id, now, label, lock=True)
        if created:
            return row
        updated = await conn.fetchrow(
            "UPDATE sessions SET label = $1, updated_at = $2, stateless = FALSE"
            f" WHERE key = $3 RETURNING {_SESSION_COLUMNS}",
            *_args((label, now, key)),
        )
        return _session_row(tuple(updated))

    async def set_archived(
        self, key: str, archived: bool, now: int, *, session_id: str | None = None
    ) -> SessionRow | None:
        """As the SQLite store's: archive (the first `archived_at` kept) or restore; with
        `session_id`, only that session (checked on the row locked for the update)."""
        if session_id is None:  # one statement: its own transaction
            return await self._run(
                lambda c: _set_archived(c, key, archived, now, None),
                write=True,
                transaction=False,
            )
        return await self._write_waiting(
            lambda c: _set_archived(c, key, archived, now, session_id),
            f"the row of session {key}",
        )

    async def set_pinned(
        self, key: str, agent_id: str, pinned: bool, now: int, *, session_id: str | None = None
    ) -> SessionRow:
        """As the SQLite store's: the archive and `session_id` checked on the row locked for
        the update."""
        return await self._write_waiting(
            lambda c: self._set_pinned(c, key, agent_id, pinned, now, session_id),
            f"the row of session {key}",
        )

    async def _set_pinned(
        self,
        conn: Connection,
        key: str,
        agent_id: str,
        pinned: bool,
        now: int,
        session_id: str | None,
    ) -> SessionRow:
        if session_id is not None:
            await _still_session(conn, key, session_id)
        row, _ = await self._create(conn, key, agent_id, now, None, lock=True)
        if pinned and row.archived_at is not None:
            raise SessionArchivedPin(key)
        updated = await conn.fetchrow(
            "UPDATE sessions SET pinned_at = CASE WHEN $1 THEN COALESCE(pinned_at, $2) END"
            f" WHERE key = $3 RETURNING {_SESSION_COLUMNS}",
            *_args((pinned, now, key)),
        )
        return _session_row(tuple(updated))

    async def patch(
        self,
        key: str,
        agent_id: str,
        now: int,
        *,
        label: tuple[str | None] | None = None,
        archived: bool | None = None,
        pinned: bool | None = None,
        session_id: str | None = None,
    ) -> SessionRow | None:
        """As the SQLite store's: the changes given in one transaction, all or nothing."""

        async def patch(conn: Connection) -> SessionRow | None:
            row = None
            if label is not None:
                row = await self._patch_label(conn, key, agent_id, label[0], now, session_id)
            if archived is not None:
                row = await _set_archived(conn, key, archived, now, session_id)
                if row is None:
                    return None
            if pinned is not None:
                row = await self._set_pinned(conn, key, agent_id, pinned, now, session_id)
            return row

        return await self._write_waiting(patch, f"the row of session {key}")

    async def reset(self, key: str, agent_id: str, now: int) -> SessionRow:
        key = _storable(key)

        async def reset(conn: Connection) -> SessionRow:
            row, created = await self._create(conn, key, agent_id, now, None, lock=True)
            if created:
                return row
            await conn.execute(
                "UPDATE transcripts SET archived_at = $1"
                " WHERE session_id = $2 AND archived_at IS NULL",
                now, row.session_id,
            )  # fmt: skip
            sid = uuid7()
            await conn.execute(SQL_ADD_TRANSCRIPT, sid, key, row.agent_id, now)
            updated = await conn.fetchrow(
                "UPDATE sessions SET session_id = $1, updated_at = $2, input_tokens = 0,"
                " output_tokens = 0, total_tokens = 0, last_run_id = NULL, last_status = NULL,"
                f" aborted_last_run = FALSE WHERE key = $3 RETURNING {_SESSION_COLUMNS}",
                sid, now, key,
            )  # fmt: skip
            return _session_row(tuple(updated))

        return await self._write_waiting(reset, f"the row of session {key}")

    async def delete(self, key: str, now: int, *, delete_transcript: bool = True) -> bool:
        key = _storable(key)

        async def delete(conn: Connection) -> bool:
            status = await conn.execute("DELETE FROM sessions WHERE key = $1", key)
            if delete_transcript:
                await conn.execute("DELETE FROM transcripts WHERE key = $1", key)
            else:
                await conn.execute(
                    "UPDATE transcripts SET archived_at = $1"
                    " WHERE key = $2 AND archived_at IS NULL",
                    now, key,
                )  # fmt: skip
            return bool(status != "DELETE 0")

        return await self._write_waiting(delete, f"the rows of session {key}")

    # -- transcripts -------------------------------------------------------------------

    async def history(
        self,
        session_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        max_chars: int = 0,
    ) -> History:
        def with_total(columns: str, before: str) -> str:
            # The count and the newest rows in one statement, so from one snapshot (apart, a
            # turn stored in between made them disagree); no rows is still one row, the count.
            return (
                "SELECT c.total, p.* FROM (SELECT COUNT(*) AS total FROM messages"
                f" WHERE session_id = $1) AS c LEFT JOIN LATERAL (SELECT {columns} FROM messages"
                f" WHERE session_id = $1{before} ORDER BY seq DESC LIMIT $2) AS p ON TRUE"
                " ORDER BY p.seq DESC"
            )

        async def history(conn: Connection) -> History:
            before = "" if before_seq is None else " AND seq < $3"
            args: tuple[Any, ...] = () if before_seq is None else (before_seq,)
            if max_chars <= 0:
                found = await conn.fetch(
                    with_total(_MESSAGE_COLUMNS, before), session_id, max(0, limit), *args
                )
                total = int(found[0]["total"])
                rows = [tuple(r)[1:] for r in reversed(found) if r["seq"] is not None]
                return History(tuple(_message(r) for r in rows), total)
            found = await conn.fetch(
                with_total("seq, length(content) AS size", before),
                session_id, max(0, limit), *args,
            )  # fmt: skip
            total = int(found[0]["total"])
            sizes = [(r["seq"], r["size"]) for r in found if r["seq"] is not None]
            span = history_span(sizes, max_chars)
            if span is None:
                return History((), int(total))
            rows = await conn.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1"
                " AND seq BETWEEN $2 AND $3 ORDER BY seq",
                session_id, *span,
            )  # fmt: skip
            return History(tuple(_message(tuple(r)) for r in rows), int(total))

        return await self._run(history)

    async def recent_turns(self, session_id: str, user_turns: int) -> tuple[StoredMessage, ...]:
        if user_turns <= 0:
            return ()
        return await self._run(lambda c: self._recent_turns(c, session_id, user_turns))

    @staticmethod
    async def _recent_turns(
        conn: Connection, session_id: str, user_turns: int
    ) -> tuple[StoredMessage, ...]:
        rows = await conn.fetch(SQL_RECENT_TURNS, session_id, user_turns - 1)
        return tuple(_message(tuple(r)) for r in rows)

    async def messages_after(self, session_id: str, seq: int) -> tuple[StoredMessage, ...]:
        async def after(conn: Connection) -> tuple[StoredMessage, ...]:
            rows = await conn.fetch(SQL_MESSAGES_AFTER, session_id, seq)
            return tuple(_message(tuple(r)) for r in rows)

        return await self._run(after)

    async def chain_to(self, session_id: str, run_id: str, user_turns: int = 0) -> TurnChain | None:
        async def chain(conn: Connection) -> TurnChain | None:
            end, last = await conn.fetchrow(SQL_TURN_END, session_id, _storable(run_id))
            if end is None:
                return None
            skip = user_turns - 1 if user_turns > 0 else _ALL_TURNS
            rows = await conn.fetch(SQL_CHAIN_TO, session_id, end, skip)
            return TurnChain(tuple(_message(tuple(r)) for r in rows), followed=last != end)

        return await self._run(chain)

    async def chain_bounds(self, session_id: str, run_id: str) -> tuple[int, int] | None:
        """As the SQLite store's."""
        row = await self._run(lambda c: c.fetchrow(SQL_CHAIN_BOUNDS, session_id, _storable(run_id)))
        return None if row is None or row[1] is None else (int(row[0]), int(row[1]))

    async def messages_in(
        self, session_id: str, low: int, high: int, descending: bool, limit: int
    ) -> tuple[StoredMessage, ...]:
        """As the SQLite store's."""
        sql = SQL_MESSAGES_IN_DESC if descending else SQL_MESSAGES_IN
        rows = await self._run(lambda c: c.fetch(sql, session_id, low, high, limit))
        return tuple(_message(tuple(r)) for r in rows)

    async def turn_reply(self, session_id: str, low: int, high: int) -> StoredMessage | None:
        """As the SQLite store's."""
        row = await self._run(lambda c: c.fetchrow(SQL_TURN_REPLY, session_id, low, high))
        return _message(tuple(row)) if row is not None else None

    async def next_assistant(self, session_id: str, low: int, high: int) -> StoredMessage | None:
        """As the SQLite store's."""
        row = await self._run(lambda c: c.fetchrow(SQL_NEXT_ASSISTANT, session_id, low, high))
        return _message(tuple(row)) if row is not None else None

    async def last_assistant_in(self, session_id: str, low: int, high: int) -> int | None:
        """As the SQLite store's."""
        seq = await self._run(lambda c: c.fetchval(SQL_LAST_ASSISTANT_IN, session_id, low, high))
        return int(seq) if seq is not None else None

    async def first_difference(
        self, session_id: str, low: int, high: int, shift: int
    ) -> int | None:
        """As the SQLite store's."""
        seq = await self._run(
            lambda c: c.fetchval(SQL_FIRST_DIFFERENCE, session_id, low, high, shift)
        )
        return int(seq) if seq is not None else None

    async def refused_run_end(self, session_id: str, low: int, high: int) -> int | None:
        """As the SQLite store's."""
        seq = await self._run(lambda c: c.fetchval(SQL_REFUSED_RUN_END, session_id, low, high))
        return int(seq) if seq is not None else None

    async def last_answer(self, session_id: str, low: int, high: int) -> int | None:
        """As the SQLite store's."""
        seq = await self._run(lambda c: c.fetchval(SQL_LAST_ANSWER, session_id, low, high))
        return int(seq) if seq is not None else None

    async def message_seq(self, session_id: str, message_id: str) -> int | None:
        """As the SQLite store's."""
        seq = await self._run(
            lambda c: c.fetchval(SQL_MESSAGE_SEQ, _storable(message_id), session_id)
        )
        return int(seq) if seq is not None else None

    async def messages_by_id(self, message_ids: Sequence[str]) -> tuple[StoredMessage, ...]:
        """As the SQLite store's, in one statement."""
        ids = [_storable(message_id) for message_id in message_ids]
        rows = await self._run(lambda c: c.fetch(SQL_MESSAGES_BY_ID, ids))
        return tuple(_message(tuple(r)) for r in rows)

    async def replay(
        self, session_id: str, user_turns: int
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage | None]:
        async def replay(
            conn: Connection,
        ) -> tuple[tuple[StoredMessage, ...], StoredMessage | None]:
            recent = (
                await self._recent_turns(conn, session_id, user_turns) if user_turns > 0 else ()
            )
            last = last_replayed_assistant(recent)
            if last is None:
                row = await conn.fetchrow(SQL_LAST_ASSISTANT, session_id)
                last = _message(tuple(row)) if row is not None else None
            return recent, last

        return await self._run(replay)

    # -- responses (/v1/responses) -----------------------------------------------------

    async def put_response(self, response: StoredResponse) -> None:
        """Keep a response object (replacing one of the same id). A transcript deleted
        meanwhile fails the foreign key: StoreError."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO responses"
                " (id, session_id, key, agent_id, created_at, body, output_ids)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET"
                " session_id = excluded.session_id, key = excluded.key,"
                " agent_id = excluded.agent_id, created_at = excluded.created_at,"
                " body = excluded.body, output_ids = excluded.output_ids",
                *_args((response.id, response.session_id, response.key, response.agent_id,
                        response.created_at, response.body,
                        _dumps_ids(response.output_ids))),
            ),
            write=True, transaction=False,
        )  # fmt: skip

    async def get_response(self, response_id: str) -> StoredResponse | None:
        row = await self._run(
            lambda c: c.fetchrow(
                "SELECT id, session_id, key, agent_id, created_at, body FROM responses"
                " WHERE id = $1",
                _storable(response_id),
            )
        )
        return StoredResponse(*row) if row is not None else None

    async def response_place(self, response_id: str) -> ResponsePlace | None:
        """As the SQLite store's."""
        row = await self._run(
            lambda c: c.fetchrow(
                "SELECT session_id, key, agent_id FROM responses WHERE id = $1",
                _storable(response_id),
            )
        )
        return ResponsePlace(*row) if row is not None else None

    async def response_output_ids(self, response_id: str) -> ResponseOutputIds | None:
        """As the SQLite store's."""
        row = await self._run(
            lambda c: c.fetchrow(SQL_RESPONSE_OUTPUT_IDS.replace("?", "$1"), _storable(response_id))
        )
        return response_output_ids(*row) if row is not None else None

    async def delete_response(self, response_id: str) -> bool:
        """Forget a response object (its turn stays in the transcript); False if unknown."""
        status = await self._run(
            lambda c: c.execute("DELETE FROM responses WHERE id = $1", _storable(response_id)),
            write=True, transaction=False,
        )  # fmt: skip
        return bool(status != "DELETE 0")

    # -- webhook calls -----------------------------------------------------------------

    async def claim_hook_call(
        self, scope: str, run_id: str, session_key: str, ttl_ms: int, *, starting: bool = False
    ) -> tuple[str, str]:
        """(run id, session key) of the call of `scope` that came first and is still kept:
        this one's when it is the first (it is then kept for `ttl_ms`). A webhook's claim is
        a call's claim whose end nothing reads."""
        holder, session_key, _ = await self.claim_call(
            scope, run_id, session_key, ttl_ms, starting=starting
        )
        return holder, session_key

    async def claim_call(
        self,
        scope: str,
        token: str,
        session_key: str,
        ttl_ms: int,
        answer: str | None = None,
        *,
        starting: bool = False,
    ) -> tuple[str, str, bool]:
        """(token, session key, ended) of the claim of `scope` that came first and is still
        kept: this one's, not ended, when it is the first (then kept for `ttl_ms`, with
        `answer`; `starting`: said not started until its first renewal). Another's claim
        found starting is waited for: until it has started (or ended), or is gone (released,
        its lease out), when this one is made."""

        async def claim(conn: Connection) -> tuple[str, str, bool, bool]:
            await conn.execute(SQL_FORGET_EXPIRED_CALLS)
            # A claim found taken may be released (or expire) before it is read: then this
            # one is made again, never taken as made with no row behind it.
            while True:
                row = await conn.fetchrow(
                    "INSERT INTO hook_calls"
                    " (scope, run_id, session_key, expires_at, answer, started)"
                    f" VALUES ($1, $2, $3, {SQL_NOW_MS} + $4, $5, $6)"
                    " ON CONFLICT (scope) DO NOTHING RETURNING run_id, session_key, ended, started",
                    scope, token, _storable(session_key), ttl_ms, answer, not starting,
                )  # fmt: skip
                if row is None:
                    row = await conn.fetchrow(
                        "SELECT run_id, session_key, ended, started FROM hook_calls"
                        " WHERE scope = $1",
                        scope,
                    )
                if row is not None:
                    break
            # A share of the session's row until the claim commits: a maintenance pass that
            # holds the row to delete it is waited for (the claimant then reads no session),
            # and one that comes after reads the claim (`prune`).
            await conn.execute(
                "SELECT 1 FROM sessions WHERE key = $1 FOR KEY SHARE", _storable(session_key)
            )
            return row[0], row[1], row[2], row[3]

        # A pass holding the session's row is waited for (`_write_waiting`). Another's claim
        # found starting is looked at again until it has started or ended, or is gone.
        while True:
            holder, key, ended, started = await self._write_waiting(
                claim, f"the row of session {session_key}"
            )
            if started or ended or holder == token:
                return holder, key, ended
            await asyncio.sleep(CLAIM_START_POLL_S)

    async def end_call(
        self, scope: str, token: str, keep_ms: int, answer: str | None = None
    ) -> bool:
        """The run of the claim of `scope` by `token` has ended: kept, so, for `keep_ms`,
        with `answer` (`call_answer`). False: there is no such claim (any more)."""
        status = await self._run(
            lambda c: c.execute(
                f"UPDATE hook_calls SET ended = TRUE, expires_at = {SQL_NOW_MS} + $3,"
                " answer = $4 WHERE scope = $1 AND run_id = $2",
                scope, token, keep_ms, answer,
            ),
            write=True, transaction=False,
        )  # fmt: skip
        return str(status) != "UPDATE 0"

    async def call_answer(self, scope: str) -> str | None:
        """The answer the claim of `scope` was ended with; None: none, or no claim."""
        found = await self._run(
            lambda c: c.fetchval("SELECT answer FROM hook_calls WHERE scope = $1", scope)
        )
        return str(found) if found is not None else None

    async def call_going_on(self, scope: str) -> str | None:
        """The session key of the claim of `scope` while its run has not ended (and its lease
        is not out); None: none, or ended."""
        found = await self._run(
            lambda c: c.fetchval(
                "SELECT session_key FROM hook_calls WHERE scope = $1 AND NOT ended"
                f" AND expires_at > {SQL_NOW_MS}",
                scope,
            )
        )
        return str(found) if found is not None else None

    async def claimed_run_going_on(self, session_key: str) -> bool:
        """Whether a claim of the session (a webhook's or a WebSocket call's, or the mark of
        a turn waiting for a run slot) says its run has not ended, and its lease is not out."""
        found = await self._run(
            lambda c: c.fetchval(
                "SELECT EXISTS (SELECT 1 FROM hook_calls WHERE session_key = $1 AND NOT ended"
                f" AND expires_at > {SQL_NOW_MS})",
                _storable(session_key),
            )
        )
        return bool(found)

    async def extend_hook_call(self, scope: str, run_id: str, keep_ms: int) -> bool:
        """Keep the claim of `scope` by `run_id` for `keep_ms` from now, and say its run
        started (a claim made `starting` is waited for until then). An ended claim
        (`end_call`) keeps its own time: a renewal sent as the run ended is late. False:
        there is no such claim going on (released, ended, or forgotten once its lease ran
        out)."""
        status = await self._run(
            lambda c: c.execute(
                f"UPDATE hook_calls SET expires_at = {SQL_NOW_MS} + $3, started = TRUE"
                " WHERE scope = $1 AND run_id = $2 AND NOT ended",
                scope, run_id, keep_ms,
            ),
            write=True, transaction=False,
        )  # fmt: skip
        return str(status) != "UPDATE 0"

    async def extend_hook_calls(
        self, claims: Sequence[tuple[str, str]], keep_ms: int
    ) -> builtins.list[str]:
        """`extend_hook_call` of every (scope, run id) of `claims`, in one statement; the
        scopes of those kept."""
        if not claims:
            return []
        kept = await self._run(
            lambda c: c.fetch(
                f"UPDATE hook_calls h SET expires_at = {SQL_NOW_MS} + $3, started = TRUE"
                " FROM unnest($1::text[], $2::text[]) AS c(scope, run_id)"
                " WHERE h.scope = c.scope AND h.run_id = c.run_id AND NOT h.ended"
                " RETURNING h.scope",
                [scope for scope, _ in claims], [run_id for _, run_id in claims], keep_ms,
            ),
            write=True, transaction=False,
        )  # fmt: skip
        return [record[0] for record in kept]

    async def release_hook_call(self, scope: str, run_id: str) -> None:
        """Forget the claim of `scope` by `run_id` (its run could not start)."""
        await self._run(
            lambda c: c.execute(
                "DELETE FROM hook_calls WHERE scope = $1 AND run_id = $2", scope, run_id
            ),
            write=True, transaction=False,
        )  # fmt: skip

    # -- maintenance -------------------------------------------------------------------

    async def used_bytes(self) -> int:
        """The estimated bytes of the live rows: message text and stored responses' bodies
        plus a fixed part per row and per session, the same estimate `prune` frees by (one
        scan of the messages and of the responses)."""
        return int(await self._run(self._used_bytes))

    @staticmethod
    async def _used_bytes(conn: Connection) -> int:
        return int(await conn.fetchval(
            "SELECT (SELECT COALESCE(SUM(octet_length(content)"
            " + COALESCE(octet_length(meta), 0)), 0) + COUNT(*) * $1 FROM messages)"
            " + (SELECT COALESCE(SUM(octet_length(body)), 0) + COUNT(*) * $1 FROM responses)"
            " + (SELECT COUNT(*) * $2 FROM sessions)",
            _MESSAGE_ROW_BYTES, _SESSION_ROW_BYTES,
        ))  # fmt: skip

    @staticmethod
    async def _estimated_bytes(conn: Connection, key: str) -> int:
        found = await conn.fetchrow(
            "SELECT COALESCE(SUM(octet_length(m.content)"
            " + COALESCE(octet_length(m.meta), 0)), 0), COUNT(m.id)"
            " FROM transcripts t JOIN messages m ON m.session_id = t.session_id"
            " WHERE t.key = $1",
            key,
        )
        # A `/v1/responses` answer is kept twice: in the transcript and as the response.
        responses = await conn.fetchrow(
            "SELECT COALESCE(SUM(octet_length(r.body)), 0), COUNT(r.id)"
            " FROM transcripts t JOIN responses r ON r.session_id = t.session_id"
            " WHERE t.key = $1",
            key,
        )
        rows = int(found[1]) + int(responses[1])
        return int(found[0]) + int(responses[0]) + rows * _MESSAGE_ROW_BYTES + _SESSION_ROW_BYTES

    @staticmethod
    async def _transcript_bytes(conn: Connection, session_id: str) -> int:
        """What deleting one transcript frees, as `_used_bytes` counts it."""
        found = await conn.fetchrow(
            "SELECT COALESCE(SUM(octet_length(content) + COALESCE(octet_length(meta), 0)), 0),"
            " COUNT(*) FROM messages WHERE session_id = $1",
            session_id,
        )
        responses = await conn.fetchrow(
            "SELECT COALESCE(SUM(octet_length(body)), 0), COUNT(*) FROM responses"
            " WHERE session_id = $1",
            session_id,
        )
        rows = int(found[1]) + int(responses[1])
        return int(found[0]) + int(responses[0]) + rows * _MESSAGE_ROW_BYTES

    async def prune(
        self, maintenance: MaintenanceConfig, now: int, protected_keys: Collection[str] = (),
        *, main_key: str = "main", limit: int = PRUNE_BATCH,
    ) -> builtins.list[SessionRow]:  # fmt: skip
        """As the SQLite store's `prune` (agents-sessions.md §5), the same candidates in the
        same order. Each process runs it for its own protected keys and skips the sessions whose
        turn lock another holds, or whose run a claim says goes on (queued on another process
        for a run slot: it holds no lock yet; a turn that claims no key is marked so while it
        waits, agents.session.QueuedMark); two passes at once only delete the same rows
        twice."""
        protected = frozenset(_storable(key) for key in protected_keys)
        cutoff = _sql_int(now - maintenance.prune_after_ms)

        async def select(
            conn: Connection,
        ) -> tuple[builtins.list[SessionRow], builtins.list[str]]:
            chosen: dict[str, SessionRow] = {}
            archived: builtins.list[str] = []
            # The sessions whose turn runs in another process (which protects only its own):
            # their turn locks, by the key's hash as pg_locks shows it.
            busy = {
                int(lock) for lock in await conn.fetchval(
                    "SELECT array_agg(objid::bigint) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND granted AND objsubid = 2 AND classid = $1::bigint::oid",
                    LOCK_CLASS_TURN,
                ) or ()
            }  # fmt: skip
            # And those with a run claimed and not ended, which may wait for a run slot on
            # another process, holding no lock yet (`claimed_run_going_on`).
            claimed = set(
                await conn.fetchval(
                    "SELECT array_agg(DISTINCT session_key) FROM hook_calls WHERE NOT ended"
                    f" AND expires_at > {SQL_NOW_MS}"
                )
                or ()
            )

            async def choose(
                sql: str, args: tuple[Any, ...], wanted: Callable[[SessionRow], Awaitable[bool]]
            ) -> None:
                async for raw in conn.cursor(
                    f"SELECT {_SESSION_COLUMNS}, hashtext(key)::bigint & 4294967295"
                    f" FROM sessions {sql}",
                    *args, prefetch=200,
                ):  # fmt: skip
                    if len(chosen) >= limit:
                        return
                    *columns, lock = raw
                    row = _session_row(tuple(columns))
                    if row.key in chosen or row.key in protected or is_main_key(row.key, main_key):
                        continue
                    if lock in busy or row.key in claimed:
                        continue
                    if not await wanted(row):
                        return
                    chosen[row.key] = row

            async def always(_: SessionRow) -> bool:
                return True

            # As SQLite's: archived sessions only under the byte limit, and not counted;
            # pinned ones only under it too, but counted.
            kept = "archived_at IS NULL AND pinned_at IS NULL"
            await choose(f"WHERE updated_at < $1 AND {kept} ORDER BY updated_at", (cutoff,), always)
            await choose(
                f"WHERE stateless AND updated_at < $1 AND {kept} ORDER BY updated_at",
                (_sql_int(now - maintenance.stateless_ttl_ms),),
                always,
            )
            total = int(
                await conn.fetchval("SELECT COUNT(*) FROM sessions WHERE archived_at IS NULL")
            )
            excess = total - len(chosen) - maintenance.max_entries

            async def beyond_max_entries(_: SessionRow) -> bool:
                nonlocal excess
                excess -= 1
                return excess >= 0

            if excess > 0:
                await choose(f"WHERE {kept} ORDER BY updated_at, key", (), beyond_max_entries)
            if maintenance.max_disk_bytes:
                used = await self._used_bytes(conn)
                if used > maintenance.max_disk_bytes:
                    to_free = used - maintenance.high_water_bytes
                    for key in chosen:
                        to_free -= await self._estimated_bytes(conn, key)
                    # Archived transcripts first, the longest archived first (as SQLite's).
                    async for sid, key in conn.cursor(
                        "SELECT session_id, key FROM transcripts WHERE archived_at IS NOT NULL"
                        " ORDER BY archived_at",
                        prefetch=200,
                    ):
                        if to_free <= 0:
                            break
                        if key not in chosen:  # else counted with its session
                            archived.append(sid)
                            to_free -= await self._transcript_bytes(conn, sid)

                    async def until_under_high_water(row: SessionRow) -> bool:
                        nonlocal to_free
                        if to_free <= 0:
                            return False
                        # Every archived transcript is counted above: the session's own is left.
                        own = await self._transcript_bytes(conn, row.session_id)
                        to_free -= own + _SESSION_ROW_BYTES
                        return True

                    await choose("ORDER BY updated_at, key", (), until_under_high_water)
            return list(chosen.values()), archived

        # A cursor lives in a transaction; this one only reads.
        candidates, archived = await self._run(
            select, transaction=True, answer_within=MAINTENANCE_TIMEOUT_S
        )
        if maintenance.mode == "enforce":

            async def enforce(conn: Connection) -> builtins.list[SessionRow]:
                # First what tells this pass's turn locks from a turn's: what holds one of
                # them and this is a pass (`turn_running_elsewhere`).
                await conn.execute(
                    "SELECT pg_advisory_xact_lock_shared($1, $2)", LOCK_CLASS, _PRUNE_MARK
                )
                # Only the rows as they were chosen: another process's turn may have come
                # since (committed: a newer updated_at; running: its turn lock held; queued:
                # its run claimed). Each row's turn lock is taken before the row (a session
                # whose lock is held is kept, its row never locked: its turn's writes waited
                # for this whole transaction, holding their run slot), and held until the
                # commit (`_lock` then finds it taken and waits without a run slot, and its
                # turn reads the session gone): a turn lock taken after a mere look at
                # pg_locks, before the commit, ran its turn on a session deleted under it.
                # It costs a turn nothing: no row lock, no statement more. In a CASE: the
                # planner orders a WHERE's conditions as it likes, and a scan of the table
                # could take the lock of every session it reads, until the commit.
                locked = await conn.fetch(
                    "SELECT s.key FROM sessions s"
                    " JOIN unnest($1::text[], $2::bigint[]) AS c(key, at)"
                    " ON s.key = c.key AND s.updated_at = c.at"
                    " WHERE CASE WHEN s.key = c.key AND s.updated_at = c.at AND NOT EXISTS"
                    " (SELECT 1 FROM hook_calls h WHERE h.session_key = s.key AND NOT h.ended"
                    f" AND h.expires_at > {SQL_NOW_MS})"
                    " THEN pg_try_advisory_xact_lock($3, hashtext(s.key)) ELSE FALSE END"
                    " ORDER BY s.key FOR UPDATE OF s",
                    [row.key for row in candidates], [row.updated_at for row in candidates],
                    LOCK_CLASS_TURN,
                )  # fmt: skip
                # The claims read again by the next statement: a claim takes a share of its
                # session's row (`claim_call`), so one made before the rows were locked is
                # committed by then (a statement that waited for a row reads the claims as
                # they were when it began), and one made after waits for this transaction,
                # then finds the session gone. A session so kept keeps its turn lock taken
                # until the commit: its turn, queued elsewhere, waits so long, without a slot.
                deleted = await conn.fetch(
                    "DELETE FROM sessions s WHERE s.key = ANY($1::text[]) AND NOT EXISTS"
                    " (SELECT 1 FROM hook_calls h WHERE h.session_key = s.key AND NOT h.ended"
                    f" AND h.expires_at > {SQL_NOW_MS}) RETURNING s.key",
                    [record[0] for record in locked],
                )  # fmt: skip
                keys = {record[0] for record in deleted}
                await conn.execute(
                    "DELETE FROM transcripts WHERE key = ANY($1::text[])", list(keys)
                )
                await conn.execute(
                    "DELETE FROM transcripts WHERE archived_at IS NOT NULL"
                    " AND (archived_at < $1 OR session_id = ANY($2::text[]))",
                    cutoff, archived,
                )  # fmt: skip
                return [row for row in candidates if row.key in keys]

            return await self._run(enforce, write=True, answer_within=MAINTENANCE_TIMEOUT_S)
        return candidates
