"""OpenClaw's own clients against the gateway, unchanged (ws-protocol.md §12): its command
line's `gateway call`, and its terminal UI on a pseudo-terminal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.openclaw_clients import TOKEN, OpenClaw, Terminal
from tests.support.process import GatewayProcess
from tests.support.process_client import connect_ws

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def ws_url(gateway: GatewayProcess) -> str:
    return gateway.url.replace("http://", "ws://", 1)


class TestCommandLine:
    def test_health(self, openclaw: OpenClaw, gateway: GatewayProcess) -> None:
        health = openclaw.call(ws_url(gateway), "health")
        assert health["ok"] is True
        assert health["defaultAgentId"] == "main"

    def test_an_agent_turn_then_its_history_and_its_session(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        url, key = ws_url(gateway), "agent:main:cli"
        turn = {"message": "hi there", "sessionKey": key, "idempotencyKey": "cli-1"}
        answer = openclaw.call(url, "agent", turn, final=True)
        assert answer["runId"] == "cli-1"
        assert answer["status"] == "ok"
        assert answer["result"]["payloads"][0]["text"] == "[turn 1] hi there"
        history = openclaw.call(url, "chat.history", {"sessionKey": key})
        assert [(m["role"], m["content"]) for m in history["messages"]] == [
            ("user", "hi there"),
            ("assistant", [{"type": "text", "text": "[turn 1] hi there"}]),
        ]
        listed = openclaw.call(url, "sessions.list", {})
        assert key in [row["key"] for row in listed["sessions"]]

    def test_agent_by_session_id_alone_is_refused_not_run_in_the_main_session(
        self, openclaw: OpenClaw, gateway: GatewayProcess, tmp_path: Path
    ) -> None:
        """`openclaw agent --session-id` names a session by its id, which clawgate does not
        look up: the turn is refused, where it went to the main session unasked."""
        remote = openclaw.remote(tmp_path, ws_url(gateway))
        done = remote.run("agent", "--message", "hi", "--session-id", "some-id")
        assert done.returncode != 0
        assert "sessionId is not supported" in done.stdout + done.stderr
        history = openclaw.call(ws_url(gateway), "chat.history", {"sessionKey": "main"})
        assert "hi" not in [m["content"] for m in history["messages"]]
        reply = remote.run("agent", "--message", "hi", "--session-key", "agent:main:by-key")
        assert (reply.returncode, reply.stdout.strip()) == (0, "[turn 1] hi")

    def test_agent_new_and_reset_start_the_session_again(
        self, openclaw: OpenClaw, gateway: GatewayProcess, tmp_path: Path
    ) -> None:
        """`openclaw agent --message /new` (or `/reset <text>`) resets the session, as on
        OpenClaw, instead of sending the command to the model as a message."""
        url, key = ws_url(gateway), "agent:main:renewed"
        remote = openclaw.remote(tmp_path, url)
        first = remote.run("agent", "--message", "before", "--session-key", key)
        assert first.stdout.strip() == "[turn 1] before", first
        new = remote.run("agent", "--message", "/new", "--session-key", key)
        assert (new.returncode, new.stdout.strip()) == (0, "✅ New session started."), new
        assert openclaw.call(url, "chat.history", {"sessionKey": key})["messages"] == []
        again = remote.run("agent", "--message", "/reset after", "--session-key", key)
        assert (again.returncode, again.stdout.strip()) == (0, "[turn 1] after"), again

    def test_sessions_delete_deletes_the_session_it_listed(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """`openclaw sessions delete` sends the id of the session it listed beside the key."""
        url, key = ws_url(gateway), "agent:main:to-delete"
        openclaw.call(url, "sessions.patch", {"key": key, "label": "doomed"})
        done = openclaw.run("sessions", "delete", key, "--yes", "--url", url, "--token", TOKEN)
        assert (done.returncode, done.stdout.strip()) == (0, f"Deleted session {key}."), done
        listed = openclaw.call(url, "sessions.list", {})
        assert key not in [row["key"] for row in listed["sessions"]]

    def test_sessions_delete_finds_a_session_beyond_the_cli_s_first_page(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """The CLI looks for the keys 200 sessions at a time, paging on with `offset`."""
        keys = [f"agent:main:page-{i:03}" for i in range(201)]  # page-000 the oldest
        asyncio.run(label_sessions(gateway.url, keys))
        url = ws_url(gateway)
        done = openclaw.run("sessions", "delete", keys[0], "--yes", "--url", url, "--token", TOKEN)
        assert (done.returncode, done.stdout.strip()) == (0, f"Deleted session {keys[0]}."), done

    def test_sessions_archive_archives_then_delete_deletes_the_archived_session(
        self, openclaw: OpenClaw, gateway: GatewayProcess, tmp_path: Path
    ) -> None:
        """`openclaw sessions archive` lists the sessions with `archived: "all"` and patches
        `archived` with the session id it listed; a second archive finds it archived, and
        `openclaw sessions delete` of an archived session sends `archivedOnly`."""
        url, key = ws_url(gateway), "agent:main:to-archive"
        turn = {"message": "hi", "sessionKey": key, "idempotencyKey": "ar"}
        openclaw.call(url, "agent", turn, final=True)
        done = openclaw.run("sessions", "archive", key, "--url", url, "--token", TOKEN)
        assert (done.returncode, done.stdout.strip()) == (0, f"Archived session {key}."), done
        listed = openclaw.call(url, "sessions.list", {})
        assert key not in [row["key"] for row in listed["sessions"]]
        archived = openclaw.call(url, "sessions.list", {"archived": True})["sessions"]
        assert [(row["key"], row["archiveReason"]) for row in archived] == [(key, "manual")]
        again = openclaw.run("sessions", "archive", key, "--url", url, "--token", TOKEN)
        assert again.stdout.strip() == f"Session {key} is already archived.", again
        remote = openclaw.remote(tmp_path, url)
        refused = remote.run("agent", "--message", "more", "--session-key", key)
        assert refused.returncode != 0
        assert "is archived. Restore it before starting new work." in (
            refused.stdout + refused.stderr
        ), refused
        deleted = openclaw.run("sessions", "delete", key, "--yes", "--url", url, "--token", TOKEN)
        assert (deleted.returncode, deleted.stdout.strip()) == (0, f"Deleted session {key}.")
        everything = openclaw.call(url, "sessions.list", {"archived": "all"})["sessions"]
        assert key not in [row["key"] for row in everything]

    def test_a_session_is_labelled_with_the_write_scope_the_cli_asks_for(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """OpenClaw's gateway takes a label from `operator.write`; its CLI asks for no more."""
        url, key = ws_url(gateway), "agent:main:labelled"
        patched = openclaw.call(url, "sessions.patch", {"key": key, "label": "From the CLI"})
        assert (patched["ok"], patched["entry"]["label"]) == (True, "From the CLI")


