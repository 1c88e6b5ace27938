"""The gateway's configuration as frozen values.

Loading, `${VAR}` substitution, validation and redaction live in the other modules of this
package; this one only says what a loaded config is. See ../shared/spec/config.md §4 for every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from agents.config import AgentsConfig

EX_CONFIG = 78  # sysexits.h: configuration error; systemd's RestartPreventExitStatus uses it

BIND_HOSTS = {"loopback": "127.0.0.1", "lan": "0.0.0.0"}

DEFAULT_ALLOWED_MIMES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heic",
    "image/heif",
)
# Open WebUI's chat id (sent with ENABLE_FORWARD_USER_INFO_HEADERS) and a generic one.
DEFAULT_SESSION_HEADERS = ("x-openwebui-chat-id", "x-chat-id")


@attrs.frozen
class RateLimitConfig:
    """`gateway.auth.rateLimit`; `enabled=False` when the key is `false`."""

    enabled: bool = True
    max_attempts: int = 10
    window_ms: int = 60_000
    lockout_ms: int = 300_000
    # Off by default: every web page the user opens is a loopback client too (a browser's
    # WebSocket and form posts reach 127.0.0.1), so an exemption would let any page guess the
    # secret at full speed. Local scripts with a wrong token are the price.
    exempt_loopback: bool = False


@attrs.frozen
class AuthConfig:
    """`gateway.auth`. `token` is None in token mode until the generated token is filled in."""

    mode: str = "token"  # "token", "password" or "none"
    token: str | None = None
    password: str | None = None
    # Where the secret came from: "flag", "config", "env", "generated" or None.
    source: str | None = None
    rate_limit: RateLimitConfig = RateLimitConfig()

    @property
    def secret(self) -> str | None:
        """The secret clients must present in the current mode."""
        if self.mode == "token":
            return self.token
        if self.mode == "password":
            return self.password
        return None


@attrs.frozen
class ImagesConfig:
    """`gateway.http.endpoints.chatCompletions.images`."""

    allow_url: bool = False
    url_allowlist: tuple[str, ...] = ()
    allowed_mimes: tuple[str, ...] = DEFAULT_ALLOWED_MIMES
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3
    timeout_ms: int = 10_000


@attrs.frozen
class ChatCompletionsConfig:
    """`gateway.http.endpoints.chatCompletions`; `enabled` also gates /v1/models."""

    enabled: bool = False
    max_body_bytes: int = 20 * 1024 * 1024
    max_image_parts: int = 8
    max_total_image_bytes: int = 20 * 1024 * 1024
    images: ImagesConfig = ImagesConfig()
    # Lowercased header names that identify a conversation, in order of preference.
    session_headers: tuple[str, ...] = DEFAULT_SESSION_HEADERS
    unknown_model: str = "error"  # or "default-agent": any other `model` runs the default


@attrs.frozen
class ResponsesConfig:
    """`gateway.http.endpoints.responses`: `POST /v1/responses` (OpenResponses). Its images
    are held to chatCompletions' image limits."""

    enabled: bool = False
    max_body_bytes: int = 20 * 1024 * 1024


@attrs.frozen
class HttpConfig:
    chat_completions: ChatCompletionsConfig = ChatCompletionsConfig()
    responses: ResponsesConfig = ResponsesConfig()
    cors_allowed_origins: tuple[str, ...] = ()
    # Host names (lowercase, without port) a request's Host may carry besides the loopback
    # names and the bind's own: the defence against DNS rebinding (gateway/edge.py).
    allowed_hosts: tuple[str, ...] = ()


@attrs.frozen
class PreAuthConfig:
    """`gateway.ws.preAuth`: WebSockets that are open but have not authenticated yet."""

    # Each costs a socket, a reader and a 64 KiB frame buffer at most; these bound what an
    # unauthenticated client can hold. 256 is far above any operator's tool count.
    max_connections: int = 256
    max_per_address: int = 32


@attrs.frozen
class ControlUiConfig:
    """`gateway.controlUi`: the browser UI at `/`."""

    enabled: bool | None = None  # None: on for a loopback bind, off otherwise
    # `root`: the directory (absolute, links resolved) of a Control UI build served at `/`
    # instead of the built-in UI; None serves the built-in one.
    root: str | None = None
    # `basePath`: the path the UI is served under, "" for `/` (else `/a/b`, no trailing slash).
    base_path: str = ""


@attrs.frozen
class MetricsConfig:
    """`gateway.metrics`: the Prometheus endpoint `GET /metrics` (gateway/metrics.py)."""

    enabled: bool = True  # behind the gateway's auth, so on by default costs nothing
    public: bool = False  # true: no auth, for a scraper that cannot send a bearer token


