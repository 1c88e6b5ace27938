"""Hot reload from the file (config.md §7): watch it, read it again, apply it.

Applying (what takes effect at once, what needs a restart) is gateway/config/apply.py's, shared
with `config.patch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from gateway.appkeys import STATE
from gateway.config.apply import (
    ReloadResult,
    apply_config,
    changes_nothing,
    check_in_force,
    with_token,
)
from gateway.config.errors import FILE_LEVEL, ConfigError, ConfigIssue
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config
from gateway.config.patch import read_file
from gateway.state import GatewayState
from gateway.statedir import MAX_CONFIG_BYTES

log = structlog.get_logger()


async def reload_from_file(state: GatewayState) -> ReloadResult | None:
    """Read the config file again and apply it; None when nothing changed or it is invalid
    (then the running config stays and `state.reload_error` holds the issue lines).

    The file is read and checked in a thread: json5's parser reads some 100-300 KB a second,
    and a config with long system prompts would hold up every client while it ran on the loop.
    """
    if state.loader is None:
        return None
    async with state.config_lock:
        failing = state.reload_error is not None
        try:
            new = await asyncio.to_thread(_load, state.loader, state.config)
            check_in_force(state.config, new)
        except ConfigError as exc:
            state.reload_error = [issue.line() for issue in exc.issues]
            tell = log.error if state.tells_reloads else log.debug
            tell("config_reload_failed", path=exc.location, issues=state.reload_error)
            for listener in list(state.reload_failure_listeners):
                listener(state.reload_error)
            return None
        # The same file is ignored, unless a secret read from elsewhere changed with it
        # (--token-file, the state dir's gateway.token, store.passwordFile): a rotation is
        # that file and SIGHUP.
        same_file = new.source.hash is not None and new.source.hash == state.config.source.hash
        if failing:
            # The error was the last word in the log; a fix that changes nothing in force (the
            # edit undone) would leave it there.
            tell = log.info if state.tells_reloads else log.debug
            tell("config_reload_recovered", path=str(state.loader.config_path))
        if same_file and changes_nothing(state.config, new):
            state.reload_error = None
            return None
        return apply_config(state, new)


def _load(loader: ConfigLoader, running: Config) -> Config:
    new = loader.load()
    if running.source.exists and not new.source.exists:
        # Gone from the default path (deleted, moved aside for an edit): the embedded default
        # (config.md §1) would replace the token every client holds, and the agents, at once.
        path = new.source.path
        message = (
            f"config file not found: {path} (the running config stays; the embedded default"
            " is used only at startup)"
        )
        raise ConfigError(str(path), [ConfigIssue(FILE_LEVEL, message)])
    return with_token(new)


_Signature = tuple[int, int, int, bytes]
_UNSEEN: _Signature = (-1, -1, -1, b"")  # a signature no file has


def _signature(path: Path) -> _Signature | None:
    """The file's mtime, size and inode, and a hash of its bytes: a rewrite in place to the
    same size within one tick of the file system's clock (a coarse one, some milliseconds, or
    a whole second on some) keeps the first three, and one just after a reload read the file
    would wait for the next edit. Reading a config (at most MAX_CONFIG_BYTES, from the page
    cache) once a poll costs well under a millisecond; done in a thread all the same."""
    try:
        info = path.stat()
    except OSError:
        return None
    digest = b""
    # Only a regular file is opened (the loader refuses the rest and says why): a device named
    # by mistake is not opened once a second. O_NONBLOCK: should a FIFO take the file's place
    # meanwhile, its open would wait (and hold this thread) until some writer came.
    if stat.S_ISREG(info.st_mode):
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as file:
                digest = hashlib.sha256(file.read(MAX_CONFIG_BYTES + 1)).digest()
    return (info.st_mtime_ns, info.st_size, info.st_ino, digest)


async def watch_config(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: poll the config file (mtime, size, inode, bytes) and reload after a quiet
    spell.

    Polling, not inotify: one stat a second costs nothing and needs no extra dependency, and it
    also sees an editor's replace-by-rename and a file created at the default path later.
    """
    state = app[STATE]
    task = None
    if state.loader is not None:
        # Also with mode "off": a reload may turn it on (gateway.reload.* is hot).
        task = asyncio.create_task(_watch(state, state.loader.config_path), name="config-watch")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _watching(state: GatewayState) -> bool:
    return state.config.gateway.reload_mode != "off"


def _changed_since_loaded(path: Path, running: Config) -> bool:
    """Whether the file is no longer the one `running` was read from."""
    current = read_file(path, running.state_dir)
    return (current.exists, current.hash) != (running.source.exists, running.source.hash)


async def _watch(state: GatewayState, path: Path) -> None:
    poll = state.options.config_poll_seconds
    last = await asyncio.to_thread(_signature, path)
    was_watching = _watching(state)
    # The file was read before the app started (the store opens first, a PostgreSQL migration
    # may wait for its lock): an edit saved meanwhile is taken up by the first look.
    if was_watching and await asyncio.to_thread(_changed_since_loaded, path, state.config):
        last = _UNSEEN
    while True:
        await asyncio.sleep(poll)
        if not _watching(state):
            was_watching = False  # the file is not looked at; a change meanwhile is SIGHUP's
            continue
        current = await asyncio.to_thread(_signature, path)
        if not was_watching:  # just turned on, by a reload that read the file as it is now
            was_watching, last = True, current
            continue
        if current == last:
            continue
        # Editors write in several steps: wait until the file has been quiet for debounceMs.
        while True:
            last = current
            await asyncio.sleep(state.config.gateway.reload_debounce_ms / 1000)
            current = await asyncio.to_thread(_signature, path)
            if current == last:
                break
        if not _watching(state):
            continue
        try:
            await reload_from_file(state)
        except Exception:
            # A bug in applying must not stop watching; the running config stays.
            log.exception("config_reload_crashed")
