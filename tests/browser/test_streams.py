"""The chat screen while a model reasons and calls tools: what the `thinking` and `tool`
streams of a turn look like on the page, from a real upstream (the fake OpenAI server)."""

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

REASONING = tuple(f"step {n}. " for n in range(40))
TOOL_CALL = FakeToolCall("call_1", "weather", ('{"city"', ': "Os', 'lo"}'))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    """The fake upstream on a loop of its own: the gateway is another process."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def started() -> FakeOpenAI:
        fake = FakeOpenAI(Stream(("It is", " sunny."), reasoning=REASONING, delay=0.01,
                                 tool_calls=(TOOL_CALL,)))  # fmt: skip
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


class TestFoldedStreams:
    def test_reasoning_and_each_tool_call_are_one_block_that_grows(self, page: Page) -> None:
        page.connected()
        page.click("#chat-new")
        page.type("#chat-input", "weather?")
        page.click("#chat-send")
        bubble = page.until(lambda: page.find(".bubble.assistant:not(.streaming)"), "the answer")
        assert bubble.find_element(page.by.CSS_SELECTOR, ".text").text == "It is sunny."
        blocks = [
            [d.get_attribute("class"), d.find_element(page.by.TAG_NAME, "summary").text]
            for d in bubble.find_elements(page.by.TAG_NAME, "details")
        ]
        assert blocks == [["reasoning", "Reasoning"], ["tool", "Tool: weather"]]
        texts = page.driver.execute_script(
            "return [...arguments[0].querySelectorAll('pre')].map(p => p.textContent)", bubble
        )
        assert texts == ["".join(REASONING), '{\n  "city": "Oslo"\n}']
