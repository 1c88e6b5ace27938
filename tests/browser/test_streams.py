"""The chat screen while a model reasons and calls tools: what the `thinking` and `tool`
streams of a turn look like on the page, from a real upstream (the fake OpenAI server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.browser import Page, config_with_upstream, upstream_on_a_thread
from tests.support.upstreams import FakeOpenAI, FakeToolCall, Stream

pytestmark = pytest.mark.browser

REASONING = tuple(f"step {n}. " for n in range(40))
TOOL_CALL = FakeToolCall("call_1", "weather", ('{"city"', ': "Os', 'lo"}'))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with upstream_on_a_thread(
        Stream(("It is", " sunny."), reasoning=REASONING, delay=0.01, tool_calls=(TOOL_CALL,))
    ) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway_config(upstream: FakeOpenAI) -> str:
    return config_with_upstream(upstream)


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
