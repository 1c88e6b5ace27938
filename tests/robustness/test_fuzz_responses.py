"""Property-based fuzzing of `/v1/responses`: wrong types and oversize values of every field
it reads, input items of every shape, and odd ids for GET/DELETE `/v1/responses/{id}`.

The answer is always a documented status (no 5xx over echo), every error has the four-key
shape, a 200 is a response object or a whole event stream ending in a terminal event,
nothing is logged as an error, and the gateway still serves right after.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from hypothesis import event, given
from hypothesis import strategies as st

from gateway.http import openresponses_wire
from tests.support.raw_http import RawResponse, exchange, request_bytes
from tests.support.served import AUTH, Served, ServerLog, build_app, production_logging, served
from tests.support.spec_checks import (
    JSON_TYPE,
    assert_documented_status,
    assert_error_body,
    fields_read_by,
    normal_completion,
)
from tests.support.strategies import (
    WRONG_TYPES,
    fuzz,
    huge_text,
    json_keys,
    json_paths,
    json_values,
    odd_steps,
    odd_text,
    often,
    replaced,
    text,
    wire_bytes,
    wrong,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

RESPONSES = "/v1/responses"
MAX_BODY = 1_000_000
STATUSES = frozenset({200, 400, 401, 404, 413})
INCLUDABLE = openresponses_wire.INCLUDABLE
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
PNG = "data:image/png;base64,iVBORw0KGgo="
TOOL = {"type": "function", "name": "lookup", "description": "d",
        "parameters": {"type": "object"}, "strict": False}  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Served, ServerLog]]:
    overrides = {
        "gateway": {
            "http": {"endpoints": {"responses": {"enabled": True, "maxBodyBytes": MAX_BODY}}}
        },
        "agents": {
            "defaults": {"maxConcurrent": 8},
            "list": [{"id": "main", "default": True}, {"id": "beta"}],
        },
    }
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-responses"), overrides)
        async with served(app) as server:
            yield server, log
        assert log.new_problems() == []


def assert_response(response: RawResponse) -> None:
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        blocks = response.body.decode()[:-2].split("\n\n")
        events = [json.loads(b.split("\n")[1].removeprefix("data: ")) for b in blocks]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[0]["type"] == "response.created", events[0]
        assert events[-1]["type"] in TERMINAL, events[-1]
        return
    assert content_type == JSON_TYPE, response
    body = response.json()
    assert body["object"] == "response" and isinstance(body["output"], list), body


async def check(server: Served, log: ServerLog, response: RawResponse, fuzzed: bool = True) -> None:
    if fuzzed:  # hypothesis records events only inside a fuzzed example
        event(f"status {response.status}")
    assert_answer(response)
    await normal_completion(server.port)
    assert log.new_problems() == []


def assert_answer(response: RawResponse, *context: Any) -> None:
    """A documented status with its body: a response object, or an error body."""
    assert_documented_status(response.status)
    assert response.status in STATUSES, (*context, response)
    if response.status == 200:
        assert_response(response)
    else:
        assert_error_body(response)


async def post(server: Served, body: Any, headers: dict[str, str | bytes] | None = None) -> Any:
    request = request_bytes("POST", RESPONSES, {**AUTH, **(headers or {})}, wire_bytes(body))
    return await exchange(server.port, request)


# -- bodies -------------------------------------------------------------------------------

part = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text", "text"]),
                           "text": often(text)}),
    st.fixed_dictionaries({"type": st.just("input_image"),
                           "image_url": often(st.sampled_from([PNG, "http://x/y.png", ""]))}),
    st.fixed_dictionaries({"type": often(st.sampled_from(["input_file", "refusal", ""]))}),
    wrong,
)  # fmt: skip
content = st.one_of(text, st.lists(part, max_size=4), wrong)
call_id = often(st.sampled_from(["call_1", "", " ", "x" * 257]))
item = st.one_of(
    st.fixed_dictionaries(
        {"role": often(st.sampled_from(["user", "assistant", "system", "developer", "tool"]))},
        optional={"type": st.just("message"), "content": content},
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call"), "call_id": call_id,
         "name": often(st.sampled_from(["lookup", "", "bad name", "x" * 65])),
         "arguments": often(st.sampled_from(["{}", '{"q":1}', "not json"]))}
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call_output"), "call_id": call_id,
         "output": often(st.one_of(text, st.lists(part, max_size=2)))}
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["reasoning", "item_reference", "web_search_call", "x"])}
    ),
    # An id of no stored item, in every wrong type and size: a 400 naming it or its place.
    # Its `type` is optional (an `id` without a role is a reference), or null.
    st.fixed_dictionaries(
        {"id": often(st.one_of(st.sampled_from(["msg_" + "0" * 32, "fc_" + "0" * 32 + "_0",
                                                "rs_1", "", "x" * 257]), odd_text))},
        optional={"type": st.sampled_from(["item_reference", None])},
    ),
    wrong,
)  # fmt: skip
input_value = st.one_of(text, st.lists(item, max_size=6), huge_text, wrong)
tool = st.one_of(
    st.just(TOOL),
    st.fixed_dictionaries(
        {"type": often(st.sampled_from(["function", "web_search"])),
         "name": often(st.sampled_from(["lookup", "other", "", "x" * 65]))},
        optional={"description": wrong, "parameters": wrong, "strict": wrong},
    ),
    wrong,
)  # fmt: skip
metadata = st.one_of(
    st.dictionaries(odd_text, odd_text, max_size=4),
    st.sampled_from([{"k" * 65: "v"}, {"k": "v" * 513}, {str(i): "v" for i in range(17)}]),
    wrong,
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": often(st.sampled_from(["openclaw", "openclaw/beta", "openclaw/nope", "gpt"])),
    "input": often(input_value),
    "instructions": often(text),
    "tools": often(st.lists(tool, max_size=3)),
    "tool_choice": often(
        st.sampled_from(
            [
                "auto",
                "none",
                "required",
                {"type": "function", "name": "lookup"},
                {"type": "function", "name": "nope"},
                {"type": "allowed_tools", "mode": "auto",
                 "tools": [{"type": "function", "name": "lookup"}]},
                {"type": "allowed_tools", "mode": "none", "tools": []},
                {"type": {}},
            ]
        )
    ),
    "parallel_tool_calls": often(st.booleans()),
    "max_output_tokens": often(st.sampled_from([1, 16, 2**53 - 1, 2**53, 0, -1, 1.5, True])),
    "temperature": often(st.sampled_from([0, 1, 2, 2.5, -0.1])),
    "top_p": often(st.sampled_from([0, 0.5, 1, 1.5])),
    "metadata": often(metadata),
    "text": often(
        st.fixed_dictionaries(
            {},
            optional={
                "format": st.sampled_from(
                    [
                        {"type": "text"},
                        {"type": "json_object"},
                        {"type": "json_schema", "name": "w", "schema": {"type": "object"}},
                        {"type": "xml"},
                        {"type": []},
                        {"type": "json_schema"},
                        {"type": "json_schema", "name": "a b", "schema": {}},
                        {"type": "json_schema", "name": "w", "schema": [], "strict": "yes"},
                    ]
                ),
                "verbosity": often(st.sampled_from(["low", "medium", "high", "max", "", 1])),
            },
        )
    ),
    "reasoning": often(
        st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "effort": often(st.sampled_from(["none", "low", "xhigh", "max", "", 1])),
                    "summary": often(st.sampled_from(["auto", "detailed", "long", False])),
                },
            ),
            wrong,
        )
    ),
    "store": often(st.booleans()),
    "stream": often(st.booleans()),
    "user": often(text),
    "previous_response_id": often(st.sampled_from(["resp_nope", "", "x" * 300, "\ud800"])),
    # OpenAI's documented values, or a 400 naming it.
    "include": often(
        st.lists(st.one_of(st.sampled_from(INCLUDABLE), odd_text, wrong), max_size=3)
    ),
    # Read and ignored, whatever their value (README).
    **{
        name: wrong
        for name in ("service_tier", "prompt_cache_key", "safety_identifier",
                     "top_logprobs", "max_tool_calls")
    },
}  # fmt: skip
bodies = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries({}, optional=FIELDS),
    st.dictionaries(odd_text, wrong, max_size=3),
)


class TestCreate:
    @fuzz(200)
    @given(body=st.one_of(bodies, wrong))
    async def test_any_body_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], body: Any
    ) -> None:
        server, log = gateway
        await check(server, log, await post(server, body))

    async def test_a_body_over_the_limit_is_a_413(self, gateway: tuple[Served, ServerLog]) -> None:
        server, _ = gateway
        response = await post(server, {"input": "x" * (MAX_BODY + 1)})
        assert response.status == 413
        assert_error_body(response)


COMPLETE_BODY: dict[str, Any] = {
    "model": "openclaw",
    "instructions": "Be brief.",
    "input": [
        {"type": "message", "role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "call lookup {}"},
            {"type": "input_image", "image_url": PNG}]},
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant", "id": "msg_1",
         "content": [{"type": "output_text", "text": "calling"}]},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "found"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [TOOL],
    "tool_choice": {"type": "allowed_tools", "mode": "auto",
                    "tools": [{"type": "function", "name": "lookup"}]},
    "parallel_tool_calls": True,
    "max_output_tokens": 100,
    "temperature": 1,
    "top_p": 1,
    "metadata": {"k": "v"},
    "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}},
             "verbosity": "low"},
    "reasoning": {"effort": "low", "summary": "auto"},
    "store": True,
    "stream": False,
    "user": "fuzz",
    "previous_response_id": None,
    "include": ["reasoning.encrypted_content", "message.output_text.logprobs"],
    "conversation": None,
    "prompt": None,
    "background": False,
    "truncation": "auto",
}  # fmt: skip
WALK_STEPS = [
    (path, wrong_value)
    for path in json_paths(COMPLETE_BODY)
    for wrong_value in WRONG_TYPES
    if path != ("model",) or wrong_value is not None
]


class TestEveryPlaceOfTheBody:
    async def test_the_complete_body_holds_every_field_the_wire_module_reads(self) -> None:
        # `status`/`summary` belong to items we answer with, not to what we read;
        # `starting_after`, `after`, `limit`, `order` and `include` (`include[]`) are of a
        # GET's query (TestStoredResponses fuzzes them).
        query = {"starting_after", "after", "limit", "order", "include", "include[]"}
        read = fields_read_by(openresponses_wire) - {"status", "summary"} - query
        assert read - json_keys(COMPLETE_BODY) == set()

    async def test_the_complete_body_is_answered(self, gateway: tuple[Served, ServerLog]) -> None:
        server, log = gateway
        response = await post(server, COMPLETE_BODY)
        assert response.status == 200, response
        await check(server, log, response, fuzzed=False)

    async def test_a_wrong_value_anywhere_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog]
    ) -> None:
        await walk(*gateway, WALK_STEPS)

    async def test_an_odd_or_oversize_value_anywhere_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog]
    ) -> None:
        """Strings, lists and objects over every limit, NUL, controls, lone surrogates."""
        await walk(*gateway, odd_steps(COMPLETE_BODY))


async def walk(
    server: Served, log: ServerLog, steps: list[tuple[tuple[str | int, ...], Any]]
) -> None:
    for path, wrong_value in steps:
        response = await post(server, replaced(COMPLETE_BODY, path, wrong_value))
        assert_answer(response, path, wrong_value)
    await normal_completion(server.port)
    assert log.new_problems() == []


def percent_encoded(text: str) -> str:
    """`text` as a query value: every byte of its UTF-8 (lone surrogates too) percent-encoded."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


