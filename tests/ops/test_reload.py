"""Hot reload (config.md §7): what applies at once, what needs a restart, what is refused."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.appkeys import STATE
from gateway.auth import with_generated_token
from gateway.cli import _parser
from gateway.config.apply import ReloadResult, apply_config, changed_paths
from gateway.config.loader import ConfigLoader
from gateway.config.overrides import Overrides, overrides_from_args
from gateway.logs import _FILTER
from gateway.reload import reload_from_file
from gateway.state import AppOptions, GatewayState

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[..., Awaitable[Client]]

BASE = """{
  gateway: { port: 18789, auth: { token: "old-token" }, reload: { debounceMs: 50 } },
  agents: { list: [{ id: "main" }] },
}"""


def write(path: Path, text: str) -> None:
    # A new mtime even within the filesystem's timestamp granularity.
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "clawgate.json5"
    path.write_text(BASE)
    return path


@pytest.fixture
def loader(tmp_path: Path, config_file: Path) -> ConfigLoader:
    return ConfigLoader(
        Overrides(config_path=str(config_file), state_dir=str(tmp_path / "state")), environ={}
    )


@pytest.fixture
def state(loader: ConfigLoader) -> GatewayState:
    return GatewayState(with_generated_token(loader.load()), loader=loader)


class TestChangedPaths:
    def test_lists_leaf_paths_that_differ(self) -> None:
        old = {"gateway": {"port": 1, "auth": {"token": "a"}}, "agents": {"list": [1]}}
        new = {"gateway": {"port": 2, "auth": {"token": "a"}}, "agents": {"list": [1, 2]}}
        assert changed_paths(old, new) == ["gateway.port", "agents.list"]

    def test_added_and_removed_keys_count(self) -> None:
        assert changed_paths({"a": 1}, {"b": 2}) == ["a", "b"]

    def test_equal_configs_have_no_changes(self) -> None:
        assert changed_paths({"a": {"b": [1]}}, {"a": {"b": [1]}}) == []


class TestApplyConfig:
    def test_a_new_token_applies_at_once(
        self, state: GatewayState, loader: ConfigLoader, config_file: Path
    ) -> None:
        write(config_file, BASE.replace("old-token", "new-token"))
        result = apply_config(state, loader.load())
        assert result == ReloadResult(("gateway.auth.token",), ())
        assert state.config.gateway.auth.secret == "new-token"

    def test_port_and_bind_need_a_restart_and_keep_their_running_values(
        self, state: GatewayState, loader: ConfigLoader, config_file: Path
    ) -> None:
        write(config_file, BASE.replace("port: 18789", 'port: 18790, bind: "lan"'))
        with capture_logs() as logs:
            result = apply_config(state, loader.load())
        assert result.restart_required == ("gateway.port", "gateway.bind")
        assert result.applied == ()
        assert (state.config.gateway.port, state.config.gateway.bind) == (18789, "loopback")
        assert {"event": "restart_required", "paths": ["gateway.port", "gateway.bind"],
                "log_level": "warning"} in logs  # fmt: skip

    def test_agents_go_to_the_registry_and_the_limiter_gets_new_settings(
        self, state: GatewayState, loader: ConfigLoader, config_file: Path
    ) -> None:
        write(
            config_file,
            BASE.replace('{ id: "main" }', '{ id: "main" }, { id: "beta" }')
            .replace(
                "reload:", "auth: { token: 'old-token', rateLimit: { maxAttempts: 3 } }, reload:"
            )
            .replace('auth: { token: "old-token" }, ', ""),
        )
        apply_config(state, loader.load())
        assert [a.id for a in state.config.agents.agents] == ["main", "beta"]
        assert state.limiter.settings.max_attempts == 3

    def test_the_log_level_applies_and_listeners_hear_of_it(
        self, state: GatewayState, loader: ConfigLoader, config_file: Path
    ) -> None:
        heard: list[ReloadResult] = []
        state.config_listeners.append(heard.append)
        write(config_file, BASE.replace("agents:", 'logging: { level: "error" }, agents:'))
        try:
            apply_config(state, loader.load())
            assert _FILTER.level == 40
        finally:
            _FILTER.level = 20
        assert heard and heard[0].applied == ("logging.level",)

    def test_a_generated_token_survives_a_reload_without_a_token(
        self, tmp_path: Path, config_file: Path, loader: ConfigLoader
    ) -> None:
        config_file.write_text("{}")
        state = GatewayState(with_generated_token(loader.load()), loader=loader)
        generated = state.config.gateway.auth.token
        write(config_file, '{logging: {level: "info"}}')
        assert apply_config(state, loader.load()).changed == ()
        assert state.config.gateway.auth.token == generated


class TestReloadFromFile:
    async def test_an_invalid_edit_is_logged_and_the_running_config_stays(
        self, state: GatewayState, config_file: Path
    ) -> None:
        before = state.config
        write(config_file, "{ gateway: { port: 18789, ")
        with capture_logs() as logs:
            assert await reload_from_file(state) is None
        assert state.config is before
        assert state.reload_error and state.reload_error[0].startswith("- <file>: JSON5 syntax")
        assert logs[0]["event"] == "config_reload_failed" and logs[0]["log_level"] == "error"

    async def test_the_next_good_edit_clears_the_error(
        self, state: GatewayState, config_file: Path
    ) -> None:
        write(config_file, "{ nope: 1 }")
        await reload_from_file(state)
        write(config_file, BASE.replace("old-token", "fixed"))
        assert await reload_from_file(state) is not None
        assert state.reload_error is None
        assert state.config.gateway.auth.token == "fixed"

    async def test_a_control_ui_build_applies_at_once_and_a_missing_one_is_refused(
        self, state: GatewayState, config_file: Path, tmp_path: Path
    ) -> None:
        build = tmp_path / "build"
        build.mkdir()
        (build / "index.html").write_text("<!doctype html>")
        with_root = BASE.replace("reload:", f"controlUi: {{ root: {str(build)!r} }}, reload:")
        write(config_file, with_root)
        result = await reload_from_file(state)
        assert result is not None and "gateway.controlUi.root" in result.applied
        assert state.config.gateway.control_ui.root == str(build)
        write(config_file, with_root.replace(str(build), str(tmp_path / "gone")))
        assert await reload_from_file(state) is None
        assert state.config.gateway.control_ui.root == str(build)
        assert state.reload_error == [
            f"- gateway.controlUi.root: {tmp_path / 'gone'} does not exist"
            " (give a Control UI build)"
        ]

    async def test_a_control_ui_base_path_applies_at_once_and_a_bad_one_is_refused(
        self, state: GatewayState, config_file: Path
    ) -> None:
        based = BASE.replace("reload:", 'controlUi: { basePath: "/ops/" }, reload:')
        write(config_file, based)
        result = await reload_from_file(state)
        assert result is not None and result.applied == ("gateway.controlUi.basePath",)
        assert state.config.gateway.control_ui.base_path == "/ops"
        write(config_file, based.replace("/ops/", "/v1"))
        assert await reload_from_file(state) is None
        assert state.config.gateway.control_ui.base_path == "/ops"
        assert state.reload_error == [
            "- gateway.controlUi.basePath: must not be one of clawgate's own paths or under one"
            " (got /v1)"
        ]

    async def test_an_edit_undone_after_a_failed_reload_says_the_error_is_gone(
        self, state: GatewayState, config_file: Path
    ) -> None:
        """The file back as it runs: nothing to apply, and before, nothing in the log after
        `config_reload_failed`, which the operator read as a reload still failing."""
        write(config_file, "{ nope: 1 }")
        await reload_from_file(state)
        write(config_file, BASE)
        with capture_logs() as logs:
            assert await reload_from_file(state) is None
        assert state.reload_error is None
        assert logs == [
            {"event": "config_reload_recovered", "log_level": "info", "path": str(config_file)}
        ]

    async def test_a_fix_that_changes_nothing_in_force_says_the_error_is_gone(
        self, state: GatewayState, config_file: Path
    ) -> None:
        write(config_file, "{ nope: 1 }")
        await reload_from_file(state)
        write(config_file, BASE + "// reviewed\n")
        with capture_logs() as logs:
            result = await reload_from_file(state)
        assert result is not None and result.changed == ()
        assert [entry["event"] for entry in logs] == ["config_reload_recovered"]

    async def test_a_file_gone_from_the_default_path_is_an_issue_not_the_embedded_default(
        self, tmp_path: Path
    ) -> None:
        """Moved aside for an edit, or deleted: the embedded default would have taken over
        at once, with another token (every client refused) and no agents but `main`."""
        state_dir = tmp_path / "state"
        state_dir.mkdir(mode=0o700)
        path = state_dir / "clawgate.json5"
        path.write_text(BASE)
        loader = ConfigLoader(Overrides(state_dir=str(state_dir)), environ={})
        state = GatewayState(with_generated_token(loader.load()), loader=loader)
        before = state.config
        path.unlink()
        with capture_logs() as logs:
            assert await reload_from_file(state) is None
        assert state.config is before
        assert state.reload_error == [
            f"- <file>: config file not found: {path} (the running config stays; the"
            " embedded default is used only at startup)"
        ]
        assert logs[0]["event"] == "config_reload_failed"
        write(path, BASE.replace("old-token", "back"))
        assert await reload_from_file(state) is not None
        assert state.config.gateway.auth.token == "back"

    async def test_an_unchanged_file_is_ignored(self, state: GatewayState) -> None:
        with capture_logs() as logs:
            assert await reload_from_file(state) is None
        assert logs == []

    async def test_a_rotated_store_password_file_is_reported_as_needing_a_restart(
        self, loader: ConfigLoader, config_file: Path, tmp_path: Path
    ) -> None:
        """`store.passwordFile` is read with the config: a rotation is that file and SIGHUP,
        the config file unchanged. The pool keeps its connections until a restart, which the
        log says, as for any other store setting."""
        password_file = tmp_path / "pg-password"
        password_file.write_text("first-secret\n")
        store = (
            f'store: {{ backend: "postgres", url: "postgresql://clawgate@db.example/clawgate",'
            f' passwordFile: "{password_file}" }}, agents:'
        )
        write(config_file, BASE.replace("agents:", store))
        state = GatewayState(with_generated_token(loader.load()), loader=loader)
        password_file.write_text("second-secret\n")
        with capture_logs() as logs:
            result = await reload_from_file(state)
        assert result is not None and result.restart_required == ("store.password",)
        assert state.config.store.password == "first-secret"
        assert {"event": "restart_required", "paths": ["store.password"],
                "log_level": "warning"} in logs  # fmt: skip
        assert "second-secret" not in repr(logs)

    @pytest.mark.parametrize(
        "url",
        ["https:/me:hunter2@llm.example/v1", "me:hunter2@llm.example/v1", "ftp://me:hunter2@h"],
    )
    async def test_a_bad_url_with_a_password_is_not_shown_in_the_log_or_health(
        self, state: GatewayState, config_file: Path, url: str
    ) -> None:
        """The issue lines go to the log and to `health.configReload.lastError`, which every
        connected client reads: a URL's credentials stay out of them, as out of config.get."""
        provider = f'models: {{ providers: {{ p: {{ baseUrl: "{url}" }} }} }}, agents:'
        write(config_file, BASE.replace("agents:", provider))
        with capture_logs() as logs:
            assert await reload_from_file(state) is None
        assert state.reload_error == [
            "- models.providers.p.baseUrl: must be an http(s) URL"
            " (not shown: it may hold a password)"
        ]
        assert "hunter2" not in repr(logs)

    async def test_the_verbose_flag_outlives_a_reload(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        """`run --verbose` logs at debug level; a flag wins over the file on a reload too."""
        args = ["run", "--config", str(config_file), "--state-dir", str(tmp_path / "state")]
        loader = ConfigLoader(overrides_from_args(_parser().parse_args([*args, "--verbose"])))
        state = GatewayState(with_generated_token(loader.load()), loader=loader)
        write(config_file, BASE.replace("old-token", "new-token"))
        _FILTER.level = logging.DEBUG  # as `run --verbose` started
        try:
            assert await reload_from_file(state) is not None
            assert _FILTER.level == logging.DEBUG
        finally:
            _FILTER.level = logging.INFO

    async def test_a_token_the_state_dir_cannot_give_fails_the_reload(
        self, state: GatewayState, config_file: Path, tmp_path: Path
    ) -> None:
        """Without `token` the gateway runs with the state dir's `gateway.token`: one that
        `run` refuses (empty) fails the reload the same way, and the running token stays."""
        token_file = tmp_path / "state" / "gateway.token"
        token_file.parent.mkdir(mode=0o700)
        token_file.write_text("")
        write(config_file, BASE.replace('auth: { token: "old-token" }', "auth: {}"))
        with capture_logs() as logs:
            assert await reload_from_file(state) is None
        assert state.config.gateway.auth.token == "old-token"
        assert state.reload_error is not None
        assert state.reload_error[0].startswith(
            f"- gateway.auth.token: the token file {token_file} is empty."
        )
        assert [e["event"] for e in logs] == ["config_reload_failed"]

    async def test_auth_off_is_refused_while_the_gateway_still_listens_beyond_loopback(
        self, aiohttp_client: AiohttpClient, loader: ConfigLoader, config_file: Path
    ) -> None:
        """The file's `bind: "loopback"` needs a restart; until then the gateway listens on
        0.0.0.0, where the startup guard (config.md §6.1) refuses to run without auth."""
        served = BASE.replace(
            "reload:", "http: { endpoints: { chatCompletions: { enabled: true } } }, reload:"
        )
        config_file.write_text(served.replace("port: 18789", 'port: 18789, bind: "lan"'))
        client = await aiohttp_client(create_app(loader.load(), loader=loader))
        state = client.app[STATE]
        write(config_file, served.replace('auth: { token: "old-token" }', 'auth: { mode: "none" }'))
        with capture_logs() as logs:
            assert await reload_from_file(state) is None
        assert (state.config.gateway.host, state.config.gateway.auth.mode) == ("0.0.0.0", "token")
        assert state.reload_error == [
            "- gateway.bind: refusing to bind gateway to 0.0.0.0:18789 without auth (set"
            " gateway.auth.token/password, or set OPENCLAW_GATEWAY_TOKEN/OPENCLAW_GATEWAY_PASSWORD)"
        ]
        assert [e["event"] for e in logs] == ["config_reload_failed"]
        async with client.get("/v1/models") as response:
            assert response.status == 401


class TestWatcher:
    async def test_an_edited_file_is_applied_without_a_restart(
        self, aiohttp_client: AiohttpClient, loader: ConfigLoader, config_file: Path
    ) -> None:
        options = AppOptions(config_poll_seconds=0.05)
        client = await aiohttp_client(
            create_app(with_generated_token(loader.load()), loader=loader, options=options)
        )
        state = client.app[STATE]
        applied = asyncio.Event()
        state.config_listeners.append(lambda result: applied.set())
        write(config_file, BASE.replace("old-token", "rotated"))
        async with asyncio.timeout(3):
            await applied.wait()
        assert state.config.gateway.auth.token == "rotated"

    async def test_a_same_size_rewrite_in_place_with_the_old_times_is_applied(
        self, aiohttp_client: AiohttpClient, loader: ConfigLoader, config_file: Path
    ) -> None:
        """Saved in place just after a reload read the file, within one tick of the file
        system's clock: same inode, same size, same mtime (os.utime stands for the tick here).
        The watch took it for the file it had read, and the edit waited for the next one."""
        options = AppOptions(config_poll_seconds=0.05)
        client = await aiohttp_client(
            create_app(with_generated_token(loader.load()), loader=loader, options=options)
        )
        state = client.app[STATE]
        applied: list[str | None] = []
        state.config_listeners.append(lambda _: applied.append(state.config.gateway.auth.token))
        write(config_file, BASE.replace("old-token", "new-token"))
        async with asyncio.timeout(3):
            while applied != ["new-token"]:
                await asyncio.sleep(0.02)
        before = config_file.stat()
        with config_file.open("r+") as file:  # in place: the same inode
            file.write(BASE.replace("old-token", "sub-token"))
        os.utime(config_file, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = config_file.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )
        async with asyncio.timeout(3):
            while applied != ["new-token", "sub-token"]:
                await asyncio.sleep(0.02)

    async def test_a_fifo_in_place_of_the_file_is_refused_and_the_watch_goes_on(
        self, aiohttp_client: AiohttpClient, loader: ConfigLoader, config_file: Path
    ) -> None:
        """The watch reads the file's bytes: it must not wait in a FIFO's open or read."""
        options = AppOptions(config_poll_seconds=0.05)
        client = await aiohttp_client(
            create_app(with_generated_token(loader.load()), loader=loader, options=options)
        )
        state = client.app[STATE]
        failed: list[list[str]] = []
        state.reload_failure_listeners.append(failed.append)
        config_file.unlink()
        os.mkfifo(config_file)
        async with asyncio.timeout(3):
            while not failed:
                await asyncio.sleep(0.02)
        assert failed[0] == ["- <file>: cannot read config file: not a regular file"]
        config_file.unlink()
        write(config_file, BASE.replace("old-token", "rotated"))
        async with asyncio.timeout(3):
            while state.config.gateway.auth.token != "rotated":
                await asyncio.sleep(0.02)

    async def test_an_edit_saved_while_the_gateway_starts_is_applied(
        self, aiohttp_client: AiohttpClient, loader: ConfigLoader, config_file: Path
    ) -> None:
        """Saved after the config was read but before the watch began (the store opening, a
        PostgreSQL migration waiting for its lock): the watch took it for the file in force,
        and the gateway ran on the old config until the next edit."""
        config = with_generated_token(loader.load())
        write(config_file, BASE.replace("old-token", "rotated"))
        options = AppOptions(config_poll_seconds=0.05)
        client = await aiohttp_client(create_app(config, loader=loader, options=options))
        state = client.app[STATE]
        async with asyncio.timeout(3):
            while state.config.gateway.auth.token != "rotated":
                await asyncio.sleep(0.05)

    async def test_a_kubernetes_configmap_update_is_applied(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        """A ConfigMap volume: `clawgate.json5 -> ..data/clawgate.json5`, `..data -> ..<ts>`;
        an update writes a new `..<ts>` dir and renames a new `..data` link over the old one.
        The file's own mtime and inode never change: only following the links shows it."""
        volume = tmp_path / "volume"
        for version, token in (("..2026_01", "old-token"), ("..2026_02", "rotated")):
            (volume / version).mkdir(parents=True)
            (volume / version / "clawgate.json5").write_text(BASE.replace("old-token", token))
        (volume / "..data").symlink_to("..2026_01")
        (volume / "clawgate.json5").symlink_to("..data/clawgate.json5")
        loader = ConfigLoader(
            Overrides(
                config_path=str(volume / "clawgate.json5"), state_dir=str(tmp_path / "state")
            ),
            environ={},
        )
        options = AppOptions(config_poll_seconds=0.05)
        client = await aiohttp_client(
            create_app(with_generated_token(loader.load()), loader=loader, options=options)
        )
        state = client.app[STATE]
        assert state.config.gateway.auth.token == "old-token"
        (volume / "..data_tmp").symlink_to("..2026_02")
        os.replace(volume / "..data_tmp", volume / "..data")
        async with asyncio.timeout(3):
            while state.config.gateway.auth.token != "rotated":
                await asyncio.sleep(0.05)

    async def test_reload_mode_off_does_not_watch(
        self, aiohttp_client: AiohttpClient, loader: ConfigLoader, config_file: Path
    ) -> None:
        config_file.write_text(BASE.replace("debounceMs: 50", 'mode: "off"'))
        options = AppOptions(config_poll_seconds=0.02)
        client = await aiohttp_client(create_app(loader.load(), loader=loader, options=options))
        write(config_file, BASE.replace("old-token", "rotated"))
        await asyncio.sleep(0.3)
        assert client.app[STATE].config.gateway.auth.token == "old-token"

    async def test_reload_mode_turned_back_on_by_a_reload_watches_again(
        self, aiohttp_client: AiohttpClient, loader: ConfigLoader, config_file: Path
    ) -> None:
        """`gateway.reload.*` is hot (config.md §7): a SIGHUP that turns the mode from "off"
        to "hybrid" starts the file check without a restart."""
        config_file.write_text(BASE.replace("debounceMs: 50", 'mode: "off", debounceMs: 50'))
        options = AppOptions(config_poll_seconds=0.02)
        client = await aiohttp_client(create_app(loader.load(), loader=loader, options=options))
        state = client.app[STATE]
        write(config_file, BASE)
        result = await reload_from_file(state)  # what SIGHUP does
        assert result is not None and result.applied == ("gateway.reload.mode",)
        applied = asyncio.Event()
        state.config_listeners.append(lambda result: applied.set())
        await asyncio.sleep(0.1)
        write(config_file, BASE.replace("old-token", "rotated"))
        async with asyncio.timeout(3):
            await applied.wait()
        assert state.config.gateway.auth.token == "rotated"
