"""Secrets in `config.get` and `clawgate config show` (ws-protocol.md §8)."""

from __future__ import annotations

import json
import re

import json5
import pytest

from gateway.config.secret_keys import REDACTED, holds_password
from gateway.config.view import effective_dict, redact_parsed, redact_raw, redacted
from tests.support.configs import ConfigFiles
from tests.support.openclaw_secrets import (
    ENVIRON,
    OPENCLAW_SECRETS,
    SECRET_MARK,
    SECRET_NUMBERS,
    SHOWN_MARK,
)

SECRETS = """// secrets below
{
  gateway: {
    auth: { mode: "token", token: 'tok-123', password: "pw-456" },
  },
  models: {
    providers: {
      openai: {
        baseUrl: "https://api.openai.com/v1", /* not secret */
        "apiKey": "${OPENAI_API_KEY}",
        headers: { "x-org": "org-789", 'x-team' : 'team-0' },
      },
    },
  },
}
"""


class TestRedacted:
    def test_replaces_every_secret(self, files: ConfigFiles) -> None:
        config = files.load(SECRETS, environ={"OPENAI_API_KEY": "sk-abc"})
        result = redacted(config)
        assert result["gateway"]["auth"]["token"] == REDACTED
        assert result["gateway"]["auth"]["password"] == REDACTED
        provider = result["models"]["providers"]["openai"]
        assert (provider["apiKey"], provider["headers"]) == (
            REDACTED,
            {"x-org": REDACTED, "x-team": REDACTED},
        )

    def test_leaves_the_rest_as_the_effective_config(self, files: ConfigFiles) -> None:
        config = files.load(SECRETS, environ={"OPENAI_API_KEY": "sk-abc"})
        result, effective = redacted(config), effective_dict(config)
        result["gateway"]["auth"] = effective["gateway"]["auth"]
        result["models"] = effective["models"]
        result["hooks"] = effective["hooks"]
        assert result == effective

    def test_does_not_touch_the_effective_config(self, files: ConfigFiles) -> None:
        config = files.load(SECRETS, environ={"OPENAI_API_KEY": "sk-abc"})
        redacted(config)
        assert effective_dict(config)["models"]["providers"]["openai"]["apiKey"] == "sk-abc"

    def test_absent_secrets_stay_absent(self, files: ConfigFiles) -> None:
        auth = redacted(files.load("{}"))["gateway"]["auth"]
        assert "token" not in auth
        assert "password" not in auth

    def test_parsed_file_is_redacted_the_same_way(self) -> None:
        parsed = json5.loads(SECRETS)
        result = redact_parsed(parsed)
        assert result["gateway"]["auth"] == {
            "mode": "token",
            "token": REDACTED,
            "password": REDACTED,
        }
        assert result["models"]["providers"]["openai"]["baseUrl"] == "https://api.openai.com/v1"
        assert parsed["gateway"]["auth"]["token"] == "tok-123"