class TestContinuing:
    @fuzz(60)
    @given(
        ids=st.lists(
            st.one_of(
                json_values,  # of any type (a body JSON refuses is refused first)
                odd_text,
                st.sampled_from(["", "x" * 5_000, "msg_", "fc_x_0", "rs_1"]),
                st.just("own"),  # an output item's id of the response continued
            ),
            min_size=1,
            max_size=4,
        ),
    )
    async def test_any_item_ids_with_a_continuation_get_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], ids: list[Any]
    ) -> None:
        """Item ids of any type and size, some of the response continued (a 400 naming
        the first of those), some not (read as any other item)."""
        server, log = gateway
        created = (await post(server, {"input": "hi"})).json()
        own = created["output"][0]["id"]
        items = [
            {"id": own if item_id == "own" else item_id, "role": "user", "content": "x"}
            for item_id in ids
        ]
        body = {"input": items, "previous_response_id": created["id"]}
        response = await post(server, body)
        event(f"status {response.status}")
        assert response.status in {200, 400}, response
        if "own" in ids:
            assert response.status == 400, response
            assert response.json()["error"]["param"] == "input", response
            assert own in response.json()["error"]["message"], response
        else:
            assert response.status == 200, response
        assert log.new_problems() == []


class TestItemReferences:
    @fuzz(60)
    @given(
        ids=st.lists(
            st.one_of(
                json_values,
                odd_text,
                st.sampled_from(["", "x" * 5_000, "msg_", "fc_x_0", "rs_1", "msg_" + "0" * 32]),
                st.just("own"),  # a stored response's output item: given to the model
            ),
            min_size=1,
            max_size=4,
        ),
    )
    async def test_any_item_reference_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], ids: list[Any]
    ) -> None:
        """References of any id type and size: all of stored items, a 200; else a 400
        naming the first wrong one or its place."""
        server, log = gateway
        created = (await post(server, {"input": "hi"})).json()
        own = created["output"][0]["id"]
        items: list[Any] = [
            {"type": "item_reference", "id": own if item_id == "own" else item_id}
            for item_id in ids
        ]
        response = await post(server, {"input": [*items, {"role": "user", "content": "x"}]})
        event(f"status {response.status}")
        if all(item_id == "own" for item_id in ids):
            assert response.status == 200, response
        else:
            assert response.status == 400, response
            assert_error_body(response)
            assert response.json()["error"]["param"] == "input", response
        assert log.new_problems() == []


