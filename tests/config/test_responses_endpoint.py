"""`gateway.http.endpoints.responses`: OpenClaw's key for `/v1/responses`, read, checked and
shown in the effective config."""

from __future__ import annotations

from gateway.config.model import ResponsesConfig
from gateway.config.view import effective_dict
from tests.support.configs import ConfigFiles


class TestResponsesEndpoint:
    def test_off_by_default(self, files: ConfigFiles) -> None:
        assert files.load("{}").gateway.http.responses == ResponsesConfig(
            enabled=False, max_body_bytes=20 * 1024 * 1024
        )

    def test_enabled_without_a_warning(self, files: ConfigFiles) -> None:
        config = files.load(
            "{gateway: {http: {endpoints: {responses: {enabled: true, maxBodyBytes: 1000}}}}}"
        )
        assert config.gateway.http.responses == ResponsesConfig(True, 1000)
        assert config.warnings == ()

    def test_openclaws_file_and_url_keys_are_ignored_with_a_warning(
        self, files: ConfigFiles
    ) -> None:
        config = files.load(
            "{gateway: {http: {endpoints: {responses: {enabled: true, maxUrlParts: 4}}}}}"
        )
        assert [w.path for w in config.warnings] == ["gateway.http.endpoints.responses.maxUrlParts"]

    def test_wrong_types_are_issues(self, files: ConfigFiles) -> None:
        issues = files.issues(
            '{gateway: {http: {endpoints: {responses: {enabled: "yes", maxBodyBytes: 0}}}}}'
        )
        assert len(issues) == 2
        assert all("gateway.http.endpoints.responses." in issue for issue in issues)

    def test_in_the_effective_config(self, files: ConfigFiles) -> None:
        config = files.load("{gateway: {http: {endpoints: {responses: {enabled: true}}}}}")
        assert effective_dict(config)["gateway"]["http"]["endpoints"]["responses"] == {
            "enabled": True,
            "maxBodyBytes": 20 * 1024 * 1024,
        }
