"""gateway.http.openai_wire: the request pipeline's pure steps and the response encoding."""

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
from agents.providers.base import ChatMessage, ToolCall, Usage
from gateway.config.model import ChatCompletionsConfig, ImagesConfig
from gateway.http.openai_wire import (
    AgentSelection,
    ChunkEncoder,
    RequestError,
    Route,
    build_conversation,
    completion_body,
    declared_task,
    decode_model_id,
    error_reply,
    is_background_task,
    json_type,
    model_ids,
    parse_body,
    resolve_session_key,
    select_agent,
    select_model,
    validate_fields,
)
from gateway.jsonwire import dumps

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

    @pytest.mark.parametrize("literal", ["1e400", "-1e400", "1" * 400 + ".0"])
    def test_a_number_beyond_a_double_is_refused(self, literal: str) -> None:
        with pytest.raises(RequestError) as exc:
            parse_body(f'{{"metadata":{{"a":{literal}}}}}'.encode())
        shown = literal if len(literal) <= 32 else literal[:32] + "…"
        assert refusal(exc) == (400, error(f"Invalid JSON value: {shown} (out of range)"))

    def test_a_number_too_small_for_a_double_is_zero(self) -> None:
        assert parse_body(b'{"temperature":1e-400}') == {"temperature": 0.0}

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


TOOL_F = {"type": "function", "function": {"name": "f"}}

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
    ({"functions": [{"name": "f"}]}, "`functions` is not supported; use `tools`.", "functions",
     "unsupported_parameter"),
    ({"function_call": {"name": "f"}}, "`function_call` is not supported; use `tools`.",
     "function_call", "unsupported_parameter"),
    ({"tools": {}}, "tools: Expected array, received object", "tools", None),
    ({"tools": [TOOL_F] * 129}, "`tools` supports at most 128 tools.", "tools", None),
    ({"tools": ["f"]}, "tools[0]: Expected object, received string", "tools", None),
    ({"tools": [{"type": "retrieval"}]},
     'Invalid `tools[0].type`: only "function" tools are supported.', "tools", None),
    ({"tools": [{"type": "function"}]}, "tools[0].function: Expected object, received null",
     "tools", None),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]},
     "Invalid `tools[0].function.name`: 1 to 64 letters, digits, underscores or dashes.",
     "tools", None),
    ({"tools": [{"type": "function", "function": {"name": "f" * 65}}]},
     "Invalid `tools[0].function.name`: 1 to 64 letters, digits, underscores or dashes.",
     "tools", None),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "tools[0].function.parameters: Expected object, received array", "tools", None),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     'Invalid `tools[0].function.parameters`: expected a JSON Schema of "type": "object"'
     " (a function's arguments are an object).", "tools", None),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]},
     "tools[0].function.description: Expected string, received number", "tools", None),
    ({"tools": [TOOL_F, TOOL_F]}, "Duplicate function name 'f' in `tools`.", "tools", None),
    ({"tool_choice": "required"}, '`tool_choice` "required" needs `tools`.', "tool_choice",
     None),
    ({"tool_choice": "any"},
     'Invalid `tool_choice`: expected "none", "auto", "required" or a named function.',
     "tool_choice", None),
    ({"tools": [TOOL_F], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "Invalid `tool_choice`: no function named 'g' in `tools`.", "tool_choice", None),
    ({"tools": [TOOL_F], "tool_choice": {"type": "function"}},
     'Invalid `tool_choice`: expected "none", "auto", "required" or {"type": "function",'
     ' "function": {"name": ...}}.', "tool_choice", None),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls: Expected boolean, received string",
     "parallel_tool_calls", None),
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
    ({"seed": 2**63}, "`seed` must be a signed 64-bit integer.", "seed", None),
    ({"seed": -1e19}, "`seed` must be a signed 64-bit integer.", "seed", None),
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
    ({"response_format": {"type": "json_schema", "json_schema": None}},
     "Invalid response_format: type json_schema needs response_format.json_schema",
     "response_format", None),
    ({"response_format": {"type": "json_schema", "json_schema": []}},
     "response_format.json_schema: Expected object, received array", "response_format", None),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": 1}}},
     "response_format.json_schema.name: Expected string, received number",
     "response_format", None),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": ""}}},
     "Invalid response_format.json_schema.name: 1 to 64 letters, digits, _ or -",
     "response_format", None),
    ({"reasoning_effort": 2}, "reasoning_effort: Expected string, received number",
     "reasoning_effort", None),
    ({"reasoning_effort": ["low"]}, "reasoning_effort: Expected string, received array",
     "reasoning_effort", None),
    ({"reasoning_effort": "HIGH"},
     "Invalid reasoning_effort: reasoning_effort must be none, minimal, low, medium, high,"
     " or xhigh", "reasoning_effort", None),
    ({"reasoning_effort": ""},
     "Invalid reasoning_effort: reasoning_effort must be none, minimal, low, medium, high,"
     " or xhigh", "reasoning_effort", None),
    ({"verbosity": 1}, "verbosity: Expected string, received number", "verbosity", None),
    ({"verbosity": "LOW"}, "Invalid verbosity: verbosity must be low, medium, or high",
     "verbosity", None),
    ({"verbosity": "x" * 100_000}, "Invalid verbosity: verbosity must be low, medium, or high",
     "verbosity", None),
    ({"modalities": "text"}, "modalities: Expected array, received string", "modalities", None),
    ({"modalities": ["text", 1]}, "Invalid modalities: modalities entries must be text or audio",
     "modalities", None),
    ({"modalities": ["video"]}, "Invalid modalities: modalities entries must be text or audio",
     "modalities", None),
    ({"modalities": ["text", "audio"]},
     "Audio output is not supported: `modalities` may only ask for text.", "modalities",
     "unsupported_parameter"),
    ({"modalities": ["audio"]},
     "Audio output is not supported: `modalities` may only ask for text.", "modalities",
     "unsupported_parameter"),
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
            "parallel_tool_calls",
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "seed",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "response_format",
            "reasoning_effort",
            "verbosity",
            "modalities",
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
            {"parallel_tool_calls": False},
            {"logprobs": True},
            {"logit_bias": {"1": 2}},
            {"metadata": {"a": "b"}},
            {"modalities": ["text"]},
            {"modalities": []},
            {"audio": {"voice": "alloy"}},
            {"unknown_field": 1},
        ],
    )
    def test_accepted_fields_that_change_nothing(self, body: dict[str, Any]) -> None:
        assert validate_fields(body).params == {}

    def test_tools_are_forwarded_with_their_choice(self) -> None:
        body = {
            "tools": [TOOL_F],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
        }
        assert validate_fields(body).params == body

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
            "reasoning_effort": "minimal",
            "verbosity": "low",
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


