"""gateway.openai_wire: the request pipeline's pure steps and the response encoding."""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.config import AgentConfig, AgentsConfig, ModelRef
from agents.errors import (
    AgentError,
    MalformedStream,
    StoreError,
    UnknownAgent,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
)
from agents.providers.base import Usage
from gateway.config import ChatCompletionsConfig, ImagesConfig
from gateway.openai_wire import (
    AgentSelection,
    ChunkEncoder,
    RequestError,
    build_prompt,
    completion_body,
    decode_model_id,
    error_reply,
    json_type,
    model_ids,
    parse_body,
    resolve_session_key,
    select_agent,
    validate_fields,
)
from gateway.responses import dumps

ECHO = (ModelRef("echo", "echo"),)
AGENTS = AgentsConfig(agents=(AgentConfig("main", ECHO, default=True), AgentConfig("beta", ECHO)))
LIMITS = ChatCompletionsConfig()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def refusal(exc: pytest.ExceptionInfo[RequestError]) -> tuple[int, dict[str, Any]]:
    return exc.value.status, exc.value.body()["error"]


def error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": code}


class TestBody:
    def test_an_object_is_parsed(self) -> None:
        assert parse_body(b'{"a":1}') == {"a": 1}

    @pytest.mark.parametrize("raw", [b"", b"  \n\t ", b"[1,2]", b'"text"', b"null", b"3"])
    def test_empty_whitespace_or_a_non_object_is_an_empty_object(self, raw: bytes) -> None:
        assert parse_body(raw) == {}

    def test_invalid_json_answers_with_the_parsers_message(self) -> None:
        with pytest.raises(RequestError) as exc:
            parse_body(b"{not json")
        assert refusal(exc) == (
            400,
            error("Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        )

    def test_json5_is_not_accepted(self) -> None:
        with pytest.raises(RequestError):
            parse_body(b"{model: 'openclaw',}")

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    def test_non_standard_constants_are_refused(self, constant: str) -> None:
        with pytest.raises(RequestError) as exc:
            parse_body(f'{{"temperature":{constant}}}'.encode())
        assert exc.value.status == 400

    def test_non_utf8_is_refused(self) -> None:
        with pytest.raises(RequestError) as exc:
            parse_body(b'{"model":"\xff"}')
        assert refusal(exc) == (400, error("Request body is not valid UTF-8."))

    def test_nesting_deeper_than_the_stack_is_a_400_not_a_crash(self) -> None:
        with pytest.raises(RequestError) as exc:
            parse_body(b"[" * 100_000)
        assert exc.value.status == 400


class TestFieldTypes:
    @pytest.mark.parametrize(
        ("value", "name"),
        [
            (None, "null"),
            (True, "boolean"),
            (1, "number"),
            (1.5, "number"),
            ("", "string"),
            ([], "array"),
            ({}, "object"),
        ],
    )
    def test_json_type_names(self, value: Any, name: str) -> None:
        assert json_type(value) == name


# Every §5 failure: (body, message, param, code), in the table's order.
FIELD_ERRORS = [
    ({"stream": "yes"}, "stream: Expected boolean, received string", "stream", None),
    ({"stream": 1}, "stream: Expected boolean, received number", "stream", None),
    ({"stream_options": []}, "stream_options: Expected object, received array",
     "stream_options", None),
    ({"stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage: Expected boolean, received string", "stream_options", None),
    ({"n": 2}, "n>1 is not supported.", "n", "unsupported_parameter"),
    ({"n": 0}, "`n` must be a positive integer.", "n", None),
    ({"n": 1.5}, "`n` must be a positive integer.", "n", None),
    ({"n": True}, "`n` must be a positive integer.", "n", None),
    ({"n": "1"}, "`n` must be a positive integer.", "n", None),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools are not supported yet.", "tools", "unsupported_parameter"),
    ({"tools": {}}, "tools are not supported yet.", "tools", "unsupported_parameter"),
    ({"functions": [{"name": "f"}]}, "tools are not supported yet.", "functions",
     "unsupported_parameter"),
    ({"tool_choice": "required"}, "tools are not supported yet.", "tool_choice",
     "unsupported_parameter"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}},
     "tools are not supported yet.", "tool_choice", "unsupported_parameter"),
    ({"function_call": {"name": "f"}}, "tools are not supported yet.", "function_call",
     "unsupported_parameter"),
    ({"temperature": 5}, "`temperature` must be between 0 and 2.", "temperature", None),
    ({"temperature": -0.1}, "`temperature` must be between 0 and 2.", "temperature", None),
    ({"temperature": "1"}, "temperature: Expected number, received string", "temperature", None),
    ({"temperature": True}, "temperature: Expected number, received boolean", "temperature",
     None),
    ({"top_p": 1.01}, "`top_p` must be between 0 and 1.", "top_p", None),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be between -2.0 and 2.0.",
     "frequency_penalty", None),
    ({"presence_penalty": -3}, "`presence_penalty` must be between -2.0 and 2.0.",
     "presence_penalty", None),
    ({"seed": 1.5}, "`seed` must be an integer.", "seed", None),
    ({"seed": "7"}, "`seed` must be an integer.", "seed", None),
    ({"seed": False}, "`seed` must be an integer.", "seed", None),
    ({"max_tokens": 0}, "max_tokens must be a positive safe integer", "max_tokens", None),
    ({"max_tokens": 2**53}, "max_tokens must be a positive safe integer", "max_tokens", None),
    ({"max_tokens": True}, "max_tokens must be a positive safe integer", "max_tokens", None),
    ({"max_completion_tokens": -1}, "max_completion_tokens must be a positive safe integer",
     "max_completion_tokens", None),
    ({"stop": ["a", "b", "c", "d", "e"]}, "Invalid stop: stop supports at most 4 sequences",
     "stop", None),
    ({"stop": ["a", ""]}, "Invalid stop: stop entries must be non-empty strings", "stop", None),
    ({"stop": ["a", 1]}, "Invalid stop: stop entries must be non-empty strings", "stop", None),
    ({"stop": ""}, "Invalid stop: stop entries must be non-empty strings", "stop", None),
    ({"stop": 3}, "Invalid stop: stop entries must be non-empty strings", "stop", None),
    ({"response_format": {"type": "xml"}},
     "Invalid response_format: response_format.type must be text, json_object, or json_schema",
     "response_format", None),
    ({"response_format": "json"},
     "Invalid response_format: response_format.type must be text, json_object, or json_schema",
     "response_format", None),
]  # fmt: skip


