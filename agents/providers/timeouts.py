"""How long a network provider waits on its upstream: shared by the providers and their pool."""

from __future__ import annotations

import attrs


@attrs.frozen
class Timeouts:
    # Unverified values (http-openai.md §12); OpenClaw documents 120 s idle for cloud models.
    connect: float = 10.0
    idle: float = 120.0  # without a byte
    # Without a piece of the reply (text, reasoning, a tool call's fragment; a whole JSON
    # answer) while bytes still come, so that an upstream sending keepalives alone (`: ping`
    # comments, Anthropic's `ping` events), or its head or body a byte at a time, does not
    # hold a run until its own timeout (48 h by default).
    # Long, because keepalives are also how a proxy holds a slow reasoning model's stream
    # open while it thinks without streaming its thoughts (OpenRouter's `: OPENROUTER
    # PROCESSING`): OpenAI's pro models may take many minutes before their first token.
    # 0: no limit.
    progress: float = 900.0
