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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    CHROMEDRIVER,
    CONFIG,
    DESKTOP,
    INSTALL_HINT,
    Page,
    browser_missing,
    set_viewport,
)
from tests.support.process import GatewayProcess, served

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def gateway_config(request: pytest.FixtureRequest) -> str:
    """The module's `GATEWAY_CONFIG`, else CONFIG; a module may override the fixture."""
    return str(getattr(request.module, "GATEWAY_CONFIG", CONFIG))


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, gateway_config: str
) -> Iterator[GatewayProcess]:
    """The module's gateway, on `gateway_config`."""
    with served(tmp_path_factory.mktemp("browser-gateway"), gateway_config) as process:
        yield process


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = browser_missing()
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
