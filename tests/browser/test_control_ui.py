"""The Control UI, driven in Chromium against a real gateway process."""

from __future__ import annotations

import collections
import contextlib
import http.client
import itertools
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request

import pytest

from tests.support.browser import DESKTOP, PHONE, TOKEN, Page, set_viewport

pytestmark = pytest.mark.browser

# The page's next request of this method naming this value (`arguments[0]`, `[1]`) is sent
# 800 ms late, so its answer comes after those of requests made after it.
HOLD_BACK = """
const [method, value] = arguments;
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  const frame = JSON.parse(data);
  if (frame.method === method && Object.values(frame.params || {}).includes(value)) {
    WebSocket.prototype.send = send;
    setTimeout(() => send.call(this, data), 800);
  } else {
    send.call(this, data);
  }
};
"""

# The page's socket is closed as the answer to its next `chat.send` comes, before the page
# reads it: the gateway took the message, the page never heard so.
LOSE_SEND_ANSWER = """
const send = WebSocket.prototype.send;
const listen = WebSocket.prototype.addEventListener;
let held = null;
WebSocket.prototype.send = function (data) {
  const frame = JSON.parse(data);
  if (frame.method === "chat.send" && held === null) held = frame.id;
  send.call(this, data);
};
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type !== "message") return listen.call(this, type, listener, ...rest);
  return listen.call(this, type, (message) => {
    if (held !== null && JSON.parse(message.data).id === held) {
      held = "";  // once
      this.close();
      return;
    }
    listener(message);
  }, ...rest);
};
"""

# Counts the `agent` events of assistant text the page receives, in `window.answerEvents`.
COUNT_ANSWER_EVENTS = """
const listen = WebSocket.prototype.addEventListener;
window.answerEvents = 0;
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type === "message") {
    listen.call(this, "message", (message) => {
      const frame = JSON.parse(message.data);
      if (frame.event === "agent" && frame.payload.stream === "assistant") window.answerEvents++;
    });
  }
  return listen.call(this, type, listener, ...rest);
};
"""


# While `window.refuse[method]` is set, the page's requests of that method carry those params
# instead, which the gateway refuses: a real error answer, on a connection that still works.
# `window.sent[method]` counts the page's requests of each method.
REFUSE = """
const send = WebSocket.prototype.send;
window.refuse = {};
window.sent = {};
WebSocket.prototype.send = function (data) {
  const frame = JSON.parse(data);
  window.sent[frame.method] = (window.sent[frame.method] || 0) + 1;
  if (window.refuse[frame.method]) {
    frame.params = window.refuse[frame.method];
    data = JSON.stringify(frame);
  }
  send.call(this, data);
};
"""

# Counts the changes, in `window.changes`, to the status screen's alert and to any node with
# an alert role added to the screen: each is read out again by a screen reader.
WATCH_ALERT = """
window.changes = 0;
const alert = document.querySelector("#screen-status [role=alert]");
new MutationObserver((records) => { window.changes += records.length; })
  .observe(alert, { childList: true, characterData: true, subtree: true, attributes: true });
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      const element = node.nodeType === 1 ? node : null;
      if (element && (element.matches("[role=alert]") || element.querySelector("[role=alert]"))) {
        window.changes += 1;
      }
    }
  }
}).observe(document.getElementById("screen-status"), { childList: true, subtree: true });
"""


# `window.socket` is the page's socket, for a test to close: a connection lost.
LOSE_SOCKET = """
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.socket = this;
  send.call(this, data);
};
"""


# The page's next request of the method `arguments[0]` is sent `arguments[1]` ms late: a slow
# gateway, or a slow link, for that one answer.
HOLD_METHOD = """
const [method, ms] = arguments;
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (JSON.parse(data).method === method) {
    WebSocket.prototype.send = send;
    setTimeout(() => send.call(this, data), ms);
  } else {
    send.call(this, data);
  }
};
"""


# The page's next request of the method `arguments[0]` is never sent: a gateway that never
# answers it, on a connection that otherwise works (ticks, other answers).
NEVER_SENT = """
const [method] = arguments;
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (JSON.parse(data).method === method) {
    WebSocket.prototype.send = send;
  } else {
    send.call(this, data);
  }
};
"""

# The page's timers of `arguments[0]` ms (a request's timeout) fire after 300 ms instead, so a
# test need not wait the whole of it; all other timers are left as they are.
SHORT_REQUEST_TIMEOUT = """
const [ms] = arguments;
const original = window.setTimeout;
window.setTimeout = (handler, delay, ...rest) =>
  original(handler, delay === ms ? 300 : delay, ...rest);
"""
REQUEST_TIMEOUT_MS = 20000  # gateway.js's REQUEST_TIMEOUT_MS


# While `window.detour` holds a URL, the page's new sockets go there instead; `window.socket`
# is its socket, for a test to close.
DETOUR = """
const Original = WebSocket;
window.detour = null;
window.WebSocket = class extends Original {
  constructor(url, ...rest) {
    super(window.detour || url, ...rest);
    window.socket = this;
  }
};
"""


def label_sessions(page: Page, keys: list[str], *, at_once: bool = True) -> None:
    """Sessions made by another client of the gateway (a second socket from the page), each
    labelled with its key's part after `agent:ops:`; `at_once`: all requests in flight
    together, else one after another."""
    page.driver.execute_async_script(
        """
        const [token, keys, atOnce, done] = arguments;
        const { Gateway } = await import("/ui/gateway.js");
        const gw = new Gateway();
        await gw.start(`ws://${location.host}`, { token });
        const patch = (key) => gw.request("sessions.patch", { key, label: key.slice(10) });
        if (atOnce) {
          await Promise.all(keys.map(patch));
        } else {
          for (const key of keys) await patch(key);
        }
        gw.stop();
        done();
        """,
        TOKEN,
        keys,
        at_once,
    )


def layouts(page: Page) -> int:
    metrics = page.driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return int(next(m["value"] for m in metrics if m["name"] == "LayoutCount"))


