"""`hooks` and `agents.defaults.embeddingModel`: the keys clawgate reads, their checks at
load, the effective view and its redaction."""

from __future__ import annotations

import json

import pytest

from agents.config import ModelRef
from gateway.config.model import ConfigWarning, HooksConfig
from gateway.config.secret_keys import REDACTED
from gateway.config.view import effective_dict, redact_raw, redacted
from tests.support.configs import ConfigFiles

PROVIDERS = """
models: {providers: {
  local: {baseUrl: "http://127.0.0.1:11434/v1", models: [{id: "qwen"}]},
  claude: {api: "anthropic-messages", apiKey: "k"},
  gem: {api: "google-generative-ai"},
}},
"""


class TestEmbeddingModel:
    def test_absent_by_default(self, files: ConfigFiles) -> None:
        assert files.load("{}").agents.embedding_model is None

    def test_an_openai_compatible_providers_model_need_not_be_listed(
        self, files: ConfigFiles
    ) -> None:
        config = files.load(
            "{" + PROVIDERS + 'agents: {defaults: {embeddingModel: "local/nomic-embed"}}}'
        )
        assert config.agents.embedding_model == ModelRef("local", "nomic-embed")

    def test_echo_gives_offline_vectors(self, files: ConfigFiles) -> None:
        config = files.load('{agents: {defaults: {embeddingModel: "echo/echo"}}}')
        assert config.agents.embedding_model == ModelRef("echo", "echo")

    def test_an_anthropic_provider_is_refused(self, files: ConfigFiles) -> None:
        text = "{" + PROVIDERS + 'agents: {defaults: {embeddingModel: "claude/x"}}}'
        assert files.issues(text) == [
            '- agents.defaults.embeddingModel: provider "claude" is not OpenAI-compatible'
            ' (api "anthropic-messages"); embeddings need an "openai-completions" provider'
        ]

    def test_an_unknown_provider_is_refused_with_a_suggestion(self, files: ConfigFiles) -> None:
        text = "{" + PROVIDERS + 'agents: {defaults: {embeddingModel: "locl/x"}}}'
        assert files.issues(text) == [
            '- agents.defaults.embeddingModel: unknown provider "locl" (did you mean "local"?)'
        ]

    def test_an_ignored_provider_is_refused(self, files: ConfigFiles) -> None:
        text = "{" + PROVIDERS + 'agents: {defaults: {embeddingModel: "gem/x"}}}'
        assert files.issues(text) == [
            '- agents.defaults.embeddingModel: provider "gem" is ignored:'
            ' api "google-generative-ai" is not implemented'
        ]

    def test_must_be_a_provider_model_ref(self, files: ConfigFiles) -> None:
        assert files.issues('{agents: {defaults: {embeddingModel: "nomic"}}}') == [
            '- agents.defaults.embeddingModel: must be "provider/model" (got "nomic")'
        ]

    def test_must_be_a_string(self, files: ConfigFiles) -> None:
        assert files.issues("{agents: {defaults: {embeddingModel: 3}}}") == [
            "- agents.defaults.embeddingModel: expected string, got integer"
        ]

    def test_shows_in_the_effective_config(self, files: ConfigFiles) -> None:
        config = files.load('{agents: {defaults: {embeddingModel: "echo/echo"}}}')
        assert effective_dict(config)["agents"]["defaults"]["embeddingModel"] == "echo/echo"