class TestRedactRaw:
    def test_replaces_secret_literals_in_place(self) -> None:
        assert redact_raw(SECRETS, json5.loads(SECRETS)) == (
            SECRETS.replace("'tok-123'", f"'{REDACTED}'")
            .replace('"pw-456"', f'"{REDACTED}"')
            .replace('"${OPENAI_API_KEY}"', f'"{REDACTED}"')
            .replace('"org-789"', f'"{REDACTED}"')
            .replace("'team-0'", f"'{REDACTED}'")
        )

    def test_text_without_secrets_is_unchanged(self) -> None:
        raw = "{gateway: {port: 1, auth: {mode: 'none'}}, // maxTokens: 8, the mode: 'none'\n}\n"
        assert redact_raw(raw, json5.loads(raw)) == raw

    def test_a_secret_commented_out_is_redacted(self) -> None:
        """An old key kept in a comment beside its successor is often still valid."""
        raw = """{models: {providers: {openai: {
          apiKey: "${OPENAI_API_KEY}", // was apiKey: "sk-old-1", then 'api_key' = sk-old-2
          /* headers: {"Authorization": 'Bearer old-3', token:old-4:x} */
        }}}}"""
        assert redact_raw(raw, json5.loads(raw)) == (
            raw.replace('"${OPENAI_API_KEY}"', f'"{REDACTED}"')
            .replace('"sk-old-1"', f'"{REDACTED}"')
            .replace("sk-old-2", REDACTED)
            .replace("'Bearer old-3'", f"'{REDACTED}'")
            .replace("old-4:x", REDACTED)
        )

    def test_a_secret_in_force_is_redacted_where_a_comment_repeats_it(self) -> None:
        raw = '{hooks: {token: "hook-77"}, // the hook token hook-77 is the n8n one\n}'
        assert redact_raw(raw, json5.loads(raw)) == raw.replace("hook-77", REDACTED)

    @pytest.mark.timeout(30)
    @pytest.mark.parametrize("blob", ["QUJD" * 75_000, "ab-" * 100_000, "1.a" * 100_000])
    def test_a_long_run_in_a_comment_is_read_in_one_pass(self, blob: str) -> None:
        """A name or a scheme tried from each character of a run read the rest of the run
        each time: minutes for these 300,000 characters, on the event loop of config.get."""
        raw = f"{{ // {blob}\n/* {blob} */}}"
        assert redact_raw(raw, json5.loads(raw)) == raw

    def test_a_quoted_key_is_read_without_the_json5_parser(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file config.patch wrote quotes every key: each one decoded by json5's parser took
        some milliseconds, seconds for a file of a few thousand keys, on every config.get of
        a new file. Only a key with an escape needs decoding."""
        params = {f"p{i}": i for i in range(200)} | {"a\tb": 1}
        parsed = {"agents": {"list": [{"id": "main", "params": params}]}}
        raw = json.dumps(parsed, indent=2)
        decoded: list[str] = []
        loads = json5.loads

        def counting(text: str) -> object:
            decoded.append(text)
            return loads(text)

        monkeypatch.setattr(json5, "loads", counting)
        assert redact_raw(raw, parsed) == raw
        assert decoded == [json.dumps("a\tb")]

    def test_a_string_value_is_read_without_the_json5_parser_unless_it_has_an_escape(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each string value holding an `@` or a `=` (a system prompt, an e-mail address, a
        URL's query) was decoded by json5's parser to look for a credential in it: a prompt
        of 100,000 characters took seconds of config.get. Its text between the quotes is its
        value; only one with an escape needs decoding, and is decoded once."""
        prompt = "Write to ops@example.com; use a=b. " * 3000
        escaped = "https://u:zq-9@h.example/\\u0041"
        params = {"note": "x@y", "q": "https://h.example/?page=2", "url": "https://u:zq-1@h"}
        parsed = {"agents": {"list": [{"id": "main", "systemPrompt": prompt, "params": params}]}}
        raw = json.dumps(parsed, indent=2).replace('"https://u:zq-1@h"', f'"{escaped}"')
        parsed = json5.loads(raw)
        decoded: list[str] = []
        loads = json5.loads

        def counting(text: str) -> object:
            decoded.append(text)
            return loads(text)

        monkeypatch.setattr(json5, "loads", counting)
        assert redact_raw(raw, parsed) == raw.replace(f'"{escaped}"', f'"{REDACTED}"')
        assert decoded == [f'"{escaped}"']

    def test_a_url_with_credentials_in_a_comment_is_redacted(self) -> None:
        raw = "{ // old: https://me:pw-5@proxy.example/v1 (retired)\n}"
        assert redact_raw(raw, json5.loads(raw)) == (f"{{ // old: {REDACTED} (retired)\n}}")

    def test_secret_names_are_secrets_anywhere(self) -> None:
        raw = '{channels: {tg: {token: "t"}}, agents: {list: [{id: "a", params: {apiKey: "k"}}]}}'
        assert redact_raw(raw, json5.loads(raw)) == raw.replace('"t"', f'"{REDACTED}"').replace(
            '"k"', f'"{REDACTED}"'
        )

    def test_escaped_quotes_in_a_secret(self) -> None:
        raw = r'{gateway: {auth: {password: "a\"b", token: "c"}}}'
        assert redact_raw(raw, json5.loads(raw)) == (
            f'{{gateway: {{auth: {{password: "{REDACTED}", token: "{REDACTED}"}}}}}}'
        )

    def test_a_number_where_a_secret_belongs_is_redacted(self) -> None:
        raw = "{gateway: {auth: {token: 12345678}}}"
        assert (
            redact_raw(raw, json5.loads(raw)) == f'{{gateway: {{auth: {{token: "{REDACTED}"}}}}}}'
        )

    def test_text_the_scanner_cannot_read_is_redacted_by_value(self) -> None:
        parsed = {"gateway": {"auth": {"token": "tok-123"}}}
        assert redact_raw("garbage tok-123 garbage", parsed) == f"garbage {REDACTED} garbage"

    def test_by_value_a_secret_inside_another_is_no_way_to_the_longer_one(self) -> None:
        parsed = {"gateway": {"auth": {"token": "tok", "password": "tok-123"}}}
        assert redact_raw("garbage tok-123 tok", parsed) == f"garbage {REDACTED} {REDACTED}"


def leaks(text: str) -> list[str]:
    return [s for s in (SECRET_MARK, *SECRET_NUMBERS) if s in text]


class TestSecretsByName:
    """Any key named like a secret, anywhere: OpenClaw's sections that clawgate only carries."""

    @pytest.mark.parametrize(
        "key",
        [
            "token",
            "botToken",
            "accessToken",
            "refresh_token",
            "TOKEN",
            "password",
            "passwd",
            "secret",
            "clientSecret",
            "webhookSecret",
            "apiKey",
            "api_key",
            "apikey",
            "x-api-key",
            "key",
            "privateKey",
            "credentials",
            "serviceCredential",
            "apiKeys",
            "passphrase",
            "authorization",
            "cookie",
        ],
    )
    def test_a_secret_name_is_redacted(self, key: str) -> None:
        parsed = {"channels": {"x": {key: "s", "other": "o"}}}
        assert redact_parsed(parsed) == {"channels": {"x": {key: REDACTED, "other": "o"}}}

    @pytest.mark.parametrize(
        "key",
        [
            "maxTokens",
            "contextTokens",
            "tokenizer",
            "tokenFile",
            "keyPrefix",
            "keyId",
            "mainKey",
            "sessionKey",
            "defaultSessionKey",
            "session-key",
            "main.key",
            "passwordMinLength",
            "secretRef",
            "authHeader",
            "webhookUrl",
        ],
    )
    def test_a_name_with_the_word_elsewhere_is_shown(self, key: str) -> None:
        parsed = {"channels": {"x": {key: "v"}}}
        assert redact_parsed(parsed) == parsed

    @pytest.mark.parametrize("section", ["auth", "headers", "env", "Headers"])
    def test_every_value_below_auth_headers_and_env_is_redacted(self, section: str) -> None:
        parsed = {"x": {section: {"mode": "m", "list": [{"name": "n"}, 3], "on": True}}}
        assert redact_parsed(parsed) == {
            "x": {
                section: {"mode": REDACTED, "list": [{"name": REDACTED}, REDACTED], "on": REDACTED}
            }
        }

    def test_gateway_auth_shows_its_settings(self) -> None:
        parsed = {
            "gateway": {
                "auth": {
                    "mode": "token",
                    "rateLimit": {"maxAttempts": 3, "exemptLoopback": False},
                    "allowTailscale": True,
                    "trustedProxy": {"userHeader": "x-user"},
                }
            }
        }
        assert redact_parsed(parsed) == parsed

    def test_any_other_key_in_gateway_auth_is_redacted(self) -> None:
        parsed = {"gateway": {"auth": {"mode": "token", "bearer": {"value": "b"}}}}
        assert redact_parsed(parsed) == {
            "gateway": {"auth": {"mode": "token", "bearer": {"value": REDACTED}}}
        }

    def test_null_stays(self) -> None:
        raw = "{channels: {x: {token: null}}}"
        assert redact_raw(raw, json5.loads(raw)) == raw
        assert redact_parsed(json5.loads(raw)) == json5.loads(raw)


class TestKeysHoldingSecrets:
    """A key is hidden when it holds a secret as a value would, not when its words merely
    begin with a secret's name."""

    @pytest.mark.parametrize(
        "key",
        [
            "token: zq-1",
            "api_key=zq-2",
            " password = zq-3",
            "Bearer zq-4",
            "basic dXNlcjp6cQ==",
            "https://u:zq-5@proxy.example",
        ],
    )
    def test_a_key_holding_a_secret_is_hidden(self, key: str) -> None:
        parsed = {"agents": {"list": [{"params": {key: 1, "other": 2}}]}}
        shown = {"agents": {"list": [{"params": {REDACTED: 1, "other": 2}}]}}
        assert redact_parsed(parsed) == shown
        raw = json.dumps(parsed)
        assert redact_raw(raw, parsed) == json.dumps(shown)

    @pytest.mark.parametrize(
        "key",
        ["token budget", "Token limit per turn", "secret sauce", "key points", "password hint"],
    )
    def test_words_after_a_secret_s_name_are_shown(self, key: str) -> None:
        parsed = {"agents": {"list": [{"params": {key: 1}}]}}
        assert redact_parsed(parsed) == parsed
        raw = json.dumps(parsed)
        assert redact_raw(raw, parsed) == raw


class TestAnOpenClawConfigFullOfSecrets:
    def test_raw_keeps_the_text_and_loses_every_secret(self) -> None:
        parsed = json5.loads(OPENCLAW_SECRETS)
        raw = redact_raw(OPENCLAW_SECRETS, parsed)
        assert leaks(raw) == []
        assert json5.loads(raw) == redact_parsed(parsed)
        # Only the literals changed: comments and layout are where they were.
        literal = r"""("(?:[^"\\]|\\.)*"|'[^']*'|-?[0-9][0-9.]*|true|false)"""
        assert re.sub(literal, "_", raw) == re.sub(literal, "_", OPENCLAW_SECRETS)

    def test_parsed_loses_every_secret_and_keeps_every_setting(self) -> None:
        result = json.dumps(redact_parsed(json5.loads(OPENCLAW_SECRETS)))
        assert leaks(result) == []
        shown = re.findall(f'"[^"]*{SHOWN_MARK}[^"]*"', OPENCLAW_SECRETS)
        assert len(shown) == 13
        assert [s for s in shown if s not in result] == []
        for setting in ('"maxTokens": 4096', '"contextTokens": 64000', '"maxAttempts": 7'):
            assert setting in result

    def test_the_effective_config_loses_every_secret(self, files: ConfigFiles) -> None:
        config = files.load(OPENCLAW_SECRETS, environ=ENVIRON)
        assert config.agents.agents[0].params["api_key"] == "zq-secret-param-key"
        result = redacted(config)
        assert leaks(json.dumps(result)) == []
        assert result["agents"]["list"][0]["params"] == {
            "api_key": REDACTED,
            "user": "shown-user",
            "temperature": 0.5,
        }
        assert result["session"]["mainKey"] == "shown-home"


class TestUrlsWithCredentials:
    """`https://user:pass@host` holds a password whatever its key is called."""

    TEXT = """{
  models: {
    providers: {
      p: { baseUrl: "https://user:pw-secret@proxy.example/v1" }, // basic auth in the URL
    },
  },
  channels: { hook: { target: 'https://tok-secret@hooks.example/x', port: "http://h:80/a@b" } },
}
"""

    def test_raw_and_parsed(self) -> None:
        parsed = json5.loads(self.TEXT)
        raw = redact_raw(self.TEXT, parsed)
        assert raw == self.TEXT.replace(
            '"https://user:pw-secret@proxy.example/v1"', f'"{REDACTED}"'
        ).replace("'https://tok-secret@hooks.example/x'", f"'{REDACTED}'")
        assert json5.loads(raw) == redact_parsed(parsed)

    def test_an_escaped_at_sign_is_found_too(self) -> None:
        raw = "{x: {target: 'https://tok-secret\\u0040hooks.example'}}"
        assert redact_raw(raw, json5.loads(raw)) == f"{{x: {{target: '{REDACTED}'}}}}"

    def test_the_effective_config(self, files: ConfigFiles) -> None:
        config = files.load(self.TEXT)
        assert redacted(config)["models"]["providers"]["p"]["baseUrl"] == REDACTED

    @pytest.mark.timeout(30)
    def test_a_long_run_of_letters_is_read_in_one_pass(self, files: ConfigFiles) -> None:
        """A scheme is a run of letters, digits and `+.-`: a search that tried one from each
        letter of a long run (a base64 blob in a system prompt) read the rest of the run each
        time, a minute and more for these 300,000 letters, on the event loop of config.get."""
        blob = "QUJD" * 75_000
        config = files.load(f'{{agents: {{list: [{{id: "main", systemPrompt: "{blob}"}}]}}}}')
        assert redacted(config)["agents"]["list"][0]["systemPrompt"] == blob

    @pytest.mark.parametrize(
        "value",
        ["QUJD" * 150_000 + "https://tok@h.example", "1.0-" * 150_000 + "x+y://u:pw@h.example"],
    )
    def test_a_url_at_the_end_of_a_long_run_is_still_found(self, value: str) -> None:
        assert holds_password(value)


class TestUrlsWithASecretPath:
    """Slack, Discord and Telegram webhooks carry their secret in the path, Azure's SAS and
    presigned URLs in a signature parameter: redacted whole, whatever their key."""

    @pytest.mark.parametrize(
        "value",
        [
            "https://hooks.slack.com/services/T0001/B0002/zqSlackSecret",
            "hooks.slack.com/workflows/T1/A2/3/zq",
            "https://HOOKS.SLACK.COM/triggers/T1/2/zq",
            "https://discord.com/api/webhooks/123456/zq-token",
            "https://canary.discordapp.com/api/v10/webhooks/1/zq",
            "https://api.telegram.org/bot123456:zq-bot-token/sendMessage",
            "http://127.0.0.1:8081/bot42:zq/",
            "https://acct.blob.core.windows.net/c/b?sv=2024-01-01&sp=r&sig=zq%2B",
            "https://bucket.s3.amazonaws.com/k?X-Amz-Credential=a&X-Amz-Signature=zq",
            "https://fn.azurewebsites.net/api/f?code=zq",
            "https://acme.webhook.office.com/webhookb2/1-2@3-4/IncomingWebhook/zq/5-6",
            "https://hooks.zapier.com/hooks/catch/123/zq/",
            "https://maker.ifttt.com/trigger/ev/with/key/zq",
            "https://chat.example/hooks/abcdefghijklmnopqrstuvwxyz",  # Mattermost's 26
        ],
    )
    def test_hold_a_password(self, value: str) -> None:
        assert holds_password(value)

    @pytest.mark.parametrize(
        "value",
        [
            "https://hooks.example/services/T1/B2/x",
            "https://slack.com/api/chat.postMessage",
            "https://discord.com/api/webhooks/",
            "https://example.com/robots/bot/",
            "https://api.telegram.org/botfather",
            "https://acct.blob.core.windows.net/c/b?sv=2024-01-01&sp=r",
            "see hooks.slack.com/services for how",
            "https://gw.example/hooks/agent",
            "https://chat.example/hooks/abcdefghijklmnopqrstuvwxyz0",  # 27: not an id
        ],
    )
    def test_other_urls_do_not(self, value: str) -> None:
        assert not holds_password(value)

    def test_raw_in_values_and_comments(self) -> None:
        text = """{
  // was: "https://discord.com/api/webhooks/9/zq-old", see https://x.example/a
  a: { url: 'https://hooks.slack.com/services/T1/B2/zq-a' },
  b: "see https://x.example/b", /* url=https://api.telegram.org/bot1:zq-c/ ok */
}"""
        raw = redact_raw(text, json5.loads(text))
        assert raw == (
            text.replace('https://discord.com/api/webhooks/9/zq-old"', REDACTED + '"')
            .replace("'https://hooks.slack.com/services/T1/B2/zq-a'", f"'{REDACTED}'")
            .replace("url=https://api.telegram.org/bot1:zq-c/", REDACTED)  # the whole word
        )
        assert "zq" not in raw

    @pytest.mark.timeout(30)
    def test_a_word_repeating_a_webhooks_host_is_read_in_one_pass(self) -> None:
        value = "https://maker.ifttt.com/" * 40_000 + "trigger"
        assert not holds_password(value)

    @pytest.mark.timeout(30)
    def test_a_long_comment_is_read_in_one_pass(self) -> None:
        word = "/bot1:x" + "a" * 200_000 + " " + "/bot" * 100_000
        text = f"// {word}\n{{}}"
        assert redact_raw(text, {}) == f"// {REDACTED} {'/bot' * 100_000}\n{{}}"

    def test_a_signature_in_a_commented_out_urls_query(self) -> None:
        text = """{
  // old: https://acct.blob.core.windows.net/c?sv=1&sig=zq-sig&se=2
  // code: 'shown', https://fn.example/api/f?code=zq-code;x=1 (?X-Amz-Signature=zq-amz)
  a: 1,
}"""
        raw = redact_raw(text, json5.loads(text))
        assert raw == (
            text.replace("sig=zq-sig&se=2", f"sig={REDACTED}")  # to the next delimiter
            .replace("code=zq-code", f"code={REDACTED}")
            .replace("Signature=zq-amz)", f"Signature={REDACTED})")
        )

    @pytest.mark.parametrize(
        ("value", "secret"),
        [
            ("host=db dbname=app user=app password=zq", True),
            ("Server=db;Database=app;User Id=app;Pwd=zq;", True),
            ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=zq;", True),
            ("Endpoint=sb://ns.example/;SharedAccessKeyName=r;SharedAccessKey=zq", True),
            ("host=db dbname=app", False),
            ("Answer in key=value pairs, as in password=hunter2.", False),  # not one
            ("mode=fast", False),
        ],
    )
    def test_a_connection_string_with_a_password(self, value: str, secret: bool) -> None:
        assert holds_password(value) is secret
