"""JSON on the wire: compact, UTF-8 unescaped, lone surrogates repaired, the one error shape
(http-openai.md §8). Pure, shared by the HTTP and the WebSocket side; no aiohttp."""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from agents import compactjson
from agents.surrogates import SURROGATE_RE, has_surrogate, repair_surrogates

__all__ = [
    "MAX_SAFE_INTEGER",
    "PARSE_IN_THREAD_CHARS",
    "dumps",
    "error_body",
    "has_surrogate",
    "scrub_surrogates",
    "spells_surrogate",
    "strict_loads",
    "wire",
]

# JavaScript's Number.MAX_SAFE_INTEGER: OpenClaw's bound on integers a client may send.
MAX_SAFE_INTEGER = 2**53 - 1

# A WebSocket frame or an HTTP body longer than this is parsed in a thread: `scrub_surrogates`
# walks every container of a text with a lone surrogate escape, some 0.3 s per MiB of small
# objects, seconds for a frame within maxPayload. That walk is Python, so in a thread it lets
# the event loop serve the other clients between its steps.
PARSE_IN_THREAD_CHARS = 64 * 1024


def dumps(obj: Any) -> str:
    return compactjson.dumps(obj)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"Invalid JSON value: {name}")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        shown = literal if len(literal) <= 32 else literal[:32] + "…"
        raise ValueError(f"Invalid JSON value: {shown} (out of range)")
    return value


# Python's parser takes NaN and Infinity; JSON has no such values (nor has OpenClaw's parser).
_strict = json.JSONDecoder(parse_constant=_reject_constant)
# A request body is also sent on to a model (tools' schemas, response_format): `1e400`, read
# as infinity, would go out as `Infinity`, a body the upstream refuses, a 502 for the
# client's mistake.
_strict_finite = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def strict_loads(text: str, *, finite: bool = False) -> Any:
    """JSON as a client's body or frame is read: `json.loads` without NaN and Infinity, and
    with `finite`, without numbers beyond a double (a frame's `1e400` is a params error).
    Raises ValueError, or RecursionError for nesting deeper than the parser goes."""
    return (_strict_finite if finite else _strict).decode(text)


def wire(text: str) -> bytes:
    """`dumps` output as UTF-8. A lone surrogate (a header's bytes that were not UTF-8, a
    provider that split a pair) can only sit inside a JSON string, where `backslashreplace`
    writes exactly its JSON escape (`\\udcff`). Valid text never calls the error handler."""
    return text.encode("utf-8", "backslashreplace")


# A JSON escape that may spell a lone surrogate (pairs are joined by the parser).
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")


def spells_surrogate(text: str) -> bool:
    """Whether the JSON `text` may hold a lone surrogate: only an escape can spell one."""
    return _SURROGATE_ESCAPE_RE.search(text) is not None


def scrub_surrogates(value: Any, text: str) -> Any:
    """`value`, just parsed from the JSON `text`, with each lone surrogate replaced by U+FFFD.

    JSON can spell one (`"\\ud800"`: a JavaScript client that cut a string inside an
    emoji); UTF-8 cannot, so it would fail the store, the log and any answer that echoes it.
    Only text with such an escape is walked, without recursion (nesting may be as deep as the
    parser allows), editing the freshly parsed containers in place.
    """
    if not spells_surrogate(text):
        return value
    if isinstance(value, str):
        return repair_surrogates(value)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = repair_surrogates(item)
                elif isinstance(item, list | dict):
                    stack.append(item)
        elif isinstance(node, dict):
            if any(SURROGATE_RE.search(key) for key in node):
                items = list(node.items())
                node.clear()
                node.update((repair_surrogates(k), v) for k, v in items)
            for key, item in node.items():
                if isinstance(item, str):
                    node[key] = repair_surrogates(item)
                elif isinstance(item, list | dict):
                    stack.append(item)
    return value


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The four-key error object every JSON error carries (deviation 2)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
