"""Secrets in the config against a reader and a patcher (ws-protocol.md §8).

Hypothesis writes OpenClaw-shaped configs with secrets at random places (named like secrets,
below `auth`, `headers` or `env`; strings and numbers; inside arrays and objects), in random
JSON5 spellings (quotes, unquoted keys, hex numbers, comments, trailing commas), and URLs
with credentials, a signature or a webhook's secret path, and connection strings with a
password, under any key. No secret may appear in `config.get`'s `raw`, `parsed` or `config`,
neither from the functions nor over a real WebSocket with only `operator.read`.
And no `config.patch` may send a secret it did not write out to an address it changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import json5
import pytest
import pytest_asyncio
from aiohttp import WSMsgType
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides
from gateway.config.secret_keys import REDACTED
from gateway.config.view import redact_parsed, redact_raw, redacted
from tests.support.served import TOKEN, Served, build_app, served
from tests.support.strategies import fuzz

on_the_module_loop = pytest.mark.asyncio(loop_scope="module")

WITHIN = 5.0
LOADER = ConfigLoader(Overrides(config_path="/nonexistent/clawgate.json5"), environ={})
SECRET_KEYS = (
    "token",
    "botToken",
    "appToken",
    "accessToken",
    "refresh_token",
    "TOKEN",
    "apiKey",
    "api_key",
    "key",
    "privateKey",
    "clientSecret",
    "webhookSecret",
    "signingSecret",
    "password",
    "credentials",
)
SECRET_SECTIONS = ("auth", "headers", "env")
PLAIN_KEYS = (
    "name",
    "url",
    "baseUrl",
    "webhookUrl",
    "maxTokens",
    "contextTokens",
    "tokenizer",
    "tokenFile",
    "keyPrefix",
    "mainKey",
    "sessionKey",
    "enabled",
    "mode",
    "accounts",
    "nested",
)
# Strings that are secrets whatever their key: URLs with credentials, a signature in the
# query, a webhook whose path is its secret; a connection string with a password.
SECRET_STRINGS = (
    "https://user:{}@proxy.example/v1",
    "https://acct.blob.core.windows.net/c?sv=2024-01-01&sig={}",
    "https://hooks.slack.com/services/T01/B02/{}",
    "https://discord.com/api/webhooks/1234/{}",
    "https://api.telegram.org/bot99:{}/",
    "host=db.example dbname=app password={}",
)
# OpenClaw's sections clawgate loads with a warning, and the free-form agent params.
PLACES = ("channels", "tools", "plugins", "skills", "talk", "messages", "secrets")
IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
# Text a secret or setting may hold: quotes, backslashes, newlines, non-ASCII; no `${`.
odd = st.text(st.characters(codec="utf-8", exclude_characters="${}"), max_size=8)


@attrs.define
class Secrets:
    """Every secret a config holds, as the text that would show it."""

    found: list[str] = attrs.Factory(list)

    def leaks(self, text: str) -> list[str]:
        return [s for s in self.found if s in text]


@st.composite
def secret_value(draw: st.DrawFn, secrets: Secrets) -> Any:
    n = len(secrets.found)
    kind = draw(st.sampled_from(["string", "integer", "array", "object"]))
    if kind == "string":
        mark = f"zq-secret-{n}-"
        secrets.found.append(mark)
        return mark + draw(odd)
    if kind == "integer":
        number = 7_310_000_000_000 + n * 7919
        secrets.found += [str(number), format(number, "x")]
        return number if draw(st.booleans()) else -number
    if kind == "array":
        return [draw(secret_value(secrets)) for _ in range(draw(st.integers(1, 2)))]
    keys = draw(st.lists(st.sampled_from(SECRET_KEYS + PLAIN_KEYS), min_size=1, max_size=2))
    return {key: draw(secret_value(secrets)) for key in keys}


@st.composite
def plain_tree(draw: st.DrawFn, secrets: Secrets, depth: int = 0) -> dict[str, Any]:
    keys = draw(
        st.lists(
            st.sampled_from(SECRET_KEYS + SECRET_SECTIONS + PLAIN_KEYS),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    tree: dict[str, Any] = {}
    for key in keys:
        if key in SECRET_KEYS or key in SECRET_SECTIONS:
            tree[key] = draw(secret_value(secrets))
        elif depth < 2 and draw(st.booleans()):
            subtree = draw(plain_tree(secrets, depth + 1))
            tree[key] = [subtree, {"name": "shown"}] if key == "accounts" else subtree
        elif draw(st.integers(0, 5)) == 0:  # credentials in a URL, under any name
            mark = f"zq-secret-{len(secrets.found)}-"
            secrets.found.append(mark)
            tree[key] = draw(st.sampled_from(SECRET_STRINGS)).format(mark)
        else:
            tree[key] = draw(
                st.one_of(
                    st.integers(0, 999),
                    st.booleans(),
                    st.none(),
                    odd.map(lambda s: "shown-" + s),
                )
            )
    return tree


@st.composite
def json5_text(draw: st.DrawFn, value: Any) -> str:
    """`value` written as JSON5 in a random spelling."""
    space = draw(st.sampled_from(["", " ", "\n  ", " /* c */ ", " // c\n"]))
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if IDENTIFIER.fullmatch(key) and draw(st.booleans()):
                name = key
            else:
                name = draw(string_literal(key))
            items.append(f"{name}{space}:{space}{draw(json5_text(item))}")
        trailing = "," if items and draw(st.booleans()) else ""
        return "{" + space + f",{space}".join(items) + trailing + space + "}"
    if isinstance(value, list):
        items = [draw(json5_text(item)) for item in value]
        trailing = "," if items and draw(st.booleans()) else ""
        return "[" + space + f",{space}".join(items) + trailing + "]"
    if isinstance(value, str):
        return draw(string_literal(value))
    if isinstance(value, int) and not isinstance(value, bool) and draw(st.booleans()):
        return ("-" if value < 0 else "") + hex(abs(value))
    return json.dumps(value)


@st.composite
def string_literal(draw: st.DrawFn, text: str) -> str:
    double = json.dumps(text, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        return double
    return "'" + double[1:-1].replace('\\"', '"').replace("'", "\\'") + "'"


@st.composite
def secret_configs(draw: st.DrawFn) -> tuple[str, Secrets]:
    """A valid config text with secrets in OpenClaw's sections and in the agent's params."""
    secrets = Secrets()
    places = draw(st.lists(st.sampled_from(PLACES), min_size=1, max_size=3, unique=True))
    config: dict[str, Any] = {place: draw(plain_tree(secrets)) for place in places}
    config["gateway"] = {"auth": {"mode": "token", "token": TOKEN}, "reload": {"mode": "off"}}
    params = draw(plain_tree(secrets))
    config["agents"] = {"list": [{"id": "main", "default": True, "params": params}]}
    return draw(json5_text(config)), secrets


class TestRedactionFunctions:
    @fuzz(100)
    @given(example=secret_configs())
    def test_no_secret_survives_redaction(self, example: tuple[str, Secrets]) -> None:
        text, secrets = example
        parsed = json5.loads(text)
        raw = redact_raw(text, parsed)
        assert secrets.leaks(raw) == []
        assert json5.loads(raw) == redact_parsed(parsed)
        assert secrets.leaks(json.dumps(redact_parsed(parsed), ensure_ascii=False)) == []
        config = LOADER.load_text(text)
        assert secrets.leaks(json.dumps(redacted(config), ensure_ascii=False)) == []


# -- over a real WebSocket --------------------------------------------------------------------


@attrs.frozen
class Gateway:
    server: Served
    http: aiohttp.ClientSession
    config_path: Path

    def file_hash(self) -> str:
        return hashlib.sha256(self.config_path.read_bytes()).hexdigest()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("config-secrets")
    app = build_app(directory, {"gateway": {"reload": {"mode": "off"}}})
    async with served(app) as server, aiohttp.ClientSession() as http:
        yield Gateway(server, http, directory / "clawgate.json5")


async def call(
    ws: aiohttp.ClientWebSocketResponse, method: str, params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The response frame to one request, as its text and parsed."""
    await ws.send_str(json.dumps({"type": "req", "id": "r1", "method": method, "params": params}))
    while True:
        msg = await ws.receive(timeout=WITHIN)
        assert msg.type is WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        if frame.get("type") == "res" and frame.get("id") == "r1":
            return msg.data, frame


