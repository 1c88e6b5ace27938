"""`openclaw logs` (OpenClaw's command line) reading the gateway's log through `logs.tail`
(ws-protocol.md §8): each line as time, level and message, not as the raw JSON line."""

from __future__ import annotations

import re

import pytest

from tests.support.openclaw_clients import TOKEN, OpenClaw
from tests.support.process import GatewayProcess

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def ws_url(gateway: GatewayProcess) -> str:
    return gateway.url.replace("http://", "ws://", 1)


def logs(openclaw: OpenClaw, gateway: GatewayProcess, *args: str) -> list[str]:
    done = openclaw.run("logs", "--url", ws_url(gateway), "--token", TOKEN, *args)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout.splitlines()


class TestLogs:
    def test_each_line_reads_as_time_level_and_message(
        self, openclaw: OpenClaw, gateway: GatewayProcess
    ) -> None:
        lines = logs(openclaw, gateway, "--plain", "--utc")
        assert lines[0] == "Log file: (memory)"
        (listening,) = (line for line in lines if "gateway_listening" in line)
        url = gateway.url
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info gateway_listening"
            rf" url={re.escape(url)} ws={re.escape(ws_url(gateway))} auth=token"
            r" config=/\S+/clawgate\.json5",
            listening,
        ), listening
        assert not [line for line in lines[1:] if "{" in line]  # no raw JSON line
