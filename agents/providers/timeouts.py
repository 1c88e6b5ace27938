"""How long a network provider waits on its upstream: shared by the providers and their pool."""

from __future__ import annotations

import attrs


@attrs.frozen
class Timeouts:
    # Unverified values (http-openai.md §12); OpenClaw documents 120 s idle for cloud models.
    connect: float = 10.0
    idle: float = 120.0
