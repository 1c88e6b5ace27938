"""The methods of the protocol, one module per area; `register_all` fixes their order, which is
the order of hello-ok's `features.methods` (ws-protocol.md §10, §12)."""

from __future__ import annotations

from gateway.ws.dispatch import MethodRegistry
from gateway.ws.methods import (
    agent,
    catalog,
    chat,
    compat,
    config,
    dashboard,
    debug_pages,
    health,
    session_usage,
    sessions,
    system,
    themes,
)


def register_all(methods: MethodRegistry) -> MethodRegistry:
    for module in (
        health,
        catalog,
        sessions,
        chat,
        agent,
        config,
        system,
        dashboard,
        compat,
        themes,
        session_usage,
        debug_pages,
    ):
        module.register(methods)
    return methods
