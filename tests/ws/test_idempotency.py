"""The idempotency cache of `chat.send` and `agent` (ws-protocol.md §2.7) pins no run: an
ended run lives as long as the registry keeps it, within its byte budget, and no longer."""

from __future__ import annotations

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
