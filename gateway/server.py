"""Serving the app on its socket until a signal stops it."""

from __future__ import annotations

import asyncio
import errno
import signal
import sys

import structlog
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import STATE
from gateway.config import Config
from gateway.configfile import ConfigLoader

log = structlog.get_logger()


async def serve(config: Config, loader: ConfigLoader | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    # Handlers first: a SIGTERM that arrives while starting up must still stop cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _serve(config, loader, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _serve(config: Config, loader: ConfigLoader | None, stop: asyncio.Event) -> int:
    app = create_app(config, loader=loader)
    host, port = config.gateway.host, config.gateway.port
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        message = f"cannot listen on {host}:{port}: {reason}"
        print(message, file=sys.stderr)
        log.error("listen_failed", host=host, port=port, error=reason)
        await runner.cleanup()
        return 1

    bound_port = runner.addresses[0][1]
    log.info(
        "gateway_listening",
        url=f"http://{_url_host(host)}:{bound_port}",
        ws=f"ws://{_url_host(host)}:{bound_port}",
        auth=config.gateway.auth.mode,
        config=str(config.source.path) if config.source.exists else "(embedded default)",
    )

    await stop.wait()
    log.info("gateway_stopping")
    app[STATE].draining = True
    await runner.cleanup()
    log.info("gateway_stopped")
    return 0


def _url_host(host: str) -> str:
    # 0.0.0.0 is where we listen, not an address a client can use.
    return "127.0.0.1" if host == "0.0.0.0" else host
