"""Validation: the schema, the message catalogue and issue order (config.md §4, §4a, §6)."""

from __future__ import annotations

import json

import pytest

from agents.config import ModelRef
from gateway.config.model import ConfigWarning
from tests.support.configs import ConfigFiles

PROVIDERS = """
models: {
  providers: {
    openai: {
      baseUrl: "https://api.openai.com/v1",
      models: [{ id: "gpt-4o" }, { id: "gpt-4o-mini" }],
    },
    local: { baseUrl: "http://127.0.0.1:11434/v1" },
  },
},
"""


def with_agent(agent: str) -> str:
    return f"{{ agents: {{ list: [{agent}] }}, {PROVIDERS} }}"


class TestSyntax:
    def test_json5_features_load(self, files: ConfigFiles) -> None:
        text = """
        // line comment
        { /* block */ gateway: { 'port': 18790, bind: 'lan', }, agents: { list: [ {id: "a"}, ], }, }
        """
        config = files.load(text)
        assert (config.gateway.port, config.gateway.bind) == (18790, "lan")

    def test_syntax_error_gives_line_and_column(self, files: ConfigFiles) -> None:
        error = files.error('{\n  gateway: {\n    port: 18789\n    bind: "lan"\n  },\n}\n')
        assert error.render() == (
            f"Invalid config at {files.path}:\n"
            '- <file>: JSON5 syntax error: Unexpected "b" (line 4, column 5)'
        )

    def test_unexpected_end_of_input(self, files: ConfigFiles) -> None:
        assert files.issues("{gateway: {port: 1}") == [
            "- <file>: JSON5 syntax error: Unexpected end of input (line 1, column 20)"
        ]

    def test_unexpected_newline_stays_on_one_line(self, files: ConfigFiles) -> None:
        assert files.issues('{a: "x\n"}') == [
            '- <file>: JSON5 syntax error: Unexpected "\\n" (line 1, column 7)'
        ]

    def test_empty_file(self, files: ConfigFiles) -> None:
        assert files.issues("") == [
            "- <file>: JSON5 syntax error: Unexpected end of input (line 1, column 1)"
        ]

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            (
                "{channels: {telegram: {retries: NaN}}}",
                "- channels.telegram.retries: must be a finite number (got NaN)",
            ),
            (
                '{agents: {list: [{id: "a", params: {top_k: -Infinity}}]}}',
                "- agents.list[0].params.top_k: must be a finite number (got -Infinity)",
            ),
            (
                "{gateway: {port: 0x" + "F" * 5000 + "}}",
                "- gateway.port: must be a finite number (got an integer of more than 308 digits)",
            ),
        ],
    )
    def test_a_number_json_cannot_carry_is_an_issue_at_its_path(
        self, files: ConfigFiles, text: str, line: str
    ) -> None:
        """JSON5 has NaN and Infinity, and reads `0x…` of any length; config.get answers in
        JSON, config.patch writes JSON and params go upstream as JSON, none of which has them
        (and Python does not even print an integer of more than 4300 digits)."""
        assert files.issues(text) == [line]

    @pytest.mark.parametrize(
        ("text", "got"), [("[1, 2]", "array"), ('"gateway"', "string"), ("null", "null")]
    )
    def test_top_level_must_be_an_object(self, files: ConfigFiles, text: str, got: str) -> None:
        assert files.issues(text) == [f"- <file>: expected object, got {got}"]


class TestTypes:
    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ('{gateway: {port: "80"}}', "- gateway.port: expected integer, got string"),
            ("{gateway: {port: true}}", "- gateway.port: expected integer, got boolean"),
            ("{gateway: {port: 8080.0}}", "- gateway.port: expected integer, got number"),
            ("{gateway: {port: null}}", "- gateway.port: expected integer, got null"),
            ("{gateway: 5}", "- gateway: expected object, got integer"),
            (
                "{gateway: {auth: {token: 42}}}",
                "- gateway.auth.token: expected string, got integer",
            ),
            (
                '{gateway: {http: {endpoints: {chatCompletions: {enabled: "yes"}}}}}',
                "- gateway.http.endpoints.chatCompletions.enabled: expected boolean, got string",
            ),
            (
                '{gateway: {metrics: {public: "yes"}}}',
                "- gateway.metrics.public: expected boolean, got string",
            ),
            ("{gateway: {metrics: true}}", "- gateway.metrics: expected object, got boolean"),
            (
                '{gateway: {http: {cors: {allowedOrigins: "*"}}}}',
                "- gateway.http.cors.allowedOrigins: expected array, got string",
            ),
            (
                "{gateway: {http: {cors: {allowedOrigins: [1]}}}}",
                "- gateway.http.cors.allowedOrigins[0]: expected string, got integer",
            ),
            ("{agents: {list: {}}}", "- agents.list: expected array, got object"),
            ('{agents: {list: ["main"]}}', "- agents.list[0]: expected object, got string"),
            (
                '{agents: {list: [{id: "a", params: {temperature: "hot"}}]}}',
                "- agents.list[0].params.temperature: expected number, got string",
            ),
            (
                "{agents: {defaults: {model: 5}}}",
                "- agents.defaults.model: expected string or object, got integer",
            ),
            (
                "{gateway: {auth: {rateLimit: true}}}",
                "- gateway.auth.rateLimit: expected object or false, got boolean",
            ),
            (
                "{session: {maintenance: {pruneAfter: true}}}",
                "- session.maintenance.pruneAfter: expected string or integer, got boolean",
            ),
            (
                "{session: {maintenance: {statelessTtl: false}}}",
                "- session.maintenance.statelessTtl: expected string or integer, got boolean",
            ),
            (
                "{session: {maintenance: {maxDiskBytes: true}}}",
                "- session.maintenance.maxDiskBytes: expected string, integer or false,"
                " got boolean",
            ),
            (
                "{session: {maintenance: {highWaterBytes: [1]}}}",
                "- session.maintenance.highWaterBytes: expected string, integer or false,"
                " got array",
            ),
            (
                "{session: {maintenance: {maxDiskBytes: 1.5}}}",
                "- session.maintenance.maxDiskBytes: expected string, integer or false, got number",
            ),
            (
                '{models: {providers: {p: {baseUrl: "http://h", headers: {"x-a": 1}}}}}',
                "- models.providers.p.headers.x-a: expected string, got integer",
            ),
        ],
    )
    def test_wrong_type(self, files: ConfigFiles, text: str, line: str) -> None:
        assert files.issues(text) == [line]

    def test_numbers_accept_integers(self, files: ConfigFiles) -> None:
        config = files.load('{agents: {list: [{id: "a", params: {temperature: 1}}]}}')
        assert config.agents.agents[0].params["temperature"] == 1


