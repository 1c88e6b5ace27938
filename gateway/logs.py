"""Logging: structlog configured once, by the CLI.

JSON lines when the log stream is not a terminal (journald, pipes, tests), the console renderer
on a terminal. Every rendered line also goes into an in-memory ring that `logs.tail` reads
(ws-protocol.md §8; we keep no log file, deviation 30). The level can change at run time
(hot reload of `logging.level`).
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import re
import struct
import sys
import uuid
from collections.abc import MutableMapping
from typing import Any, TextIO

import attrs
import structlog
from aiohttp.http_exceptions import HttpProcessingError

from gateway.jsonwire import wire

# Numeric levels as the stdlib defines them; "silent" drops everything.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "silent": logging.CRITICAL + 10,
}

RING_LINES = 5000  # what `logs.tail` can return at most (ws-protocol.md §8)
# 5,000 lines of a few hundred bytes are 1 to 2 MB. A line can carry what a client sent (a
# WebSocket method name, as long as a 25 MB frame), so the bytes are bounded too: beyond
# these the oldest lines go, and the newest line is kept whatever its size.
RING_BYTES = 8 * 1024 * 1024
# A value longer than this is cut (with how much was cut): a path, a frame id, a method name or
# a client's name is the client's, as long as a request line or a 25 MB frame allows, and a
# line journald splits (past 48 KiB) is no longer one JSON object. What we log ourselves
# (errors, routes, keys) is far shorter.
FIELD_CHARS = 2048


# The log the workers of `clawgate run --workers` share (supervisor.py, SHARED_LOG_ENV): each
# appends its lines to one file, so a `logs.tail` cursor one worker hands out is a place in
# what every worker reads (a client's polls reach any of them). Its offsets count the bytes
# ever logged, by all; what is older than the newest SHARED_KEEP bytes is punched out every
# SHARED_PUNCH_EVERY bytes a worker writes (its blocks freed, its offsets kept), so the file
# holds a few MB whatever it has counted.
SHARED_KEEP = RING_BYTES
SHARED_PUNCH_EVERY = 1024 * 1024
_FALLOC_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (fallocate(2))
_BLOCK = 4096


def _punch(fd: int, end: int) -> bool:
    """Free the blocks of `fd` before `end` (rounded down to a block); False if it can't."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
        fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        length = end // _BLOCK * _BLOCK
        return length <= 0 or fallocate(fd, _FALLOC_PUNCH_HOLE, 0, length) == 0
    except (AttributeError, OSError):
        return False


# The cursors the workers handed out, in a file beside the shared log (8 bytes each, appended
# as the log's lines are): a cursor no worker answered with is another log's (a restart's)
# even where it ends a line of this one, as LogRing.handed_out tells for one process. Each
# worker appends a cursor once, and what is older than the newest HANDED_KEEP bytes is freed
# as the log's start is: 64 Ki cursors, more than the line ends SHARED_KEEP holds.
_CURSOR = struct.Struct("<Q")
HANDED_KEEP = 64 * 1024 * _CURSOR.size
HANDED_PUNCH_EVERY = 64 * 1024


