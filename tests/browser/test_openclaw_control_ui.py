"""OpenClaw's own browser Control UI (the `openclaw` npm package's `dist/control-ui`), served
by clawgate through `gateway.controlUi.root`, in Chromium: it connects with the token from
the URL, chats with the echo agent and lists the session.

Skips without the browser (tests/browser/conftest.py) or without OpenClaw's clients
(`scripts/install-openclaw-clients`), unless CLAWGATE_REQUIRE_BROWSER=1 or
CLAWGATE_REQUIRE_OPENCLAW=1 make that a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.browser import Page
from tests.support.openclaw_clients import INSTALL_HINT, find_control_ui
from tests.support.process import GatewayProcess
from tests.support.process_client import connect_ws

pytestmark = [pytest.mark.browser, pytest.mark.openclaw]

TOKEN = "openclaw-ui-token"
# The methods the flows below need; the others it calls at start-up (OpenClaw features
# clawgate does not have) may be refused.
NEEDED = {
    "chat.startup",
    "chat.send",
    "chat.history",
    "sessions.messages.subscribe",
    "sessions.list",
    "agents.list",
    "models.list",
}
# OpenClaw features clawgate does not have, answered with their empty state (not refused).
EMPTY = {
    "update.status",
    "sessions.observer.visibility",
    "agent.identity.get",
    "models.authStatus",
    "talk.catalog",
    "chat.metadata",
    "progressCard.get",
    "sessions.branches.list",
    "sessions.companion.state",
    "tasks.list",
    "plugins.list",
    "plugins.catalog.browse",
    "usage.status",
    "themes.list",
    "channels.pairing.list",
    "worktrees.list",
    "transcripts.list",
}


@pytest.fixture(scope="module")
def gateway_config() -> str:
    build = find_control_ui()
    if isinstance(build, str):
        if os.environ.get("CLAWGATE_REQUIRE_OPENCLAW"):
            pytest.fail(f"OpenClaw's Control UI required, but {build}")
        pytest.skip(f"{build}; to run these tests: {INSTALL_HINT}")
    config = {
        "gateway": {"auth": {"mode": "token", "token": TOKEN}, "controlUi": {"root": str(build)}},
        "agents": {"list": [{"id": "main", "default": True}]},
    }
    return json.dumps(config)


@pytest.fixture
def ui(driver: Any, gateway: GatewayProcess) -> Iterator[Page]:
    """A tab with no stored state, the gateway's log read from here on."""
    driver.get(gateway.url + "/healthz")
    driver.execute_script("localStorage.clear(); sessionStorage.clear()")
    driver.get_log("browser")  # what earlier tests left
    del gateway.lines[:]
    yield Page(driver, gateway)


def button(ui: Page, text: str) -> Any:
    """The displayed button reading `text`, once there is one."""
    found = lambda: [  # noqa: E731
        b for b in ui.all("button") if b.text.strip() == text and b.is_displayed()
    ]
    return ui.until(found, text)[0]


def shown(ui: Page, css: str) -> Any:
    """The first element matching `css` that is shown (the UI keeps hidden copies)."""
    return ui.until(lambda: [e for e in ui.all(css) if e.is_displayed()], css)[0]


def composer(ui: Page) -> Any:
    """The chat's message field, once shown."""
    return shown(ui, "textarea")


def body_text(ui: Page) -> str:
    return str(ui.driver.execute_script("return document.body.innerText"))


def console_errors(ui: Page) -> list[str]:
    """What the page logged as errors: a refused file, a policy violation, an exception."""
    return [str(e["message"]) for e in ui.driver.get_log("browser") if e["level"] == "SEVERE"]


