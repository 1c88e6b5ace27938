"""aiohttp JSON responses in the one error shape, for HTTP routes and the WebSocket upgrade's
refusals; the encoding itself is `gateway.jsonwire`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.jsonwire import dumps, error_body, wire

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.Response(body=wire(dumps(data)), status=status, headers=dict(headers or {}))
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    return response


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
