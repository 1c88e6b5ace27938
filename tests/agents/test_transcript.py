"""Client tools through a session, and the "no double history" rule (agents/transcript.py),
with a real registry, store and the echo provider."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from agents.events import RunEvent
from agents.providers.base import ChatMessage, ProviderRequest, ToolCall
from agents.registry import SessionRegistry
from agents.runs import RunOutcome, TurnRequest
from agents.transcript import (
    NO_RESULT,
    CutShort,
    TurnInputs,
    new_inputs,
    paired,
    replay_before,
    retries_left_out,
    same_message,
    unanswerable,
)
from tests.support.counting import CountedId
from tests.support.scripted import Harness, ScriptedProvider, make_config

KEY = "agent:main:chat"
TOOLS = {"tools": [{"type": "function", "function": {"name": "get_weather"}}]}
CALL = ToolCall("call_echo_1_0", "get_weather", '{"city":"Paris"}')


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str, *calls: ToolCall) -> ChatMessage:
    return ChatMessage("assistant", text, tool_calls=calls)


def result(call_id: str, text: str) -> ChatMessage:
    return ChatMessage("tool", text, tool_call_id=call_id)


class TestTheRule:
    def test_after_the_sessions_last_reply_is_new(self) -> None:
        sent = (user("u1"), assistant("a1"), user("u2"), assistant("a2"), user("u3"))
        assert new_inputs(assistant("a2"), sent) == TurnInputs((user("u3"),), False)

    def test_the_last_occurrence_counts(self) -> None:
        sent = (user("hi"), assistant("same"), user("hi"), assistant("same"), user("u3"))
        assert new_inputs(assistant("same"), sent).messages == (user("u3"),)

    def test_an_earlier_reply_of_the_same_text_is_not_the_sessions_last(self) -> None:
        regenerated = (user("u1"), assistant("OK"), user("u2"))
        assert new_inputs(assistant("OK"), regenerated, before_last=user("u2")) == TurnInputs(
            regenerated, True
        )
        asked_again = (user("u1"), assistant("OK"), user("u2"), assistant("OK"), user("u2"))
        assert new_inputs(assistant("OK"), asked_again, before_last=user("u2")) == TurnInputs(
            (user("u2"),), False
        )

    def test_the_replies_before_the_sessions_last_must_be_its_own(self) -> None:
        earlier = (assistant("a1"), assistant("a2"))
        sent = (user("u1"), assistant("a1"), user("u2"), assistant("a2"), user("u3"))
        edited = (user("u1"), assistant("a1!"), *sent[2:])
        window = (user("u2"), assistant(""), assistant("a2"), user("u3"))  # its own window
        continued = (*sent, assistant("a3"), user("u4"))
        assert new_inputs(assistant("a3"), continued, earlier=earlier) == TurnInputs(
            (user("u4"),), False
        )
        for diverged in (edited, (user("u1"), assistant("a1"), user("u3"))):
            changed = (*diverged, assistant("a3"), user("u4"))
            assert new_inputs(assistant("a3"), changed, earlier=earlier) == TurnInputs(
                changed, True
            )
        inputs = new_inputs(
            assistant("a3"), (*window, assistant("a3"), user("u4")), earlier=earlier
        )
        assert inputs == TurnInputs((user("u4"),), False)

    def test_without_assistant_messages_everything_is_new(self) -> None:
        sent = (user("u1"), user("u2"))
        assert new_inputs(assistant("a1"), sent) == TurnInputs(sent, False)
        assert new_inputs(None, sent) == TurnInputs(sent, False)

    def test_a_whole_conversation_without_assistant_messages_starts_it_again(self) -> None:
        sent = (user("u1 edited"),)
        assert new_inputs(assistant("a1"), sent, True) == TurnInputs(sent, True)
        assert new_inputs(None, sent, True) == TurnInputs(sent, False)

    def test_a_diverged_history_replaces_the_stored_one(self) -> None:
        sent = (user("u1"), assistant("edited"), user("u2"))
        assert new_inputs(assistant("a1"), sent) == TurnInputs(sent, True)
        assert new_inputs(None, sent) == TurnInputs(sent, True)

    def test_an_empty_reply_is_found_like_any_other_and_is_never_an_input(self) -> None:
        sent = (user("u1"), assistant(""), user("u2"))
        assert new_inputs(assistant(""), sent) == TurnInputs((user("u2"),), False)
        assert new_inputs(None, sent) == TurnInputs((user("u1"), user("u2")), True)

    def test_tool_calls_match_by_id_name_and_parsed_arguments(self) -> None:
        respaced = ToolCall(CALL.id, CALL.name, '{ "city": "Paris" }')
        assert same_message(assistant("", CALL), assistant("", respaced))
        other = ToolCall("call_2", CALL.name, CALL.arguments)
        assert not same_message(assistant("", CALL), assistant("", other))

    def test_text_is_compared_trimmed_and_reasoning_not_at_all(self) -> None:
        stored = ChatMessage("assistant", "answer", reasoning="thought")
        assert same_message(stored, assistant(" answer\n"))


class TestPaired:
    def test_an_unanswered_call_gets_a_result_before_the_next_message(self) -> None:
        context = (user("u1"), assistant("", CALL), user("never mind"))
        assert paired(context, ()) == (
            user("u1"),
            assistant("", CALL),
            ChatMessage("tool", NO_RESULT, tool_call_id=CALL.id, tool_name=CALL.name),
            user("never mind"),
        )

    def test_only_the_calls_without_a_result_get_one_after_those_that_have(self) -> None:
        other = ToolCall("call_2", "get_time", "{}")
        context = (user("u1"), assistant("", CALL, other), result("call_2", "noon"), user("u2"))
        assert paired(context, ()) == (
            user("u1"),
            assistant("", CALL, other),
            result("call_2", "noon"),
            ChatMessage("tool", NO_RESULT, tool_call_id=CALL.id, tool_name=CALL.name),
            user("u2"),
        )

    def test_answered_calls_and_plain_conversations_are_left_as_they_are(self) -> None:
        answered = (user("u1"), assistant("", CALL), result(CALL.id, "sunny"))
        assert paired(answered, ()) == answered
        plain = (user("u1"), assistant("a1"), user("u2"))
        assert paired(plain, ()) == plain

    def test_a_call_in_the_history_is_answered_by_the_turns_results(self) -> None:
        history = (user("u1"), assistant("", CALL))
        assert paired(history, (result(CALL.id, "sunny"),)) == (*history, result(CALL.id, "sunny"))

    def test_a_replayed_result_without_its_call_is_left_out(self) -> None:
        history = (result(CALL.id, "sunny"), assistant("a1"), user("u2"), assistant("a2"))
        assert paired(history, (user("u3"),)) == (
            assistant("a1"), user("u2"), assistant("a2"), user("u3")
        )  # fmt: skip

    def test_the_turns_own_messages_are_given_as_the_client_sent_them(self) -> None:
        sent = (result(CALL.id, "sunny"),)
        assert paired((), sent) == sent


class TestCost:
    def test_a_chat_resent_as_the_session_holds_it_splits_no_text(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each turn compares the window's replies and questions with the client's: equal
        texts are told apart without splitting them into words (a 50-turn chat of RAG
        prompts took 20 ms of the event loop that way), and the question is found in a RAG
        prompt as it is."""
        import agents.transcript

        squeezed: list[str] = []
        real = agents.transcript._squeezed
        monkeypatch.setattr(agents.transcript, "_squeezed", lambda t: squeezed.append(t) or real(t))
        doc = "a document " * 5000
        ours: list[ChatMessage] = []
        sent: list[ChatMessage] = []
        for n in range(50):
            ours += [user(f"{doc}<query>q{n}</query>\nq{n}"), assistant(f"reply {n} " * 500)]
            sent += [user(f"q{n}"), assistant(f"reply {n} " * 500)]
        inputs = new_inputs(ours[-1], (*sent, user("new")), True, ours[-2], tuple(ours[:-1]))
        assert inputs == TurnInputs((user("new"),), False)
        assert squeezed == []

    def test_the_sessions_reply_is_made_ready_for_comparing_once_however_many_are_sent(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The session's reply is looked for among every assistant message the client sends,
        which may be 500,000 in one request; a long reply squeezed for each of them would
        hold the event loop for minutes (0.1 ms each for one of 30 KB)."""
        import agents.transcript

        reply = assistant("w " * 15_000 + "w\n")
        squeezed: list[str] = []
        real = agents.transcript._squeezed
        monkeypatch.setattr(agents.transcript, "_squeezed", lambda t: squeezed.append(t) or real(t))
        sent = (user("q"), *(assistant("w x w") for _ in range(1000)), user("next"))
        assert new_inputs(reply, sent) == TurnInputs(sent, True)
        assert sum(text == reply.text for text in squeezed) <= 1

    def test_a_resent_question_is_found_within_the_sessions_in_one_pass(self) -> None:
        """The client's question is looked for within the session's (a RAG prompt): by a
        search linear in the texts. A search from the end goes back over every partial
        match, which for texts of one letter repeated is the product of their lengths: two
        of 400 KB held the event loop for 7 s, these two would for minutes (the test's
        timeout)."""
        question = "a" * 1_000_000 + "?" + "a" * 1_000_000
        ours = (user(question + "a" * 2_000_000), assistant("r1"))
        sent = (user(question), assistant("r1"), user("u2"))
        inputs = new_inputs(ours[-1], sent, True, ours[0], ours[:1])
        assert inputs == TurnInputs((user("u2"),), False)


def answered_in_reverse(calls: int) -> tuple[ChatMessage, ...]:
    """One reply of `calls` calls, then their results last first, ids their own objects."""
    call_ids = [CountedId(f"call_{n}") for n in range(calls)]
    reply = assistant("", *(ToolCall(i, "get_weather", "{}") for i in call_ids))
    results = (result(CountedId(str(i)), "sunny") for i in reversed(call_ids))
    return (user("u1"), reply, *results)


class TestToolResultCost:
    """A request may carry one reply of as many calls as its body holds (100,000 in 20 MiB),
    and their results in any order: each result finds its call without a look at the
    others, or pairing them would hold the event loop for minutes."""

    @pytest.mark.parametrize("check", [unanswerable, paired], ids=lambda f: f.__name__)
    def test_each_result_finds_its_call_in_a_few_comparisons(self, check: Any) -> None:
        counts = []
        for calls in (1000, 2000):
            sent = answered_in_reverse(calls)
            CountedId.reset()
            checked = check((), sent)
            counts.append(CountedId.comparisons)
            assert checked == (None if check is unanswerable else sent)
        assert counts[1] <= 2 * counts[0] + 10, counts  # twice the calls, twice the work

    def test_calls_that_share_an_id_are_answered_in_order_the_rest_after(self) -> None:
        paris, rome, time = (
            ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
            ToolCall("call_1", "get_forecast", '{"city":"Rome"}'),
            ToolCall("call_2", "get_time", "{}"),
        )
        reply = assistant("", paris, rome, time)
        sent = (user("u1"), reply, result("call_1", "sunny"), user("u2"))
        assert paired((), sent) == (
            user("u1"),
            reply,
            result("call_1", "sunny"),
            ChatMessage("tool", NO_RESULT, tool_call_id="call_1", tool_name="get_forecast"),
            ChatMessage("tool", NO_RESULT, tool_call_id="call_2", tool_name="get_time"),
            user("u2"),
        )
        twice = (user("u1"), reply, *(result(i, "x") for i in ("call_2", "call_1", "call_1")))
        assert unanswerable((), twice) is None
        assert unanswerable((), (*twice, result("call_1", "x"))) == result("call_1", "x")


class TestRetries:
    """A turn that got no reply (None in a replay), or part of one, asked again by the next
    one: given once."""

    def test_a_question_asked_again_after_no_reply_is_given_once(self) -> None:
        chats = (user("u1"), assistant("a1"), user("u2"), None, user("u2"), assistant("a2"))
        assert retries_left_out(chats) == (user("u1"), assistant("a1"), user("u2"), assistant("a2"))

    def test_every_failed_try_before_the_answered_one_is_left_out(self) -> None:
        chats = (user("u2"), None, user(" u2 "), None, user("u2"), assistant("a2"))
        assert retries_left_out(chats) == (user("u2"), assistant("a2"))

    def test_another_question_after_no_reply_keeps_both(self) -> None:
        chats = (user("u1"), None, user("u2"), assistant("a2"))
        assert retries_left_out(chats) == (user("u1"), user("u2"), assistant("a2"))

    def test_tool_results_sent_again_are_given_once(self) -> None:
        chats = (user("u1"), assistant("", CALL), result(CALL.id, "sunny"), None)
        again = (result(CALL.id, "sunny"),)
        assert replay_before(chats, again) == (user("u1"), assistant("", CALL))
        assert replay_before(chats, (user("u2"),)) == chats[:-1]

    def test_a_reply_with_text_is_context_and_keeps_the_question(self) -> None:
        chats = (user("u1"), assistant("half an ans"), user("u1"))
        assert retries_left_out(chats) == chats

    def test_a_reply_cut_short_and_its_question_asked_again_are_left_out(self) -> None:
        part = CutShort(assistant("half an ans"))
        chats = (user("u1"), assistant("a1"), user("u2"), part, user("u2"), assistant("a2"))
        assert retries_left_out(chats) == (user("u1"), assistant("a1"), user("u2"), assistant("a2"))
        assert replay_before(chats[:4], (user("u2"),)) == (user("u1"), assistant("a1"))

    def test_a_reply_cut_short_then_another_question_is_context(self) -> None:
        part = CutShort(assistant("half an ans"))
        chats = (user("u1"), part, user("go on"), assistant("a2"))
        expected = (user("u1"), assistant("half an ans"), user("go on"), assistant("a2"))
        assert retries_left_out(chats) == expected
        assert replay_before(chats[:2], (user("go on"),)) == expected[:2]


def turn(sent: tuple[ChatMessage, ...], **fields: Any) -> TurnRequest:
    last_user = next((m.text for m in reversed(sent) if m.role == "user"), "")
    return TurnRequest(
        "main", KEY, f"chatcmpl-{uuid.uuid4().hex}", last_user, messages=sent, **fields
    )


async def run(registry: SessionRegistry, request: TurnRequest) -> tuple[RunOutcome, list[RunEvent]]:
    handle = registry.submit(request)
    events = [event async for event in handle.subscribe()]
    return await handle.wait(), events


class TestResentHistory:
    async def test_a_client_that_resends_reaches_the_model_once(self, harness: Harness) -> None:
        provider = ScriptedProvider("scripted", ("ok",))
        registry = harness.registry(make_config(("scripted/m",), apis=("scripted",)), [provider])
        sent: tuple[ChatMessage, ...] = ()
        for number in (1, 2, 3):
            sent = (*sent, user(f"u{number}"))
            outcome, _ = await run(registry, turn(sent))
            sent = (*sent, assistant(outcome.text))
        last: ProviderRequest = provider.requests[-1]
        assert [(m.role, m.text) for m in last.messages] == [
            ("user", "u1"), ("assistant", "ok"), ("user", "u2"), ("assistant", "ok"),
            ("user", "u3"),
        ]  # fmt: skip
        history = await registry.history(KEY, 100)
        assert [m.text for m in history.messages] == ["u1", "ok", "u2", "ok", "u3", "ok"]

    async def test_an_edited_history_is_the_models_context_and_later_turns_build_on_it(
        self, harness: Harness
    ) -> None:
        provider = ScriptedProvider("scripted", ("ok",))
        registry = harness.registry(make_config(("scripted/m",), apis=("scripted",)), [provider])
        await run(registry, turn((user("u1"),)))
        edited = (user("u1"), assistant("not what you said"), user("u2"))
        await run(registry, turn(edited))
        assert [m.text for m in provider.requests[-1].messages] == ["u1", "not what you said", "u2"]
        await run(registry, turn((*edited, assistant("ok"), user("u3"))))
        assert [m.text for m in provider.requests[-1].messages] == [
            "u1", "not what you said", "u2", "ok", "u3"
        ]  # fmt: skip


class TestEchoToolLoop:
    async def test_a_call_then_its_result(self, harness: Harness) -> None:
        registry = harness.registry()
        first = (user('call get_weather {"city":"Paris"}'),)
        outcome, events = await run(registry, turn(first, params=TOOLS))
        assert (outcome.stop_reason, outcome.text, outcome.tool_calls) == (
            "tool_calls",
            "",
            (CALL,),
        )
        tool_events = [e.data for e in events if e.stream == "tool"]
        assert tool_events[0] == {
            "phase": "start", "name": "get_weather", "toolCallId": CALL.id, "index": 0
        }  # fmt: skip
        assert "".join(d["delta"] for d in tool_events[1:]) == CALL.arguments

        second = (*first, assistant("", CALL), result(CALL.id, "sunny"))
        outcome, events = await run(registry, turn(second, params=TOOLS))
        assert outcome.text == "[turn 1] get_weather: sunny"
        assert [e.data for e in events if e.stream == "tool"] == [
            {"phase": "result", "name": "get_weather", "toolCallId": CALL.id, "isError": False,
             "result": "sunny"}
        ]  # fmt: skip
        history = await registry.history(KEY, 100)
        assert [(m.role, m.text, m.tool_calls, m.tool_name) for m in history.messages] == [
            ("user", first[0].text, (), None),
            ("assistant", "", (CALL,), None),
            ("toolResult", "sunny", (), "get_weather"),
            ("assistant", "[turn 1] get_weather: sunny", (), None),
        ]

    @pytest.mark.parametrize("limit", [0, 50])
    async def test_only_new_tool_results_are_stored(self, harness: Harness, limit: int) -> None:
        registry = harness.registry(make_config(history_limit=limit))
        first = (user("call get_weather {}"),)
        await run(registry, turn(first, params=TOOLS))
        call = ToolCall("call_echo_1_0", "get_weather", "{}")
        await run(registry, turn((*first, assistant("", call), result(call.id, "x")), params=TOOLS))
        history = await registry.history(KEY, 100)
        assert [m.role for m in history.messages] == [
            "user",
            "assistant",
            "toolResult",
            "assistant",
        ]