def calls(gateway: GatewayProcess, *, ok: bool) -> dict[str, str | None]:
    """The WebSocket calls the gateway answered (`ok`) or refused, by method, with their
    error code."""
    answered = {}
    for line in list(gateway.lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "ws_call" and record.get("ok") is ok:
            answered[record["method"]] = record.get("code")
    return answered


def refused_calls(gateway: GatewayProcess) -> dict[str, str | None]:
    return calls(gateway, ok=False)


def test_connects_with_the_token_chats_and_lists_the_session(
    ui: Page, gateway: GatewayProcess
) -> None:
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    field = composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    field.send_keys("hello from OpenClaw's UI\n")
    ui.until(lambda: "[turn 1] hello from OpenClaw's UI" in body_text(ui), "the echo's answer")

    # A route of the app, loaded as a page: the gateway answers it with the app.
    ui.driver.get(f"{gateway.url}/sessions")
    ui.until(lambda: ui.driver.title.startswith("Sessions"), "the sessions view")
    ui.until(lambda: "agent:main:main" in body_text(ui), "the session in the list")

    # A page of an OpenClaw feature clawgate does not have shows its empty state.
    ui.driver.get(f"{gateway.url}/automations")
    ui.until(lambda: "No automations yet" in body_text(ui), "no automations")
    assert "invalid inventory page" not in body_text(ui)
    # The Plugins page lists none, and none to install (it said `unknown method`).
    ui.driver.get(f"{gateway.url}/plugins")
    ui.until(lambda: ui.driver.title.startswith("Plugins"), "the plugins view")
    ui.until(
        lambda: {"plugins.list", "plugins.catalog.browse"} <= set(calls(gateway, ok=True)),
        "the plugins listed",
    )
    assert "unknown method" not in body_text(ui)

    assert console_errors(ui) == []
    refused = refused_calls(gateway)
    print(f"calls refused: {refused}")  # OpenClaw features clawgate does not have
    assert NEEDED.isdisjoint(refused), refused
    assert EMPTY.isdisjoint(refused), refused


def test_without_a_token_it_asks_for_one_then_starts_a_new_conversation(
    ui: Page, gateway: GatewayProcess
) -> None:
    ui.driver.get(f"{gateway.url}/chat")
    ui.until(lambda: "This Gateway expects its token" in body_text(ui), "the token prompt")
    ui.type('input[type="password"]', TOKEN)
    connect = ui.until(
        lambda: [b for b in ui.all("button") if b.text.strip() == "Connect" and b.is_displayed()],
        "the Connect button",
    )
    connect[0].click()
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")

    # New conversation: `sessions.create` with the first message.
    shown(ui, '[aria-label="New conversation"]').click()
    ui.until(lambda: "Pick where this session works" in body_text(ui), "the new session page")
    composer(ui).send_keys("a fresh start\n")
    ui.until(lambda: "[turn 1] a fresh start" in body_text(ui), "the new session's answer")
    assert console_errors(ui) == []


def answered(gateway: GatewayProcess, method: str) -> bool:
    return method in calls(gateway, ok=True) or method in refused_calls(gateway)


def test_the_other_pages_open(ui: Page, gateway: GatewayProcess) -> None:
    """Pages the flows above do not visit: what they ask for is answered, and nothing goes
    to the console."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    # The session holds the turns of the tests before, and the chat may give back a draft of
    # theirs once its state is read: the message is typed into an empty field.
    from selenium.webdriver.common.keys import Keys

    ui.until(lambda: answered(gateway, "chat.startup"), "the chat's state")
    field = composer(ui)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys("usage of one turn\n")
    ui.until(lambda: "] usage of one turn" in body_text(ui), "the echo's answer")
    composer(ui).send_keys("and of another\n")
    ui.until(lambda: "] and of another" in body_text(ui), "the echo's second answer")

    ui.driver.get(f"{gateway.url}/logs")
    ui.until(lambda: ui.driver.title.startswith("Logs"), "the logs view")
    ui.until(lambda: "gateway_listening" in body_text(ui), "the gateway's log lines")

    ui.driver.get(f"{gateway.url}/agents")
    ui.until(lambda: ui.driver.title.startswith("Agents"), "the agents view")
    ui.until(lambda: "echo/echo" in body_text(ui), "the main agent and its model")

    ui.driver.get(f"{gateway.url}/usage")
    ui.until(lambda: ui.driver.title.startswith("Usage"), "the usage view")
    ui.until(
        lambda: answered(gateway, "usage.status") and answered(gateway, "sessions.usage"),
        "the usage asked for",
    )
    # The turns' usage (it said `unknown method: sessions.usage`), this one's among them: the
    # echo agent counts a word a token, 6 out ("[turn N] usage of one turn").
    usage = call(gateway, "sessions.usage", {"agentScope": "all", "groupBy": "family"})
    totals, messages = usage["totals"], usage["aggregates"]["messages"]
    assert totals["output"] >= 6 and messages["assistant"] >= 1, usage
    counts = f"{messages['user']} user · {messages['assistant']} assistant"
    ui.until(lambda: counts in body_text(ui), "the turns' messages")
    text = body_text(ui)
    assert f"Input {totals['input']}" in text and f"Output {totals['output']}" in text, text
    assert f"{len(usage['sessions'])} sessions in range" in text
    # A session opened: its turns over time and its messages.
    logs = call(gateway, "sessions.usage.logs", {"key": "agent:main:main"})["logs"]
    main = ui.until(
        lambda: [b for b in ui.all("button.session-bar-selection") if "agent:main:main" in b.text],
        "the main session's row",
    )
    main[0].click()
    ui.until(lambda: f"Conversation ({len(logs)} messages)" in body_text(ui), "the messages")
    ui.until(lambda: "Usage Over Time" in body_text(ui), "the turns over time")
    assert "] and of another" in body_text(ui)

    ui.driver.get(f"{gateway.url}/model-providers")
    ui.until(lambda: ui.driver.title.startswith("Models"), "the models view")
    ui.until(lambda: "Credentials for main" in body_text(ui), "the provider access")
    # Its usage and cost by provider: the turns' tokens, at no known price.
    spend = f"{totals['totalTokens']} tokens · {messages['assistant']} messages"
    ui.until(lambda: spend in body_text(ui), "the session spend")

    # The Channels and Worktrees pages show none (they said `unknown method`).
    ui.driver.get(f"{gateway.url}/channels")
    ui.until(lambda: ui.driver.title.startswith("Channels"), "the channels view")
    ui.until(lambda: answered(gateway, "channels.pairing.list"), "the pairing requests")
    ui.driver.get(f"{gateway.url}/worktrees")
    ui.until(lambda: ui.driver.title.startswith("Worktrees"), "the worktrees view")
    ui.until(lambda: answered(gateway, "worktrees.list"), "the worktrees listed")
    assert "unknown method" not in body_text(ui)

    # The Config page is the Appearance settings (it said `unknown method: themes.list`).
    ui.driver.get(f"{gateway.url}/config")
    ui.until(lambda: ui.driver.title.startswith("Appearance"), "the appearance settings")
    ui.until(lambda: answered(gateway, "themes.list"), "the themes listed")
    ui.until(lambda: "Manuscript" in body_text(ui), "the themes shown")
    assert "unknown method" not in body_text(ui)

    # The Debug page's snapshots and its lane table (it said `unknown method:
    # diagnostics.lanes` and showed no status or health), and the Meetings page's empty
    # archive (it said `unknown method: transcripts.list`).
    ui.driver.get(f"{gateway.url}/debug")
    ui.until(lambda: ui.driver.title.startswith("Debug"), "the debug view")
    ui.until(lambda: '"defaultAgentId": "main"' in body_text(ui), "the health snapshot")
    ui.until(
        lambda: [e for e in ui.all("td.command-lane-row__name") if e.text.strip() == "main"],
        "the main lane",
    )
    assert "unknown method" not in body_text(ui)
    ui.driver.get(f"{gateway.url}/meetings")
    ui.until(lambda: ui.driver.title.startswith("Meetings"), "the meetings view")
    ui.until(lambda: "Your meeting notes, together" in body_text(ui), "no meetings")
    assert "unknown method" not in body_text(ui)

    assert console_errors(ui) == []
    refused = refused_calls(gateway)
    assert refused == {}, refused


def call(gateway: GatewayProcess, method: str, params: dict[str, Any]) -> Any:
    """One WebSocket call's answer, beside the page (as another client of the gateway)."""

    async def calling() -> Any:
        async with aiohttp.ClientSession() as http:
            ws = await connect_ws(http, gateway.url, TOKEN)
            request = {"type": "req", "id": "c", "method": method, "params": params}
            await ws.send_json(request)
            while (frame := await ws.receive_json(timeout=10)).get("type") != "res":
                pass
            await ws.close()
            assert frame["ok"] is True, frame
            return frame["payload"]

    return asyncio.run(calling())


def session_row(ui: Page, key: str) -> Any:
    rows = lambda: [r for r in ui.all("tr.session-data-row") if key in r.text]  # noqa: E731
    return ui.until(rows, f"the row of {key}")[0]


def menu_item(ui: Page, row: Any, value: str) -> Any:
    """The item `value` of the row's session menu, opened."""
    row.find_element("css selector", 'button[aria-label="Open session menu"]').click()
    return shown(ui, f'wa-dropdown-item[value="{value}"]')


def test_a_session_is_pinned_then_unpinned_from_the_sessions_view(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The session menu's Pin (`sessions.patch {pinned: true}`), then its Unpin: refused with
    "unsupported field 'pinned'" before schema 6."""
    key = "agent:main:favourite"
    call(gateway, "sessions.patch", {"key": key, "label": "Favourite chat"})
    call(gateway, "sessions.patch", {"key": "agent:main:newer", "label": "Newer chat"})
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/sessions")

    def pinned() -> list[str]:
        listed = call(gateway, "sessions.list", {})["sessions"]
        return [row["key"] for row in listed if row.get("pinned")]

    menu_item(ui, session_row(ui, key), "toggle-pin").click()
    ui.until(lambda: pinned() == [key], "the pin")
    menu_item(ui, session_row(ui, key), "toggle-pin").click()
    ui.until(lambda: pinned() == [], "the unpin")
    assert "sessions.patch" not in refused_calls(gateway)
    assert console_errors(ui) == []


def test_a_session_is_archived_then_deleted_from_the_sessions_view(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The session menu's "Archive session" (`sessions.patch {archived: true}`), then in the
    Archived sessions its "Delete…" (`sessions.delete {archivedOnly: true}`)."""
    key = "agent:main:doomed"
    call(gateway, "sessions.patch", {"key": key, "label": "Doomed chat"})
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/sessions")
    menu_item(ui, session_row(ui, key), "toggle-archived").click()
    ui.until(lambda: key not in ui.find("table").text, "the archived session leaving the list")
    archived = call(gateway, "sessions.list", {"archived": True})["sessions"]
    assert [(row["key"], row["archiveReason"]) for row in archived] == [(key, "manual")]

    ui.find('wa-radio[value="archived"]').click()
    menu_item(ui, session_row(ui, key), "delete").click()
    ui.until(lambda: 'Delete "Doomed chat" and its transcript?' in body_text(ui), "the question")
    shown(ui, "openclaw-modal-dialog button.danger").click()
    ui.until(lambda: "sessions.delete" in calls(gateway, ok=True), "the delete")
    ui.until(lambda: key not in ui.find("table").text, "the deleted session leaving the list")
    everything = call(gateway, "sessions.list", {"archived": "all"})["sessions"]
    assert key not in [row["key"] for row in everything]
    assert {"sessions.patch", "sessions.delete"}.isdisjoint(refused_calls(gateway))
    assert console_errors(ui) == []


def test_the_profile_settings_say_github_is_not_connected(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Profile settings' GitHub identity (`tools.github.status`, which said `unknown
    method`): none configured or detected, and nothing goes to the console; the agent's
    account it opens lists no tools of the gateway's and says why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/profile")
    ui.until(lambda: ui.driver.title.startswith("Profile"), "the profile settings")
    ui.until(lambda: answered(gateway, "tools.github.status"), "the GitHub identity")
    ui.until(lambda: "GitHub for main" in body_text(ui), "the main agent's GitHub")
    ui.until(lambda: "No credentials" in body_text(ui), "no GitHub credentials")
    # The agent's account: its tools (`tools.catalog`, `tools.effective`, which said `unknown
    # method`), none of the gateway's.
    next(b for b in ui.all("button") if b.text.strip() == "View agent account").click()
    ui.until(
        lambda: {"tools.catalog", "tools.effective"} <= set(calls(gateway, ok=True)),
        "the agent's tools",
    )
    ui.until(lambda: "no tools of the gateway's" in body_text(ui), "the notice")
    assert "No tools are available for this session right now." in body_text(ui)
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {}, refused_calls(gateway)


def test_the_memory_settings_say_there_is_no_memory_plugin(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Memory settings' overview (`doctor.memory.status`, which said `unknown method`):
    OpenClaw's own "needs attention" for no memory plugin, and its dream diary, none. Its
    probe of the memory plugin's config (`config.schema.lookup`) is not found, as on OpenClaw
    for a path outside the config's schema, which the page reads as support unknown."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/memory")
    ui.until(lambda: ui.driver.title.startswith("Memory"), "the memory settings")
    ui.until(lambda: "Memory needs attention" in body_text(ui), "the memory overview")
    ui.until(lambda: answered(gateway, "config.schema.lookup"), "the memory plugin's probe")
    text = body_text(ui)
    assert "memory plugin unavailable" in text and "ENGINE HEALTH" in text, text
    # Its dream diary (`doctor.memory.dreamDiary`, which said `unknown method`): none.
    next(b for b in ui.all("button") if b.text.strip() == "Read the dream diary").click()
    ui.until(lambda: "doctor.memory.dreamDiary" in calls(gateway, ok=True), "the dream diary")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"config.schema.lookup": "INVALID_REQUEST"}


# Settings pages of OpenClaw features clawgate does not have, each with the call it made that
# said `unknown method`, and what the page shows instead.
FEATURE_PAGES = [
    ("settings/approvals", "Approvals", ("approval.history", "exec.approval.grants.list")),
    ("skills", "Skills", ("skills.library.list", "skills.search")),
    ("settings/skills", "Skills", ("skills.library.list",)),
    ("skills/workshop", "Skill workshop", ("skills.proposals.list",)),
    ("memory-import", "Import Memory", ("migrations.memory.plan",)),
    ("settings/search", "Search", ("webSearch.status",)),
]


@pytest.mark.parametrize(("path", "title", "methods"), FEATURE_PAGES)
def test_a_page_of_a_feature_clawgate_lacks_shows_none(
    ui: Page, gateway: GatewayProcess, path: str, title: str, methods: tuple[str, ...]
) -> None:
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/{path}")
    ui.until(lambda: ui.driver.title.startswith(title), f"the {title} page")
    ui.until(lambda: set(methods) <= set(calls(gateway, ok=True)), f"{methods} answered")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {}, refused_calls(gateway)


# The other pages of the app (its router's), by path and title: each opens with nothing refused
# and nothing on the console.
PAGES = [
    ("activity", "Activity"),
    ("apps", "Apps"),
    ("custodian", "Ask OpenClaw"),
    ("dashboards", "Dashboards"),
    ("portals", "Portals"),
    ("systems", "Systems"),
    ("tasks", "Tasks"),
    ("terminal", "Terminal"),
    ("workboard", "Workboard"),
    ("new", "New session"),
    ("settings/about", "About"),
    ("settings/advanced", "Advanced"),
    ("settings/agents", "Agents"),
    ("settings/ai-agents", "Agent Defaults"),
    ("settings/automation", "Automation"),
    ("settings/cloud-workers", "Cloud workers"),
    ("settings/communications", "Communications"),
    ("settings/connection", "Gateway"),
    ("settings/device", "This Mac"),
    ("settings/device/permissions", "Permissions"),
    ("settings/devices", "Devices"),
    ("settings/infrastructure", "Infrastructure"),
    ("settings/labs", "Labs"),
    ("settings/lobsterdex", "Lobsterdex"),
    ("settings/mcp", "MCP"),
    ("settings/model-setup", "Models"),
    ("settings/notifications", "Notifications"),
    ("settings/secrets", "Secrets"),
    ("settings/security", "Privacy & Security"),
    ("settings/talk", "Talk"),
    ("settings/updates", "Updates"),
]


def test_every_other_page_opens(ui: Page, gateway: GatewayProcess) -> None:
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    for path, title in PAGES:
        ui.driver.get(f"{gateway.url}/{path}")
        ui.until(lambda t=title: ui.driver.title.startswith(t), f"the {title} page at /{path}")
        assert "unknown method" not in body_text(ui), path
        # The Activity page shows each session's agent with its avatar, `/avatar/<agentId>`,
        # asked whether the agent has one or not: OpenClaw answers 404 for one without, as
        # clawgate does for every agent (they have none), and the browser logs it.
        no_avatar = f"{gateway.url}/avatar/main - Failed to load resource: the server responded"
        errors = [e for e in console_errors(ui) if not e.startswith(no_avatar)]
        assert errors == [], path
    assert refused_calls(gateway) == {}, refused_calls(gateway)


def test_the_devices_settings_show_the_exec_policy_as_deny(
    ui: Page, gateway: GatewayProcess
) -> None:
    """Settings → Devices' exec approval policy (`exec.approvals.get`, which said `unknown
    method`): clawgate's agents run no host command, so the gateway's policy is deny, never
    ask; a policy changed and saved (`exec.approvals.set`) is refused, the page says why."""
    from selenium.webdriver.support.ui import Select

    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/devices")
    ui.until(lambda: ui.driver.title.startswith("Devices"), "the devices settings")

    def policy() -> list[str]:
        found = ui.all('select[aria-label="Mode"], select[aria-label="Fallback"]')
        return [str(e.get_attribute("value")) for e in found]

    # Security, Ask and Ask fallback.
    ui.until(lambda: policy() == ["deny", "off", "deny"], "the deny policy")
    Select(ui.find('select[aria-label="Mode"]')).select_by_value("full")
    save = next(b for b in ui.all("button") if b.text.strip() == "Save" and b.is_displayed())
    save.click()
    ui.until(lambda: "clawgate has no exec tool" in body_text(ui), "the refusal shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"exec.approvals.set": "INVALID_REQUEST"}


def test_a_channel_s_set_up_says_clawgate_has_no_channels(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Channels page's "Set up" of a channel (`wizard.start`, which said `unknown
    method`): refused, and the page says why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/channels")
    ui.until(lambda: ui.driver.title.startswith("Channels"), "the channels view")
    set_up = ui.until(
        lambda: [b for b in ui.all("button") if b.text.strip() == "Set up" and b.is_displayed()],
        "a channel's Set up",
    )
    set_up[0].click()
    ui.until(lambda: "clawgate has no channels" in body_text(ui), "the reason shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"wizard.start": "UNAVAILABLE"}, refused_calls(gateway)


def test_a_worktree_clean_up_finds_nothing_to_clean(ui: Page, gateway: GatewayProcess) -> None:
    """The Worktrees page's "Clean up now" (`worktrees.gc`, which said `unknown method`)."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/worktrees")
    ui.until(lambda: answered(gateway, "worktrees.list"), "the worktrees listed")
    clean = ui.until(
        lambda: [b for b in ui.all("button") if b.text.strip() == "Clean up now"],
        "the Clean up now button",
    )
    clean[0].click()
    ui.until(lambda: "worktrees.gc" in calls(gateway, ok=True), "the clean-up")
    ui.until(lambda: "No managed worktrees." in body_text(ui), "still none")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {}, refused_calls(gateway)


def test_continue_with_github_says_authorization_could_not_start(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Profile settings' "Change System GitHub", then "Continue with GitHub"
    (`tools.github.authorize.start`, which said `unknown method`): OpenClaw's failure without
    its GitHub device login."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/profile")
    ui.until(lambda: answered(gateway, "tools.github.status"), "the GitHub identity")

    button(ui, "Change System GitHub").click()
    button(ui, "Continue with GitHub").click()
    ui.until(lambda: "GitHub authorization could not start" in body_text(ui), "the failure")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    refused = refused_calls(gateway)
    assert refused == {"tools.github.authorize.start": "UNAVAILABLE"}, refused


def test_a_github_token_set_up_says_there_is_no_secret_store(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Profile settings' "Change System GitHub", "Use a PAT instead", a token saved
    (`secrets.store.set`, which said `unknown method`): refused, and the page says why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/profile")
    ui.until(lambda: answered(gateway, "tools.github.status"), "the GitHub identity")

    button(ui, "Change System GitHub").click()
    button(ui, "Use a PAT instead").click()
    shown(ui, 'input[type="password"]').send_keys("ghp_" + "a" * 36)
    button(ui, "Save Identity").click()
    ui.until(lambda: "clawgate has no secret store" in body_text(ui), "the reason shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"secrets.store.set": "UNAVAILABLE"}, refused_calls(gateway)


def test_an_agent_s_files_say_it_has_no_workspace(ui: Page, gateway: GatewayProcess) -> None:
    """The Agents settings' Files tab (`agents.files.list`, which said `unknown method`):
    refused, and the tab says why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/agents")
    # The tab is inside the page's shadow DOM: found there.
    files_tab = """
        const walk = (root) => {
          for (const el of root.querySelectorAll('button, [role=tab], wa-tab')) {
            if (el.innerText.trim() === 'Files' && el.getClientRects().length) return el;
          }
          for (const el of root.querySelectorAll('*')) {
            const found = el.shadowRoot && walk(el.shadowRoot);
            if (found) return found;
          }
          return null;
        };
        return walk(document);
    """
    ui.until(lambda: ui.driver.execute_script(files_tab), "the Files tab").click()
    ui.until(lambda: "clawgate's agents have no workspace" in body_text(ui), "the reason shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"agents.files.list": "UNAVAILABLE"}, refused_calls(gateway)


def test_a_new_worktree_says_clawgate_has_none(ui: Page, gateway: GatewayProcess) -> None:
    """The Worktrees page's "New worktree": a repository typed (its branches asked for with
    `worktrees.branches`), then Create (`worktrees.create`), both of which said `unknown
    method`: refused, and the page says why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/worktrees")
    ui.until(lambda: answered(gateway, "worktrees.list"), "the worktrees listed")

    button(ui, "New worktree").click()
    shown(ui, 'input[aria-label="Repository"]').send_keys("/srv/repo\t")
    ui.until(lambda: answered(gateway, "worktrees.branches"), "the branches asked for")
    button(ui, "Create").click()
    ui.until(lambda: "clawgate has no managed worktrees" in body_text(ui), "the reason shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    refused = refused_calls(gateway)
    assert refused == {"worktrees.branches": "UNAVAILABLE", "worktrees.create": "UNAVAILABLE"}


def test_the_app_finds_its_page_still_there_before_it_reloads(
    ui: Page, gateway: GatewayProcess
) -> None:
    """Before it reloads to recover (a chunk that failed to load), the app asks whether its
    page is still there: `fetch(location.href, {method: "HEAD"})`, Accept `*/*`. It got the
    JSON 404 (the console's `GET /settings/connection 404`), and did not reload; OpenClaw's
    gateway answers it with the page."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/connection")
    ui.until(lambda: ui.driver.title.startswith("Gateway"), "the connection settings")
    probe = """
        const done = arguments[arguments.length - 1];
        fetch(window.location.href, {method: 'HEAD', cache: 'no-store'})
          .then((r) => done([r.status, r.headers.get('content-type')]))
          .catch((e) => done([0, String(e)]));
    """
    assert ui.driver.execute_async_script(probe) == [200, "text/html; charset=utf-8"]
    assert console_errors(ui) == []


def test_an_api_key_set_on_the_models_page_says_where_keys_live(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Models page's "Set API key" of a provider, a key saved (`models.authSetApiKey`,
    which said `unknown method`): refused, and the page says why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/model-providers")
    ui.until(lambda: "Credentials for main" in body_text(ui), "the provider access")

    button(ui, "Set API key").click()
    shown(ui, 'input[type="password"]').send_keys("sk-" + "a" * 32)
    button(ui, "Save").click()
    ui.until(lambda: "clawgate keeps no model credentials" in body_text(ui), "the reason shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"models.authSetApiKey": "UNAVAILABLE"}


def test_a_memory_search_says_there_is_no_memory_plugin(ui: Page, gateway: GatewayProcess) -> None:
    """The Memory settings' Memories tab: its search (`memory.search`), which said "Update
    the gateway to search memories" without it, is refused as OpenClaw refuses it with no
    memory plugin, and the tab says so."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/memory")
    ui.until(lambda: "Memory needs attention" in body_text(ui), "the memory overview")
    tab = """
        const walk = (root) => {
          for (const el of root.querySelectorAll('button, [role=tab], wa-tab')) {
            if (el.innerText.trim() === 'Memories' && el.getClientRects().length) return el;
          }
          for (const el of root.querySelectorAll('*')) {
            const found = el.shadowRoot && walk(el.shadowRoot);
            if (found) return found;
          }
          return null;
        };
        return walk(document);
    """
    ui.until(lambda: ui.driver.execute_script(tab), "the Memories tab").click()
    shown(ui, "#memory-search-input").send_keys("release notes\n")
    ui.until(lambda: "memory plugin unavailable" in body_text(ui), "the reason shown")
    assert "Update the gateway" not in body_text(ui)
    assert console_errors(ui) == []
    # Its probe of the memory plugin's config is not found, as in the memory settings' test.
    refused = refused_calls(gateway)
    assert refused == {"memory.search": "UNAVAILABLE", "config.schema.lookup": "INVALID_REQUEST"}


def test_a_new_automation_says_clawgate_has_no_scheduler(ui: Page, gateway: GatewayProcess) -> None:
    """The Automations page's "New automation", filled in and created (`cron.add`, which said
    `unknown method`): refused, and the form says why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/automations")

    button(ui, "New automation").click()
    shown(ui, 'textarea[placeholder="Describe what OpenClaw should do..."]').send_keys("Brief me")
    shown(ui, 'input[placeholder="Morning brief"]').send_keys("Morning brief")
    shown(ui, 'input[placeholder="30"]').send_keys("30")
    button(ui, "Create automation").click()
    ui.until(lambda: answered(gateway, "cron.add"), "the automation sent")
    ui.until(lambda: "clawgate has no scheduler" in body_text(ui), "the reason shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"cron.add": "UNAVAILABLE"}, refused_calls(gateway)


def test_on_this_gateway_finds_nothing_to_set_up(ui: Page, gateway: GatewayProcess) -> None:
    """The Models page's "Connect provider", then "On this Gateway": it looks for AI access on
    the gateway's host to set up (`openclaw.setup.detect`), and without that method it said
    "The Gateway is running an older OpenClaw version". clawgate sets none up: nothing found,
    nothing offered, and no warning."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/model-providers")
    ui.until(lambda: "Credentials for main" in body_text(ui), "the provider access")

    button(ui, "Connect provider").click()
    button(ui, "On this Gateway").click()
    ui.until(lambda: "Find existing connections" in body_text(ui), "the gateway's setup")
    ui.until(lambda: "openclaw.setup.detect" in calls(gateway, ok=True), "the detection")
    ui.until(lambda: button(ui, "Check again"), "the detection shown")
    assert "older OpenClaw version" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {}, refused_calls(gateway)


def test_check_model_says_clawgate_sends_no_check_turn(ui: Page, gateway: GatewayProcess) -> None:
    """The model-setup card's "Check model" (`openclaw.setup.verify`): clawgate lacked the
    method, so the card offered no check. OpenClaw asks the model for a quick reply; clawgate
    sends no turn of its own, and the card says so, naming the configured model."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/model-setup?firstRun=explicit")
    ui.until(lambda: "Selected model" in body_text(ui), "the model-setup card")
    button(ui, "Check model").click()
    ui.until(lambda: "clawgate sends no check turn" in body_text(ui), "the reason")
    assert "echo/echo is configured" in body_text(ui)
    assert console_errors(ui) == []
    assert calls(gateway, ok=True).get("openclaw.setup.verify", "no") is None
    assert refused_calls(gateway) == {}, refused_calls(gateway)


def shadow_button(ui: Page, text: str) -> Any:
    """The shown button or tab reading `text`, inside the page's shadow DOM too."""
    find = """
        const walk = (root) => {
          for (const el of root.querySelectorAll('button, [role=tab], wa-tab')) {
            if (el.innerText.trim() === arguments[0] && el.getClientRects().length) return el;
          }
          for (const el of root.querySelectorAll('*')) {
            const found = el.shadowRoot && walk(el.shadowRoot);
            if (found) return found;
          }
          return null;
        };
        return walk(document);
    """
    return ui.until(lambda: ui.driver.execute_script(find, text), text)


def test_the_dreams_tab_shows_dreaming_off(ui: Page, gateway: GatewayProcess) -> None:
    """The Memory settings' Dreams tab said "Dreaming On": it takes whether dreaming is on
    from `doctor.memory.status`, and without its `dreaming` from the config, where no
    `plugins` section reads as on. clawgate dreams nothing: off, and each phase off."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/memory")
    ui.until(lambda: "Memory needs attention" in body_text(ui), "the memory overview")
    shadow_button(ui, "Dreams").click()
    ui.until(lambda: "DREAMING OFF" in body_text(ui).upper(), "dreaming off")
    phases = lambda: [e.text for e in ui.all(".dreams__phase--off")]  # noqa: E731
    ui.until(lambda: len(phases()) == 3, "the three phases off")
    assert "DREAMING ON" not in body_text(ui).upper()
    assert console_errors(ui) == []
    # Its probe of the memory plugin's config is not found, as in the memory settings' test.
    assert refused_calls(gateway) == {"config.schema.lookup": "INVALID_REQUEST"}


def test_an_agent_s_tools_are_none_of_openclaw_s(ui: Page, gateway: GatewayProcess) -> None:
    """The Agents settings' Tools tab showed OpenClaw's bundled tool catalog (58 tools, from
    `exec` to `tts`), which it falls back to when `tools.catalog` lists no group. clawgate's
    agents have no tools of the gateway's: one group, empty, saying so."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/agents")
    shadow_button(ui, "Tools").click()
    ui.until(lambda: "tools.catalog" in calls(gateway, ok=True), "the catalog")
    groups = lambda: [e.text for e in ui.all(".agent-tools-group__summary")]  # noqa: E731
    ui.until(lambda: len(groups()) == 1, "one group")
    assert "No gateway tools" in groups()[0], groups()
    text = body_text(ui)
    assert "0/0 enabled" in text, text
    # The tab's profile is read from the config (OpenClaw's default, full, without `tools`):
    # it offered OpenClaw's presets too (Minimal, Coding, Messaging), which clawgate has none
    # of. Its only one is full (no tool policy: a client's tools all pass), the one offered,
    # and the notice says so and that the tab saves nothing (its presets and Save disabled).
    ui.until(lambda: "its only tool profile is full" in body_text(ui), "the notice")
    presets = """
        const found = [];
        const walk = (root) => {
          for (const el of root.querySelectorAll('button')) {
            if (el.getClientRects().length) found.push(el.innerText.trim());
          }
          for (const el of root.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot);
        };
        walk(document);
        return found.filter((t) => ["Minimal", "Coding", "Messaging", "Full"].includes(t));
    """
    assert ui.driver.execute_script(presets) == ["Full"]
    for label in ("Full", "Save"):
        assert ui.driver.execute_script("return arguments[0].disabled", shadow_button(ui, label))
    for tool in ("exec", "web_search", "tts"):
        assert f"\n{tool}\n" not in text, tool
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {}, refused_calls(gateway)


def test_a_secret_saved_on_the_secrets_page_says_there_is_no_secret_store(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Secrets settings list the store (`secrets.store.list`, which it did not find, so it
    said "Gateway/admin required." and listed nothing, and after a save said `unknown
    method`): none. A secret added and saved (`secrets.store.set`) is refused, saying why."""
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/secrets")
    ui.until(lambda: "secrets.store.list" in calls(gateway, ok=True), "the store listed")
    assert "Gateway/admin required." not in body_text(ui)

    button(ui, "Add").click()
    fields = "openclaw-modal-dialog input:not([type]), openclaw-modal-dialog textarea"
    name, value = ui.until(lambda: [e for e in ui.all(fields) if e.is_displayed()], "the form")
    name.send_keys("API_TOKEN")
    value.send_keys("s3cret")
    button(ui, "Save").click()
    ui.until(lambda: "clawgate has no secret store" in body_text(ui), "the reason shown")
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"secrets.store.set": "UNAVAILABLE"}, refused_calls(gateway)


def test_enabling_notifications_says_clawgate_sends_none(ui: Page, gateway: GatewayProcess) -> None:
    """The Notifications settings' "Enable notifications", the browser's permission given: it
    asks for the gateway's Web Push key (`push.web.vapidPublicKey`, which said `unknown
    method`). clawgate sends no push notifications: refused, and the page says why."""
    ui.driver.execute_cdp_cmd(
        "Browser.grantPermissions", {"origin": gateway.url, "permissions": ["notifications"]}
    )
    try:
        ui.driver.get(f"{gateway.url}/#token={TOKEN}")
        composer(ui)
        ui.until(lambda: "Connected" in body_text(ui), "the connected state")
        ui.driver.get(f"{gateway.url}/settings/notifications")
        button(ui, "Enable notifications").click()
        ui.until(lambda: "clawgate sends no push notifications" in body_text(ui), "the reason")
    finally:
        ui.driver.execute_cdp_cmd("Browser.resetPermissions", {})
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    refused = refused_calls(gateway)
    assert refused == {"push.web.vapidPublicKey": "UNAVAILABLE"}, refused


def test_a_cloud_worker_profile_saved_is_refused_as_invalid_config(
    ui: Page, gateway: GatewayProcess
) -> None:
    """The Cloud workers settings' "Add profile" and "Save pool" save OpenClaw's `cloudWorkers`
    config with `config.patch`. clawgate has no cloud workers and its config no such section:
    refused as an invalid config (issue `cloudWorkers: unknown key`), the file untouched, and
    the page says "invalid config"."""
    config = ui.gateway_config_path()
    before = config.read_bytes()
    ui.driver.get(f"{gateway.url}/#token={TOKEN}")
    composer(ui)
    ui.until(lambda: "Connected" in body_text(ui), "the connected state")
    ui.driver.get(f"{gateway.url}/settings/cloud-workers")

    button(ui, "Add profile").click()
    shown(ui, 'input[aria-label="Profile ID"]').send_keys("linux-small")
    shown(ui, 'input[aria-label="Crabbox backend"]').send_keys("hetzner")
    shown(ui, 'input[aria-label="Machine class"]').send_keys("cx22")
    button(ui, "Save").click()
    ui.until(lambda: "Profile needs attention" in body_text(ui), "the profile refused")
    button(ui, "Cancel").click()
    shown(ui, 'input[aria-label="Prepared pool"]').send_keys("2")
    button(ui, "Save pool").click()
    ui.until(lambda: patches(gateway) == 2, "both saves")
    ui.until(lambda: "invalid config" in body_text(ui), "the pool refused")
    assert config.read_bytes() == before
    assert "unknown method" not in body_text(ui)
    assert console_errors(ui) == []
    assert refused_calls(gateway) == {"config.patch": "INVALID_REQUEST"}, refused_calls(gateway)


def patches(gateway: GatewayProcess) -> int:
    """How many `config.patch` calls the gateway answered."""
    count = 0
    for line in list(gateway.lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        count += record.get("event") == "ws_call" and record.get("method") == "config.patch"
    return count
