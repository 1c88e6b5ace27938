"""`store`: the backend, the PostgreSQL URL and its password, their checks and redaction."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import json5

from gateway.config.model import StoreConfig, server_and_database
from gateway.config.patch import secrets_sent_elsewhere
from gateway.config.schema import URL_ISSUE
from gateway.config.secret_keys import REDACTED
from gateway.config.view import effective_dict, redact_raw, redacted
from tests.config.test_configfile import release_fifo_reader
from tests.support.configs import ConfigFiles

URL = "postgresql://clawgate@db.internal:5432/clawgate"


class TestStoreConfig:
    def test_sqlite_by_default(self, files: ConfigFiles) -> None:
        assert files.load("{}").store == StoreConfig()

    def test_postgres_with_the_password_from_the_environment(self, files: ConfigFiles) -> None:
        text = f'{{store: {{backend: "postgres", url: "{URL}", password: "${{DB_PW}}"}}}}'
        config = files.load(text, environ={"DB_PW": "s3cret"})
        assert config.store == StoreConfig("postgres", URL, "s3cret", 10)

    def test_the_password_from_a_file(self, files: ConfigFiles, tmp_path: Path) -> None:
        (tmp_path / "pw").write_text("from-file\n")
        text = (
            f'{{store: {{backend: "postgres", url: "{URL}", passwordFile: "{tmp_path / "pw"}"}}}}'
        )
        assert files.load(text).store.password == "from-file"

    def test_an_unreadable_password_file_is_an_issue(
        self, files: ConfigFiles, tmp_path: Path
    ) -> None:
        missing = tmp_path / "none"
        text = f'{{store: {{backend: "postgres", url: "{URL}", passwordFile: "{missing}"}}}}'
        [line] = files.issues(text)
        assert line.startswith(f"- store.passwordFile: cannot read {missing}")

    def test_a_fifo_as_the_password_file_is_an_issue_not_a_wait_for_a_writer(
        self, files: ConfigFiles, tmp_path: Path
    ) -> None:
        """Read with the config (at startup, at each reload, by a config.patch holding the
        config's lock): a FIFO would hold all of them until some writer came."""
        fifo = tmp_path / "pw"
        os.mkfifo(fifo)
        text = f'{{store: {{backend: "postgres", url: "{URL}", passwordFile: "{fifo}"}}}}'
        lines: list[list[str]] = []
        reader = threading.Thread(target=lambda: lines.append(files.issues(text)))
        reader.start()
        reader.join(5)
        waited = reader.is_alive()
        release_fifo_reader(fifo)
        reader.join()
        assert not waited
        assert lines == [[f"- store.passwordFile: cannot read {fifo}: not a regular file"]]

    def test_password_and_password_file_together_are_an_issue(self, files: ConfigFiles) -> None:
        text = f'{{store: {{backend: "postgres", url: "{URL}", password: "a", passwordFile: "b"}}}}'
        assert files.issues(text) == [
            "- store.passwordFile: give password or passwordFile, not both"
        ]

    def test_postgres_needs_a_url(self, files: ConfigFiles) -> None:
        assert files.issues('{store: {backend: "postgres"}}') == [
            '- store.url: is required with the "postgres" backend'
        ]

    def test_the_url_must_be_postgresql(self, files: ConfigFiles) -> None:
        for url in (
            "http://db/x",
            "postgresql:///nohost",
            "postgresql://[::1/x",
            "postgresql:///db?host=relative/dir",
            # No port is above 65535: it connected to another (a connection refused, exit 1).
            "postgresql://u@127.0.0.1:99999/db",
        ):
            text = f'{{store: {{backend: "postgres", url: "{url}"}}}}'
            assert files.issues(text) == [f"- store.url: {URL_ISSUE}"], url

    def test_a_server_on_this_host_by_its_socket_directory(self, files: ConfigFiles) -> None:
        url = "postgresql://clawgate@/clawgate?host=/run/postgresql"
        text = f'{{store: {{backend: "postgres", url: "{url}", password: "pw"}}}}'
        assert files.load(text).store == StoreConfig("postgres", url, "pw", 10)

    def test_postgres_keys_with_sqlite_are_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues(f'{{store: {{url: "{URL}"}}}}') == [
            '- store.url: applies to the "postgres" backend only'
        ]

    def test_an_unknown_backend_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{store: {backend: "mysql"}}') == [
            '- store.backend: must be one of "sqlite", "postgres" (got "mysql")'
        ]

    def test_the_url_may_not_take_a_variable(self, files: ConfigFiles) -> None:
        # Only secret-named keys expand `${VAR}`: the password goes in `password`.
        text = '{store: {backend: "postgres", url: "${DATABASE_URL}"}}'
        [line] = files.issues(text, environ={"DATABASE_URL": URL})
        assert line.startswith("- store.url: ")

    def test_the_password_is_redacted_in_the_effective_view(self, files: ConfigFiles) -> None:
        text = f'{{store: {{backend: "postgres", url: "{URL}", password: "${{DB_PW}}"}}}}'
        config = files.load(text, environ={"DB_PW": "s3cret"})
        shown = redacted(config)
        # A URL naming a user is redacted whole, as any URL with credentials in it.
        assert shown["store"] == {
            "backend": "postgres",
            "poolSize": 10,
            "url": REDACTED,
            "password": REDACTED,
        }
        assert "s3cret" not in json.dumps(shown)
        assert "s3cret" not in repr(config.store)

    def test_a_url_with_a_password_in_its_query_is_redacted_whole(self, files: ConfigFiles) -> None:
        # libpq takes `password` (and `sslpassword`) as URI parameters too.
        url = "postgresql://db.internal/x?sslmode=require&password=query-pw"
        text = f'{{store: {{backend: "postgres", url: "{url}"}}}}'
        config = files.load(text)
        assert redacted(config)["store"]["url"] == REDACTED
        assert "query-pw" not in redact_raw(text, json5.loads(text))
        assert "query-pw" not in repr(config.store)

    def test_a_url_with_a_password_in_it_is_redacted_whole(self, files: ConfigFiles) -> None:
        url = "postgresql://u:inline-pw@db/x"
        config = files.load(f'{{store: {{backend: "postgres", url: "{url}"}}}}')
        assert redacted(config)["store"]["url"] == REDACTED
        assert "inline-pw" not in repr(config.store)

    def test_the_effective_config_loads_back_the_same(self, files: ConfigFiles) -> None:
        text = f'{{store: {{backend: "postgres", url: "{URL}", password: "p", poolSize: 3}}}}'
        config = files.load(text)
        again = files.load(json.dumps(effective_dict(config)))
        assert again.store == config.store


