"""The Sessions screen on a phone, with a session whose model name is one long word."""

from __future__ import annotations

import pytest

from tests.support.browser import CONFIG, PHONE, Page, set_viewport

pytestmark = pytest.mark.browser

# The echo provider answers under any model name: the `ops` agent's turns store this one.
# Underscores, not hyphens: a browser breaks a line after a hyphen by itself.
LONG_MODEL = "a_fine_tuned_model_with_a_very_long_name_and_no_break_in_it_20261207_preview"
GATEWAY_CONFIG = CONFIG.replace(
    '{ id: "ops", name: "Operations" }',
    f'{{ id: "ops", name: "Operations", model: "echo/{LONG_MODEL}" }}',
)


def test_a_long_model_name_wraps_within_the_phone(page: Page) -> None:
    # One unbroken word in the Model column held the table as wide as the name: the list
    # scrolled sideways on a phone, its Tokens and Last activity columns out of view.
    page.connected()
    page.driver.execute_script("location.hash = '#chat/agent:ops:long-model'")
    page.until(lambda: page.session_key() == "agent:ops:long-model", "the session")
    page.chat("which model?")
    set_viewport(page.driver, *PHONE)
    page.go("sessions")
    row = page.visible('#sessions-table tr[data-key="agent:ops:long-model"]')
    assert row.find_elements(page.by.TAG_NAME, "td")[2].text.replace("\n", "") == (
        f"echo/{LONG_MODEL}"
    )
    widths = page.driver.execute_script(
        "const wrap = document.querySelector('#sessions-table').parentElement;"
        "return [document.documentElement.scrollWidth, wrap.scrollWidth, wrap.clientWidth]"
    )
    assert widths[0] <= PHONE[0]
    assert widths[1] <= widths[2]  # the table fits its box: nothing to scroll sideways
