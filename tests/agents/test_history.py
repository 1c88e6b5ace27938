"""Replay windows kept between turns (agents/history.py): the cut, the cache's budget and
when a kept window is not used. `tests/agents/test_store.py::TestMessagesAfter` checks the cut
against the store's own, on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from agents.errors import UpstreamStatusError, stored_error
from agents.history import HistoryCache, SessionHistory, replayed, window_start
from agents.providers.base import ChatMessage
from agents.store import StoredMessage


def message(
    seq: int, role: str, text: str = "t", *, context_start: bool = False, **fields: Any
) -> StoredMessage:
    content = text if role == "user" else [{"type": "text", "text": text}]
    return StoredMessage(
        f"m{seq}", "sid", seq, role, content, 0, context_start=context_start, **fields
    )


def refused_turn(seq: int, run_id: str, status: int = 400) -> tuple[StoredMessage, ...]:
    """A turn (a tool result and a question) the upstream answered `status`, as stored."""
    error = stored_error(UpstreamStatusError(status))
    return (
        message(seq, "toolResult", "r", run_id=run_id, tool_call_id="c1"),
        message(seq + 1, "user", "bad", run_id=run_id),
        message(seq + 2, "assistant", "", run_id=run_id, stop_reason="error",
                error_message=error),
    )  # fmt: skip


def conversation(turns: int) -> tuple[StoredMessage, ...]:
    return tuple(
        message(seq, "user" if seq % 2 else "assistant", f"x{seq}")
        for seq in range(1, 2 * turns + 1)
    )


def history(turns: int, *, session_id: str = "sid", user_turns: int = 50) -> SessionHistory:
    return SessionHistory.of(session_id, user_turns, conversation(turns))


class TestWindowStart:
    def test_it_starts_at_the_nth_last_user_message(self) -> None:
        assert window_start(conversation(5), 2) == 6  # u4 a4 u5 a5

    def test_with_fewer_user_messages_it_starts_at_the_first_message(self) -> None:
        assert window_start(conversation(2), 5) == 0

    def test_a_later_context_start_wins(self) -> None:
        messages = (*conversation(3), message(7, "user", context_start=True),
                    message(8, "assistant"))  # fmt: skip
        assert window_start(messages, 3) == 6

    def test_a_context_start_just_after_the_nth_last_user_message_wins(self) -> None:
        messages = (*conversation(1), message(3, "user"), message(4, "user", context_start=True),
                    message(5, "assistant"))  # fmt: skip
        assert window_start(messages, 2) == 3  # not at u3, the 2nd last user message

    def test_an_earlier_context_start_does_not(self) -> None:
        messages = (message(1, "user", context_start=True), *conversation(3)[1:])
        assert window_start(messages, 2) == 2


class TestSessionHistory:
    def test_empty_replies_are_left_out_of_the_replay(self) -> None:
        kept = SessionHistory.of("sid", 5, (message(1, "user", "hi"), message(2, "assistant", "")))
        assert kept.messages == (ChatMessage("user", "hi"),)
        assert replayed(message(2, "assistant", "")) is None

    def test_extended_cuts_the_window_again(self) -> None:
        kept = SessionHistory.of("sid", 2, conversation(2))
        grown = kept.extended((message(5, "user", "new"), message(6, "assistant", "reply")))
        assert [m.seq for m in grown.stored] == [3, 4, 5, 6]
        assert [m.text for m in grown.messages] == ["x3", "x4", "new", "reply"]
        assert grown.last_seq == 6 and grown.last_assistant() == grown.stored[-1]

    def test_nothing_added_is_the_same_history(self) -> None:
        kept = history(3)
        assert kept.extended(()) is kept

    def test_an_empty_history_ends_at_seq_0(self) -> None:
        assert SessionHistory.of("sid", 5, ()).last_seq == 0

    def test_an_empty_history_still_counts_against_the_budget(self) -> None:
        empty = SessionHistory.of("sid", 5, ())
        assert empty.size > 0
        cache = HistoryCache(max_bytes=2 * empty.size)
        for key in "abc":
            cache.put(key, empty)
        assert len(cache) == 2


class TestARefusedTurn:
    """A turn the upstream refused as a bad request is stored but not replayed."""

    def test_its_messages_are_left_out_of_the_replay(self) -> None:
        stored = (*conversation(1), *refused_turn(3, "r2"), message(6, "user", "next"))
        kept = SessionHistory.of("sid", 5, stored)
        assert [m.text for m in kept.messages] == ["x1", "x2", "next"]
        assert kept.stored == stored and kept.last_seq == 6
        assert kept.last_assistant() == stored[1]

    def test_extended_by_one_leaves_it_out_and_cuts_the_window_as_the_store(self) -> None:
        kept = SessionHistory.of("sid", 2, conversation(2))
        grown = kept.extended(refused_turn(5, "r3")).extended(
            (message(8, "user", "new"), message(9, "assistant", "reply"))
        )
        # The store's window: from the 2nd last user message of a turn not refused.
        assert [m.seq for m in grown.stored] == [3, 4, 5, 6, 7, 8, 9]
        assert [m.text for m in grown.messages] == ["x3", "x4", "new", "reply"]
        assert grown.kept == SessionHistory.of("sid", 2, grown.stored).kept
        assert grown.before(grown.stored[-1]) == grown.stored[-2]

    @pytest.mark.parametrize("status", [400, 413, 422])
    def test_refused_as_a_bad_request(self, status: int) -> None:
        assert refused_turn(1, "r1", status)[-1].refused

    @pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 502, 503])
    def test_a_turn_that_failed_otherwise_is_replayed(self, status: int) -> None:
        stored = (*conversation(1), *refused_turn(3, "r2", status))
        assert not stored[-1].refused
        assert [m.text for m in SessionHistory.of("sid", 5, stored).messages] == [
            "x1", "x2", "r", "bad",
        ]  # fmt: skip


class TestHistoryCache:
    def test_a_kept_history_is_given_for_its_transcript_and_limit_only(self) -> None:
        cache = HistoryCache()
        cache.put("k", history(2))
        assert cache.get("k", "sid", 50) is not None
        assert cache.get("k", "sid", 20) is None  # the limit was reloaded
        assert len(cache) == 0 and cache.bytes == 0  # and the stale one is gone
        cache.put("k", history(2))
        assert cache.get("k", "other-sid", 50) is None  # reset or deleted
        assert len(cache) == 0

    def test_the_least_recently_used_go_first_when_over_budget(self) -> None:
        size = history(4).size
        cache = HistoryCache(max_bytes=3 * size)
        for key in "abc":
            cache.put(key, history(4))
        assert cache.get("a", "sid", 50) is not None  # a is now the most recent
        cache.put("d", history(4))
        assert cache.get("b", "sid", 50) is None
        assert all(cache.get(key, "sid", 50) is not None for key in "acd")
        assert cache.bytes == 3 * size

    def test_a_history_larger_than_the_budget_is_not_kept(self) -> None:
        cache = HistoryCache(max_bytes=history(1).size)
        cache.put("k", history(1))
        cache.put("k", history(10))
        assert len(cache) == 0 and cache.bytes == 0

    def test_putting_again_replaces_and_counts_once(self) -> None:
        cache = HistoryCache()
        cache.put("k", history(2))
        cache.put("k", history(3))
        assert len(cache) == 1 and cache.bytes == history(3).size
