"""The session store: sessions and their transcripts in one SQLite file (agents-sessions.md §8).

One dedicated thread owns the connection that writes; every call is a job on that thread,
queued from the event loop, so the loop never blocks on SQLite and jobs run in submission
order. The reads that scan a table (`list`, `count`, `usage_by_day`, `usage_by_session`: any
operator.read client may ask for them at will) are jobs on a second thread with a read-only
connection of its own, so a turn's commit never waits behind one; in WAL mode they read the
last commit meanwhile.
A turn is written as one unit (`append_turn`): both messages and the session row update are
durable together or not at all.

Group commit: the thread takes every job queued when it wakes and runs them in one
transaction, each write in a savepoint of its own (a failing job rolls back only itself),
then commits once: one fsync for all the turns that ended meanwhile, instead of one each.
A failure SQLite answers by rolling back the whole transaction (a full disk, an I/O error)
is the failing job's error; the jobs before it run again, once, in a new transaction.
No job's caller hears back before the commit that holds its writes (a turn is durable when
`append_turn` returns), and the results of a batch go back to the loop in one wake-up.

Tables:
- `sessions`: one row per key, pointing at its current `session_id`;
- `transcripts`: every session id a key ever had (a reset archives the old one); it is the
  parent of `messages`, so deleting a transcript deletes its messages (ON DELETE CASCADE);
- `messages`: the transcript rows, `UNIQUE(session_id, seq)`. A row is a `user` message, an
  `assistant` message (content blocks: text, thinking, toolCall) or a `toolResult` (schema 2);
- `responses`: `/v1/responses` objects by id, children of their transcript (schema 4).

Every per-turn statement is a primary-key or index lookup: a turn costs the same with
100,000 sessions stored as with 10.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import json
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import structlog

from agents import compactjson
from agents.config import MaintenanceConfig
from agents.errors import (
    REFUSED_ERROR,
    SessionArchivedPin,
    SessionChanged,
    StoreError,
    UnsafeStoreFile,
    UnusableStore,
)
from agents.ids import uuid7
from agents.keys import is_main_key
from agents.providers.base import (
    TOOL_IMAGE_ONLY_TEXT,
    ChatMessage,
    ImageInput,
    ThinkingBlock,
    ToolCall,
)
from agents.surrogates import repair_surrogates

T = TypeVar("T")

log = structlog.get_logger(__name__)

DB_FILENAME = "sessions.sqlite3"
# Another writer (a backup tool, the sqlite3 CLI) may hold the lock briefly.
BUSY_TIMEOUT_MS = 5000
# Jobs one group transaction takes at most: bounds how long the first of them waits for its
# commit when thousands are queued (each turn's write is some 0.1 ms; the fsync ~1-10 ms).
GROUP_MAX_JOBS = 256
# Sessions one maintenance job looks at and deletes: one transaction of some 500 row deletes
# takes tens of milliseconds, so turns queued behind it on the store thread barely notice.
PRUNE_BATCH = 500
# The size the WAL file is cut back to once checkpointed. It grows to hold a transaction (a
# group of 20 MB turns can take hundreds of MB) and would keep that size until the store
# closes; in steady state it stays under SQLite's 1000-page checkpoint mark (4 MB).
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
# Estimated bytes of a message row beyond its text (uuid id, session id, usage JSON, its
# index entries) and of a session with its transcript row and their index entries. A guess:
# SQLite's `prune` counts the pages again once it has deleted what the guess chose.
_MESSAGE_ROW_BYTES = 256
_SESSION_ROW_BYTES = 512

_SCHEMA_V1 = """
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    label TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    model_provider TEXT,
    model TEXT,
    last_run_id TEXT,
    last_status TEXT,
    aborted_last_run INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_updated ON sessions(updated_at);
