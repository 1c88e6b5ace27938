"""gateway.http.openresponses_wire: the request fields, the input items, the response object."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.providers.base import ChatMessage, ToolCall, Usage
from agents.runs import ReplyPart
from gateway.config.model import ChatCompletionsConfig
from gateway.http.openai_wire import RequestError, internal_error
from gateway.http.openresponses_wire import (
    ResponseEvents,
    ResponseFields,
    ResponseHead,
    build_input,
    input_messages,
    output_items,
    response_body,
    validate_request,
)
from tests.support.counting import CountedText
from tests.support.strategies import fuzz

LIMITS = ChatCompletionsConfig()
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(RequestError) as caught:
        validate_request(body)
    assert caught.value.status == 400
    return caught.value.body()["error"]


class TestFields:
    def test_defaults(self) -> None:
        assert validate_request({}) == ResponseFields()

    def test_sampling_fields_become_chat_params(self) -> None:
        fields = validate_request({"temperature": 1, "top_p": 0.5, "max_output_tokens": 7.0})
        assert dict(fields.params) == {"temperature": 1, "top_p": 0.5, "max_tokens": 7}
        assert fields.max_output_tokens == 7

    def test_tools_become_chat_completions_tools(self) -> None:
        fields = validate_request(
            {"tools": [TOOL], "tool_choice": {"type": "function", "name": "lookup"},
             "parallel_tool_calls": False}
        )  # fmt: skip
        assert dict(fields.params) == {
            "tools": [{"type": "function",
                       "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "parallel_tool_calls": False,
        }  # fmt: skip
        assert fields.tools == (TOOL,)

    def test_a_json_schema_text_format_becomes_the_chat_response_format(self) -> None:
        text_format = {"type": "json_schema", "name": "Weather", "strict": True,
                       "schema": {"type": "object"}, "description": "d"}  # fmt: skip
        fields = validate_request({"text": {"format": text_format, "verbosity": "low"}})
        assert dict(fields.params) == {
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "Weather", "description": "d", "schema": {"type": "object"},
                "strict": True}},
            "verbosity": "low",
        }  # fmt: skip
        assert fields.text_format == text_format

    def test_the_reasoning_effort_becomes_the_chat_reasoning_effort(self) -> None:
        fields = validate_request({"reasoning": {"effort": "minimal", "summary": "detailed"}})
        assert dict(fields.params) == {"reasoning_effort": "minimal"}
        body = response_body(ResponseHead("resp_1", 0, "openclaw", fields), "completed", [], None)
        assert body["reasoning"] == {"effort": "minimal", "summary": "detailed"}
        assert validate_request({"reasoning": {}}) == ResponseFields()
        assert validate_request({"reasoning": {"effort": None}}) == ResponseFields()

    def test_a_json_object_text_format(self) -> None:
        fields = validate_request({"text": {"format": {"type": "json_object"}}})
        assert dict(fields.params) == {"response_format": {"type": "json_object"}}

    def test_a_plain_text_format_asks_nothing_of_the_provider(self) -> None:
        assert validate_request({"text": {"format": {"type": "text"}}}) == ResponseFields()
        assert validate_request({"text": {}}) == ResponseFields()

    @pytest.mark.parametrize("verbosity", ["low", "medium", "high"])
    def test_the_text_verbosity_is_chat_completions_verbosity_and_echoed(
        self, verbosity: str
    ) -> None:
        fields = validate_request({"text": {"verbosity": verbosity}})
        assert dict(fields.params) == {"verbosity": verbosity}
        body = response_body(ResponseHead("resp_1", 0, "openclaw", fields), "completed", [], None)
        assert body["text"] == {"format": {"type": "text"}, "verbosity": verbosity}
        assert validate_request({"text": {"verbosity": None}}) == ResponseFields()

    def test_the_response_echoes_the_text_format(self) -> None:
        fields = validate_request({"text": {"format": {"type": "json_object"}}})
        body = response_body(ResponseHead("resp_1", 0, "openclaw", fields), "completed", [], None)
        assert body["text"] == {"format": {"type": "json_object"}}

    @pytest.mark.parametrize(
        ("body", "message", "param"),
        [
            ({"text": "json"}, "text: Expected object, received string", "text"),
            ({"text": {"format": {"type": "xml"}}},
             "Invalid text.format: text.format.type must be text, json_object, or json_schema",
             "text"),
            ({"text": {"format": []}},
             "Invalid text.format: text.format.type must be text, json_object, or json_schema",
             "text"),
            ({"text": {"verbosity": "max"}},
             "Invalid text.verbosity: text.verbosity must be low, medium, or high", "text"),
            ({"text": {"verbosity": ""}},
             "Invalid text.verbosity: text.verbosity must be low, medium, or high", "text"),
            ({"text": {"verbosity": 1}},
             "text.verbosity: Expected string, received number", "text"),
            ({"text": {"verbosity": ["low"]}},
             "text.verbosity: Expected string, received array", "text"),
            ({"reasoning": []}, "reasoning: Expected object, received array", "reasoning"),
            ({"reasoning": {"effort": "HIGH"}},
             "Invalid reasoning.effort: reasoning.effort must be none, minimal, low, medium,"
             " high, or xhigh", "reasoning"),
            ({"reasoning": {"effort": {}}},
             "reasoning.effort: Expected string, received object", "reasoning"),
            ({"reasoning": {"summary": 1}},
             "reasoning.summary: Expected string, received number", "reasoning"),
            ({"text": {"format": {"type": "json_schema", "schema": {}}}},
             "text.format.name: Expected string, received null", "text"),
            ({"text": {"format": {"type": "json_schema", "name": "a b"}}},
             "Invalid text.format.name: 1 to 64 letters, digits, _ or -", "text"),
            ({"text": {"format": {"type": "json_schema", "name": "w", "schema": []}}},
             "text.format.schema: Expected object, received array", "text"),
            ({"text": {"format": {"type": "json_schema", "name": "w", "strict": 1}}},
             "text.format.strict: Expected boolean, received number", "text"),
            ({"stream": "yes"}, "stream: Expected boolean, received string", "stream"),
            ({"store": 1}, "store: Expected boolean, received number", "store"),
            ({"instructions": []}, "instructions: Expected string, received array", "instructions"),
            ({"user": {}}, "user: Expected string, received object", "user"),
            ({"temperature": 3}, "`temperature` must be between 0 and 2.", "temperature"),
            ({"top_p": "1"}, "top_p: Expected number, received string", "top_p"),
            ({"max_output_tokens": 0}, "max_output_tokens must be a positive safe integer",
             "max_output_tokens"),
            ({"metadata": []}, "metadata: Expected object, received array", "metadata"),
            ({"metadata": {"k": 1}}, "metadata.k: Expected string, received number", "metadata"),
            ({"metadata": {"k": "v" * 513}}, "`metadata` values are at most 512 characters.",
             "metadata"),
            ({"metadata": {str(i): "" for i in range(17)}}, "`metadata` holds at most 16 pairs.",
             "metadata"),
            ({"tools": [{"type": "web_search"}]},
             'Invalid `tools[0].type`: only "function" tools are supported.', "tools"),
            ({"tools": [TOOL, TOOL]}, "Duplicate function name 'lookup' in `tools`.", "tools"),
            ({"tools": [{**TOOL, "parameters": {"type": "array"}}]},
             'Invalid `tools[0].parameters`: expected a JSON Schema of "type": "object"'
             " (a function's arguments are an object).", "tools"),
            ({"tool_choice": "required"}, '`tool_choice` "required" needs `tools`.',
             "tool_choice"),
        ],
    )  # fmt: skip
    def test_each_invalid_field_gets_its_message(
        self, body: dict[str, Any], message: str, param: str
    ) -> None:
        assert refusal(body) == {
            "message": message, "type": "invalid_request_error", "param": param, "code": None
        }  # fmt: skip

    def test_an_oversize_previous_response_id_is_not_found(self) -> None:
        assert refusal({"previous_response_id": "x" * 257})["code"] == (
            "previous_response_not_found"
        )


class TestInput:
    def test_a_string_is_one_user_message(self) -> None:
        assert input_messages("hi", "Be brief.") == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]

    def test_function_calls_join_the_assistant_message_before_them(self) -> None:
        items = [
            {"role": "user", "content": "go"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
            {"type": "reasoning", "summary": []},
            {"type": "function_call_output", "call_id": "c1", "output": "A"},
        ]  # fmt: skip
        conversation = build_input(items, None, LIMITS)
        assert conversation.messages == (
            ChatMessage("user", "go"),
            ChatMessage("assistant", "calling",
                        tool_calls=(ToolCall("c1", "a", "{}"), ToolCall("c2", "b", "{}"))),
            ChatMessage("tool", "A", tool_call_id="c1"),
        )  # fmt: skip

    @pytest.mark.parametrize("content", ["calling", [{"type": "output_text", "text": "calling"}]])
    def test_the_assistant_message_after_its_calls_joins_them(self, content: Any) -> None:
        """The items of a response whose calls came before its text, sent back whole."""
        items = [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "message", "role": "assistant", "content": content},
            {"type": "function_call_output", "call_id": "c1", "output": "A"},
        ]
        conversation = build_input(items, None, LIMITS)
        assert conversation.messages == (
            ChatMessage("user", "go"),
            ChatMessage("assistant", "calling", tool_calls=(ToolCall("c1", "a", "{}"),)),
            ChatMessage("tool", "A", tool_call_id="c1"),
        )

    def test_many_texts_after_the_calls_are_joined_without_copying_them_again(self) -> None:
        """As many assistant items after the calls as a body holds (150,000 in 20 MiB):
        each joined to all the ones before it cost minutes of a thread copying them again."""
        texts = [CountedText(f"{n:04d}" * 10) for n in range(2000)]
        items: list[dict[str, Any]] = [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            *({"role": "assistant", "content": text} for text in texts[:1000]),
            {"role": "assistant", "content": [{"type": "output_text", "text": "part"}]},
            {"role": "assistant", "content": ""},
            *({"role": "assistant", "content": text} for text in texts[1000:]),
        ]
        CountedText.copied = 0
        [_, joined] = input_messages(items, None)
        assert CountedText.copied <= 2 * sum(len(text) for text in texts)
        assert joined["content"] == [
            {"type": "text", "text": "".join(texts[:1000])},
            {"type": "text", "text": "part"},
            *({"type": "text", "text": text} for text in texts[1000:]),
        ]

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (5, "input: Expected string or array, received number"),
            ([{"type": "web_search_call"}],
             "Unsupported input item type 'web_search_call' in `input[0]`."),
            ([{"role": "tool", "content": "x"}],
             'Invalid `input[0].role`: expected "user", "assistant", "system" or "developer".'),
            ([{"type": "function_call_output", "call_id": "", "output": "x"}],
             "Invalid `input[0].call_id`: expected a non-empty string of at most 256"
             " characters."),
            ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
             "Unsupported content part type 'input_file' in `input[0].content[0]`."),
            ([], "Missing user message in `input`."),
        ],
    )  # fmt: skip
    def test_bad_input_names_its_place(self, value: Any, message: str) -> None:
        with pytest.raises(RequestError) as caught:
            build_input(value, None, LIMITS)
        assert (caught.value.message, caught.value.param) == (message, "input")


class TestOutput:
    def test_an_empty_answer_reads_the_placeholder(self) -> None:
        [item] = output_items("", "", (), "completed")
        assert item["content"][0]["text"] == "No response from OpenClaw."

    def test_reasoning_text_then_calls(self) -> None:
        items = output_items("t", "r", (ToolCall("c", "n", "{}"),), "completed")
        assert [i["type"] for i in items] == ["reasoning", "message", "function_call"]

    def test_items_in_the_order_their_parts_began(self) -> None:
        calls = (ToolCall("c1", "n", "{}"), ToolCall("c2", "n", "{}"))
        parts = (ReplyPart.TOOL_CALL, ReplyPart.TEXT, ReplyPart.TOOL_CALL, ReplyPart.REASONING)
        items = output_items("t", "r", calls, "completed", parts)
        assert [(i["type"], i.get("call_id")) for i in items] == [
            ("function_call", "c1"), ("message", None), ("function_call", "c2"), ("reasoning", None)
        ]  # fmt: skip

    def test_reasoning_alone_then_the_placeholder(self) -> None:
        items = output_items("", "r", (), "completed", (ReplyPart.REASONING,))
        assert [i["type"] for i in items] == ["reasoning", "message"]

    @pytest.mark.parametrize(
        "pieces",
        [("\n\nNow",), ("\n", "\nNow"), ("\n", "\n", "Now"), ("\n\n", "", "Now"), ("\nNow",)],
    )
    def test_reasoning_resumed_after_a_call_begins_with_its_text(
        self, pieces: tuple[str, ...]
    ) -> None:
        """The blank line a provider set a later thinking block apart with (in pieces or
        not) is not the text of the reasoning item that resumes after a call, streamed or
        not; the first item keeps its text as it came."""
        events = ResponseEvents(ResponseHead("resp_1", 0, "openclaw", ResponseFields()))
        events.reasoning("\nHmm")
        events.tool_call_start(0, "call_a", "f")
        events.tool_call_arguments(0, "{}")
        for piece in pieces:
            events.reasoning(piece)
        _, body = events.finish("toolUse", Usage(1, 1))
        streamed = [(i["type"], i.get("content")) for i in body["output"]]
        whole = "\nHmm" + "".join(pieces)
        parts = (ReplyPart.REASONING, ReplyPart.TOOL_CALL, ReplyPart.REASONING)
        items = output_items("", whole, (ToolCall("call_a", "f", "{}"),), "completed", parts,
                             (0, 0, len("\nHmm")))  # fmt: skip
        listed = [(i["type"], i.get("content")) for i in items]
        text = [{"type": "reasoning_text", "text": "Now"}]
        assert streamed == [
            ("reasoning", [{"type": "reasoning_text", "text": "\nHmm"}]),
            ("function_call", None),
            ("reasoning", text),
        ]
        assert listed == streamed

    def test_sequence_numbers_count_every_event(self) -> None:
        events = ResponseEvents(ResponseHead("resp_1", 0, "openclaw", ResponseFields()))
        wire = events.start() + events.content("a") + events.finish("stop", Usage(1, 1))[0]
        numbers = [
            int(line.split(b'"sequence_number":')[1].split(b",")[0])
            for line in wire.split(b"\n")
            if line.startswith(b"data: ")
        ]
        assert numbers == list(range(9))

    def test_calls_close_in_output_order_when_the_run_ends(self) -> None:
        """A call's arguments may still come after the next call began: every item stays
        open until the run ends, then all close in output order; the call that began later
        is held back, so each item's events come together (as OpenAI sends them)."""
        events = ResponseEvents(ResponseHead("resp_1", 0, "openclaw", ResponseFields()))
        wire = (
            events.tool_call_start(0, "call_a", "f")
            + events.tool_call_arguments(0, "{")
            + events.tool_call_start(1, "call_b", "g")
            + events.tool_call_arguments(1, "{}")
            + events.tool_call_arguments(0, "}")
            + events.finish("tool_calls", Usage(1, 1))[0]
        )
        sent = [json.loads(line[6:]) for line in wire.split(b"\n") if line.startswith(b"data: ")]
        assert [(e["type"].removeprefix("response."), e.get("output_index")) for e in sent] == [
            ("output_item.added", 0), ("function_call_arguments.delta", 0),
            ("function_call_arguments.delta", 0),
            ("function_call_arguments.done", 0), ("output_item.done", 0),
            ("output_item.added", 1), ("function_call_arguments.delta", 1),
            ("function_call_arguments.done", 1), ("output_item.done", 1), ("completed", None),
        ]  # fmt: skip
        assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
        assert [item["arguments"] for item in sent[-1]["response"]["output"]] == ["{}", "{}"]

    def test_text_after_a_call_streams_once_the_call_is_done(self) -> None:
        """A call-first answer: the call is done when the text begins (items come one after
        another, as OpenAI sends them), and the text streams live."""
        events = ResponseEvents(ResponseHead("resp_1", 0, "openclaw", ResponseFields()))
        live = events.tool_call_start(0, "call_a", "f") + events.tool_call_arguments(0, "{}")
        live += events.content("Looking.")
        sent = [json.loads(line[6:]) for line in live.split(b"\n") if line.startswith(b"data: ")]
        assert [(e["type"].removeprefix("response."), e["output_index"]) for e in sent] == [
            ("output_item.added", 0), ("function_call_arguments.delta", 0),
            ("function_call_arguments.done", 0), ("output_item.done", 0),
            ("output_item.added", 1), ("content_part.added", 1), ("output_text.delta", 1),
        ]  # fmt: skip
        wire = events.finish("tool_calls", Usage(1, 1))[0]
        rest = [json.loads(line[6:]) for line in wire.split(b"\n") if line.startswith(b"data: ")]
        assert [(e["type"].removeprefix("response."), e.get("output_index")) for e in rest] == [
            ("output_text.done", 1), ("content_part.done", 1), ("output_item.done", 1),
            ("completed", None),
        ]  # fmt: skip
        assert [e["sequence_number"] for e in sent + rest] == list(range(len(sent + rest)))

    def test_text_resumed_after_a_call_is_a_message_of_its_own(self) -> None:
        """As the non-streamed answer has it: a message, the call, another message."""
        events = ResponseEvents(ResponseHead("resp_1", 0, "openclaw", ResponseFields()))
        events.content("Let me look. ")
        events.tool_call_start(0, "call_a", "f")
        events.tool_call_arguments(0, "{}")
        events.content("Done.")
        _, body = events.finish("tool_calls", Usage(1, 1))
        streamed = [(i["type"], i.get("content") or i.get("arguments")) for i in body["output"]]
        call = ToolCall("call_a", "f", "{}")
        parts = (ReplyPart.TEXT, ReplyPart.TOOL_CALL, ReplyPart.TEXT)
        final = output_items("Let me look. Done.", "", (call,), "completed", parts, (0, 0, 13))
        assert streamed == [(i["type"], i.get("content") or i.get("arguments")) for i in final]
        assert [i["type"] for i in final] == ["message", "function_call", "message"]

    def test_a_call_without_arguments_yet_takes_them_after_text(self) -> None:
        """A server that names a call, sends text, then the call's arguments (or, for a call
        given none, the `{}` the provider completes it with at the end)."""
        events = ResponseEvents(ResponseHead("resp_1", 0, "openclaw", ResponseFields()))
        events.tool_call_start(0, "call_a", "f")
        events.content("Looking.")
        events.tool_call_arguments(0, "{}")
        _, body = events.finish("tool_calls", Usage(1, 1))
        [call] = [item for item in body["output"] if item["type"] == "function_call"]
        assert call["arguments"] == "{}"


