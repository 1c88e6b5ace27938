"""aiohttp JSON responses in the one error shape, for HTTP routes and the WebSocket upgrade's
refusals; the encoding itself is `gateway.jsonwire`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.jsonwire import dumps, error_body, wire

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
NO_STORE = {"Cache-Control": "no-store"}


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
    """Never stored by a cache (the spec is silent): a 404 or 405 is cacheable by default
    (RFC 9111 §4.2.2), and a cache would go on answering a path a reload enabled, or a model
    an added agent made, with the old error."""
    return json_response(
        error_body(message, type_, param=param, code=code),
        status=status,
        headers={**NO_STORE, **(headers or {})},
    )


def not_found() -> web.Response:
    return error_response(404, "Not Found", "not_found_error")


def method_not_allowed(allow: str) -> web.Response:
    return error_response(
        405, "Method Not Allowed", "invalid_request_error", headers={"Allow": allow}
    )
