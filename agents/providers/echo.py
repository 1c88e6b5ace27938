"""The built-in `echo` provider (agents-sessions.md §6.2): no network, observable sessions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from agents.config import API_ECHO
from agents.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta, Usage

IMAGE_ONLY_TEXT = "User sent image(s) with no text."

# A word with the whitespace before it; a trailing whitespace run is its own piece.
_DELTA_RE = re.compile(r"\s*\S+|\s+\Z")


def echo_reply(request: ProviderRequest) -> str:
    turn = sum(1 for m in request.messages if m.role == "user")
    current = request.messages[-1] if request.messages else None
    text = current.text if current else ""
    if not text and current is not None and current.images:
        text = IMAGE_ONLY_TEXT
    return f"[turn {turn}] {text}"


def token_cap(params: Mapping[str, Any]) -> int | None:
    """The client's token cap: `max_completion_tokens` wins over `max_tokens`."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class EchoProvider:
    api = API_ECHO

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        deltas = _DELTA_RE.findall(echo_reply(request))
        cap = token_cap(request.params)
        finish = "stop"
        if cap is not None and cap < len(deltas):
            deltas, finish = deltas[:cap], "length"
        delay = request.params.get("delayMs", 0)
        delay_s = delay / 1000 if isinstance(delay, int | float) and delay > 0 else 0.0
        for index, delta in enumerate(deltas):
            if index and delay_s:
                await asyncio.sleep(delay_s)
            yield TextDelta(delta)
        context = [request.system, *(m.text for m in request.messages)]
        yield Usage(
            input=sum(len(text.split()) for text in context),
            output=len("".join(deltas).split()),
        )
        yield Finish(finish)
