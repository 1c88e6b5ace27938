"""JSON on the wire: compact, UTF-8 unescaped, and the one error shape (http-openai.md §8)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: Any) -> str:
    return _encoder.encode(obj)


def wire(text: str) -> bytes:
    """`dumps` output as UTF-8. A lone surrogate (a header's bytes that were not UTF-8, a
    provider that split a pair) can only sit inside a JSON string, where `backslashreplace`
    writes exactly its JSON escape (`\\udcff`). Valid text never calls the error handler."""
    return text.encode("utf-8", "backslashreplace")


# A JSON escape that may spell a lone surrogate (pairs are joined by the parser).
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def has_surrogate(text: str) -> bool:
    return _SURROGATE_RE.search(text) is not None


def scrub_surrogates(value: Any, text: str) -> Any:
    """`value`, just parsed from the JSON `text`, with each lone surrogate replaced by U+FFFD.

    JSON can spell one (`"\\ud800"`: a JavaScript client that cut a string inside an
    emoji); UTF-8 cannot, so it would fail the store, the log and any answer that echoes it.
    Replaced, as Node does when it writes such a string. Only text with such an escape is
    walked, without recursion (nesting may be as deep as the parser allows), editing the
    freshly parsed containers in place.
    """
    if _SURROGATE_ESCAPE_RE.search(text) is None:
        return value
    if isinstance(value, str):
        return _SURROGATE_RE.sub(REPLACEMENT, value)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = _SURROGATE_RE.sub(REPLACEMENT, item)
                elif isinstance(item, list | dict):
                    stack.append(item)
        elif isinstance(node, dict):
            if any(_SURROGATE_RE.search(key) for key in node):
                items = list(node.items())
                node.clear()
                node.update((_SURROGATE_RE.sub(REPLACEMENT, k), v) for k, v in items)
            for key, item in node.items():
                if isinstance(item, str):
                    node[key] = _SURROGATE_RE.sub(REPLACEMENT, item)
                elif isinstance(item, list | dict):
                    stack.append(item)
    return value


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.Response(body=wire(dumps(data)), status=status, headers=dict(headers or {}))
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    return response


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The four-key error object every JSON error carries (deviation 2)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return json_response(
        error_body(message, type_, param=param, code=code), status=status, headers=headers
    )


def not_found() -> web.Response:
    return error_response(404, "Not Found", "not_found_error")


def method_not_allowed(allow: str) -> web.Response:
    return error_response(
        405, "Method Not Allowed", "invalid_request_error", headers={"Allow": allow}
    )
