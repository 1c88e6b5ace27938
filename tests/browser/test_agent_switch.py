"""The chat screen's agent picker when the switch fails: the agent was removed by a config
reload since the list was shown, or the gateway is gone. The error is shown where the chat
shows its errors, and the picker stays on the agent whose session is on screen."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.browser.test_reconnect import Restartable
from tests.support.browser import CONFIG, TOKEN, Page

pytestmark = pytest.mark.browser

WITHOUT_OPS = CONFIG.replace('{ id: "ops", name: "Operations" },', "")

# Asks the gateway on a connection of its own until its agents are `arguments[1]`.
AGENTS_ARE = """
const [token, wanted, done] = arguments;
const { Gateway } = await import("/ui/gateway.js");
const gw = new Gateway();
await gw.start(`ws://${location.host}`, { token });
for (let i = 0; i < 200; i++) {
  const { agents } = await gw.request("agents.list");
  if (agents.map((a) => a.id).join(",") === wanted) break;
  await new Promise((resolve) => setTimeout(resolve, 50));
}
gw.stop();
done();
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    restartable = Restartable(tmp_path_factory.mktemp("restartable"))
    restartable.start()
    try:
        yield restartable
    finally:
        restartable.stop()


def pick(page: Page, agent: str) -> None:
    page.driver.execute_script(
        """
        const select = document.getElementById("chat-agent");
        select.value = arguments[0];
        select.dispatchEvent(new Event("change"));
        """,
        agent,
    )


def agents_offered(page: Page) -> list[str]:
    return [o.get_attribute("value") for o in page.all("#chat-agent option")]


def test_an_agent_removed_by_a_reload_is_refused_with_the_error_shown(
    page: Page, gateway: Restartable
) -> None:
    page.connected()
    page.click("#chat-new")
    page.until(lambda: page.session_key().startswith("agent:main:"), "a main session")
    key = page.session_key()
    assert agents_offered(page) == ["main", "ops"]
    config = gateway.root / "clawgate.json5"
    config.write_text(WITHOUT_OPS)
    try:
        page.driver.execute_async_script(AGENTS_ARE, TOKEN, "main")
        pick(page, "ops")
        error = page.visible("#chat-error")
        assert error.text == "The gateway has no agent 'ops' any more."
        assert agents_offered(page) == ["main"]
        assert page.find("#chat-agent").get_attribute("value") == "main"
        assert page.session_key() == key
    finally:
        config.write_text(CONFIG)
        page.driver.execute_async_script(AGENTS_ARE, TOKEN, "main,ops")


def test_a_switch_while_the_gateway_is_gone_shows_the_error(
    page: Page, gateway: Restartable
) -> None:
    page.connected()
    page.click("#chat-new")
    page.until(lambda: page.session_key().startswith("agent:main:"), "a main session")
    key = page.session_key()
    state = page.find("#conn-state")
    gateway.stop()
    try:
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
        pick(page, "ops")
        error = page.visible("#chat-error")
        assert error.text == "Not connected to the gateway."
        assert page.find("#chat-agent").get_attribute("value") == "main"
        assert page.session_key() == key
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)
    time.sleep(0.2)
    assert page.find("#chat-error").get_attribute("hidden")  # a new connection clears it


def test_a_link_to_a_session_of_an_agent_not_configured_says_so(
    page: Page, gateway: Restartable
) -> None:
    # A bookmark kept after the agent was removed: the picker showed no agent, and nothing
    # was said until a message was refused.
    page.connected()
    page.driver.execute_script("location.hash = '#chat/agent:gone:notes'")
    page.until(lambda: page.session_key() == "agent:gone:notes", "the session")
    assert page.visible("#chat-error").text == "The gateway has no agent 'gone'."
