"""OpenClaw's own Control UI served under `gateway.controlUi.basePath`, in Chromium: from the
base path it is redirected to its page there, connects (to `ws://host/openclaw`), chats with
the echo agent and opens a route of the app, all under the base path.

Skips as tests/browser/test_openclaw_control_ui.py does.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.browser.test_openclaw_control_ui import (
    NEEDED,
    TOKEN,
    body_text,
    composer,
    console_errors,
    refused_calls,
    ui,
)
from tests.support.browser import Page
from tests.support.openclaw_clients import INSTALL_HINT, find_control_ui
from tests.support.process import GatewayProcess

pytestmark = [pytest.mark.browser, pytest.mark.openclaw]
__all__ = ["ui"]  # the tab fixture, shared

BASE = "/openclaw"


@pytest.fixture(scope="module")
def gateway_config() -> str:
    build = find_control_ui()
    if isinstance(build, str):
        if os.environ.get("CLAWGATE_REQUIRE_OPENCLAW"):
            pytest.fail(f"OpenClaw's Control UI required, but {build}")
        pytest.skip(f"{build}; to run these tests: {INSTALL_HINT}")
    config = {
        "gateway": {
            "auth": {"mode": "token", "token": TOKEN},
            "controlUi": {"root": str(build), "basePath": BASE},
        },
        "agents": {"list": [{"id": "main", "default": True}]},
    }
    return json.dumps(config)


def test_under_the_base_path_it_connects_chats_and_routes(
    ui: Page, gateway: GatewayProcess
) -> None:
    ui.driver.get(f"{gateway.url}{BASE}#token={TOKEN}")  # redirected to `/openclaw/`
    field = composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    field.send_keys("hello under a base path\n")
    ui.until(lambda: "[turn 1] hello under a base path" in body_text(ui), "the echo's answer")
    assert ui.driver.current_url.startswith(f"{gateway.url}{BASE}/")

    # A route of the app, loaded as a page under the base path.
    ui.driver.get(f"{gateway.url}{BASE}/sessions")
    ui.until(lambda: ui.driver.title.startswith("Sessions"), "the sessions view")
    ui.until(lambda: "agent:main:main" in body_text(ui), "the session in the list")
    assert ui.driver.current_url == f"{gateway.url}{BASE}/sessions"

    assert console_errors(ui) == []
    refused = refused_calls(gateway)
    assert NEEDED.isdisjoint(refused), refused
