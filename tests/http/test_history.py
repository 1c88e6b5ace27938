"""How a client's resent conversation is folded into a named session's history ("no double
history", agents/transcript.py): the real `openai` SDK against a gateway whose model is a
fake upstream that records what it was given."""

from __future__ import annotations

import contextlib
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.support.configs import merged
from tests.support.http_client import (
    TOKEN,
    Client,
    MakeClient,
    fake_provider,
    stored_messages,
)
from tests.support.upstreams import FakeOpenAI, FakeToolCall, Raw, Status, Stream

WEBUI = {"X-OpenWebUI-Chat-Id": "chat-A"}
WEBUI_KEY = "agent:main:openai-chat:chat-a"
RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}


def sdk_for(client: Client) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=str(client.server.make_url("/v1")), api_key=TOKEN, max_retries=0)


async def ask(sdk: AsyncOpenAI, messages: list[Any], headers: dict[str, str]) -> str:
    reply = await sdk.chat.completions.create(
        model="openclaw", messages=messages, extra_headers=headers
    )
    return reply.choices[0].message.content or ""


async def as_alice(sdk: AsyncOpenAI, question: str) -> str:
    """A turn of the `user`-keyed session `alice`, from a client that sends only its new one."""
    reply = await sdk.chat.completions.create(
        model="openclaw", messages=[{"role": "user", "content": question}], user="alice"
    )
    return reply.choices[0].message.content or ""


def contents(upstream: FakeOpenAI) -> list[tuple[str, Any]]:
    """What the model was given last, as (role, content)."""
    return [(m["role"], m["content"]) for m in upstream.last.body["messages"]]


class TestRepliesAsParts:
    """A client may send an earlier reply back as a list of text parts: it is still the
    session's reply, and the chat is not stored or given to the model a second time."""

    async def test_a_reply_in_several_text_parts_continues_the_session(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("Hello ", "there.\n\nHow can ", "I help?")), Stream(("A2",)))
        client = await gateway(fake_provider(upstream))
        async with sdk_for(client) as sdk:
            answer = await ask(sdk, [{"role": "user", "content": "Q1"}], WEBUI)
            assert answer == "Hello there.\n\nHow can I help?"
            parts = [
                {"type": "text", "text": "Hello there."},
                {"type": "text", "text": "How can I help?"},
            ]
            chat = [
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": parts},
                {"role": "user", "content": "Q2"},
            ]
            await ask(sdk, chat, WEBUI)
        assert contents(upstream) == [
            ("user", "Q1"),
            ("assistant", "Hello there.\n\nHow can I help?"),
            ("user", "Q2"),
        ]
        stored = await stored_messages(client, WEBUI_KEY)
        assert [(m.role, m.text) for m in stored] == [
            ("user", "Q1"),
            ("assistant", "Hello there.\n\nHow can I help?"),
            ("user", "Q2"),
            ("assistant", "A2"),
        ]


