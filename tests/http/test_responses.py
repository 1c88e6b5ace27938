"""/v1/responses on the wire: the whole event sequence of streamed responses compared
exactly, the endpoint's gate (enablement, auth, 415, CORS), stored responses, disconnects."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import asyncpg
import pytest

from agents import session
from agents.store import TurnRecord
from gateway.appkeys import STATE
from gateway.http import openresponses, runs
from tests.support.configs import merged
from tests.support.counting import BodiesRead
from tests.support.http_client import (
    AUTH,
    TOKEN,
    Client,
    MakeClient,
    NoErrorLogs,
    anthropic_agent,
    call_started,
    fake_provider,
    order_of_answers,
    stored_messages,
)
from tests.support.shared_store import forget_the_claim
from tests.support.upstreams import FakeAnthropic, FakeOpenAI, Raw, Status, Stream, openai_sse

RESPONSES = "/v1/responses"
RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
# Chat completions off: this endpoint stands on its own switch.
ONLY_RESPONSES = merged(
    RESPONSES_ON, {"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": False}}}}}
)
_IDS = re.compile(r"\b(resp|msg|fc|rs)_[0-9a-f]{32}(?:_[0-9]+)?\b")  # a stretch, a call: `_<n>`


def _numbered_ids(text: str) -> str:
    """Every id as `<kind>_<n>`, numbered in order of first appearance."""
    seen: dict[str, str] = {}

    def name(match: re.Match[str]) -> str:
        kind = match.group(1)
        count = sum(1 for v in seen.values() if v.startswith(kind + "_"))
        return seen.setdefault(match.group(0), f"{kind}_{count + 1}")

    return _IDS.sub(name, text)


def response_events(body: str) -> list[dict[str, Any]]:
    """The events of a Responses stream; asserts each is `event: <type>` + one `data:`."""
    assert body.endswith("\n\n"), body[-80:]
    events = []
    for block in _numbered_ids(body)[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {event['type']}"
        assert data_line.startswith("data: ")
        if "response" in event:
            assert isinstance(event["response"].pop("created_at"), int)
        events.append(event)
    return events


def response_object(
    status: str,
    output: list[dict[str, Any]],
    usage: tuple[int, int] | None,
    **fields: Any,
) -> dict[str, Any]:
    """A response object as the stream's events carry it (created_at taken out)."""
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "openclaw",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": None
        if usage is None
        else {
            "input_tokens": usage[0],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage[1],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage[0] + usage[1],
        },
        "user": None,
        "metadata": {},
        **fields,
    }


