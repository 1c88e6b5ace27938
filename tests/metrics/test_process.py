"""A real `clawgate run` process serves its metrics, the process collector's included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.metrics import CONTENT_TYPE, Samples, parse
from tests.support.process import GatewayProcess, clean_env
from tests.support.process_client import first_content
from tests.support.raw_http import read_head

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
                # 20 ms a word: a stream of many words is still running when its client leaves.
                "agents": {"list": [{"id": "main", "default": True, "params": {"delayMs": 20}}]},
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


async def scrape(gateway: GatewayProcess) -> Samples:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway.url}/metrics", headers=AUTH) as response,
    ):
        assert response.status == 200
        return parse(await response.text())


async def requests_until(
    gateway: GatewayProcess, wanted: tuple[str, str], within: float = 5.0
) -> dict[tuple[str, ...], float]:
    """clawgate_http_requests_total, but the scrapes', once it has a `wanted` (route, status)
    sample."""
    async with asyncio.timeout(within):
        while True:
            requests = (await scrape(gateway)).get("clawgate_http_requests_total", {})
            if wanted in requests:
                return {labels: n for labels, n in requests.items() if labels[0] != "/metrics"}
            await asyncio.sleep(0.05)


async def test_a_request_the_http_parser_refuses_is_counted_as_malformed_400(
    gateway: GatewayProcess,
) -> None:
    """aiohttp answers it itself, before any route or middleware: it must still show up, or
    a client (or a scanner) sending garbage is invisible on the dashboard."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n")
    status, _ = await read_head(reader)
    writer.close()
    assert status == 400
    requests = await requests_until(gateway, ("malformed", "400"))
    assert requests == {("malformed", "400"): 1}


async def test_a_stream_whose_client_leaves_after_the_headers_is_counted_as_499(
    gateway: GatewayProcess,
) -> None:
    """Its 200 went out with the headers, but the answer did not: counted as nginx logs a
    client that closed the request (499), not as a stream served whole."""
    words = " ".join(f"w{i}" for i in range(100))  # 2 s at 20 ms a word
    body = {"model": "openclaw", "stream": True, "messages": [{"role": "user", "content": words}]}
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH)
        assert response.status == 200
        await first_content(response)
        response.close()  # the connection with it
    requests = await requests_until(gateway, ("/v1/chat/completions", "499"))
    assert requests == {("/v1/chat/completions", "499"): 1}
