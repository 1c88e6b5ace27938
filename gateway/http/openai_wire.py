"""The OpenAI-compatible wire, Sans-I/O (http-openai.md §2-§10): pure functions, no server.

Request side, in the pipeline's order: `parse_body` (step 5), `validate_fields` (6),
`select_agent` (7), `resolve_session_key` (8), `select_model`, `build_conversation` (9).
Each raises `RequestError` carrying the exact status, message, type, param and code of §8.

Response side: `completion_body` (§6), `ChunkEncoder` (§7; built once per run so each content
chunk is one splice of the JSON-encoded delta between two constant byte strings), the
`/v1/models` bodies (§10), and `error_reply`, the one mapping from any exception to
(status, error body, extra headers).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import attrs

from agents.config import ECHO_PROVIDER, AgentConfig, AgentsConfig, ModelRef
from agents.errors import (
    InvalidSessionKey,
    SessionArchived,
    StoreUnavailable,
    TurnsBacklogged,
    UnansweredResult,
    UnknownAgent,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
    client_message,
)
from agents.ids import uuid7
from agents.keys import (
    AGENT_ID_RE,
    INVALID_KEY_MESSAGE,
    KEY_TOO_LONG_MESSAGE,
    RESERVED_KEY_MESSAGE,
    SESSION_KEY_MAX,
    is_reserved,
    normalize_session_key,
)
from agents.providers.base import (
    IMAGE_ONLY_TEXT,
    REASONING_EFFORTS,
    TOOL_NAME_RE,
    ChatMessage,
    ImageInput,
    ToolCall,
    Usage,
    format_refusal,
)
from agents.providers.images import image_refusal
from agents.transcript import unanswerable
from gateway.config.model import ChatCompletionsConfig
from gateway.jsonwire import (
    MAX_SAFE_INTEGER,
    dumps,
    error_body,
    has_surrogate,
    scrub_surrogates,
    strict_loads,
    wire,
)

DEFAULT_MODEL = "openclaw"
NO_RESPONSE_TEXT = "No response from OpenClaw."

INVALID_REQUEST = "invalid_request_error"
API_ERROR = "api_error"
UNSUPPORTED = "unsupported_parameter"
# OpenAI's `verbosity` levels (GPT-5): forwarded to an OpenAI-compatible upstream.
VERBOSITIES = frozenset({"low", "medium", "high"})

FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})
MAX_STOP_SEQUENCES = 4  # OpenAI's own limit
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
MAX_TOOLS = 128  # OpenAI's own limit
# OpenAI's function name rule; Anthropic's is the same.
_TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# Tool call ids go into transcripts and every event; OpenAI's are 40 characters.
MAX_TOOL_CALL_ID = 256
TOOL_CHOICES = ("none", "auto", "required")
SHUTDOWN_ABORT = "shutdown"  # AgentRun.abort_reason of runs the drain gave up on

_AGENT_MODEL_PREFIXES = ("openclaw/", "openclaw:", "agent:")
# Every chunk of a stream repeats the echoed `model`, so its length multiplies the answer
# (and a slow reader's queued deltas, rendered together). Model names are far shorter.
MAX_MODEL_CHARS = 256
# What a header value cannot hold (RFC 9110 §5.5: controls other than HTAB).
_HEADER_UNSAFE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
INVALID_USER_MESSAGE = "Invalid `user`: control characters are not allowed."
_DATA_URI_RE = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL | re.IGNORECASE)


# -- errors ---------------------------------------------------------------------------------


class RequestError(Exception):
    """A request the gateway answers with an error (§8). `detail` is for the log only."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = INVALID_REQUEST,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        detail: str | None = None,
        closes: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.detail = detail
        self.closes = closes  # the connection cannot carry another request (as 408, 413)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, param=self.param, code=self.code)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> RequestError:
    return RequestError(400, message, param=param, code=code)


