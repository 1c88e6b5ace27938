"""Property-based fuzzing of `POST /v1/chat/completions` (http-openai.md §2-§8), and of every
HTTP endpoint's headers, paths and preflights.

Whatever the body and the routing headers hold, the answer is a documented status (never a
500, no 5xx at all over the echo agent), every error has the §8 shape, nothing is logged as
an error or a traceback, and a normal request still succeeds right after. One gateway serves
the whole module, as `clawgate run` serves it (its runner and its JSON logging); the number of
examples is fixed and the generation derandomized, so a run is repeatable and bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import event, example, given
from hypothesis import strategies as st

from gateway.auth import AuthRateLimiter
from gateway.config.model import RateLimitConfig
from gateway.http import openai_wire
from tests.support.raw_http import (
    RawResponse,
    exchange,
    exchange_all,
    read_head,
    read_response,
    request_bytes,
)
from tests.support.served import (
    AUTH,
    CHAT,
    TOKEN,
    Served,
    ServerLog,
    build_app,
    production_logging,
    served,
)
from tests.support.spec_checks import (
    assert_completion,
    assert_documented_status,
    assert_error_body,
    fields_read_by,
    normal_completion,
)
from tests.support.strategies import (
    WRONG_TYPES,
    bytes_of,
    corrupted,
    fuzz,
    json_keys,
    json_paths,
    json_values,
    nonempty_text,
    odd_steps,
    odd_text,
    often,
    replaced,
    specials,
    text,
    weighted,
    wire_bytes,
    wrong,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    # A failing example with a huge string: its repr is long, and that is fine.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]


# What the echo agent can answer (no upstream: no 429/502/504; not draining: no 503).
CHAT_STATUSES = frozenset({200, 400, 401, 413, 415})
MAX_BODY = 1_000_000  # small, so that 413 is reachable without sending megabytes each time
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CONTROL_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Served, ServerLog]]:
    overrides = {
        "gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": MAX_BODY}}}},
        "agents": {"defaults": {"maxConcurrent": 8}},
    }
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-http"), overrides)
        async with served(app) as server:
            yield server, log
        assert log.new_problems() == []


async def check(server: Served, log: ServerLog, response: RawResponse) -> None:
    """The properties every fuzzed request must keep."""
    event(f"status {response.status}")  # --hypothesis-show-statistics shows the spread
    assert_documented_status(response.status)
    assert response.status in CHAT_STATUSES, response
    if response.status == 200:
        assert_completion(response)
    else:
        assert_error_body(response)
    await normal_completion(server.port)
    assert log.new_problems() == []


# -- the body -----------------------------------------------------------------------------

PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
DATA_URIS = (
    f"data:image/png;base64,{PNG_1PX}",
    f"DATA:IMAGE/PNG;BASE64,{PNG_1PX}",
    "data:image/png;base64,",
    "data:image/png;base64,!!!not base64",
    "data:image/png;base64,QQ",
    "data:text/plain;base64,aGk=",
    "data:image/png,raw",
    "data:;base64,aGk=",
    "https://example.com/cat.png",
    "data:image/png;base64," + "A" * 200_000,
)
image_url = st.one_of(
    st.sampled_from(DATA_URIS),
    st.fixed_dictionaries(
        {"url": often(st.sampled_from(DATA_URIS))}, optional={"detail": json_values}
    ),
    wrong,
)
part_type = st.sampled_from(["text", "input_text", "image_url", "image", "audio", "TEXT", ""])
content_part = st.fixed_dictionaries(
    {},
    optional={
        "type": often(part_type),
        "text": often(text),
        "input_text": often(text),
        "image_url": image_url,
    },
)
content = st.one_of(text, st.lists(often(content_part), max_size=10))
valid_content = st.one_of(
    text,
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "input_text"]), "text": odd_text}
            ),
            st.fixed_dictionaries(
                {
                    "type": st.just("image_url"),
                    "image_url": st.sampled_from(
                        [DATA_URIS[0], DATA_URIS[1], {"url": DATA_URIS[0], "detail": "low"}]
                    ),
                }
            ),
        ),
        max_size=4,
    ),
)
ROLES = ["user", "assistant", "system", "developer", "tool", "function"]
role = st.sampled_from([*ROLES, " user ", "USER", "", "bot"])
tool_call = st.fixed_dictionaries(
    {},
    optional={
        "id": often(odd_text),
        "type": often(st.sampled_from(["function", "custom"])),
        "function": often(
            st.fixed_dictionaries({}, optional={"name": often(text), "arguments": often(text)})
        ),
    },
)
# What a client may send about tools (validated as OpenAI validates them).
function_name = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
call_id = st.text(min_size=1, max_size=256).filter(str.strip)
valid_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": function_name},
            optional={
                "description": text,
                "parameters": st.dictionaries(text, json_values, max_size=3),
                "strict": st.booleans(),
            },
        ),
    }
)
valid_tools = st.lists(valid_tool, max_size=4, unique_by=lambda t: t["function"]["name"])
valid_call = st.fixed_dictionaries(
    {
        "id": call_id,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": function_name, "arguments": text}),
    }
)
message = st.fixed_dictionaries(
    {"role": often(role)},
    optional={
        "content": often(content),
        "name": often(odd_text),
        "tool_call_id": often(odd_text),
        "tool_calls": often(st.lists(often(tool_call), max_size=3)),
    },
)
HELLO = {"role": "user", "content": "hello"}
messages = st.one_of(
    st.lists(message, min_size=1, max_size=6),
    st.lists(message, max_size=6).map(lambda m: [*m, HELLO]),
)
MODELS = ["openclaw", "openclaw/main", "openclaw/default", "OpenClaw:MAIN", "agent:main"]

# Each field's accepted values (§5), with their edges.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "n": st.sampled_from([1, 1.0]),
    "tools": valid_tools,
    "functions": st.just([]),
    "tool_choice": st.sampled_from(["none", "auto"]),
    "parallel_tool_calls": st.booleans(),
    "function_call": st.sampled_from(["none", "auto"]),
    "temperature": st.floats(0, 2) | st.sampled_from([0, 2]),
    "top_p": st.floats(0, 1) | st.sampled_from([0, 1]),
    "frequency_penalty": st.floats(-2, 2),
    "presence_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "max_tokens": st.sampled_from([1, 2, 3, 2**53 - 1]),
    "max_completion_tokens": st.sampled_from([1, 2, 3, 2**53 - 1]),
    "stop": st.one_of(nonempty_text, st.lists(nonempty_text, max_size=4)),
    "response_format": st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "json_object"])},
            optional={"json_schema": json_values},
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("json_schema"),
                "json_schema": st.fixed_dictionaries(
                    {"name": st.sampled_from(["w", "Weather_1-a", "x" * 64])},
                    optional={
                        "schema": st.dictionaries(nonempty_text, json_values, max_size=3),
                        "strict": st.booleans(),
                        "description": nonempty_text,
                    },
                ),
            }
        ),
    ),
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh"]),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
    "modalities": st.sampled_from([[], ["text"], ["text", "text"]]),
    # Control characters cannot go back in the x-openclaw-session-key header: 400.
    "user": odd_text.map(lambda s: re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "", s)),
    # Read and ignored, whatever their value (README): the SDK's other fields.
    **dict.fromkeys(
        ("logprobs", "top_logprobs", "logit_bias", "metadata", "store", "service_tier",
         "prompt_cache_key", "safety_identifier", "prediction", "web_search_options",
         "audio"),
        json_values,
    ),
}  # fmt: skip


def tool_round(
    calls: list[dict[str, Any]], results: list[tuple[Any, str | None]]
) -> list[dict[str, Any]]:
    """An assistant message's calls and the results that answer some of them, as a client
    sends them (a result that answers no call is a 400, as OpenAI's)."""
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": None, "tool_calls": calls}]
    for call, (content, name) in zip(calls, results, strict=False):
        result = {"role": "tool", "content": content, "tool_call_id": call["id"]}
        messages.append(result if name is None else {**result, "name": name})
    return messages


valid_body = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODELS),
        "messages": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "role": st.sampled_from(["user", "system", "developer"]),
                        "content": valid_content,
                    },
                    optional={"name": odd_text},
                ).map(lambda m: [m]),
                st.fixed_dictionaries(
                    {"role": st.just("assistant"), "content": valid_content | st.none()},
                    optional={"tool_calls": st.lists(valid_call, max_size=3)},
                ).map(lambda m: [m]),
                st.builds(
                    tool_round,
                    st.lists(valid_call, min_size=1, max_size=3),
                    st.lists(st.tuples(valid_content, st.none() | odd_text), max_size=3),
                ),
            ),
            max_size=4,
        ).map(lambda rounds: [*(m for r in rounds for m in r), HELLO]),
    },
    optional=VALID,
)
# A valid body with every field the wire module reads, nested ones included (checked below
# against gateway/http/openai_wire.py's source, so a field added there cannot be left out here).
COMPLETE_BODY: dict[str, Any] = {
    "model": "openclaw/main",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "earlier"},
                {"type": "input_text", "input_text": "words"},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "reasoning_content": "a lookup will tell",
            "tool_calls": [
                {
                    "id": "call-1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call-1", "name": "lookup", "content": "found"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": DATA_URIS[0], "detail": "low"}},
            ],
        },
    ],
    "stream": False,
    "stream_options": {"include_usage": True},
    "n": 1,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Looks a word up.",
                "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
                "strict": False,
            },
        }
    ],
    "functions": [],
    "tool_choice": {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "lookup"}}],
        },
    },
    "parallel_tool_calls": True,
    "function_call": "none",
    "temperature": 1,
    "top_p": 0.5,
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "seed": 7,
    "max_tokens": 64,
    "max_completion_tokens": 64,
    "stop": ["\n\n"],
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "x", "description": "d", "schema": {}, "strict": False},
    },
    "reasoning_effort": "high",
    "verbosity": "low",
    "modalities": ["text"],
    "user": "walker",
    "logprobs": False,
    "logit_bias": {"50256": -100},
    "metadata": {"k": "v"},
}


