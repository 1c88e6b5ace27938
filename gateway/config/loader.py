"""Reading the config file: where it is, JSON5, then schema, overrides and guards into a Config.

config.md is the contract (§1 resolution, §3 substitution, §6 issues, §6.1 guards). One load runs

    text -json5-> parsed -schema walk-> normalized -refs, ids-> -env, flags-> Config -guards

Every problem is raised together as one ConfigError. Nothing here writes to disk: the
generated token is gateway/auth.py's job (§5). `$include` is refused by the schema.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import json5
import structlog

from agents.config import AgentConfig, AgentsConfig, MaintenanceConfig, ModelEntry, ProviderConfig
from gateway.config.errors import (
    EMBEDDED_DEFAULT,
    FILE_LEVEL,
    ConfigError,
    ConfigIssue,
    PathKey,
    join_path,
)
from gateway.config.model import (
    AuthConfig,
    ChatCompletionsConfig,
    Config,
    ConfigSource,
    ControlUiConfig,
    GatewayConfig,
    HooksConfig,
    HttpConfig,
    ImagesConfig,
    LoggingConfig,
    MetricsConfig,
    PreAuthConfig,
    RateLimitConfig,
    ResponsesConfig,
    StoreConfig,
)
from gateway.config.overrides import (
    NO_OVERRIDES,
    Overrides,
    SecretFileError,
    apply_overrides,
    env_setting,
    has_secret_flag,
    public_metrics_warning,
    read_secret_file,
    short_secret_warnings,
    startup_guards,
)
from gateway.config.schema import (
    ROOT,
    Checker,
    IgnoredProvider,
    check_agent_list,
    check_control_ui_base_path,
    check_embedding_model,
    check_hooks,
    check_hooks_token,
    check_model_refs,
    check_store,
    default_session_key_issues,
    dig,
    non_json_number,
    wrong_type,
)
from gateway.config.secret_keys import is_secret_path
from gateway.statedir import (
    MAX_CONFIG_BYTES,
    UnsafeStateError,
    not_a_directory,
    read_config_file,
    read_state_file,
)

log = structlog.get_logger()

CONFIG_FILE_NAME = "clawgate.json5"
DEFAULT_STATE_DIR = "~/.clawgate"
_JSON5_ERROR_RE = re.compile(r"<string>:\d+ (Unexpected .*) at column \d+", re.DOTALL)


class ConfigLoader:
    """Finds, reads and checks the config; the CLI, the hot reloader and `config.patch` share one.

    The paths are resolved once, here; `load()` reads the file (and the environment) again on
    every call, which is what a reload wants.
    """

    def __init__(
        self, overrides: Overrides = NO_OVERRIDES, environ: Mapping[str, str] | None = None
    ) -> None:
        self.overrides = overrides
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        state_dir = overrides.state_dir or env_setting(self.environ, "CLAWGATE_STATE_DIR")
        self.state_dir: Path = _absolute(state_dir or DEFAULT_STATE_DIR, self.environ)
        explicit = overrides.config_path or env_setting(self.environ, "CLAWGATE_CONFIG")
        self.explicit_path: bool = explicit is not None
        self.config_path: Path = (
            _absolute(explicit, self.environ) if explicit else self.state_dir / CONFIG_FILE_NAME
        )

    def load(self) -> Config:
        """The config in force: the file, else (at the default path only) the embedded default."""
        location = str(self.config_path)
        try:
            data = read_config_file(self.config_path, self.state_dir)
        except UnsafeStateError as exc:
            raise ConfigError(location, [ConfigIssue(FILE_LEVEL, str(exc))]) from None
        except FileNotFoundError:
            if self.explicit_path:
                message = f"config file not found: {self.config_path}"
                raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
            source = ConfigSource(self.config_path, exists=False)
            return self._check(embedded_default_text(), EMBEDDED_DEFAULT, source)
        except NotADirectoryError as exc:
            # At the default path, the state dir it is looked for in is a file.
            message = f"cannot read config file: {exc.strerror or exc}"
            if self.config_path.parent == self.state_dir and self.state_dir.is_file():
                message = not_a_directory(self.state_dir)
            raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
        except OSError as exc:
            message = f"cannot read config file: {exc.strerror or exc}"
            raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
        try:
            text = data.decode("utf-8-sig")  # an editor's BOM is not a syntax error
        except UnicodeDecodeError as exc:
            message = f"not valid UTF-8 (byte {exc.start})"
            raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
        source = ConfigSource(self.config_path, exists=True, raw=text, hash=_sha256(data))
        return self._check(text, location, source)

    def load_text(self, text: str, parsed: dict[str, Any] | None = None) -> Config:
        """The config `text` would give if it were the file (config.patch checks before writing).

        `parsed`: `parse_text(text)`, when the caller has it already (json5 takes seconds)."""
        data = text.encode("utf-8")
        if len(data) > MAX_CONFIG_BYTES:  # the next load would refuse the file
            message = (
                f"it has {len(data)} bytes, more than the {MAX_CONFIG_BYTES} a config file may hold"
            )
            raise ConfigError(str(self.config_path), [ConfigIssue(FILE_LEVEL, message)])
        source = ConfigSource(self.config_path, exists=True, raw=text, hash=_sha256(data))
        return self._check(text, str(self.config_path), source, parsed)

    def _generated_token(self, normalized: dict[str, Any]) -> str | None:
        """The token in the state dir, which token mode without a token runs with
        (gateway.auth.with_generated_token); None when absent, unreadable or not needed."""
        auth = dig(normalized, "gateway", "auth")
        if not dig(normalized, "hooks", "token") or not isinstance(auth, dict):
            return None
        if auth.get("mode") != "token" or auth.get("token"):
            return None
        try:
            return read_state_file(self.state_dir / "gateway.token").decode().strip() or None
        except (OSError, UnicodeDecodeError, UnsafeStateError):
            return None  # refused, with its reason, where the token is read to be used

    def _check(
        self, text: str, location: str, source: ConfigSource, parsed: dict[str, Any] | None = None
    ) -> Config:
        if parsed is None:
            parsed = parse_text(text, location)
        if source.exists:
            source = attrs.evolve(source, parsed=parsed)
        ctx = Checker(self.environ, _expandable_paths(parsed))
        normalized = ROOT.check(parsed, "", ctx)
        check_model_refs(ctx, dig(normalized, "models", "providers"))
        check_agent_list(ctx, dig(normalized, "agents", "list"))
        if not source.exists and has_secret_flag(self.overrides):
            # The embedded default's `mode: "token"` is a default, not the operator's word:
            # `clawgate run --password P` without a file means password mode.
            normalized["gateway"]["auth"].pop("mode", None)
        check_embedding_model(ctx, normalized)
        check_hooks(ctx, normalized.get("hooks"))
        check_control_ui_base_path(ctx, normalized)
        check_store(ctx, normalized.get("store"))
        _read_store_password(ctx, normalized.get("store"))
        _resolve_control_ui_root(ctx, dig(normalized, "gateway", "controlUi"), self.environ)
        apply_overrides(normalized["gateway"], self.overrides, self.environ, ctx)
        check_hooks_token(ctx, normalized, self._generated_token(normalized))
        if ctx.issues:
            raise ConfigError(location, ctx.sorted_issues())
        if self.overrides.verbose:
            normalized["logging"]["level"] = "debug"
        gateway = _gateway_config(normalized["gateway"])
        hooks = _hooks_config(normalized["hooks"])
        if gateway.reload_mode == "restart":
            ctx.warn("gateway.reload.mode", 'clawgate never restarts itself; acts as "hybrid"')
        for path, message in short_secret_warnings(
            gateway, self.overrides, hooks.enabled, hooks.token
        ):
            ctx.warn(path, message)
        if (public := public_metrics_warning(gateway)) is not None:
            ctx.warn("gateway.metrics.public", public)
        config = Config(
            gateway=gateway,
            agents=_agents_config(normalized),
            logging=LoggingConfig(**normalized["logging"]),
            source=source,
            state_dir=self.state_dir,
            warnings=ctx.sorted_warnings(),
            hooks=hooks,
            store=_store_config(normalized["store"]),
        )
        guard_issues = startup_guards(config.gateway)
        guard_issues += default_session_key_issues(config.hooks, config.agents)
        if guard_issues:
            raise ConfigError(location, guard_issues)
        return config


def _expandable_paths(parsed: Mapping[str, Any]) -> frozenset[str]:
    """The dotted paths of the secret strings, where `${VAR}` may be expanded.

    Anywhere else the expanded value would be shown by `config.get` (or sent where a reader
    sees it): a `config.patch` writing `name: "${OPENAI_API_KEY}"` would read the key. A dotted
    path can stand for two places (a key with a dot in it); it is expandable only if every
    place it stands for is a secret, so nothing expanded is ever shown unredacted.
    """
    secret: dict[str, bool] = {}

    def walk(value: Any, path: tuple[PathKey, ...], dotted: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, (*path, key), join_path(dotted, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i), f"{dotted}[{i}]")
        elif isinstance(value, str):
            secret[dotted] = secret.get(dotted, True) and is_secret_path(path)

    walk(parsed, (), "")
    return frozenset(dotted for dotted, is_secret in secret.items() if is_secret)


def embedded_default_text() -> str:
    return (importlib.resources.files("gateway") / "default.json5").read_text(encoding="utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _absolute(text: str, environ: Mapping[str, str]) -> Path:
    """`~` expanded (from $HOME in `environ`), relative to the working directory, `..` folded."""
    if text == "~" or text.startswith("~/"):
        text = (environ.get("HOME") or str(Path.home())) + text[1:]
    else:
        text = os.path.expanduser(text)  # `~user/…`
    return Path(os.path.abspath(text))


def parse_text(text: str, location: str) -> dict[str, Any]:
    """The file's object, as the loader reads it before its schema; ConfigError if none."""
    try:
        value, error, pos = json5.parse(text)
    except ValueError:  # json5 refuses the empty string outright, without a position
        value, error, pos = None, "Unexpected end of input", 0
    except RecursionError:  # json5's parser recurses several frames per level of nesting
        message = "JSON5 syntax error: nested too deeply"
        raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)]) from None
    if error is not None:
        line, column = _line_column(text, pos)
        message = f"JSON5 syntax error: {_syntax_message(error)} (line {line}, column {column})"
        raise ConfigError(location, [ConfigIssue(FILE_LEVEL, message)])
    if not isinstance(value, dict):
        raise ConfigError(location, [ConfigIssue(FILE_LEVEL, wrong_type("object", value))])
    issue = non_json_number(value)
    if issue is not None:
        raise ConfigError(location, [issue])
    if _PAIR_ESCAPE_RE.search(text) is not None:
        value = _joined_pairs(value)
    return value