def unauthorized() -> RequestError:
    """RFC 9110 §15.5.2: a 401 names the scheme to authenticate with; the spec lists no
    header, and the token of every endpoint (the hooks' too) is a bearer token (RFC 6750 §3).
    No realm or error parameter: the body says what went wrong."""
    return RequestError(
        401,
        "Unauthorized",
        "unauthorized",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def auth_locked_out(retry_after: int) -> RequestError:
    return RequestError(
        429,
        "Too many failed authentication attempts. Please try again later.",
        "rate_limited",
        headers={"Retry-After": str(retry_after)},
    )


def payload_too_large() -> RequestError:
    return RequestError(413, "Payload too large")


def body_timeout() -> RequestError:
    return RequestError(408, "Request body timeout")


def broken_body() -> RequestError:
    """A body whose transfer framing broke while it was read: the words of the 400 for a
    request the HTTP parser refuses with its head (gateway/server.py)."""
    return RequestError(400, "Bad Request", closes=True, detail="broken request body framing")


def shutting_down() -> RequestError:
    return RequestError(503, "gateway is shutting down", API_ERROR, headers={"Retry-After": "1"})


def internal_error() -> RequestError:
    return RequestError(500, "internal error", API_ERROR)


def error_reply(exc: BaseException) -> RequestError:
    """The one mapping from a failure to its §8 row: our request errors as they are, the
    agents layer's typed errors by class (most specific first), anything else a 500."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, UpstreamRateLimited):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        return RequestError(429, exc.message, "rate_limit_error", headers=headers)
    if isinstance(exc, UpstreamAuthFailed):
        return RequestError(502, exc.message, API_ERROR, code="upstream_auth_failed")
    if isinstance(exc, UpstreamTimeout):
        return RequestError(504, exc.message, API_ERROR)
    if isinstance(exc, UpstreamStatusError) and exc.refused:
        # Still §8's 502, but saying why the upstream refused the request (a deliberate
        # difference: the spec returns no upstream detail, and the client can only fix what
        # it is told): `agents.errors.client_message`.
        return RequestError(502, client_message(exc), API_ERROR)
    if isinstance(exc, UpstreamError):
        return RequestError(502, UpstreamError.message, API_ERROR)
    if isinstance(exc, UnknownAgent | InvalidSessionKey):
        # A run whose agent left the config while queued, or a key the registry refused.
        return bad_request(exc.message)
    if isinstance(exc, SessionArchived):
        # The key names an archived session: the request is refused as it is, not retried
        # (a client restores the session first: `sessions.patch {archived: false}`).
        return bad_request(exc.message, code="session_archived")
    if isinstance(exc, UnansweredResult):
        # Found against the session's history: `messages`, or a Responses `input`.
        return bad_request(exc.message)
    if isinstance(exc, TurnsBacklogged):
        # Overloaded, answered as the gateway's other overloads are (shutdown, the pre-auth
        # cap): 503 with `Retry-After: 1`. Not 429: that is a limit on the client itself.
        return RequestError(503, exc.message, API_ERROR, headers={"Retry-After": "1"})
    if isinstance(exc, StoreUnavailable):
        # The shared database is away (restarting, failing over): nothing of the turn was
        # written (one transaction), so the client may send it again.
        return RequestError(
            503, "session store unavailable", API_ERROR, headers={"Retry-After": "1"}
        )
    # StoreError, a bug the agents layer caught (AgentError), or one of ours.
    return internal_error()


# -- step 5: the body -----------------------------------------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as an object: empty, whitespace or a non-object JSON value count as `{}`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("Request body is not valid UTF-8.") from None
    if not text.strip():
        return {}
    try:
        value = strict_loads(text, finite=True)
    except ValueError as exc:  # JSONDecodeError included; its str() is the parser's message
        raise bad_request(str(exc)) from None
    except RecursionError as exc:  # nesting deeper than the interpreter's stack
        raise bad_request(str(exc)) from None
    if not isinstance(value, dict):
        return {}
    scrub_surrogates(value, text)  # in place
    return value


# -- step 6: request fields -----------------------------------------------------------------


def json_type(value: Any) -> str:
    """JSON's name for a parsed value's type (booleans are not numbers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(field: str, expected: str, value: Any, param: str | None = None) -> RequestError:
    return bad_request(
        f"{field}: Expected {expected}, received {json_type(value)}", param=param or field
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_integer(value: Any) -> int | None:
    """A JSON number with an integral value (`2` and `2.0` alike, as JavaScript sees them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@attrs.frozen
class ChatFields:
    """The validated fields of a chat completion request (§5)."""

    stream: bool = False
    include_usage: bool = False
    # The sampling fields forwarded to the provider, under the names the client used.
    params: Mapping[str, Any] = attrs.field(factory=dict)
    user: str | None = None


# (field, low, high, message) in the table's order; both ends inclusive.
_RANGES = (
    ("temperature", 0, 2, "`temperature` must be between 0 and 2."),
    ("top_p", 0, 1, "`top_p` must be between 0 and 1."),
    ("frequency_penalty", -2, 2, "`frequency_penalty` must be between -2.0 and 2.0."),
    ("presence_penalty", -2, 2, "`presence_penalty` must be between -2.0 and 2.0."),
)


def validate_fields(body: Mapping[str, Any]) -> ChatFields:
    """§5 in the table's order; the first failure wins. `null` is absent everywhere."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _type_error("stream", "boolean", stream)

    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _type_error("stream_options", "object", options)
        flag = options.get("include_usage")
        if flag is not None and not isinstance(flag, bool):
            raise _type_error("stream_options.include_usage", "boolean", flag, "stream_options")
        include_usage = bool(flag)

    n = body.get("n")
    if n is not None:
        count = _as_integer(n)
        if count is None or count < 1:
            raise bad_request("`n` must be a positive integer.", "n")
        if count > 1:
            raise bad_request("n>1 is not supported.", "n", UNSUPPORTED)

    for field, allowed in (("functions", ([],)), ("function_call", ("none", "auto"))):
        value = body.get(field)
        if value is not None and value not in allowed:
            raise bad_request(f"`{field}` is not supported; use `tools`.", field, UNSUPPORTED)
    tool_params = _tool_params(body)

    params: dict[str, Any] = {}
    for field, low, high, message in _RANGES:
        value = body.get(field)
        if value is None:
            continue
        if not _is_number(value):
            raise _type_error(field, "number", value)
        if not low <= value <= high:
            raise bad_request(message, field)
        params[field] = value

    seed = body.get("seed")
    if seed is not None:
        as_int = _as_integer(seed)
        if as_int is None:
            raise bad_request("`seed` must be an integer.", "seed")
        if not -(2**63) <= as_int < 2**63:
            # OpenAI and vLLM refuse any other: the client's mistake, not an upstream error.
            raise bad_request("`seed` must be a signed 64-bit integer.", "seed")
        params["seed"] = as_int

    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is None:
            continue
        cap = _as_integer(value)
        if cap is None or not 1 <= cap <= MAX_SAFE_INTEGER:
            raise bad_request(f"{field} must be a positive safe integer", field)
        params[field] = cap

    stop = body.get("stop")
    if stop is not None:
        params["stop"] = _stop(stop)
        if params["stop"] is None:
            del params["stop"]

    response_format = body.get("response_format")
    if response_format is not None:
        format_type = response_format.get("type") if isinstance(response_format, dict) else None
        # Checked as a string before the set lookup: an object or array is not hashable.
        if not isinstance(format_type, str) or format_type not in RESPONSE_FORMATS:
            raise bad_request(
                "Invalid response_format: response_format.type must be text, json_object,"
                " or json_schema",
                "response_format",
            )
        if format_type == "json_schema":
            spec = response_format.get("json_schema")
            if spec is None:
                raise bad_request(
                    "Invalid response_format: type json_schema needs response_format.json_schema",
                    "response_format",
                )
            if not isinstance(spec, dict):
                raise _type_error("response_format.json_schema", "object", spec, "response_format")
            check_json_schema(spec, "response_format.json_schema", "response_format")
        params["response_format"] = response_format

    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str):
            raise _type_error("reasoning_effort", "string", effort)
        if effort not in REASONING_EFFORTS:
            raise bad_request(
                "Invalid reasoning_effort: reasoning_effort must be none, minimal, low, medium,"
                " high, or xhigh",
                "reasoning_effort",
            )
        params["reasoning_effort"] = effort

    verbosity = body.get("verbosity")
    if verbosity is not None:
        if not isinstance(verbosity, str):
            raise _type_error("verbosity", "string", verbosity)
        if verbosity not in VERBOSITIES:
            raise bad_request(
                "Invalid verbosity: verbosity must be low, medium, or high", "verbosity"
            )
        params["verbosity"] = verbosity

    modalities = body.get("modalities")
    if modalities is not None:
        # Text is all a reply can be: asking for it changes nothing, asking for audio is
        # refused rather than answered without it.
        if not isinstance(modalities, list):
            raise _type_error("modalities", "array", modalities)
        if not all(isinstance(m, str) and m in ("text", "audio") for m in modalities):
            raise bad_request(
                "Invalid modalities: modalities entries must be text or audio", "modalities"
            )
        if "audio" in modalities:
            raise bad_request(
                "Audio output is not supported: `modalities` may only ask for text.",
                "modalities",
                UNSUPPORTED,
            )

    params.update(tool_params)
    user = body.get("user")
    return ChatFields(
        stream=bool(stream),
        include_usage=include_usage,
        params=params,
        user=user if isinstance(user, str) else None,
    )


def _tool_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """`tools`, `tool_choice`, `parallel_tool_calls`, checked as OpenAI checks them. Only
    with tools are they forwarded: OpenAI refuses a `tool_choice` without `tools`."""
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise _type_error("tools", "array", tools)
        if len(tools) > MAX_TOOLS:
            raise bad_request(f"`tools` supports at most {MAX_TOOLS} tools.", "tools")
        for index, tool in enumerate(tools):
            names.append(_tool_name(tool, f"tools[{index}]"))
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise bad_request(f"Duplicate function name '{duplicate}' in `tools`.", "tools")
    choice = body.get("tool_choice")
    allowed: frozenset[str] | None = None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        spec = choice.get("allowed_tools")
        if not isinstance(spec, dict):
            raise _type_error("tool_choice.allowed_tools", "object", spec, "tool_choice")
        choice, allowed = allowed_tools(spec.get("mode"), spec.get("tools"), names, nested=True)
    elif choice is not None:
        if isinstance(choice, dict):
            function = choice.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if choice.get("type") != "function" or not isinstance(name, str):
                raise bad_request(
                    'Invalid `tool_choice`: expected "none", "auto", "required" or'
                    ' {"type": "function", "function": {"name": ...}}.',
                    "tool_choice",
                )
            if name not in names:
                raise bad_request(
                    f"Invalid `tool_choice`: no function named '{name[:64]}' in `tools`.",
                    "tool_choice",
                )
        elif choice not in TOOL_CHOICES:
            raise bad_request(
                'Invalid `tool_choice`: expected "none", "auto", "required" or a named function.',
                "tool_choice",
            )
        elif choice == "required" and not names:
            raise bad_request('`tool_choice` "required" needs `tools`.', "tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _type_error("parallel_tool_calls", "boolean", parallel)
    if not names:
        return {}
    if allowed is not None:
        tools = [tool for tool, name in zip(body["tools"], names, strict=True) if name in allowed]
    out: dict[str, Any] = {"tools": tools}
    if choice is not None:
        out["tool_choice"] = choice
    if parallel is not None:
        out["parallel_tool_calls"] = parallel
    return out


def allowed_tools(
    mode: Any, listed: Any, names: list[str], nested: bool
) -> tuple[str, frozenset[str]]:
    """`tool_choice` `allowed_tools` (`nested`: chat completions' entries, the name under
    `function`; else the Responses API's flat ones): its mode, as the plain `tool_choice` every
    provider takes, and the functions of `tools` the model may call. Each provider is given
    only those tools: what the choice asks for, in a form every server knows (OpenAI keeps
    the others in the prompt only to cache it)."""
    if mode not in ("auto", "required"):  # compared, not hashed: `mode` may be any JSON
        raise bad_request(
            'Invalid `tool_choice`: allowed_tools.mode must be "auto" or "required".',
            "tool_choice",
        )
    found: set[str] = set()
    for entry in listed if isinstance(listed, list) and listed else [None]:
        spec = entry.get("function") if nested and isinstance(entry, dict) else entry
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(entry, dict) or entry.get("type") != "function" or type(name) is not str:
            raise bad_request(
                "Invalid `tool_choice`: allowed_tools.tools must list the functions by name.",
                "tool_choice",
            )
        if name not in names:
            raise bad_request(
                f"Invalid `tool_choice`: no function named '{name[:64]}' in `tools`.",
                "tool_choice",
            )
        found.add(name)
    return mode, frozenset(found)


def _tool_name(tool: Any, path: str) -> str:
    if not isinstance(tool, dict):
        raise _type_error(path, "object", tool, "tools")
    if tool.get("type") != "function":
        raise bad_request(f'Invalid `{path}.type`: only "function" tools are supported.', "tools")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise _type_error(f"{path}.function", "object", function, "tools")
    name = function.get("name")
    if not isinstance(name, str) or _TOOL_NAME_RE.fullmatch(name) is None:
        raise bad_request(
            f"Invalid `{path}.function.name`: 1 to 64 letters, digits, underscores or dashes.",
            "tools",
        )
    for field, kind, expected in (
        ("description", "string", str),
        ("parameters", "object", dict),
        ("strict", "boolean", bool),
    ):
        value = function.get(field)
        if value is not None and not isinstance(value, expected):
            raise _type_error(f"{path}.function.{field}", kind, value, "tools")
    check_parameters(function.get("parameters"), f"{path}.function.parameters")
    return name


def check_parameters(schema: Any, path: str) -> None:
    """A function's `parameters` (an object when given) describe its arguments, which are
    an object: OpenAI and Anthropic refuse a schema of another type. A schema without a
    type is taken (OpenAI takes it; Anthropic is given the type)."""
    if isinstance(schema, dict) and schema.get("type", "object") != "object":
        raise bad_request(
            f'Invalid `{path}`: expected a JSON Schema of "type": "object"'
            " (a function's arguments are an object).",
            "tools",
        )


def check_json_schema(spec: Mapping[str, Any], path: str, param: str) -> None:
    """A `json_schema` output format's fields, as OpenAI checks them: one it refuses would
    otherwise reach the client as the upstream's failure (a 502), not as its own mistake."""
    name = spec.get("name")
    if not isinstance(name, str):
        raise _type_error(f"{path}.name", "string", name, param)
    if not TOOL_NAME_RE.fullmatch(name):
        raise bad_request(f"Invalid {path}.name: 1 to 64 letters, digits, _ or -", param)
    for key, kind, cls in (
        ("description", "string", str),
        ("schema", "object", dict),
        ("strict", "boolean", bool),
    ):
        value = spec.get(key)
        if value is not None and not isinstance(value, cls):
            raise _type_error(f"{path}.{key}", kind, value, param)


def _stop(stop: Any) -> str | list[str] | None:
    entries_message = "Invalid stop: stop entries must be non-empty strings"
    if isinstance(stop, str):
        if not stop:
            raise bad_request(entries_message, "stop")
        return stop
    if not isinstance(stop, list):
        raise bad_request(entries_message, "stop")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise bad_request("Invalid stop: stop supports at most 4 sequences", "stop")
    if not all(isinstance(entry, str) and entry for entry in stop):
        raise bad_request(entries_message, "stop")
    return stop or None  # `[]` asks for nothing


# -- step 7: the agent ----------------------------------------------------------------------


@attrs.frozen
class AgentSelection:
    agent_id: str
    model: str  # echoed in every response exactly as the client sent it (§4.1 step 3)
    explicit: bool  # named by the header or the model, rather than the default


def echoed_model(model: Any) -> str:
    return model if isinstance(model, str) else DEFAULT_MODEL


def header_shown(value: str) -> str:
    """A header's value as sent, for a message: each byte that is not UTF-8 (aiohttp keeps
    it as a lone surrogate, which `wire` writes as a `\\udcff` escape that strict JSON
    parsers refuse) written `\\xff`, as Python shows bytes (the spec is silent)."""
    if not has_surrogate(value):
        return value
    try:
        sent = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no byte decoded to
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return sent.decode("utf-8", "backslashreplace")


def select_agent(
    model: Any, header_agent: str | None, agents: AgentsConfig, unknown_model: str = "error"
) -> AgentSelection:
    """§4.1: the `x-openclaw-agent-id` header (then only echo `model`), else `model`. With
    `unknownModel: "default-agent"` any `model` that names no agent runs the default one."""
    echo = echoed_model(model)
    if len(echo) > MAX_MODEL_CHARS:
        raise bad_request(f"`model` is too long (max {MAX_MODEL_CHARS} characters).", "model")
    wanted = (header_agent or "").strip()
    if wanted:
        agent = agents.agent(wanted)
        if agent is None:
            raise bad_request(f"Unknown agent '{header_shown(wanted)}'.")
        return AgentSelection(agent.id, echo, explicit=True)

    name = model.strip() if isinstance(model, str) else ""
    lowered = name.lower()
    if lowered in ("", "openclaw", "openclaw/default"):
        return AgentSelection(agents.default_agent.id, echo, explicit=False)
    for prefix in _AGENT_MODEL_PREFIXES:
        if lowered.startswith(prefix):
            agent_id = name[len(prefix) :]
            if AGENT_ID_RE.fullmatch(agent_id.lower()) is None:
                break
            agent = agents.agent(agent_id)
            if agent is None:
                raise bad_request(f"Unknown agent '{agent_id}'.", "model")
            return AgentSelection(agent.id, echo, explicit=True)
    if unknown_model == "default-agent":
        return AgentSelection(agents.default_agent.id, echo, explicit=False)
    raise bad_request("Invalid `model`. Use `openclaw` or `openclaw/<agentId>`.", "model")


MODEL_HEADER = "x-openclaw-model"


def select_model(header: str | None, agent: AgentConfig) -> ModelRef | None:
    """`x-openclaw-model: <provider/model>`: a model of the agent's own chain or of its
    allow-list (`agents.list[].models`) for this request; None when absent or empty."""
    raw = (header or "").strip()
    if not raw:
        return None
    try:
        ref = ModelRef.parse(raw)
    except ValueError:
        raise bad_request('Invalid `x-openclaw-model`: expected "provider/model".') from None
    if not agent.allows(ref):
        raise bad_request(
            f"Model '{raw[:200]}' is not allowed for agent '{agent.id}'.",
            code="model_not_allowed",
        )
    return ref


# -- step 8: the session key ----------------------------------------------------------------


@attrs.frozen
class Route:
    """Where a request runs: the agent and the canonical session key."""

    agent_id: str
    session_key: str
    stateless: bool = False  # no header, no `user`: a fresh key (maintenance prunes it early)
    new_key: bool = False  # minted by this request: no session can exist under it yet
    # Named by a chat UI's chat id: the client sends the whole chat every time.
    whole_conversation: bool = False


def new_stateless_key(agent_id: str) -> str:
    return f"agent:{agent_id}:openai:{uuid7()}"


# Open WebUI sends its background tasks (title, tags, follow-ups, search queries,
# autocomplete, image prompts) with the chat's id in its header, but they are not turns of
# the chat. Each is one user message, and each default prompt (open-webui
# backend/open_webui/config.py) begins `### Task:` and quotes the chat in `<chat_history>`;
# its RAG prompt, which wraps a real turn's question, begins so too but quotes no history.
# Two others quote none, and are known by their first sentence: the emoji of a voice call's
# replies (DEFAULT_EMOJI_GENERATION_PROMPT_TEMPLATE) and the merge of several models' answers
# (DEFAULT_MOA_GENERATION_PROMPT_TEMPLATE).
_TASK_PROMPT_START = "### Task:"
_TASK_PROMPT_HISTORY = "<chat_history>"
_TASK_PROMPT_OPENINGS = (
    "Your task is to reflect the speaker's likely facial expression through a fitting emoji.",
    "You have been provided with a set of responses from various models to the latest user query:",
)


# Open WebUI names the background task in a header when its connection is set to send one
# (Connections → the connection → Headers: {"X-OpenWebUI-Task": "{{TASK}}"}): the task's name
# (`title_generation`, `query_generation`, …), or nothing for a turn of the chat. It then tells
# a task whatever its prompt, an operator's own included, and whatever names its session (the
# same templates can put the chat id in x-openclaw-session-key). A value still holding `{{` is
# a placeholder the Open WebUI in front did not fill in: as if the header were not sent.
TASK_HEADER = "x-openwebui-task"


def declared_task(task_header: str | None) -> bool | None:
    """What the task header says: a background task, a turn, or nothing (None)."""
    if task_header is None or "{{" in task_header:
        return None
    return bool(task_header.strip())


def is_background_task(messages: Any) -> bool:
    """Whether `messages` is one of Open WebUI's background tasks: a lone user message
    (beside any system prompt) holding its task prompt."""
    if not isinstance(messages, list):
        return False
    turns = [
        m
        for m in messages
        if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))
    ]
    if len(turns) != 1 or not isinstance(turns[0], dict) or turns[0].get("role") != "user":
        return False
    text = content_text(turns[0].get("content"))
    if text.startswith(_TASK_PROMPT_OPENINGS):
        return True
    return text.startswith(_TASK_PROMPT_START) and _TASK_PROMPT_HISTORY in text


def resolve_session_key(
    header_key: str | None,
    user: str | None,
    selection: AgentSelection,
    agents: AgentsConfig,
    conversation: tuple[str, str] | None = None,
    *,
    background_task: bool = False,
    declared_task: bool = False,
) -> Route:
    """§4.2: the header key, else the conversation header (`(name, value)`, e.g. Open WebUI's
    chat id), else the `user` string, else a fresh key (stateless). A background task
    (`is_background_task`) named only by the conversation header runs stateless: the
    chat's session must not hold it; one the task header declares (`declared_task`) runs
    stateless whatever names a session, once the name is found valid."""
    route = _named_route(header_key, user, selection, agents, conversation, background_task)
    if declared_task and not route.stateless:
        agent_id = route.agent_id
        return Route(agent_id, new_stateless_key(agent_id), stateless=True, new_key=True)
    return route


# A client's header template left as it is (`{{CHAT_ID}}`: an Open WebUI older than the
# placeholders its connection's headers were given) names the same session for every chat of
# every user: refused, so that the misconfiguration shows at once instead of mixing chats.
_PLACEHOLDER_RE = re.compile(r"\{\{[^{}]*\}\}")
_SESSION_KEY_HEADER = "x-openclaw-session-key"


def _refuse_placeholder(header: str, value: str) -> None:
    if _PLACEHOLDER_RE.search(value):
        raise bad_request(f"Invalid `{header}`: a template placeholder left unfilled.")


def _named_route(
    header_key: str | None,
    user: str | None,
    selection: AgentSelection,
    agents: AgentsConfig,
    conversation: tuple[str, str] | None,
    background_task: bool,
) -> Route:
    agent_id = selection.agent_id
    raw = (header_key or "").strip()
    if raw:
        _refuse_placeholder(_SESSION_KEY_HEADER, raw)
        if has_surrogate(raw):
            # Bytes that are not UTF-8 (aiohttp keeps them as surrogate escapes): no key
            # can be stored or echoed from them, and merging them into U+FFFD would let
            # different keys share one session.
            raise bad_request(INVALID_KEY_MESSAGE)
        lowered = raw.lower()
        if is_reserved(lowered):
            raise bad_request(RESERVED_KEY_MESSAGE)
        if lowered.startswith("agent:"):
            key_agent, sep, rest = lowered[len("agent:") :].partition(":")
            if not sep or not rest or AGENT_ID_RE.fullmatch(key_agent) is None:
                raise bad_request(INVALID_KEY_MESSAGE)
            if agents.agent(key_agent) is None:
                raise bad_request(f"Unknown agent '{key_agent}'.")
            if selection.explicit and key_agent != agent_id:
                raise bad_request(
                    f"Session key '{lowered}' belongs to agent '{key_agent}', not '{agent_id}'."
                )
            agent_id = key_agent  # the key's agent is the one that runs
        try:
            key = normalize_session_key(raw, agent_id, agents.main_key, reject_reserved=True)
        except InvalidSessionKey as exc:
            raise bad_request(exc.message) from None
        return Route(agent_id, key)
    header_name, chat_id = conversation or ("", "")
    chat_id = chat_id.strip()
    if chat_id:
        _refuse_placeholder(header_name, chat_id)
        if has_surrogate(chat_id) or _HEADER_UNSAFE_RE.search(chat_id):
            raise bad_request(f"Invalid `{header_name}`.")
        if background_task:
            return Route(agent_id, new_stateless_key(agent_id), stateless=True, new_key=True)
        key = f"agent:{agent_id}:openai-chat:{chat_id.lower()}"
        if len(key) > SESSION_KEY_MAX:
            raise bad_request(KEY_TOO_LONG_MESSAGE)
        return Route(agent_id, key, whole_conversation=True)
    name = (user or "").strip()
    if _HEADER_UNSAFE_RE.search(name):
        # The resolved key goes back in the x-openclaw-session-key response header, and no
        # header can carry a control character (RFC 9110 §5.5; aiohttp refuses to write it).
        raise bad_request(INVALID_USER_MESSAGE, "user")
    key = f"agent:{agent_id}:openai-user:{name.lower()}" if name else new_stateless_key(agent_id)
    if len(key) > SESSION_KEY_MAX:
        raise bad_request(KEY_TOO_LONG_MESSAGE)
    return Route(agent_id, key, stateless=not name, new_key=not name)


# -- step 9: the prompt and the images ------------------------------------------------------


@attrs.frozen
class Conversation:
    """The client's `messages` as the session is given them (agents/transcript.py)."""

    messages: tuple[ChatMessage, ...]  # user, assistant and tool; the last one user or tool
    extra_system_prompt: str
    text: str  # the last user message's text ("" if none)
    images: tuple[ImageInput, ...] = ()  # the last user message's images

    @property
    def given_images(self) -> tuple[ImageInput, ...]:
        """Every image the model is given: the last user message's, then those of the tool
        results the conversation ends with (build_conversation)."""
        results = (image for m in self.messages if m.role == "tool" for image in m.images)
        return (*self.images, *results)


def content_text(content: Any) -> str:
    """The text of a message's `content`, trimmed (§4.3)."""
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        return ""
    pieces: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if part.get("type") in ("text", "input_text") and isinstance(text, str) and text:
            pieces.append(text)
        input_text = part.get("input_text")
        if isinstance(input_text, str) and input_text:
            pieces.append(input_text)
    return "\n".join(pieces).strip()


def _image_parts(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict) and p.get("type") == "image_url"]