def message(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def opening(**fields: Any) -> list[dict[str, Any]]:
    body = response_object("in_progress", [], None, **fields)
    return [
        {"type": "response.created", "sequence_number": 0, "response": body},
        {"type": "response.in_progress", "sequence_number": 1, "response": body},
    ]


async def stream_body(client: Client, body: dict[str, Any], **headers: str) -> str:
    response = await client.post(
        RESPONSES, json={"model": "openclaw", "stream": True, **body}, headers={**AUTH, **headers}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    return await response.text()


def _call_head(index: int, call_id: str, name: str) -> dict[str, Any]:
    return {"index": index, "id": call_id, "type": "function",
            "function": {"name": name, "arguments": ""}}  # fmt: skip


@pytest.fixture
async def client(gateway: MakeClient) -> Client:
    return await gateway(RESPONSES_ON)


class TestStreamWire:
    async def test_a_text_answer(self, client: Client) -> None:
        events = response_events(await stream_body(client, {"input": "hi"}))
        ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
        text = "[turn 1] hi"
        part = {"type": "output_text", "text": text, "annotations": []}
        assert events == [
            *opening(),
            {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
             "item": message("msg_1", None, "in_progress")},
            {"type": "response.content_part.added", "sequence_number": 3, **ids,
             "part": {"type": "output_text", "text": "", "annotations": []}},
            {"type": "response.output_text.delta", "sequence_number": 4, **ids,
             "delta": "[turn", "logprobs": []},
            {"type": "response.output_text.delta", "sequence_number": 5, **ids,
             "delta": " 1]", "logprobs": []},
            {"type": "response.output_text.delta", "sequence_number": 6, **ids,
             "delta": " hi", "logprobs": []},
            {"type": "response.output_text.done", "sequence_number": 7, **ids,
             "text": text, "logprobs": []},
            {"type": "response.content_part.done", "sequence_number": 8, **ids, "part": part},
            {"type": "response.output_item.done", "sequence_number": 9, "output_index": 0,
             "item": message("msg_1", text)},
            {"type": "response.completed", "sequence_number": 10,
             "response": response_object("completed", [message("msg_1", text)], (1, 3))},
        ]  # fmt: skip

    async def test_a_function_call(self, client: Client) -> None:
        tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
        body = {"input": 'call lookup {"q":"clawgate"}', "tools": [tool], "tool_choice": "required"}
        events = response_events(await stream_body(client, body))
        ids = {"item_id": "fc_1", "output_index": 0}
        call = {"id": "fc_1", "type": "function_call", "call_id": "call_echo_1_0",
                "name": "lookup"}  # fmt: skip
        arguments = '{"q":"clawgate"}'
        done = {**call, "status": "completed", "arguments": arguments}
        assert events == [
            *opening(tools=[tool], tool_choice="required"),
            {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
             "item": {**call, "status": "in_progress", "arguments": ""}},
            {"type": "response.function_call_arguments.delta", "sequence_number": 3, **ids,
             "delta": '{"q":"cl'},
            {"type": "response.function_call_arguments.delta", "sequence_number": 4, **ids,
             "delta": 'awgate"}'},
            {"type": "response.function_call_arguments.done", "sequence_number": 5, **ids,
             "name": "lookup", "arguments": arguments},
            {"type": "response.output_item.done", "sequence_number": 6, "output_index": 0,
             "item": done},
            {"type": "response.completed", "sequence_number": 7,
             "response": response_object("completed", [done], (3, 2), tools=[tool],
                                         tool_choice="required")},
        ]  # fmt: skip

    async def test_reasoning_then_text(self, gateway: MakeClient, upstream: FakeOpenAI) -> None:
        upstream.script(Stream(("42",), reasoning=("Let me", " think.")))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        events = response_events(await stream_body(client, {"input": "The answer?"}))
        rs = {"item_id": "rs_1", "output_index": 0, "content_index": 0}
        msg = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
        thought = {"type": "reasoning_text", "text": "Let me think."}
        reasoning = {"id": "rs_1", "type": "reasoning", "summary": [], "content": [thought]}
        answer = message("msg_1", "42")
        assert events == [
            *opening(),
            {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
             "item": {"id": "rs_1", "type": "reasoning", "summary": [], "content": []}},
            {"type": "response.content_part.added", "sequence_number": 3, **rs,
             "part": {"type": "reasoning_text", "text": ""}},
            {"type": "response.reasoning_text.delta", "sequence_number": 4, **rs,
             "delta": "Let me"},
            {"type": "response.reasoning_text.delta", "sequence_number": 5, **rs,
             "delta": " think."},
            {"type": "response.reasoning_text.done", "sequence_number": 6, **rs,
             "text": "Let me think."},
            {"type": "response.content_part.done", "sequence_number": 7, **rs, "part": thought},
            {"type": "response.output_item.done", "sequence_number": 8, "output_index": 0,
             "item": reasoning},
            {"type": "response.output_item.added", "sequence_number": 9, "output_index": 1,
             "item": message("msg_1", None, "in_progress")},
            {"type": "response.content_part.added", "sequence_number": 10, **msg,
             "part": {"type": "output_text", "text": "", "annotations": []}},
            {"type": "response.output_text.delta", "sequence_number": 11, **msg,
             "delta": "42", "logprobs": []},
            {"type": "response.output_text.done", "sequence_number": 12, **msg,
             "text": "42", "logprobs": []},
            {"type": "response.content_part.done", "sequence_number": 13, **msg,
             "part": {"type": "output_text", "text": "42", "annotations": []}},
            {"type": "response.output_item.done", "sequence_number": 14, "output_index": 1,
             "item": answer},
            {"type": "response.completed", "sequence_number": 15,
             "response": response_object("completed", [reasoning, answer], (3, 2))},
        ]  # fmt: skip

    async def test_reasoning_and_text_alternating_are_an_item_each_stretch(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """Reasoning that resumes after the text began is a new item, as at OpenAI: each
        item is done before the next is added, so the output indices never go back."""
        upstream.script(Raw((openai_sse(
            {"reasoning_content": "Hmm"}, {"content": "A"},
            {"reasoning_content": ", more"}, {"content": "B"},
        ),)))  # fmt: skip
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        events = response_events(await stream_body(client, {"input": "The answer?"}))
        # An item's text events named alike, whether reasoning's or the message's.
        sent = [
            (e["type"].removeprefix("response.").split("_text.")[-1], e.get("output_index"))
            for e in events
        ]
        kinds = ("output_item.added", "content_part.added", "delta", "done",
                 "content_part.done", "output_item.done")  # fmt: skip
        items = [(kind, index) for index in range(4) for kind in kinds]
        assert sent == [("created", None), ("in_progress", None), *items, ("completed", None)]
        output = events[-1]["response"]["output"]
        assert [(item["id"], item["content"][0]["text"]) for item in output] == [
            ("rs_1", "Hmm"), ("msg_1", "A"), ("rs_2", ", more"), ("msg_2", "B")
        ]  # fmt: skip

    async def test_interleaved_call_arguments_each_reach_their_call(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A server that names both calls before sending either's arguments: each call's
        item stays open until the run ends, so no fragment is lost, and the second call is
        held back until the first closed, so each item's events come together."""
        upstream.script(Raw((openai_sse(
            {"tool_calls": [_call_head(0, "call_a", "f"), _call_head(1, "call_b", "g")]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":1}'}}]},
            {"tool_calls": [{"index": 1, "function": {"arguments": '{"y":2}'}}]},
        ),)))  # fmt: skip
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        tools = [{"type": "function", "name": "f"}, {"type": "function", "name": "g"}]
        events = response_events(await stream_body(client, {"input": "hi", "tools": tools}))
        a = {"id": "fc_1", "type": "function_call", "call_id": "call_a", "name": "f"}
        b = {"id": "fc_2", "type": "function_call", "call_id": "call_b", "name": "g"}
        a_done = {**a, "status": "completed", "arguments": '{"x":1}'}
        b_done = {**b, "status": "completed", "arguments": '{"y":2}'}
        assert events == [
            *opening(tools=tools),
            {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
             "item": {**a, "status": "in_progress", "arguments": ""}},
            {"type": "response.function_call_arguments.delta", "sequence_number": 3,
             "item_id": "fc_1", "output_index": 0, "delta": '{"x":1}'},
            {"type": "response.function_call_arguments.done", "sequence_number": 4,
             "item_id": "fc_1", "output_index": 0, "name": "f", "arguments": '{"x":1}'},
            {"type": "response.output_item.done", "sequence_number": 5, "output_index": 0,
             "item": a_done},
            {"type": "response.output_item.added", "sequence_number": 6, "output_index": 1,
             "item": {**b, "status": "in_progress", "arguments": ""}},
            {"type": "response.function_call_arguments.delta", "sequence_number": 7,
             "item_id": "fc_2", "output_index": 1, "delta": '{"y":2}'},
            {"type": "response.function_call_arguments.done", "sequence_number": 8,
             "item_id": "fc_2", "output_index": 1, "name": "g", "arguments": '{"y":2}'},
            {"type": "response.output_item.done", "sequence_number": 9, "output_index": 1,
             "item": b_done},
            {"type": "response.completed", "sequence_number": 10,
             "response": response_object("completed", [a_done, b_done], (1, 0), tools=tools)},
        ]  # fmt: skip

    async def test_an_upstream_failure_is_response_failed(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(500))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        events = response_events(await stream_body(client, {"input": "hi"}))
        error = {"code": "server_error", "message": "upstream provider error"}
        assert events == [
            *opening(),
            {"type": "response.failed", "sequence_number": 2,
             "response": response_object("failed", [], None, error=error)},
        ]  # fmt: skip

    async def test_a_refused_request_says_why_in_response_failed(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """The upstream's reason for refusing the request as bad reaches the client."""
        body = json.dumps({"error": {"message": "max_output_tokens is too large"}})
        upstream.script(Status(400, body=body))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        events = response_events(await stream_body(client, {"input": "hi"}))
        message = "upstream provider refused the request (HTTP 400): max_output_tokens is too large"
        error = {"code": "server_error", "message": message}
        assert events == [
            *opening(),
            {"type": "response.failed", "sequence_number": 2,
             "response": response_object("failed", [], None, error=error)},
        ]  # fmt: skip


class TestCreateWire:
    async def test_the_whole_response_object(self, client: Client) -> None:
        body = {"model": "openclaw", "input": "hi", "user": "u1", "metadata": {"k": "v"},
                "temperature": 0.5, "top_p": 1, "max_output_tokens": 100}  # fmt: skip
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 200
        assert response.headers["x-openclaw-session-key"] == "agent:main:openai-user:u1"
        assert response.headers["x-openclaw-model-used"] == "echo/echo"
        got = json.loads(_numbered_ids(await response.text()))
        assert isinstance(got.pop("created_at"), int)
        assert got == response_object(
            "completed", [message("msg_1", "[turn 1] hi")], (1, 3), user="u1",
            metadata={"k": "v"}, temperature=0.5, top_p=1, max_output_tokens=100,
        )  # fmt: skip

    async def test_a_non_streamed_failure_is_the_error_shape(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(500))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        response = await client.post(RESPONSES, json={"input": "hi"}, headers=AUTH)
        assert response.status == 502
        assert await response.json() == {
            "error": {"message": "upstream provider error", "type": "api_error", "param": None,
                      "code": None}
        }  # fmt: skip

    async def test_a_refused_request_is_a_502_that_says_why(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Status(422, body=json.dumps({"detail": "text.format: unsupported"})))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        response = await client.post(RESPONSES, json={"input": "hi"}, headers=AUTH)
        assert response.status == 502
        message = "upstream provider refused the request (HTTP 422): text.format: unsupported"
        assert await response.json() == {
            "error": {"message": message, "type": "api_error", "param": None, "code": None}
        }

    async def test_an_input_image_reaches_the_provider(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        png = "data:image/png;base64,iVBORw0KGgo="
        parts = [{"type": "input_text", "text": "What is it?"},
                 {"type": "input_image", "image_url": png}]  # fmt: skip
        body = {"input": [{"type": "message", "role": "user", "content": parts}]}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 200
        assert upstream.last.body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                         {"type": "image_url", "image_url": {"url": png}}]}
        ]  # fmt: skip

    async def test_an_input_image_anthropic_cannot_take_is_refused(
        self, gateway: MakeClient
    ) -> None:
        async with FakeAnthropic() as anthropic:
            client = await gateway(merged(RESPONSES_ON, anthropic_agent(anthropic)))
            heic = "data:image/heic;base64,AAAA"
            parts = [{"type": "input_text", "text": "What is it?"},
                     {"type": "input_image", "image_url": heic}]  # fmt: skip
            body = {"input": [{"type": "message", "role": "user", "content": parts}]}
            response = await client.post(RESPONSES, json=body, headers=AUTH)
            assert response.status == 400
            assert await response.json() == {
                "error": {"message": "Invalid image_url content in `messages`.",
                          "type": "invalid_request_error", "param": "messages", "code": None}
            }  # fmt: skip
            assert anthropic.requests == []


class TestGate:
    async def test_disabled_by_default(self, gateway: MakeClient) -> None:
        client = await gateway()
        response = await client.post(RESPONSES, json={"input": "hi"}, headers=AUTH)
        assert response.status == 404
        assert (await client.get(f"{RESPONSES}/resp_x", headers=AUTH)).status == 404

    async def test_on_without_chat_completions(self, gateway: MakeClient) -> None:
        client = await gateway(ONLY_RESPONSES)
        response = await client.post(RESPONSES, json={"input": "hi"}, headers=AUTH)
        assert response.status == 200
        chat = await client.post("/v1/chat/completions", json={}, headers=AUTH)
        assert chat.status == 404

    async def test_embeddings_are_on_with_responses_alone(self, gateway: MakeClient) -> None:
        client = await gateway(ONLY_RESPONSES)
        response = await client.post("/v1/embeddings", json={"input": "x"}, headers=AUTH)
        # On, and refused for want of an embedding model (not a 404).
        assert response.status == 400

    async def test_a_wrong_token_is_401(self, client: Client) -> None:
        headers = {**AUTH, "Authorization": "Bearer wrong"}
        response = await client.post(RESPONSES, json={"input": "hi"}, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_api_key"

    async def test_get_needs_the_token_too(self, client: Client) -> None:
        response = await client.get(f"{RESPONSES}/resp_x")
        assert response.status == 401

    async def test_not_json_is_415(self, client: Client) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"}
        response = await client.post(RESPONSES, data="{}", headers=headers)
        assert response.status == 415

    async def test_over_max_body_bytes_is_413(self, gateway: MakeClient) -> None:
        limit = {"gateway": {"http": {"endpoints": {"responses": {"maxBodyBytes": 100}}}}}
        client = await gateway(merged(RESPONSES_ON, limit))
        response = await client.post(RESPONSES, json={"input": "x" * 200}, headers=AUTH)
        assert response.status == 413

    async def test_put_is_405(self, client: Client) -> None:
        response = await client.put(RESPONSES, json={}, headers=AUTH)
        assert response.status == 405
        assert response.headers["Allow"] == "POST"

    async def test_get_of_cancel_is_405(self, client: Client) -> None:
        response = await client.get(f"{RESPONSES}/resp_x/cancel", headers=AUTH)
        assert response.status == 405
        assert response.headers["Allow"] == "POST"

    async def test_cancel_is_404_while_the_endpoint_is_off(self, gateway: MakeClient) -> None:
        client = await gateway()
        response = await client.post(f"{RESPONSES}/resp_x/cancel", headers=AUTH)
        assert response.status == 404

    async def test_a_cors_preflight_allows_delete(self, gateway: MakeClient) -> None:
        cors = {"gateway": {"http": {"cors": {"allowedOrigins": ["https://app.example"]}}}}
        client = await gateway(merged(RESPONSES_ON, cors))
        response = await client.options(
            f"{RESPONSES}/resp_x",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
        )
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Methods"] == "GET, DELETE, OPTIONS"
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


class TestStoredResponses:
    async def test_get_returns_the_stored_object_and_its_session(self, client: Client) -> None:
        created = await client.post(RESPONSES, json={"input": "hi", "user": "bob"}, headers=AUTH)
        body = await created.json()
        fetched = await client.get(f"{RESPONSES}/{body['id']}", headers=AUTH)
        assert fetched.status == 200
        assert fetched.headers["x-openclaw-session-key"] == "agent:main:openai-user:bob"
        assert await fetched.json() == body

    async def test_delete_answers_as_openai(self, client: Client) -> None:
        created = await (await client.post(RESPONSES, json={"input": "hi"}, headers=AUTH)).json()
        deleted = await client.delete(f"{RESPONSES}/{created['id']}", headers=AUTH)
        assert deleted.status == 200
        assert await deleted.json() == {"id": created["id"], "object": "response", "deleted": True}
        again = await client.delete(f"{RESPONSES}/{created['id']}", headers=AUTH)
        assert again.status == 404

    async def test_an_unknown_id_is_404(self, client: Client) -> None:
        response = await client.get(f"{RESPONSES}/resp_unknown", headers=AUTH)
        assert response.status == 404
        assert await response.json() == {
            "error": {"message": "Response with id 'resp_unknown' not found.",
                      "type": "invalid_request_error", "param": None,
                      "code": "response_not_found"}
        }  # fmt: skip

    async def test_a_double_slash_finds_the_stored_response(self, client: Client) -> None:
        created = await (await client.post(RESPONSES, json={"input": "hi"}, headers=AUTH)).json()
        fetched = await client.get(f"/v1//responses/{created['id']}", headers=AUTH)
        assert fetched.status == 200
        assert await fetched.json() == created

    async def test_the_turn_is_in_the_session_under_the_response_id(self, client: Client) -> None:
        created = await (
            await client.post(RESPONSES, json={"input": "hi", "user": "carol"}, headers=AUTH)
        ).json()
        stored = await stored_messages(client, "agent:main:openai-user:carol")
        assert [(m.role, m.run_id) for m in stored] == [
            ("user", created["id"]),
            ("assistant", created["id"]),
        ]

    async def test_a_deleted_session_takes_its_responses_along(self, client: Client) -> None:
        created = await (
            await client.post(RESPONSES, json={"input": "hi", "user": "dave"}, headers=AUTH)
        ).json()
        store = client.app[STATE].store
        assert store is not None
        await store.delete("agent:main:openai-user:dave", 0)
        response = await client.get(f"{RESPONSES}/{created['id']}", headers=AUTH)
        assert response.status == 404


class TestSessions:
    async def test_store_false_still_keeps_the_turn_in_its_session(self, client: Client) -> None:
        body = {"input": "hi", "user": "erin", "store": False}
        created = await (await client.post(RESPONSES, json=body, headers=AUTH)).json()
        assert created["store"] is False
        stored = await stored_messages(client, "agent:main:openai-user:erin")
        assert [m.role for m in stored] == ["user", "assistant"]

    async def test_the_agent_header_selects_the_agent(self, gateway: MakeClient) -> None:
        agents = {"agents": {"list": [{"id": "main", "default": True}, {"id": "beta"}]}}
        client = await gateway(merged(RESPONSES_ON, agents))
        headers = {**AUTH, "x-openclaw-agent-id": "beta"}
        response = await client.post(RESPONSES, json={"input": "hi", "user": "f"}, headers=headers)
        assert response.headers["x-openclaw-session-key"] == "agent:beta:openai-user:f"

    async def test_the_session_header_names_the_session(self, client: Client) -> None:
        headers = {**AUTH, "x-openclaw-session-key": "mine"}
        await client.post(RESPONSES, json={"input": "one"}, headers=headers)
        second = await client.post(RESPONSES, json={"input": "two"}, headers=headers)
        assert second.headers["x-openclaw-session-key"] == "agent:main:mine"
        assert (await second.json())["output"][0]["content"][0]["text"] == "[turn 2] two"

    async def test_an_archived_session_takes_no_new_turn(self, client: Client) -> None:
        headers = {**AUTH, "x-openclaw-session-key": "shelved"}
        await client.post(RESPONSES, json={"input": "one"}, headers=headers)
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.patch("agent:main:shelved", archived=True)
        refused = await client.post(RESPONSES, json={"input": "two"}, headers=headers)
        assert refused.status == 400
        assert (await refused.json())["error"] == {
            "message": 'Session "agent:main:shelved" is archived. Restore it before starting'
            " new work.",
            "type": "invalid_request_error",
            "param": None,
            "code": "session_archived",
        }
        stored = await client.app[STATE].store.history(
            (await registry.get_session("agent:main:shelved")).session_id, 10
        )
        assert stored.total == 2  # the first turn's two messages, nothing of the second


class TestItemReference:
    """An `item_reference` is found where its response could be continued, as
    `previous_response_id` is: of the agent and session the request names, if it names
    them; a wrong id is a 400 naming its place."""

    @staticmethod
    async def _first_item(client: Client, headers: dict[str, str] | None = None) -> str:
        first = await client.post(
            RESPONSES, json={"input": "a"}, headers={**AUTH, **(headers or {})}
        )
        return str((await first.json())["output"][0]["id"])

    async def test_another_agent_or_session_is_refused(self, gateway: MakeClient) -> None:
        agents = {"agents": {"list": [{"id": "main", "default": True}, {"id": "beta"}]}}
        client = await gateway(merged(RESPONSES_ON, agents))
        item_id = await self._first_item(client, {"x-openclaw-session-key": "here"})
        item = {"type": "item_reference", "id": item_id}
        body: dict[str, Any] = {"input": [item, {"role": "user", "content": "b"}]}
        beta = await client.post(RESPONSES, json={**body, "model": "openclaw/beta"}, headers=AUTH)
        there = await client.post(
            RESPONSES, json=body, headers={**AUTH, "x-openclaw-session-key": "elsewhere"}
        )
        refused = (
            f"Item '{item_id}' belongs to agent 'main', not 'beta'.",
            f"Item '{item_id}' belongs to another session than the one requested.",
        )
        for response, message in zip((beta, there), refused, strict=True):
            assert response.status == 400
            assert (await response.json())["error"] == {
                "message": message, "type": "invalid_request_error", "param": "input",
                "code": None,
            }  # fmt: skip
        for headers in ({}, {"x-openclaw-session-key": "here"}):
            ok = await client.post(RESPONSES, json=body, headers={**AUTH, **headers})
            assert ok.status == 200

    @pytest.mark.postgres
    async def test_a_stored_item_is_found_on_postgres(
        self, gateway: MakeClient, pg_url: str
    ) -> None:
        settings = merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
        client = await gateway(settings)
        item_id = await self._first_item(client)
        for found, status in ((item_id, 200), ("msg_" + "0" * 32, 400), (item_id + "_1", 400)):
            body = {
                "input": [{"type": "item_reference", "id": found}, {"role": "user", "content": "b"}]
            }
            response = await client.post(RESPONSES, json=body, headers=AUTH)
            assert response.status == status

    async def test_many_ids_are_looked_up_at_once(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Items referenced (or sent again with `previous_response_id`) by the hundred cost
        a lookup of their messages, and one of each response and session they are of: not
        a few statements per item, which a large body would hold the store up with."""
        history = [{"role": "user", "content": f"q{n}"} for n in range(100)]
        first = await (await client.post(RESPONSES, json={"input": history}, headers=AUTH)).json()
        page = await client.get(f"{RESPONSES}/{first['id']}/input_items?limit=100", headers=AUTH)
        ids = [item["id"] for item in (await page.json())["data"]]
        assert len(ids) == 100
        store = client.app[STATE].store
        looked: list[str] = []
        for name in ("message_seq", "messages_by_id", "messages_in", "response_place", "get"):
            method = getattr(store, name, None)
            if method is None:
                continue

            def counted(*args: Any, _method: Any = method, _name: str = name) -> Any:
                looked.append(_name)
                return _method(*args)

            monkeypatch.setattr(store, name, counted)
        refs = [{"type": "item_reference", "id": item_id} for item_id in ids]
        body = {"input": [*refs, {"role": "user", "content": "and?"}]}
        assert (await client.post(RESPONSES, json=body, headers=AUTH)).status == 200
        assert looked.count("messages_by_id") == 1
        assert len([n for n in looked if n != "get"]) <= 3, looked
        looked.clear()
        unknown = [{"id": f"msg_{n:032x}", "role": "user", "content": "x"} for n in range(100)]
        body = {"input": unknown, "previous_response_id": first["id"]}
        assert (await client.post(RESPONSES, json=body, headers=AUTH)).status == 200
        assert looked.count("message_seq") + looked.count("messages_by_id") <= 1, looked

    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_reply_of_reasoning_alone_is_listed_and_found_as_answered(
        self, gateway: MakeClient, upstream: FakeOpenAI, stream: bool
    ) -> None:
        """A reply of reasoning without text or calls is answered as its reasoning and the
        placeholder message: a later response lists both under those ids, and finds them
        by reference; the model is not given the empty reply."""
        upstream.script(Stream(deltas=(), reasoning=("Hmm",)), Stream(("A",)), Stream(("B",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        first = await client.post(RESPONSES, json={"input": "q1", "stream": stream}, headers=AUTH)
        if stream:
            events = (await first.text()).split("\n\n")
            done = json.loads(events[-2].split("data: ", 1)[1])["response"]
        else:
            done = await first.json()
        answered = [(item["id"], item["type"]) for item in done["output"]]
        assert [kind for _, kind in answered] == ["reasoning", "message"]
        body = {"input": "q2", "previous_response_id": done["id"]}
        later = await (await client.post(RESPONSES, json=body, headers=AUTH)).json()
        assert [m["role"] for m in upstream.last.body["messages"]] == ["user", "user"]
        page = await client.get(f"{RESPONSES}/{later['id']}/input_items?order=asc", headers=AUTH)
        listed = [(item["id"], item["type"]) for item in (await page.json())["data"]]
        assert listed[1:-1] == answered  # between q1 and q2
        references = [{"type": "item_reference", "id": item_id} for item_id, _ in answered]
        asked = [{"role": "user", "content": "q1"}, *references, {"role": "user", "content": "q3"}]
        body = {"input": asked}
        found = await client.post(RESPONSES, json=body, headers=AUTH)
        assert found.status == 200, await found.text()

    async def test_a_background_task_sent_by_reference_is_one(self, client: Client) -> None:
        """A chat UI's task prompt named by reference is told as one sent whole: it runs
        outside the chat's session, which must not hold it."""
        task = "### Task:\nGenerate a concise title.\n<chat_history>\nUSER: hi\n</chat_history>"
        first = await (await client.post(RESPONSES, json={"input": task}, headers=AUTH)).json()
        page = await client.get(f"{RESPONSES}/{first['id']}/input_items", headers=AUTH)
        item_id = (await page.json())["data"][0]["id"]
        chat = {**AUTH, "x-openwebui-chat-id": "chat-1"}
        turn = await client.post(RESPONSES, json={"input": "hello"}, headers=chat)
        chat_key = turn.headers["x-openclaw-session-key"]
        body = {"input": [{"type": "item_reference", "id": item_id}]}
        referenced = await client.post(RESPONSES, json=body, headers=chat)
        assert referenced.status == 200
        assert referenced.headers["x-openclaw-session-key"] != chat_key
        assert len(await stored_messages(client, chat_key)) == 2  # the turn's alone

    async def test_a_declared_task_finds_the_items_of_the_session_it_names(
        self, client: Client
    ) -> None:
        """A task the task header declares runs outside the session its header names, but
        that session is still the one requested: its items are found there."""
        chat = {**AUTH, "x-openclaw-session-key": "chat"}
        item_id = await self._first_item(client, {"x-openclaw-session-key": "chat"})
        task = {**chat, "x-openwebui-task": "title_generation"}
        asked = {"role": "user", "content": "A title?"}
        body = {"input": [{"type": "item_reference", "id": item_id}, asked]}
        referenced = await client.post(RESPONSES, json=body, headers=task)
        assert referenced.status == 200, await referenced.text()
        assert referenced.headers["x-openclaw-session-key"] != "agent:main:chat"
        elsewhere = {**AUTH, "x-openclaw-session-key": "other", "x-openwebui-task": "tags"}
        refused = await client.post(RESPONSES, json=body, headers=elsewhere)
        assert refused.status == 400

    async def test_a_wrong_id_is_refused(self, client: Client) -> None:
        for wrong in ({}, {"id": 7}, {"id": ""}, {"id": "x" * 257}, {"id": ["msg_1"]}):
            item = {"type": "item_reference", **wrong}
            body = {"input": [{"role": "user", "content": "a"}, item]}
            response = await client.post(RESPONSES, json=body, headers=AUTH)
            assert response.status == 400
            assert (await response.json())["error"]["message"] == (
                "Invalid `input[1].id`: expected a non-empty string of at most 256 characters."
            )

    async def test_an_item_of_images_is_refused(self, client: Client) -> None:
        """Their data is not kept: the model would be given the message without them."""
        png = "data:image/png;base64,iVBORw0KGgo="
        parts = [{"type": "input_text", "text": "What is it?"},
                 {"type": "input_image", "image_url": png}]  # fmt: skip
        first = await client.post(
            RESPONSES, json={"input": [{"role": "user", "content": parts}]}, headers=AUTH
        )
        page = await client.get(
            f"{RESPONSES}/{(await first.json())['id']}/input_items", headers=AUTH
        )
        item_id = (await page.json())["data"][0]["id"]
        body = {"input": [{"type": "item_reference", "id": item_id}]}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["message"] == (
            f"Item '{item_id}' held images, whose data is not kept: send it whole."
        )

    async def test_an_item_of_a_response_not_stored_is_not_found(self, client: Client) -> None:
        first = await client.post(RESPONSES, json={"input": "a", "store": False}, headers=AUTH)
        item_id = (await first.json())["output"][0]["id"]
        body = {"input": [{"type": "item_reference", "id": item_id}]}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["message"] == f"Item with id '{item_id}' not found."


class TestPreviousResponse:
    async def test_another_agent_is_refused(self, gateway: MakeClient) -> None:
        agents = {"agents": {"list": [{"id": "main", "default": True}, {"id": "beta"}]}}
        client = await gateway(merged(RESPONSES_ON, agents))
        first = await (await client.post(RESPONSES, json={"input": "a"}, headers=AUTH)).json()
        body = {"model": "openclaw/beta", "input": "b", "previous_response_id": first["id"]}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "previous_response_id"

    async def test_another_session_header_is_refused(self, client: Client) -> None:
        first = await (await client.post(RESPONSES, json={"input": "a"}, headers=AUTH)).json()
        body = {"input": "b", "previous_response_id": first["id"]}
        headers = {**AUTH, "x-openclaw-session-key": "elsewhere"}
        response = await client.post(RESPONSES, json=body, headers=headers)
        assert response.status == 400

    async def test_continuing_or_cancelling_one_does_not_read_its_body(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where it lives is all they need, not the output the response holds."""
        first = await (await client.post(RESPONSES, json={"input": "a"}, headers=AUTH)).json()
        bodies = BodiesRead(monkeypatch)
        body = {"input": "b", "previous_response_id": first["id"]}
        assert (await client.post(RESPONSES, json=body, headers=AUTH)).status == 200
        cancel = await client.post(f"{RESPONSES}/{first['id']}/cancel", headers=AUTH)
        assert cancel.status == 400
        assert bodies.chars == 0

    async def test_the_continued_session_is_echoed(self, client: Client) -> None:
        first = await client.post(RESPONSES, json={"input": "a"}, headers=AUTH)
        key = first.headers["x-openclaw-session-key"]
        body = {"input": "b", "previous_response_id": (await first.json())["id"]}
        second = await client.post(RESPONSES, json=body, headers=AUTH)
        assert second.headers["x-openclaw-session-key"] == key

    async def test_a_response_of_a_deleted_session_is_not_found(self, client: Client) -> None:
        """`sessions.delete` with `deleteTranscript: false` keeps the transcript, archived,
        but there is no session left to continue: not a fresh one under the old key."""
        first = await client.post(RESPONSES, json={"input": "a", "user": "erin"}, headers=AUTH)
        response_id = (await first.json())["id"]
        registry = client.app[STATE].registry
        assert registry is not None
        assert await registry.delete(first.headers["x-openclaw-session-key"], False)
        body = {"input": "b", "previous_response_id": response_id}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        assert await response.json() == {
            "error": {"message": f"Previous response with id '{response_id}' not found.",
                      "type": "invalid_request_error", "param": "previous_response_id",
                      "code": "previous_response_not_found"}
        }  # fmt: skip

    async def test_a_response_from_before_a_reset_is_not_found(self, client: Client) -> None:
        """The session's conversation that the response answered in is archived: the reset
        session under the same key would answer without it."""
        first = await client.post(RESPONSES, json={"input": "a", "user": "fay"}, headers=AUTH)
        response_id = (await first.json())["id"]
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.reset(first.headers["x-openclaw-session-key"])
        body = {"input": "b", "previous_response_id": response_id}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "previous_response_not_found"

    async def test_a_response_of_a_deleted_session_whose_key_was_used_again_is_not_found(
        self, client: Client
    ) -> None:
        first = await client.post(RESPONSES, json={"input": "a", "user": "gus"}, headers=AUTH)
        response_id = (await first.json())["id"]
        registry = client.app[STATE].registry
        assert registry is not None
        assert await registry.delete(first.headers["x-openclaw-session-key"], False)
        again = await client.post(RESPONSES, json={"input": "new", "user": "gus"}, headers=AUTH)
        assert (await again.json())["output"][0]["content"][0]["text"] == "[turn 1] new"
        body = {"input": "b", "previous_response_id": response_id}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "previous_response_not_found"


ORPHAN_OUTPUT = {"type": "function_call_output", "call_id": "call_zzz", "output": "sunny"}
ORPHAN_MESSAGE = (
    "Invalid tool result for 'call_zzz': it answers no tool call before it (an unknown id,"
    " or a call already answered)."
)
WEATHER_TOOL = {"type": "function", "name": "get_weather"}


class TestOutputsThatAnswerNoCall:
    """A `function_call_output` must answer a `function_call` before it: the upstreams
    refuse a conversation with one that does not."""

    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_new_conversation_is_refused_before_a_stream_opens(
        self, client: Client, stream: bool
    ) -> None:
        body = {
            "input": [{"role": "user", "content": "Weather?"}, ORPHAN_OUTPUT],
            "tools": [WEATHER_TOOL],
            "stream": stream,
        }
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        error = (await response.json())["error"]
        assert (error["message"], error["param"]) == (ORPHAN_MESSAGE, "input")

    async def test_a_continued_one_is_refused(self, client: Client) -> None:
        first = await client.post(RESPONSES, json={"input": "a", "user": "finn"}, headers=AUTH)
        key = first.headers["x-openclaw-session-key"]
        body = {"input": [ORPHAN_OUTPUT], "previous_response_id": (await first.json())["id"]}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["message"] == ORPHAN_MESSAGE
        stored = await stored_messages(client, key)
        assert [m.role for m in stored] == ["user", "assistant"]


class TestClientDisconnect:
    async def test_a_cut_stream_aborts_the_run(
        self, gateway: MakeClient, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
    ) -> None:
        upstream.script(Stream(("Hel", "lo", " there"), delay=10.0))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        headers = {**AUTH, "x-openclaw-session-key": "cut"}
        with NoErrorLogs(caplog) as logs:
            response = await client.post(
                RESPONSES, json={"input": "hi", "stream": True}, headers=headers
            )
            while b"output_text.delta" not in await response.content.readuntil(b"\n\n"):
                pass
            response.close()
            await upstream.last.wait_gone(within=1.0)
        assert logs.errors() == []
        reply = (await stored_messages(client, "agent:main:cut"))[1]
        assert (reply.text, reply.aborted) == ("Hel", True)

    async def test_a_cut_reply_in_stretches_is_listed_as_its_items(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A reply cut short (its client left) is given to the model later, and listed as
        the items it was answered with: its reasoning, each stretch of text, by id."""
        events = openai_sse(
            {"reasoning_content": "R"},
            {"content": "A"},
            {"reasoning_content": "S"},
            {"content": "B"},
        ).split(b"\n\n")
        pieces = (b"\n\n".join(events[:4]) + b"\n\n", b"\n\n".join(events[4:]))
        upstream.script(Raw(pieces, delay=10.0), Stream(("next",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        response = await client.post(RESPONSES, json={"input": "hi", "stream": True}, headers=AUTH)
        added: list[str] = []
        response_id = ""
        while True:
            event = await response.content.readuntil(b"\n\n")
            data = json.loads(event.split(b"data: ", 1)[1])
            if data["type"] == "response.created":
                response_id = data["response"]["id"]
            if data["type"] == "response.output_item.added":
                added.append(data["item"]["id"])
            if b'"delta":"B"' in event:
                break
        response.close()
        await upstream.last.wait_gone(within=1.0)
        while client.app[openresponses.RUNNING]:  # stored as the run ends
            await asyncio.sleep(0.01)
        first = added[0].removeprefix("rs_")
        body = {"input": "next", "previous_response_id": response_id}
        later = await client.post(RESPONSES, json=body, headers=AUTH)
        page = await client.get(f"{RESPONSES}/{(await later.json())['id']}/input_items?order=asc",
                                headers=AUTH)  # fmt: skip
        listed = [(item["id"], item["type"]) for item in (await page.json())["data"]]
        assert added == [f"rs_{first}", f"msg_{first}", f"rs_{first}_1", f"msg_{first}_1"]
        assert listed[1:-1] == list(zip(added, ["reasoning", "message"] * 2, strict=True))

    async def test_a_call_after_one_cut_off_keeps_its_id(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        """A call cut off in its arguments is not given to the model again; the calls after
        it are listed (and found by reference) under the ids they were answered with."""
        events = openai_sse(
            {"tool_calls": [_call_head(0, "call_a", "f"), _call_head(1, "call_b", "g")]},
            {"tool_calls": [{"index": 1, "function": {"arguments": '{"y":2}'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]},
        ).split(b"\n\n")
        pieces = (b"\n\n".join(events[:3]) + b"\n\n", b"\n\n".join(events[3:]))
        upstream.script(Raw(pieces, delay=10.0), Stream(("next",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        tools = [{"type": "function", "name": "f"}, {"type": "function", "name": "g"}]
        body: dict[str, Any] = {"input": "hi", "stream": True, "tools": tools}
        response = await client.post(RESPONSES, json=body, headers=AUTH)
        response_id = ""
        while True:  # the cut call's fragment comes last: the other call's are in
            event = await response.content.readuntil(b"\n\n")
            data = json.loads(event.split(b"data: ", 1)[1])
            response_id = response_id or data["response"]["id"]
            if data.get("delta") == '{"x":':
                break
        response.close()
        await upstream.last.wait_gone(within=1.0)
        while client.app[openresponses.RUNNING]:  # stored as the run ends
            await asyncio.sleep(0.01)
        stored = await (await client.get(f"{RESPONSES}/{response_id}", headers=AUTH)).json()
        answered = {item["call_id"]: item["id"] for item in stored["output"]}
        assert list(answered) == ["call_a", "call_b"]
        body = {"input": "next", "previous_response_id": response_id, "tools": tools}
        later = await client.post(RESPONSES, json=body, headers=AUTH)
        page = await client.get(f"{RESPONSES}/{(await later.json())['id']}/input_items",
                                headers=AUTH)  # fmt: skip
        listed = [(i["call_id"], i["id"]) for i in (await page.json())["data"] if "call_id" in i]
        assert ("call_b", answered["call_b"]) in listed
        assert "call_a" not in dict(listed)
        result = {"type": "function_call_output", "call_id": "call_b", "output": "2"}
        reference = {"type": "item_reference", "id": answered["call_b"]}
        body = {"input": [{"role": "user", "content": "hi"}, reference, result], "tools": tools}
        upstream.script(Stream(("ok",)))
        found = await client.post(RESPONSES, json=body, headers=AUTH)
        assert found.status == 200, await found.text()
        given = upstream.last.body["messages"]
        assert [c["id"] for m in given for c in m.get("tool_calls", [])] == ["call_b"]
        # Not listed, not found: the model is not given a call cut off in its arguments.
        cut = {"type": "item_reference", "id": answered["call_a"]}
        body = {"input": [{"role": "user", "content": "hi"}, cut], "tools": tools}
        refused = await client.post(RESPONSES, json=body, headers=AUTH)
        assert refused.status == 400
        message = f"Item with id '{answered['call_a']}' not found."
        assert (await refused.json())["error"]["message"] == message

    @pytest.mark.parametrize(
        "broken",
        [Stream(("Hel", "lo"), error_after=1), Stream((), reasoning=("Hmm",), error_after=0)],
        ids=["text", "reasoning alone"],
    )
    async def test_a_reply_that_failed_midway_is_listed_as_answered(
        self, gateway: MakeClient, upstream: FakeOpenAI, broken: Stream
    ) -> None:
        """A reply the upstream broke off is listed later (the model is given what it said)
        as its failed response closed its items: incomplete, and no placeholder message
        (only a response that ends gives one)."""
        upstream.script(broken, Stream(("B",)))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        headers = {**AUTH, "x-openclaw-session-key": "broken"}
        body = {"input": "first", "stream": True}
        events = (await (await client.post(RESPONSES, json=body, headers=headers)).text()).split(
            "\n\n"
        )
        failed = json.loads(events[-2].split("data: ", 1)[1])["response"]
        assert failed["status"] == "failed"
        answered = [(item["id"], item["type"], item.get("status")) for item in failed["output"]]
        assert [kind for _, kind, _ in answered] == ["reasoning" if broken.reasoning else "message"]
        assert all(status in ("incomplete", None) for _, _, status in answered)
        later = await client.post(RESPONSES, json={"input": "other"}, headers=headers)
        page = await client.get(
            f"{RESPONSES}/{(await later.json())['id']}/input_items?order=asc", headers=AUTH
        )
        listed = [(i["id"], i["type"], i.get("status")) for i in (await page.json())["data"]]
        assert listed[1:-1] == answered

    async def test_a_waiting_client_that_leaves_aborts_the_run(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        await left_while_waiting(gateway, upstream)  # its upstream request is cut, or it raises


async def left_while_waiting(gateway: MakeClient, upstream: FakeOpenAI) -> Client:
    """A gateway whose non-streamed request on session `gone` was left by its client while
    the model answered. Raises unless the run's upstream request is cut within a second."""
    upstream.script(Stream(("Hel", "lo"), delay=10.0))
    client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
    headers = {**AUTH, "x-openclaw-session-key": "gone"}
    request = asyncio.create_task(client.post(RESPONSES, json={"input": "hi"}, headers=headers))
    await upstream.wait_for_requests(1)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await upstream.last.wait_gone(within=1.0)
    return client


async def stored_response(client: Client, response_id: str, within: float = 2.0) -> Any:
    """The stored response object, once there: a client that left has its response stored
    after the run's end, with nobody answered to wait for (until then it is `in_progress`)."""
    async with asyncio.timeout(within):
        while True:
            response = await client.get(f"{RESPONSES}/{response_id}", headers=AUTH)
            if response.status != 404:
                assert response.status == 200
                body = await response.json()
                if body["status"] != "in_progress":
                    return body
            await asyncio.sleep(0.01)


async def created_id(response: Any) -> str:
    """The response id that a stream's `response.created` gave its client."""
    event = json.loads((await response.content.readuntil(b"\n\n")).split(b"data: ", 1)[1])
    assert event["type"] == "response.created"
    return str(event["response"]["id"])


class TestAClientThatLeftStillHasItsResponseStored:
    """The response object is stored whenever its turn is, so the id a stream announced in
    `response.created` is found later, also when the client left before the end."""

    async def test_when_it_left_as_the_run_ended(
        self, gateway: MakeClient, upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The turn's commit is held until the gateway noticed the client gone: the run then
        # completes, and its terminal event reaches a relay whose client has left.
        upstream.script(Stream(("Hel", "lo")))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        committing, release, noticed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        store = client.app[STATE].store
        append_turn = type(store).append_turn

        async def held(self: Any, turn: TurnRecord) -> Any:
            committing.set()
            await release.wait()
            return await append_turn(self, turn)

        class NotedWatch(runs.ClientWatch):
            def _check(self) -> None:
                super()._check()
                if self.gone:
                    noticed.set()

        monkeypatch.setattr(type(store), "append_turn", held)
        monkeypatch.setattr(runs, "ClientWatch", NotedWatch)
        headers = {**AUTH, "x-openclaw-session-key": "left"}
        response = await client.post(
            RESPONSES, json={"input": "hi", "stream": True}, headers=headers
        )
        response_id = await created_id(response)
        await committing.wait()
        response.close()
        await noticed.wait()
        release.set()
        stored = await stored_response(client, response_id)
        assert (stored["status"], stored["output"][0]["content"][0]["text"]) == (
            "completed",
            "Hello",
        )

    async def test_when_it_left_mid_run_what_was_produced_is_stored_incomplete(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("Hel", "lo", " there"), delay=10.0))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        headers = {**AUTH, "x-openclaw-session-key": "cut"}
        response = await client.post(
            RESPONSES, json={"input": "hi", "stream": True}, headers=headers
        )
        response_id = await created_id(response)
        while b"output_text.delta" not in await response.content.readuntil(b"\n\n"):
            pass
        response.close()
        stored = await stored_response(client, response_id)
        assert (stored["status"], stored["incomplete_details"]) == ("incomplete", None)
        assert [(item["type"], item["status"], item["content"][0]["text"])
                for item in stored["output"]] == [("message", "incomplete", "Hel")]  # fmt: skip

    async def test_also_when_it_was_not_streamed(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        # It never saw the id, but its turn carries it (the run id in the session's history).
        client = await left_while_waiting(gateway, upstream)
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.wait_idle()
        reply = (await stored_messages(client, "agent:main:gone"))[1]
        assert reply.run_id is not None
        stored = await stored_response(client, reply.run_id)
        assert (stored["status"], stored["output"][0]["content"][0]["text"]) == (
            "incomplete",
            "Hel",
        )

    async def test_not_when_it_asked_not_to(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        upstream.script(Stream(("Hel", "lo", " there"), delay=10.0))
        client = await gateway(merged(RESPONSES_ON, fake_provider(upstream)))
        headers = {**AUTH, "x-openclaw-session-key": "unkept"}
        body = {"input": "hi", "stream": True, "store": False}
        response = await client.post(RESPONSES, json=body, headers=headers)
        response_id = await created_id(response)
        while b"output_text.delta" not in await response.content.readuntil(b"\n\n"):
            pass
        response.close()
        await upstream.last.wait_gone(within=1.0)
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.wait_idle()
        with pytest.raises(TimeoutError):
            await stored_response(client, response_id, within=0.2)


# 500,000 input messages (18 MB): building the conversation from them takes seconds.
SLOW_INPUT = json.dumps(
    {"input": [{"role": "assistant", "content": "a"}] * 500_000}, separators=(",", ":")
)


class TestLargeBodiesHoldUpNoOtherClient:
    """`GET /healthz`, sent once the conversation of a slow body began to be built, is answered
    first only if building it let the event loop run."""

    async def test_an_input_slow_to_build(
        self, gateway: MakeClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        client = await gateway(RESPONSES_ON)
        building = call_started(monkeypatch, openresponses, "build_input")
        order, answer = await order_of_answers(client, RESPONSES, SLOW_INPUT, building)
        assert answer == (
            400,
            '{"error":{"message":"Missing user message in `input`.",'
            '"type":"invalid_request_error","param":"input","code":null}}',
        )
        assert order == ["/healthz", RESPONSES]


@pytest.mark.postgres
class TestRunningOnAnotherProcess:
    """Two gateways sharing one PostgreSQL store: a response running on one is answered as
    running by the other too, as by its own process, until it is stored."""

    async def test_the_other_process_answers_it_running(
        self, gateway: MakeClient, upstream: FakeOpenAI, pg_url: str
    ) -> None:
        upstream.script(Stream(("Hel", "lo"), stall_after=1))
        store = {"store": {"backend": "postgres", "url": pg_url}}
        settings = merged(merged(RESPONSES_ON, fake_provider(upstream)), store)
        a, b = await gateway(settings), await gateway(settings)
        headers = {**AUTH, "x-openclaw-session-key": "shared"}
        body = {"input": "hi", "stream": True}
        response = await a.post(RESPONSES, json=body, headers=headers)
        created = json.loads((await response.content.readuntil(b"\n\n")).split(b"data: ", 1)[1])
        response_id = created["response"]["id"]
        while b"output_text.delta" not in await response.content.readuntil(b"\n\n"):
            pass
        path = f"{RESPONSES}/{response_id}"
        got = await b.get(path, headers=AUTH)
        assert got.status == 200
        assert got.headers["x-openclaw-session-key"] == "agent:main:shared"
        assert (await got.json())["status"] == "in_progress"
        assert (await got.json())["id"] == response_id
        later = {"input": "next", "previous_response_id": response_id}
        refusals = [
            await b.delete(path, headers=AUTH),
            await b.get(f"{path}/input_items", headers=AUTH),
            await b.post(RESPONSES, json=later, headers=AUTH),
        ]
        for refused in refusals:
            assert refused.status == 409, await refused.text()
        cancel = await b.post(f"{path}/cancel", headers=AUTH)
        assert cancel.status == 400
        response.close()  # the run is aborted, its response stored, its mark let go
        await upstream.last.wait_gone(within=1.0)
        while a.app[openresponses.RUNNING]:
            await asyncio.sleep(0.01)
        store = a.app[STATE].store
        while await store.call_going_on(openresponses.RUNNING_SCOPE + response_id):
            await asyncio.sleep(0.01)
        stored = await b.get(path, headers=AUTH)
        assert (await stored.json())["status"] == "incomplete"
        assert (await b.delete(path, headers=AUTH)).status == 200
        assert (await a.get(path, headers=AUTH)).status == 404

    async def test_an_item_of_it_is_a_conflict_on_the_other_process(
        self, gateway: MakeClient, upstream: FakeOpenAI, pg_url: str
    ) -> None:
        """Referred to by `item_reference` on the other process: the 409 of its
        `previous_response_id` there, not an item not found."""
        upstream.script(Stream(("Hel", "lo"), stall_after=1))
        store = {"store": {"backend": "postgres", "url": pg_url}}
        settings = merged(merged(RESPONSES_ON, fake_provider(upstream)), store)
        a, b = await gateway(settings), await gateway(settings)
        response = await a.post(RESPONSES, json={"input": "hi", "stream": True}, headers=AUTH)
        response_id, item_id = "", ""
        while True:
            event = json.loads((await response.content.readuntil(b"\n\n")).split(b"data: ", 1)[1])
            response_id = response_id or event["response"]["id"]
            if event["type"] == "response.output_item.added":
                item_id = event["item"]["id"]
            if event["type"] == "response.output_text.delta":
                break
        reference = {"type": "item_reference", "id": item_id}
        body = {"input": [reference, {"role": "user", "content": "and?"}]}
        refused = await b.post(RESPONSES, json=body, headers=AUTH)
        assert refused.status == 409
        assert (await refused.json())["error"] == {
            "message": f"Response with id '{response_id}' is still in progress.",
            "type": "invalid_request_error", "param": "input", "code": "response_in_progress",
        }  # fmt: skip
        response.close()
        await upstream.last.wait_gone(within=1.0)
        while a.app[openresponses.RUNNING]:  # ended, stored, before the database goes
            await asyncio.sleep(0.01)
        store = a.app[STATE].store
        while await store.call_going_on(openresponses.RUNNING_SCOPE + response_id):
            await asyncio.sleep(0.01)

    async def test_a_mark_made_again_after_an_outage_still_answers_it_in_progress(
        self,
        gateway: MakeClient,
        upstream: FakeOpenAI,
        pg_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A mark whose lease ran out while the database was away is made again by its
        renewals: with the `in_progress` object, which the other process answers a GET
        with, as before the outage (not a 409)."""
        monkeypatch.setattr(session, "QUEUED_LEASE_S", 0.6)  # renewed every 0.2 s
        upstream.script(Stream(("Hel", "lo"), stall_after=1))
        store = {"store": {"backend": "postgres", "url": pg_url}}
        settings = merged(merged(RESPONSES_ON, fake_provider(upstream)), store)
        a, b = await gateway(settings), await gateway(settings)
        response = await a.post(RESPONSES, json={"input": "hi", "stream": True}, headers=AUTH)
        created = json.loads((await response.content.readuntil(b"\n\n")).split(b"data: ", 1)[1])
        response_id = created["response"]["id"]
        path = f"{RESPONSES}/{response_id}"
        before = await b.get(path, headers=AUTH)
        assert before.status == 200
        conn = await asyncpg.connect(pg_url)
        try:
            await forget_the_claim(conn)  # its lease ran out, the database away
        finally:
            await conn.close()
        scope = openresponses.RUNNING_SCOPE + response_id
        shared = a.app[STATE].store
        async with asyncio.timeout(10):
            while not await shared.call_going_on(scope):  # made again by a renewal
                await asyncio.sleep(0.02)
        after = await b.get(path, headers=AUTH)
        assert after.status == 200, await after.text()
        assert await after.json() == await before.json()
        response.close()
        await upstream.last.wait_gone(within=1.0)
        async with asyncio.timeout(10):
            while await shared.call_going_on(scope):  # stored, let go
                await asyncio.sleep(0.02)

    async def test_the_mark_of_a_process_gone_is_forgotten(
        self, gateway: MakeClient, pg_url: str
    ) -> None:
        """A process that died leaves its mark for one lease: then the response is unknown."""
        client = await gateway(
            merged(RESPONSES_ON, {"store": {"backend": "postgres", "url": pg_url}})
        )
        store = client.app[STATE].store
        response_id = "resp_" + "1" * 32
        scope = openresponses.RUNNING_SCOPE + response_id
        await store.claim_call(scope, response_id, "agent:main:k", 0, answer="{}")  # lease out
        path = f"{RESPONSES}/{response_id}"
        for answer in (
            await client.get(path, headers=AUTH),
            await client.delete(path, headers=AUTH),
        ):
            assert answer.status == 404