class TestEnums:
    def test_value_outside_the_choices(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {bind: "public"}}') == [
            '- gateway.bind: must be one of "loopback", "lan", "custom" (got "public")'
        ]

    @pytest.mark.parametrize("bind", ["auto", "tailnet"])
    def test_openclaw_bind_modes_are_not_supported(self, files: ConfigFiles, bind: str) -> None:
        assert files.issues(f'{{gateway: {{bind: "{bind}"}}}}') == [
            "- gateway.bind: not supported by clawgate (use loopback, lan or custom)"
        ]

    def test_trusted_proxy_auth_is_not_supported(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {auth: {mode: "trusted-proxy"}}}') == [
            "- gateway.auth.mode: not supported by clawgate"
        ]

    @pytest.mark.parametrize(
        ("level", "stored"),
        [("trace", "debug"), ("fatal", "error"), ("silent", "silent"), ("warn", "warn")],
    )
    def test_openclaw_log_levels(self, files: ConfigFiles, level: str, stored: str) -> None:
        assert files.load(f'{{logging: {{level: "{level}"}}}}').logging.level == stored

    def test_log_level_choices_include_the_openclaw_spellings(self, files: ConfigFiles) -> None:
        assert files.issues('{logging: {level: "verbose"}}') == [
            '- logging.level: must be one of "debug", "info", "warn", "error", "silent",'
            ' "trace", "fatal" (got "verbose")'
        ]

    def test_reload_mode(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {reload: {mode: "live"}}}') == [
            '- gateway.reload.mode: must be one of "off", "hot", "hybrid", "restart" (got "live")'
        ]


class TestRanges:
    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ("{gateway: {port: 70000}}", "- gateway.port: must be between 1 and 65535 (got 70000)"),
            ("{gateway: {port: 0}}", "- gateway.port: must be between 1 and 65535 (got 0)"),
            (
                "{gateway: {shutdown: {drainSeconds: -1}}}",
                "- gateway.shutdown.drainSeconds: must be >= 0 (got -1)",
            ),
            (
                "{gateway: {auth: {rateLimit: {maxAttempts: 0}}}}",
                "- gateway.auth.rateLimit.maxAttempts: must be >= 1 (got 0)",
            ),
            (
                '{agents: {list: [{id: "a", params: {temperature: 5}}]}}',
                "- agents.list[0].params.temperature: must be between 0 and 2 (got 5)",
            ),
            (
                '{agents: {list: [{id: "a", params: {frequency_penalty: -2.5}}]}}',
                "- agents.list[0].params.frequency_penalty: must be between -2 and 2 (got -2.5)",
            ),
            (
                '{agents: {list: [{id: "a", params: {max_tokens: 0}}]}}',
                "- agents.list[0].params.max_tokens: must be between 1 and 9007199254740991"
                " (got 0)",
            ),
            (
                "{agents: {defaults: {maxConcurrent: 0}}}",
                "- agents.defaults.maxConcurrent: must be >= 1 (got 0)",
            ),
        ],
    )
    def test_out_of_range(self, files: ConfigFiles, text: str, line: str) -> None:
        assert files.issues(text) == [line]

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            (
                f"{{gateway: {{auth: {{rateLimit: {{windowMs: {2**53}}}}}}}}}",
                "- gateway.auth.rateLimit.windowMs: must be between 1 and 9007199254740991"
                f" (got {2**53})",
            ),
            (
                f"{{gateway: {{reload: {{debounceMs: {10**20}}}}}}}",
                "- gateway.reload.debounceMs: must be between 0 and 9007199254740991"
                f" (got {10**20})",
            ),
            (
                f'{{agents: {{list: [{{id: "a", params: {{seed: -{2**53}}}}}]}}}}',
                "- agents.list[0].params.seed: must be between -9007199254740991 and"
                f" 9007199254740991 (got -{2**53})",
            ),
        ],
    )
    def test_an_integer_beyond_a_javascript_safe_integer_is_out_of_range(
        self, files: ConfigFiles, text: str, line: str
    ) -> None:
        """Where §4 names no upper bound: OpenClaw (JavaScript) holds no larger integer
        exactly, and a count of ms or seconds this large is no float (the limiter's clock,
        asyncio's timers), so it would fail where it is used, on every request."""
        assert files.issues(text) == [line]

    def test_the_largest_safe_integer_loads(self, files: ConfigFiles) -> None:
        config = files.load(f"{{gateway: {{auth: {{rateLimit: {{lockoutMs: {2**53 - 1}}}}}}}}}")
        assert config.gateway.auth.rate_limit.lockout_ms == 2**53 - 1

    @pytest.mark.parametrize("stop", ['""', '["a", ""]', '["a", "b", "c", "d", "e"]', "[1]"])
    def test_stop_sequences(self, files: ConfigFiles, stop: str) -> None:
        assert files.issues(f'{{agents: {{list: [{{id: "a", params: {{stop: {stop}}}}}]}}}}') == [
            "- agents.list[0].params.stop: must be a non-empty string or an array of at most 4"
            " non-empty strings"
        ]


class TestRequired:
    def test_agent_id(self, files: ConfigFiles) -> None:
        assert files.issues('{agents: {list: [{name: "x"}]}}') == [
            "- agents.list[0].id: is required"
        ]

    def test_base_url_for_openai_completions(self, files: ConfigFiles) -> None:
        assert files.issues("{models: {providers: {local: {}}}}") == [
            "- models.providers.local.baseUrl: is required"
        ]

    def test_base_url_defaults_for_anthropic_messages(self, files: ConfigFiles) -> None:
        config = files.load('{models: {providers: {claude: {api: "anthropic-messages"}}}}')
        assert config.agents.providers["claude"].base_url == "https://api.anthropic.com"

    def test_model_entry_id(self, files: ConfigFiles) -> None:
        assert files.issues('{models: {providers: {p: {baseUrl: "http://h", models: [{}]}}}}') == [
            "- models.providers.p.models[0].id: is required"
        ]

    def test_model_chain_primary(self, files: ConfigFiles) -> None:
        assert files.issues('{agents: {defaults: {model: {fallbacks: ["echo/a"]}}}}') == [
            "- agents.defaults.model.primary: is required"
        ]

    def test_base_url_must_be_http(self, files: ConfigFiles) -> None:
        assert files.issues('{models: {providers: {p: {baseUrl: "ftp://h/v1"}}}}') == [
            '- models.providers.p.baseUrl: must be an http(s) URL (got "ftp://h/v1")'
        ]

    def test_base_url_with_credentials_not_in_latin_1_is_refused_without_showing_them(
        self, files: ConfigFiles
    ) -> None:
        issues = files.issues('{models: {providers: {p: {baseUrl: "http://me:pw\u20ac@h/v1"}}}}')
        assert issues == [
            "- models.providers.p.baseUrl: the URL's user or password is not latin-1 text"
        ]

    @pytest.mark.parametrize(
        ("url", "issue"),
        [
            ("http://h:0/v1", "port 0 in the URL"),
            ("http://h/v 1", "the URL's path has a space, control or non-ASCII character"),
        ],
    )
    def test_base_url_the_upstream_client_cannot_use(
        self, files: ConfigFiles, url: str, issue: str
    ) -> None:
        assert files.issues(f'{{models: {{providers: {{p: {{baseUrl: "{url}"}}}}}}}}') == [
            f"- models.providers.p.baseUrl: {issue}"
        ]