class TestHooks:
    def test_off_by_default_with_openclaws_defaults(self, files: ConfigFiles) -> None:
        assert files.load("{}").hooks == HooksConfig()
        assert HooksConfig().path == "/hooks" and HooksConfig().max_body_bytes == 262144

    def test_every_key(self, files: ConfigFiles) -> None:
        config = files.load(
            """{hooks: {enabled: true, token: "hook-secret", path: "in/", maxBodyBytes: 1000,
            waitTimeoutSeconds: 5, allowedAgentIds: ["Main"], defaultSessionKey: "hook:x",
            allowRequestSessionKey: true, allowedSessionKeyPrefixes: ["Hook:"]}}"""
        )
        assert config.hooks == HooksConfig(
            enabled=True,
            token="hook-secret",
            path="/in",
            max_body_bytes=1000,
            wait_timeout_seconds=5,
            allowed_agent_ids=("main",),
            default_session_key="hook:x",
            allow_request_session_key=True,
            allowed_session_key_prefixes=("hook:",),
        )

    def test_enabled_needs_a_token(self, files: ConfigFiles) -> None:
        assert files.issues("{hooks: {enabled: true}}") == [
            "- hooks.token: is required when hooks.enabled is true"
        ]

    def test_the_token_is_trimmed(self, files: ConfigFiles) -> None:
        assert files.load('{hooks: {enabled: true, token: " t\\n"}}').hooks.token == "t"

    def test_a_token_of_only_whitespace_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{hooks: {enabled: true, token: " \\n"}}') == [
            "- hooks.token: is only whitespace"
        ]

    def test_the_token_may_come_from_the_environment(self, files: ConfigFiles) -> None:
        text = '{hooks: {enabled: true, token: "${HOOKS_TOKEN}"}}'
        assert files.load(text, environ={"HOOKS_TOKEN": "t"}).hooks.token == "t"

    def test_the_path_may_not_be_the_root(self, files: ConfigFiles) -> None:
        assert files.issues('{hooks: {path: "/"}}') == ['- hooks.path: may not be "/"']

    def test_the_path_may_not_shadow_the_gateways_own(self, files: ConfigFiles) -> None:
        assert files.issues('{hooks: {path: "/v1/hooks"}}') == [
            "- hooks.path: must not be under one of clawgate's own paths (got /v1/hooks)"
        ]

    def test_the_path_may_not_shadow_the_metrics_endpoint(self, files: ConfigFiles) -> None:
        assert files.issues('{hooks: {path: "/metrics"}}') == [
            "- hooks.path: must not be under one of clawgate's own paths (got /metrics)"
        ]

    def test_the_path_may_not_shadow_the_control_ui(self, files: ConfigFiles) -> None:
        assert files.issues('{hooks: {path: "/ui"}}') == [
            "- hooks.path: must not be under one of clawgate's own paths (got /ui)"
        ]

    def test_the_path_must_be_a_path(self, files: ConfigFiles) -> None:
        assert files.issues('{hooks: {path: "/a b"}}') == [
            '- hooks.path: must be a URL path like /hooks (got "/a b")'
        ]

    def test_wrong_types_are_issues_with_their_path(self, files: ConfigFiles) -> None:
        text = """{hooks: {enabled: "yes", maxBodyBytes: 0, waitTimeoutSeconds: 1.5,
        allowedAgentIds: "main", allowRequestSessionKey: 1}}"""
        assert files.issues(text) == [
            "- hooks.enabled: expected boolean, got string",
            "- hooks.maxBodyBytes: must be >= 1 (got 0)",
            "- hooks.waitTimeoutSeconds: expected integer, got number",
            "- hooks.allowedAgentIds: expected array, got string",
            "- hooks.allowRequestSessionKey: expected boolean, got integer",
        ]

    def test_the_default_session_key_must_match_the_prefixes(self, files: ConfigFiles) -> None:
        text = '{hooks: {defaultSessionKey: "inbox", allowedSessionKeyPrefixes: ["hook:"]}}'
        assert files.issues(text) == [
            "- hooks.defaultSessionKey: must match hooks.allowedSessionKeyPrefixes"
        ]

    def test_without_a_default_key_the_prefixes_must_allow_hook_keys(
        self, files: ConfigFiles
    ) -> None:
        assert files.issues('{hooks: {allowedSessionKeyPrefixes: ["mail:"]}}') == [
            "- hooks.allowedSessionKeyPrefixes: must include 'hook:' when"
            " hooks.defaultSessionKey is unset"
        ]

    @pytest.mark.parametrize(
        ("key", "problem"),
        [
            ("cron:nightly", "uses a reserved internal session namespace (subagent:, cron:, acp:)"),
            ("agent::inbox", 'is not a valid session key (got "agent::inbox")'),
            ("agent:ghost:inbox", 'names agent "ghost", which is not in agents.list'),
            ("hook:" + "x" * 600, "is longer than a session key may be (512 characters)"),
        ],
    )
    def test_a_default_session_key_no_call_could_use_is_an_issue(
        self, files: ConfigFiles, key: str, problem: str
    ) -> None:
        """Loaded, it made every call without a `sessionKey` a 400 that blamed the caller's
        `sessionKey`; the operator's mistake is named where it is."""
        text = json.dumps({"hooks": {"defaultSessionKey": key}})
        assert files.issues(text) == [f"- hooks.defaultSessionKey: {problem}"]

    def test_a_default_session_key_of_an_agent_hooks_may_not_use_is_an_issue(
        self, files: ConfigFiles
    ) -> None:
        text = """{agents: {list: [{id: "main"}, {id: "ops"}]},
        hooks: {defaultSessionKey: "agent:ops:inbox", allowedAgentIds: ["main"]}}"""
        assert files.issues(text) == [
            '- hooks.defaultSessionKey: names agent "ops", which hooks.allowedAgentIds does'
            " not allow"
        ]

    def test_a_default_session_key_of_another_listed_agent_loads(self, files: ConfigFiles) -> None:
        text = """{agents: {list: [{id: "main"}, {id: "ops"}]},
        hooks: {defaultSessionKey: "agent:ops:inbox", allowedAgentIds: ["ops"]}}"""
        assert files.load(text).hooks.default_session_key == "agent:ops:inbox"

    def test_a_default_key_matches_a_prefix_without_its_agent_part(
        self, files: ConfigFiles
    ) -> None:
        """As a call's key does: `hook:` allows `agent:main:hook:…`."""
        text = """{hooks: {defaultSessionKey: "agent:main:hook:x",
        allowedSessionKeyPrefixes: ["hook:"]}}"""
        assert files.load(text).hooks.default_session_key == "agent:main:hook:x"

    def test_the_rest_of_openclaws_section_loads_with_a_warning(self, files: ConfigFiles) -> None:
        config = files.load('{hooks: {presets: ["gmail"], mappings: []}}')
        assert config.warnings == (
            ConfigWarning("hooks.presets", "not implemented by clawgate", "config_key_ignored"),
            ConfigWarning(
                "hooks.mappings",
                "not implemented by clawgate; only /agent and /wake are served",
                "config_key_ignored",
            ),
        )

    def test_an_unknown_key_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues("{hooks: {tokn: 1}}") == [
            '- hooks.tokn: unknown key (did you mean "token"?)'
        ]

    def test_the_effective_config_loads_back_to_the_same(self, files: ConfigFiles) -> None:
        config = files.load(
            """{hooks: {enabled: true, token: "s", allowedAgentIds: ["*"],
            defaultSessionKey: "hook:a", allowedSessionKeyPrefixes: ["hook:"]}}"""
        )
        again = files.load(json.dumps(effective_dict(config)))
        assert again.hooks == config.hooks


