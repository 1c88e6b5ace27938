"""The Control UI showing what someone else chose: a model's reply, its tool calls, a
session's label or key. Text that is long, unbroken or full of bidi controls stays text in
its place: it does not widen the page, reorder the UI's own words or stall the page."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

from tests.support.browser import CONFIG, Page
from tests.support.http_client import fake_provider_entry
from tests.support.upstreams import FakeOpenAI, FakeToolCall, Stream

pytestmark = pytest.mark.browser

UNBROKEN = "x" * 100_000


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    """The fake upstream on a loop of its own: the gateway is another process."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def started() -> FakeOpenAI:
        fake = FakeOpenAI(Stream(("ok",)))
        await fake.start()
        return fake

    fake = asyncio.run_coroutine_threadsafe(started(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture(scope="module")
def gateway_config(upstream: FakeOpenAI) -> str:
    provider = json.dumps({"fake": fake_provider_entry(upstream)})
    return CONFIG.replace(
        '{ id: "main", default: true, params: { delayMs: 60 } }',
        '{ id: "main", default: true, model: "fake/fake-model" }',
    ).replace("  agents: {", f"  models: {{ providers: {provider} }},\n  agents: {{", 1)


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
