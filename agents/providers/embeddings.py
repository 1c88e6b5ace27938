"""Embeddings: vectors for texts, from an OpenAI-compatible `POST /embeddings` or from echo.

The upstream call shares the chat providers' machinery (agents.providers.upstream): the same
headers, timeouts and failure classes (429 with its Retry-After, 401/403 as an auth failure,
timeouts), so the gateway maps them exactly as it maps a failed turn.

Echo's vectors are offline and deterministic: each text hashed into a unit vector. They
carry no meaning (similar texts are not near each other); they let a newcomer or a test try
the endpoint without a model server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import attrs

from agents.config import ECHO_PROVIDER, ModelRef, ProviderConfig
from agents.errors import MalformedStream, UpstreamStatusError
from agents.providers.base import token_count
from agents.providers.openai_completions import request_headers
from agents.providers.timeouts import Timeouts
from agents.providers.upstream import endpoint_url, log_body, open_stream, transport_error
from agents.providers.upstream_client import UpstreamClient

ECHO_DIMENSIONS = 16  # echo's vector size when the request names none
# An answer of 2048 inputs of 3072 floats is about 140 MB as JSON text: bounded, but far
# above a chat answer's limit (upstream.MAX_JSON_BODY).
MAX_ANSWER_BYTES = 256 * 1024 * 1024
# Below that, an answer is read up to what the request's vectors can take (`answer_limit`),
# since its parsed numbers take several times its text: a broken or hostile upstream must
# not make one input's request hold gigabytes. The most values a vector has (an LLM's hidden
# size served as embeddings: Command R+'s 12,288), and the most JSON text one takes: a
# float's repr is at most 24 characters; with its comma, its line break and the 32 spaces of
# an answer indented 8 a level (a vector's values are 4 levels deep), 58.
MAX_VECTOR_VALUES = 16384
VALUE_JSON_BYTES = 64
# The rest of an answer: each item's other fields, and the object's (model, usage).
ITEM_JSON_BYTES = 1024
ANSWER_JSON_BYTES = 64 * 1024
FLOAT32_MAX = 3.4028234663852886e38


@attrs.frozen
class EmbeddingRequest:
    ref: ModelRef
    inputs: tuple[str, ...]
    dimensions: int | None = None
    # Asked of the upstream (floats, once it refused base64); either form is read back.
    encoding_format: str = "float"
    user: str | None = None
    provider: ProviderConfig | None = None  # None for echo


@attrs.frozen
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]  # in input order
    prompt_tokens: int
    total_tokens: int


def echo_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit vector from sha256 of the text: the same text always gives the same vector."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{text}".encode("utf-8", "surrogatepass")).digest()
        values.extend(n / 2**31 - 1.0 for n in struct.unpack("<8I", digest))
        block += 1
    del values[dimensions:]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


def estimated_tokens(inputs: Sequence[str]) -> int:
    """Word count, as the chat side estimates usage when a provider reports none."""
    return sum(len(text.split()) for text in inputs)


def echo_embeddings(request: EmbeddingRequest) -> Embeddings:
    dimensions = request.dimensions or ECHO_DIMENSIONS
    tokens = estimated_tokens(request.inputs)
    return Embeddings(tuple(echo_vector(t, dimensions) for t in request.inputs), tokens, tokens)


def request_body(request: EmbeddingRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.ref.model,
        "input": list(request.inputs),
        "encoding_format": request.encoding_format,
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    return body


def answer_limit(inputs: int) -> int:
    """The most bytes an answer for `inputs` texts may have."""
    per_input = MAX_VECTOR_VALUES * VALUE_JSON_BYTES + ITEM_JSON_BYTES
    return min(MAX_ANSWER_BYTES, ANSWER_JSON_BYTES + inputs * per_input)


def _vector(value: Any) -> tuple[float, ...]:
    """A float list, or OpenAI's base64 of little-endian float32 values."""
    if isinstance(value, str):
        raw = base64.b64decode(value, validate=True)
        if len(raw) % 4:
            raise ValueError("base64 embedding is not a whole number of float32 values")
        decoded: tuple[float, ...] = struct.unpack(f"<{len(raw) // 4}f", raw)
        if not all(math.isfinite(v) for v in decoded):
            raise ValueError("embedding holds a value that is not finite")
        return decoded
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise ValueError("embedding is not a list of numbers")
    vector = tuple(float(v) for v in value)
    # Relayed as JSON or float32: neither holds NaN, infinities or values beyond float32.
    if not all(abs(v) <= FLOAT32_MAX for v in vector):
        raise ValueError("embedding holds a value that is not a finite float32")
    return vector


def _float(text: str) -> float:
    # json's C parser calls this for each number with a fraction: Python code between
    # numbers, where the event loop's thread can take the interpreter back. With `float`
    # itself, called from C, an answer of 2048 vectors of 3072 floats would hold it for
    # seconds at a stretch.
    return float(text)