# Where a wrong value goes: every field, and the nested places a client fills in.
PATHS: list[tuple[str | int, ...]] = [
    ("model",),
    ("messages",),
    ("messages", -1),
    ("messages", -1, "role"),
    ("messages", -1, "content"),
    ("messages", -1, "content", 0),
    ("messages", 0, "content"),
    ("messages", 0, "name"),
    ("messages", 0, "tool_call_id"),
    ("messages", 0, "tool_calls"),
    ("messages", 0, "tool_calls", 0),
    ("messages", 0, "tool_calls", 0, "function"),
    ("tools", 0),
    ("tools", 0, "function"),
    ("tools", 0, "function", "name"),
    ("tools", 0, "function", "parameters"),
    ("tool_choice", "function", "name"),
    ("tool_choice", "allowed_tools", "mode"),
    ("tool_choice", "allowed_tools", "tools", 0, "function", "name"),
    ("stream_options", "include_usage"),
    ("response_format", "type"),
    *((name,) for name in VALID),
    # And every place of the complete body (a path a generated body lacks is skipped).
    *json_paths(COMPLETE_BODY)[1:],
]
# Near misses first (the checks' edges), then anything at all.
NEAR_MISSES = st.sampled_from(
    [
        "openclaw/nope",
        "openclaw/",
        "gpt-4o",
        " openclaw ",
        "openclaw/ma\u0131n",  # dotless i: lowercases to itself, not to "main"
        2,
        0,
        -1,
        1.5,
        2**53,
        2**64,
        2**63,
        -0.0,
        2.0000001,
        "required",
        {"type": "function"},
        [{"type": "function"}],
        [""],
        ["a", "b", "c", "d", "e"],
        "",
        "true",
        {"type": "xml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}},
        {"type": "json_schema", "json_schema": {"name": "x" * 65}},
        [HELLO],
        {"role": "user"},
        {"role": "user", "content": [{"type": "image_url", "image_url": DATA_URIS[3]}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": DATA_URIS[0]}] * 9},
        # Tools: the checks' edges.
        {"type": "function", "function": {"name": "f"}},
        [{"type": "function", "function": {"name": "f"}}] * 129,
        [{"type": "function", "function": {"name": "f"}}] * 2,
        "x" * 65,
        "a b",
        {"type": "function", "function": {"name": "nope"}},
        {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
        {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {}}]},
        },
        {"role": "tool", "content": "r"},
        {"role": "tool", "tool_call_id": "c" * 257, "content": "r"},
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
        {"role": "assistant", "tool_calls": {"id": "c"}},
        {"role": "user", "content": "call f {}"},
    ]
)
corruption = st.dictionaries(
    st.sampled_from(PATHS), st.one_of(NEAR_MISSES, wrong), min_size=1, max_size=3
)


any_body = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries(
        {},
        optional={
            "model": often(st.sampled_from(MODELS)),
            "messages": often(messages),
            **{name: st.one_of(value, NEAR_MISSES, wrong) for name, value in VALID.items()},
        },
    ),
    st.dictionaries(odd_text, wrong, max_size=3),
)
BODY_DAMAGE = ("none",) * 6 + ("truncate", "bom", "garbage", "surrogate-bytes")


def damaged(body: Any, how: str, cut: int, garbage: bytes) -> bytes:
    """The body on the wire, intact most of the time; else cut, prefixed with a BOM, with
    bytes that are not UTF-8 spliced in, or with surrogates written as (invalid) UTF-8."""
    if how == "surrogate-bytes":
        return wire_bytes(body, ascii_only=False, raw_surrogates=True)
    raw = wire_bytes(body, ascii_only=cut % 2 == 0)
    if how == "truncate":
        return raw[: cut % (len(raw) + 1)]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "garbage":
        at = cut % (len(raw) + 1)
        return raw[:at] + garbage + raw[at:]
    return raw


damage = st.tuples(
    st.sampled_from(BODY_DAMAGE), st.integers(0, 2**16), st.binary(min_size=1, max_size=8)
)