def _call_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= MAX_TOOL_CALL_ID:
        return value
    return None


def _tool_calls(message: Mapping[str, Any], index: int) -> tuple[ToolCall, ...]:
    calls = message.get("tool_calls")
    if calls is None:
        return ()
    path = f"messages[{index}].tool_calls"
    if not isinstance(calls, list):
        raise _type_error(path, "array", calls, "messages")
    out: list[ToolCall] = []
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments", "") if isinstance(function, dict) else None
        call_id = _call_id(call.get("id")) if isinstance(call, dict) else None
        if (
            call_id is None
            or not isinstance(name, str)
            or not isinstance(arguments, str)
            or call.get("type", "function") != "function"
        ):
            raise bad_request(
                f"Invalid `{path}[{number}]`: expected"
                ' {"id", "type": "function", "function": {"name", "arguments"}}.',
                "messages",
            )
        if _TOOL_NAME_RE.fullmatch(name) is None:
            # As in `tools`: the upstream would refuse it, on this turn and every later one.
            raise bad_request(
                f"Invalid `{path}[{number}].function.name`: 1 to 64 letters, digits,"
                " underscores or dashes.",
                "messages",
            )
        out.append(ToolCall(call_id, name, arguments))
    return tuple(out)


def _tool_result(message: Mapping[str, Any], role: str, index: int) -> ChatMessage:
    name = message.get("name")
    name = name if isinstance(name, str) and name else None
    # A legacy `function` message has only its function's name to say what it answers.
    call_id = _call_id(message.get("tool_call_id")) or (name if role == "function" else None)
    if call_id is None:
        raise bad_request(
            f"Invalid `messages[{index}].tool_call_id`: a tool message needs the id of the"
            f" call it answers (at most {MAX_TOOL_CALL_ID} characters).",
            "messages",
        )
    return ChatMessage(
        "tool", content_text(message.get("content")), tool_call_id=call_id, tool_name=name
    )


