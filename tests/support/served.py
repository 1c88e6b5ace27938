"""A gateway served as `clawgate run` serves it (its runner, its logging), for the robustness
suite."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import STATE
from gateway.auth import with_generated_token
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from gateway.logs import configure_logging, set_level
from gateway.server import make_runner
from gateway.state import AppOptions, GatewayState
from tests.support.configs import merged

TOKEN = "robust-token-7c1e"
# Content-Type too: a chat completion without application/json is refused with 415.
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CHAT = "/v1/chat/completions"

SETTINGS: dict[str, Any] = {
    "gateway": {
        "auth": {"mode": "token", "token": TOKEN},
        "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
    },
    "agents": {"list": [{"id": "main", "default": True}]},
}


# -- the server's log -------------------------------------------------------------------------


class ServerLog:
    """The JSON lines the production logging writes (gateway.logs), parsed as they come."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self._offset = 0
        self._checked = 0
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Every event logged so far."""
        text = self.stream.getvalue()
        end = text.rfind("\n") + 1
        # Only "\n" ends a line, as for journald (not U+2028 or U+0085, as `splitlines()`).
        for line in text[self._offset : end - 1].split("\n") if end > self._offset else ():
            self.events.append(json.loads(line))
        self._offset = end
        return self.events

    def problems(self, since: int = 0) -> list[dict[str, Any]]:
        """Errors and tracebacks: an unhandled exception anywhere (a handler, a task, asyncio's
        "never retrieved", aiohttp's "Error handling request") is logged as one of these."""
        return [
            event
            for event in self.read()[since:]
            if event.get("level") in ("error", "critical") or "exception" in event
        ]

    def new_problems(self) -> list[dict[str, Any]]:
        """The problems logged since the previous call: one failure fails one check."""
        problems = self.problems(self._checked)
        self._checked = len(self.events)
        return problems


@contextlib.contextmanager
def production_logging(fmt: str = "json") -> Iterator[ServerLog]:
    """structlog and the stdlib root logger configured as the CLI does (JSON lines, or the
    console format), into memory; the previous configuration is restored afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = logging.getLogger("aiohttp.access")
    access_disabled = access.disabled
    log = ServerLog()
    configure_logging("info", fmt, log.stream)
    try:
        yield log
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        access.disabled = access_disabled
        set_level("info")


# -- a served gateway -------------------------------------------------------------------------


def build_app(
    directory: Path,
    settings: Mapping[str, Any] | None = None,
    options: AppOptions | None = None,
) -> web.Application:
    """The app of `clawgate run --config <directory>/clawgate.json5` for SETTINGS + `settings`."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "clawgate.json5"
    config_path.write_text(json.dumps(merged(SETTINGS, settings or {})))
    loader = ConfigLoader(
        Overrides(config_path=str(config_path), state_dir=str(directory / "state")), environ={}
    )
    return create_app(with_generated_token(loader.load()), loader=loader, options=options)


@attrs.define
class Served:
    app: web.Application
    host: str
    port: int

    @property
    def state(self) -> GatewayState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def served(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Served]:
    """`app` listening on `host` the way gateway/server.py serves it (make_runner: no handler
    cancellation, the header timeout as keep-alive timeout); cleaned up on exit."""
    runner = make_runner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield Served(app, host, runner.addresses[0][1])
    finally:
        await runner.cleanup()