@attrs.define
class SharedLog:
    """The workers' shared log file; `fd` None once it failed (a write error, a file system
    that cannot free its start): `logs.tail` then reads this process's ring alone."""

    fd: int | None
    log_id: str  # one for all the workers: the cursors are places in one log
    handed_fd: int  # the cursors file (_CURSOR)
    written: int = 0  # bytes written here since the last punch
    handed_written: int = 0  # bytes of cursors written here since the last punch
    # The cursors any worker handed out, as far as the cursors file was read (`handed_read`),
    # and those of this worker; the older than the log's oldest line are let go.
    known: set[int] = attrs.Factory(set)
    handed_read: int = 0

    @classmethod
    def open(cls, path: str) -> SharedLog | None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError:
            return None
        try:
            handed_fd = os.open(f"{path}.cursors", flags, 0o600)
        except OSError:
            os.close(fd)
            return None
        try:
            st = os.fstat(fd)
            # A worker started again reads the cursors kept, not the zeros of the freed start.
            kept = max(0, os.fstat(handed_fd).st_size - HANDED_KEEP)
        except OSError:
            os.close(fd)
            os.close(handed_fd)
            return None
        start = kept // _CURSOR.size * _CURSOR.size
        return cls(fd, f"shared-{st.st_dev:x}-{st.st_ino:x}", handed_fd, handed_read=start)

    def write(self, data: bytes) -> None:
        fd = self.fd
        if fd is None:
            return
        try:
            os.write(fd, data)  # O_APPEND: one write, whole, after every other worker's
            self.written += len(data)
            if self.written >= SHARED_PUNCH_EVERY:
                self.written = 0
                end = os.fstat(fd).st_size - SHARED_KEEP
                if end > 0 and not _punch(fd, end):
                    raise OSError("cannot free the shared log's start")
        except OSError:
            self._fail()

    def _fail(self) -> None:
        fd, self.fd = self.fd, None  # never a failure of what was logging; the ring goes on
        if fd is not None:
            os.close(fd)
            os.close(self.handed_fd)

    def hand_out(self, cursor: int) -> None:
        """Tell every worker that `cursor` was answered with (`handed_out`)."""
        if self.fd is None or cursor in self.known:
            return
        try:
            os.write(self.handed_fd, _CURSOR.pack(cursor))  # O_APPEND, whole
            self.known.add(cursor)
            self.handed_written += _CURSOR.size
            if self.handed_written >= HANDED_PUNCH_EVERY:
                self.handed_written = 0
                end = os.fstat(self.handed_fd).st_size - HANDED_KEEP
                if end > 0 and not _punch(self.handed_fd, end):
                    raise OSError("cannot free the cursors file's start")
        except OSError:
            self._fail()

    def handed_out(self, cursor: int, oldest: int) -> bool:
        """Whether some worker answered with `cursor`; `oldest`, the log's oldest line's start."""
        if cursor in self.known:
            return True
        try:
            size = os.fstat(self.handed_fd).st_size
            whole = (size - self.handed_read) // _CURSOR.size * _CURSOR.size
            data = os.pread(self.handed_fd, whole, self.handed_read) if whole > 0 else b""
        except OSError:
            return False
        self.handed_read += len(data)
        # Zeros where the file's start was freed: no cursor (0 is the log's start, a place).
        self.known.update(c for (c,) in _CURSOR.iter_unpack(data) if c)
        if len(self.known) > HANDED_KEEP // _CURSOR.size:
            self.known = {c for c in self.known if c >= oldest}
        return cursor in self.known

    def read(self, cursor: int | None, window: int) -> SharedView | None:
        """The log's complete lines: those after `cursor` when it is a place in it, else the
        newest; at most `window` bytes of them (the newest)."""
        fd = self.fd
        if fd is None:
            return None
        try:
            return self._read(fd, cursor, window)
        except OSError:
            return None

    def _read(self, fd: int, cursor: int | None, window: int) -> SharedView:
        size = os.fstat(fd).st_size
        try:
            first_data = os.lseek(fd, 0, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole
            first_data = size
        # The bytes before the first kept block were freed: the first whole line after them.
        oldest = 0 if first_data == 0 else self._line_after(fd, first_data, size)
        # A place in the log: its start, or the end of one of its lines.
        place = (
            cursor is not None
            and oldest <= cursor <= size
            and (cursor == oldest or os.pread(fd, 1, cursor - 1) == b"\n")
        )
        start = cursor if place and cursor is not None else oldest
        low = max(start, size - window)
        data = os.pread(fd, size - low, low)
        if low > start and os.pread(fd, 1, low - 1) != b"\n":
            cut = data.find(b"\n") + 1 or len(data)  # mid-line: from the next one
            data, low = data[cut:], low + cut
        end = data.rfind(b"\n") + 1  # a line another worker is still writing: not yet
        lines: list[tuple[int, str]] = []
        at = low
        for raw in data[:end].split(b"\n")[:-1]:
            at += len(raw) + 1
            lines.append((at, raw.decode(errors="replace")))
        return SharedView(low + end, lines, place, low > start, oldest)

    @staticmethod
    def _line_after(fd: int, at: int, size: int) -> int:
        while at < size:
            chunk = os.pread(fd, 65536, at)
            found = chunk.find(b"\n")
            if found >= 0:
                return at + found + 1
            at += len(chunk)
        return size


@attrs.frozen
class SharedView:
    size: int  # after the newest complete line
    lines: list[tuple[int, str]]  # (byte offset after the line, line), from the cursor on
    cursor_is_a_place: bool  # the cursor given is the log's start or the end of a line of it
    cut: bool  # lines after the cursor (or the oldest) are older than the window read
    oldest: int  # where the oldest line kept begins


@attrs.define
class LogRing:
    """The last RING_LINES rendered lines, at most RING_BYTES of them besides the newest;
    `size` counts bytes ever logged (line + newline)."""

    lines: collections.deque[tuple[int, str]] = attrs.field(factory=collections.deque)
    size: int = 0  # byte offset after the newest line, as OpenClaw's log cursor
    start: int = 0  # byte offset where the oldest line kept begins
    # Which log a cursor is a place in: each process's log counts its bytes from 0, so an old
    # process's cursor can end a line of this one's too, and only the id tells them apart.
    log_id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    # The cursors `logs.tail` answered with that are still places in the ring (each a line's
    # end, so at most as many as its lines). A client that sends no `logId` (OpenClaw's CLI)
    # can still be told another log's cursor from ours: one we never handed out is not ours,
    # where any line end of this log would have passed for one.
    handed_out: set[int] = attrs.field(factory=set)
    shared: SharedLog | None = None  # a worker's of `--workers`: the log all of them write

    def append(self, line: str) -> str:
        """Keep `line`; returns it as kept, with any lone surrogate escaped."""
        try:
            data = line.encode()
        except UnicodeEncodeError:
            # A lone surrogate (a header's bytes that are not UTF-8, as aiohttp decodes
            # them) inside a rendered string: `\udcff`, as a JSON escape would write it.
            # Raising here would fail whatever was logging, a handler or a session worker.
            data = wire(line)
            line = data.decode()
        self.size += len(data) + 1
        if self.shared is not None:
            self.shared.write(data + b"\n")
        lines = self.lines
        lines.append((self.size, line))
        while len(lines) > RING_LINES or (self.size - self.start > RING_BYTES and len(lines) > 1):
            self.handed_out.discard(self.start)  # the only place left before the new start
            self.start = lines.popleft()[0]
        return line

    def hand_out(self, cursor: int) -> int:
        """`cursor` (this log's size when an answer was read) as an answer gives it."""
        self.handed_out.add(cursor)
        return cursor


@attrs.define
class _LevelFilter:
    """Drops events below `level`; a processor so the level can change without reconfiguring."""

    level: int = logging.INFO

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if LEVELS.get(method, logging.INFO) < self.level:
            raise structlog.DropEvent
        return event


# The console renderer's colours (SGR sequences): the only escapes in its lines, since a value's
# own control characters are shown escaped (_escape_controls).
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


class _RingLogger:
    """Writes each rendered line to the stream and keeps it in the ring; with `colours`, the
    stream's line is coloured and the ring's is not: `logs.tail` hands it to clients that print
    it as it is (`openclaw logs`), to a file, a pipe, or a terminal of their own colours."""

    def __init__(self, stream: TextIO, ring: LogRing, *, colours: bool = False) -> None:
        self._stream = stream
        self._ring = ring
        self._colours = colours

    def msg(self, line: str) -> None:
        if self._colours:
            self._ring.append(_COLOURS.sub("", line))
        else:
            line = self._ring.append(line)
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the gateway down

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


@attrs.frozen
class _WorkerIndex:
    index: int

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        event.setdefault("worker", self.index)
        return event


def _clip_long_strings(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    for key, value in event.items():
        if type(value) is str and len(value) > FIELD_CHARS:
            event[key] = f"{value[:FIELD_CHARS]}…(+{len(value) - FIELD_CHARS} chars)"
    return event


# C0 controls, DEL and C1 controls: a terminal acts on them (ESC and CSI start sequences that
# move the cursor, retitle the window or, with OSC 52, write the clipboard).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\x{ord(char):02x}"


def _escape_controls(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    """For the console format, which a terminal shows as it is: a path or a name a client
    chose must not act on that terminal. The traceback keeps its line breaks."""
    for key, value in event.items():
        if type(value) is str and _CONTROL.search(value):
            if key == "exception":
                event[key] = "\n".join(
                    _CONTROL.sub(_escape_control, part) for part in value.split("\n")
                )
            else:
                event[key] = _CONTROL.sub(_escape_control, value)
    return event


RING = LogRing()
_FILTER = _LevelFilter()


# What JSON leaves raw that is not text: DEL and C1 (journald takes a line holding one for
# binary, and `journalctl` shows `[blob data]` instead; a terminal acts on C1's CSI), and the
# line and paragraph separators (Python's `splitlines()` ends a line there). JSON's escape
# keeps the value as it was.
_NOT_TEXT = re.compile("[\x7f-\x9f\u2028\u2029]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _compact(obj: Any, **kwargs: Any) -> str:
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)
    if line.isascii() and "\x7f" not in line:  # most lines: a scan in C, no regex
        return line
    return _NOT_TEXT.sub(_json_escape, line)


# What OpenClaw's CLI (`openclaw logs`) reads of a line: `time` and `message` (with `level`,
# which ours has), else it shows the raw JSON. These two are added to the lines `logs.tail`
# answers, not to stderr: journald and whatever parses it keep the lines as they are.
# A value shown bare in the message, as logfmt does; any other is quoted as JSON.
_BARE = re.compile(r'[^\s"=\\\x00-\x1f\x7f-\x9f\u2028\u2029]+')
_NOT_IN_MESSAGE = frozenset({"event", "level", "ts", "exception"})


def for_openclaw(line: str) -> str:
    """`line` with `time` (its `ts`) and `message` (`event key=value …`, its traceback on
    the lines after) added, when it is one of our JSON lines; any other line as it is."""
    if not line.startswith("{"):
        return line  # the console format (a terminal)
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not (isinstance(entry.get("ts"), str) and isinstance(entry.get("event"), str)):
        return line
    # The CLI prints the message as it is, to a terminal: no control character in it acts.
    parts = [_CONTROL.sub(_escape_control, entry["event"])]
    for key, value in entry.items():
        if key in _NOT_IN_MESSAGE or value is None:
            continue
        if not (isinstance(value, str) and _BARE.fullmatch(value)):
            value = _compact(value)
        parts.append(f"{_CONTROL.sub(_escape_control, key)}={value}")
    message = " ".join(parts)
    if isinstance(entry.get("exception"), str):
        traceback = entry["exception"].split("\n")
        message += "".join("\n" + _CONTROL.sub(_escape_control, part) for part in traceback)
    entry.setdefault("time", entry["ts"])
    entry.setdefault("message", message)
    return _compact(entry)


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None, worker: int | None = None
) -> None:
    """Configure structlog and the stdlib root logger (aiohttp's own loggers) once; `worker`,
    a worker's index under `--workers`, goes in every line (the workers share one stderr)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(stream))
    colours = not use_json and _isatty(stream)
    set_level(level)
    renderers: list[Any] = (
        [structlog.processors.JSONRenderer(serializer=_compact)]
        if use_json
        else [_escape_controls, structlog.dev.ConsoleRenderer(colors=colours)]
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if worker is not None:
        shared.insert(0, _WorkerIndex(worker))
    structlog.configure(
        # Before the traceback is rendered: that one is ours and is kept whole.
        processors=[
            _FILTER,
            *shared,
            _clip_long_strings,
            structlog.processors.format_exc_info,
            *renderers,
        ],
        logger_factory=lambda *args: _RingLogger(stream, RING, colours=colours),
        # Not cached: the CLI configures again once the config (format, level) is known.
        cache_logger_on_first_use=False,
    )
    # aiohttp and asyncio log through the stdlib; render their records the same way.
    root = logging.getLogger()
    root.handlers[:] = [_StdlibBridge()]
    root.setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").disabled = True  # we log one canonical line ourselves


class _StdlibBridge(logging.Handler):
    """Re-emits stdlib log records (aiohttp, asyncio) through structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.name == "aiohttp.server":
            # A request aiohttp could not parse (it answers 400 itself): the client's
            # mistake, not a failure of ours, and any client can send one at will, so one
            # info line without a traceback, and only what was wrong (_bad_request_reason).
            reason = _bad_request_reason(exc)
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            structlog.get_logger().info(
                "http_bad_request", status=exc.code, reason=reason, remote=remote
            )
            return
        method = record.levelname.lower()
        if method not in ("debug", "info", "warning", "error", "critical"):
            method = "error"
        extra: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            extra["exc_info"] = record.exc_info
        getattr(structlog.get_logger(), method)(record.getMessage(), **extra)


# Where aiohttp's messages start quoting what the client sent: after a colon (`Got more than
# 8190 bytes when reading: b'<a header's first 100 bytes>'`, `Invalid HTTP header: b'…'`, the
# C parser's `desc:\n\n  b'…'`), or a repr in the pure-Python parser's `Bad status line
# 'GET /?token=… HTTP/1.1'`. A header's value may be a bearer token or a browser's cookies (every
# cookie of localhost, other local apps' sessions), and the log reaches `logs.tail`.
_QUOTED_BYTES = re.compile(r":\s*(?:b?'|$).*|\s+b?'.*")


def _bad_request_reason(exc: HttpProcessingError) -> str:
    reason = _QUOTED_BYTES.sub("", exc.message.split("\n", 1)[0]).rstrip(". ")
    return reason or type(exc).__name__


def set_level(level: str) -> None:
    _FILTER.level = LEVELS.get(level, logging.INFO)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