class TestAgents:
    def test_empty_list_gives_the_implicit_agent_main(self, files: ConfigFiles) -> None:
        config = files.load('{agents: {list: [], defaults: {model: "echo/fast"}}}')
        (agent,) = config.agents.agents
        assert (agent.id, agent.name, agent.models) == ("main", "main", (ModelRef("echo", "fast"),))

    def test_invalid_id(self, files: ConfigFiles) -> None:
        assert files.issues('{agents: {list: [{id: "Main Agent"}]}}') == [
            '- agents.list[0].id: invalid agent id "Main Agent" (expected [a-z0-9][a-z0-9_-]{0,63})'
        ]

    def test_id_longer_than_64_characters(self, files: ConfigFiles) -> None:
        (line,) = files.issues(f'{{agents: {{list: [{{id: "{"a" * 65}"}}]}}}}')
        assert line.startswith("- agents.list[0].id: invalid agent id")

    def test_id_is_stored_lowercase(self, files: ConfigFiles) -> None:
        assert files.load('{agents: {list: [{id: "Coder_1"}]}}').agents.agents[0].id == "coder_1"

    def test_duplicate_id(self, files: ConfigFiles) -> None:
        assert files.issues('{agents: {list: [{id: "main"}, {id: "Main"}]}}') == [
            '- agents.list[1].id: duplicate agent id "main"'
        ]

    def test_agent_model_defaults_to_the_defaults_model(self, files: ConfigFiles) -> None:
        config = files.load('{agents: {defaults: {model: "echo/x"}, list: [{id: "a"}]}}')
        assert config.agents.agents[0].models == (ModelRef("echo", "x"),)

    def test_more_than_one_default_warns_and_the_first_wins(self, files: ConfigFiles) -> None:
        config = files.load(
            '{agents: {list: [{id: "a"}, {id: "b", default: true}, {id: "c", default: true}]}}'
        )
        assert config.warnings == (
            ConfigWarning(
                "agents.list[2].default",
                'more than one agent is marked default; the first ("b") is used',
            ),
        )
        assert config.agents.default_agent.id == "b"

    def test_unknown_params_are_forwarded_verbatim(self, files: ConfigFiles) -> None:
        config = files.load(
            '{agents: {list: [{id: "a", params: {top_k: 40, logit_bias: {"50256": -100}}}]}}'
        )
        assert config.agents.agents[0].params == {"top_k": 40, "logit_bias": {"50256": -100}}


class TestModelRefs:
    def test_must_be_provider_slash_model(self, files: ConfigFiles) -> None:
        assert files.issues(with_agent('{id: "a", model: "gpt-4o"}')) == [
            '- agents.list[0].model: must be "provider/model" (got "gpt-4o")'
        ]

    def test_unknown_provider_with_a_suggestion(self, files: ConfigFiles) -> None:
        assert files.issues(with_agent('{id: "a", model: "opnai/gpt-4o"}')) == [
            '- agents.list[0].model: unknown provider "opnai" (did you mean "openai"?)'
        ]

    def test_unknown_provider_without_a_close_match(self, files: ConfigFiles) -> None:
        assert files.issues(with_agent('{id: "a", model: "mistral/large"}')) == [
            '- agents.list[0].model: unknown provider "mistral"'
        ]

    def test_unknown_model_with_a_suggestion(self, files: ConfigFiles) -> None:
        assert files.issues(with_agent('{id: "a", model: "openai/gpt4"}')) == [
            '- agents.list[0].model: unknown model "gpt4" for provider "openai"'
            ' (did you mean "gpt-4o"?)'
        ]

    def test_provider_without_a_model_list_takes_any_model(self, files: ConfigFiles) -> None:
        config = files.load(with_agent('{id: "a", model: "local/anything"}'))
        assert config.agents.agents[0].models == (ModelRef("local", "anything"),)

    def test_echo_takes_any_model(self, files: ConfigFiles) -> None:
        config = files.load(with_agent('{id: "a", model: "echo/whatever"}'))
        assert config.agents.agents[0].primary == ModelRef("echo", "whatever")

    def test_chain_is_primary_then_fallbacks(self, files: ConfigFiles) -> None:
        config = files.load(
            with_agent(
                '{id: "a", model: {primary: "openai/gpt-4o", fallbacks: ["local/q", "echo/e"]}}'
            )
        )
        assert config.agents.agents[0].models == (
            ModelRef("openai", "gpt-4o"),
            ModelRef("local", "q"),
            ModelRef("echo", "e"),
        )

    def test_fallback_issue_has_its_index(self, files: ConfigFiles) -> None:
        text = with_agent(
            '{id: "a", model: {primary: "echo/e", fallbacks: ["local/q", "openai/gpt5"]}}'
        )
        assert files.issues(text) == [
            '- agents.list[0].model.fallbacks[1]: unknown model "gpt5" for provider "openai"'
            ' (did you mean "gpt-4o"?)'
        ]

    def test_defaults_model_is_checked(self, files: ConfigFiles) -> None:
        assert files.issues(
            f'{{agents: {{defaults: {{model: "opnai/gpt-4o"}}}}, {PROVIDERS}}}'
        ) == ['- agents.defaults.model: unknown provider "opnai" (did you mean "openai"?)']

    def test_provider_defined_after_the_agents_is_found(self, files: ConfigFiles) -> None:
        config = files.load(with_agent('{id: "a", model: "openai/gpt-4o-mini"}'))
        assert config.agents.agents[0].primary == ModelRef("openai", "gpt-4o-mini")


