"""The Control UI in a real browser: Debian's `chromium` driven by `selenium` through
`chromium-driver`, against a real `clawgate run` subprocess.

One gateway and one browser per module (starting Chromium costs a second or two). Without
Chromium, chromedriver or selenium the tests skip with a line that says how to install them;
with `CLAWGATE_REQUIRE_BROWSER=1` (set by `.ci/run`) they fail instead. A failing test saves a
screenshot and says where. With `CLAWGATE_SCREENSHOTS=1` the tests also write the README's
screenshots to `docs/screenshots/`.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gatewayproc import GatewayProcess, clean_env

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

pytestmark = pytest.mark.browser


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if shutil.which("chromium") is None:
        return "chromium is not installed"
    if not os.access(CHROMEDRIVER, os.X_OK):
        return f"{CHROMEDRIVER} is missing"
    return None


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[GatewayProcess]:
    """The module's gateway: its `GATEWAY_CONFIG`, else CONFIG."""
    root = tmp_path_factory.mktemp("browser-gateway")
    config = root / "clawgate.json5"
    config.write_text(getattr(request.module, "GATEWAY_CONFIG", CONFIG))
    args = ["--config", str(config), "--state-dir", str(root / "state"), "--port", "0"]
    process = GatewayProcess(args, clean_env(root / "home"))
    stop = threading.Event()
    # Its log goes to a pipe: read it all the time, or a full pipe blocks the gateway's loop.
    reader = threading.Thread(target=drain, args=(process, stop), daemon=True)
    try:
        process.wait_listening()
        reader.start()
        yield process
    finally:
        stop.set()
        if reader.is_alive():
            reader.join(5)
        process.stop()


def drain(process: GatewayProcess, stop: threading.Event) -> None:
    while not stop.is_set() and process.proc.poll() is None:
        process.read_available(0.1)
        del process.lines[:-1000]  # only the recent lines matter


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CLAWGATE_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests required, but {missing}")
        pytest.skip(f"{missing}; to run the browser tests: {INSTALL_HINT}")
    # No selenium-manager: it would try to download a browser or a driver.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        set_viewport(browser, *DESKTOP)
        yield browser
    finally:
        browser.quit()


def set_viewport(driver: Any, width: int, height: int) -> None:
    """The page's viewport (not the window) at this size: headless windows have no chrome,
    but the CDP override is exact."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(
    driver: Any, gateway: GatewayProcess, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Page]:
    """A fresh tab state: sessionStorage empty, the UI at `/`, desktop viewport."""
    set_viewport(driver, *DESKTOP)
    # Cleared on a page of the same origin that runs no UI code, which could write it back.
    driver.get(gateway.url + "/healthz")
    driver.execute_script("sessionStorage.clear()")
    driver.get(gateway.url + "/")
    ui = Page(driver, gateway)
    yield ui
    if request.node.stash.get(_FAILED, False):
        shot = tmp_path / f"{request.node.name}.png"
        driver.save_screenshot(str(shot))
        console = "\n".join(str(entry) for entry in driver.get_log("browser"))
        print(f"screenshot of the failure: {shot}\nbrowser console:\n{console}")


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