def build_conversation(messages: Any, limits: ChatCompletionsConfig) -> Conversation:
    """§4.3 and §4.4, as structured messages rather than one flattened prompt: `system` and
    `developer` texts become the extra system prompt; user, assistant (with its `tool_calls`)
    and tool messages are kept in order up to the last user or tool message. Empty user and
    assistant messages are dropped, but for our empty reply's placeholder, kept as an empty
    reply; the last user message keeps its images."""
    system: list[str] = []
    entries: list[tuple[ChatMessage, Any]] = []  # with the raw content, for image parts
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        role = role.strip() if isinstance(role, str) else ""
        content = message.get("content")
        if role in ("system", "developer"):
            if text := content_text(content):
                system.append(text)
        elif role == "user":
            entries.append((ChatMessage("user", content_text(content)), content))
        elif role == "assistant":
            text = content_text(content)
            placeholder = text == NO_RESPONSE_TEXT
            if placeholder:
                text = ""  # our placeholder for an empty reply, not the model's words
            calls = _tool_calls(message, index)
            # The reasoning that led to calls, as this gateway answers it: the models that
            # take it back in a tool loop (DeepSeek's, Kimi's) refuse the loop without it.
            reasoning = message.get("reasoning_content") if calls else None
            reasoning = reasoning if isinstance(reasoning, str) else ""
            # The placeholder stays, empty: it marks where the session's empty reply is
            # (agents/transcript.py); the model never gets an empty reply.
            if text or calls or placeholder:
                entries.append(
                    (
                        ChatMessage("assistant", text, tool_calls=calls, reasoning=reasoning),
                        content,
                    )
                )
        elif role in ("tool", "function"):
            entries.append((_tool_result(message, role, index), content))
    last = max((i for i, (m, _) in enumerate(entries) if m.role != "assistant"), default=-1)
    entries = entries[: last + 1]  # a trailing assistant message answers nothing
    last_user = max((i for i, (m, _) in enumerate(entries) if m.role == "user"), default=-1)
    # The images given to the model: the last user message's, and those of the tool results
    # the conversation ends with (the calls being answered: a screenshot, a chart). Validated
    # together, so the limits hold for the turn; earlier ones are never replayed (§4.4).
    first_result = len(entries)
    while first_result and entries[first_result - 1][0].role == "tool":
        first_result -= 1
    holders = [i for i in (last_user, *range(first_result, len(entries))) if i >= 0]
    parts_of = {i: _image_parts(entries[i][1]) for i in holders}
    every_part = [part for i in holders for part in parts_of[i]]
    validated = validate_images(every_part, limits) if every_part else ()
    images_of: dict[int, tuple[ImageInput, ...]] = {}
    for i in holders:
        images_of[i], validated = validated[: len(parts_of[i])], validated[len(parts_of[i]) :]
    kept: list[ChatMessage] = []
    text, images = "", cast(tuple[ImageInput, ...], ())
    for index, (message, _) in enumerate(entries):
        if index == last_user:
            text = message.text
            if parts_of[index]:
                images = images_of[index]
                text = text or IMAGE_ONLY_TEXT
                message = attrs.evolve(message, text=text, images=images)
        elif images_of.get(index):
            message = attrs.evolve(message, images=images_of[index])
        if message.role == "user" and not message.text:
            continue
        kept.append(message)
    if not any(m.role != "assistant" for m in kept):
        raise _missing_user_message()
    return Conversation(tuple(kept), "\n\n".join(system), text, images)


