"""Which secrets a config.patch keeps without writing them, and where they would go."""

from __future__ import annotations

import copy
from typing import Any

from gateway.config.patch import merge_patch, secrets_sent_elsewhere
from gateway.config.secret_keys import REDACTED
from gateway.config.view import redact_parsed

BASE: dict[str, Any] = {
    "gateway": {"port": 18789, "auth": {"token": "gateway-token"}},
    "models": {
        "providers": {
            "openai": {"baseUrl": "https://api.example/v1", "apiKey": "sk-1"},
            "corp": {"baseUrl": "https://corp.example/v1", "headers": {"x-key": "corp-1"}},
        }
    },
    "store": {
        "backend": "postgres",
        "url": "postgresql://db.internal/clawgate",
        "passwordFile": "/run/secrets/pg",
    },
    "channels": {
        "telegram": {"botToken": "bot-1", "webhookUrl": "https://hooks.example/tg"},
        "slack": {"accounts": [{"botToken": "slack-1", "apiBase": "https://slack.example"}]},
    },
}


def exposed(patch: dict[str, Any]) -> list[tuple[str, str]]:
    base = copy.deepcopy(BASE)
    return secrets_sent_elsewhere(base, patch, merge_patch(base, patch))


def provider(**fields: Any) -> dict[str, Any]:
    return {"models": {"providers": {"openai": fields}}}


class TestSecretsSentElsewhere:
    def test_a_kept_key_with_a_new_base_url(self) -> None:
        assert exposed(provider(baseUrl="https://evil.example")) == [
            ("models.providers.openai.apiKey", "models.providers.openai.baseUrl")
        ]

    def test_a_redacted_key_with_a_removed_base_url(self) -> None:
        assert exposed(provider(baseUrl=None, apiKey=REDACTED)) == [
            ("models.providers.openai.apiKey", "models.providers.openai.baseUrl")
        ]

    def test_a_key_written_out_may_go_anywhere(self) -> None:
        assert exposed(provider(baseUrl="https://evil.example", apiKey="sk-1")) == []

    def test_an_env_reference_is_not_written_out(self) -> None:
        assert exposed(provider(baseUrl="https://evil.example", apiKey="${OPENAI_API_KEY}")) == [
            ("models.providers.openai.apiKey", "models.providers.openai.baseUrl")
        ]

    def test_a_kept_key_with_its_base_url_unchanged(self) -> None:
        assert exposed(provider(apiKey=REDACTED, models=[{"id": "m"}])) == []

    def test_header_values_go_with_the_provider_url(self) -> None:
        patch = {"models": {"providers": {"corp": {"baseUrl": "https://evil.example"}}}}
        assert exposed(patch) == [
            ("models.providers.corp.headers.x-key", "models.providers.corp.baseUrl")
        ]

    def test_another_providers_url_does_not_matter(self) -> None:
        patch = {"models": {"providers": {"corp": {"baseUrl": "https://evil.example"}}}}
        assert all(secret.startswith("models.providers.corp.") for secret, _ in exposed(patch))

    def test_an_openclaw_channel_secret_with_a_new_webhook_url(self) -> None:
        patch = {"channels": {"telegram": {"webhookUrl": "https://evil.example/tg"}}}
        assert exposed(patch) == [("channels.telegram.botToken", "channels.telegram.webhookUrl")]

    def test_any_sibling_holding_a_url_is_an_address(self) -> None:
        patch = {"channels": {"telegram": {"relay": "https://evil.example"}}}
        assert exposed(patch) == [("channels.telegram.botToken", "channels.telegram.relay")]

    def test_secrets_in_an_array_replaced_by_the_patch(self) -> None:
        accounts = [{"botToken": REDACTED, "apiBase": "https://evil.example"}]
        # The marker keeps the file's secret at the same index, which may not follow a change.
        assert exposed({"channels": {"slack": {"accounts": accounts}}}) == [
            ("channels.slack.accounts[0].botToken", "channels.slack.accounts[0].apiBase")
        ]

    def test_secrets_in_an_array_kept_where_they_went(self) -> None:
        accounts = [{"botToken": REDACTED, "apiBase": "https://slack.example"}]
        assert exposed({"channels": {"slack": {"accounts": accounts}}}) == []

    def test_the_gateways_own_secrets_stay_with_a_new_listener(self) -> None:
        patch = {"gateway": {"bind": "custom", "customBindHost": "192.168.1.10"}}
        assert exposed(patch) == []

    def test_a_kept_password_file_with_a_new_store_url(self) -> None:
        # The file's first line is the password: it would go to the server the patch names.
        patch = {"store": {"url": "postgresql://evil.example/x"}}
        assert exposed(patch) == [("store.passwordFile", "store.url")]

    def test_a_password_file_named_by_the_patch_is_not_written_out(self) -> None:
        # Like a ${VAR}: the patch names a secret it has not seen (any file the gateway reads).
        patch = {"store": {"url": "postgresql://evil.example/x", "passwordFile": "/etc/shadow"}}
        assert exposed(patch) == [("store.passwordFile", "store.url")]

    def test_a_new_password_file_for_the_same_server(self) -> None:
        assert exposed({"store": {"passwordFile": "/run/secrets/pg2"}}) == []