class TestChatBody:
    @fuzz(120)
    @given(body=valid_body, how=damage)
    async def test_a_valid_body_is_answered(
        self, gateway: tuple[Served, ServerLog], body: dict[str, Any], how: Any
    ) -> None:
        """The generator's valid bodies pass (so the wrong ones below are wrong for the
        reason they were made), unless damaged on the wire."""
        server, log = gateway
        raw = damaged(body, *how)
        response = await exchange(server.port, request_bytes("POST", CHAT, AUTH, raw))
        await check(server, log, response)
        if how[0] == "none":
            assert response.status == (200 if len(raw) <= MAX_BODY else 413), response

    @fuzz(250)
    @given(body=valid_body, wrongs=corruption, how=damage)
    async def test_a_body_with_wrong_fields_gets_a_documented_answer(
        self,
        gateway: tuple[Served, ServerLog],
        body: dict[str, Any],
        wrongs: dict[tuple[str | int, ...], Any],
        how: Any,
    ) -> None:
        server, log = gateway
        raw = damaged(corrupted(body, wrongs), *how)
        response = await exchange(server.port, request_bytes("POST", CHAT, AUTH, raw))
        await check(server, log, response)

    @fuzz(100)
    @given(body=st.one_of(any_body, wrong), how=damage)
    async def test_any_body_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], body: Any, how: Any
    ) -> None:
        server, log = gateway
        response = await exchange(
            server.port, request_bytes("POST", CHAT, AUTH, damaged(body, *how))
        )
        await check(server, log, response)

    @fuzz(60)
    @given(
        body=st.one_of(
            st.binary(max_size=3000),
            st.binary(max_size=50).map(lambda b: b"\xff\xfe" + b),
            specials.map(wire_bytes),
            st.sampled_from([b"", b"   ", b"\n", b"null", b"[]", b'"x"', b"{", b'{"a":1}x']),
            st.sampled_from(
                [
                    '{"messages":[{"role":"user","content":"hi"}]}'.encode("utf-16"),  # BOM
                    b'{"model":"openclaw","model":[],"messages":[],"messages":7}',  # duplicates
                    b'{"temperature":1e400,"seed":NaN,"top_p":-Infinity}',
                    b'{"user":"\\ud800\\udc00\\udfff","messages":"\\ud83d"}',
                ]
            ),
        )
    )
    async def test_random_bytes_as_the_body(
        self, gateway: tuple[Served, ServerLog], body: bytes
    ) -> None:
        server, log = gateway
        response = await exchange(server.port, request_bytes("POST", CHAT, AUTH, body))
        await check(server, log, response)


# -- every place of a complete body, with every wrong type --------------------------------


WALK_STEPS = [
    (path, wrong_value)
    for path in json_paths(COMPLETE_BODY)
    for wrong_value in WRONG_TYPES
    if path != ("model",) or wrong_value is not None  # stays valid: null is the default
]
ODD_STEPS = odd_steps(COMPLETE_BODY)


class TestEveryPlaceOfTheBody:
    async def test_the_complete_body_holds_every_field_the_wire_module_reads(self) -> None:
        assert fields_read_by(openai_wire) - json_keys(COMPLETE_BODY) == set()

    async def test_the_complete_body_is_answered(self, gateway: tuple[Served, ServerLog]) -> None:
        server, log = gateway
        response = await exchange(
            server.port, request_bytes("POST", CHAT, AUTH, wire_bytes(COMPLETE_BODY))
        )
        assert response.status == 200, response
        assert log.new_problems() == []

    async def test_any_wrong_type_anywhere_is_a_400_or_ignored(
        self, gateway: tuple[Served, ServerLog]
    ) -> None:
        """Each place of the complete body (the root, every container, every leaf) with each
        JSON type it does not take: a §8 400, or a 200 where the spec ignores the field;
        never a 5xx."""
        await walk(*gateway, WALK_STEPS)

    async def test_any_odd_or_oversize_value_anywhere_is_a_400_or_answered(
        self, gateway: tuple[Served, ServerLog]
    ) -> None:
        """Each place with each of the values made to slip past a field's checks: strings,
        lists and objects over every limit, NUL, controls, lone surrogates, bidi marks."""
        await walk(*gateway, ODD_STEPS)


async def walk(
    server: Served, log: ServerLog, walk_steps: list[tuple[tuple[str | int, ...], Any]]
) -> None:
    """The complete body with each step's value at its place, over one keep-alive connection
    per worker, so the walk stays quick."""
    failures: list[str] = []
    steps = iter(walk_steps)

    async def worker(http: aiohttp.ClientSession) -> None:
        for path, wrong_value in steps:
            raw = wire_bytes(replaced(COMPLETE_BODY, path, wrong_value))
            async with http.post(server.url + CHAT, data=raw, headers=AUTH) as got:
                response = RawResponse(
                    got.status, {k.lower(): v for k, v in got.headers.items()}, await got.read()
                )
            try:
                assert response.status in (200, 400), response
                (assert_completion if response.status == 200 else assert_error_body)(response)
            except AssertionError as exc:
                failures.append(f"{path} = {wrong_value!r:.80}: {exc!s:.300}")

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(4)))
    assert failures == []
    assert log.new_problems() == []


# -- Content-Encoding ---------------------------------------------------------------------

CODINGS = ["gzip", "x-gzip", "deflate", "GZIP", " deflate ", "identity", "gzip, identity"]
OTHER_CODINGS = ["br", "zstd", "compress", "gzip, gzip", "deflate, gzip", "*", "gzip;q=1"]


def encoded(coding: str, raw: bytes) -> bytes:
    name = coding.replace("identity", "").strip(" ,").lower()
    if name in ("gzip", "x-gzip"):
        return gzip.compress(raw)
    if name == "deflate":
        return zlib.compress(raw)
    return raw


class TestContentEncoding:
    @fuzz(60)
    @given(
        coding=st.sampled_from(CODINGS + OTHER_CODINGS),
        body=valid_body.map(wire_bytes),
        how=st.sampled_from(["intact", "truncate", "garbage", "junk-after", "plain"]),
        cut=st.integers(0, 2**16),
        garbage=st.binary(min_size=1, max_size=40),
    )
    async def test_any_coding_of_any_body_gets_a_documented_answer(
        self,
        gateway: tuple[Served, ServerLog],
        coding: str,
        body: bytes,
        how: str,
        cut: int,
        garbage: bytes,
    ) -> None:
        server, log = gateway
        raw = encoded(coding, body)
        if how == "truncate":
            raw = raw[: cut % (len(raw) + 1)]
        elif how == "garbage":
            raw = garbage
        elif how == "junk-after":
            raw += garbage
        elif how == "plain":
            raw = body
        headers = {**AUTH, "Content-Encoding": coding}
        response = await exchange(server.port, request_bytes("POST", CHAT, headers, raw))
        await check(server, log, response)
        if coding in OTHER_CODINGS:
            # The announced length is checked before the coding: an oversize body is a 413.
            assert response.status == (413 if len(raw) > MAX_BODY else 415), response
        elif how == "intact" and len(body) <= MAX_BODY:
            assert response.status == 200, response


# -- Transfer-Encoding --------------------------------------------------------------------

TRANSFER_CODINGS = ["chunked", "gzip", "deflate", "identity", "compress", "br", "x-unknown"]
transfer_coding = st.one_of(
    st.sampled_from(TRANSFER_CODINGS),
    st.sampled_from(TRANSFER_CODINGS).map(str.upper),
    st.text(st.sampled_from('abcxyz-;="\t '), min_size=1, max_size=12),
)
UNSUPPORTED_TRANSFER_CODING = (
    "Unsupported `Transfer-Encoding`: send the body with a Content-Length or chunked alone."
)


class TestTransferEncoding:
    @fuzz(60)
    @given(
        codings=st.lists(transfer_coding, min_size=1, max_size=4),
        separator=st.sampled_from([",", ", ", " ,\t"]),
        body=valid_body.map(wire_bytes),
    )
    @example(codings=["gzip", "chunked"], separator=", ", body=b'{"messages":[]}')
    async def test_only_chunked_alone_frames_a_body(
        self, gateway: tuple[Served, ServerLog], codings: list[str], separator: str, body: bytes
    ) -> None:
        """`chunked` alone is read; any other coding before it is a 400 that says so, and
        what the HTTP parser cannot frame (no final chunked) its fixed 400."""
        server, log = gateway
        headers = {**AUTH, "Transfer-Encoding": separator.join(codings)}
        request = request_bytes("POST", CHAT, headers).replace(b"Content-Length: 0\r\n", b"")
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        response = await exchange(server.port, request + chunked)
        if [c.strip(" \t").lower() for c in codings if c.strip(" \t")] != ["chunked"]:
            # Never read as if chunked alone framed it (a gzip body read still compressed).
            assert response.status == 400, response
        if b'"code":"unsupported_transfer_encoding"' not in response.body.replace(b" ", b""):
            await check(server, log, response)
            return
        assert_error_body(response)
        assert response.json()["error"]["message"] == UNSUPPORTED_TRANSFER_CODING, response
        await normal_completion(server.port)
        assert log.new_problems() == []


