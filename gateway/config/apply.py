"""Applying a new config to the running gateway (config.md §7): hot reload and `config.patch`.

Hot paths (agents, models, auth, HTTP endpoints, CORS, reload, session, logging level) take
effect at once, in one swap of `GatewayState.config`; the listener's paths (port, bind,
customBindHost), `logging.format` and `store` keep their running values and are reported as
`restart required`. Runs already going keep the config they started with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import structlog

from gateway.auth import with_generated_token
from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.model import Config
from gateway.config.overrides import startup_guards
from gateway.config.view import effective_dict
from gateway.logs import set_level
from gateway.state import GatewayState
from gateway.statedir import UnsafeStateError

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


def in_force(running: Config, new: Config) -> Config:
    """`new` as it would run: the paths that need a restart keep their running values."""
    gateway = attrs.evolve(
        new.gateway,
        port=running.gateway.port,
        bind=running.gateway.bind,
        custom_bind_host=running.gateway.custom_bind_host,
    )
    logging_ = attrs.evolve(new.logging, format=running.logging.format)
    # The store in use is the one opened at startup: its config stays until a restart.
    return attrs.evolve(new, gateway=gateway, logging=logging_, store=running.store)


def with_token(config: Config) -> Config:
    """`config` with the state dir's token when it runs with that one (with_generated_token);
    a token file `run` would refuse is an issue, so the reload or patch fails as `run` would."""
    try:
        return with_generated_token(config)
    except UnsafeStateError as exc:
        issue = ConfigIssue("gateway.auth.token", str(exc))
        raise ConfigError(str(config.source.path), [issue]) from None


def check_in_force(running: Config, new: Config) -> None:
    """Raises ConfigError when `new`, as it would run, fails the startup guards (config.md
    §6.1). The loader checked them against the file's bind, which a restart would bring; until
    then the gateway listens where it does, and `auth.mode: "none"` beside a new `bind:
    "loopback"` would leave it without auth on 0.0.0.0."""
    issues = startup_guards(in_force(running, new).gateway)
    if issues:
        raise ConfigError(str(new.source.path), issues)


def changes_nothing(running: Config, new: Config) -> bool:
    """Whether applying `new` (its generated token resolved) would neither change anything
    nor report a path as needing a restart (a rotated `store.passwordFile` is one)."""
    return not changed_paths(effective_dict(running), effective_dict(new))


def apply_config(state: GatewayState, new: Config) -> ReloadResult:
    """Swap in `new`, except for the paths that need a restart; returns what changed."""
    old = state.config
    new = with_generated_token(new)
    changed = tuple(changed_paths(effective_dict(old), effective_dict(new)))
    restart = tuple(p for p in changed if p.startswith(RESTART_PATHS))
    state.config = in_force(old, new)
    gateway = state.config.gateway
    state.limiter.settings = gateway.auth.rate_limit
    hooks = state.config.hooks
    state.limiter.keep_known((gateway.auth.secret, hooks.token if hooks.enabled else None))
    if state.registry is not None:
        state.registry.configure(new.agents)
    set_level(new.logging.level)
    state.reload_error = None
    result = ReloadResult(changed, restart)
    # The workers of `--workers` each apply one edit (and a config.patch's worker has the
    # others reload it): the first tells it, the others at debug (state.tells_reloads).
    if changed:
        tell = log.info if state.tells_reloads else log.debug
        tell("config_reloaded", changed=list(result.applied))
    if restart:
        tell = log.warning if state.tells_reloads else log.debug
        tell("restart_required", paths=list(restart))
    for listener in list(state.config_listeners):
        listener(result)
    return result