ROUTED = AgentConfig(
    "main",
    (ModelRef("openai", "gpt-4o"), ModelRef("openai", "gpt-4o-mini")),
    allowed_models=(ModelRef("anthropic", "claude-sonnet-4-5"),),
)


class TestModelSelection:
    @pytest.mark.parametrize("header", [None, "", "  "])
    def test_no_header_no_override(self, header: str | None) -> None:
        assert select_model(header, ROUTED) is None

    @pytest.mark.parametrize(
        "header", ["anthropic/claude-sonnet-4-5", " openai/gpt-4o-mini ", "openai/gpt-4o"]
    )
    def test_the_allow_list_and_the_agents_own_chain(self, header: str) -> None:
        assert select_model(header, ROUTED) == ModelRef.parse(header.strip())

    def test_another_model_is_refused(self) -> None:
        with pytest.raises(RequestError) as exc:
            select_model("openai/o3", ROUTED)
        assert refusal(exc) == (
            400,
            error("Model 'openai/o3' is not allowed for agent 'main'.", None, "model_not_allowed"),
        )

    @pytest.mark.parametrize("header", ["gpt-4o", "/x", "openai/"])
    def test_a_malformed_header_is_refused(self, header: str) -> None:
        with pytest.raises(RequestError) as exc:
            select_model(header, ROUTED)
        assert refusal(exc) == (
            400,
            error('Invalid `x-openclaw-model`: expected "provider/model".'),
        )


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

    def test_an_unknown_model_runs_the_default_agent_when_configured(self) -> None:
        selection = select_agent("gpt-4o", None, AGENTS, "default-agent")
        assert selection == AgentSelection("main", "gpt-4o", False)

    def test_an_unknown_agent_stays_an_error_with_default_agent_mapping(self) -> None:
        with pytest.raises(RequestError):
            select_agent("openclaw/nosuchagent", None, AGENTS, "default-agent")

    def test_the_header_wins_and_the_model_is_only_echoed(self) -> None:
        assert select_agent("gpt-4o", " Beta ", AGENTS) == AgentSelection("beta", "gpt-4o", True)

    def test_an_unknown_agent_in_the_header(self) -> None:
        with pytest.raises(RequestError) as exc:
            select_agent("openclaw", "nosuchagent", AGENTS)
        assert refusal(exc) == (400, error("Unknown agent 'nosuchagent'."))

    @pytest.mark.parametrize(
        ("header", "unknown_model"), [("main", "error"), (None, "default-agent")]
    )
    def test_an_echoed_model_is_at_most_256_characters(
        self, header: str | None, unknown_model: str
    ) -> None:
        # Every chunk of a stream repeats it: a long one would multiply the answer.
        assert select_agent("m" * 256, header, AGENTS, unknown_model).model == "m" * 256
        with pytest.raises(RequestError) as exc:
            select_agent("m" * 257, header, AGENTS, unknown_model)
        assert refusal(exc) == (400, error("`model` is too long (max 256 characters).", "model"))


