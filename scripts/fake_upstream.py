"""A fake OpenAI-compatible upstream for `scripts/bench`: `POST /v1/chat/completions`.

It answers every request with the same text, as a `chat.completion` JSON body or, when the
body says `"stream": true`, as Server-Sent Events: one `chat.completion.chunk` per piece of
text, a finish chunk, a usage chunk and `data: [DONE]`. The model id chooses the shape:
`c<N>` is N content chunks, `c<N>-d<M>` also waits M ms between chunks (e.g. `c20`,
`c200-d1`); any other id means `c20`.

`POST /v1/embeddings` answers one deterministic vector per input (sha256 of the text, 8
numbers unless `dimensions` says otherwise), as floats or as OpenAI's base64 float32.

Its own CPU is the benchmark's baseline, so it does as little as it can: aiohttp's low-level
server (no router, no middlewares), every answer encoded once per shape and cached, and with
no delay the whole stream in one write. With a delay each chunk is its own write.

Run: `python scripts/fake_upstream.py [--port N]`; it prints one JSON line with its port.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import signal
import struct
import sys
from functools import cache

from aiohttp import web

WORD = " token"  # every content chunk carries one word, about the size of a model token
_MODEL_RE = re.compile(r"c(\d+)(?:-d(\d+(?:\.\d+)?))?")
DEFAULT_CHUNKS = 20
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
JSON_HEADERS = {"Content-Type": "application/json"}


def shape(model: str) -> tuple[int, float]:
    """(content chunks, delay in seconds between chunks) of a model id."""
    match = _MODEL_RE.fullmatch(model)
    if match is None:
        return DEFAULT_CHUNKS, 0.0
    return max(1, int(match[1])), float(match[2] or 0) / 1000


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _chunk(model: str, delta: dict[str, str], finish: str | None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [choice],
    }
    return b"data: " + _dumps(body) + b"\n\n"


def _usage(chunks: int) -> dict[str, int]:
    return {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks}


@cache
def sse_parts(model: str) -> tuple[bytes, ...]:
    """Every write of a stream: the content chunks, then finish + usage + [DONE] as one."""
    chunks, _ = shape(model)
    parts = [_chunk(model, {"role": "assistant", "content": WORD}, None)]
    parts += [_chunk(model, {"content": WORD}, None) for _ in range(chunks - 1)]
    usage = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [],
        "usage": _usage(chunks),
    }
    tail = _chunk(model, {}, "stop") + b"data: " + _dumps(usage) + b"\n\ndata: [DONE]\n\n"
    parts.append(tail)
    return tuple(parts)


@cache
def json_answer(model: str) -> bytes:
    chunks, _ = shape(model)
    return _dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": WORD * chunks},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(chunks),
        }
    )


def embedding(text: str, dimensions: int) -> list[float]:
    """Multiples of 1/128: float32 holds them exactly, so both encodings agree."""
    digest = hashlib.sha256(f"fake:{text}".encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(dimensions)]


def embeddings_answer(body: dict[str, object]) -> bytes:
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
    dimensions = body.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and dimensions > 0 else 8
    data = []
    for index, text in enumerate(texts):
        floats = embedding(str(text), size)
        vector: object = floats
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{size}f", *floats)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(str(text).split()) for text in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _dumps({"object": "list", "data": data, "model": body.get("model"), "usage": usage})


async def handle(request: web.BaseRequest) -> web.StreamResponse:
    if request.method == "POST" and request.path.endswith("/embeddings"):
        try:
            return web.Response(
                body=embeddings_answer(json.loads(await request.read())), headers=JSON_HEADERS
            )
        except (ValueError, AttributeError, TypeError):
            return web.Response(status=400)
    if request.method != "POST" or not request.path.endswith("/chat/completions"):
        return web.Response(status=404)
    try:
        body = json.loads(await request.read())
        model = str(body.get("model", ""))
        stream = body.get("stream") is True
    except (ValueError, AttributeError):
        return web.Response(status=400)
    if not stream:
        return web.Response(body=json_answer(model), headers=JSON_HEADERS)
    _, delay = shape(model)
    parts = sse_parts(model)
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    try:
        if not delay:
            await response.write(b"".join(parts))
        else:
            for index, part in enumerate(parts):
                if index:
                    await asyncio.sleep(delay)
                await response.write(part)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away (a cancelled run): nothing to finish
    return response


async def serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"event": "fake_upstream_listening", "port": bound}), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
