"""`POST /v1/embeddings` on the wire, Sans-I/O: the request's fields, the embedding model it
asks for, and the answer in OpenAI's shape.

Limits are OpenAI's, counted in characters (about four to a token): at most 2048 inputs, each
at most 8192 tokens' worth, 300,000 tokens' worth in all. OpenClaw's own limits are lower
(128 inputs of 8,192 characters); a client within those is within these.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from agents.config import API_OPENAI_COMPLETIONS, ECHO_PROVIDER, AgentsConfig, ModelRef
from agents.providers.embeddings import Embeddings
from gateway.http.openai_wire import (
    MODEL_HEADER,
    RequestError,
    bad_request,
    encode_json,
    json_type,
)

MAX_INPUTS = 2048  # OpenAI's limit on one request's list
CHARS_PER_TOKEN = 4
MAX_INPUT_CHARS = 8192 * CHARS_PER_TOKEN  # OpenAI: 8192 tokens per input
MAX_TOTAL_CHARS = 300_000 * CHARS_PER_TOKEN  # OpenAI: 300,000 tokens per request
MAX_DIMENSIONS = 8192  # above every embedding model there is (OpenAI's largest: 3072)
# Echo computes its vectors in Python: a bound on inputs × dimensions keeps one request from
# costing seconds of CPU and hundreds of megabytes of answer.
ECHO_MAX_VALUES = 1_048_576
ENCODINGS = ("float", "base64")

NO_EMBEDDING_MODEL = (
    "No embedding model is configured: set agents.defaults.embeddingModel,"
    " or name one in the `x-openclaw-model` header."
)
INPUT_TYPE_MESSAGE = "`input` must be a string or an array of strings."
# Token arrays are the tokens of one tokenizer (tiktoken's, from most clients), which the model
# behind the gateway may not read: refused, as OpenClaw does, saying how to send text instead
# to the client that sends them by default.
TOKENS_MESSAGE = (
    "`input` must be text: token arrays are not taken, as their tokens depend on the model"
    " (LangChain's OpenAIEmbeddings sends text with check_embedding_ctx_length=False)."
)


@attrs.frozen
class EmbeddingsFields:
    inputs: tuple[str, ...]
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None


def _input_error(message: str) -> RequestError:
    return bad_request(message, "input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tokens(item: Any) -> bool:
    """An item of `input` that is a token or an array of tokens (the first ones tell)."""
    return _is_token(item) or (isinstance(item, list) and bool(item) and _is_token(item[0]))


def validate_embeddings(body: Mapping[str, Any]) -> EmbeddingsFields:
    """The fields in OpenAI's order; the first failure wins. `null` is absent everywhere."""
    raw = body.get("input")
    if raw is None:
        raise _input_error("Missing `input`.")
    if isinstance(raw, str):
        inputs: Sequence[Any] = [raw]
    elif isinstance(raw, list):
        inputs = raw
    else:
        raise _input_error(INPUT_TYPE_MESSAGE)
    if not inputs:
        raise _input_error("`input` must not be empty.")
    if len(inputs) > MAX_INPUTS:
        raise _input_error(f"`input` may hold at most {MAX_INPUTS} items (got {len(inputs)}).")
    total = 0
    for index, text in enumerate(inputs):
        if not isinstance(text, str):
            raise _input_error(TOKENS_MESSAGE if _is_tokens(text) else INPUT_TYPE_MESSAGE)
        if not text:
            raise _input_error(f"`input[{index}]` is empty.")
        if len(text) > MAX_INPUT_CHARS:
            raise _input_error(
                f"`input[{index}]` is too long ({len(text)} characters;"
                f" at most {MAX_INPUT_CHARS}, about 8192 tokens)."
            )
        total += len(text)
    if total > MAX_TOTAL_CHARS:
        raise _input_error(
            f"`input` is too long ({total} characters in all;"
            f" at most {MAX_TOTAL_CHARS}, about 300000 tokens)."
        )

    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise bad_request('`encoding_format` must be "float" or "base64".', "encoding_format")

    dimensions = body.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, float) and dimensions.is_integer():
            dimensions = int(dimensions)
        if (
            not isinstance(dimensions, int)
            or isinstance(dimensions, bool)
            or not 1 <= dimensions <= MAX_DIMENSIONS
        ):
            raise bad_request(
                f"`dimensions` must be an integer between 1 and {MAX_DIMENSIONS}.", "dimensions"
            )

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"user: Expected string, received {json_type(user)}", "user")
    return EmbeddingsFields(tuple(inputs), encoding or "float", dimensions, user)


def embedding_model(header: str | None, agents: AgentsConfig) -> ModelRef:
    """The `x-openclaw-model` header's `provider/model`, else agents.defaults.embeddingModel.

    A header must name echo or a configured openai-completions provider; the model itself is
    the upstream's business (embedding models are rarely in a provider's chat `models`)."""
    if header is None:
        if agents.embedding_model is None:
            raise bad_request(NO_EMBEDDING_MODEL, "model", "embedding_model_not_configured")
        return agents.embedding_model
    text = header.strip()
    try:
        ref = ModelRef.parse(text)
    except ValueError:
        raise bad_request(f'Invalid `{MODEL_HEADER}`: expected "provider/model".') from None
    if ref.provider == ECHO_PROVIDER:
        return ref
    provider = agents.providers.get(ref.provider)
    if provider is None:
        raise bad_request(f"Invalid `{MODEL_HEADER}`: unknown provider '{ref.provider[:64]}'.")
    if provider.api != API_OPENAI_COMPLETIONS:
        raise bad_request(
            f"Invalid `{MODEL_HEADER}`: provider '{ref.provider}' is not OpenAI-compatible."
        )
    return ref


def check_echo_size(ref: ModelRef, fields: EmbeddingsFields, default_dimensions: int) -> None:
    if ref.provider != ECHO_PROVIDER:
        return
    values = len(fields.inputs) * (fields.dimensions or default_dimensions)
    if values > ECHO_MAX_VALUES:
        raise bad_request(
            f"The echo embedding model makes at most {ECHO_MAX_VALUES} values per request"
            f" (inputs × dimensions = {values}).",
            "dimensions",
        )


def encode_vector(vector: Sequence[float], encoding: str) -> list[float] | str:
    """OpenAI's base64 form is the little-endian float32 bytes of the vector."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)


def embeddings_body(model: str, result: Embeddings, encoding: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode_vector(vector, encoding)}
            for index, vector in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.total_tokens},
    }


def embeddings_json(model: str, result: Embeddings, encoding: str) -> bytes:
    """`encode_json(embeddings_body(...))`, written a vector at a time. Whole, 2048 vectors of
    3072 floats are one call of json's C encoder of some 4 s, which holds the interpreter
    throughout; a vector at a time, a thread doing it lets the event loop run in between."""
    body = embeddings_body(model, result, encoding)
    data = body["data"]
    body["data"] = []
    # The first `"data":[]` is the key's: inside a JSON string every quote is escaped.
    head, _, tail = encode_json(body).partition(b'"data":[]')
    items = b",".join(encode_json(item) for item in data)
    return b"".join((head, b'"data":[', items, b"]", tail))
