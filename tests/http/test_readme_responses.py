"""README's /v1/responses example, run as written against a real `clawgate run` whose config
file is the README's."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import GatewayProcess, clean_env
from tests.support.readme import TOKEN, blocks, run, section

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")

RESPONSES = section("### Responses (OpenResponses)")
(CONFIG,) = blocks(RESPONSES, "json5")
(CURL,) = blocks(RESPONSES, "sh")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    state = tmp_path / ".clawgate"
    state.mkdir()
    (state / "clawgate.json5").write_text(CONFIG)
    process = GatewayProcess(["--port", "0", "--token", TOKEN], clean_env(tmp_path))
    try:
        process.wait_listening()
        yield process
    finally:
        process.stop()


def test_the_responses_command_answers_with_echo(gateway: GatewayProcess) -> None:
    answer = json.loads(run(CURL, gateway))
    assert (answer["object"], answer["status"]) == ("response", "completed")
    [message] = answer["output"]
    assert message["content"][0]["text"] == "[turn 1] hello"