class TestKeysHoldingSecrets:
    """A key that holds a secret (config.get shows it as REDACTED) is kept by a patch that
    sends that name back: it may not follow a changed address either, and no answer names it."""

    @staticmethod
    def exposed(relay: dict[str, Any], patch: dict[str, Any]) -> list[tuple[str, str]]:
        base = {"channels": {"relay": relay}}
        return secrets_sent_elsewhere(base, patch, merge_patch(base, patch))

    def test_a_kept_key_holding_a_secret_does_not_follow_a_new_address(self) -> None:
        relay = {"url": "https://relay.example", "Bearer zq-abc": True}
        patch = {"channels": {"relay": {"url": "https://evil.example"}}}
        assert self.exposed(relay, patch) == [(f"channels.relay.{REDACTED}", "channels.relay.url")]

    def test_it_may_when_the_patch_writes_it_out(self) -> None:
        relay = {"url": "https://relay.example", "Bearer zq-abc": True}
        patch = {"channels": {"relay": {"url": "https://evil.example", "Bearer zq-abc": True}}}
        assert self.exposed(relay, patch) == []

    def test_a_secret_under_such_a_key_is_named_by_the_key_shown(self) -> None:
        relay = {"url": "https://relay.example", "token: zq-abc": {"secret": "s"}}
        patch = {"channels": {"relay": {"url": "https://evil.example"}}}
        found = self.exposed(relay, patch)
        assert found[0] == (f"channels.relay.{REDACTED}.secret", "channels.relay.url")
        assert "zq" not in repr(found)

    def test_the_shown_names_map_back_to_the_file_s_keys(self) -> None:
        base = {"p": {"api_key=zq-1": 1, "a": 2, "https://u:zq-2@h.example": 3}}
        patch = {"p": {REDACTED: 4, f"{REDACTED}2": REDACTED, f"{REDACTED}3": 5, "a": None}}
        assert merge_patch(base, patch) == {"p": {"api_key=zq-1": 4, "https://u:zq-2@h.example": 3}}

    def test_a_key_of_the_file_named_like_a_shown_name_keeps_its_own(self) -> None:
        """A hand-written key spelled as a numbered marker is not a hidden key's name too:
        shown under one name, one of the two values was lost from config.get's view, and a
        patch of that name changed (or removed) the hidden key instead."""
        base = {"p": {"Bearer zq-1": 1, "Bearer zq-2": 2, f"{REDACTED}2": 3}}
        shown = {"p": {REDACTED: 1, f"{REDACTED}3": 2, f"{REDACTED}2": 3}}
        assert redact_parsed(base) == shown
        patch = {"p": {f"{REDACTED}3": 4}}
        assert merge_patch(base, patch) == {
            "p": {"Bearer zq-1": 1, "Bearer zq-2": 4, f"{REDACTED}2": 3}
        }

    def test_a_key_of_the_file_named_like_a_marker_takes_a_patch_of_its_name(self) -> None:
        """Shown as itself (it holds no secret), it was dropped from a patch as a marker:
        neither changed nor removed. Merged as an object's member and inside a list alike."""
        base = {"p": {f"{REDACTED}2": 1, REDACTED: 2, "Bearer zq-1": 3}}
        assert redact_parsed(base) == {"p": {f"{REDACTED}2": 1, REDACTED: 2, f"{REDACTED}3": 3}}
        patch = {"p": {f"{REDACTED}2": 4, REDACTED: None}}
        assert merge_patch(base, patch) == {"p": {f"{REDACTED}2": 4, "Bearer zq-1": 3}}
        listed = {"l": [{f"{REDACTED}2": 1}]}
        assert merge_patch(listed, {"l": [{f"{REDACTED}2": 5}]}) == {"l": [{f"{REDACTED}2": 5}]}

    def test_a_marker_the_file_has_no_key_of_is_still_never_written_as_one(self) -> None:
        patch = {"p": {f"{REDACTED}7": 1, REDACTED: 2}, "l": [{f"{REDACTED}2": 1}]}
        assert merge_patch({"p": {}}, patch) == {"p": {}, "l": [{}]}