class TestFields:
    @pytest.mark.parametrize(("body", "message", "param", "code"), FIELD_ERRORS)
    def test_each_invalid_field_gets_its_message(
        self, body: dict[str, Any], message: str, param: str, code: str | None
    ) -> None:
        with pytest.raises(RequestError) as exc:
            validate_fields(body)
        assert refusal(exc) == (400, error(message, param, code))

    def test_the_first_failure_in_table_order_wins(self) -> None:
        with pytest.raises(RequestError) as exc:
            validate_fields({"temperature": 9, "n": 3, "stream": "x"})
        assert exc.value.param == "stream"

    def test_null_counts_as_absent_everywhere(self) -> None:
        fields = [
            "stream",
            "stream_options",
            "n",
            "tools",
            "functions",
            "tool_choice",
            "function_call",
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "seed",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "response_format",
            "user",
        ]
        assert validate_fields(dict.fromkeys(fields)) == validate_fields({})

    @pytest.mark.parametrize(
        "body",
        [
            {"n": 1},
            {"tools": []},
            {"functions": []},
            {"tool_choice": "none"},
            {"tool_choice": "auto"},
            {"function_call": "auto"},
            {"logprobs": True},
            {"logit_bias": {"1": 2}},
            {"metadata": {"a": "b"}},
            {"unknown_field": 1},
        ],
    )
    def test_accepted_fields_that_change_nothing(self, body: dict[str, Any]) -> None:
        assert validate_fields(body).params == {}

    def test_sampling_fields_are_forwarded(self) -> None:
        body = {
            "temperature": 0,
            "top_p": 1,
            "frequency_penalty": -2,
            "presence_penalty": 2.0,
            "seed": 42,
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": ["x"],
            "response_format": {"type": "json_object"},
        }
        assert validate_fields(body).params == body

    def test_integral_floats_count_as_integers(self) -> None:
        assert validate_fields({"n": 1.0, "seed": 3.0, "max_tokens": 5.0}).params == {
            "seed": 3,
            "max_tokens": 5,
        }

    def test_an_empty_stop_list_asks_for_nothing(self) -> None:
        assert validate_fields({"stop": []}).params == {}

    def test_stream_and_usage_flags(self) -> None:
        fields = validate_fields({"stream": True, "stream_options": {"include_usage": True}})
        assert (fields.stream, fields.include_usage) == (True, True)

    def test_a_non_string_user_is_ignored(self) -> None:
        assert validate_fields({"user": 42}).user is None
        assert validate_fields({"user": "Alice"}).user == "Alice"


