"""The Control UI after its gateway went away: the state is shown, and it reconnects by
itself once the gateway is back."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CONFIG, TOKEN, Page
from tests.support.process import GatewayProcess, clean_env, drain

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Restartable:
    """A gateway on a fixed port that a test may stop and start again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "clawgate.json5").write_text(CONFIG)
        self.process: GatewayProcess | None = None
        self.stop_reading = threading.Event()
        self.reader: threading.Thread | None = None

    def start(self) -> None:
        args = ["--config", str(self.root / "clawgate.json5"), "--state-dir",
                str(self.root / "state"), "--port", str(self.port)]  # fmt: skip
        self.process = GatewayProcess(args, clean_env(self.root / "home"))
        self.process.wait_listening()
        self.stop_reading = threading.Event()
        self.reader = threading.Thread(
            target=drain, args=(self.process, self.stop_reading), daemon=True
        )
        self.reader.start()

    def stop(self) -> None:
        if self.process is not None:
            # The reader first: closing the pipe under a read in progress fails the read.
            self.stop_reading.set()
            if self.reader is not None:
                self.reader.join(5)
            self.process.stop()
            self.process = None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    restartable = Restartable(tmp_path_factory.mktemp("restartable"))
    restartable.start()
    try:
        yield restartable
    finally:
        restartable.stop()


def test_a_lost_connection_is_shown_and_comes_back_by_itself(
    page: Page, gateway: Restartable
) -> None:
    page.connected()
    gateway.stop()
    state = page.find("#conn-state")
    page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
    assert state.text == "Connection lost, reconnecting…"
    gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)
    page.visible("#screen-chat")


# Records, in `window.said`, each text the header's live region takes, and in `window.shown`
# each text of the countdown beside it.
RECORD_STATE_TEXTS = """
window.said = [];
window.shown = [];
const state = document.getElementById("conn-state");
new MutationObserver(() => window.said.push(state.textContent))
  .observe(state, { childList: true, characterData: true, subtree: true });
const retry = document.getElementById("conn-retry");
if (retry) {
  new MutationObserver(() => window.shown.push(retry.textContent))
    .observe(retry, { childList: true, characterData: true, subtree: true });
}
"""


def test_a_reconnect_is_read_out_once_and_its_countdown_counts_down(
    page: Page, gateway: Restartable
) -> None:
    # The live region said "Connection lost, reconnecting in 1s…" then "Connecting…" at each
    # retry, and the number was the retry's whole wait, never counted down.
    page.connected()
    page.driver.execute_script(RECORD_STATE_TEXTS)
    state = page.find("#conn-state")
    gateway.stop()
    try:
        # Waits of 0.5, 1, 2 and 4 s: three retries, then a wait of 4 s that counts down
        # (waited for rather than slept: a loaded host stretches the retries).
        def counted_down() -> bool:
            shown = page.driver.execute_script("return window.shown")
            if "next try in 4 s" not in shown:
                return False
            return shown[shown.index("next try in 4 s") :][:2] == [
                "next try in 4 s",
                "next try in 3 s",
            ]

        page.until(counted_down, "a countdown from 4 s to 3 s", 30)
        assert state.get_attribute("data-state") in ("waiting", "connecting")
        said = page.driver.execute_script("return window.said")
        assert said == ["Connection lost, reconnecting…"]
        assert "trying now" in page.driver.execute_script("return window.shown")
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)
    assert page.driver.execute_script("return window.said")[1:] == [state.text]
    assert not page.find("#conn-retry").is_displayed()


def test_a_message_sent_while_the_connection_is_lost_stays_in_the_input(
    page: Page, gateway: Restartable
) -> None:
    page.connected()
    page.click("#chat-new")
    page.until(lambda: page.text("#transcript") == "No messages yet. Say something.", "the chat")
    gateway.stop()
    try:
        state = page.find("#conn-state")
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
        page.type("#chat-input", "not lost")
        page.click("#chat-send")
        assert page.visible("#chat-error").text == "Not connected to the gateway."
        assert page.find("#chat-input").get_attribute("value") == "not lost"
        assert page.all("#transcript .bubble") == []  # no turn that the gateway never had
        assert not page.find("#chat-abort").is_enabled()
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)


