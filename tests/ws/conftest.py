"""WebSocket fixtures: an app factory, a raw socket that has not done the handshake, and a
connected client that has (tests/support/ws_client.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.auth import with_generated_token
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from gateway.state import AppOptions
from gateway.ws.handler import WS
from gateway.ws.state import WsSettings
from tests.support.ws_client import CONFIG, AiohttpClient, Gateway, GatewayWs, MakeGateway


@pytest.fixture
def make_gateway(aiohttp_client: AiohttpClient, tmp_path: Path) -> MakeGateway:
    async def make(
        text: str = CONFIG,
        *,
        settings: WsSettings | None = None,
        options: AppOptions | None = None,
        with_loader: bool = True,
        environ: dict[str, str] | None = None,
    ) -> Gateway:
        config_path = tmp_path / "clawgate.json5"
        config_path.write_text(text)
        state_dir = tmp_path / "state"
        loader = ConfigLoader(
            Overrides(config_path=str(config_path), state_dir=str(state_dir)),
            environ=environ or {},
        )
        config = with_generated_token(loader.load())
        app = create_app(config, loader=loader if with_loader else None, options=options)
        if settings is not None:
            app[WS].settings = settings
        return Gateway(await aiohttp_client(app), config_path, state_dir)

    return make


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway()


@pytest.fixture
async def raw_ws(gateway: Gateway) -> GatewayWs:
    """Open, challenge not yet read, no `connect` sent."""
    return await gateway.raw()


@pytest.fixture
async def ws(gateway: Gateway) -> AsyncIterator[GatewayWs]:
    """Connected with every scope (protocol 4); the first `health` event consumed."""
    client = await gateway.connected()
    yield client
    await client.ws.close()