class TestToolsAndRoutingKeys:
    def test_an_agents_allowed_models(self, files: ConfigFiles) -> None:
        config = files.load(with_agent('{id: "a", models: ["openai/gpt-4o-mini"]}'))
        assert config.agents.agents[0].allowed_models == (ModelRef("openai", "gpt-4o-mini"),)

    def test_an_allowed_model_must_exist(self, files: ConfigFiles) -> None:
        assert files.issues(with_agent('{id: "a", models: ["openai/gpt4"]}')) == [
            '- agents.list[0].models[0]: unknown model "gpt4" for provider "openai"'
            ' (did you mean "gpt-4o"?)'
        ]

    def test_session_headers_are_kept_lowercased(self, files: ConfigFiles) -> None:
        text = '{gateway: {http: {endpoints: {chatCompletions: {sessionHeaders: ["X-Conv"]}}}}}'
        chat = files.load(text).gateway.http.chat_completions
        assert (chat.session_headers, chat.unknown_model) == (("x-conv",), "error")

    def test_the_defaults(self, files: ConfigFiles) -> None:
        chat = files.load("{}").gateway.http.chat_completions
        assert chat.session_headers == ("x-openwebui-chat-id", "x-chat-id")

    @pytest.mark.parametrize(
        ("key", "value", "issue"),
        [
            ("sessionHeaders", '["a b"]', 'sessionHeaders[0]: not a header name: "a b"'),
            ("sessionHeaders", '"x-chat-id"', "sessionHeaders: expected array, got string"),
            (
                "unknownModel",
                '"gpt-4o"',
                'unknownModel: must be one of "error", "default-agent" (got "gpt-4o")',
            ),
        ],
    )
    def test_invalid_values(self, files: ConfigFiles, key: str, value: str, issue: str) -> None:
        text = f"{{gateway: {{http: {{endpoints: {{chatCompletions: {{{key}: {value}}}}}}}}}}}"
        assert files.issues(text) == [f"- gateway.http.endpoints.chatCompletions.{issue}"]


class TestProviders:
    UNIMPLEMENTED = '{models: {providers: {gem: {api: "google-generative-ai", whatever: 1}}}}'

    def test_unimplemented_api_warns_and_the_provider_is_ignored(self, files: ConfigFiles) -> None:
        config = files.load(self.UNIMPLEMENTED)
        assert config.warnings == (
            ConfigWarning(
                "models.providers.gem.api",
                'api "google-generative-ai" is not implemented; provider ignored',
            ),
        )
        assert "gem" not in config.agents.providers

    def test_agent_using_an_unimplemented_provider_is_an_issue(self, files: ConfigFiles) -> None:
        text = (
            '{agents: {defaults: {model: "gem/pro"}}, models: {providers: {gem: {api: "ollama"}}}}'
        )
        assert files.issues(text) == [
            '- agents.defaults.model: provider "gem" is ignored: api "ollama" is not implemented'
        ]

    def test_echo_is_reserved(self, files: ConfigFiles) -> None:
        assert files.issues('{models: {providers: {echo: {baseUrl: "http://h"}}}}') == [
            '- models.providers.echo: "echo" is reserved for the built-in provider'
        ]

    def test_provider_id_pattern(self, files: ConfigFiles) -> None:
        assert files.issues('{models: {providers: {"Open AI": {baseUrl: "http://h"}}}}') == [
            '- models.providers.Open AI: invalid provider id "Open AI"'
            " (expected [a-z0-9][a-z0-9_-]{0,63})"
        ]

    HEADER_ISSUE = (
        "cannot be sent in an HTTP header (it has a line break, a NUL or a character beyond"
        " Latin-1)"
    )

    HEADER_NAME_ISSUE = (
        "its name is not a header name, and is not shown as it may hold a secret (a header"
        ' is written {"Authorization": "Bearer …"}, not as one string)'
    )

    @pytest.mark.parametrize(
        ("provider", "environ", "line"),
        [
            ('headers: {"x-team": "a\\nInjected: 1"}', {}, f"headers.x-team: {HEADER_ISSUE}"),
            ('headers: {"x-team": "caf\\u20ac"}', {}, f"headers.x-team: {HEADER_ISSUE}"),
            # An EnvironmentFile saved with Windows line ends: every turn would fail.
            ('apiKey: "${KEY}"', {"KEY": "sk-secret\r"}, f"apiKey: {HEADER_ISSUE}"),
            ('headers: {"x team": "v"}', {}, f"headers: entry 1: {HEADER_NAME_ISSUE}"),
        ],
    )
    def test_a_key_or_header_the_upstream_client_cannot_send_is_an_issue(
        self, files: ConfigFiles, provider: str, environ: dict[str, str], line: str
    ) -> None:
        """Not at the first turn, where every turn of the provider would fail; the value
        (a secret) is not shown."""
        text = f'{{models: {{providers: {{p: {{baseUrl: "http://h", {provider}}}}}}}}}'
        assert files.issues(text, environ=environ) == [f"- models.providers.p.{line}"]

    def test_model_entry_defaults(self, files: ConfigFiles) -> None:
        config = files.load(
            '{models: {providers: {p: {baseUrl: "http://h", models: [{id: "m"}]}}}}'
        )
        (model,) = config.agents.providers["p"].models
        assert (model.name, model.context_window, model.max_tokens, model.reasoning) == (
            "m",
            None,
            None,
            False,
        )


class TestDurations:
    @pytest.mark.parametrize(
        ("value", "ms"),
        [
            ('"30d"', 2_592_000_000),
            ('"12h"', 43_200_000),
            ('"90m"', 5_400_000),
            ('"45s"', 45_000),
            ("1234", 1234),
        ],
    )
    def test_accepted_forms(self, files: ConfigFiles, value: str, ms: int) -> None:
        config = files.load(f"{{session: {{maintenance: {{pruneAfter: {value}}}}}}}")
        assert config.agents.maintenance.prune_after_ms == ms

    def test_other_text_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{session: {maintenance: {pruneAfter: "30 days"}}}') == [
            '- session.maintenance.pruneAfter: must be a duration like "30d", "12h", "90m", "45s"'
            ' or integer milliseconds (got "30 days")'
        ]

    def test_thousands_of_digits_are_an_issue(self, files: ConfigFiles) -> None:
        text = '{session: {maintenance: {pruneAfter: "%sd"}}}' % ("1" * 5000)
        [issue] = files.issues(text)
        assert issue.startswith("- session.maintenance.pruneAfter: must be a duration like")

    def test_negative_milliseconds_are_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues("{session: {maintenance: {pruneAfter: -5}}}") == [
            "- session.maintenance.pruneAfter: must be >= 0 (got -5)"
        ]


