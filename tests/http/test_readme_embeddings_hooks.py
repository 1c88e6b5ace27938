"""README's embeddings and webhooks examples, run as written against a real `clawgate run`
whose config file is the README's webhook config."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.providers.embeddings import echo_vector
from tests.support.process import GatewayProcess, clean_env
from tests.support.readme import TOKEN, blocks, run, section

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")


EMBEDDINGS_CURL = blocks(section("### Embeddings"), "sh")
WEBHOOKS = section("## Webhooks")
(WEBHOOK_CONFIG,) = blocks(WEBHOOKS, "json5")
(WEBHOOK_CURLS,) = blocks(WEBHOOKS, "sh")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    # The README's path: ~/.clawgate/clawgate.json5, with HOME in tmp_path.
    state = tmp_path / ".clawgate"
    state.mkdir()
    (state / "clawgate.json5").write_text(WEBHOOK_CONFIG)
    process = GatewayProcess(["--port", "0", "--token", TOKEN], clean_env(tmp_path))
    try:
        process.wait_listening()
        yield process
    finally:
        process.stop()


def test_the_embeddings_command_gives_echo_vectors(gateway: GatewayProcess) -> None:
    (command,) = EMBEDDINGS_CURL
    answer = json.loads(run(command, gateway))
    assert [item["embedding"] for item in answer["data"]] == [
        list(echo_vector("hello", 4)),
        list(echo_vector("world", 4)),
    ]


AGENT_CURL, WAKE_CURL = WEBHOOK_CURLS.strip().split("\n\n")


def test_the_agent_hook_command_answers_with_the_final_text(gateway: GatewayProcess) -> None:
    agent = json.loads(run(AGENT_CURL, gateway))
    assert agent["completion"]["text"] == "[turn 1] Summarize the inbox"


def test_the_wake_hook_command_runs_on_the_main_session(gateway: GatewayProcess) -> None:
    wake = json.loads(run(WAKE_CURL, gateway))
    assert (wake["ok"], wake["mode"], wake["sessionKey"]) == (True, "now", "agent:main:main")
