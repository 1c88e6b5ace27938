"""The effective config (every default filled in, the file's shape) and its redacted views.

`config.get` and `clawgate config show` print these; a reload diffs two effective dicts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import json5

from agents.config import ModelRef, ProviderConfig
from gateway.config.errors import PathKey
from gateway.config.model import Config, GatewayConfig, HooksConfig, StoreConfig
from gateway.config.secret_keys import (
    REDACTED,
    SECRET_IN_PATH,
    STORE_URL,
    hidden_key,
    holds_password,
    is_secret_leaf,
    is_secret_name,
    is_secret_path,
    is_secret_query_parameter,
    shown_names,
)


# --- Values -> the effective config, and redaction -------------------------------------------
def effective_dict(config: Config) -> dict[str, Any]:
    """The config in force, JSON-able, in the file's camelCase shape with every default filled in.

    Loading `json.dumps(effective_dict(c))` as a file gives `c` again (tests hold us to it).
    """
    agents = config.agents
    maintenance = agents.maintenance
    return {
        "gateway": _effective_gateway(config.gateway),
        "agents": {
            "defaults": {
                "model": _effective_models(agents.default_models),
                "timeoutSeconds": agents.timeout_seconds,
                "maxConcurrent": agents.max_concurrent,
                "historyLimit": agents.history_limit,
                **(
                    {"embeddingModel": str(agents.embedding_model)}
                    if agents.embedding_model is not None
                    else {}
                ),
            },
            "list": [
                {
                    "id": agent.id,
                    "default": agent.default,
                    "name": agent.name,
                    "model": _effective_models(agent.models),
                    "systemPrompt": agent.system_prompt,
                    "params": copy.deepcopy(dict(agent.params)),
                    "models": [str(m) for m in agent.allowed_models],
                }
                for agent in agents.agents
            ],
        },
        "models": {
            "providers": {pid: _effective_provider(p) for pid, p in agents.providers.items()}
        },
        "session": {
            "mainKey": agents.main_key,
            "maintenance": {
                "mode": maintenance.mode,
                "pruneAfter": maintenance.prune_after_ms,
                "maxEntries": maintenance.max_entries,
                "statelessTtl": maintenance.stateless_ttl_ms,
                "maxDiskBytes": maintenance.max_disk_bytes,
                "highWaterBytes": maintenance.high_water_bytes,
            },
        },
        "logging": {"level": config.logging.level, "format": config.logging.format},
        "hooks": _effective_hooks(config.hooks),
        "store": _effective_store(config.store),
    }


def _effective_store(store: StoreConfig) -> dict[str, Any]:
    effective: dict[str, Any] = {"backend": store.backend, "poolSize": store.pool_size}
    for key, value in (("url", store.url), ("password", store.password)):
        if value is not None:
            effective[key] = value
    return effective


def _effective_gateway(gateway: GatewayConfig) -> dict[str, Any]:
    auth, chat = gateway.auth, gateway.http.chat_completions
    rate_limit, images = auth.rate_limit, chat.images
    effective_auth: dict[str, Any] = {"mode": auth.mode}
    if auth.token is not None:
        effective_auth["token"] = auth.token
    if auth.password is not None:
        effective_auth["password"] = auth.password
    effective_auth["rateLimit"] = (
        {
            "maxAttempts": rate_limit.max_attempts,
            "windowMs": rate_limit.window_ms,
            "lockoutMs": rate_limit.lockout_ms,
            "exemptLoopback": rate_limit.exempt_loopback,
        }
        if rate_limit.enabled
        else False
    )
    effective: dict[str, Any] = {"port": gateway.port, "bind": gateway.bind}
    if gateway.custom_bind_host is not None:
        effective["customBindHost"] = gateway.custom_bind_host
    effective["auth"] = effective_auth
    effective["http"] = {
        "endpoints": {
            "chatCompletions": {
                "enabled": chat.enabled,
                "maxBodyBytes": chat.max_body_bytes,
                "maxImageParts": chat.max_image_parts,
                "maxTotalImageBytes": chat.max_total_image_bytes,
                "images": {
                    "allowUrl": images.allow_url,
                    "urlAllowlist": list(images.url_allowlist),
                    "allowedMimes": list(images.allowed_mimes),
                    "maxBytes": images.max_bytes,
                    "maxRedirects": images.max_redirects,
                    "timeoutMs": images.timeout_ms,
                },
                "sessionHeaders": list(chat.session_headers),
                "unknownModel": chat.unknown_model,
            },
            "responses": {
                "enabled": gateway.http.responses.enabled,
                "maxBodyBytes": gateway.http.responses.max_body_bytes,
            },
        },
        "cors": {"allowedOrigins": list(gateway.http.cors_allowed_origins)},
        "allowedHosts": list(gateway.http.allowed_hosts),
    }
    control_ui = gateway.control_ui
    effective["controlUi"] = {} if control_ui.enabled is None else {"enabled": control_ui.enabled}
    effective["controlUi"]["allowedOrigins"] = list(gateway.allowed_origins)
    if control_ui.root is not None:
        effective["controlUi"]["root"] = control_ui.root
    if control_ui.base_path:
        effective["controlUi"]["basePath"] = control_ui.base_path
    effective["trustedProxies"] = list(gateway.trusted_proxies)
    preauth = gateway.ws_preauth
    effective["ws"] = {
        "preAuth": {
            "maxConnections": preauth.max_connections,
            "maxPerAddress": preauth.max_per_address,
        }
    }
    effective["shutdown"] = {"drainSeconds": gateway.drain_seconds}
    effective["reload"] = {"mode": gateway.reload_mode, "debounceMs": gateway.reload_debounce_ms}
    effective["metrics"] = {"enabled": gateway.metrics.enabled, "public": gateway.metrics.public}
    return effective


def _effective_models(models: Sequence[ModelRef]) -> str | dict[str, Any]:
    if len(models) == 1:
        return str(models[0])
    return {"primary": str(models[0]), "fallbacks": [str(m) for m in models[1:]]}


def _effective_provider(provider: ProviderConfig) -> dict[str, Any]:
    effective: dict[str, Any] = {"api": provider.api, "baseUrl": provider.base_url}
    if provider.api_key is not None:
        effective["apiKey"] = provider.api_key
    effective["headers"] = dict(provider.headers)
    effective["models"] = []
    for model in provider.models:
        entry: dict[str, Any] = {"id": model.id, "name": model.name}
        if model.context_window is not None:
            entry["contextWindow"] = model.context_window
        if model.max_tokens is not None:
            entry["maxTokens"] = model.max_tokens
        entry["reasoning"] = model.reasoning
        effective["models"].append(entry)
    return effective


def _effective_hooks(hooks: HooksConfig) -> dict[str, Any]:
    effective: dict[str, Any] = {"enabled": hooks.enabled}
    if hooks.token is not None:
        effective["token"] = hooks.token
    effective.update(
        path=hooks.path,
        maxBodyBytes=hooks.max_body_bytes,
        waitTimeoutSeconds=hooks.wait_timeout_seconds,
    )
    if hooks.allowed_agent_ids is not None:
        effective["allowedAgentIds"] = list(hooks.allowed_agent_ids)
    if hooks.default_session_key is not None:
        effective["defaultSessionKey"] = hooks.default_session_key
    effective["allowRequestSessionKey"] = hooks.allow_request_session_key
    if hooks.allowed_session_key_prefixes is not None:
        effective["allowedSessionKeyPrefixes"] = list(hooks.allowed_session_key_prefixes)
    return effective


def _redact_tree(value: Any, path: tuple[PathKey, ...] = ()) -> Any:
    if isinstance(value, Mapping):
        names = shown_names(path, value)
        return {names[key]: _redact_tree(item, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_tree(item, (*path, i)) for i, item in enumerate(value)]
    if is_secret_leaf(path, value):
        return REDACTED
    return value


def redacted(config: Config) -> dict[str, Any]:
    """`effective_dict` with every secret replaced by REDACTED (`config.get`, `config show`)."""
    result: dict[str, Any] = _redact_tree(effective_dict(config))
    return result


def redact_parsed(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """The file as parsed (ConfigSource.parsed) with every secret replaced by REDACTED."""
    result: dict[str, Any] = _redact_tree(parsed)
    return result


def redact_raw(raw: str, parsed: Mapping[str, Any]) -> str:
    """The file text with each secret's literal replaced in place; all else byte-identical.

    `parsed` is `raw` as parsed: should the text defeat our scanner, its secret values are
    replaced wherever they occur instead, so that a secret never leaks through `config.get`.
    """
    scanner = _Json5Scanner(raw)
    try:
        spans = scanner.secret_spans()
    except (ValueError, IndexError):
        return _redact_by_value(raw, parsed)
    secrets = _secret_values(parsed)
    pieces, end = [], 0
    for start, stop, is_comment in sorted(
        [(a, b, False) for a, b in spans] + [(a, b, True) for a, b in scanner.comments]
    ):
        pieces.append(raw[end:start])
        if is_comment:
            pieces.append(_redact_comment(raw[start:stop], secrets))
        else:
            quote = raw[start] if raw[start] in "\"'" else '"'
            pieces += [quote, REDACTED, quote]
        end = stop
    pieces.append(raw[end:])
    return "".join(pieces)


# In a comment (a secret commented out when its successor came, often still valid): a value
# after a secret's name and `:` or `=`, quoted or up to a space or a delimiter; and a URL
# with credentials, up to a space or a quote. A name or a scheme is tried from the start of
# its run of characters only: tried from each one, a run of 100,000 letters (a base64 blob
# commented out) took a minute and a half.
_COMMENT_PAIR = re.compile(
    r"""(?P<key>"[^"\n]*"|'[^'\n]*'|(?<![\w$-])[A-Za-z_$][\w$-]*)\s*[:=]\s*"""
    r"""(?=(?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s,;{}\[\]()'"]+))"""
)
_URL_WITH_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.-])[0-9+.-]*[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+@[^\s'\"`]*"
)


_URL_END = re.compile(r"[\s'\"`]")


def _redact_webhook_urls(text: str) -> str:
    """Each word (up to a space or a quote) holding a webhook's secret path (SECRET_IN_PATH)
    replaced whole. Found from the path, then widened: a pattern starting with the word's
    characters would read a long word again from each of its characters."""
    pieces, end = [], 0
    for match in SECRET_IN_PATH.finditer(text):
        if match.start() < end:
            continue
        start = match.start()
        while start > end and _URL_END.match(text, start - 1) is None:
            start -= 1
        stop = _URL_END.search(text, match.end())
        pieces += [text[end:start], REDACTED]
        end = len(text) if stop is None else stop.start()
    pieces.append(text[end:])
    return "".join(pieces)


def _redact_comment(text: str, secrets: list[str]) -> str:
    text = _redact_webhook_urls(_URL_WITH_CREDENTIALS.sub(REDACTED, text))
    pieces, end = [], 0
    for match in _COMMENT_PAIR.finditer(text):
        start, stop = match.span("value")
        key = match["key"].strip("\"'")
        # A URL's query parameter (`?sig=`, `&code=`) by the names a query's secrets have.
        in_query = match.start() > 0 and text[match.start() - 1] in "?&;"
        if start < end or not (is_secret_query_parameter(key) if in_query else is_secret_name(key)):
            continue
        value = match["value"]
        quote = value[0] if value[0] in "\"'" else ""
        pieces += [text[end:start], quote, REDACTED, quote]
        end = stop
    pieces.append(text[end:])
    text = "".join(pieces)
    for secret in secrets:  # a secret in force, repeated in a comment
        text = text.replace(secret, REDACTED)
    return text


def _redact_by_value(raw: str, parsed: Mapping[str, Any]) -> str:
    for secret in _secret_values(parsed):
        raw = raw.replace(secret, REDACTED)
    return raw


def _secret_values(parsed: Mapping[str, Any]) -> list[str]:
    """The secrets' values as text, longest first (one may contain another)."""
    secrets: list[str] = []

    def collect(value: Any, path: tuple[PathKey, ...]) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if hidden_key(path, key):
                    secrets.append(key)
                collect(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                collect(item, (*path, i))
        elif is_secret_leaf(path, value):
            # A boolean's "True" is not in the text, and its "true" is everywhere.
            secrets.append("" if isinstance(value, bool) else str(value))

    collect(parsed, ())
    return sorted(filter(None, secrets), key=len, reverse=True)


@attrs.define
class _Json5Scanner:
    """Walks JSON5 text that json5 has accepted, finding where the secrets' literals are.

    json5 gives no positions, so this small scanner tracks the path of each value itself.
    It raises ValueError or IndexError on text it does not understand.
    """

    text: str
    pos: int = 0
    spans: list[tuple[int, int]] = attrs.Factory(list)
    comments: list[tuple[int, int]] = attrs.Factory(list)

    def secret_spans(self) -> list[tuple[int, int]]:
        self._value(())
        self._skip()
        if self.pos != len(self.text):
            raise ValueError("trailing text")
        return self.spans

    def _skip(self) -> None:
        """Whitespace and comments."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() or char == "\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                ends = [text.find(c, self.pos) for c in "\n\r\u2028\u2029"]
                end = min((e for e in ends if e >= 0), default=len(text))
                self.comments.append((self.pos, end))
                self.pos = end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise ValueError("unterminated comment")
                self.comments.append((self.pos, end + 2))
                self.pos = end + 2
            else:
                return

    def _value(self, path: tuple[PathKey, ...]) -> None:
        self._skip()
        char = self.text[self.pos]
        if char == "{":
            self._object(path)
            return
        if char == "[":
            self._array(path)
            return
        start = self.pos
        if char in "\"'":
            self._skip_string()
        else:
            self._scalar()
        if self._is_secret_literal(path, self.text[start : self.pos]):
            self.spans.append((start, self.pos))

    @staticmethod
    def _is_secret_literal(path: tuple[PathKey, ...], literal: str) -> bool:
        if is_secret_path(path):
            return literal != "null"
        if path == STORE_URL:
            return is_secret_leaf(path, json5.loads(literal))
        # A URL's credentials need an "@", or an "=" in its query, or a webhook's path (or an
        # escape that spells one). A string without an escape is its text between the quotes:
        # json5's parser, which takes milliseconds per kilobyte, decodes only one with one.
        if literal[0] not in "\"'":
            return False
        if "\\" in literal:
            return holds_password(json5.loads(literal))
        value = literal[1:-1]
        return (
            "@" in value or "=" in value or SECRET_IN_PATH.search(value) is not None
        ) and holds_password(value)

    def _object(self, path: tuple[PathKey, ...]) -> None:
        self.pos += 1
        while True:
            self._skip()
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            start = self.pos
            key = self._key()
            if hidden_key(path, key):
                self.spans.append((start, self.pos))
            self._skip()
            self._expect(":")
            self._value((*path, key))
            self._end_of_item("}")

    def _array(self, path: tuple[PathKey, ...]) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip()
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self._value((*path, index))
            index += 1
            self._end_of_item("]")

    def _end_of_item(self, closer: str) -> None:
        self._skip()
        if self.text[self.pos] == ",":
            self.pos += 1
        elif self.text[self.pos] != closer:
            raise ValueError(f"expected , or {closer}")

    def _expect(self, char: str) -> None:
        if self.text[self.pos] != char:
            raise ValueError(f"expected {char}")
        self.pos += 1

    def _skip_string(self) -> None:
        quote = self.text[self.pos]
        self.pos += 1
        while True:
            char = self.text[self.pos]
            self.pos += 2 if char == "\\" else 1
            if char == quote:
                return

    def _key(self) -> str:
        if self.text[self.pos] in "\"'":
            start = self.pos
            self._skip_string()
            literal = self.text[start : self.pos]
            if "\\" not in literal:  # as written (json5's parser takes ms per key)
                return literal[1:-1]
            key: str = json5.loads(literal)
            return key
        start = self.pos
        while self.text[self.pos] not in ":/" and not self.text[self.pos].isspace():
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise ValueError("expected a key")
        if "\\" in name:  # an identifier spelled with \uXXXX escapes
            decoded: dict[str, Any] = json5.loads("{" + name + ":0}")
            return next(iter(decoded))
        return name

    def _scalar(self) -> None:
        start, text = self.pos, self.text
        while (
            self.pos < len(text) and text[self.pos] not in ",]}/" and not text[self.pos].isspace()
        ):
            self.pos += 1
        if self.pos == start:
            raise ValueError("expected a value")
