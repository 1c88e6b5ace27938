"""The OpenClaw gateway protocol without I/O (ws-protocol.md): frames, errors, connect params,
negotiation, auth outcomes, scopes, and a small params reader for the methods.

Everything here is a pure function or value; the connection and the dispatcher do the I/O.
Wire JSON is compact and keeps the spec's key order (dicts are built in that order).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from gateway.jsonwire import (
    dumps,
    has_surrogate,
    scrub_surrogates,
    spells_surrogate,
    strict_loads,
    wire,
)

# --- Limits and versions -----------------------------------------------------------------

PROTOCOL_MIN: Final = 3  # the oldest protocol we still speak (OpenClaw's probe clients)
PROTOCOL_MAX: Final = 4
PREAUTH_MAX_PAYLOAD: Final = 64 * 1024  # §2.3: before `connect` only a small frame is legal
MAX_PAYLOAD: Final = 25 * 1024 * 1024  # §2.3, hello-ok policy.maxPayload
MAX_BUFFERED_BYTES: Final = 50 * 1024 * 1024  # §9.3, hello-ok policy.maxBufferedBytes
# A connection's event `seq` would need 10**16 events to take a 17th digit.
SEQ_DIGITS_MAX: Final = 16
CLOSE_REASON_MAX: Final = 123  # RFC 6455 §5.5: a close frame's reason is at most 123 bytes
# The `client` strings of `connect` are kept in the presence book and sent in every `presence`
# event to every client (64 entries at a time): a name, a version or an id is far shorter.
CLIENT_FIELD_MAX: Final = 256

# --- Error codes (§6) ----------------------------------------------------------------------

INVALID_REQUEST: Final = "INVALID_REQUEST"
FORBIDDEN: Final = "FORBIDDEN"
UNAVAILABLE: Final = "UNAVAILABLE"
AGENT_TIMEOUT: Final = "AGENT_TIMEOUT"  # reserved
NOT_PAIRED: Final = "NOT_PAIRED"  # never sent (deviation 21)

# --- Close codes (RFC 6455 §7.4.1) and the reasons we send --------------------------------

CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012

REASON_INVALID_FRAME: Final = "invalid request frame"
REASON_PREAUTH_TOO_LARGE: Final = "preauth payload too large"
REASON_PROTOCOL_MISMATCH: Final = "protocol mismatch"
REASON_SLOW_CONSUMER: Final = "slow consumer"
REASON_SERVICE_RESTART: Final = "service restart"

# --- Messages -----------------------------------------------------------------------------

MSG_FIRST_MUST_BE_CONNECT: Final = "invalid handshake: first request must be connect"
MSG_CONNECT_AGAIN: Final = "connect is only valid as the first request"
MSG_INVALID_ROLE: Final = "invalid role"
MSG_INTERNAL: Final = "internal error"
INVALID_FRAME_ID: Final = "invalid"  # the response id when a frame has none (§6)
# OpenClaw's mark at the end of a text cut short (`chat.history`; a `chat` event over maxPayload).
TRUNCATED_MARK: Final = "\n...(truncated)..."

# --- Scopes (§5.2, §7) --------------------------------------------------------------------

ADMIN: Final = "operator.admin"
READ: Final = "operator.read"
WRITE: Final = "operator.write"
APPROVALS: Final = "operator.approvals"
PAIRING: Final = "operator.pairing"
OPERATOR_SCOPES: Final = (ADMIN, READ, WRITE, APPROVALS, PAIRING)
# OpenClaw's scope for its questions (`question.list`), which its CLI asks for alone: granted
# when asked for, not among the five a connect that asks for none gets (admin covers it).
QUESTIONS: Final = "operator.questions"
GRANTABLE_SCOPES: Final = (*OPERATOR_SCOPES, QUESTIONS)
ROLE_OPERATOR: Final = "operator"

EVENTS: Final = (
    "connect.challenge",
    "tick",
    "chat",
    "agent",
    "sessions.changed",
    "presence",
    "health",
    "shutdown",
)
CAPABILITIES: Final = ("published-model-catalog",)  # §12: `openclaw models list` needs it


# --- Errors ---------------------------------------------------------------------------------


class WsError(Exception):
    """An error response. Handlers raise it (or a typed error the dispatcher maps to it).

    `payload` is sent beside the error (the `agent` method's failed final answer, §8).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
        payload: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        self.payload = payload

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = dict(self.details)
        if self.retryable is not None:
            out["retryable"] = self.retryable
        if self.retry_after_ms is not None:
            out["retryAfterMs"] = self.retry_after_ms
        return out


class ParamsError(Exception):
    """Params failed validation; `detail` names the JSON-pointer path (`at /client/id: …`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- Frames ---------------------------------------------------------------------------------


@attrs.frozen
class RequestFrame:
    id: str
    method: str
    params: Any = None  # as sent; `None` when omitted or null (both mean `{}`)
    # The params (`name`, or `name/index` of a list's item) whose text held a lone surrogate
    # before it was repaired: a session key among them is refused, not merged with another.
    unpaired: frozenset[str] = frozenset()


class NotJson(Exception):
    """The text is not JSON at all."""


class InvalidFrame(Exception):
    """JSON, but not a request frame. `frame_id` is the frame's id when it had a usable one."""

    def __init__(self, detail: str, frame_id: str | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.frame_id = frame_id


# A request's id is echoed in every answer to it (twice for `agent`) and kept while the call
# goes on: without a bound, a frame of maxPayload could be mostly id. OpenClaw's clients send
# UUIDs (36 characters); 256 is the bound of the other ids a client picks (`idempotencyKey`).
REQUEST_ID_MAX = 256


def parse_request(text: str | bytes) -> RequestFrame:
    try:
        value = strict_loads(text if isinstance(text, str) else text.decode())  # §1
    except ValueError as exc:  # UnicodeDecodeError included
        raise NotJson(str(exc)) from None
    except RecursionError:  # nested deeper than the parser's stack: no frame we could read
        raise NotJson("nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidFrame("must be object", None)
    # A lone surrogate is replaced before any of the frame is used, echoed, logged or stored.
    source = text if isinstance(text, str) else text.decode(errors="replace")
    unpaired = _unpaired(value.get("params")) if spells_surrogate(source) else frozenset()
    scrub_surrogates(value, source)
    raw_id = value.get("id")
    # An over-long id is never echoed: the error answers with the id `invalid`.
    usable = isinstance(raw_id, str) and 0 < len(raw_id) <= REQUEST_ID_MAX
    frame_id = raw_id if usable else None
    if value.get("type") != "req":
        raise InvalidFrame('at /type: must be "req"', frame_id)
    if frame_id is None:
        if isinstance(raw_id, str) and raw_id:
            raise InvalidFrame(f"at /id: must have at most {REQUEST_ID_MAX} characters", None)
        raise InvalidFrame("at /id: must be a non-empty string", None)
    method = value.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidFrame("at /method: must be a non-empty string", frame_id)
    return RequestFrame(frame_id, method, value.get("params"), unpaired)


def _unpaired(params: Any) -> frozenset[str]:
    """`RequestFrame.unpaired` of `params`, not yet repaired."""
    if not isinstance(params, dict):
        return frozenset()
    found: set[str] = set()
    for name, value in params.items():
        if isinstance(value, str):
            if has_surrogate(value):
                found.add(name)
        elif isinstance(value, list):
            found.update(
                f"{name}/{i}"
                for i, item in enumerate(value)
                if isinstance(item, str) and has_surrogate(item)
            )
    return frozenset(found)


def response(frame_id: str, payload: Any) -> bytes:
    return wire(dumps({"type": "res", "id": frame_id, "ok": True, "payload": payload}))


def error_response(frame_id: str, error: WsError) -> bytes:
    frame: dict[str, Any] = {"type": "res", "id": frame_id, "ok": False}
    if error.payload is not None:
        frame["payload"] = error.payload
    frame["error"] = error.to_dict()
    return wire(dumps(frame))


def unsequenced_event(name: str, payload: Any) -> bytes:
    """An event without `seq`: only `connect.challenge` (§9.1)."""
    return wire(dumps({"type": "event", "event": name, "payload": payload}))


_SEQ_KEY: Final = ',"seq":'  # ends an event frame's head


@attrs.define(eq=False)
class Holders:
    """How many connections' queues hold an `EventFrame`: its bytes count once in the process's
    bound on queued bytes (connection.AnswerBudget) while any does."""

    count: int = 0


@attrs.frozen
class EventFrame:
    """An event serialised once, with a hole for the per-connection `seq` (§9.1).

    Fan-out renders one frame per connection per token; splicing bytes around the seq costs
    a join instead of a `json.dumps` per connection.
    """

    head: bytes  # `{"type":"event","event":…,"payload":…,"seq":`
    tail: bytes  # `}` or `,"stateVersion":{…}}`
    droppable: bool  # §9.3: may be skipped when the connection's queue is full
    # A state snapshot (`presence`): a connection's queue holds at most one unsent frame of
    # this name, a newer one drops the older; only the newest state is worth sending.
    replaces: str | None = None
    # A piece of a text sent in pieces (a tool call's arguments): the text's key, and where
    # the piece's JSON string content lies in `head`. A later piece of the same text joins
    # an unsent one in a connection's queue (`merged`), within `room` more bytes.
    merges: str | None = None
    piece: tuple[int, int] = (0, 0)
    room: int = 0
    holders: Holders = attrs.field(factory=Holders, eq=False, repr=False)

    def render(self, seq: int) -> bytes:
        return b"".join((self.head, str(seq).encode(), self.tail))

    def piece_bytes(self) -> bytes:
        start, end = self.piece
        return self.head[start:end]

    def merged(self, seq: int, pieces: Sequence[bytes]) -> bytes:
        """This frame with `pieces` (other frames' `piece_bytes`) after its own: two JSON
        string contents joined are the content of the strings' concatenation."""
        end = self.piece[1]
        return b"".join((self.head[:end], *pieces, self.head[end:], str(seq).encode(), self.tail))

    def merging(self, key: str, piece: int, after: int, max_payload: int) -> EventFrame:
        """This frame as a piece of the text `key`: its payload's JSON ends with the piece's
        string content (`piece` bytes), then `after` bytes (the string's closing quote on)."""
        end = len(self.head) - len(_SEQ_KEY) - after
        room = max(0, max_payload - self.bound)
        return attrs.evolve(
            self, merges=key, piece=(end - piece, end), room=room, holders=Holders()
        )

    @property
    def weight(self) -> int:
        """Its bytes as one queue holds them for every connection."""
        return len(self.head) + len(self.tail)

    def size(self, seq: int) -> int:
        """`len(self.render(seq))`, without rendering."""
        return len(self.head) + len(str(seq)) + len(self.tail)

    @property
    def bound(self) -> int:
        """The most bytes this frame renders to, whatever the connection's `seq`."""
        return len(self.head) + SEQ_DIGITS_MAX + len(self.tail)


def event_frame(
    name: str,
    payload: Any,
    *,
    droppable: bool = False,
    state_version: Mapping[str, int] | None = None,
    payload_json: str | None = None,
    replaces: str | None = None,
) -> EventFrame:
    body = payload_json if payload_json is not None else dumps(payload)
    head = wire(f'{{"type":"event","event":{dumps(name)},"payload":{body}{_SEQ_KEY}')
    tail = b"}" if state_version is None else f',"stateVersion":{dumps(state_version)}}}'.encode()
    return EventFrame(head, tail, droppable, replaces)


def text_head(text: str, room: int) -> str:
    """A head of `text` whose JSON string takes at most `room` bytes more than an empty one's:
    the longest one, or a little shorter (escapes and UTF-8 make bytes and characters differ)."""
    end = min(len(text), max(room, 0))
    while end > 0:
        size = len(wire(dumps(text[:end]))) - 2
        if size <= room:
            return text[:end]
        end = min(end - 1, end * room // size)
    return ""


def close_reason(message: str) -> str:
    """`message` cut to what fits a close frame, on a character boundary."""
    data = message.encode()
    if len(data) <= CLOSE_REASON_MAX:
        return message
    return data[:CLOSE_REASON_MAX].decode(errors="ignore")


# --- Params reader ------------------------------------------------------------------------------


# The largest magnitude a JSON number has for OpenClaw's (JavaScript) parser: beyond it the
# client meant Infinity, no number at all; Python would keep an int no float can hold.
_NUMBER_MAX: Final = sys.float_info.max


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_NUMBER_MAX <= value <= _NUMBER_MAX
    return isinstance(value, float) and value.is_integer()


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return -_NUMBER_MAX <= value <= _NUMBER_MAX  # neither infinity (`1e400` reads so) nor NaN


class ParamReader:
    """Type-checks the known keys of a params object; unknown keys are ignored (deviation 24).

    `null` counts as absent for optional keys. Each failure raises ParamsError with the
    JSON-pointer path of the value.
    """

    def __init__(self, data: Any, path: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ParamsError(f"at {path or '/'}: must be object" if path else "must be object")
        self.data: Mapping[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}/{key}"

    def fail(self, key: str, message: str) -> ParamsError:
        return ParamsError(f"at {self.at(key)}: {message}")

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None and required:
            raise self.fail(key, "is required")
        return value

    def string(
        self, key: str, *, required: bool = False, non_empty: bool = False, max_len: int = 0
    ) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, "must be string")
        if non_empty and not value:
            raise self.fail(key, "must not be empty")
        if max_len and len(value) > max_len:
            raise self.fail(key, f"must have at most {max_len} characters")
        return value

    def required_string(self, key: str, *, non_empty: bool = True, max_len: int = 0) -> str:
        value = self.string(key, required=True, non_empty=non_empty, max_len=max_len)
        assert value is not None
        return value

    def integer(
        self,
        key: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not _is_int(value):
            raise self.fail(key, "must be integer")
        number = int(value)
        self._range(key, number, minimum, maximum)
        return number

    def number(self, key: str, *, minimum: float | None = None) -> float | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not _is_number(value):
            raise self.fail(key, "must be number")
        self._range(key, value, minimum, None)
        return float(value)

    def _range(self, key: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            raise self.fail(key, f"must be >= {low}")
        if high is not None and value > high:
            raise self.fail(key, f"must be <= {high}")

    def boolean(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.fail(key, "must be boolean")
        return value

    def object(self, key: str, *, required: bool = False) -> ParamReader | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be object")
        return ParamReader(value, self.at(key))

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.array(key)
        if value is None:
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ParamsError(f"at {self.at(key)}/{i}: must be string")
        return tuple(value)

    def array(self, key: str) -> list[Any] | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(key, "must be array")
        return value


# --- connect (§3) -------------------------------------------------------------------------------


@attrs.frozen
class ClientInfo:
    id: str
    version: str
    platform: str
    mode: str
    display_name: str | None = None
    device_family: str | None = None
    model_identifier: str | None = None
    instance_id: str | None = None


@attrs.frozen
class ConnectAuth:
    token: str | None = None
    password: str | None = None


@attrs.frozen
class ConnectParams:
    min_protocol: int
    max_protocol: int
    client: ClientInfo
    role: str = ROLE_OPERATOR
    scopes: tuple[str, ...] | None = None  # None: not sent
    auth: ConnectAuth = ConnectAuth()

    @classmethod
    def from_dict(cls, params: Any) -> ConnectParams:
        r = ParamReader(params)
        low = r.integer("minProtocol", required=True, minimum=1)
        high = r.integer("maxProtocol", required=True, minimum=1)
        assert low is not None and high is not None
        if low > high:
            raise r.fail("minProtocol", "must be <= maxProtocol")
        c = r.object("client", required=True)
        assert c is not None
        # The fields that name a kind of client, not one client, are interned: a connection
        # keeps them as long as it is open, and most connections share them.
        n = CLIENT_FIELD_MAX
        client = ClientInfo(
            id=sys.intern(c.required_string("id", max_len=n)),
            version=sys.intern(c.required_string("version", max_len=n)),
            platform=sys.intern(c.required_string("platform", max_len=n)),
            mode=sys.intern(c.required_string("mode", max_len=n)),
            display_name=c.string("displayName", max_len=n),
            device_family=_interned(c.string("deviceFamily", max_len=n)),
            model_identifier=_interned(c.string("modelIdentifier", max_len=n)),
            instance_id=c.string("instanceId", max_len=n),
        )
        role = r.string("role")
        scopes = r.strings("scopes")
        a = r.object("auth")
        auth = ConnectAuth()
        if a is not None:
            auth = ConnectAuth(token=a.string("token"), password=a.string("password"))
            a.string("deviceToken")
            a.string("bootstrapToken")
        r.object("device")  # accepted, never verified (deviation 16)
        return cls(low, high, client, ROLE_OPERATOR if role is None else role, scopes, auth)


def _interned(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def negotiate(min_protocol: int, max_protocol: int) -> int | None:
    """The highest version both sides speak (§4), or None when there is none."""
    version = min(PROTOCOL_MAX, max_protocol)
    return version if version >= max(PROTOCOL_MIN, min_protocol) else None


def protocol_mismatch(min_protocol: int, max_protocol: int) -> WsError:
    return WsError(
        INVALID_REQUEST,
        "protocol mismatch",
        details={
            "code": "PROTOCOL_MISMATCH",
            "clientMinProtocol": min_protocol,
            "clientMaxProtocol": max_protocol,
            "expectedProtocol": PROTOCOL_MAX,
            "minimumProbeProtocol": PROTOCOL_MIN,
        },
    )


def granted_scopes(requested: Sequence[str] | None) -> tuple[str, ...]:
    """§5.2: what was asked for, known scopes only, in order; nothing asked → all five."""
    if not requested:
        return OPERATOR_SCOPES
    granted: list[str] = []
    for scope in requested:
        if scope in GRANTABLE_SCOPES and scope not in granted:
            # Our constant, not the client's copy: the connection keeps it while open.
            granted.append(GRANTABLE_SCOPES[GRANTABLE_SCOPES.index(scope)])
    return tuple(granted)


def scope_allows(granted: Sequence[str], required: str) -> bool:
    """admin satisfies everything; write satisfies read."""
    return required in granted or ADMIN in granted or (required == READ and WRITE in granted)


def missing_scope(scope: str, protocol: int) -> WsError:
    message = f"missing scope: {scope}"
    if protocol < 4:
        return WsError(INVALID_REQUEST, message)
    details = {"code": "MISSING_SCOPE", "missingScope": scope, "requiredScopes": [scope]}
    return WsError(FORBIDDEN, message, details=details)


# --- Authentication (§5.1) ----------------------------------------------------------------------

_CLI_TOKEN_HINT = "use this gateway's gateway.auth.token or pair the device"
_TOKEN_HINT = "provide gateway auth token"
_PASSWORD_HINT = "provide gateway auth password"


def auth_error(kind: str, missing: bool, client_id: str) -> WsError:
    """The error of a failed shared-secret check (§5.1); `kind` is "token" or "password"."""
    if kind == "password":
        hint = _PASSWORD_HINT
    else:
        hint = _CLI_TOKEN_HINT if client_id == "cli" else _TOKEN_HINT
    return _auth_error(kind, "missing" if missing else "mismatch", hint)


def _auth_error(kind: str, problem: str, hint: str) -> WsError:
    return WsError(
        INVALID_REQUEST,
        f"unauthorized: gateway {kind} {problem} ({hint})",
        details={
            "code": f"AUTH_{kind.upper()}_{problem.upper()}",
            "authReason": f"{kind}_{problem}",
            "canRetryWithDeviceToken": False,
            "recommendedNextStep": (
                "update_auth_credentials" if problem == "mismatch" else "update_auth_configuration"
            ),
        },
    )


def rate_limited(retry_after_seconds: int) -> WsError:
    return WsError(
        INVALID_REQUEST,
        "unauthorized: too many failed authentication attempts (retry later)",
        details={"code": "AUTH_RATE_LIMITED", "authReason": "rate_limited"},
        retryable=True,
        retry_after_ms=retry_after_seconds * 1000,
    )
