"""Secrets in `config.get` and `clawgate config show` (ws-protocol.md §8)."""

from __future__ import annotations

import json5

from gateway.configfile import REDACTED, effective_dict, redact_parsed, redact_raw, redacted
from tests.config.conftest import ConfigFiles

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
        raw = "{gateway: {port: 1, auth: {mode: 'none'}}, // token: 'x'\n}\n"
        assert redact_raw(raw, json5.loads(raw)) == raw

    def test_same_key_elsewhere_is_not_a_secret(self) -> None:
        raw = '{channels: {tg: {token: "t"}}, agents: {list: [{id: "a", params: {apiKey: "k"}}]}}'
        assert redact_raw(raw, json5.loads(raw)) == raw

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
