"""OpenClaw's terminal UI (`openclaw tui`) against the gateway, as a user drives it: its slash
commands that the gateway answers, on a pseudo-terminal (ws-protocol.md §12)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.openclaw.test_clients import assert_idle, ws_url
from tests.support.openclaw_clients import TOKEN, OpenClaw, Terminal
from tests.support.process import GatewayProcess, served

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]

CONFIG = f"""{{
  gateway: {{ auth: {{ mode: "token", token: "{TOKEN}" }} }},
  agents: {{
    list: [
      // delayMs: the echo agent waits between words, so a reply can be cut mid-way
      {{ id: "main", default: true, params: {{ delayMs: 60 }} }},
      {{ id: "ops", name: "Operations" }},
    ],
  }},
}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """This module's own gateway: two agents, the default one slow."""
    with served(tmp_path_factory.mktemp("openclaw-tui-gateway"), CONFIG) as process:
        yield process


def open_tui(openclaw: OpenClaw, gateway: GatewayProcess, session: str) -> Terminal:
    terminal = Terminal(openclaw, "--url", ws_url(gateway), "--token", TOKEN, "--session", session)
    try:
        terminal.wait_for("gateway connected")
    except BaseException:
        terminal.close()
        raise
    return terminal


@pytest.fixture
def tui(
    openclaw: OpenClaw, gateway: GatewayProcess, request: pytest.FixtureRequest
) -> Iterator[Terminal]:
    """The TUI on a session of the test's own."""
    terminal = open_tui(openclaw, gateway, request.node.name.removeprefix("test_")[:40])
    try:
        yield terminal
    finally:
        terminal.close()


class TestSessionCommands:
    def test_new_starts_a_session_of_its_own_that_is_listed(
        self, tui: Terminal, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        tui.type("before")
        seen = tui.wait_for("[turn 1] before")
        assert_idle(tui)
        tui.type("/new")
        seen = tui.wait_for("new session: agent:main:tui-", seen)
        key = tui.text[seen:].split()[2]
        tui.type("in the new one")
        tui.wait_for("[turn 1] in the new one", seen)  # not turn 2 of the session before
        assert_idle(tui)
        listed = openclaw.call(ws_url(gateway), "sessions.list", {"agentId": "main"})
        rows = {row["key"]: row for row in listed["sessions"]}
        assert rows[key]["inputTokens"] > 0
        assert rows[f"agent:main:{'new_starts_a_session_of_its_own_that_is_listed'[:40]}"]


class TestFooter:
    def test_a_session_with_no_turn_yet_shows_its_agent_s_model(self, tui: Terminal) -> None:
        # The footer: "agent main (main) | session <name> | <model> | deliver:off | tokens 0".
        seen = tui.wait_for("| deliver:off")
        tui.drawn_within(1.0)  # what the TUI asks after its history, drawn
        footers = [line for line in tui.text[seen - 100 :].splitlines() if "deliver:off" in line]
        assert "| echo | deliver:off" in footers[-1], footers