CREATE INDEX sessions_by_agent ON sessions(agent_id, updated_at);
CREATE TABLE transcripts (
    session_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    archived_at INTEGER
);
CREATE INDEX transcripts_by_key ON transcripts(key);
CREATE INDEX transcripts_by_archived ON transcripts(archived_at) WHERE archived_at IS NOT NULL;
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES transcripts(session_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    run_id TEXT,
    idempotency_key TEXT,
    provider TEXT,
    model TEXT,
    api TEXT,
    usage TEXT,
    stop_reason TEXT,
    aborted INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    meta TEXT,
    UNIQUE (session_id, seq)
);
"""


def _migrate_to_1(db: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the migration's transaction.
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate_to_2(db: sqlite3.Connection) -> None:
    """`sessions.stateless`: maintenance prunes keyless HTTP sessions early (statelessTtl).

    A key alone cannot tell: a client may name its session `openai:<uuid>` itself, and a
    client that reuses the key a stateless response named makes that session a named one.
    Rows from before the column get it from the shape the gateway gives those keys.
    """
    db.execute("ALTER TABLE sessions ADD COLUMN stateless INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE sessions SET stateless = 1 WHERE key GLOB ?", (STATELESS_KEY_GLOB,))
    db.execute(
        "CREATE INDEX sessions_stateless_by_updated ON sessions(updated_at) WHERE stateless = 1"
    )


# `agent:<id>:openai:<uuid4>`, the key a keyless HTTP request gets (http-openai.md §4.2).
STATELESS_KEY_GLOB = "agent:*:openai:" + "-".join("[0-9a-f]" * n for n in (8, 4, 4, 4, 12))

_SCHEMA_V3_TOOL_MESSAGES = """
ALTER TABLE messages ADD COLUMN tool_call_id TEXT;
ALTER TABLE messages ADD COLUMN tool_name TEXT;
ALTER TABLE messages ADD COLUMN is_error INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN context_start INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_context_starts ON messages(session_id, seq) WHERE context_start = 1
"""


def _migrate_to_3_tool_messages(db: sqlite3.Connection) -> None:
    """Schema 3: structured tool messages. `toolResult` rows name the call they answer
    (`tool_call_id`, `tool_name`, `is_error`); assistant tool calls are content blocks and
    need no column. `context_start` marks the first message of a turn whose client history
    replaced the stored one: the history given to the model starts there (session.py).
    Existing rows are plain user/assistant messages and stay valid as they are."""
    for statement in _SCHEMA_V3_TOOL_MESSAGES.split(";"):
        if statement.strip():
            db.execute(statement)


_SCHEMA_V4_RESPONSES = """
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES transcripts(session_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX responses_by_session ON responses(session_id)
"""


def _migrate_to_4_responses(db: sqlite3.Connection) -> None:
    """Schema 4: `/v1/responses` objects. A response id names its session (`key`, and the
    transcript it was answered in) and its turn: the run id of its messages is the response
    id. Deleting a transcript (a pruned or deleted session) deletes its responses; the
    cascade needs the index on `session_id` to stay a lookup."""
    for statement in _SCHEMA_V4_RESPONSES.split(";"):
        if statement.strip():
            db.execute(statement)


_SCHEMA_V5_ARCHIVED = """
ALTER TABLE sessions ADD COLUMN archived_at INTEGER;
ALTER TABLE sessions ADD COLUMN archive_reason TEXT
"""


def _migrate_to_5_archived(db: sqlite3.Connection) -> None:
    """Schema 5: archived sessions (OpenClaw's `sessions.patch {archived}`). `archived_at`
    is set while the session is archived, with the reason (`"manual"`); no existing session
    is archived."""
    for statement in _SCHEMA_V5_ARCHIVED.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate_to_6_pinned(db: sqlite3.Connection) -> None:
    """Schema 6: pinned sessions (OpenClaw's `sessions.patch {pinned}`): `pinned_at` is set
    while the session is pinned; no existing session is. The index holds the pinned ones
    only: a list finds its first page of them without a scan of every session."""
    db.execute("ALTER TABLE sessions ADD COLUMN pinned_at INTEGER")
    db.execute("CREATE INDEX sessions_pinned ON sessions(pinned_at) WHERE pinned_at IS NOT NULL")


def _migrate_to_7_runs(db: sqlite3.Connection) -> None:
    """Schema 7: a turn's messages found by its run (the response id of a `/v1/responses`
    turn). Its reply, the run's last message, was found by a walk back from the session's
    last message, over the messages of every later turn: continuing an old response of a
    long session, or paging its input items, cost that session's length each time."""
    db.execute("CREATE INDEX messages_by_run ON messages(session_id, run_id, seq)")


def _migrate_to_8_turn_ends(db: sqlite3.Connection) -> None:
    """Schema 8: the replies (messages with a stop reason) and the assistant messages of a
    transcript, each by seq. A turn's reply, and the end of a stretch of messages up to an
    assistant one, were found by a step along the session's messages from the turn's first
    (`SQL_TURN_REPLY`, `SQL_NEXT_ASSISTANT`): a client's history of thousands of messages in
    one turn cost thousands of steps for each input item page inside it. Each index holds
    one or two entries a turn (its reply; a client's history its assistant messages)."""
    db.execute(
        "CREATE INDEX messages_replies ON messages(session_id, seq) WHERE stop_reason IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX messages_assistants ON messages(session_id, seq) WHERE role = 'assistant'"
    )


def _migrate_to_10_output_ids(db: sqlite3.Connection) -> None:
    """Schema 10: a response's output item ids beside its body (JSON; NULL for one stored
    before, whose body holds them). A request that continues a response and carries item
    ids is checked against them (items sent again): it read the body, the response's whole
    output, each time."""
    db.execute("ALTER TABLE responses ADD COLUMN output_ids TEXT")


def _migrate_to_9_answers(db: sqlite3.Connection) -> None:
    """Schema 9: the answers (replies the upstream did not refuse, `SQL_ANSWER`) of a
    transcript, by seq. The end of a run of refused turns, and the answer before one, were a
    step along the index of replies, one entry a refused turn: a client that sent a request
    too large thousands of times cost thousands of steps for each input item page across
    the run. One entry an answered turn."""
    db.execute(f"CREATE INDEX messages_answers ON messages(session_id, seq) WHERE {SQL_ANSWER}")


# MIGRATIONS[v] takes a database at user_version v to v + 1, inside a transaction.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3_tool_messages,
    _migrate_to_4_responses,
    _migrate_to_5_archived,
    _migrate_to_6_pinned,
    _migrate_to_7_runs,
    _migrate_to_8_turn_ends,
    _migrate_to_9_answers,
    _migrate_to_10_output_ids,
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
_MESSAGE_COLUMN_COUNT = _MESSAGE_COLUMNS.count(",") + 1

# The statements of a turn, named so a test can check their query plans.
SQL_GET_SESSION = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE key = ?"
SQL_NEXT_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE session_id = ?"
SQL_ADD_TRANSCRIPT = (
    "INSERT OR IGNORE INTO transcripts (session_id, key, agent_id, created_at) VALUES (?, ?, ?, ?)"
)
SQL_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ({', '.join('?' * _MESSAGE_COLUMN_COUNT)})"
)
# A turn for a key whose row vanished (maintenance raced it) recreates the row. On conflict
# the session id is left alone: a reset always wins over a late turn of the old transcript.
SQL_UPSERT_TURN = f"""
INSERT INTO sessions ({_SESSION_COLUMNS}, stateless)
VALUES (:key, :agent_id, :session_id, NULL, :created, :now, :input, :output, :input,
        :provider, :model, :run_id, :status, :aborted, NULL, NULL, NULL, :stateless)
ON CONFLICT (key) DO UPDATE SET
    stateless = stateless AND excluded.stateless,
    -- A row created while the turn ran and holding no message yet (a label given during a
    -- minted key's first turn, whose row the turn writes): the session is the turn's, which
    -- holds its messages. Not when the turn's transcript was archived meanwhile (a reset
    -- during a session's first turn wins, as over any late turn), nor over a turn another
    -- process stored under the key meanwhile (its row stays the key's).
    session_id = CASE WHEN created_at >= excluded.created_at
                           AND NOT EXISTS (SELECT 1 FROM transcripts AS t
                                           WHERE t.session_id = excluded.session_id
                                             AND t.archived_at IS NOT NULL)
                           AND NOT EXISTS (SELECT 1 FROM messages AS m
                                           WHERE m.session_id = sessions.session_id)
                      THEN excluded.session_id ELSE session_id END,
    updated_at = excluded.updated_at,
    input_tokens = excluded.input_tokens,
    output_tokens = excluded.output_tokens,
    total_tokens = excluded.total_tokens,
    model_provider = COALESCE(excluded.model_provider, model_provider),
    model = COALESCE(excluded.model, model),
    last_run_id = excluded.last_run_id,
    last_status = excluded.last_status,
    aborted_last_run = excluded.aborted_last_run
RETURNING {_SESSION_COLUMNS}
"""


def _refused_sql(table: str) -> str:
    """`table`'s row is a refused turn's reply (`StoredMessage.refused`), in both stores."""
    return (
        f"{table}.stop_reason = 'error'"
        f" AND COALESCE({table}.error_message, '') LIKE '{REFUSED_ERROR}%'"
    )


# A user message `m` of no refused turn. Its turn's reply is the first message after it with
# a stop reason (a client's assistant messages stored with it have none): one index step
# from `m`, where matching the run id alone would read every later message of the session,
# and would take a later turn of the same run id (`refused_turns`) for its own.
SQL_USER_NOT_REFUSED = (
    f"(SELECT r.run_id = m.run_id AND {_refused_sql('r')} FROM messages r"
    " WHERE r.session_id = m.session_id AND r.seq > m.seq AND r.stop_reason IS NOT NULL"
    " ORDER BY r.seq LIMIT 1) IS NOT TRUE"
)
# Any message `m` of no refused turn: not a refused reply, nor (one without a stop reason)
# before its turn's reply that is.
SQL_NOT_REFUSED = (
    f"NOT ({_refused_sql('m')}) AND (m.stop_reason IS NOT NULL OR {SQL_USER_NOT_REFUSED})"
)
# The messages of the last N user turns: everything from the N-th last user message on
# (a turn the upstream refused, which is not replayed, is none of them), but nothing before
# the last context start (a turn whose client history replaced ours).
SQL_RECENT_TURNS = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = :sid AND seq >= MAX(
    COALESCE((SELECT seq FROM messages AS m WHERE session_id = :sid AND role = 'user'
              AND {SQL_USER_NOT_REFUSED} ORDER BY seq DESC LIMIT 1 OFFSET :skip), 0),
    COALESCE((SELECT seq FROM messages WHERE session_id = :sid AND context_start = 1
              ORDER BY seq DESC LIMIT 1), 0))
ORDER BY seq
"""
# What a transcript gained after a known seq: a history kept from an earlier turn is brought
# up to date with it (agents/history.py).
SQL_MESSAGES_AFTER = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq
"""
# A turn's place in its transcript: its last message (its reply, as a turn is written whole)
# and the transcript's last; then the turn's conversation through its reply (`chain_to`): as
# `SQL_RECENT_TURNS`, its last N user turns not refused but nothing before the last context
# start, all as of that reply.
SQL_TURN_END = """
SELECT (SELECT MAX(seq) FROM messages WHERE session_id = ? AND run_id = ?),
       (SELECT MAX(seq) FROM messages WHERE session_id = ?)
"""
SQL_CHAIN_TO = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages
WHERE session_id = :sid AND seq <= :end AND seq >= MAX(
    COALESCE((SELECT seq FROM messages AS m WHERE session_id = :sid AND role = 'user'
              AND seq <= :end AND {SQL_USER_NOT_REFUSED} ORDER BY seq DESC LIMIT 1 OFFSET :skip),
             0),
    COALESCE((SELECT seq FROM messages WHERE session_id = :sid AND context_start = 1
              AND seq <= :end ORDER BY seq DESC LIMIT 1), 0))
ORDER BY seq
"""
# The same conversation read a stretch at a time (an input item list's pages): its bounds,
# the last context start at or before the turn's reply (0: none) and the reply's seq; a
# stretch of it, either way; a message's seq by its id.
SQL_CHAIN_BOUNDS = """
SELECT COALESCE((SELECT seq FROM messages WHERE session_id = :sid AND context_start = 1
                 AND seq <= turn.reply ORDER BY seq DESC LIMIT 1), 0), turn.reply
FROM (SELECT MAX(seq) AS reply FROM messages WHERE session_id = :sid AND run_id = :run) AS turn
"""
SQL_MESSAGES_IN = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ?
ORDER BY seq LIMIT ?
"""
SQL_MESSAGES_IN_DESC = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ?
ORDER BY seq DESC LIMIT ?
"""
SQL_MESSAGE_SEQ = "SELECT seq FROM messages WHERE id = ? AND session_id = ?"
# The messages of these ids, in any transcript: a lookup per id in the primary key, a batch
# of ids per statement (SQLite's variables are limited).
SQL_MESSAGES_BY_ID = "SELECT {columns} FROM messages WHERE id IN ({marks})"
MESSAGES_BY_ID_BATCH = 500
# The first reply (a message with a stop reason) from seq `low` to `high`: a lookup in the
# index of replies (schema 8).
SQL_TURN_REPLY = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ?
AND stop_reason IS NOT NULL ORDER BY seq LIMIT 1
"""
# The first assistant message from seq `low` to `high`: one in the index of those.
SQL_NEXT_ASSISTANT = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ?
AND role = 'assistant' ORDER BY seq LIMIT 1
"""
# A reply the upstream did not refuse (`StoredMessage.refused`): an answer. The index of
# answers (schema 9) holds the messages of this condition, written the same in a query.
SQL_ANSWER = (
    "stop_reason IS NOT NULL AND NOT (stop_reason = 'error'"
    f" AND COALESCE(error_message, '') LIKE '{REFUSED_ERROR}%')"
)
# The last reply of the run of refused turns that begins at seq `low` (the first message of
# a turn), up to `high`: the last reply before the first answer, when there is one before
# it; and the last answer from `low` to `high`. Lookups in the index of answers and that of
# replies, however long the run; no row built.
SQL_REFUSED_RUN_END = f"""
SELECT MAX(seq) FROM messages WHERE session_id = :sid AND stop_reason IS NOT NULL
AND seq >= :low AND seq < COALESCE((SELECT seq FROM messages WHERE session_id = :sid
    AND seq BETWEEN :low AND :high AND {SQL_ANSWER} ORDER BY seq LIMIT 1), :high + 1)
"""
SQL_LAST_ANSWER = f"""
SELECT seq FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ? AND {SQL_ANSWER}
ORDER BY seq DESC LIMIT 1
"""
# The last assistant message's seq from `low` to `high`: another lookup in that index.
SQL_LAST_ASSISTANT_IN = """
SELECT seq FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ? AND role = 'assistant'
ORDER BY seq DESC LIMIT 1
"""
# The first message from seq `low` to `high` that is not stored as the message `shift` seqs
# after it is (its role, content, images, tool call id and name): whether a turn sent again
# the messages of one before it, compared in the database, a seq lookup per pair.
SQL_FIRST_DIFFERENCE = """
SELECT a.seq FROM messages AS a JOIN messages AS b
ON b.session_id = a.session_id AND b.seq = a.seq + :shift
WHERE a.session_id = :sid AND a.seq BETWEEN :low AND :high
AND NOT (a.role IS b.role AND a.content IS b.content AND a.meta IS b.meta
         AND a.tool_call_id IS b.tool_call_id AND a.tool_name IS b.tool_name)
ORDER BY a.seq LIMIT 1
"""
SQL_RESPONSE_PLACE = "SELECT session_id, key, agent_id FROM responses WHERE id = ?"
# Its body only when its output ids were not kept (stored before schema 10).
SQL_RESPONSE_OUTPUT_IDS = (
    "SELECT session_id, output_ids, CASE WHEN output_ids IS NULL THEN body END FROM responses"
    " WHERE id = ?"
)
# `chain_to` with no limit of turns: an offset no transcript reaches.
_ALL_TURNS = 2**62
# The transcript's last assistant message: what a client resending its history must hold;
# not the reply of a turn the upstream refused, which is not replayed (agents/history.py).
SQL_LAST_ASSISTANT = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages AS m
WHERE session_id = ? AND role = 'assistant' AND {SQL_NOT_REFUSED} ORDER BY seq DESC LIMIT 1
"""


@attrs.frozen
class SessionRow:
    """A `sessions` row (agents-sessions.md §3)."""

    key: str
    agent_id: str
    session_id: str
    label: str | None
    created_at: int
    updated_at: int
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0  # the last run's input (context size), as OpenClaw lists it
    model_provider: str | None = None
    model: str | None = None
    last_run_id: str | None = None
    last_status: str | None = None  # "done", "aborted", "error"; None before the first run
    aborted_last_run: bool = False
    # Set while the session is archived (OpenClaw's archiving): no new work starts on it.
    archived_at: int | None = None
    archive_reason: str | None = None
    # Set while the session is pinned (OpenClaw's pins): listed first, kept by maintenance.
    pinned_at: int | None = None


@attrs.frozen
class TurnChain:
    """The conversation one turn answered, as its transcript holds it: from the last context
    start at or before the turn (or fewer turns, when asked) through the turn's reply, oldest
    first. `followed`: later turns came after it."""

    messages: tuple[StoredMessage, ...]
    followed: bool


@attrs.frozen
class StoredMessage:
    """A transcript message (agents-sessions.md §3), plus its id and per-sessionId seq."""

    id: str
    session_id: str
    seq: int
    role: str  # "user", "assistant" or "toolResult"
    # user: str; assistant: [{"type": "text"|"thinking"|"toolCall", ...}];
    # toolResult: [{"type": "text", "text": ...}]
    content: Any
    timestamp: int
    run_id: str | None = None
    idempotency_key: str | None = None
    provider: str | None = None
    model: str | None = None
    api: str | None = None
    usage: Mapping[str, int] | None = None  # {"input", "output", "totalTokens"}
    stop_reason: str | None = None
    aborted: bool = False
    error_message: str | None = None
    # user, toolResult: {"count", "mimeTypes"}; data is not stored
    images: Mapping[str, Any] | None = None
    tool_call_id: str | None = None  # toolResult
    tool_name: str | None = None  # toolResult
    is_error: bool = False  # toolResult
    context_start: bool = False
    # assistant: the order its parts began in, each with its place in its text
    # (`TurnRecord.layout`), when kept; else ().
    layout: tuple[tuple[str, int], ...] = ()

    @property
    def refused(self) -> bool:
        """The reply of a turn the upstream refused as bad (`agents.errors.REFUSED_ERROR`):
        the turn is stored, but not replayed (agents/history.py)."""
        return (
            self.stop_reason == "error"
            and self.error_message is not None
            and self.error_message.startswith(REFUSED_ERROR)
        )

    def _parts(self) -> tuple[str, tuple[ToolCall, ...], str, tuple[ThinkingBlock, ...]]:
        """Text, tool calls, reasoning and the signed thinking blocks (none unless every
        thinking block is signed), in one pass over the content blocks: a replayed history
        asks each message for all four."""
        content = self.content
        if isinstance(content, str):
            return content, (), "", ()
        texts: list[str] = []
        calls: list[ToolCall] = []
        thinking: list[str] = []
        signed: list[ThinkingBlock] | None = []
        for block in content:
            if not isinstance(block, dict):
                continue
            match block.get("type"):
                case "text":
                    texts.append(block.get("text", ""))
                case "thinking":
                    text = str(block.get("thinking", ""))
                    if text:
                        thinking.append(text)
                    signature = block.get("thinkingSignature")
                    if not (isinstance(signature, str) and signature):
                        signed = None
                    elif signed is not None:
                        signed.append(ThinkingBlock(text, signature, block.get("redacted") is True))
                case "toolCall":
                    calls.append(ToolCall(
                        str(block.get("id", "")), str(block.get("name", "")),
                        _arguments_text(block),
                    ))  # fmt: skip
        return "".join(texts), tuple(calls), "\n\n".join(thinking), tuple(signed or ())

    @property
    def text(self) -> str:
        return self._parts()[0]

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self._parts()[1]

    @property
    def reasoning(self) -> str:
        return self._parts()[2]

    @property
    def thinking(self) -> tuple[ThinkingBlock, ...]:
        return self._parts()[3]

    def to_chat(self) -> ChatMessage:
        """The message as a provider is given it."""
        text, calls, reasoning, thinking = self._parts()
        if self.role == "toolResult":
            if self.images is not None and not text.strip():
                text = TOOL_IMAGE_ONLY_TEXT  # its images are not stored
            return ChatMessage("tool", text, tool_call_id=self.tool_call_id,
                               tool_name=self.tool_name)  # fmt: skip
        if self.role == "assistant":
            return ChatMessage(
                "assistant", text, tool_calls=calls, reasoning=reasoning, thinking=thinking,
            )  # fmt: skip
        return ChatMessage(self.role, text)

    def to_transcript(self) -> dict[str, Any]:
        """OpenClaw's transcript shape, as `chat.history` returns it (ws-protocol.md §8)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.role == "toolResult":
            # OpenClaw's (pi-ai's) tool result message.
            out = {
                "role": self.role,
                "toolCallId": self.tool_call_id,
                "toolName": self.tool_name,
                "content": self.content,
                "isError": self.is_error,
                "timestamp": self.timestamp,
                "__openclaw": {"id": self.id, "seq": self.seq},
            }
            return out
        if self.role == "user":
            out["timestamp"] = self.timestamp
            if self.idempotency_key is not None:
                out["idempotencyKey"] = self.idempotency_key
            if self.images is not None:
                out["images"] = dict(self.images)
            out["__openclaw"] = {"id": self.id, "seq": self.seq}
            return out
        for name, value in (("api", self.api), ("provider", self.provider), ("model", self.model)):
            if value is not None:
                out[name] = value
        if self.usage is not None:
            out["usage"] = dict(self.usage)
        # pi-ai's name for a reply that ended in tool calls.
        out["stopReason"] = "toolUse" if self.stop_reason == "tool_calls" else self.stop_reason
        if self.aborted:
            out["aborted"] = True
        if self.error_message is not None:
            out["errorMessage"] = self.error_message
        out["timestamp"] = self.timestamp
        meta: dict[str, Any] = {"id": self.id, "seq": self.seq}
        if self.run_id is not None:
            meta["runId"] = self.run_id
        out["__openclaw"] = meta
        return out


@attrs.frozen
class StoredResponse:
    """A `/v1/responses` object as answered (`body`, JSON), and where its turn lives."""

    id: str
    session_id: str
    key: str
    agent_id: str
    created_at: int  # ms
    body: str
    # Its output items' ids, kept beside the body (`response_output_ids`); None: not given
    # (a response stored before schema 10), read from the body.
    output_ids: tuple[str, ...] | None = None


@attrs.frozen
class ResponseOutputIds:
    """A stored response's session and the ids of its output items, read without its body:
    what the check of a request continuing it, for items it sends again, needs."""

    session_id: str
    item_ids: frozenset[str]


def response_output_ids(session_id: str, ids: str | None, body: str | None) -> ResponseOutputIds:
    """From a row of `responses`: its `output_ids` (JSON), or, stored before they were
    kept, its body."""
    if ids is not None:
        return ResponseOutputIds(session_id, frozenset(json.loads(ids)))
    output = json.loads(body or "{}").get("output") or []
    return ResponseOutputIds(
        session_id, frozenset(item["id"] for item in output if isinstance(item.get("id"), str))
    )


def _dumps_ids(ids: tuple[str, ...] | None) -> str | None:
    return None if ids is None else json.dumps(list(ids))


@attrs.frozen
class ResponsePlace:
    """Where a stored response's turn lives, read without its body (which holds the whole
    output): what paging its input items and continuing it need."""

    session_id: str
    key: str
    agent_id: str


@attrs.frozen
class TurnRecord:
    """Everything one run commits (agents-sessions.md §3): two messages and the row update."""

    key: str
    agent_id: str
    session_id: str
    run_id: str
    user_text: str
    user_timestamp: int  # when the run was accepted
    assistant_text: str
    assistant_timestamp: int  # when the reply ended
    input_tokens: int
    output_tokens: int
    stop_reason: str
    status: str  # the row's last_status: "done", "aborted" or "error"
    provider: str | None = None
    model: str | None = None
    api: str | None = None
    aborted: bool = False
    error_message: str | None = None
    idempotency_key: str | None = None  # WS; stored on the user message as "<key>:user"
    images: Mapping[str, Any] | None = None  # {"count", "mimeTypes"}
    stateless: bool = False  # a keyless HTTP turn; a named turn on the key clears the mark
    # The turn's new messages when they are more than one user text (HTTP: tool results,
    # or a client's whole history); stored in order before the reply, `user_text` unused.
    inputs: tuple[ChatMessage, ...] = ()
    reasoning: str = ""
    thinking: tuple[ThinkingBlock, ...] = ()  # signed: stored block by block
    tool_calls: tuple[ToolCall, ...] = ()
    # The inputs are the client's whole history, replacing the stored one for the model.
    context_start: bool = False
    reply_id: str | None = None  # the reply's message id, when chosen before the run
    # The order the reply's parts began in (`RunOutcome.parts`: "reasoning", "text",
    # "tool_call"), each with its place in its text (`RunOutcome.part_starts`).
    layout: tuple[tuple[str, int], ...] = ()


def images_meta(images: Sequence[ImageInput]) -> dict[str, Any]:
    """What is stored of a message's images: how many, and their types; not their data."""
    return {"count": len(images), "mimeTypes": [image.mime_type for image in images]}