TASK = "### Task:\nGenerate a concise title.\n<chat_history>\nUSER: hi\n</chat_history>"


class TestBackgroundTask:
    """Open WebUI's title, tags, follow-up, query and autocomplete requests."""

    def test_a_lone_task_prompt_is_a_task(self) -> None:
        assert is_background_task([{"role": "user", "content": TASK}])

    def test_a_system_prompt_beside_it_still_is(self) -> None:
        assert is_background_task(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TASK}]
        )

    @pytest.mark.parametrize(
        "prompt",
        [
            # DEFAULT_EMOJI_GENERATION_PROMPT_TEMPLATE (voice calls, each reply) and
            # DEFAULT_MOA_GENERATION_PROMPT_TEMPLATE (merging several models' answers):
            # Open WebUI's default prompts that quote no <chat_history>.
            "Your task is to reflect the speaker's likely facial expression through a fitting"
            " emoji. Interpret emotions from the message and reflect their facial expression"
            " using fitting, diverse emojis (e.g., 😊, 😢, 😡, 😱).\n\nMessage: ```Hello!```",
            "You have been provided with a set of responses from various models to the latest"
            ' user query: "hi"\n\nYour task is to synthesize these responses into a single,'
            " high-quality response.",
        ],
        ids=["emoji", "moa"],
    )
    def test_open_webuis_other_default_task_prompts_are_tasks(self, prompt: str) -> None:
        assert is_background_task([{"role": "user", "content": prompt}])

    def test_text_parts_are_read(self) -> None:
        assert is_background_task([{"role": "user", "content": [{"type": "text", "text": TASK}]}])

    @pytest.mark.parametrize(
        "messages",
        [
            [{"role": "user", "content": "hi"}],
            # Open WebUI's RAG prompt around a real question: no chat history quoted.
            [{"role": "user", "content": "### Task:\nRespond to the user query.\n<context>"}],
            [{"role": "user", "content": "Look: ### Task:\n<chat_history>"}],
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": TASK},
            ],
            [{"role": "assistant", "content": TASK}],
            "### Task: <chat_history>",
            None,
        ],
    )
    def test_anything_else_is_not(self, messages: Any) -> None:
        assert not is_background_task(messages)

    @pytest.mark.parametrize(
        ("value", "said"),
        [
            ("title_generation", True),
            (" query_generation ", True),
            ("", False),
            ("  ", False),
            ("{{TASK}}", None),  # not filled in: nothing said
            (None, None),
        ],
    )
    def test_the_task_header_says_a_task_a_turn_or_nothing(
        self, value: str | None, said: bool | None
    ) -> None:
        assert declared_task(value) is said


DEFAULT = AgentSelection("main", "openclaw", explicit=False)
NAMED_MAIN = AgentSelection("main", "openclaw/main", explicit=True)


CHAT_ID = "x-openwebui-chat-id"


