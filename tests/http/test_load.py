"""Many streams at once over the echo agent."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.support.http_client import AUTH, CHAT, MakeClient, sse_events

STREAMS = 200


class TestConcurrentStreams:
    async def test_200_concurrent_streams_all_finish_with_done(self, gateway: MakeClient) -> None:
        # 50 ms between words keeps every stream open while the others start.
        agent = {"id": "main", "default": True, "params": {"delayMs": 50}}
        client = await gateway(
            {"agents": {"defaults": {"maxConcurrent": STREAMS}, "list": [agent]}}
        )
        url = client.server.make_url(CHAT)

        async def one(session: aiohttp.ClientSession, index: int) -> str:
            body = {"messages": [{"role": "user", "content": f"stream {index}"}], "stream": True}
            async with session.post(url, data=json.dumps(body), headers=AUTH) as response:
                assert response.status == 200
                return await response.text()

        # No connection limit: every request is in flight at the same time.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            bodies = await asyncio.gather(*(one(session, i) for i in range(STREAMS)))
        for index, body in enumerate(bodies):
            events = sse_events(body)
            assert events[-1] == "[DONE]"
            text = "".join(
                json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
            )
            assert text == f"[turn 1] stream {index}"