class TestHooksTokenRedaction:
    TEXT = '{hooks: {enabled: true, token: "hook-secret-1"}}'

    def test_redacted_in_the_effective_view(self, files: ConfigFiles) -> None:
        view = redacted(files.load(self.TEXT))
        assert view["hooks"]["token"] == REDACTED
        assert view["hooks"]["enabled"] is True

    def test_redacted_in_the_raw_file(self, files: ConfigFiles) -> None:
        config = files.load(self.TEXT)
        assert config.source.raw is not None and config.source.parsed is not None
        raw = redact_raw(config.source.raw, config.source.parsed)
        assert "hook-secret-1" not in raw and REDACTED in raw


class TestHooksTokenIsItsOwnSecret:
    def test_the_gateway_token_may_not_be_the_hook_token(self, files: ConfigFiles) -> None:
        text = '{gateway: {auth: {token: "same"}}, hooks: {enabled: true, token: "same"}}'
        assert files.issues(text) == [
            "- hooks.token: must not match the gateway auth token; set a distinct hooks.token"
        ]

    def test_nor_with_whitespace_around_it(self, files: ConfigFiles) -> None:
        text = '{gateway: {auth: {token: "same"}}, hooks: {enabled: true, token: "same\\n"}}'
        assert files.issues(text) == [
            "- hooks.token: must not match the gateway auth token; set a distinct hooks.token"
        ]

    def test_nor_the_one_from_the_environment(self, files: ConfigFiles) -> None:
        text = '{hooks: {enabled: true, token: "same"}}'
        environ = {"OPENCLAW_GATEWAY_TOKEN": "same"}
        assert files.issues(text, environ=environ) == [
            "- hooks.token: must not match the gateway auth token; set a distinct hooks.token"
        ]

    def test_nor_the_one_generated_in_the_state_dir(self, files: ConfigFiles) -> None:
        # `clawgate token` shows it; pasting it as the hook token would make them one secret.
        files.state_dir.mkdir(mode=0o700)
        (files.state_dir / "gateway.token").write_text("same\n")
        text = '{hooks: {enabled: true, token: "same"}}'
        assert files.issues(text) == [
            "- hooks.token: must not match the gateway auth token; set a distinct hooks.token"
        ]

    @pytest.mark.parametrize(
        ("text", "environ"),
        [
            ('{gateway: {auth: {password: "same"}}, hooks: {enabled: true, token: "same"}}', {}),
            (
                '{gateway: {auth: {mode: "password"}}, hooks: {enabled: true, token: " same "}}',
                {"OPENCLAW_GATEWAY_PASSWORD": "same"},
            ),
        ],
    )
    def test_nor_the_gateway_password(
        self, files: ConfigFiles, text: str, environ: dict[str, str]
    ) -> None:
        # The hook token is handed to automation services; the gateway's password with it.
        assert files.issues(text, environ=environ) == [
            "- hooks.token: must not match the gateway auth password; set a distinct hooks.token"
        ]

    def test_a_token_file_that_differs_is_no_issue(self, files: ConfigFiles) -> None:
        files.state_dir.mkdir(mode=0o700)
        (files.state_dir / "gateway.token").write_text("other\n")
        assert files.load('{hooks: {enabled: true, token: "same"}}').hooks.token == "same"