class TestSessionKey:
    def test_a_conversation_header_names_the_session(self) -> None:
        route = resolve_session_key(None, "alice", DEFAULT, AGENTS, (CHAT_ID, " Chat-42 "))
        # A chat UI's chat: the client sends the whole chat every time.
        assert route == Route("main", "agent:main:openai-chat:chat-42", whole_conversation=True)

    def test_the_session_key_header_wins_over_the_conversation_header(self) -> None:
        route = resolve_session_key("k1", None, DEFAULT, AGENTS, (CHAT_ID, "chat-42"))
        assert route == Route("main", "agent:main:k1")

    def test_an_oversized_conversation_id_is_refused(self) -> None:
        with pytest.raises(RequestError) as exc:
            resolve_session_key(None, None, DEFAULT, AGENTS, (CHAT_ID, "c" * 500))
        assert refusal(exc) == (400, error("Session key too long (max 512 characters)."))

    def test_a_conversation_id_that_is_not_utf8_is_refused(self) -> None:
        with pytest.raises(RequestError) as exc:
            resolve_session_key(None, None, DEFAULT, AGENTS, (CHAT_ID, "a\udcff"))
        assert refusal(exc) == (400, error("Invalid `x-openwebui-chat-id`."))

    @pytest.mark.parametrize(
        ("header_key", "conversation", "named"),
        [
            ("{{CHAT_ID}}", None, "x-openclaw-session-key"),
            ("agent:main:{{CHAT_ID}}", None, "x-openclaw-session-key"),
            (None, (CHAT_ID, "{{CHAT_ID}}"), CHAT_ID),
        ],
    )
    def test_a_template_placeholder_left_unfilled_is_refused(
        self, header_key: str | None, conversation: tuple[str, str] | None, named: str
    ) -> None:
        """A client whose header templates are not filled in (an Open WebUI older than its
        `{{CHAT_ID}}`) would put every chat of every user in one session."""
        with pytest.raises(RequestError) as exc:
            resolve_session_key(header_key, None, DEFAULT, AGENTS, conversation)
        assert refusal(exc) == (
            400,
            error(f"Invalid `{named}`: a template placeholder left unfilled."),
        )

    def test_a_background_task_in_a_conversation_runs_stateless(self) -> None:
        route = resolve_session_key(
            None, "alice", DEFAULT, AGENTS, (CHAT_ID, "chat-42"), background_task=True
        )
        assert route.session_key.startswith("agent:main:openai:")
        assert (route.stateless, route.new_key) == (True, True)

    def test_a_background_task_with_a_session_key_header_runs_in_that_session(self) -> None:
        route = resolve_session_key(
            "k1", None, DEFAULT, AGENTS, (CHAT_ID, "chat-42"), background_task=True
        )
        assert route == Route("main", "agent:main:k1")

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


def tool(call_id: str, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def image(url: str, nested: bool = True) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url} if nested else url}