# A high surrogate's escape (`\ud83d`): json5 keeps an escaped pair (`\ud83d\ude00`) as two
# lone surrogates, where JSON5 (JavaScript's strings) reads one character (😀).
_PAIR_ESCAPE_RE = re.compile(r"\\u[dD][89abAB]")
_SURROGATE_PAIR_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _joined_pair(match: re.Match[str]) -> str:
    return match[0].encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _joined_pairs(value: Any) -> Any:
    """`value` with each surrogate pair in its strings (keys too) one character; a lone
    surrogate is left, for the schema to refuse where it matters (a client's secret)."""
    if isinstance(value, str):
        return _SURROGATE_PAIR_RE.sub(_joined_pair, value)
    if isinstance(value, dict):
        return {_joined_pairs(k): _joined_pairs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_joined_pairs(item) for item in value]
    return value


def _syntax_message(error: str) -> str:
    """json5's `<string>:3 Unexpected "b" at column 3` without the position (we add our own)."""
    match = _JSON5_ERROR_RE.fullmatch(error)
    if match is None:
        return error
    thing = match[1]
    if thing.startswith('Unexpected "') and len(thing) == len('Unexpected "x"'):
        # Show a newline or tab as `"\n"`, so that the issue stays on one line.
        thing = "Unexpected " + json.dumps(thing[-2], ensure_ascii=False)
    return thing


