"""The reference row of `scripts/bench`: the least an aiohttp relay can do.

`POST /v1/chat/completions` is forwarded to the upstream as it came (body bytes, no parsing)
and the answer goes back: a JSON body whole, an SSE stream read by read, as it arrives. No
auth, sessions, store, events or logging. What clawgate spends beyond this per request is the
price of what it does on top; the benchmark prints that as a ratio measured in the same run.

Run: `python scripts/minimal_relay.py --upstream http://127.0.0.1:PORT [--port N]`; it prints
one JSON line with its port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
CLIENT = web.AppKey("client", aiohttp.ClientSession)


async def relay(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    client = request.app[CLIENT]
    url = request.app[UPSTREAM] + "/v1/chat/completions"
    async with client.post(url, data=body, headers={"Content-Type": "application/json"}) as up:
        content_type = up.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            return web.Response(
                body=await up.read(), status=up.status, content_type="application/json"
            )
        resp = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
        await resp.prepare(request)
        while chunk := await up.content.readany():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def client_ctx(app: web.Application) -> object:
    app[CLIENT] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app[CLIENT].close()


async def serve(upstream: str, port: int) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/v1/chat/completions", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"port": bound}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="the fake upstream's base URL")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.upstream, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