class TestByteSizes:
    @pytest.mark.parametrize(
        ("value", "size"),
        [
            ('"500mb"', 500 * 1024**2),
            ('"10GB"', 10 * 1024**3),
            ('"64kb"', 64 * 1024),
            ('"100b"', 100),
            ("123456", 123456),
            ("false", 0),
        ],
    )
    def test_accepted_forms(self, files: ConfigFiles, value: str, size: int) -> None:
        config = files.load(f"{{session: {{maintenance: {{maxDiskBytes: {value}}}}}}}")
        assert config.agents.maintenance.max_disk_bytes == size

    def test_other_text_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{session: {maintenance: {maxDiskBytes: "1 gig"}}}') == [
            '- session.maintenance.maxDiskBytes: must be a size like "500mb", "10gb", "64kb"'
            ' or integer bytes (got "1 gig")'
        ]

    def test_thousands_of_digits_are_an_issue(self, files: ConfigFiles) -> None:
        text = '{session: {maintenance: {maxDiskBytes: "%sgb"}}}' % ("1" * 5000)
        [issue] = files.issues(text)
        assert issue.startswith("- session.maintenance.maxDiskBytes: must be a size like")

    def test_negative_bytes_are_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues("{session: {maintenance: {highWaterBytes: -1}}}") == [
            "- session.maintenance.highWaterBytes: must be >= 0 (got -1)"
        ]

    def test_high_water_defaults_to_80_percent_of_the_limit(self, files: ConfigFiles) -> None:
        config = files.load('{session: {maintenance: {maxDiskBytes: "100mb"}}}')
        assert config.agents.maintenance.high_water_bytes == 80 * 1024**2

    def test_high_water_above_the_limit_counts_as_the_limit(self, files: ConfigFiles) -> None:
        text = '{session: {maintenance: {maxDiskBytes: "1mb", highWaterBytes: "2mb"}}}'
        assert files.load(text).agents.maintenance.high_water_bytes == 1024**2


class TestSwitches:
    def test_rate_limit_false_turns_the_limiter_off(self, files: ConfigFiles) -> None:
        config = files.load("{gateway: {auth: {rateLimit: false}}}")
        assert config.gateway.auth.rate_limit.enabled is False

    def test_rate_limit_is_on_by_default(self, files: ConfigFiles) -> None:
        assert files.load("{}").gateway.auth.rate_limit.enabled is True

    def test_allow_url_true_warns_and_counts_as_false(self, files: ConfigFiles) -> None:
        text = "{gateway: {http: {endpoints: {chatCompletions: {images: {allowUrl: true}}}}}}"
        config = files.load(text)
        assert config.warnings == (
            ConfigWarning(
                "gateway.http.endpoints.chatCompletions.images.allowUrl",
                "remote image URLs are not supported; treated as false",
            ),
        )
        assert config.gateway.http.chat_completions.images.allow_url is False

    def test_main_key_is_lowercased(self, files: ConfigFiles) -> None:
        assert files.load('{session: {mainKey: "Home"}}').agents.main_key == "home"

    def test_main_key_must_not_be_empty(self, files: ConfigFiles) -> None:
        assert files.issues('{session: {mainKey: ""}}') == ["- session.mainKey: must not be empty"]


class TestUnknownKeys:
    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ("{gatway: {}}", '- gatway: unknown key (did you mean "gateway"?)'),
            ("{gateway: {prot: 1}}", '- gateway.prot: unknown key (did you mean "port"?)'),
            (
                '{gateway: {auth: {tokn: "x"}}}',
                '- gateway.auth.tokn: unknown key (did you mean "token"?)',
            ),
            (
                "{gateway: {http: {endpoints: {chatCompletions: {maxBodyByte: 1}}}}}",
                "- gateway.http.endpoints.chatCompletions.maxBodyByte: unknown key"
                ' (did you mean "maxBodyBytes"?)',
            ),
            (
                '{agents: {list: [{id: "a", systemPromt: "x"}]}}',
                '- agents.list[0].systemPromt: unknown key (did you mean "systemPrompt"?)',
            ),
            (
                '{models: {providers: {p: {baseUrl: "http://h", apikey: "k"}}}}',
                '- models.providers.p.apikey: unknown key (did you mean "apiKey"?)',
            ),
            (
                '{agents: {defaults: {model: {primary: "echo/e", fallback: []}}}}',
                '- agents.defaults.model.fallback: unknown key (did you mean "fallbacks"?)',
            ),
        ],
    )
    def test_with_a_suggestion(self, files: ConfigFiles, text: str, line: str) -> None:
        assert files.issues(text) == [line]

    def test_suggestions_include_ignored_openclaw_keys(self, files: ConfigFiles) -> None:
        assert files.issues("{chanels: {}}") == [
            '- chanels: unknown key (did you mean "channels"?)'
        ]

    def test_without_a_close_match(self, files: ConfigFiles) -> None:
        assert files.issues("{gateway: {zzz: 1}, frobnicate: true}") == [
            "- gateway.zzz: unknown key",
            "- frobnicate: unknown key",
        ]

    def test_include_is_not_supported(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {$include: "./gw.json5"}}') == [
            "- gateway.$include: $include is not supported by clawgate"
        ]


IGNORED = "config_key_ignored"


class TestIgnoredOpenClawKeys:
    OPENCLAW = """
    {
      channels: { telegram: { botToken: "${TELEGRAM_BOT_TOKEN}" } },
      gateway: { port: 18789, tls: { enabled: true } },
      plugins: { entries: {} },
      agents: { defaults: { workspace: "~/.openclaw/workspace", model: "echo/echo" } },
      tools: { profile: "full" },
    }
    """

    def test_load_with_one_warning_each_in_document_order(self, files: ConfigFiles) -> None:
        reason = "not implemented by clawgate"
        assert files.load(self.OPENCLAW).warnings == (
            ConfigWarning("channels", reason, event=IGNORED),
            ConfigWarning(
                "gateway.tls",
                f"{reason}; TLS is not supported; terminate TLS in a reverse proxy",
                event=IGNORED,
            ),
            ConfigWarning("plugins", reason, event=IGNORED),
            ConfigWarning("agents.defaults.workspace", reason, event=IGNORED),
            ConfigWarning("tools", reason, event=IGNORED),
        )

    def test_ignored_keys_inside_lists(self, files: ConfigFiles) -> None:
        text = '{agents: {list: [{id: "a", workspace: "w"}, {id: "b", sandbox: {}}]}}'
        assert [w.path for w in files.load(text).warnings] == [
            "agents.list[0].workspace",
            "agents.list[1].sandbox",
        ]


