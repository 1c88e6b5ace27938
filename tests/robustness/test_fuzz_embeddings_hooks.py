"""Property-based fuzzing of `POST /v1/embeddings` and the hooks (`/hooks/agent`,
`/hooks/wake`): wrong types and oversize values of every field and header they read.

The answer is always a documented status (no 5xx over echo), every error has the four-key
shape, nothing is logged as an error, and the gateway still serves right after. One gateway
serves the module, as `clawgate run` serves it; generation is derandomized and bounded.
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

from gateway.http import embeddings_wire
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
    nonempty_text,
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

EMBEDDINGS = "/v1/embeddings"
HOOK_TOKEN = "robust-hook-token-4d2a"
# With the JSON Content-Type every authenticated JSON endpoint requires (else 415).
HOOK_AUTH = {"Authorization": f"Bearer {HOOK_TOKEN}", "Content-Type": "application/json"}
MAX_BODY = 1_000_000
HOOK_MAX_BODY = 64 * 1024
EMBEDDINGS_STATUSES = frozenset({200, 400, 401, 413})
HOOK_STATUSES = frozenset({200, 202, 400, 401, 404, 413})
ONLY_413 = frozenset({413})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Served, ServerLog]]:
    overrides = {
        "gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": MAX_BODY}}}},
        "agents": {
            "defaults": {"maxConcurrent": 8, "embeddingModel": "echo/echo"},
            "list": [{"id": "main", "default": True}, {"id": "beta"}],
        },
        "hooks": {
            "enabled": True,
            "token": HOOK_TOKEN,
            "maxBodyBytes": HOOK_MAX_BODY,
            "allowRequestSessionKey": True,
            "waitTimeoutSeconds": 5,
        },
    }
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-embeddings-hooks"), overrides)
        async with served(app) as server:
            yield server, log
        assert log.new_problems() == []


async def check(
    server: Served, log: ServerLog, response: RawResponse, statuses: frozenset[int]
) -> None:
    if statuses is not ONLY_413:  # hypothesis records events only inside a fuzzed example
        event(f"status {response.status}")
    assert_documented_status(response.status)
    assert response.status in statuses, response
    if response.status in (200, 202):
        assert response.headers.get("content-type") == JSON_TYPE, response
        json.loads(response.body)
    else:
        assert_error_body(response)
    await normal_completion(server.port)
    assert log.new_problems() == []


# -- /v1/embeddings -----------------------------------------------------------------------

input_value = st.one_of(
    nonempty_text,
    st.lists(nonempty_text, min_size=1, max_size=20),
    st.sampled_from(
        [
            "",
            [],
            [""],
            [1, 2, 3],
            [[1, 2]],
            ["x"] * 2049,
            "x" * 32769,
            ["x" * 32768] * 37,
        ]
    ),
    huge_text,
    wrong,
)
EMBEDDING_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": often(st.sampled_from(["openclaw", "openclaw/beta", "openclaw/nope", "gpt"])),
    "input": often(input_value),
    "encoding_format": often(st.sampled_from(["float", "base64", "binary", ""])),
    "dimensions": often(st.sampled_from([1, 16, 8192, 8193, 0, -1, 1.0, 1.5, 2**64, True])),
    "user": often(text),
}
embeddings_body = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries({}, optional=EMBEDDING_FIELDS),
    st.dictionaries(odd_text, wrong, max_size=3),
)
model_header = st.one_of(
    st.sampled_from(
        [b"echo/echo", b"echo/", b"nope/x", b"echo", b"", b"\xff\xfe", b"e" * 5000 + b"/x"]
    ),
    odd_text.map(lambda s: s.encode("utf-8", "surrogatepass")).map(
        lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
    ),
)


class TestEmbeddings:
    @fuzz(120)
    @given(body=st.one_of(embeddings_body, wrong))
    async def test_any_body_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], body: Any
    ) -> None:
        server, log = gateway
        response = await exchange(
            server.port, request_bytes("POST", EMBEDDINGS, AUTH, wire_bytes(body))
        )
        await check(server, log, response, EMBEDDINGS_STATUSES)

    @fuzz(40)
    @given(header=model_header)
    async def test_any_model_header_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], header: bytes
    ) -> None:
        server, log = gateway
        headers = {**AUTH, "x-openclaw-model": header}
        body = wire_bytes({"model": "openclaw", "input": "hi"})
        response = await exchange(server.port, request_bytes("POST", EMBEDDINGS, headers, body))
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in header):
            assert response.status == 400, response  # not HTTP: refused by the parser
            return
        await check(server, log, response, EMBEDDINGS_STATUSES)

    async def test_a_body_over_the_limit_is_a_413(self, gateway: tuple[Served, ServerLog]) -> None:
        server, log = gateway
        body = wire_bytes({"input": "x" * (MAX_BODY + 1)})
        response = await exchange(server.port, request_bytes("POST", EMBEDDINGS, AUTH, body))
        await check(server, log, response, ONLY_413)


# -- the hooks ----------------------------------------------------------------------------

AGENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "message": often(text),
    "name": often(odd_text),
    "agentId": often(st.sampled_from(["main", "Beta", "nope", "", "x" * 300])),
    "sessionKey": often(
        st.one_of(
            odd_text,
            st.sampled_from(
                ["hook:a", "main", "agent:beta:x", "agent:nope:x", "cron:x", "a\nb", "x" * 600]
            ),
        )
    ),
    "waitForCompletion": often(st.booleans()),
    "timeoutSeconds": often(st.sampled_from([1, 30, 0, -1, 1.5, 10**12, True])),
    "wakeMode": often(st.sampled_from(["now", "next-heartbeat"])),
    "deliver": often(st.booleans()),
    "channel": often(odd_text),
    "to": often(odd_text),
    "model": st.one_of(st.none(), wrong),
    "thinking": st.one_of(st.none(), wrong),
    "idempotencyKey": often(odd_text),
}
WAKE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "text": often(text),
    "mode": often(st.sampled_from(["now", "next-heartbeat", "later"])),
    "agentId": often(st.sampled_from(["main", "beta", "nope"])),
    "sessionKey": st.one_of(st.none(), wrong),
}


def hook_body(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    return st.builds(
        lambda known, unknown: {**unknown, **known},
        st.fixed_dictionaries({}, optional=fields),
        st.dictionaries(odd_text, wrong, max_size=3),
    )


class TestHooks:
    @fuzz(120)
    @given(body=st.one_of(hook_body(AGENT_FIELDS), wrong))
    async def test_any_agent_hook_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], body: Any
    ) -> None:
        server, log = gateway
        if isinstance(body, dict) and body.get("waitForCompletion") is True:
            body["timeoutSeconds"] = 1  # echo answers at once; this only bounds a bad case
        request = request_bytes("POST", "/hooks/agent", HOOK_AUTH, wire_bytes(body))
        response = await exchange(server.port, request)
        await check(server, log, response, HOOK_STATUSES)

    @fuzz(60)
    @given(body=st.one_of(hook_body(WAKE_FIELDS), wrong))
    async def test_any_wake_hook_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], body: Any
    ) -> None:
        server, log = gateway
        request = request_bytes("POST", "/hooks/wake", HOOK_AUTH, wire_bytes(body))
        response = await exchange(server.port, request)
        await check(server, log, response, HOOK_STATUSES)

    @fuzz(60)
    @given(
        token=st.one_of(
            st.just(HOOK_TOKEN.encode()),
            odd_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
            st.sampled_from([b"", b"\xff", HOOK_TOKEN.encode() + b"\xff", b"x" * 8000]),
        ).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")),
        header=st.sampled_from(["Authorization", "x-openclaw-token"]),
        path=st.sampled_from(
            ["/hooks/agent", "/hooks/wake", "/hooks", "/hooks/", "/hooks//agent", "/hooks/x"]
        ),
    )
    async def test_any_token_and_path_get_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], token: bytes, header: str, path: str
    ) -> None:
        server, log = gateway
        value = b"Bearer " + token if header == "Authorization" else token
        body = wire_bytes({"message": "hi", "text": "hi"})
        headers = {header: value, "Content-Type": "application/json"}
        response = await exchange(server.port, request_bytes("POST", path, headers, body))
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
            assert response.status == 400, response
            return
        await check(server, log, response, HOOK_STATUSES)

    @fuzz(40)
    @given(
        method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST"]),
        path=st.one_of(
            st.sampled_from(["/hooks/agent", "/hooks/wake", "/hooks", "/hooks/", "/hooks/x"]),
            odd_text.map(lambda s: "/hooks/" + quote(s.encode("utf-8", "surrogatepass"))),
        ),
        token=st.booleans(),
    )
    async def test_any_method_on_any_hook_path_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], method: str, path: str, token: bool
    ) -> None:
        """A sub-path clawgate does not serve has no method: 401, then 404, whatever the
        method; one it serves is a 405 `Allow: POST` to any other method, before auth."""
        server, log = gateway
        headers = {**(HOOK_AUTH if token else {}), "Content-Type": "application/json"}
        request = request_bytes(method, path, headers, wire_bytes({"message": "hi", "text": "hi"}))
        response = await exchange(server.port, request)
        await check(server, log, response, HOOK_STATUSES | {405})
        known = path.removeprefix("/hooks").lstrip("/") in ("agent", "wake")
        if method != "POST" and known:
            assert (response.status, response.headers["allow"]) == (405, "POST"), response
        elif not token:
            assert response.status == 401, response
        elif not known:
            assert response.status == 404, response
            assert "allow" not in response.headers

    @fuzz(40)
    @given(
        value=st.one_of(
            odd_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
            st.sampled_from([b"", b" ", b"k" * 257, b"\xff", b"k" * 8000]),
        ).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")),
        header=st.sampled_from(["Idempotency-Key", "x-openclaw-idempotency-key"]),
        wait=st.booleans(),
    )
    async def test_any_idempotency_key_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], value: bytes, header: str, wait: bool
    ) -> None:
        server, log = gateway
        headers = {**HOOK_AUTH, header: value}
        body = wire_bytes({"message": "hi", "waitForCompletion": wait})
        response = await exchange(server.port, request_bytes("POST", "/hooks/agent", headers, body))
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
            assert response.status == 400, response
            return
        await check(server, log, response, HOOK_STATUSES)
        # A key used (not blank, at most 256 characters) whose bytes are not UTF-8 is refused:
        # repaired, two such keys would be one.
        key = value.decode("utf-8", "surrogateescape").strip()
        if key and len(key) <= 256 and not is_utf_8(value):
            event("idempotency key: not UTF-8")
            assert response.status == 400, response
            assert "is not UTF-8" in response.json()["error"]["message"]

    @fuzz(40)
    @given(key=odd_text)
    async def test_a_body_key_holding_a_lone_surrogate_is_refused(
        self, gateway: tuple[Served, ServerLog], key: str
    ) -> None:
        server, log = gateway
        body = wire_bytes({"message": "hi", "idempotencyKey": key})
        request = request_bytes("POST", "/hooks/agent", HOOK_AUTH, body)
        response = await exchange(server.port, request)
        await check(server, log, response, HOOK_STATUSES)
        # As the gateway reads it: a high then a low surrogate is one character.
        if any(0xD800 <= ord(c) <= 0xDFFF for c in json.loads(json.dumps(key))):
            event("idempotency key: a lone surrogate")
            assert response.status == 400, response
            assert response.json()["error"]["param"] == "idempotencyKey"
        else:
            assert response.status == 202, response

    async def test_a_body_over_max_body_bytes_is_a_413(
        self, gateway: tuple[Served, ServerLog]
    ) -> None:
        server, log = gateway
        body = wire_bytes({"message": "x" * HOOK_MAX_BODY})
        request = request_bytes("POST", "/hooks/agent", HOOK_AUTH, body)
        response = await exchange(server.port, request)
        await check(server, log, response, ONLY_413)


def is_utf_8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- every place of a complete body, with every wrong type and every odd value ---------------

COMPLETE_EMBEDDINGS: dict[str, Any] = {
    "model": "openclaw/beta",
    "input": ["one", "two"],
    "encoding_format": "float",
    "dimensions": 8,
    "user": "walker",
}
COMPLETE_AGENT_HOOK: dict[str, Any] = {
    "message": "hi",
    "name": "Walker",
    "agentId": "beta",
    "sessionKey": "hook:walk",
    "waitForCompletion": True,
    "timeoutSeconds": 5,
    "wakeMode": "now",
    "deliver": False,
    "channel": "last",
    "to": "me",
    "model": None,
    "thinking": None,
    "idempotencyKey": "walk-1",
}
COMPLETE_WAKE_HOOK: dict[str, Any] = {"text": "hi", "mode": "now", "agentId": "beta"}
# (path, headers, complete body, statuses)
WALKS = [
    (EMBEDDINGS, AUTH, COMPLETE_EMBEDDINGS, EMBEDDINGS_STATUSES),
    ("/hooks/agent", HOOK_AUTH, COMPLETE_AGENT_HOOK, HOOK_STATUSES),
    ("/hooks/wake", HOOK_AUTH, COMPLETE_WAKE_HOOK, HOOK_STATUSES),
]


class TestEveryPlaceOfTheBody:
    async def test_the_complete_bodies_hold_every_field_the_wire_modules_read(self) -> None:
        assert fields_read_by(embeddings_wire) - json_keys(COMPLETE_EMBEDDINGS) == set()
        assert set(AGENT_FIELDS) == set(COMPLETE_AGENT_HOOK)
        assert set(WAKE_FIELDS) - {"sessionKey"} == set(COMPLETE_WAKE_HOOK)  # refused there

    @pytest.mark.parametrize("odd", [False, True], ids=["wrong types", "odd values"])
    @pytest.mark.parametrize(
        ("path", "headers", "body", "statuses"), WALKS, ids=["embeddings", "agent", "wake"]
    )
    async def test_any_value_anywhere_gets_a_documented_answer(
        self,
        gateway: tuple[Served, ServerLog],
        path: str,
        headers: dict[str, str],
        body: dict[str, Any],
        statuses: frozenset[int],
        odd: bool,
    ) -> None:
        """Each place of the complete body with each JSON type, or with the values made to
        slip past a check (over every limit, NUL, controls, lone surrogates): a documented
        status and error shape, never a 5xx."""
        server, log = gateway
        steps = (
            odd_steps(body)
            if odd
            else [(place, value) for place in json_paths(body) for value in WRONG_TYPES]
        )
        complete = await exchange(
            server.port, request_bytes("POST", path, headers, wire_bytes(body))
        )
        assert complete.status in (200, 202), complete
        for place, value in steps:
            raw = wire_bytes(replaced(body, place, value))
            response = await exchange(server.port, request_bytes("POST", path, headers, raw))
            assert_documented_status(response.status)
            assert response.status in statuses, (place, f"{value!r:.60}", response)
            if response.status >= 400:
                assert_error_body(response)
        await normal_completion(server.port)
        assert log.new_problems() == []
