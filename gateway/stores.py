"""The session store the config names: SQLite in the state dir, or a shared PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from agents.registry import SessionRegistry
from agents.store import SessionStore
from agents.store_protocol import Store
from gateway.config.model import Config

# Turn locks beyond the run slots: a turn holds one for its length, and a reload that raises
# maxConcurrent should not wait for a restart to use them (more turns wait, as for a slot).
_SPARE_LOCK_CONNECTIONS = 4


def new_store(config: Config, *, on_commit: Callable[[float], None] | None = None) -> Store:
    """`on_commit` is told the seconds each write transaction took (the metrics)."""
    store = config.store
    if store.backend == "postgres" and store.url is not None:
        # Imported here: a gateway on SQLite never loads the PostgreSQL driver.
        from agents.store_postgres import DEFAULT_LOCK_WAITERS, PostgresSessionStore

        return PostgresSessionStore(
            store.url,
            password=store.password,
            pool_size=store.pool_size,
            # One for each running turn, and one for each that waits without a run slot.
            lock_pool_size=(
                config.agents.max_concurrent + _SPARE_LOCK_CONNECTIONS + DEFAULT_LOCK_WAITERS
            ),
            max_lock_waiters=DEFAULT_LOCK_WAITERS,
            on_commit=on_commit,
        )
    return SessionStore(config.state_dir, on_commit=on_commit)


def abort_here(registry: SessionRegistry, session_key: str, run_id: str | None) -> list[str]:
    """Another process's `chat.abort`, carried out on this one's runs (the bus calls it)."""
    if run_id is None:
        return registry.abort_session(session_key, "aborted")
    run = registry.run(run_id)
    if run is None or run.session_key != session_key or not run.abort("aborted"):
        return []
    return [run.id]
