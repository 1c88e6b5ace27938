"""README's embeddings and webhooks examples, run as written against a real `clawgate run`
whose config file is the README's webhook config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.providers.embeddings import echo_vector
from tests.support.process import GatewayProcess, clean_env

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TOKEN = "readme-gateway-token-1f0c"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


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


def run(command: str, gateway: GatewayProcess) -> str:
    command = command.replace("YOUR_TOKEN", TOKEN).replace("18789", str(gateway.port))
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


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