# -- the headers --------------------------------------------------------------------------

# What HTTP allows in a field value (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB): such values
# reach the application, where non-UTF-8 bytes arrive as surrogate escapes.
FIELD_VALUE_BYTES = [0x09, 0x20, *range(0x21, 0x7F), *range(0x80, 0x100)]
odd_bytes = odd_text.map(lambda s: s.encode("utf-8", "surrogatepass"))
field_value = weighted(
    (2, bytes_of(FIELD_VALUE_BYTES)),
    (2, odd_bytes.map(lambda b: CONTROL_RE.sub(b"", b))),
    (1, odd_bytes),  # with controls: not HTTP any more
    (
        3,
        st.sampled_from(
            [
                b"main",
                b"MAIN",
                b"agent:main:x",
                b"agent:main:",
                b"agent:nope:x",
                b"agent:main:subagent:x",
                b"cron:x",
                b"agent::x",
                "agent:main:\u00e9\u202e😀".encode(),
                b"x" * 600,
                b"\xed\xa0\x80",  # a surrogate written as UTF-8
                b"\xc0\xaf",  # an overlong slash
                b"echo/echo",
                b"openai/gpt-4o",
                b"echo/",
                b"/",
            ]
        ),
    ),
).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))
RIGHT = f"Bearer {TOKEN}".encode()
authorization = weighted(
    (8, st.just(RIGHT)),
    (1, st.just(f"bearer   {TOKEN}  ".encode())),
    (2, field_value),
    (2, field_value.map(lambda v: b"Bearer " + v)),
    (1, st.just(b"Bearer " + TOKEN.encode() + b"\xff")),
    (1, st.just(b"")),
)


# The edge's headers (gateway/edge.py): hostile values, several of one name, or none.
edge_value = weighted(
    (2, field_value),
    (1, st.just(b"a" * 9000)),  # over aiohttp's 8190-byte field limit
    (1, st.just(("\u00e9v\u00efl.example:" + "9" * 30).encode())),
    (
        8,
        st.sampled_from(
            [
                b"127.0.0.1",
                b"localhost:1",
                b"[::1]:18789",
                b"[::1",
                b"gw.example",
                b"evil.example",
                b"null",
                b"http://127.0.0.1",
                b"https://gw.example:99999",
                b"http://[::1",
                b"http://user@localhost",
                b"203.0.113.7, 10.0.0.1, 127.0.0.1",
                b"unknown, , ,",
                b"fe80::1%eth0",
                b"application/json; charset=utf-8",
                b"APPLICATION/JSON",
                b"text/plain",
                b"application/jsonx",
                b";;;",
            ]
        ),
    ),
)
edge_values = st.lists(edge_value, max_size=2)
# Mostly exactly one: two Hosts or two Content-Types stop at aiohttp's parser.
one_mostly = weighted((6, edge_value.map(lambda v: [v])), (1, edge_values))
EDGE_STATUSES = frozenset({200, 400, 403, 413, 415, 421, 431})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxied_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Served, ServerLog]]:
    """A gateway that trusts loopback as its proxy, so X-Forwarded-For is parsed."""
    overrides = {
        "gateway": {
            "trustedProxies": ["127.0.0.1", "10.0.0.0/8"],
            "http": {"allowedHosts": ["gw.example"]},
        }
    }
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-edge"), overrides)
        async with served(app) as server:
            yield server, log
        assert log.new_problems() == []


class TestEdgeHeaders:
    @fuzz(150)
    @given(
        hosts=weighted(
            (3, st.sampled_from([b"127.0.0.1", b"localhost:9", b"gw.example"]).map(lambda v: [v])),
            (4, one_mostly),
        ),
        origins=edge_values,
        forwarded=st.lists(edge_value, max_size=3),
        content_types=one_mostly,
        path=st.sampled_from([CHAT, "/v1/models", "/healthz", "/readyz"]),
    )
    async def test_hostile_host_origin_forwarded_and_content_type_get_a_documented_answer(
        self,
        proxied_gateway: tuple[Served, ServerLog],
        hosts: list[bytes],
        origins: list[bytes],
        forwarded: list[bytes],
        content_types: list[bytes],
        path: str,
    ) -> None:
        server, log = proxied_gateway
        lines = [f"{'POST' if path == CHAT else 'GET'} {path} HTTP/1.1".encode()]
        lines.append(b"Connection: close")
        lines.append(b"Authorization: " + RIGHT)
        named = [(b"Host", hosts), (b"Origin", origins), (b"X-Forwarded-For", forwarded)]
        named.append((b"Content-Type", content_types))
        for name, values in named:
            lines.extend(name + b": " + value for value in values)
        body = wire_bytes({"model": "openclaw", "messages": [HELLO]}) if path == CHAT else b""
        lines.append(b"Content-Length: %d" % len(body))
        response = await exchange(server.port, b"\r\n".join(lines) + b"\r\n\r\n" + body)
        event(f"status {response.status}")
        assert_documented_status(response.status)
        assert response.status in EDGE_STATUSES, response
        # What aiohttp's parser refuses (no Host or two, a repeated Content-Type, a control
        # character, a field over 8190 bytes: 431) is answered in the error shape too.
        over = any(len(v) > 8190 for _, values in named for v in values)
        if response.status == 431:
            assert over, response
        if response.status == 200 and path == CHAT:
            assert_completion(response)
        elif response.status != 200:
            assert_error_body(response)
        await normal_completion(server.port)
        assert log.new_problems() == []


# Forwarded client addresses in the forms a proxy writes them, each with the client the
# limiter counts it as (an IPv4 address; an IPv6 /64, with or without brackets and port).
FORWARDED_CLIENTS = [(f"203.0.113.{n}", f"v4-{n}") for n in range(1, 6)] + [
    ("::ffff:203.0.113.1", "v4-1"),
    ("203.0.113.2:51234", "v4-2"),
    *((f"2001:db8:0:{n:x}::1", f"v6-{n}") for n in range(4)),
    ("2001:db8:0:1:ffff:1:2:3", "v6-1"),
    ("[2001:db8:0:2::9]:443", "v6-2"),
]
TRACKED, ATTEMPTS = 2, 2


class SmallLimiter(AuthRateLimiter):
    MAX_TRACKED = TRACKED


