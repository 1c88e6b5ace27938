"""The Control UI showing what someone else chose: a model's reply, its tool calls, a
session's label or key. Text that is long, unbroken or full of bidi controls stays text in
its place: it does not widen the page, reorder the UI's own words or stall the page."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import (
    TOKEN,
    Page,
    config_with_upstream,
    set_viewport,
    upstream_on_a_thread,
)
from tests.support.upstreams import FakeOpenAI, FakeToolCall, Raw, Stream, openai_sse

pytestmark = pytest.mark.browser

UNBROKEN = "x" * 100_000


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with upstream_on_a_thread(Stream(("ok",))) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway_config(upstream: FakeOpenAI) -> str:
    # An agent whose name holds an override and a zero-width space (JSON5 escapes).
    named = '{ id: "named", name: "team\\u200b\\u202eevil" }'
    # And one whose name is a single word of 300 letters.
    wide = f'{{ id: "wide", name: "{UNBROKEN[:300]}" }}'
    config = config_with_upstream(upstream)
    return config.replace(
        '{ id: "ops", name: "Operations" },',
        f'{{ id: "ops", name: "Operations" }}, {named}, {wide},',
    )


def overflow(page: Page, css: str) -> int:
    """How far the element's content reaches past its width, in pixels."""
    return int(page.driver.execute_script(
        "const n = document.querySelector(arguments[0]); return n.scrollWidth - n.clientWidth",
        css))  # fmt: skip


class TestLongText:
    def test_unbroken_tool_call_and_reply_wrap_in_the_transcript(
        self, page: Page, upstream: FakeOpenAI
    ) -> None:
        call = FakeToolCall("call_1", UNBROKEN[:60], (json.dumps({"a": UNBROKEN}),))
        upstream.script(Stream((UNBROKEN,), tool_calls=(call,)))
        page.connected()
        page.click("#chat-new")
        page.type("#chat-input", "go")
        page.click("#chat-send")
        page.until(lambda: page.find(".bubble.assistant:not(.streaming) details.tool"), "the call")
        for summary in page.all("details.tool summary"):
            summary.click()
        assert overflow(page, "#transcript") == 0


RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: what follows it is shown reversed


def patch_label(page: Page, key: str, label: str) -> None:
    """A session stored with this label by another client of the gateway."""
    page.driver.execute_async_script(
        """
        const [token, key, label, done] = arguments;
        const { Gateway } = await import("/ui/gateway.js");
        const gw = new Gateway();
        await gw.start(`ws://${location.host}`, { token });
        await gw.request("sessions.patch", { key, label });
        gw.stop();
        done();
        """,
        TOKEN,
        key,
        label,
    )


def lefts(page: Page, where: Any, word: str) -> list[float]:
    """Where each letter of `word`, in the text of the element (or the first one `where`
    selects), is drawn (its left edge)."""
    return list(page.driver.execute_script(
        """
        const [where, word] = arguments;
        const node = (typeof where === "string" ? document.querySelector(where) : where).firstChild;
        const at = node.textContent.indexOf(word);
        return [...word].map((_, i) => {
          const range = document.createRange();
          range.setStart(node, at + i);
          range.setEnd(node, at + i + 1);
          return range.getBoundingClientRect().left;
        });
        """,
        where, word))  # fmt: skip


