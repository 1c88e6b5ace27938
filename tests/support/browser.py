"""The Control UI as a Selenium test sees it: the page, the viewport, the module's gateway
config, and what tells whether a browser is there to drive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support.http_client import fake_provider_entry
from tests.support.process import GatewayProcess
from tests.support.upstreams import FakeOpenAI, Stream

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
TOKEN = "browser-test-token"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "apt-get install chromium chromium-driver, and pip install selenium (the test extra)"
WAIT = 10.0  # seconds any one thing on the page may take
DESKTOP = (1280, 800)
PHONE = (390, 844)

CONFIG = f"""{{
  gateway: {{
    auth: {{ mode: "token", token: "{TOKEN}" }},
    http: {{ endpoints: {{ chatCompletions: {{ enabled: true }} }} }},
  }},
  agents: {{
    list: [
      // delayMs: the echo agent waits between words, so the stream is visible
      {{ id: "main", default: true, params: {{ delayMs: 60 }} }},
      {{ id: "ops", name: "Operations" }},
    ],
  }},
}}
"""


def browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if shutil.which("chromium") is None:
        return "chromium is not installed"
    if not os.access(CHROMEDRIVER, os.X_OK):
        return f"{CHROMEDRIVER} is missing"
    return None


def set_viewport(driver: Any, width: int, height: int) -> None:
    """The page's viewport (not the window) at this size: headless windows have no chrome,
    but the CDP override is exact."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )


@contextlib.contextmanager
def upstream_on_a_thread(stream: Stream) -> Iterator[FakeOpenAI]:
    """The fake upstream answering `stream`, on a loop of its own: the gateway is another
    process, and the browser tests are not coroutines."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def started() -> FakeOpenAI:
        fake = FakeOpenAI(stream)
        await fake.start()
        return fake

    fake = asyncio.run_coroutine_threadsafe(started(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def config_with_upstream(upstream: FakeOpenAI) -> str:
    """CONFIG with the main agent answered by `upstream`."""
    provider = json.dumps({"fake": fake_provider_entry(upstream)})
    return CONFIG.replace(
        '{ id: "main", default: true, params: { delayMs: 60 } }',
        '{ id: "main", default: true, model: "fake/fake-model" }',
    ).replace("  agents: {", f"  models: {{ providers: {provider} }},\n  agents: {{", 1)


class Page:
    """The Control UI as a test sees it: find, type, click, wait."""

    def __init__(self, driver: Any, gateway: GatewayProcess) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.gateway = gateway
        self.by = By

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(self.by.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def until(self, check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = check()
            except Exception:  # the element is not there yet, or was replaced
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def visible(self, css: str) -> Any:
        return self.until(lambda: self.find(css).is_displayed() and self.find(css), css)

    def type(self, css: str, text: str, clear: bool = True) -> None:
        field = self.visible(css)
        if clear:
            field.clear()
        field.send_keys(text)

    def click(self, css: str) -> None:
        self.visible(css).click()

    def connect(self, token: str = TOKEN) -> None:
        self.type("#connect-secret", token)
        self.click("#connect-submit")

    def connected(self) -> None:
        self.connect()
        self.until(lambda: self.find("#conn-state").get_attribute("data-state") == "connected",
                   "the connected state")  # fmt: skip

    def go(self, screen: str) -> None:
        self.click(f'#nav a[data-screen="{screen}"]')
        self.visible(f"#screen-{screen}")

    def gateway_config_path(self) -> Path:
        args = self.gateway.proc.args
        return Path(args[args.index("--config") + 1])

    def screenshot(self, name: str) -> None:
        """The README's picture of a screen, when asked for (CLAWGATE_SCREENSHOTS=1)."""
        if not os.environ.get("CLAWGATE_SCREENSHOTS"):
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)  # let a last repaint land
        self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    def session_key(self) -> str:
        """The chat screen's session, from the URL it keeps it in."""
        from urllib.parse import unquote

        fragment = str(self.driver.current_url).split("#", 1)[1]
        assert fragment.startswith("chat/"), fragment
        return unquote(fragment.removeprefix("chat/"))

    def chat(self, message: str) -> str:
        """Send on the chat screen and wait for the whole answer; the answer's text."""
        self.type("#chat-input", message)
        self.click("#chat-send")

        def answered() -> list[Any]:
            return [
                bubble
                for bubble in self.all(".bubble.assistant")
                if "streaming" not in bubble.get_attribute("class") and message in bubble.text
            ]

        done = self.until(answered, "the answer")
        return str(done[-1].find_element(self.by.CSS_SELECTOR, ".text").text)