def parse_answer(answer: Any, count: int, dimensions: int | None = None) -> Embeddings:
    """An upstream's `{"data": [{"index", "embedding"}], "usage": {...}}`, in input order.

    MalformedStream when it is not one vector per input, all of one length (`dimensions`
    when the request named it): a client stacks them, or stores them in an index of that
    size, and an empty or odd one would fail there, far from its cause."""
    try:
        if not isinstance(answer, dict) or answer.get("error"):
            raise ValueError("answer is an error or not an object")
        data = answer.get("data")
        if not isinstance(data, list) or len(data) != count:
            raise ValueError(f"answer has no list of {count} embeddings")
        if all(isinstance(item, dict) and type(item.get("index")) is int for item in data):
            data = sorted(data, key=lambda item: item["index"])
            if [item["index"] for item in data] != list(range(count)):
                raise ValueError("answer indexes are not 0..n-1")
        vectors = tuple(_vector(item.get("embedding")) for item in data)
        sizes = {len(vector) for vector in vectors}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError("vectors are empty or of different lengths")
        size = sizes.pop()
        if dimensions is not None and size != dimensions:
            raise ValueError(f"vectors of {size} values, {dimensions} asked")
    except (
        ValueError,
        TypeError,
        AttributeError,
        OverflowError,  # an integer beyond any float: JSON allows it
        binascii.Error,
        struct.error,
    ) as exc:
        raise MalformedStream(f"malformed upstream embeddings answer ({exc})") from exc
    # Counts as a chat reply's are read (`token_count`): one below 0 or beyond JavaScript's
    # safe integers is none reported; a total below the prompt is no total of it.
    usage = answer.get("usage")
    prompt = token_count(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    total = token_count(usage.get("total_tokens")) if isinstance(usage, dict) else None
    if prompt is None:
        return Embeddings(vectors, -1, -1)  # the caller estimates
    return Embeddings(vectors, prompt, total if total is not None and total >= prompt else prompt)


# What a server that makes only floats answers a request for base64: a 400 (vLLM and others
# with OpenAI's error body) or a 422 (a FastAPI server's validation of the field).
REFUSED_ENCODING_STATUSES = (400, 422)


class EmbeddingsClient:
    """Computes embeddings; owns an upstream client of its own, made on first use."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._client: UpstreamClient | None = None
        # The upstreams (id, base URL) seen to refuse base64 and answer floats: asked for
        # floats from then on. Bounded by the providers the config has named.
        self._floats_only: set[tuple[str, str]] = set()

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Raises agents.errors.UpstreamError subclasses, as a chat provider does."""
        # In threads: the vectors of 2048 inputs (OpenAI's limit) are millions of floats,
        # seconds of Python to make, parse or check, which the event loop must not wait for.
        if request.ref.provider == ECHO_PROVIDER or request.provider is None:
            return await asyncio.to_thread(echo_embeddings, request)
        provider = request.provider
        if self._client is None:
            self._client = UpstreamClient()
        upstream = (provider.id, provider.base_url)
        asked = request_body(request)
        if request.encoding_format == "base64" and upstream in self._floats_only:
            asked["encoding_format"] = "float"
        url = endpoint_url(provider.base_url, "/embeddings")
        headers = request_headers(provider)
        try:
            resp = await open_stream(self._client, provider, url, headers, asked, self._timeouts)
        except UpstreamStatusError as exc:
            # The answer is read in either form and the gateway writes base64 itself, so a
            # server that makes only floats need not fail the `openai` SDK's default request.
            if asked["encoding_format"] != "base64" or exc.status not in REFUSED_ENCODING_STATUSES:
                raise
            asked["encoding_format"] = "float"
            resp = await open_stream(self._client, provider, url, headers, asked, self._timeouts)
            self._floats_only.add(upstream)
        whole = False
        limit = answer_limit(len(request.inputs))
        try:
            body = await resp.read(limit)
            whole = len(body) <= limit  # read to the end: the connection may be reused
        except (OSError, TimeoutError) as exc:
            raise transport_error(exc) from exc
        finally:
            if whole:
                resp.release()
            else:
                resp.close()
        if len(body) > limit:
            raise MalformedStream(f"upstream embeddings answer over {limit} bytes")
        try:
            answer = await asyncio.to_thread(json.loads, body, parse_float=_float)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
            log_body("upstream_malformed_json", provider, body)
            raise MalformedStream("upstream answer is not valid JSON") from exc
        try:
            result = await asyncio.to_thread(
                parse_answer, answer, len(request.inputs), request.dimensions
            )
        except MalformedStream:
            # An error object with a 200, or vectors of the wrong shape: the body says which.
            log_body("upstream_malformed_answer", provider, body)
            raise
        if result.prompt_tokens < 0:
            tokens = estimated_tokens(request.inputs)
            result = attrs.evolve(result, prompt_tokens=tokens, total_tokens=tokens)
        return result

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