class TestStoredResponses:
    @fuzz(80)
    @given(
        method=st.sampled_from(["GET", "DELETE", "PUT"]),  # HEAD: exchange() reads a body
        response_id=st.one_of(
            st.sampled_from(["resp_x", "x" * 300, "%ff", "%00", "%2F", "%ud800", "a%20b"]),
            odd_text.map(lambda s: s.encode("utf-8", "surrogatepass").hex()),
        ),
    )
    async def test_any_id_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], method: str, response_id: str
    ) -> None:
        server, log = gateway
        request = request_bytes(method, f"{RESPONSES}/{response_id}", AUTH)
        response = await exchange(server.port, request)
        event(f"status {response.status}")
        assert_documented_status(response.status)
        assert response.status in {200, 400, 404, 405}, response
        if response.status != 200:
            assert_error_body(response)
        assert log.new_problems() == []

    @fuzz(60)
    @given(
        query=st.lists(
            st.tuples(
                st.sampled_from(["after", "limit", "order", "include", "include[]", "x"]),
                st.one_of(
                    st.sampled_from(INCLUDABLE),
                    st.sampled_from(["asc", "desc", "0", "1", "100", "101", "-1", "1.5",
                                     "9" * 300, "msg_x", "x" * 300, "%ff", "%00", ""]),
                    # Numbers int() would read (`+1`, ` 1`, `1_0`, Arabic-Indic and fullwidth
                    # digits), overlong and surrogate UTF-8, a limit past any integer.
                    st.sampled_from(["%2B1", "%201", "1_0", "%D9%A1", "%EF%BC%91", "1e2", "0x10",
                                     "%C0%80", "%ED%A0%80", "1%00", "9" * 5_000, "ASC", "+"]),
                    odd_text.map(lambda s: s.encode("utf-8", "surrogatepass").hex()),
                    odd_text.map(percent_encoded),
                    # Shaped as item ids (a stored message's id in hex: a cursor is looked up).
                    st.tuples(
                        st.sampled_from(["msg_", "fco_", "fc_", "fc_x"]),
                        st.one_of(
                            st.text("0123456789abcdef", min_size=32, max_size=32),
                            st.text("0123456789abcdefABCDEF-_", max_size=40),
                        ),
                        st.sampled_from(["", "_0", "_1_2", "_-1", "_" + "9" * 30]),
                    ).map("".join),
                ),
            ),
            max_size=4,
        ),
        known=st.booleans(),
    )  # fmt: skip
    async def test_any_input_items_query_gets_a_documented_answer(
        self,
        gateway: tuple[Served, ServerLog],
        query: list[tuple[str, str]],
        known: bool,
    ) -> None:
        server, log = gateway
        response_id = (await post(server, {"input": "hi"})).json()["id"] if known else "resp_x"
        path = f"{RESPONSES}/{response_id}/input_items?" + "&".join(f"{k}={v}" for k, v in query)
        response = await exchange(server.port, request_bytes("GET", path, AUTH))
        event(f"status {response.status}")
        assert response.status in {200, 400, 404}, response
        if response.status == 200:
            body = response.json()
            assert body["object"] == "list" and isinstance(body["data"], list), body
        else:
            assert_error_body(response)
        if any(k in ("include", "include[]") and v not in INCLUDABLE for k, v in query):
            # Read before anything else, the lookup included: a 400 naming it.
            assert response.status == 400, response
            assert response.json()["error"]["param"] == "include", response
        assert log.new_problems() == []

    @fuzz(40)
    @given(
        method=st.sampled_from(["GET", "DELETE", "POST", "PUT"]),
        response_id=st.one_of(
            st.sampled_from(["resp_x", "x" * 300, "%ff", "%00", "%2F", "%ud800", "a%20b"]),
            odd_text.map(lambda s: s.encode("utf-8", "surrogatepass").hex()),
        ),
    )
    async def test_any_input_items_id_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], method: str, response_id: str
    ) -> None:
        server, log = gateway
        path = f"{RESPONSES}/{response_id}/input_items"
        response = await exchange(server.port, request_bytes(method, path, AUTH))
        event(f"status {response.status}")
        assert response.status in {400, 404, 405}, response
        assert_error_body(response)
        assert log.new_problems() == []

    @fuzz(60)
    @given(
        name=st.sampled_from(
            ["stream", "starting_after", "include", "include[]", "include_obfuscation", "x"]
        ),
        value=st.one_of(
            st.sampled_from(INCLUDABLE),
            st.sampled_from(["true", "false", "0", "-1", "1.5", "9" * 300, "%ff", "%00", ""]),
            st.sampled_from(["x" * 5_000, "include", "message.output_text.logprobs%00", "%5B%5D"]),
            odd_text.map(lambda s: s.encode("utf-8", "surrogatepass").hex()),
        ),
    )
    async def test_any_query_of_a_get_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], name: str, value: str
    ) -> None:
        server, log = gateway
        created = (await post(server, {"input": "hi"})).json()
        for response_id in (created["id"], "resp_nope"):
            path = f"{RESPONSES}/{response_id}?{name}={value}"
            response = await exchange(server.port, request_bytes("GET", path, AUTH))
            event(f"status {response.status}")
            assert response.status in {200, 400, 404}, response
            if response.status != 200:
                assert_error_body(response)
            if name in ("include", "include[]") and value in INCLUDABLE:
                assert response.status == (200 if response_id == created["id"] else 404)
            elif name in ("include", "include[]"):  # read before the lookup: a 400 naming it
                assert response.status == 400, response
                assert response.json()["error"]["param"] == "include", response
        assert log.new_problems() == []
