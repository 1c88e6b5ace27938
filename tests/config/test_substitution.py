"""`${VAR}` substitution in string values (config.md §3)."""

from __future__ import annotations

import pytest

from tests.support.configs import ConfigFiles


def token_of(files: ConfigFiles, token: str, environ: dict[str, str]) -> str | None:
    return files.load(
        f"{{gateway: {{auth: {{token: '{token}'}}}}}}", environ=environ
    ).gateway.auth.token


class TestSubstitution:
    def test_variable_is_replaced(self, files: ConfigFiles) -> None:
        assert token_of(files, "${CLAWGATE_TOKEN}", {"CLAWGATE_TOKEN": "s3cret"}) == "s3cret"

    def test_several_in_one_string(self, files: ConfigFiles) -> None:
        assert token_of(files, "Bearer ${A}-${B}", {"A": "one", "B": "two"}) == "Bearer one-two"

    def test_escaped_reference_is_literal(self, files: ConfigFiles) -> None:
        assert token_of(files, "$${A}", {"A": "one"}) == "${A}"

    def test_lowercase_names_are_left_alone(self, files: ConfigFiles) -> None:
        assert token_of(files, "${lower}", {"lower": "x"}) == "${lower}"

    def test_value_is_not_expanded_again(self, files: ConfigFiles) -> None:
        assert token_of(files, "${A}", {"A": "${B}", "B": "x"}) == "${B}"

    def test_value_is_used_as_it_is(self, files: ConfigFiles) -> None:
        # In a field kept as written (a token or password is trimmed after substitution, as
        # written).
        text = "{store: {backend: 'postgres', url: 'postgresql://db/clawgate', password: '${A}'}}"
        assert files.load(text, environ={"A": " x "}).store.password == " x "

    def test_missing_variable_is_an_issue(self, files: ConfigFiles) -> None:
        text = '{models: {providers: {openai: {baseUrl: "http://h", apiKey: "${OPENAI_API_KEY}"}}}}'
        assert files.issues(text) == [
            '- models.providers.openai.apiKey: Missing env var "OPENAI_API_KEY" referenced at'
            " config path: models.providers.openai.apiKey"
        ]

    def test_empty_variable_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {auth: {token: "${T}"}}}', environ={"T": ""}) == [
            '- gateway.auth.token: Missing env var "T" referenced at config path:'
            " gateway.auth.token"
        ]

    def test_each_missing_variable_of_a_string_is_an_issue(self, files: ConfigFiles) -> None:
        where = "referenced at config path: gateway.auth.token"
        assert files.issues('{gateway: {auth: {token: "${A}${B}${A}"}}}') == [
            f'- gateway.auth.token: Missing env var "A" {where}',
            f'- gateway.auth.token: Missing env var "B" {where}',
        ]

    def test_path_of_a_list_item(self, files: ConfigFiles) -> None:
        text = '{agents: {list: [{id: "a", params: {apiKeys: ["${K}"]}}]}}'
        assert files.issues(text) == [
            '- agents.list[0].params.apiKeys[0]: Missing env var "K" referenced at'
            " config path: agents.list[0].params.apiKeys[0]"
        ]

    def test_keys_are_not_substituted(self, files: ConfigFiles) -> None:
        text = '{models: {providers: {p: {baseUrl: "http://h", headers: {"${H}": "${V}"}}}}}'
        # Substituted, the name would be x-h, a valid one.
        assert files.issues(text, environ={"H": "x-h", "V": "v"}) == [
            "- models.providers.p.headers: entry 1: its name is not a header name, and is not"
            ' shown as it may hold a secret (a header is written {"Authorization": "Bearer …"},'
            " not as one string)"
        ]

    def test_header_values_are_substituted(self, files: ConfigFiles) -> None:
        text = '{models: {providers: {p: {baseUrl: "http://h", headers: {"x-org": "${ORG}"}}}}}'
        config = files.load(text, environ={"ORG": "org-1"})
        assert config.agents.providers["p"].headers == {"x-org": "org-1"}

    def test_secret_named_params_are_substituted(self, files: ConfigFiles) -> None:
        text = '{agents: {list: [{id: "a", params: {api_key: "${K}", stop: "END"}}]}}'
        params = files.load(text, environ={"K": "k-1"}).agents.agents[0].params
        assert params == {"api_key": "k-1", "stop": "END"}

    def test_ignored_openclaw_sections_are_not_substituted(self, files: ConfigFiles) -> None:
        config = files.load('{channels: {telegram: {botToken: "${TELEGRAM_BOT_TOKEN}"}}}')
        assert [w.path for w in config.warnings] == ["channels"]


NOT_EXPANDED = (
    "is not expanded here: environment variables are expanded only in secret values"
    " (a token, password, key or header value)"
)


class TestOnlySecretsAreSubstituted:
    """A `${VAR}` anywhere but in a secret would show the variable to `config.get` readers."""

    @pytest.mark.parametrize(
        ("text", "path"),
        [
            ('{agents: {list: [{id: "a", name: "${OPENAI_API_KEY}"}]}}', "agents.list[0].name"),
            (
                '{agents: {list: [{id: "a", systemPrompt: "say ${OPENAI_API_KEY}"}]}}',
                "agents.list[0].systemPrompt",
            ),
            ('{agents: {list: [{id: "a", params: {user: "${U}"}}]}}', "agents.list[0].params.user"),
            (
                '{agents: {list: [{id: "a", params: {stop: ["${S}"]}}]}}',
                "agents.list[0].params.stop[0]",
            ),
            ('{gateway: {bind: "${BIND}"}}', "gateway.bind"),
            (
                '{gateway: {http: {cors: {allowedOrigins: ["${O}"]}}}}',
                "gateway.http.cors.allowedOrigins[0]",
            ),
            ('{session: {maintenance: {pruneAfter: "${KEEP}"}}}', "session.maintenance.pruneAfter"),
            (
                '{models: {providers: {p: {baseUrl: "${OLLAMA_HOST}"}}}}',
                "models.providers.p.baseUrl",
            ),
            (
                '{models: {providers: {p: {baseUrl: "http://h/${KEY}"}}}}',
                "models.providers.p.baseUrl",
            ),
        ],
    )
    def test_a_reference_outside_a_secret_is_an_issue(
        self, files: ConfigFiles, text: str, path: str
    ) -> None:
        environ = {n: "value-1" for n in ("OPENAI_API_KEY", "U", "S", "BIND", "O", "KEEP", "KEY")}
        environ["OLLAMA_HOST"] = "http://127.0.0.1:11434/v1"
        reference = "${" + text.split("${")[1].split("}")[0] + "}"
        assert files.issues(text, environ=environ) == [f"- {path}: {reference} {NOT_EXPANDED}"]

    def test_the_escape_is_allowed_anywhere(self, files: ConfigFiles) -> None:
        config = files.load('{agents: {list: [{id: "a", systemPrompt: "use $${HOME}"}]}}')
        assert config.agents.agents[0].system_prompt == "use ${HOME}"

    def test_a_key_with_a_dot_is_judged_by_its_own_name(self, files: ConfigFiles) -> None:
        # `params["token.x"]` has the dotted path of `params.token.x`, but is not a secret.
        text = '{agents: {list: [{id: "a", params: {"token.x": "${K}"}}]}}'
        assert files.issues(text, environ={"K": "k"}) == [
            f"- agents.list[0].params.token.x: ${{K}} {NOT_EXPANDED}"
        ]