# What a run hands the stream, in any order: text, reasoning, a call started, a call's
# arguments (of a call already started: the run never sends others).
_STREAM_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("content"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("reasoning"), st.sampled_from(["r", "s"])),
        st.tuples(st.just("call"), st.integers(0, 3)),
        st.tuples(st.just("arguments"), st.integers(0, 3)),
    ),
    max_size=12,
)


class TestStreamInvariants:
    @fuzz(500)
    @given(_STREAM_STEPS, st.sampled_from(["stop", "length", "failed"]))
    def test_every_event_names_an_open_item_and_the_end_holds_them_all(
        self, steps: list[tuple[str, Any]], end: str
    ) -> None:
        """Sequence numbers count every event; items are added at the next output index,
        each event names an item added and not done yet by both index and id, and the
        output indices never go back (each item's events come together, as OpenAI sends
        them); every item is done by the end, whose output is the done items in output
        order, each call with every fragment of its arguments (`{}` for one that had none
        when text or reasoning began), the same items as the non-streamed answer's."""
        events = ResponseEvents(ResponseHead("resp_1", 0, "openclaw", ResponseFields()))
        wire, started = events.start(), set()
        arguments: dict[int, str] = {}  # each call's fragments, in order
        passed: set[int] = set()  # the calls that text or reasoning came after
        # What the run records (agents/session.py): the parts, where each begins.
        parts: list[ReplyPart] = []
        starts: list[int] = []
        texts = {ReplyPart.TEXT: "", ReplyPart.REASONING: ""}
        calls: list[ToolCall] = []
        for position, (kind, value) in enumerate(steps):
            if kind in ("content", "reasoning"):
                part = ReplyPart.TEXT if kind == "content" else ReplyPart.REASONING
                if not parts or parts[-1] is not part:
                    parts.append(part)
                    starts.append(len(texts[part]))
                texts[part] += value
                passed |= started
                if kind == "content":
                    wire += events.content(value)
                else:
                    wire += events.reasoning(value)
            elif kind == "call" and value not in started:
                started.add(value)
                parts.append(ReplyPart.TOOL_CALL)
                starts.append(0)
                calls.append(ToolCall(f"call_{value}", "f", ""))
                wire += events.tool_call_start(value, f"call_{value}", "f")
            elif kind == "arguments" and value in started:
                fragment = f"[{position}]"
                arguments[value] = arguments.get(value, "") + fragment
                wire += events.tool_call_arguments(value, fragment)
        if end == "failed":
            wire += events.fail(internal_error())
        else:
            wire += events.finish(end, Usage(1, 1))[0]
        sent = [json.loads(line[6:]) for line in wire.split(b"\n") if line.startswith(b"data: ")]
        assert [event["sequence_number"] for event in sent] == list(range(len(sent)))
        added: dict[int, str] = {}
        done: dict[int, dict[str, Any]] = {}
        for event in sent:
            index = event.get("output_index")
            if event["type"] == "response.output_item.added":
                assert index == len(added)
                added[index] = event["item"]["id"]
            elif index is not None:
                assert index not in done
                item_id = event["item"]["id"] if "item" in event else event["item_id"]
                assert added[index] == item_id
                if event["type"] == "response.output_item.done":
                    done[index] = event["item"]
        assert done.keys() == added.keys()
        output = sent[-1]["response"]["output"]

        def but_arguments(item: dict[str, Any]) -> dict[str, Any]:
            # A fragment after its call was done joins the final object's call only.
            return {key: value for key, value in item.items() if key != "arguments"}

        assert [but_arguments(i) for i in output] == [but_arguments(done[i]) for i in sorted(done)]
        made = {item["call_id"]: item["arguments"] for item in output if "call_id" in item}
        whole = {n: arguments.get(n) or ("{}" if n in passed else "") for n in started}
        assert made == {f"call_{n}": args for n, args in whole.items()}
        indices = [e["output_index"] for e in sent if "output_index" in e]
        assert indices == sorted(indices)
        if end == "stop":
            calls = [attrs.evolve(c, arguments=whole[int(c.id[5:])]) for c in calls]
            final = output_items(
                texts[ReplyPart.TEXT], texts[ReplyPart.REASONING], tuple(calls), "completed",
                tuple(parts), tuple(starts),
            )  # fmt: skip

            def shape(items: list[dict[str, Any]]) -> list[tuple[str, Any]]:
                return [(i["type"], i.get("content") or i.get("arguments")) for i in items]

            assert shape(output) == shape(final)
