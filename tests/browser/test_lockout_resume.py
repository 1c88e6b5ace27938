"""A tab that holds the right token, locked out by others' failures from its address (a page
guessing the password, say): it is told so and keeps the token for when the lock ends."""

from __future__ import annotations

import time

import pytest

from tests.support.browser import CONFIG, Page

pytestmark = pytest.mark.browser

LOCKOUT_MS = 3000
GATEWAY_CONFIG = CONFIG.replace(
    'auth: { mode: "token",',
    "auth: { rateLimit: { maxAttempts: 2, exemptLoopback: false,"
    f' lockoutMs: {LOCKOUT_MS} }}, mode: "token",',
)
LOCKED = "Locked out after too many failed attempts. Try again in 1 minute."

# Connects from the page's own address with a wrong token until the gateway locks it out.
LOCK_OUT = """
const done = arguments[arguments.length - 1];
const { CLIENT } = await import("/ui/gateway.js");
for (let attempt = 0; attempt < 5; attempt++) {
  const error = await new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}`);
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.event === "connect.challenge") {
        ws.send(JSON.stringify({ type: "req", id: "1", method: "connect", params: {
          minProtocol: 3, maxProtocol: 4, client: CLIENT, role: "operator",
          auth: { token: "wrong" } } }));
      } else if (frame.type === "res") {
        resolve(frame.error);
      }
    };
  });
  if (error.details.code === "AUTH_RATE_LIMITED") return done(true);
}
done(false);
"""


def test_a_locked_out_tab_keeps_its_token_and_reconnects_after_the_lock(page: Page) -> None:
    page.connected()
    assert page.driver.execute_async_script(LOCK_OUT)
    page.driver.refresh()
    page.until(lambda: page.text("#connect-error") == LOCKED, "the lock-out message")
    assert page.driver.execute_script("return sessionStorage.length") == 1
    time.sleep(LOCKOUT_MS / 1000)
    page.driver.refresh()
    page.until(lambda: page.find("#conn-state").get_attribute("data-state") == "connected",
               "reconnecting with the kept token")  # fmt: skip


def test_connect_once_the_lock_ends_uses_the_token_the_tab_holds(page: Page) -> None:
    page.connected()
    assert page.driver.execute_async_script(LOCK_OUT)
    page.driver.refresh()
    page.until(lambda: page.text("#connect-error") == LOCKED, "the lock-out message")
    assert page.find("#connect-secret").get_attribute("value") == ""
    time.sleep(LOCKOUT_MS / 1000)
    page.click("#connect-submit")
    page.until(lambda: page.find("#conn-state").get_attribute("data-state") == "connected",
               "connected with the kept token")  # fmt: skip


def test_the_token_the_tab_holds_is_sent_to_its_own_url_only(page: Page) -> None:
    page.connected()
    assert page.driver.execute_async_script(LOCK_OUT)
    page.driver.refresh()
    page.until(lambda: page.text("#connect-error") == LOCKED, "the lock-out message")
    port = page.gateway.url.rsplit(":", 1)[1]
    page.type("#connect-url", f"ws://localhost:{port}")
    page.click("#connect-submit")
    page.until(lambda: page.text("#connect-error") == "Enter the gateway token.", "the ask")
    time.sleep(LOCKOUT_MS / 1000)  # the next test starts unlocked