def test_config_edits_not_yet_saved_outlive_a_reconnect(page: Page, gateway: Restartable) -> None:
    page.connected()
    page.go("config")
    page.type('input[data-path="gateway.reload.debounceMs"]', "444")
    state = page.find("#conn-state")
    gateway.stop()
    try:
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)
    time.sleep(1)  # a reload of the form would have come by now
    field = page.find('input[data-path="gateway.reload.debounceMs"]')
    assert field.get_attribute("value") == "444"
    assert page.find("#config-save").is_enabled()


# The page's connects after its first ask for protocol 99 only: as a page of an older
# release meets a gateway upgraded meanwhile. `window.connects` counts the connects sent.
NEWER_PROTOCOL_ON_RECONNECT = """
const send = WebSocket.prototype.send;
window.connects = 0;
WebSocket.prototype.send = function (data) {
  const frame = JSON.parse(data);
  if (frame.method === "connect" && ++window.connects > 1) {
    frame.params.minProtocol = 99;
    frame.params.maxProtocol = 99;
    data = JSON.stringify(frame);
  }
  send.call(this, data);
};
"""


def test_a_reconnect_refused_for_good_gives_up_and_says_why(
    page: Page, gateway: Restartable
) -> None:
    page.driver.execute_script(NEWER_PROTOCOL_ON_RECONNECT)
    page.connected()
    state = page.find("#conn-state")
    gateway.stop()
    try:
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "failed", "giving up", 20)
    page.visible("#screen-connect")
    assert page.visible("#connect-error").text == (
        "This page and the gateway speak different protocol versions (the gateway's: 4)."
        " Reload the page."
    )
    assert not page.find("#nav").is_displayed()
    assert page.driver.execute_script("return sessionStorage.length") == 1  # not refused
    connects = page.driver.execute_script("return window.connects")
    time.sleep(2)  # the first retries come within 1.5 s
    assert page.driver.execute_script("return window.connects") == connects
    assert state.get_attribute("data-state") == "failed"


def test_a_reconnect_with_a_token_changed_meanwhile_gives_up_and_forgets_it(
    page: Page, gateway: Restartable
) -> None:
    page.connected()
    state = page.find("#conn-state")
    config = gateway.root / "clawgate.json5"
    gateway.stop()
    try:
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
        config.write_text(CONFIG.replace(TOKEN, "a-rotated-token"))
        gateway.start()
        page.until(lambda: state.get_attribute("data-state") == "failed", "giving up", 20)
        page.visible("#screen-connect")
        assert page.visible("#connect-error").text == "Wrong token: the gateway refused it."
        assert page.driver.execute_script("return sessionStorage.length") == 0
    finally:
        gateway.stop()
        config.write_text(CONFIG)
        gateway.start()


def test_a_reconnect_that_meets_no_answer_tries_again(page: Page, gateway: Restartable) -> None:
    """The port, free while the gateway is away, taken by something that never answers: the
    page stayed "Connecting…" for as long as that lasted, and missed the gateway's return."""
    page.connected()
    state = page.find("#conn-state")
    gateway.stop()
    try:
        with socket.socket() as silent:
            silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            silent.bind(("127.0.0.1", gateway.port))
            silent.listen(8)
            page.until(lambda: state.get_attribute("data-state") == "connecting", "an attempt")
            page.until(lambda: state.get_attribute("data-state") == "waiting", "given up", 15)
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)


def test_a_config_error_after_a_save_is_not_shown_as_a_success(
    page: Page, gateway: Restartable
) -> None:
    page.connected()
    page.go("config")
    page.type('input[data-path="gateway.reload.debounceMs"]', "321")
    page.click("#config-save")
    page.until(lambda: page.text("#config-message").startswith("Saved."), "saved")
    state = page.find("#conn-state")
    gateway.stop()
    try:
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
        page.click("#config-reload")
        page.until(lambda: page.text("#config-message") == "Not connected to the gateway.",
                   "the error")  # fmt: skip
        assert page.find("#config-message").get_attribute("data-kind") != "ok"
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)