class TestLimiterFromManyAddresses:
    @fuzz(40)
    @given(
        steps=st.lists(
            st.tuples(
                st.sampled_from(FORWARDED_CLIENTS),
                weighted(
                    (2, st.just(RIGHT)),
                    (5, field_value.map(lambda v: b"Bearer x" + CONTROL_RE.sub(b"", v))),
                    (1, st.just(b"")),
                ),
            ),
            min_size=10,
            max_size=50,
        )
    )
    async def test_guesses_stay_bounded_and_known_clients_get_in(
        self,
        proxied_gateway: tuple[Served, ServerLog],
        steps: list[tuple[tuple[str, str], bytes]],
    ) -> None:
        """Interleaved right, wrong and missing tokens from many forwarded addresses, with
        room for only a few clients: each answer is documented, the wrong tokens that were
        compared stay within the bound (README "Security"), and a client among the last to
        authenticate, with no wrong token since, is always let in."""
        server, log = proxied_gateway
        state = server.state
        old = state.limiter
        state.limiter = SmallLimiter(RateLimitConfig(max_attempts=ATTEMPTS), old.clock)
        known: dict[str, None] = {}  # the last TRACKED clients that got in, the newest last
        clean: set[str] = set()  # clients with no wrong token since they got in
        ever_known: set[str] = set()
        compared_wrong: list[str] = []  # the clients whose wrong token was compared
        try:
            for (address, client), authorization in steps:
                headers: dict[str, str | bytes] = {"X-Forwarded-For": address}
                if authorization:
                    headers["Authorization"] = authorization
                request = request_bytes("GET", "/v1/models", headers)
                response = await exchange(server.port, request)
                event(f"status {response.status}")
                if authorization == RIGHT and client in known and client in clean:
                    assert response.status == 200, (address, response)
                assert response.status in (200, 401, 429), response
                if response.status == 200:
                    assert authorization == RIGHT
                    ever_known.add(client)
                    known.pop(client, None)
                    known[client] = None
                    if len(known) > TRACKED:
                        del known[next(iter(known))]
                    clean.add(client)
                    continue
                assert_error_body(response)
                if authorization and authorization != RIGHT:
                    clean.discard(client)
                    if response.status == 401:
                        compared_wrong.append(client)
            # Of the clients that never got in, at most TRACKED have counts of their own,
            # and all the others share one; each is locked out at ATTEMPTS wrong tokens (no
            # window passes here). One that got in knew the token: its guesses are no attack.
            guesses = [client for client in compared_wrong if client not in ever_known]
            assert len(guesses) <= (TRACKED + 1) * ATTEMPTS, guesses
        finally:
            state.limiter = old
        assert log.new_problems() == []


LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class TestRoutingHeaders:
    @fuzz(150)
    @given(
        headers=st.fixed_dictionaries(
            {"Authorization": authorization},
            optional={
                "x-openclaw-session-key": field_value,
                "x-openclaw-agent-id": field_value,
                "x-openclaw-agent": field_value,
                "x-openclaw-model": field_value,
                "x-openwebui-chat-id": field_value,
                "x-openwebui-task": field_value,
                "x-chat-id": field_value,
                "x-request-id": field_value,
                "Content-Type": field_value,
            },
        ),
        model=st.sampled_from(["openclaw", "openclaw/main", "gpt-4o"]),
        user=st.one_of(st.none(), odd_text),
        stream=st.booleans(),
    )
    @example(
        headers={
            "Authorization": RIGHT,
            "Content-Type": b"application/json",
            "x-openclaw-agent-id": b"caf\xe9",
        },
        model="openclaw",
        user=None,
        stream=False,
    )
    async def test_any_header_values_get_a_documented_answer(
        self,
        gateway: tuple[Served, ServerLog],
        headers: dict[str, bytes],
        model: str,
        user: str | None,
        stream: bool,
    ) -> None:
        server, log = gateway
        body: dict[str, Any] = {"model": model, "messages": [HELLO], "stream": stream}
        if user is not None:
            body["user"] = user
        request = request_bytes("POST", CHAT, headers, wire_bytes(body))
        response = await exchange(server.port, request)
        if any(CONTROL_RE.search(value) for value in headers.values()):
            # Not HTTP (RFC 9110 §5.5): aiohttp's parser answers 400 before any handler.
            assert response.status == 400, response
            await normal_completion(server.port)
            assert log.new_problems() == []
            return
        await check(server, log, response)
        request_id = response.headers.get("x-request-id", "")
        assert REQUEST_ID_RE.fullmatch(request_id), response.headers
        if response.status >= 400:
            # What is echoed of a header is text a strict JSON parser reads: a byte that is not
            # UTF-8 is shown `\xNN`, never as a lone surrogate's escape.
            assert LONE_SURROGATE_ESCAPE.search(response.body) is None, response


# -- every endpoint: the headers each reads, its paths, its preflight ----------------------

HOOK_TOKEN = "robust-hook-token-51c0"
HOOK_AUTH = {"Authorization": f"Bearer {HOOK_TOKEN}", "Content-Type": "application/json"}
CORS_ORIGIN = "https://app.example"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def every_endpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Served, ServerLog]]:
    """A gateway with every HTTP endpoint on, and CORS for any origin (so a hostile Origin is
    echoed, the path most exposed to it)."""
    overrides = {
        "gateway": {
            "controlUi": {"enabled": True},
            "http": {
                "endpoints": {"responses": {"enabled": True}},
                "cors": {"allowedOrigins": ["*"]},
            },
        },
        "agents": {
            "defaults": {"embeddingModel": "echo/echo"},
            "list": [{"id": "main", "default": True}, {"id": "beta"}],
        },
        "hooks": {"enabled": True, "token": HOOK_TOKEN, "allowRequestSessionKey": True},
    }
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-endpoints"), overrides)
        async with served(app) as server:
            yield server, log
        assert log.new_problems() == []


# (method, path, headers, body): one request each endpoint answers with a 2xx.
ENDPOINTS: list[tuple[str, str, dict[str, str], Any]] = [
    ("POST", CHAT, AUTH, {"model": "openclaw", "messages": [HELLO]}),
    ("POST", CHAT, AUTH, {"model": "openclaw", "messages": [HELLO], "stream": True}),
    ("POST", "/v1/responses", AUTH, {"model": "openclaw", "input": "hi"}),
    ("POST", "/v1/responses", AUTH, {"model": "openclaw", "input": "hi", "stream": True}),
    ("POST", "/v1/embeddings", AUTH, {"model": "openclaw", "input": "hi"}),
    ("POST", "/hooks/agent", HOOK_AUTH, {"message": "hi", "waitForCompletion": True}),
    ("POST", "/hooks/wake", HOOK_AUTH, {"text": "hi"}),
    ("GET", "/v1/models", AUTH, None),
    ("GET", "/v1/models/openclaw", AUTH, None),
    ("GET", "/v1/responses/resp_nope", AUTH, None),
    ("DELETE", "/v1/responses/resp_nope", AUTH, None),
    ("GET", "/healthz", {}, None),
    ("GET", "/readyz", AUTH, None),
    ("GET", "/metrics", AUTH, None),
    ("GET", "/", {}, None),
    ("GET", "/ui/app.js", {}, None),
]
# Every request header the gateway reads (gateway/http/*.py, edge_http.py, app.py), the
# routing headers of each endpoint on all of them. Host and X-Forwarded-For have tests of
# their own above, and so has Content-Encoding on chat completions.
READ_HEADERS = [
    "Authorization",
    "x-openclaw-token",
    "x-openclaw-agent-id",
    "x-openclaw-agent",
    "x-openclaw-session-key",
    "x-openclaw-model",
    "x-openwebui-chat-id",
    "x-openwebui-task",
    "x-chat-id",
    "x-request-id",
    "Idempotency-Key",
    "x-openclaw-idempotency-key",
    "Content-Type",
    "Content-Encoding",
    "Origin",
    "If-None-Match",
    "Expect",
    "Upgrade",
    "Accept",
    "Accept-Encoding",
]
header_value = weighted(
    (6, field_value),
    (1, st.sampled_from([b"h" * 8000, b"main, agent:beta:x", b"*", b'W/"x", "y"', b"\t"])),
).filter(lambda v: v.strip().lower() != b"100-continue")  # a first answer exchange() stops at
# Any status an endpoint documents for a request it does not take, and what it answers.
ENDPOINT_STATUSES = frozenset({200, 202, 304, 400, 401, 403, 404, 405, 413, 414, 415, 421, 503})


