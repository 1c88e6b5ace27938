"""The connect screen's message for a lock-out, from a gateway that does not exempt
loopback clients from its failed-auth limiter."""

from __future__ import annotations

import pytest

from tests.support.browser import CONFIG, Page

pytestmark = pytest.mark.browser

GATEWAY_CONFIG = CONFIG.replace(
    'auth: { mode: "token",',
    'auth: { rateLimit: { maxAttempts: 2, exemptLoopback: false }, mode: "token",',
)
LOCKED = "Locked out after too many failed attempts. Try again in 5 minutes."


def test_a_locked_out_client_is_told_so_and_when_to_retry(page: Page) -> None:
    page.connect("wrong")
    page.until(lambda: page.text("#connect-error") == "Wrong token: the gateway refused it.",
               "the first refusal")  # fmt: skip
    for _ in range(3):  # the limiter counts 2 failures, then locks
        page.connect("wrong")
        page.until(lambda: not page.find("#connect-submit").get_attribute("disabled"), "answer")
        if page.text("#connect-error") == LOCKED:
            break
    assert page.text("#connect-error") == LOCKED
    # The right token is refused too while the lock lasts.
    page.connect()
    page.until(lambda: not page.find("#connect-submit").get_attribute("disabled"), "answer")
    assert page.text("#connect-error") == LOCKED
