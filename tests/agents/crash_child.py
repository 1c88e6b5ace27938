"""Runs echo turns on a real store until it is killed: the subject of test_crash.py.

Usage: python -m tests.agents.crash_child <state dir>

Keeps 20 turns in flight, on sessions of their own and on 4 shared ones; prints
`START <run id>` on submit and `END <run id> <status>` once the run has ended (so its turn
is committed).
"""

from __future__ import annotations

import asyncio
import itertools
import sys

from agents.config import AgentConfig, AgentsConfig, ModelRef
from agents.providers.pool import ProviderPool
from agents.registry import SessionRegistry
from agents.runs import AgentRun, TurnRequest
from agents.store import SessionStore

IN_FLIGHT = 20


async def main(state_dir: str) -> None:
    store = SessionStore(state_dir)
    await store.open()
    # delayMs keeps several turns streaming at any moment, so the kill lands mid-run.
    agent = AgentConfig("main", (ModelRef("echo", "echo"),), params={"delayMs": 2})
    registry = SessionRegistry(
        AgentsConfig(agents=(agent,), max_concurrent=8), store, ProviderPool()
    )
    counter = itertools.count(1)
    watchers: set[asyncio.Task[None]] = set()

    def submit() -> None:
        n = next(counter)
        key = f"agent:main:solo-{n}" if n % 2 else f"agent:main:shared-{n % 4}"
        text = f"turn {n}" + " word" * (n % 7)
        run = registry.submit(TurnRequest("main", key, f"run-{n}", text))
        print(f"START {run.id}", flush=True)
        task = asyncio.create_task(watch(run))
        watchers.add(task)
        task.add_done_callback(watchers.discard)

    async def watch(run: AgentRun) -> None:
        outcome = await run.wait()
        print(f"END {run.id} {outcome.status}", flush=True)
        submit()

    for _ in range(IN_FLIGHT):
        submit()
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