async def check_endpoint(server: Served, log: ServerLog, response: RawResponse) -> None:
    assert_documented_status(response.status)
    assert response.status in ENDPOINT_STATUSES, response
    content_type = response.headers.get("content-type", "")
    if response.status >= 400 and content_type.startswith("application/json"):
        assert_error_body(response)
    await normal_completion(server.port)
    assert log.new_problems() == []


async def expect_exchange(port: int, head: bytes, body: bytes) -> tuple[bool, RawResponse]:
    """A request sent as curl sends one with `Expect: 100-continue`: its head, the body only
    once the 100 came. Whether it came, and the final answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        async with asyncio.timeout(10):
            status, headers = await read_head(reader)
            if status == 100:
                writer.write(body)
                return True, await read_response(reader)
            length = headers.get("content-length")
            rest = await (reader.readexactly(int(length)) if length else reader.read())
            return False, RawResponse(status, headers, rest)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# What a request's head alone decides: never answered after a 100 asked for its body.
HEAD_REFUSALS = frozenset({401, 405, 415, 421, 429})


class TestExpectContinue:
    @fuzz(100)
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        headers=st.dictionaries(
            st.sampled_from([name for name in READ_HEADERS if name != "Expect"]),
            header_value,
            max_size=3,
        ),
    )
    async def test_a_head_gets_its_100_or_its_refusal_alone(
        self,
        every_endpoint: tuple[Served, ServerLog],
        endpoint: tuple[str, str, dict[str, str], Any],
        headers: dict[str, bytes],
    ) -> None:
        """Whatever the head holds, `Expect: 100-continue` gets a 100 and then the answer to
        the body, or a documented answer at once that closes the connection (the body was
        never asked for); never a 100 before a refusal the head decides."""
        server, log = every_endpoint
        method, path, base, body = endpoint
        raw = b"{}" if body is None else wire_bytes(body)
        sent: dict[str, str | bytes] = {**base, **headers}
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
        lines += [
            name.encode() + b": " + (v if isinstance(v, bytes) else v.encode())
            for name, v in sent.items()
        ]
        lines += [b"Content-Length: %d" % len(raw), b"Expect: 100-continue"]
        continued, response = await expect_exchange(
            server.port, b"\r\n".join(lines) + b"\r\n\r\n", raw
        )
        event(f"100 {continued}, status {response.status}")
        if any(CONTROL_RE.search(value) for value in headers.values()):
            assert (continued, response.status) == (False, 400), response  # the parser's
            return
        if continued:
            assert response.status not in HEAD_REFUSALS, response
        else:
            assert response.headers.get("connection") == "close", response
        await check_endpoint(server, log, response)


class TestEveryEndpoint:
    @fuzz(150)
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        headers=st.dictionaries(
            st.sampled_from(READ_HEADERS), header_value, min_size=1, max_size=3
        ),
    )
    async def test_any_value_of_a_header_it_reads_gets_a_documented_answer(
        self,
        every_endpoint: tuple[Served, ServerLog],
        endpoint: tuple[str, str, dict[str, str], Any],
        headers: dict[str, bytes],
    ) -> None:
        server, log = every_endpoint
        method, path, base, body = endpoint
        raw = b"" if body is None else wire_bytes(body)
        sent: dict[str, str | bytes] = {**base, **headers}
        response = await exchange(server.port, request_bytes(method, path, sent, raw))
        event(f"status {response.status}")
        if any(CONTROL_RE.search(value) for value in headers.values()):
            assert response.status == 400, response  # not HTTP: aiohttp's parser answers
            return
        if b"websocket" in headers.get("Upgrade", b"").lower():
            # A WebSocket upgrade without its other headers: refused before any endpoint.
            assert response.status in (400, 403), response
        await check_endpoint(server, log, response)

    @fuzz(150)
    @given(
        method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "OPTIONS"]),
        prefix=st.sampled_from(
            [
                "/v1/models/",
                "/v1/responses/",
                "/ui/",
                "/hooks/",
                "/v1/",
                "/v1//",
                "//v1/models/",
                "/v1//responses/",
                "//",
                "/",
                "/metrics/",
                "/healthz/",
            ]
        ),
        tail=st.one_of(
            st.sampled_from(
                [
                    "",
                    "openclaw",
                    "openclaw%2Fbeta",
                    "app.js",
                    "agent",
                    "a/b",
                    "a//b",
                    "%ff",
                    "%00",
                    "%2F",
                    "%",
                    "%zz",
                    "%ED%A0%80",
                    "%C0%AF",
                    "..%2F..%2Fconfig",
                    "x" * 4000,
                    "?token=x",
                    "?%ff=%ff&a=%",
                    ";a=b",
                ]
            ),
            bytes_of(list(range(0x21, 0x7F)), max_size=40).map(bytes.decode),
        ),
    )
    async def test_any_path_gets_a_documented_answer(
        self, every_endpoint: tuple[Served, ServerLog], method: str, prefix: str, tail: str
    ) -> None:
        server, log = every_endpoint
        body = b"{}" if method in ("POST", "PUT") else b""
        headers = {**AUTH, "Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST"}
        path = (prefix + tail).replace("#", "%23")
        response = await exchange(server.port, request_bytes(method, path, headers, body))
        event(f"status {response.status}")
        if response.status == 204:  # a preflight's answer
            assert method == "OPTIONS", response
            assert_documented_status(response.status)
            return
        await check_endpoint(server, log, response)

    @fuzz(100)
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        origin=weighted((2, st.just(CORS_ORIGIN.encode())), (3, header_value)),
        request_method=weighted((2, st.just(b"POST")), (1, header_value)),
        request_headers=weighted(
            (1, st.just(b"authorization, content-type, x-openclaw-session-key")),
            (1, st.just(b", ".join(name.encode() for name in READ_HEADERS) * 20)),
            (2, header_value),
        ),
    )
    async def test_any_preflight_gets_a_documented_answer(
        self,
        every_endpoint: tuple[Served, ServerLog],
        endpoint: tuple[str, str, dict[str, str], Any],
        origin: bytes,
        request_method: bytes,
        request_headers: bytes,
    ) -> None:
        server, log = every_endpoint
        headers = {
            "Origin": origin,
            "Access-Control-Request-Method": request_method,
            "Access-Control-Request-Headers": request_headers,
        }
        response = await exchange(server.port, request_bytes("OPTIONS", endpoint[1], headers))
        event(f"status {response.status}")
        if any(CONTROL_RE.search(value) or len(value) > 8190 for value in headers.values()):
            assert response.status == 400, response  # not HTTP: aiohttp's parser refuses it
            assert_error_body(response)
            return
        if response.status == 204:
            # Echoed byte for byte (raw_http reads header values as Latin-1).
            echoed = response.headers["access-control-allow-origin"]
            assert echoed == origin.decode("latin-1").strip(" \t"), response
            assert_documented_status(response.status)
            return
        await check_endpoint(server, log, response)


# -- hostile framing, targets and repeated credentials (gateway/edge_http.py) ---------------

NEXT_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
AUTHORITIES = ["127.0.0.1", "localhost:1", "[::1]:9", "evil.example", "user@127.0.0.1", "a b"]
credential = weighted(
    (3, st.just(b"")),  # the endpoint's own (its right token)
    (2, st.just(b"Bearer wrong-token")),
    (1, field_value),
)


class TestHostileFraming:
    @fuzz(150)
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        version=weighted(
            (4, st.sampled_from(["HTTP/1.1", "HTTP/1.0"])),
            (1, st.sampled_from(["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"])),
        ),
        keep_alive=st.booleans(),
        authority=st.none() | st.sampled_from(AUTHORITIES),
        query=st.sampled_from(["", "?a=1", "?" + "q" * 9000, "?%ff=%00&" * 50]),
        authorizations=st.lists(credential, min_size=1, max_size=3),
        tokens=st.lists(credential, max_size=2),
        framing=st.sampled_from(["length", "chunked", "both"]),
        fold=st.booleans(),
        upgrade=st.sampled_from([None, "h2c", "websocket", "foo"]),
    )
    @example(
        endpoint=ENDPOINTS[1],
        version="HTTP/1.1",
        keep_alive=False,
        authority=None,
        query="",
        authorizations=[b""],
        tokens=[],
        framing="length",
        fold=False,
        upgrade=None,
    )
    async def test_any_framing_target_and_credentials_get_a_documented_answer(
        self,
        every_endpoint: tuple[Served, ServerLog],
        endpoint: tuple[str, str, dict[str, str], Any],
        version: str,
        keep_alive: bool,
        authority: str | None,
        query: str,
        authorizations: list[bytes],
        tokens: list[bytes],
        framing: str,
        fold: bool,
        upgrade: str | None,
    ) -> None:
        """Whatever the version, the form of the target, the framing, the number of
        credentials and the protocol asked for, every answer is documented, none is a 5xx,
        no connection is left waiting, and a request after one whose framing the gateway
        refuses is never served on the same connection."""
        server, log = every_endpoint
        method, path, base, body = endpoint
        raw = b"" if body is None else wire_bytes(body)
        target = (f"http://{authority}{path}" if authority else path) + query
        own = base.get("Authorization", "").encode()
        lines = [f"{method} {target} {version}".encode(), b"Host: 127.0.0.1"]
        connection = b"keep-alive" if keep_alive else b"close"
        if upgrade is not None:
            connection += b", Upgrade"
            lines.append(b"Upgrade: " + upgrade.encode())
        lines.append(b"Connection: " + connection)
        lines += [b"Content-Type: application/json"] if raw else []
        lines += [b"Authorization: " + (value or own) for value in authorizations]
        lines += [b"x-openclaw-token: " + (value or HOOK_TOKEN.encode()) for value in tokens]
        if fold:
            lines += [b"X-Folded: a", b" b"]  # obs-fold: refused by the parser
        chunked = framing in ("chunked", "both")
        if framing in ("length", "both"):
            lines.append(b"Content-Length: %d" % len(raw))
        if chunked:
            lines.append(b"Transfer-Encoding: chunked")
        framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(raw), raw) if raw else b"0\r\n\r\n"
        request = b"\r\n".join(lines) + b"\r\n\r\n" + (framed if chunked else raw)
        got = await exchange_all(server.port, request + (NEXT_REQUEST if keep_alive else b""))
        assert got, "no answer at all"
        first = got[0]
        event(f"status {first.status}")
        for answer in got:
            assert_documented_status(answer.status)
        assert first.status in ENDPOINT_STATUSES, first
        if first.status >= 400 and first.headers.get("content-type", "").startswith(
            "application/json"
        ):
            assert_error_body(first)
        if len(target) > 8192 and " " not in target:  # over the limit: refused before all else
            assert (first.status, first.json()["error"]["code"]) == (414, "uri_too_long"), first
            assert len(got) == 1, got
            await normal_completion(server.port)
            return
        if version not in ("HTTP/1.1", "HTTP/1.0") and " " not in target:
            # Not spoken here: a 400 (unsupported_http_version, unless the parser refused
            # something else first), and nothing more on that connection.
            assert first.status == 400, first
            assert len(got) == 1, got
            await normal_completion(server.port)
            assert log.new_problems() == []
            return
        refused_framing = version == "HTTP/1.0" and chunked
        if refused_framing or len(authorizations) > 1 or len(tokens) > 1:
            assert first.status in (400, 421), first
        if authority is not None and authority not in AUTHORITIES[:3]:
            assert first.status in (400, 421), first  # the target names another authority
        if version == "HTTP/1.0" and first.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            # No chunked coding: the stream ends with the connection, no answer after it.
            assert first.headers["connection"] == "close", first
            assert b"\r\n\r\n" not in first.body, first
        if not keep_alive and first.headers.get("content-type", "").startswith("text/event-stream"):
            # Asked to close: the stream says so (not §7's keep-alive) and is the last answer.
            assert first.headers["connection"] == "close", first
            assert len(got) == 1, got
        if refused_framing:
            # Nothing after a body framed in a way a hop in front may read otherwise is read
            # as a request: what the gateway takes for the next one may be the body's.
            assert len(got) == 1, got
        await normal_completion(server.port)
        assert log.new_problems() == []


# -- malformed heads ------------------------------------------------------------------------

# What no client library sends: the request line and header lines the HTTP parsers read
# differently, or refuse (each one checked with both parsers in tests/http/test_edge_raw.py).
REQUEST_LINES = [
    "{m} {t} HTTP/1.1",
    "{m}  {t} HTTP/1.1",
    "{m} {t}  HTTP/1.1",
    "{m} {t}",
    "{m}\t{t} HTTP/1.1",
]
HEAD_METHODS = ["POST", "post", "P" * 70, "FOO", "DESCRIBE", "CONNECT"]
HEAD_TARGETS = [CHAT, CHAT + "?a=1", "/v1/chat/compl\u00e9tions", CHAT + "?a=\udcff", "*"]
DAMAGED_LINES = [
    b"X-Fold: a\r\n b",
    b"X-Space : a",
    b"X-Nul: a\x00b",
    b"X-Cr: a\rb",
    b"X-Lf: a\nb",
    b": no-name",
    b"No-Colon",
    b"X-Ctl: a\x01b",
    b"X-Obs-Text: caf\xe9",
]
LENGTHS = [b"2", b"+2", b"0002", b"2, 2", b"2\r\nContent-Length: 2", b"2\r\nContent-Length: 3"]
CHUNK_SIZES = [
    b"2",
    b"2;a=b",
    b'2;a="b',
    b"2;\x01",
    b"f" * 20,
    b"-2",
    b"0x2",
    b"+2",
    b"0" * 9000 + b"2",
]


async def answer_with_status_line(port: int, request: bytes) -> tuple[bytes, RawResponse]:
    """The status line, and the answer read by its Content-Length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(10):  # no hang: the body sent is the one the head frames
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers = await read_head(_fed(head))
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return head.partition(b"\r\n")[0], RawResponse(status, headers, body)


