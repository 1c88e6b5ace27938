"""The built-in `echo` provider (agents-sessions.md §6.2): no network, observable sessions.

Tool mode, so that client tools can be seen working offline: when the request offers tools
(and `tool_choice` is not `"none"`, nor names another) and the current user text is
`call <name> <json-args>` naming one of them, echo calls that tool; when the context ends
with tool results, it answers with them: `[turn N] <name>: <result>`, several joined with `; `.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

from agents.config import API_ECHO
from agents.providers.base import (
    IMAGE_ONLY_TEXT,
    ChatMessage,
    Deliver,
    Finish,
    ProviderRequest,
    StopReason,
    TextDelta,
    ToolCallDelta,
    Usage,
    word_count,
)

# A word with the whitespace before it; a trailing whitespace run is its own piece.
_DELTA_RE = re.compile(r"\s*\S+|\s+\Z")
_CALL_RE = re.compile(r"call\s+(\S+)\s*(.*)", re.DOTALL)
# Arguments stream in pieces of this many characters, so a client sees real fragments.
ARGUMENT_PIECE = 8


def _turn(request: ProviderRequest) -> int:
    return sum(1 for m in request.messages if m.role == "user")


def echo_reply(request: ProviderRequest) -> str:
    turn = _turn(request)
    messages = request.messages
    results = _trailing_results(messages)
    if results:
        names = _call_names(messages)
        answers = (f"{m.tool_name or names.get(m.tool_call_id or '', m.tool_call_id)}: {m.text}"
                   for m in results)  # fmt: skip
        return f"[turn {turn}] {'; '.join(answers)}"
    current = messages[-1] if messages else None
    text = current.text if current else ""
    if not text and current is not None and current.images:
        text = IMAGE_ONLY_TEXT
    return f"[turn {turn}] {text}"


def _trailing_results(messages: tuple[ChatMessage, ...]) -> list[ChatMessage]:
    results: list[ChatMessage] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    return results[::-1]


def _call_names(messages: tuple[ChatMessage, ...]) -> dict[str, str]:
    return {call.id: call.name for m in messages for call in m.tool_calls}


def _function_name(value: Any) -> str | None:
    function = value.get("function") if isinstance(value, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    return name if isinstance(name, str) else None


def offered_tools(params: Mapping[str, Any]) -> set[str]:
    """The function names the request offers, unless `tool_choice` is `"none"`; of them only
    the one `tool_choice` names, when it names one (a model may call no other)."""
    tools = params.get("tools")
    choice = params.get("tool_choice")
    if choice == "none" or not isinstance(tools, list | tuple):
        return set()
    names = {name for tool in tools if (name := _function_name(tool)) is not None}
    if isinstance(choice, Mapping):
        chosen = _function_name(choice)
        return {chosen} & names if chosen is not None else set()
    return names


def echo_tool_call(request: ProviderRequest) -> tuple[str, str] | None:
    """`(name, arguments)` when the current user text asks echo to call an offered tool."""
    current = request.messages[-1] if request.messages else None
    if current is None or current.role != "user":
        return None
    match = _CALL_RE.fullmatch(current.text.strip())
    if match is None or match.group(1) not in offered_tools(request.params):
        return None
    raw = match.group(2).strip() or "{}"
    try:
        arguments = json.loads(raw)
    except (ValueError, RecursionError):  # no JSON, or nested deeper than the parser goes
        return None
    if not isinstance(arguments, dict):
        return None
    return match.group(1), json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def token_cap(params: Mapping[str, Any]) -> int | None:
    """The client's token cap: `max_completion_tokens` wins over `max_tokens`."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class EchoProvider:
    api = API_ECHO

    async def stream(self, request: ProviderRequest, deliver: Deliver) -> None:
        context = [request.system, *(m.text for m in request.messages)]
        input_tokens = sum(word_count(text) for text in context)
        call = echo_tool_call(request)
        if call is not None:
            name, arguments = call
            # Deterministic, and unique within a transcript: the turn and the call's index.
            deliver(ToolCallDelta(0, f"call_echo_{_turn(request)}_0", name, ""))
            for start in range(0, len(arguments), ARGUMENT_PIECE):
                deliver(ToolCallDelta(0, None, None, arguments[start : start + ARGUMENT_PIECE]))
            deliver(Usage(input=input_tokens, output=len(arguments.split()) + 1))
            deliver(Finish(StopReason.TOOL_CALLS))
            return
        # The deltas one at a time: a large request's listed at once took some 60 bytes a
        # word beside its text (250 MB for 4 MiB of short words).
        reply = echo_reply(request)
        cap = token_cap(request.params)
        if cap is not None and cap < 0:  # an agent's params are not checked: as a slice's
            cap = max(0, sum(1 for _ in _DELTA_RE.finditer(reply)) + cap)
        finish = StopReason.STOP
        delay = request.params.get("delayMs", 0)
        delay_s = delay / 1000 if isinstance(delay, int | float) and delay > 0 else 0.0
        words = 0  # every delta is a word, but for a trailing whitespace one
        for index, match in enumerate(_DELTA_RE.finditer(reply)):
            if index == cap:
                finish = StopReason.LENGTH
                break
            if index and delay_s:
                await asyncio.sleep(delay_s)
            delta = match.group()
            words += not delta.isspace()
            deliver(TextDelta(delta))
        deliver(Usage(input=input_tokens, output=words))
        deliver(Finish(finish))