def check_tool_results(conversation: Conversation, route: Route, param: str) -> None:
    """A session minted for this request has no history: a tool result that answers no call
    of the request itself is refused here, before a stream opens. A session's turn is
    checked against its history by the run."""
    if route.new_key:
        orphan = unanswerable((), conversation.messages)
        if orphan is not None:
            raise bad_request(UnansweredResult(orphan.tool_call_id or "").message, param)


def _missing_user_message() -> RequestError:
    return bad_request("Missing user message in `messages`.", "messages")


def _invalid_image(detail: str) -> RequestError:
    return RequestError(
        400, "Invalid image_url content in `messages`.", param="messages", detail=detail
    )


def validate_images(
    parts: list[dict[str, Any]], limits: ChatCompletionsConfig
) -> tuple[ImageInput, ...]:
    """§4.4: base64 data URIs only, within the configured limits. The client sees one
    generic message; `detail` says which rule failed, for the log."""
    if len(parts) > limits.max_image_parts:
        raise _invalid_image(
            f"Too many image_url parts ({len(parts)}; limit {limits.max_image_parts})"
        )
    allowed = {mime.lower() for mime in limits.images.allowed_mimes}
    images: list[ImageInput] = []
    total = 0
    for index, part in enumerate(parts):
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str):
            raise _invalid_image(f"image_url part {index} has no url string")
        match = _DATA_URI_RE.fullmatch(url.strip())
        if match is None:
            raise _invalid_image(f"image_url part {index} is not a base64 data: URI")
        mime, payload = match.group(1).strip().lower(), match.group(2)
        if mime not in allowed:
            # Truncated: the detail goes to the log, and the client chose the string.
            raise _invalid_image(f"image_url part {index} has MIME type {mime[:64]!r}")
        if not payload:
            raise _invalid_image(f"image_url part {index} has an empty payload")
        try:
            size = len(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            raise _invalid_image(f"image_url part {index} is not valid base64") from None
        if size > limits.images.max_bytes:
            raise _invalid_image(
                f"image_url part {index} is {size} bytes (limit {limits.images.max_bytes})"
            )
        total += size
        if total > limits.max_total_image_bytes:
            raise _invalid_image(f"images total more than {limits.max_total_image_bytes} bytes")
        images.append(ImageInput(mime, payload, size))
    return tuple(images)


def check_images_taken(
    images: tuple[ImageInput, ...], chain: tuple[ModelRef, ...], agents: AgentsConfig
) -> None:
    """Images that no model the run may use can take (an upstream's own types and sizes:
    agents/providers/images.py) are the client's error, refused before any upstream call
    and before the turn is stored. A chain with one model that takes them goes ahead: the
    session skips the models before it (agents/session.py)."""
    if not images:
        return
    refusals: list[str] = []
    for ref in chain:
        provider = None if ref.provider == ECHO_PROVIDER else agents.providers.get(ref.provider)
        refusal = image_refusal(provider, images)
        if refusal is None:
            return
        refusals.append(refusal)
    raise _invalid_image("; ".join(refusals))


def check_format_taken(
    response_format: Any,
    chain: tuple[ModelRef, ...],
    agents: AgentsConfig,
    param: str = "response_format",
) -> None:
    """A json_schema format no model the run may use can be given (`format_refusal`:
    Anthropic's) is refused before any upstream call, as an unsupported parameter; a chain
    with one that can goes ahead, the session skipping the models before it."""
    refused: list[str] = []
    for ref in chain:
        provider = None if ref.provider == ECHO_PROVIDER else agents.providers.get(ref.provider)
        if format_refusal(provider, response_format) is None:
            return
        refused.append(f"{ref.provider}/{ref.model}")
    name = "text.format" if param == "text" else param
    raise bad_request(
        f"A json_schema `{name}` is not supported by Anthropic models ({', '.join(refused)}).",
        param,
        UNSUPPORTED,
    )


# -- responses ------------------------------------------------------------------------------


def new_completion_id() -> str:
    """`chatcmpl-<32hex>`: the response id, and the run id (deviation 1)."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def finish_reason(stop_reason: str) -> str:
    """A run's stop reason as OpenAI names it; aborted runs and anything else read as a
    normal stop. A client that left sees none; one whose run someone else aborted
    (`chat.abort`, a reset) gets its text so far as stopped: OpenAI defines no reason for
    it, and the abort was asked for (README, "Aborted by someone else")."""
    return stop_reason if stop_reason in FINISH_REASONS else "stop"


def usage_body(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
    }
    if usage.reasoning:  # as OpenAI gives it; left out when the provider said nothing
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return body


def tool_calls_body(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls
    ]


def completion_body(
    completion_id: str,
    created: int,
    model: str,
    text: str,
    stop_reason: str,
    usage: Usage,
    *,
    reasoning: str = "",
    tool_calls: tuple[ToolCall, ...] = (),
) -> dict[str, Any]:
    """The non-streaming response of §6; `content` is null beside tool calls, as OpenAI's."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if tool_calls else NO_RESPONSE_TEXT),
    }
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls_body(tool_calls)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(stop_reason),
            }
        ],
        "usage": usage_body(usage),
    }


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; a lone surrogate (a provider that split a pair) is escaped
    rather than failing the whole response."""
    return wire(dumps(value))


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"


def sse_event(value: Any) -> bytes:
    return b"data: " + encode_json(value) + b"\n\n"


class ChunkEncoder:
    """The `chat.completion.chunk` events of one run (§7). Every chunk repeats id, created
    and model, so their encoding is done once here; a content chunk costs one string
    escape and a three-part join."""

    __slots__ = ("_content_prefix", "_head", "role")
    _CHOICE_TAIL = '"logprobs":null,"finish_reason":'
    _CONTENT_SUFFIX = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self._head = (
            f'data: {{"id":{dumps(completion_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{dumps(model)},"choices":'
        )
        self._content_prefix = wire(self._head + '[{"index":0,"delta":{"content":')
        self.role = self._choice('{"role":"assistant","content":""}', "null")

    def _choice(self, delta: str, finish: str) -> bytes:
        choice = f'[{{"index":0,"delta":{delta},{self._CHOICE_TAIL}{finish}}}]}}\n\n'
        return wire(self._head + choice)

    def content(self, delta: str) -> bytes:
        return b"".join(
            (self._content_prefix, wire(encode_basestring(delta)), self._CONTENT_SUFFIX)
        )

    def reasoning(self, delta: str) -> bytes:
        return self._choice(dumps({"reasoning_content": delta}), "null")

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes:
        """OpenAI's first fragment of a call: index, id, type, name, empty arguments."""
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._choice(dumps({"tool_calls": [call]}), "null")

    def tool_call_arguments(self, index: int, piece: str) -> bytes:
        """A later fragment: the index and a piece of the arguments only."""
        call = {"index": index, "function": {"arguments": piece}}
        return self._choice(dumps({"tool_calls": [call]}), "null")

    def finish(self, stop_reason: str) -> bytes:
        return self._choice("{}", dumps(finish_reason(stop_reason)))

    def usage(self, usage: Usage) -> bytes:
        return wire(self._head + f'[],"usage":{dumps(usage_body(usage))}}}\n\n')