def turn_messages(turn: TurnRecord) -> list[tuple[Any, ...]]:
    """A turn's messages as both stores write them, in order: its inputs, then the reply.
    Each row: id, role, content (JSON), timestamp, run id, idempotency key, provider, model,
    api, usage (JSON), stop reason, aborted, error, meta (JSON), tool call id, tool name,
    is error, context start."""
    inputs = turn.inputs or (ChatMessage("user", turn.user_text),)
    idem = f"{turn.idempotency_key}:user" if turn.idempotency_key is not None else None
    last_user = max((i for i, m in enumerate(inputs) if m.role == "user"), default=-1)
    rows: list[tuple[Any, ...]] = []
    for index, message in enumerate(inputs):
        role = message.role
        call_id = name = meta = None
        if role == "tool":
            role, call_id, name = "toolResult", message.tool_call_id, message.tool_name
            content = _dumps([{"type": "text", "text": message.text}])
            if message.images:
                meta = _dumps({"images": images_meta(message.images)})
        elif role == "assistant":
            content = _dumps(assistant_content(
                message.text, message.tool_calls, message.reasoning, message.thinking,
            ))  # fmt: skip
        else:
            content = _dumps(message.text)
            if index == last_user and turn.images:
                meta = _dumps({"images": dict(turn.images)})
        rows.append((
            uuid7(), role, content, turn.user_timestamp, turn.run_id,
            idem if index == last_user else None, None, None, None, None, None, False,
            None, meta, call_id, name, False, bool(turn.context_start and not index),
        ))  # fmt: skip
    usage = {
        "input": turn.input_tokens,
        "output": turn.output_tokens,
        "totalTokens": turn.input_tokens + turn.output_tokens,
    }
    reply = assistant_content(turn.assistant_text, turn.tool_calls, turn.reasoning, turn.thinking)
    layout = _dumps({"parts": [list(part) for part in turn.layout]}) if _laid_out(turn) else None
    rows.append((
        turn.reply_id or uuid7(), "assistant", _dumps(reply), turn.assistant_timestamp,
        turn.run_id, turn.idempotency_key, turn.provider, turn.model, turn.api,
        _dumps(usage), turn.stop_reason, turn.aborted, turn.error_message, layout, None, None,
        False, False,
    ))  # fmt: skip
    return rows


def _laid_out(turn: TurnRecord) -> bool:
    """Whether the reply's layout is kept (in its meta): when its parts are not what its
    content says alone, its text then its calls (HTTP Responses lists each part as the
    output item it was, under its id: reasoning, a text in stretches, a call before text)."""
    kinds = [kind for kind, _ in turn.layout]
    text = [n for n, kind in enumerate(kinds) if kind == "text"]
    return "reasoning" in kinds or len(text) > 1 or (bool(text) and text[0] > 0)


def assistant_content(
    text: str,
    tool_calls: tuple[ToolCall, ...] = (),
    reasoning: str = "",
    thinking: tuple[ThinkingBlock, ...] = (),
) -> list[dict[str, Any]]:
    """pi-ai's assistant content blocks: thinking, text, then the tool calls. Signed
    thinking is kept block by block (a redacted block: its data as the signature, no
    text), as the API takes it back; `reasoning` is then their texts joined."""
    blocks: list[dict[str, Any]] = []
    for signed in thinking:
        block: dict[str, Any] = {
            "type": "thinking",
            "thinking": signed.text,
            "thinkingSignature": signed.signature,
        }
        if signed.redacted:
            block["redacted"] = True
        blocks.append(block)
    if reasoning and not thinking:
        blocks.append({"type": "thinking", "thinking": reasoning})
    if text or not tool_calls:
        blocks.append({"type": "text", "text": text})
    blocks.extend(
        {"type": "toolCall", "id": c.id, "name": c.name, "arguments": _arguments_value(c.arguments)}
        for c in tool_calls
    )
    return blocks


# How deep a call's arguments may nest to be kept as an object. This thread parses them on a
# short stack; the event loop encodes them again for every later turn and history read, on a
# longer one, where JSON the parser took here can exceed the recursion limit. A tool's
# arguments nest a few levels; the margin leaves room for the loop's own frames.
MAX_ARGUMENTS_NESTING = 200


def _arguments_value(arguments: str) -> Any:
    """Stored as the object the JSON text is (OpenClaw's shape), else as the text itself."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # no JSON, or nested deeper than the parser goes
        return arguments
    if not isinstance(value, dict) or not _nests_within(value, MAX_ARGUMENTS_NESTING):
        return arguments
    return value


def _nests_within(value: Any, limit: int) -> bool:
    """Whether no container in `value` sits deeper than `limit` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items: Any = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in items)
    return True


def _arguments_text(block: Mapping[str, Any]) -> str:
    value = block.get("arguments")
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, separators=(",", ":"),
                      ensure_ascii=False)  # fmt: skip


@attrs.frozen
class SessionPage:
    rows: tuple[SessionRow, ...]
    total_count: int  # rows matching the filters, before `limit`


@attrs.frozen
class History:
    messages: tuple[StoredMessage, ...]  # oldest first
    total: int  # messages in the transcript


@attrs.frozen
class DailyUsage:
    """One agent's token totals on one UTC day (`usage`)."""

    date: str  # YYYY-MM-DD, UTC
    agent_id: str
    input_tokens: int
    output_tokens: int
    turns: int  # assistant messages (aborted and failed turns included)


@attrs.frozen
class SessionUsage:
    """One transcript's messages on one day with one model (`sessions.usage`): the day is a
    number of days since 1970-01-01 in the caller's UTC offset. User and tool-result messages
    have no model."""

    key: str
    agent_id: str
    session_id: str
    day: int
    provider: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    user: int  # user messages
    assistant: int  # assistant messages
    tool_results: int
    errors: int  # failed tool results and assistant messages that ended in an error or abort
    first: int  # Unix ms of the first and last of these messages
    last: int
    label: str | None = None  # the key's session's, when it has one


# `sessions.usage`'s day of a message: whole days of its timestamp plus the caller's UTC
# offset, counted from one day earlier so that the dividend is never negative (SQLite and
# PostgreSQL both round an integer division towards zero), and the day taken back.
SESSION_USAGE_COLUMNS = (
    "t.key, t.agent_id, t.session_id, (m.timestamp + {offset} + 86400000) / 86400000 - 1 AS day,"
    " m.provider, m.model, {inp}, {out}, SUM((m.role = 'user'){int}),"
    " SUM((m.role = 'assistant'){int}), SUM((m.role = 'toolResult'){int}),"
    " SUM(((m.role = 'toolResult' AND m.is_error {true}) OR (m.role = 'assistant' AND"
    " (m.aborted {true} OR m.stop_reason IN ('error', 'aborted', 'timeout')))){int}),"
    " MIN(m.timestamp), MAX(m.timestamp)"
)
SESSION_USAGE_GROUP = " GROUP BY t.session_id, t.key, t.agent_id, day, m.provider, m.model"
# The grouped rows (`{rows}`), each with its key's session's label: looked up once a row, not
# once a message.
SESSION_USAGE_LABELLED = "SELECT g.*, s.label FROM ({rows}) g LEFT JOIN sessions s ON s.key = g.key"


def usage_offset(offset: str, shifts: Sequence[tuple[int, int]]) -> str:
    """The caller's UTC offset of a message: `offset` (an SQL parameter), or from each of
    `shifts` (Unix ms at which a time zone's offset changes, the offset from then on, in
    order) its own. The shifts are the caller's integers, written into the SQL as such."""
    if not shifts:
        return offset
    whens = " ".join(
        f"WHEN m.timestamp >= {int(at)} THEN {int(shift)}" for at, shift in reversed(shifts)
    )
    return f"(CASE {whens} ELSE {offset} END)"


def _session_usage(row: Sequence[Any]) -> SessionUsage:
    key, agent, sid, day, provider, model, inp, out, *counts, first, last, label = row
    user, assistant, tools, errors = (int(n or 0) for n in counts)
    return SessionUsage(
        key, agent, sid, int(day), provider, model, int(inp or 0), int(out or 0),
        user, assistant, tools, errors, int(first), int(last), label,
    )  # fmt: skip


@attrs.frozen
class UsagePoint:
    """One assistant message's tokens (`sessions.usage.timeseries`)."""

    timestamp: int
    input_tokens: int
    output_tokens: int


# The newest first: by the (session_id, seq) index, stopping at the limit.
SQL_USAGE_POINTS = (
    "SELECT timestamp, usage FROM messages WHERE session_id = $1 AND role = 'assistant'"
    " AND usage IS NOT NULL ORDER BY seq DESC LIMIT $2"
)


