"""The built-in Control UI under `gateway.controlUi.basePath`, in Chromium: from the base path
it is redirected to its page, offers the gateway at its own path (`ws://host/ops`, where a proxy
that forwards only that path sends it on), connects with it and chats."""

from __future__ import annotations

from tests.support.browser import CONFIG, Page
from tests.support.process import GatewayProcess

BASE = "/ops"
GATEWAY_CONFIG = CONFIG.replace(
    "  gateway: {\n", f'  gateway: {{\n    controlUi: {{ basePath: "{BASE}" }},\n', 1
)


def test_under_the_base_path_it_connects_to_its_own_path_and_chats(
    page: Page, gateway: GatewayProcess
) -> None:
    assert "basePath" in GATEWAY_CONFIG
    page.driver.get_log("browser")  # the fixture's visit to `/`, where nothing is served now
    page.driver.get(f"{gateway.url}{BASE}")
    page.visible("#screen-connect")
    assert page.driver.current_url.startswith(f"{gateway.url}{BASE}/")
    ws_url = gateway.url.replace("http", "ws", 1) + BASE
    assert page.find("#connect-url").get_attribute("value") == ws_url
    page.connected()
    assert "[turn 1] hello" in page.chat("hello")
    errors = [e for e in page.driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