class TestAgentSelection:
    @pytest.mark.parametrize(
        "model", [None, 7, "", "  ", "openclaw", "OpenClaw", "openclaw/default"]
    )
    def test_the_default_agent(self, model: Any) -> None:
        selection = select_agent(model, None, AGENTS)
        assert (selection.agent_id, selection.explicit) == ("main", False)

    @pytest.mark.parametrize(
        "model", ["openclaw/beta", "openclaw:beta", "agent:beta", "OPENCLAW/Beta", " agent:beta "]
    )
    def test_agent_forms_of_model(self, model: str) -> None:
        selection = select_agent(model, None, AGENTS)
        assert (selection.agent_id, selection.explicit) == ("beta", True)

    def test_the_model_is_echoed_exactly_as_sent(self) -> None:
        assert select_agent(" OpenClaw:Beta ", None, AGENTS).model == " OpenClaw:Beta "
        assert select_agent(None, None, AGENTS).model == "openclaw"
        assert select_agent(["x"], None, AGENTS).model == "openclaw"

    def test_an_unknown_agent_in_the_model(self) -> None:
        with pytest.raises(RequestError) as exc:
            select_agent("openclaw/nosuchagent", None, AGENTS)
        assert refusal(exc) == (400, error("Unknown agent 'nosuchagent'.", "model"))

    @pytest.mark.parametrize(
        "model", ["gpt-4o", "openai/", "anthropic/claude-sonnet-4-5", "openclaw/", "openclaw/a/b"]
    )
    def test_a_foreign_model_is_invalid(self, model: str) -> None:
        with pytest.raises(RequestError) as exc:
            select_agent(model, None, AGENTS)
        assert refusal(exc) == (
            400,
            error("Invalid `model`. Use `openclaw` or `openclaw/<agentId>`.", "model"),
        )

    def test_the_header_wins_and_the_model_is_only_echoed(self) -> None:
        assert select_agent("gpt-4o", " Beta ", AGENTS) == AgentSelection("beta", "gpt-4o", True)

    def test_an_unknown_agent_in_the_header(self) -> None:
        with pytest.raises(RequestError) as exc:
            select_agent("openclaw", "nosuchagent", AGENTS)
        assert refusal(exc) == (400, error("Unknown agent 'nosuchagent'."))


DEFAULT = AgentSelection("main", "openclaw", explicit=False)
NAMED_MAIN = AgentSelection("main", "openclaw/main", explicit=True)


