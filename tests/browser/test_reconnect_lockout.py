"""A tab whose connection is lost, and whose address is locked out (by others' failures) when
it comes back: it waits out the lock and reconnects by itself, with the token it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from tests.browser.test_reconnect import Restartable
from tests.support.browser import CONFIG, Page

pytestmark = pytest.mark.browser

LOCKOUT_MS = 12000
GATEWAY_CONFIG = CONFIG.replace(
    'auth: { mode: "token",',
    "auth: { rateLimit: { maxAttempts: 2, exemptLoopback: false,"
    f' lockoutMs: {LOCKOUT_MS} }}, mode: "token",',
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    restartable = Restartable(tmp_path_factory.mktemp("restartable"))
    (restartable.root / "clawgate.json5").write_text(GATEWAY_CONFIG)
    restartable.start()
    try:
        yield restartable
    finally:
        restartable.stop()


async def lock_out(url: str) -> None:
    """Wrong tokens from this address until the gateway locks it out."""
    connect = {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "test", "version": "1", "platform": "linux", "mode": "cli"},
        "auth": {"token": "wrong"},
    }
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.ws_connect(url.replace("http", "ws", 1)) as ws:
                await ws.receive_json(timeout=5)  # the challenge
                await ws.send_json(
                    {"type": "req", "id": "1", "method": "connect", "params": connect}
                )
                answer = await ws.receive_json(timeout=5)
            if answer["error"]["details"]["code"] == "AUTH_RATE_LIMITED":
                return
    raise AssertionError("never locked out")


def test_a_lock_out_met_on_reconnecting_is_waited_out(page: Page, gateway: Restartable) -> None:
    page.connected()
    state = page.find("#conn-state")
    gateway.stop()
    # Back, and locked out, while the page waits its longest yet before trying again.
    retry = page.find("#conn-retry")
    page.until(lambda: retry.text == "next try in 8 s", "an 8 s wait", 20)
    gateway.start()
    asyncio.run(lock_out(gateway.url))
    # The lock lasts 12 s from now; the next attempt, in at most 8 s, meets it.
    ended = page.until(
        lambda: state.get_attribute("data-state") in ("connected", "failed") and state, "an end", 30
    )
    assert ended.get_attribute("data-state") == "connected"
    page.visible("#screen-chat")
