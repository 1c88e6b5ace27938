"""The turns a store test commits: a TurnRecord of one user message and its reply."""

from __future__ import annotations

from typing import Any

from agents.store import SessionRow, TurnRecord

KEY = "agent:main:s1"


def turn(row: SessionRow, run_id: str = "r1", **fields: Any) -> TurnRecord:
    values: dict[str, Any] = {
        "key": row.key,
        "agent_id": row.agent_id,
        "session_id": row.session_id,
        "run_id": run_id,
        "user_text": "hello there",
        "user_timestamp": 1000,
        "assistant_text": "[turn 1] hello there",
        "assistant_timestamp": 1005,
        "input_tokens": 2,
        "output_tokens": 4,
        "stop_reason": "stop",
        "status": "done",
        "provider": "echo",
        "model": "echo",
        "api": "echo",
    }
    values.update(fields)
    return TurnRecord(**values)