class TestBidi:
    def test_an_override_in_a_key_does_not_reverse_the_confirm_question(self, page: Page) -> None:
        # "Reset agent:main:‮x? Its transcript is archived…": all after the key was drawn
        # right to left, the question read backwards.
        page.connected()
        key = f"agent:main:{RLO}reversed"
        patch_label(page, key, "reversed")
        page.go("sessions")
        page.type("#sessions-search", "reversed")
        page.visible(f'#sessions-table tr[data-key="{key}"] button').click()
        page.click("#session-reset")
        page.visible("#confirm")
        drawn = lefts(page, "#confirm-text", "archived")
        page.click("#confirm button[value=cancel]")
        assert drawn == sorted(drawn)

    def test_an_override_in_a_name_is_shown_not_obeyed(self, page: Page) -> None:
        # A key drawn as "agent:main:exe.txt" that is "agent:main:‮txt.exe"; a label that
        # reversed the key after it in the chat's list of sessions.
        page.connected()
        key = f"agent:main:{RLO}txt.exe"
        patch_label(page, key, f"{RLO}label")
        page.go("sessions")
        page.type("#sessions-search", "txt.exe")
        row = page.visible(f'#sessions-table tr[data-key="{key}"]')
        assert RLO not in row.text
        assert "U+202E" in row.text
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        checked = "#chat-session option:checked"
        page.until(lambda: page.find(checked).get_attribute("value") == key, "the session")
        text = page.find(checked).get_attribute("textContent")
        assert RLO not in text
        assert text.count("U+202E") == 2

    @pytest.mark.parametrize("invisible", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"])
    def test_an_invisible_character_in_a_name_is_shown(self, page: Page, invisible: str) -> None:
        # "agent:main:admin" and "agent:main:ad<U+200B>min" were drawn alike: two sessions,
        # one shown as the other.
        page.connected()
        key = f"agent:main:ad{invisible}min-{ord(invisible):x}"
        patch_label(page, key, f"lab{invisible}el")
        page.go("sessions")
        page.type("#sessions-search", f"min-{ord(invisible):x}")
        row = page.visible(f'#sessions-table tr[data-key="{key}"]')
        code = f"U+{ord(invisible):04X}"
        assert invisible not in row.get_attribute("textContent")
        assert row.get_attribute("textContent").count(code) == 2

    @pytest.mark.parametrize(
        "drawn",
        [
            "\U0001f469\u200d\U0001f4bb",  # woman technologist: a ZWJ emoji sequence
            "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag: VS16 before the joiner
            "\U0001f44b\U0001f3fd\u200d\u2642\ufe0f",  # a skin tone before it
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ parts letters
            "\u0915\u094d\u200d\u0937",  # Devanagari: ZWJ after a virama
        ],
    )
    def test_a_joiner_that_joins_or_parts_what_is_drawn_stays(self, page: Page, drawn: str) -> None:
        # An emoji of several joined (a technologist, a flag) or a Persian word in a label
        # read "👩⟨U+200D⟩💻": the joiner there is drawn (one glyph, or letters
        # parted), not a character drawn as nothing that makes a name pass for another.
        page.connected()
        key = f"agent:main:joined-{ord(drawn[-1]):x}-{len(drawn)}"
        patch_label(page, key, f"{drawn} label")
        page.go("sessions")
        page.type("#sessions-search", key.removeprefix("agent:main:"))
        row = page.visible(f'#sessions-table tr[data-key="{key}"]')
        assert row.find_element(page.by.CSS_SELECTOR, "button").get_attribute("textContent") == (
            f"{drawn} label"
        )


# Every text `#chat-error` has held, in `window.alerts`.
RECORD_ALERTS = """
window.alerts = [];
new MutationObserver(() => {
  const node = document.getElementById("chat-error");
  if (!node.hidden && node.textContent) window.alerts.push(node.textContent);
}).observe(document.getElementById("chat-error"), {childList: true, characterData: true,
  subtree: true, attributes: true});
"""


class TestLinkText:
    def test_a_link_to_no_agent_puts_none_of_its_text_in_an_alert(self, page: Page) -> None:
        # `#chat/agent:<any text>:x` showed "The gateway has no agent '<any text>'.": a link's
        # author wrote, in the page's own alert, words the user would take for the gateway's.
        page.connected()
        page.until(lambda: page.find("#chat-agent option"), "the agents")
        page.driver.execute_script(RECORD_ALERTS)
        words = "your session expired, log in again at evil.example"
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/agent:{words}:x")
        page.until(lambda: page.driver.execute_script("return window.alerts.length"), "an alert")
        alerts = page.driver.execute_script("return window.alerts")
        assert all("evil" not in alert for alert in alerts), alerts
        assert page.text("#chat-error") == "The link names no agent of this gateway."


# Counts, in `window.parsed`, the characters the page hands JSON.parse, and in
# `window.received` those of the frames it receives: the page's own parsing beside the
# frames' is its work per byte that arrives.
COUNT_PARSING = """
const parse = JSON.parse;
window.parsed = 0;
window.received = 0;
JSON.parse = function (text, ...rest) {
  window.parsed += String(text).length;
  return parse.call(this, text, ...rest);
};
const listen = WebSocket.prototype.addEventListener;
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type === "message") {
    listen.call(this, "message", (message) => { window.received += message.data.length; });
  }
  return listen.call(this, type, listener, ...rest);
};
"""


class TestLargeToolCall:
    def test_arguments_streamed_in_many_pieces_are_parsed_once_not_once_a_piece(
        self, page: Page, upstream: FakeOpenAI
    ) -> None:
        # Each piece of a call's arguments had all of them so far parsed again (to show them
        # indented once whole): a megabyte in thousands of pieces was gigabytes of parsing.
        arguments = json.dumps({"a": "y" * 200_000})
        named = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                 "function": {"name": "big", "arguments": ""}}]}  # fmt: skip
        pieces = [{"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 200]}}]}
                  for i in range(0, len(arguments), 200)]  # fmt: skip
        body = openai_sse(named, *pieces)
        # A piece a write, a little apart: the gateway sends each as its own event.
        upstream.script(Raw(tuple(part + b"\n\n" for part in body.split(b"\n\n") if part),
                            delay=0.002))  # fmt: skip
        page.driver.execute_script(COUNT_PARSING)
        page.connected()
        page.click("#chat-new")
        page.type("#chat-input", "go")
        page.click("#chat-send")
        page.until(lambda: page.find(".bubble.assistant:not(.streaming) details.tool"), "the call")
        parsed, received = page.driver.execute_script("return [window.parsed, window.received]")
        assert parsed < 3 * received


def patch_labels(page: Page, labels: dict[str, str]) -> None:
    """Sessions stored with these labels, all at once, by another client of the gateway."""
    page.driver.execute_async_script(
        """
        const [token, labels, done] = arguments;
        const { Gateway } = await import("/ui/gateway.js");
        const gw = new Gateway();
        await gw.start(`ws://${location.host}`, { token });
        await Promise.all(Object.entries(labels).map(([key, label]) =>
          gw.request("sessions.patch", { key, label })));
        gw.stop();
        done();
        """,
        TOKEN,
        labels,
    )


class TestManySessions:
    def test_a_stored_session_past_the_chat_list_is_not_marked_new(self, page: Page) -> None:
        # The chat's list holds an agent's 100 newest sessions; an older one, opened from the
        # sessions screen or a link, was offered as "(new)", as a key not stored yet is.
        page.connected()
        patch_label(page, "agent:ops:older", "Older")
        patch_labels(page, {f"agent:ops:newer-{i}": f"Newer {i}" for i in range(100)})
        page.driver.execute_script("location.hash = '#chat/agent:ops:older'")
        checked = "#chat-session option:checked"
        page.until(lambda: page.find(checked).get_attribute("value") == "agent:ops:older", "it")
        page.until(lambda: "Older" in page.text(checked), "its label")
        assert page.text(checked) == "\u2068Older\u2069 — agent:ops:older"

    def test_the_sessions_list_pages_past_its_first_200(self, page: Page) -> None:
        # The list showed the 200 newest and said "210 sessions": the 10 others could not be
        # reached but by a search that matched them alone.
        page.connected()
        patch_labels(page, {f"agent:ops:paged-{i}": f"Paged {i}" for i in range(210)})
        page.go("sessions")
        page.type("#sessions-search", "paged-")

        def rows() -> int:
            return len(page.all("#sessions-table tbody tr[data-key]"))

        page.until(lambda: rows() == 200 and "210" in page.text("#sessions-count"), "page 1")
        assert page.text("#sessions-count") == "1–200 of 210 sessions"
        page.click("#sessions-next")
        page.until(lambda: rows() == 10, "page 2")
        assert page.text("#sessions-count") == "201–210 of 210 sessions"
        assert page.find("#sessions-next").get_attribute("disabled") is not None
        page.click("#sessions-prev")
        page.until(lambda: rows() == 200, "page 1 again")
        # A new search starts at its first page.
        page.click("#sessions-next")
        page.until(lambda: rows() == 10, "page 2 again")
        page.type("#sessions-search", "paged-20")  # 20, 200 to 209
        page.until(lambda: page.text("#sessions-count") == "11 sessions", "the search's page 1")

    def test_a_thousand_sessions_are_counted_as_numbers_are_shown(self, page: Page) -> None:
        # "1–200 of 1000 sessions", beside the Status screen's "1,000": a count as a number
        # is shown everywhere else.
        page.connected()
        patch_labels(page, {f"agent:ops:thousand-{i}": f"Thousand {i}" for i in range(1000)})
        page.go("sessions")
        page.type("#sessions-search", "thousand-")
        page.until(lambda: "1,000" in page.text("#sessions-count") or "1000"
                   in page.text("#sessions-count"), "the count")  # fmt: skip
        assert page.text("#sessions-count") == "1–200 of 1,000 sessions"


def turns(page: Page, key: str, count: int, say: str = "turn {n}") -> None:
    """`count` turns on the session `key` through the HTTP API: two messages each, the
    user's `say` with its `{n}` the turn's number."""
    for n in range(count):
        message = {"role": "user", "content": say.format(n=n)}
        request = urllib.request.Request(
            f"{page.gateway.url}/v1/chat/completions",
            data=json.dumps({"model": "openclaw", "messages": [message]}).encode(),
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "application/json",
                "x-openclaw-session-key": key,
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200


class TestLongTranscript:
    def test_a_transcript_longer_than_shown_says_so(self, page: Page) -> None:
        # The chat showed the newest 200 messages of 210 as if they were all: the
        # conversation seemed to start in its middle.
        page.connected()
        key = "agent:main:long-transcript"
        turns(page, key, 105)
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        page.until(lambda: len(page.all("#transcript .bubble")) == 200, "the transcript")
        assert page.text("#transcript > .older") == "The newest 200 of 210 messages are shown."
        page.go("sessions")
        page.type("#sessions-search", "long-transcript")
        page.visible(f'#sessions-table tr[data-key="{key}"] button').click()
        page.until(lambda: len(page.all("#session-transcript .bubble")) == 100, "its transcript")
        assert page.text("#session-transcript > .older") == (
            "The newest 100 of 210 messages are shown."
        )

    def test_own_turns_in_a_tab_left_open_keep_the_transcript_bounded(self, page: Page) -> None:
        # The page's own turns were added to the transcript and nothing was ever taken off:
        # a tab left open grew by two messages a turn, without end.
        page.connected()
        key = "agent:main:own-turns"
        turns(page, key, 100, say="history {n}")
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        # This session's transcript, not the one shown before it (200 bubbles too, on a tab a
        # test before left on a longer session).
        page.until(lambda: len(page.all("#transcript .bubble")) == 200
                   and "history 0" in page.all("#transcript .bubble")[0].text,
                   "the transcript")  # fmt: skip
        assert not page.all("#transcript > .older")
        for message in ("own turn 0", "own turn 1"):
            page.type("#chat-input", message)
            page.click("#chat-send")
            page.until(lambda m=message: m in page.text("#transcript")
                       and not page.all("#transcript .streaming"), "the answer")  # fmt: skip
        page.until(lambda: page.text("#transcript > .older")
                   == "The newest 200 of 204 messages are shown.", "the bound")  # fmt: skip
        assert len(page.all("#transcript .bubble")) == 200
        assert "own turn 1" in page.all("#transcript .bubble")[-2].text


class TestStatusNames:
    def test_an_agents_name_on_the_status_screen_is_shown_not_obeyed(self, page: Page) -> None:
        # The chat's agent list showed a name's controls as code points, the status screen's
        # table drew them: "team\u200b\u202eevil" read as "teamlive".
        page.connected()
        page.go("status")
        # The rows' text, read at once: the table is drawn again every 5 s.
        rows = "return [...document.querySelectorAll('#status-agents tr')].map(r => r.textContent)"
        text = page.until(
            lambda: [t for t in page.driver.execute_script(rows) if t.startswith("named")],
            "the agent's row",
        )[0]
        assert RLO not in text and "\u200b" not in text
        assert "team⟨U+200B⟩⟨U+202E⟩evil" in text

    def test_a_long_name_wraps_in_the_agents_table(self, page: Page) -> None:
        # A name of one long word held its column as wide as itself: the table scrolled
        # sideways, the agents' models and fallbacks out of sight.
        page.connected()
        page.go("status")
        rows = "return [...document.querySelectorAll('#status-agents tr')].map(r => r.textContent)"
        page.until(lambda: any(t.startswith("wide") for t in page.driver.execute_script(rows)),
                   "the agent's row")  # fmt: skip
        assert overflow(page, ".table-wrap:has(#status-agents)") == 0


class TestLogBidi:
    def test_an_override_in_a_logged_path_does_not_reverse_the_rest_of_the_line(
        self, page: Page
    ) -> None:
        # Anyone who can reach the port chooses a path, which the log names: an override in
        # it drew the rest of the line ("status=404 …") backwards.
        page.connected()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{page.gateway.url}/bidi-probe%E2%80%AE-x", timeout=10)
        page.go("logs")
        line = page.until(
            lambda: [n for n in page.all(".log-line") if "bidi-probe" in n.text], "the line"
        )[-1]
        drawn = lefts(page, line.find_element(page.by.CSS_SELECTOR, ".log-rest"), "status")
        assert drawn == sorted(drawn)
        assert "U+202E" in line.text


# Every `chat.history` the page sends is held until `window.release()`; `window.histories`
# counts them.
HELD_HISTORY = """
const send = WebSocket.prototype.send;
window.histories = 0;
window.held = [];
window.release = () => {
  const held = window.held;
  window.held = null;
  held.forEach((go) => go());
};
WebSocket.prototype.send = function (data) {
  if (JSON.parse(data).method === "chat.history") {
    window.histories++;
    if (window.held) {
      window.held.push(() => send.call(this, data));
      return;
    }
  }
  send.call(this, data);
};
"""


# The answers to the page's `chat.history` requests are held until `window.release()`;
# `window.histories` counts the requests. Installed before the page's socket is opened.
HELD_HISTORY_ANSWERS = """
const send = WebSocket.prototype.send;
const listen = WebSocket.prototype.addEventListener;
const asked = new Set();
window.histories = 0;
window.held = [];
window.release = () => {
  const held = window.held;
  window.held = null;
  held.forEach((go) => go());
};
WebSocket.prototype.send = function (data) {
  const frame = JSON.parse(data);
  if (frame.method === "chat.history") {
    window.histories++;
    asked.add(frame.id);
  }
  send.call(this, data);
};
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type !== "message") return listen.call(this, type, listener, ...rest);
  return listen.call(this, type, (message) => {
    if (window.held && asked.has(JSON.parse(message.data).id)) {
      window.held.push(() => listener(message));
      return;
    }
    listener(message);
  }, ...rest);
};
"""


class TestTurnsFromElsewhere:
    def test_a_burst_of_turns_from_elsewhere_reloads_the_transcript_once_at_a_time(
        self, page: Page
    ) -> None:
        # Each turn another client ended on the session shown reloaded its transcript, all
        # at once: 200 messages each, as many loads in flight as turns, and the transcript
        # emptied by each.
        page.connected()
        key = "agent:main:elsewhere"
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        page.until(lambda: page.find("#transcript .empty"), "the empty transcript")
        page.driver.execute_script(HELD_HISTORY)
        turns(page, key, 6)
        histories = "return window.histories"
        page.until(lambda: page.driver.execute_script(histories), "the first load")
        # While that load is under way, the turns that end ask for no other: they wait for
        # it, whenever their events come.
        assert page.driver.execute_script(histories) == 1
        page.driver.execute_script("window.release()")
        # Loaded after the last turn: the user's messages come with the transcript only.
        page.until(lambda: "turn 5" in page.text("#transcript"), "the last turn", timeout=20)

    def test_a_message_sent_while_the_session_loads_is_shown_with_its_answer(
        self, page: Page
    ) -> None:
        # Sent before the session's history came, the message and its answer's bubble were
        # put in the transcript, then replaced with the rest by the history: the answer was
        # streamed into a bubble no longer on the page.
        key = "agent:main:sent-while-loading"
        turns(page, key, 1)
        page.driver.execute_script(HELD_HISTORY_ANSWERS)
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        page.connected()
        page.until(lambda: page.driver.execute_script("return window.histories"), "the load")
        page.type("#chat-input", "sent while loading")
        page.click("#chat-send")
        page.driver.execute_script("window.release()")
        page.until(lambda: len(page.all("#transcript .bubble.assistant:not(.streaming)")) == 2,
                   "the answer")  # fmt: skip
        assert page.text("#transcript").count("sent while loading") == 1
        assert page.all("#transcript .bubble")[-1].text.endswith("ok")

    def test_a_reload_replaces_the_transcript_without_emptying_it_first(self, page: Page) -> None:
        # Each load after a turn from elsewhere emptied the transcript, then filled it when
        # the history came: the conversation blinked out at every turn.
        page.connected()
        key = "agent:main:no-blink"
        turns(page, key, 1)
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        # Its two messages (other sessions of the module's have a "turn 0" too).
        page.until(lambda: page.session_key() == key and len(page.all("#transcript .bubble")) == 2,
                   "the transcript")  # fmt: skip
        page.driver.execute_script(
            """
            window.emptied = 0;
            const box = document.getElementById("transcript");
            new MutationObserver(() => { if (!box.children.length) window.emptied++; })
              .observe(box, { childList: true });
            """
        )
        turns(page, key, 2)
        page.until(lambda: "turn 1" in page.text("#transcript"), "the new turn", timeout=20)
        assert page.driver.execute_script("return window.emptied") == 0


# The page's `config.get` answers come with `arguments[0]` merged into their `config`: keys
# the gateway's own checks leave out of its config today (a provider id or a header name
# holding a bidi control), as another gateway's answer, or a later version's, may hold them.
WITH_CONFIG_KEYS = """
const extra = arguments[0];
const listen = WebSocket.prototype.addEventListener;
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type !== "message") return listen.call(this, type, listener, ...rest);
  return listen.call(this, type, (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "res" && frame.ok && frame.payload && frame.payload.hash !== undefined
        && frame.payload.config) {
      Object.assign(frame.payload.config, extra);
      return listener({ data: JSON.stringify(frame) });
    }
    listener(message);
  }, ...rest);
};
"""


class TestConfigKeys:
    def test_a_key_with_a_bidi_control_or_an_invisible_character_is_shown(self, page: Page) -> None:
        # The form drew its keys as written: a section "\u202etxt.exe" read "exe.txt", and
        # "ad\u200bmin" as "admin", another key.
        extra = {f"{RLO}txt.exe": {"ad\u200bmin": "x", "plain": "y"}}
        page.driver.execute_script(WITH_CONFIG_KEYS, extra)
        page.connected()
        page.go("config")
        page.visible('input[data-path="gateway.bind"]')
        legend = page.driver.execute_script(
            "return [...document.querySelectorAll('#config-form legend')].map(n => n.textContent)"
        )
        labels = page.driver.execute_script(
            "return [...document.querySelectorAll('#config-form label')].map(n => n.textContent)"
        )
        assert "⟨U+202E⟩txt.exe" in legend
        assert "ad⟨U+200B⟩min" in labels
        assert all(RLO not in text for text in legend + labels)
        assert all("\u200b" not in text for text in legend + labels)

    def test_a_long_key_wraps_rather_than_widen_the_form(self, page: Page) -> None:
        # A section named by one long word (an agent's params are anyone's keys) held the
        # whole form as wide as its legend: every field scrolled sideways with it.
        word = UNBROKEN[:300]
        page.driver.execute_script(WITH_CONFIG_KEYS, {word: {f"{word}k": "x", "empty": {}}})
        page.connected()
        page.go("config")
        page.visible('input[data-path="gateway.bind"]')
        legends = "return [...document.querySelectorAll('legend')].map(n => n.textContent)"
        page.until(lambda: word in page.driver.execute_script(legends), "the key")
        assert overflow(page, "main") == 0

    def test_a_multi_line_value_left_alone_is_not_saved_mangled(self, page: Page) -> None:
        # A one-line input drops a value's line breaks: the field no one touched differed
        # from the value config.get gave, and Save sent it, its lines run together, with
        # whatever else was changed. It is edited in a box that keeps its lines.
        page.driver.execute_script(WITH_CONFIG_KEYS, {"multi": {"text": "line one\nline two"}})
        page.driver.execute_script(
            """
            window.patches = [];
            const send = WebSocket.prototype.send;
            WebSocket.prototype.send = function (data) {
              const frame = JSON.parse(data);
              if (frame.method === "config.patch") window.patches.push(frame.params.raw);
              send.call(this, data);
            };
            """
        )
        page.connected()
        page.go("config")
        text = page.visible('[data-path="multi.text"]:is(input, textarea)')
        assert text.get_attribute("value") == "line one\nline two"
        assert not page.find("#config-save").is_enabled()
        field = page.visible('input[data-path="gateway.reload.debounceMs"]')
        field.clear()
        field.send_keys("321")
        page.click("#config-save")
        page.until(lambda: page.driver.execute_script("return window.patches.length"), "a save")
        (raw,) = page.driver.execute_script("return window.patches")
        assert json.loads(raw) == {"gateway": {"reload": {"debounceMs": 321}}}


class TestTranscriptBidi:
    def test_an_override_in_a_preview_is_shown_not_obeyed(
        self, page: Page, upstream: FakeOpenAI
    ) -> None:
        # A reply "\u202etxt.exe …" was previewed in the session list as "… exe.txt": the
        # preview is how a row is told from the others, and one cut at its length may have
        # lost the control that closed the override.
        page.connected()
        key = "agent:main:preview-bidi"
        upstream.script(Stream((f"{RLO}txt.exe reply",)))
        turns(page, key, 1)
        page.go("sessions")
        page.type("#sessions-search", "preview-bidi")
        preview = page.visible(f'#sessions-table tr[data-key="{key}"] .preview')
        text = preview.get_attribute("textContent")
        assert RLO not in text
        assert text == "⟨U+202E⟩txt.exe reply"
        drawn = lefts(page, preview, "txt.exe")
        assert drawn == sorted(drawn)

    def test_an_override_in_a_message_stays_inside_its_bubble(
        self, page: Page, upstream: FakeOpenAI
    ) -> None:
        # A message body is shown as written, its override obeyed; what follows it (the next
        # message, the reply's note) is drawn left to right.
        page.connected()
        key = "agent:main:body-bidi"
        upstream.script(Stream(("plain reply",)))
        turns(page, key, 1, say=f"{RLO}reversed body")
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        page.until(lambda: "plain reply" in page.text("#transcript")
                   and len(page.all("#transcript .bubble")) == 2, "the transcript")  # fmt: skip
        body = "#transcript .bubble.user .text"
        assert page.find(body).get_attribute("textContent") == f"{RLO}reversed body"
        drawn = lefts(page, body, "reversed")
        assert drawn == sorted(drawn, reverse=True)
        for word, where in (("Assistant", ".who"), ("plain", ".text")):
            drawn = lefts(page, f"#transcript .bubble.assistant {where}", word)
            assert drawn == sorted(drawn)

    def test_a_right_to_left_message_reads_right_to_left(
        self, page: Page, upstream: FakeOpenAI
    ) -> None:
        # A message in Hebrew or Arabic was laid out as a left-to-right paragraph: its
        # closing "!" drawn at the far right, after its last word instead of before it, and
        # a Latin word in it put where the sentence did not have it.
        page.connected()
        key = "agent:main:rtl-body"
        upstream.script(Stream(("תודה!",)))
        turns(page, key, 1, say="שלום!")
        page.driver.execute_script("location.hash = arguments[0]", f"#chat/{key}")
        page.until(lambda: len(page.all("#transcript .bubble:not(.streaming)")) == 2, "the two")

        def mark_first(body: str) -> bool:
            *letters, mark = lefts(page, body, page.find(body).get_attribute("textContent"))
            return mark < min(letters)

        # Read again should the transcript be loaded again meanwhile (the turn's own events).
        for body in ("#transcript .bubble.user .text", "#transcript .bubble.assistant .text"):
            assert page.until(lambda b=body: mark_first(b) or None, body)

    def test_a_right_to_left_preview_reads_right_to_left(
        self, page: Page, upstream: FakeOpenAI
    ) -> None:
        # The session list's preview of a Hebrew reply was a left-to-right paragraph (only
        # the bubbles had dir="auto"): its closing "!" drawn after its last word.
        page.connected()
        key = "agent:main:rtl-preview"
        upstream.script(Stream(("תודה!",)))
        turns(page, key, 1, say="שלום!")
        page.go("sessions")
        page.type("#sessions-search", "rtl-preview")
        preview = page.visible(f'#sessions-table tr[data-key="{key}"] .preview')
        *letters, mark = lefts(page, preview, "תודה!")
        assert mark < min(letters)


# The page's answers to requests of `arguments[0]` are changed as `arguments[1]` says:
# `model` puts that model on each session listed; `issues` makes it a refusal with those
# issues. What a gateway or a provider reports is shown, whatever characters it holds.
CHANGED_ANSWER = """
const [method, change] = arguments;
const send = WebSocket.prototype.send;
const listen = WebSocket.prototype.addEventListener;
const ids = new Set();
WebSocket.prototype.send = function (data) {
  const frame = JSON.parse(data);
  if (frame.method === method) ids.add(frame.id);
  send.call(this, data);
};
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type !== "message") return listen.call(this, type, listener, ...rest);
  return listen.call(this, type, (message) => {
    const frame = JSON.parse(message.data);
    if (!ids.delete(frame.id)) return listener(message);
    if (change.model) for (const s of frame.payload.sessions) s.model = change.model;
    if (change.issues) {
      frame.ok = false;
      delete frame.payload;
      frame.error = { code: "INVALID_REQUEST", message: "invalid config",
                      details: { issues: change.issues } };
    }
    listener({ data: JSON.stringify(frame) });
  }, ...rest);
};
"""


# The text of a cell as drawn, line by line (a character's line is the top of its box), and
# whether a part of it is cut short (its box narrower than its text).
MODEL_DRAWN = """
const cell = document.querySelector(arguments[0]);
const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
const lines = [];
let top = null;
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  for (let i = 0; i < node.data.length; i++) {
    const range = document.createRange();
    range.setStart(node, i);
    range.setEnd(node, i + 1);
    const rect = range.getClientRects()[0];
    const at = rect ? Math.round(rect.top) : top;
    if (at !== top || !lines.length) { lines.push(""); top = at; }
    lines[lines.length - 1] += node.data[i];
  }
}
const cut = [cell, ...cell.querySelectorAll("*")].some(
  (e) => getComputedStyle(e).textOverflow === "ellipsis" && e.scrollWidth > e.clientWidth);
return { lines, cut, title: cell.title };
"""


class TestNamesReported:
    def test_an_override_in_a_sessions_model_is_shown_not_obeyed(self, page: Page) -> None:
        # The Model column drew the model as written: "gpt\u202elive" read as "gptevil".
        page.driver.execute_script(CHANGED_ANSWER, "sessions.list", {"model": f"gpt{RLO}live"})
        page.connected()
        patch_label(page, "agent:main:model-bidi", "model-bidi")
        page.go("sessions")
        page.type("#sessions-search", "model-bidi")
        cell = "#sessions-table tr[data-key='agent:main:model-bidi'] td.model"
        content = "return document.querySelector(arguments[0])?.textContent ?? ''"
        text = page.until(
            lambda: "live" in (t := page.driver.execute_script(content, cell)) and t, "the model"
        )
        assert RLO not in text
        assert text.endswith("gpt⟨U+202E⟩live")

    def test_an_override_in_an_issue_path_no_field_has_is_shown_not_obeyed(
        self, page: Page
    ) -> None:
        # An issue the form could not place was drawn as written: "\u202etxt.exe: bad" read
        # "bad :exe.txt", and reversed the words after it.
        issues = [{"path": f"{RLO}txt.exe", "message": "unknown key"}]
        page.driver.execute_script(CHANGED_ANSWER, "config.patch", {"issues": issues})
        page.connected()
        page.go("config")
        field = page.visible('input[data-path="gateway.bind"]')
        field.clear()
        field.send_keys("lan")
        page.click("#config-save")
        content = "return document.querySelector('#config-message').textContent"
        text = page.until(
            lambda: "unknown key" in (t := page.driver.execute_script(content)) and t, "the refusal"
        )
        assert RLO not in text
        assert "⟨U+202E⟩txt.exe: unknown key" in text

    def test_an_issues_message_reads_as_text_on_its_lines_within_the_page(self, page: Page) -> None:
        # A message as the gateway (or a schema's author) wrote it: an unbroken word widened
        # the page past its edge, its lines ran together into one, and issues no field has
        # were strung after "The gateway refused the change." on one line.
        markup = '<img src=x onerror="window.ran=1"><b>bold</b>'
        placed = f"first line\nsecond line {markup} {'y' * 3000}"
        unplaced = f"unknown key\nsee the docs {'z' * 3000}"
        issues = [
            {"path": "gateway.bind", "message": placed},
            {"path": "nowhere", "message": unplaced},
            {"path": "elsewhere", "message": "also wrong"},
        ]
        page.driver.execute_script(CHANGED_ANSWER, "config.patch", {"issues": issues})
        page.connected()
        page.go("config")
        field = page.visible('input[data-path="gateway.bind"]')
        field.clear()
        field.send_keys("lan")
        page.click("#config-save")
        error = "#config-form .field-error:not([hidden])"
        page.until(lambda: page.find(error), "the field's error")
        assert page.find(error).get_attribute("textContent") == placed
        assert page.text(error).startswith("first line\nsecond line <img")
        assert not page.all("#config-form .field-error *, #config-message *")
        assert page.driver.execute_script("return window.ran") is None
        assert page.text("#config-message").split("\n") == [
            "The gateway refused the change.",
            "nowhere: unknown key",
            f"see the docs {'z' * 3000}",
            "elsewhere: also wrong",
        ]
        assert overflow(page, "main") == 0

    def test_an_override_in_an_issues_message_is_shown_not_obeyed(self, page: Page) -> None:
        # An issue quotes the value it refuses as the file has it: `(got "\u202etxt.exe")`
        # was drawn `(got "exe.txt"(`, the value and the words after it reversed.
        message = f'must be one of "loopback", "lan" (got "{RLO}txt.exe")'
        issues = [{"path": "gateway.bind", "message": message},
                  {"path": "nowhere", "message": message}]  # fmt: skip
        page.driver.execute_script(CHANGED_ANSWER, "config.patch", {"issues": issues})
        page.connected()
        page.go("config")
        field = page.visible('input[data-path="gateway.bind"]')
        field.clear()
        field.send_keys("lan")
        page.click("#config-save")
        error = page.visible("#config-form .field-error:not([hidden])")
        shown = message.replace(RLO, "⟨U+202E⟩")
        assert error.get_attribute("textContent") == shown
        assert page.text("#config-message").splitlines()[-1] == f"nowhere: {shown}"

    def test_a_short_model_stays_on_one_line_beside_a_wide_session(
        self, page: Page, upstream: FakeOpenAI
    ) -> None:
        # With a preview of many words the Session column took the width and the Model column
        # was squeezed to a letter or two: "fake/echo" read "fak" / "e/e" / "cho".
        page.driver.execute_script(CHANGED_ANSWER, "sessions.list", {"model": "echo"})
        page.connected()
        upstream.script(Stream(("many words " * 20,)))
        turns(page, "agent:main:wide-row", 1)
        patch_label(page, "agent:main:wide-row", "wide-row " + "many words " * 5)
        page.go("sessions")
        page.type("#sessions-search", "wide-row")
        cell = "#sessions-table tr[data-key='agent:main:wide-row'] td.model"
        content = "return document.querySelector(arguments[0])?.textContent ?? ''"
        page.until(lambda: "echo" in page.driver.execute_script(content, cell), "the model")
        assert page.driver.execute_script(content, cell) == "fake/echo"
        drawn_lines = page.driver.execute_script(
            """const range = document.createRange();
            range.selectNodeContents(document.querySelector(arguments[0]));
            return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size""",
            cell,
        )
        assert drawn_lines == 1

    @pytest.mark.parametrize("model", ["echo", "echo-mini_v2.1", "a" * 60])
    def test_a_model_on_a_phone_wraps_only_at_its_separators_or_is_cut_with_a_title(
        self, page: Page, upstream: FakeOpenAI, model: str
    ) -> None:
        # At a phone's width the Model column was squeezed below its words: "fake/echo" read
        # "fake/ec" / "ho", each letter a place to break.
        page.driver.execute_script(CHANGED_ANSWER, "sessions.list", {"model": model})
        page.connected()
        upstream.script(Stream(("many words " * 20,)))
        turns(page, "agent:main:phone-row", 1)
        patch_label(page, "agent:main:phone-row", "phone-row " + "many words " * 5)
        set_viewport(page.driver, 375, 812)
        page.go("sessions")
        page.type("#sessions-search", "phone-row")
        cell = "#sessions-table tr[data-key='agent:main:phone-row'] td.model"
        content = "return document.querySelector(arguments[0])?.textContent ?? ''"
        name = f"fake/{model}"
        page.until(lambda: page.driver.execute_script(content, cell) == name, "the model")
        drawn = page.driver.execute_script(MODEL_DRAWN, cell)
        # Each line of the cell ends at a separator, or is a part cut short (an ellipsis,
        # the whole name in the title).
        lines = drawn["lines"]
        assert "".join(lines) == name, lines
        for line in lines[:-1]:
            assert line[-1] in "/._-:@", lines
        if len(model) > 30:
            assert drawn["cut"], drawn
        else:
            assert not drawn["cut"], drawn
        assert drawn["title"] == name
        widths = page.driver.execute_script(
            "const wrap = document.querySelector('#sessions-table').parentElement;"
            "return [wrap.scrollWidth, wrap.clientWidth]"
        )
        assert widths[0] <= widths[1]  # nothing to scroll sideways

    def test_a_model_without_a_provider_is_shown_alone(self, page: Page) -> None:
        # A session whose row names a model and no provider read "/gpt-solo": a slash
        # before nothing, as if a provider's name were missing from the config.
        page.driver.execute_script(CHANGED_ANSWER, "sessions.list", {"model": "gpt-solo"})
        page.connected()
        patch_label(page, "agent:main:model-alone", "model-alone")
        page.go("sessions")
        page.type("#sessions-search", "model-alone")
        cell = "#sessions-table tr[data-key='agent:main:model-alone'] td.model"
        content = "return document.querySelector(arguments[0])?.textContent ?? ''"
        text = page.until(
            lambda: "solo" in (t := page.driver.execute_script(content, cell)) and t, "the model"
        )
        assert text == "gpt-solo"