class TestResponsesNamedByAChatId:
    """`/v1/responses` named by a conversation header folds the chat as chat completions do:
    the chat is sent whole every time."""

    async def test_a_regenerated_first_answer_replaces_the_stored_one(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("A1",)), Stream(("A1 again",)), Stream(("A2",)))
        client = await gateway(merged(fake_provider(upstream), RESPONSES_ON))
        async with sdk_for(client) as sdk:
            for _ in range(2):  # the first answer, then regenerated
                await sdk.responses.create(model="openclaw", input="Q1", extra_headers=WEBUI)
            assert contents(upstream) == [("user", "Q1")]
            await sdk.responses.create(
                model="openclaw",
                input=[
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1 again"},
                    {"role": "user", "content": "Q2"},
                ],
                extra_headers=WEBUI,
            )
        assert contents(upstream) == [("user", "Q1"), ("assistant", "A1 again"), ("user", "Q2")]

    async def test_a_background_task_stays_out_of_the_chats_session(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Open WebUI's title task (a lone `### Task:` prompt quoting `<chat_history>`) is
        not a turn of the chat whose id it carries, on `/v1/responses` as on chat
        completions."""
        upstream.script(Stream(("A1",)), Stream(('{"title": "Hi"}',)), Stream(("A2",)))
        client = await gateway(merged(fake_provider(upstream), RESPONSES_ON))
        task = (
            "### Task:\nGenerate a title.\n<chat_history>\nUSER: Q1\nASSISTANT: A1\n</chat_history>"
        )
        async with sdk_for(client) as sdk:
            await sdk.responses.create(model="openclaw", input="Q1", extra_headers=WEBUI)
            raw = await sdk.responses.with_raw_response.create(
                model="openclaw", input=task, extra_headers=WEBUI
            )
            assert raw.headers["x-openclaw-session-key"] != WEBUI_KEY
            await sdk.responses.create(
                model="openclaw",
                input=[
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "Q2"},
                ],
                extra_headers=WEBUI,
            )
        assert contents(upstream) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]
        stored = await stored_messages(client, WEBUI_KEY)
        assert [m.text for m in stored] == ["Q1", "A1", "Q2", "A2"]

    async def test_a_task_named_by_its_header_stays_out_of_the_chats_session(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """`X-OpenWebUI-Task` names a background task whatever its prompt (an operator's
        own), on `/v1/responses` as on chat completions."""
        upstream.script(Stream(("A1",)), Stream(("Hi",)), Stream(("A2",)))
        client = await gateway(merged(fake_provider(upstream), RESPONSES_ON))
        task = {**WEBUI, "X-OpenWebUI-Task": "title_generation"}
        turn = {**WEBUI, "X-OpenWebUI-Task": ""}
        async with sdk_for(client) as sdk:
            await sdk.responses.create(model="openclaw", input="Q1", extra_headers=turn)
            raw = await sdk.responses.with_raw_response.create(
                model="openclaw", input="Title this: USER: Q1 ASSISTANT: A1", extra_headers=task
            )
            assert raw.headers["x-openclaw-session-key"] != WEBUI_KEY
            await sdk.responses.create(
                model="openclaw",
                input=[
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "Q2"},
                ],
                extra_headers=turn,
            )
        assert contents(upstream) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]
        stored = await stored_messages(client, WEBUI_KEY)
        assert [m.text for m in stored] == ["Q1", "A1", "Q2", "A2"]


class TestADivergedChatIsStoredOnce:
    """A chat that diverged from its session is stored as a new start, but only as much of
    it as a later turn replays (`historyLimit` user turns): a long chat edited again and again
    does not store itself again each time."""

    async def test_only_the_replayed_turns_of_a_diverged_chat_are_stored(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(*(Stream((f"A{n}",)) for n in range(1, 7)))
        settings = merged(fake_provider(upstream), {"agents": {"defaults": {"historyLimit": 2}}})
        client = await gateway(settings)
        headers = {"x-openclaw-session-key": "chat"}
        chat: list[Any] = []
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2", "Q3", "Q4"):
                chat.append({"role": "user", "content": question})
                chat.append({"role": "assistant", "content": await ask(sdk, chat, headers)})
            chat[5] = {"role": "assistant", "content": "A3, corrected"}
            chat.append({"role": "user", "content": "Q5"})
            chat.append({"role": "assistant", "content": await ask(sdk, chat, headers)})
            # The model got the client's chat, as far back as any turn goes.
            assert [c for _, c in contents(upstream)] == [m["content"] for m in chat[4:-1]]
            chat.append({"role": "user", "content": "Q6"})
            await ask(sdk, chat, headers)
        stored = await stored_messages(client, "agent:main:chat")
        assert [m.text for m in stored][8:] == ["Q4", "A4", "Q5", "A5", "Q6", "A6"]
        assert stored[8].context_start
        # The turn after continued from the new start, with its last two turns.
        assert contents(upstream) == [
            ("user", "Q4"),
            ("assistant", "A4"),
            ("user", "Q5"),
            ("assistant", "A5"),
            ("user", "Q6"),
        ]


class TestARetriedTurn:
    """A client that sends only its new turn asks again after a turn that got no reply (the
    upstream failed): the failed turn is stored, but the model is not given its question
    twice, neither on the retry nor later."""

    async def test_a_question_asked_again_after_a_failed_turn_is_given_once(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("A1",)), Status(500), Stream(("A2",)), Stream(("A3",)))
        client = await gateway(fake_provider(upstream))
        async with sdk_for(client) as sdk:

            async def turn(question: str) -> None:
                await sdk.chat.completions.create(
                    model="openclaw",
                    messages=[{"role": "user", "content": question}],
                    user="alice",
                )

            await as_alice(sdk, "Q1")
            with pytest.raises(openai.APIStatusError):
                await as_alice(sdk, "Q2")
            await as_alice(sdk, "Q2")
            assert contents(upstream) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]
            await as_alice(sdk, "Q3")
        assert contents(upstream) == [
            ("user", "Q1"),
            ("assistant", "A1"),
            ("user", "Q2"),
            ("assistant", "A2"),
            ("user", "Q3"),
        ]
        stored = await stored_messages(client, "agent:main:openai-user:alice")
        assert [(m.role, m.text, m.stop_reason) for m in stored][2:6] == [
            ("user", "Q2", None),
            ("assistant", "", "error"),
            ("user", "Q2", None),
            ("assistant", "A2", "stop"),
        ]

    async def test_a_question_asked_again_after_a_partial_reply_is_given_once(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """The upstream failed after part of the reply: the retry replaces the failed turn
        in the model's context, its part of a reply too, then and later."""
        partial = Stream(("Part", " of it"), error_after=1)
        upstream.script(Stream(("A1",)), partial, Stream(("A2",)), Stream(("A3",)))
        client = await gateway(fake_provider(upstream))
        async with sdk_for(client) as sdk:
            await as_alice(sdk, "Q1")
            with pytest.raises(openai.APIStatusError):
                await as_alice(sdk, "Q2")
            await as_alice(sdk, " Q2 ")
            assert [c for _, c in contents(upstream)] == ["Q1", "A1", "Q2"]
            await as_alice(sdk, "Q3")
        assert [c for _, c in contents(upstream)] == ["Q1", "A1", "Q2", "A2", "Q3"]
        stored = await stored_messages(client, "agent:main:openai-user:alice")
        assert [(m.role, m.text, m.stop_reason) for m in stored][2:6] == [
            ("user", "Q2", None),
            ("assistant", "Part", "error"),
            ("user", "Q2", None),
            ("assistant", "A2", "stop"),
        ]

    async def test_another_question_after_a_partial_reply_keeps_it(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """The user read the part and asks on: it is context like any reply."""
        upstream.script(Stream(("A1",)), Stream(("Part", " of it"), error_after=1))
        client = await gateway(fake_provider(upstream))
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2", "Go on"):
                with contextlib.suppress(openai.APIStatusError):
                    await as_alice(sdk, question)
        assert [c for _, c in contents(upstream)] == ["Q1", "A1", "Q2", "Part", "Go on"]

    async def test_a_whole_chat_asking_again_after_a_partial_reply_continues_the_session(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A chat UI shows the part with the error; its user regenerates the answer: the chat
        as it was before the failed turn continues the session (it is not stored again)."""
        partial = Stream(("Part", " of it"), error_after=1)
        upstream.script(Stream(("A1",)), partial, Stream(("A2",)), Stream(("A3",)))
        client = await gateway(fake_provider(upstream))
        chat: list[Any] = [{"role": "user", "content": "Q1"}]
        async with sdk_for(client) as sdk:
            chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            chat.append({"role": "user", "content": "Q2"})
            with pytest.raises(openai.APIStatusError):
                await ask(sdk, chat, WEBUI)
            chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            assert [c for _, c in contents(upstream)] == ["Q1", "A1", "Q2"]
            chat.append({"role": "user", "content": "Q3"})
            await ask(sdk, chat, WEBUI)
        assert [c for _, c in contents(upstream)] == ["Q1", "A1", "Q2", "A2", "Q3"]
        stored = await stored_messages(client, WEBUI_KEY)
        assert not any(m.context_start for m in stored)
        assert [m.text for m in stored] == ["Q1", "A1", "Q2", "Part", "Q2", "A2", "Q3", "A3"]

    async def test_a_tool_result_sent_again_after_a_failed_turn_is_given_once(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A Responses tool loop: the turn with the call's result failed (a failed response
        is not kept), so the client sends the result again after the call's response."""
        call = FakeToolCall("call_1", "get_weather", ('{"city":"Oslo"}',))
        upstream.script(Stream((), tool_calls=(call,)), Status(500), Stream(("Cold.",)))
        client = await gateway(merged(fake_provider(upstream), RESPONSES_ON))
        weather: Any = {"type": "function", "name": "get_weather", "parameters": {}}
        async with sdk_for(client) as sdk:
            first = await sdk.responses.create(
                model="openclaw", input="Weather in Oslo?", tools=[weather], user="alice"
            )
            result: Any = {"type": "function_call_output", "call_id": "call_1", "output": "-5C"}
            with pytest.raises(openai.APIStatusError):
                await sdk.responses.create(
                    model="openclaw", previous_response_id=first.id, input=[result]
                )
            answer = await sdk.responses.create(
                model="openclaw", previous_response_id=first.id, input=[result]
            )
        assert answer.output_text == "Cold."
        assert [m["role"] for m in upstream.last.body["messages"]] == ["user", "assistant", "tool"]


class TestAChatWithItsFirstTurnsDeleted:
    """A chat named by a conversation header is sent whole every time: one that lacks the
    session's first turns had them deleted (a client that keeps its own window names its
    session otherwise), and the model is not given them."""

    async def test_the_deleted_turns_are_not_given_to_the_model(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(*(Stream((f"A{n}",)) for n in range(1, 5)))
        client = await gateway(fake_provider(upstream))
        chat: list[Any] = []
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2", "Q3"):
                chat.append({"role": "user", "content": question})
                chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            chat = [*chat[2:], {"role": "user", "content": "Q4"}]
            await ask(sdk, chat, WEBUI)
        assert [c for _, c in contents(upstream)] == ["Q2", "A2", "Q3", "A3", "Q4"]


class TestAnEarlierQuestionEdited:
    """An earlier question edited in the chat (and saved, not sent again) is noticed: the
    chat diverged. A question resent without what the chat UI first put around it (the
    documents of its RAG prompt) is the same question."""

    async def test_the_model_is_given_the_edited_question(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(*(Stream((f"A{n}",)) for n in range(1, 5)))
        client = await gateway(fake_provider(upstream))
        chat: list[Any] = []
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2", "Q3"):
                chat.append({"role": "user", "content": question})
                chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            chat[2] = {"role": "user", "content": "Q2, edited"}
            chat.append({"role": "user", "content": "Q4"})
            await ask(sdk, chat, WEBUI)
        assert [c for _, c in contents(upstream)] == [m["content"] for m in chat]

    async def test_a_question_resent_without_its_documents_continues_the_session(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("A1",)), Stream(("A2",)))
        client = await gateway(fake_provider(upstream))
        # Open WebUI's DEFAULT_RAG_TEMPLATE (backend/open_webui/config.py), abridged, before
        # the question; later turns resend the question alone.
        rag = (
            "### Task:\nRespond to the user query using the provided context.\n"
            '<context>\n<source id="1">notes</source>\n</context>\n\n'
            "<user_query>\nWhat do my notes say?\n</user_query>\nWhat do my notes say?"
        )
        async with sdk_for(client) as sdk:
            await ask(sdk, [{"role": "user", "content": rag}], WEBUI)
            chat = [
                {"role": "user", "content": "What do my notes say?"},
                {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"},
            ]
            await ask(sdk, chat, WEBUI)
        assert contents(upstream) == [("user", rag), ("assistant", "A1"), ("user", "Q2")]


class TestAFailedTurnRetriedWithTheWholeChat:
    """The `openai` SDK in a loop (or a chat UI) sends its whole chat again after a turn
    failed: it continues the session, which is not stored a second time, and the model is
    given the failed turn's question once."""

    async def turns(
        self, gateway: MakeClient, upstream: FakeOpenAI, failures: int, then: list[str]
    ) -> list[Any]:
        """Q1 answered, Q2 failed `failures` times, then the chat with `then` after A1."""
        replies = [Stream(("A1",)), *[Status(500)] * failures, Stream(("A2",)), Stream(("A3",))]
        upstream.script(*replies)
        client = await gateway(fake_provider(upstream))
        headers = {"x-openclaw-session-key": "chat"}
        chat: list[Any] = [{"role": "user", "content": "Q1"}]
        async with sdk_for(client) as sdk:
            chat.append({"role": "assistant", "content": await ask(sdk, chat, headers)})
            for _ in range(failures):
                with pytest.raises(openai.APIStatusError):
                    await ask(sdk, [*chat, {"role": "user", "content": "Q2"}], headers)
            chat += [{"role": "user", "content": question} for question in then]
            assert await ask(sdk, chat, headers) == "A2"
            assert [c for _, c in contents(upstream)] == ["Q1", "A1", *then]
            chat += [{"role": "assistant", "content": "A2"}, {"role": "user", "content": "Q3"}]
            await ask(sdk, chat, headers)
        assert [c for _, c in contents(upstream)] == ["Q1", "A1", *then, "A2", "Q3"]
        return await stored_messages(client, "agent:main:chat")

    @pytest.mark.parametrize("failures", [1, 2])
    async def test_the_retry_continues_the_session(
        self, gateway: MakeClient, upstream: FakeOpenAI, failures: int
    ) -> None:
        stored = await self.turns(gateway, upstream, failures, ["Q2"])
        assert not any(m.context_start for m in stored)
        assert [m.text for m in stored] == [
            "Q1", "A1", *["Q2", ""] * failures, "Q2", "A2", "Q3", "A3",
        ]  # fmt: skip

    async def test_the_failed_question_then_another_continues_the_session(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A chat UI keeps the failed question and the user asks the next one."""
        stored = await self.turns(gateway, upstream, 1, ["Q2", "Q2b"])
        assert not any(m.context_start for m in stored)

    async def test_the_failed_question_edited_has_diverged(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        stored = await self.turns(gateway, upstream, 1, ["Q2, edited"])
        assert [m.text for m in stored if m.context_start] == ["Q1"]


MARKER = "<an image the upstream cannot take>"


class RefusingUpstream(FakeOpenAI):
    """Refuses a request whose messages hold MARKER (as an upstream refuses an image or a
    message it cannot take) with `status`; answers every other one as scripted."""

    status = 400

    def __init__(self) -> None:
        super().__init__()
        self.answer = self._refusal

    def _refusal(self, body: Any) -> Status | None:
        refused = any(MARKER in str(m.get("content")) for m in body["messages"])
        return Status(self.status) if refused else None


@pytest.fixture
async def refusing() -> Any:
    async with RefusingUpstream() as fake:
        yield fake


class TestARefusedTurn:
    """A turn the upstream refused as a bad request (400, 413, 422) is stored, but its
    messages are not given to the model again: later turns of the session do not fail the
    same way. Other failures (5xx, 429, 401) say nothing about the messages: kept."""

    @pytest.mark.parametrize("status", [400, 413, 422])
    async def test_later_turns_of_the_session_are_not_refused(
        self, gateway: MakeClient, refusing: RefusingUpstream, status: int
    ) -> None:
        refusing.status = status
        refusing.script(Stream(("A1",)))
        client = await gateway(fake_provider(refusing))
        async with sdk_for(client) as sdk:
            assert await as_alice(sdk, "Q1") == "A1"
            with pytest.raises(openai.APIStatusError) as refused:
                await as_alice(sdk, f"Q2 {MARKER}")
            assert refused.value.status_code == 502
            assert await as_alice(sdk, "Q3") == "Hello world"
            assert contents(refusing) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q3")]
            assert await as_alice(sdk, "Q4") == "Hello world"
        assert [c for _, c in contents(refusing)] == ["Q1", "A1", "Q3", "Hello world", "Q4"]
        # The refused turn is stored, and marked so.
        stored = await stored_messages(client, "agent:main:openai-user:alice")
        assert [(m.role, m.text, m.stop_reason) for m in stored][2:4] == [
            ("user", f"Q2 {MARKER}", None),
            ("assistant", "", "error"),
        ]
        assert stored[3].error_message == (f"upstream provider refused the request (HTTP {status})")

    @pytest.mark.parametrize("then", [503, 429])
    async def test_refused_by_one_model_of_the_chain_then_another_failure_is_refused(
        self, gateway: MakeClient, refusing: RefusingUpstream, then: int
    ) -> None:
        """The first model read the messages and refused them; the fallback then failed in a
        way that says nothing of them (5xx, 429). The turn is refused all the same: replayed,
        the first model of the chain would refuse every later turn (only the last failure
        counted, and the turn was kept)."""
        plain = refusing._refusal
        refusing.answer = lambda body: (
            Status(then) if body["model"] == "fallback" and plain(body) else plain(body)
        )
        refusing.script(Stream(("A1",)))
        settings = fake_provider(
            refusing, model={"primary": "fake/fake-model", "fallbacks": ["fake/fallback"]}
        )
        settings["models"]["providers"]["fake"]["models"].append({"id": "fallback"})
        client = await gateway(settings)
        async with sdk_for(client) as sdk:
            assert await as_alice(sdk, "Q1") == "A1"
            with pytest.raises(openai.APIStatusError) as failed:
                await as_alice(sdk, f"Q2 {MARKER}")
            # The client is told of the last failure, as before.
            assert failed.value.status_code == (429 if then == 429 else 502)
            assert await as_alice(sdk, "Q3") == "Hello world"
        assert contents(refusing) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q3")]
        stored = await stored_messages(client, "agent:main:openai-user:alice")
        assert stored[3].error_message == "upstream provider refused the request (HTTP 400)"

    async def test_a_refusal_inside_a_200_stream_is_a_refusal(
        self, gateway: MakeClient, refusing: RefusingUpstream
    ) -> None:
        """OpenRouter and proxies answer 200 and send the upstream's 400 as the stream's
        first event: the turn is refused as when the 400 is the status (it was a malformed
        stream, kept and replayed)."""
        error = b'data: {"error": {"code": 400, "message": "image too large"}}\n\n'
        plain = refusing._refusal
        refusing.answer = lambda body: Raw((error,)) if plain(body) else None
        refusing.script(Stream(("A1",)))
        client = await gateway(fake_provider(refusing))
        async with sdk_for(client) as sdk:
            assert await as_alice(sdk, "Q1") == "A1"
            with pytest.raises(openai.APIStatusError) as failed:
                await as_alice(sdk, f"Q2 {MARKER}")
            assert failed.value.status_code == 502
            assert await as_alice(sdk, "Q3") == "Hello world"
        assert contents(refusing) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q3")]

    async def test_a_400_in_a_stream_after_part_of_the_reply_is_no_refusal(
        self, gateway: MakeClient, refusing: RefusingUpstream
    ) -> None:
        """The model took the messages and began its reply: an error after that says nothing
        of them, and the turn is replayed as any failed one."""
        part = b'data: {"choices": [{"index": 0, "delta": {"content": "Part"}}]}\n\n'
        error = b'data: {"error": {"code": 400, "message": "bad"}}\n\n'
        plain = refusing._refusal
        refusing.answer = lambda body: Raw((part + error,)) if plain(body) else None
        client = await gateway(fake_provider(refusing))
        async with sdk_for(client) as sdk:
            with pytest.raises(openai.APIStatusError):
                await sdk.chat.completions.create(
                    model="openclaw",
                    messages=[{"role": "user", "content": f"Q1 {MARKER}"}],
                    user="alice",
                )
        stored = await stored_messages(client, "agent:main:openai-user:alice")
        assert [(m.role, m.text, m.error_message) for m in stored] == [
            ("user", f"Q1 {MARKER}", None),
            ("assistant", "Part", "upstream provider error"),
        ]

    async def test_a_question_asked_again_after_a_refusal_is_given_once(
        self, gateway: MakeClient, refusing: RefusingUpstream
    ) -> None:
        """The refused turn asked again, now without what the upstream refused."""
        refusing.script(Stream(("A1",)))
        client = await gateway(fake_provider(refusing))
        async with sdk_for(client) as sdk:
            for question in ("Q1", f"Q2 {MARKER}", "Q2"):
                with contextlib.suppress(openai.APIStatusError):
                    await sdk.chat.completions.create(
                        model="openclaw",
                        messages=[{"role": "user", "content": question}],
                        user="alice",
                    )
        assert [c for _, c in contents(refusing)] == ["Q1", "A1", "Q2"]

    @pytest.mark.parametrize(
        "then",
        [["Q3"], ["Q2, without it"]],
        ids=["another question", "the refused question edited"],
    )
    async def test_a_whole_chat_without_the_refused_question_continues_the_session(
        self, gateway: MakeClient, refusing: RefusingUpstream, then: list[str]
    ) -> None:
        """A chat UI whose user asks something else, or edits the question the upstream
        refused: the chat continues the session (nothing stored twice), and the model is
        not given the refused question."""
        refusing.script(Stream(("A1",)), Stream(("A2",)), Stream(("A3",)))
        client = await gateway(fake_provider(refusing))
        chat: list[Any] = [{"role": "user", "content": "Q1"}]
        async with sdk_for(client) as sdk:
            chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            with pytest.raises(openai.APIStatusError):
                await ask(sdk, [*chat, {"role": "user", "content": f"Q2 {MARKER}"}], WEBUI)
            chat += [{"role": "user", "content": question} for question in then]
            assert await ask(sdk, chat, WEBUI) == "A2"
            assert [c for _, c in contents(refusing)] == ["Q1", "A1", *then]
            chat += [{"role": "assistant", "content": "A2"}, {"role": "user", "content": "Q4"}]
            assert await ask(sdk, chat, WEBUI) == "A3"
        assert [c for _, c in contents(refusing)] == ["Q1", "A1", *then, "A2", "Q4"]
        stored = await stored_messages(client, WEBUI_KEY)
        assert not any(m.context_start for m in stored)
        assert [m.text for m in stored] == ["Q1", "A1", f"Q2 {MARKER}", "", *then, "A2", "Q4", "A3"]

    async def test_a_whole_chat_that_keeps_the_refused_question_is_refused_again(
        self, gateway: MakeClient, refusing: RefusingUpstream
    ) -> None:
        """What the client sends again is given to the model again: the gateway does not
        drop a client's messages, and the session is not taken as diverged."""
        refusing.script(Stream(("A1",)))
        client = await gateway(fake_provider(refusing))
        chat: list[Any] = [{"role": "user", "content": "Q1"}]
        async with sdk_for(client) as sdk:
            chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            chat.append({"role": "user", "content": f"Q2 {MARKER}"})
            for _ in range(2):
                with pytest.raises(openai.APIStatusError):
                    await ask(sdk, chat, WEBUI)
        assert [c for _, c in contents(refusing)] == ["Q1", "A1", f"Q2 {MARKER}"]
        stored = await stored_messages(client, WEBUI_KEY)
        assert not any(m.context_start for m in stored)
        assert [m.text for m in stored] == ["Q1", "A1", *[f"Q2 {MARKER}", ""] * 2]

    async def test_a_refused_chat_that_had_diverged_is_taken_as_sent_when_fixed(
        self, gateway: MakeClient, refusing: RefusingUpstream
    ) -> None:
        """A chat with an earlier question edited (diverged) and the upstream refused it;
        sent again with the edit fixed, it has still diverged from what the model was last
        given: the model gets the client's chat, nothing of the refused one."""
        refusing.script(Stream(("A1",)), Stream(("A2",)), Stream(("A3",)))
        client = await gateway(fake_provider(refusing))
        chat: list[Any] = []
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2"):
                chat.append({"role": "user", "content": question})
                chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            chat.append({"role": "user", "content": "Q3"})
            edited = [{"role": "user", "content": f"Q1 {MARKER}"}, *chat[1:]]
            with pytest.raises(openai.APIStatusError):
                await ask(sdk, edited, WEBUI)
            chat[0] = {"role": "user", "content": "Q1, edited"}
            assert await ask(sdk, chat, WEBUI) == "A3"
        assert [c for _, c in contents(refusing)] == [m["content"] for m in chat]
        stored = await stored_messages(client, WEBUI_KEY)
        assert [m.text for m in stored if m.context_start] == ["Q1, edited"]

    async def test_a_refused_turn_is_not_one_of_the_history_limit_turns(
        self, gateway: MakeClient, refusing: RefusingUpstream
    ) -> None:
        refusing.script(Stream(("A1",)), Stream(("A3",)), Stream(("A4",)))
        settings = merged(fake_provider(refusing), {"agents": {"defaults": {"historyLimit": 1}}})
        client = await gateway(settings)
        async with sdk_for(client) as sdk:
            assert await as_alice(sdk, "Q1") == "A1"
            with pytest.raises(openai.APIStatusError):
                await as_alice(sdk, f"Q2 {MARKER}")
            assert await as_alice(sdk, "Q3") == "A3"
            assert [c for _, c in contents(refusing)] == ["Q1", "A1", "Q3"]
            await as_alice(sdk, "Q4")
        assert [c for _, c in contents(refusing)] == ["Q3", "A3", "Q4"]

    async def test_a_refused_chat_takes_no_turn_of_the_window_from_a_new_process(
        self, gateway: MakeClient, refusing: RefusingUpstream
    ) -> None:
        """A diverged chat the upstream refused holds many user messages, all of one refused
        turn; the window read from the store reaches back past them."""
        refusing.script(Stream(("A1",)), Stream(("A2",)), Stream(("A3",)))
        settings = merged(fake_provider(refusing), {"agents": {"defaults": {"historyLimit": 2}}})
        client = await gateway(settings)
        chat: list[Any] = []
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2"):
                chat.append({"role": "user", "content": question})
                chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            edited = [{"role": "user", "content": f"Q1 {MARKER}"}, *chat[1:]]
            edited.append({"role": "user", "content": "Q3"})
            with pytest.raises(openai.APIStatusError):
                await ask(sdk, edited, WEBUI)
        await client.close()
        client = await gateway(settings)  # the same state dir, nothing kept in memory
        async with sdk_for(client) as sdk:
            await ask(sdk, [*chat, {"role": "user", "content": "Q3"}], WEBUI)
        assert [c for _, c in contents(refusing)] == ["Q1", "A1", "Q2", "A2", "Q3"]

    @pytest.mark.parametrize("status", [500, 429, 401])
    async def test_a_turn_that_failed_otherwise_stays_in_the_context(
        self, gateway: MakeClient, upstream: FakeOpenAI, status: int
    ) -> None:
        upstream.script(Stream(("A1",)), Status(status))
        client = await gateway(fake_provider(upstream))
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2", "Q3"):
                with contextlib.suppress(openai.APIStatusError):
                    await sdk.chat.completions.create(
                        model="openclaw",
                        messages=[{"role": "user", "content": question}],
                        user="alice",
                    )
        assert [c for _, c in contents(upstream)] == ["Q1", "A1", "Q2", "Q3"]


class TestADivergedChatIsCutToTheLimit:
    """A chat that diverged is given to the model as any turn of the session is: its current
    turn after the `historyLimit` user turns before it (not the whole chat)."""

    async def test_the_model_gets_the_last_turns_of_a_diverged_chat(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(*(Stream((f"A{n}",)) for n in range(1, 5)))
        settings = merged(fake_provider(upstream), {"agents": {"defaults": {"historyLimit": 2}}})
        client = await gateway(settings)
        chat: list[Any] = []
        async with sdk_for(client) as sdk:
            for question in ("Q1", "Q2", "Q3"):
                chat.append({"role": "user", "content": question})
                chat.append({"role": "assistant", "content": await ask(sdk, chat, WEBUI)})
            chat[3] = {"role": "assistant", "content": "A2, edited"}
            chat.append({"role": "user", "content": "Q4"})
            await ask(sdk, chat, WEBUI)
        assert [c for _, c in contents(upstream)] == ["Q2", "A2, edited", "Q3", "A3", "Q4"]

    async def test_a_stateless_request_is_given_whole(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        settings = merged(fake_provider(upstream), {"agents": {"defaults": {"historyLimit": 1}}})
        client = await gateway(settings)
        chat = [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
            {"role": "user", "content": "Q3"},
        ]
        async with sdk_for(client) as sdk:
            await ask(sdk, chat, {})
        assert [c for _, c in contents(upstream)] == ["Q1", "A1", "Q2", "A2", "Q3"]
