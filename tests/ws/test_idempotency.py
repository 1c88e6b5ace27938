"""The idempotency cache of `chat.send` and `agent` (ws-protocol.md §2.7) pins no run: an
ended run lives as long as the registry keeps it, within its byte budget, and no longer. Keys
are forgotten after their time to live or past the newest `max_keys`."""

from __future__ import annotations

import asyncio
import gc

from agents.runs import AgentRun, TurnRequest
from gateway.ws.state import IdempotencyCache, IdempotentCall


def ended_run(run_id: str) -> AgentRun:
    request = TurnRequest("main", "agent:main:k", run_id, "x" * 1_000_000)
    return AgentRun(request, 0, lambda: 0, lambda event: None, lambda run: None)


class TestIdempotentCall:
    def test_holds_its_run_while_someone_else_does(self) -> None:
        run = ended_run("r1")
        call = IdempotentCall.of(run, {"runId": "r1"})
        assert call.run is run

    def test_does_not_keep_a_run_nobody_else_holds(self) -> None:
        cache = IdempotencyCache()
        cache.put("r1", IdempotentCall.of(ended_run("r1"), {"runId": "r1"}))
        gc.collect()
        call = cache.get("r1")
        assert call is not None
        assert (call.run, call.accepted) == (None, {"runId": "r1"})


def call(run_id: str) -> IdempotentCall:
    return IdempotentCall.of(ended_run(run_id), {"runId": run_id})


class TestForgetting:
    async def test_a_key_is_forgotten_after_its_time_to_live(self) -> None:
        cache = IdempotencyCache(ttl_seconds=0.2)
        cache.put("a", call("a"))
        assert cache.get("a") is not None
        await asyncio.sleep(0.25)
        assert cache.get("a") is None

    def test_past_max_keys_the_least_recently_put_is_forgotten(self) -> None:
        cache = IdempotencyCache(max_keys=2)
        for key in ("a", "b", "a", "c"):  # "a" put again is the newer one
            cache.put(key, call(key))
        assert [cache.get(key) is not None for key in ("a", "b", "c")] == [True, False, True]