@attrs.frozen
class GatewayConfig:
    port: int = 18789
    bind: str = "loopback"  # "loopback", "lan" or "custom"
    custom_bind_host: str | None = None
    auth: AuthConfig = AuthConfig()
    http: HttpConfig = HttpConfig()
    # `gateway.controlUi.allowedOrigins`: browser origins (lowercase `scheme://host[:port]`)
    # allowed to open the WebSocket besides the gateway's own.
    allowed_origins: tuple[str, ...] = ()
    # `gateway.trustedProxies`: networks whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = ()
    ws_preauth: PreAuthConfig = PreAuthConfig()
    drain_seconds: int = 20
    reload_mode: str = "hybrid"  # "off", "hot", "hybrid" or "restart"
    reload_debounce_ms: int = 300
    control_ui: ControlUiConfig = ControlUiConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def control_ui_enabled(self) -> bool:
        # Off by default beyond loopback: a page that asks for the gateway token is not
        # something to put on a LAN unannounced.
        enabled = self.control_ui.enabled
        return self.bind == "loopback" if enabled is None else enabled

    @property
    def host(self) -> str:
        if self.bind == "custom":
            return self.custom_bind_host or ""
        return BIND_HOSTS[self.bind]


@attrs.frozen
class HooksConfig:
    """`hooks`: OpenClaw's webhook ingress, `POST <path>/agent` and `POST <path>/wake`."""

    enabled: bool = False
    token: str | None = None  # required when enabled; not the gateway's token
    path: str = "/hooks"  # normalized: one leading slash, none trailing
    max_body_bytes: int = 256 * 1024
    # How long `waitForCompletion` waits for the run before answering 504 (clawgate's own key).
    wait_timeout_seconds: int = 120
    allowed_agent_ids: tuple[str, ...] | None = None  # None: any agent; "*" in it: any
    default_session_key: str | None = None
    allow_request_session_key: bool = False
    allowed_session_key_prefixes: tuple[str, ...] | None = None


@attrs.frozen
class StoreConfig:
    """`store`: where sessions live. `postgres` shares them between processes and hosts."""

    backend: str = "sqlite"  # or "postgres"
    url: str | None = None  # postgres: `postgresql://user@host:port/db`
    password: str | None = None  # from `password` (`${VAR}`) or the first line of `passwordFile`
    pool_size: int = 10  # query connections per process (turn locks have their own)

    def __repr__(self) -> str:
        # Never the password, whatever prints the config (the URL may hold one too).
        return f"StoreConfig(backend={self.backend!r})"


@attrs.frozen
class LoggingConfig:
    level: str = "info"  # "debug", "info", "warn", "error" or "silent"
    format: str = "auto"  # "auto", "json" or "console"


@attrs.frozen
class ConfigSource:
    """Where the config came from, as `config.get` reports it."""

    path: Path  # the resolved config path, even when the file does not exist
    exists: bool  # False when the embedded default is in use
    raw: str | None = None  # the file text, unexpanded (None for the embedded default)
    parsed: Mapping[str, Any] | None = None  # the file as parsed, before `${VAR}` substitution
    hash: str | None = None  # sha256 hex of the file bytes


@attrs.frozen
class ConfigWarning:
    """Something in the config that loads but does not do what it says (config.md §4, §4a).

    Logged as `<event> path=<path> reason=<message>`: `config_key_ignored` for an OpenClaw key
    clawgate accepts and ignores (§4a), `config_warning` for a value it cannot honour.
    """

    path: str
    message: str
    event: str = "config_warning"

    def line(self) -> str:
        return f"- {self.path}: {self.message}"


@attrs.frozen
class Config:
    gateway: GatewayConfig
    agents: AgentsConfig
    logging: LoggingConfig
    source: ConfigSource
    state_dir: Path
    warnings: tuple[ConfigWarning, ...] = ()
    hooks: HooksConfig = HooksConfig()
    store: StoreConfig = StoreConfig()

    @property
    def sessions_path(self) -> Path:
        return self.state_dir / "sessions.sqlite3"

    @property
    def sessions_location(self) -> str:
        """Where the sessions live, as `health`, `status` and `sessions.list` name it (their
        `path`): the SQLite file, or the PostgreSQL server and database, without the user,
        password or parameters of the URL (read-only clients see it)."""
        if self.store.backend == "postgres" and self.store.url is not None:
            return server_and_database(self.store.url)
        return str(self.sessions_path)

    @property
    def token_path(self) -> Path:
        return self.state_dir / "gateway.token"


def server_and_database(url: str) -> str:
    """`postgresql://db.internal:5432/clawgate` of any PostgreSQL URL: no credentials, no
    parameters (`postgresql:///clawgate` for a server reached by its Unix socket)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "postgresql"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"