def _usage_point(row: Sequence[Any]) -> UsagePoint:
    timestamp, usage = row
    try:
        used = json.loads(usage)
        inp, out = int(used.get("input") or 0), int(used.get("output") or 0)
    except (ValueError, TypeError, AttributeError):
        inp = out = 0  # a damaged row counts no tokens rather than fail the chart
    return UsagePoint(int(timestamp), inp, out)


def _still_session(db: sqlite3.Connection, key: str, session_id: str) -> None:
    """SessionChanged unless `key` holds the session `session_id` (in the write's job: no
    reset or delete comes between this and the write)."""
    found = db.execute("SELECT session_id FROM sessions WHERE key = ?", (key,)).fetchone()
    if found is None or found[0] != session_id:
        raise SessionChanged(key)


def _session_row(row: tuple[Any, ...]) -> SessionRow:
    (key, agent_id, sid, label, created, updated, inp, out, total, provider, model, run_id,
     status, aborted, archived_at, archive_reason, pinned_at) = row  # fmt: skip
    return SessionRow(
        key, agent_id, sid, label, created, updated, inp, out, total, provider, model, run_id,
        status, bool(aborted), archived_at, archive_reason, pinned_at,
    )  # fmt: skip


def _damaged(mid: str, seq: int, fields: Mapping[str, str | None]) -> StoreError:
    """We wrote these as JSON: text that is not was changed on disk (a damaged page where
    SQLite checks nothing, a hand edit). The read fails as the store's failure, naming it."""
    for name, text in fields.items():
        try:
            if text is not None:
                json.loads(text)
        except ValueError as exc:
            return StoreError(
                f"stored message {mid} (seq {seq}) is damaged: its {name} is not JSON ({exc})"
            )
    return StoreError(f"stored message {mid} (seq {seq}) is damaged")


def refused_turns(messages: Sequence[StoredMessage]) -> set[int]:
    """The seqs of `messages` (a stretch of a transcript, oldest first) that are of a turn the
    upstream refused: its reply, and the messages of its run since the reply before it. A turn
    is written whole, its reply (the one message of it with a stop reason) last; its run id
    alone does not tell it, as a WebSocket client's idempotency key, its run id, may be sent
    again once it is forgotten, for a turn of its own in the same session."""
    refused: set[int] = set()
    since: list[StoredMessage] = []  # since the last reply
    for message in messages:
        if message.stop_reason is None:
            since.append(message)
            continue
        if message.refused:
            refused.add(message.seq)
            refused.update(m.seq for m in since if m.run_id == message.run_id)
        since = []
    return refused


def last_replayed_assistant(messages: tuple[StoredMessage, ...]) -> StoredMessage | None:
    """The last assistant message of `messages` (a transcript's last messages) that is not
    of a turn the upstream refused (its reply, or an assistant message the client sent)."""
    refused = refused_turns(messages)
    return next(
        (m for m in reversed(messages) if m.role == "assistant" and m.seq not in refused),
        None,
    )


def _message(row: tuple[Any, ...]) -> StoredMessage:
    (mid, sid, seq, role, content, ts, run_id, idem, provider, model, api, usage, stop,
     aborted, error, meta, tool_call_id, tool_name, is_error, context_start) = row  # fmt: skip
    try:
        value = json.loads(content)
        used = json.loads(usage) if usage is not None else None
        extra = json.loads(meta) if meta is not None else None
    except ValueError:
        raise _damaged(mid, seq, {"content": content, "usage": usage, "meta": meta}) from None
    return StoredMessage(
        id=mid,
        session_id=sid,
        seq=seq,
        role=role,
        content=value,
        timestamp=ts,
        run_id=run_id,
        idempotency_key=idem,
        provider=provider,
        model=model,
        api=api,
        usage=used,
        stop_reason=stop,
        aborted=bool(aborted),
        error_message=error,
        images=extra.get("images") if isinstance(extra, dict) else None,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        is_error=bool(is_error),
        context_start=bool(context_start),
        layout=_layout(extra),
    )


def _layout(meta: Any) -> tuple[tuple[str, int], ...]:
    """A reply's layout as its meta keeps it (`_laid_out`); () when none, or not of that
    shape."""
    parts = meta.get("parts") if isinstance(meta, dict) else None
    if not isinstance(parts, list):
        return ()
    layout: list[tuple[str, int]] = []
    for part in parts:
        if not (isinstance(part, list) and len(part) == 2):
            return ()
        kind, start = part
        if not (isinstance(kind, str) and type(start) is int and start >= 0):
            return ()
        layout.append((kind, start))
    return tuple(layout)


def history_span(sizes: Iterable[tuple[int, int]], max_chars: int) -> tuple[int, int] | None:
    """The seqs (lowest, highest) of the newest messages whose contents hold `max_chars`
    together, at least one, from `(seq, content length)` newest first; None: no message."""
    span: tuple[int, int] | None = None
    used = 0
    for seq, size in sizes:
        if span is not None and used + size > max_chars:
            break
        span = (seq, seq if span is None else span[1])
        used += size
    return span


def _dumps(value: Any) -> str:
    # A provider that split a surrogate pair across two deltas leaves both halves in the
    # text, and SQLite takes only UTF-8.
    return repair_surrogates(compactjson.dumps(value))


def _py_lower(value: str | None) -> str | None:
    """SQL `py_lower(text)`: Python's `str.lower`, every letter, as search needles are."""
    return value.lower() if isinstance(value, str) else value


def active_since(now: int, active_minutes: float) -> int:
    """The `updated_at` cutoff of `active_minutes`, within SQL's integers: a client may ask
    for more minutes than a double holds in milliseconds."""
    return _sql_int(now - int(min(active_minutes * 60_000, 2**63)))


def _sql_int(value: int) -> int:
    """`value` within SQLite's 64-bit integers: a duration of "99999999999999999999d" is
    valid config, and sqlite3 raises OverflowError on a parameter beyond them."""
    return max(-(2**63), min(value, 2**63 - 1))


@attrs.frozen(eq=False)
class _Job:
    """A call for the store thread, and where its result goes."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _reason(exc: BaseException | None) -> str:
    """An error as the caller of a job is told it (`SessionStore._submit`)."""
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def tell_commit(
    on_commit: Callable[[float], None], seconds: float, *, backend: str, logged: bool
) -> bool:
    """`on_commit(seconds)` after a COMMIT. The writes are in the database whatever it does,
    so its error goes no further than the log: the first one only (`logged`: one before),
    since a broken callback fails at every commit. Whether it has failed, now or before."""
    try:
        on_commit(seconds)
    except Exception as exc:
        if not logged:
            log.error("on_commit_failed", backend=backend, error=_reason(exc), exc_info=exc)
        return True
    return logged


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """On the loop: hand a group's results to their callers (one wake-up for the group)."""
    for future, result, exc in results:
        if future.done():
            continue  # cancelled meanwhile
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


