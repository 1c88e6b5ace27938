"""Applying a new config to the running gateway (config.md §7).

Hot paths (agents, models, auth, HTTP endpoints, CORS, reload, session, logging level) take
effect at once, in one swap of `GatewayState.config`; the listener's paths (port, bind,
customBindHost) and `logging.format` keep their running values and are reported as
`restart required`. Runs already going keep the config they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog
from aiohttp import web

from gateway.appkeys import STATE
from gateway.config import Config
from gateway.configfile import ConfigError, effective_dict
from gateway.logs import set_level
from gateway.state import GatewayState

log = structlog.get_logger()

RESTART_PATHS = (
    "gateway.port", "gateway.bind", "gateway.customBindHost", "logging.format", "store",
)  # fmt: skip


@attrs.frozen
class ReloadResult:
    changed: tuple[str, ...]  # every dotted path whose value changed
    restart_required: tuple[str, ...]  # the changed paths that were not applied

    @property
    def applied(self) -> tuple[str, ...]:
        return tuple(p for p in self.changed if p not in self.restart_required)


def changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths (arrays as a whole) where two effective-config dicts differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                paths.append(sub)
            else:
                paths.extend(changed_paths(old[key], new[key], sub))
        return paths
    return [] if old == new else [path]


def apply_config(state: GatewayState, new: Config) -> ReloadResult:
    """Swap in `new`, except for the paths that need a restart; returns what changed."""
    # Lazy: the CLI module imports the server, which imports this module.
    from gateway.cli import with_generated_token

    old = state.config
    new = with_generated_token(new)
    changed = tuple(changed_paths(effective_dict(old), effective_dict(new)))
    restart = tuple(p for p in changed if p.startswith(RESTART_PATHS))
    gateway = attrs.evolve(
        new.gateway,
        port=old.gateway.port,
        bind=old.gateway.bind,
        custom_bind_host=old.gateway.custom_bind_host,
    )
    logging_ = attrs.evolve(new.logging, format=old.logging.format)
    state.config = attrs.evolve(new, gateway=gateway, logging=logging_)
    state.limiter.settings = gateway.auth.rate_limit
    if state.registry is not None:
        state.registry.configure(new.agents)
    set_level(new.logging.level)
    state.reload_error = None
    result = ReloadResult(changed, restart)
    if changed:
        log.info("config_reloaded", changed=list(result.applied))
    if restart:
        log.warning("restart_required", paths=list(restart))
    for listener in list(state.config_listeners):
        listener(result)
    return result


def reload_from_file(state: GatewayState) -> ReloadResult | None:
    """Read the config file again and apply it; None when nothing changed or it is invalid
    (then the running config stays and `state.reload_error` holds the issue lines)."""
    if state.loader is None:
        return None
    try:
        new = state.loader.load()
    except ConfigError as exc:
        state.reload_error = [issue.line() for issue in exc.issues]
        log.error("config_reload_failed", path=exc.location, issues=state.reload_error)
        return None
    if new.source.hash is not None and new.source.hash == state.config.source.hash:
        state.reload_error = None
        return None
    return apply_config(state, new)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


async def watch_config(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: poll the config file (mtime, size, inode) and reload after a quiet spell.

    Polling, not inotify: one stat a second costs nothing and needs no extra dependency, and it
    also sees an editor's replace-by-rename and a file created at the default path later.
    """
    state = app[STATE]
    task = None
    if state.loader is not None and state.config.gateway.reload_mode != "off":
        task = asyncio.create_task(_watch(state, state.loader.config_path), name="config-watch")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _watch(state: GatewayState, path: Path) -> None:
    poll = state.options.config_poll_seconds
    last = _signature(path)
    while True:
        await asyncio.sleep(poll)
        current = _signature(path)
        if current == last:
            continue
        # Editors write in several steps: wait until the file has been quiet for debounceMs.
        while True:
            last = current
            await asyncio.sleep(state.config.gateway.reload_debounce_ms / 1000)
            current = _signature(path)
            if current == last:
                break
        if state.config.gateway.reload_mode == "off":
            continue
        try:
            reload_from_file(state)
        except Exception:
            # A bug in applying must not stop watching; the running config stays.
            log.exception("config_reload_crashed")