def logged(page: Page, gateway: Restartable, path: str) -> None:
    """A 404 of `path`, which the gateway logs, shown on the Logs screen."""
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(f"{gateway.url}{path}", timeout=10)
    texts = "return [...document.querySelectorAll('.log-line')].map(e => e.textContent)"
    page.until(lambda: any(f"path={path} " in t for t in page.driver.execute_script(texts)),
               f"the line of {path}", 20)  # fmt: skip


def test_a_restart_keeps_the_lines_logged_before_it_and_marks_the_gap(
    page: Page, gateway: Restartable
) -> None:
    # The new process's log starts again at 0: the page's cursor, past its end, was answered
    # `reset` and the page emptied the view, taking away the lines that say why the gateway
    # went away.
    page.connected()
    page.go("logs")
    logged(page, gateway, "/before-restart")
    state = page.find("#conn-state")
    gateway.stop()
    try:
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)
    logged(page, gateway, "/after-restart")
    shown = page.driver.execute_script(
        "return [...document.querySelectorAll('#logs-lines > *')].map(e => e.textContent)"
    )
    before = [i for i, t in enumerate(shown) if "path=/before-restart " in t]
    after = [i for i, t in enumerate(shown) if "path=/after-restart " in t]
    gaps = [i for i, t in enumerate(shown) if t.startswith("Lines may be missing here")]
    assert before and after
    assert len(gaps) == 1 and before[0] < gaps[0] < after[0], shown
    assert page.find("#logs-lines .log-gap").get_attribute("class") == "log-gap"


# While `window.coincide` holds a number, the page's next logs.tail with a cursor carries it
# instead: an old process's cursor that happens to end a line of the new process's log.
COINCIDING_CURSOR = """
const send = WebSocket.prototype.send;
window.coincide = null;
WebSocket.prototype.send = function (data) {
  const frame = JSON.parse(data);
  const coinciding = window.coincide !== null && frame.params && frame.params.cursor !== undefined;
  if (frame.method === "logs.tail" && coinciding) {
    frame.params.cursor = window.coincide;
    window.coincide = null;
    data = JSON.stringify(frame);
  }
  send.call(this, data);
};
"""


def test_a_restart_is_seen_when_the_old_cursor_ends_a_line_of_the_new_log(
    page: Page, gateway: Restartable
) -> None:
    # Each process counts its log's bytes from 0: a cursor of the old one that ended a line of
    # the new one's log was read as a place in it, so the page showed the lines after it as if
    # nothing had happened, without the new process's first lines or a mark.
    page.connected()
    page.driver.execute_script(COINCIDING_CURSOR)
    page.go("logs")
    logged(page, gateway, "/before-the-coinciding-restart")
    page.click("#logs-pause")
    state = page.find("#conn-state")
    gateway.stop()
    try:
        page.until(lambda: state.get_attribute("data-state") == "waiting", "the waiting state")
    finally:
        gateway.start()
    page.until(lambda: state.get_attribute("data-state") == "connected", "reconnected", 20)
    cursor = page.driver.execute_async_script(
        """
        const [token, done] = arguments;
        const { Gateway } = await import("/ui/gateway.js");
        const gw = new Gateway();
        await gw.start(`ws://${location.host}`, { token });
        const answer = await gw.request("logs.tail", { limit: 1 });
        gw.stop();
        done(answer.cursor);
        """,
        TOKEN,
    )
    page.driver.execute_script("window.coincide = arguments[0]", cursor)
    page.click("#logs-pause")  # resume
    page.until(lambda: page.driver.execute_script("return window.coincide === null"), "the poll")
    gap = page.until(lambda: page.all("#logs-lines .log-gap"), "the restart marked")[0]
    assert gap.text.startswith("Lines may be missing here")