async def connected(gateway: Gateway, scopes: list[str]) -> aiohttp.ClientWebSocketResponse:
    ws = await gateway.http.ws_connect(gateway.server.url + "/")
    assert (await ws.receive_json(timeout=WITHIN))["event"] == "connect.challenge"
    params = {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "fuzz", "version": "1", "platform": "linux", "mode": "cli"},
        "auth": {"token": TOKEN},
        "scopes": scopes,
    }
    _, hello = await call(ws, "connect", params)
    assert hello["ok"] is True, hello
    return ws


@on_the_module_loop
class TestConfigGetOverTheWire:
    @fuzz(60)
    @given(example=secret_configs())
    async def test_a_reader_sees_no_secret(self, gateway: Gateway, example) -> None:  # type: ignore[no-untyped-def]
        text, secrets = example
        gateway.config_path.write_text(text, encoding="utf-8")
        ws = await connected(gateway, ["operator.read"])
        try:
            wire, frame = await call(ws, "config.get", {})
        finally:
            await ws.close()
        assert frame["ok"] is True, frame
        assert frame["payload"]["valid"] is True, frame["payload"]["issues"]
        assert secrets.leaks(wire) == []
        assert secrets.leaks(json.dumps(frame, ensure_ascii=False)) == []


# -- config.patch -----------------------------------------------------------------------------