class TestControlUi:
    def test_on_for_a_loopback_bind_when_unset(self, files: ConfigFiles) -> None:
        gateway = files.load("{}").gateway
        assert gateway.control_ui.enabled is None
        assert gateway.control_ui_enabled is True

    def test_off_for_a_lan_bind_when_unset(self, files: ConfigFiles) -> None:
        text = '{gateway: {bind: "lan", auth: {token: "t"}}}'
        assert files.load(text).gateway.control_ui_enabled is False

    @pytest.mark.parametrize("bind", ["loopback", "lan"])
    @pytest.mark.parametrize("enabled", [True, False])
    def test_set_wins_over_the_bind(self, files: ConfigFiles, bind: str, enabled: bool) -> None:
        text = (
            f'{{gateway: {{bind: "{bind}", auth: {{token: "t"}},'
            f" controlUi: {{enabled: {str(enabled).lower()}}}}}}}"
        )
        assert files.load(text).gateway.control_ui_enabled is enabled

    def test_enabled_must_be_a_boolean(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {controlUi: {enabled: "yes"}}}') == [
            "- gateway.controlUi.enabled: expected boolean, got string"
        ]

    def test_openclaw_control_ui_keys_load_with_a_warning(self, files: ConfigFiles) -> None:
        config = files.load("{gateway: {controlUi: {enabled: true, allowInsecureAuth: true}}}")
        assert config.warnings == (
            ConfigWarning(
                "gateway.controlUi.allowInsecureAuth", "not implemented by clawgate", event=IGNORED
            ),
        )

    @pytest.mark.parametrize(
        ("value", "stored"),
        [
            ("/openclaw", "/openclaw"),
            # OpenClaw's normalization: trimmed, one leading slash, no trailing one.
            (" /openclaw/ ", "/openclaw"),
            ("openclaw", "/openclaw"),
            ("/ops/control-ui_2.x~", "/ops/control-ui_2.x~"),
            ("/", ""),
            ("", ""),
        ],
    )
    def test_base_path_is_stored_normalized(
        self, files: ConfigFiles, value: str, stored: str
    ) -> None:
        text = json.dumps({"gateway": {"controlUi": {"basePath": value}}})
        config = files.load(text)
        assert config.gateway.control_ui.base_path == stored
        assert config.warnings == ()

    @pytest.mark.parametrize(
        ("value", "issue"),
        [
            ("/a/../b", 'must be a URL path like /openclaw (got "/a/../b")'),
            ("/a/./b", 'must be a URL path like /openclaw (got "/a/./b")'),
            ("/..", 'must be a URL path like /openclaw (got "/..")'),
            ("/a//b", 'must be a URL path like /openclaw (got "/a//b")'),
            ("/ui?x=1", 'must be a URL path like /openclaw (got "/ui?x=1")'),
            ("/ui#top", 'must be a URL path like /openclaw (got "/ui#top")'),
            ("/a b", 'must be a URL path like /openclaw (got "/a b")'),
            ("/%2e%2e", 'must be a URL path like /openclaw (got "/%2e%2e")'),
            ('/a"b', 'must be a URL path like /openclaw (got "/a\\"b")'),
            ("/" + "a" * 200, "must have at most 200 characters"),
            ("/v1", "must not be one of clawgate's own paths or under one (got /v1)"),
            ("/v1/ui", "must not be one of clawgate's own paths or under one (got /v1/ui)"),
            ("/metrics", "must not be one of clawgate's own paths or under one (got /metrics)"),
            ("/healthz", "must not be one of clawgate's own paths or under one (got /healthz)"),
            ("/ready", "must not be one of clawgate's own paths or under one (got /ready)"),
            ("/ui", "must not be one of clawgate's own paths or under one (got /ui)"),
        ],
    )
    def test_a_bad_base_path_is_an_issue(self, files: ConfigFiles, value: str, issue: str) -> None:
        text = json.dumps({"gateway": {"controlUi": {"basePath": value}}})
        assert files.issues(text) == [f"- gateway.controlUi.basePath: {issue}"]

    def test_a_base_path_must_be_a_string(self, files: ConfigFiles) -> None:
        assert files.issues("{gateway: {controlUi: {basePath: 3}}}") == [
            "- gateway.controlUi.basePath: expected string, got integer"
        ]

    @pytest.mark.parametrize(
        ("base", "hooks"), [("/hooks", "/hooks"), ("/in", "/in/hooks"), ("/hooks/ui", "/hooks")]
    )
    def test_a_base_path_and_the_hooks_path_may_not_overlap(
        self, files: ConfigFiles, base: str, hooks: str
    ) -> None:
        text = json.dumps({"gateway": {"controlUi": {"basePath": base}}, "hooks": {"path": hooks}})
        assert files.issues(text) == [
            f"- gateway.controlUi.basePath: must not overlap hooks.path ({hooks}): the hooks"
            " would shadow the Control UI's pages"
        ]

    def test_root_is_a_build_directory_made_absolute(self, files: ConfigFiles) -> None:
        build = files.root / "ui"
        build.mkdir()
        (build / "index.html").write_text("<!doctype html>")
        (files.root / "link").symlink_to(build)
        config = files.load(
            '{gateway: {controlUi: {root: "~/link"}}}', environ={"HOME": str(files.root)}
        )
        assert config.gateway.control_ui.root == str(build.resolve())
        assert config.warnings == ()

    def test_root_unset_serves_the_built_in_ui(self, files: ConfigFiles) -> None:
        assert files.load("{}").gateway.control_ui.root is None

    def test_a_root_that_is_no_build_is_an_issue(self, files: ConfigFiles) -> None:
        (files.root / "empty").mkdir()
        (files.root / "file").write_text("x")
        text = json.dumps({"gateway": {"controlUi": {"root": str(files.root / "missing")}}})
        assert files.issues(text) == [
            f"- gateway.controlUi.root: {files.root / 'missing'} does not exist"
            " (give a Control UI build)"
        ]
        text = json.dumps({"gateway": {"controlUi": {"root": str(files.root / "file")}}})
        assert files.issues(text) == [
            f"- gateway.controlUi.root: {files.root / 'file'} is not a directory"
            " (give a Control UI build)"
        ]
        text = json.dumps({"gateway": {"controlUi": {"root": str(files.root / "empty")}}})
        assert files.issues(text) == [
            f"- gateway.controlUi.root: {files.root / 'empty'} has no index.html"
            " (not a Control UI build)"
        ]

    @pytest.mark.parametrize(
        ("value", "line"),
        [
            ("1", "- gateway.controlUi.root: expected string, got integer"),
            ('""', "- gateway.controlUi.root: must not be empty"),
        ],
    )
    def test_root_must_be_a_non_empty_string(
        self, files: ConfigFiles, value: str, line: str
    ) -> None:
        assert files.issues(f"{{gateway: {{controlUi: {{root: {value}}}}}}}") == [line]