class TestConnect:
    def test_a_wrong_token_shows_the_error(self, page: Page) -> None:
        page.visible("#connect-form")
        page.screenshot("connect")
        page.connect("not-the-token")
        error = page.visible("#connect-error")
        assert error.text == "Wrong token: the gateway refused it."
        assert page.find("#conn-state").get_attribute("data-state") == "failed"
        assert page.driver.execute_script("return sessionStorage.length") == 0

    def test_a_refused_connect_by_keyboard_gives_the_focus_back_to_connect(
        self, page: Page
    ) -> None:
        # The focused Connect button is disabled while connecting: the focus fell to the
        # start of the page, and stayed there when the error came.
        from selenium.webdriver.common.keys import Keys

        page.type("#connect-secret", "not-the-token")
        page.driver.execute_script("document.getElementById('connect-submit').focus()")
        page.driver.switch_to.active_element.send_keys(Keys.ENTER)
        page.visible("#connect-error")
        page.until(lambda: page.find("#connect-submit").is_enabled(), "Connect enabled again")
        assert page.driver.switch_to.active_element.get_attribute("id") == "connect-submit"

    @pytest.mark.parametrize(
        ("userinfo", "shown"),
        [("user:s3cret-pw@", "ws://127.0.0.1:{port}/"), ("u:s3cret/pw@", "ws://127.0.0.1:{port}")],
    )
    def test_a_gateway_url_with_credentials_is_shown_without_them(
        self, page: Page, userinfo: str, shown: str
    ) -> None:
        """Whatever the browser makes of the URL (the second is no URL: its host ends at the
        `/`), the error says where it went without the user and password in it."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # nothing listens there once closed
        page.type("#connect-url", f"ws://{userinfo}127.0.0.1:{port}")
        page.connect()
        error = page.until(lambda: page.find("#connect-error").text, "the error")
        assert shown.format(port=port) in error
        assert "s3cret" not in error

    def test_a_gateway_url_that_never_answers_fails_in_time_and_can_be_corrected(
        self, page: Page
    ) -> None:
        # A port that takes the connection and says nothing (a stalled process, another
        # service): the Connect button stayed disabled, the page "Connecting…" for minutes.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            page.type("#connect-url", f"ws://127.0.0.1:{port}")
            page.connect()
            error = page.until(lambda: page.find("#connect-error").text, "the error", 15)
        assert error == f"No answer from ws://127.0.0.1:{port} within 10 s."
        assert page.find("#conn-state").get_attribute("data-state") == "failed"
        page.type("#connect-url", page.gateway.url.replace("http", "ws", 1))
        page.connected()

    def test_connecting_with_the_token_opens_the_chat_and_keeps_it_in_session_storage(
        self, page: Page
    ) -> None:
        page.connected()
        page.visible("#screen-chat")
        saved = json.loads(
            page.driver.execute_script("return sessionStorage.getItem('clawgate.connection')")
        )
        assert saved["secret"] == TOKEN and saved["mode"] == "token"
        assert page.driver.execute_script("return localStorage.length") == 0


class TestChat:
    def test_the_answer_streams_in_piece_by_piece(self, page: Page) -> None:
        page.connected()
        message = "one two three four five six seven eight nine ten"
        page.type("#chat-input", message)
        page.click("#chat-send")
        seen: list[str] = []

        def finished() -> bool:
            bubble = page.all(".bubble.assistant")[-1]
            done = "streaming" not in bubble.get_attribute("class")  # before the text: no race
            text = bubble.find_element(page.by.CSS_SELECTOR, ".text").text
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            return done

        page.until(finished, "the end of the answer")
        assert seen[-1] == f"[turn 1] {message}"
        partial = [text for text in seen[:-1] if f"[turn 1] {message}".startswith(text)]
        assert len(partial) >= 3, seen  # 60 ms between words: several states were on screen
        page.screenshot("chat")

    def test_abort_stops_a_running_turn(self, page: Page) -> None:
        page.connected()
        page.type("#chat-input", " ".join(f"w{i}" for i in range(60)))  # about 3.6 s of words
        page.click("#chat-send")
        page.until(lambda: page.find("#chat-abort").is_enabled(), "the abort button")
        page.until(lambda: page.all(".bubble.assistant.streaming .text")[-1].text, "a first word")
        page.click("#chat-abort")
        note = page.visible(".bubble.assistant .note")
        assert note.text == "aborted"
        assert not page.find("#chat-abort").is_enabled()

    def test_a_turn_aborted_by_keyboard_leaves_the_focus_in_the_message_box(
        self, page: Page
    ) -> None:
        # The focused Abort button is disabled as the turn ends: the focus fell to the start
        # of the page, and the next message had to be reached by tabbing through it all.
        from selenium.webdriver.common.keys import Keys

        page.connected()
        page.click("#chat-new")
        page.type("#chat-input", " ".join(f"w{i}" for i in range(60)) + Keys.ENTER)
        abort = page.find("#chat-abort")
        page.until(abort.is_enabled, "the abort button")
        page.until(lambda: page.all(".bubble.assistant.streaming .text")[-1].text, "a first word")
        page.driver.execute_script("arguments[0].focus()", abort)
        page.driver.switch_to.active_element.send_keys(Keys.ENTER)
        page.visible(".bubble.assistant .note")
        page.until(lambda: not abort.is_enabled(), "the abort button disabled")
        time.sleep(0.2)
        assert page.driver.switch_to.active_element.get_attribute("id") == "chat-input"

    def test_stop_typed_as_a_message_aborts_the_turn_and_starts_none(self, page: Page) -> None:
        # `/stop` is a command (ws-protocol.md §8, chat.send): it aborts, no turn answers it.
        page.connected()
        page.click("#chat-new")
        page.type("#chat-input", " ".join(f"w{i}" for i in range(60)))  # about 3.6 s of words
        page.click("#chat-send")
        page.until(lambda: page.all(".bubble.assistant.streaming .text")[-1].text, "a first word")
        page.type("#chat-input", "/stop")
        page.click("#chat-send")
        page.until(lambda: page.all(".bubble.assistant .note"), "the aborted note")
        page.until(lambda: not page.all(".bubble.streaming"), "no answer still streaming")
        assert [b.get_attribute("data-role") for b in page.all("#transcript .bubble")] == [
            "user",
            "assistant",
        ]
        assert page.text(".bubble.assistant .note") == "aborted"
        assert not page.find("#chat-abort").is_enabled()
        assert page.find("#chat-input").get_attribute("value") == ""

    def test_the_last_session_picked_in_a_quick_succession_is_shown_and_followed(
        self, page: Page
    ) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("first session")
        first = page.session_key()
        page.click("#chat-new")
        page.chat("second session")
        second = page.session_key()
        # Away and back before any answer came, as arrow keys on the list do.
        page.driver.execute_script(
            """
            const select = document.getElementById("chat-session");
            for (const key of arguments) {
              select.value = key;
              select.dispatchEvent(new Event("change"));
            }
            """,
            first,
            second,
        )

        def texts() -> list[str]:
            return [b.find_element(page.by.CSS_SELECTOR, ".text").text for b in page.all(".bubble")]

        page.until(
            lambda: texts() == ["second session", "[turn 1] second session"], "its transcript"
        )
        time.sleep(1)  # an answer for the other one would have come by now
        assert texts() == ["second session", "[turn 1] second session"]
        assert page.session_key() == second
        assert page.chat("still followed") == "[turn 2] still followed"

    def test_the_sessions_of_the_last_agent_picked_are_shown_whichever_answer_comes_last(
        self, page: Page
    ) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("a main session")
        page.driver.execute_script(HOLD_BACK, "sessions.list", "main")
        page.driver.execute_script(
            """
            const select = document.getElementById("chat-agent");
            for (const agent of ["main", "ops"]) {
              select.value = agent;
              select.dispatchEvent(new Event("change"));
            }
            """
        )
        page.until(lambda: page.session_key().startswith("agent:ops:"), "an ops session")
        time.sleep(1.5)  # the held answer has come by now
        options = [o.get_attribute("value") for o in page.all("#chat-session option")]
        assert all(key.startswith("agent:ops:") for key in options), options
        assert page.session_key().startswith("agent:ops:")
        assert page.find("#chat-agent").get_attribute("value") == "ops"

    def test_a_message_the_gateway_took_before_the_connection_was_lost_is_not_offered_again(
        self, page: Page
    ) -> None:
        page.driver.execute_script(LOSE_SEND_ANSWER)
        page.connected()
        page.click("#chat-new")
        page.until(lambda: page.text("#transcript") == "No messages yet. Say something.",
                   "the chat")  # fmt: skip
        page.type("#chat-input", "taken once")
        page.click("#chat-send")
        state = page.find("#conn-state")
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the lost connection")
        page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected")
        page.until(lambda: "[turn 1] taken once" in page.text("#transcript"), "the turn")
        assert page.find("#chat-input").get_attribute("value") == ""

    def test_a_turn_from_elsewhere_leaves_the_address_of_another_screen_alone(
        self, page: Page
    ) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("mine")
        key = page.session_key()
        page.go("status")
        # Another client's turn on the session the chat screen follows, to its end.
        page.driver.execute_async_script(
            """
            const [token, sessionKey, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            const idempotencyKey = "elsewhere-1";
            await gw.request("chat.send", { sessionKey, message: "elsewhere", idempotencyKey });
            while ((await gw.request("chat.history", { sessionKey })).messages.length < 4) {
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
            gw.stop();
            done();
            """,
            TOKEN,
            key,
        )
        time.sleep(0.5)  # the chat screen's handling of the turn's end
        assert page.driver.current_url.endswith("#status")
        page.driver.refresh()
        page.visible("#screen-status")

    def test_a_slow_chat_left_for_another_screen_leaves_its_address_alone(self, page: Page) -> None:
        # The chat's agents came after the user had gone on to Status: the session they opened
        # wrote `#chat/…` into the address of the Status screen, and a reload opened the chat.
        page.connected()
        page.visible("#chat-agent option")
        page.go("status")
        counted = "return document.querySelectorAll('#status-cards .card').length"
        page.driver.execute_script(HOLD_METHOD, "agents.list", 1000)
        page.go("chat")
        page.go("status")
        page.until(lambda: page.driver.execute_script(counted), "the status")
        time.sleep(1.5)  # the held answer has come by now
        assert page.driver.current_url.endswith("#status")
        page.driver.refresh()
        page.visible("#screen-status")

    def test_a_slow_session_left_for_another_screen_leaves_its_address_alone(
        self, page: Page
    ) -> None:
        # Opened from a link, the session list came after the user had gone on to Status: the
        # session picked wrote `#sessions/…` into the address of the Status screen.
        page.connected()
        page.click("#chat-new")
        page.chat("slow list")
        key = page.session_key()
        page.go("status")
        counted = "return document.querySelectorAll('#status-cards .card').length"
        page.until(lambda: page.driver.execute_script(counted), "the status")
        page.driver.execute_script(HOLD_METHOD, "sessions.list", 1000)
        page.driver.execute_script("location.hash = arguments[0]", f"#sessions/{key}")
        page.visible("#screen-sessions")
        page.go("status")
        time.sleep(1.5)  # the held answer has come by now
        assert page.driver.current_url.endswith("#status")

    def test_a_labelled_session_keeps_its_label_in_the_list_after_a_turn(self, page: Page) -> None:
        page.connected()
        page.driver.execute_async_script(
            """
            const [token, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            const label = "Release notes";
            await gw.request("sessions.patch", { key: "agent:main:labelled", label });
            gw.stop();
            done();
            """,
            TOKEN,
        )
        page.driver.execute_script("location.hash = '#chat/agent:main:labelled'")
        page.until(lambda: page.session_key() == "agent:main:labelled", "the session")
        option = "#chat-session option:checked"
        # The label is isolated (FSI … PDI): right-to-left letters in it leave the key be.
        shown = "\u2068Release notes\u2069 — agent:main:labelled"
        page.until(lambda: page.text(option) == shown, "listed")
        page.chat("a turn")
        assert page.text(option) == shown

    def test_a_long_answer_is_laid_out_once_a_frame_not_once_a_token(self, page: Page) -> None:
        # Each token scrolled the transcript down, and reading its height laid all the text
        # out again: a long answer took the browser several times as long as the gateway.
        page.driver.execute_script(COUNT_ANSWER_EVENTS)
        page.connected()
        page.driver.execute_script("location.hash = '#chat/agent:ops:long-answer'")  # no delay
        page.until(lambda: page.text("#transcript") == "No messages yet. Say something.",
                   "the chat")  # fmt: skip
        message = " ".join(f"word{i}" for i in range(8000))
        page.driver.execute_script("document.getElementById('chat-input').value = arguments[0]",
                                   message)  # fmt: skip
        page.driver.execute_cdp_cmd("Performance.enable", {})
        try:
            before = layouts(page)
            page.click("#chat-send")
            page.until(lambda: page.all(".bubble.assistant") and not page.all(".bubble.streaming"),
                       "the whole answer", 60)  # fmt: skip
            laid_out = layouts(page) - before
        finally:
            page.driver.execute_cdp_cmd("Performance.disable", {})
        events = page.driver.execute_script("return window.answerEvents")
        assert events > 100, events  # a token an event, or near enough
        assert laid_out < events / 2, (laid_out, events)

    def test_a_reconnect_leaves_the_transcript_where_the_user_was_reading(self, page: Page) -> None:
        # The transcript was loaded again and scrolled to its end on every reconnect: on a
        # flaky link a user reading further up lost the place, again and again.
        page.driver.execute_script(LOSE_SOCKET)
        page.connected()
        key = "agent:ops:scrolled-back"
        page.driver.execute_async_script(
            """
            const [token, sessionKey, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            await gw.request("chat.subscribe", { sessionKey });
            for (let turn = 0; turn < 12; turn++) {
              const answered = new Promise((resolve) => gw.addEventListener("chat", (event) => {
                if (event.detail.state === "final") resolve();
              }));
              const message = `turn ${turn} ` + "words to fill the transcript ".repeat(8);
              await gw.request("chat.send", { sessionKey, message, idempotencyKey: `t${turn}` });
              await answered;
            }
            gw.stop();
            done();
            """,
            TOKEN,
            key,
        )
        page.driver.execute_script(f"location.hash = '#chat/{key}'")
        page.until(lambda: len(page.all("#transcript .bubble")) == 24, "the transcript")
        time.sleep(0.3)  # scrolled to its end
        page.driver.execute_script("document.getElementById('transcript').scrollTop = 100")
        state = page.find("#conn-state")
        page.driver.execute_script("window.socket.close()")
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
        page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected")
        time.sleep(1)  # the transcript has been loaded again by now
        top = page.driver.execute_script("return document.getElementById('transcript').scrollTop")
        assert top == 100

    def test_a_turn_from_elsewhere_leaves_a_reader_scrolled_up_where_they_were(
        self, page: Page
    ) -> None:
        # Each token of a turn streamed in from elsewhere scrolled the transcript to its end:
        # a user reading further up was taken away from it, and again at the turn's reload.
        page.connected()
        key = "agent:ops:reading-up"
        send_turns = """
            const [token, sessionKey, first, count, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            await gw.request("chat.subscribe", { sessionKey });
            for (let turn = first; turn < first + count; turn++) {
              const answered = new Promise((resolve) => gw.addEventListener("chat", (event) => {
                if (event.detail.state === "final") resolve();
              }));
              const message = `turn ${turn} ` + "words to fill the transcript ".repeat(8);
              await gw.request("chat.send", { sessionKey, message, idempotencyKey: `r${turn}` });
              await answered;
            }
            gw.stop();
            done();
            """
        page.driver.execute_async_script(send_turns, TOKEN, key, 0, 12)
        page.driver.execute_script(f"location.hash = '#chat/{key}'")
        page.until(lambda: len(page.all("#transcript .bubble")) == 24, "the transcript")
        # The opened session's scroll to its end, a frame after its messages are drawn, is done
        # before the reader scrolls up (on a loaded host it came after, and took them down).
        two_frames = (
            "const done = arguments[0];"
            "requestAnimationFrame(() => requestAnimationFrame(() => done()))"
        )
        page.driver.execute_async_script(two_frames)
        page.driver.execute_script("document.getElementById('transcript').scrollTop = 100")
        page.driver.execute_async_script(two_frames)  # its scroll event: no longer at the end
        page.driver.execute_async_script(send_turns, TOKEN, key, 12, 1)
        # Its message, which its events do not carry, comes with the transcript's reload.
        users = "return [...document.querySelectorAll('#transcript .user')].at(-1).textContent"
        page.until(lambda: "turn 12 words" in page.driver.execute_script(users), "the reload")
        page.driver.execute_async_script(two_frames)  # a scroll asked for is done by then
        top = page.driver.execute_script("return document.getElementById('transcript').scrollTop")
        assert top == 100

    def test_the_transcript_survives_a_page_reload(self, page: Page) -> None:
        page.connected()
        page.click("#chat-new")
        answer = page.chat("remember me")
        key = page.session_key()
        page.driver.refresh()
        page.until(lambda: page.find("#conn-state").get_attribute("data-state") == "connected",
                   "reconnecting from session storage")  # fmt: skip
        page.until(lambda: len(page.all("#transcript .bubble")) == 2, "the stored transcript")
        texts = [b.find_element(page.by.CSS_SELECTOR, ".text").text for b in page.all(".bubble")]
        assert texts == ["remember me", answer]
        assert page.session_key() == key

    def test_a_session_named_in_another_case_streams_its_answer(self, page: Page) -> None:
        # Keys are lowercase on the wire (agents-sessions.md §4): events name the canonical
        # key, whatever case the link had.
        page.connected()
        page.driver.execute_script("location.hash = '#chat/agent:main:Shared-Topic'")
        page.until(lambda: page.session_key() == "agent:main:shared-topic", "the canonical key")
        assert page.chat("mixed case") == "[turn 1] mixed case"
        assert not page.find("#chat-abort").is_enabled()


class TestFragment:
    """The URL's fragment names a screen and its argument; any fragment is safe to open."""

    @pytest.mark.parametrize("fragment", ["#chat/%E0%A4%A", "#sessions/%zz"])
    def test_a_malformed_escape_still_reconnects_on_reload(self, page: Page, fragment: str) -> None:
        page.connected()
        page.driver.execute_script("location.hash = arguments[0]", fragment)
        page.driver.refresh()
        page.until(lambda: page.find("#conn-state").get_attribute("data-state") == "connected",
                   "reconnecting from session storage")  # fmt: skip
        page.visible(f"#screen-{fragment[1:].split('/')[0]}")

    @pytest.mark.parametrize("fragment", ["#toString", "#__proto__", "#constructor/x"])
    def test_a_name_that_is_no_screen_opens_the_chat(self, page: Page, fragment: str) -> None:
        page.connected()
        page.go("status")
        page.driver.execute_script("location.hash = arguments[0]", fragment)
        page.visible("#screen-chat")


class TestTranscriptRendering:
    def test_tool_calls_and_reasoning_are_folded(self, page: Page) -> None:
        # No built-in provider produces them yet: the page's own renderer, given such a
        # message as OpenClaw transcripts carry it.
        summary = page.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            import("/ui/dom.js").then(({ messageNode }) => {
              const node = messageNode({ role: "assistant", content: [
                { type: "thinking", thinking: "the user wants weather" },
                { type: "toolCall", name: "weather", arguments: { city: "Oslo" } },
                { type: "text", text: "It is sunny." },
              ] });
              done([...node.querySelectorAll("details")].map((d) => [
                d.className, d.open, d.querySelector("summary").textContent,
                d.querySelector("pre").textContent,
              ]).concat([[node.querySelector(".text").textContent]]));
            });
            """
        )
        assert summary == [
            ["reasoning", False, "Reasoning", "the user wants weather"],
            ["tool", False, "Tool: weather", '{\n  "city": "Oslo"\n}'],
            ["It is sunny."],
        ]


class TestSessions:
    def test_a_chat_session_appears_in_the_list_with_its_transcript(self, page: Page) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("listed here")
        key = page.session_key()
        page.go("sessions")
        row = page.visible(f'#sessions-table tr[data-key="{key}"]')
        assert "listed here" in row.text  # the preview of its last message
        row.find_element(page.by.CSS_SELECTOR, "button").click()
        page.until(lambda: page.text("#session-detail-key") == key, "the session's detail")
        page.until(lambda: "[turn 1] listed here" in page.text("#session-transcript"),
                   "its transcript")  # fmt: skip
        page.screenshot("sessions")

    def test_search_narrows_the_list(self, page: Page) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("findable")
        key = page.session_key()
        page.go("sessions")
        page.type("#sessions-search", key.rsplit(":", 1)[1])

        def listed() -> list[str]:
            return [r.get_attribute("data-key") for r in page.all("#sessions-table tbody tr")]

        page.until(lambda: listed() == [key], "only the matching row")

    def test_the_list_is_that_of_the_last_search_whichever_answer_comes_last(
        self, page: Page
    ) -> None:
        page.connected()
        # 150 sessions: the unfiltered list takes three more preview calls than one match.
        label_sessions(page, [*(f"agent:ops:bulk-{i}" for i in range(150)), "agent:ops:needle"])
        page.go("sessions")
        page.until(lambda: page.text("#sessions-count").endswith("sessions"), "the list")
        page.driver.execute_script(
            """
            const search = document.getElementById("sessions-search");
            for (const text of ["", "needle"]) {
              search.value = text;
              document.getElementById("sessions-refresh").click();
            }
            """
        )

        def listed() -> list[str]:
            return [r.get_attribute("data-key") for r in page.all("#sessions-table tbody tr")]

        page.until(lambda: listed() == ["agent:ops:needle"], "the match")
        time.sleep(1.5)  # the unfiltered answer would have come by now
        assert listed() == ["agent:ops:needle"]
        assert page.text("#sessions-count") == "1 session"

    def test_the_detail_is_that_of_the_last_row_picked_whichever_answer_comes_last(
        self, page: Page
    ) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("picked first")
        first = page.session_key()
        page.click("#chat-new")
        page.chat("picked last")
        last = page.session_key()
        page.go("sessions")
        page.visible(f'#sessions-table tr[data-key="{first}"] button')
        page.driver.execute_script(HOLD_BACK, "chat.history", first)
        for key in (first, last):
            page.find(f'#sessions-table tr[data-key="{key}"] button').click()
        page.until(lambda: "picked last" in page.text("#session-transcript"), "its transcript")
        time.sleep(1.5)  # the held answer has come by now
        assert page.text("#session-detail-key") == last
        assert "picked first" not in page.text("#session-transcript")
        assert "picked last" in page.text("#session-transcript")

    def test_a_long_key_under_a_label_wraps_on_a_phone(self, page: Page) -> None:
        # The key under a label did not wrap: the table scrolled sideways on a phone. With
        # the last message's preview under it, as the list shows it.
        page.connected()
        key = "agent:ops:" + "long-session-key-" * 6
        patched = page.driver.execute_async_script(
            """
            const [token, key, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            await gw.request("sessions.patch", { key, label: "labelled" });
            await gw.request("chat.subscribe", { sessionKey: key });
            const answered = new Promise((resolve) => gw.addEventListener("chat", (event) => {
              if (event.detail.state === "final") resolve();
            }));
            const message = "a preview long enough to be cut short ".repeat(4);
            await gw.request("chat.send", { sessionKey: key, message, idempotencyKey: key });
            await answered;
            gw.stop();
            done(true);
            """,
            TOKEN,
            key,
        )
        assert patched
        set_viewport(page.driver, *PHONE)
        page.go("sessions")
        page.type("#sessions-search", "long-session-key")
        page.visible(f'#sessions-table tr[data-key="{key}"]')
        page.until(lambda: len(page.all("#sessions-table tbody tr")) == 1, "only the long one")
        wrap = page.find("#screen-sessions .table-wrap")
        widths = page.driver.execute_script(
            "return [arguments[0].scrollWidth, arguments[0].clientWidth]", wrap
        )
        assert widths[0] <= widths[1]

    def test_a_refresh_for_a_change_elsewhere_leaves_the_focus_on_its_row(self, page: Page) -> None:
        # A turn from another client reloads the list: the row a keyboard user was on was
        # built again, and the focus fell to the start of the page.
        page.connected()
        page.click("#chat-new")
        page.chat("stay on me")
        mine = page.session_key()
        page.go("sessions")
        button = page.visible(f'#sessions-table tr[data-key="{mine}"] button')
        page.driver.execute_script("arguments[0].focus()", button)
        page.driver.execute_async_script(
            """
            const [token, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            const sessionKey = "agent:ops:elsewhere";
            const idempotencyKey = `${Date.now()}`;
            const message = "from elsewhere";
            await gw.request("chat.send", { sessionKey, message, idempotencyKey });
            gw.stop();
            done();
            """,
            TOKEN,
        )
        page.until(lambda: "from elsewhere" in page.text("#sessions-table"), "the list refreshed")
        focused = page.driver.switch_to.active_element
        assert focused.text == mine
        assert focused.find_element(page.by.XPATH, "ancestor::tr").get_attribute("data-key") == mine

    @pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
    def test_the_detail_of_a_row_far_down_the_list_is_in_view(
        self, page: Page, viewport: tuple[int, int]
    ) -> None:
        # The detail sat at the top of the list (beside it, or above it on a phone), out of
        # sight of a row picked after scrolling down: nothing seemed to happen.
        page.connected()
        label_sessions(page, [f"agent:ops:far-{i}" for i in range(40)])
        set_viewport(page.driver, *viewport)
        page.go("sessions")
        page.type("#sessions-search", "far-")
        page.until(lambda: len(page.all("#sessions-table tbody tr")) == 40, "the 40 rows")
        last = page.all("#sessions-table tbody tr button")[-1]
        page.driver.execute_script("arguments[0].scrollIntoView()", last)
        last.click()
        page.visible("#session-detail")
        time.sleep(0.5)  # a smooth scroll has ended
        top, bottom = page.driver.execute_script(
            "const r = document.getElementById('session-detail-key').getBoundingClientRect();"
            " return [r.top, r.bottom]"
        )
        assert top >= 0
        assert bottom <= viewport[1]

    def test_the_confirmation_of_a_long_key_fits_a_phone(self, page: Page) -> None:
        # The dialog grew with the key, an unbroken word, past the phone's width: its end and
        # the Reset button were off screen.
        page.connected()
        key = "agent:ops:" + "confirmthislongkey" * 6
        page.driver.execute_async_script(
            """
            const [token, key, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            await gw.request("sessions.patch", { key, label: "confirmed" });
            gw.stop();
            done();
            """,
            TOKEN,
            key,
        )
        set_viewport(page.driver, *PHONE)
        page.go("sessions")
        page.type("#sessions-search", "confirmthislongkey")
        page.visible(f'#sessions-table tr[data-key="{key}"] button').click()
        page.click("#session-reset")
        page.visible("#confirm")
        left, right = page.driver.execute_script(
            "const r = document.getElementById('confirm').getBoundingClientRect();"
            " return [r.left, r.right]"
        )
        assert left >= 0
        assert right <= PHONE[0]
        page.click("#confirm button[value=cancel]")

    def test_delete_asks_first_then_removes_the_session(self, page: Page) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("delete me")
        key = page.session_key()
        page.go("sessions")
        page.visible(f'#sessions-table tr[data-key="{key}"] button').click()
        page.click("#session-delete")
        dialog = page.visible("#confirm")
        assert "cannot be undone" in dialog.text
        page.click("#confirm-ok")
        page.until(lambda: not page.all(f'#sessions-table tr[data-key="{key}"]'), "the row gone")

    def test_a_refused_delete_is_shown_as_an_alert(self, page: Page) -> None:
        page.connected()
        page.driver.execute_script("location.hash = '#chat/agent:main:main'")
        page.until(lambda: page.session_key() == "agent:main:main", "the main session")
        page.chat("the main one")
        page.go("sessions")
        page.visible('#sessions-table tr[data-key="agent:main:main"] button').click()
        page.click("#session-delete")
        page.click("#confirm-ok")
        alert = page.visible("#sessions-error")
        assert alert.get_attribute("role") == "alert"
        assert alert.text == "Cannot delete the main session (agent:main:main)."
        assert page.text("#session-detail-meta").startswith("2 messages")
        page.visible('#sessions-table tr[data-key="agent:main:main"] button').click()
        page.until(lambda: not page.find("#sessions-error").is_displayed(), "the alert gone")

    def test_reset_asks_first_then_starts_an_empty_transcript(self, page: Page) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("reset me")
        key = page.session_key()
        page.go("sessions")
        page.visible(f'#sessions-table tr[data-key="{key}"] button').click()
        page.until(lambda: "reset me" in page.text("#session-transcript"), "the transcript")
        page.click("#session-reset")
        page.click("#confirm-ok")
        page.until(lambda: page.text("#session-transcript") == "Empty transcript.", "emptied")
        assert page.all(f'#sessions-table tr[data-key="{key}"]')  # the session stays


# Another client of the gateway archives the session `arguments[1]`, as `openclaw sessions
# archive` does: with the session id it read.
ARCHIVE_ELSEWHERE = """
const [token, key, done] = arguments;
const { Gateway } = await import("/ui/gateway.js");
const gw = new Gateway();
await gw.start(`ws://${location.host}`, { token });
const read = await gw.request("chat.history", { sessionKey: key, limit: 1 });
await gw.request("sessions.patch", { key, archived: true, expectedSessionId: read.sessionId });
gw.stop();
done();
"""


class TestArchived:
    def row(self, page: Page, key: str) -> str:
        return f'#sessions-table tr[data-key="{key}"]'

    def test_a_session_archived_elsewhere_is_found_under_archived_and_restored(
        self, page: Page
    ) -> None:
        # Archived by another client, a session left the list and could be found nowhere in
        # the page: neither restored nor deleted.
        page.connected()
        page.click("#chat-new")
        page.chat("archived elsewhere")
        key = page.session_key()
        page.driver.execute_async_script(ARCHIVE_ELSEWHERE, TOKEN, key)
        page.go("sessions")
        page.until(lambda: page.all("#sessions-table tbody tr"), "the list")
        assert not page.all(self.row(page, key))
        page.click("#sessions-archived")
        page.visible(self.row(page, key) + " button").click()
        page.until(lambda: "archived" in page.text("#session-detail-meta"), "its state")
        assert "archived elsewhere" in page.text("#session-transcript")
        assert not page.find("#session-reset").is_displayed()  # refused while archived
        assert page.text("#session-archive") == "Restore"
        page.click("#session-archive")
        page.until(lambda: not page.all(self.row(page, key)), "the row gone from the archived")
        assert page.text("#session-archive") == "Archive"
        page.click("#sessions-archived")
        page.visible(self.row(page, key))

    def test_a_session_archived_here_is_deleted_from_the_archived(self, page: Page) -> None:
        page.connected()
        page.click("#chat-new")
        page.chat("archive then delete")
        key = page.session_key()
        page.go("sessions")
        page.visible(self.row(page, key) + " button").click()
        page.until(lambda: page.text("#session-archive") == "Archive", "the detail")
        page.click("#session-archive")
        page.until(lambda: not page.all(self.row(page, key)), "the row gone from the list")
        page.click("#sessions-archived")
        page.visible(self.row(page, key) + " button").click()
        page.until(lambda: page.text("#session-archive") == "Restore", "the archived detail")
        page.click("#session-delete")
        page.click("#confirm-ok")
        page.until(lambda: not page.all(self.row(page, key)), "the row gone from the archived")
        assert not page.find("#session-detail").is_displayed()
        page.click("#sessions-archived")
        page.until(lambda: page.all("#sessions-table tbody tr[data-key]"), "the list")
        assert not page.all(self.row(page, key))

    def test_an_archive_pressed_while_the_row_picked_loads_archives_that_row(
        self, page: Page
    ) -> None:
        # Pressed before the picked session's detail came (a slow gateway), Archive named the
        # session shown before it (its session id): the gateway refused the change.
        page.connected()
        keys = ["agent:ops:stale-a", "agent:ops:stale-b"]
        label_sessions(page, keys)
        page.go("sessions")
        page.type("#sessions-search", "stale-")
        # Clicked by selector: the list is drawn again for the sessions' changes.
        click = "document.querySelector(arguments[0]).click()"
        page.visible(self.row(page, keys[0]) + " button")
        page.driver.execute_script(click, self.row(page, keys[0]) + " button")
        page.until(lambda: "messages" in page.text("#session-detail-meta"), "the first detail")
        page.driver.execute_script(HOLD_METHOD, "chat.history", 800)
        page.driver.execute_script(click, self.row(page, keys[1]) + " button")
        page.driver.execute_script(click, "#session-archive")
        page.until(lambda: not page.all(self.row(page, keys[1])), "the row gone from the list")
        assert not page.find("#sessions-error").is_displayed()
        assert page.all(self.row(page, keys[0]))

    def test_a_refused_archive_is_shown_as_an_alert(self, page: Page) -> None:
        page.connected()
        page.driver.execute_script("location.hash = '#chat/agent:main:main'")
        page.until(lambda: page.session_key() == "agent:main:main", "the main session")
        page.chat("the main one stays")
        page.go("sessions")
        page.visible(self.row(page, "agent:main:main") + " button").click()
        page.until(lambda: page.text("#session-archive") == "Archive", "the detail")
        page.click("#session-archive")
        assert page.visible("#sessions-error").text == "Cannot archive an agent's main session."
        assert page.all(self.row(page, "agent:main:main"))


class TestStatus:
    def test_shows_health_version_agents_and_connections(self, page: Page) -> None:
        page.connected()
        page.go("status")
        page.until(lambda: page.all(".stat"), "the status cards")
        cards = {c.get_attribute("data-stat"): c.text for c in page.all(".stat")}
        assert cards["health"].startswith("HEALTH\nOK")
        assert "clawgate" in cards["version"]
        assert int(cards["connections"].split("\n")[1]) >= 1  # earlier pages may still be closing
        rows = [
            [cell.text for cell in row.find_elements(page.by.CSS_SELECTOR, "td")]
            for row in page.all("#status-agents tbody tr")
        ]
        assert rows == [
            ["maindefault", "main", "echo/echo", "–"],
            ["ops", "Operations", "echo/echo", "–"],
        ]
        page.screenshot("status")

    def test_an_error_is_announced_once_and_cleared_when_the_status_comes_back(
        self, page: Page
    ) -> None:
        # The error replaced the cards with an "Error" card, without an alert role: a screen
        # reader never heard of it. Announced, it must not be again on each 5 s refresh.
        page.driver.execute_script(REFUSE)
        page.connected()
        page.go("status")
        page.until(lambda: page.all(".stat"), "the status cards")
        page.driver.execute_script("window.refuse.usage = { days: 'many' }")
        sent = page.driver.execute_script("return window.sent.usage")
        alert = page.until(
            lambda: [a for a in page.all("#screen-status [role=alert]") if a.is_displayed()],
            "the error announced",
        )[0]
        assert "days" in alert.text
        page.driver.execute_script(WATCH_ALERT)
        page.until(lambda: page.driver.execute_script("return window.sent.usage") >= sent + 2,
                   "a refresh with the error still there", 8)  # fmt: skip
        time.sleep(0.5)  # its answer shown
        assert page.driver.execute_script("return window.changes") == 0
        assert alert.is_displayed()
        page.driver.execute_script("window.refuse.usage = null")
        page.until(lambda: not alert.is_displayed(), "the error cleared", 8)
        assert page.all('.stat[data-stat="health"]')

    def test_a_request_never_answered_is_shown_and_the_next_refresh_asks_again(
        self, page: Page
    ) -> None:
        # A `health` the gateway never answered left the screen refreshing forever: the cards
        # of before stayed, and no refresh was ever sent again.
        page.driver.execute_script(REFUSE)
        page.driver.execute_script(SHORT_REQUEST_TIMEOUT, REQUEST_TIMEOUT_MS)
        page.connected()
        page.go("status")
        page.until(lambda: page.all(".stat"), "the status cards")
        sent = page.driver.execute_script("return window.sent['system.info']")
        page.driver.execute_script(NEVER_SENT, "health")
        alert = page.visible("#status-error")
        assert "did not answer health" in alert.text
        page.until(lambda: page.driver.execute_script("return window.sent['system.info']")
                   >= sent + 2, "a refresh after the one unanswered")  # fmt: skip
        page.until(lambda: not alert.is_displayed(), "the error cleared")
        assert page.all('.stat[data-stat="health"]')

    def test_a_stalled_gateway_is_asked_once_not_every_5_s(self, page: Page) -> None:
        # Each 5 s refresh sent its three requests while the last were unanswered: they piled
        # up against the connection's limit of requests in flight, and answered out of order.
        page.driver.execute_script(REFUSE)
        page.connected()
        page.go("status")
        page.until(lambda: page.all(".stat"), "the status cards")
        os.kill(page.gateway.proc.pid, signal.SIGSTOP)
        try:
            sent = page.driver.execute_script("return window.sent['system.info']")
            time.sleep(11)  # two refreshes due meanwhile
            stalled = page.driver.execute_script("return window.sent['system.info']")
        finally:
            os.kill(page.gateway.proc.pid, signal.SIGCONT)
        assert stalled - sent <= 1
        page.until(lambda: page.driver.execute_script("return window.sent['system.info']")
                   > stalled, "refreshed again once answered")  # fmt: skip
        assert not page.find("#status-error").is_displayed()


def log_lines(page: Page, name: str, count: int) -> None:
    """`count` requests of `/{name}-{n}`, each a 404 the gateway logs, on one connection; in
    runs of 400 each shown in the Logs screen before the next (a poll takes the newest 500)."""
    host, port = page.gateway.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    texts = "return [...document.querySelectorAll('.log-line')].map(e => e.textContent)"
    try:
        for n in range(count):
            connection.request("GET", f"/{name}-{n}")
            connection.getresponse().read()
            if n % 400 == 399 or n == count - 1:
                last = f"path=/{name}-{n} "

                def shown(last: str = last) -> bool:
                    return any(last in t for t in page.driver.execute_script(texts))

                page.until(shown, f"the line of /{name}-{n}", timeout=30)
    finally:
        connection.close()


# The log box's line at its top edge, kept in `window.reading`: its text, and how far below
# the box's top it is drawn.
READING = """
const box = document.getElementById("logs-lines");
const top = box.getBoundingClientRect().top;
const node = document.elementFromPoint(box.getBoundingClientRect().left + 30, top + 8)
  .closest(".log-line");
window.reading = node;
return [node.textContent, node.getBoundingClientRect().top - top];
"""

# Where `window.reading` is now: still on the page, how far below the box's top, and whether
# the box is scrolled to its end.
READ_AGAIN = """
const box = document.getElementById("logs-lines");
const top = box.getBoundingClientRect().top;
return [window.reading.isConnected, window.reading.getBoundingClientRect().top - top,
        box.scrollTop + box.clientHeight >= box.scrollHeight - 2];
"""


class TestLogs:
    def test_lines_dropped_above_leave_the_reader_where_they_were(self, page: Page) -> None:
        # The page keeps 2,000 lines: those a poll pushed out were taken off the top, and the
        # lines a user scrolled up to read moved up under them, by as much as was removed.
        # Chromium anchors the scroll position itself (CSS scroll anchoring); not every browser
        # does, so this one is told not to, as they behave.
        page.connected()
        page.go("logs")
        page.driver.execute_script(
            "document.getElementById('logs-lines').style.overflowAnchor = 'none'"
        )
        page.until(lambda: page.all(".log-line"), "the first lines")
        log_lines(page, "kept", 1500)
        page.driver.execute_script(
            "const box = document.getElementById('logs-lines');"
            "box.scrollTop = box.scrollHeight / 2;"
            "window.first = document.querySelector('.log-line');"
        )
        text, offset = page.driver.execute_script(READING)
        log_lines(page, "pushed", 800)
        assert not page.driver.execute_script("return window.first.isConnected")
        connected, now, at_end = page.driver.execute_script(READ_AGAIN)
        assert connected, text
        assert abs(now - offset) < 1, (text, offset, now)
        assert not at_end
        # At the end, the box follows the tail as lines are dropped and added.
        page.driver.execute_script(
            "const box = document.getElementById('logs-lines'); box.scrollTop = box.scrollHeight;"
        )
        log_lines(page, "followed", 600)
        page.until(lambda: page.driver.execute_script(READ_AGAIN)[2], "the end in view")

    def test_lines_a_read_leaves_out_are_marked_as_missing(self, page: Page) -> None:
        # A read takes the newest 500 lines: more logged between two (a pause, a burst) were
        # left out, and the lines on either side of the hole read as one after the other.
        page.connected()
        page.go("logs")
        page.until(lambda: page.all(".log-line"), "the first lines")
        page.click("#logs-pause")
        host, port = page.gateway.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            for n in range(600):
                connection.request("GET", f"/burst-{n}")
                connection.getresponse().read()
        finally:
            connection.close()
        page.click("#logs-pause")
        texts = "return [...document.querySelectorAll('#logs-lines > *')].map(e => e.textContent)"
        shown = page.until(
            lambda: (
                [t for t in page.driver.execute_script(texts) if "path=/burst-599 " in t]
                and page.driver.execute_script(texts)
            ),
            "the burst's last line",
        )
        burst = [i for i, t in enumerate(shown) if "path=/burst-" in t]
        gaps = [i for i, t in enumerate(shown) if t.startswith("Lines are missing here")]
        assert len(gaps) == 1 and gaps[0] < burst[0], shown[-510:-495]
        assert "path=/burst-0 " not in "".join(shown)

    def test_tails_the_gateway_log_and_filters_by_level(self, page: Page) -> None:
        page.connected()
        page.go("logs")
        page.until(lambda: page.all(".log-line.level-info"), "info lines")
        # Read in one script: the live tail re-renders its lines, and an element found in one
        # WebDriver call may be gone by the next.
        texts = "return [...document.querySelectorAll('.log-line')].map(e => e.textContent)"
        page.until(
            lambda: any("ws_connected" in t for t in page.driver.execute_script(texts)),
            "the ws_connected line",
        )
        page.screenshot("logs")
        page.find("#logs-level").send_keys("error")
        page.until(lambda: not page.all(".log-line.level-info"), "info lines hidden")

    def test_a_refused_tail_is_shown_and_cleared_when_tailing_works_again(self, page: Page) -> None:
        # Every logs.tail error was swallowed: the lines just stopped coming.
        page.driver.execute_script(REFUSE)
        page.connected()
        page.go("logs")
        page.until(lambda: page.all(".log-line"), "the first lines")
        page.driver.execute_script("window.refuse['logs.tail'] = { limit: 'all' }")
        alert = page.visible("#logs-error")
        assert alert.get_attribute("role") == "alert"
        assert "limit" in alert.text
        page.driver.execute_script("window.refuse['logs.tail'] = null")
        page.until(lambda: not alert.is_displayed(), "the error cleared")

    def test_a_tail_never_answered_is_shown_and_tailing_goes_on(self, page: Page) -> None:
        # A logs.tail the gateway never answered left the screen polling forever: no line came
        # again, and nothing said so.
        page.driver.execute_script(SHORT_REQUEST_TIMEOUT, REQUEST_TIMEOUT_MS)
        page.connected()
        page.go("logs")
        page.until(lambda: page.all(".log-line"), "the first lines")
        page.driver.execute_script(NEVER_SENT, "logs.tail")
        alert = page.visible("#logs-error")
        assert "did not answer logs.tail" in alert.text
        with contextlib.suppress(OSError):  # a 404, which the gateway logs
            urllib.request.urlopen(f"{page.gateway.url}/after-the-unanswered-tail", timeout=10)
        texts = "return [...document.querySelectorAll('.log-line')].map(e => e.textContent)"
        shown = lambda: page.driver.execute_script(texts)  # noqa: E731
        page.until(lambda: any("unanswered-tail" in t for t in shown()), "the line logged after")
        page.until(lambda: not alert.is_displayed(), "the error cleared")

    def test_the_pause_button_says_what_it_does_and_is_not_also_pressed(self, page: Page) -> None:
        # It read "Resume" and was aria-pressed: a screen reader said "Resume, pressed", which
        # reads as "resuming". Its label says what a press does; a pressed state would say so twice.
        page.connected()
        page.go("logs")
        page.until(lambda: page.all(".log-line"), "the first lines")
        button = page.find("#logs-pause")
        assert (button.text, button.get_attribute("aria-pressed")) == ("Pause", None)
        button.click()
        assert (button.text, button.get_attribute("aria-pressed")) == ("Resume", None)
        count = len(page.all(".log-line"))
        with contextlib.suppress(OSError):  # a 404, which the gateway logs
            urllib.request.urlopen(f"{page.gateway.url}/while-paused", timeout=10)
        time.sleep(1.5)  # a poll or more would have come meanwhile
        assert len(page.all(".log-line")) == count
        button.click()
        assert (button.text, button.get_attribute("aria-pressed")) == ("Pause", None)
        page.until(lambda: len(page.all(".log-line")) > count, "the tail going on")

    def test_the_filter_matches_the_line_as_shown(self, page: Page) -> None:
        # The filter was matched against the raw line: its bidi control shown as "⟨U+202E⟩"
        # and its fields as "name=value", the text the user read was matched by nothing.
        with contextlib.suppress(OSError):  # a 404, which the gateway logs
            urllib.request.urlopen(f"{page.gateway.url}/filter-probe%E2%80%AE-x", timeout=10)
        page.connected()
        page.go("logs")
        line = page.until(
            lambda: [n for n in page.all(".log-line") if "filter-probe" in n.text], "the line"
        )[-1]
        assert "filter-probe⟨U+202E⟩-x" in line.text
        page.type("#logs-filter", "filter-probe⟨u+202e⟩-x")
        page.until(lambda: len(page.all(".log-line")) == 1, "the line alone")
        assert "filter-probe" in page.text(".log-line")

    def test_a_poll_adds_its_lines_and_leaves_those_shown_alone(self, page: Page) -> None:
        # Each poll that brought a line drew all the lines kept (up to 2,000) again.
        page.connected()
        page.go("logs")
        page.until(lambda: page.all(".log-line"), "the first lines")
        page.driver.execute_script("window.first = document.querySelector('.log-line')")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{page.gateway.url}/append-probe", timeout=10)
        page.until(lambda: [n for n in page.all(".log-line") if "append-probe" in n.text],
                   "the new line")  # fmt: skip
        assert page.driver.execute_script("return window.first.isConnected")
        # A filter typed draws the lines again, those it matches; then a poll adds to them.
        page.type("#logs-filter", "append-probe")
        page.until(lambda: "append-probe" in page.text(".log-line"), "the filtered lines")
        page.driver.execute_script("window.first = document.querySelector('.log-line')")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{page.gateway.url}/append-probe-2", timeout=10)
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{page.gateway.url}/not-matched", timeout=10)
        page.until(lambda: len(page.all(".log-line")) == 2, "the new matching line")
        assert page.driver.execute_script("return window.first.isConnected")
        assert "append-probe-2" in page.all(".log-line")[1].text

    def test_a_stalled_gateway_does_not_duplicate_lines(self, page: Page) -> None:
        # Polls fired while one is unanswered carry the same cursor; all were answered, and
        # each appended the same lines.
        page.connected()
        page.go("logs")
        page.until(lambda: page.all(".log-line"), "the first lines")
        stop = threading.Event()

        def traffic() -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{page.gateway.url}/stalled-{n}", timeout=10)
                time.sleep(0.05)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            time.sleep(1.5)
            os.kill(page.gateway.proc.pid, signal.SIGSTOP)
            time.sleep(3.5)  # about three polls fired meanwhile
            os.kill(page.gateway.proc.pid, signal.SIGCONT)
            time.sleep(2.5)
        finally:
            os.kill(page.gateway.proc.pid, signal.SIGCONT)
            stop.set()
            sender.join(15)
        texts = page.driver.execute_script(
            "return [...document.querySelectorAll('.log-line')].map(e => e.textContent)"
        )
        stalled = [t for t in texts if "/stalled-" in t]
        assert stalled
        assert [t for t, count in collections.Counter(stalled).items() if count > 1] == []


# The hello-ok the page reads asks for a tick every second (the gateway's is 30 s): a gateway
# that goes silent is then noticed in seconds, not minutes.
TICK_EVERY_SECOND = """
const listen = WebSocket.prototype.addEventListener;
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type !== "message") return listen.call(this, type, listener, ...rest);
  return listen.call(this, type, (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "res" && frame.payload && frame.payload.type === "hello-ok") {
      frame.payload.policy.tickIntervalMs = 1000;
      return listener({ data: JSON.stringify(frame) });
    }
    listener(message);
  }, ...rest);
};
"""

# `window.inject(frame)` hands a frame to the page as if its gateway had sent it on the
# current socket; `window.connects` counts the connects the page sends.
INJECT = """
const listen = WebSocket.prototype.addEventListener;
const send = WebSocket.prototype.send;
window.connects = 0;
WebSocket.prototype.send = function (data) {
  if (JSON.parse(data).method === "connect") window.connects++;
  send.call(this, data);
};
WebSocket.prototype.addEventListener = function (type, listener, ...rest) {
  if (type === "message") {
    window.inject = (frame) => listener({ data: JSON.stringify(frame) });
  }
  return listen.call(this, type, listener, ...rest);
};
"""


class TestHandshake:
    def test_a_challenge_after_the_handshake_is_ignored(self, page: Page) -> None:
        # A second connect.challenge (a broken or hostile gateway) made the page send connect
        # again; the gateway refused it, and the page gave up a working connection.
        page.driver.execute_script(INJECT)
        page.connected()
        page.driver.execute_script(
            "window.inject({ type: 'event', event: 'connect.challenge',"
            " payload: { nonce: 'again', ts: Date.now() } })"
        )
        time.sleep(1)  # the refusal would have come by now
        assert page.find("#conn-state").get_attribute("data-state") == "connected"
        assert page.driver.execute_script("return window.connects") == 1
        page.go("status")
        page.until(lambda: page.all('.stat[data-stat="health"]'), "the status, answered")


class TestSilentGateway:
    def test_a_slow_reconnect_keeps_the_navigation_and_disconnect(self, page: Page) -> None:
        # Each reconnect attempt hid the navigation and Disconnect until it was answered (up
        # to 10 s): the focus on them fell to the start of the page, and a user could not
        # give up on a gateway that was not coming back.
        from selenium.webdriver.common.keys import Keys

        page.driver.execute_script(DETOUR)
        page.connected()
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            page.driver.execute_script(f"window.detour = 'ws://127.0.0.1:{port}'")
            page.driver.execute_script("document.getElementById('disconnect').focus()")
            page.driver.execute_script("window.socket.close()")
            state = page.find("#conn-state")
            page.until(lambda: state.get_attribute("data-state") == "connecting", "an attempt")
            assert page.find("#nav").is_displayed()
            assert page.find("#screen-chat").is_displayed()
            assert page.driver.switch_to.active_element.get_attribute("id") == "disconnect"
            page.driver.switch_to.active_element.send_keys(Keys.ENTER)
            page.until(lambda: state.get_attribute("data-state") == "idle", "disconnected")
            page.visible("#screen-connect")

    def test_a_gateway_gone_silent_is_shown_as_lost_and_reconnected(self, page: Page) -> None:
        # A stalled process, or a link dropped without a word (a laptop asleep, another
        # network): the socket stays open, and the page said "Connected" for as long.
        page.driver.execute_script(TICK_EVERY_SECOND)
        page.connected()
        page.go("logs")  # polls each second: answers keep the connection alive meanwhile
        time.sleep(2.5)
        state = page.find("#conn-state")
        assert state.get_attribute("data-state") == "connected"
        os.kill(page.gateway.proc.pid, signal.SIGSTOP)
        try:
            page.until(lambda: state.get_attribute("data-state") == "waiting", "the lost state")
            assert state.text == "Connection lost, reconnecting…"
        finally:
            os.kill(page.gateway.proc.pid, signal.SIGCONT)
        page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)


# Every text `#sessions-error` and `#conn-slow` have held, in `window.shown`.
RECORD_SLOW = """
window.shown = { error: [], slow: [] };
for (const [name, id] of [["error", "sessions-error"], ["slow", "conn-slow"]]) {
  const node = document.getElementById(id);
  new MutationObserver(() => {
    if (!node.hidden && node.textContent) window.shown[name].push(node.textContent);
  }).observe(node, { childList: true, characterData: true, subtree: true, attributes: true });
}
"""


class TestSlowGateway:
    def test_an_answer_slower_than_the_timeout_is_waited_for_and_shown(self, page: Page) -> None:
        # A sessions.list a slow store answered after 20 s was shown as failed ("did not
        # answer within 20 s") and its answer, when it came, dropped: the list stayed empty.
        # Now the header says what is still waited for, and the answer is shown.
        page.driver.execute_script(SHORT_REQUEST_TIMEOUT, REQUEST_TIMEOUT_MS)
        page.connected()
        page.driver.execute_script(RECORD_SLOW)
        page.driver.execute_script(HOLD_METHOD, "sessions.list", 1500)
        page.go("sessions")
        slow = page.visible("#conn-slow")
        assert slow.text == "Still waiting for the gateway's answer to sessions.list…"
        assert slow.get_attribute("role") == "status"
        page.until(lambda: page.all("#sessions-table tbody tr"), "the list")
        page.until(lambda: not slow.is_displayed(), "the wait over")
        assert page.driver.execute_script("return window.shown") == {
            "error": [],
            "slow": ["Still waiting for the gateway's answer to sessions.list…"],
        }

    def test_a_wait_can_be_given_up_and_the_form_is_free_again(self, page: Page) -> None:
        # A config.patch never answered left Save disabled for good: the notice said the page
        # still waited, with no way to stop. "Stop waiting" drops the wait: the form says its
        # change may or may not have been made, and Save can be pressed again.
        page.driver.execute_script(SHORT_REQUEST_TIMEOUT, REQUEST_TIMEOUT_MS)
        page.connected()
        page.go("config")
        page.type('input[data-path="gateway.reload.debounceMs"]', "275")
        page.driver.execute_script(NEVER_SENT, "config.patch")
        page.click("#config-save")
        page.visible("#conn-slow")
        assert not page.find("#config-save").is_enabled()
        page.click("#conn-slow-stop")
        page.until(lambda: not page.find("#conn-slow").is_displayed(), "the notice gone")
        assert not page.find("#conn-slow-stop").is_displayed()
        assert page.text("#config-message") == (
            "Stopped waiting for the gateway's answer to config.patch: it may still have done it."
        )
        assert page.find("#config-save").is_enabled()
        page.click("#config-save")
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")

    def test_a_message_whose_wait_is_given_up_goes_back_and_the_focus_stays_in_the_page(
        self, page: Page
    ) -> None:
        # "Stop waiting" hides itself once pressed: the focus fell to the page's body, a
        # keyboard user sent back to its start. The message goes back to its box, which
        # takes the focus.
        page.driver.execute_script(SHORT_REQUEST_TIMEOUT, REQUEST_TIMEOUT_MS)
        page.connected()
        page.click("#chat-new")
        page.driver.execute_script(NEVER_SENT, "chat.send")
        page.type("#chat-input", "never answered")
        page.click("#chat-send")
        from selenium.webdriver.common.keys import Keys

        page.visible("#conn-slow-stop").send_keys(Keys.ENTER)
        page.until(lambda: not page.find("#conn-slow").is_displayed(), "the notice gone")
        assert page.find("#chat-input").get_attribute("value") == "never answered"
        assert "Stopped waiting" in page.text("#chat-error")
        active = "return document.activeElement.id"
        assert page.until(lambda: page.driver.execute_script(active), "a focus") == "chat-input"


class TestConfig:
    def test_shows_the_config_with_secrets_redacted(self, page: Page) -> None:
        page.connected()
        page.go("config")
        token = page.visible('[data-path="gateway.auth.token"]')
        field = token.find_element(page.by.CSS_SELECTOR, "input")
        assert field.get_attribute("type") == "password"
        assert field.get_attribute("value") == ""
        assert "redacted" in token.text
        assert TOKEN not in page.driver.page_source
        bind = page.find('input[data-path="gateway.bind"]')
        assert bind.get_attribute("value") == "loopback"
        page.screenshot("config")

    def test_a_bad_patch_shows_the_error_at_the_field(self, page: Page) -> None:
        page.connected()
        page.go("config")
        page.type('input[data-path="gateway.port"]', "70000")
        page.click("#config-save")
        error = page.visible('[data-path="gateway.port"] .field-error')
        assert error.text.startswith("must be")
        assert page.find('input[data-path="gateway.port"]').get_attribute("aria-invalid") == "true"
        assert page.text("#config-message") == "The gateway refused the change."

    def test_a_good_patch_is_saved_to_the_file_with_the_secrets_kept(self, page: Page) -> None:
        page.connected()
        page.go("config")
        page.type('input[data-path="gateway.reload.debounceMs"]', "350")
        page.click("#config-save")
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
        saved = json.loads(page.gateway_config_path().read_text())
        assert saved["gateway"]["reload"] == {"debounceMs": 350}
        assert saved["gateway"]["auth"]["token"] == TOKEN
        field = page.find('input[data-path="gateway.reload.debounceMs"]')
        assert field.get_attribute("value") == "350"  # reloaded from config.get

    def test_a_number_field_emptied_and_saved_goes_back_to_its_default(self, page: Page) -> None:
        # An emptied number is sent as null, which deletes the key from the file: the gateway
        # uses its default again, and the form, reloaded, shows it.
        field = 'input[data-path="gateway.reload.debounceMs"]'
        page.connected()
        page.go("config")
        page.type(field, "340")
        page.click("#config-save")
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
        from selenium.webdriver.common.keys import Keys

        # Emptied as a user does (selenium's clear() sends no input event); the empty field
        # says what saving it does.
        page.type(field, Keys.CONTROL + "a" + Keys.DELETE, clear=False)
        assert page.find(field).get_attribute("placeholder") == "default"
        page.click("#config-save")
        page.until(
            lambda: "debounceMs" not in page.gateway_config_path().read_text(), "the key deleted"
        )
        page.until(lambda: page.find(field).get_attribute("value") == "300", "the default shown")

    def test_a_save_by_keyboard_leaves_the_focus_on_its_outcome(self, page: Page) -> None:
        # The focused Save button is disabled while saving (and after, with nothing left to
        # save): the focus fell to the start of the page.
        from selenium.webdriver.common.keys import Keys

        page.connected()
        page.go("config")
        page.type('input[data-path="gateway.reload.debounceMs"]', "360")
        page.driver.execute_script("document.getElementById('config-save').focus()")
        page.driver.switch_to.active_element.send_keys(Keys.ENTER)
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
        time.sleep(0.2)
        assert page.driver.switch_to.active_element.get_attribute("id") == "config-message"

    def test_a_number_the_browser_cannot_read_is_refused_not_saved_as_a_deletion(
        self, page: Page
    ) -> None:
        # `1e` in a number field reads as "" (badInput); sent, it was `null`: the key deleted.
        page.connected()
        page.go("config")
        page.type('input[data-path="gateway.reload.debounceMs"]', "275")
        page.click("#config-save")
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
        page.type('input[data-path="gateway.reload.debounceMs"]', "1e")
        page.click("#config-save")
        error = page.visible('[data-path="gateway.reload.debounceMs"] .field-error')
        assert error.text == "not a number"
        saved = json.loads(page.gateway_config_path().read_text())
        assert saved["gateway"]["reload"] == {"debounceMs": 275}

    def test_an_edit_typed_while_the_config_loads_is_kept(self, page: Page) -> None:
        # A slow config.get: the form shown meanwhile took the edit, and the answer replaced
        # the form under it.
        page.connected()
        page.go("config")
        page.visible('input[data-path="gateway.reload.debounceMs"]')
        page.go("status")
        page.driver.execute_script(HOLD_METHOD, "config.get", 1500)
        page.go("config")
        page.type('input[data-path="gateway.reload.debounceMs"]', "777")
        time.sleep(2.5)  # the held answer has come by now
        field = page.find('input[data-path="gateway.reload.debounceMs"]')
        assert field.get_attribute("value") == "777"
        assert page.driver.switch_to.active_element == field
        assert page.find("#config-save").is_enabled()

    def test_a_reload_of_the_form_leaves_the_focus_on_its_field(self, page: Page) -> None:
        # A keyboard user on a field with nothing changed yet: the form reloaded on coming
        # back (or after a reconnect) and the focus fell to the start of the page.
        page.connected()
        page.go("config")
        page.visible('input[data-path="gateway.reload.debounceMs"]')
        page.go("status")
        page.driver.execute_script(HOLD_METHOD, "config.get", 1000)
        page.go("config")
        page.find('input[data-path="gateway.reload.debounceMs"]').click()
        time.sleep(2)  # the held answer has come by now
        focused = page.driver.switch_to.active_element.get_attribute("data-path")
        assert focused == "gateway.reload.debounceMs"

    def test_an_edit_typed_while_a_save_is_answered_is_kept(self, page: Page) -> None:
        # A slow config.patch: the form was built again from the saved config once it was
        # answered, and took away what had been typed into another field meanwhile.
        page.connected()
        page.go("config")
        page.type('input[data-path="gateway.reload.debounceMs"]', "401")
        page.driver.execute_script(HOLD_METHOD, "config.patch", 1000)
        page.click("#config-save")
        page.type('input[data-path="gateway.bind"]', "lan")
        # One save at a time: a second, sent with the same hash, was refused as a change made
        # meanwhile by someone else (the first), or overtook it.
        assert not page.find("#config-save").is_enabled()
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
        saved = json.loads(page.gateway_config_path().read_text())
        assert saved["gateway"]["reload"] == {"debounceMs": 401}
        assert "bind" not in saved["gateway"]
        assert page.find('input[data-path="gateway.bind"]').get_attribute("value") == "lan"
        assert page.find('input[data-path="gateway.reload.debounceMs"]').get_attribute("value") == (
            "401"
        )
        assert page.find("#config-save").is_enabled()

    def test_a_field_typed_into_while_a_keyboard_save_is_answered_keeps_the_focus(
        self, page: Page
    ) -> None:
        # Saved with Enter on Save, then on to another field while a slow gateway answered:
        # the outcome took the focus from the field being typed into.
        from selenium.webdriver.common.keys import Keys

        page.connected()
        page.go("config")
        page.type('input[data-path="gateway.reload.debounceMs"]', "402")
        page.driver.execute_script(HOLD_METHOD, "config.patch", 1000)
        page.driver.execute_script("document.getElementById('config-save').focus()")
        page.driver.switch_to.active_element.send_keys(Keys.ENTER)
        page.type('input[data-path="gateway.bind"]', "lan")
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
        focused = page.driver.switch_to.active_element.get_attribute("data-path")
        assert focused == "gateway.bind"

    def test_why_the_file_on_disk_is_invalid_is_shown(self, page: Page) -> None:
        # A file edited by hand into one the gateway refuses: the screen said "the file on
        # disk is invalid" and nothing of what config.get said was wrong with it.
        page.connected()
        page.go("config")
        page.visible('input[data-path="gateway.bind"]')
        path = page.gateway_config_path()
        original = path.read_text()
        broken = re.sub(r'("?gateway"?\s*:\s*\{)', r'\1 port: "nope",', original, count=1)
        assert broken != original
        try:
            path.write_text(broken)
            page.click("#config-reload")
            page.until(lambda: "invalid" in page.text("#config-meta"), "the file's state")
            message = page.visible("#config-message").text
        finally:
            path.write_text(original)
        assert "gateway.port" in message, message
        assert message.startswith("The file on disk is invalid"), message

    def test_a_key_with_a_dot_is_saved_under_its_own_name(self, page: Page) -> None:
        # Header names may hold a dot (RFC 9110 token): the key is one name, not a path.
        page.connected()
        patched = page.driver.execute_async_script(
            """
            const [token, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            const { hash } = await gw.request("config.get");
            const provider = { baseUrl: "http://127.0.0.1:9/v1", headers: { "x-org.id": "a" } };
            const raw = JSON.stringify({ models: { providers: { dotted: provider } } });
            const result = await gw.request("config.patch", { raw, baseHash: hash });
            gw.stop();
            done(result.ok);
            """,
            TOKEN,
        )
        assert patched
        page.go("config")
        page.type('input[data-path="models.providers.dotted.headers.x-org.id"]', "b")
        page.click("#config-save")
        page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
        saved = json.loads(page.gateway_config_path().read_text())
        assert saved["models"]["providers"]["dotted"]["headers"] == {"x-org.id": "b"}

    def test_fields_whose_names_differ_by_a_dot_are_labelled_each_its_own(self, page: Page) -> None:
        # `x.id` and `x_id` made the same element id: both labels named the first field.
        page.connected()
        patched = page.driver.execute_async_script(
            """
            const [token, done] = arguments;
            const { Gateway } = await import("/ui/gateway.js");
            const gw = new Gateway();
            await gw.start(`ws://${location.host}`, { token });
            const { hash } = await gw.request("config.get");
            const headers = { "x.id": "a", "x_id": "b" };
            const provider = { baseUrl: "http://127.0.0.1:9/v1", headers };
            const raw = JSON.stringify({ models: { providers: { twins: provider } } });
            const result = await gw.request("config.patch", { raw, baseHash: hash });
            gw.stop();
            done(result.ok);
            """,
            TOKEN,
        )
        assert patched
        page.go("config")
        for name in ("x.id", "x_id"):
            path = f"models.providers.twins.headers.{name}"
            page.visible(f'[data-path="{path}"] label').click()
            focused = page.driver.switch_to.active_element.get_attribute("data-path")
            assert focused == path


class TestPhoneViewport:
    @pytest.mark.parametrize("screen", ["chat", "sessions", "status", "logs", "config"])
    def test_no_screen_is_wider_than_the_phone(self, page: Page, screen: str) -> None:
        page.connected()
        set_viewport(page.driver, *PHONE)
        page.go(screen)
        if screen == "chat":
            page.chat("a phone-sized question")
        width = page.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= PHONE[0]
        if screen == "chat":
            page.screenshot("phone-chat")


class TestKeyboard:
    def test_connect_and_chat_without_a_mouse(self, page: Page) -> None:
        from selenium.webdriver.common.keys import Keys

        page.type("#connect-secret", TOKEN + Keys.ENTER)  # the field has focus on load
        page.visible("#screen-chat")
        page.until(lambda: page.driver.switch_to.active_element.get_attribute("id") == "chat-input",
                   "the message box focused")  # fmt: skip
        page.driver.switch_to.active_element.send_keys("by keyboard" + Keys.ENTER)
        # The screen opens the most recent session: whatever turn this is there.
        page.until(
            lambda: page.all(".bubble.assistant .text")[-1].text.endswith("] by keyboard"),
            "the answer",
        )

    def test_a_reconnect_leaves_the_focus_where_the_user_had_it(self, page: Page) -> None:
        # Every reconnect moved the focus to the message box: a keyboard user reading the
        # transcript, or about to pick another agent, was thrown out of place.
        page.driver.execute_script(LOSE_SOCKET)
        page.connected()
        page.until(lambda: page.driver.switch_to.active_element.get_attribute("id") == "chat-input",
                   "the message box focused")  # fmt: skip
        page.driver.execute_script("document.getElementById('transcript').focus()")
        state = page.find("#conn-state")
        page.driver.execute_script("window.socket.close()")
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
        page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected")
        time.sleep(1)  # the screen has been refreshed by now
        assert page.driver.switch_to.active_element.get_attribute("id") == "transcript"

    def test_the_focus_moved_while_the_chat_loads_stays_there(self, page: Page) -> None:
        # A slow gateway: the agent picker reached while the sessions are still being listed
        # lost the focus to the message box once they came.
        page.connected()
        page.go("sessions")
        page.driver.execute_script(HOLD_BACK, "sessions.list", "main")
        page.go("chat")
        page.driver.execute_script("document.getElementById('chat-agent').focus()")
        time.sleep(1.5)  # the held answer has come by now
        assert page.driver.switch_to.active_element.get_attribute("id") == "chat-agent"

    def test_the_focus_moved_while_a_new_session_loads_stays_there(self, page: Page) -> None:
        # "New" on a slow gateway: the agent picker reached while the new session loaded lost
        # the focus to the message box once it came.
        page.connected()
        page.visible("#screen-chat")
        page.until(lambda: page.find("#chat-session").get_attribute("value"), "a session")
        page.driver.execute_script(HOLD_METHOD, "chat.history", 1000)
        page.click("#chat-new")
        page.driver.execute_script("document.getElementById('chat-agent').focus()")
        time.sleep(1.5)  # the held answer has come by now
        assert page.text("#transcript") == "No messages yet. Say something."
        assert page.driver.switch_to.active_element.get_attribute("id") == "chat-agent"
        page.click("#chat-new")  # left alone, the message box takes the focus
        page.until(
            lambda: page.driver.switch_to.active_element.get_attribute("id") == "chat-input",
            "the message box focused",
        )

    def test_the_list_is_one_tab_stop_walked_with_the_arrow_keys(self, page: Page) -> None:
        # Each row was a tab stop: from a picked row to its Reset or Delete, a keyboard user
        # tabbed through every row below it (up to 200).
        from selenium.webdriver.common.keys import Keys

        page.connected()
        keys = ["agent:ops:rove-a", "agent:ops:rove-b", "agent:ops:rove-c"]
        label_sessions(page, keys, at_once=False)
        page.go("sessions")
        page.type("#sessions-search", "rove-")
        page.until(lambda: len(page.all("#sessions-table tbody tr")) == 3, "the three rows")
        keys = [r.get_attribute("data-key") for r in page.all("#sessions-table tbody tr")]

        def focused_row() -> str:
            focused = page.driver.switch_to.active_element
            return str(
                focused.find_element(page.by.XPATH, "ancestor::tr").get_attribute("data-key")
            )

        page.find("#sessions-search").send_keys(Keys.TAB)  # Refresh
        page.driver.switch_to.active_element.send_keys(Keys.TAB)  # the list
        assert focused_row() == keys[0]
        page.driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
        assert focused_row() == keys[1]
        page.driver.switch_to.active_element.send_keys(Keys.ENTER)
        page.until(lambda: page.text("#session-detail-key") == keys[1], "its detail")
        page.driver.switch_to.active_element.send_keys(Keys.TAB)
        assert page.driver.switch_to.active_element.get_attribute("id") == "session-open"

    def test_a_session_deleted_by_keyboard_leaves_the_focus_on_the_list(self, page: Page) -> None:
        # The focused Delete button is hidden with the detail: the focus fell back to the
        # page's start.
        from selenium.webdriver.common.keys import Keys

        page.connected()
        page.click("#chat-new")
        page.chat("deleted by keyboard")
        key = page.session_key()
        page.go("sessions")
        page.visible(f'#sessions-table tr[data-key="{key}"] button').send_keys(Keys.ENTER)
        page.visible("#session-delete").send_keys(Keys.ENTER)
        page.visible("#confirm-ok").send_keys(Keys.ENTER)
        page.until(lambda: not page.all(f'#sessions-table tr[data-key="{key}"]'), "the row gone")
        page.until(
            lambda: page.driver.switch_to.active_element.get_attribute("id") == "sessions-search",
            "the focus on the list's search",
        )

    def test_the_skip_link_moves_to_the_content_of_the_screen_shown(self, page: Page) -> None:
        from selenium.webdriver.common.keys import Keys

        page.connected()
        page.go("sessions")
        page.driver.execute_script("document.querySelector('.skip').focus()")  # Tab's first stop
        page.driver.switch_to.active_element.send_keys(Keys.ENTER)
        page.until(lambda: page.driver.switch_to.active_element.get_attribute("id") == "main",
                   "the content focused")  # fmt: skip
        assert page.find("#screen-sessions").is_displayed()
        assert page.driver.current_url.endswith("#sessions")


class TestColourScheme:
    def background(self, page: Page) -> str:
        return str(
            page.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        )

    def test_follows_the_system_dark_setting(self, page: Page) -> None:
        light = self.background(page)
        page.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        try:
            assert (light, self.background(page)) == ("rgb(246, 247, 249)", "rgb(15, 18, 22)")
        finally:
            page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
