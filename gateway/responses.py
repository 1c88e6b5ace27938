"""JSON on the wire: compact, UTF-8 unescaped, and the one error shape (http-openai.md §8)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: Any) -> str:
    return _encoder.encode(obj)


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.Response(body=dumps(data).encode(), status=status, headers=dict(headers or {}))
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