class TestAllIssuesTogether:
    def test_rendered_in_document_order(self, files: ConfigFiles) -> None:
        text = """{
          gateway: { bind: "public", auth: { tokn: "x" } },
          agents: { list: [{ id: "main", model: "opnai/gpt-4o" }] },
          models: { providers: { openai: {
            baseUrl: "https://x.example/v1", models: [{ id: "gpt-4o" }] } } },
        }"""
        assert files.error(text).render() == (
            f"Invalid config at {files.path}:\n"
            '- gateway.bind: must be one of "loopback", "lan", "custom" (got "public")\n'
            '- gateway.auth.tokn: unknown key (did you mean "token"?)\n'
            '- agents.list[0].model: unknown provider "opnai" (did you mean "openai"?)'
        )

    def test_order_follows_the_file_not_the_schema(self, files: ConfigFiles) -> None:
        text = """{
          logging: { level: "loud" },
          agents: { list: [{ id: "a", model: "nope" }, { id: "a" }] },
          gateway: { port: -1 },
          session: { maintenance: { maxEntries: 0 } },
        }"""
        assert [i.path for i in files.error(text).issues] == [
            "logging.level",
            "agents.list[0].model",
            "agents.list[1].id",
            "gateway.port",
            "session.maintenance.maxEntries",
        ]

    def test_cross_section_issues_sort_into_place(self, files: ConfigFiles) -> None:
        text = """{
          agents: { list: [{ id: "a", model: "opnai/x" }], defaults: { historyLimit: -1 } },
          models: { providers: { openai: { baseUrl: "nope" } } },
        }"""
        assert [i.path for i in files.error(text).issues] == [
            "agents.list[0].model",
            "agents.defaults.historyLimit",
            "models.providers.openai.baseUrl",
        ]

    def test_env_issues_come_after_the_file_issues(self, files: ConfigFiles) -> None:
        error = files.error("{gateway: {port: 0}}", environ={"OPENCLAW_GATEWAY_PORT": "x"})
        assert [i.path for i in error.issues] == ["gateway.port", "OPENCLAW_GATEWAY_PORT"]


class TestEdgeKeys:
    """gateway.controlUi.allowedOrigins, gateway.http.allowedHosts, gateway.trustedProxies,
    gateway.ws.preAuth (gateway/edge.py)."""

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            (
                '{gateway: {controlUi: {allowedOrigins: "https://a.example"}}}',
                "- gateway.controlUi.allowedOrigins: expected array, got string",
            ),
            (
                "{gateway: {controlUi: {allowedOrigins: [1]}}}",
                "- gateway.controlUi.allowedOrigins[0]: expected string, got integer",
            ),
            ("{gateway: {controlUi: []}}", "- gateway.controlUi: expected object, got array"),
            (
                '{gateway: {http: {allowedHosts: "gw.example"}}}',
                "- gateway.http.allowedHosts: expected array, got string",
            ),
            (
                "{gateway: {http: {allowedHosts: [null]}}}",
                "- gateway.http.allowedHosts[0]: expected string, got null",
            ),
            (
                '{gateway: {trustedProxies: "10.0.0.1"}}',
                "- gateway.trustedProxies: expected array, got string",
            ),
            (
                "{gateway: {trustedProxies: [true]}}",
                "- gateway.trustedProxies[0]: expected string, got boolean",
            ),
            ("{gateway: {ws: 1}}", "- gateway.ws: expected object, got integer"),
            (
                "{gateway: {ws: {preAuth: false}}}",
                "- gateway.ws.preAuth: expected object, got boolean",
            ),
            (
                '{gateway: {ws: {preAuth: {maxConnections: "9"}}}}',
                "- gateway.ws.preAuth.maxConnections: expected integer, got string",
            ),
            (
                "{gateway: {ws: {preAuth: {maxPerAddress: 1.5}}}}",
                "- gateway.ws.preAuth.maxPerAddress: expected integer, got number",
            ),
            (
                "{gateway: {ws: {preAuth: {maxPerAddress: 0}}}}",
                "- gateway.ws.preAuth.maxPerAddress: must be >= 1 (got 0)",
            ),
            (
                '{gateway: {auth: {rateLimit: {exemptLoopback: "no"}}}}',
                "- gateway.auth.rateLimit.exemptLoopback: expected boolean, got string",
            ),
        ],
    )
    def test_wrong_type(self, files: ConfigFiles, text: str, line: str) -> None:
        assert files.issues(text) == [line]

    @pytest.mark.parametrize(
        "origin",
        [
            "*",
            "null",
            "a.example",
            "https://a.example/",
            "https://a.example/ui",
            "ftp://a.example",
            "https://u@a.example",
            "https://a.example:99999",
            "https://\u00e9.example",
        ],
    )
    def test_an_allowed_origin_must_be_exactly_an_origin(
        self, files: ConfigFiles, origin: str
    ) -> None:
        text = json.dumps({"gateway": {"controlUi": {"allowedOrigins": [origin]}}})
        # One with a user in it may hold a password: the issue line does not show it.
        shown = "not shown: it may hold a password" if "@" in origin else None
        shown = shown or f"got {json.dumps(origin, ensure_ascii=False)}"
        assert files.issues(text) == [
            f"- gateway.controlUi.allowedOrigins[0]: must be an origin like https://host[:port]"
            f" ({shown})"
        ]

    def test_allowed_origins_are_stored_normalized(self, files: ConfigFiles) -> None:
        text = '{gateway: {controlUi: {allowedOrigins: ["HTTPS://UI.Example:443", "http://[::1]:8080"]}}}'
        config = files.load(text)
        assert config.gateway.allowed_origins == ("https://ui.example", "http://[::1]:8080")

    @pytest.mark.parametrize("host", ["gw.example:443", "", "a b", "http://gw.example", "[::1"])
    def test_an_allowed_host_has_no_port_or_scheme(self, files: ConfigFiles, host: str) -> None:
        text = json.dumps({"gateway": {"http": {"allowedHosts": [host]}}})
        assert files.issues(text) == [
            "- gateway.http.allowedHosts[0]: must be a host name or address without port"
            f" (got {json.dumps(host)})"
        ]

    def test_allowed_hosts_are_stored_lowercase(self, files: ConfigFiles) -> None:
        text = '{gateway: {http: {allowedHosts: ["GW.Example", "10.0.0.5", "::1", "fd00::5"]}}}'
        config = files.load(text)
        assert config.gateway.http.allowed_hosts == ("gw.example", "10.0.0.5", "::1", "fd00::5")

    @pytest.mark.parametrize("proxy", ["proxy.example", "10.0.0.0/33", "", "1.2.3.4:80"])
    def test_a_trusted_proxy_is_an_address_or_cidr(self, files: ConfigFiles, proxy: str) -> None:
        text = json.dumps({"gateway": {"trustedProxies": [proxy]}})
        assert files.issues(text) == [
            f"- gateway.trustedProxies[0]: must be an IP address or CIDR (got {json.dumps(proxy)})"
        ]

    def test_defaults(self, files: ConfigFiles) -> None:
        gateway = files.load("{}").gateway
        assert (gateway.allowed_origins, gateway.http.allowed_hosts, gateway.trusted_proxies) == (
            (),
            (),
            (),
        )
        assert (gateway.ws_preauth.max_connections, gateway.ws_preauth.max_per_address) == (
            256,
            32,
        )
        assert gateway.auth.rate_limit.exempt_loopback is False

    def test_other_openclaw_control_ui_keys_load_with_a_warning(self, files: ConfigFiles) -> None:
        text = "{gateway: {controlUi: {enabled: true, dangerouslyDisableDeviceAuth: true}}}"
        assert files.load(text).warnings == (
            ConfigWarning(
                "gateway.controlUi.dangerouslyDisableDeviceAuth",
                "not implemented by clawgate",
                event=IGNORED,
            ),
        )