def _line_column(text: str, pos: int) -> tuple[int, int]:
    """1-based, counted the way json5 counts them (every character is one column)."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _read_store_password(ctx: Checker, store: Any) -> None:
    """`store.passwordFile`'s first line becomes `store.password` (checked: not both)."""
    if not isinstance(store, dict) or store.get("backend") != "postgres" or "password" in store:
        return
    if isinstance(store.get("passwordFile"), str):
        try:
            store["password"] = read_secret_file(store.pop("passwordFile"), regular_only=True)
        except SecretFileError as exc:
            ctx.issue("store.passwordFile", str(exc))


def _resolve_control_ui_root(ctx: Checker, control_ui: Any, environ: Mapping[str, str]) -> None:
    """`gateway.controlUi.root` made absolute (`~` expanded, relative to the working directory,
    links resolved): a directory holding `index.html`, or an issue that says what is wrong."""
    root = control_ui.get("root") if isinstance(control_ui, dict) else None
    if not isinstance(root, str):
        return
    path = os.path.realpath(_absolute(root, environ))
    if not os.path.isdir(path):
        reason = "does not exist" if not os.path.exists(path) else "is not a directory"
        ctx.issue("gateway.controlUi.root", f"{path} {reason} (give a Control UI build)")
    elif not os.path.isfile(os.path.join(path, "index.html")):
        ctx.issue("gateway.controlUi.root", f"{path} has no index.html (not a Control UI build)")
    else:
        control_ui["root"] = path