class TestSessionKey:
    def test_no_header_and_no_user_is_a_fresh_key_per_request(self) -> None:
        first = resolve_session_key(None, None, DEFAULT, AGENTS).session_key
        second = resolve_session_key("  ", "  ", DEFAULT, AGENTS).session_key
        assert first.startswith("agent:main:openai:") and second.startswith("agent:main:openai:")
        assert first != second

    def test_user_gives_a_stable_lowercased_key(self) -> None:
        route = resolve_session_key(None, " Alice ", DEFAULT, AGENTS)
        assert route.session_key == "agent:main:openai-user:alice"

    def test_a_plain_header_key_is_prefixed_and_lowercased(self) -> None:
        route = resolve_session_key("My-Chat", "Alice", DEFAULT, AGENTS)
        assert route.session_key == "agent:main:my-chat"

    def test_main_is_the_agents_main_session(self) -> None:
        assert resolve_session_key("MAIN", None, DEFAULT, AGENTS).session_key == "agent:main:main"

    def test_an_agent_key_picks_its_agent(self) -> None:
        route = resolve_session_key("Agent:Beta:Thread-1", None, DEFAULT, AGENTS)
        assert (route.agent_id, route.session_key) == ("beta", "agent:beta:thread-1")

    @pytest.mark.parametrize(
        "key", ["subagent:x", "cron:job", "ACP:x", "agent:main:subagent:x", "agent:beta:cron:y"]
    )
    def test_reserved_namespaces_are_refused(self, key: str) -> None:
        with pytest.raises(RequestError) as exc:
            resolve_session_key(key, None, DEFAULT, AGENTS)
        assert refusal(exc) == (
            400,
            error("`x-openclaw-session-key` cannot use reserved internal session namespaces."),
        )

    @pytest.mark.parametrize("key", ["agent:", "agent:main", "agent:main:", "agent:Bad Id:x"])
    def test_malformed_agent_keys_are_refused(self, key: str) -> None:
        with pytest.raises(RequestError) as exc:
            resolve_session_key(key, None, DEFAULT, AGENTS)
        assert refusal(exc) == (400, error("Invalid `x-openclaw-session-key`."))

    def test_a_key_of_an_unknown_agent_is_refused(self) -> None:
        with pytest.raises(RequestError) as exc:
            resolve_session_key("agent:ghost:k", None, DEFAULT, AGENTS)
        assert refusal(exc) == (400, error("Unknown agent 'ghost'."))

    def test_a_key_of_another_agent_than_the_one_named(self) -> None:
        with pytest.raises(RequestError) as exc:
            resolve_session_key("agent:beta:k", None, NAMED_MAIN, AGENTS)
        assert refusal(exc) == (
            400,
            error("Session key 'agent:beta:k' belongs to agent 'beta', not 'main'."),
        )

    def test_a_key_of_the_agent_named_is_fine(self) -> None:
        route = resolve_session_key("agent:main:k", None, NAMED_MAIN, AGENTS)
        assert route.session_key == "agent:main:k"

    @pytest.mark.parametrize(("header", "user"), [("k" * 600, None), (None, "u" * 600)])
    def test_keys_over_512_characters_are_refused(
        self, header: str | None, user: str | None
    ) -> None:
        with pytest.raises(RequestError) as exc:
            resolve_session_key(header, user, DEFAULT, AGENTS)
        assert refusal(exc) == (400, error("Session key too long (max 512 characters)."))

    def test_a_key_of_exactly_512_characters_is_fine(self) -> None:
        key = "k" * (512 - len("agent:main:"))
        assert len(resolve_session_key(key, None, DEFAULT, AGENTS).session_key) == 512


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def image(url: str, nested: bool = True) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url} if nested else url}