def test_the_scale_out_example_is_a_valid_config(files: ConfigFiles) -> None:
    text = (Path(__file__).parents[2] / "conf" / "scale-out" / "clawgate.json5").read_text()
    config = files.load(text, environ={"CLAWGATE_DB_PASSWORD": "pw"})
    assert config.store == StoreConfig(
        "postgres", "postgresql://clawgate@10.0.0.20:5432/clawgate", "pw", 10
    )


def test_a_patch_that_moves_the_url_must_spell_out_the_password() -> None:
    # config.patch keeps a redacted secret only while it goes where it went (patch.py).
    elsewhere = "postgresql://clawgate@db.elsewhere.example/clawgate"
    base = {"store": {"backend": "postgres", "url": URL, "password": "s3cret"}}
    patch = {"store": {"url": elsewhere, "password": REDACTED}}
    merged = {"store": {"backend": "postgres", "url": elsewhere, "password": "s3cret"}}
    assert secrets_sent_elsewhere(base, patch, merged) == [("store.password", "store.url")]


class TestSessionsLocation:
    """`path` of health, status and sessions.list: where the sessions live, no credentials."""

    def test_sqlite_is_the_file_in_the_state_dir(self, files: ConfigFiles) -> None:
        config = files.load("{}")
        assert config.sessions_location == str(config.state_dir / "sessions.sqlite3")

    def test_postgres_is_the_server_and_database_without_user_password_or_parameters(
        self,
    ) -> None:
        for url, shown in (
            ("postgresql://u:pw@db.internal:5432/clawgate?sslmode=require&password=x",
             "postgresql://db.internal:5432/clawgate"),
            ("postgres://u@[::1]/c", "postgres://[::1]/c"),
            ("postgresql://u@/clawgate?host=/run/postgresql", "postgresql:///clawgate"),
            ("postgresql://db:notaport/c", "postgresql"),
        ):  # fmt: skip
            assert server_and_database(url) == shown, url