def _fed(data: bytes) -> asyncio.StreamReader:
    """A reader holding `data`: read_head parses a head already read."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    return reader


class TestMalformedHeads:
    @fuzz(120)
    @given(
        line=st.sampled_from(REQUEST_LINES),
        method=weighted((4, st.just("POST")), (1, st.sampled_from(HEAD_METHODS))),
        target=weighted((4, st.just(CHAT)), (1, st.sampled_from(HEAD_TARGETS))),
        damaged=st.lists(st.sampled_from(DAMAGED_LINES), max_size=2),
        framing=st.one_of(
            st.sampled_from(LENGTHS).map(lambda v: b"Content-Length: " + v),
            st.sampled_from(CHUNK_SIZES).map(lambda v: b"chunked:" + v),
        ),
    )
    async def test_any_malformed_head_gets_a_4xx_in_http_1_1_in_the_error_shape(
        self,
        gateway: tuple[Served, ServerLog],
        line: str,
        method: str,
        target: str,
        damaged: list[bytes],
        framing: bytes,
    ) -> None:
        """Whatever the request line, the header lines and the framing of the body, the
        answer comes, in HTTP/1.1 (the parser's own refusals said HTTP/1.0), a 4xx in the
        error shape with a request id, or the completion; never a 5xx."""
        server, log = gateway
        first = line.format(m=method, t=target).encode("utf-8", "surrogateescape")
        lines = [first, b"Host: 127.0.0.1", b"Connection: close"]
        lines += [b"Authorization: Bearer " + TOKEN.encode(), b"Content-Type: application/json"]
        lines += damaged
        body = b"{}"
        if framing.startswith(b"chunked:"):
            lines.append(b"Transfer-Encoding: chunked")
            body = framing[len(b"chunked:") :] + b"\r\n{}\r\n0\r\n\r\n"
        else:
            lines.append(framing)
        request = b"\r\n".join(lines) + b"\r\n\r\n" + body
        status_line, response = await answer_with_status_line(server.port, request)
        event(f"status {response.status}")
        assert status_line.startswith(b"HTTP/1.1 "), (status_line, response)
        assert 400 <= response.status < 500, response
        assert_error_body(response)
        assert response.headers.get("x-request-id"), response
        await normal_completion(server.port)
        assert log.new_problems() == []


# -- a Control UI build served from gateway.controlUi.root ----------------------------------

OUTSIDE_SECRET = b"outside-the-build-0c1f"
# Values that take the other branches: a browser's navigation, an Accept that takes HTML or
# refuses it or does not parse, the token, a compressed sibling, ranges in and out of a file, a
# validator.
UI_HEADER_VALUES = [
    b"text/html,*/*",
    b"*/*",
    b"text/html;q=0, */*",
    b'text/html;x="a,b',
    f"Bearer {TOKEN}".encode(),
    b"gzip, br",
    b"bytes=0-3",
    b"bytes=99-",
    b"*",
    b"Wed, 21 Oct 2037 07:28:00 GMT",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["", "/openclaw"])
async def control_ui_build(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Served, ServerLog]]:
    """A gateway serving a small build at `/` (or under a base path), with a secret beside it
    and links out."""
    directory = tmp_path_factory.mktemp("fuzz-control-ui")
    build = directory / "build"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text("<!doctype html><html><script>x=1</script></html>")
    (build / "assets" / "app.js").write_text("export {};")
    (build / "assets" / "app.js.gz").write_bytes(gzip.compress(b"export {};"))
    (directory / "secret.txt").write_bytes(OUTSIDE_SECRET)
    (build / "assets" / "out.js").symlink_to(directory / "secret.txt")
    (build / "out").symlink_to(directory)
    overrides = {"gateway": {"controlUi": {"root": str(build), "basePath": request.param}}}
    with production_logging() as log:
        app = build_app(directory / "gateway", overrides)
        async with served(app) as server:
            yield server, log
        assert log.new_problems() == []


class TestControlUiBuild:
    @fuzz(200)
    @given(
        method=st.sampled_from(["GET"] * 4 + ["POST", "OPTIONS"]),  # raw_http reads no HEAD
        prefix=st.sampled_from(
            [
                "/",
                "/assets/",
                "/chat/x/assets/",
                "/out/",
                "/control-ui-config.json",
                "/__openclaw__/",
                "/ui/",
                "//",
                "/openclaw",
                "/openclaw/",
                "/openclaw/assets/",
                "/openclaw/out/",
                "/openclaw/__openclaw/",
            ]
        ),
        tail=st.one_of(
            st.sampled_from(
                ["", "app.js", "app.js", "out.js", "secret.txt", "..%2Fsecret.txt", "%2e%2e/",
                 "%00", ".", "..", "index.html", "x/", "%ff", "control-ui-config.json",
                 "?%00", "?a=%23&b=%25", '?"<>{}']
            ),
            bytes_of(list(range(0x21, 0x7F)), max_size=30).map(bytes.decode),
        ),
        headers=st.dictionaries(
            st.sampled_from(
                ["Authorization", "Accept", "Accept-Encoding", "If-None-Match",
                 "If-Modified-Since", "Range"]
            ),
            weighted((3, header_value), (2, st.sampled_from(UI_HEADER_VALUES))),
            max_size=3,
        ),
    )  # fmt: skip
    # The base path itself redirects with the query: an escaped newline in it once had the
    # request fail without an answer.
    @example(method="GET", prefix="/openclaw", tail="?x=%0d%0aSet-Cookie:%20a", headers={})
    @example(method="GET", prefix="/openclaw", tail="?%00", headers={})
    async def test_any_request_gets_a_documented_answer_and_nothing_outside(
        self,
        control_ui_build: tuple[Served, ServerLog],
        method: str,
        prefix: str,
        tail: str,
        headers: dict[str, bytes],
    ) -> None:
        server, log = control_ui_build
        path = (prefix + tail).replace("#", "%23")
        response = await exchange(server.port, request_bytes(method, path, headers))
        event(f"status {response.status}")
        if any(CONTROL_RE.search(value) for value in headers.values()):
            assert response.status == 400, response  # not HTTP: aiohttp's parser answers
            return
        assert OUTSIDE_SECRET not in response.body, response
        assert_documented_status(response.status)
        if response.status >= 400 and response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            assert_error_body(response)
        await normal_completion(server.port)
        assert log.new_problems() == []


# -- preflights under /v1, whichever endpoints are on -------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chat_off(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Served, ServerLog]]:
    """Chat completions off, responses on, CORS for one origin."""
    overrides = {
        "gateway": {
            "http": {
                "endpoints": {
                    "chatCompletions": {"enabled": False},
                    "responses": {"enabled": True},
                },
                "cors": {"allowedOrigins": [CORS_ORIGIN]},
            },
        },
    }
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-chat-off"), overrides)
        async with served(app) as server:
            yield server, log
        assert log.new_problems() == []


class TestPreflightUnderV1:
    @fuzz(60)
    @given(
        segments=st.lists(
            st.text(st.sampled_from("abz09-._~%2F"), min_size=0, max_size=12), max_size=4
        ),
        origin=st.sampled_from([CORS_ORIGIN, "https://evil.example", "null"]),
        method=st.sampled_from(["POST", "GET", "DELETE", "PUT"]),
        routed=st.sampled_from([None, CHAT, "/v1/models", "/v1/models/x", "/v1/embeddings"]),
    )
    async def test_a_preflight_on_any_v1_path_is_answered_by_origin(
        self,
        chat_off: tuple[Served, ServerLog],
        segments: list[str],
        origin: str,
        method: str,
        routed: str | None,
    ) -> None:
        """http-openai.md §9: any /v1/* path (unrouted, or a disabled endpoint's), from an
        allowed origin, 204; another, 403."""
        server, log = chat_off
        path = routed or "/v1/x-" + "/".join(segments)
        request = (
            f"OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n"
            f"Access-Control-Request-Method: {method}\r\nConnection: close\r\n\r\n"
        ).encode()
        response = await exchange(server.port, request)
        event(f"status {response.status}")
        if origin == CORS_ORIGIN:
            assert response.status == 204, response
            assert response.headers["access-control-allow-origin"] == CORS_ORIGIN
        else:
            assert response.status == 403, response
            assert "access-control-allow-origin" not in response.headers
        assert log.new_problems() == []