class TestPrompt:
    def test_the_worked_example(self) -> None:
        prompt = build_prompt(
            [
                {"role": "system", "content": "You are a terse terse test assistant."},
                user("turn one question"),
                assistant("echo: turn one question"),
                user("turn two question"),
            ],
            LIMITS,
        )
        assert prompt.extra_system_prompt == "You are a terse terse test assistant."
        assert prompt.text == (
            "[Chat messages since your last reply - for context]\n"
            "User: turn one question\n"
            "Assistant: echo: turn one question\n"
            "\n"
            "[Current message - respond to this]\n"
            "User: turn two question"
        )

    def test_a_single_user_message_is_used_verbatim(self) -> None:
        assert build_prompt([user("  hello there \n")], LIMITS).text == "hello there"

    def test_system_and_developer_texts_join_the_extra_system_prompt(self) -> None:
        prompt = build_prompt(
            [
                {"role": "system", "content": "A"},
                {"role": "developer", "content": " "},
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                user("hi"),
            ],
            LIMITS,
        )
        assert (prompt.extra_system_prompt, prompt.text) == ("A\n\nB", "hi")

    def test_content_parts_contribute_their_text(self) -> None:
        content = [
            {"type": "text", "text": "one"},
            {"type": "input_text", "text": "two"},
            {"type": "other", "input_text": "three"},
            {"type": "text", "text": ""},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
            "not a part",
        ]
        assert build_prompt([user(content)], LIMITS).text == "one\ntwo\nthree"

    def test_unusable_entries_are_skipped(self) -> None:
        messages = [
            "text",
            3,
            {"content": "no role"},
            {"role": " ", "content": "x"},
            {"role": "User", "content": "case matters"},
            user("hi"),
        ]
        assert build_prompt(messages, LIMITS).text == "hi"

    def test_entries_after_the_active_turn_are_discarded(self) -> None:
        prompt = build_prompt([user("q"), assistant("trailing answer")], LIMITS)
        assert prompt.text == "q"

    def test_without_user_or_tool_the_last_entry_is_active(self) -> None:
        prompt = build_prompt([assistant("a1"), assistant("a2")], LIMITS)
        assert prompt.text.endswith("[Current message - respond to this]\nAssistant: a2")

    def test_history_entries_with_empty_text_are_dropped(self) -> None:
        prompt = build_prompt([user("first"), assistant(""), user("second")], LIMITS)
        assert "Assistant" not in prompt.text

    def test_tool_labels_and_assistant_tool_calls(self) -> None:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q":"x"}'},
        }
        prompt = build_prompt(
            [
                user("find x"),
                assistant(None, tool_calls=[call]),
                {"role": "tool", "tool_call_id": "call_1", "content": "found"},
                {"role": "function", "name": "legacy", "content": "old"},
                {"role": "tool", "content": "anonymous"},
            ],
            LIMITS,
        )
        assert prompt.text == (
            "[Chat messages since your last reply - for context]\n"
            "User: find x\n"
            'Assistant: tool_call id=call_1 name=lookup arguments={"q":"x"}\n'
            "Tool:call_1: found\n"
            "Tool:legacy: old\n"
            "\n"
            "[Current message - respond to this]\n"
            "Tool: anonymous"
        )

    def test_a_lone_tool_turn_keeps_its_label(self) -> None:
        message = {"role": "tool", "tool_call_id": "c9", "content": "result"}
        assert build_prompt([message], LIMITS).text == "Tool:c9: result"

    @pytest.mark.parametrize(
        "messages",
        [
            None,
            "hi",
            [],
            [{"role": "system", "content": "only system"}],
            [user("   ")],
            [user("hi"), user("")],
        ],
    )
    def test_no_user_text_and_no_image_is_a_missing_user_message(self, messages: Any) -> None:
        with pytest.raises(RequestError) as exc:
            build_prompt(messages, LIMITS)
        assert refusal(exc) == (400, error("Missing user message in `messages`.", "messages"))