def call(call_id: str, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class TestConversation:
    def test_the_worked_example_keeps_its_turns(self) -> None:
        conversation = build_conversation(
            [
                {"role": "system", "content": "You are a terse terse test assistant."},
                user("turn one question"),
                assistant("echo: turn one question"),
                user("turn two question"),
            ],
            LIMITS,
        )
        assert conversation.extra_system_prompt == "You are a terse terse test assistant."
        assert conversation.messages == (
            ChatMessage("user", "turn one question"),
            ChatMessage("assistant", "echo: turn one question"),
            ChatMessage("user", "turn two question"),
        )
        assert conversation.text == "turn two question"

    def test_a_single_user_message_is_trimmed(self) -> None:
        conversation = build_conversation([user("  hello there \n")], LIMITS)
        assert conversation.messages == (ChatMessage("user", "hello there"),)

    def test_system_and_developer_texts_join_the_extra_system_prompt(self) -> None:
        conversation = build_conversation(
            [
                {"role": "system", "content": "A"},
                {"role": "developer", "content": " "},
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                user("hi"),
            ],
            LIMITS,
        )
        assert (conversation.extra_system_prompt, conversation.text) == ("A\n\nB", "hi")

    def test_content_parts_contribute_their_text(self) -> None:
        content = [
            {"type": "text", "text": "one"},
            {"type": "input_text", "text": "two"},
            {"type": "other", "input_text": "three"},
            {"type": "text", "text": ""},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
            "not a part",
        ]
        assert build_conversation([user(content)], LIMITS).text == "one\ntwo\nthree"

    def test_unusable_entries_are_skipped(self) -> None:
        messages = [
            "text",
            3,
            {"content": "no role"},
            {"role": " ", "content": "x"},
            {"role": "User", "content": "case matters"},
            user("hi"),
        ]
        assert build_conversation(messages, LIMITS).messages == (ChatMessage("user", "hi"),)

    def test_a_trailing_assistant_message_is_discarded(self) -> None:
        conversation = build_conversation([user("q"), assistant("trailing answer")], LIMITS)
        assert conversation.messages == (ChatMessage("user", "q"),)

    def test_empty_messages_are_dropped(self) -> None:
        conversation = build_conversation([user("first"), assistant(""), user("second")], LIMITS)
        assert [m.text for m in conversation.messages] == ["first", "second"]

    def test_our_empty_reply_placeholder_reads_as_an_empty_reply(self) -> None:
        messages = [user("a"), assistant("No response from OpenClaw.", tool_calls=[call("c", "f")])]
        conversation = build_conversation([*messages, tool("c", "r")], LIMITS)
        assert conversation.messages[1].text == ""

    def test_tool_calls_and_results_are_structured(self) -> None:
        conversation = build_conversation(
            [
                user("find x"),
                assistant(None, tool_calls=[call("call_1", "lookup", '{"q":"x"}')]),
                tool("call_1", "found"),
                {"role": "function", "name": "legacy", "content": "old"},
            ],
            LIMITS,
        )
        assert conversation.messages == (
            ChatMessage("user", "find x"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "lookup", '{"q":"x"}'),)),
            ChatMessage("tool", "found", tool_call_id="call_1"),
            ChatMessage("tool", "old", tool_call_id="legacy", tool_name="legacy"),
        )

    def test_a_lone_tool_result_is_a_turn(self) -> None:
        conversation = build_conversation([tool("c9", "result")], LIMITS)
        assert conversation.messages == (ChatMessage("tool", "result", tool_call_id="c9"),)

    @pytest.mark.parametrize(
        ("message", "text"),
        [
            ({"role": "tool", "content": "anonymous"}, "Invalid `messages[1].tool_call_id`"),
            (tool("", "x"), "Invalid `messages[1].tool_call_id`"),
            (tool("c" * 257, "x"), "Invalid `messages[1].tool_call_id`"),
            (assistant("a", tool_calls={}), "messages[1].tool_calls: Expected array"),
            (assistant("a", tool_calls=["x"]), "Invalid `messages[1].tool_calls[0]`"),
            (assistant("a", tool_calls=[{"id": "c"}]), "Invalid `messages[1].tool_calls[0]`"),
            (
                assistant("a", tool_calls=[call("c", "")]),
                "Invalid `messages[1].tool_calls[0].function.name`",
            ),
            (
                assistant("a", tool_calls=[{**call("c", "f"), "type": "x"}]),
                "Invalid `messages[1].tool_calls[0]`",
            ),
            # The names `tools` may have: the upstream refuses a call of another name.
            *(
                (
                    assistant("a", tool_calls=[call("c", "f"), call("d", name)]),
                    "Invalid `messages[1].tool_calls[1].function.name`: 1 to 64 letters,"
                    " digits, underscores or dashes.",
                )
                for name in ("get weather", "functions.get_weather", "x" * 65, "f\n", "é")
            ),
            (
                assistant("a", tool_calls=[call("c", "f", {"a": 1})]),  # type: ignore[arg-type]
                "Invalid `messages[1].tool_calls[0]`",
            ),
        ],
    )
    def test_malformed_tool_messages_are_refused(self, message: Any, text: str) -> None:
        with pytest.raises(RequestError) as exc:
            build_conversation([user("q"), message, user("r")], LIMITS)
        assert exc.value.status == 400 and exc.value.param == "messages"
        assert exc.value.message.startswith(text)

    @pytest.mark.parametrize(
        "messages",
        [
            None,
            "hi",
            [],
            [{"role": "system", "content": "only system"}],
            [user("   ")],
            [assistant("a1"), assistant("a2")],
        ],
    )
    def test_no_user_text_and_no_image_is_a_missing_user_message(self, messages: Any) -> None:
        with pytest.raises(RequestError) as exc:
            build_conversation(messages, LIMITS)
        assert refusal(exc) == (400, error("Missing user message in `messages`.", "messages"))


