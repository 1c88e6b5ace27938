"""The checks that say a response is one the spec documents (http-openai.md §6-§9)."""

from __future__ import annotations

import ast
import inspect
import json
import re
from typing import Any

from tests.support.raw_http import RawResponse, exchange, request_bytes
from tests.support.served import AUTH, CHAT

JSON_TYPE = "application/json; charset=utf-8"
COMMON_HEADERS = ("x-content-type-options", "referrer-policy", "permissions-policy", "x-request-id")
# http-openai.md §8: the only 5xx a client may see. 500 is documented too, but as a bug.
UPSTREAM_OR_DRAINING = frozenset({502, 503, 504})


def assert_error_body(response: RawResponse) -> None:
    """http-openai.md §8: JSON with exactly the four keys, and the common headers (§9)."""
    assert response.headers.get("content-type") == JSON_TYPE, response
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert list(error) == ["message", "type", "param", "code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str), body
    assert error["param"] is None or isinstance(error["param"], str), body
    assert error["code"] is None or isinstance(error["code"], str), body
    for name in COMMON_HEADERS:
        assert name in response.headers, (name, response)


def assert_documented_status(status: int) -> None:
    assert status < 500 or status in UPSTREAM_OR_DRAINING, f"undocumented status {status}"


def sse_payloads(body: bytes) -> list[str]:
    """The `data:` payloads of a whole SSE body, keepalive comments dropped."""
    text = body.decode()
    assert text.endswith("\n\n"), text[-80:]
    out = []
    for block in text[:-2].split("\n\n"):
        if block.startswith(":"):
            continue
        assert block.startswith("data: ") and "\n" not in block, block[:200]
        out.append(block[len("data: ") :])
    return out


def assert_completion(response: RawResponse) -> None:
    """A 200 chat completion, JSON (§6) or a whole stream ending in [DONE] (§7)."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        events = sse_payloads(response.body)
        assert events[-1] == "[DONE]", events[-3:]
        for event in events[:-1]:
            chunk = json.loads(event)
            assert chunk.get("object") == "chat.completion.chunk", chunk
        return
    assert content_type == JSON_TYPE, response
    body = response.json()
    assert body["object"] == "chat.completion", body
    assert isinstance(body["choices"][0]["message"]["content"], str), body


async def normal_completion(port: int, content: str = "still there?") -> RawResponse:
    """A plain request that must succeed: the server still serves after what came before."""
    body = json.dumps({"model": "openclaw", "messages": [{"role": "user", "content": content}]})
    response = await exchange(port, request_bytes("POST", CHAT, AUTH, body.encode()))
    assert response.status == 200, response
    assert response.json()["choices"][0]["message"]["content"].endswith(content), response
    return response


def fields_read_by(module: Any) -> set[str]:
    """The JSON keys a module's source reads: `x.get("key")`, and the string tuples its loops
    and tables take field names from (`for field in ("tools", "functions")`, `_RANGES`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            names.update(
                e.value
                for e in node.iter.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
        elif isinstance(node, ast.Tuple) and node.elts and isinstance(node.elts[0], ast.Constant):
            first = node.elts[0].value
            if isinstance(first, str) and re.fullmatch(r"[a-z_]+", first) and len(node.elts) == 4:
                names.add(first)  # a row of _RANGES: (field, low, high, message)
    return names