def error_event(error: RequestError) -> bytes:
    """An error after the 200 headers went out: in band, then the stream ends with [DONE]."""
    return sse_event(error.body())


# -- /v1/models ------------------------------------------------------------------------------


def model_ids(agents: AgentsConfig) -> list[str]:
    """§10: `openclaw`, `openclaw/default`, the default agent, then every agent in order."""
    ids = [
        DEFAULT_MODEL,
        f"{DEFAULT_MODEL}/default",
        f"{DEFAULT_MODEL}/{agents.default_agent.id}",
        *(f"{DEFAULT_MODEL}/{agent.id}" for agent in agents.agents),
    ]
    return list(dict.fromkeys(ids))


def model_object(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "openclaw",
        "permission": [],
    }


def models_body(agents: AgentsConfig) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(i) for i in model_ids(agents)]}


_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def decode_model_id(raw: str) -> str:
    """The `{id}` of `/v1/models/{id}` from the raw path: percent-decoded as UTF-8, strictly."""
    if _BAD_ESCAPE_RE.search(raw):
        raise bad_request("Invalid model id encoding.")
    try:
        model_id = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("Invalid model id encoding.") from None
    if not model_id:
        raise bad_request("Missing model id.")
    return model_id


def model_not_found(model_id: str) -> RequestError:
    return RequestError(
        404, f"Model '{model_id}' not found.", param="model", code="model_not_found"
    )
