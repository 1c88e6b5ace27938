"""`${VAR}` substitution in string values (config.md §3)."""

from __future__ import annotations

from tests.config.conftest import ConfigFiles


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
        assert token_of(files, "${A}", {"A": " x "}) == " x "

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
        assert files.issues('{gateway: {http: {cors: {allowedOrigins: ["${ORIGIN}"]}}}}') == [
            '- gateway.http.cors.allowedOrigins[0]: Missing env var "ORIGIN" referenced at'
            " config path: gateway.http.cors.allowedOrigins[0]"
        ]

    def test_keys_are_not_substituted(self, files: ConfigFiles) -> None:
        text = '{models: {providers: {p: {baseUrl: "http://h", headers: {"${H}": "${V}"}}}}}'
        config = files.load(text, environ={"H": "x-h", "V": "v"})
        assert config.agents.providers["p"].headers == {"${H}": "v"}

    def test_enum_values_are_substituted_before_checking(self, files: ConfigFiles) -> None:
        assert (
            files.load('{gateway: {bind: "${BIND}"}}', environ={"BIND": "lan"}).gateway.bind
            == "lan"
        )

    def test_numbers_stay_strings(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {port: "${PORT}"}}', environ={"PORT": "18790"}) == [
            "- gateway.port: expected integer, got string"
        ]

    def test_forwarded_params_are_substituted(self, files: ConfigFiles) -> None:
        text = '{agents: {list: [{id: "a", params: {user: "${USER_TAG}", stop: ["${S}"]}}]}}'
        params = files.load(text, environ={"USER_TAG": "u1", "S": "END"}).agents.agents[0].params
        assert params == {"user": "u1", "stop": ["END"]}

    def test_ignored_openclaw_sections_are_not_substituted(self, files: ConfigFiles) -> None:
        config = files.load('{channels: {telegram: {botToken: "${TELEGRAM_BOT_TOKEN}"}}}')
        assert [w.path for w in config.warnings] == ["channels"]

    def test_durations_are_substituted(self, files: ConfigFiles) -> None:
        config = files.load(
            '{session: {maintenance: {pruneAfter: "${KEEP}"}}}', environ={"KEEP": "2d"}
        )
        assert config.agents.maintenance.prune_after_ms == 2 * 86_400_000