def _store_config(store: dict[str, Any]) -> StoreConfig:
    return StoreConfig(
        backend=store["backend"],
        url=store.get("url"),
        password=store.get("password"),
        pool_size=store["poolSize"],
    )


def _hooks_config(hooks: dict[str, Any]) -> HooksConfig:
    agent_ids = hooks.get("allowedAgentIds")
    prefixes = hooks.get("allowedSessionKeyPrefixes")
    return HooksConfig(
        enabled=hooks["enabled"],
        token=hooks.get("token") or None,
        path=hooks["path"],
        max_body_bytes=hooks["maxBodyBytes"],
        wait_timeout_seconds=hooks["waitTimeoutSeconds"],
        allowed_agent_ids=None if agent_ids is None else tuple(a.lower() for a in agent_ids),
        default_session_key=hooks.get("defaultSessionKey"),
        allow_request_session_key=hooks["allowRequestSessionKey"],
        allowed_session_key_prefixes=(
            None if not prefixes else tuple(p.strip().lower() for p in prefixes)
        ),
    )


# --- Normalized dict -> values ---------------------------------------------------------------


def _gateway_config(gateway: dict[str, Any]) -> GatewayConfig:
    auth, http = gateway["auth"], gateway["http"]
    chat = http["endpoints"]["chatCompletions"]
    images = chat["images"]
    rate_limit = auth["rateLimit"]
    return GatewayConfig(
        port=gateway["port"],
        bind=gateway["bind"],
        custom_bind_host=gateway.get("customBindHost"),
        auth=AuthConfig(
            mode=auth["mode"],
            token=auth["token"],
            password=auth["password"],
            source=auth["source"],
            rate_limit=(
                RateLimitConfig(enabled=False)
                if rate_limit is False
                else RateLimitConfig(
                    max_attempts=rate_limit["maxAttempts"],
                    window_ms=rate_limit["windowMs"],
                    lockout_ms=rate_limit["lockoutMs"],
                    exempt_loopback=rate_limit["exemptLoopback"],
                )
            ),
        ),
        http=HttpConfig(
            chat_completions=ChatCompletionsConfig(
                enabled=chat["enabled"],
                max_body_bytes=chat["maxBodyBytes"],
                max_image_parts=chat["maxImageParts"],
                max_total_image_bytes=chat["maxTotalImageBytes"],
                images=ImagesConfig(
                    allow_url=images["allowUrl"],
                    url_allowlist=tuple(images["urlAllowlist"]),
                    allowed_mimes=tuple(images["allowedMimes"]),
                    max_bytes=images["maxBytes"],
                    max_redirects=images["maxRedirects"],
                    timeout_ms=images["timeoutMs"],
                ),
                session_headers=tuple(chat["sessionHeaders"]),
                unknown_model=chat["unknownModel"],
            ),
            responses=ResponsesConfig(
                enabled=http["endpoints"]["responses"]["enabled"],
                max_body_bytes=http["endpoints"]["responses"]["maxBodyBytes"],
            ),
            cors_allowed_origins=tuple(http["cors"]["allowedOrigins"]),
            allowed_hosts=tuple(http["allowedHosts"]),
        ),
        allowed_origins=tuple(gateway["controlUi"]["allowedOrigins"]),
        trusted_proxies=tuple(gateway["trustedProxies"]),
        ws_preauth=PreAuthConfig(
            max_connections=gateway["ws"]["preAuth"]["maxConnections"],
            max_per_address=gateway["ws"]["preAuth"]["maxPerAddress"],
        ),
        drain_seconds=gateway["shutdown"]["drainSeconds"],
        reload_mode=gateway["reload"]["mode"],
        reload_debounce_ms=gateway["reload"]["debounceMs"],
        control_ui=ControlUiConfig(
            enabled=gateway["controlUi"].get("enabled"),
            root=gateway["controlUi"].get("root"),
            base_path=gateway["controlUi"]["basePath"],
        ),
        metrics=MetricsConfig(
            enabled=gateway["metrics"]["enabled"], public=gateway["metrics"]["public"]
        ),
    )


