"""The config file's parse behind `config.get`, shared by every caller; and the running
config's redacted effective form, built once per loaded config (RunningConfigView).

json5's parser reads some 50-300 KB a second, so a config with long system prompts takes it
seconds, in a thread of the default executor that other work waits for too. Any client with
operator.read may ask, 64 calls at a time per connection and on as many connections. So one
parse answers every call on the same text: callers that come while it runs wait for it, and
its result answers later calls while the file holds that text.

Keyed by the text itself (by its hash), which each call reads again: a file's size, inode and
modification time can stay the same across an edit (within the filesystem's clock tick), its
bytes cannot. What the answer takes from elsewhere (the running config, the token file, a
secret file the config names, the environment) is not cached: the loader's checks after the
parse, some milliseconds, run on every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.loader import parse_text
from gateway.config.model import Config
from gateway.config.view import redact_parsed, redact_raw, redacted

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


@attrs.frozen
class ParsedFile:
    """What `config.get` shows of one text of the file, all of it a function of the text.

    Shared by the answers: read it, never change it (the loader gets a copy of `parsed`)."""

    parsed: dict[str, Any] | None  # None: refused before the schema (`issues` say why)
    issues: tuple[ConfigIssue, ...]
    raw: str | None  # the text, secrets redacted; None without a parse
    shown: dict[str, Any] | None  # `parsed`, secrets redacted


def parse_file(text: str) -> ParsedFile:
    try:
        parsed = parse_text(text, "")
    except ConfigError as exc:
        # Without a parse the scanner's fallback cannot find the secrets: show no text.
        return ParsedFile(None, tuple(exc.issues), None, None)
    return ParsedFile(parsed, (), redact_raw(text, parsed), redact_parsed(parsed))


@attrs.define
class ConfigFileCache:
    """The last text's parse, and the parses running."""

    parses: int = 0  # parses run
    _last: tuple[str, ParsedFile] | None = None  # (hash of the text, its parse)
    _running: dict[str, asyncio.Task[ParsedFile]] = attrs.field(factory=dict)

    async def parse(self, text: str, text_hash: str, spawn: Spawn) -> ParsedFile:
        """`parse_file(text)`; `text_hash` is the file's sha256, which names the text."""
        if self._last is not None and self._last[0] == text_hash:
            return self._last[1]
        task = self._running.get(text_hash)
        if task is None:
            task = spawn(self._run(text, text_hash), "config-parse")
            self._running[text_hash] = task
        # Shielded: a caller that goes away (its socket closed) leaves the parse to the
        # others, and to the next caller, instead of having it run again.
        return await asyncio.shield(task)

    async def _run(self, text: str, text_hash: str) -> ParsedFile:
        try:
            parsed = await asyncio.to_thread(parse_file, text)
            self.parses += 1
            self._last = (text_hash, parsed)
            return parsed
        finally:
            del self._running[text_hash]


@attrs.define
class RunningConfigView:
    """`redacted(config)` of the config in force, for `config.get` and `config.patch`.

    Each agent's effective entry repeats the default chain, so agents x fallbacks can make it
    MBs, built in a thread for a second or more. A Config never changes once loaded, so one
    build per Config (by identity: a reload or patch puts a new one in force) answers every
    call, and callers that come while it runs wait for it. Shared by the answers: read it,
    never change it."""

    builds: int = 0  # builds run
    _last: tuple[Config, dict[str, Any]] | None = None
    _running: tuple[Config, asyncio.Task[dict[str, Any]]] | None = None

    async def shown(self, config: Config, spawn: Spawn) -> dict[str, Any]:
        if self._last is not None and self._last[0] is config:
            return self._last[1]
        if self._running is not None and self._running[0] is config:
            task = self._running[1]
        else:
            task = spawn(self._build(config), "config-redact")
            self._running = (config, task)
        # Shielded: a caller that goes away leaves the build to the others.
        return await asyncio.shield(task)

    async def _build(self, config: Config) -> dict[str, Any]:
        try:
            shown = await asyncio.to_thread(redacted, config)
            self.builds += 1
            self._last = (config, shown)
            return shown
        finally:
            if self._running is not None and self._running[0] is config:
                self._running = None
