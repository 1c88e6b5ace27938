"""A real `clawgate run` process serves its metrics, the process collector's included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.metrics import CONTENT_TYPE, parse
from tests.support.process import GatewayProcess, clean_env

TOKEN = "proc-metrics-token-81aa"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    config = tmp_path / "clawgate.json5"
    config.write_text(
        json.dumps(
            {
                "gateway": {
                    "auth": {"mode": "token", "token": TOKEN},
                    "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
                },
                "agents": {"list": [{"id": "main", "default": True}]},
            }
        )
    )
    args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
    process = GatewayProcess(args, clean_env(tmp_path / "home"))
    try:
        process.wait_listening()
        yield process
    finally:
        process.stop()


async def test_a_running_gateway_counts_a_completion_and_reports_its_memory(
    gateway: GatewayProcess,
) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"model": "openclaw", "messages": [{"role": "user", "content": "count me"}]}
        async with http.post(
            f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH
        ) as response:
            assert response.status == 200
            usage = (await response.json())["usage"]
        async with http.get(f"{gateway.url}/metrics", headers=AUTH) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE
            samples = parse(await response.text())
    assert samples["clawgate_http_requests_total"] == {("/v1/chat/completions", "200"): 1}
    assert samples["clawgate_runs_total"] == {("main", "completed"): 1}
    assert samples["clawgate_tokens_total"] == {
        ("main", "input"): usage["prompt_tokens"],
        ("main", "output"): usage["completion_tokens"],
    }
    assert samples["process_resident_memory_bytes"][()] > 10 * 1024 * 1024