class TestImages:
    def test_a_png_data_uri_is_accepted(self) -> None:
        prompt = build_prompt(
            [user([{"type": "text", "text": "look"}, image(f"data:image/png;base64,{PNG}")])],
            LIMITS,
        )
        assert prompt.text == "look"
        (only,) = prompt.images
        assert (only.mime_type, only.data_b64, only.size) == ("image/png", PNG, 24)

    def test_the_flat_image_url_form_is_accepted(self) -> None:
        prompt = build_prompt([user([image(f"data:image/png;base64,{PNG}", nested=False)])], LIMITS)
        assert len(prompt.images) == 1

    def test_an_image_only_turn_gets_the_placeholder_text(self) -> None:
        prompt = build_prompt([user([image(f"data:image/png;base64,{PNG}")])], LIMITS)
        assert prompt.text == "User sent image(s) with no text."

    def test_images_of_earlier_turns_are_ignored(self) -> None:
        earlier = user([{"type": "text", "text": "a"}, image("https://example.com/a.png")])
        prompt = build_prompt([earlier, assistant("b"), user("c")], LIMITS)
        assert prompt.images == ()

    @pytest.mark.parametrize(
        ("part", "detail"),
        [
            (image("https://example.com/a.png"), "not a base64 data: URI"),
            (image("data:image/png;base64,"), "empty payload"),
            (image("data:image/png;base64,@@@@"), "not valid base64"),
            (image("data:image/png;base64,abc"), "not valid base64"),
            (image(f"data:image/svg+xml;base64,{PNG}"), "MIME type 'image/svg+xml'"),
            (image(f"data:image/png,{PNG}"), "not a base64 data: URI"),
            ({"type": "image_url", "image_url": {"detail": "high"}}, "no url string"),
        ],
    )
    def test_invalid_images_get_one_generic_message(self, part: Any, detail: str) -> None:
        with pytest.raises(RequestError) as exc:
            build_prompt([user([part])], LIMITS)
        assert refusal(exc) == (
            400,
            error("Invalid image_url content in `messages`.", "messages"),
        )
        assert exc.value.detail is not None and detail in exc.value.detail

    def test_too_many_parts(self) -> None:
        parts = [image(f"data:image/png;base64,{PNG}")] * 9
        with pytest.raises(RequestError) as exc:
            build_prompt([user(parts)], LIMITS)
        assert exc.value.detail == "Too many image_url parts (9; limit 8)"

    def test_an_image_over_the_per_image_limit(self) -> None:
        limits = attrs.evolve(LIMITS, images=ImagesConfig(max_bytes=23))
        with pytest.raises(RequestError) as exc:
            build_prompt([user([image(f"data:image/png;base64,{PNG}")])], limits)
        assert exc.value.detail is not None and "24 bytes" in exc.value.detail

    def test_images_over_the_total_limit(self) -> None:
        limits = attrs.evolve(LIMITS, max_total_image_bytes=40)
        with pytest.raises(RequestError) as exc:
            build_prompt([user([image(f"data:image/png;base64,{PNG}")] * 2)], limits)
        assert exc.value.detail == "images total more than 40 bytes"