async def label_sessions(url: str, keys: list[str]) -> None:
    """A session for each key, in order, over one WebSocket."""
    async with aiohttp.ClientSession() as http:
        ws = await connect_ws(http, url, TOKEN)
        for i, key in enumerate(keys):
            patch = {"key": key, "label": f"page {i}"}
            request = {"type": "req", "id": key, "method": "sessions.patch", "params": patch}
            await ws.send_json(request)
            while (frame := await ws.receive_json(timeout=10)).get("type") != "res":
                pass
            assert frame["ok"] is True, frame
        await ws.close()


class TestUsage:
    def test_usage_cost_counts_the_tokens_and_says_their_cost_is_not_known(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """`openclaw gateway usage-cost`: clawgate knows tokens, not prices; every turn is an
        entry whose cost is missing, as OpenClaw reports a model without a price."""
        url = ws_url(gateway)
        turn = {"message": "what does it cost", "sessionKey": "cost", "idempotencyKey": "cost-1"}
        openclaw.call(url, "agent", turn, final=True)
        usage = openclaw.call(url, "usage", {"days": 1, "agentId": "main"})["totals"]
        cost = openclaw.json(url, "gateway", "usage-cost", "--days", "1")
        assert cost["days"] == 1
        assert cost["totals"] == {
            "input": usage["inputTokens"],
            "output": usage["outputTokens"],
            "cacheRead": 0,
            "cacheWrite": 0,
            "totalTokens": usage["totalTokens"],
            "totalCost": 0,
            "inputCost": 0,
            "outputCost": 0,
            "cacheReadCost": 0,
            "cacheWriteCost": 0,
            "missingCostEntries": usage["turns"],
        }
        assert [day["totalTokens"] for day in cost["daily"]] == [usage["totalTokens"]]


class TestFeaturesClawgateDoesNotHave:
    """Commands about OpenClaw features clawgate lacks print their empty state, not an error
    (ws-protocol.md §12)."""

    @pytest.mark.parametrize(
        ("command", "printed"),
        [
            (("nodes", "list"), {"pending": [], "paired": []}),
            (
                ("cron", "list"),
                {
                    "jobs": [],
                    "snapshotRevision": "sha256:T1PNoYwrqgwDVLtfmj7L5e0Sq02OEbqHPC8RFhICuUU",
                    "total": 0,
                    "offset": 0,
                    "limit": 200,
                    "hasMore": False,
                    "nextOffset": None,
                },
            ),
            (("cron", "status"), {"enabled": False, "jobs": 0, "nextWakeAtMs": None}),
            (("system", "heartbeat", "last"), None),
            (("approvals", "pending"), {"approvals": []}),
            (
                ("gateway", "stability"),
                {"capacity": 0, "count": 0, "dropped": 0, "events": [], "summary": {"byType": {}}},
            ),
        ],
    )
    def test_the_command_prints_the_empty_state(
        self,
        openclaw: OpenClaw,
        gateway: GatewayProcess,
        command: tuple[str, ...],
        printed: object,
    ) -> None:
        assert openclaw.json(ws_url(gateway), *command) == printed

    def test_the_runs_of_an_automation_say_there_is_none_such(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        url = ws_url(gateway)
        done = openclaw.run("cron", "runs", "nightly", "--url", url, "--token", TOKEN)
        assert done.returncode != 0
        assert "Automation not found: nightly" in done.stdout + done.stderr, done

    def test_a_node_push_test_prints_openclaw_s_answer_for_a_node_without_push(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """`push.test` (an APNs test push to an iOS node) said `unknown method`."""
        params = json.dumps({"nodeId": "phone-1"})
        url = ws_url(gateway)
        done = openclaw.run("gateway", "call", "push.test", "--params", params, "--url", url,
                            "--token", TOKEN)  # fmt: skip
        assert done.returncode != 0
        printed = done.stdout + done.stderr
        assert "node phone-1 has no APNs registration (connect iOS node first)" in printed, done
        assert "clawgate pairs no nodes" in printed, done

    def test_skills_and_hooks_list_none(
        self, openclaw: OpenClaw, gateway: GatewayProcess, tmp_path: Path
    ) -> None:
        """clawgate's agents have no skills or hooks (they have no workspace of files)."""
        remote = openclaw.remote(tmp_path, ws_url(gateway))
        for command, listed in (("skills", "skills"), ("hooks", "hooks")):
            done = remote.run(command, "list", "--json")
            assert done.returncode == 0, (done.stdout, done.stderr)
            assert json.loads(done.stdout)[listed] == []

    def test_plugin_approvals_are_listed_with_the_approvals_scope(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """The CLI asks for the scope OpenClaw's gateway checks, `operator.approvals` alone."""
        assert openclaw.call(ws_url(gateway), "plugin.approval.list") == []

    def test_questions_are_listed_with_the_questions_scope(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        """The CLI asks for `operator.questions` alone, the scope OpenClaw checks."""
        assert openclaw.call(ws_url(gateway), "question.list") == {"questions": []}


@pytest.fixture
def tui(
    openclaw: OpenClaw, gateway: GatewayProcess, request: pytest.FixtureRequest
) -> Iterator[Terminal]:
    """The TUI on a session of the test's own."""
    session = request.node.name.removeprefix("test_")[:40]
    terminal = Terminal(openclaw, "--url", ws_url(gateway), "--token", TOKEN, "--session", session)
    try:
        terminal.wait_for("gateway connected")
        yield terminal
    finally:
        terminal.close()


def assert_idle(tui: Terminal) -> None:
    """The TUI shows no run going: busy, it redraws its status line every second
    ("<phrase>… • 3s | connected"); idle, it draws nothing."""
    tui.drawn_within(1.5)
    assert "connected" not in tui.drawn_within(1.5), tui.text[-2000:]
    assert "agent is busy" not in tui.text


class TestTerminalUi:
    def test_each_turn_ends_and_the_next_one_is_taken(self, tui: Terminal) -> None:
        tui.type("hello")
        seen = tui.wait_for("[turn 1] hello")
        assert_idle(tui)
        tui.type("again")
        tui.wait_for("[turn 2] again", seen)
        assert_idle(tui)

    def test_reset_starts_the_session_again(self, tui: Terminal) -> None:
        tui.type("before the reset")
        seen = tui.wait_for("] before the reset")
        assert_idle(tui)
        tui.type("/reset")
        # Until the reset is done the TUI refuses a message ("session change in progress");
        # then it draws the whole screen again.
        seen = tui.wait_for("openclaw tui - ws://", seen)
        tui.type("after")
        tui.wait_for("[turn 1] after", seen)  # turn 2 of the session before the reset
        assert_idle(tui)