class SessionStore:
    """SQLite-backed sessions and transcripts; every method is a job on the store thread.

    (`list` is a method here, so annotations below it spell the builtin `builtins.list`.)
    """

    # One process owns the file: the session's lane alone keeps its turns serial.
    shared = False
    reachable = True  # a file of its own: no database to lose

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_FILENAME
        # Told the seconds each write transaction took, BEGIN to COMMIT, on the store thread
        # (the gateway's metrics; it must be thread-safe and must not block). With group
        # commit one transaction holds every write queued meanwhile.
        self.on_commit = on_commit
        self._on_commit_failed = False  # its first error was logged (`tell_commit`)
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None
        self._scans: queue.SimpleQueue[_Job | None] | None = None
        self._scanner: threading.Thread | None = None
        self._scan_db: sqlite3.Connection | None = None  # touched only on the scan thread
        # Touched only on the store thread:
        self._db: sqlite3.Connection | None = None
        self._group_open = False  # the group transaction has begun
        self._job_wrote = False  # the running job wrote in it
        self._group_lost = False  # the running job's failure rolled the transaction back
        # Why the group's transaction could not begin: another connection held the write
        # lock past busy_timeout. The group's later writes fail at once with it instead of
        # waiting again each, which made a queue of n writes wait n busy timeouts.
        self._group_busy: str | None = None
        # Why the store's connection was closed under it (`_recover`): every later call fails
        # at once with it.
        self._lost: str | None = None
        self.commits = 0  # group transactions committed: the fsyncs the writes cost
        self._group_started = 0.0  # perf_counter() at the group's BEGIN, for on_commit

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._jobs is not None:
            return
        self._jobs = queue.SimpleQueue()
        # A daemon: a process that exits without closing the store must not hang on it;
        # whatever was not committed then is lost, as on a crash, and SQLite stays whole.
        self._thread = threading.Thread(
            target=self._serve, args=(self._jobs,), name="session-store", daemon=True
        )
        self._thread.start()
        try:
            await self._call(self._open)
        except BaseException:
            await self._stop()
            raise
        self._scans = queue.SimpleQueue()
        self._scanner = threading.Thread(
            target=self._serve_scans, args=(self._scans,), name="session-store-scans",
            daemon=True,
        )  # fmt: skip
        self._scanner.start()
        try:
            await self._scan(self._open_scans)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._jobs is None:
            return
        try:
            if self._scans is not None:
                await self._scan(self._close_scans)
            await self._call(self._close)
        finally:
            await self._stop()

    async def _stop(self) -> None:
        for jobs, thread in ((self._scans, self._scanner), (self._jobs, self._thread)):
            if jobs is not None and thread is not None:
                jobs.put(None)  # after every job queued so far
                thread.join()  # at once: its last job (the close) has run
        self._jobs = self._thread = self._scans = self._scanner = None

    async def __aenter__(self) -> SessionStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._submit(self._jobs, fn, args)

    async def _scan(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn` on the scan thread."""
        return await self._submit(self._scans, fn, args)

    async def _submit(
        self,
        jobs: queue.SimpleQueue[_Job | None] | None,
        fn: Callable[..., T],
        args: tuple[Any, ...],
    ) -> T:
        if jobs is None:
            raise StoreError("session store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        jobs.put(_Job(fn, args, loop, future))
        try:
            return await future
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CORRUPT:  # or an extended code
                # Found while serving: opening reads the first page only.
                raise StoreError(self._damaged(exc)) from exc
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    # -- the store thread --------------------------------------------------------------

    def _serve(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        """Run jobs until the `None` that `_stop` queues, a group at a time."""
        while True:
            first = jobs.get()
            if first is None:
                return
            group = [first]
            while len(group) < GROUP_MAX_JOBS:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    jobs.put(None)  # stop after this group
                    break
                group.append(job)
            try:
                self._run_group(group)
            except BaseException as exc:  # a bug, or a connection that fails even to roll back
                self._recover(group, exc)

    def _recover(self, group: builtins.list[_Job], exc: BaseException) -> None:
        """After an error `_run_group` did not expect: its callers not yet answered are told,
        and the thread goes on serving, so no call waits forever. The open transaction is
        rolled back; a connection that cannot even do that is closed, and every later call
        fails at once (the gateway must be restarted to open it again)."""
        log.error("store_thread_error", backend="sqlite", error=_reason(exc), exc_info=exc)
        self._group_open = False
        db = self._db
        if db is not None:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except BaseException as lost:
                self._db = None
                self._lost = f"the session store's connection failed ({_reason(lost)})"
                with contextlib.suppress(BaseException):
                    db.close()
        error = StoreError(f"the session store failed: {_reason(exc)}")
        by_loop: dict[asyncio.AbstractEventLoop, builtins.list[Any]] = {}
        for job in group:  # `_resolve` skips the futures the group answered already
            by_loop.setdefault(job.loop, []).append((job.future, None, error))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                loop.call_soon_threadsafe(_resolve, results)

    def _run_group(self, group: builtins.list[_Job]) -> None:
        self._group_busy = None
        done: builtins.list[tuple[_Job, Any, BaseException | None]] = []
        wrote: builtins.list[int] = []  # indexes in `done` of jobs the open transaction holds
        # The jobs to run, each with its index in `done` when it runs again.
        todo: collections.deque[tuple[_Job, int | None]] = collections.deque(
            (job, None) for job in group
        )
        rerun: set[int] = set()
        while todo:
            job, index = todo.popleft()
            if index is None and job.future.cancelled():
                continue  # as an executor skips a cancelled job that has not started
            if job.fn == self._close:
                # The writes queued before the close are committed first, and their callers
                # told if that commit failed: a turn must not hear it is stored when it is not.
                self._end_group(done, wrote)
                wrote = []
            self._job_wrote = self._group_lost = False
            try:
                outcome: tuple[_Job, Any, BaseException | None] = (job, job.fn(*job.args), None)
            except BaseException as exc:  # handed to the caller, as an executor does
                outcome = (job, None, exc)
            if index is None:
                done.append(outcome)
                index = len(done) - 1
            else:
                done[index] = outcome
            if self._group_lost:
                # This job's failure took the whole transaction with it (a full disk, an I/O
                # error), and the writes of the jobs before it: they run again, first and
                # once, in a new transaction. The job keeps its own error, the cause.
                lost = [i for i in wrote if done[i][2] is None]
                wrote = []
                cause = StoreError(
                    f"the store's transaction was rolled back ({_reason(outcome[2])})"
                )
                for i in lost:
                    if i in rerun:
                        done[i] = (done[i][0], None, cause)
                todo.extendleft(reversed([(done[i][0], i) for i in lost if i not in rerun]))
                rerun.update(lost)
            elif self._job_wrote:
                wrote.append(index)
        self._end_group(done, wrote)
        by_loop: dict[asyncio.AbstractEventLoop, builtins.list[Any]] = {}
        for job, result, error in done:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, results in by_loop.items():
            # A closed loop raises RuntimeError: nobody waits for these any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, results)

    def _end_group(
        self, done: builtins.list[tuple[_Job, Any, BaseException | None]], wrote: builtins.list[int]
    ) -> None:
        """Commit the group transaction, if it began; the writes it held (`wrote`, indexes in
        `done`) fail with the commit's error if that fails."""
        if not self._group_open:
            return
        self._group_open = False
        # A group whose every write failed (each rolled back to its savepoint) commits
        # nothing: on_commit is not told of it.
        failure = self._commit(report=any(done[index][2] is None for index in wrote))
        if failure is not None:
            for index in wrote:
                if done[index][2] is None:  # a job that failed keeps its own error
                    done[index] = (done[index][0], None, failure)

    @staticmethod
    def _serve_scans(jobs: queue.SimpleQueue[_Job | None]) -> None:
        """Run scan jobs one at a time until the `None` that `_stop` queues."""
        while (job := jobs.get()) is not None:
            if job.future.cancelled():
                continue
            done: builtins.list[tuple[asyncio.Future[Any], Any, BaseException | None]]
            try:
                done = [(job.future, job.fn(*job.args), None)]
            except BaseException as exc:  # handed to the caller, as an executor does
                done = [(job.future, None, exc)]
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                job.loop.call_soon_threadsafe(_resolve, done)

    def _open_scans(self) -> None:
        """The scan thread's connection, once `_open` has made the file and its schema."""
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA query_only = ON")
            db.execute("PRAGMA temp_store = MEMORY")  # the GROUP BY of usage_by_day
            db.create_function("py_lower", 1, _py_lower, deterministic=True)
        except BaseException:
            db.close()
            raise
        self._scan_db = db

    def _close_scans(self) -> None:
        if self._scan_db is not None:
            self._scan_db.close()
            self._scan_db = None

    def _scan_conn(self) -> sqlite3.Connection:
        if self._scan_db is None:
            raise StoreError("session store is not open")
        return self._scan_db

    def _commit(self, *, report: bool) -> BaseException | None:
        """Commit the group transaction; the error that lost it, if it was lost. `report`:
        tell on_commit how long it took."""
        db = self._conn()
        try:
            if not db.in_transaction:
                # SQLite rolled it back itself (a full disk, an I/O error in a job).
                raise StoreError("the store's transaction was rolled back")
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return exc
        self.commits += 1
        if report and self.on_commit is not None:
            self._on_commit_failed = tell_commit(
                self.on_commit,
                time.perf_counter() - self._group_started,
                backend="sqlite",
                logged=self._on_commit_failed,
            )
        return None

    def _open(self) -> None:
        if not self.state_dir.exists():
            # exist_ok: another process opening the store may make it at the same moment.
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.state_dir, 0o700)  # mkdir's mode is filtered by the umask
        created = not self.path.exists()
        # Create it ourselves so it is 0600 from the start; SQLite gives the -wal and -shm
        # files the same mode.
        try:
            self._refuse_links()
        except PermissionError as exc:  # a file of another user, or one made 0400
            raise UnusableStore(self._read_only(exc)) from exc
        if created:
            os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._enter_wal(db)
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            # Each job of a group commit runs in a savepoint, and SQLite keeps the pages a
            # savepoint changes in a sub-journal: by default a temporary file, created,
            # written page by page and deleted in every group commit (about 70 writes and
            # 4 file system calls for 8 turns). In memory it costs a few pages of RAM for the
            # length of one transaction; the store's queries sort little (their orders have
            # indexes), so temporary tables stay small too.
            db.execute("PRAGMA temp_store = MEMORY")
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            # SQLite's lower() folds ASCII only: a label "Ärger" would match no search, not
            # even "Ärger" (the needle is lowered in Python).
            db.create_function("py_lower", 1, _py_lower, deterministic=True)
            self._migrate(db)
            self._check_writable(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            if exc.sqlite_errorcode == sqlite3.SQLITE_NOTADB:
                raise UnusableStore(
                    f"{self.path} is not a SQLite database ({type(exc).__name__}: {exc})"
                ) from exc
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CORRUPT:  # or an extended code
                raise UnusableStore(self._damaged(exc)) from exc
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY:
                raise UnusableStore(self._read_only(exc)) from exc  # a state dir not writable
            if self._disk_full(exc):
                # Not UnusableStore: space may come free, and a restart then starts.
                raise StoreError(self._full(exc)) from exc
            raise
        except BaseException:
            db.close()
            raise
        self._db = db

    def _check_writable(self, db: sqlite3.Connection) -> None:
        """Refuse a connection SQLite opened read-only. It does so, saying nothing, when the
        -wal and -shm files are not writable by this user (the database itself is opened for
        writing first, `_refuse_links`): the gateway would serve, and fail every turn. A write
        lock held elsewhere (a backup) is no answer either way: the turns wait for it."""
        db.execute("PRAGMA busy_timeout = 0")
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY:  # or an extended code
                return
            raise UnusableStore(self._read_only(exc)) from exc
        finally:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _read_only(self, exc: BaseException) -> str:
        return (
            f"{self.path} cannot be written ({type(exc).__name__}: {exc}). Fix: give the user"
            f" running clawgate write access to it, its -wal and -shm files and {self.state_dir}"
            f" (`ls -la {self.state_dir}`); a tool run as another user, such as the sqlite3"
            " shell, may have left them."
        )

    def _disk_full(self, exc: sqlite3.DatabaseError) -> bool:
        """SQLite says "full" when the database cannot grow, but only "disk I/O error" when its
        -shm file cannot (SQLITE_IOERR_SHMSIZE, on a tmpfs for one): then the space left says."""
        code = exc.sqlite_errorcode & 0xFF
        if code == sqlite3.SQLITE_FULL:
            return True
        try:
            return code == sqlite3.SQLITE_IOERR and os.statvfs(self.state_dir).f_bavail == 0
        except OSError:
            return False

    def _full(self, exc: BaseException) -> str:
        return (
            f"{self.path} cannot be written: its file system is full ({type(exc).__name__}:"
            f" {exc}). Fix: free space there (`df -h {self.state_dir}`), or choose a state dir"
            " on another file system with --state-dir."
        )

    @staticmethod
    def _enter_wal(db: sqlite3.Connection) -> None:
        """Switch a new file to WAL mode. Two processes opening a fresh file at once both
        ask to; the switch needs the file to itself, and SQLite answers a clash at once with
        "database is locked" (no busy timeout: waiting could deadlock), so it is tried again
        within the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)  # on the store thread, before any job runs

    def _damaged(self, exc: sqlite3.Error) -> str:
        return (
            f"{self.path} is damaged ({type(exc).__name__}: {exc}). Fix: restore a"
            f" backup, or rescue what it holds with `sqlite3 {self.path} .recover`."
        )

    def _refuse_links(self) -> None:
        """Refuse a symlinked database, -wal or -shm file: whoever planted the link would choose
        the file SQLite writes the sessions to.

        The database is opened (and created when missing) with O_NOFOLLOW before SQLite opens
        it by name, so a link swapped in between would be followed. That window is left open:
        swapping needs write access to the state dir, which the gateway requires to be its
        own (gateway/statedir.py), and Python's sqlite3 cannot pass SQLITE_OPEN_NOFOLLOW.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        names = (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm")
        for path in (self.path.with_name(name) for name in names):
            if path.is_symlink():
                raise UnsafeStoreFile(
                    f"refusing to follow the symlink {path}: the session database must be a"
                    f" regular file. Fix: remove the link (`rm {path}`)."
                )
        fd = os.open(self.path, flags, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeStoreFile(
                    f"refusing to use {self.path}: it is not a regular file."
                    f" Fix: remove it (`rm {self.path}`)."
                )
        finally:
            os.close(fd)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        while (version := SessionStore._schema_version(db)) < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Read again under the write lock: another process opening the same file
                # may have migrated it since (a fresh file opened by two at once).
                if SessionStore._schema_version(db) == version:
                    MIGRATIONS[version](db)
                    db.execute(f"PRAGMA user_version = {version + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise UnusableStore(f"{DB_FILENAME} has schema {version}, newer than {SCHEMA_VERSION}")
        return version

    async def pragmas(self) -> dict[str, Any]:
        """The connection's effective settings (connection-scoped, so only it can tell)."""
        return await self._call(self._pragmas)

    def _pragmas(self) -> dict[str, Any]:
        db = self._conn()
        return {
            name: db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout",
                         "temp_store", "journal_size_limit", "user_version")
        }  # fmt: skip

    def _close(self) -> None:
        # The writes queued before the close were committed by `_run_group` before it ran.
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(self._lost or "session store is not open")
        return self._db

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a savepoint of the group transaction: all of it is committed, or none.
        The commit comes after the group's last job (`_run_group`)."""
        db = self._conn()
        if not self._group_open:
            if self._group_busy is not None:
                raise StoreError(self._group_busy)
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:  # or an extended code
                    self._group_busy = f"{type(exc).__name__}: {exc}"
                raise
            self._group_open = True
            self._group_started = time.perf_counter()
        elif not db.in_transaction:
            raise StoreError("the store's transaction was rolled back")
        self._job_wrote = True
        db.execute("SAVEPOINT job")
        try:
            result = fn(db)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK TO job")
                db.execute("RELEASE job")
            else:
                # SQLite rolled the whole transaction back, not only the savepoint.
                self._group_open = False
                self._group_lost = True
            raise
        db.execute("RELEASE job")
        return result

    bus = None  # no other process to hear from

    def turn_lock(
        self,
        key: str,
        *,
        while_waiting: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def turn_running_elsewhere(self, key: str) -> bool:
        return False

    # One process: the webhooks keep their calls in memory (gateway/http/hooks_wire.py).
    async def claim_hook_call(
        self, scope: str, run_id: str, session_key: str, ttl_ms: int, *, starting: bool = False
    ) -> tuple[str, str]:
        return run_id, session_key

    async def extend_hook_call(self, scope: str, run_id: str, keep_ms: int) -> bool:
        return True

    async def extend_hook_calls(
        self, claims: Sequence[tuple[str, str]], keep_ms: int
    ) -> Collection[str]:
        return [scope for scope, _ in claims]

    # ... and the WebSocket calls theirs (gateway/ws/state.py IdempotencyCache).
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
        return token, session_key, False

    async def end_call(
        self, scope: str, token: str, keep_ms: int, answer: str | None = None
    ) -> bool:
        return True

    async def call_answer(self, scope: str) -> str | None:
        return None

    async def call_going_on(self, scope: str) -> str | None:
        return None

    async def claimed_run_going_on(self, session_key: str) -> bool:
        return False

    async def release_hook_call(self, scope: str, run_id: str) -> None:
        return None

    # -- sessions ----------------------------------------------------------------------

    async def get(self, key: str) -> SessionRow | None:
        return await self._call(self._get, key)

    def _get(self, key: str) -> SessionRow | None:
        row = self._conn().execute(SQL_GET_SESSION, (key,)).fetchone()
        return _session_row(row) if row is not None else None

    async def create(
        self,
        key: str,
        agent_id: str,
        now: int,
        *,
        label: str | None = None,
        stateless: bool = False,
    ) -> tuple[SessionRow, bool]:
        """The row of `key`, created with a new session id if missing; `True` when created."""
        return await self._call(
            self._write, lambda db: self._create(db, key, agent_id, now, label, stateless)
        )

    async def get_or_create(
        self, key: str, agent_id: str, now: int, *, stateless: bool = False
    ) -> tuple[SessionRow, bool]:
        """`get`, then `create` if the key has no row, as one job: a turn on a new key pays
        one trip to the store thread, not two. `True` when created."""
        return await self._call(self._get_or_create, key, agent_id, now, stateless)

    def _get_or_create(
        self, key: str, agent_id: str, now: int, stateless: bool
    ) -> tuple[SessionRow, bool]:
        row = self._get(key)
        if row is not None:
            return row, False
        return self._write(lambda db: self._create(db, key, agent_id, now, None, stateless))

    @staticmethod
    def unsaved_row(key: str, agent_id: str, now: int) -> SessionRow:
        """A new session's row that no job has written: `append_turn` creates it in the turn's
        own transaction (a stateless request's fresh key pays one trip to the store, not two)."""
        return SessionRow(key, agent_id, uuid7(), None, now, now)

    async def is_stateless(self, key: str) -> bool | None:
        """Whether maintenance counts the key's session as stateless; None without a row."""
        return await self._call(self._is_stateless, key)

    def _is_stateless(self, key: str) -> bool | None:
        found = (
            self._conn().execute("SELECT stateless FROM sessions WHERE key = ?", (key,)).fetchone()
        )
        return None if found is None else bool(found[0])

    @staticmethod
    def _create(
        db: sqlite3.Connection,
        key: str,
        agent_id: str,
        now: int,
        label: str | None,
        stateless: bool = False,
    ) -> tuple[SessionRow, bool]:
        existing = db.execute(SQL_GET_SESSION, (key,)).fetchone()
        if existing is not None:
            return _session_row(existing), False
        sid = uuid7()
        db.execute(SQL_ADD_TRANSCRIPT, (sid, key, agent_id, now))
        row = db.execute(
            "INSERT INTO sessions (key, agent_id, session_id, label, created_at, updated_at,"
            f" stateless) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_SESSION_COLUMNS}",
            (key, agent_id, sid, label, now, now, int(stateless)),
        ).fetchone()
        return _session_row(row), True

    async def append_turn(self, turn: TurnRecord) -> SessionRow:
        """Commit one turn: user message, assistant message, row update, one transaction.

        The turn is durable when this returns (synchronous=FULL). Returns the updated row.
        """
        return await self._call(self._write, lambda db: self._append_turn(db, turn))

    @staticmethod
    def _append_turn(db: sqlite3.Connection, turn: TurnRecord) -> SessionRow:
        added = db.execute(
            SQL_ADD_TRANSCRIPT, (turn.session_id, turn.key, turn.agent_id, turn.user_timestamp)
        ).rowcount
        # A transcript this turn created has no messages yet (they need their transcript).
        last = 0 if added else db.execute(SQL_NEXT_SEQ, (turn.session_id,)).fetchone()[0]
        for seq, (message_id, *fields) in enumerate(turn_messages(turn), last + 1):
            db.execute(SQL_INSERT_MESSAGE, (message_id, turn.session_id, seq, *fields))
        row = db.execute(
            SQL_UPSERT_TURN,
            {
                "key": turn.key,
                "agent_id": turn.agent_id,
                "session_id": turn.session_id,
                "now": turn.assistant_timestamp,
                "created": turn.user_timestamp,
                "input": turn.input_tokens,
                "output": turn.output_tokens,
                "provider": turn.provider,
                "model": turn.model,
                "run_id": turn.run_id,
                "status": turn.status,
                "aborted": int(turn.aborted),
                "stateless": int(turn.stateless),
            },
        ).fetchone()
        return _session_row(row)

    async def list(
        self,
        *,
        limit: int = 100,
        agent_id: str | None = None,
        search: str | None = None,
        label: str | None = None,
        active_minutes: float | None = None,
        now: int | None = None,
        archived: bool | None = None,
    ) -> SessionPage:
        """Most recently updated first; `search` is a case-insensitive substring of key or
        label, `label` an exact label, `active_minutes` keeps rows updated since `now - m`,
        `archived` only the archived sessions (True), the others (False), or both (None)."""
        return await self._scan(
            self._list, limit, agent_id, search, label, active_minutes, now, archived
        )

    def _list(
        self,
        limit: int,
        agent_id: str | None,
        search: str | None,
        label: str | None,
        active_minutes: float | None,
        now: int | None,
        archived: bool | None = None,
    ) -> SessionPage:
        where: list[str] = []
        args: list[Any] = []
        if agent_id is not None:
            where.append("agent_id = ?")
            args.append(agent_id.lower())
        if search:
            # instr() rather than LIKE: no wildcard escaping of client text. The key first and
            # only labelled rows lowered: py_lower is a call into Python for each row it sees
            # (100,000 unlabelled sessions: 220 → 55 ms for a count and a page).
            where.append(
                "(instr(key, ?) > 0 OR (label IS NOT NULL AND instr(py_lower(label), ?) > 0))"
            )
            args += [search.lower(), search.lower()]
        if label is not None:
            where.append("label = ?")
            args.append(label)
        if active_minutes is not None:
            if now is None:
                raise ValueError("active_minutes needs now")
            where.append("updated_at >= ?")
            args.append(active_since(now, active_minutes))
        if archived is not None:
            where.append(f"archived_at IS {'NOT ' if archived else ''}NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        db = self._scan_conn()
        db.execute("BEGIN")  # the count and the page from one snapshot
        try:
            total = db.execute(f"SELECT COUNT(*) FROM sessions{clause}", args).fetchone()[0]
            # OpenClaw's order: the pinned first (the last pinned first), then the others by
            # their last update. Two pages, each in its index's order: the few pinned ones,
            # and the others without a sort of the whole table.
            pinned = " AND ".join([*where, "pinned_at IS NOT NULL"])
            rows = db.execute(
                # The pinned ones' index, not the agent's: that would read all its sessions.
                f"SELECT {_SESSION_COLUMNS} FROM sessions INDEXED BY sessions_pinned"
                f" WHERE {pinned} ORDER BY pinned_at DESC, key LIMIT ?",
                [*args, max(0, limit)],
            ).fetchall()
            others = " AND ".join([*where, "pinned_at IS NULL"])
            rows += db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {others}"
                " ORDER BY updated_at DESC, key LIMIT ?",
                [*args, max(0, limit - len(rows))],
            ).fetchall()
        finally:
            if db.in_transaction:  # SQLite ends it itself on some errors
                db.execute("ROLLBACK")  # a read: nothing to keep
        return SessionPage(tuple(_session_row(r) for r in rows), total)

    async def count(self) -> int:
        return await self._scan(self._count)

    def _count(self) -> int:
        return int(self._scan_conn().execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    async def usage_by_day(
        self, since: int, agent_id: str | None = None
    ) -> builtins.list[DailyUsage]:
        """Token totals of the assistant messages stored since `since` (Unix ms), by agent and
        UTC day, oldest day first. Transcripts that were deleted no longer count; archived
        ones (a reset) still do."""
        return await self._scan(self._usage_by_day, since, agent_id)

    def _usage_by_day(self, since: int, agent_id: str | None) -> builtins.list[DailyUsage]:
        # A scan of the messages in the window: there is no index on timestamps, and a
        # dashboard asks for this now and then, not once per turn.
        where = "m.role = 'assistant' AND m.usage IS NOT NULL AND m.timestamp >= ?"
        args: builtins.list[Any] = [since]
        if agent_id is not None:
            where += " AND t.agent_id = ?"
            args.append(agent_id.lower())
        rows = (
            self._scan_conn()
            .execute(
                "SELECT date(m.timestamp / 1000, 'unixepoch') AS day, t.agent_id,"
                # TOTAL, not SUM: SUM raises on a sum beyond 64 bits, TOTAL is a float.
                " TOTAL(json_extract(m.usage, '$.input')),"
                " TOTAL(json_extract(m.usage, '$.output')), COUNT(*)"
                " FROM messages m JOIN transcripts t ON t.session_id = m.session_id"
                f" WHERE {where} GROUP BY day, t.agent_id ORDER BY day, t.agent_id",
                args,
            )
            .fetchall()
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
        """The messages stored from `start` through `end` (Unix ms), by transcript, day (in
        the UTC offset `offset_ms`, or from each of `shifts`, `(at, offset)`, its own: a time
        zone's daylight saving changes) and model (`sessions.usage`). Transcripts that were
        deleted no longer count; archived ones (a reset) still do."""
        return await self._scan(
            self._usage_by_session, start, end, offset_ms, tuple(shifts), agent_id, key
        )

    def _usage_by_session(
        self,
        start: int,
        end: int,
        offset_ms: int,
        shifts: Sequence[tuple[int, int]],
        agent_id: str | None,
        key: str | None,
    ) -> builtins.list[SessionUsage]:
        # A scan of the window's messages, as `usage_by_day`'s.
        where = "m.timestamp >= ? AND m.timestamp <= ?"
        args: builtins.list[Any] = [int(offset_ms), start, end]
        if agent_id is not None:
            where += " AND t.agent_id = ?"
            args.append(agent_id.lower())
        if key is not None:
            where += " AND t.key = ?"
            args.append(key)
        columns = SESSION_USAGE_COLUMNS.format(
            offset=usage_offset("?", shifts),
            # TOTAL, not SUM: SUM raises on a sum beyond 64 bits, TOTAL is a float.
            inp="TOTAL(json_extract(m.usage, '$.input'))",
            out="TOTAL(json_extract(m.usage, '$.output'))",
            int="",
            true="= 1",
        )
        rows = (
            self._scan_conn()
            .execute(
                SESSION_USAGE_LABELLED.format(
                    rows=f"SELECT {columns} FROM messages m JOIN transcripts t"
                    f" ON t.session_id = m.session_id WHERE {where}{SESSION_USAGE_GROUP}"
                ),
                args,
            )
            .fetchall()
        )
        return [_session_usage(row) for row in rows]

    async def usage_points(self, session_id: str, limit: int) -> builtins.list[UsagePoint]:
        """The tokens of a transcript's newest `limit` assistant messages that have usage,
        oldest first (`sessions.usage.timeseries`)."""
        return await self._scan(self._usage_points, session_id, limit)

    def _usage_points(self, session_id: str, limit: int) -> builtins.list[UsagePoint]:
        rows = (
            self._scan_conn()
            .execute(SQL_USAGE_POINTS.replace("$1", "?").replace("$2", "?"), (session_id, limit))
            .fetchall()
        )
        return [_usage_point(row) for row in reversed(rows)]

    async def patch_label(
        self, key: str, agent_id: str, label: str | None, now: int, *, session_id: str | None = None
    ) -> SessionRow:
        """Set or clear the label; an unknown key gets a new empty session (upsert). With
        `session_id`, only on that session: SessionChanged when the key holds none (a reset
        or a delete came between the caller's read and this write)."""
        return await self._call(
            self._write, lambda db: self._patch_label(db, key, agent_id, label, now, session_id)
        )

    @classmethod
    def _patch_label(
        cls,
        db: sqlite3.Connection,
        key: str,
        agent_id: str,
        label: str | None,
        now: int,
        session_id: str | None,
    ) -> SessionRow:
        if session_id is not None:
            _still_session(db, key, session_id)
        row, created = cls._create(db, key, agent_id, now, label)
        if created:
            return row
        # A label is a name someone gave the session: it is no longer a stateless one.
        updated = db.execute(
            "UPDATE sessions SET label = ?, updated_at = ?, stateless = 0 WHERE key = ?"
            f" RETURNING {_SESSION_COLUMNS}",
            (label, now, key),
        ).fetchone()
        return _session_row(updated)

    async def set_archived(
        self, key: str, archived: bool, now: int, *, session_id: str | None = None
    ) -> SessionRow | None:
        """Archive the session (`archived_at` kept when it already is, reason "manual") or
        restore it; None when the key holds no session. With `session_id`, only that
        session: SessionChanged when the key holds another."""
        return await self._call(
            self._write, lambda db: self._set_archived(db, key, archived, now, session_id)
        )

    @staticmethod
    def _set_archived(
        db: sqlite3.Connection, key: str, archived: bool, now: int, session_id: str | None
    ) -> SessionRow | None:
        if (
            session_id is not None
            and db.execute("SELECT 1 FROM sessions WHERE key = ?", (key,)).fetchone()
        ):
            _still_session(db, key, session_id)
        if archived:
            sql = (
                "UPDATE sessions SET archived_at = COALESCE(archived_at, ?),"
                " archive_reason = COALESCE(archive_reason, 'manual'), updated_at = ?,"
                f" pinned_at = NULL WHERE key = ? RETURNING {_SESSION_COLUMNS}"
            )
            args: tuple[Any, ...] = (now, now, key)
        else:
            sql = (
                "UPDATE sessions SET archived_at = NULL, archive_reason = NULL, updated_at = ?"
                f" WHERE key = ? RETURNING {_SESSION_COLUMNS}"
            )
            args = (now, key)
        row = db.execute(sql, args).fetchone()
        return _session_row(row) if row is not None else None

    async def set_pinned(
        self, key: str, agent_id: str, pinned: bool, now: int, *, session_id: str | None = None
    ) -> SessionRow:
        """Pin the session (`pinned_at` kept when it already is) or unpin it; an unknown key
        gets a new empty session, as a label does. An archived one is not pinned
        (SessionArchivedPin), checked in the write; `session_id` as `patch_label`'s."""
        return await self._call(
            self._write, lambda db: self._set_pinned(db, key, agent_id, pinned, now, session_id)
        )

    @classmethod
    def _set_pinned(
        cls,
        db: sqlite3.Connection,
        key: str,
        agent_id: str,
        pinned: bool,
        now: int,
        session_id: str | None,
    ) -> SessionRow:
        if session_id is not None:
            _still_session(db, key, session_id)
        row, _ = cls._create(db, key, agent_id, now, None)
        if pinned and row.archived_at is not None:
            raise SessionArchivedPin(key)
        updated = db.execute(
            "UPDATE sessions SET pinned_at = CASE WHEN ? THEN COALESCE(pinned_at, ?) END"
            f" WHERE key = ? RETURNING {_SESSION_COLUMNS}",
            (pinned, now, key),
        ).fetchone()
        return _session_row(updated)

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
        """`patch_label`, `set_archived`, `set_pinned` (those given, in that order) in one
        transaction: a refusal of one (SessionChanged, SessionArchivedPin) leaves nothing of
        the others written. None when the archive found no session."""

        def patch(db: sqlite3.Connection) -> SessionRow | None:
            row = None
            if label is not None:
                row = self._patch_label(db, key, agent_id, label[0], now, session_id)
            if archived is not None:
                row = self._set_archived(db, key, archived, now, session_id)
                if row is None:
                    return None
            if pinned is not None:
                row = self._set_pinned(db, key, agent_id, pinned, now, session_id)
            return row

        return await self._call(self._write, patch)

    async def reset(self, key: str, agent_id: str, now: int) -> SessionRow:
        """New session id, counters zeroed, label kept; the old transcript stays, archived.

        An unknown key gets a new empty session.
        """
        return await self._call(self._write, lambda db: self._reset(db, key, agent_id, now))

    @classmethod
    def _reset(cls, db: sqlite3.Connection, key: str, agent_id: str, now: int) -> SessionRow:
        row, created = cls._create(db, key, agent_id, now, None)
        if created:
            return row
        db.execute(
            "UPDATE transcripts SET archived_at = ? WHERE session_id = ? AND archived_at IS NULL",
            (now, row.session_id),
        )
        sid = uuid7()
        db.execute(SQL_ADD_TRANSCRIPT, (sid, key, row.agent_id, now))
        updated = db.execute(
            "UPDATE sessions SET session_id = ?, updated_at = ?, input_tokens = 0,"
            " output_tokens = 0, total_tokens = 0, last_run_id = NULL, last_status = NULL,"
            f" aborted_last_run = 0 WHERE key = ? RETURNING {_SESSION_COLUMNS}",
            (sid, now, key),
        ).fetchone()
        return _session_row(updated)

    async def delete(self, key: str, now: int, *, delete_transcript: bool = True) -> bool:
        """Remove the row; with `delete_transcript` the messages of all its session ids too,
        else they stay, archived, until maintenance. False when the key did not exist."""
        return await self._call(
            self._write, lambda db: self._delete(db, key, now, delete_transcript)
        )

    @staticmethod
    def _delete(db: sqlite3.Connection, key: str, now: int, delete_transcript: bool) -> bool:
        existed = db.execute("DELETE FROM sessions WHERE key = ?", (key,)).rowcount > 0
        if delete_transcript:
            db.execute("DELETE FROM transcripts WHERE key = ?", (key,))
        else:
            db.execute(
                "UPDATE transcripts SET archived_at = ? WHERE key = ? AND archived_at IS NULL",
                (now, key),
            )
        return existed

    # -- transcripts -------------------------------------------------------------------

    async def history(
        self,
        session_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        max_chars: int = 0,
    ) -> History:
        """The last `limit` messages of a transcript (those before `before_seq`), oldest
        first, and the transcript's total count. With `max_chars`, only the newest of them
        whose stored contents hold that many characters together, and at least one: a caller
        that keeps a bounded part of each message reads a long transcript page by page."""
        return await self._call(self._history, session_id, limit, before_seq, max_chars)

    def _history(
        self, session_id: str, limit: int, before_seq: int | None, max_chars: int
    ) -> History:
        db = self._conn()
        total = db.execute(
            "SELECT COUNT(*) FROM messages WHERE session_id = ?", (session_id,)
        ).fetchone()[0]
        before = "" if before_seq is None else " AND seq < ?"
        args: tuple[Any, ...] = (session_id,) if before_seq is None else (session_id, before_seq)
        if max_chars <= 0:
            rows = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ?{before}"
                " ORDER BY seq DESC LIMIT ?",
                (*args, max(0, limit)),
            ).fetchall()
            return History(tuple(_message(r) for r in reversed(rows)), int(total))
        sizes = db.execute(
            f"SELECT seq, length(content) FROM messages WHERE session_id = ?{before}"
            " ORDER BY seq DESC LIMIT ?",
            (*args, max(0, limit)),
        ).fetchall()
        span = history_span(sizes, max_chars)
        if span is None:
            return History((), int(total))
        rows = db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ?"
            " AND seq BETWEEN ? AND ? ORDER BY seq",
            (session_id, *span),
        ).fetchall()
        return History(tuple(_message(r) for r in rows), int(total))

    async def recent_turns(self, session_id: str, user_turns: int) -> tuple[StoredMessage, ...]:
        """The messages of the last `user_turns` user turns (a user message and the messages
        after it), oldest first: the history a provider is given (§6.1). 0 → none."""
        if user_turns <= 0:
            return ()
        return await self._call(self._recent_turns, session_id, user_turns)

    async def replay(
        self, session_id: str, user_turns: int
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage | None]:
        """`recent_turns` and the transcript's last assistant message, in one job."""
        return await self._call(self._replay, session_id, user_turns)

    def _replay(
        self, session_id: str, user_turns: int
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage | None]:
        recent = self._recent_turns(session_id, user_turns) if user_turns > 0 else ()
        last = last_replayed_assistant(recent)
        if last is None:
            row = self._conn().execute(SQL_LAST_ASSISTANT, (session_id,)).fetchone()
            last = _message(row) if row is not None else None
        return recent, last

    async def messages_after(self, session_id: str, seq: int) -> tuple[StoredMessage, ...]:
        """The transcript's messages after `seq`, oldest first."""
        return await self._call(self._messages_after, session_id, seq)

    def _messages_after(self, session_id: str, seq: int) -> tuple[StoredMessage, ...]:
        rows = self._conn().execute(SQL_MESSAGES_AFTER, (session_id, seq)).fetchall()
        return tuple(_message(r) for r in rows)

    async def chain_to(self, session_id: str, run_id: str, user_turns: int = 0) -> TurnChain | None:
        """The conversation a turn answered, through its reply: its last `user_turns` user
        turns (0: all) from the last context start on, as `recent_turns` would have given
        it right after that turn. None: no turn of the run in the transcript."""
        return await self._call(self._chain_to, session_id, run_id, user_turns)

    def _chain_to(self, session_id: str, run_id: str, user_turns: int) -> TurnChain | None:
        db = self._conn()
        end, last = db.execute(SQL_TURN_END, (session_id, run_id, session_id)).fetchone()
        if end is None:
            return None
        skip = user_turns - 1 if user_turns > 0 else _ALL_TURNS
        rows = db.execute(SQL_CHAIN_TO, {"sid": session_id, "end": end, "skip": skip}).fetchall()
        return TurnChain(tuple(_message(r) for r in rows), followed=last != end)

    async def chain_bounds(self, session_id: str, run_id: str) -> tuple[int, int] | None:
        """The seqs `chain_to` reads (all turns) from and to: the last context start at or
        before the turn's reply (0: none), and the reply. None: no turn of the run."""
        return await self._call(self._chain_bounds, session_id, run_id)

    def _chain_bounds(self, session_id: str, run_id: str) -> tuple[int, int] | None:
        row = self._conn().execute(SQL_CHAIN_BOUNDS, {"sid": session_id, "run": run_id}).fetchone()
        return None if row[1] is None else (row[0], row[1])

    async def messages_in(
        self, session_id: str, low: int, high: int, descending: bool, limit: int
    ) -> tuple[StoredMessage, ...]:
        """Up to `limit` of the transcript's messages from seq `low` to `high`, oldest first
        (newest first when `descending`)."""
        return await self._call(self._messages_in, session_id, low, high, descending, limit)

    def _messages_in(
        self, session_id: str, low: int, high: int, descending: bool, limit: int
    ) -> tuple[StoredMessage, ...]:
        sql = SQL_MESSAGES_IN_DESC if descending else SQL_MESSAGES_IN
        rows = self._conn().execute(sql, (session_id, low, high, limit)).fetchall()
        return tuple(_message(r) for r in rows)

    async def turn_reply(self, session_id: str, low: int, high: int) -> StoredMessage | None:
        """The reply of the turn the message at seq `low` is of (`refused_turns`): the
        first message from `low` to `high` with a stop reason; None: none there."""
        return await self._call(self._turn_reply, session_id, low, high)

    def _turn_reply(self, session_id: str, low: int, high: int) -> StoredMessage | None:
        row = self._conn().execute(SQL_TURN_REPLY, (session_id, low, high)).fetchone()
        return _message(row) if row is not None else None

    async def next_assistant(self, session_id: str, low: int, high: int) -> StoredMessage | None:
        """The first assistant message from seq `low` to `high` (None: none there)."""
        return await self._call(self._next_assistant, session_id, low, high)

    def _next_assistant(self, session_id: str, low: int, high: int) -> StoredMessage | None:
        row = self._conn().execute(SQL_NEXT_ASSISTANT, (session_id, low, high)).fetchone()
        return _message(row) if row is not None else None

    async def last_assistant_in(self, session_id: str, low: int, high: int) -> int | None:
        """The seq of the last assistant message from seq `low` to `high` (None: none)."""
        return await self._call(self._last_assistant_in, session_id, low, high)

    def _last_assistant_in(self, session_id: str, low: int, high: int) -> int | None:
        row = self._conn().execute(SQL_LAST_ASSISTANT_IN, (session_id, low, high)).fetchone()
        return int(row[0]) if row is not None else None

    async def first_difference(
        self, session_id: str, low: int, high: int, shift: int
    ) -> int | None:
        """The seq of the first message from `low` to `high` not stored as the message
        `shift` seqs after it is (None: each is), no message built."""
        return await self._call(self._first_difference, session_id, low, high, shift)

    def _first_difference(self, session_id: str, low: int, high: int, shift: int) -> int | None:
        params = {"sid": session_id, "low": low, "high": high, "shift": shift}
        row = self._conn().execute(SQL_FIRST_DIFFERENCE, params).fetchone()
        return int(row[0]) if row is not None else None

    async def refused_run_end(self, session_id: str, low: int, high: int) -> int | None:
        """The seq of the last reply of the run of turns the upstream refused that begins
        at seq `low`, a turn's first message, and ends at or before `high` (its turns'
        messages are all of them up to that reply); None: the turn at `low` is not
        refused."""
        return await self._call(self._refused_run_end, session_id, low, high)

    def _refused_run_end(self, session_id: str, low: int, high: int) -> int | None:
        params = {"sid": session_id, "low": low, "high": high}
        seq = self._conn().execute(SQL_REFUSED_RUN_END, params).fetchone()[0]
        return int(seq) if seq is not None else None

    async def last_answer(self, session_id: str, low: int, high: int) -> int | None:
        """The seq of the last reply from `low` to `high` that the upstream did not refuse
        (None: none there)."""
        return await self._call(self._last_answer, session_id, low, high)

    def _last_answer(self, session_id: str, low: int, high: int) -> int | None:
        row = self._conn().execute(SQL_LAST_ANSWER, (session_id, low, high)).fetchone()
        return int(row[0]) if row is not None else None

    async def message_seq(self, session_id: str, message_id: str) -> int | None:
        """The seq of the transcript's message of this id (None: not one of its)."""
        return await self._call(self._message_seq, session_id, message_id)

    def _message_seq(self, session_id: str, message_id: str) -> int | None:
        row = self._conn().execute(SQL_MESSAGE_SEQ, (message_id, session_id)).fetchone()
        return int(row[0]) if row is not None else None

    async def messages_by_id(self, message_ids: Sequence[str]) -> tuple[StoredMessage, ...]:
        """The messages of these ids, in any transcript, in no order (an id of none: no
        message)."""
        return await self._call(self._messages_by_id, message_ids)

    def _messages_by_id(self, message_ids: Sequence[str]) -> tuple[StoredMessage, ...]:
        conn = self._conn()
        found: list[StoredMessage] = []
        for at in range(0, len(message_ids), MESSAGES_BY_ID_BATCH):
            batch = message_ids[at : at + MESSAGES_BY_ID_BATCH]
            sql = SQL_MESSAGES_BY_ID.format(
                columns=_MESSAGE_COLUMNS, marks=", ".join("?" * len(batch))
            )
            found.extend(_message(row) for row in conn.execute(sql, tuple(batch)))
        return tuple(found)

    def _recent_turns(self, session_id: str, user_turns: int) -> tuple[StoredMessage, ...]:
        rows = (
            self._conn()
            .execute(SQL_RECENT_TURNS, {"sid": session_id, "skip": user_turns - 1})
            .fetchall()
        )
        return tuple(_message(r) for r in rows)

    # -- responses (/v1/responses) -----------------------------------------------------

    async def put_response(self, response: StoredResponse) -> None:
        """Keep a response object (replacing one of the same id). A transcript deleted
        meanwhile fails the foreign key: StoreError."""
        await self._call(self._write, lambda db: self._put_response(db, response))

    @staticmethod
    def _put_response(db: sqlite3.Connection, response: StoredResponse) -> None:
        db.execute(
            "INSERT OR REPLACE INTO responses"
            " (id, session_id, key, agent_id, created_at, body, output_ids)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                response.id,
                response.session_id,
                response.key,
                response.agent_id,
                response.created_at,
                response.body,
                _dumps_ids(response.output_ids),
            ),
        )

    async def get_response(self, response_id: str) -> StoredResponse | None:
        return await self._call(self._get_response, response_id)

    def _get_response(self, response_id: str) -> StoredResponse | None:
        row = (
            self._conn()
            .execute(
                "SELECT id, session_id, key, agent_id, created_at, body FROM responses"
                " WHERE id = ?",
                (response_id,),
            )
            .fetchone()
        )
        return StoredResponse(*row) if row is not None else None

    async def response_place(self, response_id: str) -> ResponsePlace | None:
        """Where a stored response's turn lives, without reading its body; None if
        unknown."""
        return await self._call(self._response_place, response_id)

    def _response_place(self, response_id: str) -> ResponsePlace | None:
        row = self._conn().execute(SQL_RESPONSE_PLACE, (response_id,)).fetchone()
        return ResponsePlace(*row) if row is not None else None

    async def response_output_ids(self, response_id: str) -> ResponseOutputIds | None:
        """A stored response's output item ids, without reading its body (but for one stored
        before they were kept); None if unknown."""
        return await self._call(self._response_output_ids, response_id)

    def _response_output_ids(self, response_id: str) -> ResponseOutputIds | None:
        row = self._conn().execute(SQL_RESPONSE_OUTPUT_IDS, (response_id,)).fetchone()
        return response_output_ids(*row) if row is not None else None

    async def delete_response(self, response_id: str) -> bool:
        """Forget a response object (its turn stays in the transcript); False if unknown."""
        return await self._call(
            self._write,
            lambda db: (
                db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0
            ),
        )

    # -- maintenance -------------------------------------------------------------------

    async def used_bytes(self) -> int:
        """The bytes the store's pages hold: the file minus its free pages. Deleting frees
        pages that later writes reuse, so this, not the file's size, is what the byte limit
        of maintenance keeps down (the file stays at its high mark)."""
        return await self._call(self._used_bytes)

    def _used_bytes(self) -> int:
        db = self._conn()
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    async def prune(
        self,
        maintenance: MaintenanceConfig,
        now: int,
        protected_keys: Collection[str] = (),
        *,
        main_key: str = "main",
        limit: int = PRUNE_BATCH,
    ) -> builtins.list[SessionRow]:
        """One step of maintenance (agents-sessions.md §5), at most `limit` sessions.

        Candidates, in this order: rows not updated for `prune_after_ms`; stateless rows not
        updated for `stateless_ttl_ms`; the oldest beyond `max_entries`; then, when the store
        holds more than `max_disk_bytes`, archived transcripts (the longest archived first) and
        then the oldest sessions until their estimated size brings it down to
        `high_water_bytes` (`enforce` counts the pages again after deleting them and goes on
        while the store still holds more). Main sessions and `protected_keys` (active runs)
        never. `warn` only returns the sessions; `enforce` also deletes them with all their
        transcripts, those archived transcripts, and archived transcripts older than
        `prune_after_ms`.
        A full batch means more may remain: the caller calls again, so no single job holds
        the store thread for long.
        """
        candidates, archived = await self._call(
            self._prune, maintenance, now, frozenset(protected_keys), main_key, limit
        )
        # Archived transcripts past `pruneAfter` go `limit` at a time, each batch a job of
        # its own: a backlog of them (`pruneAfter` lowered, a gateway that was down) deleted
        # in one held the store thread, and every turn queued behind it, for seconds. After
        # a step that pruned sessions the caller must hear of them at once (it drops what it
        # keeps of them), so the backlog waits for a step that prunes none.
        cutoff = _sql_int(now - maintenance.prune_after_ms)
        while archived >= max(1, limit) and not candidates:
            archived = await self._call(
                self._write, lambda db: self._delete_archived(db, cutoff, max(1, limit))
            )
        return candidates

    def _prune(
        self,
        maintenance: MaintenanceConfig,
        now: int,
        protected: frozenset[str],
        main_key: str,
        limit: int,
    ) -> tuple[builtins.list[SessionRow], int]:
        """The sessions `prune` returns, and how many transcripts archived before
        `prune_after_ms` went (`limit` at most)."""
        db = self._conn()
        cutoff = _sql_int(now - maintenance.prune_after_ms)
        chosen: dict[str, SessionRow] = {}

        def choose(sql: str, args: tuple[Any, ...], wanted: Callable[[SessionRow], bool]) -> None:
            cursor = db.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions {sql}", args)
            try:
                for raw in cursor:
                    if len(chosen) >= limit:
                        return
                    row = _session_row(raw)
                    if row.key in chosen or row.key in protected or is_main_key(row.key, main_key):
                        continue
                    if not wanted(row):
                        return
                    chosen[row.key] = row
            finally:
                cursor.close()  # no statement may stay open across the write below

        def always(_: SessionRow) -> bool:
            return True

        # An archived session is put away, not stale (OpenClaw's maintenance keeps it): no
        # age or count prunes it, nor does it count toward `max_entries`; the byte limit does.
        # A pinned one is kept too, but counts toward `max_entries` (OpenClaw's).
        kept = "archived_at IS NULL AND pinned_at IS NULL"
        choose(f"WHERE updated_at < ? AND {kept} ORDER BY updated_at", (cutoff,), always)
        choose(
            f"WHERE stateless = 1 AND updated_at < ? AND {kept} ORDER BY updated_at",
            (_sql_int(now - maintenance.stateless_ttl_ms),),
            always,
        )
        total = int(
            db.execute("SELECT COUNT(*) FROM sessions WHERE archived_at IS NULL").fetchone()[0]
        )
        excess = total - len(chosen) - maintenance.max_entries

        def beyond_max_entries(_: SessionRow) -> bool:
            nonlocal excess
            excess -= 1
            return excess >= 0

        if excess > 0:
            choose(f"WHERE {kept} ORDER BY updated_at, key", (), beyond_max_entries)
        archived: builtins.list[str] = []

        def free_bytes(to_free: int) -> builtins.list[str]:
            """Choose archived transcripts (returned), then the oldest sessions (into
            `chosen`), until their estimated size reaches `to_free`."""
            found: builtins.list[str] = []
            # Archived transcripts go before any session, the longest archived first: they
            # are no session's history any more, and a main session's (never pruned) held
            # the store over its limit while every other session went. As many go as the
            # bytes to free take.
            cursor = db.execute(
                "SELECT session_id, key FROM transcripts WHERE archived_at IS NOT NULL"
                " ORDER BY archived_at"
            )
            try:
                for sid, key in cursor:
                    if to_free <= 0:
                        break
                    if key not in chosen and sid not in archived:  # else counted already
                        found.append(sid)
                        to_free -= self._transcript_bytes(db, sid)
            finally:
                cursor.close()

            def until_under_high_water(row: SessionRow) -> bool:
                nonlocal to_free
                if to_free <= 0:
                    return False
                # Every archived transcript is counted above: only the session's own is left.
                to_free -= self._transcript_bytes(db, row.session_id) + _SESSION_ROW_BYTES
                return True

            choose("ORDER BY updated_at, key", (), until_under_high_water)
            return found

        over_limit = bool(maintenance.max_disk_bytes) and (
            self._used_bytes() > maintenance.max_disk_bytes
        )
        if over_limit:
            to_free = self._used_bytes() - maintenance.high_water_bytes
            archived = free_bytes(to_free - sum(self._estimated_bytes(db, k) for k in chosen))
        candidates = list(chosen.values())
        if maintenance.mode != "enforce":
            return candidates, 0

        def enforce(db: sqlite3.Connection) -> int:
            self._enforce(db, candidates, archived)
            # The estimate is a guess at the pages a row takes (its text, its index entries,
            # how full its pages were): the limit is on the pages, so they are counted again
            # once the chosen rows are gone, and while the store still holds more than the
            # high water the next archived transcript or oldest session goes, up to `limit`.
            while over_limit and (left := self._used_bytes() - maintenance.high_water_bytes) > 0:
                before = len(chosen)
                more = free_bytes(left)
                added = list(chosen.values())[before:]
                if not more and not added:
                    break
                self._enforce(db, added, more)
                candidates.extend(added)
                archived.extend(more)
            return self._delete_archived(db, cutoff, max(1, limit))

        return candidates, self._write(enforce)

    @staticmethod
    def _estimated_bytes(db: sqlite3.Connection, key: str) -> int:
        """What deleting the key frees, roughly: its messages' and stored responses' text
        (a `/v1/responses` answer is kept in both) plus a fixed part per row for ids and index
        entries. Index lookups, no scan."""
        found = db.execute(
            "SELECT COALESCE(SUM(length(CAST(m.content AS BLOB))"
            " + COALESCE(length(CAST(m.meta AS BLOB)), 0)), 0), COUNT(m.id)"
            " FROM transcripts t JOIN messages m ON m.session_id = t.session_id"
            " WHERE t.key = ?",
            (key,),
        ).fetchone()
        responses = db.execute(
            "SELECT COALESCE(SUM(length(CAST(r.body AS BLOB))), 0), COUNT(r.id)"
            " FROM transcripts t JOIN responses r ON r.session_id = t.session_id"
            " WHERE t.key = ?",
            (key,),
        ).fetchone()
        rows = int(found[1]) + int(responses[1])
        return int(found[0]) + int(responses[0]) + rows * _MESSAGE_ROW_BYTES + _SESSION_ROW_BYTES

    @staticmethod
    def _transcript_bytes(db: sqlite3.Connection, session_id: str) -> int:
        """What deleting one transcript frees, roughly, as `_estimated_bytes` counts it; its
        own row about a message row's worth."""
        found = db.execute(
            "SELECT COALESCE(SUM(length(CAST(content AS BLOB))"
            " + COALESCE(length(CAST(meta AS BLOB)), 0)), 0), COUNT(*)"
            " FROM messages WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        responses = db.execute(
            "SELECT COALESCE(SUM(length(CAST(body AS BLOB))), 0), COUNT(*)"
            " FROM responses WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        rows = 1 + int(found[1]) + int(responses[1])
        return int(found[0]) + int(responses[0]) + rows * _MESSAGE_ROW_BYTES

    @staticmethod
    def _enforce(
        db: sqlite3.Connection, candidates: builtins.list[SessionRow], archived: builtins.list[str]
    ) -> None:
        for row in candidates:
            db.execute("DELETE FROM sessions WHERE key = ?", (row.key,))
            db.execute("DELETE FROM transcripts WHERE key = ?", (row.key,))
        for sid in archived:
            db.execute(
                "DELETE FROM transcripts WHERE session_id = ? AND archived_at IS NOT NULL", (sid,)
            )

    @staticmethod
    def _delete_archived(db: sqlite3.Connection, cutoff: int, limit: int) -> int:
        """Delete up to `limit` transcripts archived before `cutoff`, the oldest first; how
        many went."""
        deleted: int = db.execute(
            "DELETE FROM transcripts WHERE session_id IN (SELECT session_id FROM transcripts"
            " WHERE archived_at IS NOT NULL AND archived_at < ? ORDER BY archived_at LIMIT ?)",
            (cutoff, limit),
        ).rowcount
        return deleted