class TestChunks:
    encoder = ChunkEncoder("chatcmpl-" + "a" * 32, 1700000000, "openclaw")

    def expected(self, choices: Any, **extra: Any) -> bytes:
        chunk = {
            "id": "chatcmpl-" + "a" * 32,
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "openclaw",
            "choices": choices,
            **extra,
        }
        return f"data: {dumps(chunk)}\n\n".encode()

    def test_the_role_chunk(self) -> None:
        assert self.encoder.role == self.expected(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    @given(st.text())
    def test_a_content_chunk_is_the_compact_json_of_the_delta(self, delta: str) -> None:
        try:
            delta.encode()
        except UnicodeEncodeError:
            # A lone surrogate: escaped, still valid JSON carrying the same string.
            assert json.loads(self.encoder.content(delta)[6:])["choices"][0]["delta"] == {
                "content": delta
            }
            return
        assert self.encoder.content(delta) == self.expected(
            [{"index": 0, "delta": {"content": delta}, "logprobs": None, "finish_reason": None}]
        )

    def test_the_model_is_json_escaped(self) -> None:
        encoder = ChunkEncoder("chatcmpl-x", 1, 'we"ird\nmodel')
        assert json.loads(encoder.role[6:])["model"] == 'we"ird\nmodel'

    @pytest.mark.parametrize(
        ("stop_reason", "finish"),
        [
            ("stop", "stop"),
            ("length", "length"),
            ("content_filter", "content_filter"),
            ("aborted", "stop"),
        ],
    )
    def test_the_finish_chunk(self, stop_reason: str, finish: str) -> None:
        assert self.encoder.finish(stop_reason) == self.expected(
            [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]
        )

    def test_the_usage_chunk(self) -> None:
        assert self.encoder.usage(Usage(2, 4)) == self.expected(
            [], usage={"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
        )


class TestCompletionBody:
    def test_an_empty_reply_reads_no_response(self) -> None:
        body = completion_body("chatcmpl-x", 1, "openclaw", "", "stop", Usage(1, 0))
        assert body["choices"][0]["message"]["content"] == "No response from OpenClaw."

    def test_keys_in_the_specs_order(self) -> None:
        body = completion_body("chatcmpl-x", 1, "m", "hi", "length", Usage(3, 1))
        assert dumps(body) == (
            '{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m","choices":'
            '[{"index":0,"message":{"role":"assistant","content":"hi"},"logprobs":null,'
            '"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1,'
            '"total_tokens":4}}'
        )


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("exc", "status", "type_", "code", "message"),
        [
            (
                UpstreamRateLimited(None),
                429,
                "rate_limit_error",
                None,
                "upstream provider rate limited",
            ),
            (
                UpstreamAuthFailed(403),
                502,
                "api_error",
                "upstream_auth_failed",
                "upstream provider authentication failed",
            ),
            (UpstreamTimeout(), 504, "api_error", None, "upstream provider timeout"),
            (UpstreamError("refused"), 502, "api_error", None, "upstream provider error"),
            (UpstreamStatusError(500), 502, "api_error", None, "upstream provider error"),
            (MalformedStream("bad"), 502, "api_error", None, "upstream provider error"),
            (StoreError("disk"), 500, "api_error", None, "internal error"),
            (AgentError("bug"), 500, "api_error", None, "internal error"),
            (KeyError("bug"), 500, "api_error", None, "internal error"),
            (UnknownAgent("gone"), 400, "invalid_request_error", None, "Unknown agent 'gone'."),
        ],
    )
    def test_each_failure_maps_to_its_row(
        self, exc: BaseException, status: int, type_: str, code: str | None, message: str
    ) -> None:
        reply = error_reply(exc)
        assert (reply.status, reply.body()) == (
            status,
            {"error": {"message": message, "type": type_, "param": None, "code": code}},
        )

    def test_an_upstream_retry_after_is_passed_on(self) -> None:
        assert error_reply(UpstreamRateLimited(7)).headers == {"Retry-After": "7"}
        assert error_reply(UpstreamRateLimited(None)).headers == {}


class TestModels:
    def test_ids_in_order_without_duplicates(self) -> None:
        agents = AgentsConfig(agents=(AgentConfig("a", ECHO), AgentConfig("b", ECHO, default=True)))
        assert model_ids(agents) == ["openclaw", "openclaw/default", "openclaw/b", "openclaw/a"]

    @pytest.mark.parametrize(
        ("raw", "decoded"),
        [
            ("openclaw", "openclaw"),
            ("openclaw%2Fdefault", "openclaw/default"),
            ("openclaw/main", "openclaw/main"),
            ("a%3Ab", "a:b"),
            ("%C3%A9", "é"),
        ],
    )
    def test_ids_are_url_decoded(self, raw: str, decoded: str) -> None:
        assert decode_model_id(raw) == decoded

    @pytest.mark.parametrize("raw", ["%zz", "abc%", "%2", "%ff"])
    def test_bad_percent_encoding(self, raw: str) -> None:
        with pytest.raises(RequestError) as exc:
            decode_model_id(raw)
        assert refusal(exc) == (400, error("Invalid model id encoding."))

    def test_an_empty_id(self) -> None:
        with pytest.raises(RequestError) as exc:
            decode_model_id("")
        assert refusal(exc) == (400, error("Missing model id."))