class TestImages:
    def test_a_png_data_uri_is_accepted(self) -> None:
        conversation = build_conversation(
            [user([{"type": "text", "text": "look"}, image(f"data:image/png;base64,{PNG}")])],
            LIMITS,
        )
        assert conversation.text == "look"
        (only,) = conversation.images
        assert (only.mime_type, only.data_b64, only.size) == ("image/png", PNG, 24)

    def test_the_flat_image_url_form_is_accepted(self) -> None:
        conversation = build_conversation(
            [user([image(f"data:image/png;base64,{PNG}", nested=False)])], LIMITS
        )
        assert len(conversation.images) == 1

    def test_an_image_only_turn_gets_the_placeholder_text(self) -> None:
        conversation = build_conversation([user([image(f"data:image/png;base64,{PNG}")])], LIMITS)
        assert conversation.text == "User sent image(s) with no text."

    def test_images_of_earlier_turns_are_ignored(self) -> None:
        earlier = user([{"type": "text", "text": "a"}, image("https://example.com/a.png")])
        conversation = build_conversation([earlier, assistant("b"), user("c")], LIMITS)
        assert conversation.images == ()

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
            build_conversation([user([part])], LIMITS)
        assert refusal(exc) == (
            400,
            error("Invalid image_url content in `messages`.", "messages"),
        )
        assert exc.value.detail is not None and detail in exc.value.detail

    def test_too_many_parts(self) -> None:
        parts = [image(f"data:image/png;base64,{PNG}")] * 9
        with pytest.raises(RequestError) as exc:
            build_conversation([user(parts)], LIMITS)
        assert exc.value.detail == "Too many image_url parts (9; limit 8)"

    def test_an_image_over_the_per_image_limit(self) -> None:
        limits = attrs.evolve(LIMITS, images=ImagesConfig(max_bytes=23))
        with pytest.raises(RequestError) as exc:
            build_conversation([user([image(f"data:image/png;base64,{PNG}")])], limits)
        assert exc.value.detail is not None and "24 bytes" in exc.value.detail

    def test_images_over_the_total_limit(self) -> None:
        limits = attrs.evolve(LIMITS, max_total_image_bytes=40)
        with pytest.raises(RequestError) as exc:
            build_conversation([user([image(f"data:image/png;base64,{PNG}")] * 2)], limits)
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

    def test_a_reasoning_chunk(self) -> None:
        assert self.encoder.reasoning("hmm") == self.expected(
            [
                {
                    "index": 0,
                    "delta": {"reasoning_content": "hmm"},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def test_the_first_tool_call_fragment_names_the_call(self) -> None:
        call = {
            "index": 1,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
        assert self.encoder.tool_call_start(1, "call_1", "get_weather") == self.expected(
            [
                {
                    "index": 0,
                    "delta": {"tool_calls": [call]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def test_a_later_fragment_carries_only_index_and_arguments(self) -> None:
        call = {"index": 1, "function": {"arguments": '{"ci'}}
        assert self.encoder.tool_call_arguments(1, '{"ci') == self.expected(
            [
                {
                    "index": 0,
                    "delta": {"tool_calls": [call]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def test_a_lone_surrogate_in_arguments_is_escaped(self) -> None:
        chunk = json.loads(self.encoder.tool_call_arguments(0, "\ud800")[6:])
        assert chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == "\ud800"

    def test_a_lone_surrogate_is_escaped_alone_as_in_every_json_answer(self) -> None:
        # One encoding for HTTP bodies, SSE chunks and WS frames (gateway.jsonwire.wire): the
        # surrogate becomes its JSON escape, the rest of the text stays UTF-8.
        chunk = self.encoder.content("é\ud800")
        assert '"content":"é\\ud800"'.encode() in chunk

    def test_the_tool_calls_finish_chunk(self) -> None:
        assert self.encoder.finish("tool_calls") == self.expected(
            [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]
        )


class TestCompletionBody:
    def test_an_empty_reply_reads_no_response(self) -> None:
        body = completion_body("chatcmpl-x", 1, "openclaw", "", "stop", Usage(1, 0))
        assert body["choices"][0]["message"]["content"] == "No response from OpenClaw."

    def test_tool_calls_with_null_content_and_reasoning(self) -> None:
        calls = (ToolCall("call_1", "f", '{"a":1}'),)
        body = completion_body(
            "chatcmpl-x", 1, "m", "", "tool_calls", Usage(3, 1), reasoning="r", tool_calls=calls
        )
        assert body["choices"][0] == {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "reasoning_content": "r",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":1}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }

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