OLD_KEY, OLD_HEADER = "sk-old-provider-key", "old-header-secret"
PROVIDER = {
    "baseUrl": "https://api.example/v1",
    "apiKey": OLD_KEY,
    "headers": {"x-api-token": OLD_HEADER, "x-team": "blue"},
}
# What a patch may put where the provider's secrets and addresses are.
KEY_CHOICES = st.sampled_from([REDACTED, "${OPENAI_API_KEY}", "sk-new-key", None, "absent"])
URL_CHOICES = st.sampled_from(
    ["https://api.example/v1", "https://attacker.example/v1", None, "absent"]
)


@st.composite
def provider_patches(draw: st.DrawFn) -> dict[str, Any]:
    provider: dict[str, Any] = {}
    for key, choices in (("baseUrl", URL_CHOICES), ("apiKey", KEY_CHOICES)):
        value = draw(choices)
        if value != "absent":
            provider[key] = value
    header = draw(KEY_CHOICES)
    if header != "absent":
        provider["headers"] = {"x-api-token": header}
    provider_id = draw(st.sampled_from(["openai", "evil"]))
    return {"models": {"providers": {provider_id: provider}}}


def sent_where(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(secret, base URL) for every provider that would send an old secret."""
    for provider in config.get("models", {}).get("providers", {}).values():
        for secret in (provider.get("apiKey"), *provider.get("headers", {}).values()):
            if secret in (OLD_KEY, OLD_HEADER, "${OPENAI_API_KEY}"):
                yield secret, provider.get("baseUrl", "<absent>")


@on_the_module_loop
class TestConfigPatchDoesNotExfiltrate:
    @fuzz(80)
    @given(patch=provider_patches())
    async def test_old_secrets_only_go_where_they_went(
        self, gateway: Gateway, patch: dict[str, Any]
    ) -> None:
        settings = {
            "gateway": {"auth": {"mode": "token", "token": TOKEN}, "reload": {"mode": "off"}},
            "models": {"providers": {"openai": PROVIDER}},
        }
        gateway.config_path.write_text(json.dumps(settings))
        ws = await connected(gateway, ["operator.admin"])
        try:
            params = {"raw": json.dumps(patch), "baseHash": gateway.file_hash()}
            _, frame = await call(ws, "config.patch", params)
        finally:
            await ws.close()
        written = json.loads(gateway.config_path.read_text())
        if frame["ok"] is not True:
            assert written == settings
            return
        for _secret, url in sent_where(written):
            assert url == PROVIDER["baseUrl"], (patch, written)


# Accounts in an array, each secret beside its address: a marker inside the array keeps the
# secret at the same index, which may go only where it went.
OLD_ACCOUNTS = [
    {"botToken": "old-bot-token-1", "apiBase": "https://one.example"},
    {"botToken": "old-bot-token-2", "apiBase": "https://two.example"},
]
ORIGINAL_BASE = {account["botToken"]: account["apiBase"] for account in OLD_ACCOUNTS}


@st.composite
def account_patches(draw: st.DrawFn) -> list[Any]:
    accounts: list[Any] = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            accounts.append(draw(st.sampled_from([REDACTED, "plain", None])))
            continue
        account: dict[str, Any] = {}
        token = draw(st.sampled_from([REDACTED, "new-bot-token", None, "absent"]))
        base = draw(
            st.sampled_from(
                ["https://one.example", "https://two.example", "https://evil.example", "absent"]
            )
        )
        if token != "absent":
            account["botToken"] = token
        if base != "absent":
            account["apiBase"] = base
        accounts.append(account)
    return accounts


@on_the_module_loop
class TestConfigPatchOfArraysDoesNotExfiltrate:
    @fuzz(60)
    @given(accounts=account_patches())
    async def test_old_secrets_in_an_array_only_go_where_they_went(
        self, gateway: Gateway, accounts: list[Any]
    ) -> None:
        settings = {
            "gateway": {"auth": {"mode": "token", "token": TOKEN}, "reload": {"mode": "off"}},
            "channels": {"slack": {"accounts": OLD_ACCOUNTS}},
        }
        gateway.config_path.write_text(json.dumps(settings))
        ws = await connected(gateway, ["operator.admin"])
        try:
            patch = {"channels": {"slack": {"accounts": accounts}}}
            params = {"raw": json.dumps(patch), "baseHash": gateway.file_hash()}
            _, frame = await call(ws, "config.patch", params)
        finally:
            await ws.close()
        text = gateway.config_path.read_text()
        written = json.loads(text)
        if frame["ok"] is not True:
            assert frame["error"]["code"] == "INVALID_REQUEST", frame
            assert written == settings
            return
        assert REDACTED not in text
        for account in written["channels"]["slack"]["accounts"]:
            if isinstance(account, dict) and account.get("botToken") in ORIGINAL_BASE:
                assert account.get("apiBase") == ORIGINAL_BASE[account["botToken"]], (
                    accounts,
                    written,
                )