class TestCredentialsAClientCanPresent:
    """A token or password with a control character (a line break, a NUL) cannot be sent in
    an `Authorization` header: a gateway started with it would refuse every client. It is an
    issue at the place it came from, the value not shown."""

    CONTROL_ISSUE = (
        "has a control character (such as a line break or a NUL), which no client can send in"
        " a header; the value is not shown"
    )

    @pytest.mark.parametrize(
        ("text", "environ", "path"),
        [
            ("{gateway: {auth: {token: 'tok\\u0000en'}}}", {}, "gateway.auth.token"),
            (
                "{gateway: {auth: {mode: 'password', password: 'pass\\nword'}}}",
                {},
                "gateway.auth.password",
            ),
            (
                "{gateway: {auth: {mode: 'password', password: '${PW}'}}}",
                {"PW": "s3cret\r-pw"},
                "gateway.auth.password",
            ),
            ("{hooks: {enabled: true, token: 'hook\\u0001token'}}", {}, "hooks.token"),
            ("{}", {"OPENCLAW_GATEWAY_TOKEN": "s3cret\x1b[0m"}, "OPENCLAW_GATEWAY_TOKEN"),
            ("{}", {"OPENCLAW_GATEWAY_PASSWORD": "s3cret\rpw"}, "OPENCLAW_GATEWAY_PASSWORD"),
        ],
    )
    def test_from_the_file_or_the_environment_is_an_issue(
        self, files: ConfigFiles, text: str, environ: dict[str, str], path: str
    ) -> None:
        error = files.error(text, environ=environ)
        assert [i.line() for i in error.issues] == [f"- {path}: {self.CONTROL_ISSUE}"]
        assert "s3cret" not in error.render()

    @pytest.mark.parametrize(
        ("overrides", "flag"),
        [({"token": "s3cret\x7f"}, "--token"), ({"password": "s3cret\x00pw"}, "--password")],
    )
    def test_from_a_flag_is_an_issue(
        self, files: ConfigFiles, overrides: dict[str, str], flag: str
    ) -> None:
        error = files.error("{}", **overrides)
        assert [i.line() for i in error.issues] == [f"- {flag}: {self.CONTROL_ISSUE}"]

    @pytest.mark.parametrize("flag", ["--token-file", "--password-file"])
    def test_from_a_secret_file_is_an_issue(self, files: ConfigFiles, flag: str) -> None:
        path = files.root / "secret"
        path.write_bytes(b"s3cret\x00rest\r\n")
        error = files.error("{}", **{flag[2:].replace("-", "_"): str(path)})
        assert [i.line() for i in error.issues] == [f"- {flag}: {self.CONTROL_ISSUE}"]

    NOT_UTF_8_ISSUE = (
        "is not valid UTF-8 (a byte of another encoding, such as an environment file saved as"
        " Latin-1, or a lone surrogate escape such as \\udce4), which no WebSocket client can"
        " send; the value is not shown"
    )

    @pytest.mark.parametrize(
        ("text", "environ", "overrides", "path"),
        [
            ("{gateway: {auth: {token: 's3cret-\\udce4'}}}", {}, {}, "gateway.auth.token"),
            (
                "{gateway: {auth: {mode: 'password', password: '${PW}'}}}",
                {"PW": "s3cret-\udce4"},
                {},
                "gateway.auth.password",
            ),
            ("{hooks: {enabled: true, token: 's3cret\\ud800'}}", {}, {}, "hooks.token"),
            ("{}", {"OPENCLAW_GATEWAY_TOKEN": "s3cret\udce4"}, {}, "OPENCLAW_GATEWAY_TOKEN"),
            ("{}", {}, {"password": "s3cret\udcff"}, "--password"),
        ],
    )
    def test_one_that_is_not_utf_8_is_an_issue(
        self,
        files: ConfigFiles,
        text: str,
        environ: dict[str, str],
        overrides: dict[str, str],
        path: str,
    ) -> None:
        """A lone surrogate (a Latin-1 byte of an environment file, `\\udce4` in the file)
        is no character a WebSocket frame carries: every WS client would be refused."""
        error = files.error(text, environ=environ, **overrides)
        assert [i.line() for i in error.issues] == [f"- {path}: {self.NOT_UTF_8_ISSUE}"]
        assert "s3cret" not in error.render()

    def test_a_character_beyond_the_bmp_loads(self, files: ConfigFiles) -> None:
        """A surrogate pair in the file is one character, which a client can send."""
        auth = files.load("{gateway: {auth: {token: 'tok-\\ud83d\\ude00'}}}").gateway.auth
        assert auth.token == "tok-\U0001f600"

    def test_a_windows_line_end_of_a_substituted_secret_is_trimmed(
        self, files: ConfigFiles
    ) -> None:
        """An EnvironmentFile saved with Windows line ends: its `\\r` is whitespace at the
        end, trimmed as a presented secret is."""
        text = "{gateway: {auth: {mode: 'password', password: '${PW}'}}}"
        auth = files.load(text, environ={"PW": "s3cret-pw\r"}).gateway.auth
        assert auth.password == "s3cret-pw"

    def test_a_tab_inside_a_secret_loads(self, files: ConfigFiles) -> None:
        """A header may carry a tab (RFC 9110's field-value), so a client can send it."""
        auth = files.load("{gateway: {auth: {token: 'to\\tken'}}}").gateway.auth
        assert auth.token == "to\tken"