def _agents_config(normalized: dict[str, Any]) -> AgentsConfig:
    agents, session = normalized["agents"], normalized["session"]
    defaults = agents["defaults"]
    default_models = tuple(defaults["model"])
    entries = agents["list"] or [{"id": "main"}]  # an empty list means one implicit agent
    maintenance = session["maintenance"]
    return AgentsConfig(
        agents=tuple(
            AgentConfig(
                id=entry["id"],
                models=tuple(entry.get("model", default_models)),
                name=entry.get("name", entry["id"]),
                system_prompt=entry.get("systemPrompt", ""),
                params=entry.get("params", {}),
                default=entry.get("default", False),
                allowed_models=tuple(entry.get("models", ())),
            )
            for entry in entries
        ),
        providers={
            pid: _provider_config(pid, provider)
            for pid, provider in normalized["models"]["providers"].items()
            if not isinstance(provider, IgnoredProvider)
        },
        timeout_seconds=defaults["timeoutSeconds"],
        max_concurrent=defaults["maxConcurrent"],
        history_limit=defaults["historyLimit"],
        main_key=session["mainKey"].lower(),
        maintenance=MaintenanceConfig(
            mode=maintenance["mode"],
            prune_after_ms=maintenance["pruneAfter"],
            max_entries=maintenance["maxEntries"],
            stateless_ttl_ms=maintenance["statelessTtl"],
            max_disk_bytes=maintenance["maxDiskBytes"],
            high_water_bytes=min(
                maintenance["highWaterBytes"] or maintenance["maxDiskBytes"] * 8 // 10,
                maintenance["maxDiskBytes"],
            ),
        ),
        default_models=default_models,
        embedding_model=defaults.get("embeddingModel"),
    )


def _provider_config(provider_id: str, provider: dict[str, Any]) -> ProviderConfig:
    return ProviderConfig(
        id=provider_id,
        api=provider["api"],
        base_url=provider["baseUrl"],
        api_key=provider.get("apiKey"),
        headers=provider["headers"],
        models=tuple(
            ModelEntry(
                id=model["id"],
                name=model.get("name", model["id"]),
                context_window=model.get("contextWindow"),
                max_tokens=model.get("maxTokens"),
                reasoning=model["reasoning"],
            )
            for model in provider["models"]
        ),
    )


def load_or_report(loader: ConfigLoader) -> Config | None:
    """The config, or None after printing its issues to stderr (the CLI then exits 78)."""
    try:
        return loader.load()
    except ConfigError as exc:
        report(exc)
        return None


def report(exc: ConfigError) -> None:
    print(exc.render(), file=sys.stderr)
    log.error("config_invalid", path=exc.location, issues=[i.line() for i in exc.issues])
